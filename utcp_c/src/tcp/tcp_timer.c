/* tcp_timer.c — per-connection timers (retransmission, persist, delayed ACK,
 * TIME-WAIT) and the RTO estimator of RFC 6298.  Each control block has one wheel
 * entry armed at the earliest of its deadlines. */
#include "stack.h"
#include "tcp/cc.h"
#include "tcp/tcb.h"

#define MAX_BACKOFF 16

static uint64_t min_nz(uint64_t a, uint64_t b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	return a < b ? a : b;
}

void tcp_timer_update(struct utcp_stack *st, struct utcp_tcb *tcb)
{
	uint64_t at = min_nz(min_nz(min_nz(tcb->rtx_at, tcb->delack_at), min_nz(tcb->tw_at, tcb->ka_at)),
			     min_nz(min_nz(tcb->tlp_at, tcb->wake_at), tcb->rack_at));

	if (!at || tcb->frozen)
		utcp_wheel_cancel(&st->wheel, &tcb->timer);
	else if (!utcp_timer_armed(&tcb->timer) ||
		 tcb->timer.tick != (at + st->wheel.tick_us - 1) / st->wheel.tick_us)
		utcp_wheel_arm(&st->wheel, &tcb->timer, at);
}

uint32_t tcp_rto_current(const struct utcp_tcb *tcb, const struct utcp_config *cfg)
{
	uint64_t rto = (uint64_t)tcb->rto_us << tcb->backoff;

	return rto > cfg->rto_max_us ? cfg->rto_max_us : (uint32_t)rto;
}

void tcp_arm_rtx(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	tcb->rtx_at = now + tcp_rto_current(tcb, &st->cfg);
}

/* Tail loss probe (RFC 8985 7): if a flight's last segments are lost no duplicate ACK
 * comes back and only the RTO would notice.  After PTO = 2 SRTT (plus a delayed-ACK
 * allowance for a single segment) without an ACK, one probe elicits SACK feedback, from
 * which RACK finds what else was lost. */
void tcp_arm_tlp(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	uint64_t pto;

	if (!tcb->have_rtt || (tcb->in_recovery && tcp_rack_any_lost(tcb)) || tcb->tlp_sent ||
	    !tcb->sack_ok ||
	    !tcp_synchronized(tcb->state) || seq_eq(tcb->snd_una, tcb->snd_max)) {
		tcb->tlp_at = 0;
		return;
	}
	pto = 2ull * tcb->srtt_us;
	if (tcp_flight(tcb) <= tcp_smss(tcb))
		pto += st->cfg.delack_us;
	if (pto < 10000)
		pto = 10000;
	tcb->tlp_at = (tcb->rtx_at && now + pto >= tcb->rtx_at) ? 0 : now + pto;
}

static void tlp_expired(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	uint32_t flight = tcp_flight(tcb), len, mp = tcp_smss(tcb);
	bool fin = tcb->fin_sent && !tcb->fin_acked;
	utcp_seq seq;

	/* In recovery too once nothing is left to retransmit: a lost tail (the FIN, say)
	 * would otherwise wait for the RTO, since nothing sent later can reveal it. */
	if ((tcb->in_recovery && tcp_rack_any_lost(tcb)) || tcb->tlp_sent || !flight ||
	    !tcp_synchronized(tcb->state))
		return;
	/* RFC 8985 7.3: new data if there is some and the receive window allows ... */
	if (seq_eq(tcb->snd_nxt, tcb->snd_max) && !fin) {
		uint32_t off = (uint32_t)seq_diff(tcb->snd_nxt, tcb->snd_una);
		int32_t room = seq_diff(seq_add(tcb->snd_una, tcb->snd_wnd), tcb->snd_nxt);

		len = off < tcp_sndq_len(tcb) ? tcp_sndq_len(tcb) - off : 0;
		if (len > mp)
			len = mp;
		if (room > 0 && len > 0 && (uint32_t)room >= len) {
			tcp_send_segment(st, tcb, tcb->snd_nxt, UTCP_TH_ACK, off, len, now);
			tcb->snd_nxt = seq_add(tcb->snd_nxt, len);
			tcb->snd_max = tcb->snd_nxt;
			tcb->tlp_sent = true;
			st->stats.tail_loss_probes++;
			tcp_arm_rtx(st, tcb, now);
			return;
		}
	}
	/* ... otherwise the highest-sequence segment again */
	len = flight - (fin ? 1 : 0);
	if (len > mp)
		len = mp;
	seq = seq_add(tcb->snd_max, -(int64_t)len - (fin ? 1 : 0));
	tcp_send_segment(st, tcb, seq, UTCP_TH_ACK | (fin ? UTCP_TH_FIN : 0),
			 (uint32_t)seq_diff(seq, tcb->snd_una), len, now);
	tcp_note_rxt(tcb, seq_add(seq, len + (fin ? 1 : 0)));
	tcb->tlp_sent = true;
	tcb->retransmits++;
	st->stats.retransmits++;
	st->stats.tail_loss_probes++;
	tcb->rtt_timing = false;
	tcp_arm_rtx(st, tcb, now);
}

