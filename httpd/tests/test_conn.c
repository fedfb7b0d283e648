/* test_conn.c — the connection state machine over a scripted transport: the peer's bytes
 * arrive in chunks the test chooses (-EAGAIN in between), writes are accepted a budget at a
 * time, and everything written, the FIN and the close are observed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "testlib.h"

struct fake {
	const char *in;   /* everything the peer will send */
	size_t in_len;
	size_t avail;     /* how much of it has "arrived" */
	size_t in_off;    /* how much the server has read */
	bool peer_fin;    /* after avail == in_len: end of stream instead of -EAGAIN */
	long read_err;
	char *out;
	size_t out_len, out_cap;
	size_t budget;    /* bytes writev may still accept; SIZE_MAX: unlimited */
	long write_err;
	bool fin_sent;
	size_t written_at_fin;
};

static long f_read(void *io, void *buf, size_t len)
{
	struct fake *f = io;
	size_t n = f->avail - f->in_off;

	if (f->read_err)
		return f->read_err;
	if (n == 0)
		return (f->peer_fin && f->avail == f->in_len) ? 0 : -EAGAIN;
	if (n > len)
		n = len;
	memcpy(buf, f->in + f->in_off, n);
	f->in_off += n;
	return (long)n;
}

static long f_writev(void *io, const struct iovec *iov, int cnt)
{
	struct fake *f = io;
	size_t total = 0;
	int i;

	if (f->fin_sent)
		FAIL("write after FIN");
	if (f->write_err)
		return f->write_err;
	if (f->budget == 0)
		return -EAGAIN;
	for (i = 0; i < cnt && f->budget > 0; i++) {
		size_t n = iov[i].iov_len < f->budget ? iov[i].iov_len : f->budget;
		if (f->out_len + n > f->out_cap)
			FAIL("more output than expected");
		memcpy(f->out + f->out_len, iov[i].iov_base, n);
		f->out_len += n;
		f->budget -= n;
		total += n;
		if (n < iov[i].iov_len)
			break;
	}
	return (long)total;
}

static int f_shutdown(void *io)
{
	struct fake *f = io;

	f->fin_sent = true;
	f->written_at_fin = f->out_len;
	return 0;
}

static const struct httpd_io_ops fake_ops = { f_read, f_writev, f_shutdown, NULL };

/* A transport that takes bodies by reference (writev_body): what it is given past ncopy must
 * point into the file's mapping itself, never at a copy (checked against `ref_lo..ref_hi`). */
static const char *ref_lo, *ref_hi;
static size_t ref_pieces, copy_pieces;

static long f_writev_body(void *io, const struct iovec *iov, int cnt, int ncopy)
{
	CHECK(ncopy >= 0 && ncopy <= 1 && ncopy <= cnt);
	for (int i = 0; i < cnt; i++) {
		const char *b = iov[i].iov_base;

		if (i < ncopy) {
			copy_pieces++;
			continue;
		}
		ref_pieces++;
		if (ref_lo && (b < ref_lo || b + iov[i].iov_len > ref_hi))
			FAIL("body piece %p+%zu outside the mapping", (const void *)b, iov[i].iov_len);
	}
	return f_writev(io, iov, cnt);
}

static const struct httpd_io_ops fake_ref_ops = { f_read, f_writev, f_shutdown, f_writev_body };

/* The document root every test serves. */
static char *root;
static struct httpd_files *files;
static struct httpd_server srv;
static char big[300000];

static void setup_root(void)
{
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + (i * 7 + i / 251) % 26);
	root = test_mkroot();
	test_put(root, "index.html", "<p>home</p>\n", 12);
	test_put(root, "a.txt", "alpha", 5);
	test_put(root, "b.txt", "bravo!", 6);
	test_put(root, "empty", "", 0);
	test_put(root, "big.bin", big, sizeof(big));
	test_put(root, "docs/index.html", "docs", 4);
	if (httpd_files_load(root, &files, err, sizeof(err)) < 0)
		FAIL("load: %s", err);
	httpd_server_init(&srv, files);
	httpd_server_set_time(&srv, 784111777);
}

