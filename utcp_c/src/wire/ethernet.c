/* ethernet.c — Ethernet II header parse/emit. */
#include <errno.h>
#include <string.h>

#include "utcp_wire.h"

int utcp_eth_parse(const uint8_t *frame, size_t len, struct utcp_eth *eth, enum utcp_drop *why)
{
	if (len < UTCP_ETH_HLEN) {
		*why = UTCP_DROP_ETH_TRUNC;
		return -EBADMSG;
	}
	memcpy(eth->dst, frame, 6);
	memcpy(eth->src, frame + 6, 6);
	eth->type = utcp_get16(frame + 12);
	*why = UTCP_DROP_NONE;
	return 0;
}

int utcp_eth_emit(uint8_t *buf, size_t cap, const uint8_t dst[6], const uint8_t src[6], uint16_t type)
{
	if (cap < UTCP_ETH_HLEN)
		return -ENOSPC;
	memcpy(buf, dst, 6);
	memcpy(buf + 6, src, 6);
	utcp_put16(buf + 12, type);
	return UTCP_ETH_HLEN;
}
