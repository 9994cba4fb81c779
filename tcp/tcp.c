/*
 * tcp.c - the page transport over TCP (xport.h): version 1's frames on
 * two more connections beside control.
 *
 *   bulk    source -> destination: PAGES / ZERO runs and MARKs, in order;
 *           sends batched through io_uring (uring.c)
 *   urgent  destination -> source REQ, source -> destination PAGE
 *
 * With FEAT_STREAMS the bulk channel is x->streams connections (bulk[],
 * bulk[0] = c[XCH_BULK]): runs go to one stream after the other, the next
 * once STREAM_SPAN bytes went to one (a run stays whole), and a mark goes
 * on every stream.
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

/* Bytes pushed on one bulk stream before the next takes over. */
#define STREAM_SPAN (128u << 10)

struct tcp_pages {
	struct xconn *c[XCH_COUNT];      /* bulk and urgent; [XCH_CONTROL] unused */
	struct xconn *bulk[XSTREAMS_MAX]; /* the bulk streams; [0] is c[XCH_BULK] */
	unsigned nbulk;
	unsigned cur;                    /* source: the stream pushes go to now */
	uint64_t span_end;               /* ... until its bytes_sent reaches this */
	struct proto_msg m[XQ_MAX];      /* the frame each queue reaped last */
};

static struct tcp_pages *tp(struct xport *x)
{
	return x->priv;
}

static int tcp_pages_new(struct xport *x)
{
	struct tcp_pages *t = calloc(1, sizeof(struct tcp_pages));

	if (!t)
		return -ENOMEM;
	t->nbulk = x->streams >= 1 && x->streams <= XSTREAMS_MAX ? x->streams : 1;
	t->span_end = STREAM_SPAN;
	x->priv = t;
	return 0;
}

/* The connection of queue q: XQ_URGENT, or bulk stream 0, 1, ... */
static struct xconn *tcp_queue_conn(struct xport *x, enum xq q)
{
	if (q == XQ_URGENT)
		return tp(x)->c[XCH_URGENT];
	return tp(x)->bulk[q == XQ_BULK ? 0 : q - XQ_COUNT + 1];
}

static int tcp_connect_one(struct xport *x, struct xconn **c, enum xport_channel ch,
			   const char *host, uint16_t port, int timeout_ms)
{
	int ret = xconn_tcp_connect(c, host, port, ch, timeout_ms);

	if (!ret && x->peer_timeout_ms)
		xconn_tcp_set_user_timeout(*c, x->peer_timeout_ms);
	if (!ret && x->sec)
		ret = xconn_tls_start(*c, x->sec, host, timeout_ms);
	if (!ret)
		ret = proto_send_greeting(*c, x->session);
	if (!ret)
		ret = xport_bind_send(x, *c);
	/* TLS bulk gathers records while the socket is busy: BIND must leave now */
	if (!ret)
		ret = xconn_flush(*c);
	if (!ret)
		(*c)->digest = x->features & FEAT_DIGEST;
	return ret;
}

/* Bulk, urgent, then the further bulk streams. */
static int tcp_connect_data(struct xport *x, const char *host, uint16_t port, int timeout_ms)
{
	int ret = tcp_pages_new(x);

	for (int ch = XCH_BULK; !ret && ch < XCH_COUNT; ch++)
		ret = tcp_connect_one(x, &tp(x)->c[ch], ch, host, port, timeout_ms);
	if (!ret)
		tp(x)->bulk[0] = tp(x)->c[XCH_BULK];
	for (unsigned i = 1; !ret && i < tp(x)->nbulk; i++)
		ret = tcp_connect_one(x, &tp(x)->bulk[i], XCH_BULK, host, port, timeout_ms);
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
	struct xconn *c[XCONN_SLOTS];
	uint64_t session;
	int ret = tcp_pages_new(x);
	unsigned n = ret ? 0 : tp(x)->nbulk;

	if (!ret && x->sec && !(x->features & FEAT_TLS))
		ret = err_set(-EPROTO, "the source did not negotiate TLS channel binding");
	if (!ret)
		ret = xport_accept_conns(c, XCH_COUNT - 1 + n - 1, listen_fd, x, x->sec, timeout_ms,
					 &session);
	for (int ch = XCH_BULK; !ret && ch < XCH_COUNT; ch++)
		tp(x)->c[ch] = c[ch];
	for (unsigned i = 0; !ret && i < n; i++)
		tp(x)->bulk[i] = i ? c[XCH_COUNT + i - 1] : c[XCH_BULK];
	for (unsigned i = 0; !ret && i < n + 1; i++) {
		struct xconn *k = i < n ? tp(x)->bulk[i] : c[XCH_URGENT];

		k->digest = x->features & FEAT_DIGEST;
		xconn_tcp_set_channel(k, i < n ? XCH_BULK : XCH_URGENT);
		if (x->peer_timeout_ms)
			xconn_tcp_set_user_timeout(k, x->peer_timeout_ms);
	}
	return ret;
}

