/*
 * rdma.c - the page transport over RDMA verbs (xport.h), set up with
 * librdmacm on the IP addresses of the control connection.
 *
 *   bulk    one RC queue pair: PAGES / ZERO runs and MARKs as SENDs,
 *           source -> destination, in order
 *   urgent  one RC queue pair: REQ from the destination, PAGE back
 *
 * Setup, after the handshake on control (which negotiated FEAT_RDMA):
 * the destination listens with rdma_cm on the address the control
 * connection arrived at (that picks the RDMA device behind it), on a
 * port of its choosing, and says so in RDMA_LISTEN on control with a
 * fresh nonce; the source connects both queue pairs from the address its
 * control connection left from, each connect request carrying a MAC over
 * the migration's secret, the session and that nonce (frame.c).  A
 * request that fails the check is rejected and the destination keeps
 * waiting, within its bound, for the real one.
 *
 * Page data on the queue pairs is not encrypted (docs/rdma.md).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "rdma.h"
#include "umig/log.h"
#include "umig/util.h"

static struct rdma_pages *rp(struct xport *x)
{
	return x->priv;
}

static unsigned send_timeout(const struct xport *x)
{
	return x->peer_timeout_ms ? x->peer_timeout_ms : 30000;
}

int rdma_devices_check(void)
{
	int n = 0;
	struct ibv_device **l = ibv_get_device_list(&n);

	if (l)
		ibv_free_device_list(l);
	if (n <= 0)
		return err_set(-ENODEV, "no RDMA device on this host (`umig caps` lists them): use "
			       "--transport tcp, or add one (Soft-RoCE: rdma link add rxe0 type "
			       "rxe netdev IFNAME)");
	return 0;
}

static const char *addr_str(const struct sockaddr_storage *a, char *buf, size_t len)
{
	const void *p = a->ss_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)a)->sin6_addr
						 : (const void *)&((struct sockaddr_in *)a)->sin_addr;

	if (!inet_ntop(a->ss_family, p, buf, len))
		snprintf(buf, len, "?");
	return buf;
}

static void addr_set_port(struct sockaddr_storage *a, uint16_t port)
{
	if (a->ss_family == AF_INET6)
		((struct sockaddr_in6 *)a)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)a)->sin_port = htons(port);
}

/* The next rdma_cm event within timeout_ms: 0, -ETIMEDOUT or -errno. */
static int cm_next(struct rdma_event_channel *ec, int timeout_ms, struct rdma_cm_event **ev)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000;

	for (;;) {
		struct pollfd p = { .fd = ec->fd, .events = POLLIN };
		int64_t left = (int64_t)(end - now_ns()) / 1000000;

		if (!rdma_get_cm_event(ec, ev)) {
			pr_debug("rdma: cm event %s (status %d) on id %p", rdma_event_str((*ev)->event),
				 (*ev)->status, (void *)(*ev)->id);
			return 0;
		}
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, left) < 0 && errno != EINTR)
			return -errno;
	}
}

static struct rdma_event_channel *cm_channel(void)
{
	struct rdma_event_channel *ec = rdma_create_event_channel();

	if (ec && fcntl(ec->fd, F_SETFL, fcntl(ec->fd, F_GETFL) | O_NONBLOCK) < 0) {
		rdma_destroy_event_channel(ec);
		return NULL;
	}
	return ec;
}

/* Wait for one event of type want on ec; anything else is a failure named by what. */
static int cm_expect(struct rdma_event_channel *ec, enum rdma_cm_event_type want, int timeout_ms,
		     const char *what)
{
	struct rdma_cm_event *ev;
	enum rdma_cm_event_type got;
	int status, ret = cm_next(ec, timeout_ms, &ev);

	if (ret == -ETIMEDOUT)
		return err_set(ret, "rdma: %s: no answer within %d ms", what, timeout_ms);
	if (ret < 0)
		return err_set(ret, "rdma: %s: %s", what, strerror(-ret));
	got = ev->event;
	status = ev->status;
	rdma_ack_cm_event(ev);
	if (got == want)
		return 0;
	if (got == RDMA_CM_EVENT_REJECTED)
		return err_set(-ECONNREFUSED, "rdma: %s: the destination refused the queue pair "
			       "(it failed authentication there, or nothing there expected it)", what);
	return err_set(-EHOSTUNREACH, "rdma: %s: %s (status %d)", what, rdma_event_str(got), status);
}

