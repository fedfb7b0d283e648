/* libmstack.so: the MultiStack socket shim, loaded with LD_PRELOAD by mstack-run.
 * It reads the policy mstack-run handed over (MSTACK_POLICY) and carries the sockets it lists
 * on the process's own UTCP stack (sock.c, wait.c, proc.c); everything else stays on the
 * kernel.  It keeps its environment across exec (exec.c).  A listed socket that stays on the
 * kernel says why; MSTACK_VERBOSE=1 reports every decision. */
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
	"LD_PRELOAD", MSTACK_POLICY_ENV, "MSTACK_RUN_DIR", "MSTACK_VERBOSE", "MSTACK_AUTOCORK",
	"MSTACK_AUTOCORK_US",
};

#define AUTOCORK_US_DEFAULT 500 /* docs/shim.md, "Autocorking": why this bound */

/* MSTACK_AUTOCORK (0: off; default on) and MSTACK_AUTOCORK_US (the helper thread's bound),
 * read once at load: nginx's workers see none of the environment later. */
static void autocork_init(void)
{
	const char *on = getenv("MSTACK_AUTOCORK"), *us = getenv("MSTACK_AUTOCORK_US");

	shim.autocork = !(on && !strcmp(on, "0"));
	if (on && strcmp(on, "0") && strcmp(on, "1") && *on)
		shim_log("MSTACK_AUTOCORK=%s is not 0 or 1: autocorking stays on", on);
	shim.autocork_us = AUTOCORK_US_DEFAULT;
	if (us && *us) {
		char *end;
		unsigned long v = strtoul(us, &end, 10);

		if (*end || v < 20 || v > 200000)
			shim_log("MSTACK_AUTOCORK_US=%s is not a number in 20..200000: using %u", us,
				 AUTOCORK_US_DEFAULT);
		else
			shim.autocork_us = (uint32_t)v;
	}
}

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
	autocork_init();
	/* our copy, not getenv()'s pointer: nginx writes its process title over the original
	 * environment strings */
	if (shim.env[SHIM_ENV_RUN_DIR])
		shim.run_dir = strchr(shim.env[SHIM_ENV_RUN_DIR], '=') + 1;
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
	sock_adopt_inherited();
}

void *shim_real(const char *name)
{
	void *fn = dlsym(RTLD_NEXT, name);

	if (!fn) {
		shim_log("no %s in libc: %s", name, dlerror());
		abort();
	}
	return fn;
}
