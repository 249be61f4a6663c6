"""--doctor and explained failures (issue 12).

Each test makes the host lack one feature, inside something the test creates (a child user namespace,
a private mount namespace, the world's own host netns, the v4-only world), and checks that the doctor
reports it with the right status and fix, and that a normal run in the same condition says the same
thing (exit 125 for a setup step that fails; the warning a surviving run prints otherwise).  Every
childflow runs in a private mount namespace whose /etc/resolv.conf names a resolver of the closed world
(or a world address where nothing listens): the machine's own resolver is never asked.
"""
import json
import os
import subprocess
import tempfile
import time

import pytest

import proxies as X
import world as W
from cfutil import pids_with_exe

R1 = W.REMOTES["remote1"]
DNS_ADDR = "198.51.100.13"        # a dnsmasq on remote1, for the doctor's "resolver answers"
DEAD_DNS = W.HOST_GW4             # the router: nothing listens on port 53 (ICMP port unreachable)
PREFLIGHT = {"user_namespaces", "uidmap", "nftables", "veth", "mounts", "dns"}
CAPABILITIES = {"syn_gate", "ipv6", "icmp_echo", "af_packet_capture", "fast_tcp"}


@pytest.fixture(scope="module")
def resolver(world, sess):
    """A resolver in the closed world (dnsmasq on remote1's extra address)."""
    t = world.remote["remote1"]
    world.ip(t, "addr", "add", f"{DNS_ADDR}/32", "dev", "eth0")
    log = os.path.join(sess.logs, "doctor-dnsmasq.log")
    p = subprocess.Popen(["ip", "netns", "exec", t, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                          "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces", "--user=root",
                          "--pid-file=", "--port=53", f"--listen-address={DNS_ADDR}", "--log-queries",
                          f"--log-facility={log}", "--host-record=a.test,198.51.100.10"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while "started" not in (open(log).read() if os.path.exists(log) else ""):
            assert p.poll() is None and time.monotonic() < deadline, "dnsmasq did not start"
            time.sleep(0.05)
        yield DNS_ADDR
    finally:
        p.kill()
        p.wait(timeout=5)
        world.ip(t, "addr", "del", f"{DNS_ADDR}/32", "dev", "eth0", check=False)


class Wrapped:
    """childflow as cf's runner, in a private mount namespace of the world's host netns, with its own
    resolv.conf and optional extra bind mounts and shell steps (run as root before dropping to the
    runner), e.g. an empty /etc/subuid or a user namespace limited to 0."""

    def __init__(self, cf, nameserver, binds=None, pre="", outer=None):
        self.cf = cf
        self.files = []
        rc_text = "nameserver %s\noptions timeout:1 attempts:1\n" % nameserver
        mounts = [f"mount --bind {self._file(rc_text)} /etc/resolv.conf"]
        for path, text in (binds or {}).items():
            mounts.append(f"mount --bind {self._file(text)} {path}")
        self.script = " && ".join(mounts + ([pre] if pre else [])) + ' && exec "$@"'
        self.outer = outer or []

    def _file(self, text):
        fd, path = tempfile.mkstemp(prefix="cfw-doctor-", dir=self.cf.cwd)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        self.files.append(path)
        return path

    def argv(self, args, env=None):
        inner = self.cf.prefix(env)[4:]   # setpriv/env, without `ip netns exec`
        return (["ip", "netns", "exec", self.cf.world.host] + self.outer +
                ["unshare", "-m", "--propagation", "private", "sh", "-c", self.script, "sh"] +
                inner + [self.cf.bin] + list(args))

    def run(self, args, env=None, timeout=60):
        p = subprocess.run(self.argv(args, env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, start_new_session=True, cwd=self.cf.cwd)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def doctor(self, *args, env=None):
        rc, out, err = self.run(["--doctor", "--doctor-format", "json"] + list(args), env=env)
        try:
            rep = json.loads(out)
        except ValueError:
            raise AssertionError(f"--doctor printed no JSON: rc={rc}\n{out}\n{err}")
        return rc, rep, err

    def close(self):
        for p in self.files:
            os.unlink(p)


@pytest.fixture
def wrap(request):
    made = []

    def make(cf, nameserver, **kw):
        w = Wrapped(cf, nameserver, **kw)
        made.append(w)
        return w
    yield make
    for w in made:
        w.close()


def item(rep, key):
    for sect in ("preflight", "capabilities"):
        for it in rep[sect]:
            if it["key"] == key:
                return it
    raise AssertionError(f"no check {key} in {rep}")


def explained(err, it):
    """The run's stderr carries the doctor's detail and fix for the check, as whole lines."""
    lines = err.splitlines()
    assert f"childflow: {it['detail']}" in lines, (it, err)
    assert f"childflow: fix: {it['hint']}" in lines, (it, err)


def no_leftovers(cf):
    assert not pids_with_exe(cf.bin), "childflow processes left behind"


def test_json_has_every_field(cf, wrap, resolver):
    rc, rep, err = wrap(cf, resolver).doctor()
    assert rc == 0, (rep, err)
    assert list(rep) == ["backend", "uid", "euid", "status", "capabilities", "preflight"], rep
    assert rep["backend"] == "rootless-internal"
    assert rep["uid"] == cf.runner.uid and rep["euid"] == cf.runner.uid
    assert rep["status"] in ("ready", "ready with warnings"), rep
    assert {i["key"] for i in rep["preflight"]} == PREFLIGHT, rep
    assert {i["key"] for i in rep["capabilities"]} == CAPABILITIES, rep
    for sect, words in (("preflight", {"ok", "warning", "blocked"}),
                        ("capabilities", {"available", "limited", "unavailable"})):
        for it in rep[sect]:
            assert list(it) == ["key", "label", "status", "detail", "hint"], it
            assert it["status"] in words and it["label"] and it["detail"], it
            assert (it["hint"] is None) == (it["status"] in ("ok", "available")), it
    for key in PREFLIGHT:
        assert item(rep, key)["status"] == "ok", item(rep, key)
    assert resolver in item(rep, "dns")["detail"]


def test_text_format(cf, wrap, resolver):
    rc, out, err = wrap(cf, resolver).run(["--doctor"])
    assert rc == 0, (out, err)
    lines = out.splitlines()
    assert lines[0] == "childflow doctor" and lines[1] == "backend: rootless-internal", out
    assert lines[3] in ("status: ready", "status: ready with warnings"), out
    assert "[OK] unprivileged user namespaces" in lines and "preflight" in lines, out


def test_root_backend_reports_what_it_would_change(cf, wrap, resolver):
    rc, rep, err = wrap(cf, resolver).doctor("--root")
    assert rep["backend"] == "rootful"
    root, fwd = item(rep, "root"), item(rep, "forwarding")
    if cf.runner.user:
        assert rc == 1 and rep["status"] == "blocked", rep
        assert root["status"] == "blocked" and "sudo" in root["hint"], root
    else:
        assert root["status"] == "ok", root
        # what --root really sets (per interface; net.ipv4.ip_forward is never touched)
        assert fwd["status"] == "ok" and "net.ipv4.conf.<if>.forwarding" in fwd["detail"], fwd
        assert "ip_forward" not in fwd["detail"], fwd
        br = item(rep, "root_bridge")
        assert br["status"] == "ok" and "netdev ingress, fwd" in br["detail"], br
    up = item(rep, "root_uplink")
    assert up["status"] == "ok" and "10.241.0.0/16" in up["detail"], up


def test_iface_check(cf, wrap, resolver):
    rc, rep, _ = wrap(cf, resolver).doctor("-i", "eth0")
    assert item(rep, "iface")["status"] == "ok" and "eth0 is up" in item(rep, "iface")["detail"], rep
    rc, rep, _ = wrap(cf, resolver).doctor("-i", "nosuch0")
    it = item(rep, "iface")
    assert rc == 1 and it["status"] == "blocked" and "eth0" in it["hint"], it
    # lo is up with addresses but has no default route: only its own subnets would be reachable
    rc, rep, _ = wrap(cf, resolver).doctor("-i", "lo")
    it = item(rep, "iface")
    assert it["status"] == "warning" and "no default route" in it["detail"] and "ip route add" in it["hint"], it


def test_user_namespaces_limited_to_zero(cf, wrap, resolver):
    """A child user namespace (made here, as root) whose user.max_user_namespaces is 0."""
    if cf.runner.user:
        pytest.skip("the limit is set by root of the child user namespace the test makes")
    control = wrap(cf, resolver, outer=["unshare", "--user", "--map-root-user", "--net"])
    rc, rep, _ = control.doctor()
    assert item(rep, "user_namespaces")["status"] == "ok", rep
    w = wrap(cf, resolver, outer=["unshare", "--user", "--map-root-user", "--net"],
             pre="echo 0 > /proc/sys/user/max_user_namespaces")
    rc, rep, err = w.doctor()
    it = item(rep, "user_namespaces")
    assert rc == 1 and rep["status"] == "blocked", rep
    assert it["status"] == "blocked" and "user.max_user_namespaces is 0" in it["detail"], it
    assert it["hint"].startswith("sysctl -w user.max_user_namespaces="), it
    rc, out, err = w.run(["--", "/bin/true"])
    assert rc == 125, (out, err)
    explained(err, it)
    assert "childflow: reason_code: namespace_unshare_failed" in err.splitlines(), err
    no_leftovers(cf)


def test_missing_newuidmap(cf, wrap, resolver):
    if not cf.runner.user:
        pytest.skip("root maps every id itself")
    w = wrap(cf, resolver)
    rc, rep, _ = w.doctor()
    assert item(rep, "uidmap")["status"] == "ok" and "newuidmap" in item(rep, "uidmap")["detail"], rep
    empty = tempfile.mkdtemp(prefix="cfw-nopath-", dir=cf.cwd)
    os.chmod(empty, 0o755)
    try:
        rc, rep, _ = w.doctor(env={"PATH": empty})
        it = item(rep, "uidmap")
        assert rc == 0 and it["status"] == "warning", it
        assert "newuidmap/newgidmap not found on PATH" in it["detail"] and "uidmap" in it["hint"], it
        env = {"PATH": empty, "CHILDFLOW_UIDMAP": "helper"}
        rc, rep, _ = w.doctor(env=env)
        it = item(rep, "uidmap")
        assert rc == 1 and it["status"] == "blocked" and "not found on PATH" in it["detail"], it
        rc, out, err = w.run(["--", "/bin/true"], env=env)
        assert rc == 125, (out, err)
        explained(err, it)
        assert "childflow: reason_code: user_namespace_mapping_failed" in err.splitlines(), err
        no_leftovers(cf)
    finally:
        os.rmdir(empty)


def test_no_subid_range(cf, wrap, resolver):
    if not cf.runner.user:
        pytest.skip("root maps every id itself")
    w = wrap(cf, resolver, binds={"/etc/subuid": "", "/etc/subgid": ""})
    rc, rep, _ = w.doctor()
    it = item(rep, "uidmap")
    name = cf.runner.user.pw_name
    assert rc == 0 and it["status"] == "warning" and "/etc/subuid has no range" in it["detail"], it
    assert it["hint"].startswith("usermod --add-subuids") and name in it["hint"], it
    rc, rep, _ = w.doctor(env={"CHILDFLOW_UIDMAP": "helper"})
    it = item(rep, "uidmap")
    assert rc == 1 and it["status"] == "blocked" and f"has no range for {name}" in it["detail"], it
    rc, out, err = w.run(["--", "/bin/true"], env={"CHILDFLOW_UIDMAP": "helper"})
    assert rc == 125, (out, err)
    explained(err, it)
    no_leftovers(cf)


def test_ping_group_range_closed(cf, world, wrap, resolver):
    """The world's host netns with ping_group_range "1 0": the user's ping inside is prohibited
    (root's goes through a raw socket), and a run that pings says what the doctor says."""
    path = "/proc/sys/net/ipv4/ping_group_range"
    saved = W.sh(["ip", "netns", "exec", world.host, "cat", path]).stdout.decode().split()
    w = wrap(cf, resolver)
    try:
        world.sysctl(world.host, "net.ipv4.ping_group_range=0 2147483647")
        rc, rep, _ = w.doctor()
        assert item(rep, "icmp_echo")["status"] == "available", rep
        assert "ICMP echo sockets open" in item(rep, "icmp_echo")["detail"], rep
        world.sysctl(world.host, "net.ipv4.ping_group_range=1 0")
        rc, rep, _ = w.doctor()
        it = item(rep, "icmp_echo")
        if not cf.runner.user:
            assert it["status"] == "available" and "raw ICMP socket opens" in it["detail"], it
            return
        assert rc == 0 and it["status"] == "limited" and '"1 0"' in it["detail"], it
        assert it["hint"].startswith('sysctl -w net.ipv4.ping_group_range="0 2147483647"'), it
        rc, out, err = w.run(["--", "ping", "-c", "1", "-W", "2", R1["v4"]])
        assert rc == 1, (out, err)
        lines = err.splitlines()
        assert f"childflow: warning: {it['detail']}" in lines, err
        assert f"childflow: fix: {it['hint']}" in lines, err
    finally:
        world.sysctl(world.host, f"net.ipv4.ping_group_range={saved[0]} {saved[1]}")


def test_no_ipv6_route(cf, cf4, wrap, resolver):
    rc, rep, _ = wrap(cf, resolver).doctor()
    assert item(rep, "ipv6")["status"] == "available", rep
    rc, rep, _ = wrap(cf4, resolver).doctor()
    it = item(rep, "ipv6")
    assert rc == 0 and it["status"] == "limited" and "the command gets IPv4 only" in it["detail"], it
    assert it["hint"], it


@pytest.fixture
def router_icmp_unlimited(world):
    """The router answers every datagram to its closed port 53 with an ICMP error (its rate limit
    would swallow the run's, a moment after the doctor's)."""
    path = "/proc/sys/net/ipv4/icmp_ratelimit"
    saved = W.sh(["ip", "netns", "exec", world.router, "cat", path]).stdout.decode().strip()
    world.sysctl(world.router, "net.ipv4.icmp_ratelimit=0")
    yield
    world.sysctl(world.router, f"net.ipv4.icmp_ratelimit={saved}")


def test_dead_resolver(cf, wrap, router_icmp_unlimited):
    """resolv.conf naming the router, where nothing listens on port 53: a warning, in both."""
    w = wrap(cf, DEAD_DNS)
    rc, rep, _ = w.doctor()
    it = item(rep, "dns")
    assert rc == 0 and it["status"] == "warning", it
    assert it["detail"] == (f"no DNS resolver answered ({DEAD_DNS}:53, Connection refused): "
                            "lookups inside get SERVFAIL"), it
    assert "--dns" in it["hint"], it
    rc, out, err = w.run(["--", "getent", "hosts", "a.test"])
    assert rc == 2, (out, err)   # getent: not found (SERVFAIL)
    lines = err.splitlines()
    assert f"childflow: warning: {it['detail']}" in lines, err
    assert f"childflow: fix: {it['hint']}" in lines, err


@pytest.fixture(scope="module")
def px(world, sess):
    p = X.Proxies(world, sess.logs).up()
    try:
        yield p
    finally:
        p.down()


def test_proxy_refusing_credentials(cf, wrap, resolver, px):
    if cf.runner.user:
        pytest.skip("the proxy's answer does not depend on who asks")
    uri = f"http://{X.PROXY4}:{X.TINY}"
    w = wrap(cf, resolver)
    rc, rep, _ = w.doctor("-p", uri, "-U", px.user, "-P", px.password)
    assert item(rep, "proxy")["status"] == "ok" and "took the credentials" in item(rep, "proxy")["detail"], rep
    rc, rep, _ = w.doctor("-p", uri, "-U", px.user, "-P", "wrong" + px.password)
    it = item(rep, "proxy")
    assert it["status"] == "warning", it
    assert it["detail"] == f"proxy {X.PROXY4}:{X.TINY} rejected the credentials (401)", it
    assert "-U" in it["hint"] and "--proxy-password-file" in it["hint"], it
    assert px.password not in json.dumps(rep)
    rc, out, err = w.run(["-p", uri, "-U", px.user, "-P", "wrong" + px.password, "--", "sleep", "1"])
    lines = err.splitlines()
    assert f"childflow: warning: {it['detail']}" in lines, err
    assert f"childflow: fix: {it['hint']}" in lines, err


def test_demo_starts_with_the_doctor():
    """`make demo` runs childflow --doctor before anything else it runs childflow for."""
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "scripts", "demo.sh")) as f:
        runs = [l for l in f if '"$CF"' in l and not l.lstrip().startswith(("#", "show"))]
    assert runs and "--doctor" in runs[0], runs[:2]
