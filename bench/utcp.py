"""UTCP's benchmark: single-connection bulk throughput and new connections per second, UTCP as
client and as server against the Linux kernel, over `pair` (two stacks in memory, one process),
`tap` (UTCP on a TAP device in the remote namespace, the kernel there its peer) and `xdp` (UTCP
on a port from mstackd in the root namespace, the kernel in the remote namespace its peer) —
beside the kernel's own figures on the same test bed in the same run (kernel <-> kernel over
the test bed's veth, the switch detached from it while they are taken).

Every pairing runs the same load, mstack-utcpbench (bench/c): a client makes one connection
after another (`conns`: a 64-byte request, a 64-byte response, the server closes first, so the
server side holds TIME-WAIT; C connections in flight) or moves N bytes over one (`bulk`, timed
from connect to the server's FIN). Each run starts its server afresh. Repetitions visit every
(bed, system, role, metric) once, in rotated order, so that the systems are interleaved in time;
results are medians, with the ratio of UTCP's median to the kernel's in the same role.

JSON: bench/results/utcp-<UTC timestamp>.json, schema `mstack-bench-utcp/1` (docs/bench.md;
validate() below is the one place that fixes it)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from bench.schema import _check_keys, median_or_none  # noqa: E402
from bench.switch import BenchError, Tool, system_info  # noqa: E402
from mstack_testkit import Mstackd, start_mstackd  # noqa: E402
from testbed.netns import (  # noqa: E402
    RemoteHost,
    SubnetLease,
    lease_subnet,
    remote_host_cm,
    sh,
    unique_name,
    unpin_tree,
)

SCHEMA_ID = "mstack-bench-utcp/1"
RESULTS = Path(__file__).resolve().parent / "results"
BPFFS = Path("/sys/fs/bpf")

BEDS = ("pair", "tap", "xdp", "veth")
SYSTEMS = ("utcp", "kernel")
ROLES = ("client", "server", "both")
METRICS = {"bulk": "bits_per_s", "conns": "conns_per_s"}
# (bed, system, roles) that exist: pair is UTCP against UTCP; veth is the kernel against itself.
PAIRINGS = (
    ("pair", "utcp", ("both",)),
    ("tap", "utcp", ("client", "server")),
    ("xdp", "utcp", ("client", "server")),
    ("veth", "kernel", ("client", "server")),
)

UTCP_MAC = "02:00:00:75:00:02"
TAP = "utcpbench0"
FIRST_PORT = 7000  # each run's server listens on a port of its own (a listening shadow socket
# that mstackd still holds from an earlier run must not collide with the next server)


def build_dir() -> Path:
    default = os.environ.get("MSTACK_BUILD_DIR", str(REPO / "build"))
    return Path(os.environ.get("MSTACK_BENCH_BUILD", default))


# -- the schema ------------------------------------------------------------------------------

T = type | tuple[type, ...]
RUN_KEYS: dict[str, T] = {
    "bed": str, "system": str, "role": str, "metric": str, "rep": int, "ok": bool,
    "error": (str, type(None)), "value": float, "unit": str, "seconds": float, "done": int,
    "failed": int, "detail": dict,
}  # fmt: skip
RESULT_KEYS: dict[str, T] = {
    "bed": str, "system": str, "role": str, "metric": str, "unit": str, "repetitions": int,
    "runs_ok": int, "values": list, "median": (float, type(None)), "min": (float, type(None)),
    "max": (float, type(None)), "kernel_median": (float, type(None)),
    "ratio_to_kernel": (float, type(None)),
}  # fmt: skip
TOP_KEYS: dict[str, T] = {
    "schema": str, "created": str, "duration_s": float, "quick": bool, "system": dict,
    "config": dict, "runs": list, "results": list, "notes": list,
}  # fmt: skip
CONFIG_KEYS = (
    "repetitions", "bulk_bytes", "conns_seconds", "concurrency", "request_bytes",
    "response_bytes", "utcp", "kernel_peer", "beds", "generator",
)  # fmt: skip


_median = median_or_none


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (bed, system, role, metric): the ok runs' values, their median, min, max, and
    UTCP's median over the kernel's in the same role and metric (pair: over the kernel's client
    role, the only in-memory-free reference there is: a ratio across media, marked in notes)."""
    keys: list[tuple[str, str, str, str]] = []
    for r in runs:
        k = (r["bed"], r["system"], r["role"], r["metric"])
        if k not in keys:
            keys.append(k)
    rows: list[dict[str, Any]] = []
    for bed, system, role, metric in keys:
        rs = [
            r
            for r in runs
            if (r["bed"], r["system"], r["role"], r["metric"]) == (bed, system, role, metric)
        ]
        vals = [float(r["value"]) for r in rs if r["ok"]]
        rows.append({
            "bed": bed, "system": system, "role": role, "metric": metric, "unit": METRICS[metric],
            "repetitions": len(rs), "runs_ok": len(vals), "values": vals, "median": _median(vals),
            "min": min(vals) if vals else None, "max": max(vals) if vals else None,
            "kernel_median": None, "ratio_to_kernel": None,
        })  # fmt: skip
    for row in rows:
        kernel_role = "client" if row["role"] == "both" else row["role"]
        ref = [r for r in rows if r["system"] == "kernel" and r["role"] == kernel_role
               and r["metric"] == row["metric"]]  # fmt: skip
        if ref and ref[0]["median"]:
            row["kernel_median"] = ref[0]["median"]
            if row["median"] is not None:
                row["ratio_to_kernel"] = row["median"] / ref[0]["median"]
    return rows


