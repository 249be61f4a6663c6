"""Exit codes and usage errors, as a user sees them (upstream behaviour reference §1.4)."""
import os

import pytest

EXIT_CASES = [
    (["true"], 0),
    (["false"], 1),
    (["sh", "-c", "exit 7"], 7),
    (["sh", "-c", "exit 255"], 255),
    (["sh", "-c", "kill -KILL $$"], 128 + 9),
    (["sh", "-c", "kill -TERM $$"], 128 + 15),
]


@pytest.mark.parametrize("cmd,code", EXIT_CASES, ids=[" ".join(c) for c, _ in EXIT_CASES])
def test_exit_code_passthrough(cfc, cmd, code):
    r = cfc.run(["--"] + cmd)
    assert r.rc == code, r


def test_exit_code_without_double_dash(cf):
    """`--` is optional: the first word starts the command, later words belong to it."""
    r = cf.run(["sh", "-c", "echo $1; exit 5", "sh", "--proxy"])
    assert (r.rc, r.out) == (5, b"--proxy\n"), r


@pytest.mark.parametrize("cmd", [["cf-no-such-command-5dc1"], ["/nonexistent/cf-no-such-command-5dc1"]],
                         ids=["path-lookup", "absolute"])
def test_command_not_found_127(cfc, cmd):
    r = cfc.run(["--"] + cmd)
    assert r.rc == 127, r
    assert b"cf-no-such-command-5dc1" in r.err, r


@pytest.mark.parametrize("cmd", ["/etc/passwd", "/etc", "./notexec.sh"],
                         ids=["0644-file", "directory", "0644-script-in-cwd"])
def test_not_executable_126(cfc, sess, cmd):
    if cmd.startswith("./"):
        path = os.path.join(sess.work, cmd[2:])
        with open(path, "w") as f:
            f.write("#!/bin/sh\necho RAN\n")
        os.chmod(path, 0o644)
    else:
        assert os.path.exists(cmd) and not os.access(cmd, os.X_OK) or os.path.isdir(cmd)
    r = cfc.run(["--", cmd])
    assert b"RAN" not in r.out, r
    assert r.rc == 126, r
    assert cmd.encode() in r.err, r


USAGE_CASES = [
    (["--proxy", "ftp://x", "--", "sh", "-c", "echo RAN"], "unsupported proxy scheme"),
    ([], None),
    (["--"], None),
    (["--cf-bogus-flag", "--", "sh", "-c", "echo RAN"], "cf-bogus-flag"),
    (["--proxy"], "proxy"),
]


@pytest.mark.parametrize("args,needle", USAGE_CASES, ids=["ftp-proxy", "no-command", "dashdash-only",
                                                          "unknown-flag", "missing-value"])
def test_usage_error_exit_2(cfc, args, needle):
    r = cfc.run(args)
    assert r.rc == 2, r
    assert b"RAN" not in r.out, r
    lines = r.etext.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("childflow: error:"), r
    if needle:
        assert needle in lines[0], r


def test_help_and_version(cf):
    r = cf.run(["--version"])
    assert r.rc == 0 and r.text.startswith("childflow "), r
    r = cf.run(["--help"])
    assert r.rc == 0 and "--proxy" in r.text and "COMMAND" in r.text.upper(), r
