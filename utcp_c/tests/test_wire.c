/* test_wire.c — parse/emit of Ethernet, IPv4, TCP and ICMP, with malformed input of every kind. */
#include <errno.h>

#include "testlib.h"
#include "utcp_wire.h"

#define A_IP 0x0a000001u /* 10.0.0.1 */
#define B_IP 0x0a000002u /* 10.0.0.2 */

TEST(test_csum_rfc1071_example)
{
	static const uint8_t d[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};

	/* RFC 1071 section 3: the sum is 0xddf2, so the checksum is its complement. */
	CHECK_U32(utcp_csum_fold(utcp_csum_add(0, d, sizeof(d))), 0x220d);
}

TEST(test_csum_incremental_matches_whole)
{
	uint8_t d[101];
	unsigned i;
	uint32_t s;

	for (i = 0; i < sizeof(d); i++)
		d[i] = (uint8_t)(i * 37 + 11);
	s = utcp_csum_add(0, d, 40);
	s = utcp_csum_add(s, d + 40, 60);
	s = utcp_csum_add(s, d + 100, 1);        /* odd tail last */
	CHECK_U32(utcp_csum_fold(s), utcp_csum_fold(utcp_csum_add(0, d, sizeof(d))));
}

TEST(test_csum_update16_rfc1624)
{
	uint8_t d[20];
	unsigned i;
	uint16_t c, c2;

	for (i = 0; i < sizeof(d); i++)
		d[i] = (uint8_t)(0xf0 + i);
	c = utcp_csum_fold(utcp_csum_add(0, d, sizeof(d)));
	c2 = utcp_csum_update16(c, utcp_get16(d + 6), 0x1234);
	utcp_put16(d + 6, 0x1234);
	CHECK_U32(c2, utcp_csum_fold(utcp_csum_add(0, d, sizeof(d))));
}

TEST(test_eth_truncated)
{
	uint8_t f[13] = {0};
	struct utcp_eth e;
	enum utcp_drop why;

	CHECK_EQ(utcp_eth_parse(f, sizeof(f), &e, &why), -EBADMSG);
	CHECK_EQ(why, UTCP_DROP_ETH_TRUNC);
}

TEST(test_eth_roundtrip)
{
	uint8_t f[14], a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {7, 8, 9, 10, 11, 12};
	struct utcp_eth e;
	enum utcp_drop why;

	CHECK_EQ(utcp_eth_emit(f, sizeof(f), a, b, UTCP_ETH_P_IPV4), 14);
	CHECK_EQ(utcp_eth_emit(f, 13, a, b, UTCP_ETH_P_IPV4), -ENOSPC);
	CHECK_EQ(utcp_eth_parse(f, sizeof(f), &e, &why), 0);
	CHECK_MEM(e.dst, a, 6);
	CHECK_MEM(e.src, b, 6);
	CHECK_EQ(e.type, UTCP_ETH_P_IPV4);
}

/* A valid IPv4 packet with `plen` payload bytes. */
static size_t mk_ip(uint8_t *p, size_t plen)
{
	size_t i;

	utcp_ipv4_emit(p, 1500, A_IP, B_IP, UTCP_IPPROTO_TCP, (uint16_t)plen, 64, 7);
	for (i = 0; i < plen; i++)
		p[20 + i] = (uint8_t)i;
	return 20 + plen;
}

static void fix_ip_csum(uint8_t *p)
{
	unsigned ihl = (p[0] & 0xfu) * 4u;

	utcp_put16(p + 10, 0);
	utcp_put16(p + 10, utcp_csum_fold(utcp_csum_add(0, p, ihl)));
}

#define CHECK_IP_DROP(buf, len, reason)                                            \
	do {                                                                       \
		struct utcp_ipv4 ip_;                                              \
		enum utcp_drop why_ = UTCP_DROP_NONE;                              \
		CHECK(utcp_ipv4_parse((buf), (len), &ip_, &why_) < 0);              \
		CHECK_EQ(why_, (reason));                                          \
	} while (0)

