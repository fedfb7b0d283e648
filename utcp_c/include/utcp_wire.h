/* utcp_wire.h — wire formats of UTCP: Ethernet, IPv4, TCP (+options), ICMP, checksums.
 * Parse and emit only; nothing here knows about connections or devices.  Parsed
 * fields are in host byte order; addresses are host-order uint32_t. */
#ifndef UTCP_WIRE_H
#define UTCP_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Why an input frame was dropped.  Also indexes the per-stack drop counters. */
enum utcp_drop {
	UTCP_DROP_NONE = 0,
	UTCP_DROP_ETH_TRUNC,        /* shorter than an Ethernet header */
	UTCP_DROP_ETH_NOT_IPV4,     /* ethertype other than IPv4 (ARP, IPv6, VLAN...) */
	UTCP_DROP_ETH_NOT_US,       /* destination MAC neither ours nor broadcast */
	UTCP_DROP_IP_TRUNC,         /* shorter than a minimal IPv4 header */
	UTCP_DROP_IP_VERSION,       /* version != 4 */
	UTCP_DROP_IP_IHL,           /* IHL < 5 or header longer than the frame */
	UTCP_DROP_IP_TOTLEN,        /* total length < IHL*4 or > frame */
	UTCP_DROP_IP_CSUM,          /* header checksum wrong */
	UTCP_DROP_IP_FRAGMENT,      /* MF set or non-zero offset: no reassembly */
	UTCP_DROP_IP_OPTIONS,       /* IP options present: not handled */
	UTCP_DROP_IP_NOT_US,        /* destination is not the stack's address */
	UTCP_DROP_IP_PROTO,         /* neither TCP nor ICMP */
	UTCP_DROP_IP_BAD_SRC,       /* source is broadcast/multicast/zero */
	UTCP_DROP_TCP_TRUNC,        /* shorter than a minimal TCP header */
	UTCP_DROP_TCP_DOFF,         /* data offset < 5 or past the segment */
	UTCP_DROP_TCP_CSUM,         /* checksum wrong */
	UTCP_DROP_TCP_OPTION,       /* malformed option (length < 2, past header, wrong size) */
	UTCP_DROP_TCP_BAD_FLAGS,    /* e.g. SYN+RST, SYN+FIN */
	UTCP_DROP_TCP_PORT_ZERO,    /* source or destination port 0 */
	UTCP_DROP_ICMP_TRUNC,
	UTCP_DROP_ICMP_CSUM,
	UTCP_DROP_ICMP_UNHANDLED,   /* a type we do not act on */
	UTCP_DROP_ICMP_NO_CONN,     /* quotes a segment of no connection of ours */
	UTCP_DROP_ICMP_STALE,       /* quoted sequence outside SND.UNA..SND.NXT (RFC 5927) */
	UTCP_DROP_NO_CONN,          /* no connection and no listener (RST sent unless RST) */
	UTCP_DROP_TABLE_FULL,       /* SYN to a listener with no free control block */
	UTCP_DROP_BACKLOG,          /* SYN to a listener whose backlog is full */
	UTCP_DROP_TCP_STATE,        /* not acceptable in the connection's state (RFC 9293 3.10.7) */
	UTCP_DROP_PAWS,             /* RFC 7323 PAWS rejected the segment */
	UTCP_DROP_OUT_OF_WINDOW,    /* sequence number not acceptable */
	UTCP_DROP_RX_OVERFLOW,      /* frame larger than the stack accepts */
	UTCP_DROP__MAX
};

const char *utcp_drop_str(enum utcp_drop why);

/* ---- Internet checksum (RFC 1071), incremental-friendly ----
 * Accumulate 16-bit words into a 32-bit sum with utcp_csum_add(); odd lengths are
 * only allowed for the last chunk.  utcp_csum_fold() folds and complements. */
uint32_t utcp_csum_add(uint32_t sum, const void *data, size_t len);
/* Copies len bytes from src to dst (not overlapping) and adds them to sum in the same
 * pass, as utcp_csum_add(sum, src, len) would. */
uint32_t utcp_csum_copy(void *dst, const void *src, size_t len, uint32_t sum);
/* Adds chunk, the utcp_csum_add() sum of a piece that starts offset bytes into the
 * summed data, to sum: a piece at an odd offset (after an odd-length one) is swapped. */
uint32_t utcp_csum_add_at(uint32_t sum, size_t offset, uint32_t chunk);
uint16_t utcp_csum_fold(uint32_t sum);
/* Pseudo-header sum for TCP/UDP over IPv4 (addresses host order). */
uint32_t utcp_csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len);
/* RFC 1624 incremental update of a folded checksum when one 16-bit word changes. */
uint16_t utcp_csum_update16(uint16_t csum, uint16_t old_word, uint16_t new_word);

/* ---- byte-order helpers (no unaligned access) ---- */
static inline uint16_t utcp_get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t utcp_get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void utcp_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void utcp_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* ---- Ethernet ---- */
#define UTCP_ETH_HLEN 14
#define UTCP_ETH_P_IPV4 0x0800
#define UTCP_ETH_P_ARP 0x0806

struct utcp_eth {
	uint8_t dst[6];
	uint8_t src[6];
	uint16_t type;
};

/* Returns 0 or -EBADMSG (*why set). */
int utcp_eth_parse(const uint8_t *frame, size_t len, struct utcp_eth *eth, enum utcp_drop *why);
/* Writes 14 bytes; returns UTCP_ETH_HLEN or -ENOSPC. */
int utcp_eth_emit(uint8_t *buf, size_t cap, const uint8_t dst[6], const uint8_t src[6], uint16_t type);

