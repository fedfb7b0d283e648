/* fuzz_peer.c — libFuzzer entry driving a stack through a scripted peer that tracks
 * what the stack sends, so fuzzed segments carry near-valid sequence and
 * acknowledgment numbers and reach every state.  Each 8-byte record of the input is
 * one step: a segment from the peer (flags, deltas to the numbers the stack expects,
 * length, window, options), an application call, or time passing.  Sends are copies or
 * references (utcp_send_ref) to buffers freed the moment the stack releases them, so a read
 * after the release is an ASan report, and every reference must come back exactly once.
 * Built by `make fuzz` (clang). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_stack.h"
#include "utcp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define LIP FS_LOCAL_IP
#define PIP 0x0a000002u

static const uint8_t pmac[6] = {2, 0, 0, 0, 0, 2};   /* the stack: LIP, fs_local_mac */

struct peer {
	uint32_t stack_seq[4];      /* highest SEQ+LEN seen from the stack, per peer port */
	uint32_t stack_ack[4];      /* last ACK seen from the stack */
	uint32_t my_seq[4];
};

static struct peer P;

/* References queued by utcp_send_ref: each a heap buffer, freed on release. */
#define MAX_REFS 4096
static uint8_t *refs[MAX_REFS];
static unsigned nrefs, nreleased;

static void on_release(void *ctx, utcp_cid c, uint64_t cookie)
{
	(void)ctx, (void)c;
	if (cookie >= nrefs || !refs[cookie])
		abort();                /* unknown, or released twice */
	memset(refs[cookie], 0xa5, 1);
	free(refs[cookie]);
	refs[cookie] = NULL;
	nreleased++;
}

static void send_ref(struct utcp_stack *st, utcp_cid c, size_t len, uint64_t now)
{
	uint8_t *b;

	if (nrefs == MAX_REFS || !len)
		return;
	b = malloc(len);
	if (!b)
		abort();
	memset(b, (int)nrefs, len);
	refs[nrefs] = b;
	if (utcp_send_ref(st, c, b, len, nrefs, now) > 0)
		nrefs++;
	else
		free(b);
}

static int sink_tx(void *c, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	unsigned i;

	(void)c, (void)now;
	for (i = 0; i < n; i++) {
		const uint8_t *t = f[i].data + 34;
		uint16_t dport;
		uint32_t seq, len;
		unsigned k;

		if (f[i].len < 54)
			continue;
		dport = utcp_get16(t + 2);
		k = dport & 3;
		seq = utcp_get32(t + 4);
		len = f[i].len - 34 - (uint32_t)(t[12] >> 4) * 4;
		len += (t[13] & (UTCP_TH_SYN | UTCP_TH_FIN)) ? 1 : 0;
		if ((int32_t)(seq + len - P.stack_seq[k]) > 0 || !P.stack_seq[k])
			P.stack_seq[k] = seq + len;
		if (t[13] & UTCP_TH_ACK)
			P.stack_ack[k] = utcp_get32(t + 8);
	}
	return (int)n;
}
static const struct utcp_port_ops sink = {
	.sz = sizeof(struct utcp_port_ops), .name = "sink", .rx_burst = fs_sink_rx,
	.rx_release = fs_sink_rel, .tx_burst = sink_tx, .kick = fs_sink_kick,
};

