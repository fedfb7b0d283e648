/* test_sock.c — the socket table (utcp_sock.h) over the pair backend, in virtual time: two
 * stacks, each with its own table (A the client side, B the server side).  Expected poll
 * masks are the ones Linux's tcp_poll() gives in the same situation (checked against the
 * kernel on loopback when these tests were written). */
#define _GNU_SOURCE             /* POLLRDHUP */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "testlib.h"
#include "utcp.h"
#include "utcp_sock.h"

#define A_IP H_SW_A_IP
#define B_IP H_SW_B_IP
#define PORT H_SW_PORT

#define P_IN POLLIN
#define P_OUT POLLOUT
#define P_ERR POLLERR
#define P_HUP POLLHUP
#define P_RDHUP POLLRDHUP
/* a reset, refused or timed-out connection with its error pending */
#define M_DEAD_ERR (P_IN | P_OUT | P_ERR | P_HUP | P_RDHUP)
#define M_DEAD (P_IN | P_OUT | P_HUP | P_RDHUP)

static unsigned ncount(const struct h_notes *n, int sk)
{
	return n->count[(unsigned)sk & 0xfffff];
}

static unsigned nlast(const struct h_notes *n, int sk)
{
	return n->last[(unsigned)sk & 0xfffff];
}

/* Both tables count their notifications (w->na, w->nb). */
static void w_init(struct h_sw *w)
{
	h_sw_init(w, 7);
	h_sw_count_notes(w);
}

static ssize_t send_str(struct utcp_socks *ss, int sk, const char *s, int flags, uint64_t now)
{
	struct iovec v = {(void *)s, strlen(s)};

	return utcp_sk_send(ss, sk, &v, 1, flags, now);
}

static ssize_t recv_buf(struct utcp_socks *ss, int sk, void *buf, size_t n, int flags, uint64_t now)
{
	struct iovec v = {buf, n};

	return utcp_sk_recv(ss, sk, &v, 1, flags, now);
}

/* ---- listen, accept, connect ---- */

TEST(test_sock_listen_accept_connect)
{
	struct h_sw w;
	struct utcp_sk_name peer, name;
	char buf[8];
	uint64_t v;
	int l, c, s;

	w_init(&w);
	l = h_sw_listen(&w, 8);
	CHECK(utcp_sk_is_listener(w.sb, l));
	CHECK_EQ(utcp_sk_ready(w.sb, l), 0);
	CHECK_EQ(utcp_sk_accept(w.sb, l, NULL), -EAGAIN);
	c = h_sw_connect(&w);
	CHECK_EQ(utcp_sk_ready(w.sa, c), 0);                  /* connecting */
	CHECK_EQ(utcp_sk_connect(w.sa, c, B_IP, PORT, 0, NULL, w.now), -EALREADY);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), -EAGAIN);
	CHECK_EQ(send_str(w.sa, c, "x", 0, w.now), -EAGAIN);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);
	CHECK_EQ(ncount(&w.na, c), 1);                        /* connected */
	CHECK_EQ(nlast(&w.na, c), P_OUT);
	CHECK_EQ(utcp_sk_ready(w.sb, l), P_IN);
	CHECK(ncount(&w.nb, l) >= 1);
	CHECK_EQ(nlast(&w.nb, l), P_IN);
	/* the wake fd is readable after notifications, and drains */
	CHECK(read(utcp_socks_wake_fd(w.sb), &v, sizeof(v)) == sizeof(v));
	utcp_socks_wake_drain(w.sb);
	CHECK(read(utcp_socks_wake_fd(w.sb), &v, sizeof(v)) < 0 && errno == EAGAIN);
	s = utcp_sk_accept(w.sb, l, &peer);
	CHECK(s >= 0);
	CHECK_U32(peer.raddr, A_IP);
	CHECK_U32(peer.laddr, B_IP);
	CHECK_EQ(peer.lport, PORT);
	CHECK_EQ(utcp_sk_ready(w.sb, l), 0);
	CHECK_EQ(utcp_sk_accept(w.sb, l, NULL), -EAGAIN);
	CHECK_EQ(utcp_sk_ready(w.sb, s), P_OUT);
	CHECK(!utcp_sk_is_listener(w.sb, s));
	CHECK_EQ(utcp_sk_name(w.sa, c, &name), 0);
	CHECK_U32(name.raddr, B_IP);
	CHECK_EQ(name.rport, PORT);
	CHECK_EQ(name.lport, peer.rport);
	CHECK_EQ(utcp_sk_connect(w.sa, c, B_IP, PORT, 0, NULL, w.now), -EISCONN);
	CHECK_EQ(utcp_sk_connect(w.sb, l, A_IP, 1, 0, NULL, w.now), -EISCONN);
	CHECK_EQ(utcp_sk_error(w.sa, c), 0);
	h_sw_free(&w);
}

