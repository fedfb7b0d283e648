/* mstack_proto.h — the control protocol between applications (the shim, mstack-httpd) and
 * mstackd, over the path-based unix sockets $MSTACK_RUN_DIR/app.sock and admin.sock
 * (SOCK_SEQPACKET: one message per datagram; fds travel with SCM_RIGHTS).
 *
 * mstackd reads this very file with cffi, so it holds only integer #defines and structs of
 * fixed-width integers (no expressions, no macros with arguments). Native byte order: both
 * ends are on one host. Every message starts with mstack_msg_hdr; a request of type T is
 * answered by one message of type T | MSTACK_MSG_REPLY beginning with mstack_reply, echoing
 * the request's seq. A message that is truncated, oversized, of an unknown version or type,
 * or that lacks or carries the wrong kind of fd gets an error reply (or, if even the header is
 * unusable, the connection is closed); the daemon keeps serving everyone else. */
#ifndef MSTACK_PROTO_H
#define MSTACK_PROTO_H

#include <stdint.h>

#define MSTACK_PROTO_MAGIC      1263817549
#define MSTACK_PROTO_VERSION    1
#define MSTACK_MSG_MAX          512
#define MSTACK_MSG_MAX_FDS      2
#define MSTACK_DETAIL_LEN       120
#define MSTACK_MAX_ADDRS        8

/* Request types (app.sock). */
#define MSTACK_MSG_HELLO        1
#define MSTACK_MSG_PORT_OPEN    2
#define MSTACK_MSG_PORT_CLOSE   3
#define MSTACK_MSG_REGISTER     4
#define MSTACK_MSG_CLAIM        5
#define MSTACK_MSG_RELEASE      6
#define MSTACK_MSG_GROUP_JOIN   7
#define MSTACK_MSG_GROUP_LEAVE  8
#define MSTACK_MSG_STATS_REGION 9
#define MSTACK_MSG_LEASE        10
#define MSTACK_MSG_UNLEASE      11
#define MSTACK_MSG_HANDOFF      12
#define MSTACK_MSG_INBOX        13
#define MSTACK_MSG_IMPORT       14      /* daemon -> app, on an inbox connection */
#define MSTACK_MSG_REPLY        32768

/* Connection hand-off (HANDOFF, INBOX, IMPORT below). */
#define MSTACK_HANDOFF_MAX_FLOWS    32
#define MSTACK_HANDOFF_MAX_BLOB     16777216    /* bytes of the sealed memfd: 16 MiB */
#define MSTACK_IMPORT_TIMEOUT_MS    500         /* the daemon waits this long per target */
#define MSTACK_HANDOFF_TIMEOUT_MS   1500        /* and this long for the whole hand-off */

/* Binding kinds of a REGISTER (the same values as the switch's, mstack_abi.h). */
#define MSTACK_REG_LISTEN       1
#define MSTACK_REG_CONNECT      2
#define MSTACK_REG_UDP          3

struct mstack_msg_hdr {
    uint32_t magic;       /* MSTACK_PROTO_MAGIC ("MSTK") */
    uint16_t version;     /* MSTACK_PROTO_VERSION */
    uint16_t type;        /* MSTACK_MSG_* (| MSTACK_MSG_REPLY in replies) */
    uint32_t len;         /* bytes of the whole message, header included */
    uint32_t seq;         /* chosen by the requester, echoed in the reply */
};

struct mstack_reply {
    struct mstack_msg_hdr hdr;
    int32_t status;                  /* 0, or a negative errno */
    uint32_t pad;
    char detail[120];                /* NUL-terminated words for a person, on error */
};

/* HELLO: first message on a connection. pid must be the sender's (checked against
 * SO_PEERCRED); one connection per process — a forked child connects anew. */
struct mstack_hello {
    struct mstack_msg_hdr hdr;
    uint32_t pid;
    uint32_t flags;
};

