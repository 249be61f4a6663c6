"""What the command sees as files for name resolution (issue 7): its /etc/resolv.conf names the
gateway whatever the host's file is (regular, symlink, dangling symlink, missing), --hosts-file is
merged over /etc/hosts, nsswitch.conf's hosts: line loses the sources that go around DNS, the host's
name-service sockets cannot be reached, and nothing is left on the host, even after SIGKILL.

Every run uses the fixtures of etcfiles.py (a private mount namespace whose /etc and /run are
made up), never the machine's own files.  Lookups only ever hit the files backend: the fixture's
resolv.conf says `options timeout:1 attempts:1`, and names looked up have v4 and v6 entries.
"""
import os
import secrets
import stat

import pytest

from etcfiles import FAKE_SOCKETS, run_in_fixture

GW4 = "nameserver 10.240.255.1"
HOST_RESOLV = ("# the host's resolver\nsearch cfw-a.example cfw-b.example\n"
               "options timeout:1 attempts:1 ndots:2\nnameserver 127.0.0.53\n")
NSSWITCH = ("passwd: files\ngroup: files\nshadow: files\n"
            "hosts: files mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns myhostname\n"
            "networks: files\n")
NSSWITCH_PLAIN = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
HOST_HOSTS = ("127.0.0.1 localhost\n# a comment naming cfw-shared.test\n"
              "203.0.113.77 cfw-shared.test\n2001:db8::77 cfw-shared.test\n"
              "198.51.100.99 cfw-hostonly.test\n2001:db8::99 cfw-hostonly.test\n")
OVERRIDE = ("10.1.2.3 cfw-over.test\n2001:db8::123 cfw-over.test\n"
            "10.1.2.4 CFW-Shared.test\n2001:db8::124 cfw-shared.test")   # no final newline

RESOLV_CASES = {
    "regular": ({"resolv.conf": {"text": HOST_RESOLV}}, {}),
    "symlink-stub": ({"resolv.conf": {"link": "/run/systemd/resolve/stub-resolv.conf"}},
                     {"systemd/resolve/stub-resolv.conf": HOST_RESOLV}),
    "symlink-nixos": ({"resolv.conf": {"link": "/etc/static/resolv.conf"},
                       "static": {"link": "/mnt/nix-etc"}}, {}),
    "dangling": ({"resolv.conf": {"link": "/run/systemd/resolve/stub-resolv.conf"}}, {}),
    "missing": ({"resolv.conf": None}, {}),
}


def spec_for(etc, run=None, **kw):
    e = {"nsswitch.conf": {"text": NSSWITCH_PLAIN}, "hosts": {"text": HOST_HOSTS}}
    e.update(etc)
    return dict(kw, etc=e, run=run or {})


def check_ok(res):
    assert res["rc"] == 0, res
    return res["out"]


@pytest.mark.parametrize("case", list(RESOLV_CASES))
def test_resolv_conf_names_the_gateway(cf, case):
    etc, run = RESOLV_CASES[case]
    spec = spec_for(etc, run, files={"/mnt/nix-etc/resolv.conf": HOST_RESOLV},
                    submounts={"/etc/cfw-submount": "SUBMOUNT-KEPT\n"})
    # The host's file as glibc sees it, when there is one (the dangling and missing cases: none).
    res = run_in_fixture(cf.argv(["--", "sh", "-c",
                                  "cat /etc/resolv.conf; echo ===; cat /etc/cfw-submount; "
                                  "head -c 5 /etc/passwd; echo; echo ===; ls /run/systemd/resolve 2>/dev/null; "
                                  "echo ===; cat /run/systemd/resolve/stub-resolv.conf 2>/dev/null; true"]),
                         spec)
    out = check_ok(res)
    resolv, sub, resolved, stub = out.split("===\n")
    lines = resolv.splitlines()
    assert GW4 in lines, res
    assert "127.0.0.53" not in resolv, res
    if case in ("dangling", "missing"):
        assert not any(l.startswith(("search", "options")) for l in lines), res
    else:
        assert "search cfw-a.example cfw-b.example" in lines, res
        assert "options timeout:1 attempts:1 ndots:2" in lines, res
    # The rest of /etc is still there, submounts included (the missing case overlays /etc).
    assert sub.startswith("SUBMOUNT-KEPT\nroot:"), res
    if case == "symlink-stub":
        # systemd-resolved's directory is hidden, but its stub-resolv.conf stays, with our text.
        assert resolved.split() == ["stub-resolv.conf"], res
        assert stub == resolv, res


