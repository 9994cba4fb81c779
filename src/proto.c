/*
 * proto.c - framing and the encoders and decoders of proto.h; the format
 * is documented in docs/protocol.md.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "umig/log.h"
#include "umig/proto.h"
#include "umig/util.h"

#define XXH_STATIC_LINKING_ONLY   /* XXH3_state_t on the stack */
#include <xxhash.h>

static const char *const mode_names[] = {
	[MIG_MODE_STOPCOPY] = "stop-copy", [MIG_MODE_PRE] = "pre",
	[MIG_MODE_POST] = "post", [MIG_MODE_HYBRID] = "hybrid",
};

const char *mig_mode_name(enum mig_mode m)
{
	return (unsigned)m < ARRAY_SIZE(mode_names) ? mode_names[m] : "?";
}

static const char *const type_names[] = {
	[MSG_HELLO] = "HELLO", [MSG_STATE] = "STATE", [MSG_DISCARD] = "DISCARD",
	[MSG_SRC_STATS] = "SRC_STATS", [MSG_HELLO2] = "HELLO2", [MSG_HELLO_ACK] = "HELLO_ACK",
	[MSG_ERROR] = "ERROR", [MSG_RESUMED] = "RESUMED", [MSG_COMPLETE] = "COMPLETE",
	[MSG_HELLO2_ACK] = "HELLO2_ACK", [MSG_PAGES] = "PAGES", [MSG_ZERO] = "ZERO",
	[MSG_MARK] = "MARK", [MSG_REQ] = "REQ", [MSG_PAGE] = "PAGE", [MSG_READY] = "READY",
	[MSG_COMMIT] = "COMMIT", [MSG_ABORT] = "ABORT", [MSG_PING] = "PING",
	[MSG_RESOLVE] = "RESOLVE", [MSG_RECOVER] = "RECOVER",
	[MSG_RECOVER_CHALLENGE] = "RECOVER_CHALLENGE", [MSG_RECOVER_AUTH] = "RECOVER_AUTH",
	[MSG_RECOVER_STATE] = "RECOVER_STATE", [MSG_SECRET] = "SECRET",
	[MSG_RDMA_LISTEN] = "RDMA_LISTEN", [MSG_RDMA_CREDIT] = "RDMA_CREDIT",
	[MSG_RDMA_MR] = "RDMA_MR", [MSG_RDMA_MR_ACK] = "RDMA_MR_ACK", [MSG_PLACED] = "PLACED", [MSG_DISCARD_EARLY] = "DISCARD_EARLY",
	[MSG_STREAMS] = "STREAMS",
};

const char *proto_type_name(uint16_t type)
{
	return type < ARRAY_SIZE(type_names) && type_names[type] ? type_names[type] : "unknown";
}

int mig_mode_parse(const char *s, enum mig_mode *m)
{
	for (unsigned i = 0; i < ARRAY_SIZE(mode_names); i++)
		if (!strcmp(s, mode_names[i])) {
			*m = i;
			return 0;
		}
	return err_set(-EINVAL, "unknown mode '%s' (post, pre, hybrid, stop-copy)", s);
}

int proto_send_greeting(struct xconn *x, uint64_t session)
{
	uint8_t g[PROTO_GREETING_LEN];
	struct wbuf w = { .data = g, .cap = sizeof(g) };

	wbuf_put_u32(&w, PROTO_MAGIC);
	wbuf_put_u16(&w, PROTO_VERSION_MIN);
	wbuf_put_u16(&w, x->ch);
	wbuf_put_u64(&w, session);
	return xconn_send(x, g, sizeof(g));
}