TEST(test_ipv4_roundtrip_df_ttl)
{
	uint8_t p[64];
	struct utcp_ipv4 ip;
	enum utcp_drop why;
	size_t n = mk_ip(p, 10);

	CHECK_EQ(utcp_ipv4_parse(p, n, &ip, &why), 0);
	CHECK_U32(ip.src, A_IP);
	CHECK_U32(ip.dst, B_IP);
	CHECK_EQ(ip.proto, UTCP_IPPROTO_TCP);
	CHECK_EQ(ip.ttl, 64);
	CHECK(ip.df);
	CHECK_EQ(ip.id, 7);
	CHECK_EQ(ip.payload_len, 10);
	CHECK(ip.payload == p + 20);
}

TEST(test_ipv4_ethernet_padding_is_trimmed)
{
	uint8_t p[64];
	struct utcp_ipv4 ip;
	enum utcp_drop why;

	mk_ip(p, 6);
	memset(p + 26, 0xee, 20);               /* minimum-size frame padding */
	CHECK_EQ(utcp_ipv4_parse(p, 46, &ip, &why), 0);
	CHECK_EQ(ip.payload_len, 6);
}

TEST(test_ipv4_truncated)
{
	uint8_t p[64];

	mk_ip(p, 0);
	CHECK_IP_DROP(p, 19, UTCP_DROP_IP_TRUNC);
	CHECK_IP_DROP(p, 0, UTCP_DROP_IP_TRUNC);
}

TEST(test_ipv4_bad_version)
{
	uint8_t p[64];
	size_t n = mk_ip(p, 4);

	p[0] = 0x65;
	fix_ip_csum(p);
	CHECK_IP_DROP(p, n, UTCP_DROP_IP_VERSION);
}

TEST(test_ipv4_bad_ihl)
{
	uint8_t p[64];
	size_t n = mk_ip(p, 4);

	p[0] = 0x44;                             /* IHL 16 bytes < 20 */
	CHECK_IP_DROP(p, n, UTCP_DROP_IP_IHL);
	p[0] = 0x4f;                             /* IHL 60 bytes > 24-byte packet */
	CHECK_IP_DROP(p, n, UTCP_DROP_IP_IHL);
}

TEST(test_ipv4_bad_total_length)
{
	uint8_t p[64];
	size_t n = mk_ip(p, 4);

	utcp_put16(p + 2, 19);                   /* shorter than the header */
	fix_ip_csum(p);
	CHECK_IP_DROP(p, n, UTCP_DROP_IP_TOTLEN);
	utcp_put16(p + 2, (uint16_t)(n + 1));    /* longer than the frame */
	fix_ip_csum(p);
	CHECK_IP_DROP(p, n, UTCP_DROP_IP_TOTLEN);
}

TEST(test_ipv4_bad_checksum)
{
	uint8_t p[64];
	size_t n = mk_ip(p, 4);

	p[8] ^= 1;                                /* TTL changed, checksum not */
	CHECK_IP_DROP(p, n, UTCP_DROP_IP_CSUM);
}

TEST(test_ipv4_fragments)
{
	uint8_t p[64];
	size_t n = mk_ip(p, 4);

	utcp_put16(p + 6, 0x2000);               /* MF, offset 0: a first fragment */
	fix_ip_csum(p);
	CHECK_IP_DROP(p, n, UTCP_DROP_IP_FRAGMENT);
	utcp_put16(p + 6, 0x0010);               /* last fragment, offset 128 */
	fix_ip_csum(p);
	CHECK_IP_DROP(p, n, UTCP_DROP_IP_FRAGMENT);
}

