"""The switch benchmark's JSON (bench/results/switch-<timestamp>.json): its schema, checked by
hand (no jsonschema dependency), and the summary that turns raw runs into medians and ratios.
docs/bench.md describes every key; this module is the one place that fixes them."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

SCHEMA_ID = "mstack-bench-switch/1"

DIRECTIONS = ("nic_to_port", "port_to_nic")
# The switch's own figures and the limit line measured beside them in the same run.
SYSTEMS = {
    "nic_to_port": ("switch", "limit_xdp_drop"),
    "port_to_nic": ("switch", "switch_xdp", "limit_xsk_tx"),
}
# The switch's own figures: "switch" as mstackd runs it by default (port -> NIC by the TC path),
# "switch_xdp" the same ports with the XDP egress fast path turned on at run time (DEVMAP to
# the NIC), measured only where its probe lets it on.
SWITCHES = ("switch", "switch_xdp")
LIMIT = {"nic_to_port": "limit_xdp_drop", "port_to_nic": "limit_xsk_tx"}

RUN_KEYS: dict[str, type | tuple[type, ...]] = {
    "direction": str,
    "system": str,
    "size": int,
    "ports_attached": int,
    "ports_used": int,
    "rep": int,
    "seconds": float,
    "sent": int,
    "delivered": int,
    "switched": int,
    "fps": float,
    "switched_fps": float,
    "offered_fps": float,
    "detail": dict,
}
RESULT_KEYS: dict[str, type | tuple[type, ...]] = {
    "direction": str,
    "system": str,
    "size": int,
    "ports_attached": int,
    "ports_used": int,
    "repetitions": int,
    "fps": list,
    "median_fps": float,
    "min_fps": float,
    "max_fps": float,
    "median_offered_fps": float,
    "median_switched_fps": float,
    "limit_median_fps": (float, type(None)),
    "ratio_to_limit": (float, type(None)),
    "switched_ratio_to_limit": (float, type(None)),
    "ratio_to_one_port": (float, type(None)),
    "switched_ratio_to_one_port": (float, type(None)),
}
ATTACH_KEYS: dict[str, type | tuple[type, ...]] = {
    "bytes": int,
    "mode": str,
    "repetitions": int,
    "detached_s": list,
    "attached_s": list,
    "median_detached_s": float,
    "median_attached_s": float,
    "rate_ratio": float,
    "modes": list,
}
MODE_KEYS: dict[str, type | tuple[type, ...]] = {
    "mode": str,
    "repetitions": int,
    "attached_s": list,
    "median_attached_s": float,
    "rate_ratio": float,
}
TOP_KEYS: dict[str, type | tuple[type, ...]] = {
    "schema": str,
    "created": str,
    "duration_s": float,
    "quick": bool,
    "system": dict,
    "config": dict,
    "runs": list,
    "results": list,
    "attach_cost": (dict, type(None)),
    "notes": list,
}
SYSTEM_KEYS = ("hostname", "kernel", "cpus", "cpu_model", "git_commit", "loadavg_start")
CONFIG_KEYS = (
    "sizes",
    "ports_attached",
    "ports_used",
    "repetitions",
    "seconds",
    "bulk_bytes",
    "port_frames",
    "port_ring",
    "pinned",
    "generator",
)


def _median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


def median_or_none(xs: Iterable[float]) -> float | None:
    """The median, or None for no values (a system whose every run failed)."""
    v = list(xs)
    return float(statistics.median(v)) if v else None


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (direction, system, size, ports attached, ports used): the repetitions,
    their median, and ratios to the limit line measured in the same phase (same direction,
    size and ports attached) and to the 1-port-attached, 1-port-used switch figure."""
    groups: dict[tuple[str, str, int, int, int], list[dict[str, Any]]] = {}
    for r in runs:
        key = (r["direction"], r["system"], r["size"], r["ports_attached"], r["ports_used"])
        groups.setdefault(key, []).append(r)
    medians = {k: _median(x["fps"] for x in v) for k, v in groups.items()}
    rows = []
    for key in sorted(groups, key=lambda k: (DIRECTIONS.index(k[0]), k[2], k[3], k[1], k[4])):
        direction, system, size, attached, used = key
        fps = [float(x["fps"]) for x in groups[key]]
        med = medians[key]
        sw = _median(float(x["switched_fps"]) for x in groups[key])
        limit = None
        if system in SWITCHES:
            limit = next(
                (m for k, m in medians.items() if k[:4] == (direction, LIMIT[direction], size,
                                                              attached)),
                None,
            )  # fmt: skip
        one_key = (direction, system, size, 1, 1)
        one = medians.get(one_key) if system in SWITCHES else None
        one_sw = (
            _median(float(x["switched_fps"]) for x in groups[one_key])
            if system in SWITCHES and one_key in groups
            else None
        )
        rows.append(
            {
                "direction": direction,
                "system": system,
                "size": size,
                "ports_attached": attached,
                "ports_used": used,
                "repetitions": len(fps),
                "fps": fps,
                "median_fps": med,
                "min_fps": min(fps),
                "max_fps": max(fps),
                "median_offered_fps": _median(float(x["offered_fps"]) for x in groups[key]),
                "median_switched_fps": sw,
                "limit_median_fps": limit,
                "ratio_to_limit": med / limit if limit else None,
                "switched_ratio_to_limit": sw / limit if limit else None,
                "ratio_to_one_port": med / one if one else None,
                "switched_ratio_to_one_port": sw / one_sw if one_sw else None,
            }
        )
    return rows


