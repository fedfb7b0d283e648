/* impq.h — an impairment queue: frames go in with the sender's time, come out at their
 * delivery time after seeded loss, duplication, corruption, delay, jitter, reordering
 * and serialisation.  Shared by the `pair` backend and the impairing port wrapper. */
#ifndef UTCP_IMPQ_H
#define UTCP_IMPQ_H

#include <stdint.h>

#include "utcp_port.h"

struct impq_slot {
	uint64_t at;
	uint64_t order;
	uint32_t len;
};

struct impq {
	struct utcp_pair_impair imp;
	struct utcp_pair_stats st;
	uint64_t *rng;              /* shared generator (one per pair / wrapper) */
	uint64_t order;
	uint32_t nslots, frame_size;
	struct impq_slot *slots;
	uint8_t *data;
	uint32_t *heap, nheap;
	uint32_t *free, nfree;
	uint64_t busy_until;
};

int impq_init(struct impq *q, uint32_t nslots, uint32_t frame_size, uint64_t *rng);
void impq_fini(struct impq *q);
/* Applies loss/duplication/corruption and queues; returns 0 (also when dropped) or -EMSGSIZE. */
int impq_push(struct impq *q, const uint8_t *data, uint32_t len, uint64_t now);
/* Delivery time of the next frame, UINT64_MAX if empty. */
uint64_t impq_next(const struct impq *q);
/* Pops the next frame due at now: returns its slot index or -1; data stays valid until
 * impq_release(). */
int impq_pop(struct impq *q, uint64_t now, uint8_t **data, uint32_t *len);
void impq_release(struct impq *q, uint32_t slot);

#endif
