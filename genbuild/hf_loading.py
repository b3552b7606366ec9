"""Strict checks for transformers ``from_pretrained`` loads.

``PreTrainedModel.from_pretrained`` is not strict: a checkpoint key the model does not know is
dropped, and a model weight the checkpoint lacks stays at its random init, with a log line only.
Loaders call it with ``output_loading_info=True`` and hand the returned dict to
:func:`check_loading_info`, which raises :class:`WeightsLayoutError` naming the directory, the
params key and the first few offending names::

    model, info = Cls.from_pretrained(path, local_files_only=True, output_loading_info=True)
    check_loading_info(info, str(path), "filter.l3.vlm.weights")

``ignore`` takes names (or ``fnmatch`` globs such as ``"*.position_ids"``) that transformers
legitimately reports for the *published* layout of a model -- a tied weight the checkpoint
omits, a buffer the model rebuilds -- and nothing else: each entry should be documented where
it is passed. With the pinned transformers (5.25) the published Qwen2-VL, Grounding DINO and
DINOv2 layouts report nothing (tied weights such as Qwen2-VL-2B's ``lm_head`` are tied, not
missing; non-persistent buffers are not expected), so the loaders pass no ``ignore``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

SHOW = 5   # names quoted per list in the message


class WeightsLayoutError(ValueError):
    """A weights directory whose tensor names or shapes do not match the model built for it."""


def _name(entry: Any) -> str:
    """A report entry's key: a name, or the name of a (name, checkpoint shape, model shape) mismatch."""
    return str(entry[0]) if isinstance(entry, (tuple, list)) else str(entry)


def _shape(s: Any) -> str:
    try:
        return "(" + ", ".join(str(int(d)) for d in s) + ")"
    except TypeError:
        return str(s)


def _quote(names: list[str], show: int) -> str:
    more = f" and {len(names) - show} more" if len(names) > show else ""
    return ", ".join(names[:show]) + more


def loading_problems(info: Mapping[str, Any], ignore: Iterable[str] = (), show: int = SHOW) -> list[str]:
    """The non-empty lists of a ``from_pretrained(..., output_loading_info=True)`` report, as phrases
    (empty when the checkpoint matched); names matching an ``ignore`` glob are left out."""
    ignore = tuple(ignore)

    def keep(entries) -> list:
        return sorted((e for e in (entries or ()) if not any(fnmatchcase(_name(e), g) for g in ignore)), key=_name)

    out = []
    missing = keep(info.get("missing_keys"))
    if missing:
        out.append(f"{len(missing)} model weight(s) missing from the checkpoint (they would stay at random init): "
                   f"{_quote([_name(e) for e in missing], show)}")
    unexpected = keep(info.get("unexpected_keys"))
    if unexpected:
        out.append(f"{len(unexpected)} checkpoint tensor(s) the model has no place for: "
                   f"{_quote([_name(e) for e in unexpected], show)}")
    mismatched = keep(info.get("mismatched_keys"))
    if mismatched:
        desc = [f"{e[0]} checkpoint {_shape(e[1])} vs model {_shape(e[2])}"
                if isinstance(e, (tuple, list)) and len(e) >= 3 else _name(e) for e in mismatched]
        out.append(f"{len(mismatched)} tensor(s) with another shape: {_quote(desc, show)}")
    errors = [str(e) for e in (info.get("error_msgs") or ())]
    if errors:
        out.append(f"{len(errors)} load error(s): {_quote(errors, min(show, 2))}")
    return out


def check_loading_info(info: Mapping[str, Any], where: str, key: str, ignore: tuple[str, ...] = (),
                       what: str = "", show: int = SHOW) -> None:
    """Raise :class:`WeightsLayoutError` if the loading report ``info`` lists any missing, unexpected or
    shape-mismatched key or a load error (apart from names matching ``ignore``); ``where`` is the
    file/directory loaded, ``key`` the params key that points at it, ``what`` (optional) the model's role."""
    problems = loading_problems(info, ignore, show)
    if problems:
        head = f"{what}: " if what else ""
        raise WeightsLayoutError(f"{head}the weights at '{where}' (params {key}) do not match the model built for "
                                 "them (a renamed or foreign checkpoint?): " + "; ".join(problems))
