/* harness.c — packet-trace helpers for the TCP tests (see harness.h). */
#include "harness.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>

#include "utcp_sock.h"

const uint8_t h_local_mac[6] = {0x02, 0, 0, 0, 0, 0x01};
const uint8_t h_peer_mac[6] = {0x02, 0, 0, 0, 0, 0x02};

static int cap_tx(void *ctx, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	struct h *h = ctx;
	unsigned i;

	(void)now;
	for (i = 0; i < n; i++) {
		if (h->ncap == H_MAXCAP)
			return (int)i;
		memcpy(h->cap[h->ncap].data, f[i].data, f[i].len);
		h->cap[h->ncap].len = f[i].len;
		h->ncap++;
	}
	return (int)n;
}

static int cap_rx(void *ctx, struct utcp_frame *f, unsigned max, uint64_t now)
{
	(void)ctx, (void)f, (void)max, (void)now;
	return 0;
}

void h_nop_rx_release(void *ctx, struct utcp_frame *f, unsigned n)
{
	(void)ctx, (void)f, (void)n;
}

int h_nop_kick(void *ctx)
{
	(void)ctx;
	return 0;
}

static const struct utcp_port_ops cap_ops = {
	.sz = sizeof(struct utcp_port_ops),
	.name = "capture",
	.rx_burst = cap_rx,
	.rx_release = h_nop_rx_release,
	.tx_burst = cap_tx,
	.kick = h_nop_kick,
};

void h_run_world(uint64_t *now, uint64_t us, void (*step)(void *world),
		 uint64_t (*next)(void *world), void *world)
{
	uint64_t end = *now + us;

	for (;;) {
		uint64_t t;

		step(world);
		t = next(world);
		if (t > end)
			break;
		*now = t > *now ? t : *now + 1;
	}
	*now = end;
	step(world);
}

void h_default_config(struct utcp_config *c)
{
	utcp_config_init(c);
	c->local_ip = H_LOCAL_IP;
	memcpy(c->local_mac, h_local_mac, 6);
	memcpy(c->gw_mac, h_peer_mac, 6);
	c->max_conns = 8;
	c->sndbuf = 64 * 1024;
	c->rcvbuf = 64 * 1024;
	c->window_scaling = false;
	c->sack = false;
	c->timestamps = false;
	c->time_wait_us = 60000000;
	memcpy(c->isn_key, "0123456789abcdef", 16);
}

struct h *h_new(const struct utcp_config *cfg)
{
	struct h *h = calloc(1, sizeof(*h));
	struct utcp_port port = {&cap_ops, h};

	if (!h)
		FAIL("out of memory");
	if (cfg)
		h->cfg = *cfg;
	else
		h_default_config(&h->cfg);
	h->now = 1000000;
	h->conn = UTCP_CID_NONE;
	h->listener = -1;
	if (utcp_stack_create(&h->cfg, &port, h->now, &h->st) != 0) {
		free(h);
		FAIL("utcp_stack_create failed");
	}
	return h;
}

void h_free(struct h *h)
{
	utcp_stack_destroy(h->st);
	free(h);
}

void h_send_raw(struct h *h, const uint8_t *frame, size_t len)
{
	struct utcp_frame f = {(uint8_t *)frame, (uint32_t)len, 0};

	utcp_input(h->st, &f, 1, h->now);
}

void h_send_opts(struct h *h, uint8_t flags, uint32_t seq, uint32_t ack, uint16_t wnd,
		 const void *data, size_t len, const struct utcp_tcp_opts *opt)
{
	uint8_t f[2048];
	struct utcp_tcp th;
	int tl;

	memset(&th, 0, sizeof(th));
	th.sport = H_PPORT;
	th.dport = H_LPORT;
	th.seq = seq;
	th.ack = ack;
	th.flags = flags;
	th.wnd = wnd;
	if (opt)
		th.opt = *opt;
	utcp_eth_emit(f, sizeof(f), h_local_mac, h_peer_mac, UTCP_ETH_P_IPV4);
	tl = utcp_tcp_emit(f + 34, sizeof(f) - 34, H_PEER_IP, H_LOCAL_IP, &th, data, len);
	CHECK(tl > 0);
	utcp_ipv4_emit(f + 14, 20, H_PEER_IP, H_LOCAL_IP, UTCP_IPPROTO_TCP, (uint16_t)tl, 64, 1);
	h_send_raw(h, f, 34 + (size_t)tl);
}

void h_advance(struct h *h, uint64_t t)
{
	if (t > h->now)
		h->now = t;
	utcp_timers(h->st, h->now);
}

bool h_pop(struct h *h, struct h_seg *out)
{
	struct utcp_eth eth;
	enum utcp_drop why;
	struct h_frame *f;

	utcp_flush(h->st, h->now);      /* frames from API calls leave on flush/poll */
	if (h->rd == h->ncap)
		return false;
	f = &h->cap[h->rd++];
	CHECK_EQ(utcp_eth_parse(f->data, f->len, &eth, &why), 0);
	CHECK_MEM(eth.dst, h_peer_mac, 6);
	CHECK_MEM(eth.src, h_local_mac, 6);
	CHECK_EQ(utcp_ipv4_parse(f->data + 14, f->len - 14, &out->ip, &why), 0);
	CHECK(out->ip.df);
	CHECK_EQ(out->ip.ttl, h->cfg.ttl);
	CHECK_EQ(utcp_tcp_parse(out->ip.payload, out->ip.payload_len, out->ip.src, out->ip.dst, true,
				&out->th, &why), 0);
	memcpy(out->payload, out->th.payload, out->th.payload_len);
	return true;
}

