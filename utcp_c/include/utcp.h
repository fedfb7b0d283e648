/* utcp.h — UTCP, a user-level TCP/IPv4 stack: the public API.
 *
 * A stack is a pure state machine.  Frames and the current time go in (utcp_poll(),
 * utcp_input()); frames go out through the stack's port, events come out through
 * utcp_next_event().  Nothing reads a clock or starts a thread: every call that can
 * make progress takes `now_us`, a monotonic time in microseconds chosen by the caller,
 * and utcp_next_deadline() says when the stack next needs to be called.
 *
 * All memory (control blocks, per-connection send and receive buffers, the timer
 * wheel, the TX batch) is allocated by utcp_stack_create(); the packet path allocates
 * nothing.  Functions return 0 / a count on success and a negative errno on failure.
 * Addresses and ports are host byte order. */
#ifndef UTCP_H
#define UTCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "utcp_port.h"
#include "utcp_wire.h"

#ifdef __cplusplus
extern "C" {
#endif

struct utcp_stack;

/* A connection handle: slot index + generation, so a stale handle is detected (-EBADF). */
typedef uint32_t utcp_cid;
#define UTCP_CID_NONE UINT32_MAX

/* Stack configuration.  Call utcp_config_init() first, then change fields; `sz` lets
 * the library accept configs from older callers (libbpf opts style). */
struct utcp_config {
	size_t sz;
	uint32_t local_ip;
	uint8_t local_mac[6];
	uint8_t gw_mac[6];           /* next hop for active opens (passive: learned from the SYN) */
	uint16_t mtu;                /* IP MTU; MSS advertised = mtu - 40 */
	uint8_t ttl;
	uint32_t max_conns;          /* control blocks, allocated up front */
	uint32_t max_listeners;
	uint32_t sndbuf, rcvbuf;     /* bytes per connection, allocated up front */
	uint8_t isn_key[16];         /* RFC 6528 secret; also keys hashes and TS offsets */
	bool window_scaling, sack, timestamps;   /* offered/accepted (RFC 7323, RFC 2018) */
	bool nodelay;                /* disable Nagle by default on new connections */
	uint32_t initial_window_segs;            /* RFC 6928: 10 */
	uint32_t rto_init_us, rto_min_us, rto_max_us;
	uint32_t delack_us;          /* bounded delay of a delayed ACK (RFC 5681: < 500 ms) */
	uint32_t time_wait_us;       /* 2*MSL */
	uint32_t syn_retries, data_retries;
	uint32_t challenge_ack_limit;            /* per second, per stack (RFC 5961 7) */
	uint16_t ephemeral_lo, ephemeral_hi;     /* local ports for active opens */
	uint32_t tx_batch;           /* frames per tx_burst/kick */
	uint32_t rx_batch;           /* frames per rx_burst */
	uint32_t timer_tick_us, timer_slots;
	uint16_t min_mss;            /* PMTU floor (RFC 5927 / RFC 1191 68-byte MTU is too low) */
	/* Keepalive (RFC 9293 3.8.4, RFC 1122 4.2.3.6): off unless enabled per stack or per
	 * connection; probes after keepalive_idle_us without a segment from the peer. */
	bool keepalive;
	uint32_t keepalive_probes;
	uint64_t keepalive_idle_us, keepalive_intvl_us;
	char cc[16];                 /* congestion control for new connections: "newreno", "cubic" */
	/* TIME-WAIT lives in a compact table of its own (4-tuple and the few numbers needed
	 * to answer segments for time_wait_us), not in a control block: a connection's block
	 * and buffers are free again the moment it enters TIME-WAIT.  Entries preallocated;
	 * 0: 4 x max_conns.  When the table is full the oldest entry is recycled (counted in
	 * time_wait_recycled), as Linux does past tcp_max_tw_buckets: TIME-WAIT never makes
	 * the stack refuse a connection. */
	uint32_t max_time_wait;
	/* References (utcp_send_ref) one connection may hold queued at once, 0..UTCP_SEND_REFS_MAX;
	 * slots allocated at creation (32 bytes each).  0: utcp_send_ref() says -ENOTSUP. */
	uint32_t send_refs;
};
#define UTCP_SEND_REFS_MAX 64

void utcp_config_init(struct utcp_config *cfg);

int utcp_stack_create(const struct utcp_config *cfg, const struct utcp_port *port, uint64_t now_us,
		      struct utcp_stack **out);
void utcp_stack_destroy(struct utcp_stack *st);

/* Receives up to a batch of frames from the port, processes them, runs due timers and
 * sends what is queued (one kick).  Returns frames received or a negative errno. */
int utcp_poll(struct utcp_stack *st, uint64_t now_us);
/* Processes frames the caller already holds (the port is only used for output).
 * Sends what this produced before returning. */
int utcp_input(struct utcp_stack *st, const struct utcp_frame *frames, unsigned n, uint64_t now_us);
/* Runs due timers and flushes output. */
int utcp_timers(struct utcp_stack *st, uint64_t now_us);
/* Sends frames produced by API calls (send, close...) now rather than at the next poll. */
int utcp_flush(struct utcp_stack *st, uint64_t now_us);
/* When the stack next needs utcp_poll()/utcp_timers() even if no frame arrives;
 * UINT64_MAX if never. */
uint64_t utcp_next_deadline(struct utcp_stack *st);

/* ---- the low-level event API ---- */

enum utcp_event_type {
	UTCP_EV_ACCEPTED = 1 << 0,   /* a passive open completed: ev.conn is the new connection */
	UTCP_EV_CONNECTED = 1 << 1,  /* an active open completed */
	UTCP_EV_READABLE = 1 << 2,   /* new data, or the peer's FIN (recv returns 0) */
	UTCP_EV_WRITABLE = 1 << 3,   /* send space freed by a new ACK */
	UTCP_EV_CLOSED = 1 << 4,     /* the connection is gone; ev.error says why (0: orderly) */
	UTCP_EV_WAKEUP = 1 << 5,     /* the time set by utcp_set_wakeup() has come */
};

struct utcp_event {
	uint32_t events;             /* mask of utcp_event_type */
	utcp_cid conn;
	int error;                   /* with UTCP_EV_CLOSED: 0, -ECONNRESET, -ETIMEDOUT, -ECONNREFUSED */
	int listener;                /* with UTCP_EV_ACCEPTED: the listener id */
};

/* Pops the next connection with pending events.  1 if *ev was filled, 0 if none. */
int utcp_next_event(struct utcp_stack *st, struct utcp_event *ev);

/* Returns a listener id (>= 0). */
int utcp_listen(struct utcp_stack *st, uint16_t port, int backlog);
/* Stops listening; its half-open connections are dropped (a late ACK meets a RST). */
int utcp_unlisten(struct utcp_stack *st, int listener);
/* Active open.  lport 0 picks an ephemeral port keeping the 4-tuple unique;
 * next_hop NULL uses cfg.gw_mac. */
int utcp_connect(struct utcp_stack *st, uint32_t raddr, uint16_t rport, uint16_t lport,
		 const uint8_t next_hop[6], uint64_t now_us, utcp_cid *out);
/* Queues up to len bytes; returns bytes queued, -EAGAIN if the buffer is full, -EPIPE
 * after shutdown, the connection's error once it is closed (-ECONNRESET...).  Data
 * queued before the handshake completes is sent once it does. */
ssize_t utcp_send(struct utcp_stack *st, utcp_cid c, const void *buf, size_t len, uint64_t now_us);
/* Zero-copy send: queues a reference to up to len bytes at buf instead of a copy.
 *
 * The caller promises that buf[0..n) (n: the value returned) stays valid and unchanged until
 * the stack releases the reference; the stack reads it whenever it builds a segment (the first
 * transmission and every retransmission, the checksum summed as the bytes are copied into the
 * frame, as for copied data), and never writes it.  The reference is released exactly once,
 * through the callback of utcp_set_ref_release() with `cookie`:
 *   - when every byte of it is acknowledged by the peer (from utcp_poll(), utcp_input(),
 *     utcp_timers(): the call that processed the ACK), or
 *   - when the connection ends without sending it: reset by the peer, timed out, utcp_abort(),
 *     utcp_close() with unread data (a reset), released after a move (utcp_conn_release), or
 *     utcp_stack_destroy() — from within that call.
 * References and copies (utcp_send) share one queue in call order: the bytes go out as they
 * were queued, whatever mix of the two calls queued them.
 *
 * Accounting: referenced bytes count against the send buffer exactly as copied ones do
 * (cfg.sndbuf, or less under utcp_set_bufcap): utcp_send() and utcp_send_ref() draw on the
 * same room, UTCP_READY_OUT/UTCP_EV_WRITABLE, snd_queued and utcp_stack_unacked() count both.
 * A reference holds no ring memory, but a caller cannot queue more than a send buffer's worth
 * nor more than cfg.send_refs references per connection.  Like utcp_send(), a call may take
 * only a prefix: returns n > 0 bytes referenced (one reference, one release), -EAGAIN if there
 * is no room or no free reference slot (UTCP_EV_WRITABLE follows an ACK), 0 for len 0 (no
 * reference), -ENOTSUP if cfg.send_refs is 0, and otherwise what utcp_send() returns.
 * A connection holding queued data is not frozen for a move (utcp_conn_freeze: -EBUSY). */
ssize_t utcp_send_ref(struct utcp_stack *st, utcp_cid c, const void *buf, size_t len,
		      uint64_t cookie, uint64_t now_us);
/* How references come back: fn(ctx, c, cookie) once per reference queued by utcp_send_ref(),
 * c being the handle the reference was queued on (possibly released by the application since).
 * Called from inside the stack: fn must not call into this stack.  NULL: releases are only
 * counted (utcp_stats send_refs_released).  Set it before queueing references. */
typedef void (*utcp_ref_release_fn)(void *ctx, utcp_cid c, uint64_t cookie);
void utcp_set_ref_release(struct utcp_stack *st, utcp_ref_release_fn fn, void *ctx);
/* Returns bytes read, 0 at end of stream, -EAGAIN if nothing yet. */
ssize_t utcp_recv(struct utcp_stack *st, utcp_cid c, void *buf, size_t len, uint64_t now_us);
/* Half-close: sends FIN after the queued data (deferred until established). */
int utcp_shutdown(struct utcp_stack *st, utcp_cid c, uint64_t now_us);
/* Shutdown + release the handle; the stack finishes the close on its own. */
int utcp_close(struct utcp_stack *st, utcp_cid c, uint64_t now_us);
/* Sends RST and releases the handle. */
int utcp_abort(struct utcp_stack *st, utcp_cid c, uint64_t now_us);
int utcp_set_nodelay(struct utcp_stack *st, utcp_cid c, bool on);
int utcp_set_keepalive(struct utcp_stack *st, utcp_cid c, bool on, uint64_t now_us);
/* Congestion control of one connection ("newreno", "cubic"); -ENOENT if unknown. */
int utcp_set_cc(struct utcp_stack *st, utcp_cid c, const char *name);

/* ---- introspection ---- */

enum utcp_state {
	UTCP_CLOSED = 0, UTCP_LISTEN, UTCP_SYN_SENT, UTCP_SYN_RECEIVED, UTCP_ESTABLISHED,
	UTCP_FIN_WAIT_1, UTCP_FIN_WAIT_2, UTCP_CLOSE_WAIT, UTCP_CLOSING, UTCP_LAST_ACK,
	UTCP_TIME_WAIT,
};
const char *utcp_state_str(enum utcp_state s);

struct utcp_conn_info {
	size_t sz;
	enum utcp_state state;
	uint32_t laddr, raddr;
	uint16_t lport, rport;
	bool ws_ok, sack_ok, ts_ok;
	uint8_t snd_wscale, rcv_wscale;
	uint16_t snd_mss;            /* payload bytes per full segment */
	uint32_t cwnd, ssthresh, snd_wnd, rcv_wnd;
	uint32_t srtt_us, rttvar_us, rto_us;
	uint32_t unacked, sndbuf_used, rcvbuf_used;
	uint64_t retransmits, rto_timeouts, fast_retransmits, spurious_recoveries;
	uint64_t bytes_acked, bytes_received;
	uint32_t reordering;         /* current DupThresh, segments */
	const char *cc;
	uint32_t sndbuf_refs;        /* of sndbuf_used: bytes held by reference (utcp_send_ref) */
	uint32_t send_refs;          /* references queued and not yet released */
};
int utcp_conn_info(struct utcp_stack *st, utcp_cid c, struct utcp_conn_info *info);

/* Readiness of a connection, poll(2)-style, for a socket layer on top of this API. */
enum utcp_ready {
	UTCP_READY_IN = 1 << 0,      /* data or end of stream to read, or an error to collect */
	UTCP_READY_OUT = 1 << 1,     /* room in the send buffer */
	UTCP_READY_HUP = 1 << 2,     /* both directions finished, or the connection is gone */
	UTCP_READY_ERR = 1 << 3,     /* reset, refused or timed out */
};
/* Returns a mask of utcp_ready or -EBADF. */
int utcp_conn_ready(struct utcp_stack *st, utcp_cid c);

/* Memory: what one connection costs (control block, buffers, table entry) whether it is
 * used or idle, and everything the stack allocated at creation. */
size_t utcp_conn_memory(const struct utcp_stack *st);
size_t utcp_stack_memory(const struct utcp_stack *st);
/* What one TIME-WAIT entry costs (entry, table slot, its share of the hash buckets); the
 * stack preallocates cfg.max_time_wait of them, counted in utcp_stack_memory(). */
size_t utcp_time_wait_memory(const struct utcp_stack *st);

struct utcp_stats {
	uint64_t frames_in, frames_out, tx_dropped;
	uint64_t segs_in, segs_out, data_segs_out, retransmits;
	uint64_t rto_timeouts, fast_retransmits, dupacks_in, lost_retransmits, tail_loss_probes;
	uint64_t reordering_seen, spurious_recoveries;
	uint64_t rst_in, rst_out, challenge_acks, challenge_acks_limited, keepalive_probes;
	uint64_t active_opens, passive_opens, established, resets, timeouts;
	uint64_t conns_in_use;
	uint64_t drops[UTCP_DROP__MAX];
	uint64_t dsacks_in, rack_marked_lost, prr_recoveries;   /* RFC 2883, RFC 8985, RFC 6937 */
	uint64_t time_wait_in_use;   /* TIME-WAIT entries (not counted in conns_in_use) */
	uint64_t time_wait_recycled; /* TIME-WAIT entries ended early because the table was full */
	/* moving connections between stacks (utcp_conn_freeze ... utcp_conn_adopt) */
	uint64_t migrated_out;       /* frozen connections released because another stack has them */
	uint64_t migrated_in;        /* connections adopted from another stack */
	uint64_t frozen_drops;       /* segments (and ICMP errors) dropped for a frozen connection */
	/* zero-copy send (utcp_send_ref): references queued and released (equal once every
	 * connection is gone), and the bytes they carried */
	uint64_t send_refs, send_refs_released, send_ref_bytes;
};
const struct utcp_stats *utcp_get_stats(const struct utcp_stack *st);

/* ---- for a socket layer on top of the event API (utcp_sock.h) ---- */

/* The slot of a connection handle: < max_conns, unique among live connections (a table
 * indexed by it needs no hashing; the handle itself still tells stale from live). */
#define UTCP_CID_INDEX(c) ((uint32_t)(c) & 0xfffffu)

/* The configuration the stack runs with (defaults filled in). */
const struct utcp_config *utcp_stack_config(const struct utcp_stack *st);
/* The canonical name of a congestion control module, NULL if there is none by that name. */
const char *utcp_cc_lookup(const char *name);

/* What a socket layer needs to know of a connection, without the cost of utcp_conn_info. */
struct utcp_conn_status {
	enum utcp_state state;
	uint32_t rcv_queued;         /* in-order bytes ready to read (FIONREAD) */
	uint32_t snd_queued;         /* unacknowledged bytes, sent or not, + an unacknowledged FIN (SIOCOUTQ) */
	uint32_t snd_cap;            /* the usable send buffer (the ring, or less: utcp_set_bufcap) */
	bool peer_fin;               /* the peer's FIN arrived: the stream ends after rcv_queued */
	bool fin_queued;             /* our side is shut: FIN queued or sent */
	int error;                   /* once CLOSED: 0 (orderly), -ECONNRESET, -ECONNREFUSED, -ETIMEDOUT */
};
int utcp_conn_status(struct utcp_stack *st, utcp_cid c, struct utcp_conn_status *out);

/* Copies up to len bytes starting off bytes into the unread data, leaving them queued
 * (MSG_PEEK).  0 if there is nothing at off. */
ssize_t utcp_peek(struct utcp_stack *st, utcp_cid c, void *buf, size_t len, size_t off);

/* Keepalive timings of one connection (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT); 0 leaves a
 * value as it is.  New connections start with the stack's.  An armed idle timer restarts
 * from the last segment received, as Linux does. */
int utcp_set_keepalive_timing(struct utcp_stack *st, utcp_cid c, uint64_t idle_us,
			      uint64_t intvl_us, uint32_t probes, uint64_t now_us);

/* Cork (TCP_CORK, MSG_MORE): hold a final partial segment until uncorked, until more data
 * fills it, or for at most UTCP_CORK_MAX_US.  Uncorking sends what is held. */
#define UTCP_CORK_MAX_US 200000u
int utcp_set_cork(struct utcp_stack *st, utcp_cid c, bool on, uint64_t now_us);

/* Per-connection buffer limits below the stack's (SO_SNDBUF, SO_RCVBUF): snd bounds what
 * utcp_send() queues, rcv the receive window advertised.  0: the full buffer. */
int utcp_set_bufcap(struct utcp_stack *st, utcp_cid c, uint32_t snd, uint32_t rcv);

/* UTCP_EV_WAKEUP for this connection at at_us (0 cancels): a timer for the layer above,
 * counted in utcp_next_deadline(). */
int utcp_set_wakeup(struct utcp_stack *st, utcp_cid c, uint64_t at_us);

/* An accept queue above the stack: from now on a passive connection of this listener counts
 * against `limit` from its SYN until utcp_listen_release() (accepted, or gone), not only
 * while half-open; a SYN arriving at the limit is not answered (the peer retries), like
 * Linux with a full accept queue.  The limit may be changed at any time (0: none). */
int utcp_listen_hold(struct utcp_stack *st, int listener, int limit);
int utcp_listen_release(struct utcp_stack *st, int listener);
/* utcp_set_bufcap() for every connection of this listener, from its SYN,ACK on (the window
 * offered there is the one the peer may fill before anything else is said). */
int utcp_listen_bufcap(struct utcp_stack *st, int listener, uint32_t snd, uint32_t rcv);

/* What the stack still owes its peers: bytes queued and not yet acknowledged on every
 * connection, held by the application or not, plus one for each FIN not yet acknowledged.
 * 0 when everything written has arrived (a process about to exit waits for it, as the
 * kernel's orphaned sockets keep sending). */
size_t utcp_stack_unacked(const struct utcp_stack *st);

/* ---- moving connections to another stack (utcp_sock.h's utcp_sk_migrate_*) ----
 * A connection nobody accepted yet is frozen here, described by an image, adopted by a listener
 * of another stack (same address and port: a listen group), then released here without a word.
 * All processes use CLOCK_MONOTONIC for now_us, so timestamps and times carry over as they are. */

/* What another stack needs to carry a connection on (sequence numbers as raw 32-bit values). */
struct utcp_conn_image {
	enum utcp_state state;       /* UTCP_SYN_RECEIVED, UTCP_ESTABLISHED or UTCP_CLOSE_WAIT */
	uint32_t laddr, raddr;
	uint16_t lport, rport;
	uint8_t rmac[6];             /* next hop towards the peer */
	uint32_t iss, irs;
	uint32_t snd_una, snd_nxt, snd_wnd, snd_wl1, snd_wl2;   /* snd_wnd in bytes (scaled) */
	uint32_t rcv_nxt, rcv_adv;   /* rcv_adv: the right edge of the window we advertised */
	bool ws_ok, sack_ok, ts_ok, fin_rcvd;
	uint8_t snd_wscale, rcv_wscale;
	uint16_t mss;                /* payload per segment in use: the peer's, capped by our MTU */
	uint32_t ts_recent, ts_offset, last_ack_sent;
	bool have_rtt;
	uint32_t srtt_us, rttvar_us;
	/* SYN-RECEIVED only: SYN,ACK retransmissions so far, the timer's backoff, whether one
	 * timed out (Karn), and when the first SYN,ACK left (for the handshake's RTT sample) */
	uint8_t syn_retries, backoff;
	bool syn_timed_out;
	uint64_t synack_us;
	uint32_t data_len;           /* in-order bytes received and not read (utcp_peek them) */
};

/* Freezes a connection the application holds (ESTABLISHED or CLOSE-WAIT): from now on it
 * drops every segment silently, sends nothing and runs no timers.  -EINVAL in another state;
 * -EBUSY while it has data queued to send (copied or referenced): an image carries no send
 * data, so such a connection cannot move without losing it. */
int utcp_conn_freeze(struct utcp_stack *st, utcp_cid c);
/* Freezes up to max half-open (SYN-RECEIVED) connections of a listener and hands their
 * handles out (out[0..n)): the caller holds them from now on.  Returns n.  out NULL: only
 * counts them (all of them), freezing nothing. */
int utcp_listen_freeze_half_open(struct utcp_stack *st, int listener, utcp_cid *out, int max);
/* The image of a frozen connection.  -EINVAL if it is not frozen, -EBUSY if data was queued
 * to send since it was frozen. */
int utcp_conn_export(struct utcp_stack *st, utcp_cid c, struct utcp_conn_image *img);
/* Ends a frozen connection and releases the handle: moved, it goes without a word (no RST, no
 * TIME-WAIT; counted in migrated_out); otherwise it is reset as utcp_abort() would. */
int utcp_conn_release(struct utcp_stack *st, utcp_cid c, bool moved, uint64_t now_us);
/* 0 if this stack can carry on the connection an image describes, -EBADMSG if a field is out
 * of range or the numbers do not fit together (window scale > 14, MSS outside [88, mtu - 40],
 * data or advertised window beyond the receive buffer, ...). */
int utcp_conn_image_check(const struct utcp_stack *st, const struct utcp_conn_image *img,
			  uint64_t now_us);
/* Adopts a connection under a listener, with img->data_len bytes of unread data.  Nothing is
 * sent.  An established connection becomes the caller's (*out, as if accepted; the listener's
 * utcp_listen_hold count includes it until utcp_listen_release); a half-open one stays the
 * stack's, its SYN,ACK timer running, and completes with UTCP_EV_ACCEPTED (*out NONE).
 * -EBADMSG (utcp_conn_image_check), -EINVAL if the image's address or port is not the
 * listener's, -ENOBUFS if the listener already counts `limit` connections or no control block
 * is free, -EADDRINUSE if the 4-tuple is in use here (TIME-WAIT included). */
int utcp_conn_adopt(struct utcp_stack *st, int listener, const struct utcp_conn_image *img,
		    const void *data, int limit, uint64_t now_us, utcp_cid *out);

/* strerror-style text for a negative errno returned by this library. */
const char *utcp_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
