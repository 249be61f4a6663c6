"""The relay: the command's TCP and UDP reach the remote servers, byte-exact, from the host's address."""
import hashlib
import json
import os
import subprocess
import time

import pytest

import childprogs as P
import world as W
from cfutil import curl, curl_upload, kill_tree, py, url, wget
from servers import HALFCLOSE_TAIL

REM = [(r, fam) for r in W.REMOTES for fam in ("v4", "v6")]
REM_IDS = [f"{r}-{fam}" for r, fam in REM]


def host_addr(fam):
    return W.HOST_V4 if fam == "v4" else W.HOST_V6


def sha(b):
    return hashlib.sha256(b).hexdigest()


def check_client_logged(world, remote, fam, **match):
    svc = getattr(world, "svc_" + remote)
    hits = svc.wait_find(**match)
    assert hits, f"{remote} logged no request matching {match}"
    assert {h["client"] for h in hits} == {host_addr(fam)}, hits


@pytest.mark.parametrize("remote,fam", REM, ids=REM_IDS)
def test_http_get_curl(cfc, world, remote, fam):
    token = os.urandom(6).hex()
    r = cfc.run(["--"] + curl(url(W.REMOTES[remote][fam], f"/index.html?id={token}")))
    assert r.rc == 0, r
    assert sha(r.out) == sha(world.files["index.html"]), r
    check_client_logged(world, remote, fam, path=f"/index.html?id={token}")
    r = cfc.run(["--"] + curl(url(W.REMOTES[remote][fam], "/who.txt")))
    assert (r.rc, r.out) == (0, f"{remote}\n".encode()), r


@pytest.mark.parametrize("remote,fam", REM, ids=REM_IDS)
def test_http_get_static_wget(cf, world, remote, fam):
    token = os.urandom(6).hex()
    r = cf.run(["--"] + wget(url(W.REMOTES[remote][fam], f"/index.html?id={token}")))
    assert r.rc == 0, r
    assert sha(r.out) == sha(world.files["index.html"]), r
    check_client_logged(world, remote, fam, path=f"/index.html?id={token}")


@pytest.mark.parametrize("remote,fam", [("remote1", "v4"), ("remote2", "v6")], ids=["remote1-v4", "remote2-v6"])
def test_download_4mib(cfc, world, remote, fam):
    r = cfc.run(["--"] + curl(url(W.REMOTES[remote][fam], "/big.bin")), timeout=60)
    assert r.rc == 0, r
    assert len(r.out) == len(world.files["big.bin"]) and sha(r.out) == sha(world.files["big.bin"]), \
        f"got {len(r.out)} bytes, sha {sha(r.out)}"


@pytest.mark.parametrize("remote,fam,how", [("remote1", "v4", "post"), ("remote2", "v6", "put-chunked")],
                         ids=["remote1-v4-post", "remote2-v6-put-chunked"])
def test_upload_4mib(cfc, world, remote, fam, how):
    data = os.urandom(4 * 1024 * 1024)
    token = os.urandom(6).hex()
    u = url(W.REMOTES[remote][fam], f"/upload?id={token}")
    args = ["--data-binary", "@-", u] if how == "post" else ["-T", "-", u]
    r = cfc.run(["--"] + curl_upload(*args), input=data, timeout=60)
    assert r.rc == 0, r
    assert r.text.strip() == sha(data), r
    check_client_logged(world, remote, fam, svc="http-upload", path=f"/upload?id={token}",
                        received=str(len(data)))


@pytest.mark.parametrize("remote,fam", [("remote1", "v4"), ("remote2", "v6")], ids=["remote1-v4", "remote2-v6"])
def test_tcp_half_close(cf, world, remote, fam):
    r = cf.run(["--"] + py(P.TCP_HALFCLOSE, W.REMOTES[remote][fam], W.HALFCLOSE_PORT, 300000))
    assert r.rc == 0, r
    res = json.loads(r.out)
    assert res["head"] == res["expect"], res
    assert (res["tail_len"], res["tail_sha"]) == (len(HALFCLOSE_TAIL), sha(HALFCLOSE_TAIL)), res
    assert res["err"] is None, res


