#!/usr/bin/python3
"""Peer servers for the closed test world (python3 stdlib only).

Started by the fixtures inside a namespace with `ip netns exec NS /usr/bin/python3 servers.py ...`.
Every service binds both IPv4 and IPv6 (one dual-stack socket on `::` unless told otherwise) and logs
one line per client to the --log file, as space-separated key=value pairs, for example

    svc=http client=198.18.0.2 cport=40312 method=GET path=/index.html?id=ab12 status=200 bytes=51

Subcommands:
  remote  --root DIR --log FILE --ready FILE
          all remote services at once:
            tcp 80  HTTP: GET serves files under DIR (and /whoami -> client address);
                    POST/PUT answer the sha256 hex of the request body
            tcp 7   echo (echoes until EOF, then closes its write side)
            udp 7   echo (replies to the sender from the port it was sent to)
            tcp 9   reset: reads one line, then closes with SO_LINGER 0 (the client sees a RST)
            tcp 13  half-close: reads until EOF, then sends "GOT <len> <sha256>\\n" + 256 KiB and closes
            tcp 19  sink: accepts and never reads (a small receive buffer); holds every connection
                    until the client closes it (logs svc=sink once per accepted connection)
  http    --bind ADDR --port N --root DIR --log FILE --ready FILE    (HTTP only, on given addresses)
  banner  --bind ADDR --port N --log FILE --ready FILE               (sends "HOSTSVC\\n" and closes)

--bind may be repeated; `::` means one dual-stack socket, `0.0.0.0` an IPv4-only one.
"""
import argparse
import hashlib
import http.server
import os
import socket
import socketserver
import struct
import sys
import threading

_log_lock = threading.Lock()
_log_file = None


def log(**kv):
    line = " ".join(f"{k}={v}" for k, v in kv.items())
    with _log_lock:
        _log_file.write(line + "\n")
        _log_file.flush()


def norm(addr):
    """Client address as a user would write it (no v4-mapped prefix, no scope)."""
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host.split("%")[0], addr[1]


def family_for(bind):
    return socket.AF_INET if ":" not in bind else socket.AF_INET6


def prepare(sock, bind):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sock.family == socket.AF_INET6:
        # `::` -> dual stack; any other v6 address -> v6 only
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if bind == "::" else 1)


def tcp_server(bind, port, handler_cls):
    class Server(socketserver.ThreadingTCPServer):
        address_family = family_for(bind)
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 1024

        def server_bind(self):
            prepare(self.socket, bind)
            self.socket.bind((bind, port))
            self.server_address = self.socket.getsockname()

    return Server((bind, port), handler_cls)


class HTTPHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "cfw-http/1"
    root = "."

    def log_message(self, fmt, *args):  # quiet: our own log only
        pass

    def _client(self):
        return norm(self.client_address)

    def _send(self, status, body, ctype="application/octet-stream"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        host, cport = self._client()
        log(svc="http", client=host, cport=cport, method=self.command, path=self.path,
            status=status, bytes=len(body))

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/whoami":
            host, _ = self._client()
            return self._send(200, (host + "\n").encode(), "text/plain")
        rel = os.path.normpath(path.lstrip("/")) or "index.html"
        if rel in (".", ""):
            rel = "index.html"
        full = os.path.join(self.root, rel)
        if rel.startswith("..") or not os.path.isfile(full):
            return self._send(404, b"not found\n", "text/plain")
        with open(full, "rb") as f:
            body = f.read()
        ctype = "text/html" if full.endswith(".html") else "application/octet-stream"
        self._send(200, body, ctype)

    do_HEAD = do_GET

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            h = hashlib.sha256()
            n = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return h.hexdigest(), n
                left = size
                while left:
                    chunk = self.rfile.read(min(left, 65536))
                    if not chunk:
                        raise ConnectionError("short chunk")
                    h.update(chunk)
                    left -= len(chunk)
                    n += len(chunk)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0"))
        h = hashlib.sha256()
        n = 0
        while n < length:
            chunk = self.rfile.read(min(length - n, 65536))
            if not chunk:
                raise ConnectionError("short body")
            h.update(chunk)
            n += len(chunk)
        return h.hexdigest(), n

    def _upload(self):
        digest, n = self._read_body()
        host, cport = self._client()
        log(svc="http-upload", client=host, cport=cport, method=self.command, path=self.path,
            received=n, sha256=digest)
        self._send(200, (digest + "\n").encode(), "text/plain")

    do_POST = _upload
    do_PUT = _upload


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        host, cport = norm(self.client_address)
        log(svc="tcp-echo", client=host, cport=cport)
        s = self.request
        total = 0
        end = "eof"
        first = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                if not first:
                    first = data[:40].split(b"\n")[0]
                s.sendall(data)
                total += len(data)
            s.shutdown(socket.SHUT_WR)
        except ConnectionResetError:
            end = "reset"
        except OSError as e:
            end = "error-%s" % e.errno
        tag = "".join(c if c.isalnum() or c in "-_." else "?" for c in first.decode("ascii", "replace"))
        log(svc="tcp-echo-done", client=host, cport=cport, bytes=total, end=end, first=tag or "-")


class ResetHandler(socketserver.BaseRequestHandler):
    def handle(self):
        host, cport = norm(self.client_address)
        s = self.request
        s.settimeout(5)
        buf = b""
        try:
            while b"\n" not in buf:
                d = s.recv(4096)
                if not d:
                    break
                buf += d
        except OSError:
            pass
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        log(svc="tcp-reset", client=host, cport=cport, got=len(buf))
        # socketserver's shutdown_request() would shutdown(SHUT_WR) first (a FIN): close directly.
        s.close()

    def finish(self):
        pass


HALFCLOSE_TAIL = bytes(range(256)) * 1024   # 256 KiB sent after the client's EOF


class HalfCloseHandler(socketserver.BaseRequestHandler):
    def handle(self):
        host, cport = norm(self.client_address)
        s = self.request
        h = hashlib.sha256()
        n = 0
        while True:
            d = s.recv(65536)
            if not d:
                break
            h.update(d)
            n += len(d)
        s.sendall(b"GOT %d %s\n" % (n, h.hexdigest().encode()) + HALFCLOSE_TAIL)
        log(svc="tcp-halfclose", client=host, cport=cport, received=n)


class BannerHandler(socketserver.BaseRequestHandler):
    def handle(self):
        host, cport = norm(self.client_address)
        log(svc="banner", client=host, cport=cport, local=norm(self.request.getsockname())[0])
        try:
            self.request.sendall(b"HOSTSVC\n")
        except OSError:
            pass


def sink_server(bind, port):
    """Accept and never read: each connection is kept (its receive buffer stays full) until the
    client closes or resets it.  One thread, epoll; holds thousands of connections."""
    import select
    ls = socket.socket(family_for(bind), socket.SOCK_STREAM)
    prepare(ls, bind)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # inherited by accepted sockets
    ls.bind((bind, port))
    ls.listen(4096)
    ls.setblocking(False)

    def loop():
        ep = select.epoll()
        ep.register(ls.fileno(), select.EPOLLIN)
        held = {}
        while True:
            for fd, ev in ep.poll():
                if fd == ls.fileno():
                    while True:
                        try:
                            c, addr = ls.accept()
                        except BlockingIOError:
                            break
                        except OSError:   # out of fds: retry on the next event
                            break
                        host, cport = norm(addr)
                        log(svc="sink", client=host, cport=cport)
                        held[c.fileno()] = c
                        # only a hang-up is watched: the data is never read
                        ep.register(c.fileno(), select.EPOLLRDHUP)
                elif ev & (select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR):
                    c = held.pop(fd, None)
                    ep.unregister(fd)
                    if c:
                        c.close()

    return loop


def udp_echo(bind, port):
    s = socket.socket(family_for(bind), socket.SOCK_DGRAM)
    prepare(s, bind)
    s.bind((bind, port))

    def loop():
        while True:
            data, addr = s.recvfrom(65535)
            host, cport = norm(addr)
            tag = data[:64].decode("ascii", "replace")
            tag = "".join(c if c.isalnum() or c in "-_." else "?" for c in tag)
            log(svc="udp-echo", client=host, cport=cport, bytes=len(data), data=tag)
            s.sendto(data, addr)

    return loop


def serve(servers, loops, ready):
    threads = [threading.Thread(target=srv.serve_forever, daemon=True) for srv in servers]
    threads += [threading.Thread(target=fn, daemon=True) for fn in loops]
    for t in threads:
        t.start()
    with open(ready + ".tmp", "w") as f:
        f.write(str(os.getpid()) + "\n")
    os.rename(ready + ".tmp", ready)
    threading.Event().wait()


def main():
    global _log_file
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["remote", "http", "banner"])
    ap.add_argument("--bind", action="append")
    ap.add_argument("--port", type=int)
    ap.add_argument("--root")
    ap.add_argument("--log", required=True)
    ap.add_argument("--ready", required=True)
    a = ap.parse_args()
    _log_file = open(a.log, "a", buffering=1)
    binds = a.bind or ["::"]

    class H(HTTPHandler):
        root = a.root or "."

    servers, loops = [], []
    if a.mode == "remote":
        for b in binds:
            servers += [tcp_server(b, 80, H), tcp_server(b, 7, EchoHandler),
                        tcp_server(b, 9, ResetHandler), tcp_server(b, 13, HalfCloseHandler)]
            loops += [udp_echo(b, 7), sink_server(b, 19)]
    elif a.mode == "http":
        servers = [tcp_server(b, a.port, H) for b in binds]
    else:
        servers = [tcp_server(b, a.port, BannerHandler) for b in binds]
    serve(servers, loops, a.ready)


if __name__ == "__main__":
    sys.exit(main())
