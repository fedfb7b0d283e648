/* The switch's maps, shared by all its programs. Each is pinned by name under mstackd's BPF
 * directory (libbpf's pin_root_path): the first object loaded creates and pins it, every later
 * object and a restarted daemon reuse the pinned one, so the data path outlives the daemon. */
#ifndef MSTACK_SWITCH_MAPS_H
#define MSTACK_SWITCH_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "mstack_abi.h"

_Static_assert(sizeof(((struct mstack_group *)0)->members) / sizeof(__u32) ==
                   MSTACK_GROUP_MAX_MEMBERS,
               "mstack_group.members must hold MSTACK_GROUP_MAX_MEMBERS");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_NICS);
    __type(key, __u32);
    __type(value, struct mstack_nic);
} nics SEC(".maps");

/* Local IPv4 address of an attached NIC (network byte order) -> that NIC's ifindex; tracked
 * from netlink. Strong host model: an address belongs to one NIC. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_LOCAL_ADDRS);
    __type(key, __u32);
    __type(value, __u32);
} local_addrs SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_BINDINGS);
    __type(key, struct mstack_bind_key);
    __type(value, struct mstack_binding);
} bindings SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_GROUPS);
    __type(key, __u32);
    __type(value, struct mstack_group);
} groups SEC(".maps");

/* Bounded hash, not an LRU: a flood cannot flush live flows. Entries are made only by the
 * switch's egress program when a port answers a SYN; the daemon sweeps closed ones. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_FLOWS);
    __type(key, struct mstack_flow_key);
    __type(value, struct mstack_flow);
} flows SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_PORTS);
    __type(key, __u32);
    __type(value, struct mstack_port_counters);
} port_stats SEC(".maps");

/* Host end of a port's veth (root namespace) -> port id: the egress program's "who sent it". */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_PORTS);
    __type(key, __u32);
    __type(value, __u32);
} port_by_host_if SEC(".maps");

/* App end of a port's veth (ports namespace) -> port id: which XSK a frame belongs to. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_PORTS);
    __type(key, __u32);
    __type(value, __u32);
} port_by_app_if SEC(".maps");

/* Port id -> the port's AF_XDP socket (inserted by mstackd, which creates the XSK). */
struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
    __uint(max_entries, MSTACK_MAX_PORTS);
    __type(key, __u32);
    __type(value, __u32);
} xsks SEC(".maps");

#endif
