/* frames.c — the data path of a port: which frame is where, RX bursts and fill-ring
 * restocking, TX allocation, submission, kicks and completion reaping.  No syscalls here
 * except through the wake hooks, and no allocation after msport_setup(). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "port_internal.h"

/* Frames are split once: rx_quota of them only ever circulate fill ring -> kernel -> RX
 * ring -> application -> fill ring, the other tx_quota free list -> application -> TX ring
 * -> kernel -> completion ring -> free list.  Neither side can starve the other. */

static inline uint32_t frame_of(const struct mstack_port *p, uint64_t addr)
{
	uint64_t i = addr >> p->frame_shift;

	return i < p->nframes ? (uint32_t)i : UINT32_MAX;
}

static inline uint64_t frame_base(const struct mstack_port *p, uint32_t i)
{
	return (uint64_t)i << p->frame_shift;
}

/* The daemon (Python) packs the geometry by hand: keep the layout the header states. */
_Static_assert(sizeof(struct mstack_port_geom) == 48, "mstack_port_geom layout changed");
_Static_assert(offsetof(struct mstack_port_geom, umem_size) == 8, "mstack_port_geom layout");

int msport_geom_check(const struct mstack_port_geom *g, struct mstack_port_geom *out)
{
	if (!g || g->sz < offsetof(struct mstack_port_geom, bind_flags))
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (g->sz > sizeof(*out)) {
		/* A newer caller: accept only if what we do not know is zero. */
		const uint8_t *extra = (const uint8_t *)g + sizeof(*out);

		for (size_t i = 0; i < g->sz - sizeof(*out); i++)
			if (extra[i])
				return -EINVAL;
	}
	memcpy(out, g, g->sz < sizeof(*out) ? g->sz : sizeof(*out));
	out->sz = sizeof(*out);

#define POW2(x) ((x) != 0 && ((x) & ((x) - 1)) == 0)
	if (!POW2(out->frame_size) || out->frame_size < 2048 || out->frame_size > 65536)
		return -EINVAL;
	if (out->umem_size == 0 || out->umem_size % out->frame_size)
		return -EINVAL;
	uint64_t nframes = out->umem_size / out->frame_size;
	if (nframes < 2 || nframes > (1u << 24))
		return -EINVAL;
	if (out->frame_headroom + MSTACK_PORT_XDP_HEADROOM >= out->frame_size)
		return -EINVAL;
	if (!POW2(out->rx_size) || !POW2(out->tx_size) || !POW2(out->fill_size) ||
	    !POW2(out->comp_size))
		return -EINVAL;
#undef POW2
	if (out->flags)
		return -EINVAL;
	if (out->rx_frames == 0) {
		out->rx_frames = (uint32_t)(nframes / 2);
		if (out->rx_frames > out->fill_size / 2)
			out->rx_frames = out->fill_size / 2;
	}
	if (out->rx_frames == 0 || out->rx_frames >= nframes || out->rx_frames > out->fill_size)
		return -EINVAL;
	return 0;
}

/* Move stashed RX frames onto the fill ring, as many as it has room for. */
static void fill_flush(struct mstack_port *p)
{
	uint32_t idx, n;

	if (p->nstash == 0)
		return;
	n = msport_prod_reserve(&p->fill, p->nstash, &idx);
	if (n == 0)
		return;
	for (uint32_t k = 0; k < n; k++) {
		uint32_t f = p->stash[--p->nstash];

		p->state[f] = MSPORT_F_RX_KERNEL;
		*msport_ring_addr(&p->fill, idx + k) = frame_base(p, f);
	}
	msport_prod_submit(&p->fill);
}

