/* utcp-tapcat — netcat over UTCP on a TAP device, to test UTCP against the kernel's TCP.
 *   utcp-tapcat --dev utap0 --ip 10.77.0.2 --mac 02:00:00:77:00:02 --gw-mac <kernel's MAC>
 *               [--no-ws] [--no-sack] [--no-ts] [--cc cubic] listen PORT  > received
 *   utcp-tapcat ... connect IP PORT < to_send
 * listen: accepts one connection, copies it to stdout, closes after the peer's FIN.
 * connect: copies stdin to the connection, half-closes, copies the reply to stdout.
 * The kernel side needs a permanent neighbour entry for --ip (UTCP does not do ARP). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "utcp.h"

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int parse_mac(const char *s, uint8_t m[6])
{
	unsigned v[6];
	int i;

	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
		return -1;
	for (i = 0; i < 6; i++)
		m[i] = (uint8_t)v[i];
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: utcp-tapcat --dev IF --ip IP --mac MAC --gw-mac MAC [--no-ws] [--no-sack]"
			" [--no-ts] [--cc NAME] (listen PORT | connect IP PORT)\n");
	exit(64);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dev", 1, 0, 'd'}, {"ip", 1, 0, 'i'}, {"mac", 1, 0, 'm'}, {"gw-mac", 1, 0, 'g'},
		{"no-ws", 0, 0, 'W'}, {"no-sack", 0, 0, 'S'}, {"no-ts", 0, 0, 'T'}, {"cc", 1, 0, 'c'},
		{"loss", 1, 0, 'L'}, {"dup", 1, 0, 'D'}, {"reorder", 1, 0, 'R'}, {"delay-ms", 1, 0, 'Y'},
		{"corrupt", 1, 0, 'C'}, {"seed", 1, 0, 's'},
		{0, 0, 0, 0},
	};
	struct utcp_config cfg;
	struct utcp_tap *tap;
	struct utcp_impair *imp = NULL;
	struct utcp_pair_impair im;
	bool impaired = false;
	uint64_t seed = 1;
	struct utcp_port port;
	struct utcp_stack *st;
	struct utcp_event ev;
	struct in_addr a;
	const char *dev = NULL;
	utcp_cid c = UTCP_CID_NONE;
	static uint8_t inbuf[65536], outbuf[65536];
	size_t in_len = 0, in_off = 0;
	bool in_eof = false, fin_sent = false, done = false, listening;
	uint64_t rx_bytes = 0, tx_bytes = 0, last_report = 0;
	int o, rc;

	memset(&im, 0, sizeof(im));
	utcp_config_init(&cfg);
	cfg.max_conns = 16;
	cfg.sndbuf = cfg.rcvbuf = 1 << 20;
	for (int i = 0; i < 16; i++)
		cfg.isn_key[i] = (uint8_t)(mono_us() >> (i % 8));
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'd': dev = optarg; break;
		case 'i':
			if (inet_pton(AF_INET, optarg, &a) != 1)
				usage();
			cfg.local_ip = ntohl(a.s_addr);
			break;
		case 'm': if (parse_mac(optarg, cfg.local_mac)) usage(); break;
		case 'g': if (parse_mac(optarg, cfg.gw_mac)) usage(); break;
		case 'W': cfg.window_scaling = false; break;
		case 'S': cfg.sack = false; break;
		case 'T': cfg.timestamps = false; break;
		case 'c': snprintf(cfg.cc, sizeof(cfg.cc), "%s", optarg); break;
		/* impairment of both directions, on UTCP's side of the tap (percentages) */
		case 'L': im.loss_ppm = (uint32_t)(atof(optarg) * 10000), impaired = true; break;
		case 'D': im.dup_ppm = (uint32_t)(atof(optarg) * 10000), impaired = true; break;
		case 'R':
			im.reorder_ppm = (uint32_t)(atof(optarg) * 10000), impaired = true;
			break;
		case 'C': im.corrupt_ppm = (uint32_t)(atof(optarg) * 10000), impaired = true; break;
		case 'Y':
			im.delay_us = (uint64_t)(atof(optarg) * 1000), impaired = true;
			break;
		case 's': seed = strtoull(optarg, NULL, 0); break;
		default: usage();
		}
	}
	if (!dev || !cfg.local_ip || optind >= argc)
		usage();
	listening = strcmp(argv[optind], "listen") == 0;
	if ((listening && optind + 2 != argc) || (!listening && optind + 3 != argc))
		usage();
	if ((rc = utcp_tap_open(dev, 64, &tap)) < 0) {
		fprintf(stderr, "tap %s: %s\n", dev, strerror(-rc));
		return 69;
	}
	port = utcp_tap_port(tap);
	if (impaired) {
		/* a held-back frame is delayed by one extra delay (at least 2 ms) */
		im.reorder_delay_us = im.delay_us > 2000 ? im.delay_us : 2000;
		if ((rc = utcp_impair_wrap(&port, &im, &im, seed, &imp)) < 0)
			return 70;
		port = utcp_impair_port(imp);
	}
	if ((rc = utcp_stack_create(&cfg, &port, mono_us(), &st)) < 0) {
		fprintf(stderr, "stack: %s\n", utcp_strerror(rc));
		return 70;
	}
	if (listening) {
		rc = utcp_listen(st, (uint16_t)atoi(argv[optind + 1]), 4);
	} else {
		if (inet_pton(AF_INET, argv[optind + 1], &a) != 1)
			usage();
		rc = utcp_connect(st, ntohl(a.s_addr), (uint16_t)atoi(argv[optind + 2]), 0, NULL,
				  mono_us(), &c);
	}
	if (rc < 0) {
		fprintf(stderr, "%s: %s\n", argv[optind], utcp_strerror(rc));
		return 70;
	}
	while (!done) {
		uint64_t now = mono_us(), dl;
		struct pollfd pfd = {utcp_tap_fd(tap), POLLIN, 0};
		int timeout;

		utcp_poll(st, now);
		while (utcp_next_event(st, &ev) == 1) {
			if ((ev.events & UTCP_EV_ACCEPTED) && c == UTCP_CID_NONE)
				c = ev.conn;
			if (ev.conn == c && (ev.events & UTCP_EV_CLOSED)) {
				if (ev.error)
					fprintf(stderr, "connection closed: %s\n", utcp_strerror(ev.error));
				done = true;
			}
		}
		if (c != UTCP_CID_NONE && !done) {
			ssize_t r;

			while ((r = utcp_recv(st, c, outbuf, sizeof(outbuf), now)) > 0) {
				if (fwrite(outbuf, 1, (size_t)r, stdout) != (size_t)r)
					return 74;
				rx_bytes += (uint64_t)r;
			}
			if (r == 0 && listening && !fin_sent) {
				utcp_shutdown(st, c, now);      /* peer done: close our side */
				fin_sent = true;
			}
			while (!listening && !fin_sent) {
				if (in_off == in_len && !in_eof) {
					ssize_t n = read(0, inbuf, sizeof(inbuf));

					if (n <= 0)
						in_eof = true;
					else
						in_len = (size_t)n, in_off = 0;
				}
				if (in_off < in_len) {
					r = utcp_send(st, c, inbuf + in_off, in_len - in_off, now);
					if (r <= 0)
						break;
					in_off += (size_t)r;
					tx_bytes += (uint64_t)r;
				} else if (in_eof) {
					utcp_shutdown(st, c, now);
					fin_sent = true;
				}
			}
		}
		utcp_flush(st, now);
		if (getenv("TAPCAT_PROGRESS") && now - last_report > 1000000 && c != UTCP_CID_NONE) {
			struct utcp_conn_info ci = {.sz = sizeof(ci)};
			const struct utcp_stats *x = utcp_get_stats(st);

			last_report = now;
			if (utcp_conn_info(st, c, &ci) == 0)
				fprintf(stderr, "[%s] acked %llu rcvd %llu cwnd %u ssth %u srtt %u rto %u "
					"swnd %u unacked %u rto# %llu frx %llu spur %llu lostrx %llu tlp %llu "
					"reord %u\n", utcp_state_str(ci.state),
					(unsigned long long)ci.bytes_acked, (unsigned long long)ci.bytes_received,
					ci.cwnd, ci.ssthresh, ci.srtt_us, ci.rto_us, ci.snd_wnd, ci.unacked,
					(unsigned long long)ci.rto_timeouts, (unsigned long long)ci.fast_retransmits,
					(unsigned long long)ci.spurious_recoveries,
					(unsigned long long)x->lost_retransmits,
					(unsigned long long)x->tail_loss_probes, ci.reordering);
		}
		dl = utcp_next_deadline(st);
		if (imp && utcp_impair_next(imp) < dl)
			dl = utcp_impair_next(imp);
		now = mono_us();
		timeout = dl == UINT64_MAX ? 100 : dl <= now ? 0 : (int)((dl - now + 999) / 1000);
		if (timeout > 100)
			timeout = 100;
		poll(&pfd, 1, timeout);
	}
	fflush(stdout);
	{
		const struct utcp_stats *s = utcp_get_stats(st);
		struct utcp_conn_info ci = {.sz = sizeof(ci)};

		utcp_conn_info(st, c, &ci);
		fprintf(stderr, "utcp-tapcat: rx %llu tx %llu bytes; segs in %llu out %llu, retransmits %llu, "
			"ws %d sack %d ts %d, cc %s, drops:", (unsigned long long)rx_bytes,
			(unsigned long long)tx_bytes, (unsigned long long)s->segs_in,
			(unsigned long long)s->segs_out, (unsigned long long)s->retransmits, ci.ws_ok,
			ci.sack_ok, ci.ts_ok, ci.cc ? ci.cc : "?");
		for (int i = 1; i < UTCP_DROP__MAX; i++)
			if (s->drops[i])
				fprintf(stderr, " %s=%llu", utcp_drop_str((enum utcp_drop)i),
					(unsigned long long)s->drops[i]);
		fputc('\n', stderr);
	}
	utcp_close(st, c, mono_us());
	utcp_stack_destroy(st);
	if (imp) {
		struct utcp_pair_stats sa, sb;

		utcp_impair_get_stats(imp, 0, &sa);
		utcp_impair_get_stats(imp, 1, &sb);
		fprintf(stderr, "impairment: out %llu lost %llu dup %llu reordered %llu corrupted %llu; "
			"in %llu lost %llu dup %llu reordered %llu corrupted %llu\n",
			(unsigned long long)sa.sent, (unsigned long long)sa.lost, (unsigned long long)sa.duplicated,
			(unsigned long long)sa.reordered, (unsigned long long)sa.corrupted,
			(unsigned long long)sb.sent, (unsigned long long)sb.lost, (unsigned long long)sb.duplicated,
			(unsigned long long)sb.reordered, (unsigned long long)sb.corrupted);
		utcp_impair_destroy(imp);
	}
	utcp_tap_close(tap);
	return 0;
}
