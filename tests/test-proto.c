/*
 * test-proto.c - the wire protocol's encoders and decoders: greetings and
 * frames round-trip through a real socket pair, and every malformed input
 * is refused with a message naming it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "t-util.h"
#include "tcp.h"
#include "umig/proto.h"
#include "umig/xport.h"
#include "umig/util.h"

/* A minimal connection over one end of a socketpair. */
static int sp_send(struct xconn *x, const void *b, size_t n) { return write_full(*(int *)x->priv, b, n); }
static int sp_recv(struct xconn *x, void *b, size_t n) { return read_full(*(int *)x->priv, b, n); }
static int sp_flush(struct xconn *x) { return 0; }
static int sp_fd(struct xconn *x) { return *(int *)x->priv; }
static void sp_close(struct xconn *x) { close(*(int *)x->priv); }
static void sp_shutdown(struct xconn *x) { shutdown(*(int *)x->priv, SHUT_RDWR); }
static const struct xconn_ops sp_ops = { "pair", sp_send, sp_recv, sp_flush, sp_fd, sp_shutdown, sp_close, NULL };

struct pair {
	int fd[2];
	struct xconn a, b;
};

static int setup(void **state)
{
	struct pair *p = calloc(1, sizeof(*p));

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, p->fd), 0);
	p->a = (struct xconn){ .ops = &sp_ops, .ch = XCH_BULK, .timeout_ms = -1, .priv = &p->fd[0] };
	p->b = (struct xconn){ .ops = &sp_ops, .ch = XCH_BULK, .timeout_ms = -1, .priv = &p->fd[1] };
	*state = p;
	return 0;
}

static int teardown(void **state)
{
	struct pair *p = *state;

	close(p->fd[0]);
	close(p->fd[1]);
	free(p);
	return 0;
}

static void test_greeting_round_trip(void **state)
{
	struct pair *p = *state;
	enum xport_channel ch;
	uint64_t session;

	assert_int_equal(proto_send_greeting(&p->a, 0x1122334455667788ull), 0);
	assert_int_equal(proto_recv_greeting(&p->b, &ch, &session), 0);
	assert_int_equal(ch, XCH_BULK);
	assert_true(session == 0x1122334455667788ull);
	assert_int_equal(p->a.bytes_sent, PROTO_GREETING_LEN);
}

static void test_greeting_rejects(void **state)
{
	struct pair *p = *state;
	uint8_t g[16] = { 'U', 'M', 'I', 'G', 1, 0, 0, 0 };
	enum xport_channel ch;
	uint64_t s;

	g[0] = 'X';
	write_full(p->fd[0], g, 16);
	assert_int_equal(proto_recv_greeting(&p->b, &ch, &s), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "bad magic"));
	g[0] = 'U';
	g[4] = 9;
	write_full(p->fd[0], g, 16);
	assert_int_equal(proto_recv_greeting(&p->b, &ch, &s), -EPROTONOSUPPORT);
	assert_non_null(strstr(err_msg(-EPROTONOSUPPORT), "version 9"));
	g[4] = 1;
	g[6] = 7;
	write_full(p->fd[0], g, 16);
	assert_int_equal(proto_recv_greeting(&p->b, &ch, &s), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "unknown channel 7"));
}

static void test_hello_round_trip_and_checks(void **state)
{
	struct pair *p = *state;
	struct proto_hello h = { .page_size = 4096, .mode = MIG_MODE_HYBRID,
				 .ram_size = 1ull << 30 }, out;
	struct proto_msg m = { 0 };
	struct wbuf w;

	wbuf_init(&w);
	proto_encode_hello(&w, &h);
	assert_int_equal(w.len, 24);
	assert_int_equal(proto_send(&p->a, MSG_HELLO, w.data, w.len), 0);
	assert_int_equal(proto_recv(&p->b, &m), 0);
	assert_int_equal(proto_decode_hello(&m, &out), 0);
	assert_int_equal(out.mode, MIG_MODE_HYBRID);
	assert_true(out.ram_size == 1ull << 30);
	/* each field out of range is named */
	m.payload[0] = 1;
	assert_int_equal(proto_decode_hello(&m, &out), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "pages"));
	m.payload[0] = 0;
	m.payload[4] = 9;
	assert_int_equal(proto_decode_hello(&m, &out), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "mode"));
	m.payload[4] = 2;
	m.payload[8] = 1;            /* RAM size not a page multiple */
	assert_int_equal(proto_decode_hello(&m, &out), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "RAM size"));
	proto_msg_free(&m);
	wbuf_free(&w);
}

