"""mstackd.kabi's constants against the installed kernel headers: Python keeps no value that
the kernel's UAPI does not agree with."""

import subprocess
from pathlib import Path

import pytest

from mstackd import kabi

pytestmark = pytest.mark.unit


def test_kabi_matches_kernel_headers(tmp_path: Path) -> None:
    headers = sorted(set(kabi.HEADERS.values()))
    src = "".join(f"#include <{h}>\n" for h in headers) + "#include <stdio.h>\nint main(void) {\n"
    for name in kabi.HEADERS:
        src += f'    printf("{name} %llu\\n", (unsigned long long)({name}));\n'
    src += "    return 0;\n}\n"
    (tmp_path / "k.c").write_text(src)
    subprocess.run(["cc", "-o", str(tmp_path / "k"), str(tmp_path / "k.c")], check=True)
    out = subprocess.run([str(tmp_path / "k")], check=True, capture_output=True, text=True).stdout
    kernel = {n: int(v) for n, v in (line.split() for line in out.splitlines())}
    ours = {n: getattr(kabi, n) for n in kabi.HEADERS}
    assert ours == kernel


def test_percpu_map_types_are_the_kernels() -> None:
    assert {
        kabi.BPF_MAP_TYPE_PERCPU_HASH,
        kabi.BPF_MAP_TYPE_PERCPU_ARRAY,
        kabi.BPF_MAP_TYPE_LRU_PERCPU_HASH,
    } == kabi.PERCPU_MAP_TYPES
