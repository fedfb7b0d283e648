/* testlib.h — mstack-httpd's tiny test runner: TEST(name) registers a case; a binary lists
 * its cases with `--list` and runs one by name (no argument: all), so pytest runs one case
 * per test. */
#ifndef MSTACK_HTTPD_TESTLIB_H
#define MSTACK_HTTPD_TESTLIB_H

#include <string.h>

typedef void (*test_fn)(void);
void test_register(const char *name, test_fn fn);
void test_fail_at(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

#define TEST(name)                                                                 \
	static void name(void);                                                    \
	__attribute__((constructor)) static void reg_##name(void)                 \
	{                                                                          \
		test_register(#name, name);                                        \
	}                                                                          \
	static void name(void)

#define FAIL(...) test_fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define CHECK(cond)                                                                \
	do {                                                                       \
		if (!(cond))                                                       \
			FAIL("CHECK(%s) failed", #cond);                           \
	} while (0)
#define CHECK_EQ(a, b)                                                             \
	do {                                                                       \
		long long va_ = (long long)(a), vb_ = (long long)(b);               \
		if (va_ != vb_)                                                    \
			FAIL("%s == %s failed: %lld != %lld", #a, #b, va_, vb_);     \
	} while (0)
#define CHECK_STR(a, b)                                                            \
	do {                                                                       \
		const char *sa_ = (a), *sb_ = (b);                                  \
		if (strcmp(sa_, sb_) != 0)                                         \
			FAIL("%s == %s failed: \"%s\" != \"%s\"", #a, #b, sa_, sb_);  \
	} while (0)


/* Temporary document roots for the files and conn tests. */
#include <stddef.h>
char *test_mkroot(void);                                   /* a fresh directory under /tmp */
void test_put(const char *root, const char *rel, const void *data, size_t len);
void test_rmroot(char *root);                              /* removes the tree, frees root */

#endif
