"""Red-team list for host IPC (issue 13; redteam-2026-12 F2, F4, F11, F12 and the "held" list): one
test per way around the network controls that needs no network syscall.  Each runs the bypass in
the mode(s) that claim to close it and shows it fails there; where a mode does not claim it (the
default keeps /tmp, SysV IPC, /dev/shm and the keyring shared), the test says so by asserting the
bypass still works there, so that a change of behaviour is seen and documented.

Host-side objects (sockets, the message queue, /dev/shm files) exist only in the private mount and
IPC namespaces of ipcfix.py, never on the machine; the keyring test uses an anonymous session
keyring that dies with its processes.  Every run is as root and as the unprivileged user.
"""
import json
import os
import shutil
import tempfile

import pytest

from conftest import HOSTSVC_LO_PORT
from ipcfix import run_in_host

PY = "/usr/bin/python3"
MODES = {"default": [], "isolate": ["--isolate"]}
HIDDEN = ("err:ECONNREFUSED", "err:ENOENT", "err:EACCES")   # what connect() to a hidden socket gives

@pytest.fixture(scope="module")
def probe():
    """The probe, copied to a directory that every mode leaves visible: the made-up host covers
    /tmp, /dev/shm and /run, --isolate gives the command its own /tmp, and the checkout itself may
    live under /tmp (a CI clone may).  Removed at the end of the module."""
    d = tempfile.mkdtemp(dir="/var/tmp", prefix="cfw-ipcprobe-")
    os.chmod(d, 0o755)
    dst = os.path.join(d, "ipcprobe.py")
    shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ipcprobe.py"), dst)
    os.chmod(dst, 0o644)
    try:
        yield dst
    finally:
        shutil.rmtree(d, ignore_errors=True)


def probed(res):
    assert res["rc"] == 0, res
    return json.loads(res["out"].strip().splitlines()[-1])


def in_host(cf, probe, mode, checks, spec, flags=(), env=None):
    """Run the probe's `checks` [(kind, arg)] inside childflow (MODES[mode] + flags) in ipcfix's host."""
    words = [w for c in checks for w in c]
    argv = cf.argv(MODES[mode] + list(flags) + ["--", PY, probe] + words, env=env)
    spec = dict(spec, uid=cf.runner.uid, gid=cf.runner.gid, keep=[os.path.dirname(cf.bin), cf.cwd])
    return run_in_host(cf.world, argv, spec)


def rundir(cf):
    return f"/run/user/{cf.runner.uid}"


@pytest.mark.parametrize("mode", MODES)
def test_tmp_socket_host_service(cf, hostsvc, probe, mode):
    """F2: a host process on a pathname socket in /tmp connects out (to host loopback) for whoever
    reaches it.  Default: reachable (not claimed: /tmp is shared).  --isolate: unreachable, also
    through a working directory inherited in /tmp; --allow-socket lets it through on purpose."""
    sock = "/tmp/cfw-rt/svc.sock"
    spec = {"sockets": [{"path": sock, "relay": HOSTSVC_LO_PORT}]}
    res = in_host(cf, probe, mode, [("unix", sock), ("unix", "svc.sock")], dict(spec, cwd="/tmp/cfw-rt"))
    out = probed(res)
    if mode == "default":
        assert out["unix " + sock].startswith("ok:RELAYED:HOSTSVC"), res
        assert res["foreign"][sock] >= 1, res
        return
    assert out["unix " + sock] == "err:ENOENT", res
    assert out["unix svc.sock"] == "err:ENOENT", res
    assert res["foreign"][sock] == 0 and res["conns"][sock] >= 1, res
    assert "working directory /tmp/cfw-rt is not visible inside" in res["err"], res
    # Let through on purpose: the same socket answers again, and only it.
    res = in_host(cf, probe, mode, [("unix", sock)], spec, flags=["--allow-socket", sock])
    assert probed(res)["unix " + sock].startswith("ok:RELAYED:HOSTSVC"), res


@pytest.mark.parametrize("mode", MODES)
def test_resolved_varlink_hidden(cf, probe, mode):
    """A fake systemd-resolved varlink socket (resolves names around the forced DNS): hidden in both."""
    sock = "/run/systemd/resolve/io.systemd.Resolve"
    res = in_host(cf, probe, mode, [("unix", sock)], {"sockets": [{"path": sock}]})
    assert probed(res)["unix " + sock] in HIDDEN, res
    assert res["foreign"][sock] == 0 and res["conns"][sock] >= 1, res


