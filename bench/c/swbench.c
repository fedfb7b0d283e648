/* swbench.c — mstack-swbench, the frame generator and counter of the switch benchmark
 * (bench/switch.py drives it).  Three roles, each bounded in time:
 *   gen    an AF_XDP sender straight on a NIC (its own XSK, made here with plain syscalls,
 *          driven through libmsport): the traffic source, and the egress limit line;
 *   ports  an application holding N ports from mstackd (libmsctl), each with a connect
 *          binding: counts what arrives on them (NIC -> port) and sends from them
 *          (port -> NIC), on commands read from stdin;
 *   sink   a counting XDP_DROP on a NIC (bpf_link: it goes with the process). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "mstack_ctl.h"
#include "mstack_port.h"
#include "pkt.h"

#define EX_USAGE       64
#define EX_UNAVAILABLE 69
#define BURST          64
#define MAX_PORTS      1024
#define MAX_FLOWS      1024
#define MAX_SEND_S     120.0
#define DRAIN_NS       (200 * 1000 * 1000LL)   /* bound on waiting for completions */
#define IDLE_SWEEPS    2000                     /* empty sweeps before sleeping in poll */

#ifndef SOL_XDP
#define SOL_XDP 283
#endif

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die_usage(const char *msg)
{
	fprintf(stderr, "mstack-swbench: %s\n"
		"usage: mstack-swbench gen   --ifname IF --smac M --dmac M --saddr IP --daddr IP\n"
		"                            --sport P --dport P [--flows K] --size BYTES --seconds S\n"
		"                            [--frames N] [--ring N] [--batch N]\n"
		"       mstack-swbench ports --addr IP --base-port P --daddr IP --dport P --dmac M\n"
		"                            [--run-dir DIR] [--frames N] [--ring N] [--max-seconds S]\n"
		"         stdin: ports N | snap [SPIN_SECONDS] | send SIZE SECONDS USED [BATCH] | quit\n"
		"       mstack-swbench sink  --ifname IF --obj FILE [--max-seconds S]\n"
		"         stdin: snap | quit\n", msg);
	exit(EX_USAGE);
}

static long parse_long(const char *s, long lo, long hi, const char *what)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || !*s || *end || v < lo || v > hi) {
		char m[160];
		snprintf(m, sizeof(m), "%s %s: want a number in %ld..%ld", what, s, lo, hi);
		die_usage(m);
	}
	return v;
}

static double parse_seconds(const char *s, double hi, const char *what)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || !*s || *end || !(v > 0) || v > hi) {
		char m[160];
		snprintf(m, sizeof(m), "%s %s: want seconds in (0, %g]", what, s, hi);
		die_usage(m);
	}
	return v;
}

static uint32_t parse_ip(const char *s, const char *what)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1) {
		char m[160];
		snprintf(m, sizeof(m), "%s %s: want an IPv4 address", what, s);
		die_usage(m);
	}
	return a.s_addr;
}

static void parse_mac_or_die(const char *s, uint8_t mac[6], const char *what)
{
	if (pkt_parse_mac(s, mac)) {
		char m[160];
		snprintf(m, sizeof(m), "%s %s: want aa:bb:cc:dd:ee:ff", what, s);
		die_usage(m);
	}
}

/* ---- sending ------------------------------------------------------------------------------ */

/* One port sending: header templates cycled over its frames. */
struct sender {
	struct mstack_port *port;
	uint8_t (*tmpl)[PKT_HDR_LEN];
	unsigned ntmpl, next;
};

struct send_result {
	uint64_t placed;       /* descriptors put on TX rings */
	uint64_t completed;    /* frames the kernel took (completion ring) */
	uint64_t kicks, kick_errors, ring_full, alloc_short;
	uint64_t k_tx_invalid;
	double seconds;        /* from the first frame to the last completion (or the bound) */
};

static int port_counters(struct mstack_port *p, struct mstack_port_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->sz = sizeof(*st);
	return mstack_port_stats(p, st);
}

/* Send len-byte frames round-robin from s[0..n-1] for `seconds`, `batch` frames per port and
 * turn, then wait (bounded) for the kernel to take what is still on the rings. */
