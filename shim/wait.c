/* wait.c — readiness across kernel and UTCP descriptors: blocking calls, poll/ppoll,
 * select/pselect and epoll.
 *
 * The kernel cannot see a UTCP socket's readiness, and a UTCP socket's placeholder
 * descriptor must never reach the kernel's poll or epoll as it is (design.md section 4).  So:
 *  - a thread that blocks puts an eventfd of its own on a list; whenever the stack's socket
 *    layer reports a change, every blocked thread's eventfd is written, and the thread looks
 *    again.  poll and select wait on the kernel descriptors plus that eventfd;
 *  - an epoll instance with UTCP members gets an eventfd inside its kernel epoll and an
 *    interest list kept here, with a ready list as the kernel's own (level-triggered entries
 *    stay on it while ready, edge-triggered ones are reported once per event, one-shot ones
 *    until re-armed).  The eventfd stays readable while the ready list holds entries, so an
 *    epoll inside another epoll, or polled, reports readiness as the kernel's would;
 *  - a listener is both: its shadow serves local clients through the kernel, so it sits in
 *    the kernel epoll too (tagged), and its events are merged with the UTCP side's. */
#include "shim.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "utcp_sock.h"

struct waiter {
	int efd;
	struct dl link;
};

static __thread int t_efd = -1;
static struct dl threads = { &threads, &threads };
static bool notified;

#define EP_TAG ((uint64_t)1)   /* data of the instance's eventfd (pointers are aligned) */
#define PORT_TAG ((uint64_t)3) /* data of the process's port in the instance */
#define EP_POLLBITS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLERR | EPOLLHUP)

/* A thread's eventfd goes with the thread (a thread-per-connection server makes many). */
static pthread_key_t efd_key;
static pthread_once_t efd_once = PTHREAD_ONCE_INIT;

static void efd_release(void *p)
{
	(void)p;
	if (t_efd >= 0)
		close(t_efd);
	t_efd = -1;
}

static void efd_key_make(void)
{
	(void)pthread_key_create(&efd_key, efd_release);
}

static int thread_efd(void)
{
	if (t_efd < 0) {
		t_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		pthread_once(&efd_once, efd_key_make);
		(void)pthread_setspecific(efd_key, (void *)1); /* non-NULL: the destructor runs */
	}
	return t_efd;
}

static void efd_drain(int efd)
{
	uint64_t v;

	(void)!read(efd, &v, sizeof(v));
}

static void ep_signal(struct sepoll *ep)
{
	if (!ep->signalled) {
		ep->signalled = true;
		(void)!eventfd_write(ep->efd, 1);
	}
}

static void ep_unsignal(struct sepoll *ep)
{
	if (ep->signalled) {
		ep->signalled = false;
		efd_drain(ep->efd);
	}
}

unsigned usock_ready(struct usock *us)
{
	struct utcp_socks *ss;
	int r;

	if (us->kind == US_CONN) {
		if (usock_foreign(us))
			return POLLERR | POLLHUP; /* the read that follows says why */
		ss = proc_socks();
		r = ss && us->sk >= 0 ? utcp_sk_ready(ss, us->sk) : -1;
		return r < 0 ? POLLERR | POLLHUP : (unsigned)r;
	}
	if (usock_listener_ready(us))
		return 0; /* serving through the kernel only */
	r = utcp_sk_ready(proc_socks(), us->sk);
	return r < 0 ? 0 : (unsigned)r & POLLIN;
}

static void ready_add(struct ep_entry *e)
{
	if (!dl_linked(&e->on_ready))
		dl_add_tail(&e->ep->ready, &e->on_ready);
	ep_signal(e->ep);
}

void wait_recheck(struct usock *us)
{
	unsigned ready = usock_ready(us);

	for (struct dl *n = us->watchers.next; n != &us->watchers; n = n->next) {
		struct ep_entry *e = dl_entry(n, struct ep_entry, on_sock);

		if (!dl_linked(&e->on_ready) ||
		    (ready & ((e->events & EP_POLLBITS) | EPOLLERR | EPOLLHUP)))
			continue;
		dl_del(&e->on_ready);
		e->edge = false;
		if (dl_empty(&e->ep->ready))
			ep_unsignal(e->ep);
	}
}

