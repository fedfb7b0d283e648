/* tcp_mig.c — a connection nobody accepted yet, moved to another stack: frozen here
 * (deaf, mute, no timers), described by an image, adopted by a listener of the other stack,
 * then released here without a word.  The image check is strict: images cross process
 * boundaries.  The socket layer's utcp_sk_migrate_* (src/sock/migrate.c) drive this. */
#include <string.h>

#include "stack.h"
#include "tcp/cc.h"
#include "tcp/tcb.h"

#define MIG_MIN_MSS 88                 /* the smallest MSS an image may carry */
#define MIG_MAX_BACKOFF 16             /* tcp_timer.c's MAX_BACKOFF */
#define MIG_MAX_RTT_US 60000000u       /* an SRTT or RTTVAR beyond a minute is nonsense */

static bool migratable(enum utcp_state s)
{
	return s == UTCP_SYN_RECEIVED || s == UTCP_ESTABLISHED || s == UTCP_CLOSE_WAIT;
}

int utcp_conn_freeze(struct utcp_stack *st, utcp_cid c)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	if (tcb->state != UTCP_ESTABLISHED && tcb->state != UTCP_CLOSE_WAIT)
		return -EINVAL;
	/* An image carries no send data (only what was received moves): a connection with bytes
	 * queued to send, copied or referenced, stays here rather than lose them.  Nothing is
	 * materialised for the move either: the other stack adopts connections nobody wrote to. */
	if (tcp_sndq_len(tcb))
		return -EBUSY;
	tcb->frozen = true;
	tcp_timer_update(st, tcb);      /* cancels the wheel entry */
	return 0;
}

int utcp_listen_freeze_half_open(struct utcp_stack *st, int l, utcp_cid *out, int max)
{
	uint32_t i;
	int n = 0;

	if (l < 0 || (uint32_t)l >= st->cfg.max_listeners || !st->listeners[l].used)
		return -EBADF;
	for (i = 0; i < st->cfg.max_conns && (!out || n < max); i++) {
		struct utcp_tcb *tcb = &st->tcbs[i];

		if (!utcp_conntab_used(&st->ct, i) || !tcb->passive || tcb->listener != l ||
		    tcb->state != UTCP_SYN_RECEIVED || tcb->app_owned || tcb->frozen)
			continue;
		if (!out) {
			n++;
			continue;
		}
		tcb->frozen = true;
		tcb->app_owned = true;  /* the caller's handle from now on; frozen: no events */
		tcp_timer_update(st, tcb);
		out[n++] = tcp_cid_of(st, tcb);
	}
	return n;
}

int utcp_conn_export(struct utcp_stack *st, utcp_cid c, struct utcp_conn_image *im)
{
	const struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	if (!tcb->frozen || !migratable(tcb->state))
		return -EINVAL;
	if (tcp_sndq_len(tcb))
		return -EBUSY;          /* written to while frozen: see utcp_conn_freeze */
	memset(im, 0, sizeof(*im));
	im->state = tcb->state;
	im->laddr = tcb->t.laddr;
	im->raddr = tcb->t.raddr;
	im->lport = tcb->t.lport;
	im->rport = tcb->t.rport;
	memcpy(im->rmac, tcb->rmac, 6);
	im->iss = tcb->iss.v;
	im->irs = tcb->irs.v;
	im->snd_una = tcb->snd_una.v;
	im->snd_nxt = tcb->snd_nxt.v;
	im->snd_wnd = tcb->snd_wnd;
	im->snd_wl2 = tcb->snd_wl2.v;
	/* An out-of-order segment may have updated the window from beyond RCV.NXT; that data
	 * does not move, so the next window update must not wait for the peer to pass it. */
	im->snd_wl1 = seq_gt(tcb->snd_wl1, tcb->rcv_nxt) ? tcb->rcv_nxt.v : tcb->snd_wl1.v;
	im->rcv_nxt = tcb->rcv_nxt.v;
	im->rcv_adv = seq_gt(tcb->rcv_adv, tcb->rcv_nxt) ? tcb->rcv_adv.v : tcb->rcv_nxt.v;
	im->ws_ok = tcb->ws_ok;
	im->sack_ok = tcb->sack_ok;
	im->ts_ok = tcb->ts_ok;
	im->fin_rcvd = tcb->fin_rcvd;
	im->snd_wscale = tcb->ws_ok ? tcb->snd_wscale : 0;
	im->rcv_wscale = tcb->ws_ok ? tcb->rcv_wscale : 0;
	im->mss = tcb->mss;
	if (tcb->ts_ok) {
		im->ts_recent = tcb->ts_recent;
		im->ts_offset = tcb->ts_offset;
	}
	im->last_ack_sent = tcb->last_ack_sent.v;
	im->have_rtt = tcb->have_rtt;
	if (tcb->have_rtt) {
		im->srtt_us = tcb->srtt_us;
		im->rttvar_us = tcb->rttvar_us;
	}
	if (tcb->state == UTCP_SYN_RECEIVED) {
		im->syn_retries = tcb->retries;
		im->backoff = tcb->backoff;
		im->syn_timed_out = tcb->syn_timed_out;
		im->synack_us = tcb->rtt_start;
	}
	im->data_len = tcb->rbuf.len;
	return 0;
}

