/*
 * conn.c - one TCP connection of a migration (xconn.h).
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

static struct tcp_conn *tx(struct xconn *x)
{
	return x->priv;
}

static int tcp_send(struct xconn *x, const void *buf, size_t len)
{
	struct tcp_conn *t = tx(x);

	if (t->tls)
		return tcp_tls_send(t, buf, len);
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

/*
 * A frame's parts in one sendmsg (an urgent reply is then one segment,
 * not one per part), resumed where a short send stopped.
 */
static int tcp_sendmsg_all(int fd, const struct iovec *parts, int n)
{
	struct iovec iov[8];
	struct msghdr mh = { .msg_iov = iov };

	if (n > 8)
		return -EINVAL;
	memcpy(iov, parts, n * sizeof(*iov));
	mh.msg_iovlen = n;
	while (mh.msg_iovlen) {
		ssize_t sent = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (sent < 0 && errno == EINTR)
			continue;
		if (sent < 0)
			return -errno;
		while (mh.msg_iovlen && (size_t)sent >= mh.msg_iov->iov_len) {
			sent -= mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen) {
			mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + sent;
			mh.msg_iov->iov_len -= sent;
		}
	}
	return 0;
}

static int tcp_sendv(struct xconn *x, const struct iovec *iov, int n)
{
	struct tcp_conn *t = tx(x);
	int ret = 0;

	if (t->tls)
		return tcp_tls_sendv(t, iov, n);
	if (t->ring) {
		for (int i = 0; i < n && !ret; i++)
			if (iov[i].iov_len)
				ret = tcp_uring_send(t, iov[i].iov_base, iov[i].iov_len);
		return ret;
	}
	return tcp_sendmsg_all(t->fd, iov, n);
}

static int tcp_wait(int fd, short events, int timeout_ms);

/* Exact receive; -EPIPE on a clean close, -ETIMEDOUT past the deadline. */
static int tcp_recv(struct xconn *x, void *buf, size_t len)
{
	int fd = tx(x)->fd;

	if (tx(x)->tls)
		return tcp_tls_recv(tx(x), x->timeout_ms, buf, len);
	if (x->timeout_ms < 0)
		return read_full(fd, buf, len);
	for (size_t got = 0; len;) {
		int ret = tcp_wait(fd, POLLIN, x->timeout_ms);
		ssize_t n;

		/* stalled part way: the stream cannot be resynchronised */
		if (ret < 0)
			return ret == -ETIMEDOUT && got ? -EPROTO : ret;
		n = recv(fd, buf, len, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EPIPE;
		buf = (char *)buf + n;
		len -= n;
		got += n;
	}
	return 0;
}

static int tcp_flush(struct xconn *x)
{
	struct tcp_conn *t = tx(x);

	if (t->tls)
		return tcp_tls_flush(t);
	return t->ring ? tcp_uring_flush(t) : 0;
}

static int tcp_fd(struct xconn *x)
{
	return tx(x)->fd;
}

static void tcp_shutdown(struct xconn *x)
{
	shutdown(tx(x)->fd, SHUT_RDWR);
}

static void tcp_close(struct xconn *x)
{
	struct tcp_conn *t = tx(x);

	/* a send still in flight to a peer that stopped reading would never
	 * complete: shut the socket down so the ring can be torn down */
	if (t->ring && tcp_uring_busy(t))
		shutdown(t->fd, SHUT_RDWR);
	if (t->ring)
		tcp_uring_destroy(t);
	tcp_tls_free(t);
	free(x->scratch);
	close(t->fd);
	free(t);
	free(x);
}

static const struct xconn_ops tcp_ops = {
	.name = "tcp",
	.send = tcp_send,
	.sendv = tcp_sendv,
	.recv = tcp_recv,
	.flush = tcp_flush,
	.fd = tcp_fd,
	.shutdown = tcp_shutdown,
	.close = tcp_close,
};

void xconn_tcp_set_user_timeout(struct xconn *x, unsigned ms)
{
	int fd = tx(x)->fd, one = 1, idle = MAX(ms / 2000, 1u), intvl = 1, cnt = 3;

	/* unacknowledged data, or an unanswered zero window, for ms ends the connection */
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

void xconn_tcp_set_channel(struct xconn *x, enum xport_channel ch)
{
	struct tcp_conn *t = tx(x);
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
		/* io_uring cannot encrypt: a TLS bulk channel sends through GnuTLS */
		int ret = t->ring || t->tls ? 0 : tcp_uring_init(t);

		if (ret < 0)
			pr_warn("io_uring unavailable for the bulk channel (%s); using send(2)",
				err_msg(ret));
	}
}

void xconn_tcp_peer_name(struct xconn *x, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[NI_MAXHOST], port[NI_MAXSERV];

	if (getpeername(tx(x)->fd, (struct sockaddr *)&ss, &sl) < 0 ||
	    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
			NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(buf, len, "an unknown peer");
	else
		snprintf(buf, len, "%s:%s", host, port);
}

static int tcp_wrap(struct xconn **out, int fd, enum xport_channel ch)
{
	struct xconn *x = calloc(1, sizeof(*x));
	struct tcp_conn *t = calloc(1, sizeof(*t));

	if (!x || !t) {
		free(x);
		free(t);
		close(fd);
		return -ENOMEM;
	}
	t->fd = fd;
	x->ops = &tcp_ops;
	x->timeout_ms = -1;
	x->priv = t;
	xconn_tcp_set_channel(x, ch);
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

int xconn_tcp_connect(struct xconn **out, const char *host, uint16_t port,
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

int xconn_tcp_listen(const char *host, uint16_t port)
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
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
		ret = errno;
		freeaddrinfo(ai);
		close(fd);
		return err_set(-ret, "cannot listen on %s:%u: %s", host, port, strerror(ret));
	}
	freeaddrinfo(ai);
	return fd;
}

int xconn_tcp_accept(struct xconn **out, int listen_fd, enum xport_channel ch,
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
