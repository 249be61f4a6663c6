"""Capture (`-c`, issue 9): the child view, read back with tshark and capinfos and walked block by block.

Every capture is checked three ways: our own walker (whole blocks, leading and trailing lengths equal,
nothing after the last), capinfos (the metadata as Wireshark reads it) and tshark (the flows, the
payload, the directions).  The host's own traffic to the same server during the run must not appear.
"""
import hashlib
import contextlib
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time

import pytest

import childprogs as P
import proxies as X
import world as W
from cfutil import curl, curl_upload, kill_tree, py, url

CHILD4, CHILD6 = "10.240.255.2", "fd42:6368:696c::2"
DESC = "childflow view=child backend=rootless-internal kind=isolated interface=gw0"
BT_SHB, BT_IDB, BT_ISB, BT_EPB = 0x0A0D0D0A, 1, 5, 6


def walk(data, complete=True):
    """The blocks of a pcapng byte string, as {type, body, ...}; asserts the structure."""
    assert data[:4] == struct.pack("<I", BT_SHB), f"no section header: {data[:16]!r}"
    blocks, off = [], 0
    while off < len(data):
        if len(data) - off < 12:
            assert not complete, f"{len(data) - off} stray bytes after the last block"
            break
        bt, bl = struct.unpack_from("<II", data, off)
        assert bl % 4 == 0 and bl >= 12, f"bad block length {bl} at {off}"
        if bl > len(data) - off:
            assert not complete, f"block at {off} ({bl} bytes) is cut short"
            break
        assert struct.unpack_from("<I", data, off + bl - 4)[0] == bl, f"trailing length differs at {off}"
        blocks.append({"type": bt, "body": data[off + 8:off + bl - 4]})
        off += bl
    return blocks


def options(buf):
    out, off = {}, 0
    while off + 4 <= len(buf):
        code, ln = struct.unpack_from("<HH", buf, off)
        if code == 0:
            break
        out.setdefault(code, []).append(buf[off + 4:off + 4 + ln])
        off += 4 + ((ln + 3) & ~3)
    return out


def summary(data, complete=True):
    bl = walk(data, complete)
    s = {"epb": 0, "idb": [], "isb": [], "shb": None, "flags": []}
    for b in bl:
        body = b["body"]
        if b["type"] == BT_SHB:
            o = options(body[16:])
            s["shb"] = {k: v[0].decode() for k, v in o.items()}
        elif b["type"] == BT_IDB:
            lt, _, snap = struct.unpack_from("<HHI", body)
            o = options(body[8:])
            s["idb"].append({"linktype": lt, "snaplen": snap, "name": o[2][0].decode(),
                             "desc": o[3][0].decode(), "tsresol": o[9][0][0]})
        elif b["type"] == BT_EPB:
            s["epb"] += 1
            cap = struct.unpack_from("<I", body, 12)[0]
            o = options(body[20 + ((cap + 3) & ~3):])
            s["flags"].append(struct.unpack("<I", o[2][0])[0] if 2 in o else None)
        elif b["type"] == BT_ISB:
            o = options(body[12:])
            s["isb"].append({"recv": struct.unpack("<Q", o[4][0])[0], "drop": struct.unpack("<Q", o[5][0])[0]})
    return s


def tshark(path_or_data, *args, timeout=60):
    """tshark -r over a file (or bytes on stdin): (rc, stdout, stderr)."""
    if isinstance(path_or_data, bytes):
        p = subprocess.run(["tshark", "-r", "-"] + list(args), input=path_or_data, capture_output=True,
                           timeout=timeout)
    else:
        p = subprocess.run(["tshark", "-r", path_or_data] + list(args), capture_output=True, timeout=timeout)
    err = b"\n".join(l for l in p.stderr.split(b"\n") if l.strip() and b"Running as user" not in l)
    return p.returncode, p.stdout.decode(errors="replace"), err.decode(errors="replace")


def fields(path, flt, *names):
    rc, out, err = tshark(path, "-Y", flt, "-T", "fields", *sum((["-e", n] for n in names), []))
    assert rc == 0 and not err, (rc, err)
    return [l.split("\t") for l in out.split("\n") if l]


def read_ok(path, descs=(DESC,)):
    """tshark and capinfos read it without a warning; Return: the summary of our walker."""
    rc, _, err = tshark(path, "-q")
    assert rc == 0 and not err, f"tshark: rc={rc} {err}"
    p = subprocess.run(["capinfos", "-M", path], capture_output=True, timeout=30)
    assert p.returncode == 0 and not p.stderr.strip(), p
    for d in descs:
        assert f"Description = {d}" in p.stdout.decode(), p.stdout.decode()
    with open(path, "rb") as f:
        return summary(f.read())


