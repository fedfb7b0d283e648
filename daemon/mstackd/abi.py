"""The headers mstackd shares with C — the switch's ABI (daemon/bpf/mstack_abi.h) and the
control protocol (utcp_c/include/mstack_proto.h) — read into cffi: the same structs and constants
the BPF programs and applications were compiled with, with no copy kept in Python."""

from __future__ import annotations

import re
from typing import Any

from mstackd import paths
from mstackd.libbpf import ffi

_TYPEDEFS = """
typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32; typedef uint64_t __u64;
typedef int8_t __s8; typedef int16_t __s16; typedef int32_t __s32; typedef int64_t __s64;
"""


def _cdef_text(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    lines = []
    for line in src.splitlines():
        s = line.strip()
        if s.startswith(("#ifndef", "#endif", "#include")) or re.fullmatch(r"#define\s+\w+_H", s):
            continue
        lines.append(line)
    return "\n".join(lines)


ffi.cdef(_TYPEDEFS + _cdef_text(paths.abi_header().read_text()))
ffi.cdef(_cdef_text(paths.proto_header().read_text()))
ffi.cdef(_cdef_text(paths.stats_header().read_text()))
# The headers' #define values, e.g. consts.MSTACK_ABI_VERSION, consts.MSTACK_PROTO_MAGIC.
consts: Any = ffi.dlopen(None)
