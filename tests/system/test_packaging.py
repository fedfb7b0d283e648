"""The distribution: the .deb's contents, control fields, unit and maintainer scripts (fast,
every run); the wheel's package data and a fresh venv running mstack-run with the packaged
shim; and, with MSTACK_FULL=1 (`make test-full`, or `make deb-check` by itself), the .deb
installed into a fresh Debian 12 root with the demo run against the installed files
(packaging/test-deb.sh)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.netns import RemoteHost, stop_process, unique_name, wait_line

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


# What the shim may need at run time: it is preloaded into every program, so nothing but the C
# library (libm and libpthread are parts of glibc; UTCP, the port and control code are linked
# in). libbpf/libxdp are mstackd's, never the application's.
SHIM_NEEDED = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "ld-linux-x86-64.so.2"}


def needed(elf: Path) -> set[str]:
    out = subprocess.run(["readelf", "-d", str(elf)], capture_output=True, text=True,
                         check=True, timeout=60).stdout  # fmt: skip
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))


def owner(lib: str) -> str:
    """The Debian package that provides `lib` on this machine (ldconfig's path, dpkg -S)."""
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    m = re.search(rf"^\s+{re.escape(lib)} \(libc6,x86-64\) => (\S+)$", cache, re.M)
    assert m, f"{lib} is not in ldconfig's cache"
    path = Path(m.group(1))
    for p in dict.fromkeys([path, path.resolve(), Path("/usr") / path.relative_to("/")]):
        r = subprocess.run(["dpkg", "-S", str(p)], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":")[0]
    raise AssertionError(f"no package owns {path}")


def test_deb_depends_covers_what_its_programs_link(deb: Path, deb_tree: Path) -> None:
    """libmstack.so (UTCP linked in) needs the C library only — ldd of it in the package;
    every library any packaged ELF file needs comes from a package in Depends."""
    _have("readelf", "ldconfig", "dpkg")
    shim = deb_tree / "usr/lib/x86_64-linux-gnu/libmstack.so"
    assert needed(shim) <= SHIM_NEEDED, needed(shim)
    ldd = subprocess.run(["ldd", str(shim)], capture_output=True, text=True, timeout=60)
    assert ldd.returncode == 0 and "not found" not in ldd.stdout, ldd.stdout + ldd.stderr
    depends = {d.split()[0] for d in field(deb, "Depends").split(", ")}
    elves = [shim, *[f for f in (deb_tree / "usr/bin").iterdir()
                     if f.read_bytes()[:4] == b"\x7fELF"]]  # fmt: skip
    for elf in elves:
        for lib in needed(elf):
            assert owner(lib) in depends, (elf.name, lib, owner(lib), depends)


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
        shim = Path(tempfile.mkdtemp(prefix="mst-whl-")) / "libmstack.so"
        try:
            shim.write_bytes(z.read("mstack/data/libmstack.so"))
            assert needed(shim) <= SHIM_NEEDED, needed(shim)  # UTCP is inside, libc outside
        finally:
            shutil.rmtree(shim.parent)


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
    # the shim links UTCP's sources in: the core, the socket layer, port, control, xdp backend
    for n in ["setup.py", "daemon/bpf/switch_port.bpf.c", "daemon/bpf/mstack_abi.h",
              "shim/shim.c", "shim/Makefile", "utcp_c/include/mstack_proto.h",
              "utcp_c/src/stack.c", "utcp_c/src/sock/sock.c", "utcp_c/port/open.c",
              "utcp_c/ctl/ctl.c", "utcp_c/stats/stats.c", "utcp_c/xdp/xdp_port.c"]:  # fmt: skip
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
def venv_daemon(venv: Path, bpf_pin_dir: Path, remote_host: RemoteHost) -> Iterator[Path]:
    """The venv's own mstackd attached to the test bed's link, with test-bed names; its run
    directory."""
    if os.geteuid() != 0:
        pytest.skip("mstackd needs root")
    run_dir = Path(tempfile.mkdtemp(prefix="mst-run-"))
    run_dir.chmod(0o755)
    name = unique_name()
    prefix = name.replace("-", "")[:10]
    argv = [str(venv / "bin/mstackd"), "--run-dir", str(run_dir),
            "--bpf-dir", str(bpf_pin_dir / "sw"), "--ports-netns", f"{name}p",
            "--port-prefix", prefix, "--config", "/nonexistent",
            "--attach", remote_host.host_if, "-v"]  # fmt: skip
    with open(run_dir / "mstackd.log", "w") as log:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                             cwd=run_dir, env={"PATH": "/usr/sbin:/usr/bin:/bin"})  # fmt: skip
    try:
        wait_line(p, "mstackd: ready", timeout=60)
        yield run_dir
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
        stop_process(p)
        # What the orderly shutdown removes, in case the daemon had to be killed.
        subprocess.run(["ip", "netns", "del", f"{name}p"], capture_output=True)
        shutil.rmtree(run_dir, ignore_errors=True)


