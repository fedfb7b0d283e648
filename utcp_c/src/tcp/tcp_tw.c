/* tcp_tw.c — TIME-WAIT entries (tcp_tw.h): made when a connection enters TIME-WAIT,
 * answering segments for 2 MSL as RFC 9293 3.10.7.4 wants of TIME-WAIT (with RFC 1337,
 * RFC 5961, RFC 7323 PAWS and RFC 6191 reuse), recycled oldest first when the table is
 * full.  The entry's ACK is built here: there is no control block to send it from. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stack.h"
#include "tcp/tcb.h"
#include "tcp/tcp_tw.h"

int tcp_tw_init(struct utcp_twtab *tw, uint32_t cap, const uint8_t key[16])
{
	int rc;

	memset(tw, 0, sizeof(*tw));
	rc = utcp_conntab_init(&tw->ct, cap, key);
	if (rc)
		return rc;
	tw->e = calloc(cap, sizeof(*tw->e));
	if (!tw->e) {
		utcp_conntab_fini(&tw->ct);
		return -ENOMEM;
	}
	tw->oldest = tw->newest = UTCP_CT_NONE;
	return 0;
}

void tcp_tw_fini(struct utcp_twtab *tw)
{
	utcp_conntab_fini(&tw->ct);
	free(tw->e);
	tw->e = NULL;
}

size_t tcp_tw_entry_memory(uint32_t cap)
{
	return utcp_conntab_memory(cap) + (size_t)cap * sizeof(struct utcp_tw);
}

/* ---- the expiry list: oldest first; every entry expires time_wait_us after its last
 * (re)start, so appending keeps the order ---- */

static void list_unlink(struct utcp_twtab *tw, uint32_t i)
{
	struct utcp_tw *w = &tw->e[i];

	if (w->older != UTCP_CT_NONE)
		tw->e[w->older].newer = w->newer;
	else
		tw->oldest = w->newer;
	if (w->newer != UTCP_CT_NONE)
		tw->e[w->newer].older = w->older;
	else
		tw->newest = w->older;
	w->older = w->newer = UTCP_CT_NONE;
}

static void list_append(struct utcp_twtab *tw, uint32_t i)
{
	struct utcp_tw *w = &tw->e[i];

	w->older = tw->newest;
	w->newer = UTCP_CT_NONE;
	if (tw->newest != UTCP_CT_NONE)
		tw->e[tw->newest].newer = i;
	else
		tw->oldest = i;
	tw->newest = i;
}

static void rearm(struct utcp_stack *st)
{
	struct utcp_twtab *tw = &st->tw;

	if (tw->oldest == UTCP_CT_NONE)
		utcp_wheel_cancel(&st->wheel, &tw->timer);
	else
		utcp_wheel_arm(&st->wheel, &tw->timer, tw->e[tw->oldest].expire);
}

/* Starts the 2 MSL of entry i, not on the list. */
static void place(struct utcp_stack *st, uint32_t i, uint64_t now)
{
	struct utcp_twtab *tw = &st->tw;
	uint64_t at = now + st->cfg.time_wait_us;

	/* a caller's clock that stepped back must not break the order */
	if (tw->newest != UTCP_CT_NONE && tw->e[tw->newest].expire > at)
		at = tw->e[tw->newest].expire;
	tw->e[i].expire = at;
	list_append(tw, i);
	if (tw->oldest == i)
		rearm(st);
}

/* Restarts the 2 MSL of entry i. */
static void restart(struct utcp_stack *st, uint32_t i, uint64_t now)
{
	bool was_oldest = st->tw.oldest == i;

	list_unlink(&st->tw, i);
	place(st, i, now);
	if (was_oldest && st->tw.oldest != i)
		rearm(st);
}

static void tw_kill(struct utcp_stack *st, uint32_t i)
{
	struct utcp_twtab *tw = &st->tw;
	utcp_cid held = tw->e[i].held;
	bool was_oldest = tw->oldest == i;

	list_unlink(tw, i);
	utcp_conntab_free(&tw->ct, i);
	st->stats.time_wait_in_use = tw->ct.used;
	if (was_oldest)
		rearm(st);
	if (held != UTCP_CID_NONE)
		tcp_time_wait_over(st, held);
}

