"""Filter L3, automatic part: a vision-language model (Qwen2-VL) scores each edited video.

Configured under ``filter.l3.vlm`` (absent or null: off); it runs inside the per-shard filter
stage (:mod:`pvtt.filter.filter`), after L1/L2 and only on the pairs they keep, so it scales with the
shards; the L3 human review (:mod:`pvtt.filter.review`) then samples among the pairs it kept and shows
its score and answer on the sheet::

    vlm:
      weights: models/qwen2-vl-2b-instruct   # local transformers directory (config.json, processor, weights)
      prompt: "... {caption} ... Answer with a score from 1 to 10."
      min_score: 6          # pass when score >= min_score
      frames: 4             # evenly spaced frames of the edited video
      device: auto          # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
      max_new_tokens: 8     # optional; the answer is short
      max_pixels: 200704    # optional; each image is downscaled to at most this many pixels first
      score_range: [1, 10]  # optional; a first number outside it is "unparsable"

The model is ``Qwen2VLForConditionalGeneration`` with ``AutoProcessor`` from that directory
(``local_files_only``; nothing is downloaded; a missing directory stops the stage naming the path,
the params key and ``dvc pull``; a checkpoint whose tensor names or shapes do not match the model stops it
with :class:`genbuild.hf_loading.WeightsLayoutError` naming the directory, the params key and the first
offending names). One user message, rendered by the processor's chat template:
"Reference product image:", the reference (the products-stage cut-out on white), "Frames of the
edited video:", the frames, then the prompt with ``{caption}`` (the pair's edit caption),
``{category_from}`` and ``{category_to}`` filled in. The answer is generated greedily
(``do_sample=False``, no repetition penalty) and its first number is the score
(:func:`parse_score`); an answer without a number in ``score_range`` is a reject reason
``"l3: vlm answer unparsable: '...'"`` and never a made-up score.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from genbuild import stage as cli
from genbuild.hf_loading import WeightsLayoutError, check_loading_info
from genbuild.weights import MissingWeightsError
from pvtt.filter.learned import even_indices, resolve_device

KEY = "filter.l3.vlm"
DEFAULTS = {"frames": 4, "device": "auto", "max_new_tokens": 8, "max_pixels": 200704, "score_range": [1, 10]}
REFERENCE_LABEL = "Reference product image:"
FRAMES_LABEL = "Frames of the edited video:"
ANSWER_CHARS = 200        # answers are stored (and quoted in reasons) up to this length
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?!\.?\w)")  # a whole number token: not v2, 1.5e3, 7th


def _bad(key: str, what: str, got: Any) -> ValueError:
    return ValueError(f"params key '{key}' must be {what}, got {got!r}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_config(params: dict) -> dict | None:
    """Validated ``filter.l3.vlm`` with defaults, or None when off; a bad value names its key."""
    cfg = cli.get(params, KEY, None)
    if not cfg:
        return None
    if not isinstance(cfg, dict):
        raise _bad(KEY, "a mapping or null", cfg)
    unknown = sorted(set(cfg) - set(DEFAULTS) - {"weights", "prompt", "min_score"})
    if unknown:
        raise ValueError(f"params key '{KEY}': unknown entries {unknown}")
    c = {**DEFAULTS, **cfg}
    if not isinstance(c.get("weights"), str) or not c["weights"]:
        raise _bad(f"{KEY}.weights", "a model directory path", c.get("weights"))
    if not isinstance(c.get("prompt"), str) or "{caption}" not in c["prompt"]:
        raise _bad(f"{KEY}.prompt", "a string containing {caption}", c.get("prompt"))
    rng = c["score_range"]
    if (not isinstance(rng, (list, tuple)) or len(rng) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng) or rng[0] >= rng[1]):
        raise _bad(f"{KEY}.score_range", "[low, high] with low < high", rng)
    ms = c.get("min_score")
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms):
        raise _bad(f"{KEY}.min_score", "a number", ms)
    for k in ("frames", "max_new_tokens", "max_pixels"):
        if not _is_int(c[k]) or c[k] < 1:
            raise _bad(f"{KEY}.{k}", "an integer >= 1", c[k])
    if not isinstance(c["device"], str) or not c["device"]:
        raise _bad(f"{KEY}.device", "auto, cpu, cuda or cuda:N", c["device"])
    c["score_range"] = [float(rng[0]), float(rng[1])]
    c["min_score"] = float(ms)
    return c


def parse_score(answer: str, lo: float = 1, hi: float = 10) -> float | None:
    """The first number in ``answer`` if it lies in [lo, hi], else None ("7/10" -> 7, "Score: 8.5" -> 8.5)."""
    m = _NUMBER.search(answer or "")
    if m is None:
        return None
    v = float(m.group())
    return v if lo <= v <= hi and math.isfinite(v) else None


def fill_prompt(prompt: str, pair: dict) -> str:
    """``{caption}``, ``{category_from}``, ``{category_to}`` replaced (plain replace: other braces stay)."""
    out = prompt
    for key in ("caption", "category_from", "category_to"):
        out = out.replace("{" + key + "}", str(pair.get(key) or ""))
    return out


def _fit(img: np.ndarray, max_pixels: int):
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    w, h = im.size
    if w * h > max_pixels:
        s = math.sqrt(max_pixels / (w * h))
        im = im.resize((max(1, int(w * s)), max(1, int(h * s))), Image.BICUBIC)
    return im


class VlmScorer:
    """A loaded Qwen2-VL model + processor and the L3 settings; :meth:`score` judges one pair."""

    def __init__(self, model, processor, cfg: dict, implementation: str = ""):
        self.model = model.eval()
        self.processor = processor
        self.cfg = cfg
        self.implementation = implementation or f"{type(model).__name__} (in memory)"

    def messages(self, prompt: str, n_frames: int) -> list[dict]:
        content = [{"type": "text", "text": REFERENCE_LABEL}, {"type": "image"},
                   {"type": "text", "text": FRAMES_LABEL}]
        content += [{"type": "image"} for _ in range(n_frames)]
        content.append({"type": "text", "text": prompt})
        return [{"role": "user", "content": content}]

    def answer(self, edited: np.ndarray, reference: np.ndarray, pair: dict) -> str:
        """The model's decoded answer for one edited video (F, H, W, 3) and the reference (H, W, 3)."""
        import torch
        from transformers import GenerationConfig

        idx = even_indices(len(edited), self.cfg["frames"])
        images = [_fit(reference, self.cfg["max_pixels"])] + [_fit(edited[i], self.cfg["max_pixels"]) for i in idx]
        text = self.processor.apply_chat_template(self.messages(fill_prompt(self.cfg["prompt"], pair), len(idx)),
                                                  add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=images, return_tensors="pt")
        dev = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(dev, dtype) if torch.is_floating_point(v) else v.to(dev)) for k, v in inputs.items()}
        gen = self.model.generation_config
        tok = self.processor.tokenizer
        gc = GenerationConfig(max_new_tokens=self.cfg["max_new_tokens"], do_sample=False,
                              eos_token_id=gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id,
                              pad_token_id=gen.pad_token_id if gen.pad_token_id is not None else tok.pad_token_id)
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=gc)
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)[0].strip()

    def judge(self, answer: str) -> tuple[dict, list[str]]:
        """({"vlm_score", "vlm_answer", "pass"}, reject reasons) from a decoded answer."""
        lo, hi = self.cfg["score_range"]
        ans = answer[:ANSWER_CHARS]
        score = parse_score(answer, lo, hi)
        if score is None:
            first = _NUMBER.search(answer or "")
            why = f" (first number {first.group()} outside [{lo:g}, {hi:g}])" if first else ""
            return ({"vlm_score": None, "vlm_answer": ans, "pass": False},
                    [f"l3: vlm answer unparsable: {ans[:80]!r}{why}"])
        ok = score >= self.cfg["min_score"]
        reasons = [] if ok else [f"l3: vlm_score {score:g} < {self.cfg['min_score']:g}"]
        return {"vlm_score": score, "vlm_answer": ans, "pass": ok}, reasons

    def score(self, edited: np.ndarray, reference: np.ndarray, pair: dict) -> tuple[dict, list[str]]:
        return self.judge(self.answer(edited, reference, pair))


