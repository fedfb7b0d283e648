/* Facts shared by the switch's BPF programs and mstackd (Python reads this file with cffi's
 * cdef, so it holds only plain integer #defines and fixed-width structs: no includes, no
 * expressions, no macros with arguments; fixed-width types are the kernel's __u8..__u64).
 * One place for each fact. */
#ifndef MSTACK_ABI_H
#define MSTACK_ABI_H

#define MSTACK_ABI_VERSION 1

/* xdp_count: per-destination-port counters for TCP, the first proof of the pipeline. */
#define MSTACK_COUNT_MAX_PORTS 64

/* Counter slots of xdp_count's `totals` per-CPU array. */
#define MSTACK_CNT_FRAMES   0
#define MSTACK_CNT_IPV4     1
#define MSTACK_CNT_TCP      2
#define MSTACK_CNT_WATCHED  3
#define MSTACK_CNT_BAD_IP   4
#define MSTACK_CNT_NSLOTS   5

struct mstack_port_count {
    __u64 packets;
    __u64 bytes;
};

#endif