int msport_setup(struct mstack_port *p)
{
	p->state = calloc(p->nframes, 1);
	p->free_list = calloc(p->tx_quota, sizeof(*p->free_list));
	p->stash = calloc(p->rx_quota, sizeof(*p->stash));
	if (!p->state || !p->free_list || !p->stash) {
		msport_teardown(p);
		return -ENOMEM;
	}
	/* The daemon hands over rings nobody has used yet; frames already on them would be
	 * frames this port cannot account for. */
	if (*p->fill.producer != *p->fill.consumer || *p->comp.producer != *p->comp.consumer ||
	    *p->rx.producer != *p->rx.consumer || *p->tx.producer != *p->tx.consumer) {
		msport_teardown(p);
		return -EBUSY;
	}
	/* The first rx_quota frames are the receive side, stocked on the fill ring. */
	for (uint32_t f = 0; f < p->rx_quota; f++) {
		p->state[f] = MSPORT_F_RX_STASH;
		p->stash[p->nstash++] = p->rx_quota - 1 - f;
	}
	fill_flush(p);
	/* The rest are send frames; the stack hands out low addresses first. */
	for (uint32_t f = p->nframes; f-- > p->rx_quota;) {
		p->state[f] = MSPORT_F_TX_FREE;
		p->free_list[p->nfree++] = f;
	}
	p->st.frames = p->nframes;
	p->st.rx_quota = p->rx_quota;
	p->st.tx_quota = p->tx_quota;
	return 0;
}

void msport_teardown(struct mstack_port *p)
{
	free(p->state);
	free(p->free_list);
	free(p->stash);
	p->state = NULL;
	p->free_list = NULL;
	p->stash = NULL;
}

unsigned mstack_port_rx_burst(struct mstack_port *p, struct mstack_frame *out, unsigned max)
{
	uint32_t idx, n, got = 0;

	fill_flush(p);
	if (max == 0)
		return 0;
	n = msport_cons_peek(&p->rx, max, &idx);
	if (n == 0) {
		p->st.rx_empty_polls++;
		if (msport_prod_pending(&p->fill) == 0)
			p->st.fill_starved++;
		/* Zero-copy drivers may wait for a wakeup to refill; copy mode never asks. */
		if (p->need_wakeup && msport_ring_needs_wakeup(&p->fill))
			(void)p->wake_rx(p);
		return 0;
	}
	for (uint32_t k = 0; k < n; k++) {
		const struct xdp_desc *d = msport_ring_desc(&p->rx, idx + k);
		uint32_t f = frame_of(p, d->addr);

		if (f == UINT32_MAX || p->state[f] != MSPORT_F_RX_KERNEL ||
		    (d->addr & (p->frame_size - 1)) + d->len > p->frame_size) {
			p->st.bad_descs++;
			continue;
		}
		p->state[f] = MSPORT_F_RX_APP;
		out[got].data = p->umem + d->addr;
		out[got].len = d->len;
		out[got]._pad = 0;
		out[got].addr = d->addr;
		got++;
	}
	msport_cons_release(&p->rx, n);
	p->rx_held += got;
	p->st.rx_frames += got;
	return got;
}

/* Mark n frames from from -> to, all or none. */
static int claim(struct mstack_port *p, const struct mstack_frame *f, unsigned n,
		 enum msport_frame_state from, enum msport_frame_state to)
{
	for (unsigned k = 0; k < n; k++) {
		uint32_t i = frame_of(p, f[k].addr);

		if (i == UINT32_MAX || p->state[i] != from) {
			while (k-- > 0)
				p->state[frame_of(p, f[k].addr)] = (uint8_t)from;
			return -EINVAL;
		}
		p->state[i] = (uint8_t)to;
	}
	return 0;
}

int mstack_port_rx_release(struct mstack_port *p, const struct mstack_frame *f, unsigned n)
{
	if (claim(p, f, n, MSPORT_F_RX_APP, MSPORT_F_RX_STASH))
		return -EINVAL;
	for (unsigned k = 0; k < n; k++)
		p->stash[p->nstash++] = frame_of(p, f[k].addr);
	p->rx_held -= n;
	fill_flush(p);
	return 0;
}

unsigned mstack_port_reap(struct mstack_port *p)
{
	uint32_t idx, n, good = 0;

	n = msport_cons_peek(&p->comp, p->comp.size, &idx);
	for (uint32_t k = 0; k < n; k++) {
		uint32_t f = frame_of(p, *msport_ring_addr(&p->comp, idx + k));

		if (f == UINT32_MAX || p->state[f] != MSPORT_F_TX_KERNEL) {
			p->st.bad_descs++;
			continue;
		}
		p->state[f] = MSPORT_F_TX_FREE;
		p->free_list[p->nfree++] = f;
		good++;
	}
	if (n)
		msport_cons_release(&p->comp, n);
	p->tx_inflight -= good;
	p->st.completions += good;
	return good;
}

