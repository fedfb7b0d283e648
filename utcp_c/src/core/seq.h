/* seq.h — TCP sequence numbers as a type.  All wrap-around (mod 2^32, RFC 9293 3.4)
 * comparisons live here; nothing else compares sequence numbers by hand. */
#ifndef UTCP_SEQ_H
#define UTCP_SEQ_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
	uint32_t v;
} utcp_seq;

static inline utcp_seq seq_of(uint32_t v) { return (utcp_seq){v}; }
/* a + n (n may be negative). */
static inline utcp_seq seq_add(utcp_seq a, int64_t n) { return (utcp_seq){(uint32_t)(a.v + (uint32_t)n)}; }
/* Signed distance a - b, valid while |a - b| < 2^31. */
static inline int32_t seq_diff(utcp_seq a, utcp_seq b)
{
	uint32_t d = a.v - b.v;

	return d <= INT32_MAX ? (int32_t)d : -(int32_t)(UINT32_MAX - d) - 1;
}
static inline bool seq_eq(utcp_seq a, utcp_seq b) { return a.v == b.v; }
static inline bool seq_lt(utcp_seq a, utcp_seq b) { return seq_diff(a, b) < 0; }
static inline bool seq_le(utcp_seq a, utcp_seq b) { return seq_diff(a, b) <= 0; }
static inline bool seq_gt(utcp_seq a, utcp_seq b) { return seq_diff(a, b) > 0; }
static inline bool seq_ge(utcp_seq a, utcp_seq b) { return seq_diff(a, b) >= 0; }
static inline utcp_seq seq_max(utcp_seq a, utcp_seq b) { return seq_ge(a, b) ? a : b; }
static inline utcp_seq seq_min(utcp_seq a, utcp_seq b) { return seq_le(a, b) ? a : b; }
/* lo <= a < hi */
static inline bool seq_in(utcp_seq a, utcp_seq lo, utcp_seq hi) { return seq_le(lo, a) && seq_lt(a, hi); }
/* lo <= a <= hi */
static inline bool seq_in_incl(utcp_seq a, utcp_seq lo, utcp_seq hi) { return seq_le(lo, a) && seq_le(a, hi); }

#endif