void wait_notify(struct usock *us, unsigned ready)
{
	for (struct dl *n = us->watchers.next; n != &us->watchers; n = n->next) {
		struct ep_entry *e = dl_entry(n, struct ep_entry, on_sock);

		if (e->disarmed || !(ready & ((e->events & EP_POLLBITS) | EPOLLERR | EPOLLHUP)))
			continue;
		e->edge = true;
		ready_add(e);
	}
	notified = true;
}

bool wait_threads_blocked(void)
{
	return !dl_empty(&threads);
}

void wait_wake_threads(void)
{
	if (!notified)
		return;
	notified = false;
	for (struct dl *n = threads.next; n != &threads; n = n->next)
		(void)!eventfd_write(dl_entry(n, struct waiter, link)->efd, 1);
}

/* Did the signal that interrupted us ask for SA_RESTART?  We cannot know which one it was:
 * restart only if every installed handler asked for it. */
static bool restart_ok(void)
{
	for (int sig = 1; sig < NSIG; sig++) {
		struct sigaction sa;

		if (sigaction(sig, NULL, &sa))
			continue;
		if (sa.sa_handler != SIG_DFL && sa.sa_handler != SIG_IGN &&
		    !(sa.sa_flags & SA_RESTART))
			return false;
	}
	return true;
}

static int ms_until(uint64_t deadline)
{
	uint64_t now = shim_now_us();

	if (deadline == UINT64_MAX)
		return -1;
	if (deadline <= now)
		return 0;
	return (deadline - now) / 1000 > 86400000 ? 86400000 : (int)((deadline - now + 999) / 1000);
}

int wait_block(int kfd, short kevents, uint64_t deadline)
{
	REAL(poll);
	struct waiter w = { .efd = thread_efd() };
	struct pollfd pf[2] = { { .fd = w.efd, .events = POLLIN },
				{ .fd = kfd, .events = kevents } };
	int r, e;

	if (proc_push()) {
		/* Autocorking: what this thread sent went just now, and the answer may follow at
		 * once (the kick runs the peer's receive on this core): look again before blocking,
		 * as the caller would have after a send that went out at once. */
		proc_run_inline();
		return 0;
	}
	dl_add_tail(&threads, &w.link);
	if (proc_inline_nobody())
		proc_nudge(); /* the helper thread must watch the port while this thread blocks */
	shim_unlock();
	r = real_poll(pf, kfd >= 0 ? 2 : 1, ms_until(deadline));
	e = errno;
	if (pf[0].revents & POLLIN)
		efd_drain(w.efd);
	shim_lock();
	dl_del(&w.link);
	if (r < 0 && e == EINTR)
		return deadline == UINT64_MAX && restart_ok() ? -ERESTART_SHIM : -EINTR;
	if (r == 0 && deadline != UINT64_MAX && shim_now_us() >= deadline)
		return -ETIMEDOUT;
	return 0;
}

/* ---- poll and select ---- */

static bool any_usock(const struct pollfd *fds, nfds_t n)
{
	for (nfds_t i = 0; i < n; i++)
		if (fd_usock(fds[i].fd))
			return true;
	return false;
}

