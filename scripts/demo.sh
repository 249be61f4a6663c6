#!/usr/bin/env bash
# Show childflow at work inside a small closed test world (run by `make demo`, as root).
#
# The world (tests/e2e/world.py) is a set of network namespaces joined by veth pairs, with no link
# to the machine's real network: a "host" namespace where childflow runs (198.18.0.2, 2001:db8:2::2),
# a router, and remote servers on documentation addresses (198.51.100.10, 2001:db8:100::10, ...).
# It is always torn down on exit.
set -u -f
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "demo.sh: must be run as root (it builds network namespaces for a closed test world)" >&2
	exit 1
fi

PY=/usr/bin/python3
SRC_BIN=${CHILDFLOW_BIN:-build/childflow}
DEMO_USER=${CHILDFLOW_DEMO_USER:-nobody}
PREFIX=cfdemo
R1V4=198.51.100.10
R1V6=2001:db8:100::10

if [ ! -x "$SRC_BIN" ]; then
	echo "demo.sh: $SRC_BIN not found: build it first (make build/childflow)" >&2
	exit 1
fi

WORK=$(mktemp -d /tmp/cfdemo.XXXXXX)
DNSPIDS=()   # the demo's resolvers (the DNS step), stopped on every exit
cleanup() {
	[ ${#DNSPIDS[@]} -gt 0 ] && kill "${DNSPIDS[@]}" 2>/dev/null
	"$PY" tests/e2e/world.py down --prefix "$PREFIX" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A copy of the binary in a world-readable place, so that the unprivileged user can run it too.
chmod 0755 "$WORK"
cp "$SRC_BIN" "$WORK/childflow"
chmod 0755 "$WORK/childflow"
CF=$WORK/childflow

heading() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }

if ! STATE=$("$PY" tests/e2e/world.py up --prefix "$PREFIX" --dir "$WORK" --uplinks 2 2>"$WORK/world.err"); then
	echo "demo.sh: could not build the test world:" >&2
	cat "$WORK/world.err" >&2
	exit 1
fi
HOST=$(sed -n 's/^host=//p' <<<"$STATE")
R1LOG=$(sed -n 's/^remote1_log=//p' <<<"$STATE")

# Run a command in the world's host namespace, as root or as the unprivileged user.
in_host() { ip netns exec "$HOST" "$@"; }
as_user() {
	ip netns exec "$HOST" setpriv --reuid="$DEMO_USER" --regid="$(id -g "$DEMO_USER")" --init-groups \
		--reset-env -- "$@"
}
# Print the server log lines written since mark_log.
mark_log() { LOGPOS=$(wc -l <"$R1LOG"); }
new_log() {
	local i
	for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
		[ "$(wc -l <"$R1LOG")" -gt "$LOGPOS" ] && break
		sleep 0.05
	done
	tail -n +$((LOGPOS + 1)) "$R1LOG" | sed 's/^/   server log: /'
}
CURL=(curl -sS --noproxy '*' --max-time 10 -g)

echo "childflow demo: a closed world of network namespaces (host 198.18.0.2 / 2001:db8:2::2,"
echo "remote web server $R1V4 / $R1V6); nothing here can reach the real network."

R1NS=$(sed -n 's/^remote1=//p' <<<"$STATE")
# A resolver of the demo's own (dnsmasq in a world namespace), started with start_dnsmasq.
start_dnsmasq() {   # NS ADDR LOG RECORD...
	local ns=$1 addr=$2 log=$3
	shift 3
	: >"$log"
	ip netns exec "$ns" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
		--no-poll --bind-interfaces --user=root --pid-file= --cache-size=0 --log-queries \
		--log-facility="$log" --listen-address="$addr" "$@" >/dev/null 2>&1 &
	DNSPIDS+=("$!")
	for i in $(seq 100); do grep -q started "$log" 2>/dev/null && return; sleep 0.05; done
	echo "demo.sh: dnsmasq on $addr did not start" >&2
}

heading "First: what this host can do for childflow (--doctor tries each requirement in throwaway namespaces)"
# The doctor asks a resolver once: the world's, given with --dns (the machine's resolv.conf plays no part).
start_dnsmasq "$R1NS" "$R1V4" "$WORK/doctor-dns.log"
show "childflow --doctor --dns $R1V4   (as $DEMO_USER)"
as_user "$CF" --doctor --dns "$R1V4" | sed 's/^/   /'
kill "${DNSPIDS[@]}" 2>/dev/null
wait "${DNSPIDS[@]}" 2>/dev/null
DNSPIDS=()

heading "The command's own network: only lo and eth0"
show "childflow -- ip -brief addr"
in_host "$CF" -- ip -brief addr

heading "HTTP over IPv4: the server sees the host's address as the client"
show "childflow -- curl http://$R1V4/"
mark_log
in_host "$CF" -- "${CURL[@]}" "http://$R1V4/"
new_log

heading "HTTP over IPv6"
show "childflow -- curl http://[$R1V6]/"
mark_log
in_host "$CF" -- "${CURL[@]}" "http://[$R1V6]/"
new_log

heading "The same, rootless, as the unprivileged user '$DEMO_USER'"
show "childflow -- sh -c 'id; curl http://$R1V4/'   (run as $DEMO_USER)"
mark_log
as_user "$CF" -- sh -c "id; curl -sS --noproxy '*' --max-time 10 http://$R1V4/"
new_log

heading "A static binary that ignores proxy variables (busybox wget) works the same"
show "childflow -- busybox wget -qO- http://$R1V4/"
mark_log
in_host "$CF" -- busybox wget -qO- "http://$R1V4/"
new_log

heading "UDP too: a datagram round trip through the relay (the echo comes back from the server's address)"
show "childflow -- python3 -c '<send a datagram to $R1V4:7, print the echo and who answered>'"
in_host "$CF" -- /usr/bin/python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b'hello over udp', ('$R1V4', 7))
data, peer = s.recvfrom(100)
print('   echo:', data.decode(), 'from', peer[0])"

heading "Capture exactly the command's traffic (-c): pcapng, read back with tshark"
show "childflow -c demo.pcapng -- curl -o /dev/null http://$R1V4/; tshark -r demo.pcapng"
in_host "$CF" -c "$WORK/demo.pcapng" -- "${CURL[@]}" -o /dev/null "http://$R1V4/"
tshark -r "$WORK/demo.pcapng" -Y 'arp || tcp || dns' 2>/dev/null | sed 's/^/   /'
capinfos -M "$WORK/demo.pcapng" 2>/dev/null | grep -E 'Capture application|Description' | sed 's/^ */   /'
show "childflow -c - -- curl -o /dev/null http://[$R1V6]/ | tshark -r - -Y http   (live, to a reader)"
in_host "$CF" -c - -- "${CURL[@]}" -o /dev/null "http://[$R1V6]/" | tshark -r - -Y http 2>/dev/null | sed 's/^/   /'

heading "Both views in one file (-C both): the tree's own link, and what left the host for it"
show "childflow -c both.pcapng -C both -- curl -o /dev/null http://$R1V4/; capinfos; tshark -Y http"
in_host "$CF" -c "$WORK/both.pcapng" -C both -- "${CURL[@]}" -o /dev/null "http://$R1V4/"
capinfos -I "$WORK/both.pcapng" 2>/dev/null | grep -E 'Number of interfaces|Name|Description|Encapsulation' |
	sed 's/^ */   /'
tshark -r "$WORK/both.pcapng" -Y http -T fields -e frame.interface_name -e ip.src -e ip.dst -e http.request.uri \
	-e http.response.code 2>/dev/null | sed 's/^/   /'

heading "--root: the command's frames are bridged to the host, whose kernel routes and masquerades them (no relay), and everything is put back"
show "childflow --root -- sh -c 'ip -4 -br addr show eth0; ping -c1 $R1V4; curl http://$R1V4/'"
mark_log
in_host sh -c 'nft list ruleset; ip -o link; sysctl net.ipv4.conf.eth0.forwarding' >"$WORK/root-before.txt" 2>&1
in_host env CHILDFLOW_DEBUG=1 "$CF" --root -- sh -c "ip -4 -br addr show eth0 | sed 's/^/   the command holds: /'; ping -c1 -W3 $R1V4 | sed -n 2p; $(printf '%q ' "${CURL[@]}")http://$R1V4/" \
	2>"$WORK/root-debug.txt"
new_log
echo "   what --root changed on the host, and put back (CHILDFLOW_DEBUG=1):"
grep -E 'host (change|restored)' "$WORK/root-debug.txt" | sed 's/^childflow: debug: \[[^]]*\] /     /'

in_host sh -c 'nft list ruleset; ip -o link; sysctl net.ipv4.conf.eth0.forwarding' >"$WORK/root-after.txt" 2>&1
if cmp -s "$WORK/root-before.txt" "$WORK/root-after.txt"; then
	echo "   host ruleset, links and forwarding afterwards: exactly as before"
else
	echo "   host state differs afterwards:"; diff "$WORK/root-before.txt" "$WORK/root-after.txt" | sed 's/^/   /'
fi

show "childflow --root -c root.pcapng -C wire-egress -- curl http://$R1V4/   (the host's real frames, only the tree's)"
in_host "$CF" --root -c "$WORK/root.pcapng" -C wire-egress -- "${CURL[@]}" -o /dev/null "http://$R1V4/"
tshark -r "$WORK/root.pcapng" -Y 'tcp.flags.syn == 1 || http' -T fields -e frame.interface_name -e ip.src \
	-e tcp.srcport -e ip.dst -e tcp.dstport -e http.request.uri 2>/dev/null | sed 's/^/   /'

heading "--fast-tcp: the same download, its socket connected by childflow from the host (direct path)"
for FLAG in "" "--fast-tcp "; do
	show "childflow ${FLAG}-- curl -o /dev/null -w '%{size_download} bytes %{speed_download} B/s' http://$R1V4/big.bin"
	# shellcheck disable=SC2086
	in_host env CHILDFLOW_DEBUG=1 "$CF" $FLAG-- "${CURL[@]}" -o /dev/null \
		-w '   %{size_download} bytes at %{speed_download} B/s (the Python server is the limit here)\n' \
		"http://$R1V4/big.bin" 2>"$WORK/fast.err"
	grep -o 'fast-tcp: .*' "$WORK/fast.err" | sed 's/^/   /'
done
show "childflow --fast-tcp -- python3 -c '<connect, print getsockname()>'   (what differs: the host's address)"
in_host "$CF" --fast-tcp -- /usr/bin/python3 -c "
import socket
s = socket.create_connection(('$R1V4', 80), timeout=5)
print('   local address', s.getsockname()[0], '(without --fast-tcp: 10.240.255.2)')"

heading "Exit codes pass through"
show "childflow -- sh -c 'exit 7'"
in_host "$CF" -- sh -c 'exit 7'
echo "   exit code: $?"

heading "A closed port is refused, as without childflow (curl exit 7, not a reset after connecting)"
show "curl http://$R1V4:81/   (on the host itself: nothing listens on port 81)"
in_host "${CURL[@]}" --max-time 3 "http://$R1V4:81/" 2>&1 | sed 's/^/   /'
echo "   curl exit code: ${PIPESTATUS[0]}"
show "childflow -- curl http://$R1V4:81/"
in_host "$CF" -- "${CURL[@]}" --max-time 3 "http://$R1V4:81/" 2>&1 | sed 's/^/   /'
echo "   curl exit code: ${PIPESTATUS[0]} (the command's SYN waited for childflow's own connect, which was refused)"

heading "ping and traceroute get the world's real answers (TTL 63: one router on the way; hop 1 is that router)"
show "childflow -- ping -c 2 -n $R1V4"
in_host "$CF" -- ping -c 2 -i 0.2 -W 2 -n "$R1V4" 2>&1 | sed 's/^/   /'
show "childflow -- traceroute -n -q 1 $R1V4"
in_host "$CF" -- traceroute -n -q 1 -w 2 -m 5 "$R1V4" 2>&1 | sed 's/^/   /'
show "childflow -- traceroute -T -n -q 1 $R1V4   (TCP SYN probes: the SYN's TTL is carried upstream)"
in_host "$CF" -- traceroute -T -n -q 1 -w 2 -m 5 "$R1V4" 2>&1 | sed 's/^/   /'

heading "Host-local services are not reachable from inside"
show "curl http://127.0.0.1:8080/   (on the host itself)"
in_host "${CURL[@]}" "http://127.0.0.1:8080/"
show "childflow -- curl http://127.0.0.1:8080/"
in_host "$CF" -- "${CURL[@]}" --max-time 3 "http://127.0.0.1:8080/"
echo "   curl exit code: $? (not reachable)"

heading "Every flow has a life record, denied ones too (CHILDFLOW_DEBUG=1: one line per flow as it closes)"
show "ip route add local 198.19.7.0/24 dev lo   (on the host: a prefix it delivers to itself, as AnyIP/TPROXY setups do)"
in_host ip route add local 198.19.7.0/24 dev lo
show "CHILDFLOW_DEBUG=1 childflow -- sh -c 'curl http://$R1V4/; curl http://198.19.7.7/; curl http://198.18.0.2/'"
in_host env CHILDFLOW_DEBUG=1 "$CF" -- sh -c "for u in http://$R1V4/ http://198.19.7.7/ http://198.18.0.2/; do curl -sS --noproxy '*' --max-time 3 -o /dev/null \$u 2>/dev/null; done" 2>&1 |
	grep -E ' flow [0-9]+ ' | sed -e 's/^childflow: debug: \[[^]]*\] /   /'
in_host ip route del local 198.19.7.0/24 dev lo

heading "Through an authenticated proxy, for a program that ignores proxy variables"
R2V4=203.0.113.10
R2NS=$(sed -n 's/^remote2=//p' <<<"$STATE")
PXPW=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%s\n' "$PXPW" >"$WORK/proxy-password"
chmod 0644 "$WORK/proxy-password"
: >"$WORK/tinyproxy.log"
chmod 0666 "$WORK/tinyproxy.log"
printf 'User nobody\nGroup nogroup\nPort 8888\nTimeout 30\nLogFile "%s"\nLogLevel Info\nBasicAuth demo %s\n' \
	"$WORK/tinyproxy.log" "$PXPW" >"$WORK/tinyproxy.conf"
ip netns exec "$R2NS" tinyproxy -d -c "$WORK/tinyproxy.conf" >/dev/null 2>&1 &
PXPID=$!
for i in $(seq 50); do ip netns exec "$R2NS" ss -Hltn 'sport = :8888' | grep -q . && break; sleep 0.05; done
echo "   (tinyproxy with Basic auth on $R2V4:8888, in the remote2 namespace)"
mark_log
show "childflow -p http://$R2V4:8888 -U demo --proxy-password-file pw -- busybox wget -q -O - http://$R1V4/"
in_host "$CF" -p "http://$R2V4:8888" -U demo --proxy-password-file "$WORK/proxy-password" -- \
	busybox wget -q -O - "http://$R1V4/"
new_log
echo "   (the web server's client is the proxy, $R2V4, not the host)"
grep -o 'CONNECT [^ ]* HTTP/1.1' "$WORK/tinyproxy.log" | grep -v '0.0.0.0:0' | sed 's/^/   proxy log: /'
show "childflow -p http://$R2V4:8888 -U demo -P wrong -- busybox wget -q -O - http://$R1V4/"
in_host "$CF" -p "http://$R2V4:8888" -U demo -P wrong -- busybox wget -q -O - "http://$R1V4/" 2>&1 |
	sed 's/^/   /'
kill "$PXPID" 2>/dev/null
wait "$PXPID" 2>/dev/null

heading "Host IPC around the network: a host process on a unix socket fetches 127.0.0.1 for the command"
# A host-side helper on a pathname socket in the demo's own directory (under /tmp): each client gets
# what the host's loopback-only service answers.  --isolate gives the command a private /tmp.
in_host /usr/bin/python3 -c "
import socket, sys
srv = socket.socket(socket.AF_UNIX); srv.bind('$WORK/host.sock'); srv.listen(); srv.settimeout(30)
import os; os.chmod('$WORK/host.sock', 0o666)
for _ in range(2):
    c, _ = srv.accept()
    u = socket.create_connection(('127.0.0.1', 8080), timeout=3)
    u.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); r = b''
    while (d := u.recv(4096)):   # HTTP/1.0: the answer ends when the server closes
        r += d
    c.sendall(r.split(b'\\r\\n\\r\\n', 1)[-1]); c.close()
