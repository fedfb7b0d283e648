/* ipv4.c — IPv4 header validation and emission.  Checks run in the order a reader
 * would: length, version, IHL, total length, checksum, then what we do not handle
 * (fragments, options) — each failure has its own drop reason. */
#include <errno.h>

#include "utcp_wire.h"

int utcp_ipv4_parse(const uint8_t *pkt, size_t len, struct utcp_ipv4 *ip, enum utcp_drop *why)
{
	unsigned ihl;
	uint16_t frag;

	if (len < UTCP_IP_HLEN) {
		*why = UTCP_DROP_IP_TRUNC;
		return -EBADMSG;
	}
	if ((pkt[0] >> 4) != 4) {
		*why = UTCP_DROP_IP_VERSION;
		return -EBADMSG;
	}
	ihl = (unsigned)(pkt[0] & 0x0f) * 4;
	if (ihl < UTCP_IP_HLEN || ihl > len) {
		*why = UTCP_DROP_IP_IHL;
		return -EBADMSG;
	}
	ip->total_len = utcp_get16(pkt + 2);
	if (ip->total_len < ihl || ip->total_len > len) {
		*why = UTCP_DROP_IP_TOTLEN;
		return -EBADMSG;
	}
	if (utcp_csum_fold(utcp_csum_add(0, pkt, ihl)) != 0) {
		*why = UTCP_DROP_IP_CSUM;
		return -EBADMSG;
	}
	frag = utcp_get16(pkt + 6);
	/* MF set or a non-zero offset: a fragment.  We do not reassemble (we send with DF). */
	if ((frag & 0x2000) || (frag & 0x1fff)) {
		*why = UTCP_DROP_IP_FRAGMENT;
		return -ENOTSUP;
	}
	if (ihl != UTCP_IP_HLEN) {
		*why = UTCP_DROP_IP_OPTIONS;
		return -ENOTSUP;
	}
	ip->hdr_len = (uint8_t)ihl;
	ip->tos = pkt[1];
	ip->id = utcp_get16(pkt + 4);
	ip->df = (frag & 0x4000) != 0;
	ip->ttl = pkt[8];
	ip->proto = pkt[9];
	ip->src = utcp_get32(pkt + 12);
	ip->dst = utcp_get32(pkt + 16);
	ip->payload = pkt + ihl;
	ip->payload_len = (size_t)ip->total_len - ihl;
	*why = UTCP_DROP_NONE;
	return 0;
}

int utcp_ipv4_emit(uint8_t *buf, size_t cap, uint32_t src, uint32_t dst, uint8_t proto,
		   uint16_t payload_len, uint8_t ttl, uint16_t id)
{
	if (cap < UTCP_IP_HLEN || payload_len > 0xffff - UTCP_IP_HLEN)
		return -ENOSPC;
	buf[0] = 0x45;
	buf[1] = 0;
	utcp_put16(buf + 2, (uint16_t)(UTCP_IP_HLEN + payload_len));
	utcp_put16(buf + 4, id);
	utcp_put16(buf + 6, 0x4000); /* DF: we do path MTU discovery (RFC 1191) */
	buf[8] = ttl;
	buf[9] = proto;
	utcp_put16(buf + 10, 0);
	utcp_put32(buf + 12, src);
	utcp_put32(buf + 16, dst);
	utcp_put16(buf + 10, utcp_csum_fold(utcp_csum_add(0, buf, UTCP_IP_HLEN)));
	return UTCP_IP_HLEN;
}
