"""-i/--iface without --root: every upstream socket of childflow is bound to the interface.

The world has two uplinks (world.py, uplinks=2): eth0 198.18.0.2 (the default routes) and eth1
198.19.0.2 / 2001:db8:3::2 to the same router.  Traffic that leaves through eth1 reaches the remotes
from eth1's address, so each test reads, in the peer's own log, which address the peer saw: the
remote's HTTP and UDP echo servers, a dnsmasq on remote1 (the --dns resolver), the proxies' logs.
Every test also has its control: the same run without -i is seen from eth0's address.
"""
import os
import re
import secrets
import subprocess
import time

import pytest

import proxies as X
import world as W
from cfutil import CF, curl, kill_tree, py, url
from test_dns import Dnsmasq, records, RES4, RES6, A4, A6

R1 = W.REMOTES["remote1"]
EXIT_SETUP = 125
SRC = {"v4": W.UP2_V4, "v6": W.UP2_V6}      # what a peer sees through eth1
DEFAULT_SRC = {"v4": W.HOST_V4, "v6": W.HOST_V6}


@pytest.fixture(scope="module")
def world2(sess):
    w = W.World(f"cfw{os.getpid()}i", v6=True, uplinks=2)
    try:
        w.up()
    except W.RangeClash as e:
        pytest.exit(str(e), returncode=1)
    try:
        w.start_remote_servers(sess.logs, {"index.html": b"iface\n"})
        yield w
    finally:
        w.down()


@pytest.fixture
def cf2(runner, world2, sess):
    return CF(runner, world2, sess.work)


@pytest.fixture(scope="module")
def res(world2, sess):
    d = Dnsmasq(world2.remote["remote1"], [RES4, RES6], sess.logs, world2.prefix + "-res", records(A4, A6))
    yield d
    d.stop()


def one_error_line(r):
    """A failed setup's explanation (the doctor's): what is wrong and the fix, as one string; then
    the reason code."""
    lines = [l for l in r.etext.splitlines() if l.strip()]
    assert 2 <= len(lines) <= 3 and lines[-1] == "childflow: reason_code: iface_unusable", r
    return " ".join(lines[:-1])


def restore_eth1(w):
    """eth1 up again with its addresses and routes (IPv6 loses its address while the link is down,
    both families their routes through it)."""
    w.ip(w.host, "link", "set", "eth1", "up")
    w.ip(w.host, "addr", "replace", f"{W.UP2_V4}/24", "dev", "eth1")
    w.ip(w.host, "addr", "replace", f"{W.UP2_V6}/64", "dev", "eth1", "nodad")
    w.ip(w.host, "route", "replace", "default", "via", W.UP2_GW4, "dev", "eth1", "metric", "2000")
    w.ip(w.host, "-6", "route", "replace", "default", "via", W.UP2_GW6, "dev", "eth1", "metric", "2000")


def test_world_has_two_uplinks_and_prefers_eth0(world2):
    """The test world itself: eth1 exists with its addresses and a default route of higher metric;
    the host's traffic goes out of eth0 unless something binds it to eth1."""
    a = world2.ip(world2.host, "-o", "addr", "show", "dev", "eth1").stdout.decode()
    assert W.UP2_V4 + "/24" in a and W.UP2_V6 + "/64" in a, a
    for fam in ("v4", "v6"):
        g = world2.ip(world2.host, "route", "get", R1[fam]).stdout.decode()
        assert "dev eth0" in g and f"src {DEFAULT_SRC[fam]}" in g, g
        g = world2.ip(world2.host, "route", "get", R1[fam], "oif", "eth1").stdout.decode()
        assert "dev eth1" in g and f"src {SRC[fam]}" in g, g


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_direct_tcp_leaves_through_iface(cf2, world2, fam):
    tok = secrets.token_hex(6)
    r = cf2.run(["-i", "eth1", "--"] + curl(url(R1[fam], f"/index.html?id={tok}")), timeout=40)
    assert r.rc == 0 and r.out == b"iface\n", r
    hits = world2.svc_remote1.wait_find(path=f"/index.html?id={tok}")
    assert [h["client"] for h in hits] == [SRC[fam]], hits
    # the control: without -i the same request leaves through eth0
    tok = secrets.token_hex(6)
    r = cf2.run(["--"] + curl(url(R1[fam], f"/index.html?id={tok}")), timeout=40)
    assert r.rc == 0, r
    hits = world2.svc_remote1.wait_find(path=f"/index.html?id={tok}")
    assert [h["client"] for h in hits] == [DEFAULT_SRC[fam]], hits


