"""LoRA with peft on the real PVTT DiT: starts as the base, trains only what it should, saves
adapters alone, and merges back to a plain DiT with the same output."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from genbuild.train.lora import apply_lora, merge_lora, save_adapter
from pvtt.models.dit import PVTTDiT, build_dit

C = 48


def _inputs(b=2):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(b, C, 2, 4, 4, generator=g), torch.tensor([300.0, 700.0]), torch.randn(b, C, 2, 4, 4, generator=g),
            torch.ones(b, 1, 2, 4, 4), torch.randn(b, 257, 1280, generator=g), torch.randn(b, 5, 32, generator=g))


def test_lora_targets_training_save_and_merge(tmp_path):
    dit = build_dit("tiny", C, seed=0, prediction="velocity")
    keys_before = set(dit.state_dict())
    x = _inputs()
    with torch.no_grad():
        base_out = dit.eval()(*x)
    info = apply_lora(dit, {"rank": 4, "alpha": 8, "targets": ["self_attn", "ffn"]})
    lora_b = [p for n, p in dit.named_parameters() if ".lora_B." in n]
    assert lora_b and all(not p.any() for p in lora_b), "B starts at zero"
    with torch.no_grad():
        # so the adapted model is the base (up to float rounding: on some CPUs the adapted
        # linear's GEMM takes another MKL kernel, 5e-7 apart; exact on others)
        torch.testing.assert_close(dit.eval()(*x), base_out, rtol=0, atol=1e-5)
    trainable = {n for n, p in dit.named_parameters() if p.requires_grad}
    assert any("self_attn.q.lora_A" in n for n in trainable) and any("ffn.0.lora_B" in n for n in trainable)
    assert not any("cross_attn.q.lora" in n for n in trainable), "cross_attn was not a target"
    assert "wan.patch_embedding.weight" in trainable and any("cross_attn.v_img" in n for n in trainable)
    assert not any(n.endswith("self_attn.q.base_layer.weight") for n in trainable), "base linears are frozen"
    assert 0 < info["trainable_params"] < sum(p.numel() for p in dit.parameters())
    opt = torch.optim.AdamW([p for p in dit.parameters() if p.requires_grad], lr=1e-2)
    dit.train()
    for _ in range(3):
        opt.zero_grad()
        (dit(*x) - 1).square().mean().backward()
        opt.step()
    with torch.no_grad():
        tuned = dit.eval()(*x)
    assert not torch.allclose(tuned, base_out)
    save_adapter(dit, tmp_path, info)
    adapter = load_file(str(tmp_path / "adapter.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["rank"] == 4
    assert merge_lora(dit) == 2 * 4 + 2 * 2  # 2 blocks x (q, k, v, o) + 2 blocks x (ffn.0, ffn.2)
    assert set(dit.state_dict()) == keys_before, "merged: the plain DiT's keys again"
    with torch.no_grad():
        assert torch.allclose(dit.eval()(*x), tuned, atol=1e-5)
    dit.save(tmp_path / "merged")
    with torch.no_grad():
        assert torch.allclose(PVTTDiT.load(tmp_path / "merged").eval()(*x), tuned, atol=1e-5)


def test_unknown_target_is_named():
    with pytest.raises(ValueError, match="teacher.lora.targets.*mlp"):
        apply_lora(build_dit("tiny", C, 0), {"rank": 2, "targets": ["mlp"]})


@pytest.mark.slow  # a training run: make test, not test-fast
def test_teacher_with_lora_writes_adapter_and_merged_model_and_resumes_exactly(tmp_path, monkeypatch):
    """The teacher stage with teacher.lora.rank > 0: adapter files beside a merged plain DiT, and a
    crash mid-run resumes from the checkpoint (LoRA weights included) to the same bytes."""
    from test_checkpoint import Crash, assert_same_artifact, crash_after, make_tiny_latents, teacher_params

    import pvtt.train.teacher as teacher

    lat = make_tiny_latents(tmp_path)
    params = teacher_params(lora={"rank": 4, "alpha": 4, "targets": ["self_attn", "cross_attn"]})
    ref = tmp_path / "ref"
    teacher.train_teacher(lat, ref, params)
    assert {"adapter.safetensors", "adapter_config.json", "model.safetensors"} <= {p.name for p in ref.iterdir()}
    assert set(load_file(str(ref / "model.safetensors"))) == set(build_dit("tiny", C, 0, "source_residual").state_dict())
    PVTTDiT.load(ref)
    out, ck = tmp_path / "out", tmp_path / "ck"
    import genbuild.train.methods.flow_matching as fm  # the teacher's objective lives in its method
    monkeypatch.setattr(fm, "flow_matching_loss", crash_after(fm.flow_matching_loss, 6))
    with pytest.raises(Crash):
        teacher.train_teacher(lat, out, params, ck)
    monkeypatch.undo()
    teacher.train_teacher(lat, out, params, ck)
    assert_same_artifact(out, ref, files=("model.safetensors", "adapter.safetensors", "loss.csv", "metrics.json"))
