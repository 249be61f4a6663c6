"""A reset does not overtake the bytes sent before it (found in the bench's iperf3 UDP-down runs).

A peer that writes and then resets (iperf3's server answering a second client "busy" with one byte
and closing with the client's cookie unread; any server closing with unread input) delivers those
bytes to a direct client before the reset.  Through childflow, when P learnt of the bytes and the
reset in one wakeup (P busy or descheduled: a UDP flood, a loaded machine), it used to reset the
other side at once and drop them: the iperf3 client saw "unable to receive control message:
Connection reset by peer" instead of "the server is busy".

The race is made certain by stopping P (SIGSTOP) while the peer writes and resets, so that both wait
in P's socket when it resumes.  The same exchange without childflow is the control.
"""
import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

import world as W
from cfutil import kill_tree, py, read_line

R1 = W.REMOTES["remote1"]["v4"]
PORT = 7311
SIZE = 1000   # one segment: the whole answer is on the wire before the reset

# Shared by both programs: read until EOF or reset, and say what came.
READ_ALL = r'''
import hashlib, json, socket, struct, sys
def read_all(c):
    got, end = b"", None
    try:
        while True:
            d = c.recv(65536)
            if not d:
                end = "eof"
                break
            got += d
    except ConnectionResetError:
        end = "reset"
    print(json.dumps({"got": len(got), "sha": hashlib.sha256(got).hexdigest(), "end": end}), flush=True)
'''

# argv: mode addr port.  mode "answer": after the request line and a "go" on stdin, write SIZE bytes
# and reset.  mode "read": after the request line, read until EOF or reset and say what came.
SERVER = READ_ALL + r'''
mode, addr, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(4); s.settimeout(20)
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(20)
req = b""
while not req.endswith(b"\n"):
    d = c.recv(1)
    if not d:
        break
    req += d
print("request", flush=True)
if mode == "answer":
    sys.stdin.readline()
    c.sendall(b"a" * size)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    print("sent", flush=True)
else:
    read_all(c)
'''

# argv: mode addr port.  mode "answer": send the request, read until EOF or reset, say what came.
# mode "send": send the request, and after a "go" on stdin write SIZE bytes and reset.
CLIENT = READ_ALL + r'''
mode, addr, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = socket.create_connection((addr, port), timeout=20)
c.sendall(b"request\n")
if mode == "answer":
    read_all(c)
else:
    sys.stdin.readline()
    c.sendall(b"c" * size)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    print("sent", flush=True)
'''


def p_of(proc, cf):
    """P's pid: the Popen's pid, once it runs childflow (setpriv and env exec in place)."""
    want = os.path.realpath(cf.bin)
    deadline = time.monotonic() + 10
    while True:
        try:
            if os.readlink(f"/proc/{proc.pid}/exe") == want:
                return proc.pid
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "childflow did not start"
        time.sleep(0.01)


def stop(pid):
    """SIGSTOP @pid and wait until it is stopped (a descheduled process stops only once it runs)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while True:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                return
        assert time.monotonic() < deadline, "P did not stop"
        time.sleep(0.005)


def expect_line(proc, want, what):
    line = read_line(proc.stdout, 15).decode().strip()
    assert line == want, f"{what} said {line!r}, expected {want!r} (exit status {proc.poll()})"


@pytest.mark.parametrize("via", ["childflow", "direct"])
@pytest.mark.parametrize("who", ["server", "child"], ids=["server-answers-then-resets",
                                                           "child-sends-then-resets"])
def test_bytes_before_a_reset_are_delivered(cf, world, who, via):
    """The side that resets wrote SIZE bytes first: the other side gets all of them, then the reset."""
    srv_mode, cli_mode = ("answer", "answer") if who == "server" else ("read", "send")
    server = subprocess.Popen(world.exec_argv(world.remote["remote1"],
                                              ["timeout", "30"] + py(SERVER, srv_mode, R1, PORT, SIZE)),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True)
    child = stopped = None
    try:
        expect_line(server, "listening", "the server")
        args = ["timeout", "30"] + py(CLIENT, cli_mode, R1, PORT, SIZE)
        args = args if via == "direct" else ["--"] + args
        child = cf.popen(args, stdin=subprocess.PIPE, direct=(via == "direct"))
        p = p_of(child, cf) if via == "childflow" else None
        expect_line(server, "request", "the server")
        if p:
            stopped = p
            stop(p)                      # P sleeps while the peer writes and resets
        writer = server if who == "server" else child
        writer.stdin.write(b"go\n")
        writer.stdin.flush()
        expect_line(writer, "sent", f"the {who}")
        if p:
            time.sleep(0.5)              # the bytes and the reset reach P's socket (all local veths)
            os.kill(p, signal.SIGCONT)
            stopped = None
        reader = child if who == "server" else server
        res = json.loads(read_line(reader.stdout, 15))
        sent = (b"a" if who == "server" else b"c") * SIZE
        assert (res["got"], res["sha"]) == (SIZE, hashlib.sha256(sent).hexdigest()), \
            f"{via}: the {SIZE} bytes written before the reset did not all arrive: {res}"
        assert res["end"] == "reset", f"{via}: the reset after the bytes became {res['end']!r}: {res}"
        if via == "childflow":
            child.stdin.close()
            child.wait(15)
            assert child.returncode == 0, (child.returncode, child.stderr.read())
    finally:
        if stopped:
            os.kill(stopped, signal.SIGCONT)
        for proc in (child, server):
            if proc:
                kill_tree(proc)
                proc.wait(5)
