"""Connection hand-off within a listen group (docs/mstackd.md, "Hand-off"): a process that closes
its listener (nginx's old worker on reload) hands the connections it has not accepted yet to
another member of the binding's group instead of resetting them. The daemon checks the request
against what it and the switch know, pushes an IMPORT to a member's inbox, waits for the answer
without holding up anyone else, re-points the switch's flows to the member that adopted them,
and answers the sender. It never reads the blob of serialized connections: it passes the memfd
on as it came."""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import heapq
import itertools
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mstackd import kabi, libbpf, proto
from mstackd.abi import consts
from mstackd.registry import Registry
from mstackd.switch import ip_be, ip_text, port_be

log = logging.getLogger("mstackd.handoff")

NEED_SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
IMPORT_TIMEOUT_S = consts.MSTACK_IMPORT_TIMEOUT_MS / 1000
HANDOFF_TIMEOUT_S = consts.MSTACK_HANDOFF_TIMEOUT_MS / 1000
MIN_TRY_S = 0.02  # less time than this left: no new target is asked
FIN_FLAGS = consts.MSTACK_FLOW_FIN_IN | consts.MSTACK_FLOW_FIN_OUT  # kept; the moving mark is ours


# -- timers of the event loop ------------------------------------------------------------------


@dataclass(eq=False)
class Timer:
    when: float
    fn: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """One-shot callbacks on CLOCK_MONOTONIC, run by the daemon's loop between selects."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._n = itertools.count()

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        t = Timer(time.monotonic() + max(0.0, delay), fn)
        heapq.heappush(self._heap, (t.when, next(self._n), t))
        return t

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def run_due(self) -> None:
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, _, t = heapq.heappop(self._heap)
            if not t.cancelled:
                t.cancelled = True
                try:
                    t.fn()
                except Exception:  # a bug must cost one hand-off, never the daemon
                    log.exception("timer callback failed")


# -- checks ------------------------------------------------------------------------------------


def check_blob(fd: int) -> int:
    """The hand-off blob must be a sealed memfd (nobody can change it under the target) of at
    most MSTACK_HANDOFF_MAX_BLOB bytes; returns its size. The daemon never reads it."""
    st = os.fstat(fd)
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        link = ""
    if not stat.S_ISREG(st.st_mode) or not link.startswith("/memfd:"):
        raise proto.ProtoError(errno.EBADF, "the hand-off blob must be a memfd")
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        seals = 0
    if seals & NEED_SEALS != NEED_SEALS:
        raise proto.ProtoError(
            errno.EINVAL, "the hand-off memfd must be sealed F_SEAL_WRITE|F_SEAL_GROW|F_SEAL_SHRINK"
        )
    if st.st_size > consts.MSTACK_HANDOFF_MAX_BLOB:
        raise proto.ProtoError(
            errno.EFBIG,
            f"hand-off blob of {st.st_size} bytes, at most {consts.MSTACK_HANDOFF_MAX_BLOB}",
        )
    return int(st.st_size)


def flow_map_key(f: proto.Flow) -> dict[str, int]:
    laddr, raddr, lport, rport = f
    return {"raddr": raddr, "laddr": laddr, "rport": rport, "lport": lport,
            "proto": consts.MSTACK_PROTO_TCP}  # fmt: skip


def flow_text(f: proto.Flow) -> str:
    laddr, raddr, lport, rport = f
    return f"{ip_text(laddr)}:{socket.ntohs(lport)}<-{ip_text(raddr)}:{socket.ntohs(rport)}"


# -- state -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Inbox:
    """A port's inbox: the second connection its process opened, where IMPORTs are pushed."""

    conn: Any  # server.Conn
    port_id: int
    next_seq: int = 1
    pending: dict[int, Handoff] = field(default_factory=dict)  # by IMPORT seq


@dataclass(eq=False)
class Handoff:
    conn: Any  # the sender's server.Conn
    seq: int  # of the HANDOFF request
    binding_id: int
    port_id: int  # the sender's port
    flows: list[proto.Flow]
    memfd: int
    candidates: list[int]  # target ports still to ask, in order
    started: float
    deadline: float
    target: Inbox | None = None
    target_seq: int = 0
    timer: Timer | None = None
    tried: list[str] = field(default_factory=list)  # what each asked member did


