/* test_frames.c — the port's frame logic (fill restocking, RX bursts, TX allocation, submit,
 * kicks, completion reaping, misuse checks) on rings in plain memory, with a simulated
 * kernel that behaves like copy mode: it publishes its fill-ring consumer index lazily and
 * sends at most 32 frames per kick.  Indices start just below 2^32.  No privileges. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "port_internal.h"

#define FRAME 2048u
#define MAXF  64u

struct sim {
	struct mstack_port p;
	uint8_t *umem;
	struct {
		uint32_t producer, consumer, flags;
		uint64_t e[4096];
	} fill, comp;
	struct {
		uint32_t producer, consumer, flags;
		struct xdp_desc d[4096];
	} rx, tx;
	/* kernel side */
	uint32_t fill_cached_cons, fill_cached_prod; /* published only when its cache runs dry */
	uint64_t k_rx_dropped, k_sent, k_bad;
	uint32_t budget;       /* frames per kick */
	int fail_kick;         /* errno the next kicks return, 0: none */
	uint64_t next_tx_seq;  /* content check of sent frames */
	uint64_t comp_held[4096];
	uint32_t ncomp_held;   /* sent, completion not yet posted */
	int hold_completions;
};

static struct sim *S;

static int sim_wake_tx(struct mstack_port *p);
static int sim_wake_rx(struct mstack_port *p)
{
	(void)p;
	return 0;
}

static void sim_flush_completions(void)
{
	while (S->ncomp_held && S->comp.producer - S->comp.consumer < S->p.comp.size) {
		S->comp.e[S->comp.producer & (S->p.comp.size - 1)] = S->comp_held[0];
		memmove(S->comp_held, S->comp_held + 1, --S->ncomp_held * sizeof(uint64_t));
		__atomic_store_n(&S->comp.producer, S->comp.producer + 1, __ATOMIC_RELEASE);
	}
}

/* Copy mode: take up to budget descriptors, "send" them (check content), post completions
 * (a full completion ring stops the batch with EAGAIN, like xsk_cq_reserve_locked). */
static int sim_wake_tx(struct mstack_port *p)
{
	uint32_t budget = S->budget;

	if (S->fail_kick)
		return -S->fail_kick;
	while (S->tx.consumer != S->tx.producer) {
		if (budget-- == 0)
			return -EAGAIN;
		if (!S->hold_completions && S->comp.producer - S->comp.consumer >= p->comp.size)
			return -EAGAIN;
		struct xdp_desc *d = &S->tx.d[S->tx.consumer & (p->tx.size - 1)];
		if (d->len < 8 || (d->addr & (FRAME - 1)) + d->len > FRAME) {
			S->k_bad++;
		} else {
			uint64_t seq;
			memcpy(&seq, S->umem + d->addr, 8);
			if (seq != S->next_tx_seq || d->len != 60 + seq % 1400)
				S->k_bad++;
			S->next_tx_seq++;
		}
		S->k_sent++;
		S->comp_held[S->ncomp_held++] = d->addr;
		__atomic_store_n(&S->tx.consumer, S->tx.consumer + 1, __ATOMIC_RELEASE);
		if (!S->hold_completions)
			sim_flush_completions();
	}
	return 0;
}

/* The kernel receives one frame: a fill entry (lazily published consumer), data copied at
 * headroom + 256, a descriptor on the RX ring.  Returns 0 if dropped. */
static int sim_deliver(uint64_t seq, uint32_t len)
{
	struct mstack_port *p = &S->p;

	if (S->fill_cached_cons == S->fill_cached_prod) {
		__atomic_store_n(&S->fill.consumer, S->fill_cached_cons, __ATOMIC_RELEASE);
		S->fill_cached_prod = __atomic_load_n(&S->fill.producer, __ATOMIC_ACQUIRE);
		if (S->fill_cached_cons == S->fill_cached_prod) {
			S->k_rx_dropped++;
			return 0;
		}
	}
	if (S->rx.producer - S->rx.consumer >= p->rx.size) {
		S->k_rx_dropped++;
		return 0;
	}
	uint64_t base = S->fill.e[S->fill_cached_cons++ & (p->fill.size - 1)];
	uint64_t addr = base + p->headroom + MSTACK_PORT_XDP_HEADROOM;
	memset(S->umem + addr, (int)(seq & 0xff), len);
	memcpy(S->umem + addr, &seq, 8);
	struct xdp_desc *d = &S->rx.d[S->rx.producer & (p->rx.size - 1)];
	d->addr = addr;
	d->len = len;
	d->options = 0;
	__atomic_store_n(&S->rx.producer, S->rx.producer + 1, __ATOMIC_RELEASE);
	return 1;
}

