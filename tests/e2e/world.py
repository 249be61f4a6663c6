#!/usr/bin/python3
"""The closed test world: network namespaces joined by veth pairs, with no link to the real network.

    host  (childflow runs here)      router                          remote1 / remote2
    eth0 198.18.0.2/24         <-> h0 198.18.0.1/24     r1 198.51.100.1/24 <-> eth0 198.51.100.10/24
         2001:db8:2::2/64              2001:db8:2::1/64    2001:db8:100::1/64      2001:db8:100::10/64
                                                        r2 203.0.113.1/24  <-> eth0 203.0.113.10/24
                                                           2001:db8:203::1/64      2001:db8:203::10/64

The host has default routes (v4 and v6) via the router, which forwards (its own sysctls) to the
remotes.  With uplinks=2 the host has a second uplink to the same router, for `--iface`:

    eth1 198.19.0.2/24         <-> h1 198.19.0.1/24
         2001:db8:3::2/64              2001:db8:3::1/64

eth1 has default routes of its own with a higher metric (2000), as a multi-homed host has (a second
NIC, Wi-Fi beside Ethernet): the preferred default routes stay on eth0, so only traffic bound to eth1
(SO_BINDTODEVICE, or policy routing) leaves there, and the remotes see it from 198.19.0.2 /
2001:db8:3::2. With v6=False the host has IPv6 disabled altogether (no address, no route, not even ::1).
Every address is a documentation or benchmarking address (198.18.0.0/15), every link lives in a
namespace this module created, and nothing is attached to the init namespace: a mistake cannot send
traffic anywhere real.

Before building anything, `check_ranges_free()` compares the world's prefixes with the addresses and
the non-default routes of the namespace it is run from (the machine's own): a world whose ranges
clash with the machine's (its uplink, a VPN, a docker bridge) refuses to start, with one message,
because a test could then not tell the world's traffic from the machine's.

Names are `<prefix>-<role>` (for the test suite the prefix is `cfw<pid><tag>`); `cleanup_stray()`
removes namespaces left by a crashed earlier run whose pid is gone.

Also a small CLI for scripts/demo.sh:
    world.py up   --prefix P --dir DIR [--no-v6] [--uplinks 2]
                                                    build the world, start servers; prints key=value lines
    world.py down --prefix P                        kill everything inside P-* namespaces, delete them
"""
import argparse
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
SERVERS = os.path.join(HERE, "servers.py")

HOST_V4, HOST_GW4 = "198.18.0.2", "198.18.0.1"
HOST_V6, HOST_GW6 = "2001:db8:2::2", "2001:db8:2::1"
HOST_NET4, HOST_NET6 = "198.18.0.0/24", "2001:db8:2::/64"
# The second uplink (World(uplinks=2)).
UP2_V4, UP2_GW4 = "198.19.0.2", "198.19.0.1"
UP2_V6, UP2_GW6 = "2001:db8:3::2", "2001:db8:3::1"
UP2_NET4, UP2_NET6 = "198.19.0.0/24", "2001:db8:3::/64"
REMOTES = {
    "remote1": {"v4": "198.51.100.10", "v6": "2001:db8:100::10", "gw4": "198.51.100.1",
                "gw6": "2001:db8:100::1", "rif": "r1"},
    "remote2": {"v4": "203.0.113.10", "v6": "2001:db8:203::10", "gw4": "203.0.113.1",
                "gw6": "2001:db8:203::1", "rif": "r2"},
}
HTTP_PORT, ECHO_PORT, RESET_PORT, HALFCLOSE_PORT, SINK_PORT = 80, 7, 9, 13, 19
# Every prefix the e2e world (and the demo) puts on a link.
WORLD_RANGES = [HOST_NET4, HOST_NET6, "198.51.100.0/24", "2001:db8:100::/64",
                "203.0.113.0/24", "2001:db8:203::/64", UP2_NET4, UP2_NET6]


class RangeClash(RuntimeError):
    """A test world's prefix overlaps an address or a route of the machine's own namespace."""


