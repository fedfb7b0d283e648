/* tcp_conn.c — control block life cycle, application events and the user calls of
 * RFC 9293 3.10.1-3.10.6 (OPEN, SEND, RECEIVE, CLOSE, ABORT). */
#include <errno.h>
#include <string.h>

#include "stack.h"
#include "tcp/cc.h"
#include "tcp/tcb.h"
#include "tcp/tcp_tw.h"

#define CID_IDX_BITS 20
#define CID_IDX_MASK ((1u << CID_IDX_BITS) - 1)
_Static_assert(UTCP_CID_INDEX(UINT32_MAX) == CID_IDX_MASK, "UTCP_CID_INDEX matches the handle layout");

utcp_cid tcp_cid_of(const struct utcp_stack *st, const struct utcp_tcb *tcb)
{
	return ((uint32_t)(st->ct.gen[tcb->idx] & 0xfff) << CID_IDX_BITS) | tcb->idx;
}

struct utcp_tcb *tcp_tcb_of(struct utcp_stack *st, utcp_cid c)
{
	uint32_t idx = c & CID_IDX_MASK;

	if (c == UTCP_CID_NONE || !utcp_conntab_used(&st->ct, idx) ||
	    (st->ct.gen[idx] & 0xfff) != (c >> CID_IDX_BITS) || !st->tcbs[idx].app_owned)
		return NULL;
	return &st->tcbs[idx];
}

const char *utcp_state_str(enum utcp_state s)
{
	static const char *const names[] = {
		"CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
		"FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT",
	};

	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "?";
}

static uint8_t wscale_for(uint32_t buf)
{
	uint8_t s = 0;

	while (s < UTCP_TCP_MAX_WSCALE && (buf >> s) > 0xffff)
		s++;
	return s;
}

struct utcp_tcb *tcp_tcb_new(struct utcp_stack *st, const struct utcp_tuple *t, uint64_t now)
{
	uint32_t idx = utcp_conntab_alloc(&st->ct);
	struct utcp_tcb *tcb;
	uint32_t ev_next;
	bool ev_queued;
	uint8_t *mem;

	if (idx == UTCP_CT_NONE)
		return NULL;
	if (utcp_conntab_insert(&st->ct, idx, t) < 0) {
		utcp_conntab_free(&st->ct, idx);
		return NULL;
	}
	tcb = &st->tcbs[idx];
	/* A freed slot may still sit in the event FIFO: keep its links. */
	ev_next = tcb->ev_next;
	ev_queued = tcb->ev_queued;
	memset(tcb, 0, sizeof(*tcb));
	tcb->ev_next = ev_next;
	tcb->ev_queued = ev_queued;
	tcb->idx = idx;
	tcb->t = *t;
	tcb->listener = -1;
	tcb->nodelay = st->cfg.nodelay;
	mem = st->bufmem + (size_t)idx * (st->cfg.sndbuf + st->cfg.rcvbuf);
	ring_init(&tcb->sbuf, mem, st->cfg.sndbuf);
	tcb->refs = st->sndrefs + (size_t)idx * st->cfg.send_refs;
	tcb->nref_slots = (uint8_t)st->cfg.send_refs;
	ring_init(&tcb->rbuf, mem + st->cfg.sndbuf, st->cfg.rcvbuf);
	tcb->rto_us = st->cfg.rto_init_us;          /* RFC 6298 (2.1) */
	tcb->cc = utcp_cc_find(st->cfg.cc);         /* validated at stack creation */
	tcb->ts_offset = tcp_ts_offset(st->cfg.isn_key, t);
	tcb->iss = seq_of(tcp_isn(st->cfg.isn_key, t, now));
	tcb->snd_una = tcb->iss;
	tcb->snd_nxt = seq_add(tcb->iss, 1);
	tcb->snd_max = tcb->snd_nxt;
	tcb->peer_mss = 536;                        /* RFC 9293 3.7.1 default */
	tcb->reordering = UTCP_DUPTHRESH;
	tcb->rxt_hw = tcb->iss;
	/* Boundaries in sequence space start at the ISS, not at 0: compared with 0, half of
	 * all ISNs would be "past" them (no recovery ever; the whole flight taken for lost). */
	tcb->recover = tcb->iss;                    /* RFC 6582 3.2: "initialized to the ISS" */
	tcb->rack_lost_end = tcb->iss;              /* nothing lost yet */
	tcb->snd_sml = tcb->iss;                    /* no small segment sent yet */
	tcb->xlog_rxt_end = tcb->iss;               /* nothing resent yet */
	tcb->ka_idle_us = st->cfg.keepalive_idle_us;
	tcb->ka_intvl_us = st->cfg.keepalive_intvl_us;
	tcb->ka_cnt = st->cfg.keepalive_probes;
	{
		/* a passive open takes its listener's buffer caps (utcp_connect clears them) */
		int li = stack_find_listener(st, t->lport);

		if (li >= 0) {
			tcb->snd_cap = st->listeners[li].snd_cap;
			tcb->rcv_cap = st->listeners[li].rcv_cap;
		}
	}
	tcp_tcb_init_options(st, tcb);
	st->stats.conns_in_use = st->ct.used;
	return tcb;
}

