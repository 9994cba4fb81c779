/*
 * test-rdma.c - the RDMA transport.  On every host: its frame checks, the
 * authentication block of a connect request, RDMA_LISTEN and the retry
 * bounds (rdma/frame.c, no device needed).  Where an RDMA device and an
 * address on it exist (the test VM: UMIG_VM_LO_IP on rxe_lo): two xports
 * over real queue pairs, one migration's worth of frames in both
 * directions with data checks (more frames than there are credits), and
 * a source with the wrong secret refused.  Skips those with a reason
 * elsewhere.  Also the bookkeeping of one-sided post-copy (prefetch.c):
 * every page READ exactly once, faults first, the window respected, and
 * the zero map's wire form.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "t-util.h"
#include "prefetch.h"
#include "rdma.h"
#include "umig/log.h"
#include "umig/util.h"
#include "umig/xport.h"

#define NPAGES 1024

static uint8_t frame[RDMA_HDR_LEN + RDMA_BULK_PAGES * 4096];

static uint32_t put(uint16_t type, uint16_t flags, uint64_t pfn, uint32_t n, uint32_t data)
{
	struct rdma_hdr h = { .type = type, .flags = flags, .credits = 3, .pfn = pfn, .n = n };

	rdma_hdr_put(frame, &h);
	return RDMA_HDR_LEN + data;
}

static int dec(uint32_t len, enum xport_channel ch, bool source, struct xev *ev)
{
	struct rdma_hdr h;

	return rdma_frame_decode(frame, len, ch, source, NPAGES, &h, ev);
}

static void test_frames_accepted(void **state)
{
	struct xev ev;

	assert_int_equal(dec(put(MSG_PAGES, 0, 10, 2, 2 * 4096), XCH_BULK, false, &ev), 1);
	assert_int_equal(ev.kind, XEV_RUN);
	assert_int_equal(ev.run.pfn, 10);
	assert_int_equal(ev.run.n, 2);
	assert_ptr_equal(ev.run.data, frame + RDMA_HDR_LEN);
	assert_int_equal(dec(put(MSG_ZERO, 0, 0, NPAGES, 0), XCH_BULK, false, &ev), 1);
	assert_int_equal(ev.run.enc, XENC_ZERO);
	assert_int_equal(dec(put(MSG_MARK, 0, 0, MARK_BULK_END, 0), XCH_BULK, false, &ev), 1);
	assert_int_equal(ev.kind, XEV_MARK);
	assert_int_equal(ev.mark, MARK_BULK_END);
	assert_int_equal(dec(put(MSG_REQ, 0, NPAGES - 1, 1, 0), XCH_URGENT, true, &ev), 1);
	assert_int_equal(ev.kind, XEV_REQ);
	assert_int_equal(dec(put(MSG_PAGE, PAGE_FLAG_ZERO, 5, 1, 0), XCH_URGENT, false, &ev), 1);
	assert_int_equal(ev.run.enc, XENC_ZERO);
	assert_int_equal(dec(put(MSG_PAGE, 0, 5, 1, 4096), XCH_URGENT, false, &ev), 1);
	assert_int_equal(ev.run.len, 4096);
	/* a credit-only frame is not a completion */
	assert_int_equal(dec(put(MSG_RDMA_CREDIT, 0, 0, 0, 0), XCH_BULK, true, &ev), 0);
}