/* A TLS alert as the first bytes from the peer: named as TLS, not as a bad frame. */
static void test_tls_alert_first_is_named(void **state)
{
	struct pair *p = *state;
	const uint8_t alert[8] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28, 0x00 };
	struct proto_msg m = { 0 };

	write_full(p->fd[0], alert, sizeof(alert));
	assert_int_equal(proto_recv(&p->b, &m), -EACCES);
	assert_non_null(strstr(err_msg(-EACCES), "the peer speaks TLS"));
	proto_msg_free(&m);
}

/* Later, the same two bytes open a frame of 0x??0315 bytes: data, not TLS. */
static void test_frame_that_looks_like_tls_later(void **state)
{
	struct pair *p = *state;
	const uint32_t len = 0x10315;
	uint8_t *big = calloc(1, len);
	struct proto_msg m = { 0 };

	assert_non_null(big);
	assert_int_equal(proto_send(&p->a, MSG_RESUMED, NULL, 0), 0);
	assert_int_equal(proto_recv(&p->b, &m), 0);
	assert_int_equal(proto_send(&p->a, MSG_SRC_STATS, big, len), 0);
	assert_int_equal(proto_recv(&p->b, &m), 0);
	assert_int_equal(m.type, MSG_SRC_STATS);
	assert_int_equal(m.len, len);
	proto_msg_free(&m);
	free(big);
}

/* The first HELLO may carry only FEAT_HELLO2: anything else is refused. */
static void test_hello_refuses_unknown_features(void **state)
{
	struct pair *p = *state;
	struct proto_hello h = { .page_size = 4096, .mode = MIG_MODE_POST,
				 .ram_size = 64ull << 20, .features = FEAT_HELLO2 }, out;
	struct proto_msg m = { 0 };
	struct wbuf w;

	wbuf_init(&w);
	proto_encode_hello(&w, &h);
	assert_int_equal(proto_send(&p->a, MSG_HELLO, w.data, w.len), 0);
	assert_int_equal(proto_recv(&p->b, &m), 0);
	assert_int_equal(proto_decode_hello(&m, &out), 0);
	assert_true(out.features == FEAT_HELLO2);
	m.payload[16 + 3] = 0x80;   /* bit 31 of the features */
	assert_int_equal(proto_decode_hello(&m, &out), -ENOTSUP);
	assert_non_null(strstr(err_msg(-ENOTSUP), "unknown feature bits 0x80000000"));
	proto_msg_free(&m);
	wbuf_free(&w);
}

static void test_hello2_round_trip(void **state)
{
	struct pair *p = *state;
	struct proto_hello2 h = { .min_version = 2, .max_version = 7, .offered = 0x6, .required = 0x2 }, o;
	struct proto_hello2_ack a = { .version = 2, .features = 0x2 }, ao;
	struct proto_msg m = { 0 };
	struct wbuf w;

	wbuf_init(&w);
	proto_encode_hello2(&w, &h);
	assert_int_equal(proto_send(&p->a, MSG_HELLO2, w.data, w.len), 0);
	assert_int_equal(proto_recv(&p->b, &m), 0);
	assert_int_equal(proto_decode_hello2(&m, &o), 0);
	assert_int_equal(o.min_version, 2);
	assert_int_equal(o.max_version, 7);
	assert_true(o.offered == 0x6 && o.required == 0x2);
	/* a required bit that was not offered is malformed */
	m.payload[16] = 0x8;
	assert_int_equal(proto_decode_hello2(&m, &o), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "not offered"));
	/* an empty or inverted range is malformed */
	m.payload[16] = 0x2;
	m.payload[0] = 8;
	assert_int_equal(proto_decode_hello2(&m, &o), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "version range 8..7"));
	wbuf_reset(&w);
	proto_encode_hello2_ack(&w, &a);
	assert_int_equal(proto_send(&p->a, MSG_HELLO2_ACK, w.data, w.len), 0);
	assert_int_equal(proto_recv(&p->b, &m), 0);
	assert_int_equal(proto_decode_hello2_ack(&m, &ao), 0);
	assert_int_equal(ao.version, 2);
	assert_true(ao.features == 0x2);
	proto_msg_free(&m);
	wbuf_free(&w);
}

