/*
 * tcp.c - the page transport over TCP (xport.h): version 1's frames on
 * two more connections beside control.
 *
 *   bulk    source -> destination: PAGES / ZERO runs and MARKs, in order;
 *           sends batched through io_uring (uring.c)
 *   urgent  destination -> source REQ, source -> destination PAGE
 *
 * Each connection's frames are decoded here and every field is checked
 * (a run must lie inside guest RAM, a frame must belong to its channel
 * and direction) before the engine sees a completion, so the engine
 * never handles raw bytes from the peer.  A completion's data points into
 * the frame buffer of its queue and stays valid until the next reap.
 */
#include <errno.h>
#include <linux/tcp.h>	/* struct tcp_info with tcpi_bytes_acked (glibc's lacks it) */
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tcp.h"
#include "umig/log.h"
#include "umig/util.h"
#include "umig/xport.h"

struct tcp_pages {
	struct xconn *c[XCH_COUNT];      /* bulk and urgent; [XCH_CONTROL] unused */
	struct proto_msg m[XQ_COUNT];    /* the frame each queue reaped last */
};

static struct tcp_pages *tp(struct xport *x)
{
	return x->priv;
}

static int tcp_pages_new(struct xport *x)
{
	x->priv = calloc(1, sizeof(struct tcp_pages));
	return x->priv ? 0 : -ENOMEM;
}

static int tcp_connect_data(struct xport *x, const char *host, uint16_t port, int timeout_ms)
{
	int ret = tcp_pages_new(x);

	for (int ch = XCH_BULK; !ret && ch < XCH_COUNT; ch++) {
		ret = xconn_tcp_connect(&tp(x)->c[ch], host, port, ch, timeout_ms);
		if (!ret && x->peer_timeout_ms)
			xconn_tcp_set_user_timeout(tp(x)->c[ch], x->peer_timeout_ms);
		if (!ret && x->sec)
			ret = xconn_tls_start(tp(x)->c[ch], x->sec, host, timeout_ms);
		if (!ret)
			ret = proto_send_greeting(tp(x)->c[ch], x->session);
		if (!ret)
			ret = xport_bind_send(x, tp(x)->c[ch]);
		/* TLS bulk gathers records while the socket is busy: BIND must leave now */
		if (!ret)
			ret = xconn_flush(tp(x)->c[ch]);
		if (!ret)
			tp(x)->c[ch]->digest = x->features & FEAT_DIGEST;
	}
	return ret;
}

/*
 * The bulk and urgent connections of this session, in whichever order
 * they arrive (connections opened one after the other can still be
 * accepted the other way round, through a proxy for one), all within
 * timeout_ms; other connections are dropped on the way (xport.c).
 */
static int tcp_accept_data(struct xport *x, int listen_fd, int timeout_ms)
{
	struct xconn *c[XCH_COUNT];
	uint64_t session;
	int ret = tcp_pages_new(x);

	if (!ret && x->sec && !(x->features & FEAT_TLS))
		ret = err_set(-EPROTO, "the source did not negotiate TLS channel binding");
	if (!ret)
		ret = xport_accept_conns(c, XCH_COUNT - 1, listen_fd, x, x->sec, timeout_ms, &session);
	for (int ch = XCH_BULK; !ret && ch < XCH_COUNT; ch++) {
		tp(x)->c[ch] = c[ch];
		c[ch]->digest = x->features & FEAT_DIGEST;
		xconn_tcp_set_channel(c[ch], ch);
		if (x->peer_timeout_ms)
			xconn_tcp_set_user_timeout(c[ch], x->peer_timeout_ms);
	}
	return ret;
}

static void run_header(uint8_t h[16], uint64_t pfn, uint32_t n_or_flags)
{
	struct wbuf w = { .data = h, .cap = 16 };

	wbuf_put_u64(&w, pfn);
	wbuf_put_u32(&w, n_or_flags);
	wbuf_put_u32(&w, 0);
}

