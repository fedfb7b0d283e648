/* The C scenarios' common ground (compat.h) and main(): `compat-scenarios NAME` runs one
 * scenario, `--list` prints the table. Exit status 1 when an expectation failed. */
#include "compat.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct compat_env env;
int compat_failures;
static int n_expects;

static char line[65536];
static size_t llen;
static int first_field;

static void put(const char *s)
{
	size_t n = strlen(s);

	if (llen + n >= sizeof(line) - 2)
		n = sizeof(line) - 2 - llen;
	memcpy(line + llen, s, n);
	llen += n;
}

static void put_json_str(const char *s)
{
	char esc[8];

	put("\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			esc[2] = 0;
			put(esc);
		} else if (c < 0x20 || c > 0x7e) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(esc);
		} else {
			esc[0] = (char)c;
			esc[1] = 0;
			put(esc);
		}
	}
	put("\"");
}

static void key(const char *k)
{
	put(first_field ? "" : ",");
	first_field = 0;
	put_json_str(k);
	put(":");
}

void ob_begin(const char *call)
{
	llen = 0;
	first_field = 1;
	put("{");
	key("call");
	put_json_str(call);
}

void ob_int(const char *k, long v)
{
	char buf[32];

	key(k);
	snprintf(buf, sizeof(buf), "%ld", v);
	put(buf);
}

void ob_str(const char *k, const char *v)
{
	key(k);
	if (v)
		put_json_str(v);
	else
		put("null");
}

void ob_raw(const char *k, const char *json)
{
	key(k);
	put(json);
}

void ob_end(void)
{
	put("}\n");
	line[llen] = 0;
	fputs(line, stdout);
	fflush(stdout);
}

const char *errname(int e)
{
	const char *n = strerrorname_np(e);

	return n ? n : "E?";
}

long rec(const char *call, long ret)
{
	int e = errno;

	ob_begin(call);
	ob_int("ret", ret);
	if (ret < 0)
		ob_str("errno", errname(e));
	ob_end();
	errno = e;
	return ret;
}

int recfd(const char *call, int ret)
{
	int e = errno;

	ob_begin(call);
	if (ret >= 0) {
		ob_str("ret", "fd");
	} else {
		ob_int("ret", ret);
		ob_str("errno", errname(e));
	}
	ob_end();
	errno = e;
	return ret;
}

long recdata(const char *call, long ret, const void *buf)
{
	int e = errno;
	char hex[17];

	ob_begin(call);
	ob_int("ret", ret);
	if (ret < 0) {
		ob_str("errno", errname(e));
	} else {
		hexsum(fnv(buf, (size_t)ret, FNV_INIT), hex);
		ob_str("sum", hex);
	}
	ob_end();
	errno = e;
	return ret;
}

void expect(int ok, const char *what)
{
	n_expects++;
	if (!ok)
		compat_failures++;
	printf("{\"expect\":");
	llen = 0;
	put_json_str(what);
	line[llen] = 0;
	printf("%s,\"ok\":%s}\n", line, ok ? "true" : "false");
	fflush(stdout);
}

void pattern(uint8_t *buf, size_t off, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(((off + i) * 31 + 7) % 251);
}

uint64_t fnv(const void *buf, size_t n, uint64_t h)
{
	const uint8_t *p = buf;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

uint64_t pattern_sum(size_t off, size_t n)
{
	uint8_t buf[4096];
	uint64_t h = FNV_INIT;

	while (n) {
		size_t k = n < sizeof(buf) ? n : sizeof(buf);
		pattern(buf, off, k);
		h = fnv(buf, k, h);
		off += k;
		n -= k;
	}
	return h;
}

void hexsum(uint64_t h, char out[17])
{
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* -- the peer ------------------------------------------------------------------------- */

static int ctl_fd = -1;
static char reply[65536];

int peer_ctl_fd(void)
{
	return ctl_fd;
}

void peer_adopt(int fd)
{
	ctl_fd = fd;
}

static void die(const char *what)
{
	fprintf(stderr, "compat: %s: %s\n", what, strerror(errno));
	exit(2);
}

void peer_open(void)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };

	ctl_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ctl_fd < 0)
		die("control socket");
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", env.peer_path);
	if (connect(ctl_fd, (struct sockaddr *)&un, sizeof(un)) < 0)
		die("connect to the peer");
}

