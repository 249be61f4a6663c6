#!/usr/bin/python3
"""childflow benchmark: the same workloads over the direct path, childflow and its peers.

    /usr/bin/python3 bench/run.py [--quick] [--paths a,b] [--only w1,w2] [--update-docs]

(`make bench` runs it after installing the tools.) It needs root, because it builds a closed world
of two network namespaces that has no link to the machine's real network:

    client netns  cfb<pid>-client                 server netns  cfb<pid>-server
    eth0 198.18.1.2/24  <== veth, MTU 65520 ==>    eth0 198.18.1.1/24
    default via 198.18.1.1                         lo   198.51.100.10/32  (iperf3, sockperf, flowtool)

Before building it, the world's ranges are checked against the machine's own addresses and routes
(tests/e2e/world.py check_ranges_free()): a clash refuses to start.

Every path runs its client command in the client netns; the servers listen on 198.51.100.10 in the
server netns. A path is one line of PATHS below: a name and the argv prefix that wraps a command.
Paths whose probe fails (for example `childflow --root` while it is not built) are left out of the
table and named under "Paths not run".

For every workload, each repetition runs every path once (in a rotating order) before the next
repetition starts, so that noise hits all paths alike. Each figure is the median over repetitions
with the spread (min-max). Ratios and "added" differences are paired: each repetition's figure is
divided by (or reduced by) the same repetition's direct figure, and the median of those is shown, so
that the machine's drift between repetitions (a VM here changes speed by 2x within an hour) cancels;
without repetition indices they fall back to the direct path's median. The benchmark never fails
on a number; it exits non-zero only if it could not run at all.

Outputs: one markdown table on stdout, bench/results/latest.md (machine, method, table, targets,
notes) and bench/results/latest.json (raw samples). --update-docs also copies the results into
docs/performance.md between its `<!-- bench:begin -->` and `<!-- bench:end -->` markers.
"""
import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from world import RangeClash, check_ranges_free  # noqa: E402  (the one range check of every world)
CHILDFLOW = os.path.join(ROOT, "build", "childflow")
SLIRP_WRAP = os.path.join(HERE, "slirp-wrap.sh")
RESULTS = os.path.join(HERE, "results")
DOC = os.path.join(ROOT, "docs", "performance.md")
PY = "/usr/bin/python3"

CLIENT_IP, GATEWAY_IP, SERVER_IP, MTU = "198.18.1.2", "198.18.1.1", "198.51.100.10", 65520
WORLD_RANGES = ["198.18.1.0/24", f"{SERVER_IP}/32"]
IPERF_PORT, SP_TCP_PORT, SP_UDP_PORT, RATE_PORT, HOLD_PORT = 5201, 11111, 11112, 7000, 7001
FLOWTOOL = "@FLOWTOOL@"  # replaced by the compiled helper's path
DNS_NAME, DNS_ANSWER = "bench.test", "198.51.100.77"
# The proxy workload: proxies on the server netns' eth0, a bulk HTTP source behind them.
PROXY_PORTS = {"http": 3128, "socks5": 1080, "https": 3129,   # tinyproxy, microsocks, stunnel+tinyproxy
               "socks5-dante": 1081}                          # danted (takes a pipelined handshake)
PROXY_NAMES = {"http": "tinyproxy (http)", "socks5": "microsocks (socks5)", "https": "stunnel+tinyproxy (https)",
               "socks5-dante": "dante (socks5)"}


def proxy_scheme(kind):
    return kind.split("-")[0]
SOURCE_PORT = 7002

# `childflow -c` captures to a tmpfs file (removed after every run; bulk TCP writes gigabytes).
CAPTURE_FILE = f"/dev/shm/childflow-bench-{os.getpid()}.pcapng"

PASTA = ["pasta", "-q", "-4", "--runas", "0", "--config-net",
         "-t", "none", "-u", "none", "-T", "none", "-U", "none", "--"]

# The paths. One line each: (name, argv prefix the client command is appended to, tools it needs).
# Every path whose name starts with "childflow" also gets P's own CPU and memory measured.
PATHS = [
    ("direct", [], []),
    ("childflow", [CHILDFLOW, "--"], [CHILDFLOW]),
    ("childflow --fast-tcp", [CHILDFLOW, "--fast-tcp", "--"], [CHILDFLOW]),
    ("childflow --root", [CHILDFLOW, "--root", "--"], [CHILDFLOW]),
    ("childflow -c", [CHILDFLOW, "-c", CAPTURE_FILE, "--"], [CHILDFLOW]),
    ("childflow -c -C egress", [CHILDFLOW, "-c", CAPTURE_FILE, "-C", "egress", "--"], [CHILDFLOW]),
    # The same capture written to /dev/null: the capture's own cost without the file system's.
    ("childflow -c /dev/null", [CHILDFLOW, "-c", "/dev/null", "--"], [CHILDFLOW]),
    ("pasta", PASTA, ["pasta"]),
    ("slirp4netns", [SLIRP_WRAP], ["slirp4netns", "unshare", SLIRP_WRAP]),
]
# Before/after comparisons in one run: CHILDFLOW_BENCH_BASELINE=/path/to/an/older/build/childflow adds
# it as the paths "childflow (baseline)", "childflow --fast-tcp (baseline)" and "childflow --root
# (baseline)", each beside its own path, and "childflow (baseline) -c" and "childflow (baseline) -c -C
# egress" after the capture paths, measured interleaved with the others.
_BASELINE = os.environ.get("CHILDFLOW_BENCH_BASELINE")


def _beside(name, path):
    PATHS.insert(PATHS.index(next(p for p in PATHS if p[0] == name)) + 1, path)


if _BASELINE:
    _beside("childflow", ("childflow (baseline)", [_BASELINE, "--"], [_BASELINE]))
    _beside("childflow --fast-tcp", ("childflow --fast-tcp (baseline)", [_BASELINE, "--fast-tcp", "--"], [_BASELINE]))
    _beside("childflow --root", ("childflow --root (baseline)", [_BASELINE, "--root", "--"], [_BASELINE]))
    # ... and its capture paths after ours (capture before/after in one run: --paths picks them).
    _beside("childflow -c -C egress", ("childflow (baseline) -c -C egress",
                                       [_BASELINE, "-c", CAPTURE_FILE, "-C", "egress", "--"], [_BASELINE]))
    _beside("childflow -c -C egress", ("childflow (baseline) -c", [_BASELINE, "-c", CAPTURE_FILE, "--"], [_BASELINE]))

# Start-up references that are not network paths (shown as notes, not as columns).
STARTUP_REFERENCES = [("unshare -Urn true", ["unshare", "-Urn", "true"])]

CLONE_NEWNET = 0x40000000
CLK_TCK = os.sysconf("SC_CLK_TCK")
LIBC = ctypes.CDLL(None, use_errno=True)

# ----------------------------------------------------------------------------------------------
# process bookkeeping: everything started is tracked and stopped on every exit path


LIVE = []  # Popen objects that may still run


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted(f"signal {signum}")


