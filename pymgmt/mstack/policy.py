"""The policy file (TOML, default /etc/mstack/policy.toml): which applications use UTCP, for
which listening and outgoing endpoints, with which transport options. Errors name the file, the
line and the field. `compact()` renders one application's entry in the versioned one-line form
mstack-run hands the shim (which reads no TOML) in MSTACK_POLICY.

    [apps.web]
    exe = ["nginx"]                         # executable names this entry applies to
    listen = ["0.0.0.0:80", "[::]:443"]     # ADDR:PORT[-PORT]; ADDR is IPv4, * or [::]
    connect = ["10.0.0.0/8:5432"]           # CIDR:PORT[-PORT] or CIDR:*

    [apps.web.tcp]
    congestion_control = "cubic"            # newreno | cubic
    sack = true
    window_scaling = true
    timestamps = true
    initial_window = 10                     # segments, 1..64
    nodelay = false                         # the default for TCP_NODELAY
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMPACT_VERSION = 1
CONGESTION_CONTROLS = ("newreno", "cubic")
MAX_ENDPOINTS = 64  # per list; the shim's table size
APP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")


class PolicyError(Exception):
    """file:line: field: what is wrong."""

    def __init__(self, path: str, line: int | None, fieldname: str, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {fieldname}: {message}" if fieldname else f"{where}: {message}")
        self.path = path
        self.line = line
        self.field = fieldname


@dataclass(frozen=True)
class Endpoint:
    net: ipaddress.IPv4Network  # 0.0.0.0/0 for a wildcard
    port_lo: int
    port_hi: int

    def compact(self) -> str:
        return f"{self.net.network_address}/{self.net.prefixlen}:{self.port_lo}-{self.port_hi}"


@dataclass
class TcpOptions:
    congestion_control: str = "cubic"
    sack: bool = True
    window_scaling: bool = True
    timestamps: bool = True
    initial_window: int = 10
    nodelay: bool = False


@dataclass
class AppPolicy:
    name: str
    exe: list[str] = field(default_factory=list)
    listen: list[Endpoint] = field(default_factory=list)
    connect: list[Endpoint] = field(default_factory=list)
    tcp: TcpOptions = field(default_factory=TcpOptions)


TCP_TYPES: dict[str, type] = {
    "congestion_control": str,
    "sack": bool,
    "window_scaling": bool,
    "timestamps": bool,
    "initial_window": int,
    "nodelay": bool,
}


class _Locator:
    """Finds the line of a table or key in the raw text: tomllib keeps no positions."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()

    @staticmethod
    def _header(line: str) -> str | None:
        m = re.match(r"^\s*\[([^\[\]]+)\]", line)
        if not m:
            return None
        return ".".join(part.strip().strip("\"'") for part in m.group(1).split("."))

    def line_of(self, table: str, key: str | None = None) -> int | None:
        start = None
        for i, line in enumerate(self.lines):
            header = self._header(line)
            if header == table:
                start = i
                if key is None:
                    return i + 1
                continue
            if start is not None and (header is not None or line.lstrip().startswith("[[")):
                break
            if start is not None and re.match(rf"^\s*[\"']?{re.escape(key or '')}[\"']?\s*=", line):
                return i + 1
        return start + 1 if start is not None else None


def _port_range(text: str) -> tuple[int, int]:
    lo_s, sep, hi_s = text.partition("-")
    if not lo_s.isdigit() or (sep and not hi_s.isdigit()):
        raise ValueError(f"port {text!r} is not a number or a range N-M")
    lo, hi = int(lo_s), int(hi_s) if sep else int(lo_s)
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"port range {text!r} outside 1-65535 or reversed")
    return lo, hi


def parse_listen(text: str) -> Endpoint:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not ADDR:PORT")
    if host in ("*", "[::]", "0.0.0.0"):
        net = ipaddress.IPv4Network("0.0.0.0/0")  # [::] dual-stack: its IPv4 traffic too
    elif host.startswith("["):
        raise ValueError(f"{text!r}: only [::] of IPv6 (its IPv4 side) is supported")
    else:
        try:
            net = ipaddress.IPv4Network(f"{ipaddress.IPv4Address(host)}/32")
        except ValueError as e:
            raise ValueError(f"{text!r}: {e}") from e
    lo, hi = _port_range(port)
    return Endpoint(net, lo, hi)


def parse_connect(text: str) -> Endpoint:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not CIDR:PORT")
    try:
        net = ipaddress.IPv4Network(host, strict=True)
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from e
    lo, hi = (1, 65535) if port == "*" else _port_range(port)
    return Endpoint(net, lo, hi)


