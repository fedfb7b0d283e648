"""The HTTP benchmark's JSON schema (bench/http_schema.py, docs/bench.md): a document built the
way `python -m bench http` builds it validates; medians, failed runs and ratios to kernel nginx
come out right; each kind of damage is named; the table and the JSON writer keep every row."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import http_schema as schema  # noqa: E402
from bench.http import dumps, table  # noqa: E402

SIZES = [1024, 32768]
MODES = ["close", "keepalive"]
MEASURED = ["nginx-kernel", "httpd-kernel", "httpd-utcp"]
# requests/s per system at 1 KB; 32 KB is half of it
RPS = {"nginx-kernel": 10_000.0, "httpd-kernel": 12_000.0, "httpd-utcp": 15_000.0}


def _run(
    system: str, mode: str, size: int, rep: int, rps: float, ok: bool = True
) -> dict[str, Any]:
    requests = int(rps * 2)
    return {
        "system": system, "mode": mode, "size": size, "rep": rep, "ok": ok,
        "error": None if ok else "wrk: 3 timeouts", "seconds": 2.0, "requests": requests,
        "errors": 0 if ok else 3, "non_2xx": 0, "rps": rps, "cpu_s": 1.5,
        "generator_cpu_s": 0.5, "own_cpu_s": 0.4, "server_cpu_s": 0.3,
        "cpu_per_req_us": 1e6 / requests, "cpu_per_req_own_us": 0.4e6 / requests,
        "server_cpu_per_req_us": 0.3e6 / requests,
    }  # fmt: skip


def _lat(system: str, mode: str, size: int, p99: float, ok: bool = True) -> dict[str, Any]:
    return {
        "system": system, "mode": mode, "size": size, "ok": ok,
        "error": None if ok else "3 timeouts", "offered_rps": 5000.0, "achieved_rps": 4990.0,
        "requests": 5000, "errors": 0 if ok else 3, "non_2xx": 0, "p50_us": p99 / 4,
        "p90_us": p99 / 2, "p99_us": p99, "max_us": p99 * 2, "connect_mean_us": 40.0,
    }  # fmt: skip


def _systems() -> list[dict[str, Any]]:
    out = [
        {"name": n, "status": "ok", "reason": None, "description": n,
         "url": "http://198.18.0.1:8080/", "switch_attached": n == "httpd-utcp"}
        for n in MEASURED
    ]  # fmt: skip
    out.append({"name": "nginx-mstack-run", "status": "skipped",
                "reason": "UTCP did not carry its connections", "description": "x",
                "url": "http://198.18.0.1:8083/", "switch_attached": True})  # fmt: skip
    return out


def small_doc(fail_run: bool = False, bad_bytes: dict[str, str] | None = None) -> dict[str, Any]:
    runs, latency = [], []
    for mode in MODES:
        for size in SIZES:
            scale = 1.0 if size == 1024 else 0.5
            for rep in range(3):
                for name in MEASURED:
                    bad = fail_run and (name, mode, size, rep) == ("httpd-utcp", "close", 1024, 1)
                    ok = not bad
                    runs.append(_run(name, mode, size, rep, RPS[name] * scale + rep, ok))
            for name in MEASURED:
                latency.append(_lat(name, mode, size, 1000.0 if name == "nginx-kernel" else 500.0))
    systems = _systems()
    verify = [
        {"system": n, "size": s, "when": w, "ok": True, "detail": f"{s} bytes, sha256 ok"}
        for n in MEASURED for s in SIZES for w in ("before", "after")
    ]  # fmt: skip
    return {
        "schema": schema.SCHEMA_ID,
        "created": "2026-01-01T00:00:00Z",
        "duration_s": 99.5,
        "quick": True,
        "machine": {k: "x" for k in schema.MACHINE_KEYS} | {"cpus": 2, "kernel": "6.x"},
        "config": {k: 1 for k in schema.CONFIG_KEYS}
        | {"sizes": SIZES, "modes": MODES, "latency_fraction": 0.5, "connections": 16},
        "systems": systems,
        "verify": verify,
        "runs": runs,
        "latency": latency,
        "results": schema.summarize(systems, SIZES, MODES, runs, latency, bad_bytes or {}),
        "notes": [],
    }


def _row(doc: dict[str, Any], system: str, mode: str = "close", size: int = 1024) -> dict[str, Any]:
    rows = [
        r for r in doc["results"] if (r["system"], r["mode"], r["size"]) == (system, mode, size)
    ]
    assert len(rows) == 1, rows
    return rows[0]


def test_a_document_built_like_the_harness_builds_it_validates() -> None:
    doc = small_doc()
    assert schema.validate(doc) == []
    assert schema.validate(json.loads(json.dumps(doc))) == []
    assert schema.validate(json.loads(dumps(doc))) == []


def test_a_row_per_mode_size_and_system() -> None:
    doc = small_doc()
    assert len(doc["results"]) == len(MODES) * len(SIZES) * (len(MEASURED) + 1)


def test_medians_and_ratios_to_kernel_nginx() -> None:
    doc = small_doc()
    ref = _row(doc, "nginx-kernel")
    assert ref["status"] == "ok" and ref["rps_median"] == 10_001.0
    assert ref["rps_ratio"] == 1.0 and ref["cpu_ratio"] == 1.0 and ref["p99_ratio"] == 1.0
    u = _row(doc, "httpd-utcp")
    assert u["repetitions"] == 3 and u["runs_ok"] == 3 and u["rps_median"] == 15_001.0
    assert u["rps_ratio"] == pytest.approx(15_001 / 10_001)
    assert u["cpu_ratio"] == pytest.approx(
        u["cpu_per_req_us_median"] / ref["cpu_per_req_us_median"]
    )
    assert u["cpu_own_ratio"] == pytest.approx(u["cpu_ratio"])  # both scale with 1/requests
    assert u["p99_ratio"] == 0.5 and u["p99_us"] == 500.0 and u["p50_us"] == 125.0
    big = _row(doc, "httpd-kernel", "keepalive", 32768)
    assert big["rps_median"] == 6_001.0  # its own size and mode, not another's


def test_a_failed_run_is_not_averaged_and_fails_its_row() -> None:
    doc = small_doc(fail_run=True)
    assert schema.validate(doc) == []
    u = _row(doc, "httpd-utcp")
    assert u["status"] == "failed" and "1 of 3 runs failed" in u["reason"]
    assert u["runs_ok"] == 2 and u["rps"] == [15_000.0, 15_002.0] and u["rps_median"] == 15_001.0
    assert u["rps_ratio"] is None and u["cpu_ratio"] is None and u["p99_ratio"] is None
    assert _row(doc, "httpd-utcp", "keepalive")["status"] == "ok"  # only that size and mode


def test_wrong_bytes_fail_every_row_of_the_system() -> None:
    doc = small_doc(bad_bytes={"httpd-kernel": "wrong bytes (before, 1024 B)"})
    rows = [r for r in doc["results"] if r["system"] == "httpd-kernel"]
    assert rows and all(r["status"] == "failed" and "wrong bytes" in r["reason"] for r in rows)
    assert all(r["rps_ratio"] is None for r in rows)


def test_a_failed_reference_leaves_no_ratios() -> None:
    runs = [_run("nginx-kernel", "close", 1024, 0, 1.0, ok=False),
            _run("httpd-utcp", "close", 1024, 0, 5.0)]  # fmt: skip
    lat = [_lat("httpd-utcp", "close", 1024, 100.0)]
    systems = [s for s in _systems() if s["name"] in ("nginx-kernel", "httpd-utcp")]
    rows = schema.summarize(systems, [1024], ["close"], runs, lat, {})
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert rows[1]["rps_ratio"] is None


def test_skipped_system_keeps_its_reason() -> None:
    r = _row(small_doc(), "nginx-mstack-run")
    assert r["status"] == "skipped" and "UTCP did not carry" in r["reason"]
    assert r["repetitions"] == 0 and r["rps_median"] is None


def test_percentile_is_a_measured_value() -> None:
    xs = [float(x) for x in range(1, 101)]
    assert schema.percentile(xs, 0.5) == 50.0
    assert schema.percentile(xs, 0.99) == 99.0
    assert schema.percentile(xs, 1.0) == 100.0
    assert schema.percentile([7.0], 0.99) == 7.0
    assert schema.percentile([], 0.5) is None


@pytest.mark.parametrize(
    "damage, expect",
    [
        (lambda d: d.pop("latency"), "missing 'latency'"),
        (lambda d: d.update(schema="mstack-bench-switch/1"), "$.schema"),
        (lambda d: d["machine"].pop("kernel"), "missing 'kernel'"),
        (lambda d: d["config"].pop("latency_fraction"), "missing 'latency_fraction'"),
        (lambda d: d["systems"][0].update(status="maybe"), "status"),
        (lambda d: d["systems"][3].update(reason=None), "without a reason"),
        (lambda d: d["systems"][0].update(name="apache"), "name"),
        (lambda d: d["verify"][0].update(when="during"), "when"),
        (lambda d: d["runs"][0].update(mode="pipelined"), "mode"),
        (lambda d: d["runs"][0].update(system="apache"), "system"),
        (lambda d: d["runs"][0].update(size=0), "size"),
        (lambda d: d["runs"][0].update(rps="fast"), "$.runs[0].rps"),
        (lambda d: d["runs"][0].update(rps=-1.0), "negative"),
        (lambda d: d["runs"][0].update(requests=True), "bool"),
        (lambda d: d["runs"][0].update(errors=2), "ok with errors"),
        (lambda d: d["runs"][0].update(ok=False, error=None), "failed without an error"),
        (lambda d: d["latency"][0].update(p50_us=None), "ok without percentiles"),
        (lambda d: d["latency"][0].update(p90_us=1e9), "out of order"),
        (lambda d: d["results"][0].update(runs_ok=7), "runs_ok"),
        (lambda d: d["results"][1].update(rps_median=1.0), "not the median"),
        (lambda d: d["results"][0].update(status="failed", reason="x"), "ratio on a row"),
        (lambda d: d["results"][0].update(rps_ratio=0.9), "reference"),
        (lambda d: d["results"][1].update(status="failed", reason=None), "without a reason"),
        (lambda d: d["results"][1].pop("cpu_own_ratio"), "cpu_own_ratio"),
        (lambda d: d["results"][1].update(p99_us=None, p99_ratio=None), "without rps_median"),
        (lambda d: d.update(notes=[1]), "notes"),
        (lambda d: d.update(runs={}), "$.runs"),
    ],
)
def test_damage_is_named(damage: Any, expect: str) -> None:
    doc = copy.deepcopy(small_doc())
    damage(doc)
    errors = schema.validate(doc)
    assert errors and any(expect in e for e in errors), errors


def test_not_a_document() -> None:
    assert schema.validate([]) == ["$: not an object"]


def test_table_has_every_measured_row_and_the_skip() -> None:
    doc = small_doc(fail_run=True)
    out = table(doc)
    lines = out.splitlines()
    for name in MEASURED:
        assert sum(1 for ln in lines if f" {name} " in ln) == len(MODES) * len(SIZES), name
    assert sum(1 for ln in lines if "nginx-mstack-run" in ln and "skipped" in ln) == len(MODES)
    assert "failed: 1 of 3 runs failed" in out
    assert "bodies verified" in out and f"{len(doc['verify'])} of {len(doc['verify'])}" in out


@pytest.mark.parametrize(
    "path", sorted((REPO / "bench" / "results").glob("http-*.json")), ids=lambda p: p.name
)
def test_stored_results_follow_the_schema(path: Path) -> None:
    assert schema.validate(json.loads(path.read_text())) == []
