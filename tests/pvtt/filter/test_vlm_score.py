"""Filter L3 VLM score (pvtt.filter.vlm) with a tiny, randomly initialised Qwen2-VL.

The model is the real ``Qwen2VLForConditionalGeneration`` (1 text layer, hidden 32, a 1-block
vision tower) with a real ``Qwen2VLProcessor`` (Qwen2-VL image/video processors, a byte-level BPE
``Qwen2Tokenizer`` trained here on a few sentences with Qwen2-VL's special tokens, and Qwen2-VL's
chat template), saved with ``save_pretrained`` and loaded by pvtt.filter.vlm through the same
``from_pretrained(local_files_only=True)`` calls as the real 2B checkpoint.

Random weights answer random text, so (a) the whole call path must return either a score in range
or an "unparsable" reason, deterministically; (b) the parser is checked on fixed strings; (c) a
missing model directory names the path, the key and `dvc pull`. For the stage itself, a copy of
the model is rigged to answer one fixed token (attention/MLP outputs zeroed, so the last hidden
state is the last prompt token's embedding, which gets a constant feature that the LM head maps to
the chosen token): "7" and "x" drive keep / reject / unparsable through filters.run, and the
review sheet shows the score and the answer.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from test_filter import PARAMS as BASE_PARAMS  # noqa: E402
from test_filter import make_work

from genbuild.io.jsonio import read_jsonl  # noqa: E402
from genbuild.weights import MissingWeightsError  # noqa: E402
from pvtt.filter import filter as filters  # noqa: E402
from pvtt.filter import review
from pvtt.filter import vlm as V

torch.set_num_threads(2)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]
# Qwen2-VL-Instruct's chat template (chat_template.json of the released checkpoints).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
PROMPT = ("Does the edited video show the reference product ({caption}), replacing the {category_from}, "
          "without artefacts? Answer with a score from 1 to 10.")


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [PROMPT, "Reference product image: Frames of the edited video:", "You are a helpful assistant.",
              "system user assistant", "Score: 7 out of 10. 1 2 3 4 5 6 7 8 9 10"] * 3
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(bpe.to_str())["model"]["merges"]]
    return Qwen2Tokenizer(vocab=bpe.get_vocab(), merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                          unk_token=None, additional_special_tokens=SPECIAL[1:])


def build_tiny_qwen2vl(path: Path, answer_token: str | None = None) -> None:
    """A tiny random Qwen2-VL checkpoint directory (model + processor), optionally rigged to always
    generate ``answer_token`` (a single token of the vocabulary)."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tok = _tokenizer()
    ids = tok.convert_tokens_to_ids
    pixels = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, **pixels),
        tokenizer=tok, video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=CHAT_TEMPLATE)
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
                         bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    if answer_token is not None:
        target = ids(answer_token)
        assert target is not None and tok.convert_ids_to_tokens(target) == answer_token
        with torch.no_grad():
            lm = model.model.language_model
            for layer in lm.layers:
                layer.self_attn.o_proj.weight.zero_()
                layer.mlp.down_proj.weight.zero_()
            lm.embed_tokens.weight[:, 0] = 10.0
            model.lm_head.weight.zero_()
            model.lm_head.weight[target, 0] = 1.0
    model.save_pretrained(path)
    processor.save_pretrained(path)


def _vlm(weights: str, **over) -> dict:
    return {"weights": weights, "prompt": PROMPT, "min_score": 6, "frames": 2, "device": "cpu",
            "max_new_tokens": 4, "max_pixels": 64 * 96, **over}


def _params(vlm: dict | None) -> dict:
    p = copy.deepcopy(BASE_PARAMS)
    p["filter"]["l3"] = {"review_fraction": 1.0, "verdicts": None, "vlm": vlm}
    return p


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("vlm")
    build_tiny_qwen2vl(r / "models/qwen2-vl-tiny")
    build_tiny_qwen2vl(r / "models/qwen2-vl-says-7", answer_token="7")
    build_tiny_qwen2vl(r / "models/qwen2-vl-says-x", answer_token="x")
    return r


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return make_work(tmp_path_factory.mktemp("vlmwork"), {"p_clean": "clean", "p_flicker": "flicker"})


