/* impq.c — impairment queue (see impq.h): a min-heap of slots by delivery time. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "port/impq.h"

static uint64_t rnd(struct impq *q)
{
	uint64_t *s = q->rng;

	*s ^= *s >> 12;                 /* xorshift64* */
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static int chance(struct impq *q, uint32_t ppm)
{
	return ppm && rnd(q) % 1000000u < ppm;
}

static int before(const struct impq *q, uint32_t a, uint32_t b)
{
	const struct impq_slot *x = &q->slots[a], *y = &q->slots[b];

	return x->at < y->at || (x->at == y->at && x->order < y->order);
}

static void heap_push(struct impq *q, uint32_t s)
{
	uint32_t i = q->nheap++;

	q->heap[i] = s;
	while (i && before(q, q->heap[i], q->heap[(i - 1) / 2])) {
		uint32_t par = (i - 1) / 2, t = q->heap[i];

		q->heap[i] = q->heap[par];
		q->heap[par] = t;
		i = par;
	}
}

static uint32_t heap_pop(struct impq *q)
{
	uint32_t top = q->heap[0], i = 0;

	q->heap[0] = q->heap[--q->nheap];
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i, t;

		if (l < q->nheap && before(q, q->heap[l], q->heap[m]))
			m = l;
		if (r < q->nheap && before(q, q->heap[r], q->heap[m]))
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

int impq_init(struct impq *q, uint32_t nslots, uint32_t frame_size, uint64_t *rng)
{
	uint32_t i;

	memset(q, 0, sizeof(*q));
	q->rng = rng;
	q->nslots = nslots;
	q->frame_size = frame_size;
	q->slots = calloc(nslots, sizeof(*q->slots));
	q->data = malloc((size_t)nslots * frame_size);
	q->heap = malloc(nslots * sizeof(*q->heap));
	q->free = malloc(nslots * sizeof(*q->free));
	if (!q->slots || !q->data || !q->heap || !q->free) {
		impq_fini(q);
		return -ENOMEM;
	}
	for (i = 0; i < nslots; i++)
		q->free[i] = nslots - 1 - i;
	q->nfree = nslots;
	return 0;
}

void impq_fini(struct impq *q)
{
	free(q->slots);
	free(q->data);
	free(q->heap);
	free(q->free);
	q->slots = NULL, q->data = NULL, q->heap = NULL, q->free = NULL;
}

static void enqueue(struct impq *q, const uint8_t *data, uint32_t len, uint64_t now, int dup)
{
	const struct utcp_pair_impair *imp = &q->imp;
	struct impq_slot *s;
	uint32_t si;
	uint64_t at = now;

	if (!q->nfree) {
		q->st.overflow++;
		return;
	}
	si = q->free[--q->nfree];
	s = &q->slots[si];
	memcpy(q->data + (size_t)si * q->frame_size, data, len);
	s->len = len;
	if (imp->rate_bps && !dup) {
		uint64_t start = q->busy_until > now ? q->busy_until : now;

		q->busy_until = start + (uint64_t)len * 8u * 1000000u / imp->rate_bps;
		at = q->busy_until;
	}
	at += imp->delay_us;
	if (imp->jitter_us)
		at += rnd(q) % (imp->jitter_us + 1);
	if (chance(q, imp->reorder_ppm)) {
		at += imp->reorder_delay_us;
		q->st.reordered++;
	}
	if (chance(q, imp->corrupt_ppm)) {
		/* Not in the 14-byte Ethernet header: the link's FCS would catch that; what
		 * gets through is corruption above it (a bad NIC, memory, a middlebox). */
		uint64_t r = rnd(q);
		uint32_t skip = len > 14 ? 14 : 0;

		q->data[(size_t)si * q->frame_size + skip + (r >> 8) % (len - skip)] ^=
			(uint8_t)(1u << (r & 7));
		q->st.corrupted++;
	}
	s->at = at;
	s->order = q->order++;
	heap_push(q, si);
}

int impq_push(struct impq *q, const uint8_t *data, uint32_t len, uint64_t now)
{
	if (!len || len > q->frame_size)
		return -EMSGSIZE;
	q->st.sent++;
	if (chance(q, q->imp.loss_ppm)) {
		q->st.lost++;
		return 0;
	}
	enqueue(q, data, len, now, 0);
	if (chance(q, q->imp.dup_ppm)) {
		q->st.duplicated++;
		enqueue(q, data, len, now, 1);
	}
	return 0;
}

uint64_t impq_next(const struct impq *q)
{
	return q->nheap ? q->slots[q->heap[0]].at : UINT64_MAX;
}

int impq_pop(struct impq *q, uint64_t now, uint8_t **data, uint32_t *len)
{
	uint32_t si;

	if (!q->nheap || q->slots[q->heap[0]].at > now)
		return -1;
	si = heap_pop(q);
	*data = q->data + (size_t)si * q->frame_size;
	*len = q->slots[si].len;
	q->st.delivered++;
	return (int)si;
}

void impq_release(struct impq *q, uint32_t slot)
{
	q->free[q->nfree++] = slot;
}
