/* fuzz_migrate.c — libFuzzer entry for utcp_sk_migrate_in: the input is a blob of connections
 * another stack froze (seeds: real utcp_sk_migrate_out output, corpus/fuzz_migrate, written by
 * mkseeds.c).  Whatever is adopted is then driven: a segment from each peer at the numbers its
 * record gives, time passing (SYN,ACK and data retransmissions), accept, read, answer, close;
 * so an image the check let through that the stack cannot live with shows up here.  An input
 * with a wrong total length is tried again with the length patched, so that mutations of the
 * records get past the header.  Built by `make -C utcp_c/fuzz` (clang). */
#include <errno.h>

#include "fuzz_migrate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HDR 16
#define REC 100

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

/* The peer of a record speaks: data at its RCV.NXT acknowledging its SND.NXT. */
static void peer_segment(struct fm_ctx *x, const uint8_t *r)
{
	static const uint8_t peer_mac[6] = {2, 0, 0, 0, 0, 2};
	uint8_t f[256];
	struct utcp_tcp th;
	struct utcp_frame fr = {f, 0, 0};
	uint32_t raddr = le32(r + 12);
	int tl;

	memset(&th, 0, sizeof(th));
	th.sport = le16(r + 18);
	th.dport = le16(r + 16);
	th.seq = le32(r + 56);                  /* RCV.NXT */
	th.ack = le32(r + 40);                  /* SND.NXT */
	th.flags = UTCP_TH_ACK | UTCP_TH_PSH | (r[96] & 1 ? UTCP_TH_FIN : 0);
	th.wnd = 4096;
	if (r[5] & 4) {                         /* timestamps */
		th.opt.has_ts = true;
		th.opt.tsval = le32(r + 64) + 1;
		th.opt.tsecr = le32(r + 68);
	}
	utcp_eth_emit(f, sizeof(f), fs_local_mac, peer_mac, UTCP_ETH_P_IPV4);
	tl = utcp_tcp_emit(f + 34, sizeof(f) - 34, raddr, FS_LOCAL_IP, &th, "0123456789", 10);
	if (tl < 0)
		return;
	utcp_ipv4_emit(f + 14, 20, raddr, FS_LOCAL_IP, UTCP_IPPROTO_TCP, (uint16_t)tl, 64, 1);
	fr.len = 34 + (uint32_t)tl;
	utcp_input(x->st, &fr, 1, x->now);
}

static void drive(struct fm_ctx *x, const uint8_t *data, size_t size)
{
	static uint8_t buf[16384];
	size_t off = HDR;
	int round, k = 0;

	/* records as far as they go (the blob was accepted, but stay careful) */
	while (off + REC <= size && k++ < 16) {
		uint32_t rl = le32(data + off);

		peer_segment(x, data + off);
		if (rl < REC || rl > size - off)
			break;
		off += rl;
	}
	utcp_socks_process(x->ss, x->now);
	for (round = 0; round < 12; round++) {
		struct iovec v = {buf, sizeof(buf)};
		int s;

		while ((s = utcp_sk_accept(x->ss, x->l, NULL)) >= 0) {
			struct iovec out = {buf, 200};

			while (utcp_sk_recv(x->ss, s, &v, 1, 0, x->now) > 0)
				;
			utcp_sk_send(x->ss, s, &out, 1, 0, x->now);
			if ((round + s) & 1)
				utcp_sk_shutdown(x->ss, s, 1 /* SHUT_WR */, x->now);
			else
				utcp_sk_close(x->ss, s, x->now);
		}
		x->now += 400000;               /* SYN,ACK and data timers run */
		utcp_timers(x->st, x->now);
		utcp_socks_process(x->ss, x->now);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct utcp_port port = {&fs_sink, NULL};
	struct fm_ctx x;
	int n;

	fm_setup(&x, &port);
	n = utcp_sk_migrate_in(x.ss, x.l, data, size, x.now);
	if (n == -EBADMSG && size >= HDR && size <= (1u << 20)) {
		uint8_t *copy = malloc(size);

		if (!copy)
			abort();
		memcpy(copy, data, size);
		copy[12] = (uint8_t)size, copy[13] = (uint8_t)(size >> 8);
		copy[14] = (uint8_t)(size >> 16), copy[15] = (uint8_t)(size >> 24);
		n = utcp_sk_migrate_in(x.ss, x.l, copy, size, x.now);
		if (n > 0)
			drive(&x, copy, size);
		free(copy);
	} else if (n > 0) {
		drive(&x, data, size);
	}
	if (n > 0 && (unsigned)n > utcp_get_stats(x.st)->migrated_in)
		abort();                        /* every adoption is counted */
	fm_teardown(&x);
	return 0;
}
