"""Connection hand-off within a listen group, through a real mstackd: a sender hands flows it
owns in the switch's flow table (inserted here into the pinned map) to another member, whose
inbox gets the IMPORT with the memfd passed through; the flows are re-pointed afterwards. Every
refusal, every way a target can fail (silence, refusal, hanging up, its port closing, a
malformed answer) and a sender that goes away while its hand-off is pending — with no fd left
open in the daemon or in the test, and the daemon serving everyone throughout."""

from __future__ import annotations

import errno
import fcntl
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from ctests import VARIANTS
from mstack_testkit import AppClient, Mstackd, ReplyError
from mstackd import libbpf, proto
from mstackd.abi import consts
from mstackd.switch import flow_key, ip_be
from testbed.netns import stop_process

pytestmark = pytest.mark.system

LISTEN, CONNECT = consts.MSTACK_REG_LISTEN, consts.MSTACK_REG_CONNECT
HANDOFF, INBOX, IMPORT = (
    consts.MSTACK_MSG_HANDOFF,
    consts.MSTACK_MSG_INBOX,
    consts.MSTACK_MSG_IMPORT,
)
SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK
BLOB_NAME = "mst-handoff-blob"
FLOW_TYPES = ("struct mstack_flow_key", "struct mstack_flow")
REMOTE_PORT0 = 40000
TESTS_DIR = Path(__file__).resolve().parents[1]


