/* test_ctl.c — libmsctl against a scripted fake daemon: a forked child on the other end of a
 * SOCK_SEQPACKET socketpair that checks each request and answers it well, with an error, or
 * malformed.  Every case also checks that the application's fd table ends as it began (fds
 * in bad replies are closed, none leak).  No privileges, no daemon. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "mstack_ctl.h"

/* -- the fake daemon (runs in the child) ------------------------------------------------ */

struct req {
	union {
		struct mstack_msg_hdr h;
		uint64_t align_;
		uint8_t b[MSTACK_MSG_MAX];
	} u;
	size_t len;
	int fds[8];
	unsigned nfds;
};

#define CHILD_ASSERT(cond)                                                                \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "fake daemon: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			_exit(3);                                                         \
		}                                                                         \
	} while (0)

/* Receive one request; 0 when the client closed. */
static int frecv(int fd, struct req *r)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * 8)];
	} cbuf;
	struct iovec iov = { .iov_base = r->u.b, .iov_len = sizeof(r->u.b) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.b,
			      .msg_controllen = sizeof(cbuf.b) };
	ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);

	CHILD_ASSERT(n >= 0);
	CHILD_ASSERT(!(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)));
	r->len = (size_t)n;
	r->nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		CHILD_ASSERT(c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS);
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k && r->nfds < 8; i++)
			memcpy(&r->fds[r->nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
	}
	return n > 0;
}

/* Receive a request and check its header, size and fd count. */
static uint32_t want_seq = 1; /* per connection: fserve_hello() resets it */

static void fexpect(int fd, struct req *r, uint16_t type, size_t len, unsigned nfds)
{
	CHILD_ASSERT(frecv(fd, r));
	CHILD_ASSERT(r->len == len);
	CHILD_ASSERT(r->u.h.magic == MSTACK_PROTO_MAGIC);
	CHILD_ASSERT(r->u.h.version == MSTACK_PROTO_VERSION);
	CHILD_ASSERT(r->u.h.type == type);
	CHILD_ASSERT(r->u.h.len == len);
	CHILD_ASSERT(r->u.h.seq == want_seq);
	CHILD_ASSERT(r->nfds == nfds);
	want_seq++;
}

static void fsend(int fd, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int) * 8)];
	} cbuf;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		memset(&cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf.b;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	CHILD_ASSERT(sendmsg(fd, &msg, MSG_NOSIGNAL) == (ssize_t)len);
}

/* Fill in the reply header for request r (len = reply's size) and send it. */
static void freply(int fd, const struct req *r, void *reply, size_t len, const int *fds,
		   unsigned nfds)
{
	struct mstack_msg_hdr h = {
		.magic = MSTACK_PROTO_MAGIC,
		.version = MSTACK_PROTO_VERSION,
		.type = (uint16_t)(r->u.h.type | MSTACK_MSG_REPLY),
		.len = (uint32_t)len,
		.seq = r->u.h.seq,
	};
	memcpy(reply, &h, sizeof(h));
	fsend(fd, reply, len, fds, nfds);
}

static void freply_ok(int fd, const struct req *r)
{
	struct mstack_reply rep = { .status = 0 };

	freply(fd, r, &rep, sizeof(rep), NULL, 0);
}

static void freply_err(int fd, const struct req *r, int status, const char *detail)
{
	struct mstack_reply rep = { .status = status };

	snprintf(rep.detail, sizeof(rep.detail), "%s", detail);
	freply(fd, r, &rep, sizeof(rep), NULL, 0);
}

static void fserve_hello(int fd)
{
	struct req r;
	struct mstack_hello h;
	struct mstack_hello_reply rep = { .daemon_version = 7, .max_ports = 250 };

	want_seq = 1;
	fexpect(fd, &r, MSTACK_MSG_HELLO, sizeof(h), 0);
	memcpy(&h, r.u.b, sizeof(h));
	CHILD_ASSERT(h.pid == (uint32_t)getppid());
	CHILD_ASSERT(h.flags == 0);
	freply(fd, &r, &rep, sizeof(rep), NULL, 0);
}

/* A good PORT_OPEN reply: a memfd for the UMEM and a socket standing in for the XSK. */
static void fill_port_reply(struct mstack_port_open_reply *rep, int fds[2])
{
	memset(rep, 0, sizeof(*rep));
	rep->port_id = 42;
	rep->nic_ifindex = 3;
	rep->umem_size = 8u << 20;
	rep->frame_size = 2048;
	rep->frame_headroom = 0;
	rep->rx_size = rep->tx_size = rep->comp_size = 2048;
	rep->fill_size = 4096;
	rep->bind_flags = 2;
	rep->mtu = 1500;
	memcpy(rep->nic_mac, "\x02\x00\x00\xaa\xbb\xcc", 6);
	rep->n_addrs = 2;
	rep->addrs[0] = htonl(0x0a000001);
	rep->addrs[1] = htonl(0xc0a80101);
	fds[0] = memfd_create("umem", MFD_CLOEXEC);
	fds[1] = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CHILD_ASSERT(fds[0] >= 0 && fds[1] >= 0);
}

static void fserve_port_open(int fd)
{
	struct req r;
	struct mstack_port_open_reply rep;
	int fds[2];

	fexpect(fd, &r, MSTACK_MSG_PORT_OPEN, sizeof(struct mstack_port_open), 0);
	fill_port_reply(&rep, fds);
	freply(fd, &r, &rep, sizeof(rep), fds, 2);
	close(fds[0]);
	close(fds[1]);
}

static void fserve_port_close(int fd, uint32_t port_id)
{
	struct req r;
	struct mstack_port_close m;

	fexpect(fd, &r, MSTACK_MSG_PORT_CLOSE, sizeof(m), 0);
	memcpy(&m, r.u.b, sizeof(m));
	CHILD_ASSERT(m.port_id == port_id);
	freply_ok(fd, &r);
}

/* -- the application side ---------------------------------------------------------------- */

typedef void (*fake_fn)(int fd);

struct fake {
	pid_t pid;
	int fd;      /* the application's end */
	int nfd0;    /* fds open before the fake started */
	struct mstack_ctl *ctl;
};

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* Start a fake daemon running fn after HELLO (hello: serve HELLO first) and connect to it. */
static void fake_start_raw(struct fake *f, fake_fn fn, int hello)
{
	int sv[2];

	f->nfd0 = count_fds();
	f->ctl = NULL;
	CHECK_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	fflush(NULL);
	f->pid = fork();
	if (f->pid == 0) {
		close(sv[0]);
		if (hello)
			fserve_hello(sv[1]);
		fn(sv[1]);
		_exit(0);
	}
	close(sv[1]);
	f->fd = sv[0];
}

static void fake_start(struct fake *f, fake_fn fn)
{
	fake_start_raw(f, fn, 1);
	CHECK_EQ(mstack_ctl_connect_fd(&f->ctl, f->fd, 2000), 0);
	CHECK(f->ctl != NULL);
	if (f->ctl) {
		CHECK_EQ(mstack_ctl_fd(f->ctl), f->fd);
		CHECK_EQ(mstack_ctl_daemon_version(f->ctl), 7);
		CHECK_EQ(mstack_ctl_max_ports(f->ctl), 250);
		CHECK(!strcmp(mstack_ctl_last_detail(f->ctl), ""));
	}
}

