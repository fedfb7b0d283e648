"""Building blocks of the test bed: run-unique names, subnet leases, namespaces and veth pairs.

Everything here is plain context managers (no pytest), so fixtures, tests and scripts share it.
Every name starts with `mst` + a 4-hex-digit run id + `-`, which the leak check relies on.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.impair import DirectionStats, ImpairConfig

TESTS_DIR = Path(__file__).resolve().parent.parent
PREFIX = "mst"
# A testbed name: `mst`, the run id, `-`; "mstack..." can never match ('k' is not hex).
NAME_RE = re.compile(r"^mst([0-9a-f]{4})-")
LOCK_DIR = Path("/run/mst-testbed")  # flock()ed files: held while a run or a lease is alive
BENCH_NET = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544 benchmarking range
N_SUBNETS = 512  # /24s in the /15
IFNAMSIZ = 15
RUN_ID_ENV = "MSTACK_TESTBED_RUN_ID"  # force this process's run id (4 hex digits)


class TestbedError(RuntimeError):
    """A test bed command failed; carries the command and the kernel's words."""

    __test__ = False  # a class named Test* in a test module's namespace is not a test


# -- run identity ----------------------------------------------------------------------------


class _Run:
    """This process's run id, held by an flock so concurrent runs (other engineers, an inner
    pytest) pick different ids and can tell whether a run that owns a name is still alive."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rid: str | None = None
        self._fd: int | None = None
        self._counter = itertools.count(1)

    @property
    def rid(self) -> str:
        with self._lock:
            if self._rid is None:
                (LOCK_DIR / "runs").mkdir(parents=True, exist_ok=True)
                forced = os.environ.get(RUN_ID_ENV, "")
                if forced:
                    # Chosen by a parent (an outer test that prepares objects under the inner
                    # run's name, so that no other run on the machine ever counts them).
                    fd = None
                    if re.fullmatch(r"[0-9a-f]{4}", forced):
                        fd = _try_flock(LOCK_DIR / "runs" / forced)
                    if fd is None:
                        raise TestbedError(f"{RUN_ID_ENV}={forced!r}: not 4 hex digits or in use")
                    self._rid, self._fd = forced, fd
                    return forced
                for _ in range(100):
                    rid = os.urandom(2).hex()
                    fd = _try_flock(LOCK_DIR / "runs" / rid)
                    if fd is not None:
                        self._rid, self._fd = rid, fd
                        break
                else:
                    raise TestbedError("no free run id")
            return self._rid

    def next_n(self) -> int:
        return next(self._counter)


_RUN = _Run()


def run_id() -> str:
    """The 4-hex-digit id of this test run."""
    return _RUN.rid


def run_prefix() -> str:
    return f"{PREFIX}{run_id()}-"


def unique_name(suffix: str = "") -> str:
    """A fresh name of this run, e.g. `msta3f0-7` + suffix; short enough for an interface."""
    name = f"{run_prefix()}{_RUN.next_n()}{suffix}"
    if len(name) > IFNAMSIZ:
        raise TestbedError(f"name {name!r} longer than {IFNAMSIZ} characters")
    return name


def free_run_id() -> str:
    """A run id no live run holds, for a child process to take with MSTACK_TESTBED_RUN_ID."""
    (LOCK_DIR / "runs").mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        rid = os.urandom(2).hex()
        if rid != _RUN._rid and not run_alive(rid):
            return rid
    raise TestbedError("no free run id")


def run_alive(rid: str) -> bool:
    """Whether the run with id `rid` (in this or another process) still holds its lock."""
    if rid == _RUN._rid:
        return True
    path = LOCK_DIR / "runs" / rid
    if not path.exists():
        return False
    fd = _try_flock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def _try_flock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


# -- commands ---------------------------------------------------------------------------------


def sh(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, netns: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command (in `netns` if given), capture its output, raise TestbedError on failure."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    try:
        cp = subprocess.run(full, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"{' '.join(full)}: timed out after {timeout} s") from e
    if check and cp.returncode != 0:
        raise TestbedError(f"{' '.join(full)}: exit {cp.returncode}: {cp.stderr.strip()}")
    return cp


def ip_json(*args: str, netns: str | None = None) -> Any:
    ns = ["-n", netns] if netns else []
    out = sh(["ip", "-j", *ns, *args]).stdout
    return json.loads(out) if out.strip() else []


def netns_list() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def link_exists(name: str, netns: str | None = None) -> bool:
    ns = ["-n", netns] if netns else []
    return sh(["ip", *ns, "link", "show", "dev", name], check=False).returncode == 0


def add_netns(name: str) -> None:
    """A namespace with IPv6 off (no router/neighbour solicitations) and `lo` up."""
    sh(["ip", "netns", "add", name])
    sh(
        [
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
        netns=name,
    )
    sh(["ip", "-n", name, "link", "set", "lo", "up"])


def netns_pids(name: str) -> list[int]:
    cp = sh(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in cp.stdout.split()] if cp.returncode == 0 else []


def del_netns(name: str) -> None:
    """Delete a namespace of this run. Processes still inside were started in it by this run's
    tests (the name is unique to the run): kill them by pid first, or the namespace outlives
    its name."""
    if name not in netns_list():
        return
    for pid in netns_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    sh(["ip", "netns", "delete", name])


def del_link(name: str, netns: str | None = None) -> None:
    """Delete a link (a veth takes its peer along, synchronously, unlike a namespace)."""
    ns = ["-n", netns] if netns else []
    if link_exists(name, netns):
        sh(["ip", *ns, "link", "del", "dev", name])


def add_veth(name: str, peer: str, peer_netns: str, netns: str | None = None) -> None:
    """A veth pair: `name` in `netns` (root if None), `peer` moved into `peer_netns`."""
    ns = ["-n", netns] if netns else []
    sh(["ip", *ns, "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_netns])


def disable_ipv6_root(ifname: str) -> None:
    Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6").write_text("1\n")


def link_info(name: str, netns: str | None = None) -> dict[str, Any]:
    info = ip_json("link", "show", "dev", name, netns=netns)
    return dict(info[0])


def ethtool_off(ifname: str, features: Sequence[str], netns: str | None = None) -> None:
    argv = ["ethtool", "-K", ifname]
    for f in features:
        argv += [f, "off"]
    sh(argv, netns=netns)


def ethtool_features(ifname: str, netns: str | None = None) -> dict[str, bool]:
    """`ethtool -k` as {feature: on}."""
    out = sh(["ethtool", "-k", ifname], netns=netns).stdout
    feats: dict[str, bool] = {}
    for line in out.splitlines()[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            feats[k.strip()] = v.split()[0] == "on" if v.split() else False
    return feats


# -- subnet leases ------------------------------------------------------------------------------


@dataclass
class SubnetLease:
    """A /24 of 198.18.0.0/15, flock()ed so that concurrent fixtures and runs never share one."""

    index: int
    network: ipaddress.IPv4Network
    _fd: int

    def host(self, n: int) -> str:
        return str(self.network.network_address + n)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _root_ipv4_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for link in ip_json("-4", "addr", "show"):
        for a in link.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return nets


def lease_subnet() -> SubnetLease:
    (LOCK_DIR / "nets").mkdir(parents=True, exist_ok=True)
    start = int(run_id(), 16) % N_SUBNETS + _RUN.next_n()
    in_use = _root_ipv4_networks()
    for k in range(N_SUBNETS):
        i = (start + k) % N_SUBNETS
        # 198.18.0.0/24 ... 198.19.255.0/24
        net = ipaddress.IPv4Network(f"{BENCH_NET.network_address + 256 * i}/24")
        if any(net.overlaps(n) for n in in_use):
            continue  # somebody (not a test bed lease) uses it: leave it alone
        fd = _try_flock(LOCK_DIR / "nets" / str(i))
        if fd is not None:
            return SubnetLease(i, net, fd)
    raise TestbedError("all 512 test bed subnets of 198.18.0.0/15 are in use")


# -- processes in a namespace ---------------------------------------------------------------------


def unpin_tree(path: Path) -> None:
    """Remove a bpffs directory and everything pinned under it (unlinking a pin unpins it;
    bpffs directories go with rmdir once empty)."""
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(root, f))
        for d in dirs:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(os.path.join(root, d))
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Python children: tests/ on PYTHONPATH so `testbed` imports."""
    env = dict(os.environ)
    pp = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = f"{TESTS_DIR}{os.pathsep}{pp}" if pp else str(TESTS_DIR)
    if extra:
        env.update(extra)
    return env


