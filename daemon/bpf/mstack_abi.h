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

/* ---- The switch ------------------------------------------------------------------------ */

/* Sizes of the switch's maps (the daemon may lower the flow table's at load time). */
#define MSTACK_MAX_PORTS          1024
#define MSTACK_MAX_NICS           64
#define MSTACK_MAX_LOCAL_ADDRS    1024
#define MSTACK_MAX_BINDINGS       65536
#define MSTACK_MAX_GROUPS         4096
#define MSTACK_GROUP_MAX_MEMBERS  64
#define MSTACK_MAX_FLOWS          262144

/* IP protocols a binding may name. */
#define MSTACK_PROTO_TCP 6
#define MSTACK_PROTO_UDP 17

/* Binding kinds. A listen binding spreads new flows over its listen group; a connect binding
 * (an active open's local 3-tuple) and a UDP binding go to one port. */
#define MSTACK_BIND_LISTEN  1
#define MSTACK_BIND_CONNECT 2
#define MSTACK_BIND_UDP     3

/* Flow flags: which side has sent a FIN; the daemon sweeps closed and idle flows. */
#define MSTACK_FLOW_FIN_IN  1
#define MSTACK_FLOW_FIN_OUT 2
/* A flow being handed to another port (mstackd's hand-off): the port whose id is in the
 * flags' upper 16 bits takes the flow over with the first segment it sends; until then frames
 * still go to the owner, which drops them while the connection moves (the peer retransmits). */
#define MSTACK_FLOW_MOVING   4
#define MSTACK_FLOW_TO_SHIFT 16

/* An attached NIC: its MAC (frames for other MACs are not this host's). */
struct mstack_nic {
    __u8 mac[6];
    __u16 flags;
};


/* (proto, local IPv4, local port), network byte order; addr 0 is the wildcard. */
struct mstack_bind_key {
    __u32 addr;
    __u16 port;
    __u8 proto;
    __u8 pad;
};

struct mstack_binding {
    __u32 kind;     /* MSTACK_BIND_* */
    __u32 group;    /* listen: index into `groups` */
    __u32 port_id;  /* connect / udp: the owning port */
    __u32 pad;
};

/* The ports of the processes that wait on one listening socket. */
struct mstack_group {
    __u32 n;
    __u32 gen;
    /* While n == 0 and bpf_ktime_get_ns() < hold_until_ns, new flows (SYNs) are dropped, not
     * passed to the kernel: the group just lost its last member (nginx's reload: old workers
     * leave, new ones are about to join) and the peer's retry will find the new members. */
    __u64 hold_until_ns;
    __u32 members[64];
};

/* An established flow, keyed from the remote side's point of view of an incoming frame. */
struct mstack_flow_key {
    __u32 raddr;
    __u32 laddr;
    __u16 rport;
    __u16 lport;
    __u8 proto;
    __u8 pad[3];
};

struct mstack_flow {
    __u32 port_id;
    __u32 flags;    /* MSTACK_FLOW_* */
    __u64 last_ns;  /* bpf_ktime_get_ns() of the last frame either way */
};

/* Per-port counters (per-CPU array indexed by port id). */
struct mstack_port_counters {
    __u64 rx_frames;
    __u64 rx_bytes;
    __u64 tx_frames;
    __u64 tx_bytes;
    __u64 tx_dropped;
};

/* Ingress counters (per-CPU array `ingress_stats`), one slot per outcome. */
#define MSTACK_IN_FRAMES        0
#define MSTACK_IN_NOT_IPV4      1
#define MSTACK_IN_OTHER_MAC     2
#define MSTACK_IN_OTHER_IP      3
#define MSTACK_IN_BAD_IP        4
#define MSTACK_IN_FRAGMENT      5
#define MSTACK_IN_TRUNCATED     6
#define MSTACK_IN_NO_BINDING    7
#define MSTACK_IN_TO_PORT_FLOW  8
#define MSTACK_IN_TO_PORT_NEW   9
#define MSTACK_IN_TO_PORT_CONN  10
#define MSTACK_IN_TO_PORT_ICMP  11
#define MSTACK_IN_GROUP_EMPTY   12
#define MSTACK_IN_KERNEL_FLOW   13
#define MSTACK_IN_NO_FLOW       14
#define MSTACK_IN_TO_PORT_UDP   15
#define MSTACK_IN_GROUP_HOLD    16
#define MSTACK_IN_NSLOTS        17

/* Egress counters (per-CPU array `egress_stats`): what the port programs did with a frame a
 * user-level stack sent. Every drop has its reason. */
#define MSTACK_EG_FRAMES        0
#define MSTACK_EG_NOT_IPV4      1
#define MSTACK_EG_BAD_IP        2
#define MSTACK_EG_FRAGMENT      3
#define MSTACK_EG_UNKNOWN_PORT  4
#define MSTACK_EG_SRC_NOT_LOCAL 5
#define MSTACK_EG_NOT_BOUND     6
#define MSTACK_EG_BAD_PROTO     7
#define MSTACK_EG_TRUNCATED     8
#define MSTACK_EG_FLOW_CLASH    9
#define MSTACK_EG_FLOW_FULL     10
#define MSTACK_EG_SENT          11
#define MSTACK_EG_FLOW_TAKEN    12   /* not a drop: a hand-off's new owner took its flow over */
#define MSTACK_EG_FAST          13   /* of `sent`: left by the XDP DEVMAP fast path, not TC */
#define MSTACK_EG_NH_MISS       14   /* fast path on, no next hop cached: passed to TC */
#define MSTACK_EG_NSLOTS        15

/* ---- The egress fast path (port host end XDP -> NIC DEVMAP) ----------------------------- */

#define MSTACK_MAX_NEXTHOPS     1024
#define MSTACK_NH_WANTED_SLOTS  256
/* The probe frame mstackd sends through the NIC DEVMAP (IEEE local experimental ethertype);
 * its payload is the NIC's ifindex (u32, host order). */
#define MSTACK_PROBE_ETHERTYPE  0x88B5

/* (NIC ifindex, destination IPv4 in network order): the key of the next-hop cache. */
struct mstack_nh_key {
    __u32 ifindex;
    __u32 daddr;
};

/* A cached next hop: the Ethernet header the fast path writes. */
struct mstack_nexthop {
    __u8 smac[6];   /* the NIC's MAC */
    __u8 dmac[6];   /* the next hop's MAC (gateway or on-link destination) */
    __u32 pad;
};

/* Per NIC, written by mstackd: is the fast path on (the probe got a frame through), and the
 * longest frame the NIC takes (longer ones stay on the TC path). */
struct mstack_nic_fast {
    __u32 on;
    __u32 max_len;
};

/* Per NIC, written by the tracepoint programs: what ndo_xdp_xmit of the NIC did with the
 * frames the DEVMAP gave it (xdp:xdp_devmap_xmit), and redirects to it that failed before
 * (xdp:xdp_redirect_err: a veth whose peer has neither XDP nor GRO does not even take them).
 * A drop or a failed redirect turns the NIC's fast path off. */
struct mstack_nic_xmit {
    __u64 sent;
    __u64 drops;
    __u64 redirect_errs;
    __u64 turned_off;
};

/* Port XDP (app end) counters (per-CPU array `portrx_stats`). */
#define MSTACK_PX_TO_XSK        0
#define MSTACK_PX_NO_XSK        1
#define MSTACK_PX_NSLOTS        2

#endif
