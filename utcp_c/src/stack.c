/* stack.c — the stack object: configuration, creation (all allocation happens here),
 * the frame input path (Ethernet -> IPv4 -> TCP/ICMP), the TX batch towards the port,
 * timers, counters. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stack.h"
#include "tcp/cc.h"
#include "tcp/tcb.h"

void utcp_config_init(struct utcp_config *c)
{
	memset(c, 0, sizeof(*c));
	c->sz = sizeof(*c);
	c->mtu = 1500;
	c->ttl = 64;
	c->max_conns = 256;
	c->max_listeners = 16;
	c->sndbuf = 128 * 1024;
	c->rcvbuf = 128 * 1024;
	c->window_scaling = true;
	c->sack = true;
	c->timestamps = true;
	c->initial_window_segs = 10;
	c->rto_init_us = 1000000;       /* RFC 6298 (2.1) */
	c->rto_min_us = 200000;         /* Linux's floor; RFC 6298 (2.4) says 1 s */
	c->rto_max_us = 60000000;       /* RFC 6298 (2.5) */
	c->delack_us = 40000;
	c->time_wait_us = 60000000;     /* 2 MSL with MSL = 30 s */
	c->syn_retries = 6;
	c->data_retries = 15;
	c->challenge_ack_limit = 1000;
	c->ephemeral_lo = 32768;
	c->ephemeral_hi = 60999;
	c->tx_batch = 64;
	c->rx_batch = 64;
	c->timer_tick_us = 1000;
	c->timer_slots = 1024;
	c->min_mss = 88;
	c->keepalive = false;
	c->keepalive_idle_us = 7200ull * 1000000;    /* RFC 1122: no less than two hours */
	c->keepalive_intvl_us = 75ull * 1000000;
	c->keepalive_probes = 9;
	strcpy(c->cc, "newreno");
	c->send_refs = 16;
}

static int check_config(const struct utcp_config *c)
{
	if (c->mtu < 576 || c->mtu > 9000)
		return -EINVAL;
	if (!c->max_conns || c->max_conns > (1u << 20) || !c->max_listeners)
		return -EINVAL;
	if (c->sndbuf < 1024 || c->rcvbuf < 1024 || c->sndbuf > (1u << 30) || c->rcvbuf > (1u << 30))
		return -EINVAL;
	if (!c->tx_batch || !c->rx_batch || !c->timer_tick_us || !c->timer_slots ||
	    (c->timer_slots & (c->timer_slots - 1)))
		return -EINVAL;
	if (!c->rto_min_us || c->rto_min_us > c->rto_max_us || !c->rto_init_us)
		return -EINVAL;
	if (c->ephemeral_lo == 0 || c->ephemeral_lo > c->ephemeral_hi)
		return -EINVAL;
	if (c->min_mss < 64 || c->min_mss > c->mtu - 40 || !c->initial_window_segs)
		return -EINVAL;
	if (!c->keepalive_idle_us || !c->keepalive_intvl_us || !c->keepalive_probes)
		return -EINVAL;
	if (c->max_time_wait > (1u << 24))
		return -EINVAL;
	if (c->send_refs > UTCP_SEND_REFS_MAX)
		return -EINVAL;
	if (!memchr(c->cc, 0, sizeof(c->cc)) || !utcp_cc_find(c->cc))
		return -ENOENT;
	return 0;
}

void utcp_stack_destroy(struct utcp_stack *st)
{
	if (!st)
		return;
	/* References still queued go back to their owners, each once, before the stack goes
	 * (a connection gone earlier released its own). */
	for (uint32_t i = 0; st->tcbs && i < st->cfg.max_conns; i++)
		if (st->tcbs[i].nrefs)
			tcp_sndq_drop(st, &st->tcbs[i]);
	if (st->nlent)          /* the port's frames go back unsent */
		st->port.ops->tx_send(st->port.ctx, st->tx, 0, st->nlent, st->now);
	utcp_conntab_fini(&st->ct);
	tcp_tw_fini(&st->tw);
	free(st->tcbs);
	free(st->bufmem);
	free(st->listeners);
	free(st->wheel_slots);
	free(st->tx);
	free(st->txmem);
	free(st->rx);
	free(st->sndrefs);
	free(st);
}

