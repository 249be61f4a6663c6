"""Load: what the command does with many flows must not freeze or starve its other flows, and what
it leaves must go away.  (Review D2, red team F7, F9, F10.)

Each test runs childflow as the unprivileged user (the rootless mode the red team attacked); P is
the childflow process outside the sandbox, which is the Popen's own pid (setpriv and env exec).
"""
import json
import os
import subprocess
import time

import pytest

import world as W
from cfutil import CF, Runner, kill_tree, py, read_line, reap, unique_marker
from conftest import _runner

R1, R2 = W.REMOTES["remote1"]["v4"], W.REMOTES["remote2"]["v4"]

# Shared by the inner programs: one HTTP/1.0 GET with an overall deadline, and the fd limit raised
# to the hard limit (the command may need thousands of sockets of its own).
COMMON = r'''
import json, os, resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def http_get(h, p, path, timeout):
    t0 = time.monotonic()
    try:
        s = socket.create_connection((h, p), timeout=timeout)
        s.settimeout(max(0.1, timeout - (time.monotonic() - t0)))
        s.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\n\r\n")
        buf = b""
        while True:
            s.settimeout(max(0.1, timeout - (time.monotonic() - t0)))
            d = s.recv(65536)
            if not d:
                break
            buf += d
        s.close()
        head, sep, body = buf.partition(b"\r\n\r\n")
        res = body.decode(errors="replace") if sep and head.startswith(b"HTTP/1.0 200") else "bad:%r" % buf[:60]
    except socket.timeout:
        res = "error:timeout"
    except OSError as e:
        res = "error:" + type(e).__name__
    return {"body": res, "secs": round(time.monotonic() - t0, 3)}
def open_connects(host, port, n):
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        socks.append(s)
    return socks
'''

PROBE_OK_SECS = 3.0


@pytest.fixture
def cfu(sess, world):
    return CF(_runner(sess, "user"), world, sess.work)


def p_of(proc, cf):
    """P's pid: the Popen's pid, once it runs childflow (setpriv/env/prlimit exec in place)."""
    want = os.path.realpath(cf.bin)

    def is_cf():
        try:
            return os.readlink(f"/proc/{proc.pid}/exe") == want
        except OSError:
            return False
    deadline = time.monotonic() + 10
    while not is_cf():
        assert proc.poll() is None and time.monotonic() < deadline, "childflow did not start"
        time.sleep(0.01)
    return proc.pid


