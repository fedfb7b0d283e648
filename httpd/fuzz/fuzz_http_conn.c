/* fuzz_http_conn.c — libFuzzer target for the connection state machine (make -C httpd fuzz).
 * The input is what a peer sends; the first four bytes seed how it is cut into arrivals and
 * how much each write may take.  Property: the bytes the server writes do not depend on
 * that schedule (the reference run gets everything at once and writes without limit), no
 * write follows the FIN, and once the peer's FIN is there and writes are unlimited the
 * connection is done. */
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct httpd_files *files;
static struct httpd_server srv;

struct peer {
	const uint8_t *in;
	size_t len, avail, off;
	bool fin, fin_sent;
	size_t budget; /* SIZE_MAX: unlimited */
	uint8_t *out;
	size_t out_len, out_cap;
};

static long p_read(void *io, void *buf, size_t len)
{
	struct peer *p = io;
	size_t n = p->avail - p->off;

	if (n == 0)
		return p->fin && p->avail == p->len ? 0 : -EAGAIN;
	if (n > len)
		n = len;
	memcpy(buf, p->in + p->off, n);
	p->off += n;
	return (long)n;
}

static long p_writev(void *io, const struct iovec *iov, int cnt)
{
	struct peer *p = io;
	size_t total = 0;
	int i;

	if (p->fin_sent)
		abort(); /* a write after shutdown */
	if (p->budget == 0)
		return -EAGAIN;
	for (i = 0; i < cnt && p->budget; i++) {
		size_t n = iov[i].iov_len < p->budget ? iov[i].iov_len : p->budget;
		if (p->out_len + n > p->out_cap) {
			p->out_cap = (p->out_len + n) * 2;
			p->out = realloc(p->out, p->out_cap);
			if (!p->out)
				abort();
		}
		memcpy(p->out + p->out_len, iov[i].iov_base, n);
		p->out_len += n;
		if (p->budget != SIZE_MAX)
			p->budget -= n;
		total += n;
		if (n < iov[i].iov_len)
			break;
	}
	return (long)total;
}

static int p_shutdown(void *io)
{
	((struct peer *)io)->fin_sent = true;
	return 0;
}

static const struct httpd_io_ops peer_ops = { p_read, p_writev, p_shutdown, NULL };

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void put(const char *root, const char *rel, size_t len)
{
	char path[512];
	FILE *f;
	size_t i;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	f = fopen(path, "w");
	if (!f)
		abort();
	for (i = 0; i < len; i++)
		fputc('a' + (int)(i % 26), f);
	fclose(f);
}

/* A small root, mapped and then removed from disk: the mappings stay, nothing is left. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char tmpl[] = "/tmp/fuzz-httpd-XXXXXX", sub[512], err[256];
	char *root = mkdtemp(tmpl);

	(void)argc;
	(void)argv;
	if (!root)
		abort();
	put(root, "index.html", 40);
	put(root, "a", 1);
	put(root, "e", 0);
	put(root, "big", 20000);
	snprintf(sub, sizeof(sub), "%s/d", root);
	if (mkdir(sub, 0755) < 0)
		abort();
	put(root, "d/index.html", 7);
	if (httpd_files_load(root, &files, err, sizeof(err)) < 0)
		abort();
	nftw(root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	httpd_server_init(&srv, files);
	httpd_server_set_time(&srv, 784111777);
	return 0;
}

static uint32_t next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* Runs one schedule; returns the output (caller frees), its length in *n. */
static uint8_t *run(const uint8_t *in, size_t len, uint32_t seed, size_t *n)
{
	struct peer p = { .in = in, .len = len };
	struct httpd_conn *c = malloc(sizeof(*c));
	enum httpd_conn_status st = HTTPD_CONN_OPEN;
	uint64_t now = 1000;
	size_t steps = 0, limit = 8 * len + 64;

	if (!c)
		abort();
	httpd_conn_init(c, &srv, &peer_ops, &p, now);
	while (st == HTTPD_CONN_OPEN && p.avail < p.len) {
		uint32_t r = seed ? next(&seed) : 0;
		size_t chunk = seed ? 1 + r % 64 : p.len;
		if (++steps > limit)
			abort();
		p.avail = p.avail + chunk > p.len ? p.len : p.avail + chunk;
		p.budget = seed ? (r >> 8) % 300 : SIZE_MAX;
		st = httpd_conn_on_readable(c, now);
		while (st == HTTPD_CONN_OPEN && httpd_conn_wants_write(c) && seed && (r & 0x40)) {
			if (++steps > limit * 4)
				abort();
			p.budget = 1 + next(&seed) % 5000;
			st = httpd_conn_on_writable(c, now);
		}
	}
	if (st == HTTPD_CONN_OPEN) {
		p.fin = true;
		p.budget = SIZE_MAX;
		st = httpd_conn_on_writable(c, now);
		if (st != HTTPD_CONN_DONE)
			abort(); /* everything written, the peer gone: must be done */
	}
	free(c);
	*n = p.out_len;
	return p.out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *ref, *got;
	size_t nref, ngot;
	uint32_t seed;

	if (size < 4 || size > 64 * 1024)
		return 0;
	memcpy(&seed, data, 4);
	seed |= 1; /* never 0: that is the reference schedule */
	ref = run(data + 4, size - 4, 0, &nref);
	got = run(data + 4, size - 4, seed, &ngot);
	if (nref != ngot || (nref && memcmp(ref, got, nref) != 0))
		abort(); /* the schedule changed what was written */
	free(ref);
	free(got);
	return 0;
}
