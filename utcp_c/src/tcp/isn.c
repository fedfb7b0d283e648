/* isn.c — initial sequence numbers per RFC 6528: ISN = M + F(4-tuple, secret), M a
 * 4-microsecond clock (taken from the caller's now), F a keyed PRF (SipHash-2-4).
 * Timestamp offsets (RFC 7323 5.4) come from the same key over a different input. */
#include <string.h>

#include "core/siphash.h"
#include "tcp/tcb.h"

static void tuple_bytes(const struct utcp_tuple *t, uint8_t b[13], uint8_t domain)
{
	memcpy(b, &t->laddr, 4);
	memcpy(b + 4, &t->raddr, 4);
	memcpy(b + 8, &t->lport, 2);
	memcpy(b + 10, &t->rport, 2);
	b[12] = domain;
}

uint32_t tcp_isn(const uint8_t key[16], const struct utcp_tuple *t, uint64_t now_us)
{
	uint8_t b[13];

	tuple_bytes(t, b, 'I');
	return (uint32_t)utcp_siphash(key, b, sizeof(b)) + (uint32_t)(now_us / 4);
}

uint32_t tcp_ts_offset(const uint8_t key[16], const struct utcp_tuple *t)
{
	uint8_t b[13];

	tuple_bytes(t, b, 'T');
	return (uint32_t)utcp_siphash(key, b, sizeof(b));
}
