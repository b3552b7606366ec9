"""Per-item failures: recorded with their reason, never fatal to the stage.

Every stage that handles many items collects failures here and writes them to its
``rejects.jsonl``; the index and dataset card total them by stage and reason.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from genbuild.io.jsonio import write_jsonl

log = logging.getLogger(__name__)


@dataclass
class Rejects:
    stage: str
    rows: list[dict] = field(default_factory=list)

    def add(self, item: str, reason: str, **details) -> None:
        log.warning("%s: rejected %s: %s", self.stage, item, reason)
        self.rows.append({"stage": self.stage, "item": item, "reason": reason, **details})

    def __len__(self) -> int:
        return len(self.rows)

    def by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            key = r["reason"].split(":")[0]
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    def write(self, path: str | os.PathLike) -> None:
        write_jsonl(path, sorted(self.rows, key=lambda r: (r["item"], r["reason"])))