/* What we offer (active open) before negotiation narrows it. */
void tcp_tcb_init_options(struct utcp_stack *st, struct utcp_tcb *tcb)
{
	tcb->ws_ok = st->cfg.window_scaling;
	tcb->sack_ok = st->cfg.sack;
	tcb->ts_ok = st->cfg.timestamps;
	tcb->rcv_wscale = tcb->ws_ok ? wscale_for(st->cfg.rcvbuf) : 0;
	tcb->mss = (uint16_t)(st->cfg.mtu - 40);
}

void tcp_set_state(struct utcp_stack *st, struct utcp_tcb *tcb, enum utcp_state s)
{
	(void)st;
	tcb->state = s;
}

void tcp_event(struct utcp_stack *st, struct utcp_tcb *tcb, uint32_t ev)
{
	if (!tcb->app_owned)
		return;
	tcb->ev_pending |= ev;
	if (tcb->ev_queued)
		return;
	tcb->ev_queued = true;
	tcb->ev_next = UTCP_CT_NONE;
	if (st->ev_tail == UTCP_CT_NONE)
		st->ev_head = tcb->idx;
	else
		st->tcbs[st->ev_tail].ev_next = tcb->idx;
	st->ev_tail = tcb->idx;
}

int utcp_next_event(struct utcp_stack *st, struct utcp_event *ev)
{
	while (st->ev_head != UTCP_CT_NONE) {
		struct utcp_tcb *tcb = &st->tcbs[st->ev_head];

		st->ev_head = tcb->ev_next;
		if (st->ev_head == UTCP_CT_NONE)
			st->ev_tail = UTCP_CT_NONE;
		tcb->ev_queued = false;
		if (!utcp_conntab_used(&st->ct, tcb->idx) || !tcb->app_owned || !tcb->ev_pending)
			continue;
		memset(ev, 0, sizeof(*ev));
		ev->events = tcb->ev_pending;
		ev->conn = tcp_cid_of(st, tcb);
		ev->error = tcb->ev_error;
		ev->listener = tcb->listener;
		tcb->ev_pending = 0;
		return 1;
	}
	return 0;
}

static void tcb_free(struct utcp_stack *st, struct utcp_tcb *tcb)
{
	tcp_sndq_drop(st, tcb);         /* (normally empty by now: the connection ended first) */
	utcp_wheel_cancel(&st->wheel, &tcb->timer);
	tcb->app_owned = false;
	tcb->ev_pending = 0;
	utcp_conntab_free(&st->ct, tcb->idx);
	st->stats.conns_in_use = st->ct.used;
}

void tcp_tcb_closed(struct utcp_stack *st, struct utcp_tcb *tcb, int error)
{
	if (tcb->passive && tcb->state == UTCP_SYN_RECEIVED && tcb->listener >= 0)
		st->listeners[tcb->listener].pending--;
	if (error == -ECONNRESET || error == -ECONNREFUSED || error == -EPIPE)
		st->stats.resets++;
	tcb->state = UTCP_CLOSED;
	tcp_sndq_drop(st, tcb);         /* never to be sent: references go back now */
	tcb->rtx_at = tcb->delack_at = tcb->tw_at = 0;
	utcp_wheel_cancel(&st->wheel, &tcb->timer);
	utcp_conntab_remove(&st->ct, tcb->idx);
	if (!tcb->app_owned) {
		tcb_free(st, tcb);
		return;
	}
	if (!tcb->ev_error)
		tcb->ev_error = error;
	tcp_event(st, tcb, UTCP_EV_CLOSED | UTCP_EV_READABLE | UTCP_EV_WRITABLE);
}

