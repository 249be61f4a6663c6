"""--fast-tcp (issue 14): the command's direct TCP connects made by childflow from the host's
namespace and injected over its socket; soundness (no way to the host's loopback), fidelity.

Soundness target: the host's loopback-only banner service 127.0.0.1:18001 (hostsvc), which sends
"HOSTSVC".  Every attack below would read that banner if it reached the host's loopback."""
import errno
import json
import os
import re
import shlex
import shutil
import subprocess
import time

import pytest

import childprogs as P
import world as W
from cfutil import curl, py, url

HERE = os.path.dirname(os.path.abspath(__file__))
R1 = W.REMOTES["remote1"]
CLOSED = 1          # nothing listens there on the remotes: a reset, ECONNREFUSED
LO, LO_PORT = "127.0.0.1", 18001
STATS = re.compile(rb"fast-tcp: (\d+) notifications: (\d+) connects injected, (\d+) performed in the sandbox "
                   rb"\((\d+) fell back")


@pytest.fixture(scope="session")
def fastprobe(sess):
    out = os.path.join(sess.bindir, "fastprobe")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", out, os.path.join(HERE, "fastprobe.c"), "-lpthread"],
                   check=True, timeout=60)
    os.chmod(out, 0o755)
    return out


def fast(cf, argv, timeout=30, extra=()):
    r = cf.run(["--fast-tcp", *extra, "--"] + argv, env={"CHILDFLOW_DEBUG": "1"}, timeout=timeout)
    m = STATS.search(r.err)
    stats = dict(zip(("notif", "injected", "performed", "fell_back"), map(int, m.groups()))) if m else None
    return r, stats


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


# ---- it works, at the host's address --------------------------------------------------------------

@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_download_is_injected(cf, world, fam):
    # The host's neighbour entry for the router first (IPv6 ND can take longer than the 100 ms a
    # non-blocking connect to a new destination may wait for its NAT check before it falls back).
    cf.direct(curl(url(R1[fam], "/who.txt")))
    token = os.urandom(6).hex()
    r, st = fast(cf, curl(url(R1[fam], f"/big.bin?id={token}")), timeout=60)
    assert r.rc == 0, r
    assert r.out == world.files["big.bin"], len(r.out)
    assert st and st["injected"] >= 1, (st, r.err[-2000:])
    hits = world.svc_remote1.wait_find(path=f"/big.bin?id={token}")
    assert hits and {h["client"] for h in hits} == {W.HOST_V4 if fam == "v4" else W.HOST_V6}, hits


GETSOCKNAME = r'''
import json, socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=5)
print(json.dumps([s.getsockname()[0], s.getpeername()[0]]))
'''


def test_getsockname_shows_the_hosts_address(cf, world):
    """The documented difference: an injected socket is the host's."""
    r, st = fast(cf, py(GETSOCKNAME, R1["v4"]))
    assert r.rc == 0, r
    assert last_json(r.out) == [W.HOST_V4, R1["v4"]], r
    r = cf.run(["--"] + py(GETSOCKNAME, R1["v4"]))
    assert r.rc == 0 and last_json(r.out)[0] != W.HOST_V4, r   # the control: the sandbox's own


# ---- exact outcomes ------------------------------------------------------------------------------

OUTCOMES = r'''
import errno, json, select, socket, sys, time
h, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in h else socket.AF_INET
out = {}
s = socket.socket(fam, socket.SOCK_STREAM)
try:
    s.connect((h, port)); out["blocking"] = "connected"
except OSError as e:
    out["blocking"] = errno.errorcode[e.errno]
s.close()
s = socket.socket(fam, socket.SOCK_STREAM); s.setblocking(False)
r = s.connect_ex((h, port)); out["nonblocking_first"] = errno.errorcode.get(r, "0")
select.select([], [s], [], 5)
e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR); out["nonblocking"] = errno.errorcode.get(e, "connected")
print(json.dumps(out))
'''


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_refused_is_exact(cf, world, fam):
    r, st = fast(cf, py(OUTCOMES, R1[fam], CLOSED))
    assert r.rc == 0, r
    assert last_json(r.out) == {"blocking": "ECONNREFUSED", "nonblocking_first": "EINPROGRESS",
                                "nonblocking": "ECONNREFUSED"}, r
    r, st = fast(cf, ["curl", "-sS", "-o", "/dev/null", url(R1[fam], "/", port=CLOSED)])
    assert r.rc == 7, r   # "failed to connect", as without childflow


