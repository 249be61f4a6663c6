"""Fixtures for the end-to-end tests: the closed worlds, their servers, the runners.

Runners: `root` and `user` (the unprivileged CFUSER via setpriv) run build/childflow
(override: CHILDFLOW_BIN); `asan-root` and `asan-user` run build/childflow-asan (override:
CHILDFLOW_ASAN_BIN) and are used by a handful of core tests; they are skipped when it does not exist.
The binaries are copied to a world-readable temporary directory so that the user can execute them.
"""
import fcntl
import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

import world as W
from cfutil import CF, Runner

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CFUSER = os.environ.get("CHILDFLOW_TEST_USER", "cfuser")
BIG = 4 * 1024 * 1024


NEED_ROOT = ("end-to-end tests need root (they build a closed world of network namespaces): "
             "run `sudo make e2e`")


def pytest_configure(config):
    """Not root: fail at once with one line.  Skipping every test would let `make check` pass."""
    if os.geteuid() != 0:
        pytest.exit(NEED_ROOT, returncode=1)


def pytest_sessionfinish(session, exitstatus):
    """A run in which tests were collected but none passed (all skipped or deselected) is a failure."""
    rep = session.config.pluginmanager.get_plugin("terminalreporter")
    if rep is None or exitstatus != 0 or not session.testscollected:
        return
    if not rep.stats.get("passed") and not rep.stats.get("xfailed"):
        rep.write_line(f"e2e: none of the {session.testscollected} collected tests passed "
                       f"(skipped: {len(rep.stats.get('skipped', []))}); that is a failure")
        session.exitstatus = 1


def _has_subids(name, path):
    try:
        with open(path) as f:
            return any(line.split(":")[0] == name for line in f)
    except FileNotFoundError:
        return False


def ensure_user(name):
    """The unprivileged test user, with /etc/subuid and /etc/subgid ranges (for the newuidmap plan;
    the single-id plan is forced separately with CHILDFLOW_UIDMAP=direct).  Under a lock: pytest-xdist
    workers start their sessions at the same time."""
    with open("/run/lock/cfw-e2e-user.lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        return _ensure_user(name)


def _ensure_user(name):
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name],
                       check=True, timeout=30, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not (_has_subids(name, "/etc/subuid") and _has_subids(name, "/etc/subgid")):
        subprocess.run(["usermod", "--add-subuids", "1100000-1165535", "--add-subgids", "1100000-1165535", name],
                       check=True, timeout=30, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return pwd.getpwnam(name)


class Session:
    pass


@pytest.fixture(scope="session")
def sess():
    W.cleanup_stray()
    s = Session()
    s.user = ensure_user(CFUSER)
    s.dir = tempfile.mkdtemp(prefix="cfw-e2e-")
    os.chmod(s.dir, 0o755)
    s.bindir = os.path.join(s.dir, "bin")
    s.logs = os.path.join(s.dir, "logs")
    s.san = os.path.join(s.dir, "san")
    s.work = os.path.join(s.dir, "work")
    for d in (s.bindir, s.logs, s.san, s.work):
        os.makedirs(d)
    os.chmod(s.bindir, 0o755)
    os.chmod(s.san, 0o1777)
    os.chown(s.work, s.user.pw_uid, s.user.pw_gid)
    os.chmod(s.work, 0o755)
    s.bins = {}
    for key, env, default in (("plain", "CHILDFLOW_BIN", "build/childflow"),
                              ("asan", "CHILDFLOW_ASAN_BIN", "build/childflow-asan")):
        src = os.environ.get(env) or os.path.join(REPO, default)
        if os.path.isfile(src):
            dst = os.path.join(s.bindir, "childflow" if key == "plain" else "childflow-asan")
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o755)
            s.bins[key] = dst
        else:
            s.bins[key] = None
        s.bins[key + "_src"] = src
    yield s
    shutil.rmtree(s.dir, ignore_errors=True)


def make_files():
    return {
        "index.html": b"<html><body>childflow e2e " + os.urandom(12).hex().encode() + b"</body></html>\n",
        "big.bin": os.urandom(BIG),
    }


def build_world(sess, tag, v6):
    w = W.World(f"cfw{os.getpid()}{tag}", v6=v6)
    try:
        w.up()
    except W.RangeClash as e:
        pytest.exit(str(e), returncode=1)
    try:
        w.start_remote_servers(sess.logs, make_files())
    except BaseException:
        w.down()
        raise
    return w


@pytest.fixture(scope="session")
def world(sess):
    w = build_world(sess, "a", v6=True)
    yield w
    w.down()


@pytest.fixture(scope="session")
def world4(sess):
    """The v4only variant: the host has no IPv6 at all."""
    w = build_world(sess, "b", v6=False)
    yield w
    w.down()


HOSTSVC_LO_PORT, HOSTSVC_ANY_PORT = 18001, 18002


@pytest.fixture(scope="session")
def hostsvc(world, sess):
    """Services on the host netns itself: on 127.0.0.1/::1 (port 18001) and on 0.0.0.0 plus the host's
    own v6 address (port 18002).  Each sends a banner "HOSTSVC" and logs the connection."""
    lo = world.start_service(world.host, ["banner", "--bind", "127.0.0.1", "--bind", "::1",
                                          "--port", str(HOSTSVC_LO_PORT)], sess.logs, world.prefix + "-hostlo")
    anyaddr = world.start_service(world.host, ["banner", "--bind", "0.0.0.0", "--bind", W.HOST_V6,
                                               "--port", str(HOSTSVC_ANY_PORT)], sess.logs,
                                  world.prefix + "-hostany")
    return lo, anyaddr


def _runner(sess, name):
    asan = name.startswith("asan-")
    binary = sess.bins["asan" if asan else "plain"]
    if binary is None:
        if asan:
            pytest.skip(f"no sanitizer build at {sess.bins['asan_src']}")
        pytest.fail(f"childflow binary not found at {sess.bins['plain_src']} (build it, or set CHILDFLOW_BIN)")
    user = sess.user if name.endswith("user") else None
    return Runner(name, binary, user=user, san_dir=sess.san if asan else None)


def _check_san(r):
    reps = r.sanitizer_reports()
    assert not reps, f"sanitizer report from {r.name}:\n" + "\n".join(reps)


@pytest.fixture(params=["root", "user"])
def runner(request, sess):
    return _runner(sess, request.param)


@pytest.fixture(params=["root", "user", "asan-root", "asan-user"])
def core_runner(request, sess):
    r = _runner(sess, request.param)
    yield r
    _check_san(r)


@pytest.fixture
def cf(runner, world, sess):
    """childflow as root or as the user, in the dual-stack world."""
    return CF(runner, world, sess.work)


@pytest.fixture
def cfc(core_runner, world, sess):
    """childflow as root or user, plain or sanitizer build, in the dual-stack world."""
    return CF(core_runner, world, sess.work)


@pytest.fixture
def cf4(runner, world4, sess):
    """childflow in the v4only world."""
    return CF(runner, world4, sess.work)


@pytest.fixture(params=["root", "user"])
def ctl(request, world, sess):
    """Runs clients directly in the host netns (no childflow), as root or as the user: the controls."""
    user = sess.user if request.param == "user" else None
    return CF(Runner(request.param, None, user=user), world, sess.work)