void tcp_tw_add(struct utcp_stack *st, const struct utcp_tcb *tcb, utcp_cid held, uint64_t now)
{
	struct utcp_twtab *tw = &st->tw;
	struct utcp_tw *w;
	uint32_t i, field, old;

	/* Never two entries for one 4-tuple (cannot happen: a connection is only made for
	 * a 4-tuple out of TIME-WAIT); kept safe all the same. */
	old = utcp_conntab_lookup(&tw->ct, &tcb->t);
	if (old != UTCP_CT_NONE)
		tw_kill(st, old);
	i = utcp_conntab_alloc(&tw->ct);
	if (i == UTCP_CT_NONE) {
		/* Full: the oldest entry goes (Linux past tcp_max_tw_buckets). */
		st->stats.time_wait_recycled++;
		tw_kill(st, tw->oldest);
		i = utcp_conntab_alloc(&tw->ct);
	}
	utcp_conntab_insert(&tw->ct, i, &tcb->t);
	w = &tw->e[i];
	memset(w, 0, sizeof(*w));
	w->snd_nxt = tcb->snd_max;
	w->rcv_nxt = tcb->rcv_nxt;
	w->ts_ok = tcb->ts_ok;
	w->ts_recent = tcb->ts_recent;
	w->ts_offset = tcb->ts_offset;
	w->rcv_wscale = tcb->ws_ok ? tcb->rcv_wscale : 0;
	field = tcp_rcv_window(tcb) >> w->rcv_wscale;
	w->wnd = (uint16_t)(field > 0xffff ? 0xffff : field);
	memcpy(w->rmac, tcb->rmac, 6);
	w->held = held;
	w->older = w->newer = UTCP_CT_NONE;
	st->stats.time_wait_in_use = tw->ct.used;
	place(st, i, now);
}

uint32_t tcp_tw_lookup(const struct utcp_stack *st, const struct utcp_tuple *t, uint32_t hash)
{
	if (!st->tw.ct.used)
		return UTCP_CT_NONE;
	return utcp_conntab_lookup_hash(&st->tw.ct, t, hash);
}

void tcp_tw_expire(struct utcp_stack *st, uint64_t now)
{
	struct utcp_twtab *tw = &st->tw;

	while (tw->oldest != UTCP_CT_NONE && tw->e[tw->oldest].expire <= now)
		tw_kill(st, tw->oldest);
	rearm(st);
}

/* <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, with timestamps if the connection had them. */
static void send_ack(struct utcp_stack *st, uint32_t i, uint64_t now)
{
	const struct utcp_tw *w = &st->tw.e[i];
	const struct utcp_tuple *t = &st->tw.ct.tuple[i];
	struct utcp_tcp th;

	memset(&th, 0, sizeof(th));
	th.sport = t->lport;
	th.dport = t->rport;
	th.seq = w->snd_nxt.v;
	th.ack = w->rcv_nxt.v;
	th.flags = UTCP_TH_ACK;
	th.wnd = w->wnd;
	if (w->ts_ok) {
		th.opt.has_ts = true;
		th.opt.tsval = (uint32_t)(now / 1000u) + w->ts_offset;   /* tcp_ts_now()'s clock */
		th.opt.tsecr = w->ts_recent;
	}
	st->stats.segs_out++;
	stack_tcp_output(st, t, w->rmac, &th, NULL, 0, now);
}

/* RFC 5961 7: challenge ACKs share the stack's budget per second. */
static void send_challenge_ack(struct utcp_stack *st, uint32_t i, uint64_t now)
{
	if (tcp_challenge_ack_budget(st, now))
		send_ack(st, i, now);
}

/* RFC 6191: a SYN may reuse a 4-tuple in TIME-WAIT if it is provably new: with
 * timestamps, its TSval is above TS.Recent, or equal to it with its SEQ above RCV.NXT (a
 * peer that reuses the port within one tick of its timestamp clock: Linux's 1 ms);
 * without timestamps, its SEQ is above RCV.NXT. */
static bool syn_reopens(const struct utcp_tw *w, const struct utcp_tcp *th)
{
	if ((th->flags & (UTCP_TH_SYN | UTCP_TH_ACK | UTCP_TH_RST)) != UTCP_TH_SYN)
		return false;
	if (w->ts_ok && th->opt.has_ts) {
		int32_t d = (int32_t)(th->opt.tsval - w->ts_recent);
		return d > 0 || (d == 0 && seq_gt(seq_of(th->seq), w->rcv_nxt));
	}
	if (w->ts_ok)
		return false;   /* timestamps were in use: a SYN without them proves nothing */
	return seq_gt(seq_of(th->seq), w->rcv_nxt);
}