static void test_frames_refused(void **state)
{
	struct xev ev;

	/* runs outside guest RAM, data that does not match the count */
	assert_int_equal(dec(put(MSG_PAGES, 0, NPAGES - 1, 2, 2 * 4096), XCH_BULK, false, &ev), -EPROTO);
	assert_non_null(strstr(err_msg(-EPROTO), "outside guest RAM"));
	assert_int_equal(dec(put(MSG_ZERO, 0, 0, NPAGES + 1, 0), XCH_BULK, false, &ev), -EPROTO);
	assert_int_equal(dec(put(MSG_ZERO, 0, 0, 0, 0), XCH_BULK, false, &ev), -EPROTO);
	assert_int_equal(dec(put(MSG_PAGES, 0, 0, 3, 2 * 4096), XCH_BULK, false, &ev), -EPROTO);
	assert_int_equal(dec(put(MSG_ZERO, 0, 0, 1, 8), XCH_BULK, false, &ev), -EPROTO);
	/* wrong direction or channel */
	assert_int_equal(dec(put(MSG_PAGES, 0, 0, 1, 4096), XCH_BULK, true, &ev), -EPROTO);
	assert_int_equal(dec(put(MSG_REQ, 0, 0, 1, 0), XCH_URGENT, false, &ev), -EPROTO);
	assert_int_equal(dec(put(MSG_PAGE, 0, 0, 1, 4096), XCH_URGENT, true, &ev), -EPROTO);
	assert_int_equal(dec(put(MSG_REQ, 0, 0, 1, 0), XCH_BULK, false, &ev), -EPROTO);
	/* a zero page with data, a page outside RAM, a credit frame with data, too short */
	assert_int_equal(dec(put(MSG_PAGE, PAGE_FLAG_ZERO, 0, 1, 4096), XCH_URGENT, false, &ev), -EPROTO);
	assert_int_equal(dec(put(MSG_REQ, 0, NPAGES, 1, 0), XCH_URGENT, true, &ev), -EPROTO);
	assert_int_equal(dec(put(MSG_RDMA_CREDIT, 0, 0, 0, 8), XCH_URGENT, true, &ev), -EPROTO);
	assert_int_equal(dec(RDMA_HDR_LEN - 1, XCH_BULK, false, &ev), -EPROTO);
	/* longer than a receive buffer of the channel */
	assert_int_equal(dec(put(MSG_PAGE, 0, 0, 1, 2 * 4096), XCH_URGENT, false, &ev), -EPROTO);
}

static void test_auth(void **state)
{
	uint8_t secret[PROTO_SECRET_LEN], other[PROTO_SECRET_LEN], nonce[PROTO_NONCE_LEN];
	uint8_t a[RDMA_AUTH_LEN + 8], nonce2[PROTO_NONCE_LEN];
	enum xport_channel ch = XCH_CONTROL;

	memset(secret, 1, sizeof(secret));
	memset(other, 2, sizeof(other));
	memset(nonce, 3, sizeof(nonce));
	memset(nonce2, 4, sizeof(nonce2));
	memset(a, 0, sizeof(a));
	assert_int_equal(rdma_auth_make(secret, 77, nonce, XCH_URGENT, a), 0);
	/* rdma_cm pads private data: trailing bytes do not matter */
	assert_int_equal(rdma_auth_check(secret, 77, nonce, a, sizeof(a), &ch), 0);
	assert_int_equal(ch, XCH_URGENT);
	assert_int_equal(rdma_auth_check(other, 77, nonce, a, sizeof(a), &ch), -EACCES);
	assert_non_null(strstr(err_msg(-EACCES), "wrong MAC"));
	assert_int_equal(rdma_auth_check(secret, 78, nonce, a, sizeof(a), &ch), -EACCES);
	assert_int_equal(rdma_auth_check(secret, 77, nonce2, a, sizeof(a), &ch), -EACCES);
	assert_int_equal(rdma_auth_check(secret, 77, nonce, a, RDMA_AUTH_LEN - 1, &ch), -EACCES);
	assert_int_equal(rdma_auth_check(secret, 77, nonce, NULL, 0, &ch), -EACCES);
	/* the channel is under the MAC: relabelling it breaks the proof */
	a[4] = XCH_BULK;
	assert_int_equal(rdma_auth_check(secret, 77, nonce, a, sizeof(a), &ch), -EACCES);
	a[4] = 9;
	assert_int_equal(rdma_auth_check(secret, 77, nonce, a, sizeof(a), &ch), -EPROTO);
}

