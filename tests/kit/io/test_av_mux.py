from __future__ import annotations

import json
import subprocess

import numpy as np

from genbuild.io.av import write_av
from genbuild.io.video import ffprobe_bin


def test_write_av_is_h264_aac_and_byte_reproducible(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    audio = (np.sin(np.linspace(0, 3000, 32000)) * 0.3).astype(np.float32)
    write_av(tmp_path / "a.mp4", frames, 8, audio, 16000)
    write_av(tmp_path / "b.mp4", frames, 8, audio, 16000)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    res = subprocess.run([ffprobe_bin(), "-v", "error", "-show_streams", "-of", "json", str(tmp_path / "a.mp4")],
                         capture_output=True, text=True, timeout=60, check=True)
    s = {x["codec_type"]: x for x in json.loads(res.stdout)["streams"]}
    assert s["video"]["codec_name"] == "h264" and s["video"]["r_frame_rate"] == "8/1"
    assert s["audio"]["codec_name"] == "aac" and s["audio"]["sample_rate"] == "16000" and s["audio"]["channels"] == 1
    assert not list(tmp_path.glob("*.tmp*"))