@pytest.fixture
def capdir(sess, runner):
    d = tempfile.mkdtemp(prefix="cap-", dir=sess.work)
    os.chown(d, runner.uid, runner.gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def host_request(world, token):
    """The host's own request to remote1 during the run (not the tree's): must not be captured."""
    p = subprocess.run(["ip", "netns", "exec", world.host] + curl("-o", "/dev/null", "-w", "%{http_code}",
                       url(W.REMOTES["remote1"]["v4"], f"/index.html?host={token}")),
                       capture_output=True, timeout=30)
    assert p.stdout == b"200", p


def test_child_view_v4_http_udp_dns(cf, world, capdir):
    """A 4 MiB download, a UDP echo and a DNS query, with the child's addresses; ARP; the host's
    concurrent request to the same server is absent; metadata exact; directions; statistics."""
    cap = os.path.join(capdir, "v4.pcapng")
    token = os.urandom(6).hex()
    rem = W.REMOTES["remote1"]["v4"]
    script = (f"curl -sS --noproxy '*' --max-time 20 -o /dev/null {url(rem, '/big.bin?id=' + token)} && "
              f"sleep 1.5 && {shlex.join(py(P.UDP_ECHO, rem, W.ECHO_PORT, 2))} && "
              f"dig +time=1 +tries=1 @{rem} cap-{token}.test >/dev/null; true")
    p = cf.popen(["-c", cap, "--", "sh", "-c", script])
    try:
        time.sleep(1.0)
        host_request(world, token)
        assert p.poll() is None, "the command ended before the host's request: not concurrent"
        out, err = p.communicate(timeout=60)
    finally:
        kill_tree(p)
    assert p.returncode == 0, (out, err)
    assert world.svc_remote1.wait_find(path=f"/index.html?host={token}"), "the host's request never arrived"
    udp = json.loads(out.decode().strip().split("\n")[-1])
    assert all(x["ok"] for x in udp["results"]), udp

    s = read_ok(cap)
    assert s["shb"][4] == "childflow 0.1.0" and s["shb"][3].startswith("Linux "), s["shb"]
    assert s["idb"] == [{"linktype": 1, "snaplen": 262144, "name": "gw0", "desc": DESC, "tsresol": 9}]
    assert len(s["isb"]) == 1 and s["isb"][0]["drop"] == 0 and s["isb"][0]["recv"] >= s["epb"], s["isb"]
    assert s["epb"] > 50 and set(s["flags"]) <= {1, 2}, s["flags"][:20]

    # the download, reassembled from the capture, is the file
    objdir = os.path.join(capdir, "objects")
    rc, _, errs = tshark(cap, "-q", "--export-objects", f"http,{objdir}")
    assert rc == 0 and not errs, errs
    got = [f for f in os.listdir(objdir) if f.startswith("big.bin")]
    assert got, os.listdir(objdir)
    with open(os.path.join(objdir, got[0]), "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(world.files["big.bin"]).digest()
    # only the tree: nothing of the host's address, not its request
    assert not fields(cap, f"ip.addr=={W.HOST_V4} || http.request.uri contains \"host=\"", "frame.number")
    reqs = fields(cap, "http.request", "ip.src", "ip.dst", "http.request.uri")
    assert reqs == [[CHILD4, rem, f"/big.bin?id={token}"]], reqs
    # UDP both ways with the child's address; the payloads are the ones the child sent
    udp_rows = fields(cap, f"udp.port=={W.ECHO_PORT}", "ip.src", "ip.dst", "udp.payload")
    msgs = {bytes.fromhex(r[2].replace(":", "")).decode() for r in udp_rows}
    assert {x["msg"] for x in udp["results"]} <= msgs, udp_rows
    assert {(r[0], r[1]) for r in udp_rows} == {(CHILD4, rem), (rem, CHILD4)}, udp_rows
    # DNS as the child sent it, and ARP for its gateway
    assert fields(cap, f"dns.qry.name==\"cap-{token}.test\" && ip.src=={CHILD4}", "frame.number")
    assert fields(cap, f"arp.src.proto_ipv4=={CHILD4}", "frame.number")
    # directions: what the child sent is inbound on gw0, what it received outbound
    dirs = fields(cap, "tcp.port==80", "ip.src", "frame.packet_flags_direction")
    assert {(src, int(d, 16)) for src, d in dirs} == {(CHILD4, 1), (rem, 2)}, set(map(tuple, dirs))


def test_child_view_v6(cf, world, capdir):
    cap = os.path.join(capdir, "v6.pcapng")
    rem = W.REMOTES["remote2"]["v6"]
    script = (f"curl -sS --noproxy '*' --max-time 20 -g -o /dev/null {url(rem, '/who.txt')} && "
              f"{shlex.join(py(P.UDP_ECHO, rem, W.ECHO_PORT, 1))}")
    r = cf.run(["-c", cap, "--", "sh", "-c", script], timeout=60)
    assert r.rc == 0, r
    read_ok(cap)
    assert fields(cap, "http.request", "ipv6.src", "ipv6.dst") == [[CHILD6, rem]]
    assert {tuple(x) for x in fields(cap, f"udp.port=={W.ECHO_PORT}", "ipv6.src", "ipv6.dst")} == \
        {(CHILD6, rem), (rem, CHILD6)}
    assert fields(cap, f"icmpv6.type==135 && ipv6.src=={CHILD6}", "frame.number"), "no neighbour solicitation"


def test_stdout_into_tshark_live(cf, world):
    """`-c -`: pcapng on stdout, read live; the command's stdout goes to childflow's stderr; packets
    reach the reader while the command still runs (flushed at least every 100 ms)."""
    rem = W.REMOTES["remote1"]["v4"]
    argv = cf.argv(["-c", "-", "--", "sh", "-c",
                    f"echo CMD-STDOUT; curl -sS --noproxy '*' --max-time 20 -o /dev/null {url(rem, '/who.txt')}"
                    "; echo CURL-DONE >&2; sleep 2.5"])
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ), start_new_session=True)
    chunks, lock = [], threading.Lock()

    def reader():
        for c in iter(lambda: os.read(p.stdout.fileno(), 65536), b""):
            with lock:
                chunks.append((time.monotonic(), c))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        err = p.stderr.read()
        p.wait(timeout=30)
        t_exit = time.monotonic()
        t.join(timeout=10)
    finally:
        kill_tree(p)
    assert p.returncode == 0, err
    assert b"CMD-STDOUT" in err and b"CURL-DONE" in err, err
    data = b"".join(c for _, c in chunks)
    s = summary(data)
    assert s["isb"] and s["idb"][0]["desc"] == DESC
    # the HTTP response was on the reader's side well before the command's sleep ended
    acc, seen_at = b"", None
    for ts, c in chunks:
        acc += c
        if b"HTTP/1.0 200" in acc:
            seen_at = ts
            break
    assert seen_at is not None and t_exit - seen_at > 1.5, (seen_at, t_exit)
    rc, out, errs = tshark(data, "-Y", "http")
    assert rc == 0 and not errs and "GET /who.txt" in out, (rc, out, errs)
    # and through a real pipeline
    sh = subprocess.run(["sh", "-c", '"$@" | tshark -r - -Y http 2>&1', "sh"] +
                        cf.argv(["-c", "-", "--", "curl", "-sS", "--noproxy", "*", "--max-time", "20",
                                 url(rem, "/who.txt")]), capture_output=True, timeout=60)
    assert b"GET /who.txt" in sh.stdout and b"remote1" in sh.stderr, sh


