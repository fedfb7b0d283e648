/* utcp-sockprobe — a UTCP socket table on a TAP device, driven line by line from stdin, so a
 * test can put a UTCP socket and a kernel socket through the same steps and compare what
 * the application sees (tests/system/test_utcp_sock_tap.py).
 *   utcp-sockprobe --dev IF --ip IP --mac MAC --gw-mac MAC
 * Commands (one answer line each): listen PORT BACKLOG | accept | connect IP PORT | mask l|c
 * | recv | send TEXT | shutdown rd|wr|rdwr | error | close | quit.  `c` is the last accepted
 * or connecting socket.  Answers
 * are numbers (a poll mask, a byte count, a negative errno) or "ok". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "utcp.h"
#include "utcp_sock.h"

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
	fprintf(stderr, "usage: utcp-sockprobe --dev IF --ip IP --mac MAC --gw-mac MAC\n");
	exit(64);
}

struct probe {
	struct utcp_stack *st;
	struct utcp_socks *ss;
	int l, c;
};

static void command(struct probe *p, char *line, uint64_t now)
{
	char *cmd = strtok(line, " \n"), *arg = strtok(NULL, " \n"), *arg2 = strtok(NULL, "\n");
	long r = 0;

	if (!cmd)
		return;
	if (!strcmp(cmd, "listen") && arg) {
		p->l = utcp_sk_open(p->ss);
		r = utcp_sk_listen(p->ss, p->l, (uint16_t)atoi(arg), arg2 ? atoi(arg2) : 16);
	} else if (!strcmp(cmd, "connect") && arg && arg2) {
		struct in_addr a;

		p->c = utcp_sk_open(p->ss);
		r = inet_pton(AF_INET, arg, &a) == 1
			    ? utcp_sk_connect(p->ss, p->c, ntohl(a.s_addr), (uint16_t)atoi(arg2), 0, NULL, now)
			    : -EINVAL;
	} else if (!strcmp(cmd, "accept")) {
		r = utcp_sk_accept(p->ss, p->l, NULL);
		if (r >= 0)
			p->c = (int)r, r = 0;
	} else if (!strcmp(cmd, "mask") && arg) {
		r = utcp_sk_ready(p->ss, arg[0] == 'l' ? p->l : p->c);
	} else if (!strcmp(cmd, "recv")) {
		char buf[4096];
		struct iovec v = {buf, sizeof(buf)};

		r = utcp_sk_recv(p->ss, p->c, &v, 1, 0, now);
	} else if (!strcmp(cmd, "send") && arg) {
		struct iovec v = {arg, strlen(arg)};

		r = utcp_sk_send(p->ss, p->c, &v, 1, 0, now);
	} else if (!strcmp(cmd, "shutdown") && arg) {
		r = utcp_sk_shutdown(p->ss, p->c,
				     !strcmp(arg, "rd") ? SHUT_RD : !strcmp(arg, "wr") ? SHUT_WR : SHUT_RDWR,
				     now);
	} else if (!strcmp(cmd, "error")) {
		r = utcp_sk_error(p->ss, p->c);
	} else if (!strcmp(cmd, "close")) {
		r = utcp_sk_close(p->ss, p->c, now);
	} else if (!strcmp(cmd, "quit")) {
		exit(0);
	} else {
		printf("?\n");
		fflush(stdout);
		return;
	}
	printf("%ld\n", r);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"dev", required_argument, 0, 'd'}, {"ip", required_argument, 0, 'i'},
		{"mac", required_argument, 0, 'm'}, {"gw-mac", required_argument, 0, 'g'},
		{0, 0, 0, 0},
	};
	struct utcp_config cfg;
	struct utcp_tap *tap;
	struct utcp_port port;
	struct probe p = {.l = -1, .c = -1};
	const char *dev = NULL;
	struct in_addr a;
	char line[512];
	int o, rc;

	utcp_config_init(&cfg);
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
		default: usage();
		}
	}
	if (!dev || !cfg.local_ip)
		usage();
	if ((rc = utcp_tap_open(dev, 64, &tap)) < 0) {
		fprintf(stderr, "tap %s: %s\n", dev, strerror(-rc));
		return 69;
	}
	port = utcp_tap_port(tap);
	if ((rc = utcp_stack_create(&cfg, &port, mono_us(), &p.st)) < 0 ||
	    (rc = utcp_socks_create(p.st, NULL, &p.ss)) < 0) {
		fprintf(stderr, "stack: %s\n", utcp_strerror(rc));
		return 70;
	}
	for (;;) {
		struct pollfd pfd[2] = {{utcp_tap_fd(tap), POLLIN, 0}, {0, POLLIN, 0}};
		uint64_t now = mono_us(), dl;
		int timeout = 10;

		utcp_poll(p.st, now);
		utcp_socks_process(p.ss, now);
		utcp_socks_wake_drain(p.ss);
		utcp_flush(p.st, now);
		dl = utcp_next_deadline(p.st);
		if (dl != UINT64_MAX && dl > now && (dl - now) / 1000 < (uint64_t)timeout)
			timeout = (int)((dl - now) / 1000);
		if (poll(pfd, 2, timeout) < 0 && errno != EINTR)
			return 71;
		if (pfd[1].revents & (POLLIN | POLLHUP)) {
			if (!fgets(line, sizeof(line), stdin))
				break;
			command(&p, line, mono_us());
			utcp_flush(p.st, mono_us());
		}
	}
	utcp_socks_destroy(p.ss, mono_us());
	utcp_stack_destroy(p.st);
	utcp_tap_close(tap);
	return 0;
}
