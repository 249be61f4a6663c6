"""What the command sees inside the sandbox: its network, identity, capabilities, pids, fds, stdin."""
import hashlib
import os
import re
import subprocess
import time

import pytest

from cfutil import describe, pids_with_arg, reap, unique_marker, wait_until

IP = "/usr/sbin/ip"


def links_of(text):
    return sorted(l.split(":")[1].strip().split("@")[0] for l in text.strip().splitlines())


def sections(out):
    """Split output of `echo ==name; cmd; ...` into {name: text}."""
    res, cur = {}, None
    for line in out.splitlines():
        if line.startswith("=="):
            cur = line[2:]
            res[cur] = ""
        elif cur is not None:
            res[cur] += line + "\n"
    return res


NET_SCRIPT = (f"echo ==links; {IP} -o link; echo ==addr4; {IP} -o -4 addr show dev eth0; "
              f"echo ==route4; {IP} -4 route show default; echo ==addr6; {IP} -o -6 addr show dev eth0; "
              f"echo ==route6; {IP} -6 route show default; echo ==end")


def test_child_network(cf):
    r = cf.run(["--", "sh", "-c", NET_SCRIPT])
    assert r.rc == 0, r
    s = sections(r.text)
    assert "end" in s, r
    assert links_of(s["links"]) == ["eth0", "lo"], s["links"]
    assert "inet 10.240.255.2/30" in s["addr4"], s["addr4"]
    assert re.search(r"^default via 10\.240\.255\.1 dev eth0", s["route4"], re.M), s["route4"]
    glob6 = re.findall(r"inet6 ([0-9a-f:]+)/(\d+) scope global", s["addr6"])
    assert any(a.startswith("fd42:") for a, _ in glob6), s["addr6"]
    assert re.search(r"^default via \S+ dev eth0", s["route6"], re.M), s["route6"]


def test_child_network_in_v4only_world(cf4):
    r = cf4.run(["--", "sh", "-c", NET_SCRIPT])
    assert r.rc == 0, r
    s = sections(r.text)
    assert links_of(s["links"]) == ["eth0", "lo"], s["links"]
    assert "inet 10.240.255.2/30" in s["addr4"], s["addr4"]
    assert re.search(r"^default via 10\.240\.255\.1 dev eth0", s["route4"], re.M), s["route4"]
    assert s["route6"].strip() == "", "IPv6 default route offered although the host has no IPv6:\n" + s["route6"]
    non_ll = [l for l in s["addr6"].splitlines() if "scope link" not in l]
    assert non_ll == [], "non-link-local IPv6 address on eth0 although the host has no IPv6:\n" + s["addr6"]


def test_identity_and_capabilities(cf):
    """The caller's own uid/gid; an unprivileged caller has no capabilities, root keeps all of its
    own (in the child user namespace U2: test_sandbox_privileges.py shows they reach nothing else)."""
    r = cf.run(["--", "sh", "-c", "id -u; id -g; grep -E '^Cap(Eff|Prm|Amb|Bnd):' /proc/self/status"])
    assert r.rc == 0, r
    lines = r.text.split("\n")
    assert int(lines[0]) == cf.runner.uid and int(lines[1]) == cf.runner.gid, r
    caps = dict(l.split(":\t") for l in lines[2:] if l)
    if cf.runner.uid == 0:
        full = caps["CapBnd"]
        assert int(full, 16) != 0, caps
        assert caps == {"CapPrm": full, "CapEff": full, "CapAmb": "0000000000000000", "CapBnd": full}, caps
    else:
        assert {k: v for k, v in caps.items() if k != "CapBnd"} == {
            "CapPrm": "0000000000000000", "CapEff": "0000000000000000", "CapAmb": "0000000000000000"}, caps


def test_files_written_belong_to_caller(cf, sess):
    d = os.path.join(sess.dir, f"owned-{cf.runner.name}")
    os.makedirs(d, exist_ok=True)
    os.chown(d, cf.runner.uid, cf.runner.gid)
    path = os.path.join(d, "file")
    if os.path.exists(path):
        os.unlink(path)
    r = cf.run(["--", "sh", "-c", f"echo x > {path}"])
    assert r.rc == 0, r
    st = os.stat(path)
    os.unlink(path)
    assert (st.st_uid, st.st_gid) == (cf.runner.uid, cf.runner.gid)


def test_pid_namespace(cf):
    r = cf.run(["--", "sh", "-c", "ls /proc; echo ==; echo $$"])
    assert r.rc == 0, r
    listing, _, me = r.text.partition("==\n")
    pids = [int(x) for x in listing.split() if x.isdigit()]
    assert len(pids) <= 5, f"the command sees {len(pids)} processes: {pids}"
    assert r.pid not in pids
    assert int(me) in pids and int(me) <= 5, (me, pids)


def test_no_leaked_fds(cf):
    base = cf.direct(["ls", "/proc/self/fd"])
    assert sorted(base.text.split()) == ["0", "1", "2", "3"], f"control run already has extra fds: {base!r}"
    r = cf.run(["--", "ls", "/proc/self/fd"])
    assert r.rc == 0, r
    assert sorted(r.text.split()) == ["0", "1", "2", "3"], r
    r = cf.run(["--", "sh", "-c", "ls /proc/$$/fd"])
    assert sorted(r.text.split()) == ["0", "1", "2"], r


def test_stdin_small(cfc):
    r = cfc.run(["--", "cat"], input=b"hello")
    assert (r.rc, r.out) == (0, b"hello"), r


def test_stdin_4mib(cfc):
    data = os.urandom(4 * 1024 * 1024)
    r = cfc.run(["--", "sha256sum"], input=data, timeout=60)
    assert r.rc == 0, r
    assert r.text.split()[0] == hashlib.sha256(data).hexdigest(), r


def test_stdout_4mib(cf):
    r = cf.run(["--", "head", "-c", str(4 * 1024 * 1024), "/dev/zero"], timeout=60)
    assert r.rc == 0 and len(r.out) == 4 * 1024 * 1024 and not r.out.strip(b"\0"), (r.rc, len(r.out))


def test_background_children_do_not_outlive_command(cf):
    marker = unique_marker("300.77")
    try:
        r = cf.run(["--", "sh", "-c", f"sleep {marker} & echo started"], timeout=15)
        assert r.rc == 0 and r.out == b"started\n", r
        assert r.secs < 5, f"childflow took {r.secs:.1f}s to return after the command exited"
        left = wait_until(lambda: not pids_with_arg(marker), 2)
        assert left, "background process survived:\n" + describe(pids_with_arg(marker))
    finally:
        reap(marker)


def test_environment_and_cwd_pass_through(cf, sess):
    r = cf.run(["--", "sh", "-c", 'echo "$CF_TEST_VAR"; pwd'], env={"CF_TEST_VAR": "kept value"})
    assert r.rc == 0, r
    assert r.text.split("\n")[:2] == ["kept value", sess.work], r


def test_sysfs_shows_child_network(cf):
    """Tools that read /sys/class/net must see the child's eth0, not the host's."""
    r = cf.run(["--", "sh", "-c", f"cat /sys/class/net/eth0/address; {IP} -o link show eth0"])
    assert r.rc == 0, r
    sys_mac, link = r.text.split("\n", 1)
    assert re.search(r"link/ether " + re.escape(sys_mac.strip()) + r"\b", link), r
