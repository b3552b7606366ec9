"""SLURM end-to-end check (run by `make test-slurm` through tests_slurm/run.sh; not collected by pytest).

1. Copies the repo like the end-to-end tests do (tests/e2e_helpers.make_repo: params = params.yaml
   + configs/ci.yaml) and adds the ./slurm -> profiles/slurm link that the profile lookup needs.
2. From the copy's root runs the command users type: `snakemake --cores all --profile slurm
   artifacts/teacher` against the running test cluster (envs/slurm_cluster.sh), whose clients it
   finds through SLURM_CONF and the cluster's bin/ wrappers (never /etc/slurm).
3. Checks that every Snakemake job ran as a SLURM job, from SLURM's own records:
   - DIR/jobcomp.log (jobcomp/filetxt, written by slurmctld when a job ends): one record per
     SLURM job id Snakemake submitted, named after Snakemake's SLURM run id, COMPLETED with exit
     code 0:0, in the copy's directory, and no other record with that name; the count equals the
     total of Snakemake's "Job stats"; each record's time limit, CPUs and memory equal the job's
     runtime, cpus_per_task and mem_mb; its partition is the cluster's default; no GPU was asked for;
   - slurmctld's job table (`squeue --states=all`, kept MinJobAge seconds): each job's comment is
     `rule_<rule>[_wildcards_...]`, and the rules counted this way equal "Job stats" rule by rule.
Exit status 0 when all holds; otherwise a message naming what differs (and the output's tail).
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the e2e helpers (not a package)

from e2e_helpers import env, make_repo, snakemake_jobs  # noqa: E402

TARGET = "artifacts/teacher"
TIMEOUT_S = int(os.environ.get("SLURM_TEST_TIMEOUT", "1500"))


class CheckFailed(Exception):
    pass


def say(msg: str) -> None:
    print(f"test-slurm: {msg}", flush=True)


def _terminate(signum, frame):  # TERM from run.sh's trap: unwind (finally blocks stop Snakemake)
    raise SystemExit(128 + signum)


def slurm_env(cluster: Path, base: dict | None = None) -> dict:
    """The test cluster's clients: SLURM_CONF for all of them, and its bin/ first on PATH, whose wrappers
    set SLURM_CONF again for the `srun` inside jobs (the jobstep plugin drops SLURM_* before it).
    No /etc/slurm/slurm.conf is involved (envs/slurm_cluster.sh)."""
    e = dict(os.environ if base is None else base)
    e["SLURM_CONF"] = str(cluster / "slurm.conf")
    e["PATH"] = f"{cluster / 'bin'}:{e.get('PATH', '')}"
    return e


def run_snakemake(repo: Path, cluster: Path, out_path: Path) -> tuple[int, str]:
    """The command users type, from the copy's root; output to out_path, progress to stdout."""
    cmd = [str(Path(sys.executable).parent / "snakemake"), "--cores", "all", "--profile", "slurm", TARGET]
    e = slurm_env(cluster, env())  # sbatch exports the whole environment to the jobs
    e["PYTHONPATH"] = str(repo)  # the copy's own packages, in this process's jobs too
    say(f"running in {repo}: {' '.join(['snakemake'] + cmd[1:])}")
    t0 = time.time()
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=repo, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            for line in proc.stdout:
                out.write(line)
                if re.search(r"submitted with SLURM jobid|\d+ of \d+ steps|^Error in rule", line):
                    print(f"  [{time.time() - t0:5.0f}s] {line.rstrip()}", flush=True)
                if time.time() - t0 > TIMEOUT_S:
                    raise CheckFailed(f"snakemake still running after {TIMEOUT_S} s (SLURM_TEST_TIMEOUT)")
            proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: on SIGINT Snakemake cancels its SLURM jobs and exits
                say("stopping snakemake")
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    say(f"snakemake exited {proc.returncode} after {time.time() - t0:.0f} s")
    return proc.returncode, out_path.read_text()