@pytest.mark.parametrize("hosts_kind", ["regular", "symlink"])
def test_hosts_file_overlay(cf, sess, hosts_kind):
    over = os.path.join(sess.work, f"override-{secrets.token_hex(4)}")
    with open(over, "w") as f:
        f.write(OVERRIDE)
    os.chmod(over, 0o644)
    if hosts_kind == "symlink":
        etc = {"hosts": {"link": "/mnt/real/hosts"}, "resolv.conf": {"text": HOST_RESOLV}}
        files = {"/mnt/real/hosts": HOST_HOSTS}
    else:
        etc, files = {"resolv.conf": {"text": HOST_RESOLV}}, {}
    try:
        res = run_in_fixture(cf.argv(["--hosts-file", over, "--", "sh", "-c",
                                      "getent hosts cfw-over.test; getent ahostsv4 cfw-shared.test; "
                                      "echo ===; getent ahostsv4 cfw-hostonly.test; getent hosts localhost; "
                                      "echo ===; cat /etc/hosts"]), spec_for(etc, files=files))
    finally:
        os.unlink(over)
    first, second, hosts = check_ok(res).split("===\n")
    assert first.split()[:2] == ["2001:db8::123", "cfw-over.test"], res
    # The override's entry for a name the host also has wins: no 203.0.113.77.
    assert "10.1.2.4" in first and "203.0.113.77" not in first, res
    assert "198.51.100.99" in second and "127.0.0.1" in second, res
    assert hosts.startswith(OVERRIDE + "\n127.0.0.1 localhost\n# a comment naming cfw-shared.test\n"), res
    assert "cfw-hostonly.test" in hosts and "203.0.113.77" not in hosts, res


def _bad_paths(work, runner):
    d = os.path.join(work, f"bad-{secrets.token_hex(4)}")
    os.makedirs(d)
    os.chmod(d, 0o755)
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    os.chmod(fifo, 0o666)
    big = os.path.join(d, "big")
    with open(big, "wb") as f:
        f.truncate(4 * 1024 * 1024 + 1)
    os.chmod(big, 0o644)
    cases = {"missing": (os.path.join(d, "nope"), "does not exist"),
             "directory": (d, "directory"),
             "fifo": (fifo, "not a regular file"),
             "device": ("/dev/null", "not a regular file"),
             "too-big": (big, "larger than 4 MiB")}
    if runner.user:
        secret = os.path.join(d, "secret")
        with open(secret, "w") as f:
            f.write("10.0.0.1 x\n")
        os.chmod(secret, 0o600)
        cases["unreadable"] = (secret, "cannot be read")
    return d, cases


def test_bad_hosts_file_is_one_line_exit_2(cf, sess):
    d, cases = _bad_paths(sess.work, cf.runner)
    try:
        for name, (path, needle) in cases.items():
            r = cf.run(["--hosts-file", path, "--", "sh", "-c", "echo RAN"], timeout=15)
            lines = [l for l in r.etext.split("\n") if l]
            assert r.rc == 2 and b"RAN" not in r.out, (name, r)
            assert len(lines) == 1 and lines[0].startswith("childflow: error:"), (name, r)
            assert path in lines[0] and needle in lines[0], (name, r)
    finally:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


PROBE = """
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(p)
        print(p, "CONNECTED")
    except OSError as e:
        print(p, "refused", e.errno)
"""