static void test_listen_msg(void **state)
{
	uint8_t b[RDMA_LISTEN_LEN], nonce[PROTO_NONCE_LEN] = { 9, 8, 7 }, got[PROTO_NONCE_LEN];
	struct proto_msg m = { .type = MSG_RDMA_LISTEN, .len = sizeof(b), .payload = b };
	uint16_t port;

	rdma_listen_put(b, 4791, nonce);
	assert_int_equal(rdma_listen_get(&m, &port, got), 0);
	assert_int_equal(port, 4791);
	assert_memory_equal(got, nonce, sizeof(nonce));
	rdma_listen_put(b, 0, nonce);
	assert_int_equal(rdma_listen_get(&m, &port, got), -EPROTO);
	m.type = MSG_ERROR;
	assert_int_equal(rdma_listen_get(&m, &port, got), -EPROTO);
}

/* Every retry bound is finite and a dead peer is noticed within half the peer timeout. */
static void test_retry_bounds(void **state)
{
	static const unsigned ms[] = { 0, 100, 1000, 5000, 60000, 3600000 };

	for (size_t i = 0; i < ARRAY_SIZE(ms); i++) {
		uint8_t t, r;
		uint64_t total_us;

		rdma_retry_params(ms[i], &t, &r);
		total_us = (4096ull << t) / 1000 * (r + 1);
		assert_true(t >= 8 && t <= 20);
		assert_true(r <= 7);
		if (ms[i] >= 100)
			assert_true(total_us <= (uint64_t)ms[i] * 1000 / 2 || t == 8);
	}
	assert_true(RDMA_RNR_RETRY < 7);
}

/* Every page exactly once over faults and prefetches, faults first, within the window. */
static void prefetch_policy(const char *policy)
{
	enum { N = 4096, WINDOW = 8 };
	struct rdma_prefetch *p;
	struct bitmap skip, seen;
	uint64_t reads = 0, expect;
	unsigned out = 0, step = 0;

	assert_int_equal(bitmap_init(&skip, N), 0);
	assert_int_equal(bitmap_init(&seen, N), 0);
	bitmap_set_range(&skip, 1000, 500);          /* zero at the source */
	bitmap_set(&skip, 7);
	expect = N - bitmap_count(&skip);
	assert_int_equal(rdma_prefetch_create(&p, policy, N, &skip, WINDOW), 0);
	for (;;) {
		uint64_t pfn;

		/* a fault every third step, on pages spread over RAM */
		if (step++ % 3 == 0) {
			uint64_t f = (step * 2654435761u) % N;
			int r = rdma_prefetch_fault(p, f);

			assert_true(r == 0 || r == 1);
			if (r == 1) {
				/* faults first: a faulted page nobody claimed is read now */
				assert_false(bitmap_test(&skip, f));
				assert_false(bitmap_test_and_set(&seen, f));
				reads++;
			}
		}
		pfn = rdma_prefetch_next(p);
		if (pfn == N) {
			/* only a full window or the end stops the prefetcher */
			if (out < WINDOW)
				assert_int_equal(bitmap_count(&seen), expect);
			if (!out)
				break;
			rdma_prefetch_done(p);
			out--;
			continue;
		}
		assert_true(++out <= WINDOW);
		assert_false(bitmap_test(&skip, pfn));
		assert_false(bitmap_test_and_set(&seen, pfn));
		reads++;
		if (step % 2)
			out--, rdma_prefetch_done(p);
	}
	assert_int_equal(reads, expect);
	assert_int_equal(bitmap_count(&seen), expect);
	assert_int_equal(p->faults_read + p->prefetched, expect);
	/* once everything is issued, a fault needs no READ */
	assert_int_equal(rdma_prefetch_fault(p, 0), 0);
	assert_int_equal(rdma_prefetch_fault(p, N), -EINVAL);
	rdma_prefetch_destroy(p);
	bitmap_free(&skip);
	bitmap_free(&seen);
}