@pytest.mark.parametrize("mode", MODES)
def test_container_engine_sockets_hidden(cf, probe, mode):
    """Fake Docker, Podman and containerd API sockets (each can start a container in the host's
    network): hidden in both modes, in /run, /var/run and the caller's runtime directory; one named
    with --allow-socket answers."""
    rd = rundir(cf)
    socks = ["/run/docker.sock", "/run/podman/podman.sock", "/run/containerd/containerd.sock",
             f"{rd}/docker.sock", f"{rd}/podman/podman.sock"]
    spec = {"dirs": [rd], "sockets": [{"path": p, "chown": [rd]} for p in socks]}
    env = {"XDG_RUNTIME_DIR": rd}
    checks = [("unix", p) for p in socks] + [("unix", "/var/run/docker.sock")]
    res = in_host(cf, probe, mode, checks, spec, env=env)
    out = probed(res)
    # A hidden socket is an empty file (mode 0: EACCES for a user, ECONNREFUSED for root) or gone.
    for p in socks + ["/var/run/docker.sock"]:
        assert out["unix " + p] in HIDDEN, (p, res)
    assert all(res["foreign"][p] == 0 for p in socks), res
    assert all(res["conns"][p] >= 1 for p in socks), res
    res = in_host(cf, probe, mode, checks, spec, env=env,
                  flags=["--allow-socket", "/var/run/docker.sock", "--allow-socket", f"{rd}/podman/podman.sock"])
    out = probed(res)
    assert out["unix /run/docker.sock"] == "ok:" and out[f"unix {rd}/podman/podman.sock"] == "ok:", res
    assert out["unix /run/containerd/containerd.sock"] in HIDDEN, res
    assert res["foreign"]["/run/docker.sock"] >= 1 and res["foreign"]["/run/containerd/containerd.sock"] == 0, res


@pytest.mark.parametrize("mode", MODES)
def test_runtime_dir_session_endpoints(cf, probe, mode):
    """The session bus, Wayland and an ssh-agent in $XDG_RUNTIME_DIR, and the variables naming them.
    Default: reachable (not claimed).  --isolate: the directory is empty and the variables gone."""
    rd = rundir(cf)
    socks = [f"{rd}/bus", f"{rd}/wayland-0", f"{rd}/ssh-agent.sock"]
    env = {"XDG_RUNTIME_DIR": rd, "DBUS_SESSION_BUS_ADDRESS": f"unix:path={rd}/bus", "WAYLAND_DISPLAY": "wayland-0",
           "SSH_AUTH_SOCK": f"{rd}/ssh-agent.sock", "DISPLAY": ":0", "CFW_KEEP": "kept"}
    spec = {"dirs": [rd], "sockets": [{"path": p, "chown": [rd]} for p in socks]}
    argv = cf.argv(MODES[mode] + ["--", "sh", "-c", f"env; echo ===; ls -A {rd}; echo ===; {PY} {probe} "
                                  + " ".join(f"unix {p}" for p in socks)], env=env)
    res = run_in_host(cf.world, argv, dict(spec, uid=cf.runner.uid, gid=cf.runner.gid,
                                           keep=[os.path.dirname(cf.bin), cf.cwd]))
    envs, listing, rest = res["out"].split("===\n")
    out = json.loads(rest)
    assert "CFW_KEEP=kept" in envs.splitlines(), res
    if mode == "default":
        assert all(out["unix " + p] == "ok:" for p in socks), res
        assert all(f"{k}={v}" in envs.splitlines() for k, v in env.items()), res
        return
    assert all(out["unix " + p] in HIDDEN for p in socks), res
    assert all(res["foreign"][p] == 0 for p in socks), res
    assert listing.split() == [], res
    for k in ("XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS", "WAYLAND_DISPLAY", "SSH_AUTH_SOCK", "DISPLAY"):
        assert not any(l.startswith(k + "=") for l in envs.splitlines()), (k, res)
    # The agent let through: its socket answers, and SSH_AUTH_SOCK (naming it) is kept.
    argv = cf.argv(["--isolate", "--allow-socket", f"{rd}/ssh-agent.sock", "--", "sh", "-c",
                    f"echo SSH_AUTH_SOCK=$SSH_AUTH_SOCK; {PY} {probe} unix {rd}/ssh-agent.sock unix {rd}/bus"], env=env)
    res = run_in_host(cf.world, argv, dict(spec, uid=cf.runner.uid, gid=cf.runner.gid,
                                           keep=[os.path.dirname(cf.bin), cf.cwd]))
    first, rest = res["out"].split("\n", 1)
    out = json.loads(rest)
    assert first == f"SSH_AUTH_SOCK={rd}/ssh-agent.sock", res
    assert out[f"unix {rd}/ssh-agent.sock"] == "ok:" and out[f"unix {rd}/bus"] == "err:ENOENT", res


