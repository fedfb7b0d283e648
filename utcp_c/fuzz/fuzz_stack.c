/* fuzz_stack.c — libFuzzer entry for the whole frame-input path: the input is split into
 * frames fed to a stack that listens on port 80 and has one active connection, with time
 * advancing between frames (format and stack: fuzz_stack.h).  Seeds: corpus/fuzz_stack,
 * written by mkseeds.c.  Built by `make -C utcp_c/fuzz` (clang). */
#include "fuzz_stack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct utcp_port port = {&fs_sink, NULL};
	struct fs_ctx x;
	uint8_t frame[FS_MAX_FRAME];

	fs_setup(&x, &port);
	while (size >= 3) {
		size_t len = utcp_get16(data) % sizeof(frame);
		uint8_t step = data[2];

		data += 3, size -= 3;
		if (len > size)
			len = size;
		memcpy(frame, data, len);
		fs_step(&x, frame, len, step);
		data += len, size -= len;
	}
	utcp_stack_destroy(x.st);
	return 0;
}
