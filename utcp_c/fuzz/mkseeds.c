/* mkseeds.c — writes the seed corpus of the UTCP fuzzers (corpus/<target>/): meaningful
 * exchanges that a mutation then bends.  fuzz_stack seeds are produced against the very stack
 * fuzz_stack drives (fuzz_stack.h): every frame is fed to it as it is written, and the numbers
 * a peer must know (the stack's ISN, timestamps, what is in flight) are read from the frames
 * the stack sends, so handshakes complete and data, SACK, RST and ICMP land in the window.
 * fuzz_wire gets the same frames one per file; fuzz_peer gets scripts in its record format;
 * fuzz_migrate gets what utcp_sk_migrate_out wrote about real connections (fuzz_migrate.h).
 *   mkseeds CORPUS_DIR    (make -C utcp_c/fuzz seeds) */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fuzz_migrate.h"
#include "fuzz_stack.h"

static const uint8_t peer_mac[6] = {2, 0, 0, 0, 0, 2};
static const char *corpus;
static unsigned nfiles;

/* ---- frames the stack sent (the capture port) ---- */

#define CAP_MAX 256
static struct {
	uint8_t data[FS_MAX_FRAME];
	uint32_t len;
} cap[CAP_MAX];
static unsigned ncap;

static int cap_tx(void *c, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	(void)c, (void)now;
	for (unsigned i = 0; i < n; i++) {
		if (ncap == CAP_MAX || f[i].len > FS_MAX_FRAME)
			continue;
		memcpy(cap[ncap].data, f[i].data, f[i].len);
		cap[ncap++].len = f[i].len;
	}
	return (int)n;
}
static const struct utcp_port_ops cap_ops = {
	.sz = sizeof(struct utcp_port_ops), .name = "capture", .rx_burst = fs_sink_rx,
	.rx_release = fs_sink_rel, .tx_burst = cap_tx, .kick = fs_sink_kick,
};

/* What the stack last sent to a peer port: its SND.NXT-ish numbers and timestamp. */
struct seen {
	uint32_t seq, end, ack, tsval;
	uint8_t flags;
	bool found;
};

static struct seen last_to(uint16_t dport)
{
	struct seen s = {0};

	for (unsigned i = 0; i < ncap; i++) {
		struct utcp_ipv4 ip;
		struct utcp_tcp t;
		enum utcp_drop why;

		if (utcp_ipv4_parse(cap[i].data + 14, cap[i].len - 14, &ip, &why) ||
		    ip.proto != UTCP_IPPROTO_TCP ||
		    utcp_tcp_parse(ip.payload, ip.payload_len, ip.src, ip.dst, false, &t, &why) ||
		    t.dport != dport)
			continue;
		s.seq = t.seq;
		s.end = t.seq + (uint32_t)t.payload_len + ((t.flags & (UTCP_TH_SYN | UTCP_TH_FIN)) ? 1 : 0);
		s.ack = t.ack;
		s.tsval = t.opt.tsval;
		s.flags = t.flags;
		s.found = true;
	}
	return s;
}

/* ---- building frames ---- */

struct seg {
	uint32_t src;
	uint16_t sport, dport;
	uint8_t flags;
	uint32_t seq, ack;
	uint16_t wnd;
	struct utcp_tcp_opts opt;
	const char *data;
	size_t len;
};

static size_t tcp_frame(uint8_t *f, const struct seg *s)
{
	struct utcp_tcp th;
	int tl;

	memset(&th, 0, sizeof(th));
	th.sport = s->sport, th.dport = s->dport, th.flags = s->flags;
	th.seq = s->seq, th.ack = s->ack, th.wnd = s->wnd ? s->wnd : 65535;
	th.opt = s->opt;
	utcp_eth_emit(f, FS_MAX_FRAME, fs_local_mac, peer_mac, UTCP_ETH_P_IPV4);
	tl = utcp_tcp_emit(f + 34, FS_MAX_FRAME - 34, s->src, FS_LOCAL_IP, &th, s->data, s->len);
	if (tl < 0)
		abort();
	utcp_ipv4_emit(f + 14, 20, s->src, FS_LOCAL_IP, UTCP_IPPROTO_TCP, (uint16_t)tl, 64, 1);
	return 34 + (size_t)tl;
}

/* An ICMP error from a router, quoting the header of one of the stack's segments. */
static size_t icmp_frame(uint8_t *f, uint8_t type, uint8_t code, uint16_t mtu, uint16_t sport,
			 uint16_t dport, uint32_t qseq)
{
	uint8_t *m = f + 34, *q = m + 8;

	memset(f, 0, 34 + 36);
	utcp_eth_emit(f, FS_MAX_FRAME, fs_local_mac, peer_mac, UTCP_ETH_P_IPV4);
	m[0] = type, m[1] = code;
	utcp_put16(m + 6, mtu);
	utcp_ipv4_emit(q, 20, FS_LOCAL_IP, FS_PEER_IP, UTCP_IPPROTO_TCP, 40, 64, 7);
	utcp_put16(q + 20, sport), utcp_put16(q + 22, dport), utcp_put32(q + 24, qseq);
	utcp_put16(m + 2, utcp_csum_fold(utcp_csum_add(0, m, 36)));
	utcp_ipv4_emit(f + 14, 20, 0x0a0000feu, FS_LOCAL_IP, UTCP_IPPROTO_ICMP, 36, 64, 2);
	return 34 + 36;
}

static struct utcp_tcp_opts syn_opts(uint32_t tsval)
{
	struct utcp_tcp_opts o;

	memset(&o, 0, sizeof(o));
	o.has_mss = true, o.mss = 1460;
	o.has_ws = true, o.ws = 7;
	o.sack_ok = true;
	o.has_ts = true, o.tsval = tsval;
	return o;
}

