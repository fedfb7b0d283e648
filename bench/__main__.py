"""`python -m bench [http|switch|utcp [OPTIONS]]` — the benchmark harness (docs/bench.md).

  http    requests/s, CPU per request and latency of kernel nginx, mstack-httpd on the kernel
          and on UTCP, nginx under mstack-run (the paper's Figure 6)
  switch  frames/s through the switch against limit lines, and the attach cost (Figure 4)
  utcp    UTCP's own benchmark

`make bench` runs `python -m bench` with no arguments: each of them in its short form
(`--quick`), in that order; one that fails does not stop the others, and the exit status is
the worst of theirs. A benchmark whose module is not there yet is said to be skipped."""

import importlib
import importlib.util
import sys
from collections.abc import Sequence

# name -> module with main(argv) -> int; imported only when run (each pulls in its own tools).
BENCHMARKS = {"switch": "bench.switch", "http": "bench.http", "utcp": "bench.utcp"}
DEFAULT_ORDER = ("http", "switch", "utcp")


def available(name: str) -> bool:
    return importlib.util.find_spec(BENCHMARKS[name]) is not None


def run(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(BENCHMARKS[name])
    return int(module.main(list(argv)))


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if args and args[0] in ("-h", "--help"):
        print((__doc__ or "").strip())
        return 0
    if not args:
        worst = 0
        for name in DEFAULT_ORDER:
            if not available(name):
                print(f"bench: {name}: skipped ({BENCHMARKS[name]} is not there yet)", flush=True)
                continue
            print(f"bench: running `{name} --quick`", flush=True)
            rc = run(name, ["--quick"])
            if rc != 0:
                print(f"bench: {name} --quick exited with status {rc}", flush=True)
            worst = max(worst, rc)
        return worst
    name = args[0]
    if name not in BENCHMARKS:
        print(f"bench: unknown benchmark {name!r} (one of: {', '.join(BENCHMARKS)})",
              file=sys.stderr)  # fmt: skip
        return 64  # EX_USAGE
    if not available(name):
        print(f"bench: {name}: {BENCHMARKS[name]} is not there yet", file=sys.stderr)
        return 69  # EX_UNAVAILABLE
    return run(name, args[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