def _video(seed=0, n=5):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 48, 64, 3), dtype=np.uint8)


PAIR = {"caption": "Replace the watch with a green bottle", "category_from": "watch", "category_to": "bottle"}


# ------------------------------------------------------------------------------------------ (a)
def test_random_model_call_path(root):
    scorer = V.load(_params(_vlm("models/qwen2-vl-tiny")), root)
    assert type(scorer.model).__name__ == "Qwen2VLForConditionalGeneration"
    assert type(scorer.processor).__name__ == "Qwen2VLProcessor"
    assert "models/qwen2-vl-tiny" in scorer.implementation
    ref = np.full((40, 30, 3), 255, np.uint8)
    ref[10:30, 8:22] = (40, 110, 60)
    text = scorer.processor.apply_chat_template(scorer.messages(V.fill_prompt(PROMPT, PAIR), 2),
                                                add_generation_prompt=True, tokenize=False)
    assert text.count("<|image_pad|>") == 3 and "green bottle" in text and "{caption}" not in text
    assert text.index(V.REFERENCE_LABEL) < text.index(V.FRAMES_LABEL) and text.endswith("<|im_start|>assistant\n")
    res, reasons = scorer.score(_video(), ref, PAIR)
    assert set(res) == {"vlm_score", "vlm_answer", "pass"} and isinstance(res["vlm_answer"], str)
    if res["vlm_score"] is None:  # random text: nearly always
        assert not res["pass"] and len(reasons) == 1
        assert reasons[0].startswith(f"l3: vlm answer unparsable: {res['vlm_answer'][:80]!r}")
    else:
        assert 1 <= res["vlm_score"] <= 10 and res["pass"] == (res["vlm_score"] >= 6)
    assert scorer.score(_video(), ref, PAIR) == (res, reasons)     # greedy: deterministic


# ------------------------------------------------------------------------------------------ (b)
@pytest.mark.parametrize("answer, score", [
    ("7", 7.0), ("8/10", 8.0), ("Score: 6.5", 6.5), ("I would rate it 9 out of 10.", 9.0), ("10", 10.0),
    (" 3\n", 3.0), ("**4**", 4.0), ("Rating: 1", 1.0),
    ("", None), ("eight", None), ("0", None), ("11", None), ("-3", None), ("score 42, maybe 7", None),
    ("model-v2 says 7", 7.0), ("Score: 7.", 7.0), ("1.5e3", None), ("the 7th", None)])
def test_parse_score(answer, score):
    assert V.parse_score(answer, 1, 10) == score


def test_judge_reasons():
    cfg = V.read_config(_params(_vlm("m")))
    s = V.VlmScorer(torch.nn.Linear(1, 1), None, cfg)
    assert s.judge("7") == ({"vlm_score": 7.0, "vlm_answer": "7", "pass": True}, [])
    assert s.judge("Score: 4") == ({"vlm_score": 4.0, "vlm_answer": "Score: 4", "pass": False},
                                   ["l3: vlm_score 4 < 6"])
    res, why = s.judge("great video")
    assert res == {"vlm_score": None, "vlm_answer": "great video", "pass": False}
    assert why == ["l3: vlm answer unparsable: 'great video'"]
    assert s.judge("42")[1] == ["l3: vlm answer unparsable: '42' (first number 42 outside [1, 10])"]


