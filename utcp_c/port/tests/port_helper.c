/* port_helper.c — plays both sides of a port handover for the system tests and the bench.
 * The parent (root) does what mstackd does for a port: UMEM in a sealed memfd, the XDP
 * program and XSKMAP on the interface, an XSK bound in copy mode (libxdp), then both fds
 * over a unix socket with SCM_RIGHTS.  The child drops to an unprivileged user *before*
 * anything exists, receives the fds and runs one scenario on libmsport.
 *
 * usage: port_helper --ifname IF [options] MODE [ARGS]
 *   rx COUNT            receive COUNT frames, then print each as "F <hex>"
 *   tx                  send the "F <hex>" frames read from stdin (to EOF)
 *   tx-burst COUNT      send COUNT generated frames (see gen_frame) with header --hdr
 *   bench-tx SECONDS    send generated 64-byte frames for SECONDS
 *   bench-rx SECONDS    count received frames for SECONDS
 * options: --frames N --ring N --fill N --rx-frames N --headroom N --frame-size N
 *          --bpf-obj PATH --user UID --timeout SEC --progress N --hdr HEX(28)
 *          --daemon-exit 1   the daemon process SIGKILLs itself right after the handover;
 *                            the supervisor prints "DAEMON gone sig=9" once it is reaped
 *          --wait-stdin 1    the app waits for a line on stdin after READY
 *          --raw-daemon 1    make the XSK with plain syscalls (as mstackd does) instead of
 *                            libxdp; the daemon keeps no mapping of the UMEM or the rings
 *          --reopen-check 1  opening the same (dup'ed) fds again must fail: "REOPEN err=E"
 *          --fork-check 1    first show that a forked child of the app cannot reach the
 *                            port's memory (MADV_DONTFORK): "FORK umem=SIG rings=SIG"
 * stdout: "READY uid=U caps=HEX xsk_denied=0|1", "GOT n" progress lines, frames, and a final
 * "STATS {json}".  Exit 0 when the scenario completed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <xdp/xsk.h>

#include "mstack_port.h"

#define BATCH 64
#define MAX_FRAME 2048

struct opts {
	const char *ifname;
	const char *bpf_obj;
	uint32_t frames, ring, fill, rx_frames, headroom, frame_size;
	uid_t uid;
	double timeout;
	unsigned long progress;
	bool daemon_exit, fork_check, wait_stdin, raw_daemon, reopen_check;
	uint8_t hdr[14];
	const char *mode;
	unsigned long count;
	double seconds;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "port_helper: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(2);
}

/* The test frame with sequence number seq: the 14-byte header, seq (big endian), then
 * (seq + i) & 0xff; 60..1514 bytes.  tests/system/test_port_rings.py builds the same. */
static uint32_t gen_frame(uint8_t *buf, const uint8_t hdr[14], uint32_t seq)
{
	uint32_t len = 60 + (uint32_t)(((uint64_t)seq * 7) % 1455);

	memcpy(buf, hdr, 14);
	buf[14] = (uint8_t)(seq >> 24);
	buf[15] = (uint8_t)(seq >> 16);
	buf[16] = (uint8_t)(seq >> 8);
	buf[17] = (uint8_t)seq;
	for (uint32_t i = 0; i < len - 18; i++)
		buf[18 + i] = (uint8_t)(seq + i);
	return len;
}

/* ---------------- the daemon's side ---------------- */

struct daemon_side {
	int memfd, ifindex, xsk_fd;
	void *area;
	uint64_t size;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	struct xsk_ring_prod fill, tx;
	struct xsk_ring_cons comp, rx;
	struct bpf_object *obj;
	bool attached;
};

/* The XSK the way the Python daemon will make it: plain syscalls, and no mapping kept — the
 * UMEM is mapped only for XDP_UMEM_REG (which pins its pages), the rings never. */