TIMEOUTS = r'''
import errno, json, signal, socket, struct, sys, time
h = sys.argv[1]
out = {}
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 1, 0))
t0 = time.monotonic()
try:
    s.connect((h, 80)); out["sndtimeo"] = ["connected", 0]
except OSError as e:
    out["sndtimeo"] = [errno.errorcode[e.errno], round(time.monotonic() - t0, 1)]
s.close()
class Alarm(Exception): pass
def ring(*a): raise Alarm()
signal.signal(signal.SIGALRM, ring); signal.siginterrupt(signal.SIGALRM, True)
s = socket.socket(); signal.setitimer(signal.ITIMER_REAL, 1.0)
t0 = time.monotonic()
try:
    s.connect((h, 80)); out["sigalrm"] = ["connected", 0]
except Alarm:   # raised by the handler, which runs when connect() returned EINTR
    out["sigalrm"] = ["EINTR", round(time.monotonic() - t0, 1)]
except OSError as e:
    out["sigalrm"] = [errno.errorcode[e.errno], round(time.monotonic() - t0, 1)]
print(json.dumps(out))
'''


def test_silent_destination_timeouts_on_the_commands_clock(cf, world):
    """SO_SNDTIMEO gives EINPROGRESS after its time; a signal without SA_RESTART gives EINTR."""
    with W.NftTable(world.router, "forward") as nft:
        nft.set(f"ip daddr {R1['v4']} tcp dport 80 drop")
        control = cf.direct(py(TIMEOUTS, R1["v4"]), timeout=30)
        r, st = fast(cf, py(TIMEOUTS, R1["v4"]))
    assert control.rc == 0 and r.rc == 0, (control, r)
    assert last_json(control.out) == {"sndtimeo": ["EINPROGRESS", 1.0], "sigalrm": ["EINTR", 1.0]}, control
    assert last_json(r.out) == last_json(control.out), r


# ---- fidelity ------------------------------------------------------------------------------------

OPTS = r'''
import fcntl, json, os, socket, struct, sys, threading
h = sys.argv[1]
fam = socket.AF_INET6 if ":" in h else socket.AF_INET
def one(res):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 77)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 3))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
    if fam == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0x20)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", 0))
    port = s.getsockname()[1]
    s.connect((h, 80))
    s.sendall(b"GET /who.txt HTTP/1.0\r\n\r\n")
    body = b""
    while True:
        b = s.recv(4096)
        if not b: break
        body += b
    res.update(nodelay=s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
               keepalive=s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
               keepidle=s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
               sndbuf=s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
               linger=list(struct.unpack("ii", s.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))),
               cc=s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode(),
               tos=s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) if fam == socket.AF_INET else 0x20,
               cloexec=bool(fcntl.fcntl(s.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
               port_kept=s.getsockname()[1] == port, ok=body.endswith(b"remote1\n"))
res = {}
t = threading.Thread(target=one, args=(res,)); t.start(); t.join(20)   # from a second thread
s2 = socket.socket(fam, socket.SOCK_STREAM); os.set_inheritable(s2.fileno(), True)
s2.connect((h, 80)); res["inheritable_kept"] = not bool(fcntl.fcntl(s2.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
print(json.dumps(res))
'''


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_options_cloexec_bind_threads(cf, world, fam):
    r, st = fast(cf, py(OPTS, R1[fam]))
    assert r.rc == 0, r
    assert last_json(r.out) == {"nodelay": 1, "keepalive": 1, "keepidle": 77, "sndbuf": 131072,
                                "linger": [1, 3], "cc": "reno", "tos": 0x20, "cloexec": True,
                                "port_kept": True, "ok": True, "inheritable_kept": True}, r
    assert st and st["injected"] == 2, st


EPOLL_FIRST = r'''
import json, select, socket, sys
s = socket.socket(); s.setblocking(False)
ep = select.epoll(); ep.register(s.fileno(), select.EPOLLOUT | select.EPOLLET)
s.connect_ex((sys.argv[1], 80))
ev = ep.poll(5)
s.setblocking(True); s.sendall(b"GET /who.txt HTTP/1.0\r\n\r\n")
data = b""
while True:   # to EOF: headers and body may come in separate reads
    x = s.recv(4096)
    if not x:
        break
    data += x
print(json.dumps([len(ev), data.split(b"\r\n\r\n")[-1].decode()]))
'''


def test_epoll_before_connect_falls_back_to_the_relay(cf, world):
    """nginx's pattern: the socket is in an epoll set before connect(); replacing it would lose the
    registration (a hang).  It is detected and the connect goes through the relay instead."""
    r, st = fast(cf, py(EPOLL_FIRST, R1["v4"]))
    assert r.rc == 0, r
    assert last_json(r.out) == [1, "remote1\n"], r
    assert st and st["injected"] == 0 and st["fell_back"] == 1, st


# ---- soundness: the five ways of the probe, and the rest -------------------------------------------

