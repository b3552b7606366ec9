"""Chaos test (issue 12, point 6; `make test-chaos`, run by .ci/run; not collected by pytest).

The whole ci DAG (every milestone, dataset to eval) is built twice from one throw-away copy of the
repo (tests/e2e_helpers.make_repo, with the bad inputs of tests/e2e/test_e2e.py in the manifest):

1. clean: `snakemake --cores 2 --rerun-incomplete` to completion, then `dvc commit -f` (dvc.lock);
2. chaos: the same command in a copy of the same tree, several times. In each round a random running
   job (or, sometimes, the driver) is SIGKILLed after a random delay, Snakemake stops, and the next
   round is the same command again: Snakemake's own recovery (`--rerun-incomplete`, after
   `snakemake --unlock` when the driver itself was killed). A last round runs undisturbed to the end.

Kill kinds, drawn per kill (CHAOS_KINDS, comma-separated, repeat a kind to weight it):
- ``job``: the chosen job's whole process tree (its shell, python, ffmpeg or torchrun and workers), as
  SLURM kills a job's cgroup: every process is stopped (SIGSTOP, so none can fork meanwhile), then all
  get SIGKILL;
- ``oom``: only the job's process with the largest RSS, as the kernel's OOM killer picks one;
  its children are left to fend for themselves; any still running once Snakemake has reported the
  job failed are reported as orphans (waited for up to 60 s, then killed) before the next round;
- ``driver``: Snakemake and everything it started (a lost login session or node); the next round
  first runs `snakemake --unlock`;
- ``top``: only the job's top process (its shell); not in the default mix (an experiment: it orphans
  the job's python, which goes on writing; the test reports when it writes the job's output after
  Snakemake failed the job, which the next round then takes as done).
Processes are signalled through pidfds, after checking that they still descend from this Snakemake,
so a recycled pid is never hit.

When: the clean build's wall time T spreads the kills over the whole DAG: [0.03 T, 0.95 T] is cut into
N equal slices and one point drawn uniformly in each; round k waits the gap between points k-1 and k
after its first job starts. Rounds redo killed work, so kills land at or before their point, never
after the build's end. The seed (CHAOS_SEED, default: random) is printed; the draws (delays, kinds,
which of the running jobs) follow from it, the timing of the jobs does not.

Both builds use the ci preset with denser training checkpoints (teacher every 10 steps, students every
2, as tests/e2e/test_crash.py does), so a kill during training resumes from a checkpoint and resume
exactness is part of what is checked. Both run at the same path (the clean one is moved aside after
its build): the comparison is about the kills, not the checkout's location; output files that hold
that path are reported as a warning.

Checks (any failure: exit status 1, with what differs):
- each job kill made its Snakemake run fail with "Error in rule <rule>" (the kill was seen);
- the final run succeeds and `snakemake -n` then has nothing to do; no incomplete-output markers;
- byte identity: every file of every output the clean build declares (`snakemake --summary`) has the
  same sha256 in both builds, same file set (Snakemake's .snakemake_timestamp markers aside), and so
  does work/pairs/rejects.jsonl, which the pairs rule writes beside its outputs undeclared. The one
  exception is wall time: artifacts/eval/metrics.json (``seconds_per_video``), report.html (those
  columns) and artifacts/engine/check.json (each form's ``seconds``) are compared with those values
  masked (and `dvc status` may then see engine, and eval after it, changed);
- leftovers: no file outside the declared outputs and the side directories (work/logs,
  work/benchmarks, work/checkpoints, work/dvclive), and no atomic-write temporary (``.*.tmp-PID``)
  or ``*.part``/``*.tmp`` file anywhere under work/ or artifacts/, checkpoints included;
- items lost: ingested videos, products, clips, masks, triplets in the shards, latent keys, eval
  items and rejects are counted in both builds; lost = what the chaos build lacks (must be 0) and the
  bad inputs are rejected in both;
- DVC: with the clean build's dvc.lock (and its cache, hard-linked: else every output is "not in
  cache"), `dvc status` in the chaos build reports no stage except
  eval, and eval only for the wall-time values above; after `dvc commit -f eval` it reports nothing.

Also printed: which jobs were hit, the training jobs that resumed from a checkpoint (from their logs),
the load average. The last line: ``kills=<n> lost=<m> identical=<true|false> bad_inputs=<k>
orphans=<o> resumed=<r> clean_s=... chaos_s=... total_s=... seed=...``. Settings (environment, or
the options in lower case): CHAOS_SEED, CHAOS_KILLS (default 6), CHAOS_KINDS (default
job,job,oom,driver), CHAOS_CORES (2), CHAOS_TARGET (a sub-DAG, e.g. artifacts/teacher; default the
whole DAG), CHAOS_DIR (default a new temp dir), CHAOS_KEEP=1 keeps the dir (it is kept on failure
anyway), CHAOS_RUN_TIMEOUT (one Snakemake run, default 1800 s).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]  # the e2e helpers (not a package)

from e2e_helpers import (  # noqa: E402
    bad_inputs,
    children,
    cmdline,
    descendants,
    dvc_changed_stages,
    env,
    make_repo,
    proc_stat,
    run,
)
from test_e2e import _digest  # noqa: E402  (the artifact digest)

SIDE_DIRS = ("work/logs", "work/benchmarks", "work/checkpoints", "work/dvclive")  # not outputs: never compared
# Written by a rule next to its declared outputs, in the same atomic rename, and read by a later stage
# (pack gathers every work/<stage>/rejects.jsonl), but not declared: compared like an output.
UNDECLARED = ("work/pairs/rejects.jsonl",)
# Files that hold measured seconds (compared with them masked): the evaluation's and the engine check's.
WALL_TIME = {"artifacts/eval/metrics.json", "artifacts/eval/report.html", "artifacts/engine/check.json"}
SECONDS_KEYS = {"seconds_per_video", "seconds", "pytorch_seconds"}
LEFTOVER = re.compile(r"(^\..*\.tmp-\d+$)|(\.part$)|(\.tmp$)")
# The ci preset with denser training checkpoints (as tests/e2e/test_crash.py): a kill during training then
# resumes from at most 10 teacher steps (2 student steps) back, so resume-exactness is part of what is tested.
OVERLAY = {"pvtt": {"teacher": {"checkpoint_every": 10}, "distill": {"common": {"checkpoint_every": 2}}}}
RUN_TIMEOUT_S = int(os.environ.get("CHAOS_RUN_TIMEOUT", "1800"))  # one Snakemake run (a loaded machine is slow)


def say(msg: str) -> None:
    print(f"test-chaos: {msg}", flush=True)


class CheckFailed(Exception):
    pass


# --- processes ----------------------------------------------------------------------------------------

def rss_kb(pid: int) -> int:
    try:
        m = re.search(r"^VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return 0
    return int(m.group(1)) if m else 0


def job_label(pid: int) -> str:
    """Which job: its output (``--out``) from its shell's command line, else the script it runs."""
    cmd = cmdline(pid)
    m = re.search(r"--out '?([^\s']+)", cmd) or re.search(r"(scripts/\w+\.py)", cmd)
    return m.group(1) if m else cmd[:60]


