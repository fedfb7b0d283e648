/* test_checksum.c — the word-at-a-time Internet checksum (wire/checksum.c) against a
 * byte-pair reference (RFC 1071 as written): every length 0..2000 at every alignment,
 * starting sums, the copy variant, pieces at odd offsets, carries at the extremes. */
#include <stdlib.h>

#include "testlib.h"
#include "utcp_wire.h"

#define MAXLEN 2000
#define ALIGNS 8

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;          /* xorshift64 */

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static void fill(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
}

/* RFC 1071 as written: big-endian 16-bit words, a zero-padded odd byte, folded. */
static uint16_t ref_csum(uint32_t sum, const uint8_t *p, size_t len)
{
	uint64_t acc = sum;

	for (size_t i = 0; i + 1 < len; i += 2)
		acc += (uint32_t)((p[i] << 8) | p[i + 1]);
	if (len & 1)
		acc += (uint32_t)(p[len - 1] << 8);
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (uint16_t)~acc;
}

static uint8_t buf[MAXLEN + 64], dst[MAXLEN + 64];

TEST(test_csum_every_length_and_alignment)
{
	for (unsigned a = 0; a < ALIGNS; a++)
		for (size_t len = 0; len <= MAXLEN; len++) {
			uint32_t start = (uint32_t)(rnd() & 0x1ffff);

			fill(buf + a, len);
			if (utcp_csum_fold(utcp_csum_add(start, buf + a, len)) != ref_csum(start, buf + a, len))
				FAIL("len %zu align %u start 0x%x: 0x%04x != 0x%04x", len, a, start,
				     utcp_csum_fold(utcp_csum_add(start, buf + a, len)),
				     ref_csum(start, buf + a, len));
		}
}

TEST(test_csum_large_starting_sums)
{
	/* A caller's 32-bit accumulator may be near its top: the wrap is an end-around carry. */
	static const uint32_t starts[] = {0, 1, 0xffff, 0x10000, 0x1fffe, 0x7fffffff, 0xfffeffff,
					  0xffff0000, 0xfffffffe, 0xffffffff};

	fill(buf, MAXLEN);
	for (unsigned i = 0; i < sizeof(starts) / sizeof(starts[0]); i++)
		for (size_t len = 0; len <= 67; len++)
			CHECK_U32(utcp_csum_fold(utcp_csum_add(starts[i], buf + 1, len)),
				  ref_csum(starts[i], buf + 1, len));
}

TEST(test_csum_extremes_carry)
{
	static uint8_t big[65536];

	/* All ones: every 64-bit add carries.  All zeros: the sum stays +0. */
	memset(big, 0xff, sizeof(big));
	for (size_t len = 0; len <= 70; len++)
		CHECK_U32(utcp_csum_fold(utcp_csum_add(0, big, len)), ref_csum(0, big, len));
	CHECK_U32(utcp_csum_fold(utcp_csum_add(0, big, sizeof(big))), ref_csum(0, big, sizeof(big)));
	CHECK_U32(utcp_csum_fold(utcp_csum_add(0, big, 65535)), ref_csum(0, big, 65535));
	memset(big, 0, sizeof(big));
	CHECK_U32(utcp_csum_fold(utcp_csum_add(0, big, 1500)), 0xffff);
	big[7] = 0xff;
	big[1498] = 0xff;
	CHECK_U32(utcp_csum_fold(utcp_csum_add(0, big, 1500)), ref_csum(0, big, 1500));
	/* Bytes that sum to 0xffff in one's complement: the result is -0 (0), as the reference. */
	memset(big, 0, 16);
	big[0] = 0xff;
	big[1] = 0xff;
	CHECK_U32(utcp_csum_fold(utcp_csum_add(0, big, 16)), ref_csum(0, big, 16));
	CHECK_U32(utcp_csum_fold(utcp_csum_add(0, big, 16)), 0);
}