/* poll over a mix of kernel and UTCP descriptors; deadline UINT64_MAX: none. */
static int mixed_poll(struct pollfd *fds, nfds_t n, uint64_t deadline, const sigset_t *mask)
{
	REAL(ppoll);
	struct pollfd small[65], *k = n < 64 ? small : malloc((n + 1) * sizeof(*k));
	int result;

	if (!k) {
		errno = ENOMEM;
		return -1;
	}
	for (;;) {
		struct waiter w = { .efd = thread_efd() };
		struct timespec ts, *tsp = NULL;
		int ready = 0, r, e, tmo;

		shim_lock();
		proc_push(); /* autocorking: held sends go when the application waits */
		proc_run_inline();
		if (proc_inline_nobody())
			proc_nudge();
		for (nfds_t i = 0; i < n; i++) {
			struct usock *us = fd_usock(fds[i].fd);

			fds[i].revents = 0;
			k[i] = fds[i];
			if (!us)
				continue;
			fds[i].revents = (short)(usock_ready(us) &
						 ((unsigned)fds[i].events | POLLERR | POLLHUP));
			if (us->kind == US_CONN)
				k[i].fd = -1; /* never the placeholder: the kernel knows nothing of it */
			ready += fds[i].revents != 0;
		}
		k[n].fd = w.efd;
		k[n].events = POLLIN;
		k[n].revents = 0;
		dl_add_tail(&threads, &w.link);
		shim_unlock();
		tmo = ready ? 0 : ms_until(deadline);
		if (tmo >= 0) {
			ts.tv_sec = tmo / 1000;
			ts.tv_nsec = (long)(tmo % 1000) * 1000000;
			tsp = &ts;
		}
		r = real_ppoll(k, n + 1, tsp, mask);
		e = errno;
		if (k[n].revents & POLLIN)
			efd_drain(w.efd);
		shim_lock();
		dl_del(&w.link);
		shim_unlock();
		ready = 0;
		for (nfds_t i = 0; i < n; i++) {
			if (k[i].fd >= 0 && r > 0)
				fds[i].revents |= k[i].revents;
			ready += fds[i].revents != 0;
		}
		if (ready || r < 0 || (deadline != UINT64_MAX && shim_now_us() >= deadline)) {
			result = ready ? ready : r < 0 ? -1 : 0;
			if (r < 0 && !ready)
				errno = e;
			break;
		}
	}
	if (k != small) {
		int e = errno;
		free(k);
		errno = e;
	}
	return result;
}

static uint64_t deadline_ms(int timeout)
{
	return timeout < 0 ? UINT64_MAX : shim_now_us() + (uint64_t)timeout * 1000u;
}

static uint64_t deadline_ts(const struct timespec *ts)
{
	if (!ts)
		return UINT64_MAX;
	return shim_now_us() + (uint64_t)ts->tv_sec * 1000000u + (uint64_t)ts->tv_nsec / 1000u;
}

SHIM_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
	REAL(poll);

	if (!shim_fds || !any_usock(fds, n)) {
		proc_push_unlocked(); /* a wait on kernel descriptors is a wait too */
		return real_poll(fds, n, timeout);
	}
	return mixed_poll(fds, n, deadline_ms(timeout), NULL);
}

SHIM_EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t len)
{
	if (len / sizeof(*fds) < n)
		abort();
	return poll(fds, n, timeout);
}

SHIM_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts,
		      const sigset_t *mask)
{
	REAL(ppoll);

	if (!shim_fds || !any_usock(fds, n)) {
		proc_push_unlocked();
		return real_ppoll(fds, n, ts, mask);
	}
	return mixed_poll(fds, n, deadline_ts(ts), mask);
}

SHIM_EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *ts,
			    const sigset_t *mask, size_t len)
{
	if (len / sizeof(*fds) < n)
		abort();
	return ppoll(fds, n, ts, mask);
}

SHIM_EXPORT long int __fdelt_chk(long int d)
{
	if (d < 0 || d >= FD_SETSIZE)
		abort();
	return d / __NFDBITS;
}

/* select over a mix: as poll, with Linux's mapping of poll bits to the three sets. */
static int mixed_select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, uint64_t deadline,
			const sigset_t *mask)
{
	struct pollfd *p = calloc((size_t)nfds + 1, sizeof(*p));
	nfds_t n = 0;
	int r, count = 0;

	if (!p) {
		errno = ENOMEM;
		return -1;
	}
	for (int fd = 0; fd < nfds; fd++) {
		short ev = 0;
		if (rd && FD_ISSET(fd, rd))
			ev |= POLLIN;
		if (wr && FD_ISSET(fd, wr))
			ev |= POLLOUT;
		if (ex && FD_ISSET(fd, ex))
			ev |= POLLPRI;
		if (!ev)
			continue;
		p[n].fd = fd;
		p[n].events = ev;
		n++;
	}
	r = mixed_poll(p, n, deadline, mask);
	if (r < 0) {
		int e = errno;
		free(p);
		errno = e;
		return -1;
	}
	if (rd)
		FD_ZERO(rd);
	if (wr)
		FD_ZERO(wr);
	if (ex)
		FD_ZERO(ex);
	for (nfds_t i = 0; i < n; i++) {
		short re = p[i].revents;
		if (re & POLLNVAL) {
			free(p);
			errno = EBADF;
			return -1;
		}
		if (rd && (p[i].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR))) {
			FD_SET(p[i].fd, rd);
			count++;
		}
		if (wr && (p[i].events & POLLOUT) && (re & (POLLOUT | POLLERR))) {
			FD_SET(p[i].fd, wr);
			count++;
		}
		if (ex && (p[i].events & POLLPRI) && (re & POLLPRI)) {
			FD_SET(p[i].fd, ex);
			count++;
		}
	}
	free(p);
	return count;
}

