/* stats.c — the writer of the statistics region (see mstack_stats.h): the stack process fills
 * it from utcp_conn_info() and utcp_get_stats(); mstackd maps it read-only. */
#define _GNU_SOURCE
#include "stats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int mstack_stats_open(struct mstack_stats_writer *w, unsigned n_slots, const char *app)
{
	size_t size;
	void *p;
	int fd;

	if (!n_slots || n_slots > MSTACK_STATS_MAX_SLOTS)
		return -EINVAL;
	size = sizeof(struct mstack_stats_hdr) + (size_t)n_slots * sizeof(struct mstack_stats_conn);
	fd = memfd_create("mstack-stats", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0 ||
	    (p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		int e = -errno;
		close(fd);
		return e;
	}
	/* The region can no longer change size: a reader's mapping stays valid. */
	(void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	(void)madvise(p, size, MADV_DONTFORK);
	w->fd = fd;
	w->size = size;
	w->region = p;
	w->slots = (struct mstack_stats_conn *)(w->region + 1);
	w->region->magic = MSTACK_STATS_MAGIC;
	w->region->version = MSTACK_STATS_VERSION;
	w->region->pid = (uint32_t)getpid();
	w->region->n_slots = n_slots;
	snprintf(w->region->app, sizeof(w->region->app), "%s", app ? app : "");
	return 0;
}

void mstack_stats_close(struct mstack_stats_writer *w)
{
	if (w->region)
		munmap(w->region, w->size);
	if (w->fd >= 0)
		close(w->fd);
	w->region = NULL;
	w->slots = NULL;
	w->fd = -1;
}

void mstack_stats_begin(struct mstack_stats_writer *w)
{
	__atomic_store_n(&w->region->seq, w->region->seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

void mstack_stats_end(struct mstack_stats_writer *w, uint64_t now_us)
{
	w->region->updated_us = now_us;
	__atomic_store_n(&w->region->seq, w->region->seq + 1, __ATOMIC_RELEASE);
}

int mstack_stats_put_conn(struct mstack_stats_writer *w, unsigned slot,
			  const struct utcp_conn_info *info)
{
	struct mstack_stats_conn *c;

	if (slot >= w->region->n_slots)
		return -EINVAL;
	c = &w->slots[slot];
	c->laddr = info->laddr;
	c->raddr = info->raddr;
	c->lport = info->lport;
	c->rport = info->rport;
	snprintf(c->state, sizeof(c->state), "%s", utcp_state_str(info->state));
	snprintf(c->cc, sizeof(c->cc), "%s", info->cc ? info->cc : "");
	c->ws_ok = info->ws_ok;
	c->sack_ok = info->sack_ok;
	c->ts_ok = info->ts_ok;
	c->snd_wscale = info->snd_wscale;
	c->rcv_wscale = info->rcv_wscale;
	c->snd_mss = info->snd_mss;
	c->cwnd = info->cwnd;
	c->ssthresh = info->ssthresh;
	c->snd_wnd = info->snd_wnd;
	c->rcv_wnd = info->rcv_wnd;
	c->srtt_us = info->srtt_us;
	c->rttvar_us = info->rttvar_us;
	c->rto_us = info->rto_us;
	c->unacked = info->unacked;
	c->retransmits = info->retransmits;
	c->rto_timeouts = info->rto_timeouts;
	c->fast_retransmits = info->fast_retransmits;
	c->bytes_acked = info->bytes_acked;
	c->bytes_received = info->bytes_received;
	c->in_use = 1;
	return 0;
}

int mstack_stats_clear_conn(struct mstack_stats_writer *w, unsigned slot)
{
	if (slot >= w->region->n_slots)
		return -EINVAL;
	memset(&w->slots[slot], 0, sizeof(w->slots[slot]));
	return 0;
}

void mstack_stats_put_stack(struct mstack_stats_writer *w, const struct utcp_stats *s)
{
	struct mstack_stats_counters *c = &w->region->stack;

	c->frames_in = s->frames_in;
	c->frames_out = s->frames_out;
	c->segs_in = s->segs_in;
	c->segs_out = s->segs_out;
	c->retransmits = s->retransmits;
	c->active_opens = s->active_opens;
	c->passive_opens = s->passive_opens;
	c->resets = s->resets;
	c->conns_in_use = s->conns_in_use;
}
