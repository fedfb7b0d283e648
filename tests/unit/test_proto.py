"""The control protocol codec on its own: every request type round-trips, and no byte string —
random, truncated, oversized, or mutated from a valid message — makes the decoder do anything
but return a valid Request or raise ProtoError (fuzzed with hypothesis)."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mstackd import proto
from mstackd.abi import consts, ffi

pytestmark = pytest.mark.unit

TYPES = sorted(proto.MESSAGES)


@pytest.mark.parametrize("mtype", TYPES)
def test_every_request_round_trips(mtype: int) -> None:
    data = proto.encode_request(mtype, 77)
    nfds = proto.MESSAGES[mtype][1]
    req = proto.decode(data, list(range(100, 100 + nfds)))
    assert (req.type, req.seq, req.fds) == (mtype, 77, list(range(100, 100 + nfds)))


def test_reply_carries_status_and_detail() -> None:
    data = proto.encode_reply(consts.MSTACK_MSG_REGISTER, 5, -errno.EADDRINUSE, "x" * 500)
    assert len(data) == ffi.sizeof("struct mstack_reply")
    mtype, status, msg = proto.decode_reply(data)
    assert (mtype, status) == (consts.MSTACK_MSG_REGISTER, -errno.EADDRINUSE)
    assert ffi.string(msg.detail) == b"x" * (consts.MSTACK_DETAIL_LEN - 1)


def test_header_errors_close_the_connection() -> None:
    for data in (b"", b"\x01" * 15, b"\0" * 16):
        with pytest.raises(proto.ProtoError) as ei:
            proto.decode(data, [])
        assert ei.value.seq is None


@pytest.mark.parametrize(
    "mutate, err",
    [
        (lambda d: d[:-1], errno.EBADMSG),
        (lambda d: d + b"\0", errno.EBADMSG),
        (lambda d: d + b"\0" * consts.MSTACK_MSG_MAX, errno.EMSGSIZE),
        (lambda d: d[:4] + b"\x02\x00" + d[6:], errno.EPROTONOSUPPORT),
        (lambda d: d[:6] + b"\xff\x7f" + d[8:], errno.EOPNOTSUPP),
        (lambda d: d[:8] + b"\xff\x00\x00\x00" + d[12:], errno.EBADMSG),
    ],
)
def test_body_errors_are_answered(mutate, err) -> None:  # type: ignore[no-untyped-def]
    data = mutate(proto.encode_request(consts.MSTACK_MSG_HELLO, 3, {"pid": 1}))
    with pytest.raises(proto.ProtoError) as ei:
        proto.decode(data, [])
    assert ei.value.errno == err and ei.value.seq == 3


def test_fd_count_is_exact() -> None:
    reg = proto.encode_request(consts.MSTACK_MSG_REGISTER, 1)
    for fds in ([], [3, 4]):
        with pytest.raises(proto.ProtoError) as ei:
            proto.decode(reg, fds)
        assert ei.value.errno == errno.EBADF
    with pytest.raises(proto.ProtoError):
        proto.decode(proto.encode_request(consts.MSTACK_MSG_HELLO, 1), [5])


def _check(data: bytes, nfds: int) -> None:
    try:
        req = proto.decode(data, list(range(nfds)))
    except proto.ProtoError as e:
        assert e.errno > 0 and e.detail
        return
    assert req.type in proto.MESSAGES
    assert len(data) == ffi.sizeof(proto.MESSAGES[req.type][0])
    assert len(req.fds) == proto.MESSAGES[req.type][1]


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=2 * consts.MSTACK_MSG_MAX), st.integers(0, 3))
def test_fuzz_random_bytes(data: bytes, nfds: int) -> None:
    _check(data, nfds)


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(TYPES),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=8),
    st.integers(-8, 8),
    st.integers(0, 2),
)
def test_fuzz_mutated_valid_messages(mtype: int, flips, cut: int, nfds: int) -> None:  # type: ignore[no-untyped-def]
    data = bytearray(proto.encode_request(mtype, 9))
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    data = data[:cut] if cut < 0 else data + bytes(cut)
    _check(bytes(data), nfds)


# -- hand-off: IMPORT (pushed by the daemon) and the app's answer to it ------------------------

FLOWS = [(0x0100000A, 0x0200000A + (i << 24), 0x5000, 0x409C + i) for i in range(3)]
IMPORT = consts.MSTACK_MSG_IMPORT
IMPORT_REPLY = consts.MSTACK_MSG_IMPORT | consts.MSTACK_MSG_REPLY


def test_handoff_messages_fit_and_carry_their_fds() -> None:
    assert ffi.sizeof("struct mstack_handoff") <= consts.MSTACK_MSG_MAX
    assert ffi.sizeof("struct mstack_import") <= consts.MSTACK_MSG_MAX
    assert ffi.sizeof("struct mstack_handoff_flow") == 12
    assert len(ffi.new("struct mstack_handoff *").flows) == consts.MSTACK_HANDOFF_MAX_FLOWS
    assert proto.MESSAGES[consts.MSTACK_MSG_HANDOFF][1] == 1
    assert proto.MESSAGES[consts.MSTACK_MSG_INBOX][1] == 0
    assert IMPORT not in proto.MESSAGES  # never accepted as a request on app.sock
    with pytest.raises(proto.ProtoError) as ei:
        proto.decode(proto.encode_import(1, 2, 3, FLOWS), [5])
    assert ei.value.errno == errno.EOPNOTSUPP


def test_import_round_trips() -> None:
    data = proto.encode_import(17, 4, 9, FLOWS)
    msg = proto.decode_import(data)
    assert (msg.hdr.seq, msg.hdr.type, msg.binding_id, msg.port_id, msg.n_flows) == (
        17, IMPORT, 4, 9, 3,
    )  # fmt: skip
    got = [(f.laddr, f.raddr, f.lport, f.rport) for f in list(msg.flows)[:3]]
    assert got == FLOWS and msg.flows[3].laddr == 0
    for bad in ([], FLOWS * 11):
        with pytest.raises(ValueError):
            proto.encode_import(1, 1, 1, bad)


def test_handoff_request_carries_its_flows() -> None:
    names = ("laddr", "raddr", "lport", "rport")
    wire = [dict(zip(names, f, strict=True)) for f in FLOWS]
    fields = {"binding_id": 3, "port_id": 5, "n_flows": 3, "flows": wire}
    req = proto.decode(proto.encode_request(consts.MSTACK_MSG_HANDOFF, 8, fields), [7])
    assert (req.body.binding_id, req.body.port_id, req.body.n_flows, req.fds) == (3, 5, 3, [7])
    assert (req.body.flows[2].raddr, req.body.flows[2].rport) == FLOWS[2][1::2]
    _, status, rep = proto.decode_reply(
        proto.encode_reply(consts.MSTACK_MSG_HANDOFF, 8, 0, "", {"target_port": 4, "n_moved": 2})
    )
    assert (status, rep.target_port, rep.n_moved) == (0, 4, 2)


def _import_reply(seq: int = 5, status: int = 0, n: int = 2) -> bytes:
    return proto.encode_reply(IMPORT, seq, status, "", {"n_imported": n} if not status else None)


def test_import_replies_good() -> None:
    r = proto.decode_push_reply(IMPORT, _import_reply(), [])
    assert (r.seq, r.status, r.n) == (5, 0, 2)
    bare = _import_reply(status=-errno.ENOMEM)  # an error may come as the bare mstack_reply
    assert len(bare) == ffi.sizeof("struct mstack_reply")
    assert proto.decode_push_reply(IMPORT, bare, []) == proto.PushReply(5, -errno.ENOMEM, 0)
    full_err = bytearray(_import_reply(n=0))
    full_err[16:20] = (-errno.EIO & 0xFFFFFFFF).to_bytes(4, "little")
    assert proto.decode_push_reply(IMPORT, bytes(full_err), []).status == -errno.EIO


def _patch(data: bytes, off: int, raw: bytes) -> bytes:
    return data[:off] + raw + data[off + len(raw) :]


GOOD = _import_reply()


@pytest.mark.parametrize(
    "data, nfds, truncated, header_ok",
    [
        (b"", 0, False, False),
        (GOOD[:10], 0, False, False),
        (_patch(GOOD, 0, b"XXXX"), 0, False, False),
        (_patch(GOOD, 4, b"\x02\x00"), 0, False, False),
        (GOOD, 0, True, False),
        (GOOD + bytes(consts.MSTACK_MSG_MAX), 0, False, False),
        (_patch(GOOD, 6, IMPORT.to_bytes(2, "little")), 0, False, True),  # not a reply
        (_patch(GOOD, 8, (len(GOOD) + 1).to_bytes(4, "little")), 0, False, True),
        (GOOD, 1, False, True),  # an fd
        (_patch(GOOD[:-4], 8, (len(GOOD) - 4).to_bytes(4, "little")), 0, False, True),
        (_patch(GOOD[:100], 8, (100).to_bytes(4, "little")), 0, False, True),  # < mstack_reply
        (_patch(GOOD, 16, (3).to_bytes(4, "little")), 0, False, True),  # positive status
        (_patch(GOOD, 16, (-5000 & 0xFFFFFFFF).to_bytes(4, "little")), 0, False, True),
        (_patch(GOOD, 16, (-5 & 0xFFFFFFFF).to_bytes(4, "little")), 0, False, True),  # + flows
        (_import_reply(n=0)[: ffi.sizeof("struct mstack_reply")], 0, False, True),  # bare, 0
    ],
)
def test_import_replies_malformed(data: bytes, nfds: int, truncated: bool, header_ok: bool) -> None:
    if len(data) == ffi.sizeof("struct mstack_reply") and data[16:20] == bytes(4):
        data = _patch(data, 8, len(data).to_bytes(4, "little"))  # a "bare success" reply
    with pytest.raises(proto.ProtoError) as ei:
        proto.decode_push_reply(IMPORT, data, list(range(nfds)), truncated)
    assert ei.value.errno > 0 and ei.value.detail
    assert (ei.value.seq is not None) == header_ok


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 160), st.integers(0, 255)), max_size=8),
    st.integers(-8, 8),
    st.integers(0, 2),
)
def test_fuzz_import_replies(flips, cut: int, nfds: int) -> None:  # type: ignore[no-untyped-def]
    data = bytearray(GOOD)
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    data = data[:cut] if cut < 0 else data + bytes(cut)
    try:
        r = proto.decode_push_reply(IMPORT, bytes(data), list(range(nfds)))
    except proto.ProtoError as e:
        assert e.errno > 0 and e.detail
        return
    assert nfds == 0 and -4095 <= r.status <= 0 and (r.status == 0 or r.n == 0)
    assert len(data) in (
        ffi.sizeof("struct mstack_reply"),
        ffi.sizeof("struct mstack_import_reply"),
    )
