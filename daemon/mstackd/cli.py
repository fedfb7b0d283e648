"""mstackd: the MultiStack control plane. The command line is fixed by design.md section 5;
the daemon proper (ports, namespace registry, listen groups, cleanup, statistics) arrives with
the switch issue, so today it validates its arguments and says so."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mstackd import __version__, paths

EX_UNAVAILABLE = 69


@click.command(
    help="The MultiStack daemon: attaches the switch (XDP demultiplexing by 3-tuple, TC egress "
    "validation) to NICs, creates one isolated AF_XDP port per application stack, keeps the "
    "3-tuple namespace shared with the host stack, cleans up after dead processes and exports "
    "statistics. Not yet available: it arrives with the switch issue."
)
@click.option(
    "--config", type=click.Path(path_type=Path), default=paths.DEFAULT_CONFIG, show_default=True
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
    type=click.Path(path_type=Path),
)
@click.option(
    "--bpf-dir",
    envvar="MSTACK_BPF_DIR",
    default=paths.DEFAULT_BPF_DIR,
    type=click.Path(path_type=Path),
)
@click.option("--ports-netns", default=paths.DEFAULT_PORTS_NETNS, show_default=True)
@click.option("--foreground", is_flag=True, help="Do not detach; log to stderr.")
@click.version_option(__version__, prog_name="mstackd")
def main(
    config: Path,
    attach: tuple[str, ...],
    mode: str | None,
    run_dir: Path,
    bpf_dir: Path,
    ports_netns: str,
    foreground: bool,
) -> None:
    click.echo("mstackd: not available yet — the daemon arrives with the switch issue", err=True)
    sys.exit(EX_UNAVAILABLE)


if __name__ == "__main__":
    main()
