/* testlib.h — mstack-httpd's tests use the project's C test runner (utcp_c/tests/testlib.h:
 * TEST(name), CHECK..., `--list` and one case by name), plus temporary document roots. */
#ifndef MSTACK_HTTPD_TESTLIB_H
#define MSTACK_HTTPD_TESTLIB_H

#include <stddef.h>

#include "../../utcp_c/tests/testlib.h"

char *test_mkroot(void);                                   /* a fresh directory under /tmp */
void test_put(const char *root, const char *rel, const void *data, size_t len);
void test_rmroot(char *root);                              /* removes the tree, frees root */

#endif