@pytest.mark.parametrize("mode", MODES)
def test_x11_sockets(cf, probe, mode):
    """X11: the pathname socket /tmp/.X11-unix/X0 is reachable by default (not claimed) and hidden
    with --isolate (private /tmp); its abstract twin @/tmp/.X11-unix/X0 is cut in both modes by the
    network namespace (abstract unix sockets belong to a network namespace)."""
    path = "/tmp/.X11-unix/X0"
    res = in_host(cf, probe, mode, [("unix", path), ("abstract", path)],
                  {"sockets": [{"path": path}], "abstract": [path]})
    out = probed(res)
    assert out["abstract " + path] == "err:ECONNREFUSED", res
    assert out["unix " + path] == ("ok:" if mode == "default" else "err:ENOENT"), res
    assert res["foreign"][path] == (1 if mode == "default" else 0), res
    assert res["foreign"]["@" + path] == 0 and res["conns"]["@" + path] == 1, res


@pytest.mark.parametrize("mode", MODES)
def test_sysv_queue_and_dev_shm(cf, probe, mode):
    """F4: a SysV message queue and a /dev/shm file made on the host.  Default: both readable (not
    claimed).  --isolate: its own IPC namespace and /dev/shm: neither exists."""
    key = 0x0cf13013
    res = in_host(cf, probe, mode, [("msgq", str(key)), ("shm", "cfw-rt-secret")],
                  {"msgq": key, "msgq_text": "secret-from-host-queue", "shm": {"cfw-rt-secret": "secret-from-host-shm"}})
    out = probed(res)
    if mode == "default":
        assert out[f"msgq {key}"] == "ok:secret-from-host-queue", res
        assert out["shm cfw-rt-secret"] == "ok:secret-from-host-shm", res
    else:
        assert out[f"msgq {key}"] == "err:ENOENT", res
        assert out["shm cfw-rt-secret"] == "err:ENOENT", res


