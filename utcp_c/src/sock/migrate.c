/* migrate.c — moving a listener's connections that nobody accepted yet to another UTCP stack
 * (utcp_sk_migrate_out / _done / _in, utcp_sock.h): nginx's reload, where the old worker's
 * accept queue would otherwise be reset.  The stack freezes and describes each connection
 * (utcp_conn_image, tcp_mig.c); this file keeps the frozen batch on the listener and writes
 * the images as a versioned little-endian blob (docs/utcp-sockets.md, "Moving connections").
 *
 * Blob, version 1: a 16-byte header, then `count` records, each 100 bytes + its data.
 *   header: magic "UTMG", u16 version (1), u16 header length (16), u32 count, u32 total length
 *   record: u32 record length (100 + data_len), u8 state, u8 flags, u8 snd_wscale,
 *           u8 rcv_wscale, u32 laddr, u32 raddr, u16 lport, u16 rport, 6 bytes rmac, u16 mss,
 *           u32 iss, irs, snd_una, snd_nxt, snd_wnd, snd_wl1, snd_wl2, rcv_nxt, rcv_adv,
 *           ts_recent, ts_offset, last_ack_sent, srtt_us, rttvar_us, u64 synack_us,
 *           u8 syn_retries, u8 backoff, u16 reserved (0), u32 data_len, then data_len bytes. */
#include <errno.h>
#include <string.h>

#include "sock/sock_int.h"
#include "utcp_sock.h"

#define MIG_MAGIC 0x474d5455u          /* "UTMG" read as a little-endian u32 */
#define MIG_VERSION 1
#define MIG_HDR_LEN 16
#define MIG_REC_LEN 100
#define MIG_MAX_BATCH 4096             /* a listener's queue never holds more (backlog cap) */

enum {
	F_WS = 1 << 0, F_SACK = 1 << 1, F_TS = 1 << 2, F_FIN = 1 << 3, F_RTT = 1 << 4,
	F_SYN_TIMED_OUT = 1 << 5, F_ALL = (1 << 6) - 1,
};

/* ---- little-endian fields ---- */

static uint8_t *put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	return put16(put16(p, (uint16_t)v), (uint16_t)(v >> 16));
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	return put32(put32(p, (uint32_t)v), (uint32_t)(v >> 32));
}

static uint16_t get16(const uint8_t **p)
{
	uint16_t v = (uint16_t)((*p)[0] | (*p)[1] << 8);

	*p += 2;
	return v;
}

static uint32_t get32(const uint8_t **p)
{
	uint32_t lo = get16(p);

	return lo | (uint32_t)get16(p) << 16;
}

static uint64_t get64(const uint8_t **p)
{
	uint64_t lo = get32(p);

	return lo | (uint64_t)get32(p) << 32;
}

static void put_header(uint8_t *p, uint32_t count, uint32_t total)
{
	p = put32(p, MIG_MAGIC);
	p = put16(p, MIG_VERSION);
	p = put16(p, MIG_HDR_LEN);
	p = put32(p, count);
	put32(p, total);
}

/* One record's fixed part; the data follows it (the caller copies it in). */
static void put_record(uint8_t *p, const struct utcp_conn_image *im)
{
	uint8_t flags = (uint8_t)((im->ws_ok ? F_WS : 0) | (im->sack_ok ? F_SACK : 0) |
				  (im->ts_ok ? F_TS : 0) | (im->fin_rcvd ? F_FIN : 0) |
				  (im->have_rtt ? F_RTT : 0) | (im->syn_timed_out ? F_SYN_TIMED_OUT : 0));

	p = put32(p, MIG_REC_LEN + im->data_len);
	*p++ = (uint8_t)im->state;
	*p++ = flags;
	*p++ = im->snd_wscale;
	*p++ = im->rcv_wscale;
	p = put32(p, im->laddr);
	p = put32(p, im->raddr);
	p = put16(p, im->lport);
	p = put16(p, im->rport);
	memcpy(p, im->rmac, 6);
	p += 6;
	p = put16(p, im->mss);
	p = put32(p, im->iss);
	p = put32(p, im->irs);
	p = put32(p, im->snd_una);
	p = put32(p, im->snd_nxt);
	p = put32(p, im->snd_wnd);
	p = put32(p, im->snd_wl1);
	p = put32(p, im->snd_wl2);
	p = put32(p, im->rcv_nxt);
	p = put32(p, im->rcv_adv);
	p = put32(p, im->ts_recent);
	p = put32(p, im->ts_offset);
	p = put32(p, im->last_ack_sent);
	p = put32(p, im->srtt_us);
	p = put32(p, im->rttvar_us);
	p = put64(p, im->synack_us);
	*p++ = im->syn_retries;
	*p++ = im->backoff;
	p = put16(p, 0);
	put32(p, im->data_len);
}