def parse_submissions(output: str) -> dict[str, dict]:
    """SLURM job id -> {rule, wildcards, resources, smk_jobid} from Snakemake's job blocks."""
    subs: dict[str, dict] = {}
    blocks: dict[str, dict] = {}
    cur: dict | None = None
    for line in output.splitlines():
        m = re.match(r"^(local)?rule (\S+):$", line)
        if m:
            cur = {"rule": m.group(2), "local": bool(m.group(1)), "wildcards": "", "resources": {}}
            continue
        if cur is not None:
            m = re.match(r"^\s+jobid: (\d+)$", line)
            if m:
                blocks[m.group(1)] = cur
                continue
            m = re.match(r"^\s+wildcards: (.*)$", line)
            if m:
                cur["wildcards"] = m.group(1)
                continue
            m = re.match(r"^\s+resources: (.*)$", line)
            if m:
                cur["resources"] = dict(kv.split("=", 1) for kv in m.group(1).split(", ") if "=" in kv)
                continue
        m = re.match(r"^Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.*)\)\.$", line)
        if m:
            smk, sid, log = m.groups()
            if smk not in blocks:
                raise CheckFailed(f"SLURM job {sid}: no Snakemake job block for jobid {smk}")
            subs[sid] = dict(blocks[smk], smk_jobid=smk, slurm_log=log)
    return subs


def read_jobcomp(path: Path) -> dict[str, dict]:
    recs = {}
    for line in path.read_text().splitlines():
        rec = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" in rec:
            recs[rec["JobId"]] = rec
    return recs


def tres(s: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in s.split(",") if "=" in kv)