static int raw_xsk(const struct opts *o, struct daemon_side *d, uint32_t bind_flags)
{
	struct xdp_umem_reg mr;
	struct sockaddr_xdp sxdp;
	uint32_t sizes[4] = {o->fill, o->ring, o->ring, o->ring};
	const int opts[4] = {XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING,
			     XDP_TX_RING};

	d->xsk_fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (d->xsk_fd < 0)
		return -errno;
	memset(&mr, 0, sizeof(mr)); /* newer kernels read more fields: zero them */
	mr.addr = (uintptr_t)d->area;
	mr.len = d->size;
	mr.chunk_size = o->frame_size;
	mr.headroom = o->headroom;
	if (setsockopt(d->xsk_fd, SOL_XDP, XDP_UMEM_REG, &mr, sizeof(mr)) < 0)
		return -errno;
	munmap(d->area, d->size);
	d->area = NULL;
	for (int i = 0; i < 4; i++)
		if (setsockopt(d->xsk_fd, SOL_XDP, opts[i], &sizes[i], sizeof(sizes[i])) < 0)
			return -errno;
	memset(&sxdp, 0, sizeof(sxdp));
	sxdp.sxdp_family = AF_XDP;
	sxdp.sxdp_ifindex = (uint32_t)d->ifindex;
	sxdp.sxdp_queue_id = 0;
	sxdp.sxdp_flags = (uint16_t)bind_flags;
	if (bind(d->xsk_fd, (struct sockaddr *)&sxdp, sizeof(sxdp)) < 0)
		return -errno;
	return 0;
}

static int daemon_setup(const struct opts *o, struct daemon_side *d, struct mstack_port_geom *g)
{
	struct xsk_umem_config ucfg = {
		.fill_size = o->fill, .comp_size = o->ring, .frame_size = o->frame_size,
		.frame_headroom = o->headroom, .flags = 0,
	};
	struct xsk_socket_config scfg = {
		.rx_size = o->ring, .tx_size = o->ring,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.xdp_flags = XDP_FLAGS_DRV_MODE, .bind_flags = XDP_COPY | XDP_USE_NEED_WAKEUP,
	};
	struct bpf_program *prog;
	struct bpf_map *map;
	int err, key = 0;

	d->ifindex = (int)if_nametoindex(o->ifname);
	if (!d->ifindex)
		return -errno;
	d->size = (uint64_t)o->frames * o->frame_size;
	/* The UMEM: a memfd whose size is sealed, so the app can neither shrink it under the
	 * kernel's pinned pages nor grow it. */
	d->memfd = memfd_create("mstack-umem", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (d->memfd < 0)
		return -errno;
	if (ftruncate(d->memfd, (off_t)d->size) < 0 ||
	    fcntl(d->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		return -errno;
	d->area = mmap(NULL, d->size, PROT_READ | PROT_WRITE, MAP_SHARED, d->memfd, 0);
	if (d->area == MAP_FAILED) {
		d->area = NULL;
		return -errno;
	}

	/* The app end's program: everything to the XSK of its queue, misses dropped. */
	d->obj = bpf_object__open_file(o->bpf_obj, NULL);
	if (!d->obj)
		return -errno;
	err = bpf_object__load(d->obj);
	if (err)
		return err;
	prog = bpf_object__find_program_by_name(d->obj, "xsk_redirect");
	map = bpf_object__find_map_by_name(d->obj, "xsks_map");
	if (!prog || !map)
		return -ENOENT;
	err = bpf_xdp_attach(d->ifindex, bpf_program__fd(prog),
			     XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST, NULL);
	if (err)
		return err;
	d->attached = true;

	if (o->raw_daemon) {
		err = raw_xsk(o, d, scfg.bind_flags);
	} else {
		err = xsk_umem__create(&d->umem, d->area, d->size, &d->fill, &d->comp, &ucfg);
		if (!err)
			err = xsk_socket__create(&d->xsk, o->ifname, 0, d->umem, &d->rx, &d->tx,
						 &scfg);
		if (!err)
			d->xsk_fd = xsk_socket__fd(d->xsk);
	}
	if (err)
		return err;
	err = bpf_map_update_elem(bpf_map__fd(map), &key, &d->xsk_fd, BPF_ANY);
	if (err)
		return err;

	memset(g, 0, sizeof(*g));
	g->sz = sizeof(*g);
	g->frame_size = o->frame_size;
	g->umem_size = d->size;
	g->frame_headroom = o->headroom;
	g->rx_size = g->tx_size = g->comp_size = o->ring;
	g->fill_size = o->fill;
	g->bind_flags = scfg.bind_flags;
	g->rx_frames = o->rx_frames;
	return 0;
}

static void daemon_teardown(struct daemon_side *d)
{
	if (d->xsk)
		xsk_socket__delete(d->xsk);
	else if (d->xsk_fd >= 0)
		close(d->xsk_fd);
	if (d->umem)
		xsk_umem__delete(d->umem);
	if (d->attached)
		bpf_xdp_detach(d->ifindex, XDP_FLAGS_DRV_MODE, NULL);
	if (d->obj)
		bpf_object__close(d->obj);
	if (d->area)
		munmap(d->area, d->size);
	if (d->memfd >= 0)
		close(d->memfd);
}

static int send_fds(int sock, int umem_fd, int xsk_fd, const struct mstack_port_geom *g)
{
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = (void *)g, .iov_len = sizeof(*g)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	int fds[2] = {umem_fd, xsk_fd};

	memset(u.buf, 0, sizeof(u.buf));
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(fds));
	memcpy(CMSG_DATA(c), fds, sizeof(fds));
	return sendmsg(sock, &msg, 0) < 0 ? -errno : 0;
}

/* ---------------- the application's side ---------------- */

static int recv_fds(int sock, int *umem_fd, int *xsk_fd, struct mstack_port_geom *g)
{
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = g, .iov_len = sizeof(*g)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			     .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *c;
	ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);

	if (n < 0)
		return -errno;
	if (n != (ssize_t)sizeof(*g))
		return -EPROTO;
	c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(2 * sizeof(int)))
		return -EPROTO;
	memcpy(umem_fd, CMSG_DATA(c), sizeof(int));
	memcpy(xsk_fd, CMSG_DATA(c) + sizeof(int), sizeof(int));
	return 0;
}