static struct utcp_tcp_opts ts_opts(uint32_t tsval, uint32_t tsecr)
{
	struct utcp_tcp_opts o;

	memset(&o, 0, sizeof(o));
	o.has_ts = true, o.tsval = tsval, o.tsecr = tsecr;
	return o;
}

/* ---- writing files ---- */

static void write_file(const char *target, const char *name, const uint8_t *p, size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", corpus, target);
	if (mkdir(path, 0755) && errno != EEXIST)
		abort();
	snprintf(path, sizeof(path), "%s/%s/%s", corpus, target, name);
	if (!(f = fopen(path, "wb")) || fwrite(p, 1, n, f) != n || fclose(f)) {
		perror(path);
		exit(1);
	}
	nfiles++;
}

/* One fuzz_stack input being written while the stack follows it. */
struct script {
	struct fs_ctx x;
	struct utcp_port port;
	uint8_t buf[32768];
	size_t len;
	const char *name;
};

static void script_begin(struct script *s, const char *name)
{
	ncap = 0;
	s->port = (struct utcp_port){&cap_ops, NULL};
	fs_setup(&s->x, &s->port);
	utcp_flush(s->x.st, s->x.now);   /* the active SYN leaves (as at the first input) */
	s->len = 0;
	s->name = name;
}

static void put(struct script *s, const uint8_t *frame, size_t len, uint8_t step)
{
	uint8_t copy[FS_MAX_FRAME];

	if (s->len + 3 + len > sizeof(s->buf))
		abort();
	utcp_put16(s->buf + s->len, (uint16_t)len);
	s->buf[s->len + 2] = step;
	memcpy(s->buf + s->len + 3, frame, len);
	s->len += 3 + len;
	memcpy(copy, frame, len);
	fs_step(&s->x, copy, len, step);
}

static void put_seg(struct script *s, const struct seg *g, uint8_t step)
{
	uint8_t f[FS_MAX_FRAME];

	put(s, f, tcp_frame(f, g), step);
}

/* Writes the input and says what it made the stack do (a seed that reaches nothing shows). */
static void script_end(struct script *s)
{
	const struct utcp_stats *st = utcp_get_stats(s->x.st);
	uint64_t drops = 0;

	for (unsigned i = 1; i < UTCP_DROP__MAX; i++)
		drops += st->drops[i];
	printf("  %-40s established %llu, segs in %llu out %llu, rst out %llu, challenge ACKs %llu,"
	       " drops %llu\n", s->name, (unsigned long long)st->established,
	       (unsigned long long)st->segs_in, (unsigned long long)st->segs_out,
	       (unsigned long long)st->rst_out, (unsigned long long)st->challenge_acks,
	       (unsigned long long)drops);
	write_file("fuzz_stack", s->name, s->buf, s->len);
	utcp_stack_destroy(s->x.st);
}

/* ---- fuzz_stack scripts ---- */

#define PEER2 0x0a000003u   /* a client of the listener */
#define CPORT 40001

/* A client of the listener through the handshake; returns the stack's ISS + 1. */
static uint32_t passive_open(struct script *s, uint32_t peer_isn, bool opts)
{
	struct seg g = {PEER2, CPORT, FS_LISTEN_PORT, UTCP_TH_SYN, peer_isn, 0, 65535,
			opts ? syn_opts(100) : (struct utcp_tcp_opts){0}, NULL, 0};
	struct seen sa;

	put_seg(s, &g, 1);
	sa = last_to(CPORT);
	g.flags = UTCP_TH_ACK, g.seq = peer_isn + 1, g.ack = sa.seq + 1, g.wnd = 1024;
	g.opt = opts ? ts_opts(101, sa.tsval) : (struct utcp_tcp_opts){0};
	put_seg(s, &g, 0);
	return sa.seq + 1;
}

