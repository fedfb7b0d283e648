"""The Python scenarios' program: `run.py NAME` plays one scenario, `run.py --list` prints the
table (name, side, differential or shim-only, what it exercises). Exit status 1 when an
expectation failed; the harness reads the JSON lines on stdout."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import sc_asyncio  # noqa: F401
import sc_http  # noqa: F401
import sc_selectors  # noqa: F401
import sc_socket  # noqa: F401


def main(argv: list[str]) -> int:
    if argv == ["--list"]:
        for name, (_, kind, diff, about) in common.REGISTRY.items():
            print(name, kind, "differential" if diff else "shim-only", about)
        return 0
    if len(argv) != 1 or argv[0] not in common.REGISTRY:
        print(f"usage: run.py --list | NAME (one of {', '.join(common.REGISTRY)})",
              file=sys.stderr)  # fmt: skip
        return 2
    signal.alarm(60)  # a watchdog: a scenario that hangs dies instead of blocking the suite
    env = common.load_env()
    peer = common.Peer(env.peer_path)
    fn = common.REGISTRY[argv[0]][0]
    fn(env, peer)
    if common.n_expects == 0:
        common.expect(False, "the scenario checked something")
    return 1 if common.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
