"""Thin, typed binding of the parts of libbpf mstackd uses (cffi, ABI mode: no compiler at run
time). Errors become BpfError carrying the errno and libbpf's words; the verifier's log is
captured per program and attached to a failed load."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cffi import FFI

from mstackd import kabi

log = logging.getLogger("mstackd.libbpf")

ffi = FFI()
ffi.cdef(
    """
    struct bpf_object;
    struct bpf_program;
    struct bpf_map;

    enum libbpf_print_level { LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG };
    typedef int (*libbpf_print_fn_t)(enum libbpf_print_level level, const char *fmt, void *ap);
    libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn);
    int libbpf_strerror(int err, char *buf, size_t size);
    int libbpf_num_possible_cpus(void);

    struct bpf_object_open_opts {
        size_t sz;
        const char *object_name;
        bool relaxed_maps;
        const char *pin_root_path;
    };
    struct bpf_object *bpf_object__open_file(const char *path,
                                             const struct bpf_object_open_opts *opts);
    int bpf_object__load(struct bpf_object *obj);
    void bpf_object__close(struct bpf_object *obj);
    struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj,
                                                         const char *name);
    struct bpf_program *bpf_object__next_program(const struct bpf_object *obj,
                                                 struct bpf_program *prog);
    const char *bpf_program__name(const struct bpf_program *prog);
    int bpf_program__fd(const struct bpf_program *prog);
    int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);
    int bpf_program__set_log_level(struct bpf_program *prog, uint32_t log_level);

    struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
    int bpf_map__fd(const struct bpf_map *map);
    uint32_t bpf_map__key_size(const struct bpf_map *map);
    uint32_t bpf_map__value_size(const struct bpf_map *map);
    int bpf_map__type(const struct bpf_map *map);
    int bpf_map__set_pin_path(struct bpf_map *map, const char *path);
    int bpf_map__reuse_fd(struct bpf_map *map, int fd);

    int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);
    int bpf_map_lookup_elem(int fd, const void *key, void *value);
    int bpf_map_delete_elem(int fd, const void *key);
    int bpf_map_get_next_key(int fd, const void *key, void *next_key);
    int bpf_obj_pin(int fd, const char *pathname);
    struct bpf_link;
    struct bpf_link *bpf_program__attach_tracepoint(const struct bpf_program *prog,
                                                    const char *tp_category, const char *tp_name);
    int bpf_link__pin(struct bpf_link *link, const char *path);
    int bpf_link__destroy(struct bpf_link *link);
    int bpf_obj_get(const char *pathname);

    int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, const void *opts);
    int bpf_xdp_detach(int ifindex, uint32_t flags, const void *opts);
    int bpf_xdp_query_id(int ifindex, int flags, uint32_t *prog_id);

    int vsnprintf(char *str, size_t size, const char *format, void *ap);
    int mount(const char *source, const char *target, const char *fstype,
              unsigned long flags, const void *data);
    """
)

_lib: Any = None
_print_cb: Any = None


class BpfError(OSError):
    """A libbpf or kernel BPF failure: errno, what was being done, and the kernel's words."""

    def __init__(self, err: int, what: str, detail: str = "") -> None:
        self.what = what
        self.detail = detail
        msg = f"{what}: {_strerror(err)}"
        if detail:
            msg += f"\n{detail}"
        super().__init__(err, msg)

    def __str__(self) -> str:
        return str(self.args[1])


def lib() -> Any:
    """The loaded libbpf, with its log routed to Python logging (loaded on first use)."""
    global _lib, _print_cb
    if _lib is None:
        _lib = ffi.dlopen("libbpf.so.1")
        libc = ffi.dlopen(None)

        @ffi.callback("int(enum libbpf_print_level, const char *, void *)")
        def _print(level: int, fmt: Any, ap: Any) -> int:
            buf = ffi.new("char[]", 1024)
            n = libc.vsnprintf(buf, 1024, fmt, ap)
            text = ffi.string(buf).decode(errors="replace").rstrip()
            if text:
                log.log(logging.WARNING if level == 0 else logging.DEBUG, "%s", text)
            return int(n)

        _print_cb = _print  # keep the callback alive as long as libbpf may call it
        _lib.libbpf_set_print(_print_cb)
    return _lib