const char *peer_cmd(const char *fmt, ...)
{
	char req[512];
	va_list ap;
	size_t n = 0;
	int len;

	if (ctl_fd < 0)
		peer_open();
	va_start(ap, fmt);
	len = vsnprintf(req, sizeof(req) - 1, fmt, ap);
	va_end(ap);
	if (len < 0 || len >= (int)sizeof(req) - 1)
		die("peer request too long");
	req[len++] = '\n';
	if (write(ctl_fd, req, (size_t)len) != len)
		die("write to the peer");
	/* The reply: one line; the peer answers within its own bounded waits. */
	while (n < sizeof(reply) - 1) {
		struct pollfd p = { .fd = ctl_fd, .events = POLLIN };
		ssize_t k;

		if (poll(&p, 1, 30000) <= 0)
			die("no reply from the peer");
		k = read(ctl_fd, reply + n, 1);
		if (k <= 0)
			die("peer closed the control connection");
		if (reply[n] == '\n')
			break;
		n++;
	}
	reply[n] = 0;
	if (strncmp(reply, "err", 3) == 0) {
		fprintf(stderr, "compat: peer: %s\n", reply);
		exit(2);
	}
	return reply;
}

void peer_go(void)
{
	peer_cmd("go");
}

const char *peer_result(void)
{
	const char *r = peer_cmd("result");

	if (strncmp(r, "result ", 7) != 0)
		die("bad result from the peer");
	ob_begin("peer");
	ob_raw("reports", r + 7);
	ob_end();
	return r + 7;
}

/* The n-th object of the list, then "key": value inside it. Our own peer's output only. */
static const char *field_at(const char *json, int n, const char *k)
{
	const char *p = json;
	char pat[64];

	for (int i = 0; i <= n; i++) {
		p = strchr(p, '{');
		if (!p)
			return NULL;
		p++;
	}
	snprintf(pat, sizeof(pat), "\"%s\": ", k);
	p = strstr(p, pat);
	return p ? p + strlen(pat) : NULL;
}

long peer_field_int(const char *json, int n, const char *k)
{
	const char *p = field_at(json, n, k);

	return p ? strtol(p, NULL, 10) : -1;
}

int peer_field_is(const char *json, int n, const char *k, const char *value)
{
	const char *p = field_at(json, n, k);
	size_t len = strlen(value);

	return p && *p == '"' && strncmp(p + 1, value, len) == 0 && p[1 + len] == '"';
}

/* -- hold ------------------------------------------------------------------------------ */

void hold(int fd, int conn)
{
	struct sockaddr_in a = { 0 }, b = { 0 };
	socklen_t la = sizeof(a), lb = sizeof(b);
	char c;

	if (getsockname(fd, (struct sockaddr *)&a, &la) < 0)
		a.sin_port = 0;
	if (getpeername(fd, (struct sockaddr *)&b, &lb) < 0)
		b.sin_port = 0;
	printf("@hold pid=%ld lport=%u rport=%u conn=%d\n", (long)getpid(), ntohs(a.sin_port),
	       ntohs(b.sin_port), conn);
	fflush(stdout);
	for (int i = 0; i < 64; i++) {
		struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };

		if (poll(&p, 1, 30000) <= 0 || read(STDIN_FILENO, &c, 1) != 1)
			die("no go from the harness after a hold");
		if (c == '\n')
			return;
	}
}

/* -- sockets ----------------------------------------------------------------------------- */

static int sa_of(struct sockaddr_storage *ss, const char *ip, int port)
{
	struct sockaddr_in *in = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof(*ss));
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, ip, &in->sin_addr) != 1)
		die("bad address");
	return (int)sizeof(*in);
}

int sa_remote(struct sockaddr_storage *ss, int port_off)
{
	return sa_of(ss, env.remote_ip, env.port + port_off);
}

int sa_host(struct sockaddr_storage *ss, int port_off, int wildcard)
{
	return sa_of(ss, wildcard ? "0.0.0.0" : env.host_ip, env.port + port_off);
}

int tcp_socket(int flags)
{
	return recfd("socket", socket(AF_INET, SOCK_STREAM | flags, 0));
}

int tcp_connect(int port_off)
{
	struct sockaddr_storage ss;
	int len = sa_remote(&ss, port_off);
	int fd = tcp_socket(0);

	rec("connect", connect(fd, (struct sockaddr *)&ss, (socklen_t)len));
	return fd;
}

int tcp_listen(int port_off, int reuseaddr)
{
	struct sockaddr_storage ss;
	int len = sa_host(&ss, port_off, 0);
	int fd = tcp_socket(0);
	int one = 1;

	if (reuseaddr)
		rec("setsockopt SO_REUSEADDR",
		    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)));
	rec("bind", bind(fd, (struct sockaddr *)&ss, (socklen_t)len));
	rec("listen", listen(fd, 16));
	return fd;
}

