/* proc.c — the process's own UTCP stack: a control connection to mstackd, a port (AF_XDP rings
 * behind the switch), a block of leased local ports for active opens, the stack with its socket
 * table, the statistics region `mstackctl conns` reads, and the helper thread that keeps
 * connections moving (ACKs, retransmissions, keepalives) while the application is busy
 * elsewhere.  Everything is made on first need and belongs to one process: a forked child
 * starts with nothing and makes its own (design.md section 4a). */
#include "shim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "mstack_ctl.h"
#include "mstack_port.h"
#include "stats.h"
#include "utcp.h"
#include "utcp_sock.h"
#include "utcp_xdp.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18
#endif

pid_t *shim_pid_cell;

void shim_lock(void)
{
	pthread_mutex_lock(&mu);
}

void shim_unlock(void)
{
	pthread_mutex_unlock(&mu);
}

uint64_t shim_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

#define RETRY_US 1000000u /* after a failure, ask mstackd again at most once a second */

static struct proc {
	pid_t pid;                       /* the process all of this belongs to */
	struct mstack_ctl *ctl;
	uint64_t ctl_retry_at;
	char ctl_why[160];
	struct mstack_ctl_port info;
	struct mstack_port *port;
	struct utcp_xdp *x;
	struct utcp_stack *st;
	struct utcp_socks *ss;
	uint64_t stack_retry_at;
	char stack_why[200];
	uint32_t local_ip;               /* host order */
	bool leased;
	pthread_t thread;
	bool thread_on, stopping;
	int nudge;                       /* eventfd: wakes the helper thread */
	uint64_t helper_wake_at;         /* when the helper thread looks again at the latest */
	unsigned inline_waiters;         /* application threads in epoll_wait running the stack */
	uint64_t inline_at;              /* when an application thread last ran the stack */
	bool helper_port;                /* the helper thread's poll includes the port */
	/* autocorking: the connections whose sends are held (socket ids), since when the oldest
	 * hold (0: none), how many holds began (the helper thread watches it change), and when
	 * the helper thread next looks at the holds (it does without the lock) */
	int *held;
	unsigned nheld, held_cap;
	_Atomic uint64_t hold_since;
	_Atomic unsigned holds;
	_Atomic uint64_t hold_look_at;
	uint64_t helper_pushes;          /* holds the helper thread found past the bound */
	struct mstack_stats_writer stats;
	uint64_t published_us;
	unsigned published_slots;
	/* socket id -> usock, open addressing */
	int *keys;
	struct usock **vals;
	unsigned cap;
} P = { .nudge = -1, .stats = { .fd = -1 } };

static unsigned env_uint(const char *name, unsigned dflt, unsigned lo, unsigned hi)
{
	const char *v = getenv(name);
	char *end;
	unsigned long n;

	if (!v || !*v)
		return dflt;
	n = strtoul(v, &end, 10);
	if (*end || n < lo || n > hi) {
		shim_log("%s=%s is not a number in %u..%u: using %u", name, v, lo, hi, dflt);
		return dflt;
	}
	return (unsigned)n;
}

struct mstack_ctl *proc_ctl_conn(void)
{
	return P.ctl;
}

uint32_t proc_port_id(void)
{
	return P.info.port_id;
}

uint32_t proc_local_ip(void)
{
	return P.local_ip;
}

bool proc_has_lease(void)
{
	return P.leased;
}

struct utcp_socks *proc_socks(void)
{
	return P.pid == shim_pid() ? P.ss : NULL;
}

int proc_ctl(char *why, size_t whylen)
{
	uint64_t now = shim_now_us();
	int rc;

	if (P.ctl && P.pid == shim_pid())
		return 0;
	if (P.ctl_retry_at && now < P.ctl_retry_at) {
		snprintf(why, whylen, "%s", P.ctl_why);
		return -ECONNREFUSED;
	}
	P.pid = shim_pid();
	rc = mstack_ctl_connect(&P.ctl, shim.run_dir);
	if (rc) {
		snprintf(P.ctl_why, sizeof(P.ctl_why), "mstackd is not reachable at %s/app.sock (%s)",
			 shim.run_dir ? shim.run_dir : "/run/mstack", strerror(-rc));
		snprintf(why, whylen, "%s", P.ctl_why);
		P.ctl = NULL;
		P.ctl_retry_at = now + RETRY_US;
		return rc;
	}
	P.ctl_retry_at = 0;
	return 0;
}