static uint64_t cap_eff(void)
{
	char line[256];
	uint64_t caps = ~0ull;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return caps;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %" SCNx64, &caps) == 1)
			break;
	fclose(f);
	return caps;
}

static void drop_privileges(uid_t uid, pid_t parent)
{
	if (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0)
		die("drop privileges", errno);
	/* PDEATHSIG is cleared by a credential change: set it after. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		die("prctl", errno);
	if (getppid() != parent)
		exit(2);
}

static void print_stats(struct mstack_port *p, const char *extra)
{
	struct mstack_port_stats s = {.sz = sizeof(s)};
	int err = mstack_port_stats(p, &s);

	printf("STATS {\"stats_err\": %d, \"rx_frames\": %" PRIu64 ", \"tx_frames\": %" PRIu64
	       ", \"rx_empty_polls\": %" PRIu64 ", \"tx_ring_full\": %" PRIu64
	       ", \"tx_alloc_short\": %" PRIu64 ", \"fill_starved\": %" PRIu64
	       ", \"kicks\": %" PRIu64 ", \"kick_errors\": %" PRIu64 ", \"completions\": %" PRIu64
	       ", \"bad_descs\": %" PRIu64 ", \"frames\": %u, \"rx_quota\": %u, \"tx_quota\": %u"
	       ", \"rx_held\": %u, \"rx_stash\": %u, \"fill_level\": %u, \"tx_free\": %u"
	       ", \"tx_held\": %u, \"tx_inflight\": %u, \"k_rx_dropped\": %" PRIu64
	       ", \"k_rx_invalid_descs\": %" PRIu64 ", \"k_tx_invalid_descs\": %" PRIu64
	       ", \"k_rx_ring_full\": %" PRIu64 ", \"k_rx_fill_ring_empty_descs\": %" PRIu64
	       ", \"k_tx_ring_empty_descs\": %" PRIu64 "%s}\n",
	       err, s.rx_frames, s.tx_frames, s.rx_empty_polls, s.tx_ring_full, s.tx_alloc_short,
	       s.fill_starved, s.kicks, s.kick_errors, s.completions, s.bad_descs, s.frames,
	       s.rx_quota, s.tx_quota, s.rx_held, s.rx_stash, s.fill_level, s.tx_free, s.tx_held,
	       s.tx_inflight, s.k_rx_dropped, s.k_rx_invalid_descs, s.k_tx_invalid_descs,
	       s.k_rx_ring_full, s.k_rx_fill_ring_empty_descs, s.k_tx_ring_empty_descs, extra);
	fflush(stdout);
}

static void wait_readable(struct mstack_port *p, int ms)
{
	struct pollfd pfd = {.fd = mstack_port_fd(p), .events = POLLIN};

	(void)poll(&pfd, 1, ms);
}

static int run_rx(struct mstack_port *p, const struct opts *o)
{
	struct mstack_frame f[BATCH];
	uint8_t *store = malloc(o->count * MAX_FRAME + 1);
	uint32_t *lens = calloc(o->count + 1, sizeof(*lens));
	unsigned long got = 0, extra = 0, next_progress = o->progress;
	double deadline = now() + o->timeout, linger = 0;
	char buf[128];

	if (!store || !lens)
		die("malloc", ENOMEM);
	while (now() < deadline) {
		unsigned n = mstack_port_rx_burst(p, f, BATCH);

		for (unsigned k = 0; k < n; k++) {
			if (got < o->count) {
				lens[got] = f[k].len < MAX_FRAME ? f[k].len : MAX_FRAME;
				memcpy(store + got * MAX_FRAME, f[k].data, lens[got]);
				got++;
			} else {
				extra++;
			}
		}
		if (n && mstack_port_rx_release(p, f, n))
			die("rx_release", EINVAL);
		if (o->progress && got >= next_progress) {
			printf("GOT %lu\n", got);
			fflush(stdout);
			while (next_progress <= got)
				next_progress += o->progress;
		}
		if (got == o->count) {
			/* Stay a moment to see frames that should not be there. */
			if (linger == 0)
				linger = now() + 0.2;
			else if (now() > linger)
				break;
		}
		if (!n)
			wait_readable(p, 1);
	}
	for (unsigned long i = 0; i < got; i++) {
		fputs("F ", stdout);
		for (uint32_t b = 0; b < lens[i]; b++)
			printf("%02x", store[i * MAX_FRAME + b]);
		fputc('\n', stdout);
	}
	snprintf(buf, sizeof(buf), ", \"received\": %lu, \"extra\": %lu", got, extra);
	print_stats(p, buf);
	free(store);
	free(lens);
	return got == o->count ? 0 : 3;
}

