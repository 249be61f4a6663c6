"""Review: a root caller's command cannot take init's /proc or C's /sys off to see the host's.

The command is root with every capability in U2, which owns the mount namespace C and init mount
/proc and /sys in.  Were the command in that mount namespace, `umount /proc` would uncover the
caller's procfs (every host pid, /proc/<G>/net/dev showing gw0 of N1, /proc/1/net the machine's own
interfaces) and `umount /sys` the caller's sysfs.  The command lives in a mount namespace owned by a
further user namespace U3, so /proc and /sys (and their copies, `mount --rbind`) are locked mounts:
neither unmount, lazy unmount nor move uncovers what is below.  A tmpfs mounted and unmounted by the
same probe shows the refusals come from the locks, not from a missing capability.
"""
import json

import pytest

PROBE = r'''
import ctypes, errno, json, os, tempfile
libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH, MS_BIND, MS_REC, MS_MOVE = 2, 4096, 16384, 8192
def res(rc):
    return "ok" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
out = {}
tmp = tempfile.mkdtemp()
out["tmpfs"] = res(libc.mount(b"none", tmp.encode(), b"tmpfs", 0, None))
out["tmpfs_umount"] = res(libc.umount2(tmp.encode(), 0))
for path in ("/proc", "/sys"):
    for i in range(3):
        out[f"umount {path} {i}"] = res(libc.umount2(path.encode(), 0))
        out[f"umount -l {path} {i}"] = res(libc.umount2(path.encode(), MNT_DETACH))
    out[f"move {path}"] = res(libc.mount(path.encode(), tmp.encode(), None, MS_MOVE, None))
# A recursive copy of the whole tree, then the same inside the copy.
out["rbind"] = res(libc.mount(b"/", tmp.encode(), None, MS_BIND | MS_REC, None))
if out["rbind"] == "ok":
    for path in ("/proc", "/sys"):
        out[f"copy umount -l {path}"] = res(libc.umount2((tmp + path).encode(), MNT_DETACH))
def gw0_in(root):
    seen = []
    for p in os.listdir(root):
        try:
            with open(f"{root}/{p}/net/dev") as f:
                if any(l.split(":")[0].strip() == "gw0" for l in f):
                    seen.append(p)
        except OSError:
            pass
    return seen
out["gw0_via_proc"] = gw0_in("/proc")
out["gw0_via_copy"] = gw0_in(tmp + "/proc") if out["rbind"] == "ok" else []
with open("/proc/1/cmdline", "rb") as f:
    out["pid1"] = f.read().split(b"\0")[0].decode()
out["sys_ifaces"] = sorted(os.listdir("/sys/class/net"))
out["copy_sys_ifaces"] = sorted(os.listdir(tmp + "/sys/class/net")) if out["rbind"] == "ok" else []
if out["rbind"] == "ok":
    libc.umount2(tmp.encode(), MNT_DETACH)
os.rmdir(tmp)
print(json.dumps(out))
'''


def test_command_cannot_uncover_host_proc_or_sys(cf):
    if cf.runner.uid != 0:
        # Any other caller's command has no capability to unmount anything (so its mounts need no
        # lock): the attempt is refused, and /proc stays the sandbox's.
        r = cf.run(["--", "sh", "-c", "umount /proc 2>/dev/null && echo UNMOUNTED; umount -l /sys 2>/dev/null "
                    "&& echo UNMOUNTED; cat /proc/1/comm"], timeout=20)
        # PID 1 in its /proc is still the sandbox's init (a process of childflow's), not the host's
        assert r.rc == 0 and "UNMOUNTED" not in r.text and r.text.strip().startswith("childflow"), r
        return
    r = cf.run(["--", "/usr/bin/python3", "-c", PROBE], timeout=20)
    assert r.rc == 0, r
    out = json.loads(r.text)
    # It is root over its mount namespace: an ordinary mount and unmount work.
    assert (out["tmpfs"], out["tmpfs_umount"]) == ("ok", "ok"), out
    for k, v in out.items():
        if k.startswith(("umount", "move", "copy umount")):
            assert v == "EINVAL", (k, out)    # locked: refused however it is asked
    assert out["gw0_via_proc"] == [] and out["gw0_via_copy"] == [], out
    assert out["pid1"].endswith("childflow"), out   # still the sandbox's /proc (init is PID 1)
    assert out["sys_ifaces"] == ["eth0", "lo"], out
    assert out["copy_sys_ifaces"] in ([], ["eth0", "lo"]), out
