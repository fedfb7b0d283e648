/* mstack_ctl.h — the app side of the control protocol (mstack_proto.h): a connection to
 * mstackd's app.sock that asks for ports, registers and claims shadow sockets, joins listen
 * groups, hands over a statistics region and hands connections to other members of a listen
 * group (an inbox, a second connection, receives them).  One request, one reply, strictly
 * validated, bounded by a timeout.  Functions return 0 (or an id) or a negative errno; no globals:
 * thread-compatible (one struct mstack_ctl per thread, or locked by the caller).
 * One connection per process: a forked child connects anew (see utcp_c/ctl/README.md). */
#ifndef MSTACK_CTL_H
#define MSTACK_CTL_H

#include <stddef.h>
#include <stdint.h>

#include "mstack_port.h"
#include "mstack_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default bound on one request (send + reply), milliseconds. */
#define MSTACK_CTL_DEFAULT_TIMEOUT_MS 5000

struct mstack_ctl;

/* PORT_OPEN request.  Extensible: set sz to sizeof(struct mstack_ctl_port_req); fields past
 * sz read as zero.  Zero fields ask for the daemon's defaults. */
struct mstack_ctl_port_req {
	uint32_t sz;
	uint32_t frames;      /* UMEM frames */
	uint32_t ring_size;   /* RX/TX/completion ring entries */
	uint32_t flags;       /* reserved, 0 */
};

/* A port as PORT_OPEN's reply describes it.  umem_fd and xsk_fd are the caller's (close-on-
 * exec): pass them with geom to mstack_port_open(), which owns them on success. */
struct mstack_ctl_port {
	uint32_t port_id;
	uint32_t nic_ifindex;
	int umem_fd;
	int xsk_fd;
	struct mstack_port_geom geom;         /* sz set; rx_frames 0 (library default) */
	uint32_t mtu;
	uint8_t nic_mac[6];
	uint16_t n_addrs;                     /* <= MSTACK_MAX_ADDRS */
	uint32_t addrs[MSTACK_MAX_ADDRS];     /* the NIC's IPv4 addresses, network byte order */
};

/* A binding as REGISTER's reply describes it. */
struct mstack_ctl_binding {
	uint32_t binding_id;
	uint32_t proto;       /* 6 (TCP) or 17 (UDP) */
	uint32_t addr;        /* network byte order; 0: wildcard */
	uint16_t port;        /* network byte order */
	uint16_t _pad;
};

/* Connect to <run_dir>/app.sock (run_dir NULL: $MSTACK_RUN_DIR, else /run/mstack) and say
 * HELLO with getpid().  -ENAMETOOLONG path too long for sun_path, -ENOENT/-ECONNREFUSED no
 * daemon, -ETIMEDOUT, -EPROTO bad HELLO reply, or the daemon's status (mstack_ctl_connect
 * then returns no connection: the detail text is lost with it). */
int mstack_ctl_connect(struct mstack_ctl **out, const char *run_dir);

/* The same on an already connected SOCK_SEQPACKET socket (tests, inherited connections).
 * Takes ownership of fd on success only.  timeout_ms <= 0: the default. */
int mstack_ctl_connect_fd(struct mstack_ctl **out, int fd, int timeout_ms);

/* Every request below fails with -EBADFD in a process other than the one that connected (a
 * forked child must not share its parent's connection: replies would cross), -ETIMEDOUT if
 * no reply came in time (a late reply is then skipped), -EPROTO for a malformed reply (any
 * fd it carried is closed), -ECONNRESET/-EPIPE when the daemon went away, or the daemon's
 * status (a negative errno) with mstack_ctl_last_detail() saying why.  Ids above INT32_MAX
 * in a reply are malformed. */

/* Close the connection (the daemon then drops what only this connection held).  NULL: no-op. */
void mstack_ctl_close(struct mstack_ctl *ctl);

/* The connection's fd (for poll: POLLHUP/POLLIN when the daemon goes away).  Still owned by
 * ctl; do not read from it. */
int mstack_ctl_fd(const struct mstack_ctl *ctl);

/* Bound on each following request, milliseconds (> 0), else -EINVAL. */
int mstack_ctl_set_timeout(struct mstack_ctl *ctl, int timeout_ms);

/* From the HELLO reply. */
uint32_t mstack_ctl_daemon_version(const struct mstack_ctl *ctl);
uint32_t mstack_ctl_max_ports(const struct mstack_ctl *ctl);

/* Why the last call failed: the daemon's detail text for an error reply, or this library's
 * words for a local failure ("reply: wrong seq", "timed out waiting for the reply", ...);
 * "" after a call that succeeded.  Valid until the next call on ctl. */
const char *mstack_ctl_last_detail(const struct mstack_ctl *ctl);

/* PORT_OPEN (req NULL: the daemon's defaults).  Returns the port id (>= 0) and fills *out;
 * on error *out->umem_fd and xsk_fd are -1 and no fd is left open. */
int mstack_ctl_port_open(struct mstack_ctl *ctl, const struct mstack_ctl_port_req *req,
			 struct mstack_ctl_port *out);

/* PORT_CLOSE: the port goes, with its listen-group memberships.  The caller still unmaps its
 * rings (mstack_port_close). */
int mstack_ctl_port_close(struct mstack_ctl *ctl, uint32_t port_id);

