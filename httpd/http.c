/* http.c — the request parser (RFC 9112 sections 2-5, strict), the request-target to path
 * mapping with traversal refused, and response heads.  Everything is bounded by the caller's
 * buffer; nothing here allocates or keeps state between calls, so a partial request is
 * simply parsed again when more bytes arrive (a head is at most HTTP_MAX_HEAD bytes). */
#include "http.h"

#include <string.h>
#include <strings.h>
#include <time.h>

#define BAD (-400)

/* RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 * "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
static bool is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	switch (c) {
	case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
	case '-': case '.': case '^': case '_': case '`': case '|': case '~':
		return true;
	default:
		return false;
	}
}

/* RFC 9110 5.5: field-vchar (VCHAR / obs-text), SP and HTAB inside a value. */
static bool is_field_char(unsigned char c)
{
	return (c >= 0x21 && c != 0x7f) || c == ' ' || c == '\t';
}

static bool is_ows(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static bool ieq(const unsigned char *a, size_t n, const char *lit)
{
	size_t i;

	if (strlen(lit) != n)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char c = a[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		if (c != (unsigned char)lit[i])
			return false;
	}
	return true;
}

struct head_fields {
	int hosts;
	int content_lengths;
	bool content_length_nonzero;
	bool transfer_encoding;
	bool conn_close;
	bool conn_keep_alive;
};

/* Connection = #connection-option (RFC 9110 7.6.1): a comma-separated list of tokens. */
static void parse_connection(const unsigned char *v, size_t n, struct head_fields *f)
{
	size_t i = 0;

	while (i < n) {
		size_t s, e;
		while (i < n && (is_ows(v[i]) || v[i] == ','))
			i++;
		s = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > s && is_ows(v[e - 1]))
			e--;
		if (ieq(v + s, e - s, "close"))
			f->conn_close = true;
		else if (ieq(v + s, e - s, "keep-alive"))
			f->conn_keep_alive = true;
	}
}

/* Only Host and Connection mean something to this server.  Content-Length and
 * Transfer-Encoding are looked at only to refuse a body on GET/HEAD: the server never reads
 * bodies, so a request that carries one would desynchronise pipelined framing. */
static int interpret_field(const unsigned char *name, size_t nlen, const unsigned char *v,
			   size_t vlen, struct head_fields *f)
{
	size_t i;

	if (ieq(name, nlen, "host")) {
		if (++f->hosts > 1)
			return BAD; /* RFC 9112 3.2: more than one Host is a 400 */
		for (i = 0; i < vlen; i++)
			if (is_ows(v[i]) || v[i] == ',' || v[i] == '/' || v[i] == '\\' ||
			    v[i] == '@')
				return BAD;
	} else if (ieq(name, nlen, "connection")) {
		parse_connection(v, vlen, f);
	} else if (ieq(name, nlen, "content-length")) {
		if (++f->content_lengths > 1 || vlen == 0)
			return BAD;
		for (i = 0; i < vlen; i++) {
			if (v[i] < '0' || v[i] > '9')
				return BAD;
			if (v[i] != '0')
				f->content_length_nonzero = true;
		}
	} else if (ieq(name, nlen, "transfer-encoding")) {
		f->transfer_encoding = true;
	}
	return 0;
}

/* Reads CRLF at *i: 1 consumed, 0 need more, BAD for anything else (bare CR or LF). */
static int expect_crlf(const unsigned char *p, size_t n, size_t *i)
{
	if (*i >= n)
		return 0;
	if (p[*i] != '\r')
		return BAD;
	if (*i + 1 >= n)
		return 0;
	if (p[*i + 1] != '\n')
		return BAD;
	*i += 2;
	return 1;
}

