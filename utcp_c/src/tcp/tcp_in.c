/* tcp_in.c — TCP input, shaped like RFC 9293 3.10.7 "SEGMENT ARRIVES":
 * tcp_input() finds the control block, then listen_state(), syn_sent_state() or
 * other_states() run the RFC's checks in the RFC's order.  Hardening from RFC 5961
 * (RST/SYN/ACK), PAWS from RFC 7323.  TIME-WAIT is answered by tcp_tw.c. */
#include <string.h>

#include "stack.h"
#include "tcp/cc.h"
#include "tcp/tcb.h"
#include "tcp/tcp_tw.h"

static void drop(struct utcp_stack *st, enum utcp_drop why)
{
	stack_drop(st, why);
}

/* ---- options negotiation on a SYN (RFC 7323, RFC 2018, RFC 9293 3.7.1) ---- */
static void negotiate(struct utcp_stack *st, struct utcp_tcb *tcb, const struct utcp_tcp *th)
{
	const struct utcp_tcp_opts *o = &th->opt;
	uint32_t mss;

	tcb->ws_ok = tcb->ws_ok && o->has_ws;
	if (tcb->ws_ok)
		tcb->snd_wscale = o->ws > UTCP_TCP_MAX_WSCALE ? UTCP_TCP_MAX_WSCALE : o->ws;  /* 2.3 */
	else
		tcb->snd_wscale = tcb->rcv_wscale = 0;
	tcb->sack_ok = tcb->sack_ok && o->sack_ok;
	tcb->ts_ok = tcb->ts_ok && o->has_ts;
	if (tcb->ts_ok)
		tcb->ts_recent = o->tsval;
	tcb->peer_mss = o->has_mss ? o->mss : 536;
	mss = tcb->peer_mss;
	if (mss > (uint32_t)st->cfg.mtu - 40)
		mss = (uint32_t)st->cfg.mtu - 40;
	if (mss < st->cfg.min_mss)
		mss = st->cfg.min_mss;          /* a tiny announced MSS is a resource attack */
	tcb->mss = (uint16_t)mss;
}

/* ---- receive-side reassembly: out-of-order ranges live in the receive ring ---- */
static bool ooo_insert(struct utcp_tcb *tcb, utcp_seq l, utcp_seq r)
{
	int i, j, n = tcb->nooo;

	/* find the first range whose right edge reaches l */
	for (i = 0; i < n && seq_lt(tcb->ooo[i].right, l); i++)
		;
	if (i < n && seq_le(tcb->ooo[i].left, r)) {
		/* overlaps or touches range i: merge, then swallow followers */
		tcb->ooo[i].left = seq_min(tcb->ooo[i].left, l);
		tcb->ooo[i].right = seq_max(tcb->ooo[i].right, r);
		for (j = i + 1; j < n && seq_le(tcb->ooo[j].left, tcb->ooo[i].right); j++)
			tcb->ooo[i].right = seq_max(tcb->ooo[i].right, tcb->ooo[j].right);
		if (j > i + 1) {
			memmove(&tcb->ooo[i + 1], &tcb->ooo[j], (size_t)(n - j) * sizeof(tcb->ooo[0]));
			tcb->nooo = (uint8_t)(n - (j - i - 1));
		}
		tcb->ooo_recent = (int8_t)i;
		return true;
	}
	if (n == UTCP_OOO_MAX)
		return false;
	memmove(&tcb->ooo[i + 1], &tcb->ooo[i], (size_t)(n - i) * sizeof(tcb->ooo[0]));
	tcb->ooo[i].left = l;
	tcb->ooo[i].right = r;
	tcb->nooo++;
	tcb->ooo_recent = (int8_t)i;
	return true;
}

static bool ooo_covered(const struct utcp_tcb *tcb, utcp_seq l, utcp_seq r)
{
	int i;

	for (i = 0; i < tcb->nooo; i++)
		if (seq_le(tcb->ooo[i].left, l) && seq_le(r, tcb->ooo[i].right))
			return true;
	return false;
}

static void set_dsack(struct utcp_tcb *tcb, utcp_seq l, utcp_seq r)
{
	if (!seq_lt(l, r))
		return;
	tcb->dsack = true;
	tcb->dsack_l = l;
	tcb->dsack_r = r;
	tcb->ack_now = true;
}

/* After RCV.NXT advanced: absorb out-of-order ranges it reached. */
static void ooo_advance(struct utcp_tcb *tcb)
{
	while (tcb->nooo && seq_le(tcb->ooo[0].left, tcb->rcv_nxt)) {
		if (seq_gt(tcb->ooo[0].right, tcb->rcv_nxt)) {
			uint32_t more = (uint32_t)seq_diff(tcb->ooo[0].right, tcb->rcv_nxt);

			ring_commit(&tcb->rbuf, more);
			tcb->bytes_received += more;
			tcb->rcv_nxt = tcb->ooo[0].right;
		}
		memmove(&tcb->ooo[0], &tcb->ooo[1], (size_t)(tcb->nooo - 1) * sizeof(tcb->ooo[0]));
		tcb->nooo--;
		if (tcb->ooo_recent > 0)
			tcb->ooo_recent--;
	}
	if (tcb->ooo_recent >= tcb->nooo)
		tcb->ooo_recent = 0;
}

