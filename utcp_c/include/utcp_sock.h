/* utcp_sock.h — UTCP's socket-like API: BSD stream-socket semantics over one stack, for the
 * shim (libmstack.so) and for programs that want sockets rather than events.
 *
 * A socket table sits on top of a stack and takes over its event queue (utcp_next_event):
 * after frames or time went in (utcp_poll / utcp_input / utcp_timers), utcp_socks_process()
 * turns the stack's events into accept queues, readiness and pending errors.  Readiness is
 * reported in poll(2) bits with the meaning Linux's tcp_poll() gives them, so a socket layer
 * can hand them to poll, select and epoll unchanged.  Waiting is the caller's business: the
 * table says *when* to look again (a notify callback per socket, and one wake-up eventfd).
 *
 * Like the stack, the table is not thread-safe (the caller serialises: the shim holds one
 * lock per stack), allocates everything at creation and nothing afterwards, and reads no
 * clock.  Functions return 0 / a count / an id on success and a negative errno on failure.
 * Addresses and ports are host byte order.  Socket ids are ints >= 0 that carry a
 * generation: a stale id is -EBADF, never another socket. */
#ifndef UTCP_SOCK_H
#define UTCP_SOCK_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "utcp.h"

#ifdef __cplusplus
extern "C" {
#endif

struct utcp_socks;

struct utcp_socks_config {
	size_t sz;
	uint32_t max_socks;   /* listeners + connections; 0: the stack's max_conns + max_listeners */
	int wake_fd;          /* 1 (default): create the wake-up eventfd; 0: none */
};
void utcp_socks_config_init(struct utcp_socks_config *cfg);

/* The table takes the stack's event queue over: do not call utcp_next_event() on st after
 * this.  The stack stays the caller's (destroy the table first). */
int utcp_socks_create(struct utcp_stack *st, const struct utcp_socks_config *cfg,
		      struct utcp_socks **out);
/* Aborts (RST) every connection still open, flushes, frees the table.  NULL: no-op. */
void utcp_socks_destroy(struct utcp_socks *ss, uint64_t now_us);
struct utcp_stack *utcp_socks_stack(const struct utcp_socks *ss);

/* Drains the stack's events into the sockets and calls the notify callback once for every
 * socket something happened to.  Call after every utcp_poll/utcp_input/utcp_timers.
 * Returns the number of sockets notified. */
int utcp_socks_process(struct utcp_socks *ss, uint64_t now_us);

/* Called from utcp_socks_process() only, with the socket's current utcp_sk_ready() mask,
 * once per socket something happened to.  Every call is an edge for EPOLLET: new data,
 * newly acknowledged data, a new connection to accept, a state change.  (The caller's own
 * calls — accept emptying a queue, recv draining data — notify nobody: the caller knows.) */
typedef void (*utcp_sk_notify_fn)(void *arg, int sk, unsigned ready);
void utcp_socks_set_notify(struct utcp_socks *ss, utcp_sk_notify_fn fn, void *arg);

/* An eventfd (non-blocking, close-on-exec) that becomes readable when utcp_socks_process
 * notified at least one socket; -1 if configured without.  utcp_socks_wake_drain() reads
 * it empty.  Still owned by the table. */
int utcp_socks_wake_fd(const struct utcp_socks *ss);
void utcp_socks_wake_drain(struct utcp_socks *ss);

/* ---- sockets ---- */

/* A new socket, neither listening nor connected: options may be set on it, then
 * utcp_sk_listen() or utcp_sk_connect().  -ENFILE when the table is full. */
int utcp_sk_open(struct utcp_socks *ss);

/* Listen on the stack's address, port `port` (one listening socket per port: -EADDRINUSE).
 * backlog < 0: 0; capped at 4096; as with Linux, backlog + 1 connections (half-open ones
 * included, here) may wait to be accepted.  While the accept queue is full a new SYN is not
 * answered and the peer retries (Linux's default, tcp_abort_on_overflow = 0).  On a
 * listening socket: a new backlog (same port, else -EINVAL). */
int utcp_sk_listen(struct utcp_socks *ss, int sk, uint16_t port, int backlog);

/* A listener that answers no SYN until resumed (the peer retries): for a process that
 * listens but has not waited on the socket yet.  Connections already queued stay queued. */
int utcp_sk_listen_pause(struct utcp_socks *ss, int sk, bool paused);

struct utcp_sk_name {
	uint32_t laddr, raddr;
	uint16_t lport, rport;
};

/* The next connection of a listening socket: a new socket id (inheriting the listener's
 * options: nodelay, keepalive and its timers, cc, linger, buffer caps), its addresses in
 * *peer (may be NULL).  -EAGAIN if none is ready, -EINVAL if sk does not listen.
 * With UTCP_TCP_DEFER_ACCEPT set, a connection becomes ready when data arrived or after
 * the option's seconds. */
int utcp_sk_accept(struct utcp_socks *ss, int sk, struct utcp_sk_name *peer);

/* Active open from an open socket (lport 0: ephemeral, 4-tuple unique; next_hop NULL: the
 * stack's gw_mac).  Returns -EINPROGRESS: the socket becomes writable (UTCP_SK poll bits:
 * POLLOUT) when connected, or POLLERR|POLLHUP with utcp_sk_error() saying why
 * (-ECONNREFUSED, -ETIMEDOUT, -ENETUNREACH...).  -EISCONN / -EALREADY as connect(2); after a
 * failed attempt, a connect call returns its error (-ECONNABORTED if already collected) and
 * the next one tries again, as with Linux.  -EAGAIN: no free control block. */
int utcp_sk_connect(struct utcp_socks *ss, int sk, uint32_t raddr, uint16_t rport,
		    uint16_t lport, const uint8_t next_hop[6], uint64_t now_us);

/* Flags for send and recv. */
#define UTCP_SK_MORE 0x1      /* send: more is coming, hold a partial segment (MSG_MORE) */
#define UTCP_SK_PEEK 0x2      /* recv: leave the data queued (MSG_PEEK) */
/* send: hold a final partial segment until utcp_sk_push() — autocorking by the caller, who
 * pushes when its application next waits.  Full segments still go as they fill; a FIN
 * (shutdown, close) takes the held data with it. */
#define UTCP_SK_HOLD 0x4

/* Queue data: bytes queued (may be short), -EAGAIN when the send buffer is full, -EPIPE
 * after shutdown(SHUT_WR) or once the connection has finished, the connection's pending
 * error (-ECONNRESET...) once (then -EPIPE).  As Linux: -EPIPE on a socket that is not
 * connected (or a listener), -EAGAIN while connecting (a blocking caller waits for POLLOUT).
 * The pieces of one call go out together.  Output goes out at the next
 * utcp_flush/utcp_poll of the stack. */
ssize_t utcp_sk_send(struct utcp_socks *ss, int sk, const struct iovec *iov, int iovcnt,
		     int flags, uint64_t now_us);
/* Ends what UTCP_SK_HOLD sends held: the partial segment goes out now (as the windows and
 * Nagle allow) — unless TCP_CORK or a MSG_MORE send still holds it, as the application asked.
 * 0 (also for a listener or a finished connection), -EBADF for a stale id.  Setting
 * TCP_CORK off or TCP_NODELAY on pushes as well (Linux pushes there). */
int utcp_sk_push(struct utcp_socks *ss, int sk, uint64_t now_us);
/* Read data: bytes read, 0 at end of stream (peer's FIN, or after shutdown(SHUT_RD)),
 * -EAGAIN if nothing yet, -ENOTCONN if never connected, the pending error (-ECONNRESET,
 * -ETIMEDOUT) once, then 0.  Reading opens the receive window (a window update goes out
 * when it grew by enough, RFC 9293 3.8.6.2.2). */
ssize_t utcp_sk_recv(struct utcp_socks *ss, int sk, const struct iovec *iov, int iovcnt,
		     int flags, uint64_t now_us);

/* how: SHUT_RD, SHUT_WR, SHUT_RDWR (sys/socket.h).  -ENOTCONN if not connected (also in
 * TIME-WAIT).  Shutting the read side notifies the socket at the next utcp_socks_process
 * (it reads end of stream: other threads' waits end, as with Linux).  As Linux:
 * while connecting it abandons the attempt (0; pending error -ECONNRESET; connect again
 * possible); on a listener SHUT_RD/SHUT_RDWR stops listening (queued connections reset). */
int utcp_sk_shutdown(struct utcp_socks *ss, int sk, int how, uint64_t now_us);

/* Release the id.  A connection finishes on its own (FIN after the queued data); with
 * unread received data or SO_LINGER {on, 0} it is reset instead (RFC 9293 / Linux).  A
 * listener's queued, unaccepted connections are reset. */
int utcp_sk_close(struct utcp_socks *ss, int sk, uint64_t now_us);

/* Options.  Values are ints in the units of the socket option of the same name. */
enum utcp_sk_opt {
	UTCP_SO_KEEPALIVE = 1,  /* 0/1 */
	UTCP_SO_LINGER,         /* -1: off; else the linger seconds (0: close resets) */
	UTCP_SO_RCVBUF,         /* set: the caller's bytes; get: what Linux would report (2x),
				 * capped at the stack's per-connection buffer */
	UTCP_SO_SNDBUF,         /* as SO_RCVBUF */
	UTCP_TCP_NODELAY,       /* 0/1 */
	UTCP_TCP_CORK,          /* 0/1: hold partial segments until uncorked (200 ms bound) */
	UTCP_TCP_KEEPIDLE,      /* seconds */
	UTCP_TCP_KEEPINTVL,     /* seconds */
	UTCP_TCP_KEEPCNT,       /* probes */
	UTCP_TCP_DEFER_ACCEPT,  /* seconds; listeners */
	UTCP_TCP_MAXSEG,        /* get only: the MSS in use, less the timestamp option as Linux
				 * reports it; 536 when not connected (Linux's default) */
};
int utcp_sk_setopt(struct utcp_socks *ss, int sk, enum utcp_sk_opt opt, int val);
int utcp_sk_getopt(struct utcp_socks *ss, int sk, enum utcp_sk_opt opt, int *val);
/* Congestion control by name ("newreno", "cubic"); -ENOENT if unknown.  Before connect it
 * applies when the connection is made; on a listener, to the connections it accepts. */
int utcp_sk_set_cc(struct utcp_socks *ss, int sk, const char *name);
const char *utcp_sk_get_cc(struct utcp_socks *ss, int sk);

/* poll(2) bits (POLLIN, POLLOUT, POLLERR, POLLHUP, POLLRDHUP), as Linux's tcp_poll() sets
 * them: a listener POLLIN with a connection to accept; a socket neither listening nor
 * connected POLLOUT|POLLHUP; while connecting 0; connected
 * POLLOUT when at least a third of the send buffer is free (and always after SHUT_WR);
 * POLLIN|POLLRDHUP after the peer's FIN; POLLHUP when both directions are shut or the
 * connection is gone; POLLERR while an error is pending.  A reset connection:
 * POLLIN|POLLOUT|POLLERR|POLLHUP|POLLRDHUP.  -EBADF for a stale id. */
int utcp_sk_ready(struct utcp_socks *ss, int sk);
/* SO_ERROR: the pending error (a negative errno) or 0, and clears it. */
int utcp_sk_error(struct utcp_socks *ss, int sk);
/* FIONREAD: bytes ready to read.  SIOCOUTQ: bytes sent but not acknowledged plus unsent. */
int utcp_sk_nread(struct utcp_socks *ss, int sk);
int utcp_sk_outq(struct utcp_socks *ss, int sk);

/* Addresses (a listener: raddr/rport 0; before connect: all 0).  -ENOTCONN for the peer
 * of an unconnected socket is the caller's call to make from raddr == 0. */
int utcp_sk_name(struct utcp_socks *ss, int sk, struct utcp_sk_name *out);
/* Connection state and counters (utcp.h); a listener reports UTCP_LISTEN. */
int utcp_sk_info(struct utcp_socks *ss, int sk, struct utcp_conn_info *info);
bool utcp_sk_is_listener(struct utcp_socks *ss, int sk);

/* ---- moving unaccepted connections to another stack (nginx reload) ----
 * A listener's connections not yet accepted are frozen and described in a blob; another
 * stack adopts them into its own listener's accept queue; the first stack then releases
 * them silently.  Blob format: docs/utcp-sockets.md, "Moving unaccepted connections". */

/* A connection's 4-tuple, host byte order. */
struct utcp_mig_flow { uint32_t laddr, raddr; uint16_t lport, rport; };

/* Freeze up to `max` of listening socket sk's connections not yet accepted — half-open
 * (SYN-RCVD) ones and queued ones (ESTABLISHED, or CLOSE-WAIT if the peer's FIN came) — and
 * describe them in buf (cap bytes).  Returns the number frozen (0: none left), their 4-tuples
 * in flows[0..n), and *len, the bytes of buf used.  -ENOSPC if not even one fits in cap,
 * -EINVAL if sk does not listen, -EBUSY if a batch is already frozen and not done.
 * A frozen connection drops every segment silently, sends nothing, runs no timers and can
 * no longer be accepted, until utcp_sk_migrate_done.
 * Order: the accept queue's, then TCP_DEFER_ACCEPT's held connections, then half-open ones.
 * With nothing to move: 0, and *len = 16 (an empty blob) if cap allows, else 0.  -EBADF for a
 * stale id.  Closing the listener while a batch is frozen releases the batch silently. */
int utcp_sk_migrate_out(struct utcp_socks *ss, int sk, struct utcp_mig_flow *flows, int max,
			void *buf, size_t cap, size_t *len, uint64_t now_us);
/* Ends the frozen batch: the first `moved` connections live in another stack now and are
 * released silently (no RST, no TIME-WAIT entry, counted in the stack's stats); the others are
 * reset, as closing the listener would have done. */
void utcp_sk_migrate_done(struct utcp_socks *ss, int sk, int moved, uint64_t now_us);
/* Adopts the connections a migrate_out of any stack described (buf, len) into listening
 * socket sk's accept queue, in order, stopping at the first one it cannot take (accept queue
 * full, no free control block, 4-tuple already in use here).  Returns the number adopted;
 * -EBADMSG if buf is malformed, truncated or of another format version (nothing adopted),
 * -EINVAL if sk does not listen or a record's local port/address is not the listener's.
 * Adopted connections inherit the listener's socket options and notify it (POLLIN) as a
 * newly established connection would; an adopted half-open connection behaves as a SYN-RCVD
 * child (its SYN-ACK retransmission timer runs). Nothing is sent at adoption itself.
 * len must be exactly the *len migrate_out gave.  The queue's bound is the listener's
 * backlog + 1, half-open connections included; the notification (POLLIN) comes with the next
 * utcp_socks_process.  -EBADF for a stale id. */
int utcp_sk_migrate_in(struct utcp_socks *ss, int sk, const void *buf, size_t len,
		       uint64_t now_us);

/* Iteration over sockets in use: the first id after `after` (-1: from the start), or -1. */
int utcp_sk_next(struct utcp_socks *ss, int after);

#ifdef __cplusplus
}
#endif
#endif
