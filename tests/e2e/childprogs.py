"""Small client programs run inside the sandbox as `/usr/bin/python3 -c PROGRAM ARGS...`.

They are passed inline (not as files) so that they work whatever the child's filesystem view is.
Each prints one JSON document on stdout; the tests judge it.  The same programs run directly in the
host namespace (without childflow) as controls.
"""

# argv: host port nbytes   -> sends nbytes, shuts down its write side, reads the reply until EOF
# get(s): GET /who.txt on the connected socket s (made blocking, 10 s timeout), closed after; the
# body, stripped.  Prepended to the programs that need it.
HTTP_GET_WHO = r'''
def get(s):
    s.setblocking(True)
    s.settimeout(10)
    s.sendall(b"GET /who.txt HTTP/1.0\r\n\r\n")
    d = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        d += b
    s.close()
    return d.split(b"\r\n\r\n", 1)[-1].decode().strip()
'''

TCP_HALFCLOSE = r'''
import hashlib, json, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = bytes((i * 7 + 3) & 0xff for i in range(n))
s = socket.create_connection((host, port), timeout=10)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
buf = b""
err = None
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
except OSError as e:
    err = repr(e)
head, _, tail = buf.partition(b"\n")
print(json.dumps({"head": head.decode(errors="replace"), "expect": "GOT %d %s" % (n, hashlib.sha256(data).hexdigest()),
                  "tail_sha": hashlib.sha256(tail).hexdigest(), "tail_len": len(tail), "err": err}))
'''

# argv: host port   -> sends a line, then waits for what the server does (it resets)
TCP_RESET = r'''
import errno, json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port), timeout=10)
s.sendall(b"hello\n")
s.settimeout(8)
outcome, eno = None, None
t0 = time.monotonic()
try:
    while True:
        d = s.recv(4096)
        if not d:
            outcome = "eof"
            break
except ConnectionResetError as e:
    outcome, eno = "reset", e.errno
except socket.timeout:
    outcome = "timeout"
except OSError as e:
    outcome, eno = "error:" + errno.errorcode.get(e.errno, str(e.errno)), e.errno
print(json.dumps({"outcome": outcome, "errno": eno, "secs": round(time.monotonic() - t0, 3)}))
'''

# argv: host port count [size]  -> unconnected UDP socket; each datagram retried up to 3 times
UDP_ECHO = r'''
import json, os, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = int(sys.argv[4]) if len(sys.argv) > 4 else 0
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(2)
res = []
for i in range(count):
    msg = b"udp-%d-" % i + os.urandom(8).hex().encode()
    msg += b"." * max(0, size - len(msg))
    got = src = None
    for attempt in range(3):
        s.sendto(msg, (host, port))
        try:
            while True:
                d, a = s.recvfrom(65535)
                if d == msg:
                    got, src = d, a
                    break
        except socket.timeout:
            continue
        break
    res.append({"ok": got == msg, "from": list(src[:2]) if src else None, "msg": msg.decode()})
print(json.dumps({"local": list(s.getsockname()[:2]), "results": res}))
'''

# argv: nconn nbytes target...   (target = host:port or [v6]:port)
# Opens all connections first (a barrier), then each echoes distinct data and checks it.
TCP_CONCURRENT = r'''
import json, sys, threading
import socket
n, nbytes = int(sys.argv[1]), int(sys.argv[2])
targets = []
for t in sys.argv[3:]:
    h, _, p = t.rpartition(":")
    targets.append((h.strip("[]"), int(p)))
barrier = threading.Barrier(n, timeout=30)
results = [None] * n
def one(i):
    host, port = targets[i % len(targets)]
    try:
        s = socket.create_connection((host, port), timeout=20)
    except Exception as e:
        results[i] = "connect: %r" % e
        try: barrier.abort()
        except Exception: pass
        return
    try:
        barrier.wait()
        data = (b"conn-%05d:" % i) * (nbytes // 11 + 1)
        data = data[:nbytes]
        got = bytearray()
        def reader():
            while True:
                d = s.recv(65536)
                if not d:
                    return
                got.extend(d)
        th = threading.Thread(target=reader)
        th.start()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        th.join(25)
        results[i] = "ok" if bytes(got) == data else "mismatch: got %d of %d bytes" % (len(got), len(data))
    except Exception as e:
        results[i] = "error: %r" % e
    finally:
        s.close()
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join(60)
bad = [(i, r) for i, r in enumerate(results) if r != "ok"]
print(json.dumps({"ok": n - len(bad), "bad": bad[:10]}))
'''