static void test_negotiation_rules(void **state)
{
	struct proto_hello2 h = { .min_version = 2, .max_version = 9, .offered = 0x6 };
	struct proto_hello2_ack a;

	/* the highest common version; only known offered bits */
	assert_int_equal(proto_negotiate(&h, 0x2, &a), 0);
	assert_int_equal(a.version, PROTO_VERSION_MAX);
	assert_true(a.features == 0x2);
	assert_int_equal(proto_check_ack(&h, &a), 0);
	/* an unknown required bit is refused, naming it */
	h.required = 0x4;
	assert_int_equal(proto_negotiate(&h, 0x2, &a), -ENOTSUP);
	assert_non_null(strstr(err_msg(-ENOTSUP), "requires feature bits 0x4"));
	h.required = 0;
	/* ranges that do not meet */
	h.min_version = PROTO_VERSION_MAX + 1;
	h.max_version = PROTO_VERSION_MAX + 3;
	assert_int_equal(proto_negotiate(&h, 0x2, &a), -EPROTONOSUPPORT);
	assert_non_null(strstr(err_msg(-EPROTONOSUPPORT), "no common protocol version"));
	/* the source refuses an answer outside what it offered */
	h.min_version = 2;
	h.max_version = PROTO_VERSION_MAX;
	a = (struct proto_hello2_ack){ .version = PROTO_VERSION_MAX, .features = 0x8 };
	assert_int_equal(proto_check_ack(&h, &a), -EPROTO);
	a = (struct proto_hello2_ack){ .version = PROTO_VERSION_MAX + 1, .features = 0 };
	assert_int_equal(proto_check_ack(&h, &a), -EPROTO);
	h.required = 0x2;
	a = (struct proto_hello2_ack){ .version = 2, .features = 0 };
	assert_int_equal(proto_check_ack(&h, &a), -ENOTSUP);
}

static void send_raw_header(int fd, uint32_t len, uint16_t type)
{
	uint8_t h[8] = { len, len >> 8, len >> 16, len >> 24, type, type >> 8, 0, 0 };

	write_full(fd, h, 8);
}

static void test_frame_length_checks(void **state)
{
	struct pair *p = *state;
	struct proto_msg m = { 0 };

	send_raw_header(p->fd[0], PROTO_MAX_PAYLOAD + 1, MSG_PAGES);
	assert_int_equal(proto_recv(&p->b, &m), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "exceeds"));
	send_raw_header(p->fd[0], 8, 999);
	assert_int_equal(proto_recv(&p->b, &m), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "unknown message type 999"));
	send_raw_header(p->fd[0], 16 + 100, MSG_PAGES);   /* not whole pages */
	assert_int_equal(proto_recv(&p->b, &m), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "bad length"));
	send_raw_header(p->fd[0], 16 + 65 * 4096, MSG_PAGES);  /* run too long */
	assert_int_equal(proto_recv(&p->b, &m), -EPROTO);
	send_raw_header(p->fd[0], 7, MSG_REQ);
	assert_int_equal(proto_recv(&p->b, &m), -EPROTO);
	proto_msg_free(&m);
}

static void test_truncated_frame(void **state)
{
	struct pair *p = *state;
	struct proto_msg m = { 0 };

	send_raw_header(p->fd[0], 8, MSG_REQ);
	write_full(p->fd[0], "abc", 3);
	shutdown(p->fd[0], SHUT_WR);
	assert_true(proto_recv(&p->b, &m) < 0);
	assert_non_null(strstr(err_msg(-EPIPE), "truncated"));
	proto_msg_free(&m);
}

