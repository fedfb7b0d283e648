/* check.h — the smallest test harness: CHECK() records a failure with its line and goes on;
 * check_main() runs the cases (all, or those named; `--list` names them, as the utcp_c
 * runner expects) and fails if any check did. */
#ifndef MSPORT_CHECK_H
#define MSPORT_CHECK_H

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static int check_failures;
static const char *check_current = "";

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "FAIL %s: %s:%d: %s\n", check_current, __FILE__, \
				__LINE__, #cond);                                    \
			check_failures++;                                            \
		}                                                                    \
	} while (0)

#define CHECK_EQ(a, b)                                                               \
	do {                                                                         \
		long long check_a_ = (long long)(a), check_b_ = (long long)(b);       \
		if (check_a_ != check_b_) {                                          \
			fprintf(stderr, "FAIL %s: %s:%d: %s == %s (%lld != %lld)\n",  \
				check_current, __FILE__, __LINE__, #a, #b, check_a_,  \
				check_b_);                                            \
			check_failures++;                                            \
		}                                                                    \
	} while (0)

struct check_case {
	const char *name;
	void (*fn)(void);
};

#define CHECK_CASE(fn) {#fn, fn}

/* No argument: run every case.  `--list`: print the case names.  NAME...: run those cases.
 * Exit status 1 if a check failed, 2 for an unknown case name. */
static inline int check_main(int argc, char **argv, const struct check_case *cases, size_t n)
{
	if (argc == 2 && !strcmp(argv[1], "--list")) {
		for (size_t i = 0; i < n; i++)
			printf("%s\n", cases[i].name);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		int wanted = argc < 2;

		for (int a = 1; a < argc; a++)
			wanted |= !strcmp(argv[a], cases[i].name);
		if (!wanted)
			continue;
		int before = check_failures;
		check_current = cases[i].name;
		cases[i].fn();
		printf("%s %s\n", check_failures == before ? "ok  " : "FAIL", cases[i].name);
	}
	for (int a = 1; a < argc; a++) {
		size_t i = 0;
		while (i < n && strcmp(argv[a], cases[i].name))
			i++;
		if (i == n) {
			fprintf(stderr, "no test case %s\n", argv[a]);
			return 2;
		}
	}
	if (check_failures)
		fprintf(stderr, "%d failure(s)\n", check_failures);
	return check_failures ? 1 : 0;
}

#endif /* MSPORT_CHECK_H */
