"""Run childflow with made-up name-service files: a private mount namespace where /etc and /run
are test fixtures (never the machine's own resolv.conf, hosts, nsswitch.conf or daemons).

`run_in_fixture(argv, spec, timeout)` starts this file as a program under
`unshare -m --propagation private` (as root).  Inside, it mounts a tmpfs on /mnt (only in that mount
namespace) and builds there:
  - an /etc of symlinks to the real /etc's entries (bound at /mnt/orig-etc), except resolv.conf,
    hosts and nsswitch.conf, which the spec sets (a file, a symlink, or absent), plus any files or
    bind-mounted submounts the spec adds;
  - a /run with the real /run/netns bound in (`ip netns exec` needs it) and the fake name-service
    sockets the spec names: Unix stream servers that record every connection;
then binds both over /etc and /run, connects once to each fake socket itself (the control: every
server must record that one), runs argv (the childflow command line, `ip netns exec ...` included),
and prints one JSON object: rc, out, err, and per fake socket the connections it recorded
(`conns`) and those from another PID namespace (`foreign`: from inside the sandbox).  With
`kill_after` set, childflow (argv's pid: ip netns exec and setpriv exec it) is SIGKILLed once
that line appears on its stdout.  Everything lives in the mount namespace and dies with it.
"""
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STAGE = "/mnt"

# The host's name-service sockets that must not be reachable from inside.
FAKE_SOCKETS = ("/run/systemd/resolve/io.systemd.Resolve", "/run/nscd/socket",
                "/run/avahi-daemon/socket", "/run/dbus/system_bus_socket")


def run_in_fixture(argv, spec, timeout=30):
    """Run `argv` in a private mount namespace with the fixture `spec` (see the module doc).

    spec keys: etc (name -> {"text": str} | {"link": target}; a None value removes the name),
    files (absolute path under /mnt -> text), submounts (path in /etc -> text, bind-mounted),
    run (path under /run -> text), sockets (paths from FAKE_SOCKETS), kill_after (a line)."""
    full = dict(spec, argv=list(argv), timeout=timeout)
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "--", sys.executable, "-S",
                        os.path.join(HERE, "etcfiles.py"), json.dumps(full)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 20,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"fixture helper failed: rc={p.returncode} stderr={p.stderr[-3000:]!r}"
    return json.loads(p.stdout)


def _sh(*args):
    subprocess.run(args, check=True, timeout=10, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


class FakeSocket:
    """A Unix stream server at `path` that records each connection it accepts, and how many came
    from another PID namespace than ours (the sandbox's; a peer gone before we look counts too).
    setpriv's initgroups() may ask nscd from our own PID namespace: that is not the child."""

    def __init__(self, path, answer=None):
        """`answer`: called per connection, its bytes are sent before closing (None: nothing).
        A path starting with NUL is an abstract socket (of this network namespace)."""
        self.path, self.conns, self.foreign, self.answer = path, 0, 0, answer
        self.my_pidns = os.readlink("/proc/self/ns/pid")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if path.startswith("\0"):
            self.sock.bind(path)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.sock.bind(path)
            os.chmod(path, 0o666)   # the unprivileged user may connect, as to the real daemons
        self.sock.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            pid = struct.unpack("3i", c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
            try:
                if os.readlink(f"/proc/{pid}/ns/pid") != self.my_pidns:
                    self.foreign += 1
            except OSError:
                self.foreign += 1
            if self.answer:
                try:
                    c.sendall(self.answer())
                except OSError:
                    pass
            c.close()


def _build(spec):
    _sh("mount", "-t", "tmpfs", "-o", "mode=0755", "cfw-fixture", STAGE)
    etc, run, orig = f"{STAGE}/etc", f"{STAGE}/run", f"{STAGE}/orig-etc"
    for d in (etc, run, orig, f"{run}/netns"):
        os.makedirs(d, exist_ok=True)
    _sh("mount", "--rbind", "/etc", orig)
    _sh("mount", "--rbind", "/run/netns", f"{run}/netns")
    for name in os.listdir(orig):
        if name not in ("resolv.conf", "hosts", "nsswitch.conf"):
            os.symlink(f"{orig}/{name}", f"{etc}/{name}")
    for name, what in spec.get("etc", {}).items():
        if what is None:
            continue
        if "link" in what:
            os.symlink(what["link"], f"{etc}/{name}")
        else:
            _write(f"{etc}/{name}", what["text"])
    for path, text in spec.get("files", {}).items():
        assert path.startswith(STAGE + "/")
        _write(path, text)
    for rel, text in spec.get("run", {}).items():
        _write(f"{run}/{rel}", text)
    _sh("mount", "--bind", etc, "/etc")
    _sh("mount", "--rbind", run, "/run")
    for path, text in spec.get("submounts", {}).items():
        src = f"{STAGE}/sub/{os.path.basename(path)}"
        _write(src, text)
        if os.path.lexists(path):  # a symlink to the real /etc's entry
            os.unlink(path)
        _write(path, "")
        _sh("mount", "--bind", src, path)


def _main():
    spec = json.loads(sys.argv[1])
    _build(spec)
    fakes = [FakeSocket(p) for p in spec.get("sockets", [])]
    for f in fakes:                # the control: each server records this connection
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(f.path)
    time.sleep(0.1)
    proc = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, cwd="/")
    out = b""
    killed = False
    try:
        if spec.get("kill_after"):
            want = spec["kill_after"].encode()
            deadline = time.monotonic() + spec["timeout"]
            while want not in out and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                out += line
            if want in out:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
        rest, err = proc.communicate(timeout=spec["timeout"])
        out += rest
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rest, err = proc.communicate(timeout=5)
        out += rest
        rc = "timeout"
    time.sleep(0.1)
    print(json.dumps({"rc": rc, "killed": killed, "out": out.decode(errors="replace"),
                      "err": err.decode(errors="replace"),
                      "conns": {f.path: f.conns for f in fakes},
                      "foreign": {f.path: f.foreign for f in fakes}}))


if __name__ == "__main__":
    _main()