/* TIME-WAIT moves to a compact entry (tcp_tw.c) and the control block is freed at once,
 * unless the application still holds the handle: then the block stays, unhashed and
 * without timers, reporting TIME-WAIT (its unread data still readable) until the
 * application closes it or the entry ends.  The caller must not touch tcb afterwards. */
void tcp_enter_time_wait(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	tcp_set_state(st, tcb, UTCP_TIME_WAIT);
	tcb->rtx_at = 0;
	tcb->persist = false;
	tcp_sndq_drop(st, tcb);         /* our FIN was acknowledged: nothing is left in it */
	tcp_output(st, tcb, now);       /* the ACK of the peer's FIN, if that brought us here */
	tcp_tw_add(st, tcb, tcb->app_owned ? tcp_cid_of(st, tcb) : UTCP_CID_NONE, now);
	utcp_conntab_remove(&st->ct, tcb->idx);
	tcb->delack_at = tcb->tw_at = tcb->ka_at = tcb->tlp_at = tcb->rack_at = 0;
	tcb->ka_on = false;
	tcb->ack_now = false;
	tcb->ack_pending_bytes = 0;
	if (!tcb->app_owned) {
		tcb_free(st, tcb);
		return;
	}
	/* Both directions are done: the application may release the handle. */
	tcp_event(st, tcb, UTCP_EV_CLOSED);
	tcp_timer_update(st, tcb);      /* the socket layer's wake-up, if any */
}

/* The application lets go of a connection in TIME-WAIT: the block goes, the entry stays. */
static void release_time_wait(struct utcp_stack *st, struct utcp_tcb *tcb)
{
	uint32_t i = tcp_tw_lookup(st, &tcb->t, utcp_conntab_hash(&st->ct, &tcb->t));

	if (i != UTCP_CT_NONE && st->tw.e[i].held == tcp_cid_of(st, tcb))
		st->tw.e[i].held = UTCP_CID_NONE;
	tcb_free(st, tcb);
}

void tcp_time_wait_over(struct utcp_stack *st, utcp_cid held)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, held);

	if (tcb && tcb->state == UTCP_TIME_WAIT)
		tcp_tcb_closed(st, tcb, 0);
}

/* Entering ESTABLISHED from either SYN state. */
void tcp_established(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	tcp_set_state(st, tcb, UTCP_ESTABLISHED);
	st->stats.established++;
	tcb->retries = 0;
	tcb->backoff = 0;
	tcb->rtx_at = 0;
	/* RFC 6298 (5.7): after a SYN timeout with no RTT sample, RTO restarts at 3 s. */
	if (tcb->syn_timed_out && !tcb->have_rtt && tcb->rto_us < 3000000u)
		tcb->rto_us = 3000000u;
	tcb->cc->init(tcb, st->cfg.initial_window_segs);
	tcb->last_rcv = now;
	if (st->cfg.keepalive) {
		tcb->ka_on = true;
		tcb->ka_at = now + tcb->ka_idle_us;
	}
	if (tcb->passive) {
		/* A held listener counts it until the layer above releases it. */
		if (tcb->listener >= 0 && !st->listeners[tcb->listener].hold)
			st->listeners[tcb->listener].pending--;
		tcb->app_owned = true;
		tcp_event(st, tcb, UTCP_EV_ACCEPTED);
	} else {
		tcp_event(st, tcb, UTCP_EV_CONNECTED | UTCP_EV_WRITABLE);
	}
	/* A close requested while in SYN-RECEIVED was deferred until now (3.10.4). */
	if (tcb->fin_queued)
		tcp_set_state(st, tcb, UTCP_FIN_WAIT_1);
}

/* ---- user calls ---- */

