"""The libbpf binding without touching a network: objects open and load, maps typed from the
shared ABI header round-trip values, and errors carry errno and libbpf's words."""

import errno
import subprocess
from pathlib import Path

import pytest

from mstackd import kabi, libbpf, paths
from mstackd.abi import consts, ffi

pytestmark = pytest.mark.system  # loads BPF: root


def test_abi_header_is_read() -> None:
    assert consts.MSTACK_ABI_VERSION == 1
    assert ffi.sizeof("struct mstack_port_count") == 16


def test_open_missing_object_raises_with_errno(tmp_path: Path) -> None:
    with pytest.raises(libbpf.BpfError) as ei:
        libbpf.BpfObject(tmp_path / "nope.bpf.o")
    assert ei.value.errno == errno.ENOENT


def test_open_garbage_object_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bpf.o"
    bad.write_bytes(b"\x7fELF not really")
    with pytest.raises(libbpf.BpfError):
        libbpf.BpfObject(bad)


def test_load_and_maps_round_trip() -> None:
    with libbpf.BpfObject(paths.bpf_object("xdp_count.bpf.o")) as obj:
        assert obj.programs() == ["xdp_count"]
        obj.load()
        assert obj.program_fd("xdp_count") >= 0
        watched = obj.map("watched", "__u16", "struct mstack_port_count")
        assert watched.percpu
        watched.update(8080, {"packets": 3, "bytes": 7}, kabi.BPF_NOEXIST)
        vals = watched.lookup(8080)
        assert isinstance(vals, list) and len(vals) == libbpf.possible_cpus()
        assert all(v.packets == 3 and v.bytes == 7 for v in vals)
        with pytest.raises(libbpf.BpfError) as ei:
            watched.update(8080, {"packets": 0, "bytes": 0}, kabi.BPF_NOEXIST)
        assert ei.value.errno == errno.EEXIST
        assert list(watched.each_key()) == [8080]
        assert watched.delete(8080)
        assert not watched.delete(8080)
        assert watched.lookup(8080) is None


def test_map_type_mismatch_is_refused() -> None:
    with libbpf.BpfObject(paths.bpf_object("xdp_count.bpf.o")) as obj:
        obj.load()
        with pytest.raises(libbpf.BpfError, match="sizes"):
            obj.map("watched", "__u32", "struct mstack_port_count")


def test_verifier_rejection_carries_the_log(tmp_path: Path) -> None:
    src = tmp_path / "bad.bpf.c"
    # Reads past the packet without a bounds check: the verifier must refuse it.
    src.write_text(
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        'SEC("xdp") int bad(struct xdp_md *ctx) {\n'
        "    unsigned char *p = (void *)(long)ctx->data;\n"
        "    return p[100] ? XDP_PASS : XDP_DROP;\n}\n"
        'char LICENSE[] SEC("license") = "GPL";\n'
    )
    obj_path = tmp_path / "bad.bpf.o"
    arch = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip()
    subprocess.run(
        [
            "clang",
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-idirafter",
            f"/usr/include/{arch}",
            "-c",
            str(src),
            "-o",
            str(obj_path),
        ],
        check=True,
    )
    with libbpf.BpfObject(obj_path) as obj, pytest.raises(libbpf.BpfError) as ei:
        obj.load()
    assert "verifier log" in str(ei.value)
    assert "invalid access to packet" in str(ei.value)