def stop_process(p: subprocess.Popen[Any], grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaped. Only our own Popen objects."""
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait(timeout=10)
    for f in (p.stdin, p.stdout, p.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()


def wait_line(p: subprocess.Popen[Any], token: str, timeout: float = 10.0) -> str:
    """Read p's stdout until a line equal to `token` (a readiness signal); bounded in time.

    Reads the pipe's fd a byte at a time: nothing after the token is consumed, so a later
    communicate() still sees all the rest of the output."""
    import selectors

    assert p.stdout is not None
    fd = p.stdout.fileno()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    line = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                break
            b = os.read(fd, 1)
            if not b:
                break
            if b != b"\n":
                line += b
                continue
            text = line.decode(errors="replace")
            line.clear()
            seen.append(text)
            if text.strip() == token:
                return text
    err = p.stderr.read() if p.stderr and p.poll() is not None else ""
    raise TestbedError(f"no {token!r} from {p.args!r} in {timeout} s; stdout {seen!r} {err}")


@dataclass
class NetnsHost:
    """Something with a network namespace that tests can run commands in."""

    ns: str
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list, repr=False)

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the namespace; output captured as text unless kw says otherwise."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(
            ["ip", "netns", "exec", self.ns, *argv], check=check, timeout=timeout, **kw
        )

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start argv inside the namespace; stopped (by pid) and reaped at teardown."""
        # `ip netns exec` execs argv in place: the Popen's pid is the command's own pid.
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **kw)
        self._procs.append(p)
        return p

    def python(
        self, code: str, *args: str, check: bool = True, timeout: float = 60.0, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run a Python snippet in the namespace with this interpreter (tests/ on the path)."""
        kw.setdefault("env", child_env())
        return self.run([sys.executable, "-c", code, *args], check=check, timeout=timeout, **kw)

    def python_popen(
        self,
        code: str,
        *args: str,
        ready: str | None = None,
        ready_timeout: float = 10.0,
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        """Start a Python snippet in the namespace. With `ready`, stdout is a text pipe and this
        returns once the snippet has printed a line equal to `ready` (e.g. after listen())."""
        kw.setdefault("env", child_env())
        if ready is not None:
            kw.setdefault("stdout", subprocess.PIPE)
            kw.setdefault("stderr", subprocess.PIPE)
            kw.setdefault("text", True)
        p = self.popen([sys.executable, "-u", "-c", code, *args], **kw)
        if ready is not None:
            wait_line(p, ready, ready_timeout)
        return p

    def stop_all(self) -> None:
        for p in reversed(self._procs):
            stop_process(p)
        self._procs.clear()


@dataclass
class RemoteHost(NetnsHost):
    """A "remote host": namespace `ns`, reached from the root namespace over `host_if`."""

    host_if: str = ""
    remote_if: str = ""
    host_ifindex: int = 0
    remote_ifindex: int = 0  # in `ns`
    host_ip: str = ""
    remote_ip: str = ""
    host_mac: str = ""
    remote_mac: str = ""
    prefix_len: int = 24
    subnet: str = ""


def _set_permanent_neigh(ip: str, mac: str, dev: str, netns: str | None = None) -> None:
    ns = ["-n", netns] if netns else []
    sh(["ip", *ns, "neigh", "replace", ip, "lladdr", mac, "dev", dev, "nud", "permanent"])


def _address_and_neigh(h: RemoteHost) -> None:
    """Addresses, links up, permanent neighbours both ways (no ARP, even through loss)."""
    sh(["ip", "addr", "add", f"{h.host_ip}/{h.prefix_len}", "dev", h.host_if])
    sh(["ip", "-n", h.ns, "addr", "add", f"{h.remote_ip}/{h.prefix_len}", "dev", h.remote_if])
    sh(["ip", "link", "set", h.host_if, "up"])
    sh(["ip", "-n", h.ns, "link", "set", h.remote_if, "up"])
    h.host_mac = link_info(h.host_if)["address"]
    h.remote_mac = link_info(h.remote_if, h.ns)["address"]
    _set_permanent_neigh(h.remote_ip, h.remote_mac, h.host_if)
    _set_permanent_neigh(h.host_ip, h.host_mac, h.remote_if, h.ns)


@contextlib.contextmanager
def remote_host_cm(*, remote_gro: bool | None = None) -> Iterator[RemoteHost]:
    """Root `host_if` <-veth-> `remote_if` in namespace `ns`; torn down on exit, pass or fail.

    remote_gro=True turns GRO on at the remote end, which the XDP DEVMAP fast path needs
    (design.md section 3: ndo_xdp_xmit into a veth drops frames unless the peer has GRO or
    an XDP program); None leaves the kernel's default."""
    with contextlib.ExitStack() as stack:
        lease = lease_subnet()
        stack.callback(lease.release)
        base = unique_name()
        h = RemoteHost(
            ns=f"{base}rns",
            host_if=f"{base}h",
            remote_if=f"{base}r",
            host_ip=lease.host(1),
            remote_ip=lease.host(2),
            prefix_len=24,
            subnet=str(lease.network),
        )
        # Each undo is registered before its object exists (they check first): a setup that
        # fails half-way still leaves nothing behind.
        stack.callback(del_netns, h.ns)
        add_netns(h.ns)
        stack.callback(del_link, h.host_if)  # before the namespace: synchronous, no lingering
        add_veth(h.host_if, h.remote_if, h.ns)
        disable_ipv6_root(h.host_if)
        # design.md section 3: a kernel sending over veth leaves TCP/UDP checksums partial;
        # the remote end is where a peer of a user-level stack sends from.
        ethtool_off(h.remote_if, ["tx"], h.ns)
        if remote_gro is not None:
            sh(["ethtool", "-K", h.remote_if, "gro", "on" if remote_gro else "off"], netns=h.ns)
        _address_and_neigh(h)
        h.host_ifindex = int(link_info(h.host_if)["ifindex"])
        h.remote_ifindex = int(link_info(h.remote_if, h.ns)["ifindex"])
        stack.callback(h.stop_all)
        yield h


# -- the impaired variant -------------------------------------------------------------------------

OFFLOADS_OFF = ("tso", "gso", "gro", "tx")


@dataclass
class ImpairedRemoteHost(RemoteHost):
    """A RemoteHost whose veth is cut by an impairing L2 relay in namespace `mid_ns`."""

    mid_ns: str = ""
    mid_host_if: str = ""  # relay side facing the root namespace ("a")
    mid_remote_if: str = ""  # relay side facing the remote namespace ("b")
    impairment: dict[str, Any] = field(default_factory=dict)
    relay: subprocess.Popen[Any] | None = field(default=None, repr=False)
    stats_path: Path | None = None
    relay_log: Path | None = None

    def relay_stats(self, stop: bool = False, timeout: float = 10.0) -> RelayStats:
        """The relay's counters: a fresh dump (SIGUSR1), or its final ones with `stop`."""
        assert self.relay is not None and self.stats_path is not None
        p = self.relay
        if stop or p.poll() is not None:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=timeout)
            return RelayStats.load(self.stats_path)
        before = RelayStats.load(self.stats_path).dumps if self.stats_path.exists() else 0
        p.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats_path.exists():
                st = RelayStats.load(self.stats_path)
                if st.dumps > before:
                    return st
            time.sleep(0.01)
        raise TestbedError(f"relay {p.pid} wrote no statistics in {timeout} s")


