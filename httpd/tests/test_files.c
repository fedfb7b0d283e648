/* test_files.c — the document root: what is mapped, under which keys, with which type, and
 * which links are refused. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "files.h"
#include "testlib.h"

static const struct httpd_file *get(const struct httpd_files *fs, const char *path)
{
	return httpd_files_lookup(fs, path, strlen(path));
}

static void link_at(const char *root, const char *target, const char *rel)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	if (symlink(target, path) < 0)
		FAIL("symlink %s: %s", path, strerror(errno));
}

TEST(files_keys_index_and_types)
{
	char *root = test_mkroot();
	struct httpd_files *fs;
	const struct httpd_file *f;
	char err[256];

	test_put(root, "index.html", "<h1>root</h1>", 13);
	test_put(root, "a.txt", "hello", 5);
	test_put(root, "empty.bin", "", 0);
	test_put(root, "sub/index.html", "sub", 3);
	test_put(root, "sub/deeper/style.CSS", "x{}", 3);
	test_put(root, "noindex/file.json", "{}", 2);
	CHECK_EQ(httpd_files_load(root, &fs, err, sizeof(err)), 0);
	CHECK_EQ(httpd_files_count(fs), 6);
	CHECK_EQ(httpd_files_bytes(fs), 13 + 5 + 3 + 3 + 2);

	f = get(fs, "/a.txt");
	CHECK(f && f->len == 5 && memcmp(f->data, "hello", 5) == 0);
	CHECK_STR(f->content_type, "text/plain; charset=utf-8");
	CHECK(get(fs, "/") == get(fs, "/index.html"));
	CHECK(get(fs, "/")->len == 13);
	CHECK(get(fs, "/sub") == get(fs, "/sub/index.html"));
	CHECK(get(fs, "/sub/") == get(fs, "/sub/index.html"));
	CHECK_STR(get(fs, "/sub")->content_type, "text/html; charset=utf-8");
	CHECK_STR(get(fs, "/sub/deeper/style.CSS")->content_type, "text/css");
	CHECK_STR(get(fs, "/noindex/file.json")->content_type, "application/json");
	f = get(fs, "/empty.bin");
	CHECK(f && f->len == 0);
	CHECK_STR(f->content_type, "application/octet-stream");
	CHECK(!get(fs, "/noindex"));
	CHECK(!get(fs, "/noindex/"));
	CHECK(!get(fs, "/a.txt/"));
	CHECK(!get(fs, "a.txt"));
	CHECK(!get(fs, "/A.TXT"));
	CHECK(!get(fs, "/sub/deeper"));
	CHECK(!get(fs, ""));
	httpd_files_free(fs);
	test_rmroot(root);
}

TEST(files_links_stay_inside_the_root)
{
	char *root = test_mkroot(), *outside = test_mkroot();
	char target[4096];
	struct httpd_files *fs;
	char err[256];

	test_put(root, "real.txt", "inside", 6);
	test_put(root, "dir/x.txt", "x", 1);
	test_put(outside, "secret.txt", "secret", 6);
	snprintf(target, sizeof(target), "%s/secret.txt", outside);
	link_at(root, target, "abs-out.txt");
	link_at(root, "../../../../../../../../etc/passwd", "rel-out.txt");
	link_at(root, "real.txt", "in.txt");
	link_at(root, "dir/../real.txt", "in2.txt");
	link_at(root, "dir", "dirlink");      /* a linked directory: not walked */
	link_at(root, ".", "loop");
	link_at(root, "nowhere", "dangling.txt");
	snprintf(target, sizeof(target), "%s/fifo", root);
	CHECK(mkfifo(target, 0644) == 0);

	CHECK_EQ(httpd_files_load(root, &fs, err, sizeof(err)), 0);
	CHECK(!get(fs, "/abs-out.txt"));
	CHECK(!get(fs, "/rel-out.txt"));
	CHECK(get(fs, "/in.txt") && memcmp(get(fs, "/in.txt")->data, "inside", 6) == 0);
	CHECK(get(fs, "/in2.txt"));
	CHECK(!get(fs, "/dirlink/x.txt"));
	CHECK(!get(fs, "/loop/real.txt"));
	CHECK(!get(fs, "/dangling.txt"));
	CHECK(!get(fs, "/fifo"));
	CHECK(get(fs, "/dir/x.txt"));
	CHECK_EQ(httpd_files_count(fs), 4); /* real, dir/x, in, in2 */
	httpd_files_free(fs);
	test_rmroot(root);
	test_rmroot(outside);
}

TEST(files_root_errors)
{
	struct httpd_files *fs = (struct httpd_files *)&fs;
	char err[256] = "";
	char *root = test_mkroot();
	char file[4096];

	CHECK_EQ(httpd_files_load("/nonexistent/mstack-httpd-root", &fs, err, sizeof(err)),
		 -ENOENT);
	CHECK(fs == NULL);
	CHECK(strstr(err, "/nonexistent/mstack-httpd-root"));
	test_put(root, "f", "x", 1);
	snprintf(file, sizeof(file), "%s/f", root);
	CHECK_EQ(httpd_files_load(file, &fs, err, sizeof(err)), -ENOTDIR);
	/* an empty root is fine: every request is a 404 */
	snprintf(file, sizeof(file), "%s/f", root);
	unlink(file);
	CHECK_EQ(httpd_files_load(root, &fs, err, sizeof(err)), 0);
	CHECK_EQ(httpd_files_count(fs), 0);
	CHECK(!get(fs, "/"));
	httpd_files_free(fs);
	test_rmroot(root);
}

TEST(files_content_types)
{
	CHECK_STR(httpd_content_type("/a/b.HTML"), "text/html; charset=utf-8");
	CHECK_STR(httpd_content_type("/x.png"), "image/png");
	CHECK_STR(httpd_content_type("/x.tar.gz"), "application/octet-stream");
	CHECK_STR(httpd_content_type("/dir.d/noext"), "application/octet-stream");
	CHECK_STR(httpd_content_type("/x."), "application/octet-stream");
	CHECK_STR(httpd_content_type("/.js"), "text/javascript");
}
