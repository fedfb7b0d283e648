"""The shim without a network: it keeps its environment across every exec entry point (nginx's
binary upgrade execs itself with an environment stripped to TZ), reads the policy mstack-run
hands it, and says what it decides — a socket the policy lists that stays on the kernel is
reported, never silent."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mstack.policy import compact, loads

pytestmark = pytest.mark.unit

BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))
VARIANTS = {"normal": BUILD, "asan": BUILD / "asan"}
MODES = ["execve", "execv", "execvp", "execvpe", "execl", "execle", "execlp", "fexecve",
         "posix_spawn", "posix_spawnp"]  # fmt: skip


def libasan() -> str:
    out = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True)
    return os.path.realpath(out.stdout.strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def policy_text(port: int) -> str:
    return compact(loads(f'[apps.t]\nlisten = ["*:{port}"]\nconnect = ["10.0.0.0/8:*"]\n')["t"])


def shim_env(build: Path, policy: str, **extra: str) -> dict[str, str]:
    lib = build / "lib" / "libmstack.so"
    if not lib.exists():
        pytest.fail(f"{lib} is missing: run make build")
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(lib), "MSTACK_POLICY": policy, **extra}
    if build.name == "asan":
        # ASan's runtime must come first among the libraries; the probe's exec'd image gets
        # LD_PRELOAD (and with it the runtime) back from the shim, not ASAN_OPTIONS.
        env["LD_PRELOAD"] = f"{libasan()} {lib}"
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    return env


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", MODES)
def test_exec_keeps_the_shim_and_its_policy(variant: str, mode: str) -> None:
    build = VARIANTS[variant]
    probe = build / "tests" / "shim" / "exec_probe"
    policy = policy_text(8080)
    env = shim_env(build, policy)
    out = subprocess.run([str(probe), mode], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    got = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert got["LD_PRELOAD"] == env["LD_PRELOAD"]
    assert got["MSTACK_POLICY"] == policy
    assert got["TZ"] == "UTC"  # what the program asked for is kept too


def test_exec_without_the_shim_really_drops_the_environment() -> None:
    """The control: the probe's environment is really stripped when no shim restores it."""
    probe = BUILD / "tests" / "shim" / "exec_probe"
    env = {"PATH": "/usr/bin:/bin", "MSTACK_POLICY": policy_text(8080)}
    out = subprocess.run([str(probe), "execve"], env=env, capture_output=True, text=True)
    assert "MSTACK_POLICY=\n" in out.stdout


def test_a_program_with_its_own_preload_keeps_it_and_gets_the_shim_first() -> None:
    probe = BUILD / "tests" / "shim" / "exec_probe"
    env = shim_env(BUILD, policy_text(8080))
    out = subprocess.run([str(probe), "own-preload"], env=env, capture_output=True, text=True)
    assert f"LD_PRELOAD={env['LD_PRELOAD']} libm.so.6\n" in out.stdout


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_failed_exec_returns_cleanly_and_a_preload_naming_the_shim_is_kept(
    variant: str,
) -> None:
    build = VARIANTS[variant]
    env = shim_env(build, policy_text(8080))
    probe = build / "tests" / "shim" / "exec_probe"
    out = subprocess.run(
        [str(probe), "fail-then-exec"], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert f"LD_PRELOAD={env['LD_PRELOAD']} libm.so.6\n" in out.stdout


LISTENER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
c = socket.socket()
try:
    c.connect(("10.255.255.1", 9)) if sys.argv[3] == "1" else None
except OSError:
    pass
"""


def run_py(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=30
    )


def test_a_listed_listener_that_stays_on_the_kernel_says_so() -> None:
    port = free_port()
    out = run_py(LISTENER, shim_env(BUILD, policy_text(port)), "0.0.0.0", str(port), "0")
    assert out.returncode == 0
    assert f"listener 0.0.0.0:{port} is listed for UTCP (policy t)" in out.stderr
    assert "stays on the kernel" in out.stderr


def test_unlisted_sockets_are_silent_unless_verbose() -> None:
    port, other = free_port(), free_port()
    out = run_py(LISTENER, shim_env(BUILD, policy_text(port)), "127.0.0.1", str(other), "0")
    assert out.returncode == 0 and out.stderr == ""
    env = shim_env(BUILD, policy_text(port), MSTACK_VERBOSE="1")
    out = run_py(LISTENER, env, "127.0.0.1", str(other), "0")
    assert f"listener 127.0.0.1:{other}: kernel (not listed)" in out.stderr
    assert "policy of application t" in out.stderr


def test_a_listed_connect_is_reported() -> None:
    # 10.255.255.1 is never reached: the socket is non-routable here and fails at once or
    # times out inside the kernel; only the shim's decision, made before the call, matters.
    env = shim_env(BUILD, policy_text(free_port()))
    code = LISTENER.replace("c = socket.socket()", "c = socket.socket(); c.settimeout(0.01)")
    out = run_py(code, env, "127.0.0.1", str(free_port()), "1")
    assert "connection to 10.255.255.1:9 is listed for UTCP" in out.stderr


def test_a_bad_policy_is_reported_and_harmless() -> None:
    port = free_port()
    out = run_py(LISTENER, shim_env(BUILD, "v=9;app=x"), "127.0.0.1", str(port), "0")
    assert out.returncode == 0
    assert "bad MSTACK_POLICY" in out.stderr and "every socket stays on the kernel" in out.stderr
