/* kernel.h — the kernel-socket transport of mstack-httpd (--kernel): one thread, non-blocking
 * sockets, edge-triggered epoll, sendmsg with an iovec (writev without SIGPIPE). */
#ifndef MSTACK_HTTPD_KERNEL_H
#define MSTACK_HTTPD_KERNEL_H

#include <netinet/in.h>
#include <stdio.h>

#include "conn.h"

struct httpd_kernel_opts {
	struct sockaddr_in listen;
	unsigned max_conns;
	FILE *ready;  /* gets "listening IP:PORT" and "ready" once accepting (may be NULL) */
};

/* Serves until SIGTERM or SIGINT (0), or fails to set up (negative errno, message on stderr). */
int httpd_kernel_serve(struct httpd_server *srv, const struct httpd_kernel_opts *opts);

#endif
