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
