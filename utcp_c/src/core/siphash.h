/* siphash.h — SipHash-2-4 (Aumasson & Bernstein), keyed 64-bit PRF: ISNs (RFC 6528),
 * timestamp offsets and the connection table's bucket choice. */
#ifndef UTCP_SIPHASH_H
#define UTCP_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t utcp_siphash(const uint8_t key[16], const void *data, size_t len);

#endif
