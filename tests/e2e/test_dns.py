"""DNS forcing: every DNS message the command sends (UDP or TCP, to any address, port 53) is answered by
childflow's forwarder from the chosen resolver; the address the command wrote to sees nothing.

The world gets two dnsmasq resolvers: the real one on remote1 (198.51.100.10, 2001:db8:100::10)
serving the test names, and a recorder on remote2 (203.0.113.99, 2001:db8:203::99) that answers
differently and must never see a query.  Tests of the default path (no --dns) run childflow in a
private mount namespace whose /etc/resolv.conf names a dnsmasq on 127.0.0.53 in the world's host
namespace: no test ever reads or queries this machine's own resolver configuration.
"""
import os
import socket
import struct
import subprocess
import tempfile
import time

import pytest

import world as W
from cfutil import kill_tree

RES4, RES6 = "198.51.100.10", "2001:db8:100::10"
REC4, REC6 = "203.0.113.99", "2001:db8:203::99"
DEAD4 = "198.51.100.10"     # with its dnsmasq stopped: ICMP port unreachable
HOLE4 = "198.51.100.77"     # no such host: the router's neighbour lookup fails, nothing comes back
LOOP = "127.0.0.53"
A4, A6 = "198.51.100.21", "2001:db8:100::21"
BIG_N = 40                  # A records of big.test: over 512 bytes, so UDP without EDNS truncates


class Dnsmasq:
    """dnsmasq in namespace `ns`, listening on `addrs`, logging every query to its own file."""

    def __init__(self, ns, addrs, logdir, name, records):
        self.log = os.path.join(logdir, f"{name}.dnsmasq.log")
        open(self.log, "w").close()
        argv = ["ip", "netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces", "--user=root",
                "--pid-file=", "--port=53", "--log-queries", f"--log-facility={self.log}",
                "--cache-size=0"]
        argv += [f"--listen-address={a}" for a in addrs] + records
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq {name} exited: {self.proc.stderr.read()!r}")
            with open(self.log) as f:
                if "started" in f.read():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"dnsmasq {name} did not start")

    def queries(self):
        with open(self.log) as f:
            return [line for line in f if " query[" in line]

    def stop(self):
        kill_tree(self.proc)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def records(a4, a6):
    r = [f"--host-record=a.test,{a4},{a6}", "--cname=alias.test,mid.test", "--cname=mid.test,a.test",
         f"--host-record=v6only.test,{a6}"]
    r += [f"--host-record=big.test,10.77.{i // 250}.{i % 250 + 1}" for i in range(BIG_N)]
    return r


@pytest.fixture(scope="module")
def dnsw(world, sess):
    """The resolvers of the world (started once for the module)."""
    rem2 = world.remote["remote2"]
    world.ip(rem2, "addr", "add", f"{REC4}/32", "dev", "eth0", check=False)
    world.ip(rem2, "addr", "add", f"{REC6}/128", "dev", "eth0", "nodad", check=False)
    real = Dnsmasq(world.remote["remote1"], [RES4, RES6], sess.logs, world.prefix + "-res",
                   records(A4, A6))
    rec = Dnsmasq(rem2, [REC4, REC6], sess.logs, world.prefix + "-rec",
                  records("203.0.113.66", "2001:db8:203::66"))
    loop = Dnsmasq(world.host, [LOOP], sess.logs, world.prefix + "-loop", records(A4, A6))
    yield {"real": real, "rec": rec, "loop": loop}
    for d in (real, rec, loop):
        d.stop()
    world.ip(rem2, "addr", "del", f"{REC4}/32", "dev", "eth0", check=False)
    world.ip(rem2, "addr", "del", f"{REC6}/128", "dev", "eth0", check=False)


def dig(*args):
    return ["dig", "+time=3", "+tries=1"] + list(args)


