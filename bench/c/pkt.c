/* pkt.c — Ethernet/IPv4/TCP header templates for the switch benchmark (see pkt.h). */
#include "pkt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

uint32_t pkt_csum_add(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *p = data;

	for (; len > 1; p += 2, len -= 2)
		sum += (uint32_t)p[0] << 8 | p[1];
	if (len)
		sum += (uint32_t)p[0] << 8;
	return sum;
}

uint16_t pkt_csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

int pkt_build(uint8_t h[PKT_HDR_LEN], const struct pkt_flow *f, uint32_t len)
{
	uint8_t *ip = h + 14, *tcp = h + 34, pseudo[12];
	uint32_t ip_len, tcp_len;

	if (len < PKT_MIN_LEN || len > PKT_MAX_LEN)
		return -EINVAL;
	ip_len = len - 14;
	tcp_len = ip_len - 20;
	memset(h, 0, PKT_HDR_LEN);
	memcpy(h, f->dmac, 6);
	memcpy(h + 6, f->smac, 6);
	put16(h + 12, 0x0800);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)ip_len);
	put16(ip + 6, 0x4000);             /* DF: never a fragment */
	ip[8] = 64;
	ip[9] = 6;                         /* TCP */
	memcpy(ip + 12, &f->saddr, 4);
	memcpy(ip + 16, &f->daddr, 4);
	put16(ip + 10, pkt_csum_fold(pkt_csum_add(0, ip, 20)));
	put16(tcp, f->sport);
	put16(tcp + 2, f->dport);
	put16(tcp + 4, 0x1000);            /* seq 0x10000000 */
	put16(tcp + 8, 0x2000);            /* ack 0x20000000 */
	tcp[12] = 5 << 4;                  /* data offset 5 words */
	tcp[13] = 0x10;                    /* ACK: a segment of an established flow */
	put16(tcp + 14, 65535);
	memcpy(pseudo, ip + 12, 8);
	pseudo[8] = 0;
	pseudo[9] = 6;
	put16(pseudo + 10, (uint16_t)tcp_len);
	/* The payload past the header is zero: it adds nothing to the sum. */
	put16(tcp + 16, pkt_csum_fold(pkt_csum_add(pkt_csum_add(0, pseudo, 12), tcp, 20)));
	return 0;
}

int pkt_parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char tail;

	if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &tail) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return 0;
}
