/* files.c — walking and mapping the document root, and the path -> file hash table
 * (open addressing, linear probing, FNV-1a; built once, at most half full). */
#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct file_entry {
	struct httpd_file file;
	size_t map_len; /* what to munmap (0: nothing mapped) */
};

struct key_entry {
	char *key;
	size_t key_len;
	uint64_t hash;
	size_t file; /* index into files[] */
};

struct httpd_files {
	struct file_entry *files;
	size_t nfiles, files_cap;
	struct key_entry *keys; /* collected during the walk, then hashed */
	size_t nkeys, keys_cap;
	struct key_entry **table;
	size_t table_mask;
	size_t bytes;
	char root_real[PATH_MAX];
};

static const struct {
	const char *ext;
	const char *type;
} content_types[] = {
	{ "html", "text/html; charset=utf-8" },
	{ "htm", "text/html; charset=utf-8" },
	{ "txt", "text/plain; charset=utf-8" },
	{ "css", "text/css" },
	{ "js", "text/javascript" },
	{ "mjs", "text/javascript" },
	{ "json", "application/json" },
	{ "xml", "application/xml" },
	{ "svg", "image/svg+xml" },
	{ "png", "image/png" },
	{ "jpg", "image/jpeg" },
	{ "jpeg", "image/jpeg" },
	{ "gif", "image/gif" },
	{ "webp", "image/webp" },
	{ "ico", "image/x-icon" },
	{ "pdf", "application/pdf" },
	{ "wasm", "application/wasm" },
	{ "woff2", "font/woff2" },
};

const char *httpd_content_type(const char *name)
{
	const char *slash = strrchr(name, '/');
	const char *dot = strrchr(slash ? slash : name, '.');
	size_t i;

	if (dot && dot[1]) {
		for (i = 0; i < sizeof(content_types) / sizeof(content_types[0]); i++)
			if (strcasecmp(dot + 1, content_types[i].ext) == 0)
				return content_types[i].type;
	}
	return "application/octet-stream";
}

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int add_key(struct httpd_files *fs, const char *key, size_t file)
{
	struct key_entry *k;

	if (fs->nkeys == fs->keys_cap) {
		size_t cap = fs->keys_cap ? fs->keys_cap * 2 : 64;
		struct key_entry *nk = realloc(fs->keys, cap * sizeof(*nk));
		if (!nk)
			return -ENOMEM;
		fs->keys = nk;
		fs->keys_cap = cap;
	}
	k = &fs->keys[fs->nkeys];
	k->key = strdup(key);
	if (!k->key)
		return -ENOMEM;
	k->key_len = strlen(key);
	k->hash = fnv1a(k->key, k->key_len);
	k->file = file;
	fs->nkeys++;
	return 0;
}

/* Maps an open regular file; the fd is closed by the caller.  Returns the file's index. */
static long add_file(struct httpd_files *fs, int fd, const struct stat *st, const char *key)
{
	struct file_entry *f;
	void *map = NULL;

	if (fs->nfiles == fs->files_cap) {
		size_t cap = fs->files_cap ? fs->files_cap * 2 : 64;
		struct file_entry *nf = realloc(fs->files, cap * sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		fs->files = nf;
		fs->files_cap = cap;
	}
	if (st->st_size > 0) {
		map = mmap(NULL, (size_t)st->st_size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED)
			return -errno;
	}
	f = &fs->files[fs->nfiles];
	f->file.data = map;
	f->file.len = (size_t)st->st_size;
	f->file.content_type = httpd_content_type(key);
	f->map_len = (size_t)st->st_size;
	fs->bytes += f->file.len;
	return (long)fs->nfiles++;
}

/* A symlink is served only if it resolves to a regular file under the root. */
static int open_symlink_target(struct httpd_files *fs, int dirfd, const char *name,
			       struct stat *st)
{
	char linkpath[PATH_MAX], real[PATH_MAX];
	size_t rl = strlen(fs->root_real);
	int fd, n;

	n = snprintf(linkpath, sizeof(linkpath), "/proc/self/fd/%d/%s", dirfd, name);
	if (n < 0 || (size_t)n >= sizeof(linkpath))
		return -ENAMETOOLONG;
	if (!realpath(linkpath, real))
		return -errno;
	if (strncmp(real, fs->root_real, rl) != 0 || (real[rl] != '/' && rl != 1))
		return -EXDEV; /* leaves the root */
	fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		return -EISDIR;
	}
	return fd;
}