TEST(test_csum_copy_every_length_and_alignment)
{
	for (unsigned sa = 0; sa < ALIGNS; sa++)
		for (unsigned da = 0; da < ALIGNS; da += 3)
			for (size_t len = 0; len <= MAXLEN; len += (len < 80 ? 1 : 7)) {
				uint32_t start = (uint32_t)(rnd() & 0xfffff), s;

				fill(buf + sa, len);
				memset(dst, 0xa5, sizeof(dst));
				s = utcp_csum_copy(dst + da, buf + sa, len, start);
				if (utcp_csum_fold(s) != ref_csum(start, buf + sa, len))
					FAIL("len %zu src %u dst %u: sum differs", len, sa, da);
				CHECK_MEM(dst + da, buf + sa, len);
				/* nothing written around the copy */
				for (unsigned k = 0; k < da; k++)
					CHECK_EQ(dst[k], 0xa5);
				for (size_t k = da + len; k < sizeof(dst); k++)
					CHECK_EQ(dst[k], 0xa5);
			}
}

TEST(test_csum_pieces_at_any_offset)
{
	/* A payload in two pieces (a wrapped ring) after a header: the second piece may start
	 * at an odd offset. */
	fill(buf, 1500);
	for (size_t cut = 0; cut <= 1500; cut++) {
		uint32_t s = utcp_csum_pseudo(0x0a000001u, 0x0a000002u, 6, 1500);
		uint32_t c2;

		s = utcp_csum_add(s, buf, cut);
		c2 = utcp_csum_copy(dst, buf + cut, 1500 - cut, 0);
		s = utcp_csum_add_at(s, cut, c2);
		CHECK_U32(utcp_csum_fold(s),
			  ref_csum(utcp_csum_pseudo(0x0a000001u, 0x0a000002u, 6, 1500), buf, 1500));
	}
	/* A zero-length piece and a zero sum change nothing. */
	CHECK_U32(utcp_csum_add_at(0x1234, 3, 0), 0x1234);
}

TEST(test_csum_segment_roundtrip_random)
{
	/* Every emitted segment, header and payload in two pieces at every split, verifies. */
	struct utcp_tcp t, p;
	enum utcp_drop why;
	uint8_t seg[1600];

	for (unsigned round = 0; round < 400; round++) {
		size_t len = rnd() % 1449, cut = len ? rnd() % (len + 1) : 0;
		int n;

		memset(&t, 0, sizeof(t));
		t.sport = (uint16_t)rnd();
		t.dport = (uint16_t)(rnd() | 1);
		t.seq = (uint32_t)rnd();
		t.ack = (uint32_t)rnd();
		t.flags = UTCP_TH_ACK | UTCP_TH_PSH;
		t.wnd = (uint16_t)rnd();
		t.opt.has_ts = rnd() & 1;
		t.opt.tsval = (uint32_t)rnd();
		t.opt.tsecr = (uint32_t)rnd();
		t.opt.nsack = (uint8_t)(rnd() % 4);
		for (unsigned b = 0; b < t.opt.nsack; b++) {
			t.opt.sack[b].left = (uint32_t)rnd();
			t.opt.sack[b].right = (uint32_t)rnd();
		}
		fill(buf + 1, len);
		n = utcp_tcp_emit2(seg, sizeof(seg), 0x0a000001u, 0x0a000002u, &t, buf + 1, cut,
				   buf + 1 + cut, len - cut);
		CHECK(n > 0);
		CHECK_EQ(utcp_tcp_parse(seg, (size_t)n, 0x0a000001u, 0x0a000002u, true, &p, &why), 0);
		CHECK_EQ(p.payload_len, len);
		CHECK_MEM(p.payload, buf + 1, len);
		CHECK_EQ(p.seq, t.seq);
		CHECK_EQ(p.opt.has_ts, t.opt.has_ts);
		CHECK_EQ(p.opt.nsack, t.opt.nsack);
	}
}

TEST(test_tcp_options_len_matches_emit)
{
	/* The length computed without writing equals what emission writes, for every mix. */
	uint8_t out[40];

	for (unsigned m = 0; m < 16 * 6; m++) {
		struct utcp_tcp_opts o;

		memset(&o, 0, sizeof(o));
		o.has_mss = m & 1;
		o.has_ws = (m >> 1) & 1;
		o.sack_ok = (m >> 2) & 1;
		o.has_ts = (m >> 3) & 1;
		o.nsack = (uint8_t)(m / 16);    /* 0..5: more than fit is truncated */
		o.mss = 1460;
		o.ws = 7;
		CHECK_EQ(utcp_tcp_options_len(&o), utcp_tcp_emit_options(out, sizeof(out), &o));
		CHECK(utcp_tcp_options_len(&o) <= 40);
		CHECK_EQ(utcp_tcp_options_len(&o) % 4, 0);
	}
}