int proto_decode_greeting(const uint8_t g[PROTO_GREETING_LEN], enum xport_channel *ch,
			  uint64_t *session)
{
	struct rbuf r;
	uint32_t magic;
	uint16_t version, c;

	rbuf_init(&r, g, PROTO_GREETING_LEN);
	magic = rbuf_get_u32(&r);
	version = rbuf_get_u16(&r);
	c = rbuf_get_u16(&r);
	*session = rbuf_get_u64(&r);
	if (magic != PROTO_MAGIC && g[0] == 0x16 && g[1] == 0x03)
		return err_set(-EPROTO, "authentication failed: the peer starts TLS and this side has "
			       "no credentials (give --auth-key FILE or --tls-creds DIR)");
	if (magic != PROTO_MAGIC)
		return err_set(-EPROTO, "not a umig migration stream (bad magic 0x%08x)", magic);
	if (version < 1 || version > PROTO_VERSION_MAX)
		return err_set(-EPROTONOSUPPORT,
			       "protocol version %u not supported (this umig speaks versions %u..%u)",
			       version, PROTO_VERSION_MIN, PROTO_VERSION_MAX);
	if (c >= XCH_COUNT)
		return err_set(-EPROTO, "unknown channel %u in greeting", c);
	*ch = c;
	return 0;
}

int proto_recv_greeting(struct xconn *x, enum xport_channel *ch, uint64_t *session)
{
	uint8_t g[PROTO_GREETING_LEN];
	int ret = xconn_recv(x, g, sizeof(g));

	if (ret < 0)
		return err_set(ret, "connection closed during the greeting");
	return proto_decode_greeting(g, ch, session);
}

static void proto_header(uint8_t *h, uint16_t type, uint32_t len, uint16_t flags)
{
	struct wbuf w = { .data = h, .cap = PROTO_HDR_LEN };

	wbuf_put_u32(&w, len);
	wbuf_put_u16(&w, type);
	wbuf_put_u16(&w, flags);
}

/* XXH3-64 of the header and the payload parts: the frame digest (FEAT_DIGEST). */
static uint64_t proto_digest(const uint8_t *h, const void *a, uint32_t alen, const void *b,
			     uint32_t blen)
{
	XXH3_state_t st;

	XXH3_64bits_reset(&st);
	XXH3_64bits_update(&st, h, PROTO_HDR_LEN);
	if (alen)
		XXH3_64bits_update(&st, a, alen);
	if (blen)
		XXH3_64bits_update(&st, b, blen);
	return XXH3_64bits_digest(&st);
}

int proto_send(struct xconn *x, uint16_t type, const void *payload, uint32_t len)
{
	return proto_send2(x, type, payload, len, NULL, 0);
}

int proto_send2(struct xconn *x, uint16_t type, const void *a, uint32_t alen,
		const void *b, uint32_t blen)
{
	uint8_t h[PROTO_HDR_LEN], d[8];
	struct iovec iov[4] = {
		{ h, sizeof(h) }, { (void *)a, alen }, { (void *)b, blen }, { d, 0 },
	};
	struct wbuf w = { .data = d, .cap = sizeof(d) };

	if (!x->digest) {
		proto_header(h, type, alen + blen, 0);
		return xconn_sendv(x, iov, 3);
	}
	/*
	 * Page data comes straight from guest RAM, which a running guest may
	 * write while it is sent (pre-copy resends it later): digest and send
	 * one copy, so the digest matches the bytes that leave.
	 */
	if (blen && x->scratch_cap < blen) {
		uint8_t *p = realloc(x->scratch, blen);

		if (!p)
			return -ENOMEM;
		x->scratch = p;
		x->scratch_cap = blen;
	}
	if (blen) {
		memcpy(x->scratch, b, blen);
		b = iov[2].iov_base = x->scratch;
	}
	/* the digest covers the header as sent, so a flipped type or length is caught too */
	proto_header(h, type, alen + blen + 8, PROTO_FLAG_DIGEST);
	wbuf_put_u64(&w, proto_digest(h, a, alen, b, blen));
	iov[3].iov_len = sizeof(d);
	return xconn_sendv(x, iov, 4);
}

