"""--root: the rootful backend.  Direct traffic is forwarded by the kernel and masqueraded by the
host (the remote sees the host's address; the relay carries no flow), DNS and -p are still
intercepted into the relay, and the host (the world's "host" namespace, where childflow runs) is
left exactly as it was: nftables ruleset, links, addresses, routes of every table, rules,
forwarding sysctls, the record directory and mounts, after a normal run, a failed setup, SIGKILL of
childflow, and concurrent runs."""
import ipaddress
import json
import os
import re
import shlex
import signal
import subprocess
import time

import pytest

import childprogs as P
import proxies as X
import world as W
from conftest import build_world
from cfutil import CF, Runner, curl, kill_tree, py, url, wait_until
from test_dns import Dnsmasq, records, RES4, REC4, REC6, A4

R1, R2 = W.REMOTES["remote1"], W.REMOTES["remote2"]
STATE_DIR = "/run/childflow-root"


@pytest.fixture
def rcf(world, sess):
    """childflow as root in the dual-stack world (--root is for root only)."""
    b = sess.bins["plain"]
    if b is None:
        pytest.fail(f"childflow binary not found at {sess.bins['plain_src']}")
    return CF(Runner("root", b), world, sess.work)


@pytest.fixture
def ucf(world, sess):
    return CF(Runner("user", sess.bins["plain"], user=sess.user), world, sess.work)


def _ns(world, *argv):
    return subprocess.run(["ip", "netns", "exec", world.host] + list(argv), check=True, timeout=20,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True).stdout


def host_state(world):
    """What --root may change in the host namespace, as comparable text."""
    sysctls = _ns(world, "sh", "-c",
                  "grep -r . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding "
                  "/proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/force_forwarding "
                  "/proc/sys/net/ipv6/conf/*/accept_ra /proc/sys/net/ipv4/conf/*/rp_filter 2>/dev/null; "
                  "true")   # grep says 2 when a dying run's link vanishes while it reads
    routes6 = "\n".join(l for l in _ns(world, "ip", "-6", "route", "show", "table", "all").splitlines()
                        if " cache" not in l)
    with open("/proc/self/mountinfo") as f:   # other test worlds come and go under /run/netns
        mounts = [l for l in f.read().splitlines() if " /run/netns/" not in l]
    return {
        "nft": _ns(world, "nft", "list", "ruleset"),
        "links": re.sub(r"link-netns \S+|link-netnsid \d+", "", _ns(world, "ip", "-o", "link")),
        "addrs": _ns(world, "ip", "-o", "addr"),
        "routes4": _ns(world, "ip", "-4", "route", "show", "table", "all"),
        "routes6": routes6,
        "rules": _ns(world, "ip", "rule") + _ns(world, "ip", "-6", "rule"),
        "sysctls": sysctls,
        "files": os.path.exists(STATE_DIR) and sorted(os.listdir(STATE_DIR)),
        "mounts": mounts,
    }


def shared(state):
    """The sysctls concurrent runs share (not those of their own links)."""
    return [l for l in state["sysctls"].splitlines() if "cfroot" not in l]


