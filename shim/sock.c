/* sock.c — the socket calls.  listen() and connect() decide, by policy, whether a socket goes to
 * UTCP; from then on every call on its descriptor (and on dups of it) is served by the
 * process's UTCP stack, and every other descriptor goes to libc untouched.  A listed socket
 * that stays on the kernel says why (never a silent non-acceleration). */
#include "shim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <limits.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <linux/sockios.h>
#include <unistd.h>

#include "mstack_ctl.h"
#include "utcp_sock.h"

#define ENTRY_BITS ((int)(8 * sizeof(long)))

static int fail(int e)
{
	errno = e;
	return -1;
}

/* ---- policy decisions ---- */

/* The IPv4 address and port of an AF_INET or IPv4-carrying AF_INET6 sockaddr (host byte
 * order); 0 if it carries no IPv4 (then the kernel keeps the socket). */
static int ipv4_of(const struct sockaddr *sa, socklen_t len, uint32_t *addr, uint16_t *port)
{
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const void *)sa;
		*addr = ntohl(in->sin_addr.s_addr);
		*port = ntohs(in->sin_port);
		return 1;
	}
	if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) {
			*addr = 0; /* [::] with IPV6_V6ONLY off takes IPv4 too */
		} else if (!memcmp(in6->sin6_addr.s6_addr, mapped, 12)) {
			memcpy(addr, in6->sin6_addr.s6_addr + 12, 4);
			*addr = ntohl(*addr);
		} else {
			return 0;
		}
		*port = ntohs(in6->sin6_port);
		return 1;
	}
	return 0;
}

/* The kernel's getsockopt, never ours: internal callers may hold the lock. */
static int kgetsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	REAL(getsockopt);

	return real_getsockopt(fd, level, name, val, len);
}

static int sockopt_int(int fd, int level, int name)
{
	int v = 0;
	socklen_t len = sizeof(v);

	return kgetsockopt(fd, level, name, &v, &len) == 0 ? v : -1;
}