TEST(test_sock_send_recv_peek)
{
	struct h_sw w;
	char buf[64], b1[4], b2[64];
	struct iovec gv[3] = {{"hel", 3}, {"", 0}, {"lo world", 8}};
	struct iovec sv[2] = {{b1, sizeof(b1)}, {b2, sizeof(b2)}};
	unsigned before;
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_recv(w.sb, s, sv, 2, 0, w.now), -EAGAIN);
	CHECK_EQ(utcp_sk_send(w.sa, c, gv, 3, 0, w.now), 11);
	CHECK_EQ(utcp_sk_outq(w.sa, c), 11);
	before = ncount(&w.nb, s);
	h_sw_run(&w, 100000);
	CHECK_EQ(utcp_sk_outq(w.sa, c), 0);                   /* acknowledged */
	CHECK(ncount(&w.nb, s) > before);                      /* new data */
	CHECK_EQ(nlast(&w.nb, s), P_IN | P_OUT);
	CHECK_EQ(utcp_sk_ready(w.sb, s), P_IN | P_OUT);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 11);
	CHECK_EQ(recv_buf(w.sb, s, buf, 5, UTCP_SK_PEEK, w.now), 5);
	CHECK_MEM(buf, "hello", 5);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 11);
	CHECK_EQ(utcp_sk_recv(w.sb, s, sv, 2, UTCP_SK_PEEK, w.now), 11);
	CHECK_MEM(b1, "hell", 4);
	CHECK_MEM(b2, "o world", 7);
	before = ncount(&w.nb, s);
	CHECK_EQ(utcp_sk_recv(w.sb, s, sv, 2, 0, w.now), 11);
	CHECK_MEM(b1, "hell", 4);
	CHECK_MEM(b2, "o world", 7);
	CHECK_EQ(ncount(&w.nb, s), before);                    /* the caller's own recv: no notify */
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	CHECK_EQ(recv_buf(w.sb, s, buf, sizeof(buf), 0, w.now), -EAGAIN);
	CHECK_EQ(recv_buf(w.sb, s, buf, 0, 0, w.now), 0);
	CHECK_EQ(utcp_sk_ready(w.sb, s), P_OUT);
	h_sw_free(&w);
}

/* Linux with listen(fd, 0): one connection queued, the next SYN is ignored and the client
 * retries; once the queue has room the retried SYN is answered. */
TEST(test_sock_backlog_full_syn_unanswered)
{
	struct h_sw w;
	int l, c1, c2, s1, s2;
	uint64_t drops;

	w_init(&w);
	l = h_sw_listen(&w, 0);
	c1 = h_sw_connect(&w);
	h_sw_run(&w, 10000);
	c2 = h_sw_connect(&w);
	h_sw_run(&w, 500000);
	CHECK_EQ(utcp_sk_ready(w.sa, c1), P_OUT);
	CHECK_EQ(utcp_sk_ready(w.sa, c2), 0);                 /* its SYN went unanswered */
	drops = utcp_get_stats(w.b)->drops[UTCP_DROP_BACKLOG];
	CHECK(drops >= 1);
	s1 = utcp_sk_accept(w.sb, l, NULL);
	CHECK(s1 >= 0);
	CHECK_EQ(utcp_sk_accept(w.sb, l, NULL), -EAGAIN);
	h_sw_run(&w, 1000000);                                /* the SYN is retried after 1 s */
	CHECK_EQ(utcp_sk_ready(w.sa, c2), P_OUT);
	s2 = utcp_sk_accept(w.sb, l, NULL);
	CHECK(s2 >= 0);
	CHECK(s2 != s1);
	h_sw_free(&w);
}

TEST(test_sock_connect_refused)
{
	struct h_sw w;
	char buf[4];
	int c;

	w_init(&w);
	c = h_sw_connect(&w);                                 /* nobody listens */
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), M_DEAD_ERR);
	CHECK_EQ(nlast(&w.na, c), M_DEAD_ERR);
	CHECK_EQ(utcp_sk_error(w.sa, c), -ECONNREFUSED);
	CHECK_EQ(utcp_sk_error(w.sa, c), 0);
	CHECK_EQ(utcp_sk_ready(w.sa, c), M_DEAD);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 0);
	CHECK_EQ(send_str(w.sa, c, "x", 0, w.now), -EPIPE);
	/* connect(2) again reports the failure (ECONNABORTED once collected), then retries */
	CHECK_EQ(utcp_sk_connect(w.sa, c, B_IP, PORT, 0, NULL, w.now), -ECONNABORTED);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT | P_HUP);
	h_sw_listen(&w, 4);
	CHECK_EQ(utcp_sk_connect(w.sa, c, B_IP, PORT, 0, NULL, w.now), -EINPROGRESS);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);
	h_sw_free(&w);
}

TEST(test_sock_connect_refused_error_by_recv_then_connect)
{
	struct h_sw w;
	char buf[4];
	int c;

	w_init(&w);
	c = h_sw_connect(&w);
	h_sw_run(&w, 10000);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), -ECONNREFUSED);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 0);
	h_sw_free(&w);

	w_init(&w);
	c = h_sw_connect(&w);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_connect(w.sa, c, B_IP, PORT, 0, NULL, w.now), -ECONNREFUSED);
	CHECK_EQ(utcp_sk_error(w.sa, c), 0);
	h_sw_free(&w);
}

