"""`make demo` end to end (scripts/demo.py): it must pass, within its time budget, on the
product's runtime dependencies only (pytest made unimportable in it), and leave nothing behind
— no namespace, link or BPF pin of its run, no nginx process of its prefix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from testbed.netns import RUN_ID_ENV, free_run_id, ip_json, netns_list

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo.py"
BUDGET_S = 150  # the demo's own part; the brief is "well under 5 minutes" with the build

# Runs the demo as `python scripts/demo.py` would, with `import pytest` failing.
NO_PYTEST = (
    "import runpy, sys; sys.modules['pytest'] = None; sys.argv = [sys.argv[1]]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def leftovers(rid: str, prefixes: list[str]) -> list[str]:
    mark = f"mst{rid}-"
    out = [f"namespace {n}" for n in netns_list() if n.startswith(mark)]
    out += [f"link {lk['ifname']}" for lk in ip_json("link", "show")
            if lk["ifname"].startswith(mark)]  # fmt: skip
    bpf = Path("/sys/fs/bpf")
    if bpf.is_dir():
        out += [f"pin {p}" for p in bpf.iterdir() if p.name.startswith(mark)]
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "nginx" in line and any(p in line for p in prefixes):
            out.append(f"process {proc.pid} {line[:80]}")
    return out


def test_demo_end_to_end() -> None:
    if os.geteuid() != 0:
        pytest.skip("the demo needs root")
    for prog in ("/usr/sbin/nginx", "/usr/bin/curl", "/usr/bin/wrk"):
        if not Path(prog).exists():
            pytest.skip(f"{prog} is not installed (make deps)")
    rid = free_run_id()  # the demo's objects carry this run id: checked below
    env = {**os.environ, RUN_ID_ENV: rid}
    t0 = time.monotonic()
    cp = subprocess.run([sys.executable, "-c", NO_PYTEST, str(DEMO)], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=BUDGET_S + 120)  # fmt: skip
    took = time.monotonic() - t0
    out = cp.stdout + cp.stderr
    prefixes = sorted(set(re.findall(r" -p (/\S+)", out)))
    left = leftovers(rid, prefixes)
    assert cp.returncode == 0, f"demo exited {cp.returncode}:\n{out}"
    assert not left, f"the demo left behind: {left}\n{out}"
    for n in range(1, 10):
        assert f"[{n}/9] " in cp.stdout, f"step {n} missing:\n{out}"
    assert "FAILED" not in cp.stdout, out
    assert re.search(r"result: OK — \d+ checks passed, 0 failed", cp.stdout), out
    assert "ESTABLISHED" in cp.stdout and "cubic" in cp.stdout, out  # mstackctl conns
    assert prefixes, f"no nginx command line in the output:\n{out}"
    assert took < BUDGET_S, f"the demo took {took:.0f} s (budget {BUDGET_S} s)"