static int is_tcp(int fd)
{
	return sockopt_int(fd, SOL_SOCKET, SO_TYPE) == SOCK_STREAM &&
	       sockopt_int(fd, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP;
}

static int first_match(const struct mstack_policy_ep *eps, unsigned n, uint32_t addr,
		       uint16_t port, int wildcard_only)
{
	for (unsigned i = 0; i < n; i++) {
		const struct mstack_policy_ep *ep = &eps[i];
		if (wildcard_only && ep->mask)
			continue;
		if ((addr & ep->mask) == ep->net && port >= ep->port_lo && port <= ep->port_hi)
			return (int)i;
	}
	return -1;
}


/* A listed socket that stays on the kernel says why, once per policy entry (each time with
 * MSTACK_VERBOSE=1). */
static void fallback(unsigned long *warned, int entry, const char *what, uint32_t addr,
		     uint16_t port, const char *why)
{
	unsigned long bit = 1ul << (entry % ENTRY_BITS);
	unsigned long *word = &warned[(entry / ENTRY_BITS) % 2];

	if ((*word & bit) && !shim.verbose)
		return;
	*word |= bit;
	shim_log("%s %u.%u.%u.%u:%u is listed for UTCP (policy %s) but stays on the kernel: %s",
		 what, IP4(addr), port, shim.policy.app, why);
}

/* ---- usocks ---- */

static _Atomic(uintptr_t) fd_storage_dummy;
_Atomic(uintptr_t) *shim_fds;
static int fd_hi = -1; /* highest fd ever set (lock held) */

void fdtab_set(int fd, uintptr_t v)
{
	if (!shim_fds) {
		shim_fds = calloc(SHIM_MAX_FDS, sizeof(*shim_fds));
		if (!shim_fds) {
			shim_fds = &fd_storage_dummy;
			return;
		}
	}
	if (fd < 0 || (unsigned)fd >= SHIM_MAX_FDS || shim_fds == &fd_storage_dummy)
		return;
	if (fd > fd_hi)
		fd_hi = fd;
	atomic_store_explicit(&shim_fds[fd], v, memory_order_release);
}

/* fd no longer names what the table says (closed, or a dup2 target): drop its reference to
 * the usock or epoll instance and any epoll registration noted for it.  Lock held. */
static void fd_forget(int fd)
{
	uintptr_t v = fd_raw(fd);

	if (v) {
		fdtab_set(fd, 0);
		if (v & FD_TAG_EPOLL)
			wait_sepoll_put(fd, (struct sepoll *)(v & ~FD_TAG_EPOLL));
		else
			usock_put(fd, (struct usock *)v);
	}
	wait_forget_kernel_regs(fd);
}

/* A descriptor the kernel just handed out cannot be ours: drop what a close that went past
 * the shim (libc-internal) left behind. */
void fd_fresh(int fd)
{
	if (!fd_raw(fd) && !wait_kernel_regs_hint(fd))
		return;
	shim_lock();
	fd_forget(fd);
	shim_unlock();
}

static struct usock *usock_new(enum usock_kind kind, int family)
{
	struct usock *us = calloc(1, sizeof(*us));

	if (!us)
		return NULL;
	us->kind = kind;
	us->refs = 1;
	us->pid = shim_pid();
	us->sk = -1;
	us->family = family;
	us->binding = -1;
	dl_init(&us->watchers);
	return us;
}

bool usock_foreign(struct usock *us)
{
	return us->kind == US_CONN && us->pid != shim_pid();
}

void usock_say_foreign(int fd, struct usock *us)
{
	if (us->foreign_said)
		return;
	us->foreign_said = true;
	shim_log("fd %d is a UTCP connection of process %ld; this process (forked from it) cannot "
		 "use it: EBADFD", fd, (long)us->pid);
}

static int64_t tv_us(int fd, int name)
{
	struct timeval tv = { 0 };
	socklen_t len = sizeof(tv);

	if (kgetsockopt(fd, SOL_SOCKET, name, &tv, &len))
		return 0;
	return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static bool kernel_nonblock(int fd)
{
	REAL(fcntl);
	int fl = real_fcntl(fd, F_GETFL);

	return fl >= 0 && (fl & O_NONBLOCK);
}

/* The shadow of a listener never blocks: accept() asks UTCP and the kernel in turn. */
static void set_kernel_nonblock(int fd)
{
	REAL(fcntl);
	int fl = real_fcntl(fd, F_GETFL);

	if (fl >= 0 && !(fl & O_NONBLOCK))
		real_fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Socket options UTCP keeps itself.  `carried`: set on the kernel socket before listen() or
 * connect() decided for UTCP, they are copied over (buffer sizes are not: the kernel reports
 * its own defaults, doubled, which would cap UTCP's buffers; TCP_MAXSEG is read-only). */
static const struct sk_opt {
	int level, name;
	enum utcp_sk_opt opt;
	bool carried;
} sk_opts[] = {
	{ SOL_SOCKET, SO_KEEPALIVE, UTCP_SO_KEEPALIVE, true },
	{ SOL_SOCKET, SO_RCVBUF, UTCP_SO_RCVBUF, false },
	{ SOL_SOCKET, SO_SNDBUF, UTCP_SO_SNDBUF, false },
	{ IPPROTO_TCP, TCP_NODELAY, UTCP_TCP_NODELAY, true },
	{ IPPROTO_TCP, TCP_CORK, UTCP_TCP_CORK, true },
	{ IPPROTO_TCP, TCP_KEEPIDLE, UTCP_TCP_KEEPIDLE, true },
	{ IPPROTO_TCP, TCP_KEEPINTVL, UTCP_TCP_KEEPINTVL, true },
	{ IPPROTO_TCP, TCP_KEEPCNT, UTCP_TCP_KEEPCNT, true },
	{ IPPROTO_TCP, TCP_DEFER_ACCEPT, UTCP_TCP_DEFER_ACCEPT, true },
	{ IPPROTO_TCP, TCP_MAXSEG, UTCP_TCP_MAXSEG, false },
};

static const struct sk_opt *opt_of(int level, int name)
{
	for (unsigned i = 0; i < sizeof(sk_opts) / sizeof(sk_opts[0]); i++)
		if (sk_opts[i].level == level && sk_opts[i].name == name)
			return &sk_opts[i];
	return NULL;
}

/* Carry the options set on the kernel socket before the decision over to the UTCP socket. */
static void copy_options(int fd, struct utcp_socks *ss, int sk)
{
	struct linger lg = { 0 };
	socklen_t len = sizeof(lg);
	char cc[16] = "";

	for (unsigned i = 0; i < sizeof(sk_opts) / sizeof(sk_opts[0]); i++) {
		int v = sk_opts[i].carried ? sockopt_int(fd, sk_opts[i].level, sk_opts[i].name) : 0;
		if (v > 0)
			utcp_sk_setopt(ss, sk, sk_opts[i].opt, v);
	}
	if (!kgetsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len) && lg.l_onoff)
		utcp_sk_setopt(ss, sk, UTCP_SO_LINGER, lg.l_linger);
	/* An explicit "reno" is UTCP's NewReno; any other name may be the kernel's default and
	 * says nothing the policy does not say better. */
	len = sizeof(cc);
	if (!kgetsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &len) && !strncmp(cc, "reno", 5))
		utcp_sk_set_cc(ss, sk, "newreno");
}

static void put_addr(int family, uint32_t addr, uint16_t port, struct sockaddr *sa,
		     socklen_t *len)
{
	struct sockaddr_storage ss;
	socklen_t n;

	if (!sa || !len)
		return;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *in6 = (void *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		in6->sin6_addr.s6_addr[10] = 0xff;
		in6->sin6_addr.s6_addr[11] = 0xff;
		addr = htonl(addr);
		memcpy(in6->sin6_addr.s6_addr + 12, &addr, 4);
		n = sizeof(*in6);
	} else {
		struct sockaddr_in *in = (void *)&ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(port);
		in->sin_addr.s_addr = htonl(addr);
		n = sizeof(*in);
	}
	memcpy(sa, &ss, *len < n ? *len : n);
	*len = n;
}

struct reg_arg {
	int fd;
	int64_t binding;
	uint32_t port_id;
};

static int register_fn(struct mstack_ctl *ctl, void *arg)
{
	struct reg_arg *a = arg;
	int rc = mstack_ctl_register(ctl, a->fd, MSTACK_REG_LISTEN, 0, NULL);

	if (rc >= 0)
		a->binding = rc;
	return rc < 0 ? rc : 0;
}

static int register_connect_fn(struct mstack_ctl *ctl, void *arg)
{
	struct reg_arg *a = arg;
	int rc = mstack_ctl_register(ctl, a->fd, MSTACK_REG_CONNECT, a->port_id, NULL);

	if (rc >= 0)
		a->binding = rc;
	return rc < 0 ? rc : 0;
}

static int claim_fn(struct mstack_ctl *ctl, void *arg)
{
	struct reg_arg *a = arg;

	return mstack_ctl_claim(ctl, (uint32_t)a->binding, a->fd);
}

static int join_fn(struct mstack_ctl *ctl, void *arg)
{
	struct reg_arg *a = arg;

	return mstack_ctl_group_join(ctl, (uint32_t)a->binding, a->port_id);
}

static int leave_fn(struct mstack_ctl *ctl, void *arg)
{
	struct reg_arg *a = arg;

	return mstack_ctl_group_leave(ctl, (uint32_t)a->binding, a->port_id);
}

static int release_fn(struct mstack_ctl *ctl, void *arg)
{
	struct reg_arg *a = arg;

	return mstack_ctl_release(ctl, (uint32_t)a->binding);
}

static const char *ctl_detail(void)
{
	struct mstack_ctl *ctl = proc_ctl_conn();

	return ctl ? mstack_ctl_last_detail(ctl) : "";
}

static int listener_setup(struct usock *us, bool waiting);

/* A registered listener that cannot get its UTCP side says why, under its policy entry. */
static void listener_fallback(const struct usock *us, const char *why)
{
	int e = first_match(shim.policy.listen, shim.policy.n_listen, us->laddr, us->lport,
			    us->laddr == 0);

	fallback(shim.warned_listen, e < 0 ? 0 : e, "listener", us->laddr, us->lport, why);
}

int usock_listener_ready(struct usock *us)
{
	return listener_setup(us, true);
}

int usock_listener_join_paused(struct usock *us)
{
	return listener_setup(us, false);
}

/* The listener's UTCP side in this process.  A process that only listened so far is in the
 * group with its UTCP listener paused: SYNs steered to it go unanswered and are retried by
 * the peer, so that a process that never accepts (it forks workers instead) holds no
 * connection; its first wait resumes it. */
static int listener_setup(struct usock *us, bool waiting)
{
	struct utcp_socks *ss;
	char why[200];
	int rc;

	if (us->pid != shim_pid()) { /* a forked child: its own stack, its own membership */
		us->pid = shim_pid();
		us->sk = -1;
		us->joined = false;
	}
	if (us->sk >= 0 && us->joined && (!us->paused || !waiting))
		return 0;
	if (us->binding < 0)
		return -ENOENT;
	if (us->shut)
		return -EINVAL; /* the kernel says so too: accept() gets its EINVAL */
	rc = proc_stack(why, sizeof(why));
	if (rc) {
		listener_fallback(us, why);
		return rc;
	}
	ss = proc_socks();
	if (us->laddr && us->laddr != proc_local_ip()) {
		snprintf(why, sizeof(why), "its address is not the attached NIC's first address");
		listener_fallback(us, why);
		return -EADDRNOTAVAIL;
	}
	if (us->sk < 0) {
		int sk = utcp_sk_open(ss);

		if (sk < 0)
			return sk;
		copy_options(us->fd, ss, sk);
		rc = utcp_sk_listen(ss, sk, us->lport, us->backlog ? us->backlog : 511);
		if (rc < 0) {
			utcp_sk_close(ss, sk, shim_now_us());
			snprintf(why, sizeof(why), "UTCP cannot listen on it: %s", strerror(-rc));
			listener_fallback(us, why);
			return rc;
		}
		us->sk = sk;
		us->paused = false;
		proc_map(sk, us);
	}
	if (us->paused != !waiting) {
		utcp_sk_listen_pause(ss, us->sk, !waiting);
		us->paused = !waiting;
	}
	if (!us->joined) {
		struct reg_arg a = { .binding = us->binding, .port_id = proc_port_id() };

		rc = proc_ctl_retry(join_fn, &a);
		if (rc) {
			snprintf(why, sizeof(why), "mstackd refused the listen group: %s: %s",
				 strerror(-rc), ctl_detail());
			listener_fallback(us, why);
			return rc;
		}
		us->joined = true;
		shim_vlog("listener %u.%u.%u.%u:%u: this process (port %u) joined its listen group",
			  IP4(us->laddr), us->lport, proc_port_id());
	}
	return 0;
}

/* fd becomes one of ours: what the application set on the kernel socket (O_NONBLOCK, its
 * timeouts) read back, a listener's shadow made non-blocking, epoll registrations made while
 * it was the kernel's moved into the shim's lists.  Lock held. */
static void usock_install(int fd, struct usock *us)
{
	us->fd = fd;
	us->nonblock = kernel_nonblock(fd);
	us->rcvtimeo_us = tv_us(fd, SO_RCVTIMEO);
	us->sndtimeo_us = tv_us(fd, SO_SNDTIMEO);
	if (us->kind == US_LISTENER)
		set_kernel_nonblock(fd);
	if (us->sk >= 0)
		proc_map(us->sk, us);
	fdtab_set(fd, (uintptr_t)us);
	wait_adopt_kernel_regs(fd, us);
}

/* This process's port leaves the listener's group (when: said in verbose mode, or NULL). */
static void listener_leave(struct usock *us, const char *when)
{
	struct reg_arg a = { .binding = us->binding, .port_id = proc_port_id() };

	if (!us->joined)
		return;
	proc_ctl_retry(leave_fn, &a);
	us->joined = false;
	if (when)
		shim_vlog("listener %u.%u.%u.%u:%u: left its listen group %s (joins again on the "
			  "next wait)", IP4(us->laddr), us->lport, when);
}

void usock_listener_closing(struct usock *us)
{
	/* No new handshake from here on: a SYN-ACK sent after leaving the group would not pass
	 * the switch (the port is no member) and its flow could not move; the peer's next SYN
	 * finds a member. */
	utcp_sk_listen_pause(proc_socks(), us->sk, true);
	listener_leave(us, NULL);
	handoff_listener(us);
}

static void usock_free(struct usock *us)
{
	wait_forget_usock(us);
	free(us);
}

void usock_put(int fd, struct usock *us)
{
	struct utcp_socks *ss = proc_socks();

	(void)fd;
	if (--us->refs > 0)
		return;
	if (us->kind == US_CONN) {
		if (us->pid == shim_pid() && ss && us->sk >= 0) {
			int linger = -1;

			proc_run_inline(); /* data that arrived decides between FIN and RST */

			utcp_sk_getopt(ss, us->sk, UTCP_SO_LINGER, &linger);
			if (linger > 0 && !us->nonblock) {
				/* SO_LINGER: close waits (bounded) until the peer has the data. */
				uint64_t end = shim_now_us() + (uint64_t)linger * 1000000u;
				utcp_sk_shutdown(ss, us->sk, SHUT_WR, shim_now_us());
				proc_flush();
				while (utcp_sk_outq(ss, us->sk) > 0 &&
				       wait_block(-1, 0, end) == 0)
					;
			}
			proc_unmap(us->sk);
			utcp_sk_close(ss, us->sk, shim_now_us()); /* the FIN takes held data along */
			proc_push_flush();
		}
		if (us->binding >= 0 && us->pid == shim_pid()) {
			struct reg_arg a = { .binding = us->binding };
			proc_ctl_retry(release_fn, &a);
		}
	} else {
		struct reg_arg a = { .binding = us->binding, .port_id = proc_port_id() };

		if (us->pid == shim_pid() && ss && us->sk >= 0) {
			usock_listener_closing(us);
			proc_unmap(us->sk);
			utcp_sk_close(ss, us->sk, shim_now_us());
			proc_flush();
		}
		if (us->binding >= 0 && proc_ctl_conn())
			proc_ctl_retry(release_fn, &a);
	}
	usock_free(us);
}

/* ---- listen, accept, connect ---- */

SHIM_EXPORT int listen(int fd, int backlog)
{
	REAL(listen);
	REAL(fcntl);
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);
	struct reg_arg a = { .fd = fd, .binding = -1 };
	struct usock *us;
	char why[200];
	uint32_t addr;
	uint16_t port;
	int rc, e, family;

	(void)real_fcntl;
	if (!shim.have_policy)
		return real_listen(fd, backlog);
	if (fd_usock(fd)) {
		rc = real_listen(fd, backlog);
		shim_lock();
		us = fd_usock(fd);
		if (!rc && us && us->kind == US_LISTENER)
			us->shut = false; /* listening again after a shutdown: UTCP again */
		shim_unlock();
		return rc;
	}
	if (!is_tcp(fd) || getsockname(fd, (struct sockaddr *)&sa, &len) ||
	    !ipv4_of((struct sockaddr *)&sa, len, &addr, &port))
		return real_listen(fd, backlog);
	family = sa.ss_family;
	e = first_match(shim.policy.listen, shim.policy.n_listen, addr, port, addr == 0);
	if (e >= 0 && (addr >> 24) != 127) {
		/* The port first (the slow part): from the kernel's listen() to the group's join,
		 * new flows go to the shadow; keep that window to two requests to mstackd. */
		shim_lock();
		(void)proc_stack(why, sizeof(why));
		shim_unlock();
	}
	rc = real_listen(fd, backlog);
	if (rc)
		return rc;
	if (e < 0) {
		shim_vlog("listener %u.%u.%u.%u:%u: kernel (not listed)", IP4(addr), port);
		return 0;
	}
	if ((addr >> 24) == 127) {
		fallback(shim.warned_listen, e, "listener", addr, port,
			 "a loopback address is this host's own traffic");
		return 0;
	}
	if (family == AF_INET6 && addr == 0 && sockopt_int(fd, IPPROTO_IPV6, IPV6_V6ONLY) == 1) {
		fallback(shim.warned_listen, e, "listener", addr, port,
			 "an IPV6_V6ONLY socket carries no IPv4");
		return 0;
	}
	shim_lock();
	rc = proc_ctl(why, sizeof(why));
	if (!rc) {
		rc = proc_ctl_retry(register_fn, &a);
		if (rc)
			snprintf(why, sizeof(why), "mstackd refused to register it: %s: %s",
				 strerror(-rc), ctl_detail());
	}
	if (!rc && !(us = usock_new(US_LISTENER, family))) {
		rc = -ENOMEM;
		snprintf(why, sizeof(why), "out of memory");
	}
	if (rc) {
		shim_unlock();
		fallback(shim.warned_listen, e, "listener", addr, port, why);
		errno = 0;
		return 0;
	}
	us->binding = a.binding;
	us->laddr = addr;
	us->lport = port;
	us->backlog = backlog;
	usock_install(fd, us);
	shim_vlog("listener %u.%u.%u.%u:%u: UTCP (binding %lld)", IP4(addr), port,
		  (long long)a.binding);
	/* A listening process is expected to accept: it joins the listen group now, so that
	 * clients connecting before its first accept() are queued on UTCP as the kernel would
	 * queue them.  A process that forks instead (a pre-forking master) leaves at the fork. */
	(void)usock_listener_join_paused(us);
	shim_unlock();
	return 0;
}

/* A UTCP connection the listener accepted becomes a descriptor: a kernel TCP socket that is
 * never connected stands for it. */
static int adopt_accepted(struct usock *l, int sk, const struct utcp_sk_name *peer,
			  struct sockaddr *addr, socklen_t *alen, int flags)
{
	REAL(socket);
	struct utcp_socks *ss = proc_socks();
	struct usock *us = usock_new(US_CONN, l->family);
	int fd;

	fd = us ? real_socket(l->family, SOCK_STREAM | (flags & (SOCK_CLOEXEC | SOCK_NONBLOCK)), 0)
		: -1;
	if (fd < 0) {
		int e = us ? errno : ENOMEM;
		free(us);
		utcp_sk_close(ss, sk, shim_now_us());
		proc_flush();
		return fail(e);
	}
	fd_forget(fd); /* what a close that went past the shim left behind */
	us->sk = sk;
	us->nonblock = flags & SOCK_NONBLOCK;
	us->rcvtimeo_us = l->rcvtimeo_us;
	us->sndtimeo_us = l->sndtimeo_us;
	proc_map(sk, us);
	fdtab_set(fd, (uintptr_t)us);
	put_addr(l->family, peer->raddr, peer->rport, addr, alen);
	return fd;
}

/* wait_block for a call on `us`, which the call holds meanwhile: another thread may close
 * its fd (then *gone), but the usock stays valid until the call lets it go — freed here if
 * that close was the last.  (Linux would keep the call waiting on the closed socket; the
 * shim fails it with EBADF, docs/shim.md.)  Lock held. */
static int wait_held(int fd, struct usock *us, int kfd, short kevents, uint64_t deadline,
		     bool *gone)
{
	int w;

	us->refs++;
	w = wait_block(kfd, kevents, deadline);
	*gone = fd_usock(fd) != us;
	if (--us->refs == 0) {
		us->refs = 1;
		usock_put(fd, us);
		*gone = true;
	}
	return w;
}

static int do_accept(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
	REAL(accept4);
	struct usock *us = fd_usock(fd);
	uint64_t deadline;
	int k;

	if (!us || us->kind != US_LISTENER) {
		k = real_accept4(fd, addr, alen, flags);
		if (k >= 0)
			fd_fresh(k);
		return k;
	}
	shim_lock();
	us = fd_usock(fd);
	if (!us || us->kind != US_LISTENER) {
		shim_unlock();
		return real_accept4(fd, addr, alen, flags);
	}
	deadline = us->rcvtimeo_us ? shim_now_us() + (uint64_t)us->rcvtimeo_us : UINT64_MAX;
	for (;;) {
		struct utcp_sk_name peer;
		int w;
		bool gone;

		if (usock_listener_ready(us) == 0) {
			int sk;

			proc_run_inline();
			sk = utcp_sk_accept(proc_socks(), us->sk, &peer);
			if (sk >= 0) {
				k = adopt_accepted(us, sk, &peer, addr, alen, flags);
				wait_recheck(us);
				shim_unlock();
				return k;
			}
		}
		/* Local clients reach the shadow listener through the kernel. */
		k = real_accept4(fd, addr, alen, flags);
		if (k >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
			int e = errno;
			shim_unlock();
			if (k >= 0)
				fd_fresh(k);
			errno = e;
			return k;
		}
		if (us->nonblock) {
			shim_unlock();
			return fail(EAGAIN);
		}
		w = wait_held(fd, us, fd, POLLIN, deadline, &gone);
		if (gone) { /* closed under us by another thread */
			shim_unlock();
			return fail(EBADF);
		}
		if (w == -ETIMEDOUT || w == -EINTR) {
			shim_unlock();
			return fail(w == -ETIMEDOUT ? EAGAIN : EINTR);
		}
	}
}

SHIM_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *alen)
{
	return do_accept(fd, addr, alen, 0);
}

