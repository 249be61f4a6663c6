"""A made-up host for the IPC red-team tests: host-side services and objects that exist only in
private namespaces of this helper, never on the machine itself.

`run_in_host(world, argv, spec, timeout)` starts this file in the world's host network namespace
under `unshare -m -i --propagation private` (a private mount namespace and a private IPC namespace,
as root).  Inside, before running argv (the childflow command line, `ip netns exec` included):
  - fresh tmpfs on /tmp, /dev/shm and /run (a tmpfs on /mnt holding the new /run; only in this
    mount namespace); the real /run/netns is bound back (`ip netns exec` needs it), and so are the
    `keep` paths (the session's directory with the binaries, which lives in /tmp);
  - `dirs`: directories created and given to `uid` (mode 0700, like a runtime directory);
  - `sockets`: unix stream servers (etcfiles.FakeSocket) at those paths; with `relay` set, each
    connection is answered with what the host's 127.0.0.1:`relay` service sends (the world's
    loopback banner service): a host process that connects out for whoever reaches it;
  - `abstract`: abstract unix servers with those names, in the world host's network namespace;
  - `shm`: files in the (private) /dev/shm, readable by everyone;
  - `msgq`: a SysV message queue with that key (mode 0666) holding one message, in this helper's
    IPC namespace, which childflow inherits as "the host's";
then prints one JSON object: rc, out, err, and per server the connections it saw (`conns`) and
those from another PID namespace (`foreign`: from inside the sandbox); an abstract server is
named @NAME there.  Everything lives in these
namespaces and dies with them.
"""
import ctypes
import json
import os
import socket
import subprocess
import sys
import time

from etcfiles import FakeSocket

HERE = os.path.dirname(os.path.abspath(__file__))
IPC_CREAT = 0o1000


def run_in_host(world, argv, spec, timeout=30):
    full = dict(spec, argv=list(argv), timeout=timeout)
    p = subprocess.run(["ip", "netns", "exec", world.host, "unshare", "-m", "-i", "--propagation", "private",
                        "--", sys.executable, "-S", os.path.join(HERE, "ipcfix.py"), json.dumps(full)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout + 20,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"ipc fixture failed: rc={p.returncode} stderr={p.stderr[-3000:]!r}"
    return json.loads(p.stdout)


def _sh(*args):
    subprocess.run(args, check=True, timeout=10, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _relay_answer(port):
    def answer():
        with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
            return b"RELAYED:" + c.recv(200)
    return answer


def _msgq(key, text):
    libc = ctypes.CDLL(None, use_errno=True)
    q = libc.msgget(ctypes.c_int(key), ctypes.c_int(IPC_CREAT | 0o666))
    if q < 0:
        raise OSError(ctypes.get_errno(), "msgget")
    data = text.encode()
    buf = ctypes.create_string_buffer(8 + len(data))
    ctypes.memmove(buf, ctypes.byref(ctypes.c_long(1)), 8)
    ctypes.memmove(ctypes.addressof(buf) + 8, data, len(data))
    if libc.msgsnd(q, buf, ctypes.c_size_t(len(data)), 0) < 0:
        raise OSError(ctypes.get_errno(), "msgsnd")


def _build(spec):
    stage = "/mnt"
    _sh("mount", "-t", "tmpfs", "-o", "mode=0755", "cfw-ipcfix", stage)
    # What must stay visible, bound aside before /run and /tmp are covered: the real /run/netns
    # (becomes the new /run's netns) and the `keep` paths.
    os.makedirs(f"{stage}/run/netns")
    _sh("mount", "--rbind", "/run/netns", f"{stage}/run/netns")
    keep = spec.get("keep", [])
    for i, path in enumerate(keep):
        os.makedirs(f"{stage}/keep/{i}")
        _sh("mount", "--rbind", path, f"{stage}/keep/{i}")
    _sh("mount", "-t", "tmpfs", "-o", "mode=1777", "cfw-ipcfix", "/tmp")
    _sh("mount", "-t", "tmpfs", "-o", "mode=1777", "cfw-ipcfix", "/dev/shm")
    _sh("mount", "--rbind", f"{stage}/run", "/run")
    for i, path in enumerate(keep):
        os.makedirs(path, exist_ok=True)
        _sh("mount", "--rbind", f"{stage}/keep/{i}", path)
    for path in spec.get("dirs", []):
        os.makedirs(path, exist_ok=True)
        os.chown(path, spec["uid"], spec["gid"])
        os.chmod(path, 0o700)
    for name, text in spec.get("shm", {}).items():
        with open(f"/dev/shm/{name}", "w") as f:
            f.write(text)
        os.chmod(f"/dev/shm/{name}", 0o644)
    if spec.get("msgq"):
        _msgq(spec["msgq"], spec["msgq_text"])


def _main():
    spec = json.loads(sys.argv[1])
    _build(spec)
    fakes = []
    for s in spec.get("sockets", []):
        fakes.append(FakeSocket(s["path"], _relay_answer(s["relay"]) if s.get("relay") else None))
        # A runtime directory's sockets belong to its user, who may reach them; the fixture's
        # parents were made by root.
        for d in s.get("chown", []):
            os.chown(d, spec["uid"], spec["gid"])
    fakes += [FakeSocket("\0" + name) for name in spec.get("abstract", [])]
    for f in fakes:                # the control: each server records this connection
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(f.path)
    time.sleep(0.1)
    proc = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, cwd=spec.get("cwd", "/"))
    try:
        out, err = proc.communicate(timeout=spec["timeout"])
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate(timeout=5)
        rc = "timeout"
    time.sleep(0.1)
    print(json.dumps({"rc": rc, "out": out.decode(errors="replace"), "err": err.decode(errors="replace"),
                      "conns": {f.path.replace("\0", "@"): f.conns for f in fakes},
                      "foreign": {f.path.replace("\0", "@"): f.foreign for f in fakes}}))


if __name__ == "__main__":
    _main()
