"""Where the CPU goes, from a system-wide `perf record -g` of an HTTP run (bench/httpd_ab.py
--perf NAME:RUN --perf-cpu 0,1): every sample is put in one category by the first frame from
the leaf up that names a part of the path (UTCP, httpd, the AF_XDP copy-mode transmit, the
switch's BPF programs, veth, the kernel's TCP/IP receive or send, ...), and in one process
group (the server, the load generator, kernel threads, idle, other people's work). Helpers
that serve every part (memcpy, skb and slab allocation, locks) are skipped over, so their
cost goes to the part that called them.

  python -m bench.perf_breakdown perf.data [--server-pids 123,124] [--by group|category]"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from collections.abc import Iterator

# (category, regex on the symbol), checked in order on each frame from the leaf up.
RULES: list[tuple[str, str]] = [
    (
        "switch BPF (XDP ingress, TC egress, redirect)",
        r"^bpf_prog_|^xdp_do_redirect|^dev_map_|^bq_|^__bpf_redirect|^skb_do_redirect|"
        r"^tcf_classify|^tc_run|^sch_handle_egress|^bpf_fib|^fib_table_lookup|^ip_route_output|"
        r"^htab_|^lookup_nulls_elem_raw|^bpf_skc_lookup|^__bpf_sk_lookup|^bpf_xdp_",
    ),
    (
        "AF_XDP RX: copy into the XSK",
        r"^__xsk_rcv|^xsk_rcv|^xsk_generic_rcv|^__xsk_map_redirect|^xsk_flush|^xp_alloc|^__xsk_map_flush",
    ),
    (
        "AF_XDP TX: an skb per frame (copy mode)",
        r"^__xsk_generic_xmit|^xsk_build_skb|^xsk_destruct_skb|^xsk_sendmsg|^__xsk_sendmsg|"
        r"^xsk_skb_|^__dev_direct_xmit|^xsk_cq_|^xskq_",
    ),
    ("veth", r"^veth_"),
    (
        "kernel TCP receive",
        r"^tcp_v4_rcv|^tcp_v4_do_rcv|^tcp_rcv_|^tcp_ack|^tcp_data_queue|^tcp_event_data_recv|"
        r"^__inet_lookup|^inet_lookup|^tcp_validate|^tcp_check_req|^tcp_conn_request|"
        r"^tcp_child_process|^tcp_fin|^tcp_urg|^__tcp_ack_snd_check|^tcp_send_delayed_ack|"
        r"^tcp_v4_syn_recv_sock|^tcp_create_openreq_child|^inet_csk_complete|^tcp_time_wait|"
        r"^tcp_timewait_state_process|^tcp_add_backlog|^sock_def_readable|^tcp_clean_rtx|"
        r"^tcp_ack_|^tcp_sacktag|^tcp_queue_rcv|^tcp_rcv|^__tcp_send_ack|^tcp_send_ack",
    ),
    (
        "kernel IP/netif receive",
        r"^ip_rcv|^ip_local_deliver|^ip_sublist_rcv|^__netif_receive_skb|^netif_receive|"
        r"^process_backlog|^__napi_poll|^net_rx_action|^enqueue_to_backlog|^napi_|^gro_|"
        r"^dev_gro_|^ip_list_rcv|^eth_type_trans",
    ),
    (
        "kernel TCP/IP send (sendfile/writev, connect, close)",
        r"^tcp_sendmsg|^tcp_write_xmit|^__tcp_transmit_skb|^tcp_push|^tcp_sendpage|^do_tcp_sendpages|"
        r"^ip_queue_xmit|^__ip_queue_xmit|^ip_output|^ip_finish_output|^__dev_queue_xmit|"
        r"^dev_hard_start_xmit|^tcp_v4_connect|^__inet_hash_connect|^__inet_check_established|"
        r"^tcp_close|^__tcp_close|^tcp_shutdown|^tcp_connect|^tcp_send_fin|^inet_release|"
        r"^tcp_done|^inet_csk_destroy_sock|^tcp_v4_destroy_sock|^tcp_set_state|^tcp_recvmsg|"
        r"^inet_accept|^inet_csk_accept|^tcp_transmit_skb|^tcp_v4_send|^__inet_stream_connect",
    ),
    (
        "sendfile / page cache",
        r"^splice|^do_splice|^filemap_|^generic_file_splice|^sendfile|"
        r"^do_sendfile|^__x64_sys_sendfile|^iter_file_splice",
    ),
    (
        "poll / epoll / wakeups / scheduler",
        r"^do_sys_poll|^do_poll|^ep_|^do_epoll|^schedule|^__schedule|^try_to_wake_up|"
        r"^__wake_up|^finish_task_switch|^pick_next|^dequeue_|^enqueue_task|^psi_|^update_curr|"
        r"^__x64_sys_poll|^__x64_sys_epoll",
    ),
    (
        "socket, fd and file syscalls",
        r"^__sys_|^__x64_sys_|^sock_|^sockfd_|^fput|^fget|^__fput|^alloc_file|^__sock_|"
        r"^do_sys_openat|^close_fd|^filp_close|^inet_|^__inet_|^lock_sock|^release_sock",
    ),
    ("syscall entry/exit", r"^entry_SYSCALL|^do_syscall_64|^syscall_exit|^syscall_return"),
    ("timers/irq", r"^hrtimer|^__hrtimer|^tick_|^asm_sysvec|^sysvec_|^irq_|^__irq"),
]
USER_RULES: list[tuple[str, str]] = [
    ("httpd core", r"^httpd_|^http_|^serve_next|^respond|^run$|^conn_"),
    (
        "UTCP stack (user)",
        r"^utcp_|^tcp_|^stack_|^ring_|^seq_|^rack|^cc_|^tx_|^rx_|^input_frame|^emit|^timer_cb|"
        r"^segment_options|^max_payload|^after_ack|^list_|^tw_|^place|^x_|^to_port|^mstack_port_|"
        r"^mstack_stats|^publish|^find$|^forget|^step$|^slot_of|^cork|^uncork|^finish|^u_",
    ),
    ("nginx user", r"^ngx_"),
]
COMPILED = [(c, re.compile(r)) for c, r in RULES]
UCOMPILED = [(c, re.compile(r)) for c, r in USER_RULES]


def group_of(comm: str, pid: int, server: set[int]) -> str:
    if pid in server:
        return "server"
    if comm == "wrk":
        return "load generator (wrk)"
    if comm.startswith(("ksoftirqd", "kworker", "rcu", "migration")):
        return "kernel threads"
    if comm == "swapper":
        return "idle"
    if comm.startswith(("python", "mstackd")):
        return "python (mstackd, harness)"
    return "other processes"


def category(frames: list[tuple[str, str]]) -> str:
    """frames: (symbol, dso) from the leaf up."""
    leaf_sym, leaf_dso = frames[0] if frames else ("?", "?")
    if leaf_dso and "kernel" not in leaf_dso and not leaf_dso.startswith("["):
        for c, rx in UCOMPILED:
            if rx.search(leaf_sym):
                return c
        # libc helpers (memmove, ...) go to the user-space caller's part
        for sym, dso in frames[1:]:
            if "kernel" in dso:
                break
            for c, rx in UCOMPILED:
                if rx.search(sym):
                    return c
        return "user, other (libc)" if "libc" in leaf_dso else "user, other"
    for sym, dso in frames:
        if "kernel" not in dso and not dso.startswith("["):
            break
        for c, rx in COMPILED:
            if rx.search(sym):
                return c
    return "kernel, other"


def samples(path: str) -> Iterator[tuple[str, int, list[tuple[str, str]]]]:
    out = subprocess.run(["perf", "script", "-i", path, "-F", "comm,pid,ip,sym,dso"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    comm, pid = "", 0
    frames: list[tuple[str, str]] = []
    for line in out.splitlines():
        if not line.strip():
            if comm:
                yield comm, pid, frames
            comm, frames = "", []
            continue
        if not line.startswith((" ", "\t")):
            m = re.match(r"\s*(.+?)\s+(\d+)\s*$|\s*(.+?)\s+(\d+)\s+", line)
            if m and m.group(1):
                comm, pid = m.group(1), int(m.group(2))
            elif m:
                comm, pid = m.group(3), int(m.group(4))
            else:
                comm, pid = line.split()[0], 0
            rest = line[m.end() :] if m else ""  # no -g: the frame is on this line
            f = re.match(r"\s*[0-9a-f]+\s+(\S+)\s+\((.*)\)", rest)
            if f:
                frames.append((f.group(1).split("+")[0], f.group(2)))
            continue
        f = re.match(r"\s*[0-9a-f]+\s+(\S+)\s+\((.*)\)", line)
        if f:
            frames.append((f.group(1).split("+")[0], f.group(2)))
    if comm:
        yield comm, pid, frames


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.perf_breakdown")
    ap.add_argument("data")
    ap.add_argument("--server-pids", default="", help="comma-separated: the server's processes")
    ap.add_argument("--min", type=float, default=0.5, help="hide rows below this percentage")
    ap.add_argument("--freq", type=float, default=0, help="perf's -F: print CPU µs per request")
    ap.add_argument("--requests", type=int, default=0, help="requests served while recording")
    a = ap.parse_args(argv)
    tab: collections.Counter[tuple[str, str]] = collections.Counter()
    total = 0
    server = {int(x) for x in a.server_pids.split(",") if x}
    for comm, pid, frames in samples(a.data):
        tab[(group_of(comm, pid, server), category(frames))] += 1
        total += 1
    groups: collections.Counter[str] = collections.Counter()
    for (g, _c), n in tab.items():
        groups[g] += n
    per_req = 1e6 / a.freq / a.requests if a.freq and a.requests else 0.0

    def us(n: int) -> str:
        return f"{n * per_req:7.1f} us/req" if per_req else ""

    print(f"{a.data}: {total} samples")
    for g, gn in groups.most_common():
        print(f"  {g:<28} {100 * gn / total:5.1f}% {us(gn)}")
        for (g2, c), n in tab.most_common():
            if g2 == g and 100 * n / total >= a.min:
                print(f"      {c:<52} {100 * n / total:5.1f}% {us(n)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
