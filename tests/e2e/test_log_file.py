"""childflow's diagnostics and the command's own lines on a stderr that is a regular file.

P switches its diagnostics to a non-blocking file description of its own once the command runs
(util/log.c: a full pipe must not freeze the relay).  Reopened through /proc/self/fd/2, a regular
file (`2>file`, without O_APPEND) got a new description at offset 0: P's later lines overwrote the
file's beginning, the earlier diagnostics and the command's own stderr output with them.
"""
import tempfile

from cfutil import kill_tree


def test_stderr_file_keeps_every_line(cf):
    with tempfile.TemporaryFile() as f:
        p = cf.popen(["--", "sh", "-c", "echo from-the-command-3f1 >&2"], env={"CHILDFLOW_DEBUG": "1"},
                     stdout=None, stderr=f)
        try:
            assert p.wait(30) == 0
        finally:
            kill_tree(p)
            p.wait(5)
        f.seek(0)
        text = f.read().decode(errors="replace")
    lines = text.splitlines()
    for needle in ("starting the sandbox", "from-the-command-3f1", "command finished: exit code 0"):
        assert any(needle in line for line in lines), f"{needle!r} lost from the stderr file:\n{text}"
    # Nothing written over: every line is whole (one of ours, or the command's).
    assert all(line.startswith("childflow: ") or line == "from-the-command-3f1" for line in lines), text