def find_overlaps(ranges, addrs, routes):
    """Which of `ranges` overlap the given addresses or non-default routes.

    @ranges: prefixes as strings ("198.18.0.0/24", "2001:db8:2::/64").
    @addrs:  the parsed output of `ip -j addr` (a list of links, each with "addr_info").
    @routes: the parsed outputs of `ip -j route` / `ip -j -6 route` (lists of routes), concatenated.
    Return: a list of (range, what) pairs, `what` naming the clashing address or route; empty when
    the ranges are free.  Default routes are ignored (they overlap everything)."""
    nets = [ipaddress.ip_network(r) for r in ranges]
    seen = []   # (network, description)
    for link in addrs:
        for a in link.get("addr_info", []):
            if "local" not in a:
                continue
            iface = ipaddress.ip_interface(f"{a['local']}/{a.get('prefixlen', 128)}")
            seen.append((iface.network, f"address {iface} on {link.get('ifname', '?')}"))
    for rt in routes:
        dst = rt.get("dst", "")
        if not dst or dst == "default":
            continue
        try:
            net = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if net.prefixlen == 0:
            continue
        table = rt.get("table")
        seen.append((net, f"route {dst}" + (f" dev {rt['dev']}" if rt.get("dev") else "")
                     + (f" table {table}" if table else "")))
    clashes = []
    for r, n in zip(ranges, nets):
        for net, what in seen:
            if net.version == n.version and net.overlaps(n):
                clashes.append((r, what))
    return clashes


def _ip_json(*args):
    out = sh(["ip", "-j"] + list(args)).stdout.decode() or "[]"
    return json.loads(out)


def check_ranges_free(ranges, who="test world"):
    """Refuse (RangeClash, one message) when `ranges` overlap this namespace's addresses or routes.

    Reads `ip -j addr` and the IPv4 and IPv6 routes of every table here, i.e. in the namespace the
    caller runs in (the machine's own when a world is being built).  Return: a small report (what
    was checked, how many addresses and routes were seen), kept by the caller as proof it ran."""
    addrs = _ip_json("addr")
    routes = _ip_json("route", "show", "table", "all") + _ip_json("-6", "route", "show", "table", "all")
    clashes = find_overlaps(ranges, addrs, routes)
    if clashes:
        detail = "; ".join(f"{r} overlaps {what}" for r, what in clashes)
        raise RangeClash(f"{who}: refusing to start: its addresses clash with this machine's network "
                         f"({detail}); change the world's ranges")
    return {"ranges": list(ranges), "addrs": sum(len(l.get("addr_info", [])) for l in addrs),
            "routes": len(routes)}