ATTACKS = r'''
import errno, json, socket, sys, time
r1, closed, lo, lp = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
MSG_FASTOPEN = 0x20000000
out = {}
def banner(s):
    s.settimeout(2)
    try:
        return b"HOSTSVC" in s.recv(64)
    except OSError:
        return False
def attempt(name, fn):
    try:
        out[name] = fn()
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
def unspec():          # injected, disconnected with AF_UNSPEC, aimed at the host's loopback
    s = socket.create_connection((r1, 80), timeout=5)
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    sa = (ctypes.c_ushort * 8)(0)
    rc = libc.connect(s.fileno(), ctypes.byref(sa), 16)
    first = "unspec-" + (errno.errorcode[ctypes.get_errno()] if rc else "ok")
    try:
        s.connect((lo, lp)); return first + "/connected-" + str(banner(s))
    except OSError as e:
        return first + "/" + errno.errorcode[e.errno]
def second_after_failure():   # a refused injected connect, then connects to the host's loopback
    s = socket.socket(); s.setblocking(False)
    s.connect_ex((r1, closed)); time.sleep(0.5)
    res = [s.connect_ex((lo, lp)), s.connect_ex((lo, lp))]
    s.setblocking(True)
    return [errno.errorcode.get(x, "0") for x in res] + [banner(s)]
def fastopen():       # TCP Fast Open sendto: an implicit connect
    s = socket.socket()
    try:
        s.sendto(b"x", MSG_FASTOPEN, (lo, lp)); return "sent-" + str(banner(s))
    except OSError as e:
        return errno.errorcode[e.errno]
def host_local():     # the host's own address
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((sys.argv[5], int(sys.argv[6]))); return "connected-" + str(banner(s))
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
def bind_listen_injected():
    s = socket.create_connection((r1, 80), timeout=5)
    res = []
    for f in (lambda: s.bind(("0.0.0.0", 0)), lambda: s.listen(5)):
        try:
            f(); res.append("ok")
        except OSError as e:
            res.append(errno.errorcode[e.errno])
    return res
attempt("unspec", unspec)
attempt("second_after_failure", second_after_failure)
attempt("fastopen", fastopen)
attempt("host_local", host_local)
attempt("bind_listen_injected", bind_listen_injected)
print(json.dumps(out))
'''


def test_attacks_do_not_reach_the_hosts_loopback(cf, world, hostsvc):
    lo, anyaddr = hostsvc
    seen = (len(lo.find(svc="banner")), len(anyaddr.find(svc="banner")))   # earlier tests' visits
    r, st = fast(cf, py(ATTACKS, R1["v4"], CLOSED, LO, LO_PORT, W.HOST_V4, 18002))
    assert r.rc == 0, r
    got = last_json(r.out)
    assert got["unspec"].startswith("unspec-" + errno.errorcode[errno.EOPNOTSUPP] + "/"), got
    assert "True" not in got["unspec"], got
    assert got["second_after_failure"][2] is False and "0" not in got["second_after_failure"][:2], got
    assert got["fastopen"] == errno.errorcode[errno.EOPNOTSUPP], got
    assert not got["host_local"].startswith("connected-True"), got
    assert got["bind_listen_injected"] == ["EINVAL", "EINVAL"], got
    assert (len(lo.find(svc="banner")), len(anyaddr.find(svc="banner"))) == seen, "a host service was reached"


def test_fd_swap_race_bounded(cf, world, hostsvc, fastprobe):
    """The TOCTOU the probe won in 3-10 tries against a CONTINUE: never won here in 1500."""
    lo, _ = hostsvc
    seen = len(lo.find(svc="banner"))   # earlier tests' visits (the IPC red-team's host relay)
    r, st = fast(cf, [fastprobe, "race", "1500", LO, str(LO_PORT), R1["v4"], str(CLOSED)], timeout=240)
    assert r.rc == 0, r
    assert b"escaped 0 of 1500" in r.out, r
    assert len(lo.find(svc="banner")) == seen, "the host's loopback service was reached"


def test_io_uring_and_compat_abis_are_refused(cf, world, fastprobe):
    r, st = fast(cf, [fastprobe, "uring"])
    assert r.rc == 0 and b"io_uring_setup -1 1\n" in r.out, r   # EPERM
    r, st = fast(cf, [fastprobe, "compat", LO, str(LO_PORT)])
    assert r.rc == 0, r
    assert b"socketcall -38 connect -38 x32 -1/38" in r.out, r  # ENOSYS, all three


NESTED = r'''
import errno, socket, sys
s = socket.socket(); s.settimeout(3)
try:
    s.connect((sys.argv[1], 80)); print("connected")
except OSError as e:
    print(errno.errorcode.get(e.errno, "timeout"))
'''


def test_nested_netns_gets_no_host_socket(cf, world):
    """`unshare -rn` inside: that namespace has no network, and must keep having none."""
    r, st = fast(cf, ["unshare", "-rn"] + py(NESTED, R1["v4"]))
    assert r.rc == 0, r
    assert r.out.strip() == b"ENETUNREACH", r
    assert st and st["injected"] == 0, st