/* Masks through an orderly close, as Linux reports them on both ends. */
TEST(test_sock_ready_orderly_close)
{
	struct h_sw w;
	char buf[8];
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);
	CHECK_EQ(utcp_sk_ready(w.sb, s), P_OUT);
	CHECK_EQ(utcp_sk_shutdown(w.sa, c, SHUT_WR, w.now), 0);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);              /* SEND_SHUTDOWN: writable */
	CHECK_EQ(send_str(w.sa, c, "x", 0, w.now), -EPIPE);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);              /* FIN-WAIT-2 */
	CHECK_EQ(utcp_sk_ready(w.sb, s), P_IN | P_OUT | P_RDHUP);    /* CLOSE-WAIT */
	CHECK_EQ(nlast(&w.nb, s), P_IN | P_OUT | P_RDHUP);
	CHECK_EQ(recv_buf(w.sb, s, buf, sizeof(buf), 0, w.now), 0);
	CHECK_EQ(send_str(w.sb, s, "bye", 0, w.now), 3);      /* half-close: still sends */
	CHECK_EQ(utcp_sk_shutdown(w.sb, s, SHUT_WR, w.now), 0);
	CHECK_EQ(utcp_sk_ready(w.sb, s), M_DEAD);             /* LAST-ACK */
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), M_DEAD);             /* TIME-WAIT */
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 3);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 0);
	CHECK_EQ(utcp_sk_ready(w.sb, s), M_DEAD);             /* CLOSED */
	CHECK_EQ(utcp_sk_error(w.sb, s), 0);
	h_sw_run(&w, 61000000);                               /* TIME-WAIT over */
	CHECK_EQ(utcp_sk_ready(w.sa, c), M_DEAD);
	CHECK_EQ(utcp_sk_shutdown(w.sa, c, SHUT_RDWR, w.now), -ENOTCONN);
	CHECK_EQ(utcp_sk_close(w.sa, c, w.now), 0);
	CHECK_EQ(utcp_sk_close(w.sb, s, w.now), 0);
	CHECK_EQ(utcp_get_stats(w.a)->conns_in_use, 0);
	CHECK_EQ(utcp_get_stats(w.b)->conns_in_use, 0);
	h_sw_free(&w);
}

/* A reset: the error once (whoever collects it first), then end of stream / EPIPE. */
TEST(test_sock_reset_error_once_recv_first)
{
	struct h_sw w;
	char buf[8];
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_setopt(w.sb, s, UTCP_SO_LINGER, 0), 0);
	CHECK_EQ(utcp_sk_close(w.sb, s, w.now), 0);           /* linger {1, 0}: RST */
	CHECK_EQ(utcp_sk_ready(w.sb, s), -EBADF);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_get_stats(w.a)->rst_in, 1);
	CHECK_EQ(utcp_sk_ready(w.sa, c), M_DEAD_ERR);
	CHECK_EQ(nlast(&w.na, c), M_DEAD_ERR);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), -ECONNRESET);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 0);
	CHECK_EQ(utcp_sk_ready(w.sa, c), M_DEAD);
	CHECK_EQ(send_str(w.sa, c, "x", 0, w.now), -EPIPE);
	CHECK_EQ(utcp_sk_error(w.sa, c), 0);
	h_sw_free(&w);
}

TEST(test_sock_reset_error_once_send_first)
{
	struct h_sw w;
	char buf[8];
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_setopt(w.sb, s, UTCP_SO_LINGER, 0), 0);
	CHECK_EQ(utcp_sk_close(w.sb, s, w.now), 0);
	h_sw_run(&w, 10000);
	CHECK_EQ(send_str(w.sa, c, "x", 0, w.now), -ECONNRESET);
	CHECK_EQ(send_str(w.sa, c, "x", 0, w.now), -EPIPE);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 0);
	h_sw_free(&w);

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_setopt(w.sb, s, UTCP_SO_LINGER, 0), 0);
	CHECK_EQ(utcp_sk_close(w.sb, s, w.now), 0);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_error(w.sa, c), -ECONNRESET);        /* SO_ERROR takes it */
	CHECK_EQ(utcp_sk_ready(w.sa, c), M_DEAD);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 0);
	CHECK_EQ(send_str(w.sa, c, "x", 0, w.now), -EPIPE);
	h_sw_free(&w);
}

/* Data received before the reset is still read first. */
TEST(test_sock_reset_after_data_reads_data_first)
{
	struct h_sw w;
	char buf[8];
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(send_str(w.sb, s, "abc", 0, w.now), 3);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_setopt(w.sb, s, UTCP_SO_LINGER, 0), 0);
	CHECK_EQ(utcp_sk_close(w.sb, s, w.now), 0);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), M_DEAD_ERR);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 3);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), -ECONNRESET);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 0);
	h_sw_free(&w);
}

TEST(test_sock_close_with_unread_data_resets)
{
	struct h_sw w;
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(send_str(w.sa, c, "unread", 0, w.now), 6);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 6);
	CHECK_EQ(utcp_sk_close(w.sb, s, w.now), 0);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_get_stats(w.b)->rst_out, 1);
	CHECK_EQ(utcp_sk_error(w.sa, c), -ECONNRESET);
	h_sw_free(&w);
}

TEST(test_sock_close_orderly_sends_fin)
{
	struct h_sw w;
	char buf[8];
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(send_str(w.sb, s, "data", 0, w.now), 4);
	CHECK_EQ(utcp_sk_close(w.sb, s, w.now), 0);           /* FIN after the data */
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_get_stats(w.b)->rst_out, 0);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_IN | P_OUT | P_RDHUP);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 4);
	CHECK_EQ(recv_buf(w.sa, c, buf, sizeof(buf), 0, w.now), 0);
	CHECK_EQ(utcp_sk_close(w.sa, c, w.now), 0);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_get_stats(w.a)->rst_out + utcp_get_stats(w.b)->rst_out, 0);
	h_sw_free(&w);
}

