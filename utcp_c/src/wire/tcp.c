/* tcp.c — TCP header and option parse/emit (RFC 9293 3.1, RFC 7323, RFC 2018).
 * A malformed option (no length byte, length < 2, running past the header, or a
 * known kind with the wrong size) rejects the whole segment: we never guess. */
#include <errno.h>
#include <string.h>

#include "utcp_wire.h"

int utcp_tcp_parse_options(const uint8_t *opt, size_t len, struct utcp_tcp_opts *out)
{
	size_t i = 0;

	memset(out, 0, sizeof(*out));
	while (i < len) {
		uint8_t kind = opt[i], olen;

		if (kind == UTCP_TCPOPT_EOL)
			break;
		if (kind == UTCP_TCPOPT_NOP) {
			i++;
			continue;
		}
		if (i + 1 >= len)
			return -EBADMSG;        /* kind without a length byte */
		olen = opt[i + 1];
		if (olen < 2 || olen > len - i)
			return -EBADMSG;        /* zero-length loops forever; past header overruns */
		switch (kind) {
		case UTCP_TCPOPT_MSS:
			if (olen != 4)
				return -EBADMSG;
			out->has_mss = true;
			out->mss = utcp_get16(opt + i + 2);
			break;
		case UTCP_TCPOPT_WS:
			if (olen != 3)
				return -EBADMSG;
			out->has_ws = true;
			out->ws = opt[i + 2];
			break;
		case UTCP_TCPOPT_SACK_OK:
			if (olen != 2)
				return -EBADMSG;
			out->sack_ok = true;
			break;
		case UTCP_TCPOPT_SACK: {
			unsigned n, b;

			if (olen < 10 || (olen - 2) % 8 != 0)
				return -EBADMSG;
			n = (olen - 2u) / 8u;
			if (n > UTCP_TCP_MAX_SACK)
				return -EBADMSG;        /* cannot happen in 40 bytes, but be explicit */
			for (b = 0; b < n; b++) {
				out->sack[b].left = utcp_get32(opt + i + 2 + 8 * b);
				out->sack[b].right = utcp_get32(opt + i + 6 + 8 * b);
			}
			out->nsack = (uint8_t)n;
			break;
		}
		case UTCP_TCPOPT_TS:
			if (olen != 10)
				return -EBADMSG;
			out->has_ts = true;
			out->tsval = utcp_get32(opt + i + 2);
			out->tsecr = utcp_get32(opt + i + 6);
			break;
		default:
			break;                  /* unknown kinds are skipped by their length */
		}
		i += olen;
	}
	return 0;
}

int utcp_tcp_parse(const uint8_t *seg, size_t len, uint32_t src, uint32_t dst, bool verify_csum,
		   struct utcp_tcp *tcp, enum utcp_drop *why)
{
	unsigned doff;

	if (len < UTCP_TCP_HLEN) {
		*why = UTCP_DROP_TCP_TRUNC;
		return -EBADMSG;
	}
	doff = (unsigned)(seg[12] >> 4) * 4;
	if (doff < UTCP_TCP_HLEN || doff > len) {
		*why = UTCP_DROP_TCP_DOFF;
		return -EBADMSG;
	}
	if (len > 0xffff) {
		*why = UTCP_DROP_TCP_TRUNC;
		return -EBADMSG;
	}
	if (verify_csum) {
		uint32_t s = utcp_csum_pseudo(src, dst, UTCP_IPPROTO_TCP, (uint16_t)len);

		if (utcp_csum_fold(utcp_csum_add(s, seg, len)) != 0) {
			*why = UTCP_DROP_TCP_CSUM;
			return -EBADMSG;
		}
	}
	tcp->sport = utcp_get16(seg);
	tcp->dport = utcp_get16(seg + 2);
	tcp->seq = utcp_get32(seg + 4);
	tcp->ack = utcp_get32(seg + 8);
	tcp->hdr_len = (uint8_t)doff;
	tcp->flags = seg[13];
	tcp->wnd = utcp_get16(seg + 14);
	tcp->urp = utcp_get16(seg + 18);
	if (utcp_tcp_parse_options(seg + UTCP_TCP_HLEN, doff - UTCP_TCP_HLEN, &tcp->opt) < 0) {
		*why = UTCP_DROP_TCP_OPTION;
		return -EBADMSG;
	}
	tcp->payload = seg + doff;
	tcp->payload_len = len - doff;
	*why = UTCP_DROP_NONE;
	return 0;
}

/* How many SACK blocks fit after the other options (n bytes of them). */
static unsigned sack_fit(const struct utcp_tcp_opts *opt, size_t n)
{
	size_t room = 40 - n, nb = opt->nsack;

	if (nb > UTCP_TCP_MAX_SACK)
		nb = UTCP_TCP_MAX_SACK;
	if (room < 4 + 8)
		return 0;
	if (nb > (room - 4) / 8)
		nb = (room - 4) / 8;
	return (unsigned)nb;
}

