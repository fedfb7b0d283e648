/* test_pair.c — the pair backend: delivery in virtual time, and each impairment. */
#include <errno.h>
#include <stdlib.h>

#include "testlib.h"
#include "utcp_port.h"

static struct utcp_pair *mk(uint64_t seed, const struct utcp_pair_impair *imp0)
{
	struct utcp_pair_opts o;
	struct utcp_pair *p = NULL;

	memset(&o, 0, sizeof(o));
	o.sz = sizeof(o);
	o.seed = seed;
	o.queue_frames = 128;
	o.frame_size = 256;
	if (imp0)
		o.dir[0] = *imp0;
	CHECK_EQ(utcp_pair_create(&o, &p), 0);
	return p;
}

static void send_seq(struct utcp_port tx, uint8_t first, unsigned n, uint64_t now)
{
	uint8_t buf[64];
	struct utcp_frame f = {buf, sizeof(buf), 0};
	unsigned i;

	for (i = 0; i < n; i++) {
		memset(buf, (uint8_t)(first + i), sizeof(buf));
		CHECK_EQ(tx.ops->tx_burst(tx.ctx, &f, 1, now), 1);
	}
	tx.ops->kick(tx.ctx);
}

TEST(test_pair_delay_and_order)
{
	struct utcp_pair_impair imp = {.delay_us = 1000};
	struct utcp_pair *p = mk(1, &imp);
	struct utcp_port a = utcp_pair_port(p, 0), b = utcp_pair_port(p, 1);
	struct utcp_frame f[8];
	int n, i;

	send_seq(a, 10, 3, 0);
	CHECK_EQ(utcp_pair_next_delivery(p), 1000);
	CHECK_EQ(b.ops->rx_burst(b.ctx, f, 8, 999), 0);
	CHECK_EQ(a.ops->rx_burst(a.ctx, f, 8, 5000), 0);   /* nothing the other way */
	n = b.ops->rx_burst(b.ctx, f, 8, 1000);
	CHECK_EQ(n, 3);
	for (i = 0; i < n; i++) {
		CHECK_EQ(f[i].len, 64);
		CHECK_EQ(f[i].data[0], 10 + i);
	}
	b.ops->rx_release(b.ctx, f, (unsigned)n);
	CHECK(utcp_pair_next_delivery(p) == UINT64_MAX);
	utcp_pair_destroy(p);
}

TEST(test_pair_rx_burst_limit)
{
	struct utcp_pair *p = mk(1, NULL);
	struct utcp_port a = utcp_pair_port(p, 0), b = utcp_pair_port(p, 1);
	struct utcp_frame f[8];

	send_seq(a, 0, 5, 0);
	CHECK_EQ(b.ops->rx_burst(b.ctx, f, 2, 0), 2);
	CHECK_EQ(f[1].data[0], 1);
	b.ops->rx_release(b.ctx, f, 2);
	CHECK_EQ(b.ops->rx_burst(b.ctx, f, 8, 0), 3);
	b.ops->rx_release(b.ctx, f, 3);
	utcp_pair_destroy(p);
}

TEST(test_pair_queue_overflow_tail_drop)
{
	struct utcp_pair *p = mk(1, NULL);
	struct utcp_port a = utcp_pair_port(p, 0);
	struct utcp_pair_stats st;

	send_seq(a, 0, 134, 0);
	utcp_pair_get_stats(p, 0, &st);
	CHECK_EQ(st.sent, 134);
	CHECK_EQ(st.overflow, 6);
	utcp_pair_destroy(p);
}

TEST(test_pair_rate_serialises)
{
	/* 64-byte frames at 512 kbit/s: 1 ms each */
	struct utcp_pair_impair imp = {.rate_bps = 512000};
	struct utcp_pair *p = mk(1, &imp);
	struct utcp_port a = utcp_pair_port(p, 0), b = utcp_pair_port(p, 1);
	struct utcp_frame f[8];

	send_seq(a, 0, 3, 0);
	CHECK_EQ(b.ops->rx_burst(b.ctx, f, 8, 1999), 1);
	b.ops->rx_release(b.ctx, f, 1);
	CHECK_EQ(b.ops->rx_burst(b.ctx, f, 8, 3000), 2);
	b.ops->rx_release(b.ctx, f, 2);
	utcp_pair_destroy(p);
}

