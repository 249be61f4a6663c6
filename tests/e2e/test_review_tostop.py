"""Review: a terminal with `stty tostop` must not stop P when a shell inside takes the foreground.

An interactive shell inside childflow puts itself in the terminal's foreground (job control), so P's
process group is in the background.  With TOSTOP set, the kernel answers a background write to the
terminal with SIGTTOU for the writer's group, whatever O_NONBLOCK says: before the fix, P's first
line (here a debug line for a closed flow) stopped P, and every flow of the shell with it.  The outer
shell has job control too, so P's group is not orphaned (an orphaned group gets EIO instead).
"""
import os

import world as W
from cfutil import BASE_ENV, Pty


def test_tostop_terminal_does_not_stop_p(cf, world):
    url = f"http://{W.REMOTES['remote1']['v4']}/whoami"
    env = dict(BASE_ENV, TERM="xterm", PS1="OUT$ ")
    t = Pty(cf.prefix({"PS1": "OUT$ ", "TERM": "xterm"}) + ["bash", "--norc", "-i"], cwd=cf.cwd, env=env, owner=cf.runner.user)
    try:
        t.expect(rb"OUT\$ ", 10)
        t.send(f"stty tostop; PS1='IN$ ' CHILDFLOW_DEBUG=1 {cf.bin} -- bash --norc -i\n".encode())
        t.expect(rb"IN\$ ", 15)
        for i in range(2):
            t.send(f"curl -s -m 3 -o /dev/null -w 'CODE{i}=%{{http_code}}\\n' {url}\n".encode())
            t.expect(f"CODE{i}=200".encode(), 10)
        t.send(b"exit 4\n")
        t.expect(rb"OUT\$ ", 10)
        t.send(b"echo RC=$?\n")
        t.expect(rb"RC=4")
        out = t.buf.decode(errors="replace")
        assert "Stopped" not in out, out[-2000:]
    finally:
        t.close()