static void passive_scripts(void)
{
	static const char req[] = "GET / HTTP/1.0\r\n\r\n";
	struct script s;
	struct seen d;
	uint32_t iss1;

	/* SYN with MSS, WS, SACK-permitted, TS; data; the application answers and closes; FIN. */
	script_begin(&s, "passive-handshake-data-close");
	iss1 = passive_open(&s, 1000, true);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK | UTCP_TH_PSH, 1001, iss1, 1024,
				  ts_opts(102, 0), req, sizeof(req) - 1}, 3);
	d = last_to(CPORT);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK | UTCP_TH_FIN, 1001 + sizeof(req) - 1,
				  d.end, 1024, ts_opts(103, d.tsval), NULL, 0}, 255);
	script_end(&s);

	/* Data, the application sends 100 bytes; the peer SACKs their second half, then the
	 * whole; duplicate ACKs; then RST at RCV.NXT. */
	script_begin(&s, "passive-sack-dupack-rst");
	iss1 = passive_open(&s, 2000, true);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK | UTCP_TH_PSH, 2001, iss1, 1024,
				  ts_opts(102, 0), req, sizeof(req) - 1}, 1);
	d = last_to(CPORT);
	{
		struct utcp_tcp_opts o = ts_opts(103, d.tsval);
		uint32_t seq = 2001 + sizeof(req) - 1;

		o.nsack = 1, o.sack[0].left = iss1 + 50, o.sack[0].right = d.end;
		for (int i = 0; i < 3; i++)
			put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK, seq, iss1, 1024, o, NULL, 0}, 0);
		o.nsack = 2, o.sack[1].left = d.end + 1000, o.sack[1].right = d.end + 2000;   /* bogus */
		put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK, seq, iss1, 1024, o, NULL, 0}, 30);
		put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK, seq, d.end, 1024,
					  ts_opts(104, d.tsval), NULL, 0}, 1);
		put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_RST, seq, 0, 0,
					  (struct utcp_tcp_opts){0}, NULL, 0}, 1);
	}
	script_end(&s);

	/* Without any option; out-of-order data (a hole), then the hole filled. */
	script_begin(&s, "passive-noopts-out-of-order");
	iss1 = passive_open(&s, 3000, false);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK, 3011, iss1, 1024, {0}, "klmnopqrst", 10}, 0);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK, 3031, iss1, 1024, {0}, "KLMNOPQRST", 10}, 0);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK | UTCP_TH_PSH, 3001, iss1, 1024, {0},
				  "abcdefghij", 10}, 1);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK | UTCP_TH_PSH, 3021, iss1, 1024, {0},
				  "ABCDEFGHIJ", 10}, 2);
	script_end(&s);

	/* RST in the window but not at RCV.NXT (challenge ACK, RFC 5961), a SYN in ESTABLISHED
	 * (challenge ACK), an old timestamp (PAWS), an ACK for data never sent. */
	script_begin(&s, "passive-rfc5961-paws");
	iss1 = passive_open(&s, 4000, true);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_RST, 4100, 0, 0, {0}, NULL, 0}, 0);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_SYN, 4500, 0, 0, syn_opts(105), NULL, 0}, 0);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK, 4001, iss1, 1024, ts_opts(5, 0), "old", 3}, 0);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK, 4001, iss1 + 100000, 1024,
				  ts_opts(106, 0), NULL, 0}, 1);
	script_end(&s);

	/* Zero window from the peer with data to send: persist probes, then the window opens. */
	script_begin(&s, "passive-zero-window-probe");
	iss1 = passive_open(&s, 5000, true);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK | UTCP_TH_PSH, 5001, iss1, 0,
				  ts_opts(102, 0), "x", 1}, 1);
	for (int i = 0; i < 4; i++)
		put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK, 5002, iss1, 0, ts_opts(103, 0),
					  NULL, 0}, 200);
	d = last_to(CPORT);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK, 5002, iss1, 4096, ts_opts(104, d.tsval),
				  NULL, 0}, 1);
	script_end(&s);

	/* The peer closes first: FIN in ESTABLISHED, then the application closes (LAST-ACK). */
	script_begin(&s, "passive-peer-fin-last-ack");
	iss1 = passive_open(&s, 6000, true);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK | UTCP_TH_FIN, 6001, iss1, 1024,
				  ts_opts(102, 0), "bye", 3}, 2);
	d = last_to(CPORT);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK, 6005, d.end, 1024, ts_opts(103, d.tsval),
				  NULL, 0}, 1);
	script_end(&s);

	/* The application closes first (TIME-WAIT), then a new SYN on the same 4-tuple with a
	 * newer timestamp (RFC 6191 reuse). */
	script_begin(&s, "passive-time-wait-rfc6191");
	iss1 = passive_open(&s, 7000, true);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK | UTCP_TH_PSH, 7001, iss1, 1024,
				  ts_opts(102, 0), "q", 1}, 2);
	d = last_to(CPORT);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_ACK | UTCP_TH_FIN, 7002, d.end, 1024,
				  ts_opts(103, d.tsval), NULL, 0}, 10);
	put_seg(&s, &(struct seg){PEER2, CPORT, 80, UTCP_TH_SYN, 9000, 0, 65535, syn_opts(500), NULL, 0}, 1);
	script_end(&s);

	/* More SYNs than backlog and table: drops by reason; a SYN to a closed port (RST). */
	script_begin(&s, "syn-flood-closed-port");
	for (uint16_t p = 0; p < 10; p++)
		put_seg(&s, &(struct seg){PEER2, (uint16_t)(50000 + p), 80, UTCP_TH_SYN, 100u * p, 0, 65535,
					  syn_opts(1), NULL, 0}, 0);
	put_seg(&s, &(struct seg){PEER2, 50100, 81, UTCP_TH_SYN, 1, 0, 65535, syn_opts(1), NULL, 0}, 1);
	put_seg(&s, &(struct seg){PEER2, 50101, 81, UTCP_TH_ACK, 1, 77, 65535, {0}, NULL, 0}, 1);
	script_end(&s);
}

