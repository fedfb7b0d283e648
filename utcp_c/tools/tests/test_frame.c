/* test_frame.c — mstack-responder's frame logic on crafted frames: the answers to SYN, data
 * and FIN (every field and both checksums), frames it must leave alone, and malformed
 * frames (every truncation, bad IHL, version, total length, data offset) held in buffers of
 * exactly their length so that ASan catches any read past them.  No privileges. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "frame.h"

#define ROOM 2048

static const uint8_t MAC_US[6] = { 0x02, 0, 0, 0, 0, 0x01 };
static const uint8_t MAC_PEER[6] = { 0x02, 0, 0, 0, 0, 0x02 };

static struct resp_cfg cfg_default(void)
{
	struct resp_cfg cfg = {
		.addr = htonl(0x0a000001),
		.port = htons(8080),
		.mss = 1460,
		.isn_key = 0x12345678,
	};
	return cfg;
}

/* A frame from 10.0.0.2:40000 to 10.0.0.1:8080 (pad: Ethernet padding bytes after it). */
struct spec {
	uint8_t flags;
	uint32_t seq, ack;
	const uint8_t *payload;
	size_t payload_len;
	size_t ip_opts;       /* bytes of IPv4 options (multiple of 4) */
	size_t tcp_opts;      /* bytes of TCP options (multiple of 4) */
	uint8_t proto;
	uint16_t dport;
	uint32_t daddr;
	uint16_t frag;
	size_t pad;
};

/* The responder's ISN minus the peer's on the default flow. */
static uint32_t off_default(const struct resp_cfg *cfg)
{
	return resp_seq_offset(cfg, htonl(0x0a000001), htonl(0x0a000002), htons(8080),
			       htons(40000));
}

static struct spec spec_default(uint8_t flags)
{
	struct spec s = {
		.flags = flags,
		.seq = 1000,
		.ack = 5000,
		.proto = 6,
		.dport = 8080,
		.daddr = 0x0a000001,
	};
	return s;
}

static size_t make_frame(const struct spec *s, uint8_t *f)
{
	size_t ihl = 20 + s->ip_opts, thl = 20 + s->tcp_opts;
	size_t tot = ihl + thl + s->payload_len;

	memset(f, 0, 14 + tot + s->pad);
	memcpy(f, MAC_US, 6);
	memcpy(f + 6, MAC_PEER, 6);
	f[12] = 0x08;
	uint8_t *ip = f + 14;
	ip[0] = (uint8_t)(0x40 | ihl / 4);
	ip[2] = (uint8_t)(tot >> 8);
	ip[3] = (uint8_t)tot;
	ip[6] = (uint8_t)(s->frag >> 8);
	ip[7] = (uint8_t)s->frag;
	ip[8] = 64;
	ip[9] = s->proto;
	uint32_t sa = htonl(0x0a000002), da = htonl(s->daddr);
	memcpy(ip + 12, &sa, 4);
	memcpy(ip + 16, &da, 4);
	for (size_t i = 0; i < s->ip_opts; i++)
		ip[20 + i] = 1; /* NOP */
	uint8_t *t = ip + ihl;
	t[0] = 40000 >> 8;
	t[1] = 40000 & 0xff;
	t[2] = (uint8_t)(s->dport >> 8);
	t[3] = (uint8_t)s->dport;
	uint32_t seq = htonl(s->seq), ack = htonl(s->ack);
	memcpy(t + 4, &seq, 4);
	memcpy(t + 8, &ack, 4);
	t[12] = (uint8_t)((thl / 4) << 4);
	t[13] = s->flags;
	t[14] = 0xff;
	t[15] = 0xff;
	for (size_t i = 0; i < s->tcp_opts; i++)
		t[20 + i] = 1;
	if (s->payload_len)
		memcpy(t + thl, s->payload, s->payload_len);
	for (size_t i = 0; i < s->pad; i++)
		f[14 + tot + i] = 0xee;
	return 14 + tot + s->pad;
}