const char *h_flags_str(uint8_t f, char buf[32])
{
	buf[0] = 0;
	if (f & SYN) strcat(buf, "S");
	if (f & FIN) strcat(buf, "F");
	if (f & RST) strcat(buf, "R");
	if (f & PSH) strcat(buf, "P");
	if (f & ACK) strcat(buf, ".");
	if (!buf[0]) strcat(buf, "none");
	return buf;
}

struct h_seg h_expect_at(const char *file, int line, struct h *h, uint8_t flags, uint32_t seq,
			 uint32_t ack, size_t len)
{
	struct h_seg s;
	char b1[32], b2[32];

	if (!h_pop(h, &s))
		test_fail_at(file, line, "expected [%s] seq %u ack %u len %zu, got nothing",
			     h_flags_str(flags, b1), seq, ack, len);
	/* PSH is advisory: compare it only when the expectation has it */
	if ((s.th.flags & (uint8_t)~PSH) != (flags & (uint8_t)~PSH) ||
	    ((flags & PSH) && !(s.th.flags & PSH)) || s.th.seq != seq ||
	    ((flags & ACK) && s.th.ack != ack) || s.th.payload_len != len)
		test_fail_at(file, line,
			     "expected [%s] seq %u ack %u len %zu, got [%s] seq %u ack %u len %zu",
			     h_flags_str(flags, b1), seq, ack, len, h_flags_str(s.th.flags, b2),
			     s.th.seq, s.th.ack, s.th.payload_len);
	return s;
}

void h_expect_none_at(const char *file, int line, struct h *h)
{
	struct h_seg s;
	char b[32];

	if (h_pop(h, &s))
		test_fail_at(file, line, "expected no segment, got [%s] seq %u ack %u len %zu",
			     h_flags_str(s.th.flags, b), s.th.seq, s.th.ack, s.th.payload_len);
}

struct utcp_event h_event_at(const char *file, int line, struct h *h)
{
	struct utcp_event ev;

	if (utcp_next_event(h->st, &ev) != 1)
		test_fail_at(file, line, "expected an event, got none");
	return ev;
}

void h_no_event_at(const char *file, int line, struct h *h)
{
	struct utcp_event ev;

	if (utcp_next_event(h->st, &ev) == 1)
		test_fail_at(file, line, "expected no event, got 0x%x on %u", ev.events, ev.conn);
}

void h_listen(struct h *h)
{
	h->listener = utcp_listen(h->st, H_LPORT, 16);
	CHECK(h->listener >= 0);
}

void h_syn_received(struct h *h)
{
	struct h_seg s;

	h_listen(h);
	h_send_opts(h, SYN, 1000, 0, 65535, NULL, 0, &h->syn_opts);
	h->peer_seq = 1001;
	CHECK(h_pop(h, &s));
	CHECK_EQ(s.th.flags, SYN | ACK);
	CHECK_U32(s.th.ack, 1001);
	h->iss = s.th.seq;
}

void h_established_passive(struct h *h)
{
	struct utcp_event ev;

	h_syn_received(h);
	h_send(h, ACK, 1001, h->iss + 1, 65535, NULL, 0);
	EXPECT_NONE(h);
	ev = EVENT(h);
	CHECK_EQ(ev.events, UTCP_EV_ACCEPTED);
	CHECK_EQ(ev.listener, h->listener);
	h->conn = ev.conn;
}

void h_syn_sent(struct h *h)
{
	struct h_seg s;

	/* The stack connects from port 80 to the peer's 40000, so the harness peer's
	 * frames (40000 -> 80) fit both roles. */
	CHECK_EQ(utcp_connect(h->st, H_PEER_IP, H_PPORT, H_LPORT, NULL, h->now, &h->conn), 0);
	CHECK(h_pop(h, &s));
	CHECK_EQ(s.th.flags, SYN);
	CHECK_EQ(s.th.sport, H_LPORT);
	CHECK_EQ(s.th.dport, H_PPORT);
	h->iss = s.th.seq;
}

void h_established_active(struct h *h)
{
	struct utcp_event ev;

	h_syn_sent(h);
	h_send(h, SYN | ACK, 1000, h->iss + 1, 65535, NULL, 0);
	h->peer_seq = 1001;
	EXPECT(h, ACK, h->iss + 1, 1001, 0);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_CONNECTED);
}

void h_skip(struct h *h)
{
	utcp_flush(h->st, h->now);
	h->rd = h->ncap;
}

/* ---- two stacks with socket tables ---- */

static const uint8_t sw_a_mac[6] = {2, 0, 0, 0, 0, 0xa};
static const uint8_t sw_b_mac[6] = {2, 0, 0, 0, 0, 0xb};