/* Reads the record at *pos (bounds checked against end): its image and where its data is.
 * -EBADMSG if it is cut short or its lengths or reserved bits are wrong. */
static int get_record(const uint8_t **pos, const uint8_t *end, struct utcp_conn_image *im,
		      const uint8_t **data)
{
	const uint8_t *p = *pos;
	uint32_t rec_len, reserved;
	uint8_t flags;

	if ((size_t)(end - p) < MIG_REC_LEN)
		return -EBADMSG;
	memset(im, 0, sizeof(*im));
	rec_len = get32(&p);
	im->state = (enum utcp_state)*p++;
	flags = *p++;
	im->snd_wscale = *p++;
	im->rcv_wscale = *p++;
	im->laddr = get32(&p);
	im->raddr = get32(&p);
	im->lport = get16(&p);
	im->rport = get16(&p);
	memcpy(im->rmac, p, 6);
	p += 6;
	im->mss = get16(&p);
	im->iss = get32(&p);
	im->irs = get32(&p);
	im->snd_una = get32(&p);
	im->snd_nxt = get32(&p);
	im->snd_wnd = get32(&p);
	im->snd_wl1 = get32(&p);
	im->snd_wl2 = get32(&p);
	im->rcv_nxt = get32(&p);
	im->rcv_adv = get32(&p);
	im->ts_recent = get32(&p);
	im->ts_offset = get32(&p);
	im->last_ack_sent = get32(&p);
	im->srtt_us = get32(&p);
	im->rttvar_us = get32(&p);
	im->synack_us = get64(&p);
	im->syn_retries = *p++;
	im->backoff = *p++;
	reserved = get16(&p);
	im->data_len = get32(&p);
	if (flags & ~F_ALL || reserved)
		return -EBADMSG;
	if (im->data_len > (size_t)(end - p) || rec_len != MIG_REC_LEN + (uint64_t)im->data_len)
		return -EBADMSG;
	im->ws_ok = flags & F_WS;
	im->sack_ok = flags & F_SACK;
	im->ts_ok = flags & F_TS;
	im->fin_rcvd = flags & F_FIN;
	im->have_rtt = flags & F_RTT;
	im->syn_timed_out = flags & F_SYN_TIMED_OUT;
	*data = p;
	*pos = p + im->data_len;
	return 0;
}

/* ---- out ---- */

/* A frozen child leaves its listener's batch: moved (released without a word) or not (reset,
 * as closing the listener would have).  Its place in the listener's queue count goes too. */
static void child_end(struct utcp_socks *ss, struct sk *l, struct sk *c, bool moved, uint64_t now)
{
	usk_list_del(ss, &l->fq, c);
	utcp_conn_release(ss->st, c->cid, moved, now);
	if (!c->half_open)
		utcp_listen_release(ss->st, l->lid);    /* a half-open one was never queued */
	usk_free(ss, c);
}

/* Frozen child c's record at buf + *off (room checked by the caller), joining the batch. */
static bool write_child(struct utcp_socks *ss, struct sk *l, struct sk *c, uint8_t *buf,
			size_t *off, struct utcp_mig_flow *flow, uint64_t now)
{
	struct utcp_conn_image im;

	c->frozen = true;
	usk_list_push(ss, &l->fq, c);
	if (utcp_conn_export(ss->st, c->cid, &im) < 0 ||
	    (im.data_len && utcp_peek(ss->st, c->cid, buf + *off + MIG_REC_LEN, im.data_len, 0) !=
				    (ssize_t)im.data_len)) {
		child_end(ss, l, c, false, now);        /* cannot happen: frozen a moment ago */
		return false;
	}
	put_record(buf + *off, &im);
	*off += MIG_REC_LEN + im.data_len;
	flow->laddr = im.laddr;
	flow->raddr = im.raddr;
	flow->lport = im.lport;
	flow->rport = im.rport;
	return true;
}

