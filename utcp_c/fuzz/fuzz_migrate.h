/* fuzz_migrate.h — the importing side fuzz_migrate drives, shared with the seed generator
 * (mkseeds.c), which exports real connections from a stack set up the same way: a socket
 * table over one stack at 10.0.0.1 listening on port 80.  The input is a migrate blob
 * (utcp_sk_migrate_in, format in src/sock/migrate.c and docs/utcp-sockets.md). */
#ifndef FUZZ_MIGRATE_H
#define FUZZ_MIGRATE_H

#include <stdlib.h>
#include <string.h>

#include "utcp.h"
#include "utcp_sock.h"

#define FM_LOCAL_IP 0x0a000001u   /* 10.0.0.1, the listen group's address */
#define FM_PORT 80
#define FM_START_US 1000000u

static const uint8_t fm_local_mac[6] = {2, 0, 0, 0, 0, 1};

struct fm_ctx {
	struct utcp_stack *st;
	struct utcp_socks *ss;
	int l;                    /* the listener */
	uint64_t now;
};

static inline void fm_setup(struct fm_ctx *x, const struct utcp_port *port)
{
	struct utcp_socks_config sc;
	struct utcp_config cfg;

	utcp_config_init(&cfg);
	cfg.local_ip = FM_LOCAL_IP;
	memcpy(cfg.local_mac, fm_local_mac, 6);
	cfg.max_conns = 8;
	cfg.sndbuf = cfg.rcvbuf = 8192;
	cfg.timer_slots = 64;
	x->now = FM_START_US;
	utcp_socks_config_init(&sc);
	sc.wake_fd = 0;
	if (utcp_stack_create(&cfg, port, x->now, &x->st) || utcp_socks_create(x->st, &sc, &x->ss))
		abort();
	x->l = utcp_sk_open(x->ss);
	if (x->l < 0 || utcp_sk_listen(x->ss, x->l, FM_PORT, 7))
		abort();
}

static inline void fm_teardown(struct fm_ctx *x)
{
	utcp_socks_destroy(x->ss, x->now);
	utcp_stack_destroy(x->st);
}

#endif