SHIM_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *alen, int flags)
{
	return do_accept(fd, addr, alen, flags);
}

static int conn_state(struct usock *us)
{
	struct utcp_conn_info info = { .sz = sizeof(info) };

	if (utcp_sk_info(proc_socks(), us->sk, &info))
		return UTCP_CLOSED;
	return info.state;
}

/* Wait for a connect in progress; lock held. */
static int connect_wait(int fd, struct usock *us)
{
	uint64_t deadline = us->sndtimeo_us ? shim_now_us() + (uint64_t)us->sndtimeo_us : UINT64_MAX;

	for (;;) {
		int ready = utcp_sk_ready(proc_socks(), us->sk), w, err;
		bool gone;

		if (ready < 0)
			return fail(EBADF);
		if (ready & (POLLOUT | POLLERR | POLLHUP)) {
			err = utcp_sk_error(proc_socks(), us->sk);
			return err ? fail(-err) : 0;
		}
		w = wait_held(fd, us, -1, 0, deadline, &gone);
		if (gone)
			return fail(EBADF);
		if (w == -ETIMEDOUT)
			return fail(EINPROGRESS);
		if (w == -EINTR)
			return fail(EINTR);
	}
}

SHIM_EXPORT int connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	REAL(connect);
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	struct utcp_socks *ss;
	struct usock *us = fd_usock(fd);
	struct reg_arg a = { .fd = fd, .binding = -1 };
	char why[200];
	uint32_t addr, baddr;
	uint16_t port, bport;
	int e, rc, sk;

	if (us) {
		shim_lock();
		us = fd_usock(fd);
		if (us && us->kind == US_CONN) {
			if (usock_foreign(us)) {
				usock_say_foreign(fd, us);
				rc = fail(EBADFD);
			} else if (conn_state(us) == UTCP_SYN_SENT) {
				rc = us->nonblock ? fail(EALREADY) : connect_wait(fd, us);
				us->connect_said = rc == 0 || errno != EALREADY;
			} else if (!us->connect_said) {
				/* the first connect() after a non-blocking one completed reports it */
				int err = utcp_sk_error(proc_socks(), us->sk);
				us->connect_said = true;
				rc = err ? fail(-err) : 0;
			} else {
				rc = fail(EISCONN);
			}
			shim_unlock();
			return rc;
		}
		shim_unlock();
		return real_connect(fd, sa, len);
	}
	if (!shim.have_policy || !sa || !ipv4_of(sa, len, &addr, &port) || !is_tcp(fd))
		return real_connect(fd, sa, len);
	e = first_match(shim.policy.connect, shim.policy.n_connect, addr, port, 0);
	if (e < 0) {
		shim_vlog("connection to %u.%u.%u.%u:%u: kernel (not listed)", IP4(addr), port);
		return real_connect(fd, sa, len);
	}
	if ((addr >> 24) == 127 || addr == 0) {
		shim_vlog("connection to %u.%u.%u.%u:%u: kernel (this host)", IP4(addr), port);
		return real_connect(fd, sa, len);
	}
	bport = 0;
	if (getsockname(fd, (struct sockaddr *)&bound, &blen) ||
	    !ipv4_of((struct sockaddr *)&bound, blen, &baddr, &bport))
		baddr = 0, bport = 0;
	shim_lock();
	rc = proc_stack(why, sizeof(why));
	if (!rc && baddr && baddr != proc_local_ip()) {
		rc = -EADDRNOTAVAIL;
		snprintf(why, sizeof(why), "the socket is bound to another local address");
	}
	if (!rc && bport) {
		/* bound to a port of its own: the bound socket is the shadow that holds it, and
		 * mstackd steers its 3-tuple to this process's port */
		a.fd = fd;
		a.port_id = proc_port_id();
		rc = proc_ctl_retry(register_connect_fn, &a);
		if (rc)
			snprintf(why, sizeof(why), "mstackd refused its bound port: %s: %s",
				 strerror(-rc), ctl_detail());
	}
	if (!rc && !bport && !proc_has_lease()) {
		rc = -EADDRNOTAVAIL;
		snprintf(why, sizeof(why), "mstackd leased this process no local ports");
	}
	if (!rc && addr == proc_local_ip()) {
		rc = -EADDRNOTAVAIL;
		snprintf(why, sizeof(why), "it is this host's own address");
	}
	if (rc) {
		shim_unlock();
		fallback(shim.warned_connect, e, "connection to", addr, port, why);
		return real_connect(fd, sa, len);
	}
	ss = proc_socks();
	us = usock_new(US_CONN, sa->sa_family);
	sk = us ? utcp_sk_open(ss) : -ENOMEM;
	if (sk < 0) {
		shim_unlock();
		free(us);
		snprintf(why, sizeof(why), "no free UTCP socket (%s)", strerror(-sk));
		fallback(shim.warned_connect, e, "connection to", addr, port, why);
		return real_connect(fd, sa, len);
	}
	copy_options(fd, ss, sk);
	rc = utcp_sk_connect(ss, sk, addr, port, bport, NULL, shim_now_us());
	if (rc != -EINPROGRESS && rc != 0) {
		utcp_sk_close(ss, sk, shim_now_us());
		if (a.binding >= 0)
			proc_ctl_retry(release_fn, &a);
		shim_unlock();
		free(us);
		return fail(-rc);
	}
	us->binding = a.binding;
	us->sk = sk;
	usock_install(fd, us);
	proc_flush();
	shim_vlog("connection to %u.%u.%u.%u:%u: UTCP", IP4(addr), port);
	if (us->nonblock) {
		shim_unlock();
		return fail(EINPROGRESS);
	}
	rc = connect_wait(fd, us);
	e = errno;
	us->connect_said = rc == 0 || e != EINPROGRESS;
	shim_unlock();
	errno = e;
	return rc;
}