static void teardown_root(void)
{
	httpd_files_free(files);
	test_rmroot(root);
}

static void fake_init(struct fake *f, const char *in)
{
	memset(f, 0, sizeof(*f));
	f->in = in;
	f->in_len = strlen(in);
	f->avail = f->in_len;
	f->out_cap = 4 * sizeof(big);
	f->out = malloc(f->out_cap);
	f->budget = (size_t)-1;
}

static struct httpd_conn *conn_new_ops(struct fake *f, const struct httpd_io_ops *ops)
{
	struct httpd_conn *c = malloc(sizeof(*c));

	httpd_conn_init(c, &srv, ops, f, 1000);
	return c;
}

static struct httpd_conn *conn_new(struct fake *f)
{
	return conn_new_ops(f, &fake_ops);
}

/* Splits f->out at *pos into one response: status, the head's text, the body. */
struct resp {
	int status;
	char head[1024];
	const char *body;
	size_t body_len;
};

static bool next_response(const struct fake *f, size_t *pos, struct resp *r, bool head_only)
{
	const char *s = f->out + *pos, *end, *cl;
	size_t left = f->out_len - *pos, hl;

	if (left == 0)
		return false;
	end = memmem(s, left, "\r\n\r\n", 4);
	if (!end)
		FAIL("incomplete head at %zu: %.*s", *pos, (int)left, s);
	hl = (size_t)(end - s) + 4;
	if (hl >= sizeof(r->head))
		FAIL("head too long");
	memcpy(r->head, s, hl);
	r->head[hl] = '\0';
	if (sscanf(r->head, "HTTP/1.1 %d ", &r->status) != 1)
		FAIL("bad status line: %s", r->head);
	cl = strstr(r->head, "\r\nContent-Length: ");
	if (!cl)
		FAIL("no Content-Length: %s", r->head);
	r->body_len = head_only ? 0 : strtoul(cl + 18, NULL, 10);
	if (hl + r->body_len > left)
		FAIL("short body: %zu of %zu", left - hl, r->body_len);
	r->body = s + hl;
	*pos += hl + r->body_len;
	return true;
}

static void expect_body(const struct resp *r, const char *body, size_t len)
{
	if (r->body_len != len || memcmp(r->body, body, len) != 0)
		FAIL("body %.*s (%zu) != %.*s (%zu)", (int)(r->body_len > 64 ? 64 : r->body_len),
		     r->body, r->body_len, (int)(len > 64 ? 64 : len), body, len);
}

static void done(struct fake *f, struct httpd_conn *c)
{
	free(f->out);
	free(c);
}

