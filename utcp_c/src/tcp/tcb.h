/* tcb.h — the transmission control block (RFC 9293 3.3.1) and the TCP layer's
 * internal interface.  The TCP layer knows nothing of rings or devices: it hands
 * finished segments to the stack's IP output (stack.h). */
#ifndef UTCP_TCB_H
#define UTCP_TCB_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/conntab.h"
#include "core/ring.h"
#include "core/seq.h"
#include "core/timer.h"
#include "utcp.h"

struct utcp_cc_ops;
struct utcp_stack;

#define UTCP_OOO_MAX 8     /* out-of-order ranges kept by a receiver (and reported as SACK) */
#define UTCP_SB_MAX 16     /* SACKed ranges kept by a sender (RFC 6675 scoreboard) */
#define UTCP_DUPTHRESH 3
#define UTCP_XLOG_MAX 64    /* send-time records of original transmissions (rack.c) */
#define UTCP_RXTLOG_MAX 16  /* send-time records of retransmissions */
#define UTCP_RACK_MAX_REO_MULT 16
/* Pieces of one segment's payload from the send queue: each reference in it and the runs of
 * copied bytes around them, one of which may wrap in the ring (+1), and a spare slot that
 * ring_peek may fill with an empty second piece (+1). */
#define UTCP_SEG_PIECES_MAX (2 * UTCP_SEND_REFS_MAX + 3)

struct utcp_ooo {
	utcp_seq left, right;  /* [left, right) */
};

/* A piece of a segment's payload (stack_tcp_output gathers them into the frame). */
struct utcp_piece {
	const uint8_t *p;
	uint32_t len;
};

/* A reference queued by utcp_send_ref (tcp_sndq.c): caller memory the send queue points at
 * instead of holding a copy.  Shrinks from the front as its bytes are acknowledged. */
struct utcp_sndref {
	const uint8_t *p;        /* its first unacknowledged byte */
	uint64_t pos;            /* that byte's position in the stream (bytes queued before it) */
	uint64_t cookie;         /* the caller's, handed back on release */
	uint32_t len;            /* bytes not yet acknowledged */
};

struct utcp_tcb {
	uint32_t idx;
	enum utcp_state state;
	struct utcp_tuple t;
	uint8_t rmac[6];
	bool app_owned;          /* the application holds the handle */
	bool passive;            /* came from a listener */
	int listener;            /* for passive opens */
	bool nodelay;
	bool frozen;             /* being moved to another stack (tcp_mig.c): deaf, mute, no timers */

	/* send sequence space (RFC 9293 3.3.1) */
	utcp_seq iss, snd_una, snd_nxt, snd_max, snd_wl1, snd_wl2;
	utcp_seq snd_sml;        /* end of the last small (< MSS) data segment sent (Nagle) */
	uint32_t snd_wnd, max_snd_wnd;
	uint8_t snd_wscale;
	bool fin_queued;         /* the application closed its side */
	bool fin_sent, fin_acked;
	utcp_seq fin_seq;        /* sequence number of our FIN, fixed once queued */
	/* The send queue (tcp_sndq.c), from the first unacknowledged data byte: copied bytes in
	 * the ring, interleaved in stream order with references to caller memory.  Positions
	 * count the bytes ever queued (64-bit: no wrap); sq_head is that of the first byte. */
	struct utcp_ring sbuf;   /* the copied bytes (utcp_send), in order */
	struct utcp_sndref *refs;   /* nref_slots (cfg.send_refs) slots of the stack's memory */
	uint8_t nref_slots, ref_first, nrefs;   /* a circular FIFO from ref_first */
	uint32_t ref_bytes;      /* unacknowledged bytes held by reference */
	uint64_t sq_head;

	/* receive sequence space */
	utcp_seq irs, rcv_nxt, rcv_adv;   /* rcv_adv: right edge we advertised */
	uint8_t rcv_wscale;
	bool fin_rcvd;
	struct utcp_ring rbuf;   /* in-order unread bytes; out-of-order bytes beyond */
	struct utcp_ooo ooo[UTCP_OOO_MAX];
	uint8_t nooo;
	int8_t ooo_recent;       /* index of the most recently changed range, for SACK */
	bool dsack;              /* report [dsack_l, dsack_r) as a D-SACK (RFC 2883) */
	utcp_seq dsack_l, dsack_r;

	/* negotiated options */
	bool ws_ok, sack_ok, ts_ok;
	uint16_t peer_mss;       /* from the peer's SYN (536 if absent, RFC 9293 3.7.1) */
	uint16_t mss;            /* max payload without options: min(peer_mss, our MTU - 40) */
	uint32_t ts_recent;
	uint32_t ts_offset;
	utcp_seq last_ack_sent;

	/* ACK generation */
	uint32_t ack_pending_bytes;
	bool ack_now;