def _check_point(obj: dict[str, Any], where: str, errors: list[str]) -> None:
    pairing = {(b, s): roles for b, s, roles in PAIRINGS}
    roles = pairing.get((obj.get("bed", ""), obj.get("system", "")))
    if roles is None:
        errors.append(f"{where}: (bed, system) {(obj.get('bed'), obj.get('system'))} not one of "
                      f"{[(b, s) for b, s, _ in PAIRINGS]}")  # fmt: skip
    elif obj.get("role") not in roles:
        errors.append(f"{where}.role: {obj.get('role')!r} not one of {roles}")
    if obj.get("metric") not in METRICS:
        errors.append(f"{where}.metric: {obj.get('metric')!r} not one of {tuple(METRICS)}")
    elif obj.get("unit") != METRICS[obj["metric"]]:
        errors.append(f"{where}.unit: {obj.get('unit')!r}, expected {METRICS[obj['metric']]!r}")


def validate(doc: Any) -> list[str]:
    """The schema's errors in doc (an empty list if it follows mstack-bench-utcp/1)."""
    errors: list[str] = []
    _check_keys(doc, TOP_KEYS, "$", errors)
    if errors:
        return errors
    if doc["schema"] != SCHEMA_ID:
        errors.append(f"$.schema: {doc['schema']!r}, expected {SCHEMA_ID!r}")
    for k in CONFIG_KEYS:
        if k not in doc["config"]:
            errors.append(f"$.config: missing {k!r}")
    for i, r in enumerate(doc["runs"]):
        where = f"$.runs[{i}]"
        _check_keys(r, RUN_KEYS, where, errors)
        if isinstance(r, dict) and all(k in r for k in RUN_KEYS):
            _check_point(r, where, errors)
            if r["value"] < 0 or r["seconds"] < 0 or r["done"] < 0 or r["failed"] < 0:
                errors.append(f"{where}: a negative figure")
            if r["ok"] and (r["error"] is not None or r["value"] <= 0 or r["failed"]):
                errors.append(f"{where}: ok, yet an error, failures or no value")
            if not r["ok"] and not r["error"]:
                errors.append(f"{where}: not ok without an error")
    for i, r in enumerate(doc["results"]):
        where = f"$.results[{i}]"
        _check_keys(r, RESULT_KEYS, where, errors)
        if not isinstance(r, dict) or not all(k in r for k in RESULT_KEYS):
            continue
        _check_point(r, where, errors)
        vals = r["values"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            errors.append(f"{where}.values: not all numbers")
            continue
        if len(vals) != r["runs_ok"] or r["runs_ok"] > r["repetitions"]:
            errors.append(f"{where}: runs_ok {r['runs_ok']}, {len(vals)} values, "
                          f"{r['repetitions']} repetitions")  # fmt: skip
        med = _median(vals)
        if (med is None) != (r["median"] is None) or (
            med is not None and abs(med - r["median"]) > 1e-9 * max(1.0, abs(med))
        ):
            errors.append(f"{where}.median: not the median of values")
        if vals and (r["min"] != min(vals) or r["max"] != max(vals)):
            errors.append(f"{where}: min/max are not those of values")
        if r["system"] == "kernel" and r["median"] is not None and r["ratio_to_kernel"] != 1.0:
            errors.append(f"{where}.ratio_to_kernel: the kernel's own row must say 1.0")
        ratio, kmed, med = r["ratio_to_kernel"], r["kernel_median"], r["median"]
        if ratio is not None and kmed and med is not None and abs(ratio - med / kmed) > 1e-9:
            errors.append(f"{where}.ratio_to_kernel: not median / kernel_median")
    n_runs = len(doc["runs"])
    n_res = sum(int(r.get("repetitions", 0)) for r in doc["results"] if isinstance(r, dict))
    if n_runs != n_res:
        errors.append(f"$: {n_runs} runs but the results count {n_res} repetitions")
    return errors


# -- the test bed ------------------------------------------------------------------------------


@dataclass
class TapEnd:
    """A TAP device in a namespace: the kernel's end (`kernel_ip`) and UTCP's (`utcp_ip`)."""

    ns: str
    dev: str
    kernel_ip: str
    utcp_ip: str
    kernel_mac: str
    utcp_mac: str


def add_tap(ns: str, dev: str, lease: SubnetLease, utcp_mac: str = UTCP_MAC) -> TapEnd:
    """A TAP device in namespace ns (it goes with the namespace), the kernel's end addressed
    .1 of the leased /24, UTCP .2 with a permanent neighbour entry (UTCP does no ARP)."""
    kip, uip = lease.host(1), lease.host(2)
    sh(["ip", "-n", ns, "tuntap", "add", "dev", dev, "mode", "tap"])
    sh(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"])
    sh(["ip", "-n", ns, "link", "set", dev, "up"])
    sh(["ip", "-n", ns, "addr", "add", f"{kip}/24", "dev", dev])
    sh(
        [
            "ip",
            "-n",
            ns,
            "neigh",
            "replace",
            uip,
            "lladdr",
            utcp_mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ]
    )
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/address"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return TapEnd(ns, dev, kip, uip, out.stdout.strip(), utcp_mac)


@dataclass
class Bed:
    host: RemoteHost
    tap: TapEnd
    d: Mstackd
    work: Path


@contextlib.contextmanager
def testbed() -> Iterator[Bed]:
    if os.geteuid() != 0:
        raise BenchError("the UTCP benchmark needs root (network namespaces, TAP, XDP)")
    with contextlib.ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="mst-bench-utcp-"))
        work.chmod(0o755)
        stack.callback(shutil.rmtree, work, True)
        host = stack.enter_context(remote_host_cm())
        lease = lease_subnet()
        stack.callback(lease.release)
        tap = add_tap(host.ns, TAP, lease)
        if not BPFFS.is_dir() or not os.path.ismount(BPFFS):
            subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True)
        pins = BPFFS / unique_name("-bpf")
        stack.callback(unpin_tree, pins)
        pins.mkdir()
        run_dir = work / "run"
        run_dir.mkdir()
        run_dir.chmod(0o755)
        d = stack.enter_context(start_mstackd(host, pins, run_dir))
        yield Bed(host, tap, d, work)


