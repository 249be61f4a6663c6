#!/bin/sh
# Experiment only: once childflow --root's links exist, GRO on every veth end of its path.
for i in $(seq 100); do ip -n rx5-host link show cfroot0 >/dev/null 2>&1 && break; sleep 0.02; done
ip netns exec rx5-host ethtool -K cfroot0 gro on
for p in $(pgrep -f "build/childflow --root"); do
  if nsenter -t $p -n ip link show up0 >/dev/null 2>&1; then nsenter -t $p -n ethtool -K up0 gro on; nsenter -t $p -n ethtool -K gw0 gro on; fi
  if nsenter -t $p -n ip -4 addr show 2>/dev/null | grep -q 10.240.255.2; then nsenter -t $p -n ethtool -K eth0 gro on; fi
done
