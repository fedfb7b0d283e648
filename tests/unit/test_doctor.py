"""mstackctl doctor without privileges: every check's verdict and fix hint on simulated hosts
(a kernel without BTF, an old kernel, a failing XDP/AF_XDP probe, a foreign XDP program, GRO
on in generic mode, broken files), the exit status and --json; and mstack-run's shim lookup."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mstack import cli, doctor, paths, run

pytestmark = pytest.mark.unit

ALL_CAPS = sum(1 << b for b in doctor.CAPS.values())


@pytest.fixture
def opts(tmp_path: Path) -> doctor.Options:
    policy = tmp_path / "policy.toml"
    policy.write_text('[apps.web]\nexe = ["nginx"]\n')
    return doctor.Options(run_dir=tmp_path / "run", policy=policy,
                          config=tmp_path / "none.toml", probe=False)  # fmt: skip


def by_check(report: doctor.Report, check: str) -> doctor.Finding:
    found = [f for f in report.findings if f.check == check]
    assert found, f"no finding {check!r} in {[f.check for f in report.findings]}"
    return found[0]


def test_kernel_version_parsing() -> None:
    assert doctor.kernel_version("6.18.44-fc-v657") == (6, 18)
    assert doctor.kernel_version("5.4.0-150-generic") == (5, 4)
    assert doctor.kernel_version("garbage") == (0, 0)


def test_missing_btf_fails_with_hint(
    opts: doctor.Options, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(doctor.BTF_ENV, str(tmp_path / "no-vmlinux"))
    r = doctor.run(opts)
    f = by_check(r, "kernel BTF")
    assert f.status == "fail" and "CONFIG_DEBUG_INFO_BTF" in f.hint
    assert not r.ok
    assert "fix: use a kernel built with CONFIG_DEBUG_INFO_BTF" in doctor.render(r)


def test_present_btf_is_ok(opts: doctor.Options, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"\0" * 2048)
    monkeypatch.setenv(doctor.BTF_ENV, str(btf))
    assert by_check(doctor.run(opts), "kernel BTF").status == "ok"


def test_old_kernel_fails(opts: doctor.Options, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.uname()
    fake = os.uname_result((real.sysname, real.nodename, "5.4.0-1-amd64", real.version,
                            real.machine))  # fmt: skip
    monkeypatch.setattr(doctor.os, "uname", lambda: fake)
    f = by_check(doctor.run(opts), "kernel")
    assert f.status == "fail" and "5.15" in f.detail and f.hint


def _as_root(monkeypatch: pytest.MonkeyPatch, probe: dict[str, Any]) -> None:
    monkeypatch.setattr(doctor, "effective_caps", lambda pid="self": ALL_CAPS)
    monkeypatch.setattr(doctor, "probe", lambda: probe)


def test_probe_without_af_xdp_fails(opts: doctor.Options, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_root(monkeypatch, {"load": "", "native": "", "generic": "",
                           "af_xdp": "create and bind an XSK on mstdoc0: Address family not "
                                     "supported by protocol"})  # fmt: skip
    opts.probe = True
    r = doctor.run(opts)
    assert by_check(r, "XDP").status == "ok"
    f = by_check(r, "AF_XDP")
    assert f.status == "fail" and "CONFIG_XDP_SOCKETS" in f.hint
    assert not r.ok


def test_probe_without_native_xdp_warns(opts: doctor.Options,
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _as_root(monkeypatch, {"load": "", "native": "Operation not supported", "generic": "",
                           "af_xdp": ""})  # fmt: skip
    opts.probe = True
    f = by_check(doctor.run(opts), "XDP")
    assert f.status == "warn" and "GRO" in f.hint


def test_probe_load_failure_fails(opts: doctor.Options, monkeypatch: pytest.MonkeyPatch) -> None:
    _as_root(monkeypatch, {"load": "load BPF object: Operation not permitted"})
    opts.probe = True
    f = by_check(doctor.run(opts), "XDP")
    assert f.status == "fail" and "lockdown" in f.hint


def test_probe_skipped_without_privileges(opts: doctor.Options,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(doctor, "effective_caps", lambda pid="self": 0)
    opts.probe = True
    r = doctor.run(opts)
    assert by_check(r, "XDP").status == "skip"
    assert by_check(r, "BPF permissions").status == "warn"


def test_foreign_xdp_program_on_a_nic_fails(
    opts: doctor.Options, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mstackd import kabi, libbpf

    monkeypatch.setattr(
        libbpf,
        "xdp_query_id",
        lambda ifindex, flags=0: 42 if flags == kabi.XDP_FLAGS_DRV_MODE else 0,
    )
    monkeypatch.setattr(doctor, "_nic_features", lambda ifname: {"rx-gro": False})
    opts.ifaces = ["lo"]
    r = doctor.run(opts)
    f = by_check(r, "NIC lo XDP")
    assert f.status == "fail" and "id 42" in f.detail and "xdp off" in f.hint
    assert not r.ok


def test_gro_in_generic_mode_fails(opts: doctor.Options, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from mstackd import libbpf

    monkeypatch.setattr(libbpf, "xdp_query_id", lambda ifindex, flags=0: 0)
    monkeypatch.setattr(doctor, "_nic_features", lambda ifname: {"rx-gro": True})
    opts.config.write_text('[daemon]\nmode = "generic"\n')
    opts.ifaces = ["lo"]
    f = by_check(doctor.run(opts), "NIC lo GRO")
    assert f.status == "fail" and "ethtool -K lo gro off" in f.hint


def test_unknown_nic_fails(opts: doctor.Options) -> None:
    opts.ifaces = ["nonexistent0"]
    assert by_check(doctor.run(opts), "NIC nonexistent0").status == "fail"


def test_policy_and_config_files(opts: doctor.Options) -> None:
    opts.policy.write_text("[apps.web\nexe = 1\n")
    f = by_check(doctor.run(opts), "policy")
    assert f.status == "fail" and "invalid" in f.detail and "policy check" in f.hint
    opts.policy.write_text('[apps.web]\nexe = ["nginx"]\nlisten = ["0.0.0.0:99999"]\n')
    assert by_check(doctor.run(opts), "policy").status == "fail"
    opts.policy.unlink()
    assert by_check(doctor.run(opts), "policy").status == "warn"
    opts.config.write_text("[daemon]\nbogus = 1\n")
    f = by_check(doctor.run(opts), "mstackd.toml")
    assert f.status == "fail" and "daemon.bogus" in f.detail


def test_umem_size_comes_from_the_config(opts: doctor.Options) -> None:
    opts.config.write_text("[daemon]\numem_frames = 1024\n")
    assert "2 MB" in by_check(doctor.run(opts), "locked memory").detail


def test_daemon_unreachable_is_a_warning(opts: doctor.Options) -> None:
    f = by_check(doctor.run(opts), "mstackd")
    assert f.status == "warn" and "systemctl start mstackd" in f.hint


def test_cli_exit_status_and_json(opts: doctor.Options, tmp_path: Path) -> None:
    args = ["--run-dir", str(opts.run_dir), "doctor", "--no-probe", "--policy", str(opts.policy),
            "--config", str(opts.config)]  # fmt: skip
    env = {doctor.BTF_ENV: str(tmp_path / "none")}
    res = CliRunner().invoke(cli.main, [*args, "--json"], env=env)
    assert res.exit_code == 1, res.output
    out = json.loads(res.output)
    assert out["ok"] is False
    btf = next(f for f in out["findings"] if f["check"] == "kernel BTF")
    assert btf["status"] == "fail" and btf["hint"]
    res = CliRunner().invoke(cli.main, args, env=env)
    assert res.exit_code == 1 and "FAIL  kernel BTF" in res.output and "fix:" in res.output


# -- mstack-run's shim lookup ----------------------------------------------------------------


def test_shim_env_wins_and_is_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shim = tmp_path / "libmstack.so"
    shim.write_bytes(b"")
    monkeypatch.setenv(paths.SHIM_ENV, str(shim))
    assert paths.shim_path() == shim.resolve()
    monkeypatch.setenv(paths.SHIM_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(paths.ShimNotFound, match=r"missing\.so"):
        paths.shim_path()


def test_shim_lookup_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.SHIM_ENV, raising=False)
    cands = [str(p) for p in paths.shim_candidates()]
    assert cands[0].endswith("mstack/data/libmstack.so")  # a wheel's package data first
    assert any(c.startswith("/usr/lib/") for c in cands)  # the Debian package's place


def test_preload_puts_the_shim_first_once() -> None:
    shim = Path("/usr/lib/x86_64-linux-gnu/libmstack.so")
    assert run.preload_with_shim("", shim) == str(shim)
    assert run.preload_with_shim("/a/libx.so:/b/libmstack.so /c/liby.so", shim) == (
        f"{shim} /a/libx.so /c/liby.so"
    )


def test_packaged_policy_examples_are_valid() -> None:
    """The conffile's commented examples, uncommented, are a valid policy (the format may
    still move; this keeps the shipped examples in step with it)."""
    from mstack import policy

    root = Path(__file__).resolve().parents[2]
    text = (root / "packaging/etc/policy.toml").read_text()
    assert policy.loads(text) == {}  # as shipped: selects nothing
    examples = "\n".join(
        line[1:] if line.startswith("#[") or (line.startswith("#") and "=" in line) else line
        for line in text.splitlines()
    )
    apps = policy.loads(examples)
    assert set(apps) == {"nginx", "redis"}
    assert apps["nginx"].exe == ["nginx"]


def test_try_attach_without_native_xdp_asks_for_generic(
    opts: doctor.Options, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    from mstackd import libbpf, probe

    @contextlib.contextmanager
    def fake_counter(ifname: str, mode: str) -> Any:
        if mode == "native":
            raise libbpf.BpfError(95, "attach XDP")  # EOPNOTSUPP, as a driver without XDP
        yield None

    monkeypatch.setattr(doctor, "effective_caps", lambda pid="self": ALL_CAPS)
    monkeypatch.setattr(probe, "PortCounter", fake_counter)
    monkeypatch.setattr(libbpf, "xdp_query_id", lambda ifindex, flags=0: 0)
    monkeypatch.setattr(doctor, "_nic_features", lambda ifname: {"rx-gro": False})
    opts.ifaces, opts.try_attach = ["lo"], True
    f = by_check(doctor.run(opts), "NIC lo XDP")
    assert f.status == "fail" and 'mode = "generic"' in f.hint