/* A copy in a buffer of exactly len bytes (ASan: no read past the frame goes unnoticed). */
static size_t run_exact(const struct resp_cfg *cfg, const uint8_t *f, size_t len, uint8_t *out,
			size_t room, struct resp_counts *c)
{
	uint8_t *copy = malloc(len ? len : 1);
	size_t n;

	memcpy(copy, f, len);
	n = resp_frame(cfg, copy, len, out, room, c);
	free(copy);
	return n;
}

static uint16_t g16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t g32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Check an answer's Ethernet and IPv4 headers and both checksums; returns its TCP header. */
static const uint8_t *check_reply(const uint8_t *o, size_t n, size_t tcp_len)
{
	const uint8_t *ip = o + 14, *t = ip + 20;

	CHECK_EQ(n, 14 + 20 + tcp_len);
	CHECK(!memcmp(o, MAC_PEER, 6));
	CHECK(!memcmp(o + 6, MAC_US, 6));
	CHECK_EQ(g16(o + 12), 0x0800);
	CHECK_EQ(ip[0], 0x45);
	CHECK_EQ(g16(ip + 2), 20 + tcp_len);
	CHECK_EQ(g16(ip + 6), 0x4000);
	CHECK_EQ(ip[8], 64);
	CHECK_EQ(ip[9], 6);
	CHECK_EQ(g32(ip + 12), 0x0a000001);
	CHECK_EQ(g32(ip + 16), 0x0a000002);
	CHECK_EQ(resp_csum_fold(resp_csum_add(0, ip, 20)), 0xffff);
	uint8_t pseudo[12];
	memcpy(pseudo, ip + 12, 8);
	pseudo[8] = 0;
	pseudo[9] = 6;
	pseudo[10] = (uint8_t)(tcp_len >> 8);
	pseudo[11] = (uint8_t)tcp_len;
	CHECK_EQ(resp_csum_fold(resp_csum_add(resp_csum_add(0, pseudo, 12), t, tcp_len)), 0xffff);
	CHECK_EQ(g16(t), 8080);
	CHECK_EQ(g16(t + 2), 40000);
	CHECK_EQ(g16(t + 14), RESP_WINDOW);
	CHECK_EQ(g16(t + 18), 0); /* urgent pointer */
	return t;
}

static void check_sum(const struct resp_counts *c)
{
	CHECK_EQ(c->syn + c->data + c->fin + c->ack + c->other + c->malformed, c->frames);
}

static void test_checksum_rfc1071(void)
{
	/* A well-known IPv4 header whose checksum is 0xb861. */
	const uint8_t h[20] = { 0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
				0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7 };
	const uint8_t odd[3] = { 0x01, 0x02, 0x03 };

	CHECK_EQ((uint16_t)~resp_csum_fold(resp_csum_add(0, h, 20)), 0xb861);
	CHECK_EQ(resp_csum_fold(resp_csum_add(0, odd, 3)), 0x0102 + 0x0300);
}

static void test_syn_gets_synack(void)
{
	struct resp_cfg cfg = cfg_default();
	struct resp_counts c = { 0 };
	struct spec s = spec_default(0x02);
	uint8_t f[ROOM], o[ROOM];

	s.tcp_opts = 20; /* MSS, SACK, timestamps, window scale in the real world */
	size_t len = make_frame(&s, f);
	size_t n = run_exact(&cfg, f, len, o, sizeof(o), &c);
	const uint8_t *t = check_reply(o, n, 24);
	CHECK_EQ(g32(t + 4), 1000 + off_default(&cfg));
	CHECK_EQ(g32(t + 8), 1001);
	CHECK_EQ(t[12], 6 << 4);
	CHECK_EQ(t[13], 0x12);
	CHECK(t[20] == 2 && t[21] == 4 && g16(t + 22) == 1460);
	CHECK_EQ(c.frames, 1);
	CHECK_EQ(c.syn, 1);
	CHECK_EQ(c.replies, 1);
	check_sum(&c);

	/* no MSS option; a SYN carrying data (TFO) is still just a SYN; seq wraps */
	cfg.mss = 0;
	s.tcp_opts = 0;
	s.seq = 0xffffffffu;
	s.payload = (const uint8_t *)"hello";
	s.payload_len = 5;
	len = make_frame(&s, f);
	n = run_exact(&cfg, f, len, o, sizeof(o), &c);
	t = check_reply(o, n, 20);
	CHECK_EQ(g32(t + 4), (uint32_t)(0xffffffffu + off_default(&cfg)));
	CHECK_EQ(g32(t + 8), 0);
	CHECK_EQ(t[12], 5 << 4);
	CHECK_EQ(c.syn, 2);
	check_sum(&c);
}

