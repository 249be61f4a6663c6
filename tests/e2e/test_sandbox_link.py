"""The command starts only once the link carries frames (D3): a datagram sent at once arrives."""
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import world as W

RUNS, PARALLEL = 300, 6


def test_first_datagram_is_delivered(cf, world):
    """A short command sends one UDP datagram right away; every one of RUNS reaches remote1."""
    tag = f"d3{os.getpid()}{time.monotonic_ns() % 100000}{cf.runner.name}"
    addr = W.REMOTES["remote1"]["v4"]

    def one(i):
        script = f"echo -n {tag}n{i}n >/dev/udp/{addr}/{W.ECHO_PORT}; sleep 0.05"
        p = cf.popen(["--", "bash", "-c", script])
        try:
            out, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate(timeout=5)
            return f"run {i} timed out"
        return None if p.returncode == 0 else f"run {i}: rc={p.returncode} {err[-300:]!r}"

    with ThreadPoolExecutor(PARALLEL) as ex:
        errors = [e for e in ex.map(one, range(RUNS)) if e]
    assert not errors, errors[:5]
    deadline = time.monotonic() + 3
    while True:
        got = {e["data"] for e in world.svc_remote1.find(svc="udp-echo", data=f"{tag}n*")}
        if len(got) == RUNS or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    missing = sorted(set(f"{tag}n{i}n" for i in range(RUNS)) - got)
    assert not missing, f"{len(missing)} of {RUNS} first datagrams never arrived, e.g. {missing[:5]}"
