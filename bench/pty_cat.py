"""The pty relay's cost: time to `cat` 100 MB to a terminal, with and without childflow.

Usage (root, no network needed: cat opens no socket):
  /usr/bin/python3 bench/pty_cat.py NEW_BINARY [OLD_BINARY] [ROUNDS]
OLD_BINARY is a childflow without the pty (the command shared the terminal), e.g. main before
issue 13's pty.  The terminal is a fresh pty whose master this script reads as fast as it can;
the file is random bytes in /var/tmp, removed at the end.  Prints min and median of the rounds.
"""
import fcntl
import os
import pty
import shutil
import subprocess
import sys
import termios
import time

F = "/var/tmp/cfb-pty-100M"
NEW = sys.argv[1] if len(sys.argv) > 1 else "build/childflow"
OLD = sys.argv[2] if len(sys.argv) > 2 else None
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5


def run(argv):
    """Run argv as the session leader of a fresh terminal; read it to EOF.  Return: (seconds, bytes)."""
    m, s = pty.openpty()
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=s, stdout=s, stderr=s, start_new_session=True,
                         preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(s)
    n = 0
    while True:
        try:
            d = os.read(m, 1 << 20)
        except OSError:
            break
        if not d:
            break
        n += len(d)
    p.wait(timeout=300)
    os.close(m)
    return time.monotonic() - t0, n


def main():
    with open(F, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    rows = [("cat alone on a terminal", ["cat", F])]
    if shutil.which("script"):   # a peer: util-linux script(1) relays its own pty the same way
        rows.append(("cat under script(1)", ["script", "-qec", f"cat {F}", "/dev/null"]))
    if OLD:
        rows.append(("childflow, command shares the terminal", [OLD, "--", "cat", F]))
    rows.append(("childflow, through its pty relay", [NEW, "--", "cat", F]))
    res = {r[0]: [] for r in rows}
    try:
        for _ in range(ROUNDS):
            for name, argv in rows:   # interleaved, so that load changes hit every row alike
                t, n = run(argv)
                assert n >= 100 << 20, (name, n)
                res[name].append(t)
    finally:
        os.unlink(F)
    for name, ts in res.items():
        ts.sort()
        print(f"{name:40s} min {ts[0]:.2f} s  median {ts[len(ts) // 2]:.2f} s  ({100 / ts[0]:.0f} MB/s best)")


if __name__ == "__main__":
    main()
