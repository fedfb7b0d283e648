"""Session-level leak check: a test run must leave no namespace, link, XDP or TC program, BPF
pin or child process behind (design.md section 7). Loaded by tests/conftest.py, or on its own
as a plugin: `pytest -p testbed.leakcheck` (with tests/ on PYTHONPATH).

Snapshot at session start, compare at session end (after every fixture's teardown); anything
new that survives fails the run with a list of what leaked. Objects named by *another* live
test run (`mst<run id>-...`, see testbed.netns) are that run's business, not ours: engineers
run their suites side by side on one machine.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import subprocess
import sys
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from testbed.netns import LOCK_DIR, NAME_RE, run_alive, run_id

__all__ = [
    "pytest_report_header",
    "pytest_sessionfinish",
    "pytest_sessionstart",
]

BPFFS = Path("/sys/fs/bpf")
SETTLE_S = 3.0  # things a teardown has just stopped may take a moment to go
IGNORE_ENV = "MSTACK_LEAKCHECK_IGNORE"  # comma-separated globs of names not to report


@dataclass(frozen=True)
class LinkState:
    ifindex: int
    xdp: frozenset[int]  # attached XDP program ids
    tc: frozenset[str]  # clsact/ingress qdiscs and their filters, as descriptors
    peer_netns: str | None = None  # where a veth's peer lives, if in a named namespace


@dataclass
class Snapshot:
    netns: set[str]
    links: dict[str, LinkState]
    pins: set[str]
    procs: dict[tuple[int, float], str]  # (pid, create time) -> description
    errors: list[str] = field(default_factory=list)
    # net.ipv4.ip_local_reserved_ports, port by port (mstackd's leases reserve blocks there)
    reserved_ports: frozenset[int] = frozenset()


def _json(argv: list[str]) -> Any:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return json.loads(cp.stdout) if cp.stdout.strip() else []


def _netns() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def _links() -> dict[str, LinkState]:
    tc: dict[str, set[str]] = {}
    for q in _json(["tc", "-j", "qdisc", "show"]):
        if q.get("kind") in ("clsact", "ingress"):
            dev = q["dev"]
            tc.setdefault(dev, set()).add(f"qdisc {q['kind']}")
            for direction in ("ingress", "egress") if q["kind"] == "clsact" else ("ingress",):
                try:
                    filters = _json(["tc", "-j", "filter", "show", "dev", dev, direction])
                except subprocess.CalledProcessError:
                    continue  # the link went away between the two listings (a concurrent run)
                for f in filters:
                    opts = f.get("options")
                    if not opts:
                        continue  # the chain head line, not a filter
                    prog = opts.get("prog", {})
                    tc[dev].add(
                        f"{direction} {f.get('kind')} pref {f.get('pref')} "
                        f"{opts.get('bpf_name', '')} prog {prog.get('id', '-')}".strip()
                    )
    nsids = {int(n["nsid"]): n.get("name") for n in _json(["ip", "-j", "netns", "list-id"])}
    out: dict[str, LinkState] = {}
    for link in _json(["ip", "-j", "-d", "link", "show"]):
        xdp = link.get("xdp") or {}
        ids = {a["prog"]["id"] for a in xdp.get("attached", []) if "prog" in a}
        if "prog" in xdp:
            ids.add(xdp["prog"]["id"])
        name = link["ifname"]
        peer = nsids.get(int(link["link_netnsid"])) if "link_netnsid" in link else None
        out[name] = LinkState(
            int(link["ifindex"]), frozenset(ids), frozenset(tc.get(name, ())), peer
        )
    return out


def bpffs_mounted() -> bool:
    """Whether bpffs is what is mounted at /sys/fs/bpf (here a sysfs entry sits below it)."""
    fstype = None
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[1] == str(BPFFS):
                fstype = parts[2]  # the last mount on a path is the visible one
    return fstype == "bpf"


# Always present in a fresh bpffs (the kernel's bpf_preload iterators).
BPFFS_BUILTIN = frozenset({"maps.debug", "progs.debug"})


def _pins() -> set[str]:
    """Pins (relative paths) and, with a trailing '/', directories. Symlinks (iproute2 makes
    `ip` and `xdp` point at `tc`) are not pins and are skipped."""
    if not bpffs_mounted():
        return set()
    found: set[str] = set()
    for root, dirs, files in os.walk(BPFFS):
        for n in files:
            path = os.path.join(root, n)
            rel = os.path.relpath(path, BPFFS)
            if rel not in BPFFS_BUILTIN and not os.path.islink(path):
                found.add(rel)
        for n in dirs:
            path = os.path.join(root, n)
            if not os.path.islink(path):
                found.add(os.path.relpath(path, BPFFS) + "/")
    return found


def _procs() -> dict[tuple[int, float], str]:
    out: dict[tuple[int, float], str] = {}
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if p.status() == psutil.STATUS_ZOMBIE:
                continue  # exited; an unreaped zombie holds no resource worth failing for
            out[(p.pid, p.create_time())] = f"pid {p.pid} {' '.join(p.cmdline())[:200]}"
    return out


RESERVED_PORTS = Path("/proc/sys/net/ipv4/ip_local_reserved_ports")


def _reserved_ports() -> frozenset[int]:
    out: set[int] = set()
    for part in RESERVED_PORTS.read_text().strip().split(","):
        if part:
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(out)


def take_snapshot() -> Snapshot:
    snap = Snapshot(set(), {}, set(), {})
    try:
        snap.reserved_ports = _reserved_ports()
    except (OSError, ValueError) as e:
        snap.errors.append(f"could not read {RESERVED_PORTS}: {e}")
    for attr, fn in (("netns", _netns), ("links", _links), ("pins", _pins), ("procs", _procs)):
        try:
            setattr(snap, attr, fn())
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            snap.errors.append(f"could not list {attr}: {e}")
    return snap


def _ours(name: str) -> bool:
    """False for a name of another test run (alive or not): never blame this run for it."""
    first = name.split("/", 1)[0]
    m = NAME_RE.match(first)
    if m and m.group(1) != run_id():
        return False
    globs = [g.strip() for g in os.environ.get(IGNORE_ENV, "").split(",") if g.strip()]
    return not any(fnmatch.fnmatch(name, g) for g in globs)


def _link_ours(name: str, st: LinkState) -> bool:
    # A veth whose peer sits in another run's namespace (a port of another run's switch,
    # say) belongs to that run whatever its own name.
    return _ours(name) and (st.peer_netns is None or _ours(st.peer_netns))


def compare(before: Snapshot, after: Snapshot) -> list[str]:
    """What is in `after` and was not in `before`, as one line per leaked object."""
    leaks: list[str] = []
    for ns in sorted(after.netns - before.netns):
        if _ours(ns):
            leaks.append(f"network namespace {ns}")
    for name, st in sorted(after.links.items()):
        old = before.links.get(name)
        if not _link_ours(name, st):
            continue
        if old is None or old.ifindex != st.ifindex:
            extra = f" (XDP prog {sorted(st.xdp)})" if st.xdp else ""
            extra += f" (TC: {'; '.join(sorted(st.tc))})" if st.tc else ""
            leaks.append(f"link {name} ifindex {st.ifindex}{extra}")
            continue
        if st.xdp - old.xdp:
            leaks.append(f"XDP program {sorted(st.xdp - old.xdp)} on pre-existing link {name}")
        for d in sorted(st.tc - old.tc):
            leaks.append(f"TC on pre-existing link {name}: {d}")
    new_pins = after.pins - before.pins
    for pin in sorted(new_pins):
        # A leaked directory and its contents are one leak: report the top-most new path.
        # An empty new directory only counts if it has a test bed name of this run (a
        # bpf_pin_dir left behind); iproute2 leaves empty `tc/globals` around by itself.
        parent = os.path.dirname(pin.rstrip("/"))
        if parent and parent + "/" in new_pins:
            continue
        if pin.endswith("/"):
            has_pins = any(p.startswith(pin) and not p.endswith("/") for p in new_pins)
            if not has_pins and not (NAME_RE.match(pin) and _ours(pin)):
                continue
        if _ours(pin):
            leaks.append(f"BPF pin {BPFFS / pin}")
    for key in sorted(set(after.procs) - set(before.procs)):
        leaks.append(f"child process {after.procs[key]}")
    extra = sorted(after.reserved_ports - before.reserved_ports)
    if extra:
        leaks.append(
            f"{len(extra)} port(s) left in ip_local_reserved_ports ({extra[0]}..{extra[-1]})"
        )
    return leaks


# -- bpffs -------------------------------------------------------------------------------------


# Present while a bpffs mount made by a test run is up: the last run to finish unmounts it,
# even if that run is not the one that mounted it (runs overlap on a shared machine).
BPFFS_MARK = LOCK_DIR / "bpffs.mounted-by-testbed"


def _mount_bpffs() -> bool:
    """Mount bpffs at /sys/fs/bpf if nothing is mounted there; True if this run did it."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with _flocked(LOCK_DIR / "bpffs.lock"):
        if bpffs_mounted():
            return False
        BPFFS_MARK.unlink(missing_ok=True)  # a mark without a mount is stale
        subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True, timeout=10)
        BPFFS_MARK.write_text(f"{os.getpid()}\n")
        return True