def setns_path(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if LIBC.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({path}): {os.strerror(e)}")
    finally:
        os.close(fd)


def spawn(ns, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    """Start argv inside network namespace `ns` (its own session, so the group can be killed)."""
    p = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True,
                         close_fds=True, preexec_fn=lambda: setns_path(f"/run/netns/{ns}"))
    LIVE.append(p)
    return p


def stop(p, grace=1.0):
    if p.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    for f in (p.stdin, p.stdout, p.stderr):
        if f:
            try:
                f.close()
            except OSError:
                pass
    if p in LIVE:
        LIVE.remove(p)


def proc_cpu_s(pid):
    """CPU time of one process (all its threads, not its children), in seconds, or None.

    /proc/PID/task/*/schedstat (nanoseconds on CPU per thread: P has a capture writer thread with
    -c) when the kernel has it, else utime + stime from /proc/PID/stat (clock ticks)."""
    try:
        total = 0
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, IndexError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_mem_kib(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


class Result:
    def __init__(self, rc, out, err, wall, p_cpu):
        self.rc, self.out, self.err, self.wall, self.p_cpu = rc, out, err, wall, p_cpu

    def why(self):
        lines = [l for l in (self.err or "").splitlines() if l.strip() and "syslog" not in l]
        tail = lines[-1] if lines else (self.out or "").strip()[-200:]
        return f"exit {self.rc}: {tail}" if self.rc is not None else f"timed out: {tail}"


def capture_result():
    """The kernel's counters (received, dropped) from the statistics block (ISB) that ends the bench's
    capture file, or None when there is none (a cut capture); the file is removed either way."""
    try:
        with open(CAPTURE_FILE, "rb") as f:
            f.seek(-4, os.SEEK_END)
            bl = struct.unpack("<I", f.read(4))[0]
            f.seek(-bl, os.SEEK_END)
            blk = f.read(bl)
    except (OSError, struct.error):
        return None
    finally:
        try:
            os.unlink(CAPTURE_FILE)
        except OSError:
            pass
    if len(blk) < 24 or struct.unpack_from("<I", blk)[0] != 5:
        return None
    opts, off, body = {}, 20, blk[:-4]
    while off + 4 <= len(body):
        code, ln = struct.unpack_from("<HH", body, off)
        if code == 0:
            break
        opts[code] = body[off + 4:off + 4 + ln]
        off += 4 + ((ln + 3) & ~3)
    if 4 not in opts or 5 not in opts:
        return None
    return struct.unpack("<Q", opts[4])[0], struct.unpack("<Q", opts[5])[0]


LAST_CAPTURE = [None]  # (received, dropped) of the last run of the `childflow -c` path


def tmpfs_write_gbit(mib=2048):
    """How fast this machine writes new pages into the capture file's tmpfs (64 KiB writes, like a
    capture writer's): the ceiling of any capture to a file there, in Gbit/s."""
    path, buf = CAPTURE_FILE + ".ceiling", b"\x5a" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(mib * 16):
            os.write(fd, buf)
        return mib * 8 * 1048576 / 1e9 / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)


def run(ns, argv, timeout, track=False):
    """Run argv in ns to completion (bounded); optionally sample its own CPU time while it runs."""
    t0 = time.perf_counter()
    p = spawn(ns, argv)
    cpu = None
    out = err = b""
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                out, err = p.communicate(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if track:
                    c = proc_cpu_s(p.pid)
                    if c is not None and p.poll() is None:
                        cpu = c
                if time.monotonic() > deadline:
                    stop(p)
                    return Result(None, "", "", time.perf_counter() - t0, cpu)
    finally:
        stop(p)
        if CAPTURE_FILE in argv:
            LAST_CAPTURE[0] = capture_result()
    return Result(p.returncode, out.decode(errors="replace"), err.decode(errors="replace"),
                  time.perf_counter() - t0, cpu)


def sh(argv, check=True, timeout=20):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {p.stderr.decode(errors='replace').strip()}")
    return p.stdout.decode(errors="replace")


# ----------------------------------------------------------------------------------------------
# the closed world


class World:
    def __init__(self, scratch):
        self.client = f"cfb{os.getpid()}-client"
        self.server = f"cfb{os.getpid()}-server"
        self.scratch = scratch
        self.servers = {}

    @staticmethod
    def cleanup_stray():
        """Remove namespaces of earlier benchmark runs whose process is gone."""
        for line in sh(["ip", "netns", "list"], check=False).splitlines():
            m = re.match(r"^(cfb(\d+)-(client|server))\b", line)
            if not m:
                continue
            try:
                os.kill(int(m.group(2)), 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            World.delete_ns(m.group(1))

    @staticmethod
    def delete_ns(ns):
        for _ in range(3):
            pids = sh(["ip", "netns", "pids", ns], check=False).split()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            time.sleep(0.1)
        sh(["ip", "netns", "delete", ns], check=False)

    def up(self):
        check_ranges_free(WORLD_RANGES, "bench world")
        c, s = self.client, self.server
        for ns in (c, s):
            sh(["ip", "netns", "add", ns])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1", "net.core.somaxconn=8192",
                "net.ipv4.tcp_max_syn_backlog=8192"])
        sh(["ip", "-n", c, "link", "add", "eth0", "mtu", str(MTU), "type", "veth",
            "peer", "name", "eth0", "netns", s, "mtu", str(MTU)])
        sh(["ip", "-n", c, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0"])
        sh(["ip", "-n", s, "addr", "add", f"{GATEWAY_IP}/24", "dev", "eth0"])
        sh(["ip", "-n", s, "addr", "add", f"{SERVER_IP}/32", "dev", "lo"])
        sh(["ip", "-n", c, "link", "set", "eth0", "up"])
        sh(["ip", "-n", s, "link", "set", "eth0", "up"])
        sh(["ip", "-n", c, "route", "add", "default", "via", GATEWAY_IP])

    def down(self):
        for name in list(self.servers):
            self.stop_server(name)
        for ns in (self.client, self.server):
            if os.path.exists(f"/run/netns/{ns}"):
                self.delete_ns(ns)

    # servers -----------------------------------------------------------------------------
    SERVER_ARGV = {
        "iperf3": (["iperf3", "-s", "-B", SERVER_IP, "-p", str(IPERF_PORT)], "tcp", IPERF_PORT),
        "sockperf-tcp": (["sockperf", "sr", "--tcp", "-i", SERVER_IP, "-p", str(SP_TCP_PORT)],
                         "tcp", SP_TCP_PORT),
        "sockperf-udp": (["sockperf", "sr", "-i", SERVER_IP, "-p", str(SP_UDP_PORT)], "udp", SP_UDP_PORT),
        "flowtool": ([FLOWTOOL, "serve", SERVER_IP, str(RATE_PORT), str(HOLD_PORT)], "tcp", HOLD_PORT),
        # an authoritative-only resolver: answers from its own table, never forwards anywhere
        "dnsmasq": (["dnsmasq", "-k", "--no-resolv", "--no-hosts", "--no-poll", f"--listen-address={SERVER_IP}",
                     "--bind-interfaces", "--port", "53", f"--address=/{DNS_NAME}/{DNS_ANSWER}",
                     "--user=root", "--pid-file=", "--dns-forward-max=10000", "--log-facility=-"],
                    "udp", 53),
    }

    def start_server(self, name):
        argv, proto, port = self.SERVER_ARGV[name]
        argv = [FLOWTOOL_PATH if a == FLOWTOOL else a for a in argv]
        log = open(os.path.join(self.scratch, f"{name}.log"), "ab")
        p = spawn(self.server, argv, stdout=log, stderr=log)
        log.close()
        self.servers[name] = p
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise RuntimeError(f"server {name} exited ({p.returncode}); see its log")
            if listening(p.pid, proto, port):
                return
            time.sleep(0.02)
        raise RuntimeError(f"server {name} did not start listening")

    def stop_server(self, name):
        p = self.servers.pop(name, None)
        if p:
            stop(p)

    def restart_server(self, name):
        self.stop_server(name)
        self.start_server(name)

    def server_alive(self, name):
        p = self.servers.get(name)
        return p is not None and p.poll() is None


def listening(pid, proto, port):
    """Whether a socket on `port` is listening (tcp) or bound (udp) in pid's network namespace."""
    want = f":{port:04X}"
    try:
        with open(f"/proc/{pid}/net/{proto}") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1].endswith(want) and (proto == "udp" or parts[3] == "0A"):
                    return True
    except OSError:
        pass
    return False


# ----------------------------------------------------------------------------------------------
# workloads: each takes (path prefix, P tracked?) and returns {row key: value}; None = failure


FLOWTOOL_PATH = None
CFG = {}


def median(xs):
    return statistics.median(xs) if xs else None


def pairs(data, key, path, base="direct", base_key=None):
    """(value of `path`, value of `base`) for each repetition that has both, or None when the
    repetitions were not recorded (data["_rep"], filled by record()).  `base_key`: the base's
    figures are under another key of the same workload (default `key`)."""
    bk = base_key or key
    rep = data.get("_rep", {})
    va, vb = data.get(key, {}).get(path, []), data.get(bk, {}).get(base, [])
    ia, ib = rep.get(key, {}).get(path), rep.get(bk, {}).get(base)
    if ia is None or ib is None or len(ia) != len(va) or len(ib) != len(vb):
        return None
    bv = dict(zip(ib, vb))
    return [(v, bv[i]) for i, v in zip(ia, va) if i in bv]


def ratio(data, key, path, base="direct"):
    """The median of the per-repetition ratios path/base; else the ratio of the medians."""
    pr = pairs(data, key, path, base)
    if pr is not None:
        return median([a / b for a, b in pr if b])
    a, b = median(data.get(key, {}).get(path, [])), median(data.get(key, {}).get(base, []))
    return a / b if a is not None and b else None


def added(data, key, base="direct", base_key=None):
    """{path: per-repetition differences to the same repetition's `base` figure} (paired; the
    base's median when repetitions were not recorded), for the "added vs direct" rows.
    `base_key` as for pairs()."""
    out = {}
    bmed = median(data.get(base_key or key, {}).get(base, []))
    for name, vals in data.get(key, {}).items():
        pr = pairs(data, key, name, base, base_key)
        if pr is not None:
            out[name] = [a - b for a, b in pr]
        elif bmed is not None:
            out[name] = [v - bmed for v in vals]
    return out


def parse_kv(text):
    return {k: v for k, v in re.findall(r"(\w+)=([\w.\-]+)", text)}


def iperf(world, prefix, track, key, extra, secs, omit):
    argv = prefix + ["iperf3", "-c", SERVER_IP, "-p", str(IPERF_PORT), "-J", "-t", str(secs)]
    if omit:
        argv += ["-O", str(omit)]
    for attempt in range(3):  # the server may still be finishing the previous test
        c0 = machine_busy_s()
        r = run(world.client, argv + extra, timeout=secs + omit + 20, track=track)
        c1 = machine_busy_s()
        if "server is busy" not in r.out:
            break
        time.sleep(0.5 + attempt)
    try:
        end = json.loads(r.out)["end"]
        s = end["sum_received"]
        res = {key: s["bits_per_second"] / 1e9}
        if "lost_percent" in s:
            res[key + "_loss"] = s["lost_percent"]
    except (ValueError, KeyError, TypeError):
        world.restart_server("iperf3")  # a failed run may leave the server busy
        msg = r.why()
        try:
            msg = json.loads(r.out).get("error", msg)
        except ValueError:
            pass
        raise WorkloadError(msg)
    if r.rc != 0:
        world.restart_server("iperf3")
        raise WorkloadError(r.why())
    if track and r.p_cpu is not None:
        res["pcpu_" + key] = 100.0 * r.p_cpu / (secs + omit)
    if CAPTURE_FILE in argv and LAST_CAPTURE[0]:
        res["capdrop_" + key] = LAST_CAPTURE[0][1]
    if key.startswith("tcp") and c0 is not None and c1 is not None:
        moved = s["bits_per_second"] / 8 * (secs + omit)  # bytes, assuming the omitted second alike
        res["cost_" + key] = (c1 - c0) / (moved / 1e9)
    return res


def machine_busy_s():
    """CPU seconds spent busy on all cores since boot (user+nice+system+irq+softirq+steal)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


class WorkloadError(Exception):
    pass


def sockperf(world, prefix, track, key, tcp, secs):
    port = SP_TCP_PORT if tcp else SP_UDP_PORT
    argv = prefix + ["sockperf", "ping-pong", "-i", SERVER_IP, "-p", str(port), "-t", str(secs),
                     "-m", "64"] + (["--tcp"] if tcp else [])
    r = run(world.client, argv, timeout=secs + 20)
    text = re.sub(r"\x1b\[[0-9;]*m", "", r.out + r.err)
    p50 = re.search(r"percentile 50\.000 =\s*([\d.]+)", text)
    p99 = re.search(r"percentile 99\.000 =\s*([\d.]+)", text)
    if r.rc != 0 or not p50:
        raise WorkloadError(r.why())
    res = {key + "_p50": float(p50.group(1))}
    if p99:
        res[key + "_p99"] = float(p99.group(1))
    return res


def conn_rate(world, prefix, track, secs):
    r = run(world.client, prefix + [FLOWTOOL_PATH, "rate", SERVER_IP, str(RATE_PORT), str(secs)],
            timeout=secs + 20, track=track)
    kv = parse_kv(r.out)
    if r.rc != 0 or "conns" not in kv:
        raise WorkloadError(r.why())
    rate = int(kv["conns"]) / float(kv["seconds"])
    res = {"conn_rate": rate, "conn_us": 1e6 / rate}
    if track and r.p_cpu is not None and int(kv["conns"]):
        res["pcpu_conn"] = 1e6 * r.p_cpu / int(kv["conns"])
    return res


def icmp_echo(world, prefix, track, key, count, pace):
    """ping's own round-trip figures for `count` echoes, 10 ms apart (pace="0.01": each process on the
    way wakes from sleep for each echo, as with a real ping) or back to back (pace="adaptive": ping -A
    sends the next one as the reply arrives)."""
    gap = ["-A"] if pace == "adaptive" else ["-i", pace]
    r = run(world.client, prefix + ["ping", "-n", "-q", "-c", str(count)] + gap + ["-W", "1", SERVER_IP],
            timeout=count * 0.05 + 20)
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", r.out)
    got = re.search(r"(\d+) received", r.out)
    if r.rc != 0 or not rtt or not got:
        raise WorkloadError(r.why())
    return {key + "_avg": float(rtt.group(2)) * 1000, key + "_mdev": float(rtt.group(4)) * 1000,
            key + "_lost": 100.0 * (count - int(got.group(1))) / count}


def dns_prefix(prefix):
    """childflow answers every query itself: tell it the resolver (never the machine's own).
    The same for the baseline build, which would otherwise ask the machine's resolv.conf."""
    if prefix[:1] in ([CHILDFLOW], [_BASELINE]):
        return prefix[:1] + ["--dns", SERVER_IP] + prefix[1:]
    return prefix


def dns_load(world, prefix, track, secs):
    """Queries per second with 100 outstanding (dnsperf), and latency with one outstanding."""
    qfile = os.path.join(world.scratch, "dns-queries.txt")
    if not os.path.exists(qfile):
        with open(qfile, "w") as f:
            f.write("".join(f"{n}.{DNS_NAME} A\n" for n in ("www", "api", "cdn", "mail")))
        os.chmod(qfile, 0o644)
    res = {}
    if shutil.which("dnsperf"):
        r = run(world.client, dns_prefix(prefix) + ["dnsperf", "-s", SERVER_IP, "-d", qfile, "-l", str(secs),
                                                    "-q", "100", "-t", "2"], timeout=secs + 20)
        qps = re.search(r"Queries per second:\s*([\d.]+)", r.out)
        lost = re.search(r"Queries lost:\s*\d+ \(([\d.]+)%\)", r.out)
        if r.rc != 0 or not qps:
            raise WorkloadError(r.why())
        res["dns_qps"] = float(qps.group(1))
        if lost:
            res["dns_lost"] = float(lost.group(1))
    r = run(world.client, dns_prefix(prefix) + [FLOWTOOL_PATH, "dnslat", SERVER_IP, f"www.{DNS_NAME}",
                                                str(secs)], timeout=secs + 20)
    kv = parse_kv(r.out)
    if r.rc != 0 or "p50_us" not in kv:
        raise WorkloadError(r.why())
    res["dns_p50"], res["dns_p99"] = float(kv["p50_us"]), float(kv["p99_us"])
    return res


def proxy_setup(world):
    """Start tinyproxy, microsocks and stunnel (a self-signed certificate for GATEWAY_IP) in the
    server netns, and the bulk source they lead to.  Return: the certificate's path (the CA)."""
    d = world.scratch
    cert, key = os.path.join(d, "proxy.pem"), os.path.join(d, "proxy.key")
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=childflow bench proxy",
        "-addext", f"subjectAltName=IP:{GATEWAY_IP}"])
    os.chmod(cert, 0o644)
    with open(os.path.join(d, "tinyproxy.conf"), "w") as f:
        f.write(f"User nobody\nGroup nogroup\nPort {PROXY_PORTS['http']}\nListen {GATEWAY_IP}\nTimeout 60\n"
                "MaxClients 200\nLogLevel Critical\n")
    with open(os.path.join(d, "stunnel.conf"), "w") as f:
        # syslog = no, debug = warning: stunnel would write each connection's notices to /dev/console
        # (no /dev/log here), which costs ~2 ms per line and dwarfed every per-connection number.
        f.write("foreground = yes\npid =\nsyslog = no\ndebug = warning\n"
                f"[https]\naccept = {GATEWAY_IP}:{PROXY_PORTS['https']}\n"
                f"connect = {GATEWAY_IP}:{PROXY_PORTS['http']}\ncert = {cert}\nkey = {key}\n"
                "sslVersionMin = TLSv1.2\n")
    with open(os.path.join(d, "danted.conf"), "w") as f:
        f.write(f"logoutput: {d}/danted.log\ninternal: {GATEWAY_IP} port = {PROXY_PORTS['socks5-dante']}\n"
                "external: eth0\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\n"
                "client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }\nsocks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }\n")
    world.SERVER_ARGV = dict(World.SERVER_ARGV, **{
        "tinyproxy": (["tinyproxy", "-d", "-c", os.path.join(d, "tinyproxy.conf")], "tcp", PROXY_PORTS["http"]),
        "microsocks": (["microsocks", "-i", GATEWAY_IP, "-p", str(PROXY_PORTS["socks5"])], "tcp",
                       PROXY_PORTS["socks5"]),
        "stunnel": (["stunnel4", os.path.join(d, "stunnel.conf")], "tcp", PROXY_PORTS["https"]),
        "source": ([FLOWTOOL, "source", SERVER_IP, str(SOURCE_PORT)], "tcp", SOURCE_PORT),
        "danted": (["danted", "-f", os.path.join(d, "danted.conf")], "tcp", PROXY_PORTS["socks5-dante"]),
    })
    for name in ("source", "tinyproxy", "microsocks", "stunnel") + (("danted",) if shutil.which("danted") else ()):
        world.start_server(name)
    return cert


