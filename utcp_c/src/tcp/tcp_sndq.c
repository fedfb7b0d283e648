/* tcp_sndq.c — a connection's send queue: the bytes from SND.UNA on, as copies in the ring
 * (utcp_send) and references to the caller's memory (utcp_send_ref), in the order they were
 * queued.  Output asks for any range of it as pieces and copies them into the frame once;
 * ACKs consume it from the front and release the references they complete.
 *
 * Positions are 64-bit counts of bytes queued on the connection (no wrap); a reference keeps
 * its position, so the ring offset of a copied byte is its distance from the head minus the
 * referenced bytes in between.  A connection holds at most cfg.send_refs references
 * (UTCP_SEND_REFS_MAX), so every walk here is short. */
#include "stack.h"
#include "tcp/tcb.h"

/* The i-th queued reference (tcb->nref_slots slots, a circular FIFO from ref_first). */
static struct utcp_sndref *ref_at(const struct utcp_tcb *tcb, unsigned i)
{
	return &tcb->refs[(tcb->ref_first + i) % tcb->nref_slots];
}

uint32_t tcp_sndq_limit(const struct utcp_tcb *tcb)
{
	return tcb->snd_cap && tcb->snd_cap < tcb->sbuf.cap ? tcb->snd_cap : tcb->sbuf.cap;
}

uint32_t tcp_sndq_room(const struct utcp_tcb *tcb)
{
	uint32_t lim = tcp_sndq_limit(tcb), len = tcp_sndq_len(tcb);

	/* the ring always has this much free: it holds only part of what the limit counts */
	return lim > len ? lim - len : 0;
}

uint32_t tcp_sndq_append(struct utcp_tcb *tcb, const void *buf, uint32_t n)
{
	uint32_t room = tcp_sndq_room(tcb);

	return ring_append(&tcb->sbuf, buf, n < room ? n : room);
}

uint32_t tcp_sndq_append_ref(struct utcp_stack *st, struct utcp_tcb *tcb, const void *buf,
			     uint32_t n, uint64_t cookie)
{
	uint32_t room = tcp_sndq_room(tcb);
	struct utcp_sndref *r;

	if (n > room)
		n = room;
	if (!n || tcb->nrefs == tcb->nref_slots)
		return 0;
	r = ref_at(tcb, tcb->nrefs++);
	r->p = buf;
	r->pos = tcb->sq_head + tcp_sndq_len(tcb);
	r->len = n;
	r->cookie = cookie;
	tcb->ref_bytes += n;
	st->stats.send_refs++;
	st->stats.send_ref_bytes += n;
	return n;
}

unsigned tcp_sndq_gather(const struct utcp_tcb *tcb, uint32_t off, uint32_t n,
			 struct utcp_piece *pc)
{
	uint64_t cur = tcb->sq_head + off, end = cur + n;
	uint32_t roff = off;     /* ring offset of the next copied byte at or after cur */
	unsigned i = 0, np = 0;

	if (!tcb->nrefs) {
		ring_peek(&tcb->sbuf, off, n, &pc[0].p, &pc[0].len, &pc[1].p, &pc[1].len);
		return pc[1].len ? 2 : 1;
	}
	/* references before cur hold none of the ring's bytes before it */
	for (; i < tcb->nrefs; i++) {
		const struct utcp_sndref *r = ref_at(tcb, i);

		if (r->pos + r->len > cur) {
			if (r->pos < cur)
				roff -= (uint32_t)(cur - r->pos);
			break;
		}
		roff -= r->len;
	}
	while (cur < end) {
		const struct utcp_sndref *r = i < tcb->nrefs ? ref_at(tcb, i) : NULL;
		uint64_t k;

		if (r && r->pos <= cur) {
			k = (r->pos + r->len < end ? r->pos + r->len : end) - cur;
			pc[np].p = r->p + (cur - r->pos);
			pc[np++].len = (uint32_t)k;
			if (cur + k == r->pos + r->len)
				i++;
		} else {
			k = (r && r->pos < end ? r->pos : end) - cur;
			ring_peek(&tcb->sbuf, roff, (uint32_t)k, &pc[np].p, &pc[np].len, &pc[np + 1].p,
				  &pc[np + 1].len);
			np += pc[np + 1].len ? 2 : 1;
			roff += (uint32_t)k;
		}
		cur += k;
	}
	return np;
}

/* The first reference is done: handed back, its slot free. */
static void release_first(struct utcp_stack *st, struct utcp_tcb *tcb)
{
	struct utcp_sndref r = *ref_at(tcb, 0);

	tcb->ref_bytes -= r.len;
	tcb->ref_first = (uint8_t)((tcb->ref_first + 1) % tcb->nref_slots);
	tcb->nrefs--;
	st->stats.send_refs_released++;
	if (st->ref_release)
		st->ref_release(st->ref_release_ctx, tcp_cid_of(st, tcb), r.cookie);
}

void tcp_sndq_consume(struct utcp_stack *st, struct utcp_tcb *tcb, uint32_t n)
{
	while (n) {
		struct utcp_sndref *r = tcb->nrefs ? ref_at(tcb, 0) : NULL;
		uint32_t k;

		if (r && r->pos == tcb->sq_head) {
			k = n < r->len ? n : r->len;
			r->p += k;
			r->pos += k;
			r->len -= k;
			tcb->ref_bytes -= k;
			if (!r->len)
				release_first(st, tcb);
		} else {
			uint64_t gap = r ? r->pos - tcb->sq_head : n;

			k = gap < n ? (uint32_t)gap : n;
			if (k > tcb->sbuf.len)
				k = tcb->sbuf.len;      /* cannot happen: the caller stays within len */
			if (!k)
				break;
			ring_consume(&tcb->sbuf, k);
		}
		tcb->sq_head += k;
		n -= k;
	}
}

void tcp_sndq_drop(struct utcp_stack *st, struct utcp_tcb *tcb)
{
	tcb->sq_head += tcp_sndq_len(tcb);
	ring_consume(&tcb->sbuf, tcb->sbuf.len);
	while (tcb->nrefs)
		release_first(st, tcb);
}
