/* fuzz_stack.c — libFuzzer entry for the whole frame-input path: the input is split
 * into frames (2-byte length prefixes) fed to a stack that listens on port 80 and has
 * one active connection, with time advancing between frames.  Checksums are patched
 * when the first byte of a frame is odd, so the fuzzer gets past validation.
 * Built by `make fuzz` (clang). */
#include <stdlib.h>
#include <string.h>

#include "utcp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sink_tx(void *c, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	(void)c, (void)f, (void)now;
	return (int)n;
}
static int sink_rx(void *c, struct utcp_frame *f, unsigned m, uint64_t now)
{
	(void)c, (void)f, (void)m, (void)now;
	return 0;
}
static void sink_rel(void *c, struct utcp_frame *f, unsigned n)
{
	(void)c, (void)f, (void)n;
}
static int sink_kick(void *c)
{
	(void)c;
	return 0;
}
static const struct utcp_port_ops sink = {sizeof(struct utcp_port_ops), "sink", sink_rx, sink_rel,
					  sink_tx, sink_kick};

static void fix_sums(uint8_t *f, size_t len)
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t mac[6] = {2, 0, 0, 0, 0, 1};
	struct utcp_config cfg;
	struct utcp_port port = {&sink, NULL};
	struct utcp_stack *st;
	struct utcp_event ev;
	uint64_t now = 1000000;
	utcp_cid c;
	uint8_t frame[2048], buf[4096];

	utcp_config_init(&cfg);
	cfg.local_ip = 0x0a000001;
	memcpy(cfg.local_mac, mac, 6);
	cfg.max_conns = 8;
	cfg.sndbuf = cfg.rcvbuf = 4096;
	cfg.timer_slots = 64;
	if (utcp_stack_create(&cfg, &port, now, &st))
		abort();
	utcp_listen(st, 80, 4);
	utcp_connect(st, 0x0a000002, 80, 1234, NULL, now, &c);
	utcp_send(st, c, "hello", 5, now);
	while (size >= 3) {
		size_t len = utcp_get16(data) % sizeof(frame);
		uint8_t adv = data[2];

		data += 3, size -= 3;
		if (len > size)
			len = size;
		memcpy(frame, data, len);
		if (len && (frame[0] & 1)) {
			memcpy(frame, mac, 6);
			fix_sums(frame, len);
		}
		{
			struct utcp_frame f = {frame, (uint32_t)len, 0};

			utcp_input(st, &f, 1, now);
		}
		data += len, size -= len;
		now += (uint64_t)adv * 10000;
		utcp_timers(st, now);
		while (utcp_next_event(st, &ev) == 1) {
			utcp_recv(st, ev.conn, buf, sizeof(buf), now);
			if (adv & 1)
				utcp_send(st, ev.conn, buf, 100, now);
			if (adv & 2)
				utcp_close(st, ev.conn, now);
		}
	}
	utcp_stack_destroy(st);
	return 0;
}
