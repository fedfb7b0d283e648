/* rack.c — time-based loss detection for the sender: RACK-TLP (RFC 8985) with the
 * reordering window adapting on D-SACK, undo of spurious recoveries from D-SACKs
 * (RFC 2883, RFC 3708) and Proportional Rate Reduction in recovery (RFC 6937).
 *
 * RACK needs the send time of every unacknowledged segment.  Original transmissions go
 * out in sequence order at non-decreasing times, so a short log of (end, time) records
 * -- one per burst, not per segment -- gives the send time of any byte; a record count
 * that would overflow merges neighbours, keeping the later time (a later send time only
 * delays the verdict "lost").  Retransmissions leave out of order and are kept apart,
 * with their own times.  Because send times grow with sequence numbers, the original
 * transmissions that RACK deems lost are a prefix of the outstanding data: the verdict
 * is one boundary, rack_lost_end, which the RFC 6675 scoreboard (tcp_sack.c) uses for
 * IsLost(), pipe and NextSeg().  Times are 32-bit microseconds (wrap: 71 minutes). */
#include <string.h>

#include "stack.h"
#include "tcp/cc.h"
#include "tcp/tcb.h"

static bool t_before(uint32_t a, uint32_t b)
{
	return (int32_t)(a - b) < 0;
}

/* ---- the transmission log ---- */

static struct utcp_xlog *xlog_at(struct utcp_tcb *tcb, unsigned i)
{
	return &tcb->xlog[(tcb->xlog_head + i) % UTCP_XLOG_MAX];
}

static const struct utcp_xlog *xlog_get(const struct utcp_tcb *tcb, unsigned i)
{
	return &tcb->xlog[(tcb->xlog_head + i) % UTCP_XLOG_MAX];
}

/* Full: merge the two neighbours closest in time into one record ending at the second's
 * end with the second's (later) time. */
static void xlog_merge_one(struct utcp_tcb *tcb)
{
	unsigned i, best = 0;
	uint32_t gap = UINT32_MAX;

	for (i = 0; i + 1 < tcb->nxlog; i++) {
		uint32_t g = xlog_get(tcb, i + 1)->t - xlog_get(tcb, i)->t;

		if (g < gap) {
			gap = g;
			best = i;
		}
	}
	for (i = best; i + 1 < tcb->nxlog; i++)
		*xlog_at(tcb, i) = *xlog_at(tcb, i + 1);
	tcb->nxlog--;
}

void tcp_rack_forget(struct utcp_tcb *tcb)
{
	tcb->nxlog = 0;
	tcb->xlog_head = 0;
	tcb->nrxtlog = 0;
	tcb->rack_lost_end = tcb->snd_una;
	tcb->rack_at = 0;
	/* Go-back-N resends everything below SND.MAX: an ACK of that data may be for its
	 * first transmission, so its times must not feed the minimum RTT (Karn again). */
	tcb->xlog_rxt_end = tcb->snd_max;
}

/* A retransmission [l, r) sent at t: its own record.  Records never overlap (the newest
 * send of a byte is the one that counts): older ones are cut back around it. */
static void rxt_record(struct utcp_tcb *tcb, utcp_seq l, utcp_seq r, uint32_t t)
{
	struct utcp_rxtlog *x;
	unsigned i, n = 0;

	for (i = 0; i < tcb->nrxtlog; i++) {
		struct utcp_rxtlog o = tcb->rxtlog[i];

		if (!seq_gt(o.r, tcb->snd_una))
			continue;                       /* acknowledged: forget */
		if (!seq_lt(o.l, r) || !seq_gt(o.r, l)) {
			if (o.t == t && !o.lost && seq_eq(o.r, l)) {
				l = o.l;                /* same burst, adjacent: one record */
				continue;
			}
			tcb->rxtlog[n++] = o;           /* no overlap */
			continue;
		}
		if (seq_lt(o.l, l)) {                   /* the part before survives */
			struct utcp_rxtlog left = o;

			left.r = l;
			tcb->rxtlog[n++] = left;
		}
		if (seq_gt(o.r, r) && n < i + 1) {      /* and the part after, if there is room */
			o.l = r;
			tcb->rxtlog[n++] = o;
		}
	}
	tcb->nrxtlog = (uint8_t)n;
	if (tcb->nrxtlog == UTCP_RXTLOG_MAX) {
		/* full: drop the oldest (its range falls back to its first send) */
		unsigned old = 0;

		for (i = 1; i < tcb->nrxtlog; i++)
			if (t_before(tcb->rxtlog[i].t, tcb->rxtlog[old].t))
				old = i;
		tcb->rxtlog[old] = tcb->rxtlog[--tcb->nrxtlog];
	}
	x = &tcb->rxtlog[tcb->nrxtlog++];
	x->l = l;
	x->r = r;
	x->t = t;
	x->lost = false;
}

