"""genbuild.hf_loading: the strict check of a transformers ``from_pretrained(..., output_loading_info=True)`` report."""
from __future__ import annotations

import pytest

from genbuild.hf_loading import WeightsLayoutError, check_loading_info, loading_problems

CLEAN = {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}


def test_clean_report_passes():
    check_loading_info(CLEAN, "models/x", "a.b")
    check_loading_info({}, "models/x", "a.b")           # absent lists count as empty
    assert loading_problems(CLEAN) == []


def test_missing_and_unexpected_name_directory_key_and_keys():
    info = {**CLEAN, "missing_keys": {"visual.merger.ln_q.weight"}, "unexpected_keys": ["visual.merger.ln_x.weight"]}
    with pytest.raises(WeightsLayoutError) as ei:
        check_loading_info(info, "models/qwen2-vl", "filter.l3.vlm.weights", what="filter L3 VLM")
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert msg.startswith("filter L3 VLM: the weights at 'models/qwen2-vl' (params filter.l3.vlm.weights)")
    assert "1 model weight(s) missing" in msg and "visual.merger.ln_q.weight" in msg
    assert "1 checkpoint tensor(s) the model has no place for: visual.merger.ln_x.weight" in msg


def test_mismatched_shapes_and_errors_are_refused():
    info = {**CLEAN, "mismatched_keys": {("lm_head.weight", (10, 4), (12, 4))}, "error_msgs": ["size mismatch"]}
    with pytest.raises(WeightsLayoutError, match=r"lm_head\.weight checkpoint \(10, 4\) vs model \(12, 4\).*"
                                                 r"1 load error\(s\): size mismatch"):
        check_loading_info(info, "d", "k")


def test_only_the_first_few_names_are_quoted_sorted():
    info = {**CLEAN, "missing_keys": {f"layer.{i:02d}.weight" for i in range(12)}}
    with pytest.raises(WeightsLayoutError) as ei:
        check_loading_info(info, "d", "k", show=3)
    msg = str(ei.value)
    assert "12 model weight(s) missing" in msg
    assert "layer.00.weight, layer.01.weight, layer.02.weight and 9 more" in msg
    assert "layer.03.weight" not in msg


def test_ignore_drops_only_the_named_entries():
    info = {**CLEAN, "missing_keys": {"embeddings.position_ids", "lm_head.weight"},
            "mismatched_keys": {("head.bias", (3,), (4,))}}
    check_loading_info(info, "d", "k", ignore=("*.position_ids", "lm_head.weight", "head.bias"))
    with pytest.raises(WeightsLayoutError, match=r"lm_head\.weight") as ei:
        check_loading_info(info, "d", "k", ignore=("*.position_ids",))
    assert "position_ids" not in str(ei.value)