def test_config_validation():
    assert V.read_config(BASE_PARAMS) is None and V.read_config(_params(None)) is None
    c = V.read_config(_params({"weights": "m", "prompt": "rate {caption}", "min_score": 6}))
    assert (c["frames"], c["device"], c["score_range"]) == (4, "auto", [1.0, 10.0])
    for over, key in [({"prompt": "no placeholder"}, "prompt"), ({"min_score": "6"}, "min_score"),
                      ({"frames": 0}, "frames"), ({"weights": None}, "weights"),
                      ({"score_range": [10, 1]}, "score_range"), ({"temperature": 0.7}, "unknown")]:
        with pytest.raises(ValueError, match=key):
            V.read_config(_params({**_vlm("m"), **over}))
    assert V.fill_prompt("{caption} / {category_to} / {other}", PAIR) == \
        "Replace the watch with a green bottle / bottle / {other}"


# ------------------------------------------------------------------------------------------ (c)
def test_missing_weights_name_path_key_and_dvc(root, work, tmp_path):
    params = _params(_vlm("models/qwen2-vl-2b-instruct"))
    with pytest.raises(MissingWeightsError) as e:
        V.load(params, root)
    msg = str(e.value)
    assert str(root / "models/qwen2-vl-2b-instruct") in msg and "filter.l3.vlm.weights" in msg
    assert "dvc pull models/qwen2-vl-2b-instruct" in msg
    out = tmp_path / "f"
    with pytest.raises(MissingWeightsError):
        filters.run(params, work["work"], work["pairs"], work["synth"], out, root=root)
    assert not out.exists()


# ------------------------------------------------------------------------------------------ stage
def test_filter_stage_and_review_sheet(root, work, tmp_path):
    out = tmp_path / "keep" / "shard-0000"
    doc = filters.run(_params(_vlm("models/qwen2-vl-says-7", max_new_tokens=1)), work["work"], work["pairs"],
                      work["synth"], out, root=root)
    clean, flicker = doc["pairs"]["p_clean"], doc["pairs"]["p_flicker"]
    assert clean["l3"] == {"vlm_score": 7.0, "vlm_answer": "7", "pass": True} and clean["kept"]
    assert flicker["l3"]["skipped"] == "rejected by l1/l2" and flicker["l3"]["vlm_score"] is None
    assert not flicker["kept"] and not any(r.startswith("l3") for r in flicker["reasons"])
    assert "qwen2-vl-says-7" in doc["models"]["vlm"]

    out2 = tmp_path / "strict" / "shard-0000"
    doc2 = filters.run(_params(_vlm("models/qwen2-vl-says-7", max_new_tokens=1, min_score=8)), work["work"],
                       work["pairs"], work["synth"], out2, root=root)
    c2 = doc2["pairs"]["p_clean"]
    assert not c2["kept"] and c2["l1"]["pass"] and c2["l2"]["pass"] and c2["reasons"] == ["l3: vlm_score 7 < 8"]
    rows = {r["item"]: r for r in read_jsonl(out2 / "rejects.jsonl")}
    assert rows["p_clean"]["reason"] == "l3: vlm_score 7 < 8" and rows["p_clean"]["l3"]["vlm_score"] == 7.0

    out3 = tmp_path / "x" / "shard-0000"
    doc3 = filters.run(_params(_vlm("models/qwen2-vl-says-x", max_new_tokens=1)), work["work"], work["pairs"],
                       work["synth"], out3, root=root)
    assert doc3["pairs"]["p_clean"]["reasons"] == ["l3: vlm answer unparsable: 'x'"]
    assert doc3["pairs"]["p_clean"]["l3"]["vlm_score"] is None and not doc3["pairs"]["p_clean"]["kept"]

    # the human review samples among the kept pairs and shows the VLM's score and answer
    rev = tmp_path / "review"
    d = review.run({"seed": 1, **_params(None)}, work["work"], [out], rev)
    assert d["sampled"] == ["p_clean"]
    sheet = (rev / "sheet.html").read_text()
    assert "<b>vlm_score 7.0</b>" in sheet and "vlm answer: <q>7</q>" in sheet and "bg_ssim" in sheet
