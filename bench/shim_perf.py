"""Where an application's time goes under libmstack.so, from `perf record -g` of its process
(bench/nginx_ab.py --perf): each sample is put in one bucket. Kernel samples go to the syscall
the application (or the shim) made — found from the first user frame above the kernel's —
or to "kernel, interrupt/softirq" when no syscall is on the stack (work done for others on
this CPU: the veth peer's TCP receive, the switch's XDP, ...). User samples go to UTCP (the
stack, the port), the shim's own code (wrappers, epoll lists, locks), the application, libc.

  python -m bench.shim_perf perf.data [--shim libmstack.so] [--top 15]"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys

SYSCALL_OF = [
    # (bucket, regex on the libc/user symbol that entered the kernel)
    ("syscall getpid", r"getpid"),
    ("syscall futex (the shim's lock)", r"lll_lock|futex|pthread_mutex|lll_unlock"),
    ("syscall sendto (AF_XDP TX kick)", r"sendto"),
    ("syscall poll (helper thread)", r"^__poll|^poll|ppoll"),
    ("syscall epoll_wait", r"epoll_wait|epoll_pwait"),
    ("syscall epoll_ctl", r"epoll_ctl"),
    ("syscall read/write (eventfd, files)", r"libc_write|libc_read|^write|^read|eventfd"),
    ("syscall recvfrom (AF_XDP RX wakeup)", r"recvfrom"),
    ("syscall file (open, fstat, pread, sendfile)", r"open|fstat|pread|sendfile|stat"),
    ("syscall socket/close/setsockopt/accept", r"socket|close|setsockopt|accept|getsockopt|ioctl"),
    ("syscall clock_gettime", r"clock_gettime"),
]
UTCP = re.compile(
    r"^utcp_|^tcp_|^mstack_port|^msport|^x_|^input_frame|^tx_|^rx_|^timer_cb|^usk_|^sk_|"
    r"^rack|^cc_|^cubic|^newreno|^seq_|^tw_|^emit|^fill_flush|^segment_|^send_|^recv_"
)


def buckets(path: str, shim: str) -> collections.Counter[str]:
    out = subprocess.run(["perf", "script", "-i", path, "-F", "comm,tid,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    c: collections.Counter[str] = collections.Counter()
    frames: list[tuple[str, str]] = []
    head = ""

    def flush() -> None:
        if not head:
            return
        thread = "helper thread: " if head_tid != main_tid.get(head_comm, head_tid) else ""
        c[thread + classify(frames, shim)] += 1

    main_tid: dict[str, str] = {}
    head_tid = head_comm = ""
    for line in out.splitlines():
        if not line.strip():
            flush()
            head, frames = "", []
            continue
        if not line.startswith((" ", "\t")):
            head = line
            parts = line.split()
            head_comm, head_tid = parts[0], parts[1] if len(parts) > 1 else ""
            # the main thread's tid is the smallest (nginx's worker starts the helper)
            if head_comm not in main_tid or int(head_tid) < int(main_tid[head_comm]):
                main_tid[head_comm] = head_tid
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
        if m:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))
            frames.append((sym, m.group(2)))
    flush()
    return c


def classify(frames: list[tuple[str, str]], shim: str) -> str:
    if not frames:
        return "?"
    kernel = "kernel" in frames[0][1] or frames[0][1].startswith("[k")
    if kernel:
        user = [(s, d) for s, d in frames if "kernel" not in d]
        if not user:
            return "kernel, interrupt/softirq (no syscall on the stack)"
        sym = user[0][0]
        for b, rx in SYSCALL_OF:
            if re.search(rx, sym):
                return b
        return f"syscall other ({sym})"
    sym, dso = frames[0]
    if shim in dso:
        return "UTCP (stack, port)" if UTCP.search(sym) else f"shim code ({sym})"
    if "vdso" in dso:
        return "vdso clock_gettime"
    if "libc" in dso:
        for _sym, d in frames[1:]:
            if shim in d:
                return "libc for the shim/UTCP (memcpy, mutex)"
            if "libc" not in d:
                break
        return "libc, other (nginx)"
    if "nginx" in dso:
        return "nginx"
    return f"other ({dso})"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.shim_perf")
    ap.add_argument("data")
    ap.add_argument("--shim", default=".so", help="the shim's file name (as perf shows it)")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args(argv)
    c = buckets(a.data, a.shim)
    total = sum(c.values()) or 1
    shim_code: collections.Counter[str] = collections.Counter()
    for k, v in c.items():
        if "shim code (" in k:
            helper = k.startswith("helper")
            shim_code["helper: shim code (all)" if helper else "shim code (all)"] += v
    rows = [(k, v) for k, v in c.items() if "shim code (" not in k] + list(shim_code.items())
    for k, v in sorted(rows, key=lambda kv: -kv[1])[: a.top]:
        print(f"{100 * v / total:6.1f}%  {k}")
    print(f"{total} samples")
    print("\nshim code by symbol:")
    by_sym = sorted(((k, v) for k, v in c.items() if "shim code (" in k), key=lambda kv: -kv[1])
    for k, v in by_sym[:12]:
        print(f"{100 * v / total:6.1f}%  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