/* Close the connection, reap the fake (it must have found every request as expected) and
 * check that no fd was left behind. */
static void fake_finish(struct fake *f)
{
	int st = 0;

	if (f->ctl)
		mstack_ctl_close(f->ctl);
	else
		close(f->fd);
	CHECK_EQ(waitpid(f->pid, &st, 0), f->pid);
	CHECK(WIFEXITED(st));
	CHECK_EQ(WEXITSTATUS(st), 0);
	CHECK_EQ(count_fds(), f->nfd0);
}

static int64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* -- good replies -------------------------------------------------------------------------- */

static void fake_nothing(int fd)
{
	struct req r;

	CHILD_ASSERT(!frecv(fd, &r)); /* the client closes without a request */
}

static void test_hello(void)
{
	struct fake f;

	fake_start(&f, fake_nothing);
	fake_finish(&f);
}

static void fake_port_open_twice(int fd)
{
	struct req r;
	struct mstack_port_open m;
	struct mstack_port_open_reply rep;
	int fds[2];

	fexpect(fd, &r, MSTACK_MSG_PORT_OPEN, sizeof(m), 0);
	memcpy(&m, r.u.b, sizeof(m));
	CHILD_ASSERT(m.frames == 0 && m.ring_size == 0 && m.flags == 0 && m.pad == 0);
	fill_port_reply(&rep, fds);
	freply(fd, &r, &rep, sizeof(rep), fds, 2);
	close(fds[0]);
	close(fds[1]);

	fexpect(fd, &r, MSTACK_MSG_PORT_OPEN, sizeof(m), 0);
	memcpy(&m, r.u.b, sizeof(m));
	CHILD_ASSERT(m.frames == 1024 && m.ring_size == 512 && m.flags == 0);
	fill_port_reply(&rep, fds);
	rep.port_id = 43;
	rep.n_addrs = 0;
	freply(fd, &r, &rep, sizeof(rep), fds, 2);
	close(fds[0]);
	close(fds[1]);
	fserve_port_close(fd, 42);
	fserve_port_close(fd, 43);
}

static void test_port_open(void)
{
	struct fake f;
	struct mstack_ctl_port p, q;
	struct mstack_ctl_port_req req = { .sz = sizeof(req), .frames = 1024, .ring_size = 512 };
	struct stat st;

	fake_start(&f, fake_port_open_twice);
	CHECK_EQ(mstack_ctl_port_open(f.ctl, NULL, &p), 42);
	CHECK_EQ(p.port_id, 42);
	CHECK_EQ(p.nic_ifindex, 3);
	CHECK_EQ(p.geom.sz, sizeof(p.geom));
	CHECK_EQ(p.geom.frame_size, 2048);
	CHECK_EQ(p.geom.umem_size, 8u << 20);
	CHECK_EQ(p.geom.frame_headroom, 0);
	CHECK_EQ(p.geom.rx_size, 2048);
	CHECK_EQ(p.geom.tx_size, 2048);
	CHECK_EQ(p.geom.fill_size, 4096);
	CHECK_EQ(p.geom.comp_size, 2048);
	CHECK_EQ(p.geom.bind_flags, 2);
	CHECK_EQ(p.geom.rx_frames, 0);
	CHECK_EQ(p.geom.flags, 0);
	CHECK_EQ(p.mtu, 1500);
	CHECK(!memcmp(p.nic_mac, "\x02\x00\x00\xaa\xbb\xcc", 6));
	CHECK_EQ(p.n_addrs, 2);
	CHECK_EQ(p.addrs[0], htonl(0x0a000001));
	CHECK_EQ(p.addrs[1], htonl(0xc0a80101));
	CHECK(fstat(p.umem_fd, &st) == 0 && S_ISREG(st.st_mode));
	CHECK(fstat(p.xsk_fd, &st) == 0 && S_ISSOCK(st.st_mode));
	CHECK(fcntl(p.umem_fd, F_GETFD) & FD_CLOEXEC);
	CHECK(fcntl(p.xsk_fd, F_GETFD) & FD_CLOEXEC);
	CHECK_EQ(count_fds(), f.nfd0 + 3);

	CHECK_EQ(mstack_ctl_port_open(f.ctl, &req, &q), 43);
	CHECK_EQ(q.n_addrs, 0);
	CHECK_EQ(mstack_ctl_port_close(f.ctl, 42), 0);
	CHECK_EQ(mstack_ctl_port_close(f.ctl, 43), 0);
	close(p.umem_fd);
	close(p.xsk_fd);
	close(q.umem_fd);
	close(q.xsk_fd);
	fake_finish(&f);
}

/* The shadow socket the application registers; the fake checks it is the same socket. */
static int shadow_fd = -1;
static struct sockaddr_in shadow_addr;

static int make_shadow(void)
{
	socklen_t alen = sizeof(shadow_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(&shadow_addr, 0, sizeof(shadow_addr));
	shadow_addr.sin_family = AF_INET;
	shadow_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(fd >= 0);
	CHECK_EQ(bind(fd, (struct sockaddr *)&shadow_addr, sizeof(shadow_addr)), 0);
	CHECK_EQ(listen(fd, 8), 0);
	CHECK_EQ(getsockname(fd, (struct sockaddr *)&shadow_addr, &alen), 0);
	return fd;
}

static void fcheck_shadow(const struct req *r)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int acc = 0;
	socklen_t olen = sizeof(acc);

	CHILD_ASSERT(r->nfds == 1);
	CHILD_ASSERT(getsockname(r->fds[0], (struct sockaddr *)&a, &alen) == 0);
	CHILD_ASSERT(a.sin_port == shadow_addr.sin_port);
	CHILD_ASSERT(a.sin_addr.s_addr == shadow_addr.sin_addr.s_addr);
	CHILD_ASSERT(getsockopt(r->fds[0], SOL_SOCKET, SO_ACCEPTCONN, &acc, &olen) == 0 && acc);
}

