"""Probes of the IPC red-team tests (test_redteam_ipc.py), run inside the sandbox:
`ipcprobe.py KIND ARG [KIND ARG ...]` prints one JSON object {"KIND ARG": outcome}, an outcome being
"ok:..." or "err:ERRNO".  Kept in the source tree, which --isolate does not hide (the test session's
directory lives in /tmp)."""
import ctypes
import errno
import json
import os
import socket
import sys

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER, SIGCHLD = 0x10000000, 17
SYS_CLONE, SYS_KEYCTL = 56, 250
KEYCTL_SEARCH, KEYCTL_READ, KEY_SPEC_SESSION_KEYRING = 10, 11, -3
IPC_NOWAIT = 0o4000


def err(e):
    return "err:" + errno.errorcode.get(e, str(e))


def unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(path)
        return "ok:" + s.recv(300).decode(errors="replace")
    except OSError as e:
        return err(e.errno)
    finally:
        s.close()


def msgq(key):
    q = libc.msgget(ctypes.c_int(int(key)), 0)
    if q < 0:
        return err(ctypes.get_errno())
    buf = ctypes.create_string_buffer(8 + 256)
    n = libc.msgrcv(q, buf, ctypes.c_size_t(256), ctypes.c_long(0), IPC_NOWAIT)
    if n < 0:
        return err(ctypes.get_errno())
    return "ok:" + buf.raw[8:8 + n].decode()


def shm(name):
    try:
        with open("/dev/shm/" + name) as f:
            return "ok:" + f.read()
    except OSError as e:
        return err(e.errno)


def key(arg):
    """"DESC,ID": search the session keyring for DESC, then read the key ID (the caller's key)."""
    desc, kid = arg.split(",")
    found = libc.syscall(SYS_KEYCTL, KEYCTL_SEARCH, KEY_SPEC_SESSION_KEYRING, b"user", desc.encode(), 0)
    res = ["search:" + (str(found) if found >= 0 else err(ctypes.get_errno()))]
    buf = ctypes.create_string_buffer(256)
    n = libc.syscall(SYS_KEYCTL, KEYCTL_READ, int(kid), buf, 256)
    res.append("read:" + ("ok:" + buf.raw[:n].decode() if n >= 0 else err(ctypes.get_errno())))
    return " ".join(res)


def userns(_):
    """clone(CLONE_NEWUSER) first (raw, fork-like), then unshare(CLONE_NEWUSER): after the unshare
    our ids are unmapped and a nested one would fail for that reason."""
    pid = libc.syscall(SYS_CLONE, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    res = ["clone:" + ("ok" if pid > 0 else err(ctypes.get_errno()))]
    if pid > 0:
        os.waitpid(pid, 0)
    r = libc.unshare(CLONE_NEWUSER)
    res.append("unshare:" + ("ok" if r == 0 else err(ctypes.get_errno())))
    return " ".join(res)


def cwd(_):
    here, proc = os.stat("."), os.stat("/proc")
    return "cwd=%s same_fs_as_proc=%s pids_here=%d" % (
        os.getcwd(), here.st_dev == proc.st_dev, sum(1 for n in os.listdir(".") if n.isdigit()))


def sock(kind):
    fam, typ, proto = {"raw-icmp": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                       "raw-tcp": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
                       "packet": (socket.AF_PACKET, socket.SOCK_RAW, 0x0300)}[kind]
    try:
        socket.socket(fam, typ, proto).close()
        return "ok:" + ",".join(sorted(n for _, n in socket.if_nameindex()))
    except OSError as e:
        return err(e.errno)


def tcp(target):
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=3) as c:
            c.settimeout(3)
            return "ok:" + c.recv(100).decode(errors="replace")
    except OSError as e:
        return err(e.errno) if e.errno else "err:" + type(e).__name__


SYS_IO_URING_SETUP, SYS_IO_URING_ENTER = 425, 426
IORING_OP_CONNECT, IORING_ENTER_GETEVENTS = 16, 1
IORING_OFF_SQ_RING, IORING_OFF_CQ_RING, IORING_OFF_SQES = 0, 0x8000000, 0x10000000


def uring(target):
    """A TCP connect submitted through io_uring (IORING_OP_CONNECT), not connect(2): "ok:<first bytes
    the peer sent>", or "err:ERRNO" (the completion's result, or io_uring_setup's own error)."""
    import mmap
    import struct
    host, port = target.rsplit(":", 1)
    libc.syscall.restype = ctypes.c_long
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(SYS_IO_URING_SETUP, 4, params)
    if fd < 0:
        return err(ctypes.get_errno())
    sq_entries, cq_entries = struct.unpack_from("II", params, 0)
    sq_off = struct.unpack_from("IIIIIIIIQ", params, 40)   # head tail mask entries flags dropped array
    cq_off = struct.unpack_from("IIIIIIIIQ", params, 80)   # head tail mask entries overflow cqes flags
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sq = mmap.mmap(fd, sq_off[6] + sq_entries * 4, offset=IORING_OFF_SQ_RING)
        cq = mmap.mmap(fd, cq_off[5] + cq_entries * 16, offset=IORING_OFF_CQ_RING)
        sqes = mmap.mmap(fd, sq_entries * 64, offset=IORING_OFF_SQES)
        addr = ctypes.create_string_buffer(struct.pack("!HH4s8x", socket.AF_INET, int(port),
                                                       socket.inet_aton(host)))
        addr.raw = struct.pack("=H", socket.AF_INET) + addr.raw[2:]   # sa_family in host order
        sqe = struct.pack("=BBHiQQIIQ", IORING_OP_CONNECT, 0, 0, s.fileno(), 16,
                          ctypes.addressof(addr), 0, 0, 0x5eed).ljust(64, b"\0")
        sqes[0:64] = sqe
        tail = struct.unpack_from("I", sq, sq_off[1])[0]
        mask = struct.unpack_from("I", sq, sq_off[2])[0]
        struct.pack_into("I", sq, sq_off[6] + (tail & mask) * 4, 0)
        struct.pack_into("I", sq, sq_off[1], tail + 1)
        if libc.syscall(SYS_IO_URING_ENTER, fd, 1, 1, IORING_ENTER_GETEVENTS, None, 0) < 0:
            return err(ctypes.get_errno())
        head = struct.unpack_from("I", cq, cq_off[0])[0]
        cmask = struct.unpack_from("I", cq, cq_off[2])[0]
        _, res, _ = struct.unpack_from("Qii", cq, cq_off[5] + (head & cmask) * 16)
        if res < 0:
            return err(-res)
        s.settimeout(1)
        try:
            return "ok:" + s.recv(100).decode(errors="replace")
        except socket.timeout:
            return "ok:"   # connected; this peer speaks only when spoken to
    except OSError as e:
        return err(e.errno) if e.errno else "err:" + type(e).__name__
    finally:
        s.close()
        os.close(fd)


PROBES = {"unix": unix, "abstract": lambda n: unix("\0" + n), "msgq": msgq, "shm": shm, "userns": userns,
          "cwd": cwd, "sock": sock, "tcp": tcp, "key": key,
          "uring": uring}


def main():
    args, out = sys.argv[1:], {}
    for i in range(0, len(args), 2):
        out[args[i] + " " + args[i + 1]] = PROBES[args[i]](args[i + 1])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