def fds_of(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# The kernel's default fd limits (soft 1024, hard 4096), which many hosts keep: P raises its soft
# limit to the hard one, so it sizes its tables for 4096 fds (1952 TCP flows, 512 UDP flows).
KERNEL_NOFILE = "1024:4096"


def run_limited(cf, args, timeout):
    """Run `childflow ARGS` under the kernel's default fd limits; return (rc, stdout, stderr)."""
    p = cf.popen(["prlimit", f"--nofile={KERNEL_NOFILE}", cf.bin] + list(args), direct=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"timed out after {timeout}s: {args[-8:]!r}")
    finally:
        kill_tree(p)
        p.wait(5)
    return p.returncode, out, err


def check_probe(res, what):
    assert res["body"] == "remote2\n" and res["secs"] < PROBE_OK_SECS, \
        f"{what}: the unrelated request to remote2 did not succeed within {PROBE_OK_SECS}s: {res}"


# ---- a. stalled flows (D2, F7) -----------------------------------------------------------------

# argv: host port n probe_host marker -> n uploads to a server that never reads, each sent until it
# blocks; then one GET /who.txt to probe_host.
STALLED = COMMON + r'''
host, port, n, probe_host = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
socks = []
for i in range(n):
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)   # no send buffer autotuning
    s.setblocking(False)
    socks.append(s)
buf = b"x" * 65536
total = 0
active = list(socks)
t0 = time.monotonic()
deadline = t0 + 5
while active and time.monotonic() < deadline:
    nxt = []
    for s in active:
        try:
            total += s.send(buf)
            nxt.append(s)
        except BlockingIOError:
            pass
    active = nxt
send_secs = round(time.monotonic() - t0, 3)
time.sleep(0.5)
probe = http_get(probe_host, 80, "/who.txt", 5)
print(json.dumps({"uploads": n, "bytes_written": total, "send_secs": send_secs, "still_sending": len(active),
                  "probe": probe}))
'''


def test_stalled_flows_do_not_freeze_others(cfu, world):
    """300 uploads to a server that never reads (more than the relay's 256 pipes) must not stop an
    unrelated request to another server."""
    marker = unique_marker("stall")
    # P's upstream send buffers may grow to 4 MiB each; the kernel's TCP memory is shared by the
    # whole machine, so bound them (in the world's host netns only) for the length of the test.
    wmem = world.sh_ns(world.host, ["sysctl", "-n", "net.ipv4.tcp_wmem"]).strip()
    world.sysctl(world.host, "net.ipv4.tcp_wmem=4096 16384 262144")
    try:
        r = cfu.run(["--"] + py(STALLED, R1, W.SINK_PORT, 300, R2, marker), timeout=40)
        assert r.rc == 0, r
        out = json.loads(r.out)
        print(out)
        assert out["still_sending"] == 0, out   # every upload did stall
        check_probe(out["probe"], "with 300 stalled uploads")
    finally:
        reap(marker)
        world.sysctl(world.host, "net.ipv4.tcp_wmem=" + " ".join(wmem.split()))


# ---- b. blackholed connects (F9) ---------------------------------------------------------------

# argv: host port n probe_host marker -> n non-blocking connects to host:port (dropped upstream), then
# one GET /who.txt to probe_host on port 80.
BLACKHOLED = COMMON + r'''
host, port, n, probe_host = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
socks = open_connects(host, port, n)
time.sleep(1.0)
probe = http_get(probe_host, 80, "/who.txt", 5)
print(json.dumps({"connects": n, "probe": probe}))
'''

BLACKHOLE_PORT = 9999


def test_blackholed_connects_do_not_block_new_flows(cfu, world):
    """3000 connects to a port the network drops (each would hang ~2 min) must not use up the
    relay's TCP table: a request to another port still succeeds.  Under the kernel's default fd
    limits the 3000 pending connects exceed the table (1952 flows)."""
    marker = unique_marker("bhole")
    t0 = time.monotonic()
    with W.NftTable(world.router, "forward") as nft:
        nft.set(f"ip daddr {R1} tcp dport {BLACKHOLE_PORT} drop")
        try:
            rc, out, err = run_limited(cfu, ["--"] + py(BLACKHOLED, R1, BLACKHOLE_PORT, 3000, R2, marker),
                                       timeout=25)
        finally:
            reap(marker)
    secs = time.monotonic() - t0
    assert rc == 0, (rc, out, err)
    check_probe(json.loads(out)["probe"], "with 3000 blackholed connects pending")
    assert secs < 15, f"took {secs:.1f}s"


# ---- c. UDP spray (F10) ------------------------------------------------------------------------

# argv: echo_host echo_port spray_host nports secs tag marker -> a forked process sends datagrams
# round-robin to nports ports of spray_host for secs seconds (a new flow per port), while one socket
# (one flow) sends a tagged datagram to the echo server every 50 ms and waits for each answer.
UDP_SPRAY = COMMON + r'''
eh, ep, sh, nports, secs, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
# The active flow exists (one answered exchange) before the spray starts.
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.settimeout(1.0)
a.sendto(("%s-first" % tag).encode(), (eh, ep))
a.recv(65535)
pid = os.fork()
if pid == 0:
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.setblocking(False)
    end, sent, port = time.monotonic() + secs, 0, 0
    while time.monotonic() < end:
        for _ in range(256):
            try:
                b.sendto(b"spray", (sh, 20000 + port))
                sent += 1
            except OSError:
                pass
            port = (port + 1) % nports
    os.write(1, b"%d\n" % sent)
    os._exit(0)
time.sleep(0.3)
answered, lost, i = 0, 0, 0
t_end = time.monotonic() + secs - 0.5
while time.monotonic() < t_end:
    t0 = time.monotonic()
    msg = ("%s-%d" % (tag, i)).encode()
    a.sendto(msg, (eh, ep))
    a.settimeout(1.0)
    try:
        while a.recv(65535) != msg:
            pass
        answered += 1
    except socket.timeout:
        lost += 1
    i += 1
    time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))
os.waitpid(pid, 0)
print(json.dumps({"answered": answered, "lost": lost}))
'''


def test_udp_spray_keeps_active_flows(cfu, world):
    """While the command sprays datagrams to 10,000 ports (a new flow each; far more than the 512
    flows of the UDP table under the kernel's default fd limits), its one active UDP flow (a datagram
    every 50 ms, established before the spray) keeps its answers, and stays one flow: the server
    sees one source port."""
    marker = unique_marker("spray")
    tag = "spr" + os.urandom(4).hex()
    try:
        rc, out, err = run_limited(cfu, ["--"] + py(UDP_SPRAY, R1, W.ECHO_PORT, R2, 10000, 2, tag, marker),
                                   timeout=30)
    finally:
        reap(marker)
    assert rc == 0, (rc, out, err)
    lines = out.decode().strip().splitlines()
    res = json.loads(lines[-1])
    sprayed = int(lines[0])
    print(f"sprayed {sprayed} datagrams; echo flow {res}")
    assert sprayed > 10000, out      # the spray did cover every port at least once
    # Every exchange is answered (how many fit in the time depends on the machine's load, which is
    # not what this test measures; a handful shows the flow was exercised throughout the spray).
    assert res["lost"] == 0 and res["answered"] >= 5, f"the active UDP flow lost answers: {res}"
    hits = world.svc_remote1.wait_find(svc="udp-echo", data=tag + "-*")
    ports = {h["cport"] for h in hits}
    assert len(ports) == 1, f"the active flow was re-created {len(ports) - 1} times (ports {sorted(ports)})"


def test_udp_spray_control(world, sess):
    """The control: the same spray without childflow, in the host netns (as root), loses no answer."""
    ctl = CF(Runner("root", None), world, sess.work)
    r = ctl.direct(py(UDP_SPRAY, R1, W.ECHO_PORT, R2, 10000, 2, "ctl" + os.urandom(4).hex(), "ctl"),
                   timeout=30)
    assert r.rc == 0, r
    res = json.loads(r.text.strip().splitlines()[-1])
    assert res["lost"] == 0 and res["answered"] >= 5, res


# ---- d. a thousand flows and a UDP flood -------------------------------------------------------

# argv: sink_host sink_port n udp_host udp_port probe_host marker.  Commands on stdin:
#   HOLD   -> opens n TCP connections to the sink and keeps them; floods udp_host:udp_port from 8
#             sockets for 2 s (a forked process) while it probes probe_host; prints the probe
#   CLOSE  -> closes everything; prints CLOSED
FLOWS_AND_FLOOD = COMMON + r'''
sh, sp, n, uh, up, ph = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
print("READY", flush=True)
held, flooders = [], []
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "HOLD":
        for i in range(n):
            held.append(socket.create_connection((sh, sp), timeout=5))
        pid = os.fork()
        if pid == 0:
            us = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
            for u in us:
                u.setblocking(False)
            end, sent = time.monotonic() + 2, 0
            while time.monotonic() < end:
                for u in us:
                    try:
                        u.sendto(b"f" * 512, (uh, up))
                        sent += 1
                    except OSError:
                        pass
            os._exit(0)
        time.sleep(0.5)
        probe = http_get(ph, 80, "/who.txt", 5)
        os.waitpid(pid, 0)
        print(json.dumps({"held": len(held), "probe": probe}), flush=True)
    elif cmd == "CLOSE":
        for s in held:
            s.close()
        held = []
        print("CLOSED", flush=True)
'''

FLOOD_FLOWS = 8
UDP_CLOSED_PORT = 9   # nothing listens on udp/9 of the remotes: the flood loads P, not a test server


def test_thousand_flows_and_udp_flood(cfu, world):
    """1,000 concurrent TCP flows plus a UDP flood: a new request still succeeds; once the command
    closes them, P's fd count and RSS come back close to their idle values."""
    marker = unique_marker("flood")
    before = len(world.svc_remote1.find(svc="sink"))
    p = cfu.popen(["--"] + py(FLOWS_AND_FLOOD, R1, W.SINK_PORT, 1000, R2, UDP_CLOSED_PORT, R2, marker),
                  stdin=subprocess.PIPE)
    try:
        pid = p_of(p, cfu)
        assert read_line(p.stdout, 20) == b"READY\n"
        time.sleep(0.2)
        idle_fds, idle_rss = fds_of(pid), rss_kib(pid)

        p.stdin.write(b"HOLD\n")
        p.stdin.flush()
        res = json.loads(read_line(p.stdout, 40))
        peak_fds, peak_rss = fds_of(pid), rss_kib(pid)
        assert res["held"] == 1000, res
        check_probe(res["probe"], "with 1000 TCP flows and a UDP flood")
        assert peak_fds >= idle_fds + 2000, f"P holds {peak_fds} fds with 1000 flows open (idle {idle_fds})"
        sinks = world.svc_remote1.wait_find(timeout=5, svc="sink")
        assert len(sinks) - before >= 1000, f"the sink saw {len(sinks) - before} connections"

        p.stdin.write(b"CLOSE\n")
        p.stdin.flush()
        assert read_line(p.stdout, 20) == b"CLOSED\n"
        # what may stay: the flood's 8 UDP flows (2 fds each, until their idle expiry) and pooled pipes
        fd_limit = idle_fds + 2 * FLOOD_FLOWS + 8
        deadline = time.monotonic() + 5
        while fds_of(pid) > fd_limit and time.monotonic() < deadline:
            time.sleep(0.05)
        after_fds, after_rss = fds_of(pid), rss_kib(pid)
        print(f"P fds idle {idle_fds} peak {peak_fds} after {after_fds}; "
              f"RSS KiB idle {idle_rss} peak {peak_rss} after {after_rss}")
        assert after_fds <= fd_limit, f"P keeps {after_fds} fds after the flows closed (idle {idle_fds})"
        assert after_rss <= idle_rss + 2048, f"P's RSS stays at {after_rss} KiB (idle {idle_rss} KiB)"
        p.stdin.close()
        assert p.wait(10) == 0, p.stderr.read()
    finally:
        kill_tree(p)
        p.wait(5)
        reap(marker)


# ---- e. a burst of parallel connects with few fds --------------------------------------------------

# argv: host port n -> n non-blocking connects at once, then each sends a line and reads its echo;
# prints how many got their echo and how many failed (and how).
BURST = COMMON + r'''
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = open_connects(host, port, n)
ok, failed = 0, {}
for i, s in enumerate(socks):
    s.setblocking(True)
    s.settimeout(10)
    try:
        s.sendall(b"burst-%d\n" % i)
        if s.recv(100) == b"burst-%d\n" % i:
            ok += 1
        else:
            failed["short"] = failed.get("short", 0) + 1
    except OSError as e:
        failed[type(e).__name__] = failed.get(type(e).__name__, 0) + 1
    s.close()
print(json.dumps({"ok": ok, "failed": failed}))
'''


def test_parallel_connect_burst_with_few_fds(cfu, world):
    """64 connects at once (a browser opening a page) all work even when childflow has few fds: a
    burst of young pending connects makes new connections wait in the backlog, it does not make live
    connects yield (the yield is for connects that have been pending a while: blackholes)."""
    p = cfu.popen(["prlimit", "--nofile=400", cfu.bin, "--"] + py(BURST, R1, W.ECHO_PORT, 64), direct=True)
    try:
        out, err = p.communicate(timeout=30)
    finally:
        kill_tree(p)
        p.wait(5)
    assert p.returncode == 0, (out, err)
    res = json.loads(out.decode().strip().splitlines()[-1])
    assert res == {"ok": 64, "failed": {}}, res