# -- the runs ----------------------------------------------------------------------------------


@dataclass
class Plan:
    reps: int
    bulk_bytes: int
    conns_seconds: float
    concurrency: int
    request: int = 64
    response: int = 64
    time_wait_ms: int = 20
    max_conns_conns: int = 4096
    buf_conns: int = 16384
    max_conns_bulk: int = 16
    buf_bulk: int = 4 << 20
    lease: int = 256
    beds: tuple[str, ...] = BEDS
    quick: bool = False


def _exe() -> str:
    exe = build_dir() / "bin" / "mstack-utcpbench"
    if not exe.exists():
        raise BenchError(f"{exe} is missing: make -C bench/c BUILD={build_dir()}")
    return str(exe)


def _utcp_stack(plan: Plan, metric: str) -> list[str]:
    if metric == "conns":
        mc, buf = plan.max_conns_conns, plan.buf_conns
    else:
        mc, buf = plan.max_conns_bulk, plan.buf_bulk
    return ["--max-conns", str(mc), "--buf", str(buf), "--time-wait-ms", str(plan.time_wait_ms)]


def _client_args(plan: Plan, metric: str) -> list[str]:
    if metric == "bulk":
        return ["--bytes", str(plan.bulk_bytes)]
    return ["--seconds", str(plan.conns_seconds), "--concurrency", str(plan.concurrency),
            "--req", str(plan.request), "--resp", str(plan.response)]  # fmt: skip


