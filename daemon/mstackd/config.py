"""mstackd's configuration file (TOML, default /etc/mstack/mstackd.toml), validated with errors
that name the key. Command-line options override it."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    pass


@dataclass
class Config:
    attach: list[str] = field(default_factory=list)
    mode: str = "native"
    admin_group: str = ""
    umem_frames: int = 4096  # x 2 KB = 8 MB of locked memory per port
    ring_size: int = 2048
    max_ports_per_process: int = 16
    max_ports_per_user: int = 256  # locked memory is the daemon's: bound what one uid can take
    sweep_interval: float = 2.0
    # The XDP egress fast path (docs/mstackd.md, "Egress"): off unless asked for — measured on
    # veth it costs bulk traffic more than it saves (docs/bench.md).
    egress_fast_path: bool = False


_TYPES: dict[str, type | tuple[type, ...]] = {
    "attach": list,
    "mode": str,
    "admin_group": str,
    "umem_frames": int,
    "ring_size": int,
    "max_ports_per_process": int,
    "max_ports_per_user": int,
    "sweep_interval": (int, float),
    "egress_fast_path": bool,
}


def load(path: Path | None) -> Config:
    """The file's [daemon] table over the defaults; a missing default path is no error."""
    cfg = Config()
    if path is None or not path.exists():
        return cfg
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
    unknown_top = set(data) - {"daemon"}
    if unknown_top:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown_top)}; expected [daemon]")
    table = data.get("daemon", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [daemon] must be a table")
    for k, v in table.items():
        if k not in _TYPES:
            raise ConfigError(f"{path}: unknown key daemon.{k}")
        if not isinstance(v, _TYPES[k]) or (isinstance(v, bool) and _TYPES[k] is not bool):
            raise ConfigError(f"{path}: daemon.{k} has the wrong type ({type(v).__name__})")
        setattr(cfg, k, v)
    if cfg.mode not in ("native", "generic"):
        raise ConfigError(f"{path}: daemon.mode must be native or generic")
    if not all(isinstance(i, str) and i for i in cfg.attach):
        raise ConfigError(f"{path}: daemon.attach must be a list of interface names")
    if not 64 <= cfg.umem_frames <= 1 << 20:
        raise ConfigError(f"{path}: daemon.umem_frames must be in [64, 1048576]")
    return cfg