int utcp_stack_create(const struct utcp_config *cfg, const struct utcp_port *port, uint64_t now,
		      struct utcp_stack **out)
{
	struct utcp_config c;
	struct utcp_stack *st;
	uint32_t i;
	int rc;

	if (!cfg || !port || !port->ops || !out || cfg->sz < offsetof(struct utcp_config, min_mss) ||
	    cfg->sz > sizeof(c))
		return -EINVAL;
	if (port->ops->sz < offsetof(struct utcp_port_ops, tx_lend) || !port->ops->rx_burst ||
	    !port->ops->tx_burst || !port->ops->rx_release || !port->ops->kick)
		return -EINVAL;
	utcp_config_init(&c);
	memcpy(&c, cfg, cfg->sz);
	c.sz = sizeof(c);
	rc = check_config(&c);
	if (rc)
		return rc;
	if (!c.max_time_wait)
		c.max_time_wait = c.max_conns > (1u << 22) ? (1u << 24) : 4 * c.max_conns;
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st->cfg = c;
	st->port = *port;
	st->ev_head = st->ev_tail = UTCP_CT_NONE;
	st->frame_cap = (uint32_t)c.mtu + UTCP_ETH_HLEN;
	st->lend = port->ops->sz >= sizeof(struct utcp_port_ops) && port->ops->tx_lend &&
		   port->ops->tx_send;
	rc = utcp_conntab_init(&st->ct, c.max_conns, c.isn_key);
	if (rc) {
		free(st);
		return rc;
	}
	/* the same key as the connection table: one hash serves a lookup in both */
	rc = tcp_tw_init(&st->tw, c.max_time_wait, c.isn_key);
	if (rc) {
		utcp_stack_destroy(st);
		return rc;
	}
	st->tcbs = calloc(c.max_conns, sizeof(*st->tcbs));
	/* Buffer memory for every connection, reserved now; pages are touched (and
	 * become resident) only as connections use them. */
	st->bufmem = calloc(c.max_conns, (size_t)c.sndbuf + c.rcvbuf);
	st->listeners = calloc(c.max_listeners, sizeof(*st->listeners));
	st->wheel_slots = calloc(c.timer_slots, sizeof(*st->wheel_slots));
	st->tx = calloc(c.tx_batch, sizeof(*st->tx));
	st->txmem = malloc((size_t)c.tx_batch * st->frame_cap);
	st->rx = calloc(c.rx_batch, sizeof(*st->rx));
	st->sndrefs = calloc((size_t)c.max_conns * c.send_refs + 1, sizeof(*st->sndrefs));
	if (!st->tcbs || !st->bufmem || !st->listeners || !st->wheel_slots || !st->tx || !st->txmem ||
	    !st->rx || !st->sndrefs) {
		utcp_stack_destroy(st);
		return -ENOMEM;
	}
	for (i = 0; i < c.max_conns; i++) {
		st->tcbs[i].idx = i;
		st->tcbs[i].ev_next = UTCP_CT_NONE;
	}
	for (i = 0; i < c.tx_batch; i++)
		st->tx[i].data = st->txmem + (size_t)i * st->frame_cap;
	utcp_wheel_init(&st->wheel, st->wheel_slots, c.timer_slots, c.timer_tick_us, now);
	*out = st;
	return 0;
}

size_t utcp_conn_memory(const struct utcp_stack *st)
{
	/* control block + buffers + table entry (tuple, chain link, state, generation) and
	 * its share of the hash buckets */
	return sizeof(struct utcp_tcb) + st->cfg.sndbuf + st->cfg.rcvbuf + sizeof(struct utcp_tuple) +
	       sizeof(uint32_t) * 3 + 1 + sizeof(uint16_t) +
	       (size_t)st->cfg.send_refs * sizeof(struct utcp_sndref);
}