# argv: target...   -> for each: what a user would see when connecting (and reading a banner)
CONNECT_PROBE = r'''
import errno, json, socket, sys
out = {}
for t in sys.argv[1:]:
    h, _, p = t.rpartition(":")
    h = h.strip("[]")
    fam = socket.AF_INET6 if ":" in h else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(4)
    try:
        s.connect((h, int(p)))
    except socket.timeout:
        out[t] = "connect-timeout"; continue
    except OSError as e:
        out[t] = "connect-" + errno.errorcode.get(e.errno, str(e.errno)); continue
    try:
        d = s.recv(100)
        out[t] = "banner:" + d.decode(errors="replace").strip() if d else "eof"
    except socket.timeout:
        out[t] = "read-timeout"
    except OSError as e:
        out[t] = "read-" + errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()
print(json.dumps(out))
'''

# argv: host port   -> sends a tagged line to the echo server, reads it back, then aborts (RST)
TCP_CLIENT_RESET = r'''
import json, os, socket, struct, sys
host, port = sys.argv[1], int(sys.argv[2])
tag = "rst-" + os.urandom(6).hex()
s = socket.create_connection((host, port), timeout=10)
s.sendall(tag.encode() + b"\n")
got = b""
while not got.endswith(b"\n"):
    d = s.recv(4096)
    if not d:
        break
    got += d
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
print(json.dumps({"echoed": got.decode(errors="replace").strip() == tag, "tag": tag}))
'''

# no argv; reads commands on stdin, one per line: KIND HOST PORT N.  Runs N sequential flows of
# KIND, then prints {"kind": KIND, "outcomes": {outcome: count}} (one line of JSON) and waits for the
# next command.  Kinds:
#   tcp      connect, echo a line, half-close, read to EOF          -> "ok"
#   tcpfail  connect, send a line, read: for destinations that fail -> "reset"/"refused"/"eof"/...
#   udp      a new socket (so a new flow) per datagram, echoed back -> "ok"/"lost"
#   udpdrop  a new socket per datagram, no answer expected          -> "sent"
FLOW_CHURN = r'''
import json, socket, sys
def fam(h):
    return socket.AF_INET6 if ":" in h else socket.AF_INET
def tcp(h, p, i):
    s = socket.create_connection((h, p), timeout=5)
    msg = b"churn-%d\n" % i
    s.sendall(msg)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        got += d
    s.close()
    return "ok" if got == msg else "mismatch"
def tcpfail(h, p, i):
    try:
        s = socket.create_connection((h, p), timeout=5)
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:   # the reset overtook the end of the handshake
        return "reset"
    except OSError as e:
        return "connect-" + type(e).__name__
    try:
        s.settimeout(5)
        s.sendall(b"x\n")
        return "data" if s.recv(10) else "eof"
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
def udp(h, p, i, answer=True):
    s = socket.socket(fam(h), socket.SOCK_DGRAM)
    s.settimeout(1)
    msg = b"churn-%d" % i
    try:
        for _ in range(3 if answer else 1):
            s.sendto(msg, (h, p))
            if not answer:
                return "sent"
            try:
                while s.recv(65535) != msg:
                    pass
                return "ok"
            except socket.timeout:
                continue
        return "lost"
    finally:
        s.close()
KINDS = {"tcp": tcp, "tcpfail": tcpfail, "udp": udp, "udpdrop": lambda h, p, i: udp(h, p, i, False)}
print("READY", flush=True)
for line in sys.stdin:
    kind, h, p, n = line.split()
    out = {}
    for i in range(int(n)):
        o = KINDS[kind](h, int(p), i)
        out[o] = out.get(o, 0) + 1
    print(json.dumps({"kind": kind, "outcomes": out}), flush=True)
'''
