/* mstack_port.h — the app side of a MultiStack port: AF_XDP rings on fds handed over by mstackd.
 * The daemon creates the UMEM (a memfd) and the XSK and passes both fds; this library maps
 * them, keeps the fill ring stocked, and moves frames in batches.  It needs no privileges,
 * allocates nothing on the packet path and knows nothing of TCP.  Not thread-safe: one port,
 * one thread (a process may hold several ports).  Functions return negative errno values. */
#ifndef MSTACK_PORT_H
#define MSTACK_PORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Defaults mstackd uses unless configured otherwise: 4096 frames x 2 KB = 8 MB of UMEM per
 * port (locked memory charged to the daemon), half of it for receiving, half for sending;
 * RX, TX and completion rings 2048 entries, the fill ring twice that (the kernel publishes
 * its fill-ring consumer index lazily, so a fill ring of 2 x the receive frames always has
 * room for a released frame).  2 KB frames hold a 1514-byte frame after the kernel's
 * 256-byte XDP headroom; 2048 RX frames absorb ~2.5 ms of a 10 Gb/s burst of 1500-byte
 * frames.  See utcp_c/port/README.md. */
#define MSTACK_PORT_DEFAULT_FRAME_SIZE	2048u
#define MSTACK_PORT_DEFAULT_FRAMES	4096u
#define MSTACK_PORT_DEFAULT_RING_SIZE	2048u
#define MSTACK_PORT_DEFAULT_FILL_SIZE	4096u

/* The kernel's XDP headroom (XDP_PACKET_HEADROOM): received data starts this far past
 * frame_headroom in its frame. */
#define MSTACK_PORT_XDP_HEADROOM	256u

/* Geometry of a port, as the daemon created it (sent with the fds).  Extensible: set sz to
 * sizeof(struct mstack_port_geom); fields past sz read as zero (libbpf opts style), fields up
 * to comp_size are required.  48 bytes, no padding (Python: struct "=IIQIIIIIIII"). */
struct mstack_port_geom {
	uint32_t sz;
	uint32_t frame_size;      /* UMEM chunk size: a power of two, >= 2048 (aligned mode) */
	uint64_t umem_size;       /* bytes of the memfd registered as UMEM; multiple of frame_size */
	uint32_t frame_headroom;  /* XDP_UMEM_REG headroom */
	uint32_t rx_size;         /* ring entries, each a power of two */
	uint32_t tx_size;
	uint32_t fill_size;
	uint32_t comp_size;
	uint32_t bind_flags;      /* sxdp_flags the XSK was bound with (XDP_COPY, XDP_USE_NEED_WAKEUP) */
	uint32_t rx_frames;       /* frames for receiving (<= fill_size); 0: min(fill_size / 2,
				   * frames / 2).  The rest are for sending. */
	uint32_t flags;           /* reserved, must be 0 */
};

/* One frame in UMEM.  RX: data and len describe the received bytes.  TX: tx_alloc sets data
 * and len to the writable room; the caller writes the frame and sets len before submit.
 * addr is the UMEM offset of data, and names the frame: to send from another offset inside
 * the same frame (e.g. into its headroom), move data and addr together. */
struct mstack_frame {
	uint8_t *data;
	uint32_t len;
	uint32_t _pad;
	uint64_t addr;
};

struct mstack_port_stats {
	uint32_t sz;               /* caller sets sizeof(struct mstack_port_stats) */
	uint32_t _pad;
	/* library counters */
	uint64_t rx_frames;        /* frames returned by rx_burst */
	uint64_t tx_frames;        /* descriptors put on the TX ring */
	uint64_t rx_empty_polls;   /* rx_burst calls that found the RX ring empty */
	uint64_t tx_ring_full;     /* tx_submit calls that could not place every frame */
	uint64_t tx_alloc_short;   /* tx_alloc calls that could not hand out every frame */
	uint64_t fill_starved;     /* rx_burst calls that found the fill ring empty */
	uint64_t kicks;            /* sendto() calls */
	uint64_t kick_errors;      /* sendto() failures other than EAGAIN/EBUSY/ENOBUFS/EINTR */
	uint64_t completions;      /* frames reaped from the completion ring */
	uint64_t bad_descs;        /* RX/completion entries naming no frame the kernel held */
	/* frame accounting, a snapshot; at rest rx_held == tx_held == tx_inflight == 0 and
	 * tx_free == tx_quota */
	uint32_t frames;           /* frames in the UMEM */
	uint32_t rx_quota;         /* frames that circulate on the receive side */
	uint32_t tx_quota;         /* frames that circulate on the send side */
	uint32_t rx_held;          /* received frames the application has not released */
	uint32_t rx_stash;         /* released frames waiting for room on the fill ring */
	uint32_t fill_level;       /* fill-ring entries the kernel has not yet marked as taken
				    * (it does so lazily: may include frames already in use) */
	uint32_t tx_free;          /* send frames ready for tx_alloc */
	uint32_t tx_held;          /* frames from tx_alloc neither submitted nor released */
	uint32_t tx_inflight;      /* submitted, not yet reaped from the completion ring */
	/* the kernel's XDP_STATISTICS for this socket */
	uint64_t k_rx_dropped;
	uint64_t k_rx_invalid_descs;
	uint64_t k_tx_invalid_descs;
	uint64_t k_rx_ring_full;
	uint64_t k_rx_fill_ring_empty_descs;
	uint64_t k_tx_ring_empty_descs;
};