	/* RTT / RTO (RFC 6298) */
	uint32_t srtt_us, rttvar_us, rto_us;
	bool have_rtt, rtt_timing;
	utcp_seq rtt_seq;
	uint64_t rtt_start;
	uint8_t backoff;
	uint8_t retries;
	bool syn_timed_out;      /* RFC 6298 (5.7) */
	bool persist;            /* rtx timer is the persist timer (RFC 9293 3.8.6.1) */

	/* congestion control */
	const struct utcp_cc_ops *cc;
	uint32_t cwnd, ssthresh;
	uint32_t cwnd_acc;       /* congestion-avoidance byte counter */
	uint64_t cc_priv[8];     /* the congestion control module's own state */
	uint32_t dupacks;
	bool in_recovery;
	utcp_seq recover;        /* RFC 6582 / RFC 6675 RecoveryPoint */
	/* SACK scoreboard (RFC 6675): SACKed ranges above SND.UNA, sorted */
	struct utcp_ooo sb[UTCP_SB_MAX];
	uint8_t nsb;
	utcp_seq high_rxt;       /* HighRxt: highest sequence retransmitted in this recovery */
	utcp_seq rxt_epoch_max;  /* SND.MAX when the current retransmission pass began */
	utcp_seq rxt_hw;         /* highest sequence ever retransmitted (reordering detection) */
	uint8_t reordering;      /* DupThresh in segments, raised when reordering is seen */
	bool tlp_sent;           /* a tail loss probe is out for this flight */
	/* Eifel detection (RFC 3522) with timestamps: undo a spurious fast retransmit */
	bool undo_armed, spurious;
	uint32_t rxt_tsval;      /* TSval of the first retransmission of the recovery */
	uint32_t episode_rxts;   /* segments retransmitted in this recovery */
	uint32_t prior_cwnd, prior_ssthresh;
	/* ---- RACK-TLP (RFC 8985), D-SACK use and undo (RFC 2883, RFC 3708), PRR (RFC 6937),
	 * RTTM (RFC 7323): the sender's loss recovery, rack.c.  Send times of outstanding
	 * data: original transmissions as (end, time) records in sequence order, one per
	 * burst; retransmissions apart.  Times are 32-bit microseconds. ---- */
	struct utcp_xlog {
		utcp_seq end;            /* [previous record's end (or xlog_base), end) */
		uint32_t t;
	} xlog[UTCP_XLOG_MAX];
	utcp_seq xlog_base;
	utcp_seq xlog_rxt_end;       /* below it, "original" records are go-back-N resends */
	uint8_t xlog_head, nxlog;
	uint8_t nrxtlog;
	struct utcp_rxtlog {
		utcp_seq l, r;
		uint32_t t;
		bool lost;               /* RACK found this retransmission lost too */
	} rxtlog[UTCP_RXTLOG_MAX];
	bool rack_valid, rack_reord; /* RACK.xmit_ts known; reordering seen (RACK.reord) */
	bool rack_dsack_round_on;
	uint8_t rack_reo_mult, rack_reo_persist;   /* reo_wnd multiplier; recoveries left */
	uint32_t rack_xmit_ts;       /* send time of the most recently sent delivered segment */
	utcp_seq rack_end;           /* and its end (ties between segments sent together) */
	uint32_t rack_rtt_us, rack_min_rtt_us;
	utcp_seq rack_dsack_round;   /* reo_wnd grows at most once per round trip */
	utcp_seq rack_lost_end;      /* original transmissions below it not SACKed are lost */
	uint64_t rack_at;            /* reordering timer (RFC 8985 6.2 step 5) */
	uint32_t prr_delivered, prr_out, prr_recover_fs;
	bool undo_valid;             /* the last recovery may still be undone by D-SACKs */
	uint32_t undo_retrans;       /* bytes retransmitted in it not yet reported duplicate */
	utcp_seq undo_lo;            /* SND.UNA when it began */
	uint64_t dsacks_in;

	/* timers: one wheel entry armed at the earliest of these deadlines */
	struct utcp_timer timer;
	uint64_t rtx_at, delack_at, tw_at, ka_at, tlp_at;

	/* keepalive */
	bool ka_on;
	uint32_t ka_probes;
	uint64_t last_rcv;       /* time of the last segment from the peer */

	/* events for the application */
	uint32_t ev_pending;
	int ev_error;
	uint32_t ev_next;        /* intrusive FIFO of connections with events */
	bool ev_queued;

	/* ---- per-connection settings of the socket layer (utcp_sock.h, set in tcp_conn.c) ---- */
	bool cork;               /* TCP_CORK / MSG_MORE: hold a final partial segment ... */
	uint64_t cork_at;        /* ... until then at most (UTCP_CORK_MAX_US); 0: nothing held */
	uint32_t snd_cap, rcv_cap;   /* SO_SNDBUF / SO_RCVBUF below the rings' size; 0: none */
	uint64_t ka_idle_us, ka_intvl_us;   /* keepalive timings (the stack's by default) */
	uint32_t ka_cnt;
	uint64_t wake_at;        /* UTCP_EV_WAKEUP for the layer above (utcp_set_wakeup) */