def mem_mb(s: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", s)
    if not m:
        raise CheckFailed(f"cannot read memory {s!r}")
    f = {"K": 1 / 1024, "M": 1, "": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return round(float(m.group(1)) * f)


def check(output: str, rc: int, repo: Path, cluster: Path) -> list[str]:
    problems: list[str] = []
    if rc != 0:
        raise CheckFailed(f"snakemake --profile slurm {TARGET} failed (exit {rc})")
    stats = snakemake_jobs(output)
    total = sum(stats.values())
    if not stats or "teacher" not in stats:
        raise CheckFailed(f"no 'Job stats' with the teacher in Snakemake's output (got {stats})")
    m = re.search(r"^(\d+) of (\d+) steps \(100%\) done$", output, re.M)
    if not m or int(m.group(1)) != total:
        problems.append(f"Snakemake did not report {total} of {total} steps done")
    if not any((repo / TARGET).iterdir()):
        problems.append(f"{TARGET} is empty")
    run_id = re.search(r"^SLURM run ID: (\S+)$", output, re.M)
    if not run_id:
        raise CheckFailed("no 'SLURM run ID' in Snakemake's output: did it run with the SLURM executor?")
    run_id = run_id.group(1)

    subs = parse_submissions(output)
    local = [b for b in subs.values() if b["local"]]
    if local or len(subs) != total:
        problems.append(f"Snakemake ran {total} jobs but submitted {len(subs)} to SLURM"
                        + (f" ({len(local)} local)" if local else ""))

    # SLURM's completion records (jobcomp/filetxt).
    jobcomp = read_jobcomp(cluster / "jobcomp.log")
    ours = {jid: r for jid, r in jobcomp.items() if r.get("Name") == run_id}
    if set(ours) != set(subs):
        problems.append(f"jobcomp records named {run_id}: {sorted(ours, key=int)}; Snakemake submitted "
                        f"{sorted(subs, key=int)} (missing {sorted(set(subs) - set(ours))}, "
                        f"extra {sorted(set(ours) - set(subs))})")
    if len(ours) != total:
        problems.append(f"SLURM recorded {len(ours)} finished jobs of this run, Snakemake's Job stats say {total}")
    default_part = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, env=slurm_env(cluster)).stdout.split()
    default_part = next((p.rstrip("*") for p in default_part if p.endswith("*")), None)
    for sid, sub in sorted(subs.items(), key=lambda kv: int(kv[0])):
        r = ours.get(sid)
        if r is None:
            continue
        what = f"SLURM job {sid} ({sub['rule']} {sub['wildcards']})".rstrip()
        if r.get("JobState") != "COMPLETED" or r.get("ExitCode") != "0:0":
            problems.append(f"{what}: JobState={r.get('JobState')} ExitCode={r.get('ExitCode')}")
        if Path(r.get("WorkDir", "")).resolve() != repo.resolve():
            problems.append(f"{what}: WorkDir={r.get('WorkDir')}, expected {repo}")
        res = sub["resources"]
        t = tres(r.get("Tres", ""))
        if "runtime" in res and r.get("TimeLimit") != res["runtime"]:
            problems.append(f"{what}: TimeLimit={r.get('TimeLimit')} min, rule runtime={res['runtime']}")
        want_cpus = res.get("cpus_per_task") or res.get("threads") or "1"
        if t.get("cpu") != want_cpus:
            problems.append(f"{what}: {t.get('cpu')} CPUs allocated, cpus_per_task={want_cpus}")
        if "mem_mb" in res and mem_mb(t.get("mem", "0")) != int(res["mem_mb"]):
            problems.append(f"{what}: mem={t.get('mem')} allocated, mem_mb={res['mem_mb']}")
        if any("gpu" in k for k in t):
            problems.append(f"{what}: GPUs allocated ({r.get('Tres')}) though gpus={res.get('gpus')}")
        want_part = res.get("slurm_partition") or default_part
        if r.get("Partition") != want_part:
            problems.append(f"{what}: Partition={r.get('Partition')}, expected {want_part}")

    # slurmctld's job table: the comment names the rule.
    sq = subprocess.run(["squeue", "--states=all", "--noheader", "--name", run_id, "--format=%i|%T|%k"],
                        capture_output=True, text=True, env=slurm_env(cluster))
    if sq.returncode != 0:
        problems.append(f"squeue failed: {sq.stderr.strip()}")
    comments = dict(line.split("|", 2)[0::2] for line in sq.stdout.splitlines() if line.count("|") >= 2)
    by_rule: Counter = Counter()
    for sid, sub in subs.items():
        c = comments.get(sid)
        if c is None:
            problems.append(f"SLURM job {sid} ({sub['rule']}) not in slurmctld's job table")
            continue
        rule = sub["rule"]
        if not (c == f"rule_{rule}" or c.startswith(f"rule_{rule}_wildcards_")):
            problems.append(f"SLURM job {sid}: comment {c!r}, but Snakemake ran rule {rule} there")
            continue
        by_rule[rule] += 1
    if dict(by_rule) != stats:
        problems.append(f"rules counted from SLURM's job comments {dict(sorted(by_rule.items()))} "
                        f"!= Snakemake's Job stats {dict(sorted(stats.items()))}")

    say(f"Snakemake: {total} jobs ({', '.join(f'{k} {v}' for k, v in stats.items())})")
    say(f"SLURM jobcomp: {len(ours)} records named {run_id}, states "
        f"{dict(Counter(r.get('JobState') for r in ours.values()))}; partitions "
        f"{sorted(set(r.get('Partition') for r in ours.values()))}; "
        f"TRES {sorted(set(r.get('Tres') for r in ours.values()))}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cluster", type=Path, required=True, help="state dir of envs/slurm_cluster.sh up")
    ap.add_argument("--work", type=Path, required=True, help="scratch dir (the repo copy goes here)")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    # Started in the background by run.sh, this process inherits SIGINT ignored; children would
    # too, and Snakemake's clean stop (cancel its SLURM jobs) is its SIGINT handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGHUP, _terminate)

    if not (ROOT / "slurm").is_symlink() or os.path.realpath(ROOT / "slurm") != str((ROOT / "profiles" / "slurm").resolve()):
        say("error: ./slurm must be a link to profiles/slurm (it is what `--profile slurm` finds)")
        return 1
    if not (a.cluster / "bin" / "srun").is_file():
        say(f"error: {a.cluster}/bin/srun missing: --cluster must be a running `envs/slurm_cluster.sh up` dir")
        return 1
    t0 = time.time()
    repo = make_repo(a.work / "repo")
    os.symlink(os.readlink(ROOT / "slurm"), repo / "slurm")  # make_repo copies directories and files, not links
    say(f"repo copy with the ci preset in {time.time() - t0:.0f} s: {repo}")

    out_path = a.work / "snakemake.out"
    try:
        rc, output = run_snakemake(repo, a.cluster, out_path)
        problems = check(output, rc, repo, a.cluster)
    except CheckFailed as e:
        problems = [str(e)]
    if problems:
        tail = out_path.read_text()[-6000:] if out_path.exists() else ""
        print(f"---- last lines of {out_path}\n{tail}", file=sys.stderr)
        for p in problems:
            print(f"test-slurm: FAIL: {p}", file=sys.stderr)
        return 1
    say("ok: every Snakemake job ran as a SLURM job (jobcomp records and job comments match Job stats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