UDP_ECHO = r'''
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(sys.argv[2].encode(), (sys.argv[1], 7))
print(s.recv(100).decode())
'''


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_udp_leaves_through_iface(cf2, world2, fam):
    tok = secrets.token_hex(6)
    r = cf2.run(["-i", "eth1", "--"] + py(UDP_ECHO, R1[fam], tok), timeout=40)
    assert r.rc == 0 and tok in r.text, r
    hits = world2.svc_remote1.wait_find(svc="udp-echo", data=tok)
    assert [h["client"] for h in hits] == [SRC[fam]], hits


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_ping_leaves_through_iface(cf2, world2, fam):
    """ping's echo requests go out from P's own echo (user) or raw (root) socket: bound to eth1 too."""
    rng = "net.ipv4.ping_group_range"
    old = world2.sh_ns(world2.host, ["sysctl", "-n", rng]).split()
    kw, icmp = ("ip", "icmp") if fam == "v4" else ("ip6", "icmpv6")
    ping = ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2"] + (["-6"] if fam == "v6" else []) + [R1[fam]]
    world2.sysctl(world2.host, f"{rng}=0 2147483647")   # the user's echo socket; root needs none
    try:
        with W.NftTable(world2.remote["remote1"], "input") as nft:
            nft.set(f"{kw} saddr {SRC[fam]} {icmp} type echo-request counter",
                    f"{kw} saddr {DEFAULT_SRC[fam]} {icmp} type echo-request counter")
            r = cf2.run(["-i", "eth1", "--"] + ping, timeout=20)
            seen = world2.sh_ns(world2.remote["remote1"], ["nft", "list", "chain", "inet", nft.name, "c"])
            control = cf2.run(["--"] + ping, timeout=20)
            seen_control = world2.sh_ns(world2.remote["remote1"], ["nft", "list", "chain", "inet", nft.name, "c"])
    finally:
        world2.sysctl(world2.host, f"{rng}={old[0]} {old[1]}")
    assert r.rc == 0 and "2 received" in r.text, r
    assert control.rc == 0 and "2 received" in control.text, control
    count = re.compile(r"counter packets (\d+)")
    assert [int(n) for n in count.findall(seen)] == [2, 0], seen                 # from eth1's address
    assert [int(n) for n in count.findall(seen_control)] == [2, 2], seen_control  # then from eth0's


@pytest.mark.parametrize("fam,transport", [("v4", "udp"), ("v4", "tcp"), ("v6", "udp"), ("v6", "tcp")])
def test_dns_upstream_leaves_through_iface(cf2, res, fam, transport):
    """The forwarder's upstream queries (UDP and TCP) to the --dns resolver leave through eth1."""
    resolver = RES4 if fam == "v4" else RES6
    name = f"{secrets.token_hex(4)}.a.test"   # a name of its own, to find in the resolver's log
    before = len(res.queries())
    r = cf2.run(["-i", "eth1", "--dns", resolver, "--", "dig", "+time=3", "+tries=1"]
                + (["+tcp"] if transport == "tcp" else []) + ["@203.0.113.99", name, "A"], timeout=40)
    assert r.rc == 0 and "status: " in r.text and f"SERVER: 203.0.113.99#53" in r.text, r
    q = [l for l in res.queries()[before:] if name in l]
    assert q and all(l.rstrip().endswith(f"from {SRC[fam]}") for l in q), q