static void active_scripts(void)
{
	struct script s;
	struct seen syn, d;
	uint8_t f[FS_MAX_FRAME];

	/* SYN-ACK with options to the active connection; its data is ACKed, the peer sends data
	 * and FIN; time passes. */
	script_begin(&s, "active-synack-data-fin");
	syn = last_to(80);
	put_seg(&s, &(struct seg){FS_PEER_IP, 80, FS_ACTIVE_LPORT, UTCP_TH_SYN | UTCP_TH_ACK, 50000,
				  syn.seq + 1, 65535, syn_opts(200), NULL, 0}, 1);
	d = last_to(80);
	put_seg(&s, &(struct seg){FS_PEER_IP, 80, FS_ACTIVE_LPORT, UTCP_TH_ACK | UTCP_TH_PSH, 50001, d.end,
				  1024, ts_opts(201, d.tsval), "HTTP/1.0 200 OK\r\n\r\n", 19}, 1);
	d = last_to(80);
	put_seg(&s, &(struct seg){FS_PEER_IP, 80, FS_ACTIVE_LPORT, UTCP_TH_ACK | UTCP_TH_FIN, 50020, d.end,
				  1024, ts_opts(202, d.tsval), NULL, 0}, 3);
	script_end(&s);

	/* SYN-ACK with a wrong ACK (RST), then the right one; data is lost: RTO after RTO. */
	script_begin(&s, "active-bad-ack-rto");
	syn = last_to(80);
	put_seg(&s, &(struct seg){FS_PEER_IP, 80, FS_ACTIVE_LPORT, UTCP_TH_SYN | UTCP_TH_ACK, 60000,
				  syn.seq + 77, 65535, syn_opts(200), NULL, 0}, 0);
	put_seg(&s, &(struct seg){FS_PEER_IP, 80, FS_ACTIVE_LPORT, UTCP_TH_SYN | UTCP_TH_ACK, 60000,
				  syn.seq + 1, 65535, syn_opts(200), NULL, 0}, 1);
	for (int i = 0; i < 6; i++)
		put(&s, f, 0, 255);   /* an empty record: time passes */
	script_end(&s);

	/* Simultaneous open: a bare SYN from the peer meets the stack's SYN. */
	script_begin(&s, "active-simultaneous-open");
	syn = last_to(80);
	put_seg(&s, &(struct seg){FS_PEER_IP, 80, FS_ACTIVE_LPORT, UTCP_TH_SYN, 70000, 0, 65535,
				  syn_opts(300), NULL, 0}, 1);
	d = last_to(80);
	put_seg(&s, &(struct seg){FS_PEER_IP, 80, FS_ACTIVE_LPORT, UTCP_TH_ACK, 70001, syn.seq + 1, 65535,
				  ts_opts(301, d.tsval), NULL, 0}, 1);
	script_end(&s);

	/* RST in SYN-SENT with an acceptable ACK: refused. */
	script_begin(&s, "active-rst-refused");
	syn = last_to(80);
	put_seg(&s, &(struct seg){FS_PEER_IP, 80, FS_ACTIVE_LPORT, UTCP_TH_RST | UTCP_TH_ACK, 0,
				  syn.seq + 1, 0, {0}, NULL, 0}, 1);
	script_end(&s);

	/* ICMP port unreachable quoting the SYN: refused in SYN-SENT. */
	script_begin(&s, "icmp-port-unreachable-syn-sent");
	syn = last_to(80);
	put(&s, f, icmp_frame(f, UTCP_ICMP_DEST_UNREACH, UTCP_ICMP_CODE_PORT_UNREACH, 0,
			      FS_ACTIVE_LPORT, 80, syn.seq), 1);
	script_end(&s);

	/* Established with data in flight: ICMP "fragmentation needed" quoting SND.UNA (accepted,
	 * RFC 5927), one quoting a stale sequence number (ignored), one below the MSS floor, and
	 * one quoting a connection that does not exist; then the retransmission at the new MSS. */
	script_begin(&s, "icmp-frag-needed-rfc5927");
	syn = last_to(80);
	put_seg(&s, &(struct seg){FS_PEER_IP, 80, FS_ACTIVE_LPORT, UTCP_TH_SYN | UTCP_TH_ACK, 80000,
				  syn.seq + 1, 65535, syn_opts(400), NULL, 0}, 1);
	put(&s, f, icmp_frame(f, UTCP_ICMP_DEST_UNREACH, UTCP_ICMP_CODE_FRAG_NEEDED, 1000,
			      FS_ACTIVE_LPORT, 80, syn.seq + 1000000), 0);
	put(&s, f, icmp_frame(f, UTCP_ICMP_DEST_UNREACH, UTCP_ICMP_CODE_FRAG_NEEDED, 68,
			      FS_ACTIVE_LPORT, 80, syn.seq + 1), 0);
	put(&s, f, icmp_frame(f, UTCP_ICMP_DEST_UNREACH, UTCP_ICMP_CODE_FRAG_NEEDED, 576,
			      FS_ACTIVE_LPORT, 80, syn.seq + 1), 0);
	put(&s, f, icmp_frame(f, UTCP_ICMP_DEST_UNREACH, UTCP_ICMP_CODE_FRAG_NEEDED, 576, 999, 80,
			      syn.seq + 1), 0);
	put(&s, f, icmp_frame(f, UTCP_ICMP_TIME_EXCEEDED, 0, 0, FS_ACTIVE_LPORT, 80, syn.seq + 1), 50);
	script_end(&s);
}

/* ---- malformed frames: each a damaged copy of a valid SYN to the listener ---- */

struct damage {
	const char *name;
	void (*fn)(uint8_t *f, size_t *len);
	bool fix_sums;   /* recompute checksums afterwards, so only the damage is wrong */
};