/* A request that survives a restart of mstackd: the daemon's side of the connection is gone,
 * so connect again and repeat once (the restarted daemon adopted our port and bindings). */
int proc_ctl_retry(int (*fn)(struct mstack_ctl *, void *), void *arg)
{
	char why[160];
	int rc = proc_ctl(why, sizeof(why));

	if (rc)
		return rc;
	rc = fn(P.ctl, arg);
	if (rc == -ECONNRESET || rc == -EPIPE || rc == -ENOTCONN) {
		mstack_ctl_close(P.ctl);
		P.ctl = NULL;
		P.ctl_retry_at = 0;
		if (proc_ctl(why, sizeof(why)) == 0) {
			shim_vlog("mstackd connection re-established");
			rc = fn(P.ctl, arg);
		}
	}
	return rc;
}

/* ---- socket id -> usock ---- */

static unsigned slot_of(int sk)
{
	return ((unsigned)sk * 2654435761u) & (P.cap - 1);
}

void proc_map(int sk, struct usock *us)
{
	unsigned i = slot_of(sk);

	while (P.keys[i] >= 0 && P.keys[i] != sk)
		i = (i + 1) & (P.cap - 1);
	P.keys[i] = sk;
	P.vals[i] = us;
}

static struct usock *lookup(int sk)
{
	unsigned i = slot_of(sk);

	for (unsigned n = 0; n < P.cap && P.keys[i] >= 0; n++, i = (i + 1) & (P.cap - 1))
		if (P.keys[i] == sk)
			return P.vals[i];
	return NULL;
}

void proc_unmap(int sk)
{
	unsigned i = slot_of(sk);

	while (P.keys[i] >= 0 && P.keys[i] != sk)
		i = (i + 1) & (P.cap - 1);
	if (P.keys[i] < 0)
		return;
	P.keys[i] = -1;
	/* re-insert the rest of the cluster */
	for (i = (i + 1) & (P.cap - 1); P.keys[i] >= 0; i = (i + 1) & (P.cap - 1)) {
		int k = P.keys[i];
		struct usock *v = P.vals[i];

		P.keys[i] = -1;
		proc_map(k, v);
	}
}

struct usock *proc_listener_by_binding(uint32_t binding)
{
	if (!P.keys || P.pid != shim_pid())
		return NULL;
	for (unsigned i = 0; i < P.cap; i++) {
		struct usock *us = P.vals[i];

		if (P.keys[i] >= 0 && us && us->kind == US_LISTENER && us->binding == (int64_t)binding &&
		    us->sk >= 0)
			return us;
	}
	return NULL;
}

static void on_notify(void *arg, int sk, unsigned ready)
{
	struct usock *us = lookup(sk);

	(void)arg;
	if (us)
		wait_notify(us, ready);
}

/* ---- the statistics region ---- */

static void publish(uint64_t now)
{
	unsigned slot = 0;

	if (P.stats.fd < 0 || now - P.published_us < 250000)
		return;
	P.published_us = now;
	mstack_stats_begin(&P.stats);
	for (int sk = utcp_sk_next(P.ss, -1); sk >= 0; sk = utcp_sk_next(P.ss, sk)) {
		struct utcp_conn_info info = { .sz = sizeof(info) };

		if (utcp_sk_is_listener(P.ss, sk) || utcp_sk_info(P.ss, sk, &info))
			continue;
		if (mstack_stats_put_conn(&P.stats, slot, &info) == 0)
			slot++;
	}
	for (unsigned i = slot; i < P.published_slots; i++)
		mstack_stats_clear_conn(&P.stats, i);
	P.published_slots = slot;
	mstack_stats_put_stack(&P.stats, utcp_get_stats(P.st));
	mstack_stats_end(&P.stats, now);
}

/* ---- the helper thread ---- */

