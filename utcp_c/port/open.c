/* open.c — turning the two fds the daemon handed over into a port: check the XSK, map the
 * UMEM memfd and the four rings (kernel UAPI only, no libxdp: it assumes it made the socket),
 * and the syscalls behind the rings (sendto/recvfrom kicks, XDP_STATISTICS). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_xdp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "port_internal.h"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif
#ifndef AF_XDP
#define AF_XDP 44
#endif
/* Linux 6.17: frames one copy-mode sendto may send (default 32); not in Debian 12's UAPI. */
#ifndef XDP_MAX_TX_SKB_BUDGET
#define XDP_MAX_TX_SKB_BUDGET 9
#endif

enum { MAP_UMEM, MAP_RX, MAP_TX, MAP_FILL, MAP_COMP };

static int sys_wake_tx(struct mstack_port *p)
{
	if (sendto(p->xsk_fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0)
		return -errno;
	return 0;
}

static int sys_wake_rx(struct mstack_port *p)
{
	if (recvfrom(p->xsk_fd, NULL, 0, MSG_DONTWAIT, NULL, NULL) < 0)
		return -errno;
	return 0;
}

static int map_region(struct mstack_port *p, int slot, int fd, size_t len, off_t off)
{
	/* MAP_POPULATE: no page faults on the packet path.  MADV_DONTFORK: a forked child
	 * must not touch its parent's rings (design.md 4a); it gets a port of its own. */
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, off);

	if (m == MAP_FAILED)
		return -errno;
	p->maps[slot] = m;
	p->map_len[slot] = len;
	if (madvise(m, len, MADV_DONTFORK) < 0)
		return -errno;
	return 0;
}

static void unmap_all(struct mstack_port *p)
{
	for (int i = 0; i < 5; i++)
		if (p->maps[i])
			munmap(p->maps[i], p->map_len[i]);
}

static int check_xsk(int fd)
{
	int domain = 0;
	socklen_t len = sizeof(domain);

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
		return -errno;
	return domain == AF_XDP ? 0 : -EPROTOTYPE;
}

int mstack_port_open(struct mstack_port **out, int umem_fd, int xsk_fd,
		     const struct mstack_port_geom *g)
{
	struct mstack_port_geom geom;
	struct xdp_mmap_offsets off;
	socklen_t optlen = sizeof(off);
	struct mstack_port *p;
	struct stat sb;
	int err;

	if (!out)
		return -EINVAL;
	*out = NULL;
	err = msport_geom_check(g, &geom);
	if (err)
		return err;
	if (fstat(umem_fd, &sb) < 0)
		return -errno;
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size < geom.umem_size)
		return -EINVAL;
	err = check_xsk(xsk_fd);
	if (err)
		return err;
	if (getsockopt(xsk_fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen) < 0)
		return -errno;
	if (optlen != sizeof(off)) /* pre-5.4 layout without the flags word */
		return -EOPNOTSUPP;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->umem_fd = umem_fd;
	p->xsk_fd = xsk_fd;
	p->umem_size = geom.umem_size;
	p->frame_size = geom.frame_size;
	p->frame_shift = (uint32_t)__builtin_ctz(geom.frame_size);
	p->headroom = geom.frame_headroom;
	p->nframes = (uint32_t)(geom.umem_size / geom.frame_size);
	p->rx_quota = geom.rx_frames;
	p->tx_quota = p->nframes - p->rx_quota;
	p->need_wakeup = (geom.bind_flags & XDP_USE_NEED_WAKEUP) != 0;
	p->wake_tx = sys_wake_tx;
	p->wake_rx = sys_wake_rx;

	err = map_region(p, MAP_UMEM, umem_fd, geom.umem_size, 0);
	if (!err)
		err = map_region(p, MAP_RX, xsk_fd,
				 off.rx.desc + geom.rx_size * sizeof(struct xdp_desc),
				 XDP_PGOFF_RX_RING);
	if (!err)
		err = map_region(p, MAP_TX, xsk_fd,
				 off.tx.desc + geom.tx_size * sizeof(struct xdp_desc),
				 XDP_PGOFF_TX_RING);
	if (!err)
		err = map_region(p, MAP_FILL, xsk_fd, off.fr.desc + geom.fill_size * sizeof(__u64),
				 XDP_UMEM_PGOFF_FILL_RING);
	if (!err)
		err = map_region(p, MAP_COMP, xsk_fd, off.cr.desc + geom.comp_size * sizeof(__u64),
				 XDP_UMEM_PGOFF_COMPLETION_RING);
	if (err)
		goto fail;