static void send_loop(struct sender *s, unsigned n, uint32_t len, double seconds, unsigned batch,
		      struct send_result *r)
{
	struct mstack_frame f[BURST];
	struct mstack_port_stats st;
	uint64_t comp0 = 0, kicks0 = 0, kerr0 = 0, full0 = 0, short0 = 0, inval0 = 0;
	int64_t t0, deadline, end;

	memset(r, 0, sizeof(*r));
	if (batch > BURST)
		batch = BURST;
	for (unsigned i = 0; i < n; i++) {
		(void)mstack_port_reap(s[i].port);
		port_counters(s[i].port, &st);
		comp0 += st.completions;
		kicks0 += st.kicks;
		kerr0 += st.kick_errors;
		full0 += st.tx_ring_full;
		short0 += st.tx_alloc_short;
		inval0 += st.k_tx_invalid_descs;
	}
	t0 = now_ns();
	deadline = t0 + (int64_t)(seconds * 1e9);
	for (uint64_t round = 0; !stop_signal; round++) {
		if ((round & 15) == 0 && now_ns() >= deadline)
			break;
		for (unsigned i = 0; i < n; i++) {
			struct sender *x = &s[i];
			unsigned m = mstack_port_tx_alloc(x->port, f, batch);
			for (unsigned k = 0; k < m; k++) {
				memcpy(f[k].data, x->tmpl[x->next], PKT_HDR_LEN);
				if (++x->next == x->ntmpl)
					x->next = 0;
				f[k].len = len;
			}
			int placed = m ? mstack_port_tx_submit(x->port, f, m) : 0;
			if (placed < 0)
				placed = 0;
			if ((unsigned)placed < m)
				(void)mstack_port_tx_release(x->port, f + placed, m - (unsigned)placed);
			r->placed += (unsigned)placed;
			(void)mstack_port_kick(x->port);
		}
	}
	/* What is still on the rings goes out (or the bound expires). */
	end = now_ns() + DRAIN_NS;
	for (;;) {
		int waiting = 0;
		for (unsigned i = 0; i < n; i++) {
			int left = mstack_port_kick(s[i].port);
			port_counters(s[i].port, &st);
			if (left > 0 || st.tx_inflight)
				waiting = 1;
		}
		if (!waiting || now_ns() >= end)
			break;
		usleep(100);
	}
	r->seconds = (double)(now_ns() - t0) / 1e9;
	for (unsigned i = 0; i < n; i++) {
		port_counters(s[i].port, &st);
		r->completed += st.completions;
		r->kicks += st.kicks;
		r->kick_errors += st.kick_errors;
		r->ring_full += st.tx_ring_full;
		r->alloc_short += st.tx_alloc_short;
		r->k_tx_invalid += st.k_tx_invalid_descs;
	}
	r->completed -= comp0;
	r->kicks -= kicks0;
	r->kick_errors -= kerr0;
	r->ring_full -= full0;
	r->alloc_short -= short0;
	r->k_tx_invalid -= inval0;
}

static void print_send_result(const struct send_result *r, uint32_t len, unsigned used)
{
	printf("{\"size\": %u, \"ports_used\": %u, \"placed\": %llu, \"sent\": %llu, "
	       "\"seconds\": %.6f, \"fps\": %.1f, \"kicks\": %llu, \"kick_errors\": %llu, "
	       "\"tx_ring_full\": %llu, \"tx_alloc_short\": %llu, \"k_tx_invalid_descs\": %llu}\n",
	       len, used, (unsigned long long)r->placed, (unsigned long long)r->completed,
	       r->seconds, r->seconds > 0 ? (double)r->completed / r->seconds : 0.0,
	       (unsigned long long)r->kicks, (unsigned long long)r->kick_errors,
	       (unsigned long long)r->ring_full, (unsigned long long)r->alloc_short,
	       (unsigned long long)r->k_tx_invalid);
	fflush(stdout);
}

/* ---- gen: an XSK of our own straight on a NIC ---------------------------------------------- */

/* What mstackd does for a port (utcp_c/port/README.md, handover contract), done here for a
 * NIC: sealed memfd UMEM, four rings, bound in copy mode with need-wakeup.  The result goes
 * through mstack_port_open like any port, so the limit line runs the same sending code. */