static void send_seg(struct utcp_stack *st, const uint8_t *r, uint64_t now)
{
	static const uint8_t payload[256];
	uint8_t f[512];
	struct utcp_tcp th;
	struct utcp_frame fr = {f, 0, 0};
	unsigned k = r[1] & 3;
	int tl;

	memset(&th, 0, sizeof(th));
	th.sport = (uint16_t)(40000 + k);
	th.dport = (r[1] & 4) ? 80 : 1234;          /* listener, or the active connection */
	th.flags = r[2];
	if (th.flags & UTCP_TH_SYN && !P.my_seq[k])
		P.my_seq[k] = 1000u * (k + 1);
	th.seq = P.my_seq[k] + (uint32_t)(int8_t)r[3] * 97u;
	th.ack = P.stack_seq[k] + (uint32_t)(int8_t)r[4];
	th.wnd = (uint16_t)(r[6] << 8 | r[6]);
	if (r[7] & 1) {
		th.opt.has_mss = true;
		th.opt.mss = (uint16_t)(r[7] << 3);
	}
	th.opt.has_ws = r[7] & 2;
	th.opt.ws = r[6] & 15;
	th.opt.sack_ok = r[7] & 4;
	th.opt.has_ts = r[7] & 8;
	th.opt.tsval = (uint32_t)(now / 1000) + (uint32_t)(int8_t)r[5];
	if (r[7] & 16) {
		th.opt.nsack = 1 + (r[7] >> 6);
		for (unsigned b = 0; b < th.opt.nsack; b++) {
			th.opt.sack[b].left = P.stack_ack[k] + b * 1000u;
			th.opt.sack[b].right = P.stack_seq[k] - (uint32_t)(r[5] & 7) * 100u;
		}
	}
	utcp_eth_emit(f, sizeof(f), fs_local_mac, pmac, UTCP_ETH_P_IPV4);
	tl = utcp_tcp_emit(f + 34, sizeof(f) - 34, PIP, LIP, &th, payload, r[5] & 0x80 ? r[5] & 0x7f : 0);
	if (tl < 0)
		return;
	utcp_ipv4_emit(f + 14, 20, PIP, LIP, UTCP_IPPROTO_TCP, (uint16_t)tl, 64, 1);
	fr.len = 34 + (uint32_t)tl;
	if ((th.flags & UTCP_TH_SYN) || (r[5] & 0x80))
		P.my_seq[k] = th.seq + (uint32_t)(tl - 20) + ((th.flags & UTCP_TH_SYN) ? 1 : 0);
	utcp_input(st, &fr, 1, now);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct utcp_config cfg;
	struct utcp_port port = {&sink, NULL};
	struct utcp_stack *st;
	struct utcp_event ev;
	utcp_cid conns[8];
	unsigned nconns = 0;
	uint64_t now = 1000000;
	static uint8_t buf[4096];

	memset(&P, 0, sizeof(P));
	nrefs = nreleased = 0;
	fs_config(&cfg, 4096);
	memcpy(cfg.gw_mac, pmac, 6);
	cfg.keepalive = size & 1;
	cfg.keepalive_idle_us = 1000000;
	cfg.keepalive_intvl_us = 100000;
	if (size > 0 && (data[0] & 1))
		strcpy(cfg.cc, "cubic");
	if (utcp_stack_create(&cfg, &port, now, &st))
		abort();
	utcp_set_ref_release(st, on_release, NULL);
	utcp_listen(st, 80, 4);
	for (unsigned k = 0; k < 4; k++)
		if (utcp_connect(st, PIP, (uint16_t)(40000 + k), 1234, NULL, now, &conns[nconns]) == 0)
			nconns++;
	utcp_flush(st, now);
	for (; size >= 8; data += 8, size -= 8) {
		const uint8_t *r = data;
		utcp_cid c = nconns ? conns[r[1] % nconns] : UTCP_CID_NONE;

		switch (r[0] % 8) {
		case 0: case 1: case 2: case 3:
			send_seg(st, r, now);
			break;
		case 4:
			if (r[2] & 1)
				send_ref(st, c, (size_t)r[3] * 16 + (r[2] >> 1), now);
			else
				utcp_send(st, c, buf, (size_t)r[3] * 16, now);
			break;
		case 5:
			utcp_recv(st, c, buf, (size_t)r[3] * 16, now);
			break;
		case 6:
			switch (r[2] % 7) {
			case 0: utcp_shutdown(st, c, now); break;
			case 1: utcp_close(st, c, now); break;
			case 2: utcp_abort(st, c, now); break;
			case 3: utcp_set_nodelay(st, c, r[3] & 1); break;
			case 4: utcp_set_keepalive(st, c, r[3] & 1, now); break;
			case 5: utcp_set_cork(st, c, r[3] & 1, now); break;
			default: {
				/* a move: refused with data queued; else frozen, maybe written to, gone */
				struct utcp_conn_image im;

				if (utcp_conn_freeze(st, c) == 0) {
					if (r[3] & 2)
						send_ref(st, c, 100, now);
					(void)utcp_conn_export(st, c, &im);
					utcp_conn_release(st, c, r[3] & 1, now);
				}
				break;
			}
			}
			break;
		default:
			now += (uint64_t)r[3] * 1000 * (1 + r[4]);
			break;
		}
		utcp_timers(st, now);
		while (utcp_next_event(st, &ev) == 1)
			if ((ev.events & UTCP_EV_ACCEPTED) && nconns < 8)
				conns[nconns++] = ev.conn;
		utcp_flush(st, now);
	}
	utcp_stack_destroy(st);
	if (nreleased != nrefs)
		abort();                /* a reference never came back */
	return 0;
}
