#!/bin/sh
# (c) ceiling: tc BPF redirect kid<->uplink in rx5-host, router routes the kid's net back (no NAT). Experiment only.
H="ip netns exec rx5-host"
case "$1" in
on)
$H tc qdisc add dev kx0 clsact
$H tc qdisc add dev eth0 clsact
$H tc filter add dev kx0 ingress bpf da obj /tmp/rx5/x/redir.o sec tc_up
$H tc filter add dev eth0 ingress bpf da obj /tmp/rx5/x/redir.o sec tc_down
ip -n rx5-router route add 10.242.0.0/30 via 198.18.0.2
;;
off)
$H tc qdisc del dev kx0 clsact 2>/dev/null
$H tc qdisc del dev eth0 clsact 2>/dev/null
ip -n rx5-router route del 10.242.0.0/30 via 198.18.0.2 2>/dev/null
true
;;
esac