static int walk(struct httpd_files *fs, int dirfd, char *path, size_t plen, int depth,
		char *err, size_t errlen)
{
	DIR *d;
	struct dirent *de;
	int rc = 0;

	if (depth > HTTPD_FILES_MAX_DEPTH)
		return 0; /* deeper trees are not served */
	d = fdopendir(dirfd);
	if (!d) {
		rc = -errno;
		close(dirfd);
		set_err(err, errlen, "opendir %s: %s", plen ? path : "/", strerror(-rc));
		return rc;
	}
	while (rc == 0 && (errno = 0, de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		size_t nlen = strlen(name);
		struct stat st;
		int fd;

		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		if (plen + 1 + nlen + 1 > PATH_MAX)
			continue;
		path[plen] = '/';
		memcpy(path + plen + 1, name, nlen + 1);
		if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue; /* vanished while walking */
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0)
				continue;
			rc = walk(fs, sub, path, plen + 1 + nlen, depth + 1, err, errlen);
			continue;
		}
		if (S_ISREG(st.st_mode))
			fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		else if (S_ISLNK(st.st_mode))
			fd = open_symlink_target(fs, dirfd, name, &st);
		else
			continue; /* fifos, sockets, devices: never */
		if (fd < 0)
			continue; /* unreadable or a link out of the root: not served */
		if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
			long idx = add_file(fs, fd, &st, path);
			if (idx < 0) {
				rc = (int)idx;
				set_err(err, errlen, "mmap %s: %s", path, strerror(-rc));
			} else {
				rc = add_key(fs, path, (size_t)idx);
			}
		}
		close(fd);
	}
	if (rc == 0 && errno != 0 && de == NULL) {
		rc = -errno;
		set_err(err, errlen, "readdir %s: %s", plen ? path : "/", strerror(-rc));
	}
	closedir(d);
	return rc;
}

static const struct key_entry *find(const struct httpd_files *fs, const char *key, size_t len,
				    uint64_t h)
{
	size_t i = (size_t)h & fs->table_mask;

	for (;; i = (i + 1) & fs->table_mask) {
		const struct key_entry *k = fs->table[i];
		if (!k)
			return NULL;
		if (k->hash == h && k->key_len == len && memcmp(k->key, key, len) == 0)
			return k;
	}
}

/* Directories answer with their index.html: "/d/index.html" also as "/d" and "/d/". */
static int add_directory_keys(struct httpd_files *fs)
{
	size_t n = fs->nkeys, i;
	static const char idx[] = "/index.html";
	const size_t il = sizeof(idx) - 1;

	for (i = 0; i < n; i++) {
		char dir[PATH_MAX];
		const struct key_entry *k = &fs->keys[i];
		size_t dl;
		int rc;

		if (k->key_len < il || memcmp(k->key + k->key_len - il, idx, il) != 0)
			continue;
		dl = k->key_len - il; /* "/d" (0 for the root) */
		memcpy(dir, k->key, dl);
		dir[dl] = '/';
		dir[dl + 1] = '\0';
		if ((rc = add_key(fs, dir, fs->keys[i].file)) < 0)
			return rc;
		if (dl > 0) {
			dir[dl] = '\0';
			if ((rc = add_key(fs, dir, fs->keys[i].file)) < 0)
				return rc;
		}
	}
	return 0;
}

static int build_table(struct httpd_files *fs)
{
	size_t cap = 16, i;

	while (cap < fs->nkeys * 2)
		cap *= 2;
	fs->table = calloc(cap, sizeof(*fs->table));
	if (!fs->table)
		return -ENOMEM;
	fs->table_mask = cap - 1;
	for (i = 0; i < fs->nkeys; i++) {
		struct key_entry *k = &fs->keys[i];
		size_t j = (size_t)k->hash & fs->table_mask;
		while (fs->table[j])
			j = (j + 1) & fs->table_mask;
		fs->table[j] = k;
	}
	return 0;
}

int httpd_files_load(const char *root, struct httpd_files **out, char *err, size_t errlen)
{
	struct httpd_files *fs;
	char path[PATH_MAX];
	int dirfd, rc;

	*out = NULL;
	fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	if (!realpath(root, fs->root_real)) {
		rc = -errno;
		set_err(err, errlen, "%s: %s", root, strerror(-rc));
		free(fs);
		return rc;
	}
	dirfd = open(fs->root_real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		rc = -errno;
		set_err(err, errlen, "%s: %s", root, strerror(-rc));
		free(fs);
		return rc;
	}
	path[0] = '\0';
	rc = walk(fs, dirfd, path, 0, 0, err, errlen);
	if (rc == 0)
		rc = add_directory_keys(fs);
	if (rc == 0)
		rc = build_table(fs);
	if (rc < 0) {
		if (rc == -ENOMEM)
			set_err(err, errlen, "out of memory");
		httpd_files_free(fs);
		return rc;
	}
	*out = fs;
	return 0;
}

const struct httpd_file *httpd_files_lookup(const struct httpd_files *fs, const char *path,
					    size_t len)
{
	const struct key_entry *k = find(fs, path, len, fnv1a(path, len));

	return k ? &fs->files[k->file].file : NULL;
}

size_t httpd_files_count(const struct httpd_files *fs)
{
	return fs->nfiles;
}

size_t httpd_files_bytes(const struct httpd_files *fs)
{
	return fs->bytes;
}

void httpd_files_free(struct httpd_files *fs)
{
	size_t i;

	if (!fs)
		return;
	for (i = 0; i < fs->nfiles; i++)
		if (fs->files[i].map_len)
			munmap((void *)fs->files[i].file.data, fs->files[i].map_len);
	for (i = 0; i < fs->nkeys; i++)
		free(fs->keys[i].key);
	free(fs->files);
	free(fs->keys);
	free(fs->table);
	free(fs);
}
