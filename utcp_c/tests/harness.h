/* harness.h — packet-trace helpers for TCP tests: a stack whose port captures what
 * it sends, segments from a scripted peer, expectations on the exact segment emitted,
 * and per-state constructors (smoltcp/lwIP style). */
#ifndef UTCP_HARNESS_H
#define UTCP_HARNESS_H

#include <sys/types.h>

#include "testlib.h"
#include "utcp.h"

#define H_LOCAL_IP 0x0a000001u   /* 10.0.0.1: the stack under test */
#define H_PEER_IP 0x0a000002u    /* 10.0.0.2: the scripted peer */
#define H_LPORT 80
#define H_PPORT 40000
#define H_MAXCAP 512

extern const uint8_t h_local_mac[6], h_peer_mac[6];

struct h_frame {
	uint8_t data[2048];
	uint32_t len;
};

struct h {
	struct utcp_config cfg;
	struct utcp_stack *st;
	uint64_t now;
	struct h_frame cap[H_MAXCAP];
	unsigned ncap, rd;               /* captured frames, next to read */
	utcp_cid conn;
	uint32_t iss;                    /* the stack's ISS, learned from its SYN */
	uint32_t peer_seq;               /* the peer's next sequence number */
	int listener;
	struct utcp_tcp_opts syn_opts;   /* options of the peer's SYN / SYN,ACK */
};

struct h_seg {
	struct utcp_tcp th;
	struct utcp_ipv4 ip;
	uint8_t payload[2048];
};

/* Port callbacks with nothing to do (a test port that copies its frames in and out). */
void h_nop_rx_release(void *ctx, struct utcp_frame *f, unsigned n);
int h_nop_kick(void *ctx);

/* Runs a world for `us` of virtual time, event by event: step(world) at every moment something
 * is due (next(world): the earliest; one already past counts as the next microsecond), then
 * once more at the end; *now (the world's clock) follows. */
void h_run_world(uint64_t *now, uint64_t us, void (*step)(void *world),
		 uint64_t (*next)(void *world), void *world);

/* cfg: NULL for the defaults of the tests (no timestamps, no SACK, no window scaling:
 * segments are then fully predictable); otherwise a config to use as is. */
struct h *h_new(const struct utcp_config *cfg);
void h_free(struct h *h);
void h_default_config(struct utcp_config *cfg);

/* Feed one segment from the peer at h->now. */
void h_send_opts(struct h *h, uint8_t flags, uint32_t seq, uint32_t ack, uint16_t wnd,
		 const void *data, size_t len, const struct utcp_tcp_opts *opt);
#define h_send(h, fl, sq, ak, wn, d, l) h_send_opts((h), (fl), (sq), (ak), (wn), (d), (l), NULL)
/* Feed a raw frame. */
void h_send_raw(struct h *h, const uint8_t *frame, size_t len);
/* Advance virtual time to t and run timers. */
void h_advance(struct h *h, uint64_t t);

/* Next emitted segment (false if none). */
bool h_pop(struct h *h, struct h_seg *out);
/* Discards everything emitted so far. */
void h_skip(struct h *h);
struct h_seg h_expect_at(const char *file, int line, struct h *h, uint8_t flags, uint32_t seq,
			 uint32_t ack, size_t len);
void h_expect_none_at(const char *file, int line, struct h *h);
#define EXPECT(h, fl, sq, ak, ln) h_expect_at(__FILE__, __LINE__, (h), (fl), (sq), (ak), (ln))
#define EXPECT_NONE(h) h_expect_none_at(__FILE__, __LINE__, (h))

/* Per-state constructors: the peer is 10.0.0.2:40000 with ISN 1000 (so its next
 * sequence number is 1001), window 65535. */
void h_listen(struct h *h);
void h_syn_received(struct h *h);         /* passive: SYN in, SYN,ACK out */
void h_established_passive(struct h *h);  /* + ACK in, ACCEPTED event */
void h_syn_sent(struct h *h);             /* active: connect, SYN out */
void h_established_active(struct h *h);   /* + SYN,ACK in, ACK out */

/* Pops the next event (fails if none). */
struct utcp_event h_event_at(const char *file, int line, struct h *h);
#define EVENT(h) h_event_at(__FILE__, __LINE__, (h))
void h_no_event_at(const char *file, int line, struct h *h);
#define NO_EVENT(h) h_no_event_at(__FILE__, __LINE__, (h))

/* ---- two stacks with socket tables (utcp_sock.h) over the pair backend, in virtual time ----
 * A (10.0.0.1) the client side, B (10.0.0.2) the server side, 1 ms each way. */
#define H_SW_A_IP H_LOCAL_IP
#define H_SW_B_IP H_PEER_IP
#define H_SW_PORT 80
#define H_SW_MAXN 64

struct utcp_socks;

/* Readiness notifications per socket (h_sw_count_notes). */
struct h_notes {
	unsigned count[H_SW_MAXN];
	unsigned last[H_SW_MAXN];
	unsigned total;
};

struct h_sw {
	struct utcp_pair *pair;
	struct utcp_stack *a, *b;
	struct utcp_socks *sa, *sb;
	struct h_notes na, nb;
	uint64_t now;
};

/* The config of side A or B: 16 connections, 4 listeners, 64 KiB buffers. */
void h_sw_config(struct utcp_config *c, bool side_a);
void h_sw_init(struct h_sw *w, uint64_t seed);
void h_sw_free(struct h_sw *w);
/* Counts each table's notifications in w->na / w->nb. */
void h_sw_count_notes(struct h_sw *w);
/* Runs both stacks for `us` of virtual time, event by event. */
void h_sw_run(struct h_sw *w, uint64_t us);
/* A listener on B's H_SW_PORT; a socket on A connecting to it (not yet connected). */
int h_sw_listen(struct h_sw *w, int backlog);
int h_sw_connect(struct h_sw *w);
/* A connected pair: *c on A, *s accepted on B; returns the listener. */
int h_sw_pair(struct h_sw *w, int *c, int *s);
/* Sends n bytes of 'x' (at most 256 KiB); reads all there is to read, returns how much. */
ssize_t h_sk_send_n(struct utcp_socks *ss, int sk, size_t n, int flags, uint64_t now);
ssize_t h_sk_drain(struct utcp_socks *ss, int sk, uint64_t now);

const char *h_flags_str(uint8_t f, char buf[32]);

#define SYN UTCP_TH_SYN
#define ACK UTCP_TH_ACK
#define FIN UTCP_TH_FIN
#define RST UTCP_TH_RST
#define PSH UTCP_TH_PSH

#endif
