"""mstack-run: start a program with the MultiStack shim. It resolves the program's entry in the
policy file (--app, or the executable's name) and hands the shim its one-line form
(MSTACK_POLICY), checks that mstackd is reachable and that the shim can reach the program at all
(a static binary or a Go program cannot be), and says up front whatever will keep sockets on the
kernel. The shim then carries the listed sockets on UTCP (docs/shim.md), and says why for any
listed socket that stays on the kernel. --strict turns every such warning into a refusal."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import click

from mstack import __version__, binary, exitcodes, paths
from mstack.policy import PolicyError, compact, select
from mstack.policy import load as load_policy


def daemon_reachable(run_dir: Path) -> bool:
    path = run_dir / "app.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.settimeout(1.0)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    help="Run CMD with the MultiStack socket shim: the sockets the policy file lists for this "
    "application use UTCP, the user-level TCP stack; every other socket stays on the kernel. "
    "Without a reachable mstackd, CMD runs on the kernel stack with a warning (or fails, with "
    "--strict).",
)
@click.option(
    "--policy",
    type=click.Path(path_type=Path),
    default="/etc/mstack/policy.toml",
    show_default=True,
    help="Policy file.",
)
@click.option("--app", help="Policy entry to use (default: chosen by the executable's name).")
@click.option("--strict", is_flag=True, help="Fail instead of falling back to the kernel stack.")
@click.option("--verbose", is_flag=True, help="The shim reports each socket's decision.")
@click.option(
    "--run-dir", envvar="MSTACK_RUN_DIR", default="/run/mstack", type=click.Path(path_type=Path)
)
@click.version_option(__version__, prog_name="mstack-run")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def main(
    policy: Path, app: str | None, strict: bool, verbose: bool, run_dir: Path, cmd: tuple[str, ...]
) -> None:
    exe = shutil.which(cmd[0])
    if exe is None:
        click.echo(f"mstack-run: {cmd[0]}: command not found", err=True)
        sys.exit(127)
    env = dict(os.environ)
    problems: list[str] = binary.inspect(exe).warnings(cmd[0])
    entry = None
    if policy.exists() or app is not None:
        try:
            entry = select(load_policy(policy), app, exe)
        except PolicyError as e:
            click.echo(f"mstack-run: {e}", err=True)
            sys.exit(exitcodes.EX_DATAERR)
        if entry is None and app is not None:
            click.echo(f"mstack-run: {policy} has no application {app!r}", err=True)
            sys.exit(exitcodes.EX_USAGE)
    if entry is None:
        problems.append(f"no policy entry for {Path(exe).name} in {policy}: every socket "
                        "stays on the kernel")  # fmt: skip
    else:
        env["MSTACK_POLICY"] = compact(entry)
    env["MSTACK_RUN_DIR"] = str(run_dir)
    if verbose:
        env["MSTACK_VERBOSE"] = "1"
    if not daemon_reachable(run_dir):
        problems.append(f"mstackd is not reachable at {run_dir / 'app.sock'}: every socket "
                        "stays on the kernel")  # fmt: skip
    else:
        try:
            env["LD_PRELOAD"] = preload_with_shim(env.get("LD_PRELOAD", ""), paths.shim_path())
        except paths.ShimNotFound as e:
            problems.append(str(e))
    for p in problems:
        click.echo(f"mstack-run: {'error' if strict else 'warning'}: {p}", err=True)
    if strict and problems:
        click.echo("mstack-run: refusing (--strict)", err=True)
        sys.exit(exitcodes.EX_UNAVAILABLE)
    os.execve(exe, list(cmd), env)


def preload_with_shim(current: str, shim: Path) -> str:
    """LD_PRELOAD with the shim first (ld.so takes entries separated by spaces or colons);
    an entry already naming the shim is not repeated."""
    rest = [e for e in current.replace(":", " ").split() if Path(e).name != shim.name]
    return " ".join([str(shim), *rest])


if __name__ == "__main__":
    main()
