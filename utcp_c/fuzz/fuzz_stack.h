/* fuzz_stack.h — the stack fuzz_stack drives, shared with the seed generator (mkseeds.c) so
 * that seeds are written against exactly the stack the fuzzer sees: same config, same
 * listener and active connection, same reaction to events.  Input format, one record after
 * another: 2-byte frame length (big endian, mod 2048), 1-byte step, the frame.  The step
 * advances time by step * 10 ms after the frame; bit 0 makes the application send 100
 * bytes on a connection with events, bit 1 makes it close it.  A frame whose first byte is
 * odd gets the stack's MAC and correct IPv4/TCP checksums, so mutations pass validation. */
#ifndef FUZZ_STACK_H
#define FUZZ_STACK_H

#include <stdlib.h>
#include <string.h>

#include "utcp.h"

#define FS_LOCAL_IP 0x0a000001u   /* 10.0.0.1, the stack */
#define FS_PEER_IP 0x0a000002u    /* 10.0.0.2, the peer of the active connection */
#define FS_LISTEN_PORT 80
#define FS_ACTIVE_LPORT 1234      /* the active connection: 10.0.0.1:1234 -> 10.0.0.2:80 */
#define FS_START_US 1000000u
#define FS_STEP_US 10000u
#define FS_MAX_FRAME 2048u

static const uint8_t fs_local_mac[6] = {2, 0, 0, 0, 0, 1};

/* The port of a stack fed with utcp_input: every frame it sends is taken, none arrives.
 * fuzz_peer.c and mkseeds.c pair the last three with a tx_burst that reads what is sent. */
static inline int fs_sink_tx(void *c, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	(void)c, (void)f, (void)now;
	return (int)n;
}
static inline int fs_sink_rx(void *c, struct utcp_frame *f, unsigned m, uint64_t now)
{
	(void)c, (void)f, (void)m, (void)now;
	return 0;
}
static inline void fs_sink_rel(void *c, struct utcp_frame *f, unsigned n)
{
	(void)c, (void)f, (void)n;
}
static inline int fs_sink_kick(void *c)
{
	(void)c;
	return 0;
}
static const struct utcp_port_ops fs_sink = {
	.sz = sizeof(struct utcp_port_ops), .name = "sink", .rx_burst = fs_sink_rx,
	.rx_release = fs_sink_rel, .tx_burst = fs_sink_tx, .kick = fs_sink_kick,
};

/* The fuzzed stacks' configuration: 10.0.0.1, 8 connections of `buf` bytes each way. */
static inline void fs_config(struct utcp_config *cfg, uint32_t buf)
{
	utcp_config_init(cfg);
	cfg->local_ip = FS_LOCAL_IP;
	memcpy(cfg->local_mac, fs_local_mac, 6);
	cfg->max_conns = 8;
	cfg->sndbuf = cfg->rcvbuf = buf;
	cfg->timer_slots = 64;
}

struct fs_ctx {
	struct utcp_stack *st;
	uint64_t now;
	utcp_cid active;
};

/* Patches IPv4 and TCP checksums of an Ethernet frame in place, where the lengths allow. */
static inline void fs_fix_sums(uint8_t *f, size_t len)
{
	size_t ihl, tl;
	uint32_t s;

	if (len < 34 || (f[14] >> 4) != 4)
		return;
	ihl = (size_t)(f[14] & 15) * 4;
	if (ihl < 20 || 14 + ihl > len)
		return;
	tl = utcp_get16(f + 16);
	if (tl < ihl || 14 + tl > len)
		return;
	utcp_put16(f + 24, 0);
	utcp_put16(f + 24, utcp_csum_fold(utcp_csum_add(0, f + 14, ihl)));
	if (f[23] == UTCP_IPPROTO_TCP && tl - ihl >= 20) {
		uint8_t *t = f + 14 + ihl;

		utcp_put16(t + 16, 0);
		s = utcp_csum_pseudo(utcp_get32(f + 26), utcp_get32(f + 30), 6, (uint16_t)(tl - ihl));
		utcp_put16(t + 16, utcp_csum_fold(utcp_csum_add(s, t, tl - ihl)));
	}
}

/* A stack listening on port 80 with one active connection that has 5 bytes queued. */
static inline void fs_setup(struct fs_ctx *x, const struct utcp_port *port)
{
	struct utcp_config cfg;

	fs_config(&cfg, 4096);
	x->now = FS_START_US;
	if (utcp_stack_create(&cfg, port, x->now, &x->st))
		abort();
	utcp_listen(x->st, FS_LISTEN_PORT, 4);
	utcp_connect(x->st, FS_PEER_IP, 80, FS_ACTIVE_LPORT, NULL, x->now, &x->active);
	utcp_send(x->st, x->active, "hello", 5, x->now);
}

/* One record: the frame in (patched if its first byte is odd), time, the application. */
static inline void fs_step(struct fs_ctx *x, uint8_t *frame, size_t len, uint8_t step)
{
	static uint8_t buf[4096];
	struct utcp_event ev;

	if (len && (frame[0] & 1)) {
		memcpy(frame, fs_local_mac, 6);
		fs_fix_sums(frame, len);
	}
	{
		struct utcp_frame f = {frame, (uint32_t)len, 0};

		utcp_input(x->st, &f, 1, x->now);
	}
	x->now += (uint64_t)step * FS_STEP_US;
	utcp_timers(x->st, x->now);
	while (utcp_next_event(x->st, &ev) == 1) {
		utcp_recv(x->st, ev.conn, buf, sizeof(buf), x->now);
		if (step & 1)
			utcp_send(x->st, ev.conn, buf, 100, x->now);
		if (step & 2)
			utcp_close(x->st, ev.conn, x->now);
	}
}

#endif