TEST(test_ipv4_options)
{
	uint8_t p[64];
	struct utcp_ipv4 ip;
	enum utcp_drop why;

	utcp_ipv4_emit(p, sizeof(p), A_IP, B_IP, UTCP_IPPROTO_TCP, 4 + 4, 64, 1);
	p[0] = 0x46;                             /* 4 bytes of options: NOP NOP NOP EOL */
	p[20] = 1, p[21] = 1, p[22] = 1, p[23] = 0;
	fix_ip_csum(p);
	CHECK(utcp_ipv4_parse(p, 28, &ip, &why) == -ENOTSUP);
	CHECK_EQ(why, UTCP_DROP_IP_OPTIONS);
}

TEST(test_ipv4_emit_no_room)
{
	uint8_t p[19];

	CHECK_EQ(utcp_ipv4_emit(p, sizeof(p), A_IP, B_IP, 6, 0, 64, 0), -ENOSPC);
}

/* ---- TCP ---- */

static struct utcp_tcp base_tcp(void)
{
	struct utcp_tcp t;

	memset(&t, 0, sizeof(t));
	t.sport = 40000;
	t.dport = 80;
	t.seq = 0xfffffff0u;
	t.ack = 12345;
	t.flags = UTCP_TH_ACK | UTCP_TH_PSH;
	t.wnd = 65535;
	return t;
}

TEST(test_tcp_roundtrip_syn_options)
{
	uint8_t seg[128];
	struct utcp_tcp t = base_tcp(), r;
	enum utcp_drop why;
	int n;

	t.flags = UTCP_TH_SYN;
	t.opt.has_mss = true, t.opt.mss = 1460;
	t.opt.has_ws = true, t.opt.ws = 7;
	t.opt.sack_ok = true;
	t.opt.has_ts = true, t.opt.tsval = 0xdeadbeef, t.opt.tsecr = 0;
	n = utcp_tcp_emit(seg, sizeof(seg), A_IP, B_IP, &t, NULL, 0);
	CHECK_EQ(n, 20 + 20);                    /* MSS 4 + SACKOK/TS 12 + NOP WS 4 */
	CHECK_EQ(utcp_tcp_parse(seg, (size_t)n, A_IP, B_IP, true, &r, &why), 0);
	CHECK_EQ(r.flags, UTCP_TH_SYN);
	CHECK_U32(r.seq, 0xfffffff0u);
	CHECK(r.opt.has_mss && r.opt.mss == 1460);
	CHECK(r.opt.has_ws && r.opt.ws == 7);
	CHECK(r.opt.sack_ok);
	CHECK(r.opt.has_ts);
	CHECK_U32(r.opt.tsval, 0xdeadbeef);
	CHECK_EQ(r.payload_len, 0);
}

TEST(test_tcp_roundtrip_sack_blocks_and_payload)
{
	uint8_t seg[256];
	struct utcp_tcp t = base_tcp(), r;
	enum utcp_drop why;
	int n;

	t.opt.has_ts = true, t.opt.tsval = 1, t.opt.tsecr = 2;
	t.opt.nsack = 3;
	t.opt.sack[0].left = 100, t.opt.sack[0].right = 200;
	t.opt.sack[1].left = 300, t.opt.sack[1].right = 400;
	t.opt.sack[2].left = 500, t.opt.sack[2].right = 600;
	n = utcp_tcp_emit2(seg, sizeof(seg), A_IP, B_IP, &t, "hello ", 6, "world", 5);
	CHECK_EQ(n, 20 + 40 + 11);
	CHECK_EQ(utcp_tcp_parse(seg, (size_t)n, A_IP, B_IP, true, &r, &why), 0);
	CHECK_EQ(r.opt.nsack, 3);
	CHECK_U32(r.opt.sack[2].right, 600);
	CHECK_EQ(r.payload_len, 11);
	CHECK_MEM(r.payload, "hello world", 11);
}