	/* counters */
	uint64_t retransmits, rto_timeouts, fast_retransmits, spurious_recoveries;
	uint64_t bytes_acked, bytes_received;
};

/* ---- the segment under processing, passed explicitly (no per-segment statics) ---- */
struct utcp_seg {
	const struct utcp_eth *eth;
	const struct utcp_ipv4 *ip;
	const struct utcp_tcp *th;
	utcp_seq seq, ack;
	uint32_t len;            /* SEG.LEN: data + SYN + FIN */
	uint32_t wnd;            /* unscaled */
	uint64_t now;
};

/* tcp_sndq.c: the send queue.  Its length is what the sequence space above SND.UNA holds
 * of data (sent or not); offsets are from its head (SND.UNA once established). */
static inline uint32_t tcp_sndq_len(const struct utcp_tcb *tcb)
{
	return tcb->sbuf.len + tcb->ref_bytes;
}
/* What the queue may hold: the ring's size, or less under an SO_SNDBUF cap. */
uint32_t tcp_sndq_limit(const struct utcp_tcb *tcb);
/* Room for more bytes, copied or referenced: both count against the same limit. */
uint32_t tcp_sndq_room(const struct utcp_tcb *tcb);
uint32_t tcp_sndq_append(struct utcp_tcb *tcb, const void *buf, uint32_t n);
uint32_t tcp_sndq_append_ref(struct utcp_stack *st, struct utcp_tcb *tcb, const void *buf,
			     uint32_t n, uint64_t cookie);
/* The bytes [off, off + n) of the queue as pieces (at most UTCP_SEG_PIECES_MAX); returns
 * how many. */
unsigned tcp_sndq_gather(const struct utcp_tcb *tcb, uint32_t off, uint32_t n,
			 struct utcp_piece *pc);
/* The first n bytes were acknowledged: references wholly acknowledged are released. */
void tcp_sndq_consume(struct utcp_stack *st, struct utcp_tcb *tcb, uint32_t n);
/* The connection ends: the queue is emptied and every reference released. */
void tcp_sndq_drop(struct utcp_stack *st, struct utcp_tcb *tcb);

/* tcp_in.c */
void tcp_input(struct utcp_stack *st, const struct utcp_seg *seg);
void tcp_icmp_input(struct utcp_stack *st, const struct utcp_icmp *icmp, uint64_t now);

/* tcp_out.c: every segment leaves through tcp_send_segment() */
int tcp_send_segment(struct utcp_stack *st, struct utcp_tcb *tcb, utcp_seq seq, uint8_t flags,
		     uint32_t data_off, uint32_t data_len, uint64_t now);