static void conn_param(const struct xport *x, struct rdma_cm_id *id, struct rdma_conn_param *cp,
		       const void *pd, uint8_t pdlen)
{
	uint8_t t;

	memset(cp, 0, sizeof(*cp));
	rdma_retry_params(x->peer_timeout_ms, &t, &cp->retry_count);
	cp->rnr_retry_count = RDMA_RNR_RETRY;
	cp->private_data = pd;
	cp->private_data_len = pdlen;
	cp->responder_resources = cp->initiator_depth = 1;
	/* one-sided: the destination keeps READs in flight, the source answers them */
	if (x->features & FEAT_RDMA_READ)
		cp->responder_resources = cp->initiator_depth = rdma_rd_atom(id->verbs);
}

static void set_ack_timeout(const struct xport *x, struct rdma_cm_id *id)
{
	uint8_t t, retries;

	rdma_retry_params(x->peer_timeout_ms, &t, &retries);
	if (rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &t, sizeof(t)))
		pr_debug("rdma: cannot set the ACK timeout: %s", strerror(errno));
}

/* --- source ----------------------------------------------------------------- */

static int ep_connect(struct xport *x, enum xport_channel ch, struct sockaddr_storage *src,
		      struct sockaddr_storage *dst, const uint8_t *nonce, int timeout_ms)
{
	struct rdma_ep *e = &rp(x)->ep[ch];
	uint8_t auth[RDMA_AUTH_LEN];
	struct rdma_conn_param cp;
	char a[64], b[64];
	int ret;

	e->ec = cm_channel();
	if (!e->ec || rdma_create_id(e->ec, &e->id, NULL, RDMA_PS_TCP))
		return err_set(-errno, "rdma: cannot create an rdma_cm id: %s", strerror(errno));
	addr_str(src, a, sizeof(a));
	addr_str(dst, b, sizeof(b));
	if (rdma_resolve_addr(e->id, (struct sockaddr *)src, (struct sockaddr *)dst, timeout_ms))
		return err_set(-errno, "rdma: no RDMA device behind %s (%s): `umig caps` lists the "
			       "devices, or use --transport tcp", a, strerror(errno));
	ret = cm_expect(e->ec, RDMA_CM_EVENT_ADDR_RESOLVED, timeout_ms, "resolving the address");
	if (!ret && !e->id->verbs)
		ret = -ENODEV;
	if (ret < 0)
		return err_set(-ENODEV, "rdma: no RDMA device behind %s reaches %s: `umig caps` lists "
			       "the devices, or use --transport tcp (%s)", a, b, err_msg(ret));
	set_ack_timeout(x, e->id);
	if (rdma_resolve_route(e->id, timeout_ms))
		return err_set(-errno, "rdma: no route from %s to %s: %s", a, b, strerror(errno));
	ret = cm_expect(e->ec, RDMA_CM_EVENT_ROUTE_RESOLVED, timeout_ms, "resolving the route");
	e->share = &rp(x)->pds;
	if (!ret)
		ret = rdma_ep_setup(e, e->id, ch, true, x->npages, x->busy_poll, send_timeout(x));
	if (!ret)
		ret = rdma_auth_make(x->secret, x->session, nonce, ch, auth);
	if (ret < 0)
		return ret;
	conn_param(x, e->id, &cp, auth, sizeof(auth));
	if (rdma_connect(e->id, &cp))
		return err_set(-errno, "rdma: cannot connect to %s: %s", b, strerror(errno));
	ret = cm_expect(e->ec, RDMA_CM_EVENT_ESTABLISHED, timeout_ms, "connecting the queue pair");
	if (!ret)
		ret = rdma_ep_start(e);
	if (!ret)
		pr_debug("migration: rdma %s channel %s -> %s on %s", xport_channel_name(ch), a, b,
			 ibv_get_device_name(e->id->verbs->device));
	return ret;
}

static int rdma_pages_new(struct xport *x)
{
	struct rdma_pages *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	for (int i = 0; i < XCH_COUNT; i++)
		p->ep[i].qfd = p->ep[i].stop_efd = -1;
	x->priv = p;
	if (!x->secret)
		return err_set(-EPROTO, "rdma: the peers share no secret to authenticate the queue "
			       "pairs with (a umig without post-copy recovery)");
	return rdma_devices_check();
}

