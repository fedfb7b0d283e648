"""`mstackctl doctor`: checks this host for what MultiStack needs and says how to fix what is
missing. Each check returns findings (ok / warn / fail / skip, with a fix hint); a `fail` is
something required, and makes doctor exit non-zero. The XDP and AF_XDP probes really try:
in a child process inside a network namespace of its own (nothing outside can see it, and it
vanishes with the child) they create a veth pair, load and attach a trivial XDP program with
libbpf and bind an AF_XDP socket to it."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import select
import signal
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mstack import admin

Status = Literal["ok", "warn", "fail", "skip"]

MIN_KERNEL = (5, 15)  # SO_NETNS_COOKIE, bpf_redirect_neigh, CAP_BPF, pidfds: all there by 5.15
TESTED_KERNEL = (6, 1)
BTF_ENV = "MSTACK_BTF_PATH"  # tests point it elsewhere to simulate a kernel without BTF
DEFAULT_BTF = "/sys/kernel/btf/vmlinux"
FRAME_SIZE = 2048
# Capability numbers (linux/capability.h).
CAPS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_IPC_LOCK": 14, "CAP_SYS_ADMIN": 21,
        "CAP_BPF": 39}  # fmt: skip
CAP_IPC_LOCK = 14
PROBE_TIMEOUT = 20.0


@dataclass
class Finding:
    check: str
    status: Status
    detail: str
    hint: str = ""


@dataclass
class Options:
    run_dir: Path
    ifaces: list[str] = field(default_factory=list)
    policy: Path = Path("/etc/mstack/policy.toml")
    config: Path = Path("/etc/mstack/mstackd.toml")
    probe: bool = True  # the veth/XDP/AF_XDP probe (needs root)
    try_attach: bool = False  # attach an XDP_PASS program to each NIC for a moment (needs root)


@dataclass
class Report:
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not any(f.status == "fail" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "findings": [asdict(f) for f in self.findings]}


@dataclass
class Context:
    """What the checks share: the options, the daemon's status (None: not reachable) and the
    daemon configuration's UMEM size per port."""

    opts: Options
    status: dict[str, Any] | None = None
    status_error: str = ""
    umem_bytes: int = 4096 * FRAME_SIZE
    mode: str = "native"


# -- host ------------------------------------------------------------------------------------


def kernel_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def check_kernel(ctx: Context) -> list[Finding]:
    rel = os.uname().release
    v = kernel_version(rel)
    if v < MIN_KERNEL:
        return [Finding("kernel", "fail", f"Linux {rel}; MultiStack needs {MIN_KERNEL[0]}."
                        f"{MIN_KERNEL[1]} or later (SO_NETNS_COOKIE, bpf_redirect_neigh, CAP_BPF)",
                        "install a newer kernel (Debian 12: linux-image-amd64, 6.1)")]  # fmt: skip
    if v < TESTED_KERNEL:
        return [Finding("kernel", "warn", f"Linux {rel}: older than what MultiStack is tested on",
                        "Linux 6.1 or later is tested")]  # fmt: skip
    return [Finding("kernel", "ok", f"Linux {rel}")]


def btf_path() -> Path:
    return Path(os.environ.get(BTF_ENV, DEFAULT_BTF))


def check_btf(ctx: Context) -> list[Finding]:
    p = btf_path()
    if p.is_file():
        return [Finding("kernel BTF", "ok", f"{p} ({p.stat().st_size // 1024} KB)")]
    return [Finding("kernel BTF", "fail", f"{p} is missing: the kernel has no BTF",
                    "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's kernels are); "
                    "libbpf needs it to load the switch")]  # fmt: skip