/* Smallest and largest payload each type may carry. */
static int proto_len_ok(uint16_t type, uint32_t len)
{
	switch (type) {
	case MSG_HELLO: return len == 24;
	case MSG_HELLO_ACK: return len == 8;
	case MSG_HELLO2: return len == 24;
	case MSG_HELLO2_ACK: return len == 16;
	case MSG_ERROR: return len >= 4 && len <= 4 + 1024;
	case MSG_RESUMED: return len == 0;
	case MSG_READY: case MSG_COMMIT: case MSG_ABORT: case MSG_PING: return len == 0;
	case MSG_RESOLVE: return len == 4;
	case MSG_RECOVER: return len == PROTO_NONCE_LEN;
	case MSG_RECOVER_CHALLENGE: return len == PROTO_NONCE_LEN + PROTO_MAC_LEN;
	case MSG_RECOVER_AUTH: return len == PROTO_MAC_LEN;
	case MSG_RECOVER_STATE: return len >= 4 && (len - 4) % 12 == 0;
	case MSG_SECRET: return len == PROTO_SECRET_LEN;
	case MSG_RDMA_LISTEN: return len == 8 + PROTO_NONCE_LEN;
	case MSG_BIND: return len == PROTO_MAC_LEN;
	case MSG_RDMA_MR: return len == 48;
	case MSG_RDMA_MR_ACK: return len == 8;
	case MSG_STREAMS: return len == 8;
	case MSG_STATE: return len > 0 && len <= (1u << 20);
	case MSG_DISCARD: return len % 12 == 0;
	case MSG_PLACED: return len == 8;
	case MSG_DISCARD_EARLY: return len >= 8 && (len - 8) % 12 == 0;
	case MSG_SRC_STATS: case MSG_COMPLETE: return len <= (1u << 20);
	case MSG_PAGES: return len > 16 && (len - 16) % PAGE_SIZE == 0 &&
			       (len - 16) / PAGE_SIZE <= PROTO_RUN_MAX;
	case MSG_ZERO: return len == 16;
	/* exact bounds (the batch's page count, the delta's size) are the decoder's */
	case MSG_PAGES_Z: return len > 16 + 16 && len < 16 + PROTO_RUN_MAX * PAGE_SIZE;
	case MSG_DELTA: return len >= 16 + 12 && len <= 16 + PAGE_SIZE;
	case MSG_MARK: return len == 8;
	case MSG_REQ: return len == 8;
	case MSG_PAGE: return len == 16 || len == 16 + PAGE_SIZE;
	default: return -1;
	}
}

/* What a frame carried, for the message that says it arrived corrupted. */
static void proto_describe(const struct proto_msg *m, char *buf, size_t len)
{
	struct rbuf r;
	uint64_t pfn;

	rbuf_init(&r, m->payload, m->len);
	pfn = rbuf_get_u64(&r);
	if (m->type == MSG_PAGES || m->type == MSG_ZERO)
		snprintf(buf, len, "the page run %llu+%u (%s)", (unsigned long long)pfn,
			 rbuf_get_u32(&r), m->type == MSG_PAGES ? "PAGES" : "ZERO");
	else if (m->type == MSG_PAGE)
		snprintf(buf, len, "page %llu (PAGE)", (unsigned long long)pfn);
	else if (m->type == MSG_STATE)
		snprintf(buf, len, "the machine state (STATE, %u bytes)", m->len);
	else
		snprintf(buf, len, "a message of type %u", m->type);
}

/* The frame's digest (the 8 bytes after its payload) against what arrived. */
static int proto_check_digest(struct xconn *x, const uint8_t *h, struct proto_msg *m)
{
	struct rbuf r;
	char what[96];

	rbuf_init(&r, m->payload + m->len, 8);
	if (rbuf_get_u64(&r) == proto_digest(h, m->payload, m->len, NULL, 0))
		return 0;
	proto_describe(m, what, sizeof(what));
	return err_set(-EBADMSG, "%s channel: digest mismatch in %s: the data was corrupted on "
		       "the way and none of it was used", xport_channel_name(x->ch), what);
}