def test_name_service_sockets_hidden(cf):
    spec = spec_for({"resolv.conf": {"link": "/run/systemd/resolve/stub-resolv.conf"}},
                    {"systemd/resolve/stub-resolv.conf": HOST_RESOLV, "systemd/resolve/resolv.conf": "x\n"},
                    sockets=list(FAKE_SOCKETS))
    spec["etc"]["hosts"] = {"text": OVERRIDE + "\n"}
    res = run_in_fixture(cf.argv(["--", "sh", "-c",
                                  f"python3 -c '{PROBE}' {' '.join(FAKE_SOCKETS)} /var/run/nscd/socket; "
                                  "getent hosts cfw-over.test; ls -A /run/systemd/resolve /run/nscd"]), spec)
    out = check_ok(res)
    for p in FAKE_SOCKETS + ("/var/run/nscd/socket",):
        assert f"{p} refused" in out, (p, res)
    assert "CONNECTED" not in out, res
    # Each server saw the helper's control connection, and nothing from inside.
    assert all(n >= 1 for n in res["conns"].values()), res
    assert res["foreign"] == {p: 0 for p in FAKE_SOCKETS}, res
    assert "2001:db8::123" in out and "cfw-over.test" in out, res
    listing = out.split("/run/nscd:\n", 1)[1]
    assert listing.split() == ["/run/systemd/resolve:", "resolv.conf", "stub-resolv.conf"], res


def test_nsswitch_hosts_rewritten(cf):
    spec = spec_for({"resolv.conf": {"text": HOST_RESOLV}, "nsswitch.conf": {"text": NSSWITCH}})
    res = run_in_fixture(cf.argv(["--", "sh", "-c", "cat /etc/nsswitch.conf"]), spec)
    assert check_ok(res) == NSSWITCH.replace(
        "hosts: files mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns myhostname",
        "hosts: files dns myhostname"), res
    # Nothing to change: the host's file as it is, not covered by a mount.
    res = run_in_fixture(cf.argv(["--", "sh", "-c", "cat /etc/nsswitch.conf; grep -c nsswitch "
                                  "/proc/self/mountinfo || true"]), spec_for({"resolv.conf": {"text": HOST_RESOLV}}))
    assert check_ok(res) == NSSWITCH_PLAIN + "0\n", res


def _snapshot(dirs):
    seen = {}
    for top in dirs:
        for root, subdirs, files in os.walk(top):
            if root.count("/") - top.count("/") >= 2:
                subdirs[:] = []
            for n in subdirs + files:
                p = os.path.join(root, n)
                try:
                    seen[p] = os.lstat(p).st_ino
                except OSError:
                    pass
    return seen


def _holds(path, marker):
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 64 << 20:
            return False
        with open(path, "rb") as f:
            return marker in f.read()
    except OSError:
        return False


def test_nothing_left_after_sigkill(cf, sess):
    marker = f"cfw-marker-{secrets.token_hex(6)}"
    over = os.path.join(sess.work, f"override-{marker}")
    with open(over, "w") as f:
        f.write(f"10.1.2.3 {marker}.test\n")
    os.chmod(over, 0o644)
    resolv = HOST_RESOLV.replace("cfw-b.example", f"{marker}.example")
    dirs = ["/tmp", "/run", "/dev/shm"]
    before = _snapshot(dirs)
    try:
        res = run_in_fixture(cf.argv(["--hosts-file", over, "--", "sh", "-c",
                                      f"grep -q {marker} /etc/hosts && grep -q {marker} /etc/resolv.conf "
                                      "&& echo READY; sleep 60"]),
                             spec_for({"resolv.conf": {"text": resolv}}, kill_after="READY"), timeout=30)
    finally:
        os.unlink(over)
    assert res["killed"] and res["rc"] == -9, res
    after = _snapshot(dirs)
    new = [p for p, ino in after.items() if before.get(p) != ino]
    # Other work on this machine may create files meanwhile: ours would hold the marker or our name.
    # (/run/childflow-root is --root's, which another pytest-xdist worker may be running meanwhile.)
    ours = [p for p in new if p != "/run/childflow-root" and
            ("childflow" in os.path.basename(p) or _holds(p, marker.encode()))]
    assert not ours, ours
