#!/usr/bin/env bash
# The .deb's acceptance test on a fresh Debian 12 root (`make deb-check`, docs/packaging.md):
#   1. `apt install ./multistack_*.deb` in a fresh debootstrap root (cached as a tarball in
#      /var/cache/multistack; made on first use from the machine's apt mirror);
#   2. `systemd-analyze verify` of the installed unit (systemd installed in the root, as on a
#      standard Debian 12 system, but not running);
#   3. the demo's scenario against the installed files only (packaging/installed_demo.py:
#      mstackd from the unit's ExecStart line attached to a test-bed link, mstack-responder
#      serving a remote client, the root's nginx under the installed mstack-run --strict with
#      its listener on UTCP — files fetched by a remote host, sha256-checked, proven off the
#      kernel by ss, mstackctl conns and the switch counters —, mstackctl doctor);
#   4. a daemon started by hand is stopped by the package's prerm when systemd is not running;
#   5. `apt remove` leaves nothing but the conffiles (and deb-systemd-helper's state, if that
#      is installed), `apt purge` removes those too.
# Everything runs in a private mount namespace with its own bpffs, so mounts and pins vanish
# with it; the root is deleted at the end, pass or fail. Needs root and the network (apt).
# Usage: packaging/test-deb.sh path/to/multistack_*.deb
set -euo pipefail

DEB=$(readlink -f "${1:?usage: test-deb.sh multistack_VERSION_ARCH.deb}")
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${MSTACK_DEBOOTSTRAP_CACHE:-/var/cache/multistack}
BASE="$CACHE/bookworm-minbase.tar.gz"
MIRROR=${MSTACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}

if [[ $(id -u) -ne 0 ]]; then echo "test-deb: needs root" >&2; exit 1; fi

if [[ -z ${MSTACK_DEBTEST_UNSHARED:-} ]]; then
    exec unshare --mount --propagation private env MSTACK_DEBTEST_UNSHARED=1 "$0" "$@"
fi

step() { printf '\n== %s\n' "$*"; }
SECONDS=0

for tool in debootstrap gpgv; do
    command -v "$tool" >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap gpgv
    }
done

if [[ ! -f $BASE ]]; then
    step "debootstrap bookworm (minbase) from $MIRROR into the cache $BASE"
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/bootstrap.XXXXXX")
    debootstrap --variant=minbase bookworm "$tmp" "$MIRROR" > "$CACHE/debootstrap.log"
    tar -C "$tmp" -czf "$BASE.part" . && mv "$BASE.part" "$BASE"
    rm -rf --one-file-system "$tmp"
fi

R=$(mktemp -d /var/tmp/mstack-debtest.XXXXXX)
cleanup() {
    # Stop whatever still runs from the root (by pid, only processes whose root is R).
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/root" 2>/dev/null) == "$R" ]] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
    # Every mount under R (proc, sys, dev, bpffs, the /run/netns that ip-netns and mstackd
    # make), deepest first; they would also vanish with this mount namespace.
    awk -v r="$R/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r \
        | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$R"
}
trap cleanup EXIT
trap "exit 130" INT TERM HUP

step "fresh root $R from $BASE"
tar -C "$R" -xzf "$BASE"
cp /etc/resolv.conf "$R/etc/resolv.conf"
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
mount --make-rslave "$R/sys"
# A bpffs of this mount namespace only: the package's daemon pins here, nobody else sees it.
mount -t bpf bpf "$R/sys/fs/bpf"
in_root() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

# Files of the root, for the removal checks (state of apt/dpkg and byte-code left by other
# packages' own scripts are not ours and not compared).
snapshot() {
    (cd "$R" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run \
        -o -path ./tmp -o -path ./var/lib/apt -o -path ./var/lib/dpkg -o -path ./var/cache \
        -o -path ./var/log -o -path ./usr/lib/python3 -o -path ./usr/lib/python3.11 \) -prune \
        -o -print | LC_ALL=C sort)
}

step "apt-get update in the root; systemd (as on a standard Debian 12 server; not running) and nginx"
in_root apt-get update -qq
# nginx too, for the demo's mstack-run step; a policy-rc.d keeps its scripts from starting it.
printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"
chmod 0755 "$R/usr/sbin/policy-rc.d"
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd \
    nginx-light > /dev/null
cp "$DEB" "$R/tmp/"
step "apt install ./$(basename "$DEB")"
in_root sh -c "cd /tmp && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ./$(basename "$DEB")" \
    | grep -E '^(Setting up|Unpacking|The following NEW|  )' || true