static void test_page_run_round_trip_and_bounds(void **state)
{
	struct pair *p = *state;
	struct proto_msg m = { 0 };
	struct proto_run r;
	uint8_t hdr[16] = { 0 }, data[2 * 4096];

	memset(data, 0x5a, sizeof(data));
	hdr[0] = 10;    /* pfn 10 */
	hdr[8] = 2;     /* 2 pages */
	assert_int_equal(proto_send2(&p->a, MSG_PAGES, hdr, 16, data, sizeof(data)), 0);
	assert_int_equal(proto_recv(&p->b, &m), 0);
	assert_int_equal(proto_decode_run(&m, 100, &r), 0);
	assert_int_equal(r.pfn, 10);
	assert_int_equal(r.n, 2);
	assert_memory_equal(m.payload + 16, data, sizeof(data));
	/* the same run does not fit 11 pages of RAM */
	assert_int_equal(proto_decode_run(&m, 11, &r), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "outside guest RAM"));
	/* a count that disagrees with the data */
	m.payload[8] = 1;
	assert_int_equal(proto_decode_run(&m, 100, &r), -EPROTO);
	/* a huge pfn that would wrap pfn + n */
	memset(m.payload, 0xff, 8);
	m.payload[8] = 2;
	assert_int_equal(proto_decode_run(&m, 100, &r), -EPROTO);
	proto_msg_free(&m);
}

/* FEAT_DIGEST: frames round-trip with their digest; a flipped bit is caught, naming the run. */
static void test_frame_digest(void **state)
{
	struct pair *p = *state;
	struct proto_msg m = { 0 };
	uint8_t h[16] = { 7 }, page[4096], raw[8 + 16 + 4096 + 8];

	memset(page, 0xa5, sizeof(page));
	h[8] = 1;   /* run 7+1 */
	p->a.digest = p->b.digest = true;
	assert_int_equal(proto_send2(&p->a, MSG_PAGES, h, 16, page, sizeof(page)), 0);
	assert_int_equal(proto_recv(&p->b, &m), 0);
	assert_int_equal(m.type, MSG_PAGES);
	assert_int_equal(m.len, 16 + 4096);
	assert_memory_equal(m.payload + 16, page, 4096);

	/* the same frame with one bit flipped in the page data */
	assert_int_equal(proto_send2(&p->a, MSG_PAGES, h, 16, page, sizeof(page)), 0);
	assert_int_equal(read_full(p->fd[1], raw, sizeof(raw)), 0);
	raw[8 + 16 + 1000] ^= 0x10;
	assert_int_equal(write_full(p->fd[0], raw, sizeof(raw)), 0);
	assert_int_equal(proto_recv(&p->b, &m), -EBADMSG);
	assert_non_null(strstr(err_msg(-EBADMSG), "digest mismatch in the page run 7+1"));

	/* a frame without its digest, and a digest nobody negotiated, are refused */
	p->a.digest = false;
	assert_int_equal(proto_send(&p->a, MSG_PING, NULL, 0), 0);
	assert_int_equal(proto_recv(&p->b, &m), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "without a digest"));
	p->a.digest = true;
	p->b.digest = false;
	assert_int_equal(proto_send(&p->a, MSG_PING, NULL, 0), 0);
	assert_int_equal(proto_recv(&p->b, &m), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "unnegotiated"));
	free(p->a.scratch);
	proto_msg_free(&m);
}

static void test_error_frame_text(void **state)
{
	struct pair *p = *state;
	struct proto_msg m = { 0 };
	char text[64];

	assert_int_equal(proto_send_error(&p->a, -EINVAL, "RAM size mismatch\x01"), 0);
	assert_int_equal(proto_recv(&p->b, &m), 0);
	assert_int_equal(m.type, MSG_ERROR);
	proto_error_text(&m, text, sizeof(text));
	assert_string_equal(text, "RAM size mismatch?");
	proto_msg_free(&m);
}

/* The pure header check names the channel and the type it refuses. */
static void test_header_decoder_names_channel_and_type(void **state)
{
	uint8_t h[8] = { 17, 0, 0, 0, MSG_ZERO, 0, 0, 0 };
	struct proto_msg m = { 0 };

	assert_int_equal(proto_decode_header(h, XCH_BULK, &m), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "bulk channel: message type 33 with a bad length 17"));
	h[0] = 16;
	assert_int_equal(proto_decode_header(h, XCH_BULK, &m), 0);
	assert_int_equal(m.type, MSG_ZERO);
	assert_int_equal(m.len, 16);
	h[4] = h[5] = 0xff;
	assert_int_equal(proto_decode_header(h, XCH_URGENT, &m), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "urgent channel: unknown message type 65535"));
	assert_string_equal(proto_type_name(MSG_DISCARD), "DISCARD");
	assert_string_equal(proto_type_name(0xffff), "unknown");
}

