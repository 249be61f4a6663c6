#!/bin/sh
# (e) split: child veth ends in the host (ke0); only intercepted packets detour into G by a netdev
# ingress "fwd" (host ke0 -> kg0 -> G's gw0), G's answers come back the same way. Experiment only.
H=rx5-host K=rx5-kid2 G=rx5-g
case "$1" in
up)
set -e
ip netns add $K; ip netns add $G
ip -n $K link set lo up; ip -n $G link set lo up
ip -n $H link add ke0 mtu 65520 type veth peer name eth0 netns $K mtu 65520
ip -n $H link add kg0 mtu 65520 type veth peer name gw0 netns $G mtu 65520
HMAC=$(ip netns exec $H cat /sys/class/net/ke0/address)
KMAC=$(ip netns exec $K cat /sys/class/net/eth0/address)
ip -n $G link set gw0 address $HMAC
ip -n $H addr add 10.243.0.1/30 dev ke0
ip -n $K addr add 10.243.0.2/30 dev eth0
ip -n $G addr add 10.243.0.1/30 dev gw0
for l in "$H ke0" "$H kg0" "$K eth0" "$G gw0"; do set -- $l; ip -n $1 link set $2 up; done
ip -n $K route add default via 10.243.0.1
ip -n $G neigh replace 10.243.0.2 lladdr $KMAC dev gw0 nud permanent
ip netns exec $H sysctl -q -w net.ipv4.conf.ke0.forwarding=1 net.ipv4.conf.eth0.forwarding=1
ip netns exec $H nft -f - <<'NFT'
table netdev rx5e {
	chain kid {
		type filter hook ingress device "ke0" priority 0; policy accept;
		udp dport 53 fwd to "kg0"
		tcp dport 53 fwd to "kg0"
	}
	chain gw {
		type filter hook ingress device "kg0" priority 0; policy accept;
		fwd to "ke0"
	}
}
NFT
ip netns exec $G nft -f - <<'NFT'
table inet rx5g {
	chain prerouting {
		type filter hook prerouting priority mangle; policy drop;
		iif "lo" accept
		iifname != "gw0" drop
		udp dport 53 tproxy ip to :15002 meta mark set 0x00000001 accept
		tcp dport 53 tproxy ip to :15001 meta mark set 0x00000001 accept
		ct state invalid drop
		drop
	}
}
NFT
ip -n $G rule add fwmark 1 lookup 100
ip -n $G route add local 0.0.0.0/0 dev lo table 100
;;
rules)
ip netns exec $H nft -f - <<'NFT'
table inet rx5e4 {
	chain forward {
		type filter hook forward priority filter; policy accept;
		oifname "ke0" ct state established,related accept
		oifname "ke0" drop
		iifname "ke0" ct state invalid drop
		iifname "ke0" ct state established,related ip saddr 10.243.0.2 accept
		iifname "ke0" ip daddr 0.0.0.0/8 reject with icmpx admin-prohibited
		iifname "ke0" ip daddr 127.0.0.0/8 reject with icmpx admin-prohibited
		iifname "ke0" ip daddr 169.254.0.0/16 reject with icmpx admin-prohibited
		iifname "ke0" ip daddr 224.0.0.0/4 reject with icmpx admin-prohibited
		iifname "ke0" ip daddr 255.255.255.255 reject with icmpx admin-prohibited
		iifname "ke0" ip saddr 10.243.0.2 accept
		iifname "ke0" drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "ke0" ct state established,related accept
		iifname "ke0" reject with icmpx admin-prohibited
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.243.0.2 meta l4proto { tcp, udp } masquerade to :1024-32767
		ip saddr 10.243.0.2 masquerade
	}
}
NFT
;;
norules)
ip netns exec $H nft delete table inet rx5e4 2>/dev/null || true
;;
down)
ip netns exec $H nft delete table inet rx5e4 2>/dev/null
ip netns exec $H nft delete table netdev rx5e 2>/dev/null
ip -n $H link del ke0 2>/dev/null; ip -n $H link del kg0 2>/dev/null
ip netns pids $G 2>/dev/null | xargs -r kill 2>/dev/null
ip netns del $K 2>/dev/null; ip netns del $G 2>/dev/null
true
;;
esac