static void test_isn_per_flow(void)
{
	struct resp_cfg cfg = cfg_default();
	uint32_t a = resp_seq_offset(&cfg, 1, 2, 3, 4);

	CHECK_EQ(resp_seq_offset(&cfg, 1, 2, 3, 4), a);
	CHECK(resp_seq_offset(&cfg, 1, 2, 3, 5) != a);
	CHECK(resp_seq_offset(&cfg, 1, 2, 4, 4) != a);
	CHECK(resp_seq_offset(&cfg, 1, 3, 3, 4) != a);
	CHECK(resp_seq_offset(&cfg, 2, 2, 3, 4) != a);
	cfg.isn_key++;
	CHECK(resp_seq_offset(&cfg, 1, 2, 3, 4) != a);
}

static void test_data_is_echoed(void)
{
	struct resp_cfg cfg = cfg_default();
	struct resp_counts c = { 0 };
	uint8_t f[ROOM], o[ROOM], payload[1460];

	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)(i * 7 + 3);
	/* odd and even lengths, the largest a 1500-byte MTU carries, TCP options on the way in */
	const size_t lens[] = { 1, 2, 101, 1448, 1460 };
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		struct spec s = spec_default(0x18);
		s.payload = payload;
		s.payload_len = lens[k];
		s.tcp_opts = lens[k] == 1448 ? 12 : 0;
		s.seq = 0xfffffff0u;
		size_t len = make_frame(&s, f);
		size_t n = run_exact(&cfg, f, len, o, sizeof(o), &c);
		const uint8_t *t = check_reply(o, n, 20 + lens[k]);
		CHECK_EQ(g32(t + 4), 5000); /* the segment's ack */
		CHECK_EQ(g32(t + 8), (uint32_t)(0xfffffff0u + lens[k]));
		CHECK_EQ(t[13], 0x18);
		CHECK(!memcmp(t + 20, payload, lens[k]));
	}
	CHECK_EQ(c.data, 5);
	CHECK_EQ(c.replies, 5);
	check_sum(&c);
}

static void test_data_with_fin(void)
{
	struct resp_cfg cfg = cfg_default();
	struct resp_counts c = { 0 };
	struct spec s = spec_default(0x19);
	uint8_t f[ROOM], o[ROOM];

	s.payload = (const uint8_t *)"bye";
	s.payload_len = 3;
	size_t n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
	const uint8_t *t = check_reply(o, n, 23);
	CHECK_EQ(g32(t + 4), 5000);
	CHECK_EQ(g32(t + 8), 1004);
	CHECK_EQ(t[13], 0x19);
	CHECK(!memcmp(t + 20, "bye", 3));
	CHECK_EQ(c.data, 1);
	CHECK_EQ(c.fin, 0);
	check_sum(&c);
}

static void test_fin_gets_finack(void)
{
	struct resp_cfg cfg = cfg_default();
	struct resp_counts c = { 0 };
	struct spec s = spec_default(0x11);
	uint8_t f[ROOM], o[ROOM];

	size_t n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
	const uint8_t *t = check_reply(o, n, 20);
	CHECK_EQ(g32(t + 4), 5000);
	CHECK_EQ(g32(t + 8), 1001);
	CHECK_EQ(t[13], 0x11);
	CHECK_EQ(c.fin, 1);
	check_sum(&c);
}

/* Stream rules: a peer with several segments in flight (acking only the first echo), a
 * retransmission, pure ACKs, then both FINs.  The echoes tile the responder's stream as the
 * peer's bytes tile its own, and each ack covers only what the peer confirmed receiving. */