/* ---- CLOSED (no control block, no listener): 3.10.7.1 ---- */
static void closed_state(struct utcp_stack *st, const struct utcp_seg *seg)
{
	drop(st, UTCP_DROP_NO_CONN);
	tcp_reply_rst(st, seg);         /* ignores RSTs itself */
}

/* ---- LISTEN: 3.10.7.2 ---- */
static void listen_state(struct utcp_stack *st, const struct utcp_seg *seg, int li)
{
	const struct utcp_tcp *th = seg->th;
	struct utcp_listener *l = &st->listeners[li];
	struct utcp_tuple t = {seg->ip->dst, seg->ip->src, th->dport, th->sport};
	struct utcp_tcb *tcb;

	/* First, check for a RST: an incoming RST should be ignored. */
	if (th->flags & UTCP_TH_RST) {
		drop(st, UTCP_DROP_TCP_STATE);
		return;
	}
	/* Second, check for an ACK: <SEQ=SEG.ACK><CTL=RST>. */
	if (th->flags & UTCP_TH_ACK) {
		drop(st, UTCP_DROP_TCP_STATE);
		tcp_reply_rst(st, seg);
		return;
	}
	/* Third, check for a SYN. */
	if (!(th->flags & UTCP_TH_SYN)) {
		drop(st, UTCP_DROP_TCP_STATE);  /* fourth: other control or text: drop */
		return;
	}
	if (l->pending >= l->backlog) {
		drop(st, UTCP_DROP_BACKLOG);
		return;
	}
	tcb = tcp_tcb_new(st, &t, seg->now);
	if (!tcb) {
		drop(st, UTCP_DROP_TABLE_FULL);
		return;
	}
	memcpy(tcb->rmac, seg->eth->src, 6);    /* next hop learned from the peer's frame */
	tcb->passive = true;
	tcb->listener = li;
	l->pending++;
	st->stats.passive_opens++;
	negotiate(st, tcb, th);
	/* RCV.NXT = SEG.SEQ+1, IRS = SEG.SEQ; text in the SYN is not queued (the peer will
	 * send it again once our SYN,ACK acknowledges only its SYN). */
	tcb->irs = seg->seq;
	tcb->rcv_nxt = seq_add(seg->seq, 1);
	tcb->rcv_adv = tcb->rcv_nxt;
	tcb->snd_wnd = seg->wnd;                /* never scaled in a SYN (RFC 7323 2.2) */
	tcb->max_snd_wnd = tcb->snd_wnd;
	tcb->snd_wl1 = seg->seq;
	tcb->snd_wl2 = tcb->iss;
	/* <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>, SND.NXT = ISS+1, SND.UNA = ISS */
	tcp_set_state(st, tcb, UTCP_SYN_RECEIVED);
	tcp_send_syn(st, tcb, seg->now);
	tcb->rtt_start = seg->now;
	tcp_arm_rtx(st, tcb, seg->now);
	tcp_timer_update(st, tcb);
}

/* ---- SYN-SENT: 3.10.7.3 ---- */
static void syn_sent_state(struct utcp_stack *st, struct utcp_tcb *tcb, const struct utcp_seg *seg)
{
	const struct utcp_tcp *th = seg->th;
	bool ack_ok = false;

	/* First, check the ACK bit. */
	if (th->flags & UTCP_TH_ACK) {
		/* SEG.ACK =< ISS or SEG.ACK > SND.NXT: <SEQ=SEG.ACK><CTL=RST> unless RST. */
		if (seq_le(seg->ack, tcb->iss) || seq_gt(seg->ack, tcb->snd_nxt)) {
			drop(st, UTCP_DROP_TCP_STATE);
			tcp_reply_rst(st, seg);
			return;
		}
		ack_ok = seq_le(tcb->snd_una, seg->ack) && seq_le(seg->ack, tcb->snd_nxt);
	}
	/* Second, check the RST bit: only with an acceptable ACK (RFC 5961 3.2 likewise). */
	if (th->flags & UTCP_TH_RST) {
		st->stats.rst_in++;
		if (ack_ok)
			tcp_tcb_closed(st, tcb, -ECONNREFUSED);     /* "connection reset" */
		else
			drop(st, UTCP_DROP_TCP_STATE);
		return;
	}
	/* Fourth, check the SYN bit. */
	if (!(th->flags & UTCP_TH_SYN)) {
		drop(st, UTCP_DROP_TCP_STATE);  /* fifth: neither SYN nor RST */
		return;
	}
	negotiate(st, tcb, th);
	tcb->irs = seg->seq;
	tcb->rcv_nxt = seq_add(seg->seq, 1);
	tcb->rcv_adv = tcb->rcv_nxt;
	tcb->snd_wnd = seg->wnd;                /* unscaled in a SYN */
	tcb->max_snd_wnd = tcb->snd_wnd;
	tcb->snd_wl1 = seg->seq;
	tcb->snd_wl2 = seg->ack;
	if (ack_ok) {
		tcb->snd_una = seg->ack;
		/* Karn: the SYN's RTT counts only if it was not retransmitted. */
		if (!tcb->syn_timed_out)
			tcp_rtt_sample(tcb, (uint32_t)(seg->now - tcb->rtt_start), &st->cfg);
	}
	if (seq_gt(tcb->snd_una, tcb->iss)) {
		/* Our SYN is acknowledged: ESTABLISHED, <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>. */
		tcp_established(st, tcb, seg->now);
		tcb->ack_now = true;
		tcp_output(st, tcb, seg->now);
		return;
	}
	/* Simultaneous open: SYN-RECEIVED, <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK>. */
	tcp_set_state(st, tcb, UTCP_SYN_RECEIVED);
	tcp_send_syn(st, tcb, seg->now);
	tcp_arm_rtx(st, tcb, seg->now);
	tcp_timer_update(st, tcb);
}

