/* pkt.h — the benchmark's frames: Ethernet + IPv4 + TCP (ACK, zero payload) templates with
 * correct checksums, written into send frames by header only (the payload area of a send
 * frame is never written by anyone, so it stays zero and the template's checksum holds). */
#ifndef SWBENCH_PKT_H
#define SWBENCH_PKT_H

#include <stddef.h>
#include <stdint.h>

#define PKT_HDR_LEN   54u    /* 14 Ethernet + 20 IPv4 + 20 TCP */
#define PKT_MIN_LEN   60u    /* shortest Ethernet frame without FCS */
#define PKT_MAX_LEN   1514u  /* MTU 1500 + 14 */

struct pkt_flow {
	uint8_t smac[6], dmac[6];
	uint32_t saddr, daddr;   /* network byte order */
	uint16_t sport, dport;   /* host byte order */
};

/* The first PKT_HDR_LEN bytes of a len-byte frame (len in PKT_MIN_LEN..PKT_MAX_LEN) of flow f,
 * checksums computed for an all-zero payload.  Returns 0 or -EINVAL. */
int pkt_build(uint8_t hdr[PKT_HDR_LEN], const struct pkt_flow *f, uint32_t len);

/* Internet checksum helpers (RFC 1071), exposed for the tests. */
uint32_t pkt_csum_add(uint32_t sum, const void *data, size_t len);
uint16_t pkt_csum_fold(uint32_t sum);

/* "aa:bb:cc:dd:ee:ff" -> mac; 0 or -EINVAL. */
int pkt_parse_mac(const char *s, uint8_t mac[6]);

#endif