/* The header's flags: a digest exactly when one was negotiated. */
static int proto_check_flags(enum xport_channel ch, bool digest, uint16_t flags,
			     struct proto_msg *m)
{
	if (flags & ~PROTO_FLAG_DIGEST)
		return err_set(-EPROTO, "%s channel: unknown frame flags %#x (type %u)",
			       xport_channel_name(ch), flags, m->type);
	if (!!(flags & PROTO_FLAG_DIGEST) != digest)
		return err_set(-EPROTO, "%s channel: a frame (type %u) %s a digest", xport_channel_name(ch),
			       m->type, digest ? "without" : "with an unnegotiated");
	if (digest && m->len < 8)
		return err_set(-EPROTO, "%s channel: frame of %u bytes too short for its digest",
			       xport_channel_name(ch), m->len);
	if (digest)
		m->len -= 8;
	return 0;
}

int proto_decode_header_digest(const uint8_t h[PROTO_HDR_LEN], enum xport_channel ch,
			       bool digest, struct proto_msg *m)
{
	uint32_t extra = digest ? 8 : 0;
	struct rbuf r;
	int ok, ret;

	rbuf_init(&r, h, PROTO_HDR_LEN);
	m->len = rbuf_get_u32(&r);
	m->type = rbuf_get_u16(&r);
	if (m->len > PROTO_MAX_PAYLOAD + extra)
		return err_set(-EPROTO, "%s channel: frame of %u bytes exceeds the %u-byte limit",
			       xport_channel_name(ch), m->len, PROTO_MAX_PAYLOAD);
	ret = proto_check_flags(ch, digest, rbuf_get_u16(&r), m);
	if (ret < 0)
		return ret;
	ok = proto_len_ok(m->type, m->len);
	if (ok < 0)
		return err_set(-EPROTO, "%s channel: unknown message type %u",
			       xport_channel_name(ch), m->type);
	if (!ok)
		return err_set(-EPROTO, "%s channel: message type %u with a bad length %u",
			       xport_channel_name(ch), m->type, m->len);
	return 0;
}

int proto_decode_header(const uint8_t h[PROTO_HDR_LEN], enum xport_channel ch,
			struct proto_msg *m)
{
	return proto_decode_header_digest(h, ch, false, m);
}

int proto_recv(struct xconn *x, struct proto_msg *m)
{
	uint8_t h[PROTO_HDR_LEN];
	uint32_t extra = x->digest ? 8 : 0;
	int ret = xconn_recv(x, h, sizeof(h));

	if (ret == -EPROTO)
		return err_set(ret, "%s channel: truncated frame header",
			       xport_channel_name(x->ch));
	if (ret < 0)
		return ret == -EPIPE ? err_set(ret, "the %s connection closed",
					       xport_channel_name(x->ch)) : ret;
	/*
	 * A TLS server answers our plaintext greeting with an alert record
	 * (0x15 0x03 0x0?): the first bytes this side receives.  Only there:
	 * later the same bytes open a frame of 0x??0315 bytes.
	 */
	if (!xconn_tls_on(x) && x->bytes_recv == PROTO_HDR_LEN &&
	    h[0] == 0x15 && h[1] == 0x03 && h[2] <= 0x04)
		return err_set(-EACCES, "authentication failed: the peer speaks TLS (give this side "
			       "--auth-key or --tls-creds)");
	ret = proto_decode_header_digest(h, x->ch, x->digest, m);
	if (ret < 0)
		return ret;
	if (m->len + extra + 1 > m->cap) {
		uint8_t *p = realloc(m->payload, m->len + extra + 1);

		if (!p)
			return -ENOMEM;
		m->payload = p;
		m->cap = m->len + extra + 1;
	}
	ret = m->len + extra ? xconn_recv(x, m->payload, m->len + extra) : 0;
	if (ret == -ETIMEDOUT)
		ret = -EPROTO;  /* a frame that stops half way cannot be resumed */
	if (ret < 0)
		return err_set(ret, "%s channel: truncated message (type %u, %u bytes)",
			       xport_channel_name(x->ch), m->type, m->len);
	if (extra && (ret = proto_check_digest(x, h, m)) < 0)
		return ret;
	m->payload[m->len] = 0;  /* text payloads become C strings */
	return 0;
}

