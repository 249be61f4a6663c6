#!/bin/sh
# Run COMMAND in a new user+network namespace connected to the current network namespace by
# slirp4netns (the usual rootless pattern: unshare -Urn, then slirp4netns --configure <pid> tap0).
#   bench/slirp-wrap.sh COMMAND [ARG]...
# Exits with COMMAND's status; slirp4netns and the scratch directory are removed on every exit.
set -eu
d=$(mktemp -d /tmp/cfbench-slirp.XXXXXX)
slirp=""
child=""
cleanup() {
    [ -n "$slirp" ] && kill "$slirp" 2>/dev/null || true
    [ -n "$child" ] && kill -KILL "$child" 2>/dev/null || true
    rm -rf "$d"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
mkfifo "$d/in" "$d/go" "$d/ready"
# The inner shell says "I am in the new namespaces" on $d/in, waits for "go" on $d/go, then execs.
unshare -Urn -- sh -c 'echo in > "$0/in"; read _ < "$0/go"; exec "$@"' "$d" "$@" &
child=$!
read _ < "$d/in"
slirp4netns --configure --mtu=65520 --disable-host-loopback --ready-fd=3 "$child" tap0 \
    3>"$d/ready" >/dev/null 2>"$d/log" &
slirp=$!
r=$(head -c 1 "$d/ready" || true)
if [ "$r" != 1 ]; then
    cat "$d/log" >&2
    echo "slirp-wrap: slirp4netns did not get ready" >&2
    exit 125
fi
echo go > "$d/go"
rc=0
wait "$child" || rc=$?
child=""
exit "$rc"
