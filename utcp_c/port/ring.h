/* ring.h — accessors for the four AF_XDP rings shared with the kernel (single producer,
 * single consumer, free-running 32-bit indices masked by size - 1).  The ordering follows
 * the kernel's net/xdp/xsk_queue.h: a producer writes entries, then store-releases the
 * producer index; a consumer load-acquires the producer index, reads entries, then
 * store-releases the consumer index.  Indices wrap at 2^32; all arithmetic is unsigned. */
#ifndef MSPORT_RING_H
#define MSPORT_RING_H

#include <linux/if_xdp.h>
#include <stdint.h>

struct msport_ring {
	uint32_t cached_prod;   /* producer side: next index to write; consumer side: last seen */
	uint32_t cached_cons;   /* consumer side: next index to read; producer side: last seen */
	uint32_t mask;
	uint32_t size;
	uint32_t *producer;     /* shared with the kernel */
	uint32_t *consumer;
	uint32_t *flags;
	void *entries;
};

/* Attach to a ring whose shared indices are where they are now (they need not be zero). */
static inline void msport_ring_init(struct msport_ring *r, void *producer, void *consumer,
				    void *flags, void *entries, uint32_t size)
{
	r->producer = producer;
	r->consumer = consumer;
	r->flags = flags;
	r->entries = entries;
	r->size = size;
	r->mask = size - 1;
	r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
	r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
}

/* --- producer side (fill, TX) --- */

/* Free slots, refreshing the consumer index only when fewer than want are known free. */
static inline uint32_t msport_prod_free(struct msport_ring *r, uint32_t want)
{
	uint32_t free_slots = r->size - (r->cached_prod - r->cached_cons);

	if (free_slots >= want)
		return free_slots;
	r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
	return r->size - (r->cached_prod - r->cached_cons);
}

/* Reserve up to n slots starting at *idx; returns how many.  Nothing is visible to the
 * kernel until msport_prod_submit(). */
static inline uint32_t msport_prod_reserve(struct msport_ring *r, uint32_t n, uint32_t *idx)
{
	uint32_t free_slots = msport_prod_free(r, n);

	if (n > free_slots)
		n = free_slots;
	*idx = r->cached_prod;
	r->cached_prod += n;
	return n;
}

/* Undo the last n reserved, not yet submitted slots. */
static inline void msport_prod_cancel(struct msport_ring *r, uint32_t n)
{
	r->cached_prod -= n;
}

/* Publish every reserved slot: one release store. */
static inline void msport_prod_submit(struct msport_ring *r)
{
	__atomic_store_n(r->producer, r->cached_prod, __ATOMIC_RELEASE);
}

/* Entries written and not yet taken by the consumer (an exact snapshot). */
static inline uint32_t msport_prod_pending(struct msport_ring *r)
{
	r->cached_cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
	return r->cached_prod - r->cached_cons;
}

/* --- consumer side (RX, completion) --- */

/* Up to max entries ready to read at *idx; refreshes the producer index only when no
 * entry is known.  The entries stay in place until msport_cons_release(). */
static inline uint32_t msport_cons_peek(struct msport_ring *r, uint32_t max, uint32_t *idx)
{
	uint32_t avail = r->cached_prod - r->cached_cons;

	if (avail == 0) {
		r->cached_prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
		avail = r->cached_prod - r->cached_cons;
	}
	if (avail > max)
		avail = max;
	*idx = r->cached_cons;
	return avail;
}

/* Hand n read entries back to the producer: one release store. */
static inline void msport_cons_release(struct msport_ring *r, uint32_t n)
{
	r->cached_cons += n;
	__atomic_store_n(r->consumer, r->cached_cons, __ATOMIC_RELEASE);
}

/* --- entries --- */

static inline uint64_t *msport_ring_addr(const struct msport_ring *r, uint32_t idx)
{
	return &((uint64_t *)r->entries)[idx & r->mask];
}

static inline struct xdp_desc *msport_ring_desc(const struct msport_ring *r, uint32_t idx)
{
	return &((struct xdp_desc *)r->entries)[idx & r->mask];
}

static inline int msport_ring_needs_wakeup(const struct msport_ring *r)
{
	return __atomic_load_n(r->flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP;
}

#endif /* MSPORT_RING_H */