size_t utcp_time_wait_memory(const struct utcp_stack *st)
{
	return tcp_tw_entry_memory(st->cfg.max_time_wait) / st->cfg.max_time_wait;
}

size_t utcp_stack_memory(const struct utcp_stack *st)
{
	return sizeof(*st) + (size_t)st->cfg.max_conns * utcp_conn_memory(st) +
	       tcp_tw_entry_memory(st->cfg.max_time_wait) +
	       (size_t)st->cfg.max_listeners * sizeof(struct utcp_listener) +
	       (size_t)st->cfg.timer_slots * sizeof(struct utcp_timer) +
	       (size_t)st->cfg.tx_batch * (sizeof(struct utcp_frame) + st->frame_cap) +
	       (size_t)st->cfg.rx_batch * sizeof(struct utcp_frame);
}

const struct utcp_stats *utcp_get_stats(const struct utcp_stack *st)
{
	return &st->stats;
}

/* ---- output ---- */

static void tx_flush(struct utcp_stack *st, uint64_t now)
{
	int n;

	if (st->lend) {
		if (!st->nlent)
			return;
		n = st->port.ops->tx_send(st->port.ctx, st->tx, st->ntx, st->nlent, now);
		st->nlent = 0;
		if (!st->ntx)
			return;
	} else {
		if (!st->ntx)
			return;
		n = st->port.ops->tx_burst(st->port.ctx, st->tx, st->ntx, now);
	}
	if (n < 0)
		n = 0;
	st->stats.frames_out += (uint32_t)n;
	st->stats.tx_dropped += st->ntx - (uint32_t)n;
	st->port.ops->kick(st->port.ctx);
	st->ntx = 0;
}

/* The frame of the next TX slot and its room; NULL when the port lends none. */
static struct utcp_frame *tx_slot(struct utcp_stack *st, uint64_t now, uint32_t *cap)
{
	struct utcp_frame *f;

	if (st->ntx == st->cfg.tx_batch)
		tx_flush(st, now);
	f = &st->tx[st->ntx];
	*cap = st->frame_cap;
	if (!st->lend)
		return f;
	if (st->ntx == st->nlent) {
		/* Out of send frames: sending the batch reaps completions, then once more. */
		if (st->port.ops->tx_lend(st->port.ctx, f, 1) != 1) {
			tx_flush(st, now);
			f = &st->tx[0];
			if (st->port.ops->tx_lend(st->port.ctx, f, 1) != 1)
				return NULL;
		}
		st->nlent++;
	}
	if (f->len < *cap)
		*cap = f->len;  /* a lent slot keeps its room until it is sent */
	return f;
}

/* The TCP segment at buf with a payload of more than two pieces (references in it): the
 * header as utcp_tcp_emit2 writes it, then the checksum again over the whole segment, each
 * piece summed as it is copied in (utcp_csum_add_at: a piece may start at an odd offset). */
static int tcp_emit_pieces(uint8_t *buf, uint32_t cap, uint32_t src, uint32_t dst,
			   const struct utcp_tcp *th, const struct utcp_piece *pc, unsigned npc)
{
	uint32_t payload = 0, off = 0, s;
	unsigned i;
	int hl;

	for (i = 0; i < npc; i++)
		payload += pc[i].len;
	hl = utcp_tcp_emit2(buf, cap, src, dst, th, NULL, 0, NULL, 0);
	if (hl < 0)
		return hl;
	if ((uint64_t)hl + payload > cap || (uint64_t)hl + payload > 0xffff)
		return -ENOSPC;
	buf[16] = buf[17] = 0;
	s = utcp_csum_add(utcp_csum_pseudo(src, dst, UTCP_IPPROTO_TCP, (uint16_t)(hl + payload)), buf,
			  (size_t)hl);
	for (i = 0; i < npc; i++) {
		s = utcp_csum_add_at(s, off, utcp_csum_copy(buf + hl + off, pc[i].p, pc[i].len, 0));
		off += pc[i].len;
	}
	utcp_put16(buf + 16, utcp_csum_fold(s));
	return (int)(hl + payload);
}

