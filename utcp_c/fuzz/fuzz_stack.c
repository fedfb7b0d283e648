/* fuzz_stack.c — libFuzzer entry for the whole frame-input path: the input is split into
 * frames fed to a stack that listens on port 80 and has one active connection, with time
 * advancing between frames (format and stack: fuzz_stack.h).  Seeds: corpus/fuzz_stack,
 * written by mkseeds.c.  Built by `make -C utcp_c/fuzz` (clang). */
#include "fuzz_stack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sink_tx(void *c, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	(void)c, (void)f, (void)now;
	return (int)n;
}
static int sink_rx(void *c, struct utcp_frame *f, unsigned m, uint64_t now)
{
	(void)c, (void)f, (void)m, (void)now;
	return 0;
}
static void sink_rel(void *c, struct utcp_frame *f, unsigned n)
{
	(void)c, (void)f, (void)n;
}
static int sink_kick(void *c)
{
	(void)c;
	return 0;
}
static const struct utcp_port_ops sink = {
	.sz = sizeof(struct utcp_port_ops), .name = "sink", .rx_burst = sink_rx,
	.rx_release = sink_rel, .tx_burst = sink_tx, .kick = sink_kick,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct utcp_port port = {&sink, NULL};
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