def _strerror(err: int) -> str:
    try:
        buf = ffi.new("char[]", 256)
        lib().libbpf_strerror(err, buf, 256)
        return ffi.string(buf).decode(errors="replace")
    except OSError:
        return os.strerror(err)


def _check(rc: int, what: str) -> int:
    if rc < 0:
        raise BpfError(-rc, what)
    return rc


def mount(source: str, target: str, fstype: str) -> None:
    """mount(2), for bpffs (Python has no binding)."""
    libc = ffi.dlopen(None)
    if libc.mount(source.encode(), target.encode(), fstype.encode(), 0, ffi.NULL) != 0:
        err = ffi.errno
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def possible_cpus() -> int:
    n = int(lib().libbpf_num_possible_cpus())
    if n <= 0:
        raise BpfError(-n, "counting possible CPUs")
    return n


@dataclass
class BpfMap:
    """A map of a loaded object (or one reopened from a pin), with typed keys and values."""

    name: str
    fd: int
    key_type: str
    value_type: str
    percpu: bool = False
    _owned_fd: bool = field(default=False, repr=False)

    def _key(self, key: Any) -> Any:
        if isinstance(key, ffi.CData) and ffi.typeof(key) == ffi.typeof(f"{self.key_type} *"):
            return key
        return ffi.new(f"{self.key_type} *", key)

    def _value_buf(self) -> Any:
        n = possible_cpus() if self.percpu else 1
        return ffi.new(f"{self.value_type}[]", n)

    def update(self, key: Any, value: Any, flags: int = kabi.BPF_ANY) -> None:
        if self.percpu:
            buf = self._value_buf()
            for i in range(len(buf)):
                buf[i] = value
        else:
            buf = ffi.new(f"{self.value_type} *", value)
        _check(
            lib().bpf_map_update_elem(self.fd, self._key(key), buf, flags), f"update {self.name}"
        )

    def _own(self, item: Any) -> Any:
        """A value that owns its memory: an int, or a fresh struct copy (cffi's item views do
        not keep the array they point into alive)."""
        if ffi.typeof(self.value_type).kind == "primitive":
            return int(item)
        return ffi.new(f"{self.value_type} *", item)

    def lookup(self, key: Any) -> list[Any] | Any | None:
        """The value (a list, one per possible CPU, for per-CPU maps), or None if absent.
        Integers come back as int, structs as owning cdata pointers (fields read as attrs)."""
        buf = self._value_buf()
        rc = lib().bpf_map_lookup_elem(self.fd, self._key(key), buf)
        if rc == -errno.ENOENT:
            return None
        _check(rc, f"lookup in {self.name}")
        if self.percpu:
            return [self._own(buf[i]) for i in range(len(buf))]
        return self._own(buf[0])

    def delete(self, key: Any) -> bool:
        rc = lib().bpf_map_delete_elem(self.fd, self._key(key))
        if rc == -errno.ENOENT:
            return False
        _check(rc, f"delete from {self.name}")
        return True

    def each_key(self) -> Iterator[Any]:
        """Every key (ints, or owning struct copies); deleting while iterating is safe."""
        cur = ffi.NULL
        while True:
            nxt = ffi.new(f"{self.key_type} *")
            rc = lib().bpf_map_get_next_key(self.fd, cur, nxt)
            if rc == -errno.ENOENT:
                return
            _check(rc, f"iterate {self.name}")
            yield int(nxt[0]) if ffi.typeof(self.key_type).kind == "primitive" else nxt
            cur = nxt

    def pin(self, path: str | Path) -> None:
        _check(lib().bpf_obj_pin(self.fd, str(path).encode()), f"pin {self.name} at {path}")

    @classmethod
    def open_pinned(
        cls, path: str | Path, key_type: str, value_type: str, percpu: bool = False
    ) -> BpfMap:
        """A map pinned on bpffs (e.g. by a daemon that is gone); close() releases the fd."""
        fd = _check(lib().bpf_obj_get(str(path).encode()), f"open pinned map {path}")
        return cls(Path(path).name, fd, key_type, value_type, percpu, _owned_fd=True)

    def close(self) -> None:
        if self._owned_fd and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BpfObject:
    """An ELF BPF object opened and loaded through libbpf. Close it (or use `with`) to release
    its fds; programs attached by netlink (XDP) stay attached until detached."""

    LOG_SIZE = 1 << 20

    def __init__(self, path: str | Path, pin_root: str | Path | None = None) -> None:
        """Open an object. Maps declared with LIBBPF_PIN_BY_NAME are pinned under `pin_root`
        (created by the first loader, reused by every later one); pass it for any object with
        pinned maps, or libbpf pins them under /sys/fs/bpf itself."""
        self.path = Path(path)
        self._obj: Any = ffi.NULL
        self._logs: dict[str, Any] = {}
        opts = ffi.new("struct bpf_object_open_opts *")
        opts.sz = ffi.sizeof("struct bpf_object_open_opts")
        keep = None
        if pin_root is not None:
            keep = ffi.new("char[]", str(pin_root).encode())
            opts.pin_root_path = keep
        obj = lib().bpf_object__open_file(str(self.path).encode(), opts)
        del keep  # libbpf copied the string at open
        if obj == ffi.NULL:
            raise BpfError(ffi.errno or errno.EINVAL, f"open BPF object {self.path}")
        self._obj = obj

    def programs(self) -> list[str]:
        names = []
        prog = lib().bpf_object__next_program(self._obj, ffi.NULL)
        while prog != ffi.NULL:
            names.append(ffi.string(lib().bpf_program__name(prog)).decode())
            prog = lib().bpf_object__next_program(self._obj, prog)
        return names

    def load(self) -> BpfObject:
        """Load every program and create every map; a verifier rejection carries its log."""
        prog = lib().bpf_object__next_program(self._obj, ffi.NULL)
        while prog != ffi.NULL:
            name = ffi.string(lib().bpf_program__name(prog)).decode()
            buf = ffi.new("char[]", self.LOG_SIZE)
            lib().bpf_program__set_log_buf(prog, buf, self.LOG_SIZE)
            self._logs[name] = buf
            prog = lib().bpf_object__next_program(self._obj, prog)
        rc = lib().bpf_object__load(self._obj)
        if rc < 0:
            detail = "\n".join(
                f"[{n}] verifier log (tail):\n" + ffi.string(b).decode(errors="replace")[-4000:]
                for n, b in self._logs.items()
                if b[0] != b"\0"
            )
            raise BpfError(-rc, f"load BPF object {self.path}", detail)
        self._logs.clear()
        return self

    def reuse_map(self, name: str, pinned: str | Path) -> None:
        """Before load: make map `name` the one pinned at `pinned` (a restarted daemon)."""
        fd = _check(lib().bpf_obj_get(str(pinned).encode()), f"open pinned map {pinned}")
        try:
            _check(lib().bpf_map__reuse_fd(self._find_map(name), fd), f"reuse map {name}")
        finally:
            os.close(fd)

    def _find_map(self, name: str) -> Any:
        m = lib().bpf_object__find_map_by_name(self._obj, name.encode())
        if m == ffi.NULL:
            raise BpfError(errno.ENOENT, f"map {name} in {self.path}")
        return m

    def attach_tracepoint_pinned(self, name: str, category: str, event: str, pin: Path) -> None:
        """Attach program `name` to a tracepoint and pin the link at `pin`, so it outlives
        this process; a link pinned there before (a dead daemon's) is replaced."""
        prog = lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if prog == ffi.NULL:
            raise BpfError(errno.ENOENT, f"program {name} in {self.path}")
        link = lib().bpf_program__attach_tracepoint(prog, category.encode(), event.encode())
        if link == ffi.NULL:
            raise BpfError(ffi.errno or errno.EINVAL, f"attach {name} to {category}:{event}")
        try:
            if pin.exists():
                pin.unlink()
            _check(lib().bpf_link__pin(link, str(pin).encode()), f"pin link {pin}")
        finally:
            lib().bpf_link__destroy(link)  # the pin holds the link

    def program_fd(self, name: str) -> int:
        prog = lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if prog == ffi.NULL:
            raise BpfError(errno.ENOENT, f"program {name} in {self.path}")
        return _check(lib().bpf_program__fd(prog), f"fd of program {name} (not loaded?)")

    def map(self, name: str, key_type: str, value_type: str) -> BpfMap:
        m = self._find_map(name)
        fd = _check(lib().bpf_map__fd(m), f"fd of map {name} (not loaded?)")
        percpu = lib().bpf_map__type(m) in kabi.PERCPU_MAP_TYPES
        want_k, want_v = ffi.sizeof(key_type), ffi.sizeof(value_type)
        got_k, got_v = lib().bpf_map__key_size(m), lib().bpf_map__value_size(m)
        if (want_k, want_v) != (got_k, got_v):
            raise BpfError(
                errno.EINVAL,
                f"map {name}: key/value sizes {got_k}/{got_v} in the object, "
                f"{want_k}/{want_v} expected ({key_type}/{value_type})",
            )
        return BpfMap(name, fd, key_type, value_type, percpu)

    def close(self) -> None:
        if self._obj != ffi.NULL:
            lib().bpf_object__close(self._obj)
            self._obj = ffi.NULL

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def xdp_attach(ifindex: int, prog_fd: int, flags: int) -> None:
    _check(
        lib().bpf_xdp_attach(ifindex, prog_fd, flags, ffi.NULL), f"attach XDP to ifindex {ifindex}"
    )


