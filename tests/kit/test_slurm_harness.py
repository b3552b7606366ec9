"""envs/slurm_cluster.sh touches nothing it did not create (issue 12, point 4), checked through real bash.

`up --dry-run DIR` runs every check and the harness's own bookkeeping (lock, stale-state recovery, DIR +
marker, state file) but starts no daemon, so these tests need neither root nor SLURM. The lock, the state
file, the global slurm.conf and policy-rc.d are redirected into tmp_path (PVTT_SLURM_* overrides): nothing
here reads or writes /etc/slurm, /run or /usr/sbin. PVTT_SLURM_HARNESS_SCRIPT runs them against another copy
of the script (each of them fails on the harness before issue 12).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(os.environ.get("PVTT_SLURM_HARNESS_SCRIPT", ROOT / "envs" / "slurm_cluster.sh"))
MARKER = ".pvtt-slurm-harness"
FOREIGN_CONF = "# the site's cluster\nClusterName=prod\nSlurmctldHost=head01\n"


def starttime(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def running(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def snapshot(d: Path) -> dict[str, bytes | str]:
    """Every entry under d: file bytes, link targets, directories."""
    out: dict[str, bytes | str] = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else ("<dir>" if p.is_dir() else p.read_bytes())
    return out


class Harness:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.sys = tmp / "sys"  # stands in for /etc/slurm, /run and /usr/sbin
        self.sys.mkdir()
        self.conf = self.sys / "slurm.conf"
        self.lock = self.sys / "harness.lock"
        self.state = self.sys / "harness.state"
        self.policy_rc = self.sys / "policy-rc.d"
        self.env = {**os.environ, "PVTT_SLURM_GLOBAL_CONF": str(self.conf), "PVTT_SLURM_LOCK": str(self.lock),
                    "PVTT_SLURM_STATE": str(self.state), "PVTT_SLURM_POLICY_RC": str(self.policy_rc),
                    "SLURM_CLUSTER_SYSCONF": str(self.conf), "SLURM_CLUSTER_WAIT_DOWN": "3"}
        self.procs: list[subprocess.Popen] = []

    def run(self, *args: str, orphan: bool = False, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """The script; orphan=True runs it from a shell that exits right after (its owner is then gone)."""
        cmd = ["bash", str(SCRIPT), *args]
        if orphan:
            cmd = ["bash", "-c", 'bash "$0" "$@"; exit $?', str(SCRIPT), *args]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30, cwd=cwd or self.tmp)

    def up(self, d: Path, **kw) -> subprocess.CompletedProcess:
        return self.run("up", "--dry-run", str(d), **kw)

    def spawn(self, argv0: str, *args: str) -> subprocess.Popen:
        """A process whose /proc/PID/cmdline starts with argv0 (and then args): a stand-in for a daemon."""
        waits = 'exec -a "$0" bash -c "read -t 60 _ || true" "$@"'  # bash blocked in a builtin read: no child process
        p = subprocess.Popen(["bash", "-c", waits, argv0, *args], stdin=subprocess.PIPE)
        self.procs.append(p)
        deadline = time.time() + 5
        while not Path(f"/proc/{p.pid}/cmdline").read_bytes().startswith(argv0.encode() + b"\0"):
            assert time.time() < deadline, "stand-in did not exec"
            time.sleep(0.01)
        return p


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    for p in harness.procs:
        if running(p):
            p.kill()
        p.wait()
        p.stdin.close()


def test_up_creates_a_fresh_marked_dir_and_down_forgets_it_without_deleting(h):
    d = h.tmp / "cluster"
    r = h.up(d)
    assert r.returncode == 0, r.stderr
    assert (d / MARKER).read_text().startswith("pvtt-slurm-harness ")
    assert f"dir={d}\n" in h.state.read_text()
    assert not h.conf.exists() and not h.conf.is_symlink()  # no global slurm.conf, no link
    r = h.run("down", str(d))
    assert r.returncode == 0, r.stderr
    assert not h.state.exists() and (d / MARKER).is_file()


def test_up_resolves_a_relative_dir(h):
    r = h.up(Path("rel"), cwd=h.tmp)
    assert r.returncode == 0, r.stderr
    assert f"dir={h.tmp}/rel\n" in h.state.read_text()


@pytest.mark.parametrize("kind", ["non-empty", "empty", "made-by-an-earlier-up", "link-to-a-dir"])
def test_up_refuses_a_dir_that_exists(h, kind):
    d = h.tmp / "cluster"
    if kind == "link-to-a-dir":
        (h.tmp / "elsewhere").mkdir()
        (h.tmp / "elsewhere" / "data.txt").write_text("keep me\n")
        d.symlink_to(h.tmp / "elsewhere")
    else:
        d.mkdir()
    if kind == "non-empty":
        (d / "state").mkdir()
        (d / "state" / "job.dat").write_text("keep me\n")
        (d / "munge").mkdir()
    if kind == "made-by-an-earlier-up":
        (d / MARKER).write_text("pvtt-slurm-harness pid=1 created=then\n")
        (d / "log").mkdir()
    before = snapshot(h.tmp)
    r = h.up(d)
    assert r.returncode != 0
    assert "fresh directory" in r.stderr
    assert snapshot(h.tmp) == before and not h.state.exists()


@pytest.mark.parametrize("arg", ["/", "//", "", ".", "..", "missing-parent/cluster", "with space"])
def test_up_refuses_odd_paths(h, arg):
    before = snapshot(h.tmp)
    r = h.run("up", "--dry-run", arg, cwd=h.tmp)
    assert r.returncode != 0
    assert "refusing DIR" in r.stderr or "DIR is empty" in r.stderr or "is not a directory" in r.stderr, r.stderr
    assert snapshot(h.tmp) == before


@pytest.mark.parametrize("kind", ["file", "link-to-a-file", "dangling-link"])
def test_up_refuses_a_foreign_global_slurm_conf(h, kind):
    site = h.tmp / "site.conf"
    site.write_text(FOREIGN_CONF)
    if kind == "file":
        h.conf.write_text(FOREIGN_CONF)
    elif kind == "link-to-a-file":
        h.conf.symlink_to(site)
    else:
        h.conf.symlink_to(h.tmp / "gone" / "slurm.conf")
    before = snapshot(h.tmp)
    r = h.up(h.tmp / "cluster")
    assert r.returncode != 0
    assert ("is not this harness's" in r.stderr and "does not run here" in r.stderr) or "dangling link" in r.stderr, r.stderr
    assert snapshot(h.tmp) == before  # conf, link and target untouched; no DIR, no state


def test_up_accepts_a_global_slurm_conf_it_wrote(h):
    h.conf.write_text("# Generated by envs/slurm_cluster.sh up /tmp/old/cluster: a single-node test cluster.\nClusterName=pvtt-test\n")
    before = h.conf.read_bytes()
    r = h.up(h.tmp / "cluster")
    assert r.returncode == 0, r.stderr
    assert "written by this harness" in r.stdout and h.conf.read_bytes() == before


def test_a_second_up_fails_fast_while_the_lock_is_held(h):
    with open(h.lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("pid=4242 cmd=up dir=/tmp/first since=now\n")
        f.flush()
        t0 = time.time()
        r = h.up(h.tmp / "cluster")
        assert time.time() - t0 < 5
    assert r.returncode != 0
    assert "holds" in r.stderr and "pid=4242" in r.stderr, r.stderr
    assert not (h.tmp / "cluster").exists() and not h.state.exists()


def test_two_concurrent_ups_start_one_cluster(h):
    cmds = [["bash", str(SCRIPT), "up", "--dry-run", str(h.tmp / f"c{i}")] for i in range(2)]
    procs = [subprocess.Popen(c, env=h.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    results = [(p.wait(timeout=30), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1], results
    loser = next(err for rc, err in results if rc)
    assert "holds" in loser or "in use" in loser, loser
    assert sum((h.tmp / f"c{i}").exists() for i in range(2)) == 1


def test_up_refuses_while_the_owner_of_the_recorded_cluster_lives(h):
    first, second = h.tmp / "first", h.tmp / "second"
    assert h.up(first).returncode == 0  # owner: this test process, alive
    r = h.up(second)
    assert r.returncode != 0
    assert "in use" in r.stderr and str(first) in r.stderr, r.stderr
    assert not second.exists()
    assert h.run("down", str(first)).returncode == 0
    assert h.up(second).returncode == 0


def _record(d: Path, proc: subprocess.Popen, name: str, start: str | None = None) -> None:
    with open(d / "pids", "a") as f:
        f.write(f"{proc.pid} {start or starttime(proc.pid)} {name}\n")


def test_next_up_stops_what_a_killed_run_left_and_nothing_else(h):
    old, new = h.tmp / "old", h.tmp / "new"
    r = h.up(old, orphan=True)  # its owner exits at once: as if SIGKILLed
    assert r.returncode == 0, r.stderr
    daemon = h.spawn("/usr/sbin/slurmctld", "-f", f"{old}/slurm.conf")
    other_cmd = h.spawn("/usr/bin/sleep", f"{old}/x")       # recorded as slurmd, but another command
    recycled = h.spawn("/usr/sbin/munged", f"{old}/munge")  # right command, other start time (a reused PID)
    _record(old, daemon, "slurmctld")
    _record(old, other_cmd, "slurmd")
    _record(old, recycled, "munged", start=str(int(starttime(recycled.pid)) + 1))
    r = h.up(new)
    assert r.returncode == 0, r.stderr
    assert "left behind" in r.stdout, r.stdout
    daemon.wait(timeout=10)
    assert daemon.returncode == -signal.SIGTERM
    assert running(other_cmd) and running(recycled)
    assert f"dir={new}\n" in h.state.read_text() and (old / MARKER).is_file()


def test_a_half_done_up_is_stale_even_while_its_owner_lives(h):
    old, new = h.tmp / "old", h.tmp / "new"
    assert h.up(old).returncode == 0  # owner alive, but `up` never finished (SIGKILL during start-up):
    h.state.write_text(h.state.read_text().replace("phase=dry", "phase=starting"))
    daemon = h.spawn("/usr/sbin/slurmd", "-f", f"{old}/slurm.conf")
    _record(old, daemon, "slurmd")
    r = h.up(new)
    assert r.returncode == 0, r.stderr
    daemon.wait(timeout=10)
    assert f"dir={new}\n" in h.state.read_text()


def test_a_recorded_cluster_whose_dir_is_gone_is_forgotten_but_a_foreign_dir_is_not_touched(h):
    old, new = h.tmp / "old", h.tmp / "new"
    assert h.up(old, orphan=True).returncode == 0
    shutil.rmtree(old)
    r = h.up(new)
    assert r.returncode == 0 and "forgetting it" in r.stdout, r.stderr
    assert h.run("down", str(new)).returncode == 0
    old.mkdir()  # the recorded path now holds a directory the harness did not make
    (old / "pids").write_text("1 1 slurmctld\n")
    h.state.write_text(f"dir={old}\nphase=up\nup=1 1\nowner=1 1\n")
    before = snapshot(h.tmp)
    r = h.up(h.tmp / "third")
    assert r.returncode != 0 and "not a directory this harness made" in r.stderr, r.stderr
    assert snapshot(h.tmp) == before


def test_down_on_a_dir_without_the_marker_does_nothing(h):
    d = h.tmp / "not-ours"
    (d / "state").mkdir(parents=True)
    (d / "state" / "job.dat").write_text("keep me\n")
    (d / "notes.txt").write_text("keep me\n")
    victim = h.spawn("/usr/sbin/slurmctld", "-f", f"{d}/slurm.conf")
    _record(d, victim, "slurmctld")
    before = snapshot(h.tmp)
    r = h.run("down", str(d))
    assert r.returncode != 0
    assert MARKER in r.stderr and "nothing done" in r.stderr, r.stderr
    time.sleep(0.3)
    assert running(victim) and snapshot(h.tmp) == before


def _packages_policy_rc_body() -> str:
    """What envs/slurm_packages.sh writes while apt-get runs (from its own definition)."""
    script = f'eval "$(grep "^POLICY_RC_BODY=" {ROOT / "envs" / "slurm_packages.sh"})"; printf "%s\\n" "$POLICY_RC_BODY"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout


def test_up_removes_a_policy_rc_left_by_a_killed_install_and_keeps_a_foreign_one(h):
    body = _packages_policy_rc_body()
    assert "exit 101" in body
    h.policy_rc.write_text(body)
    assert h.up(h.tmp / "a").returncode == 0
    assert not h.policy_rc.exists()
    assert h.run("down", str(h.tmp / "a")).returncode == 0
    h.policy_rc.write_text("#!/bin/sh\n# the image's own\nexit 101\n")
    assert h.up(h.tmp / "b").returncode == 0
    assert h.policy_rc.read_text() == "#!/bin/sh\n# the image's own\nexit 101\n"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("sbatch") or not os.path.exists("/usr/sbin/slurmctld"),
                    reason="needs root and slurm-wlm (a real `up`, refused before it starts anything)")
def test_real_up_refuses_a_foreign_global_slurm_conf_before_anything(h):
    h.conf.write_text(FOREIGN_CONF)
    before = snapshot(h.tmp)
    r = h.run("up", str(h.tmp / "cluster"))
    assert r.returncode != 0
    assert "is not this harness's" in r.stderr, r.stderr
    assert snapshot(h.tmp) == before