int utcp_listen(struct utcp_stack *st, uint16_t port, int backlog)
{
	uint32_t i;
	int fr = -1;

	if (!port)
		return -EINVAL;
	for (i = 0; i < st->cfg.max_listeners; i++) {
		if (st->listeners[i].used && st->listeners[i].port == port)
			return -EADDRINUSE;
		if (!st->listeners[i].used && fr < 0)
			fr = (int)i;
	}
	if (fr < 0)
		return -ENOBUFS;
	st->listeners[fr].used = true;
	st->listeners[fr].port = port;
	st->listeners[fr].backlog = backlog > 0 ? backlog : 128;
	st->listeners[fr].pending = 0;
	st->listeners[fr].hold = false;
	st->listeners[fr].snd_cap = st->listeners[fr].rcv_cap = 0;
	return fr;
}

int utcp_unlisten(struct utcp_stack *st, int l)
{
	uint32_t i;

	if (l < 0 || (uint32_t)l >= st->cfg.max_listeners || !st->listeners[l].used)
		return -EBADF;
	st->listeners[l].used = false;
	/* Its half-open connections go silently (the peer's ACK then meets no listener and
	 * is answered with a RST, as with Linux); established ones forget the listener id,
	 * which may be reused. */
	for (i = 0; i < st->cfg.max_conns; i++) {
		struct utcp_tcb *tcb = &st->tcbs[i];

		if (!utcp_conntab_used(&st->ct, i) || !tcb->passive || tcb->listener != l)
			continue;
		if (tcb->state == UTCP_SYN_RECEIVED && !tcb->app_owned)
			tcp_tcb_closed(st, tcb, 0);
		else
			tcb->listener = -1;
	}
	return 0;
}

int utcp_listen_hold(struct utcp_stack *st, int l, int limit)
{
	if (l < 0 || (uint32_t)l >= st->cfg.max_listeners || !st->listeners[l].used)
		return -EBADF;
	st->listeners[l].hold = true;
	st->listeners[l].backlog = limit > 0 ? limit : 0;
	return 0;
}

int utcp_listen_bufcap(struct utcp_stack *st, int l, uint32_t snd, uint32_t rcv)
{
	if (l < 0 || (uint32_t)l >= st->cfg.max_listeners || !st->listeners[l].used)
		return -EBADF;
	st->listeners[l].snd_cap = snd;
	st->listeners[l].rcv_cap = rcv;
	return 0;
}

int utcp_listen_release(struct utcp_stack *st, int l)
{
	if (l < 0 || (uint32_t)l >= st->cfg.max_listeners || !st->listeners[l].used)
		return -EBADF;
	if (st->listeners[l].pending > 0)
		st->listeners[l].pending--;
	return 0;
}

int stack_find_listener(struct utcp_stack *st, uint16_t port)
{
	uint32_t i;

	for (i = 0; i < st->cfg.max_listeners; i++)
		if (st->listeners[i].used && st->listeners[i].port == port)
			return (int)i;
	return -1;
}

/* A 4-tuple in use by a connection or in TIME-WAIT (RFC 9293 3.6.1: not reused by an
 * active open while TIME-WAIT lasts). */
bool tcp_tuple_taken(const struct utcp_stack *st, const struct utcp_tuple *t)
{
	uint32_t h = utcp_conntab_hash(&st->ct, t);

	return utcp_conntab_lookup_hash(&st->ct, t, h) != UTCP_CT_NONE ||
	       tcp_tw_lookup(st, t, h) != UTCP_CT_NONE;
}

int utcp_connect(struct utcp_stack *st, uint32_t raddr, uint16_t rport, uint16_t lport,
		 const uint8_t next_hop[6], uint64_t now, utcp_cid *out)
{
	struct utcp_tuple t = {st->cfg.local_ip, raddr, lport, rport};
	struct utcp_tcb *tcb = NULL;

	if (!raddr || !rport)
		return -EINVAL;
	if (lport) {
		if (tcp_tuple_taken(st, &t))
			return -EADDRINUSE;
		tcb = tcp_tcb_new(st, &t, now);
		if (!tcb)
			return -ENOBUFS;
	} else {
		/* Ephemeral port keeping the 4-tuple unique within the stack's range. */
		uint32_t span = (uint32_t)st->cfg.ephemeral_hi - st->cfg.ephemeral_lo + 1, i;

		for (i = 0; i < span; i++) {
			t.lport = (uint16_t)(st->cfg.ephemeral_lo + (st->next_ephemeral + i) % span);
			if (!tcp_tuple_taken(st, &t))
				break;
		}
		if (i == span)
			return -EADDRNOTAVAIL;
		st->next_ephemeral = (uint16_t)((st->next_ephemeral + i + 1) % span);
		tcb = tcp_tcb_new(st, &t, now);
		if (!tcb)
			return -ENOBUFS;
	}
	memcpy(tcb->rmac, next_hop ? next_hop : st->cfg.gw_mac, 6);
	tcb->snd_cap = tcb->rcv_cap = 0;        /* a listener's on the same port are not ours */
	tcb->app_owned = true;
	tcp_set_state(st, tcb, UTCP_SYN_SENT);
	st->stats.active_opens++;
	tcp_send_syn(st, tcb, now);
	tcb->rtt_start = now;
	tcp_arm_rtx(st, tcb, now);
	tcp_timer_update(st, tcb);
	*out = tcp_cid_of(st, tcb);
	return 0;
}