TEST(test_sock_stale_ids_ebadf)
{
	struct h_sw w;
	char buf[4];
	int a, b, c, s;

	w_init(&w);
	a = utcp_sk_open(w.sa);
	CHECK(a >= 0);
	CHECK_EQ(utcp_sk_close(w.sa, a, w.now), 0);
	b = utcp_sk_open(w.sa);                               /* same slot, new generation */
	CHECK(b >= 0);
	CHECK(b != a);
	CHECK_EQ(utcp_sk_ready(w.sa, a), -EBADF);
	CHECK_EQ(utcp_sk_close(w.sa, a, w.now), -EBADF);
	CHECK_EQ(recv_buf(w.sa, a, buf, sizeof(buf), 0, w.now), -EBADF);
	CHECK_EQ(send_str(w.sa, a, "x", 0, w.now), -EBADF);
	CHECK_EQ(utcp_sk_error(w.sa, a), -EBADF);
	CHECK_EQ(utcp_sk_ready(w.sa, -1), -EBADF);
	CHECK_EQ(utcp_sk_ready(w.sa, 12345), -EBADF);
	CHECK_EQ(utcp_sk_ready(w.sa, b), P_OUT | P_HUP);      /* a fresh socket, as Linux */
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_close(w.sb, s, w.now), 0);
	CHECK_EQ(utcp_sk_shutdown(w.sb, s, SHUT_WR, w.now), -EBADF);
	h_sw_free(&w);
}

TEST(test_sock_table_full_enfile_and_iteration)
{
	struct utcp_socks_config sc;
	struct utcp_socks *ss;
	struct h_sw w;
	int ids[4], i, it, n;

	w_init(&w);
	utcp_socks_config_init(&sc);
	sc.max_socks = 4;
	sc.wake_fd = 0;
	utcp_socks_destroy(w.sa, w.now);
	CHECK_EQ(utcp_socks_create(w.a, &sc, &ss), 0);
	w.sa = ss;
	CHECK_EQ(utcp_socks_wake_fd(ss), -1);
	CHECK_EQ(utcp_sk_next(ss, -1), -1);
	for (i = 0; i < 4; i++) {
		ids[i] = utcp_sk_open(ss);
		CHECK(ids[i] >= 0);
	}
	CHECK_EQ(utcp_sk_open(ss), -ENFILE);
	CHECK_EQ(utcp_sk_close(ss, ids[1], w.now), 0);
	n = 0;
	for (it = utcp_sk_next(ss, -1); it >= 0; it = utcp_sk_next(ss, it)) {
		CHECK(it == ids[0] || it == ids[2] || it == ids[3]);
		n++;
	}
	CHECK_EQ(n, 3);
	CHECK(utcp_sk_open(ss) >= 0);
	CHECK_EQ(utcp_sk_open(ss), -ENFILE);
	h_sw_free(&w);
}

/* ---- notifications ---- */

TEST(test_sock_notify_data_and_ack)
{
	struct h_sw w;
	unsigned cb, sb;
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	cb = ncount(&w.na, c);
	sb = ncount(&w.nb, s);
	CHECK_EQ(h_sk_send_n(w.sa, c, 1000, 0, w.now), 1000);
	CHECK_EQ(ncount(&w.na, c), cb);                        /* the caller's own call */
	h_sw_run(&w, 100000);
	CHECK(ncount(&w.nb, s) > sb);                          /* new data */
	CHECK_EQ(nlast(&w.nb, s), P_IN | P_OUT);
	CHECK(ncount(&w.na, c) > cb);                          /* newly acknowledged data */
	CHECK_EQ(nlast(&w.na, c), P_OUT);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 1000);
	h_sw_free(&w);
}

/* ---- cork, MSG_MORE ---- */

TEST(test_sock_msg_more_holds_partial_segment)
{
	struct h_sw w;
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_NODELAY, 1), 0);
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, UTCP_SK_MORE, w.now), 100);
	h_sw_run(&w, 50000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);                   /* held */
	CHECK_EQ(utcp_sk_outq(w.sa, c), 100);
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, 0, w.now), 100);    /* no MORE: both go */
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 200);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 200);
	/* MSG_MORE with nothing after it: out within the 200 ms bound */
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, UTCP_SK_MORE, w.now), 100);
	h_sw_run(&w, 150000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	h_sw_run(&w, 60000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 100);
	h_sw_free(&w);
}

TEST(test_sock_cork_holds_until_uncorked_or_full)
{
	struct h_sw w;
	int c, s, mss;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_getopt(w.sa, c, UTCP_TCP_MAXSEG, &mss), 0);
	CHECK_EQ(mss, 1448);                                  /* 1460 - timestamps */
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_NODELAY, 1), 0);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_CORK, 1), 0);
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, 0, w.now), 100);
	h_sw_run(&w, 100000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_CORK, 0), 0);   /* uncork pushes */
	h_sw_run(&w, 10000);
	CHECK_EQ(h_sk_drain(w.sb, s, w.now), 100);
	/* corked: full segments go, the partial tail waits */
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_CORK, 1), 0);
	CHECK_EQ(h_sk_send_n(w.sa, c, 3000, 0, w.now), 3000);
	h_sw_run(&w, 50000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 2 * mss);
	h_sw_run(&w, 200000);                                 /* the bound */
	CHECK_EQ(utcp_sk_nread(w.sb, s), 3000);
	h_sw_free(&w);
}