static bool any_usock_set(int nfds, fd_set *rd, fd_set *wr, fd_set *ex)
{
	if (!shim_fds)
		return false;
	for (int fd = 0; fd < nfds && fd < FD_SETSIZE; fd++)
		if (((rd && FD_ISSET(fd, rd)) || (wr && FD_ISSET(fd, wr)) || (ex && FD_ISSET(fd, ex))) &&
		    fd_usock(fd))
			return true;
	return false;
}

SHIM_EXPORT int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
	REAL(select);
	uint64_t deadline;
	int r;

	if (nfds < 0 || nfds > FD_SETSIZE || !any_usock_set(nfds, rd, wr, ex)) {
		proc_push_unlocked();
		return real_select(nfds, rd, wr, ex, tv);
	}
	deadline = tv ? shim_now_us() + (uint64_t)tv->tv_sec * 1000000u + (uint64_t)tv->tv_usec
		      : UINT64_MAX;
	r = mixed_select(nfds, rd, wr, ex, deadline, NULL);
	if (tv) { /* Linux writes back the time left */
		uint64_t now = shim_now_us(), left = deadline > now ? deadline - now : 0;
		tv->tv_sec = (time_t)(left / 1000000u);
		tv->tv_usec = (suseconds_t)(left % 1000000u);
	}
	return r;
}

SHIM_EXPORT int pselect(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *ts,
			const sigset_t *mask)
{
	REAL(pselect);

	if (nfds < 0 || nfds > FD_SETSIZE || !any_usock_set(nfds, rd, wr, ex)) {
		proc_push_unlocked();
		return real_pselect(nfds, rd, wr, ex, ts, mask);
	}
	return mixed_select(nfds, rd, wr, ex, deadline_ts(ts), mask);
}

/* ---- epoll ---- */

static struct sepoll *sepoll_of(int epfd)
{
	REAL(epoll_ctl);
	struct sepoll *ep = fd_sepoll(epfd);
	struct epoll_event ev = { .events = EPOLLIN };

	if (ep)
		return ep;
	ep = calloc(1, sizeof(*ep));
	if (!ep)
		return NULL;
	ep->epfd = epfd;
	ep->refs = 1;
	ep->port_fd = -1;
	dl_init(&ep->entries);
	dl_init(&ep->ready);
	dl_init(&ep->kernel);
	dl_init(&ep->retired);
	ep->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ev.data.u64 = (uint64_t)(uintptr_t)ep | EP_TAG;
	if (ep->efd < 0 || real_epoll_ctl(epfd, EPOLL_CTL_ADD, ep->efd, &ev)) {
		int e = errno;
		if (ep->efd >= 0)
			close(ep->efd);
		free(ep);
		errno = e;
		return NULL;
	}
	fdtab_set(epfd, (uintptr_t)ep | FD_TAG_EPOLL);
	return ep;
}

static struct ep_entry *entry_of(struct sepoll *ep, int fd, struct usock *us)
{
	for (struct dl *n = us->watchers.next; n != &us->watchers; n = n->next) {
		struct ep_entry *e = dl_entry(n, struct ep_entry, on_sock);
		if (e->ep == ep && e->fd == fd)
			return e;
	}
	return NULL;
}

static void entry_free(struct ep_entry *e, bool kernel_del)
{
	REAL(epoll_ctl);

	bool keep = false;

	if (e->in_kernel) {
		if (kernel_del)
			real_epoll_ctl(e->ep->epfd, EPOLL_CTL_DEL, e->fd, NULL);
		dl_del(&e->on_kernel);
		keep = e->ep->waiters > 0; /* an event for it may be on its way to a waiter */
	}
	dl_del(&e->on_sock);
	dl_del(&e->on_ep);
	if (dl_linked(&e->on_ready))
		dl_del(&e->on_ready);
	if (keep) {
		e->us = NULL;
		dl_add_tail(&e->ep->retired, &e->on_kernel);
		return;
	}
	free(e);
}