static int raw_xsk_port(const char *ifname, uint32_t frames, uint32_t ring,
			struct mstack_port **out)
{
	struct mstack_port_geom g;
	struct xdp_umem_reg mr;
	struct sockaddr_xdp sxdp;
	const int ropt[4] = { XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING,
			      XDP_TX_RING };
	uint32_t rsz[4] = { 2 * ring, ring, ring, ring };
	uint64_t size = (uint64_t)frames * MSTACK_PORT_DEFAULT_FRAME_SIZE;
	unsigned ifindex = if_nametoindex(ifname);
	int memfd = -1, xsk = -1, err;
	void *area = MAP_FAILED;

	if (!ifindex)
		return -errno;
	memfd = memfd_create("swbench-umem", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (memfd < 0)
		return -errno;
	if (ftruncate(memfd, (off_t)size) < 0 ||
	    fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		goto fail;
	area = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (area == MAP_FAILED)
		goto fail;
	xsk = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (xsk < 0)
		goto fail;
	memset(&mr, 0, sizeof(mr));
	mr.addr = (uintptr_t)area;
	mr.len = size;
	mr.chunk_size = MSTACK_PORT_DEFAULT_FRAME_SIZE;
	mr.headroom = 0;
	if (setsockopt(xsk, SOL_XDP, XDP_UMEM_REG, &mr, sizeof(mr)) < 0)
		goto fail;
	munmap(area, size); /* the registration pinned the pages; libmsport maps its own view */
	area = MAP_FAILED;
	for (int i = 0; i < 4; i++)
		if (setsockopt(xsk, SOL_XDP, ropt[i], &rsz[i], sizeof(rsz[i])) < 0)
			goto fail;
	memset(&sxdp, 0, sizeof(sxdp));
	sxdp.sxdp_family = AF_XDP;
	sxdp.sxdp_ifindex = ifindex;
	sxdp.sxdp_queue_id = 0;
	sxdp.sxdp_flags = XDP_COPY | XDP_USE_NEED_WAKEUP;
	if (bind(xsk, (struct sockaddr *)&sxdp, sizeof(sxdp)) < 0)
		goto fail;
	memset(&g, 0, sizeof(g));
	g.sz = sizeof(g);
	g.frame_size = MSTACK_PORT_DEFAULT_FRAME_SIZE;
	g.umem_size = size;
	g.rx_size = g.tx_size = g.comp_size = ring;
	g.fill_size = 2 * ring;
	g.bind_flags = XDP_COPY | XDP_USE_NEED_WAKEUP;
	g.rx_frames = 0; /* same split as a port from mstackd: half and half */
	err = mstack_port_open(out, memfd, xsk, &g);
	if (err) {
		close(memfd);
		close(xsk);
	}
	return err;
fail:
	err = -errno;
	if (area != MAP_FAILED)
		munmap(area, size);
	if (xsk >= 0)
		close(xsk);
	close(memfd);
	return err;
}

static int cmd_gen(int argc, char **argv)
{
	enum { O_IF = 256, O_SMAC, O_DMAC, O_SADDR, O_DADDR, O_SPORT, O_DPORT, O_FLOWS, O_SIZE,
	       O_SECONDS, O_FRAMES, O_RING, O_BATCH };
	static const struct option lo[] = {
		{ "ifname", required_argument, NULL, O_IF },
		{ "smac", required_argument, NULL, O_SMAC },
		{ "dmac", required_argument, NULL, O_DMAC },
		{ "saddr", required_argument, NULL, O_SADDR },
		{ "daddr", required_argument, NULL, O_DADDR },
		{ "sport", required_argument, NULL, O_SPORT },
		{ "dport", required_argument, NULL, O_DPORT },
		{ "flows", required_argument, NULL, O_FLOWS },
		{ "size", required_argument, NULL, O_SIZE },
		{ "seconds", required_argument, NULL, O_SECONDS },
		{ "frames", required_argument, NULL, O_FRAMES },
		{ "ring", required_argument, NULL, O_RING },
		{ "batch", required_argument, NULL, O_BATCH },
		{ NULL, 0, NULL, 0 },
	};
	const char *ifname = NULL;
	struct pkt_flow fl;
	long flows = 1, size = 0, frames = 512, ring = 256, batch = BURST, dport = -1, sport = -1;
	double seconds = 0;
	int have = 0, c, err;
	static uint8_t tmpl[MAX_FLOWS][PKT_HDR_LEN];
	struct mstack_port *port;
	struct sender s;
	struct send_result r;

	memset(&fl, 0, sizeof(fl));
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case O_IF: ifname = optarg; break;
		case O_SMAC: parse_mac_or_die(optarg, fl.smac, "--smac"); have |= 1; break;
		case O_DMAC: parse_mac_or_die(optarg, fl.dmac, "--dmac"); have |= 2; break;
		case O_SADDR: fl.saddr = parse_ip(optarg, "--saddr"); have |= 4; break;
		case O_DADDR: fl.daddr = parse_ip(optarg, "--daddr"); have |= 8; break;
		case O_SPORT: sport = parse_long(optarg, 1, 65535, "--sport"); break;
		case O_DPORT: dport = parse_long(optarg, 1, 65535, "--dport"); break;
		case O_FLOWS: flows = parse_long(optarg, 1, MAX_FLOWS, "--flows"); break;
		case O_SIZE: size = parse_long(optarg, PKT_MIN_LEN, PKT_MAX_LEN, "--size"); break;
		case O_SECONDS: seconds = parse_seconds(optarg, MAX_SEND_S, "--seconds"); break;
		case O_FRAMES: frames = parse_long(optarg, 64, 1 << 16, "--frames"); break;
		case O_RING: ring = parse_long(optarg, 32, 1 << 14, "--ring"); break;
		case O_BATCH: batch = parse_long(optarg, 1, BURST, "--batch"); break;
		default: die_usage("gen: bad option");
		}
	}
	if (!ifname || have != 15 || sport < 0 || dport < 0 || !size || seconds <= 0)
		die_usage("gen: --ifname, --smac, --dmac, --saddr, --daddr, --sport, --dport, "
			  "--size and --seconds are required");
	if (dport + flows - 1 > 65535)
		die_usage("gen: --dport + --flows runs past port 65535");
	for (long k = 0; k < flows; k++) {
		fl.sport = (uint16_t)sport;
		fl.dport = (uint16_t)(dport + k);
		(void)pkt_build(tmpl[k], &fl, (uint32_t)size);
	}
	err = raw_xsk_port(ifname, (uint32_t)frames, (uint32_t)ring, &port);
	if (err) {
		fprintf(stderr, "mstack-swbench gen: AF_XDP socket on %s: %s\n", ifname,
			strerror(-err));
		return 1;
	}
	s = (struct sender){ .port = port, .tmpl = tmpl, .ntmpl = (unsigned)flows };
	send_loop(&s, 1, (uint32_t)size, seconds, (unsigned)batch, &r);
	mstack_port_close(port);
	print_send_result(&r, (uint32_t)size, 1);
	return 0;
}

