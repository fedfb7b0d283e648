/* The C socket-semantics scenarios of the compat suite (issue 6's acceptance). Each one plays
 * one side of a TCP connection with the scripted peer on the remote host and records what the
 * socket API returned; the harness runs it natively and under mstack-run and compares.
 * Client scenarios connect to the peer at REMOTE:PORT; server scenarios listen at HOST:PORT and
 * the peer connects. The peer script language is described in compat_tests/peer.py. */
#include "compat.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* -- small recorders ----------------------------------------------------------------------- */

static int getint(const char *name, int fd, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);
	int r = getsockopt(fd, level, opt, &v, &len);
	int e = errno;

	ob_begin("getsockopt");
	ob_str("opt", name);
	ob_int("ret", r);
	if (r < 0)
		ob_str("errno", errname(e));
	else
		ob_int("value", v);
	ob_end();
	return v;
}

static int setint(const char *name, int fd, int level, int opt, int v)
{
	int r = setsockopt(fd, level, opt, &v, sizeof(v));
	int e = errno;

	ob_begin("setsockopt");
	ob_str("opt", name);
	ob_int("value", v);
	ob_int("ret", r);
	if (r < 0)
		ob_str("errno", errname(e));
	ob_end();
	return r;
}

static int pollrec(const char *what, int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	char m[64];
	int r = poll(&p, 1, timeout_ms);

	ob_begin("poll");
	ob_str("what", what);
	ob_int("ret", r);
	ob_str("revents", mask_str(r > 0 ? p.revents : 0, m, sizeof(m)));
	ob_end();
	return r > 0 ? p.revents : 0;
}

static int epwait(const char *what, int ep, int timeout_ms)
{
	struct epoll_event ev[8];
	char m[64];
	int r = epoll_wait(ep, ev, 8, timeout_ms);
	int e = errno;

	ob_begin("epoll_wait");
	ob_str("what", what);
	ob_int("ret", r);
	if (r < 0)
		ob_str("errno", errname(e));
	for (int i = 0; i < r && i < 8; i++) {
		char k[16];
		snprintf(k, sizeof(k), "ev%d", i);
		ob_str(k, epmask_str(ev[i].events, m, sizeof(m)));
		snprintf(k, sizeof(k), "tag%d", i);
		ob_int(k, (long)ev[i].data.u32);
	}
	ob_end();
	return r;
}

static int epadd(int ep, int op, int fd, uint32_t events, uint32_t tag)
{
	struct epoll_event ev = { .events = events, .data.u32 = tag };
	const char *name = op == EPOLL_CTL_ADD ? "epoll_ctl ADD" :
			   op == EPOLL_CTL_MOD ? "epoll_ctl MOD" : "epoll_ctl DEL";

	return (int)rec(name, epoll_ctl(ep, op, fd, &ev));
}

static int tcp_state(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	int r = getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len);
	ob_begin("getsockopt");
	ob_str("opt", "TCP_INFO");
	ob_int("ret", r);
	ob_int("state", r == 0 ? ti.tcpi_state : -1);
	ob_end();
	return r == 0 ? ti.tcpi_state : -1;
}

static void rec_recv(const char *call, int fd, size_t n, int flags)
{
	char buf[65536];

	recdata(call, recv(fd, buf, n < sizeof(buf) ? n : sizeof(buf), flags), buf);
}

/* Read to the end of stream (bounded), record how much and the digest. */
static long drain(int fd, size_t max)
{
	uint64_t sum;
	char hex[17];
	long r = recv_all(fd, max, &sum);

	hexsum(sum, hex);
	ob_begin("recv all");
	ob_int("ret", r);
	ob_str("sum", hex);
	ob_end();
	return r;
}

static int accept_rec(int l, int flags)
{
	if (flags)
		return recfd("accept4", accept4(l, NULL, NULL, flags));
	return recfd("accept", accept(l, NULL, NULL));
}

static int is_remote(const struct sockaddr_in *a)
{
	struct in_addr r;

	inet_pton(AF_INET, env.remote_ip, &r);
	return a->sin_addr.s_addr == r.s_addr;
}

static int is_host(const struct sockaddr_in *a)
{
	struct in_addr r;

	inet_pton(AF_INET, env.host_ip, &r);
	return a->sin_addr.s_addr == r.s_addr;
}

static void names(int fd, int server)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int r = getsockname(fd, (struct sockaddr *)&a, &len);

	ob_begin("getsockname");
	ob_int("ret", r);
	ob_int("len", (long)len);
	ob_int("family", a.sin_family);
	ob_int("addr_is_host", is_host(&a));
	ob_int("port_is_scenario", ntohs(a.sin_port) == env.port);
	ob_int("port_nonzero", a.sin_port != 0);
	ob_end();
	len = sizeof(a);
	r = getpeername(fd, (struct sockaddr *)&a, &len);
	ob_begin("getpeername");
	ob_int("ret", r);
	ob_int("addr_is_remote", r == 0 && is_remote(&a));
	/* A server's peer port is the peer's ephemeral one: not compared. */
	if (!server)
		ob_int("port_is_scenario", ntohs(a.sin_port) == env.port);
	ob_end();
}

static int fd_flags(const char *what, int fd)
{
	int fl = fcntl(fd, F_GETFL);
	int fdf = fcntl(fd, F_GETFD);
	int e = errno;

	ob_begin("fcntl F_GETFL/F_GETFD");
	ob_str("what", what);
	if (fl < 0 || fdf < 0) {
		ob_int("ret", -1);
		ob_str("errno", errname(e));
	} else {
		ob_int("nonblock", !!(fl & O_NONBLOCK));
		ob_int("rdwr", (fl & O_ACCMODE) == O_RDWR);
		ob_int("cloexec", !!(fdf & FD_CLOEXEC));
	}
	ob_end();
	return fl;
}

static const char *peer_end(const char *res, int n)
{
	static const char *const ends[] = { "eof", "reset", "closed", "rst-sent", "open",
					    "timeout" };

	for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
		if (peer_field_is(res, n, "end", ends[i]))
			return ends[i];
	return "?";
}

static int peer_sum_is(const char *res, int n, size_t off, size_t len)
{
	char hex[17];

	hexsum(pattern_sum(off, len), hex);
	return peer_field_is(res, n, "sum", hex);
}

/* -- client: connect ------------------------------------------------------------------------ */

static void sc_connect_blocking(void)
{
	peer_cmd("listen %d e", env.port);
	int s = tcp_connect(0);
	names(s, 0);
	echo_check(s, 100);
	hold(s, 1);
	rec("close", close(s));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 100 && !strcmp(peer_end(r, 0), "eof"),
	       "the peer read 100 bytes, then end of stream");
}

static void sc_connect_refused(void)
{
	int s = tcp_connect(0); /* nobody listens there */
	expect(errno == ECONNREFUSED, "connect to a closed port: ECONNREFUSED");
	getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR);
	hold(s, 0);
	rec("close", close(s));
}

static void sc_connect_nonblock(void)
{
	struct sockaddr_storage ss;
	int len = sa_remote(&ss, 0);

	peer_cmd("listen %d e", env.port);
	int s = tcp_socket(SOCK_NONBLOCK);
	rec("connect", connect(s, (struct sockaddr *)&ss, (socklen_t)len));
	expect(errno == EINPROGRESS, "non-blocking connect: EINPROGRESS");
	int ev = pollrec("connected", s, POLLOUT, 10000);
	expect(ev == POLLOUT, "writable once connected");
	expect(getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR) == 0, "SO_ERROR 0");
	/* the first connect() after completion reports it (0), the next one EISCONN */
	rec("connect again", connect(s, (struct sockaddr *)&ss, (socklen_t)len));
	rec("connect once more", connect(s, (struct sockaddr *)&ss, (socklen_t)len));
	expect(errno == EISCONN, "connect on a connected socket: EISCONN");
	rec("send", send_pat(s, 10, 0));
	expect(wait_ev(s, POLLIN, 10000) & POLLIN, "the echo arrives");
	rec_recv("recv", s, 10, 0);
	hold(s, 1);
	rec("close", close(s));
	peer_result();
}

static void sc_connect_nonblock_refused(void)
{
	struct sockaddr_storage ss;
	int len = sa_remote(&ss, 0);

	int s = tcp_socket(SOCK_NONBLOCK);
	rec("connect", connect(s, (struct sockaddr *)&ss, (socklen_t)len));
	expect(errno == EINPROGRESS, "non-blocking connect: EINPROGRESS");
	int ev = pollrec("refused", s, POLLOUT, 10000);
	expect(ev & POLLERR, "POLLERR once refused");
	expect(getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR) == ECONNREFUSED,
	       "SO_ERROR: ECONNREFUSED (as a number)");
	expect(getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR) == 0, "SO_ERROR is cleared by reading");
	hold(s, 0);
	rec("close", close(s));
}

static void sc_getpeername_unconnected(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	peer_cmd("listen %d e", env.port);
	int s = tcp_socket(0);
	rec("getpeername before connect", getpeername(s, (struct sockaddr *)&a, &len));
	expect(errno == ENOTCONN, "getpeername before connect: ENOTCONN");
	len = sizeof(a);
	rec("getsockname before connect", getsockname(s, (struct sockaddr *)&a, &len));
	ob_begin("sockname");
	ob_int("port", ntohs(a.sin_port));
	ob_int("addr", (long)a.sin_addr.s_addr);
	ob_end();
	struct sockaddr_storage ss;
	int l = sa_remote(&ss, 0);
	rec("connect", connect(s, (struct sockaddr *)&ss, (socklen_t)l));
	names(s, 0);
	echo_check(s, 10);
	hold(s, 1);
	rec("shutdown SHUT_WR", shutdown(s, SHUT_WR));
	/* the peer's end of stream first: then the connection is over on both stacks, whatever
	 * the timing, and a second SHUT_WR finds it not connected */
	drain(s, 1 << 16);
	rec("shutdown again", shutdown(s, SHUT_WR));
	rec("close", close(s));
	peer_result();
}

static void sc_connect_bound(void)
{
	/* bind() to this host's address (port 0) before connect: getsockname keeps the address */
	struct sockaddr_storage ss;
	int len = sa_host(&ss, 0, 0);

	peer_cmd("listen %d e", env.port);
	((struct sockaddr_in *)&ss)->sin_port = 0;
	int s = tcp_socket(0);
	rec("bind port 0", bind(s, (struct sockaddr *)&ss, (socklen_t)len));
	len = sa_remote(&ss, 0);
	rec("connect", connect(s, (struct sockaddr *)&ss, (socklen_t)len));
	names(s, 0);
	echo_check(s, 33);
	hold(s, 1);
	rec("close", close(s));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 33, "the peer read 33 bytes");
}

/* -- client: socket options -------------------------------------------------------------------- */

