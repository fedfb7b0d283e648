/* stats.h — writing a stack's statistics region (mstack_stats.h) from UTCP's introspection. */
#ifndef MSTACK_STATS_WRITER_H
#define MSTACK_STATS_WRITER_H

#include "mstack_stats.h"
#include "utcp.h"

struct mstack_stats_writer {
	int fd;                              /* the memfd, for STATS_REGION */
	size_t size;
	struct mstack_stats_hdr *region;     /* the mapping */
	struct mstack_stats_conn *slots;
};

/* A memfd region with n_slots connection slots, mapped read-write (MADV_DONTFORK). */
int mstack_stats_open(struct mstack_stats_writer *w, unsigned n_slots, const char *app);
void mstack_stats_close(struct mstack_stats_writer *w);

/* Enter / leave an update (seqlock); everything between is seen by readers at once. */
void mstack_stats_begin(struct mstack_stats_writer *w);
void mstack_stats_end(struct mstack_stats_writer *w, uint64_t now_us);

/* Fill slot from a connection's utcp_conn_info, or free it. -EINVAL for a bad slot. */
int mstack_stats_put_conn(struct mstack_stats_writer *w, unsigned slot,
			  const struct utcp_conn_info *info);
int mstack_stats_clear_conn(struct mstack_stats_writer *w, unsigned slot);
void mstack_stats_put_stack(struct mstack_stats_writer *w, const struct utcp_stats *s);

#endif