void h_sw_config(struct utcp_config *c, bool side_a)
{
	utcp_config_init(c);
	c->local_ip = side_a ? H_SW_A_IP : H_SW_B_IP;
	memcpy(c->local_mac, side_a ? sw_a_mac : sw_b_mac, 6);
	memcpy(c->gw_mac, side_a ? sw_b_mac : sw_a_mac, 6);
	c->max_conns = 16;
	c->max_listeners = 4;
	c->sndbuf = c->rcvbuf = 65536;
	memcpy(c->isn_key, side_a ? "keyA-0123456789a" : "keyB-0123456789b", 16);
}

void h_sw_init(struct h_sw *w, uint64_t seed)
{
	struct utcp_pair_opts po;
	struct utcp_config a, b;
	struct utcp_port pa, pb;

	memset(w, 0, sizeof(*w));
	memset(&po, 0, sizeof(po));
	po.sz = sizeof(po);
	po.seed = seed;
	po.queue_frames = 4096;
	po.dir[0].delay_us = po.dir[1].delay_us = 1000;        /* 2 ms RTT */
	CHECK_EQ(utcp_pair_create(&po, &w->pair), 0);
	pa = utcp_pair_port(w->pair, 0);
	pb = utcp_pair_port(w->pair, 1);
	h_sw_config(&a, true);
	h_sw_config(&b, false);
	w->now = 1000000;
	CHECK_EQ(utcp_stack_create(&a, &pa, w->now, &w->a), 0);
	CHECK_EQ(utcp_stack_create(&b, &pb, w->now, &w->b), 0);
	CHECK_EQ(utcp_socks_create(w->a, NULL, &w->sa), 0);
	CHECK_EQ(utcp_socks_create(w->b, NULL, &w->sb), 0);
}

void h_sw_free(struct h_sw *w)
{
	utcp_socks_destroy(w->sa, w->now);
	utcp_socks_destroy(w->sb, w->now);
	utcp_stack_destroy(w->a);
	utcp_stack_destroy(w->b);
	utcp_pair_destroy(w->pair);
}

static void sw_on_notify(void *arg, int sk, unsigned ready)
{
	struct h_notes *n = arg;
	unsigned i = (unsigned)sk & 0xfffff;

	CHECK(sk >= 0);
	if (i < H_SW_MAXN) {
		n->count[i]++;
		n->last[i] = ready;
	}
	n->total++;
}

void h_sw_count_notes(struct h_sw *w)
{
	utcp_socks_set_notify(w->sa, sw_on_notify, &w->na);
	utcp_socks_set_notify(w->sb, sw_on_notify, &w->nb);
}

static void sw_step(void *arg)
{
	struct h_sw *w = arg;

	utcp_poll(w->a, w->now);
	utcp_socks_process(w->sa, w->now);
	utcp_poll(w->b, w->now);
	utcp_socks_process(w->sb, w->now);
	utcp_flush(w->a, w->now);
	utcp_flush(w->b, w->now);
}

static uint64_t sw_next(void *arg)
{
	struct h_sw *w = arg;
	uint64_t next = utcp_pair_next_delivery(w->pair), d;

	d = utcp_next_deadline(w->a);
	next = d < next ? d : next;
	d = utcp_next_deadline(w->b);
	return d < next ? d : next;
}

void h_sw_run(struct h_sw *w, uint64_t us)
{
	h_run_world(&w->now, us, sw_step, sw_next, w);
}

int h_sw_listen(struct h_sw *w, int backlog)
{
	int l = utcp_sk_open(w->sb);

	CHECK(l >= 0);
	CHECK_EQ(utcp_sk_listen(w->sb, l, H_SW_PORT, backlog), 0);
	return l;
}

int h_sw_connect(struct h_sw *w)
{
	int c = utcp_sk_open(w->sa);

	CHECK(c >= 0);
	CHECK_EQ(utcp_sk_connect(w->sa, c, H_SW_B_IP, H_SW_PORT, 0, NULL, w->now), -EINPROGRESS);
	return c;
}

int h_sw_pair(struct h_sw *w, int *c, int *s)
{
	int l = h_sw_listen(w, 8);

	*c = h_sw_connect(w);
	h_sw_run(w, 10000);
	*s = utcp_sk_accept(w->sb, l, NULL);
	CHECK(*s >= 0);
	return l;
}

ssize_t h_sk_send_n(struct utcp_socks *ss, int sk, size_t n, int flags, uint64_t now)
{
	static char buf[256 * 1024];
	struct iovec v = {buf, n};

	CHECK(n <= sizeof(buf));
	memset(buf, 'x', n);
	return utcp_sk_send(ss, sk, &v, 1, flags, now);
}

ssize_t h_sk_drain(struct utcp_socks *ss, int sk, uint64_t now)
{
	static char buf[256 * 1024];
	struct iovec v = {buf, sizeof(buf)};
	ssize_t r, total = 0;

	while ((r = utcp_sk_recv(ss, sk, &v, 1, 0, now)) > 0)
		total += r;
	return total;
}