def sh(argv, check=True, timeout=20, **kw):
    """Run argv (never through a shell) with a timeout; raise with stderr on failure."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{argv!r} failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    return p


def netns_list():
    out = sh(["ip", "netns", "list"]).stdout.decode()
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def kill_netns_pids(ns):
    p = sh(["ip", "netns", "pids", ns], check=False)
    for pid in p.stdout.decode().split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def delete_netns(ns):
    kill_netns_pids(ns)
    sh(["ip", "netns", "delete", ns], check=False)


def cleanup_stray(pattern=r"^cfw(\d+)[a-z]-"):
    """Delete namespaces from earlier runs whose owning pid (the number in the name) is dead, and
    the /etc/netns/<ns> files such a run gave them (tests/e2e/proxies.py)."""
    stale_etc = os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else []
    for ns in sorted(set(netns_list()) | set(stale_etc)):
        m = re.match(pattern, ns)
        if not m:
            continue
        if m.groups():
            try:
                os.kill(int(m.group(1)), 0)
                continue  # its run is still alive
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        if ns in stale_etc:
            shutil.rmtree(os.path.join("/etc/netns", ns), ignore_errors=True)
        if ns in netns_list():
            delete_netns(ns)


def wait_file(path, timeout=10.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode}): {proc.args!r}")
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {path}")


class Service:
    """A server process inside a namespace, with its key=value log."""

    def __init__(self, ns, args, logdir, name):
        self.ns, self.name = ns, name
        self.log = os.path.join(logdir, f"{name}.log")
        self.ready = os.path.join(logdir, f"{name}.ready")
        for f in (self.ready,):
            if os.path.exists(f):
                os.unlink(f)
        open(self.log, "a").close()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, PY, SERVERS] + args + ["--log", self.log, "--ready", self.ready],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(logdir, f"{name}.stderr"), "ab"),
            start_new_session=True, close_fds=True)
        wait_file(self.ready, proc=self.proc)

    def entries(self):
        out = []
        with open(self.log) as f:
            for line in f:
                out.append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
        return out

    def find(self, **match):
        """Log entries whose keys equal the given values (a value ending in '*' matches a prefix)."""
        res = []
        for e in self.entries():
            ok = True
            for k, v in match.items():
                ev = e.get(k)
                if ev is None or (ev[:len(v) - 1] != v[:-1] if v.endswith("*") else ev != v):
                    ok = False
                    break
            if ok:
                res.append(e)
        return res

    def wait_find(self, timeout=3.0, **match):
        deadline = time.monotonic() + timeout
        while True:
            r = self.find(**match)
            if r or time.monotonic() > deadline:
                return r
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class World:
    def __init__(self, prefix, v6=True, uplinks=1):
        """@uplinks: 1, or 2 for the host's second uplink eth1 (see the module's docstring)."""
        if uplinks not in (1, 2):
            raise ValueError("uplinks must be 1 or 2")
        self.prefix, self.v6, self.uplinks = prefix, v6, uplinks
        self.host = f"{prefix}-host"
        self.router = f"{prefix}-router"
        self.remote = {r: f"{prefix}-{r}" for r in REMOTES}
        self.services = []
        self.files = {}      # name -> bytes served by every remote HTTP server
        self.alive = False
        self.range_check = None   # the report of check_ranges_free(), once up() ran it

    @property
    def namespaces(self):
        return [self.host, self.router] + list(self.remote.values())

    def ip(self, ns, *args, check=True):
        return sh(["ip", "-n", ns] + list(args), check=check)

    def sysctl(self, ns, *settings, check=True):
        return sh(["ip", "netns", "exec", ns, "sysctl", "-q", "-w"] + list(settings), check=check)

    def sh_ns(self, ns, argv):
        """Run argv in namespace ns; return its stdout (text)."""
        return sh(["ip", "netns", "exec", ns] + list(argv)).stdout.decode()

    def exec_argv(self, ns, argv):
        return ["ip", "netns", "exec", ns] + list(argv)

    def up(self):
        self.range_check = check_ranges_free(WORLD_RANGES, f"test world {self.prefix}")
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        self.alive = True
        return self

    def _up(self):
        for ns in self.namespaces:
            sh(["ip", "netns", "add", ns])
            self.sysctl(ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
            self.ip(ns, "link", "set", "lo", "up")
        if not self.v6:
            self.sysctl(self.host, "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1")
        self.sysctl(self.router, "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")

        # host <-> router
        self.ip(self.host, "link", "add", "eth0", "type", "veth", "peer", "name", "h0", "netns", self.router)
        self.ip(self.host, "addr", "add", f"{HOST_V4}/24", "dev", "eth0")
        self.ip(self.router, "addr", "add", f"{HOST_GW4}/24", "dev", "h0")
        self.ip(self.router, "addr", "add", f"{HOST_GW6}/64", "dev", "h0", "nodad")
        if self.v6:
            self.ip(self.host, "addr", "add", f"{HOST_V6}/64", "dev", "eth0", "nodad")
        self.ip(self.host, "link", "set", "eth0", "up")
        self.ip(self.router, "link", "set", "h0", "up")
        self.ip(self.host, "route", "add", "default", "via", HOST_GW4)
        if self.v6:
            self.ip(self.host, "-6", "route", "add", "default", "via", HOST_GW6)
        if self.uplinks == 2:
            self.ip(self.host, "link", "add", "eth1", "type", "veth", "peer", "name", "h1",
                    "netns", self.router)
            self.ip(self.host, "addr", "add", f"{UP2_V4}/24", "dev", "eth1")
            self.ip(self.router, "addr", "add", f"{UP2_GW4}/24", "dev", "h1")
            self.ip(self.router, "addr", "add", f"{UP2_GW6}/64", "dev", "h1", "nodad")
            if self.v6:
                self.ip(self.host, "addr", "add", f"{UP2_V6}/64", "dev", "eth1", "nodad")
            self.ip(self.host, "link", "set", "eth1", "up")
            self.ip(self.router, "link", "set", "h1", "up")
            self.ip(self.host, "route", "add", "default", "via", UP2_GW4, "dev", "eth1", "metric", "2000")
            if self.v6:
                self.ip(self.host, "-6", "route", "add", "default", "via", UP2_GW6, "dev", "eth1",
                        "metric", "2000")

        # router <-> remotes
        for r, a in REMOTES.items():
            ns = self.remote[r]
            self.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", a["rif"], "netns", self.router)
            self.ip(ns, "addr", "add", f"{a['v4']}/24", "dev", "eth0")
            self.ip(ns, "addr", "add", f"{a['v6']}/64", "dev", "eth0", "nodad")
            self.ip(self.router, "addr", "add", f"{a['gw4']}/24", "dev", a["rif"])
            self.ip(self.router, "addr", "add", f"{a['gw6']}/64", "dev", a["rif"], "nodad")
            self.ip(ns, "link", "set", "eth0", "up")
            self.ip(self.router, "link", "set", a["rif"], "up")
            self.ip(ns, "route", "add", "default", "via", a["gw4"])
            self.ip(ns, "-6", "route", "add", "default", "via", a["gw6"])

    def start_remote_servers(self, logdir, files):
        """Start the remote services in remote1 and remote2; `files` maps name -> content (bytes).

        Each remote serves the same files plus `who.txt` naming the remote."""
        self.files = dict(files)
        for r in REMOTES:
            root = os.path.join(logdir, f"www-{self.prefix}-{r}")
            os.makedirs(root, exist_ok=True)
            for name, data in list(files.items()) + [("who.txt", f"{r}\n".encode())]:
                with open(os.path.join(root, name), "wb") as f:
                    f.write(data)
            svc = Service(self.remote[r], ["remote", "--root", root], logdir, f"{self.prefix}-{r}")
            self.services.append(svc)
            setattr(self, f"svc_{r}", svc)

    def start_service(self, ns, args, logdir, name):
        svc = Service(ns, args, logdir, name)
        self.services.append(svc)
        return svc

    def down(self):
        for s in self.services:
            s.stop()
        self.services = []
        for ns in self.namespaces:
            if os.path.exists(f"/run/netns/{ns}"):
                delete_netns(ns)
        self.alive = False


class NftTable:
    """A throwaway nft table with one filter chain, in one namespace of the world (the test world may
    use nft; the product may not).  Use as a context manager: the table is deleted on exit, also
    when the test fails.

        with NftTable(world.router, "forward") as t:
            t.set("ip daddr 203.0.113.99 drop")
    """

    def __init__(self, ns, hook, name="cfwtest"):
        self.ns, self.hook, self.name = ns, hook, name

    def _nft(self, script, check=True):
        return sh(["ip", "netns", "exec", self.ns, "nft", "-f", "-"], input=script.encode(), check=check)

    def __enter__(self):
        self._nft(f"table inet {self.name} {{\n chain c {{ type filter hook {self.hook} priority 0; "
                  f"policy accept; }}\n}}\n")
        return self

    def set(self, *rules):
        """Replace the chain's rules with `rules` (nft rule syntax), atomically."""
        self._nft(f"flush chain inet {self.name} c\n" + "".join(f"add rule inet {self.name} c {r}\n"
                                                                 for r in rules))

    def __exit__(self, *exc):
        self._nft(f"delete table inet {self.name}\n", check=False)
        return False


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def demo_files():
    return {"index.html": b"<html><body><h1>Hello from the closed test world</h1></body></html>\n",
            "big.bin": os.urandom(32 << 20)}   # the --fast-tcp step's download


