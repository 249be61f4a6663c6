"""The v4only world: the host has no IPv6, so the command is offered none and fails fast on v6."""
import hashlib
import os

import world as W
from cfutil import curl, url


def test_v4_http_works(cf4, world4):
    token = os.urandom(6).hex()
    r = cf4.run(["--"] + curl(url(W.REMOTES["remote1"]["v4"], f"/index.html?id={token}")))
    assert r.rc == 0 and r.out == world4.files["index.html"], r
    hits = world4.svc_remote1.wait_find(path=f"/index.html?id={token}")
    assert [h["client"] for h in hits] == [W.HOST_V4], hits


def test_v6_fails_fast(cf4, world4):
    token = os.urandom(6).hex()
    r = cf4.run(["--"] + curl("--connect-timeout", "10", url(W.REMOTES["remote1"]["v6"], f"/index.html?id={token}")))
    assert r.rc == 7, f"expected curl exit 7 (couldn't connect): {r!r}"
    assert r.secs < 3, f"an unreachable IPv6 destination took {r.secs:.1f}s to fail"
    assert not world4.svc_remote1.find(path=f"/index.html?id={token}")