static void sc_so_rcvtimeo(void)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 }, got;
	socklen_t len = sizeof(got);
	char buf[16];

	peer_cmd("listen %d g,w10,ra", env.port);
	int s = tcp_connect(0);
	rec("setsockopt SO_RCVTIMEO 200ms", setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	rec("getsockopt SO_RCVTIMEO", getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &got, &len));
	ob_begin("SO_RCVTIMEO value");
	ob_int("usec", got.tv_sec * 1000000 + got.tv_usec);
	ob_end();
	double t0 = now_s();
	rec("recv (nothing comes)", recv(s, buf, sizeof(buf), 0));
	expect(errno == EAGAIN, "recv times out with EAGAIN");
	expect(now_s() - t0 >= 0.15, "only after about the timeout");
	hold(s, 1);
	tv.tv_usec = 0;
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	peer_go();
	rec_recv("recv", s, 10, MSG_WAITALL);
	rec("close", close(s));
	peer_result();
}

static void sc_so_sndtimeo(void)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	long total = 0, r = 0;
	int i;

	peer_cmd("listen %d g,ra", env.port);
	int s = tcp_socket(0);
	setint("SO_SNDBUF", s, SOL_SOCKET, SO_SNDBUF, 4096);
	struct sockaddr_storage ss;
	int len = sa_remote(&ss, 0);
	rec("connect", connect(s, (struct sockaddr *)&ss, (socklen_t)len));
	rec("setsockopt SO_SNDTIMEO 200ms", setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)));
	for (i = 0; i < 2000; i++) {
		r = send_pat(s, 65536, 0);
		if (r < 0)
			break;
		total += r;
	}
	int e = errno;
	ob_begin("send until the timeout");
	ob_int("ret", r);
	ob_str("errno", r < 0 ? errname(e) : NULL);
	ob_int("sent_some", total > 0);
	ob_end();
	expect(r < 0 && e == EAGAIN, "a blocked send gives up with EAGAIN after SO_SNDTIMEO");
	hold(s, 1);
	peer_go();
	rec("shutdown SHUT_WR", shutdown(s, SHUT_WR));
	const char *res = peer_result();
	expect(peer_field_int(res, 0, "read") == total && peer_sum_is(res, 0, 0, (size_t)total),
	       "the peer got every byte that send() accepted");
	rec("close", close(s));
}

static void sc_sockopt_socket_level(void)
{
	struct linger lg = { 1, 5 }, lgot;
	socklen_t len = sizeof(lgot);

	peer_cmd("listen %d e", env.port);
	int s = tcp_connect(0);
	getint("SO_REUSEADDR", s, SOL_SOCKET, SO_REUSEADDR);
	setint("SO_REUSEADDR", s, SOL_SOCKET, SO_REUSEADDR, 1);
	expect(getint("SO_REUSEADDR", s, SOL_SOCKET, SO_REUSEADDR) == 1, "SO_REUSEADDR reads 1");
	getint("SO_REUSEPORT", s, SOL_SOCKET, SO_REUSEPORT);
	getint("SO_KEEPALIVE", s, SOL_SOCKET, SO_KEEPALIVE);
	setint("SO_KEEPALIVE", s, SOL_SOCKET, SO_KEEPALIVE, 1);
	expect(getint("SO_KEEPALIVE", s, SOL_SOCKET, SO_KEEPALIVE) == 1, "SO_KEEPALIVE reads 1");
	rec("setsockopt SO_LINGER {1,5}", setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
	rec("getsockopt SO_LINGER", getsockopt(s, SOL_SOCKET, SO_LINGER, &lgot, &len));
	ob_begin("SO_LINGER value");
	ob_int("onoff", lgot.l_onoff);
	ob_int("linger", lgot.l_linger);
	ob_end();
	setint("SO_RCVBUF", s, SOL_SOCKET, SO_RCVBUF, 65536);
	int rb = getint("SO_RCVBUF", s, SOL_SOCKET, SO_RCVBUF);
	setint("SO_SNDBUF", s, SOL_SOCKET, SO_SNDBUF, 65536);
	int sb = getint("SO_SNDBUF", s, SOL_SOCKET, SO_SNDBUF);
	expect(rb >= 65536 && sb >= 65536, "buffer sizes read back at least what was set");
	expect(getint("SO_TYPE", s, SOL_SOCKET, SO_TYPE) == SOCK_STREAM, "SO_TYPE: stream");
	expect(getint("SO_DOMAIN", s, SOL_SOCKET, SO_DOMAIN) == AF_INET, "SO_DOMAIN: inet");
	expect(getint("SO_PROTOCOL", s, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP, "SO_PROTOCOL");
	expect(getint("SO_ACCEPTCONN", s, SOL_SOCKET, SO_ACCEPTCONN) == 0, "not a listener");
	getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR);
	echo_check(s, 64);
	hold(s, 1);
	lg.l_linger = 1;
	setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	rec("close", close(s));
	peer_result();
}

static void sc_sockopt_tcp_level(void)
{
	char cc[32] = "", cc2[32] = "";
	socklen_t len = sizeof(cc);

	peer_cmd("listen %d e", env.port);
	int s = tcp_connect(0);
	getint("TCP_NODELAY", s, IPPROTO_TCP, TCP_NODELAY);
	setint("TCP_NODELAY", s, IPPROTO_TCP, TCP_NODELAY, 1);
	expect(getint("TCP_NODELAY", s, IPPROTO_TCP, TCP_NODELAY) == 1, "TCP_NODELAY reads 1");
	setint("TCP_KEEPIDLE", s, IPPROTO_TCP, TCP_KEEPIDLE, 30);
	expect(getint("TCP_KEEPIDLE", s, IPPROTO_TCP, TCP_KEEPIDLE) == 30, "TCP_KEEPIDLE");
	setint("TCP_KEEPINTVL", s, IPPROTO_TCP, TCP_KEEPINTVL, 5);
	expect(getint("TCP_KEEPINTVL", s, IPPROTO_TCP, TCP_KEEPINTVL) == 5, "TCP_KEEPINTVL");
	setint("TCP_KEEPCNT", s, IPPROTO_TCP, TCP_KEEPCNT, 3);
	expect(getint("TCP_KEEPCNT", s, IPPROTO_TCP, TCP_KEEPCNT) == 3, "TCP_KEEPCNT");
	setint("TCP_KEEPIDLE 0", s, IPPROTO_TCP, TCP_KEEPIDLE, 0);
	int r = getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, cc, &len);
	ob_begin("getsockopt");
	ob_str("opt", "TCP_CONGESTION default");
	ob_int("ret", r);
	ob_int("named", cc[0] != 0); /* the policy's choice, not the kernel's: not compared */
	ob_end();
	rec("setsockopt TCP_CONGESTION reno",
	    setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "reno", 4));
	len = sizeof(cc2);
	rec("getsockopt TCP_CONGESTION", getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, cc2, &len));
	ob_begin("TCP_CONGESTION value");
	ob_str("name", cc2);
	ob_end();
	expect(strcmp(cc2, "reno") == 0, "TCP_CONGESTION reads back reno");
	rec("setsockopt TCP_CONGESTION nonsense",
	    setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "no-such-cc", 10));
	expect(errno == ENOENT, "an unknown congestion control: ENOENT");
	setint("TCP_CORK", s, IPPROTO_TCP, TCP_CORK, 1);
	expect(getint("TCP_CORK", s, IPPROTO_TCP, TCP_CORK) == 1, "TCP_CORK reads 1");
	setint("TCP_CORK", s, IPPROTO_TCP, TCP_CORK, 0);
	expect(tcp_state(s) == TCP_ESTABLISHED, "TCP_INFO: ESTABLISHED");
	echo_check(s, 100);
	hold(s, 1);
	rec("close", close(s));
	peer_result();
}

static void sc_tcp_info_states(void)
{
	/* the peer waits for the go: its data and FIN must not race the first TCP_INFO */
	peer_cmd("listen %d g,w5,fin,ra", env.port);
	int s = tcp_connect(0);
	expect(tcp_state(s) == TCP_ESTABLISHED, "ESTABLISHED after connect");
	peer_go();
	expect(wait_ev(s, POLLRDHUP, 10000) & POLLRDHUP, "the peer's FIN arrives");
	expect(tcp_state(s) == TCP_CLOSE_WAIT, "CLOSE_WAIT after the peer's FIN");
	drain(s, 100);
	hold(s, 1);
	rec("shutdown SHUT_WR", shutdown(s, SHUT_WR));
	rec("close", close(s));
	peer_result();
}

static void sc_tcp_cork(void)
{
	peer_cmd("listen %d r30,fin,ra", env.port);
	int s = tcp_connect(0);
	setint("TCP_CORK", s, IPPROTO_TCP, TCP_CORK, 1);
	for (int i = 0; i < 3; i++)
		rec("send", send_pat(s, 10, 0));
	setint("TCP_CORK", s, IPPROTO_TCP, TCP_CORK, 0);
	expect(wait_ev(s, POLLRDHUP, 10000) & POLLRDHUP, "the peer read 30 bytes and sent FIN");
	hold(s, 1);
	rec("close", close(s));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 30 && peer_sum_is(r, 0, 0, 30),
	       "corked data all arrived once uncorked");
}

static void sc_so_error_reset(void)
{
	char buf[8];

	peer_cmd("listen %d g,rst", env.port);
	int s = tcp_connect(0);
	expect(getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR) == 0, "SO_ERROR 0 while connected");
	hold(s, 1);
	peer_go();
	expect(wait_ev(s, POLLERR, 10000) & POLLERR, "POLLERR after the peer's reset");
	expect(getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR) == ECONNRESET, "SO_ERROR: ECONNRESET");
	getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR);
	rec("recv after the reset", recv(s, buf, sizeof(buf), 0));
	tcp_state(s);
	rec("close", close(s));
	peer_result();
}

static void sc_so_linger_zero(void)
{
	struct linger lg = { 1, 0 };

	peer_cmd("listen %d ra", env.port);
	int s = tcp_connect(0);
	rec("setsockopt SO_LINGER {1,0}", setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
	hold(s, 1);
	rec("close", close(s));
	const char *r = peer_result();
	expect(!strcmp(peer_end(r, 0), "reset"), "SO_LINGER 0: the peer sees a reset");
}

static void sc_so_linger_graceful(void)
{
	struct linger lg = { 1, 2 };

	peer_cmd("listen %d ra", env.port);
	int s = tcp_connect(0);
	rec("setsockopt SO_LINGER {1,2}", setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
	rec("send", send_pat(s, 1000, 0));
	hold(s, 1);
	rec("close (lingers until sent)", close(s));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 1000 && !strcmp(peer_end(r, 0), "eof"),
	       "every byte, then end of stream");
}

/* -- client: data calls ------------------------------------------------------------------------- */

static void sc_read_write(void)
{
	char buf[64];

	peer_cmd("listen %d w50,fin,ra", env.port);
	int s = tcp_connect(0);
	expect(wait_ev(s, POLLRDHUP, 10000) & POLLRDHUP, "data and FIN arrive");
	long got = 0;
	uint64_t h = FNV_INIT;
	for (int i = 0; i < 100; i++) {
		long r = read(s, buf, sizeof(buf));
		if (r <= 0) {
			rec("read at the end", r);
			break;
		}
		h = fnv(buf, (size_t)r, h);
		got += r;
	}
	expect(got == 50 && h == pattern_sum(0, 50), "read() got the 50 bytes");
	uint8_t out[20];
	pattern(out, 0, 20);
	rec("write", write(s, out, 20));
	hold(s, 1);
	rec("close", close(s));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 20, "write() delivered 20 bytes");
}

