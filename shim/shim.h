/* shim.h — the shim's process-wide state, its descriptor table and its logging.
 *
 * Shape (docs/shim.md):
 *  - Every descriptor stays a real kernel descriptor: a listener's fd is its shadow socket
 *    (bound and listening, design.md section 4), a UTCP connection's fd is a kernel TCP
 *    socket that is never connected (a placeholder).  fd numbers, dup, CLOEXEC and fork
 *    inheritance therefore follow the kernel's rules.  The table below says which fds the
 *    shim carries on UTCP (a struct usock, shared by dups of one socket) and which are epoll
 *    instances with UTCP members (a struct sepoll).  Everything else goes to libc untouched.
 *  - One UTCP stack per process, on a port of its own from mstackd (proc.c), created when the
 *    process first waits on a listener or connects; a helper thread (all signals blocked)
 *    runs it while the application is elsewhere.  One mutex serialises the stack and every
 *    structure below; kernel-only calls never take it.
 *  - Readiness comes from the stack's socket layer (utcp_sock.h) as poll bits; waiting
 *    threads and epoll instances are woken through eventfds (wait.c). */
#ifndef MSTACK_SHIM_H
#define MSTACK_SHIM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "policy.h"

#define SHIM_EXPORT __attribute__((visibility("default")))

