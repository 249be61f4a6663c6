"""The guard refuses every destination the host delivers to itself, not only its interface addresses
(review D5, red team F1, F3, F8), and IPv4 link-local (169.254/16, cloud metadata).

Each test changes the world's host namespace (a local route, a sysctl, an nft table) or the router,
and undoes it in a `finally`.  A control first shows, without childflow, that the service really
answers at the target (so the test can fail); then the same probe runs inside childflow with
CHILDFLOW_DEBUG=1, and the test checks that nothing was reached, that the service saw nothing (except
for NAT, see there), and that the guard gave the expected reason.
"""
import ipaddress
import json
import os
import signal
import subprocess
import time

import pytest

import world as W
from cfutil import py

TCP_PORT, UDP_PORT, LO_PORT, META_PORT, NAT_PORT = 18101, 18102, 18103, 18104, 7777
LOCAL4, LOCAL6 = "198.19.5.0/24", "2001:db8:5::/64"
IN_LOCAL4, IN_LOCAL6 = "198.19.5.7", "2001:db8:5::7"
METADATA = "169.254.169.254"
BCAST_NET, BCAST = "198.19.6.1/24", "198.19.6.255"   # a host subnet of the test's own
DEBUG = {"CHILDFLOW_DEBUG": "1"}

# argv: proto:host:port...  -> for each, what a client sees: "banner:..." / "answer:..." when reached
PROBE = r'''
import errno, json, socket, sys
out = {}
for t in sys.argv[1:]:
    proto, rest = t.split(":", 1)
    h, _, p = rest.rpartition(":")
    h, p = h.strip("[]"), int(p)
    fam = socket.AF_INET6 if ":" in h else socket.AF_INET
    if proto == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(4)
        try:
            s.connect((h, p))
            d = s.recv(100)
            out[t] = "banner:" + d.decode(errors="replace").strip() if d else "eof"
        except socket.timeout:
            out[t] = "timeout"
        except OSError as e:
            out[t] = "error:" + errno.errorcode.get(e.errno, str(e.errno))
        finally:
            s.close()
        continue
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.settimeout(0.5)   # the world answers in milliseconds; the refusal is also read in the debug log
    out[t] = "no-answer"
    for attempt in range(2):
        try:
            s.sendto(b"probe-from-childflow-test\n", (h, p))
            d, a = s.recvfrom(100)
            out[t] = "answer:" + d.decode(errors="replace").strip()
            break
        except socket.timeout:
            continue
        except OSError as e:
            out[t] = "error:" + errno.errorcode.get(e.errno, str(e.errno))
            break
    s.close()
print(json.dumps(out))
'''

# argv: port log ready  -> dual-stack UDP service: logs each datagram, answers HOSTSVC-UDP
UDP_SERVICE = r'''
import socket, sys
port, log, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", port))
f = open(log, "a", buffering=1)
open(ready, "w").close()
while True:
    d, a = s.recvfrom(2048)
    f.write("svc=udp client=%s bytes=%d\n" % (a[0], len(d)))
    try:
        s.sendto(b"HOSTSVC-UDP\n", a)
    except OSError:
        pass
'''


class UdpService:
    def __init__(self, ns, port, logdir, name):
        self.log = os.path.join(logdir, f"{name}.log")
        ready = os.path.join(logdir, f"{name}.ready")
        for f in (self.log, ready):
            if os.path.exists(f):
                os.unlink(f)
        open(self.log, "a").close()
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns] + py(UDP_SERVICE, port, self.log, ready),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        W.wait_file(ready, proc=self.proc)

    def entries(self):
        with open(self.log) as f:
            return f.read().splitlines()

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def services(world, sess):
    """A TCP banner ([::]:18101, dual-stack) and a UDP answerer ([::]:18102) in the host namespace,
    plus a banner on 127.0.0.1/::1:18103 (the target of the NAT test)."""
    tcp = world.start_service(world.host, ["banner", "--bind", "::", "--port", str(TCP_PORT)],
                              sess.logs, world.prefix + "-guardtcp")
    lo = world.start_service(world.host, ["banner", "--bind", "127.0.0.1", "--bind", "::1",
                                          "--port", str(LO_PORT)], sess.logs, world.prefix + "-guardlo")
    udp = UdpService(world.host, UDP_PORT, sess.logs, world.prefix + "-guardudp")
    yield {"tcp": tcp, "lo": lo, "udp": udp}
    udp.stop()
    for s in (tcp, lo):
        s.stop()


