/* icmp.c — ICMP error parsing: enough to find which of our segments an error quotes
 * (destination unreachable, fragmentation needed, time exceeded). */
#include <errno.h>
#include <string.h>

#include "utcp_wire.h"

int utcp_icmp_parse(const uint8_t *msg, size_t len, struct utcp_icmp *icmp, enum utcp_drop *why)
{
	const uint8_t *q;
	size_t qlen;
	unsigned qihl;

	memset(icmp, 0, sizeof(*icmp));
	if (len < 8) {
		*why = UTCP_DROP_ICMP_TRUNC;
		return -EBADMSG;
	}
	if (utcp_csum_fold(utcp_csum_add(0, msg, len)) != 0) {
		*why = UTCP_DROP_ICMP_CSUM;
		return -EBADMSG;
	}
	icmp->type = msg[0];
	icmp->code = msg[1];
	if (icmp->type == UTCP_ICMP_DEST_UNREACH && icmp->code == UTCP_ICMP_CODE_FRAG_NEEDED)
		icmp->next_hop_mtu = utcp_get16(msg + 6);
	*why = UTCP_DROP_NONE;
	if (icmp->type != UTCP_ICMP_DEST_UNREACH && icmp->type != UTCP_ICMP_TIME_EXCEEDED)
		return 0;
	/* The quote: the offending IPv4 header and at least 8 bytes of its payload
	 * (RFC 792); that is enough for TCP ports and the sequence number. */
	q = msg + 8;
	qlen = len - 8;
	if (qlen < UTCP_IP_HLEN || (q[0] >> 4) != 4) {
		*why = UTCP_DROP_ICMP_TRUNC;
		return -EBADMSG;
	}
	qihl = (unsigned)(q[0] & 0x0f) * 4;
	if (qihl < UTCP_IP_HLEN || qlen < qihl + 8) {
		*why = UTCP_DROP_ICMP_TRUNC;
		return -EBADMSG;
	}
	icmp->has_quote = true;
	icmp->q_proto = q[9];
	icmp->q_src = utcp_get32(q + 12);
	icmp->q_dst = utcp_get32(q + 16);
	icmp->q_sport = utcp_get16(q + qihl);
	icmp->q_dport = utcp_get16(q + qihl + 2);
	icmp->q_seq = utcp_get32(q + qihl + 4);
	return 0;
}
