/* ring.h — a byte ring over caller-provided memory: the send and receive buffers of a
 * connection.  Bytes [head, head+len) are committed (in order); the receive side may
 * also write out-of-order bytes beyond len and commit them later. */
#ifndef UTCP_RING_H
#define UTCP_RING_H

#include <stdint.h>

struct utcp_ring {
	uint8_t *buf;
	uint32_t cap, head, len;
};

static inline uint32_t ring_free(const struct utcp_ring *r) { return r->cap - r->len; }
void ring_init(struct utcp_ring *r, uint8_t *mem, uint32_t cap);
/* Appends up to n bytes; returns how many. */
uint32_t ring_append(struct utcp_ring *r, const void *data, uint32_t n);
/* Writes n bytes at offset off from head (off + n <= cap) without committing them. */
void ring_write_at(struct utcp_ring *r, uint32_t off, const void *data, uint32_t n);
void ring_commit(struct utcp_ring *r, uint32_t n);
/* The bytes [off, off+n) from head, as up to two pieces. */
void ring_peek(const struct utcp_ring *r, uint32_t off, uint32_t n, const uint8_t **p1, uint32_t *l1,
	       const uint8_t **p2, uint32_t *l2);
uint32_t ring_read(struct utcp_ring *r, void *dst, uint32_t n);
void ring_consume(struct utcp_ring *r, uint32_t n);

#endif