/* Send frames[0..n) (gen or stdin), BATCH at a time: alloc, write, submit, one kick. */
struct source {
	uint8_t *data; /* stdin frames, MAX_FRAME apart */
	uint32_t *lens;
	unsigned long n;
	const uint8_t *hdr; /* generated frames if data == NULL */
};

static uint32_t source_frame(const struct source *s, unsigned long i, uint8_t *dst, uint32_t room)
{
	uint32_t len;

	if (!s->data)
		return gen_frame(dst, s->hdr, (uint32_t)i);
	len = s->lens[i] < room ? s->lens[i] : room;
	memcpy(dst, s->data + i * MAX_FRAME, len);
	return len;
}

static int send_all(struct mstack_port *p, const struct source *src, double deadline,
		    unsigned long *sent_out)
{
	struct mstack_frame f[BATCH];
	unsigned long sent = 0;
	unsigned have = 0, placed = 0;

	while (sent < src->n && now() < deadline) {
		if (placed == have) {
			unsigned want = src->n - sent < BATCH ? (unsigned)(src->n - sent) : BATCH;

			have = mstack_port_tx_alloc(p, f, want);
			placed = 0;
			for (unsigned k = 0; k < have; k++)
				f[k].len = source_frame(src, sent + k, f[k].data, f[k].len);
		}
		if (have) {
			int r = mstack_port_tx_submit(p, f + placed, have - placed);

			if (r < 0)
				die("tx_submit", r);
			placed += (unsigned)r;
			if (placed == have)
				sent += have;
		}
		int k = mstack_port_kick(p);
		if (k < 0)
			die("kick", k);
		if (!have)
			sched_yield();
	}
	/* Wait until every frame has come back through the completion ring. */
	while (now() < deadline) {
		struct mstack_port_stats s = {.sz = sizeof(s)};

		if (mstack_port_kick(p) < 0)
			break;
		mstack_port_stats(p, &s);
		if (s.tx_inflight == 0)
			break;
		usleep(1000);
	}
	*sent_out = sent;
	return sent == src->n ? 0 : 3;
}