def main():
    ap = argparse.ArgumentParser(description="closed test world for childflow")
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--prefix", default="cfdemo")
    ap.add_argument("--dir", help="directory for server files and logs (up)")
    ap.add_argument("--no-v6", action="store_true")
    ap.add_argument("--uplinks", type=int, choices=[1, 2], default=1,
                    help="2: the host also gets eth1 198.19.0.2 (a second uplink, for --iface)")
    ap.add_argument("--host-http-port", type=int, default=8080,
                    help="also start an HTTP service on the host netns' 127.0.0.1 (0 = none)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("world.py: must be run as root (it creates network namespaces)", file=sys.stderr)
        return 1
    if not re.match(r"^[a-z][a-z0-9]{1,11}$", a.prefix):
        print("world.py: --prefix must be 2-12 lowercase letters/digits", file=sys.stderr)
        return 2
    if a.action == "down":
        cleanup_stray(rf"^{re.escape(a.prefix)}-")
        return 0
    if not a.dir:
        ap.error("up needs --dir")
    cleanup_stray(rf"^{re.escape(a.prefix)}-")
    try:
        w = World(a.prefix, v6=not a.no_v6, uplinks=a.uplinks).up()
    except RangeClash as e:
        print(f"world.py: {e}", file=sys.stderr)
        return 1
    try:
        w.start_remote_servers(a.dir, demo_files())
        if a.host_http_port:
            root = os.path.join(a.dir, "www-host")
            os.makedirs(root, exist_ok=True)
            with open(os.path.join(root, "index.html"), "w") as f:
                f.write("host-local service\n")
            w.start_service(w.host, ["http", "--bind", "127.0.0.1", "--port", str(a.host_http_port),
                                     "--root", root], a.dir, "hostlocal")
    except BaseException:
        w.down()
        raise
    # the servers keep running (own sessions); `down` kills them with their namespaces
    print(f"host={w.host}")
    for r in REMOTES:
        print(f"{r}={w.remote[r]}")
        print(f"{r}_log={getattr(w, 'svc_' + r).log}")
    if a.host_http_port:
        print(f"hostlocal_log={w.services[-1].log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