void proto_msg_free(struct proto_msg *m)
{
	free(m->payload);
	memset(m, 0, sizeof(*m));
}

void proto_encode_hello(struct wbuf *w, const struct proto_hello *h)
{
	wbuf_put_u32(w, h->page_size);
	wbuf_put_u32(w, h->mode);
	wbuf_put_u64(w, h->ram_size);
	wbuf_put_u64(w, h->features);
}

int proto_decode_hello(const struct proto_msg *m, struct proto_hello *h)
{
	struct rbuf r;

	if (m->type != MSG_HELLO)
		return err_set(-EPROTO, "expected HELLO, got message type %u", m->type);
	rbuf_init(&r, m->payload, m->len);
	h->page_size = rbuf_get_u32(&r);
	h->mode = rbuf_get_u32(&r);
	h->ram_size = rbuf_get_u64(&r);
	h->features = rbuf_get_u64(&r);
	if (h->page_size != PAGE_SIZE)
		return err_set(-EPROTO, "source uses %u-byte pages; umig uses 4096", h->page_size);
	if (h->mode > MIG_MODE_HYBRID)
		return err_set(-EPROTO, "unknown migration mode %u", h->mode);
	if (h->ram_size % PAGE_SIZE || h->ram_size < (2ull << 20) || h->ram_size > (1ull << 40))
		return err_set(-EPROTO, "invalid RAM size %llu", (unsigned long long)h->ram_size);
	if (h->features & ~FEAT_HELLO2)
		return err_set(-ENOTSUP, "HELLO: unknown feature bits %#llx (the first HELLO may "
			       "only carry %#llx)", (unsigned long long)(h->features & ~FEAT_HELLO2),
			       (unsigned long long)FEAT_HELLO2);
	return 0;
}

int proto_decode_hello_ack(const struct proto_msg *m, uint64_t *features)
{
	struct rbuf r;

	if (m->type != MSG_HELLO_ACK)
		return err_set(-EPROTO, "expected HELLO_ACK, got message type %u", m->type);
	rbuf_init(&r, m->payload, m->len);
	*features = rbuf_get_u64(&r);
	if (r.err)
		return err_set(-EPROTO, "HELLO_ACK: truncated");
	if (*features & ~FEAT_HELLO2)
		return err_set(-EPROTO, "HELLO_ACK: the destination accepted unknown feature "
			       "bits %#llx", (unsigned long long)(*features & ~FEAT_HELLO2));
	return 0;
}

void proto_encode_hello2(struct wbuf *w, const struct proto_hello2 *h)
{
	wbuf_put_u16(w, h->min_version);
	wbuf_put_u16(w, h->max_version);
	wbuf_put_u32(w, 0);
	wbuf_put_u64(w, h->offered);
	wbuf_put_u64(w, h->required);
}

