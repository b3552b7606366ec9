"""The gate's arithmetic (pvtt.train.gate): relative drops by direction, verdict, message."""
from __future__ import annotations

import math

from pvtt.train.gate import GateResult, relative_drops


def test_relative_drops_count_losses_positive_and_gains_negative():
    d = relative_drops({"psnr": 20.0, "bg_psnr": 30.0, "ssim": 0.8, "ref_sim": float("nan"), "seconds": 1.0},
                       {"psnr": 19.0, "bg_psnr": 31.5, "ssim": 0.8, "ref_sim": 0.5, "seconds": 9.0})
    assert set(d) == {"psnr", "bg_psnr", "ssim"}          # no direction (seconds) or not finite (ref_sim): left out
    assert math.isclose(d["psnr"], 0.05) and math.isclose(d["bg_psnr"], -0.05) and d["ssim"] == 0.0


def test_verdict_and_message_name_each_failing_metric_with_its_numbers():
    teacher, student = {"psnr": 20.0, "mask_psnr": 15.0}, {"psnr": 19.5, "mask_psnr": 13.5}
    g = GateResult(teacher, student, relative_drops(teacher, student), 0.05)
    assert not g.passed and set(g.failures) == {"mask_psnr"}
    msg = g.message("student_8")
    assert "mask_psnr: teacher 15.0000, student_8 13.5000, drop 10.0 %" in msg and "psnr: teacher 20" not in msg
    assert "max_drop = 5.0 %" in msg and g.as_dict()["failed"] == ["mask_psnr"]
    assert GateResult(teacher, student, relative_drops(teacher, student), 0.2).passed