static void sc_readv_writev(void)
{
	uint8_t out[30], a[7], b[8], c[15];
	struct iovec wv[3] = { { out, 10 }, { out + 10, 5 }, { out + 15, 15 } };
	struct iovec rv[3] = { { a, 7 }, { b, 8 }, { c, 15 } };

	peer_cmd("listen %d r30,w30,fin,ra", env.port);
	int s = tcp_connect(0);
	pattern(out, 0, 30);
	rec("writev 10+5+15", writev(s, wv, 3));
	expect(wait_ev(s, POLLRDHUP, 10000) & POLLRDHUP, "the answer and FIN arrive");
	long r = rec("readv 7+8+15", readv(s, rv, 3));
	uint64_t h = fnv(c, 15, fnv(b, 8, fnv(a, 7, FNV_INIT)));
	expect(r == 30 && h == pattern_sum(0, 30), "readv scattered the 30 bytes in order");
	rec("readv at the end", readv(s, rv, 3));
	hold(s, 1);
	rec("close", close(s));
	const char *res = peer_result();
	expect(peer_field_int(res, 0, "read") == 30 && peer_sum_is(res, 0, 0, 30),
	       "writev gathered the 30 bytes in order");
}

static void sc_recv_peek(void)
{
	char a[10], b[20];

	peer_cmd("listen %d w20,fin,ra", env.port);
	int s = tcp_connect(0);
	expect(wait_ev(s, POLLRDHUP, 10000) & POLLRDHUP, "data and FIN arrive");
	long r1 = recdata("recv MSG_PEEK 10", recv(s, a, 10, MSG_PEEK), a);
	long r2 = recdata("recv 20", recv(s, b, 20, 0), b);
	expect(r1 == 10 && r2 == 20 && memcmp(a, b, 10) == 0, "the peeked bytes are read again");
	rec("recv at the end", recv(s, b, 20, 0));
	rec("recv MSG_PEEK at the end", recv(s, b, 20, MSG_PEEK));
	hold(s, 1);
	rec("close", close(s));
	peer_result();
}

static void sc_recv_dontwait(void)
{
	char buf[16];

	peer_cmd("listen %d g,w10,ra", env.port);
	int s = tcp_connect(0);
	rec("recv MSG_DONTWAIT (empty)", recv(s, buf, sizeof(buf), MSG_DONTWAIT));
	expect(errno == EAGAIN, "nothing there: EAGAIN, without blocking");
	fd_flags("the socket stays blocking", s);
	hold(s, 1);
	peer_go();
	expect(wait_ev(s, POLLIN, 10000) & POLLIN, "data arrives");
	rec_recv("recv MSG_DONTWAIT", s, 10, MSG_DONTWAIT);
	rec("close", close(s));
	peer_result();
}

static void sc_recv_waitall(void)
{
	char buf[100];

	peer_cmd("listen %d w25,d30,w25,d30,w25,d30,w25,ra", env.port);
	int s = tcp_connect(0);
	long r = recdata("recv MSG_WAITALL 100", recv(s, buf, 100, MSG_WAITALL), buf);
	expect(r == 100 && fnv(buf, 100, FNV_INIT) == pattern_sum(0, 100),
	       "MSG_WAITALL waits for all four pieces");
	hold(s, 1);
	rec("close", close(s));
	peer_result();
}

static void sc_recvfrom_recvmsg(void)
{
	char buf[32], x[5], y[5];
	struct sockaddr_in from;
	socklen_t flen = sizeof(from);
	struct iovec iov[2] = { { x, 5 }, { y, 5 } };
	struct msghdr mh = { .msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = iov,
			     .msg_iovlen = 2 };

	peer_cmd("listen %d w30,fin,ra", env.port);
	int s = tcp_connect(0);
	expect(wait_ev(s, POLLRDHUP, 10000) & POLLRDHUP, "data and FIN arrive");
	memset(&from, 0, sizeof(from));
	recdata("recvfrom 10", recvfrom(s, buf, 10, 0, (struct sockaddr *)&from, &flen), buf);
	ob_begin("recvfrom address");
	ob_int("addrlen", (long)flen);
	ob_end();
	long r = rec("recvmsg 5+5", recvmsg(s, &mh, 0));
	ob_begin("recvmsg result");
	ob_int("namelen", (long)mh.msg_namelen);
	ob_int("flags", mh.msg_flags);
	ob_end();
	expect(r == 10 && fnv(y, 5, fnv(x, 5, FNV_INIT)) == pattern_sum(10, 10),
	       "recvmsg scattered the next 10 bytes");
	mh.msg_namelen = 0;
	mh.msg_name = NULL;
	rec("recvmsg MSG_PEEK", recvmsg(s, &mh, MSG_PEEK));
	rec_recv("recv rest", s, 32, 0);
	rec("recvmsg at the end", recvmsg(s, &mh, 0));
	hold(s, 1);
	rec("close", close(s));
	peer_result();
}

static void sc_send_variants(void)
{
	uint8_t buf[20];
	struct iovec iov[2];
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	struct sockaddr_storage ss;
	int len = sa_remote(&ss, 0);

	peer_cmd("listen %d ra", env.port);
	int s = tcp_connect(0);
	rec("send MSG_DONTWAIT", send_pat(s, 10, MSG_DONTWAIT));
	pattern(buf, 10, 10);
	rec("sendto no address", sendto(s, buf, 10, 0, NULL, 0));
	pattern(buf, 20, 10);
	rec("sendto the peer's address", sendto(s, buf, 10, 0, (struct sockaddr *)&ss,
						(socklen_t)len));
	pattern(buf, 30, 20);
	iov[0] = (struct iovec){ buf, 8 };
	iov[1] = (struct iovec){ buf + 8, 12 };
	rec("sendmsg 8+12", sendmsg(s, &mh, 0));
	/* send_pat's own offset has not seen the three calls above: catch it up */
	uint8_t tail[30];
	pattern(tail, 50, 30);
	rec("send MSG_MORE", send(s, tail, 10, MSG_MORE));
	rec("send after MSG_MORE", send(s, tail + 10, 10, 0));
	rec("send MSG_NOSIGNAL", send(s, tail + 20, 10, MSG_NOSIGNAL));
	hold(s, 1);
	rec("shutdown SHUT_WR", shutdown(s, SHUT_WR));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 80 && peer_sum_is(r, 0, 0, 80),
	       "the peer got the 80 bytes of every send variant, in order");
	rec("close", close(s));
}

static void sc_sendfile(void)
{
	char path[] = "/tmp/mstack-compat-XXXXXX";
	uint8_t buf[4096];
	const size_t size = 200000;

	int f = mkstemp(path);
	if (f < 0) {
		expect(0, "a temporary file");
		return;
	}
	unlink(path);
	for (size_t off = 0; off < size; off += sizeof(buf)) {
		size_t n = size - off < sizeof(buf) ? size - off : sizeof(buf);
		pattern(buf, off, n);
		if (write(f, buf, n) != (ssize_t)n)
			expect(0, "writing the temporary file");
	}
	peer_cmd("listen %d ra", env.port);
	int s = tcp_connect(0);
	off_t off = 0;
	long total = 0;
	for (int i = 0; i < 10000 && off < 100000; i++) {
		long r = sendfile(s, f, &off, (size_t)(100000 - off));
		if (r <= 0)
			break;
		total += r;
	}
	ob_begin("sendfile with an offset");
	ob_int("total", total);
	ob_int("offset", (long)off);
	ob_int("file_position", (long)lseek(f, 0, SEEK_CUR));
	ob_end();
	lseek(f, 100000, SEEK_SET);
	for (int i = 0; i < 10000; i++) {
		long r = sendfile(s, f, NULL, size);
		if (r <= 0) {
			rec("sendfile at the end of the file", r);
			break;
		}
		total += r;
	}
	ob_begin("sendfile from the file position");
	ob_int("total", total);
	ob_int("file_position", (long)lseek(f, 0, SEEK_CUR));
	ob_end();
	hold(s, 1);
	rec("shutdown SHUT_WR", shutdown(s, SHUT_WR));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == (long)size && peer_sum_is(r, 0, 0, size),
	       "the peer got the file byte-exact");
	close(f);
	rec("close", close(s));
}

static void sc_sendfile64_offset(void)
{
	/* sendfile64 by name (an ordinary binary built with large files links it) from an offset
	 * in the middle of the file: the file position is left alone */
	char path[] = "/tmp/mstack-compat-XXXXXX";
	uint8_t buf[5000];

	int f = mkstemp(path);
	unlink(path);
	pattern(buf, 0, sizeof(buf));
	if (f < 0 || write(f, buf, sizeof(buf)) != (ssize_t)sizeof(buf)) {
		expect(0, "a temporary file");
		return;
	}
	peer_cmd("listen %d ra", env.port);
	int s = tcp_connect(0);
	off64_t off = 1000;
	long r = rec("sendfile64 from 1000", sendfile64(s, f, &off, 3000));
	ob_begin("after sendfile64");
	ob_int("offset", (long)off);
	ob_int("file_position", (long)lseek(f, 0, SEEK_CUR));
	ob_end();
	rec("sendfile64 of a socket (not a file)", sendfile64(s, s, NULL, 10));
	hold(s, 1);
	rec("shutdown SHUT_WR", shutdown(s, SHUT_WR));
	const char *res = peer_result();
	expect(r == 3000 && peer_field_int(res, 0, "read") == 3000 && peer_sum_is(res, 0, 1000, 3000),
	       "the peer got bytes 1000..3999 of the file");
	close(f);
	rec("close", close(s));
}

/* -- client: shutdown and close ----------------------------------------------------------------- */

static void sc_shutdown_wr(void)
{
	peer_cmd("listen %d ra,g,w10,cl", env.port);
	int s = tcp_connect(0);
	rec("send", send_pat(s, 10, 0));
	rec("shutdown SHUT_WR", shutdown(s, SHUT_WR));
	rec("send after SHUT_WR", send_pat(s, 10, MSG_NOSIGNAL));
	expect(errno == EPIPE, "sending after SHUT_WR: EPIPE");
	hold(s, 1);
	peer_go();
	expect(drain(s, 100) == 10, "the other direction still carries data");
	rec("close", close(s));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 10, "the peer saw 10 bytes and our FIN");
}

static void sc_shutdown_rd(void)
{
	char buf[8];

	peer_cmd("listen %d ra", env.port);
	int s = tcp_connect(0);
	rec("shutdown SHUT_RD", shutdown(s, SHUT_RD));
	rec("recv after SHUT_RD", recv(s, buf, sizeof(buf), 0));
	pollrec("after SHUT_RD", s, POLLIN | POLLOUT | POLLRDHUP, 0);
	rec("send still works", send_pat(s, 10, 0));
	hold(s, 1);
	rec("shutdown SHUT_WR", shutdown(s, SHUT_WR));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 10 && !strcmp(peer_end(r, 0), "eof"),
	       "SHUT_RD left sending alone");
	rec("close", close(s));
}