static void xlog_record(struct utcp_tcb *tcb, utcp_seq seq, utcp_seq end, uint64_t now)
{
	uint32_t t = (uint32_t)now;
	/* Below SND.MAX a send is a retransmission -- of logged data, or of data the log
	 * forgot (after an RTO) -- and gets a record of its own. */
	utcp_seq orig_from = tcb->nxlog ? xlog_at(tcb, tcb->nxlog - 1u)->end : tcb->snd_max;

	if (seq_lt(seq, orig_from) && seq_lt(seq, tcb->snd_max)) {
		utcp_seq split = seq_min(end, seq_max(orig_from, seq));

		rxt_record(tcb, seq, split, t);
		if (!seq_lt(split, end))
			return;
		seq = split;
	}
	if (!tcb->nxlog) {
		tcb->xlog_base = seq;
	} else {
		struct utcp_xlog *last = xlog_at(tcb, tcb->nxlog - 1u);

		if (last->t == t && seq_eq(seq, last->end)) {
			last->end = end;        /* same burst */
			return;
		}
	}
	if (tcb->nxlog == UTCP_XLOG_MAX)
		xlog_merge_one(tcb);
	xlog_at(tcb, tcb->nxlog)->end = end;
	xlog_at(tcb, tcb->nxlog)->t = t;
	tcb->nxlog++;
}

/* Every data segment (and FIN) sent reports [seq, end) here, at `now`. */
void tcp_rack_sent(struct utcp_tcb *tcb, utcp_seq seq, utcp_seq end, uint64_t now)
{
	if (!seq_lt(seq, end))
		return;
	tcp_prr_sent(tcb, (uint32_t)seq_diff(end, seq));
	if (tcb->undo_valid && seq_lt(seq, tcb->snd_max))
		tcb->undo_retrans += (uint32_t)seq_diff(seq_min(end, tcb->snd_max), seq);
	xlog_record(tcb, seq, end, now);
}

/* SND.UNA moved: forget what it passed. */
static void xlog_prune(struct utcp_tcb *tcb)
{
	unsigned i, n = 0;

	while (tcb->nxlog && seq_le(xlog_get(tcb, 0)->end, tcb->snd_una)) {
		tcb->xlog_base = xlog_get(tcb, 0)->end;
		tcb->xlog_head = (uint8_t)((tcb->xlog_head + 1u) % UTCP_XLOG_MAX);
		tcb->nxlog--;
	}
	for (i = 0; i < tcb->nrxtlog; i++)
		if (seq_gt(tcb->rxtlog[i].r, tcb->snd_una))
			tcb->rxtlog[n++] = tcb->rxtlog[i];
	tcb->nrxtlog = (uint8_t)n;
}

/* Time of the original transmission of byte s (its record's time). */
static bool orig_time(const struct utcp_tcb *tcb, utcp_seq s, uint32_t *t)
{
	unsigned i;

	if (!tcb->nxlog || seq_lt(s, tcb->xlog_base))
		return false;
	for (i = 0; i < tcb->nxlog; i++)
		if (seq_lt(s, xlog_get(tcb, i)->end)) {
			*t = xlog_get(tcb, i)->t;
			return true;
		}
	return false;
}