/* ---- data ---- */

/* Run fn on a UTCP connection descriptor with the lock held; kernel descriptors return 1
 * (the caller goes to libc).  Foreign connections fail with EBADFD. */
#define WITH_CONN(fd, us)                                                                   \
	struct usock *us = fd_usock(fd);                                                    \
	if (!us || us->kind != US_CONN)                                                     \
		goto kernel;                                                                \
	shim_lock();                                                                        \
	us = fd_usock(fd);                                                                  \
	if (!us || us->kind != US_CONN) {                                                   \
		shim_unlock();                                                              \
		goto kernel;                                                                \
	}                                                                                   \
	if (usock_foreign(us) || !proc_socks()) {                                           \
		usock_say_foreign(fd, us);                                                  \
		shim_unlock();                                                              \
		return fail(EBADFD);                                                        \
	}                                                                                   \
	proc_run_inline() /* what arrived since: the call sees the stack as the kernel would */

static ssize_t sigpipe(int flags)
{
	if (!(flags & MSG_NOSIGNAL))
		pthread_kill(pthread_self(), SIGPIPE);
	return fail(EPIPE);
}

/* The iovec past `done` bytes (at most 64 entries kept). */
static int iov_skip(const struct iovec *iov, int n, size_t done, struct iovec *out)
{
	int k = 0;

	for (int i = 0; i < n && k < 64; i++) {
		if (done >= iov[i].iov_len) {
			done -= iov[i].iov_len;
			continue;
		}
		out[k].iov_base = (char *)iov[i].iov_base + done;
		out[k].iov_len = iov[i].iov_len - done;
		done = 0;
		k++;
	}
	return k;
}