static void test_stream_rules(void)
{
	struct resp_cfg cfg = cfg_default();
	struct resp_counts c = { 0 };
	struct spec s = spec_default(0x02);
	uint8_t f[ROOM], o[ROOM], payload[400];
	const uint32_t irs = 0xfffffe00u;

	cfg.stream = 1;
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)i;
	s.seq = irs;
	size_t n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
	const uint8_t *t = check_reply(o, n, 24);
	uint32_t iss = g32(t + 4);
	CHECK_EQ(iss, irs + off_default(&cfg));
	CHECK_EQ(g32(t + 8), irs + 1);

	/* the handshake's ACK: a pure ACK back, acknowledging nothing new */
	s = spec_default(0x10);
	s.seq = irs + 1;
	s.ack = iss + 1;
	n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
	t = check_reply(o, n, 20);
	CHECK_EQ(g32(t + 4), iss + 1);
	CHECK_EQ(g32(t + 8), irs + 1);
	CHECK_EQ(t[13], 0x10);

	/* 10 bytes: echoed at our offset 0; not acknowledged until the peer confirms the echo */
	s = spec_default(0x18);
	s.seq = irs + 1;
	s.ack = iss + 1;
	s.payload = payload;
	s.payload_len = 10;
	n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
	t = check_reply(o, n, 30);
	CHECK_EQ(g32(t + 4), iss + 1);
	CHECK_EQ(g32(t + 8), irs + 1);
	CHECK(!memcmp(t + 20, payload, 10));
	s = spec_default(0x10); /* the peer confirms: now its 10 bytes are acknowledged */
	s.seq = irs + 11;
	s.ack = iss + 11;
	n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
	t = check_reply(o, n, 20);
	CHECK_EQ(g32(t + 4), iss + 11);
	CHECK_EQ(g32(t + 8), irs + 11);

	/* three in flight, all acking only the first echo, and the second sent twice */
	const uint32_t offs[] = { 10, 110, 310, 110 }, lens[] = { 100, 200, 50, 200 };
	for (int k = 0; k < 4; k++) {
		s = spec_default(0x18);
		s.seq = irs + 1 + offs[k];
		s.ack = iss + 11;
		s.payload = payload + offs[k];
		s.payload_len = lens[k];
		n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
		t = check_reply(o, n, 20 + lens[k]);
		CHECK_EQ(g32(t + 4), iss + 1 + offs[k]);
		CHECK_EQ(g32(t + 8), irs + 11);
		CHECK_EQ(t[13], 0x18);
		CHECK(!memcmp(t + 20, payload + offs[k], lens[k]));
	}

	/* its FIN after 360 bytes, all echoes received: our FIN at our offset 360, its FIN not
	 * yet acknowledged (we do not know that ours arrives) */
	s = spec_default(0x11);
	s.seq = irs + 1 + 360;
	s.ack = iss + 1 + 360;
	n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
	t = check_reply(o, n, 20);
	CHECK_EQ(g32(t + 4), iss + 1 + 360);
	CHECK_EQ(g32(t + 8), irs + 1 + 360);
	CHECK_EQ(t[13], 0x11);
	/* it acknowledges our FIN: the pure ACK back acknowledges its FIN */
	s = spec_default(0x10);
	s.seq = irs + 1 + 361;
	s.ack = iss + 1 + 361;
	n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
	t = check_reply(o, n, 20);
	CHECK_EQ(g32(t + 4), iss + 362);
	CHECK_EQ(g32(t + 8), irs + 362);

	/* data with FIN: echoed with FIN at the mirrored offset */
	s = spec_default(0x19);
	s.seq = irs + 1;
	s.ack = iss + 1;
	s.payload = payload;
	s.payload_len = 5;
	n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
	t = check_reply(o, n, 25);
	CHECK_EQ(g32(t + 4), iss + 1);
	CHECK_EQ(g32(t + 8), irs + 1);
	CHECK_EQ(t[13], 0x19);

	CHECK_EQ(c.syn, 1);
	CHECK_EQ(c.data, 6);
	CHECK_EQ(c.fin, 1);
	CHECK_EQ(c.ack, 3);
	CHECK_EQ(c.replies, 11);
	check_sum(&c);
}

