#!/bin/sh
# (d): (b) plus veth GRO/NAPI (d1) and threaded NAPI (d2) on the kid link. Experiment only.
H="ip netns exec rx5-host" K="ip netns exec rx5-kid"
case "$1" in
on)
/tmp/rx5/x/b.sh rules
$H ethtool -K kx0 gro on; $K ethtool -K eth0 gro on
if [ "$2" = d2 ]; then $H sh -c 'echo 1 > /sys/class/net/kx0/threaded'; $K sh -c 'echo 1 > /sys/class/net/eth0/threaded'; fi
;;
off)
$H sh -c 'echo 0 > /sys/class/net/kx0/threaded' 2>/dev/null; $K sh -c 'echo 0 > /sys/class/net/eth0/threaded' 2>/dev/null
$H ethtool -K kx0 gro off; $K ethtool -K eth0 gro off
/tmp/rx5/x/b.sh norules
;;
esac