static void sc_shutdown_rdwr(void)
{
	char buf[8];

	peer_cmd("listen %d ra", env.port);
	int s = tcp_connect(0);
	hold(s, 1);
	rec("shutdown SHUT_RDWR", shutdown(s, SHUT_RDWR));
	rec("send after SHUT_RDWR", send_pat(s, 10, MSG_NOSIGNAL));
	expect(errno == EPIPE, "EPIPE");
	rec("recv after SHUT_RDWR", recv(s, buf, sizeof(buf), 0));
	const char *r = peer_result();
	expect(!strcmp(peer_end(r, 0), "eof"), "the peer sees end of stream");
	pollrec("after SHUT_RDWR", s, POLLIN | POLLOUT | POLLRDHUP, 0);
	rec("shutdown bad how", shutdown(s, 7));
	rec("close", close(s));
}

static void sc_peer_halfclose(void)
{
	peer_cmd("listen %d w10,fin,r10,cl", env.port);
	int s = tcp_connect(0);
	expect(drain(s, 100) == 10, "10 bytes, then end of stream");
	pollrec("after the peer's FIN", s, POLLIN | POLLOUT | POLLRDHUP, 0);
	hold(s, 1);
	rec("send into the half-closed connection", send_pat(s, 10, 0));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 10, "the peer still reads after its FIN");
	rec("close", close(s));
}

static void sc_close_unread_rst(void)
{
	peer_cmd("listen %d w100,ra", env.port);
	int s = tcp_connect(0);
	expect(wait_ev(s, POLLIN, 10000) & POLLIN, "data arrives (and is never read)");
	hold(s, 1);
	rec("close with unread data", close(s));
	const char *r = peer_result();
	expect(!strcmp(peer_end(r, 0), "reset"), "the peer sees a reset, not a FIN");
}

static void sc_close_range(void)
{
	peer_cmd("listen %d e", env.port);
	int s = tcp_connect(0);
	expect(dup2(s, 100) == 100 && dup2(s, 101) == 101, "dup2 to 100 and 101");
	rec("close_range CLOEXEC", close_range(100, 101, CLOSE_RANGE_CLOEXEC));
	fd_flags("100 after close_range CLOEXEC", 100);
	rec("close_range", close_range(100, 101, 0));
	rec("fcntl F_GETFD on a closed fd", fcntl(100, F_GETFD));
	expect(errno == EBADF, "closed by close_range: EBADF");
	echo_check(s, 10);
	hold(s, 1);
	rec("close", close(s));
	const char *r = peer_result();
	expect(!strcmp(peer_end(r, 0), "eof"), "the last close ends the connection");
}

static void sc_dup_data(void)
{
	peer_cmd("listen %d e", env.port);
	int s = tcp_connect(0);
	int d = recfd("dup", dup(s));
	rec("send through the duplicate", send_pat(d, 10, 0));
	rec_recv("recv through the original", s, 10, MSG_WAITALL);
	rec("close the original", close(s));
	echo_check(d, 20);
	hold(d, 1);
	rec("close the duplicate", close(d));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 30 && !strcmp(peer_end(r, 0), "eof"),
	       "closing one descriptor kept the connection; the last one ended it");
}

static void sc_dup2_dup3(void)
{
	peer_cmd("listen %d e", env.port);
	int s = tcp_connect(0);
	expect(rec("dup2 to 50", dup2(s, 50)) == 50, "dup2 returns the target");
	expect(dup2(s, s) == s, "dup2 onto itself returns it");
	rec("dup3 onto itself", dup3(s, s, 0));
	expect(errno == EINVAL, "dup3 onto itself: EINVAL");
	expect(rec("dup3 to 51 O_CLOEXEC", dup3(s, 51, O_CLOEXEC)) == 51, "dup3 returns the target");
	fd_flags("51", 51);
	fd_flags("50", 50);
	rec("send via 51", send_pat(51, 10, 0));
	rec_recv("recv via 50", 50, 10, MSG_WAITALL);
	rec("close the original", close(s));
	rec("close 50", close(50));
	echo_check(51, 10);
	hold(51, 1);
	rec("close 51", close(51));
	peer_result();
}

static void sc_fcntl_ops(void)
{
	char buf[8];

	peer_cmd("listen %d e", env.port);
	int s = tcp_connect(0);
	fd_flags("fresh", s);
	int fl = fcntl(s, F_GETFL);
	rec("F_SETFL O_NONBLOCK", fcntl(s, F_SETFL, fl | O_NONBLOCK));
	fd_flags("non-blocking", s);
	rec("recv (non-blocking, empty)", recv(s, buf, sizeof(buf), 0));
	expect(errno == EAGAIN, "EAGAIN");
	rec("F_SETFL back", fcntl(s, F_SETFL, fl));
	rec("F_SETFD FD_CLOEXEC", fcntl(s, F_SETFD, FD_CLOEXEC));
	fd_flags("cloexec", s);
	int d = fcntl(s, F_DUPFD, 60);
	expect(rec("F_DUPFD 60", d >= 60), "F_DUPFD gives the lowest free fd >= 60");
	int c = fcntl(s, F_DUPFD_CLOEXEC, 70);
	expect(rec("F_DUPFD_CLOEXEC 70", c >= 70), "F_DUPFD_CLOEXEC likewise");
	fd_flags("F_DUPFD copy", d);
	fd_flags("F_DUPFD_CLOEXEC copy", c);
	rec("F_SETFL O_NONBLOCK on the copy", fcntl(d, F_SETFL, fl | O_NONBLOCK));
	fd_flags("the original shares the status flags", s);
	rec("F_SETFL back", fcntl(d, F_SETFL, fl));
	echo_check(d, 10);
	rec("close the copy", close(d));
	rec("close the cloexec copy", close(c));
	echo_check(s, 10);
	hold(s, 1);
	rec("close", close(s));
	peer_result();
}

static void sc_ioctl_fionbio_fionread(void)
{
	char buf[32];
	int on = 1, n = -1;

	peer_cmd("listen %d g,w20,fin,ra", env.port);
	int s = tcp_connect(0);
	rec("ioctl FIONBIO 1", ioctl(s, FIONBIO, &on));
	fd_flags("after FIONBIO", s);
	rec("recv (empty)", recv(s, buf, sizeof(buf), 0));
	expect(errno == EAGAIN, "FIONBIO made it non-blocking");
	rec("ioctl FIONREAD (empty)", ioctl(s, FIONREAD, &n));
	ob_begin("FIONREAD value");
	ob_int("bytes", n);
	ob_end();
	hold(s, 1);
	peer_go();
	expect(wait_ev(s, POLLRDHUP, 10000) & POLLRDHUP, "20 bytes and FIN arrive");
	rec("ioctl FIONREAD", ioctl(s, FIONREAD, &n));
	ob_begin("FIONREAD value");
	ob_int("bytes", n);
	ob_end();
	expect(n == 20, "FIONREAD counts the 20 unread bytes");
	on = 0;
	rec("ioctl FIONBIO 0", ioctl(s, FIONBIO, &on));
	fd_flags("after FIONBIO 0", s);
	expect(drain(s, 100) == 20, "the 20 bytes");
	rec("close", close(s));
	peer_result();
}

/* -- client: readiness ----------------------------------------------------------------------- */

static void sc_poll_states(void)
{
	const short all = POLLIN | POLLOUT | POLLRDHUP | POLLPRI;
	char buf[16];

	peer_cmd("listen %d g,w10,g,fin,g,rst", env.port);
	int s = tcp_connect(0);
	expect(pollrec("connected", s, all, 0) == POLLOUT, "connected: POLLOUT only");
	peer_go();
	expect(wait_ev(s, POLLIN, 10000) & POLLIN, "data");
	pollrec("data pending", s, all, 0);
	rec_recv("recv", s, 10, 0);
	peer_go();
	expect(wait_ev(s, POLLRDHUP, 10000) & POLLRDHUP, "FIN");
	pollrec("peer's FIN", s, all, 0);
	hold(s, 1);
	peer_go();
	expect(wait_ev(s, POLLHUP, 10000) & POLLHUP, "reset");
	pollrec("peer's reset", s, all, 0);
	rec("recv after the reset", recv(s, buf, sizeof(buf), 0));
	rec("close", close(s));
	peer_result();
}

static void sc_poll_multi(void)
{
	/* one poll() over a UTCP socket, a pipe and a closed fd (POLLNVAL) */
	int p[2];
	struct pollfd fds[3];
	char m[3][64];

	peer_cmd("listen %d g,w10,ra", env.port);
	int s = tcp_connect(0);
	if (pipe(p) < 0)
		expect(0, "pipe");
	fds[0] = (struct pollfd){ .fd = s, .events = POLLIN };
	fds[1] = (struct pollfd){ .fd = p[0], .events = POLLIN };
	fds[2] = (struct pollfd){ .fd = 199, .events = POLLIN };
	int r = poll(fds, 3, 0);
	ob_begin("poll socket+pipe+closed");
	ob_int("ret", r);
	ob_str("sock", mask_str(fds[0].revents, m[0], 64));
	ob_str("pipe", mask_str(fds[1].revents, m[1], 64));
	ob_str("closed", mask_str(fds[2].revents, m[2], 64));
	ob_end();
	if (write(p[1], "x", 1) != 1)
		expect(0, "pipe write");
	hold(s, 1);
	peer_go();
	expect(wait_ev(s, POLLIN, 10000) & POLLIN, "data");
	r = poll(fds, 3, 0);
	ob_begin("poll socket+pipe+closed");
	ob_int("ret", r);
	ob_str("sock", mask_str(fds[0].revents, m[0], 64));
	ob_str("pipe", mask_str(fds[1].revents, m[1], 64));
	ob_str("closed", mask_str(fds[2].revents, m[2], 64));
	ob_end();
	expect(r == 3, "three descriptors ready");
	rec_recv("recv", s, 10, 0);
	rec("close", close(s));
	close(p[0]);
	close(p[1]);
	peer_result();
}

static void sc_ppoll_sigmask(void)
{
	struct pollfd p;
	struct timespec ts = { 0, 50 * 1000000 };
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR2);
	peer_cmd("listen %d g,w10,ra", env.port);
	int s = tcp_connect(0);
	p = (struct pollfd){ .fd = s, .events = POLLIN };
	rec("ppoll 50ms (nothing)", ppoll(&p, 1, &ts, &mask));
	hold(s, 1);
	peer_go();
	ts.tv_sec = 10;
	long r = rec("ppoll (data)", ppoll(&p, 1, &ts, &mask));
	expect(r == 1 && (p.revents & POLLIN), "ppoll reports the data");
	rec_recv("recv", s, 10, 0);
	rec("close", close(s));
	peer_result();
}