struct mstack_hello_reply {
    struct mstack_reply r;
    uint32_t daemon_version;
    uint32_t max_ports;
};

/* PORT_OPEN: a port for this process's stack. Zero fields ask for the daemon's defaults.
 * The reply carries two fds, the UMEM memfd then the XSK, and what the stack needs to use
 * them and to address its frames. Next hops are the switch's job: the egress program fills
 * in both MAC addresses from the kernel's routes and neighbours. */
struct mstack_port_open {
    struct mstack_msg_hdr hdr;
    uint32_t frames;
    uint32_t ring_size;
    uint32_t flags;
    uint32_t pad;
};

struct mstack_port_open_reply {
    struct mstack_reply r;
    uint32_t port_id;
    uint32_t nic_ifindex;
    /* geometry (mstack_port_geom in mstack_port.h) */
    uint64_t umem_size;
    uint32_t frame_size;
    uint32_t frame_headroom;
    uint32_t rx_size;
    uint32_t tx_size;
    uint32_t fill_size;
    uint32_t comp_size;
    uint32_t bind_flags;
    uint32_t mtu;
    uint8_t nic_mac[6];
    uint16_t n_addrs;
    uint32_t addrs[8];               /* the NIC's IPv4 addresses, network byte order */
};

/* PORT_CLOSE: the port goes (its listen-group memberships with it). */
struct mstack_port_close {
    struct mstack_msg_hdr hdr;
    uint32_t port_id;
    uint32_t pad;
};

/* REGISTER: carries one fd, the shadow kernel socket bound to the 3-tuple the user-level
 * socket uses (listening, for MSTACK_REG_LISTEN). The daemon checks it (network namespace,
 * domain, type, protocol, listening state, address) before it installs the binding, keeps its
 * own copy while the binding lives, and counts the sender as its first claimant. Sockets the
 * kernel let share a 3-tuple (SO_REUSEPORT, same owner) share one binding and listen group. */
struct mstack_register {
    struct mstack_msg_hdr hdr;
    uint32_t kind;                   /* MSTACK_REG_* */
    uint32_t port_id;                /* CONNECT, UDP: the port that owns the binding */
};

struct mstack_register_reply {
    struct mstack_reply r;
    uint32_t binding_id;
    uint32_t proto;                  /* 6 or 17 */
    uint32_t addr;                   /* network byte order; 0 = wildcard */
    uint16_t port;                   /* network byte order */
    uint16_t pad;
};

/* CLAIM: "this process holds the socket too" (after fork, after exec), with the socket's fd
 * as proof. RELEASE (same struct, no fd): it no longer does. A binding lives while a live
 * claimant holds it. Every error reply, whatever the request, is a bare mstack_reply. */
struct mstack_claim {
    struct mstack_msg_hdr hdr;
    uint32_t binding_id;
    uint32_t pad;
};

/* GROUP_JOIN / GROUP_LEAVE: this process's port waits (accept, poll) on a listening binding
 * it has claimed, and so receives a share of its new flows — or stops waiting. */
struct mstack_group_msg {
    struct mstack_msg_hdr hdr;
    uint32_t binding_id;
    uint32_t port_id;
};

/* STATS_REGION: carries one fd, a memfd the stack writes its counters and connection table
 * to; the daemon maps it read-only for mstackctl conns/stats. */
struct mstack_stats_region {
    struct mstack_msg_hdr hdr;
    uint32_t port_id;
    uint32_t pad;
};

/* LEASE: a block of local ports for this port's active opens (outgoing connections). The
 * daemon picks a free block inside the kernel's ephemeral range, keeps it from the kernel's own
 * ephemeral choice (ip_local_reserved_ports) and from explicit binds (it holds a bound socket
 * per port), and steers (tcp, addr, p) for every p of the block to the port. The stack keeps
 * 4-tuples unique within its blocks. A lease ends with UNLEASE or with its port. */
