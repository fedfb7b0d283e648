/* handoff.c — a listener's connections that no process accepted yet move to another member of
 * its listen group instead of being reset (docs/shim.md, "Reload").
 *
 * nginx's reload: the old workers close their listeners while the new ones already wait.  With
 * the kernel, the listener's accept queue is shared and survives; here every process has its
 * own queue in its own stack, so the connections whose handshake completed in an old worker —
 * sometimes with their request already in — would be reset with it.  Instead, at the close:
 *
 *   1. the process leaves the group (sock.c): the switch sends it no new flows;
 *   2. UTCP freezes the queued and half-open connections and describes them
 *      (utcp_sk_migrate_out): from now on it drops their segments silently — the peers
 *      retransmit;
 *   3. mstackd gets the description in a sealed memfd (HANDOFF) and pushes it to another
 *      member's inbox (IMPORT); that process's stack adopts them into its listener's queue
 *      (utcp_sk_migrate_in), then mstackd points their flows in the switch at its port;
 *   4. the first process releases what moved without a word (utcp_sk_migrate_done) and resets
 *      the rest, as a close would have.
 *
 * The inbox is a second connection to mstackd, opened with the stack and watched by the helper
 * thread: mstackd may push an IMPORT at any time.  Everything runs with the shim's lock. */
#include "shim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mstack_ctl.h"
#include "utcp_sock.h"

#define BLOB_MIN (64u << 10)
#define BLOB_MAX (16u << 20)          /* mstackd's bound on a hand-off's memfd */
#define INBOX_RETRY_US 1000000u
#define RETRIES 15                    /* x RETRY_MS: about the switch's group hold (1.5 s) */
#define RETRY_MS 100

static struct {
	struct mstack_ctl *inbox;
	uint32_t port_id;
	uint64_t retry_at;
	void *buf;
	size_t cap;
} H;

/* ---- the sending side ---- */

struct handoff_arg {
	uint32_t binding, port_id, n;
	const struct mstack_handoff_flow *flows;
	int memfd;
	uint32_t target;
};

static int handoff_fn(struct mstack_ctl *ctl, void *p)
{
	struct handoff_arg *a = p;

	return mstack_ctl_handoff(ctl, a->binding, a->port_id, a->flows, a->n, a->memfd, &a->target);
}

/* One frozen batch: describe it, grow the buffer until it fits. */
static int freeze(struct utcp_socks *ss, int sk, struct utcp_mig_flow *fl, size_t *len)
{
	for (;;) {
		int n;

		if (!H.buf) {
			H.buf = malloc(BLOB_MIN);
			if (!H.buf)
				return -ENOMEM;
			H.cap = BLOB_MIN;
		}
		n = utcp_sk_migrate_out(ss, sk, fl, MSTACK_HANDOFF_MAX_FLOWS, H.buf, H.cap, len,
					shim_now_us());
		if (n != -ENOSPC || H.cap >= BLOB_MAX)
			return n;
		void *bigger = realloc(H.buf, H.cap * 2);
		if (!bigger)
			return -ENOMEM;
		H.buf = bigger;
		H.cap *= 2;
	}
}

int handoff_listener(struct usock *us)
{
	struct utcp_socks *ss = proc_socks();
	struct mstack_handoff_flow hf[MSTACK_HANDOFF_MAX_FLOWS];
	struct utcp_mig_flow fl[MSTACK_HANDOFF_MAX_FLOWS];
	int total = 0;

	if (!ss || us->sk < 0 || us->binding < 0 || !proc_ctl_conn())
		return 0;
	proc_run_inline(); /* what already arrived decides what is queued */
	for (;;) {
		struct handoff_arg a = { .binding = (uint32_t)us->binding,
					 .port_id = proc_port_id(),
					 .flows = hf };
		size_t len = 0;
		int n = freeze(ss, us->sk, fl, &len), moved;

		if (n <= 0) {
			if (n < 0 && n != -EOPNOTSUPP)
				shim_log("listener %u.%u.%u.%u:%u: its queued connections cannot move "
					 "(%s): they are reset", IP4(us->laddr), us->lport, strerror(-n));
			break;
		}
		for (int i = 0; i < n; i++)
			hf[i] = (struct mstack_handoff_flow){ .laddr = htonl(fl[i].laddr),
							      .raddr = htonl(fl[i].raddr),
							      .lport = htons(fl[i].lport),
							      .rport = htons(fl[i].rport) };
		a.n = (uint32_t)n;
		a.memfd = mstack_ctl_blob_memfd(H.buf, len);
		moved = a.memfd < 0 ? a.memfd : proc_ctl_retry(handoff_fn, &a);
		/* Nobody took them: at a reload the new processes may not wait on the listener yet
		 * (the switch holds new SYNs for as long, GROUP_HOLD_S).  Ask again a few times,
		 * without the lock: the frozen batch stays as it is meanwhile. */
		for (int tries = 0; moved == 0 && tries < RETRIES; tries++) {
			shim_unlock();
			usleep(RETRY_MS * 1000);
			shim_lock();
			moved = proc_ctl_retry(handoff_fn, &a);
		}
		if (a.memfd >= 0)
			close(a.memfd);
		if (moved < 0) {
			struct mstack_ctl *ctl = proc_ctl_conn();
			shim_log("listener %u.%u.%u.%u:%u: %d queued connection(s) could not move to "
				 "another process (%s%s%s): they are reset", IP4(us->laddr), us->lport,
				 n, strerror(-moved), ctl ? ": " : "",
				 ctl ? mstack_ctl_last_detail(ctl) : "");
			moved = 0;
		} else if (moved < n) {
			shim_log("listener %u.%u.%u.%u:%u: %d of %d queued connection(s) moved to "
				 "port %u, the rest are reset (no group member could take them)",
				 IP4(us->laddr), us->lport, moved, n, a.target);
		} else {
			shim_vlog("listener %u.%u.%u.%u:%u: %d queued connection(s) moved to port %u",
				  IP4(us->laddr), us->lport, moved, a.target);
		}
		utcp_sk_migrate_done(ss, us->sk, moved, shim_now_us());
		total += moved;
		if (moved < n)
			break;
	}
	proc_flush();
	return total;
}