def xdp_detach(ifindex: int, flags: int) -> None:
    _check(lib().bpf_xdp_detach(ifindex, flags, ffi.NULL), f"detach XDP from ifindex {ifindex}")


def xdp_query_id(ifindex: int, flags: int = 0) -> int:
    """Id of the XDP program attached in the mode `flags` selects (0: any); 0 if none."""
    out = ffi.new("uint32_t *")
    _check(lib().bpf_xdp_query_id(ifindex, flags, out), f"query XDP on ifindex {ifindex}")
    return int(out[0])


ffi.cdef(
    """
    struct bpf_test_run_opts {
        size_t sz;
        const void *data_in;
        void *data_out;
        uint32_t data_size_in;
        uint32_t data_size_out;
        const void *ctx_in;
        void *ctx_out;
        uint32_t ctx_size_in;
        uint32_t ctx_size_out;
        uint32_t retval;
        int repeat;
        uint32_t duration;
        uint32_t flags;
        uint32_t cpu;
        uint32_t batch_size;
    };
    int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);
    """
)


@dataclass(frozen=True)
class ProgRun:
    retval: int
    data: bytes
    duration_ns: int


BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


def prog_test_run(
    prog_fd: int, data: bytes, ctx: bytes | None = None, repeat: int = 1, flags: int = 0
) -> ProgRun:
    """Run a loaded program on one frame in the kernel (BPF_PROG_TEST_RUN), nothing attached:
    how the switch's verdicts are unit-tested without a network. With
    BPF_F_TEST_XDP_LIVE_FRAMES an XDP program's redirects really happen (no data out)."""
    opts = ffi.new("struct bpf_test_run_opts *")
    opts.sz = ffi.sizeof("struct bpf_test_run_opts")
    din = ffi.from_buffer(data)
    opts.data_in = din
    opts.data_size_in = len(data)
    opts.flags = flags
    dout = ffi.new("char[]", len(data) + 512)
    if not flags & BPF_F_TEST_XDP_LIVE_FRAMES:
        opts.data_out = dout
        opts.data_size_out = len(data) + 512
    if ctx is not None:
        cin = ffi.from_buffer(ctx)
        opts.ctx_in = cin
        opts.ctx_size_in = len(ctx)
    opts.repeat = repeat
    _check(lib().bpf_prog_test_run_opts(prog_fd, opts), "BPF_PROG_TEST_RUN")
    if flags & BPF_F_TEST_XDP_LIVE_FRAMES:
        return ProgRun(int(opts.retval), b"", opts.duration)
    return ProgRun(int(opts.retval), bytes(ffi.buffer(dout, opts.data_size_out)), opts.duration)


