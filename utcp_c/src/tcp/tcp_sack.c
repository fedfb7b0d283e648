/* tcp_sack.c — the sender's SACK scoreboard (RFC 2018) and the loss accounting of
 * RFC 6675: IsLost(), pipe, and NextSeg()'s rule 1 (the first lost hole not yet
 * retransmitted), with losses found by RACK (rack.c). */
#include <string.h>

#include "tcp/tcb.h"

uint32_t tcp_smss(const struct utcp_tcb *tcb)
{
	/* payload of a full segment: MSS less the timestamp option (RFC 6691) */
	return tcb->mss - (tcb->ts_ok ? 12u : 0u);
}

void tcp_sack_clear(struct utcp_tcb *tcb)
{
	tcb->nsb = 0;
}

static void sb_insert(struct utcp_tcb *tcb, utcp_seq l, utcp_seq r)
{
	int i, j, n = tcb->nsb;

	for (i = 0; i < n && seq_lt(tcb->sb[i].right, l); i++)
		;
	if (i < n && seq_le(tcb->sb[i].left, r)) {
		tcb->sb[i].left = seq_min(tcb->sb[i].left, l);
		tcb->sb[i].right = seq_max(tcb->sb[i].right, r);
		for (j = i + 1; j < n && seq_le(tcb->sb[j].left, tcb->sb[i].right); j++)
			tcb->sb[i].right = seq_max(tcb->sb[i].right, tcb->sb[j].right);
		if (j > i + 1) {
			memmove(&tcb->sb[i + 1], &tcb->sb[j], (size_t)(n - j) * sizeof(tcb->sb[0]));
			tcb->nsb = (uint8_t)(n - (j - i - 1));
		}
		return;
	}
	if (n == UTCP_SB_MAX)
		return;                 /* full: forget this block (only costs precision) */
	memmove(&tcb->sb[i + 1], &tcb->sb[i], (size_t)(n - i) * sizeof(tcb->sb[0]));
	tcb->sb[i].left = l;
	tcb->sb[i].right = r;
	tcb->nsb++;
}

uint32_t tcp_sack_update(struct utcp_tcb *tcb, const struct utcp_tcp_opts *o)
{
	uint32_t before = tcp_sack_bytes(tcb);
	unsigned b;

	for (b = 0; b < o->nsack; b++) {
		utcp_seq l = seq_of(o->sack[b].left), r = seq_of(o->sack[b].right);

		/* Only blocks inside SND.UNA..SND.MAX count; D-SACKs and bogus blocks do not. */
		if (!seq_lt(l, r) || seq_gt(r, tcb->snd_max) || seq_le(r, tcb->snd_una))
			continue;
		if (seq_lt(l, tcb->snd_una))
			l = tcb->snd_una;
		sb_insert(tcb, l, r);
	}
	return tcp_sack_bytes(tcb) - before;    /* newly SACKed bytes */
}

void tcp_sack_prune(struct utcp_tcb *tcb)
{
	while (tcb->nsb && seq_le(tcb->sb[0].right, tcb->snd_una)) {
		memmove(&tcb->sb[0], &tcb->sb[1], (size_t)(tcb->nsb - 1) * sizeof(tcb->sb[0]));
		tcb->nsb--;
	}
	if (tcb->nsb && seq_lt(tcb->sb[0].left, tcb->snd_una))
		tcb->sb[0].left = tcb->snd_una;
}

uint32_t tcp_sack_bytes(const struct utcp_tcb *tcb)
{
	uint32_t n = 0;
	int i;

	for (i = 0; i < tcb->nsb; i++)
		n += (uint32_t)seq_diff(tcb->sb[i].right, tcb->sb[i].left);
	return n;
}

static uint32_t sacked_in(const struct utcp_tcb *tcb, utcp_seq a, utcp_seq b)
{
	uint32_t n = 0;
	int i;

	for (i = 0; i < tcb->nsb; i++) {
		utcp_seq l = seq_max(tcb->sb[i].left, a), r = seq_min(tcb->sb[i].right, b);

		if (seq_lt(l, r))
			n += (uint32_t)seq_diff(r, l);
	}
	return n;
}

uint32_t tcp_sack_bytes_above(const struct utcp_tcb *tcb, utcp_seq s)
{
	return seq_lt(s, tcb->snd_max) ? sacked_in(tcb, s, tcb->snd_max) : 0;
}

bool tcp_sack_covered(const struct utcp_tcb *tcb, utcp_seq s)
{
	int i;

	for (i = 0; i < tcb->nsb; i++)
		if (seq_in(s, tcb->sb[i].left, tcb->sb[i].right))
			return true;
	return false;
}

/* Everything unSACKed below this point is lost: DupThresh * SMSS bytes are SACKed
 * above it (RFC 6675 section 4, IsLost). */
uint32_t tcp_sack_dupthresh(const struct utcp_tcb *tcb)
{
	/* DupThresh: the reordering seen, but never more than a quarter of the flight, so
	 * that small windows still detect loss without a timeout (no RACK timer here). */
	uint32_t fl = tcp_flight(tcb) / tcp_smss(tcb) / 1, thr = tcb->reordering;

	if (thr > fl)
		thr = fl;
	return thr < UTCP_DUPTHRESH ? UTCP_DUPTHRESH : thr;
}

/* IsLost(), pipe and NextSeg() rule 1 of RFC 6675 take RACK's verdicts (rack.c) where
 * RFC 6675 counts DupThresh segments SACKed above: time-based detection copes with
 * reordering that would make DupThresh retransmit spuriously (RFC 8985 2). */
bool tcp_sack_is_lost(const struct utcp_tcb *tcb, utcp_seq s)
{
	return tcp_rack_is_lost(tcb, s);
}

uint32_t tcp_sack_pipe(const struct utcp_tcb *tcb)
{
	/* Bytes in flight: unSACKed ones, less those that need retransmission (lost and not
	 * retransmitted since, or retransmitted and lost again). */
	uint32_t flight = (uint32_t)seq_diff(tcb->snd_max, tcb->snd_una);
	uint32_t pipe = flight - sacked_in(tcb, tcb->snd_una, tcb->snd_max);
	uint32_t lost = tcp_rack_lost_bytes(tcb);

	return pipe > lost ? pipe - lost : 0;
}

bool tcp_sack_next_lost(const struct utcp_tcb *tcb, uint32_t maxlen, utcp_seq *seq, uint32_t *len)
{
	return tcp_rack_next_lost(tcb, maxlen, seq, len);
}
