"""Network fidelity for TCP (issue 10, design §2 cost 1): a connect through childflow ends as it ends
without childflow - refused, host or network unreachable, prohibited, or silent - because the SYN
gate holds the command's SYN until P's own upstream connect has an answer.

Each outcome is made by the world's router (nft in its forward chain, the way a real router or
firewall answers) and checked twice: from the host directly (the control) and from inside
childflow; both must read the same errno."""
import json
import os
import time

import pytest

import world as W
from cfutil import curl, py, url

# argv: timeout target...; connects to every target at once (threads), prints {target: outcome}
PROBE = r'''
import errno, json, socket, sys, threading, time
tmo, targets = float(sys.argv[1]), sys.argv[2:]
out = {}
def one(t):
    h, _, p = t.rpartition(":")
    h = h.strip("[]")
    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(tmo)
    t0 = time.monotonic()
    try:
        s.connect((h, int(p)))
        out[t] = ["connected", time.monotonic() - t0]
    except socket.timeout:
        out[t] = ["timeout", time.monotonic() - t0]
    except OSError as e:
        out[t] = [errno.errorcode.get(e.errno, str(e.errno)), time.monotonic() - t0]
    finally:
        s.close()
ts = [threading.Thread(target=one, args=(t,)) for t in targets]
for t in ts: t.start()
for t in ts: t.join(tmo + 5)
print(json.dumps(out))
'''

R1 = W.REMOTES["remote1"]
PORT = 80   # remote1 serves HTTP there: only the router's rule makes it fail


def target(fam):
    return f"{R1['v4']}:{PORT}" if fam == "v4" else f"[{R1['v6']}]:{PORT}"


def rules(fam, verdict):
    return (f"ip daddr {R1['v4']} tcp dport {PORT} {verdict}" if fam == "v4"
            else f"ip6 daddr {R1['v6']} tcp dport {PORT} {verdict}")


def probe(cf, tmo, targets, direct=False):
    args = py(PROBE, str(tmo), *targets)
    r = cf.direct(args, timeout=tmo + 20) if direct else cf.run(["--"] + args, timeout=tmo + 20)
    assert r.rc == 0, r
    return json.loads(r.out)


CASES = [
    # (id, router verdict, errno for IPv4, errno for IPv6)
    ("refused", "reject with tcp reset", "ECONNREFUSED", "ECONNREFUSED"),
    ("host-unreachable", "reject with icmpx type host-unreachable", "EHOSTUNREACH", "EHOSTUNREACH"),
    ("no-route", "reject with icmpx type no-route", "ENETUNREACH", "ENETUNREACH"),
    # ICMPv4 has no code that maps to EACCES: Linux reads "filtered" as host unreachable
    ("admin-prohibited", "reject with icmpx type admin-prohibited", "EHOSTUNREACH", "EACCES"),
]


@pytest.mark.parametrize("case,verdict,e4,e6", CASES, ids=[c[0] for c in CASES])
def test_connect_outcome_as_without_childflow(cf, world, case, verdict, e4, e6):
    want = {target("v4"): e4, target("v6"): e6}
    with W.NftTable(world.router, "forward") as nft:
        nft.set(rules("v4", verdict), rules("v6", verdict))
        control = probe(cf, 3, list(want), direct=True)
        inside = probe(cf, 3, list(want))
    assert {t: v[0] for t, v in control.items()} == want, ("the control itself", control)
    assert {t: v[0] for t, v in inside.items()} == want, inside
    # the answer came when the router gave it, not after a timeout of anyone's
    assert all(v[1] < 1.5 for v in inside.values()), inside


def test_silent_destination_times_out_on_the_childs_clock(cf, world):
    """A destination that never answers: the command's own connect timeout decides (nothing
    answers the SYN early, neither a false 'connected' nor a reset), as without childflow."""
    with W.NftTable(world.router, "forward") as nft:
        nft.set(rules("v4", "drop"), rules("v6", "drop"))
        inside = probe(cf, 2, [target("v4"), target("v6")])
    for t, (outcome, secs) in inside.items():
        assert outcome == "timeout", inside
        assert 1.8 < secs < 3.5, inside


def test_v6_failure_falls_back_to_v4(cf, world, sess):
    """A dual-stack name whose IPv6 path is unreachable: curl falls back to IPv4 and succeeds, fast,
    as it does without childflow (the IPv6 connect fails with EHOSTUNREACH at once)."""
    hosts = os.path.join(sess.work, f"dual-{os.getpid()}.hosts")
    with open(hosts, "w") as f:
        f.write(f"{R1['v6']} dual.test\n{R1['v4']} dual.test\n")
    os.chmod(hosts, 0o644)
    token = os.urandom(6).hex()
    try:
        with W.NftTable(world.router, "forward") as nft:
            nft.set(rules("v6", "reject with icmpx type host-unreachable"))
            t0 = time.monotonic()
            r = cf.run(["--hosts-file", hosts, "--"] + curl(f"http://dual.test/index.html?id={token}"),
                       timeout=30)
            secs = time.monotonic() - t0
    finally:
        os.unlink(hosts)
    assert r.rc == 0, r
    assert r.out == world.files["index.html"], r
    assert secs < 5, secs
    hits = world.svc_remote1.wait_find(path=f"/index.html?id={token}")
    assert hits and {h["client"] for h in hits} == {W.HOST_V4}, hits


def test_refusal_is_answered_at_once_under_many_connects(cf, world):
    """200 connects to a refused port at once: every one reads ECONNREFUSED, none hangs or
    'connects' (the gate answers each SYN, also when many wait together)."""
    with W.NftTable(world.router, "forward") as nft:
        nft.set(rules("v4", "reject with tcp reset"))
        r = cf.run(["--"] + py(r'''
import errno, json, socket, threading
res = []
def one():
    s = socket.socket(); s.settimeout(10)
    try:
        s.connect((%r, %d)); res.append("connected")
    except socket.timeout:
        res.append("timeout")
    except OSError as e:
        res.append(errno.errorcode.get(e.errno, str(e.errno)))
    finally:
        s.close()
ts = [threading.Thread(target=one) for _ in range(200)]
for t in ts: t.start()
for t in ts: t.join(20)
print(json.dumps({k: res.count(k) for k in set(res)}))
''' % (R1["v4"], PORT)), timeout=40)
    assert r.rc == 0, r
    assert json.loads(r.out) == {"ECONNREFUSED": 200}, r