static int read_stdin_frames(struct source *s)
{
	size_t cap = 1024, linecap = 0;
	char *line = NULL;
	ssize_t n;

	s->data = malloc(cap * MAX_FRAME);
	s->lens = malloc(cap * sizeof(*s->lens));
	s->n = 0;
	while (s->data && s->lens && (n = getline(&line, &linecap, stdin)) > 0) {
		if (n < 3 || line[0] != 'F')
			continue;
		if (s->n == cap) {
			cap *= 2;
			s->data = realloc(s->data, cap * MAX_FRAME);
			s->lens = realloc(s->lens, cap * sizeof(*s->lens));
			if (!s->data || !s->lens)
				break;
		}
		uint32_t len = 0;
		for (char *c = line + 2; c[0] && c[1] && c[0] != '\n' && len < MAX_FRAME; c += 2) {
			unsigned v;
			if (sscanf(c, "%2x", &v) != 1)
				break;
			s->data[s->n * MAX_FRAME + len++] = (uint8_t)v;
		}
		s->lens[s->n++] = len;
	}
	free(line);
	return s->data && s->lens ? 0 : -ENOMEM;
}

static int run_tx(struct mstack_port *p, const struct opts *o, bool from_stdin)
{
	struct source src = {.hdr = o->hdr, .n = o->count};
	unsigned long sent = 0;
	char buf[128];
	int rc;

	if (from_stdin && read_stdin_frames(&src))
		die("reading frames", ENOMEM);
	rc = send_all(p, &src, now() + o->timeout, &sent);
	snprintf(buf, sizeof(buf), ", \"sent\": %lu", sent);
	print_stats(p, buf);
	free(src.data);
	free(src.lens);
	return rc;
}

static int run_bench_tx(struct mstack_port *p, const struct opts *o)
{
	struct mstack_frame f[BATCH];
	double t0 = now(), end = t0 + o->seconds, t1;
	unsigned long sent = 0;
	uint32_t seq = 0;
	char buf[160];

	while ((t1 = now()) < end) {
		for (int rep = 0; rep < 16; rep++) {
			unsigned n = mstack_port_tx_alloc(p, f, BATCH);
			for (unsigned k = 0; k < n; k++) {
				memcpy(f[k].data, o->hdr, 14);
				memcpy(f[k].data + 14, &seq, 4);
				memset(f[k].data + 18, 0, 64 - 18);
				f[k].len = 64;
				seq++;
			}
			int r = mstack_port_tx_submit(p, f, n);
			if (r < 0)
				die("tx_submit", r);
			if ((unsigned)r < n)
				mstack_port_tx_release(p, f + r, n - (unsigned)r);
			sent += (unsigned)r;
			if (mstack_port_kick(p) < 0)
				die("kick", EIO);
		}
	}
	while (mstack_port_kick(p) > 0 && now() < end + 2)
		;
	snprintf(buf, sizeof(buf), ", \"sent\": %lu, \"seconds\": %.3f, \"pps\": %.0f", sent,
		 t1 - t0, (double)sent / (t1 - t0));
	print_stats(p, buf);
	return 0;
}