/* ---- IPv4 ---- */
#define UTCP_IP_HLEN 20
#define UTCP_IPPROTO_ICMP 1
#define UTCP_IPPROTO_TCP 6

struct utcp_ipv4 {
	uint32_t src, dst;
	uint16_t total_len;   /* from the header; the frame may carry padding after it */
	uint16_t id;
	uint8_t hdr_len;
	uint8_t tos, ttl, proto;
	bool df;
	const uint8_t *payload;
	size_t payload_len;   /* total_len - hdr_len */
};

/* Validates version, IHL, total length against the frame, header checksum, and
 * rejects fragments and options (each its own drop reason).  0 or negative errno. */
int utcp_ipv4_parse(const uint8_t *pkt, size_t len, struct utcp_ipv4 *ip, enum utcp_drop *why);
/* Emits a 20-byte header with DF set and the checksum filled in.  Returns 20 or -ENOSPC. */
int utcp_ipv4_emit(uint8_t *buf, size_t cap, uint32_t src, uint32_t dst, uint8_t proto,
		   uint16_t payload_len, uint8_t ttl, uint16_t id);

/* ---- TCP ---- */
#define UTCP_TCP_HLEN 20
#define UTCP_TCP_MAX_HLEN 60
#define UTCP_TH_FIN 0x01
#define UTCP_TH_SYN 0x02
#define UTCP_TH_RST 0x04
#define UTCP_TH_PSH 0x08
#define UTCP_TH_ACK 0x10
#define UTCP_TH_URG 0x20
#define UTCP_TH_ECE 0x40
#define UTCP_TH_CWR 0x80

#define UTCP_TCPOPT_EOL 0
#define UTCP_TCPOPT_NOP 1
#define UTCP_TCPOPT_MSS 2
#define UTCP_TCPOPT_WS 3
#define UTCP_TCPOPT_SACK_OK 4
#define UTCP_TCPOPT_SACK 5
#define UTCP_TCPOPT_TS 8
#define UTCP_TCP_MAX_SACK 4
#define UTCP_TCP_MAX_WSCALE 14

struct utcp_sack_block {
	uint32_t left, right;
};

struct utcp_tcp_opts {
	bool has_mss, has_ws, sack_ok, has_ts;
	uint16_t mss;
	uint8_t ws;            /* as received; clamp to 14 is the caller's job (RFC 7323 2.3) */
	uint32_t tsval, tsecr;
	uint8_t nsack;
	struct utcp_sack_block sack[UTCP_TCP_MAX_SACK];
};

struct utcp_tcp {
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t flags;
	uint8_t hdr_len;
	uint16_t wnd;          /* raw, unscaled */
	uint16_t urp;
	struct utcp_tcp_opts opt;
	const uint8_t *payload;
	size_t payload_len;
};

/* Parses a TCP segment (the IPv4 payload).  With verify_csum the checksum is checked
 * against the pseudo-header of src/dst.  Malformed options reject the segment. */
int utcp_tcp_parse(const uint8_t *seg, size_t len, uint32_t src, uint32_t dst, bool verify_csum,
		   struct utcp_tcp *tcp, enum utcp_drop *why);
/* Parses only the option area (for tests and the fuzzer); 0 or -EBADMSG. */
int utcp_tcp_parse_options(const uint8_t *opt, size_t len, struct utcp_tcp_opts *out);
/* Encodes options in canonical order (MSS, SACK-permitted+TS or NOP NOP TS, NOP WS,
 * SACK blocks) padded to 4 bytes; returns the length (<= 40) or -ENOSPC if they do not fit.
 * SACK blocks that do not fit are truncated rather than failing. */
int utcp_tcp_emit_options(uint8_t *buf, size_t cap, const struct utcp_tcp_opts *opt);
/* The length utcp_tcp_emit_options() would return, without writing anything. */
int utcp_tcp_options_len(const struct utcp_tcp_opts *opt);
/* Emits header + options + payload at buf and fills in the checksum.
 * Returns the segment length or -ENOSPC. */
int utcp_tcp_emit(uint8_t *buf, size_t cap, uint32_t src, uint32_t dst, const struct utcp_tcp *tcp,
		  const void *payload, size_t payload_len);
/* Same with the payload in two pieces (a ring buffer that wraps). */
int utcp_tcp_emit2(uint8_t *buf, size_t cap, uint32_t src, uint32_t dst, const struct utcp_tcp *tcp,
		   const void *p1, size_t l1, const void *p2, size_t l2);

/* ---- ICMP (only what TCP needs: errors quoting one of our segments) ---- */
#define UTCP_ICMP_DEST_UNREACH 3
#define UTCP_ICMP_TIME_EXCEEDED 11
#define UTCP_ICMP_CODE_PORT_UNREACH 3
#define UTCP_ICMP_CODE_FRAG_NEEDED 4

struct utcp_icmp {
	uint8_t type, code;
	uint16_t next_hop_mtu;   /* for FRAG_NEEDED, 0 if the router did not say */
	bool has_quote;          /* quoted IPv4 header + first 8 bytes of TCP present */
	uint32_t q_src, q_dst;   /* quoted (our outgoing) header */
	uint8_t q_proto;
	uint16_t q_sport, q_dport;
	uint32_t q_seq;
};

/* Verifies the ICMP checksum and parses an error's quote.  0 or -EBADMSG. */
int utcp_icmp_parse(const uint8_t *msg, size_t len, struct utcp_icmp *icmp, enum utcp_drop *why);

#ifdef __cplusplus
}
#endif
#endif
