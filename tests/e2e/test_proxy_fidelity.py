"""--proxy, end to end with the tree's own DNS and the SYN gate.

By name: the child resolves test names through childflow's forwarder (`--dns`, a dnsmasq of
test_dns.py in the proxy namespace) and connects; the proxy is asked for the name (tinyproxy logs
`CONNECT name:port`, SOCKS5 gets address type 3), an address nobody resolved goes by address, and of
several names of one address the most recently resolved is sent.  A proxy given by host name is
resolved by the host's resolver (a private /etc/hosts).

Honest failures: what the proxy answered about the destination is what the child's connect() reports
(SOCKS5 REP codes, an HTTP CONNECT failure reads as refused).
"""
import json
import os
import re
import shlex

import pytest

import proxies as X
import world as W
from cfutil import curl, py, url
from etcfiles import run_in_fixture
from test_capture import capdir, fields  # noqa: F401 (capdir: a fixture)
from test_dns import Dnsmasq
from test_proxy import auth, proxy_uri, warnings

R1, R2 = W.REMOTES["remote1"], W.REMOTES["remote2"]
CLOSED = 4                                   # nothing listens there on remote1: it resets
HOSTUN4, HOSTUN6 = "198.51.100.78", "2001:db8:100::78"   # the router answers host unreachable
NETUN4, NETUN6 = "198.51.100.79", "2001:db8:100::79"     # ... network unreachable
PROXY_NAME = "proxyhost.test"                # only the private /etc/hosts knows it
REFUSE4 = "198.18.7.11"                      # the router resets TCP to it: a refused proxy address
SILENT4, SILENT6 = "198.18.7.12", "2001:db8:7::12"   # the router drops everything to them
NAMES = {"r1.test": [R1["v4"], R1["v6"]], "one.test": [R1["v4"]], "two.test": [R1["v4"]]}


@pytest.fixture(scope="module")
def pxw(world, sess):
    """The proxies (knowing the test names), a resolver for the child, and a router that answers
    the unreachable addresses."""
    p = X.Proxies(world, sess.logs, names=NAMES)
    dns = nft = None
    try:
        p.up()
        p.refuse_host()
        dns = Dnsmasq(p.ns, [X.PROXY4], sess.logs, world.prefix + "-pxnames",
                      [f"--host-record={n},{','.join(a)}" for n, a in NAMES.items()])
        nft = W.NftTable(world.router, "forward", name="cfpxfid")
        nft.__enter__()
        nft.set(f"ip daddr {HOSTUN4} reject with icmp type host-unreachable",
                f"ip6 daddr {HOSTUN6} reject with icmpv6 type addr-unreachable",
                f"ip daddr {NETUN4} reject with icmp type net-unreachable",
                f"ip6 daddr {NETUN6} reject with icmpv6 type no-route",
                f"ip daddr {REFUSE4} meta l4proto tcp reject with tcp reset",
                f"ip daddr {SILENT4} drop", f"ip6 daddr {SILENT6} drop")
        yield p
    finally:
        if nft:
            nft.__exit__(None, None, None)
        if dns:
            dns.stop()
        p.down()


class LogTail:
    """What a log file gained since this object was made."""

    def __init__(self, path):
        self.path = path
        self.start = os.path.getsize(path)

    def new(self):
        with open(self.path, errors="replace") as f:
            f.seek(self.start)
            return f.read()


def connects(tail):
    """The CONNECT authorities tinyproxy logged, in order (without the start-up probe's)."""
    return [a for a in re.findall(r'CONNECT (\S+) HTTP', tail.new()) if a != "0.0.0.0:0"]


def dns_args():
    return ["--dns", X.PROXY4]


# ---------------------------------------------------------------- by name

def test_http_proxy_asked_by_name(pxw, cf):
    tail = LogTail(pxw.tiny_log)
    r = cf.run(dns_args() + ["-p", proxy_uri("http", X.TINY)] + auth(pxw) + ["--"] +
               curl("http://r1.test/who.txt"))
    assert (r.rc, r.text) == (0, "remote1\n"), r
    assert connects(tail) == ["r1.test:80"], tail.new()
    assert not warnings(r), r


def test_socks5_asked_by_name(pxw, cf):
    """microsocks logs the name it was asked for (dante logs the address it resolved it to)."""
    tail = LogTail(pxw.microsocks_log)
    r = cf.run(dns_args() + ["-p", proxy_uri("socks5", X.MICROSOCKS)] + auth(pxw) + ["--"] +
               curl("http://r1.test/who.txt"))
    assert (r.rc, r.text) == (0, "remote1\n"), r
    new = tail.new()
    assert "r1.test" in new, new
    assert R1["v4"] not in new and R1["v6"] not in new, new


