/* test_core.c — sequence numbers, SipHash, the timer wheel and the connection table. */
#include <errno.h>
#include <stdlib.h>

#include "core/conntab.h"
#include "core/seq.h"
#include "core/siphash.h"
#include "core/timer.h"
#include "testlib.h"

TEST(test_seq_wraparound)
{
	utcp_seq a = seq_of(0xfffffff0u), b = seq_add(a, 0x20);

	CHECK_U32(b.v, 0x10);
	CHECK(seq_lt(a, b));
	CHECK(seq_gt(b, a));
	CHECK(seq_le(a, a) && seq_ge(a, a) && !seq_lt(a, a));
	CHECK_EQ(seq_diff(b, a), 0x20);
	CHECK_EQ(seq_diff(a, b), -0x20);
	CHECK(seq_in(seq_of(0), a, b));
	CHECK(!seq_in(b, a, b));
	CHECK(seq_in_incl(b, a, b));
	CHECK_U32(seq_max(a, b).v, b.v);
	CHECK_U32(seq_min(a, b).v, a.v);
	CHECK_U32(seq_add(seq_of(5), -10).v, 0xfffffffbu);
}

TEST(test_seq_diff_extremes)
{
	CHECK_EQ(seq_diff(seq_of(0x7fffffffu), seq_of(0)), INT32_MAX);
	CHECK_EQ(seq_diff(seq_of(0x80000000u), seq_of(0)), INT32_MIN);
	CHECK_EQ(seq_diff(seq_of(0), seq_of(1)), -1);
	CHECK_EQ(seq_diff(seq_of(0), seq_of(0xffffffffu)), 1);
}