SANDBOX_LOCAL = r'''
import json, socket, threading
me = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); me.connect(("198.51.100.10", 9))
addr = me.getsockname()[0]
srv = socket.socket(); srv.bind(("0.0.0.0", 47001)); srv.listen(1)
def serve():
    c, _ = srv.accept(); c.sendall(b"INSIDE"); c.close()
threading.Thread(target=serve, daemon=True).start()
s = socket.create_connection((addr, 47001), timeout=5)
print(json.dumps([s.recv(16).decode(), addr]))
'''


def test_sandbox_local_destination_stays_inside(cf, world):
    """A listener of the command on 0.0.0.0, dialled at the sandbox's own address: not injected
    (the host has no such service), the command's own listener answers."""
    r, st = fast(cf, py(SANDBOX_LOCAL))
    assert r.rc == 0, r
    assert last_json(r.out)[0] == "INSIDE", r
    assert st and st["injected"] == 0, st


def test_unix_socket_connect_and_bind_are_performed(cf, world, sess):
    prog = r'''
import os, socket, sys, tempfile
d = tempfile.mkdtemp(dir=sys.argv[1]); os.chdir(d)
srv = socket.socket(socket.AF_UNIX); srv.bind("rel.sock"); srv.listen(1)
c = socket.socket(socket.AF_UNIX); c.connect(os.path.join(d, "rel.sock"))
a, _ = srv.accept(); a.sendall(b"unix-ok"); print(c.recv(16).decode(), oct(os.stat("rel.sock").st_mode & 0o777))
'''
    r, st = fast(cf, py(prog, sess.work))
    assert r.rc == 0, r.err.decode()[-3000:]
    assert r.out.split()[0] == b"unix-ok", r


RAW_ADDRS = r'''
import ctypes, json, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
def raw(fam, op, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    b = ctypes.create_string_buffer(addr, len(addr))
    r = getattr(libc, op)(s.fileno(), b, len(addr))
    e = 0 if r == 0 else ctypes.get_errno()
    s.close()
    return e
port = struct.pack(">H", 80)
print(json.dumps({
    # 126 path bytes and no NUL: longer than a sockaddr_un (the kernel: EINVAL)
    "unix_long": raw(socket.AF_UNIX, "connect", struct.pack("<H", socket.AF_UNIX) + b"A" * 126),
    "inet": raw(socket.AF_INET, "bind", struct.pack("<H", socket.AF_INET) + port + bytes(12)),
    # AF_UNSPEC with INADDR_ANY binds an AF_INET socket as AF_INET, port included
    "unspec": raw(socket.AF_INET, "bind", struct.pack("<H", socket.AF_UNSPEC) + port + bytes(12)),
}))
'''


def test_raw_addresses_get_the_kernels_answers(cf, world):
    """Addresses P copies out of the command's memory, as the kernel would judge them: an AF_UNIX
    address longer than a sockaddr_un is EINVAL (main copied its path into a 109-byte buffer: up
    to 17 bytes beyond it), and a privileged port bound through an AF_UNSPEC address needs the
    same capability as through AF_INET (main performed it with P's privileges)."""
    r, _ = fast(cf, py(RAW_ADDRS))
    assert r.rc == 0, r.err.decode()[-3000:]
    got = last_json(r.out)
    assert got["unix_long"] == errno.EINVAL, got
    assert got["unspec"] == got["inet"], got


def test_old_kernel_is_one_clear_error(cf, world):
    """On Linux < 5.19 --fast-tcp is refused with one line (uname faked with a personality that
    reports 2.6: UNAME26)."""
    if not shutil.which("setarch"):
        pytest.skip("no setarch")
    argv = cf.argv(["--fast-tcp", "--", "true"])
    i = argv.index(cf.bin)
    argv = argv[:i] + ["setarch", "x86_64", "--uname-2.6"] + argv[i:]
    p = subprocess.run(argv, capture_output=True, timeout=30)
    assert p.returncode == 125, p
    assert p.stderr.count(b"\n") == 1 and b"Linux 5.19" in p.stderr, p.stderr


NGINX_CONF = """
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:18080;
        location / {{ proxy_pass http://{up}:80; proxy_connect_timeout 5s; proxy_read_timeout 5s; }}
    }}
}}
"""

