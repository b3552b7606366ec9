"""Shared plumbing for stage entry points (scripts/<stage>.py -> <pipeline>.<role>.<stage>.main).

A rule passes the params subtree it declared as one JSON string (``--params``), so that
Snakemake's params trigger and the script see exactly the same values.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


TIMEOUTS_ENV = "GENBUILD_VIDEO_TIMEOUTS"


class StageParser(argparse.ArgumentParser):
    """An ArgumentParser that applies the process limits of params ``video.timeouts`` before the
    stage runs, so that no entry point can forget to: every ffmpeg/ffprobe of the stage runs
    under them. The workflow hands them over in the environment (``GENBUILD_VIDEO_TIMEOUTS``, a
    JSON object; rules/common.smk sets it), not in a rule's params: a limit does not change what
    a stage computes, so changing one must not rebuild the DAG."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        raw = os.environ.get(TIMEOUTS_ENV)
        if raw:
            from genbuild.io.video import configure_timeouts
            try:
                configure_timeouts(json.loads(raw))
            except (ValueError, AttributeError) as e:
                self.error(f"{TIMEOUTS_ENV}={raw!r}: {e}")
        return ns, rest


def parser(description: str) -> argparse.ArgumentParser:
    ap = StageParser(description=description)
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
