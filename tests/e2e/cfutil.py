"""Helpers for the end-to-end tests: running childflow as a runner, process scans, a pty driver."""
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}
SAN_MARKERS = (b"AddressSanitizer", b"LeakSanitizer", b"UndefinedBehaviorSanitizer", b"runtime error:")


class Result:
    def __init__(self, argv, pid, rc, out, err, secs):
        self.argv, self.pid, self.rc, self.out, self.err, self.secs = argv, pid, rc, out, err, secs

    @property
    def text(self):
        return self.out.decode(errors="replace")

    @property
    def etext(self):
        return self.err.decode(errors="replace")

    def __repr__(self):
        return (f"<rc={self.rc} secs={self.secs:.2f} argv={self.argv[-8:]!r}\n"
                f" stdout={self.out[:1500]!r}\n stderr={self.err[:1500]!r}>")


class Runner:
    """Who runs childflow: root, or the unprivileged user (setpriv); optionally the sanitizer build."""

    def __init__(self, name, binary, user=None, san_dir=None):
        self.name, self.bin, self.user, self.san_dir = name, binary, user, san_dir

    @property
    def uid(self):
        return self.user.pw_uid if self.user else 0

    @property
    def gid(self):
        return self.user.pw_gid if self.user else 0

    def env_extra(self):
        if not self.san_dir:
            return {}
        return {
            "ASAN_OPTIONS": f"abort_on_error=1:halt_on_error=1:detect_leaks=1:log_path={self.san_dir}/asan",
            "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:log_path={self.san_dir}/ubsan",
            "LSAN_OPTIONS": f"log_path={self.san_dir}/lsan",
        }

    def sanitizer_reports(self, stderr=b""):
        """Return (and remove) any sanitizer report: log files, or markers on stderr."""
        reports = []
        if self.san_dir:
            for f in sorted(os.listdir(self.san_dir)):
                p = os.path.join(self.san_dir, f)
                with open(p, "rb") as fh:
                    reports.append(f"--- {f}\n" + fh.read(6000).decode(errors="replace"))
                os.unlink(p)
            for m in SAN_MARKERS:
                if m in stderr:
                    reports.append("--- stderr\n" + stderr[-6000:].decode(errors="replace"))
                    break
        return reports


FAST_TCP = os.environ.get("CHILDFLOW_TEST_FAST_TCP") == "1"