static void sim_new(uint32_t nframes, uint32_t ring, uint32_t fill, uint32_t rx_frames,
		    uint32_t headroom)
{
	struct mstack_port_geom g = {
		.sz = sizeof(g), .frame_size = FRAME, .umem_size = (uint64_t)nframes * FRAME,
		.frame_headroom = headroom, .rx_size = ring, .tx_size = ring, .fill_size = fill,
		.comp_size = ring, .bind_flags = XDP_COPY, .rx_frames = rx_frames,
	};
	struct mstack_port_geom ok;
	const uint32_t start = 0xffffff00u;

	S = calloc(1, sizeof(*S));
	S->umem = calloc(nframes, FRAME);
	CHECK_EQ(msport_geom_check(&g, &ok), 0);
	S->fill.producer = S->fill.consumer = start;
	S->comp.producer = S->comp.consumer = start + 1;
	S->rx.producer = S->rx.consumer = start + 2;
	S->tx.producer = S->tx.consumer = start + 3;
	S->fill_cached_cons = S->fill_cached_prod = start;
	S->budget = 32;
	struct mstack_port *p = &S->p;
	msport_ring_init(&p->fill, &S->fill.producer, &S->fill.consumer, &S->fill.flags,
			 S->fill.e, ok.fill_size);
	msport_ring_init(&p->comp, &S->comp.producer, &S->comp.consumer, &S->comp.flags,
			 S->comp.e, ok.comp_size);
	msport_ring_init(&p->rx, &S->rx.producer, &S->rx.consumer, &S->rx.flags, S->rx.d,
			 ok.rx_size);
	msport_ring_init(&p->tx, &S->tx.producer, &S->tx.consumer, &S->tx.flags, S->tx.d,
			 ok.tx_size);
	p->umem = S->umem;
	p->umem_size = ok.umem_size;
	p->frame_size = FRAME;
	p->frame_shift = 11;
	p->headroom = headroom;
	p->nframes = nframes;
	p->rx_quota = ok.rx_frames;
	p->tx_quota = nframes - ok.rx_frames;
	p->wake_tx = sim_wake_tx;
	p->wake_rx = sim_wake_rx;
	p->umem_fd = p->xsk_fd = -1;
	CHECK_EQ(msport_setup(p), 0);
}

static void sim_free(void)
{
	msport_teardown(&S->p);
	free(S->umem);
	free(S);
	S = NULL;
}

static struct mstack_port_stats stats(void)
{
	struct mstack_port_stats st = {.sz = sizeof(st)};

	CHECK_EQ(mstack_port_stats(&S->p, &st), 0);
	return st;
}

static void test_setup_stocks_fill_ring(void)
{
	sim_new(64, 16, 32, 0, 0);
	struct mstack_port_stats st = stats();
	CHECK_EQ(st.frames, 64);
	CHECK_EQ(st.rx_quota, 16); /* min(frames / 2, fill / 2) */
	CHECK_EQ(st.tx_quota, 48);
	CHECK_EQ(st.fill_level, 16);
	CHECK_EQ(st.tx_free, 48);
	CHECK_EQ(S->fill.producer - S->fill.consumer, 16);
	/* Fill entries are frame bases of the receive side, each once. */
	uint8_t seen[64] = {0};
	for (uint32_t i = S->fill.consumer; i != S->fill.producer; i++) {
		uint64_t a = S->fill.e[i & 31];
		CHECK_EQ(a % FRAME, 0);
		CHECK(a / FRAME < 16);
		CHECK_EQ(seen[a / FRAME]++, 0);
	}
	sim_free();
}

/* 100,000 frames through a 16-frame receive side: the fill ring is restocked from every
 * release, nothing is ever dropped, order and content survive the index wrap. */