/* The bulk stream's order, per mode (docs/protocol.md, "Sequences"). */
static void test_bulk_order_per_mode(void **state)
{
	/* post has no pre-copy: nothing before its pre-copy-done mark */
	assert_int_equal(proto_check_bulk_run(MIG_MODE_POST, false, MSG_PAGES), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "PAGES (type 32) before the pre-copy-done mark"));
	assert_int_equal(proto_check_bulk_run(MIG_MODE_POST, true, MSG_PAGES), 0);
	assert_int_equal(proto_check_bulk_run(MIG_MODE_HYBRID, false, MSG_ZERO), 0);
	assert_int_equal(proto_check_bulk_run(MIG_MODE_STOPCOPY, false, MSG_PAGES), 0);

	assert_int_equal(proto_check_mark(MIG_MODE_POST, false, MARK_BULK_END), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "bulk-end mark where pre-copy-done belongs"));
	assert_int_equal(proto_check_mark(MIG_MODE_POST, false, MARK_PRECOPY_DONE), 0);
	assert_int_equal(proto_check_mark(MIG_MODE_POST, true, MARK_PRECOPY_DONE), -EPROTO);
	assert_int_equal(proto_check_mark(MIG_MODE_POST, false, MARK_ROUND_END), -EPROTO);
	assert_int_equal(proto_check_mark(MIG_MODE_PRE, false, MARK_ROUND_END), 0);
	assert_int_equal(proto_check_mark(MIG_MODE_PRE, false, MARK_PRECOPY_DONE), -EPROTO);
	assert_int_equal(proto_check_mark(MIG_MODE_STOPCOPY, false, MARK_BULK_END), 0);
	assert_int_equal(proto_check_mark(MIG_MODE_HYBRID, true, MARK_BULK_END), 0);
	assert_int_equal(proto_check_mark(MIG_MODE_PRE, false, 9), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "MARK: unknown mark 9"));
}

/* DISCARD runs: inside RAM, ascending and disjoint across frames. */
static void test_run_iterator_bounds_and_order(void **state)
{
	uint8_t b[36] = { 0 };
	struct proto_run run;
	uint64_t floor = 0;
	struct rbuf r;

	b[0] = 4, b[8] = 2;       /* 4+2 */
	b[12] = 10, b[20] = 1;    /* 10+1 */
	b[24] = 5, b[32] = 1;     /* 5+1: precedes 10+1 */
	rbuf_init(&r, b, sizeof(b));
	assert_int_equal(proto_next_run(&r, 100, &floor, "DISCARD", &run), 1);
	assert_int_equal(run.pfn, 4);
	assert_int_equal(proto_next_run(&r, 100, &floor, "DISCARD", &run), 1);
	assert_int_equal(floor, 11);
	assert_int_equal(proto_next_run(&r, 100, &floor, "DISCARD", &run), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "DISCARD run 5+1 overlaps or precedes"));
	/* without a floor order is free, but RAM is not */
	rbuf_init(&r, b + 24, 12);
	assert_int_equal(proto_next_run(&r, 100, NULL, "present", &run), 1);
	assert_int_equal(proto_next_run(&r, 100, NULL, "present", &run), 0);
	rbuf_init(&r, b + 12, 12);
	assert_int_equal(proto_next_run(&r, 10, NULL, "present", &run), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "present run 10+1 outside guest RAM (10 pages)"));
	/* a run cut short */
	rbuf_init(&r, b, 7);
	assert_int_equal(proto_next_run(&r, 100, NULL, "DISCARD", &run), -EPROTO);
}

static void test_mode_names(void **state)
{
	enum mig_mode m;

	assert_int_equal(mig_mode_parse("stop-copy", &m), 0);
	assert_int_equal(m, MIG_MODE_STOPCOPY);
	assert_int_equal(mig_mode_parse("hybrid", &m), 0);
	assert_string_equal(mig_mode_name(m), "hybrid");
	assert_int_equal(mig_mode_parse("postcopy", &m), -EINVAL);
}

