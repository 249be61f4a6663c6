#!/bin/sh
# (b): child netns veth ending in the host netns (rx5-host), no G. Experiment only.
set -e
H=rx5-host K=rx5-kid
case "$1" in
up)
ip netns add $K
ip -n $K link set lo up
ip -n $H link add kx0 mtu 65520 type veth peer name eth0 netns $K mtu 65520
ip -n $H addr add 10.242.0.1/30 dev kx0
ip -n $K addr add 10.242.0.2/30 dev eth0
ip -n $H link set kx0 up
ip -n $K link set eth0 up
ip -n $K route add default via 10.242.0.1
ip netns exec $H sysctl -q -w net.ipv4.conf.kx0.forwarding=1 net.ipv4.conf.eth0.forwarding=1
;;
rules)
ip netns exec $H nft -f - <<'NFT'
table inet rx5b {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		iifname != "kx0" return
		meta l4proto tcp meta mark 0x00000012 reject with tcp reset
		meta l4proto tcp meta mark 0x00000013 reject with icmpx host-unreachable
		meta l4proto tcp meta mark 0x00000014 reject with icmpx no-route
		meta l4proto tcp meta mark 0x00000015 reject with icmpx admin-prohibited
		udp dport 53 meta nfproto ipv4 meta l4proto udp tproxy ip to 127.0.0.1:53 meta mark set 0x00000001 accept
		tcp dport 53 meta nfproto ipv4 meta l4proto tcp tproxy ip to 127.0.0.1:15001 meta mark set 0x00000001 accept
		ct state invalid drop
		accept
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		oifname "kx0" ct state established,related accept
		oifname "kx0" drop
		iifname "kx0" ct state invalid drop
		iifname "kx0" ct state established,related ip saddr 10.242.0.2 accept
		iifname "kx0" ip daddr 0.0.0.0/8 reject with icmpx admin-prohibited
		iifname "kx0" ip daddr 127.0.0.0/8 reject with icmpx admin-prohibited
		iifname "kx0" ip daddr 169.254.0.0/16 reject with icmpx admin-prohibited
		iifname "kx0" ip daddr 224.0.0.0/4 reject with icmpx admin-prohibited
		iifname "kx0" ip daddr 255.255.255.255 reject with icmpx admin-prohibited
		iifname "kx0" ip saddr 10.242.0.2 accept
		iifname "kx0" drop
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "kx0" meta mark 0x00000001 accept
		iifname "kx0" ct state established,related accept
		iifname "kx0" reject with icmpx admin-prohibited
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr 10.242.0.2 meta l4proto { tcp, udp } masquerade to :1024-32767
		ip saddr 10.242.0.2 masquerade
	}
}
NFT
;;
norules)
ip netns exec $H nft delete table inet rx5b 2>/dev/null || true
;;
down)
ip netns exec $H nft delete table inet rx5b 2>/dev/null || true
ip -n $H link del kx0 2>/dev/null || true
ip netns del $K 2>/dev/null || true
;;
esac
