/* sink.bpf.c — the switch benchmark's counting drop: every frame is counted (frames, bytes,
 * per CPU) and dropped.  Used as the receiver of port -> NIC traffic at the remote end, and
 * in place of the switch as the ingress limit line ("a bare XDP_DROP on the NIC"). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);      /* 0: frames, 1: bytes */
	__type(key, __u32);
	__type(value, __u64);
} sink_counts SEC(".maps");

SEC("xdp")
int bench_sink(struct xdp_md *ctx)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&sink_counts, &k);

	if (v)
		*v += 1;
	k = 1;
	v = bpf_map_lookup_elem(&sink_counts, &k);
	if (v)
		*v += ctx->data_end - ctx->data;
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