@dataclass
class RelayStats:
    """What the relay reported. Directions as seen from the root namespace."""

    to_remote: DirectionStats  # frames root -> remote (the relay's a_to_b)
    to_host: DirectionStats  # frames remote -> root (b_to_a)
    final: bool
    dumps: int
    elapsed_s: float
    raw: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> RelayStats:
        raw = json.loads(path.read_text())
        d = raw["directions"]
        return cls(
            to_remote=DirectionStats.from_dict(d["a_to_b"]),
            to_host=DirectionStats.from_dict(d["b_to_a"]),
            final=bool(raw["final"]),
            dumps=int(raw["dumps"]),
            elapsed_s=float(raw["elapsed_s"]),
            raw=raw,
        )


def _start_relay(h: ImpairedRemoteHost, workdir: Path, args: list[str]) -> None:
    ready = workdir / "relay.ready"
    h.stats_path = workdir / "relay.json"
    h.relay_log = workdir / "relay.log"
    argv = [
        sys.executable,
        "-m",
        "testbed.relay",
        "--if-a",
        h.mid_host_if,
        "--if-b",
        h.mid_remote_if,
        "--stats",
        str(h.stats_path),
        "--ready",
        str(ready),
        *args,
    ]
    with open(h.relay_log, "wb") as log:
        h.relay = subprocess.Popen(
            ["ip", "netns", "exec", h.mid_ns, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )
    deadline = time.monotonic() + 15.0
    while not ready.exists():
        if h.relay.poll() is not None or time.monotonic() > deadline:
            stop_process(h.relay)
            raise TestbedError(f"relay did not start: {h.relay_log.read_text()[-2000:]}")
        time.sleep(0.02)


def relay_args(**params: Any) -> list[str]:
    """Keyword impairments (loss=0.1, reorder_every=10, ...) as relay command-line options."""
    ImpairConfig(**{k: v for k, v in params.items() if k != "direction"})  # validate early
    out: list[str] = []
    for k, v in params.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


@contextlib.contextmanager
def relay_bed(
    stack: contextlib.ExitStack, impairment: dict[str, Any], mid_host_if: str, host_if: bool
) -> Iterator[ImpairedRemoteHost]:
    """The parts every relay test bed shares: a leased /24, the remote and the relay's
    namespaces, the relay's veth pair to the remote side (`mid_remote_if` <-> `remote_if`),
    all undone by `stack`. The body sets up the side facing this host (`mid_host_if`, named
    `<base><mid_host_if>`; with `host_if`, a root-namespace link `<base>h` is named for it);
    the relay starts when the body returns."""
    args = relay_args(**impairment)
    lease = lease_subnet()
    stack.callback(lease.release)
    base = unique_name()
    h = ImpairedRemoteHost(
        ns=f"{base}rns",
        mid_ns=f"{base}mid",
        host_if=f"{base}h" if host_if else "",
        mid_host_if=f"{base}{mid_host_if}",
        mid_remote_if=f"{base}b",
        remote_if=f"{base}r",
        host_ip=lease.host(1),
        remote_ip=lease.host(2),
        prefix_len=24,
        subnet=str(lease.network),
        impairment=dict(impairment),
    )
    workdir = Path(tempfile.mkdtemp(prefix=f"{base}-relay-"))
    stack.callback(shutil.rmtree, workdir, True)
    # Deleting a namespace deletes its links (a TAP device, the veth pair) with it.
    stack.callback(del_netns, h.ns)
    add_netns(h.ns)
    stack.callback(del_netns, h.mid_ns)
    add_netns(h.mid_ns)
    stack.callback(del_link, h.mid_remote_if, h.mid_ns)
    add_veth(h.mid_remote_if, h.remote_if, h.ns, netns=h.mid_ns)
    yield h
    stack.callback(h.stop_all)
    _start_relay(h, workdir, args)
    assert h.relay is not None
    stack.callback(stop_process, h.relay)


@contextlib.contextmanager
def impaired_remote_host_cm(**impairment: Any) -> Iterator[ImpairedRemoteHost]:
    """root `host_if` <-> [mid_ns: relay] <-> `remote_if` in `ns`, one /24 end to end."""
    with contextlib.ExitStack() as stack:
        with relay_bed(stack, impairment, "a", host_if=True) as h:
            _host_side_veth(stack, h)
        yield h


def _host_side_veth(stack: contextlib.ExitStack, h: ImpairedRemoteHost) -> None:
    """This host's end: a veth from the root namespace to the relay, offloads off."""
    stack.callback(del_link, h.host_if)
    add_veth(h.host_if, h.mid_host_if, h.mid_ns)
    disable_ipv6_root(h.host_if)
    # Real frames through the relay, never 64 KB super-frames, and full checksums on the
    # wire (a partial checksum would be forwarded as a bad one).
    ethtool_off(h.host_if, OFFLOADS_OFF)
    ethtool_off(h.mid_host_if, OFFLOADS_OFF, h.mid_ns)
    ethtool_off(h.mid_remote_if, OFFLOADS_OFF, h.mid_ns)
    ethtool_off(h.remote_if, OFFLOADS_OFF, h.ns)
    for dev in (h.mid_host_if, h.mid_remote_if):
        sh(["ip", "-n", h.mid_ns, "link", "set", dev, "promisc", "on", "up"])
    _address_and_neigh(h)
    h.host_ifindex = int(link_info(h.host_if)["ifindex"])
    h.remote_ifindex = int(link_info(h.remote_if, h.ns)["ifindex"])


# -- stale objects of dead runs (a pytest that was SIGKILLed) ------------------------------------


def stale_objects() -> dict[str, list[str]]:
    """Namespaces, root links and bpffs entries named by test runs that are no longer alive."""

    def dead(name: str) -> bool:
        m = NAME_RE.match(name)
        return m is not None and not run_alive(m.group(1))

    links = [link["ifname"] for link in ip_json("link", "show")]
    bpf = Path("/sys/fs/bpf")
    pins = [str(p) for p in bpf.iterdir()] if bpf.is_dir() else []
    return {
        "netns": sorted(n for n in netns_list() if dead(n)),
        "links": sorted(n for n in links if dead(n)),
        "pins": sorted(p for p in pins if dead(Path(p).name)),
    }


def cleanup_stale(dry_run: bool = True) -> dict[str, list[str]]:
    """Remove what stale_objects() finds. Processes left in a stale namespace are not ours to
    kill (their run is gone): they are reported and the namespace's name is removed."""
    found = stale_objects()
    if dry_run:
        return found
    for link in found["links"]:
        del_link(link)
    for ns in found["netns"]:
        pids = netns_pids(ns)
        if pids:
            print(f"{ns}: processes still inside, not killed: {pids}", file=sys.stderr)
        sh(["ip", "netns", "delete", ns], check=False)
    for pin in found["pins"]:
        if os.path.isdir(pin):
            shutil.rmtree(pin, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pin)
    return found


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(
        prog="testbed.netns", description="List (or remove) test bed objects of dead runs."
    )
    ap.add_argument("--cleanup-stale", action="store_true", help="remove them")
    a = ap.parse_args()
    print(json.dumps(cleanup_stale(dry_run=not a.cleanup_stale), indent=1))