static void sepoll_release(struct sepoll *ep)
{
	while (!dl_empty(&ep->retired)) {
		struct ep_entry *e = dl_entry(ep->retired.next, struct ep_entry, on_kernel);
		dl_del(&e->on_kernel);
		free(e);
	}
	if (ep->dead) {
		close(ep->efd);
		free(ep);
	}
}

/* A thread goes into / comes back from the kernel's epoll_wait on ep.  Lock held. */
static void sepoll_enter(struct sepoll *ep)
{
	ep->waiters++;
}

static void sepoll_leave(struct sepoll *ep)
{
	if (--ep->waiters == 0)
		sepoll_release(ep);
}

void wait_forget_usock(struct usock *us)
{
	while (!dl_empty(&us->watchers))
		entry_free(dl_entry(us->watchers.next, struct ep_entry, on_sock), true);
}

void wait_sepoll_put(int fd, struct sepoll *ep)
{
	(void)fd;
	if (--ep->refs > 0)
		return;
	while (!dl_empty(&ep->entries))
		entry_free(dl_entry(ep->entries.next, struct ep_entry, on_ep), false);
	ep->dead = true;
	if (ep->waiters == 0)
		sepoll_release(ep);
}

static void entry_check(struct ep_entry *e)
{
	unsigned m = usock_ready(e->us) & ((e->events & EP_POLLBITS) | EPOLLERR | EPOLLHUP);

	if (m) {
		e->edge = true;
		ready_add(e);
	}
}

static int ep_ctl_usock(int epfd, int op, int fd, struct usock *us, struct epoll_event *ev)
{
	REAL(epoll_ctl);
	struct sepoll *ep;
	struct ep_entry *e;

	if (op != EPOLL_CTL_DEL && !ev) {
		errno = EFAULT;
		return -1;
	}
	if (epfd == fd) {
		errno = EINVAL;
		return -1;
	}
	ep = op == EPOLL_CTL_ADD ? sepoll_of(epfd) : fd_sepoll(epfd);
	e = ep ? entry_of(ep, fd, us) : NULL;
	switch (op) {
	case EPOLL_CTL_ADD:
		if (!ep)
			return -1;
		if (e) {
			errno = EEXIST;
			return -1;
		}
		if ((ev->events & EPOLLEXCLUSIVE) && (ev->events & EPOLLONESHOT)) {
			errno = EINVAL;
			return -1;
		}
		e = calloc(1, sizeof(*e));
		if (!e) {
			errno = ENOMEM;
			return -1;
		}
		e->ep = ep;
		e->us = us;
		e->fd = fd;
		e->events = ev->events;
		e->data = ev->data;
		dl_init(&e->on_ready);
		dl_init(&e->on_kernel);
		if (us->kind == US_LISTENER) {
			struct epoll_event kev = { .events = ev->events,
						   .data.u64 = (uint64_t)(uintptr_t)e | EP_TAG };
			if (real_epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &kev)) {
				int er = errno;
				free(e);
				errno = er;
				return -1;
			}
			e->in_kernel = true;
			dl_add_tail(&ep->kernel, &e->on_kernel);
		}
		dl_add_tail(&us->watchers, &e->on_sock);
		dl_add_tail(&ep->entries, &e->on_ep);
		entry_check(e);
		return 0;
	case EPOLL_CTL_MOD:
		if (!e) {
			errno = ENOENT;
			return -1;
		}
		if ((e->events & EPOLLEXCLUSIVE) || (ev->events & EPOLLEXCLUSIVE)) {
			errno = EINVAL;
			return -1;
		}
		if (e->in_kernel) {
			struct epoll_event kev = { .events = ev->events,
						   .data.u64 = (uint64_t)(uintptr_t)e | EP_TAG };
			if (real_epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &kev))
				return -1;
		}
		e->events = ev->events;
		e->data = ev->data;
		e->disarmed = false;
		entry_check(e);
		return 0;
	case EPOLL_CTL_DEL:
		if (!e) {
			errno = ENOENT;
			return -1;
		}
		entry_free(e, true);
		return 0;
	default:
		errno = EINVAL;
		return -1;
	}
}

/* Registrations of kernel sockets that may still become UTCP sockets: nginx adds an upstream
 * socket to its epoll *before* connect(), when it is still the kernel's.  When the shim takes
 * such a socket over, these move into the shim's interest list (wait_adopt_kernel_regs). */
