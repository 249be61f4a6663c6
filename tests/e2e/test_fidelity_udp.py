"""Network fidelity for UDP (issue 10): ICMP errors that a datagram draws upstream reach the command
as the ICMP they were, from the address that sent them, so a connected UDP socket learns that the
port is closed (ECONNREFUSED) or the host unreachable, as without childflow.  Each case runs from
the host directly (the control) and inside childflow; both must read the same."""
import json
import re

import pytest

import world as W
from cfutil import py

# argv: recverr target...; one connected socket per target: send, then wait for an answer or an
# error.  With recverr=1 the socket asks for every ICMP error (IP_RECVERR): Linux reports host and
# network unreachable to a UDP socket only then; port unreachable always.
PROBE = r'''
import errno, json, socket, sys, time
out = {}
recverr = sys.argv[1] == "1"
for t in sys.argv[2:]:
    h, _, p = t.rpartition(":")
    h = h.strip("[]")
    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_DGRAM)
    if recverr:
        s.setsockopt(41, 25, 1) if ":" in h else s.setsockopt(0, 11, 1)   # IPV6_RECVERR, IP_RECVERR
    s.settimeout(2)
    s.connect((h, int(p)))
    t0 = time.monotonic()
    try:
        s.send(b"are you there")
        d = s.recv(100)
        out[t] = ["data", d.decode(errors="replace")]
    except socket.timeout:
        out[t] = ["timeout", None]
    except OSError as e:
        out[t] = [errno.errorcode.get(e.errno, str(e.errno)), round(time.monotonic() - t0, 3)]
    s.close()
print(json.dumps(out))
'''

R1 = W.REMOTES["remote1"]
CLOSED = 9          # nothing listens on udp/9 on the remotes: their kernel answers port unreachable
FILTERED = 9998     # the router answers for this one


@pytest.fixture(autouse=True)
def errors_unlimited(world):
    """The remote's and the router's ICMP rate limits lifted: each test's errors must not depend on
    how many earlier tests (traceroute's probes) drew from the same per-host token bucket."""
    nss = (world.remote["remote1"], world.router)
    for ns in nss:
        world.sysctl(ns, "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0")
    try:
        yield
    finally:
        for ns in nss:
            world.sysctl(ns, "net.ipv4.icmp_ratelimit=1000", "net.ipv6.icmp.ratelimit=1000")


def target(fam, port):
    return f"{R1['v4']}:{port}" if fam == "v4" else f"[{R1['v6']}]:{port}"


def probe(cf, targets, direct=False, recverr=False):
    args = py(PROBE, "1" if recverr else "0", *targets)
    r = cf.direct(args, timeout=20) if direct else cf.run(["--"] + args, timeout=20)
    assert r.rc == 0, r
    return json.loads(r.out)


def test_closed_port_is_refused(cf, world):
    want = {target("v4", CLOSED): "ECONNREFUSED", target("v6", CLOSED): "ECONNREFUSED"}
    control = probe(cf, list(want), direct=True)
    inside = probe(cf, list(want))
    assert {t: v[0] for t, v in control.items()} == want, ("the control itself", control)
    assert {t: v[0] for t, v in inside.items()} == want, inside
    assert all(v[1] < 1 for v in inside.values()), inside   # at once, not after the timeout


@pytest.mark.parametrize("verdict,err", [("reject with icmpx type host-unreachable", "EHOSTUNREACH"),
                                         ("reject with icmpx type no-route", "ENETUNREACH")],
                         ids=["host-unreachable", "no-route"])
def test_router_errors_reach_the_command(cf, world, verdict, err):
    want = {target("v4", FILTERED): err, target("v6", FILTERED): err}
    with W.NftTable(world.router, "forward") as nft:
        nft.set(f"ip daddr {R1['v4']} udp dport {FILTERED} {verdict}",
                f"ip6 daddr {R1['v6']} udp dport {FILTERED} {verdict}")
        control = probe(cf, list(want), direct=True, recverr=True)
        inside = probe(cf, list(want), recverr=True)
        # and without IP_RECVERR, as outside, the socket is not told (a soft error for UDP)
        quiet = probe(cf, list(want))
    assert {t: v[0] for t, v in control.items()} == want, ("the control itself", control)
    assert {t: v[0] for t, v in inside.items()} == want, inside
    assert {t: v[0] for t, v in quiet.items()} == {t: "timeout" for t in want}, quiet