static void test_rx_many_frames_no_drop(void)
{
	struct mstack_frame f[MAXF];
	uint64_t sent = 0, got = 0;

	sim_new(64, 16, 32, 0, 128);
	for (int round = 0; sent < 100000 && round < 1000000; round++) {
		uint32_t burst = 1 + (uint32_t)(round % 16);
		for (uint32_t k = 0; k < burst && sent < 100000 && S->rx.producer - S->rx.consumer < 16;
		     k++) {
			if (!sim_deliver(sent, 60 + (uint32_t)(sent % 1400)))
				break;
			sent++;
		}
		unsigned n = mstack_port_rx_burst(&S->p, f, 1 + (unsigned)(round % MAXF));
		for (unsigned k = 0; k < n; k++) {
			uint64_t seq;
			memcpy(&seq, f[k].data, 8);
			CHECK_EQ(seq, got);
			CHECK_EQ(f[k].len, 60 + got % 1400);
			CHECK_EQ(f[k].data[f[k].len - 1], got & 0xff);
			CHECK_EQ(f[k].addr % FRAME, 128 + MSTACK_PORT_XDP_HEADROOM);
			got++;
		}
		/* Hold some frames across a burst now and then. */
		if (n && round % 3)
			CHECK_EQ(mstack_port_rx_release(&S->p, f, n), 0);
		else if (n) {
			CHECK_EQ(mstack_port_rx_release(&S->p, f, n / 2), 0);
			CHECK_EQ(stats().rx_held, n - n / 2);
			CHECK_EQ(mstack_port_rx_release(&S->p, f + n / 2, n - n / 2), 0);
		}
	}
	while (got < sent) {
		unsigned n = mstack_port_rx_burst(&S->p, f, MAXF);
		if (!n)
			break;
		got += n;
		CHECK_EQ(mstack_port_rx_release(&S->p, f, n), 0);
	}
	CHECK_EQ(sent, 100000);
	CHECK_EQ(got, sent);
	CHECK_EQ(S->k_rx_dropped, 0);
	struct mstack_port_stats st = stats();
	CHECK_EQ(st.rx_frames, 100000);
	CHECK_EQ(st.rx_held, 0);
	CHECK_EQ(st.bad_descs, 0);
	sim_free();
}

/* With a fill ring no bigger than the receive side, the lazy consumer index leaves released
 * frames without room: they wait in the stash and go out at the next burst, none lost. */
static void test_rx_stash_when_fill_ring_tight(void)
{
	struct mstack_frame f[MAXF];
	uint64_t got = 0;

	sim_new(64, 16, 16, 16, 0);
	for (uint64_t s = 0; s < 10; s++)
		CHECK(sim_deliver(s, 100));
	unsigned n = mstack_port_rx_burst(&S->p, f, MAXF);
	CHECK_EQ(n, 10);
	CHECK_EQ(mstack_port_rx_release(&S->p, f, n), 0);
	struct mstack_port_stats st = stats();
	CHECK_EQ(st.rx_stash, 10); /* the kernel has not published its consumer yet */
	CHECK_EQ(st.rx_held, 0);
	got = 10;
	for (uint64_t s = 10; s < 1000; s++) {
		sim_deliver(s, 100);
		n = mstack_port_rx_burst(&S->p, f, MAXF);
		got += n;
		CHECK_EQ(mstack_port_rx_release(&S->p, f, n), 0);
	}
	/* Every frame is accounted for: received, or dropped by the kernel for want of a
	 * fill entry (the price of a tight fill ring, which the defaults avoid). */
	CHECK_EQ(got + S->k_rx_dropped, 1000);
	st = stats();
	CHECK_EQ(st.rx_held + st.rx_stash <= 16, 1);
	sim_free();
}

static void fill_tx(struct mstack_frame *f, unsigned n, uint64_t *seq)
{
	for (unsigned k = 0; k < n; k++) {
		uint32_t len = 60 + (uint32_t)(*seq % 1400);
		CHECK(f[k].len >= len);
		memset(f[k].data, 0xab, len);
		memcpy(f[k].data, seq, 8);
		f[k].len = len;
		(*seq)++;
	}
}

/* 100,000 frames out through 48 send frames and 16-entry rings: completions are reaped on
 * demand, every frame goes out once, in order, and every frame comes back. */