# Steps in order: resolve=NAME (AF_INET), connect=ADDR (GET /who.txt; print what it returned),
# open=ADDR (connect and close).
STEPS = r'''
import socket, sys
out = []
for step in sys.argv[1:]:
    kind, arg = step.split("=", 1)
    if kind == "resolve":
        socket.getaddrinfo(arg, 80, socket.AF_INET, socket.SOCK_STREAM)
        continue
    s = socket.create_connection((arg, 80), timeout=10)
    if kind == "open":
        s.close()
        continue
    s.sendall(b"GET /who.txt HTTP/1.0\r\n\r\n")
    buf = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    out.append(buf.split(b"\r\n\r\n", 1)[-1].decode().strip())
print(" ".join(out))
'''


def test_socks5_domain_address_type_and_raw_ip(pxw, cf):
    """The recording SOCKS5 proxy sees ATYP 3 for the resolved name, ATYP 1 for an address nobody
    resolved in this run."""
    tail = LogTail(pxw.rep_log)
    r = cf.run(dns_args() + ["-p", proxy_uri("socks5", X.FAKE_REP), "--"] +
               py(STEPS, "resolve=r1.test", f"open={R1['v4']}", f"open={R2['v4']}"))
    assert r.rc == 0, r
    assert tail.new().splitlines() == ["atyp=3 addr=r1.test port=80", f"atyp=1 addr={R2['v4']} port=80"], \
        (tail.new(), r)


def test_unresolved_address_goes_by_address(pxw, cf):
    tail = LogTail(pxw.tiny_log)
    r = cf.run(dns_args() + ["-p", proxy_uri("http", X.TINY)] + auth(pxw) + ["--"] +
               py(STEPS, "resolve=r1.test", f"connect={R1['v4']}", f"connect={R2['v4']}"))
    assert (r.rc, r.text.split()) == (0, ["remote1", "remote2"]), r
    assert connects(tail) == ["r1.test:80", f"{R2['v4']}:80"], tail.new()


def test_several_names_most_recent_wins(pxw, cf):
    """one.test, two.test and r1.test all resolve to remote1's address: each connection is asked
    by the name resolved last before it."""
    tail = LogTail(pxw.tiny_log)
    a = f"connect={R1['v4']}"
    r = cf.run(dns_args() + ["-p", proxy_uri("http", X.TINY)] + auth(pxw) + ["--"] +
               py(STEPS, "resolve=one.test", "resolve=two.test", a, "resolve=one.test", a,
                  "resolve=r1.test", a, "resolve=two.test", a))
    assert (r.rc, r.text.split()) == (0, ["remote1"] * 4), r
    assert connects(tail) == ["two.test:80", "one.test:80", "r1.test:80", "two.test:80"], tail.new()


def test_proxy_given_by_host_name(pxw, cf):
    """-p http://proxyhost.test:8888: the host's resolver (here a private /etc/hosts) names it."""
    tail = LogTail(pxw.tiny_log)
    spec = {"etc": {"hosts": {"text": f"127.0.0.1 localhost\n{X.PROXY4} {PROXY_NAME}\n"},
                    "resolv.conf": {"text": f"nameserver {X.PROXY4}\n"},
                    "nsswitch.conf": {"text": "hosts: files dns\n"}}}
    res = run_in_fixture(cf.argv(dns_args() + ["-p", f"http://{PROXY_NAME}:{X.TINY}"] + auth(pxw) +
                                 ["--"] + curl(url(R1["v4"], "/who.txt"))), spec)
    assert (res["rc"], res["out"]) == (0, "remote1\n"), res
    assert connects(tail) == [f"{R1['v4']}:80"], tail.new()
    assert "warning" not in res["err"], res


@pytest.mark.parametrize("dead", [[REFUSE4], [SILENT6], [SILENT6, REFUSE4, SILENT4]],
                         ids=["refused-v4", "silent-v6", "three-dead"])
def test_proxy_name_with_dead_addresses_first(pxw, cf, dead):
    """The proxy's name resolves to dead addresses first (a refusing one, a silent IPv6 one, or
    both and a silent IPv4 one) and the live tinyproxy last: each address is tried in turn, a silent
    one for about a second, and every connection gets through (the first probe and two downloads)."""
    tail = LogTail(pxw.tiny_log)
    hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {PROXY_NAME}\n" for a in dead + [X.PROXY4])
    spec = {"etc": {"hosts": {"text": hosts}, "resolv.conf": {"text": f"nameserver {X.PROXY4}\n"},
                    "nsswitch.conf": {"text": "hosts: files dns\n"}}}
    u = url(R1["v4"], "/who.txt")
    res = run_in_fixture(cf.argv(["-p", f"http://{PROXY_NAME}:{X.TINY}"] + auth(pxw) + ["--", "sh", "-c",
                                  f"{shlex.join(curl(u))} && {shlex.join(curl(u))}"],
                                 env={"CHILDFLOW_DEBUG": "1"}), spec, timeout=40)
    assert (res["rc"], res["out"]) == (0, "remote1\nremote1\n"), res
    assert connects(tail) == [f"{R1['v4']}:80"] * 2, tail.new()
    # Every dead one before the live one, for each connection (the probe's may interleave).
    tried = re.findall(r"address (\S+) failed \((.*?)\), trying the next one", res["err"])
    assert sorted(a for a, _ in tried) == sorted(dead * 3), res["err"]
    assert all(e == ("Connection refused" if a == REFUSE4 else "Connection timed out") for a, e in tried), tried
    assert "warning" not in res["err"], res