in_root dpkg-query -W -f='${Package} ${Version} ${Status}\n' multistack
in_root dpkg-query -W -f='${Package} ${Version}\n' python3 python3-cffi python3-click \
    python3-psutil libbpf1 libxdp1
in_root dpkg -L multistack > "$R/tmp/owned"
snapshot > "$R/tmp/installed"

step "systemd-analyze verify, in the root (man pages are checked apart: no man-db there)"
in_root systemd-analyze verify --man=no /lib/systemd/system/mstackd.service
echo "systemd-analyze verify: OK"
echo "mstackd.service is $(in_root systemctl is-enabled mstackd.service || true) (deb-systemd-helper)"

step "the installed programs"
in_root mstackd --version
in_root mstackctl --version
in_root mstack-run --version
in_root sh -c 'mstack-responder --help 2>&1 | head -1' || true
in_root ls -l /usr/lib/x86_64-linux-gnu/libmstack.so /usr/share/man/man8/mstackd.8.gz

step "demo scenario against the installed files"
"$PYTHON" "$HERE/installed_demo.py" --root "$R"

step "prerm stops a daemon started by hand (no systemd)"
mkdir -p "$R/run/mstack"
chroot "$R" env -i PATH=/usr/sbin:/usr/bin /usr/sbin/mstackd --config /etc/mstack/mstackd.toml \
    > "$R/tmp/mstackd.out" 2> "$R/tmp/mstackd.err" &
DPID=$!
for _ in $(seq 100); do grep -q 'mstackd: ready' "$R/tmp/mstackd.out" && break; sleep 0.1; done
grep -q 'mstackd: ready' "$R/tmp/mstackd.out" || { cat "$R/tmp/mstackd.err"; exit 1; }
echo "mstackd running (pid $DPID)"

# What the package left: (1) files dpkg listed as ours, (2) any path that names mstack or
# multistack, (3) anything that appeared since the installation. Allowed after a remove: the
# conffiles and deb-systemd-helper's record of the unit (enable/mask links, its state files),
# which the purge removes. The dependencies apt pulled in stay, with their own files.
ALLOW_REMOVE='^\./(etc/mstack(/mstackd\.toml|/policy\.toml)?|etc/systemd/system(/multi-user\.target\.wants)?(/mstackd\.service)?|var/lib/systemd/deb-systemd-helper-(enabled|masked)(/.*)?)$'
leftovers() {  # leftovers ALLOWED_REGEX
    local now; now=$(snapshot)
    {
        while read -r f; do
            [[ -e "$R$f" || -L "$R$f" ]] && [[ ! -d "$R$f" ]] && echo ".$f"
        done < "$R/tmp/owned"
        grep -E 'mstack|multistack' <<< "$now" | grep -v -E '^\./tmp(/|$)' || true
        LC_ALL=C comm -13 "$R/tmp/installed" <(echo "$now")
    } | LC_ALL=C sort -u | { grep -v -E "$1" || true; }
}

step "apt remove multistack"
in_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q multistack | grep -E '^Removing' || true
if kill -0 "$DPID" 2>/dev/null; then echo "FAILED: prerm left mstackd running" >&2; exit 1; fi
if wait "$DPID"; then echo "mstackd stopped by prerm, exit status 0"
else echo "FAILED: mstackd exit status $?" >&2; exit 1; fi
echo "kept (conffiles, deb-systemd-helper state):"
(cd "$R" && find ./etc/mstack ./etc/systemd/system ./var/lib/systemd/deb-systemd-helper-* \
    2>/dev/null | grep -E 'mstack' | sed 's/^/  /') || true
left=$(leftovers "$ALLOW_REMOVE")
echo "anything else left after remove: ${left:-(none)}"
[[ -z $left ]] || { echo "FAILED: remove left files" >&2; exit 1; }
test -f "$R/etc/mstack/mstackd.toml" && test -f "$R/etc/mstack/policy.toml"

step "apt purge multistack"
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q multistack | grep -E '^Purging' || true
left=$(leftovers '^$')
echo "anything left after purge: ${left:-(none)}"
[[ -z $left ]] || { echo "FAILED: purge left files" >&2; exit 1; }
in_root dpkg-query -W -f='${Status}\n' multistack 2>/dev/null || echo "multistack: not installed"

step "deb-check: OK (${SECONDS} s)"