def listener(ip: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(16)
    return s


def blob(data: bytes = b"serialized connections", seals: int = SEALS) -> int:
    fd = os.memfd_create(BLOB_NAME, os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    os.write(fd, data)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


def fd_links(pid: int | str) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with suppress(OSError):
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return out


def settled_fds(d: Mstackd) -> list[str]:
    """The daemon's fds once connections that just closed are gone from them."""
    links = fd_links(d.proc.pid)
    for _ in range(50):
        time.sleep(0.1)
        now = fd_links(d.proc.pid)
        if Counter(now) == Counter(links):
            break
        links = now
    return links


def daemon_blobs(d: Mstackd) -> int:
    """How many hand-off memfds the daemon holds (0 whenever no hand-off is pending)."""
    return sum(1 for link in fd_links(d.proc.pid) if link.startswith(f"/memfd:{BLOB_NAME}"))


@contextmanager
def closing_map(d: Mstackd) -> Iterator[libbpf.BpfMap]:
    """The switch's pinned flow table."""
    m = libbpf.BpfMap.open_pinned(d.bpf_dir / "flows", *FLOW_TYPES)
    try:
        yield m
    finally:
        m.close()


def open_inbox(d: Mstackd, port_id: int) -> AppClient:
    c = d.client()
    c.hello()
    c.request(INBOX, {"port_id": port_id})
    return c


class Scene:
    """A listening binding on the test bed: a sender with its port in the group, `n` other
    members (each with its own connection, port and — unless told otherwise — inbox), and the
    switch's pinned flow table."""

    def __init__(self, d: Mstackd, lport: int, n: int, inboxes: bool = True) -> None:
        assert d.host is not None
        self.d, self.ip, self.lport = d, d.host.host_ip, lport
        self.stack = ExitStack()
        self.ls = self.stack.enter_context(listener(self.ip, lport))
        self.sender = self.client()
        self.sp = self.port(self.sender)
        self.bid = self.sender.register(self.ls, LISTEN)
        self.sender.join(self.bid, self.sp)
        self.members: list[AppClient] = []
        self.ports: list[int] = []
        self.inboxes: list[AppClient | None] = []
        for _ in range(n):
            c = self.client()
            p = self.port(c)
            c.join(self.bid, p)
            self.members.append(c)
            self.ports.append(p)
            self.inboxes.append(self.stack.enter_context(open_inbox(d, p)) if inboxes else None)
        self.map = self.stack.enter_context(closing_map(d))
        self.next_rport = REMOTE_PORT0

    def client(self) -> AppClient:
        c = self.stack.enter_context(self.d.client())
        c.hello()
        return c

    @staticmethod
    def port(c: AppClient) -> int:
        port_id, fds, _ = c.port_open()
        for fd in fds:
            os.close(fd)
        return port_id

    def add_flows(self, n: int, owner: int | None = None) -> list[dict[str, int]]:
        """n flows of this binding owned by `owner` (the sender's port) in the flow table."""
        assert self.d.host is not None
        out = []
        for _ in range(n):
            rport = self.next_rport
            self.next_rport += 1
            self.map.update(
                flow_key(self.d.host.remote_ip, rport, self.ip, self.lport),
                {"port_id": owner or self.sp, "flags": 0, "last_ns": 12345 + rport},
            )
            out.append(self.wire(self.ip, rport))
        return out

    def wire(self, laddr: str, rport: int, lport: int | None = None) -> dict[str, int]:
        assert self.d.host is not None
        return {
            "laddr": ip_be(laddr),
            "raddr": ip_be(self.d.host.remote_ip),
            "lport": socket.htons(lport or self.lport),
            "rport": socket.htons(rport),
        }

    def owner(self, f: dict[str, int]) -> int | None:
        assert self.d.host is not None
        v: Any = self.map.lookup(
            flow_key(self.d.host.remote_ip, socket.ntohs(f["rport"]), self.ip, self.lport)
        )
        return None if v is None else int(v.port_id)

    def close(self) -> None:
        self.stack.close()


@contextmanager
def scene(d: Mstackd, lport: int, n: int = 1, inboxes: bool = True) -> Iterator[Scene]:
    with d.client() as c:
        c.hello()  # the daemon watches this process from now on (a pidfd): part of its baseline
    before = len(os.listdir("/proc/self/fd"))
    before_links = settled_fds(d)
    daemon_before = len(before_links)
    s = Scene(d, lport, n, inboxes)
    try:
        yield s
    finally:
        s.close()
    # Nothing left open here, nor in the daemon (its shadow copies go with the next sweep); the
    # ports went with their connections.
    assert len(os.listdir("/proc/self/fd")) == before
    assert d.wait_until(lambda: daemon_blobs(d) == 0 and d.admin("ports") == [], timeout=10)
    assert d.wait_until(lambda: len(fd_links(d.proc.pid)) == daemon_before, timeout=10), str(
        (Counter(fd_links(d.proc.pid)) - Counter(before_links), len(fd_links(d.proc.pid)))
    )


def send_handoff(
    c: AppClient,
    bid: int,
    port_id: int,
    flows: list[dict[str, int]],
    fd: int | None,
    n: int | None = None,
) -> None:
    c.seq += 1
    fields = {"binding_id": bid, "port_id": port_id,
              "n_flows": len(flows) if n is None else n, "flows": flows}  # fmt: skip
    c.send_raw(proto.encode_request(HANDOFF, c.seq, fields), [fd] if fd is not None else None)


def handoff_reply(c: AppClient, seq: int | None = None) -> tuple[int, int]:
    """(target_port, n_moved) of the reply to seq (default: the last request), or ReplyError."""
    data, fds = c.recv_raw()
    assert fds == []
    mtype, status, msg = proto.decode_reply(data)
    hdr = msg.hdr if status else msg.r.hdr
    assert mtype == HANDOFF and hdr.seq == (c.seq if seq is None else seq)
    if status:
        raise ReplyError(status, proto.ffi.string(msg.detail).decode())
    assert len(data) == proto.ffi.sizeof("struct mstack_handoff_reply")
    return int(msg.target_port), int(msg.n_moved)


def handoff(
    c: AppClient, bid: int, port_id: int, flows: list[dict[str, int]], fd: int | None = None,
    n: int | None = None,
) -> tuple[int, int]:  # fmt: skip
    own = fd is None
    if own:
        fd = blob()
    try:
        send_handoff(c, bid, port_id, flows, fd, n)
        return handoff_reply(c)
    finally:
        if own and fd is not None:
            os.close(fd)


def recv_import(ib: AppClient, timeout: float = 5.0) -> tuple[Any, int]:
    ib.sock.settimeout(timeout)
    try:
        data, fds = ib.recv_raw()
    finally:
        ib.sock.settimeout(10)
    msg = proto.decode_import(data)
    assert len(fds) == 1, fds
    return msg, fds[0]


def pending_handoff(s: Scene, n_flows: int) -> tuple[list[dict[str, int]], int, AppClient, Any]:
    """A hand-off of n_flows new flows from the sender, its IMPORT received (memfd closed) but
    not answered by the first member: the flows, the sender's blob (still open), the member's
    inbox and the IMPORT."""
    flows = s.add_flows(n_flows)
    fd = blob()
    send_handoff(s.sender, s.bid, s.sp, flows, fd)
    ib = s.inboxes[0]
    assert ib is not None
    msg, mfd = recv_import(ib)
    os.close(mfd)
    return flows, fd, ib, msg


def answer(ib: AppClient, seq: int, n: int, status: int = 0) -> None:
    fields = {"n_imported": n} if status == 0 else None
    ib.send_raw(proto.encode_reply(IMPORT, seq, status, "", fields))


def wire_flows(msg: Any) -> list[dict[str, int]]:
    return [
        {k: int(getattr(msg.flows[i], k)) for k in ("laddr", "raddr", "lport", "rport")}
        for i in range(msg.n_flows)
    ]


def counters(d: Mstackd) -> dict[str, int]:
    out: dict[str, int] = d.admin("stats")["handoff"]
    return out


# -- the hand-off ---------------------------------------------------------------------------


def test_full_handoff_moves_the_adopted_flows(mstackd: Mstackd) -> None:
    with scene(mstackd, 8400, n=1) as s:
        flows = s.add_flows(3)
        s.sender.leave(s.bid, s.sp)  # the old worker has already left the group
        data = b"\x01state of three connections" * 100
        fd = blob(data)
        send_handoff(s.sender, s.bid, s.sp, flows, fd)
        ib = s.inboxes[0]
        assert ib is not None
        msg, mfd = recv_import(ib)
        try:
            assert (msg.binding_id, msg.port_id, msg.n_flows) == (s.bid, s.ports[0], 3)
            assert wire_flows(msg) == flows
            # The very memfd the sender made, passed through: same inode, same bytes, sealed.
            assert os.fstat(mfd).st_ino == os.fstat(fd).st_ino
            assert os.pread(mfd, len(data) + 1, 0) == data
            assert fcntl.fcntl(mfd, fcntl.F_GET_SEALS) & SEALS == SEALS
            # While the target decides, the daemon serves everyone else.
            assert mstackd.admin("status")["handoff"]["pending"] == 1
            with mstackd.client() as other:
                assert other.hello().max_ports > 0
            # The flows are still the sender's until the target has adopted them.
            assert [s.owner(f) for f in flows] == [s.sp] * 3
            answer(ib, msg.hdr.seq, 2)
        finally:
            os.close(mfd)
        assert handoff_reply(s.sender) == (s.ports[0], 2)
        os.close(fd)
        assert [s.owner(f) for f in flows] == [s.ports[0], s.ports[0], s.sp]
        v: Any = s.map.lookup(flow_key(mstackd.host.remote_ip, REMOTE_PORT0, s.ip, 8400))  # type: ignore[union-attr]
        assert (v.flags, v.last_ns) == (0, 12345 + REMOTE_PORT0)  # only the owner changed
        c = counters(mstackd)
        assert (c["requests"], c["handoffs"], c["flows_moved"], c["failures"]) == (1, 1, 2, 0)
        assert (c["pending"], c["inboxes"]) == (0, 1)
        assert daemon_blobs(mstackd) == 0
        st = mstackd.ctl("stats", "--json")
        assert '"flows_moved": 2' in st.stdout
        assert "flows_moved=2" in mstackd.ctl("stats").stdout
    assert "hand-off: pid" in mstackd.log() and "2 of 3 flows to port" in mstackd.log()


def test_handoffs_are_spread_over_the_members(mstackd: Mstackd) -> None:
    with scene(mstackd, 8401, n=2) as s:
        targets = []
        for _ in range(4):
            flows = s.add_flows(1)
            fd = blob()
            send_handoff(s.sender, s.bid, s.sp, flows, fd)
            # Whichever inbox got it answers.
            socks = {ib.sock.fileno(): (ib, p) for ib, p in zip(s.inboxes, s.ports, strict=True)
                     if ib is not None}  # fmt: skip
            with selectors.DefaultSelector() as sel:
                for sfd in socks:
                    sel.register(sfd, selectors.EVENT_READ)
                ready = sel.select(5.0)
            assert len(ready) == 1, ready
            ib, p = socks[ready[0][0].fd]
            msg, mfd = recv_import(ib)
            os.close(mfd)
            assert msg.port_id == p
            answer(ib, msg.hdr.seq, 1)
            target, n = handoff_reply(s.sender)
            os.close(fd)
            assert n == 1 and s.owner(flows[0]) == target
            targets.append(target)
        assert sorted(targets) == sorted(s.ports * 2)


def test_a_silent_target_is_skipped_and_its_late_answer_dropped(mstackd: Mstackd) -> None:
    with scene(mstackd, 8402, n=2) as s:
        flows = s.add_flows(2)
        fd = blob()
        t0 = time.monotonic()
        send_handoff(s.sender, s.bid, s.sp, flows, fd)
        got = {}
        for ib in s.inboxes:
            assert ib is not None
            msg, mfd = recv_import(ib, timeout=3)
            os.close(mfd)
            got[msg.port_id] = (ib, msg)
        # Both were asked, the second ~500 ms after the first went unanswered (round-robin
        # asks the group's first member first); answer the second, then the first, late.
        assert time.monotonic() - t0 >= 0.4
        ib_late, msg_late = got[s.ports[0]]
        ib_ok, msg_ok = got[s.ports[1]]
        answer(ib_ok, msg_ok.hdr.seq, 2)
        target, n = handoff_reply(s.sender)
        assert (target, n) == (msg_ok.port_id, 2)
        assert [s.owner(f) for f in flows] == [target, target]
        answer(ib_late, msg_late.hdr.seq, 2)  # too late: dropped, the inbox stays open
        os.close(fd)
        c = counters(mstackd)
        assert c["import_timeouts"] == 1 and c["handoffs"] == 1
        assert mstackd.wait_until(lambda: "late IMPORT reply" in mstackd.log(), timeout=5)
        assert counters(mstackd)["inboxes"] == 2
        assert [s.owner(f) for f in flows] == [target, target]


def _first_import(s: Scene) -> tuple[int, AppClient, Any]:
    """The member asked first (round-robin makes it the first for a binding's first hand-off)."""
    ib = s.inboxes[0]
    assert ib is not None
    msg, mfd = recv_import(ib)
    os.close(mfd)
    return 0, ib, msg


def _second_gets_it(s: Scene, flows: list[dict[str, int]], fd: int) -> None:
    ib = s.inboxes[1]
    assert ib is not None
    msg, mfd = recv_import(ib)
    os.close(mfd)
    assert msg.port_id == s.ports[1]
    answer(ib, msg.hdr.seq, len(flows))
    assert handoff_reply(s.sender) == (s.ports[1], len(flows))
    os.close(fd)
    assert all(s.owner(f) == s.ports[1] for f in flows)


@pytest.mark.parametrize("how", ["refuses", "takes_none", "hangs_up", "port_closes"])
def test_a_failing_target_passes_the_handoff_on(mstackd: Mstackd, how: str) -> None:
    with scene(mstackd, 8403, n=2) as s:
        flows = s.add_flows(2)
        fd = blob()
        send_handoff(s.sender, s.bid, s.sp, flows, fd)
        _, ib, msg = _first_import(s)
        if how == "refuses":
            answer(ib, msg.hdr.seq, 0, -errno.ENOMEM)  # as a bare mstack_reply
        elif how == "takes_none":
            answer(ib, msg.hdr.seq, 0)
        elif how == "hangs_up":
            ib.close()
        else:  # its process closes the port: the inbox ends with it
            s.members[0].request(consts.MSTACK_MSG_PORT_CLOSE, {"port_id": s.ports[0]})
            assert ib.recv_raw()[0] == b""
        _second_gets_it(s, flows, fd)
        c = counters(mstackd)  # passed on at once, not after a timeout
        key = "import_refused" if how in ("refuses", "takes_none") else "import_errors"
        assert c[key] == 1 and c["import_timeouts"] == 0


def test_nobody_to_take_them(mstackd: Mstackd) -> None:
    # A member without an inbox cannot be a target; the sender itself is not one either.
    with scene(mstackd, 8404, n=1, inboxes=False) as s:
        flows = s.add_flows(2)
        t0 = time.monotonic()
        assert handoff(s.sender, s.bid, s.sp, flows) == (0, 0)
        assert time.monotonic() - t0 < 1.0  # answered at once: nobody to wait for
        assert [s.owner(f) for f in flows] == [s.sp, s.sp]
        with open_inbox(mstackd, s.sp):  # the sender's own inbox does not make it a target
            assert handoff(s.sender, s.bid, s.sp, flows) == (0, 0)
        assert counters(mstackd)["failures"] == 2


def test_every_target_silent_is_bounded(mstackd: Mstackd) -> None:
    with scene(mstackd, 8405, n=4) as s:
        flows = s.add_flows(1)
        t0 = time.monotonic()
        assert handoff(s.sender, s.bid, s.sp, flows) == (0, 0)
        took = time.monotonic() - t0
        assert 1.3 <= took < 2.5, took  # three members asked for 500 ms each, not four
        assert s.owner(flows[0]) == s.sp
        c = counters(mstackd)
        assert c["import_timeouts"] == 3 and c["failures"] == 1
        for ib in s.inboxes:  # drain what they were sent (the fds must not stay in flight)
            assert ib is not None
            ib.sock.settimeout(0.1)
            try:
                for x in ib.recv_raw()[1]:
                    os.close(x)
            except TimeoutError:
                pass


def test_a_flow_already_being_handed_off_is_refused(mstackd: Mstackd) -> None:
    with scene(mstackd, 8408, n=1) as s:
        flows, fd, ib, msg = pending_handoff(s, 2)
        first = s.sender.seq
        with pytest.raises(ReplyError) as ei:  # answered at once, while the first waits
            handoff(s.sender, s.bid, s.sp, flows[1:])
        assert ei.value.errno == errno.EBUSY and "in a hand-off already" in ei.value.detail
        answer(ib, msg.hdr.seq, 2)
        assert handoff_reply(s.sender, first) == (s.ports[0], 2)
        os.close(fd)
        assert [s.owner(f) for f in flows] == [s.ports[0]] * 2


def test_sender_going_away_while_pending(mstackd: Mstackd) -> None:
    with scene(mstackd, 8406, n=1) as s:
        flows, fd, ib, msg = pending_handoff(s, 2)
        os.close(fd)
        s.sender.close()  # its port, and the flows with it, go
        assert mstackd.wait_until(lambda: counters(mstackd)["failures"] == 1, timeout=5)
        assert daemon_blobs(mstackd) == 0
        answer(ib, msg.hdr.seq, 2)  # the answer finds nobody waiting: dropped
        assert mstackd.wait_until(lambda: "late IMPORT reply" in mstackd.log(), timeout=5)
        assert [s.owner(f) for f in flows] == [None, None]
        assert counters(mstackd)["handoffs"] == 0
        with mstackd.client() as other:  # and everyone else is served
            assert other.hello().max_ports > 0


def test_sender_port_closing_while_pending(mstackd: Mstackd) -> None:
    with scene(mstackd, 8407, n=1) as s:
        flows, fd, ib, msg = pending_handoff(s, 1)
        # The sender closes its port before the answer: the hand-off ends with nothing moved.
        s.sender.seq += 1
        s.sender.send_raw(
            proto.encode_request(consts.MSTACK_MSG_PORT_CLOSE, s.sender.seq, {"port_id": s.sp})
        )
        first = proto.decode_reply(s.sender.recv_raw()[0])
        second = proto.decode_reply(s.sender.recv_raw()[0])
        by_type = {first[0]: first, second[0]: second}
        assert by_type[HANDOFF][1] == 0 and by_type[HANDOFF][2].n_moved == 0
        assert by_type[consts.MSTACK_MSG_PORT_CLOSE][1] == 0
        os.close(fd)
        answer(ib, msg.hdr.seq, 1)
        assert s.owner(flows[0]) is None


def test_a_daemon_stopping_while_pending_answers_the_sender(mstackd: Mstackd) -> None:
    s = Scene(mstackd, 8409, 1)
    try:
        _, fd, _, _ = pending_handoff(s, 1)
        mstackd.proc.send_signal(signal.SIGTERM)
        assert handoff_reply(s.sender) == (0, 0)  # nothing moved: the sender keeps them
        assert s.sender.recv_raw()[0] == b""
        assert mstackd.proc.wait(20) == 0
        os.close(fd)
    finally:
        s.close()


# -- refusals -------------------------------------------------------------------------------


def test_bad_handoffs_are_refused_and_change_nothing(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    with scene(mstackd, 8410, n=1) as s:
        flows = s.add_flows(2)
        theirs = s.add_flows(1, owner=s.ports[0])
        conn_sock = socket.socket()
        conn_sock.bind((h.host_ip, 0))
        conn_bid = s.sender.register(conn_sock, CONNECT, s.sp)

        def refused(err: int, *args: Any, **kw: Any) -> str:
            with pytest.raises(ReplyError) as ei:
                handoff(*args, **kw)
            assert ei.value.errno == err, ei.value
            return ei.value.detail

        snd = s.sender
        assert "not this connection's" in refused(errno.EPERM, snd, s.bid, s.ports[0], flows)
        assert "no binding" in refused(errno.ENOENT, snd, 999, s.sp, flows)
        assert "not a listener" in refused(errno.EINVAL, snd, conn_bid, s.sp, flows)
        # Flows: somebody else's, unknown, another 3-tuple's, twice the same, none, too many.
        assert "belongs to port" in refused(errno.EPERM, snd, s.bid, s.sp, [flows[0], theirs[0]])
        assert "no such flow" in refused(errno.ENOENT, snd, s.bid, s.sp, [s.wire(s.ip, 39999)])
        assert "is not binding" in refused(
            errno.EINVAL, snd, s.bid, s.sp, [s.wire(s.ip, 40000, 9999)]
        )
        assert "is not binding" in refused(
            errno.EINVAL, snd, s.bid, s.sp, [s.wire("10.254.0.1", 40000)]
        )
        assert "twice" in refused(errno.EINVAL, snd, s.bid, s.sp, [flows[0], flows[0]])
        assert refused(errno.EINVAL, snd, s.bid, s.sp, flows, n=0)
        assert refused(errno.EINVAL, snd, s.bid, s.sp, flows * 16, n=33)
        # The blob: unsealed, half sealed, not a memfd, a pipe, too big, missing.
        for fd, err in [
            (blob(seals=0), errno.EINVAL),
            (blob(seals=fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK), errno.EINVAL),
            (os.open("/etc/hostname", os.O_RDONLY), errno.EBADF),
            (os.open("/dev/shm", os.O_RDONLY | os.O_DIRECTORY), errno.EBADF),
        ]:
            try:
                assert refused(err, snd, s.bid, s.sp, flows, fd=fd)
            finally:
                os.close(fd)
        big = os.memfd_create(BLOB_NAME, os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
        os.ftruncate(big, consts.MSTACK_HANDOFF_MAX_BLOB + 1)
        fcntl.fcntl(big, fcntl.F_ADD_SEALS, SEALS)
        assert "at most" in refused(errno.EFBIG, snd, s.bid, s.sp, flows, fd=big)
        os.close(big)
        snd.seq += 1
        snd.send_raw(proto.encode_request(HANDOFF, snd.seq, {"binding_id": s.bid,
                     "port_id": s.sp, "n_flows": 1, "flows": flows}))  # fmt: skip
        status = proto.decode_reply(snd.recv_raw()[0])[1]
        assert status == -errno.EBADF  # HANDOFF carries one fd
        # Nothing moved, nothing held; every refusal counted; the inbox was never asked.
        assert [s.owner(f) for f in flows + theirs] == [s.sp, s.sp, s.ports[0]]
        c = counters(mstackd)
        assert c["rejected"] == 15 and c["handoffs"] == 0 and c["pending"] == 0
        ib = s.inboxes[0]
        assert ib is not None
        ib.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            ib.recv_raw()
        # The sizes are right and the request good: it goes through.
        ib.sock.settimeout(10)
        fd = blob()
        send_handoff(snd, s.bid, s.sp, flows, fd)
        msg, mfd = recv_import(ib)
        os.close(mfd)
        answer(ib, msg.hdr.seq, 2)
        assert handoff_reply(snd) == (s.ports[0], 2)
        os.close(fd)
        conn_sock.close()


NOT_CLAIMANT = r"""
import os, socket, sys, time
sys.path.insert(0, sys.argv[3])
from mstack_testkit import AppClient
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8411))
s.listen()
c = AppClient(sys.argv[2])
c.hello()
print(c.register(s, 1), flush=True)
time.sleep(120)
"""


def test_a_binding_the_sender_does_not_hold_is_refused(mstackd: Mstackd) -> None:
    h = mstackd.host
    assert h is not None
    p = subprocess.Popen(
        [sys.executable, "-c", NOT_CLAIMANT, h.host_ip, str(mstackd.run_dir / "app.sock"),
         str(TESTS_DIR)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    try:
        assert p.stdout is not None
        foreign = int(p.stdout.readline())
        with scene(mstackd, 8412, n=1) as s:
            flows = s.add_flows(1)
            with pytest.raises(ReplyError) as ei:
                handoff(s.sender, foreign, s.sp, flows)
            assert ei.value.errno == errno.EPERM and "does not hold" in ei.value.detail
    finally:
        p.kill()
        p.wait(10)
        assert p.stdout is not None
        p.stdout.close()


INBOX_OTHER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from mstack_testkit import AppClient, ReplyError
c = AppClient(sys.argv[1])
c.hello()
try:
    c.request(13, {"port_id": int(sys.argv[3])})
    print("opened")
except ReplyError as e:
    print("refused", e.errno)
"""


def test_inbox_rules(mstackd: Mstackd) -> None:
    with scene(mstackd, 8413, n=1, inboxes=False) as s:
        p = s.ports[0]
        # Another process cannot open this port's inbox.
        out = subprocess.run(
            [sys.executable, "-c", INBOX_OTHER, str(mstackd.run_dir / "app.sock"),
             str(TESTS_DIR), str(p)],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
        assert out.stdout.strip() == f"refused {errno.EPERM}", out.stderr
        with s.d.client() as c:  # INBOX before HELLO
            with pytest.raises(ReplyError) as ei:
                c.request(INBOX, {"port_id": p})
            assert ei.value.errno == errno.EPROTO
        with s.d.client() as c:
            c.hello()
            with pytest.raises(ReplyError) as ei:
                c.request(INBOX, {"port_id": 999})
            assert ei.value.errno == errno.ENOENT
        with pytest.raises(ReplyError) as ei:  # the connection that holds ports
            s.members[0].request(INBOX, {"port_id": p})
        assert ei.value.errno == errno.EINVAL
        with open_inbox(mstackd, p) as ib:
            with s.d.client() as c2:  # one inbox per port
                c2.hello()
                with pytest.raises(ReplyError) as ei:
                    c2.request(INBOX, {"port_id": p})
                assert ei.value.errno == errno.EBUSY
            assert counters(mstackd)["inboxes"] == 1
            # Anything but an IMPORT reply closes an inbox.
            ib.send_raw(proto.encode_request(consts.MSTACK_MSG_HELLO, 5, {"pid": os.getpid()}))
            assert ib.recv_raw()[0] == b""
        assert mstackd.wait_until(lambda: counters(mstackd)["inboxes"] == 0, timeout=5)
        with open_inbox(mstackd, p):  # and the port can have a new one
            assert counters(mstackd)["inboxes"] == 1


def _malformed_replies(seq: int, n: int) -> list[tuple[str, bytes, bool]]:
    """(name, datagram, sent with an fd)"""
    good = proto.encode_reply(IMPORT, seq, 0, "", {"n_imported": 1})
    bare_ok = proto.encode_reply(consts.MSTACK_MSG_HELLO, seq)[:144]
    bare_ok = bare_ok[:6] + (IMPORT | consts.MSTACK_MSG_REPLY).to_bytes(2, "little") + bare_ok[8:]

    def patch(data: bytes, off: int, raw: bytes) -> bytes:
        return data[:off] + raw + data[off + len(raw) :]

    return [
        ("too many", proto.encode_reply(IMPORT, seq, 0, "", {"n_imported": n + 1}), False),
        ("short", good[:-4], False),
        ("long", good + b"\0" * 8, False),
        ("len field", patch(good, 8, (len(good) - 8).to_bytes(4, "little")), False),
        ("bad magic", patch(good, 0, b"XXXX"), False),
        ("version", patch(good, 4, b"\x07\x00"), False),
        ("wrong type", patch(good, 6, (HANDOFF | 0x8000).to_bytes(2, "little")), False),
        ("positive status", patch(good, 16, (5).to_bytes(4, "little")), False),
        ("error with flows", patch(good, 16, (-5 & 0xFFFFFFFF).to_bytes(4, "little")), False),
        ("bare success", bare_ok, False),
        ("never sent seq", patch(good, 12, (seq + 50).to_bytes(4, "little")), False),
        ("carries an fd", good, True),
        ("garbage", b"\xde\xad" * 3, False),
    ]


def test_malformed_import_replies_close_the_inbox(mstackd: Mstackd) -> None:
    with scene(mstackd, 8414, n=1, inboxes=False) as s:
        flows = s.add_flows(2)
        names = [x[0] for x in _malformed_replies(1, 2)]
        for i, name in enumerate(names):
            with open_inbox(mstackd, s.ports[0]) as ib:
                fd = blob()
                send_handoff(s.sender, s.bid, s.sp, flows, fd)
                msg, mfd = recv_import(ib)
                os.close(mfd)
                _, data, with_fd = _malformed_replies(int(msg.hdr.seq), 2)[i]
                ib.send_raw(data, [fd] if with_fd else None)
                assert ib.recv_raw()[0] == b"", name  # the daemon closed the inbox
                assert handoff_reply(s.sender) == (0, 0), name
                os.close(fd)
                assert [s.owner(f) for f in flows] == [s.sp, s.sp], name
                assert daemon_blobs(mstackd) == 0, name
        c = counters(mstackd)
        assert c["import_errors"] == len(names) and c["failures"] == len(names)
        assert "malformed IMPORT reply" in mstackd.log()


# -- the C client (libmsctl) on both sides ----------------------------------------------------


def read_line(p: subprocess.Popen[bytes], timeout: float = 15.0) -> str:
    """One line of p's stdout, bounded in time ("" at EOF or timeout)."""
    assert p.stdout is not None
    fd = p.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and sel.select(left):
            b = os.read(fd, 1)
            if not b or b == b"\n":
                break
            line += b
    return line.decode(errors="replace")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_handoff_between_two_c_clients(mstackd: Mstackd, variant: str) -> None:
    exe = VARIANTS[variant] / "tests" / "ctl" / "handoff_peer"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: build utcp_c/ctl first")
    h = mstackd.host
    assert h is not None
    with listener(h.host_ip, 8420) as ls, mstackd.client() as c, ExitStack() as stack:
        c.hello()
        bid = c.register(ls, LISTEN)  # the C processes claim it with the socket they inherit
        fd = ls.fileno()

        def start(*args: str) -> subprocess.Popen[bytes]:
            p = subprocess.Popen(
                [str(exe), args[0], str(mstackd.run_dir), str(bid), str(fd), *args[1:]],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=[fd],
            )  # fmt: skip
            stack.callback(stop_process, p)
            return p

        member = start("member", "2")
        sender = start("sender")
        mport = int(read_line(member).split()[1])
        sport = int(read_line(sender).split()[1])
        m = stack.enter_context(closing_map(mstackd))
        keys = [flow_key(h.remote_ip, 41000 + i, h.host_ip, 8420) for i in range(3)]
        for k in keys:
            m.update(k, {"port_id": sport, "flags": 0, "last_ns": 1})
        assert sender.stdin is not None and member.stdin is not None
        sender.stdin.write(f"3 {h.host_ip} 8420 {h.remote_ip} 41000\n".encode())
        sender.stdin.flush()
        got = read_line(member)
        assert got == (
            f"import seq=1 binding={bid} port={mport} n=3 rport0=41000 "
            "blob=connections serialized by a C sender"
        ), got
        assert read_line(member) == "adopted 2"
        assert read_line(sender) == f"moved 2 to {mport}"
        owners = [getattr(m.lookup(k), "port_id", None) for k in keys]
        assert owners == [mport, mport, sport]
        for p in (sender, member):
            assert p.stdin is not None
            p.stdin.close()
            assert p.wait(10) == 0, p.stderr.read() if p.stderr else ""
        assert counters(mstackd)["flows_moved"] == 2
    assert mstackd.wait_until(lambda: daemon_blobs(mstackd) == 0 and mstackd.admin("ports") == [])
