"""mstackctl: the MultiStack admin CLI. One click group carrying a context object; every
listing takes --json (the daemon's own keys, documented in docs/mstackctl.md) and prints a
readable table otherwise. Exit statuses mean something: EX_UNAVAILABLE when mstackd cannot be
reached, 1 when it refused the request."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mstack import __version__, admin, exitcodes


@dataclass
class Ctx:
    run_dir: Path

    def ask(self, cmd: str, **args: Any) -> Any:
        try:
            return admin.request(self.run_dir, cmd, **args)
        except admin.AdminError as e:
            click.echo(f"mstackctl: {e}", err=True)
            sys.exit(exitcodes.EX_UNAVAILABLE if e.unavailable else exitcodes.EX_FAILURE)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> None:
    """A plain aligned table: cols are (key, heading)."""
    cells = [[h for _, h in cols]] + [
        ["-" if r.get(k) is None else str(r.get(k)) for k, _ in cols] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@click.group(
    help="Administer MultiStack: the switch on each NIC, user-level stack ports, the namespace "
    "shared with the host stack, per-connection state and statistics."
)
@click.option(
    "--run-dir",
    envvar="MSTACK_RUN_DIR",
    default="/run/mstack",
    show_default=True,
    type=click.Path(path_type=Path),
    help="mstackd's run directory (admin.sock lives there).",
)
@click.version_option(__version__, prog_name="mstackctl")
@click.pass_context
def main(ctx: click.Context, run_dir: Path) -> None:
    ctx.obj = Ctx(run_dir=run_dir)


json_opt = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


@main.command(help="Daemon state: attached NICs and their modes, ports, bindings.")
@json_opt
@click.pass_obj
def status(c: Ctx, as_json: bool) -> None:
    st = c.ask("status")
    if as_json:
        emit_json(st)
        return
    click.echo(f"mstackd {st['version']} (pid {st['pid']}), run dir {st['run_dir']}")
    click.echo(f"BPF pins {st['bpf_dir']}, ports namespace {st['ports_netns']}")
    click.echo(f"ports {st['ports']}, bindings {st['bindings']}, processes {len(st['processes'])}")
    if not st["nics"]:
        click.echo("no NIC attached")
        return
    rows = [{**n, "addrs": ",".join(n["addrs"]),
             "fast": "on" if n.get("fast_path", {}).get("on") else "off"}
            for n in st["nics"]]  # fmt: skip
    table(rows, [("iface", "NIC"), ("mode", "MODE"), ("prog_id", "PROG"), ("mtu", "MTU"),
                 ("mac", "MAC"), ("fast", "FAST-PATH"), ("addrs", "ADDRESSES")])  # fmt: skip


@main.command(help="Attach the switch to IFACE (running daemon only; see mstackd.toml).")
@click.argument("iface")
@click.option("--mode", type=click.Choice(["native", "generic"]), default="native")
@json_opt
@click.pass_obj
def attach(c: Ctx, iface: str, mode: str, as_json: bool) -> None:
    r = c.ask("attach", iface=iface, mode=mode)
    if as_json:
        emit_json(r)
    else:
        click.echo(f"attached {r['iface']} ({r['mode']}, XDP program {r['prog_id']})")


@main.command(help="Detach the switch from IFACE.")
@click.argument("iface")
@click.pass_obj
def detach(c: Ctx, iface: str) -> None:
    c.ask("detach", iface=iface)
    click.echo(f"detached {iface}")


@main.command(help="List ports (one per application stack): owner pid, veth, counters.")
@json_opt
@click.pass_obj
def ports(c: Ctx, as_json: bool) -> None:
    ps = c.ask("ports")
    if as_json:
        emit_json(ps)
        return
    rows = [{**p, **p["counters"], "umem": f"{p['umem_bytes'] // 1024} KB"} for p in ps]
    table(rows, [("port_id", "PORT"), ("pid", "PID"), ("host_if", "HOST-END"),
                 ("app_if", "APP-END"), ("umem", "UMEM"), ("rx_frames", "RX"),
                 ("tx_frames", "TX"), ("tx_dropped", "TX-DROP")])  # fmt: skip


@main.command(help="List bindings (proto, IP, port) with their listen-group members.")
@json_opt
@click.pass_obj
def bindings(c: Ctx, as_json: bool) -> None:
    bs = c.ask("bindings")
    if as_json:
        emit_json(bs)
        return
    rows = [
        {
            **b,
            "local": f"{b['addr']}:{b['port']}"
            + (f"-{b['last_port']}" if b["kind"] == "lease" else ""),
            "members": ",".join(map(str, b["members"])) or "-",
            "claimants": ",".join(map(str, b["claimants"])),
        }
        for b in bs
    ]
    table(rows, [("binding_id", "ID"), ("proto", "PROTO"), ("local", "LOCAL"), ("kind", "KIND"),
                 ("members", "GROUP"), ("port_id", "PORT"), ("sockets", "SOCKETS"),
                 ("claimants", "PIDS")])  # fmt: skip


@main.command(
    help="Connections of user-level stacks, like `ss -tni` (state, cwnd, srtt, ...). CWND and "
    "SSTHRESH are in bytes, UTCP's unit (ss shows segments: divide by the mss in OPTIONS)."
)
@click.option("--pid", type=int, help="Only this process's stack.")
@json_opt
@click.pass_obj
def conns(c: Ctx, pid: int | None, as_json: bool) -> None:
    cs = c.ask("conns", pid=pid)
    if as_json:
        emit_json(cs)
        return
    rows = []
    for x in cs:
        if "error" in x:
            click.echo(f"pid {x['pid']} port {x['port_id']}: {x['error']}", err=True)
            continue
        o = x["options"]
        opts = [f"mss {o['mss']}"]
        if o["wscale"]:
            opts.append("ws {}/{}".format(*o["wscale"]))
        opts += [name for name in ("sack", "timestamps") if o[name]]
        if x["ssthresh"] >= 1 << 31:
            x = {**x, "ssthresh": "inf"}  # not yet set by a loss
        rows.append({**x, "opts": ",".join(opts),
                     "rtt": f"{x['srtt_us'] / 1000:.1f}/{x['rttvar_us'] / 1000:.1f}"})  # fmt: skip
    table(rows, [("pid", "PID"), ("state", "STATE"), ("local", "LOCAL"), ("remote", "REMOTE"),
                 ("cc", "CC"), ("cwnd", "CWND(B)"), ("ssthresh", "SSTHRESH(B)"), ("rtt", "RTT(ms)"),
                 ("retransmits", "RETRANS"), ("opts", "OPTIONS")])  # fmt: skip


def _print_stats(st: dict[str, Any]) -> None:
    click.echo("ingress (NIC):  " + "  ".join(f"{k}={v}" for k, v in st["ingress"].items() if v))
    click.echo("egress (ports): " + "  ".join(f"{k}={v}" for k, v in st["egress"].items() if v))
    for nic, fp in st.get("fast_path", {}).items():
        click.echo(f"fast path {nic}: " + ("on" if fp["on"] else "off") + "  " +
                   "  ".join(f"{k}={v}" for k, v in fp.items() if k != "on"))  # fmt: skip
    click.echo(f"flows: {st['flows']}")
    ho = st.get("handoff", {})
    click.echo("hand-offs:      " + ("  ".join(f"{k}={v}" for k, v in ho.items() if v) or "none"))
    rows = [{"port_id": k, **v} for k, v in st["ports"].items()]
    if rows:
        table(rows, [("port_id", "PORT"), ("rx_frames", "RX"), ("rx_bytes", "RX-BYTES"),
                     ("tx_frames", "TX"), ("tx_bytes", "TX-BYTES"),
                     ("tx_dropped", "TX-DROP")])  # fmt: skip


@main.command(
    "fast-path",
    help="Turn the switch's XDP egress fast path on or off at run time (off: TC carries every "
    "frame, no XDP program on the ports' host ends; on: each native NIC is probed again).",
)
@click.argument("state", type=click.Choice(["on", "off"]))
@json_opt
@click.pass_obj
def fast_path(c: Ctx, state: str, as_json: bool) -> None:
    r = c.ask("fast_path", on=state == "on")
    if as_json:
        emit_json(r)
        return
    for nic, fp in r.items():
        click.echo(f"{nic}: fast path " + ("on" if fp["on"] else "off"))


@main.command(help="Switch counters: ingress verdicts, egress drops by reason, per port.")
@click.option("--watch", is_flag=True, help="Refresh every second until interrupted.")
@click.option("--count", type=int, default=0, help="With --watch: stop after N refreshes.")
@json_opt
@click.pass_obj
def stats(c: Ctx, watch: bool, count: int, as_json: bool) -> None:
    n = 0
    while True:
        st = c.ask("stats")
        if as_json:
            click.echo(json.dumps(st, sort_keys=True))
        else:
            if watch:
                click.echo(time.strftime("-- %H:%M:%S"))
            _print_stats(st)
        n += 1
        if not watch or (count and n >= count):
            return
        try:
            time.sleep(1.0)
        except KeyboardInterrupt:
            return


@main.group(help="Policy file tools.")
def policy() -> None:
    pass


@policy.command("check", help="Validate a policy file; print what each application gets.")
@click.argument("file", type=click.Path(path_type=Path))
@json_opt
def policy_check(file: Path, as_json: bool) -> None:
    from mstack.policy import PolicyError, compact
    from mstack.policy import load as load_policy

    try:
        apps = load_policy(file)
    except PolicyError as e:
        click.echo(f"mstackctl: {e}", err=True)
        sys.exit(exitcodes.EX_DATAERR)
    if as_json:
        emit_json({name: {"exe": a.exe, "compact": compact(a)} for name, a in apps.items()})
        return
    for name, a in apps.items():
        t = a.tcp
        click.echo(f"[{name}] exe {', '.join(a.exe) or '(by --app only)'}")
        click.echo("  listen:  " + (", ".join(e.compact() for e in a.listen) or "-"))
        click.echo("  connect: " + (", ".join(e.compact() for e in a.connect) or "-"))
        click.echo(f"  tcp: {t.congestion_control}, sack {t.sack}, window scaling "
                   f"{t.window_scaling}, timestamps {t.timestamps}, initial window "
                   f"{t.initial_window}, nodelay {t.nodelay}")  # fmt: skip
    click.echo(f"{file}: OK, {len(apps)} application(s)")


@main.command(
    help="Check this host for what MultiStack needs (kernel, BTF, BPF permissions, XDP and "
    "AF_XDP, locked memory, NICs, the daemon, the policy file), with a fix hint per finding. "
    "Exit status 1 when something required is missing."
)
@click.option(
    "--iface",
    "ifaces",
    multiple=True,
    metavar="IFACE",
    help="Check this NIC (repeatable; default: the NICs the running daemon attached).",
)
@click.option(
    "--policy",
    type=click.Path(path_type=Path),
    default="/etc/mstack/policy.toml",
    show_default=True,
    help="Policy file to check.",
)
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    default="/etc/mstack/mstackd.toml",
    show_default=True,
    help="mstackd configuration to check.",
)
@click.option("--no-probe", is_flag=True, help="Skip the XDP/AF_XDP probe (veth, XDP program).")
@click.option(
    "--try-attach",
    is_flag=True,
    help="Attach an XDP_PASS program to each NIC without one for a moment, native then generic "
    "(some drivers reset the link when XDP comes or goes).",
)
@json_opt
@click.pass_obj
def doctor(
    c: Ctx,
    ifaces: tuple[str, ...],
    policy: Path,
    config: Path,
    no_probe: bool,
    try_attach: bool,
    as_json: bool,
) -> None:
    from mstack import doctor as doc

    report = doc.run(doc.Options(run_dir=c.run_dir, ifaces=list(ifaces), policy=policy,
                                 config=config, probe=not no_probe,
                                 try_attach=try_attach))  # fmt: skip
    if as_json:
        emit_json(report.to_json())
    else:
        click.echo(doc.render(report))
    sys.exit(exitcodes.EX_OK if report.ok else exitcodes.EX_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
