/* tcp_out.c — TCP output.  Every segment, with or without a control block, is built
 * by emit(): options are chosen in one place (segment_options) and every ACK we send
 * updates the receive-side bookkeeping in one place (after_ack_sent). */
#include <string.h>

#include "stack.h"
#include "tcp/cc.h"
#include "tcp/tcb.h"

static int emit(struct utcp_stack *st, const struct utcp_tuple *t, const uint8_t rmac[6],
		utcp_seq seq, utcp_seq ack, uint8_t flags, uint16_t wnd, const struct utcp_tcp_opts *opt,
		const struct utcp_piece *pc, unsigned npc, uint32_t data_len, uint64_t now)
{
	struct utcp_tcp th;

	memset(&th, 0, sizeof(th));
	th.sport = t->lport;
	th.dport = t->rport;
	th.seq = seq.v;
	th.ack = (flags & UTCP_TH_ACK) ? ack.v : 0;
	th.flags = flags;
	th.wnd = wnd;
	if (opt)
		th.opt = *opt;
	st->stats.segs_out++;
	if (flags & UTCP_TH_RST)
		st->stats.rst_out++;
	if (data_len)
		st->stats.data_segs_out++;
	return stack_tcp_output(st, t, rmac, &th, pc, npc, now);
}

uint32_t tcp_ts_now(const struct utcp_tcb *tcb, uint64_t now)
{
	return (uint32_t)(now / 1000u) + tcb->ts_offset;   /* 1 ms timestamp clock */
}

uint32_t tcp_flight(const struct utcp_tcb *tcb)
{
	return (uint32_t)seq_diff(tcb->snd_max, tcb->snd_una);
}

/* The window to offer: free receive space, with receiver-side silly window syndrome
 * avoidance (RFC 9293 3.8.6.2.2): the right edge only moves by a useful amount. */
uint32_t tcp_rcv_window(const struct utcp_tcb *tcb)
{
	uint32_t space = tcp_rcv_space(tcb), cur = 0, step;

	if (seq_gt(tcb->rcv_adv, tcb->rcv_nxt))
		cur = (uint32_t)seq_diff(tcb->rcv_adv, tcb->rcv_nxt);
	step = tcb->rbuf.cap / 2 < tcb->mss ? tcb->rbuf.cap / 2 : tcb->mss;
	if (space > cur && space - cur < step)
		return cur;
	/* Never shrink the window (3.8.6.2.2) while the ring can hold it: a smaller SO_RCVBUF,
	 * or a connection adopted from another stack with the window that stack offered. */
	if (space < cur && cur <= ring_free(&tcb->rbuf))
		return cur;
	return space;
}

/* Options for a segment: SYNs carry what we offer (active) or accept (passive);
 * later segments carry timestamps and SACK blocks if negotiated. */
static void segment_options(const struct utcp_stack *st, const struct utcp_tcb *tcb, uint8_t flags,
			    uint64_t now, struct utcp_tcp_opts *o)
{
	memset(o, 0, sizeof(*o));
	if (flags & UTCP_TH_SYN) {
		o->has_mss = true;
		o->mss = (uint16_t)(st->cfg.mtu - 40);
		o->has_ws = tcb->ws_ok;
		o->ws = tcb->rcv_wscale;
		o->sack_ok = tcb->sack_ok;
	}
	if (tcb->ts_ok && !(flags & UTCP_TH_RST)) {
		o->has_ts = true;
		o->tsval = tcp_ts_now(tcb, now);
		o->tsecr = (flags & UTCP_TH_ACK) ? tcb->ts_recent : 0;
	}
	if (tcb->sack_ok && (tcb->nooo || tcb->dsack) && !(flags & (UTCP_TH_SYN | UTCP_TH_RST))) {
		/* RFC 2883: a D-SACK block first; then (RFC 2018 4) the block holding the most
		 * recently received segment, then the others. */
		unsigned i, n = 0;

		if (tcb->dsack) {
			o->sack[n].left = tcb->dsack_l.v;
			o->sack[n].right = tcb->dsack_r.v;
			n++;
		}
		if (tcb->nooo) {
			o->sack[n].left = tcb->ooo[tcb->ooo_recent].left.v;
			o->sack[n].right = tcb->ooo[tcb->ooo_recent].right.v;
			n++;
		}
		for (i = 0; i < tcb->nooo && n < UTCP_TCP_MAX_SACK; i++) {
			if ((int)i == tcb->ooo_recent)
				continue;
			o->sack[n].left = tcb->ooo[i].left.v;
			o->sack[n].right = tcb->ooo[i].right.v;
			n++;
		}
		o->nsack = (uint8_t)n;
	}
}