/*
 * The stream the next push goes to: the current one until STREAM_SPAN
 * bytes went to it, then the next (whose batch the one before leaves
 * queued in io_uring until it fills or is flushed).
 */
static struct xconn *tcp_push_conn(struct xport *x)
{
	struct tcp_pages *t = tp(x);

	if (t->nbulk > 1 && t->bulk[t->cur]->bytes_sent >= t->span_end) {
		t->cur = (t->cur + 1) % t->nbulk;
		t->span_end = t->bulk[t->cur]->bytes_sent + STREAM_SPAN;
	}
	return t->bulk[t->cur];
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
	struct xconn *c = tcp_push_conn(x);
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
	struct xconn *c;
	uint8_t h[16];

	run_header(h, r->pfn, r->n);
	if (r->enc == XENC_LZ4 || r->enc == XENC_ZSTD || r->enc == XENC_DELTA)
		return tcp_push_encoded(x, r, h);
	c = tcp_push_conn(x);
	if (r->enc == XENC_ZERO)
		return proto_send(c, MSG_ZERO, h, 16);
	if (r->enc != XENC_RAW || r->n > PROTO_RUN_MAX || r->len != r->n * PAGE_SIZE)
		return err_set(-EINVAL, "tcp: cannot push run %llu+%u (encoding %u, %u bytes)",
			       (unsigned long long)r->pfn, r->n, r->enc, r->len);
	return proto_send2(c, MSG_PAGES, h, 16, r->data, r->len);
}

static int tcp_mark(struct xport *x, uint32_t mark, uint32_t round)
{
	uint8_t b[8];
	struct wbuf w = { .data = b, .cap = 8 };

	int ret = 0;

	wbuf_put_u32(&w, mark);
	wbuf_put_u32(&w, round);
	if (tp(x)->nbulk == 1)
		return proto_send(tp(x)->bulk[0], MSG_MARK, b, 8);
	/*
	 * On every stream, each flushed: a destination stream waiting at this
	 * mark for the others must never wait for bytes left in a batch here
	 */
	for (unsigned i = 0; !ret && i < tp(x)->nbulk; i++) {
		ret = proto_send(tp(x)->bulk[i], MSG_MARK, b, 8);
		if (!ret)
			ret = xconn_flush(tp(x)->bulk[i]);
	}
	return ret;
}

static int tcp_reply(struct xport *x, const struct xrun *r)
{
	bool zero = r->enc == XENC_ZERO;
	uint8_t h[16];

	if (r->n > 1 && (x->features & FEAT_URGENT_RUNS) && r->n <= PROTO_RUN_MAX &&
	    (zero || (r->enc == XENC_RAW && r->len == (uint64_t)r->n * PAGE_SIZE))) {
		/* a run: one frame, one send, for what would be n replies */
		run_header(h, r->pfn, r->n);
		return proto_send2(tp(x)->c[XCH_URGENT], zero ? MSG_ZERO : MSG_PAGES, h, 16,
				   zero ? NULL : r->data, zero ? 0 : r->len);
	}
	if (r->n != 1 || (!zero && (r->enc != XENC_RAW || r->len != PAGE_SIZE)))
		return err_set(-EINVAL, "tcp: an urgent reply is one page%s",
			       x->features & FEAT_URGENT_RUNS ? " or a run of at most 64" : "");
	run_header(h, r->pfn, zero ? PAGE_FLAG_ZERO : 0);
	return proto_send2(tp(x)->c[XCH_URGENT], MSG_PAGE, h, 16, zero ? NULL : r->data,
			   zero ? 0 : PAGE_SIZE);
}

