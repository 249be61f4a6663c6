"""Review: TCP urgent data keeps its meaning when the relay copies without a pipe.

When every pipe is pinned by stalled flows (max_pipes, here 14 under a 300-fd limit), a direction
copies through the scratch buffer (recv MSG_PEEK, send, recv MSG_TRUNC).  recv() stops *before* the
urgent mark but not *at* it, so before the fix a copy that started at the mark passed the urgent
byte on in line: a receiver without SO_OOBINLINE saw "abc!def" in its stream and no urgent data.
"""
import subprocess

import world as W
from cfutil import py

# argv: addr port -> after the sender is done, "oob=<urgent byte or err:...> inline=<stream>"
RECEIVER = r'''
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4); print("ready", flush=True)
c, _ = s.accept(); c.settimeout(10); time.sleep(1.0)
try:
    oob = c.recv(1, socket.MSG_OOB).decode()
except OSError as e:
    oob = "err:" + e.strerror
data = b""
while True:
    d = c.recv(65536)
    if not d:
        break
    data += d
print("oob=%s inline=%s" % (oob, data.decode(errors="replace")), flush=True)
'''

# argv: host port nstall -> nstall uploads to the never-reading sink (tcp/19) pin a pipe each,
# then "abc", urgent "!", "def" to host:port.
SENDER = r'''
import socket, sys, time
h, port, nstall = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
stalled = []
for i in range(nstall):
    s = socket.create_connection((h, 19), timeout=5); s.setblocking(False)
    try:
        while True:
            s.send(b"x" * 65536)
    except BlockingIOError:
        pass
    stalled.append(s)
time.sleep(1.0)
s = socket.create_connection((h, port), timeout=5)
s.sendall(b"abc"); time.sleep(0.1)
s.send(b"!", socket.MSG_OOB); time.sleep(0.1)
s.sendall(b"def"); time.sleep(0.1)
s.close()
time.sleep(0.5)
'''

NOFILE = "300"   # max_pipes 14 (relay_limits_from_fds), so 20 stalled uploads pin them all


def urgent_seen(cf, world, port, nstall):
    addr = W.REMOTES["remote1"]["v4"]
    recv = subprocess.Popen(["ip", "netns", "exec", world.remote["remote1"], "/usr/bin/python3", "-c", RECEIVER,
                             addr, str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert recv.stdout.readline().strip() == b"ready"
        r = cf.run(["prlimit", f"--nofile={NOFILE}", cf.bin, "--"] + py(SENDER, addr, port, nstall),
                   direct=True, timeout=30)
        assert r.rc == 0, r
        out, _ = recv.communicate(timeout=15)
        return out.decode().strip().splitlines()[-1]
    finally:
        if recv.poll() is None:
            recv.kill()
        recv.wait(5)
        recv.stdout.close()
        recv.stderr.close()


def test_urgent_data_with_pipes(cf, world):
    """Control: with pipes to spare, splice() carries the stream and the urgent byte stays urgent."""
    assert urgent_seen(cf, world, 9103, 0) == "oob=! inline=abcdef"


def test_urgent_data_without_pipes(cf, world):
    """Every pipe pinned: the copy path must send the urgent byte with MSG_OOB, not in line."""
    assert urgent_seen(cf, world, 9104, 20) == "oob=! inline=abcdef"