def hits(svcs):
    return [len(s.entries()) for s in svcs]


def probe(cf, targets, direct=False):
    args = py(PROBE, *targets)
    r = cf.direct(args, timeout=60) if direct else cf.run(["--"] + args, timeout=60, env=DEBUG)
    assert r.rc == 0, r
    return json.loads(r.out.decode().strip().splitlines()[-1]), r


def reached(res):
    return {t: o for t, o in res.items() if o.startswith(("banner:", "answer:"))}


def check_refused(cf, targets, svcs, reason, control=True):
    """Control (direct: every target answers), then inside childflow: nothing answers, the services
    log nothing, and the debug log gives `reason`."""
    if control:
        res, _ = probe(cf, targets, direct=True)
        assert reached(res) == res, f"control: the world does not answer at every target: {res}"
    before = hits(svcs)
    res, r = probe(cf, targets)
    assert not reached(res), f"host-local destinations reachable from the sandbox: {reached(res)}\n{r!r}"
    time.sleep(0.3)
    assert hits(svcs) == before, "a host service saw traffic from the sandbox"
    refusals = [line for line in r.etext.splitlines() if "refusing" in line or "dropping UDP" in line]
    assert len([line for line in refusals if reason in line]) >= len(targets), \
        f"expected the guard to refuse each target with {reason!r}; it said:\n" + "\n".join(refusals) + f"\n{r!r}"


def test_local_routes_refused(cf, world, services):
    """F1/D5: `ip route add local PREFIX dev lo` makes a whole prefix the host itself (AnyIP)."""
    targets = [f"tcp:{IN_LOCAL4}:{TCP_PORT}", f"tcp:[{IN_LOCAL6}]:{TCP_PORT}",
               f"udp:{IN_LOCAL4}:{UDP_PORT}", f"udp:[{IN_LOCAL6}]:{UDP_PORT}"]
    try:
        world.ip(world.host, "route", "add", "local", LOCAL4, "dev", "lo")
        world.ip(world.host, "-6", "route", "add", "local", LOCAL6, "dev", "lo")
        check_refused(cf, targets, [services["tcp"], services["udp"]], "local route")
    finally:
        world.ip(world.host, "route", "del", "local", LOCAL4, "dev", "lo", check=False)
        world.ip(world.host, "-6", "route", "del", "local", LOCAL6, "dev", "lo", check=False)


def host_addr6(world):
    out = W.sh(["ip", "-n", world.host, "-j", "-6", "addr", "show", "dev", "eth0", "scope", "global"]).stdout
    return json.loads(out)[0]["addr_info"][0]


def test_anycast_refused(cf, world, services):
    """F8: with forwarding on, the host owns its subnet-router anycast address (prefix::)."""
    a = host_addr6(world)
    anycast = str(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False).network_address)
    key = "net.ipv6.conf.eth0.forwarding"
    old = W.sh(["ip", "netns", "exec", world.host, "sysctl", "-n", key]).stdout.decode().strip()
    targets = [f"udp:[{anycast}]:{UDP_PORT}"]
    try:
        world.sysctl(world.host, f"{key}=1")
        # control: the datagram is delivered (the reply leaves from the unicast address, so the
        # answer itself may or may not come back: count the service's log instead)
        before = hits([services["udp"]])
        probe(cf, targets, direct=True)
        assert hits([services["udp"]]) != before, "control: the anycast address does not reach the host"
        check_refused(cf, targets, [services["udp"]], "anycast", control=False)
    finally:
        world.sysctl(world.host, f"{key}={old}", check=False)