struct mstack_port;

/* Map the UMEM (umem_fd, a memfd of at least g->umem_size bytes) and the four rings of the
 * bound XSK (xsk_fd), put rx_quota frames on the fill ring and the rest on the TX free list.
 * The rings must be empty and untouched.  Takes ownership of both fds on success only (they
 * are made close-on-exec); the mappings are MADV_DONTFORK.  -EINVAL bad geometry, -EBUSY
 * rings not empty, -ENOTSOCK/-EPROTOTYPE xsk_fd is no AF_XDP socket, -ENOMEM, others from
 * fstat/getsockopt/mmap (-EINVAL from mmap: a ring missing or smaller than g says). */
int mstack_port_open(struct mstack_port **out, int umem_fd, int xsk_fd,
		     const struct mstack_port_geom *g);

/* Unmap and close everything.  Frames still held become invalid.  NULL is a no-op. */
void mstack_port_close(struct mstack_port *port);

/* Take up to max received frames off the RX ring.  Returns how many were written to out.
 * The frames stay the caller's until mstack_port_rx_release(). */
unsigned mstack_port_rx_burst(struct mstack_port *port, struct mstack_frame *out, unsigned max);

/* Give received frames back to the kernel (one fill-ring update for the batch).  Returns 0,
 * or -EINVAL if a frame was not one rx_burst handed out (none is released then). */
int mstack_port_rx_release(struct mstack_port *port, const struct mstack_frame *f, unsigned n);

/* Hand out up to n empty send frames, reaping the completion ring when the free list runs
 * short.  Returns how many were written to out. */
unsigned mstack_port_tx_alloc(struct mstack_port *port, struct mstack_frame *out, unsigned n);

/* Put frames from tx_alloc, with their len set, on the TX ring (one producer update).
 * Returns how many were placed, in order (fewer when the ring is full: the caller still owns
 * the rest), or -EINVAL (nothing placed) for a frame not from tx_alloc or a bad len.
 * Nothing is sent until mstack_port_kick(). */
int mstack_port_tx_submit(struct mstack_port *port, const struct mstack_frame *f, unsigned n);

/* Return frames from tx_alloc unsent.  0 or -EINVAL (none returned). */
int mstack_port_tx_release(struct mstack_port *port, const struct mstack_frame *f, unsigned n);

/* Make the kernel send what is on the TX ring: sendto(MSG_DONTWAIT) if the ring needs it,
 * repeated only while the kernel makes progress (copy mode sends at most its per-call
 * budget, which open raises to tx_size where the kernel allows).  Reaps completions.
 * Returns the number of descriptors still waiting on the TX ring (0: all taken), or a
 * negative errno (-ENETDOWN, -ENXIO, ...). */
int mstack_port_kick(struct mstack_port *port);

/* Reap the completion ring into the free list; returns frames reaped. */
unsigned mstack_port_reap(struct mstack_port *port);

/* The XSK fd, for poll/epoll (POLLIN: RX ring not empty).  Still owned by the port. */
int mstack_port_fd(const struct mstack_port *port);

/* Usable bytes of a send frame (frame_size - frame_headroom). */
uint32_t mstack_port_tx_room(const struct mstack_port *port);

/* Counters and frame accounting, plus XDP_STATISTICS (getsockopt).  out->sz must be set.
 * Returns 0 or a negative errno; library fields are filled even if getsockopt fails. */
int mstack_port_stats(const struct mstack_port *port, struct mstack_port_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* MSTACK_PORT_H */