static long parse_head(const unsigned char *p, size_t n, struct http_request *req)
{
	static const char proto[] = "HTTP/";
	struct head_fields f = { 0 };
	size_t i = 0, s, k;
	int r;

	/* RFC 9112 2.2: ignore at least one empty line before the request-line. */
	while (i < n && (p[i] == '\r' || p[i] == '\n')) {
		if ((r = expect_crlf(p, n, &i)) <= 0)
			return r;
	}

	/* request-line = method SP request-target SP HTTP-version CRLF (RFC 9112 3) */
	s = i;
	while (i < n && is_tchar(p[i]))
		i++;
	if (i >= n)
		return 0;
	if (p[i] != ' ' || i == s)
		return BAD;
	if (i - s == 3 && memcmp(p + s, "GET", 3) == 0)
		req->method = HTTP_METHOD_GET;
	else if (i - s == 4 && memcmp(p + s, "HEAD", 4) == 0)
		req->method = HTTP_METHOD_HEAD;
	else
		req->method = HTTP_METHOD_OTHER;
	i++;

	s = i;
	while (i < n && p[i] > 0x20 && p[i] < 0x7f)
		i++;
	if (i >= n)
		return 0;
	if (p[i] != ' ' || i == s)
		return BAD;
	req->target = (const char *)p + s;
	req->target_len = i - s;
	i++;

	for (k = 0; k < 5; k++, i++) {
		if (i >= n)
			return 0;
		if (p[i] != (unsigned char)proto[k])
			return BAD;
	}
	if (i + 3 > n) {
		/* need "1.x"; check what is there so garbage fails early */
		for (k = 0; i + k < n; k++)
			if (k == 0 ? p[i] != '1' :
			    k == 1 ? p[i + 1] != '.' : (p[i + k] < '0' || p[i + k] > '9'))
				return BAD;
		return 0;
	}
	if (p[i] != '1' || p[i + 1] != '.' || p[i + 2] < '0' || p[i + 2] > '9')
		return BAD; /* HTTP/0.x, HTTP/2+ and anything malformed */
	req->version_minor = p[i + 2] == '0' ? 0 : 1;
	i += 3;
	if ((r = expect_crlf(p, n, &i)) <= 0)
		return r;

	/* *( field-line CRLF ) CRLF; field-line = field-name ":" OWS field-value OWS */
	for (;;) {
		size_t ns, nl, vs, ve;

		if (i >= n)
			return 0;
		if (p[i] == '\r' || p[i] == '\n') {
			if ((r = expect_crlf(p, n, &i)) <= 0)
				return r;
			break;
		}
		ns = i;
		while (i < n && is_tchar(p[i]))
			i++;
		if (i >= n)
			return 0;
		/* no name, whitespace before the colon, obs-fold (RFC 9112 5.1, 5.2): all 400 */
		if (p[i] != ':' || i == ns)
			return BAD;
		nl = i - ns;
		i++;
		while (i < n && is_ows(p[i]))
			i++;
		vs = i;
		while (i < n && is_field_char(p[i]))
			i++;
		ve = i;
		if ((r = expect_crlf(p, n, &i)) <= 0)
			return r;
		while (ve > vs && is_ows(p[ve - 1]))
			ve--;
		if (interpret_field(p + ns, nl, p + vs, ve - vs, &f) < 0)
			return BAD;
	}

	if (req->version_minor == 1 && f.hosts == 0)
		return BAD; /* RFC 9112 3.2: a server MUST answer 400 */
	if (f.transfer_encoding && f.content_lengths)
		return BAD;
	if ((req->method == HTTP_METHOD_GET || req->method == HTTP_METHOD_HEAD) &&
	    (f.transfer_encoding || f.content_length_nonzero))
		return BAD;
	req->has_host = f.hosts > 0;
	if (f.conn_close)
		req->keep_alive = false;
	else
		req->keep_alive = req->version_minor == 1 || f.conn_keep_alive;
	return (long)i;
}