static int run_bench_rx(struct mstack_port *p, const struct opts *o)
{
	struct mstack_frame f[BATCH];
	double t0 = 0, t1 = 0, end = now() + o->timeout;
	unsigned long got = 0;
	char buf[160];

	double last = now(), gap = 0;

	/* The clock starts at the first frame and runs for SECONDS.  The longest gap between
	 * two polls tells whether the scheduler took the core away (drops then follow). */
	while (now() < end) {
		unsigned n = mstack_port_rx_burst(p, f, BATCH);
		double t = now();

		if (t0 && t - last > gap)
			gap = t - last;
		last = t;

		if (n) {
			if (!t0) {
				t0 = now();
				end = t0 + o->seconds;
			}
			got += n;
			mstack_port_rx_release(p, f, n);
			t1 = now();
		}
	}
	snprintf(buf, sizeof(buf),
		 ", \"received\": %lu, \"seconds\": %.3f, \"pps\": %.0f, \"max_gap_us\": %.0f", got,
		 t1 - t0, t1 > t0 ? (double)got / (t1 - t0) : 0.0, gap * 1e6);
	print_stats(p, buf);
	return 0;
}

static void on_fault(int sig)
{
	_exit(100 + sig);
}

/* Fork; the child touches the port's UMEM (what) = 0 or its rings (1).  Returns the signal
 * that stopped the child (SIGSEGV expected: the mappings are MADV_DONTFORK), 0 if it got
 * through, -1 if that cannot be told. */
static int fork_touch(struct mstack_port *p, int what)
{
	struct mstack_frame f[1];
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* Our own handler, so that a sanitizer's does not turn the fault into a report. */
		struct sigaction sa = {.sa_handler = on_fault};

		sigaction(SIGSEGV, &sa, NULL);
		sigaction(SIGBUS, &sa, NULL);
		if (what == 0) {
			if (mstack_port_tx_alloc(p, f, 1) != 1)
				_exit(2);
			((volatile uint8_t *)f[0].data)[0] = 1;
		} else {
			(void)mstack_port_rx_burst(p, f, 1);
		}
		_exit(0);
	}
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	if (WIFSIGNALED(status))
		return WTERMSIG(status);
	if (WIFEXITED(status) && WEXITSTATUS(status) > 100)
		return WEXITSTATUS(status) - 100;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int app_main(int sock, const struct opts *o)
{
	struct mstack_port_geom g;
	struct mstack_port *p;
	int umem_fd = -1, xsk_fd = -1, err, rc;
	int denied;

	/* Proof that this process could not have made the XSK itself. */
	err = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
	denied = err < 0 && (errno == EPERM || errno == EACCES);
	if (err >= 0)
		close(err);
	err = recv_fds(sock, &umem_fd, &xsk_fd, &g);
	if (err)
		die("receiving the port", err);
	close(sock);
	err = mstack_port_open(&p, umem_fd, xsk_fd, &g);
	if (err)
		die("mstack_port_open", err);
	printf("READY uid=%u caps=%" PRIx64 " xsk_denied=%d\n", (unsigned)getuid(), cap_eff(),
	       denied);
	fflush(stdout);
	if (o->wait_stdin) {
		char go[16];

		if (!fgets(go, sizeof(go), stdin))
			die("waiting for go", EPIPE);
	}
	if (o->reopen_check) {
		struct mstack_port *again = NULL;
		int u = dup(umem_fd), x = dup(xsk_fd);
		int e = mstack_port_open(&again, u, x, &g);

		printf("REOPEN err=%d\n", e);
		if (!e)
			mstack_port_close(again);
		else {
			close(u);
			close(x);
		}
	}
	if (o->fork_check) {
		int umem_sig = fork_touch(p, 0), rings_sig = fork_touch(p, 1);

		printf("FORK umem=%d rings=%d\n", umem_sig, rings_sig);
		fflush(stdout);
	}
	if (!strcmp(o->mode, "rx"))
		rc = run_rx(p, o);
	else if (!strcmp(o->mode, "tx"))
		rc = run_tx(p, o, true);
	else if (!strcmp(o->mode, "tx-burst"))
		rc = run_tx(p, o, false);
	else if (!strcmp(o->mode, "bench-tx"))
		rc = run_bench_tx(p, o);
	else
		rc = run_bench_rx(p, o);
	mstack_port_close(p);
	return rc;
}