NGINX_RUN = r'''
import os, socket, subprocess, sys, time
d, up, nginx = sys.argv[1], sys.argv[2], sys.argv[4]
open(os.path.join(d, "nginx.conf"), "w").write(sys.argv[3])
ng = subprocess.Popen([nginx, "-e", os.path.join(d, "error.log"), "-p", d, "-c", os.path.join(d, "nginx.conf"),
                       "-g", "daemon off;"])
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", 18080), timeout=1).close(); break
    except OSError:
        time.sleep(0.05)
r = subprocess.run(["curl", "-sS", "-m", "10", "http://127.0.0.1:18080/who.txt"], capture_output=True, timeout=20)
ng.terminate(); ng.wait(10)
sys.stdout.write(r.stdout.decode()); sys.stderr.write(r.stderr.decode())
sys.exit(r.returncode)
'''


def test_nginx_reverse_proxy_does_not_hang(cf, world, sess):
    """nginx adds its upstream socket to epoll before connect(): through --fast-tcp the upstream
    connect must still complete (it falls back to the relay) and the page come back."""
    if not shutil.which("nginx"):
        pytest.fail("nginx is missing: scripts/deps.sh check installs it")
    d = os.path.join(sess.work, f"nginx-{os.getpid()}-{cf.runner.name}")
    os.makedirs(d, exist_ok=True)
    if cf.runner.user:
        os.chown(d, cf.runner.uid, cf.runner.gid)
    try:
        conf = NGINX_CONF.format(d=d, up=R1["v4"])
        if not cf.runner.user:
            conf = "user root;\n" + conf
        r, st = fast(cf, py(NGINX_RUN, d, R1["v4"], conf, shutil.which("nginx")), timeout=60)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert r.rc == 0, r.err.decode()[-2000:]
    assert r.out == b"remote1\n", r
    assert st and st["fell_back"] >= 1, st


PASS_ON = r'''
import array, os, socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=5)
a, b = socket.socketpair()
pid = os.fork()
if pid == 0:
    fds = array.array("i")
    msg, anc, flags, addr = b.recvmsg(1, socket.CMSG_LEN(fds.itemsize))
    fds.frombytes(anc[0][2][:fds.itemsize])
    c = socket.socket(fileno=fds[0]); c.setblocking(True)   # create_connection(timeout) left O_NONBLOCK
    c.sendall(b"GET /who.txt HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        x = c.recv(4096)
        if not x: break
        data += x
    os.write(1, data.split(b"\r\n\r\n")[-1]); os._exit(0)
a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno()]))])
s.close()
os.waitpid(pid, 0)
'''


def test_connected_socket_passed_to_another_process(cf, world):
    r, st = fast(cf, py(PASS_ON, R1["v4"]))
    assert (r.rc, r.out) == (0, b"remote1\n"), r.err.decode()[-1500:]
    assert st and st["injected"] == 1, st


def test_capture_keeps_every_connect_on_the_relay(cf, world, sess):
    """-c records the command's packets: nothing may bypass the link, so nothing is injected."""
    pcap = os.path.join(sess.work, f"fast-{os.getpid()}-{cf.runner.name}.pcapng")
    try:
        r, st = fast(cf, curl(url(R1["v4"], "/who.txt")), extra=("-c", pcap))
        assert (r.rc, r.out) == (0, b"remote1\n"), r
        assert st and st["injected"] == 0 and st["performed"] >= 1, st
        assert os.path.getsize(pcap) > 200
    finally:
        if os.path.exists(pcap):
            os.unlink(pcap)


def test_with_isolate(cf, world):
    """Both filters stacked (--isolate's and --fast-tcp's): still injected, still works."""
    r, st = fast(cf, curl(url(R1["v4"], "/who.txt")), extra=("--isolate",))
    assert (r.rc, r.out) == (0, b"remote1\n"), r
    assert st and st["injected"] == 1, st


# ---- AF_UNIX paths are the command's, symlinks included ---------------------------------------------

UNIX_SYMLINK = r'''
import os, socket, sys, threading
target, link = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(target), exist_ok=True)     # in the command's own /tmp (--isolate)
srv = socket.socket(socket.AF_UNIX); srv.bind(target); srv.listen(1)
def answer():
    a, _ = srv.accept(); a.sendall(b"INSIDE"); a.close()
threading.Thread(target=answer, daemon=True).start()
c = socket.socket(socket.AF_UNIX); c.settimeout(5)
try:
    c.connect(link); print(c.recv(16).decode())
except OSError as e:
    print("err:" + (os.strerror(e.errno) if e.errno else str(e)))
'''