/* The control connection's two addresses: RDMA runs between the same ones. */
static int ctl_addrs(struct xport *x, struct sockaddr_storage *local, struct sockaddr_storage *peer)
{
	socklen_t l = sizeof(*local), p = sizeof(*peer);
	int fd = xconn_fd(x->ctl);

	if (getsockname(fd, (struct sockaddr *)local, &l) < 0 ||
	    (peer && getpeername(fd, (struct sockaddr *)peer, &p) < 0))
		return err_set(-errno, "rdma: the control connection's addresses: %s", strerror(errno));
	addr_set_port(local, 0);
	return 0;
}

static int rdma_connect_data(struct xport *x, const char *host, uint16_t port, int timeout_ms)
{
	struct sockaddr_storage src, dst;
	uint8_t nonce[PROTO_NONCE_LEN];
	struct proto_msg m = { 0 };
	char text[1100];
	uint16_t lport;
	int ret = rdma_pages_new(x);

	if (!ret)
		ret = xport_ctl_recv(x, &m, timeout_ms);
	if (ret == -ETIMEDOUT)
		ret = err_set(ret, "rdma: the destination named no RDMA port within %d ms", timeout_ms);
	if (!ret && m.type == MSG_ERROR) {
		proto_error_text(&m, text, sizeof(text));
		ret = err_set(-ECONNREFUSED, "the destination cannot take RDMA: %s", text);
	} else if (!ret) {
		ret = rdma_listen_get(&m, &lport, nonce);
	}
	proto_msg_free(&m);
	if (!ret)
		ret = ctl_addrs(x, &src, &dst);
	if (ret < 0)
		return ret;
	addr_set_port(&dst, lport);
	for (int ch = XCH_BULK; !ret && ch < XCH_COUNT; ch++)
		ret = ep_connect(x, ch, &src, &dst, nonce, timeout_ms);
	return ret < 0 ? ret : rdma_ram_expose(x, timeout_ms);
}

/* --- destination -------------------------------------------------------------- */

struct listener {
	struct rdma_event_channel *ec;
	struct rdma_cm_id *id;
	uint8_t nonce[PROTO_NONCE_LEN];
	bool up[XCH_COUNT];
};

static int listen_open(struct xport *x, struct listener *l)
{
	struct sockaddr_storage local;
	uint8_t b[RDMA_LISTEN_LEN];
	char a[64];
	int ret = ctl_addrs(x, &local, NULL);

	if (ret < 0)
		return ret;
	addr_str(&local, a, sizeof(a));
	l->ec = cm_channel();
	if (!l->ec || rdma_create_id(l->ec, &l->id, NULL, RDMA_PS_TCP))
		return err_set(-errno, "rdma: cannot create an rdma_cm id: %s", strerror(errno));
	if (rdma_bind_addr(l->id, (struct sockaddr *)&local) || !l->id->verbs)
		return err_set(-ENODEV, "rdma: no RDMA device behind %s, where the migration arrived: "
			       "`umig caps` lists the devices, or use --transport tcp", a);
	if (rdma_listen(l->id, 4))
		return err_set(-errno, "rdma: cannot listen on %s: %s", a, strerror(errno));
	if (gnutls_rnd(GNUTLS_RND_NONCE, l->nonce, sizeof(l->nonce)) < 0)
		return err_set(-EIO, "rdma: cannot draw a nonce");
	rdma_listen_put(b, ntohs(rdma_get_src_port(l->id)), l->nonce);
	pr_debug("incoming: rdma listening on %s port %u (%s)", a, ntohs(rdma_get_src_port(l->id)),
		 ibv_get_device_name(l->id->verbs->device));
	return xport_ctl_send(x, MSG_RDMA_LISTEN, b, sizeof(b));
}

static void listen_close(struct listener *l)
{
	if (l->id)
		rdma_destroy_id(l->id);
	if (l->ec)
		rdma_destroy_event_channel(l->ec);
}

/* A connect request: accepted if it proves the secret, else rejected. */
static int on_request(struct xport *x, struct listener *l, struct rdma_cm_event *ev)
{
	struct rdma_cm_id *id = ev->id;
	struct rdma_conn_param cp;
	enum xport_channel ch;
	struct rdma_ep *e;
	int ret = rdma_auth_check(x->secret, x->session, l->nonce, ev->param.conn.private_data,
				  ev->param.conn.private_data_len, &ch);

	if (!ret && rp(x)->ep[ch].id)
		ret = err_set(-EPROTO, "rdma: a second %s queue pair", xport_channel_name(ch));
	if (ret < 0) {
		pr_warn("incoming: refused an RDMA connection: %s", err_msg(ret));
		rdma_reject(id, NULL, 0);
		return 1;   /* rejected: destroy the id once the event is acked */
	}
	e = &rp(x)->ep[ch];
	rdma_pull_prepare(x, e, ch);
	e->share = &rp(x)->pds;
	ret = rdma_ep_setup(e, id, ch, false, x->npages, x->busy_poll, send_timeout(x));
	if (!ret) {
		set_ack_timeout(x, id);
		conn_param(x, id, &cp, NULL, 0);
		if (rdma_accept(id, &cp))
			ret = err_set(-errno, "rdma: cannot accept a queue pair: %s", strerror(errno));
	}
	return ret;
}

