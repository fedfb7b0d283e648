/* fuzz_http_parse.c — libFuzzer target for the request parser and the target-to-path
 * mapping (make -C httpd fuzz; clang).  Besides "no crash, no UB", it checks the parser's
 * contract: an accepted head lies inside the input and parses the same from any longer
 * buffer; shorter prefixes say "more" or 400, never something else; a decoded path has no
 * "." / ".." segment and no backslash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_path(const struct http_request *req)
{
	char out[HTTP_MAX_HEAD];
	size_t n, i;

	if (http_target_path(req->target, req->target_len, out, sizeof(out)) != 0)
		return;
	n = strlen(out);
	if (out[0] != '/' || memchr(out, '\\', n))
		abort();
	for (i = 0; i < n; i++) {
		if (out[i] != '/')
			continue;
		if (out[i + 1] == '.' && (out[i + 2] == '/' || out[i + 2] == '\0'))
			abort();
		if (out[i + 1] == '.' && out[i + 2] == '.' && (out[i + 3] == '/' || out[i + 3] == '\0'))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_request req, again;
	const char *buf;
	size_t max_head, k;
	char *copy;
	long r;

	if (size < 1)
		return 0;
	/* the first byte picks the bound: the real one or a small one */
	max_head = data[0] & 1 ? HTTP_MAX_HEAD : 16 + data[0];
	copy = malloc(size - 1 ? size - 1 : 1); /* exact size: ASan sees any overread */
	memcpy(copy, data + 1, size - 1);
	buf = copy;
	size -= 1;

	r = http_parse_request(buf, size, max_head, &req);
	if (r > 0) {
		if ((size_t)r > size || (size_t)r > max_head)
			abort();
		if (req.method == HTTP_METHOD_NONE || req.target < buf ||
		    req.target + req.target_len > buf + r)
			abort();
		check_path(&req);
		/* the same head, alone, parses the same */
		if (http_parse_request(buf, (size_t)r, max_head, &again) != r ||
		    again.method != req.method || again.keep_alive != req.keep_alive)
			abort();
	} else if (r != 0 && r != -400) {
		abort();
	} else if (r == 0 && size >= max_head) {
		abort();
	}
	/* prefixes: "more" or 400 only, and 400 is final */
	if (size <= 512) {
		bool bad = false;
		size_t end = r > 0 ? (size_t)r : size;
		for (k = 0; k < end; k++) {
			long p = http_parse_request(buf, k, max_head, &again);
			if (p > 0 || (bad && p != -400))
				abort();
			bad = p == -400;
		}
		if (bad && r > 0)
			abort(); /* a prefix was refused but the whole head accepted */
	}
	free(copy);
	return 0;
}