/* The latest retransmission covering byte s, if any. */
static const struct utcp_rxtlog *rxt_of(const struct utcp_tcb *tcb, utcp_seq s)
{
	const struct utcp_rxtlog *best = NULL;
	unsigned i;

	for (i = 0; i < tcb->nrxtlog; i++)
		if (seq_in(s, tcb->rxtlog[i].l, tcb->rxtlog[i].r) &&
		    (!best || t_before(best->t, tcb->rxtlog[i].t)))
			best = &tcb->rxtlog[i];
	return best;
}

/* ---- RACK (RFC 8985 6) ---- */

/* RFC 8985 6.2 step 4: the reordering window. */
static uint32_t reo_wnd(const struct utcp_tcb *tcb)
{
	uint32_t w, mult = tcb->rack_reo_mult ? tcb->rack_reo_mult : 1;

	if (!tcb->rack_reord && tcb->in_recovery)
		return 0;
	if (!tcb->rack_reord && tcp_sack_bytes(tcb) >= UTCP_DUPTHRESH * tcp_smss(tcb))
		return 0;
	w = mult * (tcb->rack_min_rtt_us / 4);
	return tcb->have_rtt && w > tcb->srtt_us ? tcb->srtt_us : w;
}

/* A segment [.., end) sent at t, delivered now (acknowledged or SACKed): RFC 8985 6.2
 * step 2. */
static void rack_update(struct utcp_tcb *tcb, uint32_t t, utcp_seq end, bool retransmitted,
			uint64_t now)
{
	uint32_t rtt = (uint32_t)now - t;

	/* A retransmitted segment acknowledged sooner than the minimum RTT: the original
	 * was delivered, not this copy -- its time says nothing. */
	if (retransmitted && tcb->rack_min_rtt_us && rtt < tcb->rack_min_rtt_us)
		return;
	if (!retransmitted && (!tcb->rack_min_rtt_us || rtt < tcb->rack_min_rtt_us))
		tcb->rack_min_rtt_us = rtt ? rtt : 1;
	if (!tcb->rack_valid || t_before(tcb->rack_xmit_ts, t)) {
		tcb->rack_xmit_ts = t;
		tcb->rack_end = end;
		tcb->rack_rtt_us = rtt;
		tcb->rack_valid = true;
	} else if (tcb->rack_xmit_ts == t && seq_gt(end, tcb->rack_end)) {
		tcb->rack_end = end;
	}
}

static void deliver(struct utcp_tcb *tcb, utcp_seq last, uint64_t now)
{
	const struct utcp_rxtlog *r = rxt_of(tcb, last);
	uint32_t t;

	if (r)
		rack_update(tcb, r->t, seq_add(last, 1), true, now);
	else if (orig_time(tcb, last, &t))
		rack_update(tcb, t, seq_add(last, 1), seq_lt(last, tcb->xlog_rxt_end), now);
}

/* D-SACK blocks (RFC 2883 4): the first block, below the cumulative ACK or inside the
 * second block.  Returns the duplicate bytes reported. */
static uint32_t dsack_bytes(const struct utcp_tcp_opts *o, utcp_seq ack)
{
	utcp_seq l, r;

	if (!o->nsack)
		return 0;
	l = seq_of(o->sack[0].left);
	r = seq_of(o->sack[0].right);
	if (!seq_lt(l, r))
		return 0;
	if (seq_le(r, ack) ||
	    (o->nsack > 1 && seq_le(seq_of(o->sack[1].left), l) && seq_le(r, seq_of(o->sack[1].right))))
		return (uint32_t)seq_diff(r, l);
	return 0;
}

/* The ACK's news, before SND.UNA moves: what it delivers, cumulatively (up to `ack`) and
 * by SACK, and any D-SACK.  RFC 8985 6.2 steps 1-3 and 7.2 (reo_wnd on D-SACK); D-SACKs of
 * retransmissions count towards undo (RFC 3708). */