/* ---- the receiving side ---- */

void handoff_inbox_open(uint32_t port_id)
{
	int rc;

	if (H.inbox)
		return;
	H.port_id = port_id;
	rc = mstack_ctl_inbox_open(&H.inbox, shim.run_dir, port_id);
	if (rc) {
		H.inbox = NULL;
		H.retry_at = shim_now_us() + INBOX_RETRY_US;
		shim_log("no inbox at mstackd (%s): this process cannot take over connections "
			  "from other members of its listen groups", strerror(-rc));
		return;
	}
	H.retry_at = 0;
}

int handoff_inbox_fd(void)
{
	if (!H.inbox && H.retry_at && shim_now_us() >= H.retry_at)
		handoff_inbox_open(H.port_id); /* after a mstackd restart */
	return H.inbox ? mstack_ctl_fd(H.inbox) : -1;
}

static int import(const struct mstack_ctl_import *im)
{
	struct usock *l = proc_listener_by_binding(im->binding_id);
	struct utcp_socks *ss = proc_socks();
	struct stat sb;
	void *map;
	int n;

	if (!l || !ss)
		return -ENOENT; /* we closed it meanwhile: mstackd tries another member */
	if (l->paused)
		return -EAGAIN; /* not waiting on it yet (a master before its fork): not ours */
	if (fstat(im->memfd, &sb) < 0)
		return -errno;
	if (sb.st_size <= 0 || sb.st_size > (off_t)BLOB_MAX)
		return -EMSGSIZE;
	map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, im->memfd, 0);
	if (map == MAP_FAILED)
		return -errno;
	n = utcp_sk_migrate_in(ss, l->sk, map, (size_t)sb.st_size, shim_now_us());
	munmap(map, (size_t)sb.st_size);
	if (n < 0)
		shim_log("listener %u.%u.%u.%u:%u: connections handed over by another process were "
			 "refused: %s", IP4(l->laddr), l->lport, strerror(-n));
	else
		shim_vlog("listener %u.%u.%u.%u:%u: took over %d of %u queued connection(s) from "
			  "another process", IP4(l->laddr), l->lport, n, im->n);
	return n;
}

void handoff_inbox_drain(void)
{
	struct mstack_ctl_import im;
	int rc;

	while (H.inbox && (rc = mstack_ctl_inbox_recv(H.inbox, &im)) != 0) {
		int n;

		if (rc < 0) {
			shim_vlog("mstackd closed the inbox (%s): opening it again", strerror(-rc));
			handoff_inbox_close();
			H.retry_at = shim_now_us() + INBOX_RETRY_US / 10;
			return;
		}
		n = import(&im);
		close(im.memfd);
		proc_flush(); /* the listener's readiness */
		mstack_ctl_inbox_reply(H.inbox, im.seq, n < 0 ? n : 0, n < 0 ? 0 : (uint32_t)n);
	}
}

void handoff_inbox_close(void)
{
	mstack_ctl_close(H.inbox);
	H.inbox = NULL;
}

void handoff_after_fork_child(void)
{
	/* the parent's inbox: close our copy of the fd, not the parent's connection state */
	if (H.inbox)
		close(mstack_ctl_fd(H.inbox));
	H.inbox = NULL;
	H.retry_at = 0;
}
