"""The command's own pty (issue 13, redteam-2026-12 F5): on a terminal, childflow gives the command a
pty of its own and a session of its own, and relays the bytes, the window size and job control.

Each test drives childflow under a real terminal (cfutil.Pty: a fresh pty whose session leader is
the shell or childflow), as root and as the unprivileged user.  The F5 tests run the reproduction
of the red-team report: a script (not an interactive shell, so childflow is not a group leader)
starts a sibling `sleep` in its own process group, then childflow with a command that signals its
process group (`kill -STOP 0`, `kill -KILL 0`) or the caller's group by number.  Before the pty,
all three reached the sibling and the script (checked against main's binary: the STOP froze the
script and the sibling in state T, the KILL killed both).
"""
import fcntl
import hashlib
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import time

import pytest

TIOCGPTN = 0x80045430   # not in Python's termios

from cfutil import BASE_ENV, Pty, pids_running, pids_with_arg, pids_with_exe, reap, unique_marker, wait_until


@pytest.fixture
def scratch(cf):
    """A directory every runner can read and write, outside /tmp; removed at the end."""
    d = tempfile.mkdtemp(dir="/var/tmp", prefix="cfw-pty-")
    os.chmod(d, 0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def shell_pty(cf, script, env=None):
    """`bash -c SCRIPT` as the session leader of a fresh terminal, as the runner."""
    e = dict({"TERM": "xterm"}, **(env or {}))
    return Pty(cf.prefix(e) + ["bash", "-c", script], cwd=cf.cwd, env=dict(BASE_ENV, TERM="xterm"),
               owner=cf.runner.user)


def cf_pty(cf, args):
    """childflow itself as the session leader of a fresh terminal."""
    return Pty(cf.argv(args, env={"TERM": "xterm"}), cwd=cf.cwd, env=dict(BASE_ENV, TERM="xterm"),
               owner=cf.runner.user)


def state(pid):
    """The process state letter (R, S, T, Z...) or None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def outer_tty(t):
    """The path of the terminal's slave (the caller's terminal in these tests)."""
    n = struct.unpack("I", fcntl.ioctl(t.master, TIOCGPTN, b"\0\0\0\0"))[0]
    return f"/dev/pts/{n}"


def modes(path):
    return subprocess.run(["stty", "-g", "-F", path], capture_output=True, timeout=5, check=True).stdout.strip()


def sibling_script(cf, inner, marker):
    """The F5 reproduction: a sibling in the script's process group, then childflow running `inner`."""
    return (f"sleep {marker} & echo SIB=$!; {cf.bin} -- sh -c '{inner}'; echo RC=$?; sleep 0.3; "
            f"echo SIBSTAT=$(cut -d' ' -f3 /proc/$!/stat 2>/dev/null || echo gone); kill $! 2>/dev/null; echo SCRIPT-DONE")


@pytest.mark.parametrize("inner,rc", [("kill -STOP 0; echo INNER-CONTINUED", 0), ("kill -KILL 0", 137)],
                         ids=["STOP", "KILL"])
def test_kill_0_stays_in_the_tree(cf, inner, rc):
    """F5: the command's `kill 0` reaches its own tree only; the script and its sibling carry on.

    The script is the terminal's session leader, so its process group is orphaned: childflow
    cannot stop itself when its command stops (nobody could `fg` it), and continues the command."""
    marker = unique_marker("300.5")
    t = shell_pty(cf, sibling_script(cf, inner, marker))
    try:
        sib = int(t.expect(rb"SIB=(\d+)", 10).group(1))
        try:
            m = t.expect(rb"RC=(\d+)", 20)
        except AssertionError as e:
            raise AssertionError(f"the script did not go on after `{inner}` inside (sibling state "
                                 f"{state(sib)}):\n{e}")
        assert int(m.group(1)) == rc, t.buf
        t.expect(rb"SIBSTAT=([A-Za-z]+)", 5)
        assert re.search(rb"SIBSTAT=[SR]\b", t.buf), f"the sibling was reached: {t.buf[-500:]!r}"
        t.expect(rb"SCRIPT-DONE", 5)
        if rc == 0:
            assert b"INNER-CONTINUED" in t.buf
    finally:
        t.close()
        reap(marker)


def test_kill_callers_group_by_number(cf):
    """`kill -TERM -PGID` of the caller's group names nothing inside the command's PID namespace."""
    marker = unique_marker("300.6")
    t = shell_pty(cf, sibling_script(cf, 'kill -TERM -$PG; echo KILLRC=$?', marker).replace(
        f"{cf.bin} --", f"PG=$$ {cf.bin} --"))
    try:
        t.expect(rb"RC=0", 20)
        assert re.search(rb"KILLRC=[1-9]", t.buf), t.buf
        t.expect(rb"SIBSTAT=[SR]\b", 5)
    finally:
        t.close()
        reap(marker)