def load_model(cfg: dict, root: str | Path = "."):
    """(model, processor, implementation) from the local directory ``cfg['weights']`` under ``root``."""
    path = Path(root) / cfg["weights"]
    if not (path / "config.json").is_file():
        raise MissingWeightsError(
            f"filter L3 VLM is enabled but its weights are missing: no model directory with config.json at "
            f"{path} (params key '{KEY}.weights' = {cfg['weights']!r}). Fetch them with "
            f"`dvc pull {cfg['weights']}`, or set '{KEY}' to null to turn the VLM score off.")
    import torch
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    device = resolve_device(cfg["device"])
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    what, key = "filter L3 VLM", f"{KEY}.weights"
    try:
        model, info = Qwen2VLForConditionalGeneration.from_pretrained(str(path), local_files_only=True, dtype=dtype,
                                                                      output_loading_info=True)
    except RuntimeError as e:   # transformers raises on tensors of another shape (ignore_mismatched_sizes=False)
        raise WeightsLayoutError(f"{what}: the weights at '{path}' (params {key}) do not fit the "
                                 f"Qwen2VLForConditionalGeneration built from its config.json: {e}") from e
    # from_pretrained is not strict (a renamed tensor loads nothing, its weight stays random): refuse any
    # missing/unexpected name. The published layouts (Qwen2-VL-2B with tied lm_head, 7B with its own lm_head)
    # report none with the pinned transformers, so nothing is ignored.
    check_loading_info(info, str(path), key, what=what)
    processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
    impl = (f"transformers Qwen2VLForConditionalGeneration ({cfg['weights']}), {dtype}, greedy "
            f"max_new_tokens={cfg['max_new_tokens']}, {cfg['frames']} frames + reference, "
            f"<= {cfg['max_pixels']} px per image, first number in {cfg['score_range']}")
    return model.to(device).eval(), processor, impl


def load(params: dict, root: str | Path = ".") -> VlmScorer | None:
    """The configured L3 VLM scorer, or None when ``filter.l3.vlm`` is off."""
    cfg = read_config(params)
    if cfg is None:
        return None
    model, processor, impl = load_model(cfg, root)
    return VlmScorer(model, processor, cfg, impl)