static uint32_t opt_len(const struct utcp_tcp_opts *o)
{
	return (uint32_t)utcp_tcp_options_len(o);       /* counted, not written */
}

/* Payload that fits one segment given the options it will carry (RFC 6691). */
static uint32_t max_payload(const struct utcp_stack *st, const struct utcp_tcb *tcb, uint64_t now)
{
	struct utcp_tcp_opts o;
	uint32_t ol;

	segment_options(st, tcb, UTCP_TH_ACK, now, &o);
	ol = opt_len(&o);
	return tcb->mss > ol ? tcb->mss - ol : 1;
}

static void after_ack_sent(struct utcp_tcb *tcb, uint32_t wnd_adv)
{
	utcp_seq edge = seq_add(tcb->rcv_nxt, wnd_adv);

	tcb->ack_pending_bytes = 0;
	tcb->ack_now = false;
	tcb->delack_at = 0;
	tcb->last_ack_sent = tcb->rcv_nxt;
	if (seq_gt(edge, tcb->rcv_adv))
		tcb->rcv_adv = edge;
}

int tcp_send_segment(struct utcp_stack *st, struct utcp_tcb *tcb, utcp_seq seq, uint8_t flags,
		     uint32_t data_off, uint32_t data_len, uint64_t now)
{
	struct utcp_tcp_opts o;
	struct utcp_piece pc[UTCP_SEG_PIECES_MAX];
	unsigned npc = 0;
	uint32_t wnd = 0, field;
	int rc;

	if (tcb->frozen)
		return 0;               /* being moved: its flow may belong to another stack already */
	segment_options(st, tcb, flags, now, &o);
	if (data_len)           /* copies and references alike: read from where they are */
		npc = tcp_sndq_gather(tcb, data_off, data_len, pc);
	if (!(flags & UTCP_TH_RST))
		wnd = tcp_rcv_window(tcb);
	/* RFC 7323 2.2: the window in a SYN is never scaled. */
	if (flags & UTCP_TH_SYN)
		field = wnd > 0xffff ? 0xffff : wnd;
	else {
		uint8_t sh = tcb->ws_ok ? tcb->rcv_wscale : 0;
		utcp_seq edge;

		field = wnd >> sh;
		if (field > 0xffff)
			field = 0xffff;
		/* Scaling rounds the window down; round it up instead when that alone would move
		 * the right edge we advertised to the left (Linux's tcp_select_window does too),
		 * as long as the ring holds the larger window. */
		edge = seq_add(tcb->rcv_nxt, (int64_t)field << sh);
		if (sh && field < 0xffff && seq_lt(edge, tcb->rcv_adv) &&
		    seq_diff(tcb->rcv_adv, edge) < (1 << sh) &&
		    ((uint64_t)(field + 1) << sh) <= ring_free(&tcb->rbuf))
			field++;
	}
	rc = emit(st, &tcb->t, tcb->rmac, seq, tcb->rcv_nxt, flags, (uint16_t)field, &o, pc, npc,
		  data_len, now);
	/* RACK keeps the send time of every data segment; PRR counts what recovery sends. */
	if (!(flags & (UTCP_TH_SYN | UTCP_TH_RST)) && (data_len || (flags & UTCP_TH_FIN)))
		tcp_rack_sent(tcb, seq, seq_add(seq, data_len + ((flags & UTCP_TH_FIN) ? 1 : 0)), now);
	if (o.nsack && tcb->dsack)
		tcb->dsack = false;             /* reported once */
	if (flags & UTCP_TH_ACK)
		after_ack_sent(tcb, (flags & UTCP_TH_SYN) ? field
					: field << (tcb->ws_ok ? tcb->rcv_wscale : 0));
	return rc;
}