def test_unix_connect_through_an_absolute_symlink_stays_in_the_commands_root(cf, world, sess):
    """An AF_UNIX connect is performed by P; an absolute symlink on the path must be resolved in the
    command's root, not P's.  The host's /tmp holds a socket answering HOST at the path the symlink
    names; the command (--isolate: its own /tmp) has its own server there, answering INSIDE.  Found
    with test_redteam_ipc in fast mode: /var/run -> /run reached the host's hidden docker.sock."""
    import socket
    import threading
    d = f"/tmp/cfw-fastsym-{os.getpid()}"
    target = f"{d}/s.sock"
    link = f"/var/tmp/cfw-fastsym-{os.getpid()}-{cf.runner.uid}.sock"   # visible with --isolate
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    srv = socket.socket(socket.AF_UNIX)
    stop = threading.Event()
    try:
        srv.bind(target)
        os.chmod(target, 0o777)
        srv.listen(4)
        srv.settimeout(0.2)

        def host_side():
            while not stop.is_set():
                try:
                    a, _ = srv.accept()
                except OSError:
                    continue
                a.sendall(b"HOST")
                a.close()
        t = threading.Thread(target=host_side, daemon=True)
        t.start()
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(target, link)
        r, st = fast(cf, py(UNIX_SYMLINK, target, link), extra=("--isolate",))
        assert r.rc == 0, r.err.decode()[-3000:]
        assert r.out.split()[-1] == b"INSIDE", r
    finally:
        stop.set()
        srv.close()
        for p in (link, target):
            if os.path.lexists(p):
                os.unlink(p)
        shutil.rmtree(d, ignore_errors=True)


# ---- a slow handshake (> 100 ms) with non-blocking connects -----------------------------------------

SLOW_PORT = 18080
# Every handshake to remote1:SLOW_PORT takes about a second: the router drops each connection's
# first SYN (remembering its source address and port in a set), and the retransmission (1 s) passes.
# (No tc netem on this kernel.)  The server is a plain HTTP answer.
SLOW_SERVER = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(16)
print("READY", flush=True)
while True:
    a, _ = srv.accept()
    a.settimeout(10); a.recv(4096)
    a.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nslow\n"); a.close()
