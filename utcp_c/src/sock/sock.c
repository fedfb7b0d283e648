/* sock.c — the socket table of utcp_sock.h: Linux's stream-socket semantics (accept queue,
 * shutdown, pending errors, options, poll bits as tcp_poll() computes them) on top of one
 * stack's event API.  Everything is allocated by utcp_socks_create(); unaccepted connections
 * and the sockets to notify are kept in intrusive lists inside the table. */
#define _GNU_SOURCE             /* POLLRDHUP */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sock/sock_int.h"
#include "utcp_sock.h"

/* ---- ids, lists ---- */

int usk_id(const struct utcp_socks *ss, const struct sk *s)
{
	return (int)(((uint32_t)(s->gen & SK_GEN_MASK) << SK_IDX_BITS) | (uint32_t)(s - ss->sk));
}

uint32_t usk_idx(const struct utcp_socks *ss, const struct sk *s)
{
	return (uint32_t)(s - ss->sk);
}

/* A socket the caller holds: unaccepted connections are not the caller's yet. */
struct sk *usk_get(struct utcp_socks *ss, int id)
{
	uint32_t idx;
	struct sk *s;

	if (!ss || id < 0)
		return NULL;
	idx = (uint32_t)id & SK_IDX_MASK;
	if (idx >= ss->max)
		return NULL;
	s = &ss->sk[idx];
	if (s->kind == SK_FREE || (s->gen & SK_GEN_MASK) != ((uint32_t)id >> SK_IDX_BITS) ||
	    s->parent != NONE)
		return NULL;
	return s;
}

void usk_list_push(struct utcp_socks *ss, struct sk_list *l, struct sk *s)
{
	uint32_t i = usk_idx(ss, s);

	s->next = NONE;
	s->prev = l->tail;
	if (l->tail == NONE)
		l->head = i;
	else
		ss->sk[l->tail].next = i;
	l->tail = i;
	l->n++;
}

void usk_list_del(struct utcp_socks *ss, struct sk_list *l, struct sk *s)
{
	if (s->prev == NONE)
		l->head = s->next;
	else
		ss->sk[s->prev].next = s->next;
	if (s->next == NONE)
		l->tail = s->prev;
	else
		ss->sk[s->next].prev = s->prev;
	s->prev = s->next = NONE;
	l->n--;
}

static void usk_list_init(struct sk_list *l)
{
	l->head = l->tail = NONE;
	l->n = 0;
}

struct sk *usk_alloc(struct utcp_socks *ss)
{
	struct sk *s;
	uint16_t gen;

	if (ss->free_head == NONE)
		return NULL;
	s = &ss->sk[ss->free_head];
	ss->free_head = s->next;
	gen = s->gen;
	memset(s, 0, sizeof(*s));
	s->gen = gen;
	s->kind = SK_OPEN;
	s->linger = -1;
	s->keepalive = ss->cfg->keepalive;
	s->nodelay = ss->cfg->nodelay;
	s->cid = UTCP_CID_NONE;
	s->lid = -1;
	s->parent = s->prev = s->next = NONE;
	usk_list_init(&s->aq);
	usk_list_init(&s->dq);
	usk_list_init(&s->fq);
	return s;
}

static void sk_release_cid(struct utcp_socks *ss, struct sk *s)
{
	if (s->cid != UTCP_CID_NONE && ss->by_cid[UTCP_CID_INDEX(s->cid)] == usk_idx(ss, s))
		ss->by_cid[UTCP_CID_INDEX(s->cid)] = NONE;
	s->cid = UTCP_CID_NONE;
}

void usk_free(struct utcp_socks *ss, struct sk *s)
{
	sk_release_cid(ss, s);
	s->kind = SK_FREE;
	s->gen = (uint16_t)((s->gen + 1) & SK_GEN_MASK);
	s->marked = false;
	s->next = ss->free_head;
	ss->free_head = usk_idx(ss, s);
}

/* ---- table ---- */

void utcp_socks_config_init(struct utcp_socks_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->sz = sizeof(*cfg);
	cfg->wake_fd = 1;
}

int utcp_socks_create(struct utcp_stack *st, const struct utcp_socks_config *ucfg,
		      struct utcp_socks **out)
{
	struct utcp_socks_config cfg;
	struct utcp_socks *ss;
	uint32_t i;