unsigned mstack_port_tx_alloc(struct mstack_port *p, struct mstack_frame *out, unsigned n)
{
	unsigned got;

	if (p->nfree < n)
		mstack_port_reap(p);
	got = n < p->nfree ? n : p->nfree;
	for (unsigned k = 0; k < got; k++) {
		uint32_t f = p->free_list[--p->nfree];
		uint64_t addr = frame_base(p, f) + p->headroom;

		p->state[f] = MSPORT_F_TX_APP;
		out[k].data = p->umem + addr;
		out[k].len = p->frame_size - p->headroom;
		out[k]._pad = 0;
		out[k].addr = addr;
	}
	p->tx_held += got;
	if (got < n)
		p->st.tx_alloc_short++;
	return got;
}

int mstack_port_tx_release(struct mstack_port *p, const struct mstack_frame *f, unsigned n)
{
	if (claim(p, f, n, MSPORT_F_TX_APP, MSPORT_F_TX_FREE))
		return -EINVAL;
	for (unsigned k = 0; k < n; k++)
		p->free_list[p->nfree++] = frame_of(p, f[k].addr);
	p->tx_held -= n;
	return 0;
}

int mstack_port_tx_submit(struct mstack_port *p, const struct mstack_frame *f, unsigned n)
{
	uint32_t idx, room;

	/* The kernel refuses (and counts in tx_invalid_descs) empty frames and frames that
	 * cross their chunk; refuse them here, where the caller learns which. */
	for (unsigned k = 0; k < n; k++)
		if (f[k].len == 0 ||
		    (f[k].addr & (p->frame_size - 1)) + f[k].len > p->frame_size)
			return -EINVAL;
	room = msport_prod_reserve(&p->tx, n, &idx);
	if (claim(p, f, room, MSPORT_F_TX_APP, MSPORT_F_TX_KERNEL)) {
		msport_prod_cancel(&p->tx, room);
		return -EINVAL;
	}
	if (room < n) {
		/* The frames that did not fit must still be valid, or the caller cannot tell
		 * a full ring from a bad frame. */
		for (unsigned k = room; k < n; k++) {
			uint32_t i = frame_of(p, f[k].addr);

			if (i == UINT32_MAX || p->state[i] != MSPORT_F_TX_APP) {
				for (unsigned j = 0; j < room; j++)
					p->state[frame_of(p, f[j].addr)] = MSPORT_F_TX_APP;
				msport_prod_cancel(&p->tx, room);
				return -EINVAL;
			}
		}
		p->st.tx_ring_full++;
	}
	for (uint32_t k = 0; k < room; k++) {
		struct xdp_desc *d = msport_ring_desc(&p->tx, idx + k);

		d->addr = f[k].addr;
		d->len = f[k].len;
		d->options = 0;
	}
	if (room)
		msport_prod_submit(&p->tx);
	p->tx_held -= room;
	p->tx_inflight += room;
	p->st.tx_frames += room;
	return (int)room;
}

int mstack_port_kick(struct mstack_port *p)
{
	uint32_t pending, before;
	/* Copy mode sends at most its per-call budget (32 by default) per sendto; a ring's
	 * worth needs at most this many calls, and we stop as soon as one makes no progress. */
	unsigned tries = p->tx.size / 32 + 2;

	mstack_port_reap(p);
	pending = msport_prod_pending(&p->tx);
	if (pending == 0)
		return 0;
	/* With XDP_USE_NEED_WAKEUP the kernel says whether it is already working on the ring
	 * (zero-copy drivers); copy mode always asks. */
	if (p->need_wakeup && !msport_ring_needs_wakeup(&p->tx))
		return (int)pending;
	while (tries--) {
		int err;

		before = pending;
		err = p->wake_tx(p);
		p->st.kicks++;
		/* EAGAIN: budget used up or completion ring full; EBUSY: the device dropped the
		 * frame (its completion still comes); ENOBUFS: no memory now; EINTR: a signal.
		 * All transient. */
		if (err && err != -EAGAIN && err != -EBUSY && err != -ENOBUFS && err != -EINTR) {
			p->st.kick_errors++;
			return err;
		}
		mstack_port_reap(p);
		pending = msport_prod_pending(&p->tx);
		if (pending == 0 || pending >= before)
			break;
	}
	return (int)pending;
}

uint32_t mstack_port_tx_room(const struct mstack_port *p)
{
	return p->frame_size - p->headroom;
}