def wait_packets(path, pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                data = f.read()
            if pred(data):
                return data
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path}: nothing matching after {timeout}s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_run_leaves_a_readable_file(cf, world, capdir, sig):
    cap = os.path.join(capdir, "int.pcapng")
    rem = W.REMOTES["remote1"]["v4"]
    p = cf.popen(["-c", cap, "--", "sh", "-c",
                  f"curl -sS --noproxy '*' --max-time 20 -o /dev/null {url(rem, '/who.txt')}; exec sleep 30"])
    try:
        wait_packets(cap, lambda d: b"HTTP/1.0 200" in d)
        if sig == signal.SIGKILL:
            # the childflow process itself (the first of its session: setpriv/env exec into it)
            os.kill(p.pid, signal.SIGKILL)
        else:
            os.kill(p.pid, signal.SIGINT)
        p.communicate(timeout=20)
    finally:
        kill_tree(p)
    assert p.returncode == (-9 if sig == signal.SIGKILL else 130), p.returncode
    s = read_ok(cap)
    assert fields(cap, "http.request", "ip.src") == [[CHILD4]]
    assert len(s["isb"]) == (0 if sig == signal.SIGKILL else 1), s["isb"]


def test_unwritable_path_exit_2_before_the_command(cf, sess, capdir):
    marker = os.path.join(capdir, "ran")
    bad = [os.path.join(capdir, "no-such-dir", "x.pcapng"), capdir, "/dev/full"]
    if cf.runner.user:
        bad.append("/root/childflow-test.pcapng")
    for path in bad:
        r = cf.run(["-c", path, "--", "touch", marker])
        assert r.rc == 2, (path, r)
        lines = [l for l in r.etext.split("\n") if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("childflow: error:") and "capture" in lines[0], r
        assert not os.path.exists(marker), f"the command ran although {path} cannot be written"


def test_closed_pipe_stops_capture_exit_3(cf, world):
    """The reader goes away mid-run: one warning, the command goes on, childflow exits 3."""
    rem = W.REMOTES["remote1"]["v4"]
    cmd = (f"sleep 0.5; curl -sS --noproxy '*' --max-time 20 -o /dev/null {url(rem, '/big.bin')}; "
           f"curl -sS --noproxy '*' --max-time 20 -o /dev/null {url(rem, '/big.bin')}; echo CMD-OK")
    p = subprocess.Popen(cf.argv(["-c", "-", "--", "sh", "-c", cmd]), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        head = p.stdout.read(200)
        p.stdout.close()
        err = p.stderr.read()
        p.wait(timeout=40)
    finally:
        kill_tree(p)
    assert head.startswith(struct.pack("<I", BT_SHB)), head[:16]
    assert p.returncode == 3, (p.returncode, err)
    assert b"CMD-OK" in err, err
    warns = [l for l in err.decode().split("\n") if "capture stopped" in l]
    assert len(warns) == 1 and "stdout" in warns[0], err


def test_full_disk_stops_capture_keeps_whole_blocks(cf, world, capdir):
    """An 8 MiB tmpfs fills during three 4 MiB downloads: one warning, exit 3, the file ends on a whole
    block (writes are at most 3 MiB, so the first ones, with packets, fit)."""
    rem = W.REMOTES["remote1"]["v4"]
    out = os.path.join(capdir, "full.pcapng")
    inner = ('mount -t tmpfs -o size=8m,mode=1777 tmpfs "$0" && "$@"; rc=$?; cp "$0/f.pcapng" '
             f'{out}; chmod 644 {out}; exit $rc')
    mnt = tempfile.mkdtemp(prefix="full-", dir=capdir)
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", inner, mnt] + \
        cf.argv(["-c", os.path.join(mnt, "f.pcapng"), "--", "sh", "-c",
                 f"curl -sS --noproxy '*' --max-time 20 -o /dev/null -o /dev/null -o /dev/null "
                 f"{url(rem, '/big.bin')} {url(rem, '/big.bin')} {url(rem, '/big.bin')} && echo CMD-OK"])
    r = subprocess.run(argv, capture_output=True, timeout=60)
    assert r.returncode == 3, r
    assert b"CMD-OK" in r.stdout, r
    warns = [l for l in r.stderr.decode().split("\n") if "capture stopped" in l]
    assert len(warns) == 1 and "No space left" in warns[0], r.stderr
    with open(out, "rb") as f:
        data = f.read()
    s = summary(data)            # whole blocks only, nothing torn
    assert 0 < len(data) <= 8 << 20 and s["epb"] > 0 and not s["isb"], (len(data), s["epb"])
    rc, _, errs = tshark(out, "-q")
    assert rc == 0 and not errs, errs


def test_file_size_limit_stops_capture_exit_3(cf, world, capdir):
    """RLIMIT_FSIZE: the write fails with EFBIG (SIGXFSZ is ignored by childflow), the capture stops with
    one warning, and no second warning about the drops that follow."""
    rem = W.REMOTES["remote1"]["v4"]
    cap = os.path.join(capdir, "fsize.pcapng")
    big = url(rem, "/big.bin")
    # 8 MB: more than one write (at most 3 MiB), less than three 4 MiB downloads
    r = cf.run(["prlimit", "--fsize=8000000", cf.bin, "-c", cap, "--", "sh", "-c",
                f"curl -sS --noproxy '*' --max-time 20 -o /dev/null -o /dev/null -o /dev/null {big} {big} {big}"
                " && echo CMD-OK"], direct=True, timeout=60)
    assert r.rc == 3 and b"CMD-OK" in r.out, r
    lines = [l for l in r.etext.split("\n") if l.strip()]
    assert len(lines) == 1 and "capture stopped" in lines[0] and "File too large" in lines[0], r
    with open(cap, "rb") as f:
        s = summary(f.read())
    assert s["epb"] > 0 and not s["isb"], s["epb"]