/* ---- the fifth check's ACK processing for synchronized states ---- */
static void process_ack(struct utcp_stack *st, struct utcp_tcb *tcb, const struct utcp_seg *seg,
			uint32_t dlen)
{
	uint32_t seg_wnd = seg->wnd << (tcb->ws_ok ? tcb->snd_wscale : 0);
	bool is_dup = false;
	uint32_t newly_sacked = 0, sacked_before = tcb->sack_ok ? tcp_sack_bytes(tcb) : 0, rtt_us;
	int64_t delivered = 0;

	/* RACK (RFC 8985 6.2 steps 1-3): what this ACK delivered and when it was sent, while
	 * the send times are still known; D-SACKs widen the reordering window or undo. */
	rtt_us = tcp_rack_on_ack(st, tcb, &seg->th->opt, seg->ack, seg->now);
	if (tcb->sack_ok && seg->th->opt.nsack)
		newly_sacked = tcp_sack_update(tcb, &seg->th->opt);

	if (seq_lt(tcb->snd_una, seg->ack) && seq_le(seg->ack, tcb->snd_max)) {
		uint32_t acked = (uint32_t)seq_diff(seg->ack, tcb->snd_una);
		uint32_t qlen = tcp_sndq_len(tcb), data_acked = acked < qlen ? acked : qlen;

		/* Reordering (the idea of Linux's tcp_check_sack_reordering): the hole at
		 * SND.UNA was filled by its original transmission, never retransmitted, while
		 * later data had been SACKed: that much data overtook it.  Raise DupThresh so
		 * reordering this deep is not taken for loss again. */
		if (tcb->sack_ok && tcb->nsb && seq_gt(tcb->sb[0].left, tcb->snd_una) &&
		    seq_ge(tcb->snd_una, tcb->rxt_hw)) {
			uint32_t dist = (uint32_t)seq_diff(tcb->sb[tcb->nsb - 1].right, tcb->snd_una) /
					tcp_smss(tcb);

			tcb->rack_reord = true;        /* RACK.reord (RFC 8985 6.2 step 3) */
			st->stats.reordering_seen++;
			if (dist + 1 > tcb->reordering)
				tcb->reordering = (uint8_t)(dist + 1 < UTCP_MAX_REORDERING
								 ? dist + 1 : UTCP_MAX_REORDERING);
		}
		tcp_sndq_consume(st, tcb, data_acked);      /* releases references completed */
		tcb->snd_una = seg->ack;
		if (seq_lt(tcb->snd_nxt, tcb->snd_una))
			tcb->snd_nxt = tcb->snd_una;
		if (tcb->fin_sent && seq_gt(tcb->snd_una, tcb->fin_seq))
			tcb->fin_acked = true;
		tcp_sack_prune(tcb);
		tcp_rack_acked(tcb);
		if (seq_lt(tcb->high_rxt, tcb->snd_una))
			tcb->high_rxt = tcb->snd_una;
		tcb->bytes_acked += data_acked;
		tcb->retries = 0;
		/* RFC 6937: DeliveredData = change in SND.UNA + change in SACKed bytes. */
		delivered = (int64_t)acked + (int64_t)(tcb->sack_ok ? tcp_sack_bytes(tcb) : 0) -
			    (int64_t)sacked_before;
		/* RTT: with timestamps every ACK that advances SND.UNA gives a sample, even for
		 * retransmitted data (RFC 7323 4, RTTM: Karn's rule is not needed); exact to the
		 * microsecond from the send-time log when the newest acknowledged byte was sent
		 * once, else from TSecr (1 ms clock).  Without timestamps: one timed segment per
		 * RTT, none from retransmitted data (Karn, RFC 6298 3). */
		if (tcb->ts_ok && seg->th->opt.has_ts && seg->th->opt.tsecr &&
		    tcp_ts_now(tcb, seg->now) - seg->th->opt.tsecr < 60000u) {
			if (!rtt_us)
				rtt_us = (tcp_ts_now(tcb, seg->now) - seg->th->opt.tsecr) * 1000u;
			tcb->rtt_timing = false;
			tcp_rtt_sample(tcb, rtt_us, &st->cfg);
			tcb->backoff = 0;
		} else if (tcb->rtt_timing && seq_ge(seg->ack, tcb->rtt_seq)) {
			tcb->rtt_timing = false;
			tcp_rtt_sample(tcb, (uint32_t)(seg->now - tcb->rtt_start), &st->cfg);
			tcb->backoff = 0;
		}
		/* Eifel detection (RFC 3522): the first ACK covering the retransmitted segment
		 * echoes a timestamp older than the retransmission: the original arrived, the
		 * "loss" was reordering.  Undo the reduction (RFC 4015's simple response). */
		if (tcb->undo_armed && seg->th->opt.has_ts) {
			tcb->undo_armed = false;
			tcb->spurious = (int32_t)(seg->th->opt.tsecr - tcb->rxt_tsval) < 0;
		}
		if (tcb->in_recovery) {
			if (seq_ge(seg->ack, tcb->recover)) {
				/* RFC 6582 3.2 (3): full acknowledgment (undone at once if Eifel
				 * proved its only retransmission spurious, RFC 4015) */
				tcp_exit_recovery(st, tcb);
			} else if (tcb->sack_ok) {
				/* RFC 6675 5 (C): a partial ACK; PRR below sets cwnd, and
				 * tcp_output() sends lost holes first (NextSeg rule 1). */
			} else {
				/* RFC 6582 3.2 (4): partial acknowledgment — retransmit the first
				 * unacknowledged segment, deflate by the amount acked, add back one
				 * SMSS if that was at least one SMSS. */
				tcp_retransmit_first(st, tcb, seg->now);
				tcb->cwnd = tcb->cwnd > acked ? tcb->cwnd - acked : tcp_smss(tcb);
				if (acked >= tcp_smss(tcb))
					tcb->cwnd += tcp_smss(tcb);
			}
		} else {
			tcb->cc->on_ack(tcb, acked, seg->now);
		}
		tcb->dupacks = 0;
		tcb->tlp_sent = false;
		/* RFC 6298 (5.2)/(5.3) */
		if (seq_eq(tcb->snd_una, tcb->snd_max)) {
			if (!tcb->persist)
				tcb->rtx_at = 0;
			tcb->tlp_at = 0;
		} else {
			tcb->persist = false;
			tcp_arm_rtx(st, tcb, seg->now);
			tcp_arm_tlp(st, tcb, seg->now);
		}
		if (data_acked && !tcb->fin_queued)
			tcp_event(st, tcb, UTCP_EV_WRITABLE);
	} else if (seq_eq(seg->ack, tcb->snd_una) && seq_lt(tcb->snd_una, tcb->snd_max)) {
		if (tcb->sack_ok)
			/* RFC 6675 2 "DupAck": SACKs octets not SACKed before (with or
			 * without data, whatever the window) */
			is_dup = newly_sacked > 0;
		else
			/* RFC 5681 2 "DUPLICATE ACKNOWLEDGMENT" */
			is_dup = dlen == 0 && !(seg->th->flags & (UTCP_TH_SYN | UTCP_TH_FIN)) &&
				 seg_wnd == tcb->snd_wnd;
	}
	if (is_dup) {
		st->stats.dupacks_in++;
		tcb->dupacks++;
	}
	if (tcb->sack_ok) {
		/* RACK (RFC 8985 6.2 step 5): segments sent before the most recently delivered
		 * one, longer ago than RACK.rtt + reo_wnd, are lost -- retransmissions too
		 * (NextSeg then sends them again).  The first loss starts a recovery, unless
		 * one still covers this data (RFC 6582 3.2 (1): our recover is SND.MAX). */
		tcp_rack_detect(st, tcb, seg->now);
		if (!tcb->in_recovery && seq_ge(seg->ack, tcb->recover) &&
		    seq_lt(tcb->snd_una, tcb->snd_max) && tcp_rack_any_lost(tcb))
			tcp_enter_recovery(st, tcb, seg->now);
		/* PRR (RFC 6937): what may be sent in recovery follows what was delivered. */
		if (tcb->in_recovery)
			tcp_prr_on_ack(tcb, delivered > 0 ? (uint32_t)delivered : 0);
	} else if (!tcb->in_recovery && seq_ge(seg->ack, tcb->recover) &&
		   seq_lt(tcb->snd_una, tcb->snd_max) && is_dup && tcb->dupacks == UTCP_DUPTHRESH) {
		/* Three duplicate ACKs (RFC 5681 3.2), RFC 6582 recovery. */
		tcp_enter_recovery(st, tcb, seg->now);
		tcp_retransmit_first(st, tcb, seg->now);   /* the first segment, always */
	} else if (is_dup && tcb->dupacks > UTCP_DUPTHRESH && tcb->in_recovery) {
		tcb->cwnd += tcp_smss(tcb);                  /* RFC 6582 3.2 (3): inflate */
	}
	/* Window update, "if SND.UNA =< SEG.ACK =< SND.NXT": when SND.WL1 < SEG.SEQ or
	 * (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK). */
	if (seq_le(tcb->snd_una, seg->ack) &&
	    (seq_lt(tcb->snd_wl1, seg->seq) ||
	     (seq_eq(tcb->snd_wl1, seg->seq) && seq_le(tcb->snd_wl2, seg->ack)))) {
		bool opened = tcb->snd_wnd == 0 && seg_wnd > 0;

		tcb->snd_wnd = seg_wnd;
		tcb->snd_wl1 = seg->seq;
		tcb->snd_wl2 = seg->ack;
		if (seg_wnd > tcb->max_snd_wnd)
			tcb->max_snd_wnd = seg_wnd;
		if (opened && tcb->persist) {
			/* persist exit: the window opened */
			tcb->persist = false;
			tcb->rtx_at = 0;
			tcb->backoff = 0;
		}
	}
}