def _umount_bpffs_if_unused() -> str:
    with _flocked(LOCK_DIR / "bpffs.lock"):
        if not bpffs_mounted():
            BPFFS_MARK.unlink(missing_ok=True)
            return "bpffs already unmounted"
        if any(not p.endswith("/") for p in _pins()):
            return "bpffs left mounted: something is pinned"
        others = [
            p.name
            for p in (LOCK_DIR / "runs").iterdir()
            if p.name != run_id() and run_alive(p.name)
        ]
        if others:
            return f"bpffs left mounted: other test runs alive ({', '.join(others)})"
        subprocess.run(["umount", str(BPFFS)], check=True, timeout=10)
        BPFFS_MARK.unlink(missing_ok=True)
        return "bpffs unmounted (a test run mounted it, nothing is pinned, no run is left)"


@contextlib.contextmanager
def _flocked(path: Path) -> Generator[None, None, None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- pytest hooks --------------------------------------------------------------------------------


@dataclass
class _State:
    before: Snapshot | None = None
    mounted_bpffs: bool = False
    finished: bool = False
    notes: list[str] = field(default_factory=list)


_STATE = _State()


def pytest_sessionstart(session: pytest.Session) -> None:
    # Guard: the hooks may be registered twice (conftest import and `-p testbed.leakcheck`).
    if _STATE.before is not None or os.geteuid() != 0:
        return
    run_id()  # take the run id (and its lock) before anything is named
    try:
        _STATE.mounted_bpffs = _mount_bpffs()
    except (OSError, subprocess.SubprocessError) as e:
        _STATE.notes.append(f"could not mount bpffs at {BPFFS}: {e}")
    _STATE.before = take_snapshot()
    stale = sorted(
        n
        for n in _STATE.before.netns | set(_STATE.before.links)
        if (m := NAME_RE.match(n)) and not run_alive(m.group(1))
    )
    if stale:
        _STATE.notes.append(f"stale objects of dead test runs (not ours): {', '.join(stale)}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    if os.geteuid() != 0:
        return ["testbed: not root, leak check off"]
    lines = [
        f"testbed: run id {run_id()} (names start with mst{run_id()}-); "
        f"bpffs {'mounted by this run' if _STATE.mounted_bpffs else 'as found'}"
    ]
    return lines + [f"testbed: {n}" for n in _STATE.notes]


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(
    session: pytest.Session, exitstatus: int
) -> Generator[None, object, object]:
    # A wrapper: runs after the runner's own sessionfinish has torn down every fixture.
    result = yield
    if _STATE.before is None or _STATE.finished:
        return result
    _STATE.finished = True
    deadline = time.monotonic() + SETTLE_S
    while True:
        after = take_snapshot()
        leaks = compare(_STATE.before, after)
        if not leaks or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    leaks += after.errors
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    if leaks:
        msg = [f"LEAK CHECK FAILED: {len(leaks)} object(s) survived the test run:"]
        msg += [f"  leaked: {line}" for line in leaks]
        if any(f"mst{run_id()}-" not in x and not x.startswith("child") for x in leaks):
            msg.append(
                f"  (names without this run's prefix mst{run_id()}- may also come from someone "
                f"else on this machine; {IGNORE_ENV}=glob,... excludes them)"
            )
        if tr is not None:
            tr.write_sep("=", "testbed leak check", red=True, bold=True)
            for line in msg:
                tr.write_line(line, red=True)
        else:
            print("\n".join(msg), file=sys.stderr)
        if session.exitstatus == pytest.ExitCode.OK or session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _STATE.mounted_bpffs or BPFFS_MARK.exists():
        try:
            note = _umount_bpffs_if_unused()
        except (OSError, subprocess.SubprocessError) as e:
            note = f"could not unmount bpffs: {e}"
        if tr is not None and tr.config.option.verbose > 0:
            tr.write_line(f"testbed: {note}")
    return result