def proxy_argv(kind, via_cf, cert, client, direct_args):
    """`client` through the proxy of `kind`: by childflow -p (via_cf: the childflow binary), or by
    the client itself (`direct_args` tell it the proxy)."""
    uri = f"{proxy_scheme(kind)}://{GATEWAY_IP}:{PROXY_PORTS[kind]}"
    if via_cf:
        return ["env", f"SSL_CERT_FILE={cert}", via_cf, "-p", uri, "--"] + client
    return client + direct_args(uri)


def proxy_bulk(world, kind, via_cf, cert, secs):
    """A download from the source for `secs` seconds with curl, through the proxy."""
    curl = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(secs), "-w", "%{size_download} %{time_total}"]
    if via_cf:
        curl += ["--noproxy", "*"]   # a proxy variable must not matter: childflow is the proxy path
    argv = proxy_argv(kind, via_cf, cert, curl, lambda uri: ["-x", uri] + (
        ["--proxy-cacert", cert] if kind == "https" else []))
    r = run(world.client, argv + [f"http://{SERVER_IP}:{SOURCE_PORT}/"], timeout=secs + 20)
    m = re.match(r"^(\d+) ([\d.]+)$", r.out.strip())
    if r.rc not in (0, 28) or not m or float(m.group(2)) <= 0 or int(m.group(1)) == 0:
        raise WorkloadError(r.why())
    return {f"px_bulk_{kind}": int(m.group(1)) * 8 / float(m.group(2)) / 1e9}