/* Ethernet padding and IPv4 options: lengths come from the IP header, options are dropped. */
static void test_padding_and_ip_options(void)
{
	struct resp_cfg cfg = cfg_default();
	struct resp_counts c = { 0 };
	struct spec s = spec_default(0x18);
	uint8_t f[ROOM], o[ROOM];

	s.payload = (const uint8_t *)"x";
	s.payload_len = 1;
	s.pad = 5; /* 14 + 41 + 5 = 60: the minimum Ethernet frame */
	s.ip_opts = 4;
	size_t len = make_frame(&s, f);
	size_t n = run_exact(&cfg, f, len, o, sizeof(o), &c);
	const uint8_t *t = check_reply(o, n, 21);
	CHECK_EQ(t[20], 'x');
	CHECK_EQ(g32(t + 8), 1001);

	struct spec syn = spec_default(0x02);
	syn.pad = 6;
	n = run_exact(&cfg, f, make_frame(&syn, f), o, sizeof(o), &c);
	check_reply(o, n, 24);
	CHECK_EQ(c.data, 1);
	CHECK_EQ(c.syn, 1);
	check_sum(&c);
}

static void test_wildcard_address(void)
{
	struct resp_cfg cfg = cfg_default();
	struct resp_counts c = { 0 };
	struct spec s = spec_default(0x02);
	uint8_t f[ROOM], o[ROOM];

	cfg.addr = 0;
	s.daddr = 0x0a000001;
	CHECK(run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c) > 0);
	s.daddr = 0xc0a80001;
	size_t n = run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c);
	CHECK(n > 0);
	CHECK_EQ(g32(o + 14 + 12), 0xc0a80001); /* answers from the address it was sent to */
	CHECK_EQ(c.syn, 2);
}

/* Frames it must leave alone: nothing written, counted as other. */
static void test_others_ignored(void)
{
	struct resp_cfg cfg = cfg_default();
	struct resp_counts c = { 0 };
	uint8_t f[ROOM], o[ROOM], zero[ROOM];
	struct spec s;
	size_t len;
	int n_other = 0;

	memset(zero, 0xaa, sizeof(zero));
#define EXPECT_OTHER(frame_len)                                                   \
	do {                                                                      \
		memset(o, 0xaa, sizeof(o));                                       \
		CHECK_EQ(run_exact(&cfg, f, (frame_len), o, sizeof(o), &c), 0);   \
		CHECK(!memcmp(o, zero, sizeof(o)));                               \
		n_other++;                                                        \
		CHECK_EQ(c.other, n_other);                                       \
	} while (0)

	s = spec_default(0x04); /* RST */
	EXPECT_OTHER(make_frame(&s, f));
	s = spec_default(0x14); /* RST|ACK with data */
	s.payload = (const uint8_t *)"z";
	s.payload_len = 1;
	EXPECT_OTHER(make_frame(&s, f));
	s = spec_default(0x12); /* SYN-ACK */
	EXPECT_OTHER(make_frame(&s, f));
	s = spec_default(0x08); /* data without ACK */
	s.payload = (const uint8_t *)"z";
	s.payload_len = 1;
	EXPECT_OTHER(make_frame(&s, f));
	s = spec_default(0x01); /* FIN without ACK */
	EXPECT_OTHER(make_frame(&s, f));
	s = spec_default(0x02); /* another port */
	s.dport = 8081;
	EXPECT_OTHER(make_frame(&s, f));
	s = spec_default(0x02); /* another address */
	s.daddr = 0x0a000009;
	EXPECT_OTHER(make_frame(&s, f));
	s = spec_default(0x02); /* UDP */
	s.proto = 17;
	EXPECT_OTHER(make_frame(&s, f));
	s = spec_default(0x02); /* a first fragment (MF) */
	s.frag = 0x2000;
	EXPECT_OTHER(make_frame(&s, f));
	s = spec_default(0x02); /* a later fragment */
	s.frag = 0x0010;
	EXPECT_OTHER(make_frame(&s, f));
	s = spec_default(0x02); /* ARP */
	len = make_frame(&s, f);
	f[12] = 0x08;
	f[13] = 0x06;
	EXPECT_OTHER(len);
	s = spec_default(0x02); /* IPv6 ethertype */
	len = make_frame(&s, f);
	f[12] = 0x86;
	f[13] = 0xdd;
	EXPECT_OTHER(len);
	s = spec_default(0x02); /* a VLAN tag */
	len = make_frame(&s, f);
	f[12] = 0x81;
	f[13] = 0x00;
	EXPECT_OTHER(len);
	/* a pure ACK: counted apart, unanswered under frame rules */
	s = spec_default(0x10);
	memset(o, 0xaa, sizeof(o));
	CHECK_EQ(run_exact(&cfg, f, make_frame(&s, f), o, sizeof(o), &c), 0);
	CHECK(!memcmp(o, zero, sizeof(o)));
	CHECK_EQ(c.ack, 1);
	CHECK_EQ(c.other, n_other);
	CHECK_EQ(c.replies, 0);
	check_sum(&c);
#undef EXPECT_OTHER
}

