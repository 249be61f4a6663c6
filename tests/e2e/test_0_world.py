"""Controls: the closed world and its servers work, without childflow.

The same clients the childflow tests use are run directly in the host netns (as root and as the
unprivileged user). If one of these fails, the world is broken, not childflow.
"""
import hashlib
import ipaddress
import json
import os
import subprocess

import pytest

import childprogs as P
import world as W
from cfutil import curl, curl_upload, py, url, wget
from conftest import HOSTSVC_ANY_PORT, HOSTSVC_LO_PORT
from servers import HALFCLOSE_TAIL

REM = [(r, fam) for r in W.REMOTES for fam in ("v4", "v6")]


def host_addr(fam):
    return W.HOST_V4 if fam == "v4" else W.HOST_V6


def test_world_is_closed(world):
    """No link of the world lives in the init netns; the host only routes via the router."""
    init_links = subprocess.run(["ip", "-o", "link"], capture_output=True, timeout=10, check=True).stdout
    for name in (b"h0", b"r1", b"r2"):
        assert b" " + name + b"@" not in init_links and b" " + name + b":" not in init_links
    r4 = world.ip(world.host, "-4", "route").stdout.decode()
    r6 = world.ip(world.host, "-6", "route").stdout.decode()
    assert f"default via {W.HOST_GW4} dev eth0" in r4
    assert f"default via {W.HOST_GW6} dev eth0" in r6
    links = world.ip(world.host, "-o", "link").stdout.decode()
    assert sorted(l.split(":")[1].strip().split("@")[0] for l in links.splitlines()) == ["eth0", "lo"]


def test_world_ranges_were_checked(world, world4):
    """Both worlds ran the range check against this machine's own addresses and routes, and the
    check does see them: a range over one of this namespace's real addresses is refused."""
    for w in (world, world4):
        rep = w.range_check
        assert rep is not None, f"{w.prefix} was built without the range check"
        assert rep["ranges"] == W.WORLD_RANGES and rep["addrs"] >= 1 and rep["routes"] >= 1, rep
    addrs = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, timeout=10,
                                      check=True).stdout)
    mine = [a["local"] for l in addrs for a in l.get("addr_info", []) if "local" in a]
    assert mine, addrs
    for a in mine:
        assert not any(ipaddress.ip_address(a) in ipaddress.ip_network(r) for r in W.WORLD_RANGES), a
    with pytest.raises(W.RangeClash):
        W.check_ranges_free([mine[0] + ("/128" if ":" in mine[0] else "/32")])
    # the world's own host address is on 198.18.0.0/24, never on the machine's uplink
    a4 = world.ip(world.host, "-j", "-4", "addr", "show", "dev", "eth0").stdout
    assert [x["local"] for x in json.loads(a4)[0]["addr_info"]] == ["198.18.0.2"]


def test_v4only_host_has_no_ipv6(world4):
    assert world4.ip(world4.host, "-6", "addr").stdout.strip() == b""
    assert world4.ip(world4.host, "-6", "route").stdout.strip() == b""


@pytest.mark.parametrize("remote,fam", REM)
def test_curl_direct(ctl, world, remote, fam):
    addr = W.REMOTES[remote][fam]
    token = os.urandom(6).hex()
    r = ctl.direct(curl(url(addr, f"/index.html?id={token}")))
    assert r.rc == 0, r
    assert r.out == world.files["index.html"]
    svc = getattr(world, "svc_" + remote)
    hits = svc.wait_find(path=f"/index.html?id={token}")
    assert [h["client"] for h in hits] == [host_addr(fam)]
    r = ctl.direct(curl(url(addr, "/who.txt")))
    assert r.out == f"{remote}\n".encode()


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_wget_direct(ctl, world, fam):
    r = ctl.direct(wget(url(W.REMOTES["remote2"][fam], "/index.html")))
    assert r.rc == 0, r
    assert r.out == world.files["index.html"]


def test_big_download_and_uploads_direct(ctl, world):
    r = ctl.direct(curl(url(W.REMOTES["remote1"]["v4"], "/big.bin")))
    assert r.rc == 0 and hashlib.sha256(r.out).hexdigest() == hashlib.sha256(world.files["big.bin"]).hexdigest()
    data = os.urandom(1 << 20)
    r = ctl.direct(curl_upload("--data-binary", "@-", url(W.REMOTES["remote1"]["v6"], "/upload")), input=data)
    assert r.rc == 0 and r.text.strip() == hashlib.sha256(data).hexdigest(), r
    r = ctl.direct(curl_upload("-T", "-", url(W.REMOTES["remote2"]["v4"], "/upload")), input=data)
    assert r.rc == 0 and r.text.strip() == hashlib.sha256(data).hexdigest(), r


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_tcp_halfclose_reset_udp_direct(ctl, world, fam):
    a = W.REMOTES["remote1"][fam]
    r = ctl.direct(py(P.TCP_HALFCLOSE, a, W.HALFCLOSE_PORT, 100000))
    res = json.loads(r.out)
    assert res["head"] == res["expect"] and res["tail_sha"] == hashlib.sha256(HALFCLOSE_TAIL).hexdigest(), res
    r = ctl.direct(py(P.TCP_RESET, a, W.RESET_PORT))
    assert json.loads(r.out)["outcome"] == "reset", r
    r = ctl.direct(py(P.UDP_ECHO, a, W.ECHO_PORT, 3))
    res = json.loads(r.out)
    assert all(x["ok"] and x["from"] == [a, W.ECHO_PORT] for x in res["results"]), res
    for x in res["results"]:
        hits = world.svc_remote1.wait_find(svc="udp-echo", data=x["msg"])
        assert [h["client"] for h in hits] == [host_addr(fam)], hits


def test_tcp_concurrent_direct(ctl, world):
    targets = [f"{W.REMOTES['remote1']['v4']}:7", f"[{W.REMOTES['remote2']['v6']}]:7"]
    r = ctl.direct(py(P.TCP_CONCURRENT, 200, 32768, *targets), timeout=90)
    res = json.loads(r.out)
    assert res["ok"] == 200, res


def test_host_services_reachable_on_host(ctl, hostsvc):
    targets = [f"127.0.0.1:{HOSTSVC_LO_PORT}", f"[::1]:{HOSTSVC_LO_PORT}",
               f"{W.HOST_V4}:{HOSTSVC_ANY_PORT}", f"[{W.HOST_V6}]:{HOSTSVC_ANY_PORT}"]
    r = ctl.direct(py(P.CONNECT_PROBE, *targets))
    res = json.loads(r.out)
    assert res == {t: "banner:HOSTSVC" for t in targets}, res


def test_v4only_direct(world4, sess):
    from cfutil import CF, Runner
    c = CF(Runner("root", None), world4, sess.work)
    r = c.direct(curl(url(W.REMOTES["remote1"]["v4"], "/index.html")))
    assert r.rc == 0 and r.out == world4.files["index.html"]
    r = c.direct(curl(url(W.REMOTES["remote1"]["v6"], "/index.html")))
    assert r.rc != 0 and r.secs < 5, r


def test_refused_direct(ctl):
    targets = [f"{W.REMOTES['remote1']['v4']}:81", f"[{W.REMOTES['remote1']['v6']}]:81"]
    r = ctl.direct(py(P.CONNECT_PROBE, *targets))
    assert json.loads(r.out) == {t: "connect-ECONNREFUSED" for t in targets}, r