static void sc_select_rw(void)
{
	fd_set r, w;
	struct timeval tv = { 0, 0 };

	peer_cmd("listen %d g,w10,ra", env.port);
	int s = tcp_connect(0);
	FD_ZERO(&r);
	FD_ZERO(&w);
	FD_SET(s, &r);
	FD_SET(s, &w);
	rec("select (connected)", select(s + 1, &r, &w, NULL, &tv));
	ob_begin("select sets");
	ob_int("read", FD_ISSET(s, &r));
	ob_int("write", FD_ISSET(s, &w));
	ob_end();
	hold(s, 1);
	peer_go();
	FD_ZERO(&r);
	FD_SET(s, &r);
	tv.tv_sec = 10;
	long n = rec("select (data)", select(s + 1, &r, NULL, NULL, &tv));
	expect(n == 1 && FD_ISSET(s, &r), "select reports the data");
	rec_recv("recv", s, 10, 0);
	FD_ZERO(&r);
	FD_SET(s, &r);
	tv = (struct timeval){ 0, 50000 };
	rec("select 50ms (nothing)", select(s + 1, &r, NULL, NULL, &tv));
	rec("close", close(s));
	peer_result();
}

static void sc_pselect_sigmask(void)
{
	fd_set r;
	struct timespec ts = { 0, 50 * 1000000 };
	sigset_t mask;

	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR2);
	peer_cmd("listen %d g,w10,fin,ra", env.port);
	int s = tcp_connect(0);
	FD_ZERO(&r);
	FD_SET(s, &r);
	rec("pselect 50ms (nothing)", pselect(s + 1, &r, NULL, NULL, &ts, &mask));
	hold(s, 1);
	peer_go();
	FD_ZERO(&r);
	FD_SET(s, &r);
	ts.tv_sec = 10;
	long n = rec("pselect (data)", pselect(s + 1, &r, NULL, NULL, &ts, &mask));
	expect(n == 1 && FD_ISSET(s, &r), "pselect reports the data");
	expect(drain(s, 100) == 10, "10 bytes then end of stream");
	FD_ZERO(&r);
	FD_SET(s, &r);
	ts = (struct timespec){ 0, 0 };
	n = rec("pselect at end of stream", pselect(s + 1, &r, NULL, NULL, &ts, NULL));
	expect(n == 1, "end of stream is readable");
	rec("close", close(s));
	peer_result();
}

static void sc_epoll_level(void)
{
	peer_cmd("listen %d g,w10,ra", env.port);
	int s = tcp_connect(0);
	int ep = recfd("epoll_create1", epoll_create1(EPOLL_CLOEXEC));
	epadd(ep, EPOLL_CTL_ADD, s, EPOLLIN, 1);
	epwait("nothing yet", ep, 0);
	hold(s, 1);
	peer_go();
	expect(epwait("data", ep, 10000) == 1, "level-triggered: data reported");
	struct epoll_event ev;
	sigset_t mask;
	struct timespec zero = { 0, 0 };
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR2);
	expect(rec("epoll_pwait (still unread)", epoll_pwait(ep, &ev, 1, 0, &mask)) == 1,
	       "level-triggered: reported again while unread");
	rec_recv("recv", s, 10, 0);
	expect(rec("epoll_pwait2 (all read)", epoll_pwait2(ep, &ev, 1, &zero, &mask)) == 0,
	       "nothing once read");
	rec("close", close(s));
	close(ep);
	peer_result();
}

static void sc_epoll_edge(void)
{
	char buf[8];

	peer_cmd("listen %d g,w10,g,w10,ra", env.port);
	int s = tcp_connect(0);
	int ep = recfd("epoll_create", epoll_create(4));
	epadd(ep, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLET, 1);
	hold(s, 1);
	peer_go();
	expect(epwait("first data", ep, 10000) == 1, "edge: reported once");
	expect(epwait("again", ep, 0) == 0, "edge: not again");
	recdata("recv 5 of 10", recv(s, buf, 5, 0), buf);
	expect(epwait("after a partial read", ep, 0) == 0, "edge: a partial read re-arms nothing");
	peer_go();
	expect(epwait("second data", ep, 10000) == 1, "edge: new data is a new edge");
	rec_recv("recv the rest", s, 64, 0);
	rec("close", close(s));
	close(ep);
	peer_result();
}

static void sc_epoll_oneshot(void)
{
	peer_cmd("listen %d g,w10,g,w10,ra", env.port);
	int s = tcp_connect(0);
	int ep = recfd("epoll_create1", epoll_create1(0));
	epadd(ep, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLONESHOT, 7);
	hold(s, 1);
	peer_go();
	expect(epwait("first data", ep, 10000) == 1, "one-shot: reported");
	rec_recv("recv", s, 10, 0);
	peer_go();
	expect(epwait("disarmed", ep, 200) == 0, "one-shot: disarmed after one event");
	epadd(ep, EPOLL_CTL_MOD, s, EPOLLIN | EPOLLONESHOT, 8);
	expect(epwait("re-armed", ep, 10000) == 1, "re-armed by EPOLL_CTL_MOD");
	rec_recv("recv", s, 10, 0);
	rec("close", close(s));
	close(ep);
	peer_result();
}

static void sc_epoll_exclusive(void)
{
	peer_cmd("listen %d g,w10,ra", env.port);
	int s = tcp_connect(0);
	int e1 = recfd("epoll_create1", epoll_create1(0));
	int e2 = recfd("epoll_create1", epoll_create1(0));
	epadd(e1, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLEXCLUSIVE, 1);
	epadd(e1, EPOLL_CTL_MOD, s, EPOLLIN, 1);
	expect(errno == EINVAL, "EPOLLEXCLUSIVE entries cannot be modified");
	epadd(e2, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLEXCLUSIVE | EPOLLONESHOT, 2);
	expect(errno == EINVAL, "EPOLLEXCLUSIVE with EPOLLONESHOT: EINVAL");
	epadd(e2, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLEXCLUSIVE, 2);
	hold(s, 1);
	peer_go();
	/* Nobody waits in either set when the data arrives (an exclusive wake-up would stop at
	 * the first set with a waiter): both sets then hold the event. */
	expect(wait_ev(s, POLLIN, 10000) & POLLIN, "data");
	expect(epwait("first instance", e1, 0) == 1, "reported to the first instance");
	expect(epwait("second instance", e2, 0) == 1, "and to the second (nobody was waiting)");
	rec_recv("recv", s, 10, 0);
	rec("close", close(s));
	close(e1);
	close(e2);
	peer_result();
}

static void sc_epoll_rdhup(void)
{
	peer_cmd("listen %d g,w5,g,fin,ra", env.port);
	int s = tcp_connect(0);
	int ep = recfd("epoll_create1", epoll_create1(0));
	epadd(ep, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP, 3);
	hold(s, 1);
	peer_go();
	expect(epwait("data", ep, 10000) == 1, "data");
	rec_recv("recv", s, 5, 0);
	expect(epwait("nothing", ep, 0) == 0, "nothing pending");
	peer_go();
	expect(epwait("FIN", ep, 10000) == 1, "EPOLLRDHUP on the peer's FIN");
	rec_recv("recv at the end", s, 5, 0);
	rec("close", close(s));
	close(ep);
	peer_result();
}

static void sc_epoll_mixed(void)
{
	int p[2], u[2];

	peer_cmd("listen %d g,w10,ra", env.port);
	int s = tcp_connect(0);
	if (pipe(p) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, u) < 0)
		expect(0, "pipe and socketpair");
	int ep = recfd("epoll_create1", epoll_create1(0));
	epadd(ep, EPOLL_CTL_ADD, s, EPOLLIN, 1);
	epadd(ep, EPOLL_CTL_ADD, p[0], EPOLLIN, 2);
	epadd(ep, EPOLL_CTL_ADD, u[0], EPOLLIN, 3);
	expect(epwait("nothing", ep, 0) == 0, "nothing ready");
	if (write(p[1], "x", 1) != 1)
		expect(0, "pipe write");
	expect(epwait("the pipe", ep, 0) == 1, "only the pipe");
	if (write(u[1], "y", 1) != 1)
		expect(0, "unix write");
	hold(s, 1);
	peer_go();
	expect(wait_ev(s, POLLIN, 10000) & POLLIN, "socket data");
	struct epoll_event ev[8];
	int n = epoll_wait(ep, ev, 8, 0);
	uint32_t tags = 0;
	for (int i = 0; i < n; i++)
		tags |= 1u << ev[i].data.u32;
	ob_begin("epoll_wait all three");
	ob_int("ret", n);
	ob_int("tags", tags); /* the order of a ready list is not defined: a set */
	ob_end();
	expect(n == 3 && tags == 0xe, "UTCP socket, pipe and unix socket all reported");
	rec_recv("recv", s, 10, 0);
	char c;
	if (read(p[0], &c, 1) != 1 || read(u[0], &c, 1) != 1)
		expect(0, "kernel reads");
	expect(epwait("all read", ep, 0) == 0, "nothing left");
	rec("close", close(s));
	close(ep);
	close(p[0]);
	close(p[1]);
	close(u[0]);
	close(u[1]);
	peer_result();
}

static void sc_epoll_nested(void)
{
	peer_cmd("listen %d g,w10,ra", env.port);
	int s = tcp_connect(0);
	int inner = recfd("epoll_create1 inner", epoll_create1(0));
	int outer = recfd("epoll_create1 outer", epoll_create1(0));
	epadd(inner, EPOLL_CTL_ADD, s, EPOLLIN, 1);
	epadd(outer, EPOLL_CTL_ADD, inner, EPOLLIN, 9);
	expect(epwait("outer, nothing", outer, 0) == 0, "nothing");
	hold(s, 1);
	peer_go();
	expect(epwait("outer", outer, 10000) == 1, "the outer set reports the inner one");
	expect(epwait("inner", inner, 0) == 1, "the inner set reports the socket");
	rec_recv("recv", s, 10, 0);
	expect(epwait("outer, all read", outer, 0) == 0, "nothing once read");
	rec("close", close(s));
	close(outer);
	close(inner);
	peer_result();
}

static void sc_epoll_ctl_errors(void)
{
	char path[] = "/tmp/mstack-compat-XXXXXX";
	int p[2];

	peer_cmd("listen %d e", env.port);
	int s = tcp_connect(0);
	int ep = recfd("epoll_create1", epoll_create1(0));
	if (pipe(p) < 0)
		expect(0, "pipe");
	epadd(ep, EPOLL_CTL_ADD, s, EPOLLIN, 1);
	epadd(ep, EPOLL_CTL_ADD, s, EPOLLIN, 1);
	expect(errno == EEXIST, "ADD twice: EEXIST");
	epadd(ep, EPOLL_CTL_MOD, p[0], EPOLLIN, 2);
	expect(errno == ENOENT, "MOD of a descriptor not in the set: ENOENT");
	epadd(ep, EPOLL_CTL_DEL, s, 0, 0);
	epadd(ep, EPOLL_CTL_DEL, s, 0, 0);
	expect(errno == ENOENT, "DEL twice: ENOENT");
	epadd(ep, EPOLL_CTL_ADD, ep, EPOLLIN, 3);
	expect(errno == EINVAL, "a set cannot hold itself");
	int f = mkstemp(path);
	unlink(path);
	epadd(ep, EPOLL_CTL_ADD, f, EPOLLIN, 4);
	expect(errno == EPERM, "a regular file: EPERM");
	epadd(ep, EPOLL_CTL_ADD, s, EPOLLOUT, 5);
	expect(epwait("writable", ep, 0) == 1, "a connected socket is writable");
	echo_check(s, 10);
	hold(s, 1);
	rec("close", close(s));
	expect(epwait("after close", ep, 0) == 0, "closing the socket removed it from the set");
	close(ep);
	close(f);
	close(p[0]);
	close(p[1]);
	peer_result();
}