static void test_tx_many_frames_no_leak(void)
{
	struct mstack_frame f[MAXF];
	uint64_t seq = 0;

	sim_new(64, 16, 32, 0, 64);
	for (int round = 0; seq < 100000 && round < 1000000; round++) {
		unsigned want = 1 + (unsigned)(round % MAXF);
		if (want > 100000 - seq)
			want = (unsigned)(100000 - seq);
		unsigned n = mstack_port_tx_alloc(&S->p, f, want);
		CHECK(n <= want);
		for (unsigned k = 0; k < n; k++)
			CHECK_EQ(f[k].addr % FRAME, 64);
		fill_tx(f, n, &seq);
		unsigned done = 0;
		for (int tries = 0; done < n && tries < 100; tries++) {
			int r = mstack_port_tx_submit(&S->p, f + done, n - done);
			CHECK(r >= 0);
			if (r < 0)
				break;
			done += (unsigned)r;
			CHECK(mstack_port_kick(&S->p) >= 0);
		}
		CHECK_EQ(done, n);
	}
	for (int tries = 0; tries < 100 && mstack_port_kick(&S->p) > 0; tries++)
		;
	mstack_port_reap(&S->p);
	CHECK_EQ(seq, 100000);
	CHECK_EQ(S->k_sent, 100000);
	CHECK_EQ(S->k_bad, 0);
	struct mstack_port_stats st = stats();
	CHECK_EQ(st.tx_frames, 100000);
	CHECK_EQ(st.completions, 100000);
	CHECK_EQ(st.tx_free, st.tx_quota);
	CHECK_EQ(st.tx_inflight, 0);
	CHECK_EQ(st.tx_held, 0);
	CHECK(st.tx_alloc_short > 0); /* the free list did run dry: reaping was exercised */
	sim_free();
}

/* 200 frames on a 256-entry ring: one kick call sends them all in 32-frame steps. */
static void test_kick_loops_over_copy_mode_budget(void)
{
	struct mstack_frame f[200];
	uint64_t seq = 0;

	sim_new(512, 256, 512, 0, 0);
	CHECK_EQ(mstack_port_tx_alloc(&S->p, f, 200), 200);
	fill_tx(f, 200, &seq);
	CHECK_EQ(mstack_port_tx_submit(&S->p, f, 200), 200);
	CHECK_EQ(mstack_port_kick(&S->p), 0);
	CHECK_EQ(S->k_sent, 200);
	CHECK_EQ(stats().kicks, 7); /* ceil(200 / 32) */
	CHECK_EQ(stats().tx_free, 256);
	/* Nothing pending: no syscall. */
	CHECK_EQ(mstack_port_kick(&S->p), 0);
	CHECK_EQ(stats().kicks, 7);
	sim_free();
}

/* Completions that do not come back stop the kernel (full completion ring): kick stops
 * when a call makes no progress and reports what is left. */
static void test_kick_stops_without_progress(void)
{
	struct mstack_frame f[32];
	uint64_t seq = 0;

	sim_new(64, 16, 32, 0, 0);
	CHECK_EQ(mstack_port_tx_alloc(&S->p, f, 16), 16);
	fill_tx(f, 16, &seq);
	CHECK_EQ(mstack_port_tx_submit(&S->p, f, 16), 16);
	S->budget = 0; /* the kernel takes nothing */
	CHECK_EQ(mstack_port_kick(&S->p), 16);
	CHECK_EQ(stats().kicks, 1);
	S->fail_kick = ENETDOWN;
	CHECK_EQ(mstack_port_kick(&S->p), -ENETDOWN);
	CHECK_EQ(stats().kick_errors, 1);
	S->fail_kick = 0;
	S->budget = 32;
	CHECK_EQ(mstack_port_kick(&S->p), 0);
	CHECK_EQ(stats().tx_free, stats().tx_quota);
	sim_free();
}

static void test_tx_ring_full_partial_submit(void)
{
	struct mstack_frame f[40];
	uint64_t seq = 0;

	sim_new(64, 16, 32, 0, 0); /* 48 send frames, 16-entry TX ring */
	CHECK_EQ(mstack_port_tx_alloc(&S->p, f, 40), 40);
	fill_tx(f, 40, &seq);
	CHECK_EQ(mstack_port_tx_submit(&S->p, f, 40), 16);
	CHECK_EQ(stats().tx_ring_full, 1);
	CHECK_EQ(stats().tx_held, 24);
	CHECK_EQ(mstack_port_kick(&S->p), 0);
	CHECK_EQ(mstack_port_tx_submit(&S->p, f + 16, 24), 16);
	CHECK_EQ(mstack_port_kick(&S->p), 0);
	CHECK_EQ(mstack_port_tx_submit(&S->p, f + 32, 8), 8);
	CHECK_EQ(mstack_port_kick(&S->p), 0);
	CHECK_EQ(S->k_sent, 40);
	CHECK_EQ(S->k_bad, 0);
	sim_free();
}

