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
    consts.MSTACK_MSG_HANDOFF: ("struct mstack_handoff", 1, "struct mstack_handoff_reply"),
    consts.MSTACK_MSG_INBOX: ("struct mstack_inbox", 0, "struct mstack_reply"),
}

# Messages the daemon pushes (on an inbox connection) -> (struct, fds, the reply it accepts).
PUSHES: dict[int, tuple[str, int, str]] = {
    consts.MSTACK_MSG_IMPORT: ("struct mstack_import", 1, "struct mstack_import_reply"),
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
    consts.MSTACK_MSG_HANDOFF: "HANDOFF",
    consts.MSTACK_MSG_INBOX: "INBOX",
    consts.MSTACK_MSG_IMPORT: "IMPORT",
}

# A hand-off's flow as the wire carries it: (laddr, raddr, lport, rport), network byte order.
Flow = tuple[int, int, int, int]


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


def _reply_struct(msg_type: int, status: int) -> str:
    known = MESSAGES.get(msg_type) or PUSHES.get(msg_type)
    return known[2] if status == 0 and known else "struct mstack_reply"


def encode_reply(
    msg_type: int,
    seq: int,
    status: int = 0,
    detail: str = "",
    fields: dict[str, Any] | None = None,
) -> bytes:
    """A reply to `msg_type`: its full reply struct on success, the bare mstack_reply on error
    (status is a negative errno). Also an app's reply to a pushed message (tests)."""
    struct = _reply_struct(msg_type, status)
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
    struct = _reply_struct(mtype, int(r.status))
    msg = ffi.new(f"{struct} *")
    ffi.memmove(msg, data, min(len(data), ffi.sizeof(struct)))
    return mtype, int(r.status), msg


# -- pushed messages (daemon -> app on an inbox) ----------------------------------------------


def encode_import(seq: int, binding_id: int, port_id: int, flows: list[Flow]) -> bytes:
    """IMPORT, pushed on port_id's inbox with the daemon's own seq (the memfd goes beside)."""
    if not 0 < len(flows) <= consts.MSTACK_HANDOFF_MAX_FLOWS:
        raise ValueError(f"an IMPORT carries 1..{consts.MSTACK_HANDOFF_MAX_FLOWS} flows")
    struct = PUSHES[consts.MSTACK_MSG_IMPORT][0]
    msg = ffi.new(f"{struct} *")
    msg.hdr.magic = consts.MSTACK_PROTO_MAGIC
    msg.hdr.version = consts.MSTACK_PROTO_VERSION
    msg.hdr.type = consts.MSTACK_MSG_IMPORT
    msg.hdr.len = ffi.sizeof(struct)
    msg.hdr.seq = seq
    msg.binding_id = binding_id
    msg.port_id = port_id
    msg.n_flows = len(flows)
    for i, (laddr, raddr, lport, rport) in enumerate(flows):
        f = msg.flows[i]
        f.laddr, f.raddr, f.lport, f.rport = laddr, raddr, lport, rport
    return bytes(ffi.buffer(msg))


def decode_import(data: bytes) -> Any:
    """An IMPORT as an app receives it (tests): a cdata copy, after the size and type checks."""
    struct = PUSHES[consts.MSTACK_MSG_IMPORT][0]
    if len(data) != ffi.sizeof(struct):
        raise ProtoError(errno.EBADMSG, f"IMPORT of {len(data)} bytes")
    msg = ffi.new(f"{struct} *")
    ffi.memmove(msg, data, len(data))
    if msg.hdr.type != consts.MSTACK_MSG_IMPORT or msg.hdr.magic != consts.MSTACK_PROTO_MAGIC:
        raise ProtoError(errno.EBADMSG, "not an IMPORT")
    return msg


@dataclass
class PushReply:
    seq: int
    status: int
    n: int  # IMPORT: flows adopted


def decode_push_reply(
    msg_type: int, data: bytes, fds: list[int], truncated: bool = False
) -> PushReply:
    """An app's answer to a message of msg_type the daemon pushed, checked as strictly as the
    C client checks the daemon's replies: magic, version, type, len, exact size (a bare
    mstack_reply only with an error status), status 0 or a negative errno, no fd. Raises
    ProtoError (seq None when even the header is unusable). The caller owns `fds`."""
    if truncated or len(data) > consts.MSTACK_MSG_MAX:
        raise ProtoError(errno.EMSGSIZE, f"message over {consts.MSTACK_MSG_MAX} bytes")
    if len(data) < HDR_SIZE:
        raise ProtoError(errno.EBADMSG, f"message of {len(data)} bytes is shorter than a header")
    hdr = ffi.from_buffer(f"{HDR} *", data)
    if hdr.magic != consts.MSTACK_PROTO_MAGIC:
        raise ProtoError(errno.EBADMSG, "bad magic: not the MultiStack protocol")
    if hdr.version != consts.MSTACK_PROTO_VERSION:
        raise ProtoError(errno.EPROTONOSUPPORT, f"protocol version {hdr.version}")
    seq = int(hdr.seq)
    name = NAMES[msg_type]
    if hdr.type != (msg_type | consts.MSTACK_MSG_REPLY):
        raise ProtoError(errno.EBADMSG, f"type {hdr.type} where a {name} reply belongs", seq=seq)
    if hdr.len != len(data):
        raise ProtoError(
            errno.EBADMSG, f"header says {hdr.len} bytes, datagram has {len(data)}", seq=seq
        )
    if fds:
        raise ProtoError(errno.EBADF, f"a {name} reply carries no fd, this one {len(fds)}", seq=seq)
    bare = ffi.sizeof("struct mstack_reply")
    if len(data) < bare:
        raise ProtoError(errno.EBADMSG, f"{name} reply of {len(data)} bytes", seq=seq)
    status = int(ffi.from_buffer("struct mstack_reply *", data).status)
    if status > 0 or status < -4095:
        raise ProtoError(errno.EBADMSG, f"status {status} is no negative errno", seq=seq)
    struct = PUSHES[msg_type][2]
    if len(data) == bare and status < 0:
        return PushReply(seq, status, 0)
    if len(data) != ffi.sizeof(struct):
        raise ProtoError(
            errno.EBADMSG, f"{name} reply is {ffi.sizeof(struct)} bytes, not {len(data)}", seq=seq
        )
    msg = ffi.new(f"{struct} *")
    ffi.memmove(msg, data, len(data))
    n = int(msg.n_imported)
    if status < 0 and n:
        raise ProtoError(errno.EBADMSG, f"an error reply that imported {n} flows", seq=seq)
    return PushReply(seq, status, n)
