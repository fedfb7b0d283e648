/* test_http.c — the request parser, request-target to path mapping and response heads.
 * Every malformed case is also fed one byte at a time: the parser may say "more" for a
 * while, but once it says 400 it says 400 for every longer prefix, and never accepts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "testlib.h"

static long parse(const char *s, struct http_request *req)
{
	return http_parse_request(s, strlen(s), HTTP_MAX_HEAD, req);
}

/* Every proper prefix is "more"; the whole is accepted with its full length. */
static void check_every_prefix(const char *s)
{
	struct http_request req;
	size_t n = strlen(s), i;

	for (i = 0; i < n; i++) {
		long r = http_parse_request(s, i, HTTP_MAX_HEAD, &req);
		if (r != 0)
			FAIL("prefix %zu of %zu of \"%s\" gave %ld", i, n, s, r);
	}
	CHECK_EQ(http_parse_request(s, n, HTTP_MAX_HEAD, &req), (long)n);
}

TEST(parse_get)
{
	struct http_request req;
	const char *s = "GET /index.html HTTP/1.1\r\nHost: example\r\nAccept: */*\r\n\r\n";

	CHECK_EQ(parse(s, &req), (long)strlen(s));
	CHECK_EQ(req.method, HTTP_METHOD_GET);
	CHECK_EQ(req.target_len, strlen("/index.html"));
	CHECK(memcmp(req.target, "/index.html", req.target_len) == 0);
	CHECK_EQ(req.version_minor, 1);
	CHECK(req.keep_alive);
	CHECK(req.has_host);
}

TEST(parse_head)
{
	struct http_request req;

	CHECK(parse("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n", &req) > 0);
	CHECK_EQ(req.method, HTTP_METHOD_HEAD);
}

TEST(parse_other_methods_are_valid_requests)
{
	static const char *const methods[] = { "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
						"CONNECT", "TRACE", "FOO", "get", "GETS" };
	struct http_request req;
	char buf[128];
	size_t i;

	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		snprintf(buf, sizeof(buf), "%s /x HTTP/1.1\r\nHost: h\r\n\r\n", methods[i]);
		CHECK_EQ(parse(buf, &req), (long)strlen(buf));
		CHECK_EQ(req.method, HTTP_METHOD_OTHER);
	}
	/* a body announced by a method we refuse does not make it malformed */
	CHECK(parse("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", &req) > 0);
	CHECK(parse("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", &req) > 0);
}

TEST(parse_keep_alive_rules)
{
	struct http_request req;

	CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n", &req) > 0 && req.keep_alive);
	CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &req) > 0);
	CHECK(!req.keep_alive);
	CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\nconnection: Upgrade, CLOSE \r\n\r\n", &req) > 0);
	CHECK(!req.keep_alive);
	CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n",
		    &req) > 0);
	CHECK(!req.keep_alive); /* close wins */
	CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n", &req) > 0);
	CHECK(req.keep_alive); /* a different token */
	CHECK(parse("GET / HTTP/1.0\r\n\r\n", &req) > 0); /* Host optional in 1.0 */
	CHECK(!req.keep_alive && req.version_minor == 0 && !req.has_host);
	CHECK(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req) > 0);
	CHECK(req.keep_alive);
	CHECK(parse("GET / HTTP/1.9\r\nHost: h\r\n\r\n", &req) > 0); /* a later 1.x is 1.1 */
	CHECK(req.keep_alive && req.version_minor == 1);
}

TEST(parse_leading_empty_lines_and_ows)
{
	struct http_request req;

	CHECK(parse("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", &req) > 0);
	CHECK(parse("GET / HTTP/1.1\r\nHost:h\r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n", &req) > 0);
	CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\nX-Obs: caf\xc3\xa9\r\n\r\n", &req) > 0);
	CHECK(parse("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", &req) > 0);
}

static const char *const malformed[] = {
	"GET\r\n\r\n",
	"GET /\r\n\r\n",                              /* HTTP/0.9 */
	"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",        /* trailing space */
	"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",        /* two spaces */
	"GET /  HTTP/1.1\r\nHost: h\r\n\r\n",
	" GET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
	"GET / HTTP/0.9\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.10\r\nHost: h\r\n\r\n",
	"GET / HTTP/1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.\r\nHost: h\r\n\r\n",
	"GET / HTTP/x.1\r\nHost: h\r\n\r\n",
	"GET / http/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTPS/1.1\r\nHost: h\r\n\r\n",
	"GET / HTTP/1.1\nHost: h\r\n\r\n",           /* bare LF */
	"GET / HTTP/1.1\r\nHost: h\n\n",
	"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n",       /* bare CR */
	"GET / HTTP/1.1\r\nHost: h\r\n\r\r\n",
	"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
	"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",         /* non-token method */
	"GE\"T / HTTP/1.1\r\nHost: h\r\n\r\n",
	"G\x80T / HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n",
	"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", /* raw bytes in the target */
	"GET / HTTP/1.1\r\n\r\n",                     /* HTTP/1.1 without Host */
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
	"GET / HTTP/1.1\r\nHost : h\r\n\r\n",        /* space before the colon */
	"GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n",   /* empty name */
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", /* obs-fold */
	"GET / HTTP/1.1\r\nHost: h\r\nX(: v\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fz\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
	"HEAD / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx",
	"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
};