static void test_misuse_is_refused(void)
{
	struct mstack_frame rx[4], tx[4], bad;

	sim_new(64, 16, 32, 0, 0);
	for (uint64_t s = 0; s < 4; s++)
		CHECK(sim_deliver(s, 80));
	CHECK_EQ(mstack_port_rx_burst(&S->p, rx, 4), 4);
	CHECK_EQ(mstack_port_tx_alloc(&S->p, tx, 4), 4);

	/* A TX frame released as RX, an RX frame submitted as TX. */
	CHECK_EQ(mstack_port_rx_release(&S->p, tx, 1), -EINVAL);
	rx[0].len = 80;
	CHECK_EQ(mstack_port_tx_submit(&S->p, rx, 1), -EINVAL);
	/* Double release, inside one batch and across calls; nothing moved on failure. */
	struct mstack_frame dup[2] = {rx[1], rx[1]};
	CHECK_EQ(mstack_port_rx_release(&S->p, dup, 2), -EINVAL);
	CHECK_EQ(stats().rx_held, 4);
	CHECK_EQ(mstack_port_rx_release(&S->p, rx, 4), 0);
	CHECK_EQ(mstack_port_rx_release(&S->p, rx, 1), -EINVAL);
	CHECK_EQ(stats().rx_held, 0);
	/* Lengths the kernel would refuse. */
	tx[0].len = 0;
	CHECK_EQ(mstack_port_tx_submit(&S->p, tx, 1), -EINVAL);
	tx[0].len = FRAME + 1;
	CHECK_EQ(mstack_port_tx_submit(&S->p, tx, 1), -EINVAL);
	CHECK_EQ(mstack_port_tx_room(&S->p), FRAME);
	/* An address outside the UMEM, and a free frame never allocated. */
	bad = tx[0];
	bad.len = 60;
	bad.addr = 64ull * FRAME;
	CHECK_EQ(mstack_port_tx_submit(&S->p, &bad, 1), -EINVAL);
	bad.addr = 63ull * FRAME - FRAME * 20; /* a send frame still on the free list */
	CHECK_EQ(mstack_port_tx_submit(&S->p, &bad, 1), -EINVAL);
	/* A duplicate in a batch: refused, and the first copy is still the caller's. */
	for (int k = 0; k < 4; k++)
		tx[k].len = 60;
	struct mstack_frame tdup[3] = {tx[0], tx[1], tx[0]};
	CHECK_EQ(mstack_port_tx_submit(&S->p, tdup, 3), -EINVAL);
	CHECK_EQ(S->tx.producer - S->tx.consumer, 0);
	CHECK_EQ(stats().tx_held, 4);
	/* Release two unsent, submit the others; released ones can no longer be submitted. */
	CHECK_EQ(mstack_port_tx_release(&S->p, tx + 2, 2), 0);
	CHECK_EQ(mstack_port_tx_release(&S->p, tx + 2, 1), -EINVAL);
	CHECK_EQ(mstack_port_tx_submit(&S->p, tx + 2, 1), -EINVAL);
	uint64_t seq = 0;
	tx[0].len = tx[1].len = 2000;
	fill_tx(tx, 2, &seq);
	CHECK_EQ(mstack_port_tx_submit(&S->p, tx, 2), 2);
	CHECK_EQ(mstack_port_tx_submit(&S->p, tx, 1), -EINVAL); /* already submitted */
	CHECK_EQ(mstack_port_kick(&S->p), 0);
	CHECK_EQ(stats().tx_free, stats().tx_quota);
	/* A completion for a frame the kernel never had is counted, not trusted. */
	S->comp.e[S->comp.producer & 15] = 5ull * FRAME;
	S->comp.producer++;
	CHECK_EQ(mstack_port_reap(&S->p), 0);
	CHECK_EQ(stats().bad_descs, 1);
	CHECK_EQ(stats().tx_free, stats().tx_quota);
	sim_free();
}

