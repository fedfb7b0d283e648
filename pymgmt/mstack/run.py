"""mstack-run: start a program with the MultiStack shim. Today the shim carries no user-level
sockets yet (it arrives with the shim issue), so mstack-run checks the daemon, warns, and runs
the program on the kernel stack — or refuses under --strict, as it will whenever the daemon
cannot be reached."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import click

from mstack import __version__, exitcodes, paths


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
@click.option(
    "--run-dir", envvar="MSTACK_RUN_DIR", default="/run/mstack", type=click.Path(path_type=Path)
)
@click.version_option(__version__, prog_name="mstack-run")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def main(policy: Path, app: str | None, strict: bool, run_dir: Path, cmd: tuple[str, ...]) -> None:
    exe = shutil.which(cmd[0])
    if exe is None:
        click.echo(f"mstack-run: {cmd[0]}: command not found", err=True)
        sys.exit(127)
    env = dict(os.environ)
    if not daemon_reachable(run_dir):
        reason = f"mstackd is not reachable at {run_dir / 'app.sock'}"
    else:
        try:
            env["LD_PRELOAD"] = preload_with_shim(env.get("LD_PRELOAD", ""), paths.shim_path())
            reason = "the shim does not carry user-level sockets yet (shim issue)"
        except paths.ShimNotFound as e:
            reason = str(e)
    if strict:
        click.echo(f"mstack-run: {reason}; refusing (--strict)", err=True)
        sys.exit(exitcodes.EX_UNAVAILABLE)
    click.echo(f"mstack-run: warning: {reason}; running {cmd[0]} on the kernel stack", err=True)
    os.execve(exe, list(cmd), env)


def preload_with_shim(current: str, shim: Path) -> str:
    """LD_PRELOAD with the shim first (ld.so takes entries separated by spaces or colons);
    an entry already naming the shim is not repeated."""
    rest = [e for e in current.replace(":", " ").split() if Path(e).name != shim.name]
    return " ".join([str(shim), *rest])


if __name__ == "__main__":
    main()
