/* frame.c — the responder's frame in -> frame out logic.  Every header field is read only
 * after the bytes holding it are known to be inside the frame, and lengths come from the IPv4
 * total length (Ethernet may pad short frames), never past the received bytes.  Incoming
 * checksums are not verified: a local sender's TCP checksum may be only partial (offload). */
#include <string.h>

#include "frame.h"

#define ETH_HLEN     14
#define ETH_P_IPV4   0x0800
#define IP_HLEN      20
#define TCP_HLEN     20
#define IPPROTO_TCP_ 6

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_PSH 0x08
#define TH_ACK 0x10

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

uint32_t resp_csum_add(uint32_t sum, const uint8_t *data, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += get16(data + i);
	if (len & 1)
		sum += (uint32_t)data[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

uint16_t resp_csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

uint32_t resp_seq_offset(const struct resp_cfg *cfg, uint32_t saddr, uint32_t daddr, uint16_t sport,
		  uint16_t dport)
{
	/* A keyed mix of the 4-tuple (murmur3's finaliser): stable per flow, spread out. */
	uint32_t h = cfg->isn_key ^ saddr;

	h = (h ^ (h >> 16)) * 0x85ebca6bu;
	h ^= daddr;
	h = (h ^ (h >> 13)) * 0xc2b2ae35u;
	h ^= (uint32_t)sport << 16 | dport;
	h = (h ^ (h >> 16)) * 0x85ebca6bu;
	return h ^ (h >> 13);
}

/* The fields of a frame that passed the checks, in host order unless noted. */
struct seg {
	const uint8_t *eth;
	const uint8_t *ip;
	const uint8_t *tcp;
	const uint8_t *payload;
	size_t payload_len;
	uint32_t saddr, daddr;  /* network order, as in the frame */
	uint16_t sport, dport;  /* network order */
	uint32_t seq, ack;
	uint8_t flags;
};

enum verdict { V_SYN, V_DATA, V_FIN, V_ACK, V_OTHER, V_MALFORMED };

static enum verdict parse(const struct resp_cfg *cfg, const uint8_t *in, size_t len,
			  struct seg *s)
{
	if (len < ETH_HLEN)
		return V_MALFORMED;
	if (get16(in + 12) != ETH_P_IPV4)
		return V_OTHER;
	s->eth = in;
	s->ip = in + ETH_HLEN;
	size_t ip_room = len - ETH_HLEN;
	if (ip_room < IP_HLEN)
		return V_MALFORMED;
	if (s->ip[0] >> 4 != 4)
		return V_MALFORMED;
	size_t ihl = (size_t)(s->ip[0] & 0x0f) * 4;
	size_t tot = get16(s->ip + 2);
	if (ihl < IP_HLEN || ihl > ip_room || tot < ihl || tot > ip_room)
		return V_MALFORMED;
	if (get16(s->ip + 6) & 0x3fff)   /* MF or a fragment offset */
		return V_OTHER;
	if (s->ip[9] != IPPROTO_TCP_)
		return V_OTHER;
	memcpy(&s->saddr, s->ip + 12, 4);
	memcpy(&s->daddr, s->ip + 16, 4);

	size_t tcp_len = tot - ihl;
	s->tcp = s->ip + ihl;
	if (tcp_len < TCP_HLEN)
		return V_MALFORMED;
	size_t doff = (size_t)(s->tcp[12] >> 4) * 4;
	if (doff < TCP_HLEN || doff > tcp_len)
		return V_MALFORMED;
	memcpy(&s->sport, s->tcp, 2);
	memcpy(&s->dport, s->tcp + 2, 2);
	s->seq = get32(s->tcp + 4);
	s->ack = get32(s->tcp + 8);
	s->flags = s->tcp[13];
	s->payload = s->tcp + doff;
	s->payload_len = tcp_len - doff;

	if (s->dport != cfg->port || (cfg->addr && s->daddr != cfg->addr))
		return V_OTHER;
	if (s->flags & TH_RST)
		return V_OTHER;
	if (s->flags & TH_SYN)
		return s->flags & TH_ACK ? V_OTHER : V_SYN;
	if (!(s->flags & TH_ACK))
		return V_OTHER;
	if (s->payload_len)
		return V_DATA;
	if (s->flags & TH_FIN)
		return V_FIN;
	return V_ACK;
}

/* Write the answer to s: Ethernet and IPv4 headers swapped, a TCP header with seq, ack,
 * flags, an MSS option if mss, then payload.  Returns its length, 0 if room is too small. */
static size_t build(const struct seg *s, uint8_t *out, size_t room, uint32_t seq, uint32_t ack,
		    uint8_t flags, uint16_t mss, const uint8_t *payload, size_t payload_len)
{
	size_t tcp_hlen = TCP_HLEN + (mss ? 4 : 0);
	size_t tcp_len = tcp_hlen + payload_len;
	size_t total = ETH_HLEN + IP_HLEN + tcp_len;

	if (total > room)
		return 0;
	/* Ethernet: back where it came from (the switch's egress rewrites next hops anyway). */
	memcpy(out, s->eth + 6, 6);
	memcpy(out + 6, s->eth, 6);
	put16(out + 12, ETH_P_IPV4);

	uint8_t *ip = out + ETH_HLEN;
	memset(ip, 0, IP_HLEN);
	ip[0] = 0x45;
	put16(ip + 2, (uint16_t)(IP_HLEN + tcp_len));
	put16(ip + 6, 0x4000);   /* DF */
	ip[8] = 64;
	ip[9] = IPPROTO_TCP_;
	memcpy(ip + 12, &s->daddr, 4);
	memcpy(ip + 16, &s->saddr, 4);
	put16(ip + 10, (uint16_t)~resp_csum_fold(resp_csum_add(0, ip, IP_HLEN)));

	uint8_t *tcp = ip + IP_HLEN;
	memset(tcp, 0, tcp_hlen);
	memcpy(tcp, &s->dport, 2);
	memcpy(tcp + 2, &s->sport, 2);
	put32(tcp + 4, seq);
	put32(tcp + 8, ack);
	tcp[12] = (uint8_t)(tcp_hlen / 4) << 4;
	tcp[13] = flags;
	put16(tcp + 14, RESP_WINDOW);
	if (mss) {
		tcp[20] = 2;
		tcp[21] = 4;
		put16(tcp + 22, mss);
	}
	if (payload_len)
		memmove(tcp + tcp_hlen, payload, payload_len);

	uint8_t pseudo[12];
	memcpy(pseudo, ip + 12, 8);
	pseudo[8] = 0;
	pseudo[9] = IPPROTO_TCP_;
	put16(pseudo + 10, (uint16_t)tcp_len);
	uint32_t sum = resp_csum_add(0, pseudo, sizeof(pseudo));
	sum = resp_csum_add(sum, tcp, tcp_len);
	put16(tcp + 16, (uint16_t)~resp_csum_fold(sum));
	return total;
}

size_t resp_frame(const struct resp_cfg *cfg, const uint8_t *in, size_t len, uint8_t *out,
		  size_t room, struct resp_counts *c)
{
	struct seg s;
	size_t n = 0;
	uint32_t off = 0, seq, ack;
	uint8_t fin;

	c->frames++;
	enum verdict v = parse(cfg, in, len, &s);
	if (v == V_MALFORMED) {
		c->malformed++;
		return 0;
	}
	if (v == V_OTHER) {
		c->other++;
		return 0;
	}
	off = resp_seq_offset(cfg, s.daddr, s.saddr, s.dport, s.sport);
	fin = s.flags & TH_FIN;
	/* Stream rules: our offset mirrors the peer's, and we acknowledge only what it has
	 * confirmed receiving back (its ack, mapped into its own sequence space). */
	seq = cfg->stream ? s.seq + off : s.ack;
	ack = cfg->stream ? s.ack - off : s.seq + (uint32_t)s.payload_len + (fin ? 1u : 0u);
	switch (v) {
	case V_SYN:
		c->syn++;
		n = build(&s, out, room, s.seq + off, s.seq + 1, TH_SYN | TH_ACK, cfg->mss, NULL, 0);
		break;
	case V_DATA:
		c->data++;
		n = build(&s, out, room, seq, ack, (uint8_t)(TH_ACK | TH_PSH | fin), 0, s.payload,
			  s.payload_len);
		break;
	case V_FIN:
		c->fin++;
		n = build(&s, out, room, seq, ack, TH_FIN | TH_ACK, 0, NULL, 0);
		break;
	case V_ACK:
		c->ack++;
		if (!cfg->stream)
			return 0;
		/* Our seq: the peer's next expected, always acceptable to it. */
		n = build(&s, out, room, s.ack, ack, TH_ACK, 0, NULL, 0);
		break;
	case V_OTHER:
	case V_MALFORMED:
		return 0;
	}
	if (n)
		c->replies++;
	else
		c->no_room++;
	return n;
}
