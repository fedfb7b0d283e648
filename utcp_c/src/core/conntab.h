/* conntab.h — the connection table: a fixed set of slots (indices 0..cap-1) with a
 * free list, and a keyed hash of 4-tuples over them.  It knows nothing of TCP: the
 * TCP layer keeps its control blocks in an array indexed the same way.  All memory
 * is allocated once, at creation. */
#ifndef UTCP_CONNTAB_H
#define UTCP_CONNTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UTCP_CT_NONE UINT32_MAX

struct utcp_tuple {
	uint32_t laddr, raddr;
	uint16_t lport, rport;
};

struct utcp_conntab {
	uint32_t cap;
	uint32_t nbuckets_mask;
	uint32_t *buckets;          /* head slot index per bucket */
	uint32_t *next;             /* hash chain, or free list for free slots */
	struct utcp_tuple *tuple;
	uint8_t *state;             /* 0 free, 1 allocated, 2 allocated + hashed */
	uint16_t *gen;              /* bumped on free: stale handles are detected */
	uint32_t free_head;
	uint32_t used;
	uint8_t key[16];
};

int utcp_conntab_init(struct utcp_conntab *ct, uint32_t cap, const uint8_t key[16]);
void utcp_conntab_fini(struct utcp_conntab *ct);
/* Returns a free slot index or UTCP_CT_NONE. */
uint32_t utcp_conntab_alloc(struct utcp_conntab *ct);
/* Unhashes if needed and returns the slot to the free list. */
void utcp_conntab_free(struct utcp_conntab *ct, uint32_t idx);
/* -EEXIST if the tuple is already present. */
int utcp_conntab_insert(struct utcp_conntab *ct, uint32_t idx, const struct utcp_tuple *t);
void utcp_conntab_remove(struct utcp_conntab *ct, uint32_t idx);
uint32_t utcp_conntab_lookup(const struct utcp_conntab *ct, const struct utcp_tuple *t);
/* The keyed hash of a 4-tuple, before it is reduced to a bucket: tables made with the
 * same key share it, so one computation serves a lookup in each (connections, then
 * TIME-WAIT entries). */
uint32_t utcp_conntab_hash(const struct utcp_conntab *ct, const struct utcp_tuple *t);
uint32_t utcp_conntab_lookup_hash(const struct utcp_conntab *ct, const struct utcp_tuple *t,
				  uint32_t hash);
/* Bytes allocated by utcp_conntab_init() for cap slots. */
size_t utcp_conntab_memory(uint32_t cap);
static inline bool utcp_conntab_used(const struct utcp_conntab *ct, uint32_t idx)
{
	return idx < ct->cap && ct->state[idx] != 0;
}

#endif