/* Queued child c (ESTABLISHED or CLOSE-WAIT, not accepted) into the batch if its record fits:
 * 1 if it joined, 0 if it cannot move (reset while it waited...), -ENOSPC. */
static int freeze_queued(struct utcp_socks *ss, struct sk *l, struct sk_list *from, struct sk *c,
			 uint8_t *buf, size_t cap, size_t *off, struct utcp_mig_flow *flow,
			 uint64_t now)
{
	struct utcp_conn_status cs;

	if (utcp_conn_status(ss->st, c->cid, &cs) < 0 ||
	    (cs.state != UTCP_ESTABLISHED && cs.state != UTCP_CLOSE_WAIT))
		return 0;
	if ((uint64_t)*off + MIG_REC_LEN + cs.rcv_queued > cap)
		return -ENOSPC;
	if (utcp_conn_freeze(ss->st, c->cid) < 0)
		return 0;
	usk_list_del(ss, from, c);
	if (c->deferred) {
		c->deferred = false;
		utcp_set_wakeup(ss->st, c->cid, 0);
	}
	return write_child(ss, l, c, buf, off, flow, now) ? 1 : 0;
}

/* Half-open connections into the batch: a record without data each, as many as fit and as
 * there are free sockets to hold them.  Returns how many joined, or -ENOSPC if none fitted
 * while one was there. */
static int freeze_half_open(struct utcp_socks *ss, struct sk *l, struct utcp_mig_flow *flows,
			    int max, uint8_t *buf, size_t cap, size_t *off, uint64_t now)
{
	int n = 0;

	while (n < max) {
		uint64_t room = cap > *off ? (cap - *off) / MIG_REC_LEN : 0;
		int want = max - n, alloc = 0, got, j;
		struct sk *slots[64];
		utcp_cid cids[64];

		if (want > 64)
			want = 64;
		if ((uint64_t)want > room)
			want = (int)room;
		if (!want)
			return !n && utcp_listen_freeze_half_open(ss->st, l->lid, NULL, 0) > 0 ? -ENOSPC
												  : n;
		while (alloc < want && (slots[alloc] = usk_alloc(ss)) != NULL)
			alloc++;
		got = alloc ? utcp_listen_freeze_half_open(ss->st, l->lid, cids, alloc) : 0;
		if (got < 0)
			got = 0;
		for (j = got; j < alloc; j++)
			usk_free(ss, slots[j]);
		for (j = 0; j < got; j++) {
			struct sk *c = slots[j];

			c->kind = SK_CONN;
			c->cid = cids[j];
			c->connected = true;
			c->parent = usk_idx(ss, l);
			c->half_open = true;
			ss->by_cid[UTCP_CID_INDEX(cids[j])] = usk_idx(ss, c);
			n += write_child(ss, l, c, buf, off, &flows[n], now);
		}
		if (got < want)
			break;
	}
	return n;
}

int utcp_sk_migrate_out(struct utcp_socks *ss, int id, struct utcp_mig_flow *flows, int max,
			void *vbuf, size_t cap, size_t *len, uint64_t now)
{
	struct sk *l = usk_get(ss, id);
	struct sk_list *queues[2];
	uint8_t *buf = vbuf;
	size_t off = MIG_HDR_LEN;
	int n = 0, k, rc = 0;

	if (len)
		*len = 0;
	if (!l)
		return -EBADF;
	if (l->kind != SK_LISTEN)
		return -EINVAL;
	if (l->fq.n)
		return -EBUSY;
	if (!flows || max < 0 || !len || (!buf && cap))
		return -EINVAL;
	if (max > MIG_MAX_BATCH)
		max = MIG_MAX_BATCH;
	if (now > ss->now)
		ss->now = now;
	/* What already arrived decides what is queued: completed handshakes join the queue. */
	if (!ss->in_process)
		usk_drain_events(ss, now);
	/* the accept queue in its order, then deferred connections, then half-open ones */
	queues[0] = &l->aq;
	queues[1] = &l->dq;
	for (k = 0; k < 2 && n < max && rc >= 0; k++) {
		uint32_t i = queues[k]->head;

		while (i != NONE && n < max) {
			struct sk *c = &ss->sk[i];

			i = c->next;
			rc = freeze_queued(ss, l, queues[k], c, buf, cap, &off, &flows[n], now);
			if (rc < 0)
				break;
			n += rc;
		}
	}
	if (rc >= 0 && n < max) {
		rc = freeze_half_open(ss, l, flows + n, max - n, buf, cap, &off, now);
		if (rc > 0)
			n += rc;
	}
	if (!n && rc == -ENOSPC)
		return -ENOSPC;
	if (cap < MIG_HDR_LEN)
		return 0;               /* nothing to move, and no room for an empty header */
	put_header(buf, (uint32_t)n, (uint32_t)off);
	*len = off;
	return n;
}

