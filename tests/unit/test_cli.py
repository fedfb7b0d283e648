"""The console entry points: --help works and says what each command is for; commands whose
machinery has not landed say so and exit EX_UNAVAILABLE rather than pretending."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mstack import cli as mstackctl
from mstack import exitcodes
from mstack import run as mstack_run
from mstackd import cli as mstackd_cli

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("cmd", ["mstackd", "mstackctl", "mstack-run"])
def test_entry_point_help(cmd: str) -> None:
    out = subprocess.run([str(BIN / cmd), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Usage: {cmd}")


@pytest.mark.parametrize(
    "sub", ["status", "attach", "detach", "ports", "bindings", "conns", "stats", "doctor"]
)
def test_mstackctl_subcommands_have_help(sub: str) -> None:
    res = CliRunner().invoke(mstackctl.main, [sub, "--help"])
    assert res.exit_code == 0
    assert "Usage:" in res.output


@pytest.mark.parametrize("sub", ["status", "ports", "bindings", "stats", "conns"])
def test_mstackctl_without_a_daemon_is_unavailable(sub: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(mstackctl.main, ["--run-dir", str(tmp_path), sub, "--json"])
    assert res.exit_code == exitcodes.EX_UNAVAILABLE
    assert "mstackd is not running" in res.output


def test_mstackd_bad_mode_is_a_usage_error() -> None:
    res = CliRunner().invoke(mstackd_cli.main, ["--mode", "turbo"])
    assert res.exit_code == 2
    assert "turbo" in res.output


def test_mstack_run_without_daemon_falls_back(tmp_path: Path) -> None:
    env = {"MSTACK_RUN_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [str(BIN / "mstack-run"), "--", "echo", "hello"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert out.returncode == 0
    assert out.stdout == "hello\n"
    assert "not reachable" in out.stderr


def test_mstack_run_strict_refuses_without_daemon(tmp_path: Path) -> None:
    env = {"MSTACK_RUN_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [str(BIN / "mstack-run"), "--strict", "--", "echo", "hello"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert out.returncode == exitcodes.EX_UNAVAILABLE
    assert out.stdout == ""


def test_mstack_run_unknown_command(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        mstack_run.main, ["--run-dir", str(tmp_path), "--", "no-such-command-xyz"]
    )
    assert res.exit_code == 127
    assert "command not found" in res.output


CONN = {
    "pid": 4242, "port_id": 1, "app": "web", "slot": 0, "local": "10.0.0.1:80",
    "remote": "10.0.0.2:40000", "state": "ESTABLISHED", "cc": "cubic",
    "options": {"mss": 1460, "wscale": [7, 7], "sack": True, "timestamps": True},
    "cwnd": 14600, "ssthresh": 1 << 31, "snd_wnd": 65535, "rcv_wnd": 65535, "srtt_us": 1500,
    "rttvar_us": 500, "rto_us": 200000, "unacked": 0, "retransmits": 0, "rto_timeouts": 0,
    "fast_retransmits": 0, "bytes_acked": 1, "bytes_received": 1,
}  # fmt: skip


def test_mstackctl_conns_table_says_its_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """CWND and SSTHRESH are UTCP's bytes, not ss's segments: the headings say so; --json keeps
    the daemon's fields as they are."""
    monkeypatch.setattr(mstackctl.admin, "request", lambda run_dir, cmd, **kw: [CONN])
    res = CliRunner().invoke(mstackctl.main, ["conns"])
    assert res.exit_code == 0, res.output
    head, row = res.output.splitlines()
    cols = head.split()
    assert "CWND(B)" in cols and "SSTHRESH(B)" in cols and "RTT(ms)" in cols
    cells = dict(zip(cols, row.split(), strict=False))
    assert cells["CWND(B)"] == "14600" and cells["SSTHRESH(B)"] == "inf"
    assert "mss 1460" in row
    res = CliRunner().invoke(mstackctl.main, ["conns", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.output) == [CONN]
