/*
 * tcp.c - the TCP transport: one connection per channel.
 *
 * Channel tuning:
 *  - urgent: TCP_NODELAY (a 4 KiB reply must not wait for Nagle), and
 *    SO_PRIORITY 6 / IP_TOS 0xb8 (EF) so a network or qdisc with priority
 *    queues serves page requests ahead of bulk data;
 *  - bulk: a bounded send buffer, and sends batched through io_uring with
 *    at most TCP_BULK_INFLIGHT bytes submitted and not yet completed
 *    (tcp/uring.c), so the bulk stream cannot build a deep queue in front
 *    of urgent replies that share the link;
 *  - control: TCP_NODELAY.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp.h"
#include "umig/log.h"
#include "umig/util.h"

const char *xport_channel_name(enum xport_channel ch)
{
	static const char *const n[] = { "control", "bulk", "urgent" };

	return (unsigned)ch < XCH_COUNT ? n[ch] : "?";
}

static struct tcp_xport *tx(struct xport *x)
{
	return x->priv;
}

static int tcp_send(struct xport *x, const void *buf, size_t len)
{
	struct tcp_xport *t = tx(x);

	if (t->ring)
		return tcp_uring_send(t, buf, len);
	while (len) {
		ssize_t n = send(t->fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf = (const char *)buf + n;
		len -= n;
	}
	return 0;
}

static int tcp_recv(struct xport *x, void *buf, size_t len)
{
	/* -EPIPE on a clean close, as xport.h promises */
	return read_full(tx(x)->fd, buf, len);
}

static int tcp_flush(struct xport *x)
{
	struct tcp_xport *t = tx(x);

	return t->ring ? tcp_uring_flush(t) : 0;
}

static int tcp_fd(struct xport *x)
{
	return tx(x)->fd;
}

static void tcp_close(struct xport *x)
{
	struct tcp_xport *t = tx(x);

	/* a send still in flight to a peer that stopped reading would never
	 * complete: shut the socket down so the ring can be torn down */
	if (t->ring && tcp_uring_busy(t))
		shutdown(t->fd, SHUT_RDWR);
	if (t->ring)
		tcp_uring_destroy(t);
	close(t->fd);
	free(t);
	free(x);
}

static const struct xport_ops tcp_ops = {
	.name = "tcp",
	.send = tcp_send,
	.recv = tcp_recv,
	.flush = tcp_flush,
	.fd = tcp_fd,
	.close = tcp_close,
};

void xport_tcp_set_channel(struct xport *x, enum xport_channel ch)
{
	struct tcp_xport *t = tx(x);
	int one = 1, prio = 6, tos = 0xb8, sndbuf = TCP_BULK_SNDBUF;

	x->ch = ch;
	if (ch != XCH_BULK)
		setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (ch == XCH_URGENT) {
		setsockopt(t->fd, SOL_SOCKET, SO_PRIORITY, &prio, sizeof(prio));
		setsockopt(t->fd, IPPROTO_IP, IP_TOS, &tos, sizeof(tos));
		setsockopt(t->fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof(tos));
	}
	if (ch == XCH_BULK) {
		setsockopt(t->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
		int ret = t->ring ? 0 : tcp_uring_init(t);

		if (ret < 0)
			pr_warn("io_uring unavailable for the bulk channel (%s); using send(2)",
				err_msg(ret));
	}
}

static int tcp_wrap(struct xport **out, int fd, enum xport_channel ch)
{
	struct xport *x = calloc(1, sizeof(*x));
	struct tcp_xport *t = calloc(1, sizeof(*t));

	if (!x || !t) {
		free(x);
		free(t);
		close(fd);
		return -ENOMEM;
	}
	t->fd = fd;
	x->ops = &tcp_ops;
	x->priv = t;
	xport_tcp_set_channel(x, ch);
	*out = x;
	return 0;
}

static int tcp_wait(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int r;

	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r == 0 ? -ETIMEDOUT : 0;
}

int xport_tcp_connect(struct xport **out, const char *host, uint16_t port,
		      enum xport_channel ch, int timeout_ms)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	char ports[8];
	int fd, ret, err = 0;
	socklen_t len = sizeof(err);

	snprintf(ports, sizeof(ports), "%u", port);
	ret = getaddrinfo(host, ports, &hints, &ai);
	if (ret)
		return err_set(-EHOSTUNREACH, "cannot resolve '%s': %s", host, gai_strerror(ret));
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		freeaddrinfo(ai);
		return -errno;
	}
	ret = connect(fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (ret < 0 && errno != EINPROGRESS)
		err = errno;
	else if (ret < 0 && (ret = tcp_wait(fd, POLLOUT, timeout_ms)) < 0)
		err = -ret;
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		close(fd);
		return err_set(-err, "cannot connect the %s channel to %s:%u: %s",
			       xport_channel_name(ch), host, port, strerror(err));
	}
	/* back to blocking: every channel has a thread of its own */
	fcntl(fd, F_SETFL, 0);
	return tcp_wrap(out, fd, ch);
}

int xport_tcp_listen(const char *host, uint16_t port)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai;
	char ports[8];
	int fd, one = 1, ret;

	snprintf(ports, sizeof(ports), "%u", port);
	ret = getaddrinfo(host, ports, &hints, &ai);
	if (ret)
		return err_set(-EADDRNOTAVAIL, "cannot resolve '%s': %s", host, gai_strerror(ret));
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		freeaddrinfo(ai);
		return -errno;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 8) < 0) {
		ret = errno;
		freeaddrinfo(ai);
		close(fd);
		return err_set(-ret, "cannot listen on %s:%u: %s", host, port, strerror(ret));
	}
	freeaddrinfo(ai);
	return fd;
}

int xport_tcp_accept(struct xport **out, int listen_fd, enum xport_channel ch,
		     int timeout_ms)
{
	int ret = tcp_wait(listen_fd, POLLIN, timeout_ms);
	int fd;

	if (ret < 0)
		return err_set(ret, "no %s connection within %d s", xport_channel_name(ch),
			       timeout_ms / 1000);
	fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return -errno;
	return tcp_wrap(out, fd, ch);
}
