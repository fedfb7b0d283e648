"""mstackd: the MultiStack control plane. The command line is fixed by design.md section 5.
It runs in the foreground (systemd's Type=simple; `--foreground` is accepted for clarity) and
logs to stderr."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from mstackd import __version__, paths
from mstackd.config import ConfigError, load
from mstackd.dataplane import AttachError

EX_USAGE, EX_UNAVAILABLE, EX_OSERR, EX_CONFIG, EX_NOPERM = 64, 69, 71, 78, 77


@click.command(
    help="The MultiStack daemon: attaches the switch (XDP demultiplexing by 3-tuple, TC egress "
    "validation) to NICs, creates one isolated AF_XDP port per application stack, keeps the "
    "3-tuple namespace shared with the host stack, cleans up after dead processes and exports "
    "statistics. Applications reach it at RUN_DIR/app.sock, administrators at "
    "RUN_DIR/admin.sock (mstackctl)."
)
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    default=None,
    help=f"TOML configuration (default {paths.DEFAULT_CONFIG}, if present).",
)
@click.option(
    "--attach", "attach", multiple=True, metavar="IFACE", help="Attach the switch to IFACE."
)
@click.option(
    "--mode", type=click.Choice(["native", "generic"]), default=None, help="XDP attach mode."
)
@click.option(
    "--run-dir",
    envvar="MSTACK_RUN_DIR",
    default=paths.DEFAULT_RUN_DIR,
    show_default=True,
    type=click.Path(path_type=Path),
)
@click.option(
    "--bpf-dir",
    envvar="MSTACK_BPF_DIR",
    default=paths.DEFAULT_BPF_DIR,
    show_default=True,
    type=click.Path(path_type=Path),
)
@click.option("--ports-netns", default=paths.DEFAULT_PORTS_NETNS, show_default=True)
@click.option(
    "--port-prefix",
    default="msp",
    show_default=True,
    help="Name prefix of port veths (<= 10 characters).",
)
@click.option(
    "--egress-fast-path",
    is_flag=True,
    help="Turn the XDP egress fast path on at start (config: egress_fast_path; "
    "`mstackctl fast-path` switches it at run time).",
)
@click.option("--foreground", is_flag=True, help="Stay in the foreground (always the case).")
@click.option("-v", "--verbose", count=True, help="More logging.")
@click.version_option(__version__, prog_name="mstackd")
def main(
    config: Path | None,
    attach: tuple[str, ...],
    mode: str | None,
    run_dir: Path,
    bpf_dir: Path,
    ports_netns: str,
    port_prefix: str,
    egress_fast_path: bool,
    foreground: bool,
    verbose: int,
) -> None:
    from mstackd.server import Daemon  # the BPF and cffi machinery loads only when running

    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING,
        format="mstackd: %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = load(config if config is not None else Path(paths.DEFAULT_CONFIG))
    except ConfigError as e:
        click.echo(f"mstackd: {e}", err=True)
        sys.exit(EX_CONFIG)
    if attach:
        cfg.attach = list(attach)
    if mode:
        cfg.mode = mode
    if egress_fast_path:
        cfg.egress_fast_path = True
    if os.geteuid() != 0:
        click.echo("mstackd: needs root (BPF, XDP, AF_XDP, network namespaces)", err=True)
        sys.exit(EX_NOPERM)
    try:
        daemon = Daemon(cfg, run_dir, bpf_dir, ports_netns, port_prefix)
    except (OSError, ValueError) as e:
        click.echo(f"mstackd: cannot start: {e}", err=True)
        sys.exit(EX_OSERR)
    try:
        daemon.run()
    except AttachError as e:  # run() has taken everything down again
        click.echo(f"mstackd: {e}", err=True)
        sys.exit(EX_UNAVAILABLE)
    except OSError as e:
        click.echo(f"mstackd: {e}", err=True)
        sys.exit(EX_OSERR)


if __name__ == "__main__":
    main()
