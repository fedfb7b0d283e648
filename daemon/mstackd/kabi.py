"""Kernel UAPI constants mstackd needs (values from linux/bpf.h and linux/if_link.h).

Python 3.11's socket module lacks them; tests/unit/test_kabi.py checks every value here
against the installed kernel headers, so this file cannot drift from the kernel's."""

# linux/bpf.h: map update flags
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2

# linux/bpf.h: enum bpf_map_type (the per-CPU kinds, whose values are arrays per CPU)
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
PERCPU_MAP_TYPES = frozenset(
    {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}
)

# linux/if_link.h: XDP attach flags
XDP_FLAGS_UPDATE_IF_NOEXIST = 1
XDP_FLAGS_SKB_MODE = 2
XDP_FLAGS_DRV_MODE = 4
XDP_FLAGS_HW_MODE = 8
XDP_FLAGS_REPLACE = 16

# linux/if_xdp.h: XSK bind flags and socket options; SOL_XDP from the libc socket header
XDP_COPY = 1 << 1
XDP_USE_NEED_WAKEUP = 1 << 3
XDP_STATISTICS = 7
SOL_XDP = 283

# asm-generic/socket.h: SOL_SOCKET options Python 3.11 does not name
SO_PROTOCOL = 38
SO_DOMAIN = 39
SO_NETNS_COOKIE = 71

# linux/magic.h: statfs f_type of a bpffs mount
BPF_FS_MAGIC = 0xCAFE4A11

# The header each name comes from, for the consistency test.
HEADERS = {
    "BPF_ANY": "linux/bpf.h",
    "BPF_NOEXIST": "linux/bpf.h",
    "BPF_EXIST": "linux/bpf.h",
    "BPF_MAP_TYPE_PERCPU_HASH": "linux/bpf.h",
    "BPF_MAP_TYPE_PERCPU_ARRAY": "linux/bpf.h",
    "BPF_MAP_TYPE_LRU_PERCPU_HASH": "linux/bpf.h",
    "XDP_FLAGS_UPDATE_IF_NOEXIST": "linux/if_link.h",
    "XDP_FLAGS_SKB_MODE": "linux/if_link.h",
    "XDP_FLAGS_DRV_MODE": "linux/if_link.h",
    "XDP_FLAGS_HW_MODE": "linux/if_link.h",
    "XDP_FLAGS_REPLACE": "linux/if_link.h",
    "BPF_FS_MAGIC": "linux/magic.h",
    "XDP_COPY": "linux/if_xdp.h",
    "XDP_USE_NEED_WAKEUP": "linux/if_xdp.h",
    "XDP_STATISTICS": "linux/if_xdp.h",
    "SOL_XDP": "sys/socket.h",
    "SO_PROTOCOL": "asm-generic/socket.h",
    "SO_DOMAIN": "asm-generic/socket.h",
    "SO_NETNS_COOKIE": "asm-generic/socket.h",
}
