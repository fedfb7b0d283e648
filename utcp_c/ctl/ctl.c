/* ctl.c — libmsctl: requests to mstackd over app.sock, one at a time, each answered by one
 * reply that must match it exactly (magic, version, type, seq, length, number of fds).
 * Anything else is a protocol error, and every fd that came with it is closed here, so a
 * confused or hostile peer can neither leak descriptors into the application nor make a
 * call block past its deadline. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "mstack_ctl.h"

#define CTL_DEFAULT_RUN_DIR "/run/mstack"
#define CTL_SOCK_NAME       "app.sock"
/* Room for more fds than any reply carries, so that extra ones arrive (and are closed)
 * rather than being cut off with MSG_CTRUNC. */
#define CTL_RECV_FDS        16

_Static_assert(sizeof(((struct mstack_reply *)0)->detail) == MSTACK_DETAIL_LEN,
	       "detail length");
_Static_assert(sizeof(((struct mstack_port_open_reply *)0)->addrs) ==
		       MSTACK_MAX_ADDRS * sizeof(uint32_t),
	       "addrs length");

struct mstack_ctl {
	int fd;
	int timeout_ms;
	pid_t pid;              /* the process that connected */
	uint32_t next_seq;      /* seq of the next request */
	uint32_t unanswered;    /* oldest seq whose reply may still arrive (timeouts) */
	uint32_t daemon_version;
	uint32_t max_ports;
	int is_inbox;           /* an inbox connection: IMPORTs come in, no requests go out */
	uint32_t inbox_port;
	uint32_t last_import;   /* seq of the last IMPORT received (the daemon's seqs increase) */
	char detail[MSTACK_DETAIL_LEN];
};

/* One received message: its bytes and the fds that came with it. */
struct ctl_msg {
	union {
		struct mstack_reply r;
		uint64_t align_;
		uint8_t b[MSTACK_MSG_MAX];
	} u;
	size_t len;
	int fds[CTL_RECV_FDS];
	unsigned nfds;
};

static void ctl_set_detail(struct mstack_ctl *ctl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void ctl_set_detail(struct mstack_ctl *ctl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctl->detail, sizeof(ctl->detail), fmt, ap);
	va_end(ap);
}

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on fd until deadline (ms, CLOCK_MONOTONIC).  0 ready, -ETIMEDOUT. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		struct pollfd pfd = { .fd = fd, .events = events };

		if (left <= 0)
			return -ETIMEDOUT;
		int n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n > 0)
			return 0; /* including POLLHUP/POLLERR: the next call reports them */
	}
}

static int send_req(struct mstack_ctl *ctl, const void *buf, size_t len, int fd, int64_t deadline)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd >= 0) {
		memset(&cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf.b;
		msg.msg_controllen = sizeof(cbuf.b);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	for (;;) {
		ssize_t n = sendmsg(ctl->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n == (ssize_t)len)
			return 0;
		if (n >= 0) {
			ctl_set_detail(ctl, "request cut short");
			return -EIO;
		}
		int err = errno;
		if (err == EINTR)
			continue;
		if (err != EAGAIN && err != EWOULDBLOCK) {
			char eb[64]; /* GNU strerror_r: strerror is not thread-safe everywhere */
			ctl_set_detail(ctl, "sending the request: %s", strerror_r(err, eb, sizeof(eb)));
			return -err;
		}
		int rc = wait_fd(ctl->fd, POLLOUT, deadline);
		if (rc) {
			ctl_set_detail(ctl, "timed out sending the request");
			return rc;
		}
	}
}

/* Receive one message (any content) before deadline.  Every fd received is in m->fds, also
 * on error, for the caller to close. */
static int recv_msg(struct mstack_ctl *ctl, struct ctl_msg *m, int64_t deadline)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * CTL_RECV_FDS)];
	} cbuf;
	struct iovec iov = { .iov_base = m->u.b, .iov_len = sizeof(m->u.b) };
	struct msghdr msg;
	ssize_t n;

	m->nfds = 0;
	m->len = 0;
	for (;;) {
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = cbuf.b;
		msg.msg_controllen = sizeof(cbuf.b);
		n = recvmsg(ctl->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n >= 0)
			break;
		int err = errno;
		if (err == EINTR)
			continue;
		if (err != EAGAIN && err != EWOULDBLOCK) {
			char eb[64];
			ctl_set_detail(ctl, "receiving the reply: %s", strerror_r(err, eb, sizeof(eb)));
			return -err;
		}
		int rc = wait_fd(ctl->fd, POLLIN, deadline);
		if (rc) {
			ctl_set_detail(ctl, "timed out waiting for the reply");
			return rc;
		}
	}

	int bad_cmsg = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
			bad_cmsg = 1;
			continue;
		}
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (m->nfds < CTL_RECV_FDS)
				m->fds[m->nfds++] = fd;
			else
				close(fd); /* cannot happen: the buffer holds CTL_RECV_FDS */
		}
	}
	if (n == 0 && m->nfds == 0 && !(msg.msg_flags & MSG_TRUNC)) {
		ctl_set_detail(ctl, "the daemon closed the connection");
		return -ECONNRESET;
	}
	m->len = (size_t)n;
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		ctl_set_detail(ctl, "reply: %s truncated",
			       msg.msg_flags & MSG_TRUNC ? "message" : "control data");
		return -EPROTO;
	}
	if (bad_cmsg) {
		ctl_set_detail(ctl, "reply: unexpected control message");
		return -EPROTO;
	}
	return 0;
}