def diff(a, b):
    return {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def assert_restored(world, before, timeout=15.0):
    """The host state comes back to `before` (a killed run's namespace goes asynchronously)."""
    now = wait_until(lambda: (lambda s: s if s == before else None)(host_state(world)), timeout)
    assert now == before, f"host state not restored: {diff(before, host_state(world))}"


def start_waiting(rcf, sess, tag, args=(), cmd=None, env=None, after="true"):
    """childflow --root whose command says "ready", waits for `go-<tag>` to exist, then runs `after`."""
    go = os.path.join(sess.work, f"go-{tag}-{os.getpid()}")
    if os.path.exists(go):
        os.unlink(go)
    body = cmd or "true"
    p = rcf.popen(["--root"] + list(args) + ["--", "sh", "-c",
                  f"{body}; echo ready; i=0; while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; "
                  f"i=$((i+1)); done; {after}"], env=env)
    line = b""
    deadline = time.monotonic() + 20
    while b"ready" not in line and time.monotonic() < deadline:
        line += p.stdout.readline() or b""
        if p.poll() is not None:
            break
    assert b"ready" in line, (line, p.poll(), p.stderr.read() if p.poll() is not None else b"")
    return p, go, line


def finish(p, go, timeout=20):
    open(go, "w").close()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(p)
        raise
    os.unlink(go)
    return p.returncode, out, err


# ---------- the user's view ----------

def test_root_without_root_is_one_clear_error(ucf):
    r = ucf.run(["--root", "--", "true"])
    assert r.rc == 2, r
    lines = r.etext.strip().splitlines()
    assert len(lines) == 1 and "sudo" in lines[0] and "drop --root" in lines[0], r


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_direct_tcp_is_routed_and_masqueraded(rcf, world, fam):
    """The remote sees the host's own address, and the relay carried no flow: the kernel forwarded."""
    token = os.urandom(6).hex()
    r = rcf.run(["--root", "--"] + curl(url(R2[fam], f"/index.html?id={token}")),
                env={"CHILDFLOW_DEBUG": "1"})
    assert r.rc == 0, r
    assert r.out == world.files["index.html"], r
    hits = world.svc_remote2.wait_find(path=f"/index.html?id={token}")
    assert {h["client"] for h in hits} == {W.HOST_V4 if fam == "v4" else W.HOST_V6}, hits
    assert re.search(r"relay: tcp 0 accepted", r.etext), r.etext[-3000:]


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_direct_udp_is_routed_and_masqueraded(rcf, world, fam):
    a = R2[fam]
    r = rcf.run(["--root", "--"] + py(P.UDP_ECHO, a, W.ECHO_PORT, 3))
    assert r.rc == 0, r
    res = json.loads(r.out)
    assert [x["ok"] for x in res["results"]] == [True] * 3, res
    for x in res["results"]:
        hits = world.svc_remote2.wait_find(svc="udp-echo", data=x["msg"])
        assert {h["client"] for h in hits} == {W.HOST_V4 if fam == "v4" else W.HOST_V6}, hits


def test_big_download_and_ping(rcf, world):
    """A 4 MiB download through the forwarded path, and ICMP echo, which only a kernel path carries."""
    r = rcf.run(["--root", "--", "sh", "-c",
                 f"curl -sS --noproxy '*' --max-time 20 http://{R2['v4']}/big.bin | sha256sum; "
                 f"ping -c 1 -W 3 {R2['v4']} >/dev/null && echo ping-ok"], timeout=40)
    assert r.rc == 0, r
    assert W.sha256(world.files["big.bin"]) in r.text and "ping-ok" in r.text, r


@pytest.fixture(scope="module")
def dnsr(world, sess):
    rem2 = world.remote["remote2"]
    world.ip(rem2, "addr", "add", f"{REC4}/32", "dev", "eth0", check=False)
    world.ip(rem2, "addr", "add", f"{REC6}/128", "dev", "eth0", "nodad", check=False)
    real = Dnsmasq(world.remote["remote1"], [RES4], sess.logs, world.prefix + "-rres", records(A4, "2001:db8:100::21"))
    rec = Dnsmasq(rem2, [REC4, REC6], sess.logs, world.prefix + "-rrec",
                  records("203.0.113.66", "2001:db8:203::66"))
    yield {"real": real, "rec": rec}
    for d in (real, rec):
        d.stop()
    world.ip(rem2, "addr", "del", f"{REC4}/32", "dev", "eth0", check=False)
    world.ip(rem2, "addr", "del", f"{REC6}/128", "dev", "eth0", check=False)


@pytest.mark.parametrize("how", ["udp4", "tcp4", "udp6"])
def test_dns_is_forced(rcf, dnsr, how):
    """DNS to any address (UDP or TCP) is answered by the --dns resolver; the one dialled sees nothing."""
    target = REC6 if how == "udp6" else REC4
    tcp = ["+tcp"] if how.startswith("tcp") else []
    r = rcf.run(["--root", "--dns", RES4, "--", "dig", "+time=3", "+tries=1"] + tcp + [f"@{target}", "a.test", "A"])
    assert r.rc == 0, r
    assert A4 in r.text and "status: NOERROR" in r.text, r
    assert not dnsr["rec"].queries(), dnsr["rec"].queries()


@pytest.fixture(scope="module")
def pxr(world, sess):
    p = X.Proxies(world, sess.logs).up()
    try:
        p.refuse_host()
        yield p
    finally:
        p.down()


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_proxy_carries_all_tcp(rcf, world, pxr, fam):
    """remote1 resets the host's own addresses: only the proxied path reaches it."""
    token = os.urandom(6).hex()
    host = X.PROXY4 if fam == "v4" else f"[{X.PROXY6}]"
    r = rcf.run(["--root", "-p", f"http://{host}:{X.TINY}", "-U", pxr.user, "-P", pxr.password, "--"] +
                curl(url(R1[fam], f"/index.html?id={token}")))
    assert r.rc == 0, r
    assert r.out == world.files["index.html"], r
    hits = world.svc_remote1.wait_find(path=f"/index.html?id={token}")
    assert {h["client"] for h in hits} == {X.PROXY4 if fam == "v4" else X.PROXY6}, hits


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_proxied_tcp_cannot_go_direct(rcf, world, pxr, fam):
    """With a dead proxy, TCP to remote2 (which accepts the host) must fail: nothing leaks direct,
    in either family.  The control: the same without -p succeeds."""
    token = os.urandom(6).hex()
    u = url(R2[fam], f"/index.html?id={token}")
    r = rcf.run(["--root", "-p", f"http://{X.PROXY4}:{X.DEAD}", "--"] + curl(u))
    assert r.rc != 0 and r.out != world.files["index.html"], r
    time.sleep(0.3)
    assert not world.svc_remote2.find(path=f"/index.html?id={token}")
    c = rcf.run(["--root", "--"] + curl(u))
    assert c.rc == 0 and c.out == world.files["index.html"], c


def test_exit_codes_and_signals(rcf, sess):
    assert rcf.run(["--root", "--", "sh", "-c", "exit 7"]).rc == 7
    assert rcf.run(["--root", "--", "sh", "-c", "kill -TERM $$"]).rc == 143
    p, go, _ = start_waiting(rcf, sess, "sig")
    p.send_signal(signal.SIGTERM)
    try:
        p.communicate(timeout=10)
    finally:
        kill_tree(p)
    assert p.returncode == 143


# ---------- new connections to a server that still holds TIME_WAIT ----------

# Accepts, sends one byte and closes first (so the server holds TIME_WAIT, as an HTTP/1.0 server
# does), for at most 60 s; prints each peer's port as it accepts it.
CLOSE_FIRST_SERVER = r"""
import socket, sys, time
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2]))); l.listen(128); l.settimeout(1.0)
print("ready", flush=True)
end = time.monotonic() + 60
while time.monotonic() < end:
    try:
        c, peer = l.accept()
    except socket.timeout:
        continue
    print(peer[1], flush=True)
    c.sendall(b"x"); c.close()
"""

# Connects from each local port of a comma-separated list in turn, reads to EOF, closes; prints the
# ports that worked and the namespace's SYN retransmissions (TcpExt TCPSynRetrans) during the loop.
BOUND_PORT_CLIENT = r"""
import json, socket, sys
def syn_retrans():
    with open("/proc/net/netstat") as f:
        rows = [l.split() for l in f if l.startswith("TcpExt:")]
    return int(rows[1][rows[0].index("TCPSynRetrans")])
host, port, ports = sys.argv[1], int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")]
before, ok, errors = syn_retrans(), [], []
for p in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(5)
    try:
        s.bind(("0.0.0.0", p)); s.connect((host, port))
        while s.recv(16):
            pass
        ok.append(p)
    except OSError as e:
        errors.append(f"{p}: {e}")
    s.close()
print(json.dumps({"ok": ok, "errors": errors[:5], "syn_retrans": syn_retrans() - before}))
"""


def test_no_syn_refused_by_a_time_wait_of_the_hosts_own(rcf, world):
    """The host's own connections leave the server holding TIME_WAIT for their 4-tuples; the
    command's connections from the same local ports must not be masqueraded onto them (a SYN on a
    TIME_WAIT 4-tuple whose sequence number and timestamp do not follow the old connection's is
    answered with a challenge ACK about half the time: a reset and a retransmitted SYN, ~10 ms).
    The mechanism is asserted, not a time: no SYN retransmitted, and every port the server saw
    for the command's connections lies outside the host's ephemeral range.  A second run from the
    same ports gets the same ports at the server (a deterministic mapping: a reused 4-tuple lands on
    its own old TIME_WAIT, which accepts it, not on another flow's); if a concurrent run took the
    slot, the second run's tuples differ and must avoid the first's ports, which conntrack holds."""
    lo, hi = map(int, _ns(world, "cat", "/proc/sys/net/ipv4/ip_local_port_range").split())
    # Odd ports: the kernel gives connect()'s ephemeral ports even numbers first, so the other
    # worker's tests running in the same host namespace rarely hold one of these.  One that is held
    # all the same (EADDRINUSE in the control) is left out of the command's run.
    want, port = list(range(lo + 5001, lo + 5001 + 80, 2)), 18111
    srv = subprocess.Popen(world.exec_argv(world.remote["remote2"], py(CLOSE_FIRST_SERVER, R2["v4"], port)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert srv.stdout.readline().strip() == "ready", srv.stderr.read() if srv.poll() is not None else ""
        h = rcf.direct(py(BOUND_PORT_CLIENT, R2["v4"], port, ",".join(map(str, want))))
        assert h.rc == 0, h
        ports = json.loads(h.out)["ok"]   # the control: TIME_WAITs of the host's own at the server
        assert len(ports) >= len(want) - 4 and all("Address already in use" in e for e in json.loads(h.out)["errors"]), h
        n = len(ports)
        res, slots = [], []
        for _ in range(2):
            r = rcf.run(["--root", "--"] + py(BOUND_PORT_CLIENT, R2["v4"], port, ",".join(map(str, ports))), timeout=60,
                        env={"CHILDFLOW_DEBUG": "1"})
            assert r.rc == 0, r
            res.append(json.loads(r.out))
            slots.append(re.search(r"host: slot (\d+)", r.etext).group(1))
    finally:
        kill_tree(srv)
        srv.wait(timeout=10)
    seen = [int(x) for x in srv.stdout.read().split()]
    assert seen[:n] == ports, seen[:n]
    assert [(x["ok"], x["syn_retrans"]) for x in res] == [(ports, 0), (ports, 0)], res
    child = seen[n:]
    assert len(child) == 2 * n and not [p for p in child if lo <= p <= hi], (lo, hi, child)
    if slots[0] == slots[1]:   # the same tuples inside: the same ports outside
        assert child[n:] == child[:n], child
    else:                      # another run took the slot: other tuples, and conntrack keeps the first's
        assert not set(child[n:]) & set(child[:n]), (slots, child)


# ---------- the host is left as it was ----------

def test_host_unchanged_after_a_run(rcf, world, sess):
    before = host_state(world)
    p, go, _ = start_waiting(rcf, sess, "state", env={"CHILDFLOW_DEBUG": "1"})
    during = host_state(world)
    rc, out, err = finish(p, go)
    assert rc == 0, err[-2000:]
    # The control: the run did change the host while it ran (so the comparison can fail).
    d = diff(before, during)
    assert {"nft", "links", "addrs", "sysctls", "files"} <= set(d), sorted(d)
    assert "childflow-root" in during["nft"] and "flags owner" in during["nft"], during["nft"]
    assert b"host change:" in err and b"host restored:" in err, err[-3000:]
    assert_restored(world, before, timeout=0.5)


def test_host_unchanged_after_a_failed_setup(rcf, world):
    """A setup step after the host changes fails (the command's --allow-socket is no socket)."""
    before = host_state(world)
    r = rcf.run(["--root", "--allow-socket", "/etc/hostname", "--", "true"], env={"CHILDFLOW_DEBUG": "1"})
    assert r.rc == 125, r
    assert "host change:" in r.etext and "socket" in r.etext, r
    assert_restored(world, before, timeout=0.5)


def test_host_unchanged_after_sigkill(rcf, world, sess):
    before = host_state(world)
    p, go, _ = start_waiting(rcf, sess, "kill")
    assert diff(before, host_state(world))
    os.kill(p.pid, signal.SIGKILL)
    try:
        p.communicate(timeout=10)
    finally:
        kill_tree(p)
    assert_restored(world, before)


def test_stale_state_of_a_dead_watchdog_is_collected(rcf, world, sess):
    """childflow and its watchdog both SIGKILLed: the forwarding change stays, and the next --root
    run restores it (and still leaves nothing of its own)."""
    kill_both_then_collect(rcf, world, sess, [])


def kill_both_then_collect(rcf, world, sess, args):
    before = host_state(world)
    p, go, _ = start_waiting(rcf, sess, "gc", args=args, env={"CHILDFLOW_DEBUG": "1"})
    wd = None
    deadline = time.monotonic() + 5
    buf = b""
    os.set_blocking(p.stderr.fileno(), False)
    while wd is None and time.monotonic() < deadline:
        try:
            buf += p.stderr.read() or b""
        except BlockingIOError:
            pass
        m = re.search(rb"watchdog pid (\d+)", buf)
        wd = int(m.group(1)) if m else None
        time.sleep(0.05)
    assert wd, buf[-2000:]
    os.kill(wd, signal.SIGKILL)
    os.kill(p.pid, signal.SIGKILL)
    try:
        p.communicate(timeout=10)
    finally:
        kill_tree(p)
    left = wait_until(lambda: "cfroot" not in host_state(world)["links"], 5)
    assert left
    stale = host_state(world)
    assert stale["sysctls"] != before["sysctls"], "the control: the killed watchdog restored nothing"
    if args:
        assert iface_rules(stale) and stale["routes4"] != before["routes4"], stale["rules"]
    r = rcf.run(["--root", "--", "true"], env={"CHILDFLOW_DEBUG": "1"})
    assert r.rc == 0, r
    assert "dead childflow --root run" in r.etext, r
    assert_restored(world, before, timeout=0.5)


def test_three_concurrent_runs(rcf, world, sess):
    """Three runs at once get their own links and tables; the first to end does not undo what the
    others still need (their traffic keeps flowing); after the last, nothing is left."""
    before = host_state(world)
    # remote2: remote1 refuses the host's addresses while the proxy fixture is up
    get = "curl -sS --noproxy '*' --max-time 10 -o /dev/null " + url(R2["v4"], "/index.html")
    runs = [start_waiting(rcf, sess, f"c{i}", after=get) for i in range(3)]
    try:
        during = host_state(world)
        assert len(re.findall(r"\bcfroot\d+", during["links"])) >= 3, during["links"]
        assert len(re.findall(r"table inet childflow-root\d+", during["nft"])) == 3, during["nft"]
        rc, _, err = finish(*runs[0][:2])
        assert rc == 0, err
        token = os.urandom(6).hex()
        r = rcf.run(["--root", "--"] + curl(url(R2["v4"], f"/index.html?id={token}")))
        assert r.rc == 0, r
        mid = host_state(world)
        assert shared(mid) == shared(during), (shared(during), shared(mid))
        for p, go, _ in runs[1:]:
            rc, _, err = finish(p, go)
            assert rc == 0, err
    finally:
        for p, go, _ in runs:
            if p.poll() is None:
                kill_tree(p)
    assert_restored(world, before, timeout=2)


def test_capture_child_view(rcf, world, sess):
    """-c works with --root: the child view on gw0 holds the forwarded flow, named rootful."""
    import socket
    path = os.path.join(sess.work, f"root-{os.getpid()}.pcapng")
    try:
        r = rcf.run(["--root", "-c", path, "--"] + curl("-o", "/dev/null", url(R2["v4"], "/index.html")))
        assert r.rc == 0, r
        with open(path, "rb") as f:
            data = f.read()
        assert b"backend=rootful" in data and b"interface=gw0" in data, data[:400]
        assert socket.inet_aton(R2["v4"]) in data, "no packet to the remote in the capture"
    finally:
        if os.path.exists(path):
            os.unlink(path)


CONNECT_READ = r'''
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print("banner:" + s.recv(100).decode().strip())
except OSError as e:
    print("error:" + type(e).__name__)
'''


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_host_own_services_are_refused(rcf, world, hostsvc, fam):
    """As in rootless mode, the host's own services are not the command's: a connection to the
    host's address from inside is refused at once (the control: from the host it works)."""
    addr = W.HOST_V4 if fam == "v4" else W.HOST_V6
    c = rcf.direct(py(CONNECT_READ, addr, 18002))
    assert c.text.strip() == "banner:HOSTSVC", c
    r = rcf.run(["--root", "--"] + py(CONNECT_READ, addr, 18002))
    assert r.rc == 0 and r.text.strip().startswith("error:") and r.secs < 3, r


# ---------- --iface: policy routing through the host's second uplink ----------
#
# World(uplinks=2): eth0 198.18.0.2 holds the preferred default routes, eth1 198.19.0.2 /
# 2001:db8:3::2 a second pair of metric 2000.  With --root -i eth1 the kernel routes the command's
# direct traffic out of eth1 (a per-run table and a source rule on the host) and P's DNS and proxy
# sockets are bound to eth1: each test reads, in the peer's own log, which address it saw, with
# the control of the same run without -i.

UP2 = {"v4": W.UP2_V4, "v6": W.UP2_V6}
HOSTA = {"v4": W.HOST_V4, "v6": W.HOST_V6}


@pytest.fixture(scope="module")
def world2(sess):
    """A world of its own with two uplinks (eth1 besides eth0)."""
    w = build_world(sess, "r", uplinks=2, files={"index.html": b"root-iface\n"})
    yield w
    w.down()


@pytest.fixture
def rcf2(world2, sess):
    return CF(Runner("root", sess.bins["plain"]), world2, sess.work)


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_iface_direct_tcp_leaves_through_it(rcf2, world2, fam):
    for args, want in ((["-i", "eth1"], UP2[fam]), ([], HOSTA[fam])):
        tok = os.urandom(6).hex()
        r = rcf2.run(["--root"] + args + ["--"] + curl(url(R1[fam], f"/index.html?id={tok}")), timeout=40,
                     env={"CHILDFLOW_DEBUG": "1"})
        assert r.rc == 0 and r.out == b"root-iface\n", r
        hits = world2.svc_remote1.wait_find(path=f"/index.html?id={tok}")
        assert [h["client"] for h in hits] == [want], (args, hits)
        assert re.search(r"relay: tcp 0 accepted", r.etext), r.etext[-3000:]   # routed, not relayed


def test_iface_with_strict_reverse_path_filter(rcf2, world2):
    """rp_filter=1 (strict, as many distributions set it): the replies arriving on eth1 pass the
    reverse-path check, because the rule matches the run's source address, which the kernel's
    check looks up too."""
    h = world2.host
    keys = ["net.ipv4.conf.all.rp_filter", "net.ipv4.conf.eth0.rp_filter", "net.ipv4.conf.eth1.rp_filter"]
    old = [_ns(world2, "sysctl", "-n", k).strip() for k in keys]
    world2.sysctl(h, *[f"{k}=1" for k in keys])
    try:
        tok = os.urandom(6).hex()
        r = rcf2.run(["--root", "-i", "eth1", "--"] + curl(url(R1["v4"], f"/index.html?id={tok}")), timeout=40)
        assert r.rc == 0 and r.out == b"root-iface\n", r
        hits = world2.svc_remote1.wait_find(path=f"/index.html?id={tok}")
        assert [h_["client"] for h_ in hits] == [W.UP2_V4], hits
    finally:
        world2.sysctl(h, *[f"{k}={v}" for k, v in zip(keys, old)])


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_iface_udp_leaves_through_it(rcf2, world2, fam):
    r = rcf2.run(["--root", "-i", "eth1", "--"] + py(P.UDP_ECHO, R1[fam], W.ECHO_PORT, 2), timeout=40)
    assert r.rc == 0, r
    res = json.loads(r.out)
    assert [x["ok"] for x in res["results"]] == [True] * 2, res
    for x in res["results"]:
        hits = world2.svc_remote1.wait_find(svc="udp-echo", data=x["msg"])
        assert {h["client"] for h in hits} == {UP2[fam]}, hits


@pytest.fixture(scope="module")
def res2(world2, sess):
    from test_dns import RES6, A6
    d = Dnsmasq(world2.remote["remote1"], [RES4, RES6], sess.logs, world2.prefix + "-rres2", records(A4, A6))
    yield d
    d.stop()


@pytest.mark.parametrize("fam,transport", [("v4", "udp"), ("v4", "tcp"), ("v6", "udp")])
def test_iface_dns_upstream_leaves_through_it(rcf2, res2, fam, transport):
    from test_dns import RES6
    resolver = RES4 if fam == "v4" else RES6
    for args, want in ((["-i", "eth1"], UP2[fam]), ([], HOSTA[fam])):
        name = f"{os.urandom(4).hex()}.a.test"
        before = len(res2.queries())
        r = rcf2.run(["--root"] + args + ["--dns", resolver, "--", "dig", "+time=3", "+tries=1"]
                     + (["+tcp"] if transport == "tcp" else []) + ["@203.0.113.99", name, "A"], timeout=40)
        assert r.rc == 0 and "status: " in r.text, r
        q = [l for l in res2.queries()[before:] if name in l]
        assert q and all(l.rstrip().endswith(f"from {want}") for l in q), (args, q)


@pytest.fixture(scope="module")
def px2(world2, sess):
    p = X.Proxies(world2, sess.logs).up()
    try:
        yield p
    finally:
        p.down()


def test_iface_proxy_connection_leaves_through_it(rcf2, world2, px2):
    """The connection to the proxy is P's, bound to eth1: tinyproxy logs eth1's address."""
    before = len(px2.log_text(px2.tiny_log))
    tok = os.urandom(6).hex()
    r = rcf2.run(["--root", "-i", "eth1", "-p", f"http://{X.PROXY4}:{X.TINY}", "-U", px2.user, "-P",
                  px2.password, "--"] + curl(url(R1["v4"], f"/index.html?id={tok}")), timeout=40)
    assert r.rc == 0 and r.out == b"root-iface\n", r
    hits = world2.svc_remote1.wait_find(path=f"/index.html?id={tok}")
    assert [h["client"] for h in hits] == [X.PROXY4], hits
    new = px2.log_text(px2.tiny_log)[before:]
    assert W.UP2_V4 in new and W.HOST_V4 not in new, new[-2000:]


def test_iface_bad_name_is_one_error_and_leaves_nothing(rcf2, world2):
    before = host_state(world2)
    r = rcf2.run(["--root", "-i", "nosuch0", "--", "true"], timeout=20)
    assert r.rc == 125, r
    lines = [l for l in r.etext.splitlines() if l.strip()]
    assert lines[-1] == "childflow: reason_code: iface_unusable" and len(lines) <= 3, r
    assert "nosuch0" in lines[0] and "no such network interface" in lines[0], r
    assert_restored(world2, before, timeout=0.5)


def iface_rules(state):
    return re.findall(r"^(\d+):\s+from (\S+) lookup (\d+)", state["rules"], re.M)


def test_iface_routing_restored_after_exit_failure_and_sigkill(rcf2, world2, sess):
    """The rule and the table exist while the run lives (the control), and are gone after a normal
    exit, after a setup that fails after them (exit 125), and after SIGKILL of childflow."""
    before = host_state(world2)
    assert not iface_rules(before), before["rules"]
    p, go, _ = start_waiting(rcf2, sess, "if-exit", args=["-i", "eth1"])
    during = host_state(world2)
    rules = iface_rules(during)
    assert {a for _, a, _ in rules} == {"10.241.0.2", "fdcf:f10e:7000::2"}, during["rules"]
    table = rules[0][2]
    assert f"default via {W.UP2_GW4} dev eth1" in during["routes4"] and f"table {table}" in during["routes4"]
    rc, out, err = finish(p, go)
    assert rc == 0, err[-2000:]
    assert_restored(world2, before, timeout=2)

    r = rcf2.run(["--root", "-i", "eth1", "--allow-socket", "/etc/hostname", "--", "true"],
                 env={"CHILDFLOW_DEBUG": "1"})
    assert r.rc == 125 and "host change: rule from" in r.etext, r
    assert_restored(world2, before, timeout=2)

    p, go, _ = start_waiting(rcf2, sess, "if-kill", args=["-i", "eth1"])
    assert iface_rules(host_state(world2))
    os.kill(p.pid, signal.SIGKILL)
    try:
        p.communicate(timeout=10)
    finally:
        kill_tree(p)
    assert_restored(world2, before)


def test_iface_routing_of_a_dead_watchdog_is_collected(rcf2, world2, sess):
    """childflow and its watchdog both SIGKILLed with -i: the rules and the table stay (the control),
    and the next --root run deletes them with the rest."""
    kill_both_then_collect(rcf2, world2, sess, ["-i", "eth1"])


def test_iface_concurrent_runs_have_their_own_rules(rcf2, world2, sess):
    """Two runs at once: each its own priority and table; the first to end leaves the other's
    routing in place (its traffic still leaves through eth1); after both, nothing is left."""
    before = host_state(world2)
    tok = os.urandom(6).hex()
    get = "curl -sS --noproxy '*' --max-time 10 -o /dev/null " + url(R1["v4"], f"/index.html?id={tok}")
    runs = [start_waiting(rcf2, sess, f"ifc{i}", args=["-i", "eth1"], after=get if i else "true")
            for i in range(2)]
    try:
        rules = iface_rules(host_state(world2))
        assert len({(pr, t) for pr, _, t in rules}) == 2 and len({t for _, _, t in rules}) == 2, rules
        rc, _, err = finish(*runs[0][:2])
        assert rc == 0, err
        assert len(iface_rules(host_state(world2))) == 2, host_state(world2)["rules"]   # v4 + v6 of run 2
        rc, _, err = finish(*runs[1][:2])
        assert rc == 0, err
        hits = world2.svc_remote1.wait_find(path=f"/index.html?id={tok}")
        assert [h["client"] for h in hits] == [W.UP2_V4], hits
    finally:
        for p, go, _ in runs:
            if p.poll() is None:
                kill_tree(p)
    assert_restored(world2, before, timeout=5)


def test_iface_going_down_mid_run_is_unreachable(rcf2, world2):
    """eth1 down mid-run: its routes leave the run's table, the unreachable default behind them
    answers, so new connections fail at once as unreachable (IPv4's unreachable route says "host",
    EHOSTUNREACH; IPv6's "network"), and nothing falls back to eth0."""
    from test_iface import MIDRUN, restore_eth1
    p = rcf2.popen(["--root", "-i", "eth1", "--"] + py(MIDRUN, R1["v4"], R1["v6"]), stdin=subprocess.PIPE)
    try:
        line = p.stdout.readline().decode()
        assert line.split() == ["before", "ok", "ok"], line
        world2.ip(world2.host, "link", "set", "eth1", "down")
        p.stdin.write(b"go\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=40)
    except BaseException:
        kill_tree(p)
        raise
    finally:
        restore_eth1(world2)
    words = out.decode().split()
    assert words[:1] == ["after"], (out, err)
    unreach = ("ENETUNREACH", "EHOSTUNREACH")
    for w in words[1:3]:
        code, secs = w.split(":")
        assert code in unreach and float(secs) < 3, (out, err)
    assert words[3] in unreach and words[4] in unreach, (out, err)


# ---------- the uplink's addresses against the host's ----------

def test_uplink_range_taken_by_a_host_route(rcf, world):
    """A host route over slot 0's /30 makes --root take another slot; one over the whole range is
    one clear error (the doctor's words, exit 125) that names the route, and nothing is left."""
    h = world.host
    world.ip(h, "route", "add", "10.241.0.0/30", "dev", "eth0")
    try:
        r = rcf.run(["--root", "--", "true"], env={"CHILDFLOW_DEBUG": "1"})
        assert r.rc == 0 and "link cfroot1" in r.etext, r
    finally:
        world.ip(h, "route", "del", "10.241.0.0/30", "dev", "eth0", check=False)
    world.ip(h, "route", "add", "10.240.0.0/15", "dev", "eth0")
    try:
        before = host_state(world)
        r = rcf.run(["--root", "--", "true"])
        assert r.rc == 125, r
        lines = [l for l in r.etext.splitlines() if l.strip()]
        assert lines[-1] == "childflow: reason_code: root_uplink_in_use", r
        assert "10.241.0.0/16" in lines[0] and "10.240.0.0/15 dev eth0" in lines[0], r
        assert lines[1].startswith("childflow: fix:"), r
        assert_restored(world, before, timeout=0.5)
        d = rcf.run(["--doctor", "--root"])
        assert "10.240.0.0/15" in d.text + d.etext, d
    finally:
        world.ip(h, "route", "del", "10.240.0.0/15", "dev", "eth0", check=False)


# ---------- capture views under --root: the host's frames of the routed flows ----------
#
# The tree's direct flows are routed and masqueraded by the host kernel; the egress views hold their
# real frames on the host's uplink (picked by the host's conntrack events: original source = the
# uplink's G end, matched by the reply tuple), plus the relay's own sockets (here the DNS upstream).
# The negative control: at the same time, the host itself talks to the same remote, by TCP and UDP,
# through the same interface; none of it may be in the file.

def _cap_read(path):
    from test_capture import read_ok
    return read_ok(path, ())


def _cap_fields(path, flt, *names):
    from test_capture import fields
    return fields(path, flt, *names)


def run_with_host_traffic(rcf, world, sess, view, fam="v4", extra=(), tag="cap"):
    """childflow --root -c FILE -C VIEW running an HTTP request, a UDP echo and a DNS query (through
    --dns) while the host makes its own HTTP request and UDP echo to the same remote.
    Return: (path, token, the host's UDP port)."""
    rem = R2[fam]
    token = os.urandom(6).hex()
    path = os.path.join(sess.work, f"root-{tag}-{os.getpid()}.pcapng")
    script = (f"sleep 0.6; curl -sS --noproxy '*' --max-time 20 -o /dev/null {url(rem, '/index.html?id=' + token)} "
              f"&& {shlex.join(py(P.UDP_ECHO, rem, W.ECHO_PORT, 1))} >/dev/null && "
              f"(dig +time=1 +tries=1 cap-{token}.test >/dev/null; true) && sleep 1.5")
    p = rcf.popen(["--root", "-c", path, "-C", view, "--dns", R2["v4"]] + list(extra) + ["--", "sh", "-c", script])
    try:
        time.sleep(0.8)
        hr = subprocess.run(["ip", "netns", "exec", world.host] + curl("-o", "/dev/null", "-w", "%{http_code}",
                            url(rem, f"/index.html?host={token}")), capture_output=True, timeout=30)
        assert hr.stdout == b"200", hr
        uh = subprocess.run(["ip", "netns", "exec", world.host] + py(P.UDP_ECHO, rem, W.ECHO_PORT, 2),
                            capture_output=True, timeout=30)
        assert uh.returncode == 0, uh
        assert p.poll() is None, ("the command ended before the host's traffic: not concurrent",
                                  p.returncode, p.stderr.read()[-2000:])
        out, err = p.communicate(timeout=60)
    except BaseException:
        kill_tree(p)
        if os.path.exists(path):
            os.unlink(path)
        raise
    assert p.returncode == 0, (out, err)
    assert world.svc_remote2.wait_find(path=f"/index.html?host={token}"), "the host's request never arrived"
    assert world.svc_remote2.wait_find(path=f"/index.html?id={token}"), "the tree's request never arrived"
    return path, token, json.loads(uh.stdout.decode().strip().split("\n")[-1])["local"][1]


def assert_routed_flows(path, token, host_udp, fam, iface="eth0", src=None):
    """The tree's HTTP request and UDP echo as the host's uplink carried them (the host's address
    after NAT, the real remote), nothing of the host's own flows, nothing of the pre-NAT addresses."""
    rem = R2[fam]
    src = src or (W.HOST_V4 if fam == "v4" else W.HOST_V6)
    ip = "ip" if fam == "v4" else "ipv6"
    reqs = _cap_fields(path, f"http.request && frame.interface_name==\"{iface}\"", f"{ip}.src", f"{ip}.dst",
                       "http.request.uri")
    assert reqs == [[src, rem, f"/index.html?id={token}"]], reqs
    assert not _cap_fields(path, "http.request.uri contains \"host=\"", "frame.number")
    # the whole connection, from its first SYN (as the host's kernel sent it) to its end
    assert _cap_fields(path, f"frame.interface_name==\"{iface}\" && tcp.flags.syn==1 && tcp.flags.ack==0",
                       f"{ip}.src", f"{ip}.dst") == [[src, rem]]
    assert _cap_fields(path, f"frame.interface_name==\"{iface}\" && tcp.flags.fin==1", "frame.number")
    streams = {r[0] for r in _cap_fields(path, f"frame.interface_name==\"{iface}\" && tcp", "tcp.stream")}
    assert len(streams) == 1, streams
    # the tree's UDP echo, masqueraded; not the host's (its own port)
    ports = {tuple(r) for r in _cap_fields(path, f"frame.interface_name==\"{iface}\" && udp.port=={W.ECHO_PORT}",
                                             f"{ip}.src", "udp.srcport", "udp.dstport")}
    assert ports and all(str(host_udp) not in pr[1:] for pr in ports), (ports, host_udp)
    assert {pr[0] for pr in ports} <= {src, rem}, ports
    # no frame of the tree's pre-NAT addresses (the child's, the uplink's) on the host's egress
    assert not _cap_fields(path, f"frame.interface_name==\"{iface}\" && (ip.addr==10.240.0.0/15 || "
                           "ipv6.addr==fdcf:f10e:7000::/48 || ipv6.addr==fd42:6368:696c::/48)", "frame.number")


def rdesc(view, kind, ifname):
    return f"childflow view={view} backend=rootful kind={kind} interface={ifname}"


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_capture_wire_egress_has_the_routed_flows_only(rcf, world, sess, fam):
    """-C wire-egress with --root: the real frames on the host's eth0 of the tree's routed (kernel-
    forwarded, masqueraded) flows and of the relay's DNS upstream query; nothing of the host's own."""
    path, token, host_udp = run_with_host_traffic(rcf, world, sess, "wire-egress", fam, tag=f"wire-{fam}")
    try:
        s = _cap_read(path)
        descs = {i["desc"] for i in s["idb"]}
        assert rdesc("wire-egress", "wire", "eth0") in descs, descs
        assert not any("cfroot" in d for d in descs), descs   # its frames are pre-NAT: none of ours
        assert_routed_flows(path, token, host_udp, fam)
        # the relay's own socket (DNS upstream) as in rootless mode
        assert _cap_fields(path, f"dns.qry.name==\"cap-{token}.test\" && ip.src=={W.HOST_V4}", "frame.number")
        assert not _cap_fields(path, "!(tcp || udp)", "frame.number")
    finally:
        os.unlink(path)


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_capture_wire_egress_has_the_routed_pings(rcf, world, sess, fam):
    """-C wire-egress with --root: the tree's ping, routed and masqueraded by the host, as the host's
    eth0 carried it (picked by its ICMP echo conntrack entry): its 2 requests from the host's address
    and their 2 replies; the host's own ping to the same remote at the same time is absent."""
    from test_capture import assert_tree_echo, echo_rows, run_ping_with_host_ping
    path = os.path.join(sess.work, f"root-ping-{fam}-{os.getpid()}.pcapng")
    try:
        run_ping_with_host_ping(rcf, world, ["--root", "-c", path, "-C", "wire-egress"], R2[fam])
        s = _cap_read(path)
        assert rdesc("wire-egress", "wire", "eth0") in {i["desc"] for i in s["idb"]}, s["idb"]
        assert_tree_echo(echo_rows(path, fam, " && frame.interface_name==\"eth0\""), fam,
                         W.HOST_V4 if fam == "v4" else W.HOST_V6, R2[fam])
        # and nothing of the tree's pre-NAT addresses on the host's egress
        assert not _cap_fields(path, "ip.addr==10.240.0.0/15 || ipv6.addr==fdcf:f10e:7000::/48 || "
                               "ipv6.addr==fd42:6368:696c::/48", "frame.number")
    finally:
        if os.path.exists(path):
            os.unlink(path)


def test_capture_egress_is_captured_for_routed_flows(rcf, world, sess):
    """-C egress with --root: the routed flows as the host sent them (kind=captured, the real frames
    after NAT), the relay's DNS upstream query reconstructed (kind=reconstructed); nothing of the
    host's own traffic."""
    path, token, host_udp = run_with_host_traffic(rcf, world, sess, "egress", tag="egress")
    try:
        s = _cap_read(path)
        descs = [i["desc"] for i in s["idb"]]
        assert descs[0] == rdesc("egress", "reconstructed", "egress"), descs
        assert rdesc("egress", "captured", "eth0") in descs, descs
        assert not any("view=child" in d or "view=wire-egress" in d for d in descs), descs
        assert_routed_flows(path, token, host_udp, "v4")
        assert _cap_fields(path, f"frame.interface_name==\"egress\" && dns.qry.name==\"cap-{token}.test\" && "
                           f"ip.src=={W.HOST_V4}", "frame.number")
    finally:
        os.unlink(path)


def test_capture_both_has_child_and_egress(rcf, world, sess):
    """-C both with --root: the child's view on gw0 and the egress view in one file; the same request
    from the child's address on gw0 and from the host's address on eth0."""
    path, token, host_udp = run_with_host_traffic(rcf, world, sess, "both", tag="both")
    try:
        s = _cap_read(path)
        descs = [i["desc"] for i in s["idb"]]
        assert descs[:2] == ["childflow view=child backend=rootful kind=isolated interface=gw0",
                             rdesc("egress", "reconstructed", "egress")], descs
        assert rdesc("egress", "captured", "eth0") in descs, descs
        assert len(s["isb"]) == len(s["idb"]), (s["isb"], s["idb"])
        rows = _cap_fields(path, "http.request", "frame.interface_name", "ip.src", "ip.dst")
        # gw0 is bridged to the uplink: the child has its slot's address, 10.241.x.(4k+2)
        gw0 = [r for r in rows if r[0] == "gw0"]
        assert len(gw0) == 1 and gw0[0][2] == R2["v4"], rows
        slot_addr = ipaddress.ip_address(gw0[0][1])
        assert slot_addr in ipaddress.ip_network("10.241.0.0/16") and int(slot_addr) % 4 == 2, rows
        assert sorted(map(tuple, rows)) == [("eth0", W.HOST_V4, R2["v4"]), ("gw0", str(slot_addr), R2["v4"])], rows
        assert_routed_flows(path, token, host_udp, "v4")
    finally:
        os.unlink(path)


def test_capture_wire_egress_follows_iface(rcf2, world2, sess):
    """-C wire-egress with --root -i eth1 (the second uplink): the routed flows are on eth1 from its
    address; the host's own traffic (default route: eth0) and nothing else of theirs is there."""
    path, token, host_udp = run_with_host_traffic(rcf2, world2, sess, "wire-egress", extra=("-i", "eth1"),
                                                  tag="wire-i")
    try:
        assert_routed_flows(path, token, host_udp, "v4", iface="eth1", src=W.UP2_V4)
        assert not _cap_fields(path, "frame.interface_name==\"eth0\" && tcp", "frame.number")
    finally:
        os.unlink(path)


# ---------- what --root's direct traffic may not do (red team 3: G1, G2) ----------

SNIFF = r'''
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003)); s.settimeout(0.2)
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try: pkt, addr = s.recvfrom(65535)
    except socket.timeout: continue
    if addr[2] == socket.PACKET_OUTGOING or b"CFLEAK" not in pkt: continue
    i = pkt.index(b"CFLEAK")
    tag = pkt[i:i + 12].decode(errors="replace")
    if pkt[12:14] == b"\x08\x00":
        print("%s %s %s" % (tag, socket.inet_ntoa(pkt[26:30]), addr[0]), flush=True)
    elif pkt[12:14] == b"\x86\xdd":
        print("%s %s %s" % (tag, socket.inet_ntop(socket.AF_INET6, pkt[22:38]), addr[0]), flush=True)
'''

# The command (root inside, so CAP_NET_RAW) sends what conntrack marks INVALID: UDP with a bad
# checksum and (IPv4) a TCP segment with SYN|FIN|RST; and a normal datagram, the control.
LEAK = r'''
import socket, struct, sys, time
fam, dst = sys.argv[1], sys.argv[2]
af = socket.AF_INET6 if fam == "v6" else socket.AF_INET
socket.socket(af, socket.SOCK_DGRAM).sendto(b"CFLEAK-good", (dst, 9999))
time.sleep(0.5)   # neighbour discovery done
s = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_UDP)
p = b"CFLEAK-csum"
for i in range(3):
    s.sendto(struct.pack("!HHHH", 40000, 9999, 8 + len(p), 0x1234) + p, (dst, 0))
if fam == "v4":
    t = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_TCP)
    t.sendto(struct.pack("!HHIIBBHHH", 40001, 80, 1, 0, 5 << 4, 0x07, 1024, 0, 0) + b"CFLEAK-flag", (dst, 0))
else:   # ICMPv6 that conntrack leaves untracked: a neighbour solicitation and an MLD report, to a remote
    i = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    i.sendto(struct.pack("!BBHI", 135, 0, 0, 0) + socket.inet_pton(af, dst) + bytes([200, 2]) + b"CFLEAK-nsol\0\0\0",
             (dst, 0))
    i.sendto(struct.pack("!BBHHH", 131, 0, 0, 0, 0) + socket.inet_pton(af, "ff05::1:3") + b"CFLEAK-mld1", (dst, 0))
time.sleep(0.5)
print("sent")
'''


def sniffed(w, run, secs=12):
    """What the world's router receives (tag, source, interface) while `run()` runs."""
    s = subprocess.Popen(["ip", "netns", "exec", w.router, "/usr/bin/python3", "-c", SNIFF, str(secs)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert s.stdout.readline().strip() == "ready", s.stderr.read()
        r = run()
        out, _ = s.communicate(timeout=secs + 10)
    finally:
        if s.poll() is None:
            kill_tree(s)
    # from the host's side only (h0, h1): not the remote's ICMP errors quoting a datagram
    return r, [t for t in (tuple(l.split()) for l in out.splitlines()) if t[2] in ("h0", "h1")]


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_invalid_packets_do_not_leave_unmasqueraded(rcf, world, fam):
    """G1: a packet conntrack marks INVALID (or, IPv6, leaves untracked: neighbour discovery, MLD) has
    no NAT entry: it must be dropped, not forwarded with the tree's own source (the control: the
    normal datagram leaves, with the host's address)."""
    r, seen = sniffed(world, lambda: rcf.run(["--root", "--"] + py(LEAK, fam, R1[fam]), timeout=30))
    assert r.rc == 0 and "sent" in r.text, r
    assert ("CFLEAK-good", HOSTA[fam], "h0") in seen, seen
    assert [x for x in seen if x[0] != "CFLEAK-good"] == [], seen


def test_invalid_packets_do_not_bypass_iface(rcf2, world2):
    """G1 with -i: nothing leaves through eth0 (h0 at the router), and nothing with a private source."""
    r, seen = sniffed(world2, lambda: rcf2.run(["--root", "-i", "eth1", "--"] + py(LEAK, "v4", R1["v4"]),
                                               timeout=40))
    assert r.rc == 0 and "sent" in r.text, r
    assert seen == [("CFLEAK-good", W.UP2_V4, "h1")], seen


# A datagram to port 53 bigger than the link's MTU leaves the child as fragments; only the first
# carries the UDP header.  With a control datagram to another port, as in LEAK.
FRAG = r'''
import socket, sys, time
fam, dst = sys.argv[1], sys.argv[2]
af = socket.AF_INET6 if fam == "v6" else socket.AF_INET
s = socket.socket(af, socket.SOCK_DGRAM)
s.sendto(b"CFLEAK-good", (dst, 9999))
time.sleep(0.5)
s.sendto(b"CFLEAK-frg1" + b"x" * 65478 + b"CFLEAK-frg2", (dst, 53))   # 65,500 bytes
time.sleep(1.0)
print("sent")
'''


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_fragmented_dns_is_not_bridged_direct(rcf, world, fam):
    """The bridge sends fragments up to the interception namespace, which reassembles them: a
    fragmented datagram to port 53 reaches the DNS forwarder (which counts it dropped or malformed),
    and none of its fragments leave the host; the control datagram does."""
    r, seen = sniffed(world, lambda: rcf.run(["--root", "--"] + py(FRAG, fam, R1[fam]), timeout=30,
                                             env={"CHILDFLOW_DEBUG": "1"}))
    assert r.rc == 0 and "sent" in r.text, r
    assert seen == [("CFLEAK-good", HOSTA[fam], "h0")], seen
    m = re.search(r"dns: (\d+) dropped, (\d+) malformed", r.etext)
    assert m and int(m.group(1)) + int(m.group(2)) == 1, r.etext


# The internet checksum, for the child programs below that build their own packets.
CSUM = r'''
import struct
def csum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
'''


def monitored(world, objects, run):
    """`ip monitor OBJECTS` in the host's namespace while `run()` runs: (its result, what was seen)."""
    mon = subprocess.Popen(["ip", "-n", world.host, "monitor"] + objects,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        time.sleep(0.3)
        r = run()
        time.sleep(0.5)
    finally:
        kill_tree(mon)
    return r, mon.communicate(timeout=10)[0]


# The command (root inside, so CAP_NET_RAW) plays router on its link: router advertisements to
# all nodes, hop limit 255, from a link-local source, with a default route and a SLAAC prefix; and
# an ICMPv6 redirect to the host's end.  The bridge carries the child's frames to the host's link
# as they were sent, so the host must be the one to ignore them.
ROGUE_RA = CSUM + r'''
import socket, struct, time
idx = socket.if_nametoindex("eth0")
src, dst = socket.inet_pton(socket.AF_INET6, "fe80::cf:1"), socket.inet_pton(socket.AF_INET6, "ff02::1")
def icmp6(body, d):
    c = csum(src + d + struct.pack("!I3xB", len(body), 58) + body)
    body = body[:2] + struct.pack("!H", c) + body[4:]
    return struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + src + d + body
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
ra += struct.pack("!BBBBIII", 3, 4, 64, 0xc0, 86400, 14400, 0) + socket.inet_pton(socket.AF_INET6, "2001:db8:ca7::")
host = socket.inet_pton(socket.AF_INET6, "ff02::1")
redirect = struct.pack("!BBHI", 137, 0, 0, 0) + socket.inet_pton(socket.AF_INET6, "fe80::cf:2") + \
    socket.inet_pton(socket.AF_INET6, "2001:db8:ca7::99")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
for i in range(3):
    s.sendto(icmp6(ra, dst), ("ff02::1", 0, 0, idx))
    s.sendto(icmp6(redirect, host), ("ff02::1", 0, 0, idx))
    time.sleep(0.3)
print("sent")
'''


def test_child_router_advertisements_do_not_reach_the_host(rcf, world):
    """The command, root in its namespace, cannot make the host take it for a router: its router
    advertisements (default route, SLAAC prefix) and redirects change none of the host's routes or
    addresses while it runs (`ip monitor` in the host's namespace)."""
    r, out = monitored(world, ["route", "address"], lambda: rcf.run(["--root", "--"] + py(ROGUE_RA), timeout=30))
    assert r.rc == 0 and "sent" in r.text, r
    assert not [l for l in out.splitlines() if "proto ra" in l or "2001:db8:ca7" in l or "default" in l], out


# The host has a UDP flow of its own to remote1 (port 40000 -> 7, both families); the command sends
# the host ICMP errors that quote it: "fragmentation needed, MTU 576" and "packet too big, MTU 1280".
HOSTFLOW = r'''
import socket, sys, time
ss = []
for af, d in ((socket.AF_INET, sys.argv[1]), (socket.AF_INET6, sys.argv[2])):
    s = socket.socket(af, socket.SOCK_DGRAM)
    if af == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("0.0.0.0" if af == socket.AF_INET else "::", 40000))
    s.sendto(b"hostflow", (d, 7))
    ss.append(s)
print("ready", flush=True)
time.sleep(float(sys.argv[3]))
'''
FORGED_PMTU = CSUM + r'''
import socket, struct, sys, time
h4, h6, r4, r6 = sys.argv[1:5]
me4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
me4.connect((h4, 9))
me6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
me6.connect((h6, 9))
me4.send(b"x"); me6.send(b"x")   # the gateway's MAC, learnt
time.sleep(0.3)
print("up", flush=True)
sys.stdin.readline()   # the host's flow exists now (conntrack runs in the host once --root's table is in)
src4, src6 = socket.inet_aton(me4.getsockname()[0]), socket.inet_pton(socket.AF_INET6, me6.getsockname()[0])
gwmac = None
for l in open("/proc/net/arp").read().splitlines()[1:]:
    f = l.split()
    if f[5] == "eth0" and f[3] != "00:00:00:00:00:00":
        gwmac = bytes.fromhex(f[3].replace(":", ""))
mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
ps.bind(("eth0", 0))
udp = struct.pack("!HHHH", 40000, 7, 16, 0) + b"hostflow"
inner4 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(h4), socket.inet_aton(r4))
inner4 = inner4[:10] + struct.pack("!H", csum(inner4)) + inner4[12:] + udp
m = struct.pack("!BBHHH", 3, 4, 0, 0, 576) + inner4
m = m[:2] + struct.pack("!H", csum(m)) + m[4:]
outer = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(m), 2, 0, 64, 1, 0, src4, socket.inet_aton(h4))
outer = outer[:10] + struct.pack("!H", csum(outer)) + outer[12:]
ps.send(gwmac + mac + b"\x08\x00" + outer + m)
d6 = socket.inet_pton(socket.AF_INET6, h6)
inner6 = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + d6 + socket.inet_pton(socket.AF_INET6, r6) + udp
m6 = struct.pack("!BBHI", 2, 0, 0, 1280) + inner6
c = csum(src6 + d6 + struct.pack("!I3xB", len(m6), 58) + m6)
m6 = m6[:2] + struct.pack("!H", c) + m6[4:]
ps.send(gwmac + mac + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, len(m6), 58, 64) + src6 + d6 + m6)
time.sleep(0.5)
print("sent", flush=True)
time.sleep(3)   # the host is looked at while the run lasts (its end flushes the route cache)
'''


def test_forged_errors_about_the_hosts_own_flows_are_refused(rcf, world):
    """The command cannot lower the host's path MTU to a remote (a route exception that would outlive
    the run) with ICMP errors that quote one of the host's own flows: they are related to the host's
    conntrack entry, not to a flow of the tree's, and the host's input chain refuses them."""
    flow = None
    p = rcf.popen(["--root", "--"] + py(FORGED_PMTU, W.HOST_V4, W.HOST_V6, R1["v4"], R1["v6"]),
                  stdin=subprocess.PIPE)
    try:
        try:
            assert p.stdout.readline().decode().strip() == "up", p.stderr.read()
            flow = subprocess.Popen(["ip", "netns", "exec", world.host, "/usr/bin/python3", "-c", HOSTFLOW,
                                     R1["v4"], R1["v6"], "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
            assert flow.stdout.readline().strip() == "ready", flow.stderr.read()
            p.stdin.write(b"go\n")
            p.stdin.flush()
            line = p.stdout.readline().decode().strip()
            got4 = _ns(world, "ip", "-4", "route", "get", R1["v4"])
            got6 = _ns(world, "ip", "-6", "route", "get", R1["v6"])
            out, err = p.communicate(timeout=30)
        finally:
            kill_tree(p)
        assert line == "sent" and p.returncode == 0, (line, p.returncode, err)
        assert "mtu" not in got4 and "mtu" not in got6, (got4, got6)
    finally:
        if flow:
            kill_tree(flow)
        _ns(world, "ip", "-4", "route", "flush", "cache")
        _ns(world, "ip", "-6", "route", "flush", "cache")


# Frames with another sender's address, to the host's end of the link: ARP requests and neighbour
# solicitations whose sender is not the child (the host would learn a neighbour entry for it).
SPOOF_NEIGH = CSUM + r'''
import socket, struct, time
mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
gw4 = None
for l in open("/proc/net/route").read().splitlines()[1:]:
    f = l.split()
    if f[1] == "00000000":
        gw4 = struct.pack("<I", int(f[2], 16))
gw6 = None
for l in open("/proc/net/if_inet6"):
    f = l.split()
    if f[5] == "eth0" and f[3] == "00":
        gw6 = bytes.fromhex(f[0][:-1] + "1")
ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
ps.bind(("eth0", 0))
for spa in ("198.51.100.77", "10.9.9.9"):
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton(spa) + b"\0" * 6 + gw4
    ps.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
for src in ("2001:db8:100::77", "2001:db8:2::1"):
    src = socket.inet_pton(socket.AF_INET6, src)
    dst = bytes.fromhex("ff0200000000000000000001ff") + gw6[13:]
    ns = struct.pack("!BBHI", 135, 0, 0, 0) + gw6 + bytes([1, 1]) + mac
    c = csum(src + dst + struct.pack("!I3xB", len(ns), 58) + ns)
    ns = ns[:2] + struct.pack("!H", c) + ns[4:]
    ps.send(b"\x33\x33" + dst[12:] + mac + b"\x86\xdd" + struct.pack("!IHBB", 6 << 28, len(ns), 58, 255) + src + dst + ns)
time.sleep(1)
print("sent")
'''


def test_spoofed_neighbours_are_not_learnt_by_the_host(rcf, world):
    """The command's ARP requests and neighbour solicitations with another sender's address make no
    neighbour entry in the host's namespace (`ip monitor neigh` during the run)."""
    r, out = monitored(world, ["neigh"], lambda: rcf.run(["--root", "--"] + py(SPOOF_NEIGH), timeout=30))
    assert r.rc == 0 and "sent" in r.text, r
    spoofed = ("198.51.100.77", "10.9.9.9", "2001:db8:100::77", "2001:db8:2::1 ")
    assert not [l for l in out.splitlines() if "cfroot" in l and any(a in l for a in spoofed)], out


@pytest.fixture
def metadata(world):
    """169.254.169.254 served by remote2 (its HTTP server listens on every address), routed to it."""
    rem = world.remote["remote2"]
    world.ip(rem, "addr", "add", "169.254.169.254/32", "dev", "lo")
    try:
        world.ip(world.router, "route", "add", "169.254.169.254/32", "via", R2["v4"])
        try:
            yield "169.254.169.254"
        finally:
            world.ip(world.router, "route", "del", "169.254.169.254/32", check=False)
    finally:
        world.ip(rem, "addr", "del", "169.254.169.254/32", "dev", "lo", check=False)


def test_cloud_metadata_is_refused(rcf, metadata):
    """G2: as in rootless mode, link-local 169.254/16 (cloud metadata) is refused at once (the
    control: from the host itself, and to a normal remote from --root, it answers)."""
    get = curl("-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url(metadata, "/index.html"))
    c = rcf.direct(get)
    assert c.text == "200", c
    r = rcf.run(["--root", "--"] + get)
    assert r.rc != 0 and r.text != "200" and r.secs < 4, r
    ok = rcf.run(["--root", "--"] + curl("-o", "/dev/null", "-w", "%{http_code}", url(R2["v4"], "/index.html")))
    assert ok.text == "200", ok


def test_host_own_ipv6_address_does_not_answer_echo(rcf, world):
    """G2: ICMPv6 to the host itself is neighbour discovery only: its own address does not answer
    ping, as IPv4 does not (the control: a remote answers, so ICMPv6 echo is routed)."""
    ok = rcf.run(["--root", "--", "ping", "-6", "-c1", "-W3", R2["v6"]])
    assert ok.rc == 0, ok
    for addr in (W.HOST_V6, W.HOST_V4):
        r = rcf.run(["--root", "--", "ping", "-c1", "-W2", addr])
        assert r.rc != 0 and " 0% packet loss" not in r.text, (addr, r)


# ---------- records of dead namespaces (red team 3: G7) ----------

COOKIE = ("import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
          "print(int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 71, 8), 'little'))")   # SO_NETNS_COOKIE


def ns_identity(ns):
    """(dev, ino, cookie) of network namespace `ns`."""
    out = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                          f"stat -L -c '%d %i' /proc/self/ns/net; /usr/bin/python3 -c \"{COOKIE}\""],
                         check=True, timeout=20, stdout=subprocess.PIPE, text=True).stdout.split()
    return tuple(int(x) for x in out)


def plant_record(dev, ino, cookie, body):
    """A record as a dead run leaves it (nobody holds its lock), under the directory's lock as
    childflow takes it.  Return: its path (the caller removes it if it is still there)."""
    import fcntl
    for _ in range(50):
        os.makedirs(STATE_DIR, mode=0o700, exist_ok=True)
        try:
            dfd = os.open(STATE_DIR, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(dfd, fcntl.LOCK_EX)
            try:
                if os.stat(STATE_DIR).st_ino != os.fstat(dfd).st_ino:
                    continue   # removed by the last run to leave meanwhile
            except FileNotFoundError:
                continue
            for n in range(100):
                path = os.path.join(STATE_DIR, f"slot-{5000 + (os.getpid() % 1000) * 100 + n}")
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(f"# childflow --root, pid 999999, netns {dev}:{ino}\nnetns {dev} {ino} {cookie}\n"
                            + body)
                return path
            raise AssertionError("no free name for a planted record")
        finally:
            os.close(dfd)
    raise AssertionError(f"cannot lock {STATE_DIR}")


def remove_planted(paths):
    for p in paths:
        if os.path.exists(p):
            os.unlink(p)


def test_record_of_a_reused_inode_is_not_restored(rcf, world):
    """A dead run's record of a namespace whose inode the host's namespace now has (the kernel
    reuses them), told apart by the netns cookie: deleted, and nothing of it is written into the
    wrong namespace (the old behaviour: its sysctl was "restored" here)."""
    dev, ino, cookie = ns_identity(world.host)
    path = "/proc/sys/net/ipv4/conf/lo/forwarding"
    old = _ns(world, "cat", path).strip()
    want = "0" if old == "1" else "1"
    planted = [plant_record(dev, ino, cookie ^ (1 << 62), f"{path} {want}\n")]
    try:
        r = rcf.run(["--root", "--", "true"], env={"CHILDFLOW_DEBUG": "1"})
        assert r.rc == 0, r
        assert _ns(world, "cat", path).strip() == old, "a dead namespace's value was written here"
        assert not os.path.exists(planted[0]), r.etext[-2000:]
        assert "namespace that is gone" in r.etext, r.etext[-2000:]
    finally:
        remove_planted(planted)
        world.sysctl(world.host, f"net.ipv4.conf.lo.forwarding={old}", check=False)


def test_records_of_gone_namespaces_are_deleted(rcf, world, sess):
    """Dead runs' records: of a namespace that no longer exists, deleted (their slot is free again);
    of a live namespace with another cookie (its inode reused), deleted; of a live namespace,
    left to a run there.  And a live run's own record names its namespace's cookie."""
    live, gone = f"{world.prefix}-g7a", f"{world.prefix}-g7b"
    planted = []
    try:
        for ns in (live, gone):
            subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
        idl, idg = ns_identity(live), ns_identity(gone)
        subprocess.run(["ip", "netns", "del", gone], check=True, timeout=10)
        body = "/proc/sys/net/ipv4/conf/all/forwarding 0\n"
        keep = plant_record(*idl, body)
        planted += [keep, plant_record(*idg, body), plant_record(idl[0], idl[1], idl[2] + 1, body)]
        r = rcf.run(["--root", "--", "true"], env={"CHILDFLOW_DEBUG": "1"})
        assert r.rc == 0, r
        assert [os.path.exists(p) for p in planted] == [True, False, False], r.etext[-3000:]

        hid = ns_identity(world.host)
        p, go, _ = start_waiting(rcf, sess, "g7")
        try:
            recs = []
            for name in os.listdir(STATE_DIR):
                try:
                    with open(os.path.join(STATE_DIR, name)) as f:
                        recs.append(f.read())
                except FileNotFoundError:
                    pass
            mine = [t for t in recs if t.startswith(f"# childflow --root, pid {p.pid},")]
            assert len(mine) == 1, recs
            assert mine[0].splitlines()[:2] == [f"# childflow --root, pid {p.pid}, netns {hid[0]}:{hid[1]}",
                                                f"netns {hid[0]} {hid[1]} {hid[2]}"], mine
        finally:
            rc, _, err = finish(p, go)
        assert rc == 0, err
    finally:
        remove_planted(planted)
        for ns in (live, gone):
            subprocess.run(["ip", "netns", "del", ns], timeout=10, stderr=subprocess.DEVNULL)