int proto_decode_hello2(const struct proto_msg *m, struct proto_hello2 *h)
{
	struct rbuf r;

	if (m->type != MSG_HELLO2)
		return err_set(-EPROTO, "expected HELLO2, got message type %u", m->type);
	rbuf_init(&r, m->payload, m->len);
	h->min_version = rbuf_get_u16(&r);
	h->max_version = rbuf_get_u16(&r);
	rbuf_get_u32(&r);
	h->offered = rbuf_get_u64(&r);
	h->required = rbuf_get_u64(&r);
	if (r.err || h->min_version < 2 || h->min_version > h->max_version)
		return err_set(-EPROTO, "HELLO2: bad version range %u..%u", h->min_version,
			       h->max_version);
	if (h->required & ~h->offered)
		return err_set(-EPROTO, "HELLO2: required features %#llx were not offered",
			       (unsigned long long)(h->required & ~h->offered));
	return 0;
}

void proto_encode_hello2_ack(struct wbuf *w, const struct proto_hello2_ack *a)
{
	wbuf_put_u16(w, a->version);
	wbuf_put_u16(w, 0);
	wbuf_put_u32(w, 0);
	wbuf_put_u64(w, a->features);
}

int proto_decode_hello2_ack(const struct proto_msg *m, struct proto_hello2_ack *a)
{
	struct rbuf r;

	if (m->type != MSG_HELLO2_ACK)
		return err_set(-EPROTO, "expected HELLO2_ACK, got message type %u", m->type);
	rbuf_init(&r, m->payload, m->len);
	a->version = rbuf_get_u16(&r);
	rbuf_get_u16(&r);
	rbuf_get_u32(&r);
	a->features = rbuf_get_u64(&r);
	return r.err ? err_set(-EPROTO, "HELLO2_ACK: truncated") : 0;
}

int proto_negotiate(const struct proto_hello2 *h, uint64_t known, struct proto_hello2_ack *out)
{
	uint16_t lo = MAX(h->min_version, (uint16_t)2), hi = MIN(h->max_version, (uint16_t)PROTO_VERSION_MAX);

	if (lo > hi)
		return err_set(-EPROTONOSUPPORT, "no common protocol version: the source speaks "
			       "%u..%u, this umig %u..%u", h->min_version, h->max_version,
			       PROTO_VERSION_MIN, PROTO_VERSION_MAX);
	if (h->required & ~known)
		return err_set(-ENOTSUP, "the source requires feature bits %#llx, which this "
			       "umig does not know (it knows %#llx)",
			       (unsigned long long)(h->required & ~known), (unsigned long long)known);
	out->version = hi;
	out->features = h->offered & known;
	return 0;
}

int proto_check_ack(const struct proto_hello2 *h, const struct proto_hello2_ack *a)
{
	if (a->version < h->min_version || a->version > h->max_version)
		return err_set(-EPROTO, "the destination chose protocol version %u, outside the "
			       "offered %u..%u", a->version, h->min_version, h->max_version);
	if (a->features & ~h->offered)
		return err_set(-EPROTO, "the destination accepted feature bits %#llx that were "
			       "not offered", (unsigned long long)(a->features & ~h->offered));
	if (h->required & ~a->features)
		return err_set(-ENOTSUP, "the destination lacks required features %#llx",
			       (unsigned long long)(h->required & ~a->features));
	return 0;
}

int proto_decode_run(const struct proto_msg *m, uint64_t npages, struct proto_run *run)
{
	struct rbuf r;

	rbuf_init(&r, m->payload, m->len);
	run->pfn = rbuf_get_u64(&r);
	run->n = rbuf_get_u32(&r);
	if (m->type == MSG_PAGES && (uint64_t)run->n * PAGE_SIZE != m->len - 16)
		return err_set(-EPROTO, "PAGES: %u pages announced, %u bytes carried",
			       run->n, m->len - 16);
	if (m->type == MSG_PAGES_Z && (run->n > PROTO_RUN_MAX ||
				       (uint64_t)run->n * PAGE_SIZE <= m->len - 16))
		return err_set(-EPROTO, "PAGES_Z: %u pages announced in %u bytes (1..%u pages, "
			       "fewer bytes than raw)", run->n, m->len - 16, PROTO_RUN_MAX);
	if (m->type == MSG_DELTA && run->n != 1)
		return err_set(-EPROTO, "DELTA: %u pages announced (a delta is one page)", run->n);
	if (run->n == 0 || run->pfn >= npages || run->n > npages - run->pfn)
		return err_set(-EPROTO, "page run %llu+%u lies outside guest RAM (%llu pages)",
			       (unsigned long long)run->pfn, run->n, (unsigned long long)npages);
	return 0;
}

