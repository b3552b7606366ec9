"""Shared plumbing for stage entry points (scripts/<stage>.py -> <pipeline>.<role>.<stage>.main).

A rule passes the params subtree it declared as one JSON string (``--params``), so that
Snakemake's params trigger and the script see exactly the same values.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--params", type=json.loads, default={},
                    help="JSON object: the params subtree this stage reads (rules pass it)")
    return ap


def get(params: dict, dotted: str, default: Any = ...) -> Any:
    """Read ``a.b.c`` from a nested dict; a missing key without default names the key."""
    cur: Any = params
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            if default is ...:
                raise KeyError(f"params key '{dotted}' is missing")
            return default
        cur = cur[part]
    return cur
