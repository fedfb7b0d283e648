/* stack.h — the stack object tying the layers together: configuration, the
 * connection table and control blocks, listeners, the timer wheel, events, counters
 * and the TX batch towards the port.  The TCP layer sees this struct for its tables
 * and calls stack_tcp_output() to send; only stack.c touches the port. */
#ifndef UTCP_STACK_H
#define UTCP_STACK_H

#include "core/conntab.h"
#include "core/timer.h"
#include "tcp/tcb.h"
#include "tcp/tcp_tw.h"
#include "utcp.h"

struct utcp_listener {
	bool used;
	uint16_t port;
	int backlog;
	int pending;             /* half-open (SYN-RECEIVED) connections */
	bool hold;               /* utcp_listen_hold: pending also counts established ones until
				  * utcp_listen_release (a socket layer's accept queue) */
	uint32_t snd_cap, rcv_cap;   /* utcp_listen_bufcap: for its connections from the SYN on */
};

struct utcp_stack {
	struct utcp_config cfg;
	struct utcp_port port;
	struct utcp_conntab ct;
	struct utcp_tcb *tcbs;
	struct utcp_twtab tw;     /* TIME-WAIT entries (tcp_tw.c) */
	uint8_t *bufmem;
	struct utcp_listener *listeners;
	struct utcp_wheel wheel;
	struct utcp_timer *wheel_slots;
	struct utcp_stats stats;
	uint32_t ev_head, ev_tail;
	uint16_t ip_id;
	uint64_t now;             /* time of the call in progress, for timer callbacks */
	uint16_t next_ephemeral;
	uint64_t chack_window_start;
	uint32_t chack_count;
	/* TX batch: frames in txmem, or lent by the port (tx_lend: the first nlent slots) */
	struct utcp_frame *tx;
	uint8_t *txmem;
	uint32_t ntx, frame_cap;
	bool lend;
	uint32_t nlent;
	/* RX batch */
	struct utcp_frame *rx;
	/* zero-copy send: the references' slots (cfg.send_refs per connection) and where they
	 * go back (utcp_set_ref_release) */
	struct utcp_sndref *sndrefs;
	utcp_ref_release_fn ref_release;
	void *ref_release_ctx;
};

/* Builds Ethernet + IPv4 around a TCP header and a payload given as npc pieces (copied into
 * the frame in order, the checksum summed on the way) and queues the frame. */
int stack_tcp_output(struct utcp_stack *st, const struct utcp_tuple *t, const uint8_t rmac[6],
		     const struct utcp_tcp *th, const struct utcp_piece *pc, unsigned npc,
		     uint64_t now);
static inline void stack_drop(struct utcp_stack *st, enum utcp_drop why)
{
	st->stats.drops[why]++;
}
int stack_find_listener(struct utcp_stack *st, uint16_t port);

#endif
