"""The control protocol's codec (utcp_c/include/mstack_proto.h, read through mstackd.abi): a
received datagram plus its fds becomes a validated Request, or a ProtoError that says what was
wrong; replies are encoded from the same structs the C client decodes. Validation is strict —
exact sizes, exact fd counts — because anything local can connect to app.sock."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from mstackd.abi import consts, ffi

HDR = "struct mstack_msg_hdr"
HDR_SIZE = ffi.sizeof(HDR)

# type -> (request struct, fds it carries, reply struct)
MESSAGES: dict[int, tuple[str, int, str]] = {
    consts.MSTACK_MSG_HELLO: ("struct mstack_hello", 0, "struct mstack_hello_reply"),
    consts.MSTACK_MSG_PORT_OPEN: ("struct mstack_port_open", 0, "struct mstack_port_open_reply"),
    consts.MSTACK_MSG_PORT_CLOSE: ("struct mstack_port_close", 0, "struct mstack_reply"),
    consts.MSTACK_MSG_REGISTER: ("struct mstack_register", 1, "struct mstack_register_reply"),
    consts.MSTACK_MSG_CLAIM: ("struct mstack_claim", 1, "struct mstack_reply"),
    consts.MSTACK_MSG_RELEASE: ("struct mstack_claim", 0, "struct mstack_reply"),
    consts.MSTACK_MSG_GROUP_JOIN: ("struct mstack_group_msg", 0, "struct mstack_reply"),
    consts.MSTACK_MSG_GROUP_LEAVE: ("struct mstack_group_msg", 0, "struct mstack_reply"),
    consts.MSTACK_MSG_STATS_REGION: ("struct mstack_stats_region", 1, "struct mstack_reply"),
    consts.MSTACK_MSG_LEASE: ("struct mstack_lease", 0, "struct mstack_lease_reply"),
    consts.MSTACK_MSG_UNLEASE: ("struct mstack_unlease", 0, "struct mstack_reply"),
}

NAMES = {
    consts.MSTACK_MSG_HELLO: "HELLO",
    consts.MSTACK_MSG_PORT_OPEN: "PORT_OPEN",
    consts.MSTACK_MSG_PORT_CLOSE: "PORT_CLOSE",
    consts.MSTACK_MSG_REGISTER: "REGISTER",
    consts.MSTACK_MSG_CLAIM: "CLAIM",
    consts.MSTACK_MSG_RELEASE: "RELEASE",
    consts.MSTACK_MSG_GROUP_JOIN: "GROUP_JOIN",
    consts.MSTACK_MSG_GROUP_LEAVE: "GROUP_LEAVE",
    consts.MSTACK_MSG_STATS_REGION: "STATS_REGION",
    consts.MSTACK_MSG_LEASE: "LEASE",
    consts.MSTACK_MSG_UNLEASE: "UNLEASE",
}


class ProtoError(Exception):
    """A request that cannot be served. With seq None the header itself was unusable: the
    connection is closed instead of answered."""

    def __init__(self, err: int, detail: str, msg_type: int = 0, seq: int | None = None) -> None:
        super().__init__(detail)
        self.errno = err
        self.detail = detail
        self.msg_type = msg_type
        self.seq = seq


@dataclass
class Request:
    type: int
    seq: int
    body: Any  # an owning cdata pointer to the request struct
    fds: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return NAMES.get(self.type, str(self.type))


def decode(data: bytes, fds: list[int], truncated: bool = False) -> Request:
    """Validate one datagram. The caller owns `fds` and closes them if this raises."""
    if len(data) < HDR_SIZE:
        raise ProtoError(errno.EBADMSG, f"message of {len(data)} bytes is shorter than a header")
    hdr = ffi.from_buffer(f"{HDR} *", data)
    if hdr.magic != consts.MSTACK_PROTO_MAGIC:
        raise ProtoError(errno.EBADMSG, "bad magic: not the MultiStack protocol")
    seq, mtype = int(hdr.seq), int(hdr.type)
    if hdr.version != consts.MSTACK_PROTO_VERSION:
        raise ProtoError(
            errno.EPROTONOSUPPORT,
            f"protocol version {hdr.version}; this daemon speaks {consts.MSTACK_PROTO_VERSION}",
            mtype,
            seq,
        )
    if truncated or len(data) > consts.MSTACK_MSG_MAX:
        raise ProtoError(errno.EMSGSIZE, f"message over {consts.MSTACK_MSG_MAX} bytes", mtype, seq)
    if hdr.len != len(data):
        raise ProtoError(
            errno.EBADMSG, f"header says {hdr.len} bytes, datagram has {len(data)}", mtype, seq
        )
    if mtype not in MESSAGES:
        raise ProtoError(errno.EOPNOTSUPP, f"unknown message type {mtype}", mtype, seq)
    struct, nfds, _ = MESSAGES[mtype]
    name = NAMES[mtype]
    if len(data) != ffi.sizeof(struct):
        raise ProtoError(
            errno.EBADMSG, f"{name} is {ffi.sizeof(struct)} bytes, not {len(data)}", mtype, seq
        )
    if len(fds) != nfds:
        raise ProtoError(
            errno.EBADF, f"{name} carries {nfds} fd(s), this one carried {len(fds)}", mtype, seq
        )
    body = ffi.new(f"{struct} *")
    ffi.memmove(body, data, len(data))
    return Request(mtype, seq, body, list(fds))


def encode_reply(
    msg_type: int,
    seq: int,
    status: int = 0,
    detail: str = "",
    fields: dict[str, Any] | None = None,
) -> bytes:
    """A reply to `msg_type`: its full reply struct on success, the bare mstack_reply on error
    (status is a negative errno)."""
    struct = (
        MESSAGES[msg_type][2] if status == 0 and msg_type in MESSAGES else "struct mstack_reply"
    )
    msg = ffi.new(f"{struct} *")
    r = msg if struct == "struct mstack_reply" else msg.r
    r.hdr.magic = consts.MSTACK_PROTO_MAGIC
    r.hdr.version = consts.MSTACK_PROTO_VERSION
    r.hdr.type = (msg_type | consts.MSTACK_MSG_REPLY) & 0xFFFF
    r.hdr.len = ffi.sizeof(struct)
    r.hdr.seq = seq
    r.status = status
    raw = detail.encode(errors="replace")[: consts.MSTACK_DETAIL_LEN - 1]
    ffi.memmove(r.detail, raw, len(raw))
    for k, v in (fields or {}).items():
        setattr(msg, k, v)
    return bytes(ffi.buffer(msg))


def encode_request(msg_type: int, seq: int, fields: dict[str, Any] | None = None) -> bytes:
    """A request (for tests and tools; applications use the C client library)."""
    struct = MESSAGES[msg_type][0]
    msg = ffi.new(f"{struct} *")
    msg.hdr.magic = consts.MSTACK_PROTO_MAGIC
    msg.hdr.version = consts.MSTACK_PROTO_VERSION
    msg.hdr.type = msg_type
    msg.hdr.len = ffi.sizeof(struct)
    msg.hdr.seq = seq
    for k, v in (fields or {}).items():
        setattr(msg, k, v)
    return bytes(ffi.buffer(msg))


def decode_reply(data: bytes) -> tuple[int, int, Any]:
    """(type, status, cdata of the reply struct) — for tests and tools."""
    r = ffi.from_buffer("struct mstack_reply *", data)
    mtype = int(r.hdr.type) & ~consts.MSTACK_MSG_REPLY
    struct = MESSAGES[mtype][2] if r.status == 0 and mtype in MESSAGES else "struct mstack_reply"
    msg = ffi.new(f"{struct} *")
    ffi.memmove(msg, data, min(len(data), ffi.sizeof(struct)))
    return mtype, int(r.status), msg