def proxy_rate(world, kind, via_cf, cert, secs):
    """flowtool rate through the proxy: childflow does the handshake, or flowtool itself."""
    base = [FLOWTOOL_PATH, "rate", SERVER_IP, str(RATE_PORT), str(secs)]
    argv = proxy_argv(kind, via_cf, cert, base, lambda uri: [proxy_scheme(kind), GATEWAY_IP, str(PROXY_PORTS[kind])] + (
        [cert] if kind == "https" else []))
    r = run(world.client, argv, timeout=secs + 20)
    kv = parse_kv(r.out)
    if r.rc != 0 or "conns" not in kv:
        raise WorkloadError(r.why())
    rate = int(kv["conns"]) / float(kv["seconds"])
    res = {f"px_rate_{kind}": rate, f"px_conn_us_{kind}": 1e6 / rate}
    if kind == "https" and not via_cf:
        # like with like: childflow -p resumes the proxy's TLS sessions; so can a client
        r = run(world.client, argv + ["resume"], timeout=secs + 20)
        kv = parse_kv(r.out)
        if r.rc != 0 or "conns" not in kv:
            raise WorkloadError(r.why())
        res["px_conn_us_https_resumed"] = 1e6 * float(kv["seconds"]) / int(kv["conns"])
    return res


def hold_flows(world, prefix, n, timeout=60):
    """Open n flows through the path, then read P's memory and CPU while they are all open."""
    p = spawn(world.client, prefix + [FLOWTOOL_PATH, "hold", SERVER_IP, str(HOLD_PORT), str(n),
                                      str(timeout)], stdin=subprocess.PIPE)
    try:
        buf = b""
        deadline = time.monotonic() + timeout + 15
        while b"\n" not in buf and time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
        kv = parse_kv(buf.decode(errors="replace"))
        if "held" not in kv:
            raise WorkloadError(f"hold {n}: no report ({p.poll()})")
        time.sleep(0.2)  # let P finish its bookkeeping for the last flows
        mem, cpu = proc_mem_kib(p.pid), proc_cpu_s(p.pid)
        if not mem or cpu is None:
            raise WorkloadError(f"hold {n}: P is gone")
        res = {"held": int(kv["held"]), "open_s": float(kv["seconds"]),
               "rss": mem["VmRSS"] / 1024.0, "hwm": mem["VmHWM"] / 1024.0, "cpu_ms": cpu * 1000.0}
        p.stdin.close()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        return res
    finally:
        stop(p)


def startup_worker(spec):
    """Runs inside the client netns: time `runs` rounds of every argv, interleaved; JSON out."""
    entries, runs = spec["entries"], spec["runs"]
    devnull = os.open(os.devnull, os.O_RDWR)
    acts = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
            (os.POSIX_SPAWN_DUP2, devnull, 2)]
    out = {name: [] for name, _ in entries}
    fails = {name: 0 for name, _ in entries}
    for i in range(runs):
        k = i % len(entries)
        for name, argv in entries[k:] + entries[:k]:
            exe = shutil.which(argv[0]) or argv[0]
            t0 = time.perf_counter()
            pid = os.posix_spawn(exe, argv, os.environ, file_actions=acts, setsid=True,
                                 setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))  # pasta needs SIGPIPE
            deadline = time.monotonic() + 10
            while True:
                wpid, status = os.waitpid(pid, os.WNOHANG)
                if wpid:
                    break
                if time.monotonic() > deadline:
                    os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    status = -1
                    break
                time.sleep(0.0002)
            dt = time.perf_counter() - t0
            if status == 0:
                out[name].append(dt * 1000.0)
            else:
                fails[name] += 1
    json.dump({"ms": out, "fails": fails}, sys.stdout)
    return 0


# ----------------------------------------------------------------------------------------------
# rows of the table: key -> (label, unit, higher is better, format, P-only)

