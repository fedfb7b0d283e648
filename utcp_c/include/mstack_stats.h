/* mstack_stats.h — the statistics region a user-level stack shares with mstackd: a memfd the
 * stack writes (its counters and one slot per connection) and hands over with STATS_REGION;
 * the daemon maps it read-only, and `mstackctl conns` / `stats` read it through the daemon.
 *
 * mstackd reads this file with cffi: only integer #defines and fixed-width structs here.
 * Consistency: a seqlock. The writer makes `seq` odd, writes, makes it even again; a reader
 * copies the region and retries while seq is odd or changed under it. Addresses are IPv4 in
 * host byte order (as in utcp.h), ports host order. */
#ifndef MSTACK_STATS_H
#define MSTACK_STATS_H

#include <stdint.h>

#define MSTACK_STATS_MAGIC    1398035533
#define MSTACK_STATS_VERSION  1
#define MSTACK_STATS_MAX_SLOTS 65536

struct mstack_stats_conn {
    uint32_t in_use;                 /* 0: free slot */
    uint32_t laddr;
    uint32_t raddr;
    uint16_t lport;
    uint16_t rport;
    char state[16];                  /* "ESTABLISHED", ... (utcp_state_str) */
    char cc[16];                     /* congestion control module */
    uint8_t ws_ok;
    uint8_t sack_ok;
    uint8_t ts_ok;
    uint8_t pad0;
    uint8_t snd_wscale;
    uint8_t rcv_wscale;
    uint16_t snd_mss;
    uint32_t cwnd;
    uint32_t ssthresh;
    uint32_t snd_wnd;
    uint32_t rcv_wnd;
    uint32_t srtt_us;
    uint32_t rttvar_us;
    uint32_t rto_us;
    uint32_t unacked;
    uint64_t retransmits;
    uint64_t rto_timeouts;
    uint64_t fast_retransmits;
    uint64_t bytes_acked;
    uint64_t bytes_received;
};

struct mstack_stats_counters {
    uint64_t frames_in;
    uint64_t frames_out;
    uint64_t segs_in;
    uint64_t segs_out;
    uint64_t retransmits;
    uint64_t active_opens;
    uint64_t passive_opens;
    uint64_t resets;
    uint64_t conns_in_use;
};

struct mstack_stats_hdr {
    uint32_t magic;
    uint32_t version;
    uint32_t seq;                    /* seqlock; odd while the writer is inside */
    uint32_t pid;
    uint32_t n_slots;                /* struct mstack_stats_conn entries after this header */
    uint32_t pad;
    uint64_t updated_us;             /* the writer's clock at its last update */
    char app[32];
    struct mstack_stats_counters stack;
};

#endif