uint32_t tcp_rack_on_ack(struct utcp_stack *st, struct utcp_tcb *tcb, const struct utcp_tcp_opts *o,
			 utcp_seq ack, uint64_t now)
{
	uint32_t dup = tcb->sack_ok ? dsack_bytes(o, ack) : 0, rtt = 0, t;
	unsigned b;

	if (seq_gt(ack, tcb->snd_una)) {
		utcp_seq last = seq_add(ack, -1);

		/* an unambiguous RTT sample: the newest acknowledged byte was sent once */
		if (!rxt_of(tcb, last) && seq_ge(last, tcb->xlog_rxt_end) && orig_time(tcb, last, &t))
			rtt = (uint32_t)now - t;
		deliver(tcb, last, now);
	}
	for (b = dup ? 1u : 0u; tcb->sack_ok && b < o->nsack; b++) {
		utcp_seq l = seq_of(o->sack[b].left), r = seq_of(o->sack[b].right);

		if (seq_lt(l, r) && seq_gt(r, tcb->snd_una) && seq_le(r, tcb->snd_max))
			deliver(tcb, seq_add(r, -1), now);
	}
	if (!dup)
		return rtt;
	st->stats.dsacks_in++;
	tcb->dsacks_in++;
	/* 7.2: a D-SACK means reordering, or a spurious retransmission: widen the window,
	 * at most once per round trip; keep it wide for 16 recoveries. */
	tcb->rack_reord = true;
	if (!tcb->rack_dsack_round_on || seq_ge(tcb->snd_una, tcb->rack_dsack_round)) {
		tcb->rack_dsack_round_on = true;
		tcb->rack_dsack_round = tcb->snd_max;
		if (tcb->rack_reo_mult < UTCP_RACK_MAX_REO_MULT)
			tcb->rack_reo_mult = (uint8_t)((tcb->rack_reo_mult ? tcb->rack_reo_mult : 1) + 1);
		tcb->rack_reo_persist = 16;
	}
	/* Undo (RFC 3708 style): every byte retransmitted in the last recovery reported back as
	 * a duplicate means none of it was lost.  Only D-SACKs inside what that recovery
	 * retransmitted count (the network duplicates segments too). */
	if (tcb->undo_valid && tcb->undo_retrans && seq_ge(seq_of(o->sack[0].left), tcb->undo_lo) &&
	    seq_le(seq_of(o->sack[0].right), tcb->rxt_hw)) {
		tcb->undo_retrans = dup >= tcb->undo_retrans ? 0 : tcb->undo_retrans - dup;
		if (!tcb->undo_retrans)
			tcp_rack_undo(st, tcb);
	}
	return rtt;
}

/* Loss found (RACK, or three duplicate ACKs without SACK): enter recovery (RFC 6675 5 /
 * RFC 6582 3.2), remember what undo would restore, and with SACK start PRR. */
void tcp_enter_recovery(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	tcb->prior_cwnd = tcb->cwnd;
	tcb->prior_ssthresh = tcb->ssthresh;
	tcb->undo_armed = tcb->ts_ok;
	tcb->spurious = false;
	tcb->episode_rxts = 0;
	tcb->undo_valid = true;
	tcb->undo_retrans = 0;
	tcb->undo_lo = tcb->snd_una;
	tcb->rxt_tsval = tcp_ts_now(tcb, now);
	tcb->cc->on_loss(tcb, now);
	tcb->recover = tcb->snd_max;
	tcb->high_rxt = tcb->snd_una;
	tcb->rxt_epoch_max = tcb->snd_max;
	tcb->in_recovery = true;
	tcb->tlp_at = 0;
	tcb->fast_retransmits++;
	st->stats.fast_retransmits++;
	if (tcb->sack_ok) {
		tcp_prr_start(tcb);
		st->stats.prr_recoveries++;
	}
}

/* Leaving recovery on a full acknowledgment (RFC 6582 3.2 (3), RFC 6937: cwnd =
 * ssthresh through the module), or undoing it if Eifel proved it spurious. */
