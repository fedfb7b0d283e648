/* http.h — HTTP/1.1 request parsing and response heads for mstack-httpd.
 * Pure functions over byte buffers: no I/O, no allocation, no clock.  The connection
 * state machine (conn.c) and the fuzzer drive them. */
#ifndef MSTACK_HTTPD_HTTP_H
#define MSTACK_HTTPD_HTTP_H

#include <stdbool.h>
#include <stddef.h>

/* Bound on a request head (request line + header fields + the empty line). */
#define HTTP_MAX_HEAD 8192

enum http_method {
	HTTP_METHOD_NONE,  /* the request line was not parsed (far enough) */
	HTTP_METHOD_GET,
	HTTP_METHOD_HEAD,
	HTTP_METHOD_OTHER, /* any other syntactically valid method: answered 405 */
};

struct http_request {
	enum http_method method;
	const char *target; /* the raw request-target, pointing into the parsed buffer */
	size_t target_len;
	int version_minor;  /* HTTP/1.<minor>; 0 or 1 (higher minors count as 1) */
	bool keep_alive;    /* the version's default, then the Connection field */
	bool has_host;
};

/* Parses one request head at the start of buf.
 *   > 0  a complete, valid head of that many bytes (the next request starts there);
 *   0    valid so far, more bytes needed (len < max_head);
 *   < 0  -400: malformed, or no complete head within max_head bytes.
 * Leading empty lines are skipped (RFC 9112 2.2).  On error, req->method says whether the
 * request line got as far as a HEAD (so that the error response carries no body). */
long http_parse_request(const char *buf, size_t len, size_t max_head, struct http_request *req);

/* Turns a request-target into the decoded path to look up (NUL-terminated): origin-form
 * ("/p?q") or absolute-form ("http://authority/p?q", the authority ignored); the query is
 * dropped, %XX decoded.  0 on success; -400 for any other form, a bad or NUL/control
 * escape, a backslash, or a "." or ".." segment (raw or encoded) — path traversal is
 * refused before any lookup. */
int http_target_path(const char *target, size_t len, char *out, size_t out_cap);

enum http_conn_header {
	HTTP_CONN_NONE,       /* HTTP/1.1 keep-alive: the default, no field */
	HTTP_CONN_CLOSE,      /* "Connection: close" */
	HTTP_CONN_KEEP_ALIVE, /* "Connection: keep-alive" (HTTP/1.0 clients) */
};

/* Writes a response head into out; returns its length, or 0 if cap is too small.
 * content_type NULL omits the field; allow adds "Allow: GET, HEAD"; date NULL omits it. */
size_t http_response_head(char *out, size_t cap, int status, const char *content_type,
			  size_t content_length, enum http_conn_header conn, bool allow,
			  const char *date);

/* "OK", "Not Found", ... for the statuses the server sends; "Unknown" otherwise. */
const char *http_reason(int status);

/* An IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") for the Date field; out >= 30 bytes. */
void http_format_date(long long unix_seconds, char *out, size_t cap);

#endif
