#!/bin/bash
# bench_port.sh — frames/s of libmsport's simple loops on a veth pair (copy mode), for the README.
#   tx: the app sends 64-byte frames as fast as it can; the peer's kernel drops them (unknown
#       ethertype) — the cost of that drop runs on the sending core too.
#   rx: a second port_helper sends from an XSK on the peer end; the app counts what arrives.
# usage: bench_port.sh [BUILD_DIR] [SECONDS] [RUNS]   (root; cleans up after itself)
set -euo pipefail
BUILD=${1:-$(dirname "$0")/../../../build}
SECS=${2:-3}
RUNS=${3:-3}
H=$BUILD/tests/port/port_helper
ID=$(printf '%04x' $((RANDOM % 65536)))
NS=mst$ID-bench A=mst$ID-ba B=mst$ID-bb
cleanup() { ip link del "$B" 2>/dev/null || true; ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1
ip link add "$B" type veth peer name "$A" netns "$NS"
sysctl -qw "net.ipv6.conf.$B.disable_ipv6=1"
ethtool -K "$B" tx off >/dev/null
ip netns exec "$NS" ethtool -K "$A" tx off >/dev/null
ip link set "$B" up
ip -n "$NS" link set "$A" up
field() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p"; }
for run in $(seq "$RUNS"); do
	tx=$(timeout $((SECS + 30)) ip netns exec "$NS" "$H" --ifname "$A" --timeout 10 bench-tx "$SECS" |
		field pps)
	rxf=$(mktemp)
	timeout $((SECS + 40)) ip netns exec "$NS" "$H" --ifname "$A" --timeout 20 bench-rx "$SECS" >"$rxf" &
	rxpid=$!
	sleep 1
	timeout $((SECS + 30)) "$H" --ifname "$B" --timeout 10 bench-tx $((SECS + 2)) >/dev/null
	wait "$rxpid" || true
	rx=$(field pps <"$rxf")
	got=$(field received <"$rxf")
	empty=$(field k_rx_fill_ring_empty_descs <"$rxf")
	gap=$(field max_gap_us <"$rxf")
	rm -f "$rxf"
	echo "run $run: app tx ${tx:-?} frames/s; app rx ${rx:-?} frames/s" \
		"(${got:-?} received, ${empty:-?} dropped by the kernel for an empty fill ring;" \
		"longest time off the CPU ${gap:-?} us)"
done