/* ---------------- main ---------------- */

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void usage(void)
{
	fprintf(stderr, "usage: port_helper --ifname IF [options] rx COUNT | tx | tx-burst COUNT "
			"| bench-tx SECONDS | bench-rx SECONDS\n");
	exit(64);
}

static void parse(int argc, char **argv, struct opts *o)
{
	static char default_obj[4096];
	int i;

	memset(o, 0, sizeof(*o));
	o->frames = MSTACK_PORT_DEFAULT_FRAMES;
	o->ring = MSTACK_PORT_DEFAULT_RING_SIZE;
	o->fill = MSTACK_PORT_DEFAULT_FILL_SIZE;
	o->frame_size = MSTACK_PORT_DEFAULT_FRAME_SIZE;
	o->uid = 65534;
	o->timeout = 20;
	memset(o->hdr, 0xff, 12);
	o->hdr[12] = 0x88;
	o->hdr[13] = 0xb5;
	/* The XDP object sits next to this binary. */
	ssize_t n = readlink("/proc/self/exe", default_obj, sizeof(default_obj) - 32);
	if (n > 0) {
		default_obj[n] = 0;
		char *slash = strrchr(default_obj, '/');
		if (slash)
			strcpy(slash + 1, "xsk_redirect.bpf.o");
	}
	o->bpf_obj = default_obj;
	for (i = 1; i < argc && argv[i][0] == '-'; i += 2) {
		const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage();
		if (!strcmp(k, "--ifname"))
			o->ifname = v;
		else if (!strcmp(k, "--bpf-obj"))
			o->bpf_obj = v;
		else if (!strcmp(k, "--frames"))
			o->frames = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--ring"))
			o->ring = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--fill"))
			o->fill = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--rx-frames"))
			o->rx_frames = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--headroom"))
			o->headroom = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--frame-size"))
			o->frame_size = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--user"))
			o->uid = (uid_t)strtoul(v, NULL, 0);
		else if (!strcmp(k, "--timeout"))
			o->timeout = strtod(v, NULL);
		else if (!strcmp(k, "--daemon-exit"))
			o->daemon_exit = atoi(v) != 0;
		else if (!strcmp(k, "--raw-daemon"))
			o->raw_daemon = atoi(v) != 0;
		else if (!strcmp(k, "--reopen-check"))
			o->reopen_check = atoi(v) != 0;
		else if (!strcmp(k, "--wait-stdin"))
			o->wait_stdin = atoi(v) != 0;
		else if (!strcmp(k, "--fork-check"))
			o->fork_check = atoi(v) != 0;
		else if (!strcmp(k, "--progress"))
			o->progress = strtoul(v, NULL, 0);
		else if (!strcmp(k, "--hdr") && strlen(v) == 28) {
			for (int b = 0; b < 14; b++) {
				unsigned x;
				if (sscanf(v + 2 * b, "%2x", &x) != 1)
					usage();
				o->hdr[b] = (uint8_t)x;
			}
		} else
			usage();
	}
	if (!o->ifname || i >= argc)
		usage();
	o->mode = argv[i];
	if (!strcmp(o->mode, "tx"))
		return;
	if (i + 1 >= argc)
		usage();
	if (!strcmp(o->mode, "rx") || !strcmp(o->mode, "tx-burst"))
		o->count = strtoul(argv[i + 1], NULL, 0);
	else if (!strcmp(o->mode, "bench-tx") || !strcmp(o->mode, "bench-rx"))
		o->seconds = strtod(argv[i + 1], NULL);
	else
		usage();
}

