"""`python -m bench [switch [OPTIONS]]` — the benchmark harness (docs/bench.md).

`make bench` runs `python -m bench` with no arguments: the switch benchmark in its short form
(`switch --quick`). The HTTP benchmark (mstack-httpd on UTCP against kernel nginx: requests/s,
CPU per request, latency; the paper's Figure 6) is not there yet: it arrives with mstack-httpd."""

import sys
from collections.abc import Sequence

HTTP_NOT_YET = (
    "bench: the HTTP benchmark (mstack-httpd against kernel nginx, the paper's Figure 6) "
    "is not there yet; it arrives with mstack-httpd."
)


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if not args:
        print(HTTP_NOT_YET, flush=True)
        print("bench: running the switch benchmark in its short form (switch --quick)", flush=True)
        args = ["switch", "--quick"]
    if args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if args[0] == "switch":
        from bench import switch

        return switch.main(args[1:])
    if args[0] == "http":
        print(HTTP_NOT_YET, file=sys.stderr)
        return 69  # EX_UNAVAILABLE
    print(f"bench: unknown benchmark {args[0]!r} (switch; http is not there yet)", file=sys.stderr)
    return 64  # EX_USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