def assert_recorder_silent(dnsw):
    q = dnsw["rec"].queries()
    assert not q, f"the resolver the command wrote to saw queries: {q[:5]}"


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_dig_elsewhere_is_forced(cf, dnsw, fam):
    """`dig @203.0.113.99` (or its v6) is answered by the --dns resolver, from the address dialled."""
    target = REC4 if fam == "v4" else REC6
    r = cf.run(["--dns", RES4, "--", "dig", "+time=3", "+tries=1", f"@{target}", "a.test", "A"], timeout=30)
    assert r.rc == 0, r
    assert f"a.test.\t\t0\tIN\tA\t{A4}" in r.text.replace(" ", "\t") or A4 in r.text, r
    assert f"SERVER: {target}#53" in r.text, r
    assert "status: NOERROR" in r.text, r
    assert_recorder_silent(dnsw)
    assert dnsw["real"].queries(), "the --dns resolver saw nothing"


def test_dig_tcp_and_v6_resolver(cf, dnsw):
    """DNS over TCP (dig +tcp) is forced too; an IPv6 --dns works; AAAA and CNAME chains pass."""
    r = cf.run(["--dns", RES6, "--", "sh", "-c",
                f"dig +tcp +short +time=3 +tries=1 @{REC4} alias.test AAAA; "
                f"dig +short +time=3 +tries=1 @{REC6} alias.test A"], timeout=30)
    assert r.rc == 0, r
    lines = r.text.split()
    assert A6 in lines and A4 in lines and "a.test." in lines and "mid.test." in lines, r
    assert_recorder_silent(dnsw)


def test_truncated_answer_retried_over_tcp(cf, dnsw):
    """A big answer over UDP without EDNS comes back truncated (TC) as the resolver sent it; dig's
    retry over TCP is forwarded over TCP and gets all records."""
    r = cf.run(["--dns", RES4, "--", "dig", "+noedns", "+time=3", "+tries=1", f"@{REC4}", "big.test"],
               timeout=30)
    assert r.rc == 0, r
    assert "Truncated, retrying in TCP mode" in r.text, r
    assert f"ANSWER: {BIG_N}," in r.text, r
    assert_recorder_silent(dnsw)


def test_edns_big_answer_over_udp(cf, dnsw):
    """With EDNS (bufsize 4096) the big answer fits one datagram and passes unchanged."""
    r = cf.run(["--dns", RES4, "--", "dig", "+bufsize=4096", "+ignore", "+time=3", "+tries=1",
                f"@{REC4}", "big.test"], timeout=30)
    assert r.rc == 0, r
    assert f"ANSWER: {BIG_N}," in r.text and "flags: qr" in r.text, r
    assert "udp: 4096" in r.text or "udp:" in r.text, r


def test_busybox_nslookup_and_python(cf, dnsw):
    """Static busybox nslookup and Python's own socket code (a hand-made query) are forced too."""
    q = ("import socket,struct;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);"
         "s.connect(('203.0.113.99',53));"
         "s.send(struct.pack('>HHHHHH',0x4242,0x0100,1,0,0,0)+b'\\x01a\\x04test\\x00'+struct.pack('>HH',1,1));"
         "m=s.recv(4096);print('id',hex(struct.unpack('>H',m[:2])[0]),'ans',struct.unpack('>H',m[6:8])[0],"
         "'addr',socket.inet_ntoa(m[-4:]))")
    r = cf.run(["--dns", RES4, "--", "sh", "-c",
                f"busybox nslookup a.test {REC4}; /usr/bin/python3 -c \"{q}\""], timeout=30)
    assert r.rc == 0, r
    assert A4 in r.text, r
    assert f"id 0x4242 ans 1 addr {A4}" in r.text, r
    assert_recorder_silent(dnsw)


def test_getaddrinfo_and_getent(cf, dnsw):
    """glibc's resolver (getent, Python's getaddrinfo) through the child's resolv.conf: forced whatever
    it names (here the recorder; with the child's own resolv.conf, the gateway)."""
    prog = ("getent ahostsv4 a.test; /usr/bin/python3 -c \"import socket;"
            "print(sorted({a[4][0] for a in socket.getaddrinfo('alias.test',80)}))\"")
    path, argv = private_resolv(cf, f"nameserver {REC4}\noptions timeout:2 attempts:1\n",
                                ["--dns", RES4, "--", "sh", "-c", prog])
    try:
        rc, out, err = run_argv(argv, 30)
    finally:
        os.unlink(path)
    assert rc == 0, (out, err)
    assert A4 in out and A6 in out, (out, err)
    assert_recorder_silent(dnsw)


