/* switch_ingress: the MultiStack switch's XDP program on each attached NIC. A frame that is
 * really for this host and whose (proto, local IP, local port) is bound by a user-level stack
 * goes to that stack's port; everything else goes to the kernel (XDP_PASS), so the kernel sees
 * exactly the traffic nobody claimed. Order of work: is it ours (MAC, IP), is the IPv4 header
 * sane, established flow, binding (exact, then wildcard), listen group, ICMP errors. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "switch_maps.h"

/* linux/icmp.h drags in libc headers; the ICMP header is small enough to state here. */
struct icmphdr {
    __u8 type;
    __u8 code;
    __u16 checksum;
    __u32 rest;
};
#define ICMP_DEST_UNREACH  3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

/* Port id -> host end of the port's veth: where ingress redirects a port's frames. Not pinned
 * by name: the kernel marks devmaps BPF_F_RDONLY_PROG, and libbpf 1.1 then refuses to reuse
 * the pin ("parameter mismatch"); mstackd pins it itself and reuses it by fd. */
struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, MSTACK_MAX_PORTS);
    __type(key, __u32);
    __type(value, __u32);
} port_devmap SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_IN_NSLOTS);
    __type(key, __u32);
    __type(value, __u64);
} ingress_stats SEC(".maps");

static __always_inline int count(__u32 slot, int verdict)
{
    __u64 *v = bpf_map_lookup_elem(&ingress_stats, &slot);

    if (v)
        *v += 1;
    return verdict;
}

static __always_inline int to_port(__u32 port_id, __u32 slot, __u64 len)
{
    struct mstack_port_counters *ps = bpf_map_lookup_elem(&port_stats, &port_id);

    if (ps) {
        ps->rx_frames += 1;
        ps->rx_bytes += len;
    }
    count(slot, 0);
    /* A port that went away leaves no devmap entry: the frame falls back to the kernel. */
    return bpf_redirect_map(&port_devmap, port_id, XDP_PASS);
}

static __always_inline struct mstack_binding *find_binding(__u8 proto, __u32 addr, __u16 port)
{
    struct mstack_bind_key k = { .addr = addr, .port = port, .proto = proto };
    struct mstack_binding *b = bpf_map_lookup_elem(&bindings, &k);

    if (b)
        return b;
    k.addr = 0;
    return bpf_map_lookup_elem(&bindings, &k);
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
           a[5] == b[5];
}

/* Symmetric enough for steering, cheap, and stable for a flow's lifetime. */
static __always_inline __u32 flow_hash(__u32 raddr, __u32 laddr, __u16 rport, __u16 lport)
{
    __u32 h = raddr * 0x9e3779b1u;

    h ^= laddr + 0x7f4a7c15u + (h << 6) + (h >> 2);
    h ^= (((__u32)rport << 16) | lport) + 0x7f4a7c15u + (h << 6) + (h >> 2);
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    return h;
}

/* Does the kernel itself hold this connection (not just its listener)? Then it is the kernel's
 * flow: it began while the listen group was empty, and stays with the kernel. */
static __always_inline int kernel_owns(struct xdp_md *ctx, struct iphdr *ip, struct tcphdr *tcp)
{
    struct bpf_sock_tuple t = {};
    struct bpf_sock *sk;
    int owned;

    t.ipv4.saddr = ip->saddr;
    t.ipv4.daddr = ip->daddr;
    t.ipv4.sport = tcp->source;
    t.ipv4.dport = tcp->dest;
    sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
    if (!sk)
        return 0;
    owned = sk->state != BPF_TCP_LISTEN;
    bpf_sk_release(sk);
    return owned;
}