struct mstack_lease {
    struct mstack_msg_hdr hdr;
    uint32_t port_id;
    uint32_t count;                  /* ports wanted; 0: the daemon's block size */
    uint32_t addr;                   /* local IPv4, network byte order; 0: the NIC's first */
    uint32_t pad;
};

struct mstack_lease_reply {
    struct mstack_reply r;
    uint32_t lease_id;
    uint32_t addr;                   /* network byte order */
    uint16_t first;                  /* host byte order: ports first .. first + count - 1 */
    uint16_t count;
    uint32_t pad;
};

struct mstack_unlease {
    struct mstack_msg_hdr hdr;
    uint32_t lease_id;
    uint32_t pad;
};

/* ---- Connection hand-off within a listen group (docs/mstackd.md, "Hand-off") ----------
 * A process that closes its listener (nginx's old worker on reload) hands its not yet
 * accepted connections to another member of the binding's listen group instead of resetting
 * them. Order: the target adopts (IMPORT), then the daemon re-points the switch's flows to
 * the target's port, then the sender releases its copies (after HANDOFF's reply). */

/* One connection, as the switch's flow table names it; network byte order. */
struct mstack_handoff_flow {
    uint32_t laddr;
    uint32_t raddr;
    uint16_t lport;
    uint16_t rport;
};

/* HANDOFF (app -> daemon, on the process's connection): carries 1 fd, a memfd holding the
 * stacks' opaque serialized connections, sealed F_SEAL_WRITE|F_SEAL_GROW|F_SEAL_SHRINK, at
 * most MSTACK_HANDOFF_MAX_BLOB bytes (the daemon checks that and never reads it). binding_id:
 * the listening binding (the sender still claims it; it may have left the group); port_id:
 * the sender's port, which must own every flow; 1 <= n_flows <= MSTACK_HANDOFF_MAX_FLOWS. */
struct mstack_handoff {
    struct mstack_msg_hdr hdr;
    uint32_t binding_id;
    uint32_t port_id;
    uint32_t n_flows;
    uint32_t pad;
    struct mstack_handoff_flow flows[32];
};

/* flows[0 .. n_moved) now belong to target_port; the sender releases them. n_moved 0 with
 * status 0: no member could take them (target_port 0); status < 0: a bad request. The reply
 * may take up to MSTACK_HANDOFF_TIMEOUT_MS. */
struct mstack_handoff_reply {
    struct mstack_reply r;
    uint32_t target_port;
    uint32_t n_moved;
};

/* INBOX (app -> daemon, on a second connection the process opens after HELLO on it): makes
 * that connection port_id's inbox, where the daemon pushes IMPORTs. The peer's pid must own
 * the port; one inbox per port; it ends with its connection or its port. No fd. Reply: a
 * plain mstack_reply. Nothing but IMPORT replies may follow on an inbox. */
struct mstack_inbox {
    struct mstack_msg_hdr hdr;
    uint32_t port_id;
    uint32_t pad;
};

/* IMPORT (daemon -> app, pushed on port_id's inbox with the daemon's own seq): carries 1 fd,
 * the sender's memfd passed through unchanged. The app adopts what it can and answers with
 * an mstack_import_reply (type MSTACK_MSG_IMPORT | MSTACK_MSG_REPLY, the same seq) within
 * MSTACK_IMPORT_TIMEOUT_MS: it adopted flows[0 .. n_imported). */
struct mstack_import {
    struct mstack_msg_hdr hdr;
    uint32_t binding_id;
    uint32_t port_id;                /* the target: the inbox's port */
    uint32_t n_flows;
    uint32_t pad;
    struct mstack_handoff_flow flows[32];
};

struct mstack_import_reply {
    struct mstack_reply r;           /* status 0, or a negative errno (then n_imported 0) */
    uint32_t n_imported;             /* <= the IMPORT's n_flows */
    uint32_t pad;
};

#endif