"""
SLOW_TABLE = "cfw_fast_slow"


def test_slow_handshake_is_injected_after_the_relay_checked_it(cf, world):
    """A non-blocking connect to a destination not checked in the last 5 s waits at most 100 ms for
    its handshake and NAT check, then takes the relay.  The relay's own check of that connection
    fills the guard's memo, so the next connect to it (the second curl), as slow, is injected at once
    (EINPROGRESS) and checked at completion: a slow destination is not lost for good."""
    rt = world.router
    srv = None
    try:
        nft = ["ip", "netns", "exec", rt, "nft"]
        syn = ["ip", "daddr", R1["v4"], "tcp", "dport", str(SLOW_PORT), "tcp", "flags", "syn"]
        W.sh(nft + ["add", "table", "inet", SLOW_TABLE])
        W.sh(nft + ["add", "set", "inet", SLOW_TABLE, "seen",
                    "{ type ipv4_addr . inet_service; flags dynamic, timeout; timeout 60s; }"])
        W.sh(nft + ["add", "chain", "inet", SLOW_TABLE, "c", "{ type filter hook forward priority 0; }"])
        W.sh(nft + ["add", "rule", "inet", SLOW_TABLE, "c"] + syn + ["ip", "saddr", ".", "tcp", "sport", "@seen", "accept"])
        W.sh(nft + ["add", "rule", "inet", SLOW_TABLE, "c"] + syn +
             ["add", "@seen", "{", "ip", "saddr", ".", "tcp", "sport", "}", "drop"])
        srv = subprocess.Popen(world.exec_argv(world.remote["remote1"],
                                               ["/usr/bin/python3", "-c", SLOW_SERVER, R1["v4"], str(SLOW_PORT)]),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert srv.stdout.readline() == b"READY\n", srv.stderr.read1(2000) if srv.poll() is not None else b""
        u = url(R1["v4"], "/", port=SLOW_PORT)
        cmd = shlex.join(curl(u)) + "; " + shlex.join(curl(u))   # quoted: curl's `--noproxy *`
        t0 = time.monotonic()
        r, st = fast(cf, ["/bin/sh", "-c", cmd], timeout=60)
        took = time.monotonic() - t0
        assert (r.rc, r.out) == (0, b"slow\nslow\n"), r
        assert took >= 1.5, took        # both handshakes were slow (a retransmitted SYN each)
        assert st and st["fell_back"] == 1 and st["injected"] == 1, (st, r.err[-2000:])
    finally:
        if srv:
            srv.kill()
            srv.wait(timeout=10)
        W.sh(["ip", "netns", "exec", rt, "nft", "delete", "table", "inet", SLOW_TABLE], check=False)


# ---- nothing the command does blocks P (redteam3 G3) -------------------------------------------------

# The command makes P's inspection of one call block in the kernel: "fuse", an AF_UNIX connect to a
# path on a FUSE mount whose server never answers (P's path walk waits in fuse_get_req); "uffd", a
# connect whose address lies in userfaultfd-registered memory nobody serves (P's read of it waits
# in handle_userfault).  Both need /dev/fuse, /dev/userfaultfd (0600 root here): a root caller.
# Then it makes a second, ordinary connection, prints its answer and sleeps; P must still relay it,
# answer the blocked call, and end the run on a signal.
BLOCKER = r'''
import ctypes, fcntl, os, socket, struct, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
mode, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
keep = []
def blocked(fn):
    try:
        fn(); print("blocked call: ok", flush=True)
    except OSError as e:
        print("blocked call: " + errno_name(e.errno), flush=True)
def errno_name(e):
    import errno
    return errno.errorcode.get(e, str(e))
first = socket.create_connection((host, 80), timeout=10)   # open before the blockers
if mode == "fuse":
    assert libc.unshare(0x00020000) == 0, ctypes.get_errno()           # CLONE_NEWNS: mount privately
    assert libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None) == 0   # MS_REC|MS_PRIVATE
    mnt = "/tmp/cfw-fuse-%d" % os.getpid(); os.makedirs(mnt, exist_ok=True)
    fd = os.open("/dev/fuse", os.O_RDWR); keep.append(fd)
    opts = b"fd=%d,rootmode=40000,user_id=0,group_id=0" % fd
    assert libc.mount(b"none", mnt.encode(), b"fuse", 0, opts) == 0, ctypes.get_errno()
    call = lambda: socket.socket(socket.AF_UNIX).connect(mnt + "/sock")
else:
    dev = os.open("/dev/userfaultfd", os.O_RDWR | os.O_CLOEXEC)
    uffd = fcntl.ioctl(dev, 0xAA00, 0o2000000)                            # USERFAULTFD_IOC_NEW
    keep.append(uffd)
    api = bytearray(struct.pack("QQQ", 0xAA, 0, 0)); fcntl.ioctl(uffd, 0xc018aa3f, api)
    page = libc.mmap(None, 4096, 3, 0x22, -1, 0)                         # PROT_RW, PRIVATE|ANON
    reg = bytearray(struct.pack("QQQQ", page, 4096, 1, 0)); fcntl.ioctl(uffd, 0xc020aa00, reg)
    s = socket.socket(); keep.append(s)
    call = lambda: (libc.connect(s.fileno(), ctypes.c_void_p(page), 16) == 0 or
                    (_ for _ in ()).throw(OSError(ctypes.get_errno(), "connect")))
for i in range(n):
    threading.Thread(target=blocked, args=(call,), daemon=True).start()
time.sleep(0.5)
c = first if n > 1 else socket.create_connection((host, 80), timeout=10)
c.sendall(b"GET /who.txt HTTP/1.0\r\n\r\n"); print("second:", c.recv(12).decode(), flush=True)
c.close()
time.sleep(60)
'''


@pytest.mark.parametrize("mode,n,sig", [("fuse", 1, "SIGINT"), ("uffd", 1, "SIGTERM"), ("fuse", 11, "SIGTERM")],
                         ids=["fuse", "uffd", "fuse-flood"])
def test_a_blocking_inspection_never_stops_p(cf, world, mode, n, sig):
    """Main walked the AF_UNIX path and read the address in P's loop: P slept in the kernel
    (D state, fuse_get_req / handle_userfault), the second connect never returned, the relay and
    the pty relay stopped, and a signal did not end the run.  Now both are done by a worker with a
    1 s deadline: the second connection is relayed at once, the blocked call fails after the
    deadline (ETIMEDOUT for the path, EFAULT for the address), and the run ends on the signal.
    The flood: 11 blocked calls, one after the other abandon their worker up to the cap (8), the
    rest fail at once; a connection opened before still relays, and the run still ends."""
    import signal
    from cfutil import kill_tree, read_line
    if cf.runner.user:
        pytest.skip("the blockers need /dev/fuse and /dev/userfaultfd (root only here)")
    p = cf.popen(["--fast-tcp", "--", *py(BLOCKER, mode, R1["v4"], n)])
    err = b""
    try:
        stdin = os.readlink(f"/proc/{p.pid}/fd/0")   # P's own fds stay P's (an abandoned job's copy
        lines = [read_line(p.stdout, 15) for _ in range(n + 1)]   # once closed fd 0)
        assert b"second: HTTP/1.0 200" in b"".join(lines), lines
        want = b"blocked call: " + (b"ETIMEDOUT" if mode == "fuse" else b"EFAULT")
        assert sum(ln.startswith(want) for ln in lines) == n, lines
        assert os.readlink(f"/proc/{p.pid}/fd/0") == stdin
        t0 = time.monotonic()
        os.kill(p.pid, getattr(signal, sig))
        p.wait(timeout=10)
        assert time.monotonic() - t0 < 5, time.monotonic() - t0
    finally:
        kill_tree(p)
        _, err = p.communicate(timeout=10)
    reps = cf.runner.sanitizer_reports(err)
    assert not reps, reps


PRIV_PORT = r'''
import json, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[3]))); s.settimeout(10); s.connect((sys.argv[1], 80))
s.sendall(b"GET " + sys.argv[2].encode() + b" HTTP/1.0\r\n\r\n")
d = b""
while True:   # to the end: closed with unread bytes, the reset could stop the server before it logs
    b = s.recv(4096)
    if not b:
        break
    d += b
print(d[:12].decode())
print(json.dumps(list(s.getsockname())))
'''


@pytest.mark.parametrize("port", [811, 40811])
def test_a_privileged_bound_port_never_reaches_the_host(cf, world, port):
    """A root caller's command may bind :811 in its own namespaces (CAP_NET_BIND_SERVICE there);
    main replicated that port on P's host socket, so the connection left the host from the
    privileged port 811, as root (redteam3 G5).  Now such a connect takes the relay, which dials
    from an ephemeral port as without --fast-tcp; an unprivileged bound port is still replicated."""
    if cf.runner.user and port < 1024:
        pytest.skip("an unprivileged caller's command cannot bind below 1024")
    token = os.urandom(6).hex()
    path = f"/who.txt?id={token}"
    r, st = fast(cf, py(PRIV_PORT, R1["v4"], path, port))
    assert r.rc == 0, r.err.decode()[-3000:]
    assert r.out.startswith(b"HTTP/1.0 200"), r
    hits = world.svc_remote1.wait_find(path=path)
    assert hits and len(hits) == 1, hits
    cport = int(hits[0]["cport"])
    if port < 1024:
        assert cport >= 1024, hits
        assert st and st["injected"] == 0, st
    else:
        assert cport == port and st and st["injected"] == 1, (hits, st)


TID_REUSE = r'''
import os, socket, sys, threading
host, marker = sys.argv[1], sys.argv[2]
''' + P.HTTP_GET_WHO + r'''
def who():
    return get(socket.create_connection((host, 80), timeout=10))
def thread():
    print("thread", threading.get_native_id(), who(), flush=True)
    sys.stdin.readline()
t = threading.Thread(target=thread)
t.start()
t.join()
print("joined", flush=True)
sys.stdin.readline()
pid = os.fork()
if pid == 0:
    try:
        w = who()
    except OSError as e:
        w = "error " + str(e.errno)
    print("child", os.getpid(), w, flush=True)
    sys.stdin.readline()
    os._exit(0)
os.waitpid(pid, 0)
'''


def global_tid(marker, local):
    """The host's tid of the command's task whose innermost tid is `local` (its NSpid line)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if marker.encode() not in open(f"/proc/{pid}/cmdline", "rb").read():
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                for line in open(f"/proc/{pid}/task/{tid}/status"):
                    if line.startswith("NSpid:") and line.split()[-1] == str(local):
                        return int(line.split()[1])
        except OSError:
            continue
    return None


