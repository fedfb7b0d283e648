/* sock_int.h — the socket table's insides, shared by sock.c (sockets) and migrate.c (moving a
 * listener's unaccepted connections to another stack).  Not a public header. */
#ifndef UTCP_SOCK_INT_H
#define UTCP_SOCK_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "utcp_sock.h"

#define SK_IDX_BITS 20
#define SK_IDX_MASK ((1u << SK_IDX_BITS) - 1)
#define SK_GEN_MASK 0x7ffu      /* ids stay non-negative ints */
#define NONE UINT32_MAX
#define BACKLOG_MAX 4096        /* Linux's default somaxconn */
/* Linux's floors for SO_RCVBUF / SO_SNDBUF (SOCK_MIN_RCVBUF, SOCK_MIN_SNDBUF on x86-64) */
#define MIN_RCVBUF 2304u
#define MIN_SNDBUF 4608u
#define LINUX_MSS_DEFAULT 536   /* TCP_MAXSEG of a socket that is not connected */
#define TS_OPT_LEN 12           /* the timestamp option in every segment (RFC 7323) */

enum sk_kind { SK_FREE = 0, SK_OPEN, SK_LISTEN, SK_CONN };

struct sk_list {
	uint32_t head, tail, n;
};

struct sk {
	uint8_t kind;
	uint16_t gen;
	/* options; an accepted connection starts with its listener's */
	bool keepalive, nodelay, cork;
	int linger;                 /* -1: off; else seconds */
	uint32_t rcvbuf, sndbuf;    /* as getsockopt reports them; 0: never set */
	uint32_t ka_idle, ka_intvl, ka_cnt;    /* seconds / probes; 0: the stack's */
	int defer_accept;           /* seconds, rounded as Linux rounds them */
	const char *cc;             /* NULL: the stack's */
	int err;                    /* pending error (SO_ERROR), a negative errno */
	/* a connection */
	utcp_cid cid;
	bool connected;             /* reached ESTABLISHED (sock->state SS_CONNECTED) */
	bool gone;                  /* its connection reached CLOSED; the error went to err */
	bool shut_rd, shut_wr;      /* shutdown() by the application */
	bool more;                  /* the last send had MSG_MORE */
	/* a listener */
	int lid;                    /* the stack's listener */
	uint16_t port;
	int backlog;
	struct sk_list aq, dq;      /* accept queue; deferred (TCP_DEFER_ACCEPT) connections */
	struct sk_list fq;          /* connections frozen by utcp_sk_migrate_out (migrate.c) */
	/* an unaccepted connection, in its listener's aq, dq or fq (invisible to the caller) */
	uint32_t parent;
	uint32_t prev, next;        /* list links; next also links the free list */
	bool deferred;
	uint64_t defer_until;
	bool frozen;                /* in fq: being moved to another stack */
	bool half_open;             /* frozen in SYN-RECEIVED (the listener never counted it queued) */
	bool marked;                /* in this round's notify list */
};

struct utcp_socks {
	struct utcp_stack *st;
	const struct utcp_config *cfg;
	uint32_t max;
	struct sk *sk;
	uint32_t *by_cid;           /* UTCP_CID_INDEX(cid) -> socket */
	uint32_t *by_lid;           /* stack listener id -> socket */
	uint32_t nconn, nlid;
	int *marked;                /* ids to notify this round */
	uint32_t nmarked;
	uint32_t free_head;
	int wake_fd;
	bool in_process;
	uint64_t now;               /* the latest time the caller gave (for setopt) */
	utcp_sk_notify_fn notify;
	void *notify_arg;
};


/* ids, lists, allocation (sock.c) */
int usk_id(const struct utcp_socks *ss, const struct sk *s);
uint32_t usk_idx(const struct utcp_socks *ss, const struct sk *s);
/* A socket the caller holds (not an unaccepted connection), or NULL. */
struct sk *usk_get(struct utcp_socks *ss, int id);
void usk_list_push(struct utcp_socks *ss, struct sk_list *l, struct sk *s);
void usk_list_del(struct utcp_socks *ss, struct sk_list *l, struct sk *s);
struct sk *usk_alloc(struct utcp_socks *ss);
void usk_free(struct utcp_socks *ss, struct sk *s);
/* Notify this socket at the end of the next utcp_socks_process round. */
void usk_mark(struct utcp_socks *ss, struct sk *s);
/* A new connection of listener l (cid is the table's now) in socket c (from usk_alloc): the
 * listener's options, queued to be accepted (or deferred, TCP_DEFER_ACCEPT). */
void usk_child_init(struct utcp_socks *ss, struct sk *l, struct sk *c, utcp_cid cid, uint64_t now);
/* The stack's pending events into the sockets, without notifying anyone yet. */
void usk_drain_events(struct utcp_socks *ss, uint64_t now);
/* utcp_sk_close / shutdown of a listener with a frozen batch: the batch goes (migrate.c). */
void usk_migrate_abandon(struct utcp_socks *ss, struct sk *l, uint64_t now);

#endif