/* -- client: errors and signals --------------------------------------------------------------- */

static volatile sig_atomic_t sigpipes, sigusr1s;

static void on_sigpipe(int sig)
{
	(void)sig;
	sigpipes++;
}

static void sc_epipe_sigpipe(void)
{
	struct sigaction sa = { .sa_handler = on_sigpipe };

	sigaction(SIGPIPE, &sa, NULL);
	peer_cmd("listen %d g,rst", env.port);
	int s = tcp_connect(0);
	hold(s, 1);
	peer_go();
	expect(wait_ev(s, POLLHUP, 10000) & POLLHUP, "the reset arrives");
	rec("send after the reset", send_pat(s, 10, 0));
	ob_begin("SIGPIPE count");
	ob_int("n", sigpipes);
	ob_end();
	rec("send again", send_pat(s, 10, 0));
	expect(errno == EPIPE && sigpipes >= 1, "EPIPE and SIGPIPE");
	int before = sigpipes;
	rec("send MSG_NOSIGNAL", send_pat(s, 10, MSG_NOSIGNAL));
	expect(errno == EPIPE && sigpipes == before, "MSG_NOSIGNAL: EPIPE without SIGPIPE");
	uint8_t b[4] = { 0 };
	rec("write", write(s, b, 4));
	ob_begin("SIGPIPE count");
	ob_int("n", sigpipes);
	ob_end();
	rec("close", close(s));
	peer_result();
}

static void sc_recv_data_then_reset(void)
{
	char buf[64];

	peer_cmd("listen %d g,w10,rst", env.port);
	int s = tcp_connect(0);
	hold(s, 1);
	peer_go();
	expect(wait_ev(s, POLLHUP, 10000) & POLLHUP, "data and the reset arrive");
	for (int i = 0; i < 3; i++)
		if (recdata("recv", recv(s, buf, sizeof(buf), 0), buf) <= 0)
			break;
	expect(errno == ECONNRESET, "the reset is reported");
	rec("close", close(s));
	peer_result();
}

static void sc_write_after_peer_close(void)
{
	peer_cmd("listen %d g,cl", env.port);
	int s = tcp_connect(0);
	hold(s, 1);
	peer_go();
	expect(drain(s, 100) == 0, "end of stream");
	rec("send to a closed peer", send_pat(s, 10, MSG_NOSIGNAL));
	expect(wait_ev(s, POLLHUP, 10000) & POLLHUP, "the peer answers with a reset");
	rec("send after the reset", send_pat(s, 10, MSG_NOSIGNAL));
	expect(errno == EPIPE || errno == ECONNRESET, "the send fails");
	rec("close", close(s));
	peer_result();
}

static void sc_nonblock_write_full(void)
{
	long total = 0, r = 0;

	peer_cmd("listen %d g,ra", env.port);
	int s = tcp_socket(SOCK_NONBLOCK);
	struct sockaddr_storage ss;
	int len = sa_remote(&ss, 0);
	setint("SO_SNDBUF", s, SOL_SOCKET, SO_SNDBUF, 4096);
	rec("connect", connect(s, (struct sockaddr *)&ss, (socklen_t)len));
	expect(wait_ev(s, POLLOUT, 10000) & POLLOUT, "connected");
	/* Fill until the send buffer stays full: ACKs of data in flight may free some space
	 * after the first EAGAIN, until the peer's receive window is closed too. */
	int e = 0, stuck = 0;
	for (int round = 0; round < 200 && !stuck; round++) {
		for (int i = 0; i < 5000; i++) {
			r = send_pat(s, 65536, 0);
			if (r < 0)
				break;
			total += r;
		}
		e = errno;
		struct pollfd pf = { .fd = s, .events = POLLOUT };
		stuck = r < 0 && poll(&pf, 1, 300) == 0;
	}
	ob_begin("send until full");
	ob_int("ret", r);
	ob_str("errno", r < 0 ? errname(e) : NULL);
	ob_int("stays_full", stuck);
	ob_end();
	expect(r < 0 && e == EAGAIN, "a full send buffer: EAGAIN");
	expect(stuck, "not writable while full");
	hold(s, 1);
	peer_go();
	expect(wait_ev(s, POLLOUT, 10000) & POLLOUT, "writable again once the peer reads");
	rec("shutdown SHUT_WR", shutdown(s, SHUT_WR));
	const char *res = peer_result();
	expect(peer_field_int(res, 0, "read") == total && peer_sum_is(res, 0, 0, (size_t)total),
	       "every accepted byte arrived");
	rec("close", close(s));
}

static pthread_t main_thread;
static atomic_int about_to_block;

static void on_sigusr1(int sig)
{
	(void)sig;
	sigusr1s++;
}

/* Whether the main thread sleeps in the kernel (blocked in the call under test). */
static int main_sleeping(void)
{
	char path[64], buf[256];
	snprintf(path, sizeof(path), "/proc/self/task/%ld/stat", (long)getpid());
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'S';
}

static void *interrupter(void *arg)
{
	int then_go = *(int *)arg;

	for (int i = 0; i < 5000 && !atomic_load(&about_to_block); i++)
		usleep(1000);
	for (int i = 0; i < 5000 && !main_sleeping(); i++)
		usleep(1000);
	usleep(50000);
	pthread_kill(main_thread, SIGUSR1);
	if (then_go) {
		usleep(50000);
		peer_go();
	}
	return NULL;
}

static void eintr_case(int restart)
{
	struct sigaction sa = { .sa_handler = on_sigusr1, .sa_flags = restart ? SA_RESTART : 0 };
	char buf[16];
	pthread_t t;

	sigaction(SIGUSR1, &sa, NULL);
	peer_cmd("listen %d g,w10,ra", env.port);
	int s = tcp_connect(0);
	hold(s, 1);
	main_thread = pthread_self();
	pthread_create(&t, NULL, interrupter, &restart);
	atomic_store(&about_to_block, 1);
	long r = recdata("blocking recv, interrupted", recv(s, buf, sizeof(buf), 0), buf);
	pthread_join(t, NULL);
	ob_begin("handler calls");
	ob_int("n", sigusr1s);
	ob_end();
	if (restart) {
		expect(r == 10 && sigusr1s == 1, "SA_RESTART: recv went on and got the data");
	} else {
		expect(r < 0 && errno == EINTR && sigusr1s == 1, "no SA_RESTART: EINTR");
		peer_go();
		rec_recv("recv again", s, 10, 0);
	}
	rec("close", close(s));
	peer_result();
}

static void sc_eintr_no_restart(void)
{
	eintr_case(0);
}

static void sc_eintr_sa_restart(void)
{
	eintr_case(1);
}

/* -- server ------------------------------------------------------------------------------------ */

static void sc_accept_basic(void)
{
	int l = tcp_listen(0, 1);
	names(l, 1);
	expect(getint("SO_ACCEPTCONN", l, SOL_SOCKET, SO_ACCEPTCONN) == 1, "a listener");
	peer_cmd("connect %d w10,r10,ra", env.port);
	int c = accept_rec(l, 0);
	names(c, 1);
	fd_flags("accepted", c);
	rec_recv("recv", c, 10, MSG_WAITALL);
	rec("send", send_pat(c, 10, 0));
	hold(c, 1);
	rec("close", close(c));
	rec("close the listener", close(l));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 10 && !strcmp(peer_end(r, 0), "eof"),
	       "the peer got 10 bytes and our FIN");
}

static void sc_accept_peer_address(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	socklen_t small = 4;

	int l = tcp_listen(0, 1);
	peer_cmd("connect %d e 2", env.port);
	int c = recfd("accept with address", accept(l, (struct sockaddr *)&a, &len));
	ob_begin("accepted address");
	ob_int("len", (long)len);
	ob_int("is_remote", is_remote(&a));
	ob_end();
	int c2 = recfd("accept with a short buffer", accept(l, (struct sockaddr *)&a, &small));
	ob_begin("short buffer");
	ob_int("len", (long)small); /* the full length, truncated copy */
	ob_end();
	echo_check(c, 10);
	echo_check(c2, 10);
	hold(c, 1);
	close(c);
	close(c2);
	close(l);
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 10 && peer_field_int(r, 1, "read") == 10,
	       "both connections echoed");
}

static void sc_accept4_flags(void)
{
	char buf[16];

	int l = tcp_listen(0, 1);
	rec("accept4 bad flags", accept4(l, NULL, NULL, 0x1));
	expect(errno == EINVAL, "accept4 with an unknown flag: EINVAL");
	peer_cmd("connect %d g,w10,ra", env.port);
	int c = accept_rec(l, SOCK_NONBLOCK | SOCK_CLOEXEC);
	fd_flags("accept4 NONBLOCK|CLOEXEC", c);
	rec("recv (non-blocking, empty)", recv(c, buf, sizeof(buf), 0));
	expect(errno == EAGAIN, "the accepted socket is non-blocking");
	hold(c, 1);
	peer_go();
	expect(wait_ev(c, POLLIN, 10000) & POLLIN, "data");
	rec_recv("recv", c, 10, 0);
	close(c);
	close(l);
	peer_result();
}

static void sc_accept_nonblock(void)
{
	int l = tcp_listen(0, 1);
	int fl = fcntl(l, F_GETFL);
	rec("F_SETFL O_NONBLOCK on the listener", fcntl(l, F_SETFL, fl | O_NONBLOCK));
	rec("accept (nobody yet)", accept(l, NULL, NULL));
	expect(errno == EAGAIN, "accept on an empty non-blocking listener: EAGAIN");
	peer_cmd("connect %d e", env.port);
	expect(pollrec("listener", l, POLLIN | POLLOUT, 10000) == POLLIN,
	       "a pending connection makes the listener readable (POLLIN only)");
	int c = accept_rec(l, 0);
	fd_flags("accepted from a non-blocking listener", c);
	echo_check(c, 10);
	hold(c, 1);
	close(c);
	close(l);
	peer_result();
}

static void sc_accept_multi(void)
{
	int c[3];

	int l = tcp_listen(0, 1);
	peer_cmd("connect %d w10,ra 3", env.port);
	for (int i = 0; i < 3; i++) {
		c[i] = accept_rec(l, 0);
		rec_recv("recv", c[i], 10, MSG_WAITALL);
	}
	hold(c[2], 1);
	for (int i = 0; i < 3; i++)
		close(c[i]);
	close(l);
	const char *r = peer_result();
	expect(!strcmp(peer_end(r, 0), "eof") && !strcmp(peer_end(r, 2), "eof"),
	       "three connections accepted and closed");
}

