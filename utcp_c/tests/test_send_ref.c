/* test_send_ref.c — zero-copy send (utcp_send_ref): referenced bytes go out and are
 * retransmitted byte-exact, in order with copied ones; every reference is released exactly once
 * (acknowledged, abort, RST, close, timeout, stack destroyed, a move); the send-buffer
 * accounting; the FIN on the last segment of a corked response; migration refuses queued data.
 * Packet traces against the scripted peer (harness.h), then end to end over `pair` through
 * loss, reordering and duplication, with every released buffer poisoned and freed at once (a
 * late read shows as a corrupt byte, or under ASan as a use after free). */
#include <errno.h>
#include <stdlib.h>

#include "harness.h"
#include "testlib.h"
#include "utcp.h"

#define W 65535
#define MSS 536                 /* the harness peer sends no MSS option */

/* ---- releases, recorded ---- */

#define REL_MAX 4096
struct rel {
	unsigned n;
	uint64_t cookie[REL_MAX];
	utcp_cid cid[REL_MAX];
};

static void on_release(void *ctx, utcp_cid c, uint64_t cookie)
{
	struct rel *r = ctx;

	if (r->n == REL_MAX)
		FAIL("too many releases");
	r->cookie[r->n] = cookie;
	r->cid[r->n++] = c;
}

static unsigned released(const struct rel *r, uint64_t cookie)
{
	unsigned k = 0;

	for (unsigned i = 0; i < r->n; i++)
		k += r->cookie[i] == cookie;
	return k;
}

static uint8_t pat(uint64_t i, uint32_t salt)
{
	uint64_t x = (i + salt) * 0x9e3779b97f4a7c15ULL;

	return (uint8_t)(x >> 56);
}

static void fill(uint8_t *p, size_t n, uint64_t from, uint32_t salt)
{
	for (size_t i = 0; i < n; i++)
		p[i] = pat(from + i, salt);
}

/* An established passive connection whose releases land in *r; the peer offers SACK when
 * the stack's config has it on. */
static struct h *established(const struct utcp_config *cfg, struct rel *r)
{
	struct h *h = h_new(cfg);

	memset(r, 0, sizeof(*r));
	utcp_set_ref_release(h->st, on_release, r);
	h->syn_opts.sack_ok = cfg && cfg->sack;
	h_established_passive(h);
	return h;
}

/* Pops every segment emitted and writes its payload at its offset from ISS + 1 into out
 * (cap bytes); returns the end offset of the highest byte seen.  *fin: a FIN was seen, and
 * *fin_off its offset (the FIN's sequence number - ISS - 1). */
static uint32_t collect(struct h *h, uint8_t *out, uint32_t cap, bool *fin, uint32_t *fin_off,
			unsigned *segs)
{
	struct h_seg s;
	uint32_t hi = 0;

	while (h_pop(h, &s)) {
		uint32_t off = s.th.seq - (h->iss + 1);

		if (segs)
			(*segs)++;
		if (s.th.payload_len) {
			CHECK(off + s.th.payload_len <= cap);
			memcpy(out + off, s.payload, s.th.payload_len);
			if (off + s.th.payload_len > hi)
				hi = off + (uint32_t)s.th.payload_len;
		}
		if (fin && (s.th.flags & FIN)) {
			*fin = true;
			*fin_off = off + (uint32_t)s.th.payload_len;
		}
	}
	return hi;
}

/* The next segment carries len bytes of body from offset off, at ISS + 1 + off, acknowledging
 * the peer's 1001 — byte for byte. */
#define EXPECT_BODY(h, fl, body, off, len) \
	expect_body_at(__FILE__, __LINE__, (h), (fl), (body), (off), (len))
static void expect_body_at(const char *file, int line, struct h *h, uint8_t flags,
			   const uint8_t *body, uint32_t off, uint32_t len)
{
	struct h_seg s = h_expect_at(file, line, h, flags, h->iss + 1 + off, 1001, len);

	if (memcmp(s.payload, body + off, len) != 0)
		test_fail_at(file, line, "payload differs from body + %" PRIu32, off);
}

/* ---- packet traces ---- */