@dataclass(order=True, frozen=True)
class Proc:
    pid: int
    start: int
    cmd: str = field(compare=False, default="")

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        st = proc_stat(pid)
        return None if st is None else cls(pid, st[2], cmdline(pid))

    def alive(self) -> bool:
        st = proc_stat(self.pid)
        return st is not None and st[2] == self.start and st[1] != "Z"


def _open(pid: int, allowed_parents: set[int]) -> int | None:
    """A pidfd for ``pid`` if it is (still) a live child of one of ``allowed_parents``; the fd pins the
    process, so the check and the signal concern the same one."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    st = proc_stat(pid)
    if st is None or st[1] == "Z" or st[0] not in allowed_parents:
        os.close(fd)
        return None
    return fd


def _signal(fd: int, sig: int) -> bool:
    try:
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False


def kill_tree(root: int, parent: int) -> list[Proc]:
    """SIGSTOP ``root`` (a child of ``parent``) and all its descendants until no new one appears, then
    SIGKILL them all: what a cgroup kill does. Returns the processes killed (empty if root was gone)."""
    fds: dict[int, int] = {}
    procs: list[Proc] = []
    try:
        fd = _open(root, {parent})
        if fd is None:
            return []
        fds[root] = fd
        _signal(fd, signal.SIGSTOP)
        seen = {root}
        while True:
            new = [p for p in descendants(root) if p not in seen]
            if not new:
                break
            seen.update(new)
            for p in new:
                if (fd := _open(p, {root, *fds})) is not None:
                    fds[p] = fd
                    _signal(fd, signal.SIGSTOP)
        for p, fd in fds.items():
            if (pr := Proc.of(p)) is not None:
                procs.append(pr)
            _signal(fd, signal.SIGKILL)
    finally:
        for fd in fds.values():
            os.close(fd)
    return procs


def kill_one(pid: int, allowed_parents: set[int]) -> bool:
    fd = _open(pid, allowed_parents)
    if fd is None:
        return False
    try:
        return _signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)


def running_jobs(snake: int) -> dict[int, str]:
    """The job processes Snakemake runs now: its children (each a shell running one rule's command)."""
    return {p: job_label(p) for p in children().get(snake, []) if cmdline(p)}


# --- one Snakemake run, maybe with a kill -------------------------------------------------------------

@dataclass
class Round:
    n: int
    kind: str | None = None
    target: str = ""
    killed: list[Proc] = field(default_factory=list)
    rc: int | None = None
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    at_s: float = 0.0
    orphans: list[str] = field(default_factory=list)
    watch: list[Proc] = field(default_factory=list)  # descendants of a single killed process
    at_failure: list[Proc] | None = None  # those alive when Snakemake reported the job failed
    out: str = ""  # the killed job's --out
    out_before: bool = False
    late_output: str = ""
    resumes: list[str] = field(default_factory=list)  # training jobs of this run that resumed from a checkpoint


def resumes(repo: Path, since: float) -> list[str]:
    """'<log>: step N of M' for each training log written since ``since`` that says it resumed."""
    out = []
    for f in sorted((repo / "work/logs").rglob("*.log")):
        if f.stat().st_mtime >= since and (m := re.search(r"resuming from step (\d+ of \d+)", f.read_text(errors="replace"))):
            out.append(f"{f.stem} from step {m.group(1)}")
    return out


TARGETS: list[str] = []  # --target: a sub-DAG (default: Snakemake's default target, the whole DAG)


def snakemake_cmd(cores: int, *extra: str) -> list[str]:
    return [str(Path(sys.executable).parent / "snakemake"), "--cores", str(cores), "--rerun-incomplete", *extra, *TARGETS]


def repo_env(repo: Path) -> dict:
    return {**env(), "PYTHONPATH": str(repo)}  # the copy's own packages (as e2e_helpers.run does)


def chaos_round(repo: Path, cores: int, log: Path, n: int, delay: float | None, kind: str | None,
                rng: random.Random) -> Round:
    """Start Snakemake; unless ``delay`` is None, ``delay`` s after its first job starts kill as ``kind``
    says; wait for Snakemake to end."""
    r = Round(n)
    t0 = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(snakemake_cmd(cores), cwd=repo, env=repo_env(repo), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        if delay is not None:
            while proc.poll() is None and not running_jobs(proc.pid):
                time.sleep(0.05)
            t_kill = time.time() + delay
            while proc.poll() is None and time.time() < t_kill:
                time.sleep(0.05)
            while proc.poll() is None and not r.killed:
                jobs = running_jobs(proc.pid)
                if not jobs:
                    time.sleep(0.02)
                    continue
                r.at_s = time.time() - t0
                if kind == "driver":
                    r.kind, r.target = kind, "snakemake + jobs " + ", ".join(sorted(jobs.values()))
                    r.killed = kill_tree(proc.pid, os.getpid())
                    continue
                pid = rng.choice(sorted(jobs, key=lambda p: (jobs[p], p)))
                r.kind, r.target = kind, jobs[pid]
                if kind == "job":
                    r.killed = kill_tree(pid, proc.pid)
                else:
                    kids = children()
                    tree = [pid, *descendants(pid, kids)]
                    victim = max(tree, key=rss_kb) if kind == "oom" else pid
                    parents = {proc.pid, *tree}
                    before = [pr for p in tree if (pr := Proc.of(p)) is not None]
                    if kill_one(victim, parents):
                        r.killed = [pr for pr in before if pr.pid == victim]
                        below = set(descendants(victim, kids))  # they lose their parent: possible orphans
                        r.watch = [pr for pr in before if pr.pid in below]
                        m = re.search(r"--out (\S+)", cmdline(pid) or before[0].cmd)
                        r.out = m.group(1).strip("'") if m else ""
                        r.out_before = bool(r.out) and (repo / r.out).exists()
        deadline = time.time() + RUN_TIMEOUT_S
        while proc.poll() is None:
            # Processes of the killed job still running once Snakemake has reported the failure (and removed
            # the job's outputs) are orphans: they may go on writing.
            if r.watch and r.at_failure is None and "Error in rule" in log.read_text(errors="replace"):
                r.at_failure = [p for p in r.watch if p.alive()]
            if time.time() > deadline:
                raise subprocess.TimeoutExpired(proc.args, RUN_TIMEOUT_S)
            time.sleep(0.2)
        r.rc = proc.returncode
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid, os.getpid())
        proc.wait()
        raise CheckFailed(f"round {n}: Snakemake did not end within {RUN_TIMEOUT_S} s; log {log}") from None
    r.seconds = time.time() - t0
    r.resumes = resumes(repo, t0)
    text = log.read_text()
    r.errors = re.findall(r"Error in rule (\S+?):", text)
    r.orphans = _settle_orphans(sorted(set(r.at_failure or []) | {p for p in r.watch if p.alive()}))
    if r.orphans and r.out and not r.out_before and (repo / r.out).exists():
        r.late_output = r.out  # written by the orphans after Snakemake failed the job and removed its outputs
    return r


def _settle_orphans(watch: list[Proc], wait_s: float = 60) -> list[str]:
    """Processes of a killed job that outlived the job's failure: wait for them (they may be finishing a
    write), SIGKILL what is left after ``wait_s``. Returns a description of each."""
    alive = list(watch)
    if not alive:
        return []
    out = []
    deadline = time.time() + wait_s
    while time.time() < deadline and any(p.alive() for p in alive):
        time.sleep(0.2)
    for p in alive:
        still = p.alive()
        if still:
            with contextlib.suppress(OSError):
                fd = os.pidfd_open(p.pid)
                try:
                    if p.alive():
                        _signal(fd, signal.SIGKILL)
                finally:
                    os.close(fd)
        out.append(f"pid {p.pid} ({p.cmd[:100]}) outlived its job's failure" + (f", still alive after {wait_s:.0f} s: killed" if still
                                                                          else ", then exited"))
    return out


# --- what the builds hold -----------------------------------------------------------------------------

def declared_outputs(repo: Path, cores: int) -> list[str]:
    res = run(snakemake_cmd(cores, "--summary"), repo)
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    outs = [r[0] for r in rows[1:] if r and r[0] and rows[0][0] == "output_file"]
    if not outs:
        raise CheckFailed(f"`snakemake --summary` listed no outputs:\n{res.stdout[-2000:]}")
    return sorted(outs)


def digest(repo: Path, outputs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for o in [*outputs, *(u for u in UNDECLARED if (repo / u).exists())]:
        p = repo / o
        if p.is_dir():
            out.update({f"{o}/{k}": v for k, v in _digest(p).items()})
        elif p.exists():
            out[o] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[o] = "<missing>"
    return out


def dvc_stages(repo: Path, outputs: list[str]) -> list[str]:
    """The DVC stages (dvc.yaml) whose outputs the build made: all of them for the whole DAG."""
    import yaml

    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return [name for name, st in stages.items() if all(o in outputs for o in st.get("outs", []))]


def path_leaks(repo: Path, outputs: list[str], where: Path) -> list[str]:
    """Output files whose bytes contain the absolute path ``where`` (uncompressed occurrences only)."""
    needle = str(where).encode()
    files = [f for o in outputs for f in ([repo / o] if (repo / o).is_file() else (repo / o).rglob("*")) if f.is_file()]
    return sorted(f.relative_to(repo).as_posix() for f in files if needle in f.read_bytes())


def _drop_seconds(x):
    if isinstance(x, dict):
        return {k: _drop_seconds(v) for k, v in x.items() if k not in SECONDS_KEYS}
    if isinstance(x, list):
        return [_drop_seconds(v) for v in x]
    return x


def _mask_report(html: str) -> str:
    """The report's tables with every seconds_per_video column blanked."""
    out, pos = [], 0
    for head in re.finditer(r"<tr>((?:<th>[^<]*</th>)+)</tr>", html):
        names = re.findall(r"<th>([^<]*)</th>", head.group(1))
        if head.start() < pos or "seconds_per_video" not in names:
            continue
        col = names.index("seconds_per_video")  # 0 = the row's name

        def blank(m: re.Match, col=col) -> str:
            cells = re.findall(r"<td>[^<]*</td>", m.group(2))
            if len(cells) >= col:
                cells[col - 1] = "<td>*</td>"
            return f"<tr>{m.group(1)}{''.join(cells)}</tr>"

        end = html.find("</table>", head.end())
        out += [html[pos:head.end()], re.sub(r"<tr>(<th>[^<]*</th>)((?:<td>[^<]*</td>)+)</tr>", blank, html[head.end():end])]
        pos = end
    return "".join(out) + html[pos:]


def wall_time_equal(a: Path, b: Path, rel: str) -> bool:
    if rel.endswith(".json"):
        return _drop_seconds(json.loads((a / rel).read_text())) == _drop_seconds(json.loads((b / rel).read_text()))
    return _mask_report((a / rel).read_text()) == _mask_report((b / rel).read_text())


def stray_files(repo: Path, outputs: list[str]) -> list[str]:
    """Files under work/ and artifacts/ that are neither in a declared output nor in a side directory,
    and leftover temporaries (atomic-write ``.*.tmp-PID``, ``*.part``, ``*.tmp``) anywhere there."""
    outs = set(outputs) | set(UNDECLARED)
    bad = []
    for top in ("work", "artifacts"):
        for root, dirs, names in os.walk(repo / top):
            for n in names + dirs:
                p = Path(root) / n
                rel = p.relative_to(repo).as_posix()
                if LEFTOVER.search(n):
                    bad.append(rel)
                elif n in names and not (rel.startswith(SIDE_DIRS) or any(rel == o or rel.startswith(o + "/") for o in outs)):
                    bad.append(rel)
    return sorted(bad)


def _count_jsonl(p: Path) -> int:
    return sum(1 for line in p.read_text().splitlines() if line.strip()) if p.exists() else 0


def items(repo: Path) -> Counter:
    """Item counts a kill could lose: ok inputs, clips, masks, triplets, latent keys, eval items, rejects."""
    c: Counter = Counter()
    w, a = repo / "work", repo / "artifacts"
    for f in w.glob("raw/*/*/info.json"):          # per-video stages: work/<stage>/<batch>/<video>/
        c["videos_ok"] += json.loads(f.read_text()).get("status") == "ok"
    for f in w.glob("products/*/product.json"):
        c["products_ok"] += json.loads(f.read_text()).get("status", "ok") == "ok"
    c["clips"] = len(list(w.glob("clips/*/*/*.mp4")))
    c["masks"] = len(list(w.glob("masks/*/*/*.npy.gz")))
    for shard in sorted((a / "dataset/shards").glob("*.tar")):
        with tarfile.open(shard) as t:
            c["triplets"] += sum(1 for m in t.getnames() if m.endswith(".json"))
    for split in ("train", "val"):
        f = a / f"latents/{split}.safetensors"
        if f.exists():
            from safetensors import safe_open

            with safe_open(str(f), "pt") as s:
                c["latent_keys"] += len(json.loads(s.metadata()["keys"]))
    if (a / "eval/metrics.json").exists():
        c["eval_items"] = int(json.loads((a / "eval/metrics.json").read_text()).get("benchmark_items", 0))
    c["rejects"] = _count_jsonl(a / "dataset/rejects.jsonl")
    return c


def bad_input_ids(manifest: Path) -> list[str]:
    import yaml

    m = yaml.safe_load(manifest.read_text())
    return [v["id"] for v in m.get("videos", [])] + [p["id"] for p in m.get("products", [])]


def rejected_ids(repo: Path) -> set[str]:
    f = repo / "artifacts/dataset/rejects.jsonl"
    return {json.loads(line)["item"].split("/")[0] for line in f.read_text().splitlines() if line.strip()} if f.exists() else set()


# --- the test -----------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=int(os.environ["CHAOS_SEED"]) if os.environ.get("CHAOS_SEED") else None)
    ap.add_argument("--kills", type=int, default=int(os.environ.get("CHAOS_KILLS", "6")))
    ap.add_argument("--kinds", default=os.environ.get("CHAOS_KINDS", "job,job,oom,driver"))
    ap.add_argument("--cores", type=int, default=int(os.environ.get("CHAOS_CORES", "2")))
    ap.add_argument("--dir", type=Path, default=Path(os.environ["CHAOS_DIR"]) if os.environ.get("CHAOS_DIR") else None)
    ap.add_argument("--target", action="append", default=os.environ.get("CHAOS_TARGET", "").split() or None,
                    help="build only this target's sub-DAG (repeatable; default the whole DAG)")
    ap.add_argument("--keep", action="store_true", default=os.environ.get("CHAOS_KEEP", "") not in ("", "0"))
    args = ap.parse_args()
    TARGETS[:] = args.target or []
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - {"job", "oom", "driver", "top"}:
        ap.error(f"--kinds: a comma-separated list of job, oom, driver, top; got {args.kinds!r}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    rng = random.Random(seed)
    base = args.dir or Path(tempfile.mkdtemp(prefix="pvtt-chaos."))
    base.mkdir(parents=True, exist_ok=True)
    say(f"seed={seed} (set CHAOS_SEED to replay the draws) kills={args.kills} kinds={','.join(kinds)} cores={args.cores} "
        f"target={' '.join(TARGETS) or 'all'} dir={base} load={os.getloadavg()[0]:.1f}")
    t_all = time.time()
    failures: list[str] = []
    ok = False
    try:
        failures, summary = _run(base, args, kinds, rng, seed, t_all)
        ok = not failures
        for f in failures:
            say(f"FAIL: {f}")
        print(summary, flush=True)
    except (CheckFailed, AssertionError) as e:  # AssertionError: e2e_helpers.run's failed command
        say(f"FAIL: {e}")
    finally:
        if ok and not args.keep and args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
        else:
            say(f"kept {base} (clean/: the clean build, repo/: the chaos build, *.log: each run)")
    return 0 if ok else 1


def _run(base: Path, args, kinds: list[str], rng: random.Random, seed: int, t_all: float) -> tuple[list[str], str]:
    failures: list[str] = []
    # Both builds run at the same path, base/repo (the clean one is moved to base/clean afterwards): the
    # comparison is about what the kills do, not about where the checkout lies (checked apart: path_leaks).
    chaos, clean, pristine = base / "repo", base / "clean", base / "pristine"
    chaos.mkdir()
    manifest = bad_inputs(chaos)
    make_repo(chaos, overlay={"pvtt": {**OVERLAY["pvtt"], "data": {"manifest": str(manifest.relative_to(chaos))}}})
    shutil.copytree(chaos, pristine, symlinks=True)  # the same tree for both (others may be editing the checkout meanwhile)
    bad = bad_input_ids(manifest)

    say(f"clean build: {' '.join(['snakemake', *snakemake_cmd(args.cores)[1:]])} in {chaos}")
    t0 = time.time()
    r = chaos_round(chaos, args.cores, base / "clean.log", 0, None, None, rng)
    clean_s = time.time() - t0
    if r.rc != 0:
        raise CheckFailed(f"the clean build failed (rc {r.rc}); log {base / 'clean.log'}")
    outputs = declared_outputs(chaos, args.cores)
    stages = dvc_stages(chaos, outputs)
    run(["dvc", "commit", "-f", *stages], chaos)
    leaks = path_leaks(chaos, outputs, chaos)
    chaos.rename(clean)
    pristine.rename(chaos)
    say(f"clean build: {clean_s:.0f} s; dvc.lock written for {len(stages)} stages; moved to {clean}")
    if leaks:
        say(f"WARNING (not a chaos failure): {len(leaks)} output files hold the checkout's absolute path, so their bytes "
            f"depend on where the repo lies: {leaks[:8]}")

    lo, width = 0.03 * clean_s, 0.92 * clean_s / args.kills  # one kill point drawn in each of N equal slices
    points = [lo + (i + rng.random()) * width for i in range(args.kills)]
    delays = [b - a for a, b in zip([0.0, *points], points)]
    plan = [rng.choice(kinds) for _ in delays]
    say("plan: " + ", ".join(f"{k} after {d:.1f} s" for d, k in zip(delays, plan)))
    rounds: list[Round] = []
    t0 = time.time()
    unlock = False
    for n, (delay, kind) in enumerate(zip(delays, plan), 1):
        if unlock:
            run(snakemake_cmd(args.cores, "--unlock"), chaos)
        r = chaos_round(chaos, args.cores, base / f"chaos-{n}.log", n, delay, kind, rng)
        rounds.append(r)
        unlock = r.kind == "driver" and bool(r.killed)
        if not r.killed:
            say(f"round {n}: nothing killed (rc {r.rc}, {r.seconds:.0f} s): the build ended first")
            if r.rc != 0:
                failures.append(f"round {n}: Snakemake failed without a kill (rc {r.rc}); log {base / f'chaos-{n}.log'}")
            break
        say(f"round {n}: {r.kind} kill of {r.target} at {r.at_s:.1f} s ({len(r.killed)} processes: "
            f"{', '.join(sorted({Path(p.cmd.split()[0]).name if p.cmd else '?' for p in r.killed}))}); "
            f"Snakemake rc {r.rc}, errors {r.errors or '-'}, {r.seconds:.0f} s")
        for o in r.orphans:
            say(f"round {n}: ORPHAN {o}")
        if r.late_output:
            say(f"round {n}: the killed job's output {r.late_output}, absent at the kill, was written by its orphans "
                "after Snakemake had failed the job")
        if r.kind != "driver" and (r.rc == 0 or not r.errors):
            failures.append(f"round {n}: the {r.kind} kill of {r.target} was not reported by Snakemake (rc {r.rc}, errors {r.errors})")
    if unlock:
        run(snakemake_cmd(args.cores, "--unlock"), chaos)
    final = chaos_round(chaos, args.cores, base / "chaos-final.log", len(rounds) + 1, None, None, rng)
    chaos_s = time.time() - t0
    say(f"final run: rc {final.rc}, {final.seconds:.0f} s; chaos build in all {chaos_s:.0f} s")
    resumed = [f"{x} (run {r.n})" for r in [*rounds, final] for x in r.resumes]
    say(f"training resumed from checkpoints {len(resumed)} times: {', '.join(resumed) or '-'}")
    if final.rc != 0:
        raise CheckFailed(f"the final, undisturbed run failed (rc {final.rc}); log {base / 'chaos-final.log'}")

    # Snakemake: nothing left to do, nothing marked incomplete.
    dry = run(snakemake_cmd(args.cores, "-n"), chaos)
    if "Nothing to be done" not in dry.stdout + dry.stderr:
        failures.append(f"`snakemake -n` after the final run still has work:\n{(dry.stdout + dry.stderr)[-2000:]}")
    inc = chaos / ".snakemake/incomplete"
    if inc.exists() and any(inc.iterdir()):
        failures.append(f"incomplete-output markers left: {sorted(p.name for p in inc.iterdir())[:10]}")

    # Bytes.
    da, db = digest(clean, outputs), digest(chaos, outputs)
    only_a, only_b = sorted(set(da) - set(db)), sorted(set(db) - set(da))
    differ = sorted(k for k in set(da) & set(db) if da[k] != db[k])
    wall = [k for k in differ if k in WALL_TIME and wall_time_equal(clean, chaos, k)]
    differ = [k for k in differ if k not in wall]
    identical = not (only_a or only_b or differ)
    if only_a:
        failures.append(f"{len(only_a)} files of the clean build missing in the chaos build: {only_a[:10]}")
    if only_b:
        failures.append(f"{len(only_b)} files only in the chaos build: {only_b[:10]}")
    if differ:
        failures.append(f"{len(differ)} files differ: {differ[:10]}")
    say(f"bytes: {len(da)} files in {len(outputs)} declared outputs; identical={str(identical).lower()}"
        + (f" (wall-time values masked in {', '.join(sorted(wall))})" if wall else ""))
    for name, repo in (("clean", clean), ("chaos", chaos)):
        stray = stray_files(repo, outputs)
        if stray:
            failures.append(f"leftovers in the {name} build: {stray[:10]}")

    # Items.
    ia, ib = items(clean), items(chaos)
    lost = sum(max(0, ia[k] - ib[k]) for k in ia)
    gained = sum(max(0, ib[k] - ia[k]) for k in ib)
    say("items (clean/chaos): " + ", ".join(f"{k} {ia[k]}/{ib[k]}" for k in sorted(set(ia) | set(ib))))
    if lost or gained:
        failures.append(f"items differ: lost {lost}, extra {gained}: clean {dict(ia)}, chaos {dict(ib)}")
    for name, repo in (("clean", clean), ("chaos", chaos)):
        missing = sorted(set(bad) - rejected_ids(repo))
        if missing:
            failures.append(f"bad inputs not rejected in the {name} build: {missing}")

    # DVC: the clean build's record describes the chaos build (eval's measured seconds aside).
    shutil.copy2(clean / "dvc.lock", chaos / "dvc.lock")
    # ... and its cache (hard links), else `dvc status` reports every output "not in cache".
    shutil.copytree(clean / ".dvc/cache", chaos / ".dvc/cache", copy_function=os.link, dirs_exist_ok=True)
    st0 = run(["dvc", "status", *stages], chaos)
    changed = dvc_changed_stages(st0.stdout)
    timed = {stage for stage in ("eval", "engine") if any(w.startswith(f"artifacts/{stage}/") for w in wall)}
    if set(changed) - {"eval", "engine"} or set(changed) - timed - ({"eval"} if "engine" in timed else set()):
        failures.append(f"`dvc status` with the clean build's dvc.lock: changed {changed}:\n{st0.stdout[-2000:]}")
    if changed:
        run(["dvc", "commit", "-f", *changed], chaos)
    st = run(["dvc", "status", *stages], chaos)
    if dvc_changed_stages(st.stdout):
        failures.append(f"`dvc status` in the chaos build is not clean:\n{st.stdout[-2000:]}")
    say(f"dvc status with the clean build's dvc.lock: changed {changed or 'nothing'}; after `dvc commit -f"
        f"{' ' + ' '.join(changed) if changed else ''}`: {'clean' if not dvc_changed_stages(st.stdout) else 'NOT clean'}")

    kills = [r for r in rounds if r.killed]
    by_kind = Counter(r.kind for r in kills)
    orphans = sum(len(r.orphans) for r in rounds)
    total_s = time.time() - t_all
    say(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    say(f"kills by kind: {dict(by_kind)}; rules hit: {', '.join(r.target for r in kills)}; orphans: {orphans}")
    if len(kills) < 1:
        failures.append("no kill landed")
    summary = (f"kills={len(kills)} lost={lost} identical={str(identical).lower()} bad_inputs={len(bad)} orphans={orphans} "
               f"resumed={len(resumed)} clean_s={clean_s:.0f} chaos_s={chaos_s:.0f} total_s={total_s:.0f} seed={seed}")
    return failures, summary


if __name__ == "__main__":
    sys.exit(main())
