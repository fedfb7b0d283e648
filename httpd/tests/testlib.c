/* testlib.c — temporary document roots for mstack-httpd's tests (the runner itself is
 * utcp_c/tests/testlib.c). */
#include "testlib.h"

#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

char *test_mkroot(void)
{
	char tmpl[] = "/tmp/mstack-httpd-test-XXXXXX";
	char *d = mkdtemp(tmpl);

	if (!d)
		FAIL("mkdtemp: %s", strerror(errno));
	return strdup(d);
}

/* Writes root/rel, creating the directories on the way. */
void test_put(const char *root, const char *rel, const void *data, size_t len)
{
	char path[4096];
	char *p;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	for (p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			FAIL("mkdir %s: %s", path, strerror(errno));
		*p = '/';
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		FAIL("open %s: %s", path, strerror(errno));
	if (len && write(fd, data, len) != (ssize_t)len)
		FAIL("write %s", path);
	close(fd);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void test_rmroot(char *root)
{
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(root);
}