int stack_tcp_output(struct utcp_stack *st, const struct utcp_tuple *t, const uint8_t rmac[6],
		     const struct utcp_tcp *th, const struct utcp_piece *pc, unsigned npc,
		     uint64_t now)
{
	struct utcp_frame *f;
	uint8_t *seg;
	uint32_t cap;
	int tl;

	f = tx_slot(st, now, &cap);
	if (!f || cap < UTCP_ETH_HLEN + UTCP_IP_HLEN) {
		st->stats.tx_dropped++;
		return -ENOBUFS;
	}
	utcp_eth_emit(f->data, cap, rmac, st->cfg.local_mac, UTCP_ETH_P_IPV4);
	seg = f->data + UTCP_ETH_HLEN + UTCP_IP_HLEN;
	if (npc <= 2)           /* copied bytes only, or a piece of each kind: the usual case */
		tl = utcp_tcp_emit2(seg, cap - UTCP_ETH_HLEN - UTCP_IP_HLEN, t->laddr, t->raddr, th,
				    npc > 0 ? pc[0].p : NULL, npc > 0 ? pc[0].len : 0,
				    npc > 1 ? pc[1].p : NULL, npc > 1 ? pc[1].len : 0);
	else
		tl = tcp_emit_pieces(seg, cap - UTCP_ETH_HLEN - UTCP_IP_HLEN, t->laddr, t->raddr, th,
				     pc, npc);
	if (tl < 0) {
		st->stats.tx_dropped++;
		return tl;
	}
	utcp_ipv4_emit(f->data + UTCP_ETH_HLEN, UTCP_IP_HLEN, t->laddr, t->raddr, UTCP_IPPROTO_TCP,
		       (uint16_t)tl, st->cfg.ttl, st->ip_id++);
	f->len = (uint32_t)(UTCP_ETH_HLEN + UTCP_IP_HLEN + tl);
	st->ntx++;
	return 0;
}

/* ---- input ---- */

static bool bad_source(uint32_t a)
{
	return a == 0 || a == 0xffffffffu || (a >> 28) == 0xe || (a >> 24) == 127;
}

static void input_frame(struct utcp_stack *st, const uint8_t *data, uint32_t len, uint64_t now)
{
	static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	struct utcp_eth eth;
	struct utcp_ipv4 ip;
	enum utcp_drop why;

	st->stats.frames_in++;
	if (utcp_eth_parse(data, len, &eth, &why) < 0) {
		stack_drop(st, why);
		return;
	}
	if (memcmp(eth.dst, st->cfg.local_mac, 6) != 0 && memcmp(eth.dst, bcast, 6) != 0) {
		stack_drop(st, UTCP_DROP_ETH_NOT_US);
		return;
	}
	if (eth.type != UTCP_ETH_P_IPV4) {
		stack_drop(st, UTCP_DROP_ETH_NOT_IPV4);
		return;
	}
	if (utcp_ipv4_parse(data + UTCP_ETH_HLEN, len - UTCP_ETH_HLEN, &ip, &why) < 0) {
		stack_drop(st, why);
		return;
	}
	if (ip.dst != st->cfg.local_ip) {
		stack_drop(st, UTCP_DROP_IP_NOT_US);
		return;
	}
	if (bad_source(ip.src)) {
		stack_drop(st, UTCP_DROP_IP_BAD_SRC);
		return;
	}
	if (ip.proto == UTCP_IPPROTO_TCP) {
		struct utcp_tcp th;
		struct utcp_seg seg;

		if (utcp_tcp_parse(ip.payload, ip.payload_len, ip.src, ip.dst, true, &th, &why) < 0) {
			stack_drop(st, why);
			return;
		}
		if (!th.sport || !th.dport) {
			stack_drop(st, UTCP_DROP_TCP_PORT_ZERO);
			return;
		}
		if ((th.flags & UTCP_TH_SYN) && (th.flags & (UTCP_TH_RST | UTCP_TH_FIN))) {
			stack_drop(st, UTCP_DROP_TCP_BAD_FLAGS);
			return;
		}
		memset(&seg, 0, sizeof(seg));
		seg.eth = &eth;
		seg.ip = &ip;
		seg.th = &th;
		seg.seq = seq_of(th.seq);
		seg.ack = seq_of(th.ack);
		seg.len = (uint32_t)th.payload_len + ((th.flags & UTCP_TH_SYN) ? 1 : 0) +
			  ((th.flags & UTCP_TH_FIN) ? 1 : 0);
		seg.wnd = th.wnd;
		seg.now = now;
		tcp_input(st, &seg);
	} else if (ip.proto == UTCP_IPPROTO_ICMP) {
		struct utcp_icmp ic;

		if (utcp_icmp_parse(ip.payload, ip.payload_len, &ic, &why) < 0) {
			stack_drop(st, why);
			return;
		}
		tcp_icmp_input(st, &ic, now);
	} else {
		stack_drop(st, UTCP_DROP_IP_PROTO);
	}
}

