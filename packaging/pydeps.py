"""The Python distribution's run-time dependencies (pyproject.toml) as Debian Depends: each is
Debian's python3-<name> with the same lower bound, except what the package vendors.
Usage: python3 packaging/pydeps.py pyproject.toml"""

from __future__ import annotations

import re
import sys
import tomllib

VENDORED = {"pyroute2"}  # Debian 12 has 0.7.2; mstackd needs 0.9 (docs/packaging.md)


def debian_depends(requirements: list[str]) -> list[str]:
    out = []
    for req in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(?:>=\s*([0-9.]+))?", req.strip())
        if not m:
            raise SystemExit(f"pydeps: cannot map the dependency {req!r} to a Debian package")
        name, low = m.group(1).lower(), m.group(2)
        if name not in VENDORED:
            out.append(f"python3-{name}" + (f" (>= {low})" if low else ""))
    return out


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        reqs = tomllib.load(f)["project"]["dependencies"]
    print(", ".join(debian_depends(reqs)))
