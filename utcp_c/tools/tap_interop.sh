#!/bin/bash
# tap_interop.sh — UTCP against the Linux kernel's TCP over a TAP device, both roles,
# sha256-checked.  Runs in a private network namespace; needs root.
#   tools/tap_interop.sh BUILD_DIR [SIZE_MB] [extra utcp-tapcat options...]
set -euo pipefail
BUILD=${1:?build dir}; SIZE=${2:-10}; shift $(( $# >= 2 ? 2 : $# )); EXTRA=("$@")
TAPCAT=$BUILD/bin/utcp-tapcat
NS=utcp-interop-$$; DEV=utap0
KIP=198.18.254.1; UIP=198.18.254.2; UMAC=02:00:00:77:00:02  # RFC 2544 range, own namespace
TMP=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
in_ns() { ip netns exec "$NS" "$@"; }

ip netns add "$NS"
in_ns ip link set lo up
in_ns ip tuntap add dev $DEV mode tap
in_ns sysctl -qw net.ipv6.conf.$DEV.disable_ipv6=1
in_ns ip link set $DEV up
in_ns ip addr add $KIP/24 dev $DEV
in_ns ip neigh replace $UIP lladdr $UMAC dev $DEV nud permanent
KMAC=$(in_ns cat /sys/class/net/$DEV/address)
head -c "${SIZE}M" /dev/urandom > "$TMP/in"
want=$(sha256sum < "$TMP/in" | cut -d' ' -f1)
args=(--dev $DEV --ip $UIP --mac $UMAC --gw-mac "$KMAC" "${EXTRA[@]}")

echo "== kernel -> UTCP (UTCP listens), ${SIZE} MB"
in_ns "$TAPCAT" "${args[@]}" listen 5001 > "$TMP/out1" 2> "$TMP/err1" &
pid=$!
sleep 0.3
t0=$(date +%s.%N)
in_ns python3 - "$UIP" "$TMP/in" "$TMP/ss1" <<'PY'
import socket, subprocess, sys
ip, path, ssout = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.create_connection((ip, 5001), timeout=60)
data = open(path, "rb").read()
half = len(data) // 2
s.sendall(data[:half])
open(ssout, "w").write(subprocess.run(["ss", "-tnie", "dst", ip], capture_output=True, text=True).stdout)
s.sendall(data[half:])
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
s.close()
PY
wait $pid
t1=$(date +%s.%N)
got=$(sha256sum < "$TMP/out1" | cut -d' ' -f1)
cat "$TMP/err1"
echo "kernel's view:"; grep -v '^State' "$TMP/ss1" | sed 's/^/  /'
[ "$got" = "$want" ] && echo "sha256 OK ($(echo "$t1 - $t0" | bc) s)" || { echo "sha256 MISMATCH"; exit 1; }

echo "== UTCP -> kernel (UTCP connects), ${SIZE} MB"
in_ns python3 - "$KIP" "$TMP/out2" <<'PY' &
import socket, sys
ip, path = sys.argv[1], sys.argv[2]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((ip, 5002)); ls.listen(1); ls.settimeout(60)
c, _ = ls.accept()
with open(path, "wb") as f:
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        f.write(b)
c.close()
PY
lpid=$!
sleep 0.3
t0=$(date +%s.%N)
in_ns "$TAPCAT" "${args[@]}" connect $KIP 5002 < "$TMP/in" > /dev/null 2> "$TMP/err2"
wait $lpid
t1=$(date +%s.%N)
cat "$TMP/err2"
got=$(sha256sum < "$TMP/out2" | cut -d' ' -f1)
[ "$got" = "$want" ] && echo "sha256 OK ($(echo "$t1 - $t0" | bc) s)" || { echo "sha256 MISMATCH"; exit 1; }
