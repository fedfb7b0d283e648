/* fuzz_wire.c — libFuzzer entry for the frame parsers: Ethernet -> IPv4 -> TCP/ICMP,
 * plus the bare TCP option parser on the same bytes.  Built by `make fuzz` (clang). */
#include <stddef.h>
#include <stdint.h>

#include "utcp_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct utcp_eth eth;
	struct utcp_ipv4 ip;
	struct utcp_tcp tcp;
	struct utcp_icmp icmp;
	struct utcp_tcp_opts opts;
	enum utcp_drop why;

	utcp_tcp_parse_options(data, size > 40 ? 40 : size, &opts);
	if (utcp_eth_parse(data, size, &eth, &why) < 0)
		return 0;
	if (utcp_ipv4_parse(data + UTCP_ETH_HLEN, size - UTCP_ETH_HLEN, &ip, &why) < 0)
		return 0;
	if (ip.proto == UTCP_IPPROTO_TCP) {
		/* Without checksum verification so the fuzzer reaches the option parser. */
		if (utcp_tcp_parse(ip.payload, ip.payload_len, ip.src, ip.dst, false, &tcp, &why) == 0 &&
		    tcp.payload + tcp.payload_len != ip.payload + ip.payload_len)
			__builtin_trap();
	} else if (ip.proto == UTCP_IPPROTO_ICMP) {
		utcp_icmp_parse(ip.payload, ip.payload_len, &icmp, &why);
	}
	return 0;
}