/* While an application thread waits in epoll_wait it runs the stack itself on the frames that
 * woke it (proc_run_inline): no hand-off through the helper thread, whose poll then leaves
 * the port out and only keeps the timers.  So it does while the application keeps coming
 * back (every socket call and every epoll_wait runs the stack first): a busy server is
 * between two epoll_waits most of the time, and a helper thread that took the port then
 * would wake on every frame and fight the application for the lock.  It takes the port
 * when a thread blocks elsewhere (poll, select, a blocking call: wait.c nudges it) or
 * when no application thread has run the stack for INLINE_IDLE_MS, so connections keep
 * moving if the application stops calling. */
#define INLINE_IDLE_MS 50

/* Autocorking's bound.  Holds are pushed by the application itself when it waits; the helper
 * thread only covers a thread that sent and then blocked where the shim does not see it (a
 * futex, a sleep, a kernel descriptor's read): it looks at the holds at the oldest one's bound,
 * without taking the lock unless one is past it.  While holds keep beginning it looks every
 * bound whether or not one is there (a busy application: then proc_hold never has to wake
 * it); once a whole bound passed with no new hold it stops, and the next hold wakes it.  The
 * time it will look is published before it reads the holds again, and proc_hold publishes its
 * hold before it reads that time (both sequentially consistent): either the helper sees the
 * new hold, or proc_hold sees that the helper would look too late and wakes it. */
static uint64_t hold_look(uint64_t now, unsigned *seen)
{
	for (;;) {
		uint64_t since = atomic_load(&P.hold_since), at;
		unsigned h = atomic_load(&P.holds);

		at = since ? since + shim.autocork_us : h != *seen ? now + shim.autocork_us : UINT64_MAX;
		*seen = h;
		atomic_store(&P.hold_look_at, at);
		if (at != UINT64_MAX || (atomic_load(&P.hold_since) == 0 && atomic_load(&P.holds) == h))
			return at;
	}
}

static bool hold_overdue(uint64_t now)
{
	uint64_t since = atomic_load(&P.hold_since);

	return since && now >= since + shim.autocork_us;
}

static void *helper_main(void *arg)
{
	REAL(ppoll);
	/* the nudge, the inbox (-1: none; poll skips it), the port (while not left to the
	 * application's threads) */
	struct pollfd pf[3] = { { .fd = P.nudge, .events = POLLIN },
				{ .fd = -1, .events = POLLIN },
				{ .fd = mstack_port_fd(P.port), .events = POLLIN } };
	unsigned seen = 0;

	(void)arg;
	shim_lock();
	while (!P.stopping) {
		uint64_t now = shim_now_us(), next, due;
		nfds_t npf;

		if (pf[1].revents)
			handoff_inbox_drain();
		pf[1].fd = handoff_inbox_fd();
		utcp_poll(P.st, now);
		if (utcp_socks_process(P.ss, now) > 0)
			wait_wake_threads();
		if (hold_overdue(now) && proc_push())
			P.helper_pushes++;
		publish(now);
		next = utcp_next_deadline(P.st);
		due = next > now + 250000u ? now + 250000u : next;
		if (P.inline_waiters > 0) {
			P.helper_port = false;
			if (due > now + INLINE_IDLE_MS * 1000u)
				due = now + INLINE_IDLE_MS * 1000u;
		} else if (!wait_threads_blocked() &&
			   now - P.inline_at < (uint64_t)INLINE_IDLE_MS * 1000u) {
			/* the application ran the stack just now and will again */
			P.helper_port = false;
			if (due > P.inline_at + INLINE_IDLE_MS * 1000u)
				due = P.inline_at + INLINE_IDLE_MS * 1000u;
		} else {
			P.helper_port = true;
		}
		P.helper_wake_at = due;
		npf = P.helper_port ? 3 : 2;
		shim_unlock();
		/* Sleep until `due` (an earlier timer nudges), looking at the holds on the way
		 * without the lock. */
		for (;;) {
			uint64_t at, wake;
			struct timespec ts;
			int r;

			now = shim_now_us();
			at = hold_look(now, &seen);
			wake = at < due ? at : due;
			wake = wake > now ? wake - now : 0;
			ts.tv_sec = (time_t)(wake / 1000000u);
			ts.tv_nsec = (long)(wake % 1000000u) * 1000;
			pf[0].revents = pf[1].revents = pf[2].revents = 0;
			r = real_ppoll(pf, npf, &ts, NULL);
			if (r != 0)
				break;
			now = shim_now_us();
			if (now >= due || hold_overdue(now))
				break;
		}
		if (pf[0].revents & POLLIN) {
			uint64_t v;
			(void)!read(P.nudge, &v, sizeof(v));
		}
		shim_lock();
	}
	shim_unlock();
	return NULL;
}