static void test_prefetch_exactly_once(void **state)
{
	prefetch_policy("linear");
	prefetch_policy("bubble");
	prefetch_policy("bubble-dir");
}

/* The policy follows faults: after a fault, the prefetch continues next to it. */
static void test_prefetch_follows_faults(void **state)
{
	struct rdma_prefetch *p;
	uint64_t pfn;

	assert_int_equal(rdma_prefetch_create(&p, "bubble", 1000, NULL, 4), 0);
	assert_int_equal(rdma_prefetch_fault(p, 600), 1);
	pfn = rdma_prefetch_next(p);
	assert_true(pfn >= 598 && pfn <= 602 && pfn != 600);
	rdma_prefetch_destroy(p);
}

/* Runs for one READ: claimed neighbours, never a page already issued, each in the window. */
static void test_prefetch_runs(void **state)
{
	enum { N = 100 };
	struct rdma_prefetch *p;
	uint64_t first, total = 10, pfn;

	(void)state;
	assert_int_equal(rdma_prefetch_create(&p, "linear", N, NULL, 64), 0);
	rdma_prefetch_skip(p, 10, 10);               /* a zero run: never READ */
	assert_int_equal(rdma_prefetch_next(p), 0);
	assert_int_equal(rdma_prefetch_extend(p, 0, 16, &first), 10);
	assert_int_equal(first, 0);
	assert_int_equal(p->outstanding, 10);
	assert_int_equal(rdma_prefetch_next(p), 20);
	assert_int_equal(rdma_prefetch_extend(p, 20, 16, &first), 16);
	assert_int_equal(first, 20);
	assert_int_equal(rdma_prefetch_fault(p, 40), 1);
	assert_int_equal(rdma_prefetch_fault(p, 12), 0);   /* zero: arrives as a run */
	assert_int_equal(rdma_prefetch_next(p), 36);
	assert_int_equal(rdma_prefetch_extend(p, 36, 16, &first), 4);   /* 40 is the fault's */
	assert_int_equal(first, 36);
	/* backward: a fault ahead of the prefetch, which grows down to meet it */
	assert_int_equal(rdma_prefetch_fault(p, 70), 1);
	assert_false(bitmap_test_and_set(&p->issued, 69));
	assert_int_equal(rdma_prefetch_extend(p, 69, 8, &first), 8);
	assert_int_equal(first, 62);
	total += 10 + 16 + 4 + 8;
	while (p->outstanding)
		rdma_prefetch_done(p);
	while ((pfn = rdma_prefetch_next(p)) < N) {
		total += rdma_prefetch_extend(p, pfn, 16, &first);
		while (p->outstanding)
			rdma_prefetch_done(p);
	}
	/* every page once: READ ahead, READ on a fault, or skipped as zero */
	assert_int_equal(total + 2, N);
	assert_int_equal(bitmap_count(&p->issued), N);
	rdma_prefetch_destroy(p);
}

