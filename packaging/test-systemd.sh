#!/usr/bin/env bash
# The package under a running systemd (`make deb-check`, after test-deb.sh): systemd is not
# PID 1 on these machines, so a Debian 12 root boots in a container (systemd-nspawn, private
# network, a bpffs of its own) and there:
#   1. `apt install ./multistack_*.deb` — the postinst enables and starts mstackd.service;
#   2. the daemon answers mstackctl, runs with exactly the unit's capability bounding set,
#      /run/mstack is its RuntimeDirectory;
#   3. Restart=on-failure: a SIGKILLed daemon comes back (a new pid);
#   4. systemctl stop: exit status 0, /run/mstack and the pins gone;
#   5. `apt remove` stops the running daemon (prerm, deb-systemd-invoke); `apt purge`.
# Everything happens in a private mount namespace; the root is deleted at the end.
# Needs root, systemd-container (systemd-nspawn) and the network (apt, once per run).
# Usage: packaging/test-systemd.sh path/to/multistack_*.deb
set -euo pipefail

DEB=$(readlink -f "${1:?usage: test-systemd.sh multistack_VERSION_ARCH.deb}")
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${MSTACK_DEBOOTSTRAP_CACHE:-/var/cache/multistack}
BASE="$CACHE/bookworm-minbase.tar.gz"

if [[ $(id -u) -ne 0 ]]; then echo "test-systemd: needs root" >&2; exit 1; fi
if [[ -z ${MSTACK_SYSTEMD_UNSHARED:-} ]]; then
    command -v systemd-nspawn >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends systemd-container > /dev/null
    }
    [[ -f $BASE ]] || { echo "test-systemd: no $BASE: run packaging/test-deb.sh first" >&2; exit 1; }
    exec unshare --mount --propagation private env MSTACK_SYSTEMD_UNSHARED=1 "$0" "$@"
