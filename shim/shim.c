/* libmstack.so: the MultiStack socket shim, loaded with LD_PRELOAD by mstack-run.
 * It reads the policy mstack-run handed over (MSTACK_POLICY), decides per socket between UTCP
 * and the kernel, and keeps its environment across exec (exec.c). UTCP is not linked into
 * the shim yet: a socket the policy lists stays on the kernel and the shim says so, once per
 * listed endpoint — never a silent non-acceleration. MSTACK_VERBOSE=1 reports every decision. */
#include "shim.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct shim_state shim;

static const char *const env_names[SHIM_ENV_N] = {
	"LD_PRELOAD", MSTACK_POLICY_ENV, "MSTACK_RUN_DIR", "MSTACK_VERBOSE",
};

void shim_log(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof(buf), "libmstack[%ld]: ", (long)getpid());
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	/* One write: lines of concurrent processes do not interleave. */
	(void)!write(STDERR_FILENO, buf, (size_t)n);
}

__attribute__((constructor)) static void shim_init(void)
{
	const char *debug = getenv("MSTACK_DEBUG");
	const char *text = getenv(MSTACK_POLICY_ENV);
	const char *verbose = getenv("MSTACK_VERBOSE");
	char err[256];
	Dl_info info;

	for (int i = 0; i < SHIM_ENV_N; i++) {
		const char *v = getenv(env_names[i]);
		size_t n = strlen(env_names[i]);

		if (!v)
			continue;
		shim.env[i] = malloc(n + strlen(v) + 2);
		if (shim.env[i])
			sprintf(shim.env[i], "%s=%s", env_names[i], v);
	}
	if (dladdr((void *)shim_init, &info) && info.dli_fname)
		shim.self_path = info.dli_fname;
	shim.verbose = verbose && verbose[0] == '1';
	if (debug && debug[0] == '1')
		fprintf(stderr, "libmstack: loaded in pid %ld (%s)\n", (long)getpid(),
			shim.self_path ? shim.self_path : "?");
	if (!text)
		return;
	if (mstack_policy_parse(text, &shim.policy, err, sizeof(err))) {
		shim_log("bad %s (%s): every socket stays on the kernel", MSTACK_POLICY_ENV, err);
		return;
	}
	shim.have_policy = 1;
	if (shim.verbose)
		shim_log("policy of application %s: %u listen and %u connect entries", shim.policy.app,
			 shim.policy.n_listen, shim.policy.n_connect);
}

/* The real libc entry points. */
static void *real(const char *name)
{
	void *fn = dlsym(RTLD_NEXT, name);

	if (!fn) {
		shim_log("no %s in libc: %s", name, dlerror());
		abort();
	}
	return fn;
}

typedef int (*listen_fn)(int, int);
typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);

#define REAL(name) \
	static name##_fn real_##name; \
	if (!real_##name) \
		real_##name = (name##_fn)real(#name)

/* The IPv4 address and port of an AF_INET or IPv4-carrying AF_INET6 sockaddr (host byte
 * order); 0 if it carries no IPv4 (then the kernel keeps the socket). */
static int ipv4_of(const struct sockaddr *sa, socklen_t len, uint32_t *addr, uint16_t *port)
{
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const void *)sa;
		*addr = ntohl(in->sin_addr.s_addr);
		*port = ntohs(in->sin_port);
		return 1;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) {
			*addr = 0; /* [::] with IPV6_V6ONLY off takes IPv4 too */
		} else if (!memcmp(in6->sin6_addr.s6_addr, mapped, 12)) {
			memcpy(addr, in6->sin6_addr.s6_addr + 12, 4);
			*addr = ntohl(*addr);
		} else {
			return 0;
		}
		*port = ntohs(in6->sin6_port);
		return 1;
	}
	return 0;
}

static int is_tcp(int fd)
{
	int type = 0;
	socklen_t len = sizeof(type);

	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
}

static int first_match(const struct mstack_policy_ep *eps, unsigned n, uint32_t addr,
		       uint16_t port, int wildcard_only)
{
	for (unsigned i = 0; i < n; i++) {
		const struct mstack_policy_ep *ep = &eps[i];
		if (wildcard_only && ep->mask)
			continue;
		if ((addr & ep->mask) == ep->net && port >= ep->port_lo && port <= ep->port_hi)
			return (int)i;
	}
	return -1;
}

/* Say it, once per listed entry: a listed socket that stays on the kernel says why. */
static void fallback(unsigned long *warned, int entry, const char *what, uint32_t addr,
		     uint16_t port)
{
	unsigned long bit = 1ul << (entry % (int)(8 * sizeof(long)));
	unsigned long *word = &warned[entry / (int)(8 * sizeof(long))];

	if ((*word & bit) && !shim.verbose)
		return;
	*word |= bit;
	shim_log("%s %u.%u.%u.%u:%u is listed for UTCP (policy %s), but this shim has no UTCP yet: "
		 "it stays on the kernel", what, addr >> 24, addr >> 16 & 255, addr >> 8 & 255,
		 addr & 255, port, shim.policy.app);
}

SHIM_EXPORT int listen(int fd, int backlog)
{
	REAL(listen);
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	uint32_t addr;
	uint16_t port;

	if (shim.have_policy && is_tcp(fd) && getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
	    ipv4_of((struct sockaddr *)&ss, len, &addr, &port)) {
		int e = first_match(shim.policy.listen, shim.policy.n_listen, addr, port, addr == 0);
		if (e >= 0)
			fallback(shim.warned_listen, e, "listener", addr, port);
		else if (shim.verbose)
			shim_log("listener %u.%u.%u.%u:%u: kernel (not listed)", addr >> 24,
				 addr >> 16 & 255, addr >> 8 & 255, addr & 255, port);
	}
	return real_listen(fd, backlog);
}

SHIM_EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	REAL(connect);
	uint32_t addr;
	uint16_t port;

	if (shim.have_policy && sa && ipv4_of(sa, len, &addr, &port) && is_tcp(fd)) {
		int e = first_match(shim.policy.connect, shim.policy.n_connect, addr, port, 0);
		if ((addr >> 24) == 127)
			e = -1; /* destinations on this host are the kernel's by design */
		if (e >= 0)
			fallback(shim.warned_connect, e, "connection to", addr, port);
		else if (shim.verbose)
			shim_log("connection to %u.%u.%u.%u:%u: kernel (not listed)", addr >> 24,
				 addr >> 16 & 255, addr >> 8 & 255, addr & 255, port);
	}
	return real_connect(fd, sa, len);
}