def test_own_session_and_terminal(cf):
    """The command leads a process group of its own in the session of the sandbox's init (PID 1),
    whose controlling terminal is a pty that is not the caller's terminal."""
    t = cf_pty(cf, ["--", "sh", "-c", "echo TTY=$(tty); echo IDS=$$:$(cut -d' ' -f5,6 /proc/$$/stat)"])
    try:
        outer = outer_tty(t)
        tty = t.expect(rb"TTY=(\S+)", 15).group(1).decode()
        pid, pgid, sid = re.split(r"[: ]", t.expect(rb"IDS=(\d+:\d+ \d+)", 5).group(1).decode())
        assert tty.startswith("/dev/pts/") and tty != outer, (tty, outer)
        assert pid == pgid and sid == "1", (pid, pgid, sid)
        assert t.wait(10) == 0, t.buf
    finally:
        t.close()


def test_window_size_follows(cf):
    """The command sees the caller's window size, and a resize reaches it (SIGWINCH from its pty)."""
    t = cf_pty(cf, ["--", "sh", "-c", "trap 'echo NEW=$(stty size)' WINCH; echo SIZE=$(stty size); "
                    "while :; do sleep 0.1; done"])
    try:
        t.expect(rb"SIZE=30 100\r?\n", 15)
        fcntl.ioctl(t.master, termios.TIOCSWINSZ, struct.pack("HHHH", 41, 123, 0, 0))
        t.expect(rb"NEW=41 123", 5)
        fcntl.ioctl(t.master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        t.expect(rb"NEW=24 80", 5)
        t.send(b"\x03")
        assert t.wait(5) == 130, t.buf
    finally:
        t.close()


def drain(t, timeout=10):
    """After the terminal's processes exited: read what it still holds, up to EOF."""
    deadline = time.monotonic() + timeout
    while not t.eof and time.monotonic() < deadline:
        t._read(0.2)


def test_output_bytes_unchanged(cf, scratch):
    """4 MiB of random bytes from a command whose pty is raw arrive on the caller's terminal as
    they are: P's side adds and drops nothing (the terminal is raw while the command holds it)."""
    blob = os.urandom(4 << 20)
    path = os.path.join(scratch, "blob")
    with open(path, "wb") as f:
        f.write(blob)
    os.chmod(path, 0o644)
    t = cf_pty(cf, ["--", "sh", "-c", f"stty raw -echo; printf BEGIN; cat {path}; printf END"])
    try:
        rc = t.wait(60)
        assert rc == 0, (rc, t.buf[-300:])
        drain(t)
        start = t.buf.index(b"BEGIN") + 5
        end = t.buf.rindex(b"END")
        got = t.buf[start:end]
        assert len(got) == len(blob) and hashlib.sha256(got).digest() == hashlib.sha256(blob).digest(), \
            (len(got), len(blob))
    finally:
        t.close()


def test_input_bytes_unchanged_and_eof(cf, scratch):
    """Every byte value typed reaches a raw pty as it is; in canonical mode, Ctrl-D is EOF."""
    data = bytes(range(256)) * 64 + os.urandom(16384)
    out = os.path.join(scratch, "in")
    lines = os.path.join(scratch, "lines")
    t = cf_pty(cf, ["--", "sh", "-c", f"stty raw -echo; printf READY; head -c {len(data)} > {out}; "
                    f"stty sane; printf CANON; cat > {lines}; echo CAT-DONE"])
    try:
        t.expect(rb"READY", 15)
        for i in range(0, len(data), 4096):
            t.send(data[i:i + 4096])
        t.expect(rb"CANON", 15)
        t.send(b"line one\nline two\n\x04")
        t.expect(rb"CAT-DONE", 10)
        assert t.wait(10) == 0, t.buf[-300:]
        with open(out, "rb") as f:
            assert f.read() == data
        with open(lines, "rb") as f:
            assert f.read() == b"line one\nline two\n"
    finally:
        t.close()


def test_stdin_not_a_terminal(cf):
    """stdout a terminal, stdin a pipe: the pipe reaches the command as it is, the output the terminal."""
    t = shell_pty(cf, f"echo piped-line | {cf.bin} -- sh -c 'cat; test -t 0 || echo STDIN-NOT-TTY; readlink /proc/self/fd/1; exit 7'; echo RC=$?")
    try:
        t.expect(rb"piped-line", 15)
        t.expect(rb"STDIN-NOT-TTY", 5)
        t.expect(rb"/dev/pts/\d+", 5)
        t.expect(rb"RC=7", 5)
    finally:
        t.close()


def p_of(t, cf):
    """childflow's P: the childflow process whose parent is the terminal's shell."""
    def find():
        for pid in pids_with_exe(cf.bin):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == t.proc.pid:
                        return pid
            except OSError:
                pass
        return None
    return wait_until(find, 10)


@pytest.mark.parametrize("how", ["exit", "SIGTERM", "SIGKILL"])
def test_terminal_modes_restored(cf, how):
    """The caller's modes are back after childflow ends: normally, by SIGTERM, and after SIGKILL
    (the watchdog restores them once P is gone; the script gives it 0.5 s).  While the command
    runs, the terminal is raw."""
    marker = unique_marker("60.7")
    inner = "true" if how == "exit" else f"sleep {marker}"
    t = shell_pty(cf, f"echo BEFORE=$(stty -g); {cf.bin} -- {inner}; echo RC=$?; sleep 0.5; echo AFTER=$(stty -g)")
    try:
        outer = outer_tty(t)
        before = t.expect(rb"BEFORE=(\S+)", 10).group(1)
        if how != "exit":
            assert wait_until(lambda: pids_running("sleep", marker), 15), t.buf
            assert wait_until(lambda: modes(outer) != before, 5), "the terminal never went raw"
            assert b"-icanon" in subprocess.run(["stty", "-a", "-F", outer], capture_output=True,
                                                timeout=5).stdout
            p = p_of(t, cf)
            assert p, "P not found"
            os.kill(p, getattr(signal, how))
        rc = int(t.expect(rb"RC=(\d+)", 15).group(1))
        assert rc == {"exit": 0, "SIGTERM": 143, "SIGKILL": 137}[how], t.buf
        after = t.expect(rb"AFTER=(\S+)", 5).group(1)
        assert after == before, (before, after)
        assert t.wait(5) == 0
    finally:
        t.close()
        reap(marker)


def test_ctrl_z_and_fg(cf):
    """Ctrl-Z stops the command inside its pty, then childflow, so the caller's shell takes the
    terminal back (its modes restored); `fg` continues both, and input reaches the command again."""
    script = "echo READY; read x; echo GOT=$x; exit 5"
    env = dict(BASE_ENV, TERM="xterm", PS1="OUT$ ")
    t = Pty(cf.prefix({"PS1": "OUT$ ", "TERM": "xterm"}) + ["bash", "--norc", "-i"], cwd=cf.cwd, env=env,
            owner=cf.runner.user)
    try:
        t.expect(rb"OUT\$ ", 10)
        t.send(f"{cf.bin} -- sh -c '{script}'\n".encode())
        t.expect(rb"READY", 15)
        time.sleep(0.3)
        t.send(b"\x1a")
        t.expect(rb"Stopped", 10)
        t.expect(rb"OUT\$ ", 5)
        sh = [p for p in pids_with_arg(script) if comm(p) == "sh"]
        assert sh and all(state(p) == "T" for p in sh), [(p, state(p)) for p in sh]
        t.send(b"fg\n")
        time.sleep(0.5)
        t.send(b"hello\n")
        t.expect(rb"GOT=hello", 10)
        t.expect(rb"OUT\$ ", 5)
        t.send(b"echo RC=$?\n")
        t.expect(rb"RC=5", 5)
    finally:
        t.close()


PROBE_TTY = r"""
import fcntl, os, sys, termios
try:
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
    print("OPEN=ok", flush=True)
except OSError as e:
    print("OPEN=" + (os.strerror(e.errno) or "?").replace(" ", "_"), flush=True)
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"x")
    print("TIOCSTI=ok", flush=True)
except OSError as e:
    print("TIOCSTI=" + str(e.errno), flush=True)
"""


def test_callers_terminal_not_reachable_by_path(cf):
    """The caller's terminal (/dev/pts/N) is hidden inside: the command cannot open it to read the
    caller's keystrokes or write to it behind P's back; TIOCSTI stays refused (EPERM) on its own
    pty too (the seccomp filter; dev.tty.legacy_tiocsti is 1 on the test machine)."""
    # The terminal's path is only known once it exists: a shell in it passes its own `tty`.
    t = shell_pty(cf, f"{cf.bin} -- /usr/bin/python3 -c '{PROBE_TTY}' $(tty); echo RC=$?")
    try:
        t.expect(rb"RC=0", 20)
        assert re.search(rb"OPEN=(Permission_denied|Read-only_file_system|No_such_device_or_address)", t.buf), t.buf
        assert b"TIOCSTI=1\r" in t.buf or b"TIOCSTI=1\n" in t.buf, t.buf
    finally:
        t.close()