def test_open_port_still_answers(cf, world):
    """The error path leaves ordinary replies alone: the echo service answers as before."""
    t4, t6 = target("v4", W.ECHO_PORT), target("v6", W.ECHO_PORT)
    inside = probe(cf, [t4, t6])
    assert inside == {t4: ["data", "are you there"], t6: ["data", "are you there"]}, inside


def forget_pmtu(world):
    """Drop what the host netns learnt of path MTUs (a route's exceptions go with the route)."""
    world.ip(world.host, "route", "del", "default", check=False)
    world.ip(world.host, "route", "add", "default", "via", W.HOST_GW4)


FRAG = r'''
import errno, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)        # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF on every datagram
s.connect((sys.argv[1], 9999))
out = "sent"
for i in range(2):                             # 1400 fits our link, not the router's 1280 one
    try:
        s.send(b"x" * 1400)
        out = "sent"
    except OSError as e:
        out = "%s %d" % (errno.errorcode[e.errno], s.getsockopt(socket.IPPROTO_IP, 14))   # IP_MTU
    time.sleep(0.5)
print(out)
'''


def test_pmtu_a_smaller_router_link_is_learnt(cf, world):
    forget_pmtu(world)
    world.ip(world.router, "link", "set", "r1", "mtu", "1280")
    try:
        r = cf.run(["--"] + py(FRAG, R1["v4"]), timeout=20)   # first: the host has learnt nothing yet
        control = cf.direct(py(FRAG, R1["v4"]), timeout=20)
    finally:
        world.ip(world.router, "link", "set", "r1", "mtu", "1500")
        forget_pmtu(world)
    assert control.text.split() == ["EMSGSIZE", "1280"], control
    assert r.text.split() == ["EMSGSIZE", "1280"], r


BURST = r'''
import socket, sys, time
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20):                            # unconnected: the port's unreachables fail no send here
    s.sendto(b"burst %d" % i, (sys.argv[1], 9))
time.sleep(0.5)
print("sent")
'''


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_a_burst_to_a_closed_port_all_reaches_it(cf, world, fam):
    """The closed port's first unreachable lands on P's connected host socket as its pending error
    while the rest of the burst is still to be sent on it: every datagram must still leave."""
    kw = "ip" if fam == "v4" else "ip6"
    with W.NftTable(world.remote["remote1"], "input") as nft:
        nft.set(f"{kw} saddr {W.HOST_V4 if fam == 'v4' else W.HOST_V6} udp dport 9 counter")
        control = cf.direct(py(BURST, R1[fam]), timeout=20)
        seen_control = world.sh_ns(world.remote["remote1"], ["nft", "list", "chain", "inet", nft.name, "c"])
        r = cf.run(["--"] + py(BURST, R1[fam]), timeout=20)
        seen = world.sh_ns(world.remote["remote1"], ["nft", "list", "chain", "inet", nft.name, "c"])
    assert control.rc == 0 and r.rc == 0, (control, r)
    count = re.compile(r"counter packets (\d+)")
    assert [int(n) for n in count.findall(seen_control)] == [20], seen_control
    assert [int(n) for n in count.findall(seen)] == [40], seen


