#!/usr/bin/env bash
# Installs (as root) or names (otherwise) the Debian packages childflow needs.
#   scripts/deps.sh build   - compiler, pkg-config and the -dev libraries
#   scripts/deps.sh check   - build + everything the test suite drives (peers, test world tools)
#   scripts/deps.sh demo    - build + what `make demo` uses
#   scripts/deps.sh bench   - build + the benchmark's tools and peers (iperf3, sockperf, pasta, slirp4netns)
set -eu
BUILD_PKGS="gcc make pkg-config libmnl-dev libnftnl-dev libseccomp-dev libsodium-dev libldns-dev libssl-dev"
TEST_PKGS="nginx python3-pytest-xdist cppcheck clang-tidy clang libclang-rt-14-dev libcmocka-dev python3 python3-pytest iproute2 curl busybox-static procps util-linux passwd uidmap nftables dnsmasq-base bind9-dnsutils openssl tinyproxy microsocks dante-server stunnel4 tshark iputils-ping traceroute"
DEMO_PKGS="python3 iproute2 curl busybox-static procps util-linux passwd uidmap nftables tinyproxy dnsmasq-base bind9-dnsutils tshark iputils-ping traceroute"
BENCH_PKGS="python3 iproute2 procps util-linux passwd uidmap iperf3 sockperf passt slirp4netns dnsmasq-base dnsperf openssl tinyproxy microsocks stunnel4 iputils-ping"

case "${1:-build}" in
  build) want="$BUILD_PKGS" ;;
  check) want="$BUILD_PKGS $TEST_PKGS" ;;
  demo)  want="$BUILD_PKGS $DEMO_PKGS" ;;
  bench) want="$BUILD_PKGS $BENCH_PKGS" ;;
  *) echo "usage: $0 build|check|demo|bench" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "childflow: missing Debian packages. Install them with:" >&2
  echo "  sudo apt-get install -y --no-install-recommends$missing" >&2
  exit 1
fi
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 || {
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $missing >/dev/null
}