def test_egress_view_shows_each_dead_proxy_address(pxw, cf, capdir):
    """-C egress with a proxy whose name gives a refusing address first: the capture shows that
    attempt as the host exchanged it (its SYN, the RST answering it), then the live proxy's
    connection.  Before, a redialled attempt was told to the view with no error, so its RST was
    missing and the SYN stood unanswered."""
    cap = os.path.join(capdir, "redial.pcapng")
    hosts = f"127.0.0.1 localhost\n{REFUSE4} {PROXY_NAME}\n{X.PROXY4} {PROXY_NAME}\n"
    spec = {"etc": {"hosts": {"text": hosts}, "resolv.conf": {"text": f"nameserver {X.PROXY4}\n"},
                    "nsswitch.conf": {"text": "hosts: files dns\n"}}}
    res = run_in_fixture(cf.argv(["-c", cap, "-C", "egress", "-p", f"http://{PROXY_NAME}:{X.TINY}"] + auth(pxw) +
                                 ["--"] + curl(url(R1["v4"], "/who.txt"))), spec, timeout=40)
    assert (res["rc"], res["out"]) == (0, "remote1\n"), res
    rows = fields(cap, f"ip.addr=={REFUSE4}", "ip.src", "ip.dst", "tcp.flags.syn", "tcp.flags.reset", "tcp.dstport",
                  "tcp.srcport")
    # The connection's attempt (the start-up probe is childflow's own, not in the view): a SYN to the
    # dead address, then the RST answering it, on the same ports.
    assert [r[:5] for r in rows] == [[W.HOST_V4, REFUSE4, "1", "0", str(X.TINY)],
                                     [REFUSE4, W.HOST_V4, "0", "1", rows[0][5]]], rows
    live = fields(cap, f"ip.addr=={X.PROXY4} && tcp.flags.syn==1 && tcp.flags.ack==0", "ip.dst")
    assert live and all(r == [X.PROXY4] for r in live), live


# ---------------------------------------------------------------- SOCKS5 pipelining

# After a second (the start-up probe has answered by then): connect to each ADDR:PORT, send a line,
# print what came back.
ECHO_LINES = r'''
import socket, sys, time
time.sleep(float(sys.argv[1]))
out = []
for arg in sys.argv[2:]:
    host, port = arg.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(b"ping\n")
    out.append(s.makefile().readline().strip())
    s.close()
print(" ".join(out))
'''


def test_socks5_handshake_pipelined_once_the_probe_took_it(pxw, cf):
    """The probe sends greeting and CONNECT at once; the proxy answers both, so the connections
    after it do the same: the proxy's first read holds the whole handshake."""
    tail = LogTail(pxw.pipe_log)
    r = cf.run(["-p", proxy_uri("socks5", X.FAKE_PIPE), "--"] +
               py(ECHO_LINES, "1", f"{R1['v4']}:80", f"{R1['v4']}:81"))
    assert (r.rc, r.text.split()) == (0, ["ping", "ping"]), r
    seen = {}
    for port, first, hs in re.findall(r"port=(\d+) first=(\d+) handshake=(\d+)", tail.new()):
        seen[int(port)] = (int(first), int(hs))
    assert set(seen) == {0, 80, 81}, tail.new()
    assert all(first == hs for first, hs in seen.values()), seen
    assert not warnings(r), r


