/* conn.h — one HTTP connection as a state machine, and the transport seam.
 *
 * The core never touches a socket.  A transport (kernel sockets + epoll in kernel.c today;
 * UTCP's event API later) gives each connection an ops table and calls
 * httpd_conn_on_readable()/httpd_conn_on_writable() when it may make progress; both run the
 * machine as far as it goes until the transport says -EAGAIN.  When a call returns
 * HTTPD_CONN_DONE, the transport releases the connection (close the fd / utcp_close) and
 * never calls the core for it again.  Time is an argument (milliseconds, the transport's
 * monotonic clock); httpd_conn_deadline() says when to call httpd_conn_on_timer(). */
#ifndef MSTACK_HTTPD_CONN_H
#define MSTACK_HTTPD_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "files.h"
#include "http.h"

/* What a transport provides.  Return values follow the project's convention: byte counts
 * or negative errno values.  All three must be non-blocking. */
struct httpd_io_ops {
	/* > 0 bytes read; 0 at the peer's end of stream; -EAGAIN when nothing is there. */
	long (*read)(void *io, void *buf, size_t len);
	/* > 0 bytes accepted (possibly fewer than offered); -EAGAIN when nothing fits. */
	long (*writev)(void *io, const struct iovec *iov, int iovcnt);
	/* Sends FIN after everything accepted so far; reading goes on. */
	int (*shutdown_write)(void *io);
	/* Optional (NULL: writev serves): writev for a response whose pieces from iov[ncopy] on are
	 * body bytes that stay valid and unchanged while the process lives (the files mapped at
	 * start, constant strings): a transport may queue those by reference instead of copying
	 * them (UTCP's utcp_send_ref).  The first ncopy pieces (the head) are the connection's
	 * own buffer and must be copied.  Same return values as writev. */
	long (*writev_body)(void *io, const struct iovec *iov, int iovcnt, int ncopy);
};

/* Timeouts (ms); httpd_server_init() sets the defaults below. */
struct httpd_timeouts {
	uint64_t idle_ms;    /* between requests on a kept-alive connection */
	uint64_t request_ms; /* from the first byte of a request to its complete head */
	uint64_t write_ms;   /* without any progress while writing a response */
	uint64_t linger_ms;  /* draining input after our FIN, before closing anyway */
};
#define HTTPD_IDLE_MS    30000
#define HTTPD_REQUEST_MS 10000
#define HTTPD_WRITE_MS   30000
#define HTTPD_LINGER_MS  2000
/* Input discarded after a closing response before giving up on a clean close. */
#define HTTPD_LINGER_BYTES (64 * 1024)

struct httpd_stats {
	uint64_t conns;
	uint64_t requests;
	uint64_t status_2xx, status_400, status_404, status_405;
	uint64_t timeouts;
	uint64_t io_errors; /* resets and broken pipes: clients that left mid-response */
};

/* What every connection shares: the files, the Date field, counters. */
struct httpd_server {
	const struct httpd_files *files;
	struct httpd_timeouts timeouts;
	struct httpd_stats stats;
	long long date_sec;
	char date[40];
};

void httpd_server_init(struct httpd_server *srv, const struct httpd_files *files);
/* Refreshes the Date field (call once per loop iteration; cheap when the second is the same). */
void httpd_server_set_time(struct httpd_server *srv, long long unix_seconds);

enum httpd_conn_state {
	HTTPD_READING,  /* waiting for (the rest of) a request head */
	HTTPD_WRITING,  /* a response is being written */
	HTTPD_LINGERING,/* FIN sent; reading and discarding until the peer's FIN */
	HTTPD_CLOSED,
};

enum httpd_conn_status { HTTPD_CONN_OPEN, HTTPD_CONN_DONE };

struct httpd_conn {
	struct httpd_server *srv;
	const struct httpd_io_ops *ops;
	void *io;
	enum httpd_conn_state state;
	bool close_after;   /* this response is the last one */
	uint64_t deadline;  /* ms; meaning depends on state */
	size_t lingered;
	/* the response being written: head bytes, then a slice of a mapped file */
	size_t head_len, head_off;
	const char *body;
	size_t body_len, body_off;
	size_t in_len;
	char head[512];
	char in[HTTP_MAX_HEAD];
};

void httpd_conn_init(struct httpd_conn *c, struct httpd_server *srv,
		     const struct httpd_io_ops *ops, void *io, uint64_t now_ms);
enum httpd_conn_status httpd_conn_on_readable(struct httpd_conn *c, uint64_t now_ms);
enum httpd_conn_status httpd_conn_on_writable(struct httpd_conn *c, uint64_t now_ms);
/* Past the deadline: the connection is done (counted as a timeout). */
enum httpd_conn_status httpd_conn_on_timer(struct httpd_conn *c, uint64_t now_ms);
uint64_t httpd_conn_deadline(const struct httpd_conn *c);
/* After OPEN: true if the connection waits for send space (a transport that asks for
 * write readiness only when needed uses this), false if it waits for input. */
bool httpd_conn_wants_write(const struct httpd_conn *c);

#endif
