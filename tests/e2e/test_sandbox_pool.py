"""The N1 socket pool: far more new UDP flows at once than the pool holds all get their replies
(the relay waits for refills instead of blocking on G, and drops nothing)."""
import pytest

import world as W

FLOWS = 200   # > SANDBOX_POOL_FILL (32): the pool runs dry and is refilled asynchronously

BURST = r'''
import select, socket, sys, time
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
socks = []
for i in range(int(sys.argv[3])):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.sendto(b"pool%d" % i, (sys.argv[1], int(sys.argv[2])))
    socks.append(s)
got, deadline = set(), time.monotonic() + 15
while len(got) < len(socks) and time.monotonic() < deadline:
    ready, _, _ = select.select(socks, [], [], 0.5)
    for s in ready:
        got.add(s.recv(100))
print(len(got))
'''


@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_udp_burst_of_new_flows(cfc, fam):
    addr = W.REMOTES["remote1"][fam]
    r = cfc.run(["--", "/usr/bin/python3", "-c", BURST, addr, str(W.ECHO_PORT), str(FLOWS)], timeout=40)
    assert r.rc == 0, r
    assert r.text.strip() == str(FLOWS), f"only {r.text.strip()} of {FLOWS} new UDP flows got a reply: {r!r}"
