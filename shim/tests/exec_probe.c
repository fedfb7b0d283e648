/* exec_probe: runs under the shim and execs itself through one exec entry point with an
 * environment that drops the shim's variables; the exec'd "report" prints what it got. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv)
{
	char self[4096];
	char *const args[] = { "exec_probe", "report", NULL };
	char *env[] = { "TZ=UTC", NULL };
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	const char *mode = argc > 1 ? argv[1] : "report";

	if (n <= 0)
		return 2;
	self[n] = '\0';
	if (!strcmp(mode, "report")) {
		const char *p = getenv("LD_PRELOAD"), *q = getenv("MSTACK_POLICY");
		printf("LD_PRELOAD=%s\nMSTACK_POLICY=%s\nTZ=%s\n", p ? p : "", q ? q : "",
		       getenv("TZ") ? getenv("TZ") : "");
		return 0;
	}
	if (!strcmp(mode, "execve"))
		execve(self, args, env);
	else if (!strcmp(mode, "execvpe"))
		execvpe(self, args, env);
	else if (!strcmp(mode, "execle"))
		execle(self, "exec_probe", "report", (char *)NULL, env);
	else if (!strcmp(mode, "own-preload")) {
		char *own[] = { "LD_PRELOAD=libm.so.6", "TZ=UTC", NULL };
		execve(self, args, own);
	} else if (!strcmp(mode, "fail-then-exec")) {
		/* A failed exec returns: the shim's copies must be freed, nothing else. Then an
		 * environment whose LD_PRELOAD already names the shim (and more) is kept as is. */
		char pre[4200];
		const char *cur = getenv("LD_PRELOAD");
		snprintf(pre, sizeof(pre), "LD_PRELOAD=%s libm.so.6", cur ? cur : "");
		char *own[] = { pre, "TZ=UTC", NULL };
		if (execve("/nonexistent/prog", args, own) != -1)
			return 5;
		execve(self, args, own);
	} else {
		environ = env; /* the application replaced its whole environment */
		if (!strcmp(mode, "execv"))
			execv(self, args);
		else if (!strcmp(mode, "execvp"))
			execvp(self, args);
		else if (!strcmp(mode, "execl"))
			execl(self, "exec_probe", "report", (char *)NULL);
		else if (!strcmp(mode, "execlp"))
			execlp(self, "exec_probe", "report", (char *)NULL);
		else if (!strcmp(mode, "fexecve")) {
			int fd = open(self, O_RDONLY | O_CLOEXEC);
			fexecve(fd, args, env);
		} else if (!strcmp(mode, "posix_spawn") || !strcmp(mode, "posix_spawnp")) {
			pid_t pid;
			int st;
			int rc = mode[11] == 'p' ? posix_spawnp(&pid, self, NULL, NULL, args, env)
						 : posix_spawn(&pid, self, NULL, NULL, args, env);
			if (rc || waitpid(pid, &st, 0) != pid)
				return 3;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 4;
		} else {
			fprintf(stderr, "exec_probe: unknown mode %s\n", mode);
			return 2;
		}
	}
	perror("exec_probe: exec");
	return 1;
}