_PORTS = itertools.count()


def one_run(bed: Bed, plan: Plan, where: str, system: str, role: str, metric: str,
            rep: int) -> dict[str, Any]:  # fmt: skip
    """Start the server, run the client (bounded), collect both ends' figures."""
    exe = _exe()
    ns = ["ip", "netns", "exec", bed.host.ns]
    tap = ["--backend", "tap", "--dev", bed.tap.dev, "--ip", bed.tap.utcp_ip, "--mac",
           bed.tap.utcp_mac, "--gw-mac", bed.tap.kernel_mac]  # fmt: skip
    xdp = ["--backend", "xdp", "--run-dir", str(bed.d.run_dir), "--ip", bed.host.host_ip]
    port = FIRST_PORT + next(_PORTS) % 20000
    stack = _utcp_stack(plan, metric)
    h = bed.host
    server: list[str] | None
    # (server argv, client argv, the address the client connects to)
    if where == "pair":
        server, client, dst = None, [exe, "--backend", "pair", *stack], "198.18.0.1"
    elif where == "tap" and role == "server":
        server, client, dst = [*ns, exe, *tap, *stack, "serve"], [*ns, exe], bed.tap.utcp_ip
    elif where == "tap":
        server = [*ns, exe, "--ip", bed.tap.kernel_ip, "serve"]
        client, dst = [*ns, exe, *tap, *stack], bed.tap.kernel_ip
    elif where == "xdp" and role == "server":
        server, client, dst = [exe, *xdp, *stack, "serve"], [*ns, exe], h.host_ip
    elif where == "xdp":
        server = [*ns, exe, "--ip", h.remote_ip, "serve"]
        client, dst = [exe, *xdp, "--lease", str(plan.lease), *stack], h.remote_ip
    elif role == "server":  # veth, kernel: the root namespace's end serves
        server, client, dst = [exe, "--ip", h.host_ip, "serve"], [*ns, exe], h.host_ip
    else:
        server = [*ns, exe, "--ip", h.remote_ip, "serve"]
        client, dst = [exe, "--ip", h.host_ip], h.remote_ip
    kind = "bulk" if metric == "bulk" else "conns"
    argv = [*client, kind, dst, str(port), *_client_args(plan, metric), "--max-seconds", "120"]
    run: dict[str, Any] = {
        "bed": where, "system": system, "role": role, "metric": metric, "rep": rep, "ok": False,
        "error": None, "value": 0.0, "unit": METRICS[metric], "seconds": 0.0, "done": 0,
        "failed": 0, "detail": {},
    }  # fmt: skip
    srv = None
    detached = False
    try:
        if where == "veth":
            # The kernel's own figures: the switch off the link while they are taken.
            bed.d.admin("detach", iface=h.host_if)
            detached = True
            time.sleep(0.1)
        if server is not None:
            srv = Tool([*server, str(port), "--max-seconds", "300"], f"server-{where}-{role}",
                       bed.work)  # fmt: skip
            if srv.readline(30) != "ready":
                raise BenchError(f"server did not start: {srv.stderr()}")
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        lines = cp.stdout.strip().splitlines()
        if not lines:
            raise BenchError(f"client exited {cp.returncode} without figures: {cp.stderr[-800:]}")
        out = json.loads(lines[-1])
        run["seconds"] = float(out["seconds"])
        run["done"], run["failed"] = int(out["done"]), int(out["failed"])
        run["value"] = float(out["bits_per_s"] if metric == "bulk" else out["conns_per_s"])
        run["detail"]["client"] = {k: out[k] for k in ("connect_errors", "after", "pair_server")
                                   if k in out and out[k] is not None}  # fmt: skip
        if srv is not None:
            run["detail"]["server"] = srv.json_cmd("stats")
        if cp.returncode != 0 or run["failed"] or run["value"] <= 0:
            run["error"] = (
                f"client exited {cp.returncode}, {run['failed']} failed: {cp.stderr[-500:]}"
            )
        else:
            run["ok"] = True
    except (
        BenchError,
        RuntimeError,
        subprocess.TimeoutExpired,
        json.JSONDecodeError,
        KeyError,
    ) as e:
        run["error"] = str(e)[-1000:]
    finally:
        if detached:
            bed.d.admin("attach", iface=h.host_if)  # in mstackd's default mode
            time.sleep(0.1)
        if srv is not None:
            rc = srv.close()
            if rc != 0 and run["ok"]:
                run["ok"], run["error"] = False, f"server exited {rc}: {srv.stderr()}"
    if not run["ok"]:
        run["value"] = 0.0
    return run


