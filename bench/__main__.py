"""`make bench`: reserved. The benchmark (the paper's Figures 4 and 6 measured here: requests/s,
CPU per request and latency for mstack-httpd on UTCP against kernel nginx; frames/s through the
switch) arrives with the mstack-httpd and benchmark issue, once the switch and UTCP exist."""

import sys


def main() -> int:
    print(__doc__.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
