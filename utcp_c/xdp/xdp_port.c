/* xdp_port.c — UTCP's xdp backend: utcp_port ops over libmsport. RX frames go to the stack in
 * place and come back with rx_release; TX frames are lent to the stack (tx_lend) and written
 * there in place, in UMEM, then submitted in one batch (tx_send); tx_burst, for a caller with
 * frames of its own, copies them into send frames.  The kick is one sendto when the ring
 * needs it. */
#include "utcp_xdp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct utcp_xdp {
	struct mstack_port *port;
	struct mstack_frame rx[UTCP_XDP_MAX_BATCH];   /* frames lent to the stack, by cookie */
	struct mstack_frame tx[UTCP_XDP_MAX_BATCH];
	uint64_t tx_dropped;
	/* data - addr of any frame: the UMEM's address, so a lent frame's data names it */
	uintptr_t umem;
};

static int x_rx_burst(void *ctx, struct utcp_frame *frames, unsigned max, uint64_t now_us)
{
	struct utcp_xdp *x = ctx;
	unsigned n;

	(void)now_us;
	if (max > UTCP_XDP_MAX_BATCH)
		max = UTCP_XDP_MAX_BATCH;
	n = mstack_port_rx_burst(x->port, x->rx, max);
	for (unsigned i = 0; i < n; i++) {
		frames[i].data = x->rx[i].data;
		frames[i].len = x->rx[i].len;
		frames[i].cookie = i;
	}
	return (int)n;
}

static void x_rx_release(void *ctx, struct utcp_frame *frames, unsigned n)
{
	struct utcp_xdp *x = ctx;
	struct mstack_frame back[UTCP_XDP_MAX_BATCH];
	unsigned k = 0;

	for (unsigned i = 0; i < n && k < UTCP_XDP_MAX_BATCH; i++)
		if (frames[i].cookie < UTCP_XDP_MAX_BATCH)
			back[k++] = x->rx[frames[i].cookie];
	(void)mstack_port_rx_release(x->port, back, k);
}

static int x_tx_burst(void *ctx, const struct utcp_frame *frames, unsigned n, uint64_t now_us)
{
	struct utcp_xdp *x = ctx;
	unsigned got, fit = 0;
	int placed;

	(void)now_us;
	if (n > UTCP_XDP_MAX_BATCH)
		n = UTCP_XDP_MAX_BATCH;
	got = mstack_port_tx_alloc(x->port, x->tx, n);
	for (unsigned i = 0; i < got; i++) {
		if (frames[i].len > x->tx[i].len)
			break; /* larger than a UMEM frame: cannot be sent */
		memcpy(x->tx[i].data, frames[i].data, frames[i].len);
		x->tx[i].len = frames[i].len;
		fit++;
	}
	if (fit < got)
		(void)mstack_port_tx_release(x->port, x->tx + fit, got - fit);
	placed = fit ? mstack_port_tx_submit(x->port, x->tx, fit) : 0;
	if (placed < 0)
		placed = 0;
	if ((unsigned)placed < fit)
		(void)mstack_port_tx_release(x->port, x->tx + placed, fit - (unsigned)placed);
	x->tx_dropped += n - (unsigned)placed;
	return placed;
}

static int x_tx_lend(void *ctx, struct utcp_frame *frames, unsigned n)
{
	struct utcp_xdp *x = ctx;
	struct mstack_frame f[16];
	unsigned got;

	if (n > 16)
		n = 16;
	got = mstack_port_tx_alloc(x->port, f, n);
	for (unsigned i = 0; i < got; i++) {
		x->umem = (uintptr_t)f[i].data - (uintptr_t)f[i].addr;
		frames[i].data = f[i].data;
		frames[i].len = f[i].len;
		frames[i].cookie = 0;
	}
	return (int)got;
}

static void to_port(const struct utcp_xdp *x, const struct utcp_frame *in, struct mstack_frame *out,
		    unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		out[i].data = in[i].data;
		out[i].len = in[i].len;
		out[i]._pad = 0;
		out[i].addr = (uint64_t)((uintptr_t)in[i].data - x->umem);
	}
}

static int x_tx_send(void *ctx, struct utcp_frame *frames, unsigned nsend, unsigned n,
		     uint64_t now_us)
{
	struct utcp_xdp *x = ctx;
	unsigned sent = 0, done = 0;

	(void)now_us;
	/* In batches of what x->tx holds; once the ring is full the rest go back unsent. */
	while (done < n) {
		unsigned k = n - done < UTCP_XDP_MAX_BATCH ? n - done : UTCP_XDP_MAX_BATCH;
		unsigned ks = done < nsend ? (nsend - done < k ? nsend - done : k) : 0;
		int placed = 0;

		to_port(x, frames + done, x->tx, k);
		if (ks && sent == done) {
			placed = mstack_port_tx_submit(x->port, x->tx, ks);
			if (placed < 0)
				placed = 0;
		}
		if ((unsigned)placed < k)
			(void)mstack_port_tx_release(x->port, x->tx + placed, k - (unsigned)placed);
		sent += (unsigned)placed;
		done += k;
	}
	x->tx_dropped += nsend - sent;
	return (int)sent;
}

static int x_kick(void *ctx)
{
	struct utcp_xdp *x = ctx;
	int rc = mstack_port_kick(x->port);

	return rc < 0 ? rc : 0;
}

static const struct utcp_port_ops xdp_ops = {
	.sz = sizeof(struct utcp_port_ops),
	.name = "xdp",
	.rx_burst = x_rx_burst,
	.rx_release = x_rx_release,
	.tx_burst = x_tx_burst,
	.kick = x_kick,
	.tx_lend = x_tx_lend,
	.tx_send = x_tx_send,
};

int utcp_xdp_open(struct utcp_xdp **out, struct mstack_port *port)
{
	struct utcp_xdp *x;

	if (!out || !port)
		return -EINVAL;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->port = port;
	*out = x;
	return 0;
}

void utcp_xdp_close(struct utcp_xdp *x)
{
	free(x);
}

struct utcp_port utcp_xdp_port(struct utcp_xdp *x)
{
	struct utcp_port p = { .ops = &xdp_ops, .ctx = x };

	return p;
}

uint64_t utcp_xdp_tx_dropped(const struct utcp_xdp *x)
{
	return x->tx_dropped;
}
