"""``python -m pvtt <command>``: the user-facing commands that are not DAG stages.

- ``generate``: edit one template video with a new product (``pvtt.deploy.generate``).
- ``serve``: the edit as an HTTP service with a task queue (``pvtt.serve.app``).
- ``data``: ask the dataset index: ``data stats``, ``data lineage <id>``, ``data ids`` (``pvtt.pack.query``).
"""
from __future__ import annotations

import sys

COMMANDS = {"generate": "pvtt.deploy.generate", "serve": "pvtt.serve.app", "data": "pvtt.pack.query"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m pvtt {{{','.join(COMMANDS)}}} [options]  (-h after a command for its options)",
              file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
