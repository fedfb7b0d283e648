/* stats_pair: two UTCP stacks joined in memory (the pair backend, virtual time), one
 * connection between them carrying some data; both ends' connections and stack A's counters
 * published in a statistics region handed to mstackd (STATS_REGION on a port of this
 * process), so that `mstackctl conns` shows them. Prints "ready <port_id>" and waits for
 * stdin to close. Usage: stats_pair RUN_DIR BYTES */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mstack_ctl.h"
#include "stats.h"
#include "utcp.h"
#include "utcp_port.h"

#define A_IP 0xc6120101u /* 198.18.1.1 */
#define B_IP 0xc6120102u /* 198.18.1.2 */

static void cfg(struct utcp_config *c, uint32_t ip, uint8_t me, uint8_t peer)
{
	utcp_config_init(c);
	c->local_ip = ip;
	c->local_mac[0] = 2, c->local_mac[5] = me;
	c->gw_mac[0] = 2, c->gw_mac[5] = peer;
	c->max_conns = 16;
	memcpy(c->isn_key, ip == A_IP ? "stats-pair-key-A" : "stats-pair-key-B", 16);
}

int main(int argc, char **argv)
{
	struct utcp_pair_opts po = { .sz = sizeof(po), .seed = 7, .queue_frames = 4096 };
	struct utcp_pair *pair;
	struct utcp_stack *a, *b;
	struct utcp_config ca, cb;
	struct utcp_port pa, pb;
	utcp_cid ca_c = UTCP_CID_NONE, cb_c = UTCP_CID_NONE;
	uint64_t now = 1000000, want, got = 0, sent = 0;
	static char buf[65536];

	if (argc != 3) {
		fprintf(stderr, "usage: stats_pair RUN_DIR BYTES\n");
		return 64;
	}
	want = strtoull(argv[2], NULL, 10);
	po.dir[0].delay_us = po.dir[1].delay_us = 5000; /* a 10 ms RTT the srtt should show */
	if (utcp_pair_create(&po, &pair))
		return 1;
	pa = utcp_pair_port(pair, 0);
	pb = utcp_pair_port(pair, 1);
	cfg(&ca, A_IP, 0xa, 0xb);
	cfg(&cb, B_IP, 0xb, 0xa);
	if (utcp_stack_create(&ca, &pa, now, &a) || utcp_stack_create(&cb, &pb, now, &b) ||
	    utcp_listen(b, 80, 8) < 0 || utcp_connect(a, B_IP, 80, 0, NULL, now, &ca_c))
		return 1;
	for (int steps = 0; steps < 1000000 && got < want; steps++) {
		struct utcp_event ev;
		uint64_t next, d;

		utcp_poll(a, now);
		utcp_poll(b, now);
		while (utcp_next_event(b, &ev) == 1)
			if (ev.events & UTCP_EV_ACCEPTED)
				cb_c = ev.conn;
		while (utcp_next_event(a, &ev) == 1)
			;
		while (sent < want) {
			size_t n = want - sent < sizeof(buf) ? (size_t)(want - sent) : sizeof(buf);
			ssize_t r = utcp_send(a, ca_c, buf, n, now);
			if (r <= 0)
				break;
			sent += (uint64_t)r;
		}
		for (ssize_t r; cb_c != UTCP_CID_NONE && (r = utcp_recv(b, cb_c, buf, sizeof(buf), now)) > 0;)
			got += (uint64_t)r;
		utcp_flush(a, now);
		utcp_flush(b, now);
		next = utcp_pair_next_delivery(pair);
		d = utcp_next_deadline(a);
		next = d < next ? d : next;
		d = utcp_next_deadline(b);
		next = d < next ? d : next;
		if (next == UINT64_MAX)
			break;
		if (next > now)
			now = next;
	}
	if (got < want) {
		fprintf(stderr, "stats_pair: moved %llu of %llu bytes\n", (unsigned long long)got,
			(unsigned long long)want);
		return 1;
	}

	struct mstack_stats_writer w = { .fd = -1 };
	struct utcp_conn_info ia = { .sz = sizeof(ia) }, ib = { .sz = sizeof(ib) };
	if (mstack_stats_open(&w, 8, "statspair") || utcp_conn_info(a, ca_c, &ia) ||
	    utcp_conn_info(b, cb_c, &ib))
		return 1;
	mstack_stats_begin(&w);
	mstack_stats_put_conn(&w, 0, &ia);
	mstack_stats_put_conn(&w, 3, &ib);
	mstack_stats_put_stack(&w, utcp_get_stats(a));
	mstack_stats_end(&w, now);

	struct mstack_ctl *ctl;
	struct mstack_ctl_port port;
	int rc = mstack_ctl_connect(&ctl, argv[1]);
	if (rc == 0)
		rc = mstack_ctl_port_open(ctl, NULL, &port) < 0 ? -1 : 0;
	if (rc == 0)
		rc = mstack_ctl_stats_region(ctl, port.port_id, w.fd);
	if (rc) {
		fprintf(stderr, "stats_pair: control: %d %s\n", rc, ctl ? mstack_ctl_last_detail(ctl) : "");
		return 1;
	}
	printf("ready %u\n", port.port_id);
	fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		;
	close(port.umem_fd);
	close(port.xsk_fd);
	mstack_ctl_close(ctl);
	mstack_stats_close(&w);
	utcp_stack_destroy(a);
	utcp_stack_destroy(b);
	utcp_pair_destroy(pair);
	return 0;
}
