"""Robustness: a dead destination never stalls other flows; id-mapping plans; setup failures that
explain themselves and leave nothing behind."""
import fcntl
import json
import os
import pwd
import signal
import subprocess
import termios
import threading
import time

import pytest

import world as W
from cfutil import describe, kill_tree, pids_with_exe, py, read_line, reap, unique_marker

# argv: dead_host dead_port live_host live_port rounds
# A thread dials a destination that does not answer (the router drops its packets) while the main
# thread does `rounds` echo exchanges with a live server.  Then it prints LIVE-DONE (the test turns
# the drop into an ICMP host-unreachable, so the pending upstream dial fails at its next SYN) and
# waits for the dead flow's end.
DEAD_AND_LIVE = r'''
import errno, json, socket, sys, threading, time
dead_host, dead_port, live_host, live_port, rounds = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
dead = {"done": None, "outcome": None}
def dial_dead():
    try:
        s = socket.create_connection((dead_host, dead_port), timeout=6)
        s.settimeout(6)
        d = s.recv(1)
        dead["outcome"] = "data" if d else "eof"
    except socket.timeout:
        dead["outcome"] = "timeout"
    except OSError as e:
        dead["outcome"] = errno.errorcode.get(e.errno, type(e).__name__)
    dead["done"] = time.monotonic()
t = threading.Thread(target=dial_dead, daemon=True)
t.start()
time.sleep(0.2)
ok = 0
s = socket.create_connection((live_host, live_port), timeout=5)
for i in range(rounds):
    msg = b"round-%d\n" % i
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        got += s.recv(65536)
    ok += got == msg
for i in range(rounds // 5):
    c = socket.create_connection((live_host, live_port), timeout=5)
    c.sendall(b"x\n")
    ok += c.recv(10) == b"x\n"
    c.close()
dead_pending = dead["done"] is None
print("LIVE-DONE", flush=True)
t.join(8)
print(json.dumps({"ok": ok, "expected": rounds + rounds // 5, "dead_pending_when_live_done": dead_pending,
                  "dead_outcome": dead["outcome"]}))
'''


def test_dead_destination_does_not_stall_other_flows(cf, world):
    dead = "203.0.113.99"   # on remote2's link; the router drops what goes there
    live = W.REMOTES["remote1"]["v4"]
    with W.NftTable(world.router, "forward") as nft:
        nft.set(f"ip daddr {dead} drop")
        p = cf.popen(["--"] + py(DEAD_AND_LIVE, dead, "80", live, "7", "200"))
        try:
            line = read_line(p.stdout, 15)
            assert line == b"LIVE-DONE\n", (line, p.stdout.read(), p.stderr.read())
            # Now the destination fails as an unreachable host does: P's next SYN gets an ICMP error.
            nft.set(f"ip daddr {dead} reject with icmpx type host-unreachable")
            out, err = p.communicate(timeout=15)
        finally:
            kill_tree(p)
            p.wait(5)
    assert p.returncode == 0, (p.returncode, out, err)
    out = json.loads(out)
    assert out["ok"] == out["expected"], out
    # The live flows all completed while the upstream dial of the dead one was still unanswered.
    assert out["dead_pending_when_live_done"], out
    # And the dead one's connect failed as it would without childflow once the router answered
    # host-unreachable (the SYN gate held it until then): a reset, an orderly EOF or a timeout would
    # all be bugs.
    assert out["dead_outcome"] == "EHOSTUNREACH", out


@pytest.mark.parametrize("mode,lines", [("direct", 1), ("helper", 3)])
def test_user_id_mapping_plans(world, sess, mode, lines):
    """Unprivileged: both the single-id map (written by childflow) and the newuidmap plan work."""
    from cfutil import CF, Runner
    cfu = CF(Runner("user", sess.bins["plain"], user=sess.user), world, sess.work)
    live = W.REMOTES["remote1"]["v4"]
    r = cfu.run(["--", "sh", "-c", "id -u; id -g; wc -l < /proc/self/uid_map; wc -l < /proc/self/gid_map; "
                 f"curl -s -o /dev/null -w '%{{http_code}}' http://{live}/index.html"],
                env={"CHILDFLOW_UIDMAP": mode})
    assert r.rc == 0, r
    uid, gid, ulines, glines, http = r.text.split()
    assert (int(uid), int(gid)) == (sess.user.pw_uid, sess.user.pw_gid), r
    assert (int(ulines), int(glines)) == (lines, lines), r
    assert http == "200", r