static void expect_malformed(const uint8_t *f, size_t len, struct resp_counts *c,
			     const char *what)
{
	struct resp_cfg cfg = cfg_default();
	uint8_t o[ROOM];
	uint64_t before = c->malformed;

	if (run_exact(&cfg, f, len, o, sizeof(o), c) != 0 || c->malformed != before + 1)
		fprintf(stderr, "not malformed: %s (len %zu)\n", what, len);
	CHECK_EQ(c->malformed, before + 1);
}

/* Every prefix of valid frames (the IP total length then promises more than there is). */
static void test_truncated(void)
{
	struct resp_counts c = { 0 };
	uint8_t f[ROOM];
	struct spec specs[3] = { spec_default(0x02), spec_default(0x18), spec_default(0x11) };

	specs[0].tcp_opts = 8;
	specs[0].ip_opts = 8;
	specs[1].payload = (const uint8_t *)"0123456789";
	specs[1].payload_len = 10;
	for (int k = 0; k < 3; k++) {
		size_t full = make_frame(&specs[k], f);
		for (size_t len = 0; len < full; len++)
			expect_malformed(f, len, &c, "truncated");
	}
	check_sum(&c);
	CHECK_EQ(c.replies, 0);
}

static void test_bad_headers(void)
{
	struct resp_counts c = { 0 };
	uint8_t f[ROOM];
	struct spec s = spec_default(0x18);
	size_t len;

	s.payload = (const uint8_t *)"abcd";
	s.payload_len = 4;
	for (int ihl = 0; ihl < 5; ihl++) {
		len = make_frame(&s, f);
		f[14] = (uint8_t)(0x40 | ihl);
		expect_malformed(f, len, &c, "IHL < 5");
	}
	len = make_frame(&s, f);
	f[14] = 0x4f; /* 60 bytes of IPv4 header: past the total length (64) of the packet's */
	f[16] = 0;
	f[17] = 40;
	expect_malformed(f, len, &c, "IHL past total length");
	len = make_frame(&s, f);
	f[14] = 0x4f;
	expect_malformed(f, 14 + 40, &c, "IHL past the frame");
	len = make_frame(&s, f);
	f[14] = 0x65; /* version 6 behind an IPv4 ethertype */
	expect_malformed(f, len, &c, "version");
	len = make_frame(&s, f);
	f[16] = 0;
	f[17] = 19; /* total length < IHL */
	expect_malformed(f, len, &c, "total length < IHL");
	len = make_frame(&s, f);
	f[16] = 0;
	f[17] = 39; /* 19 bytes of TCP */
	expect_malformed(f, len, &c, "TCP header cut by total length");
	len = make_frame(&s, f);
	f[16] = 0x05;
	f[17] = 0xdc; /* 1500 > the frame */
	expect_malformed(f, len, &c, "total length past the frame");
	len = make_frame(&s, f);
	f[16] = 0xff;
	f[17] = 0xff;
	expect_malformed(f, len, &c, "total length 65535");
	for (int doff = 0; doff < 5; doff++) {
		len = make_frame(&s, f);
		f[14 + 20 + 12] = (uint8_t)(doff << 4);
		expect_malformed(f, len, &c, "data offset < 5");
	}
	len = make_frame(&s, f);
	f[14 + 20 + 12] = 7 << 4; /* 28 bytes > 24 of TCP */
	expect_malformed(f, len, &c, "data offset past the segment");
	len = make_frame(&s, f);
	f[14 + 20 + 12] = 15 << 4;
	expect_malformed(f, len, &c, "data offset 60");
	check_sum(&c);
	CHECK_EQ(c.replies, 0);
}

