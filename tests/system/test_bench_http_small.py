"""`python -m bench http` end to end in its smallest form (1 KB, one repetition of one second,
kernel nginx and mstack-httpd on the kernel and on UTCP): it runs to the end, writes JSON that
follows the schema (bench/http_schema.py, docs/bench.md), prints its table, verified every body
before and after, and — like every system test — leaves nothing behind (the session's leak
check). Nothing is asserted about speed, nor that UTCP's figures are good: only that each
system was measured or failed with a reason, and the figures are consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import http_schema as schema  # noqa: E402

SYSTEMS = ["nginx-kernel", "httpd-kernel", "httpd-utcp"]


def test_small_http_bench_writes_valid_json(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the HTTP benchmark needs root")
    exe = BUILD / "bin" / "mstack-httpd"
    assert exe.exists(), f"{exe} missing: make build BUILD={BUILD}"
    argv = [
        sys.executable, "-m", "bench", "http", "--sizes", "1", "--reps", "1", "--seconds", "1",
        "--latency-seconds", "1", "--systems", ",".join(SYSTEMS), "--out", str(tmp_path),
        "--no-plot",
    ]  # fmt: skip
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    files = list(tmp_path.glob("http-*.json"))
    assert len(files) == 1, files
    doc = json.loads(files[0].read_text())
    assert schema.validate(doc) == []
    assert doc["config"]["sizes"] == [1024] and doc["config"]["systems"] == SYSTEMS
    assert [s["name"] for s in doc["systems"]] == SYSTEMS
    # One row per system and mode; every one measured or failed with a reason.
    assert {(r["system"], r["mode"]) for r in doc["results"]} == {
        (s, m) for s in SYSTEMS for m in schema.MODES
    }
    # The kernel servers are the reference: they must work on any machine that runs this.
    for r in doc["results"]:
        if r["system"] != "httpd-utcp":
            assert r["status"] == "ok", r
            assert r["rps_median"] > 0 and r["cpu_per_req_us_median"] > 0, r
            assert 0 < r["p50_us"] <= r["p90_us"] <= r["p99_us"], r
        else:
            assert r["status"] == "ok" or r["reason"], r
    assert doc["results"][0]["rps_ratio"] == 1.0  # nginx-kernel, close: the reference
    # Bodies were fetched and compared before and after, for every system.
    checked = {(v["system"], v["when"]) for v in doc["verify"]}
    assert checked == {(s, w) for s in SYSTEMS for w in ("before", "after")}
    assert all(v["ok"] for v in doc["verify"] if v["system"] != "httpd-utcp"), doc["verify"]
    assert all(v["ok"] for v in doc["verify"] if v["when"] == "before"), doc["verify"]
    # Latency ran at one offered rate per mode for every system that answered.
    rates = {x["mode"]: x["offered_rps"] for x in doc["latency"]}
    for x in doc["latency"]:
        assert x["offered_rps"] == rates[x["mode"]]
    assert "nginx-kernel" in out.stdout and "bodies verified" in out.stdout