long http_parse_request(const char *buf, size_t len, size_t max_head, struct http_request *req)
{
	size_t n = len < max_head ? len : max_head;
	long r;

	memset(req, 0, sizeof(*req));
	req->method = HTTP_METHOD_NONE;
	r = parse_head((const unsigned char *)buf, n, req);
	if (r == 0 && len >= max_head)
		return BAD; /* no complete head within the bound */
	return r;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int http_target_path(const char *target, size_t len, char *out, size_t out_cap)
{
	size_t i, o = 0, seg;

	if (out_cap == 0)
		return BAD;
	/* absolute-form (RFC 9112 3.2.2): servers must accept it; the authority is ignored
	 * like Host is (one site per server) and the path follows it */
	i = 0;
	if (len >= 7 && strncasecmp(target, "http://", 7) == 0)
		i = 7;
	else if (len >= 8 && strncasecmp(target, "https://", 8) == 0)
		i = 8;
	if (i > 0) {
		size_t a = i;
		while (i < len && target[i] != '/' && target[i] != '?' && target[i] != '#')
			i++;
		if (i == a)
			return BAD; /* no authority */
		if (i == len || target[i] != '/') {
			if (out_cap < 2)
				return BAD;
			out[0] = '/';
			out[1] = '\0';
			return 0;
		}
		target += i;
		len -= i;
	}
	if (len == 0 || target[0] != '/')
		return BAD; /* "*" (asterisk-form) and anything else */
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)target[i];
		if (c == '?' || c == '#')
			break;
		if (c == '%') {
			int hi, lo;
			if (i + 2 >= len)
				return BAD;
			hi = hexval((unsigned char)target[i + 1]);
			lo = hexval((unsigned char)target[i + 2]);
			if (hi < 0 || lo < 0)
				return BAD;
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
			if (c < 0x20 || c == 0x7f)
				return BAD; /* NUL and controls have no place in a file name here */
		}
		if (c == '\\')
			return BAD;
		if (o + 1 >= out_cap)
			return BAD;
		out[o++] = (char)c;
	}
	out[o] = '\0';

	/* After decoding: no "." or ".." segment anywhere (covers %2e%2e and ..%2f). */
	for (seg = 0; seg < o;) {
		size_t e = seg + 1, l;
		while (e < o && out[e] != '/')
			e++;
		l = e - seg - 1;
		if ((l == 1 && out[seg + 1] == '.') ||
		    (l == 2 && out[seg + 1] == '.' && out[seg + 2] == '.'))
			return BAD;
		seg = e;
	}
	return 0;
}

const char *http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default:  return "Unknown";
	}
}

/* Appends to out[*n..cap); false once it does not fit.  (snprintf was a tenth of the
 * server's CPU time under load; a response head is a few memcpys.) */
static bool put(char *out, size_t cap, size_t *n, const char *s, size_t len)
{
	if (len > cap - *n)
		return false;
	memcpy(out + *n, s, len);
	*n += len;
	return true;
}

static bool put_str(char *out, size_t cap, size_t *n, const char *s)
{
	return put(out, cap, n, s, strlen(s));
}

static bool put_uint(char *out, size_t cap, size_t *n, unsigned long long v)
{
	char digits[24];
	size_t i = sizeof(digits);

	do {
		digits[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return put(out, cap, n, digits + i, sizeof(digits) - i);
}

#define PUT_LIT(lit) put(out, cap, &n, lit, sizeof(lit) - 1)

size_t http_response_head(char *out, size_t cap, int status, const char *content_type,
			  size_t content_length, enum http_conn_header conn, bool allow,
			  const char *date)
{
	size_t n = 0;
	bool ok;

	if (status < 100 || status > 999)
		return 0;
	ok = PUT_LIT("HTTP/1.1 ") && put_uint(out, cap, &n, (unsigned)status) && PUT_LIT(" ") &&
	     put_str(out, cap, &n, http_reason(status)) && PUT_LIT("\r\nServer: mstack-httpd\r\n");
	if (ok && date)
		ok = PUT_LIT("Date: ") && put_str(out, cap, &n, date) && PUT_LIT("\r\n");
	if (ok && content_type)
		ok = PUT_LIT("Content-Type: ") && put_str(out, cap, &n, content_type) &&
		     PUT_LIT("\r\n");
	ok = ok && PUT_LIT("Content-Length: ") && put_uint(out, cap, &n, content_length) &&
	     PUT_LIT("\r\n");
	if (ok && allow)
		ok = PUT_LIT("Allow: GET, HEAD\r\n");
	if (ok && conn == HTTP_CONN_CLOSE)
		ok = PUT_LIT("Connection: close\r\n");
	else if (ok && conn == HTTP_CONN_KEEP_ALIVE)
		ok = PUT_LIT("Connection: keep-alive\r\n");
	/* NUL-terminated for tests and logs; not part of the length */
	ok = ok && PUT_LIT("\r\n") && n < cap;
	if (!ok)
		return 0;
	out[n] = '\0';
	return n;
}

#undef PUT_LIT

void http_format_date(long long unix_seconds, char *out, size_t cap)
{
	time_t t = (time_t)unix_seconds;
	struct tm tm;

	if (cap == 0)
		return;
	if (!gmtime_r(&t, &tm) || strftime(out, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
		out[0] = '\0';
}
