/* ring.c — byte ring. */
#include <string.h>

#include "core/ring.h"

void ring_init(struct utcp_ring *r, uint8_t *mem, uint32_t cap)
{
	r->buf = mem;
	r->cap = cap;
	r->head = 0;
	r->len = 0;
}

static void copy_in(struct utcp_ring *r, uint32_t pos, const uint8_t *src, uint32_t n)
{
	uint32_t first = r->cap - pos < n ? r->cap - pos : n;

	memcpy(r->buf + pos, src, first);
	if (n > first)
		memcpy(r->buf, src + first, n - first);
}

void ring_write_at(struct utcp_ring *r, uint32_t off, const void *data, uint32_t n)
{
	uint32_t pos = r->head + off;

	if (pos >= r->cap)
		pos -= r->cap;
	copy_in(r, pos, data, n);
}

uint32_t ring_append(struct utcp_ring *r, const void *data, uint32_t n)
{
	if (n > ring_free(r))
		n = ring_free(r);
	ring_write_at(r, r->len, data, n);
	r->len += n;
	return n;
}

void ring_commit(struct utcp_ring *r, uint32_t n)
{
	r->len += n;
}

void ring_peek(const struct utcp_ring *r, uint32_t off, uint32_t n, const uint8_t **p1, uint32_t *l1,
	       const uint8_t **p2, uint32_t *l2)
{
	uint32_t pos = r->head + off;

	if (pos >= r->cap)
		pos -= r->cap;
	*p1 = r->buf + pos;
	*l1 = r->cap - pos < n ? r->cap - pos : n;
	*p2 = r->buf;
	*l2 = n - *l1;
}

void ring_consume(struct utcp_ring *r, uint32_t n)
{
	if (n > r->len)
		n = r->len;
	r->head += n;
	if (r->head >= r->cap)
		r->head -= r->cap;
	r->len -= n;
}

uint32_t ring_read(struct utcp_ring *r, void *dst, uint32_t n)
{
	const uint8_t *p1, *p2;
	uint32_t l1, l2;

	if (n > r->len)
		n = r->len;
	ring_peek(r, 0, n, &p1, &l1, &p2, &l2);
	memcpy(dst, p1, l1);
	if (l2)
		memcpy((uint8_t *)dst + l1, p2, l2);
	ring_consume(r, n);
	return n;
}
