"""Where mstackd finds its BPF objects and shared header, and the names design.md section 5
fixes (run directory, BPF pin directory, ports namespace), each overridable for tests."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_RUN_DIR = "/run/mstack"
DEFAULT_BPF_DIR = "/sys/fs/bpf/mstack"
DEFAULT_PORTS_NETNS = "mstack-ports"
DEFAULT_CONFIG = "/etc/mstack/mstackd.toml"
DEFAULT_POLICY = "/etc/mstack/policy.toml"

_PKG = Path(__file__).resolve().parent
# An editable install or a source checkout: daemon/mstackd -> repository root.
_SRC_ROOT = _PKG.parent.parent


def run_dir() -> Path:
    return Path(os.environ.get("MSTACK_RUN_DIR", DEFAULT_RUN_DIR))


def bpf_dir() -> Path:
    return Path(os.environ.get("MSTACK_BPF_DIR", DEFAULT_BPF_DIR))


def _candidates(subdir: str, name: str) -> list[Path]:
    out = []
    env = os.environ.get("MSTACK_BPF_OBJ_DIR") if subdir == "bpf" else None
    if env:
        out.append(Path(env) / name)
    out.append(_PKG / "data" / name)  # installed wheel or package
    build = os.environ.get("MSTACK_BUILD_DIR", str(_SRC_ROOT / "build"))
    out.append(Path(build) / subdir / name)  # source tree after `make build`
    return out


def bpf_object(name: str) -> Path:
    """Path of a compiled BPF object such as 'xdp_count.bpf.o'."""
    for p in _candidates("bpf", name):
        if p.is_file():
            return p
    tried = ", ".join(str(p) for p in _candidates("bpf", name))
    raise FileNotFoundError(f"BPF object {name} not found (tried {tried}); run `make build`")


def _header(name: str, src_dir: str) -> Path:
    for p in (_PKG / "data" / name, _SRC_ROOT / src_dir / name):
        if p.is_file():
            return p
    raise FileNotFoundError(f"{name} not found: broken installation")


def abi_header() -> Path:
    """The header shared by the BPF programs and mstackd (daemon/bpf/mstack_abi.h)."""
    return _header("mstack_abi.h", "daemon/bpf")


def stats_header() -> Path:
    """The statistics region stacks share with mstackd (utcp_c/include/mstack_stats.h)."""
    return _header("mstack_stats.h", "utcp_c/include")


def proto_header() -> Path:
    """The control protocol shared with applications (utcp_c/include/mstack_proto.h)."""
    return _header("mstack_proto.h", "utcp_c/include")