ROWS = [
    ("tcp_up_1", "TCP bulk up, 1 stream", "Gbit/s", True, "{:.2f}", False),
    ("tcp_down_1", "TCP bulk down, 1 stream", "Gbit/s", True, "{:.2f}", False),
    ("tcp_up_8", "TCP bulk up, 8 streams", "Gbit/s", True, "{:.2f}", False),
    ("tcp_down_8", "TCP bulk down, 8 streams", "Gbit/s", True, "{:.2f}", False),
    ("udp_up", "UDP up, 1400 B datagrams, unpaced (received)", "Gbit/s", True, "{:.2f}", False),
    ("udp_up_loss", "UDP up, loss", "%", False, "{:.1f}", False),
    ("udp_down", "UDP down, 1400 B datagrams, unpaced (received)", "Gbit/s", True, "{:.2f}", False),
    ("udp_down_loss", "UDP down, loss", "%", False, "{:.1f}", False),
    ("lat_tcp_p50", "TCP request/response latency p50 (RTT/2, 64 B)", "µs", False, "{:.1f}", False),
    ("lat_tcp_p99", "TCP request/response latency p99 (RTT/2, 64 B)", "µs", False, "{:.1f}", False),
    ("lat_udp_p50", "UDP request/response latency p50 (RTT/2, 64 B)", "µs", False, "{:.1f}", False),
    ("conn_rate", "new TCP connections (connect, 1 B reply, close)", "conn/s", True, "{:.0f}", False),
    ("conn_us", "time per new connection", "µs", False, "{:.1f}", False),
    ("conn_added", "added per new connection vs direct", "µs", False, "{:+.1f}", False),
    ("pcpu_conn", "P CPU per new connection (sampled every 0.1 s)", "µs", False, "{:.0f}", True),
    *[row for kind in PROXY_PORTS for row in (
        (f"px_bulk_{kind}", f"proxy {PROXY_NAMES[kind]}: TCP bulk down (curl; direct = `curl -x`)",
         "Gbit/s", True, "{:.2f}", False),
        (f"px_rate_{kind}", f"proxy {PROXY_NAMES[kind]}: new connections (direct = flowtool's own handshake)",
         "conn/s", True, "{:.0f}", False),
        (f"px_added_{kind}", f"proxy {PROXY_NAMES[kind]}: added per new connection vs direct", "µs", False,
         "{:+.1f}", False))],
    ("px_added_https_resume", f"proxy {PROXY_NAMES['https']}: added per new connection vs a direct client "
     "that resumes TLS sessions too (as childflow -p does)", "µs", False, "{:+.1f}", False),
    ("icmp_avg", "ICMP echo RTT avg (ping, 200 echoes 10 ms apart)", "µs", False, "{:.1f}", False),
    ("icmp_mdev", "ICMP echo RTT mdev, 10 ms apart", "µs", False, "{:.1f}", False),
    ("icmp_lost", "ICMP echoes lost, 10 ms apart", "%", False, "{:.1f}", False),
    ("icmp_added", "added per ICMP echo vs direct, avg, 10 ms apart", "µs", False, "{:+.1f}", False),
    ("icmpa_avg", "ICMP echo RTT avg (ping -A, 2000 echoes back to back)", "µs", False, "{:.1f}", False),
    ("icmpa_added", "added per ICMP echo vs direct, avg, back to back", "µs", False, "{:+.1f}", False),
    ("dns_qps", "DNS queries/s, 100 outstanding (dnsperf, UDP)", "q/s", True, "{:.0f}", False),
    ("dns_lost", "DNS queries lost at that load", "%", False, "{:.2f}", False),
    ("dns_p50", "DNS query latency p50 (one outstanding, RTT)", "µs", False, "{:.1f}", False),
    ("dns_p99", "DNS query latency p99 (one outstanding, RTT)", "µs", False, "{:.1f}", False),
    ("dns_added", "added per DNS query vs direct, p50", "µs", False, "{:+.1f}", False),
    ("startup", "start-up of `-- true` (spawn to exit)", "ms", False, "{:.2f}", False),
    ("cost_tcp_up_1", "machine CPU per GB moved, TCP up, 1 stream", "core·s/GB", False, "{:.2f}", False),
    ("cost_tcp_down_1", "machine CPU per GB moved, TCP down, 1 stream", "core·s/GB", False, "{:.2f}", False),
    ("cost_tcp_up_8", "machine CPU per GB moved, TCP up, 8 streams", "core·s/GB", False, "{:.2f}", False),
    ("cost_tcp_down_8", "machine CPU per GB moved, TCP down, 8 streams", "core·s/GB", False, "{:.2f}",
     False),
    ("capdrop_tcp_up_1", "`-c`: packets dropped (isb_ifdrop), TCP up, 1 stream", "packets", False, "{:.0f}", True),
    ("capdrop_tcp_down_1", "`-c`: packets dropped (isb_ifdrop), TCP down, 1 stream", "packets", False, "{:.0f}",
     True),
    ("capdrop_tcp_up_8", "`-c`: packets dropped (isb_ifdrop), TCP up, 8 streams", "packets", False, "{:.0f}", True),
    ("capdrop_tcp_down_8", "`-c`: packets dropped (isb_ifdrop), TCP down, 8 streams", "packets", False, "{:.0f}",
     True),
    ("pcpu_tcp_up_1", "P CPU during TCP up, 1 stream", "% core", False, "{:.0f}", True),
    ("pcpu_tcp_down_1", "P CPU during TCP down, 1 stream", "% core", False, "{:.0f}", True),
    ("pcpu_tcp_up_8", "P CPU during TCP up, 8 streams", "% core", False, "{:.0f}", True),
    ("pcpu_tcp_down_8", "P CPU during TCP down, 8 streams", "% core", False, "{:.0f}", True),
    ("pcpu_udp_up", "P CPU during UDP up", "% core", False, "{:.0f}", True),
    ("pcpu_udp_down", "P CPU during UDP down", "% core", False, "{:.0f}", True),
]
NO_RATIO = {"capdrop_tcp_up_1", "capdrop_tcp_down_1", "capdrop_tcp_up_8", "capdrop_tcp_down_8",
            "conn_added", "px_added_http", "px_added_socks5", "px_added_https", "px_added_https_resume",
            "udp_up_loss", "udp_down_loss", "dns_lost", "dns_added", "icmp_lost", "icmp_added",
            "icmpa_added"}  # differences/percentages: no ratio
FLOW_LEVELS_FULL = [0, 1, 100, 10000]
FLOW_LEVELS_QUICK = [0, 1, 100, 1000]


def flow_rows(levels):
    rows = []
    for n in levels:
        tag = "idle (0 flows)" if n == 0 else f"{n:,} concurrent flow" + ("s" if n > 1 else "")
        rows.append((f"f{n}_rss", f"P RSS, {tag}", "MiB", False, "{:.1f}", True))
        if n:
            rows.append((f"f{n}_hwm", f"P peak RSS (VmHWM), {tag}", "MiB", False, "{:.1f}", True))
            rows.append((f"f{n}_cpu", f"P CPU time from start, {tag}", "ms", False, "{:.0f}", True))
            rows.append((f"f{n}_open", f"time to open {tag}", "s", False, "{:.3f}", True))
        if n >= 1000:
            rows.append((f"f{n}_held", f"flows held of {n:,} asked", "flows", True, "{:.0f}", True))
    return rows


