"""Named implementations of one interface, chosen by a params key (backends, detectors, routes).

Every ML-dependent operation has a weight-free and a real implementation; params pick one by
name. This is the one place that maps names to classes and says, naming the params key, which
names exist when an unknown one is asked for.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry(dict):
    def __init__(self, key: str, kind: str = "backend"):
        super().__init__()
        self.key, self.kind = key, kind

    def register(self, *names: str) -> Callable[[type], type]:
        """Class decorator: register under ``names``; the first becomes ``cls.name``."""
        def deco(cls: type) -> type:
            for n in names:
                if n in self:
                    raise ValueError(f"{self.kind} {n!r} for '{self.key}' registered twice")
                self[n] = cls
            cls.name = names[0]
            return cls
        return deco

    def check(self, name: Any) -> str:
        """Return ``name`` if registered; otherwise a ValueError naming the params key and the known names."""
        if not isinstance(name, str) or name not in self:
            raise ValueError(f"params key '{self.key}': unknown {self.kind} {name!r} (known: {', '.join(sorted(self))})")
        return name

    def create(self, name: Any, cfg: dict):
        return self[self.check(name)](cfg)