static void d_ip_csum(uint8_t *f, size_t *len) { (void)len, f[24] ^= 0x5a; }
static void d_tcp_csum(uint8_t *f, size_t *len) { (void)len, f[50] ^= 0x5a; }
static void d_ihl_short(uint8_t *f, size_t *len) { (void)len, f[14] = 0x44; }
static void d_ihl_long(uint8_t *f, size_t *len) { (void)len, f[14] = 0x4f; }
static void d_ip_options(uint8_t *f, size_t *len)
{
	memmove(f + 38, f + 34, *len - 34);   /* 4 bytes of IP options (NOP NOP NOP EOL) */
	f[34] = f[35] = f[36] = 1, f[37] = 0;
	f[14] = 0x46;
	utcp_put16(f + 16, (uint16_t)(utcp_get16(f + 16) + 4));
	*len += 4;
}
static void d_version6(uint8_t *f, size_t *len) { (void)len, f[14] = 0x65; }
static void d_fragment_mf(uint8_t *f, size_t *len) { (void)len, f[20] = 0x20; }
static void d_fragment_off(uint8_t *f, size_t *len) { (void)len, f[20] = 0x00, f[21] = 0x10; }
static void d_totlen_long(uint8_t *f, size_t *len) { utcp_put16(f + 16, (uint16_t)(*len + 20)); }
static void d_totlen_short(uint8_t *f, size_t *len) { (void)len, utcp_put16(f + 16, 12); }
static void d_padding(uint8_t *f, size_t *len) { memset(f + *len, 0, 18), *len += 18; }
static void d_trunc_eth(uint8_t *f, size_t *len) { (void)f, *len = 10; }
static void d_trunc_ip(uint8_t *f, size_t *len) { (void)f, *len = 30; }
static void d_trunc_tcp(uint8_t *f, size_t *len) { utcp_put16(f + 16, 30), *len = 44; }
static void d_arp(uint8_t *f, size_t *len) { (void)len, utcp_put16(f + 12, UTCP_ETH_P_ARP); }
static void d_ipv6_type(uint8_t *f, size_t *len) { (void)len, utcp_put16(f + 12, 0x86dd); }
static void d_other_mac(uint8_t *f, size_t *len) { (void)len, f[5] = 0x77; }
static void d_broadcast_mac(uint8_t *f, size_t *len) { (void)len, memset(f, 0xff, 6); }
static void d_other_ip(uint8_t *f, size_t *len) { (void)len, f[33] = 9; }
static void d_bcast_src(uint8_t *f, size_t *len) { (void)len, memset(f + 26, 0xff, 4); }
static void d_udp(uint8_t *f, size_t *len) { (void)len, f[23] = 17; }
static void d_doff_short(uint8_t *f, size_t *len) { (void)len, f[46] = 0x40 | (f[46] & 15); }
static void d_doff_long(uint8_t *f, size_t *len) { (void)len, f[46] = 0xf0 | (f[46] & 15); }
static void d_opt_zero_len(uint8_t *f, size_t *len) { (void)len, f[55] = 0; }   /* MSS, length 0 */
static void d_opt_past_end(uint8_t *f, size_t *len) { (void)len, f[55] = 40; }
static void d_opt_mss_len3(uint8_t *f, size_t *len) { (void)len, f[55] = 3; }
static void d_syn_fin(uint8_t *f, size_t *len) { (void)len, f[47] |= UTCP_TH_FIN; }
static void d_syn_rst(uint8_t *f, size_t *len) { (void)len, f[47] |= UTCP_TH_RST; }
static void d_sport_zero(uint8_t *f, size_t *len) { (void)len, f[34] = f[35] = 0; }
static void d_ws_huge(uint8_t *f, size_t *len)
{
	/* The window scale option (NOP WS 3 7 after MSS, SACK-permitted and TS) says 200. */
	for (size_t i = 54; i + 2 < *len; i++)
		if (f[i] == UTCP_TCPOPT_WS && f[i + 1] == 3) {
			f[i + 2] = 200;
			break;
		}
}
static void d_oversize(uint8_t *f, size_t *len)
{
	memset(f + *len, 'z', 1900);   /* a SYN carrying 1900 bytes: more than the MTU */
	utcp_put16(f + 16, (uint16_t)(utcp_get16(f + 16) + 1900));
	*len += 1900;
}

static const struct damage damages[] = {
	{"ip-bad-checksum", d_ip_csum, false}, {"tcp-bad-checksum", d_tcp_csum, false},
	{"ip-ihl-4", d_ihl_short, true}, {"ip-ihl-15", d_ihl_long, true},
	{"ip-options", d_ip_options, true}, {"ip-version-6", d_version6, true},
	{"ip-more-fragments", d_fragment_mf, true}, {"ip-fragment-offset", d_fragment_off, true},
	{"ip-total-length-past-frame", d_totlen_long, false}, {"ip-total-length-below-ihl", d_totlen_short, false},
	{"ethernet-padding", d_padding, false}, {"truncated-ethernet", d_trunc_eth, false},
	{"truncated-ip", d_trunc_ip, false}, {"truncated-tcp", d_trunc_tcp, true},
	{"ethertype-arp", d_arp, false}, {"ethertype-ipv6", d_ipv6_type, false},
	{"mac-not-ours", d_other_mac, false}, {"mac-broadcast", d_broadcast_mac, false},
	{"ip-not-ours", d_other_ip, true}, {"ip-broadcast-source", d_bcast_src, true},
	{"ip-proto-udp", d_udp, true}, {"tcp-doff-4", d_doff_short, true}, {"tcp-doff-15", d_doff_long, true},
	{"tcp-option-zero-length", d_opt_zero_len, true}, {"tcp-option-past-header", d_opt_past_end, true},
	{"tcp-option-mss-length-3", d_opt_mss_len3, true}, {"tcp-syn-fin", d_syn_fin, true},
	{"tcp-syn-rst", d_syn_rst, true}, {"tcp-source-port-0", d_sport_zero, true},
	{"tcp-window-scale-200", d_ws_huge, true}, {"syn-larger-than-mtu", d_oversize, true},
};

static void malformed_scripts(void)
{
	uint8_t f[FS_MAX_FRAME];
	char name[96];

	for (size_t i = 0; i < sizeof(damages) / sizeof(damages[0]); i++) {
		struct script s;
		size_t len;

		memset(f, 0, sizeof(f));
		len = tcp_frame(f, &(struct seg){PEER2, CPORT, 80, UTCP_TH_SYN, 1000, 0, 65535, syn_opts(100),
						  NULL, 0});
		damages[i].fn(f, &len);
		if (damages[i].fix_sums)
			fs_fix_sums(f, len);
		snprintf(name, sizeof(name), "malformed-%s", damages[i].name);
		write_file("fuzz_wire", name, f, len);
		script_begin(&s, name);
		put(&s, f, len, 1);
		script_end(&s);
	}
}

