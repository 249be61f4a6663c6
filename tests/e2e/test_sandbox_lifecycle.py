"""The sandbox's process life: childflow waits only for what it made (D1), no signal is lost
while the command starts (D4), and setup errors are one honest line (D8)."""
import ctypes
import os
import signal
import subprocess
import time

import pytest

from cfutil import pids_running, pids_with_arg, reap, unique_marker, wait_until

DELAY_ENV = "CHILDFLOW_TEST_DELAY_INIT_PID_US"


def test_inherited_child_does_not_delay_exit(cf):
    """A process keeps its children across exec: childflow must not wait for a wrapper's job."""
    marker = unique_marker("30.31")
    try:
        r = cf.run(["sh", "-c", f"sleep {marker} </dev/null >/dev/null 2>&1 & exec {cf.bin} -- true"], direct=True, timeout=40)
        assert r.rc == 0, r
        assert r.secs < 1, f"childflow took {r.secs:.2f}s to exit: it waited for a child it did not create"
    finally:
        reap(marker)


def test_sigterm_works_with_inherited_child(cf):
    job, cmd = unique_marker("30.32"), unique_marker("30.33")
    p = cf.popen(["sh", "-c", f"sleep {job} </dev/null >/dev/null 2>&1 & exec {cf.bin} -- sleep {cmd}"], direct=True)
    try:
        assert wait_until(lambda: pids_running("sleep", cmd), 10), "the command did not start"
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            raise AssertionError("childflow still running 3 s after SIGTERM (waiting for an inherited child?)")
        assert p.returncode == 143, p.returncode
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        reap(job)
        reap(cmd)


def signals_blocked(pid, sig):
    """Has childflow itself (not yet the launcher: setpriv blocks signals for a while too, and a
    signal it then unblocks kills it) blocked `sig`?"""
    try:
        with open(f"/proc/{pid}/status") as f:
            st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return False
    return st.get("Name", "").startswith("childflow") and bool(int(st.get("SigBlk", "0"), 16) & (1 << (sig - 1)))


def test_sigterm_right_after_command_start_is_not_lost(cf):
    """With init's pid published late (test hook), a SIGTERM sent once the command runs still ends it."""
    marker = unique_marker("20.34")
    p = cf.popen(["--", "sleep", marker], env={DELAY_ENV: "300000"})
    try:
        assert wait_until(lambda: pids_running("sleep", marker), 10, interval=0.005), "the command did not start"
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            raise AssertionError("SIGTERM sent after the command started was lost")
        assert p.returncode == 143, p.returncode
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        reap(marker)


def test_signal_before_command_exists_is_delivered(cf):
    """SIGUSR1 (not a terminating signal) sent during setup reaches the command once it exists."""
    marker = unique_marker("3.35")
    p = cf.popen(["--", "sleep", marker], env={DELAY_ENV: "500000"})
    try:
        assert wait_until(lambda: signals_blocked(p.pid, signal.SIGUSR1), 5, interval=0.002), \
            "childflow never blocked SIGUSR1"
        assert not pids_running("sleep", marker), "the command started before the signal could be sent"
        os.kill(p.pid, signal.SIGUSR1)
        t0 = time.monotonic()
        try:
            p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("childflow still running")
        assert p.returncode == 128 + signal.SIGUSR1, \
            f"rc={p.returncode} after {time.monotonic() - t0:.2f}s: SIGUSR1 sent during setup was dropped"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        reap(marker)


def test_unknown_uidmap_value_is_a_usage_error(cf):
    r = cf.run(["--", "true"], env={"CHILDFLOW_UIDMAP": "bogus"})
    assert r.rc == 2, r
    lines = r.etext.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("childflow: error:") and "CHILDFLOW_UIDMAP" in lines[0], r


# A seccomp filter that makes pidfd_open(2) fail with ENOSYS, as on Linux < 5.3 or under valgrind.
SYS_PIDFD_OPEN, AUDIT_ARCH_X86_64 = 434, 0xC000003E


def _deny_pidfd_open():
    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                    ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06
    prog = [
        (LD_W_ABS, 0, 0, 4),                          # arch
        (JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (RET_K, 0, 0, 0x7FFF0000),                    # other arch: allow
        (LD_W_ABS, 0, 0, 0),                          # nr
        (JEQ_K, 0, 1, SYS_PIDFD_OPEN),
        (RET_K, 0, 0, 0x00050000 | 38),               # SECCOMP_RET_ERRNO | ENOSYS
        (RET_K, 0, 0, 0x7FFF0000),
    ]
    arr = (SockFilter * len(prog))(*[SockFilter(*i) for i in prog])
    fprog = SockFprog(len(prog), arr)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # NNP, SECCOMP
        os._exit(99)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the BPF filter is written for x86_64")
def test_failed_pidfd_open_is_one_line(cf):
    p = subprocess.Popen(cf.argv(["--", "true"]), cwd=cf.cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_deny_pidfd_open,
                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    try:
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    lines = err.decode(errors="replace").strip().splitlines()
    assert p.returncode == 125, (p.returncode, lines)
    assert len(lines) == 1 and "pidfd_open" in lines[0], lines


def test_idmap_helpers_run_with_the_callers_signal_mask(cf, sess):
    """newuidmap/newgidmap must stay interruptible: they get the caller's mask, not P's blocked set."""
    if cf.runner.uid == 0:
        pytest.skip("a root caller maps its ids without the helpers")
    d = os.path.join(sess.dir, f"fakehelpers-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o777)
    outs = {}
    try:
        for helper in ("newuidmap", "newgidmap"):
            outs[helper] = os.path.join(d, helper + ".out")
            path = os.path.join(d, helper)
            with open(path, "w") as f:
                # python, not sh: dash clears the signal mask when it starts
                f.write(f"#!/usr/bin/python3\nimport os, sys\n"
                        f"blk = [l for l in open('/proc/self/status') if l.startswith('SigBlk:')]\n"
                        f"open({outs[helper]!r}, 'w').write(blk[0])\n"
                        f"os.execv('/usr/bin/{helper}', ['{helper}'] + sys.argv[1:])\n")
            os.chmod(path, 0o755)
        r = cf.run(["--", "true"], env={"PATH": f"{d}:/usr/sbin:/usr/bin:/sbin:/bin",
                                        "CHILDFLOW_UIDMAP": "helper"})
        assert r.rc == 0, r
        for helper, out in outs.items():
            with open(out) as f:
                blocked = int(f.read().split()[1], 16)
            assert blocked == 0, f"{helper} ran with signals blocked: SigBlk={blocked:016x}"
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)