static void test_zeromap(void **state)
{
	enum { N = 300 };
	struct bitmap pop, zero;
	struct wbuf w;
	uint8_t bad[12];
	struct wbuf b = { .data = bad, .cap = sizeof(bad) };

	assert_int_equal(bitmap_init(&pop, N), 0);
	assert_int_equal(bitmap_init(&zero, N), 0);
	bitmap_set_range(&pop, 0, 10);
	bitmap_set_range(&pop, 50, 100);
	bitmap_set(&pop, 299);
	wbuf_init(&w);
	rdma_zeromap_encode(&w, &pop, N);
	assert_int_equal(w.len, 2 * 12);             /* 10..49, 150..298 */
	assert_int_equal(rdma_zeromap_decode(w.data, w.len, N, &zero), 0);
	for (uint64_t i = 0; i < N; i++)
		assert_int_equal(bitmap_test(&zero, i), !bitmap_test(&pop, i));
	/* refused: a ragged length, a run past RAM, an empty run, runs out of order */
	assert_int_equal(rdma_zeromap_decode(w.data, w.len - 1, N, &zero), -EPROTO);
	assert_int_equal(rdma_zeromap_decode(w.data, w.len, 200, &zero), -EPROTO);
	wbuf_put_u64(&b, 5);
	wbuf_put_u32(&b, 0);
	assert_int_equal(rdma_zeromap_decode(bad, 12, N, &zero), -EPROTO);
	memcpy(bad, (uint8_t *)w.data + 12, 12);
	{
		uint8_t two[24];

		memcpy(two, (uint8_t *)w.data + 12, 12);
		memcpy(two + 12, w.data, 12);
		assert_int_equal(rdma_zeromap_decode(two, 24, N, &zero), -EPROTO);
	}
	/* nothing populated: one run; everything: no run */
	wbuf_reset(&w);
	bitmap_clear_all(&pop);
	rdma_zeromap_encode(&w, &pop, N);
	assert_int_equal(w.len, 12);
	wbuf_reset(&w);
	bitmap_set_range(&pop, 0, N);
	rdma_zeromap_encode(&w, &pop, N);
	assert_int_equal(w.len, 0);
	wbuf_free(&w);
	bitmap_free(&pop);
	bitmap_free(&zero);
}

/* --- over real queue pairs (the test VM) ----------------------------------------- */

#ifdef UMIG_HAVE_RDMA
struct side {
	const char *ip;
	uint16_t port;
	int lfd;
	uint8_t secret[PROTO_SECRET_LEN];
	bool busy_poll;
	struct xport *x;
	int ret;
};

static void *dest_main(void *arg)
{
	struct side *d = arg;

	d->ret = xport_accept(&d->x, "rdma", d->lfd, 5000, NULL);
	if (!d->ret) {
		d->x->npages = NPAGES;
		d->x->secret = d->secret;
		d->x->busy_poll = d->busy_poll;
		d->x->peer_timeout_ms = 5000;
		d->ret = xport_accept_data(d->x, d->lfd, 3000);
	}
	return NULL;
}

static int pair_up(struct side *s, struct side *d, pthread_t *t)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);

	d->lfd = xconn_tcp_listen(d->ip, 0);
	if (d->lfd < 0)
		return d->lfd;

	getsockname(d->lfd, (struct sockaddr *)&a, &l);
	d->port = ntohs(a.sin_port);
	pthread_create(t, NULL, dest_main, d);
	s->ret = xport_connect(&s->x, "rdma", d->ip, d->port, 42, 5000, NULL);
	if (!s->ret) {
		s->x->npages = NPAGES;
		s->x->secret = s->secret;
		s->x->busy_poll = s->busy_poll;
		s->x->peer_timeout_ms = 5000;
		s->ret = xport_connect_data(s->x, d->ip, d->port, 5000);
	}
	pthread_join(*t, NULL);
	return 0;
}

static const char *vm_ip(void)
{
	const char *ip = getenv("UMIG_VM_LO_IP");

	return ip && *ip && rdma_devices_check() == 0 ? ip : NULL;
}