TEST(test_ref_sent_and_released_when_fully_acked)
{
	static uint8_t body[1200];
	struct rel r;
	struct h *h = established(NULL, &r);
	const struct utcp_stats *stats = utcp_get_stats(h->st);
	struct utcp_conn_info ci = {.sz = sizeof(ci)};

	fill(body, sizeof(body), 0, 1);
	utcp_set_nodelay(h->st, h->conn, true);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 7, h->now), 1200);
	CHECK_EQ(utcp_conn_info(h->st, h->conn, &ci), 0);
	CHECK_EQ(ci.sndbuf_used, 1200);
	CHECK_EQ(ci.sndbuf_refs, 1200);
	CHECK_EQ(ci.send_refs, 1);
	EXPECT_BODY(h, ACK, body, 0, MSS);
	EXPECT_BODY(h, ACK, body, MSS, MSS);
	EXPECT_BODY(h, ACK | PSH, body, 2 * MSS, 1200 - 2 * MSS);
	EXPECT_NONE(h);
	/* partial ACKs release nothing: the reference is released once all of it is acknowledged */
	h_send(h, ACK, 1001, h->iss + 1 + MSS, W, NULL, 0);
	CHECK_EQ(r.n, 0);
	h_send(h, ACK, 1001, h->iss + 1200, W, NULL, 0);
	CHECK_EQ(r.n, 0);
	h_send(h, ACK, 1001, h->iss + 1201, W, NULL, 0);
	CHECK_EQ(r.n, 1);
	CHECK_EQ(r.cookie[0], 7);
	CHECK_EQ(r.cid[0], h->conn);
	CHECK_EQ(stats->send_refs, 1);
	CHECK_EQ(stats->send_refs_released, 1);
	CHECK_EQ(stats->send_ref_bytes, 1200);
	CHECK_EQ(utcp_conn_info(h->st, h->conn, &ci), 0);
	CHECK_EQ(ci.sndbuf_used, 0);
	CHECK_EQ(ci.send_refs, 0);
	h_free(h);
	CHECK_EQ(r.n, 1);               /* nothing more at destroy */
}

/* Copies and references interleaved (odd lengths, single bytes, a ring that wraps) come out as
 * one stream in call order; segments of more than two pieces carry a valid checksum (h_pop
 * verifies it). */
TEST(test_ref_interleaved_with_copies_keeps_order)
{
	struct utcp_config cfg;
	static uint8_t expect[8192], got[8192], refmem[8192];
	uint32_t pos = 0, fin_off = 0, hi;
	bool fin = false;
	unsigned segs = 0;
	struct rel r;
	struct h *h;

	h_default_config(&cfg);
	cfg.sndbuf = 4096;
	h = established(&cfg, &r);
	utcp_set_nodelay(h->st, h->conn, true);
	/* move the ring's head near its end: 3000 bytes sent and acknowledged */
	fill(expect, 3000, 0, 3);
	CHECK_EQ(utcp_send(h->st, h->conn, expect, 3000, h->now), 3000);
	h_skip(h);
	h_send(h, ACK, 1001, h->iss + 3001, W, NULL, 0);
	h_skip(h);
	/* then, corked, a mix: sizes chosen so segments hold 3 to 7 pieces and the ring wraps */
	CHECK_EQ(utcp_set_cork(h->st, h->conn, true, h->now), 0);
	static const uint32_t sizes[] = {101, 1, 57, 3, 1, 1, 700, 333, 2, 5, 900, 77, 1, 600};
	fill(refmem, sizeof(refmem), 0, 4);
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint8_t tmp[1024];

		if (i % 2) {
			CHECK_EQ(utcp_send_ref(h->st, h->conn, refmem + pos, sizes[i], i, h->now),
				 sizes[i]);
			memcpy(expect + pos, refmem + pos, sizes[i]);
		} else {
			fill(tmp, sizes[i], pos, 5);
			CHECK_EQ(utcp_send(h->st, h->conn, tmp, sizes[i], h->now), sizes[i]);
			memcpy(expect + pos, tmp, sizes[i]);
		}
		pos += sizes[i];
	}
	CHECK_EQ(utcp_shutdown(h->st, h->conn, h->now), 0);
	CHECK_EQ(utcp_set_cork(h->st, h->conn, false, h->now), 0);
	hi = collect(h, got, sizeof(got), &fin, &fin_off, &segs);
	CHECK_EQ(hi - 3000, pos);
	CHECK_MEM(got + 3000, expect, pos);
	CHECK(fin);
	CHECK_EQ(fin_off, 3000 + pos);
	CHECK_EQ(segs, (pos + MSS - 1) / MSS);  /* full segments, the FIN on the last one */
	CHECK_EQ(r.n, 0);
	h_send(h, ACK, 1001, h->iss + 1 + 3000 + pos + 1, W, NULL, 0);
	CHECK_EQ(r.n, 7);
	for (unsigned i = 0; i < 7; i++)
		CHECK_EQ(r.cookie[i], 2 * i + 1);       /* released in order, each once */
	h_free(h);
	CHECK_EQ(r.n, 7);
}

/* The reference is read where it is, at every transmission: no hidden copy (the bytes are
 * changed between the first transmission and the retransmission — which the contract forbids
 * a caller to do — and the retransmission carries the new ones). */
TEST(test_ref_retransmission_after_rto_reads_the_reference)
{
	static uint8_t body[1000];
	struct rel r;
	struct h *h = established(NULL, &r);

	fill(body, sizeof(body), 0, 6);
	utcp_set_nodelay(h->st, h->conn, true);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 1, h->now), 1000);
	EXPECT_BODY(h, ACK, body, 0, MSS);
	EXPECT(h, ACK | PSH, h->iss + 1 + MSS, 1001, 1000 - MSS);
	EXPECT_NONE(h);
	body[0] ^= 0xff;
	h_advance(h, h->now + 1000000);         /* RTO (1 s, RFC 6298 (2.1)) */
	EXPECT_BODY(h, ACK, body, 0, MSS);
	h_send(h, ACK, 1001, h->iss + 1 + MSS, W, NULL, 0);
	EXPECT_BODY(h, ACK | PSH, body, MSS, 1000 - MSS);   /* go-back-N */
	CHECK_EQ(r.n, 0);
	h_send(h, ACK, 1001, h->iss + 1001, W, NULL, 0);
	CHECK_EQ(r.n, 1);
	h_free(h);
	CHECK_EQ(r.n, 1);
}