def jobs_for(plan: Plan) -> list[tuple[str, str, str, str]]:
    jobs = []
    for metric in METRICS:
        for where, system, roles in PAIRINGS:
            if where in plan.beds or (where == "veth" and plan.beds):
                jobs += [(where, system, role, metric) for role in roles]
    return jobs


def run_all(bed: Bed, plan: Plan, log: Any) -> list[dict[str, Any]]:
    jobs = jobs_for(plan)
    runs = []
    for rep in range(plan.reps):
        k = rep % len(jobs)
        order = jobs[k:] + jobs[:k]
        if rep % 2:
            order.reverse()
        for where, system, role, metric in order:
            r = one_run(bed, plan, where, system, role, metric, rep)
            runs.append(r)
            val = _fmt(r["value"], metric) if r["ok"] else f"FAILED: {r['error'][:200]}"
            log(f"rep {rep + 1}/{plan.reps} {where:<5} {system:<6} {role:<6} {metric:<5} {val}")
    return runs


# -- output ------------------------------------------------------------------------------------


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "-"
    return f"{v / 1e9:.2f} Gbit/s" if metric == "bulk" else f"{v:,.0f} conn/s"


def table(doc: dict[str, Any]) -> str:
    c = doc["config"]
    lines = [
        f"UTCP benchmark  {doc['created']}  kernel {doc['system']['kernel']}  "
        f"{doc['system']['cpus']} CPUs  reps {c['repetitions']}  "
        f"bulk {c['bulk_bytes'] / 1e6:.0f} MB"
        f"  conns {c['conns_seconds']} s x {c['concurrency']} in flight",
        "",
        f"{'metric':<6} {'bed':<5} {'system':<7} {'role':<7} {'median':>16} {'min':>16} "
        f"{'max':>16} {'ok':>5} {'/kernel':>8}",
    ]
    for r in sorted(doc["results"], key=lambda r: (r["metric"], r["role"], BEDS.index(r["bed"]))):
        ratio = "-" if r["ratio_to_kernel"] is None else f"{100 * r['ratio_to_kernel']:.0f}%"
        lines.append(
            f"{r['metric']:<6} {r['bed']:<5} {r['system']:<7} {r['role']:<7} "
            f"{_fmt(r['median'], r['metric']):>16} {_fmt(r['min'], r['metric']):>16} "
            f"{_fmt(r['max'], r['metric']):>16} {r['runs_ok']:>2}/{r['repetitions']:<2} {ratio:>8}"
        )
    return "\n".join(lines)


def dumps(doc: dict[str, Any]) -> str:
    """One line per run and per result row."""
    head = {k: v for k, v in doc.items() if k not in ("runs", "results")}
    text = json.dumps(head, indent=1)[: -len("\n}")]
    for key in ("results", "runs"):
        rows = ",\n".join("  " + json.dumps(r, separators=(", ", ": ")) for r in doc[key])
        text += f',\n "{key}": [\n{rows}\n ]' if rows else f',\n "{key}": []'
    return text + "\n}\n"