static __always_inline int tcp_in(struct xdp_md *ctx, struct iphdr *ip, void *l4, void *end,
                                  __u64 len)
{
    struct tcphdr *tcp = l4;
    struct mstack_flow_key fk = {};
    struct mstack_flow *f;
    struct mstack_binding *b;
    struct mstack_group *g;
    __u32 idx, n;

    if ((void *)(tcp + 1) > end)
        return count(MSTACK_IN_TRUNCATED, XDP_PASS);
    fk.raddr = ip->saddr;
    fk.laddr = ip->daddr;
    fk.rport = tcp->source;
    fk.lport = tcp->dest;
    fk.proto = IPPROTO_TCP;
    f = bpf_map_lookup_elem(&flows, &fk);
    if (f) {
        f->last_ns = bpf_ktime_get_ns();
        if (tcp->fin)
            __sync_fetch_and_or(&f->flags, MSTACK_FLOW_FIN_IN);
        return to_port(f->port_id, MSTACK_IN_TO_PORT_FLOW, len);
    }
    b = find_binding(IPPROTO_TCP, ip->daddr, tcp->dest);
    if (!b)
        return count(MSTACK_IN_NO_BINDING, XDP_PASS);
    if (b->kind == MSTACK_BIND_CONNECT)
        return to_port(b->port_id, MSTACK_IN_TO_PORT_CONN, len);
    if (b->kind != MSTACK_BIND_LISTEN)
        return count(MSTACK_IN_NO_BINDING, XDP_PASS);
    /* Only a SYN opens a flow; anything else without a flow entry is the kernel's (or stale,
     * and the kernel answers it with a reset). */
    if (!tcp->syn || tcp->ack)
        return count(MSTACK_IN_NO_FLOW, XDP_PASS);
    if (kernel_owns(ctx, ip, tcp))
        return count(MSTACK_IN_KERNEL_FLOW, XDP_PASS);
    idx = b->group;
    g = bpf_map_lookup_elem(&groups, &idx);
    if (!g)
        return count(MSTACK_IN_GROUP_EMPTY, XDP_PASS);
    n = g->n;
    if (n == 0 && g->hold_until_ns && bpf_ktime_get_ns() < g->hold_until_ns)
        return count(MSTACK_IN_GROUP_HOLD, XDP_DROP); /* the peer retries; see mstack_abi.h */
    if (n == 0 || n > MSTACK_GROUP_MAX_MEMBERS)
        return count(MSTACK_IN_GROUP_EMPTY, XDP_PASS);
    idx = flow_hash(ip->saddr, ip->daddr, tcp->source, tcp->dest) % n;
    /* The compiler knows idx < n <= MAX and drops the check; the verifier does not know it. */
    asm volatile("" : "+r"(idx));
    if (idx >= MSTACK_GROUP_MAX_MEMBERS)
        return count(MSTACK_IN_GROUP_EMPTY, XDP_PASS);
    return to_port(g->members[idx], MSTACK_IN_TO_PORT_NEW, len);
}

static __always_inline int udp_in(struct iphdr *ip, void *l4, void *end, __u64 len)
{
    struct udphdr *udp = l4;
    struct mstack_binding *b;

    if ((void *)(udp + 1) > end)
        return count(MSTACK_IN_TRUNCATED, XDP_PASS);
    b = find_binding(IPPROTO_UDP, ip->daddr, udp->dest);
    if (!b || b->kind != MSTACK_BIND_UDP)
        return count(MSTACK_IN_NO_BINDING, XDP_PASS);
    return to_port(b->port_id, MSTACK_IN_TO_PORT_UDP, len);
}

/* An ICMP error quotes the IP header and first 8 bytes of the segment that caused it: if that
 * segment was one a port sent (quoted source = our binding or flow), the error is the port's. */