struct kreg {
	int epfd;
	uint32_t events;
	epoll_data_t data;
	struct kreg *next;
};

static struct kreg **kregs; /* by fd; lock held */

static bool may_become_utcp(void)
{
	return shim.have_policy && (shim.policy.n_connect || shim.policy.n_listen);
}

static void kreg_note(int epfd, int op, int fd, const struct epoll_event *ev)
{
	struct kreg **pp, *r;

	if (fd < 0 || (unsigned)fd >= SHIM_MAX_FDS)
		return;
	if (!kregs && !(kregs = calloc(SHIM_MAX_FDS, sizeof(*kregs))))
		return;
	for (pp = &kregs[fd]; *pp && (*pp)->epfd != epfd; pp = &(*pp)->next)
		;
	r = *pp;
	if (op == EPOLL_CTL_DEL) {
		if (r) {
			*pp = r->next;
			free(r);
		}
		return;
	}
	if (!r) {
		if (op != EPOLL_CTL_ADD || !(r = calloc(1, sizeof(*r))))
			return;
		r->epfd = epfd;
		*pp = r;
	}
	r->events = ev->events;
	r->data = ev->data;
}

bool wait_kernel_regs_hint(int fd)
{
	return kregs && fd >= 0 && (unsigned)fd < SHIM_MAX_FDS &&
	       __atomic_load_n(&kregs[fd], __ATOMIC_RELAXED) != NULL;
}

void wait_forget_kernel_regs(int fd)
{
	struct kreg *r;

	if (!kregs || fd < 0 || (unsigned)fd >= SHIM_MAX_FDS)
		return;
	while ((r = kregs[fd])) {
		kregs[fd] = r->next;
		free(r);
	}
}

void wait_adopt_kernel_regs(int fd, struct usock *us)
{
	REAL(epoll_ctl);
	struct kreg *r;

	if (!kregs || fd < 0 || (unsigned)fd >= SHIM_MAX_FDS)
		return;
	while ((r = kregs[fd])) {
		struct epoll_event ev = { .events = r->events, .data = r->data };

		kregs[fd] = r->next;
		if (real_epoll_ctl(r->epfd, EPOLL_CTL_DEL, fd, NULL) == 0 &&
		    ep_ctl_usock(r->epfd, EPOLL_CTL_ADD, fd, us, &ev) != 0)
			shim_log("fd %d: could not move its epoll registration (epoll fd %d) to UTCP: %s",
				 fd, r->epfd, strerror(errno));
		free(r);
	}
}

SHIM_EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
	REAL(epoll_ctl);
	struct usock *us = fd_usock(fd);
	int r, e;

	if (!us) {
		r = real_epoll_ctl(epfd, op, fd, ev);
		if (r == 0 && may_become_utcp() && (op == EPOLL_CTL_DEL || ev)) {
			e = errno;
			shim_lock();
			kreg_note(epfd, op, fd, ev);
			shim_unlock();
			errno = e;
		}
		return r;
	}
	shim_lock();
	us = fd_usock(fd);
	if (!us) {
		shim_unlock();
		return real_epoll_ctl(epfd, op, fd, ev);
	}
	if (us->kind == US_LISTENER && op != EPOLL_CTL_DEL)
		(void)usock_listener_ready(us); /* waiting on it: join its listen group now */
	r = ep_ctl_usock(epfd, op, fd, us, ev);
	e = errno;
	shim_unlock();
	errno = e;
	return r;
}

