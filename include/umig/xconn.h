/*
 * xconn.h - one byte-stream connection of a migration (a TCP socket).
 *
 * A connection moves bytes in order and reliably; framing is proto.h's
 * job and the page-level transport (xport.h) is built on top.  Every
 * migration has a control connection, and the TCP page transport adds a
 * bulk and an urgent one.  recv is exact: it returns 0 only once len
 * bytes arrived, -EPIPE on a clean close, -ETIMEDOUT when a receive
 * deadline is set (xconn_set_timeout) and nothing arrived for that long.
 *
 * Sends on the bulk connection may be queued (the TCP implementation
 * batches them through io_uring with bounded bytes in flight, so urgent
 * replies are never stuck behind megabytes of bulk data); xconn_flush()
 * waits until everything queued has been handed to the kernel.
 *
 * Threads: one sender and one receiver at a time; shutdown() may be
 * called from any thread and makes every blocked call return.
 */
#ifndef UMIG_XCONN_H
#define UMIG_XCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum xport_channel {
	XCH_CONTROL = 0,
	XCH_BULK = 1,
	XCH_URGENT = 2,
	XCH_COUNT
};

const char *xport_channel_name(enum xport_channel ch);

struct xconn;

struct xconn_ops {
	const char *name;
	int (*send)(struct xconn *c, const void *buf, size_t len);
	int (*recv)(struct xconn *c, void *buf, size_t len);
	int (*flush)(struct xconn *c);
	int (*fd)(struct xconn *c);       /* pollable fd for readability */
	void (*shutdown)(struct xconn *c);
	void (*close)(struct xconn *c);
	/* one frame in parts: under TLS one record, not one per part (NULL: send each) */
	int (*sendv)(struct xconn *c, const struct iovec *iov, int n);
};

struct xconn {
	const struct xconn_ops *ops;
	enum xport_channel ch;
	int timeout_ms;          /* receive deadline per call; -1 = none */
	uint64_t bytes_sent;
	uint64_t bytes_recv;
	bool digest;             /* frames carry a digest (FEAT_DIGEST, proto.c) */
	bool tls;                /* every byte is a TLS record (tcp/tls.c) */
	uint8_t *scratch;        /* the sender's copy of page data being digested */
	size_t scratch_cap;
	void *priv;
};

static inline int xconn_send(struct xconn *c, const void *buf, size_t len)
{
	int r = c->ops->send(c, buf, len);

	if (!r)
		c->bytes_sent += len;
	return r;
}

static inline int xconn_sendv(struct xconn *c, const struct iovec *iov, int n)
{
	int r = 0;

	if (c->ops->sendv)
		r = c->ops->sendv(c, iov, n);
	for (int i = 0; !c->ops->sendv && !r && i < n; i++)
		r = iov[i].iov_len ? c->ops->send(c, iov[i].iov_base, iov[i].iov_len) : 0;
	for (int i = 0; !r && i < n; i++)
		c->bytes_sent += iov[i].iov_len;
	return r;
}

static inline int xconn_recv(struct xconn *c, void *buf, size_t len)
{
	int r = c->ops->recv(c, buf, len);

	if (!r)
		c->bytes_recv += len;
	return r;
}

static inline int xconn_flush(struct xconn *c) { return c->ops->flush(c); }
static inline int xconn_fd(struct xconn *c) { return c->ops->fd(c); }
static inline void xconn_shutdown(struct xconn *c) { if (c) c->ops->shutdown(c); }
/* Frees c and what it owns (the scratch buffer included). */
static inline void xconn_close(struct xconn *c) { if (c) c->ops->close(c); }
static inline void xconn_set_timeout(struct xconn *c, int ms) { c->timeout_ms = ms; }

/* --- TCP (tcp/conn.c) ----------------------------------------------------- */

/* Connect one channel to host:port within timeout_ms. */
int xconn_tcp_connect(struct xconn **out, const char *host, uint16_t port,
		      enum xport_channel ch, int timeout_ms);
/* Listening socket for a destination; returns the fd or -errno. */
int xconn_tcp_listen(const char *host, uint16_t port);
/* Accept one connection within timeout_ms (-ETIMEDOUT; -1 = no bound). */
int xconn_tcp_accept(struct xconn **out, int listen_fd, enum xport_channel ch,
		     int timeout_ms);
/*
 * Let the kernel end the connection when sent data (or a zero-window
 * probe) stays unacknowledged for ms (TCP_USER_TIMEOUT), and probe an
 * idle connection (TCP keepalive), so no send waits on a vanished peer.
 */
void xconn_tcp_set_user_timeout(struct xconn *c, unsigned ms);
/* Re-tune an accepted connection once its channel is known. */
void xconn_tcp_set_channel(struct xconn *c, enum xport_channel ch);
/* "HOST:PORT" of the peer, for messages. */
void xconn_tcp_peer_name(struct xconn *c, char *buf, size_t len);

/* --- TLS 1.3 on a TCP connection (tcp/tls.c, xsec.h) ------------------------ */

struct xsec;
/*
 * Run the TLS handshake as the side s was loaded for, within timeout_ms
 * (<= 0: 10 s); host: the name the destination's certificate must carry
 * (source side, X.509).  Afterwards every byte is a TLS record and the
 * bulk channel stops using io_uring.  -EACCES "authentication failed: ..."
 * when the peer has no or other credentials, -ETIMEDOUT past the deadline.
 */
int xconn_tls_start(struct xconn *c, const struct xsec *s, const char *host, int timeout_ms);
bool xconn_tls_on(struct xconn *c);
/* RFC 8446 section 7.5 exporter of the connection's TLS session; -ENOTCONN without TLS. */
int xconn_tls_exporter(struct xconn *c, const char *label, const void *ctx, size_t ctxlen,
		       uint8_t *out, size_t len);
/*
 * Bytes already received and decrypted but not yet read: poll() on the
 * socket does not see them, so check this first.
 */
bool xconn_pending(struct xconn *c);

#endif