def loads(text: str, path: str = "<policy>") -> dict[str, AppPolicy]:
    loc = _Locator(text)
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise PolicyError(path, int(m.group(1)) if m else None, "", f"not valid TOML: {e}") from e
    for top in data:
        if top != "apps":
            raise PolicyError(path, loc.line_of(top), top, "unknown table (expected [apps.NAME])")
    apps = data.get("apps", {})
    if not isinstance(apps, dict):
        raise PolicyError(path, None, "apps", "must be a table of applications")
    out: dict[str, AppPolicy] = {}
    exes: dict[str, str] = {}
    for name, entry in apps.items():
        table = f"apps.{name}"
        if not APP_NAME.match(name):
            raise PolicyError(path, loc.line_of(table), table, "application names are "
                              "letters, digits, _ . - (at most 32)")  # fmt: skip
        if not isinstance(entry, dict):
            raise PolicyError(path, loc.line_of("apps", name), table, "must be a table")
        app = AppPolicy(name)
        for key, value in entry.items():
            fname = f"{table}.{key}"
            line = loc.line_of(table, key)
            if key == "tcp":
                app.tcp = _tcp(value, path, loc, f"{table}.tcp")
            elif key == "exe":
                if not isinstance(value, list) or not all(
                    isinstance(x, str) and x and "/" not in x for x in value
                ):
                    raise PolicyError(path, line, fname, "a list of executable names (no '/')")
                for x in value:
                    if x in exes:
                        raise PolicyError(path, line, fname, f"{x!r} is also in apps.{exes[x]}")
                    exes[x] = name
                app.exe = list(value)
            elif key in ("listen", "connect"):
                if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                    raise PolicyError(path, line, fname, "a list of strings")
                if len(value) > MAX_ENDPOINTS:
                    raise PolicyError(path, line, fname, f"at most {MAX_ENDPOINTS} entries")
                parse = parse_listen if key == "listen" else parse_connect
                eps = []
                for i, x in enumerate(value):
                    try:
                        eps.append(parse(x))
                    except ValueError as e:
                        raise PolicyError(path, line, f"{fname}[{i}]", str(e)) from e
                setattr(app, key, eps)
            else:
                raise PolicyError(path, line, fname, "unknown field (exe, listen, connect, tcp)")
        if not app.listen and not app.connect:
            raise PolicyError(path, loc.line_of(table), table, "lists neither listen nor connect")
        out[name] = app
    return out


def _tcp(value: Any, path: str, loc: _Locator, table: str) -> TcpOptions:
    if not isinstance(value, dict):
        raise PolicyError(path, loc.line_of(table), table, "must be a table")
    opts = TcpOptions()
    for key, v in value.items():
        fname = f"{table}.{key}"
        line = loc.line_of(table, key)
        want = TCP_TYPES.get(key)
        if want is None:
            raise PolicyError(path, line, fname, f"unknown option (one of {', '.join(TCP_TYPES)})")
        if type(v) is not want:
            raise PolicyError(path, line, fname, f"must be a {want.__name__}")
        if key == "congestion_control" and v not in CONGESTION_CONTROLS:
            raise PolicyError(path, line, fname, f"one of {', '.join(CONGESTION_CONTROLS)}")
        if key == "initial_window" and isinstance(v, int) and not 1 <= v <= 64:
            raise PolicyError(path, line, fname, "1 to 64 segments")
        setattr(opts, key, v)
    return opts


def load(path: Path) -> dict[str, AppPolicy]:
    try:
        text = path.read_text()
    except OSError as e:
        raise PolicyError(str(path), None, "", e.strerror or str(e)) from e
    return loads(text, str(path))


def select(apps: dict[str, AppPolicy], app: str | None, exe: str) -> AppPolicy | None:
    """The entry named by --app, else the one listing the executable's name."""
    if app is not None:
        return apps.get(app)
    base = Path(exe).name
    return next((a for a in apps.values() if base in a.exe), None)


def compact(app: AppPolicy) -> str:
    """The shim's form: `v=1;app=NAME;listen=NET/LEN:LO-HI,...;connect=...;cc=..;sack=0|1;
    ws=0|1;ts=0|1;iw=N;nodelay=0|1` (shim/policy.c parses exactly this)."""
    t = app.tcp
    fields = [
        f"v={COMPACT_VERSION}",
        f"app={app.name}",
        "listen=" + ",".join(e.compact() for e in app.listen),
        "connect=" + ",".join(e.compact() for e in app.connect),
        f"cc={t.congestion_control}",
        f"sack={int(t.sack)}",
        f"ws={int(t.window_scaling)}",
        f"ts={int(t.timestamps)}",
        f"iw={t.initial_window}",
        f"nodelay={int(t.nodelay)}",
    ]
    return ";".join(fields)