/* The next definition of a libc function (dlsym RTLD_NEXT), resolved once. */
void *shim_real(const char *name);
#define REAL(name)                                                                          \
	static __typeof__(&name) real_##name;                                              \
	if (__builtin_expect(!real_##name, 0))                                              \
	real_##name = (__typeof__(&name))shim_real(#name)

/* Environment the shim needs across exec: captured at load, before the application can
 * change its environment, and put back into any exec that drops it. */
enum {
	SHIM_ENV_PRELOAD,
	SHIM_ENV_POLICY,
	SHIM_ENV_RUN_DIR,
	SHIM_ENV_VERBOSE,
	SHIM_ENV_AUTOCORK,
	SHIM_ENV_AUTOCORK_US,
	SHIM_ENV_N
};

struct shim_state {
	int have_policy;
	int verbose;
	struct mstack_policy policy;
	char *env[SHIM_ENV_N];          /* "NAME=value" or NULL */
	const char *self_path;          /* this library's path, for LD_PRELOAD */
	const char *run_dir;            /* MSTACK_RUN_DIR or NULL */
	unsigned long warned_listen[2]; /* listed endpoints already reported (bitmaps) */
	unsigned long warned_connect[2];
	/* Autocorking (proc.c): what the application sends on a UTCP connection is held until it
	 * next waits (or closes, shuts down, fills a segment), then every held connection is
	 * pushed and the port flushed once; the helper thread pushes what is held longer than
	 * autocork_us.  MSTACK_AUTOCORK=0 turns it off, MSTACK_AUTOCORK_US sets the bound. */
	bool autocork;
	uint32_t autocork_us;
};

extern struct shim_state shim;

void shim_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An IPv4 address in host order as the four arguments of "%u.%u.%u.%u". */
#define IP4(a) (a) >> 24, (a) >> 16 & 255, (a) >> 8 & 255, (a) & 255
#define shim_vlog(...)                                                                      \
	do {                                                                                \
		if (shim.verbose)                                                           \
			shim_log(__VA_ARGS__);                                              \
	} while (0)

/* A copy of envp with the shim's variables put back where missing (NULL-terminated,
 * malloc'ed: free with shim_free_env), or NULL on allocation failure. */
char **shim_fix_env(char *const envp[]);
void shim_free_env(char **env);

/* ---- intrusive doubly linked lists ---- */

struct dl {
	struct dl *prev, *next;
};
static inline void dl_init(struct dl *h)
{
	h->prev = h->next = h;
}
static inline bool dl_empty(const struct dl *h)
{
	return h->next == h;
}
static inline bool dl_linked(const struct dl *n)
{
	return n->next != NULL && n->next != n;
}
static inline void dl_add_tail(struct dl *h, struct dl *n)
{
	n->prev = h->prev;
	n->next = h;
	h->prev->next = n;
	h->prev = n;
}
static inline void dl_del(struct dl *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}
#define dl_entry(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* ---- UTCP sockets as the application sees them ---- */

enum usock_kind { US_LISTENER = 1, US_CONN = 2 };

struct usock {
	enum usock_kind kind;
	int refs;                 /* fds of this process naming it (dup shares one usock) */
	pid_t pid;                /* the process whose stack `sk` lives in */
	int sk;                   /* the socket in that stack's table; -1: none (yet) */
	int family;               /* AF_INET or AF_INET6: how addresses are reported */
	bool nonblock;            /* O_NONBLOCK as the application set it */
	bool joined;              /* listener: this process's port waits in its listen group */
	bool paused;              /* listener: joined at listen(), answers no SYN until a wait */
	bool shut;                /* listener: shutdown(SHUT_RD) stopped it (until listen again) */
	bool foreign_said;        /* a forked child was told it cannot use this connection */
	bool connect_said;        /* connection: a connect() call has reported the outcome */
	bool held;                /* connection: in the process's autocork list (proc.c) */
	int64_t binding;          /* listener: mstackd's binding id, -1 none */
	uint32_t laddr;           /* listener: bound address, host order (0: wildcard) */
	uint16_t lport;
	int backlog;              /* listener: as the application asked */
	int fd;                   /* listener: the shadow's fd when it became ours (options) */
	int64_t rcvtimeo_us, sndtimeo_us;   /* 0: none */
	struct dl watchers;       /* struct ep_entry.on_sock */
};

/* One UTCP socket in one epoll instance's interest list (kept by the shim, design.md 4). */
struct ep_entry {
	struct sepoll *ep;
	struct usock *us;
	int fd;
	uint32_t events;          /* interest, with EPOLLET / EPOLLONESHOT / EPOLLEXCLUSIVE */
	epoll_data_t data;
	bool edge;                /* something happened since the last report (EPOLLET) */
	bool disarmed;            /* EPOLLONESHOT reported; rearmed by EPOLL_CTL_MOD */
	bool in_kernel;           /* listener: its shadow is in the kernel epoll, tagged */
	struct dl on_kernel;      /* sepoll.kernel: entries whose shadow is in the kernel epoll */
	struct dl on_sock;        /* usock.watchers */
	struct dl on_ep;          /* sepoll.entries */
	struct dl on_ready;       /* sepoll.ready */
};

/* An epoll instance with UTCP members: its own eventfd sits in the kernel epoll. */
struct sepoll {
	int epfd;
	int efd;
	int refs;                 /* fds naming it */
	bool signalled;           /* efd holds a count */
	int port_fd;              /* the process's port, in the kernel epoll (tagged); -1: not */
	pid_t port_pid;
	struct dl entries;
	struct dl kernel;
	struct dl ready;
	/* Threads in the kernel's epoll_wait on it: an entry whose shadow was in the kernel epoll
	 * is kept (retired) until they are back, so that an event they bring for it is still
	 * recognised as the shim's; the instance itself too, once closed (dead). */
	int waiters;
	bool dead;
	struct dl retired;
};

/* ---- the descriptor table ---- */

#define SHIM_MAX_FDS (1u << 20)
#define FD_TAG_EPOLL ((uintptr_t)1)

extern _Atomic(uintptr_t) *shim_fds;

static inline uintptr_t fd_raw(int fd)
{
	if (fd < 0 || (unsigned)fd >= SHIM_MAX_FDS || !shim_fds)
		return 0;
	return atomic_load_explicit(&shim_fds[fd], memory_order_acquire);
}
static inline struct usock *fd_usock(int fd)
{
	uintptr_t v = fd_raw(fd);
	return (v & FD_TAG_EPOLL) ? NULL : (struct usock *)v;
}
static inline struct sepoll *fd_sepoll(int fd)
{
	uintptr_t v = fd_raw(fd);
	return (v & FD_TAG_EPOLL) ? (struct sepoll *)(v & ~FD_TAG_EPOLL) : NULL;
}
/* With the lock held. */
void fdtab_set(int fd, uintptr_t v);
/* A descriptor the kernel just handed out: forget whatever a close that went past the shim
 * left in the table for that number (takes the lock). */
void fd_fresh(int fd);

/* ---- the lock, time, the process's stack (proc.c) ---- */

void shim_lock(void);
void shim_unlock(void);
uint64_t shim_now_us(void);

/* The calling process's id without a system call (glibc's getpid() makes one, and the shim
 * asks on every socket call whether the stack is this process's): kept in a page the kernel
 * wipes in a child at fork (MADV_WIPEONFORK, any kind of fork), so a child reads 0 and asks
 * the kernel once.  NULL before the shim's constructor or if the page could not be made:
 * getpid() every time. */
extern pid_t *shim_pid_cell;
static inline pid_t shim_pid(void)
{
	pid_t p = shim_pid_cell ? __atomic_load_n(shim_pid_cell, __ATOMIC_RELAXED) : 0;

	if (__builtin_expect(p == 0, 0)) {
		p = getpid();
		if (shim_pid_cell)
			__atomic_store_n(shim_pid_cell, p, __ATOMIC_RELAXED);
	}
	return p;
}

/* Make sure this process has a control connection to mstackd.  0, or a negative errno with
 * the reason in why. */
int proc_ctl(char *why, size_t whylen);
/* Make sure this process has its port, its UTCP stack and its helper thread. */
int proc_stack(char *why, size_t whylen);
struct utcp_socks *proc_socks(void);
struct mstack_ctl *proc_ctl_conn(void);
uint32_t proc_port_id(void);
uint32_t proc_local_ip(void);
bool proc_has_lease(void);
/* The port's fd (-1 without a stack in this process); run the stack on what arrived; an
 * application thread starts / stops waiting in epoll_wait with the port in its set (the
 * helper thread then leaves the port to it).  Lock held. */
int proc_port_fd(void);
void proc_run_inline(void);
void proc_inline_enter(void);
void proc_inline_leave(void);
/* Nobody watches the port (no inline waiter, helper thread not polling it): a thread about
 * to block elsewhere wakes the helper with proc_nudge(). */
bool proc_inline_nobody(void);
void proc_nudge(void);
/* Send what API calls queued (with the lock held). */
void proc_flush(void);
/* Autocorking.  A send on `us` was held (UTCP_SK_HOLD): remember it until the next push.
 * Lock held. */
void proc_hold(struct usock *us);
/* The application waits (epoll, poll, select, a blocking call), closes or shuts down: push
 * every held connection, then send everything queued (one kick: proc_flush).  False if
 * nothing was held (and nothing done).  Lock held. */
bool proc_push(void);
/* proc_push, and the one kick even if nothing was held (a close or shutdown queued a FIN).
 * Lock held. */
void proc_push_flush(void);
/* Without the lock: is anything held?  (A thread about to wait on kernel descriptors only
 * pushes if so and the lock is free — never waiting for it, since the shim's own requests to
 * mstackd poll with the lock held: proc_push_unlocked.) */
bool proc_holding(void);
void proc_push_unlocked(void);
/* Segments the stack has built so far: a send that built some (full segments) flushes
 * them at once (proc_flush) instead of at the next push. */
uint64_t proc_segs_out(void);
/* Register / unregister the socket id -> usock mapping used by notifications. */
void proc_map(int sk, struct usock *us);
void proc_unmap(int sk);
/* A mstackd request that reconnects once when the daemon went away (restart). */
int proc_ctl_retry(int (*fn)(struct mstack_ctl *, void *), void *arg);
/* This process's UTCP listener of mstackd's binding `binding`, or NULL. */
struct usock *proc_listener_by_binding(uint32_t binding);

/* ---- moving queued connections between group members (handoff.c) ---- */

/* Before a listener's socket closes (the process has left its group): its queued and half-open
 * connections go to another member of the group.  Returns how many moved; the stack resets
 * those that could not.  Lock held. */
int handoff_listener(struct usock *us);
/* The inbox: mstackd's pushes of connections handed over by other members.  Opened with the
 * stack; its fd (-1: none) is watched by the helper thread, which drains it.  Lock held. */
void handoff_inbox_open(uint32_t port_id);
int handoff_inbox_fd(void);
void handoff_inbox_drain(void);
void handoff_inbox_close(void);
void handoff_after_fork_child(void);

/* ---- sockets (sock.c) ---- */

/* The listener's UTCP side in this process: socket in the stack, port in the group.  With
 * the lock held; 0 or a negative errno (then the listener serves through the kernel). */
int usock_listener_ready(struct usock *us);
/* The same from listen(): joined, but paused until the process waits on it. */
int usock_listener_join_paused(struct usock *us);
/* A listener about to go (its last close, or the process's exit): it leaves its group and its
 * queued connections move to another member (handoff.c).  Lock held. */
void usock_listener_closing(struct usock *us);
/* Drop one fd's reference (close, dup2 over it); with the lock held. */
void usock_put(int fd, struct usock *us);
bool usock_foreign(struct usock *us);
void usock_say_foreign(int fd, struct usock *us);
/* Listeners inherited across exec become UTCP listeners again (init time). */
void sock_adopt_inherited(void);
void sock_after_fork_child(void);
/* The parent of a fork leaves its listen groups: a process that forks workers and never waits
 * on its listeners (nginx's master) must not receive their connections.  A process that does
 * wait joins again on its next wait.  Lock held. */
void sock_after_fork_parent(void);
/* Before exec: leave the listen groups (takes the lock). */
void sock_before_exec(void);
void sock_exec_failed(void);
/* After a call that may have made a socket less ready (recv, accept): drop it from epoll
 * ready lists it no longer belongs on, as the kernel's epoll would.  Lock held. */
void wait_recheck(struct usock *us);

/* ---- waiting (wait.c) ---- */

/* Called by the stack's socket layer (lock held) for a socket something happened to. */
void wait_notify(struct usock *us, unsigned ready);
/* After a round of notifications: wake blocked threads (lock held). */
void wait_wake_threads(void);
/* Threads blocked in poll, select or a blocking socket call (they need the helper thread to
 * watch the port).  Lock held. */
bool wait_threads_blocked(void);
/* Block until `us` may have changed, kfd (>= 0) polls `kevents`, the deadline passes
 * (UINT64_MAX: none) or a signal arrives.  Called and returns with the lock held.
 * 0, -ETIMEDOUT, -EINTR (a handler ran that did not ask for SA_RESTART: the caller fails
 * with EINTR) or -ERESTART (restart the call). */
int wait_block(int kfd, short kevents, uint64_t deadline_us);
/* poll bits of a usock (listener: UTCP side only), lock held. */
unsigned usock_ready(struct usock *us);
void wait_forget_usock(struct usock *us);
void wait_sepoll_put(int fd, struct sepoll *ep);
void wait_after_fork_child(void);
/* A kernel socket's epoll registrations, kept while it may still become a UTCP socket: moved
 * into the shim's interest lists when it does, forgotten when it is closed.  Lock held. */
void wait_adopt_kernel_regs(int fd, struct usock *us);
void wait_forget_kernel_regs(int fd);
/* Without the lock: might fd have such registrations? */
bool wait_kernel_regs_hint(int fd);

#define ERESTART_SHIM 512

/* glibc's fortified entry points (_FORTIFY_SOURCE builds call these). */
ssize_t __read_chk(int fd, void *buf, size_t len, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t len, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t len, size_t buflen, int flags,
		       struct sockaddr *addr, socklen_t *alen);
struct pollfd;
struct timespec;
int __poll_chk(struct pollfd *fds, unsigned long n, int timeout, size_t len);
int __ppoll_chk(struct pollfd *fds, unsigned long n, const struct timespec *ts,
		const __sigset_t *mask, size_t len);
long int __fdelt_chk(long int d);
int fcntl64(int fd, int cmd, ...);

#endif