TEST(test_sock_nodelay_pushes_what_nagle_holds)
{
	struct h_sw w;
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, 0, w.now), 100);
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, 0, w.now), 100);   /* Nagle: waits for an ACK */
	h_sw_run(&w, 10000);                                  /* the peer delays its ACK */
	CHECK_EQ(utcp_sk_nread(w.sb, s), 100);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_NODELAY, 1), 0);
	h_sw_run(&w, 5000);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 200);
	h_sw_free(&w);
}

/* ---- shutdown ---- */

TEST(test_sock_shutdown_rd)
{
	struct h_sw w;
	char buf[8];
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_shutdown(w.sb, s, SHUT_RD, w.now), 0);
	CHECK_EQ(utcp_sk_ready(w.sb, s), P_IN | P_OUT | P_RDHUP);
	CHECK_EQ(recv_buf(w.sb, s, buf, sizeof(buf), 0, w.now), 0);
	/* as Linux: data arriving after SHUT_RD is still delivered, then end of stream */
	CHECK_EQ(send_str(w.sa, c, "abc", 0, w.now), 3);
	h_sw_run(&w, 10000);
	CHECK_EQ(recv_buf(w.sb, s, buf, sizeof(buf), 0, w.now), 3);
	CHECK_EQ(recv_buf(w.sb, s, buf, sizeof(buf), 0, w.now), 0);
	CHECK_EQ(send_str(w.sb, s, "ok", 0, w.now), 2);       /* the write side is open */
	CHECK_EQ(utcp_sk_shutdown(w.sb, s, SHUT_WR, w.now), 0);
	CHECK_EQ(utcp_sk_ready(w.sb, s), M_DEAD);
	h_sw_free(&w);
}

TEST(test_sock_shutdown_rdwr)
{
	struct h_sw w;
	char buf[8];
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_shutdown(w.sb, s, SHUT_RDWR, w.now), 0);
	CHECK_EQ(utcp_sk_ready(w.sb, s), M_DEAD);
	CHECK_EQ(send_str(w.sb, s, "x", 0, w.now), -EPIPE);
	CHECK_EQ(recv_buf(w.sb, s, buf, sizeof(buf), 0, w.now), 0);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_IN | P_OUT | P_RDHUP);
	CHECK_EQ(utcp_sk_shutdown(w.sb, s, 7, w.now), -EINVAL);
	h_sw_free(&w);
}

TEST(test_sock_shutdown_unconnected_and_connecting)
{
	struct utcp_pair_impair lose = {.loss_ppm = 1000000, .delay_us = 1000};
	struct utcp_pair_impair ok = {.delay_us = 1000};
	struct h_sw w;
	int o, c, l;

	w_init(&w);
	o = utcp_sk_open(w.sa);
	CHECK_EQ(utcp_sk_shutdown(w.sa, o, SHUT_WR, w.now), -ENOTCONN);
	l = h_sw_listen(&w, 4);
	utcp_pair_set_impair(w.pair, 0, &lose);
	c = h_sw_connect(&w);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), 0);                  /* SYN lost: still connecting */
	/* Linux disconnects a connecting socket on shutdown and says ECONNRESET */
	CHECK_EQ(utcp_sk_shutdown(w.sa, c, SHUT_WR, w.now), 0);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT | P_HUP | P_ERR);
	CHECK_EQ(utcp_sk_error(w.sa, c), -ECONNRESET);
	CHECK_EQ(utcp_get_stats(w.a)->conns_in_use, 0);
	utcp_pair_set_impair(w.pair, 0, &ok);
	CHECK_EQ(utcp_sk_connect(w.sa, c, B_IP, PORT, 0, NULL, w.now), -EINPROGRESS);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);
	CHECK(utcp_sk_accept(w.sb, l, NULL) >= 0);
	/* a listener's read side shut: it stops listening */
	CHECK_EQ(utcp_sk_shutdown(w.sb, l, SHUT_WR, w.now), 0);
	CHECK(utcp_sk_is_listener(w.sb, l));
	CHECK_EQ(utcp_sk_shutdown(w.sb, l, SHUT_RD, w.now), 0);
	CHECK(!utcp_sk_is_listener(w.sb, l));
	h_sw_free(&w);
}

/* ---- listeners ---- */

TEST(test_sock_listener_close_resets_unaccepted)
{
	struct h_sw w;
	int l, c1, c2, c3;

	w_init(&w);
	l = h_sw_listen(&w, 4);
	c1 = h_sw_connect(&w);
	c2 = h_sw_connect(&w);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c1), P_OUT);
	CHECK_EQ(utcp_sk_ready(w.sa, c2), P_OUT);
	CHECK_EQ(utcp_get_stats(w.b)->conns_in_use, 2);
	CHECK_EQ(utcp_sk_close(w.sb, l, w.now), 0);
	CHECK_EQ(utcp_get_stats(w.b)->conns_in_use, 0);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_error(w.sa, c1), -ECONNRESET);
	CHECK_EQ(utcp_sk_error(w.sa, c2), -ECONNRESET);
	c3 = h_sw_connect(&w);                                /* nobody listens now */
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_error(w.sa, c3), -ECONNREFUSED);
	/* the port can be listened on again */
	l = h_sw_listen(&w, 4);
	CHECK(l >= 0);
	h_sw_free(&w);
}

