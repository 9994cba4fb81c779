/*
 * frame.c - what the RDMA transport puts on the wire, without verbs: the
 * frame header of every SEND, its checks, the authentication block of a
 * connect request and the RDMA_LISTEN control message (rdma.h).  Built on
 * every host, so its checks are unit-tested where no RDMA device exists.
 */
#include <errno.h>
#include <string.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "rdma.h"
#include "umig/buf.h"
#include "umig/util.h"

#define RDMA_AUTH_MAGIC 0x44524d55u   /* "UMRD" */

void rdma_hdr_put(uint8_t *b, const struct rdma_hdr *h)
{
	struct wbuf w = { .data = b, .cap = RDMA_HDR_LEN };

	wbuf_put_u16(&w, h->type);
	wbuf_put_u16(&w, h->flags);
	wbuf_put_u32(&w, h->credits);
	wbuf_put_u64(&w, h->pfn);
	wbuf_put_u32(&w, h->n);
	wbuf_put_u32(&w, h->aux);
}

void rdma_hdr_get(const uint8_t *b, struct rdma_hdr *h)
{
	struct rbuf r;

	rbuf_init(&r, b, RDMA_HDR_LEN);
	h->type = rbuf_get_u16(&r);
	h->flags = rbuf_get_u16(&r);
	h->credits = rbuf_get_u32(&r);
	h->pfn = rbuf_get_u64(&r);
	h->n = rbuf_get_u32(&r);
	h->aux = rbuf_get_u32(&r);
}

uint32_t rdma_slot_size(enum xport_channel ch)
{
	return RDMA_HDR_LEN + (ch == XCH_BULK ? RDMA_BULK_PAGES : 1) * PAGE_SIZE;
}

static int bad(enum xport_channel ch, const struct rdma_hdr *h, uint32_t len, const char *what)
{
	return err_set(-EPROTO, "rdma %s channel: bad frame (type %u, page %llu, n %u, %u bytes): %s",
		       xport_channel_name(ch), h->type, (unsigned long long)h->pfn, h->n, len, what);
}

static int decode_bulk(const struct rdma_hdr *h, uint32_t len, uint64_t npages, struct xev *ev)
{
	uint32_t data = len - RDMA_HDR_LEN;

	switch (h->type) {
	case MSG_PAGES:
	case MSG_ZERO:
		if (!h->n || h->pfn >= npages || h->n > npages - h->pfn)
			return bad(XCH_BULK, h, len, "the run lies outside guest RAM");
		if (h->type == MSG_PAGES && (h->n > RDMA_BULK_PAGES || data != h->n * PAGE_SIZE))
			return bad(XCH_BULK, h, len, "the page count does not match the data");
		if (h->type == MSG_ZERO && data)
			return bad(XCH_BULK, h, len, "a zero run carries data");
		ev->kind = XEV_RUN;
		ev->run.pfn = h->pfn;
		ev->run.n = h->n;
		ev->run.enc = h->type == MSG_PAGES ? XENC_RAW : XENC_ZERO;
		ev->run.len = h->type == MSG_PAGES ? data : 0;
		return 1;
	case MSG_MARK:
		if (data)
			return bad(XCH_BULK, h, len, "a mark carries data");
		ev->kind = XEV_MARK;
		ev->mark = h->n;
		ev->round = h->aux;
		return 1;
	default:
		return bad(XCH_BULK, h, len, "unexpected type");
	}
}

static int decode_urgent(const struct rdma_hdr *h, uint32_t len, bool source, uint64_t npages,
			 struct xev *ev)
{
	uint32_t data = len - RDMA_HDR_LEN;
	bool zero = h->flags & PAGE_FLAG_ZERO;

	if (h->type != (source ? MSG_REQ : MSG_PAGE))
		return bad(XCH_URGENT, h, len, "unexpected type");
	if (h->pfn >= npages)
		return bad(XCH_URGENT, h, len, "the page lies outside guest RAM");
	ev->run = (struct xrun){ .pfn = h->pfn, .n = 1 };
	if (source) {
		if (data || h->flags)
			return bad(XCH_URGENT, h, len, "a request carries data or flags");
		ev->kind = XEV_REQ;
		return 1;
	}
	if (h->flags & ~PAGE_FLAG_ZERO || data != (zero ? 0 : PAGE_SIZE))
		return bad(XCH_URGENT, h, len, "flags and data do not match");
	ev->kind = XEV_RUN;
	ev->run.enc = zero ? XENC_ZERO : XENC_RAW;
	ev->run.len = zero ? 0 : PAGE_SIZE;
	return 1;
}