/* Sends 20000 frames through one impairment and returns the stats; drains as it goes. */
static struct utcp_pair_stats run_impaired(uint64_t seed, const struct utcp_pair_impair *imp,
					   unsigned *out_of_order, unsigned *damaged)
{
	struct utcp_pair *p = mk(seed, imp);
	struct utcp_port a = utcp_pair_port(p, 0), b = utcp_pair_port(p, 1);
	struct utcp_pair_stats st;
	struct utcp_frame f[64];
	uint8_t buf[64];
	unsigned i, last = 0;
	uint64_t now = 0;
	int n, k;

	*out_of_order = *damaged = 0;
	for (i = 1; i <= 20000; i++, now += 10) {
		struct utcp_frame tf = {buf, sizeof(buf), 0};

		memset(buf, 0, sizeof(buf));
		memcpy(buf, &i, sizeof(i));
		a.ops->tx_burst(a.ctx, &tf, 1, now);
		n = b.ops->rx_burst(b.ctx, f, 64, now);
		for (k = 0; k < n; k++) {
			unsigned v, z;

			memcpy(&v, f[k].data, sizeof(v));
			for (z = 4; z < 64 && f[k].data[z] == 0; z++)
				;
			if (z < 64 || v > 20000 || v == 0) {
				(*damaged)++;
				continue;
			}
			if (v < last)
				(*out_of_order)++;
			last = v;
		}
		b.ops->rx_release(b.ctx, f, (unsigned)n);
	}
	utcp_pair_get_stats(p, 0, &st);
	utcp_pair_destroy(p);
	return st;
}

TEST(test_pair_impairments_at_their_rates)
{
	struct utcp_pair_impair imp = {.loss_ppm = 30000, .dup_ppm = 10000, .reorder_ppm = 250000,
				       .corrupt_ppm = 5000, .delay_us = 500, .reorder_delay_us = 300};
	struct utcp_pair_stats st;
	unsigned ooo, dmg;

	st = run_impaired(42, &imp, &ooo, &dmg);
	CHECK_EQ(st.sent, 20000);
	CHECK(st.lost > 450 && st.lost < 750);            /* 3% of 20000 = 600 */
	CHECK(st.duplicated > 120 && st.duplicated < 280);
	CHECK(st.reordered > 4200 && st.reordered < 5800);
	CHECK(st.corrupted > 50 && st.corrupted < 160);
	CHECK(ooo > 1000);
	CHECK(dmg > 0 && dmg <= st.corrupted);
	CHECK_EQ(st.overflow, 0);
}

TEST(test_pair_same_seed_same_run)
{
	struct utcp_pair_impair imp = {.loss_ppm = 100000, .reorder_ppm = 100000, .jitter_us = 100,
				       .reorder_delay_us = 50};
	struct utcp_pair_stats s1, s2, s3;
	unsigned o1, o2, o3, d;

	s1 = run_impaired(7, &imp, &o1, &d);
	s2 = run_impaired(7, &imp, &o2, &d);
	s3 = run_impaired(8, &imp, &o3, &d);
	CHECK_EQ(s1.lost, s2.lost);
	CHECK_EQ(o1, o2);
	CHECK(s1.lost != s3.lost || o1 != o3);
}

TEST(test_pair_bad_opts)
{
	struct utcp_pair_opts o;
	struct utcp_pair *p;

	memset(&o, 0, sizeof(o));
	o.sz = 1;
	CHECK_EQ(utcp_pair_create(&o, &p), -EINVAL);
	CHECK_EQ(utcp_pair_create(NULL, &p), -EINVAL);
}