/* Linux hands out a queued connection even if it was reset meanwhile. */
TEST(test_sock_reset_before_accept_still_accepted)
{
	struct h_sw w;
	char buf[4];
	int l, c, s;

	w_init(&w);
	l = h_sw_listen(&w, 4);
	c = h_sw_connect(&w);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_SO_LINGER, 0), 0);
	CHECK_EQ(utcp_sk_close(w.sa, c, w.now), 0);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sb, l), P_IN);
	s = utcp_sk_accept(w.sb, l, NULL);
	CHECK(s >= 0);
	CHECK_EQ(utcp_sk_ready(w.sb, s), M_DEAD_ERR);
	CHECK_EQ(recv_buf(w.sb, s, buf, sizeof(buf), 0, w.now), -ECONNRESET);
	CHECK_EQ(utcp_sk_close(w.sb, s, w.now), 0);
	CHECK_EQ(utcp_get_stats(w.b)->conns_in_use, 0);
	h_sw_free(&w);
}

TEST(test_sock_listen_errors)
{
	struct h_sw w;
	int l, o, c, s;

	w_init(&w);
	l = h_sw_listen(&w, 4);
	o = utcp_sk_open(w.sb);
	CHECK_EQ(utcp_sk_listen(w.sb, o, PORT, 4), -EADDRINUSE);
	CHECK_EQ(utcp_sk_listen(w.sb, l, PORT, 16), 0);       /* listen() again: new backlog */
	CHECK_EQ(utcp_sk_listen(w.sb, l, PORT + 1, 16), -EINVAL);
	CHECK_EQ(utcp_sk_accept(w.sb, o, NULL), -EINVAL);
	c = h_sw_connect(&w);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);
	s = utcp_sk_accept(w.sb, l, NULL);
	CHECK(s >= 0);
	CHECK_EQ(utcp_sk_listen(w.sb, s, 81, 4), -EINVAL);
	CHECK_EQ(utcp_sk_nread(w.sb, l), -EINVAL);
	CHECK_EQ(utcp_sk_outq(w.sb, l), -EINVAL);
	CHECK_EQ(send_str(w.sb, l, "x", 0, w.now), -EPIPE);
	h_sw_free(&w);
}

/* ---- options ---- */

static int getopt_(struct utcp_socks *ss, int sk, enum utcp_sk_opt o)
{
	int v = -12345;

	CHECK_EQ(utcp_sk_getopt(ss, sk, o, &v), 0);
	return v;
}

TEST(test_sock_options_defaults_and_limits)
{
	struct h_sw w;
	int o;

	w_init(&w);
	o = utcp_sk_open(w.sa);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_KEEPALIVE), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_LINGER), -1);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_RCVBUF), 65536);     /* the stack's buffer */
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_SNDBUF), 65536);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_NODELAY), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_CORK), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_KEEPIDLE), 7200);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_KEEPINTVL), 75);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_KEEPCNT), 9);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_DEFER_ACCEPT), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_MAXSEG), 536);      /* Linux's, unconnected */
	/* Linux doubles buffer sizes, with floors; the stack's buffer caps them */
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_SO_RCVBUF, 4096), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_RCVBUF), 8192);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_SO_SNDBUF, 4096), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_SNDBUF), 8192);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_SO_RCVBUF, 1), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_RCVBUF), 2304);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_SO_SNDBUF, 1), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_SNDBUF), 4608);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_SO_RCVBUF, 1 << 20), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_RCVBUF), 65536);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_SO_SNDBUF, -1), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_SNDBUF), 65536);
	/* keepalive ranges as Linux's */
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_TCP_KEEPIDLE, 0), -EINVAL);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_TCP_KEEPIDLE, 32768), -EINVAL);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_TCP_KEEPINTVL, 0), -EINVAL);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_TCP_KEEPCNT, 128), -EINVAL);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_TCP_KEEPCNT, 127), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_KEEPCNT), 127);
	/* TCP_DEFER_ACCEPT comes back rounded to SYN,ACK retransmissions, as Linux */
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_TCP_DEFER_ACCEPT, 5), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_DEFER_ACCEPT), 7);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_TCP_DEFER_ACCEPT, 2), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_DEFER_ACCEPT), 3);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_TCP_DEFER_ACCEPT, 100), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_DEFER_ACCEPT), 127);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_TCP_DEFER_ACCEPT, -3), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_TCP_DEFER_ACCEPT), 0);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_SO_LINGER, 5), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_LINGER), 5);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_SO_LINGER, -1), 0);
	CHECK_EQ(getopt_(w.sa, o, UTCP_SO_LINGER), -1);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, UTCP_TCP_MAXSEG, 1000), -ENOPROTOOPT);
	CHECK_EQ(utcp_sk_setopt(w.sa, o, (enum utcp_sk_opt)99, 1), -ENOPROTOOPT);
	CHECK_EQ(utcp_sk_getopt(w.sa, o, (enum utcp_sk_opt)99, &o), -ENOPROTOOPT);
	CHECK_STR(utcp_sk_get_cc(w.sa, o), "newreno");
	CHECK_EQ(utcp_sk_set_cc(w.sa, o, "bogus"), -ENOENT);
	CHECK_EQ(utcp_sk_set_cc(w.sa, o, "cubic"), 0);
	CHECK_STR(utcp_sk_get_cc(w.sa, o), "cubic");
	CHECK(utcp_sk_get_cc(w.sa, -1) == NULL);
	h_sw_free(&w);
}

