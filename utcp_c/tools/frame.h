/* frame.h — mstack-responder's frame logic, kept apart from ports and sockets so that it can
 * be tested with crafted frames: one Ethernet frame in, at most one frame out, no per-flow
 * state.  A SYN to the listener gets a SYN-ACK, a segment with payload gets the payload
 * echoed back, a FIN gets a FIN-ACK; everything else is only counted.
 *
 * The SYN-ACK's ISN is the peer's ISN plus a keyed hash of the flow (resp_seq_offset), so
 * the responder's stream offset of a byte can be computed from any later segment.  Two
 * rules for what follows the handshake:
 *
 *  - frame rules (default): echo seq = the segment's ack, ack = seq + len (+ 1 for FIN);
 *    pure ACKs get no answer.  Exact for crafted frames and for a peer with one segment in
 *    flight at a time (send, wait for the echo).
 *  - stream rules (cfg.stream): the echo of the bytes at the peer's offset o goes at the
 *    responder's offset o (seq = the segment's seq + hash), and the ack field acknowledges
 *    only what the peer has confirmed receiving back (ack = the segment's ack - hash), so an
 *    echo that is lost or dropped by the peer (beyond its window, out of memory) leaves that
 *    data unacknowledged and the peer retransmits it; pure ACKs get a pure ACK carrying that
 *    acknowledgement.  A kernel TCP peer then reads back exactly the byte stream it sent, with
 *    any amount in flight, and both FINs close cleanly. */
#ifndef MSTACK_RESP_FRAME_H
#define MSTACK_RESP_FRAME_H

#include <stddef.h>
#include <stdint.h>

struct resp_cfg {
	uint32_t addr;      /* listening address, network byte order; 0: any */
	uint16_t port;      /* listening port, network byte order */
	uint16_t mss;       /* MSS option on SYN-ACKs (host order); 0: no option */
	uint32_t isn_key;   /* mixed into the ISNs (resp_seq_offset) */
	int stream;         /* stream rules (above); 0: frame rules */
};

/* What the responder saw.  Every frame counts in exactly one of syn, data, fin, ack, other,
 * malformed (so they add up to frames). */
struct resp_counts {
	uint64_t frames;     /* frames examined */
	uint64_t syn;        /* SYN (no ACK) to the listener: SYN-ACK */
	uint64_t data;       /* ACK segment with payload to the listener: echoed (FIN too) */
	uint64_t fin;        /* FIN|ACK without payload to the listener: FIN-ACK */
	uint64_t ack;        /* pure ACK to the listener: answered under stream rules only */
	uint64_t other;      /* well formed, not answered: not IPv4/TCP, another address or
			      * port, a fragment, RST, SYN-ACK, no ACK flag */
	uint64_t malformed;  /* cut short, bad IHL or version, bad total length, bad data offset */
	uint64_t replies;    /* reply frames built */
	uint64_t no_room;    /* answers that did not fit in the room given */
};

#define RESP_WINDOW 64240

/* Examine one frame (in, len bytes) and build the answer, if any, in out (room bytes, not
 * overlapping in).  Returns the answer's length, or 0 for no answer.  Updates c. */
size_t resp_frame(const struct resp_cfg *cfg, const uint8_t *in, size_t len, uint8_t *out,
		  size_t room, struct resp_counts *c);

/* The responder's ISN minus the peer's on the flow from saddr:sport (the responder) to
 * daddr:dport, all in network order: a keyed hash of the 4-tuple. */
uint32_t resp_seq_offset(const struct resp_cfg *cfg, uint32_t saddr, uint32_t daddr, uint16_t sport,
		  uint16_t dport);

/* The Internet checksum (RFC 1071) of data, folded, not inverted, starting from sum. */
uint32_t resp_csum_add(uint32_t sum, const uint8_t *data, size_t len);
uint16_t resp_csum_fold(uint32_t sum);

#endif /* MSTACK_RESP_FRAME_H */
