#!/usr/bin/env bash
# Builds the Debian package multistack_<version>_<arch>.deb with dpkg-deb from an already built
# tree (`make build`): no debhelper, no debian/rules — the layout below is the whole package
# (docs/packaging.md). Usage: packaging/build-deb.sh OUTDIR [PYTHON]
#   OUTDIR  where the .deb goes (a staging tree is made in OUTDIR/stage)
#   PYTHON  a Python with pip, to build the wheel and fetch the vendored pyroute2
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
OUT=${1:?usage: build-deb.sh OUTDIR [PYTHON]}
PY=${2:-python3}
BUILD=${MSTACK_BUILD_DIR:-$SRC/build}
# pyroute2 is vendored: Debian 12's python3-pyroute2 is 0.7.2, and mstackd fails with it
# (link attributes read as None); mstackd is developed and tested against 0.9.7.
PYROUTE2=pyroute2==0.9.7

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$SRC/pyproject.toml")
DEBVER="$VERSION-1"
ARCH=$(dpkg --print-architecture)
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine)
PKG=multistack

for f in "$BUILD/bin/mstack-responder" "$BUILD/lib/libmstack.so"; do
    [[ -f $f ]] || { echo "build-deb: $f missing: run make build" >&2; exit 1; }
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STAGE="$OUT/stage"
R="$STAGE/root"
rm -rf "$STAGE"
mkdir -p "$R/DEBIAN" "$STAGE/wheel"

# -- Python: our wheel (with its package data) and pyroute2, into a private directory --------
PYDIR=usr/lib/multistack/python
"$PY" -m pip wheel -q --no-deps -w "$STAGE/wheel" "$SRC"
"$PY" -m pip install -q --no-compile --no-deps --target "$R/$PYDIR" "$STAGE"/wheel/multistack-*.whl \
    "$PYROUTE2"
rm -rf "$R/$PYDIR/bin"                          # pip's scripts: ours are below
# The shim goes to the library directory (LD_PRELOAD=libmstack.so then works by name too);
# mstack.paths finds it there.
rm -rf "$R/$PYDIR/mstack/data"
find "$R/$PYDIR" -name __pycache__ -prune -exec rm -rf {} +
# RECORD lists files we moved; the private directory is dpkg's, never pip's.
rm -f "$R/$PYDIR"/*.dist-info/{RECORD,INSTALLER,REQUESTED,direct_url.json}

entry() {  # entry DEST MODULE: a launcher on Debian's python3 with the private directory first
    install -d "$R/$(dirname "$1")"
    cat > "$R/$1" <<EOF
#!/usr/bin/python3
# $(basename "$1"): installed by the multistack package (man $(basename "$1")).
import sys

sys.path.insert(0, "/$PYDIR")
from $2 import main

sys.exit(main())
EOF
    chmod 0755 "$R/$1"
}
entry usr/sbin/mstackd mstackd.cli
entry usr/bin/mstackctl mstack.cli
entry usr/bin/mstack-run mstack.run

# -- C: tools and the shim (debug info stripped, as dh_strip would) ---------------------------
install -D -m 0755 "$BUILD/bin/mstack-responder" "$R/usr/bin/mstack-responder"
install -D -m 0644 "$BUILD/lib/libmstack.so" "$R/usr/lib/$MULTIARCH/libmstack.so"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$R/usr/bin/mstack-responder"
strip --strip-unneeded --remove-section=.comment "$R/usr/lib/$MULTIARCH/libmstack.so"
# mstack-httpd (issue 5) when the build made it; its man page goes with it.
HTTPD=no
if [[ -x "$BUILD/bin/mstack-httpd" ]]; then
    HTTPD=yes
    install -D -m 0755 "$BUILD/bin/mstack-httpd" "$R/usr/bin/mstack-httpd"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$R/usr/bin/mstack-httpd"
fi

# -- configuration, unit, man pages, docs -----------------------------------------------------
install -D -m 0644 "$HERE/etc/mstackd.toml" "$R/etc/mstack/mstackd.toml"
install -D -m 0644 "$HERE/etc/policy.toml" "$R/etc/mstack/policy.toml"
install -D -m 0644 "$HERE/systemd/mstackd.service" "$R/lib/systemd/system/mstackd.service"
for m in "$HERE"/man/*.[18]; do
    sec=${m##*.}
    [[ $HTTPD == yes || $(basename "$m") != mstack-httpd.1 ]] || continue
    install -D -m 0644 "$m" "$R/usr/share/man/man$sec/$(basename "$m")"
    gzip -9n "$R/usr/share/man/man$sec/$(basename "$m")"
done
DOC="$R/usr/share/doc/$PKG"
install -D -m 0644 "$HERE/debian/copyright" "$DOC/copyright"
gzip -9nc "$HERE/debian/changelog" > "$DOC/changelog.Debian.gz"
for d in packaging mstackd policy; do   # the installed layout, the daemon, the policy file
    if [[ -f "$SRC/docs/$d.md" ]]; then install -m 0644 "$SRC/docs/$d.md" "$DOC/$d.md"; fi
done

# -- control ----------------------------------------------------------------------------------
install -m 0644 "$HERE/debian/conffiles" "$R/DEBIAN/conffiles"
for s in postinst prerm postrm; do
    install -m 0755 "$HERE/debian/$s" "$R/DEBIAN/$s"
done
# libc6 for the C parts, as dpkg-shlibdeps computes it (it wants a debian/control to read).
SHL="$STAGE/shlibdeps"
mkdir -p "$SHL/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" > "$SHL/debian/control"
ELF=("$R/usr/bin/mstack-responder" "$R/usr/lib/$MULTIARCH/libmstack.so")
[[ $HTTPD == no ]] || ELF+=("$R/usr/bin/mstack-httpd")
SHLIBS=$(cd "$SHL" && dpkg-shlibdeps -O "${ELF[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
# libbpf1 and libxdp1 are dlopen()ed by mstackd (cffi): dpkg-shlibdeps cannot see them.
# The Python distribution's dependencies, mapped to Debian's python3-* (pyroute2 is vendored).
PYDEPS=$("$PY" "$HERE/pydeps.py" "$SRC/pyproject.toml")
DEPENDS="$SHLIBS, libbpf1 (>= 1:1.1), libxdp1 (>= 1.3), python3 (>= 3.11), $PYDEPS"
SIZE=$(du -sk --exclude=DEBIAN "$R" | cut -f1)
sed -e "s/@VERSION@/$DEBVER/" -e "s/@ARCH@/$ARCH/" -e "s/@DEPENDS@/$DEPENDS/" \
    -e "s/@SIZE@/$SIZE/" "$HERE/debian/control.in" > "$R/DEBIAN/control"
(cd "$R" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
    | LC_ALL=C sort -z | xargs -0 md5sum) > "$R/DEBIAN/md5sums"

# Reproducible: every mtime is the last commit's (or the changelog's) time.
EPOCH=$(git -C "$SRC" log -1 --format=%ct 2>/dev/null || stat -c %Y "$HERE/debian/changelog")
find "$R" -exec touch -h -d "@$EPOCH" {} +
DEB="$OUT/${PKG}_${DEBVER}_${ARCH}.deb"
SOURCE_DATE_EPOCH=$EPOCH dpkg-deb --root-owner-group -Zxz --build "$R" "$DEB" >/dev/null
echo "$DEB"
