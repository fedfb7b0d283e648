/* testlib.h — a tiny test runner: TEST(name) registers a case; each binary can
 * `--list` its cases and run one by name, so pytest runs one case per test. */
#ifndef UTCP_TESTLIB_H
#define UTCP_TESTLIB_H

#include <inttypes.h>
#include <setjmp.h>
#include <stdio.h>
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
#define CHECK_U32(a, b)                                                            \
	do {                                                                       \
		uint32_t va_ = (uint32_t)(a), vb_ = (uint32_t)(b);                  \
		if (va_ != vb_)                                                    \
			FAIL("%s == %s failed: %" PRIu32 " (0x%08" PRIx32 ") != %" PRIu32 \
			     " (0x%08" PRIx32 ")", #a, #b, va_, va_, vb_, vb_);         \
	} while (0)
#define CHECK_MEM(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)
#define CHECK_STR(a, b)                                                            \
	do {                                                                       \
		const char *sa_ = (a), *sb_ = (b);                                  \
		if (strcmp(sa_, sb_) != 0)                                         \
			FAIL("%s == %s failed: \"%s\" != \"%s\"", #a, #b, sa_, sb_);  \
	} while (0)

#endif