/* ---- ports: an application with N ports from mstackd --------------------------------------- */

struct bport {
	struct mstack_port *port;
	uint32_t port_id;
	int shadow_fd;
	int binding_id;
	uint64_t rx, rx_bytes, rx_at_snap;
	uint8_t tmpl[1][PKT_HDR_LEN];
	struct pkt_flow flow;
};

struct app {
	struct mstack_ctl *ctl;
	const char *run_dir;
	uint32_t addr, daddr;
	uint16_t base_port, dport;
	uint8_t dmac[6];
	uint32_t frames, ring;
	unsigned n;
	int64_t spin_until;                 /* busy-poll, never sleep, until then (snap SECONDS) */
	struct bport p[MAX_PORTS];
	struct pollfd pfd[MAX_PORTS + 1];   /* [0]: stdin, then the ports' XSKs */
};

static void ctl_error(struct app *a, const char *what, int rc)
{
	const char *d = mstack_ctl_last_detail(a->ctl);

	fprintf(stderr, "mstack-swbench ports: %s: %s%s%s\n", what, strerror(-rc),
		*d ? ": " : "", d);
}

/* A port with a connect binding on addr:base_port+i: frames to it go straight to this port,
 * and this port may send from it. */
static int grow_one(struct app *a)
{
	struct mstack_ctl_port_req req = { .sz = sizeof(req), .frames = a->frames,
					   .ring_size = a->ring };
	struct mstack_ctl_port info;
	struct bport *b = &a->p[a->n];
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int one = 1, rc;

	memset(b, 0, sizeof(*b));
	b->shadow_fd = -1;
	rc = mstack_ctl_port_open(a->ctl, &req, &info);
	if (rc < 0) {
		ctl_error(a, "PORT_OPEN", rc);
		return rc;
	}
	b->port_id = info.port_id;
	rc = mstack_port_open(&b->port, info.umem_fd, info.xsk_fd, &info.geom);
	if (rc) {
		fprintf(stderr, "mstack-swbench ports: mapping port %u: %s\n", info.port_id,
			strerror(-rc));
		close(info.umem_fd);
		close(info.xsk_fd);
		(void)mstack_ctl_port_close(a->ctl, info.port_id);
		return rc;
	}
	b->shadow_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_addr.s_addr = a->addr;
	sa.sin_port = htons((uint16_t)(a->base_port + a->n));
	if (b->shadow_fd < 0 ||
	    setsockopt(b->shadow_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(b->shadow_fd, (struct sockaddr *)&sa, sizeof(sa))) {
		rc = -errno;
		fprintf(stderr, "mstack-swbench ports: shadow socket on port %u: %s\n",
			a->base_port + a->n, strerror(-rc));
		goto undo;
	}
	rc = mstack_ctl_register(a->ctl, b->shadow_fd, MSTACK_REG_CONNECT, b->port_id, NULL);
	if (rc < 0) {
		ctl_error(a, "REGISTER", rc);
		goto undo;
	}
	b->binding_id = rc;
	memcpy(b->flow.smac, info.nic_mac, 6);
	memcpy(b->flow.dmac, a->dmac, 6);
	b->flow.saddr = a->addr;
	b->flow.daddr = a->daddr;
	b->flow.sport = (uint16_t)(a->base_port + a->n);
	b->flow.dport = a->dport;
	a->pfd[a->n + 1] = (struct pollfd){ .fd = mstack_port_fd(b->port), .events = POLLIN };
	a->n++;
	return 0;
undo:
	if (b->shadow_fd >= 0)
		close(b->shadow_fd);
	mstack_port_close(b->port);
	(void)mstack_ctl_port_close(a->ctl, b->port_id);
	return rc;
}

/* The last port goes: binding released, port closed, its veth removed by the daemon. */
static int shrink_one(struct app *a)
{
	struct bport *b = &a->p[a->n - 1];
	int rc = mstack_ctl_release(a->ctl, (uint32_t)b->binding_id);

	if (rc < 0)
		ctl_error(a, "RELEASE", rc);
	close(b->shadow_fd);
	mstack_port_close(b->port);
	if (!rc) {
		rc = mstack_ctl_port_close(a->ctl, b->port_id);
		if (rc < 0)
			ctl_error(a, "PORT_CLOSE", rc);
	}
	a->n--;
	return rc;
}

/* One pass over every port's RX ring; returns frames taken. */
static unsigned sweep(struct app *a)
{
	struct mstack_frame f[BURST];
	unsigned total = 0;

	for (unsigned i = 0; i < a->n; i++) {
		struct bport *b = &a->p[i];
		unsigned m = mstack_port_rx_burst(b->port, f, BURST);
		if (!m)
			continue;
		for (unsigned k = 0; k < m; k++)
			b->rx_bytes += f[k].len;
		b->rx += m;
		total += m;
		(void)mstack_port_rx_release(b->port, f, m);
	}
	return total;
}

static void snap(struct app *a)
{
	struct mstack_port_stats st;
	uint64_t rx = 0, bytes = 0, dropped = 0, fill_empty = 0, ring_full = 0;
	unsigned hit = 0;

	while (sweep(a))
		; /* what already arrived belongs to the run being measured */
	for (unsigned i = 0; i < a->n; i++) {
		struct bport *b = &a->p[i];
		rx += b->rx;
		bytes += b->rx_bytes;
		hit += b->rx != b->rx_at_snap;
		b->rx_at_snap = b->rx;
		if (port_counters(b->port, &st) == 0) {
			dropped += st.k_rx_dropped;
			fill_empty += st.k_rx_fill_ring_empty_descs;
			ring_full += st.k_rx_ring_full;
		}
	}
	printf("{\"ports\": %u, \"rx_frames\": %llu, \"rx_bytes\": %llu, \"ports_hit\": %u, "
	       "\"k_rx_dropped\": %llu, \"k_rx_fill_ring_empty\": %llu, \"k_rx_ring_full\": %llu, "
	       "\"t\": %.6f}\n", a->n, (unsigned long long)rx, (unsigned long long)bytes, hit,
	       (unsigned long long)dropped, (unsigned long long)fill_empty,
	       (unsigned long long)ring_full, (double)now_ns() / 1e9);
	fflush(stdout);
}

static void do_send(struct app *a, char *args)
{
	static struct sender s[MAX_PORTS];
	long size, used, batch = BURST;
	double seconds;
	struct send_result r;
	char *tok[4];
	int nt = 0;

	for (char *t = strtok(args, " \t"); t && nt < 4; t = strtok(NULL, " \t"))
		tok[nt++] = t;
	if (nt < 3) {
		printf("{\"error\": \"send SIZE SECONDS USED [BATCH]\"}\n");
		fflush(stdout);
		return;
	}
	size = strtol(tok[0], NULL, 10);
	seconds = strtod(tok[1], NULL);
	used = strtol(tok[2], NULL, 10);
	if (nt == 4)
		batch = strtol(tok[3], NULL, 10);
	if (size < (long)PKT_MIN_LEN || size > (long)PKT_MAX_LEN || !(seconds > 0) ||
	    seconds > MAX_SEND_S || used < 1 || used > (long)a->n || batch < 1 || batch > BURST) {
		printf("{\"error\": \"bad send arguments (ports held: %u)\"}\n", a->n);
		fflush(stdout);
		return;
	}
	for (long i = 0; i < used; i++) {
		struct bport *b = &a->p[i];
		(void)pkt_build(b->tmpl[0], &b->flow, (uint32_t)size);
		s[i] = (struct sender){ .port = b->port, .tmpl = b->tmpl, .ntmpl = 1 };
	}
	send_loop(s, (unsigned)used, (uint32_t)size, seconds, (unsigned)batch, &r);
	print_send_result(&r, (uint32_t)size, (unsigned)used);
}

/* Returns 1 to quit. */
static int command(struct app *a, char *line)
{
	if (!strcmp(line, "quit"))
		return 1;
	if (!strcmp(line, "snap") || !strncmp(line, "snap ", 5)) {
		/* "snap SECONDS": after the snapshot, busy-poll for that long without ever sleeping
		 * in poll(), so a run's frames never wait on a wakeup. */
		double spin = line[4] ? strtod(line + 5, NULL) : 0;
		snap(a);
		a->spin_until = spin > 0 && spin <= MAX_SEND_S ? now_ns() + (int64_t)(spin * 1e9) : 0;
	} else if (!strncmp(line, "ports ", 6)) {
		/* Open or close ports (the last ones first) until N are held. */
		long want = strtol(line + 6, NULL, 10);
		int rc = 0;
		if (want < 0 || want > MAX_PORTS) {
			printf("error ports: want 0..%d\n", MAX_PORTS);
		} else {
			while (a->n < (unsigned)want && !stop_signal && !(rc = grow_one(a)))
				;
			while (!rc && a->n > (unsigned)want && !stop_signal)
				rc = shrink_one(a);
			if (rc)
				printf("error ports: %s\n", strerror(-rc));
			else
				printf("ready %u\n", a->n);
		}
		fflush(stdout);
	} else if (!strncmp(line, "send ", 5)) {
		do_send(a, line + 5);
	} else {
		printf("error unknown command\n");
		fflush(stdout);
	}
	return 0;
}

/* Read whatever stdin has; run complete lines.  Returns 1 on quit or EOF. */
static int read_commands(struct app *a, char *buf, size_t cap, size_t *have)
{
	ssize_t got = read(0, buf + *have, cap - 1 - *have);
	char *nl;

	if (got == 0)
		return 1;
	if (got < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : 1;
	*have += (size_t)got;
	buf[*have] = '\0';
	while ((nl = strchr(buf, '\n'))) {
		*nl = '\0';
		if (command(a, buf))
			return 1;
		*have -= (size_t)(nl + 1 - buf);
		memmove(buf, nl + 1, *have + 1);
	}
	if (*have >= cap - 1)
		*have = 0; /* a line that long is no command */
	return 0;
}

static int cmd_ports(int argc, char **argv)
{
	enum { O_RUN_DIR = 256, O_ADDR, O_BASE, O_DADDR, O_DPORT, O_DMAC, O_FRAMES, O_RING,
	       O_MAX, O_IDLE };
	static const struct option lo[] = {
		{ "run-dir", required_argument, NULL, O_RUN_DIR },
		{ "addr", required_argument, NULL, O_ADDR },
		{ "base-port", required_argument, NULL, O_BASE },
		{ "daddr", required_argument, NULL, O_DADDR },
		{ "dport", required_argument, NULL, O_DPORT },
		{ "dmac", required_argument, NULL, O_DMAC },
		{ "frames", required_argument, NULL, O_FRAMES },
		{ "ring", required_argument, NULL, O_RING },
		{ "max-seconds", required_argument, NULL, O_MAX },
		{ "idle-sweeps", required_argument, NULL, O_IDLE },
		{ NULL, 0, NULL, 0 },
	};
	static struct app a;
	double max_s = 3600;
	int c, have = 0, rc, quit = 0;
	char buf[512];
	size_t blen = 0;
	unsigned idle = 0, idle_sweeps = IDLE_SWEEPS;
	int64_t deadline;

	memset(&a, 0, sizeof(a));
	a.frames = 512;
	a.ring = 256;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case O_RUN_DIR: a.run_dir = optarg; break;
		case O_ADDR: a.addr = parse_ip(optarg, "--addr"); have |= 1; break;
		case O_BASE:
			a.base_port = (uint16_t)parse_long(optarg, 1, 65535 - MAX_PORTS, "--base-port");
			have |= 2;
			break;
		case O_DADDR: a.daddr = parse_ip(optarg, "--daddr"); have |= 4; break;
		case O_DPORT: a.dport = (uint16_t)parse_long(optarg, 1, 65535, "--dport"); have |= 8; break;
		case O_DMAC: parse_mac_or_die(optarg, a.dmac, "--dmac"); have |= 16; break;
		case O_FRAMES: a.frames = (uint32_t)parse_long(optarg, 64, 1 << 16, "--frames"); break;
		case O_RING: a.ring = (uint32_t)parse_long(optarg, 32, 1 << 14, "--ring"); break;
		case O_MAX: max_s = parse_seconds(optarg, 86400, "--max-seconds"); break;
		case O_IDLE: idle_sweeps = (unsigned)parse_long(optarg, 1, 1 << 30, "--idle-sweeps"); break;
		default: die_usage("ports: bad option");
		}
	}
	if (have != 31)
		die_usage("ports: --addr, --base-port, --daddr, --dport and --dmac are required");
	rc = mstack_ctl_connect(&a.ctl, a.run_dir);
	if (rc) {
		fprintf(stderr, "mstack-swbench ports: connect to mstackd: %s\n", strerror(-rc));
		return EX_UNAVAILABLE;
	}
	(void)fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	a.pfd[0] = (struct pollfd){ .fd = 0, .events = POLLIN };
	printf("ready 0\n");
	fflush(stdout);
	deadline = now_ns() + (int64_t)(max_s * 1e9);
	/* Busy sweeps while frames flow; asleep in poll (all XSKs and stdin) when idle. */
	while (!quit && !stop_signal) {
		if (sweep(&a)) {
			idle = 0;
			continue;
		}
		if (++idle < idle_sweeps && (idle & 255))
			continue;
		int64_t t = now_ns();
		if (t >= deadline) {
			fprintf(stderr, "mstack-swbench ports: --max-seconds reached\n");
			break;
		}
		int sleep_ms = idle >= idle_sweeps && t >= a.spin_until ? 100 : 0;
		int n = poll(a.pfd, sleep_ms ? a.n + 1 : 1, sleep_ms);
		if (n > 0 && a.pfd[0].revents)
			quit = read_commands(&a, buf, sizeof(buf), &blen);
	}
	for (unsigned i = 0; i < a.n; i++) {
		mstack_port_close(a.p[i].port);
		close(a.p[i].shadow_fd);
	}
	mstack_ctl_close(a.ctl); /* the daemon drops the ports and, with the sockets, the bindings */
	return 0;
}