fi

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
SECONDS=0
W=$(mktemp -d /var/tmp/mstack-systemd.XXXXXX)
R="$W/root"
NSPAWN_PID=""
MADE=()
cleanup() {
    if [[ -n $NSPAWN_PID ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        kill -TERM "$NSPAWN_PID"  # nspawn asks the container's systemd to halt
        for _ in $(seq 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    awk -v r="$W/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r \
        | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$W"
    umount /run/systemd/nspawn 2>/dev/null || true
    for d in "${MADE[@]}"; do rmdir "$d" 2>/dev/null || true; done
}
trap cleanup EXIT
trap "exit 130" INT TERM HUP

# nspawn keeps its state under /run/systemd/nspawn: a tmpfs of this mount namespace, over a
# directory that is removed again if this script made it.
MADE=()
for d in /run/systemd /run/systemd/nspawn; do
    [[ -d $d ]] || { mkdir "$d"; MADE=("$d" "${MADE[@]}"); }
done
mount -t tmpfs tmpfs /run/systemd/nspawn

step "a Debian 12 root with systemd and the package's dependencies (the container has no network)"
mkdir -p "$R"
tar -C "$R" -xzf "$BASE"
cp /etc/resolv.conf "$R/etc/resolv.conf"
mount -t proc proc "$R/proc"
DEPS=$(dpkg-deb -f "$DEB" Depends | sed -e 's/([^)]*)//g' -e 's/,/ /g')
chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c "apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    systemd systemd-sysv dbus $DEPS" > "$W/apt.log" 2>&1 || { cat "$W/apt.log"; exit 1; }
umount "$R/proc"
cp "$DEB" "$R/var/tmp/"   # not /tmp: the container mounts a tmpfs there

step "boot it (systemd-nspawn: private network, all capabilities, bpf() allowed, own bpffs)"
mkdir -p "$W/bpffs" && mount -t bpf bpf "$W/bpffs"
systemd-nspawn -D "$R" -b --register=no --keep-unit --private-network --capability=all \
    --system-call-filter='bpf perf_event_open' --bind="$W/bpffs:/sys/fs/bpf" \
    -M "mstack-$$" --console=pipe > "$W/console.log" 2>&1 &
NSPAWN_PID=$!
INIT=""
for _ in $(seq 100); do
    INIT=$(cat /proc/"$NSPAWN_PID"/task/*/children 2>/dev/null | awk '{print $1}')
    [[ -n $INIT ]] && break
    sleep 0.1
done
[[ -n $INIT ]] || { cat "$W/console.log"; fail "the container did not start"; }
in_ct() { nsenter -t "$INIT" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
for _ in $(seq 60); do
    state=$(in_ct systemctl is-system-running 2>/dev/null || true)
    [[ $state == running || $state == degraded ]] && break
    sleep 0.5
done
echo "container systemd: $state (PID 1 there is host pid $INIT)"

active() { in_ct systemctl is-active --quiet mstackd; }
main_pid() { in_ct systemctl show -P MainPID mstackd; }
wait_ready() {  # until admin.sock answers
    for _ in $(seq 100); do in_ct mstackctl status >/dev/null 2>&1 && return 0; sleep 0.2; done
    in_ct journalctl -u mstackd --no-pager | tail -20; return 1
}

step "apt install ./$(basename "$DEB") with systemd running"
in_ct sh -c "cd /var/tmp && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends ./$(basename "$DEB")" | grep -E '^(Setting up multistack|Created symlink)'
wait_ready || fail "mstackd did not come up after the installation"
active && echo "mstackd.service: $(in_ct systemctl is-enabled mstackd), active (pid $(main_pid))"
in_ct mstackctl status

step "the daemon's capabilities are the unit's bounding set"
pid=$(main_pid)
bnd=$(in_ct sh -c "grep CapBnd /proc/$pid/status" | awk '{print $2}')
want=$(grep '^CapabilityBoundingSet=' "$HERE/systemd/mstackd.service" | cut -d= -f2)
declare -A BIT=([CAP_CHOWN]=0 [CAP_DAC_READ_SEARCH]=2 [CAP_NET_ADMIN]=12 [CAP_NET_RAW]=13
    [CAP_IPC_LOCK]=14 [CAP_SYS_PTRACE]=19 [CAP_SYS_ADMIN]=21 [CAP_PERFMON]=38 [CAP_BPF]=39)
mask=0
for c in $want; do mask=$((mask | (1 << ${BIT[$c]:?unknown capability $c}))); done
printf 'CapBnd %s, the unit asks %016x (%s)\n' "$bnd" "$mask" "$want"
[[ $((16#$bnd)) -eq $mask ]] || fail "bounding set differs"
in_ct test -S /run/mstack/app.sock || fail "no /run/mstack/app.sock"

step "Restart=on-failure: SIGKILL the daemon"
old=$(main_pid)
in_ct sh -c "kill -KILL $old"
for _ in $(seq 100); do
    new=$(main_pid); [[ $new != 0 && $new != "$old" ]] && active && break; sleep 0.1
done
wait_ready || fail "no restart"
echo "restarted: pid $old -> $(main_pid), $(in_ct systemctl show -P NRestarts mstackd) restart(s)"

step "systemctl stop: orderly shutdown"
in_ct systemctl stop mstackd
echo "exit status $(in_ct systemctl show -P ExecMainStatus mstackd), state $(in_ct systemctl is-active mstackd || true)"
[[ $(in_ct systemctl show -P ExecMainStatus mstackd) == 0 ]] || fail "non-zero exit on stop"
in_ct test ! -e /run/mstack || fail "/run/mstack left after stop"
in_ct test ! -e /sys/fs/bpf/mstack || fail "pins left after stop"
echo "/run/mstack and /sys/fs/bpf/mstack are gone"

step "apt remove stops the running daemon; apt purge"
in_ct systemctl start mstackd
wait_ready || fail "no start"
in_ct env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q multistack | grep -E '^Removing' || true
if in_ct systemctl is-active --quiet mstackd; then fail "still active after remove"; fi
echo "after remove: mstackd.service $(in_ct systemctl is-active mstackd || true), unit file $(in_ct systemctl is-enabled mstackd 2>&1 || true)"
in_ct test ! -e /run/mstack || fail "/run/mstack left after remove"
in_ct env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q multistack | grep -E '^Purging' || true
left=$(in_ct sh -c 'find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /var/tmp \) -prune -o \( -name "*mstack*" -o -name "*multistack*" \) -print' || true)
echo "after purge, paths naming mstack: ${left:-(none)}"
[[ -z $left ]] || fail "purge left files"

step "test-systemd: OK (${SECONDS} s)"
