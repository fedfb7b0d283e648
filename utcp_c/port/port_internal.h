/* port_internal.h — the port's state, shared by port.c and the unit tests (which run the
 * frame logic on rings in plain memory with a simulated kernel behind the wakeup hooks). */
#ifndef MSPORT_INTERNAL_H
#define MSPORT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mstack_port.h"
#include "ring.h"

/* Where each frame is; checked on every hand-back, so a double release or a frame of the
 * wrong side is refused instead of corrupting the rings. */
enum msport_frame_state {
	MSPORT_F_RX_KERNEL = 1, /* fill ring, the kernel, or the RX ring */
	MSPORT_F_RX_APP,        /* returned by rx_burst */
	MSPORT_F_RX_STASH,      /* released, waiting for room on the fill ring */
	MSPORT_F_TX_FREE,       /* on the free list */
	MSPORT_F_TX_APP,        /* returned by tx_alloc */
	MSPORT_F_TX_KERNEL,     /* TX ring, the kernel, or the completion ring */
};

struct mstack_port {
	struct msport_ring rx, tx, fill, comp;
	uint8_t *umem;
	uint64_t umem_size;
	uint32_t frame_size;
	uint32_t frame_shift;
	uint32_t headroom;
	uint32_t nframes, rx_quota, tx_quota;
	bool need_wakeup;

	uint8_t *state;         /* per frame, enum msport_frame_state */
	uint32_t *free_list;    /* TX frames ready for tx_alloc (a stack of frame indices) */
	uint32_t nfree;
	uint32_t *stash;        /* released RX frames the fill ring had no room for */
	uint32_t nstash;
	uint32_t rx_held, tx_held, tx_inflight;

	/* Syscalls behind the rings; replaced by the unit tests' simulated kernel. */
	int (*wake_tx)(struct mstack_port *p); /* 0 or -errno, like sendto */
	int (*wake_rx)(struct mstack_port *p);

	struct mstack_port_stats st; /* library counters (the accounting fields are computed) */

	int umem_fd, xsk_fd;
	void *maps[5];
	size_t map_len[5];
};

/* Second half of open: validated geometry in p, rings and umem attached; allocates the
 * bookkeeping, stocks the fill ring.  0 or -errno.  msport_teardown() frees what it made. */
int msport_setup(struct mstack_port *p);
void msport_teardown(struct mstack_port *p);

/* Copy g into out (zero-extended by g->sz) and check it; 0 or -EINVAL. */
int msport_geom_check(const struct mstack_port_geom *g, struct mstack_port_geom *out);

#endif /* MSPORT_INTERNAL_H */