def test_200_parallel_lookups(cf, dnsw):
    """200 lookups at once (distinct names and sockets) are all answered correctly."""
    prog = ("import socket,struct,select,os\n"
            "socks=[]\n"
            "for i in range(200):\n"
            "  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.connect(('203.0.113.99',53))\n"
            "  name=b'\\x01a\\x04test\\x00' if i%2 else b'\\x05alias\\x04test\\x00'\n"
            "  s.send(struct.pack('>HHHHHH',i,0x0100,1,0,0,0)+name+struct.pack('>HH',1,1));socks.append(s)\n"
            "ok=0\n"
            "for i,s in enumerate(socks):\n"
            "  s.settimeout(5);m=s.recv(4096)\n"
            "  if struct.unpack('>H',m[:2])[0]==i and m[3]&15==0 and socket.inet_ntoa(m[-4:])=='A4': ok+=1\n"
            "print('ok',ok)\n").replace("A4", A4)
    r = cf.run(["--dns", RES4, "--", "/usr/bin/python3", "-c", prog], timeout=40)
    assert r.rc == 0, r
    assert "ok 200" in r.text, r
    assert_recorder_silent(dnsw)


def test_dead_resolver_servfail_fast(cf, world, dnsw):
    """A --dns resolver that refuses (ICMP port unreachable) gives SERVFAIL at once, with one warning."""
    t = world.remote["remote1"]
    # A third address on remote1 where nothing listens on port 53.
    world.ip(t, "addr", "add", "198.51.100.12/32", "dev", "eth0", check=False)
    try:
        t0 = time.monotonic()
        r = cf.run(["--dns", "198.51.100.12", "--", "dig", "+time=5", "+tries=1", f"@{REC4}", "a.test"],
                   timeout=30)
        took = time.monotonic() - t0
    finally:
        world.ip(t, "addr", "del", "198.51.100.12/32", "dev", "eth0", check=False)
    assert "status: SERVFAIL" in r.text, r
    assert took < 3, r
    assert r.etext.count("no DNS resolver answered") == 1, r
    assert_recorder_silent(dnsw)


def test_blackholed_resolver_servfail_before_client_timeout(cf, world, dnsw):
    """A resolver that never answers: SERVFAIL before the client's own timeout (the host's 5 s)."""
    with W.NftTable(world.router, "forward") as nt:
        nt.set(f"ip daddr {HOLE4} drop")
        t0 = time.monotonic()
        r = cf.run(["--dns", HOLE4, "--", "dig", "+time=5", "+tries=1", f"@{REC4}", "a.test"], timeout=30)
        took = time.monotonic() - t0
    assert "status: SERVFAIL" in r.text, r
    assert took < 5.5, r
    assert_recorder_silent(dnsw)


LIMIT = r"""
import socket, struct, time
def q(i, name=b'\x01a\x04test\x00'):
    return struct.pack('>HHHHHH', i, 0x0100, 1, 0, 0, 0) + name + struct.pack('>HH', 1, 1)
one = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); one.connect(('203.0.113.99', 53))
two = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); two.connect(('203.0.113.99', 53))
for i in range(1, 301):
    one.send(q(i))
    if i % 20 == 0:
        time.sleep(0.02)                    # paced: the listener's buffer never overflows
one.send(q(1)); one.send(q(2))              # retransmits of outstanding queries: not new ones
two.send(q(7))                              # another socket: its own limit, not one's
def answers(s, secs):
    got, end = [], time.monotonic() + secs
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return got
        s.settimeout(left)
        try:
            a = s.recv(4096)
        except socket.timeout:
            return got
        got.append((struct.unpack('>H', a[:2])[0], a[3] & 15))
early1, early2 = answers(one, 1.0), answers(two, 0.2)
late1, late2 = answers(one, 4.0), answers(two, 0.5)
print('early', sorted(i for i, _ in early1), sorted(set(r for _, r in early1)), early2)
print('late', len(late1), len(set(i for i, _ in late1)), sorted(set(r for _, r in late1)), late2)
"""


