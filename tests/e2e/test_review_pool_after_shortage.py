"""Review: a moment without fds must not leave the N1 UDP socket pool empty for the rest of the run.

G answers P's refill requests with sockets (SCM_RIGHTS).  When P is out of fds the kernel cuts
those fds off (MSG_CTRUNC) and fdpass_recv() rightly closes what came; but before the fix the
answer was dropped without its request being accounted for, so the pool kept counting those
sockets as "in flight", never asked again, and every new UDP flow found it empty for ever, long
after P had its fds back.
"""
import os
import subprocess

import world as W
from cfutil import kill_tree, py, read_line

# argv: host.  On the first line from stdin: 64 new UDP flows (drains the pool: refills are asked
# while P is out of fds), prints BURST; on the next line: 10 new flows to the echo server,
# prints how many were answered.
PROG = r'''
import socket, sys, time
h = sys.argv[1]
print("READY", flush=True); sys.stdin.readline()
burst = []
for i in range(64):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"burst", (h, 7)); burst.append(u)
    time.sleep(0.005)
time.sleep(1.0)
for u in burst:
    u.close()
print("BURST", flush=True); sys.stdin.readline()
probes = []
for i in range(10):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.sendto(b"probe%d" % i, (h, 7)); probes.append(u)
got, deadline = 0, time.monotonic() + 3
for u in probes:
    try:
        u.settimeout(max(0.05, deadline - time.monotonic()))
        got += u.recv(100).startswith(b"probe")
    except OSError:
        pass
print("ANSWERED %d" % got, flush=True)
'''


def test_udp_pool_recovers_after_fd_shortage(cf, world):
    p = cf.popen(["--"] + py(PROG, W.REMOTES["remote1"]["v4"]), stdin=subprocess.PIPE)
    as_user = [] if cf.runner.user is None else [
        "setpriv", f"--reuid={cf.runner.uid}", f"--regid={cf.runner.gid}", "--init-groups", "--"]
    try:
        assert read_line(p.stdout, 20) == b"READY\n"
        assert os.readlink(f"/proc/{p.pid}/exe") == os.path.realpath(cf.bin)
        with open(f"/proc/{p.pid}/limits") as f:
            soft = f.read().split("Max open files")[1].split()[0]
        top = max(int(fd) for fd in os.listdir(f"/proc/{p.pid}/fd"))
        # P (the Popen's pid) may open only 3 more fds while the burst drains its pool
        subprocess.run(as_user + ["prlimit", f"--pid={p.pid}", f"--nofile={top + 3}:"], check=True, timeout=10)
        p.stdin.write(b"\n")
        p.stdin.flush()
        assert read_line(p.stdout, 20) == b"BURST\n"
        subprocess.run(as_user + ["prlimit", f"--pid={p.pid}", f"--nofile={soft}:"], check=True, timeout=10)
        p.stdin.write(b"\n")
        p.stdin.flush()
        line = read_line(p.stdout, 20)
        assert line == b"ANSWERED 10\n", f"after P had its fds back, new UDP flows got {line!r}"
        p.stdin.close()
        assert p.wait(10) == 0
    finally:
        kill_tree(p)
        p.wait(5)