@pytest.fixture(scope="module")
def px2(world2, sess):
    p = X.Proxies(world2, sess.logs).up()
    try:
        yield p
    finally:
        p.down()


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_proxy_connection_leaves_through_iface(cf2, world2, px2, kind):
    """The connection to the proxy (and the start-up probe) leaves through eth1: the proxy logs eth1's
    address as its client, and the remote sees the proxy."""
    log = px2.tiny_log if kind == "http" else px2.dante_log
    port = X.TINY if kind == "http" else X.DANTE
    before = len(px2.log_text(log))
    tok = secrets.token_hex(6)
    r = cf2.run(["-i", "eth1", "-p", f"{kind}://{X.PROXY4}:{port}", "-U", px2.user, "-P", px2.password,
                 "--"] + curl(url(R1["v4"], f"/index.html?id={tok}")), timeout=40)
    assert r.rc == 0 and r.out == b"iface\n", r
    hits = world2.svc_remote1.wait_find(path=f"/index.html?id={tok}")
    assert [h["client"] for h in hits] == [X.PROXY4], hits
    new = px2.log_text(log)[before:]
    assert W.UP2_V4 in new, new[-2000:]
    assert W.HOST_V4 not in new, new[-2000:]


def test_missing_iface_is_one_line(cf2, sess):
    out = os.path.join(sess.work, f"iface-{secrets.token_hex(4)}.pcapng")
    r = cf2.run(["-i", "nosuch0", "-c", out, "--", "true"], timeout=20)
    assert r.rc == EXIT_SETUP, r
    line = one_error_line(r)
    assert "nosuch0" in line and "no such network interface" in line, line
    assert not os.path.exists(out), "a failed setup left its capture file behind"


def test_down_and_carrierless_iface_are_one_line(cf2, world2):
    """A link that is down, and one that is up without a carrier (its veth peer is down)."""
    h = world2.host
    world2.ip(h, "link", "add", "eth2", "type", "veth", "peer", "name", "eth2p")
    try:
        r = cf2.run(["-i", "eth2", "--", "true"], timeout=20)
        assert r.rc == EXIT_SETUP, r
        line = one_error_line(r)
        assert "eth2" in line and "is down" in line and "ip link set eth2 up" in line, line
        world2.ip(h, "link", "set", "eth2", "up")
        r = cf2.run(["-i", "eth2", "--", "true"], timeout=20)
        assert r.rc == EXIT_SETUP, r
        assert "no carrier" in one_error_line(r), r
        world2.ip(h, "link", "set", "eth2p", "up")
        r = cf2.run(["-i", "eth2", "--", "true"], timeout=20)
        assert r.rc == 0, r
    finally:
        world2.ip(h, "link", "del", "eth2", check=False)


MIDRUN = r'''
import errno, socket, sys, time
def tcp(addr):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(10)
    t = time.monotonic()
    try:
        s.connect((addr, 80))
        return "ok"
    except OSError as e:
        return f"{errno.errorcode.get(e.errno, e.errno)}:{time.monotonic() - t:.1f}"
    finally:
        s.close()
def udp(addr):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_IP if fam == socket.AF_INET else socket.IPPROTO_IPV6,
                 11 if fam == socket.AF_INET else 25, 1)   # IP_RECVERR, IPV6_RECVERR
    s.settimeout(5)
    s.connect((addr, 7))
    try:
        s.send(b"x")
        s.recv(10)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "timeout"
    finally:
        s.close()
print("before", tcp(sys.argv[1]), tcp(sys.argv[2]), flush=True)
sys.stdin.readline()
print("after", tcp(sys.argv[1]), tcp(sys.argv[2]), udp(sys.argv[1]), udp(sys.argv[2]), flush=True)
'''


def test_iface_going_down_mid_run(cf2, world2):
    """eth1 goes down while the command runs: its new TCP connections fail with ENETUNREACH at once
    (not a timeout), and its UDP gets a network unreachable (IP_RECVERR sockets see ENETUNREACH)."""
    p = cf2.popen(["-i", "eth1", "--"] + py(MIDRUN, R1["v4"], R1["v6"]), stdin=subprocess.PIPE)
    try:
        line = p.stdout.readline().decode()
        assert line.split() == ["before", "ok", "ok"], (line, p.stderr.read1(4000) if p.poll() is not None
                                                         else "")
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
    for w in words[1:3]:
        code, secs = w.split(":")
        assert code == "ENETUNREACH" and float(secs) < 3, (out, err)
    assert words[3:5] == ["ENETUNREACH", "ENETUNREACH"], (out, err)
    assert p.returncode == 0, (out, err)