/* An encoded run (PAGES_Z, DELTA): only once its feature was negotiated. */
static int tcp_push_encoded(struct xport *x, const struct xrun *r, uint8_t h[16])
{
	struct xconn *c = tp(x)->c[XCH_BULK];
	struct wbuf w = { .data = h, .cap = 16 };
	bool delta = r->enc == XENC_DELTA;
	uint64_t feat = delta ? FEAT_DELTA : FEAT_COMPRESS;

	if (!(x->features & feat) || r->n > PROTO_RUN_MAX || (delta && r->n != 1) ||
	    !r->len || r->len >= (uint64_t)r->n * PAGE_SIZE)
		return err_set(-EINVAL, "tcp: cannot push run %llu+%u (encoding %u, %u bytes%s)",
			       (unsigned long long)r->pfn, r->n, r->enc, r->len,
			       x->features & feat ? "" : ", not negotiated");
	wbuf_put_u64(&w, r->pfn);
	wbuf_put_u32(&w, r->n);
	wbuf_put_u32(&w, delta ? 0 : r->enc == XENC_LZ4 ? 1 : 2);
	return proto_send2(c, delta ? MSG_DELTA : MSG_PAGES_Z, h, 16, r->data, r->len);
}

static int tcp_push(struct xport *x, const struct xrun *r)
{
	struct xconn *c = tp(x)->c[XCH_BULK];
	uint8_t h[16];

	run_header(h, r->pfn, r->n);
	if (r->enc == XENC_ZERO)
		return proto_send(c, MSG_ZERO, h, 16);
	if (r->enc == XENC_LZ4 || r->enc == XENC_ZSTD || r->enc == XENC_DELTA)
		return tcp_push_encoded(x, r, h);
	if (r->enc != XENC_RAW || r->n > PROTO_RUN_MAX || r->len != r->n * PAGE_SIZE)
		return err_set(-EINVAL, "tcp: cannot push run %llu+%u (encoding %u, %u bytes)",
			       (unsigned long long)r->pfn, r->n, r->enc, r->len);
	return proto_send2(c, MSG_PAGES, h, 16, r->data, r->len);
}

static int tcp_mark(struct xport *x, uint32_t mark, uint32_t round)
{
	uint8_t b[8];
	struct wbuf w = { .data = b, .cap = 8 };

	wbuf_put_u32(&w, mark);
	wbuf_put_u32(&w, round);
	return proto_send(tp(x)->c[XCH_BULK], MSG_MARK, b, 8);
}

static int tcp_reply(struct xport *x, const struct xrun *r)
{
	bool zero = r->enc == XENC_ZERO;
	uint8_t h[16];

	if (r->n != 1 || (!zero && (r->enc != XENC_RAW || r->len != PAGE_SIZE)))
		return err_set(-EINVAL, "tcp: an urgent reply is one page");
	run_header(h, r->pfn, zero ? PAGE_FLAG_ZERO : 0);
	return proto_send2(tp(x)->c[XCH_URGENT], MSG_PAGE, h, 16, zero ? NULL : r->data,
			   zero ? 0 : PAGE_SIZE);
}

static int tcp_flush(struct xport *x)
{
	return xconn_flush(tp(x)->c[XCH_BULK]);
}

static int tcp_fetch(struct xport *x, uint64_t pfn)
{
	uint8_t b[8];
	struct wbuf w = { .data = b, .cap = 8 };

	wbuf_put_u64(&w, pfn);
	return proto_send(tp(x)->c[XCH_URGENT], MSG_REQ, b, 8);
}

/*
 * PAGES_Z / DELTA: only on a session that negotiated them; the codec
 * field must name lz4 or zstd.  The payload itself is checked by its
 * decoder (codec_decode, delta_decode) in the engine, before any page is
 * placed.
 */