/* ESTABLISHED: move the endpoint to a channel of its own and start it. */
static int on_established(struct xport *x, struct listener *l, struct rdma_cm_id *id)
{
	for (int ch = XCH_BULK; ch < XCH_COUNT; ch++) {
		struct rdma_ep *e = &rp(x)->ep[ch];

		if (e->id != id || l->up[ch])
			continue;
		e->ec = cm_channel();
		if (!e->ec || rdma_migrate_id(id, e->ec))
			return err_set(-errno, "rdma: cannot move a queue pair's events: %s", strerror(errno));
		l->up[ch] = true;
		return rdma_ep_start(e);
	}
	return 0;
}

static int listen_step(struct xport *x, struct listener *l, int timeout_ms)
{
	struct rdma_cm_event *ev;
	struct rdma_cm_id *id, *drop = NULL;
	enum rdma_cm_event_type type;
	int ret = cm_next(l->ec, timeout_ms, &ev);

	if (ret == -ETIMEDOUT)
		return err_set(ret, "rdma: no authenticated queue pairs from the source within %d ms",
			       timeout_ms);
	if (ret < 0)
		return err_set(ret, "rdma: waiting for the source's queue pairs: %s", strerror(-ret));
	id = ev->id;
	type = ev->event;
	switch (type) {
	case RDMA_CM_EVENT_CONNECT_REQUEST:
		ret = on_request(x, l, ev);
		if (ret == 1) {
			drop = id;
			ret = 0;
		}
		break;
	case RDMA_CM_EVENT_ESTABLISHED:
		break;
	case RDMA_CM_EVENT_DISCONNECTED:
	case RDMA_CM_EVENT_REJECTED:
	case RDMA_CM_EVENT_CONNECT_ERROR:
	case RDMA_CM_EVENT_UNREACHABLE:
		ret = err_set(-EPIPE, "rdma: a queue pair from the source failed: %s",
			      rdma_event_str(ev->event));
		break;
	default:
		break;
	}
	rdma_ack_cm_event(ev);
	if (drop)
		rdma_destroy_id(drop);
	if (!ret && type == RDMA_CM_EVENT_ESTABLISHED)
		ret = on_established(x, l, id);
	return ret;
}

static int rdma_accept_data(struct xport *x, int listen_fd, int timeout_ms)
{
	struct listener l = { 0 };
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000;
	int ret = rdma_pages_new(x);

	if (!ret)
		ret = listen_open(x, &l);
	if (ret < 0) {
		/* the source waits for RDMA_LISTEN: tell it why there is none */
		xport_ctl_error(x, ret, err_msg(ret));
		listen_close(&l);
		return ret;
	}
	while (!ret && !(l.up[XCH_BULK] && l.up[XCH_URGENT])) {
		int64_t left = (int64_t)(end - now_ns()) / 1000000;

		ret = listen_step(x, &l, left > 0 ? (int)left : 0);
	}
	if (!ret) {
		int64_t left = (int64_t)(end - now_ns()) / 1000000;

		ret = rdma_ram_learn(x, left > 0 ? (int)left : 1);
	}
	/* ids whose events still go to the listener's channel go before it */
	for (int ch = XCH_BULK; ret < 0 && ch < XCH_COUNT; ch++)
		if (!l.up[ch])
			rdma_ep_destroy(&rp(x)->ep[ch]);
	listen_close(&l);
	return ret;
}

/* --- the page operations --------------------------------------------------- */