void utcp_sk_migrate_done(struct utcp_socks *ss, int id, int moved, uint64_t now)
{
	struct sk *l = usk_get(ss, id);
	int i = 0;

	if (!l || l->kind != SK_LISTEN)
		return;
	if (now > ss->now)
		ss->now = now;
	while (l->fq.head != NONE) {
		struct sk *c = &ss->sk[l->fq.head];

		child_end(ss, l, c, i++ < moved, now);
	}
}

void usk_migrate_abandon(struct utcp_socks *ss, struct sk *l, uint64_t now)
{
	/* The listener closes with a batch still frozen: nobody will say whether it moved.
	 * Resetting a connection another stack now carries would kill it, and one that did not
	 * move gets a RST anyway at its next segment (no connection, no listener): let the
	 * batch go without a word. */
	while (l->fq.head != NONE)
		child_end(ss, l, &ss->sk[l->fq.head], true, now);
}

/* ---- in ---- */

/* Walks the blob: n records, each checked (format, then what this stack can take) before
 * anything is adopted.  Returns the count or -EBADMSG / -EINVAL. */
static int check_blob(struct utcp_socks *ss, const struct sk *l, const uint8_t *buf, size_t len,
		      uint64_t now)
{
	const uint8_t *p = buf, *end = buf + len, *data;
	struct utcp_conn_image im;
	uint32_t count, total, i;
	bool foreign = false;

	if (!buf || len < MIG_HDR_LEN)
		return -EBADMSG;
	if (get32(&p) != MIG_MAGIC || get16(&p) != MIG_VERSION || get16(&p) != MIG_HDR_LEN)
		return -EBADMSG;
	count = get32(&p);
	total = get32(&p);
	if (total != len || count > MIG_MAX_BATCH)
		return -EBADMSG;
	for (i = 0; i < count; i++) {
		if (get_record(&p, end, &im, &data) < 0 ||
		    utcp_conn_image_check(ss->st, &im, now) < 0)
			return -EBADMSG;
		if (im.laddr != ss->cfg->local_ip || im.lport != l->port)
			foreign = true;
	}
	if (p != end)
		return -EBADMSG;        /* bytes after the last record */
	return foreign ? -EINVAL : (int)count;
}

int utcp_sk_migrate_in(struct utcp_socks *ss, int id, const void *vbuf, size_t len, uint64_t now)
{
	struct sk *l = usk_get(ss, id);
	const uint8_t *p = vbuf, *end = p + len, *data;
	struct utcp_conn_image im;
	int count, n;

	if (!l)
		return -EBADF;
	if (l->kind != SK_LISTEN)
		return -EINVAL;
	if (now > ss->now)
		ss->now = now;
	count = check_blob(ss, l, p, len, now);
	if (count < 0)
		return count;
	p += MIG_HDR_LEN;
	for (n = 0; n < count; n++) {
		struct sk *c = NULL;
		utcp_cid cid;

		get_record(&p, end, &im, &data);
		if (im.state != UTCP_SYN_RECEIVED) {
			c = usk_alloc(ss);      /* an established one needs its socket now */
			if (!c)
				break;
		}
		/* the accept queue's bound: backlog + 1 (half-open ones included, as for SYNs) */
		if (utcp_conn_adopt(ss->st, l->lid, &im, data, l->backlog + 1, now, &cid) < 0) {
			if (c)
				usk_free(ss, c);
			break;
		}
		if (c)
			usk_child_init(ss, l, c, cid, now);     /* queued, with the options */
	}
	return n;
}
