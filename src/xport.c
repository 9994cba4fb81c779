/*
 * xport.c - what every page transport shares: choosing one by name, the
 * control connection with its greeting, and control messages; see xport.h.
 *
 * The control connection is TCP whichever transport carries the pages:
 * it is small, ordered and latency-tolerant, and it is where the handshake
 * decides everything else (including whether the page channels may open).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "umig/log.h"
#include "umig/util.h"
#include "umig/xport.h"

static const struct xport_ops *const xport_impls[] = {
	&xport_tcp_ops,
#ifdef UMIG_HAVE_RDMA
	&xport_rdma_ops,
#endif
};

const char *xport_names(void)
{
#ifdef UMIG_HAVE_RDMA
	return "tcp, rdma";
#else
	return "tcp";
#endif
}

static const struct xport_ops *xport_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(xport_impls); i++)
		if (!name || !strcmp(name, xport_impls[i]->name))
			return xport_impls[i];
	return NULL;
}

int xport_known(const char *name)
{
	if (xport_find(name))
		return 0;
	if (name && !strcmp(name, "rdma"))
		return err_set(-ENOENT, "this umig was built without RDMA: install libibverbs-dev "
			       "and librdmacm-dev and rebuild (make deps && make), or use tcp");
	return err_set(-ENOENT, "unknown transport '%s' (this umig has: %s)", name, xport_names());
}

int64_t xport_feature(const char *name)
{
	const struct xport_ops *ops = xport_find(name);

	return ops ? (int64_t)ops->feature : xport_known(name);
}

static int xport_new(struct xport **out, const char *transport, struct xconn *ctl)
{
	const struct xport_ops *ops = xport_find(transport);
	struct xport *x;

	if (!ops) {
		xconn_close(ctl);
		return xport_known(transport);
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		xconn_close(ctl);
		return -ENOMEM;
	}
	x->ops = ops;
	x->caps = ops->caps;
	x->ctl = ctl;
	x->version = 1;
	pthread_mutex_init(&x->ctl_lock, NULL);
	*out = x;
	return 0;
}

int xport_connect(struct xport **out, const char *transport, const char *host,
		  uint16_t port, uint64_t session, int timeout_ms)
{
	struct xconn *ctl;
	int ret = xport_known(transport ? transport : "tcp");

	if (!ret)
		ret = xconn_tcp_connect(&ctl, host, port, XCH_CONTROL, timeout_ms);
	if (!ret)
		ret = xport_new(out, transport, ctl);
	if (ret < 0)
		return ret;
	(*out)->session = session;
	(*out)->source = true;
	ret = proto_send_greeting(ctl, session);
	if (ret < 0) {
		xport_close(*out);
		*out = NULL;
	}
	return ret;
}

int xport_accept(struct xport **out, const char *transport, int listen_fd, int timeout_ms)
{
	enum xport_channel ch;
	struct xconn *ctl;
	uint64_t session;
	int ret = xconn_tcp_accept(&ctl, listen_fd, XCH_CONTROL, timeout_ms);

	if (ret < 0)
		return ret;
	ret = xport_new(out, transport, ctl);
	if (ret < 0)
		return ret;
	/* the greeting is the first bytes: a silent stranger gets no more than this */
	xconn_set_timeout(ctl, timeout_ms > 0 ? timeout_ms : 10000);
	ret = proto_recv_greeting(ctl, &ch, &session);
	if (!ret && ch != XCH_CONTROL)
		ret = err_set(-EPROTO, "the first connection must be the control channel");
	xconn_set_timeout(ctl, -1);
	(*out)->session = session;
	return ret;
}

void xport_shutdown(struct xport *x)
{
	if (!x)
		return;
	xconn_shutdown(x->ctl);
	if (x->priv)
		x->ops->shutdown(x);
}

void xport_close(struct xport *x)
{
	if (!x)
		return;
	if (x->priv)
		x->ops->close(x);
	xconn_close(x->ctl);
	pthread_mutex_destroy(&x->ctl_lock);
	free(x);
}

int xport_ctl_send(struct xport *x, uint16_t type, const void *p, uint32_t len)
{
	int ret;

	pthread_mutex_lock(&x->ctl_lock);
	ret = proto_send(x->ctl, type, p, len);
	pthread_mutex_unlock(&x->ctl_lock);
	return ret;
}

int xport_ctl_recv(struct xport *x, struct proto_msg *m, int timeout_ms)
{
	int ret;

	xconn_set_timeout(x->ctl, timeout_ms);
	ret = proto_recv(x->ctl, m);
	xconn_set_timeout(x->ctl, -1);
	return ret;
}

int xport_ctl_error(struct xport *x, int err, const char *text)
{
	int ret;

	pthread_mutex_lock(&x->ctl_lock);
	ret = proto_send_error(x->ctl, err, text);
	pthread_mutex_unlock(&x->ctl_lock);
	return ret;
}

uint64_t xport_bytes(struct xport *x, enum xport_channel ch)
{
	if (ch == XCH_CONTROL)
		return x->ctl ? x->ctl->bytes_sent + x->ctl->bytes_recv : 0;
	return x->priv ? x->ops->bytes(x, ch) : 0;
}