/* ---- sink: a counting XDP_DROP ------------------------------------------------------------ */

static int sink_read(int map_fd, int ncpu, uint64_t out[2])
{
	uint64_t v[512];

	if (ncpu > 512)
		return -E2BIG;
	for (uint32_t k = 0; k < 2; k++) {
		out[k] = 0;
		if (bpf_map_lookup_elem(map_fd, &k, v))
			return -errno;
		for (int c = 0; c < ncpu; c++)
			out[k] += v[c];
	}
	return 0;
}

static int cmd_sink(int argc, char **argv)
{
	enum { O_IF = 256, O_OBJ, O_MAX };
	static const struct option lo[] = {
		{ "ifname", required_argument, NULL, O_IF },
		{ "obj", required_argument, NULL, O_OBJ },
		{ "max-seconds", required_argument, NULL, O_MAX },
		{ NULL, 0, NULL, 0 },
	};
	const char *ifname = NULL, *obj_path = NULL;
	double max_s = 3600;
	struct bpf_object *obj = NULL;
	struct bpf_program *prog;
	struct bpf_map *map;
	struct bpf_link *link = NULL;
	int c, err, ncpu, ret = 1;
	unsigned ifindex;
	int64_t deadline;
	char buf[256];
	size_t have = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case O_IF: ifname = optarg; break;
		case O_OBJ: obj_path = optarg; break;
		case O_MAX: max_s = parse_seconds(optarg, 86400, "--max-seconds"); break;
		default: die_usage("sink: bad option");
		}
	}
	if (!ifname || !obj_path)
		die_usage("sink: --ifname and --obj are required");
	ifindex = if_nametoindex(ifname);
	if (!ifindex) {
		fprintf(stderr, "mstack-swbench sink: %s: %s\n", ifname, strerror(errno));
		return 1;
	}
	ncpu = libbpf_num_possible_cpus();
	obj = bpf_object__open_file(obj_path, NULL);
	if (!obj) {
		fprintf(stderr, "mstack-swbench sink: %s: %s\n", obj_path, strerror(errno));
		return 1;
	}
	err = bpf_object__load(obj);
	prog = bpf_object__find_program_by_name(obj, "bench_sink");
	map = bpf_object__find_map_by_name(obj, "sink_counts");
	if (err || !prog || !map || ncpu <= 0) {
		fprintf(stderr, "mstack-swbench sink: loading %s failed\n", obj_path);
		goto out;
	}
	/* A bpf_link, not a netlink attach: the program goes when this process does, however it
	 * ends.  The kernel refuses if another XDP program is already on the link. */
	link = bpf_program__attach_xdp(prog, (int)ifindex);
	if (!link) {
		fprintf(stderr, "mstack-swbench sink: attach to %s: %s\n", ifname,
			strerror(errno));
		goto out;
	}
	printf("ready\n");
	fflush(stdout);
	(void)fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	deadline = now_ns() + (int64_t)(max_s * 1e9);
	while (!stop_signal && now_ns() < deadline) {
		struct pollfd p = { .fd = 0, .events = POLLIN };
		if (poll(&p, 1, 200) <= 0)
			continue;
		ssize_t got = read(0, buf + have, sizeof(buf) - 1 - have);
		if (got <= 0 && !(got < 0 && (errno == EAGAIN || errno == EINTR)))
			break;
		if (got < 0)
			continue;
		have += (size_t)got;
		buf[have] = '\0';
		char *nl;
		int quit = 0;
		while (!quit && (nl = strchr(buf, '\n'))) {
			*nl = '\0';
			if (!strcmp(buf, "quit")) {
				quit = 1;
			} else if (!strcmp(buf, "snap")) {
				uint64_t v[2];
				err = sink_read(bpf_map__fd(map), ncpu, v);
				if (err)
					printf("{\"error\": \"%s\"}\n", strerror(-err));
				else
					printf("{\"frames\": %llu, \"bytes\": %llu, \"t\": %.6f}\n",
					       (unsigned long long)v[0], (unsigned long long)v[1],
					       (double)now_ns() / 1e9);
				fflush(stdout);
			}
			have -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, have + 1);
		}
		if (quit)
			break;
		if (have >= sizeof(buf) - 1)
			have = 0;
	}
	ret = 0;
out:
	bpf_link__destroy(link);
	bpf_object__close(obj);
	return ret;
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: poll returns at once */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2)
		die_usage("a role is required: gen, ports or sink");
	if (!strcmp(argv[1], "gen"))
		return cmd_gen(argc - 1, argv + 1);
	if (!strcmp(argv[1], "ports"))
		return cmd_ports(argc - 1, argv + 1);
	if (!strcmp(argv[1], "sink"))
		return cmd_sink(argc - 1, argv + 1);
	die_usage("unknown role");
	return EX_USAGE;
}