int utcp_conn_release(struct utcp_stack *st, utcp_cid c, bool moved, uint64_t now)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	if (!tcb->frozen)
		return -EINVAL;
	tcb->frozen = false;
	if (!moved) {
		tcp_abort(st, tcb, now);        /* RST, as closing the listener would have */
		return 0;
	}
	/* It lives on in another stack: no RST, no FIN, no TIME-WAIT entry here. */
	st->stats.migrated_out++;
	tcb->app_owned = false;
	tcb->ev_pending = 0;
	tcp_tcb_closed(st, tcb, 0);             /* frees the block (a half-open one: pending--) */
	return 0;
}

/* ---- adoption ---- */

static bool seq_within(uint32_t lo, uint32_t x, uint32_t hi)
{
	return seq_le(seq_of(lo), seq_of(x)) && seq_le(seq_of(x), seq_of(hi));
}

int utcp_conn_image_check(const struct utcp_stack *st, const struct utcp_conn_image *im,
			  uint64_t now)
{
	(void)now;              /* a send time in the future only costs the RTT sample */
	const struct utcp_config *cfg = &st->cfg;
	bool half = im->state == UTCP_SYN_RECEIVED;
	uint32_t data_end, wnd_max;

	if (!migratable(im->state))
		return -EBADMSG;
	if (!im->raddr || !im->rport || !im->laddr || !im->lport)
		return -EBADMSG;
	/* options (RFC 7323 2.3: a shift above 14 is not a shift) */
	if (im->snd_wscale > UTCP_TCP_MAX_WSCALE || im->rcv_wscale > UTCP_TCP_MAX_WSCALE)
		return -EBADMSG;
	if (!im->ws_ok && (im->snd_wscale || im->rcv_wscale))
		return -EBADMSG;
	if (im->mss < MIG_MIN_MSS || im->mss > cfg->mtu - 40)
		return -EBADMSG;
	if (!im->ts_ok && (im->ts_recent || im->ts_offset))
		return -EBADMSG;
	if (im->have_rtt ? (im->srtt_us > MIG_MAX_RTT_US || im->rttvar_us > MIG_MAX_RTT_US)
			 : (im->srtt_us || im->rttvar_us))
		return -EBADMSG;
	/* what was received: SYN, the unread bytes, the FIN (nothing was read: never accepted) */
	if (im->fin_rcvd != (im->state == UTCP_CLOSE_WAIT))
		return -EBADMSG;
	if (im->data_len > cfg->rcvbuf)
		return -EBADMSG;
	data_end = im->irs + 1 + im->data_len;
	if (im->rcv_nxt != data_end + (im->fin_rcvd ? 1 : 0))
		return -EBADMSG;
	/* the advertised right edge: the ring must hold the data and that whole window */
	if (!seq_within(im->rcv_nxt, im->rcv_adv, im->rcv_nxt + cfg->rcvbuf) ||
	    im->rcv_adv - im->rcv_nxt > cfg->rcvbuf - im->data_len)
		return -EBADMSG;
	if (!seq_within(im->irs + 1, im->last_ack_sent, im->rcv_nxt) ||
	    !seq_within(im->irs, im->snd_wl1, im->rcv_nxt))
		return -EBADMSG;
	/* what was sent: the SYN,ACK only; established, it is acknowledged */
	if (im->snd_nxt != im->iss + 1 || im->snd_una != (half ? im->iss : im->snd_nxt))
		return -EBADMSG;
	if (!seq_within(im->iss, im->snd_wl2, im->snd_nxt))
		return -EBADMSG;
	wnd_max = half ? 0xffffu : 0xffffu << im->snd_wscale;   /* a SYN's window is unscaled */
	if (im->snd_wnd > wnd_max)
		return -EBADMSG;
	if (half) {
		if (im->data_len || im->syn_retries > cfg->syn_retries || im->backoff > MIG_MAX_BACKOFF)
			return -EBADMSG;
	} else if (im->syn_retries || im->backoff || im->syn_timed_out || im->synack_us) {
		return -EBADMSG;
	}
	return 0;
}