/* Fast retransmission from the SACK scoreboard and the tail loss probe read the reference. */
TEST(test_ref_sack_retransmission_and_tlp_byte_exact)
{
	struct utcp_config cfg;
	static uint8_t body[8 * MSS];
	struct utcp_tcp_opts o;
	struct rel r;
	struct h *h;

	h_default_config(&cfg);
	cfg.sack = true;
	h = established(&cfg, &r);
	fill(body, sizeof(body), 0, 7);
	utcp_set_nodelay(h->st, h->conn, true);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 9, h->now), (ssize_t)sizeof(body));
	for (unsigned i = 0; i < 8; i++)
		EXPECT(h, ACK, h->iss + 1 + i * MSS, 1001, MSS);
	EXPECT_NONE(h);
	/* the first segment is lost: three SACKs of what follows it */
	memset(&o, 0, sizeof(o));
	o.nsack = 1;
	o.sack[0].left = h->iss + 1 + MSS;
	for (unsigned i = 2; i <= 4; i++) {
		o.sack[0].right = h->iss + 1 + i * MSS;
		h->now += 100;
		h_send_opts(h, ACK, 1001, h->iss + 1, W, NULL, 0, &o);
	}
	EXPECT_BODY(h, ACK, body, 0, MSS);
	CHECK(utcp_get_stats(h->st)->retransmits >= 1);
	/* everything but the last segment arrives; its loss is found by the probe */
	h_send(h, ACK, 1001, h->iss + 1 + 7 * MSS, W, NULL, 0);
	h_skip(h);
	CHECK_EQ(r.n, 0);
	for (unsigned i = 0; i < 100 && !utcp_get_stats(h->st)->tail_loss_probes; i++)
		h_advance(h, h->now + 10000);
	CHECK(utcp_get_stats(h->st)->tail_loss_probes >= 1);
	EXPECT_BODY(h, ACK, body, 7 * MSS, MSS);
	h_send(h, ACK, 1001, h->iss + 1 + 8 * MSS, W, NULL, 0);
	CHECK_EQ(r.n, 1);
	CHECK_EQ(r.cookie[0], 9);
	h_free(h);
	CHECK_EQ(r.n, 1);
}

TEST(test_ref_released_on_abort)
{
	static uint8_t body[3000];
	struct rel r;
	struct h *h = established(NULL, &r);

	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, 1000, 1, h->now), 1000);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body + 1000, 1000, 2, h->now), 1000);
	h_skip(h);
	h_send(h, ACK, 1001, h->iss + 1 + 500, W, NULL, 0);    /* part of the first acknowledged */
	CHECK_EQ(r.n, 0);
	CHECK_EQ(utcp_abort(h->st, h->conn, h->now), 0);
	{
		struct h_seg s;

		CHECK(h_pop(h, &s));
		CHECK(s.th.flags & RST);
	}
	CHECK_EQ(r.n, 2);
	CHECK_EQ(released(&r, 1), 1);
	CHECK_EQ(released(&r, 2), 1);
	CHECK_EQ(utcp_get_stats(h->st)->send_refs_released, 2);
	h_free(h);
	CHECK_EQ(r.n, 2);
}

TEST(test_ref_released_on_rst_from_peer)
{
	static uint8_t body[100];
	struct rel r;
	struct h *h = established(NULL, &r);
	struct utcp_event ev;

	h_send(h, ACK, 1001, h->iss + 1, 0, NULL, 0);          /* zero window: nothing leaves */
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 5, h->now), 100);
	h_skip(h);
	(void)utcp_next_event(h->st, &ev);
	h_send(h, RST, 1001, 0, 0, NULL, 0);
	CHECK_EQ(r.n, 1);
	CHECK_EQ(r.cookie[0], 5);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_CLOSED);
	CHECK_EQ(ev.error, -ECONNRESET);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 6, h->now), -ECONNRESET);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	h_free(h);
	CHECK_EQ(r.n, 1);
}

/* Closing with unread input is a reset (RFC 2525 2.17): the unsent reference goes back at once. */
TEST(test_ref_released_on_close_with_unread_data)
{
	static uint8_t body[100];
	struct rel r;
	struct h *h = established(NULL, &r);

	h_send(h, ACK, 1001, h->iss + 1, 0, NULL, 0);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 5, h->now), 100);
	h_send(h, ACK | PSH, 1001, h->iss + 1, 0, "abc", 3);
	h_skip(h);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	CHECK_EQ(r.n, 1);
	h_free(h);
	CHECK_EQ(r.n, 1);
}

/* An orderly close with the reference still unsent (zero window): the stack finishes on its
 * own — data, then the FIN on the same segment — and releases it when it is acknowledged. */
