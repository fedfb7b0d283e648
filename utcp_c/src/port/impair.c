/* impair.c — a port wrapper that impairs both directions of another port (loss,
 * duplication, reordering, delay, corruption), driven by the caller's clock.  Used to
 * exercise UTCP against a real peer (tap) under loss.  No TCP knowledge here. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "port/impq.h"
#include "utcp_port.h"

#define BATCH 64

struct utcp_impair {
	struct utcp_port inner;
	uint64_t rng, last_now;
	struct impq txq, rxq;
};

static void flush_tx(struct utcp_impair *w, uint64_t now)
{
	struct utcp_frame f[BATCH];
	uint32_t slots[BATCH];
	unsigned n;
	int si;

	do {
		for (n = 0; n < BATCH && (si = impq_pop(&w->txq, now, &f[n].data, &f[n].len)) >= 0; n++)
			slots[n] = (uint32_t)si;
		if (n) {
			w->inner.ops->tx_burst(w->inner.ctx, f, n, now);   /* copies */
			w->inner.ops->kick(w->inner.ctx);
		}
		for (unsigned i = 0; i < n; i++)
			impq_release(&w->txq, slots[i]);
	} while (n == BATCH);
}

static int imp_tx_burst(void *ctx, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	struct utcp_impair *w = ctx;
	unsigned i;

	w->last_now = now;
	for (i = 0; i < n; i++)
		if (impq_push(&w->txq, f[i].data, f[i].len, now) < 0)
			break;
	flush_tx(w, now);
	return (int)i;
}

static int imp_rx_burst(void *ctx, struct utcp_frame *f, unsigned max, uint64_t now)
{
	struct utcp_impair *w = ctx;
	struct utcp_frame in[BATCH];
	unsigned n = 0;
	int got, i, si;

	w->last_now = now;
	flush_tx(w, now);
	got = w->inner.ops->rx_burst(w->inner.ctx, in, BATCH, now);
	if (got > 0) {
		for (i = 0; i < got; i++)
			impq_push(&w->rxq, in[i].data, in[i].len, now);
		w->inner.ops->rx_release(w->inner.ctx, in, (unsigned)got);
	}
	while (n < max && (si = impq_pop(&w->rxq, now, &f[n].data, &f[n].len)) >= 0)
		f[n++].cookie = (uint32_t)si;
	return (int)n;
}

static void imp_rx_release(void *ctx, struct utcp_frame *f, unsigned n)
{
	struct utcp_impair *w = ctx;
	unsigned i;

	for (i = 0; i < n; i++)
		impq_release(&w->rxq, f[i].cookie);
}

static int imp_kick(void *ctx)
{
	struct utcp_impair *w = ctx;

	flush_tx(w, w->last_now);
	return 0;
}

static const struct utcp_port_ops impair_ops = {
	.sz = sizeof(struct utcp_port_ops),
	.name = "impair",
	.rx_burst = imp_rx_burst,
	.rx_release = imp_rx_release,
	.tx_burst = imp_tx_burst,
	.kick = imp_kick,
};

void utcp_impair_destroy(struct utcp_impair *w)
{
	if (!w)
		return;
	impq_fini(&w->txq);
	impq_fini(&w->rxq);
	free(w);
}

int utcp_impair_wrap(const struct utcp_port *inner, const struct utcp_pair_impair *tx,
		     const struct utcp_pair_impair *rx, uint64_t seed, struct utcp_impair **out)
{
	struct utcp_impair *w;

	if (!inner || !inner->ops || !tx || !rx)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->inner = *inner;
	w->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
	if (impq_init(&w->txq, 16384, 2048, &w->rng) < 0 ||
	    impq_init(&w->rxq, 16384, 2048, &w->rng) < 0) {
		utcp_impair_destroy(w);
		return -ENOMEM;
	}
	w->txq.imp = *tx;
	w->rxq.imp = *rx;
	*out = w;
	return 0;
}

struct utcp_port utcp_impair_port(struct utcp_impair *w)
{
	struct utcp_port p = {&impair_ops, w};

	return p;
}

uint64_t utcp_impair_next(const struct utcp_impair *w)
{
	uint64_t a = impq_next(&w->txq), b = impq_next(&w->rxq);

	return a < b ? a : b;
}

void utcp_impair_get_stats(const struct utcp_impair *w, int dir, struct utcp_pair_stats *st)
{
	*st = dir ? w->rxq.st : w->txq.st;
}