def test_helper_plan_without_subids_explains(world, sess):
    """A user with no /etc/subuid range who forces the helper plan gets one actionable line."""
    nobody = pwd.getpwnam("nobody")
    assert not any(ln.split(":")[0] in ("nobody", str(nobody.pw_uid))
                   for ln in open("/etc/subuid").read().splitlines()), "nobody unexpectedly has subuids"
    r = cf_direct(world, sess, ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                                "--clear-groups", "--", "/usr/bin/env", "CHILDFLOW_UIDMAP=helper",
                                sess.bins["plain"], "--", "true"], cwd="/")
    assert r.returncode == 125, r
    lines = [ln for ln in r.stderr.decode().splitlines() if ln.strip()]
    assert len(lines) == 3, r   # what is wrong, the fix, the reason code (the doctor's words)
    assert "uidmap" in lines[0] and "/etc/subuid has no range for nobody" in lines[0], r
    assert lines[1].startswith("childflow: fix: usermod --add-subuids") and "nobody" in lines[1], r
    assert lines[2] == "childflow: reason_code: user_namespace_mapping_failed", r
    assert not pids_with_exe(sess.bins["plain"]), describe(pids_with_exe(sess.bins["plain"]))


def test_user_namespaces_disabled_explains(world, sess):
    """With user namespaces disabled (max_user_namespaces=0 in an enclosing user namespace, which
    leaves the real host untouched) childflow names the setting and exits 125, leaving nothing."""
    script = ("echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" -- true")
    r = cf_direct(world, sess, ["unshare", "--user", "--map-root-user", "sh", "-c", script, sess.bins["plain"]])
    assert r.returncode == 125, r
    err = r.stderr.decode()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 3, err   # what is wrong, the fix, the reason code (the doctor's words)
    assert lines[0].startswith("childflow: cannot create a user namespace"), err
    assert "user.max_user_namespaces is 0" in lines[0], err
    assert lines[1].startswith("childflow: fix: sysctl -w user.max_user_namespaces="), err
    assert lines[2] == "childflow: reason_code: namespace_unshare_failed", err
    assert not pids_with_exe(sess.bins["plain"]), describe(pids_with_exe(sess.bins["plain"]))


def cf_direct(world, sess, argv, cwd=None):
    """Run argv (which starts childflow itself) in the world's host netns, as root."""
    return subprocess.run(["ip", "netns", "exec", world.host] + argv, capture_output=True, timeout=20,
                          cwd=cwd or sess.work, stdin=subprocess.DEVNULL)


# ---- found in review: terminal injection, process-group signals, setup signals, data at exit ----

TIOCSTI_PROBE = r'''
import fcntl, termios
try:
    fcntl.ioctl(0, termios.TIOCSTI, b"#")
    print("TIOCSTI-ALLOWED")
except OSError as e:
    print("TIOCSTI-REFUSED", e.errno)
'''


def test_command_cannot_inject_into_the_terminal(cf, sess):
    """TIOCSTI would queue input for the caller's shell, to run outside the sandbox."""
    from cfutil import BASE_ENV, Pty
    argv = cf.argv(["--", "/usr/bin/python3", "-c", TIOCSTI_PROBE])
    p = Pty(argv, cwd=sess.work, env=dict(BASE_ENV), owner=cf.runner.user)
    try:
        m = p.expect(rb"TIOCSTI-(ALLOWED|REFUSED) ?(\d*)", timeout=15)
        assert m.group(1) == b"REFUSED", p.buf
        assert m.group(2) == b"1", p.buf   # EPERM
        assert p.wait(10) == 0
    finally:
        p.close()


def test_group_kill_from_the_command_stays_inside(cf, sess):
    """Started from a script (not a process-group leader, no terminal), kill(0) from the command
    must not reach the script or its other children."""
    script = ('sleep 30.31 & s=$!; "$0" -- sh -c "kill -TERM 0; sleep 5"; rc=$?; '
              'if kill -0 $s 2>/dev/null; then echo SIBLING-ALIVE; kill $s; fi; echo RC=$rc')
    # The script is the session leader (start_new_session), so childflow is not a group leader.
    r = subprocess.run(cf.prefix() + ["sh", "-c", script, cf.bin], capture_output=True, timeout=30,
                       cwd=sess.work, stdin=subprocess.DEVNULL, start_new_session=True)
    out = r.stdout.decode()
    assert r.returncode == 0, (r.returncode, out, r.stderr)
    assert "SIBLING-ALIVE" in out, out
    assert "RC=143" in out, out   # the command's own group got the TERM


def test_signal_during_setup_is_never_lost(world, sess):
    """SIGTERM at any moment of start-up: childflow ends with 143, never runs the command to exit 0."""
    import os
    import signal
    import time
    codes = []
    for i in range(60):
        p = subprocess.Popen(["ip", "netns", "exec", world.host, sess.bins["plain"], "--", "sleep", "3"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep((i % 12) * 0.0008)
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise
        err = p.stderr.read().decode()
        p.stderr.close()
        codes.append((p.returncode, err))
    # 143, or killed by the TERM itself (-15) before childflow took over its signals: both are what
    # the caller sees as 128+15, and neither ran the command to a normal exit.
    bad = [c for c in codes if c[0] not in (143, -15) or c[1].strip()]
    assert not bad, bad[:5]


# argv: addr port connections -> per connection prints "BYTES eof|reset FIRST7" (urgent data in line)
SINK = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
    c, _ = s.accept()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE, 1)
    n, how, head = 0, "eof", b""
    try:
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            if len(head) < 7:
                head += d[:7 - len(head)]
            n += len(d)
    except ConnectionResetError:
        how = "reset"
    print(n, how, head.decode(errors="replace") or "-", flush=True)
    c.close()
'''


def test_data_written_just_before_exit_arrives(cf, world):
    """Bytes still in flight when the command exits are delivered, then closed cleanly."""
    ns = world.remote["remote1"]
    addr = W.REMOTES["remote1"]["v4"]
    rounds, size = 4, 20_000_000
    sink = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", SINK, addr, "9100", str(rounds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert sink.stdout.readline().strip() == b"ready"
        for _ in range(rounds):
            r = cf.run(["--", "bash", "-c", f"head -c {size} /dev/zero > /dev/tcp/{addr}/9100"], timeout=30)
            assert r.rc == 0, r
            line = sink.stdout.readline().decode().split()
            assert line[:2] == [str(size), "eof"], line
    finally:
        sink.kill()
        sink.wait()
        sink.stdout.close()
        sink.stderr.close()


OOB_CLIENT = r'''
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"abc"); time.sleep(0.05)
s.send(b"!", socket.MSG_OOB); time.sleep(0.05)
s.sendall(b"def" * 1000)
s.close()
'''


def test_urgent_data_passes_through(cf, world):
    """TCP urgent data (telnet interrupt, FTP ABOR) neither stalls nor truncates the stream."""
    ns = world.remote["remote1"]
    addr = W.REMOTES["remote1"]["v4"]
    sink = subprocess.Popen(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", SINK, addr, "9101", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert sink.stdout.readline().strip() == b"ready"
        r = cf.run(["--"] + py(OOB_CLIENT, addr, "9101"), timeout=20)
        assert r.rc == 0, r
        assert sink.stdout.readline().decode().split() == ["3004", "eof", "abc!def"]
    finally:
        sink.kill()
        sink.wait()
        sink.stdout.close()
        sink.stderr.close()


# ---- red team F6: a stderr nobody reads must not freeze the relay ------------------------------

# argv: conn_host conn_port nconn probe_host marker.  Fills the shared stderr (a pipe nobody reads)
# from a thread that then blocks; on a line on stdin opens nconn connections at once (the test has
# lowered P's fd limit, so P runs out of fds and warns) and prints OPENED; on the next line (the
# test has restored the limit) closes them, probes probe_host:80 and sleeps until the test's
# SIGTERM ends it.
BLOCKED_STDERR = r'''
import json, os, socket, sys, threading, time
h, port, n, ph = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def fill():
    try:
        os.write(2, b"E" * (1 << 20))   # blocks once the pipe is full
    except OSError:
        pass
threading.Thread(target=fill, daemon=True).start()
print("FILLING", flush=True)
sys.stdin.readline()
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((h, port))
    socks.append(s)
time.sleep(1.0)
print("OPENED", flush=True)
sys.stdin.readline()
for s in socks:
    s.close()
time.sleep(0.3)
t0 = time.monotonic()
try:
    c = socket.create_connection((ph, 80), timeout=5)
    c.settimeout(5)
    c.sendall(b"GET /who.txt HTTP/1.0\r\n\r\n")
    buf = b""
    while True:
        d = c.recv(65536)
        if not d:
            break
        buf += d
    probe = buf.partition(b"\r\n\r\n")[2].decode(errors="replace")
except OSError as e:
    probe = "error:" + type(e).__name__
print(json.dumps({"probe": probe, "secs": round(time.monotonic() - t0, 3)}), flush=True)
time.sleep(30)
'''


@pytest.mark.parametrize("stderr_mode", ["drained", "blocked"])
def test_blocked_stderr_does_not_freeze_relay(cf, world, stderr_mode):
    """The command fills the stderr it shares with childflow (a pipe nobody reads), then makes P run
    out of fds, so that P warns: relayed traffic and SIGTERM to childflow must keep working.  The
    `drained` control has a reader on the pipe, and checks that the warning was provoked."""
    marker = unique_marker("stderr")
    rfd, wfd = os.pipe()
    p = cf.popen(["--"] + py(BLOCKED_STDERR, W.REMOTES["remote1"]["v4"], W.ECHO_PORT, 50,
                             W.REMOTES["remote2"]["v4"], marker), stdin=subprocess.PIPE, stderr=wfd)
    os.close(wfd)
    got = []

    def drain():
        while True:
            d = os.read(rfd, 65536)
            if not d:
                return
            got.append(d)

    def wchan():
        try:
            with open(f"/proc/{p.pid}/wchan") as f:
                return f.read()
        except OSError:
            return "?"
    try:
        assert read_line(p.stdout, 20) == b"FILLING\n"
        if stderr_mode == "blocked":
            cap = fcntl.fcntl(rfd, 1032)   # F_GETPIPE_SZ

            def queued():
                return int.from_bytes(fcntl.ioctl(rfd, termios.FIONREAD, b"\0\0\0\0"), "little")
            deadline = time.monotonic() + 5
            while queued() < cap:
                assert time.monotonic() < deadline, f"stderr pipe holds {queued()} of {cap} bytes"
                time.sleep(0.02)
        else:
            threading.Thread(target=drain, daemon=True).start()
            # the command's 1 MiB is through before P is made to warn: a warning written while the
            # pipe is full is dropped by design (P never blocks on stderr), which is not what the
            # control is about
            deadline = time.monotonic() + 10
            while sum(len(d) for d in got) < (1 << 20):
                assert time.monotonic() < deadline, "the command's stderr was never drained"
                time.sleep(0.02)
        # P is the Popen's pid (setpriv and env exec in place); let it open only a few more fds.
        # prlimit runs as P's own user: this root may lack CAP_SYS_RESOURCE over other users.
        assert os.readlink(f"/proc/{p.pid}/exe") == os.path.realpath(cf.bin)
        as_user = [] if cf.runner.user is None else [
            "setpriv", f"--reuid={cf.runner.uid}", f"--regid={cf.runner.gid}", "--init-groups", "--"]
        with open(f"/proc/{p.pid}/limits") as f:
            soft = f.read().split("Max open files")[1].split()[0]
        top = max(int(fd) for fd in os.listdir(f"/proc/{p.pid}/fd"))
        subprocess.run(as_user + ["prlimit", f"--pid={p.pid}", f"--nofile={top + 8}:"], check=True,
                       timeout=10)
        p.stdin.write(b"GO\n")
        p.stdin.flush()
        assert read_line(p.stdout, 20) == b"OPENED\n"
        # P has run out of fds and warned; give it its fds back: only its stderr is left blocked
        subprocess.run(as_user + ["prlimit", f"--pid={p.pid}", f"--nofile={soft}:"], check=True,
                       timeout=10)
        p.stdin.write(b"GO\n")
        p.stdin.flush()
        res = json.loads(read_line(p.stdout, 20))
        assert res["probe"] == "remote2\n" and res["secs"] < 3, \
            f"stderr {stderr_mode}: a request through P failed after P ran out of fds: {res}; " \
            f"P waits in {wchan()}"
        os.kill(p.pid, signal.SIGTERM)
        try:
            rc = p.wait(5)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"stderr {stderr_mode}: childflow ignored SIGTERM (P waits in {wchan()})")
        assert rc == 143, rc
        if stderr_mode == "drained":
            err = b"".join(got).replace(b"E", b"").decode(errors="replace")
            assert "warning: out of file descriptors" in err, f"P never warned: {err!r}"
    finally:
        kill_tree(p)
        os.close(rfd)    # a write still blocked in P now fails (EPIPE) instead of waiting
        p.wait(5)
        reap(marker)
