#!/usr/bin/python3
"""Upstream proxies for the closed test world (tests/e2e/world.py), in a namespace of their own.

    host 198.18.0.2 --- router --- remote1 198.51.100.10 (its input refuses the host's addresses)
                          |
                          +-- px0 198.18.7.1/24, 2001:db8:7::1/64 <-> proxy: eth0 198.18.7.10, 2001:db8:7::10

In the proxy namespace:
    tinyproxy  :8888  Basic auth (USER/PASSWORD), logs every CONNECT          (http://)
    stunnel4   :8443  TLS (a test CA made here with the openssl CLI) -> tinyproxy (https://)
    stunnel4   :8444  the same, with a certificate for another host name
    microsocks :1080  username/password                                       (socks5://)
    danted     :1081  username/password against a throwaway system user       (socks5://)
    fake       :9000  HTTP CONNECT proxy whose 200 reply carries the destination's first bytes
    fake       :9001  SOCKS5 proxy whose CONNECT reply carries the destination's first bytes
    fake       :9002  SOCKS5 proxy that answers a CONNECT to port 7000+N with REP N (1-8), logging
                      each request's address type and address (not the start-up probe's, to port 0)
    fake       :9003  SOCKS5 proxy (no authentication) that reads what arrived 0.3 s after the
                      connection, logging how much of the handshake that first read held, then echoes
    (nothing)  :9999  a dead proxy: connections are refused
dante refuses (REP 2, its ruleset) CONNECTs to BLOCKED4/BLOCKED6.  The proxies resolve names with
/etc/netns/<ns>/hosts (`names`; `ip netns exec` binds it over /etc/hosts) and a resolv.conf naming
only the namespace's own loopback: they never ask this machine's resolver.
Every proxy listens on both addresses.  `refuse_host()` makes remote1 reset TCP from the host's own
addresses, so that only the proxied path can reach it.  Everything is removed by `down()`.
"""
import os
import secrets
import shutil
import subprocess
import time

import world as W

NET4, NET6 = "198.18.7.0/24", "2001:db8:7::/64"
GW4, GW6 = "198.18.7.1", "2001:db8:7::1"
PROXY4, PROXY6 = "198.18.7.10", "2001:db8:7::10"
TINY, STUNNEL, STUNNEL_OTHER, MICROSOCKS, DANTE, FAKE_HTTP, FAKE_SOCKS, FAKE_REP, FAKE_PIPE, DEAD = \
    8888, 8443, 8444, 1080, 1081, 9000, 9001, 9002, 9003, 9999
REP_BASE = 7000                                        # FAKE_REP: port REP_BASE+N gets REP N
BLOCKED4, BLOCKED6 = "198.51.100.80", "2001:db8:100::80"   # dante: "not allowed by ruleset"
CERT_NAME = "proxy.test"
GREETING = b"EARLY-BYTES-FROM-THE-DESTINATION\n"