	if (!st || !out)
		return -EINVAL;
	utcp_socks_config_init(&cfg);
	if (ucfg) {
		if (ucfg->sz < sizeof(size_t) || ucfg->sz > sizeof(cfg))
			return -EINVAL;
		memcpy(&cfg, ucfg, ucfg->sz);
		cfg.sz = sizeof(cfg);
	}
	ss = calloc(1, sizeof(*ss));
	if (!ss)
		return -ENOMEM;
	ss->st = st;
	ss->cfg = utcp_stack_config(st);
	ss->max = cfg.max_socks ? cfg.max_socks : ss->cfg->max_conns + ss->cfg->max_listeners;
	ss->nconn = ss->cfg->max_conns;
	ss->nlid = ss->cfg->max_listeners;
	ss->wake_fd = -1;
	if (ss->max > SK_IDX_MASK + 1) {
		free(ss);
		return -EINVAL;
	}
	ss->sk = calloc(ss->max, sizeof(*ss->sk));
	ss->by_cid = malloc(ss->nconn * sizeof(*ss->by_cid));
	ss->by_lid = malloc(ss->nlid * sizeof(*ss->by_lid));
	ss->marked = malloc(ss->max * sizeof(*ss->marked));
	if (!ss->sk || !ss->by_cid || !ss->by_lid || !ss->marked)
		goto nomem;
	for (i = 0; i < ss->nconn; i++)
		ss->by_cid[i] = NONE;
	for (i = 0; i < ss->nlid; i++)
		ss->by_lid[i] = NONE;
	for (i = 0; i < ss->max; i++)
		ss->sk[i].next = i + 1 < ss->max ? i + 1 : NONE;
	ss->free_head = 0;
	if (cfg.wake_fd) {
		ss->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (ss->wake_fd < 0) {
			int e = -errno;

			utcp_socks_destroy(ss, 0);
			return e;
		}
	}
	*out = ss;
	return 0;
nomem:
	utcp_socks_destroy(ss, 0);
	return -ENOMEM;
}

void utcp_socks_destroy(struct utcp_socks *ss, uint64_t now)
{
	uint32_t i;

	if (!ss)
		return;
	for (i = 0; ss->sk && i < ss->max; i++) {
		struct sk *s = &ss->sk[i];

		if (s->kind == SK_CONN && s->cid != UTCP_CID_NONE)
			utcp_abort(ss->st, s->cid, now);
		else if (s->kind == SK_LISTEN)
			utcp_unlisten(ss->st, s->lid);
	}
	if (ss->sk)
		utcp_flush(ss->st, now);
	if (ss->wake_fd >= 0)
		close(ss->wake_fd);
	free(ss->sk);
	free(ss->by_cid);
	free(ss->by_lid);
	free(ss->marked);
	free(ss);
}

struct utcp_stack *utcp_socks_stack(const struct utcp_socks *ss)
{
	return ss->st;
}

void utcp_socks_set_notify(struct utcp_socks *ss, utcp_sk_notify_fn fn, void *arg)
{
	ss->notify = fn;
	ss->notify_arg = arg;
}

int utcp_socks_wake_fd(const struct utcp_socks *ss)
{
	return ss->wake_fd;
}

