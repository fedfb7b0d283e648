/* utcp_port.h — the port interface: how a stack moves frames in and out.
 * A backend is an ops table over batched calls; it knows nothing of TCP.
 * Backends: `pair` (two stacks in memory with seeded impairment, virtual time) here;
 * `tap` and `xdp` (the switch's client library) plug in the same way. */
#ifndef UTCP_PORT_H
#define UTCP_PORT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct utcp_frame {
	uint8_t *data;
	uint32_t len;
	uint32_t cookie;      /* backend-private (slot, UMEM address...) */
};

struct utcp_port_ops {
	size_t sz;            /* sizeof(struct utcp_port_ops) as the backend was built */
	const char *name;
	/* Up to max frames that have arrived by now_us.  They stay valid (and owned by the
	 * backend) until rx_release(); returns the count or a negative errno. */
	int (*rx_burst)(void *ctx, struct utcp_frame *frames, unsigned max, uint64_t now_us);
	void (*rx_release)(void *ctx, struct utcp_frame *frames, unsigned n);
	/* Queues frames for sending; the data is copied before return.  Returns how many
	 * were accepted (the rest are the caller's to count as drops) or a negative errno. */
	int (*tx_burst)(void *ctx, const struct utcp_frame *frames, unsigned n, uint64_t now_us);
	/* One doorbell for everything queued since the last kick. */
	int (*kick)(void *ctx);
	/* Optional, both or neither (a backend built before them sets a smaller sz): frames
	 * written in place, in the backend's own memory, so the stack writes each frame once,
	 * where it is sent from, and tx_burst's copy goes away.  tx_lend: up to n empty frames
	 * (data, len = the room; cookie the backend's), the backend's still.  tx_send:
	 * frames[0..nsend) are written (len set) and go out as tx_burst's would; frames
	 * [nsend..n) come back unused.  Every frame is the backend's again on return; returns
	 * how many were sent (the rest are the caller's to count as drops). */
	int (*tx_lend)(void *ctx, struct utcp_frame *frames, unsigned n);
	int (*tx_send)(void *ctx, struct utcp_frame *frames, unsigned nsend, unsigned n,
		       uint64_t now_us);
};

struct utcp_port {
	const struct utcp_port_ops *ops;
	void *ctx;
};

/* ---- pair: two ports joined in memory, in virtual time ---- */

struct utcp_pair;

/* Impairment of one direction.  Probabilities in parts per million.  Everything is
 * drawn from the pair's seeded generator: the same seed gives the same run. */
struct utcp_pair_impair {
	uint32_t loss_ppm;
	uint32_t dup_ppm;
	uint32_t reorder_ppm;       /* a reordered frame is held back reorder_delay_us more */
	uint32_t corrupt_ppm;       /* one random bit of the frame is flipped */
	uint64_t delay_us;          /* one-way propagation delay */
	uint64_t jitter_us;         /* uniform extra delay in [0, jitter_us] */
	uint64_t reorder_delay_us;
	uint64_t rate_bps;          /* serialisation rate; 0 = infinite */
};

struct utcp_pair_opts {
	size_t sz;                  /* sizeof(struct utcp_pair_opts) */
	uint64_t seed;
	uint32_t queue_frames;      /* per direction; frames beyond it are dropped (tail drop) */
	uint32_t frame_size;        /* largest frame carried */
	struct utcp_pair_impair dir[2];   /* dir[0]: end 0 -> end 1; dir[1]: end 1 -> end 0 */
};

struct utcp_pair_stats {
	uint64_t sent, delivered, lost, duplicated, reordered, corrupted, overflow;
};

int utcp_pair_create(const struct utcp_pair_opts *opts, struct utcp_pair **out);
void utcp_pair_destroy(struct utcp_pair *pair);
/* The port of end 0 or 1. */
struct utcp_port utcp_pair_port(struct utcp_pair *pair, int end);
void utcp_pair_set_impair(struct utcp_pair *pair, int dir, const struct utcp_pair_impair *imp);
/* Earliest delivery time of a queued frame, UINT64_MAX if none. */
uint64_t utcp_pair_next_delivery(const struct utcp_pair *pair);
void utcp_pair_get_stats(const struct utcp_pair *pair, int dir, struct utcp_pair_stats *st);

/* ---- impair: wraps another port with impairment queues in both directions, in the
 * caller's time (for tests against a real peer; the pair backend has its own) ---- */

struct utcp_impair;

int utcp_impair_wrap(const struct utcp_port *inner, const struct utcp_pair_impair *tx,
		     const struct utcp_pair_impair *rx, uint64_t seed, struct utcp_impair **out);
void utcp_impair_destroy(struct utcp_impair *w);
struct utcp_port utcp_impair_port(struct utcp_impair *w);
/* When a held-back frame is next due (either direction), UINT64_MAX if none. */
uint64_t utcp_impair_next(const struct utcp_impair *w);
/* dir 0: transmit side, 1: receive side. */
void utcp_impair_get_stats(const struct utcp_impair *w, int dir, struct utcp_pair_stats *st);

/* ---- tap: a Linux TAP device (to test against the kernel's stack without the switch) ---- */

struct utcp_tap;

/* Attaches to TAP device `ifname` (created if missing; needs CAP_NET_ADMIN), non-blocking.
 * batch: frames per rx_burst (buffers allocated here). */
int utcp_tap_open(const char *ifname, unsigned batch, struct utcp_tap **out);
void utcp_tap_close(struct utcp_tap *tap);
struct utcp_port utcp_tap_port(struct utcp_tap *tap);
/* The file descriptor to poll for input. */
int utcp_tap_fd(const struct utcp_tap *tap);

#ifdef __cplusplus
}
#endif
#endif
