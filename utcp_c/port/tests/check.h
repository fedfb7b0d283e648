/* check.h — the smallest test harness: CHECK() records a failure with its line and goes on,
 * RUN() runs one test function, and main() returns non-zero if anything failed. */
#ifndef MSPORT_CHECK_H
#define MSPORT_CHECK_H

#include <stdio.h>

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

#define RUN(fn)                                                                      \
	do {                                                                         \
		int check_before_ = check_failures;                                  \
		check_current = #fn;                                                 \
		fn();                                                                \
		printf("%s %s\n", check_failures == check_before_ ? "ok  " : "FAIL", #fn); \
	} while (0)

#define CHECK_DONE() (check_failures ? (fprintf(stderr, "%d failure(s)\n", check_failures), 1) : 0)

#endif /* MSPORT_CHECK_H */