/* REGISTER the shadow kernel socket shadow_fd (bound; listening for MSTACK_REG_LISTEN) as a
 * binding of kind MSTACK_REG_*; port_id: the owning port for CONNECT and UDP (ignored for
 * LISTEN, whose flows go to its listen group).  The fd is sent, not consumed.  out may be
 * NULL.  Returns the binding id (>= 0) or a negative errno (-EADDRINUSE: the kernel or
 * another port holds the 3-tuple). */
int mstack_ctl_register(struct mstack_ctl *ctl, int shadow_fd, uint32_t kind, uint32_t port_id,
			struct mstack_ctl_binding *out);

/* CLAIM: this process holds the binding's socket too (after fork, after exec); shadow_fd is
 * the proof and is sent, not consumed. */
int mstack_ctl_claim(struct mstack_ctl *ctl, uint32_t binding_id, int shadow_fd);

/* RELEASE: this process no longer holds the binding's socket (no fd sent). */
int mstack_ctl_release(struct mstack_ctl *ctl, uint32_t binding_id);

/* GROUP_JOIN / GROUP_LEAVE: port_id waits (or no longer waits) on the listening binding. */
int mstack_ctl_group_join(struct mstack_ctl *ctl, uint32_t binding_id, uint32_t port_id);
int mstack_ctl_group_leave(struct mstack_ctl *ctl, uint32_t binding_id, uint32_t port_id);

/* STATS_REGION: hand the daemon memfd (the stack's counters and connection table) for
 * port_id; the daemon maps it read-only.  The fd is sent, not consumed. */
int mstack_ctl_stats_region(struct mstack_ctl *ctl, uint32_t port_id, int memfd);

/* A block of local ports leased for a port's active opens: first .. first + count - 1 on
 * addr.  The switch steers them to the port; the kernel will neither pick nor bind them. */
struct mstack_ctl_lease {
	uint32_t lease_id;
	uint32_t addr;        /* network byte order */
	uint16_t first;       /* host byte order */
	uint16_t count;
};

/* LEASE: count ports (0: the daemon's block size) on addr (network byte order; 0: the NIC's
 * first address) for port_id.  Returns the lease id or a negative errno. */
int mstack_ctl_lease(struct mstack_ctl *ctl, uint32_t port_id, uint32_t count, uint32_t addr,
		     struct mstack_ctl_lease *out);

/* UNLEASE: give a block back (it also ends with its port). */
int mstack_ctl_unlease(struct mstack_ctl *ctl, uint32_t lease_id);

/* ---- Connection hand-off within a listen group (README.md, "Hand-off") ---------------- */

/* A sealed memfd (MFD_ALLOW_SEALING|MFD_CLOEXEC; F_SEAL_WRITE|F_SEAL_GROW|F_SEAL_SHRINK|
 * F_SEAL_SEAL) holding len bytes of buf: the blob HANDOFF carries.  Returns the fd (the
 * caller's) or -errno (-EMSGSIZE over MSTACK_HANDOFF_MAX_BLOB). */
int mstack_ctl_blob_memfd(const void *buf, size_t len);

/* HANDOFF: hand flows[0..n) (network byte order, 1 <= n <= MSTACK_HANDOFF_MAX_FLOWS) of the
 * listening binding binding_id, owned by this process's port port_id, with their serialized
 * state in memfd (sent, not consumed), to another member of the binding's listen group.
 * Returns n_moved >= 0 (flows[0..n_moved) now belong to *target_port: release them; the rest
 * stay this port's; 0 when no member took them) or -errno.  The daemon may take up to
 * MSTACK_HANDOFF_TIMEOUT_MS to answer: the call waits at least that long plus a margin,
 * whatever the connection's timeout.  target_port may be NULL. */
int mstack_ctl_handoff(struct mstack_ctl *ctl, uint32_t binding_id, uint32_t port_id,
		       const struct mstack_handoff_flow *flows, uint32_t n, int memfd,
		       uint32_t *target_port);

/* An IMPORT the daemon pushed on an inbox: adopt flows[0..n) from the blob in memfd (the
 * caller's, close-on-exec; close it when done), then answer with mstack_ctl_inbox_reply(). */
struct mstack_ctl_import {
	uint32_t seq;
	uint32_t binding_id;
	uint32_t port_id;
	uint32_t n;
	struct mstack_handoff_flow flows[MSTACK_HANDOFF_MAX_FLOWS];
	int memfd;
};

/* A second connection to <run_dir>/app.sock (as mstack_ctl_connect) made port_id's inbox
 * (HELLO, then INBOX): the daemon pushes IMPORTs on it.  port_id must be a port this process
 * opened on its main connection.  mstack_ctl_fd() gives its fd to poll for POLLIN; close it
 * with mstack_ctl_close() (the inbox also ends with its port). */
int mstack_ctl_inbox_open(struct mstack_ctl **out, const char *run_dir, uint32_t port_id);

/* Non-blocking: 1 and *out filled if an IMPORT was waiting (out->memfd is the caller's), 0 if
 * none, -ECONNRESET if the daemon went away, -EPROTO if it sent something malformed (any fd
 * it carried is closed; out->memfd is -1 whenever the return is not 1). */
int mstack_ctl_inbox_recv(struct mstack_ctl *ib, struct mstack_ctl_import *out);

/* Answer IMPORT seq: status 0 and flows[0..n_imported) adopted, or a negative errno (then
 * n_imported must be 0).  -EINVAL for a bad combination. */
int mstack_ctl_inbox_reply(struct mstack_ctl *ib, uint32_t seq, int32_t status,
			   uint32_t n_imported);

#ifdef __cplusplus
}
#endif

#endif /* MSTACK_CTL_H */
