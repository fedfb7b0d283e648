"""Where the user-side commands find what MultiStack installs: the socket shim (libmstack.so)
today. One lookup serves every layout — a wheel (package data), the Debian package (the
system library directory), a source checkout after `make build` — and no build-tree path is
used unless this module really runs from a source checkout."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

SHIM_NAME = "libmstack.so"
SHIM_ENV = "MSTACK_SHIM"  # an explicit path wins over every other place

_PKG = Path(__file__).resolve().parent
# pymgmt/mstack -> the repository root, when this is a source checkout (editable install).
_SRC_ROOT = _PKG.parent.parent


class ShimNotFound(FileNotFoundError):
    pass


def _source_checkout() -> bool:
    return (_SRC_ROOT / "shim").is_dir() and (_SRC_ROOT / "pyproject.toml").is_file()


def _system_libdirs() -> list[Path]:
    """The Debian package puts the shim in the multiarch library directory (so a bare
    LD_PRELOAD=libmstack.so finds it too); other distributions use lib64 or lib."""
    dirs = []
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        dirs.append(Path("/usr/lib") / multiarch)
    dirs += [Path("/usr/lib64"), Path("/usr/lib"), Path("/usr/local/lib")]
    return dirs


def shim_candidates() -> list[Path]:
    """Every place looked at, in order."""
    env = os.environ.get(SHIM_ENV)
    if env:
        return [Path(env)]  # asked for explicitly: nothing else may stand in for it
    out = [_PKG / "data" / SHIM_NAME]  # a wheel's package data
    if _source_checkout():
        build = os.environ.get("MSTACK_BUILD_DIR", str(_SRC_ROOT / "build"))
        out.append(Path(build) / "lib" / SHIM_NAME)
    out += [d / SHIM_NAME for d in _system_libdirs()]
    return out


def shim_path() -> Path:
    """The absolute path of libmstack.so for LD_PRELOAD; ShimNotFound names every place tried."""
    cands = shim_candidates()
    for p in cands:
        if p.is_file():
            return p.resolve()
    tried = ", ".join(str(p) for p in cands)
    raise ShimNotFound(
        f"{SHIM_NAME} not found (tried {tried}); reinstall multistack, run `make build` in a "
        f"source checkout, or point {SHIM_ENV} at it"
    )
