"""``python -m avgen <command>``: the AVGen model as a tool. ``generate``: a prompt -> an mp4 with sound."""
from __future__ import annotations

import sys

COMMANDS = {"generate": "avgen.deploy.generate"}


def main(argv: list[str] | None = None) -> None:
    import importlib

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m avgen {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        sys.exit(2)
    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    main()