def attach_summary(
    bytes_: int, detached: list[float], attached: dict[str, list[float]]
) -> dict[str, Any]:
    """attached: seconds per attach mode, the daemon's default mode first. The top-level
    mode/attached_s/median_attached_s/rate_ratio are that default mode's; `modes` has all."""
    md = _median(detached)
    modes: list[dict[str, Any]] = []
    for mode, xs in attached.items():
        ma = _median(xs)
        modes.append(
            {
                "mode": mode,
                "repetitions": len(xs),
                "attached_s": xs,
                "median_attached_s": ma,
                # Throughput with the switch attached as a fraction of throughput without it.
                "rate_ratio": md / ma if ma > 0 else 0.0,
            }
        )
    first = modes[0]
    return {
        "bytes": bytes_,
        "mode": first["mode"],
        "repetitions": min(len(detached), first["repetitions"]),
        "detached_s": detached,
        "attached_s": first["attached_s"],
        "median_detached_s": md,
        "median_attached_s": first["median_attached_s"],
        "rate_ratio": first["rate_ratio"],
        "modes": modes,
    }


def _check_keys(
    obj: Any, keys: dict[str, type | tuple[type, ...]], where: str, errors: list[str]
) -> None:
    if not isinstance(obj, dict):
        errors.append(f"{where}: not an object")
        return
    for k, t in keys.items():
        if k not in obj:
            errors.append(f"{where}: missing {k!r}")
            continue
        v = obj[k]
        ok_types = t if isinstance(t, tuple) else (t,)
        # JSON has one number type: an int is a valid float; a bool is no int.
        if float in ok_types and isinstance(v, int) and not isinstance(v, bool):
            continue
        if isinstance(v, bool) and bool not in ok_types:
            errors.append(f"{where}.{k}: bool where {t} was expected")
        elif not isinstance(v, ok_types):
            errors.append(f"{where}.{k}: {type(v).__name__} where {t} was expected")


def _check_point(obj: dict[str, Any], where: str, errors: list[str]) -> None:
    d = obj.get("direction")
    if d not in DIRECTIONS:
        errors.append(f"{where}.direction: {d!r} not one of {DIRECTIONS}")
        return
    if obj.get("system") not in SYSTEMS[d]:
        errors.append(f"{where}.system: {obj.get('system')!r} not one of {SYSTEMS[d]}")
    size = obj.get("size")
    if not isinstance(size, int) or not 60 <= size <= 1514:
        errors.append(f"{where}.size: {size!r} not in 60..1514")
    a, u = obj.get("ports_attached"), obj.get("ports_used")
    if isinstance(a, int) and isinstance(u, int) and not 1 <= u <= max(a, 1):
        errors.append(f"{where}: ports_used {u} not in 1..ports_attached {a}")


def validate(doc: Any) -> list[str]:
    """Every way doc departs from the schema (empty: it conforms)."""
    errors: list[str] = []
    _check_keys(doc, TOP_KEYS, "$", errors)
    if errors:
        return errors
    if doc["schema"] != SCHEMA_ID:
        errors.append(f"$.schema: {doc['schema']!r}, expected {SCHEMA_ID!r}")
    for k in SYSTEM_KEYS:
        if k not in doc["system"]:
            errors.append(f"$.system: missing {k!r}")
    for k in CONFIG_KEYS:
        if k not in doc["config"]:
            errors.append(f"$.config: missing {k!r}")
    for i, r in enumerate(doc["runs"]):
        where = f"$.runs[{i}]"
        _check_keys(r, RUN_KEYS, where, errors)
        if isinstance(r, dict):
            _check_point(r, where, errors)
            for k in ("fps", "switched_fps", "offered_fps", "seconds"):
                if isinstance(r.get(k), (int, float)) and r[k] < 0:
                    errors.append(f"{where}.{k}: negative")
    for i, r in enumerate(doc["results"]):
        where = f"$.results[{i}]"
        _check_keys(r, RESULT_KEYS, where, errors)
        if not isinstance(r, dict):
            continue
        _check_point(r, where, errors)
        fps = r.get("fps")
        if isinstance(fps, list):
            if len(fps) != r.get("repetitions") or not fps:
                errors.append(f"{where}: repetitions {r.get('repetitions')} but {len(fps)} fps")
            elif not all(isinstance(x, (int, float)) for x in fps):
                errors.append(f"{where}.fps: not all numbers")
            elif isinstance(r.get("median_fps"), (int, float)) and (
                abs(float(statistics.median(fps)) - r["median_fps"]) > 1e-6 * (1 + r["median_fps"])
            ):
                errors.append(f"{where}.median_fps: not the median of fps")
        if r.get("system") not in SWITCHES and (
            r.get("ratio_to_limit") is not None or r.get("switched_ratio_to_limit") is not None
        ):
            errors.append(f"{where}: a limit line has no ratio_to_limit")
    ac = doc["attach_cost"]
    if ac is not None:
        _check_keys(ac, ATTACH_KEYS, "$.attach_cost", errors)
        for i, m in enumerate(ac.get("modes") or []):
            _check_keys(m, MODE_KEYS, f"$.attach_cost.modes[{i}]", errors)
        if isinstance(ac.get("modes"), list) and not ac["modes"]:
            errors.append("$.attach_cost.modes: empty")
    if not all(isinstance(n, str) for n in doc["notes"]):
        errors.append("$.notes: not all strings")
    return errors