" 2>/dev/null &
IPCPID=$!
for i in $(seq 50); do [ -S "$WORK/host.sock" ] && break; sleep 0.05; done
ASK="import socket; s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect('$WORK/host.sock'); print('   got:', s.recv(200).decode().strip())"
show "childflow -- python3 -c '<connect to $WORK/host.sock, print the answer>'"
in_host "$CF" -- /usr/bin/python3 -c "$ASK" 2>&1 | tail -n 1
echo "   (by default /tmp is shared: the loopback-only service answered)"
show "childflow --isolate -- python3 -c '<the same>'"
in_host "$CF" --isolate -- /usr/bin/python3 -c "$ASK" 2>&1 | tail -n 1 | sed 's/^/   /'
kill "$IPCPID" 2>/dev/null
wait "$IPCPID" 2>/dev/null

heading "DNS: every lookup is answered by childflow's forwarder, from the resolver it was given"
REC4=203.0.113.99
# A resolver on remote1 serving the demo's names, and a second one on remote2 ($REC4) that answers
# differently and logs every query: it must see none.  Only the world's resolvers are ever used
# (--dns names one): the machine's own resolv.conf plays no part.
ip netns exec "$R2NS" ip addr add "$REC4/32" dev eth0
start_dnsmasq "$R1NS" "$R1V4" "$WORK/resolver.log" --host-record=www.demo.test,"$R1V4" \
	--cname=web.demo.test,www.demo.test