/* A pure ACK overtaken by a later one fails PAWS but carries nothing old that could
 * hurt: no data, SEQ = RCV.NXT, an ACK not beyond SND.UNA (Linux's
 * tcp_disordered_ack() reasoning).  Let it through instead of answering it. */
static bool disordered_ack(const struct utcp_tcb *tcb, const struct utcp_seg *seg)
{
	return seg->len == 0 && (seg->th->flags & UTCP_TH_ACK) && seq_eq(seg->seq, tcb->rcv_nxt) &&
	       seq_le(seg->ack, tcb->snd_una);
}

/* ---- all other states: 3.10.7.4 ---- */
static void other_states(struct utcp_stack *st, struct utcp_tcb *tcb, const struct utcp_seg *seg)
{
	const struct utcp_tcp *th = seg->th;
	uint64_t now = seg->now;
	uint32_t wnd = ring_free(&tcb->rbuf);
	const uint8_t *data = th->payload;
	uint32_t dlen = (uint32_t)th->payload_len;
	utcp_seq dseq = seq_add(seg->seq, (th->flags & UTCP_TH_SYN) ? 1 : 0);
	bool fin = (th->flags & UTCP_TH_FIN) != 0, acceptable;

	/* RFC 7323 5.3 PAWS, before the sequence number check: R1) a segment whose TSval
	 * is older than TS.Recent is not acceptable (RSTs are exempt, 5.2 of RFC 7323). */
	if (tcb->ts_ok && th->opt.has_ts && !(th->flags & UTCP_TH_RST) &&
	    (int32_t)(th->opt.tsval - tcb->ts_recent) < 0 && !disordered_ack(tcb, seg)) {
		drop(st, UTCP_DROP_PAWS);
		tcp_send_ack(st, tcb, now);
		return;
	}

	/* First, check the sequence number (the four cases of the acceptance test). */
	if (seg->len == 0)
		acceptable = wnd == 0 ? seq_eq(seg->seq, tcb->rcv_nxt)
				      : seq_in(seg->seq, tcb->rcv_nxt, seq_add(tcb->rcv_nxt, wnd));
	else
		acceptable = wnd != 0 &&
			     (seq_in(seg->seq, tcb->rcv_nxt, seq_add(tcb->rcv_nxt, wnd)) ||
			      seq_in(seq_add(seg->seq, seg->len - 1), tcb->rcv_nxt,
				     seq_add(tcb->rcv_nxt, wnd)));
	/* "If the RCV.WND is zero, no segments will be acceptable, but special allowance
	 * should be made to accept valid ACKs, URGs, and RSTs": a segment at RCV.NXT with
	 * text we cannot take still has its ACK processed; the text is trimmed away below
	 * and an ACK restating the zero window goes back. */
	if (!acceptable && wnd == 0 && seq_eq(seg->seq, tcb->rcv_nxt) &&
	    (th->flags & (UTCP_TH_ACK | UTCP_TH_RST | UTCP_TH_SYN)) == UTCP_TH_ACK) {
		acceptable = true;
		tcb->ack_now = true;
	}
	if (!acceptable) {
		drop(st, UTCP_DROP_OUT_OF_WINDOW);
		if (th->flags & UTCP_TH_RST)
			return;                 /* RFC 5961 3.2: out-of-window RST: silently drop */
		if (tcb->state == UTCP_SYN_RECEIVED && (th->flags & UTCP_TH_SYN) &&
		    seq_eq(seg->seq, tcb->irs)) {
			memcpy(tcb->rmac, seg->eth->src, 6);
			tcp_send_syn(st, tcb, now);     /* the peer lost our SYN,ACK */
			return;
		}
		/* RFC 2883: an old duplicate's data is reported as a D-SACK. */
		if (tcb->sack_ok && th->payload_len && seq_lt(seg->seq, tcb->rcv_nxt))
			set_dsack(tcb, dseq, seq_add(dseq, (int64_t)th->payload_len));
		/* TIME-WAIT: a retransmitted FIN is acknowledged and restarts the 2 MSL. */
		if (tcb->state == UTCP_TIME_WAIT && fin) {
			tcb->tw_at = now + st->cfg.time_wait_us;
			tcp_timer_update(st, tcb);
		}
		tcp_send_ack(st, tcb, now);     /* <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> */
		return;
	}
	/* Passive opens learned the next hop from the SYN's frame; keep following the
	 * peer's frames (a changed gateway, or a damaged first frame). */
	if (tcb->passive && memcmp(tcb->rmac, seg->eth->src, 6) != 0)
		memcpy(tcb->rmac, seg->eth->src, 6);
	/* RFC 7323 4.3: remember the timestamp of a segment covering Last.ACK.sent. */
	if (tcb->ts_ok && th->opt.has_ts && (int32_t)(th->opt.tsval - tcb->ts_recent) >= 0 &&
	    seq_le(seg->seq, tcb->last_ack_sent))
		tcb->ts_recent = th->opt.tsval;
	/* Trim to the window: bytes before RCV.NXT, and whatever lies past its right edge
	 * (a FIN past the edge is not processed). */
	if (seq_lt(dseq, tcb->rcv_nxt)) {
		uint32_t skip = (uint32_t)seq_diff(tcb->rcv_nxt, dseq);

		if (tcb->sack_ok && dlen)       /* partly a duplicate: D-SACK that part */
			set_dsack(tcb, dseq, seq_add(dseq, skip < dlen ? skip : dlen));

		if (skip >= dlen) {
			if (fin && seq_lt(seq_add(dseq, dlen), tcb->rcv_nxt))
				fin = false;    /* an old FIN */
			skip = dlen;
		}
		data += skip;
		dlen -= skip;
		dseq = seq_add(dseq, skip);
	}
	{
		utcp_seq edge = seq_add(tcb->rcv_nxt, wnd);

		if (seq_gt(seq_add(dseq, dlen), edge)) {
			dlen = (uint32_t)seq_diff(edge, dseq);
			fin = false;
		}
	}

	/* Second, check the RST bit (RFC 5961 3.2): exact match resets, anything else in
	 * the window gets a challenge ACK. */
	if (th->flags & UTCP_TH_RST) {
		st->stats.rst_in++;
		if (!seq_eq(seg->seq, tcb->rcv_nxt)) {
			tcp_send_challenge_ack(st, tcb, now);
			return;
		}
		switch (tcb->state) {
		case UTCP_SYN_RECEIVED:
			/* passive: back to LISTEN (the listener never saw it); active: refused */
			tcp_tcb_closed(st, tcb, tcb->passive ? 0 : -ECONNREFUSED);
			return;
		case UTCP_TIME_WAIT:
			/* RFC 1337: do not let a RST assassinate TIME-WAIT. */
			drop(st, UTCP_DROP_TCP_STATE);
			return;
		case UTCP_CLOSING:
		case UTCP_LAST_ACK:
			tcp_tcb_closed(st, tcb, 0);
			return;
		case UTCP_CLOSE_WAIT:
			/* The peer had finished sending: as Linux, the error is EPIPE, not a reset
			 * of data the application could still have been reading. */
			tcp_tcb_closed(st, tcb, -EPIPE);
			return;
		default:
			tcp_tcb_closed(st, tcb, -ECONNRESET);
			return;
		}
	}

	/* Third: security/compartment — not used. */

	/* Fourth, check the SYN bit (RFC 5961 4.2): a SYN in a synchronized state, in
	 * window or not, gets a challenge ACK. */
	if (th->flags & UTCP_TH_SYN) {
		if (tcb->state == UTCP_SYN_RECEIVED && tcb->passive) {
			/* RFC 9293: a passive SYN-RECEIVED returns to LISTEN. */
			tcp_tcb_closed(st, tcb, 0);
			return;
		}
		tcp_send_challenge_ack(st, tcb, now);
		return;
	}

	/* Fifth, check the ACK field. */
	if (!(th->flags & UTCP_TH_ACK)) {
		drop(st, UTCP_DROP_TCP_STATE);
		return;
	}
	if (tcb->state == UTCP_SYN_RECEIVED) {
		if (!(seq_lt(tcb->snd_una, seg->ack) && seq_le(seg->ack, tcb->snd_max))) {
			drop(st, UTCP_DROP_TCP_STATE);
			tcp_reply_rst(st, seg);     /* <SEQ=SEG.ACK><CTL=RST> */
			return;
		}
		/* ESTABLISHED; SND.WND = SEG.WND, SND.WL1 = SEG.SEQ, SND.WL2 = SEG.ACK */
		tcb->snd_una = seg->ack;
		tcb->snd_wnd = seg->wnd << (tcb->ws_ok ? tcb->snd_wscale : 0);
		tcb->max_snd_wnd = tcb->snd_wnd;
		tcb->snd_wl1 = seg->seq;
		tcb->snd_wl2 = seg->ack;
		if (!tcb->syn_timed_out)
			tcp_rtt_sample(tcb, (uint32_t)(now - tcb->rtt_start), &st->cfg);
		tcp_established(st, tcb, now);
	} else if (seq_gt(seg->ack, tcb->snd_max) ||
		   seq_lt(seg->ack, seq_add(tcb->snd_una, -(int64_t)tcb->max_snd_wnd))) {
		/* RFC 5961 5.2: acceptable only if SND.UNA - MAX.SND.WND =< SEG.ACK =< SND.NXT;
		 * otherwise send an ACK and drop. */
		drop(st, UTCP_DROP_TCP_STATE);
		tcp_send_ack(st, tcb, now);
		return;
	}
	process_ack(st, tcb, seg, dlen);
	switch (tcb->state) {
	case UTCP_FIN_WAIT_1:
		if (tcb->fin_acked) {
			tcp_set_state(st, tcb, UTCP_FIN_WAIT_2);
			if (!tcb->app_owned)
				tcb->tw_at = now + st->cfg.time_wait_us;   /* orphan timeout */
		}
		break;
	case UTCP_CLOSING:
		if (tcb->fin_acked) {
			tcp_enter_time_wait(st, tcb, now);      /* the block may be gone */
			return;
		}
		break;
	case UTCP_LAST_ACK:
		if (tcb->fin_acked) {
			tcp_tcb_closed(st, tcb, 0);
			return;
		}
		break;
	default:
		break;
	}

	/* Sixth, check the URG bit: urgent data is not supported (RFC 6093); the
	 * urgent pointer is ignored and the data delivered inline. */

	/* Seventh, process the segment text. */
	if (dlen && (tcb->state == UTCP_ESTABLISHED || tcb->state == UTCP_FIN_WAIT_1 ||
		     tcb->state == UTCP_FIN_WAIT_2)) {
		if (!tcb->app_owned) {
			/* Nobody will read it: reset (RFC 2525 2.17; Linux does the same). */
			tcp_send_rst(st, tcb, now);
			tcp_tcb_closed(st, tcb, -ECONNRESET);
			return;
		}
		if (seq_eq(dseq, tcb->rcv_nxt)) {
			bool had_ooo = tcb->nooo > 0;

			ring_append(&tcb->rbuf, data, dlen);
			tcb->rcv_nxt = seq_add(tcb->rcv_nxt, dlen);
			tcb->bytes_received += dlen;
			ooo_advance(tcb);
			tcp_event(st, tcb, UTCP_EV_READABLE);
			/* RFC 5681 4.2: ACK at least every second full-sized segment, at once
			 * when a hole is being filled; otherwise within the delayed-ACK bound. */
			tcb->ack_pending_bytes += dlen;
			if (had_ooo || tcb->ack_pending_bytes >= 2u * tcp_smss(tcb))
				tcb->ack_now = true;
			else if (!tcb->delack_at)
				tcb->delack_at = now + st->cfg.delack_us;
		} else {
			/* Out of order: keep it in the ring beyond the in-order bytes, ACK at
			 * once (a duplicate ACK, with SACK blocks if negotiated). */
			uint32_t off = tcb->rbuf.len + (uint32_t)seq_diff(dseq, tcb->rcv_nxt);

			if (tcb->sack_ok && ooo_covered(tcb, dseq, seq_add(dseq, dlen)))
				set_dsack(tcb, dseq, seq_add(dseq, dlen));  /* a duplicate */
			else if (ooo_insert(tcb, dseq, seq_add(dseq, dlen)))
				ring_write_at(&tcb->rbuf, off, data, dlen);
			tcb->ack_now = true;
			fin = false;            /* a FIN past a hole waits for retransmission */
		}
	} else if (dlen) {
		drop(st, UTCP_DROP_TCP_STATE);  /* text after the peer's FIN: ignore */
	}

	/* Eighth, check the FIN bit (only once everything before it has arrived). */
	if (fin && seq_eq(seq_add(dseq, dlen), tcb->rcv_nxt) && !tcb->fin_rcvd) {
		tcb->rcv_nxt = seq_add(tcb->rcv_nxt, 1);
		tcb->fin_rcvd = true;
		tcb->ack_now = true;
		tcp_event(st, tcb, UTCP_EV_READABLE);
		switch (tcb->state) {
		case UTCP_SYN_RECEIVED:
		case UTCP_ESTABLISHED:
			tcp_set_state(st, tcb, UTCP_CLOSE_WAIT);
			break;
		case UTCP_FIN_WAIT_1:
			if (tcb->fin_acked) {
				tcp_enter_time_wait(st, tcb, now);  /* sends the ACK; the block may be gone */
				return;
			}
			tcp_set_state(st, tcb, UTCP_CLOSING);
			break;
		case UTCP_FIN_WAIT_2:
			tcp_enter_time_wait(st, tcb, now);
			return;
		default:
			break;
		}
	} else if (fin && tcb->state == UTCP_TIME_WAIT) {
		tcb->ack_now = true;
		tcb->tw_at = now + st->cfg.time_wait_us;
	}
	tcp_output(st, tcb, now);
}

