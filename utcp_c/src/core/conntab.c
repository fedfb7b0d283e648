/* conntab.c — preallocated 4-tuple hash table with a free list. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/conntab.h"
#include "core/siphash.h"

uint32_t utcp_conntab_hash(const struct utcp_conntab *ct, const struct utcp_tuple *t)
{
	uint8_t b[12];

	/* Explicit serialisation: no padding bytes in the hash input. */
	memcpy(b, &t->laddr, 4);
	memcpy(b + 4, &t->raddr, 4);
	memcpy(b + 8, &t->lport, 2);
	memcpy(b + 10, &t->rport, 2);
	return (uint32_t)utcp_siphash(ct->key, b, sizeof(b));
}

static uint32_t bucket_of(const struct utcp_conntab *ct, const struct utcp_tuple *t)
{
	return utcp_conntab_hash(ct, t) & ct->nbuckets_mask;
}

static uint32_t nbuckets_for(uint32_t cap)
{
	uint32_t nb = 1;

	while (nb < cap * 2)                    /* load factor <= 0.5 */
		nb <<= 1;
	return nb;
}

size_t utcp_conntab_memory(uint32_t cap)
{
	return (size_t)nbuckets_for(cap) * sizeof(uint32_t) +
	       (size_t)cap * (sizeof(uint32_t) + sizeof(struct utcp_tuple) + 1 + sizeof(uint16_t));
}

static bool tuple_eq(const struct utcp_tuple *a, const struct utcp_tuple *b)
{
	return a->laddr == b->laddr && a->raddr == b->raddr && a->lport == b->lport &&
	       a->rport == b->rport;
}

int utcp_conntab_init(struct utcp_conntab *ct, uint32_t cap, const uint8_t key[16])
{
	uint32_t nb, i;

	memset(ct, 0, sizeof(*ct));
	if (!cap || cap > (1u << 24))
		return -EINVAL;
	nb = nbuckets_for(cap);
	ct->cap = cap;
	ct->nbuckets_mask = nb - 1;
	ct->buckets = malloc(nb * sizeof(*ct->buckets));
	ct->next = malloc(cap * sizeof(*ct->next));
	ct->tuple = calloc(cap, sizeof(*ct->tuple));
	ct->state = calloc(cap, 1);
	ct->gen = calloc(cap, sizeof(*ct->gen));
	if (!ct->buckets || !ct->next || !ct->tuple || !ct->state || !ct->gen) {
		utcp_conntab_fini(ct);
		return -ENOMEM;
	}
	for (i = 0; i < nb; i++)
		ct->buckets[i] = UTCP_CT_NONE;
	for (i = 0; i < cap; i++)
		ct->next[i] = i + 1 < cap ? i + 1 : UTCP_CT_NONE;
	ct->free_head = 0;
	memcpy(ct->key, key, 16);
	return 0;
}

void utcp_conntab_fini(struct utcp_conntab *ct)
{
	free(ct->buckets);
	free(ct->next);
	free(ct->tuple);
	free(ct->state);
	free(ct->gen);
	memset(ct, 0, sizeof(*ct));
}

uint32_t utcp_conntab_alloc(struct utcp_conntab *ct)
{
	uint32_t idx = ct->free_head;

	if (idx == UTCP_CT_NONE)
		return UTCP_CT_NONE;
	ct->free_head = ct->next[idx];
	ct->next[idx] = UTCP_CT_NONE;
	ct->state[idx] = 1;
	ct->used++;
	return idx;
}

void utcp_conntab_free(struct utcp_conntab *ct, uint32_t idx)
{
	if (!utcp_conntab_used(ct, idx))
		return;
	utcp_conntab_remove(ct, idx);
	ct->state[idx] = 0;
	ct->gen[idx]++;
	ct->next[idx] = ct->free_head;
	ct->free_head = idx;
	ct->used--;
}

int utcp_conntab_insert(struct utcp_conntab *ct, uint32_t idx, const struct utcp_tuple *t)
{
	uint32_t b;

	if (!utcp_conntab_used(ct, idx) || ct->state[idx] == 2)
		return -EINVAL;
	if (utcp_conntab_lookup(ct, t) != UTCP_CT_NONE)
		return -EEXIST;
	b = bucket_of(ct, t);
	ct->tuple[idx] = *t;
	ct->next[idx] = ct->buckets[b];
	ct->buckets[b] = idx;
	ct->state[idx] = 2;
	return 0;
}

void utcp_conntab_remove(struct utcp_conntab *ct, uint32_t idx)
{
	uint32_t *pp;

	if (!utcp_conntab_used(ct, idx) || ct->state[idx] != 2)
		return;
	for (pp = &ct->buckets[bucket_of(ct, &ct->tuple[idx])]; *pp != UTCP_CT_NONE; pp = &ct->next[*pp]) {
		if (*pp == idx) {
			*pp = ct->next[idx];
			break;
		}
	}
	ct->next[idx] = UTCP_CT_NONE;
	ct->state[idx] = 1;
}

uint32_t utcp_conntab_lookup(const struct utcp_conntab *ct, const struct utcp_tuple *t)
{
	return utcp_conntab_lookup_hash(ct, t, utcp_conntab_hash(ct, t));
}

uint32_t utcp_conntab_lookup_hash(const struct utcp_conntab *ct, const struct utcp_tuple *t,
				  uint32_t hash)
{
	uint32_t i;

	for (i = ct->buckets[hash & ct->nbuckets_mask]; i != UTCP_CT_NONE; i = ct->next[i])
		if (tuple_eq(&ct->tuple[i], t))
			return i;
	return UTCP_CT_NONE;
}