# ----------------------------------------------------------------------------------------------


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    virt = "virtual machine" if "hypervisor" in open("/proc/cpuinfo").read() else "bare metal"

    def ver(pkg):
        try:
            return sh(["dpkg-query", "-W", "-f=${Version}", pkg], check=False).strip() or "not installed"
        except (OSError, subprocess.SubprocessError):
            return "?"
    rev = sh(["git", "-C", ROOT, "describe", "--always", "--dirty"], check=False).strip() or "?"
    return {
        "cores": os.cpu_count(), "cpu": model, "kind": virt, "mem_mib": mem,
        "kernel": platform.release(), "date": datetime.datetime.now(datetime.timezone.utc)
        .strftime("%Y-%m-%d %H:%M UTC"),
        "childflow": rev, "iperf3": ver("iperf3"), "sockperf": ver("sockperf"), "passt": ver("passt"),
        "slirp4netns": ver("slirp4netns"), "python": platform.python_version(),
        "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


def fmt_cell(vals, fmt):
    if not vals:
        return None
    m = median(vals)
    s = fmt.format(m)
    if len(vals) > 1:
        lo, hi = min(vals), max(vals)
        if fmt.format(lo) != fmt.format(hi):
            s += f" ({fmt.format(lo)}–{fmt.format(hi)})"
    return s


def build_table(paths, rows, data):
    names = [p[0] for p in paths]
    head = "| workload | unit | " + " | ".join(names) + " |"
    sep = "|---|---|" + "---|" * len(names)
    lines = [head, sep]
    for key, label, unit, hib, fmt, p_only in rows:
        cells, any_val = [], False
        base = median(data.get(key, {}).get("direct", []))
        for name in names:
            vals = data.get(key, {}).get(name, [])
            c = fmt_cell(vals, fmt)
            if c is None:
                cells.append("—")
                continue
            any_val = True
            if name != "direct" and base and key not in NO_RATIO and not p_only:
                c += f" ×{ratio(data, key, name):.2f}"
            cells.append(c)
        if any_val:
            lines.append(f"| {label} | {unit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


VERDICT = {True: "met", False: "MISSED", None: "not measurable here"}
VERDICT_MD = {True: "yes", False: "**no**", None: "not measurable here"}


def targets(data):
    """The issue's targets, each with the measured figure and whether it is met."""
    out = []

    def m(key, path):
        return median(data.get(key, {}).get(path, []))

    cf = "childflow"
    for key, label in (("tcp_up_1", "up, 1 stream"), ("tcp_down_1", "down, 1 stream"),
                       ("tcp_up_8", "up, 8 streams"), ("tcp_down_8", "down, 8 streams")):
        d, c, pa, sl = m(key, "direct"), m(key, cf), m(key, "pasta"), m(key, "slirp4netns")
        if d and c:
            r = ratio(data, key, cf)
            out.append((f"bulk TCP {label}: childflow ≥ 0.75 × direct", f"{r:.2f} ×", r >= 0.75))
        if c and pa:
            r = ratio(data, key, cf, "pasta")
            out.append((f"bulk TCP {label}: childflow ≥ 3 × pasta", f"{r:.1f} ×", r >= 3))
        if c and sl:
            r = ratio(data, key, cf, "slirp4netns")
            out.append((f"bulk TCP {label}: childflow ≥ 2 × slirp4netns", f"{r:.1f} ×", r >= 2))
        if d and m(key, "childflow --fast-tcp"):
            r = ratio(data, key, "childflow --fast-tcp")
            out.append((f"bulk TCP {label}: childflow --fast-tcp ≥ 0.95 × direct", f"{r:.2f} ×", r >= 0.95))
        if m("cost_" + key, "direct") and m("cost_" + key, "childflow --fast-tcp"):
            r = ratio(data, "cost_" + key, "childflow --fast-tcp")
            out.append((f"CPU per GB, TCP {label}: childflow --fast-tcp ≤ 1.1 × direct", f"{r:.2f} ×", r <= 1.1))
        for cp in ("childflow -c", "childflow -c -C egress"):
            if c and m(key, cp):
                r = ratio(data, key, cp, cf)
                out.append((f"bulk TCP {label}: {cp} ≥ 0.8 × childflow", f"{r:.2f} ×", r >= 0.8))
    if m("dns_qps", "direct") and m("dns_qps", cf):
        r = ratio(data, "dns_qps", cf)
        out.append(("DNS through the forwarder ≥ 0.9 × the direct query rate", f"{r:.2f} ×", r >= 0.9))
    a = m("dns_added", cf)
    if a is not None:
        out.append(("DNS forwarder adds ≤ 30 µs p50", f"{a:+.1f} µs", a <= 30))
    s = m("startup", cf)
    if s is not None:
        out.append(("`childflow -- true` ≤ 10 ms median", f"{s:.2f} ms", s <= 10))
    a = m("conn_added", cf)
    if a is not None:
        out.append(("connection setup adds ≤ 100 µs", f"{a:+.1f} µs", a <= 100))
    if m("conn_rate", "childflow --fast-tcp") and m("conn_rate", cf):
        r = ratio(data, "conn_rate", "childflow --fast-tcp", cf)
        out.append(("new connections: childflow --fast-tcp ≥ the relay's rate", f"{r:.2f} ×", r >= 1))
    for kind in PROXY_PORTS:
        if m(f"px_bulk_{kind}", "direct") and m(f"px_bulk_{kind}", cf):
            r = ratio(data, f"px_bulk_{kind}", cf)
            out.append((f"bulk TCP through {PROXY_NAMES[kind]}: childflow -p ≥ 0.9 × the client's own",
                        f"{r:.2f} ×", r >= 0.9))
        # https: against the client that resumes TLS sessions as childflow -p does (like with like);
        # the plain direct client pays full handshakes and would flatter childflow
        a = m("px_added_https_resume" if kind == "https" and m("px_added_https_resume", cf) is not None
              else f"px_added_{kind}", cf)
        if a is not None:
            out.append((f"connection through {PROXY_NAMES[kind]}: childflow -p adds ≤ 100 µs", f"{a:+.1f} µs",
                        a <= 100))
    r = m("f0_rss", cf)
    if r is not None:
        out.append(("P RSS ≤ 8 MiB idle", f"{r:.1f} MiB", r <= 8))
    top = max([int(k[1:-4]) for k in data if re.match(r"^f\d+_hwm$", k)] or [0])
    h = m(f"f{top}_hwm", cf)
    if h is not None and top:
        held = m(f"f{top}_held", cf)
        note = ""
        if held is not None and held < top:
            note = f" (only {held:,.0f} of {top:,} flows held; see notes)"
        out.append((f"P RSS ≤ 64 MiB with {top:,} concurrent flows", f"{h:.1f} MiB peak{note}",
                    (h <= 64) if held is None or held >= top else None))
    return out


def main():
    ap = argparse.ArgumentParser(description="childflow benchmark (closed world; needs root)")
    ap.add_argument("--quick", action="store_true", help="1 repetition, short runs (~1-2 min)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    ap.add_argument("--paths", help="comma-separated path names to run (default: all that work)")
    ap.add_argument("--only", help="comma-separated workloads: startup,latency,icmp,dns,connrate,proxy,tcp,udp,flows")
    ap.add_argument("--budget", type=float,
                    help="seconds after which remaining repetitions are skipped (default 540, scaled "
                         "by REPS/3 when --reps asks for more than 3: asked-for repetitions are run)")
    ap.add_argument("--update-docs", action="store_true",
                    help="also copy the results into docs/performance.md between its markers")
    ap.add_argument("--world", type=float, metavar="SECONDS",
                    help="only build the world and start the servers, print how to reach them, and keep "
                         "them for SECONDS (or until Ctrl-C) for manual profiling; then clean up")
    ap.add_argument("--startup-worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.startup_worker:
        return startup_worker(json.loads(a.startup_worker))
    if os.geteuid() != 0:
        print("bench/run.py: must be run as root (it builds a closed world of network namespaces)",
              file=sys.stderr)
        return 1
    if not os.access(CHILDFLOW, os.X_OK):
        print(f"bench/run.py: {CHILDFLOW} is not built; run `make build/childflow` first", file=sys.stderr)
        return 1
    for tool in ("ip", "cc"):
        if not shutil.which(tool):
            print(f"bench/run.py: `{tool}` is missing (scripts/deps.sh bench installs it)", file=sys.stderr)
            return 1
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by servers and clients

    reps = a.reps or (1 if a.quick else 3)
    budget = a.budget if a.budget is not None else 540.0 * max(1.0, reps / 3)
    q = a.quick
    CFG.update(bulk_s=1 if q else 3, omit=0 if q else 1, udp_s=1 if q else 2, lat_s=1 if q else 2,
               rate_s=0.5 if q else 2, dns_s=1 if q else 2, startup_runs=10 if q else 50)
    levels = FLOW_LEVELS_QUICK if q else FLOW_LEVELS_FULL
    only = set(a.only.split(",")) if a.only else None

    def want(w):
        return only is None or w in only

    t_start = time.monotonic()
    scratch = tempfile.mkdtemp(prefix="cfbench-")
    os.chmod(scratch, 0o755)
    world = World(scratch)
    notes, failures, skipped = [], {}, []
    data = {}  # row key -> path name -> [values]
    try:
        global FLOWTOOL_PATH
        FLOWTOOL_PATH = os.path.join(scratch, "flowtool")
        sh(["cc", "-O2", "-D_GNU_SOURCE", "-o", FLOWTOOL_PATH, os.path.join(HERE, "flowtool.c"), "-lssl",
            "-lcrypto"])
        World.cleanup_stray()
        world.up()
        for name in ("flowtool", "iperf3", "sockperf-tcp", "sockperf-udp", "dnsmasq"):
            tool = World.SERVER_ARGV[name][0][0]
            if tool != FLOWTOOL and not shutil.which(tool):
                notes.append(f"{tool} is not installed: its workloads are skipped")
                continue
            world.start_server(name)

        if a.world:
            if all(shutil.which(t) for t in ("tinyproxy", "microsocks", "stunnel4", "openssl")):
                cert = proxy_setup(world)
                print(f"proxies on {GATEWAY_IP}: " + ", ".join(f"{k} :{p}" for k, p in PROXY_PORTS.items())
                      + f" (https CA: {cert}); bulk source {SERVER_IP}:{SOURCE_PORT}", flush=True)
            print(f"client netns: {world.client}\nserver netns: {world.server}\nservers on {SERVER_IP}: "
                  f"iperf3 :{IPERF_PORT}, sockperf tcp :{SP_TCP_PORT} udp :{SP_UDP_PORT}, flowtool rate "
                  f":{RATE_PORT} hold :{HOLD_PORT}\nflowtool: {FLOWTOOL_PATH}\n"
                  f"e.g. ip netns exec {world.client} {CHILDFLOW} -- iperf3 -c {SERVER_IP} -R\n"
                  f"Ctrl-C (or {a.world:.0f} s) removes everything", flush=True)
            time.sleep(max(0.0, min(a.world, 24 * 3600)))
            return 0

        # which paths work here
        paths = []
        for name, prefix, needs in PATHS:
            if a.paths and name not in a.paths.split(","):
                continue
            miss = [t for t in needs if not (os.access(t, os.X_OK) if "/" in t else shutil.which(t))]
            if miss:
                skipped.append((name, f"not installed: {', '.join(miss)}"))
                continue
            r = run(world.client, prefix + [FLOWTOOL_PATH, "rate", SERVER_IP, str(RATE_PORT), "0.05"],
                    timeout=20)
            if r.rc != 0:
                skipped.append((name, r.why()))
                continue
            paths.append((name, prefix))
        if not paths or paths[0][0] != "direct":
            raise RuntimeError("the direct path does not work in the closed world")
        if len(paths) > 4 and not q:
            CFG["bulk_s"] = 2  # keep the whole run under 10 minutes with more paths
        print(f"bench: paths: {', '.join(p[0] for p in paths)}"
              + (f"; not run: {', '.join(s[0] for s in skipped)}" if skipped else ""), file=sys.stderr)

        def record(key, path, val, rep=None):
            data.setdefault(key, {}).setdefault(path, []).append(val)
            if rep is not None:   # for the paired ratios (ratio(), added())
                data.setdefault("_rep", {}).setdefault(key, {}).setdefault(path, []).append(rep)

        def over_budget():
            return time.monotonic() - t_start > budget

        def interleaved(wname, fn, plist=None, nreps=reps):
            """Run fn(prefix, track) for every path, repetition by repetition (rotating order)."""
            plist = plist or paths
            for rep in range(nreps):
                if over_budget():
                    notes.append(f"{wname}: time budget reached after {rep} of {nreps} repetitions")
                    return
                k = rep % len(plist)
                for name, prefix in plist[k:] + plist[:k]:
                    print(f"bench: {wname} rep {rep + 1}/{nreps} {name}", file=sys.stderr)
                    try:
                        for key, val in fn(prefix, name.startswith("childflow")).items():
                            record(key, name, val, rep)
                    except WorkloadError as e:
                        failures.setdefault((wname, name), []).append(str(e)[:300])

        # 1. start-up
        if want("startup"):
            entries = [(name, prefix + ["true"]) for name, prefix in paths] + \
                      [(n, argv) for n, argv in STARTUP_REFERENCES if shutil.which(argv[0])]
            spec = json.dumps({"entries": entries, "runs": CFG["startup_runs"]})
            print(f"bench: start-up, {CFG['startup_runs']} rounds", file=sys.stderr)
            r = run(world.client, [PY, os.path.abspath(__file__), "--startup-worker", spec],
                    timeout=30 + CFG["startup_runs"] * len(entries) * 2)
            try:
                res = json.loads(r.out)
                for name, ms in res["ms"].items():
                    for v in ms:
                        record("startup", name, v)   # not paired: a failed run leaves no index
                    if res["fails"].get(name):
                        failures.setdefault(("startup", name), []).append(
                            f"{res['fails'][name]} of {CFG['startup_runs']} runs failed")
            except (ValueError, KeyError):
                failures.setdefault(("startup", "all"), []).append(r.why())

        # 2. request/response latency
        if want("latency") and world.server_alive("sockperf-tcp"):
            interleaved("latency-tcp", lambda p, t: sockperf(world, p, t, "lat_tcp", True, CFG["lat_s"]))
            interleaved("latency-udp", lambda p, t: sockperf(world, p, t, "lat_udp", False, CFG["lat_s"]))

        # 2a. ICMP echo (ping): childflow answers it from a host socket of P's; direct pings itself
        if want("icmp") and shutil.which("ping"):
            pl = [p for p in paths if p[0] in ("direct", "childflow")]
            interleaved("icmp", lambda p, t: icmp_echo(world, p, t, "icmp", 40 if q else 200, "0.01"), plist=pl)
            interleaved("icmp-adaptive", lambda p, t: icmp_echo(world, p, t, "icmpa", 400 if q else 2000,
                                                                "adaptive"), plist=pl)
            for key in ("icmp", "icmpa"):
                if data.get(key + "_avg", {}).get("direct"):
                    data[key + "_added"] = added(data, key + "_avg")
        elif want("icmp"):
            notes.append("ping is not installed: the ICMP echo workload is skipped")

        # 2b. DNS: query rate and latency (childflow's forwarder vs the same resolver direct)
        if want("dns") and world.server_alive("dnsmasq"):
            interleaved("dns", lambda p, t: dns_load(world, p, t, CFG["dns_s"]))
            if data.get("dns_p50", {}).get("direct"):
                data["dns_added"] = added(data, "dns_p50")

        # 3. new-connection rate
        if want("connrate"):
            interleaved("connrate", lambda p, t: conn_rate(world, p, t, CFG["rate_s"]))
            if data.get("conn_us", {}).get("direct"):
                data["conn_added"] = added(data, "conn_us")

        # 3b. through proxies: childflow -p versus the client using the same proxy itself
        if want("proxy") and any(p[0] == "childflow" for p in paths):
            missing = [t for t in ("tinyproxy", "microsocks", "stunnel4", "curl", "openssl") if not shutil.which(t)]
            if missing:
                notes.append(f"proxy: not installed: {', '.join(missing)}; its workload is skipped")
            else:
                cert = proxy_setup(world)
                pl = [("direct", None), ("childflow", CHILDFLOW)] + (
                    [("childflow (baseline)", _BASELINE)] if _BASELINE else [])
                for kind in PROXY_PORTS:
                    if kind == "socks5-dante" and not shutil.which("danted"):
                        continue
                    interleaved(f"proxy-bulk-{kind}", lambda v, t, kind=kind:
                                proxy_bulk(world, kind, v, cert, CFG["bulk_s"] + 1), plist=pl)
                    interleaved(f"proxy-rate-{kind}", lambda v, t, kind=kind:
                                proxy_rate(world, kind, v, cert, CFG["rate_s"]), plist=pl)
                    if data.get(f"px_conn_us_{kind}", {}).get("direct"):
                        data[f"px_added_{kind}"] = {name: v for name, v in added(data, f"px_conn_us_{kind}").items()
                                                    if name != "direct"}
                # like with like: childflow -p against the direct client that resumes TLS sessions too
                # (recorded in the same repetition under its own key)
                if data.get("px_conn_us_https_resumed", {}).get("direct"):
                    data["px_added_https_resume"] = {
                        name: v for name, v in added(data, "px_conn_us_https",
                                                     base_key="px_conn_us_https_resumed").items()
                        if name != "direct"}

        # 4. bulk TCP
        if want("tcp") and world.server_alive("iperf3"):
            if any(CAPTURE_FILE in p[1] for p in paths):
                ceiling = [tmpfs_write_gbit()]
            for key, extra in (("tcp_up_1", []), ("tcp_down_1", ["-R"]), ("tcp_up_8", ["-P", "8"]),
                               ("tcp_down_8", ["-P", "8", "-R"])):
                interleaved(key, lambda p, t, key=key, extra=extra:
                            iperf(world, p, t, key, extra, CFG["bulk_s"], CFG["omit"]))
            if any(CAPTURE_FILE in p[1] for p in paths):
                ceiling.append(tmpfs_write_gbit())
                notes.append("capture file system: writing 2 GiB of new pages into " +
                             os.path.dirname(CAPTURE_FILE) + " (64 KiB writes) runs at " +
                             " and ".join(f"{g:.2f}" for g in ceiling) + " Gbit/s (before and after the TCP "
                             "rows): the ceiling of any capture to a file there")

        # 5. UDP throughput
        if want("udp") and world.server_alive("iperf3"):
            for key, extra in (("udp_up", []), ("udp_down", ["-R"])):
                interleaved(key, lambda p, t, key=key, extra=extra:
                            iperf(world, p, t, key, ["-u", "-b", "0", "-l", "1400"] + extra,
                                  CFG["udp_s"], 0))

        # 6. P's CPU and memory with concurrent flows (childflow paths only)
        cf_paths = [p for p in paths if p[0].startswith("childflow")]
        if want("flows") and cf_paths:
            if hard < 2 * max(levels) + 200:
                notes.append(
                    f"RLIMIT_NOFILE hard limit here is {hard} and cannot be raised (no CAP_SYS_RESOURCE "
                    f"in this machine's root), so P's fd budget caps how many of {max(levels):,} flows it "
                    "can hold; the table says how many were held")
            for rep in range(reps):
                if over_budget():
                    notes.append(f"flows: time budget reached after {rep} of {reps} repetitions")
                    break
                for name, prefix in cf_paths:
                    for n in levels:
                        print(f"bench: flows rep {rep + 1}/{reps} {name} n={n}", file=sys.stderr)
                        try:
                            res = hold_flows(world, prefix, n)
                        except WorkloadError as e:
                            failures.setdefault((f"flows {n}", name), []).append(str(e))
                            continue
                        record(f"f{n}_rss", name, res["rss"])
                        if n:
                            record(f"f{n}_hwm", name, res["hwm"])
                            record(f"f{n}_cpu", name, res["cpu_ms"])
                            record(f"f{n}_open", name, res["open_s"])
                        if n >= 1000:
                            record(f"f{n}_held", name, res["held"])
            # extrapolate peak RSS to the asked level if the fd limit capped it
            top = max(levels)
            for name, _ in cf_paths:
                held = median(data.get(f"f{top}_held", {}).get(name, []))
                h_top = median(data.get(f"f{top}_hwm", {}).get(name, []))
                h_100 = median(data.get("f100_hwm", {}).get(name, []))
                if held and held < top and h_top and h_100 and held > 100:
                    per = (h_top - h_100) / (held - 100)
                    est = h_top + per * (top - held)
                    notes.append(f"{name}: P held {held:,.0f} of {top:,} flows; its peak RSS grew "
                                 f"{per * 1024:.2f} KiB per flow from 100 flows on, which extrapolates to "
                                 f"about {est:.1f} MiB at {top:,} flows")

        elapsed = time.monotonic() - t_start
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        for p in list(LIVE):
            stop(p)
        world.down()
        shutil.rmtree(scratch, ignore_errors=True)

    # ------------------------------------------------------------------------------------------
    rows = ROWS[:]
    for i, r in enumerate(rows):
        if r[0] == "startup":
            rows[i + 1:i + 1] = flow_rows(levels)
            break
    mach = machine()
    table = build_table(paths, rows, data)
    tg = targets(data)
    refs = []
    for n, _ in STARTUP_REFERENCES:
        v = data.get("startup", {}).get(n)
        if v:
            refs.append(f"start-up reference: `{n}` (namespaces only, no network) takes "
                        f"{median(v):.2f} ms median")

    md = []
    md.append(f"# childflow benchmark results ({'quick run' if q else 'full run'})\n")
    md.append(f"Machine: {mach['cores']} cores ({mach['cpu']}, {mach['kind']}), {mach['mem_mib']} MiB, "
              f"kernel {mach['kernel']}; {mach['date']}; run took {elapsed:.0f} s.  ")
    md.append(f"Versions: childflow {mach['childflow']}, iperf3 {mach['iperf3']}, sockperf {mach['sockperf']}, "
              f"passt/pasta {mach['passt']}, slirp4netns {mach['slirp4netns']}, python {mach['python']}.  ")
    md.append(f"World: client and server network namespaces joined by one veth pair, MTU {MTU}; servers on "
              f"{SERVER_IP}; every path runs its client in the client namespace.  ")
    md.append(f"Method: {reps} repetition(s) per workload, paths interleaved in rotating order; each cell is "
              "the median with the (min–max) spread and, for the peers, ×ratio to the direct path: the median "
              "of each repetition's figure over the same repetition's direct figure (\"added\" rows likewise "
              "subtract the same repetition's direct figure), so that the machine's drift between repetitions "
              "cancels (for µs/ms/% rows a ratio above 1 means slower or costlier). P = the childflow process "
              "itself (not its sandbox helpers). Durations: "
              f"TCP {CFG['bulk_s']} s (+{CFG['omit']} s omitted), UDP {CFG['udp_s']} s, latency "
              f"{CFG['lat_s']} s, connection rate {CFG['rate_s']} s, start-up {CFG['startup_runs']} runs.\n")
    md.append(table + "\n")
    if tg:
        md.append("## Targets (issue #3)\n")
        md.append("| target | measured | met |")
        md.append("|---|---|---|")
        for label, val, ok in tg:
            md.append(f"| {label} | {val} | {VERDICT_MD[ok]} |")
        md.append("")
    md.append("## Notes\n")
    for s in refs + notes:
        md.append(f"- {s}")
    for name, why in skipped:
        md.append(f"- path not run: **{name}**: {why}")
    for (w, name), errs in sorted(failures.items()):
        md.append(f"- {w} / {name}: {len(errs)} failed run(s): {errs[0]}")
    if not (refs or notes or skipped or failures):
        md.append("- none")
    text = "\n".join(md) + "\n"

    print(table)
    print()
    for label, val, ok in tg:
        print(f"target: {label}: {val}: {VERDICT[ok]}")
    for s in refs + notes:
        print(f"note: {s}")
    for name, why in skipped:
        print(f"not run: {name}: {why}")
    for (w, name), errs in sorted(failures.items()):
        print(f"failed: {w} / {name}: {len(errs)} run(s): {errs[0]}")

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write(text)
    with open(os.path.join(RESULTS, "latest.json"), "w") as f:
        json.dump({"machine": mach, "config": dict(CFG, reps=reps, levels=levels),
                   "paths": [p[0] for p in paths], "skipped": skipped, "data": data,
                   "targets": tg, "notes": notes,
                   "failures": {f"{w} / {n}": e for (w, n), e in failures.items()}}, f, indent=1)
    print(f"\nwrote {os.path.relpath(os.path.join(RESULTS, 'latest.md'), ROOT)}", file=sys.stderr)
    if a.update_docs:
        update_docs(text)
    return 0


def update_docs(text):
    try:
        with open(DOC) as f:
            doc = f.read()
    except OSError:
        print(f"bench: {DOC} not found; not updated", file=sys.stderr)
        return
    b, e = "<!-- bench:begin -->", "<!-- bench:end -->"
    if b not in doc or e not in doc:
        print(f"bench: {DOC} has no bench markers; not updated", file=sys.stderr)
        return
    body = re.sub(r"^# .*\n", "", text, count=1).replace("\n## ", "\n### ")
    doc = doc[:doc.index(b) + len(b)] + "\n" + body + doc[doc.index(e):]
    with open(DOC, "w") as f:
        f.write(doc)
    print(f"bench: updated {os.path.relpath(DOC, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Interrupted as e:
        print(f"bench/run.py: interrupted ({e}); everything it started was stopped", file=sys.stderr)
        sys.exit(130)
    except RangeClash as e:
        print(f"bench/run.py: {e}", file=sys.stderr)
        sys.exit(1)