int proc_port_fd(void)
{
	return P.port && P.pid == shim_pid() ? mstack_port_fd(P.port) : -1;
}

void proc_run_inline(void)
{
	uint64_t now;

	if (!P.st || P.pid != shim_pid())
		return;
	now = shim_now_us();
	if (!P.thread_on || !pthread_equal(pthread_self(), P.thread))
		P.inline_at = now;
	utcp_poll(P.st, now);
	if (utcp_socks_process(P.ss, now) > 0)
		wait_wake_threads();
}

void proc_inline_enter(void)
{
	if (!P.st || P.pid != shim_pid())
		return;
	if (P.inline_waiters++ == 0 && P.helper_port && P.nudge >= 0)
		(void)!eventfd_write(P.nudge, 1); /* it is polling the port: let it stop */
}

void proc_inline_leave(void)
{
	if (P.st && P.pid == shim_pid() && P.inline_waiters > 0)
		P.inline_waiters--;
}

bool proc_inline_nobody(void)
{
	/* no thread runs the stack inline, and the helper thread is not watching the port */
	return P.st && P.pid == shim_pid() && P.inline_waiters == 0 && !P.helper_port;
}

void proc_hold(struct usock *us)
{
	uint64_t now;

	if (us->held || !P.st || P.pid != shim_pid())
		return;
	if (P.nheld == P.held_cap) { /* not expected: one entry per connection */
		(void)utcp_sk_push(P.ss, us->sk, shim_now_us());
		return;
	}
	us->held = true;
	P.held[P.nheld++] = us->sk;
	if (P.nheld > 1)
		return;
	now = shim_now_us();
	atomic_store(&P.hold_since, now);
	atomic_fetch_add(&P.holds, 1u);
	if (P.thread_on && atomic_load(&P.hold_look_at) > now + shim.autocork_us) {
		atomic_store(&P.hold_look_at, now);
		(void)!eventfd_write(P.nudge, 1); /* it would look too late */
	}
}

bool proc_push(void)
{
	uint64_t now;

	if (!P.nheld || !P.st || P.pid != shim_pid())
		return false;
	now = shim_now_us();
	for (unsigned i = 0; i < P.nheld; i++) {
		struct usock *us = lookup(P.held[i]);

		if (us)
			us->held = false;
		(void)utcp_sk_push(P.ss, P.held[i], now); /* a closed one: -EBADF, nothing to do */
	}
	P.nheld = 0;
	atomic_store(&P.hold_since, 0);
	proc_flush();
	return true;
}

void proc_push_flush(void)
{
	if (!proc_push())
		proc_flush();
}

bool proc_holding(void)
{
	return atomic_load_explicit(&P.hold_since, memory_order_relaxed) != 0 && P.pid == shim_pid();
}

void proc_push_unlocked(void)
{
	/* trylock: the shim's own code waits on kernel descriptors with the lock held (its
	 * requests to mstackd poll their socket) — and a lock another thread holds means the
	 * application is in a socket call: the helper thread's bound covers this wait then */
	if (!proc_holding() || pthread_mutex_trylock(&mu) != 0)
		return;
	proc_push();
	shim_unlock();
}

uint64_t proc_segs_out(void)
{
	return P.st && P.pid == shim_pid() ? utcp_get_stats(P.st)->segs_out : 0;
}

void proc_nudge(void)
{
	if (P.nudge >= 0)
		(void)!eventfd_write(P.nudge, 1);
}

static int start_helper(void)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&P.thread, NULL, helper_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		return -rc;
	P.thread_on = true;
	return 0;
}