/* Did seq's reply go unanswered by an earlier call (timed out, or answered by a wrong seq)?
 * Such replies may still arrive ahead of the current one and are skipped. */
static int is_stale(const struct mstack_ctl *ctl, uint32_t seq, uint32_t cur)
{
	return seq - ctl->unanswered < cur - ctl->unanswered;
}

/* Send a request of type `type` (hdr filled in here) carrying send_fd (>= 0) and wait for
 * its reply: reply_len bytes on success with exactly want_fds fds (put in fds_out), or an
 * error reply (mstack_reply, no fd).  Returns 0, the daemon's status, or a local error. */
static int ctl_call(struct mstack_ctl *ctl, uint16_t type, void *req, size_t req_len, int send_fd,
		    void *reply, size_t reply_len, unsigned want_fds, int *fds_out)
{
	struct mstack_msg_hdr h = {
		.magic = MSTACK_PROTO_MAGIC,
		.version = MSTACK_PROTO_VERSION,
		.type = type,
		.len = (uint32_t)req_len,
	};
	struct ctl_msg m;
	int64_t deadline;
	int rc;

	ctl->detail[0] = '\0';
	if (getpid() != ctl->pid) {
		ctl_set_detail(ctl, "connection inherited from another process: connect anew");
		return -EBADFD;
	}
	if (ctl->is_inbox) {
		ctl_set_detail(ctl, "an inbox carries no requests");
		return -EINVAL;
	}
	deadline = now_ms() + ctl->timeout_ms;
	uint32_t seq = ctl->next_seq;
	h.seq = seq;
	memcpy(req, &h, sizeof(h));
	rc = send_req(ctl, req, req_len, send_fd, deadline);
	if (rc)
		return rc;
	ctl->next_seq++;

	for (;;) {
		rc = recv_msg(ctl, &m, deadline);
		if (rc) {
			close_fds(m.fds, m.nfds);
			return rc;
		}
		struct mstack_msg_hdr rh;
		if (m.len >= sizeof(rh)) {
			memcpy(&rh, m.u.b, sizeof(rh));
			if (rh.magic == MSTACK_PROTO_MAGIC && rh.seq != seq && is_stale(ctl, rh.seq, seq)) {
				close_fds(m.fds, m.nfds); /* the late reply of an earlier call */
				continue;
			}
		}
		break;
	}

	rc = -EPROTO;
	struct mstack_msg_hdr rh;
	if (m.len < sizeof(struct mstack_reply)) {
		ctl_set_detail(ctl, "reply: %zu bytes, too short", m.len);
		goto bad;
	}
	memcpy(&rh, m.u.b, sizeof(rh));
	if (rh.magic != MSTACK_PROTO_MAGIC) {
		ctl_set_detail(ctl, "reply: bad magic");
		goto bad;
	}
	if (rh.version != MSTACK_PROTO_VERSION) {
		ctl_set_detail(ctl, "reply: protocol version %u, not %u", rh.version,
			       MSTACK_PROTO_VERSION);
		goto bad;
	}
	if (rh.seq != seq) {
		ctl_set_detail(ctl, "reply: wrong seq %u, not %u", rh.seq, seq);
		goto bad; /* seq's own reply may still come: it stays unanswered */
	}
	ctl->unanswered = seq + 1;
	if (rh.type != (uint16_t)(type | MSTACK_MSG_REPLY)) {
		ctl_set_detail(ctl, "reply: wrong type %u", rh.type);
		goto bad;
	}
	if (rh.len != m.len) {
		ctl_set_detail(ctl, "reply: len field %u, %zu bytes received", rh.len, m.len);
		goto bad;
	}
	int32_t status = m.u.r.status;
	if (status != 0) {
		if (status > 0 || status < -4095) {
			ctl_set_detail(ctl, "reply: status %d is no negative errno", status);
			goto bad;
		}
		if (m.nfds) {
			ctl_set_detail(ctl, "reply: error reply carries %u fds", m.nfds);
			goto bad;
		}
		/* Error replies may be the short mstack_reply or the full reply struct. */
		char *d = m.u.r.detail;
		size_t i;
		for (i = 0; i + 1 < sizeof(ctl->detail) && d[i]; i++)
			ctl->detail[i] = (d[i] >= 0x20 && d[i] < 0x7f) ? d[i] : '?';
		ctl->detail[i] = '\0';
		return status;
	}
	if (m.len != reply_len) {
		ctl_set_detail(ctl, "reply: %zu bytes, %zu expected", m.len, reply_len);
		goto bad;
	}
	if (m.nfds != want_fds) {
		ctl_set_detail(ctl, "reply: %u fds, %u expected", m.nfds, want_fds);
		goto bad;
	}
	memcpy(reply, m.u.b, reply_len);
	for (unsigned i = 0; i < want_fds; i++)
		fds_out[i] = m.fds[i];
	return 0;
bad:
	close_fds(m.fds, m.nfds);
	return rc;
}

