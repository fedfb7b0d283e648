"""The client side of mstackd's admin.sock: one JSON request, one JSON reply, over a
SOCK_SEQPACKET unix socket. Errors come back as AdminError with the daemon's words."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path
from typing import Any

MAX_REPLY = 1 << 20


class AdminError(Exception):
    def __init__(self, message: str, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


def request(run_dir: Path, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
    path = run_dir / "admin.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except FileNotFoundError as e:
            raise AdminError(f"mstackd is not running ({path} does not exist)", True) from e
        except ConnectionRefusedError as e:
            raise AdminError(f"mstackd is not running (nobody serves {path})", True) from e
        except PermissionError as e:
            raise AdminError(f"{path}: permission denied (root or the admin group)") from e
        try:
            s.send(json.dumps({"cmd": cmd, **args}).encode())
            raw = s.recv(MAX_REPLY)
        except TimeoutError as e:
            raise AdminError(f"mstackd did not answer within {timeout} s", True) from e
        except OSError as e:
            raise AdminError(f"talking to mstackd: {e}", e.errno == errno.ECONNRESET) from e
    if not raw:
        raise AdminError("mstackd closed the connection (refused: root or the admin group)")
    out = json.loads(raw)
    if not out.get("ok"):
        raise AdminError(str(out.get("error", "unknown error")))
    return out["result"]