static size_t iov_total(const struct iovec *iov, int n)
{
	size_t t = 0;

	for (int i = 0; i < n; i++)
		t += iov[i].iov_len;
	return t;
}

/* recv on a UTCP connection; lock held. */
static ssize_t conn_recv(int fd, struct usock *us, const struct iovec *iov, int n, int flags)
{
	struct utcp_socks *ss = proc_socks();
	bool nb = us->nonblock || (flags & MSG_DONTWAIT);
	uint64_t deadline = us->rcvtimeo_us ? shim_now_us() + (uint64_t)us->rcvtimeo_us : UINT64_MAX;
	int uflags = (flags & MSG_PEEK) ? UTCP_SK_PEEK : 0;
	size_t want = iov_total(iov, n), got = 0;
	struct iovec rest[64];

	if (n < 0 || n > IOV_MAX)
		return fail(EINVAL);
	if (!want)
		return 0;
	for (;;) {
		int k = iov_skip(iov, n, got, rest);
		ssize_t r = utcp_sk_recv(ss, us->sk, rest, k, uflags, shim_now_us());
		int w;
		bool gone;

		if (r > 0) {
			got += (size_t)r;
			proc_flush(); /* a window update may be due */
			wait_recheck(us);
			if (!(flags & MSG_WAITALL) || got >= want || (flags & MSG_PEEK))
				return (ssize_t)got;
			continue;
		}
		if (r == 0)
			return (ssize_t)got;
		if (r != -EAGAIN)
			return got ? (ssize_t)got : fail((int)-r);
		if (nb)
			return got ? (ssize_t)got : fail(EAGAIN);
		w = wait_held(fd, us, -1, 0, deadline, &gone);
		if (gone)
			return got ? (ssize_t)got : fail(EBADF);
		if (w == -ETIMEDOUT)
			return got ? (ssize_t)got : fail(EAGAIN);
		if (w == -EINTR)
			return got ? (ssize_t)got : fail(EINTR);
	}
}

/* send on a UTCP connection; lock held.  A blocking send queues everything (or fails). */
static ssize_t conn_send(int fd, struct usock *us, const struct iovec *iov, int n, int flags)
{
	struct utcp_socks *ss = proc_socks();
	bool nb = us->nonblock || (flags & MSG_DONTWAIT);
	uint64_t deadline = us->sndtimeo_us ? shim_now_us() + (uint64_t)us->sndtimeo_us : UINT64_MAX;
	int uflags = ((flags & MSG_MORE) ? UTCP_SK_MORE : 0) | (shim.autocork ? UTCP_SK_HOLD : 0);
	size_t want = iov_total(iov, n), done = 0;
	struct iovec rest[64];

	if (n < 0 || n > IOV_MAX)
		return fail(EINVAL);
	for (;;) {
		int k = iov_skip(iov, n, done, rest);
		uint64_t segs = proc_segs_out();
		ssize_t r = utcp_sk_send(ss, us->sk, rest, k, uflags, shim_now_us());
		int w;
		bool gone;

		if (r >= 0) {
			done += (size_t)r;
			/* Autocorking: a partial segment waits for the application's next wait
			 * (proc_push); full segments go now. */
			if (r && shim.autocork)
				proc_hold(us);
			if (r && (!shim.autocork || proc_segs_out() != segs))
				proc_flush();
			if (done >= want || nb)
				return (ssize_t)done;
			if (r)
				continue;
			r = -EAGAIN;
		}
		if (r == -EPIPE)
			return done ? (ssize_t)done : sigpipe(flags);
		if (r != -EAGAIN)
			return done ? (ssize_t)done : fail((int)-r);
		if (nb)
			return done ? (ssize_t)done : fail(EAGAIN);
		w = wait_held(fd, us, -1, 0, deadline, &gone);
		if (gone)
			return done ? (ssize_t)done : fail(EBADF);
		if (w == -ETIMEDOUT)
			return done ? (ssize_t)done : fail(EAGAIN);
		if (w == -EINTR)
			return done ? (ssize_t)done : fail(EINTR);
	}
}

#define CONN_IO(fd, call)                                                                   \
	do {                                                                                \
		WITH_CONN(fd, us);                                                          \
		ssize_t r_ = call;                                                          \
		int e_ = errno;                                                             \
		shim_unlock();                                                              \
		errno = e_;                                                                 \
		return r_;                                                                  \
	} while (0)

SHIM_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
	REAL(read);
	struct iovec v = { buf, len };

	CONN_IO(fd, conn_recv(fd, us, &v, 1, 0));
kernel:
	return real_read(fd, buf, len);
}

SHIM_EXPORT ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen)
{
	if (len > buflen)
		abort(); /* as glibc's __chk_fail: a buffer overflow, never a recoverable error */
	return read(fd, buf, len);
}

SHIM_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
	REAL(write);
	struct iovec v = { (void *)buf, len };

	CONN_IO(fd, conn_send(fd, us, &v, 1, 0));
kernel:
	return real_write(fd, buf, len);
}

SHIM_EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
	REAL(readv);

	CONN_IO(fd, conn_recv(fd, us, iov, n, 0));
kernel:
	return real_readv(fd, iov, n);
}

SHIM_EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
	REAL(writev);

	CONN_IO(fd, conn_send(fd, us, iov, n, 0));
kernel:
	return real_writev(fd, iov, n);
}

SHIM_EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	REAL(recv);
	struct iovec v = { buf, len };

	CONN_IO(fd, conn_recv(fd, us, &v, 1, flags));
kernel:
	return real_recv(fd, buf, len, flags);
}

SHIM_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags)
{
	if (len > buflen)
		abort();
	return recv(fd, buf, len, flags);
}

SHIM_EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
			     socklen_t *alen)
{
	REAL(recvfrom);
	struct iovec v = { buf, len };

	{
		WITH_CONN(fd, us);
		ssize_t r = conn_recv(fd, us, &v, 1, flags);
		int e = errno;
		shim_unlock();
		if (r >= 0 && addr && alen)
			*alen = 0; /* a stream socket names no source, as Linux's TCP */
		errno = e;
		return r;
	}
kernel:
	return real_recvfrom(fd, buf, len, flags, addr, alen);
}