TEST(test_tcp_options_sack_truncated_to_fit)
{
	struct utcp_tcp_opts o, r;
	uint8_t buf[40];
	int n, i;

	memset(&o, 0, sizeof(o));
	o.has_ts = true;
	o.nsack = 4;                              /* 12 + 4 + 32 = 48 > 40: keep 3 blocks */
	for (i = 0; i < 4; i++)
		o.sack[i].left = (uint32_t)i * 10, o.sack[i].right = (uint32_t)i * 10 + 5;
	n = utcp_tcp_emit_options(buf, sizeof(buf), &o);
	CHECK_EQ(n, 40);
	CHECK_EQ(utcp_tcp_parse_options(buf, (size_t)n, &r), 0);
	CHECK_EQ(r.nsack, 3);
	o.has_ts = false;                         /* without TS, 4 blocks fit in 36 */
	n = utcp_tcp_emit_options(buf, sizeof(buf), &o);
	CHECK_EQ(n, 36);
	CHECK_EQ(utcp_tcp_parse_options(buf, (size_t)n, &r), 0);
	CHECK_EQ(r.nsack, 4);
	CHECK_EQ(utcp_tcp_emit_options(buf, 8, &o), -ENOSPC);
}

static int mk_tcp(uint8_t *seg, const uint8_t *opts, size_t olen)
{
	struct utcp_tcp t = base_tcp();
	uint32_t s;
	int n = utcp_tcp_emit(seg, 128, A_IP, B_IP, &t, "xy", 2);

	if (olen) {     /* splice raw options in, then fix doff and checksum */
		memmove(seg + 20 + olen, seg + 20, 2);
		memcpy(seg + 20, opts, olen);
		seg[12] = (uint8_t)(((20 + olen) / 4) << 4);
		n += (int)olen;
	}
	utcp_put16(seg + 16, 0);
	s = utcp_csum_pseudo(A_IP, B_IP, 6, (uint16_t)n);
	utcp_put16(seg + 16, utcp_csum_fold(utcp_csum_add(s, seg, (size_t)n)));
	return n;
}

#define CHECK_TCP_DROP(seg, n, reason)                                             \
	do {                                                                       \
		struct utcp_tcp t_;                                                \
		enum utcp_drop why_ = UTCP_DROP_NONE;                              \
		CHECK(utcp_tcp_parse((seg), (size_t)(n), A_IP, B_IP, true, &t_, &why_) < 0); \
		CHECK_EQ(why_, (reason));                                          \
	} while (0)

#define CHECK_TCP_OK(seg, n, out)                                                  \
	do {                                                                       \
		enum utcp_drop why_;                                               \
		CHECK_EQ(utcp_tcp_parse((seg), (size_t)(n), A_IP, B_IP, true, (out), &why_), 0); \
	} while (0)

TEST(test_tcp_truncated)
{
	uint8_t seg[128];
	int n = mk_tcp(seg, NULL, 0);

	(void)n;
	CHECK_TCP_DROP(seg, 19, UTCP_DROP_TCP_TRUNC);
	CHECK_TCP_DROP(seg, 0, UTCP_DROP_TCP_TRUNC);
}

TEST(test_tcp_bad_data_offset)
{
	uint8_t seg[128];
	int n = mk_tcp(seg, NULL, 0);

	seg[12] = 4 << 4;                         /* 16 bytes < 20 */
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_DOFF);
	seg[12] = 15 << 4;                        /* 60 bytes > 22-byte segment */
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_DOFF);
}

TEST(test_tcp_bad_checksum)
{
	uint8_t seg[128];
	int n = mk_tcp(seg, NULL, 0);
	struct utcp_tcp t;
	enum utcp_drop why;

	seg[n - 1] ^= 0x40;
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_CSUM);
	/* Wrong pseudo-header (segment for someone else) is a checksum failure too. */
	seg[n - 1] ^= 0x40;
	CHECK(utcp_tcp_parse(seg, (size_t)n, A_IP, B_IP + 1, true, &t, &why) < 0);
	CHECK_EQ(why, UTCP_DROP_TCP_CSUM);
	/* Without verification the same bytes parse. */
	CHECK_EQ(utcp_tcp_parse(seg, (size_t)n, A_IP, B_IP + 1, false, &t, &why), 0);
}