# Under the wheel's mstack-run: a listener on a listed address; waiting on it (select) joins
# the listen group; one client's bytes are answered with their sha256 and the bytes back.
WHEEL_SERVER = r"""
import hashlib, os, select, socket, sys
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2])))
ls.listen(8)
select.select([ls], [], [], 0)
print("ready", flush=True)
print("preload", os.environ.get("LD_PRELOAD", ""), flush=True)
c, _ = ls.accept()
data = bytearray()
while d := c.recv(65536):
    data += d
c.sendall(hashlib.sha256(data).hexdigest().encode() + b"\n" + bytes(data))
c.close()
print("served", flush=True)
"""

# In the remote namespace (the test bed's own: its local port is free), from local port
# argv[4]: sends the first KB, says "holding", waits for a line on stdin, sends the rest,
# checks the answer.
WHEEL_CLIENT = r"""
import hashlib, os, socket, sys
payload = os.urandom(int(sys.argv[3]))
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30,
                             source_address=("", int(sys.argv[4])))
s.sendall(payload[:1000])
print("holding", flush=True)
sys.stdin.readline()
s.sendall(payload[1000:])
s.shutdown(socket.SHUT_WR)
buf = bytearray()
while d := s.recv(65536):
    buf += d
head, _, body = bytes(buf).partition(b"\n")
assert head == hashlib.sha256(payload).hexdigest().encode() and body == payload, len(body)
print("ok", flush=True)
"""
WHEEL_PORT = 8473
WHEEL_CLIENT_PORT = 41001


def test_wheel_in_a_fresh_venv_carries_a_listed_socket_on_utcp(
    venv: Path, venv_daemon: Path, remote_host: RemoteHost
) -> None:
    """mstackd and mstack-run from the venv only (the daemon loads the wheel's BPF objects and
    headers; mstack-run preloads the wheel's shim): a program whose listener the policy lists
    serves a remote client on UTCP — 1 MB echoed and sha256-checked, and while the connection
    is open the kernel's table (ss) does not have it, `mstackctl conns` does, and the switch
    steered its SYN to the program's port."""
    rh = remote_host
    site = next((venv / "lib").glob("python3*/site-packages"))
    shim = site / "mstack/data/libmstack.so"
    policy = venv_daemon / "policy.toml"
    policy.write_text(f'[apps.t]\nlisten = ["{rh.host_ip}:{WHEEL_PORT}"]\n')
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "MSTACK_RUN_DIR": str(venv_daemon),
           "MSTACK_VERBOSE": "1", "PYTHONUNBUFFERED": "1"}  # fmt: skip

    def ctl_json(*args: str) -> Any:
        r = subprocess.run([str(venv / "bin/mstackctl"), *args, "--json"], env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    before = ctl_json("stats")["ingress"]["to_port_new"]
    argv = [
        str(venv / "bin/mstack-run"),
        "--strict",
        "--policy",
        str(policy),
        "--app",
        "t",
        "--",
        str(venv / "bin/python"),
        "-c",
        WHEEL_SERVER,
        rh.host_ip,
        str(WHEEL_PORT),
    ]
    srv = subprocess.Popen(argv, cwd=venv_daemon, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_line(srv, "ready", 30)
        maps = Path(f"/proc/{srv.pid}/maps").read_text()
        assert str(shim) in maps, "the wheel's shim is not loaded in the program"
        rport = WHEEL_CLIENT_PORT
        cli = rh.python_popen(WHEEL_CLIENT, rh.host_ip, str(WHEEL_PORT), str(1 << 20),
                              str(rport), ready="holding", ready_timeout=30,
                              stdin=subprocess.PIPE)  # fmt: skip
        try:
            mine: list[dict[str, Any]] = []
            deadline = time.monotonic() + 5  # the stack publishes every 250 ms
            while not mine and time.monotonic() < deadline:
                mine = [c for c in ctl_json("conns")
                        if c.get("remote") == f"{rh.remote_ip}:{rport}"]  # fmt: skip
                time.sleep(0.1)
            assert mine and mine[0]["pid"] == srv.pid and mine[0]["state"] == "ESTABLISHED", mine
            ss = subprocess.run(["ss", "-tnH", "state", "established", "dst", rh.remote_ip],
                                capture_output=True, text=True, timeout=10, check=True)  # fmt: skip
            assert ss.stdout.strip() == "", f"the kernel holds it: {ss.stdout}"
            assert cli.stdin is not None
            cli.stdin.write("go\n")
            cli.stdin.flush()
            out, err = cli.communicate(timeout=60)
            assert cli.returncode == 0 and "ok" in out, out + err
        finally:
            stop_process(cli)
        out, err = srv.communicate(timeout=30)
        assert srv.returncode == 0 and "served" in out, out + err
        assert f"preload {shim}" in out  # mstack-run put the wheel's shim first
        assert "UTCP" in err and "stays on the kernel" not in err, err
        assert ctl_json("stats")["ingress"]["to_port_new"] > before
    finally:
        stop_process(srv)
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