def test_per_client_limit_and_retransmits(cf, world):
    """One client socket gets DNS_PER_CLIENT (256) queries outstanding: the rest get SERVFAIL at
    once; a retransmit of an outstanding query is not a new one (one answer, not counted); another
    socket of the same program is not limited by the first.  The resolver never answers, so every
    kept query ends with SERVFAIL at the forwarder's deadline (the host's 5 s less its margin)."""
    with W.NftTable(world.router, "forward") as nt:
        nt.set(f"ip daddr {HOLE4} drop")
        r = cf.run(["--dns", HOLE4, "--", "/usr/bin/python3", "-c", LIMIT], timeout=30)
    assert r.rc == 0, r
    early = f"early {list(range(257, 301))} [2] []"            # 44 refused at once, all SERVFAIL
    assert early in r.text, r
    assert "late 256 256 [2] [(7, 2)]" in r.text, r              # each kept query answered once


HOSTILE = r"""
import socket, struct
def q(body, hdr=(0x1111, 0x0100, 1, 0, 0, 0)):
    return struct.pack('>HHHHHH', *hdr) + body
msgs = [
    b'garbage',                                            # shorter than a header: dropped
    q(b'\xc0\x0c' + struct.pack('>HH', 1, 1)),             # compression pointer to itself
    q(b'\x3fabc'),                                         # truncated name
    q(b'\x01a\x00' + struct.pack('>HH', 1, 1), (0x2222, 0x0100, 65535, 65535, 65535, 65535)),
    q(b'\x01a\x00' + struct.pack('>HH', 1, 1), (0x3333, 0x8100, 1, 0, 0, 0)),   # QR set: dropped
    q(b'', (0x4444, 0x0100, 0, 0, 0, 0)),                  # no question: FORMERR
]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1); s.connect(('203.0.113.99', 53))
for m in msgs:
    s.send(m)
got = []
try:
    while True:
        a = s.recv(4096); got.append((hex(struct.unpack('>H', a[:2])[0]), a[3] & 15))
except socket.timeout:
    pass
print('answers', sorted(got))
t = socket.create_connection(('203.0.113.99', 53), timeout=3)
t.sendall(struct.pack('>H', 65000) + b'x' * 100)            # a frame far beyond any query
t.close()
"""


def test_hostile_messages_leave_it_healthy(cf, dnsw):
    """Garbage, compression loops, truncated names, absurd counts: FORMERR or dropped; the forwarder
    still answers afterwards."""
    r = cf.run(["--dns", RES4, "--", "sh", "-c",
                f"/usr/bin/python3 -c \"{HOSTILE}\" && dig +short +time=3 +tries=1 @{REC4} a.test"],
               timeout=30)
    assert r.rc == 0, r
    assert "answers [('0x1111', 1), ('0x1111', 1), ('0x2222', 1), ('0x4444', 1)]" in r.text, r   # loop, truncated, counts, no question
    assert r.text.strip().endswith(A4), r
    assert_recorder_silent(dnsw)


def private_resolv(cf, text, args):
    """argv running childflow ARGS in a private mount namespace whose /etc/resolv.conf is `text`.
    The bind mount exists only in that namespace: the machine's file is never touched."""
    fd, path = tempfile.mkstemp(prefix="cfw-resolv-", dir=cf.cwd)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)
    pre = ["ip", "netns", "exec", cf.world.host, "unshare", "-m", "--propagation", "private", "sh", "-c",
           f"mount --bind {path} /etc/resolv.conf && exec \"$@\"", "sh"]
    inner = cf.prefix()[4:]   # the runner's setpriv/env part, without `ip netns exec`
    return path, pre + inner + [cf.bin] + list(args)