/* After an API call: send what it queued, hand out the events it caused (a connect that
 * failed at once, a close), and wake the helper thread if a timer it armed is due before the
 * helper would look again. */
void proc_flush(void)
{
	if (!P.st || P.pid != shim_pid())
		return;
	utcp_flush(P.st, shim_now_us());
	if (utcp_socks_process(P.ss, shim_now_us()) > 0)
		wait_wake_threads();
	if (P.thread_on && utcp_next_deadline(P.st) < P.helper_wake_at) {
		P.helper_wake_at = 0;
		(void)!eventfd_write(P.nudge, 1);
	}
}

static int port_open_fn(struct mstack_ctl *ctl, void *arg)
{
	return mstack_ctl_port_open(ctl, NULL, arg);
}

static void stack_fail(char *why, size_t whylen, const char *what, int rc)
{
	const char *detail = P.ctl ? mstack_ctl_last_detail(P.ctl) : "";

	snprintf(P.stack_why, sizeof(P.stack_why), "%s: %s%s%s", what, strerror(-rc),
		 *detail ? ": " : "", detail);
	snprintf(why, whylen, "%s", P.stack_why);
	P.stack_retry_at = shim_now_us() + RETRY_US;
}

static void stack_teardown(void)
{
	handoff_inbox_close();
	if (P.ss)
		utcp_socks_destroy(P.ss, shim_now_us());
	if (P.st)
		utcp_stack_destroy(P.st);
	if (P.x)
		utcp_xdp_close(P.x);
	if (P.port)
		mstack_port_close(P.port);
	if (P.stats.region)
		mstack_stats_close(&P.stats);
	P.ss = NULL;
	P.st = NULL;
	P.x = NULL;
	P.port = NULL;
	free(P.keys);
	free(P.vals);
	free(P.held);
	P.keys = NULL;
	P.vals = NULL;
	P.held = NULL;
	P.nheld = P.held_cap = 0;
	atomic_store(&P.hold_since, 0);
}

