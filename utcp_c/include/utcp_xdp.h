/* utcp_xdp.h — UTCP's `xdp` port backend: a port from mstackd (AF_XDP rings mapped by
 * libmsport, mstack_port.h) behind UTCP's port interface (utcp_port.h). Received frames are
 * handed to UTCP in place (no copy); sent frames are copied once into UMEM send frames. */
#ifndef UTCP_XDP_H
#define UTCP_XDP_H

#include "mstack_port.h"
#include "utcp_port.h"

#ifdef __cplusplus
extern "C" {
#endif

#define UTCP_XDP_MAX_BATCH 256u

struct utcp_xdp;

/* Wrap an open port (the caller keeps ownership of it and closes it after utcp_xdp_close). */
int utcp_xdp_open(struct utcp_xdp **out, struct mstack_port *port);
void utcp_xdp_close(struct utcp_xdp *x);
struct utcp_port utcp_xdp_port(struct utcp_xdp *x);

/* Frames UTCP offered that found no free send frame or ring slot (its own drops counter
 * sees them too). */
uint64_t utcp_xdp_tx_dropped(const struct utcp_xdp *x);

#ifdef __cplusplus
}
#endif

#endif