static void test_no_room(void)
{
	struct resp_cfg cfg = cfg_default();
	struct resp_counts c = { 0 };
	struct spec s = spec_default(0x18);
	uint8_t f[ROOM], o[ROOM], payload[100] = { 0 };

	s.payload = payload;
	s.payload_len = sizeof(payload);
	size_t len = make_frame(&s, f);
	CHECK_EQ(run_exact(&cfg, f, len, o, 14 + 40 + 99, &c), 0);
	CHECK_EQ(c.no_room, 1);
	CHECK_EQ(c.data, 1);
	CHECK_EQ(run_exact(&cfg, f, len, o, 14 + 40 + 100, &c), 14 + 40 + 100);
	CHECK_EQ(c.replies, 1);
	s = spec_default(0x02);
	CHECK_EQ(run_exact(&cfg, f, make_frame(&s, f), o, 57, &c), 0); /* SYN-ACK + MSS: 58 */
	CHECK_EQ(c.no_room, 2);
	check_sum(&c);
}

/* Random bytes and randomly damaged good frames: no crash, no read past the frame (ASan),
 * any answer well formed and within the room. */
static void test_random_frames(void)
{
	struct resp_cfg cfg = cfg_default();
	struct resp_counts c = { 0 };
	uint8_t f[ROOM], o[ROOM];
	uint32_t x = 12345;

	for (int i = 0; i < 20000; i++) {
		x = x * 1103515245u + 12345u;
		size_t len;
		if (i & 1) {
			struct spec s = spec_default((uint8_t)(x >> 8));
			static const uint8_t pl[64];
			s.payload = pl;
			s.payload_len = (x >> 16) % 64;
			s.tcp_opts = 4 * ((x >> 24) % 3);
			len = make_frame(&s, f);
			for (int k = 0; k < 3; k++) {
				x = x * 1103515245u + 12345u;
				f[(x >> 8) % len] ^= (uint8_t)(1u << ((x >> 4) & 7));
			}
			x = x * 1103515245u + 12345u;
			if (x & 1)
				len -= (x >> 8) % (len + 1);
		} else {
			len = (x >> 8) % 128;
			for (size_t k = 0; k < len; k++) {
				x = x * 1103515245u + 12345u;
				f[k] = (uint8_t)(x >> 16);
			}
			if (len >= 14) {
				f[12] = 0x08;
				f[13] = 0x00;
			}
			if (len >= 15)
				f[14] = (uint8_t)(0x40 | (f[14] & 0x0f));
		}
		size_t room = 54 + (x >> 20) % 80;
		cfg.stream = (int)((x >> 12) & 1);
		size_t n = run_exact(&cfg, f, len, o, room, &c);
		CHECK(n <= room);
		if (n) {
			CHECK(n >= 54);
			CHECK_EQ(resp_csum_fold(resp_csum_add(0, o + 14, 20)), 0xffff);
		}
	}
	check_sum(&c);
	CHECK_EQ(c.frames, 20000);
	CHECK(c.replies > 100);
	CHECK(c.malformed > 100);
}

int main(int argc, char **argv)
{
	static const struct check_case cases[] = {
		CHECK_CASE(test_checksum_rfc1071),
		CHECK_CASE(test_syn_gets_synack),
		CHECK_CASE(test_isn_per_flow),
		CHECK_CASE(test_data_is_echoed),
		CHECK_CASE(test_data_with_fin),
		CHECK_CASE(test_fin_gets_finack),
		CHECK_CASE(test_stream_rules),
		CHECK_CASE(test_padding_and_ip_options),
		CHECK_CASE(test_wildcard_address),
		CHECK_CASE(test_others_ignored),
		CHECK_CASE(test_truncated),
		CHECK_CASE(test_bad_headers),
		CHECK_CASE(test_no_room),
		CHECK_CASE(test_random_frames),
	};

	return check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