int proc_stack(char *why, size_t whylen)
{
	struct utcp_config cfg;
	struct utcp_socks_config scfg;
	struct utcp_port uport;
	struct mstack_ctl_lease lease;
	uint64_t now = shim_now_us();
	int rc;

	if (P.st && P.pid == shim_pid())
		return 0;
	if (P.stack_retry_at && now < P.stack_retry_at) {
		snprintf(why, whylen, "%s", P.stack_why);
		return -EAGAIN;
	}
	rc = proc_ctl(why, whylen);
	if (rc) {
		snprintf(P.stack_why, sizeof(P.stack_why), "%s", why);
		P.stack_retry_at = now + RETRY_US;
		return rc;
	}
	rc = proc_ctl_retry(port_open_fn, &P.info);
	if (rc < 0) {
		stack_fail(why, whylen, "mstackd refused a port", rc);
		return rc;
	}
	rc = mstack_port_open(&P.port, P.info.umem_fd, P.info.xsk_fd, &P.info.geom);
	if (rc) {
		close(P.info.umem_fd);
		close(P.info.xsk_fd);
		stack_fail(why, whylen, "mapping the port's rings", rc);
		goto fail;
	}
	if (!P.info.n_addrs) {
		rc = -EADDRNOTAVAIL;
		stack_fail(why, whylen, "the attached NIC has no IPv4 address", rc);
		goto fail;
	}
	P.local_ip = ntohl(P.info.addrs[0]);

	utcp_config_init(&cfg);
	cfg.local_ip = P.local_ip;
	memcpy(cfg.local_mac, P.info.nic_mac, 6);
	cfg.mtu = (uint16_t)(P.info.mtu ? P.info.mtu : 1500);
	cfg.max_conns = env_uint("MSTACK_MAX_CONNS", 1024, 16, 65536);
	cfg.sndbuf = env_uint("MSTACK_SNDBUF", 256 * 1024, 16 * 1024, 16 << 20);
	cfg.rcvbuf = env_uint("MSTACK_RCVBUF", 256 * 1024, 16 * 1024, 16 << 20);
	if (getrandom(cfg.isn_key, sizeof(cfg.isn_key), 0) != (ssize_t)sizeof(cfg.isn_key))
		for (unsigned i = 0; i < sizeof(cfg.isn_key); i++)
			cfg.isn_key[i] = (uint8_t)(now >> (i % 8) ^ (uint64_t)shim_pid() * 131 * i);
	if (shim.have_policy) {
		const struct mstack_policy *pol = &shim.policy;
		snprintf(cfg.cc, sizeof(cfg.cc), "%s", pol->cc == MSTACK_CC_CUBIC ? "cubic" : "newreno");
		cfg.sack = pol->sack;
		cfg.window_scaling = pol->window_scaling;
		cfg.timestamps = pol->timestamps;
		cfg.nodelay = pol->nodelay;
		if (pol->initial_window)
			cfg.initial_window_segs = pol->initial_window;
	}
	/* Active opens come from a block of leased ports the kernel will not use; without one,
	 * connections stay on the kernel (sock.c says so). */
	if (mstack_ctl_lease(P.ctl, P.info.port_id, 0, P.info.addrs[0], &lease) >= 0 &&
	    lease.count) {
		cfg.ephemeral_lo = lease.first;
		cfg.ephemeral_hi = (uint16_t)(lease.first + lease.count - 1);
		P.leased = true;
	} else {
		shim_log("no block of local ports from mstackd (%s): outgoing connections stay on "
			 "the kernel", mstack_ctl_last_detail(P.ctl));
	}
	rc = utcp_xdp_open(&P.x, P.port);
	if (rc) {
		stack_fail(why, whylen, "the port backend", rc);
		goto fail;
	}
	uport = utcp_xdp_port(P.x);
	rc = utcp_stack_create(&cfg, &uport, now, &P.st);
	if (rc) {
		stack_fail(why, whylen, "creating the UTCP stack", rc);
		goto fail;
	}
	utcp_socks_config_init(&scfg);
	scfg.wake_fd = 0;
	rc = utcp_socks_create(P.st, &scfg, &P.ss);
	if (rc) {
		stack_fail(why, whylen, "creating the socket table", rc);
		goto fail;
	}
	for (P.cap = 64; P.cap < 2 * (cfg.max_conns + cfg.max_listeners); P.cap <<= 1)
		;
	P.keys = malloc(P.cap * sizeof(*P.keys));
	P.vals = calloc(P.cap, sizeof(*P.vals));
	if (!P.keys || !P.vals) {
		rc = -ENOMEM;
		stack_fail(why, whylen, "the socket map", rc);
		goto fail;
	}
	memset(P.keys, 0xff, P.cap * sizeof(*P.keys));
	P.held = malloc(cfg.max_conns * sizeof(*P.held));
	if (!P.held) {
		rc = -ENOMEM;
		stack_fail(why, whylen, "the autocork list", rc);
		goto fail;
	}
	P.held_cap = cfg.max_conns;
	P.nheld = 0;
	utcp_socks_set_notify(P.ss, on_notify, NULL);
	if (mstack_stats_open(&P.stats, cfg.max_conns, shim.have_policy ? shim.policy.app : "?") == 0 &&
	    mstack_ctl_stats_region(P.ctl, P.info.port_id, P.stats.fd) != 0) {
		shim_log("mstackd refused the statistics region (%s): `mstackctl conns` will not "
			 "show this process", mstack_ctl_last_detail(P.ctl));
		mstack_stats_close(&P.stats);
		P.stats.fd = -1;
	}
	handoff_inbox_open(P.info.port_id);
	P.nudge = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	rc = P.nudge < 0 ? -errno : start_helper();
	if (rc) {
		stack_fail(why, whylen, "starting the stack's thread", rc);
		goto fail;
	}
	shim_vlog("UTCP stack up: port %u, %u.%u.%u.%u, cc %s, leased ports %u-%u", P.info.port_id,
		  P.local_ip >> 24, P.local_ip >> 16 & 255, P.local_ip >> 8 & 255, P.local_ip & 255,
		  cfg.cc, P.leased ? cfg.ephemeral_lo : 0, P.leased ? cfg.ephemeral_hi : 0);
	return 0;
fail:
	stack_teardown();
	if (P.ctl)
		mstack_ctl_port_close(P.ctl, P.info.port_id);
	P.leased = false;
	return rc;
}