@pytest.mark.parametrize("remote,fam", [("remote1", "v4"), ("remote2", "v6")], ids=["remote1-v4", "remote2-v6"])
def test_tcp_reset_reaches_client(cf, world, remote, fam):
    r = cf.run(["--"] + py(P.TCP_RESET, W.REMOTES[remote][fam], W.RESET_PORT))
    assert r.rc == 0, r
    res = json.loads(r.out)
    assert res["outcome"] == "reset", f"client saw {res['outcome']} instead of ECONNRESET: {res}"


@pytest.mark.parametrize("remote,fam", REM, ids=REM_IDS)
def test_udp_echo(cfc, world, remote, fam):
    a = W.REMOTES[remote][fam]
    r = cfc.run(["--"] + py(P.UDP_ECHO, a, W.ECHO_PORT, 5))
    assert r.rc == 0, r
    res = json.loads(r.out)
    assert [x["ok"] for x in res["results"]] == [True] * 5, res
    assert all(x["from"] == [a, W.ECHO_PORT] for x in res["results"]), \
        f"replies must come from the server's address {a}:{W.ECHO_PORT}: {res}"
    for x in res["results"]:
        check_client_logged(world, remote, fam, svc="udp-echo", data=x["msg"])


def test_tcp_200_concurrent_connections(cf, world):
    before = {r: len(getattr(world, "svc_" + r).find(svc="tcp-echo")) for r in W.REMOTES}
    targets = [f"{W.REMOTES['remote1']['v4']}:7", f"[{W.REMOTES['remote1']['v6']}]:7",
               f"{W.REMOTES['remote2']['v4']}:7", f"[{W.REMOTES['remote2']['v6']}]:7"]
    r = cf.run(["--"] + py(P.TCP_CONCURRENT, 200, 32768, *targets), timeout=120)
    assert r.rc == 0, r
    res = json.loads(r.out)
    assert res["ok"] == 200, res
    for rem in W.REMOTES:
        svc = getattr(world, "svc_" + rem)
        new = svc.find(svc="tcp-echo")[before[rem]:]
        assert len(new) == 100, (rem, len(new))
        assert {h["client"] for h in new} == {W.HOST_V4, W.HOST_V6}, new[:4]


@pytest.mark.parametrize("remote,fam", [("remote1", "v4"), ("remote2", "v6")], ids=["remote1-v4", "remote2-v6"])
def test_tcp_reset_from_client_reaches_server(cf, world, remote, fam):
    """design §3: RST propagated as RST, in both directions (the client aborts with SO_LINGER 0)."""
    r = cf.run(["--"] + py(P.TCP_CLIENT_RESET, W.REMOTES[remote][fam], W.ECHO_PORT))
    assert r.rc == 0, r
    res = json.loads(r.out)
    assert res["echoed"], res
    svc = getattr(world, "svc_" + remote)
    hits = svc.wait_find(svc="tcp-echo-done", first=res["tag"])
    assert hits, "the server never saw the connection end"
    assert hits[0]["end"] == "reset", f"the server saw the client's abort as {hits[0]['end']!r}, not a reset"
    assert hits[0]["client"] == host_addr(fam), hits


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_refused_connection_is_refused(cf, world, fam):
    """A closed port upstream must look closed to the command (a blocking connect() is refused),
    as it does without childflow (the control in test_0_world)."""
    target = f"{W.REMOTES['remote1'][fam]}:81" if fam == "v4" else f"[{W.REMOTES['remote1'][fam]}]:81"
    r = cf.run(["--"] + py(P.CONNECT_PROBE, target))
    assert r.rc == 0, r
    assert json.loads(r.out) == {target: "connect-ECONNREFUSED"}, r


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_udp_large_datagram(cf, world, fam):
    a = W.REMOTES["remote2"][fam]
    r = cf.run(["--"] + py(P.UDP_ECHO, a, W.ECHO_PORT, 2, 9000))
    assert r.rc == 0, r
    res = json.loads(r.out)
    assert [x["ok"] for x in res["results"]] == [True, True], res
    assert all(x["from"] == [a, W.ECHO_PORT] for x in res["results"]), res
    hits = world.svc_remote2.wait_find(svc="udp-echo", data=res["results"][0]["msg"][:64])
    assert hits and hits[0]["bytes"] == "9000", hits