static __always_inline int icmp_in(struct iphdr *ip, void *l4, void *end, __u64 len)
{
    struct icmphdr *icmp = l4;
    struct iphdr *qip;
    struct mstack_flow_key fk = {};
    struct mstack_flow *f;
    struct mstack_binding *b;
    __u16 *qports;

    if ((void *)(icmp + 1) > end)
        return count(MSTACK_IN_TRUNCATED, XDP_PASS);
    if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED &&
        icmp->type != ICMP_PARAMETERPROB)
        return count(MSTACK_IN_NO_BINDING, XDP_PASS);
    qip = (void *)(icmp + 1);
    if ((void *)(qip + 1) > end)
        return count(MSTACK_IN_TRUNCATED, XDP_PASS);
    if (qip->version != 4 || qip->ihl != 5 || qip->saddr != ip->daddr)
        return count(MSTACK_IN_NO_BINDING, XDP_PASS);
    qports = (void *)(qip + 1);
    if ((void *)(qports + 2) > end)
        return count(MSTACK_IN_TRUNCATED, XDP_PASS);
    if (qip->protocol == IPPROTO_TCP) {
        fk.raddr = qip->daddr;
        fk.laddr = qip->saddr;
        fk.rport = qports[1];
        fk.lport = qports[0];
        fk.proto = IPPROTO_TCP;
        f = bpf_map_lookup_elem(&flows, &fk);
        if (f)
            return to_port(f->port_id, MSTACK_IN_TO_PORT_ICMP, len);
    }
    if (qip->protocol != IPPROTO_TCP && qip->protocol != IPPROTO_UDP)
        return count(MSTACK_IN_NO_BINDING, XDP_PASS);
    b = find_binding(qip->protocol, qip->saddr, qports[0]);
    if (b && (b->kind == MSTACK_BIND_CONNECT || b->kind == MSTACK_BIND_UDP))
        return to_port(b->port_id, MSTACK_IN_TO_PORT_ICMP, len);
    return count(MSTACK_IN_NO_BINDING, XDP_PASS);
}

SEC("xdp")
int switch_ingress(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct mstack_nic *nic;
    __u32 *owner;
    struct iphdr *ip;
    __u32 ifindex = ctx->ingress_ifindex;
    __u64 len = end - data;
    __u32 ihl, tot;
    void *l4;

    count(MSTACK_IN_FRAMES, 0);
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return count(MSTACK_IN_NOT_IPV4, XDP_PASS);
    /* Is it this host's? Its MAC (broadcast and multicast are never a port's), then below one
     * of its local addresses: a wildcard binding must not capture forwarded or DNAT'd traffic. */
    nic = bpf_map_lookup_elem(&nics, &ifindex);
    if (!nic || !same_mac(eth->h_dest, nic->mac))
        return count(MSTACK_IN_OTHER_MAC, XDP_PASS);
    ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return count(MSTACK_IN_TRUNCATED, XDP_PASS);
    ihl = ip->ihl * 4u;
    tot = bpf_ntohs(ip->tot_len);
    if (ip->version != 4 || ihl < sizeof(*ip) || tot < ihl || (void *)ip + tot > end)
        return count(MSTACK_IN_BAD_IP, XDP_PASS);
    owner = bpf_map_lookup_elem(&local_addrs, &ip->daddr);
    if (!owner || *owner != ifindex)
        return count(MSTACK_IN_OTHER_IP, XDP_PASS);
    /* Fragments cannot be demultiplexed by port: reassembly is the kernel's. */
    if (ip->frag_off & bpf_htons(0x3fff))
        return count(MSTACK_IN_FRAGMENT, XDP_PASS);
    if (ihl > 60)
        return count(MSTACK_IN_BAD_IP, XDP_PASS);
    l4 = (void *)ip + ihl;
    if (l4 > end)
        return count(MSTACK_IN_TRUNCATED, XDP_PASS);
    switch (ip->protocol) {
    case IPPROTO_TCP:
        return tcp_in(ctx, ip, l4, end, len);
    case IPPROTO_UDP:
        return udp_in(ip, l4, end, len);
    case IPPROTO_ICMP:
        return icmp_in(ip, l4, end, len);
    default:
        return count(MSTACK_IN_NO_BINDING, XDP_PASS);
    }
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