static int tcp_decode_encoded(struct xport *x, const struct proto_msg *m, struct xev *ev)
{
	bool delta = m->type == MSG_DELTA;
	const char *name = delta ? "DELTA" : "PAGES_Z";
	struct proto_run run;
	uint32_t codec;
	int ret;

	if (!(x->features & (delta ? FEAT_DELTA : FEAT_COMPRESS)))
		return err_set(-EPROTO, "bulk channel: %s on a session that did not negotiate it",
			       name);
	ret = proto_decode_run(m, x->npages, &run);
	if (ret < 0)
		return err_set(ret, "bulk channel: %s", err_msg(ret));
	codec = m->payload[12] | m->payload[13] << 8 | m->payload[14] << 16 |
		(uint32_t)m->payload[15] << 24;
	if (delta ? codec != 0 : codec != 1 && codec != 2)
		return err_set(-EPROTO, "bulk channel: %s for run %llu+%u names codec %u", name,
			       (unsigned long long)run.pfn, run.n, codec);
	ev->kind = XEV_RUN;
	ev->run.pfn = run.pfn;
	ev->run.n = run.n;
	ev->run.enc = delta ? XENC_DELTA : codec == 1 ? XENC_LZ4 : XENC_ZSTD;
	ev->run.data = m->payload + 16;
	ev->run.len = m->len - 16;
	return 1;
}

/* Bulk: runs and marks, source -> destination. */
int tcp_decode_bulk(struct xport *x, const struct proto_msg *m, struct xev *ev)
{
	struct proto_run run;
	struct rbuf r;
	int ret;

	switch (m->type) {
	case MSG_PAGES_Z:
	case MSG_DELTA:
		return tcp_decode_encoded(x, m, ev);
	case MSG_PAGES:
	case MSG_ZERO:
		ret = proto_decode_run(m, x->npages, &run);
		if (ret < 0)
			return err_set(ret, "bulk channel: %s (type %u): %s", proto_type_name(m->type),
				       m->type, err_msg(ret));
		ev->kind = XEV_RUN;
		ev->run.pfn = run.pfn;
		ev->run.n = run.n;
		ev->run.enc = m->type == MSG_PAGES ? XENC_RAW : XENC_ZERO;
		ev->run.data = m->type == MSG_PAGES ? m->payload + 16 : NULL;
		ev->run.len = m->type == MSG_PAGES ? m->len - 16 : 0;
		return 1;
	case MSG_MARK:
		rbuf_init(&r, m->payload, m->len);
		ev->kind = XEV_MARK;
		ev->mark = rbuf_get_u32(&r);
		ev->round = rbuf_get_u32(&r);
		return 1;
	default:
		return err_set(-EPROTO, "bulk channel: unexpected %s (type %u)",
			       proto_type_name(m->type), m->type);
	}
}

/* Urgent: REQ to the source, PAGE to the destination. */
int tcp_decode_urgent(struct xport *x, const struct proto_msg *m, struct xev *ev)
{
	uint16_t want = x->source ? MSG_REQ : MSG_PAGE;
	struct rbuf r;
	uint64_t pfn;
	uint32_t flags;

	if (m->type != want)
		return err_set(-EPROTO, "urgent channel: unexpected %s (type %u)",
			       proto_type_name(m->type), m->type);
	rbuf_init(&r, m->payload, m->len);
	pfn = rbuf_get_u64(&r);
	if (pfn >= x->npages)
		return err_set(-EPROTO, "urgent channel: %s: page %llu lies outside guest RAM (%llu pages)",
			       proto_type_name(m->type), (unsigned long long)pfn,
			       (unsigned long long)x->npages);
	ev->run = (struct xrun){ .pfn = pfn, .n = 1 };
	if (x->source) {
		ev->kind = XEV_REQ;
		return 1;
	}
	flags = rbuf_get_u32(&r);
	if (flags & ~PAGE_FLAG_ZERO || ((flags & PAGE_FLAG_ZERO) != 0) != (m->len == 16))
		return err_set(-EPROTO, "urgent channel: PAGE: bad flags for page %llu (flags %#x, %u bytes)",
			       (unsigned long long)pfn, flags, m->len);
	ev->kind = XEV_RUN;
	ev->run.enc = flags & PAGE_FLAG_ZERO ? XENC_ZERO : XENC_RAW;
	ev->run.data = flags & PAGE_FLAG_ZERO ? NULL : m->payload + 16;
	ev->run.len = flags & PAGE_FLAG_ZERO ? 0 : PAGE_SIZE;
	return 1;
}