void tcp_input(struct utcp_stack *st, const struct utcp_seg *seg)
{
	const struct utcp_tcp *th = seg->th;
	struct utcp_tuple t = {seg->ip->dst, seg->ip->src, th->dport, th->sport};
	uint32_t hash = utcp_conntab_hash(&st->ct, &t);
	uint32_t idx = utcp_conntab_lookup_hash(&st->ct, &t, hash);
	struct utcp_tcb *tcb;
	int li;

	st->stats.segs_in++;
	if (idx == UTCP_CT_NONE) {
		/* TIME-WAIT has no control block: its entry answers (tcp_tw.c), unless a SYN
		 * proves itself new (RFC 6191) and goes to the listener. */
		idx = tcp_tw_lookup(st, &t, hash);
		if (idx != UTCP_CT_NONE && tcp_tw_input(st, idx, seg))
			return;
		li = stack_find_listener(st, th->dport);
		if (li < 0)
			closed_state(st, seg);
		else
			listen_state(st, seg, li);
		return;
	}
	tcb = &st->tcbs[idx];
	if (tcb->frozen) {
		/* Being moved to another stack: the peer retransmits to its new owner. */
		st->stats.frozen_drops++;
		return;
	}
	tcb->last_rcv = seg->now;               /* liveness, for keepalive */
	if (tcb->state == UTCP_SYN_SENT)
		syn_sent_state(st, tcb, seg);
	else
		other_states(st, tcb, seg);
}