void tcp_exit_recovery(struct utcp_stack *st, struct utcp_tcb *tcb)
{
	tcb->in_recovery = false;
	tcb->cc->on_recovery_end(tcb);
	if (tcb->spurious && tcb->episode_rxts == 1)
		tcp_rack_undo(st, tcb);         /* its only retransmission was spurious */
	tcb->spurious = false;
	/* RFC 8985 7.2 step 4: the widened reordering window lasts 16 recoveries */
	if (tcb->rack_reo_persist && !--tcb->rack_reo_persist)
		tcb->rack_reo_mult = 1;
}

/* The recovery that reduced the window was spurious: restore it (RFC 4015's response). */
void tcp_rack_undo(struct utcp_stack *st, struct utcp_tcb *tcb)
{
	if (!tcb->undo_valid)
		return;
	tcb->undo_valid = false;
	if (tcb->cwnd < tcb->prior_cwnd)
		tcb->cwnd = tcb->prior_cwnd;
	if (tcb->ssthresh < tcb->prior_ssthresh)
		tcb->ssthresh = tcb->prior_ssthresh;
	tcb->spurious_recoveries++;
	st->stats.spurious_recoveries++;
	if (tcb->in_recovery) {
		/* Nothing was lost: leave recovery (the scoreboard stays). */
		tcb->in_recovery = false;
		tcb->recover = tcb->snd_una;
	}
}

/* Forget old news after SND.UNA moved. */
void tcp_rack_acked(struct utcp_tcb *tcb)
{
	xlog_prune(tcb);
	if (seq_lt(tcb->rack_lost_end, tcb->snd_una))
		tcb->rack_lost_end = tcb->snd_una;
}

/* RFC 8985 6.2 step 5: which outstanding segments are lost now, and when to look again.
 * Sets rack_lost_end (original transmissions lost below it) and the reordering timer;
 * returns true if a retransmission (below HighRxt) was itself found lost, in which
 * case the caller starts a new retransmission pass. */
/* Where RFC 6675 would put the loss boundary: DupThresh segments SACKed above it. */
static utcp_seq dupthresh_end(const struct utcp_tcb *tcb)
{
	uint32_t need = UTCP_DUPTHRESH * tcp_smss(tcb), acc = 0;
	int i;

	for (i = tcb->nsb - 1; i >= 0; i--) {
		uint32_t len = (uint32_t)seq_diff(tcb->sb[i].right, tcb->sb[i].left);

		if (acc + len >= need)
			return seq_add(tcb->sb[i].right, -(int64_t)(need - acc));
		acc += len;
	}
	return tcb->snd_una;
}

