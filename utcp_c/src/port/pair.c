/* pair.c — the `pair` port backend: two ends joined by two in-memory queues.  Each
 * frame gets a delivery time (delay, jitter, serialisation, reordering) from a seeded
 * generator and is handed to the other end once the caller's clock reaches it.
 * Loss, duplication and corruption happen at send time.  No TCP knowledge here. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "utcp_port.h"

struct slot {
	uint64_t at;
	uint64_t order;             /* tie-break: FIFO among equal delivery times */
	uint32_t len;
};

struct queue {
	struct utcp_pair_impair imp;
	struct utcp_pair_stats st;
	struct slot *slots;
	uint8_t *data;              /* frame_size bytes per slot */
	uint32_t *heap;             /* min-heap of slot indices by (at, order) */
	uint32_t nheap;
	uint32_t *free;             /* stack of free slot indices */
	uint32_t nfree;
	uint64_t busy_until;        /* serialisation: when the link is free again */
};

struct end {
	struct utcp_pair *pair;
	int idx;
};

struct utcp_pair {
	uint64_t rng;
	uint64_t order;
	uint32_t nslots, frame_size;
	struct queue q[2];
	struct end ends[2];
};

static uint64_t rnd(struct utcp_pair *p)
{
	/* xorshift64* */
	p->rng ^= p->rng >> 12;
	p->rng ^= p->rng << 25;
	p->rng ^= p->rng >> 27;
	return p->rng * 2685821657736338717ULL;
}

static int chance(struct utcp_pair *p, uint32_t ppm)
{
	return ppm && rnd(p) % 1000000u < ppm;
}

static int slot_before(const struct queue *q, uint32_t a, uint32_t b)
{
	const struct slot *x = &q->slots[a], *y = &q->slots[b];

	return x->at < y->at || (x->at == y->at && x->order < y->order);
}

static void heap_push(struct queue *q, uint32_t s)
{
	uint32_t i = q->nheap++;

	q->heap[i] = s;
	while (i && slot_before(q, q->heap[i], q->heap[(i - 1) / 2])) {
		uint32_t par = (i - 1) / 2, t = q->heap[i];

		q->heap[i] = q->heap[par];
		q->heap[par] = t;
		i = par;
	}
}

static uint32_t heap_pop(struct queue *q)
{
	uint32_t top = q->heap[0], i = 0;

	q->heap[0] = q->heap[--q->nheap];
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i, t;

		if (l < q->nheap && slot_before(q, q->heap[l], q->heap[m]))
			m = l;
		if (r < q->nheap && slot_before(q, q->heap[r], q->heap[m]))
			m = r;
		if (m == i)
			break;
		t = q->heap[i];
		q->heap[i] = q->heap[m];
		q->heap[m] = t;
		i = m;
	}
	return top;
}

static void enqueue(struct utcp_pair *p, struct queue *q, const uint8_t *data, uint32_t len,
		    uint64_t now, int dup)
{
	const struct utcp_pair_impair *imp = &q->imp;
	struct slot *s;
	uint32_t si;
	uint64_t at = now;

	if (!q->nfree) {
		q->st.overflow++;
		return;
	}
	si = q->free[--q->nfree];
	s = &q->slots[si];
	memcpy(q->data + (size_t)si * p->frame_size, data, len);
	s->len = len;
	if (imp->rate_bps && !dup) {
		uint64_t start = q->busy_until > now ? q->busy_until : now;

		q->busy_until = start + (uint64_t)len * 8u * 1000000u / imp->rate_bps;
		at = q->busy_until;
	}
	at += imp->delay_us;
	if (imp->jitter_us)
		at += rnd(p) % (imp->jitter_us + 1);
	if (chance(p, imp->reorder_ppm)) {
		at += imp->reorder_delay_us;
		q->st.reordered++;
	}
	if (chance(p, imp->corrupt_ppm)) {
		uint64_t r = rnd(p);

		q->data[(size_t)si * p->frame_size + (r >> 8) % len] ^= (uint8_t)(1u << (r & 7));
		q->st.corrupted++;
	}
	s->at = at;
	s->order = p->order++;
	heap_push(q, si);
}