# -- entry point ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> tuple[Plan, Path]:
    ap = argparse.ArgumentParser(
        prog="python -m bench utcp",
        description="UTCP's bulk throughput and connections/s, both roles, over pair, tap and "
        "xdp, against the kernel on the same test bed (docs/bench.md).",
    )
    ap.add_argument("--quick", action="store_true", help="short form (about a minute)")
    ap.add_argument("--reps", type=int, help="repetitions of every run")
    ap.add_argument("--bulk-mb", type=int, help="MB per bulk run")
    ap.add_argument("--conns-seconds", type=float, help="seconds per connections run")
    ap.add_argument("--concurrency", type=int, default=8, help="connections in flight (conns)")
    ap.add_argument("--beds", default=",".join(BEDS[:3]),
                    help="pair,tap,xdp (the kernel over veth always runs beside them)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON")
    a = ap.parse_args(list(argv))
    reps, mb, secs = (3, 50, 0.5) if a.quick else (5, 300, 2.0)
    beds = tuple(b for b in a.beds.split(",") if b)
    if any(b not in BEDS[:3] for b in beds) or not beds:
        ap.error("--beds: some of pair, tap, xdp")
    plan = Plan(
        reps=a.reps or reps, bulk_bytes=(a.bulk_mb or mb) * 1_000_000,
        conns_seconds=a.conns_seconds or secs, concurrency=a.concurrency, beds=beds,
        quick=a.quick,
    )  # fmt: skip
    if not 1 <= plan.reps <= 50 or not 0 < plan.conns_seconds <= 60:
        ap.error("--reps 1..50, --conns-seconds (0, 60]")
    if not 1 <= plan.bulk_bytes <= 10_000_000_000 or not 1 <= plan.concurrency <= 1024:
        ap.error("--bulk-mb 1..10000, --concurrency 1..1024")
    return plan, a.out


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str]) -> int:
    plan, out_dir = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC)

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:7.1f} s] {msg}", file=sys.stderr, flush=True)

    sysinfo = system_info()
    sysinfo["link"] = "veth (test bed); TAP in the remote namespace; AF_XDP copy mode"
    try:
        with testbed() as bed:
            log(f"test bed: {bed.host.host_if}/{bed.host.ns}, tap {bed.tap.dev}; "
                f"mstackd pid {bed.d.proc.pid}")  # fmt: skip
            runs = run_all(bed, plan, log)
    except BenchError as e:
        print(f"bench utcp: {e}", file=sys.stderr)
        return 1
    sysinfo["loadavg_end"] = list(os.getloadavg())
    notes = [
        "conns: each connection a request and a response, the server closing first (it holds "
        "TIME-WAIT); UTCP's TIME-WAIT is shortened to time_wait_ms because it keeps a whole "
        "control block, the kernel's is its own (60 s, a small timewait socket)",
        "bulk: one connection, client to server, timed from connect() to the server's FIN",
        "veth: kernel against kernel between the root and the remote namespace, the switch "
        "detached from the root end for these runs (attached, the kernel's receive in the root "
        "namespace measured several times slower in trial runs: the switch benchmark's attach "
        "cost is the figure for that)",
        "pair: UTCP against UTCP in one process (both stacks on one core); its ratio is to the "
        "kernel's client role over veth, across media",
    ]
    if plan.quick:
        notes.append("quick form: fewer repetitions, shorter runs")
    doc: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.monotonic() - started, 1),
        "quick": plan.quick,
        "system": sysinfo,
        "config": {
            "repetitions": plan.reps,
            "bulk_bytes": plan.bulk_bytes,
            "conns_seconds": plan.conns_seconds,
            "concurrency": plan.concurrency,
            "request_bytes": plan.request,
            "response_bytes": plan.response,
            "utcp": {
                "time_wait_ms": plan.time_wait_ms,
                "max_conns_conns": plan.max_conns_conns,
                "buf_conns": plan.buf_conns,
                "max_conns_bulk": plan.max_conns_bulk,
                "buf_bulk": plan.buf_bulk,
                "xdp_lease": plan.lease,
                "nodelay": True,
            },
            "kernel_peer": "Linux TCP, default sysctls, TCP_NODELAY",
            "beds": list(plan.beds),
            "generator": "mstack-utcpbench (bench/c): the same client and server logic over "
            "kernel sockets and over UTCP",
        },
        "runs": runs,
        "results": summarize(runs),
        "notes": notes,
    }
    errors = validate(doc)
    if errors:
        doc["notes"].append("schema errors: " + "; ".join(errors[:10]))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"utcp-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(dumps(doc))
    print(table(doc))
    print(f"\nJSON: {path}")
    failed = [r for r in runs if not r["ok"]]
    if failed:
        print(f"bench utcp: {len(failed)} of {len(runs)} runs failed (see the JSON)",
              file=sys.stderr)  # fmt: skip
    return 1 if errors or failed else 0