int rdma_frame_decode(const uint8_t *b, uint32_t len, enum xport_channel ch, bool source,
		      uint64_t npages, struct rdma_hdr *h, struct xev *ev)
{
	int ret;

	memset(h, 0, sizeof(*h));
	memset(ev, 0, sizeof(*ev));
	if (len < RDMA_HDR_LEN || len > rdma_slot_size(ch))
		return bad(ch, h, len, "shorter than a header or longer than a buffer");
	rdma_hdr_get(b, h);
	if (h->credits > RDMA_URGENT_RECV + RDMA_BULK_RECV)
		return bad(ch, h, len, "more credits than receive buffers");
	if (h->type == MSG_RDMA_CREDIT)
		return len == RDMA_HDR_LEN ? 0 : bad(ch, h, len, "a credit frame carries data");
	if (ch == XCH_BULK && source)
		return bad(ch, h, len, "the source receives only credits on bulk");
	ret = ch == XCH_BULK ? decode_bulk(h, len, npages, ev)
			     : decode_urgent(h, len, source, npages, ev);
	if (ret > 0 && ev->run.len)
		ev->run.data = b + RDMA_HDR_LEN;
	return ret;
}

static int auth_mac(const uint8_t *secret, uint64_t session, const uint8_t *nonce,
		    enum xport_channel ch, uint8_t *out)
{
	uint8_t msg[10 + 2 + 8 + PROTO_NONCE_LEN];
	struct wbuf w = { .data = msg, .cap = sizeof(msg) };

	wbuf_put(&w, "umig rdma ", 10);
	wbuf_put_u16(&w, ch);
	wbuf_put_u64(&w, session);
	wbuf_put(&w, nonce, PROTO_NONCE_LEN);
	if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret, PROTO_SECRET_LEN, msg, w.len, out) < 0)
		return err_set(-EIO, "rdma: HMAC-SHA256 failed");
	return 0;
}

int rdma_auth_make(const uint8_t *secret, uint64_t session, const uint8_t *nonce,
		   enum xport_channel ch, uint8_t out[RDMA_AUTH_LEN])
{
	struct wbuf w = { .data = out, .cap = RDMA_AUTH_LEN };

	wbuf_put_u32(&w, RDMA_AUTH_MAGIC);
	wbuf_put_u16(&w, ch);
	wbuf_put_u16(&w, 0);
	wbuf_put_u64(&w, session);
	return auth_mac(secret, session, nonce, ch, out + 16);
}

int rdma_auth_check(const uint8_t *secret, uint64_t session, const uint8_t *nonce,
		    const void *data, uint32_t len, enum xport_channel *ch)
{
	uint8_t want[PROTO_MAC_LEN], d = 0;
	const uint8_t *p = data;
	struct rbuf r;
	uint32_t magic;
	uint16_t c;
	uint64_t sess;
	int ret;

	/* rdma_cm pads private data to the transport's size: only the start counts */
	if (!p || len < RDMA_AUTH_LEN)
		return err_set(-EACCES, "rdma: a connect request without umig's authentication");
	rbuf_init(&r, p, RDMA_AUTH_LEN);
	magic = rbuf_get_u32(&r);
	c = rbuf_get_u16(&r);
	rbuf_get_u16(&r);
	sess = rbuf_get_u64(&r);
	if (magic != RDMA_AUTH_MAGIC)
		return err_set(-EACCES, "rdma: a connect request that is not umig's");
	if (c != XCH_BULK && c != XCH_URGENT)
		return err_set(-EPROTO, "rdma: a connect request for unknown channel %u", c);
	if (sess != session)
		return err_set(-EACCES, "rdma: a connect request for another session");
	ret = auth_mac(secret, session, nonce, c, want);
	for (int i = 0; !ret && i < PROTO_MAC_LEN; i++)
		d |= want[i] ^ p[16 + i];
	if (ret < 0)
		return ret;
	if (d)
		return err_set(-EACCES, "rdma: a connect request failed authentication (wrong MAC)");
	*ch = c;
	return 0;
}

void rdma_listen_put(uint8_t b[RDMA_LISTEN_LEN], uint16_t port, const uint8_t *nonce)
{
	struct wbuf w = { .data = b, .cap = RDMA_LISTEN_LEN };

	wbuf_put_u16(&w, port);
	wbuf_put_u16(&w, 0);
	wbuf_put_u32(&w, 0);
	wbuf_put(&w, nonce, PROTO_NONCE_LEN);
}

int rdma_listen_get(const struct proto_msg *m, uint16_t *port, uint8_t *nonce)
{
	struct rbuf r;

	if (m->type != MSG_RDMA_LISTEN || m->len != RDMA_LISTEN_LEN)
		return err_set(-EPROTO, "rdma: expected RDMA_LISTEN on control, got type %u (%u bytes)",
			       m->type, m->len);
	rbuf_init(&r, m->payload, m->len);
	*port = rbuf_get_u16(&r);
	rbuf_get_u16(&r);
	rbuf_get_u32(&r);
	rbuf_get(&r, nonce, PROTO_NONCE_LEN);
	if (!*port)
		return err_set(-EPROTO, "rdma: RDMA_LISTEN names port 0");
	return 0;
}

void rdma_retry_params(unsigned ms, uint8_t *timeout_exp, uint8_t *retries)
{
	uint64_t budget_us = (ms ? ms : 8000) * 1000ull / 2;
	uint8_t t = 8;

	*retries = 7;
	/* largest exponent whose (retries + 1) tries fit the budget, in 8..20 */
	while (t < 20 && (4096ull << (t + 1)) / 1000 * (*retries + 1) <= budget_us)
		t++;
	*timeout_exp = t;
}