SHIM_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
				   struct sockaddr *addr, socklen_t *alen)
{
	if (len > buflen)
		abort();
	return recvfrom(fd, buf, len, flags, addr, alen);
}

SHIM_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	REAL(recvmsg);

	{
		WITH_CONN(fd, us);
		ssize_t r = conn_recv(fd, us, msg->msg_iov, (int)msg->msg_iovlen, flags);
		int e = errno;
		shim_unlock();
		if (r >= 0) {
			msg->msg_namelen = 0;
			msg->msg_controllen = 0;
			msg->msg_flags = 0;
		}
		errno = e;
		return r;
	}
kernel:
	return real_recvmsg(fd, msg, flags);
}

SHIM_EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags)
{
	REAL(send);
	struct iovec v = { (void *)buf, len };

	CONN_IO(fd, conn_send(fd, us, &v, 1, flags));
kernel:
	return real_send(fd, buf, len, flags);
}

SHIM_EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags,
			   const struct sockaddr *addr, socklen_t alen)
{
	REAL(sendto);
	struct iovec v = { (void *)buf, len };

	CONN_IO(fd, conn_send(fd, us, &v, 1, flags)); /* TCP ignores the address */
kernel:
	return real_sendto(fd, buf, len, flags, addr, alen);
}

SHIM_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	REAL(sendmsg);

	CONN_IO(fd, conn_send(fd, us, msg->msg_iov, (int)msg->msg_iovlen, flags));
kernel:
	return real_sendmsg(fd, msg, flags);
}

/* sendfile to a UTCP connection: read the file in chunks and send them; the file offset
 * (or *offset) advances by what was queued. */
static ssize_t conn_sendfile(int out, struct usock *us, int in, off_t *offset, size_t count)
{
	REAL(lseek);
	char buf[32768];
	off_t pos = offset ? *offset : real_lseek(in, 0, SEEK_CUR);
	size_t total = 0;

	struct stat st;

	if (fstat(in, &st) || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
		return fail(EINVAL); /* as Linux: the source must be a file */
	if (pos < 0)
		return -1;
	while (total < count) {
		size_t want = count - total < sizeof(buf) ? count - total : sizeof(buf);
		ssize_t got = pread(in, buf, want, pos + (off_t)total), sent;
		struct iovec v;
		int e;

		if (got <= 0) {
			if (got < 0 && !total)
				return -1;
			break;
		}
		v.iov_base = buf;
		v.iov_len = (size_t)got;
		sent = conn_send(out, us, &v, 1, us->nonblock ? MSG_DONTWAIT | MSG_NOSIGNAL : MSG_NOSIGNAL);
		e = errno;
		if (sent < 0) {
			if (total)
				break;
			if (e == EPIPE)
				return sigpipe(0);
			errno = e;
			return -1;
		}
		total += (size_t)sent;
		if (sent < got)
			break;
	}
	if (offset)
		*offset = pos + (off_t)total;
	else
		real_lseek(in, pos + (off_t)total, SEEK_SET);
	return (ssize_t)total;
}

SHIM_EXPORT ssize_t sendfile(int out, int in, off_t *offset, size_t count)
{
	REAL(sendfile);

	CONN_IO(out, conn_sendfile(out, us, in, offset, count));
kernel:
	return real_sendfile(out, in, offset, count);
}

SHIM_EXPORT ssize_t sendfile64(int out, int in, off_t *offset, size_t count)
{
	return sendfile(out, in, offset, count);
}

/* shutdown(SHUT_RD) of a listener stops it, as the kernel's does: its UTCP side goes (what it
 * had queued moves to another member of the group) and accept() gets the kernel's EINVAL. */
static void listener_shutdown(int fd, int how)
{
	struct usock *us = fd_usock(fd);
	struct utcp_socks *ss;

	if (!us || us->kind != US_LISTENER || how == SHUT_WR)
		return;
	shim_lock();
	us = fd_usock(fd);
	ss = proc_socks();
	if (us && us->kind == US_LISTENER && !us->shut) {
		us->shut = true;
		if (us->pid == shim_pid() && ss && us->sk >= 0) {
			usock_listener_closing(us);
			proc_unmap(us->sk);
			utcp_sk_close(ss, us->sk, shim_now_us());
			us->sk = -1;
			proc_flush();
		}
	}
	shim_unlock();
}

SHIM_EXPORT int shutdown(int fd, int how)
{
	REAL(shutdown);

	{
		WITH_CONN(fd, us);
		int r = utcp_sk_shutdown(proc_socks(), us->sk, how, shim_now_us());
		/* a FIN took this connection's held data along; the others go too, and the socket
		 * layer's notification wakes recv and epoll waiters */
		proc_push_flush();
		shim_unlock();
		return r < 0 ? fail(-r) : 0;
	}
kernel:
	listener_shutdown(fd, how);
	return real_shutdown(fd, how);
}

/* ---- names and options ---- */

SHIM_EXPORT int getsockname(int fd, struct sockaddr *addr, socklen_t *alen)
{
	REAL(getsockname);

	{
		WITH_CONN(fd, us);
		struct utcp_sk_name nm;
		int r = utcp_sk_name(proc_socks(), us->sk, &nm), family = us->family;
		shim_unlock();
		if (r < 0)
			return fail(-r);
		put_addr(family, nm.laddr, nm.lport, addr, alen);
		return 0;
	}
kernel:
	return real_getsockname(fd, addr, alen);
}

SHIM_EXPORT int getpeername(int fd, struct sockaddr *addr, socklen_t *alen)
{
	REAL(getpeername);

	{
		WITH_CONN(fd, us);
		struct utcp_sk_name nm;
		int st = conn_state(us), family = us->family;
		int r = utcp_sk_name(proc_socks(), us->sk, &nm);
		shim_unlock();
		if (r < 0)
			return fail(-r);
		if (st == UTCP_SYN_SENT || st == UTCP_CLOSED || !nm.raddr)
			return fail(ENOTCONN);
		put_addr(family, nm.raddr, nm.rport, addr, alen);
		return 0;
	}
kernel:
	return real_getpeername(fd, addr, alen);
}

static uint8_t linux_state(int s)
{
	switch (s) {
	case UTCP_ESTABLISHED: return 1;
	case UTCP_SYN_SENT: return 2;
	case UTCP_SYN_RECEIVED: return 3;
	case UTCP_FIN_WAIT_1: return 4;
	case UTCP_FIN_WAIT_2: return 5;
	case UTCP_TIME_WAIT: return 6;
	case UTCP_CLOSE_WAIT: return 8;
	case UTCP_LAST_ACK: return 9;
	case UTCP_LISTEN: return 10;
	case UTCP_CLOSING: return 11;
	default: return 7; /* TCP_CLOSE */
	}
}

static void fill_tcp_info(const struct utcp_conn_info *ci, struct tcp_info *ti)
{
	uint32_t mss = ci->snd_mss ? ci->snd_mss : 1;

	memset(ti, 0, sizeof(*ti));
	ti->tcpi_state = linux_state(ci->state);
	ti->tcpi_options = (ci->ts_ok ? TCPI_OPT_TIMESTAMPS : 0) | (ci->sack_ok ? TCPI_OPT_SACK : 0) |
			   (ci->ws_ok ? TCPI_OPT_WSCALE : 0);
	ti->tcpi_snd_wscale = ci->ws_ok ? ci->snd_wscale : 0;
	ti->tcpi_rcv_wscale = ci->ws_ok ? ci->rcv_wscale : 0;
	ti->tcpi_rto = ci->rto_us;
	ti->tcpi_snd_mss = ci->snd_mss;
	ti->tcpi_rcv_mss = ci->snd_mss;
	ti->tcpi_unacked = ci->unacked / mss;
	ti->tcpi_rtt = ci->srtt_us;
	ti->tcpi_rttvar = ci->rttvar_us;
	ti->tcpi_snd_ssthresh = ci->ssthresh / mss;
	ti->tcpi_snd_cwnd = ci->cwnd / mss;
	ti->tcpi_total_retrans = (uint32_t)ci->retransmits;
	ti->tcpi_rcv_space = ci->rcv_wnd;
	ti->tcpi_bytes_acked = ci->bytes_acked;
	ti->tcpi_bytes_received = ci->bytes_received;
	ti->tcpi_reordering = ci->reordering;
}

/* getsockopt on a UTCP socket (listener with a stack socket, or connection); 1: not ours. */
static int utcp_getsockopt(struct usock *us, int level, int name, void *val, socklen_t *len)
{
	struct utcp_socks *ss = proc_socks();
	const struct sk_opt *o;
	int v;

	if (!val || !len)
		return 1;
	if (level == SOL_SOCKET && name == SO_ERROR && us->kind == US_CONN) {
		v = -utcp_sk_error(ss, us->sk);
	} else if (level == IPPROTO_TCP && name == TCP_INFO && us->kind == US_CONN) {
		struct utcp_conn_info ci = { .sz = sizeof(ci) };
		struct tcp_info ti;
		if (utcp_sk_info(ss, us->sk, &ci))
			return fail(EBADF);
		fill_tcp_info(&ci, &ti);
		memcpy(val, &ti, *len < sizeof(ti) ? *len : sizeof(ti));
		*len = *len < sizeof(ti) ? *len : (socklen_t)sizeof(ti);
		return 0;
	} else if (level == IPPROTO_TCP && name == TCP_CONGESTION) {
		const char *cc = utcp_sk_get_cc(ss, us->sk);
		char name_buf[16] = "";
		if (!cc)
			return 1;
		snprintf(name_buf, sizeof(name_buf), "%s", strcmp(cc, "newreno") ? cc : "reno");
		memcpy(val, name_buf, *len < sizeof(name_buf) ? *len : sizeof(name_buf));
		*len = *len < sizeof(name_buf) ? *len : (socklen_t)sizeof(name_buf);
		return 0;
	} else if (level == SOL_SOCKET && name == SO_LINGER) {
		struct linger lg = { 0 };
		if (utcp_sk_getopt(ss, us->sk, UTCP_SO_LINGER, &v))
			return 1;
		lg.l_onoff = v >= 0;
		lg.l_linger = v >= 0 ? v : 0;
		memcpy(val, &lg, *len < sizeof(lg) ? *len : sizeof(lg));
		*len = *len < sizeof(lg) ? *len : (socklen_t)sizeof(lg);
		return 0;
	} else if ((o = opt_of(level, name))) {
		if (utcp_sk_getopt(ss, us->sk, o->opt, &v))
			return 1;
	} else {
		return 1;
	}
	if (*len < sizeof(int))
		return fail(EINVAL);
	memcpy(val, &v, sizeof(int));
	*len = sizeof(int);
	return 0;
}

SHIM_EXPORT int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	REAL(getsockopt);
	struct usock *us = fd_usock(fd);
	int r;

	if (!us)
		return real_getsockopt(fd, level, name, val, len);
	shim_lock();
	us = fd_usock(fd);
	if (!us || us->sk < 0 || us->pid != shim_pid() || !proc_socks()) {
		shim_unlock();
		return real_getsockopt(fd, level, name, val, len);
	}
	proc_run_inline();
	r = utcp_getsockopt(us, level, name, val, len);
	shim_unlock();
	return r == 1 ? real_getsockopt(fd, level, name, val, len) : r;
}