static int tcp_flush(struct xport *x)
{
	int ret = 0;

	for (unsigned i = 0; !ret && i < tp(x)->nbulk; i++)
		ret = xconn_flush(tp(x)->bulk[i]);
	return ret;
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

/*
 * Urgent: REQ to the source, PAGE to the destination, and with
 * FEAT_URGENT_RUNS also PAGES and ZERO runs to the destination.
 */
int tcp_decode_urgent(struct xport *x, const struct proto_msg *m, struct xev *ev)
{
	uint16_t want = x->source ? MSG_REQ : MSG_PAGE;
	struct proto_run run;
	struct rbuf r;
	uint64_t pfn;
	uint32_t flags;
	int ret;

	if (!x->source && (x->features & FEAT_URGENT_RUNS) &&
	    (m->type == MSG_PAGES || m->type == MSG_ZERO)) {
		ret = proto_decode_run(m, x->npages, &run);
		if (ret < 0)
			return err_set(ret, "urgent channel: %s (type %u): %s",
				       proto_type_name(m->type), m->type, err_msg(ret));
		ev->kind = XEV_RUN;
		ev->run = (struct xrun){ .pfn = run.pfn, .n = run.n,
					 .enc = m->type == MSG_PAGES ? XENC_RAW : XENC_ZERO };
		ev->run.data = m->type == MSG_PAGES ? m->payload + 16 : NULL;
		ev->run.len = m->type == MSG_PAGES ? m->len - 16 : 0;
		return 1;
	}
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
	struct xconn *c = tcp_queue_conn(x, q);
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
	return q != XQ_URGENT ? tcp_decode_bulk(x, m, ev) : tcp_decode_urgent(x, m, ev);
}

static int tcp_queue_fd(struct xport *x, enum xq q)
{
	return xconn_fd(tcp_queue_conn(x, q));
}

static bool tcp_pending(struct xport *x, enum xq q)
{
	return xconn_pending(tcp_queue_conn(x, q));
}

/* Bulk: all its streams. */
static uint64_t tcp_bytes(struct xport *x, enum xport_channel ch)
{
	uint64_t n = 0;

	if (ch != XCH_BULK)
		return tp(x)->c[ch] ? tp(x)->c[ch]->bytes_sent + tp(x)->c[ch]->bytes_recv : 0;
	for (unsigned i = 0; i < tp(x)->nbulk; i++)
		if (tp(x)->bulk[i])
			n += tp(x)->bulk[i]->bytes_sent + tp(x)->bulk[i]->bytes_recv;
	return n;
}

/*
 * Positions in the bulk byte streams: the stream in the top byte, the
 * bytes handed to that connection so far below it.  bytes_sent counts
 * what was handed to the connection (some may still wait in io_uring's
 * batch); the kernel's tcpi_bytes_acked counts the same stream's bytes
 * from its first, the greeting, so the two compare.
 */
#define POS_SHIFT 56

static int tcp_bulk_pos(struct xport *x, uint64_t *pos)
{
	struct tcp_pages *t = tp(x);

	if (!t || !t->bulk[t->cur])
		return -ENOTCONN;
	/* the pushing thread's own counter: only it asks for it */
	*pos = (uint64_t)t->cur << POS_SHIFT | t->bulk[t->cur]->bytes_sent;
	return 0;
}

static int tcp_bulk_unacked(struct xport *x, uint64_t pos, uint64_t *ahead, uint64_t *rate)
{
	unsigned i = pos >> POS_SHIFT;
	uint64_t end = pos & ((1ull << POS_SHIFT) - 1);
	struct xconn *c = tp(x) && i < tp(x)->nbulk ? tp(x)->bulk[i] : NULL;
	struct tcp_info ti = { 0 };
	socklen_t len = sizeof(ti);

	if (!c)
		return -ENOTCONN;
	/* takes the socket's lock: never on the pushing thread's every run */
	if (getsockopt(xconn_fd(c), IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -errno;
	if (len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
		return -EOPNOTSUPP;
	*ahead = end > ti.tcpi_bytes_acked ? end - ti.tcpi_bytes_acked : 0;
	/* the kernel's delivery rate estimate (Linux 4.18); 0 in an older struct */
	*rate = len >= offsetof(struct tcp_info, tcpi_delivery_rate) + sizeof(ti.tcpi_delivery_rate) ?
		ti.tcpi_delivery_rate : 0;
	return 0;
}

static void tcp_shutdown(struct xport *x)
{
	xconn_shutdown(tp(x)->c[XCH_URGENT]);
	for (unsigned i = 0; i < tp(x)->nbulk; i++)
		xconn_shutdown(tp(x)->bulk[i]);
}

static void tcp_close(struct xport *x)
{
	xconn_close(tp(x)->c[XCH_URGENT]);
	/* bulk[0] is c[XCH_BULK]; before it is there, only c[] holds it */
	if (!tp(x)->bulk[0])
		xconn_close(tp(x)->c[XCH_BULK]);
	for (unsigned i = 0; i < tp(x)->nbulk; i++)
		xconn_close(tp(x)->bulk[i]);
	for (int q = 0; q < XQ_MAX; q++)
		proto_msg_free(&tp(x)->m[q]);
	free(x->priv);
	x->priv = NULL;
}

const struct xport_ops xport_tcp_ops = {
	.name = "tcp",
	.caps = XCAP_STREAM | XCAP_STREAMS | XCAP_URGENT_RUNS,
	.connect_data = tcp_connect_data,
	.accept_data = tcp_accept_data,
	.push = tcp_push,
	.mark = tcp_mark,
	.reply = tcp_reply,
	.flush = tcp_flush,
	.fetch = tcp_fetch,
	.reap = tcp_reap,
	.queue_fd = tcp_queue_fd,
	.bulk_pos = tcp_bulk_pos,
	.bulk_unacked = tcp_bulk_unacked,
	.pending = tcp_pending,
	.bytes = tcp_bytes,
	.shutdown = tcp_shutdown,
	.close = tcp_close,
};
