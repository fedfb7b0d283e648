/* tcp_tw.h — TIME-WAIT without a control block.  A connection entering TIME-WAIT leaves
 * a compact entry here (its 4-tuple in a table keyed like the connection table, and the
 * numbers needed to answer segments: SND.NXT, RCV.NXT, TS.Recent, the window) and its
 * control block and buffers go back to the free pool at once.  Entries sit on a list in
 * expiry order (every entry lives time_wait_us from its last restart), so one wheel
 * timer serves the table and the oldest entry is at hand when the table is full. */
#ifndef UTCP_TCP_TW_H
#define UTCP_TCP_TW_H

#include <stddef.h>
#include <stdint.h>

#include "core/conntab.h"
#include "core/seq.h"
#include "core/timer.h"
#include "utcp.h"

struct utcp_stack;
struct utcp_tcb;
struct utcp_seg;

struct utcp_tw {
	utcp_seq snd_nxt;        /* after our FIN (acknowledged) */
	utcp_seq rcv_nxt;        /* after the peer's FIN */
	uint32_t ts_recent;      /* TS.Recent (RFC 7323): PAWS and RFC 6191 */
	uint32_t ts_offset;      /* our TSval = now in ms + ts_offset, as the connection had */
	uint64_t expire;         /* µs */
	uint32_t older, newer;   /* expiry list */
	utcp_cid held;           /* the application still holds the connection's handle */
	uint16_t wnd;            /* window field of our ACKs (scaled as negotiated) */
	uint8_t rcv_wscale;
	bool ts_ok;
	uint8_t rmac[6];
};

struct utcp_twtab {
	struct utcp_conntab ct;  /* 4-tuples; the same hash key as the connection table */
	struct utcp_tw *e;
	uint32_t oldest, newest;
	struct utcp_timer timer; /* armed at the oldest entry's expiry */
};

int tcp_tw_init(struct utcp_twtab *tw, uint32_t cap, const uint8_t key[16]);
void tcp_tw_fini(struct utcp_twtab *tw);
size_t tcp_tw_entry_memory(uint32_t cap);

/* A connection enters TIME-WAIT: its entry is made (the oldest one recycled if the table
 * is full).  held: the handle if the application still holds it, else UTCP_CID_NONE. */
void tcp_tw_add(struct utcp_stack *st, const struct utcp_tcb *tcb, utcp_cid held, uint64_t now);
/* UTCP_CT_NONE if the 4-tuple is not in TIME-WAIT; hash from utcp_conntab_hash(). */
uint32_t tcp_tw_lookup(const struct utcp_stack *st, const struct utcp_tuple *t, uint32_t hash);
/* RFC 9293 3.10.7.4 for TIME-WAIT.  false: the segment is a SYN that may open a new
 * incarnation (RFC 6191) and a listener takes it; the entry is gone and the caller goes
 * on as if there had been none. */
bool tcp_tw_input(struct utcp_stack *st, uint32_t i, const struct utcp_seg *seg);
/* The table's wheel timer fired. */
void tcp_tw_expire(struct utcp_stack *st, uint64_t now);

/* tcp_conn.c: the TIME-WAIT of a connection whose handle the application held is over. */
void tcp_time_wait_over(struct utcp_stack *st, utcp_cid held);

#endif