class CF:
    """childflow bound to a runner and a world: builds argv, runs it in the world's host netns."""

    def __init__(self, runner, world, cwd):
        self.runner, self.world, self.cwd = runner, world, cwd

    @property
    def bin(self):
        return self.runner.bin

    def prefix(self, env=None):
        a = ["ip", "netns", "exec", self.world.host]
        if self.runner.user:
            n = self.runner.user.pw_name
            a += ["setpriv", f"--reuid={n}", f"--regid={n}", "--init-groups", "--reset-env", "--"]
        e = dict(env or {})
        e.update(self.runner.env_extra())
        if e:
            a += ["/usr/bin/env"] + [f"{k}={v}" for k, v in e.items()]
        return a

    def argv(self, args, env=None):
        args = list(args)
        # CHILDFLOW_TEST_FAST_TCP=1: every run of childflow gets --fast-tcp (the suite's TCP tests in
        # the injection mode); a run that asks for it itself, or only for --help/--version, is left alone.
        if FAST_TCP and "--fast-tcp" not in args and args and args[0] not in ("-h", "--help", "-V", "--version"):
            args = ["--fast-tcp"] + args
        return self.prefix(env) + [self.bin] + args

    def popen(self, args, env=None, direct=False, **kw):
        argv = self.prefix(env) + list(args) if direct else self.argv(args, env)
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(argv, cwd=self.cwd, env=dict(BASE_ENV), close_fds=True,
                                start_new_session=True, **kw)

    def run(self, args, input=None, timeout=30, env=None, direct=False):
        """Run `childflow ARGS` (or ARGS alone with direct=True) and wait, failing fast on a hang."""
        t0 = time.monotonic()
        p = self.popen(args, env=env, direct=direct,
                       stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
        try:
            out, err = p.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_tree(p)
            try:
                out, err = p.communicate(timeout=3)
            except subprocess.TimeoutExpired:
                out, err = b"", b"(output unavailable: pipes still held open by leftover processes)"
            raise AssertionError(f"timed out after {timeout}s: {p.args[-8:]!r}\n stdout={out[:1500]!r}\n"
                                 f" stderr={err[:1500]!r}")
        r = Result(p.args, p.pid, p.returncode, out, err, time.monotonic() - t0)
        reps = self.runner.sanitizer_reports(err)
        assert not reps, f"sanitizer report from {self.runner.name}:\n" + "\n".join(reps) + f"\n{r!r}"
        return r

    def direct(self, args, **kw):
        """Run ARGS in the host netns as this runner, without childflow (a control)."""
        return self.run(args, direct=True, **kw)


def read_line(stream, timeout):
    """One line from a pipe (a Popen's stdout), waiting at most `timeout` s; b"" at EOF.

    Reads byte by byte with select(), so nothing past the line is consumed; raises AssertionError
    on a timeout."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = stream.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no complete line within {timeout}s; got {buf!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            d = os.read(fd, 1)
            if not d:
                break
            buf += d
    return buf


def kill_tree(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.kill()
    except ProcessLookupError:
        pass


def all_cmdlines():
    res = {}
    me = os.getpid()
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != me:
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cl = f.read().split(b"\0")
            except OSError:
                continue
            res[int(d)] = cl
    return res


def pids_with_arg(arg):
    """Pids of processes with `arg` as one of their argv words (zombies have an empty cmdline)."""
    a = arg.encode()
    return sorted(pid for pid, cl in all_cmdlines().items() if a in cl)


def pids_with_exe(path):
    res = []
    rp = os.path.realpath(path)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                exe = os.readlink(f"/proc/{d}/exe")
            except OSError:
                continue
            if exe == rp or exe == rp + " (deleted)":
                res.append(int(d))
    return sorted(res)


def describe(pids):
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cl = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/status") as f:
                st = dict(l.split(":", 1) for l in f if ":" in l)
            out.append(f"{pid} [{st.get('State', '?').strip()}] uid={st.get('Uid', '?').split()[0]} {cl}")
        except OSError:
            out.append(f"{pid} (gone)")
    return "\n".join(out)


def wait_until(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def unique_marker(base):
    """A sleep duration unique to this test run, e.g. '100.456' -> '100.4561234'."""
    return f"{base}{os.getpid() % 1000:03d}{int(time.monotonic_ns() % 10000):04d}"


class Pty:
    """Run argv as the session leader of a fresh pty (controlling terminal), like a terminal would."""

    def __init__(self, argv, cwd, env, owner=None):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        if owner is not None:
            os.fchown(slave, owner.pw_uid, -1)
            os.fchmod(slave, 0o620)

        def pre():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     preexec_fn=pre, close_fds=True)
        os.close(slave)
        self.buf = b""
        self.pos = 0
        self.eof = False

    def _read(self, timeout):
        if self.eof:
            time.sleep(min(timeout, 0.05))
            return
        r, _, _ = select.select([self.master], [], [], timeout)
        if r:
            try:
                d = os.read(self.master, 65536)
            except OSError:
                d = b""
            if not d:
                self.eof = True
            self.buf += d

    def expect(self, pattern, timeout=10):
        """Wait for regex `pattern` (bytes) in the output after the last match; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf, self.pos)
            if m:
                self.pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0 or (self.eof and self.proc.poll() is not None):
                raise AssertionError(f"pty: {pattern!r} not seen within {timeout}s; output so far:\n"
                                     f"{self.buf[-3000:].decode(errors='replace')}")
            self._read(min(left, 0.2))

    def send(self, data):
        os.write(self.master, data)

    def wait(self, timeout):
        """Wait for exit while draining output; return the exit code or None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.proc.returncode
            self._read(0.05)
        return self.proc.poll()

    def close(self):
        if self.proc.poll() is None:
            kill_tree(self.proc)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.close(self.master)
        except OSError:
            pass


def curl(*args):
    """curl as a user would run it, bounded in time, never through a proxy."""
    return ["curl", "-sS", "--noproxy", "*", "--max-time", "20", "-g"] + list(args)


def curl_upload(*args):
    """curl for an upload: without `Expect: 100-continue` (the HTTP/1.0 test server never answers
    100, so curl would wait its 1 s expect timeout on every upload)."""
    return curl("-H", "Expect:", *args)


def wget(url):
    """busybox-static wget (a static binary that does not use libc's resolver or proxies).

    No `-T`: Debian's busybox-static 1.35 segfaults on `wget -T N`; the caller's timeout bounds it."""
    return ["busybox", "wget", "-q", "-O", "-", url]


def url(addr, path, port=80):
    host = f"[{addr}]" if ":" in addr else addr
    return f"http://{host}:{port}{path}" if port != 80 else f"http://{host}{path}"


def py(prog, *args):
    return ["/usr/bin/python3", "-c", prog] + [str(a) for a in args]


def reap(marker):
    """Kill whatever still carries `marker` (cleanup after a failed test; never hides a failure)."""
    for pid in pids_with_arg(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pids_running(prog, arg):
    """Pids of processes that exec'd `prog` (basename of argv[0]) with `arg` among their arguments."""
    a, pb = arg.encode(), prog.encode()
    return sorted(pid for pid, cl in all_cmdlines().items()
                  if cl and os.path.basename(cl[0]) == pb and a in cl[1:])