static void timer_cb(struct utcp_timer *t, void *ctx)
{
	struct utcp_stack *st = ctx;
	struct utcp_tcb *tcb;

	if (t == &st->tw.timer) {
		tcp_tw_expire(st, st->now);
		return;
	}
	tcb = (struct utcp_tcb *)(void *)((uint8_t *)t - offsetof(struct utcp_tcb, timer));
	tcp_timer_fire(st, tcb, st->now);
}

int utcp_timers(struct utcp_stack *st, uint64_t now)
{
	int n;

	st->now = now;
	n = (int)utcp_wheel_expire(&st->wheel, now, timer_cb, st);

	tx_flush(st, now);
	return n;
}

int utcp_input(struct utcp_stack *st, const struct utcp_frame *frames, unsigned n, uint64_t now)
{
	unsigned i;

	for (i = 0; i < n; i++)
		input_frame(st, frames[i].data, frames[i].len, now);
	tx_flush(st, now);
	return (int)n;
}

int utcp_poll(struct utcp_stack *st, uint64_t now)
{
	int n = st->port.ops->rx_burst(st->port.ctx, st->rx, st->cfg.rx_batch, now), i;

	if (n < 0)
		return n;
	for (i = 0; i < n; i++)
		input_frame(st, st->rx[i].data, st->rx[i].len, now);
	if (n)
		st->port.ops->rx_release(st->port.ctx, st->rx, (unsigned)n);
	st->now = now;
	utcp_wheel_expire(&st->wheel, now, timer_cb, st);
	tx_flush(st, now);
	return n;
}

int utcp_flush(struct utcp_stack *st, uint64_t now)
{
	tx_flush(st, now);
	return 0;
}

uint64_t utcp_next_deadline(struct utcp_stack *st)
{
	return utcp_wheel_next_deadline(&st->wheel);
}

const char *utcp_strerror(int err)
{
	switch (-err) {
	case 0: return "success";
	case EINVAL: return "invalid argument";
	case ENOMEM: return "out of memory";
	case EAGAIN: return "would block (buffer full or empty)";
	case EBADF: return "bad or stale connection handle";
	case ENOTCONN: return "not connected";
	case EPIPE: return "sending side already shut down";
	case ECONNRESET: return "connection reset by peer";
	case ECONNREFUSED: return "connection refused";
	case ECONNABORTED: return "connection aborted";
	case ETIMEDOUT: return "connection timed out";
	case EADDRINUSE: return "address already in use";
	case EADDRNOTAVAIL: return "no free local port";
	case ENOBUFS: return "no free control block";
	case EBADMSG: return "malformed frame or migration blob";
	case ENOTSUP: return "not supported";
	case ENOSPC: return "no room in buffer";
	case EEXIST: return "already exists";
	case EBUSY: return "data queued to send";
	default: return "unknown error";
	}
}
