"""The UTCP benchmark's JSON schema (`mstack-bench-utcp/1`, bench/utcp.py, docs/bench.md): a
document built the way `python -m bench utcp` builds it validates, medians and ratios to the
kernel come out right, and each kind of damage is named by the checker."""

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

from bench import utcp  # noqa: E402


def _run(bed: str, system: str, role: str, metric: str, rep: int, value: float,
         ok: bool = True) -> dict[str, Any]:  # fmt: skip
    return {
        "bed": bed, "system": system, "role": role, "metric": metric, "rep": rep, "ok": ok,
        "error": None if ok else "client exited 1", "value": value if ok else 0.0,
        "unit": utcp.METRICS[metric], "seconds": 0.5, "done": 100, "failed": 0, "detail": {},
    }  # fmt: skip


def small_doc() -> dict[str, Any]:
    runs = []
    for rep in range(3):
        runs += [
            _run("veth", "kernel", "client", "conns", rep, 30_000 + rep),
            _run("veth", "kernel", "server", "conns", rep, 20_000),
            _run("tap", "utcp", "client", "conns", rep, 45_000 - 1000 * rep),
            _run("xdp", "utcp", "server", "conns", rep, 10_000, ok=rep != 1),
            _run("pair", "utcp", "both", "conns", rep, 60_000),
            _run("veth", "kernel", "client", "bulk", rep, 10e9),
            _run("xdp", "utcp", "client", "bulk", rep, 4e9 + rep),
        ]
    return {
        "schema": utcp.SCHEMA_ID,
        "created": "2026-01-01T00:00:00Z",
        "duration_s": 80.0,
        "quick": True,
        "system": {"kernel": "6.1", "cpus": 2},
        "config": {k: 1 for k in utcp.CONFIG_KEYS},
        "runs": runs,
        "results": utcp.summarize(runs),
        "notes": [],
    }


def row(doc: dict[str, Any], bed: str, role: str, metric: str) -> dict[str, Any]:
    (r,) = [r for r in doc["results"] if (r["bed"], r["role"], r["metric"]) == (bed, role, metric)]
    return r


def test_a_well_formed_document_validates_and_survives_json() -> None:
    doc = small_doc()
    assert utcp.validate(doc) == []
    assert utcp.validate(json.loads(utcp.dumps(doc))) == []


def test_medians_and_ratios_to_the_kernel() -> None:
    doc = small_doc()
    k = row(doc, "veth", "client", "conns")
    assert k["median"] == 30_001 and k["ratio_to_kernel"] == 1.0
    t = row(doc, "tap", "client", "conns")
    assert t["values"] == [45_000, 44_000, 43_000] and t["median"] == 44_000
    assert t["min"] == 43_000 and t["max"] == 45_000
    assert t["ratio_to_kernel"] == pytest.approx(44_000 / 30_001)
    # A failed run counts as a repetition, not as a value.
    x = row(doc, "xdp", "server", "conns")
    assert x["repetitions"] == 3 and x["runs_ok"] == 2 and x["ratio_to_kernel"] == 0.5
    # pair has no kernel counterpart of its own: its ratio is to the kernel's client role.
    p = row(doc, "pair", "both", "conns")
    assert p["kernel_median"] == 30_001 and p["ratio_to_kernel"] == pytest.approx(2.0, 1e-3)
    b = row(doc, "xdp", "client", "bulk")
    assert b["unit"] == "bits_per_s" and b["ratio_to_kernel"] == pytest.approx(0.4)
    assert "tap" in utcp.table(doc) and "conn/s" in utcp.table(doc)


def test_a_role_without_a_kernel_row_has_no_ratio() -> None:
    runs = [_run("tap", "utcp", "server", "bulk", 0, 1e9)]
    (r,) = utcp.summarize(runs)
    assert r["kernel_median"] is None and r["ratio_to_kernel"] is None


def damage(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    obj: Any = d
    keys = path.split(".")
    for k in keys[:-1]:
        obj = obj[int(k)] if k.isdigit() else obj[k]
    last = keys[-1]
    if value is KeyError:
        del obj[last]
    else:
        obj[int(last) if last.isdigit() else last] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "expect"),
    [
        ("schema", "mstack-bench-utcp/2", "expected"),
        ("runs", KeyError, "missing 'runs'"),
        ("config.concurrency", KeyError, "missing 'concurrency'"),
        ("runs.0.bed", "loopback", "(bed, system)"),
        ("runs.0.role", "both", "role"),
        ("runs.0.metric", "latency", "metric"),
        ("runs.0.unit", "bits_per_s", "unit"),
        ("runs.0.value", -1.0, "negative"),
        ("runs.0.failed", 3, "ok, yet"),
        ("runs.0.error", "boom", "ok, yet"),
        ("runs.0.ok", "yes", "ok"),
        ("runs.0.seconds", True, "bool"),
        ("results.0.median", 1.0, "not the median"),
        ("results.0.max", 1.0, "min/max"),
        ("results.0.ratio_to_kernel", 0.9, "must say 1.0"),
        ("results.2.ratio_to_kernel", 0.9, "not median / kernel_median"),
        ("results.2.runs_ok", 2, "runs_ok"),
        ("results.2.values", ["x"], "not all numbers"),
        ("results.0.repetitions", 4, "repetitions"),
    ],
)
def test_each_kind_of_damage_is_named(path: str, value: Any, expect: str) -> None:
    errors = utcp.validate(damage(small_doc(), path, value))
    assert errors and any(expect in e for e in errors), errors


def test_a_failed_run_must_say_why() -> None:
    doc = small_doc()
    bad = next(r for r in doc["runs"] if not r["ok"])
    bad["error"] = None
    assert any("without an error" in e for e in utcp.validate(doc))