# The caller: a session keyring of its own (anonymous, dies with it), one key in it, then childflow.
KEYHOST = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.syscall(250, 1, None) >= 0                      # KEYCTL_JOIN_SESSION_KEYRING
kid = libc.syscall(248, b"user", b"cfw-rt-key", b"host-secret-token", 17, -3)   # add_key to @s
assert kid > 0, ctypes.get_errno()
argv = [a.replace("KEYID", str(kid)) for a in sys.argv[1:]]
os.execv(argv[0], argv)
'''


@pytest.mark.parametrize("mode", MODES)
def test_session_keyring(cf, probe, mode):
    """F12: the caller's session keyring.  Default: its key is found and read (not claimed).
    --isolate: a fresh session keyring: not found, and not readable by id either."""
    r = cf.run([PY, "-c", KEYHOST, cf.bin] + MODES[mode] + ["--", PY, probe, "key", "cfw-rt-key,KEYID"],
               direct=True)
    assert r.rc == 0, r
    (out,) = json.loads(r.text).values()
    if mode == "default":
        assert out.startswith("search:") and "read:ok:host-secret-token" in out, r
    else:
        assert out == "search:err:ENOKEY read:err:EACCES", r


@pytest.mark.parametrize("mode", MODES)
def test_proc_as_working_directory(cf, probe, mode):
    """F11: started in /proc, the command's "." is its own /proc, not the host's below it (both modes)."""
    r = cf.run(["sh", "-c", f"cd /proc && exec {cf.bin} {' '.join(MODES[mode])} -- {PY} {probe} cwd ."],
               direct=True)
    assert r.rc == 0, r
    out = json.loads(r.text)["cwd ."]
    assert out.startswith("cwd=/proc same_fs_as_proc=True pids_here="), r
    assert int(out.rsplit("=", 1)[1]) < 10, r   # init, the command: not the host's processes


@pytest.mark.parametrize("mode", MODES)
def test_new_user_namespaces(cf, probe, mode):
    """unshare(CLONE_NEWUSER) and clone(CLONE_NEWUSER) inside.  Default: allowed (not claimed; a
    nested childflow works).  --isolate: refused with EPERM, and ordinary fork/exec still works."""
    r = cf.run(MODES[mode] + ["--", "sh", "-c", f"{PY} {probe} userns x; unshare -U true && echo NESTED-OK"])
    assert r.rc == 0 or mode == "isolate", r
    out = json.loads(r.text.splitlines()[0])["userns x"]
    if mode == "default":
        assert out == "clone:ok unshare:ok" and "NESTED-OK" in r.text, r
    else:
        assert out == "clone:err:EPERM unshare:err:EPERM" and "NESTED-OK" not in r.text, r


@pytest.mark.parametrize("mode", MODES)
def test_held_raw_packet_nested_netns_abstract(cf, hostsvc, probe, mode):
    """What already held keeps holding, in both modes: raw and packet sockets (refused for a user;
    root may open them but sees only lo and eth0), host loopback (by connect(2) and by an io_uring
    IORING_OP_CONNECT, which no seccomp filter sees: the network namespace, not a syscall filter,
    is what keeps it out; the same io_uring connect to the world goes through the relay), and a
    nested network namespace (default mode; --isolate refuses the user namespace it needs) reaching
    neither host loopback nor the world; an abstract socket of the host is not reachable."""
    checks = [("sock", "raw-icmp"), ("sock", "raw-tcp"), ("sock", "packet"),
              ("tcp", f"127.0.0.1:{HOSTSVC_LO_PORT}"), ("abstract", "cfw-rt-abstract"),
              ("uring", f"127.0.0.1:{HOSTSVC_LO_PORT}"), ("uring", "198.51.100.10:80")]
    res = in_host(cf, probe, mode, checks, {"abstract": ["cfw-rt-abstract"]})
    out = probed(res)
    for k in ("raw-icmp", "raw-tcp", "packet"):
        want = "ok:eth0,lo" if cf.runner.uid == 0 else "err:EPERM"
        assert out["sock " + k] == want, (k, res)
    assert out[f"tcp 127.0.0.1:{HOSTSVC_LO_PORT}"].startswith("err:"), res
    assert out[f"uring 127.0.0.1:{HOSTSVC_LO_PORT}"] == "err:ECONNREFUSED", res
    assert out["uring 198.51.100.10:80"] == "ok:", res   # io_uring works, through the relay
    assert out["abstract cfw-rt-abstract"] == "err:ECONNREFUSED", res
    assert res["foreign"]["@cfw-rt-abstract"] == 0, res
    if mode == "isolate":
        return
    r = cf.run(["--", "unshare", "-Urn", "--", PY, probe, "tcp", f"127.0.0.1:{HOSTSVC_LO_PORT}",
                "tcp", "198.51.100.10:80", "sock", "raw-tcp"])
    assert r.rc == 0, r
    out = json.loads(r.text)
    assert out[f"tcp 127.0.0.1:{HOSTSVC_LO_PORT}"].startswith("err:"), r
    assert out["tcp 198.51.100.10:80"] == "err:ENETUNREACH", r
    assert out["sock raw-tcp"] == "ok:lo", r   # root of its own empty namespace: nothing but lo


@pytest.mark.parametrize("mode", MODES)
def test_no_new_privs(cf, mode):
    """no_new_privs is set for every command (init.c, README): an execve() inside never gains
    privileges from a setuid bit or file capabilities; the user's command has no capabilities."""
    r = cf.run(MODES[mode] + ["--", "sh", "-c", "grep -E '^(NoNewPrivs|CapEff|CapPrm):' /proc/self/status"])
    assert r.rc == 0, r
    st = dict(l.split(":\t") for l in r.text.splitlines())
    assert st["NoNewPrivs"] == "1", r
    if cf.runner.uid:
        assert st["CapEff"] == st["CapPrm"] == "0000000000000000", r
    else:
        assert int(st["CapEff"], 16) != 0, r   # root keeps its capabilities in its own user namespace


VSOCK = r"""
import errno, socket
out = []
for fam, kind in ((socket.AF_VSOCK, socket.SOCK_STREAM), (socket.AF_VSOCK, socket.SOCK_SEQPACKET),
                  (42, socket.SOCK_DGRAM)):   # 42: AF_QIPCRTR
    try:
        socket.socket(fam, kind).close()
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode[e.errno])
print(" ".join(out))
"""


@pytest.mark.parametrize("mode", MODES)
def test_vsock_refused(cf, mode):
    """AF_VSOCK (and AF_QIPCRTR) sockets are not separated by a network namespace: inside, a vsock
    socket is the host's, next to the hypervisor's services (redteam3 G4).  Both modes refuse the
    families with EAFNOSUPPORT, as a kernel without them does; the control shows the host has vsock."""
    host = cf.run([PY, "-c", VSOCK], direct=True)
    if not host.text.startswith("ok"):
        pytest.skip(f"this host has no AF_VSOCK stream sockets ({host.text.strip()}): nothing to refuse")
    r = cf.run(MODES[mode] + ["--", PY, "-c", VSOCK])
    assert r.rc == 0 and r.text.split() == ["EAFNOSUPPORT"] * 3, (host, r)
