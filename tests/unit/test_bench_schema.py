"""The switch benchmark's JSON schema (bench/schema.py, docs/bench.md): a document built the way
`python -m bench switch` builds it validates, medians and ratios come out right, and each kind
of damage is named. Also the C test of the benchmark's frame templates (both builds; a missing
binary fails: build bench/c), and what `python -m bench` answers to --help and to a bad name."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import schema  # noqa: E402
from bench.switch import dumps, table  # noqa: E402


def _run(direction: str, system: str, size: int, att: int, used: int, rep: int, fps: float,
         switched: float | None = None) -> dict[str, Any]:  # fmt: skip
    sw = fps if switched is None else switched
    return {
        "direction": direction, "system": system, "size": size, "ports_attached": att,
        "ports_used": used, "rep": rep, "seconds": 1.0, "sent": int(sw * 1.2),
        "delivered": int(fps), "switched": int(sw), "fps": fps, "switched_fps": sw,
        "offered_fps": sw * 1.2, "detail": {},
    }  # fmt: skip


def small_doc() -> dict[str, Any]:
    runs = []
    for rep in range(3):
        runs += [
            _run("nic_to_port", "limit_xdp_drop", 64, 1, 1, rep, 1_000_000 + rep),
            _run("nic_to_port", "switch", 64, 1, 1, rep, 300_000 + 10 * rep, 400_000),
            _run("nic_to_port", "limit_xdp_drop", 64, 16, 1, rep, 900_000),
            _run("nic_to_port", "switch", 64, 16, 16, rep, 270_000),
            _run("port_to_nic", "limit_xsk_tx", 64, 1, 1, rep, 2_000_000),
            _run("port_to_nic", "switch", 64, 1, 1, rep, 1_000_000 * (1 + rep)),
            _run("port_to_nic", "switch_xdp", 64, 1, 1, rep, 800_000 + rep),
        ]
    return {
        "schema": schema.SCHEMA_ID,
        "created": "2026-01-01T00:00:00Z",
        "duration_s": 12.5,
        "quick": True,
        "system": {k: "x" for k in schema.SYSTEM_KEYS},
        "config": {k: 1 for k in schema.CONFIG_KEYS},
        "runs": runs,
        "results": schema.summarize(runs),
        "attach_cost": schema.attach_summary(
            100_000_000,
            [0.1, 0.12, 0.11],
            {"native": [0.2, 0.22, 0.18], "generic": [0.12, 0.13, 0.125]},
        ),
        "notes": [],
    }


def _row(doc: dict[str, Any], **match: Any) -> dict[str, Any]:
    rows = [r for r in doc["results"] if all(r[k] == v for k, v in match.items())]
    assert len(rows) == 1, rows
    return rows[0]


def test_a_document_built_like_the_harness_builds_it_validates() -> None:
    doc = small_doc()
    assert schema.validate(doc) == []
    assert schema.validate(json.loads(json.dumps(doc))) == []  # and after a JSON round trip


def test_medians_and_ratios() -> None:
    doc = small_doc()
    sw = _row(doc, direction="nic_to_port", system="switch", ports_attached=1)
    assert sw["repetitions"] == 3 and sw["median_fps"] == 300_010
    assert sw["limit_median_fps"] == 1_000_001  # the limit of the same phase (1 attached)
    assert sw["ratio_to_limit"] == pytest.approx(300_010 / 1_000_001)
    assert sw["switched_ratio_to_limit"] == pytest.approx(400_000 / 1_000_001)
    assert sw["ratio_to_one_port"] == 1.0 and sw["switched_ratio_to_one_port"] == 1.0
    sw16 = _row(doc, direction="nic_to_port", system="switch", ports_attached=16)
    assert sw16["limit_median_fps"] == 900_000  # not the 1-port phase's limit
    assert sw16["ratio_to_one_port"] == pytest.approx(270_000 / 300_010)
    assert sw16["switched_ratio_to_one_port"] == pytest.approx(270_000 / 400_000)
    eg = _row(doc, direction="port_to_nic", system="switch")
    assert eg["median_fps"] == 2_000_000 and eg["ratio_to_limit"] == 1.0
    # The XDP fast path's row is a switch row of its own: its limit, its own 1-port figure.
    xdp = _row(doc, direction="port_to_nic", system="switch_xdp")
    assert xdp["median_fps"] == 800_001 and xdp["ratio_to_limit"] == pytest.approx(0.4000005)
    assert xdp["ratio_to_one_port"] == 1.0
    lim = _row(doc, direction="port_to_nic", system="limit_xsk_tx")
    assert lim["ratio_to_limit"] is None and lim["ratio_to_one_port"] is None
    ac = doc["attach_cost"]
    assert ac["median_detached_s"] == 0.11 and ac["median_attached_s"] == 0.2
    assert ac["rate_ratio"] == pytest.approx(0.55) and ac["mode"] == "native"
    assert [m["mode"] for m in ac["modes"]] == ["native", "generic"]
    assert ac["modes"][1]["rate_ratio"] == pytest.approx(0.11 / 0.125)


def test_results_are_ordered_by_direction_size_and_ports() -> None:
    keys = [(r["direction"], r["ports_attached"]) for r in small_doc()["results"]]
    assert keys == sorted(keys, key=lambda k: (schema.DIRECTIONS.index(k[0]), k[1]))


@pytest.mark.parametrize(
    "damage, expect",
    [
        (lambda d: d.pop("runs"), "missing 'runs'"),
        (lambda d: d.update(schema="other/1"), "$.schema"),
        (lambda d: d["system"].pop("kernel"), "missing 'kernel'"),
        (lambda d: d["config"].pop("sizes"), "missing 'sizes'"),
        (lambda d: d["runs"][0].update(direction="sideways"), "direction"),
        (lambda d: d["runs"][0].update(system="kernel"), "system"),
        (lambda d: d["runs"][0].update(size=9000), "size"),
        (lambda d: d["runs"][0].update(ports_used=2), "ports_used"),
        (lambda d: d["runs"][0].update(fps="fast"), "$.runs[0].fps"),
        (lambda d: d["runs"][0].update(fps=-1.0), "negative"),
        (lambda d: d["runs"][0].update(sent=True), "bool"),
        (lambda d: d["results"][0].update(repetitions=7), "repetitions"),
        (lambda d: d["results"][1].update(median_fps=1.0), "not the median"),
        (lambda d: d["results"][0].update(ratio_to_limit=0.5), "limit line"),
        (lambda d: d["results"][1].pop("ratio_to_one_port"), "ratio_to_one_port"),
        (lambda d: d["attach_cost"].pop("rate_ratio"), "rate_ratio"),
        (lambda d: d["attach_cost"]["modes"][1].pop("mode"), "modes[1]"),
        (lambda d: d["attach_cost"].update(modes=[]), "modes: empty"),
        (lambda d: d.update(notes=[1]), "notes"),
    ],
)
def test_damage_is_named(damage: Any, expect: str) -> None:
    doc = copy.deepcopy(small_doc())
    damage(doc)
    errors = schema.validate(doc)
    assert errors and any(expect in e for e in errors), errors


def test_attach_cost_may_be_absent_and_ints_count_as_numbers() -> None:
    doc = small_doc()
    doc["attach_cost"] = None
    doc["duration_s"] = 12
    assert schema.validate(doc) == []


def test_written_json_reads_back_the_same() -> None:
    doc = small_doc()
    text = dumps(doc)
    assert json.loads(text) == doc
    assert len(text.splitlines()) < 120  # one line per run and result row
    empty = {**doc, "runs": [], "results": []}
    assert json.loads(dumps(empty)) == empty


def test_table_has_a_row_per_result_and_the_attach_cost() -> None:
    doc = small_doc()
    out = table(doc)
    assert len([ln for ln in out.splitlines() if ln.startswith(("nic_to_port", "port_to_nic"))]) \
        == len(doc["results"])  # fmt: skip
    assert "attach cost" in out and "55%" in out and "generic" in out


@pytest.mark.parametrize("variant", ["normal", "asan"])
def test_frame_templates_c(variant: str) -> None:
    root = BUILD if variant == "normal" else BUILD / "asan"
    binary = root / "tests" / "bench" / "test_pkt"
    assert binary.exists(), f"{binary} missing: make -C bench/c BUILD={root}" + (
        " SAN=1" if variant == "asan" else ""
    )
    out = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_bench_dispatch_names_its_benchmarks() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 0 and "http" in out.stdout and "switch" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "bench", "nonsense"], cwd=REPO, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert out.returncode == 64


@pytest.mark.parametrize(
    "path", sorted((REPO / "bench" / "results").glob("switch-*.json")), ids=lambda p: p.name
)
def test_stored_results_follow_the_schema(path: Path) -> None:
    assert schema.validate(json.loads(path.read_text())) == []