# argv: dst port; one connected socket, IP_RECVERR.  A first datagram with TTL 2 opens the flow (the
# remote's echo answers it); then probes 1..n, TTL 1 (the router's time exceeded) and 2 (the
# remote's echo) alternating, on the same socket, TTL set before each (setsockopt), one at a time.
PER_DATAGRAM_TTL = r'''
import select, socket, struct, sys
dst, port, n = sys.argv[1], int(sys.argv[2]), 8
v6 = ":" in dst
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
err_opt = (socket.IPPROTO_IPV6, 25) if v6 else (socket.IPPROTO_IP, 11)   # IPV6_RECVERR, IP_RECVERR
ttl_opt = (socket.IPPROTO_IPV6, 16) if v6 else (socket.IPPROTO_IP, 2)    # IPV6_UNICAST_HOPS, IP_TTL
s.setsockopt(*err_opt, 1)
s.connect((dst, port))
def ask(ttl, seq):
    s.setsockopt(*ttl_opt, ttl)
    s.send(b"probe %d" % seq)
    if not select.select([s], [], [s], 2)[0]:
        return "*"
    try:
        return "echo " + s.recv(100).decode()
    except OSError:
        data, anc, _, _ = s.recvmsg(100, 512, socket.MSG_ERRQUEUE)
        for lvl, typ, cd in anc:
            if (lvl, typ) == err_opt:           # sock_extended_err: origin, type; then the offender
                fam, addr = (socket.AF_INET6, cd[24:40]) if v6 else (socket.AF_INET, cd[20:24])
                return "type %d from %s" % (cd[5], socket.inet_ntop(fam, addr))
        return "?"
print(0, ask(2, 0))
for seq in range(1, n + 1):
    print(seq, ask(1 if seq % 2 else 2, seq))
'''


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_each_datagram_keeps_its_ttl(cf, world, fam):
    """A program that sets IP_TTL per datagram on one socket (traceroute with several probes per hop
    on one socket): each datagram goes upstream with its own TTL.  Direct control first."""
    dst = R1["v6"] if fam == "v6" else R1["v4"]
    gw = W.HOST_GW6 if fam == "v6" else W.HOST_GW4
    exceeded = 3 if fam == "v6" else 11
    want = ["0 echo probe 0"] + [f"{i} type {exceeded} from {gw}" if i % 2 else f"{i} echo probe {i}"
                                 for i in range(1, 9)]
    args = py(PER_DATAGRAM_TTL, dst, str(W.ECHO_PORT))
    control = cf.direct(args, timeout=40)
    assert control.rc == 0 and control.text.splitlines() == want, ("the control itself", control)
    r = cf.run(["--"] + args, timeout=40)
    assert r.rc == 0, r
    assert r.text.splitlines() == want, r


def test_ordinary_traffic_leaves_with_the_hosts_ttl(cf, world):
    """A command that sets no TTL: its UDP and TCP leave the host with the host's default TTL / hop
    limit (here 100, seen as 99 behind the router), as the host's own programs do, not with the
    sandbox namespace's 64.  Counted at the remote; the direct control first."""
    send = r'''
import socket, sys
for h in sys.argv[1:]:
    fam = socket.AF_INET6 if ":" in h else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.settimeout(2)
    u.sendto(b"hello", (h, 7))
    u.recv(100)
    t = socket.create_connection((h, 80), timeout=5)
    t.close()
print("ok")
'''
    host, remote = world.host, world.remote["remote1"]
    old4 = world.sh_ns(host, ["sysctl", "-n", "net.ipv4.ip_default_ttl"]).strip()
    old6 = world.sh_ns(host, ["sysctl", "-n", "net.ipv6.conf.eth0.hop_limit"]).strip()
    world.sysctl(host, "net.ipv4.ip_default_ttl=100", "net.ipv6.conf.eth0.hop_limit=100")
    try:
        with W.NftTable(remote, "input") as nft:
            nft.set(*[f"{m} {what} counter" for m in ("ip ttl 99", "ip6 hoplimit 99")
                      for what in ("udp dport 7", "tcp dport 80 tcp flags & (syn | ack) == syn")])
            args = py(send, R1["v4"], R1["v6"])
            control = cf.direct(args, timeout=20)
            assert control.rc == 0, control
            r = cf.run(["--"] + args, timeout=20)
            assert r.rc == 0, r
            listed = world.sh_ns(remote, ["nft", "list", "chain", "inet", nft.name, "c"])
    finally:
        world.sysctl(host, f"net.ipv4.ip_default_ttl={old4}", f"net.ipv6.conf.eth0.hop_limit={old6}")
    # each rule: one datagram (or SYN) from the control, one from the command
    assert [int(n) for n in re.findall(r"counter packets (\d+)", listed)] == [2, 2, 2, 2], listed