def run_argv(argv, timeout):
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, start_new_session=True)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def test_default_path_loopback_host_resolver(cf, dnsw):
    """Without --dns, queries go to the host's own resolver even when it is on loopback (127.0.0.53)."""
    path, argv = private_resolv(cf, f"nameserver {LOOP}\noptions timeout:2 attempts:1\n",
                                ["--", "dig", "+short", "+time=3", "+tries=1", f"@{REC4}", "alias.test"])
    try:
        rc, out, err = run_argv(argv, 30)
    finally:
        os.unlink(path)
    assert rc == 0, (out, err)
    assert A4 in out.split(), (out, err)
    assert dnsw["loop"].queries(), "the host's loopback resolver saw nothing"
    assert_recorder_silent(dnsw)


def test_default_path_resolv_conf_change_taken_up(cf, dnsw, sess):
    """The host's resolv.conf changes during the run: the next query goes to the new nameserver."""
    d = tempfile.mkdtemp(prefix="cfw-rc-", dir=sess.work)
    os.chmod(d, 0o755)
    live = os.path.join(d, "resolv.conf")
    with open(live, "w") as f:
        f.write(f"nameserver {LOOP}\noptions timeout:2 attempts:1\n")
    os.chmod(live, 0o644)
    n_real = len(dnsw["real"].queries())
    # The directory is bound over /etc/resolv.conf's directory entry only: a bind of the file itself
    # would pin the old inode, as a rename by NetworkManager would not.
    script = (f"mount --bind {live} /etc/resolv.conf && exec \"$@\"")
    inner = cf.prefix()[4:]
    prog = (f"dig +short +time=3 +tries=1 @{REC4} mid.test; "
            f"sleep 1.5; dig +short +time=3 +tries=1 @{REC4} mid.test")
    argv = ["ip", "netns", "exec", cf.world.host, "unshare", "-m", "--propagation", "private", "sh", "-c",
            script, "sh"] + inner + [cf.bin, "--", "sh", "-c", prog]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        time.sleep(0.8)
        # Rewrite in place (same inode, new size and mtime), as an editor or resolvconf would.
        with open(live, "w") as f:
            f.write(f"# rewritten\nnameserver {RES4}\noptions timeout:2 attempts:1\n")
        out, err = p.communicate(timeout=30)
    finally:
        kill_tree(p)
        os.unlink(live)
        os.rmdir(d)
    assert p.returncode == 0, (out, err)
    assert out.decode().split().count(A4) == 2, (out, err)
    assert len(dnsw["real"].queries()) > n_real, "the new nameserver saw nothing"
    assert_recorder_silent(dnsw)


# Inside: a long-running process looks a short name up before and after the host's change.
SEARCH_PROBE = r"""
import socket, sys, time
def look():
    try:
        return socket.getaddrinfo("a", 53, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
    except socket.gaierror:
        return "none"
print("before", look(), flush=True)
sys.stdin.readline()
t0, got = time.monotonic(), "none"
while got == "none" and time.monotonic() - t0 < 5:
    time.sleep(0.05)
    got = look()
print("after", got, round(time.monotonic() - t0, 2), flush=True)
print(open("/etc/resolv.conf").read(), flush=True)
"""


