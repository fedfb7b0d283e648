/* shim.h — the shim's process-wide state and its logging. */
#ifndef MSTACK_SHIM_H
#define MSTACK_SHIM_H

#include "policy.h"

#define SHIM_EXPORT __attribute__((visibility("default")))

/* Environment the shim needs across exec: captured at load, before the application can
 * change its environment, and put back into any exec that drops it. */
enum { SHIM_ENV_PRELOAD, SHIM_ENV_POLICY, SHIM_ENV_RUN_DIR, SHIM_ENV_VERBOSE, SHIM_ENV_N };

struct shim_state {
	int have_policy;
	int verbose;
	struct mstack_policy policy;
	char *env[SHIM_ENV_N];          /* "NAME=value" or NULL */
	const char *self_path;          /* this library's path, for LD_PRELOAD */
	unsigned long warned_listen[2]; /* listed endpoints already reported (bitmaps) */
	unsigned long warned_connect[2];
};

extern struct shim_state shim;

void shim_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A copy of envp with the shim's variables put back where missing (NULL-terminated,
 * malloc'ed: free with shim_free_env), or NULL on allocation failure. */
char **shim_fix_env(char *const envp[]);
void shim_free_env(char **env);

#endif