/* The daemon role runs in a process of its own, so that --daemon-exit can kill it right after
 * the handover (as if mstackd died) while the supervisor keeps waiting for the application. */
static int daemon_main(const struct opts *o, int app_sock, int status_fd, int ctl_fd)
{
	struct daemon_side d = {.memfd = -1, .xsk_fd = -1};
	struct mstack_port_geom g;
	char c;
	int err = daemon_setup(o, &d, &g);

	if (!err)
		err = send_fds(app_sock, d.memfd, d.xsk_fd, &g);
	close(app_sock); /* the application sees EOF if setup failed */
	if (err)
		fprintf(stderr, "port_helper: daemon side: %s\n", strerror(-err));
	c = err ? 1 : 0;
	if (write(status_fd, &c, 1) != 1)
		err = -EPIPE;
	if (!err && o->daemon_exit)
		raise(SIGKILL); /* no cleanup at all: the kernel closes and unmaps what we held */
	/* Otherwise hold everything until the supervisor closes ctl_fd. */
	while (read(ctl_fd, &c, 1) > 0)
		;
	daemon_teardown(&d);
	return err ? 2 : 0;
}

/* Wait for pid until deadline (or a SIGTERM/SIGINT if honour_stop), then SIGKILL it. */
static int wait_child(pid_t pid, double deadline, bool honour_stop)
{
	int status;

	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);

		if (w == pid)
			return status;
		if (w < 0 && errno != EINTR)
			return -1;
		if ((honour_stop && stop) || now() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		usleep(5000);
	}
}

int main(int argc, char **argv)
{
	struct opts o;
	int sv[2], st[2], ctl[2], status, dstatus = 0;
	pid_t parent = getpid(), app, daemon;
	double deadline;
	char c = 1;
	unsigned ifindex;

	parse(argc, argv, &o);
	ifindex = if_nametoindex(o.ifname);
	if (!ifindex)
		die(o.ifname, errno);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair", errno);
	fflush(stdout);
	app = fork();
	if (app < 0)
		die("fork", errno);
	if (app == 0) {
		/* The application: unprivileged before any port resource exists. */
		close(sv[0]);
		drop_privileges(o.uid, parent);
		exit(app_main(sv[1], &o));
	}
	close(sv[1]);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	/* Made after the application's fork, so that only the daemon holds their other ends. */
	if (pipe2(st, O_CLOEXEC) < 0 || pipe2(ctl, O_CLOEXEC) < 0)
		die("pipe", errno);
	daemon = fork();
	if (daemon < 0)
		die("fork", errno);
	if (daemon == 0) {
		close(st[0]);
		close(ctl[1]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		exit(daemon_main(&o, sv[0], st[1], ctl[0]));
	}
	close(sv[0]);
	close(st[1]);
	close(ctl[0]);
	if (read(st[0], &c, 1) != 1)
		c = 1;
	close(st[0]);

	deadline = now() + o.timeout + (o.seconds > 0 ? o.seconds : 0) + 10;
	if (o.daemon_exit && c == 0) {
		dstatus = wait_child(daemon, now() + 10, true);
		printf("DAEMON gone sig=%d\n", dstatus != -1 && WIFSIGNALED(dstatus) ?
			WTERMSIG(dstatus) : 0);
		fflush(stdout);
	}
	status = wait_child(app, deadline, true);
	close(ctl[1]); /* the daemon tears down now */
	if (!o.daemon_exit)
		dstatus = wait_child(daemon, now() + 10, false); /* let it tear down */
	/* Whatever happened to the daemon, take the program off the link. */
	bpf_xdp_detach((int)ifindex, XDP_FLAGS_DRV_MODE, NULL);
	if (c)
		return 2;
	if (!o.daemon_exit && (dstatus == -1 || !WIFEXITED(dstatus) || WEXITSTATUS(dstatus)))
		return 5;
	if (status == -1 || !WIFEXITED(status))
		return 4;
	return WEXITSTATUS(status);
}