ffi.cdef(
    """
    enum bpf_tc_attach_point { BPF_TC_INGRESS = 1, BPF_TC_EGRESS = 2, BPF_TC_CUSTOM = 4 };
    struct bpf_tc_hook {
        size_t sz;
        int ifindex;
        enum bpf_tc_attach_point attach_point;
        uint32_t parent;
    };
    struct bpf_tc_opts {
        size_t sz;
        int prog_fd;
        uint32_t flags;
        uint32_t prog_id;
        uint32_t handle;
        uint32_t priority;
    };
    int bpf_tc_hook_create(struct bpf_tc_hook *hook);
    int bpf_tc_hook_destroy(struct bpf_tc_hook *hook);
    int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
    int bpf_tc_detach(const struct bpf_tc_hook *hook, const struct bpf_tc_opts *opts);
    int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
    """
)

TC_INGRESS = 1
TC_EGRESS = 2
TC_HANDLE = 0x4D53  # "MS": the filter handle and priority mstackd uses on its links
TC_PRIORITY = 0x4D53


def _tc_hook(ifindex: int, point: int) -> Any:
    hook = ffi.new("struct bpf_tc_hook *")
    hook.sz = ffi.sizeof("struct bpf_tc_hook")
    hook.ifindex = ifindex
    hook.attach_point = point
    return hook


