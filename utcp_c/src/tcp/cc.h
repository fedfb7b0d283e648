/* cc.h — congestion control as a small ops table (one file per algorithm), chosen per
 * connection.  The TCP core calls these at the points RFC 5681 names; the module owns
 * cwnd and ssthresh arithmetic. */
#ifndef UTCP_CC_H
#define UTCP_CC_H

#include <stdint.h>

struct utcp_tcb;

struct utcp_cc_ops {
	const char *name;
	/* At establishment, once the MSS is known; iw_segs from the stack config. */
	void (*init)(struct utcp_tcb *tcb, uint32_t iw_segs);
	/* New data acknowledged outside loss recovery (RFC 5681 3.1). */
	void (*on_ack)(struct utcp_tcb *tcb, uint32_t acked, uint64_t now_us);
	/* Entering fast recovery after three duplicate ACKs: set ssthresh (RFC 5681 3.2 (2)). */
	void (*on_loss)(struct utcp_tcb *tcb, uint64_t now_us);
	/* Leaving recovery on a full ACK (RFC 6582 3.2 (3)). */
	void (*on_recovery_end)(struct utcp_tcb *tcb);
	/* Retransmission timeout (RFC 5681 3.1 eqn. 4, and LW = 1 SMSS). */
	void (*on_rto)(struct utcp_tcb *tcb);
};

extern const struct utcp_cc_ops utcp_cc_newreno;
extern const struct utcp_cc_ops utcp_cc_cubic;

/* NULL if no module has that name. */
const struct utcp_cc_ops *utcp_cc_find(const char *name);

#endif
