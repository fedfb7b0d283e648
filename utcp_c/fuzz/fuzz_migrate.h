/* fuzz_migrate.h — the importing side fuzz_migrate drives, shared with the seed generator
 * (mkseeds.c), which exports real connections from a stack set up the same way: a socket
 * table over one stack at 10.0.0.1 listening on port 80.  The input is a migrate blob
 * (utcp_sk_migrate_in, format in src/sock/migrate.c and docs/utcp-sockets.md). */
#ifndef FUZZ_MIGRATE_H
#define FUZZ_MIGRATE_H

#include <stdlib.h>
#include <string.h>

#include "fuzz_stack.h"
#include "utcp.h"
#include "utcp_sock.h"

#define FM_PORT 80                /* on FS_LOCAL_IP (10.0.0.1), the listen group's address */

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

	fs_config(&cfg, 8192);
	x->now = FS_START_US;
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
