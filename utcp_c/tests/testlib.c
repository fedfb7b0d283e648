/* testlib.c — runner for TEST() cases: no args runs all, `--list` lists, names run those. */
#include "testlib.h"

#include <stdarg.h>
#include <stdlib.h>

#define MAX_TESTS 512

static struct {
	const char *name;
	test_fn fn;
} tests[MAX_TESTS];
static int ntests;
static jmp_buf fail_jmp;

void test_register(const char *name, test_fn fn)
{
	if (ntests == MAX_TESTS) {
		fprintf(stderr, "too many tests\n");
		exit(2);
	}
	tests[ntests].name = name;
	tests[ntests].fn = fn;
	ntests++;
}

void test_fail_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	longjmp(fail_jmp, 1);
}

static int run_one(int i)
{
	fprintf(stderr, "[ RUN  ] %s\n", tests[i].name);
	if (setjmp(fail_jmp)) {
		fprintf(stderr, "[ FAIL ] %s\n", tests[i].name);
		return 1;
	}
	tests[i].fn();
	fprintf(stderr, "[  OK  ] %s\n", tests[i].name);
	return 0;
}

int main(int argc, char **argv)
{
	int failed = 0, a, i;

	if (argc > 1 && strcmp(argv[1], "--list") == 0) {
		for (i = 0; i < ntests; i++)
			printf("%s\n", tests[i].name);
		return 0;
	}
	if (argc == 1) {
		for (i = 0; i < ntests; i++)
			failed += run_one(i);
		fprintf(stderr, "%d/%d passed\n", ntests - failed, ntests);
		return failed ? 1 : 0;
	}
	for (a = 1; a < argc; a++) {
		int found = 0;

		for (i = 0; i < ntests; i++)
			if (strcmp(tests[i].name, argv[a]) == 0) {
				failed += run_one(i);
				found = 1;
			}
		if (!found) {
			fprintf(stderr, "no such test: %s\n", argv[a]);
			failed++;
		}
	}
	return failed ? 1 : 0;
}