int proto_next_run(struct rbuf *r, uint64_t npages, uint64_t *floor, const char *what,
		   struct proto_run *run)
{
	if (!rbuf_left(r))
		return 0;
	run->pfn = rbuf_get_u64(r);
	run->n = rbuf_get_u32(r);
	if (r->err)
		return err_set(-EPROTO, "%s: a run cut short", what);
	if (!run->n || run->pfn >= npages || run->n > npages - run->pfn)
		return err_set(-EPROTO, "%s run %llu+%u outside guest RAM (%llu pages)", what,
			       (unsigned long long)run->pfn, run->n, (unsigned long long)npages);
	if (floor && run->pfn < *floor)
		return err_set(-EPROTO, "%s run %llu+%u overlaps or precedes an earlier run", what,
			       (unsigned long long)run->pfn, run->n);
	if (floor)
		*floor = run->pfn + run->n;
	return 1;
}

/*
 * The bulk stream's order, per mode:
 *   stop-copy  runs, BULK_END
 *   pre        runs, ROUND_END, ..., runs, BULK_END
 *   post       PRECOPY_DONE, runs, BULK_END
 *   hybrid     runs, ROUND_END, PRECOPY_DONE, runs, BULK_END
 * (after a recovery the stream starts after PRECOPY_DONE).
 */
int proto_check_bulk_run(uint32_t mode, bool post, uint16_t type)
{
	if (mode == MIG_MODE_POST && !post)
		return err_set(-EPROTO, "bulk channel: %s (type %u) before the pre-copy-done mark "
			       "in post mode", proto_type_name(type), type);
	return 0;
}

int proto_check_mark(uint32_t mode, bool post, uint32_t mark)
{
	bool postcopy = mode == MIG_MODE_POST || mode == MIG_MODE_HYBRID;

	switch (mark) {
	case MARK_ROUND_END:
		if (post || !(mode == MIG_MODE_PRE || mode == MIG_MODE_HYBRID))
			return err_set(-EPROTO, "bulk channel: MARK: round-end mark in %s mode%s",
				       mig_mode_name(mode), post ? " after pre-copy" : "");
		return 0;
	case MARK_PRECOPY_DONE:
		if (post || !postcopy)
			return err_set(-EPROTO, "bulk channel: MARK: pre-copy-done mark in %s mode%s",
				       mig_mode_name(mode), post ? " after pre-copy" : "");
		return 0;
	case MARK_BULK_END:
		if (postcopy && !post)
			return err_set(-EPROTO, "bulk channel: MARK: bulk-end mark where pre-copy-done "
				       "belongs");
		return 0;
	default:
		return err_set(-EPROTO, "bulk channel: MARK: unknown mark %u", mark);
	}
}

int proto_send_error(struct xconn *x, int err, const char *text)
{
	size_t n = MIN(strlen(text), 1024);
	uint8_t e[4];
	struct wbuf w = { .data = e, .cap = 4 };

	wbuf_put_u32(&w, err < 0 ? -err : err);
	return proto_send2(x, MSG_ERROR, e, 4, text, n);
}

void proto_error_text(const struct proto_msg *m, char *buf, size_t len)
{
	/* payload is NUL-terminated by proto_recv; print only what is printable */
	size_t j = 0;

	for (uint32_t i = 4; i < m->len && j + 1 < len; i++)
		buf[j++] = m->payload[i] >= 0x20 && m->payload[i] < 0x7f ? m->payload[i] : '?';
	buf[j] = 0;
}
