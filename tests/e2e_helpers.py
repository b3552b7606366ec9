"""Helpers for end-to-end tests: a throw-away copy of the repo driven by real Snakemake and DVC."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPY_DIRS = ["genbuild", "pvtt", "avgen", "rules", "scripts", "schemas", "configs", "profiles", "envs", ".dvc"]
COPY_FILES = ["Snakefile", "params.yaml", "dvc.yaml", "pyproject.toml", ".gitignore", ".dvcignore"]


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"
    e["PYTHONUNBUFFERED"] = "1"
    e.setdefault("GIT_AUTHOR_NAME", "pvtt-test")
    e.setdefault("GIT_AUTHOR_EMAIL", "pvtt-test@localhost")
    e.setdefault("GIT_COMMITTER_NAME", "pvtt-test")
    e.setdefault("GIT_COMMITTER_EMAIL", "pvtt-test@localhost")
    return e


def run(cmd: list[str] | str, cwd: Path, check: bool = True, timeout: int = 1500,
        extra_env: dict | None = None) -> subprocess.CompletedProcess:
    # A repo copy runs its own packages (PYTHONPATH beats the editable install of this checkout).
    own = {"PYTHONPATH": str(cwd)} if (Path(cwd) / "genbuild").is_dir() else {}
    res = subprocess.run(cmd, cwd=cwd, env={**env(), **own, **(extra_env or {})}, capture_output=True, text=True, timeout=timeout,
                         shell=isinstance(cmd, str))
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\nSTDOUT:\n{res.stdout[-4000:]}\nSTDERR:\n{res.stderr[-6000:]}")
    return res


def make_repo(dest: Path, overlay: dict | None = None, preset: str = "ci") -> Path:
    """Copy the project into ``dest`` (a new git repo), with params.yaml = params + configs/<preset> + overlay
    (an overlay names keys as params.yaml does: ``{"pvtt": {"data": ...}}``)."""
    dest.mkdir(parents=True, exist_ok=True)
    for d in COPY_DIRS:
        if (ROOT / d).exists():
            shutil.copytree(ROOT / d, dest / d, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
    for f in COPY_FILES:
        if (ROOT / f).exists():
            shutil.copy2(ROOT / f, dest / f)
    from genbuild.params import deep_merge

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if preset:
        params = deep_merge(params, yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text()))
    params = deep_merge(params, overlay or {})
    write_params(dest, params)
    run([sys.executable, "-m", "genbuild.dvcgen"], dest)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test copy"], dest)
    run(["dvc", "remote", "modify", "--local", "storage", "url", str(dest.parent / f"{dest.name}-remote")], dest)
    return dest


def bad_inputs(root: Path) -> Path:
    """PVTT inputs every stage must reject with a reason (a corrupt and an empty video, a non-image product view)."""
    d = root / "bad_inputs"
    d.mkdir()
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    (d / "empty.mp4").write_bytes(b"")
    (d / "not_an_image.png").write_text("this is not an image\n")
    (d / "manifest.yaml").write_text(
        "videos:\n"
        "  - {id: bad_corrupt, path: corrupt.mp4, category: bottle, caption: a corrupt upload}\n"
        "  - {id: bad_empty, path: empty.mp4, category: box, caption: a zero-byte upload}\n"
        "products:\n"
        "  - id: bad_product\n"
        "    category: bag\n"
        "    name: broken bag\n"
        "    caption: a product whose image is not an image\n"
        "    views: [{view: view0, path: not_an_image.png}]\n")
    return d / "manifest.yaml"


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def read_params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def snakemake_jobs(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table into {rule: count} (empty when nothing to do)."""
    jobs: dict[str, int] = {}
    m = re.search(r"Job stats:\n(.*?)\n\s*\n", output + "\n\n", re.S)
    if not m:
        return jobs
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("job", "total"):
            jobs[parts[0]] = int(parts[1])
    return jobs


def dvc_ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def dvc_changed_stages(status_output: str) -> list[str]:
    """Stage names that `dvc status` reports (lines 'name:' at column 0)."""
    return [line[:-1] for line in status_output.splitlines() if re.match(r"^[A-Za-z0-9_]+:$", line)]


# ----------------------------------------------------------------------------- processes (/proc)
# What the crash and chaos tests need to find and kill a build's jobs.

def proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of ``pid``, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def children() -> dict[int, list[int]]:
    """ppid -> the live (non-zombie) processes it started."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := proc_stat(int(d))) is not None and st[1] != "Z":
            kids.setdefault(st[0], []).append(int(d))
    return kids


def descendants(pid: int, kids: dict[int, list[int]] | None = None) -> list[int]:
    """Every process below ``pid`` (``kids``: a children() snapshot to reuse)."""
    kids, out, todo = kids or children(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