int utcp_conn_adopt(struct utcp_stack *st, int l, const struct utcp_conn_image *im,
		    const void *data, int limit, uint64_t now, utcp_cid *out)
{
	struct utcp_tuple t = {im->laddr, im->raddr, im->lport, im->rport};
	struct utcp_listener *li;
	struct utcp_tcb *tcb;
	int rc;

	*out = UTCP_CID_NONE;
	if (l < 0 || (uint32_t)l >= st->cfg.max_listeners || !st->listeners[l].used)
		return -EBADF;
	li = &st->listeners[l];
	rc = utcp_conn_image_check(st, im, now);
	if (rc)
		return rc;
	if (im->laddr != st->cfg.local_ip || im->lport != li->port)
		return -EINVAL;
	if (li->pending >= limit)
		return -ENOBUFS;
	if (tcp_tuple_taken(st, &t))
		return -EADDRINUSE;
	tcb = tcp_tcb_new(st, &t, now);
	if (!tcb)
		return -ENOBUFS;
	memcpy(tcb->rmac, im->rmac, 6);
	tcb->passive = true;
	tcb->listener = l;
	if (im->state == UTCP_SYN_RECEIVED || li->hold)
		li->pending++;          /* as a SYN, and (held) the accept queue, would count it */
	st->stats.migrated_in++;
	/* the numbers of the first stack, not the ones tcp_tcb_new derived from our key */
	tcb->iss = seq_of(im->iss);
	tcb->irs = seq_of(im->irs);
	tcb->snd_una = seq_of(im->snd_una);
	tcb->snd_nxt = tcb->snd_max = seq_of(im->snd_nxt);
	tcb->snd_wnd = tcb->max_snd_wnd = im->snd_wnd;
	tcb->snd_wl1 = seq_of(im->snd_wl1);
	tcb->snd_wl2 = seq_of(im->snd_wl2);
	tcb->rxt_hw = tcb->iss;
	tcb->recover = tcb->snd_una;
	tcb->rack_lost_end = tcb->snd_una;
	tcb->xlog_rxt_end = tcb->snd_una;
	tcb->snd_sml = tcb->snd_una;            /* Nagle: no small segment of ours in flight */
	tcb->rcv_nxt = seq_of(im->rcv_nxt);
	tcb->rcv_adv = seq_of(im->rcv_adv);
	tcb->last_ack_sent = seq_of(im->last_ack_sent);
	tcb->fin_rcvd = im->fin_rcvd;
	tcb->ws_ok = im->ws_ok;
	tcb->sack_ok = im->sack_ok;
	tcb->ts_ok = im->ts_ok;
	tcb->snd_wscale = im->snd_wscale;
	tcb->rcv_wscale = im->rcv_wscale;
	tcb->mss = im->mss < st->cfg.min_mss ? st->cfg.min_mss : im->mss;
	tcb->ts_recent = im->ts_recent;
	tcb->ts_offset = im->ts_offset;     /* our TSval goes on where the first stack's was */
	tcb->have_rtt = im->have_rtt;
	tcb->srtt_us = im->srtt_us;
	tcb->rttvar_us = im->rttvar_us;
	if (tcb->have_rtt)
		tcp_rto_update(tcb, &st->cfg);
	if (im->data_len) {
		ring_append(&tcb->rbuf, data, im->data_len);
		tcb->bytes_received = im->data_len;
	}
	tcp_set_state(st, tcb, im->state);
	if (im->state == UTCP_SYN_RECEIVED) {
		/* A SYN-RECEIVED child of the listener: its SYN,ACK timer runs on from here and
		 * the ACK completing the handshake makes it UTCP_EV_ACCEPTED. */
		tcb->retries = im->syn_retries;
		tcb->backoff = im->backoff;
		/* Karn: no RTT sample from a retransmitted SYN,ACK, nor from a stale send time */
		tcb->syn_timed_out = im->syn_timed_out || im->synack_us > now ||
				     now - im->synack_us > MIG_MAX_RTT_US;
		tcb->rtt_start = im->synack_us;
		tcp_arm_rtx(st, tcb, now);
		tcp_timer_update(st, tcb);
		return 0;
	}
	/* Established as tcp_established() leaves a passive open, minus the event: the caller
	 * takes it as accepted from the listener. */
	tcb->cc->init(tcb, st->cfg.initial_window_segs);
	tcb->last_rcv = now;
	if (st->cfg.keepalive) {
		tcb->ka_on = true;
		tcb->ka_at = now + tcb->ka_idle_us;
	}
	tcb->app_owned = true;
	tcp_timer_update(st, tcb);
	*out = tcp_cid_of(st, tcb);
	return 0;
}