int mstack_ctl_connect_fd(struct mstack_ctl **out, int fd, int timeout_ms)
{
	struct mstack_ctl *ctl;
	struct mstack_hello req;
	struct mstack_hello_reply rep;
	int rc;

	if (!out || fd < 0)
		return -EINVAL;
	*out = NULL;
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->fd = fd;
	ctl->timeout_ms = timeout_ms > 0 ? timeout_ms : MSTACK_CTL_DEFAULT_TIMEOUT_MS;
	ctl->pid = getpid();
	ctl->next_seq = 1;
	ctl->unanswered = 1;

	memset(&req, 0, sizeof(req));
	req.pid = (uint32_t)ctl->pid;
	rc = ctl_call(ctl, MSTACK_MSG_HELLO, &req, sizeof(req), -1, &rep, sizeof(rep), 0, NULL);
	if (rc) {
		free(ctl);
		return rc;
	}
	ctl->daemon_version = rep.daemon_version;
	ctl->max_ports = rep.max_ports;
	*out = ctl;
	return 0;
}

int mstack_ctl_connect(struct mstack_ctl **out, const char *run_dir)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!run_dir || !*run_dir)
		run_dir = getenv("MSTACK_RUN_DIR");
	if (!run_dir || !*run_dir)
		run_dir = CTL_DEFAULT_RUN_DIR;
	int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", run_dir, CTL_SOCK_NAME);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;

	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* A non-blocking AF_UNIX connect fails with EAGAIN while the listener's backlog is
	 * full; retry for a while rather than blocking without bound. */
	int64_t deadline = now_ms() + MSTACK_CTL_DEFAULT_TIMEOUT_MS;
	for (;;) {
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		rc = -errno;
		if (rc == -EINTR)
			continue;
		if (rc != -EAGAIN || now_ms() >= deadline) {
			close(fd);
			return rc == -EAGAIN ? -ETIMEDOUT : rc;
		}
		struct timespec ts = { .tv_nsec = 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	rc = mstack_ctl_connect_fd(out, fd, 0);
	if (rc)
		close(fd);
	return rc;
}

void mstack_ctl_close(struct mstack_ctl *ctl)
{
	if (!ctl)
		return;
	close(ctl->fd);
	free(ctl);
}

int mstack_ctl_fd(const struct mstack_ctl *ctl)
{
	return ctl->fd;
}

int mstack_ctl_set_timeout(struct mstack_ctl *ctl, int timeout_ms)
{
	if (timeout_ms <= 0)
		return -EINVAL;
	ctl->timeout_ms = timeout_ms;
	return 0;
}

uint32_t mstack_ctl_daemon_version(const struct mstack_ctl *ctl)
{
	return ctl->daemon_version;
}

uint32_t mstack_ctl_max_ports(const struct mstack_ctl *ctl)
{
	return ctl->max_ports;
}

const char *mstack_ctl_last_detail(const struct mstack_ctl *ctl)
{
	return ctl->detail;
}

static int fd_is(int fd, mode_t type)
{
	struct stat st;

	return fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == type;
}

int mstack_ctl_port_open(struct mstack_ctl *ctl, const struct mstack_ctl_port_req *req,
			 struct mstack_ctl_port *out)
{
	struct mstack_ctl_port_req r = { 0 };
	struct mstack_port_open msg;
	struct mstack_port_open_reply rep;
	int fds[2] = { -1, -1 };
	int rc;

	if (!out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->umem_fd = -1;
	out->xsk_fd = -1;
	if (req) {
		if (req->sz < sizeof(uint32_t))
			return -EINVAL;
		memcpy(&r, req, req->sz < sizeof(r) ? req->sz : sizeof(r));
		if (r.flags)
			return -EINVAL;
	}
	memset(&msg, 0, sizeof(msg));
	msg.frames = r.frames;
	msg.ring_size = r.ring_size;
	rc = ctl_call(ctl, MSTACK_MSG_PORT_OPEN, &msg, sizeof(msg), -1, &rep, sizeof(rep), 2, fds);
	if (rc)
		return rc;
	if (rep.port_id > INT32_MAX || rep.n_addrs > MSTACK_MAX_ADDRS) {
		ctl_set_detail(ctl, "reply: port id %u, %u addresses", rep.port_id, rep.n_addrs);
		goto bad;
	}
	/* The UMEM is a memfd, the XSK a socket: swapped or foreign fds stop here. */
	if (!fd_is(fds[0], S_IFREG) || !fd_is(fds[1], S_IFSOCK)) {
		ctl_set_detail(ctl, "reply: fds are not a memfd and a socket");
		goto bad;
	}
	out->port_id = rep.port_id;
	out->nic_ifindex = rep.nic_ifindex;
	out->umem_fd = fds[0];
	out->xsk_fd = fds[1];
	out->geom.sz = sizeof(out->geom);
	out->geom.frame_size = rep.frame_size;
	out->geom.umem_size = rep.umem_size;
	out->geom.frame_headroom = rep.frame_headroom;
	out->geom.rx_size = rep.rx_size;
	out->geom.tx_size = rep.tx_size;
	out->geom.fill_size = rep.fill_size;
	out->geom.comp_size = rep.comp_size;
	out->geom.bind_flags = rep.bind_flags;
	out->mtu = rep.mtu;
	memcpy(out->nic_mac, rep.nic_mac, sizeof(out->nic_mac));
	out->n_addrs = rep.n_addrs;
	memcpy(out->addrs, rep.addrs, rep.n_addrs * sizeof(uint32_t));
	return (int)rep.port_id;
bad:
	close_fds(fds, 2);
	return -EPROTO;
}

/* Requests answered by a plain mstack_reply. */
static int ctl_simple(struct mstack_ctl *ctl, uint16_t type, void *req, size_t len, int fd)
{
	struct mstack_reply rep;

	return ctl_call(ctl, type, req, len, fd, &rep, sizeof(rep), 0, NULL);
}

int mstack_ctl_port_close(struct mstack_ctl *ctl, uint32_t port_id)
{
	struct mstack_port_close msg = { .port_id = port_id };

	return ctl_simple(ctl, MSTACK_MSG_PORT_CLOSE, &msg, sizeof(msg), -1);
}

int mstack_ctl_register(struct mstack_ctl *ctl, int shadow_fd, uint32_t kind, uint32_t port_id,
			struct mstack_ctl_binding *out)
{
	struct mstack_register msg = { .kind = kind, .port_id = port_id };
	struct mstack_register_reply rep;
	int rc;

	if (shadow_fd < 0)
		return -EBADF;
	rc = ctl_call(ctl, MSTACK_MSG_REGISTER, &msg, sizeof(msg), shadow_fd, &rep, sizeof(rep), 0,
		      NULL);
	if (rc)
		return rc;
	if (rep.binding_id > INT32_MAX) {
		ctl_set_detail(ctl, "reply: binding id %u", rep.binding_id);
		return -EPROTO;
	}
	if (out) {
		memset(out, 0, sizeof(*out));
		out->binding_id = rep.binding_id;
		out->proto = rep.proto;
		out->addr = rep.addr;
		out->port = rep.port;
	}
	return (int)rep.binding_id;
}

int mstack_ctl_claim(struct mstack_ctl *ctl, uint32_t binding_id, int shadow_fd)
{
	struct mstack_claim msg = { .binding_id = binding_id };

	if (shadow_fd < 0)
		return -EBADF;
	return ctl_simple(ctl, MSTACK_MSG_CLAIM, &msg, sizeof(msg), shadow_fd);
}

int mstack_ctl_release(struct mstack_ctl *ctl, uint32_t binding_id)
{
	struct mstack_claim msg = { .binding_id = binding_id };

	return ctl_simple(ctl, MSTACK_MSG_RELEASE, &msg, sizeof(msg), -1);
}

static int ctl_group(struct mstack_ctl *ctl, uint16_t type, uint32_t binding_id, uint32_t port_id)
{
	struct mstack_group_msg msg = { .binding_id = binding_id, .port_id = port_id };

	return ctl_simple(ctl, type, &msg, sizeof(msg), -1);
}

int mstack_ctl_group_join(struct mstack_ctl *ctl, uint32_t binding_id, uint32_t port_id)
{
	return ctl_group(ctl, MSTACK_MSG_GROUP_JOIN, binding_id, port_id);
}

int mstack_ctl_group_leave(struct mstack_ctl *ctl, uint32_t binding_id, uint32_t port_id)
{
	return ctl_group(ctl, MSTACK_MSG_GROUP_LEAVE, binding_id, port_id);
}

int mstack_ctl_stats_region(struct mstack_ctl *ctl, uint32_t port_id, int memfd)
{
	struct mstack_stats_region msg = { .port_id = port_id };

	if (memfd < 0)
		return -EBADF;
	return ctl_simple(ctl, MSTACK_MSG_STATS_REGION, &msg, sizeof(msg), memfd);
}

int mstack_ctl_lease(struct mstack_ctl *ctl, uint32_t port_id, uint32_t count, uint32_t addr,
		     struct mstack_ctl_lease *out)
{
	struct mstack_lease msg = { .port_id = port_id, .count = count, .addr = addr };
	struct mstack_lease_reply rep;
	int rc;

	rc = ctl_call(ctl, MSTACK_MSG_LEASE, &msg, sizeof(msg), -1, &rep, sizeof(rep), 0, NULL);
	if (rc)
		return rc;
	if (rep.lease_id > INT32_MAX || rep.count == 0 ||
	    (uint32_t)rep.first + rep.count - 1 > 65535) {
		ctl_set_detail(ctl, "reply: lease %u of %u ports from %u", rep.lease_id, rep.count,
			       rep.first);
		return -EPROTO;
	}
	if (out) {
		out->lease_id = rep.lease_id;
		out->addr = rep.addr;
		out->first = rep.first;
		out->count = rep.count;
	}
	return (int)rep.lease_id;
}

int mstack_ctl_unlease(struct mstack_ctl *ctl, uint32_t lease_id)
{
	struct mstack_unlease msg = { .lease_id = lease_id };

	return ctl_simple(ctl, MSTACK_MSG_UNLEASE, &msg, sizeof(msg), -1);
}


/* ---- Connection hand-off within a listen group ------------------------------------------- */

_Static_assert(sizeof(struct mstack_handoff) <= MSTACK_MSG_MAX, "HANDOFF fits a message");
_Static_assert(sizeof(struct mstack_import) <= MSTACK_MSG_MAX, "IMPORT fits a message");
_Static_assert(sizeof(((struct mstack_handoff *)0)->flows) ==
		       MSTACK_HANDOFF_MAX_FLOWS * sizeof(struct mstack_handoff_flow),
	       "flows length");

#define CTL_BLOB_SEALS (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK)
/* On top of the daemon's own bound on a hand-off: the reply's way back, a loaded daemon. */
#define CTL_HANDOFF_MARGIN_MS 2000

int mstack_ctl_blob_memfd(const void *buf, size_t len)
{
	const char *p = buf;
	size_t done = 0;
	int fd, err;

	if (!buf && len)
		return -EINVAL;
	if (len > MSTACK_HANDOFF_MAX_BLOB)
		return -EMSGSIZE;
	fd = memfd_create("mstack-handoff", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t n = write(fd, p + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		done += (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS, CTL_BLOB_SEALS | F_SEAL_SEAL) < 0)
		goto fail;
	return fd;
fail:
	err = errno;
	close(fd);
	return -err;
}

int mstack_ctl_handoff(struct mstack_ctl *ctl, uint32_t binding_id, uint32_t port_id,
		       const struct mstack_handoff_flow *flows, uint32_t n, int memfd,
		       uint32_t *target_port)
{
	struct mstack_handoff msg;
	struct mstack_handoff_reply rep;
	int rc, saved;

	if (target_port)
		*target_port = 0;
	if (!ctl || !flows || n == 0 || n > MSTACK_HANDOFF_MAX_FLOWS)
		return -EINVAL;
	if (memfd < 0)
		return -EBADF;
	memset(&msg, 0, sizeof(msg));
	msg.binding_id = binding_id;
	msg.port_id = port_id;
	msg.n_flows = n;
	memcpy(msg.flows, flows, n * sizeof(*flows));
	/* The daemon answers once a member adopted the flows or none could: up to
	 * MSTACK_HANDOFF_TIMEOUT_MS.  A shorter per-request timeout would give up on a reply
	 * that is still coming — and the flows it moved. */
	saved = ctl->timeout_ms;
	if (ctl->timeout_ms < MSTACK_HANDOFF_TIMEOUT_MS + CTL_HANDOFF_MARGIN_MS)
		ctl->timeout_ms = MSTACK_HANDOFF_TIMEOUT_MS + CTL_HANDOFF_MARGIN_MS;
	rc = ctl_call(ctl, MSTACK_MSG_HANDOFF, &msg, sizeof(msg), memfd, &rep, sizeof(rep), 0,
		      NULL);
	ctl->timeout_ms = saved;
	if (rc)
		return rc;
	if (rep.n_moved > n || rep.target_port > INT32_MAX ||
	    (rep.n_moved && (rep.target_port == 0 || rep.target_port == port_id))) {
		ctl_set_detail(ctl, "reply: %u of %u flows moved to port %u", rep.n_moved, n,
			       rep.target_port);
		return -EPROTO;
	}
	if (target_port)
		*target_port = rep.n_moved ? rep.target_port : 0;
	return (int)rep.n_moved;
}

int mstack_ctl_inbox_open(struct mstack_ctl **out, const char *run_dir, uint32_t port_id)
{
	struct mstack_ctl *ib;
	struct mstack_inbox msg = { .port_id = port_id };
	int rc;

	if (!out)
		return -EINVAL;
	*out = NULL;
	rc = mstack_ctl_connect(&ib, run_dir);
	if (rc)
		return rc;
	rc = ctl_simple(ib, MSTACK_MSG_INBOX, &msg, sizeof(msg), -1);
	if (rc) {
		mstack_ctl_close(ib);
		return rc;
	}
	ib->is_inbox = 1;
	ib->inbox_port = port_id;
	*out = ib;
	return 0;
}

/* Is fd a sealed memfd as HANDOFF requires (the daemon checked; trust nothing)? */
static int is_sealed_blob(int fd)
{
	struct stat st;
	int seals;

	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MSTACK_HANDOFF_MAX_BLOB)
		return 0;
	seals = fcntl(fd, F_GET_SEALS);
	return seals >= 0 && (seals & CTL_BLOB_SEALS) == CTL_BLOB_SEALS;
}

int mstack_ctl_inbox_recv(struct mstack_ctl *ib, struct mstack_ctl_import *out)
{
	struct mstack_import imp;
	struct ctl_msg m;
	int rc;

	if (!ib || !out)
		return -EINVAL;
	out->memfd = -1;
	ib->detail[0] = '\0';
	if (getpid() != ib->pid) {
		ctl_set_detail(ib, "connection inherited from another process: connect anew");
		return -EBADFD;
	}
	if (!ib->is_inbox) {
		ctl_set_detail(ib, "not an inbox");
		return -EINVAL;
	}
	rc = recv_msg(ib, &m, now_ms()); /* a deadline already past: never waits */
	if (rc == -ETIMEDOUT) {
		ib->detail[0] = '\0';
		return 0;
	}
	if (rc)
		goto bad;
	rc = -EPROTO;
	if (m.len != sizeof(imp)) {
		ctl_set_detail(ib, "IMPORT: %zu bytes, %zu expected", m.len, sizeof(imp));
		goto bad;
	}
	memcpy(&imp, m.u.b, sizeof(imp));
	if (imp.hdr.magic != MSTACK_PROTO_MAGIC || imp.hdr.version != MSTACK_PROTO_VERSION ||
	    imp.hdr.type != MSTACK_MSG_IMPORT || imp.hdr.len != m.len) {
		ctl_set_detail(ib, "IMPORT: bad header (type %u, version %u, len %u)", imp.hdr.type,
			       imp.hdr.version, imp.hdr.len);
		goto bad;
	}
	if (imp.hdr.seq - ib->last_import - 1 > INT32_MAX) { /* not after the last one */
		ctl_set_detail(ib, "IMPORT: seq %u after %u", imp.hdr.seq, ib->last_import);
		goto bad;
	}
	if (imp.n_flows == 0 || imp.n_flows > MSTACK_HANDOFF_MAX_FLOWS ||
	    imp.port_id != ib->inbox_port) {
		ctl_set_detail(ib, "IMPORT: %u flows for port %u", imp.n_flows, imp.port_id);
		goto bad;
	}
	if (m.nfds != 1 || !is_sealed_blob(m.fds[0])) {
		ctl_set_detail(ib, "IMPORT: %u fds, not one sealed memfd", m.nfds);
		goto bad;
	}
	ib->last_import = imp.hdr.seq;
	memset(out, 0, sizeof(*out));
	out->seq = imp.hdr.seq;
	out->binding_id = imp.binding_id;
	out->port_id = imp.port_id;
	out->n = imp.n_flows;
	memcpy(out->flows, imp.flows, imp.n_flows * sizeof(imp.flows[0]));
	out->memfd = m.fds[0];
	return 1;
bad:
	close_fds(m.fds, m.nfds);
	return rc;
}

int mstack_ctl_inbox_reply(struct mstack_ctl *ib, uint32_t seq, int32_t status,
			   uint32_t n_imported)
{
	struct mstack_import_reply rep;

	if (!ib)
		return -EINVAL;
	ib->detail[0] = '\0';
	if (getpid() != ib->pid) {
		ctl_set_detail(ib, "connection inherited from another process: connect anew");
		return -EBADFD;
	}
	if (!ib->is_inbox || status > 0 || status < -4095 || (status < 0 && n_imported) ||
	    n_imported > MSTACK_HANDOFF_MAX_FLOWS)
		return -EINVAL;
	memset(&rep, 0, sizeof(rep));
	rep.r.hdr.magic = MSTACK_PROTO_MAGIC;
	rep.r.hdr.version = MSTACK_PROTO_VERSION;
	rep.r.hdr.type = (uint16_t)(MSTACK_MSG_IMPORT | MSTACK_MSG_REPLY);
	rep.r.hdr.len = sizeof(rep);
	rep.r.hdr.seq = seq;
	rep.r.status = status;
	rep.n_imported = n_imported;
	return send_req(ib, &rep, sizeof(rep), -1, now_ms() + ib->timeout_ms);
}
