/* pair.c — the `pair` port backend: two ends joined by two impairment queues
 * (impq.c).  Each frame gets a delivery time from a seeded generator and is handed to
 * the other end once the caller's clock reaches it.  No TCP knowledge here. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "port/impq.h"
#include "utcp_port.h"

struct end {
	struct utcp_pair *pair;
	int idx;
};

struct utcp_pair {
	uint64_t rng;
	struct impq q[2];           /* q[0]: end 0 -> end 1 */
	struct end ends[2];
};

static int pair_tx_burst(void *ctx, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	struct end *e = ctx;
	struct impq *q = &e->pair->q[e->idx];
	unsigned i;

	for (i = 0; i < n; i++)
		if (impq_push(q, f[i].data, f[i].len, now) < 0)
			return (int)i;
	return (int)n;
}

static int pair_rx_burst(void *ctx, struct utcp_frame *f, unsigned max, uint64_t now)
{
	struct end *e = ctx;
	struct impq *q = &e->pair->q[1 - e->idx];
	unsigned n = 0;
	int si;

	while (n < max && (si = impq_pop(q, now, &f[n].data, &f[n].len)) >= 0)
		f[n++].cookie = (uint32_t)si;
	return (int)n;
}

static void pair_rx_release(void *ctx, struct utcp_frame *f, unsigned n)
{
	struct end *e = ctx;
	struct impq *q = &e->pair->q[1 - e->idx];
	unsigned i;

	for (i = 0; i < n; i++)
		impq_release(q, f[i].cookie);
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
	if (!p)
		return;
	impq_fini(&p->q[0]);
	impq_fini(&p->q[1]);
	free(p);
}

int utcp_pair_create(const struct utcp_pair_opts *o, struct utcp_pair **out)
{
	struct utcp_pair_opts opts;
	struct utcp_pair *p;
	int d;

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
	for (d = 0; d < 2; d++) {
		if (impq_init(&p->q[d], opts.queue_frames, opts.frame_size, &p->rng) < 0) {
			utcp_pair_destroy(p);
			return -ENOMEM;
		}
		p->q[d].imp = opts.dir[d];
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
	uint64_t a = impq_next(&p->q[0]), b = impq_next(&p->q[1]);

	return a < b ? a : b;
}

void utcp_pair_get_stats(const struct utcp_pair *p, int dir, struct utcp_pair_stats *st)
{
	*st = p->q[dir & 1].st;
}