TEST(parse_malformed)
{
	struct http_request req;
	size_t i;

	for (i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		long r = parse(malformed[i], &req);
		if (r != -400)
			FAIL("case %zu \"%s\" gave %ld", i, malformed[i], r);
	}
}

/* NUL anywhere in a head is a 400 (strlen-based cases cannot hold one). */
TEST(parse_nul_bytes)
{
	static const char base[] = "GET /a HTTP/1.1\r\nHost: h\r\nX: v\r\n\r\n";
	struct http_request req;
	size_t n = sizeof(base) - 1, at;

	for (at = 0; at < n; at++) {
		char buf[sizeof(base)];
		long r;
		memcpy(buf, base, n);
		buf[at] = '\0';
		r = http_parse_request(buf, n, HTTP_MAX_HEAD, &req);
		if (r != -400)
			FAIL("NUL at %zu gave %ld", at, r);
	}
}

TEST(parse_malformed_byte_by_byte)
{
	struct http_request req;
	size_t i, k;

	for (i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		const char *s = malformed[i];
		size_t n = strlen(s);
		bool bad = false;
		for (k = 1; k <= n; k++) {
			long r = http_parse_request(s, k, HTTP_MAX_HEAD, &req);
			if (r > 0)
				FAIL("case %zu accepted at prefix %zu", i, k);
			if (bad && r != -400)
				FAIL("case %zu: 400 at a shorter prefix, %ld at %zu", i, r, k);
			if (r == -400)
				bad = true;
		}
		if (!bad)
			FAIL("case %zu never rejected", i);
	}
}

