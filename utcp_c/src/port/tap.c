/* tap.c — the `tap` port backend: frames to and from a Linux TAP device (IFF_TAP,
 * IFF_NO_PI), non-blocking, one read()/write() per frame.  For tests against the
 * kernel's TCP without the switch; not a fast path.  No TCP knowledge here. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "utcp_port.h"

#define TAP_FRAME 2048

struct utcp_tap {
	int fd;
	unsigned batch;
	uint8_t *bufs;
};

static int tap_rx_burst(void *ctx, struct utcp_frame *f, unsigned max, uint64_t now)
{
	struct utcp_tap *t = ctx;
	unsigned n = 0;

	(void)now;
	if (max > t->batch)
		max = t->batch;
	while (n < max) {
		uint8_t *b = t->bufs + (size_t)n * TAP_FRAME;
		ssize_t r = read(t->fd, b, TAP_FRAME);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return n ? (int)n : -errno;
		}
		if (r == 0)
			break;
		f[n].data = b;
		f[n].len = (uint32_t)r;
		f[n].cookie = n;
		n++;
	}
	return (int)n;
}

static void tap_rx_release(void *ctx, struct utcp_frame *f, unsigned n)
{
	(void)ctx, (void)f, (void)n;        /* buffers are reused by the next burst */
}

static int tap_tx_burst(void *ctx, const struct utcp_frame *f, unsigned n, uint64_t now)
{
	struct utcp_tap *t = ctx;
	unsigned i;

	(void)now;
	for (i = 0; i < n; i++) {
		ssize_t r = write(t->fd, f[i].data, f[i].len);

		if (r < 0) {
			if (errno == EINTR) {
				i--;
				continue;
			}
			break;                  /* EAGAIN (queue full) or error: the rest is dropped */
		}
	}
	return (int)i;
}

static int tap_kick(void *ctx)
{
	(void)ctx;
	return 0;
}

static const struct utcp_port_ops tap_ops = {
	.sz = sizeof(struct utcp_port_ops),
	.name = "tap",
	.rx_burst = tap_rx_burst,
	.rx_release = tap_rx_release,
	.tx_burst = tap_tx_burst,
	.kick = tap_kick,
};

int utcp_tap_open(const char *ifname, unsigned batch, struct utcp_tap **out)
{
	struct utcp_tap *t;
	struct ifreq ifr;
	int fd, flags;

	if (!ifname || strlen(ifname) >= IFNAMSIZ || !batch)
		return -EINVAL;
	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	memcpy(ifr.ifr_name, ifname, strlen(ifname));
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	t = calloc(1, sizeof(*t));
	if (t)
		t->bufs = malloc((size_t)batch * TAP_FRAME);
	if (!t || !t->bufs) {
		free(t);
		close(fd);
		return -ENOMEM;
	}
	t->fd = fd;
	t->batch = batch;
	*out = t;
	return 0;
}

void utcp_tap_close(struct utcp_tap *t)
{
	if (!t)
		return;
	close(t->fd);
	free(t->bufs);
	free(t);
}

struct utcp_port utcp_tap_port(struct utcp_tap *t)
{
	struct utcp_port p = {&tap_ops, t};

	return p;
}

int utcp_tap_fd(const struct utcp_tap *t)
{
	return t->fd;
}