TEST(test_tcp_option_zero_length)
{
	static const uint8_t o[] = {UTCP_TCPOPT_MSS, 0, 0, 0};
	static const uint8_t o2[] = {99, 0, 1, 1};    /* unknown kind, zero length */
	uint8_t seg[128];
	int n = mk_tcp(seg, o, sizeof(o));

	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
	n = mk_tcp(seg, o2, sizeof(o2));
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
}

TEST(test_tcp_option_length_one)
{
	static const uint8_t o[] = {99, 1, 1, 1};
	uint8_t seg[128];
	int n = mk_tcp(seg, o, sizeof(o));

	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
}

TEST(test_tcp_option_runs_past_header)
{
	static const uint8_t o[] = {1, 1, UTCP_TCPOPT_TS, 10, 0, 0, 0, 0};  /* needs 10, has 6 */
	static const uint8_t o2[] = {99, 200, 0, 0};
	uint8_t seg[128];
	int n = mk_tcp(seg, o, sizeof(o));

	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
	n = mk_tcp(seg, o2, sizeof(o2));
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
}

TEST(test_tcp_option_kind_without_length)
{
	static const uint8_t o[] = {1, 1, 1, UTCP_TCPOPT_MSS};
	uint8_t seg[128];
	int n = mk_tcp(seg, o, sizeof(o));

	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
}

