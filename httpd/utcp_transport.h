/* utcp_transport.h — the UTCP transport of mstack-httpd (the default mode): a port from mstackd, UTCP on
 * it through the xdp backend, the core driven by UTCP's low-level event API. */
#ifndef MSTACK_HTTPD_UTCP_TRANSPORT_H
#define MSTACK_HTTPD_UTCP_TRANSPORT_H

#include <netinet/in.h>
#include <stdio.h>

#include "conn.h"

struct httpd_utcp_opts {
	struct sockaddr_in listen;
	unsigned max_conns;
	const char *run_dir;  /* NULL: $MSTACK_RUN_DIR, then /run/mstack */
	FILE *ready;          /* gets "listening IP:PORT" and "ready" once accepting */
};

/* Serves until SIGTERM or SIGINT (0); a negative errno when it cannot set up (message on
 * stderr): -EHOSTUNREACH-like errors from mstackd, -ENETDOWN, ... */
int httpd_utcp_serve(struct httpd_server *srv, const struct httpd_utcp_opts *opts);

#endif