static int tcp_reap(struct xport *x, enum xq q, struct xev *ev, int timeout_ms)
{
	struct xconn *c = tp(x)->c[q == XQ_BULK ? XCH_BULK : XCH_URGENT];
	struct proto_msg *m = &tp(x)->m[q];
	int ret;

	xconn_set_timeout(c, timeout_ms);
	ret = proto_recv(c, m);
	xconn_set_timeout(c, -1);
	if (ret == -ETIMEDOUT)
		return 0;
	if (ret < 0)
		return ret;
	memset(ev, 0, sizeof(*ev));
	return q == XQ_BULK ? tcp_decode_bulk(x, m, ev) : tcp_decode_urgent(x, m, ev);
}

static int tcp_queue_fd(struct xport *x, enum xq q)
{
	return xconn_fd(tp(x)->c[q == XQ_BULK ? XCH_BULK : XCH_URGENT]);
}

static bool tcp_pending(struct xport *x, enum xq q)
{
	return xconn_pending(tp(x)->c[q == XQ_BULK ? XCH_BULK : XCH_URGENT]);
}

static uint64_t tcp_bytes(struct xport *x, enum xport_channel ch)
{
	struct xconn *c = tp(x)->c[ch];

	return c ? c->bytes_sent + c->bytes_recv : 0;
}

/*
 * What the bulk connection has queued and what the peer acknowledged.
 * bytes_sent counts what was handed to the connection (some may still
 * wait in io_uring's batch); the kernel's tcpi_bytes_acked counts the
 * same stream's bytes from its first, the greeting, so the two compare.
 * rate must be given with acked.
 */
static int tcp_bulk_inflight(struct xport *x, uint64_t *queued, uint64_t *acked, uint64_t *rate)
{
	struct xconn *c = tp(x) ? tp(x)->c[XCH_BULK] : NULL;
	struct tcp_info ti = { 0 };
	socklen_t len = sizeof(ti);

	if (!c)
		return -ENOTCONN;
	if (queued)	/* the pushing thread's own counter: only it asks for it */
		*queued = c->bytes_sent;
	if (!acked)
		return 0;
	/* takes the socket's lock: never on the pushing thread's every run */
	if (getsockopt(xconn_fd(c), IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -errno;
	if (len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
		return -EOPNOTSUPP;
	*acked = ti.tcpi_bytes_acked;
	/* the kernel's delivery rate estimate (Linux 4.18); 0 in an older struct */
	*rate = len >= offsetof(struct tcp_info, tcpi_delivery_rate) + sizeof(ti.tcpi_delivery_rate) ?
		ti.tcpi_delivery_rate : 0;
	return 0;
}

static void tcp_shutdown(struct xport *x)
{
	for (int ch = XCH_BULK; ch < XCH_COUNT; ch++)
		xconn_shutdown(tp(x)->c[ch]);
}

static void tcp_close(struct xport *x)
{
	for (int ch = XCH_BULK; ch < XCH_COUNT; ch++)
		xconn_close(tp(x)->c[ch]);
	for (int q = 0; q < XQ_COUNT; q++)
		proto_msg_free(&tp(x)->m[q]);
	free(x->priv);
	x->priv = NULL;
}

const struct xport_ops xport_tcp_ops = {
	.name = "tcp",
	.caps = XCAP_STREAM,
	.connect_data = tcp_connect_data,
	.accept_data = tcp_accept_data,
	.push = tcp_push,
	.mark = tcp_mark,
	.reply = tcp_reply,
	.flush = tcp_flush,
	.fetch = tcp_fetch,
	.reap = tcp_reap,
	.queue_fd = tcp_queue_fd,
	.bulk_inflight = tcp_bulk_inflight,
	.pending = tcp_pending,
	.bytes = tcp_bytes,
	.shutdown = tcp_shutdown,
	.close = tcp_close,
};