/* ---- fork ---- */

static void atfork_prepare(void)
{
	shim_lock();
}

static void atfork_parent(void)
{
	sock_after_fork_parent();
	shim_unlock();
}

/* The child has none of the parent's rings (MADV_DONTFORK) and no helper thread.  Close the
 * descriptors of the parent's port and control connection (the parent keeps its own) and
 * forget the rest without touching it: the parent's stack is the parent's. */
static void atfork_child(void)
{
	if (shim_pid_cell) /* wiped by the kernel already; asked now, while only this thread runs */
		__atomic_store_n(shim_pid_cell, getpid(), __ATOMIC_RELAXED);
	pthread_mutex_init(&mu, NULL);
	if (P.port)
		mstack_port_close(P.port); /* munmap of ranges the child lacks is harmless */
	if (P.stats.region)
		mstack_stats_close(&P.stats);
	if (P.ctl)
		close(mstack_ctl_fd(P.ctl)); /* not mstack_ctl_close: it is the parent's */
	if (P.nudge >= 0)
		close(P.nudge);
	handoff_after_fork_child();
	free(P.held); /* the parent's holds are the parent's to push */
	memset(&P, 0, sizeof(P));
	P.nudge = -1;
	P.stats.fd = -1;
	wait_after_fork_child();
	sock_after_fork_child();
}

/* At exit, what the application wrote must still reach the peer, as with kernel sockets:
 * finish every open connection (FIN after the queued data) and give the stack a bounded
 * time to deliver it. */
__attribute__((destructor)) static void proc_fini(void)
{
	uint64_t end;
	int tries = 0;

	/* exit() may come from a signal handler that interrupted a thread holding the lock */
	while (pthread_mutex_trylock(&mu) != 0) {
		if (++tries > 100)
			return;
		usleep(1000);
	}
	if (!P.st || P.pid != shim_pid() || !P.thread_on) {
		shim_unlock();
		return;
	}
	/* listeners the application did not close: their queues go to other members */
	for (unsigned i = 0; i < P.cap; i++) {
		struct usock *us = P.vals[i];

		if (P.keys[i] >= 0 && us && us->kind == US_LISTENER && us->sk >= 0)
			usock_listener_closing(us);
	}
	for (int sk = utcp_sk_next(P.ss, -1); sk >= 0; sk = utcp_sk_next(P.ss, sk))
		if (!utcp_sk_is_listener(P.ss, sk))
			utcp_sk_shutdown(P.ss, sk, SHUT_WR, shim_now_us());
	utcp_flush(P.st, shim_now_us());
	/* As long as the peers keep acknowledging (the kernel keeps an orphaned socket sending
	 * too), but not for ever: 5 s without progress, 60 s in all. */
	{
		uint64_t start = shim_now_us(), progress_at = start;
		long last = -1;

		end = start + 60000000u;
		while (shim_now_us() < end && shim_now_us() - progress_at < 5000000u) {
			/* every connection: also those the application already closed */
			long left = (long)utcp_stack_unacked(P.st);

			if (!left)
				break;
			if (last < 0 || left < last)
				progress_at = shim_now_us();
			last = left;
			shim_unlock();
			usleep(2000);
			shim_lock();
		}
	}
	P.stopping = true;
	shim_unlock();
	if (P.nudge >= 0)
		(void)!eventfd_write(P.nudge, 1);
	pthread_join(P.thread, NULL);
}

__attribute__((constructor)) static void proc_init(void)
{
	void *page = mmap(NULL, (size_t)sysconf(_SC_PAGESIZE), PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (page != MAP_FAILED) {
		if (madvise(page, (size_t)sysconf(_SC_PAGESIZE), MADV_WIPEONFORK) == 0) {
			*(pid_t *)page = getpid();
			shim_pid_cell = page;
		} else {
			munmap(page, (size_t)sysconf(_SC_PAGESIZE));
		}
	}
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}