int wait_ev(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	double end = now_s() + timeout_ms / 1000.0;

	for (int i = 0; i < 1000; i++) {
		int left = (int)((end - now_s()) * 1000);
		int r = poll(&p, 1, left > 0 ? left : 0);

		if (r > 0 && (p.revents & (events | POLLERR | POLLHUP | POLLNVAL)))
			return p.revents;
		if (r == 0 || left <= 0)
			return 0;
	}
	return 0;
}

static size_t pat_off;

long send_pat(int fd, size_t n, int flags)
{
	uint8_t buf[65536];

	if (n > sizeof(buf))
		n = sizeof(buf);
	pattern(buf, pat_off, n);
	long r = send(fd, buf, n, flags);
	if (r > 0)
		pat_off += (size_t)r;
	return r;
}

/* Read up to n bytes, until end of stream or an error (the last return value is recorded). */
long recv_all(int fd, size_t n, uint64_t *sum)
{
	uint8_t buf[65536];
	size_t got = 0;
	long r = 0;

	*sum = FNV_INIT;
	for (int i = 0; i < 100000 && got < n; i++) {
		size_t want = n - got < sizeof(buf) ? n - got : sizeof(buf);
		r = recv(fd, buf, want, 0);
		if (r <= 0)
			break;
		*sum = fnv(buf, (size_t)r, *sum);
		got += (size_t)r;
	}
	if (r < 0 && got == 0)
		return r;
	return (long)got;
}

/* n bytes to an echoing peer and back, recorded and checked. */
void echo_check(int fd, size_t n)
{
	size_t off = pat_off;
	uint64_t sum;
	char hex[17];
	long r;

	rec("send", send_pat(fd, n, 0));
	r = recv_all(fd, n, &sum);
	hexsum(sum, hex);
	ob_begin("recv echo");
	ob_int("ret", r);
	ob_str("sum", hex);
	ob_end();
	expect(r == (long)n && sum == pattern_sum(off, n), "the echo came back intact");
}

char *mask_str(int ev, char *buf, size_t len)
{
	static const struct { int bit; const char *name; } names[] = {
		{ POLLIN, "IN" }, { POLLPRI, "PRI" }, { POLLOUT, "OUT" }, { POLLRDHUP, "RDHUP" },
		{ POLLERR, "ERR" }, { POLLHUP, "HUP" }, { POLLNVAL, "NVAL" },
	};
	size_t n = 0;

	buf[0] = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (ev & names[i].bit)
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? "|" : "", names[i].name);
	return buf;
}

char *epmask_str(uint32_t ev, char *buf, size_t len)
{
	static const struct { uint32_t bit; const char *name; } names[] = {
		{ EPOLLIN, "IN" }, { EPOLLPRI, "PRI" }, { EPOLLOUT, "OUT" }, { EPOLLRDHUP, "RDHUP" },
		{ EPOLLERR, "ERR" }, { EPOLLHUP, "HUP" },
	};
	size_t n = 0;

	buf[0] = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (ev & names[i].bit)
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? "|" : "", names[i].name);
	return buf;
}

double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* -- main -------------------------------------------------------------------------------- */

static const char *need(const char *name)
{
	const char *v = getenv(name);

	if (!v || !*v) {
		fprintf(stderr, "compat: %s is not set (the harness sets it)\n", name);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	const char *u;

	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		for (size_t i = 0; i < n_scenarios; i++)
			printf("%s %s %s %s\n", scenarios[i].name, scenarios[i].kind,
			       scenarios[i].differential ? "differential" : "shim-only",
			       scenarios[i].about);
		return 0;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: %s --list | SCENARIO\n", argv[0]);
		return 2;
	}
	env.host_ip = need("COMPAT_HOST");
	env.remote_ip = need("COMPAT_REMOTE");
	env.peer_path = need("COMPAT_PEER");
	env.port = atoi(need("COMPAT_PORT"));
	u = getenv("COMPAT_UNDER_SHIM");
	env.under_shim = u && u[0] == '1';
	signal(SIGALRM, SIG_DFL);
	alarm(60); /* a watchdog: a scenario that hangs dies instead of blocking the suite */
	for (size_t i = 0; i < n_scenarios; i++) {
		if (strcmp(argv[1], scenarios[i].name) == 0) {
			scenarios[i].fn();
			if (n_expects == 0)
				expect(0, "the scenario checked something");
			return compat_failures ? 1 : 0;
		}
	}
	fprintf(stderr, "compat: no scenario %s\n", argv[1]);
	return 2;
}
