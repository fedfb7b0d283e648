/* test_ring.c — the ring accessors against a simulated kernel end, with the shared 32-bit
 * indices started just below 2^32 so every test crosses the wrap.  No privileges needed. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "ring.h"

#define SIZE 8u

struct shared {
	uint32_t producer, consumer, flags;
	uint64_t entries[SIZE];
};

static struct shared sh;
static struct msport_ring r;

static void setup(uint32_t start)
{
	memset(&sh, 0, sizeof(sh));
	sh.producer = sh.consumer = start;
	msport_ring_init(&r, &sh.producer, &sh.consumer, &sh.flags, sh.entries, SIZE);
}

/* Starting indices: zero, just below the wrap, at the wrap, and half way. */
static const uint32_t starts[] = {0u, 0xfffffff0u, 0xfffffffdu, 0xffffffffu, 0x7ffffffeu};

static void test_init_takes_current_indices(void)
{
	setup(0xfffffffeu);
	sh.producer = 0x00000001u; /* 3 entries past the wrap */
	msport_ring_init(&r, &sh.producer, &sh.consumer, &sh.flags, sh.entries, SIZE);
	CHECK_EQ(r.cached_prod, 0x00000001u);
	CHECK_EQ(r.cached_cons, 0xfffffffeu);
	CHECK_EQ(r.mask, SIZE - 1);
}

/* Producer side (fill/TX): we write, the "kernel" consumes. */
static void test_producer_wraps(void)
{
	for (unsigned s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
		uint64_t next_write = 1, next_read = 1;
		uint32_t idx;

		setup(starts[s]);
		for (int round = 0; round < 1000; round++) {
			uint32_t want = (uint32_t)(round % 11); /* 0..10: sometimes more than fits */
			uint32_t free_before = msport_prod_free(&r, SIZE);
			uint32_t n = msport_prod_reserve(&r, want, &idx);

			CHECK(n <= want);
			CHECK_EQ(n, want < free_before ? want : free_before);
			CHECK_EQ(idx + n, r.cached_prod);
			for (uint32_t k = 0; k < n; k++)
				*msport_ring_addr(&r, idx + k) = next_write++;
			msport_prod_submit(&r);
			CHECK_EQ(sh.producer, r.cached_prod);
			CHECK(sh.producer - sh.consumer <= SIZE);
			/* The kernel takes a varying amount, in order. */
			uint32_t take = (uint32_t)((round * 7) % 6);
			for (uint32_t k = 0; k < take && sh.consumer != sh.producer; k++) {
				CHECK_EQ(sh.entries[sh.consumer & (SIZE - 1)], next_read);
				next_read++;
				sh.consumer++;
			}
			CHECK_EQ(msport_prod_pending(&r), next_write - next_read);
		}
		/* Well past the wrap for every start. */
		CHECK(next_write > 2 * SIZE);
	}
}

static void test_producer_full_and_cancel(void)
{
	uint32_t idx;

	setup(0xfffffffau);
	CHECK_EQ(msport_prod_reserve(&r, SIZE, &idx), SIZE);
	CHECK_EQ(idx, 0xfffffffau);
	msport_prod_submit(&r);
	CHECK_EQ(sh.producer, 0x00000002u);
	CHECK_EQ(msport_prod_free(&r, 1), 0);
	CHECK_EQ(msport_prod_reserve(&r, 1, &idx), 0);
	sh.consumer += 3; /* the kernel takes three, crossing the wrap */
	CHECK_EQ(msport_prod_free(&r, 1), 3);
	CHECK_EQ(msport_prod_reserve(&r, 5, &idx), 3);
	CHECK_EQ(idx, 0x00000002u);
	msport_prod_cancel(&r, 2);
	msport_prod_submit(&r);
	CHECK_EQ(sh.producer, 0x00000003u);
	CHECK_EQ(msport_prod_pending(&r), SIZE - 2);
}