TEST(parse_partial_every_prefix)
{
	check_every_prefix("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
	check_every_prefix("HEAD /a/b?c=d HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
	check_every_prefix("\r\nGET /x HTTP/1.1\r\nHost: h:80\r\nUser-Agent: t\r\n\r\n");
	check_every_prefix("DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n");
}

TEST(parse_pipelined)
{
	const char *s = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
			"HEAD /b HTTP/1.1\r\nHost: h\r\n\r\n"
			"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
			"GET /d HTT";
	struct http_request req;
	size_t off = 0, n = strlen(s);
	long r;

	r = http_parse_request(s + off, n - off, HTTP_MAX_HEAD, &req);
	CHECK(r > 0 && req.method == HTTP_METHOD_GET && req.target[1] == 'a');
	off += (size_t)r;
	r = http_parse_request(s + off, n - off, HTTP_MAX_HEAD, &req);
	CHECK(r > 0 && req.method == HTTP_METHOD_HEAD && req.target[1] == 'b');
	off += (size_t)r;
	r = http_parse_request(s + off, n - off, HTTP_MAX_HEAD, &req);
	CHECK(r > 0 && req.target[1] == 'c' && !req.keep_alive);
	off += (size_t)r;
	CHECK_EQ(http_parse_request(s + off, n - off, HTTP_MAX_HEAD, &req), 0);
}

/* A head of exactly HTTP_MAX_HEAD bytes is served; one byte more is a 400, complete or not. */
TEST(parse_head_bound)
{
	static const char pre[] = "GET / HTTP/1.1\r\nHost: h\r\nX: ";
	static const char post[] = "\r\n\r\n";
	size_t fill = HTTP_MAX_HEAD - (sizeof(pre) - 1) - (sizeof(post) - 1);
	char *buf = malloc(HTTP_MAX_HEAD + 2);
	struct http_request req;

	memcpy(buf, pre, sizeof(pre) - 1);
	memset(buf + sizeof(pre) - 1, 'a', fill);
	memcpy(buf + sizeof(pre) - 1 + fill, post, sizeof(post) - 1);
	CHECK_EQ(http_parse_request(buf, HTTP_MAX_HEAD, HTTP_MAX_HEAD, &req), HTTP_MAX_HEAD);

	memcpy(buf, pre, sizeof(pre) - 1);
	memset(buf + sizeof(pre) - 1, 'a', fill + 1);
	memcpy(buf + sizeof(pre) + fill, post, sizeof(post) - 1);
	CHECK_EQ(http_parse_request(buf, HTTP_MAX_HEAD + 1, HTTP_MAX_HEAD, &req), -400);
	/* still incomplete at the bound: no more waiting */
	CHECK_EQ(http_parse_request(buf, HTTP_MAX_HEAD, HTTP_MAX_HEAD, &req), -400);
	CHECK_EQ(http_parse_request(buf, HTTP_MAX_HEAD - 1, HTTP_MAX_HEAD, &req), 0);
	/* a smaller bound applies the same way */
	CHECK_EQ(http_parse_request("GET / HTTP/1.1\r\nHost: h\r\n\r\n", 27, 26, &req), -400);
	CHECK_EQ(http_parse_request("GET / HTTP/1.1\r\nHost: h\r\n\r\n", 27, 27, &req), 27);
	free(buf);
}

static int path_of(const char *target, char *out)
{
	return http_target_path(target, strlen(target), out, 256);
}

TEST(target_path_decodes)
{
	char out[256];

	CHECK_EQ(path_of("/", out), 0);
	CHECK_STR(out, "/");
	CHECK_EQ(path_of("/a%20b/c.html?x=1&y=/../", out), 0);
	CHECK_STR(out, "/a b/c.html");
	CHECK_EQ(path_of("/caf%C3%A9#frag", out), 0);
	CHECK_STR(out, "/caf\xc3\xa9");
	CHECK_EQ(path_of("/.well-known/x", out), 0);
	CHECK_EQ(path_of("/a..b/...", out), 0);
	CHECK_STR(out, "/a..b/...");
	CHECK_EQ(path_of("/%25", out), 0); /* decoded once only */
	CHECK_STR(out, "/%");
	CHECK_EQ(http_target_path("/abcdef", 7, out, 4), -400); /* does not fit */
	/* absolute-form: the authority is ignored, the path is what counts */
	CHECK_EQ(path_of("http://example.org/a/b.html?q", out), 0);
	CHECK_STR(out, "/a/b.html");
	CHECK_EQ(path_of("HTTP://example.org:8080", out), 0);
	CHECK_STR(out, "/");
	CHECK_EQ(path_of("https://h?x", out), 0);
	CHECK_STR(out, "/");
}

TEST(target_path_refuses_traversal_and_junk)
{
	static const char *const bad[] = {
		"/..", "/../", "/../etc/passwd", "/a/../b", "/a/..", "/.", "/./a", "/a/./b",
		"/%2e%2e/x", "/%2E%2e", "/.%2e/x", "/%2e./x", "/a/..%2fb", "/a%2f..%2fb",
		"/%2e", "/a\\b", "/a%5cb", "/..\\x", "a/b", "*", "http:/h/x", "ftp://h/x", "",
		"http://", "http:///x", "http://h/../x", "http://h/%2e%2e/x", "/%00",
		"/a%0a", "/a%7f", "/%zz", "/%2", "/%", "/a%g0",
	};
	char out[256];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (path_of(bad[i], out) != -400)
			FAIL("\"%s\" was not refused", bad[i]);
}

TEST(response_heads)
{
	char buf[512];
	size_t n;

	n = http_response_head(buf, sizeof(buf), 200, "text/html", 1234, HTTP_CONN_NONE, false,
			       "Thu, 01 Jan 1970 00:00:00 GMT");
	CHECK_EQ(n, strlen(buf));
	CHECK(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17) == 0);
	CHECK(strstr(buf, "\r\nContent-Length: 1234\r\n"));
	CHECK(strstr(buf, "\r\nContent-Type: text/html\r\n"));
	CHECK(strstr(buf, "\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"));
	CHECK(!strstr(buf, "Connection"));
	CHECK(strcmp(buf + n - 4, "\r\n\r\n") == 0);

	n = http_response_head(buf, sizeof(buf), 405, NULL, 0, HTTP_CONN_CLOSE, true, NULL);
	CHECK(strncmp(buf, "HTTP/1.1 405 Method Not Allowed\r\n", 33) == 0);
	CHECK(strstr(buf, "\r\nAllow: GET, HEAD\r\n"));
	CHECK(strstr(buf, "\r\nConnection: close\r\n"));
	CHECK(!strstr(buf, "Date"));
	n = http_response_head(buf, sizeof(buf), 200, NULL, 0, HTTP_CONN_KEEP_ALIVE, false, NULL);
	CHECK(strstr(buf, "\r\nConnection: keep-alive\r\n"));
	CHECK_EQ(http_response_head(buf, 20, 200, NULL, 0, HTTP_CONN_NONE, false, NULL), 0);
	/* the bound is exact: the head and its NUL */
	n = http_response_head(buf, sizeof(buf), 404, "text/plain", 18446744073709551615ull,
			       HTTP_CONN_CLOSE, false, "D");
	CHECK(strstr(buf, "\r\nContent-Length: 18446744073709551615\r\n"));
	{
		char exact[512];
		size_t k;
		CHECK_EQ(http_response_head(exact, n + 1, 404, "text/plain",
					    18446744073709551615ull, HTTP_CONN_CLOSE, false, "D"),
			 n);
		CHECK(memcmp(exact, buf, n + 1) == 0);
		for (k = 0; k <= n; k++)
			CHECK_EQ(http_response_head(exact, k, 404, "text/plain",
						    18446744073709551615ull, HTTP_CONN_CLOSE,
						    false, "D"),
				 0);
	}

	http_format_date(784111777, buf, sizeof(buf));
	CHECK_STR(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
}