static void sc_listen_wildcard(void)
{
	struct sockaddr_storage ss;
	int len = sa_host(&ss, 0, 1);
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int one = 1;

	int l = tcp_socket(0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	rec("bind 0.0.0.0", bind(l, (struct sockaddr *)&ss, (socklen_t)len));
	rec("listen", listen(l, 8));
	getsockname(l, (struct sockaddr *)&a, &alen);
	ob_begin("listener name");
	ob_int("wildcard", a.sin_addr.s_addr == INADDR_ANY);
	ob_int("port_is_scenario", ntohs(a.sin_port) == env.port);
	ob_end();
	peer_cmd("connect %d e", env.port);
	int c = accept_rec(l, 0);
	names(c, 1);
	echo_check(c, 10);
	hold(c, 1);
	close(c);
	close(l);
	peer_result();
}

static void sc_bind_addrinuse(void)
{
	struct sockaddr_storage ss;
	int len = sa_host(&ss, 0, 0);
	int one = 1;

	int l = tcp_listen(0, 1);
	int b = tcp_socket(0);
	rec("bind a taken port", bind(b, (struct sockaddr *)&ss, (socklen_t)len));
	expect(errno == EADDRINUSE, "EADDRINUSE");
	close(b);
	b = tcp_socket(0);
	setsockopt(b, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	rec("bind with SO_REUSEADDR beside a listener", bind(b, (struct sockaddr *)&ss,
							     (socklen_t)len));
	expect(errno == EADDRINUSE, "SO_REUSEADDR does not share a listening port");
	close(b);
	peer_cmd("connect %d e", env.port);
	int c = accept_rec(l, 0);
	echo_check(c, 10);
	hold(c, 1);
	close(c);
	close(l);
	peer_result();
}

static void sc_reuseaddr_rebind(void)
{
	int l = tcp_listen(0, 1);
	peer_cmd("connect %d w10,ra", env.port);
	int c = accept_rec(l, 0);
	rec_recv("recv", c, 10, MSG_WAITALL);
	hold(c, 1);
	rec("close the connection first (TIME_WAIT here)", close(c));
	rec("close the listener", close(l));
	peer_result();
	l = tcp_listen(0, 1); /* SO_REUSEADDR: the TIME_WAIT does not block it */
	peer_cmd("connect %d w10,ra", env.port);
	c = accept_rec(l, 0);
	rec_recv("recv", c, 10, MSG_WAITALL);
	close(c);
	close(l);
	const char *r = peer_result();
	expect(!strcmp(peer_end(r, 0), "eof"), "the rebound listener served a connection");
}

static void sc_reuseport_pair(void)
{
	struct sockaddr_storage ss;
	int len = sa_host(&ss, 0, 0);
	int l[2], accepted = 0, last = -1, conns[4];

	for (int i = 0; i < 2; i++) {
		l[i] = tcp_socket(SOCK_NONBLOCK);
		setint("SO_REUSEPORT", l[i], SOL_SOCKET, SO_REUSEPORT, 1);
		rec("bind", bind(l[i], (struct sockaddr *)&ss, (socklen_t)len));
		rec("listen", listen(l[i], 8));
	}
	peer_cmd("connect %d w10,ra 4", env.port);
	for (int round = 0; round < 200 && accepted < 4; round++) {
		struct pollfd p[2] = { { l[0], POLLIN, 0 }, { l[1], POLLIN, 0 } };
		if (poll(p, 2, 10000) <= 0)
			break;
		for (int i = 0; i < 2 && accepted < 4; i++) {
			int c = accept(l[i], NULL, NULL);
			if (c >= 0)
				conns[accepted++] = last = c;
		}
	}
	ob_begin("accepted through both listeners");
	ob_int("total", accepted);
	ob_end();
	expect(accepted == 4, "all four connections were accepted by the group");
	if (last >= 0)
		hold(last, 1);
	for (int i = 0; i < accepted; i++)
		close(conns[i]);
	close(l[0]);
	close(l[1]);
	peer_result();
}

static void sc_tcp_defer_accept(void)
{
	int l = tcp_listen(0, 1);
	setint("TCP_DEFER_ACCEPT", l, IPPROTO_TCP, TCP_DEFER_ACCEPT, 2);
	getint("TCP_DEFER_ACCEPT", l, IPPROTO_TCP, TCP_DEFER_ACCEPT);
	peer_cmd("connect %d d300,w10,ra", env.port);
	int c = accept_rec(l, 0);
	rec_recv("recv MSG_DONTWAIT right after accept", c, 10, MSG_DONTWAIT);
	hold(c, 1);
	close(c);
	close(l);
	const char *r = peer_result();
	expect(!strcmp(peer_end(r, 0), "eof"), "served");
}

static void sc_tcp_fastopen_listener(void)
{
	int l = tcp_listen(0, 1);
	setint("TCP_FASTOPEN", l, IPPROTO_TCP, TCP_FASTOPEN, 5);
	expect(getint("TCP_FASTOPEN", l, IPPROTO_TCP, TCP_FASTOPEN) == 5, "TCP_FASTOPEN reads 5");
	peer_cmd("connect %d e", env.port);
	int c = accept_rec(l, 0);
	echo_check(c, 100);
	hold(c, 1);
	close(c);
	close(l);
	peer_result();
}

static void sc_select_listener(void)
{
	fd_set r;
	struct timeval tv = { 0, 0 };

	int l = tcp_listen(0, 1);
	FD_ZERO(&r);
	FD_SET(l, &r);
	rec("select (no connection)", select(l + 1, &r, NULL, NULL, &tv));
	peer_cmd("connect %d e", env.port);
	FD_ZERO(&r);
	FD_SET(l, &r);
	tv.tv_sec = 10;
	long n = rec("select (pending connection)", select(l + 1, &r, NULL, NULL, &tv));
	expect(n == 1 && FD_ISSET(l, &r), "select reports the pending connection");
	int c = accept_rec(l, 0);
	echo_check(c, 10);
	hold(c, 1);
	close(c);
	close(l);
	peer_result();
}

static void sc_epoll_listener_et(void)
{
	int got = 0, c[2] = { -1, -1 };

	int l = tcp_listen(0, 1);
	fcntl(l, F_SETFL, O_NONBLOCK);
	int ep = recfd("epoll_create1", epoll_create1(0));
	epadd(ep, EPOLL_CTL_ADD, l, EPOLLIN | EPOLLET, 1);
	expect(epwait("no connection", ep, 0) == 0, "nothing");
	peer_cmd("connect %d w10,ra 2", env.port);
	for (int round = 0; round < 20 && got < 2; round++) {
		struct epoll_event ev;
		if (epoll_wait(ep, &ev, 1, 10000) <= 0)
			break;
		for (int i = 0; i < 4 && got < 2; i++) {
			int a = accept(l, NULL, NULL);
			if (a < 0)
				break;
			c[got++] = a;
		}
	}
	ob_begin("accepted through an edge-triggered listener");
	ob_int("total", got);
	ob_end();
	expect(got == 2, "both connections accepted");
	if (c[1] >= 0)
		hold(c[1], 1);
	close(c[0]);
	close(c[1]);
	close(ep);
	close(l);
	peer_result();
}

static void sc_server_halfclose(void)
{
	/* listen first: a connection racing the listen() itself may reach the kernel's socket
	 * before the shim has registered it with mstackd (docs/shim.md) */
	int l = tcp_listen(0, 1);
	peer_cmd("connect %d w10,fin,ra", env.port);
	int c = accept_rec(l, 0);
	expect(drain(c, 100) == 10, "10 bytes, then the peer's FIN");
	tcp_state(c);
	rec("send after the peer's FIN", send_pat(c, 20, 0));
	hold(c, 1);
	rec("shutdown SHUT_WR", shutdown(c, SHUT_WR));
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 20 && !strcmp(peer_end(r, 0), "eof"),
	       "the peer got our 20 bytes and FIN");
	close(c);
	close(l);
}

static void sc_server_peer_reset(void)
{
	char buf[64];

	int l = tcp_listen(0, 1);
	peer_cmd("connect %d g,w10,rst", env.port);
	int c = accept_rec(l, 0);
	hold(c, 1);
	peer_go();
	expect(wait_ev(c, POLLHUP, 10000) & POLLHUP, "data and reset arrive");
	pollrec("after the reset", c, POLLIN | POLLOUT | POLLRDHUP, 0);
	for (int i = 0; i < 3; i++)
		if (recdata("recv", recv(c, buf, sizeof(buf), 0), buf) <= 0)
			break;
	expect(errno == ECONNRESET, "ECONNRESET");
	close(c);
	close(l);
	peer_result();
}

static void sc_server_close_unread(void)
{
	int l = tcp_listen(0, 1);
	peer_cmd("connect %d w100,ra", env.port);
	int c = accept_rec(l, 0);
	expect(wait_ev(c, POLLIN, 10000) & POLLIN, "data (never read)");
	hold(c, 1);
	rec("close with unread data", close(c));
	const char *r = peer_result();
	expect(!strcmp(peer_end(r, 0), "reset"), "the peer sees a reset");
	close(l);
}

static void sc_listener_close_pending(void)
{
	/* a listener closed with a connection in its queue: the peer's connection is reset */
	peer_cmd("listen %d e", env.port + 1); /* a second connection for the hold */
	int l = tcp_listen(0, 1);
	peer_cmd("connect %d g,r1", env.port);
	int h = tcp_connect(1);
	expect(wait_ev(l, POLLIN, 10000) & POLLIN, "a connection waits in the listener's queue");
	hold(h, 1);
	rec("close the listener with a queued connection", close(l));
	peer_go();
	close(h);
	const char *r = peer_result();
	expect(!strcmp(peer_end(r, 1), "reset") || !strcmp(peer_end(r, 0), "reset"),
	       "the queued connection was reset");
}

/* -- processes ------------------------------------------------------------------------------- */

static void sc_fork_child_accepts(void)
{
	int l = tcp_listen(0, 1);
	peer_cmd("connect %d w10,r10,ra", env.port);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		alarm(30); /* the watchdog is not inherited: a child never outlives its test */
		int c = accept_rec(l, 0);
		rec_recv("child recv", c, 10, MSG_WAITALL);
		rec("child send", send_pat(c, 10, 0));
		hold(c, 1);
		close(c);
		_exit(compat_failures ? 1 : 0);
	}
	int st = 0;
	rec("parent waitpid", waitpid(pid, &st, 0) == pid);
	expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child accepted and served");
	close(l);
	const char *r = peer_result();
	expect(peer_field_int(r, 0, "read") == 10 && !strcmp(peer_end(r, 0), "eof"),
	       "the peer got the child's 10 bytes and FIN");
}