/* The free count is refreshed lazily: a cached value that is big enough is trusted. */
static void test_producer_refreshes_only_when_short(void)
{
	uint32_t idx;

	setup(0xfffffff0u);
	CHECK_EQ(msport_prod_reserve(&r, 6, &idx), 6);
	msport_prod_submit(&r);
	sh.consumer += 6;
	CHECK_EQ(msport_prod_free(&r, 2), 2);    /* 2 known free, enough: no refresh */
	CHECK_EQ(msport_prod_free(&r, 3), SIZE); /* not enough known: refreshed */
}

/* Consumer side (RX/completion): the "kernel" produces, we consume. */
static void test_consumer_wraps(void)
{
	for (unsigned s = 0; s < sizeof(starts) / sizeof(starts[0]); s++) {
		uint64_t next_write = 100, next_read = 100;
		uint32_t idx;

		setup(starts[s]);
		for (int round = 0; round < 1000; round++) {
			uint32_t put = (uint32_t)((round * 5) % 7);
			for (uint32_t k = 0; k < put && sh.producer - sh.consumer < SIZE; k++)
				sh.entries[sh.producer++ & (SIZE - 1)] = next_write++;
			uint32_t max = (uint32_t)(round % 9);
			uint32_t n = msport_cons_peek(&r, max, &idx);

			CHECK(n <= max);
			CHECK_EQ(idx, r.cached_cons);
			for (uint32_t k = 0; k < n; k++) {
				CHECK_EQ(*msport_ring_addr(&r, idx + k), next_read);
				next_read++;
			}
			msport_cons_release(&r, n);
			CHECK_EQ(sh.consumer, r.cached_cons);
			CHECK(next_read <= next_write);
		}
		/* Drain: everything produced comes out, in order. */
		for (int k = 0; k < 4; k++) {
			uint32_t n = msport_cons_peek(&r, SIZE, &idx);
			for (uint32_t j = 0; j < n; j++)
				CHECK_EQ(*msport_ring_addr(&r, idx + j), next_read++);
			msport_cons_release(&r, n);
		}
		CHECK_EQ(next_read, next_write);
		CHECK_EQ(sh.consumer, sh.producer);
	}
}

static void test_consumer_descs_at_wrap(void)
{
	struct {
		uint32_t producer, consumer, flags;
		struct xdp_desc d[4];
	} rx;
	struct msport_ring c;
	uint32_t idx;

	memset(&rx, 0, sizeof(rx));
	rx.producer = rx.consumer = 0xfffffffeu;
	msport_ring_init(&c, &rx.producer, &rx.consumer, &rx.flags, rx.d, 4);
	for (uint32_t k = 0; k < 4; k++) {
		rx.d[(0xfffffffeu + k) & 3].addr = 4096u * k;
		rx.d[(0xfffffffeu + k) & 3].len = 60 + k;
	}
	rx.producer += 4; /* now 2, past the wrap */
	CHECK_EQ(msport_cons_peek(&c, 16, &idx), 4);
	for (uint32_t k = 0; k < 4; k++) {
		CHECK_EQ(msport_ring_desc(&c, idx + k)->addr, 4096u * k);
		CHECK_EQ(msport_ring_desc(&c, idx + k)->len, 60 + k);
	}
	msport_cons_release(&c, 4);
	CHECK_EQ(rx.consumer, 2u);
	CHECK_EQ(msport_cons_peek(&c, 16, &idx), 0);
}

static void test_needs_wakeup_flag(void)
{
	setup(0);
	CHECK(!msport_ring_needs_wakeup(&r));
	sh.flags = XDP_RING_NEED_WAKEUP;
	CHECK(msport_ring_needs_wakeup(&r));
}

int main(int argc, char **argv)
{
	static const struct check_case cases[] = {
		CHECK_CASE(test_init_takes_current_indices),
		CHECK_CASE(test_producer_wraps),
		CHECK_CASE(test_producer_full_and_cancel),
		CHECK_CASE(test_producer_refreshes_only_when_short),
		CHECK_CASE(test_consumer_wraps),
		CHECK_CASE(test_consumer_descs_at_wrap),
		CHECK_CASE(test_needs_wakeup_flag),
	};

	return check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
