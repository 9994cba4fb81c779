/*
 * tcp.h - internals shared by the TCP transport's files.
 */
#ifndef UMIG_TCP_INTERNAL_H
#define UMIG_TCP_INTERNAL_H

#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/uio.h>

#include "umig/xconn.h"

#define TCP_BULK_SNDBUF    (256 << 10)
#define TCP_BULK_BUFS      8
#define TCP_BULK_BUF_SIZE  (256 << 10)
/* at most this many bytes submitted to io_uring and not yet sent */
#define TCP_BULK_INFLIGHT  (TCP_BULK_BUFS * TCP_BULK_BUF_SIZE)

struct tcp_uring;
struct xport;
struct xev;
struct proto_msg;

/*
 * The decoders of the page channels' frames (tcp.c), pure: they read only
 * x->npages, x->source and x->features, check every field and fill *ev.
 * 1 with *ev, or -EPROTO naming the channel, the type and the field.
 * Fuzzed by tests/fuzz/fuzz-frames.c.
 */
int tcp_decode_bulk(struct xport *x, const struct proto_msg *m, struct xev *ev);
int tcp_decode_urgent(struct xport *x, const struct proto_msg *m, struct xev *ev);

struct tcp_conn {
	int fd;
	struct tcp_uring *ring;   /* bulk channel only, never under TLS */
	gnutls_session_t tls;     /* NULL: plaintext */
	bool batch;               /* TLS bulk: records gathered while the socket is busy */
	size_t corked;            /* bytes gathered and not yet sent */
	bool heard;               /* TLS: a record has arrived since the handshake */
	unsigned sends;           /* TLS: records sent since the handshake (saturating) */
};

int tcp_uring_init(struct tcp_conn *t);
int tcp_uring_send(struct tcp_conn *t, const void *buf, size_t len);
int tcp_uring_flush(struct tcp_conn *t);
bool tcp_uring_busy(struct tcp_conn *t);
void tcp_uring_destroy(struct tcp_conn *t);

/* tls.c: the connection's bytes through its TLS session */
int tcp_tls_send(struct tcp_conn *t, const void *buf, size_t len);
int tcp_tls_sendv(struct tcp_conn *t, const struct iovec *iov, int n);
int tcp_tls_recv(struct tcp_conn *t, int timeout_ms, void *buf, size_t len);
int tcp_tls_flush(struct tcp_conn *t);
void tcp_tls_free(struct tcp_conn *t);

#endif
