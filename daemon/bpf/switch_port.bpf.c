/* switch_port: the programs on a port's veth pair and the egress fast path.
 *   port_xsk (XDP, app end, in the ports namespace): every frame goes to the port's own XSK;
 *     a frame with no XSK is dropped, so nothing on the app end ever reaches a host stack.
 *   port_egress (TC ingress of the host end, root namespace): a frame a user-level stack sent
 *     leaves for the NIC only if its source IP is a local address of that NIC and its source
 *     (proto, IP, port) is a binding of *this* port (or a flow it owns); next hop from the
 *     kernel's routes and neighbours, resolved by the kernel (bpf_redirect_neigh). Every
 *     drop is counted by reason. A listening port's SYN-ACK records the flow for ingress.
 *   port_egress_xdp (native XDP of the host end, runs before port_egress): the same checks;
 *     when the NIC's fast path is on and mstackd has cached the next hop, the frame leaves
 *     through the NIC DEVMAP (ndo_xdp_xmit, which a veth peer's GRO can merge) instead of
 *     TC. Anything else is passed to port_egress untouched, so the source check (which has
 *     side effects on the flow table) runs exactly once per frame, in the program that sends.
 *   nic_probe (XDP, BPF_PROG_TEST_RUN with live frames): mstackd's probe of a NIC's DEVMAP.
 *   nic_xmit_watch, nic_redirect_watch (tracepoints xdp:xdp_devmap_xmit, xdp_redirect_err):
 *     count what each NIC's ndo_xdp_xmit sent and dropped and the redirects to it that
 *     failed; any loss turns that NIC's fast path off. */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "switch_maps.h"

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_EG_NSLOTS);
    __type(key, __u32);
    __type(value, __u64);
} egress_stats SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_PX_NSLOTS);
    __type(key, __u32);
    __type(value, __u64);
} portrx_stats SEC(".maps");

/* NIC ifindex -> NIC: where the fast path sends. Not pinned by name (the kernel marks devmaps
 * BPF_F_RDONLY_PROG and libbpf 1.1 refuses to reuse such a pin): mstackd pins it itself. */
struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
    __uint(max_entries, MSTACK_MAX_NICS);
    __type(key, __u32);
    __type(value, __u32);
} nic_devmap SEC(".maps");

/* NIC ifindex -> fast path on/off and the longest frame (mstackd; the tracepoint turns off). */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_NICS);
    __type(key, __u32);
    __type(value, struct mstack_nic_fast);
} nic_fast SEC(".maps");

/* NIC ifindex -> what its ndo_xdp_xmit did (made by mstackd, counted by the tracepoint). */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_NICS);
    __type(key, __u32);
    __type(value, struct mstack_nic_xmit);
} nic_xmit SEC(".maps");

/* The next-hop cache, kept by mstackd from the kernel's routes and neighbours (bpf_fib_lookup
 * would need forwarding enabled on the NIC). Only NUD-valid neighbours are cached. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_NEXTHOPS);
    __type(key, struct mstack_nh_key);
    __type(value, struct mstack_nexthop);
} nexthops SEC(".maps");

/* Destinations the fast path missed, for mstackd to resolve (value: bpf_ktime_get_ns of the
 * first miss). Noted once until mstackd takes it; an LRU, so a flood of destinations costs a
 * bounded map and a bounded amount of mstackd's work. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_NH_WANTED_SLOTS);
    __type(key, struct mstack_nh_key);
    __type(value, __u64);
} nh_wanted SEC(".maps");

static __always_inline void bump(void *map, __u32 slot)
{
    __u64 *v = bpf_map_lookup_elem(map, &slot);

    if (v)
        *v += 1;
}

SEC("xdp")
int port_xsk(struct xdp_md *ctx)
{
    __u32 ifindex = ctx->ingress_ifindex;
    __u32 *port_id = bpf_map_lookup_elem(&port_by_app_if, &ifindex);

    if (!port_id) {
        bump(&portrx_stats, MSTACK_PX_NO_XSK);
        return XDP_DROP;
    }
    /* The kernel also checks that the XSK is bound to this device and queue. */
    bump(&portrx_stats, MSTACK_PX_TO_XSK);
    return bpf_redirect_map(&xsks, *port_id, XDP_DROP);
}

