/* handoff_peer.c — one side of a connection hand-off through a real mstackd, driven by
 * tests/system/test_handoff.py with libmsctl's calls only (no stack, no rings).
 *
 *   handoff_peer member RUN_DIR BINDING SHADOW_FD ACCEPT
 *       opens a port, claims the binding with the inherited shadow socket, joins its listen
 *       group, opens the port's inbox, prints "ready PORT"; answers one IMPORT adopting at
 *       most ACCEPT flows and prints what it got; then waits for EOF on stdin.
 *   handoff_peer sender RUN_DIR BINDING SHADOW_FD
 *       the same up to "ready PORT" (no inbox); reads "N LADDR LPORT RADDR RPORT0" on stdin
 *       (N flows, remote ports RPORT0..), leaves the group, hands them off with a blob and
 *       prints "moved N to PORT"; then waits for EOF on stdin. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mstack_ctl.h"

static const char blob_text[] = "connections serialized by a C sender";

static int fail(const char *what, int rc, struct mstack_ctl *ctl)
{
	fprintf(stderr, "handoff_peer: %s: %s (%s)\n", what, strerror(-rc),
		ctl ? mstack_ctl_last_detail(ctl) : "");
	return 1;
}

static void wait_eof(void)
{
	char buf[64];

	while (read(0, buf, sizeof(buf)) > 0)
		;
}

int main(int argc, char **argv)
{
	struct mstack_ctl *ctl = NULL, *ib = NULL;
	struct mstack_ctl_port p;
	int member, rc;

	if (argc < 5 || (strcmp(argv[1], "member") && strcmp(argv[1], "sender")) ||
	    (!strcmp(argv[1], "member") && argc != 6)) {
		fprintf(stderr, "usage: handoff_peer member|sender RUN_DIR BINDING FD [ACCEPT]\n");
		return 64;
	}
	member = !strcmp(argv[1], "member");
	const char *run_dir = argv[2];
	uint32_t binding = (uint32_t)strtoul(argv[3], NULL, 10);
	int shadow = atoi(argv[4]);

	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((rc = mstack_ctl_connect(&ctl, run_dir)))
		return fail("connect", rc, NULL);
	if ((rc = mstack_ctl_port_open(ctl, NULL, &p)) < 0)
		return fail("port open", rc, ctl);
	close(p.umem_fd); /* no rings here: the port only names this process in the switch */
	close(p.xsk_fd);
	if ((rc = mstack_ctl_claim(ctl, binding, shadow)))
		return fail("claim", rc, ctl);
	if ((rc = mstack_ctl_group_join(ctl, binding, p.port_id)))
		return fail("join", rc, ctl);
	if (member && (rc = mstack_ctl_inbox_open(&ib, run_dir, p.port_id)))
		return fail("inbox", rc, NULL);
	printf("ready %u\n", p.port_id);

	if (member) {
		struct mstack_ctl_import imp;
		struct pollfd pfd = { .fd = mstack_ctl_fd(ib), .events = POLLIN };
		uint32_t accept = (uint32_t)strtoul(argv[5], NULL, 10);
		char blob[128] = { 0 };

		if (poll(&pfd, 1, 10000) != 1)
			return fail("waiting for an IMPORT", -ETIMEDOUT, ib);
		if ((rc = mstack_ctl_inbox_recv(ib, &imp)) != 1)
			return fail("inbox recv", rc ? rc : -EAGAIN, ib);
		if (pread(imp.memfd, blob, sizeof(blob) - 1, 0) < 0)
			return fail("reading the blob", -errno, NULL);
		close(imp.memfd);
		printf("import seq=%u binding=%u port=%u n=%u rport0=%u blob=%s\n", imp.seq,
		       imp.binding_id, imp.port_id, imp.n, ntohs(imp.flows[0].rport), blob);
		uint32_t n = accept < imp.n ? accept : imp.n;
		if ((rc = mstack_ctl_inbox_reply(ib, imp.seq, 0, n)))
			return fail("inbox reply", rc, ib);
		printf("adopted %u\n", n);
	} else {
		struct mstack_handoff_flow flows[MSTACK_HANDOFF_MAX_FLOWS];
		char laddr[32], raddr[32];
		unsigned n, lport, rport0;
		uint32_t target = 0;

		if (scanf("%u %31s %u %31s %u", &n, laddr, &lport, raddr, &rport0) != 5 || n == 0 ||
		    n > MSTACK_HANDOFF_MAX_FLOWS)
			return fail("reading the flows", -EINVAL, NULL);
		for (unsigned i = 0; i < n; i++) {
			inet_pton(AF_INET, laddr, &flows[i].laddr);
			inet_pton(AF_INET, raddr, &flows[i].raddr);
			flows[i].lport = htons((uint16_t)lport);
			flows[i].rport = htons((uint16_t)(rport0 + i));
		}
		if ((rc = mstack_ctl_group_leave(ctl, binding, p.port_id)))
			return fail("leave", rc, ctl);
		int blob = mstack_ctl_blob_memfd(blob_text, sizeof(blob_text));
		if (blob < 0)
			return fail("blob", blob, NULL);
		rc = mstack_ctl_handoff(ctl, binding, p.port_id, flows, n, blob, &target);
		close(blob);
		if (rc < 0)
			return fail("handoff", rc, ctl);
		printf("moved %d to %u\n", rc, target);
	}
	wait_eof();
	mstack_ctl_close(ib);
	mstack_ctl_close(ctl);
	return 0;
}
