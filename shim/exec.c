/* exec.c — the shim survives exec. A program may exec with an environment of its own
 * choosing (nginx's binary upgrade keeps only TZ): every exec entry point an ordinary binary
 * links gets the shim's variables (LD_PRELOAD with this library, the policy, the run
 * directory, verbosity) put back where they are missing. */
#include "shim.h"

#include <dlfcn.h>
#include <errno.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static int has_key(char *const envp[], const char *entry)
{
	size_t n = strcspn(entry, "=") + 1;

	for (size_t i = 0; envp && envp[i]; i++)
		if (!strncmp(envp[i], entry, n))
			return 1;
	return 0;
}

/* LD_PRELOAD=... that does not name this library gets it added in front. */
static char *preload_with_self(const char *entry)
{
	const char *self = shim.self_path;
	char *out;

	if (!self || strstr(entry, self))
		return NULL;
	out = malloc(strlen(entry) + strlen(self) + 2);
	if (out)
		sprintf(out, "LD_PRELOAD=%s %s", self, entry + strlen("LD_PRELOAD="));
	return out;
}

char **shim_fix_env(char *const envp[])
{
	size_t n = 0, k;
	char *merged = NULL;
	char **out;

	while (envp && envp[n])
		n++;
	/* n entries, up to SHIM_ENV_N added, the NULL, and after it the one string we may have
	 * allocated (the merged LD_PRELOAD), for shim_free_env. */
	out = calloc(n + SHIM_ENV_N + 2, sizeof(char *));
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		out[i] = envp[i];
		if (!merged && !strncmp(envp[i], "LD_PRELOAD=", 11)) {
			merged = preload_with_self(envp[i]);
			if (merged)
				out[i] = merged;
		}
	}
	k = n;
	for (int v = 0; v < SHIM_ENV_N; v++)
		if (shim.env[v] && !has_key(envp, shim.env[v]))
			out[k++] = shim.env[v];
	out[k] = NULL;
	out[k + 1] = merged;
	return out;
}

void shim_free_env(char **env)
{
	size_t n = 0;

	if (!env)
		return;
	while (env[n])
		n++;
	free(env[n + 1]);
	free(env);
}

typedef int (*execve_fn)(const char *, char *const[], char *const[]);
typedef int (*execvpe_fn)(const char *, char *const[], char *const[]);
typedef int (*fexecve_fn)(int, char *const[], char *const[]);
typedef int (*spawn_fn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
			const posix_spawnattr_t *, char *const[], char *const[]);

static void *next(const char *name)
{
	void *fn = dlsym(RTLD_NEXT, name);

	if (!fn)
		abort();
	return fn;
}

enum exec_kind { EXEC_VE, EXEC_VPE, EXEC_FVE };

/* One exec with the shim's environment put back; errno is the exec's. */
static int exec_fixed(enum exec_kind kind, const char *path, int fd, char *const argv[],
		      char *const envp[])
{
	static execve_fn real_execve;
	static execvpe_fn real_execvpe;
	static fexecve_fn real_fexecve;
	char **env = shim_fix_env(envp);
	char *const *use = env ? env : envp;
	int rc, e;

	sock_before_exec();
	switch (kind) {
	case EXEC_VE:
		if (!real_execve)
			real_execve = (execve_fn)next("execve");
		rc = real_execve(path, argv, use);
		break;
	case EXEC_VPE:
		if (!real_execvpe)
			real_execvpe = (execvpe_fn)next("execvpe");
		rc = real_execvpe(path, argv, use);
		break;
	default:
		if (!real_fexecve)
			real_fexecve = (fexecve_fn)next("fexecve");
		rc = real_fexecve(fd, argv, use);
		break;
	}
	e = errno;
	sock_exec_failed();
	shim_free_env(env);
	errno = e;
	return rc;
}

static int do_execve(const char *path, char *const argv[], char *const envp[])
{
	return exec_fixed(EXEC_VE, path, -1, argv, envp);
}

static int do_execvpe(const char *file, char *const argv[], char *const envp[])
{
	return exec_fixed(EXEC_VPE, file, -1, argv, envp);
}

SHIM_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	return do_execve(path, argv, envp);
}

SHIM_EXPORT int execv(const char *path, char *const argv[])
{
	return do_execve(path, argv, environ);
}

SHIM_EXPORT int execvp(const char *file, char *const argv[])
{
	return do_execvpe(file, argv, environ);
}

SHIM_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	return do_execvpe(file, argv, envp);
}

SHIM_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	return exec_fixed(EXEC_FVE, NULL, fd, argv, envp);
}

/* execl, execle, execlp: collect the variadic arguments (bounded), then as above. */
#define ARGS_MAX 4096

static char **collect(const char *arg0, va_list ap, char ***envp_out)
{
	char **argv = calloc(ARGS_MAX + 1, sizeof(char *));
	size_t i = 0;

	if (!argv)
		return NULL;
	argv[i++] = (char *)arg0;
	while (arg0 && i < ARGS_MAX && (argv[i] = va_arg(ap, char *)) != NULL)
		i++;
	if (i == ARGS_MAX) {
		free(argv);
		errno = E2BIG;
		return NULL;
	}
	if (envp_out)
		*envp_out = va_arg(ap, char **);
	return argv;
}

/* exec_fixed with an argv collect() made; frees it if the exec returns. */
static int exec_collected(enum exec_kind kind, const char *path, char **argv, char *const envp[])
{
	int rc, e;

	if (!argv)
		return -1;
	rc = exec_fixed(kind, path, -1, argv, envp);
	e = errno;
	free(argv);
	errno = e;
	return rc;
}

SHIM_EXPORT int execl(const char *path, const char *arg, ...)
{
	va_list ap;
	char **argv;

	va_start(ap, arg);
	argv = collect(arg, ap, NULL);
	va_end(ap);
	return exec_collected(EXEC_VE, path, argv, environ);
}

SHIM_EXPORT int execle(const char *path, const char *arg, ...)
{
	va_list ap;
	char **argv, **envp = NULL;

	va_start(ap, arg);
	argv = collect(arg, ap, &envp);
	va_end(ap);
	return exec_collected(EXEC_VE, path, argv, envp);
}

SHIM_EXPORT int execlp(const char *file, const char *arg, ...)
{
	va_list ap;
	char **argv;

	va_start(ap, arg);
	argv = collect(arg, ap, NULL);
	va_end(ap);
	return exec_collected(EXEC_VPE, file, argv, environ);
}

static int spawn(const char *name, pid_t *pid, const char *path,
		 const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *attr,
		 char *const argv[], char *const envp[])
{
	spawn_fn fn = (spawn_fn)next(name);
	char **env = shim_fix_env(envp);
	int rc;

	if (!env)
		return fn(pid, path, fa, attr, argv, envp);
	rc = fn(pid, path, fa, attr, argv, env);
	shim_free_env(env);
	return rc;
}

SHIM_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
			    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	return spawn("posix_spawn", pid, path, fa, attr, argv, envp);
}

SHIM_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
			     const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	return spawn("posix_spawnp", pid, file, fa, attr, argv, envp);
}