void utcp_socks_wake_drain(struct utcp_socks *ss)
{
	uint64_t v;

	if (ss->wake_fd >= 0)
		while (read(ss->wake_fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
			;
}

static void see_time(struct utcp_socks *ss, uint64_t now)
{
	if (now > ss->now)
		ss->now = now;
}

/* ---- connection state ---- */

static bool opening(enum utcp_state s)
{
	return s == UTCP_SYN_SENT || s == UTCP_SYN_RECEIVED;
}

/* The connection's status; the first time it is seen CLOSED, its error becomes the
 * socket's pending error (Linux's sk_err), to be collected once. */
static void refresh(struct utcp_socks *ss, struct sk *s, struct utcp_conn_status *cs)
{
	if (utcp_conn_status(ss->st, s->cid, cs) < 0) {
		/* cannot happen while the socket holds the handle; behave as closed */
		memset(cs, 0, sizeof(*cs));
		cs->state = UTCP_CLOSED;
	}
	if (cs->state == UTCP_CLOSED && !s->gone) {
		s->gone = true;
		if (cs->error)
			s->err = cs->error;
	}
}

static uint32_t buf_report(uint32_t req, uint32_t floor, uint32_t stack_buf)
{
	uint64_t v = 2ull * req;

	if (v < floor)
		v = floor;
	return v > stack_buf ? stack_buf : (uint32_t)v;
}

static void apply_bufcap(struct utcp_socks *ss, struct sk *s)
{
	if (s->kind == SK_LISTEN)
		utcp_listen_bufcap(ss->st, s->lid, s->sndbuf, s->rcvbuf);
	else
		utcp_set_bufcap(ss->st, s->cid, s->sndbuf, s->rcvbuf);
}

static void apply_keepalive(struct utcp_socks *ss, struct sk *s, uint64_t now)
{
	if (s->ka_idle || s->ka_intvl || s->ka_cnt)
		utcp_set_keepalive_timing(ss->st, s->cid, s->ka_idle * 1000000ull,
					  s->ka_intvl * 1000000ull, s->ka_cnt, now);
	utcp_set_keepalive(ss->st, s->cid, s->keepalive, now);
}

/* Options that matter from the first segment on; keepalive waits for ESTABLISHED. */
static void apply_conn_opts(struct utcp_socks *ss, struct sk *s, uint64_t now)
{
	utcp_set_nodelay(ss->st, s->cid, s->nodelay);
	apply_bufcap(ss, s);
	if (s->cc)
		utcp_set_cc(ss->st, s->cid, s->cc);
	if (s->cork)
		utcp_set_cork(ss->st, s->cid, true, now);
}

void usk_mark(struct utcp_socks *ss, struct sk *s)
{
	if (s->marked || ss->nmarked == ss->max)
		return;
	s->marked = true;
	ss->marked[ss->nmarked++] = usk_id(ss, s);
}

/* ---- readiness (Linux's tcp_poll) ---- */

static int conn_ready(struct utcp_socks *ss, struct sk *s)
{
	struct utcp_conn_status cs;
	int m = 0;

	refresh(ss, s, &cs);
	if (!opening(cs.state)) {
		bool closed = cs.state == UTCP_CLOSED;
		bool rd = s->shut_rd || cs.peer_fin || closed;     /* RCV_SHUTDOWN */
		bool wr = s->shut_wr || cs.fin_queued || closed;   /* SEND_SHUTDOWN */

		if ((rd && wr) || closed)
			m |= POLLHUP;
		if (rd)
			m |= POLLIN | POLLRDHUP;
		if (cs.rcv_queued)
			m |= POLLIN;
		/* sk_stream_is_writeable(): free space at least half the queued bytes,
		 * i.e. at least a third of the buffer free */
		if (wr || (cs.snd_queued < cs.snd_cap &&
			   2ull * (cs.snd_cap - cs.snd_queued) >= cs.snd_queued))
			m |= POLLOUT;
	}
	if (s->err)
		m |= POLLERR;
	return m;
}

static int sk_ready(struct utcp_socks *ss, struct sk *s)
{
	switch (s->kind) {
	case SK_LISTEN:
		return s->aq.n ? POLLIN : 0;
	case SK_CONN:
		return conn_ready(ss, s);
	default:
		/* not connected: Linux's TCP_CLOSE without shutdown */
		return POLLOUT | POLLHUP | (s->err ? POLLERR : 0);
	}
}

int utcp_sk_ready(struct utcp_socks *ss, int id)
{
	struct sk *s = usk_get(ss, id);

	return s ? sk_ready(ss, s) : -EBADF;
}

/* ---- events ---- */

/* TCP_DEFER_ACCEPT: the seconds Linux actually waits for a value (it counts SYN,ACK
 * retransmissions, 1 s doubling up to 120 s, and reports them back in seconds). */
static int defer_round(int secs)
{
	int period = 1, timeout = 1, n = 1;

	if (secs <= 0)
		return 0;
	while (secs > period && n < 255) {
		n++;
		timeout = timeout * 2 > 120 ? 120 : timeout * 2;
		period += timeout;
	}
	return period;
}

static void defer_end(struct utcp_socks *ss, struct sk *c)
{
	struct sk *l = &ss->sk[c->parent];

	usk_list_del(ss, &l->dq, c);
	c->deferred = false;
	utcp_set_wakeup(ss->st, c->cid, 0);
	usk_list_push(ss, &l->aq, c);
	usk_mark(ss, l);
}

/* An unaccepted connection that will never be accepted: its slot in the listener's
 * backlog and its socket go. */
static void child_drop(struct utcp_socks *ss, struct sk *c, bool rst, uint64_t now)
{
	struct sk *l = &ss->sk[c->parent];

	usk_list_del(ss, c->deferred ? &l->dq : &l->aq, c);
	utcp_listen_release(ss->st, l->lid);
	if (rst)
		utcp_abort(ss->st, c->cid, now);
	else
		utcp_close(ss->st, c->cid, now);
	usk_free(ss, c);
}

void usk_child_init(struct utcp_socks *ss, struct sk *l, struct sk *c, utcp_cid cid, uint64_t now)
{
	c->kind = SK_CONN;
	c->keepalive = l->keepalive;
	c->nodelay = l->nodelay;
	c->cork = l->cork;
	c->linger = l->linger;
	c->rcvbuf = l->rcvbuf;
	c->sndbuf = l->sndbuf;
	c->ka_idle = l->ka_idle;
	c->ka_intvl = l->ka_intvl;
	c->ka_cnt = l->ka_cnt;
	c->cc = l->cc;
	c->cid = cid;
	c->connected = true;
	c->parent = usk_idx(ss, l);
	ss->by_cid[UTCP_CID_INDEX(cid)] = usk_idx(ss, c);
	apply_conn_opts(ss, c, now);
	apply_keepalive(ss, c, now);
	if (l->defer_accept > 0) {
		c->deferred = true;
		c->defer_until = now + (uint64_t)l->defer_accept * 1000000u;
		utcp_set_wakeup(ss->st, c->cid, c->defer_until);
		usk_list_push(ss, &l->dq, c);
	} else {
		usk_list_push(ss, &l->aq, c);
		usk_mark(ss, l);
	}
}

static void on_accepted(struct utcp_socks *ss, const struct utcp_event *ev, uint64_t now)
{
	uint32_t li = ev->listener >= 0 && (uint32_t)ev->listener < ss->nlid ? ss->by_lid[ev->listener]
									   : NONE;
	struct sk *l = li != NONE ? &ss->sk[li] : NULL, *c;

	if (!l || l->kind != SK_LISTEN || l->lid != ev->listener) {
		utcp_abort(ss->st, ev->conn, now);      /* its listener is gone */
		return;
	}
	c = usk_alloc(ss);
	if (!c) {
		utcp_listen_release(ss->st, l->lid);
		utcp_abort(ss->st, ev->conn, now);      /* socket table full */
		return;
	}
	usk_child_init(ss, l, c, ev->conn, now);
}

static void on_event(struct utcp_socks *ss, const struct utcp_event *ev, uint64_t now)
{
	struct utcp_conn_status cs;
	struct sk *s;
	uint32_t i;

	if (ev->events & UTCP_EV_ACCEPTED)
		on_accepted(ss, ev, now);
	i = ss->by_cid[UTCP_CID_INDEX(ev->conn)];
	if (i == NONE || ss->sk[i].cid != ev->conn)
		return;
	s = &ss->sk[i];
	if (s->frozen)
		return;                 /* news from before the freeze: it is moving */
	if (ev->events & UTCP_EV_CONNECTED) {
		s->connected = true;
		apply_keepalive(ss, s, now);
	}
	refresh(ss, s, &cs);
	if (s->parent == NONE) {
		usk_mark(ss, s);
		return;
	}
	/* Not accepted yet: only a deferred connection has news for its listener. */
	if (!s->deferred)
		return;
	if (cs.rcv_queued || cs.peer_fin)
		defer_end(ss, s);
	else if (cs.state == UTCP_CLOSED)
		child_drop(ss, s, false, now);  /* Linux never made it a socket */
	else if (now >= s->defer_until)
		defer_end(ss, s);
}

void usk_drain_events(struct utcp_socks *ss, uint64_t now)
{
	struct utcp_event ev;

	while (utcp_next_event(ss->st, &ev) == 1)
		on_event(ss, &ev, now);
}

int utcp_socks_process(struct utcp_socks *ss, uint64_t now)
{
	uint32_t i, n;

	if (ss->in_process)
		return 0;
	see_time(ss, now);
	ss->in_process = true;
	usk_drain_events(ss, now);
	/* Callbacks may call back into the table (accept, recv, close): each id is checked
	 * before its call. */
	n = ss->nmarked;
	ss->nmarked = 0;
	for (i = 0; i < n; i++) {
		struct sk *s = usk_get(ss, ss->marked[i]);

		if (!s)
			continue;
		s->marked = false;
		if (ss->notify)
			ss->notify(ss->notify_arg, ss->marked[i], (unsigned)sk_ready(ss, s));
	}
	ss->in_process = false;
	if (n && ss->wake_fd >= 0) {
		uint64_t one = 1;

		if (write(ss->wake_fd, &one, sizeof(one)) < 0) {
			/* the counter is saturated: it is readable anyway */
		}
	}
	return (int)n;
}

/* ---- sockets ---- */

int utcp_sk_open(struct utcp_socks *ss)
{
	struct sk *s = usk_alloc(ss);

	return s ? usk_id(ss, s) : -ENFILE;
}

/* Stops listening: queued and deferred connections are reset (Linux's
 * inet_csk_listen_stop); the socket is left not connected. */
static void listener_stop(struct utcp_socks *ss, struct sk *l, uint64_t now)
{
	struct sk_list *lists[2] = {&l->aq, &l->dq};
	int k;

	usk_migrate_abandon(ss, l, now);
	utcp_unlisten(ss->st, l->lid);
	ss->by_lid[l->lid] = NONE;
	for (k = 0; k < 2; k++) {
		while (lists[k]->head != NONE) {
			struct sk *c = &ss->sk[lists[k]->head];

			usk_list_del(ss, lists[k], c);
			utcp_abort(ss->st, c->cid, now);
			usk_free(ss, c);
		}
	}
	l->kind = SK_OPEN;
	l->lid = -1;
	l->port = 0;
}

int utcp_sk_listen(struct utcp_socks *ss, int id, uint16_t port, int backlog)
{
	struct sk *s = usk_get(ss, id);
	int lid;

	if (!s)
		return -EBADF;
	if (backlog < 0)
		backlog = 0;
	if (backlog > BACKLOG_MAX)
		backlog = BACKLOG_MAX;
	if (s->kind == SK_LISTEN) {
		if (port != s->port)
			return -EINVAL;
		s->backlog = backlog;   /* listen() again: a new backlog (Linux) */
		return utcp_listen_hold(ss->st, s->lid, backlog + 1);
	}
	if (s->kind != SK_OPEN)
		return -EINVAL;
	lid = utcp_listen(ss->st, port, 1);
	if (lid < 0)
		return lid;
	if ((uint32_t)lid >= ss->nlid) {
		utcp_unlisten(ss->st, lid);
		return -ENOBUFS;
	}
	s->kind = SK_LISTEN;
	s->lid = lid;
	s->port = port;
	s->backlog = backlog;
	s->err = 0;
	ss->by_lid[lid] = usk_idx(ss, s);
	apply_bufcap(ss, s);
	/* Linux queues up to backlog + 1 connections before it ignores SYNs. */
	return utcp_listen_hold(ss->st, lid, backlog + 1);
}

int utcp_sk_listen_pause(struct utcp_socks *ss, int id, bool paused)
{
	struct sk *s = usk_get(ss, id);

	if (!s)
		return -EBADF;
	if (s->kind != SK_LISTEN)
		return -EINVAL;
	/* a hold limit of 0 answers no SYN */
	return utcp_listen_hold(ss->st, s->lid, paused ? 0 : s->backlog + 1);
}

static void fill_name(struct utcp_socks *ss, struct sk *s, struct utcp_sk_name *n)
{
	memset(n, 0, sizeof(*n));
	if (s->kind == SK_LISTEN) {
		n->laddr = ss->cfg->local_ip;
		n->lport = s->port;
	} else if (s->kind == SK_CONN) {
		struct utcp_conn_info ci;

		memset(&ci, 0, sizeof(ci));
		ci.sz = sizeof(ci);
		if (utcp_conn_info(ss->st, s->cid, &ci) == 0) {
			n->laddr = ci.laddr;
			n->raddr = ci.raddr;
			n->lport = ci.lport;
			n->rport = ci.rport;
		}
	}
}

int utcp_sk_accept(struct utcp_socks *ss, int id, struct utcp_sk_name *peer)
{
	struct sk *l = usk_get(ss, id), *c;

	if (!l)
		return -EBADF;
	if (l->kind != SK_LISTEN)
		return -EINVAL;
	if (l->aq.head == NONE)
		return -EAGAIN;
	c = &ss->sk[l->aq.head];
	usk_list_del(ss, &l->aq, c);
	c->parent = NONE;
	utcp_listen_release(ss->st, l->lid);
	if (peer)
		fill_name(ss, c, peer);
	return usk_id(ss, c);
}

int utcp_sk_connect(struct utcp_socks *ss, int id, uint32_t raddr, uint16_t rport, uint16_t lport,
		    const uint8_t next_hop[6], uint64_t now)
{
	struct sk *s = usk_get(ss, id);
	utcp_cid cid;
	int rc;

	if (!s)
		return -EBADF;
	see_time(ss, now);
	if (s->kind == SK_LISTEN)
		return -EISCONN;
	if (s->kind == SK_CONN) {
		struct utcp_conn_status cs;

		refresh(ss, s, &cs);
		if (opening(cs.state))
			return -EALREADY;
		if (s->connected)
			return -EISCONN;
		/* A failed connect: this call reports it (or ECONNABORTED once collected) and
		 * leaves the socket unconnected, ready for another attempt (Linux). */
		rc = s->err ? s->err : -ECONNABORTED;
		s->err = 0;
		utcp_close(ss->st, s->cid, now);
		sk_release_cid(ss, s);
		s->kind = SK_OPEN;
		s->gone = false;
		return rc;
	}
	rc = utcp_connect(ss->st, raddr, rport, lport, next_hop, now, &cid);
	if (rc < 0)
		return rc == -ENOBUFS ? -EAGAIN : rc;   /* no control block: Linux's EAGAIN */
	s->kind = SK_CONN;
	s->cid = cid;
	s->connected = s->gone = s->shut_rd = s->shut_wr = s->more = false;
	s->err = 0;
	ss->by_cid[UTCP_CID_INDEX(cid)] = usk_idx(ss, s);
	apply_conn_opts(ss, s, now);
	return -EINPROGRESS;
}

static int take_err(struct sk *s)
{
	int e = s->err;

	s->err = 0;
	return e;
}

static bool iov_ok(const struct iovec *iov, int iovcnt, size_t *total)
{
	int i;

	*total = 0;
	if (iovcnt < 0 || iovcnt > 1024 || (iovcnt && !iov))
		return false;
	for (i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len && !iov[i].iov_base)
			return false;
		*total += iov[i].iov_len;
	}
	return true;
}

ssize_t utcp_sk_send(struct utcp_socks *ss, int id, const struct iovec *iov, int iovcnt, int flags,
		     uint64_t now)
{
	struct sk *s = usk_get(ss, id);
	struct utcp_conn_status cs;
	size_t total, done = 0;
	bool want_cork;
	int i, pieces = 0;

	if (!s)
		return -EBADF;
	if (!iov_ok(iov, iovcnt, &total))
		return -EINVAL;
	see_time(ss, now);
	if (s->kind != SK_CONN)
		return s->err ? take_err(s) : -EPIPE;   /* Linux: EPIPE, not ENOTCONN */
	refresh(ss, s, &cs);
	if (opening(cs.state))
		return -EAGAIN;                 /* Linux waits for the handshake */
	if (s->err)
		return take_err(s);
	if (s->shut_wr || cs.fin_queued || cs.state == UTCP_CLOSED)
		return -EPIPE;
	if (!total)
		return 0;
	for (i = 0; i < iovcnt; i++)
		pieces += iov[i].iov_len > 0;
	/* MSG_MORE or TCP_CORK hold a partial segment; the pieces of one call always go
	 * out together. */
	want_cork = s->cork || (flags & (UTCP_SK_MORE | UTCP_SK_HOLD));
	utcp_set_cork(ss->st, s->cid, want_cork || pieces > 1, now);
	for (i = 0; i < iovcnt; i++) {
		ssize_t r;

		if (!iov[i].iov_len)
			continue;
		r = utcp_send(ss->st, s->cid, iov[i].iov_base, iov[i].iov_len, now);
		if (r < 0) {
			if (!done) {
				utcp_set_cork(ss->st, s->cid, want_cork, now);
				return r;
			}
			break;
		}
		done += (size_t)r;
		if ((size_t)r < iov[i].iov_len)
			break;
	}
	utcp_set_cork(ss->st, s->cid, want_cork, now);
	s->more = (flags & UTCP_SK_MORE) != 0;
	return (ssize_t)done;
}

int utcp_sk_push(struct utcp_socks *ss, int id, uint64_t now)
{
	struct sk *s = usk_get(ss, id);

	if (!s)
		return -EBADF;
	see_time(ss, now);
	if (s->kind != SK_CONN || s->gone)
		return 0;
	/* what the application itself holds (TCP_CORK, MSG_MORE) stays held */
	utcp_set_cork(ss->st, s->cid, s->cork || s->more, now);
	return 0;
}

ssize_t utcp_sk_recv(struct utcp_socks *ss, int id, const struct iovec *iov, int iovcnt, int flags,
		     uint64_t now)
{
	struct sk *s = usk_get(ss, id);
	struct utcp_conn_status cs;
	size_t total, done = 0;
	int i;

	if (!s)
		return -EBADF;
	if (!iov_ok(iov, iovcnt, &total))
		return -EINVAL;
	see_time(ss, now);
	if (s->kind == SK_LISTEN)
		return -ENOTCONN;
	if (s->kind != SK_CONN)
		return s->err ? take_err(s) : -ENOTCONN;
	refresh(ss, s, &cs);
	if (!total)
		return 0;
	if (cs.rcv_queued) {
		for (i = 0; i < iovcnt && done < cs.rcv_queued; i++) {
			ssize_t r;

			if (!iov[i].iov_len)
				continue;
			if (flags & UTCP_SK_PEEK)
				r = utcp_peek(ss->st, s->cid, iov[i].iov_base, iov[i].iov_len, done);
			else
				r = utcp_recv(ss->st, s->cid, iov[i].iov_base, iov[i].iov_len, now);
			if (r <= 0)
				break;
			done += (size_t)r;
			if ((size_t)r < iov[i].iov_len)
				break;
		}
		return (ssize_t)done;
	}
	/* Linux's order: end of stream from the peer, then a pending error, then our own
	 * shutdown or a finished connection. */
	if (cs.peer_fin)
		return 0;
	if (s->err)
		return take_err(s);
	if (s->shut_rd || cs.state == UTCP_CLOSED)
		return 0;
	return -EAGAIN;
}

int utcp_sk_shutdown(struct utcp_socks *ss, int id, int how, uint64_t now)
{
	struct sk *s = usk_get(ss, id);
	struct utcp_conn_status cs;

	if (!s)
		return -EBADF;
	if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
		return -EINVAL;
	see_time(ss, now);
	if (s->kind == SK_LISTEN) {
		/* Linux: shutting a listener's read side stops it listening */
		if (how != SHUT_WR)
			listener_stop(ss, s, now);
		return 0;
	}
	if (s->kind != SK_CONN)
		return -ENOTCONN;
	refresh(ss, s, &cs);
	/* Linux: a socket whose connection reached TIME-WAIT is closed (the time-wait entry
	 * is another object) */
	if (cs.state == UTCP_CLOSED || cs.state == UTCP_TIME_WAIT)
		return -ENOTCONN;
	if (cs.state == UTCP_SYN_SENT) {
		/* Linux disconnects a connecting socket: it can connect again, and reports
		 * ECONNRESET meanwhile */
		utcp_abort(ss->st, s->cid, now);
		sk_release_cid(ss, s);
		s->kind = SK_OPEN;
		s->err = -ECONNRESET;
		return 0;
	}
	if (how != SHUT_WR) {
		s->shut_rd = true;
		usk_mark(ss, s); /* readable now (end of stream): waiters elsewhere must hear it */
	}
	if (how != SHUT_RD) {
		s->shut_wr = true;
		utcp_shutdown(ss->st, s->cid, now);
	}
	return 0;
}

int utcp_sk_close(struct utcp_socks *ss, int id, uint64_t now)
{
	struct sk *s = usk_get(ss, id);

	if (!s)
		return -EBADF;
	see_time(ss, now);
	if (s->kind == SK_LISTEN)
		listener_stop(ss, s, now);
	else if (s->kind == SK_CONN) {
		/* unread data resets (utcp_close); so does SO_LINGER {1, 0} */
		if (s->linger == 0)
			utcp_abort(ss->st, s->cid, now);
		else
			utcp_close(ss->st, s->cid, now);
	}
	usk_free(ss, s);
	return 0;
}

/* ---- options ---- */

int utcp_sk_setopt(struct utcp_socks *ss, int id, enum utcp_sk_opt opt, int val)
{
	struct sk *s = usk_get(ss, id);
	bool conn;

	if (!s)
		return -EBADF;
	conn = s->kind == SK_CONN && !s->gone;
	switch (opt) {
	case UTCP_SO_KEEPALIVE:
		s->keepalive = val != 0;
		if (conn && s->connected)
			utcp_set_keepalive(ss->st, s->cid, s->keepalive, ss->now);
		return 0;
	case UTCP_SO_LINGER:
		s->linger = val < 0 ? -1 : val;
		return 0;
	case UTCP_SO_RCVBUF:
	case UTCP_SO_SNDBUF: {
		/* a negative value is a huge unsigned one to Linux: the cap applies */
		uint32_t req = val < 0 ? UINT32_MAX / 2 : (uint32_t)val;

		if (opt == UTCP_SO_RCVBUF)
			s->rcvbuf = buf_report(req, MIN_RCVBUF, ss->cfg->rcvbuf);
		else
			s->sndbuf = buf_report(req, MIN_SNDBUF, ss->cfg->sndbuf);
		if (conn || s->kind == SK_LISTEN)
			apply_bufcap(ss, s);
		return 0;
	}
	case UTCP_TCP_NODELAY:
		s->nodelay = val != 0;
		if (conn) {
			utcp_set_nodelay(ss->st, s->cid, s->nodelay);
			if (s->nodelay && !s->cork && !s->more) {
				/* Linux pushes what Nagle held; an uncork runs the output */
				utcp_set_cork(ss->st, s->cid, true, ss->now);
				utcp_set_cork(ss->st, s->cid, false, ss->now);
			}
		}
		return 0;
	case UTCP_TCP_CORK:
		s->cork = val != 0;
		if (conn)
			utcp_set_cork(ss->st, s->cid, s->cork || s->more, ss->now);
		return 0;
	case UTCP_TCP_KEEPIDLE:
	case UTCP_TCP_KEEPINTVL:
		if (val < 1 || val > 32767)
			return -EINVAL;
		if (opt == UTCP_TCP_KEEPIDLE)
			s->ka_idle = (uint32_t)val;
		else
			s->ka_intvl = (uint32_t)val;
		if (conn)
			utcp_set_keepalive_timing(ss->st, s->cid,
						  opt == UTCP_TCP_KEEPIDLE ? val * 1000000ull : 0,
						  opt == UTCP_TCP_KEEPINTVL ? val * 1000000ull : 0, 0,
						  ss->now);
		return 0;
	case UTCP_TCP_KEEPCNT:
		if (val < 1 || val > 127)
			return -EINVAL;
		s->ka_cnt = (uint32_t)val;
		if (conn)
			utcp_set_keepalive_timing(ss->st, s->cid, 0, 0, (uint32_t)val, ss->now);
		return 0;
	case UTCP_TCP_DEFER_ACCEPT:
		s->defer_accept = defer_round(val);
		return 0;
	case UTCP_TCP_MAXSEG:
		return -ENOPROTOOPT;    /* read only in UTCP */
	}
	return -ENOPROTOOPT;
}

int utcp_sk_getopt(struct utcp_socks *ss, int id, enum utcp_sk_opt opt, int *val)
{
	struct sk *s = usk_get(ss, id);
	const struct utcp_config *c;

	if (!s)
		return -EBADF;
	if (!val)
		return -EINVAL;
	c = ss->cfg;
	switch (opt) {
	case UTCP_SO_KEEPALIVE:
		*val = s->keepalive;
		return 0;
	case UTCP_SO_LINGER:
		*val = s->linger;
		return 0;
	case UTCP_SO_RCVBUF:
		*val = (int)(s->rcvbuf ? s->rcvbuf : c->rcvbuf);
		return 0;
	case UTCP_SO_SNDBUF:
		*val = (int)(s->sndbuf ? s->sndbuf : c->sndbuf);
		return 0;
	case UTCP_TCP_NODELAY:
		*val = s->nodelay;
		return 0;
	case UTCP_TCP_CORK:
		*val = s->cork;
		return 0;
	case UTCP_TCP_KEEPIDLE:
		*val = (int)(s->ka_idle ? s->ka_idle : c->keepalive_idle_us / 1000000u);
		return 0;
	case UTCP_TCP_KEEPINTVL:
		*val = (int)(s->ka_intvl ? s->ka_intvl : c->keepalive_intvl_us / 1000000u);
		return 0;
	case UTCP_TCP_KEEPCNT:
		*val = (int)(s->ka_cnt ? s->ka_cnt : c->keepalive_probes);
		return 0;
	case UTCP_TCP_DEFER_ACCEPT:
		*val = s->defer_accept;
		return 0;
	case UTCP_TCP_MAXSEG: {
		struct utcp_conn_info ci;

		*val = LINUX_MSS_DEFAULT;
		if (s->kind != SK_CONN || !s->connected)
			return 0;
		memset(&ci, 0, sizeof(ci));
		ci.sz = sizeof(ci);
		if (utcp_conn_info(ss->st, s->cid, &ci) == 0)
			*val = ci.snd_mss - (ci.ts_ok ? TS_OPT_LEN : 0);
		return 0;
	}
	}
	return -ENOPROTOOPT;
}

int utcp_sk_set_cc(struct utcp_socks *ss, int id, const char *name)
{
	struct sk *s = usk_get(ss, id);
	const char *cc;

	if (!s)
		return -EBADF;
	cc = utcp_cc_lookup(name);
	if (!cc)
		return -ENOENT;
	s->cc = cc;
	if (s->kind == SK_CONN && !s->gone)
		return utcp_set_cc(ss->st, s->cid, cc);
	return 0;
}

const char *utcp_sk_get_cc(struct utcp_socks *ss, int id)
{
	struct sk *s = usk_get(ss, id);
	struct utcp_conn_info ci;

	if (!s)
		return NULL;
	if (s->kind == SK_CONN) {
		memset(&ci, 0, sizeof(ci));
		ci.sz = sizeof(ci);
		if (utcp_conn_info(ss->st, s->cid, &ci) == 0)
			return ci.cc;
	}
	return s->cc ? s->cc : ss->cfg->cc;
}

/* ---- introspection ---- */

int utcp_sk_error(struct utcp_socks *ss, int id)
{
	struct sk *s = usk_get(ss, id);
	struct utcp_conn_status cs;

	if (!s)
		return -EBADF;
	if (s->kind == SK_CONN)
		refresh(ss, s, &cs);
	return take_err(s);
}

int utcp_sk_nread(struct utcp_socks *ss, int id)
{
	struct sk *s = usk_get(ss, id);
	struct utcp_conn_status cs;

	if (!s)
		return -EBADF;
	if (s->kind == SK_LISTEN)
		return -EINVAL;
	if (s->kind != SK_CONN)
		return 0;
	refresh(ss, s, &cs);
	return (int)cs.rcv_queued;
}

int utcp_sk_outq(struct utcp_socks *ss, int id)
{
	struct sk *s = usk_get(ss, id);
	struct utcp_conn_status cs;

	if (!s)
		return -EBADF;
	if (s->kind == SK_LISTEN)
		return -EINVAL;
	if (s->kind != SK_CONN)
		return 0;
	refresh(ss, s, &cs);
	return cs.state == UTCP_CLOSED ? 0 : (int)cs.snd_queued;
}

int utcp_sk_name(struct utcp_socks *ss, int id, struct utcp_sk_name *out)
{
	struct sk *s = usk_get(ss, id);

	if (!s)
		return -EBADF;
	if (!out)
		return -EINVAL;
	fill_name(ss, s, out);
	return 0;
}

int utcp_sk_info(struct utcp_socks *ss, int id, struct utcp_conn_info *info)
{
	struct sk *s = usk_get(ss, id);
	struct utcp_conn_info ci;
	size_t sz;

	if (!s)
		return -EBADF;
	if (!info || info->sz == 0)
		return -EINVAL;
	if (s->kind == SK_CONN)
		return utcp_conn_info(ss->st, s->cid, info);
	sz = info->sz < sizeof(ci) ? info->sz : sizeof(ci);
	memset(&ci, 0, sizeof(ci));
	ci.sz = sz;
	ci.state = s->kind == SK_LISTEN ? UTCP_LISTEN : UTCP_CLOSED;
	if (s->kind == SK_LISTEN) {
		ci.laddr = ss->cfg->local_ip;
		ci.lport = s->port;
	}
	ci.cc = s->cc ? s->cc : ss->cfg->cc;
	memcpy(info, &ci, sz);
	return 0;
}

bool utcp_sk_is_listener(struct utcp_socks *ss, int id)
{
	struct sk *s = usk_get(ss, id);

	return s && s->kind == SK_LISTEN;
}

int utcp_sk_next(struct utcp_socks *ss, int after)
{
	uint32_t i = after < 0 ? 0 : ((uint32_t)after & SK_IDX_MASK) + 1;

	for (; i < ss->max; i++)
		if (ss->sk[i].kind != SK_FREE && ss->sk[i].parent == NONE)
			return usk_id(ss, &ss->sk[i]);
	return -1;
}