/* RFC 6298 section 2, with alpha = 1/8, beta = 1/4, K = 4, G = the timer tick. */
void tcp_rtt_sample(struct utcp_tcb *tcb, uint32_t r, const struct utcp_config *cfg)
{
	if (!r)
		r = 1;
	if (!tcb->have_rtt) {
		/* (2.2) first measurement */
		tcb->srtt_us = r;
		tcb->rttvar_us = r / 2;
		tcb->have_rtt = true;
	} else {
		/* (2.3) RTTVAR before SRTT, with the old SRTT */
		uint32_t delta = tcb->srtt_us > r ? tcb->srtt_us - r : r - tcb->srtt_us;

		tcb->rttvar_us = (3 * tcb->rttvar_us + delta) / 4;
		tcb->srtt_us = (7 * (uint64_t)tcb->srtt_us + r) / 8;
	}
	tcp_rto_update(tcb, cfg);
}

void tcp_rto_update(struct utcp_tcb *tcb, const struct utcp_config *cfg)
{
	uint64_t rto, var4 = 4 * (uint64_t)tcb->rttvar_us;

	if (var4 < cfg->timer_tick_us)
		var4 = cfg->timer_tick_us;
	rto = tcb->srtt_us + var4;
	/* (2.4) lower bound, (2.5) upper bound */
	if (rto < cfg->rto_min_us)
		rto = cfg->rto_min_us;
	if (rto > cfg->rto_max_us)
		rto = cfg->rto_max_us;
	tcb->rto_us = (uint32_t)rto;
}

static void rto_expired(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	if (tcb->state == UTCP_SYN_SENT || tcb->state == UTCP_SYN_RECEIVED) {
		if (tcb->retries >= st->cfg.syn_retries) {
			st->stats.timeouts++;
			tcp_tcb_closed(st, tcb, -ETIMEDOUT);
			return;
		}
		tcb->retries++;
		if (tcb->backoff < MAX_BACKOFF)
			tcb->backoff++;         /* (5.5) */
		tcb->syn_timed_out = true;
		tcb->rtt_timing = false;
		tcb->retransmits++;
		tcb->rto_timeouts++;
		st->stats.retransmits++;
		st->stats.rto_timeouts++;
		tcp_send_syn(st, tcb, now);
		tcp_arm_rtx(st, tcb, now);      /* (5.6) */
		return;
	}
	if (seq_eq(tcb->snd_una, tcb->snd_max))
		return;                         /* everything was acknowledged meanwhile */
	if (tcb->retries >= st->cfg.data_retries) {
		st->stats.timeouts++;
		tcp_tcb_closed(st, tcb, -ETIMEDOUT);
		return;
	}
	tcb->retries++;
	tcb->rto_timeouts++;
	st->stats.rto_timeouts++;
	/* RFC 5681 3.1: ssthresh from the flight on the first timeout of a series only;
	 * cwnd = loss window (1 SMSS) every time. */
	if (tcb->backoff == 0)
		tcb->cc->on_rto(tcb);
	else
		tcb->cwnd = tcp_smss(tcb);
	tcb->in_recovery = false;
	tcb->undo_armed = false;
	tcb->undo_valid = false;
	tcb->spurious = false;
	tcb->dupacks = 0;
	tcb->tlp_at = 0;
	tcp_sack_clear(tcb);                    /* RFC 2018 8: the receiver may have reneged */
	tcp_rack_forget(tcb);                   /* go-back-N: send times start again */
	tcb->recover = tcb->snd_max;            /* RFC 6582 4.1 after a timeout */
	if (tcb->backoff < MAX_BACKOFF)
		tcb->backoff++;                 /* (5.5) back off the timer */
	tcb->rtt_timing = false;                /* Karn */
	/* (5.4) retransmit the earliest unacknowledged segment; the rest follows as
	 * cwnd grows (go-back-N from SND.UNA). */
	tcb->snd_nxt = tcb->snd_una;
	tcb->rtx_at = 0;
	tcp_retransmit_first(st, tcb, now);     /* arms (5.6) */
	tcp_output(st, tcb, now);
}

