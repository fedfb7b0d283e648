/* test_pkt.c — the benchmark's frame templates: lengths, addresses, and checksums that verify
 * (IPv4 header sum and TCP sum over pseudo-header, header and the all-zero payload). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkt.h"

static int failures;

#define CHECK(c)                                                                   \
	do {                                                                       \
		if (!(c)) {                                                        \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); \
			failures++;                                                \
		}                                                                  \
	} while (0)

static void test_frame(uint32_t len)
{
	static uint8_t frame[PKT_MAX_LEN];
	struct pkt_flow f = { .smac = { 2, 0, 0, 0, 0, 1 }, .dmac = { 2, 0, 0, 0, 0, 2 },
			      .sport = 40000, .dport = 20001 };
	uint8_t pseudo[12];
	uint32_t sum;

	f.saddr = inet_addr("198.18.3.2");
	f.daddr = inet_addr("198.18.3.1");
	memset(frame, 0, sizeof(frame));
	CHECK(pkt_build(frame, &f, len) == 0);
	CHECK(frame[12] == 0x08 && frame[13] == 0x00);
	CHECK(!memcmp(frame, f.dmac, 6) && !memcmp(frame + 6, f.smac, 6));
	CHECK(((frame[16] << 8) | frame[17]) == (int)(len - 14));
	CHECK(!memcmp(frame + 26, &f.saddr, 4) && !memcmp(frame + 30, &f.daddr, 4));
	CHECK(((frame[34] << 8) | frame[35]) == 40000 && ((frame[36] << 8) | frame[37]) == 20001);
	CHECK(frame[47] == 0x10);   /* ACK, no SYN: a segment of an established flow */
	CHECK(pkt_csum_fold(pkt_csum_add(0, frame + 14, 20)) == 0);
	memcpy(pseudo, frame + 26, 8);
	pseudo[8] = 0;
	pseudo[9] = 6;
	pseudo[10] = (uint8_t)((len - 34) >> 8);
	pseudo[11] = (uint8_t)(len - 34);
	sum = pkt_csum_add(pkt_csum_add(0, pseudo, 12), frame + 34, len - 34);
	CHECK(pkt_csum_fold(sum) == 0);
}

int main(void)
{
	const uint32_t sizes[] = { 60, 61, 64, 128, 256, 512, 1024, 1513, 1514 };
	uint8_t h[PKT_HDR_LEN], mac[6];
	struct pkt_flow f;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		test_frame(sizes[i]);
	memset(&f, 0, sizeof(f));
	CHECK(pkt_build(h, &f, 59) < 0);
	CHECK(pkt_build(h, &f, 1515) < 0);
	CHECK(pkt_parse_mac("02:aB:00:10:ff:0e", mac) == 0 && mac[1] == 0xab && mac[5] == 0x0e);
	CHECK(pkt_parse_mac("02:ab:00:10:ff", mac) < 0);
	CHECK(pkt_parse_mac("02:ab:00:10:ff:0e:11", mac) < 0);
	CHECK(pkt_parse_mac("zz:ab:00:10:ff:0e", mac) < 0);
	if (failures) {
		fprintf(stderr, "test_pkt: %d failures\n", failures);
		return 1;
	}
	printf("test_pkt: ok\n");
	return 0;
}
