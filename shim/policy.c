/* policy.c — parsing MSTACK_POLICY (see policy.h). Strict: unknown keys, duplicates, missing
 * fields, bad numbers, networks with host bits set and reversed ranges are all errors, and
 * the error says which field. No allocation; bounded by MSTACK_POLICY_MAX_EPS. */
#include "policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* Unsigned decimal in [lo, hi] spanning exactly [s, e). */
static int num(const char *s, const char *e, unsigned long lo, unsigned long hi,
	       unsigned long *out)
{
	unsigned long v = 0;

	if (s == e || e - s > 10)
		return -1;
	for (const char *c = s; c < e; c++) {
		if (*c < '0' || *c > '9')
			return -1;
		v = v * 10 + (unsigned long)(*c - '0');
	}
	if (v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* "A.B.C.D/LEN:LO-HI" in [s, e). */
static int parse_ep(const char *s, const char *e, struct mstack_policy_ep *ep)
{
	const char *slash = memchr(s, '/', (size_t)(e - s));
	const char *colon, *dash, *c = s;
	unsigned long v, len, lo, hi;
	uint32_t addr = 0;

	if (!slash)
		return -1;
	for (int i = 0; i < 4; i++) {
		const char *d = c;
		while (d < slash && *d != '.')
			d++;
		if ((i < 3) != (d < slash) || num(c, d, 0, 255, &v))
			return -1;
		addr = addr << 8 | (uint32_t)v;
		c = d + 1;
	}
	colon = memchr(slash, ':', (size_t)(e - slash));
	if (!colon || num(slash + 1, colon, 0, 32, &len))
		return -1;
	dash = memchr(colon, '-', (size_t)(e - colon));
	if (!dash || num(colon + 1, dash, 1, 65535, &lo) || num(dash + 1, e, 1, 65535, &hi) ||
	    lo > hi)
		return -1;
	ep->mask = len ? ~(uint32_t)0 << (32 - len) : 0;
	if (addr & ~ep->mask)
		return -1; /* host bits set: not the canonical form */
	ep->net = addr;
	ep->port_lo = (uint16_t)lo;
	ep->port_hi = (uint16_t)hi;
	return 0;
}

static int parse_eps(const char *s, const char *e, struct mstack_policy_ep *eps, unsigned *n,
		     const char *key, char *err, size_t errlen)
{
	*n = 0;
	while (s < e) {
		const char *comma = memchr(s, ',', (size_t)(e - s));
		const char *end = comma ? comma : e;

		if (*n == MSTACK_POLICY_MAX_EPS)
			return fail(err, errlen, "%s: more than %d entries", key, MSTACK_POLICY_MAX_EPS);
		if (parse_ep(s, end, &eps[*n]))
			return fail(err, errlen, "%s: bad entry %d '%.*s'", key, *n, (int)(end - s), s);
		(*n)++;
		if (comma && comma + 1 == e)
			return fail(err, errlen, "%s: trailing comma", key);
		s = comma ? comma + 1 : e;
	}
	return 0;
}

static int flag(const char *s, const char *e, uint8_t *out)
{
	unsigned long v;

	if (num(s, e, 0, 1, &v))
		return -1;
	*out = (uint8_t)v;
	return 0;
}

int mstack_policy_parse(const char *text, struct mstack_policy *p, char *err, size_t errlen)
{
	static const char *const keys[] = { "v", "app", "listen", "connect", "cc", "sack", "ws",
					     "ts", "iw", "nodelay" };
	enum { NKEYS = sizeof(keys) / sizeof(keys[0]) };
	unsigned seen = 0;
	const char *s = text;

	if (!text)
		return fail(err, errlen, "no policy");
	memset(p, 0, sizeof(*p));
	while (*s) {
		const char *semi = strchr(s, ';');
		const char *end = semi ? semi : s + strlen(s);
		const char *eq = memchr(s, '=', (size_t)(end - s));
		unsigned long v;
		unsigned k;

		if (!eq)
			return fail(err, errlen, "field '%.*s' has no '='", (int)(end - s), s);
		for (k = 0; k < NKEYS; k++)
			if (strlen(keys[k]) == (size_t)(eq - s) && !memcmp(keys[k], s, (size_t)(eq - s)))
				break;
		if (k == NKEYS)
			return fail(err, errlen, "unknown field '%.*s'", (int)(eq - s), s);
		if (seen & 1u << k)
			return fail(err, errlen, "field %s given twice", keys[k]);
		seen |= 1u << k;
		const char *val = eq + 1;
		switch (k) {
		case 0:
			if (num(val, end, MSTACK_POLICY_VERSION, MSTACK_POLICY_VERSION, &v))
				return fail(err, errlen, "v: version '%.*s', this shim reads %d",
					    (int)(end - val), val, MSTACK_POLICY_VERSION);
			break;
		case 1:
			if (end == val || end - val > MSTACK_POLICY_NAME_MAX)
				return fail(err, errlen, "app: name of 1 to %d characters",
					    MSTACK_POLICY_NAME_MAX);
			memcpy(p->app, val, (size_t)(end - val));
			break;
		case 2:
		case 3: {
			int rc = k == 2 ? parse_eps(val, end, p->listen, &p->n_listen, "listen", err, errlen)
					: parse_eps(val, end, p->connect, &p->n_connect, "connect", err,
						    errlen);
			if (rc)
				return rc;
			break;
		}
		case 4:
			if (end - val == 7 && !memcmp(val, "newreno", 7))
				p->cc = MSTACK_CC_NEWRENO;
			else if (end - val == 5 && !memcmp(val, "cubic", 5))
				p->cc = MSTACK_CC_CUBIC;
			else
				return fail(err, errlen, "cc: '%.*s' is not newreno or cubic",
					    (int)(end - val), val);
			break;
		case 5:
		case 6:
		case 7:
		case 9: {
			uint8_t *dst = k == 5 ? &p->sack : k == 6 ? &p->window_scaling
						: k == 7 ? &p->timestamps : &p->nodelay;
			if (flag(val, end, dst))
				return fail(err, errlen, "%s: 0 or 1, not '%.*s'", keys[k],
					    (int)(end - val), val);
			break;
		}
		case 8:
			if (num(val, end, 1, 64, &v))
				return fail(err, errlen, "iw: 1 to 64, not '%.*s'", (int)(end - val), val);
			p->initial_window = (uint8_t)v;
			break;
		}
		if (semi && !semi[1])
			return fail(err, errlen, "trailing ';'");
		s = semi ? semi + 1 : end;
	}
	for (unsigned k = 0; k < NKEYS; k++)
		if (!(seen & 1u << k))
			return fail(err, errlen, "field %s missing", keys[k]);
	return 0;
}

static int in(const struct mstack_policy_ep *ep, uint32_t addr, uint16_t port)
{
	return (addr & ep->mask) == ep->net && port >= ep->port_lo && port <= ep->port_hi;
}

int mstack_policy_listen(const struct mstack_policy *p, uint32_t addr, uint16_t port)
{
	for (unsigned i = 0; i < p->n_listen; i++) {
		const struct mstack_policy_ep *ep = &p->listen[i];
		/* A wildcard bind is listed only by a wildcard entry. */
		if (addr == 0 ? ep->mask == 0 && in(ep, 0, port) : in(ep, addr, port))
			return 1;
	}
	return 0;
}

int mstack_policy_connect(const struct mstack_policy *p, uint32_t addr, uint16_t port)
{
	for (unsigned i = 0; i < p->n_connect; i++)
		if (in(&p->connect[i], addr, port))
			return 1;
	return 0;
}

static size_t fmt_eps(const struct mstack_policy_ep *eps, unsigned n, char *buf, size_t len,
		      size_t off)
{
	for (unsigned i = 0; i < n; i++) {
		unsigned plen = 0;
		for (uint32_t m = eps[i].mask; m; m <<= 1)
			plen++;
		int w = snprintf(off < len ? buf + off : NULL, off < len ? len - off : 0,
				 "%s%u.%u.%u.%u/%u:%u-%u", i ? "," : "", eps[i].net >> 24,
				 eps[i].net >> 16 & 255, eps[i].net >> 8 & 255, eps[i].net & 255, plen,
				 eps[i].port_lo, eps[i].port_hi);
		off += (size_t)w;
	}
	return off;
}

size_t mstack_policy_format(const struct mstack_policy *p, char *buf, size_t len)
{
	size_t off;
	int w;

	w = snprintf(buf, len, "v=%d;app=%s;listen=", MSTACK_POLICY_VERSION, p->app);
	off = fmt_eps(p->listen, p->n_listen, buf, len, (size_t)w);
	w = snprintf(off < len ? buf + off : NULL, off < len ? len - off : 0, ";connect=");
	off = fmt_eps(p->connect, p->n_connect, buf, len, off + (size_t)w);
	w = snprintf(off < len ? buf + off : NULL, off < len ? len - off : 0,
		     ";cc=%s;sack=%u;ws=%u;ts=%u;iw=%u;nodelay=%u",
		     p->cc == MSTACK_CC_NEWRENO ? "newreno" : "cubic", p->sack, p->window_scaling,
		     p->timestamps, p->initial_window, p->nodelay);
	return off + (size_t)w;
}