/* fuzz_wire: every frame of the valid fuzz_stack scripts too, one per file. */
static void wire_from_scripts(void)
{
	static const char *const scripts[] = {"passive-handshake-data-close", "passive-sack-dupack-rst",
					      "icmp-frag-needed-rfc5927", "active-synack-data-fin"};
	char path[512], name[96];
	static uint8_t buf[32768];

	for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
		FILE *f;
		size_t n, off = 0;
		unsigned k = 0;

		snprintf(path, sizeof(path), "%s/fuzz_stack/%s", corpus, scripts[i]);
		if (!(f = fopen(path, "rb")))
			abort();
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		while (off + 3 <= n) {
			size_t len = utcp_get16(buf + off);

			snprintf(name, sizeof(name), "%s-%u", scripts[i], k++);
			write_file("fuzz_wire", name, buf + off + 3, len);
			off += 3 + len;
		}
	}
}

/* ---- fuzz_peer: 8-byte records (fuzz_peer.c) ---- */

enum { P_SEG = 0, P_SEND = 4, P_RECV = 5, P_APP = 6, P_TIME = 7 };
#define PASSIVE 4   /* record byte 1: to the listener (else to the active connections) */

struct rec {
	uint8_t b[8];
};

static void peer_file(const char *name, const struct rec *r, size_t n)
{
	write_file("fuzz_peer", name, (const uint8_t *)r, n * sizeof(*r));
}

#define SEG(k, fl, dseq, dack, r5, r6, r7) {{P_SEG, (k), (fl), (uint8_t)(dseq), (uint8_t)(dack), (r5), (r6), (r7)}}
#define DATA(n) (uint8_t)(0x80 | (n))
#define OPTS_ALL 0x8f   /* MSS (1144), WS, SACK-permitted, TS */
#define OPTS_TS 0x08
#define OPTS_SACK(nb) (uint8_t)(0x18 | (((nb) - 1) << 6))
#define SEND(k, x16) {{P_SEND, (k), 0, (x16), 0, 0, 0, 0}}
#define SENDREF(k, x16) {{P_SEND, (k), 1, (x16), 0, 0, 0, 0}}     /* utcp_send_ref */
#define RECV(k) {{P_RECV, (k), 0, 255, 0, 0, 0, 0}}
#define APP(k, op) {{P_APP, (k), (op), 1, 0, 0, 0, 0}}
#define TIME(ms, mul) {{P_TIME, 0, 0, (ms), (mul), 0, 0, 0}}