static void sc_fork_accepted_conn_child(void)
{
	/* Not differential: under the shim a connection accepted before a fork stays with its
	 * process and the child gets an error (design.md 4a); natively the child shares it. */
	int l = tcp_listen(0, 1);
	peer_cmd("connect %d w10,ra", env.port);
	int c = accept_rec(l, 0);
	rec_recv("parent recv", c, 10, MSG_WAITALL);
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		alarm(30);
		long r = send(c, "child", 5, MSG_NOSIGNAL);
		int e = errno;
		ob_begin("child send on the parent's connection");
		ob_int("ret", r);
		if (r < 0)
			ob_str("errno", errname(e));
		ob_end();
		char buf[8];
		r = recv(c, buf, sizeof(buf), MSG_DONTWAIT);
		e = errno;
		ob_begin("child recv on the parent's connection");
		ob_int("ret", r);
		if (r < 0)
			ob_str("errno", errname(e));
		ob_end();
		_exit(0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	rec("parent send", send_pat(c, 10, 0));
	hold(c, 1);
	close(c);
	close(l);
	const char *r = peer_result();
	if (env.under_shim)
		expect(peer_field_int(r, 0, "read") == 10 && peer_sum_is(r, 0, 0, 10),
		       "under the shim: the child's bytes never reached the stream");
	else
		expect(peer_field_int(r, 0, "read") == 15, "natively: the child shares the stream");
}

static void sc_exec_keeps_listener(void)
{
	const char *fds = getenv("COMPAT_EXEC_FDS");

	if (fds) { /* the exec'd program */
		int l = -1, ctl = -1;
		if (sscanf(fds, "%d,%d", &l, &ctl) != 2) {
			expect(0, "COMPAT_EXEC_FDS");
			return;
		}
		peer_adopt(ctl);
		expect(getint("SO_ACCEPTCONN", l, SOL_SOCKET, SO_ACCEPTCONN) == 1,
		       "the inherited fd is still a listener");
		names(l, 1);
		peer_cmd("connect %d w10,r10,ra", env.port);
		int c = accept_rec(l, 0);
		rec_recv("recv", c, 10, MSG_WAITALL);
		rec("send", send_pat(c, 10, 0));
		hold(c, 1);
		close(c);
		close(l);
		const char *r = peer_result();
		expect(peer_field_int(r, 0, "read") == 10, "the exec'd program served");
		return;
	}
	int l = tcp_listen(0, 1);
	fd_flags("listener before exec", l);
	int ctl = peer_ctl_fd();
	if (ctl < 0) {
		peer_open();
		ctl = peer_ctl_fd();
	}
	fcntl(ctl, F_SETFD, 0);
	char buf[32];
	snprintf(buf, sizeof(buf), "%d,%d", l, ctl);
	setenv("COMPAT_EXEC_FDS", buf, 1);
	ob_begin("exec");
	ob_str("argv1", "exec_keeps_listener");
	ob_end();
	execl("/proc/self/exe", "compat-scenarios", "exec_keeps_listener", (char *)NULL);
	rec("execl", -1);
}

/* -- the table ---------------------------------------------------------------------------------- */

#define C(name, kind, about) { #name, sc_##name, kind, about, 1 }
const struct scenario scenarios[] = {
	C(connect_blocking, "client",
	  "blocking connect, getsockname/getpeername, echo"),
	C(connect_refused, "client",
	  "connect to a closed port: ECONNREFUSED"),
	C(connect_nonblock, "client",
	  "O_NONBLOCK connect: EINPROGRESS, POLLOUT, SO_ERROR, EISCONN"),
	C(connect_nonblock_refused, "client",
	  "non-blocking connect refused: POLLERR, SO_ERROR ECONNREFUSED then 0"),
	C(getpeername_unconnected, "client",
	  "getpeername ENOTCONN, getsockname before connect, double SHUT_WR"),
	C(connect_bound, "client",
	  "bind(host:0) then connect"),
	C(so_rcvtimeo, "client",
	  "SO_RCVTIMEO: EAGAIN after the timeout, then data"),
	C(so_sndtimeo, "client",
	  "SO_SNDTIMEO with a small SO_SNDBUF: EAGAIN, nothing lost"),
	C(sockopt_socket_level, "client",
	  "SO_REUSEADDR/REUSEPORT/KEEPALIVE/LINGER/RCVBUF/SNDBUF/TYPE/DOMAIN/PROTOCOL/ACCEPTCONN/ERROR"),
	C(sockopt_tcp_level, "client",
	  "TCP_NODELAY, KEEPIDLE/INTVL/CNT, CONGESTION, CORK, INFO"),
	C(tcp_info_states, "client",
	  "TCP_INFO state: ESTABLISHED, CLOSE_WAIT"),
	C(tcp_cork, "client",
	  "TCP_CORK: corked writes arrive once uncorked"),
	C(so_error_reset, "client",
	  "SO_ERROR after the peer's reset"),
	C(so_linger_zero, "client",
	  "SO_LINGER {1,0}: close sends a reset"),
	C(so_linger_graceful, "client",
	  "SO_LINGER {1,2}: close delivers everything"),
	C(read_write, "client",
	  "read/write, read 0 at end of stream"),
	C(readv_writev, "client",
	  "writev gathers, readv scatters"),
	C(recv_peek, "client",
	  "MSG_PEEK, then the same bytes again"),
	C(recv_dontwait, "client",
	  "MSG_DONTWAIT on an empty blocking socket: EAGAIN"),
	C(recv_waitall, "client",
	  "MSG_WAITALL across four segments"),
	C(recvfrom_recvmsg, "client",
	  "recvfrom address length, recvmsg iovecs and flags, MSG_PEEK"),
	C(send_variants, "client",
	  "send MSG_DONTWAIT/MSG_MORE/MSG_NOSIGNAL, sendto, sendmsg"),
	C(sendfile, "client",
	  "sendfile with an offset and from the file position"),
	C(sendfile64_offset, "client",
	  "sendfile64 from the middle of a file; sendfile from a socket fails"),
	C(shutdown_wr, "client",
	  "SHUT_WR: EPIPE on send, the other direction still works"),
	C(shutdown_rd, "client",
	  "SHUT_RD: recv 0, poll mask, sending still works"),
	C(shutdown_rdwr, "client",
	  "SHUT_RDWR: EPIPE, recv 0, the peer sees EOF; bad how: EINVAL"),
	C(peer_halfclose, "client",
	  "the peer's FIN: EOF here, sending still works"),
	C(close_unread_rst, "client",
	  "close with unread data: the peer sees a reset"),
	C(close_range, "client",
	  "close_range with CLOSE_RANGE_CLOEXEC and without"),
	C(dup_data, "client",
	  "dup: data through the duplicate, closing one keeps the other"),
	C(dup2_dup3, "client",
	  "dup2/dup3 targets, O_CLOEXEC, dup3 onto itself EINVAL"),
	C(fcntl_ops, "client",
	  "F_GETFL/F_SETFL O_NONBLOCK, FD_CLOEXEC, F_DUPFD, F_DUPFD_CLOEXEC, shared flags"),
	C(ioctl_fionbio_fionread, "client",
	  "FIONBIO, FIONREAD"),
	C(poll_states, "client",
	  "poll masks: connected, data, FIN, reset"),
	C(poll_multi, "client",
	  "poll over a UTCP socket, a pipe and a closed fd (POLLNVAL)"),
	C(ppoll_sigmask, "client",
	  "ppoll with a timeout and a signal mask"),
	C(select_rw, "client",
	  "select read/write sets and timeout"),
	C(pselect_sigmask, "client",
	  "pselect with a signal mask; EOF is readable"),
	C(epoll_level, "client",
	  "level-triggered epoll, epoll_pwait, epoll_pwait2"),
	C(epoll_edge, "client",
	  "EPOLLET: one report per edge"),
	C(epoll_oneshot, "client",
	  "EPOLLONESHOT, re-armed with EPOLL_CTL_MOD"),
	C(epoll_exclusive, "client",
	  "EPOLLEXCLUSIVE: MOD and ONESHOT refused, two sets"),
	C(epoll_rdhup, "client",
	  "EPOLLRDHUP on the peer's FIN"),
	C(epoll_mixed, "client",
	  "one epoll set: a UTCP socket, a pipe, an AF_UNIX pair"),
	C(epoll_nested, "client",
	  "epoll inside epoll"),
	C(epoll_ctl_errors, "client",
	  "EEXIST, ENOENT, EINVAL, EPERM; close removes from the set"),
	C(epipe_sigpipe, "client",
	  "after a reset: ECONNRESET, EPIPE and SIGPIPE; MSG_NOSIGNAL"),
	C(recv_data_then_reset, "client",
	  "data then reset: the data, then ECONNRESET"),
	C(write_after_peer_close, "client",
	  "writing to a closed peer: its reset, then EPIPE"),
	C(nonblock_write_full, "client",
	  "non-blocking send until full: EAGAIN, POLLOUT when drained"),
	C(eintr_no_restart, "client",
	  "blocking recv interrupted by a signal without SA_RESTART: EINTR"),
	C(eintr_sa_restart, "client",
	  "blocking recv interrupted by a signal with SA_RESTART: restarted"),
	C(accept_basic, "server",
	  "socket/bind/listen/accept, SO_ACCEPTCONN, names"),
	C(accept_peer_address, "server",
	  "accept's address, a short address buffer"),
	C(accept4_flags, "server",
	  "accept4 SOCK_NONBLOCK|SOCK_CLOEXEC; bad flags EINVAL"),
	C(accept_nonblock, "server",
	  "non-blocking listener: EAGAIN, POLLIN, flags not inherited"),
	C(accept_multi, "server",
	  "three connections through one listener"),
	C(listen_wildcard, "server",
	  "listener on 0.0.0.0: accepted socket's local address"),
	C(bind_addrinuse, "server",
	  "EADDRINUSE beside a listener, with and without SO_REUSEADDR"),
	C(reuseaddr_rebind, "server",
	  "SO_REUSEADDR rebind while a connection is in TIME_WAIT"),
	C(reuseport_pair, "server",
	  "two SO_REUSEPORT listeners share the connections"),
	C(tcp_defer_accept, "server",
	  "TCP_DEFER_ACCEPT: accept returns with the data there"),
	C(tcp_fastopen_listener, "server",
	  "TCP_FASTOPEN on a listener"),
	C(select_listener, "server",
	  "select on a listener"),
	C(epoll_listener_et, "server",
	  "edge-triggered epoll on a non-blocking listener"),
	C(server_halfclose, "server",
	  "the client's FIN, then the server answers and closes"),
	C(server_peer_reset, "server",
	  "accepted connection reset by the peer"),
	C(server_close_unread, "server",
	  "accepted connection closed with unread data: reset"),
	C(listener_close_pending, "both",
	  "a listener closed with a queued connection: it is reset"),
	C(fork_child_accepts, "server",
	  "fork with a listener: the child accepts and serves"),
	{ "fork_accepted_conn_child", sc_fork_accepted_conn_child, "server",
	  "a connection accepted before fork, touched by the child", 0 },
	C(exec_keeps_listener, "server",
	  "exec keeps a listener: the exec'd program accepts on the inherited fd"),
};
const size_t n_scenarios = sizeof(scenarios) / sizeof(scenarios[0]);