static void fake_bindings(int fd)
{
	struct req r;
	struct mstack_register reg;
	struct mstack_register_reply rep;
	struct mstack_claim cl;
	struct mstack_group_msg g;
	struct mstack_stats_region sr;
	struct stat st;

	fexpect(fd, &r, MSTACK_MSG_REGISTER, sizeof(reg), 1);
	memcpy(&reg, r.u.b, sizeof(reg));
	CHILD_ASSERT(reg.kind == MSTACK_REG_LISTEN && reg.port_id == 42);
	fcheck_shadow(&r);
	close(r.fds[0]);
	memset(&rep, 0, sizeof(rep));
	rep.binding_id = 9;
	rep.proto = 6;
	rep.addr = shadow_addr.sin_addr.s_addr;
	rep.port = shadow_addr.sin_port;
	freply(fd, &r, &rep, sizeof(rep), NULL, 0);

	fexpect(fd, &r, MSTACK_MSG_CLAIM, sizeof(cl), 1);
	memcpy(&cl, r.u.b, sizeof(cl));
	CHILD_ASSERT(cl.binding_id == 9 && cl.pad == 0);
	fcheck_shadow(&r);
	close(r.fds[0]);
	freply_ok(fd, &r);

	fexpect(fd, &r, MSTACK_MSG_GROUP_JOIN, sizeof(g), 0);
	memcpy(&g, r.u.b, sizeof(g));
	CHILD_ASSERT(g.binding_id == 9 && g.port_id == 42);
	freply_ok(fd, &r);

	fexpect(fd, &r, MSTACK_MSG_STATS_REGION, sizeof(sr), 1);
	memcpy(&sr, r.u.b, sizeof(sr));
	CHILD_ASSERT(sr.port_id == 42);
	CHILD_ASSERT(fstat(r.fds[0], &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 4096);
	close(r.fds[0]);
	freply_ok(fd, &r);

	fexpect(fd, &r, MSTACK_MSG_GROUP_LEAVE, sizeof(g), 0);
	memcpy(&g, r.u.b, sizeof(g));
	CHILD_ASSERT(g.binding_id == 9 && g.port_id == 42);
	freply_ok(fd, &r);

	fexpect(fd, &r, MSTACK_MSG_RELEASE, sizeof(cl), 0);
	memcpy(&cl, r.u.b, sizeof(cl));
	CHILD_ASSERT(cl.binding_id == 9);
	freply_ok(fd, &r);

	fexpect(fd, &r, MSTACK_MSG_REGISTER, sizeof(reg), 1);
	memcpy(&reg, r.u.b, sizeof(reg));
	CHILD_ASSERT(reg.kind == MSTACK_REG_CONNECT && reg.port_id == 42);
	close(r.fds[0]);
	memset(&rep, 0, sizeof(rep));
	rep.binding_id = 10;
	rep.proto = 6;
	freply(fd, &r, &rep, sizeof(rep), NULL, 0);
}

static void test_bindings(void)
{
	struct fake f;
	struct mstack_ctl_binding b;
	int memfd = memfd_create("stats", MFD_CLOEXEC);

	CHECK(memfd >= 0);
	CHECK_EQ(ftruncate(memfd, 4096), 0);
	shadow_fd = make_shadow();
	fake_start(&f, fake_bindings);
	CHECK_EQ(mstack_ctl_register(f.ctl, shadow_fd, MSTACK_REG_LISTEN, 42, &b), 9);
	CHECK_EQ(b.binding_id, 9);
	CHECK_EQ(b.proto, 6);
	CHECK_EQ(b.addr, shadow_addr.sin_addr.s_addr);
	CHECK_EQ(b.port, shadow_addr.sin_port);
	CHECK_EQ(mstack_ctl_claim(f.ctl, 9, shadow_fd), 0);
	CHECK_EQ(mstack_ctl_group_join(f.ctl, 9, 42), 0);
	CHECK_EQ(mstack_ctl_stats_region(f.ctl, 42, memfd), 0);
	CHECK_EQ(mstack_ctl_group_leave(f.ctl, 9, 42), 0);
	CHECK_EQ(mstack_ctl_release(f.ctl, 9), 0);
	CHECK_EQ(mstack_ctl_register(f.ctl, shadow_fd, MSTACK_REG_CONNECT, 42, NULL), 10);
	/* the fds sent are still the caller's */
	CHECK(fcntl(shadow_fd, F_GETFD) >= 0);
	CHECK(fcntl(memfd, F_GETFD) >= 0);
	fake_finish(&f);
	close(shadow_fd);
	close(memfd);
}

/* Argument checks that never reach the daemon. */
static void test_bad_args(void)
{
	struct fake f;
	struct mstack_ctl_port p;
	struct mstack_ctl_port_req req = { .sz = sizeof(req), .flags = 1 };

	fake_start(&f, fake_nothing);
	CHECK_EQ(mstack_ctl_register(f.ctl, -1, MSTACK_REG_LISTEN, 0, NULL), -EBADF);
	CHECK_EQ(mstack_ctl_claim(f.ctl, 1, -1), -EBADF);
	CHECK_EQ(mstack_ctl_stats_region(f.ctl, 1, -1), -EBADF);
	CHECK_EQ(mstack_ctl_set_timeout(f.ctl, 0), -EINVAL);
	CHECK_EQ(mstack_ctl_port_open(f.ctl, &req, &p), -EINVAL);
	CHECK_EQ(p.umem_fd, -1);
	CHECK_EQ(p.xsk_fd, -1);
	req.sz = 0;
	CHECK_EQ(mstack_ctl_port_open(f.ctl, &req, &p), -EINVAL);
	CHECK_EQ(mstack_ctl_port_open(f.ctl, NULL, NULL), -EINVAL);
	CHECK_EQ(mstack_ctl_connect_fd(NULL, f.fd, 0), -EINVAL);
	fake_finish(&f);
}

/* -- error replies -------------------------------------------------------------------------- */

static void fake_errors(int fd)
{
	struct req r;
	struct mstack_port_open_reply full;
	char detail[MSTACK_DETAIL_LEN];

	fexpect(fd, &r, MSTACK_MSG_REGISTER, sizeof(struct mstack_register), 1);
	close(r.fds[0]);
	freply_err(fd, &r, -EADDRINUSE, "tcp 0.0.0.0:8080 is held by the kernel");

	/* an error as the full reply struct */
	fexpect(fd, &r, MSTACK_MSG_PORT_OPEN, sizeof(struct mstack_port_open), 0);
	memset(&full, 0, sizeof(full));
	full.r.status = -ENOSPC;
	snprintf(full.r.detail, sizeof(full.r.detail), "250 ports open");
	freply(fd, &r, &full, sizeof(full), NULL, 0);

	fserve_port_close(fd, 1); /* a success clears the detail */

	/* detail neither terminated nor printable: cut and cleaned */
	fexpect(fd, &r, MSTACK_MSG_GROUP_JOIN, sizeof(struct mstack_group_msg), 0);
	memset(detail, 'x', sizeof(detail));
	detail[0] = '\n';
	detail[1] = '\x1b';
	{
		struct mstack_reply rep = { .status = -EPERM };
		memcpy(rep.detail, detail, sizeof(detail));
		freply(fd, &r, &rep, sizeof(rep), NULL, 0);
	}
	/* an empty detail */
	fexpect(fd, &r, MSTACK_MSG_GROUP_LEAVE, sizeof(struct mstack_group_msg), 0);
	freply_err(fd, &r, -ENOENT, "");
}

static void test_error_replies(void)
{
	struct fake f;
	struct mstack_ctl_port p;
	struct mstack_ctl_binding b;
	const char *d;

	shadow_fd = make_shadow();
	fake_start(&f, fake_errors);
	CHECK_EQ(mstack_ctl_register(f.ctl, shadow_fd, MSTACK_REG_LISTEN, 0, &b), -EADDRINUSE);
	CHECK(!strcmp(mstack_ctl_last_detail(f.ctl), "tcp 0.0.0.0:8080 is held by the kernel"));
	CHECK_EQ(mstack_ctl_port_open(f.ctl, NULL, &p), -ENOSPC);
	CHECK(!strcmp(mstack_ctl_last_detail(f.ctl), "250 ports open"));
	CHECK_EQ(p.umem_fd, -1);
	CHECK_EQ(p.xsk_fd, -1);
	CHECK_EQ(mstack_ctl_port_close(f.ctl, 1), 0);
	CHECK(!strcmp(mstack_ctl_last_detail(f.ctl), ""));
	CHECK_EQ(mstack_ctl_group_join(f.ctl, 1, 1), -EPERM);
	d = mstack_ctl_last_detail(f.ctl);
	CHECK_EQ(strlen(d), MSTACK_DETAIL_LEN - 1);
	CHECK(d[0] == '?' && d[1] == '?' && d[2] == 'x');
	CHECK_EQ(mstack_ctl_group_leave(f.ctl, 1, 1), -ENOENT);
	CHECK(!strcmp(mstack_ctl_last_detail(f.ctl), ""));
	fake_finish(&f);
	close(shadow_fd);
}

static void fake_hello_refused(int fd)
{
	struct req r;

	fexpect(fd, &r, MSTACK_MSG_HELLO, sizeof(struct mstack_hello), 0);
	freply_err(fd, &r, -EPERM, "pid does not match SO_PEERCRED");
}

static void test_hello_refused(void)
{
	struct fake f;

	want_seq = 1;
	fake_start_raw(&f, fake_hello_refused, 0);
	CHECK_EQ(mstack_ctl_connect_fd(&f.ctl, f.fd, 2000), -EPERM);
	CHECK(f.ctl == NULL);
	CHECK(fcntl(f.fd, F_GETFD) >= 0); /* not taken on failure */
	fake_finish(&f);
}

/* -- malformed replies ------------------------------------------------------------------------ */

enum bad {
	BAD_MAGIC,
	BAD_VERSION,
	BAD_SEQ,
	BAD_TYPE,
	BAD_REPLY_OF_OTHER_TYPE,   /* a well-formed reply of another request type */
	BAD_SHORT_HDR,             /* 10 bytes */
	BAD_SHORT,                 /* only a struct mstack_reply, status 0 */
	BAD_LONG,                  /* 8 bytes more, len field agreeing */
	BAD_LEN_FIELD,             /* len field says less than was sent */
	BAD_OVERSIZE,              /* larger than MSTACK_MSG_MAX, with fds */
	BAD_EMPTY,                 /* a zero-length datagram carrying fds */
	BAD_NO_FDS,
	BAD_ONE_FD,
	BAD_EXTRA_FDS,             /* 2 + 3 */
	BAD_SWAPPED_FDS,
	BAD_ERROR_WITH_FDS,
	BAD_POSITIVE_STATUS,
	BAD_HUGE_STATUS,
	BAD_N_ADDRS,
	BAD_PORT_ID,
	BAD_COUNT
};

static const char *bad_names[BAD_COUNT] = {
	"magic", "version", "seq", "type", "reply_of_other_type", "short_hdr", "short", "long",
	"len_field", "oversize", "empty", "no_fds", "one_fd", "extra_fds", "swapped_fds",
	"error_with_fds", "positive_status", "huge_status", "n_addrs", "port_id",
};

static enum bad bad_case;

/* Answer PORT_OPEN with the malformed reply, then serve PORT_CLOSE well. */
static void fake_malformed(int fd)
{
	struct req r;
	union {
		struct mstack_port_open_reply rep;
		uint8_t b[MSTACK_MSG_MAX + 64];
	} u;
	size_t len = sizeof(u.rep);
	int fds[5];
	unsigned nfds = 2;

	fexpect(fd, &r, MSTACK_MSG_PORT_OPEN, sizeof(struct mstack_port_open), 0);
	memset(&u, 0, sizeof(u));
	fill_port_reply(&u.rep, fds);
	for (int i = 2; i < 5; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	u.rep.r.hdr = (struct mstack_msg_hdr){
		.magic = MSTACK_PROTO_MAGIC,
		.version = MSTACK_PROTO_VERSION,
		.type = MSTACK_MSG_PORT_OPEN | MSTACK_MSG_REPLY,
		.len = (uint32_t)len,
		.seq = r.u.h.seq,
	};
	switch (bad_case) {
	case BAD_MAGIC:
		u.rep.r.hdr.magic ^= 1;
		break;
	case BAD_VERSION:
		u.rep.r.hdr.version = MSTACK_PROTO_VERSION + 1;
		break;
	case BAD_SEQ:
		u.rep.r.hdr.seq += 5;
		break;
	case BAD_TYPE:
		u.rep.r.hdr.type = MSTACK_MSG_PORT_OPEN;
		break;
	case BAD_REPLY_OF_OTHER_TYPE:
		u.rep.r.hdr.type = MSTACK_MSG_PORT_CLOSE | MSTACK_MSG_REPLY;
		len = u.rep.r.hdr.len = sizeof(struct mstack_reply);
		nfds = 0;
		break;
	case BAD_SHORT_HDR:
		len = 10;
		break;
	case BAD_SHORT:
		len = u.rep.r.hdr.len = sizeof(struct mstack_reply);
		break;
	case BAD_LONG:
		len = u.rep.r.hdr.len = sizeof(u.rep) + 8;
		break;
	case BAD_LEN_FIELD:
		u.rep.r.hdr.len -= 4;
		break;
	case BAD_OVERSIZE:
		len = u.rep.r.hdr.len = MSTACK_MSG_MAX + 64;
		break;
	case BAD_EMPTY:
		len = 0;
		break;
	case BAD_NO_FDS:
		nfds = 0;
		break;
	case BAD_ONE_FD:
		nfds = 1;
		break;
	case BAD_EXTRA_FDS:
		nfds = 5;
		break;
	case BAD_SWAPPED_FDS: {
		int t = fds[0];
		fds[0] = fds[1];
		fds[1] = t;
		break;
	}
	case BAD_ERROR_WITH_FDS:
		u.rep.r.status = -EINVAL;
		break;
	case BAD_POSITIVE_STATUS:
		u.rep.r.status = 5;
		nfds = 0;
		break;
	case BAD_HUGE_STATUS:
		u.rep.r.status = -100000;
		nfds = 0;
		break;
	case BAD_N_ADDRS:
		u.rep.n_addrs = MSTACK_MAX_ADDRS + 1;
		break;
	case BAD_PORT_ID:
		u.rep.port_id = 0x80000000u;
		break;
	case BAD_COUNT:
		break;
	}
	fsend(fd, u.b, len, fds, nfds);
	for (int i = 0; i < 5; i++)
		close(fds[i]);
	fserve_port_close(fd, 7);
}

static void test_malformed(void)
{
	for (bad_case = 0; bad_case < BAD_COUNT; bad_case++) {
		struct fake f;
		struct mstack_ctl_port p;

		fake_start(&f, fake_malformed);
		int n0 = count_fds();
		int rc = mstack_ctl_port_open(f.ctl, NULL, &p);
		if (rc != -EPROTO)
			fprintf(stderr, "case %s: rc %d (%s)\n", bad_names[bad_case], rc,
				mstack_ctl_last_detail(f.ctl));
		CHECK_EQ(rc, -EPROTO);
		CHECK(strlen(mstack_ctl_last_detail(f.ctl)) > 0);
		CHECK_EQ(p.umem_fd, -1);
		CHECK_EQ(p.xsk_fd, -1);
		if (count_fds() != n0)
			fprintf(stderr, "case %s: fds leaked\n", bad_names[bad_case]);
		CHECK_EQ(count_fds(), n0);
		/* the connection stays usable */
		CHECK_EQ(mstack_ctl_port_close(f.ctl, 7), 0);
		fake_finish(&f);
	}
}

/* Randomly damaged PORT_OPEN replies (bytes flipped, length changed, 0-4 fds of random
 * kinds): whatever the verdict, no crash, no fd left behind, and a success is a sane port. */
#define FUZZ_ROUNDS 400

static uint32_t fuzz_rand(uint32_t *x)
{
	*x = *x * 1103515245u + 12345u;
	return *x >> 8;
}

static void fake_fuzz(int fd)
{
	uint32_t x = 4242;

	for (int i = 0; i < FUZZ_ROUNDS; i++) {
		struct req r;
		union {
			struct mstack_port_open_reply rep;
			uint8_t b[MSTACK_MSG_MAX + 64];
		} u;
		int fds[4];
		size_t len = sizeof(u.rep);

		fexpect(fd, &r, MSTACK_MSG_PORT_OPEN, sizeof(struct mstack_port_open), 0);
		memset(&u, 0, sizeof(u));
		fill_port_reply(&u.rep, fds);
		fds[2] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		fds[3] = memfd_create("extra", MFD_CLOEXEC);
		u.rep.r.hdr = (struct mstack_msg_hdr){
			.magic = MSTACK_PROTO_MAGIC,
			.version = MSTACK_PROTO_VERSION,
			.type = MSTACK_MSG_PORT_OPEN | MSTACK_MSG_REPLY,
			.len = (uint32_t)len,
			.seq = r.u.h.seq,
		};
		if (fuzz_rand(&x) % 4 == 0)
			u.rep.r.status = -(int32_t)(fuzz_rand(&x) % 200);
		unsigned flips = fuzz_rand(&x) % 4;
		for (unsigned k = 0; k < flips; k++)
			u.b[fuzz_rand(&x) % sizeof(u.rep)] ^= (uint8_t)(1u << (fuzz_rand(&x) % 8));
		if (fuzz_rand(&x) % 4 == 0) {
			len = fuzz_rand(&x) % (MSTACK_MSG_MAX + 64);
			if (fuzz_rand(&x) % 2)
				u.rep.r.hdr.len = (uint32_t)len;
		}
		unsigned nfds = fuzz_rand(&x) % 3 ? 2 : fuzz_rand(&x) % 5;
		if (fuzz_rand(&x) % 8 == 0) {
			int t = fds[0];
			fds[0] = fds[3];
			fds[3] = t;
		}
		fsend(fd, u.b, len, fds, nfds);
		for (int k = 0; k < 4; k++)
			close(fds[k]);
	}
}

static void test_random_replies(void)
{
	struct fake f;
	int ok = 0, errs = 0;

	fake_start(&f, fake_fuzz);
	CHECK_EQ(mstack_ctl_set_timeout(f.ctl, 100), 0);
	int n0 = count_fds();
	for (int i = 0; i < FUZZ_ROUNDS; i++) {
		struct mstack_ctl_port p;
		int rc = mstack_ctl_port_open(f.ctl, NULL, &p);
		if (rc >= 0) {
			ok++;
			CHECK(p.n_addrs <= MSTACK_MAX_ADDRS);
			CHECK(p.umem_fd >= 0 && p.xsk_fd >= 0);
			CHECK(fcntl(p.umem_fd, F_GETFD) & FD_CLOEXEC);
			close(p.umem_fd);
			close(p.xsk_fd);
		} else {
			errs++;
			CHECK(rc > -4096);
			CHECK(p.umem_fd == -1 && p.xsk_fd == -1);
		}
		CHECK_EQ(count_fds(), n0);
	}
	CHECK(ok > 10 && errs > 10);
	fake_finish(&f);
}

/* -- timeouts, a peer that goes away, fork ------------------------------------------------- */

static void fake_late(int fd)
{
	struct req r;
	struct mstack_port_open_reply rep;
	int fds[2];

	fexpect(fd, &r, MSTACK_MSG_PORT_OPEN, sizeof(struct mstack_port_open), 0);
	usleep(400 * 1000);
	fill_port_reply(&rep, fds);
	freply(fd, &r, &rep, sizeof(rep), fds, 2); /* too late: skipped, fds closed */
	close(fds[0]);
	close(fds[1]);
	fserve_port_close(fd, 5);
	fserve_port_open(fd);
}

static void test_timeout(void)
{
	struct fake f;
	struct mstack_ctl_port p;

	fake_start(&f, fake_late);
	CHECK_EQ(mstack_ctl_set_timeout(f.ctl, 200), 0);
	int n0 = count_fds();
	int64_t t0 = ms_now();
	CHECK_EQ(mstack_ctl_port_open(f.ctl, NULL, &p), -ETIMEDOUT);
	int64_t dt = ms_now() - t0;
	CHECK(dt >= 190 && dt < 1500);
	CHECK(strlen(mstack_ctl_last_detail(f.ctl)) > 0);
	CHECK_EQ(mstack_ctl_set_timeout(f.ctl, 3000), 0);
	CHECK_EQ(mstack_ctl_port_close(f.ctl, 5), 0);
	CHECK_EQ(count_fds(), n0);
	CHECK_EQ(mstack_ctl_port_open(f.ctl, NULL, &p), 42);
	CHECK_EQ(count_fds(), n0 + 2);
	close(p.umem_fd);
	close(p.xsk_fd);
	fake_finish(&f);
}

static void fake_silent(int fd)
{
	struct req r;

	fexpect(fd, &r, MSTACK_MSG_PORT_CLOSE, sizeof(struct mstack_port_close), 0);
	CHILD_ASSERT(!frecv(fd, &r)); /* never answers; waits for the client to close */
}

/* Timeouts are bounded even without a configured timeout shorter than the default. */
static void test_timeout_silent(void)
{
	struct fake f;

	fake_start(&f, fake_silent);
	CHECK_EQ(mstack_ctl_set_timeout(f.ctl, 100), 0);
	CHECK_EQ(mstack_ctl_port_close(f.ctl, 1), -ETIMEDOUT);
	fake_finish(&f);
}

static void fake_hangup(int fd)
{
	struct req r;

	fexpect(fd, &r, MSTACK_MSG_GROUP_JOIN, sizeof(struct mstack_group_msg), 0);
	/* exit without a reply: the connection closes */
}

static void test_peer_closes(void)
{
	struct fake f;
	int rc;

	fake_start(&f, fake_hangup);
	CHECK_EQ(mstack_ctl_group_join(f.ctl, 1, 1), -ECONNRESET);
	CHECK(strlen(mstack_ctl_last_detail(f.ctl)) > 0);
	rc = mstack_ctl_group_leave(f.ctl, 1, 1); /* no SIGPIPE either */
	CHECK(rc == -EPIPE || rc == -ECONNRESET);
	fake_finish(&f);
}

static void fake_one_close(int fd)
{
	fserve_port_close(fd, 3);
}

static void test_fork_child_refused(void)
{
	struct fake f;
	int st = 0;

	fake_start(&f, fake_one_close);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0)
		_exit(mstack_ctl_port_close(f.ctl, 3) == -EBADFD ? 0 : 1);
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK_EQ(mstack_ctl_port_close(f.ctl, 3), 0);
	fake_finish(&f);
}

/* -- connecting by path ----------------------------------------------------------------------- */

static char run_dir[64];

/* A new run_dir; sa: its app.sock. */
static void make_run_dir(struct sockaddr_un *sa)
{
	snprintf(run_dir, sizeof(run_dir), "/tmp/msctl-test.XXXXXX");
	CHECK(mkdtemp(run_dir) != NULL);
	snprintf(sa->sun_path, sizeof(sa->sun_path), "%s/app.sock", run_dir);
}

/* The fake daemon's socket at sa, bound (not listening yet). */
static int bind_app_sock(const struct sockaddr_un *sa)
{
	int lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	CHECK_EQ(bind(lfd, (const struct sockaddr *)sa, sizeof(*sa)), 0);
	return lfd;
}

/* The fake daemon: lfd listens, a child process runs serve(lfd). */
static pid_t fork_fake_daemon(int lfd, void (*serve)(int lfd))
{
	CHECK_EQ(listen(lfd, 4), 0);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		serve(lfd);
		_exit(0);
	}
	return pid;
}

