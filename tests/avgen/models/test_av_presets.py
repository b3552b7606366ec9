"""AVGen-DiT presets: the 3.8B sizes hold the plan's per-module budgets; tiny stays tiny."""
import runpy
import warnings

import pytest
import torch

from avgen.models.presets import BUDGETS, PRESETS, build, count_parameters, resolve, table


def test_3_8b_modules_are_within_ten_percent_of_the_plan():
    counts = count_parameters("3.8B")  # meta device: no memory, a second
    for module, budget in BUDGETS["3.8B"].items():
        assert abs(counts[module] - budget) <= 0.10 * budget, (module, counts[module], budget)


def test_3_8b_backbone_has_the_plans_shape():
    bb = PRESETS["3.8B"]["backbone"]
    assert (bb["layers"], bb["hidden"], bb["heads"], list(bb["patch_size"])) == (24, 2048, 16, [1, 4, 4])
    assert PRESETS["3.8B"]["audio_decoder"]["layers"] == 8 and PRESETS["3.8B"]["video_decoder"]["layers"] == 6


def test_tiny_is_small_and_builds_on_cpu():
    counts = count_parameters("tiny")
    assert 200_000 <= sum(counts.values()) <= 2_000_000, counts
    net = build("tiny")
    assert sum(p.numel() for p in net.parameters()) == sum(counts.values())
    assert next(net.parameters()).device.type == "cpu"


def test_build_is_seeded_and_takes_a_dict():
    a, b = build("tiny", seed=3), build(resolve("tiny"), seed=3)
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters()))


def test_unknown_preset_fails_by_name():
    with pytest.raises(ValueError, match="model.preset: unknown preset 'huge'"):
        build("huge")


def test_counts_table_from_the_command_line(capsys):
    """``python -m avgen.models.presets`` (run in-process: a fresh interpreter would re-import torch for seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is already imported by this test file
        runpy.run_module("avgen.models.presets", run_name="__main__")
    out = capsys.readouterr().out
    assert out.strip() == table()
    assert "3.8B   backbone" in out and "%" in out


def test_3_8b_runs_the_plans_shapes_on_the_meta_device():
    """512x512 at 8 fps for 5 s (40 x 64 x 64 latents, 10240 video tokens) and its 313-frame mel: shapes only."""
    net = build("3.8B", device="meta", seed=None)
    with torch.device("meta"):
        video, audio, text = torch.randn(1, 4, 40, 64, 64), torch.randn(1, 80, 313), torch.randn(1, 512)
        v, a = net(video, audio, torch.rand(1), text, text)
    assert v.shape == video.shape and a.shape == audio.shape
