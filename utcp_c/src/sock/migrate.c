/* migrate.c — moving a listener's unaccepted connections from one UTCP stack to another
 * (utcp_sk_migrate_out / _done / _in, utcp_sock.h).  Stub until the implementation lands. */
#include <errno.h>

#include "utcp_sock.h"

int utcp_sk_migrate_out(struct utcp_socks *ss, int sk, struct utcp_mig_flow *flows, int max,
			void *buf, size_t cap, size_t *len, uint64_t now_us)
{
	(void)ss; (void)sk; (void)flows; (void)max; (void)buf; (void)cap; (void)now_us;
	if (len)
		*len = 0;
	return -EOPNOTSUPP;
}

void utcp_sk_migrate_done(struct utcp_socks *ss, int sk, int moved, uint64_t now_us)
{
	(void)ss; (void)sk; (void)moved; (void)now_us;
}

int utcp_sk_migrate_in(struct utcp_socks *ss, int sk, const void *buf, size_t len,
		       uint64_t now_us)
{
	(void)ss; (void)sk; (void)buf; (void)len; (void)now_us;
	return -EOPNOTSUPP;
}