/* setsockopt: the kernel socket takes it first (it validates the arguments and keeps what
 * getsockopt reports for options UTCP does not have); UTCP then applies what it knows. */
SHIM_EXPORT int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	REAL(setsockopt);
	struct utcp_socks *ss;
	struct usock *us = fd_usock(fd);
	const struct sk_opt *o;
	int r, v, e;

	if (!us)
		return real_setsockopt(fd, level, name, val, len);
	shim_lock();
	us = fd_usock(fd);
	r = real_setsockopt(fd, level, name, val, len);
	e = errno;
	if (r || !us) {
		shim_unlock();
		errno = e;
		return r;
	}
	if (level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO) &&
	    len >= sizeof(struct timeval)) {
		const struct timeval *tv = val;
		int64_t t = (int64_t)tv->tv_sec * 1000000 + tv->tv_usec;
		if (name == SO_RCVTIMEO)
			us->rcvtimeo_us = t;
		else
			us->sndtimeo_us = t;
	}
	ss = proc_socks();
	if (us->sk < 0 || us->pid != shim_pid() || !ss) {
		shim_unlock();
		return 0; /* a listener's stack socket is made later and copies from the kernel's */
	}
	if (level == SOL_SOCKET && name == SO_LINGER && len >= sizeof(struct linger)) {
		const struct linger *lg = val;
		r = utcp_sk_setopt(ss, us->sk, UTCP_SO_LINGER, lg->l_onoff ? lg->l_linger : -1);
	} else if (level == IPPROTO_TCP && name == TCP_CONGESTION) {
		char cc[16] = "";
		memcpy(cc, val, len < sizeof(cc) - 1 ? len : sizeof(cc) - 1);
		r = utcp_sk_set_cc(ss, us->sk, strcmp(cc, "reno") ? cc : "newreno");
		if (r)
			shim_vlog("fd %d: UTCP has no congestion control \"%s\"", fd, cc);
	} else if ((o = opt_of(level, name)) && o->opt != UTCP_TCP_MAXSEG && len >= sizeof(int)) {
		memcpy(&v, val, sizeof(int));
		r = utcp_sk_setopt(ss, us->sk, o->opt, v);
		if (o->opt == UTCP_TCP_CORK || o->opt == UTCP_TCP_NODELAY)
			proc_flush(); /* uncorking sends what was held */
	}
	shim_unlock();
	return r < 0 ? fail(-r) : 0;
}

/* ---- descriptors ---- */

SHIM_EXPORT int close(int fd)
{
	REAL(close);
	if (fd_raw(fd) || wait_kernel_regs_hint(fd)) {
		shim_lock();
		fd_forget(fd);
		shim_unlock();
	}
	return real_close(fd);
}

SHIM_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
	REAL(close_range);

	if (!(flags & CLOSE_RANGE_CLOEXEC) && shim_fds) {
		shim_lock();
		for (unsigned fd = first; fd <= last && (int)fd <= fd_hi; fd++)
			fd_forget((int)fd);
		shim_unlock();
	}
	return real_close_range(first, last, flags);
}

/* A new descriptor for the same socket (dup and friends); the lock is held by the caller. */
static void dup_to(int newfd, uintptr_t v)
{
	fd_forget(newfd); /* dup2 over one of ours closed it */
	if (!v)
		return;
	if (v & FD_TAG_EPOLL)
		((struct sepoll *)(v & ~FD_TAG_EPOLL))->refs++;
	else
		((struct usock *)v)->refs++;
	fdtab_set(newfd, v);
}

static int dup_common(int oldfd, int newfd)
{
	uintptr_t v;

	if (newfd < 0)
		return newfd;
	v = fd_raw(oldfd);
	if (v || fd_raw(newfd)) {
		shim_lock();
		if (newfd != oldfd)
			dup_to(newfd, fd_raw(oldfd));
		shim_unlock();
	}
	return newfd;
}

SHIM_EXPORT int dup(int fd)
{
	REAL(dup);

	return dup_common(fd, real_dup(fd));
}

SHIM_EXPORT int dup2(int fd, int newfd)
{
	REAL(dup2);

	return dup_common(fd, real_dup2(fd, newfd));
}

SHIM_EXPORT int dup3(int fd, int newfd, int flags)
{
	REAL(dup3);

	return dup_common(fd, real_dup3(fd, newfd, flags));
}