TEST(test_ref_close_with_unsent_data_sends_then_releases)
{
	static uint8_t body[300];
	struct rel r;
	struct h *h = established(NULL, &r);

	fill(body, sizeof(body), 0, 8);
	h_send(h, ACK, 1001, h->iss + 1, 0, NULL, 0);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 3, h->now), 300);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);
	EXPECT_NONE(h);
	CHECK_EQ(r.n, 0);
	h_send(h, ACK, 1001, h->iss + 1, W, NULL, 0);          /* the window opens */
	EXPECT_BODY(h, ACK | FIN | PSH, body, 0, 300);
	CHECK_EQ(r.n, 0);
	h_send(h, ACK, 1001, h->iss + 302, W, NULL, 0);
	CHECK_EQ(r.n, 1);
	CHECK_EQ(r.cookie[0], 3);
	h_free(h);
	CHECK_EQ(r.n, 1);
}

TEST(test_ref_released_on_timeout)
{
	struct utcp_config cfg;
	static uint8_t body[100];
	struct utcp_event ev;
	struct rel r;
	struct h *h;
	bool closed = false;

	h_default_config(&cfg);
	cfg.data_retries = 2;
	h = established(&cfg, &r);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 4, h->now), 100);
	for (unsigned i = 0; i < 100 && !closed; i++) {
		h_advance(h, h->now + 1000000);
		h_skip(h);
		while (utcp_next_event(h->st, &ev) == 1)
			closed |= (ev.events & UTCP_EV_CLOSED) && ev.error == -ETIMEDOUT;
	}
	CHECK(closed);
	CHECK_EQ(r.n, 1);
	h_free(h);
	CHECK_EQ(r.n, 1);
}

TEST(test_ref_released_on_stack_destroy)
{
	static uint8_t body[100];
	struct rel r;
	struct h *h = established(NULL, &r);
	utcp_cid c = h->conn;

	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, 50, 1, h->now), 50);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body + 50, 50, 2, h->now), 50);
	CHECK_EQ(utcp_close(h->st, h->conn, h->now), 0);    /* orphaned, still sending */
	h_skip(h);
	CHECK_EQ(r.n, 0);
	h_free(h);
	CHECK_EQ(r.n, 2);
	CHECK_EQ(r.cookie[0], 1);
	CHECK_EQ(r.cookie[1], 2);
	CHECK_EQ(r.cid[0], c);
}

/* Referenced bytes count against the send buffer as copies do; references per connection are
 * bounded by cfg.send_refs; WRITABLE comes when an ACK frees either. */
TEST(test_ref_accounting_shares_the_send_buffer)
{
	struct utcp_config cfg;
	static uint8_t big[100000];
	struct utcp_conn_status cs;
	struct utcp_event ev;
	struct rel r;
	struct h *h;

	h_default_config(&cfg);
	cfg.send_refs = 4;
	h = established(&cfg, &r);
	h_send(h, ACK, 1001, h->iss + 1, 0, NULL, 0);          /* zero window: all stays queued */
	(void)utcp_next_event(h->st, &ev);
	CHECK_EQ(utcp_send(h->st, h->conn, big, 1000, h->now), 1000);
	/* a prefix only: the room left under sndbuf (64 KB) */
	CHECK_EQ(utcp_send_ref(h->st, h->conn, big, sizeof(big), 1, h->now), 65536 - 1000);
	CHECK_EQ(utcp_send(h->st, h->conn, big, 1, h->now), -EAGAIN);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, big, 1, 2, h->now), -EAGAIN);
	CHECK_EQ(utcp_conn_status(h->st, h->conn, &cs), 0);
	CHECK_EQ(cs.snd_queued, 65536);
	CHECK_EQ(cs.snd_cap, 65536);
	CHECK(!(utcp_conn_ready(h->st, h->conn) & UTCP_READY_OUT));
	CHECK_EQ(utcp_stack_unacked(h->st), 65536);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, big, 0, 3, h->now), 0);     /* no reference */
	utcp_abort(h->st, h->conn, h->now);
	CHECK_EQ(r.n, 1);
	h_free(h);

	/* an SO_SNDBUF cap bounds both too; the slots bound the count */
	h = established(&cfg, &r);
	h_send(h, ACK, 1001, h->iss + 1, 0, NULL, 0);
	(void)utcp_next_event(h->st, &ev);
	CHECK_EQ(utcp_set_bufcap(h->st, h->conn, 2000, 0), 0);
	for (unsigned i = 0; i < 4; i++)
		CHECK_EQ(utcp_send_ref(h->st, h->conn, big, 10, 10 + i, h->now), 10);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, big, 10, 20, h->now), -EAGAIN);    /* no slot */
	CHECK_EQ(utcp_send(h->st, h->conn, big, 5000, h->now), 2000 - 40);       /* the cap */
	CHECK(!(utcp_conn_ready(h->st, h->conn) & UTCP_READY_OUT));
	h_send(h, ACK, 1001, h->iss + 1, W, NULL, 0);
	h_skip(h);
	h_send(h, ACK, 1001, h->iss + 1 + 15, W, NULL, 0);      /* the first reference and half */
	CHECK_EQ(r.n, 1);
	ev = EVENT(h);
	CHECK(ev.events & UTCP_EV_WRITABLE);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, big, 10, 21, h->now), 10);
	utcp_abort(h->st, h->conn, h->now);
	CHECK_EQ(r.n, 5);
	for (unsigned i = 1; i < 4; i++)
		CHECK_EQ(released(&r, 10 + i), 1);
	CHECK_EQ(released(&r, 21), 1);
	h_free(h);
}

