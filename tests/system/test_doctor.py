"""mstackctl doctor on this machine, as root: it reports the real facts (kernel release, BTF,
XDP and AF_XDP really tried), the NICs a running daemon attached, a foreign XDP program on a
NIC, and a simulated missing feature (the kernel's BTF pointed elsewhere) makes it exit
non-zero with the fix hint. Its probe leaves nothing behind (the session's leak check)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mstack_testkit import Mstackd
from mstackd.probe import PortCounter
from testbed.netns import RemoteHost

pytestmark = pytest.mark.system

BIN = Path(sys.executable).parent


def doctor(run_dir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
    r = subprocess.run(
        [str(BIN / "mstackctl"), "--run-dir", str(run_dir), "doctor", "--json", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert r.stdout, r.stderr
    return r.returncode, {f["check"]: f for f in json.loads(r.stdout)["findings"]}


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("doctor's probes need root")


def test_real_facts_of_this_machine(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("")
    code, f = doctor(tmp_path / "run", "--policy", str(policy), "--config", "/nonexistent")
    assert code == 0, f
    assert f["kernel"]["detail"] == f"Linux {os.uname().release}"
    assert f["kernel BTF"]["status"] == ("ok" if Path("/sys/kernel/btf/vmlinux").exists()
                                         else "fail")  # fmt: skip
    assert f["XDP"]["status"] == "ok", f["XDP"]
    assert f["AF_XDP"]["status"] == "ok", f["AF_XDP"]
    assert f["mstackd"]["status"] == "warn"  # nobody runs at tmp_path/run


def test_missing_btf_exits_non_zero_with_hint(tmp_path: Path) -> None:
    code, f = doctor(tmp_path / "run", "--no-probe", env={"MSTACK_BTF_PATH": "/nonexistent"})
    assert code == 1
    assert f["kernel BTF"]["status"] == "fail"
    assert "CONFIG_DEBUG_INFO_BTF" in f["kernel BTF"]["hint"]


def test_attached_nics_from_the_daemon(mstackd: Mstackd) -> None:
    assert mstackd.host is not None
    code, f = doctor(mstackd.run_dir, "--no-probe", "--config", "/nonexistent")
    nic = mstackd.host.host_if
    assert code == 0, f
    assert f["mstackd"]["status"] == "ok" and str(mstackd.proc.pid) in f["mstackd"]["detail"]
    assert f[f"NIC {nic} XDP"]["status"] == "ok"
    assert "the switch is attached in native mode" in f[f"NIC {nic} XDP"]["detail"]
    assert f["locked memory"]["status"] == "ok"  # the daemon has CAP_IPC_LOCK here
    assert f[f"NIC {nic} GRO"]["status"] == "ok"


def test_foreign_xdp_program_is_reported(remote_host: RemoteHost, tmp_path: Path) -> None:
    with PortCounter(remote_host.host_if):
        code, f = doctor(tmp_path / "run", "--no-probe", "--iface", remote_host.host_if)
    finding = f[f"NIC {remote_host.host_if} XDP"]
    assert code == 1
    assert finding["status"] == "fail" and "foreign XDP program" in finding["detail"]
    assert "xdp off" in finding["hint"]


def test_try_attach_finds_native_xdp_and_leaves_the_nic_clean(
    remote_host: RemoteHost, tmp_path: Path
) -> None:
    _code, f = doctor(tmp_path / "run", "--no-probe", "--try-attach", "--iface",
                     remote_host.host_if)  # fmt: skip
    finding = f[f"NIC {remote_host.host_if} XDP"]
    assert finding["status"] == "ok" and "native XDP attaches" in finding["detail"], finding
    out = subprocess.run(["ip", "-j", "link", "show", remote_host.host_if], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert '"xdp"' not in out  # detached again (the session's leak check agrees)
