/* responder.c — mstack-responder, the switch's frame-level test peer: it takes a port from
 * mstackd, registers a listening shadow socket, joins its listen group and answers frames
 * with frame.c (SYN -> SYN-ACK, data -> echo, FIN -> FIN-ACK), with no TCP stack at all.
 * On SIGTERM/SIGINT or after --max-seconds it leaves cleanly and writes its counts as JSON. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <sys/stat.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "mstack_ctl.h"
#include "mstack_port.h"

#define EX_USAGE       64
#define EX_UNAVAILABLE 69
#define BURST          64
#define POLL_MS        100

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

struct opts {
	const char *run_dir;      /* NULL: $MSTACK_RUN_DIR or /run/mstack */
	struct sockaddr_in listen;
	int join;
	int reuseport;
	int stream;               /* stream rules (frame.h) */
	const char *count_file;   /* NULL: stdout */
	long max_seconds;         /* 0: until a signal */
	long lease;               /* > 0: LEASE this many ports and print them (no use made) */
};

struct responder {
	struct opts o;
	struct mstack_ctl *ctl;
	struct mstack_port *port;
	struct mstack_ctl_port info;
	int have_port;             /* the daemon opened info.port_id for us */
	int shadow_fd;
	int binding_id;            /* -1: none */
	int joined;
	struct resp_cfg cfg;
	struct resp_counts counts;
	uint64_t tx;               /* answers put on the TX ring */
	uint64_t tx_dropped;       /* answers built but not sent (no frame, ring full) */
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: mstack-responder --listen IP:PORT [--run-dir DIR] [--join | --no-join]\n"
		"                        [--reuseport] [--stream] [--count-file FILE] [--max-seconds N]\n"
		"                        [--lease N]\n"
		"Takes a port from mstackd, registers a listening shadow socket on IP:PORT, joins\n"
		"its listen group (unless --no-join), prints `ready <port_id> <binding_id>`, then\n"
		"answers SYNs with SYN-ACKs, echoes data, answers FINs, until SIGTERM/SIGINT or N\n"
		"seconds; then writes its counts as one JSON line to FILE (default: stdout).\n"
		"--stream: echo by stream offset and acknowledge only what the peer confirmed\n"
		"(a kernel TCP client then gets its byte stream back with any amount in flight).\n"
		"--lease N: also lease N local ports for active opens and print `lease ID FIRST N`.\n");
}

