"""Signals, terminals, job control, and what is left behind after childflow dies."""
import os
import re
import signal
import subprocess
import time

import pytest

from cfutil import (BASE_ENV, Pty, describe, pids_running, pids_with_arg, pids_with_exe, reap, unique_marker,
                    wait_until)


def started(cf, marker, proc, timeout=10):
    """Wait until the command (`sleep MARKER`) runs inside the sandbox; check proc is childflow."""
    def sleeping():
        return pids_running("sleep", marker)
    ok = wait_until(sleeping, timeout)
    if not ok:
        rc = proc.poll()
        raise AssertionError(f"`sleep {marker}` did not start within {timeout}s (childflow rc={rc})")
    exe = os.readlink(f"/proc/{proc.pid}/exe")
    assert exe == os.path.realpath(cf.bin), f"pid {proc.pid} is {exe}, not childflow"


def assert_tree_gone(cf, marker, timeout=2):
    gone = wait_until(lambda: not pids_with_arg(marker) and not pids_with_exe(cf.bin), timeout)
    assert gone, "left over after childflow exited:\n" + describe(
        sorted(set(pids_with_arg(marker)) | set(pids_with_exe(cf.bin))))


SIGS = [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]


@pytest.mark.parametrize("sig,code", SIGS, ids=[s.name for s, _ in SIGS])
def test_signal_to_childflow(cf, sig, code):
    marker = unique_marker("100.12")
    p = cf.popen(["--", "sleep", marker])
    try:
        started(cf, marker, p)
        t0 = time.monotonic()
        os.kill(p.pid, sig)
        try:
            out, err = p.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"childflow still running 3 s after {sig.name}")
        secs = time.monotonic() - t0
        assert p.returncode == code, (p.returncode, out, err)
        assert secs < 3
        assert_tree_gone(cf, marker)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        reap(marker)


def pty_for(cf, args):
    env = dict(BASE_ENV, TERM="xterm")
    return Pty(cf.argv(args), cwd=cf.cwd, env=env, owner=cf.runner.user)


def test_ctrl_c_on_terminal(cf):
    marker = unique_marker("100.123")
    t = pty_for(cf, ["--", "sleep", marker])
    try:
        started(cf, marker, t.proc)
        t.send(b"\x03")
        rc = t.wait(3)
        assert rc is not None, "childflow still running 3 s after Ctrl-C; output:\n" + t.buf.decode(errors="replace")
        assert rc == 130, (rc, t.buf)
        assert_tree_gone(cf, marker)
    finally:
        t.close()
        reap(marker)


def test_interactive_shell_job_control(cf):
    marker = unique_marker("30.5")
    t = pty_for(cf, ["--", "bash", "--norc", "-i"])
    try:
        t.expect(rb"[$#] $", 10)
        t.send(b"echo FLAGS=$-\n")
        flags = t.expect(rb"FLAGS=([A-Za-z]+)").group(1)
        assert b"m" in flags and b"i" in flags, \
            f"job control is off in the interactive shell ($- = {flags!r}); output:\n{t.buf.decode(errors='replace')}"
        t.send(b"tty\n")
        t.expect(rb"/dev/pts/\d+\r?\n")
        t.send(f"sleep {marker} &\n".encode())
        t.expect(rb"\[1\] \d+")
        t.send(b"jobs\n")
        t.expect(rb"\[1\]\+\s+Running\s+sleep " + re.escape(marker.encode()))
        t.send(b"kill %1; wait %1; echo WAITED=$?\n")
        t.expect(rb"WAITED=143")
        assert not pids_with_arg(marker), describe(pids_with_arg(marker))
        # Ctrl-C interrupts the foreground job only: the shell (and childflow) carry on
        fg = unique_marker("30.6")
        t.send(f"sleep {fg}\n".encode())
        assert wait_until(lambda: pids_running("sleep", fg), 5), "foreground sleep did not start"
        t.send(b"\x03")
        t.expect(rb"[$#] $", 5)
        t.send(b"echo AFTER=$?\n")
        t.expect(rb"AFTER=130")
        assert t.proc.poll() is None, "childflow exited on a Ctrl-C meant for the shell's foreground job"
        t.send(b"echo AL''IVE\n")
        t.expect(rb"ALIVE\r?\n")
        t.send(b"exit 3\n")
        rc = t.wait(5)
        assert rc == 3, (rc, t.buf)
        out = t.buf.decode(errors="replace")
        assert "no job control" not in out and "cannot set terminal process group" not in out, out
    finally:
        t.close()
        reap(marker)
        reap(fg) if "fg" in locals() else None


def _other_world(ns, world):
    """A namespace of another test session's world (cfw<pid><tag>-role, another pid)."""
    m, mine = re.match(r"cfw(\d+)[a-z]-", ns), re.match(r"cfw(\d+)", world.prefix)
    return bool(m) and m.group(1) != mine.group(1)


def snapshot(world):
    def ls(d):
        return set(os.listdir(d))
    def others_out(text):   # /run/netns/<ns> of other test sessions' worlds come and go
        return "\n".join(l for l in text.splitlines()
                         if not (" /run/netns/" in l and _other_world(l.split()[1].rsplit("/", 1)[-1], world)))
    host_mounts = others_out(subprocess.run(["ip", "netns", "exec", world.host, "cat", "/proc/self/mounts"],
                                            capture_output=True, timeout=10, check=True, text=True).stdout)
    with open("/proc/self/mounts") as f:
        mounts = others_out(f.read())
    return {
        # Named namespaces, without other test sessions' worlds (pytest-xdist workers run their own).
        "netns": {l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                        timeout=10, text=True).stdout.splitlines()
                  if l.strip() and not _other_world(l.split()[0], world)},
        "host_links": world.ip(world.host, "-o", "link").stdout,
        "host_mounts": host_mounts,
        "init_mounts": mounts,
        "/tmp": {n for n in ls("/tmp") if not n.startswith("cfw-e2e-")},   # other sessions' work dirs
        "/dev/shm": ls("/dev/shm"),
    }


def test_no_residue_after_sigkill(cf):
    marker = unique_marker("100.456")
    before = snapshot(cf.world)
    p = cf.popen(["--", "sleep", marker])
    try:
        started(cf, marker, p)
        time.sleep(0.2)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(5)
        assert_tree_gone(cf, marker)
        after = snapshot(cf.world)
        for k in before:
            if isinstance(before[k], set):
                new = after[k] - before[k]
                # Residue stays; another process's temporary file (a compiler's /tmp/cc*.s) goes.
                deadline = time.monotonic() + 3
                while new and time.monotonic() < deadline:
                    time.sleep(0.2)
                    new &= snapshot(cf.world)[k]
                assert new == set(), f"new entries in {k}: {sorted(new)}"
            else:
                assert after[k] == before[k], f"{k} changed:\nbefore:\n{before[k]}\nafter:\n{after[k]}"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        reap(marker)