start_dnsmasq "$R2NS" "$REC4" "$WORK/elsewhere.log" --host-record=www.demo.test,203.0.113.66
echo "   (dnsmasq on $R1V4 serves www.demo.test = $R1V4; another on $REC4 would say 203.0.113.66)"
show "childflow --dns $R1V4 -- getent hosts web.demo.test"
in_host "$CF" --dns "$R1V4" -- getent hosts web.demo.test | sed 's/^/   /'
show "childflow --dns $R1V4 -- curl http://www.demo.test/"
mark_log
in_host "$CF" --dns "$R1V4" -- "${CURL[@]}" "http://www.demo.test/"
new_log
show "childflow --dns $R1V4 -- dig +short @$REC4 www.demo.test   (asks $REC4 directly)"
in_host "$CF" --dns "$R1V4" -- dig +short +time=3 +tries=1 @"$REC4" www.demo.test | sed 's/^/   /'
show "childflow --dns $R1V4 -- dig +tcp +short @$REC4 www.demo.test"
in_host "$CF" --dns "$R1V4" -- dig +tcp +short +time=3 +tries=1 @"$REC4" www.demo.test | sed 's/^/   /'
echo "   queries $REC4 saw: $(grep -c ' query\[' "$WORK/elsewhere.log")" \
	"(the resolver on $R1V4 answered all $(grep -c ' query\[' "$WORK/resolver.log"))"