uint32_t tcp_rcv_space(const struct utcp_tcb *tcb)
{
	uint32_t space = ring_free(&tcb->rbuf);

	if (tcb->rcv_cap) {
		uint32_t c = tcb->rcv_cap > tcb->rbuf.len ? tcb->rcv_cap - tcb->rbuf.len : 0;

		if (c < space)
			space = c;
	}
	return space;
}

bool tcp_cork_holds(struct utcp_tcb *tcb, uint64_t now)
{
	if (!tcb->cork)
		return false;
	if (!tcb->cork_at)
		tcb->cork_at = now + UTCP_CORK_MAX_US;
	if (now >= tcb->cork_at) {
		tcb->cork_at = 0;       /* held long enough (Linux: ~200 ms, its probe timer) */
		return false;
	}
	if (!tcb->rtx_at) {
		/* Nothing in flight, so no ACK will come to re-run output: the persist
		 * timer does (it sends what the window allows when it finds one open). */
		tcb->persist = true;
		tcb->rtx_at = tcb->cork_at;
	}
	return true;
}

/* Whether SEND is allowed (3.10.2): 0, or the error to return. */
static int send_check(const struct utcp_tcb *tcb)
{
	if (!tcb)
		return -EBADF;
	if (tcb->state == UTCP_CLOSED)
		return tcb->ev_error ? tcb->ev_error : -ENOTCONN;
	if (tcb->fin_queued)
		return -EPIPE;
	return 0;
}

ssize_t utcp_send(struct utcp_stack *st, utcp_cid c, const void *buf, size_t len, uint64_t now)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);
	int rc = send_check(tcb);
	uint32_t n;

	if (rc)
		return rc;
	if (len > UINT32_MAX)
		len = UINT32_MAX;
	n = tcp_sndq_append(tcb, buf, (uint32_t)len);
	if (!n)
		return len ? -EAGAIN : 0;
	if (tcp_synchronized(tcb->state))
		tcp_output(st, tcb, now);
	return n;
}

ssize_t utcp_send_ref(struct utcp_stack *st, utcp_cid c, const void *buf, size_t len,
		      uint64_t cookie, uint64_t now)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);
	int rc = send_check(tcb);
	uint32_t n;

	if (rc)
		return rc;
	if (!st->cfg.send_refs)
		return -ENOTSUP;
	if (!len)
		return 0;
	if (len > UINT32_MAX)
		len = UINT32_MAX;
	n = tcp_sndq_append_ref(st, tcb, buf, (uint32_t)len, cookie);
	if (!n)
		return -EAGAIN;
	if (tcp_synchronized(tcb->state))
		tcp_output(st, tcb, now);
	return n;
}

void utcp_set_ref_release(struct utcp_stack *st, utcp_ref_release_fn fn, void *ctx)
{
	st->ref_release = fn;
	st->ref_release_ctx = ctx;
}