def test_a_reused_tid_gets_its_own_socket(cf, world):
    """P keeps a thread's /proc directory and pidfd (PIDFD_THREAD) for its next connect.  A thread
    that connected and exited leaves them kept; a new task that gets the same tid (the host's next
    pid pointed at it through ns_last_pid) must have its own socket taken and injected: the kept
    pidfd of the exited thread fails with ESRCH and P opens the new task's afresh.  Kept without
    that check, the new task's connect would fail (EPERM)."""
    if cf.runner.user:
        pytest.skip("pointing the host's next pid (ns_last_pid) needs root")
    marker = "tidreuse-" + os.urandom(4).hex()
    for attempt in range(3):
        p = cf.popen(["--fast-tcp", "--", *py(TID_REUSE, R1["v4"], marker)], env={"CHILDFLOW_DEBUG": "1"},
                     stdin=subprocess.PIPE)
        try:
            from cfutil import kill_tree, read_line
            first = read_line(p.stdout, 15).split()
            assert first[:1] == [b"thread"] and first[2:] == [b"remote1"], first
            g = global_tid(marker, int(first[1]))
            assert g, first
            p.stdin.write(b"\n")
            p.stdin.flush()
            assert read_line(p.stdout, 10) == b"joined\n"
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(g - 1))
            p.stdin.write(b"\n")
            p.stdin.flush()
            child = read_line(p.stdout, 15).split()
            g2 = global_tid(marker, int(child[1]))
            out, err = p.communicate(b"\n", timeout=15)
        finally:
            kill_tree(p)
        if g2 != g:
            continue   # another process took that pid first: try again
        assert child[2:] == [b"remote1"], (child, err[-2000:])
        m = STATS.search(err)
        assert m and int(m.group(2)) == 2, err[-2000:]
        return
    pytest.skip("the host's next pid could not be pointed at the exited thread's tid")