def _tc_opts(prog_fd: int = 0) -> Any:
    opts = ffi.new("struct bpf_tc_opts *")
    opts.sz = ffi.sizeof("struct bpf_tc_opts")
    opts.handle = TC_HANDLE
    opts.priority = TC_PRIORITY
    opts.prog_fd = prog_fd
    return opts


def tc_attach(ifindex: int, prog_fd: int, point: int = TC_INGRESS) -> int:
    """Attach a TC (cls_bpf, direct-action) program on a clsact hook, creating the qdisc if
    needed. Returns the program id the kernel reports."""
    hook = _tc_hook(ifindex, point)
    rc = lib().bpf_tc_hook_create(hook)
    if rc < 0 and rc != -errno.EEXIST:
        raise BpfError(-rc, f"create clsact qdisc on ifindex {ifindex}")
    opts = _tc_opts(prog_fd)
    _check(lib().bpf_tc_attach(hook, opts), f"attach TC program to ifindex {ifindex}")
    return int(opts.prog_id)


def tc_query(ifindex: int, point: int = TC_INGRESS) -> int:
    """Id of mstackd's TC program on the hook, 0 if none."""
    opts = _tc_opts()
    rc = lib().bpf_tc_query(_tc_hook(ifindex, point), opts)
    if rc in (-errno.ENOENT, -errno.EINVAL):
        return 0
    _check(rc, f"query TC on ifindex {ifindex}")
    return int(opts.prog_id)


def tc_detach(ifindex: int, point: int = TC_INGRESS, destroy_qdisc: bool = True) -> None:
    """Remove mstackd's filter and, by default, the clsact qdisc (BPF_TC_INGRESS|EGRESS)."""
    hook = _tc_hook(ifindex, point)
    rc = lib().bpf_tc_detach(hook, _tc_opts())
    if rc < 0 and rc != -errno.ENOENT:
        raise BpfError(-rc, f"detach TC program from ifindex {ifindex}")
    if destroy_qdisc:
        hook = _tc_hook(ifindex, TC_INGRESS | TC_EGRESS)
        rc = lib().bpf_tc_hook_destroy(hook)
        if rc < 0 and rc != -errno.ENOENT:
            raise BpfError(-rc, f"remove clsact qdisc from ifindex {ifindex}")