ssize_t utcp_recv(struct utcp_stack *st, utcp_cid c, void *buf, size_t len, uint64_t now)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);
	uint32_t n, before, after;

	if (!tcb)
		return -EBADF;
	if (len > UINT32_MAX)
		len = UINT32_MAX;
	before = tcp_rcv_window(tcb);
	n = ring_read(&tcb->rbuf, buf, (uint32_t)len);
	if (n) {
		/* Window update once the window opened by a useful amount (3.8.6.2.2). */
		after = tcp_rcv_window(tcb);
		if (after > before && tcp_synchronized(tcb->state) && tcb->state != UTCP_TIME_WAIT &&
		    !tcb->fin_rcvd) {
			tcb->ack_now = true;
			tcp_output(st, tcb, now);
		}
		return n;
	}
	if (tcb->fin_rcvd)
		return 0;
	if (tcb->state == UTCP_CLOSED)
		return tcb->ev_error ? tcb->ev_error : 0;
	if (tcb->state == UTCP_SYN_SENT || tcb->state == UTCP_SYN_RECEIVED)
		return -EAGAIN;
	return -EAGAIN;
}

/* CLOSE without releasing the handle: queue a FIN after the data (3.10.4). */
static int do_shutdown(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	if (tcb->fin_queued)
		return 0;
	switch (tcb->state) {
	case UTCP_SYN_SENT:
	case UTCP_SYN_RECEIVED:
		tcb->fin_queued = true;
		tcb->fin_seq = seq_add(tcb->iss, 1 + tcp_sndq_len(tcb));
		return 0;               /* FIN-WAIT-1 once established */
	case UTCP_ESTABLISHED:
		tcb->fin_queued = true;
		tcb->fin_seq = seq_add(tcb->snd_una, tcp_sndq_len(tcb));
		tcp_set_state(st, tcb, UTCP_FIN_WAIT_1);
		break;
	case UTCP_CLOSE_WAIT:
		tcb->fin_queued = true;
		tcb->fin_seq = seq_add(tcb->snd_una, tcp_sndq_len(tcb));
		tcp_set_state(st, tcb, UTCP_LAST_ACK);
		break;
	default:
		return 0;               /* already closing or closed */
	}
	tcp_output(st, tcb, now);
	return 0;
}

int utcp_shutdown(struct utcp_stack *st, utcp_cid c, uint64_t now)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	if (tcb->state == UTCP_CLOSED)
		return -ENOTCONN;
	return do_shutdown(st, tcb, now);
}

void tcp_abort(struct utcp_stack *st, struct utcp_tcb *tcb, uint64_t now)
{
	/* 3.10.5: RST in SYN-RECEIVED and the synchronized states except the closing ones */
	if (tcb->state == UTCP_SYN_RECEIVED || tcb->state == UTCP_ESTABLISHED ||
	    tcb->state == UTCP_FIN_WAIT_1 || tcb->state == UTCP_FIN_WAIT_2 ||
	    tcb->state == UTCP_CLOSE_WAIT)
		tcp_send_rst(st, tcb, now);
	tcb->app_owned = false;
	if (tcb->state != UTCP_CLOSED)
		tcp_tcb_closed(st, tcb, -ECONNABORTED);
	else
		tcb_free(st, tcb);
}

int utcp_close(struct utcp_stack *st, utcp_cid c, uint64_t now)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	if (tcb->state == UTCP_CLOSED) {
		tcb_free(st, tcb);
		return 0;
	}
	if (tcb->state == UTCP_TIME_WAIT) {
		release_time_wait(st, tcb);     /* TIME-WAIT goes on in its entry */
		return 0;
	}
	/* Unread data at close: reset rather than pretend an orderly close
	 * (RFC 2525 2.17, what Linux does). */
	if (tcb->rbuf.len > 0) {
		tcp_abort(st, tcb, now);
		return 0;
	}
	tcb->app_owned = false;
	tcb->ev_pending = 0;
	if (tcb->state == UTCP_SYN_SENT) {
		/* CLOSE in SYN-SENT (3.10.4): delete the TCB. */
		tcp_tcb_closed(st, tcb, 0);
		return 0;
	}
	do_shutdown(st, tcb, now);
	if (tcb->state == UTCP_FIN_WAIT_2 && !tcb->tw_at) {
		tcb->tw_at = now + st->cfg.time_wait_us;    /* orphan FIN-WAIT-2 timeout */
		tcp_timer_update(st, tcb);
	}
	return 0;
}

int utcp_abort(struct utcp_stack *st, utcp_cid c, uint64_t now)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	if (tcb->state == UTCP_TIME_WAIT)
		release_time_wait(st, tcb);     /* nothing to reset: the entry answers on */
	else
		tcp_abort(st, tcb, now);
	return 0;
}

