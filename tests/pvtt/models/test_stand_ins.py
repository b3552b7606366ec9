"""No silent stand-in at scale: real base weights with a weight-free component in the conditioning
path stop the build at start-up (``genbuild.params`` -> ``pvtt.pipeline.check_params``), naming
the keys, unless ``model.allow_stand_ins`` says by name that it is wanted."""
from __future__ import annotations

import copy

import pytest

from genbuild import params as P

FULL = P.ROOT / "configs" / "full.yaml"


@pytest.fixture(scope="module")
def sample():
    return P.load(P.ROOT / "params.yaml")


def _with(config: dict, **model) -> dict:
    c = copy.deepcopy(config)
    c["pvtt"]["model"].update(model)
    return c


def test_the_sample_and_full_yaml_start(sample):
    P.validate(sample)  # no base: stand-ins are the sample's point
    full = P.load(P.ROOT / "params.yaml", [FULL])
    m = full["pvtt"]["model"]
    assert (m["codec"]["kind"], m["image_encoder"]["kind"], m["text_encoder"]["kind"]) == ("wan_vae", "clip_vit_h", "umt5")
    assert m["text_encoder"]["path"].endswith("models_t5_umt5-xxl-enc-bf16.pth") and m["text_encoder"]["tokenizer"]
    assert (m["device"], m["dtype"]) == ("cuda", "bfloat16") and not m.get("allow_stand_ins")


def test_a_base_with_stand_ins_stops_naming_each_key(sample):
    with pytest.raises(P.ParamsError) as e:
        P.validate(_with(sample, base="models/wan2.1-t2v-1.3b", prediction="velocity"))
    msg = str(e.value)
    for key in ("pvtt.model.base", "pvtt.model.codec.kind: space_to_depth", "pvtt.model.image_encoder.kind: tiny",
                "pvtt.model.text_encoder.kind: hashed", "pvtt.model.allow_stand_ins"):
        assert key in msg, key


def test_full_yaml_with_the_hashed_text_encoder_stops(sample):
    full = P.load(P.ROOT / "params.yaml", [FULL])
    full["pvtt"]["model"]["text_encoder"] = {"kind": "hashed", "max_len": 16}
    with pytest.raises(P.ParamsError, match=r"pvtt.model.text_encoder.kind: hashed \(random hashed word embeddings"):
        P.validate(full)
    full["pvtt"]["model"]["allow_stand_ins"] = ["text_encoder"]  # said explicitly, by name: wanted
    P.validate(full)


def test_allow_stand_ins_is_by_name(sample):
    partly = _with(sample, base="models/wan", allow_stand_ins=["codec", "image_encoder"])
    with pytest.raises(P.ParamsError, match="text_encoder") as e:
        P.validate(partly)
    assert "codec.kind" not in str(e.value)
    P.validate(_with(sample, base="models/wan", allow_stand_ins=["codec", "image_encoder", "text_encoder"]))
    with pytest.raises(P.ParamsError, match="allow_stand_ins"):
        P.validate(_with(sample, base="models/wan", allow_stand_ins=["hashed"]))


def test_teacher_phase1_base_is_checked_too(sample):
    c = copy.deepcopy(sample)
    c["pvtt"]["teacher_phases"]["phase1"]["model"] = {"preset": "1.3B", "base": "models/wan2.1-t2v-1.3b"}
    with pytest.raises(P.ParamsError, match=r"pvtt.teacher_phases.phase1.model.base .*pvtt.model.text_encoder.kind: hashed"):
        P.validate(c)


def test_placement_and_components_are_validated_by_the_schema(sample):
    for model, key in (({"device": "gpu"}, "pvtt.model.device"), ({"dtype": "fp16"}, "pvtt.model.dtype"),
                       ({"text_encoder": {"kind": "umt5", "path": "x.pth"}}, "pvtt.model.text_encoder"),
                       ({"codec": {"kind": "wan_vae"}}, "pvtt.model.codec"),
                       ({"image_encoder": {"kind": "clip"}}, "pvtt.model.image_encoder.kind")):
        with pytest.raises(P.ParamsError, match=key.replace(".", r"\.")):
            P.validate(_with(sample, **model))
    P.validate(_with(sample, device="cuda:1", dtype="auto", codec={"kind": "space_to_depth", "factor": 4, "dtype": "float32"}))


def test_phase1_model_overrides_are_validated_like_model(sample):
    c = copy.deepcopy(sample)
    c["pvtt"]["teacher_phases"]["phase1"]["model"] = {"preset": "1.3B", "dtype": "bf16"}
    with pytest.raises(P.ParamsError, match=r"pvtt\.teacher_phases\.phase1\.model\.dtype: 'bf16'"):
        P.validate(c)