static void peer_scripts(void)
{
	enum { SYN = UTCP_TH_SYN, ACK = UTCP_TH_ACK, FIN = UTCP_TH_FIN, RST = UTCP_TH_RST,
	       PSH = UTCP_TH_PSH };
	/* Active connection 0: SYN-ACK with options, data both ways, the peer's FIN, close. */
	static const struct rec active[] = {
		SEG(0, SYN | ACK, 0, 0, 0, 0x40, OPTS_ALL), SEND(0, 64), SEG(0, ACK | PSH, 0, 0, DATA(100), 0x40, OPTS_TS),
		RECV(0), TIME(50, 0), SEG(0, ACK, 0, 0, 0, 0x40, OPTS_TS), SEG(0, ACK | FIN, 0, 0, 0, 0x40, OPTS_TS),
		APP(0, 1), TIME(200, 0), SEG(0, ACK, 0, 0, 0, 0x40, OPTS_TS), TIME(255, 255),
	};
	/* Passive: SYN to the listener, ACK, data, the application answers and closes first. */
	static const struct rec passive[] = {
		SEG(PASSIVE | 1, SYN, 0, 0, 0, 0x40, OPTS_ALL), SEG(PASSIVE | 1, ACK, 0, 0, 0, 0x40, OPTS_TS),
		SEG(PASSIVE | 1, ACK | PSH, 0, 0, DATA(60), 0x40, OPTS_TS), TIME(10, 0), RECV(4), SEND(4, 32),
		APP(4, 1), SEG(PASSIVE | 1, ACK, 0, 0, 0, 0x40, OPTS_TS), SEG(PASSIVE | 1, ACK | FIN, 0, 0, 0, 0x40, OPTS_TS),
		TIME(255, 255),
	};
	/* Bulk from the stack with SACK: holes reported, duplicate ACKs, fast retransmit. */
	static const struct rec sack[] = {
		SEG(0, SYN | ACK, 0, 0, 0, 0xff, OPTS_ALL), SEND(0, 255), SEND(0, 255), TIME(5, 0),
		SEG(0, ACK, 0, 0, 0x03, 0xff, OPTS_SACK(1)), SEG(0, ACK, 0, 0, 0x02, 0xff, OPTS_SACK(2)),
		SEG(0, ACK, 0, 0, 0x01, 0xff, OPTS_SACK(3)), SEG(0, ACK, 0, 0, 0x01, 0xff, OPTS_SACK(4)),
		TIME(30, 0), SEG(0, ACK, 0, 0, 0, 0xff, OPTS_TS), TIME(255, 3),
	};
	/* The same by reference, mixed with copies, corked; a move refused while data is queued,
	 * then the peer's RST with references outstanding. */
	static const struct rec sackref[] = {
		SEG(0, SYN | ACK, 0, 0, 0, 0xff, OPTS_ALL), APP(0, 5), SENDREF(0, 255), SEND(0, 17),
		SENDREF(0, 255), {{P_APP, 0, 5, 0, 0, 0, 0, 0}}, TIME(5, 0), APP(0, 6),
		SEG(0, ACK, 0, 0, 0x03, 0xff, OPTS_SACK(1)), SEG(0, ACK, 0, 0, 0x02, 0xff, OPTS_SACK(2)),
		SEG(0, ACK, 0, 0, 0x01, 0xff, OPTS_SACK(3)), SEG(0, ACK, 0, 0, 0x01, 0xff, OPTS_SACK(4)),
		TIME(30, 0), SEG(0, ACK, 0, 0, 0, 0xff, OPTS_TS), SEG(0, RST, 0, 0, 0, 0, 0), TIME(255, 3),
	};
	/* RST in and out of the window, SYN in ESTABLISHED (challenge ACKs, RFC 5961). */
	static const struct rec rst[] = {
		SEG(1, SYN | ACK, 0, 0, 0, 0x40, OPTS_ALL), SEG(1, RST, 50, 0, 0, 0, 0), SEG(1, SYN, 3, 0, 0, 0x40, OPTS_ALL),
		SEG(1, RST, 1, 0, 0, 0, 0), SEG(1, ACK, 0, 100, 0, 0x40, OPTS_TS), SEG(1, RST, 0, 0, 0, 0, 0),
	};
	/* Zero window: persist probes with backoff, then the window opens. */
	static const struct rec zwnd[] = {
		SEG(2, SYN | ACK, 0, 0, 0, 0x00, OPTS_ALL), SEND(2, 100), TIME(255, 2), TIME(255, 4), TIME(255, 8),
		SEG(2, ACK, 0, 0, 0, 0x00, OPTS_TS), TIME(255, 16), SEG(2, ACK, 0, 0, 0, 0x80, OPTS_TS), TIME(20, 0),
	};
	/* Simultaneous open on connection 3, then simultaneous close. */
	static const struct rec simul[] = {
		SEG(3, SYN, 0, 0, 0, 0x40, OPTS_ALL), SEG(3, SYN | ACK, 0, 0, 0, 0x40, OPTS_ALL), APP(3, 1),
		SEG(3, ACK | FIN, 0, -1, 0, 0x40, OPTS_TS), SEG(3, ACK, 0, 0, 0, 0x40, OPTS_TS), TIME(255, 255),
	};
	/* Lost data: RTO backoff until the retry limit, the connection times out. */
	static const struct rec rto[] = {
		SEG(0, SYN | ACK, 0, 0, 0, 0x40, OPTS_ALL), SEND(0, 32), TIME(255, 1), TIME(255, 3), TIME(255, 7),
		TIME(255, 15), TIME(255, 31), TIME(255, 63), TIME(255, 127), TIME(255, 255), TIME(255, 255),
	};
	/* Half-close: the application shuts down its side, keeps receiving. */
	static const struct rec half[] = {
		SEG(PASSIVE | 2, SYN, 0, 0, 0, 0x40, OPTS_ALL), SEG(PASSIVE | 2, ACK, 0, 0, 0, 0x40, OPTS_TS),
		APP(4, 0), SEG(PASSIVE | 2, ACK | PSH, 0, 0, DATA(40), 0x40, OPTS_TS), RECV(4),
		SEG(PASSIVE | 2, ACK | FIN, 0, 0, 0, 0x40, OPTS_TS), RECV(4), TIME(255, 255),
	};
	/* No options at all; out-of-order data then the hole. */
	static const struct rec noopt[] = {
		SEG(PASSIVE | 3, SYN, 0, 0, 0, 0x40, 0), SEG(PASSIVE | 3, ACK, 0, 0, 0, 0x40, 0),
		SEG(PASSIVE | 3, ACK, 2, 0, DATA(50), 0x40, 0), SEG(PASSIVE | 3, ACK, 0, 0, DATA(100), 0x40, 0),
		RECV(4), TIME(50, 0),
	};
	/* Keepalive (odd input length) and CUBIC (odd first byte): idle, probes, no answer. */
	static const struct rec keep[] = {
		{{P_SEG | 1, 0, SYN | ACK, 0, 0, 0, 0x40, OPTS_ALL}}, TIME(255, 5), TIME(255, 5), TIME(255, 10),
		TIME(255, 40),
	};
	uint8_t keep_odd[sizeof(keep) + 1];

	peer_file("active-data-fin-close", active, sizeof(active) / sizeof(*active));
	peer_file("passive-data-close-first", passive, sizeof(passive) / sizeof(*passive));
	peer_file("sack-holes-fast-retransmit", sack, sizeof(sack) / sizeof(*sack));
	peer_file("rst-challenge-ack", rst, sizeof(rst) / sizeof(*rst));
	peer_file("sack-holes-by-reference", sackref, sizeof(sackref) / sizeof(*sackref));
	peer_file("zero-window-persist", zwnd, sizeof(zwnd) / sizeof(*zwnd));
	peer_file("simultaneous-open-close", simul, sizeof(simul) / sizeof(*simul));
	peer_file("rto-backoff-timeout", rto, sizeof(rto) / sizeof(*rto));
	peer_file("half-close", half, sizeof(half) / sizeof(*half));
	peer_file("no-options-out-of-order", noopt, sizeof(noopt) / sizeof(*noopt));
	memcpy(keep_odd, keep, sizeof(keep));
	keep_odd[sizeof(keep)] = 0;
	write_file("fuzz_peer", "keepalive-cubic", keep_odd, sizeof(keep_odd));
}

/* ---- fuzz_migrate: real migrate_out blobs ---- */

struct mexp {
	struct fm_ctx x;
	struct utcp_port port;
};

static void mexp_begin(struct mexp *m)
{
	ncap = 0;
	m->port = (struct utcp_port){&cap_ops, NULL};
	fm_setup(&m->x, &m->port);
}

static void mfeed(struct mexp *m, const struct seg *g)
{
	uint8_t f[FS_MAX_FRAME];
	struct utcp_frame fr = {f, 0, 0};

	fr.len = (uint32_t)tcp_frame(f, g);
	utcp_input(m->x.st, &fr, 1, m->x.now);
	utcp_socks_process(m->x.ss, m->x.now);
}