int utcp_set_nodelay(struct utcp_stack *st, utcp_cid c, bool on)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	tcb->nodelay = on;
	return 0;
}

int utcp_set_keepalive(struct utcp_stack *st, utcp_cid c, bool on, uint64_t now)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	tcb->ka_on = on;
	tcb->ka_probes = 0;
	tcb->ka_at = on ? now + tcb->ka_idle_us : 0;
	if (!tcb->last_rcv || !on)
		tcb->last_rcv = now;
	if (tcb->state != UTCP_CLOSED)
		tcp_timer_update(st, tcb);
	return 0;
}

int utcp_set_cc(struct utcp_stack *st, utcp_cid c, const char *name)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);
	const struct utcp_cc_ops *ops = name ? utcp_cc_find(name) : NULL;

	if (!tcb)
		return -EBADF;
	if (!ops)
		return -ENOENT;
	if (ops != tcb->cc) {
		/* cwnd and ssthresh carry over; the new module starts from clean state */
		memset(tcb->cc_priv, 0, sizeof(tcb->cc_priv));
		tcb->cc = ops;
	}
	return 0;
}

int utcp_conn_ready(struct utcp_stack *st, utcp_cid c)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);
	int m = 0;

	if (!tcb)
		return -EBADF;
	if (tcb->rbuf.len || tcb->fin_rcvd || tcb->state == UTCP_CLOSED)
		m |= UTCP_READY_IN;
	if ((tcb->state == UTCP_ESTABLISHED || tcb->state == UTCP_CLOSE_WAIT) && !tcb->fin_queued &&
	    tcp_sndq_room(tcb))
		m |= UTCP_READY_OUT;
	if (tcb->state == UTCP_CLOSED || (tcb->fin_rcvd && tcb->fin_acked))
		m |= UTCP_READY_HUP;
	if (tcb->state == UTCP_CLOSED && tcb->ev_error)
		m |= UTCP_READY_ERR | UTCP_READY_OUT;
	return m;
}

int utcp_conn_info(struct utcp_stack *st, utcp_cid c, struct utcp_conn_info *info)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);
	struct utcp_conn_info ci;
	size_t sz;

	if (!tcb)
		return -EBADF;
	if (!info || info->sz == 0)
		return -EINVAL;
	sz = info->sz < sizeof(ci) ? info->sz : sizeof(ci);
	memset(&ci, 0, sizeof(ci));
	ci.sz = sz;
	ci.state = tcb->state;
	ci.laddr = tcb->t.laddr;
	ci.raddr = tcb->t.raddr;
	ci.lport = tcb->t.lport;
	ci.rport = tcb->t.rport;
	ci.ws_ok = tcb->ws_ok;
	ci.sack_ok = tcb->sack_ok;
	ci.ts_ok = tcb->ts_ok;
	ci.snd_wscale = tcb->ws_ok ? tcb->snd_wscale : 0;
	ci.rcv_wscale = tcb->ws_ok ? tcb->rcv_wscale : 0;
	ci.snd_mss = tcb->mss;
	ci.cwnd = tcb->cwnd;
	ci.ssthresh = tcb->ssthresh;
	ci.snd_wnd = tcb->snd_wnd;
	ci.rcv_wnd = tcp_rcv_window(tcb);
	ci.srtt_us = tcb->srtt_us;
	ci.rttvar_us = tcb->rttvar_us;
	ci.rto_us = tcp_rto_current(tcb, &st->cfg);
	ci.unacked = tcp_flight(tcb);
	ci.sndbuf_used = tcp_sndq_len(tcb);
	ci.sndbuf_refs = tcb->ref_bytes;
	ci.send_refs = tcb->nrefs;
	ci.rcvbuf_used = tcb->rbuf.len;
	ci.retransmits = tcb->retransmits;
	ci.rto_timeouts = tcb->rto_timeouts;
	ci.fast_retransmits = tcb->fast_retransmits;
	ci.spurious_recoveries = tcb->spurious_recoveries;
	ci.bytes_acked = tcb->bytes_acked;
	ci.bytes_received = tcb->bytes_received;
	ci.reordering = tcb->reordering;
	ci.cc = tcb->cc->name;
	memcpy(info, &ci, sz);
	return 0;
}

