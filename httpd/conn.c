/* conn.c — the per-connection state machine: READING -> WRITING -> (READING | LINGERING)
 * -> CLOSED.  Runs as far as the transport lets it on every call (so an edge-triggered
 * transport never misses a wake-up); the only blocking point is a transport's -EAGAIN. */
#include "conn.h"

#include <errno.h>
#include <string.h>

static const char *const error_body[] = {
	[0] = "400 Bad Request\n",
	[1] = "404 Not Found\n",
	[2] = "405 Method Not Allowed\n",
};

void httpd_server_init(struct httpd_server *srv, const struct httpd_files *files)
{
	memset(srv, 0, sizeof(*srv));
	srv->files = files;
	srv->timeouts.idle_ms = HTTPD_IDLE_MS;
	srv->timeouts.request_ms = HTTPD_REQUEST_MS;
	srv->timeouts.write_ms = HTTPD_WRITE_MS;
	srv->timeouts.linger_ms = HTTPD_LINGER_MS;
	srv->date_sec = -1;
}

void httpd_server_set_time(struct httpd_server *srv, long long unix_seconds)
{
	if (unix_seconds == srv->date_sec)
		return;
	srv->date_sec = unix_seconds;
	http_format_date(unix_seconds, srv->date, sizeof(srv->date));
}

void httpd_conn_init(struct httpd_conn *c, struct httpd_server *srv,
		     const struct httpd_io_ops *ops, void *io, uint64_t now_ms)
{
	c->srv = srv;
	c->ops = ops;
	c->io = io;
	c->state = HTTPD_READING;
	c->close_after = false;
	c->deadline = now_ms + srv->timeouts.idle_ms;
	c->lingered = 0;
	c->head_len = c->head_off = 0;
	c->body = NULL;
	c->body_len = c->body_off = 0;
	c->in_len = 0;
	srv->stats.conns++;
}

static void count_status(struct httpd_stats *st, int status)
{
	switch (status) {
	case 400: st->status_400++; break;
	case 404: st->status_404++; break;
	case 405: st->status_405++; break;
	default:
		if (status >= 200 && status < 300)
			st->status_2xx++;
	}
}

/* Sets up a response: head (and, unless HEAD, the body slice), then WRITING. */
static void respond(struct httpd_conn *c, int status, const char *type, const char *body,
		    size_t len, bool head_only, enum http_conn_header conn)
{
	c->head_len = http_response_head(c->head, sizeof(c->head), status, type, len, conn,
					 status == 405, c->srv->date[0] ? c->srv->date : NULL);
	c->head_off = 0;
	c->body = head_only ? NULL : body;
	c->body_len = head_only ? 0 : len;
	c->body_off = 0;
	c->close_after = conn == HTTP_CONN_CLOSE;
	c->state = HTTPD_WRITING;
	count_status(&c->srv->stats, status);
}

/* Every 4xx closes the connection; whatever else the client sent is dropped. */
static void respond_error(struct httpd_conn *c, int status, bool head_only)
{
	const char *body = error_body[status == 404 ? 1 : status == 405 ? 2 : 0];

	respond(c, status, "text/plain; charset=utf-8", body, strlen(body), head_only,
		HTTP_CONN_CLOSE);
	c->in_len = 0;
}

/* Parses the buffered input: 1 if a response is now set up, 0 if more input is needed. */
static int serve_next(struct httpd_conn *c)
{
	struct httpd_server *srv = c->srv;
	struct http_request req;
	const struct httpd_file *f;
	enum http_conn_header conn;
	char path[HTTP_MAX_HEAD];
	long r;

	r = http_parse_request(c->in, c->in_len, HTTP_MAX_HEAD, &req);
	if (r == 0)
		return 0;
	srv->stats.requests++;
	if (r < 0) {
		respond_error(c, 400, req.method == HTTP_METHOD_HEAD);
		return 1;
	}
	if (req.method == HTTP_METHOD_OTHER) {
		respond_error(c, 405, false);
		return 1;
	}
	if (http_target_path(req.target, req.target_len, path, sizeof(path)) < 0) {
		respond_error(c, 400, req.method == HTTP_METHOD_HEAD);
		return 1;
	}
	f = httpd_files_lookup(srv->files, path, strlen(path));
	if (!f) {
		respond_error(c, 404, req.method == HTTP_METHOD_HEAD);
		return 1;
	}
	if (!req.keep_alive)
		conn = HTTP_CONN_CLOSE;
	else if (req.version_minor == 0)
		conn = HTTP_CONN_KEEP_ALIVE;
	else
		conn = HTTP_CONN_NONE;
	respond(c, 200, f->content_type, f->data, f->len, req.method == HTTP_METHOD_HEAD, conn);
	/* the next pipelined request, if any, moves to the front */
	memmove(c->in, c->in + r, c->in_len - (size_t)r);
	c->in_len -= (size_t)r;
	return 1;
}