@pytest.mark.parametrize("port", [X.MICROSOCKS, X.DANTE], ids=["microsocks", "dante"])
def test_socks5_pipelining_only_where_the_probe_got_through(pxw, cf, port):
    """dante takes greeting, credentials and CONNECT at once; microsocks drops what its first read
    got beyond the greeting and waits: its probe stalls (here for the 1 s handshake timeout), nothing
    is told, and the connections wait for each reply."""
    r = cf.run(["-p", proxy_uri("socks5", port)] + auth(pxw) + ["--"] +
               py(STEPS.replace("import socket, sys", "import socket, sys, time\ntime.sleep(2.5)"),
                  f"connect={R1['v4']}", f"connect={R1['v4']}"),
               env={"CHILDFLOW_DEBUG": "1", "CHILDFLOW_PROXY_TIMEOUT": "1"}, timeout=40)
    assert (r.rc, r.text.split()) == (0, ["remote1"] * 2), r
    took = "takes a pipelined SOCKS5 handshake" in r.etext
    stalled = "does not take a pipelined SOCKS5 handshake" in r.etext
    assert (took, stalled) == ((False, True) if port == X.MICROSOCKS else (True, False)), r.etext[-3000:]
    assert not warnings(r), r


# ---------------------------------------------------------------- honest failures

# connect() to each (address, port); print the errno name (or "ok") of each.
ERRNOS = r'''
import errno, json, socket, sys
out = []
for arg in sys.argv[1:]:
    host, port = arg.rsplit(":", 1)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.settimeout(15)
    try:
        s.connect((host.strip("[]"), int(port)))
        out.append("ok")
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__)
    s.close()
print(json.dumps(out))
'''


def errnos(cf, uri, extra, *targets, timeout=60):
    r = cf.run(["-p", uri] + extra + ["--"] + py(ERRNOS, *targets), timeout=timeout)
    assert r.rc == 0, r
    return json.loads(r.out), r


@pytest.mark.parametrize("port", [X.MICROSOCKS, X.DANTE], ids=["microsocks", "dante"])
def test_socks5_closed_port_is_refused(pxw, cf, port):
    r = cf.run(["-p", proxy_uri("socks5", port)] + auth(pxw) + ["--"] + curl(url(R1["v4"], "/", CLOSED)))
    assert r.rc == 7, r                        # curl: "Failed to connect" (refused), not 56
    got, r = errnos(cf, proxy_uri("socks5", port), auth(pxw), f"{R1['v4']}:{CLOSED}",
                    f"[{R1['v6']}]:{CLOSED}", f"{R1['v4']}:80")
    assert got == ["ECONNREFUSED", "ECONNREFUSED", "ok"], r


def test_http_connect_failure_is_refused(pxw, cf):
    r = cf.run(["-p", proxy_uri("http", X.TINY)] + auth(pxw) + ["--"] + curl(url(R1["v4"], "/", CLOSED)))
    assert r.rc == 7, r
    got, r = errnos(cf, proxy_uri("http", X.TINY), auth(pxw), f"{R1['v4']}:{CLOSED}",
                    f"{HOSTUN4}:80", f"{R1['v4']}:80")
    assert got == ["ECONNREFUSED", "ECONNREFUSED", "ok"], r


@pytest.mark.parametrize("port", [X.MICROSOCKS, X.DANTE], ids=["microsocks", "dante"])
def test_socks5_unreachable_as_the_proxy_reported(pxw, cf, port):
    got, r = errnos(cf, proxy_uri("socks5", port), auth(pxw), f"{HOSTUN4}:80", f"[{HOSTUN6}]:80",
                    f"{NETUN4}:80", f"[{NETUN6}]:80")
    assert got == ["EHOSTUNREACH", "EHOSTUNREACH", "ENETUNREACH", "ENETUNREACH"], r


def test_socks5_not_allowed_is_prohibited(pxw, cf):
    """dante's ruleset blocks BLOCKED4/6 (REP 2): an administratively prohibited ICMP to the child,
    which Linux reports as EHOSTUNREACH over IPv4 and EACCES over IPv6."""
    got, r = errnos(cf, proxy_uri("socks5", X.DANTE), auth(pxw), f"{X.BLOCKED4}:80", f"[{X.BLOCKED6}]:80")
    assert got == ["EHOSTUNREACH", "EACCES"], r


# REP code -> what connect() reports over IPv4 and over IPv6.
REP_ERRNO = {1: ("ECONNREFUSED",) * 2, 2: ("EHOSTUNREACH", "EACCES"), 3: ("ENETUNREACH",) * 2,
             4: ("EHOSTUNREACH",) * 2, 5: ("ECONNREFUSED",) * 2, 6: ("EHOSTUNREACH",) * 2,
             7: ("ECONNREFUSED",) * 2, 8: ("ECONNREFUSED",) * 2}


def test_every_socks5_reply_code(pxw, cf):
    targets = []
    for rep in REP_ERRNO:
        targets += [f"{R1['v4']}:{X.REP_BASE + rep}", f"[{R1['v6']}]:{X.REP_BASE + rep}"]
    got, r = errnos(cf, proxy_uri("socks5", X.FAKE_REP), [], *targets)
    want = [e for rep in REP_ERRNO for e in REP_ERRNO[rep]]
    assert dict(zip(targets, got)) == dict(zip(targets, want)), r