/* Report ready UTCP entries, as the kernel's ep_send_events() does.  Lock held. */
static int collect(struct sepoll *ep, struct epoll_event *out, int max)
{
	struct dl todo;
	int n = 0;

	dl_init(&todo);
	if (!dl_empty(&ep->ready)) { /* take the whole ready list */
		todo.next = ep->ready.next;
		todo.prev = ep->ready.prev;
		todo.next->prev = &todo;
		todo.prev->next = &todo;
		dl_init(&ep->ready);
	}
	while (!dl_empty(&todo)) {
		struct ep_entry *e = dl_entry(todo.next, struct ep_entry, on_ready);
		unsigned m;

		if (n == max)
			break;
		dl_del(&e->on_ready);
		if (e->disarmed)
			continue;
		m = usock_ready(e->us) & ((e->events & EP_POLLBITS) | EPOLLERR | EPOLLHUP);
		if (!m) {
			e->edge = false;
			continue;
		}
		if (e->events & EPOLLET) {
			if (!e->edge)
				continue;
			e->edge = false;
		}
		out[n].events = m;
		out[n].data = e->data;
		n++;
		if (e->events & EPOLLONESHOT)
			e->disarmed = true;
		else if (!(e->events & EPOLLET))
			dl_add_tail(&ep->ready, &e->on_ready); /* level-triggered: look again next time */
	}
	while (!dl_empty(&todo)) { /* not reached (max): back to the front, in order */
		struct dl *last = todo.prev;
		dl_del(last);
		last->next = ep->ready.next;
		last->prev = &ep->ready;
		ep->ready.next->prev = last;
		ep->ready.next = last;
	}
	if (dl_empty(&ep->ready))
		ep_unsignal(ep);
	else
		ep_signal(ep);
	return n;
}

/* Kernel events: drop our eventfd's, turn a listener's tagged events back into the
 * application's data, merged with a UTCP report of the same entry.  Lock held. */
static bool retired_event(struct sepoll *ep, uint64_t v)
{
	for (struct dl *n = ep->retired.next; n != &ep->retired && (v & EP_TAG); n = n->next)
		if (v == ((uint64_t)(uintptr_t)dl_entry(n, struct ep_entry, on_kernel) | EP_TAG))
			return true;
	return false;
}

static int fix_kernel_events(struct sepoll *ep, struct epoll_event *ev, int have, int k)
{
	int out = have;

	for (int i = have; i < have + k; i++) {
		uint64_t v = ev[i].data.u64;
		struct ep_entry *hit = NULL;

		if (v == ((uint64_t)(uintptr_t)ep | EP_TAG)) {
			ep->signalled = true; /* it was; collect() decides again */
			continue;
		}
		if (v == ((uint64_t)(uintptr_t)ep | PORT_TAG))
			continue; /* frames: the next round runs the stack on them */
		if (retired_event(ep, v))
			continue; /* its entry was deleted while the event was on its way */
		for (struct dl *n = ep->kernel.next; n != &ep->kernel && (v & EP_TAG); n = n->next) {
			struct ep_entry *e = dl_entry(n, struct ep_entry, on_kernel);
			if (v == ((uint64_t)(uintptr_t)e | EP_TAG)) {
				hit = e;
				break;
			}
		}
		if (hit) {
			bool merged = false;
			for (int j = 0; j < have; j++)
				if (out > j && ev[j].data.u64 == hit->data.u64) {
					ev[j].events |= ev[i].events;
					merged = true;
					break;
				}
			if (merged)
				continue;
			ev[i].data = hit->data;
			if (hit->events & EPOLLONESHOT)
				hit->disarmed = true;
		}
		ev[out++] = ev[i];
	}
	return out;
}

/* The process's port in this epoll instance: frames wake the waiting thread directly. */
static bool ep_port(struct sepoll *ep)
{
	REAL(epoll_ctl);
	int fd = proc_port_fd();
	struct epoll_event ev = { .events = EPOLLIN,
				  .data.u64 = (uint64_t)(uintptr_t)ep | PORT_TAG };

	if (fd < 0)
		return false;
	if (ep->port_fd == fd && ep->port_pid == shim_pid())
		return true;
	if (real_epoll_ctl(ep->epfd, EPOLL_CTL_ADD, fd, &ev) && errno != EEXIST)
		return false;
	ep->port_fd = fd;
	ep->port_pid = shim_pid();
	return true;
}

static int plain_wait_done(int epfd, struct epoll_event *ev, int max, int k, uint64_t deadline,
			   const sigset_t *mask);