static enum httpd_conn_status done(struct httpd_conn *c)
{
	c->state = HTTPD_CLOSED;
	return HTTPD_CONN_DONE;
}

static void response_written(struct httpd_conn *c, uint64_t now)
{
	const struct httpd_timeouts *t = &c->srv->timeouts;

	if (c->close_after) {
		/* Graceful close: FIN first, then read until the peer's FIN so that the kernel
		 * (or UTCP) never resets a connection with unread input under our response. */
		c->ops->shutdown_write(c->io);
		c->state = HTTPD_LINGERING;
		c->lingered = 0;
		c->deadline = now + t->linger_ms;
	} else {
		c->state = HTTPD_READING;
		c->deadline = now + (c->in_len ? t->request_ms : t->idle_ms);
	}
}

static enum httpd_conn_status run(struct httpd_conn *c, uint64_t now)
{
	const struct httpd_timeouts *t = &c->srv->timeouts;
	struct iovec iov[2];
	long n;
	int cnt, ncopy;

	for (;;) {
		switch (c->state) {
		case HTTPD_READING:
			if (c->in_len > 0 && serve_next(c))
				continue;
			n = c->ops->read(c->io, c->in + c->in_len, sizeof(c->in) - c->in_len);
			if (n == -EAGAIN)
				return HTTPD_CONN_OPEN;
			if (n <= 0) {
				/* end of stream between requests (or in a partial one): nothing to
				 * answer; an error means the peer is gone */
				if (n < 0)
					c->srv->stats.io_errors++;
				return done(c);
			}
			if (c->in_len == 0)
				c->deadline = now + t->request_ms;
			c->in_len += (size_t)n;
			continue;

		case HTTPD_WRITING:
			cnt = 0;
			if (c->head_off < c->head_len)
				iov[cnt++] = (struct iovec){ c->head + c->head_off,
							     c->head_len - c->head_off };
			ncopy = cnt;    /* the head; the body lives as long as the process */
			if (c->body_off < c->body_len)
				iov[cnt++] = (struct iovec){ (void *)(c->body + c->body_off),
							     c->body_len - c->body_off };
			if (cnt == 0) {
				response_written(c, now);
				continue;
			}
			n = c->ops->writev_body ? c->ops->writev_body(c->io, iov, cnt, ncopy)
						: c->ops->writev(c->io, iov, cnt);
			if (n == -EAGAIN)
				return HTTPD_CONN_OPEN;
			if (n <= 0) {
				c->srv->stats.io_errors++; /* the client left mid-response */
				return done(c);
			}
			c->deadline = now + t->write_ms;
			if ((size_t)n <= c->head_len - c->head_off) {
				c->head_off += (size_t)n;
			} else {
				c->body_off += (size_t)n - (c->head_len - c->head_off);
				c->head_off = c->head_len;
			}
			continue;

		case HTTPD_LINGERING:
			n = c->ops->read(c->io, c->in, sizeof(c->in));
			if (n == -EAGAIN)
				return HTTPD_CONN_OPEN;
			if (n <= 0)
				return done(c);
			c->lingered += (size_t)n;
			if (c->lingered > HTTPD_LINGER_BYTES)
				return done(c);
			continue;

		case HTTPD_CLOSED:
		default:
			return HTTPD_CONN_DONE;
		}
	}
}

enum httpd_conn_status httpd_conn_on_readable(struct httpd_conn *c, uint64_t now_ms)
{
	return run(c, now_ms);
}

enum httpd_conn_status httpd_conn_on_writable(struct httpd_conn *c, uint64_t now_ms)
{
	return run(c, now_ms);
}

enum httpd_conn_status httpd_conn_on_timer(struct httpd_conn *c, uint64_t now_ms)
{
	if (c->state == HTTPD_CLOSED)
		return HTTPD_CONN_DONE;
	if (now_ms < c->deadline)
		return HTTPD_CONN_OPEN;
	c->srv->stats.timeouts++;
	return done(c);
}

uint64_t httpd_conn_deadline(const struct httpd_conn *c)
{
	return c->deadline;
}

bool httpd_conn_wants_write(const struct httpd_conn *c)
{
	return c->state == HTTPD_WRITING;
}
