"""Versions you can pull: `pull`, `release` (git tags) and `get` (any tagged artifact into a directory).

- ``pull``: ``dvc pull`` of every milestone, then ``snakemake --touch`` so that Snakemake
  (which decides on mtimes for large files, and DVC does not keep mtimes) sees the pulled
  artifacts as up to date: ``snakemake -n`` right after has nothing to do.
- ``release KIND``: tag the current commit ``KIND-vN`` (dataset, teacher, student) with the
  next free N, after checking that dvc.lock is committed and the artifacts match it, and
  push the data to the default remote.
- ``get TAG OUT``: ``dvc get`` the artifact(s) of a release tag into OUT — from this repo or
  any clone URL (``--repo``), so a tagged dataset or model can be fetched without a build.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from genbuild.workflow import pipelines


def release_kinds() -> dict[str, list[str]]:
    """Release kind -> the DVC stages (= artifact names) it tags, from every pipeline's table.
    A second pipeline's kinds carry its stage prefix (avgen_dataset, ...), so none can clash."""
    kinds: dict[str, list[str]] = {}
    for p in pipelines().values():
        for kind, milestones in p.releases.items():
            kinds[p.stage(kind)] = [p.stage(m) for m in milestones]
    return kinds


def artifact_dirs() -> dict[str, str]:
    """DVC stage name -> its artifact directory under paths.artifacts."""
    return {p.stage(m): ms.out for p in pipelines().values() for m, ms in p.milestones.items()}


KINDS = release_kinds()


# Wall-clock limit (s) of each git/dvc/snakemake command; a pull of a large remote may take hours.
TIMEOUT_ENV = "GENBUILD_VERSIONS_TIMEOUT"
DEFAULT_TIMEOUT_S = 12 * 3600.0


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise SystemExit(f"versions: {TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise SystemExit(f"versions: {TIMEOUT_ENV}={raw!r} must be > 0 seconds")
    return value


def _run(cmd: list[str], cwd: Path, capture: bool = False) -> str:
    print("+ " + " ".join(cmd), file=sys.stderr)
    limit = _timeout()
    try:
        res = subprocess.run(cmd, cwd=cwd, text=True, capture_output=capture, timeout=limit)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"versions: `{' '.join(cmd)}` did not finish within {limit:g} s ({TIMEOUT_ENV})") from None
    if res.returncode != 0:
        detail = (res.stderr or "").strip()[-2000:] if capture else ""
        raise SystemExit(f"versions: `{' '.join(cmd)}` failed with exit code {res.returncode}{': ' + detail if detail else ''}")
    return res.stdout if capture else ""


def _snakemake() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else "snakemake"


def _dvc() -> str:
    exe = Path(sys.executable).with_name("dvc")
    return str(exe) if exe.exists() else "dvc"


def pull(repo: Path, remote: str | None = None) -> None:
    _run([_dvc(), "pull", *(["--remote", remote] if remote else [])], repo)
    # Make mtimes agree with the DAG; pulled milestones need no work/ intermediates (see rules/pack.smk).
    _run([_snakemake(), "--cores", "1", "--touch", "--quiet", "all"], repo)


def next_tag(repo: Path, kind: str) -> str:
    tags = _run(["git", "tag", "--list", f"{kind}-v*"], repo, capture=True).split()
    nums = [int(m.group(1)) for t in tags if (m := re.fullmatch(rf"{kind}-v(\d+)", t))]
    return f"{kind}-v{max(nums, default=0) + 1}"


def release(repo: Path, kind: str, push: bool = True) -> str:
    if kind not in KINDS:
        raise SystemExit(f"versions: unknown release kind '{kind}' (known: {', '.join(KINDS)})")
    if _run(["git", "status", "--porcelain", "--", "dvc.lock", "dvc.yaml", "params.yaml"], repo, capture=True).strip():
        raise SystemExit("versions: dvc.lock, dvc.yaml or params.yaml has uncommitted changes: commit them first")
    status = _run([_dvc(), "status", *KINDS[kind]], repo, capture=True)
    if "up to date" not in status:
        raise SystemExit(f"versions: the {kind} artifacts do not match dvc.lock (run `dvc repro` or `dvc commit`):\n{status}")
    tag = next_tag(repo, kind)
    _run(["git", "tag", "-a", tag, "-m", f"{kind} release {tag}"], repo)
    if push:
        _run([_dvc(), "push", *KINDS[kind]], repo)
    print(tag)
    return tag


def get(tag: str, out: Path, repo: str = ".", artifacts: str = "artifacts") -> list[Path]:
    kind = tag.rsplit("-v", 1)[0]
    if kind not in KINDS or not re.fullmatch(r".+-v\d+", tag):
        raise SystemExit(f"versions: '{tag}' is not a release tag (KIND-vN with KIND in {', '.join(KINDS)})")
    out.mkdir(parents=True, exist_ok=True)
    got = []
    for name in KINDS[kind]:
        dest = out / name
        _run([_dvc(), "get", repo, f"{artifacts}/{artifact_dirs()[name]}", "--rev", tag, "-o", str(dest)], Path.cwd())
        got.append(dest)
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Pull, release and fetch versions of the pipelines' milestones.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pull", help="dvc pull + snakemake --touch")
    p.add_argument("--remote")
    r = sub.add_parser("release", help="tag KIND-vN and push its data")
    r.add_argument("kind", choices=sorted(KINDS))
    r.add_argument("--no-push", action="store_true")
    g = sub.add_parser("get", help="fetch a tagged artifact into a directory")
    g.add_argument("tag")
    g.add_argument("out", type=Path)
    g.add_argument("--repo", default=".", help="repo path or git URL (default: this checkout)")
    a = ap.parse_args(argv)
    if a.cmd == "pull":
        pull(Path.cwd(), a.remote)
    elif a.cmd == "release":
        release(Path.cwd(), a.kind, push=not a.no_push)
    else:
        for d in get(a.tag, a.out, a.repo):
            print(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