TEST(test_ref_disabled_and_limits)
{
	struct utcp_config cfg;
	struct utcp_stack *st;
	static uint8_t body[10];
	struct rel r;
	struct h *h;

	h_default_config(&cfg);
	cfg.send_refs = UTCP_SEND_REFS_MAX + 1;
	{
		struct utcp_port p = {0};
		static const struct utcp_port_ops ops = {.sz = sizeof(ops)};

		p.ops = &ops;
		CHECK_EQ(utcp_stack_create(&cfg, &p, 0, &st), -EINVAL);
	}
	cfg.send_refs = 0;
	h = established(&cfg, &r);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 1, h->now), -ENOTSUP);
	CHECK_EQ(utcp_send(h->st, h->conn, body, sizeof(body), h->now), 10);
	CHECK_EQ(utcp_send_ref(h->st, UTCP_CID_NONE, body, sizeof(body), 1, h->now), -EBADF);
	CHECK_EQ(utcp_shutdown(h->st, h->conn, h->now), 0);
	h_free(h);
	cfg.send_refs = UTCP_SEND_REFS_MAX;
	h = established(&cfg, &r);
	for (unsigned i = 0; i < UTCP_SEND_REFS_MAX; i++)
		CHECK_EQ(utcp_send_ref(h->st, h->conn, body + i % 10, 1, i, h->now), 1);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, 1, 99, h->now), -EAGAIN);
	CHECK_EQ(utcp_shutdown(h->st, h->conn, h->now), 0);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, 1, 99, h->now), -EPIPE);
	h_free(h);
	CHECK_EQ(r.n, UTCP_SEND_REFS_MAX);
}

/* The response shape of mstack-httpd: corked, the head copied, the body by reference, then
 * shutdown and uncork: full segments, and the FIN rides on the last one. */
TEST(test_ref_corked_response_fin_on_last_segment)
{
	static uint8_t body[5000];
	static uint8_t got[8192];
	const char *head = "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n";
	uint32_t hl = (uint32_t)strlen(head), fin_off = 0, hi;
	unsigned segs = 0;
	bool fin = false;
	struct rel r;
	struct h *h;
	struct utcp_config cfg;

	h_default_config(&cfg);
	cfg.initial_window_segs = 20;
	h = established(&cfg, &r);
	fill(body, sizeof(body), 0, 9);
	CHECK_EQ(utcp_set_cork(h->st, h->conn, true, h->now), 0);
	CHECK_EQ(utcp_send(h->st, h->conn, head, hl, h->now), hl);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 1, h->now), 5000);
	CHECK_EQ(utcp_shutdown(h->st, h->conn, h->now), 0);
	CHECK_EQ(utcp_set_cork(h->st, h->conn, false, h->now), 0);
	hi = collect(h, got, sizeof(got), &fin, &fin_off, &segs);
	CHECK_EQ(hi, hl + 5000);
	CHECK_MEM(got, head, hl);
	CHECK_MEM(got + hl, body, 5000);
	CHECK(fin);
	CHECK_EQ(fin_off, hl + 5000);
	CHECK_EQ(segs, (hl + 5000 + MSS - 1) / MSS);       /* no segment of its own for the FIN */
	h_send(h, ACK, 1001, h->iss + 1 + hl + 5000 + 1, W, NULL, 0);
	CHECK_EQ(r.n, 1);
	h_free(h);
}

/* Zero window: the persist timer probes; once the window opens the referenced bytes go out. */
TEST(test_ref_zero_window_probe_then_send)
{
	static uint8_t body[800];
	struct rel r;
	struct h *h = established(NULL, &r);

	fill(body, sizeof(body), 0, 10);
	utcp_set_nodelay(h->st, h->conn, true);
	h_send(h, ACK, 1001, h->iss + 1, 0, NULL, 0);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 1, h->now), 800);
	EXPECT_NONE(h);
	h_advance(h, h->now + 1000000);
	EXPECT(h, ACK, h->iss, 1001, 0);                        /* window probe: SND.UNA - 1 */
	h_send(h, ACK, 1001, h->iss + 1, 600, NULL, 0);
	EXPECT_BODY(h, ACK, body, 0, MSS);
	h_send(h, ACK, 1001, h->iss + 1 + MSS, W, NULL, 0);
	EXPECT_BODY(h, ACK | PSH, body, MSS, 800 - MSS);
	h_send(h, ACK, 1001, h->iss + 801, W, NULL, 0);
	CHECK_EQ(r.n, 1);
	h_free(h);
}