static int do_fcntl(int fd, int cmd, unsigned long arg)
{
	REAL(fcntl);
	struct usock *us = fd_usock(fd);
	int r;

	if (!fd_raw(fd))
		return real_fcntl(fd, cmd, arg);
	switch (cmd) {
	case F_DUPFD:
	case F_DUPFD_CLOEXEC:
		return dup_common(fd, real_fcntl(fd, cmd, arg));
	case F_GETFL:
		r = real_fcntl(fd, cmd);
		if (r < 0 || !us)
			return r;
		shim_lock(); /* another thread may close it meanwhile: look again under the lock */
		us = fd_usock(fd);
		if (us)
			r = us->nonblock ? r | O_NONBLOCK : r & ~O_NONBLOCK;
		shim_unlock();
		return r;
	case F_SETFL:
		if (!us)
			return real_fcntl(fd, cmd, arg);
		shim_lock();
		us = fd_usock(fd);
		r = real_fcntl(fd, cmd, us && us->kind == US_LISTENER ? arg | O_NONBLOCK : arg);
		if (r == 0 && us)
			us->nonblock = arg & O_NONBLOCK;
		shim_unlock();
		return r;
	default:
		return real_fcntl(fd, cmd, arg);
	}
}

SHIM_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	unsigned long arg;

	va_start(ap, cmd);
	arg = va_arg(ap, unsigned long);
	va_end(ap);
	return do_fcntl(fd, cmd, arg);
}

/* The name glibc 2.28+ gives fcntl with 64-bit file offsets: the same entry point. */
SHIM_EXPORT int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

SHIM_EXPORT int ioctl(int fd, unsigned long req, ...)
{
	REAL(ioctl);
	struct usock *us = fd_usock(fd);
	va_list ap;
	void *arg;
	int r;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (!us)
		return real_ioctl(fd, req, arg);
	shim_lock();
	us = fd_usock(fd);
	if (!us) {
		shim_unlock();
		return real_ioctl(fd, req, arg);
	}
	if (req == FIONBIO && arg) {
		int on = *(int *)arg;
		r = us->kind == US_LISTENER ? 0 : real_ioctl(fd, req, arg);
		if (r == 0)
			us->nonblock = on != 0;
	} else if ((req == FIONREAD || req == SIOCOUTQ) && us->kind == US_CONN && arg &&
		   !usock_foreign(us) && proc_socks()) {
		proc_run_inline();
		r = req == FIONREAD ? utcp_sk_nread(proc_socks(), us->sk)
				    : utcp_sk_outq(proc_socks(), us->sk);
		if (r >= 0) {
			*(int *)arg = r;
			r = 0;
		} else {
			r = fail(-r);
		}
	} else {
		r = real_ioctl(fd, req, arg);
	}
	shim_unlock();
	return r;
}

SHIM_EXPORT int socket(int domain, int type, int protocol)
{
	REAL(socket);
	int fd = real_socket(domain, type, protocol);

	if (fd >= 0)
		fd_fresh(fd);
	return fd;
}

/* ---- fork and exec ---- */

/* A forked child holds every listener its parent held: it claims them with mstackd (design.md
 * section 4: a binding belongs to the socket, not to a process).  If the binding went away in
 * between (the parent exited first), the child registers the socket again. */
void sock_after_fork_child(void)
{
	char why[200];
	bool connected = false;

	for (int fd = 0; fd <= fd_hi; fd++) {
		struct usock *us = fd_usock(fd);
		struct reg_arg a = { .fd = fd };
		int rc;

		if (!us || us->kind != US_LISTENER || us->binding < 0)
			continue;
		us->sk = -1;
		us->joined = false;
		us->pid = shim_pid();
		if (!connected && proc_ctl(why, sizeof(why))) {
			shim_log("after fork: %s: listeners stay on the kernel", why);
			return;
		}
		connected = true;
		a.binding = us->binding;
		rc = proc_ctl_retry(claim_fn, &a);
		if (rc == -ENOENT || rc == -ESRCH || rc == -EINVAL) {
			rc = proc_ctl_retry(register_fn, &a);
			if (!rc)
				us->binding = a.binding;
		}
		if (rc) {
			shim_log("after fork: fd %d: mstackd refused the claim: %s: %s", fd,
				 strerror(-rc), ctl_detail());
			us->binding = -1;
		}
	}
}

/* O_NONBLOCK of the listeners' shadows as the application set it (the shim keeps them
 * non-blocking; the next image must see the application's flags), or back to ours. */
static void listeners_kernel_flags(bool app_view)
{
	REAL(fcntl);

	for (int fd = 0; fd <= fd_hi; fd++) {
		struct usock *us = fd_usock(fd);
		int fl;

		if (!us || us->kind != US_LISTENER || (fl = real_fcntl(fd, F_GETFL)) < 0)
			continue;
		if (app_view && !us->nonblock)
			real_fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
		else
			real_fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	}
}

/* Out of every listen group this process waits in (it joins again on its next wait). */
static void leave_groups(const char *when)
{
	for (int fd = 0; fd <= fd_hi; fd++) {
		struct usock *us = fd_usock(fd);

		if (us && us->kind == US_LISTENER && us->joined && us->pid == shim_pid())
			listener_leave(us, when);
	}
}

void sock_after_fork_parent(void)
{
	leave_groups("at fork");
}

void sock_before_exec(void)
{
	shim_lock();
	proc_push(); /* what the application sent reaches the wire before the image goes */
	leave_groups("before exec"); /* the new image joins with a port of its own */
	listeners_kernel_flags(true);
	shim_unlock();
}

void sock_exec_failed(void)
{
	shim_lock();
	listeners_kernel_flags(false);
	shim_unlock();
}

/* After exec: listening sockets the program inherited (nginx's binary upgrade passes them
 * by number) that the policy lists become UTCP listeners again.  Registering a socket mstackd
 * already knows returns its binding (a re-registration). */
void sock_adopt_inherited(void)
{
	DIR *d;
	struct dirent *de;
	int fds[256], n = 0;

	if (!shim.have_policy || !shim.policy.n_listen)
		return;
	d = opendir("/proc/self/fd");
	if (!d)
		return;
	while ((de = readdir(d)) && n < 256) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);
		if (*end || fd < 0 || fd == dirfd(d))
			continue;
		fds[n++] = (int)fd;
	}
	closedir(d);
	for (int i = 0; i < n; i++) {
		struct sockaddr_storage sa;
		socklen_t len = sizeof(sa);
		struct reg_arg a = { .fd = fds[i] };
		struct usock *us;
		char why[200];
		uint32_t addr;
		uint16_t port;

		if (sockopt_int(fds[i], SOL_SOCKET, SO_ACCEPTCONN) != 1 || !is_tcp(fds[i]) ||
		    getsockname(fds[i], (struct sockaddr *)&sa, &len) ||
		    !ipv4_of((struct sockaddr *)&sa, len, &addr, &port) ||
		    !mstack_policy_listen(&shim.policy, addr, port) || (addr >> 24) == 127)
			continue;
		shim_lock();
		if (proc_ctl(why, sizeof(why)) || proc_ctl_retry(register_fn, &a) ||
		    !(us = usock_new(US_LISTENER, sa.ss_family))) {
			shim_unlock();
			shim_log("inherited listener %u.%u.%u.%u:%u (fd %d) stays on the kernel: %s",
				 IP4(addr), port, fds[i], proc_ctl_conn() ? ctl_detail() : why);
			continue;
		}
		us->binding = a.binding;
		us->laddr = addr;
		us->lport = port;
		us->backlog = 511;
		usock_install(fds[i], us);
		shim_vlog("inherited listener %u.%u.%u.%u:%u (fd %d): UTCP (binding %lld)", IP4(addr),
			  port, fds[i], (long long)a.binding);
		(void)usock_listener_join_paused(us);
		shim_unlock();
	}
}
