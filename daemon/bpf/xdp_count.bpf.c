/* xdp_count: counts TCP frames per watched destination port and passes every frame on to the
 * kernel (XDP_PASS). The first end-to-end proof that mstackd loads and drives switch programs;
 * the switch's real ingress program builds on the same parsing and counter conventions. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "mstack_abi.h"

/* Watched TCP destination ports (host byte order) -> per-CPU packet and byte counts. */
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
    __uint(max_entries, MSTACK_COUNT_MAX_PORTS);
    __type(key, __u16);
    __type(value, struct mstack_port_count);
} watched SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, MSTACK_CNT_NSLOTS);
    __type(key, __u32);
    __type(value, __u64);
} totals SEC(".maps");

static __always_inline void count(__u32 slot)
{
    __u64 *v = bpf_map_lookup_elem(&totals, &slot);

    if (v)
        *v += 1;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip;
    struct tcphdr *tcp;
    struct mstack_port_count *pc;
    __u16 dport;
    __u32 ihl;

    count(MSTACK_CNT_FRAMES);
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return XDP_PASS;
    count(MSTACK_CNT_IPV4);
    ihl = ip->ihl * 4u;
    if (ip->version != 4 || ihl < sizeof(*ip)) {
        count(MSTACK_CNT_BAD_IP);
        return XDP_PASS;
    }
    if (ip->protocol != IPPROTO_TCP)
        return XDP_PASS;
    /* Non-first fragments carry no TCP header. */
    if (ip->frag_off & bpf_htons(0x1fff))
        return XDP_PASS;
    tcp = (void *)ip + ihl;
    if ((void *)(tcp + 1) > end)
        return XDP_PASS;
    count(MSTACK_CNT_TCP);
    dport = bpf_ntohs(tcp->dest);
    pc = bpf_map_lookup_elem(&watched, &dport);
    if (pc) {
        pc->packets += 1;
        pc->bytes += (__u64)(end - data);
        count(MSTACK_CNT_WATCHED);
    }
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
