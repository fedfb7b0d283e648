/* drop.c — names of drop reasons, for logs and counters. */
#include "utcp_wire.h"

static const char *const drop_names[UTCP_DROP__MAX] = {
	[UTCP_DROP_NONE] = "none",
	[UTCP_DROP_ETH_TRUNC] = "eth_truncated",
	[UTCP_DROP_ETH_NOT_IPV4] = "eth_not_ipv4",
	[UTCP_DROP_ETH_NOT_US] = "eth_not_for_us",
	[UTCP_DROP_IP_TRUNC] = "ip_truncated",
	[UTCP_DROP_IP_VERSION] = "ip_bad_version",
	[UTCP_DROP_IP_IHL] = "ip_bad_ihl",
	[UTCP_DROP_IP_TOTLEN] = "ip_bad_total_length",
	[UTCP_DROP_IP_CSUM] = "ip_bad_checksum",
	[UTCP_DROP_IP_FRAGMENT] = "ip_fragment",
	[UTCP_DROP_IP_OPTIONS] = "ip_options",
	[UTCP_DROP_IP_NOT_US] = "ip_not_for_us",
	[UTCP_DROP_IP_PROTO] = "ip_unhandled_protocol",
	[UTCP_DROP_IP_BAD_SRC] = "ip_bad_source",
	[UTCP_DROP_TCP_TRUNC] = "tcp_truncated",
	[UTCP_DROP_TCP_DOFF] = "tcp_bad_data_offset",
	[UTCP_DROP_TCP_CSUM] = "tcp_bad_checksum",
	[UTCP_DROP_TCP_OPTION] = "tcp_bad_option",
	[UTCP_DROP_TCP_BAD_FLAGS] = "tcp_bad_flags",
	[UTCP_DROP_TCP_PORT_ZERO] = "tcp_port_zero",
	[UTCP_DROP_ICMP_TRUNC] = "icmp_truncated",
	[UTCP_DROP_ICMP_CSUM] = "icmp_bad_checksum",
	[UTCP_DROP_ICMP_UNHANDLED] = "icmp_unhandled",
	[UTCP_DROP_ICMP_NO_CONN] = "icmp_no_connection",
	[UTCP_DROP_ICMP_STALE] = "icmp_stale_sequence",
	[UTCP_DROP_NO_CONN] = "no_connection",
	[UTCP_DROP_TABLE_FULL] = "table_full",
	[UTCP_DROP_BACKLOG] = "backlog_full",
	[UTCP_DROP_TCP_STATE] = "tcp_state",
	[UTCP_DROP_PAWS] = "paws",
	[UTCP_DROP_OUT_OF_WINDOW] = "out_of_window",
	[UTCP_DROP_RX_OVERFLOW] = "rx_overflow",
};

const char *utcp_drop_str(enum utcp_drop why)
{
	if ((unsigned)why >= UTCP_DROP__MAX || !drop_names[why])
		return "unknown";
	return drop_names[why];
}