#define RING(r, slot, o, size)                                                          \
	msport_ring_init(&p->r, (uint8_t *)p->maps[slot] + (o).producer,                \
			 (uint8_t *)p->maps[slot] + (o).consumer,                       \
			 (uint8_t *)p->maps[slot] + (o).flags,                          \
			 (uint8_t *)p->maps[slot] + (o).desc, size)
	RING(rx, MAP_RX, off.rx, geom.rx_size);
	RING(tx, MAP_TX, off.tx, geom.tx_size);
	RING(fill, MAP_FILL, off.fr, geom.fill_size);
	RING(comp, MAP_COMP, off.cr, geom.comp_size);
#undef RING
	p->umem = p->maps[MAP_UMEM];

	err = msport_setup(p);
	if (err)
		goto fail;

	/* Let one kick send the whole TX ring in copy mode (Linux >= 6.17; the option needs
	 * no privilege).  Older kernels keep 32 per call; kick then loops. */
	if (geom.tx_size >= 32) {
		unsigned budget = geom.tx_size;

		(void)setsockopt(xsk_fd, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, &budget, sizeof(budget));
	}
	/* A port belongs to this process image: not inherited across exec. */
	(void)fcntl(umem_fd, F_SETFD, FD_CLOEXEC);
	(void)fcntl(xsk_fd, F_SETFD, FD_CLOEXEC);
	*out = p;
	return 0;

fail:
	unmap_all(p);
	free(p);
	return err;
}

void mstack_port_close(struct mstack_port *p)
{
	if (!p)
		return;
	unmap_all(p);
	msport_teardown(p);
	if (p->xsk_fd >= 0)
		close(p->xsk_fd);
	if (p->umem_fd >= 0)
		close(p->umem_fd);
	free(p);
}

int mstack_port_fd(const struct mstack_port *p)
{
	return p->xsk_fd;
}

int mstack_port_stats(const struct mstack_port *p, struct mstack_port_stats *out)
{
	struct mstack_port_stats s = p->st;
	struct xdp_statistics ks;
	socklen_t len = sizeof(ks);
	int err = 0;

	if (!out || out->sz < offsetof(struct mstack_port_stats, k_rx_dropped))
		return -EINVAL;
	s.sz = out->sz < sizeof(s) ? out->sz : (uint32_t)sizeof(s);
	s.rx_held = p->rx_held;
	s.rx_stash = p->nstash;
	s.fill_level = p->fill.cached_prod - __atomic_load_n(p->fill.consumer, __ATOMIC_ACQUIRE);
	s.tx_free = p->nfree;
	s.tx_held = p->tx_held;
	s.tx_inflight = p->tx_inflight;
	memset(&ks, 0, sizeof(ks));
	if (p->xsk_fd >= 0 && getsockopt(p->xsk_fd, SOL_XDP, XDP_STATISTICS, &ks, &len) < 0)
		err = -errno;
	s.k_rx_dropped = ks.rx_dropped;
	s.k_rx_invalid_descs = ks.rx_invalid_descs;
	s.k_tx_invalid_descs = ks.tx_invalid_descs;
	s.k_rx_ring_full = ks.rx_ring_full;
	s.k_rx_fill_ring_empty_descs = ks.rx_fill_ring_empty_descs;
	s.k_tx_ring_empty_descs = ks.tx_ring_empty_descs;
	memcpy(out, &s, s.sz);
	return err;
}