TEST(test_siphash_reference_vectors)
{
	uint8_t key[16], msg[15];
	int i;

	for (i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (i = 0; i < 15; i++)
		msg[i] = (uint8_t)i;
	/* From the SipHash paper, appendix A, and the reference test vectors. */
	CHECK(utcp_siphash(key, msg, 15) == 0xa129ca6149be45e5ULL);
	CHECK(utcp_siphash(key, msg, 0) == 0x726fdb47dd0e0e31ULL);
}

/* ---- timer wheel ---- */

struct fired_log {
	int n;
	struct utcp_timer *who[64];
	uint64_t at[64];
	uint64_t now;
};

static void log_fire(struct utcp_timer *t, void *ctx)
{
	struct fired_log *l = ctx;

	if (l->n < 64) {
		l->who[l->n] = t;
		l->at[l->n] = l->now;
	}
	l->n++;
}

TEST(test_wheel_fires_at_rounded_deadline)
{
	struct utcp_timer slots[8], a = {0}, b = {0};
	struct utcp_wheel w;
	struct fired_log l = {0};

	CHECK_EQ(utcp_wheel_init(&w, slots, 8, 1000, 0), 0);
	CHECK(utcp_wheel_next_deadline(&w) == UINT64_MAX);
	utcp_wheel_arm(&w, &a, 1500);           /* rounds up to 2000 */
	utcp_wheel_arm(&w, &b, 3000);
	CHECK(utcp_timer_armed(&a));
	CHECK_EQ(utcp_wheel_next_deadline(&w), 2000);
	l.now = 1999;
	CHECK_EQ(utcp_wheel_expire(&w, 1999, log_fire, &l), 0);
	l.now = 2000;
	CHECK_EQ(utcp_wheel_expire(&w, 2000, log_fire, &l), 1);
	CHECK(l.who[0] == &a);
	CHECK(!utcp_timer_armed(&a));
	CHECK_EQ(utcp_wheel_next_deadline(&w), 3000);
	l.now = 10000;
	CHECK_EQ(utcp_wheel_expire(&w, 10000, log_fire, &l), 1);
	CHECK(utcp_wheel_next_deadline(&w) == UINT64_MAX);
}

TEST(test_wheel_far_future_waits_its_round)
{
	struct utcp_timer slots[8], a = {0};
	struct utcp_wheel w;
	struct fired_log l = {0};

	utcp_wheel_init(&w, slots, 8, 1000, 0);
	utcp_wheel_arm(&w, &a, 8000 * 3 + 2000); /* three revolutions + 2 ticks */
	CHECK_EQ(utcp_wheel_next_deadline(&w), 26000);
	for (uint64_t t = 0; t < 26000; t += 1000)
		CHECK_EQ(utcp_wheel_expire(&w, t, log_fire, &l), 0);
	CHECK_EQ(utcp_wheel_expire(&w, 26000, log_fire, &l), 1);
}

TEST(test_wheel_cancel_and_rearm)
{
	struct utcp_timer slots[4], a = {0};
	struct utcp_wheel w;
	struct fired_log l = {0};

	utcp_wheel_init(&w, slots, 4, 10, 0);
	utcp_wheel_arm(&w, &a, 50);
	utcp_wheel_arm(&w, &a, 100);            /* re-arm moves it */
	CHECK_EQ(w.count, 1);
	CHECK_EQ(utcp_wheel_next_deadline(&w), 100);
	utcp_wheel_cancel(&w, &a);
	utcp_wheel_cancel(&w, &a);              /* idempotent */
	CHECK_EQ(w.count, 0);
	CHECK_EQ(utcp_wheel_expire(&w, 1000, log_fire, &l), 0);
}

TEST(test_wheel_overdue_fires_next_expire)
{
	struct utcp_timer slots[4], a = {0};
	struct utcp_wheel w;
	struct fired_log l = {0};

	utcp_wheel_init(&w, slots, 4, 10, 0);
	utcp_wheel_expire(&w, 100, log_fire, &l);
	utcp_wheel_arm(&w, &a, 5);              /* in the past */
	CHECK_EQ(utcp_wheel_next_deadline(&w), 110);
	CHECK_EQ(utcp_wheel_expire(&w, 110, log_fire, &l), 1);
}

static struct utcp_wheel *rearm_wheel;
static void rearm_fire(struct utcp_timer *t, void *ctx)
{
	int *n = ctx;

	if (++*n < 5)
		utcp_wheel_arm(rearm_wheel, t, (uint64_t)*n * 1000 + 1000);
}

TEST(test_wheel_rearm_from_callback)
{
	struct utcp_timer slots[16], a = {0};
	struct utcp_wheel w;
	int n = 0;

	utcp_wheel_init(&w, slots, 16, 1000, 0);
	rearm_wheel = &w;
	utcp_wheel_arm(&w, &a, 1000);
	for (uint64_t t = 0; t <= 10000; t += 500)
		utcp_wheel_expire(&w, t, rearm_fire, &n);
	CHECK_EQ(n, 5);
}

/* Random arms/cancels/expires against a brute-force model. */
TEST(test_wheel_random_vs_model)
{
	enum { N = 200 };
	static struct utcp_timer slots[64], tm[N];
	static uint64_t model[N];               /* 0 = not armed, else tick deadline */
	struct utcp_wheel w;
	struct fired_log l = {0};
	uint64_t now = 0, rng = 12345;
	int step, i;

	memset(tm, 0, sizeof(tm));
	memset(model, 0, sizeof(model));
	utcp_wheel_init(&w, slots, 64, 100, 0);
	for (step = 0; step < 20000; step++) {
		rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
		i = (int)((rng >> 33) % N);
		switch ((rng >> 20) % 4) {
		case 0:
		case 1: {
			uint64_t dl = now + (rng >> 40) % 20000;
			uint64_t tick = (dl + 99) / 100;

			utcp_wheel_arm(&w, &tm[i], dl);
			if (tick * 100 <= now)
				tick = now / 100 + 1;   /* overdue: next tick */
			model[i] = tick * 100;
			break;
		}
		case 2:
			utcp_wheel_cancel(&w, &tm[i]);
			model[i] = 0;
			break;
		default: {
			uint64_t nd = utcp_wheel_next_deadline(&w), best = UINT64_MAX;
			int j;

			for (j = 0; j < N; j++)
				if (model[j] && model[j] < best)
					best = model[j];
			CHECK(nd <= best || best == UINT64_MAX);
			CHECK(best != UINT64_MAX || nd == UINT64_MAX);
			now += (rng >> 44) % 3000;
			l.n = 0;
			utcp_wheel_expire(&w, now, log_fire, &l);
			for (j = 0; j < N; j++) {
				bool due = model[j] && model[j] <= now;

				CHECK(utcp_timer_armed(&tm[j]) == (model[j] && !due));
				if (due)
					model[j] = 0;
			}
		}
		}
	}
}

/* ---- connection table ---- */

static const uint8_t key0[16] = {1, 2, 3};

TEST(test_conntab_alloc_until_full)
{
	struct utcp_conntab ct;
	uint32_t i;

	CHECK_EQ(utcp_conntab_init(&ct, 4, key0), 0);
	for (i = 0; i < 4; i++)
		CHECK(utcp_conntab_alloc(&ct) != UTCP_CT_NONE);
	CHECK_U32(utcp_conntab_alloc(&ct), UTCP_CT_NONE);
	CHECK_EQ(ct.used, 4);
	utcp_conntab_free(&ct, 2);
	CHECK_U32(utcp_conntab_alloc(&ct), 2);
	utcp_conntab_fini(&ct);
	CHECK_EQ(utcp_conntab_init(&ct, 0, key0), -EINVAL);
}

TEST(test_conntab_insert_lookup_remove)
{
	struct utcp_conntab ct;
	struct utcp_tuple t = {0x0a000001, 0x0a000002, 80, 40000}, t2 = t;
	uint32_t a, b;
	uint16_t g;

	utcp_conntab_init(&ct, 8, key0);
	a = utcp_conntab_alloc(&ct);
	b = utcp_conntab_alloc(&ct);
	CHECK_EQ(utcp_conntab_insert(&ct, a, &t), 0);
	CHECK_EQ(utcp_conntab_insert(&ct, b, &t), -EEXIST);
	t2.rport = 40001;
	CHECK_EQ(utcp_conntab_insert(&ct, b, &t2), 0);
	CHECK_U32(utcp_conntab_lookup(&ct, &t), a);
	CHECK_U32(utcp_conntab_lookup(&ct, &t2), b);
	utcp_conntab_remove(&ct, a);
	CHECK_U32(utcp_conntab_lookup(&ct, &t), UTCP_CT_NONE);
	CHECK_U32(utcp_conntab_lookup(&ct, &t2), b);
	g = ct.gen[b];
	utcp_conntab_free(&ct, b);               /* free unhashes */
	CHECK_U32(utcp_conntab_lookup(&ct, &t2), UTCP_CT_NONE);
	CHECK_EQ(ct.gen[b], g + 1);
	utcp_conntab_fini(&ct);
}

TEST(test_conntab_random_vs_model)
{
	enum { CAP = 64 };
	struct utcp_conntab ct;
	static struct utcp_tuple mt[CAP];
	static int mstate[CAP];                 /* 0 free, 1 allocated, 2 hashed */
	uint64_t rng = 99;
	int step, i;

	utcp_conntab_init(&ct, CAP, key0);
	memset(mstate, 0, sizeof(mstate));
	for (step = 0; step < 50000; step++) {
		struct utcp_tuple t;

		rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
		/* a small tuple space so collisions and duplicates happen */
		t.laddr = 1;
		t.raddr = (uint32_t)(rng >> 60);
		t.lport = 80;
		t.rport = (uint16_t)((rng >> 50) & 7);
		i = (int)((rng >> 33) % CAP);
		switch ((rng >> 20) % 4) {
		case 0: {
			uint32_t idx = utcp_conntab_alloc(&ct);
			int free_exists = 0, j;

			for (j = 0; j < CAP; j++)
				free_exists |= mstate[j] == 0;
			CHECK((idx == UTCP_CT_NONE) == !free_exists);
			if (idx != UTCP_CT_NONE) {
				CHECK_EQ(mstate[idx], 0);
				mstate[idx] = 1;
			}
			break;
		}
		case 1:
			utcp_conntab_free(&ct, (uint32_t)i);
			mstate[i] = 0;
			break;
		case 2: {
			int dup = 0, j, rc;

			for (j = 0; j < CAP; j++)
				dup |= mstate[j] == 2 && !memcmp(&mt[j], &t, sizeof(t));
			rc = utcp_conntab_insert(&ct, (uint32_t)i, &t);
			if (mstate[i] != 1)
				CHECK_EQ(rc, -EINVAL);
			else if (dup)
				CHECK_EQ(rc, -EEXIST);
			else {
				CHECK_EQ(rc, 0);
				mstate[i] = 2;
				mt[i] = t;
			}
			break;
		}
		default: {
			uint32_t got = utcp_conntab_lookup(&ct, &t), want = UTCP_CT_NONE;
			int j;

			for (j = 0; j < CAP; j++)
				if (mstate[j] == 2 && !memcmp(&mt[j], &t, sizeof(t)))
					want = (uint32_t)j;
			CHECK_U32(got, want);
		}
		}
	}
	utcp_conntab_fini(&ct);
}