static __always_inline void count_drop(__u32 port_id, __u32 reason)
{
    struct mstack_port_counters *ps = bpf_map_lookup_elem(&port_stats, &port_id);

    if (ps)
        ps->tx_dropped += 1;
    bump(&egress_stats, reason);
}

static __always_inline int drop(__u32 port_id, __u32 reason)
{
    count_drop(port_id, reason);
    return TC_ACT_SHOT;
}

static __always_inline void count_sent(__u32 port_id, __u64 len)
{
    struct mstack_port_counters *ps = bpf_map_lookup_elem(&port_stats, &port_id);

    if (ps) {
        ps->tx_frames += 1;
        ps->tx_bytes += len;
    }
    bump(&egress_stats, MSTACK_EG_SENT);
}

static __always_inline int is_member(const struct mstack_group *g, __u32 port_id)
{
    __u32 n = g->n;

    if (n > MSTACK_GROUP_MAX_MEMBERS)
        n = MSTACK_GROUP_MAX_MEMBERS;
    for (__u32 i = 0; i < MSTACK_GROUP_MAX_MEMBERS; i++) {
        if (i >= n)
            break;
        if (g->members[i] == port_id)
            return 1;
    }
    return 0;
}

/* May this port send from (proto, saddr, sport)? Returns 0 or a drop reason. For TCP it also
 * keeps the flow table: a listening member's SYN-ACK records the flow, a RST ends it. */
static __always_inline __u32 check_source(__u32 port_id, __u8 proto, struct iphdr *ip,
                                          __u16 sport, __u16 dport, struct tcphdr *tcp)
{
    struct mstack_flow_key fk = {};
    struct mstack_flow nf = {};
    struct mstack_flow *f;
    struct mstack_bind_key bk = {};
    struct mstack_binding *b;
    struct mstack_group *g;
    __u32 gid;

    if (tcp) {
        fk.raddr = ip->daddr;
        fk.laddr = ip->saddr;
        fk.rport = dport;
        fk.lport = sport;
        fk.proto = IPPROTO_TCP;
        f = bpf_map_lookup_elem(&flows, &fk);
        if (f) {
            if (f->port_id != port_id) {
                __u32 fl = f->flags;

                if (!(fl & MSTACK_FLOW_MOVING) || fl >> MSTACK_FLOW_TO_SHIFT != port_id)
                    return MSTACK_EG_FLOW_CLASH;
                /* the port a hand-off named sends first: the flow is its own from now on */
                f->port_id = port_id;
                __sync_fetch_and_and(&f->flags, MSTACK_FLOW_FIN_IN | MSTACK_FLOW_FIN_OUT);
                bump(&egress_stats, MSTACK_EG_FLOW_TAKEN);
            }
            if (tcp->rst) {
                bpf_map_delete_elem(&flows, &fk);
                return 0;
            }
            f->last_ns = bpf_ktime_get_ns();
            if (tcp->fin)
                __sync_fetch_and_or(&f->flags, MSTACK_FLOW_FIN_OUT);
            return 0;
        }
    }
    bk.addr = ip->saddr;
    bk.port = sport;
    bk.proto = proto;
    b = bpf_map_lookup_elem(&bindings, &bk);
    if (!b) {
        bk.addr = 0;
        b = bpf_map_lookup_elem(&bindings, &bk);
    }
    if (!b)
        return MSTACK_EG_NOT_BOUND;
    if (b->kind == MSTACK_BIND_CONNECT || b->kind == MSTACK_BIND_UDP)
        return b->port_id == port_id ? 0 : MSTACK_EG_NOT_BOUND;
    if (b->kind != MSTACK_BIND_LISTEN || !tcp)
        return MSTACK_EG_NOT_BOUND;
    gid = b->group;
    g = bpf_map_lookup_elem(&groups, &gid);
    if (!g || !is_member(g, port_id))
        return MSTACK_EG_NOT_BOUND;
    if (tcp->syn && tcp->ack) {
        nf.port_id = port_id;
        nf.last_ns = bpf_ktime_get_ns();
        if (bpf_map_update_elem(&flows, &fk, &nf, BPF_NOEXIST) != 0) {
            /* Raced with another member answering the same SYN, or the table is full. */
            f = bpf_map_lookup_elem(&flows, &fk);
            if (!f)
                return MSTACK_EG_FLOW_FULL;
            if (f->port_id != port_id)
                return MSTACK_EG_FLOW_CLASH;
        }
    }
    return 0;
}