/* Migration: an image carries no send data, so a connection with anything queued to send is
 * not frozen (-EBUSY) and keeps its references; frozen, one written to is not exported and,
 * released either way, its references go back once. */
TEST(test_ref_migration_refuses_queued_data)
{
	static uint8_t body[100];
	struct utcp_conn_image im;
	struct rel r;
	struct h *h = established(NULL, &r);

	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 1, h->now), 100);
	CHECK_EQ(utcp_conn_freeze(h->st, h->conn), -EBUSY);
	h_skip(h);
	h_send(h, ACK, 1001, h->iss + 101, W, NULL, 0);
	CHECK_EQ(r.n, 1);
	CHECK_EQ(utcp_send(h->st, h->conn, body, 10, h->now), 10);
	CHECK_EQ(utcp_conn_freeze(h->st, h->conn), -EBUSY);    /* copies too */
	h_skip(h);
	h_send(h, ACK, 1001, h->iss + 111, W, NULL, 0);
	CHECK_EQ(utcp_conn_freeze(h->st, h->conn), 0);          /* nothing queued: it may move */
	CHECK_EQ(utcp_conn_export(h->st, h->conn, &im), 0);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 2, h->now), 100);
	EXPECT_NONE(h);                                         /* frozen: mute */
	CHECK_EQ(utcp_conn_export(h->st, h->conn, &im), -EBUSY);
	CHECK_EQ(utcp_conn_release(h->st, h->conn, true, h->now), 0);
	CHECK_EQ(r.n, 2);
	CHECK_EQ(r.cookie[1], 2);
	h_free(h);
	CHECK_EQ(r.n, 2);

	/* not moved: reset, as closing the listener would have; the reference goes back once */
	h = established(NULL, &r);
	CHECK_EQ(utcp_conn_freeze(h->st, h->conn), 0);
	CHECK_EQ(utcp_send_ref(h->st, h->conn, body, sizeof(body), 3, h->now), 100);
	CHECK_EQ(utcp_conn_release(h->st, h->conn, false, h->now), 0);
	CHECK_EQ(r.n, 1);
	h_free(h);
	CHECK_EQ(r.n, 1);
}

/* ---- end to end over `pair`, impaired ---- */

#define A_IP 0x0a000001u
#define B_IP 0x0a000002u
static const uint8_t a_mac[6] = {2, 0, 0, 0, 0, 0xa};
static const uint8_t b_mac[6] = {2, 0, 0, 0, 0, 0xb};

/* A referenced buffer: poisoned and freed when released. */
struct rbuf {
	uint8_t *p;
	uint32_t len;
	bool released;
};

struct e2e {
	struct utcp_pair *pair;
	struct utcp_stack *a, *b;          /* a: client, b: server (sends by reference) */
	uint64_t now;
	struct rbuf bufs[REL_MAX];
	unsigned nbufs, nreleased;
	uint64_t rng;
};

static void e2e_release(void *ctx, utcp_cid c, uint64_t cookie)
{
	struct e2e *e = ctx;
	struct rbuf *b;

	(void)c;
	CHECK(cookie < e->nbufs);
	b = &e->bufs[cookie];
	if (b->released)
		FAIL("reference %llu released twice", (unsigned long long)cookie);
	b->released = true;
	e->nreleased++;
	memset(b->p, 0xa5, b->len);        /* a later read would send these */
	free(b->p);
	b->p = NULL;
}

static uint32_t rnd(struct e2e *e, uint32_t n)
{
	e->rng = e->rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(e->rng >> 33) % n;
}

static void e2e_init(struct e2e *e, uint64_t seed, bool sack, const char *cc)
{
	struct utcp_pair_opts po;
	struct utcp_config ca, cb;
	struct utcp_port pa, pb;

	memset(e, 0, sizeof(*e));
	e->rng = seed;
	memset(&po, 0, sizeof(po));
	po.sz = sizeof(po);
	po.seed = seed;
	po.queue_frames = 8192;
	for (int d = 0; d < 2; d++) {
		po.dir[d].loss_ppm = 30000;
		po.dir[d].reorder_ppm = 250000;
		po.dir[d].dup_ppm = 10000;
		po.dir[d].corrupt_ppm = 5000;
		po.dir[d].delay_us = 5000;
		po.dir[d].reorder_delay_us = 2000;
	}
	CHECK_EQ(utcp_pair_create(&po, &e->pair), 0);
	pa = utcp_pair_port(e->pair, 0);
	pb = utcp_pair_port(e->pair, 1);
	utcp_config_init(&ca);
	ca.local_ip = A_IP;
	memcpy(ca.local_mac, a_mac, 6);
	memcpy(ca.gw_mac, b_mac, 6);
	ca.max_conns = 64;
	memcpy(ca.isn_key, "keyA-0123456789a", 16);
	ca.sack = sack;
	cb = ca;
	cb.local_ip = B_IP;
	memcpy(cb.local_mac, b_mac, 6);
	memcpy(cb.gw_mac, a_mac, 6);
	memcpy(cb.isn_key, "keyB-0123456789b", 16);
	ca.sack = cb.sack = sack;
	strcpy(cb.cc, cc);
	e->now = 1000000;
	CHECK_EQ(utcp_stack_create(&ca, &pa, e->now, &e->a), 0);
	CHECK_EQ(utcp_stack_create(&cb, &pb, e->now, &e->b), 0);
	utcp_set_ref_release(e->b, e2e_release, e);
	CHECK(utcp_listen(e->b, 80, 64) >= 0);
}