def test_broadcast_refused(cf, world, services):
    """A broadcast address of a host subnet is refused by the guard itself (not left to the kernel)."""
    try:
        world.ip(world.host, "addr", "add", BCAST_NET, "brd", "+", "dev", "eth0")
        route = W.sh(["ip", "-n", world.host, "route", "get", BCAST]).stdout.decode()
        assert route.startswith("broadcast"), route
        check_refused(cf, [f"udp:{BCAST}:{UDP_PORT}", f"tcp:{BCAST}:{TCP_PORT}"],
                      [services["tcp"], services["udp"]], "broadcast address of a host subnet", control=False)
    finally:
        world.ip(world.host, "addr", "del", BCAST_NET, "dev", "eth0", check=False)


def test_metadata_refused(cf, world, sess, services):
    """169.254/16 (cloud instance metadata) is refused by default, as IPv6 link-local is.  Here it is
    on-link on the host's uplink, served by the router, as in a cloud."""
    meta = None
    try:
        world.ip(world.router, "addr", "add", f"{METADATA}/32", "dev", "h0")
        world.ip(world.host, "route", "add", f"{METADATA}/32", "dev", "eth0")
        meta = world.start_service(world.router, ["banner", "--bind", METADATA, "--port", str(META_PORT)],
                                   sess.logs, world.prefix + "-guardmeta")
        check_refused(cf, [f"tcp:{METADATA}:{META_PORT}"], [meta], "IPv4 link-local")
    finally:
        if meta:
            meta.stop()
        world.ip(world.host, "route", "del", f"{METADATA}/32", "dev", "eth0", check=False)
        world.ip(world.router, "addr", "del", f"{METADATA}/32", "dev", "h0", check=False)


def nft(world, *args, check=True):
    return W.sh(["ip", "netns", "exec", world.host, "nft"] + list(args), check=check)


def test_nat_redirect_refused(cf, world, services):
    """F3: an output-chain `redirect` turns a connection to a remote into one to 127.0.0.1/::1.  The
    relay resets it once connected, before any byte is relayed: the host service does see an accepted
    connection (that cannot be avoided from P), but the child never gets its banner."""
    r1 = W.REMOTES["remote1"]
    targets = [f"tcp:{r1['v4']}:{NAT_PORT}", f"tcp:[{r1['v6']}]:{NAT_PORT}"]
    try:
        nft(world, "add", "table", "inet", "cfguard")
        nft(world, "add", "chain", "inet", "cfguard", "out", "{ type nat hook output priority -100; }")
        nft(world, "add", "rule", "inet", "cfguard", "out", "ip", "daddr", r1["v4"], "tcp", "dport", str(NAT_PORT),
            "redirect", "to", f":{LO_PORT}")
        nft(world, "add", "rule", "inet", "cfguard", "out", "ip6", "daddr", r1["v6"], "tcp", "dport", str(NAT_PORT),
            "redirect", "to", f":{LO_PORT}")
        res, _ = probe(cf, targets, direct=True)
        assert res == {t: "banner:HOSTSVC" for t in targets}, f"control: the redirect does not work: {res}"
        res, r = probe(cf, targets)
        assert not reached(res), f"NAT took the sandbox to a loopback-only service: {res}\n{r!r}"
        refusals = [line for line in r.etext.splitlines() if "NAT on the host" in line]
        assert len(refusals) >= len(targets), r
    finally:
        nft(world, "delete", "table", "inet", "cfguard", check=False)


@pytest.mark.xfail(strict=True, reason="known limitation (guard.h): UDP that host NAT sends to the host "
                   "itself is not detected; the host-side socket is not connected to P")
def test_nat_redirect_udp(cf, world, services):
    r1 = W.REMOTES["remote1"]
    try:
        nft(world, "add", "table", "ip", "cfguard")
        nft(world, "add", "chain", "ip", "cfguard", "out", "{ type nat hook output priority -100; }")
        nft(world, "add", "rule", "ip", "cfguard", "out", "ip", "daddr", r1["v4"], "udp", "dport", str(NAT_PORT),
            "redirect", "to", f":{UDP_PORT}")
        before = hits([services["udp"]])
        res, r = probe(cf, [f"udp:{r1['v4']}:{NAT_PORT}"])
        time.sleep(0.3)
        assert hits([services["udp"]]) == before, f"UDP reached a host service through NAT: {res}"
    finally:
        nft(world, "delete", "table", "ip", "cfguard", check=False)
