"""The caller's host-local services are not reachable from the command (design §2, cost 3)."""
import json
import time

import childprogs as P
import world as W
from cfutil import py
from conftest import HOSTSVC_ANY_PORT, HOSTSVC_LO_PORT

TARGETS = [f"127.0.0.1:{HOSTSVC_LO_PORT}", f"[::1]:{HOSTSVC_LO_PORT}",
           f"{W.HOST_V4}:{HOSTSVC_ANY_PORT}", f"[{W.HOST_V6}]:{HOSTSVC_ANY_PORT}"]


def test_host_local_services_unreachable(cf, hostsvc):
    before = [len(s.entries()) for s in hostsvc]
    r = cf.run(["--"] + py(P.CONNECT_PROBE, *TARGETS), timeout=60)
    assert r.rc == 0, r
    res = json.loads(r.out)
    reached = {t: o for t, o in res.items() if o.startswith("banner:")}
    assert not reached, f"host-local services reachable from the sandbox: {reached} (all: {res})"
    time.sleep(0.3)
    after = [len(s.entries()) for s in hostsvc]
    new = [e for s, n in zip(hostsvc, before) for e in s.entries()[n:]]
    assert after == before, f"a host-local service accepted a connection from the sandbox: {new}"