/* The RFC's SND.NXT for control segments is our SND.MAX: after a timeout SND.NXT is
 * pulled back for go-back-N, but the peer may already have everything up to SND.MAX,
 * and a pure ACK or RST below its RCV.NXT would be unacceptable to it. */
void tcp_send_ack(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	/* <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> */
	tcp_send_segment(st, tcb, tcb->snd_max, UTCP_TH_ACK, 0, 0, now);
}

void tcp_send_syn(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	/* SYN-SENT: <SEQ=ISS><CTL=SYN>; SYN-RECEIVED: <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> */
	uint8_t flags = UTCP_TH_SYN | (tcb->state == UTCP_SYN_RECEIVED ? UTCP_TH_ACK : 0);

	tcp_send_segment(st, tcb, tcb->iss, flags, 0, 0, now);
}

void tcp_send_rst(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	/* ABORT (RFC 9293 3.10.5): <SEQ=SND.NXT><CTL=RST> */
	tcp_send_segment(st, tcb, tcb->snd_max, UTCP_TH_RST, 0, 0, now);
}

bool tcp_challenge_ack_budget(struct utcp_stack *st, uint64_t now)
{
	/* RFC 5961 7: a per-stack budget of challenge ACKs per second. */
	if (now - st->chack_window_start >= 1000000u) {
		st->chack_window_start = now;
		st->chack_count = 0;
	}
	if (st->chack_count >= st->cfg.challenge_ack_limit) {
		st->stats.challenge_acks_limited++;
		return false;
	}
	st->chack_count++;
	st->stats.challenge_acks++;
	return true;
}

void tcp_send_challenge_ack(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	if (tcp_challenge_ack_budget(st, now))
		tcp_send_ack(st, tcb, now);
}

void tcp_reply_rst(struct utcp_stack *st, const struct utcp_seg *seg)
{
	/* RFC 9293 3.10.7.1: no control block (or a listener that got an ACK).
	 * If ACK: <SEQ=SEG.ACK><CTL=RST>; else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. */
	struct utcp_tuple t = {seg->ip->dst, seg->ip->src, seg->th->dport, seg->th->sport};

	if (seg->th->flags & UTCP_TH_RST)
		return;                 /* never answer a reset */
	if (seg->th->flags & UTCP_TH_ACK)
		emit(st, &t, seg->eth->src, seg->ack, seq_of(0), UTCP_TH_RST, 0, NULL, NULL, 0, 0,
		     seg->now);
	else
		emit(st, &t, seg->eth->src, seq_of(0), seq_add(seg->seq, seg->len),
		     UTCP_TH_RST | UTCP_TH_ACK, 0, NULL, NULL, 0, 0, seg->now);
}

/* Retransmits the first unacknowledged segment regardless of windows (RTO, fast
 * retransmit, partial ACK, PMTU change). */
void tcp_retransmit_first(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	uint32_t outstanding = tcp_flight(tcb), len = tcp_sndq_len(tcb);
	uint32_t mp = max_payload(st, tcb, now);
	uint8_t flags = UTCP_TH_ACK;
	bool fin;
	utcp_seq end;

	if (len > mp)
		len = mp;
	if (len > outstanding)
		len = outstanding;
	fin = tcb->fin_sent && !tcb->fin_acked && seq_eq(seq_add(tcb->snd_una, len), tcb->fin_seq);
	if (!len && !fin)
		return;
	if (fin)
		flags |= UTCP_TH_FIN;
	if (len && len == tcp_sndq_len(tcb))
		flags |= UTCP_TH_PSH;
	tcp_send_segment(st, tcb, tcb->snd_una, flags, 0, len, now);
	tcb->episode_rxts++;
	tcb->retransmits++;
	st->stats.retransmits++;
	tcb->rtt_timing = false;        /* Karn: no samples from retransmitted data */
	end = seq_add(tcb->snd_una, len + (fin ? 1 : 0));
	if (seq_lt(tcb->snd_nxt, end))
		tcb->snd_nxt = end;
	if (seq_lt(tcb->high_rxt, end))
		tcb->high_rxt = end;
	tcp_note_rxt(tcb, end);
	if (!tcb->rtx_at || tcb->persist) {
		tcb->persist = false;
		tcp_arm_rtx(st, tcb, now);
	}
}