# ---------- the egress views ----------

EGRESS_DESC = "childflow view=egress backend=rootless-internal kind=reconstructed interface=egress"
LINKTYPE_RAW = 101


def follow_tcp(path, stream=0):
    """`tshark -z follow,tcp,raw`: (node0, node1, bytes from node 0, bytes from node 1) of a stream."""
    rc, out, err = tshark(path, "-q", "-z", f"follow,tcp,raw,{stream}")
    assert rc == 0 and not err, (rc, err)
    nodes, sent = [], [b"", b""]
    for line in out.split("\n"):
        if line.startswith("Node "):
            nodes.append(line.split(": ", 1)[1].strip())
        elif nodes and line.strip() and not line.startswith("=") and ":" not in line:
            side = 1 if line.startswith("\t") else 0
            sent[side] += bytes.fromhex(line.strip())
    assert len(nodes) == 2, out[:500]
    return nodes[0], nodes[1], sent[0], sent[1]


def egress_checks(cap, descs=(EGRESS_DESC,), n_if=1):
    s = read_ok(cap, descs)
    assert len(s["idb"]) == n_if, s["idb"]
    eg = [i for i in s["idb"] if i["desc"] == EGRESS_DESC]
    assert eg == [{"linktype": LINKTYPE_RAW, "snaplen": 262144, "name": "egress", "desc": EGRESS_DESC,
                   "tsresol": 9}], s["idb"]
    assert len(s["isb"]) == n_if and all(i["drop"] == 0 for i in s["isb"]), s["isb"]
    # the rebuilt packets' checksums are right (Wireshark checks them when asked)
    chk = ["-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]
    # (only theirs: frames captured on a link carry offloaded, not yet computed, checksums)
    for flt, want in (("frame.interface_name==\"egress\" && (ip.checksum.status==0 || "
                       "tcp.checksum.status==0 || udp.checksum.status==0)", False),
                      ("frame.interface_name==\"egress\" && tcp.checksum.status==1", True)):
        rc, out, err = tshark(cap, *chk, "-Y", flt, "-T", "fields", "-e", "frame.number")
        assert rc == 0 and not err and bool(out.strip()) == want, (flt, out[:300], err)
    return s


def test_egress_view_v4_tcp_udp_dns(cf, world, capdir):
    """-C egress: the download as the host sent and got it (host address and port, the remote's),
    reassembled to exactly what the remote served; a UDP echo and the DNS forwarder's upstream query as
    datagrams from the host; nothing of the child's addresses, nothing of the host's own request."""
    cap = os.path.join(capdir, "eg.pcapng")
    got = os.path.join(capdir, "got.bin")
    token = os.urandom(6).hex()
    rem = W.REMOTES["remote1"]["v4"]
    script = (f"curl -sS --noproxy '*' --max-time 20 -i -o {got} {url(rem, '/big.bin?id=' + token)} && "
              f"sleep 1.5 && {shlex.join(py(P.UDP_ECHO, rem, W.ECHO_PORT, 2))} && "
              f"(dig +time=1 +tries=1 eg-{token}.test >/dev/null; true)")
    p = cf.popen(["-c", cap, "-C", "egress", "--dns", rem, "--", "sh", "-c", script])
    try:
        time.sleep(1.0)
        host_request(world, token)
        assert p.poll() is None, "the command ended before the host's request: not concurrent"
        out, err = p.communicate(timeout=60)
    finally:
        kill_tree(p)
    assert p.returncode == 0, (out, err)
    udp = json.loads(out.decode().strip().split("\n")[-1])
    assert all(x["ok"] for x in udp["results"]), udp

    s = egress_checks(cap)
    assert s["isb"][0]["recv"] == s["epb"] and set(s["flags"]) == {1, 2}, (s["isb"], set(s["flags"]))
    # never the child's addresses: this is what left the host
    assert not fields(cap, f"ip.addr=={CHILD4}", "frame.number")
    # one HTTP request, the tree's, from the host's own address to the remote
    reqs = fields(cap, "http.request", "ip.src", "ip.dst", "tcp.dstport", "http.request.uri")
    assert reqs == [[W.HOST_V4, rem, "80", f"/big.bin?id={token}"]], reqs
    # the handshake and the end, once each, and no sequence trouble Wireshark would flag
    assert len(fields(cap, "tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.port==80", "frame.number")) == 1
    assert len(fields(cap, "tcp.flags.syn==1 && tcp.flags.ack==1 && tcp.port==80", "frame.number")) == 1
    assert fields(cap, "tcp.flags.fin==1 && tcp.port==80", "frame.number")
    assert not fields(cap, "tcp.analysis.flags && !tcp.analysis.window_update", "frame.number")
    # the stream, reassembled, is byte for byte what the remote served (what curl -i wrote)
    n0, n1, up, down = follow_tcp(cap, 0)
    assert n0.startswith(W.HOST_V4 + ":") and n1 == f"{rem}:80", (n0, n1)
    with open(got, "rb") as f:
        served = f.read()
    assert hashlib.sha256(down).hexdigest() == hashlib.sha256(served).hexdigest(), (len(down), len(served))
    assert served.endswith(world.files["big.bin"]) and up.startswith(b"GET /big.bin?id=" + token.encode())
    # the host's own connection port is what the relay's socket had (a real ephemeral port, not 80)
    assert 1024 <= int(n0.rsplit(":", 1)[1]) <= 65535
    # UDP: the echo, both ways, host <-> remote, with the child's payloads
    udp_rows = fields(cap, f"udp.port=={W.ECHO_PORT}", "ip.src", "ip.dst", "udp.payload")
    msgs = {bytes.fromhex(r[2].replace(":", "")).decode() for r in udp_rows}
    assert {x["msg"] for x in udp["results"]} <= msgs, udp_rows
    assert {(r[0], r[1]) for r in udp_rows} == {(W.HOST_V4, rem), (rem, W.HOST_V4)}, udp_rows
    # the forwarder's upstream query for the child's name, from the host to the --dns server
    q = fields(cap, f"dns.qry.name==\"eg-{token}.test\" && dns.flags.response==0", "ip.src", "ip.dst",
               "udp.dstport")
    assert q and all(r == [W.HOST_V4, rem, "53"] for r in q), q


def test_egress_view_v6(cf, world, capdir):
    cap = os.path.join(capdir, "eg6.pcapng")
    rem = W.REMOTES["remote2"]["v6"]
    r = cf.run(["-c", cap, "-C", "egress", "--", "sh", "-c",
                f"curl -sS --noproxy '*' --max-time 20 -g -o /dev/null {url(rem, '/who.txt')} && "
                f"{shlex.join(py(P.UDP_ECHO, rem, W.ECHO_PORT, 1))}"], timeout=60)
    assert r.rc == 0, r
    egress_checks(cap)
    assert fields(cap, "http.request", "ipv6.src", "ipv6.dst") == [[W.HOST_V6, rem]]
    assert {tuple(x) for x in fields(cap, f"udp.port=={W.ECHO_PORT}", "ipv6.src", "ipv6.dst")} == \
        {(W.HOST_V6, rem), (rem, W.HOST_V6)}
    assert not fields(cap, "ipv6.addr==fd42::/16", "frame.number")


@pytest.fixture
def px(world, sess):
    p = X.Proxies(world, sess.logs).up()
    try:
        yield p
    finally:
        p.down()


def test_egress_view_through_proxy(cf, world, capdir, px):
    """Through an HTTP proxy the remote of every stream is the proxy, and the stream carries what the
    origin served (the tunnel's bytes)."""
    cap = os.path.join(capdir, "egp.pcapng")
    got = os.path.join(capdir, "gotp.bin")
    rem = W.REMOTES["remote1"]["v4"]
    r = cf.run(["-c", cap, "-C", "egress", "-p", f"http://{X.PROXY4}:{X.TINY}", "-U", px.user, "-P",
                px.password, "--", "curl", "-sS", "--noproxy", "*", "--max-time", "20", "-i", "-o", got,
                url(rem, "/big.bin")], timeout=60)
    assert r.rc == 0, r
    egress_checks(cap)
    ends = {tuple(x) for x in fields(cap, "tcp", "ip.src", "ip.dst")}
    assert ends == {(W.HOST_V4, X.PROXY4), (X.PROXY4, W.HOST_V4)}, ends
    assert not fields(cap, f"ip.addr=={rem}", "frame.number"), "the origin appears: not what left the host"
    streams = fields(cap, f"tcp.flags.syn==1 && tcp.flags.ack==0", "tcp.stream", "tcp.dstport")
    # the probe of the proxy at start is a connection too; the tree's is the one with payload
    assert streams and all(p == str(X.TINY) for _, p in streams), streams
    with open(got, "rb") as f:
        served = f.read()
    downs = [follow_tcp(cap, int(st))[3] for st, _ in streams]
    assert hashlib.sha256(served).digest() in {hashlib.sha256(d).digest() for d in downs}, \
        [len(d) for d in downs]


def test_both_views_in_one_file(cf, world, capdir):
    """-C both: the child view and the egress view, one interface block and one statistics block each;
    the same request seen from the child's address on gw0 and from the host's on egress."""
    cap = os.path.join(capdir, "both.pcapng")
    rem = W.REMOTES["remote1"]["v4"]
    r = cf.run(["-c", cap, "-C", "both", "--", "curl", "-sS", "--noproxy", "*", "--max-time", "20", "-o",
                "/dev/null", url(rem, "/who.txt")], timeout=60)
    assert r.rc == 0, r
    s = egress_checks(cap, (DESC, EGRESS_DESC), n_if=2)
    assert [i["name"] for i in s["idb"]] == ["gw0", "egress"] and s["idb"][0]["linktype"] == 1, s["idb"]
    rows = fields(cap, "http.request", "frame.interface_name", "ip.src", "ip.dst")
    assert sorted(map(tuple, rows)) == [("egress", W.HOST_V4, rem), ("gw0", CHILD4, rem)], rows
    p = subprocess.run(["capinfos", "-I", cap], capture_output=True, timeout=30)
    assert p.returncode == 0 and b"Number of interfaces in file: 2" in p.stdout, p.stdout.decode()


def wire_desc(ifname):
    return f"childflow view=wire-egress backend=rootless-internal kind=wire interface={ifname}"


def test_wire_egress_has_only_the_relays_flows(cf, world, capdir):
    """-C wire-egress: the real frames on the host's eth0 (Ethernet, the kernel's SYN options), of the
    relay's connections only: the host's own HTTP request and UDP echo to the same remote, at the same
    time, are absent; the DNS forwarder's upstream query is there.  As the user: one error line, exit 2,
    no file, the command never runs."""
    cap = os.path.join(capdir, "wire.pcapng")
    marker = os.path.join(capdir, "ran")
    token = os.urandom(6).hex()
    rem = W.REMOTES["remote1"]["v4"]
    if cf.runner.user:
        r = cf.run(["-c", cap, "-C", "wire-egress", "--", "touch", marker])
        lines = [l for l in r.etext.split("\n") if l.strip()]
        assert r.rc == 2 and len(lines) == 1 and "CAP_NET_RAW" in lines[0] and \
            lines[0].startswith("childflow: error:"), r
        assert not os.path.exists(marker) and not os.path.exists(cap), os.listdir(capdir)
        return
    script = (f"sleep 0.5; curl -sS --noproxy '*' --max-time 20 -o /dev/null {url(rem, '/big.bin?id=' + token)} && "
              f"{shlex.join(py(P.UDP_ECHO, rem, W.ECHO_PORT, 1))} && "
              f"(dig +time=1 +tries=1 wire-{token}.test >/dev/null; true) && sleep 1")
    p = cf.popen(["-c", cap, "-C", "wire-egress", "--dns", rem, "--", "sh", "-c", script])
    try:
        time.sleep(0.7)
        host_request(world, token)
        uh = subprocess.run(["ip", "netns", "exec", world.host] + py(P.UDP_ECHO, rem, W.ECHO_PORT, 2),
                            capture_output=True, timeout=30)
        assert uh.returncode == 0 and json.loads(uh.stdout.decode().strip().split("\n")[-1])["results"], uh
        assert p.poll() is None, "the command ended before the host's traffic: not concurrent"
        out, err = p.communicate(timeout=60)
    finally:
        kill_tree(p)
    assert p.returncode == 0, (out, err)
    assert world.svc_remote1.wait_find(path=f"/index.html?host={token}"), "the host's request never arrived"
    host_udp_port = json.loads(uh.stdout.decode().strip().split("\n")[-1])["local"][1]

    s = read_ok(cap, (wire_desc("eth0"), wire_desc("lo")))
    names = {i["name"]: i for i in s["idb"]}
    assert names["eth0"]["linktype"] == 1 and names["lo"]["linktype"] == 1, s["idb"]
    assert len(s["isb"]) == len(s["idb"]), (s["isb"], s["idb"])
    assert s["epb"] > 50 and set(s["flags"]) == {1, 2}, (s["epb"], set(s["flags"]))
    # exactly the tree's request, on the wire from the host's address; never the host's own
    reqs = fields(cap, "http.request", "frame.interface_name", "ip.src", "ip.dst", "http.request.uri")
    assert reqs == [["eth0", W.HOST_V4, rem, f"/big.bin?id={token}"]], reqs
    assert not fields(cap, "http.request.uri contains \"host=\"", "frame.number")
    # the tree's TCP connection alone: one stream, its handshake as the kernel sent it (MSS option)
    streams = {r[0] for r in fields(cap, "tcp", "tcp.stream")}
    assert streams == {"0"}, streams
    assert fields(cap, "tcp.flags.syn==1 && tcp.flags.ack==0 && tcp.options.mss_val", "ip.src") == [[W.HOST_V4]]
    # the tree's UDP echo (from the relay's socket), not the host's (its own port)
    ports = {tuple(r) for r in fields(cap, f"udp.port=={W.ECHO_PORT}", "udp.srcport", "udp.dstport")}
    assert ports and all(str(host_udp_port) not in pr for pr in ports), (ports, host_udp_port)
    assert len({pr[0] if pr[1] == str(W.ECHO_PORT) else pr[1] for pr in ports}) == 1, ports
    # the forwarder's upstream query
    assert fields(cap, f"dns.qry.name==\"wire-{token}.test\" && ip.src=={W.HOST_V4} && ip.dst=={rem}",
                  "frame.number")
    # nothing but the relay's TCP and UDP
    assert not fields(cap, "!(tcp || udp)", "frame.number")


def test_wire_egress_through_proxy(cf, world, capdir, px):
    """With --proxy the wire view has the connections to the proxy (the probe's and the tree's), the
    real bytes of the CONNECT exchange, and nothing to the origin."""
    if cf.runner.user:
        pytest.skip("wire-egress needs CAP_NET_RAW (the user's refusal is tested above)")
    cap = os.path.join(capdir, "wirep.pcapng")
    rem = W.REMOTES["remote1"]["v4"]
    r = cf.run(["-c", cap, "-C", "wire-egress", "-p", f"http://{X.PROXY4}:{X.TINY}", "-U", px.user, "-P",
                px.password, "--", "curl", "-sS", "--noproxy", "*", "--max-time", "20", "-o", "/dev/null",
                url(rem, "/who.txt")], timeout=60)
    assert r.rc == 0, r
    read_ok(cap, (wire_desc("eth0"),))
    ends = {tuple(x) for x in fields(cap, "tcp", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport")}
    assert ends and all({a, b} == {W.HOST_V4, X.PROXY4} and str(X.TINY) in (sp, dp) for a, b, sp, dp in ends), ends
    assert fields(cap, f"http.request.method==\"CONNECT\" && ip.dst=={X.PROXY4}", "frame.number")
    assert not fields(cap, f"ip.addr=={rem}", "frame.number")


# ---------- ICMP of the tree, and connects that never connected ----------
#
# "Exactly what the program sends": its pings (the relay's echo sockets' requests and replies), the
# ICMP errors the remote answers about its flows, and a connect the remote refused (the host's SYN and
# the RST) are in the egress views.  The negative control is the host's own ping (or connect) to the
# same remote at the same time: it is counted, and must not be in the file.

@contextlib.contextmanager
def echo_allowed(cf, world):
    """Let the runner's relay open ICMP echo sockets (root has CAP_NET_RAW: a raw socket)."""
    from test_fidelity_icmp import ping_range
    with ping_range(world, "0 2147483647" if cf.runner.user else "1 0"):
        yield


def host_ping(world, rem, count):
    """The host's own ping to @rem (not the tree's): must not be captured."""
    h = subprocess.run(["ip", "netns", "exec", world.host, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2"] +
                       (["-6"] if ":" in rem else []) + [rem], capture_output=True, timeout=30)
    assert h.returncode == 0 and f"{count} received" in h.stdout.decode(), h


def run_ping_with_host_ping(cf, world, args, rem, extra=""):
    """childflow ARGS -- ping -c 2 REM (then EXTRA) while the host pings REM 3 times."""
    six = "-6 " if ":" in rem else ""
    p = cf.popen(args + ["--", "sh", "-c", f"sleep 0.5; ping -n -c 2 -i 0.3 -W 2 {six}{rem} && sleep 0.5{extra}"])
    try:
        time.sleep(0.3)
        host_ping(world, rem, 3)
        assert p.poll() is None, "the command ended before the host's ping: not concurrent"
        out, err = p.communicate(timeout=60)
    finally:
        kill_tree(p)
    assert p.returncode == 0 and b"2 received" in out, (out, err)


def echo_rows(cap, fam, flt=""):
    """(type, src, dst, id, seq) of every echo request and reply in the file."""
    ip, icmp, types = ("ip", "icmp", "icmp.type==8 || icmp.type==0") if fam == "v4" else \
        ("ipv6", "icmpv6", "icmpv6.type==128 || icmpv6.type==129")
    rows = fields(cap, f"({types}){flt}", f"{icmp}.type", f"{ip}.src", f"{ip}.dst",
                  f"{icmp}.ident" if fam == "v4" else "icmpv6.echo.identifier",
                  f"{icmp}.seq" if fam == "v4" else "icmpv6.echo.sequence_number")
    return [tuple(r) for r in rows]


def assert_tree_echo(rows, fam, src, rem):
    """Exactly the tree's 2 requests from @src and their 2 replies, one identifier: none of the host's."""
    req, rep = ("8", "0") if fam == "v4" else ("128", "129")
    assert sorted((t, a, b) for t, a, b, _, _ in rows) == \
        sorted([(req, src, rem)] * 2 + [(rep, rem, src)] * 2), rows
    assert len({i for _, _, _, i, _ in rows}) == 1, rows


def test_wire_egress_has_the_trees_icmp(cf, world, capdir):
    """-C wire-egress: the relay's echo requests and the remote's replies on the host's eth0, and the
    remote's port unreachable about the tree's UDP datagram (matched by the header it quotes); the
    host's own ping and UDP datagram to the same remote at the same time are absent."""
    if cf.runner.user:
        pytest.skip("wire-egress needs CAP_NET_RAW (the user's refusal is tested above)")
    cap = os.path.join(capdir, "wicmp.pcapng")
    rem = W.REMOTES["remote1"]["v4"]
    send = f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'x', ('{rem}', 5999))"
    with echo_allowed(cf, world):
        run_ping_with_host_ping(cf, world, ["-c", cap, "-C", "wire-egress"], rem,
                                f" && python3 -c {shlex.quote(send)} && sleep 1")
        subprocess.run(["ip", "netns", "exec", world.host, "python3", "-c", send], check=True, timeout=10)
    read_ok(cap, (wire_desc("eth0"),))
    assert_tree_echo(echo_rows(cap, "v4", " && frame.interface_name==\"eth0\""), "v4", W.HOST_V4, rem)
    # (ip.src and ip.dst: the error's, then the quoted datagram's)
    unreach = fields(cap, "icmp.type==3 && icmp.code==3", "ip.src", "ip.dst", "udp.srcport", "udp.dstport")
    assert len(unreach) == 1 and unreach[0][:2] == [f"{rem},{W.HOST_V4}", f"{W.HOST_V4},{rem}"] and \
        unreach[0][3] == "5999", unreach
    # the tree's datagram itself, from the same port the error quotes
    assert fields(cap, "udp.dstport==5999 && !icmp", "udp.srcport") == [[unreach[0][2]]]


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_wire_egress_keeps_the_later_fragments(cf, world, capdir, fam):
    """-C wire-egress: a ping too big for the link (3000 bytes) leaves and comes back in fragments;
    the later ones carry no ICMP header and are kept because their datagram's first one was: each
    echo is there whole (Wireshark reassembles it); the host's own big ping at the same time is not."""
    if cf.runner.user:
        pytest.skip("wire-egress needs CAP_NET_RAW (the user's refusal is tested above)")
    cap = os.path.join(capdir, f"wfrag{fam}.pcapng")
    rem = W.REMOTES["remote1"][fam]
    six = ["-6"] if fam == "v6" else []
    ping = ["ping", "-n", "-c", "1", "-s", "3000", "-W", "2"] + six + [rem]
    with echo_allowed(cf, world):
        p = cf.popen(["-c", cap, "-C", "wire-egress", "--", "sh", "-c", f"sleep 0.5; {shlex.join(ping)} && sleep 0.5"])
        try:
            time.sleep(0.3)
            h = subprocess.run(["ip", "netns", "exec", world.host] + ping, capture_output=True, timeout=30)
            assert h.returncode == 0, h
            out, err = p.communicate(timeout=60)
        finally:
            kill_tree(p)
    assert p.returncode == 0 and b"1 received" in out, (out, err)
    read_ok(cap, (wire_desc("eth0"),))
    if fam == "v4":
        later = fields(cap, "ip.frag_offset>0", "ip.src", "ip.id")
    else:
        later = fields(cap, "ipv6.fraghdr.offset>0", "ipv6.src", "ipv6.fraghdr.ident")
    # the tree's request and reply, each in at least 2 fragments after the first: one datagram a way
    assert {r[0] for r in later} == {W.HOST_V4 if fam == "v4" else W.HOST_V6, rem}, later
    assert len({tuple(r) for r in later}) == 2 and len(later) >= 4, later
    rows = echo_rows(cap, fam)
    assert len(rows) == 2 and len({r[3] for r in rows}) == 1, rows


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_egress_view_has_the_trees_pings(cf, world, capdir, fam):
    """-C egress: the tree's echo requests from the host's address and the remote's replies, rebuilt
    with right checksums; exactly the tree's (the host's own ping at the same time is not there)."""
    cap = os.path.join(capdir, f"eicmp{fam}.pcapng")
    rem = W.REMOTES["remote1"][fam]
    with echo_allowed(cf, world):
        run_ping_with_host_ping(cf, world, ["-c", cap, "-C", "egress"], rem)
    read_ok(cap, (EGRESS_DESC,))
    assert_tree_echo(echo_rows(cap, fam), fam, W.HOST_V4 if fam == "v4" else W.HOST_V6, rem)
    icmp = "icmp" if fam == "v4" else "icmpv6"
    bad = fields(cap, f"{icmp} && {icmp}.checksum.status!=1", "frame.number")
    assert not bad, bad
    # the payload is the child's own (ping's timestamp and pattern): the replies carry it back
    data = fields(cap, f"{icmp}", "data.data")
    assert len({d[0] for d in data}) == 2 and all(len(d[0]) > 16 for d in data), data


def test_egress_view_has_a_refused_connect(cf, world, capdir):
    """-C egress: a connect the remote refused is what the host really exchanged: its SYN, the
    remote's RST; the host's own refused connect to the same port at the same time is not there."""
    cap = os.path.join(capdir, "erefused.pcapng")
    rem = W.REMOTES["remote1"]["v4"]
    p = cf.popen(["-c", cap, "-C", "egress", "--", "sh", "-c",
                  f"sleep 0.5; curl -sS --noproxy '*' --max-time 10 http://{rem}:81/; echo rc=$?; sleep 0.5"])
    try:
        time.sleep(0.3)
        h = subprocess.run(["ip", "netns", "exec", world.host] + curl(f"http://{rem}:81/"), capture_output=True,
                           timeout=30)
        assert h.returncode == 7, h   # refused
        assert p.poll() is None, "the command ended before the host's connect: not concurrent"
        out, err = p.communicate(timeout=60)
    finally:
        kill_tree(p)
    assert b"rc=7" in out, (out, err)
    read_ok(cap, (EGRESS_DESC,))
    rows = fields(cap, "tcp.port==81", "ip.src", "ip.dst", "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.reset",
                  "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw")
    assert [r[:5] for r in rows] == [[W.HOST_V4, rem, "1", "0", "0"], [rem, W.HOST_V4, "0", "1", "1"]], rows
    syn, rst = rows
    assert syn[5] == rst[6] and syn[6] == rst[5] == "81" and int(rst[8]) == (int(syn[7]) + 1) % 2**32, rows
    egress_checks(cap)


def test_egress_view_has_an_unanswered_connect(cf, world, capdir):
    """-C egress: a connect the remote never answers (its SYNs dropped) is the host's SYN and its
    retransmissions, one sequence number, nothing back; the host's own attempt at the same time is
    not there."""
    cap = os.path.join(capdir, "etimeout.pcapng")
    rem = W.REMOTES["remote1"]["v4"]
    with W.NftTable(world.remote["remote1"], "input", name="cfcapdrop") as t:
        t.set("tcp dport 8099 drop")
        p = cf.popen(["-c", cap, "-C", "egress", "--", "sh", "-c",
                      f"curl -sS --noproxy '*' --connect-timeout 3.5 http://{rem}:8099/; echo rc=$?"])
        try:
            time.sleep(0.5)
            h = subprocess.run(["ip", "netns", "exec", world.host] + curl("--connect-timeout", "1",
                               f"http://{rem}:8099/"), capture_output=True, timeout=30)
            assert h.returncode == 28, h   # timed out
            assert p.poll() is None, "the command ended before the host's connect: not concurrent"
            out, err = p.communicate(timeout=60)
        finally:
            kill_tree(p)
    assert b"rc=28" in out, (out, err)
    read_ok(cap, (EGRESS_DESC,))
    rows = fields(cap, "tcp.port==8099", "ip.src", "ip.dst", "tcp.flags.syn", "tcp.flags.ack", "tcp.srcport",
                  "tcp.seq_raw", "frame.time_epoch")
    # the first SYN and its retransmissions: one connection, one sequence number
    assert len(rows) >= 2 and {(r[0], r[1], r[2], r[3]) for r in rows} == {(W.HOST_V4, rem, "1", "0")}, rows
    assert len({(r[4], r[5]) for r in rows}) == 1, rows
    # ... each stamped when the kernel's SYN backoff sent it: these first ones a second apart
    # (tcp_syn_linear_timeouts; 1 s then doubling on a kernel without it), not all at the failure
    with open("/proc/sys/net/ipv4/tcp_syn_linear_timeouts") as f:
        linear = int(f.read())
    gaps = [float(b[6]) - float(a[6]) for a, b in zip(rows, rows[1:])]
    want = [1.0 if i <= linear else 2.0 ** (i - linear) for i in range(len(gaps))]
    assert all(abs(g - w) < 0.05 for g, w in zip(gaps, want)), (gaps, want, rows)


SLOW_WRITER = {"CHILDFLOW_TEST_CAPTURE_US_PER_MIB": "40000"}   # the output takes 40 ms per MiB (25 MiB/s)
BURST_FILES = 16   # 16 x big.bin (4 MiB): twice the child ring, four times the egress queue


@pytest.mark.parametrize("view", ["child", "egress"])
@pytest.mark.parametrize("way", ["down", "up"])
def test_slow_writer_loses_nothing_under_a_tcp_burst(cf, world, capdir, view, way):
    """A TCP burst much larger than the ring (child view) or the queue (egress view), with a writer
    merely slower than the traffic (a slow output, by the test knob): the relay stops reading until
    the writer catches up, so nothing is dropped (isb_ifdrop 0, no warning) and every payload byte
    of the burst is in the file."""
    cap = os.path.join(capdir, f"burst-{view}-{way}.pcapng")
    rem = W.REMOTES["remote1"]["v4"]
    total = BURST_FILES * len(world.files["big.bin"])
    if way == "down":
        cmd = curl(*sum((["-o", "/dev/null", url(rem, f"/big.bin?n={i}")] for i in range(BURST_FILES)), []))
    else:
        src = os.path.join(capdir, "upload.bin")
        with open(src, "wb") as f:
            f.write(world.files["big.bin"] * BURST_FILES)
        os.chmod(src, 0o644)
        cmd = curl_upload("-o", "/dev/null", "-T", src, url(rem, "/upload"))
    cmd[cmd.index("--max-time") + 1] = "60"
    r = cf.run(["-c", cap, "-C", view, "--"] + cmd, timeout=120, env=SLOW_WRITER)
    assert r.rc == 0, r
    assert "dropped" not in r.etext, r.etext
    s = read_ok(cap, (DESC if view == "child" else EGRESS_DESC,))
    assert s["isb"] and all(i["drop"] == 0 for i in s["isb"]), s["isb"]
    assert s["isb"][0]["recv"] >= s["epb"], (s["isb"], s["epb"])
    flt = "tcp.srcport==80" if way == "down" else "tcp.dstport==80"
    got = sum(int(row[0]) for row in fields(cap, flt, "tcp.len") if row and row[0])
    assert got >= total, (got, total)