static int parse_listen(const char *s, struct sockaddr_in *sa)
{
	char host[INET_ADDRSTRLEN];
	const char *colon = strrchr(s, ':');
	char *end;

	if (!colon || (size_t)(colon - s) >= sizeof(host) || colon == s || !colon[1])
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
		return -1;
	errno = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (errno || *end || port > 65535 || colon[1] == '-' || colon[1] == '+')
		return -1;
	sa->sin_port = htons((uint16_t)port);
	return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	enum { O_RUN_DIR = 256, O_LISTEN, O_JOIN, O_NO_JOIN, O_REUSEPORT, O_STREAM, O_COUNT_FILE,
	       O_MAX_SECONDS, O_LEASE, O_HELP };
	static const struct option longopts[] = {
		{ "run-dir", required_argument, NULL, O_RUN_DIR },
		{ "listen", required_argument, NULL, O_LISTEN },
		{ "join", no_argument, NULL, O_JOIN },
		{ "no-join", no_argument, NULL, O_NO_JOIN },
		{ "reuseport", no_argument, NULL, O_REUSEPORT },
		{ "stream", no_argument, NULL, O_STREAM },
		{ "count-file", required_argument, NULL, O_COUNT_FILE },
		{ "max-seconds", required_argument, NULL, O_MAX_SECONDS },
		{ "lease", required_argument, NULL, O_LEASE },
		{ "help", no_argument, NULL, O_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int have_listen = 0, c;
	char *end;

	memset(o, 0, sizeof(*o));
	o->join = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case O_RUN_DIR:
			o->run_dir = optarg;
			break;
		case O_LISTEN:
			if (parse_listen(optarg, &o->listen)) {
				fprintf(stderr, "mstack-responder: --listen %s: want IPv4:PORT\n",
					optarg);
				return EX_USAGE;
			}
			have_listen = 1;
			break;
		case O_JOIN:
			o->join = 1;
			break;
		case O_NO_JOIN:
			o->join = 0;
			break;
		case O_REUSEPORT:
			o->reuseport = 1;
			break;
		case O_STREAM:
			o->stream = 1;
			break;
		case O_COUNT_FILE:
			o->count_file = optarg;
			break;
		case O_MAX_SECONDS:
			errno = 0;
			o->max_seconds = strtol(optarg, &end, 10);
			if (errno || *end || !*optarg || o->max_seconds < 0) {
				fprintf(stderr, "mstack-responder: --max-seconds %s: want a number "
						"of seconds\n", optarg);
				return EX_USAGE;
			}
			break;
		case O_LEASE:
			errno = 0;
			o->lease = strtol(optarg, &end, 10);
			if (errno || *end || !*optarg || o->lease < 1 || o->lease > 4096) {
				fprintf(stderr, "mstack-responder: --lease %s: want 1..4096 ports\n",
					optarg);
				return EX_USAGE;
			}
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		default:
			fprintf(stderr, "mstack-responder: bad option %s\n", argv[optind - 1]);
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mstack-responder: unexpected argument %s\n", argv[optind]);
		return EX_USAGE;
	}
	if (!have_listen) {
		fprintf(stderr, "mstack-responder: --listen IP:PORT is required\n");
		usage(stderr);
		return EX_USAGE;
	}
	return 0;
}

/* A control call failed: say what, why, and the daemon's words. */
static void ctl_error(const struct responder *r, const char *what, int rc)
{
	const char *d = r->ctl ? mstack_ctl_last_detail(r->ctl) : "";

	fprintf(stderr, "mstack-responder: %s: %s%s%s\n", what, strerror(-rc), *d ? ": " : "", d);
}

/* The shadow kernel socket: bound and listening on the 3-tuple the port serves. */
static int make_shadow(struct responder *r)
{
	int one = 1;
	socklen_t alen = sizeof(r->o.listen);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    (r->o.reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one))) ||
	    bind(fd, (struct sockaddr *)&r->o.listen, sizeof(r->o.listen)) ||
	    listen(fd, SOMAXCONN) ||
	    getsockname(fd, (struct sockaddr *)&r->o.listen, &alen)) { /* port 0: the kernel's */
		int err = -errno;
		close(fd);
		return err;
	}
	r->shadow_fd = fd;
	return 0;
}

static int setup(struct responder *r)
{
	int rc;

	rc = mstack_ctl_connect(&r->ctl, r->o.run_dir);
	if (rc) {
		const char *dir = r->o.run_dir ? r->o.run_dir : getenv("MSTACK_RUN_DIR");
		fprintf(stderr, "mstack-responder: connect to mstackd at %s/app.sock: %s\n",
			dir && *dir ? dir : "/run/mstack", strerror(-rc));
		return EX_UNAVAILABLE;
	}
	rc = mstack_ctl_port_open(r->ctl, NULL, &r->info);
	if (rc < 0) {
		ctl_error(r, "PORT_OPEN", rc);
		return 1;
	}
	r->have_port = 1;
	rc = mstack_port_open(&r->port, r->info.umem_fd, r->info.xsk_fd, &r->info.geom);
	if (rc) {
		fprintf(stderr, "mstack-responder: mapping port %u: %s\n", r->info.port_id,
			strerror(-rc));
		close(r->info.umem_fd);
		close(r->info.xsk_fd);
		return 1;
	}
	rc = make_shadow(r);
	if (rc) {
		char a[INET_ADDRSTRLEN];
		fprintf(stderr, "mstack-responder: shadow socket on %s:%u: %s\n",
			inet_ntop(AF_INET, &r->o.listen.sin_addr, a, sizeof(a)),
			ntohs(r->o.listen.sin_port), strerror(-rc));
		return 1;
	}
	rc = mstack_ctl_register(r->ctl, r->shadow_fd, MSTACK_REG_LISTEN, r->info.port_id, NULL);
	if (rc < 0) {
		ctl_error(r, "REGISTER", rc);
		return 1;
	}
	r->binding_id = rc;
	if (r->o.join) {
		rc = mstack_ctl_group_join(r->ctl, (uint32_t)r->binding_id, r->info.port_id);
		if (rc) {
			ctl_error(r, "GROUP_JOIN", rc);
			return 1;
		}
		r->joined = 1;
	}
	if (r->o.lease > 0) {
		struct mstack_ctl_lease l;

		rc = mstack_ctl_lease(r->ctl, r->info.port_id, (uint32_t)r->o.lease, 0, &l);
		if (rc < 0) {
			ctl_error(r, "LEASE", rc);
			return 1;
		}
		printf("lease %u %u %u\n", l.lease_id, l.first, l.count);
	}
	r->cfg.addr = r->o.listen.sin_addr.s_addr;
	r->cfg.port = r->o.listen.sin_port;
	r->cfg.mss = (uint16_t)(r->info.mtu > 40 && r->info.mtu < 65535 ? r->info.mtu - 40 : 1460);
	r->cfg.isn_key = (uint32_t)getpid() * 2654435761u ^ (uint32_t)time(NULL);
	r->cfg.stream = r->o.stream;
	return 0;
}

