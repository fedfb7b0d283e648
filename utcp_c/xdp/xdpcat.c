/* utcp-xdpcat — netcat over UTCP on a port from mstackd, through the switch: the `xdp`
 * backend end to end, to test UTCP against the kernel's TCP on another host.
 *   utcp-xdpcat [--run-dir DIR] --ip IP [--no-ws] [--no-sack] [--no-ts] [--cc NAME]
 *               [--max-seconds N] listen PORT  > received
 *   utcp-xdpcat ... connect IP PORT < to_send
 * listen: registers a listening shadow socket on IP:PORT, joins its listen group, accepts one
 * connection, copies it to stdout until the peer's FIN, then closes.
 * connect: leases a block of local ports (LEASE), connects from one of them, copies stdin to
 * the connection, half-closes, copies the reply to stdout.
 * Prints "ready" on stderr once the port and bindings are in place. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mstack_ctl.h"
#include "mstack_port.h"
#include "utcp.h"
#include "utcp_xdp.h"

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void usage(void)
{
	fprintf(stderr, "usage: utcp-xdpcat [--run-dir DIR] --ip IP [--no-ws] [--no-sack] [--no-ts]"
			" [--cc NAME] [--max-seconds N] (listen PORT | connect IP PORT)\n");
	exit(64);
}

static void die(const char *what, int rc, struct mstack_ctl *ctl)
{
	fprintf(stderr, "utcp-xdpcat: %s: %s%s%s\n", what, strerror(rc < 0 ? -rc : rc),
		ctl && *mstack_ctl_last_detail(ctl) ? ": " : "", ctl ? mstack_ctl_last_detail(ctl) : "");
	exit(1);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"run-dir", 1, 0, 'r'}, {"ip", 1, 0, 'i'}, {"no-ws", 0, 0, 'W'}, {"no-sack", 0, 0, 'S'},
		{"no-ts", 0, 0, 'T'}, {"cc", 1, 0, 'c'}, {"max-seconds", 1, 0, 'm'}, {0, 0, 0, 0},
	};
	const char *run_dir = NULL, *cc = NULL;
	struct in_addr ip = {0}, rip = {0};
	int ws = 1, sack = 1, ts = 1, o, rc, listening;
	long max_seconds = 120;
	uint16_t lport = 0, rport = 0;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'r': run_dir = optarg; break;
		case 'i': if (inet_pton(AF_INET, optarg, &ip) != 1) usage(); break;
		case 'W': ws = 0; break;
		case 'S': sack = 0; break;
		case 'T': ts = 0; break;
		case 'c': cc = optarg; break;
		case 'm': max_seconds = atol(optarg); break;
		default: usage();
		}
	}
	if (!ip.s_addr || optind >= argc)
		usage();
	listening = !strcmp(argv[optind], "listen");
	if (listening && optind + 2 == argc) {
		lport = (uint16_t)atoi(argv[optind + 1]);
	} else if (!strcmp(argv[optind], "connect") && optind + 3 == argc) {
		if (inet_pton(AF_INET, argv[optind + 1], &rip) != 1)
			usage();
		rport = (uint16_t)atoi(argv[optind + 2]);
	} else {
		usage();
	}

	struct mstack_ctl *ctl = NULL;
	struct mstack_ctl_port info;
	struct mstack_port *port;
	struct utcp_xdp *x;
	if ((rc = mstack_ctl_connect(&ctl, run_dir)))
		die("connecting to mstackd", rc, ctl);
	if ((rc = mstack_ctl_port_open(ctl, NULL, &info)) < 0)
		die("PORT_OPEN", rc, ctl);
	if ((rc = mstack_port_open(&port, info.umem_fd, info.xsk_fd, &info.geom)))
		die("mapping the port", rc, NULL);
	if ((rc = utcp_xdp_open(&x, port)))
		die("xdp backend", rc, NULL);

	struct utcp_config cfg;
	utcp_config_init(&cfg);
	cfg.local_ip = ntohl(ip.s_addr);
	memcpy(cfg.local_mac, info.nic_mac, 6);
	/* The switch's egress fills in both MAC addresses from the kernel's routes and
	 * neighbours: the next hop UTCP writes is not used. */
	memset(cfg.gw_mac, 0, 6);
	cfg.mtu = (uint16_t)(info.mtu ? info.mtu : 1500);
	cfg.window_scaling = ws, cfg.sack = sack, cfg.timestamps = ts;
	cfg.sndbuf = cfg.rcvbuf = 1 << 20;      /* as utcp-tapcat: room for 10 ms at ~800 Mbit/s */
	if (cc)
		snprintf(cfg.cc, sizeof(cfg.cc), "%s", cc);
	for (int i = 0; i < 16; i++)
		cfg.isn_key[i] = (uint8_t)(rand() ^ getpid() >> (i % 8));

	int shadow = -1;
	if (listening) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(lport), .sin_addr = ip };
		int one = 1;
		shadow = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		setsockopt(shadow, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(shadow, (struct sockaddr *)&sa, sizeof(sa)) || listen(shadow, 64))
			die("shadow socket", errno, NULL);
		if ((rc = mstack_ctl_register(ctl, shadow, MSTACK_REG_LISTEN, info.port_id, NULL)) < 0)
			die("REGISTER", rc, ctl);
		if ((rc = mstack_ctl_group_join(ctl, (uint32_t)rc, info.port_id)))
			die("GROUP_JOIN", rc, ctl);
	} else {
		struct mstack_ctl_lease lease;
		if ((rc = mstack_ctl_lease(ctl, info.port_id, 64, ip.s_addr, &lease)) < 0)
			die("LEASE", rc, ctl);
		cfg.ephemeral_lo = lease.first;
		cfg.ephemeral_hi = (uint16_t)(lease.first + lease.count - 1);
	}

	struct utcp_stack *st;
	struct utcp_port p = utcp_xdp_port(x);
	uint64_t now = mono_us(), deadline = now + (uint64_t)max_seconds * 1000000u;
	utcp_cid conn = UTCP_CID_NONE;
	if ((rc = utcp_stack_create(&cfg, &p, now, &st)))
		die("utcp_stack_create", rc, NULL);
	if (listening)
		rc = utcp_listen(st, lport, 8) < 0 ? -1 : 0;
	else
		rc = utcp_connect(st, ntohl(rip.s_addr), rport, 0, NULL, now, &conn);
	if (rc)
		die("listen/connect", rc, NULL);
	fprintf(stderr, "ready\n");

	static uint8_t buf[65536];
	size_t pend = 0, off = 0;
	int in_eof = listening, out_done = 0, closed = 0, half = 0, err = 0;
	struct pollfd pfd[2] = { { .fd = mstack_port_fd(port), .events = POLLIN },
				 { .fd = 0, .events = POLLIN } };
	while (!closed && now < deadline) {
		struct utcp_event ev;
		uint64_t next = utcp_next_deadline(st);
		int tmo = next == UINT64_MAX ? 100 : next <= now ? 0 : (int)((next - now + 999) / 1000);
		if (tmo > 100)
			tmo = 100;
		pfd[1].fd = (conn != UTCP_CID_NONE && !in_eof && !pend) ? 0 : -1;
		poll(pfd, 2, tmo);
		now = mono_us();
		utcp_poll(st, now);
		while (utcp_next_event(st, &ev) == 1) {
			if (ev.events & UTCP_EV_ACCEPTED && conn == UTCP_CID_NONE)
				conn = ev.conn;
			if (ev.conn == conn && ev.events & UTCP_EV_CLOSED) {
				closed = 1;
				err = ev.error;
			}
		}
		if (conn == UTCP_CID_NONE)
			continue;
		if (!in_eof && !pend && pfd[1].revents) {
			ssize_t r = read(0, buf, sizeof(buf));
			if (r <= 0)
				in_eof = 1;
			else
				pend = (size_t)r, off = 0;
		}
		while (pend) {
			ssize_t r = utcp_send(st, conn, buf + off, pend, now);
			if (r <= 0)
				break;
			off += (size_t)r, pend -= (size_t)r;
		}
		if (in_eof && !pend && !half && !listening) {
			utcp_shutdown(st, conn, now);
			half = 1;
		}
		for (;;) {
			uint8_t rb[16384];
			ssize_t r = utcp_recv(st, conn, rb, sizeof(rb), now);
			if (r > 0) {
				if (fwrite(rb, 1, (size_t)r, stdout) != (size_t)r)
					die("stdout", errno, NULL);
				continue;
			}
			if (r == 0 && !out_done) {
				out_done = 1;
				/* The peer's FIN: send ours, and stay until it is acknowledged (the
				 * CLOSED event).  Leaving earlier lets the peer's retransmissions --
				 * of its FIN if our ACK was lost, say -- reach the host's kernel
				 * instead, which answers with a reset. */
				if (listening) {
					utcp_shutdown(st, conn, now);
					if (deadline > now + 30000000u)
						deadline = now + 30000000u;
				}
			}
			break;
		}
		if (out_done && !listening && half)
			utcp_close(st, conn, now), closed = 1;
		utcp_flush(st, now);
	}
	fflush(stdout);
	/* Let the last segments (FIN, ACK) leave. */
	for (int i = 0; i < 50; i++) {
		now = mono_us();
		utcp_poll(st, now);
		usleep(2000);
	}
	const struct utcp_stats *s = utcp_get_stats(st);
	fprintf(stderr, "utcp-xdpcat: frames in %llu out %llu retransmits %llu tx_dropped %llu%s; "
		"rto %llu fast_retransmits %llu spurious_recoveries %llu dsacks_in %llu tlp %llu "
		"lost_retransmits %llu reordering_seen %llu\n",
		(unsigned long long)s->frames_in, (unsigned long long)s->frames_out,
		(unsigned long long)s->retransmits, (unsigned long long)utcp_xdp_tx_dropped(x),
		now >= deadline ? " (time limit)" : "", (unsigned long long)s->rto_timeouts,
		(unsigned long long)s->fast_retransmits, (unsigned long long)s->spurious_recoveries,
		(unsigned long long)s->dsacks_in, (unsigned long long)s->tail_loss_probes,
		(unsigned long long)s->lost_retransmits, (unsigned long long)s->reordering_seen);
	utcp_stack_destroy(st);
	utcp_xdp_close(x);
	mstack_port_close(port);
	if (shadow >= 0)
		close(shadow);
	mstack_ctl_close(ctl);
	return err || now >= deadline ? 1 : 0;
}
