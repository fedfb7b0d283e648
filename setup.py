"""Build hook of the Python distribution (pyproject.toml has the metadata): a wheel carries what
mstackd and mstack-run load at run time as package data, built from this source tree by the
C parts' own Makefiles into setuptools' temporary directory — never a path of the build tree:

  mstackd/data/  switch_ingress.bpf.o switch_port.bpf.o xdp_count.bpf.o (DWARF stripped, BTF
                 kept), mstack_abi.h (daemon/bpf), mstack_proto.h and mstack_stats.h (utcp_c/include)
  mstack/data/   libmstack.so (the LD_PRELOAD shim)

Editable installs (`make deps`) skip it: there paths.py finds everything in the build tree.
Needs clang, make and libbpf-dev, like `make build`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1: the wheel package has it (not needed for an sdist)
    try:
        from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]
    except ImportError:
        bdist_wheel = None  # type: ignore[assignment,misc]

ROOT = Path(__file__).resolve().parent
BPF_OBJECTS = ("switch_ingress.bpf.o", "switch_port.bpf.o", "xdp_count.bpf.o")
HEADERS = (
    ("daemon/bpf", "mstack_abi.h"),
    ("utcp_c/include", "mstack_proto.h"),
    ("utcp_c/include", "mstack_stats.h"),
)


def _strip(path: Path, bpf: bool) -> None:
    """DWARF carries the builder's directories; BTF (needed by libbpf) stays."""
    tool = "llvm-strip" if bpf else "strip"
    if shutil.which(tool):
        subprocess.run([tool, "--strip-debug", str(path)], check=True)


class BuildPyWithC(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        cbuild = Path(self.get_finalized_command("build").build_temp).resolve() / "mstack-c"
        make = ["make", "--no-print-directory", "-s"]
        # Source file names recorded in BTF line info and debug info name the project, not
        # the directory it was built in.
        prefix_map = f"-ffile-prefix-map={ROOT}=multistack"
        clang = f"CLANG=clang {prefix_map}"
        cc = f"CC=cc {prefix_map}"
        subprocess.run([*make, "-C", str(ROOT / "daemon/bpf"), f"BUILD={cbuild}/bpf", clang],
                       check=True)  # fmt: skip
        shim = f"{cbuild}/lib/libmstack.so"  # only the library, not the shim's C tests
        subprocess.run([*make, "-C", str(ROOT / "shim"), f"BUILD={cbuild}", cc, shim], check=True)
        out = Path(self.build_lib)
        dd = out / "mstackd" / "data"
        sd = out / "mstack" / "data"
        dd.mkdir(parents=True, exist_ok=True)
        sd.mkdir(parents=True, exist_ok=True)
        for name in BPF_OBJECTS:
            shutil.copyfile(cbuild / "bpf" / name, dd / name)
            _strip(dd / name, bpf=True)
        for src, name in HEADERS:
            shutil.copyfile(ROOT / src / name, dd / name)
        shutil.copyfile(cbuild / "lib" / "libmstack.so", sd / "libmstack.so")
        (sd / "libmstack.so").chmod(0o755)
        _strip(sd / "libmstack.so", bpf=False)


class NativeDistribution(Distribution):
    """libmstack.so is native code: the packages install to platlib and the wheel is not pure
    (its files stay at the wheel's root)."""

    def has_ext_modules(self) -> bool:
        return True


cmdclass: dict[str, type] = {"build_py": BuildPyWithC}
if bdist_wheel is not None:

    class BdistWheelPlatform(bdist_wheel):  # type: ignore[misc,valid-type]
        """Tagged py3-none-<platform>: any Python 3, no Python ABI, this platform's shim."""

        def get_tag(self) -> tuple[str, str, str]:
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = BdistWheelPlatform


setup(
    cmdclass=cmdclass,
    distclass=NativeDistribution,
    # setuptools' own build directory must not be the project's build/ (build/lib holds the
    # C libraries): keep it in a subdirectory of its own.
    options={"build": {"build_base": "build/py"}},
)