/* One RX burst: answer what deserves it, in send frames taken as needed. */
static void handle_burst(struct responder *r)
{
	struct mstack_frame rx[BURST], tx[BURST], send[BURST];
	unsigned n = mstack_port_rx_burst(r->port, rx, BURST);
	unsigned ntx, used = 0, nsend = 0;
	uint8_t scratch[2048];

	if (!n)
		return;
	ntx = mstack_port_tx_alloc(r->port, tx, n);
	for (unsigned i = 0; i < n; i++) {
		if (used < ntx) {
			size_t len = resp_frame(&r->cfg, rx[i].data, rx[i].len, tx[used].data,
						tx[used].len, &r->counts);
			if (len) {
				tx[used].len = (uint32_t)len;
				send[nsend++] = tx[used++];
			}
		} else if (resp_frame(&r->cfg, rx[i].data, rx[i].len, scratch, sizeof(scratch),
				      &r->counts)) {
			r->tx_dropped++; /* no send frame free: counted, not sent */
		}
	}
	(void)mstack_port_rx_release(r->port, rx, n);
	if (used < ntx)
		(void)mstack_port_tx_release(r->port, tx + used, ntx - used);
	if (nsend) {
		int placed = mstack_port_tx_submit(r->port, send, nsend);
		if (placed < 0)
			placed = 0;
		if ((unsigned)placed < nsend) {
			(void)mstack_port_tx_release(r->port, send + placed, nsend - (unsigned)placed);
			r->tx_dropped += nsend - (unsigned)placed;
		}
		r->tx += (unsigned)placed;
	}
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void serve(struct responder *r)
{
	int64_t deadline = r->o.max_seconds ? now_ms() + r->o.max_seconds * 1000 : 0;
	int pending = 0;  /* frames still on the TX ring after the last kick */

	while (!stop_signal) {
		int64_t left = POLL_MS;
		if (deadline) {
			left = deadline - now_ms();
			if (left <= 0)
				break;
			if (left > POLL_MS)
				left = POLL_MS;
		}
		struct pollfd pfd = { .fd = mstack_port_fd(r->port), .events = POLLIN };
		int rc = poll(&pfd, 1, pending ? 1 : (int)left);
		if (rc < 0 && errno != EINTR) {
			perror("mstack-responder: poll");
			break;
		}
		/* Drain what arrived (a few bursts at most per turn, then kick). */
		for (int k = 0; k < 8; k++) {
			uint64_t before = r->counts.frames;
			handle_burst(r);
			if (r->counts.frames - before < BURST)
				break;
		}
		int left_on_ring = mstack_port_kick(r->port);
		pending = left_on_ring > 0;
	}
}

/* Leave cleanly: the group, the binding, the port.  A daemon that is gone (killed, restarted)
 * has nothing to release — not an error: the port kept working without it. */
static int teardown(struct responder *r)
{
	int failed = 0, gone = 0, rc;

#define CTL_STEP(name, call)                                                        \
	do {                                                                        \
		if (!gone) {                                                        \
			rc = (call);                                                \
			if (rc == -ECONNRESET || rc == -EPIPE) {                    \
				gone = 1;                                           \
				fprintf(stderr, "mstack-responder: mstackd is gone; "   \
						"nothing to release\n");            \
			} else if (rc < 0) {                                        \
				ctl_error(r, name, rc);                             \
				failed = 1;                                         \
			}                                                           \
		}                                                                   \
	} while (0)

	if (r->ctl) {
		if (r->joined)
			CTL_STEP("GROUP_LEAVE", mstack_ctl_group_leave(r->ctl, (uint32_t)r->binding_id,
								       r->info.port_id));
		if (r->binding_id >= 0)
			CTL_STEP("RELEASE", mstack_ctl_release(r->ctl, (uint32_t)r->binding_id));
		if (r->have_port)
			CTL_STEP("PORT_CLOSE", mstack_ctl_port_close(r->ctl, r->info.port_id));
	}
#undef CTL_STEP
	if (r->port)
		mstack_port_close(r->port);
	if (r->shadow_fd >= 0)
		close(r->shadow_fd);
	mstack_ctl_close(r->ctl);
	return failed;
}

static int write_counts(const struct responder *r, const struct mstack_port_stats *ps)
{
	const struct resp_counts *c = &r->counts;
	char line[768];
	int n = snprintf(line, sizeof(line),
			 "{\"frames\": %llu, \"syn\": %llu, \"data\": %llu, \"fin\": %llu, "
			 "\"ack\": %llu, \"other\": %llu, \"malformed\": %llu, \"replies\": %llu, \"tx\": %llu, "
			 "\"tx_dropped\": %llu, \"port_id\": %u, \"binding_id\": %d, "
			 "\"xsk_rx_dropped\": %llu, \"xsk_rx_ring_full\": %llu, "
			 "\"xsk_fill_empty\": %llu, \"kick_errors\": %llu}\n",
			 (unsigned long long)c->frames, (unsigned long long)c->syn,
			 (unsigned long long)c->data, (unsigned long long)c->fin,
			 (unsigned long long)c->ack, (unsigned long long)c->other, (unsigned long long)c->malformed,
			 (unsigned long long)c->replies, (unsigned long long)r->tx,
			 (unsigned long long)(r->tx_dropped + c->no_room), r->info.port_id,
			 r->binding_id, (unsigned long long)ps->k_rx_dropped,
			 (unsigned long long)ps->k_rx_ring_full,
			 (unsigned long long)ps->k_rx_fill_ring_empty_descs,
			 (unsigned long long)ps->kick_errors);

	FILE *f;

	if (!r->o.count_file) {
		fputs(line, stdout);
		return fflush(stdout) ? 1 : 0;
	}
	/* An existing file that is not a regular one (a pipe, /dev/null) is written in place:
	 * renaming over it would replace a device node with a file. */
	struct stat st;
	if (stat(r->o.count_file, &st) == 0 && !S_ISREG(st.st_mode)) {
		f = fopen(r->o.count_file, "w");
		if (!f || fwrite(line, 1, (size_t)n, f) != (size_t)n || fclose(f)) {
			fprintf(stderr, "mstack-responder: writing %s: %s\n", r->o.count_file,
				strerror(errno));
			return 1;
		}
		return 0;
	}
	/* Written whole, then renamed: a reader never sees half a line. */
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", r->o.count_file, (int)getpid()) >=
	    (int)sizeof(tmp))
		return 1;
	f = fopen(tmp, "w");
	if (!f || fwrite(line, 1, (size_t)n, f) != (size_t)n || fclose(f) ||
	    rename(tmp, r->o.count_file)) {
		fprintf(stderr, "mstack-responder: writing %s: %s\n", r->o.count_file,
			strerror(errno));
		unlink(tmp);
		return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct responder r;
	struct sigaction sa;
	int rc;

	memset(&r, 0, sizeof(r));
	r.shadow_fd = -1;
	r.binding_id = -1;
	rc = parse_opts(argc, argv, &r.o);
	if (rc)
		return rc;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; /* no SA_RESTART: poll returns at once */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	rc = setup(&r);
	if (rc) {
		teardown(&r);
		return rc;
	}
	printf("ready %u %d\n", r.info.port_id, r.binding_id);
	fflush(stdout);

	serve(&r);
	struct mstack_port_stats ps = { .sz = sizeof(ps) };
	(void)mstack_port_stats(r.port, &ps); /* before teardown unmaps the port */
	rc = teardown(&r);
	rc |= write_counts(&r, &ps);
	return rc ? 1 : 0;
}