def fd_count(pids):
    n = 0
    for pid in pids:
        try:
            n += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return n


def settled_fd_count(pids, at_most=None, timeout=3.0):
    """childflow's fd count once it has settled: at most `at_most` (when given; polled for up to
    `timeout` s, then the last count is returned), and the same over 3 samples 30 ms apart."""
    deadline = time.monotonic() + timeout
    last = []
    while True:
        n = fd_count(pids)
        last = (last + [n])[-3:]
        if len(last) == 3 and len(set(last)) == 1 and (at_most is None or n <= at_most):
            return n
        if time.monotonic() > deadline:
            return n
        time.sleep(0.03)


LEAK_NOFILE = 600   # under this limit childflow keeps at most 600/8 = 75 UDP flows: 300 new ones evict


def test_relay_does_not_leak_fds(cf, world):
    """TCP flows that close, fail upstream (refused) or are denied by the guard, and UDP flows that
    are evicted from a full table, must not leave fds behind in childflow's processes."""
    from cfutil import pids_with_exe, read_line
    r1 = W.REMOTES["remote1"]["v4"]
    p = cf.popen(["prlimit", f"--nofile={LEAK_NOFILE}", cf.bin, "--"] + py(P.FLOW_CHURN), direct=True,
                 stdin=subprocess.PIPE)
    try:
        assert read_line(p.stdout, 20) == b"READY\n", p.stderr.read() if p.poll() is not None else b""

        def step(cmd, expect):
            """Run one command; `expect` maps outcomes to counts, or is ({allowed outcomes}, total)."""
            p.stdin.write(cmd.encode() + b"\n")
            p.stdin.flush()
            res = json.loads(read_line(p.stdout, 60))
            if isinstance(expect, dict):
                assert res["outcomes"] == expect, (cmd, res)
            else:
                assert set(res["outcomes"]) <= expect[0], (cmd, res)
                assert sum(res["outcomes"].values()) == expect[1], (cmd, res)

        step(f"tcp {r1} {W.ECHO_PORT} 1", {"ok": 1})
        step(f"udp {r1} {W.ECHO_PORT} 1", {"ok": 1})
        procs = pids_with_exe(cf.bin)
        assert procs, "no childflow process found"
        base = settled_fd_count(procs)
        counts = {"base (1 TCP closed, 1 UDP flow)": base}

        step(f"tcp {r1} {W.ECHO_PORT} 300", {"ok": 300})
        counts["after 300 TCP"] = settled_fd_count(procs, at_most=base)
        failed = ({"reset", "refused"}, 100)
        step(f"tcpfail {r1} 81 100", failed)                       # refused upstream
        step(f"tcpfail {W.HOST_V4} {W.ECHO_PORT} 100", failed)     # denied by the guard: the host's own address
        counts["after 200 failed TCP"] = settled_fd_count(procs, at_most=base)

        step(f"udp {r1} {W.ECHO_PORT} 300", {"ok": 300})      # fills the table (75), then evicts
        full = settled_fd_count(procs)
        counts["after 300 UDP"] = full
        step(f"udp {r1} {W.ECHO_PORT} 300", {"ok": 300})      # 300 more evictions
        counts["after 600 UDP"] = settled_fd_count(procs, at_most=full)
        step(f"udpdrop {W.HOST_V4} {W.ECHO_PORT} 200", {"sent": 200})   # denied: no flow at all
        counts["after 200 denied UDP"] = settled_fd_count(procs, at_most=full)
        print(f"childflow processes {procs}: fds {counts}")

        assert counts["after 300 TCP"] <= base, counts
        assert counts["after 200 failed TCP"] <= base, counts
        # a full table holds at most 75 flows of 2 sockets each (plus the one flow of the base)
        assert full <= base + 2 * (LEAK_NOFILE // 8), counts
        assert counts["after 600 UDP"] <= full, counts
        assert counts["after 200 denied UDP"] <= full, counts
        p.stdin.close()
        assert p.wait(10) == 0, p.stderr.read()
    finally:
        kill_tree(p)
        p.wait(5)