static void test_geometry_checks(void)
{
	struct mstack_port_geom g = {
		.sz = sizeof(g), .frame_size = 2048, .umem_size = 4096 * 2048,
		.rx_size = 2048, .tx_size = 2048, .fill_size = 4096, .comp_size = 2048,
	}, out, b;

	CHECK_EQ(msport_geom_check(&g, &out), 0);
	CHECK_EQ(out.rx_frames, 2048);
	b = g; b.frame_size = 3000;
	CHECK_EQ(msport_geom_check(&b, &out), -EINVAL);
	b = g; b.frame_size = 1024; b.umem_size = 1024 * 64;
	CHECK_EQ(msport_geom_check(&b, &out), -EINVAL);
	b = g; b.umem_size += 100;
	CHECK_EQ(msport_geom_check(&b, &out), -EINVAL);
	b = g; b.rx_size = 1000;
	CHECK_EQ(msport_geom_check(&b, &out), -EINVAL);
	b = g; b.comp_size = 0;
	CHECK_EQ(msport_geom_check(&b, &out), -EINVAL);
	b = g; b.frame_headroom = 2048 - 256;
	CHECK_EQ(msport_geom_check(&b, &out), -EINVAL);
	b = g; b.rx_frames = 4096;
	CHECK_EQ(msport_geom_check(&b, &out), -EINVAL);
	b = g; b.flags = 1;
	CHECK_EQ(msport_geom_check(&b, &out), -EINVAL);
	CHECK_EQ(msport_geom_check(NULL, &out), -EINVAL);
	/* An older caller's shorter struct: the missing fields read as zero. */
	b = g; b.sz = offsetof(struct mstack_port_geom, rx_frames); b.rx_frames = 7;
	CHECK_EQ(msport_geom_check(&b, &out), 0);
	CHECK_EQ(out.rx_frames, 2048);
	b.sz = 4;
	CHECK_EQ(msport_geom_check(&b, &out), -EINVAL);
	/* A newer caller's longer struct: fine if the unknown tail is zero. */
	struct {
		struct mstack_port_geom g;
		uint64_t more;
	} big = {g, 0};
	big.g.sz = sizeof(big);
	CHECK_EQ(msport_geom_check(&big.g, &out), 0);
	big.more = 1;
	CHECK_EQ(msport_geom_check(&big.g, &out), -EINVAL);
}

static void test_open_refuses_bad_fds(void)
{
	struct mstack_port_geom g = {
		.sz = sizeof(g), .frame_size = 2048, .umem_size = 64 * 2048,
		.rx_size = 16, .tx_size = 16, .fill_size = 32, .comp_size = 16,
	};
	struct mstack_port *p = (struct mstack_port *)1;
	int sv[2];

	CHECK_EQ(mstack_port_open(&p, -1, -1, &g), -EBADF);
	CHECK(p == NULL);
	/* Not an AF_XDP socket: a unix socket pair; not a regular file as UMEM. */
	CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	CHECK_EQ(mstack_port_open(&p, sv[0], sv[1], &g), -EINVAL);
	FILE *tmp = tmpfile();
	CHECK(tmp != NULL);
	if (tmp) {
		int fd = fileno(tmp);
		CHECK_EQ(ftruncate(fd, 64 * 2048), 0);
		CHECK_EQ(mstack_port_open(&p, fd, sv[1], &g), -EPROTOTYPE);
		CHECK_EQ(mstack_port_open(&p, fd, fd, &g), -ENOTSOCK);
		g.umem_size = 128 * 2048; /* larger than the file */
		CHECK_EQ(mstack_port_open(&p, fd, sv[1], &g), -EINVAL);
		fclose(tmp);
	}
	close(sv[0]);
	close(sv[1]);
}

int main(int argc, char **argv)
{
	static const struct check_case cases[] = {
		CHECK_CASE(test_setup_stocks_fill_ring),
		CHECK_CASE(test_rx_many_frames_no_drop),
		CHECK_CASE(test_rx_stash_when_fill_ring_tight),
		CHECK_CASE(test_tx_many_frames_no_leak),
		CHECK_CASE(test_kick_loops_over_copy_mode_budget),
		CHECK_CASE(test_kick_stops_without_progress),
		CHECK_CASE(test_tx_ring_full_partial_submit),
		CHECK_CASE(test_misuse_is_refused),
		CHECK_CASE(test_geometry_checks),
		CHECK_CASE(test_open_refuses_bad_fds),
	};

	return check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
