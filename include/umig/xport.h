/*
 * xport.h - the transport a migration's three channels run over.
 *
 * A transport moves bytes in order and reliably on one channel; framing
 * is proto.h's job.  Channels: control (handshake, state, commands),
 * bulk (source -> destination pages) and urgent (page requests and their
 * replies; latency-sensitive).  TCP (tcp/) implements it with one
 * connection per channel; an RDMA implementation can sit behind the same
 * ops.
 *
 * Sends on the bulk channel may be queued (the TCP transport batches them
 * through io_uring with bounded bytes in flight, so urgent replies are
 * never stuck behind megabytes of bulk data); xport_flush() waits until
 * everything queued has been handed to the kernel.  recv is exact: it
 * returns 0 only once len bytes arrived, -EPIPE on a clean close.
 */
#ifndef UMIG_XPORT_H
#define UMIG_XPORT_H

#include <stddef.h>
#include <stdint.h>

enum xport_channel {
	XCH_CONTROL = 0,
	XCH_BULK = 1,
	XCH_URGENT = 2,
	XCH_COUNT
};

struct xport;

struct xport_ops {
	const char *name;
	int (*send)(struct xport *x, const void *buf, size_t len);
	int (*recv)(struct xport *x, void *buf, size_t len);
	int (*flush)(struct xport *x);
	int (*fd)(struct xport *x);       /* pollable fd for readability */
	void (*close)(struct xport *x);
};

struct xport {
	const struct xport_ops *ops;
	enum xport_channel ch;
	uint64_t bytes_sent;
	uint64_t bytes_recv;
	void *priv;
};

static inline int xport_send(struct xport *x, const void *buf, size_t len)
{
	int r = x->ops->send(x, buf, len);

	if (!r)
		x->bytes_sent += len;
	return r;
}

static inline int xport_recv(struct xport *x, void *buf, size_t len)
{
	int r = x->ops->recv(x, buf, len);

	if (!r)
		x->bytes_recv += len;
	return r;
}

static inline int xport_flush(struct xport *x) { return x->ops->flush(x); }
static inline int xport_fd(struct xport *x) { return x->ops->fd(x); }
static inline void xport_close(struct xport *x) { if (x) x->ops->close(x); }

const char *xport_channel_name(enum xport_channel ch);

/* --- TCP (tcp/tcp.c) ------------------------------------------------------ */

/* Connect one channel to host:port; the channel greeting is sent by proto. */
int xport_tcp_connect(struct xport **out, const char *host, uint16_t port,
		      enum xport_channel ch, int timeout_ms);
/* Listening socket for a destination; returns the fd or -errno. */
int xport_tcp_listen(const char *host, uint16_t port);
/* Accept one connection within timeout_ms (-ETIMEDOUT) as channel ch. */
int xport_tcp_accept(struct xport **out, int listen_fd, enum xport_channel ch,
		     int timeout_ms);
/* Re-tune an accepted connection once its channel is known. */
void xport_tcp_set_channel(struct xport *x, enum xport_channel ch);

#endif