static int pair_tx_burst(void *ctx, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	struct end *e = ctx;
	struct utcp_pair *p = e->pair;
	struct queue *q = &p->q[e->idx];        /* end 0 sends on q[0] */
	unsigned i;

	for (i = 0; i < n; i++) {
		if (f[i].len > p->frame_size || f[i].len == 0)
			return (int)i;
		q->st.sent++;
		if (chance(p, q->imp.loss_ppm)) {
			q->st.lost++;
			continue;
		}
		enqueue(p, q, f[i].data, f[i].len, now, 0);
		if (chance(p, q->imp.dup_ppm)) {
			q->st.duplicated++;
			enqueue(p, q, f[i].data, f[i].len, now, 1);
		}
	}
	return (int)n;
}

static int pair_rx_burst(void *ctx, struct utcp_frame *f, unsigned max, uint64_t now)
{
	struct end *e = ctx;
	struct utcp_pair *p = e->pair;
	struct queue *q = &p->q[1 - e->idx];    /* end 0 receives what end 1 sent */
	unsigned n = 0;

	while (n < max && q->nheap && q->slots[q->heap[0]].at <= now) {
		uint32_t si = heap_pop(q);

		f[n].data = q->data + (size_t)si * p->frame_size;
		f[n].len = q->slots[si].len;
		f[n].cookie = si;
		q->st.delivered++;
		n++;
	}
	return (int)n;
}

static void pair_rx_release(void *ctx, struct utcp_frame *f, unsigned n)
{
	struct end *e = ctx;
	struct queue *q = &e->pair->q[1 - e->idx];
	unsigned i;

	for (i = 0; i < n; i++)
		q->free[q->nfree++] = f[i].cookie;
}

static int pair_kick(void *ctx)
{
	(void)ctx;
	return 0;
}

static const struct utcp_port_ops pair_ops = {
	.sz = sizeof(struct utcp_port_ops),
	.name = "pair",
	.rx_burst = pair_rx_burst,
	.rx_release = pair_rx_release,
	.tx_burst = pair_tx_burst,
	.kick = pair_kick,
};

void utcp_pair_destroy(struct utcp_pair *p)
{
	int d;

	if (!p)
		return;
	for (d = 0; d < 2; d++) {
		free(p->q[d].slots);
		free(p->q[d].data);
		free(p->q[d].heap);
		free(p->q[d].free);
	}
	free(p);
}

int utcp_pair_create(const struct utcp_pair_opts *o, struct utcp_pair **out)
{
	struct utcp_pair_opts opts;
	struct utcp_pair *p;
	int d;
	uint32_t i;

	if (!o || o->sz < offsetof(struct utcp_pair_opts, dir) || o->sz > sizeof(opts))
		return -EINVAL;
	memset(&opts, 0, sizeof(opts));
	memcpy(&opts, o, o->sz);
	if (!opts.queue_frames)
		opts.queue_frames = 4096;
	if (!opts.frame_size)
		opts.frame_size = 2048;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->rng = opts.seed ? opts.seed : 0x9e3779b97f4a7c15ULL;
	p->nslots = opts.queue_frames;
	p->frame_size = opts.frame_size;
	for (d = 0; d < 2; d++) {
		struct queue *q = &p->q[d];

		q->imp = opts.dir[d];
		q->slots = calloc(p->nslots, sizeof(*q->slots));
		q->data = malloc((size_t)p->nslots * p->frame_size);
		q->heap = malloc(p->nslots * sizeof(*q->heap));
		q->free = malloc(p->nslots * sizeof(*q->free));
		if (!q->slots || !q->data || !q->heap || !q->free) {
			utcp_pair_destroy(p);
			return -ENOMEM;
		}
		for (i = 0; i < p->nslots; i++)
			q->free[i] = p->nslots - 1 - i;
		q->nfree = p->nslots;
		p->ends[d].pair = p;
		p->ends[d].idx = d;
	}
	*out = p;
	return 0;
}

struct utcp_port utcp_pair_port(struct utcp_pair *p, int end)
{
	struct utcp_port port = {&pair_ops, &p->ends[end & 1]};

	return port;
}

void utcp_pair_set_impair(struct utcp_pair *p, int dir, const struct utcp_pair_impair *imp)
{
	p->q[dir & 1].imp = *imp;
}

uint64_t utcp_pair_next_delivery(const struct utcp_pair *p)
{
	uint64_t best = UINT64_MAX;
	int d;

	for (d = 0; d < 2; d++)
		if (p->q[d].nheap && p->q[d].slots[p->q[d].heap[0]].at < best)
			best = p->q[d].slots[p->q[d].heap[0]].at;
	return best;
}

void utcp_pair_get_stats(const struct utcp_pair *p, int dir, struct utcp_pair_stats *st)
{
	*st = p->q[dir & 1].st;
}