/* A frame a port sent, parsed: what both egress programs check. */
struct egress_frame {
    struct iphdr *ip;
    struct tcphdr *tcp; /* 0 for UDP */
    __u16 sport;
    __u16 dport;
};

/* Bounds and header checks, no side effects: 0 or a drop reason. */
static __always_inline __u32 parse_egress(void *data, void *end, struct egress_frame *f)
{
    struct ethhdr *eth = data;
    struct udphdr *udp;
    struct tcphdr *tcp;
    struct iphdr *ip;
    __u32 ihl;
    void *l4;

    if ((void *)(eth + 1) > end)
        return MSTACK_EG_TRUNCATED;
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return MSTACK_EG_NOT_IPV4;
    ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return MSTACK_EG_TRUNCATED;
    ihl = ip->ihl * 4u;
    if (ip->version != 4 || ihl < sizeof(*ip) || ihl > 60 || bpf_ntohs(ip->tot_len) < ihl ||
        (void *)ip + bpf_ntohs(ip->tot_len) > end)
        return MSTACK_EG_BAD_IP;
    if (ip->frag_off & bpf_htons(0x3fff))
        return MSTACK_EG_FRAGMENT;
    l4 = (void *)ip + ihl;
    f->ip = ip;
    f->tcp = 0;
    if (ip->protocol == IPPROTO_TCP) {
        tcp = l4;
        if ((void *)(tcp + 1) > end)
            return MSTACK_EG_TRUNCATED;
        f->tcp = tcp;
        f->sport = tcp->source;
        f->dport = tcp->dest;
    } else if (ip->protocol == IPPROTO_UDP) {
        udp = l4;
        if ((void *)(udp + 1) > end)
            return MSTACK_EG_TRUNCATED;
        f->sport = udp->source;
        f->dport = udp->dest;
    } else {
        return MSTACK_EG_BAD_PROTO;
    }
    return 0;
}

SEC("tc")
int port_egress(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct egress_frame f;
    __u32 ifindex = skb->ifindex;
    __u32 *pid, *nic, port_id, reason;

    bump(&egress_stats, MSTACK_EG_FRAMES);
    pid = bpf_map_lookup_elem(&port_by_host_if, &ifindex);
    if (!pid)
        return drop(0, MSTACK_EG_UNKNOWN_PORT);
    port_id = *pid;
    reason = parse_egress(data, end, &f);
    if (reason)
        return drop(port_id, reason);

    /* The source must be a local address of an attached NIC, and the frame leaves by that
     * NIC (strong host model). */
    nic = bpf_map_lookup_elem(&local_addrs, &f.ip->saddr);
    if (!nic)
        return drop(port_id, MSTACK_EG_SRC_NOT_LOCAL);
    reason = check_source(port_id, f.ip->protocol, f.ip, f.sport, f.dport, f.tcp);
    if (reason)
        return drop(port_id, reason);

    count_sent(port_id, skb->len);
    /* The kernel routes the frame out of that NIC and fills in the next hop's MAC from its
     * neighbour table, resolving a missing neighbour itself. (bpf_fib_lookup would refuse:
     * it requires forwarding enabled on the NIC, which a host must not need for this.) */
    return bpf_redirect_neigh(*nic, 0, 0, 0);
}

static __always_inline int xdp_drop(__u32 port_id, __u32 reason)
{
    bump(&egress_stats, MSTACK_EG_FRAMES);
    count_drop(port_id, reason);
    return XDP_DROP;
}