TEST(test_sock_accepted_inherits_listener_options)
{
	struct utcp_conn_info ci;
	struct h_sw w;
	int l, c, s;

	w_init(&w);
	l = h_sw_listen(&w, 4);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_TCP_NODELAY, 1), 0);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_SO_KEEPALIVE, 1), 0);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_TCP_KEEPIDLE, 33), 0);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_TCP_KEEPINTVL, 7), 0);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_TCP_KEEPCNT, 4), 0);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_SO_RCVBUF, 5000), 0);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_SO_SNDBUF, 6000), 0);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_SO_LINGER, 5), 0);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_TCP_CORK, 1), 0);
	CHECK_EQ(utcp_sk_set_cc(w.sb, l, "cubic"), 0);
	c = h_sw_connect(&w);
	h_sw_run(&w, 10000);
	s = utcp_sk_accept(w.sb, l, NULL);
	CHECK(s >= 0);
	CHECK_EQ(getopt_(w.sb, s, UTCP_TCP_NODELAY), 1);
	CHECK_EQ(getopt_(w.sb, s, UTCP_SO_KEEPALIVE), 1);
	CHECK_EQ(getopt_(w.sb, s, UTCP_TCP_KEEPIDLE), 33);
	CHECK_EQ(getopt_(w.sb, s, UTCP_TCP_KEEPINTVL), 7);
	CHECK_EQ(getopt_(w.sb, s, UTCP_TCP_KEEPCNT), 4);
	CHECK_EQ(getopt_(w.sb, s, UTCP_SO_RCVBUF), 10000);
	CHECK_EQ(getopt_(w.sb, s, UTCP_SO_SNDBUF), 12000);
	CHECK_EQ(getopt_(w.sb, s, UTCP_SO_LINGER), 5);
	CHECK_EQ(getopt_(w.sb, s, UTCP_TCP_CORK), 1);
	CHECK_EQ(getopt_(w.sb, s, UTCP_TCP_MAXSEG), 1448);
	CHECK_STR(utcp_sk_get_cc(w.sb, s), "cubic");
	memset(&ci, 0, sizeof(ci));
	ci.sz = sizeof(ci);
	CHECK_EQ(utcp_sk_info(w.sb, s, &ci), 0);
	CHECK_STR(ci.cc, "cubic");
	CHECK_EQ(ci.state, UTCP_ESTABLISHED);
	CHECK(ci.rcv_wnd <= 10000);                           /* the cap bounds the window */
	CHECK_EQ(utcp_sk_info(w.sb, l, &ci), 0);
	CHECK_EQ(ci.state, UTCP_LISTEN);
	CHECK_EQ(ci.lport, PORT);
	/* the options act: keepalive probes after 33 s idle */
	h_sw_run(&w, 34000000);
	CHECK(utcp_get_stats(w.b)->keepalive_probes >= 1);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);               /* answered: still alive */
	h_sw_free(&w);
}

TEST(test_sock_keepalive_per_connection_times_out)
{
	struct utcp_pair_impair lose = {.loss_ppm = 1000000, .delay_us = 1000};
	struct h_sw w;
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_SO_KEEPALIVE, 1), 0);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_KEEPIDLE, 2), 0);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_KEEPINTVL, 1), 0);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_TCP_KEEPCNT, 3), 0);
	utcp_pair_set_impair(w.pair, 0, &lose);
	utcp_pair_set_impair(w.pair, 1, &lose);
	h_sw_run(&w, 4500000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);
	CHECK_EQ(utcp_get_stats(w.a)->keepalive_probes, 3);
	h_sw_run(&w, 1000000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), M_DEAD_ERR);
	CHECK_EQ(utcp_sk_error(w.sa, c), -ETIMEDOUT);
	CHECK_EQ(utcp_get_stats(w.b)->keepalive_probes, 0);   /* the other end keeps its own */
	h_sw_free(&w);
}

TEST(test_sock_defer_accept)
{
	struct h_sw w;
	int l, c1, c2, c3, s;

	w_init(&w);
	l = h_sw_listen(&w, 4);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_TCP_DEFER_ACCEPT, 1), 0);
	CHECK_EQ(getopt_(w.sb, l, UTCP_TCP_DEFER_ACCEPT), 1);
	c1 = h_sw_connect(&w);
	h_sw_run(&w, 500000);
	CHECK_EQ(utcp_sk_ready(w.sa, c1), P_OUT);              /* connected for the client */
	CHECK_EQ(utcp_sk_ready(w.sb, l), 0);                   /* but not ready to accept */
	CHECK_EQ(utcp_sk_accept(w.sb, l, NULL), -EAGAIN);
	CHECK_EQ(ncount(&w.nb, l), 0);
	CHECK_EQ(send_str(w.sa, c1, "GET", 0, w.now), 3);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_ready(w.sb, l), P_IN);                /* data arrived */
	CHECK_EQ(nlast(&w.nb, l), P_IN);
	s = utcp_sk_accept(w.sb, l, NULL);
	CHECK(s >= 0);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 3);
	/* no data: ready after the option's time */
	c2 = h_sw_connect(&w);
	h_sw_run(&w, 500000);
	CHECK_EQ(utcp_sk_ready(w.sb, l), 0);
	h_sw_run(&w, 600000);
	CHECK_EQ(utcp_sk_ready(w.sb, l), P_IN);
	s = utcp_sk_accept(w.sb, l, NULL);
	CHECK(s >= 0);
	CHECK_EQ(utcp_sk_nread(w.sb, s), 0);
	(void)c2;
	/* reset while deferred: never accepted */
	c3 = h_sw_connect(&w);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_get_stats(w.b)->conns_in_use, 3);
	CHECK_EQ(utcp_sk_setopt(w.sa, c3, UTCP_SO_LINGER, 0), 0);
	CHECK_EQ(utcp_sk_close(w.sa, c3, w.now), 0);
	h_sw_run(&w, 2000000);
	CHECK_EQ(utcp_sk_ready(w.sb, l), 0);
	CHECK_EQ(utcp_sk_accept(w.sb, l, NULL), -EAGAIN);
	CHECK_EQ(utcp_get_stats(w.b)->conns_in_use, 2);
	h_sw_free(&w);
}