static void qp_traffic(bool busy_poll)
{
	static uint8_t page[RDMA_BULK_PAGES * 4096];
	struct side s = { .busy_poll = busy_poll }, d = { .ip = vm_ip(), .busy_poll = busy_poll };
	struct xev ev;
	pthread_t t;

	if (!d.ip) {
		print_message("skip: no RDMA device with an address (runs in the test VM: make check-vm)\n");
		skip();
	}
	memset(s.secret, 5, sizeof(s.secret));
	memcpy(d.secret, s.secret, sizeof(d.secret));
	assert_int_equal(pair_up(&s, &d, &t), 0);
	assert_int_equal(s.ret, 0);
	assert_int_equal(d.ret, 0);
	/* far more frames than credits: the receiver must hand them back */
	for (int i = 0; i < 300; i++) {
		struct xrun r = { .pfn = (i * 7) % (NPAGES - RDMA_BULK_PAGES), .n = RDMA_BULK_PAGES,
				  .enc = XENC_RAW, .data = page, .len = sizeof(page) };

		memset(page, i & 0xff, sizeof(page));
		assert_int_equal(xport_push(s.x, &r), 0);
		assert_int_equal(xport_reap(d.x, XQ_BULK, &ev, 5000), 1);
		assert_int_equal(ev.run.pfn, r.pfn);
		assert_int_equal(ev.run.data[4096 * 3 + 5], i & 0xff);
	}
	assert_int_equal(xport_mark(s.x, MARK_BULK_END, 1), 0);
	assert_int_equal(xport_reap(d.x, XQ_BULK, &ev, 5000), 1);
	assert_int_equal(ev.kind, XEV_MARK);
	for (int i = 0; i < 200; i++) {
		struct xrun r = { .pfn = i, .n = 1, .enc = XENC_RAW, .data = page, .len = 4096 };

		assert_int_equal(xport_fetch(d.x, i), 0);
		assert_int_equal(xport_reap(s.x, XQ_URGENT, &ev, 5000), 1);
		assert_int_equal(ev.kind, XEV_REQ);
		assert_int_equal(ev.run.pfn, i);
		page[0] = i;
		assert_int_equal(xport_reply(s.x, &r), 0);
		assert_int_equal(xport_reap(d.x, XQ_URGENT, &ev, 5000), 1);
		assert_int_equal(ev.run.data[0], i & 0xff);
	}
	/* nothing more: a bounded reap returns 0 */
	assert_int_equal(xport_reap(d.x, XQ_BULK, &ev, 100), 0);
	/* the source goes: the destination's reap ends with an error, not a hang */
	xport_close(s.x);
	assert_true(xport_reap(d.x, XQ_URGENT, &ev, 10000) < 0);
	xport_close(d.x);
	close(d.lfd);
}

static void test_qp_traffic(void **state)
{
	qp_traffic(false);
}

/* --rdma-poll: the same traffic with the progress threads spinning */
static void test_qp_traffic_busy_poll(void **state)
{
	qp_traffic(true);
}

static void test_wrong_secret_refused(void **state)
{
	struct side s = { 0 }, d = { .ip = vm_ip() };
	pthread_t t;

	t_skip_unless(d.ip, "no RDMA device with an address (runs in the test VM: make check-vm)\n");
	memset(s.secret, 5, sizeof(s.secret));
	memset(d.secret, 6, sizeof(d.secret));
	assert_int_equal(pair_up(&s, &d, &t), 0);
	print_message("source: %s\n", err_msg(s.ret));
	assert_int_equal(s.ret, -ECONNREFUSED);
	assert_int_equal(d.ret, -ETIMEDOUT);
	xport_close(s.x);
	xport_close(d.x);
	close(d.lfd);
}
#else
static void test_qp_traffic(void **state)
{
	t_skip_unless(false, "umig was built without RDMA (libibverbs-dev, librdmacm-dev)\n");
}

static void test_qp_traffic_busy_poll(void **state)
{
	t_skip_unless(false, "umig was built without RDMA (libibverbs-dev, librdmacm-dev)\n");
}

static void test_wrong_secret_refused(void **state)
{
	t_skip_unless(false, "umig was built without RDMA (libibverbs-dev, librdmacm-dev)\n");
}
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frames_accepted),
		cmocka_unit_test(test_frames_refused),
		cmocka_unit_test(test_auth),
		cmocka_unit_test(test_listen_msg),
		cmocka_unit_test(test_retry_bounds),
		cmocka_unit_test(test_prefetch_exactly_once),
		cmocka_unit_test(test_prefetch_follows_faults),
		cmocka_unit_test(test_prefetch_runs),
		cmocka_unit_test(test_zeromap),
		cmocka_unit_test(test_qp_traffic),
		cmocka_unit_test(test_qp_traffic_busy_poll),
		cmocka_unit_test(test_wrong_secret_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