TEST(conn_get_keep_alive)
{
	struct fake f;
	struct httpd_conn *c;
	struct resp r;
	size_t pos = 0;

	setup_root();
	fake_init(&f, "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
	c = conn_new(&f);
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_OPEN);
	CHECK(next_response(&f, &pos, &r, false));
	CHECK_EQ(r.status, 200);
	CHECK(strstr(r.head, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
	CHECK(strstr(r.head, "\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
	CHECK(!strstr(r.head, "Connection"));
	expect_body(&r, "alpha", 5);
	CHECK(!f.fin_sent);
	CHECK_EQ(c->state, HTTPD_READING);
	CHECK_EQ(httpd_conn_deadline(c), 1000 + HTTPD_IDLE_MS);
	/* the peer closes between requests: done, no answer */
	f.peer_fin = true;
	CHECK_EQ(httpd_conn_on_readable(c, 2000), HTTPD_CONN_DONE);
	CHECK_EQ(pos, f.out_len);
	CHECK_EQ(srv.stats.status_2xx, 1);
	done(&f, c);
	teardown_root();
}

TEST(conn_pipelined_in_order)
{
	struct fake f;
	struct httpd_conn *c;
	struct resp r;
	size_t pos = 0;

	setup_root();
	fake_init(&f, "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n"
		      "HEAD /b.txt HTTP/1.1\r\nHost: t\r\n\r\n"
		      "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
		      "GET /docs HTTP/1.1\r\nHost: t\r\n\r\n"
		      "GET /empty HTTP/1.1\r\nHost: t\r\n\r\n"
		      "GET /b.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
		      "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
	c = conn_new(&f);
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_OPEN);
	CHECK(next_response(&f, &pos, &r, false));
	expect_body(&r, "alpha", 5);
	CHECK(next_response(&f, &pos, &r, true));
	CHECK(strstr(r.head, "\r\nContent-Length: 6\r\n"));
	CHECK(next_response(&f, &pos, &r, false));
	expect_body(&r, "<p>home</p>\n", 12);
	CHECK(next_response(&f, &pos, &r, false));
	expect_body(&r, "docs", 4);
	CHECK(next_response(&f, &pos, &r, false));
	CHECK_EQ(r.status, 200);
	expect_body(&r, "", 0);
	CHECK(next_response(&f, &pos, &r, false));
	expect_body(&r, "bravo!", 6);
	CHECK(strstr(r.head, "\r\nConnection: close\r\n"));
	/* nothing after the Connection: close request is answered */
	CHECK_EQ(pos, f.out_len);
	CHECK(f.fin_sent);
	CHECK_EQ(c->state, HTTPD_LINGERING);
	f.peer_fin = true;
	CHECK_EQ(httpd_conn_on_readable(c, 1001), HTTPD_CONN_DONE);
	done(&f, c);
	teardown_root();
}

TEST(conn_byte_by_byte)
{
	static const char req[] = "GET /b.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: x\r\n\r\n"
				  "GET /a.txt HTTP/1.0\r\n\r\n";
	struct fake f;
	struct httpd_conn *c;
	struct resp r;
	size_t pos = 0, first = strlen(req) - strlen("GET /a.txt HTTP/1.0\r\n\r\n");

	setup_root();
	fake_init(&f, req);
	f.avail = 0;
	c = conn_new(&f);
	while (f.avail < f.in_len) {
		f.avail++;
		CHECK_EQ(httpd_conn_on_readable(c, 1000 + f.avail), HTTPD_CONN_OPEN);
		if (f.avail < first)
			CHECK_EQ(f.out_len, 0);
		if (f.avail == 1) /* the request timer starts at its first byte */
			CHECK_EQ(httpd_conn_deadline(c), 1001 + HTTPD_REQUEST_MS);
	}
	CHECK(next_response(&f, &pos, &r, false));
	expect_body(&r, "bravo!", 6);
	CHECK(next_response(&f, &pos, &r, false)); /* HTTP/1.0: closes */
	expect_body(&r, "alpha", 5);
	CHECK(strstr(r.head, "\r\nConnection: close\r\n"));
	CHECK(f.fin_sent);
	done(&f, c);
	teardown_root();
}

TEST(conn_partial_writes)
{
	struct fake f;
	struct httpd_conn *c;
	struct resp r;
	size_t pos = 0;
	int rounds = 0;

	setup_root();
	fake_init(&f, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
		      "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
	c = conn_new(&f);
	f.budget = 7;
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_OPEN);
	while (c->state == HTTPD_WRITING || f.budget == 0) {
		if (++rounds > 200000)
			FAIL("no progress");
		f.budget = 1 + (size_t)rounds % 4093;
		CHECK_EQ(httpd_conn_on_writable(c, 1000 + (uint64_t)rounds), HTTPD_CONN_OPEN);
		if (f.budget != 0)
			break; /* budget left over: everything was written */
	}
	CHECK(next_response(&f, &pos, &r, false));
	expect_body(&r, big, sizeof(big));
	CHECK(next_response(&f, &pos, &r, false));
	expect_body(&r, "alpha", 5);
	CHECK_EQ(c->state, HTTPD_READING);
	done(&f, c);
	teardown_root();
}

/* With writev_body the head is offered to copy and the body by reference into the mapping,
 * across partial writes too; the bytes are the same. */
TEST(conn_body_by_reference)
{
	const struct httpd_file *bf;
	struct fake f;
	struct httpd_conn *c;
	struct resp r;
	size_t pos = 0;
	int rounds = 0;

	setup_root();
	bf = httpd_files_lookup(files, "/big.bin", 8);
	CHECK(bf != NULL);
	ref_lo = bf->data;
	ref_hi = bf->data + bf->len;
	ref_pieces = copy_pieces = 0;
	fake_init(&f, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
	c = conn_new_ops(&f, &fake_ref_ops);
	f.budget = 100;                 /* the head in two writes, then the body in many */
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_OPEN);
	while (c->state == HTTPD_WRITING) {
		if (++rounds > 100000)
			FAIL("no progress");
		f.budget = 1 + (size_t)rounds * 37 % 9000;
		CHECK_EQ(httpd_conn_on_writable(c, 1000 + (uint64_t)rounds), HTTPD_CONN_OPEN);
	}
	CHECK(copy_pieces >= 2);
	CHECK(ref_pieces > 10);
	CHECK(next_response(&f, &pos, &r, false));
	expect_body(&r, big, sizeof(big));
	done(&f, c);
	ref_lo = ref_hi = NULL;
	teardown_root();
}

/* Every 4xx: the response, "Connection: close", then FIN, and a close only after the
 * peer's FIN (or the linger bound). */
static void check_error(const char *req, int status, bool head_only, const char *extra)
{
	struct fake f;
	struct httpd_conn *c;
	struct resp r;
	size_t pos = 0;

	fake_init(&f, req);
	c = conn_new(&f);
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_OPEN);
	if (!next_response(&f, &pos, &r, head_only))
		FAIL("no response to %s", req);
	if (r.status != status)
		FAIL("%s: status %d, wanted %d", req, r.status, status);
	CHECK(strstr(r.head, "\r\nConnection: close\r\n"));
	if (extra && !strstr(r.head, extra))
		FAIL("%s: no %s in %s", req, extra, r.head);
	CHECK_EQ(pos, f.out_len); /* nothing else answered */
	CHECK(f.fin_sent);
	CHECK_EQ(f.written_at_fin, f.out_len);
	CHECK_EQ(c->state, HTTPD_LINGERING);
	CHECK_EQ(httpd_conn_deadline(c), 1000 + HTTPD_LINGER_MS);
	f.peer_fin = true;
	CHECK_EQ(httpd_conn_on_readable(c, 1001), HTTPD_CONN_DONE);
	done(&f, c);
}

TEST(conn_errors_close)
{
	setup_root();
	check_error("GET /missing HTTP/1.1\r\nHost: t\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
		    404, false, NULL);
	check_error("HEAD /missing HTTP/1.1\r\nHost: t\r\n\r\n", 404, true, NULL);
	check_error("POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", 405, false,
		    "\r\nAllow: GET, HEAD\r\n");
	check_error("DELETE /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n",
		    405, false, "\r\nAllow: GET, HEAD\r\n");
	check_error("GET /../a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, false, NULL);
	check_error("GET /%2e%2e/a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, false, NULL);
	check_error("GET /docs/.. HTTP/1.1\r\nHost: t\r\n\r\n", 400, false, NULL);
	check_error("GET \\a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, false, NULL);
	check_error("GET a.txt HTTP/1.1\r\nHost: t\r\n\r\n", 400, false, NULL);
	check_error("GARBAGE\r\n\r\n", 400, false, NULL);
	check_error("GET / HTTP/1.1\r\n\r\n", 400, false, NULL);
	check_error("GET / HTTP/3.0\r\nHost: t\r\n\r\n", 400, false, NULL);
	check_error("HEAD / HTTP/1.1\r\n\r\n", 400, true, NULL);
	CHECK_EQ(srv.stats.status_404, 2);
	CHECK_EQ(srv.stats.status_405, 2);
	CHECK_EQ(srv.stats.status_400, 9);
	teardown_root();
}

TEST(conn_head_too_large)
{
	char *req = malloc(HTTP_MAX_HEAD + 100);

	setup_root();
	strcpy(req, "GET / HTTP/1.1\r\nHost: t\r\nX: ");
	memset(req + strlen(req), 'x', HTTP_MAX_HEAD + 50 - strlen(req));
	req[HTTP_MAX_HEAD + 50] = '\0';
	check_error(req, 400, false, NULL);
	free(req);
	teardown_root();
}

TEST(conn_http10_keep_alive)
{
	struct fake f;
	struct httpd_conn *c;
	struct resp r;
	size_t pos = 0;

	setup_root();
	fake_init(&f, "GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	c = conn_new(&f);
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_OPEN);
	CHECK(next_response(&f, &pos, &r, false));
	CHECK(strstr(r.head, "\r\nConnection: keep-alive\r\n"));
	CHECK(!f.fin_sent);
	CHECK_EQ(c->state, HTTPD_READING);
	done(&f, c);
	teardown_root();
}

TEST(conn_linger_is_bounded)
{
	static char junk[HTTPD_LINGER_BYTES + HTTP_MAX_HEAD + 4096];
	struct fake f;
	struct httpd_conn *c;

	setup_root();
	memcpy(junk, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", 31);
	memset(junk + 31, 'j', sizeof(junk) - 32);
	fake_init(&f, junk);
	c = conn_new(&f);
	/* the peer keeps sending after our 404 and never sends FIN */
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_DONE);
	CHECK(f.fin_sent);
	done(&f, c);

	fake_init(&f, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
	c = conn_new(&f);
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_OPEN);
	CHECK_EQ(httpd_conn_on_timer(c, 1000 + HTTPD_LINGER_MS - 1), HTTPD_CONN_OPEN);
	CHECK_EQ(httpd_conn_on_timer(c, 1000 + HTTPD_LINGER_MS), HTTPD_CONN_DONE);
	done(&f, c);
	teardown_root();
}

TEST(conn_peer_gone_mid_response)
{
	struct fake f;
	struct httpd_conn *c;
	uint64_t errors;

	setup_root();
	errors = srv.stats.io_errors;
	fake_init(&f, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
	c = conn_new(&f);
	f.budget = 1000;
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_OPEN);
	f.write_err = -EPIPE;
	CHECK_EQ(httpd_conn_on_writable(c, 1001), HTTPD_CONN_DONE);
	CHECK_EQ(srv.stats.io_errors, errors + 1);
	done(&f, c);

	fake_init(&f, "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
	c = conn_new(&f);
	f.read_err = -ECONNRESET;
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_DONE);
	done(&f, c);
	teardown_root();
}

TEST(conn_timeouts)
{
	struct fake f;
	struct httpd_conn *c;

	setup_root();
	/* idle: nothing ever arrives */
	fake_init(&f, "");
	c = conn_new(&f);
	CHECK_EQ(httpd_conn_on_readable(c, 1000), HTTPD_CONN_OPEN);
	CHECK_EQ(httpd_conn_on_timer(c, 1000 + HTTPD_IDLE_MS - 1), HTTPD_CONN_OPEN);
	CHECK_EQ(httpd_conn_on_timer(c, 1000 + HTTPD_IDLE_MS), HTTPD_CONN_DONE);
	done(&f, c);
	/* a head that never completes */
	fake_init(&f, "GET / HTTP/1.1\r\n");
	c = conn_new(&f);
	CHECK_EQ(httpd_conn_on_readable(c, 5000), HTTPD_CONN_OPEN);
	CHECK_EQ(httpd_conn_deadline(c), 5000 + HTTPD_REQUEST_MS);
	CHECK_EQ(httpd_conn_on_timer(c, 5000 + HTTPD_REQUEST_MS), HTTPD_CONN_DONE);
	done(&f, c);
	/* a reader that never reads: the write timer */
	fake_init(&f, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
	c = conn_new(&f);
	f.budget = 100;
	CHECK_EQ(httpd_conn_on_readable(c, 7000), HTTPD_CONN_OPEN);
	CHECK_EQ(httpd_conn_deadline(c), 7000 + HTTPD_WRITE_MS);
	CHECK_EQ(httpd_conn_on_timer(c, 7000 + HTTPD_WRITE_MS), HTTPD_CONN_DONE);
	done(&f, c);
	teardown_root();
}
