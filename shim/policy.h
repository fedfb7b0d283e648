/* policy.h — the shim's view of the policy: the one-line form mstack-run puts in
 * MSTACK_POLICY (pymgmt/mstack/policy.py, compact()), parsed without allocation, and the
 * per-socket questions the shim asks of it. The shim reads no TOML. */
#ifndef MSTACK_SHIM_POLICY_H
#define MSTACK_SHIM_POLICY_H

#include <stddef.h>
#include <stdint.h>

#define MSTACK_POLICY_VERSION   1
#define MSTACK_POLICY_MAX_EPS   64
#define MSTACK_POLICY_NAME_MAX  32
#define MSTACK_POLICY_ENV       "MSTACK_POLICY"

enum mstack_cc { MSTACK_CC_NEWRENO = 1, MSTACK_CC_CUBIC = 2 };

/* An IPv4 network (host byte order) and a port range. */
struct mstack_policy_ep {
	uint32_t net;
	uint32_t mask;
	uint16_t port_lo;
	uint16_t port_hi;
};

struct mstack_policy {
	char app[MSTACK_POLICY_NAME_MAX + 1];
	unsigned n_listen, n_connect;
	struct mstack_policy_ep listen[MSTACK_POLICY_MAX_EPS];
	struct mstack_policy_ep connect[MSTACK_POLICY_MAX_EPS];
	enum mstack_cc cc;
	uint8_t sack, window_scaling, timestamps, nodelay;
	uint8_t initial_window;
};

/* Parse `text` into *p. Returns 0, or -EINVAL with a description in err (NUL-terminated,
 * at most errlen bytes); *p is then unusable. Every field must be present exactly once. */
int mstack_policy_parse(const char *text, struct mstack_policy *p, char *err, size_t errlen);

/* Does a listener bound to addr:port (host byte order; addr 0 = wildcard) go to UTCP? A
 * wildcard bind matches a wildcard entry; a specific address matches an entry whose network
 * contains it (a wildcard entry contains every address). */
int mstack_policy_listen(const struct mstack_policy *p, uint32_t addr, uint16_t port);

/* Does a connection to addr:port (host byte order) go to UTCP? */
int mstack_policy_connect(const struct mstack_policy *p, uint32_t addr, uint16_t port);

/* The canonical text of *p (the same form compact() writes); returns the length it needs. */
size_t mstack_policy_format(const struct mstack_policy *p, char *buf, size_t len);

#endif