static int sepoll_wait(int epfd, struct epoll_event *ev, int max, uint64_t deadline,
		       const sigset_t *mask)
{
	REAL(epoll_pwait);

	if (max <= 0) {
		errno = EINVAL;
		return -1;
	}
	for (;;) {
		struct sepoll *ep;
		int n, k, total, e;
		bool inline_wait = false;

		shim_lock();
		proc_push(); /* autocorking: held sends go when the application looks for events */
		ep = fd_sepoll(epfd);
		if (!ep) {
			shim_unlock();
			n = real_epoll_pwait(epfd, ev, max, ms_until(deadline), mask);
			return plain_wait_done(epfd, ev, max, n, deadline, mask);
		}
		if (ep_port(ep))
			proc_run_inline(); /* what arrived while the application was busy */
		/* waiting on a listener puts this process in its listen group (again, after fork) */
		for (struct dl *l = ep->kernel.next; l != &ep->kernel; l = l->next) {
			struct usock *lus = dl_entry(l, struct ep_entry, on_kernel)->us;
			if (!lus->joined || lus->pid != shim_pid())
				(void)usock_listener_ready(lus);
		}
		n = collect(ep, ev, max);
		if (!n && ep->port_fd >= 0) {
			proc_inline_enter();
			inline_wait = true;
		}
		sepoll_enter(ep);
		shim_unlock();
		k = n == max ? 0 : real_epoll_pwait(epfd, ev + n, max - n, n ? 0 : ms_until(deadline), mask);
		e = errno;
		shim_lock();
		if (inline_wait)
			proc_inline_leave();
		/* the instance we waited on, even if another thread closed its fd meanwhile */
		total = k < 0 ? n : fix_kernel_events(ep, ev, n, k);
		sepoll_leave(ep);
		shim_unlock();
		if (k < 0)
			return n ? n : (errno = e, -1);
		if (total > 0)
			return total;
		if (deadline != UINT64_MAX && shim_now_us() >= deadline)
			return 0;
	}
}

/* A thread that went into the kernel's epoll_wait while the instance had no UTCP member may
 * come back with the shim's own events: another thread's EPOLL_CTL_ADD of a UTCP socket made
 * the instance ours meanwhile.  Those are translated or dropped here, and the wait goes on. */
static int plain_wait_done(int epfd, struct epoll_event *ev, int max, int k, uint64_t deadline,
			   const sigset_t *mask)
{
	struct sepoll *ep;

	if (k <= 0 || !fd_sepoll(epfd))
		return k;
	shim_lock();
	ep = fd_sepoll(epfd);
	if (ep)
		k = fix_kernel_events(ep, ev, 0, k);
	shim_unlock();
	if (k > 0 || (deadline != UINT64_MAX && shim_now_us() >= deadline))
		return k;
	return sepoll_wait(epfd, ev, max, deadline, mask);
}

SHIM_EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
	REAL(epoll_wait);
	uint64_t deadline = deadline_ms(timeout);

	if (!fd_sepoll(epfd)) {
		proc_push_unlocked();
		return plain_wait_done(epfd, ev, max, real_epoll_wait(epfd, ev, max, timeout),
				       deadline, NULL);
	}
	return sepoll_wait(epfd, ev, max, deadline, NULL);
}

SHIM_EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout,
			    const sigset_t *mask)
{
	REAL(epoll_pwait);
	uint64_t deadline = deadline_ms(timeout);

	if (!fd_sepoll(epfd)) {
		proc_push_unlocked();
		return plain_wait_done(epfd, ev, max,
				       real_epoll_pwait(epfd, ev, max, timeout, mask), deadline, mask);
	}
	return sepoll_wait(epfd, ev, max, deadline, mask);
}

SHIM_EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max,
			     const struct timespec *ts, const sigset_t *mask)
{
	REAL(epoll_pwait2);
	uint64_t deadline = deadline_ts(ts);

	if (!fd_sepoll(epfd)) {
		proc_push_unlocked();
		return plain_wait_done(epfd, ev, max, real_epoll_pwait2(epfd, ev, max, ts, mask),
				       deadline, mask);
	}
	return sepoll_wait(epfd, ev, max, deadline, mask);
}

SHIM_EXPORT int epoll_create(int size)
{
	REAL(epoll_create);
	int fd = real_epoll_create(size);

	if (fd >= 0)
		fd_fresh(fd);
	return fd;
}

SHIM_EXPORT int epoll_create1(int flags)
{
	REAL(epoll_create1);
	int fd = real_epoll_create1(flags);

	if (fd >= 0)
		fd_fresh(fd);
	return fd;
}

void wait_after_fork_child(void)
{
	if (t_efd >= 0)
		close(t_efd);
	t_efd = -1;
	dl_init(&threads);
	notified = false;
}