bool tcp_rack_detect(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	uint32_t thresh, wnd = reo_wnd(tcb), t, n = (uint32_t)now, slow;
	utcp_seq dt_end = dupthresh_end(tcb);
	utcp_seq s = tcb->rack_lost_end, high = tcb->snd_max;
	uint64_t at = 0;
	bool rxt_lost = false;
	unsigned i;

	tcb->rack_at = 0;
	if (!tcb->rack_valid || !tcb->sack_ok || seq_eq(tcb->snd_una, tcb->snd_max))
		return false;
	/* A segment is lost once it was sent before the most recently delivered one and
	 * RACK.rtt + reo_wnd has passed since it was sent. */
	thresh = tcb->rack_rtt_us + wnd;
	/* Once reordering was seen, a segment with fewer than DupThresh segments SACKed
	 * above it is given a longer window (SRTT) before it counts as lost: reordering
	 * that displaces a segment by a frame or two, but by a long time when the sender
	 * pauses between bursts, would otherwise outrun reo_wnd (the test bed's relay
	 * holds a frame back until the next one passes). */
	slow = tcb->rack_rtt_us + (tcb->srtt_us > wnd ? tcb->srtt_us : wnd);
	if (seq_lt(s, tcb->snd_una))
		s = tcb->snd_una;
	/* original transmissions: a prefix */
	for (i = 0; i < tcb->nxlog && seq_lt(s, high); i++) {
		const struct utcp_xlog *x = xlog_get(tcb, i);

		if (seq_le(x->end, s))
			continue;
		if (t_before(tcb->rack_xmit_ts, x->t))
			break;          /* sent after the delivered one: no verdict yet */
		if (x->t == tcb->rack_xmit_ts && !seq_lt(s, tcb->rack_end))
			break;          /* sent with it, but after it */
		if (t_before(n, x->t + thresh)) {
			at = now + (uint32_t)(x->t + thresh - n);
			break;
		}
		if (tcb->rack_reord && seq_gt(x->end, dt_end) && t_before(n, x->t + slow)) {
			if (seq_gt(dt_end, s))
				s = seq_min(dt_end, high);
			at = now + (uint32_t)(x->t + slow - n);
			break;
		}
		if (x->t == tcb->rack_xmit_ts) {
			/* sent together with the delivered one: only what precedes it */
			if (seq_gt(tcb->rack_end, s))
				s = seq_min(seq_min(x->end, tcb->rack_end), high);
			break;
		}
		s = seq_min(x->end, high);
	}
	if (seq_gt(s, tcb->rack_lost_end))
		st->stats.rack_marked_lost +=
			((uint32_t)seq_diff(s, seq_max(tcb->rack_lost_end, tcb->snd_una)) + tcp_smss(tcb) - 1) /
			tcp_smss(tcb);
	tcb->rack_lost_end = s;
	/* retransmissions: lost if sent before the delivered one and old enough (6.2
	 * applies to them as to any segment); only holes still open matter. */
	for (i = 0; i < tcb->nrxtlog; i++) {
			const struct utcp_rxtlog *r = &tcb->rxtlog[i];

		if (r->lost || seq_le(r->r, tcb->snd_una) || tcp_sack_covered(tcb, r->l) ||
		    !t_before(r->t, tcb->rack_xmit_ts))
			continue;
		if (!t_before(n, r->t + thresh)) {
			tcb->rxtlog[i].lost = true;
			rxt_lost = true;
			st->stats.lost_retransmits++;
		} else {
			t = r->t + thresh - n;
			if (!at || now + t < at)
				at = now + t;
		}
	}
	tcb->rack_at = at;
	return rxt_lost;
}

/* ---- PRR (RFC 6937) ---- */

void tcp_prr_start(struct utcp_tcb *tcb)
{
	tcb->prr_delivered = 0;
	tcb->prr_out = 0;
	tcb->prr_recover_fs = tcp_flight(tcb);
	if (!tcb->prr_recover_fs)
		tcb->prr_recover_fs = 1;
}

/* On each ACK in recovery: cwnd = pipe + sndcnt (RFC 6937 3, with PRR-SSRB). */
void tcp_prr_on_ack(struct utcp_tcb *tcb, uint32_t delivered)
{
	uint32_t pipe = tcp_sack_pipe(tcb), smss = tcp_smss(tcb);
	int64_t sndcnt;

	tcb->prr_delivered += delivered;
	if (pipe > tcb->ssthresh) {
		/* proportional: ceil(prr_delivered * ssthresh / RecoverFS) - prr_out */
		sndcnt = (int64_t)(((uint64_t)tcb->prr_delivered * tcb->ssthresh + tcb->prr_recover_fs - 1) /
				   tcb->prr_recover_fs) - tcb->prr_out;
	} else {
		/* slow-start reduction bound: grow back towards ssthresh, at most one SMSS
		 * more than delivered */
		int64_t limit = (int64_t)tcb->prr_delivered - tcb->prr_out;

		if (limit < (int64_t)delivered)
			limit = delivered;
		limit += smss;
		sndcnt = (int64_t)tcb->ssthresh - pipe;
		if (sndcnt > limit)
			sndcnt = limit;
	}
	if (sndcnt < 0)
		sndcnt = 0;
	/* RFC 6937bis: the first retransmission of a recovery always goes out. */
	if (!tcb->prr_out && sndcnt < smss)
		sndcnt = smss;
	tcb->cwnd = pipe + (uint32_t)sndcnt;
}

/* Bytes sent (new or again) while in recovery. */
void tcp_prr_sent(struct utcp_tcb *tcb, uint32_t bytes)
{
	if (tcb->in_recovery)
		tcb->prr_out += bytes;
}

