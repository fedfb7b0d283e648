"""mstackctl policy check: a good file summarized, a bad one refused naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mstack import cli, exitcodes

pytestmark = pytest.mark.unit

GOOD = """\
[apps.web]
exe = ["nginx"]
listen = ["0.0.0.0:80"]

[apps.web.tcp]
congestion_control = "newreno"
sack = false
initial_window = 4

[apps.cache]
listen = ["*:6379"]
"""
GOOD_COMPACT = (
    "v=1;app=web;listen=0.0.0.0/0:80-80;connect=;cc=newreno;sack=0;ws=1;ts=1;iw=4;nodelay=0"
)


def test_mstackctl_policy_check(tmp_path: Path) -> None:
    p = tmp_path / "policy.toml"
    p.write_text(GOOD)
    res = CliRunner().invoke(cli.main, ["policy", "check", str(p)])
    assert res.exit_code == 0 and "OK, 2 application(s)" in res.output
    res = CliRunner().invoke(cli.main, ["policy", "check", "--json", str(p)])
    assert res.exit_code == 0 and GOOD_COMPACT in res.output
    p.write_text(GOOD.replace("initial_window = 4", "initial_window = 99"))
    res = CliRunner().invoke(cli.main, ["policy", "check", str(p)])
    assert res.exit_code == exitcodes.EX_DATAERR
    assert f"{p}:8: apps.web.tcp.initial_window" in res.output