def effective_caps(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def check_bpf_permissions(ctx: Context) -> list[Finding]:
    out: list[Finding] = []
    eff = effective_caps()
    missing = [n for n, bit in CAPS.items() if not eff >> bit & 1]
    if not missing:
        out.append(Finding("BPF permissions", "ok", "this process has " + ", ".join(CAPS)))
    else:
        out.append(Finding("BPF permissions", "warn",
                           f"this process lacks {', '.join(missing)}: the probes that load BPF "
                           "programs and create links are skipped",
                           "run `mstackctl doctor` as root for the full check (mstackd itself "
                           "runs as root with these capabilities)"))  # fmt: skip
    jit = _read("/proc/sys/net/core/bpf_jit_enable")
    if jit == "0":
        out.append(Finding("BPF JIT", "warn", "net.core.bpf_jit_enable = 0: BPF is interpreted",
                           "sysctl -w net.core.bpf_jit_enable=1"))  # fmt: skip
    elif jit:
        out.append(Finding("BPF JIT", "ok", f"net.core.bpf_jit_enable = {jit}"))
    if not _bpffs_mounted():
        out.append(
            Finding(
                "bpffs",
                "warn",
                "no bpffs mounted at /sys/fs/bpf",
                "mstackd mounts it when it starts; or: mount -t bpf bpf /sys/fs/bpf",
            )
        )
    else:
        out.append(Finding("bpffs", "ok", "bpffs mounted at /sys/fs/bpf"))
    return out


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _bpffs_mounted() -> bool:
    for line in _read("/proc/self/mountinfo").splitlines():
        parts = line.split(" - ")
        if len(parts) == 2 and parts[1].startswith("bpf ") and " /sys/fs/bpf " in parts[0]:
            return True
    return False


def _fmt_bytes(n: int) -> str:
    if n == resource.RLIM_INFINITY or n < 0:
        return "unlimited"
    return f"{n // (1 << 20)} MB" if n >= 1 << 20 else f"{n // 1024} KB"


def _limits_memlock(pid: int) -> int | None:
    """The soft 'Max locked memory' of a process, in bytes (RLIM_INFINITY if unlimited)."""
    for line in _read(f"/proc/{pid}/limits").splitlines():
        if line.startswith("Max locked memory"):
            soft = line.split()[3]
            return resource.RLIM_INFINITY if soft == "unlimited" else int(soft)
    return None


def check_memlock(ctx: Context) -> list[Finding]:
    """A port's UMEM is locked memory charged to mstackd: it needs CAP_IPC_LOCK or an
    RLIMIT_MEMLOCK that holds all its ports' UMEMs."""
    umem = ctx.umem_bytes
    what = f"one port's UMEM is {_fmt_bytes(umem)}"
    if ctx.status is not None:
        pid = int(ctx.status["pid"])
        limit = _limits_memlock(pid)
        try:
            has_cap = bool(effective_caps(pid) >> CAP_IPC_LOCK & 1)
        except OSError:
            has_cap = False
        if has_cap:
            return [Finding("locked memory", "ok", f"mstackd (pid {pid}) has CAP_IPC_LOCK; {what}")]
        if limit is not None and (limit == resource.RLIM_INFINITY or limit >= umem):
            ports = "any number of" if limit == resource.RLIM_INFINITY else str(limit // umem)
            return [Finding("locked memory", "ok" if limit == resource.RLIM_INFINITY else "warn",
                            f"mstackd (pid {pid}): RLIMIT_MEMLOCK {_fmt_bytes(limit)}, no "
                            f"CAP_IPC_LOCK: room for {ports} ports; {what}",
                            "give mstackd CAP_IPC_LOCK (the packaged unit does) or "
                            "LimitMEMLOCK=infinity")]  # fmt: skip
        return [Finding("locked memory", "fail",
                        f"mstackd (pid {pid}): RLIMIT_MEMLOCK {_fmt_bytes(limit or 0)} and no "
                        f"CAP_IPC_LOCK: not even one port fits; {what}",
                        "run mstackd with CAP_IPC_LOCK (the packaged unit does) or "
                        "LimitMEMLOCK=infinity / `ulimit -l unlimited`")]  # fmt: skip
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if effective_caps() >> CAP_IPC_LOCK & 1:
        return [Finding("locked memory", "ok",
                        f"CAP_IPC_LOCK here (RLIMIT_MEMLOCK {_fmt_bytes(soft)}): a daemon "
                        f"started from this shell can lock its UMEMs; {what}")]  # fmt: skip
    if soft != resource.RLIM_INFINITY and soft < umem:
        return [
            Finding(
                "locked memory",
                "warn",
                f"RLIMIT_MEMLOCK {_fmt_bytes(soft)} without CAP_IPC_LOCK: a daemon "
                f"started from this shell could not lock a port; {what}",
                "the packaged unit gives mstackd CAP_IPC_LOCK and "
                "LimitMEMLOCK=infinity; by hand: `ulimit -l unlimited` as root",
            )
        ]
    return [Finding("locked memory", "ok", f"RLIMIT_MEMLOCK {_fmt_bytes(soft)}; {what}")]


# -- the XDP / AF_XDP probe (child process, private network namespace) ----------------------

CLONE_NEWNET = 0x40000000


def _probe_in_child() -> dict[str, Any]:
    """Runs in a forked child that is alone in a new network namespace."""
    from pyroute2 import IPRoute

    from mstackd import kabi, libbpf, paths
    from mstackd.xsk import Geometry, create_xsk

    res: dict[str, Any] = {}
    with IPRoute() as ipr:
        ipr.link("add", ifname="mstdoc0", kind="veth", peer={"ifname": "mstdoc1"})
        for name in ("mstdoc0", "mstdoc1"):
            ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
    ifindex = socket.if_nametoindex("mstdoc0")
    try:
        obj = libbpf.BpfObject(paths.bpf_object("xdp_count.bpf.o")).load()
    except (OSError, libbpf.BpfError) as e:
        res["load"] = str(e)
        return res
    res["load"] = ""
    with obj:
        fd = obj.program_fd("xdp_count")
        for mode, flag in (("native", kabi.XDP_FLAGS_DRV_MODE),
                           ("generic", kabi.XDP_FLAGS_SKB_MODE)):  # fmt: skip
            try:
                libbpf.xdp_attach(ifindex, fd, flag)
                ok = libbpf.xdp_query_id(ifindex, flag) != 0
                libbpf.xdp_detach(ifindex, flag)
                res[mode] = "" if ok else "attached, but the kernel reports no program"
            except (OSError, libbpf.BpfError) as e:
                res[mode] = str(e)
    try:
        geom = Geometry(frames=64, rx_size=64, tx_size=64, fill_size=64, comp_size=64)
        h = create_xsk("mstdoc0", geom)
        h.close()
        res["af_xdp"] = ""
    except (OSError, ValueError, libbpf.BpfError) as e:
        res["af_xdp"] = str(e)
    return res


def run_probe(timeout: float = PROBE_TIMEOUT) -> dict[str, Any]:
    """Fork; the child unshares its network namespace, probes, writes JSON to a pipe and
    exits (its namespace, veth pair and program go with it). The parent kills it by pid if
    it does not answer in time."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                out: dict[str, Any] = {"error": f"unshare(CLONE_NEWNET): {os.strerror(err)}"}
            else:
                out = _probe_in_child()
            os.write(w, json.dumps(out).encode())
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.write(w, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    try:
        while True:
            ready, _, _ = select.select([r], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                return {"error": f"the probe did not finish within {timeout} s"}
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    try:
        res: dict[str, Any] = json.loads(data or b"{}")
    except ValueError:
        res = {"error": "the probe died without an answer"}
    return res


def check_xdp(ctx: Context) -> list[Finding]:
    if not ctx.opts.probe:
        return [Finding("XDP", "skip", "probe disabled (--no-probe)")]
    eff = effective_caps()
    need = ("CAP_NET_ADMIN", "CAP_BPF", "CAP_SYS_ADMIN", "CAP_NET_RAW")
    if not all(eff >> CAPS[n] & 1 for n in need):
        return [Finding("XDP", "skip", "needs root (creates a veth pair in a private network "
                        "namespace and loads an XDP program)", "run doctor as root")]  # fmt: skip
    res = probe()
    if "error" in res:
        return [
            Finding(
                "XDP",
                "fail",
                f"probe failed: {res['error']}",
                "run doctor as root on the host (not in a restricted container)",
            )
        ]
    if res.get("load"):
        return [Finding("XDP", "fail", f"loading an XDP program failed: {res['load']}",
                        "root with CAP_BPF; check kernel.unprivileged_bpf_disabled and kernel "
                        "lockdown (/sys/kernel/security/lockdown)")]  # fmt: skip
    out = []
    native, generic = res.get("native", "?"), res.get("generic", "?")
    if not native:
        out.append(Finding("XDP", "ok", "an XDP program loads and attaches in native (veth) "
                           "and generic mode" if not generic else
                           f"native mode works; generic failed: {generic}"))  # fmt: skip
    elif not generic:
        out.append(
            Finding(
                "XDP",
                "warn",
                f"only generic XDP works here ({native})",
                "generic mode works on any NIC, slower; it needs GRO off",
            )
        )
    else:
        out.append(Finding("XDP", "fail", f"XDP does not attach: native: {native}; generic: "
                           f"{generic}", "a kernel with CONFIG_XDP_SOCKETS and BPF syscall "
                           "support; run as root"))  # fmt: skip
    if not res.get("af_xdp", "?"):
        out.append(Finding("AF_XDP", "ok", "an AF_XDP socket (copy mode) binds to a veth"))
    else:
        out.append(Finding("AF_XDP", "fail", f"creating an AF_XDP socket failed: "
                           f"{res.get('af_xdp')}", "a kernel with CONFIG_XDP_SOCKETS=y; "
                           "CAP_NET_RAW; enough locked memory"))  # fmt: skip
    return out


def probe() -> dict[str, Any]:
    """The XDP/AF_XDP probe (a seam for tests)."""
    return run_probe()


# -- NICs ------------------------------------------------------------------------------------


def _nic_features(ifname: str) -> dict[str, bool]:
    from pyroute2.ethtool import Ethtool

    feats = Ethtool().get_features(ifname).features
    return {k: bool(feats[k].enable) for k in ("rx-gro", "tx-checksum-ip-generic", "rx-checksum")
            if k in feats}  # fmt: skip


def _nic_kind(ifname: str) -> str:
    with contextlib.suppress(OSError):
        for line in Path(f"/sys/class/net/{ifname}/uevent").read_text().splitlines():
            if line.startswith("DEVTYPE="):
                return line.split("=", 1)[1]
    drv = Path(f"/sys/class/net/{ifname}/device/driver")
    return drv.resolve().name if drv.exists() else ""


def check_nics(ctx: Context) -> list[Finding]:
    attached = {n["iface"]: n for n in (ctx.status or {}).get("nics", [])}
    names = list(ctx.opts.ifaces) or list(attached)
    if not names:
        return [Finding("NICs", "skip", "no NIC given (--iface) and none attached by a "
                        "running mstackd")]  # fmt: skip
    out: list[Finding] = []
    for ifname in names:
        out += check_nic(ctx, ifname, attached.get(ifname))
    return out


def check_nic(ctx: Context, ifname: str, nic: dict[str, Any] | None) -> list[Finding]:
    from mstackd import kabi, libbpf

    tag = f"NIC {ifname}"
    try:
        ifindex = socket.if_nametoindex(ifname)
    except OSError:
        return [Finding(tag, "fail", f"no interface {ifname} here", "check the name (ip link)")]
    out: list[Finding] = []
    mode = nic["mode"] if nic else ctx.mode
    try:
        drv = libbpf.xdp_query_id(ifindex, kabi.XDP_FLAGS_DRV_MODE)
        skb = libbpf.xdp_query_id(ifindex, kabi.XDP_FLAGS_SKB_MODE)
    except (OSError, libbpf.BpfError) as e:
        out.append(Finding(f"{tag} XDP", "warn", f"cannot query XDP: {e}", "run doctor as root"))
        drv = skb = 0
    prog = drv or skb
    if nic and prog and prog == nic.get("prog_id"):
        out.append(Finding(f"{tag} XDP", "ok", f"the switch is attached in {nic['mode']} mode "
                           f"(program {prog})"))  # fmt: skip
    elif prog:
        kind = "native" if drv else "generic"
        out.append(Finding(f"{tag} XDP", "fail", f"a foreign XDP program (id {prog}, {kind} "
                           "mode) is attached: mstackd will not replace or chain it",
                           f"remove it if it is not needed (ip link set dev {ifname} xdp off; "
                           "see bpftool net show) or use another NIC"))  # fmt: skip
    elif ctx.opts.try_attach:
        out.append(try_attach(ifname, mode))
    else:
        out.append(Finding(f"{tag} XDP", "ok", f"no XDP program; mstackd would attach in {mode} "
                           "mode (not tried: --try-attach tries it)"))  # fmt: skip
    try:
        feats = _nic_features(ifname)
    except Exception as e:  # pyroute2's ethtool raises several kinds
        out.append(Finding(f"{tag} offloads", "warn", f"cannot read features: {e}",
                           f"ethtool -k {ifname}"))  # fmt: skip
        return out
    gro = feats.get("rx-gro")
    if gro and mode == "generic":
        out.append(Finding(f"{tag} GRO", "fail", "GRO is on and the mode is generic: generic "
                           "XDP runs after GRO, which merges frames beyond a port's 2 KB frames",
                           f"ethtool -K {ifname} gro off, or use native mode"))  # fmt: skip
    else:
        out.append(Finding(f"{tag} GRO", "ok", f"GRO {'on' if gro else 'off'} ({mode} mode)"))
    tx_csum = feats.get("tx-checksum-ip-generic")
    kind = _nic_kind(ifname)
    if kind == "veth" and tx_csum:
        out.append(Finding(f"{tag} checksums", "warn", "a veth with TX checksum offload on: "
                           "frames a local kernel sends over it carry partial checksums, which a "
                           "user-level stack rejects", "on the sending end of the veth pair: "
                           "ethtool -K <peer> tx off (test beds)"))  # fmt: skip
    else:
        out.append(Finding(f"{tag} checksums", "ok",
                           f"TX checksum offload {'on' if tx_csum else 'off'}, RX "
                           f"{'on' if feats.get('rx-checksum') else 'off'}"
                           + (f" ({kind})" if kind else "")))  # fmt: skip
    return out


def try_attach(ifname: str, mode: str) -> Finding:
    """Attach xdp_count (XDP_PASS for every frame) in native, then generic mode, and detach it
    at once: whether this NIC's driver takes native XDP is found by trying (design.md
    section 3), never by driver name. Some drivers reset the link when XDP comes or goes."""
    from mstackd import libbpf
    from mstackd.probe import Mode, PortCounter

    tag = f"NIC {ifname} XDP"
    if not all(effective_caps() >> CAPS[n] & 1 for n in ("CAP_NET_ADMIN", "CAP_BPF")):
        return Finding(tag, "skip", "--try-attach needs root", "run doctor as root")
    errors = {}
    modes: tuple[Mode, ...] = ("native", "generic")
    for m in modes:
        try:
            with PortCounter(ifname, m):
                pass
        except (OSError, libbpf.BpfError) as e:
            errors[m] = str(e).splitlines()[0]
            continue
        if m == "native":
            return Finding(tag, "ok", "native XDP attaches (tried, and detached)")
        if mode == "native":
            return Finding(tag, "fail", f"native XDP does not attach ({errors['native']}); "
                           "generic does", "set mode = \"generic\" in mstackd.toml (and turn "
                           f"GRO off: ethtool -K {ifname} gro off)")  # fmt: skip
        return Finding(tag, "ok", f"generic XDP attaches (native does not: {errors['native']})")
    return Finding(tag, "fail", f"XDP does not attach: {errors}", "another NIC, or a kernel "
                   "and driver with XDP support")  # fmt: skip


# -- daemon and files ------------------------------------------------------------------------


def check_daemon(ctx: Context) -> list[Finding]:
    if ctx.status is not None:
        st = ctx.status
        return [Finding("mstackd", "ok", f"mstackd reachable: {st.get('version')} (pid "
                        f"{st.get('pid')}), {len(st.get('nics', []))} NIC(s) attached, "
                        f"{st.get('ports', 0)} port(s)")]  # fmt: skip
    return [Finding("mstackd", "warn", f"mstackd not reachable: {ctx.status_error}",
                    "systemctl start mstackd (or check admin_group in mstackd.toml); "
                    "without it, mstack-run runs programs on the kernel stack")]  # fmt: skip


def check_config(ctx: Context) -> list[Finding]:
    from mstackd.config import ConfigError, load

    p = ctx.opts.config
    if not p.exists():
        return [Finding("mstackd.toml", "ok", f"{p} absent: mstackd uses its defaults")]
    try:
        cfg = load(p)
    except ConfigError as e:
        return [Finding("mstackd.toml", "fail", str(e), f"fix {p} (man mstackd)")]
    ctx.umem_bytes = cfg.umem_frames * FRAME_SIZE
    ctx.mode = cfg.mode
    return [Finding("mstackd.toml", "ok", f"{p} valid (mode {cfg.mode}, attach "
                    f"{cfg.attach or 'nothing'})")]  # fmt: skip


def check_policy(ctx: Context) -> list[Finding]:
    from mstack.policy import PolicyError, load

    p = ctx.opts.policy
    if not p.exists():
        return [
            Finding(
                "policy",
                "warn",
                f"{p} does not exist: every socket stays on the kernel",
                "install the package's default or write one (docs/policy.md, mstack-run(1))",
            )
        ]
    try:
        apps = load(p)
    except PolicyError as e:
        return [Finding("policy", "fail", f"invalid: {e}", f"fix it: mstackctl policy check {p}")]
    names = ", ".join(sorted(apps)) or "none"
    return [Finding("policy", "ok", f"{p} valid ({len(apps)} application(s): {names})")]


CHECKS: list[Callable[[Context], list[Finding]]] = [
    check_kernel,
    check_btf,
    check_bpf_permissions,
    check_xdp,
    check_daemon,
    check_config,  # before memlock and NICs: the UMEM size and the attach mode come from it
    check_memlock,
    check_nics,
    check_policy,
]


def run(opts: Options) -> Report:
    ctx = Context(opts)
    try:
        ctx.status = admin.request(opts.run_dir, "status", timeout=5.0)
    except admin.AdminError as e:
        ctx.status_error = str(e)
    findings: list[Finding] = []
    for check in CHECKS:
        try:
            findings += check(ctx)
        except Exception as e:  # one broken check must not hide the others
            findings.append(Finding(check.__name__.removeprefix("check_"), "fail",
                                    f"the check itself failed: {type(e).__name__}: {e}",
                                    "report this as a bug"))  # fmt: skip
    return Report(findings)


def render(report: Report) -> str:
    lines = []
    width = max((len(f.check) for f in report.findings), default=10)
    for f in report.findings:
        lines.append(f"{f.status.upper():5} {f.check.ljust(width)}  {f.detail}")
        if f.hint and f.status != "ok":
            lines.append(f"{'':5} {'':{width}}  fix: {f.hint}")
    fails = sum(f.status == "fail" for f in report.findings)
    warns = sum(f.status == "warn" for f in report.findings)
    lines.append(
        "doctor: " + ("everything required is here" if not fails else f"{fails} required "
                      "thing(s) missing") + (f", {warns} warning(s)" if warns else "")
    )  # fmt: skip
    return "\n".join(lines)
