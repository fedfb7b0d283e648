/* switch_port: the two programs on a port's veth pair.
 *   port_xsk (XDP, app end, in the ports namespace): every frame goes to the port's own XSK;
 *     a frame with no XSK is dropped, so nothing on the app end ever reaches a host stack.
 *   port_egress (TC ingress of the host end, root namespace): a frame a user-level stack sent
 *     leaves for the NIC only if its source IP is a local address of that NIC and its source
 *     (proto, IP, port) is a binding of *this* port (or a flow it owns); next hop from the
 *     kernel's routes and neighbours, resolved by the kernel (bpf_redirect_neigh). Every
 *     drop is counted by reason. A listening port's SYN-ACK records the flow for ingress. */
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

static __always_inline int drop(__u32 port_id, __u32 reason)
{
    struct mstack_port_counters *ps = bpf_map_lookup_elem(&port_stats, &port_id);

    if (ps)
        ps->tx_dropped += 1;
    bump(&egress_stats, reason);
    return TC_ACT_SHOT;
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

SEC("tc")
int port_egress(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct mstack_port_counters *ps;
    struct tcphdr *tcp = 0;
    struct udphdr *udp;
    struct iphdr *ip;
    __u32 ifindex = skb->ifindex;
    __u32 *pid, *nic, port_id, ihl, reason;
    __u16 sport, dport;
    void *l4;

    bump(&egress_stats, MSTACK_EG_FRAMES);
    pid = bpf_map_lookup_elem(&port_by_host_if, &ifindex);
    if (!pid)
        return drop(0, MSTACK_EG_UNKNOWN_PORT);
    port_id = *pid;
    if ((void *)(eth + 1) > end)
        return drop(port_id, MSTACK_EG_TRUNCATED);
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return drop(port_id, MSTACK_EG_NOT_IPV4);
    ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return drop(port_id, MSTACK_EG_TRUNCATED);
    ihl = ip->ihl * 4u;
    if (ip->version != 4 || ihl < sizeof(*ip) || ihl > 60 || bpf_ntohs(ip->tot_len) < ihl ||
        (void *)ip + bpf_ntohs(ip->tot_len) > end)
        return drop(port_id, MSTACK_EG_BAD_IP);
    if (ip->frag_off & bpf_htons(0x3fff))
        return drop(port_id, MSTACK_EG_FRAGMENT);
    l4 = (void *)ip + ihl;
    if (ip->protocol == IPPROTO_TCP) {
        tcp = l4;
        if ((void *)(tcp + 1) > end)
            return drop(port_id, MSTACK_EG_TRUNCATED);
        sport = tcp->source;
        dport = tcp->dest;
    } else if (ip->protocol == IPPROTO_UDP) {
        udp = l4;
        if ((void *)(udp + 1) > end)
            return drop(port_id, MSTACK_EG_TRUNCATED);
        sport = udp->source;
        dport = udp->dest;
    } else {
        return drop(port_id, MSTACK_EG_BAD_PROTO);
    }

    /* The source must be a local address of an attached NIC, and the frame leaves by that
     * NIC (strong host model). */
    nic = bpf_map_lookup_elem(&local_addrs, &ip->saddr);
    if (!nic)
        return drop(port_id, MSTACK_EG_SRC_NOT_LOCAL);
    reason = check_source(port_id, ip->protocol, ip, sport, dport, tcp);
    if (reason)
        return drop(port_id, reason);

    ps = bpf_map_lookup_elem(&port_stats, &port_id);
    if (ps) {
        ps->tx_frames += 1;
        ps->tx_bytes += skb->len;
    }
    /* The kernel routes the frame out of that NIC and fills in the next hop's MAC from its
     * neighbour table, resolving a missing neighbour itself. (bpf_fib_lookup would refuse:
     * it requires forwarding enabled on the NIC, which a host must not need for this.) */
    bump(&egress_stats, MSTACK_EG_SENT);
    return bpf_redirect_neigh(*nic, 0, 0, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