static bool can_send_data(enum utcp_state s)
{
	return s == UTCP_ESTABLISHED || s == UTCP_CLOSE_WAIT || s == UTCP_FIN_WAIT_1 ||
	       s == UTCP_CLOSING || s == UTCP_LAST_ACK;
}

/* Sends what the windows allow: new data, retransmissions after an RTO (go-back-N from
 * SND.NXT), the FIN, then a pending ACK if nothing else carried it. */
void tcp_output(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	bool sent = false, rexmitted = false;
	utcp_seq last_rs = tcb->snd_una;

	while (can_send_data(tcb->state)) {
		uint32_t off = (uint32_t)seq_diff(tcb->snd_nxt, tcb->snd_una), qlen = tcp_sndq_len(tcb);
		uint32_t left = off < qlen ? qlen - off : 0;
		bool fin_pending = tcb->fin_queued && !tcb->fin_acked && seq_le(tcb->snd_nxt, tcb->fin_seq);
		/* Limited transmit (RFC 3042): the first two duplicate ACKs each let one new
		 * segment out beyond cwnd (cwnd itself unchanged). */
		uint32_t lt = (!tcb->in_recovery && tcb->dupacks && tcb->dupacks < UTCP_DUPTHRESH)
				      ? tcb->dupacks * tcp_smss(tcb) : 0;
		uint32_t cw = tcb->cwnd + lt;
		uint32_t wnd = tcb->snd_wnd < cw ? tcb->snd_wnd : cw;
		int32_t usable = seq_diff(seq_add(tcb->snd_una, wnd), tcb->snd_nxt);
		uint32_t mp = max_payload(st, tcb, now), len = left;
		bool fin, retx;
		uint8_t flags = UTCP_TH_ACK;

		if (tcb->in_recovery && tcb->sack_ok) {
			/* RFC 6675 5 (C): send while cwnd - pipe >= 1 SMSS; lost holes first
			 * (NextSeg rule 1), then new data (rule 2). */
			uint32_t pipe = tcp_sack_pipe(tcb);
			utcp_seq rs;
			uint32_t rl;

			if (pipe + mp > tcb->cwnd)
				break;
			/* Each hole at most once per call, in increasing order: a scoreboard that
			 * kept offering the same hole must not make this loop spin. */
			if (tcp_sack_next_lost(tcb, mp, &rs, &rl) && (!rexmitted || seq_gt(rs, last_rs))) {
				if (tcb->fin_sent && seq_gt(seq_add(rs, rl), tcb->fin_seq))
					rl = (uint32_t)seq_diff(tcb->fin_seq, rs);
				if (rl) {
					tcp_send_segment(st, tcb, rs, UTCP_TH_ACK,
							 (uint32_t)seq_diff(rs, tcb->snd_una), rl, now);
					tcb->high_rxt = seq_add(rs, rl);
					tcp_note_rxt(tcb, tcb->high_rxt);
					tcb->episode_rxts++;
					tcb->retransmits++;
					st->stats.retransmits++;
					tcb->rtt_timing = false;        /* Karn */
					sent = rexmitted = true;
					last_rs = rs;
					continue;
				}
			}
			usable = (int32_t)(tcb->cwnd - pipe);
			if (seq_diff(seq_add(tcb->snd_una, tcb->snd_wnd), tcb->snd_nxt) < usable)
				usable = seq_diff(seq_add(tcb->snd_una, tcb->snd_wnd), tcb->snd_nxt);
			len = left;
			if (usable < 0)
				usable = 0;
			if (len > (uint32_t)usable)
				len = (uint32_t)usable;
			if (len > mp)
				len = mp;
			fin = fin_pending && len == left && (uint32_t)usable > len;
			if (!len && !fin)
				break;
			goto send_new;
		}
		if (usable < 0)
			usable = 0;
		if (len > (uint32_t)usable)
			len = (uint32_t)usable;
		if (len > mp)
			len = mp;
		/* The FIN rides with the last data if the window has room for it too. */
		fin = fin_pending && len == left && (uint32_t)usable > len;
		if (!len && !fin)
			break;
		if (len < mp && !fin) {
			if (len < left) {
				/* Window-limited: sender SWS avoidance (RFC 9293 3.8.6.2.1) waits
				 * for half the largest window seen — unless nothing is in flight,
				 * when no ACK would come to open it (this replaces the override
				 * timer of the RFC). */
				if (len < tcb->max_snd_wnd / 2 && seq_lt(tcb->snd_una, tcb->snd_nxt))
					break;
			} else if (tcp_cork_holds(tcb, now) ||
				   (!tcb->nodelay && seq_lt(tcb->snd_una, tcb->snd_sml) &&
				    seq_le(tcb->snd_sml, tcb->snd_nxt) &&
				    !seq_lt(tcb->snd_nxt, tcb->snd_max))) {
				/* Cork, or Nagle (RFC 9293 3.7.4) in Minshall's form, as Linux:
				 * one small segment in flight at a time.  Full segments in flight
				 * do not hold it back — else the tail of every response that is not
				 * a whole number of segments waits for the last ACK, which a
				 * receiver past its quick ACKs delays (40 ms on Linux).  (An end
				 * left 2 GB behind wraps to look ahead of snd_una; it is then not
				 * at or before snd_nxt.) */
				break;
			}
		}
send_new:
		if (len && len == left)
			flags |= UTCP_TH_PSH;
		if (fin)
			flags |= UTCP_TH_FIN;
		retx = seq_lt(tcb->snd_nxt, tcb->snd_max);
		tcp_send_segment(st, tcb, tcb->snd_nxt, flags, off, len, now);
		if (retx) {
			tcp_note_rxt(tcb, seq_add(tcb->snd_nxt, len + (fin ? 1 : 0)));
			tcb->retransmits++;
			st->stats.retransmits++;
		} else if (!tcb->rtt_timing && len) {
			tcb->rtt_timing = true;     /* RFC 6298 (one sample per RTT) */
			tcb->rtt_seq = seq_add(tcb->snd_nxt, len);
			tcb->rtt_start = now;
		}
		if (fin) {
			tcb->fin_sent = true;
		}
		if (len && len < mp)
			tcb->snd_sml = seq_add(tcb->snd_nxt, len);
		tcb->snd_nxt = seq_add(tcb->snd_nxt, len + (fin ? 1 : 0));
		tcb->snd_max = seq_max(tcb->snd_max, tcb->snd_nxt);
		if (!tcb->rtx_at || tcb->persist) {
			tcb->persist = false;
			tcp_arm_rtx(st, tcb, now);      /* RFC 6298 (5.1) */
		}
		if (!retx)
			tcp_arm_tlp(st, tcb, now);
		sent = true;
	}
	/* Zero window with data waiting and nothing in flight: the persist timer
	 * (RFC 9293 3.8.6.1) keeps probing until the window opens. */
	if (can_send_data(tcb->state) && tcb->snd_wnd == 0 && !tcb->rtx_at &&
	    seq_eq(tcb->snd_una, tcb->snd_max) &&
	    (tcp_sndq_len(tcb) > 0 || (tcb->fin_queued && !tcb->fin_sent))) {
		tcb->persist = true;
		tcp_arm_rtx(st, tcb, now);
	}
	if (!sent && tcb->ack_now && tcb->state != UTCP_SYN_SENT && tcb->state != UTCP_CLOSED)
		tcp_send_ack(st, tcb, now);
	/* In recovery, once every lost segment is retransmitted, a probe timeout covers the
	 * case that the last retransmissions are lost too (RACK needs a later delivery). */
	if (tcb->in_recovery && sent && !tcb->tlp_at && !tcb->tlp_sent)
		tcp_arm_tlp(st, tcb, now);
	tcp_timer_update(st, tcb);
}