/* Bytes of the options other than SACK blocks (each kind's layout is fixed). */
static size_t base_len(const struct utcp_tcp_opts *opt)
{
	return (opt->has_mss ? 4u : 0u) + (opt->has_ts ? 12u : opt->sack_ok ? 4u : 0u) +
	       (opt->has_ws ? 4u : 0u);
}

int utcp_tcp_options_len(const struct utcp_tcp_opts *opt)
{
	size_t n = base_len(opt);
	unsigned nb = opt->nsack ? sack_fit(opt, n) : 0;

	return (int)(n + (nb ? 4u + 8u * nb : 0u));     /* every layout is a multiple of 4 */
}

/* Writes the options at o, which has room for utcp_tcp_options_len(opt) bytes. */
static size_t put_options(uint8_t *o, const struct utcp_tcp_opts *opt)
{
	size_t n = 0;

	if (opt->has_mss) {
		o[n++] = UTCP_TCPOPT_MSS;
		o[n++] = 4;
		utcp_put16(o + n, opt->mss);
		n += 2;
	}
	if (opt->has_ts) {
		if (opt->sack_ok) {     /* SACK-permitted shares the TS word, as Linux does */
			o[n++] = UTCP_TCPOPT_SACK_OK;
			o[n++] = 2;
		} else {
			o[n++] = UTCP_TCPOPT_NOP;
			o[n++] = UTCP_TCPOPT_NOP;
		}
		o[n++] = UTCP_TCPOPT_TS;
		o[n++] = 10;
		utcp_put32(o + n, opt->tsval);
		utcp_put32(o + n + 4, opt->tsecr);
		n += 8;
	} else if (opt->sack_ok) {
		o[n++] = UTCP_TCPOPT_NOP;
		o[n++] = UTCP_TCPOPT_NOP;
		o[n++] = UTCP_TCPOPT_SACK_OK;
		o[n++] = 2;
	}
	if (opt->has_ws) {
		o[n++] = UTCP_TCPOPT_NOP;
		o[n++] = UTCP_TCPOPT_WS;
		o[n++] = 3;
		o[n++] = opt->ws;
	}
	if (opt->nsack) {
		unsigned b, nb = sack_fit(opt, n);

		if (nb) {
			o[n++] = UTCP_TCPOPT_NOP;
			o[n++] = UTCP_TCPOPT_NOP;
			o[n++] = UTCP_TCPOPT_SACK;
			o[n++] = (uint8_t)(2 + 8 * nb);
			for (b = 0; b < nb; b++) {
				utcp_put32(o + n, opt->sack[b].left);
				utcp_put32(o + n + 4, opt->sack[b].right);
				n += 8;
			}
		}
	}
	return n;
}

int utcp_tcp_emit_options(uint8_t *buf, size_t cap, const struct utcp_tcp_opts *opt)
{
	int n = utcp_tcp_options_len(opt);

	if ((size_t)n > cap)
		return -ENOSPC;
	put_options(buf, opt);
	return n;
}

int utcp_tcp_emit(uint8_t *buf, size_t cap, uint32_t src, uint32_t dst, const struct utcp_tcp *tcp,
		  const void *payload, size_t payload_len)
{
	return utcp_tcp_emit2(buf, cap, src, dst, tcp, payload, payload_len, NULL, 0);
}

int utcp_tcp_emit2(uint8_t *buf, size_t cap, uint32_t src, uint32_t dst, const struct utcp_tcp *tcp,
		   const void *p1, size_t l1, const void *p2, size_t l2)
{
	size_t payload_len = l1 + l2, hlen, total;
	uint32_t s;

	hlen = UTCP_TCP_HLEN + (size_t)utcp_tcp_options_len(&tcp->opt);
	total = hlen + payload_len;
	if (total > cap || total > 0xffff)
		return -ENOSPC;
	utcp_put16(buf, tcp->sport);
	utcp_put16(buf + 2, tcp->dport);
	utcp_put32(buf + 4, tcp->seq);
	utcp_put32(buf + 8, tcp->ack);
	buf[12] = (uint8_t)((hlen / 4) << 4);
	buf[13] = tcp->flags;
	utcp_put16(buf + 14, tcp->wnd);
	utcp_put16(buf + 16, 0);
	utcp_put16(buf + 18, tcp->urp);
	put_options(buf + UTCP_TCP_HLEN, &tcp->opt);
	/* Pseudo-header and header first, then the payload summed as it is copied in:
	 * each payload byte is read once.  hlen is a multiple of 4, so the payload starts
	 * on a word; a second piece after an odd first one does not. */
	s = utcp_csum_add(utcp_csum_pseudo(src, dst, UTCP_IPPROTO_TCP, (uint16_t)total), buf, hlen);
	if (l1)
		s = utcp_csum_copy(buf + hlen, p1, l1, s);
	if (l2)
		s = utcp_csum_add_at(s, l1, utcp_csum_copy(buf + hlen + l1, p2, l2, 0));
	utcp_put16(buf + 16, utcp_csum_fold(s));
	return (int)total;
}