/* ICMP errors quoting one of our segments (RFC 5927 checks first). */
void tcp_icmp_input(struct utcp_stack *st, const struct utcp_icmp *ic, uint64_t now)
{
	struct utcp_tuple t = {ic->q_src, ic->q_dst, ic->q_sport, ic->q_dport};
	struct utcp_tcb *tcb;
	uint32_t idx;

	if (!ic->has_quote || ic->q_proto != UTCP_IPPROTO_TCP || ic->q_src != st->cfg.local_ip) {
		drop(st, UTCP_DROP_ICMP_UNHANDLED);
		return;
	}
	idx = utcp_conntab_lookup(&st->ct, &t);
	if (idx == UTCP_CT_NONE) {
		drop(st, UTCP_DROP_ICMP_NO_CONN);
		return;
	}
	tcb = &st->tcbs[idx];
	if (tcb->frozen) {
		st->stats.frozen_drops++;
		return;
	}
	/* RFC 5927 4.1: the quoted sequence number must be in SND.UNA..SND.NXT-1. */
	if (!seq_in(seq_of(ic->q_seq), tcb->snd_una, tcb->snd_max)) {
		drop(st, UTCP_DROP_ICMP_STALE);
		return;
	}
	if (ic->type == UTCP_ICMP_DEST_UNREACH && ic->code == UTCP_ICMP_CODE_FRAG_NEEDED) {
		uint32_t mss;

		if (ic->next_hop_mtu < 68 + 40 || ic->next_hop_mtu >= st->cfg.mtu) {
			drop(st, UTCP_DROP_ICMP_UNHANDLED);  /* no usable MTU, or no decrease */
			return;
		}
		mss = (uint32_t)ic->next_hop_mtu - 40;
		if (mss < st->cfg.min_mss)
			mss = st->cfg.min_mss;  /* never below the floor */
		if (mss >= tcb->mss)
			return;
		tcb->mss = (uint16_t)mss;
		if (tcb->cwnd > 0 && tcp_synchronized(tcb->state)) {
			tcp_retransmit_first(st, tcb, now);   /* the big segment was dropped */
			tcp_timer_update(st, tcb);
		}
		return;
	}
	if (ic->type == UTCP_ICMP_DEST_UNREACH && tcb->state == UTCP_SYN_SENT &&
	    (ic->code == UTCP_ICMP_CODE_PORT_UNREACH || ic->code == 2 /* protocol */)) {
		tcp_tcb_closed(st, tcb, -ECONNREFUSED);
		return;
	}
	/* Other errors are soft (RFC 5461): nothing to do for an established connection. */
	drop(st, UTCP_DROP_ICMP_UNHANDLED);
}