void tcp_send_ack(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
void tcp_send_syn(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
void tcp_send_rst(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
void tcp_reply_rst(struct utcp_stack *st, const struct utcp_seg *seg);
void tcp_send_challenge_ack(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
/* RFC 5961 7: may a challenge ACK go out now (the stack's budget per second, counted)? */
bool tcp_challenge_ack_budget(struct utcp_stack *st, uint64_t now);
void tcp_output(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
void tcp_retransmit_first(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
uint32_t tcp_rcv_window(const struct utcp_tcb *tcb);
uint32_t tcp_ts_now(const struct utcp_tcb *tcb, uint64_t now);
uint32_t tcp_flight(const struct utcp_tcb *tcb);

/* tcp_sack.c: sender-side SACK scoreboard and RFC 6675 loss accounting */
/* Returns the number of newly SACKed bytes. */
uint32_t tcp_sack_update(struct utcp_tcb *tcb, const struct utcp_tcp_opts *o);
void tcp_sack_prune(struct utcp_tcb *tcb);
void tcp_sack_clear(struct utcp_tcb *tcb);
uint32_t tcp_sack_bytes(const struct utcp_tcb *tcb);
bool tcp_sack_is_lost(const struct utcp_tcb *tcb, utcp_seq s);
uint32_t tcp_sack_pipe(const struct utcp_tcb *tcb);
bool tcp_sack_next_lost(const struct utcp_tcb *tcb, uint32_t maxlen, utcp_seq *seq, uint32_t *len);
bool tcp_sack_covered(const struct utcp_tcb *tcb, utcp_seq s);
uint32_t tcp_sack_bytes_above(const struct utcp_tcb *tcb, utcp_seq s);
uint32_t tcp_smss(const struct utcp_tcb *tcb);
uint32_t tcp_sack_dupthresh(const struct utcp_tcb *tcb);

/* rack.c: RACK-TLP loss detection, D-SACK use and undo, PRR */
void tcp_rack_sent(struct utcp_tcb *tcb, utcp_seq seq, utcp_seq end, uint64_t now);
/* Returns an RTT sample (µs) from the cumulatively acknowledged data if unambiguous, or 0. */
uint32_t tcp_rack_on_ack(struct utcp_stack *st, struct utcp_tcb *tcb, const struct utcp_tcp_opts *o,
			 utcp_seq ack, uint64_t now);
void tcp_enter_recovery(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
void tcp_exit_recovery(struct utcp_stack *st, struct utcp_tcb *tcb);
void tcp_rack_acked(struct utcp_tcb *tcb);
bool tcp_rack_detect(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
void tcp_rack_undo(struct utcp_stack *st, struct utcp_tcb *tcb);
void tcp_rack_forget(struct utcp_tcb *tcb);
bool tcp_rack_is_lost(const struct utcp_tcb *tcb, utcp_seq s);
bool tcp_rack_any_lost(const struct utcp_tcb *tcb);
uint32_t tcp_rack_lost_bytes(const struct utcp_tcb *tcb);
bool tcp_rack_next_lost(const struct utcp_tcb *tcb, uint32_t maxlen, utcp_seq *seq, uint32_t *len);
void tcp_prr_start(struct utcp_tcb *tcb);
void tcp_prr_on_ack(struct utcp_tcb *tcb, uint32_t delivered);
void tcp_prr_sent(struct utcp_tcb *tcb, uint32_t bytes);

/* tcp_timer.c */
void tcp_timer_update(struct utcp_stack *st, struct utcp_tcb *tcb);
void tcp_timer_fire(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
void tcp_rtt_sample(struct utcp_tcb *tcb, uint32_t rtt_us, const struct utcp_config *cfg);
/* RTO from SRTT and RTTVAR (RFC 6298 (2.3)-(2.5)). */
void tcp_rto_update(struct utcp_tcb *tcb, const struct utcp_config *cfg);
uint32_t tcp_rto_current(const struct utcp_tcb *tcb, const struct utcp_config *cfg);
void tcp_arm_rtx(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
void tcp_arm_tlp(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);

/* tcp_conn.c: control block life cycle and user calls */
struct utcp_tcb *tcp_tcb_new(struct utcp_stack *st, const struct utcp_tuple *t, uint64_t now);
void tcp_tcb_init_options(struct utcp_stack *st, struct utcp_tcb *tcb);
void tcp_set_state(struct utcp_stack *st, struct utcp_tcb *tcb, enum utcp_state s);
/* Moves to CLOSED: unhashed; freed now if the application no longer holds it. */
void tcp_tcb_closed(struct utcp_stack *st, struct utcp_tcb *tcb, int error);
void tcp_event(struct utcp_stack *st, struct utcp_tcb *tcb, uint32_t ev);
void tcp_enter_time_wait(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
void tcp_established(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);
/* Free receive space under the SO_RCVBUF cap: what the window may offer. */
uint32_t tcp_rcv_space(const struct utcp_tcb *tcb);
/* tcp_output() asks before sending a final partial segment: true holds it (cork), and
 * makes sure a timer sends it when the cork's time bound runs out. */
bool tcp_cork_holds(struct utcp_tcb *tcb, uint64_t now);

/* Handles: the application's connection of a handle (NULL if stale or not held), the handle of
 * a connection; a 4-tuple in use by a connection or a TIME-WAIT entry; ABORT (3.10.5). */
struct utcp_tcb *tcp_tcb_of(struct utcp_stack *st, utcp_cid c);
utcp_cid tcp_cid_of(const struct utcp_stack *st, const struct utcp_tcb *tcb);
bool tcp_tuple_taken(const struct utcp_stack *st, const struct utcp_tuple *t);
void tcp_abort(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now);

/* isn.c: RFC 6528 */
uint32_t tcp_isn(const uint8_t key[16], const struct utcp_tuple *t, uint64_t now_us);
uint32_t tcp_ts_offset(const uint8_t key[16], const struct utcp_tuple *t);

/* Every retransmission reports its end here. */
static inline void tcp_note_rxt(struct utcp_tcb *tcb, utcp_seq end)
{
	tcb->rxt_hw = seq_max(tcb->rxt_hw, end);
}

/* Ceiling for the DupThresh raised by reordering detection.  Kept at 3 for now: raising
 * it without RACK's time-based loss detection turned losses into timeouts against
 * Linux (measured over tap: 211 RTOs in 60 s with a ceiling of 64).  Reordering is
 * still detected and counted, and spurious recoveries are undone (Eifel). */
#define UTCP_MAX_REORDERING 3

static inline bool tcp_synchronized(enum utcp_state s)
{
	return s >= UTCP_ESTABLISHED;
}

#endif