/* The fake daemon exited cleanly; its socket and run_dir go, and no descriptor is left open
 * (n0 were at the start). */
static void end_fake_daemon(pid_t pid, int lfd, const struct sockaddr_un *sa, int n0)
{
	int st = 0;
	CHECK_EQ(waitpid(pid, &st, 0), pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(lfd);
	unlink(sa->sun_path);
	rmdir(run_dir);
	CHECK_EQ(count_fds(), n0);
}

static void fake_listener(int lfd)
{
	for (int i = 0; i < 2; i++) {
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		CHILD_ASSERT(fd >= 0);
		fserve_hello(fd);
		fserve_port_close(fd, (uint32_t)i + 1);
		close(fd);
	}
}

static void test_connect_path(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct mstack_ctl *ctl = NULL;
	char longdir[200];
	int n0 = count_fds();

	make_run_dir(&sa);

	/* no daemon: no socket, then a socket nobody listens on */
	CHECK_EQ(mstack_ctl_connect(&ctl, run_dir), -ENOENT);
	int lfd = bind_app_sock(&sa);
	CHECK_EQ(mstack_ctl_connect(&ctl, run_dir), -ECONNREFUSED);
	CHECK(ctl == NULL);
	memset(longdir, 'a', sizeof(longdir) - 1);
	longdir[sizeof(longdir) - 1] = '\0';
	CHECK_EQ(mstack_ctl_connect(&ctl, longdir), -ENAMETOOLONG);

	pid_t pid = fork_fake_daemon(lfd, fake_listener);
	CHECK_EQ(mstack_ctl_connect(&ctl, run_dir), 0);
	if (ctl) {
		CHECK(fcntl(mstack_ctl_fd(ctl), F_GETFD) & FD_CLOEXEC);
		CHECK_EQ(mstack_ctl_daemon_version(ctl), 7);
		CHECK_EQ(mstack_ctl_port_close(ctl, 1), 0);
		mstack_ctl_close(ctl);
	}
	/* NULL: $MSTACK_RUN_DIR */
	ctl = NULL;
	CHECK_EQ(setenv("MSTACK_RUN_DIR", run_dir, 1), 0);
	CHECK_EQ(mstack_ctl_connect(&ctl, NULL), 0);
	unsetenv("MSTACK_RUN_DIR");
	if (ctl) {
		CHECK_EQ(mstack_ctl_port_close(ctl, 2), 0);
		mstack_ctl_close(ctl);
	}
	end_fake_daemon(pid, lfd, &sa, n0);
}

/* -- connection hand-off --------------------------------------------------------------------- */

#define BLOB_SEALS (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK)
static const char blob_text[] = "three serialized connections";

static void test_blob_memfd(void)
{
	int n0 = count_fds();
	int fd = mstack_ctl_blob_memfd(blob_text, sizeof(blob_text));
	char buf[64] = { 0 };
	struct stat st;
	char link[64] = { 0 }, path[64];

	CHECK(fd >= 0);
	CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	CHECK(fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == sizeof(blob_text));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	CHECK(readlink(path, link, sizeof(link) - 1) > 0 && !strncmp(link, "/memfd:", 7));
	CHECK_EQ(pread(fd, buf, sizeof(buf), 0), sizeof(blob_text));
	CHECK(!strcmp(buf, blob_text));
	CHECK_EQ(fcntl(fd, F_GET_SEALS), BLOB_SEALS | F_SEAL_SEAL);
	CHECK_EQ(pwrite(fd, "x", 1, 0), -1);
	CHECK_EQ(ftruncate(fd, 1), -1);
	close(fd);
	fd = mstack_ctl_blob_memfd(NULL, 0); /* an empty blob is a blob */
	CHECK(fd >= 0 && fstat(fd, &st) == 0 && st.st_size == 0);
	close(fd);
	CHECK_EQ(mstack_ctl_blob_memfd(NULL, 1), -EINVAL);
	CHECK_EQ(mstack_ctl_blob_memfd(blob_text, (size_t)MSTACK_HANDOFF_MAX_BLOB + 1), -EMSGSIZE);
	CHECK_EQ(count_fds(), n0);
}

static struct mstack_handoff_flow hflows[MSTACK_HANDOFF_MAX_FLOWS];

static void make_hflows(void)
{
	for (unsigned i = 0; i < MSTACK_HANDOFF_MAX_FLOWS; i++) {
		hflows[i].laddr = htonl(0x0a000001);
		hflows[i].raddr = htonl(0x0a000002 + i);
		hflows[i].lport = htons(80);
		hflows[i].rport = htons((uint16_t)(40000 + i));
	}
}

/* Expect a HANDOFF of n flows from port 3 of binding 9 with the blob; answer with reply. */
static void fexpect_handoff(int fd, struct req *r, uint32_t n)
{
	struct mstack_handoff m;
	char buf[64] = { 0 };

	fexpect(fd, r, MSTACK_MSG_HANDOFF, sizeof(m), 1);
	memcpy(&m, r->u.b, sizeof(m));
	CHILD_ASSERT(m.binding_id == 9 && m.port_id == 3 && m.n_flows == n && m.pad == 0);
	CHILD_ASSERT(!memcmp(m.flows, hflows, n * sizeof(hflows[0])));
	for (unsigned i = n; i < MSTACK_HANDOFF_MAX_FLOWS; i++)
		CHILD_ASSERT(m.flows[i].laddr == 0 && m.flows[i].rport == 0);
	CHILD_ASSERT(fcntl(r->fds[0], F_GET_SEALS) & BLOB_SEALS);
	CHILD_ASSERT(pread(r->fds[0], buf, sizeof(buf), 0) == sizeof(blob_text));
	CHILD_ASSERT(!strcmp(buf, blob_text));
	close(r->fds[0]);
}

static void freply_handoff(int fd, const struct req *r, uint32_t target, uint32_t n_moved)
{
	struct mstack_handoff_reply rep;

	memset(&rep, 0, sizeof(rep));
	rep.target_port = target;
	rep.n_moved = n_moved;
	freply(fd, r, &rep, sizeof(rep), NULL, 0);
}

static void fake_handoffs(int fd)
{
	struct req r;

	fexpect_handoff(fd, &r, 3);
	usleep(600 * 1000); /* longer than the connection's timeout: the hand-off waits */
	freply_handoff(fd, &r, 7, 2);
	fexpect_handoff(fd, &r, MSTACK_HANDOFF_MAX_FLOWS);
	freply_handoff(fd, &r, 0, 0); /* nobody took them */
	fexpect_handoff(fd, &r, 1);
	freply_err(fd, &r, -EPERM, "flow 0 belongs to port 5");
	/* malformed: more than asked, moved to nobody, moved to the sender, a bare reply */
	fexpect_handoff(fd, &r, 2);
	freply_handoff(fd, &r, 7, 3);
	fexpect_handoff(fd, &r, 2);
	freply_handoff(fd, &r, 0, 1);
	fexpect_handoff(fd, &r, 2);
	freply_handoff(fd, &r, 3, 1);
	fexpect_handoff(fd, &r, 2);
	freply_ok(fd, &r);
	fserve_port_close(fd, 3); /* the connection's own timeout is back */
}

static void test_handoff(void)
{
	struct fake f;
	uint32_t target = 99;
	int blob = mstack_ctl_blob_memfd(blob_text, sizeof(blob_text));

	make_hflows();
	fake_start(&f, fake_handoffs);
	CHECK_EQ(mstack_ctl_set_timeout(f.ctl, 100), 0);
	CHECK_EQ(mstack_ctl_handoff(f.ctl, 9, 3, hflows, 3, blob, &target), 2);
	CHECK_EQ(target, 7);
	CHECK_EQ(mstack_ctl_handoff(f.ctl, 9, 3, hflows, MSTACK_HANDOFF_MAX_FLOWS, blob, &target), 0);
	CHECK_EQ(target, 0);
	CHECK_EQ(mstack_ctl_handoff(f.ctl, 9, 3, hflows, 1, blob, NULL), -EPERM);
	CHECK(!strcmp(mstack_ctl_last_detail(f.ctl), "flow 0 belongs to port 5"));
	for (int i = 0; i < 4; i++) {
		target = 99;
		CHECK_EQ(mstack_ctl_handoff(f.ctl, 9, 3, hflows, 2, blob, &target), -EPROTO);
		CHECK_EQ(target, 0);
	}
	/* arguments checked before anything is sent */
	CHECK_EQ(mstack_ctl_handoff(f.ctl, 9, 3, hflows, 0, blob, &target), -EINVAL);
	CHECK_EQ(mstack_ctl_handoff(f.ctl, 9, 3, hflows, MSTACK_HANDOFF_MAX_FLOWS + 1, blob, NULL),
		 -EINVAL);
	CHECK_EQ(mstack_ctl_handoff(f.ctl, 9, 3, NULL, 1, blob, NULL), -EINVAL);
	CHECK_EQ(mstack_ctl_handoff(f.ctl, 9, 3, hflows, 1, -1, NULL), -EBADF);
	CHECK_EQ(mstack_ctl_port_close(f.ctl, 3), 0);
	CHECK(fcntl(blob, F_GETFD) >= 0); /* sent, not consumed */
	fake_finish(&f);
	close(blob);
}

/* The inbox: a daemon at a path (inbox_open connects by path) that pushes IMPORTs. */

static int fake_blob(int seals)
{
	int fd = memfd_create("blob", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	CHILD_ASSERT(fd >= 0);
	CHILD_ASSERT(write(fd, blob_text, sizeof(blob_text)) == sizeof(blob_text));
	if (seals)
		CHILD_ASSERT(fcntl(fd, F_ADD_SEALS, seals) == 0);
	return fd;
}

static void fpush(int fd, uint32_t seq, uint32_t port, uint32_t n, uint16_t type, size_t len,
		  const int *fds, unsigned nfds)
{
	struct mstack_import m;
	uint8_t buf[MSTACK_MSG_MAX] = { 0 }; /* room for an oversized one */

	memset(&m, 0, sizeof(m));
	m.hdr.magic = MSTACK_PROTO_MAGIC;
	m.hdr.version = MSTACK_PROTO_VERSION;
	m.hdr.type = type;
	m.hdr.len = (uint32_t)len;
	m.hdr.seq = seq;
	m.binding_id = 9;
	m.port_id = port;
	m.n_flows = n;
	memcpy(m.flows, hflows, (n < MSTACK_HANDOFF_MAX_FLOWS ? n : MSTACK_HANDOFF_MAX_FLOWS) *
					sizeof(hflows[0]));
	memcpy(buf, &m, sizeof(m));
	CHILD_ASSERT(len <= sizeof(buf));
	fsend(fd, buf, len, fds, nfds);
}

static void fexpect_import_reply(int fd, uint32_t seq, int32_t status, uint32_t n)
{
	struct req r;
	struct mstack_import_reply rep;

	CHILD_ASSERT(frecv(fd, &r));
	CHILD_ASSERT(r.len == sizeof(rep) && r.nfds == 0);
	memcpy(&rep, r.u.b, sizeof(rep));
	CHILD_ASSERT(rep.r.hdr.magic == MSTACK_PROTO_MAGIC);
	CHILD_ASSERT(rep.r.hdr.version == MSTACK_PROTO_VERSION);
	CHILD_ASSERT(rep.r.hdr.type == (MSTACK_MSG_IMPORT | MSTACK_MSG_REPLY));
	CHILD_ASSERT(rep.r.hdr.len == sizeof(rep) && rep.r.hdr.seq == seq);
	CHILD_ASSERT(rep.r.status == status && rep.n_imported == n && rep.pad == 0);
}

static void fake_inbox(int fd)
{
	struct req r;
	struct mstack_inbox m;
	const size_t len = sizeof(struct mstack_import);
	int good = fake_blob(BLOB_SEALS), bad[2];

	fexpect(fd, &r, MSTACK_MSG_INBOX, sizeof(m), 0);
	memcpy(&m, r.u.b, sizeof(m));
	CHILD_ASSERT(m.port_id == 42);
	freply_ok(fd, &r);
	usleep(200 * 1000); /* the client finds nothing waiting first */
	fpush(fd, 1, 42, 3, MSTACK_MSG_IMPORT, len, &good, 1);
	fexpect_import_reply(fd, 1, 0, 2);
	/* malformed, each answered -EPROTO by the client with its fds closed */
	fpush(fd, 2, 42, 3, MSTACK_MSG_IMPORT, len, NULL, 0);            /* no memfd */
	bad[0] = fake_blob(0);
	fpush(fd, 3, 42, 3, MSTACK_MSG_IMPORT, len, bad, 1);             /* not sealed */
	close(bad[0]);
	bad[0] = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	fpush(fd, 4, 42, 3, MSTACK_MSG_IMPORT, len, bad, 1);             /* not a memfd */
	close(bad[0]);
	bad[0] = fake_blob(BLOB_SEALS);
	bad[1] = fake_blob(BLOB_SEALS);
	fpush(fd, 5, 42, 3, MSTACK_MSG_IMPORT, len, bad, 2);             /* two fds */
	close(bad[0]);
	close(bad[1]);
	fpush(fd, 6, 41, 3, MSTACK_MSG_IMPORT, len, &good, 1);           /* another port */
	fpush(fd, 7, 42, 0, MSTACK_MSG_IMPORT, len, &good, 1);           /* no flows */
	fpush(fd, 8, 42, 33, MSTACK_MSG_IMPORT, len, &good, 1);          /* too many */
	fpush(fd, 1, 42, 3, MSTACK_MSG_IMPORT, len, &good, 1);           /* an old seq */
	fpush(fd, 9, 42, 3, MSTACK_MSG_IMPORT | MSTACK_MSG_REPLY, len, &good, 1); /* a reply */
	fpush(fd, 10, 42, 3, MSTACK_MSG_IMPORT, len - 4, &good, 1);      /* short */
	fpush(fd, 11, 42, 3, MSTACK_MSG_IMPORT, len + 4, &good, 1);      /* long */
	/* and a good one again: the inbox still works */
	fpush(fd, 12, 42, MSTACK_HANDOFF_MAX_FLOWS, MSTACK_MSG_IMPORT, len, &good, 1);
	fexpect_import_reply(fd, 12, -ENOMEM, 0);
	close(good);
	/* then the daemon goes away */
}

#define INBOX_MALFORMED 11

static void fake_inbox_listener(int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

	CHILD_ASSERT(fd >= 0);
	fserve_hello(fd);
	{ /* an inbox refused (another has the port) */
		struct req r;
		fexpect(fd, &r, MSTACK_MSG_INBOX, sizeof(struct mstack_inbox), 0);
		freply_err(fd, &r, -EBUSY, "port 42 has an inbox already");
	}
	close(fd);
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	CHILD_ASSERT(fd >= 0);
	fserve_hello(fd);
	fake_inbox(fd);
	close(fd);
}

/* Wait until something can be read on the inbox (or 2 s). */
static void inbox_wait(struct mstack_ctl *ib)
{
	struct pollfd p = { .fd = mstack_ctl_fd(ib), .events = POLLIN };

	CHECK_EQ(poll(&p, 1, 2000), 1);
}

static void test_inbox(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct mstack_ctl *ib = (struct mstack_ctl *)(uintptr_t)1; /* must come back NULL */
	struct mstack_ctl_import imp;
	struct fake f;
	char buf[64] = { 0 };
	int n0 = count_fds();

	make_hflows();
	make_run_dir(&sa);
	int lfd = bind_app_sock(&sa);
	pid_t pid = fork_fake_daemon(lfd, fake_inbox_listener);
	CHECK_EQ(mstack_ctl_inbox_open(&ib, run_dir, 42), -EBUSY);
	CHECK(ib == NULL);
	CHECK_EQ(mstack_ctl_inbox_open(&ib, run_dir, 42), 0);
	if (!ib)
		goto out;
	CHECK_EQ(mstack_ctl_inbox_recv(ib, &imp), 0); /* nothing yet */
	CHECK_EQ(imp.memfd, -1);
	CHECK_EQ(mstack_ctl_port_close(ib, 1), -EINVAL); /* an inbox carries no requests */
	inbox_wait(ib);
	CHECK_EQ(mstack_ctl_inbox_recv(ib, &imp), 1);
	CHECK_EQ(imp.seq, 1);
	CHECK_EQ(imp.binding_id, 9);
	CHECK_EQ(imp.port_id, 42);
	CHECK_EQ(imp.n, 3);
	CHECK(!memcmp(imp.flows, hflows, 3 * sizeof(hflows[0])));
	CHECK(fcntl(imp.memfd, F_GETFD) & FD_CLOEXEC);
	CHECK_EQ(pread(imp.memfd, buf, sizeof(buf), 0), sizeof(blob_text));
	CHECK(!strcmp(buf, blob_text));
	close(imp.memfd);
	CHECK_EQ(mstack_ctl_inbox_reply(ib, 1, 1, 0), -EINVAL);
	CHECK_EQ(mstack_ctl_inbox_reply(ib, 1, -EIO, 2), -EINVAL);
	CHECK_EQ(mstack_ctl_inbox_reply(ib, 1, 0, MSTACK_HANDOFF_MAX_FLOWS + 1), -EINVAL);
	CHECK_EQ(mstack_ctl_inbox_reply(ib, 1, 0, 2), 0);
	int nfd = count_fds();
	for (int i = 0; i < INBOX_MALFORMED; i++) {
		inbox_wait(ib);
		CHECK_EQ(mstack_ctl_inbox_recv(ib, &imp), -EPROTO);
		CHECK_EQ(imp.memfd, -1);
		CHECK(strlen(mstack_ctl_last_detail(ib)) > 0);
		CHECK_EQ(count_fds(), nfd);
	}
	inbox_wait(ib);
	CHECK_EQ(mstack_ctl_inbox_recv(ib, &imp), 1);
	CHECK_EQ(imp.seq, 12);
	CHECK_EQ(imp.n, MSTACK_HANDOFF_MAX_FLOWS);
	close(imp.memfd);
	CHECK_EQ(mstack_ctl_inbox_reply(ib, 12, -ENOMEM, 0), 0);
	inbox_wait(ib);
	CHECK_EQ(mstack_ctl_inbox_recv(ib, &imp), -ECONNRESET);
	CHECK_EQ(imp.memfd, -1);
	mstack_ctl_close(ib);
out:
	end_fake_daemon(pid, lfd, &sa, n0);
	/* an ordinary connection is no inbox */
	fake_start(&f, fake_nothing);
	CHECK_EQ(mstack_ctl_inbox_recv(f.ctl, &imp), -EINVAL);
	CHECK_EQ(mstack_ctl_inbox_reply(f.ctl, 1, 0, 0), -EINVAL);
	fake_finish(&f);
}

int main(int argc, char **argv)
{
	static const struct check_case cases[] = {
		CHECK_CASE(test_hello),
		CHECK_CASE(test_port_open),
		CHECK_CASE(test_bindings),
		CHECK_CASE(test_bad_args),
		CHECK_CASE(test_error_replies),
		CHECK_CASE(test_hello_refused),
		CHECK_CASE(test_malformed),
		CHECK_CASE(test_random_replies),
		CHECK_CASE(test_timeout),
		CHECK_CASE(test_timeout_silent),
		CHECK_CASE(test_peer_closes),
		CHECK_CASE(test_fork_child_refused),
		CHECK_CASE(test_connect_path),
		CHECK_CASE(test_blob_memfd),
		CHECK_CASE(test_handoff),
		CHECK_CASE(test_inbox),
	};

	/* SIGPIPE stays fatal: the library must never raise it */
	return check_main(argc, argv, cases, sizeof(cases) / sizeof(cases[0]));
}
