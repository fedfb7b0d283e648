/* xsk_redirect.bpf.c — the XDP program a port's app end carries (test helper's copy of the
 * daemon's arrangement): every frame to the XSK bound to its RX queue, a miss is dropped so
 * that nothing on the app end ever reaches a host stack. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks_map SEC(".maps");

SEC("xdp")
int xsk_redirect(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_DROP);
}

char _license[] SEC("license") = "GPL";