static void mtime(struct mexp *m, uint64_t us)
{
	m->x.now += us;
	utcp_timers(m->x.st, m->x.now);
	utcp_socks_process(m->x.ss, m->x.now);
}

/* A client of the exporting listener: SYN, then (complete) the ACK, data in segments of at most
 * 1000 bytes, the FIN; with ooo, one segment 2000 bytes ahead first (it does not move). */
static void mclient(struct mexp *m, uint16_t cport, uint32_t isn, bool opts, bool complete,
		    size_t dlen, bool fin, bool ooo)
{
	static char data[16384];
	struct seg g = {PEER2, cport, FM_PORT, UTCP_TH_SYN, isn, 0, 65535,
			opts ? syn_opts(100) : (struct utcp_tcp_opts){0}, NULL, 0};
	uint32_t seq = isn + 1, ts = 101;
	struct seen sa;
	size_t off = 0;

	memset(data, 'q', sizeof(data));
	mfeed(m, &g);
	if (!complete)
		return;
	sa = last_to(cport);
	g.flags = UTCP_TH_ACK, g.seq = seq, g.ack = sa.seq + 1, g.wnd = 1024;
	g.opt = opts ? ts_opts(ts++, sa.tsval) : (struct utcp_tcp_opts){0};
	mfeed(m, &g);
	if (ooo) {
		g.seq = seq + 2000, g.data = data, g.len = 500, g.flags = UTCP_TH_ACK | UTCP_TH_PSH;
		mfeed(m, &g);
	}
	while (off < dlen) {
		size_t n = dlen - off < 1000 ? dlen - off : 1000;

		g.flags = UTCP_TH_ACK | UTCP_TH_PSH, g.seq = seq + (uint32_t)off, g.data = data + off;
		g.len = n;
		g.opt = opts ? ts_opts(ts++, sa.tsval) : (struct utcp_tcp_opts){0};
		mfeed(m, &g);
		off += n;
	}
	if (fin) {
		g.flags = UTCP_TH_ACK | UTCP_TH_FIN, g.seq = seq + (uint32_t)dlen, g.data = NULL;
		g.len = 0;
		g.opt = opts ? ts_opts(ts++, sa.tsval) : (struct utcp_tcp_opts){0};
		mfeed(m, &g);
	}
	mtime(m, 50000);                        /* delayed ACKs go out */
}

static void mexp_write(struct mexp *m, const char *name, int expect)
{
	static uint8_t blob[1 << 16];
	struct utcp_mig_flow flows[16];
	size_t len = 0;
	int n = utcp_sk_migrate_out(m->x.ss, m->x.l, flows, 16, blob, sizeof(blob), &len, m->x.now);

	if (n != expect) {
		fprintf(stderr, "mkseeds: %s: migrate_out %d, expected %d\n", name, n, expect);
		exit(1);
	}
	printf("  %-40s %d connection(s), %zu bytes\n", name, n, len);
	write_file("fuzz_migrate", name, blob, len);
	utcp_sk_migrate_done(m->x.ss, m->x.l, n, m->x.now);
	fm_teardown(&m->x);
}

static void migrate_seeds(void)
{
	struct mexp m;

	mexp_begin(&m);
	mclient(&m, 40001, 1000, true, true, 0, false, false);
	mexp_write(&m, "established-empty", 1);

	mexp_begin(&m);
	mclient(&m, 40001, 1000, true, true, 60, false, false);
	mexp_write(&m, "established-request", 1);

	mexp_begin(&m);
	mclient(&m, 40001, 0xfffffff0u, true, true, 60, true, false);   /* sequence wrap */
	mexp_write(&m, "close-wait-request-fin", 1);

	mexp_begin(&m);
	mclient(&m, 40001, 1000, true, false, 0, false, false);
	mexp_write(&m, "half-open", 1);

	mexp_begin(&m);
	mclient(&m, 40001, 1000, true, false, 0, false, false);
	mtime(&m, 1500000);                     /* the SYN,ACK went again: retries, backoff */
	mexp_write(&m, "half-open-synack-retransmitted", 1);

	mexp_begin(&m);
	mclient(&m, 40001, 77, false, true, 300, false, false);
	mexp_write(&m, "established-no-options", 1);

	mexp_begin(&m);
	mclient(&m, 40001, 77, false, false, 0, false, false);
	mexp_write(&m, "half-open-no-options", 1);

	mexp_begin(&m);
	mclient(&m, 40001, 1000, true, true, 6000, false, false);
	mexp_write(&m, "established-window-filled", 1);

	mexp_begin(&m);
	mclient(&m, 40001, 1000, true, true, 1000, false, true);
	mexp_write(&m, "established-out-of-order-dropped", 1);

	mexp_begin(&m);
	mclient(&m, 40001, 1000, true, true, 60, false, false);
	mclient(&m, 40002, 2000, true, true, 80, true, false);
	mclient(&m, 40003, 3000, true, false, 0, false, false);
	mclient(&m, 40004, 4000, false, true, 0, false, false);
	mexp_write(&m, "batch-of-four", 4);

	mexp_begin(&m);
	mexp_write(&m, "empty-batch", 0);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: mkseeds CORPUS_DIR\n");
		return 64;
	}
	corpus = argv[1];
	if (mkdir(corpus, 0755) && errno != EEXIST) {
		perror(corpus);
		return 1;
	}
	passive_scripts();
	active_scripts();
	malformed_scripts();
	wire_from_scripts();
	peer_scripts();
	migrate_seeds();
	printf("mkseeds: %u files in %s\n", nfiles, corpus);
	return 0;
}
