"""``grounded_sam2`` mask backend: Grounding DINO finds the product on a clip's first frame,
SAM2's video predictor segments it there and tracks it through the clip.

Why: the weight-free ``classical`` backend only separates a saturated product from a muted
background. Real showcase videos need an open-vocabulary detector (the product's category is
known from the manifest, so the prompt is e.g. "a watch.") and a promptable video segmenter
that keeps hold of the same object through rotation, occlusion and camera motion.

* detection (frame 0): ``masks.prompt`` filled with the category (lower-cased and ending in
  "." as Grounding DINO expects); the box with the highest score above
  ``masks.box_threshold`` is kept (``masks.text_threshold`` only picks the phrase that the
  log reports). No box -> empty masks -> the stage rejects the clip ("no product detected");
* segmentation: the frames are written as JPEGs into a temporary directory (what SAM2's
  ``init_state`` reads), the box prompts frame 0 and ``propagate_in_video`` yields every
  frame's mask logits at clip resolution; mask = logit > 0.

Weights are local files tracked by DVC, never downloaded: ``masks.grounding_dino`` (a
transformers model directory: config, weights, processor and tokenizer files) and
``masks.sam2_checkpoint`` (``{"model": state_dict}``), whose model is built from the sam2
package's config ``masks.sam2_config`` plus the hydra overrides ``masks.sam2_overrides``. A
missing file stops the stage naming the path, the params key and the ``dvc pull`` that fetches
it; so does a missing package, and a Grounding DINO checkpoint whose tensor names do not match
the model (``from_pretrained`` alone would leave such weights at random init). Never a silent
fallback to ``classical``. torch, transformers and sam2 are imported only when the backend is
built, so ``import pvtt.data.masks`` stays light.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from genbuild.hf_loading import WeightsLayoutError, check_loading_info
from pvtt.data.backends import BackendError
from pvtt.data.masks import MaskBackend, register

log = logging.getLogger("pvtt.data.masks.grounded_sam2")

JPEG_QUALITY = 95   # frames handed to SAM2; its loader reads JPEG folders only


def _dvc_target(path: Path) -> str:
    """What ``dvc pull`` fetches ``path`` with: ``models/<name>`` for anything under models/."""
    parts = path.parts
    return "/".join(parts[:2]) if len(parts) > 2 and parts[0] == "models" else str(path)


def _missing(what: str, path: Path, key: str) -> BackendError:
    return BackendError(f"masks.backend 'grounded_sam2': {what} {path} not found (params masks.{key}); "
                        f"fetch it with `dvc pull {_dvc_target(path)}`")


@register("grounded_sam2")
class GroundedSam2Backend(MaskBackend):
    """Grounding DINO box on frame 0 from the category prompt + SAM2 video propagation."""

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        gd, ckpt = Path(cfg["grounding_dino"]), Path(cfg["sam2_checkpoint"])
        if not (gd / "config.json").is_file():
            raise _missing("Grounding DINO model directory (config.json + weights)", gd, "grounding_dino")
        if not ckpt.is_file():
            raise _missing("SAM2 checkpoint", ckpt, "sam2_checkpoint")
        self.prompt = cfg["prompt"]
        self.needs_category = "{category}" in self.prompt
        self.box_threshold, self.text_threshold = float(cfg["box_threshold"]), float(cfg["text_threshold"])
        try:
            import sam2
            import torch
            from sam2.build_sam import build_sam2_video_predictor
            from transformers import AutoProcessor, GroundingDinoForObjectDetection
        except ImportError as e:
            raise BackendError("masks.backend 'grounded_sam2' needs torch, transformers and sam2, which do not "
                               f"import: {e}") from e
        self._torch = torch
        self.device = self._device(cfg["device"])
        sam_cfg = cfg["sam2_config"]
        if not (Path(sam2.__file__).parent / sam_cfg).is_file():
            raise BackendError(f"masks.backend 'grounded_sam2': {sam_cfg!r} is not a config of the sam2 package "
                               f"(params masks.sam2_config), e.g. 'configs/sam2.1/sam2.1_hiera_t.yaml'")
        t0 = time.perf_counter()
        try:
            self.processor = AutoProcessor.from_pretrained(gd, local_files_only=True)
            self.detector, info = GroundingDinoForObjectDetection.from_pretrained(gd, local_files_only=True,
                                                                                  output_loading_info=True)
        except Exception as e:  # noqa: BLE001 - any load failure names the directory and key
            raise BackendError(f"masks.backend 'grounded_sam2': cannot load Grounding DINO from {gd} "
                               f"(params masks.grounding_dino): {e.__class__.__name__}: {e}") from e
        # from_pretrained is not strict (a renamed tensor loads nothing, its weight stays random): refuse any
        # missing/unexpected name. The published layout (HF's conversion, Swin names mapped by transformers;
        # the decoder's bbox_embed copies tied) reports none with the pinned transformers, so nothing is ignored.
        try:
            check_loading_info(info, str(gd), "masks.grounding_dino",
                               what="masks.backend 'grounded_sam2': Grounding DINO")
        except WeightsLayoutError as e:
            raise BackendError(str(e)) from e
        self.detector = self.detector.to(self.device).eval()
        try:
            self.sam = build_sam2_video_predictor(sam_cfg, str(ckpt), device=self.device,
                                                  hydra_overrides_extra=list(cfg["sam2_overrides"]))
        except Exception as e:  # noqa: BLE001 - sam2 raises a bare RuntimeError on key mismatch
            raise BackendError(f"masks.backend 'grounded_sam2': cannot build SAM2 from checkpoint {ckpt} with config "
                               f"{sam_cfg} and overrides {cfg['sam2_overrides']} (params masks.sam2_checkpoint, "
                               f"masks.sam2_config, masks.sam2_overrides): {e.__class__.__name__}: {e}") from e
        self.last: dict = {}
        log.info("grounded_sam2: Grounding DINO %s, SAM2 %s (%s) on %s, loaded in %.1fs", gd, ckpt, sam_cfg,
                 self.device, time.perf_counter() - t0)

    def _device(self, name: str) -> str:
        cuda = self._torch.cuda.is_available()
        if name == "auto":
            return "cuda" if cuda else "cpu"
        if name.startswith("cuda") and not cuda:
            raise BackendError(f"params masks.device {name!r}: no CUDA device is available (use 'cpu' or 'auto')")
        return name

    def text(self, category: str | None) -> str:
        """The detection prompt: ``masks.prompt`` with the category, lower case, ending in '.'."""
        if self.needs_category and not category:
            raise BackendError(f"params masks.prompt {self.prompt!r} needs the product category, and there is none")
        t = self.prompt.format(category=str(category or "").replace("_", " ")).strip().lower()
        return t if t.endswith(".") else t + "."

    def detect(self, frame: np.ndarray, text: str) -> tuple[np.ndarray, float, str] | None:
        """Best box [x0, y0, x1, y1] (pixels) above ``box_threshold``, its score and phrase; None if none."""
        h, w = frame.shape[:2]
        inputs = self.processor(images=frame, text=text, return_tensors="pt").to(self.device)
        with self._torch.inference_mode():
            outputs = self.detector(**inputs)
        res = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
            target_sizes=[(h, w)])[0]
        if len(res["scores"]) == 0:
            return None
        i = int(res["scores"].argmax())
        box = res["boxes"][i].float().cpu().numpy()
        box = np.clip(box, 0, [w, h, w, h]).astype(np.float32)
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            return None
        return box, float(res["scores"][i]), str(res["text_labels"][i])

    def segment(self, frames: np.ndarray, category: str | None = None) -> np.ndarray:
        n, h, w = frames.shape[:3]
        out = np.zeros((n, h, w), bool)
        text = self.text(category)
        det = self.detect(frames[0], text) if n else None
        self.last = {"prompt": text, "box": None, "score": None, "label": None, "frames_propagated": 0}
        if det is None:
            log.info("grounded_sam2: no box for %r above masks.box_threshold %.2f", text, self.box_threshold)
            return out
        box, score, label = det
        self.last.update(box=[round(float(v), 2) for v in box], score=round(score, 4), label=label)
        with tempfile.TemporaryDirectory(prefix="pvtt-sam2-") as d, self._torch.inference_mode():
            for i, f in enumerate(frames):
                if not cv2.imwrite(f"{d}/{i:05d}.jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                    raise OSError(f"cannot write frame {i} to {d}")
            state = self.sam.init_state(d)
            self.sam.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=box)
            for t, _, logits in self.sam.propagate_in_video(state):
                out[t] = (logits[0, 0] > 0).cpu().numpy()
                self.last["frames_propagated"] += 1
        log.info("grounded_sam2: %r box %s score %.3f (%s), %d frames propagated", text, self.last["box"], score,
                 label, self.last["frames_propagated"])
        return out