SEC("xdp")
int port_egress_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct mstack_nh_key nk = {};
    struct mstack_nic_fast *fast;
    struct mstack_nexthop *nh;
    struct egress_frame f;
    struct ethhdr *eth = data;
    __u32 ifindex = ctx->ingress_ifindex;
    __u32 *pid, *nic, port_id, reason;
    __u64 now;

    /* The checks without side effects drop here, as port_egress would, counted the same. */
    pid = bpf_map_lookup_elem(&port_by_host_if, &ifindex);
    if (!pid)
        return xdp_drop(0, MSTACK_EG_UNKNOWN_PORT);
    port_id = *pid;
    reason = parse_egress(data, end, &f);
    if (reason)
        return xdp_drop(port_id, reason);
    nic = bpf_map_lookup_elem(&local_addrs, &f.ip->saddr);
    if (!nic)
        return xdp_drop(port_id, MSTACK_EG_SRC_NOT_LOCAL);

    /* Can this frame take the fast path? If not, port_egress (TC) does all it does today. */
    nk.ifindex = *nic;
    nk.daddr = f.ip->daddr;
    fast = bpf_map_lookup_elem(&nic_fast, &nk.ifindex);
    if (!fast || !fast->on || (__u64)(end - data) > fast->max_len)
        return XDP_PASS;
    if (!bpf_map_lookup_elem(&nic_devmap, &nk.ifindex))
        return XDP_PASS;
    nh = bpf_map_lookup_elem(&nexthops, &nk);
    if (!nh) {
        bump(&egress_stats, MSTACK_EG_NH_MISS);
        if (!bpf_map_lookup_elem(&nh_wanted, &nk)) {
            now = bpf_ktime_get_ns();
            bpf_map_update_elem(&nh_wanted, &nk, &now, BPF_NOEXIST);
        }
        return XDP_PASS;
    }

    /* From here the frame is this program's: the source check runs here, not in TC. */
    bump(&egress_stats, MSTACK_EG_FRAMES);
    reason = check_source(port_id, f.ip->protocol, f.ip, f.sport, f.dport, f.tcp);
    if (reason) {
        count_drop(port_id, reason);
        return XDP_DROP;
    }
    __builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
    __builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
    count_sent(port_id, end - data);
    bump(&egress_stats, MSTACK_EG_FAST);
    return bpf_redirect_map(&nic_devmap, nk.ifindex, XDP_DROP);
}

/* The probe: a frame whose payload names the NIC goes out through the NIC DEVMAP (mstackd
 * runs it with BPF_F_TEST_XDP_LIVE_FRAMES and reads nic_xmit to see if the NIC took it). */
SEC("xdp")
int nic_probe(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    __u32 *ifindex = (void *)(eth + 1);

    if ((void *)(ifindex + 1) > end || eth->h_proto != bpf_htons(MSTACK_PROBE_ETHERTYPE))
        return XDP_ABORTED;
    return bpf_redirect_map(&nic_devmap, *ifindex, XDP_ABORTED);
}

/* The fields of xdp:xdp_devmap_xmit (/sys/kernel/tracing/events/xdp/xdp_devmap_xmit/format). */
struct devmap_xmit_args {
    __u64 common;
    int from_ifindex;
    __u32 act;
    int to_ifindex;
    int drops;
    int sent;
    int err;
};

/* Frames to this NIC were lost: from the next frame on, TC carries them. */
static __always_inline void fast_off(__u32 ifindex, struct mstack_nic_xmit *x)
{
    struct mstack_nic_fast *fast = bpf_map_lookup_elem(&nic_fast, &ifindex);

    if (fast && fast->on) {
        fast->on = 0;
        __sync_fetch_and_add(&x->turned_off, 1);
    }
}

SEC("tracepoint/xdp/xdp_devmap_xmit")
int nic_xmit_watch(struct devmap_xmit_args *a)
{
    __u32 ifindex = a->to_ifindex;
    struct mstack_nic_xmit *x = bpf_map_lookup_elem(&nic_xmit, &ifindex);

    if (!x)
        return 0;
    if (a->sent > 0)
        __sync_fetch_and_add(&x->sent, a->sent);
    if (a->drops > 0) {
        __sync_fetch_and_add(&x->drops, a->drops);
        fast_off(ifindex, x);
    }
    return 0;
}

/* The fields of xdp:xdp_redirect_err (/sys/kernel/tracing/events/xdp/xdp_redirect_err/format). */
struct redirect_err_args {
    __u64 common;
    int prog_id;
    __u32 act;
    int ifindex;
    int err;
    int to_ifindex;
    __u32 map_id;
    int map_index;
};

SEC("tracepoint/xdp/xdp_redirect_err")
int nic_redirect_watch(struct redirect_err_args *a)
{
    __u32 ifindex = a->to_ifindex;
    struct mstack_nic_xmit *x = bpf_map_lookup_elem(&nic_xmit, &ifindex);

    if (!x)
        return 0;
    __sync_fetch_and_add(&x->redirect_errs, 1);
    fast_off(ifindex, x);
    return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