/* A urgent frame's payload: u64 pfn, u32 n (or PAGE's flags), u32 0, then data. */
static struct proto_msg urgent_frame(uint16_t type, uint64_t pfn, uint32_t n, uint32_t data_pages)
{
	struct proto_msg m = { .type = type, .len = 16 + data_pages * PAGE_SIZE };
	struct wbuf w;

	m.payload = calloc(1, m.len + 1);
	assert_non_null(m.payload);
	w = (struct wbuf){ .data = m.payload, .cap = 16 };
	wbuf_put_u64(&w, pfn);
	wbuf_put_u32(&w, n);
	wbuf_put_u32(&w, 0);
	return m;
}

/*
 * Runs on urgent (FEAT_URGENT_RUNS): PAGES and ZERO reach a destination
 * only on a session that negotiated them, inside guest RAM; a source
 * never takes them; PAGE goes on as before.
 */
static void test_urgent_runs_need_their_feature(void **state)
{
	struct xport x = { .npages = 1024 };
	struct proto_msg pages = urgent_frame(MSG_PAGES, 512, 64, 64);
	struct proto_msg zero = urgent_frame(MSG_ZERO, 960, 64, 0);
	struct proto_msg far = urgent_frame(MSG_PAGES, 1000, 64, 64);
	struct proto_msg page = urgent_frame(MSG_PAGE, 7, 0, 1);
	struct xev ev;
	int ret;

	ret = tcp_decode_urgent(&x, &pages, &ev);
	assert_int_equal(ret, -EPROTO);
	assert_non_null(strstr(err_msg(ret), "urgent channel: unexpected PAGES"));
	x.features = FEAT_URGENT_RUNS;
	assert_int_equal(tcp_decode_urgent(&x, &pages, &ev), 1);
	assert_int_equal(ev.kind, XEV_RUN);
	assert_int_equal(ev.run.pfn, 512);
	assert_int_equal(ev.run.n, 64);
	assert_int_equal(ev.run.enc, XENC_RAW);
	assert_int_equal(ev.run.len, 64 * PAGE_SIZE);
	assert_ptr_equal(ev.run.data, pages.payload + 16);
	assert_int_equal(tcp_decode_urgent(&x, &zero, &ev), 1);
	assert_int_equal(ev.run.enc, XENC_ZERO);
	assert_int_equal(ev.run.n, 64);
	assert_null(ev.run.data);
	ret = tcp_decode_urgent(&x, &far, &ev);
	assert_int_equal(ret, -EPROTO);
	assert_non_null(strstr(err_msg(ret), "page run 1000+64 lies outside guest RAM"));
	assert_int_equal(tcp_decode_urgent(&x, &page, &ev), 1);
	assert_int_equal(ev.run.n, 1);
	/* a source is asked, never answered */
	x.source = true;
	ret = tcp_decode_urgent(&x, &pages, &ev);
	assert_int_equal(ret, -EPROTO);
	assert_non_null(strstr(err_msg(ret), "unexpected PAGES"));
	free(pages.payload);
	free(zero.payload);
	free(far.payload);
	free(page.payload);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_greeting_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_greeting_rejects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello_round_trip_and_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello_refuses_unknown_features, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_alert_first_is_named, setup, teardown),
		cmocka_unit_test_setup_teardown(test_frame_that_looks_like_tls_later, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hello2_round_trip, setup, teardown),
		cmocka_unit_test(test_negotiation_rules),
		cmocka_unit_test_setup_teardown(test_frame_length_checks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_frame, setup, teardown),
		cmocka_unit_test_setup_teardown(test_page_run_round_trip_and_bounds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_frame_digest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_frame_text, setup, teardown),
		cmocka_unit_test(test_header_decoder_names_channel_and_type),
		cmocka_unit_test(test_bulk_order_per_mode),
		cmocka_unit_test(test_run_iterator_bounds_and_order),
		cmocka_unit_test(test_mode_names),
		cmocka_unit_test(test_urgent_runs_need_their_feature),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