static int rdma_push(struct xport *x, const struct xrun *r)
{
	struct rdma_ep *e = &rp(x)->ep[XCH_BULK];
	int ret = 0;

	if (r->enc == XENC_ZERO) {
		struct rdma_hdr h = { .type = MSG_ZERO, .pfn = r->pfn, .n = r->n };

		return rdma_ep_send(e, &h, NULL, 0);
	}
	if (r->enc != XENC_RAW || r->len != r->n * PAGE_SIZE)
		return err_set(-EINVAL, "rdma: cannot push run %llu+%u (encoding %u, %u bytes)",
			       (unsigned long long)r->pfn, r->n, r->enc, r->len);
	for (uint32_t i = 0; !ret && i < r->n; i += RDMA_BULK_PAGES) {
		struct rdma_hdr h = { .type = MSG_PAGES, .pfn = r->pfn + i,
				      .n = MIN(r->n - i, (uint32_t)RDMA_BULK_PAGES) };

		ret = rdma_ep_send(e, &h, r->data + (size_t)i * PAGE_SIZE, h.n * PAGE_SIZE);
	}
	return ret;
}

static int rdma_mark(struct xport *x, uint32_t mark, uint32_t round)
{
	struct rdma_hdr h = { .type = MSG_MARK, .n = mark, .aux = round };

	return rdma_ep_send(&rp(x)->ep[XCH_BULK], &h, NULL, 0);
}

static int rdma_reply(struct xport *x, const struct xrun *r)
{
	bool zero = r->enc == XENC_ZERO;
	struct rdma_hdr h = { .type = MSG_PAGE, .pfn = r->pfn, .n = 1,
			      .flags = zero ? PAGE_FLAG_ZERO : 0 };

	if (r->n != 1 || (!zero && (r->enc != XENC_RAW || r->len != PAGE_SIZE)))
		return err_set(-EINVAL, "rdma: an urgent reply is one page");
	return rdma_ep_send(&rp(x)->ep[XCH_URGENT], &h, zero ? NULL : r->data, zero ? 0 : PAGE_SIZE);
}

/* A posted send is the NIC's: its data was copied into a registered slot. */
static int rdma_flush(struct xport *x)
{
	return 0;
}

static int rdma_fetch(struct xport *x, uint64_t pfn)
{
	if (x->caps & XCAP_ONESIDED)
		return rdma_pull_fetch(x, pfn);
	struct rdma_hdr h = { .type = MSG_REQ, .pfn = pfn, .n = 1 };

	return rdma_ep_send(&rp(x)->ep[XCH_URGENT], &h, NULL, 0);
}

static int rdma_reap(struct xport *x, enum xq q, struct xev *ev, int timeout_ms)
{
	if ((x->caps & XCAP_ONESIDED) && !x->source && q == XQ_BULK)
		return rdma_pull_reap(x, ev, timeout_ms);
	return rdma_ep_reap(&rp(x)->ep[q == XQ_BULK ? XCH_BULK : XCH_URGENT], ev, timeout_ms);
}

static int rdma_queue_fd(struct xport *x, enum xq q)
{
	return rp(x)->ep[q == XQ_BULK ? XCH_BULK : XCH_URGENT].qfd;
}

static uint64_t rdma_bytes(struct xport *x, enum xport_channel ch)
{
	struct rdma_ep *e = &rp(x)->ep[ch];
	uint64_t b;

	if (!e->slot)
		return 0;
	pthread_mutex_lock(&e->mu);
	b = e->bytes;
	pthread_mutex_unlock(&e->mu);
	return b;
}

static void rdma_shutdown(struct xport *x)
{
	for (int ch = XCH_BULK; ch < XCH_COUNT; ch++)
		if (rp(x)->ep[ch].slot)
			rdma_ep_shutdown(&rp(x)->ep[ch]);
}

static void rdma_close(struct xport *x)
{
	if (x->priv)
		rdma_pull_stop(x);
	for (int ch = XCH_BULK; ch < XCH_COUNT; ch++)
		rdma_ep_destroy(&rp(x)->ep[ch]);
	free(x->priv);
	x->priv = NULL;
}

const struct xport_ops xport_rdma_ops = {
	.name = "rdma",
	.caps = XCAP_STREAM,
	.feature = FEAT_RDMA,
	.optional = FEAT_RDMA_READ | FEAT_RDMA_MR_ACK,
	.connect_data = rdma_connect_data,
	.accept_data = rdma_accept_data,
	.push = rdma_push,
	.mark = rdma_mark,
	.reply = rdma_reply,
	.flush = rdma_flush,
	.fetch = rdma_fetch,
	.pull = rdma_pull_start,
	.reap = rdma_reap,
	.queue_fd = rdma_queue_fd,
	.bytes = rdma_bytes,
	.shutdown = rdma_shutdown,
	.close = rdma_close,
};
