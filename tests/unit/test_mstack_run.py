"""mstack-run: the policy entry it picks and hands over, what it warns about before the program
runs (no daemon, no entry, a static binary), and --strict."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mstack import exitcodes

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent
POLICY = """\
[apps.shell]
exe = ["sh", "dash"]
listen = ["*:8080"]

[apps.other]
listen = ["*:9090"]
"""
SHOW = ["sh", "-c", 'echo "$MSTACK_POLICY|$LD_PRELOAD|$MSTACK_VERBOSE|$MSTACK_RUN_DIR"']


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Path]:
    """A run directory whose app.sock accepts connections, as a live mstackd's does."""
    run = tmp_path / "run"
    run.mkdir()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(str(run / "app.sock"))
    s.listen(8)
    try:
        yield run
    finally:
        s.close()


def mstack_run(*args: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "MSTACK_RUN_DIR": str(run_dir)}
    return subprocess.run([str(BIN / "mstack-run"), *args], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip


def test_policy_entry_by_executable_name(tmp_path: Path, daemon: Path) -> None:
    (tmp_path / "p.toml").write_text(POLICY)
    out = mstack_run("--policy", str(tmp_path / "p.toml"), "--verbose", "--", *SHOW, run_dir=daemon)
    assert out.returncode == 0, out.stderr
    policy, preload, verbose, run_dir = out.stdout.strip().split("|")
    assert policy.startswith("v=1;app=shell;listen=0.0.0.0/0:8080-8080;")
    assert preload.split()[0].endswith("libmstack.so")
    assert (verbose, run_dir) == ("1", str(daemon))
    assert "warning" not in out.stderr and "error" not in out.stderr, out.stderr


def test_policy_entry_by_app(tmp_path: Path, daemon: Path) -> None:
    (tmp_path / "p.toml").write_text(POLICY)
    out = mstack_run("--policy", str(tmp_path / "p.toml"), "--app", "other", "--", *SHOW,
                     run_dir=daemon)  # fmt: skip
    assert out.stdout.startswith("v=1;app=other;")
    out = mstack_run("--policy", str(tmp_path / "p.toml"), "--app", "nope", "--", *SHOW,
                     run_dir=daemon)  # fmt: skip
    assert out.returncode == exitcodes.EX_USAGE and "no application 'nope'" in out.stderr


def test_no_entry_warns_and_strict_refuses(tmp_path: Path, daemon: Path) -> None:
    (tmp_path / "p.toml").write_text(POLICY.replace('"sh", "dash"', '"nginx"'))
    out = mstack_run("--policy", str(tmp_path / "p.toml"), "--", *SHOW, run_dir=daemon)
    assert out.returncode == 0 and out.stdout.startswith("|")  # no MSTACK_POLICY
    assert "no policy entry for" in out.stderr
    out = mstack_run("--policy", str(tmp_path / "p.toml"), "--strict", "--", *SHOW,
                     run_dir=daemon)  # fmt: skip
    assert out.returncode == exitcodes.EX_UNAVAILABLE and out.stdout == ""


def test_a_broken_policy_is_an_error_naming_the_line(tmp_path: Path, daemon: Path) -> None:
    (tmp_path / "p.toml").write_text(POLICY.replace('"*:8080"', '"*:80800"'))
    out = mstack_run("--policy", str(tmp_path / "p.toml"), "--", *SHOW, run_dir=daemon)
    assert out.returncode == exitcodes.EX_DATAERR
    assert f"{tmp_path / 'p.toml'}:3: apps.shell.listen[0]" in out.stderr


def test_a_static_binary_is_named_up_front(tmp_path: Path, daemon: Path) -> None:
    src = tmp_path / "s.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("ran"); return 0; }\n')
    exe = tmp_path / "static-prog"
    subprocess.run(["gcc", "-static", "-o", str(exe), str(src)], check=True)
    (tmp_path / "p.toml").write_text('[apps.s]\nexe = ["static-prog"]\nlisten = ["*:1"]\n')
    out = mstack_run("--policy", str(tmp_path / "p.toml"), "--", str(exe), run_dir=daemon)
    assert out.returncode == 0 and out.stdout == "ran\n"
    assert "statically linked: LD_PRELOAD cannot reach it" in out.stderr
    out = mstack_run("--policy", str(tmp_path / "p.toml"), "--strict", "--", str(exe),
                     run_dir=daemon)  # fmt: skip
    assert out.returncode == exitcodes.EX_UNAVAILABLE


def test_without_a_daemon_there_is_no_shim(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text(POLICY)
    out = mstack_run("--policy", str(tmp_path / "p.toml"), "--", *SHOW, run_dir=tmp_path)
    assert out.returncode == 0
    assert out.stdout.split("|")[1] == ""  # no LD_PRELOAD
    assert "mstackd is not reachable" in out.stderr


def test_missing_default_policy_file_is_a_warning(tmp_path: Path, daemon: Path) -> None:
    out = mstack_run("--policy", str(tmp_path / "none.toml"), "--", *SHOW, run_dir=daemon)
    assert out.returncode == 0 and "no policy entry" in out.stderr
    assert os.path.basename(out.stdout.split("|")[1].split()[0]) == "libmstack.so"