TEST(test_tcp_option_known_kind_wrong_size)
{
	static const uint8_t mss3[] = {UTCP_TCPOPT_MSS, 3, 5, 1};
	static const uint8_t ws4[] = {UTCP_TCPOPT_WS, 4, 7, 0};
	static const uint8_t sackok3[] = {UTCP_TCPOPT_SACK_OK, 3, 0, 1};
	static const uint8_t sack9[] = {UTCP_TCPOPT_SACK, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	static const uint8_t sack2[] = {UTCP_TCPOPT_SACK, 2, 1, 1};
	static const uint8_t ts8[] = {UTCP_TCPOPT_TS, 8, 0, 0, 0, 0, 0, 0};
	uint8_t seg[128];
	int n;

	n = mk_tcp(seg, mss3, sizeof(mss3));
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
	n = mk_tcp(seg, ws4, sizeof(ws4));
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
	n = mk_tcp(seg, sackok3, sizeof(sackok3));
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
	n = mk_tcp(seg, sack9, sizeof(sack9));
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
	n = mk_tcp(seg, sack2, sizeof(sack2));
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
	n = mk_tcp(seg, ts8, sizeof(ts8));
	CHECK_TCP_DROP(seg, n, UTCP_DROP_TCP_OPTION);
}

TEST(test_tcp_option_unknown_skipped_eol_stops)
{
	/* unknown kind 30 len 4, then MSS, then EOL followed by garbage that is ignored */
	static const uint8_t o[] = {30, 4, 0xaa, 0xbb, UTCP_TCPOPT_MSS, 4, 0x05, 0xb4,
				    UTCP_TCPOPT_EOL, 0xff, 0x00, 0x13};
	uint8_t seg[128];
	struct utcp_tcp t;
	int n = mk_tcp(seg, o, sizeof(o));

	CHECK_TCP_OK(seg, n, &t);
	CHECK(t.opt.has_mss);
	CHECK_EQ(t.opt.mss, 1460);
	CHECK_EQ(t.payload_len, 2);
	CHECK_MEM(t.payload, "xy", 2);
}

TEST(test_tcp_options_all_nops)
{
	static const uint8_t o[40] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
				      1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
	uint8_t seg[128];
	struct utcp_tcp t;
	int n = mk_tcp(seg, o, sizeof(o));

	CHECK_TCP_OK(seg, n, &t);
	CHECK(!t.opt.has_mss && !t.opt.has_ts && !t.opt.sack_ok && !t.opt.has_ws);
	CHECK_EQ(t.hdr_len, 60);
}

/* ---- ICMP ---- */

static size_t mk_icmp(uint8_t *m, uint8_t type, uint8_t code, uint16_t mtu, size_t quote_tcp_bytes)
{
	size_t n = 8;

	memset(m, 0, 128);
	m[0] = type;
	m[1] = code;
	utcp_put16(m + 6, mtu);
	/* quote: our outgoing A->B header + first bytes of our TCP header */
	utcp_ipv4_emit(m + 8, 20, A_IP, B_IP, UTCP_IPPROTO_TCP, 1440, 64, 9);
	n += 20;
	utcp_put16(m + n, 40000);
	utcp_put16(m + n + 2, 80);
	utcp_put32(m + n + 4, 0x01020304);
	n += quote_tcp_bytes;
	utcp_put16(m + 2, utcp_csum_fold(utcp_csum_add(0, m, n)));
	return n;
}

TEST(test_icmp_frag_needed)
{
	uint8_t m[128];
	struct utcp_icmp ic;
	enum utcp_drop why;
	size_t n = mk_icmp(m, UTCP_ICMP_DEST_UNREACH, UTCP_ICMP_CODE_FRAG_NEEDED, 1400, 8);

	CHECK_EQ(utcp_icmp_parse(m, n, &ic, &why), 0);
	CHECK_EQ(ic.type, 3);
	CHECK_EQ(ic.code, 4);
	CHECK_EQ(ic.next_hop_mtu, 1400);
	CHECK(ic.has_quote);
	CHECK_U32(ic.q_src, A_IP);
	CHECK_U32(ic.q_dst, B_IP);
	CHECK_EQ(ic.q_sport, 40000);
	CHECK_EQ(ic.q_dport, 80);
	CHECK_U32(ic.q_seq, 0x01020304);
	CHECK_EQ(ic.q_proto, UTCP_IPPROTO_TCP);
}

TEST(test_icmp_port_unreachable)
{
	uint8_t m[128];
	struct utcp_icmp ic;
	enum utcp_drop why;
	size_t n = mk_icmp(m, UTCP_ICMP_DEST_UNREACH, UTCP_ICMP_CODE_PORT_UNREACH, 0, 8);

	CHECK_EQ(utcp_icmp_parse(m, n, &ic, &why), 0);
	CHECK_EQ(ic.code, 3);
	CHECK_EQ(ic.next_hop_mtu, 0);
	CHECK(ic.has_quote);
}

TEST(test_icmp_truncated_quote)
{
	uint8_t m[128];
	struct utcp_icmp ic;
	enum utcp_drop why;
	size_t n = mk_icmp(m, UTCP_ICMP_DEST_UNREACH, UTCP_ICMP_CODE_FRAG_NEEDED, 1400, 7);

	CHECK(utcp_icmp_parse(m, n, &ic, &why) < 0);
	CHECK_EQ(why, UTCP_DROP_ICMP_TRUNC);
	CHECK(utcp_icmp_parse(m, 7, &ic, &why) < 0);
	CHECK_EQ(why, UTCP_DROP_ICMP_TRUNC);
}

TEST(test_icmp_bad_checksum)
{
	uint8_t m[128];
	struct utcp_icmp ic;
	enum utcp_drop why;
	size_t n = mk_icmp(m, UTCP_ICMP_DEST_UNREACH, UTCP_ICMP_CODE_FRAG_NEEDED, 1400, 8);

	m[6] ^= 1;
	CHECK(utcp_icmp_parse(m, n, &ic, &why) < 0);
	CHECK_EQ(why, UTCP_DROP_ICMP_CSUM);
}

TEST(test_drop_names_complete)
{
	int i;

	for (i = 0; i < UTCP_DROP__MAX; i++)
		CHECK(strcmp(utcp_drop_str((enum utcp_drop)i), "unknown") != 0);
	CHECK(strcmp(utcp_drop_str(UTCP_DROP__MAX), "unknown") == 0);
}