/* One more reference of n pattern bytes at stream offset pos (salt s); its cookie. */
static ssize_t e2e_send_ref(struct e2e *e, utcp_cid c, uint64_t pos, uint32_t n, uint32_t s)
{
	struct rbuf *b;
	ssize_t r;

	CHECK(e->nbufs < REL_MAX);
	b = &e->bufs[e->nbufs];
	b->p = malloc(n);
	CHECK(b->p != NULL);
	b->len = n;
	fill(b->p, n, pos, s);
	r = utcp_send_ref(e->b, c, b->p, n, e->nbufs, e->now);
	if (r > 0) {
		b->len = (uint32_t)r;   /* what the stack holds; the rest is not referenced */
		e->nbufs++;
	} else {
		free(b->p);
		b->p = NULL;
	}
	return r;
}

static void e2e_step(struct e2e *e)
{
	uint64_t next = utcp_pair_next_delivery(e->pair), d;

	if (next == UINT64_MAX)
		next = e->now + 1000;   /* nothing due: time passes all the same (no endless loop) */

	d = utcp_next_deadline(e->a);
	next = d < next ? d : next;
	d = utcp_next_deadline(e->b);
	next = d < next ? d : next;
	if (next != UINT64_MAX && next > e->now)
		e->now = next;
	utcp_poll(e->a, e->now);
	utcp_poll(e->b, e->now);
}

/* The server (b) sends `total` bytes of a pattern as a random mix of copies and references
 * (random sizes, corked or not); the client (a) checks every byte.  Then both close; every
 * reference must have come back exactly once, and none was read after its release (the
 * poisoned bytes would fail the check). */
static void e2e_stream(uint64_t seed, bool sack, const char *cc, uint64_t total)
{
	struct e2e e;
	utcp_cid ca = UTCP_CID_NONE, cb = UTCP_CID_NONE;
	uint64_t sent = 0, got = 0, end = 0;
	static uint8_t buf[65536];
	bool eof = false, shut = false, b_closed = false;
	struct utcp_event ev;

	e2e_init(&e, seed, sack, cc);
	CHECK_EQ(utcp_connect(e.a, B_IP, 80, 0, NULL, e.now, &ca), 0);
	end = e.now + 600000000ull;
	while (!(eof && b_closed)) {
		if (e.now > end)
			FAIL("seed %llu: stuck at %llu of %llu bytes", (unsigned long long)seed,
			     (unsigned long long)got, (unsigned long long)total);
		e2e_step(&e);
		while (utcp_next_event(e.b, &ev) == 1) {
			if (ev.events & UTCP_EV_ACCEPTED)
				cb = ev.conn;
			if ((ev.events & UTCP_EV_CLOSED) && ev.conn == cb) {
				CHECK_EQ(ev.error, 0);
				b_closed = true;
			}
		}
		while (cb != UTCP_CID_NONE && !shut && sent < total) {
			uint32_t n = 1 + rnd(&e, rnd(&e, 4) ? 3000 : 40000);
			bool corked = rnd(&e, 2);
			ssize_t r;

			if (n > total - sent)
				n = (uint32_t)(total - sent);
			utcp_set_cork(e.b, cb, corked, e.now);
			if (rnd(&e, 3)) {
				r = e2e_send_ref(&e, cb, sent, n, 11);
			} else {
				fill(buf, n, sent, 11);
				r = utcp_send(e.b, cb, buf, n, e.now);
			}
			if (r <= 0) {
				CHECK_EQ(r, -EAGAIN);
				break;
			}
			sent += (uint64_t)r;
		}
		if (cb != UTCP_CID_NONE && !shut && sent == total) {
			CHECK_EQ(utcp_shutdown(e.b, cb, e.now), 0);
			utcp_set_cork(e.b, cb, false, e.now);
			shut = true;
		}
		while (utcp_next_event(e.a, &ev) == 1)
			CHECK(!(ev.events & UTCP_EV_CLOSED) || ev.error == 0);
		for (;;) {
			ssize_t r = utcp_recv(e.a, ca, buf, sizeof(buf), e.now);

			if (r == 0 && !eof) {
				eof = true;
				CHECK_EQ(got, total);
				CHECK_EQ(utcp_close(e.a, ca, e.now), 0);
			}
			if (r <= 0)
				break;
			for (ssize_t i = 0; i < r; i++)
				if (buf[i] != pat(got + (uint64_t)i, 11))
					FAIL("seed %llu: byte %llu differs", (unsigned long long)seed,
					     (unsigned long long)(got + (uint64_t)i));
			got += (uint64_t)r;
		}
		utcp_flush(e.a, e.now);
		utcp_flush(e.b, e.now);
	}
	if (getenv("UTCP_FIGURES"))
		fprintf(stderr, "seed %llu: %llu bytes, %u references, %llu retransmits, %llu TLPs\n",
			(unsigned long long)seed, (unsigned long long)total, e.nbufs,
			(unsigned long long)utcp_get_stats(e.b)->retransmits,
			(unsigned long long)utcp_get_stats(e.b)->tail_loss_probes);
	CHECK(utcp_get_stats(e.b)->retransmits > 0);   /* referenced data was resent, byte-exact */
	CHECK(e.nbufs > 10);
	CHECK_EQ(e.nreleased, e.nbufs);
	CHECK_EQ(utcp_get_stats(e.b)->send_refs, e.nbufs);
	CHECK_EQ(utcp_get_stats(e.b)->send_refs_released, e.nbufs);
	CHECK_EQ(utcp_close(e.b, cb, e.now), 0);
	utcp_stack_destroy(e.a);
	utcp_stack_destroy(e.b);
	utcp_pair_destroy(e.pair);
	CHECK_EQ(e.nreleased, e.nbufs);
}

