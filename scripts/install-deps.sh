#!/usr/bin/env bash
# Installs the Debian packages the project builds and tests with; a no-op when all are present.
# --check-only: exit 1 if something is missing, install nothing.
set -euo pipefail

PACKAGES=(
    clang llvm libbpf-dev libxdp-dev bpftool xdp-tools libelf-dev zlib1g-dev pkg-config
    libclang-rt-14-dev linux-libc-dev
    iproute2 iputils-ping ethtool procps tcpdump bc
    nginx wrk nghttp2-client curl
    python3 python3-venv python3-dev libffi-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ "${1:-}" == "--check-only" ]]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts nginx on install; the project's tests and benchmarks start their own.
if systemctl is-active --quiet nginx 2>/dev/null; then systemctl stop nginx || true; fi
