/* The switch's maps, shared by its programs: the ingress program defines them and the daemon
 * pins them; every other program of the switch is loaded with the pinned maps reused. */
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
    __uint(max_entries, MSTACK_MAX_NICS);
    __type(key, __u32);
    __type(value, struct mstack_nic);
} nics SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, MSTACK_MAX_LOCAL_ADDRS);
    __type(key, struct mstack_addr_key);
    __type(value, __u32);
} local_addrs SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, MSTACK_MAX_BINDINGS);
    __type(key, struct mstack_bind_key);
    __type(value, struct mstack_binding);
} bindings SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, MSTACK_MAX_GROUPS);
    __type(key, __u32);
    __type(value, struct mstack_group);
} groups SEC(".maps");

/* Bounded hash, not an LRU: a flood cannot flush live flows. Entries are made only by the
 * switch's egress program when a port answers a SYN; the daemon sweeps closed ones. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, MSTACK_MAX_FLOWS);
    __type(key, struct mstack_flow_key);
    __type(value, struct mstack_flow);
} flows SEC(".maps");

/* Port id -> host end of the port's veth (ingress redirects frames into the port). */
struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, MSTACK_MAX_PORTS);
    __type(key, __u32);
    __type(value, __u32);
} port_devmap SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, MSTACK_MAX_PORTS);
    __type(key, __u32);
    __type(value, struct mstack_port_stats);
} port_stats SEC(".maps");

#endif