/* ---- for a socket layer (utcp_sock.h) ---- */

const struct utcp_config *utcp_stack_config(const struct utcp_stack *st)
{
	return &st->cfg;
}

const char *utcp_cc_lookup(const char *name)
{
	const struct utcp_cc_ops *ops = name ? utcp_cc_find(name) : NULL;

	return ops ? ops->name : NULL;
}

int utcp_conn_status(struct utcp_stack *st, utcp_cid c, struct utcp_conn_status *out)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	memset(out, 0, sizeof(*out));
	out->state = tcb->state;
	out->rcv_queued = tcb->rbuf.len;
	out->snd_queued = tcp_sndq_len(tcb) + (tcb->fin_queued && !tcb->fin_acked ? 1 : 0);
	out->snd_cap = tcp_sndq_limit(tcb);
	out->peer_fin = tcb->fin_rcvd;
	out->fin_queued = tcb->fin_queued;
	out->error = tcb->state == UTCP_CLOSED ? tcb->ev_error : 0;
	return 0;
}

ssize_t utcp_peek(struct utcp_stack *st, utcp_cid c, void *buf, size_t len, size_t off)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);
	const uint8_t *p1, *p2;
	uint32_t l1, l2, n;

	if (!tcb)
		return -EBADF;
	if (off >= tcb->rbuf.len)
		return 0;
	n = tcb->rbuf.len - (uint32_t)off;
	if (len < n)
		n = (uint32_t)len;
	ring_peek(&tcb->rbuf, (uint32_t)off, n, &p1, &l1, &p2, &l2);
	memcpy(buf, p1, l1);
	if (l2)
		memcpy((uint8_t *)buf + l1, p2, l2);
	return n;
}

int utcp_set_keepalive_timing(struct utcp_stack *st, utcp_cid c, uint64_t idle_us,
			      uint64_t intvl_us, uint32_t probes, uint64_t now)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	if (idle_us)
		tcb->ka_idle_us = idle_us;
	if (intvl_us)
		tcb->ka_intvl_us = intvl_us;
	if (probes)
		tcb->ka_cnt = probes;
	if (idle_us && tcb->ka_on && tcb->state != UTCP_CLOSED && !tcb->ka_probes) {
		/* Linux restarts the timer for the new idle time, from the last segment received. */
		uint64_t at = tcb->last_rcv + tcb->ka_idle_us;

		tcb->ka_at = at > now ? at : now;
		tcp_timer_update(st, tcb);
	}
	return 0;
}

int utcp_set_cork(struct utcp_stack *st, utcp_cid c, bool on, uint64_t now)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	if (tcb->cork == on)
		return 0;
	tcb->cork = on;
	tcb->cork_at = 0;
	if (!on && tcp_synchronized(tcb->state) && tcb->state != UTCP_CLOSED)
		tcp_output(st, tcb, now);       /* push what was held */
	return 0;
}

int utcp_set_bufcap(struct utcp_stack *st, utcp_cid c, uint32_t snd, uint32_t rcv)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	tcb->snd_cap = snd;
	tcb->rcv_cap = rcv;
	return 0;
}

int utcp_set_wakeup(struct utcp_stack *st, utcp_cid c, uint64_t at)
{
	struct utcp_tcb *tcb = tcp_tcb_of(st, c);

	if (!tcb)
		return -EBADF;
	tcb->wake_at = at;
	if (tcb->state != UTCP_CLOSED)
		tcp_timer_update(st, tcb);
	return 0;
}

size_t utcp_stack_unacked(const struct utcp_stack *st)
{
	size_t owed = 0;

	for (uint32_t i = 0; i < st->cfg.max_conns; i++) {
		const struct utcp_tcb *tcb = &st->tcbs[i];

		if (!utcp_conntab_used(&st->ct, i))
			continue;
		switch (tcb->state) {
		case UTCP_FIN_WAIT_1:
		case UTCP_CLOSING:
		case UTCP_LAST_ACK:
			owed += 1;
			/* fall through */
		case UTCP_ESTABLISHED:
		case UTCP_CLOSE_WAIT:
		case UTCP_SYN_SENT:
		case UTCP_SYN_RECEIVED:
			owed += tcp_sndq_len(tcb);
			break;
		default:
			break;
		}
	}
	return owed;
}
