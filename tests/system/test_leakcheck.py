"""The leak check checks itself: inner pytest runs that leak (and that do not) must fail (and
pass). The outer test cleans up whatever the inner run leaked, from the names it recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from testbed.netns import RUN_ID_ENV, TESTS_DIR, del_link, del_netns, free_run_id, sh

pytestmark = pytest.mark.system

LEAKY = """
import json, os, subprocess, sys
import pytest
from testbed.netns import add_netns, sh, unique_name

@pytest.fixture
def leaky():
    rec = {"netns": [], "links": [], "pins": [], "pids": []}
    ns = unique_name("ns"); add_netns(ns); rec["netns"].append(ns)
    a, b = unique_name("a"), unique_name("b")
    sh(["ip", "link", "add", a, "type", "veth", "peer", "name", b]); rec["links"].append(a)
    pin = "/sys/fs/bpf/" + unique_name("-pin")
    sh(["bpftool", "map", "create", pin, "type", "array", "key", "4", "value", "4",
        "entries", "1", "name", "mstleak"])
    rec["pins"].append(pin)
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    rec["pids"].append(p.pid)
    dev = os.environ["MST_PREEXISTING_LINK"]
    sh(["tc", "qdisc", "add", "dev", dev, "clsact"])
    if os.environ.get("MST_XDP_OBJ"):
        sh(["ip", "link", "set", "dev", dev, "xdpgeneric", "obj", os.environ["MST_XDP_OBJ"],
            "sec", "xdp"])
    with open(os.environ["MST_LEAK_RECORD"], "w") as f:
        json.dump(rec, f)
    yield  # and never cleans up

def test_leaks(leaky):
    pass
"""

CLEAN = """
import pytest
from testbed.ping import ping

def test_remote_host(remote_host):
    assert ping(remote_host.remote_ip, 1)[0] is not None
    remote_host.python_popen("import time; print('READY'); time.sleep(60)", ready="READY")

def test_impaired(impaired_remote_host):
    h = impaired_remote_host(loss=0.1, delay_ms=1)
    ping(h.remote_ip, 1)

def test_pin_dir(bpf_pin_dir):
    import subprocess
    subprocess.run(["bpftool", "map", "create", str(bpf_pin_dir / "m"), "type", "array",
                    "key", "4", "value", "4", "entries", "1", "name", "mstclean"], check=True)

def test_fails_inside_remote_host(remote_host):
    remote_host.python_popen("import time; print('READY'); time.sleep(60)", ready="READY")
    assert False, "deliberate failure: teardown must still clean up"
"""

XDP_SRC = r"""
#define SEC(x) __attribute__((section(x), used))
struct xdp_md;
SEC("xdp") int xdp_pass(struct xdp_md *ctx) { return 2; }
char _license[] SEC("license") = "GPL";
"""


def _inner_pytest(
    test_file: Path, env_extra: dict[str, str], timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(TESTS_DIR)
    env.pop(RUN_ID_ENV, None)  # the inner run takes its own id unless env_extra says which
    env.update(env_extra)
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "testbed.leakcheck",
        "-p",
        "testbed.fixtures",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(test_file.parent),
        "--confcutdir",
        str(test_file.parent),
        "-c",
        os.devnull,
        "-q",
        str(test_file),
    ]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=test_file.parent
    )


def _cleanup_record(record: Path) -> None:
    if not record.exists():
        return
    rec = json.loads(record.read_text())
    for pid in rec["pids"]:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            # Only the sleeper the inner run started: pid reuse must not hit a stranger.
            if "time.sleep(120)" in " ".join(p.cmdline()):
                os.kill(pid, signal.SIGKILL)
    for pin in rec["pins"]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pin)
    for link in rec["links"]:
        del_link(link)
    for ns in rec["netns"]:
        del_netns(ns)


def _xdp_object(tmp_path: Path) -> Path | None:
    if shutil.which("clang") is None:
        return None
    src = tmp_path / "pass.c"
    src.write_text(XDP_SRC)
    obj = tmp_path / "pass.o"
    cp = subprocess.run(
        ["clang", "-O2", "-target", "bpf", "-c", str(src), "-o", str(obj)],
        capture_output=True,
        timeout=60,
    )
    return obj if cp.returncode == 0 else None


def test_leaking_run_fails_and_names_the_leaks(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    record = tmp_path / "leaked.json"
    request.addfinalizer(lambda: _cleanup_record(record))
    # A link that exists before the inner run starts, named by the inner run (whose id we
    # choose), so the inner run counts TC and XDP on it as its own and no other run on the
    # machine, this one included, ever counts the link.
    inner_rid = free_run_id()
    dev = f"mst{inner_rid}-pre"
    request.addfinalizer(lambda: del_link(dev))
    sh(["ip", "link", "add", dev, "type", "veth", "peer", "name", dev + "p"])
    test_file = tmp_path / "test_inner_leaky.py"
    test_file.write_text(LEAKY)
    obj = _xdp_object(tmp_path)
    env = {"MST_LEAK_RECORD": str(record), "MST_PREEXISTING_LINK": dev, RUN_ID_ENV: inner_rid}
    if obj is not None:
        env["MST_XDP_OBJ"] = str(obj)
    cp = _inner_pytest(test_file, env)
    out = cp.stdout + cp.stderr
    assert record.exists(), out
    rec = json.loads(record.read_text())
    assert "1 passed" in out, out  # the test itself passed: only the leak check fails the run
    assert cp.returncode != 0, out
    assert "LEAK CHECK FAILED" in out, out
    expected = [
        f"network namespace {rec['netns'][0]}",
        f"link {rec['links'][0]} ",
        f"BPF pin {rec['pins'][0]}",
        f"child process pid {rec['pids'][0]} ",
        f"TC on pre-existing link {dev}: qdisc clsact",
    ]
    for what in expected:
        assert f"leaked: {what}" in out, f"{what!r} not reported:\n{out}"
    if obj is not None:
        assert re.search(rf"leaked: XDP program \[\d+\] on pre-existing link {dev}\n", out), out
    # Pre-existing objects (the host's own eth0, ifb0, lo ...) are never blamed.
    for name in ("eth0", "ifb0", "ifb1", " lo "):
        assert f"leaked: link {name}" not in out, out
    if obj is not None:
        sh(["ip", "link", "set", "dev", dev, "xdpgeneric", "off"])
    sh(["tc", "qdisc", "del", "dev", dev, "clsact"])


def test_clean_run_passes(tmp_path: Path) -> None:
    test_file = tmp_path / "test_inner_clean.py"
    test_file.write_text(CLEAN)
    cp = _inner_pytest(test_file, {})
    out = cp.stdout + cp.stderr
    # One deliberate failure, three passes; teardown of the failing test cleaned up too.
    assert "1 failed, 3 passed" in out, out
    assert "LEAK CHECK FAILED" not in out, out
    assert cp.returncode == pytest.ExitCode.TESTS_FAILED, out


def test_clean_run_exit_zero(tmp_path: Path) -> None:
    test_file = tmp_path / "test_inner_ok.py"
    test_file.write_text(CLEAN.split("def test_fails_inside_remote_host")[0])
    cp = _inner_pytest(test_file, {})
    out = cp.stdout + cp.stderr
    assert "3 passed" in out, out
    assert cp.returncode == 0, out