TEST(test_ref_e2e_impaired_sack_seed1) { e2e_stream(1, true, "newreno", 1 << 20); }
TEST(test_ref_e2e_impaired_sack_seed2) { e2e_stream(2, true, "cubic", 1 << 20); }
TEST(test_ref_e2e_impaired_sack_seed3) { e2e_stream(3, true, "newreno", 1 << 20); }
TEST(test_ref_e2e_impaired_no_sack) { e2e_stream(4, false, "newreno", 512 << 10); }

/* Short responses in a row, each the shape of mstack-httpd's (head copied, 32 KB body by
 * reference, corked, FIN), some connections reset by the client mid-response, some left to the
 * stack's destruction: every reference comes back once whatever the end. */
TEST(test_ref_e2e_many_responses_every_end)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: 32768\r\n\r\n";
	struct e2e e;
	static uint8_t buf[65536];
	unsigned done = 0;

	e2e_init(&e, 7, true, "newreno");
	for (unsigned k = 0; k < 40; k++) {
		utcp_cid ca = UTCP_CID_NONE, cb = UTCP_CID_NONE;
		uint64_t got = 0, stop = e.now + 60000000ull;
		bool eof = false, reset = k % 5 == 3, orphan = k == 39;
		struct utcp_event ev;

		CHECK_EQ(utcp_connect(e.a, B_IP, 80, 0, NULL, e.now, &ca), 0);
		while (cb == UTCP_CID_NONE && e.now < stop) {
			e2e_step(&e);
			while (utcp_next_event(e.b, &ev) == 1)
				if (ev.events & UTCP_EV_ACCEPTED)
					cb = ev.conn;
		}
		CHECK(cb != UTCP_CID_NONE);
		if (orphan) {
			/* nothing reaches the client any more: never acknowledged */
			struct utcp_pair_impair cut = {.loss_ppm = 1000000};

			utcp_pair_set_impair(e.pair, 1, &cut);
		}
		utcp_set_cork(e.b, cb, true, e.now);
		CHECK_EQ(utcp_send(e.b, cb, head, sizeof(head) - 1, e.now), (ssize_t)sizeof(head) - 1);
		CHECK_EQ(e2e_send_ref(&e, cb, 0, 32768, k), 32768);
		CHECK_EQ(utcp_shutdown(e.b, cb, e.now), 0);
		utcp_set_cork(e.b, cb, false, e.now);
		if (orphan)
			break;                  /* left in flight: utcp_stack_destroy releases it */
		while (!eof && e.now < stop) {
			ssize_t r;

			e2e_step(&e);
			while (utcp_next_event(e.b, &ev) == 1)
				;
			while (utcp_next_event(e.a, &ev) == 1)
				;
			r = utcp_recv(e.a, ca, buf, sizeof(buf), e.now);
			if (r > 0) {
				if (got >= sizeof(head) - 1)
					for (ssize_t i = 0; i < r; i++)
						CHECK_EQ(buf[i], pat(got - (sizeof(head) - 1) +
									 (uint64_t)i, k));
				got += (uint64_t)r;
				if (reset && got > 4000) {
					utcp_abort(e.a, ca, e.now);     /* the client leaves */
					ca = UTCP_CID_NONE;
					eof = true;
				}
			} else if (r == 0) {
				eof = true;
				CHECK_EQ(got, sizeof(head) - 1 + 32768);
			}
		}
		CHECK(eof);
		if (ca != UTCP_CID_NONE)
			utcp_close(e.a, ca, e.now);
		utcp_close(e.b, cb, e.now);
		done++;
	}
	/* let the stacks finish what they can (the reset ones' RSTs, the last ACKs) */
	for (unsigned i = 0; i < 2000; i++)
		e2e_step(&e);
	CHECK_EQ(done, 39);
	CHECK_EQ(e.nreleased, 39);     /* acknowledged, or reset by the client */
	utcp_stack_destroy(e.a);
	utcp_stack_destroy(e.b);
	utcp_pair_destroy(e.pair);
	CHECK_EQ(e.nbufs, 40);
	CHECK_EQ(e.nreleased, 40);
}