def test_default_path_search_change_followed_inside(cf, dnsw, sess):
    """The host's resolv.conf gains a search domain during the run: the child's resolv.conf follows
    (its nameservers still the gateway), and a process already running inside, which looked the
    short name "a" up in vain before, finds a.test afterwards without being restarted."""
    d = tempfile.mkdtemp(prefix="cfw-rc-", dir=sess.work)
    os.chmod(d, 0o755)
    live = os.path.join(d, "resolv.conf")
    with open(live, "w") as f:
        f.write(f"nameserver {LOOP}\noptions timeout:2 attempts:1\n")
    os.chmod(live, 0o644)
    script = f"mount --bind {live} /etc/resolv.conf && exec \"$@\""
    inner = cf.prefix()[4:]
    argv = ["ip", "netns", "exec", cf.world.host, "unshare", "-m", "--propagation", "private", "sh", "-c",
            script, "sh"] + inner + [cf.bin, "--", W.PY, "-c", SEARCH_PROBE]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        first = p.stdout.readline().decode()
        assert first.split() == ["before", "none"], (first, p.stderr.read1().decode())
        # Rewrite in place, as resolvconf does: a search domain and one more option.
        with open(live, "w") as f:
            f.write(f"# rewritten\nsearch test\nnameserver {LOOP}\noptions timeout:2 attempts:1 ndots:1\n")
        p.stdin.write(b"go\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=30)
    finally:
        kill_tree(p)
        os.unlink(live)
        os.rmdir(d)
    out, err = out.decode(), err.decode()
    assert p.returncode == 0, (out, err)
    after = out.split("\n")[0].split()
    assert after[:2] == ["after", A4], (out, err)
    assert float(after[2]) < 2, (out, err)
    inside = out.split("\n", 1)[1]
    assert "search test" in inside and "ndots:1" in inside, inside
    ns = [line.split()[1] for line in inside.splitlines() if line.startswith("nameserver")]
    assert ns and LOOP not in ns and all(a.startswith(("10.", "fd")) for a in ns), inside
    assert_recorder_silent(dnsw)


def test_default_path_rotate_spreads_queries(cf, dnsw):
    """`options rotate` in the host's resolv.conf: successive queries start at successive nameservers
    (glibc's round robin), so both resolvers see queries; without it, the first one sees them all."""
    prog = "; ".join(f"dig +short +time=3 +tries=1 @{REC4} a.test" for _ in range(6))
    seen = {}
    for opts in ("rotate", ""):
        before = (len(dnsw["loop"].queries()), len(dnsw["real"].queries()))
        path, argv = private_resolv(
            cf, f"nameserver {LOOP}\nnameserver {RES4}\noptions timeout:2 attempts:1 {opts}\n",
            ["--", "sh", "-c", prog])
        try:
            rc, out, err = run_argv(argv, 60)
        finally:
            os.unlink(path)
        assert rc == 0 and out.split().count(A4) == 6, (opts, out, err)
        seen[opts] = (len(dnsw["loop"].queries()) - before[0], len(dnsw["real"].queries()) - before[1])
    assert seen["rotate"] == (3, 3), seen
    assert seen[""] == (6, 0), seen
    assert_recorder_silent(dnsw)


# A nameserver on loopback that answers every query, over UDP and TCP, with one rcode and counts
# them (one line per query: "udp" or "tcp").
RCODE_SERVER = r"""
import socket, sys, threading
addr, rcode, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()

def answer(m, proto):
    flags = 0x8000 | (m[2] & 0x01) << 8 | 0x0080 | rcode   # QR, RD copied, RA, rcode
    with lock, open(log, "a") as f:
        f.write(proto + "\n")
    return m[:2] + flags.to_bytes(2, "big") + m[4:6] + b"\0\0\0\0\0\0" + m[12:]

def tcp_conn(c):
    with c:
        buf = b""
        while True:
            d = c.recv(4096)
            if not d:
                return
            buf += d
            while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                n = int.from_bytes(buf[:2], "big")
                m, buf = buf[2:2 + n], buf[2 + n:]
                if len(m) >= 12:
                    a = answer(m, "tcp")
                    c.sendall(len(a).to_bytes(2, "big") + a)

def tcp_serve(t):
    while True:
        c, _ = t.accept()
        threading.Thread(target=tcp_conn, args=(c,), daemon=True).start()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, 53))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((addr, 53))
t.listen(16)
threading.Thread(target=tcp_serve, args=(t,), daemon=True).start()
open(log, "w").close()
while True:
    m, a = s.recvfrom(4096)
    if len(m) >= 12:
        s.sendto(answer(m, "udp"), a)
"""


@pytest.fixture
def rcode_server(cf, sess):
    started = []

    def start(addr, rcode):
        log = os.path.join(sess.logs, f"rcode-{addr}-{rcode}.log")
        if os.path.exists(log):   # an earlier test's: wait for this server's own
            os.unlink(log)
        p = subprocess.Popen(["ip", "netns", "exec", cf.world.host, W.PY, "-c", RCODE_SERVER, addr,
                              str(rcode), log], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
        started.append(p)
        W.wait_file(log, proc=p)
        return lambda proto="udp": open(log).read().split().count(proto)
    yield start
    for p in started:
        kill_tree(p)
        p.wait(timeout=5)


@pytest.mark.parametrize("rcode,status", [(2, "SERVFAIL"), (5, "REFUSED")])
def test_default_path_failing_nameserver_moves_on(cf, dnsw, rcode_server, rcode, status):
    """The host's first nameserver answers SERVFAIL (or REFUSED): the query goes on to the next one,
    as glibc's resolver does, and the command gets the answer; when every nameserver fails so, the
    command gets that rcode."""
    bad = "127.0.0.54"
    count = rcode_server(bad, rcode)
    path, argv = private_resolv(cf, f"nameserver {bad}\nnameserver {LOOP}\noptions timeout:2 attempts:1\n",
                                ["--", "dig", "+time=3", "+tries=1", f"@{REC4}", "a.test"])
    try:
        rc, out, err = run_argv(argv, 30)
    finally:
        os.unlink(path)
    assert rc == 0 and "status: NOERROR" in out and A4 in out, (out, err)
    assert count() == 1, "the failing nameserver was not asked first"

    path, argv = private_resolv(cf, f"nameserver {bad}\noptions timeout:2 attempts:2\n",
                                ["--", "dig", "+time=5", "+tries=1", f"@{REC4}", "a.test"])
    try:
        t0 = time.monotonic()
        rc, out, err = run_argv(argv, 30)
        took = time.monotonic() - t0
    finally:
        os.unlink(path)
    assert f"status: {status}" in out, (out, err)
    assert took < 3, (took, out, err)
    assert count() == 3, "attempts:2 asks the only nameserver twice"
    assert "no DNS resolver answered" not in err, err   # it did answer, with an error
    assert_recorder_silent(dnsw)


@pytest.mark.parametrize("rcode,status", [(2, "SERVFAIL"), (5, "REFUSED")])
def test_default_path_failing_nameserver_moves_on_tcp(cf, dnsw, rcode_server, rcode, status):
    """The same over TCP (`dig +tcp`): a SERVFAIL or REFUSED answer on the session's upstream
    connection sends the query on to the next nameserver, as glibc's res_send does over TCP too;
    when every try fails so, the command gets that rcode, once per try asked."""
    bad = "127.0.0.54"
    count = rcode_server(bad, rcode)
    path, argv = private_resolv(cf, f"nameserver {bad}\nnameserver {LOOP}\noptions timeout:2 attempts:1\n",
                                ["--", "dig", "+tcp", "+time=3", "+tries=1", f"@{REC4}", "a.test"])
    try:
        rc, out, err = run_argv(argv, 30)
    finally:
        os.unlink(path)
    assert rc == 0 and "status: NOERROR" in out and A4 in out, (out, err)
    assert count("tcp") == 1, "the failing nameserver was not asked first"

    path, argv = private_resolv(cf, f"nameserver {bad}\noptions timeout:2 attempts:2\n",
                                ["--", "dig", "+tcp", "+time=5", "+tries=1", f"@{REC4}", "a.test"])
    try:
        t0 = time.monotonic()
        rc, out, err = run_argv(argv, 30)
        took = time.monotonic() - t0
    finally:
        os.unlink(path)
    assert f"status: {status}" in out, (out, err)
    assert took < 3, (took, out, err)
    assert count("tcp") == 3, "attempts:2 asks the only nameserver twice"
    assert count("udp") == 0, "a TCP query went out over UDP"
    assert "no DNS resolver answered" not in err, err
    assert_recorder_silent(dnsw)
