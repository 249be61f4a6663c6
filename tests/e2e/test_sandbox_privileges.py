"""The command keeps the privileges it would have without childflow: root stays root inside its own
namespaces (full capabilities in U2, setgroups, su, setpriv, a nested childflow), yet by construction
it cannot reach the gateway namespace, P's sockets or the host's network.  Anyone else keeps exactly
their own uid/gid and no capabilities."""
import json
import os
import subprocess

import pytest

import world as W
from cfutil import kill_tree

PY = "/usr/bin/python3"

# Run inside as root with the caller's /proc in hand (fd argv[1], passed on purpose: the sandbox's own
# /proc cannot be taken off, test_review_root_proc.py), and try to get at G and P through it.
ESCAPE = r'''
import ctypes, errno, json, os, socket, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
def err():
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
res = {}
res["umount"] = "ok" if libc.umount2(b"/proc", 2) == 0 else err()
HP = f"/proc/self/fd/{sys.argv[1]}"   # the caller's procfs
def ppid(pid):
    with open(f"{HP}/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("PPid:"))
chain = [int(os.readlink(f"{HP}/self"))]
for _ in range(4):
    chain.append(ppid(chain[-1]))
cmd, init, c, g, p = chain
with open(f"{HP}/{p}/cmdline", "rb") as f:
    res["p_cmdline"] = f.read().split(b"\0")[0].decode()
try:
    fd = os.open(f"{HP}/{g}/ns/net", os.O_RDONLY)
    res["setns_g"] = "ok" if libc.setns(fd, 0x40000000) == 0 else err()
except OSError as e:
    res["setns_g"] = "open:" + errno.errorcode[e.errno]
for name, pid in (("p", p), ("g", g)):
    if libc.ptrace(0x4206, pid, 0, 0) == 0:    # PTRACE_SEIZE does not stop the tracee
        res["ptrace_" + name] = "ok"
        libc.ptrace(17, pid, 0, 0)
    else:
        res["ptrace_" + name] = err()
    pfd = libc.syscall(434, pid, 0)
    if pfd < 0:
        res["getfd_" + name] = "pidfd:" + err()
        continue
    got = []
    for fd in range(3, 64):
        r = libc.syscall(438, pfd, fd, 0)
        if r >= 0:
            got.append(fd)
            os.close(r)
        elif ctypes.get_errno() != errno.EBADF:
            res["getfd_" + name] = err()
            break
    if got:
        res["getfd_" + name] = f"stole fds {got}"
for name, pid in (("p", p), ("g", g)):
    for what in ("mem", "fd", "environ"):
        try:
            if what == "fd":   # the numbers may be listed (the directory is root's); not followed
                n = sorted(os.listdir(f"{HP}/{pid}/fd"), key=int)[-1]
                os.close(os.open(f"{HP}/{pid}/fd/{n}", os.O_RDONLY))
            else:
                os.close(os.open(f"{HP}/{pid}/{what}", os.O_RDONLY))
            res[f"{what}_{name}"] = "ok"
        except OSError as e:
            res[f"{what}_{name}"] = errno.errorcode[e.errno]
res["ifaces"] = sorted(n for _, n in socket.if_nameindex())
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.settimeout(0.3)
seen = set()
try:
    for _ in range(50):
        _, addr = s.recvfrom(65535)
        seen.add(addr[0])
except socket.timeout:
    pass
res["packet_ifaces"] = sorted(seen)
res["nft"] = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=10).stdout
print(json.dumps(res))
'''


@pytest.fixture
def cfroot(cf):
    if cf.runner.uid != 0:
        pytest.skip("root caller only")
    return cf


def test_root_can_setgroups_and_drop_privileges(cfroot):
    script = ("import os; os.setgroups([0, 4, 27]); print(sorted(os.getgroups())); "
              "import subprocess as s; "
              "print(s.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'id', '-u'], "
              "capture_output=True, text=True, timeout=10).stdout.strip()); "
              "print(s.run(['su', '-s', '/bin/sh', 'nobody', '-c', 'id -u'], "
              "capture_output=True, text=True, timeout=10).stdout.strip())")
    r = cfroot.run(["--", PY, "-c", script])
    assert r.rc == 0, r
    assert r.text.split("\n")[:3] == ["[0, 4, 27]", "65534", "65534"], r


def test_nested_childflow_as_root(cfroot):
    url = f"http://{W.REMOTES['remote1']['v4']}/who.txt"
    r = cfroot.run(["--", cfroot.bin, "--", "sh", "-c",
                    f"{cfroot.bin} -- true && curl -sS --max-time 10 {url}"], timeout=60)
    assert (r.rc, r.text) == (0, "remote1\n"), r


def test_root_cannot_reach_gateway_or_p(cfroot):
    hostproc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        p = cfroot.popen(["--", PY, "-c", ESCAPE, str(hostproc)], pass_fds=(hostproc,))
        try:
            out, errout = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            kill_tree(p)
            raise
    finally:
        os.close(hostproc)
    assert p.returncode == 0, (p.returncode, out, errout)
    res = json.loads(out)
    assert res["umount"] == "EINVAL", res      # init's /proc is a locked mount for the command
    assert res["p_cmdline"].endswith("childflow"), res   # the probe really reads the caller's /proc
    assert res["setns_g"] in ("EPERM", "open:EACCES", "open:EPERM"), res
    for who in ("p", "g"):
        # P and G are outside the command's PID namespace (not nameable: ESRCH), and not
        # dumpable: uid 0 alone does not open their memory, fds or environment through /proc.
        assert res["getfd_" + who] in ("EPERM", "pidfd:EPERM", "pidfd:ESRCH"), res
        assert res["ptrace_" + who] in ("EPERM", "ESRCH"), res
        for what in ("mem", "fd", "environ"):
            assert res[f"{what}_{who}"] in ("EACCES", "EPERM"), res
    assert res["ifaces"] == ["eth0", "lo"], res
    assert set(res["packet_ifaces"]) <= {"eth0", "lo"}, res
    assert "tproxy" not in res["nft"] and "childflow" not in res["nft"], res


def test_user_cannot_setgroups(cf):
    if cf.runner.uid == 0:
        pytest.skip("unprivileged caller only")
    r = cf.run(["--", PY, "-c", "import os\ntry:\n os.setgroups([0])\n print('ok')\nexcept OSError as e:\n print(e.errno)"])
    assert (r.rc, r.text.strip()) == (0, "1"), r