/* ---- what needs retransmission (RFC 6675's IsLost(), pipe and NextSeg() rule 1, with
 * RACK's verdicts): an unSACKed byte whose original transmission is lost and that was
 * not retransmitted since, or whose latest retransmission RACK found lost too. ---- */

static const struct utcp_rxtlog *rxt_covering(const struct utcp_tcb *tcb, utcp_seq s)
{
	return rxt_of(tcb, s);
}

/* The first byte at or after s that needs retransmission, and how far that run goes
 * (without crossing a SACKed range, a retransmission record or the lost boundary). */
static bool next_needy(const struct utcp_tcb *tcb, utcp_seq s, utcp_seq *from, utcp_seq *to)
{
	utcp_seq le = tcb->rack_lost_end, hi = tcb->snd_max;
	int guard;

	/* retransmissions found lost may lie above rack_lost_end */
	for (guard = 0; guard < 2 * (UTCP_SB_MAX + UTCP_RXTLOG_MAX) + 4 && seq_lt(s, hi); guard++) {
		const struct utcp_rxtlog *r;
		utcp_seq end = hi;
		int i;

		for (i = 0; i < tcb->nsb; i++)
			if (seq_in(s, tcb->sb[i].left, tcb->sb[i].right))
				break;
		if (i < tcb->nsb) {
			s = tcb->sb[i].right;           /* SACKed: skip */
			continue;
		}
		for (i = 0; i < tcb->nsb; i++)
			if (seq_gt(tcb->sb[i].left, s)) {
				end = seq_min(end, tcb->sb[i].left);
				break;
			}
		r = rxt_covering(tcb, s);
		if (r) {
			end = seq_min(end, r->r);
			if (r->lost) {
				*from = s;
				*to = end;
				return true;
			}
			s = end;
			continue;
		}
		/* not retransmitted: lost if below the boundary; stop at the next record */
		for (i = 0; i < tcb->nrxtlog; i++)
			if (seq_gt(tcb->rxtlog[i].l, s) && seq_lt(tcb->rxtlog[i].l, end))
				end = tcb->rxtlog[i].l;
		if (seq_lt(s, le)) {
			*from = s;
			*to = seq_min(end, le);
			return true;
		}
		/* above the boundary: only lost retransmissions remain to be found */
		{
			utcp_seq nx = hi;
			bool any = false;

			for (i = 0; i < tcb->nrxtlog; i++)
				if (tcb->rxtlog[i].lost && seq_gt(tcb->rxtlog[i].r, s) &&
				    seq_gt(tcb->rxtlog[i].l, s) && seq_lt(tcb->rxtlog[i].l, nx)) {
					nx = tcb->rxtlog[i].l;
					any = true;
				}
			if (!any)
				return false;
			s = nx;
		}
	}
	return false;
}

bool tcp_rack_is_lost(const struct utcp_tcb *tcb, utcp_seq s)
{
	utcp_seq f, t;

	return next_needy(tcb, s, &f, &t) && seq_eq(f, s);
}

bool tcp_rack_any_lost(const struct utcp_tcb *tcb)
{
	utcp_seq f, t;

	return next_needy(tcb, tcb->snd_una, &f, &t);
}

uint32_t tcp_rack_lost_bytes(const struct utcp_tcb *tcb)
{
	utcp_seq s = tcb->snd_una, f, t;
	uint32_t n = 0;
	int guard;

	for (guard = 0; guard < 2 * (UTCP_SB_MAX + UTCP_RXTLOG_MAX) + 4 && next_needy(tcb, s, &f, &t);
	     guard++) {
		n += (uint32_t)seq_diff(t, f);
		s = t;
	}
	return n;
}

bool tcp_rack_next_lost(const struct utcp_tcb *tcb, uint32_t maxlen, utcp_seq *seq, uint32_t *len)
{
	utcp_seq f, t;

	if (!next_needy(tcb, tcb->snd_una, &f, &t))
		return false;
	*seq = f;
	*len = (uint32_t)seq_diff(t, f);
	if (*len > maxlen)
		*len = maxlen;
	return *len > 0;
}