/* ---- buffer caps ---- */

TEST(test_sock_rcvbuf_caps_window)
{
	struct h_sw w;
	int l, c, s, n;
	ssize_t got = 0, r;

	w_init(&w);
	l = h_sw_listen(&w, 4);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_SO_RCVBUF, 4096), 0);   /* 8192 */
	c = h_sw_connect(&w);
	h_sw_run(&w, 10000);
	s = utcp_sk_accept(w.sb, l, NULL);
	CHECK(s >= 0);
	CHECK_EQ(h_sk_send_n(w.sa, c, 60000, 0, w.now), 60000);
	h_sw_run(&w, 200000);
	n = utcp_sk_nread(w.sb, s);
	CHECK(n > 0 && n <= 8192);                             /* the window was the cap */
	CHECK_EQ(utcp_sk_outq(w.sa, c), 60000 - n);
	for (int i = 0; i < 100 && got < 60000; i++) {
		r = h_sk_drain(w.sb, s, w.now);
		got += r;
		h_sw_run(&w, 20000);
		CHECK(utcp_sk_nread(w.sb, s) <= 8192);
	}
	CHECK_EQ(got, 60000);
	h_sw_free(&w);
}

TEST(test_sock_sndbuf_caps_send_and_pollout)
{
	struct h_sw w;
	int c, s, l;
	ssize_t got;

	w_init(&w);
	l = h_sw_listen(&w, 4);
	CHECK_EQ(utcp_sk_setopt(w.sb, l, UTCP_SO_RCVBUF, 4096), 0);   /* a slow peer */
	c = utcp_sk_open(w.sa);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_SO_SNDBUF, 4096), 0);   /* 8192 */
	CHECK_EQ(utcp_sk_connect(w.sa, c, B_IP, PORT, 0, NULL, w.now), -EINPROGRESS);
	h_sw_run(&w, 10000);
	s = utcp_sk_accept(w.sb, l, NULL);
	CHECK(s >= 0);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);
	CHECK_EQ(h_sk_send_n(w.sa, c, 60000, 0, w.now), 8192);
	CHECK_EQ(h_sk_send_n(w.sa, c, 100, 0, w.now), -EAGAIN);
	CHECK_EQ(utcp_sk_ready(w.sa, c), 0);                   /* full: not writable */
	h_sw_run(&w, 100000);
	got = h_sk_drain(w.sb, s, w.now);
	CHECK(got > 0);
	h_sw_run(&w, 100000);
	got += h_sk_drain(w.sb, s, w.now);
	h_sw_run(&w, 100000);
	got += h_sk_drain(w.sb, s, w.now);
	CHECK_EQ(got, 8192);
	CHECK_EQ(utcp_sk_outq(w.sa, c), 0);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);
	h_sw_free(&w);
}

/* POLLOUT as sk_stream_is_writeable(): at least a third of the send buffer free. */
TEST(test_sock_pollout_threshold)
{
	struct utcp_pair_impair lose = {.loss_ppm = 1000000, .delay_us = 1000};
	struct h_sw w;
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	CHECK_EQ(utcp_sk_setopt(w.sa, c, UTCP_SO_SNDBUF, 15000), 0);  /* 30000 */
	utcp_pair_set_impair(w.pair, 0, &lose);                       /* nothing gets acked */
	CHECK_EQ(h_sk_send_n(w.sa, c, 20000, 0, w.now), 20000);
	CHECK_EQ(utcp_sk_ready(w.sa, c), P_OUT);               /* 10000 free >= 20000 / 2 */
	CHECK_EQ(h_sk_send_n(w.sa, c, 1, 0, w.now), 1);
	CHECK_EQ(utcp_sk_ready(w.sa, c), 0);                   /* 9999 free < 20001 / 2 */
	CHECK_EQ(utcp_sk_outq(w.sa, c), 20001);
	h_sw_free(&w);
}

TEST(test_sock_destroy_resets_connections)
{
	struct h_sw w;
	int c, s;

	w_init(&w);
	h_sw_pair(&w, &c, &s);
	utcp_socks_destroy(w.sb, w.now);
	CHECK_EQ(utcp_socks_create(w.b, NULL, &w.sb), 0);
	CHECK_EQ(utcp_get_stats(w.b)->conns_in_use, 0);
	h_sw_run(&w, 10000);
	CHECK_EQ(utcp_sk_error(w.sa, c), -ECONNRESET);
	h_sw_free(&w);
}