bool tcp_tw_input(struct utcp_stack *st, uint32_t i, const struct utcp_seg *seg)
{
	struct utcp_tw *w = &st->tw.e[i];
	const struct utcp_tcp *th = seg->th;
	uint32_t wnd = (uint32_t)w->wnd << w->rcv_wscale;
	bool fin = (th->flags & UTCP_TH_FIN) != 0, acceptable;
	uint64_t now = seg->now;

	if (syn_reopens(w, th) && stack_find_listener(st, th->dport) >= 0) {
		tw_kill(st, i);
		return false;
	}
	/* RFC 7323 5.3 PAWS (RSTs exempt); a pure ACK overtaken by a later one passes, as
	 * with a connection. */
	if (w->ts_ok && th->opt.has_ts && !(th->flags & UTCP_TH_RST) &&
	    (int32_t)(th->opt.tsval - w->ts_recent) < 0 &&
	    !(seg->len == 0 && (th->flags & UTCP_TH_ACK) && seq_eq(seg->seq, w->rcv_nxt) &&
	      seq_le(seg->ack, w->snd_nxt))) {
		stack_drop(st, UTCP_DROP_PAWS);
		send_ack(st, i, now);
		return true;
	}
	/* First, check the sequence number. */
	if (seg->len == 0)
		acceptable = wnd == 0 ? seq_eq(seg->seq, w->rcv_nxt)
				      : seq_in(seg->seq, w->rcv_nxt, seq_add(w->rcv_nxt, wnd));
	else
		acceptable = wnd != 0 &&
			     (seq_in(seg->seq, w->rcv_nxt, seq_add(w->rcv_nxt, wnd)) ||
			      seq_in(seq_add(seg->seq, seg->len - 1), w->rcv_nxt,
				     seq_add(w->rcv_nxt, wnd)));
	if (!acceptable) {
		stack_drop(st, UTCP_DROP_OUT_OF_WINDOW);
		if (th->flags & UTCP_TH_RST)
			return true;    /* RFC 5961 3.2: silently */
		/* A retransmitted FIN (our ACK of it was lost) is acknowledged and restarts
		 * the 2 MSL (RFC 9293 3.10.7.4, eighth). */
		if (fin)
			restart(st, i, now);
		send_ack(st, i, now);
		return true;
	}
	/* RFC 7323 4.3: Last.ACK.sent is RCV.NXT in TIME-WAIT. */
	if (w->ts_ok && th->opt.has_ts && (int32_t)(th->opt.tsval - w->ts_recent) >= 0 &&
	    seq_le(seg->seq, w->rcv_nxt))
		w->ts_recent = th->opt.tsval;
	/* Second, the RST bit: RFC 5961 3.2, and RFC 1337 — no assassination. */
	if (th->flags & UTCP_TH_RST) {
		st->stats.rst_in++;
		if (!seq_eq(seg->seq, w->rcv_nxt))
			send_challenge_ack(st, i, now);
		else
			stack_drop(st, UTCP_DROP_TCP_STATE);
		return true;
	}
	/* Fourth, a SYN in window: RFC 5961 4.2 challenge ACK. */
	if (th->flags & UTCP_TH_SYN) {
		send_challenge_ack(st, i, now);
		return true;
	}
	/* Fifth, the ACK field. */
	if (!(th->flags & UTCP_TH_ACK)) {
		stack_drop(st, UTCP_DROP_TCP_STATE);
		return true;
	}
	if (seq_gt(seg->ack, w->snd_nxt)) {
		stack_drop(st, UTCP_DROP_TCP_STATE);
		send_ack(st, i, now);
		return true;
	}
	/* Seventh: text after the peer's FIN is ignored. */
	if (th->payload_len)
		stack_drop(st, UTCP_DROP_TCP_STATE);
	/* Eighth: a FIN is acknowledged and restarts the 2 MSL. */
	if (fin) {
		restart(st, i, now);
		send_ack(st, i, now);
	}
	return true;
}