static void persist_expired(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	/* Window probe: a segment just left of the window (SEQ = SND.UNA - 1) is not
	 * acceptable to the receiver, which must answer with an ACK carrying its current
	 * window (RFC 9293 3.10.7.4 first check).  Probing never gives up while the
	 * peer answers; backoff as for retransmissions. */
	tcp_send_segment(st, tcb, seq_add(tcb->snd_una, -1), UTCP_TH_ACK, 0, 0, now);
	if (tcb->backoff < MAX_BACKOFF)
		tcb->backoff++;
	tcb->persist = true;
	tcp_arm_rtx(st, tcb, now);
}

/* Keepalive (RFC 1122 4.2.3.6): after an idle period, probes with SEG.SEQ = SND.NXT-1
 * and no data, which the peer must acknowledge; silence for all probes aborts. */
static void keepalive_expired(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	/* per connection (TCP_KEEPIDLE/INTVL/CNT), the stack's by default */
	if (!tcb->ka_on || (tcb->state != UTCP_ESTABLISHED && tcb->state != UTCP_CLOSE_WAIT))
		return;
	if (now - tcb->last_rcv < tcb->ka_idle_us) {
		tcb->ka_probes = 0;
		tcb->ka_at = tcb->last_rcv + tcb->ka_idle_us;
		return;
	}
	if (!seq_eq(tcb->snd_una, tcb->snd_max) || tcb->persist) {
		tcb->ka_at = now + tcb->ka_intvl_us;        /* the RTO/persist timer is in charge */
		return;
	}
	if (tcb->ka_probes >= tcb->ka_cnt) {
		st->stats.timeouts++;
		tcp_tcb_closed(st, tcb, -ETIMEDOUT);
		return;
	}
	tcb->ka_probes++;
	st->stats.keepalive_probes++;
	tcp_send_segment(st, tcb, seq_add(tcb->snd_max, -1), UTCP_TH_ACK, 0, 0, now);
	tcb->ka_at = now + tcb->ka_intvl_us;
}

void tcp_timer_fire(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	if (tcb->ka_at && tcb->ka_at <= now) {
		tcb->ka_at = 0;
		keepalive_expired(st, tcb, now);
		if (tcb->state == UTCP_CLOSED)
			return;
	}
	if (tcb->wake_at && tcb->wake_at <= now) {
		tcb->wake_at = 0;
		tcp_event(st, tcb, UTCP_EV_WAKEUP);     /* the socket layer's timer */
	}
	if (tcb->tw_at && tcb->tw_at <= now) {
		tcb->tw_at = 0;
		/* TIME-WAIT expiry (2 MSL), or an orphaned FIN-WAIT-2 giving up. */
		if (tcb->state == UTCP_TIME_WAIT || tcb->state == UTCP_FIN_WAIT_2) {
			tcp_tcb_closed(st, tcb, 0);
			return;
		}
	}
	if (tcb->rack_at && tcb->rack_at <= now) {
		/* RACK's reordering timer (RFC 8985 6.3): the reordering window of a segment
		 * sent before a delivered one has passed without its ACK: it is lost. */
		tcb->rack_at = 0;
		if (tcp_synchronized(tcb->state) && tcb->sack_ok) {
			tcp_rack_detect(st, tcb, now);
			if (!tcb->in_recovery && seq_ge(tcb->snd_una, tcb->recover) &&
			    tcp_rack_any_lost(tcb))
				tcp_enter_recovery(st, tcb, now);
			if (tcb->in_recovery) {
				tcp_prr_on_ack(tcb, 0);
				tcp_output(st, tcb, now);
			}
		}
	}
	if (tcb->tlp_at && tcb->tlp_at <= now) {
		tcb->tlp_at = 0;
		tlp_expired(st, tcb, now);
	}
	if (tcb->delack_at && tcb->delack_at <= now) {
		tcb->delack_at = 0;
		if (tcb->ack_pending_bytes || tcb->ack_now)
			tcp_send_ack(st, tcb, now);
	}
	if (tcb->rtx_at && tcb->rtx_at <= now) {
		tcb->rtx_at = 0;
		if (tcb->persist) {
			tcb->persist = false;
			if (tcb->snd_wnd == 0 && seq_eq(tcb->snd_una, tcb->snd_max))
				persist_expired(st, tcb, now);
			else
				tcp_output(st, tcb, now);
		} else {
			rto_expired(st, tcb, now);
		}
	}
	if (tcb->state != UTCP_CLOSED)
		tcp_timer_update(st, tcb);
}