# A proxy that answers in one segment: its reply and the destination's first bytes, then echoes.
FAKE = r'''
import socket, sys, threading, time
kind, port, greeting = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode() + b"\n"
def serve(c):
    try:
        if kind == "http":
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    return
                buf += d
            c.sendall(b"HTTP/1.1 200 Connection established\r\nX-Pad: 1\r\n\r\n" + greeting)
        elif kind == "socks5-rep":
            c.recv(3)
            c.sendall(b"\x05\x00")
            req = c.recv(262)
            if len(req) < 7:   # the start-up probe stops after the greeting
                return
            atyp, port = req[3], int.from_bytes(req[-2:], "big")
            addr = req[5:-2].decode() if atyp == 3 else socket.inet_ntop(
                socket.AF_INET if atyp == 1 else socket.AF_INET6, req[4:-2])
            if port:   # port 0: the start-up probe's pipelined CONNECT 0.0.0.0:0
                print(f"atyp={atyp} addr={addr} port={port}", flush=True)
            rep = port - int(greeting) if 0 < port - int(greeting) <= 8 else 0
            c.sendall(bytes([5, rep, 0, 1, 0, 0, 0, 0, 0, 0]))
            if rep:
                return
        elif kind == "socks5-pipe":
            time.sleep(0.3)
            buf = c.recv(4096)
            first = len(buf)
            while len(buf) < 2 or len(buf) < 2 + buf[1]:
                buf += c.recv(4096) or sys.exit(0)
            glen = 2 + buf[1]
            if first == glen:
                c.sendall(b"\x05\x00")   # the greeting alone: answer it before reading on
            def need():
                if len(buf) < glen + 5:
                    return glen + 5
                return glen + {1: 10, 4: 22}.get(buf[glen + 3], 7 + buf[glen + 4])
            while len(buf) < need():
                buf += c.recv(4096) or sys.exit(0)
            port = int.from_bytes(buf[need() - 2:need()], "big")
            print(f"port={port} first={first} handshake={need()}", flush=True)
            c.sendall((b"" if first == glen else b"\x05\x00") + b"\x05\x00\x00\x01\0\0\0\0\0\0")
        else:
            c.recv(3)
            c.sendall(b"\x05\x00")
            c.recv(262)
            c.sendall(b"\x05\x00\x00\x01\xc6\x12\x07\x0a\x00\x50" + greeting)
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
    finally:
        c.close()
s = socket.socket(socket.AF_INET6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", port))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


def sh(argv, **kw):
    return W.sh(argv, **kw)


def wait_listen(ns, port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = sh(["ip", "netns", "exec", ns, "ss", "-Hltn", f"sport = :{port}"], check=False).stdout
        if out.strip():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"proxy exited early ({proc.returncode}): {proc.args!r}")
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} in {ns} after {timeout}s")


def make_ca(d):
    """A test CA and two server certificates (proxy.test + the proxy's IPs; other.test) via openssl."""
    def ossl(*a):
        sh(["openssl"] + list(a), timeout=30)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ossl("req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "2",
         "-subj", "/CN=childflow e2e test CA")
    for name, san in (("srv", f"DNS:{CERT_NAME},IP:{PROXY4},IP:{PROXY6}"), ("other", "DNS:other.test")):
        ossl("req", *ec, "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr", "-subj", f"/CN={name}")
        with open(f"{d}/{name}.ext", "w") as f:
            f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        ossl("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
             "-CAcreateserial", "-out", f"{d}/{name}.pem", "-days", "2", "-extfile", f"{d}/{name}.ext")
    os.chmod(f"{d}/ca.pem", 0o644)
    return f"{d}/ca.pem"


class Proxies:
    def __init__(self, world, logdir, names=None):
        """`names`: {host name: [addresses]} the proxies resolve (their /etc/hosts)."""
        self.w = world
        self.names = names or {}
        self.ns = f"{world.prefix}-proxy"
        self.etc = f"/etc/netns/{self.ns}"
        self.dir = os.path.join(logdir, f"proxies-{world.prefix}")
        self.procs = []
        self.user = "cfp" + secrets.token_hex(3)   # tinyproxy/microsocks user, and dante's system user
        self.password = secrets.token_hex(8)
        self.sysuser = None
        self.nft = None

    # -- topology ---------------------------------------------------------------------------------
    def up(self):
        W.check_ranges_free([NET4, NET6], f"proxy world {self.ns}")
        try:
            self._up()
        except BaseException:
            self.down()
            raise
        return self

    def _up(self):
        w, ns = self.w, self.ns
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.makedirs(self.etc, exist_ok=True)
        with open(f"{self.etc}/hosts", "w") as f:
            f.write("127.0.0.1 localhost\n::1 localhost\n" +
                    "".join(f"{a} {n}\n" for n, addrs in self.names.items() for a in addrs))
        with open(f"{self.etc}/resolv.conf", "w") as f:
            f.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        sh(["ip", "netns", "add", ns])
        w.sysctl(ns, "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        w.ip(ns, "link", "set", "lo", "up")
        w.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "px0", "netns", w.router)
        w.ip(ns, "addr", "add", f"{PROXY4}/24", "dev", "eth0")
        w.ip(ns, "addr", "add", f"{PROXY6}/64", "dev", "eth0", "nodad")
        w.ip(w.router, "addr", "add", f"{GW4}/24", "dev", "px0")
        w.ip(w.router, "addr", "add", f"{GW6}/64", "dev", "px0", "nodad")
        w.ip(ns, "link", "set", "eth0", "up")
        w.ip(w.router, "link", "set", "px0", "up")
        w.ip(ns, "route", "add", "default", "via", GW4)
        w.ip(ns, "-6", "route", "add", "default", "via", GW6)
        self.ca = make_ca(self.dir)
        self._start_tinyproxy()
        self._start_stunnel("https", STUNNEL, "srv")
        self._start_stunnel("other", STUNNEL_OTHER, "other")
        self.microsocks_log = os.path.join(self.dir, "microsocks.log")
        self._spawn(["microsocks", "-i", "::", "-p", str(MICROSOCKS), "-u", self.user, "-P", self.password],
                    MICROSOCKS, self.microsocks_log)
        self._start_dante()
        for kind, port, arg in (("http", FAKE_HTTP, GREETING.decode().strip()),
                                ("socks5", FAKE_SOCKS, GREETING.decode().strip()),
                                ("socks5-rep", FAKE_REP, str(REP_BASE)),
                                ("socks5-pipe", FAKE_PIPE, "-")):
            self._spawn([W.PY, "-u", "-c", FAKE, kind, str(port), arg], port,
                        os.path.join(self.dir, f"fake-{kind}.log"))
        self.rep_log = os.path.join(self.dir, "fake-socks5-rep.log")
        self.pipe_log = os.path.join(self.dir, "fake-socks5-pipe.log")

    def _spawn(self, argv, port, log):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns] + argv, stdin=subprocess.DEVNULL,
                             stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
                             close_fds=True)
        self.procs.append(p)
        wait_listen(self.ns, port, p)
        return p

    def _start_tinyproxy(self):
        self.tiny_log = os.path.join(self.dir, "tinyproxy.log")
        open(self.tiny_log, "w").close()
        os.chmod(self.tiny_log, 0o666)
        conf = os.path.join(self.dir, "tinyproxy.conf")
        with open(conf, "w") as f:
            f.write(f"User nobody\nGroup nogroup\nPort {TINY}\nTimeout 60\nLogFile \"{self.tiny_log}\"\n"
                    f"LogLevel Info\nMaxClients 400\nBasicAuth {self.user} {self.password}\n")
        self._spawn(["tinyproxy", "-d", "-c", conf], TINY, os.path.join(self.dir, "tinyproxy.out"))

    def _start_stunnel(self, name, port, cert):
        conf = os.path.join(self.dir, f"stunnel-{name}.conf")
        with open(conf, "w") as f:
            # debug = info: the log says "previous session reused" for a resumed TLS session
            f.write(f"foreground = yes\npid =\noutput = {self.dir}/stunnel-{name}.log\ndebug = info\n"
                    f"[{name}]\naccept = :::{port}\nconnect = 127.0.0.1:{TINY}\n"
                    f"cert = {self.dir}/{cert}.pem\nkey = {self.dir}/{cert}.key\nsslVersionMin = TLSv1.2\n")
        self._spawn(["stunnel4", conf], port, os.path.join(self.dir, f"stunnel-{name}.out"))
        setattr(self, f"stunnel_{name}_log", os.path.join(self.dir, f"stunnel-{name}.log"))

    def _start_dante(self):
        # dante's username method checks the system's password database: a throwaway user.
        sh(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", self.user])
        self.sysuser = self.user
        sh(["chpasswd"], input=f"{self.user}:{self.password}\n".encode())
        self.dante_log = os.path.join(self.dir, "danted.log")
        conf = os.path.join(self.dir, "danted.conf")
        with open(conf, "w") as f:
            f.write(f"logoutput: {self.dante_log}\ninternal: {PROXY4} port = {DANTE}\n"
                    f"internal: {PROXY6} port = {DANTE}\nexternal: eth0\nsocksmethod: username\n"
                    "user.privileged: root\nuser.unprivileged: nobody\n"
                    "client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }\nclient pass { from: ::/0 to: ::/0 }\n"
                    + "".join(f"socks block {{ from: {c} to: {b} log: connect }}\n"
                              for c in ("0.0.0.0/0", "::/0") for b in (f"{BLOCKED4}/32", f"{BLOCKED6}/128"))
                    + "".join(f"socks pass {{ from: {c} to: {d} log: connect }}\n"
                              for c in ("0.0.0.0/0", "::/0") for d in ("0.0.0.0/0", "::/0")))
        self._spawn(["danted", "-f", conf], DANTE, os.path.join(self.dir, "danted.out"))

    def refuse_host(self):
        """remote1 resets TCP from the host's own addresses (until down())."""
        self.nft = W.NftTable(self.w.remote["remote1"], "input", name="cfproxy")
        self.nft.__enter__()
        self.nft.set(f"ip saddr {W.HOST_V4} meta l4proto tcp reject with tcp reset",
                     f"ip6 saddr {W.HOST_V6} meta l4proto tcp reject with tcp reset")

    def log_text(self, path):
        with open(path, errors="replace") as f:
            return f.read()

    def down(self):
        if self.nft:
            self.nft.__exit__(None, None, None)
            self.nft = None
        for p in self.procs:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        if os.path.exists(f"/run/netns/{self.ns}"):
            W.delete_netns(self.ns)
        if self.sysuser:
            sh(["userdel", self.sysuser], check=False)
            self.sysuser = None
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.etc, ignore_errors=True)