printf '203.0.113.10 www.demo.test\n198.51.100.10 intranet.demo.test\n' >"$WORK/hosts-extra"
chmod 0644 "$WORK/hosts-extra"
show "cat hosts-extra"
sed 's/^/   /' "$WORK/hosts-extra"
show "childflow --dns $R1V4 --hosts-file hosts-extra -- getent hosts www.demo.test intranet.demo.test localhost"
in_host "$CF" --dns "$R1V4" --hosts-file "$WORK/hosts-extra" -- \
	getent hosts www.demo.test intranet.demo.test localhost | sed 's/^/   /'
echo "   (its entries win over DNS; the host's own /etc/hosts entries for other names remain)"
kill "${DNSPIDS[@]}" 2>/dev/null
wait "${DNSPIDS[@]}" 2>/dev/null
DNSPIDS=()

heading "Two uplinks: -i/--iface chooses the one the command's traffic leaves by"
echo "   (the host has eth0 198.18.0.2, its default route, and eth1 198.19.0.2; /whoami answers the"
echo "   address the server saw)"
show "childflow -- curl http://$R1V4/whoami"
in_host "$CF" -- "${CURL[@]}" "http://$R1V4/whoami" | sed 's/^/   /'
show "childflow -i eth1 -- curl http://$R1V4/whoami   (run as $DEMO_USER)"
as_user "$CF" -i eth1 -- curl -sS --noproxy '*' --max-time 10 "http://$R1V4/whoami" | sed 's/^/   /'
show "childflow -i eth9 -- true"
in_host "$CF" -i eth9 -- true 2>&1 | sed 's/^/   /'
echo "   exit code: ${PIPESTATUS[0]}"
show "childflow --root -i eth1 -- curl http://$R1V4/whoami   (policy routing: a rule and a table of eth1's routes)"
in_host sh -c 'ip rule; ip -6 rule; ip route show table all; ip -6 route show table all' >"$WORK/rules-before.txt" 2>&1
in_host "$CF" --root -i eth1 -- "${CURL[@]}" "http://$R1V4/whoami" | sed 's/^/   /'
in_host sh -c 'ip rule; ip -6 rule; ip route show table all; ip -6 route show table all' >"$WORK/rules-after.txt" 2>&1
if cmp -s "$WORK/rules-before.txt" "$WORK/rules-after.txt"; then
	echo "   the host's rules and routes of every table afterwards: exactly as before"
else
	echo "   host routing differs afterwards:"; diff "$WORK/rules-before.txt" "$WORK/rules-after.txt" | sed 's/^/   /'
fi

heading "Done; tearing the world down"