class Handoffs:
    """Inboxes and hand-offs in progress. The daemon calls in with requests, inbox datagrams,
    connections and ports going away; replies go out through `reply`, inboxes that misbehave
    are closed through `close_conn` (which calls conn_gone back)."""

    def __init__(
        self,
        registry: Registry,
        flows: libbpf.BpfMap,
        local_addrs: Callable[[], set[str]],
        timers: Timers,
        reply: Callable[..., None],
        close_conn: Callable[[Any], None],
    ) -> None:
        self.registry = registry
        self.flows = flows
        self.local_addrs = local_addrs
        self.timers = timers
        self.reply = reply
        self.close_conn = close_conn
        self.inboxes: dict[int, Inbox] = {}  # by port id
        self.active: list[Handoff] = []
        self._rr: dict[int, int] = {}  # binding id -> round-robin cursor
        self.closing = False
        self.counters = {
            "requests": 0,  # HANDOFF requests
            "rejected": 0,  # bad requests (error replies)
            "handoffs": 0,  # hand-offs that moved flows
            "flows_moved": 0,
            "flows_not_repointed": 0,  # adopted, but the flow entry had gone or changed owner
            "failures": 0,  # hand-offs no member took (or whose sender went away)
            "import_timeouts": 0,
            "import_refused": 0,  # an IMPORT answered with an error or 0 flows
            "import_errors": 0,  # an inbox that failed, closed or answered malformed
        }

    def stats(self) -> dict[str, int]:
        return {**self.counters, "pending": len(self.active), "inboxes": len(self.inboxes)}

    # -- INBOX -----------------------------------------------------------------------------

    def open_inbox(self, conn: Any, port_id: int, owner_pid: int | None) -> None:
        """conn becomes port_id's inbox; owner_pid: the pid of the connection holding the port."""
        if conn.ports:
            raise proto.ProtoError(
                errno.EINVAL, "a connection that holds ports cannot be an inbox: open another"
            )
        if getattr(conn, "inbox", None) is not None:
            raise proto.ProtoError(errno.EBUSY, "this connection is an inbox already")
        if owner_pid is None:
            raise proto.ProtoError(errno.ENOENT, f"no port {port_id}")
        if owner_pid != conn.pid:
            raise proto.ProtoError(errno.EPERM, f"port {port_id} is not this process's")
        if port_id in self.inboxes:
            raise proto.ProtoError(errno.EBUSY, f"port {port_id} has an inbox already")
        ib = Inbox(conn, port_id)
        self.inboxes[port_id] = ib
        conn.inbox = ib
        log.info("port %d: inbox opened by pid %d", port_id, conn.pid)

    # -- HANDOFF ---------------------------------------------------------------------------

    def start(self, conn: Any, req: proto.Request) -> None:
        """Check a HANDOFF and set it going; its reply comes later (finish). A bad request
        raises ProtoError and is answered at once by the caller; req.fds stays the caller's
        then, else the memfd is taken from it."""
        self.counters["requests"] += 1
        try:
            flows = self._check(conn, req)
        except proto.ProtoError:
            self.counters["rejected"] += 1
            raise
        b = req.body
        binding = self.registry.bindings[int(b.binding_id)]
        others = [m for m in binding.members if m != b.port_id and m in self.inboxes]
        if others:  # spread hand-offs over the members: round-robin per binding
            k = self._rr.get(binding.id, 0) % len(others)
            self._rr[binding.id] = k + 1
            others = others[k:] + others[:k]
        now = time.monotonic()
        h = Handoff(conn, req.seq, binding.id, int(b.port_id), flows, req.fds.pop(), others,
                    now, now + HANDOFF_TIMEOUT_S)  # fmt: skip
        self.active.append(h)
        if not others:
            h.tried.append("no other member with an inbox")
        self._try_next(h)

    def _check(self, conn: Any, req: proto.Request) -> list[proto.Flow]:
        b = req.body
        if b.port_id not in conn.ports:
            raise proto.ProtoError(errno.EPERM, f"port {b.port_id} is not this connection's")
        n = int(b.n_flows)
        if not 1 <= n <= consts.MSTACK_HANDOFF_MAX_FLOWS:
            raise proto.ProtoError(
                errno.EINVAL, f"{n} flows; a hand-off carries 1..{consts.MSTACK_HANDOFF_MAX_FLOWS}"
            )
        binding = self.registry.bindings.get(int(b.binding_id))
        if binding is None:
            raise proto.ProtoError(errno.ENOENT, f"no binding {b.binding_id}")
        if binding.kind != "listen":
            raise proto.ProtoError(errno.EINVAL, f"binding {binding.id} is not a listener")
        if conn.pid not in binding.claimants():
            raise proto.ProtoError(
                errno.EPERM, f"process {conn.pid} does not hold binding {binding.id}"
            )
        lport = port_be(binding.key.port)
        wildcard = binding.key.addr == "0.0.0.0"
        local = self.local_addrs() if wildcard else set()
        flows: list[proto.Flow] = []
        for i in range(n):
            w = b.flows[i]
            f = (int(w.laddr), int(w.raddr), int(w.lport), int(w.rport))
            if f[2] != lport or (
                ip_text(f[0]) not in local if wildcard else f[0] != ip_be(binding.key.addr)
            ):
                raise proto.ProtoError(
                    errno.EINVAL, f"flow {i} ({flow_text(f)}) is not binding {binding.id}'s"
                )
            if f in flows:
                raise proto.ProtoError(errno.EINVAL, f"flow {i} ({flow_text(f)}) given twice")
            if any(f in h.flows for h in self.active):
                raise proto.ProtoError(
                    errno.EBUSY, f"flow {i} ({flow_text(f)}) is in a hand-off already"
                )
            cur: Any = self.flows.lookup(flow_map_key(f))
            if cur is None:
                raise proto.ProtoError(errno.ENOENT, f"flow {i} ({flow_text(f)}): no such flow")
            if cur.port_id != b.port_id:
                raise proto.ProtoError(
                    errno.EPERM, f"flow {i} ({flow_text(f)}) belongs to port {cur.port_id}"
                )
            flows.append(f)
        check_blob(req.fds[0])
        return flows

    def _try_next(self, h: Handoff) -> None:
        """Push the IMPORT to the next member that can take it, or finish with nothing moved."""
        while h.candidates and not self.closing:
            left = h.deadline - time.monotonic()
            if left < MIN_TRY_S:
                h.tried.append("out of time")
                break
            target = h.candidates.pop(0)
            ib = self.inboxes.get(target)
            binding = self.registry.bindings.get(h.binding_id)
            if ib is None or binding is None or target not in binding.members:
                h.tried.append(f"port {target} gone")
                continue
            seq = ib.next_seq
            ib.next_seq += 1
            self._mark(h, target)  # its first segment on a flow takes the flow over
            msg = proto.encode_import(seq, h.binding_id, target, h.flows)
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [h.memfd]).tobytes())]
            try:
                ib.conn.sock.sendmsg([msg], anc)
            except OSError as e:
                self.counters["import_errors"] += 1
                h.tried.append(f"port {target}: {e.strerror or e}")
                continue
            ib.pending[seq] = h
            h.target, h.target_seq = ib, seq
            h.timer = self.timers.call_later(min(IMPORT_TIMEOUT_S, left), lambda: self._expired(h))
            return
        self._finish(h, 0, 0)

    def _expired(self, h: Handoff) -> None:
        ib = h.target
        if ib is None:
            return
        self.counters["import_timeouts"] += 1
        h.tried.append(f"port {ib.port_id}: no answer")
        self._detach_target(h)
        self._try_next(h)

    def _detach_target(self, h: Handoff) -> None:
        if h.timer is not None:
            h.timer.cancel()
            h.timer = None
        if h.target is not None:
            h.target.pending.pop(h.target_seq, None)  # a late answer is recognised and dropped
            h.target = None

    def _finish(self, h: Handoff, target: int, n: int, *, answer: bool = True) -> None:
        self._detach_target(h)
        self._mark(h, None, start=n)  # the flows that did not move stay the sender's
        with contextlib.suppress(ValueError):
            self.active.remove(h)
        with contextlib.suppress(OSError):
            os.close(h.memfd)
        h.memfd = -1
        ms = (time.monotonic() - h.started) * 1000
        tried = f" ({'; '.join(h.tried)})" if h.tried else ""
        if n:
            repointed = self._repoint(h, target, n)
            self.counters["handoffs"] += 1
            self.counters["flows_moved"] += n
            self.counters["flows_not_repointed"] += n - repointed
            log.info("hand-off: pid %d port %d binding %d: %d of %d flows to port %d "
                     "(%d re-pointed) in %.0f ms%s", h.conn.pid, h.port_id, h.binding_id, n,
                     len(h.flows), target, repointed, ms, tried)  # fmt: skip
        else:
            self.counters["failures"] += 1
            log.info("hand-off: pid %d port %d binding %d: none of %d flows moved in %.0f ms%s",
                     h.conn.pid, h.port_id, h.binding_id, len(h.flows), ms, tried)  # fmt: skip
        if answer:
            self.reply(h.conn, consts.MSTACK_MSG_HANDOFF, h.seq,
                       fields={"target_port": target, "n_moved": n})  # fmt: skip

    def _repoint(self, h: Handoff, target: int, n: int) -> int:
        """The target adopted flows[0..n): steer them to its port — only entries the sender's
        port still owns (one that went or changed hands in the meantime is left alone), or that
        the target already took over with its first segment (the egress program does that for
        a flow marked as moving to it)."""
        done = 0
        for f in h.flows[:n]:
            key = flow_map_key(f)
            try:
                cur: Any = self.flows.lookup(key)
                if cur is None or cur.port_id not in (h.port_id, target):
                    continue
                flags = int(cur.flags) & FIN_FLAGS
                value = {"port_id": target, "flags": flags, "last_ns": cur.last_ns}
                self.flows.update(key, value, kabi.BPF_EXIST)
                done += 1
            except libbpf.BpfError as e:
                log.warning("hand-off: flow %s not re-pointed: %s", flow_text(f), e)
        return done

    def _mark(self, h: Handoff, target: int | None, start: int = 0) -> None:
        """Mark the sender's flows[start..] as moving to `target` (None: not moving). Only
        entries the sender's port still owns; the FIN bits the data plane sets are kept."""
        for f in h.flows[start:]:
            key = flow_map_key(f)
            try:
                cur: Any = self.flows.lookup(key)
                if cur is None or cur.port_id != h.port_id:
                    continue
                flags = int(cur.flags) & FIN_FLAGS
                if target is not None:
                    flags |= consts.MSTACK_FLOW_MOVING | target << consts.MSTACK_FLOW_TO_SHIFT
                value = {"port_id": h.port_id, "flags": flags, "last_ns": cur.last_ns}
                self.flows.update(key, value, kabi.BPF_EXIST)
            except libbpf.BpfError as e:
                log.warning("hand-off: flow %s not marked: %s", flow_text(f), e)

    # -- IMPORT replies ----------------------------------------------------------------------

    def inbox_datagram(self, ib: Inbox, data: bytes, fds: list[int], truncated: bool) -> None:
        """What came in on an inbox: an IMPORT reply, or a protocol violation that closes it.
        Closes `fds` in any case."""
        try:
            r = proto.decode_push_reply(consts.MSTACK_MSG_IMPORT, data, fds, truncated)
        except proto.ProtoError as e:
            r, why = None, e.detail
        finally:  # first (a good reply carries none): nothing received outlives this datagram
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if r is None:
            self._bad_inbox(ib, f"malformed IMPORT reply: {why}")
            return
        h = ib.pending.get(r.seq)
        if h is None:
            if 0 < r.seq < ib.next_seq:  # answered after its time ran out, or cancelled
                log.info("port %d: late IMPORT reply %d dropped", ib.port_id, r.seq)
                return
            self._bad_inbox(ib, f"IMPORT reply to seq {r.seq}, never sent")
            return
        if r.n > len(h.flows):
            self._bad_inbox(ib, f"IMPORT reply says {r.n} of {len(h.flows)} flows adopted")
            return
        self._detach_target(h)
        if r.status < 0 or r.n == 0:
            self.counters["import_refused"] += 1
            why = os.strerror(-r.status) if r.status else "took none"
            h.tried.append(f"port {ib.port_id}: {why}")
            self._try_next(h)
            return
        self._finish(h, ib.port_id, r.n)

    def _bad_inbox(self, ib: Inbox, why: str) -> None:
        log.warning("port %d: %s; closing its inbox", ib.port_id, why)
        if not ib.pending:  # else counted per hand-off when the inbox closes (conn_gone)
            self.counters["import_errors"] += 1
        for h in ib.pending.values():
            h.tried.append(f"port {ib.port_id}: {why}")
        self.close_conn(ib.conn)

    # -- things going away -------------------------------------------------------------------

    def conn_gone(self, conn: Any) -> None:
        """A connection closed: its hand-offs are cancelled (nobody to answer; what a target
        adopts late is dropped by the switch's flow check), and if it was an inbox, what waited
        on it goes to the next member."""
        for h in [h for h in self.active if h.conn is conn]:
            h.tried.append("the sender went away")
            self._finish(h, 0, 0, answer=False)
        found: Inbox | None = getattr(conn, "inbox", None)
        if found is None:
            return
        ib: Inbox = found
        conn.inbox = None
        if self.inboxes.get(ib.port_id) is ib:
            del self.inboxes[ib.port_id]
        log.info("port %d: inbox closed", ib.port_id)
        for h in list(ib.pending.values()):
            self.counters["import_errors"] += 1
            h.tried.append(f"port {ib.port_id}: inbox closed")
            self._detach_target(h)
            self._try_next(h)

    def port_gone(self, port_id: int) -> None:
        """A port closed: its inbox ends with it, and its own hand-offs end with nothing moved
        (its flows went with it)."""
        ib = self.inboxes.get(port_id)
        if ib is not None:
            self.close_conn(ib.conn)
        for h in [h for h in self.active if h.port_id == port_id]:
            h.tried.append("the sender's port closed")
            self._finish(h, 0, 0)

    def close(self) -> None:
        """Daemon shutdown: hand-offs in progress end with nothing moved."""
        self.closing = True
        for h in list(self.active):
            h.tried.append("mstackd is stopping")
            self._finish(h, 0, 0)


__all__ = ["Handoffs", "Inbox", "Timers", "check_blob"]
