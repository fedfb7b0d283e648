"""mstackctl: the MultiStack admin CLI. One click group carrying a context object; every
listing takes --json. Commands that need the running daemon's admin socket arrive with the
switch issue; until then they say so and exit EX_UNAVAILABLE."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from mstack import __version__, exitcodes

_PENDING = "arrives with mstackd's admin socket (the switch issue)"


@dataclass
class Ctx:
    run_dir: Path
    json: bool


def _pending(ctx: click.Context, what: str) -> None:
    click.echo(f"mstackctl {what}: not available yet — {_PENDING}", err=True)
    ctx.exit(exitcodes.EX_UNAVAILABLE)


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
    ctx.obj = Ctx(run_dir=run_dir, json=False)


@main.command(help="Daemon state: attached NICs and their modes, ports, bindings.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    _pending(ctx, "status")


@main.command(help="Attach the switch to IFACE (running daemon only; see mstackd.toml).")
@click.argument("iface")
@click.option("--mode", type=click.Choice(["native", "generic"]), default="native")
@click.pass_context
def attach(ctx: click.Context, iface: str, mode: str) -> None:
    _pending(ctx, "attach")


@main.command(help="Detach the switch from IFACE.")
@click.argument("iface")
@click.pass_context
def detach(ctx: click.Context, iface: str) -> None:
    _pending(ctx, "detach")


@main.command(help="List ports (one per application stack): owner pids, veth, counters.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def ports(ctx: click.Context, as_json: bool) -> None:
    _pending(ctx, "ports")


@main.command(help="List bindings (proto, IP, port) with their listen-group members.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bindings(ctx: click.Context, as_json: bool) -> None:
    _pending(ctx, "bindings")


@main.command(help="Connections of user-level stacks, like `ss -tni` (state, cwnd, srtt, ...).")
@click.option("--pid", type=int, help="Only this process's stack.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def conns(ctx: click.Context, pid: int | None, as_json: bool) -> None:
    _pending(ctx, "conns")


@main.command(help="Switch and stack counters.")
@click.option("--watch", is_flag=True, help="Refresh every second.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def stats(ctx: click.Context, watch: bool, as_json: bool) -> None:
    _pending(ctx, "stats")


@main.group(help="Policy file tools.")
def policy() -> None:
    pass


@policy.command("check", help="Validate a policy file (arrives with the shim issue).")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_context
def policy_check(ctx: click.Context, file: Path) -> None:
    click.echo("mstackctl policy check: not available yet — arrives with the shim issue", err=True)
    ctx.exit(exitcodes.EX_UNAVAILABLE)


@main.command(help="Check this host for what MultiStack needs, with a fix hint per finding.")
@click.pass_context
def doctor(ctx: click.Context) -> None:
    click.echo("mstackctl doctor: not available yet — arrives with the packaging issue", err=True)
    ctx.exit(exitcodes.EX_UNAVAILABLE)


if __name__ == "__main__":
    sys.exit(main())
