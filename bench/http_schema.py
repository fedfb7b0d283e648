"""The HTTP benchmark's JSON (bench/results/http-<timestamp>.json, schema `mstack-bench-http/1`):
its keys, checked by hand like bench/schema.py (no jsonschema dependency), and the summary that
turns raw runs into medians and ratios to kernel nginx. docs/bench.md describes every key; this
module is the one place that fixes them."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from bench.schema import _check_keys, median_or_none

SCHEMA_ID = "mstack-bench-http/1"

# In the order of the table and the plot; the first is the reference of every ratio.
SYSTEMS = (
    "nginx-kernel",
    "nginx-kernel-switch",
    "httpd-kernel",
    "httpd-utcp",
    "nginx-mstack-run",
)
REFERENCE = "nginx-kernel"
# One request per connection; keep-alive. The harness runs keep-alive first: a server that
# cannot take new connections for a while after many closes still shows its keep-alive figures.
MODES = ("close", "keepalive")
STATUSES = ("ok", "failed", "skipped")
MAX_SIZE = 1 << 20

RUN_KEYS: dict[str, type | tuple[type, ...]] = {
    "system": str,
    "mode": str,
    "size": int,
    "rep": int,
    "ok": bool,
    "error": (str, type(None)),
    "seconds": float,
    "requests": int,
    "errors": int,
    "non_2xx": int,
    "rps": float,
    "cpu_s": float,
    "generator_cpu_s": float,
    "own_cpu_s": (float, type(None)),
    "server_cpu_s": float,
    "cpu_per_req_us": (float, type(None)),
    "cpu_per_req_own_us": (float, type(None)),
    "server_cpu_per_req_us": (float, type(None)),
}
LATENCY_KEYS: dict[str, type | tuple[type, ...]] = {
    "system": str,
    "mode": str,
    "size": int,
    "ok": bool,
    "error": (str, type(None)),
    "offered_rps": float,
    "achieved_rps": float,
    "requests": int,
    "errors": int,
    "non_2xx": int,
    "p50_us": (float, type(None)),
    "p90_us": (float, type(None)),
    "p99_us": (float, type(None)),
    "max_us": (float, type(None)),
    "connect_mean_us": (float, type(None)),
}
RESULT_KEYS: dict[str, type | tuple[type, ...]] = {
    "system": str,
    "mode": str,
    "size": int,
    "status": str,
    "reason": (str, type(None)),
    "repetitions": int,
    "runs_ok": int,
    "rps": list,
    "rps_median": (float, type(None)),
    "rps_min": (float, type(None)),
    "rps_max": (float, type(None)),
    "cpu_per_req_us": list,
    "cpu_per_req_us_median": (float, type(None)),
    "cpu_per_req_own_us_median": (float, type(None)),
    "server_cpu_per_req_us_median": (float, type(None)),
    "latency_offered_rps": (float, type(None)),
    "p50_us": (float, type(None)),
    "p90_us": (float, type(None)),
    "p99_us": (float, type(None)),
    "rps_ratio": (float, type(None)),
    "cpu_ratio": (float, type(None)),
    "cpu_own_ratio": (float, type(None)),
    "p99_ratio": (float, type(None)),
}
SYSTEM_ENTRY_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "status": str,
    "reason": (str, type(None)),
    "description": str,
    "url": str,
    "switch_attached": bool,
}
VERIFY_KEYS: dict[str, type | tuple[type, ...]] = {
    "system": str,
    "size": int,
    "when": str,
    "ok": bool,
    "detail": str,
}
TOP_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "created": str,
    "duration_s": float,
    "quick": bool,
    "machine": dict,
    "config": dict,
    "systems": list,
    "verify": list,
    "runs": list,
    "latency": list,
    "results": list,
    "notes": list,
}
MACHINE_KEYS = ("hostname", "kernel", "cpus", "cpu_model", "git_commit", "loadavg_start")
CONFIG_KEYS = (
    "sizes",
    "modes",
    "systems",
    "repetitions",
    "seconds",
    "connections",
    "latency_seconds",
    "latency_fraction",
    "latency_clients",
    "pinned",
    "rps_generator",
    "latency_generator",
    "cpu_counted",
)


_median = median_or_none


def summarize(
    systems: list[dict[str, Any]],
    sizes: list[int],
    modes: list[str],
    runs: list[dict[str, Any]],
    latency: list[dict[str, Any]],
    bad_bytes: dict[str, str],
) -> list[dict[str, Any]]:
    """One row per (mode, size, system). A run with errors counts as failed and is left out of
    every median; a row with any failed run, or whose system served wrong bytes (bad_bytes:
    system -> why), is "failed" and has no ratios. Ratios are to REFERENCE at the same size and
    mode, and only between two "ok" rows."""
    by_sys = {s["name"]: s for s in systems}
    rows: list[dict[str, Any]] = []
    for mode in modes:
        for size in sizes:
            block: list[dict[str, Any]] = []
            for s in systems:
                name = s["name"]
                key = (name, mode, size)
                mine = [r for r in runs if (r["system"], r["mode"], r["size"]) == key]
                ok = [r for r in mine if r["ok"]]
                lat = next((x for x in latency if (x["system"], x["mode"], x["size"]) == key), None)
                status, reason = "ok", None
                if by_sys[name]["status"] == "skipped":
                    status, reason = "skipped", by_sys[name]["reason"]
                elif name in bad_bytes:
                    status, reason = "failed", bad_bytes[name]
                elif not mine:
                    status, reason = "failed", "no run"
                elif len(ok) < len(mine):
                    first = next(r for r in mine if not r["ok"])
                    status = "failed"
                    reason = f"{len(mine) - len(ok)} of {len(mine)} runs failed: {first['error']}"
                elif lat is not None and not lat["ok"]:
                    status, reason = "failed", f"latency run failed: {lat['error']}"
                rps = [float(r["rps"]) for r in ok]
                cpu = [float(r["cpu_per_req_us"]) for r in ok if r["cpu_per_req_us"] is not None]
                own = [r["cpu_per_req_own_us"] for r in ok if r["cpu_per_req_own_us"] is not None]
                srv = [
                    r["server_cpu_per_req_us"] for r in ok if r["server_cpu_per_req_us"] is not None
                ]
                lat_ok = lat is not None and lat["ok"]
                block.append(
                    {
                        "system": name,
                        "mode": mode,
                        "size": size,
                        "status": status,
                        "reason": reason,
                        "repetitions": len(mine),
                        "runs_ok": len(ok),
                        "rps": rps,
                        "rps_median": _median(rps),
                        "rps_min": min(rps) if rps else None,
                        "rps_max": max(rps) if rps else None,
                        "cpu_per_req_us": cpu,
                        "cpu_per_req_us_median": _median(cpu),
                        "cpu_per_req_own_us_median": _median(own),
                        "server_cpu_per_req_us_median": _median(srv),
                        "latency_offered_rps": float(lat["offered_rps"]) if lat else None,
                        "p50_us": lat["p50_us"] if lat_ok and lat else None,
                        "p90_us": lat["p90_us"] if lat_ok and lat else None,
                        "p99_us": lat["p99_us"] if lat_ok and lat else None,
                        "rps_ratio": None,
                        "cpu_ratio": None,
                        "cpu_own_ratio": None,
                        "p99_ratio": None,
                    }
                )
            ref = next((r for r in block if r["system"] == REFERENCE), None)
            for r in block:
                if ref is None or ref["status"] != "ok" or r["status"] != "ok":
                    continue
                r["rps_ratio"] = _ratio(r["rps_median"], ref["rps_median"])
                r["cpu_ratio"] = _ratio(r["cpu_per_req_us_median"], ref["cpu_per_req_us_median"])
                r["cpu_own_ratio"] = _ratio(
                    r["cpu_per_req_own_us_median"], ref["cpu_per_req_own_us_median"]
                )
                r["p99_ratio"] = _ratio(r["p99_us"], ref["p99_us"])
            rows += block
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def percentile(sorted_xs: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of sorted values, nearest rank (a value that was measured)."""
    if not sorted_xs:
        return None
    k = max(0, min(len(sorted_xs) - 1, int(-(-q * len(sorted_xs) // 1)) - 1))
    return float(sorted_xs[k])


def _check_point(obj: dict[str, Any], where: str, errors: list[str]) -> None:
    if obj.get("system") not in SYSTEMS:
        errors.append(f"{where}.system: {obj.get('system')!r} not one of {SYSTEMS}")
    if obj.get("mode") not in MODES:
        errors.append(f"{where}.mode: {obj.get('mode')!r} not one of {MODES}")
    size = obj.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_SIZE:
        errors.append(f"{where}.size: {size!r} not in 1..{MAX_SIZE}")


def _nonneg(obj: dict[str, Any], keys: Iterable[str], where: str, errors: list[str]) -> None:
    for k in keys:
        v = obj.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
            errors.append(f"{where}.{k}: negative")


def validate(doc: Any) -> list[str]:
    """Every way doc departs from the schema (empty: it conforms)."""
    errors: list[str] = []
    _check_keys(doc, TOP_KEYS, "$", errors)
    if errors:
        return errors
    if doc["schema"] != SCHEMA_ID:
        errors.append(f"$.schema: {doc['schema']!r}, expected {SCHEMA_ID!r}")
    for k in MACHINE_KEYS:
        if k not in doc["machine"]:
            errors.append(f"$.machine: missing {k!r}")
    for k in CONFIG_KEYS:
        if k not in doc["config"]:
            errors.append(f"$.config: missing {k!r}")
    names = []
    for i, s in enumerate(doc["systems"]):
        where = f"$.systems[{i}]"
        _check_keys(s, SYSTEM_ENTRY_KEYS, where, errors)
        if not isinstance(s, dict):
            continue
        names.append(s.get("name"))
        if s.get("name") not in SYSTEMS:
            errors.append(f"{where}.name: {s.get('name')!r} not one of {SYSTEMS}")
        if s.get("status") not in STATUSES:
            errors.append(f"{where}.status: {s.get('status')!r} not one of {STATUSES}")
        if s.get("status") != "ok" and not s.get("reason"):
            errors.append(f"{where}: status {s.get('status')!r} without a reason")
    for i, v in enumerate(doc["verify"]):
        where = f"$.verify[{i}]"
        _check_keys(v, VERIFY_KEYS, where, errors)
        if isinstance(v, dict) and v.get("when") not in ("before", "after"):
            errors.append(f"{where}.when: {v.get('when')!r} not before/after")
    for i, r in enumerate(doc["runs"]):
        where = f"$.runs[{i}]"
        _check_keys(r, RUN_KEYS, where, errors)
        if not isinstance(r, dict):
            continue
        _check_point(r, where, errors)
        _nonneg(r, ("seconds", "requests", "errors", "non_2xx", "rps", "cpu_s"), where, errors)
        if r.get("ok") is True and (r.get("errors") or r.get("non_2xx") or not r.get("requests")):
            errors.append(f"{where}: ok with errors, non-2xx responses or no requests")
        if r.get("ok") is False and not r.get("error"):
            errors.append(f"{where}: failed without an error")
    for i, x in enumerate(doc["latency"]):
        where = f"$.latency[{i}]"
        _check_keys(x, LATENCY_KEYS, where, errors)
        if not isinstance(x, dict):
            continue
        _check_point(x, where, errors)
        _nonneg(x, ("offered_rps", "achieved_rps", "requests", "errors"), where, errors)
        ps = [x.get(k) for k in ("p50_us", "p90_us", "p99_us")]
        if x.get("ok") is True:
            if not all(isinstance(p, (int, float)) for p in ps):
                errors.append(f"{where}: ok without percentiles")
            elif not ps[0] <= ps[1] <= ps[2]:  # type: ignore[operator]
                errors.append(f"{where}: percentiles out of order")
    for i, r in enumerate(doc["results"]):
        where = f"$.results[{i}]"
        _check_keys(r, RESULT_KEYS, where, errors)
        if not isinstance(r, dict):
            continue
        _check_point(r, where, errors)
        st = r.get("status")
        if st not in STATUSES:
            errors.append(f"{where}.status: {st!r} not one of {STATUSES}")
        if st != "ok" and not r.get("reason"):
            errors.append(f"{where}: status {st!r} without a reason")
        rps = r.get("rps")
        if isinstance(rps, list):
            if len(rps) != r.get("runs_ok"):
                errors.append(f"{where}: runs_ok {r.get('runs_ok')} but {len(rps)} rps values")
            elif not all(isinstance(x, (int, float)) for x in rps):
                errors.append(f"{where}.rps: not all numbers")
            elif rps and isinstance(r.get("rps_median"), (int, float)):
                if abs(float(statistics.median(rps)) - r["rps_median"]) > 1e-6 * (
                    1 + r["rps_median"]
                ):
                    errors.append(f"{where}.rps_median: not the median of rps")
            elif rps:
                errors.append(f"{where}.rps_median: missing while there are runs")
        if st == "ok" and (r.get("rps_median") is None or r.get("p99_us") is None):
            errors.append(f"{where}: ok without rps_median or p99_us")
        ratios = ("rps_ratio", "cpu_ratio", "cpu_own_ratio", "p99_ratio")
        if st != "ok" and any(r.get(k) is not None for k in ratios):
            errors.append(f"{where}: a ratio on a row that is not ok")
        if r.get("system") == REFERENCE and st == "ok" and r.get("rps_ratio") != 1.0:
            errors.append(f"{where}: the reference's rps_ratio is not 1")
        n_ok, n = r.get("runs_ok"), r.get("repetitions")
        if isinstance(n_ok, int) and isinstance(n, int) and n_ok > n:
            errors.append(f"{where}: runs_ok > repetitions")
    if not all(isinstance(n, str) for n in doc["notes"]):
        errors.append("$.notes: not all strings")
    return errors
