/* files.h — the document root, mapped once at start: every regular file read-only in
 * memory, found by request path through a hash table.  Immutable after loading, so any
 * number of connections (and, later, stacks) read it without locks. */
#ifndef MSTACK_HTTPD_FILES_H
#define MSTACK_HTTPD_FILES_H

#include <stddef.h>

struct httpd_file {
	const char *data;         /* mapped read-only; NULL for an empty file */
	size_t len;
	const char *content_type; /* by extension; application/octet-stream otherwise */
};

struct httpd_files;

/* Walks root once (depth-first, at most HTTPD_FILES_MAX_DEPTH levels) and maps every
 * regular file.  Symbolic links are followed only to regular files inside root; symlinked
 * directories are skipped (no loops).  Keys are "/a/b.html"; a directory with an
 * index.html also answers to "/a" and "/a/" ("/" for root).  0 or a negative errno, with a
 * one-line reason in err. */
#define HTTPD_FILES_MAX_DEPTH 32
int httpd_files_load(const char *root, struct httpd_files **out, char *err, size_t errlen);

/* The file for a decoded request path (as http_target_path() makes it), or NULL. */
const struct httpd_file *httpd_files_lookup(const struct httpd_files *fs, const char *path,
					    size_t len);

size_t httpd_files_count(const struct httpd_files *fs);
size_t httpd_files_bytes(const struct httpd_files *fs);
void httpd_files_free(struct httpd_files *fs);

/* The Content-Type for a file name (by its extension, case-insensitive). */
const char *httpd_content_type(const char *name);

#endif
