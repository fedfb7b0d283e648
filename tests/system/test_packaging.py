"""The distribution: the .deb's contents, control fields, unit and maintainer scripts (fast,
every run); the wheel's package data and a fresh venv running mstack-run with the packaged
shim; and, with MSTACK_FULL=1 (`make test-full`, or `make deb-check` by itself), the .deb
installed into a fresh Debian 12 root with the demo run against the installed files
(packaging/test-deb.sh)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.netns import stop_process, unique_name, wait_line

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
FULL = os.environ.get("MSTACK_FULL") == "1"


def _have(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _have("dpkg-deb", "dpkg-shlibdeps", "clang")
    out = tmp_path_factory.mktemp("deb")
    r = subprocess.run([str(ROOT / "packaging/build-deb.sh"), str(out), PY],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    if r.returncode != 0 and "pyroute2" in r.stderr and "No matching distribution" in r.stderr:
        pytest.skip("no package index for the vendored pyroute2")
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def deb_tree(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("tree")
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True, timeout=60)
    return tree


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def test_deb_contents(deb: Path, deb_tree: Path) -> None:
    assert deb.name.startswith("multistack_") and deb.name.endswith(".deb")
    for p in [
        "usr/sbin/mstackd", "usr/bin/mstackctl", "usr/bin/mstack-run", "usr/bin/mstack-responder",
        "usr/lib/x86_64-linux-gnu/libmstack.so",
        "usr/lib/multistack/python/mstackd/data/switch_ingress.bpf.o",
        "usr/lib/multistack/python/mstackd/data/switch_port.bpf.o",
        "usr/lib/multistack/python/mstackd/data/xdp_count.bpf.o",
        "usr/lib/multistack/python/mstackd/data/mstack_abi.h",
        "usr/lib/multistack/python/mstackd/data/mstack_proto.h",
        "usr/lib/multistack/python/mstackd/data/mstack_stats.h",
        "usr/lib/multistack/python/pyroute2/__init__.py",
        "lib/systemd/system/mstackd.service",
        "etc/mstack/mstackd.toml", "etc/mstack/policy.toml",
        "usr/share/man/man8/mstackd.8.gz", "usr/share/man/man8/mstackctl.8.gz",
        "usr/share/man/man1/mstack-run.1.gz", "usr/share/man/man1/mstack-responder.1.gz",
        "usr/share/doc/multistack/copyright",
    ]:  # fmt: skip
        assert (deb_tree / p).is_file(), p
    build = Path(os.environ.get("MSTACK_BUILD_DIR", ROOT / "build"))
    if (build / "bin/mstack-httpd").exists():  # issue 5's server, once the build makes it
        assert (deb_tree / "usr/bin/mstack-httpd").is_file()
        assert (deb_tree / "usr/share/man/man1/mstack-httpd.1.gz").is_file()
    # Nothing of the build machine: no byte-code, no path of this checkout in any file.
    assert not list(deb_tree.rglob("__pycache__"))
    for f in deb_tree.rglob("*"):
        if f.is_file() and "DEBIAN" not in f.parts:
            assert str(ROOT).encode() not in f.read_bytes(), f
    conffiles = (deb_tree / "DEBIAN/conffiles").read_text().split()
    assert conffiles == ["/etc/mstack/mstackd.toml", "/etc/mstack/policy.toml"]


def test_deb_control(deb: Path) -> None:
    depends = field(deb, "Depends")
    for d in ["libc6", "libbpf1", "libxdp1", "python3 (>= 3.11)"]:
        assert d in depends
    # Every dependency of the Python distribution is a Debian package or vendored.
    reqs = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for req in reqs:
        name = re.split(r"[<>=! ]", req, maxsplit=1)[0].lower()
        assert name == "pyroute2" or f"python3-{name}" in depends, req
    assert "python3-pyroute2" not in depends  # vendored: Debian's 0.7.2 does not run mstackd
    assert (
        field(deb, "Architecture")
        == subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )


def test_maintainer_scripts_are_sh_and_guarded(deb_tree: Path) -> None:
    for s in ("postinst", "prerm", "postrm"):
        path = deb_tree / "DEBIAN" / s
        assert os.access(path, os.X_OK)
        subprocess.run(["sh", "-n", str(path)], check=True)
        text = path.read_text()
        # Never fail without systemd: every systemctl/deb-systemd-invoke is guarded.
        for line in text.splitlines():
            if line.lstrip().startswith(("deb-systemd-invoke", "systemctl")):
                assert "|| true" in line, line
        assert "/run/systemd/system" in text or s == "postrm" or "deb-systemd" not in text


def test_unit_verifies(deb_tree: Path, tmp_path: Path) -> None:
    """systemd-analyze verify on the unit, its ExecStart pointed into the unpacked tree (the
    full check, in a Debian root with the package installed, is test_deb_in_a_fresh_root)."""
    _have("systemd-analyze")
    unit = (deb_tree / "lib/systemd/system/mstackd.service").read_text()
    keys = ("RuntimeDirectory=mstack", "Restart=on-failure", "CAP_IPC_LOCK", "CAP_NET_ADMIN",
            "CAP_BPF", "CAP_NET_RAW", "CAP_SYS_ADMIN", "ExecStart=/usr/sbin/mstackd")  # fmt: skip
    for key in keys:
        assert key in unit
    local = tmp_path / "mstackd.service"
    local.write_text(unit.replace("/usr/sbin/mstackd", str(deb_tree / "usr/sbin/mstackd")))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(local)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_man_pages_render(deb_tree: Path) -> None:
    _have("man")
    for page in deb_tree.glob("usr/share/man/man*/*.gz"):
        r = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True,
                           text=True, timeout=60, env={**os.environ, "MANWIDTH": "80"})  # fmt: skip
        assert r.returncode == 0 and not r.stderr.strip(), (page, r.stderr)
        assert "SYNOPSIS" in r.stdout


def test_installed_tree_runs_on_debian_python(deb_tree: Path) -> None:
    """The package's Python code on /usr/bin/python3 with only the unpacked private directory
    (Debian's cffi/click/psutil where installed): the commands start and find their data."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3")
    pydir = deb_tree / "usr/lib/multistack/python"
    code = (
        f"import sys; sys.path.insert(0, {str(pydir)!r});"
        "from mstackd import paths; import mstackd.abi;"
        "print(paths.bpf_object('switch_port.bpf.o'))"
    )
    r = subprocess.run(["/usr/bin/python3", "-I", "-c", code], capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    if "No module named" in r.stderr:
        pytest.skip(f"Debian's python3 packages missing: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(pydir / "mstackd/data/switch_port.bpf.o")


# -- the wheel -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _have("clang")
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([PY, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    if r.returncode != 0 and "setuptools" in r.stderr and "No matching distribution" in r.stderr:
        pytest.skip("no package index for the build backend")
    assert r.returncode == 0, r.stderr
    return next(out.glob("multistack-*.whl"))


def test_wheel_carries_package_data(wheel: Path) -> None:
    assert wheel.name.endswith("-py3-none-linux_x86_64.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for n in ["mstack/data/libmstack.so", "mstackd/data/switch_ingress.bpf.o",
                  "mstackd/data/switch_port.bpf.o", "mstackd/data/xdp_count.bpf.o",
                  "mstackd/data/mstack_abi.h", "mstackd/data/mstack_proto.h",
                  "mstackd/data/mstack_stats.h",
                  "mstack/paths.py", "mstack/doctor.py"]:  # fmt: skip
            assert n in names, n
        for n in names:
            assert str(ROOT).encode() not in z.read(n), f"{n} names the build tree"


def test_wheel_builds_from_the_sdist_alone(tmp_path: Path) -> None:
    """What `python -m build` does: an sdist, then the wheel from the unpacked sdist only."""
    _have("clang")
    r = subprocess.run([PY, "-c", "import setuptools.build_meta as b, sys; "
                        "print(b.build_sdist(sys.argv[1]))", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    sdist = tmp_path / r.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
        t.extractall(tmp_path / "src", filter="data")
    for n in ["setup.py", "daemon/bpf/switch_port.bpf.c", "daemon/bpf/mstack_abi.h",
              "shim/shim.c", "shim/Makefile", "utcp_c/include/mstack_proto.h"]:  # fmt: skip
        assert n in names, n
    assert not any(n.startswith("build/") for n in names)
    src = next((tmp_path / "src").iterdir())
    r = subprocess.run([PY, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "w"),
                        str(src)], capture_output=True, text=True, timeout=300)  # fmt: skip
    if r.returncode != 0 and "No matching distribution" in r.stderr:
        pytest.skip("no package index for the build backend")
    assert r.returncode == 0, r.stderr[-3000:]
    with zipfile.ZipFile(next((tmp_path / "w").glob("*.whl"))) as z:
        assert {"mstack/data/libmstack.so", "mstackd/data/switch_port.bpf.o"} <= set(z.namelist())


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel (and its dependencies from the package index)."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([PY, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin/pip"), "install", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    if r.returncode != 0 and "No matching distribution" in r.stderr:
        pytest.skip("no package index for the wheel's dependencies")
    assert r.returncode == 0, r.stderr
    return venv


@pytest.fixture
def venv_daemon(venv: Path, bpf_pin_dir: Path) -> Iterator[Path]:
    """The venv's own mstackd (no NIC), with test-bed names; its run directory."""
    if os.geteuid() != 0:
        pytest.skip("mstackd needs root")
    run_dir = Path(tempfile.mkdtemp(prefix="mst-run-"))
    run_dir.chmod(0o755)
    name = unique_name()
    argv = [str(venv / "bin/mstackd"), "--run-dir", str(run_dir),
            "--bpf-dir", str(bpf_pin_dir / "sw"), "--ports-netns", f"{name}p",
            "--port-prefix", name.replace("-", "")[:10], "--config", "/nonexistent"]  # fmt: skip
    with open(run_dir / "mstackd.log", "w") as log:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                             cwd=run_dir, env={"PATH": "/usr/sbin:/usr/bin:/bin"})  # fmt: skip
    try:
        wait_line(p, "mstackd: ready", timeout=30)
        yield run_dir
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
        stop_process(p)
        shutil.rmtree(run_dir, ignore_errors=True)


def test_wheel_in_a_fresh_venv_preloads_its_shim(venv: Path, venv_daemon: Path) -> None:
    """mstackd and mstack-run from the venv (the daemon loads the wheel's BPF objects and
    headers); mstack-run preloads the wheel's shim, which announces itself."""
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "MSTACK_DEBUG": "1",
           "MSTACK_RUN_DIR": str(venv_daemon)}  # fmt: skip
    argv = [str(venv / "bin/mstack-run"), "--", "sh", "-c", 'echo "$LD_PRELOAD"']
    r = subprocess.run(argv, cwd=venv_daemon, capture_output=True, text=True, timeout=60, env=env)
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(site / "mstack/data/libmstack.so")
    assert "libmstack: loaded" in r.stderr  # the packaged shim ran in the program
    # The daemon's data came from the wheel too, never from this checkout.
    r = subprocess.run([str(venv / "bin/python"), "-c", "from mstackd import paths; "
                        "print(paths.bpf_object('switch_port.bpf.o'), paths.abi_header())"],
                       cwd=venv_daemon, capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert all(p.startswith(str(site)) for p in r.stdout.split())


# -- the slow one ----------------------------------------------------------------------------


@pytest.mark.long
@pytest.mark.skipif(not FULL, reason="installs into a fresh Debian root (~1 min, apt): "
                    "MSTACK_FULL=1 or make deb-check")  # fmt: skip
def test_deb_in_a_fresh_root(deb: Path) -> None:
    _have("debootstrap", "unshare", "chroot")
    r = subprocess.run([str(ROOT / "packaging/test-deb.sh"), str(deb)], capture_output=True,
                       text=True, timeout=900, env={**os.environ, "PYTHON": PY})  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "deb-check: OK" in r.stdout


@pytest.mark.long
@pytest.mark.skipif(not FULL, reason="boots a Debian root under systemd-nspawn (~1 min, apt): "
                    "MSTACK_FULL=1 or make deb-check")  # fmt: skip
def test_deb_under_a_running_systemd(deb: Path) -> None:
    _have("debootstrap", "unshare")
    if not Path("/var/cache/multistack/bookworm-minbase.tar.gz").exists():
        pytest.skip("no cached Debian root yet (test_deb_in_a_fresh_root makes it)")
    r = subprocess.run([str(ROOT / "packaging/test-systemd.sh"), str(deb)], capture_output=True,
                       text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "test-systemd: OK" in r.stdout
