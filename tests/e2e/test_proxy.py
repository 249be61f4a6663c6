"""--proxy: every TCP connection of the tree goes through the upstream proxy (http, https, socks5).

The proxies live in a namespace of the closed world (proxies.py); remote1 resets TCP from the host's
own addresses, so a download that succeeds went through the proxy, and remote1's log names the
proxy as its client."""
import hashlib
import json
import os
import re
import shlex
import subprocess
import threading
import time

import pytest

import childprogs as P
import proxies as X
import world as W
from cfutil import curl, curl_upload, py, url, wget, pids_with_arg, wait_until
from test_capture import capdir, tshark  # noqa: F401 (capdir: a fixture)

R1 = W.REMOTES["remote1"]


def sha(b):
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def px(world, sess):
    p = X.Proxies(world, sess.logs).up()
    try:
        p.refuse_host()
        yield p
    finally:
        p.down()


def auth(p):
    return ["-U", p.user, "-P", p.password]


def after_probe(px, log, before, gate, argv):
    """`argv` run once the start-up probe's TLS connection to stunnel has closed.

    childflow probes the proxy in the background, so the command's first connections may start
    before the probe has read the proxy's tickets; they then make full handshakes (correctly), and a
    test counting resumptions would depend on that race.  The probe reads the CONNECT reply, which
    stunnel sends after the tickets, before it closes: once stunnel logs the close of the first
    connection accepted after `before`, P holds the probe's tickets.  A thread creates `gate` then
    (or after 20 s, and the test's counts fail), and the command waits for it."""
    def probe_closed():
        text = px.log_text(log)[before:]
        first = re.search(r"LOG\d\[(\d+)\]: Service \[https\] accepted connection", text)
        return bool(first) and f"LOG5[{first.group(1)}]: Connection closed" in text

    def watch():
        wait_until(probe_closed, 20)
        open(gate, "w").close()
    threading.Thread(target=watch, daemon=True).start()
    return ["sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.01; done; exec "$@"', gate] + argv


def proxy_uri(scheme, port, host=X.PROXY4):
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def warnings(r):
    return [l for l in r.etext.splitlines() if l.startswith("childflow: warning:")]


def assert_via_proxy(world, token, fam="v4"):
    hits = world.svc_remote1.wait_find(path=f"/index.html?id={token}")
    assert hits, f"remote1 logged no request {token}"
    assert {h["client"] for h in hits} == {X.PROXY4 if fam == "v4" else X.PROXY6}, hits


def test_direct_path_is_refused(px, ctl):
    """The control: without childflow the host cannot reach remote1 (so the tests below can fail)."""
    r = ctl.direct(curl(url(R1["v4"], "/index.html")))
    assert r.rc != 0, r


@pytest.mark.parametrize("client", ["curl", "wget"])
def test_http_proxy_basic_auth(px, cf, world, client):
    token = os.urandom(6).hex()
    u = url(R1["v4"], f"/index.html?id={token}")
    cmd = curl(u) if client == "curl" else wget(u)
    r = cf.run(["-p", proxy_uri("http", X.TINY)] + auth(px) + ["--"] + cmd)
    assert r.rc == 0, r
    assert sha(r.out) == sha(world.files["index.html"]), r
    assert_via_proxy(world, token)
    assert f"CONNECT {R1['v4']}:80 " in px.log_text(px.tiny_log)
    assert not warnings(r), r


@pytest.mark.parametrize("port", [X.MICROSOCKS, X.DANTE], ids=["microsocks", "dante"])
def test_socks5_userpass_download(px, cf, world, port):
    r = cf.run(["-p", proxy_uri("socks5", port)] + auth(px) + ["--"] + curl(url(R1["v4"], "/big.bin")),
               timeout=60)
    assert r.rc == 0, r
    assert sha(r.out) == sha(world.files["big.bin"]), f"got {len(r.out)} bytes"
    assert not warnings(r), r


def test_ipv6_proxy_and_destination(px, cf, world):
    token = os.urandom(6).hex()
    r = cf.run(["-p", proxy_uri("http", X.TINY, X.PROXY6)] + auth(px) + ["--"] +
               curl(url(R1["v6"], f"/index.html?id={token}")))
    assert r.rc == 0, r
    assert sha(r.out) == sha(world.files["index.html"])
    assert_via_proxy(world, token, "v6")
    assert f"CONNECT [{R1['v6']}]:80 " in px.log_text(px.tiny_log)


def test_https_proxy_untrusted_fails(px, cf):
    r = cf.run(["-p", proxy_uri("https", X.STUNNEL)] + auth(px) + ["--"] + curl(url(R1["v4"], "/index.html")))
    assert r.rc != 0, r
    w = warnings(r)
    assert len(w) == 1 and "not trusted" in w[0], r


def test_https_proxy_insecure_works(px, cf, world):
    token = os.urandom(6).hex()
    r = cf.run(["-p", proxy_uri("https", X.STUNNEL), "--proxy-insecure"] + auth(px) + ["--"] +
               curl(url(R1["v4"], f"/index.html?id={token}")))
    assert r.rc == 0, r
    assert sha(r.out) == sha(world.files["index.html"])
    assert_via_proxy(world, token)


@pytest.mark.parametrize("trusted", [False, True], ids=["insecure", "ca-trusted"])
def test_https_proxy_name_mismatch_fails(px, cf, trusted):
    """A certificate for another host is refused, with --proxy-insecure too."""
    extra = [] if trusted else ["--proxy-insecure"]
    env = {"SSL_CERT_FILE": px.ca} if trusted else None
    r = cf.run(["-p", proxy_uri("https", X.STUNNEL_OTHER)] + extra + auth(px) + ["--"] +
               curl(url(R1["v4"], "/index.html")), env=env)
    assert r.rc != 0, r
    w = warnings(r)
    assert len(w) == 1 and f"not valid for {X.PROXY4}" in w[0], r


def test_https_proxy_trusted_ca_download(px, cf, world):
    r = cf.run(["-p", proxy_uri("https", X.STUNNEL)] + auth(px) + ["--"] + curl(url(R1["v4"], "/big.bin")),
               env={"SSL_CERT_FILE": px.ca}, timeout=60)
    assert r.rc == 0, r
    assert sha(r.out) == sha(world.files["big.bin"]), f"got {len(r.out)} bytes"
    assert not warnings(r), r


def test_https_proxy_resumes_the_tls_session(px, cf, world):
    """Connections after the first resume the proxy's TLS session (no certificate exchange): stunnel's
    log says so for the later handshakes, and the downloads are intact."""
    log = px.stunnel_https_log
    before = len(px.log_text(log))
    one = shlex.join(curl(url(R1["v4"], "/index.html")))
    r = cf.run(["-p", proxy_uri("https", X.STUNNEL)] + auth(px) + ["--", "sh", "-c",
               f"for i in 1 2 3; do {one} | sha256sum; done"], env={"SSL_CERT_FILE": px.ca}, timeout=60)
    assert r.rc == 0, r
    assert r.out.decode().split() == [sha(world.files["index.html"]), "-"] * 3, r
    assert not warnings(r), r
    new = lambda: px.log_text(log)[before:]
    # the probe and the first download may negotiate; at least the third resumes
    assert wait_until(lambda: new().count("previous session reused") >= 1, 5), new()
    assert new().count("new session negotiated") >= 1, new()


def test_https_proxy_prepared_client_hello(px, cf, world, capdir):
    """While a connection waits for the proxy's CONNECT reply, childflow builds the next one's TLS
    ClientHello (its key share) ahead; a later connection sends it as soon as its TCP connect is
    done.  The downloads are intact, the prepared hellos resume the session, nothing is warned."""
    log = px.stunnel_https_log
    before = len(px.log_text(log))
    one = shlex.join(curl(url(R1["v4"], "/index.html")))
    cmd = after_probe(px, log, before, os.path.join(capdir, "go"),
                      ["sh", "-c", f"for i in 1 2 3 4; do {one} | sha256sum; done"])
    r = cf.run(["-p", proxy_uri("https", X.STUNNEL)] + auth(px) + ["--"] + cmd,
               env={"SSL_CERT_FILE": px.ca, "CHILDFLOW_DEBUG": "1"}, timeout=60)
    assert r.rc == 0, r
    assert r.out.decode().split() == [sha(world.files["index.html"]), "-"] * 4, r
    assert not warnings(r), r
    assert "sent a TLS ClientHello prepared ahead" in r.etext, r.etext[-3000:]
    new = lambda: px.log_text(log)[before:]
    assert wait_until(lambda: new().count("previous session reused") >= 4, 5), new()


# BEFORE connections one after the other, then OVERLAP at once (non-blocking connects, all in
# flight before any completes), then AFTER one after the other: each sends GET /who.txt; prints the
# answers.  argv: host port BEFORE OVERLAP AFTER.
SERIAL_THEN_OVERLAPPING = r'''
import select, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
before, overlap, after = (int(a) for a in sys.argv[3:6])
''' + P.HTTP_GET_WHO + r'''
serial = lambda n: [get(socket.create_connection((host, port), timeout=10)) for _ in range(n)]
out = serial(before)
socks = []
for _ in range(overlap):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((host, port))
    socks.append(s)
pending = list(socks)
while pending:
    _, w, _ = select.select([], pending, [], 10)
    assert w, "connects did not complete"
    pending = [s for s in pending if s not in w]
out += [get(s) for s in socks]
out += serial(after)
print(" ".join(out))
'''


def test_https_proxy_offers_each_tls13_ticket_once(px, cf, capdir):
    """Every connection to an https proxy resumes, and no two handshakes offer the same TLS 1.3 ticket
    (RFC 8446 C.4: a client SHOULD NOT reuse one; two connections showing one ticket are linkable),
    overlapping ones included: the pool holds each ticket until one handshake takes it (a full
    handshake gives two, a resumed one one).  The ClientHellos in -C wire-egress carry the PSK
    identities.  Before, one stored session was offered until the next ticket came, so the two
    overlapping connections showed the same ticket; and the start-up probe's session was unusable
    (OpenSSL makes the last session of an SSL freed without close_notify unresumable), so the first
    connection made a full handshake."""
    cap = os.path.join(capdir, "tickets.pcapng")
    log = px.stunnel_https_log
    before = len(px.log_text(log))
    view = [] if cf.runner.user else ["-c", cap, "-C", "wire-egress"]   # that view needs CAP_NET_RAW
    cmd = after_probe(px, log, before, os.path.join(capdir, "go"), py(SERIAL_THEN_OVERLAPPING, R1["v4"], 80, 2, 2, 0))
    r = cf.run(view + ["-p", proxy_uri("https", X.STUNNEL)] + auth(px) + ["--"] + cmd,
               env={"SSL_CERT_FILE": px.ca}, timeout=60)
    assert (r.rc, r.text.split()) == (0, ["remote1"] * 4), r
    assert not warnings(r), r
    new = lambda: px.log_text(log)[before:]
    assert wait_until(lambda: new().count("previous session reused") >= 4, 5), new()
    if not view:
        return
    rc, out, err = tshark(cap, "-d", f"tcp.port=={X.STUNNEL},tls", "-Y", "tls.handshake.type == 1", "-T", "fields",
                          "-e", "tcp.srcport", "-e", "tls.handshake.extensions.psk.identity.identity")
    assert rc == 0 and not err, (rc, err)
    hellos = [l.split("\t") for l in out.split("\n") if l]
    # the start-up probe's full handshake, then the four connections', each with a ticket
    assert len(hellos) == 5 and len({h[0] for h in hellos}) == 5, hellos
    tickets = [h[1] for h in hellos[1:]]
    assert hellos[0][1] == "" and all(tickets) and len(set(tickets)) == 4, hellos


def test_https_proxy_many_overlapping_connections(px, cf, capdir):
    """Sixteen connections to an https proxy at once, more than the session pool holds: every one
    carries its bytes, the full handshakes' tickets overflow the pool (the oldest go), and the
    connection after them still resumes."""
    log = px.stunnel_https_log
    before = len(px.log_text(log))
    cmd = after_probe(px, log, before, os.path.join(capdir, "go"), py(SERIAL_THEN_OVERLAPPING, R1["v4"], 80, 0, 16, 1))
    r = cf.run(["-p", proxy_uri("https", X.STUNNEL)] + auth(px) + ["--"] + cmd,
               env={"SSL_CERT_FILE": px.ca}, timeout=60)
    assert (r.rc, r.text.split()) == (0, ["remote1"] * 17), r
    assert not warnings(r), r
    new = lambda: px.log_text(log)[before:]
    # the probe's two tickets served two of the sixteen; the other fourteen and the probe were full
    assert wait_until(lambda: new().count("previous session reused") >= 3, 5), new()
    assert new().count("new session negotiated") <= 15, new()


def test_https_proxy_slow_and_fast_readers_get_every_byte(px, cf, world):
    """Through TLS the relay decrypts into its buffer and keeps what a slow child did not take
    (curl --limit-rate: its socket fills, sends to it come up short); a fast download alongside
    must not be held up or mixed with it."""
    big = sha(world.files["big.bin"])
    slow = shlex.join(curl("--limit-rate", "12M", url(R1["v4"], "/big.bin")))
    fast = shlex.join(curl(url(R1["v4"], "/big.bin")))
    r = cf.run(["-p", proxy_uri("https", X.STUNNEL)] + auth(px) + ["--", "sh", "-c",
               f"t=$(mktemp); ({slow} | sha256sum > $t) & {fast} | sha256sum; wait; cat $t; rm -f $t"],
               env={"SSL_CERT_FILE": px.ca}, timeout=60)
    assert r.rc == 0, r
    assert r.out.decode().split() == [big, "-", big, "-"], r
    assert not warnings(r), r


def test_https_proxy_upload_is_intact(px, cf, world):
    """An upload through TLS: the relay encrypts as many records per send as the socket takes."""
    data = os.urandom(8 << 20)
    r = cf.run(["-p", proxy_uri("https", X.STUNNEL)] + auth(px) + ["--"] +
               curl_upload("--data-binary", "@-", url(R1["v4"], "/upload")), input=data,
               env={"SSL_CERT_FILE": px.ca}, timeout=60)
    assert r.rc == 0, r
    assert r.text.strip() == sha(data), r
    assert not warnings(r), r


# Five connections one after the other; how each ended.
SERIAL = r'''
import json, socket, sys
out = []
for i in range(int(sys.argv[3])):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
        s.sendall(b"GET /who.txt HTTP/1.0\r\n\r\n")
        d = s.recv(100)
        out.append("data" if d else "eof")
    except Exception as e:
        out.append(type(e).__name__)
print(json.dumps(out))
'''


@pytest.mark.parametrize("scheme,port,text", [
    ("http", X.TINY, "rejected the credentials (401)"),   # tinyproxy answers a CONNECT with 401
    ("socks5", X.MICROSOCKS, "rejected the credentials (SOCKS5 username/password)"),
    ("socks5", X.DANTE, "rejected the credentials (SOCKS5 username/password)"),
], ids=["tinyproxy", "microsocks", "dante"])
def test_wrong_password_one_warning(px, cf, scheme, port, text):
    r = cf.run(["-p", proxy_uri(scheme, port), "-U", px.user, "-P", "wrong" + px.password, "--"] +
               py(SERIAL, R1["v4"], 80, 5))
    assert r.rc == 0, r
    assert all(x != "data" for x in json.loads(r.out)), r
    assert warnings(r) == [f"childflow: warning: proxy {X.PROXY4}:{port} {text}"], r


@pytest.mark.parametrize("port", [X.MICROSOCKS, X.DANTE], ids=["microsocks", "dante"])
def test_wrong_password_told_at_start(px, cf, port):
    """The start-up probe tells a refused password before the command connects anywhere, whatever
    the SOCKS5 server does with a pipelined handshake (microsocks drops it and waits): the probe
    goes step by step first; only a second probe tries the pipelined handshake."""
    r = cf.run(["-p", proxy_uri("socks5", port), "-U", px.user, "-P", "wrong" + px.password, "--",
                "sleep", "3"])
    assert r.rc == 0, r
    assert warnings(r) == [f"childflow: warning: proxy {X.PROXY4}:{port} rejected the credentials "
                           "(SOCKS5 username/password)"], r


def test_dead_proxy_one_warning(px, cf):
    r = cf.run(["-p", proxy_uri("http", X.DEAD), "--"] + py(SERIAL, R1["v4"], 80, 3))
    assert r.rc == 0, r
    assert all(x != "data" for x in json.loads(r.out)), r
    assert warnings(r) == [f"childflow: warning: proxy {X.PROXY4}:{X.DEAD} cannot be reached: "
                           "Connection refused"], r
    assert r.secs < 10, r


# A TCP connect through a silent proxy, while UDP keeps flowing: how long each took.
SILENT = r'''
import json, socket, sys, threading, time
host, n = sys.argv[1], int(sys.argv[2])
res = {}
def tcp():
    t = time.monotonic()
    try:
        s = socket.create_connection((host, 80), timeout=20)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        res["tcp"] = "data" if s.recv(10) else "eof"
    except Exception as e:
        res["tcp"] = type(e).__name__
    res["tcp_s"] = time.monotonic() - t
th = threading.Thread(target=tcp); th.start()
time.sleep(0.3)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
t = time.monotonic(); ok = 0
for i in range(n):
    u.sendto(b"ping%d" % i, (host, 7))
    try:
        ok += u.recvfrom(100)[0] == b"ping%d" % i
    except Exception:
        pass
res["udp_ok"], res["udp_s"] = ok, time.monotonic() - t
th.join(30)
print(json.dumps(res))
'''


def test_silent_proxy_times_out_others_flow(px, cf, world):
    """remote2's sink (port 19) accepts and never answers: the proxied connect fails after the
    timeout, one warning says so, and the relay keeps serving UDP meanwhile."""
    r = cf.run(["-p", f"http://{W.REMOTES['remote2']['v4']}:{W.SINK_PORT}", "--"] + py(SILENT, R1["v4"], 20),
               env={"CHILDFLOW_PROXY_TIMEOUT": "2"})
    assert r.rc == 0, r
    res = json.loads(r.out)
    assert res["tcp"] != "data" and 1.5 < res["tcp_s"] < 6, res
    assert res["udp_ok"] == 20 and res["udp_s"] < 1.5, res
    assert warnings(r) == [f"childflow: warning: proxy {W.REMOTES['remote2']['v4']}:{W.SINK_PORT} did not "
                           "answer the CONNECT request within 2 s"], r


# n concurrent HTTP downloads; how many matched the expected sha.
PARALLEL = r'''
import hashlib, json, socket, sys, threading
host, n, want = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ok = [False] * n
def one(i):
    try:
        s = socket.create_connection((host, 80), timeout=30)
        s.sendall(b"GET /index.html?id=par%d HTTP/1.0\r\nHost: x\r\n\r\n" % i)
        buf = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        ok[i] = hashlib.sha256(buf.split(b"\r\n\r\n", 1)[1]).hexdigest() == want
    except Exception:
        pass
ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in ts: t.start()
for t in ts: t.join(60)
print(json.dumps({"ok": sum(ok)}))
'''


@pytest.mark.parametrize("scheme,port", [("http", X.TINY), ("socks5", X.MICROSOCKS)],
                         ids=["tinyproxy", "microsocks"])
def test_100_concurrent_downloads(px, cf, world, scheme, port):
    r = cf.run(["-p", proxy_uri(scheme, port)] + auth(px) + ["--"] +
               py(PARALLEL, R1["v4"], 100, sha(world.files["index.html"])), timeout=90)
    assert r.rc == 0, r
    assert json.loads(r.out)["ok"] == 100, r


# Connect and read what the destination says first.
FIRST_BYTES = r'''
import socket, sys
s = socket.create_connection((sys.argv[1], 13), timeout=10)
s.settimeout(5)
print(s.recv(100).decode().strip())
s.sendall(b"echo-me\n")
print(s.recv(100).decode().strip())
'''


@pytest.mark.parametrize("scheme,port", [("http", X.FAKE_HTTP), ("socks5", X.FAKE_SOCKS)], ids=["http", "socks5"])
def test_bytes_right_after_the_reply_reach_the_child(px, cf, scheme, port):
    """The proxy's reply and the destination's first bytes arrive in one segment (the reference
    drops those bytes)."""
    r = cf.run(["-p", proxy_uri(scheme, port), "--"] + py(FIRST_BYTES, R1["v4"]))
    assert r.rc == 0, r
    assert r.text.splitlines() == [X.GREETING.decode().strip(), "echo-me"], r


def test_password_hidden_from_process_list_and_command(px, cf, world, sess):
    """-P is blanked in /proc/PID/cmdline; CHILDFLOW_PROXY_PASSWORD is not passed to the command;
    --proxy-password-file works."""
    marker = f"{100 + os.getpid() % 100}.{int(time.monotonic_ns() % 10**6)}"
    p = cf.popen(["-p", proxy_uri("http", X.TINY)] + auth(px) + ["--", "sleep", marker])
    try:
        # the command itself (childflow's own argv holds the marker too, before it has started)
        def sleeping():
            found = []
            for pid in pids_with_arg(marker):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        if f.read().startswith(b"sleep\0"):
                            found.append(pid)
                except OSError:
                    pass
            return found
        assert wait_until(sleeping, 10), "sleep never started"
        cf_pids = [pid for pid in pids_with_arg(px.user)]
        assert cf_pids, "childflow not found by its -U argument"
        for pid in cf_pids:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert px.password.encode() not in f.read()
    finally:
        p.kill()
        p.communicate(timeout=10)
    r = cf.run(["-p", proxy_uri("http", X.TINY), "-U", px.user, "--", "sh", "-c",
                "env | grep -c CHILDFLOW_PROXY_PASSWORD; " + shlex.join(curl(url(R1["v4"], "/who.txt")))],
               env={"CHILDFLOW_PROXY_PASSWORD": px.password})
    assert r.text.splitlines() == ["0", "remote1"], r
    pwfile = os.path.join(sess.work, f"pw-{os.getpid()}")
    with open(pwfile, "w") as f:
        f.write(px.password + "\n")
    os.chmod(pwfile, 0o644)
    try:
        r = cf.run(["-p", proxy_uri("socks5", X.DANTE), "-U", px.user, "--proxy-password-file", pwfile, "--"] +
                   curl(url(R1["v4"], "/who.txt")))
        assert (r.rc, r.text) == (0, "remote1\n"), r
    finally:
        os.unlink(pwfile)
    assert px.password not in r.etext


def test_debug_output_never_shows_the_password(px, cf):
    r = cf.run(["-p", proxy_uri("http", X.TINY)] + auth(px) + ["--"] + curl(url(R1["v4"], "/who.txt")),
               env={"CHILDFLOW_DEBUG": "1"})
    assert r.rc == 0, r
    assert px.password not in r.etext and "proxy" in r.etext, r
