/* checksum.c — the Internet checksum (RFC 1071) with incremental helpers (RFC 1624).
 * The 32-bit accumulator lets callers sum a pseudo-header, a header and a payload
 * held in different places, then fold once.  The sum runs over 64-bit words in the
 * host's byte order (RFC 1071 2(B): the one's complement sum does not depend on byte
 * order, only the final 16 bits are swapped) with the carries added back as it goes;
 * utcp_csum_copy() sums while it copies, so a payload is read once on its way into a
 * frame. */
#include <string.h>

#include "utcp_wire.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_BE 1
#else
#define HOST_BE 0
#endif

static inline uint64_t load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));       /* any alignment: one mov on x86-64 */
	return v;
}

static inline uint32_t load32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static inline uint16_t load16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* acc + w with the end-around carry (one's complement addition in 64 bits). */
static inline uint64_t add_c(uint64_t acc, uint64_t w)
{
	acc += w;
	return acc + (acc < w);
}

/* 64-bit one's complement sum -> 16 bits, still in host order, not complemented. */
static inline uint32_t fold64(uint64_t acc)
{
	acc = (acc & 0xffffffffu) + (acc >> 32);        /* <= 0x1_ffff_fffe */
	acc = (acc & 0xffffffffu) + (acc >> 32);        /* <= 0xffff_ffff */
	acc = (acc & 0xffff) + (acc >> 16);             /* <= 0x1_fffe */
	acc = (acc & 0xffff) + (acc >> 16);             /* <= 0xffff */
	return (uint32_t)acc;
}

/* A host-order 16-bit sum of data at an even offset, as a big-endian (wire) word sum. */
static inline uint32_t to_wire(uint32_t s16)
{
	return HOST_BE ? s16 : (uint32_t)(((s16 & 0xff) << 8) | (s16 >> 8));
}

/* Sum of the bytes after the 8-byte blocks (len < 8), host order. */
static inline uint64_t sum_tail(uint64_t acc, const uint8_t *p, size_t len)
{
	if (len & 4) {
		acc += load32(p);
		p += 4;
	}
	if (len & 2) {
		acc += load16(p);
		p += 2;
	}
	if (len & 1)    /* the byte is the high half of a wire word: pad with a zero */
		acc += HOST_BE ? (uint64_t)p[0] << 8 : p[0];
	return acc;     /* no carry to fold: a previous fold64 left room for 7 bytes */
}

/* Combine a host-order 64-bit sum of a chunk into the caller's 32-bit wire-order
 * accumulator; the result stays below 2^17 so callers can keep adding. */
static inline uint32_t combine(uint32_t sum, uint64_t acc)
{
	uint32_t s = sum + to_wire(fold64(acc));

	if (s < sum)
		s++;                                    /* wrapped: end-around carry */
	return (s & 0xffff) + (s >> 16);
}

uint32_t utcp_csum_add(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t a0 = 0, a1 = 0;

	/* Two accumulators halve the carry chain; 32 bytes a round. */
	while (len >= 32) {
		a0 = add_c(a0, load64(p));
		a1 = add_c(a1, load64(p + 8));
		a0 = add_c(a0, load64(p + 16));
		a1 = add_c(a1, load64(p + 24));
		p += 32;
		len -= 32;
	}
	while (len >= 8) {
		a0 = add_c(a0, load64(p));
		p += 8;
		len -= 8;
	}
	a0 = add_c(a0, a1);
	return combine(sum, sum_tail(fold64(a0), p, len));
}

uint32_t utcp_csum_copy(void *dst, const void *src, size_t len, uint32_t sum)
{
	const uint8_t *s = src;
	uint8_t *d = dst;
	uint64_t a0 = 0, a1 = 0;

	while (len >= 32) {
		uint64_t w0 = load64(s), w1 = load64(s + 8), w2 = load64(s + 16), w3 = load64(s + 24);

		memcpy(d, &w0, 8);
		memcpy(d + 8, &w1, 8);
		memcpy(d + 16, &w2, 8);
		memcpy(d + 24, &w3, 8);
		a0 = add_c(a0, w0);
		a1 = add_c(a1, w1);
		a0 = add_c(a0, w2);
		a1 = add_c(a1, w3);
		s += 32;
		d += 32;
		len -= 32;
	}
	while (len >= 8) {
		uint64_t w = load64(s);

		memcpy(d, &w, 8);
		a0 = add_c(a0, w);
		s += 8;
		d += 8;
		len -= 8;
	}
	memcpy(d, s, len);
	a0 = add_c(a0, a1);
	return combine(sum, sum_tail(fold64(a0), s, len));
}

uint32_t utcp_csum_add_at(uint32_t sum, size_t offset, uint32_t chunk)
{
	uint32_t s;

	/* A chunk that starts at an odd offset of the summed data has its bytes in the
	 * other halves of the wire words: swap its folded sum (RFC 1071 2(B)). */
	if (offset & 1) {
		chunk = (chunk & 0xffff) + (chunk >> 16);
		chunk = (chunk & 0xffff) + (chunk >> 16);
		chunk = ((chunk & 0xff) << 8) | (chunk >> 8);
	}
	s = sum + chunk;
	if (s < sum)
		s++;
	return (s & 0xffff) + (s >> 16);
}

uint16_t utcp_csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

uint32_t utcp_csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len)
{
	uint32_t s = 0;

	s += src >> 16;
	s += src & 0xffff;
	s += dst >> 16;
	s += dst & 0xffff;
	s += proto;
	s += len;
	return s;
}

uint16_t utcp_csum_update16(uint16_t csum, uint16_t old_word, uint16_t new_word)
{
	/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') */
	uint32_t s = (uint16_t)~csum;

	s += (uint16_t)~old_word;
	s += new_word;
	return utcp_csum_fold(s);
}
