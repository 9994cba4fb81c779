/*
 * test-util.c - the parsers of util.h, the encoders of buf.h and the
 * per-thread error detail.
 *
 * Everything umig reads from a person (sizes, durations, addresses) goes
 * through parse_*, and everything it reads from a file or a socket goes
 * through an rbuf, so these pin the exact accept/reject boundaries and the
 * exact bytes on the wire (little-endian, whatever the host).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "t-util.h"
#include "umig/buf.h"
#include "umig/util.h"

/* parse_size() of s must fail with code and leave *out alone. */
static void t_size_rejects(const char *s, int code)
{
	uint64_t v = 0x5a5a;

	assert_int_equal(parse_size(s, &v), code);
	assert_true(v == 0x5a5a);
}

static uint64_t t_size(const char *s)
{
	uint64_t v = 0;

	assert_int_equal(parse_size(s, &v), 0);
	return v;
}

static void test_parse_size_units(void **state)
{
	(void)state;
	assert_true(t_size("4096") == 4096);
	assert_true(t_size("0") == 0);
	assert_true(t_size("64K") == 64ull << 10);
	assert_true(t_size("64k") == 64ull << 10);
	assert_true(t_size("64M") == 64ull << 20);
	assert_true(t_size("4G") == 4ull << 30);
	assert_true(t_size("1T") == 1ull << 40);
	assert_true(t_size("64MiB") == 64ull << 20);
	assert_true(t_size("64MB") == 64ull << 20);
	assert_true(t_size("16777215T") == 16777215ull << 40); /* largest that fits */
}

static void test_parse_size_rejects(void **state)
{
	(void)state;
	t_size_rejects(NULL, -EINVAL);
	t_size_rejects("", -EINVAL);
	t_size_rejects("-1", -EINVAL);
	t_size_rejects("12Q", -EINVAL);
	t_size_rejects("M", -EINVAL);
	t_size_rejects("64MiBs", -EINVAL);
	t_size_rejects("64iB", -EINVAL);	/* a suffix needs a unit */
	t_size_rejects("64 M", -EINVAL);
	t_size_rejects("1.5G", -EINVAL);
	t_size_rejects("16777216T", -ERANGE);	/* 2^64 */
	t_size_rejects("99999999999T", -ERANGE);
	t_size_rejects("99999999999999999999", -ERANGE);
}

/*
 * Regression: strtoull() skips leading space and accepts a sign, so " -1"
 * used to slip past the "-" check and parse as 2^64 - 1.
 */
static void test_parse_rejects_hidden_sign(void **state)
{
	uint64_t v = 7;

	(void)state;
	t_size_rejects(" -1", -EINVAL);
	t_size_rejects("+4K", -EINVAL);
	t_size_rejects(" 64M", -EINVAL);
	assert_int_equal(parse_u64(" -1", &v), -EINVAL);
	assert_int_equal(parse_u64("+5", &v), -EINVAL);
	assert_int_equal(parse_u64("\t9", &v), -EINVAL);
	assert_true(v == 7);
}

static void test_parse_u64(void **state)
{
	uint64_t v = 7;

	(void)state;
	assert_int_equal(parse_u64("0", &v), 0);
	assert_true(v == 0);
	assert_int_equal(parse_u64("18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(parse_u64("18446744073709551616", &v), -ERANGE);
	v = 7;
	assert_int_equal(parse_u64("", &v), -EINVAL);
	assert_int_equal(parse_u64(NULL, &v), -EINVAL);
	assert_int_equal(parse_u64("-1", &v), -EINVAL);
	assert_int_equal(parse_u64("12x", &v), -EINVAL);
	assert_int_equal(parse_u64("4K", &v), -EINVAL);	/* no units here */
	assert_true(v == 7);
}

static void test_parse_seconds(void **state)
{
	double d = -1;

	(void)state;
	assert_int_equal(parse_seconds("1.5", &d), 0);
	assert_true(d == 1.5);
	assert_int_equal(parse_seconds("0", &d), 0);
	assert_true(d == 0);
	assert_int_equal(parse_seconds("10000000", &d), 0);	/* 1e7: the limit */
	assert_true(d == 1e7);
	d = 42;
	assert_int_equal(parse_seconds("", &d), -EINVAL);
	assert_int_equal(parse_seconds(NULL, &d), -EINVAL);
	assert_int_equal(parse_seconds("-1", &d), -EINVAL);
	assert_int_equal(parse_seconds("2s", &d), -EINVAL);
	assert_int_equal(parse_seconds("nan", &d), -EINVAL);
	assert_int_equal(parse_seconds("inf", &d), -EINVAL);
	assert_int_equal(parse_seconds("1e8", &d), -EINVAL);
	assert_true(d == 42);
}

static void test_parse_hostport_accepts(void **state)
{
	char host[64];
	uint16_t port = 0;

	(void)state;
	assert_int_equal(parse_hostport("127.0.0.1:4444", host, sizeof(host), &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 4444);
	assert_int_equal(parse_hostport("[::1]:5", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 5);
	assert_int_equal(parse_hostport("h:65535", host, sizeof(host), &port), 0);
	assert_string_equal(host, "h");
	assert_int_equal(port, 65535);
	/* exactly fits: 3 bytes of host and its NUL */
	assert_int_equal(parse_hostport("abc:1", host, 4, &port), 0);
	assert_string_equal(host, "abc");
}

static void test_parse_hostport_rejects(void **state)
{
	char host[16] = "untouched";
	uint16_t port = 77;

	(void)state;
	assert_int_equal(parse_hostport(":1", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(parse_hostport("h:0", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(parse_hostport("h:65536", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(parse_hostport("h:x", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(parse_hostport("h:", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(parse_hostport("h:-1", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(parse_hostport("noport", host, sizeof(host), &port), -EINVAL);
	assert_int_equal(parse_hostport("abcd:1", host, 4, &port), -EINVAL);
	assert_int_equal(parse_hostport("a-very-long-host-name:1", host,
					 sizeof(host), &port), -EINVAL);
	assert_string_equal(host, "untouched");
	assert_int_equal(port, 77);
}

static void test_wbuf_encodes_little_endian(void **state)
{
	static const uint8_t want[] = {
		0xab,
		0x02, 0x01,
		0x04, 0x03, 0x02, 0x01,
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
		'x', 'y',
	};
	struct wbuf w;

	(void)state;
	wbuf_init(&w);
	wbuf_put_u8(&w, 0xab);
	wbuf_put_u16(&w, 0x0102);
	wbuf_put_u32(&w, 0x01020304);
	wbuf_put_u64(&w, 0x0102030405060708ull);
	wbuf_put(&w, "xy", 2);
	wbuf_put(&w, NULL, 0);
	assert_int_equal(w.err, 0);
	assert_int_equal(w.len, sizeof(want));
	assert_memory_equal(w.data, want, sizeof(want));
	wbuf_free(&w);
	assert_null(w.data);
	assert_int_equal(w.len, 0);
}

static void test_wbuf_grows_and_resets(void **state)
{
	struct wbuf w;
	uint8_t *p;
	size_t cap;

	(void)state;
	wbuf_init(&w);
	for (unsigned i = 0; i < 3000; i++)
		wbuf_put_u8(&w, (uint8_t)(i * 7));
	assert_int_equal(w.len, 3000);
	assert_true(w.cap >= 3000);
	for (unsigned i = 0; i < 3000; i++)
		assert_int_equal(w.data[i], (uint8_t)(i * 7));
	cap = w.cap;
	wbuf_reset(&w);
	assert_int_equal(w.len, 0);
	assert_int_equal(w.cap, cap);
	p = wbuf_reserve(&w, 5);
	assert_true(p == w.data);
	assert_int_equal(w.len, 5);
	wbuf_free(&w);
}

static void test_wbuf_patch_u32(void **state)
{
	static const uint8_t want[] = { 0xaa, 0x44, 0x33, 0x22, 0x11, 0xbb };
	struct wbuf w;

	(void)state;
	wbuf_init(&w);
	wbuf_put_u8(&w, 0xaa);
	wbuf_put_u32(&w, 0);
	wbuf_put_u8(&w, 0xbb);
	wbuf_patch_u32(&w, 1, 0x11223344);
	assert_memory_equal(w.data, want, sizeof(want));
	/*
	 * A patch that would run past the end is ignored, not a write.
	 * Regression: "off + 4 > len" wrapped for off near SIZE_MAX and
	 * wrote just before the buffer.
	 */
	wbuf_patch_u32(&w, 3, 0xdeadbeef);
	wbuf_patch_u32(&w, SIZE_MAX - 1, 0xdeadbeef);
	assert_int_equal(w.len, sizeof(want));
	assert_memory_equal(w.data, want, sizeof(want));
	wbuf_free(&w);
}

static void test_rbuf_round_trip(void **state)
{
	struct wbuf w;
	struct rbuf r;
	char s[3];

	(void)state;
	wbuf_init(&w);
	wbuf_put_u8(&w, 0xfe);
	wbuf_put_u16(&w, 0xfedc);
	wbuf_put_u32(&w, 0xfedcba98u);
	wbuf_put_u64(&w, 0xfedcba9876543210ull);
	wbuf_put(&w, "abc", 3);
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(rbuf_left(&r), 18);
	assert_int_equal(rbuf_get_u8(&r), 0xfe);
	assert_int_equal(rbuf_get_u16(&r), 0xfedc);
	assert_true(rbuf_get_u32(&r) == 0xfedcba98u);
	assert_true(rbuf_get_u64(&r) == 0xfedcba9876543210ull);
	rbuf_get(&r, s, 3);
	assert_memory_equal(s, "abc", 3);
	assert_int_equal(rbuf_left(&r), 0);
	assert_int_equal(r.err, 0);
	wbuf_free(&w);
}

static void test_rbuf_decodes_little_endian(void **state)
{
	static const uint8_t in[] = { 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08 };
	struct rbuf r;

	(void)state;
	rbuf_init(&r, in, sizeof(in));
	assert_true(rbuf_get_u64(&r) == 0x0807060504030201ull);
	rbuf_init(&r, in, sizeof(in));
	assert_int_equal(rbuf_get_u16(&r), 0x0201);
	assert_true(rbuf_get_u32(&r) == 0x06050403u);
}

/* A short read returns 0, sets -EBADMSG, and every later read fails too. */
static void test_rbuf_overrun_is_sticky(void **state)
{
	static const uint8_t in[] = { 1, 2, 3 };
	struct rbuf r;
	uint8_t dst[4] = { 9, 9, 9, 9 };

	(void)state;
	rbuf_init(&r, in, sizeof(in));
	assert_int_equal(rbuf_get_u8(&r), 1);
	assert_int_equal(rbuf_get_u32(&r), 0);
	assert_int_equal(r.err, -EBADMSG);
	assert_int_equal(r.off, 1);		/* nothing consumed */
	assert_int_equal(rbuf_left(&r), 0);
	/* bytes remain, but the error sticks */
	assert_int_equal(rbuf_get_u8(&r), 0);
	assert_null(rbuf_take(&r, 1));
	rbuf_get(&r, dst, sizeof(dst));
	assert_memory_equal(dst, "\0\0\0\0", 4);	/* zeroed, not stale */
	assert_int_equal(r.err, -EBADMSG);

	rbuf_init(&r, in, sizeof(in));
	assert_true(rbuf_get_u64(&r) == 0);
	assert_int_equal(r.err, -EBADMSG);
	rbuf_init(&r, in, sizeof(in));
	assert_null(rbuf_take(&r, SIZE_MAX));	/* no wrap-around */
	assert_int_equal(r.err, -EBADMSG);
	rbuf_init(&r, NULL, 0);
	assert_int_equal(rbuf_get_u16(&r), 0);
	assert_int_equal(r.err, -EBADMSG);
}

static void test_rbuf_take_points_into_input(void **state)
{
	static const uint8_t in[] = { 1, 2, 3, 4 };
	struct rbuf r;

	(void)state;
	rbuf_init(&r, in, sizeof(in));
	assert_true(rbuf_take(&r, 0) == in);
	assert_true(rbuf_take(&r, 3) == in);
	assert_true(rbuf_take(&r, 1) == in + 3);
	assert_int_equal(rbuf_left(&r), 0);
	assert_int_equal(r.err, 0);
}

static void test_rbuf_sub_bounds(void **state)
{
	static const uint8_t in[] = { 1, 2, 3, 4, 5, 6 };
	struct rbuf r, sub;

	(void)state;
	rbuf_init(&r, in, sizeof(in));
	rbuf_get_u8(&r);
	rbuf_sub(&r, 3, &sub);
	assert_int_equal(r.err, 0);
	assert_int_equal(sub.err, 0);
	assert_int_equal(rbuf_left(&sub), 3);
	assert_int_equal(rbuf_left(&r), 2);
	/* the sub-buffer ends at its own boundary, not at the parent's */
	assert_int_equal(rbuf_get_u16(&sub), 0x0302);
	assert_int_equal(rbuf_get_u16(&sub), 0);
	assert_int_equal(sub.err, -EBADMSG);
	assert_int_equal(r.err, 0);
	assert_int_equal(rbuf_get_u8(&r), 5);

	/* asking for more than is left marks both bad */
	rbuf_sub(&r, 2, &sub);
	assert_int_equal(r.err, -EBADMSG);
	assert_int_equal(sub.err, -EBADMSG);
	assert_int_equal(sub.len, 0);
	assert_int_equal(rbuf_left(&sub), 0);

	rbuf_init(&r, in, sizeof(in));
	rbuf_sub(&r, sizeof(in), &sub);
	assert_int_equal(r.err, 0);
	assert_int_equal(rbuf_left(&sub), sizeof(in));
	assert_int_equal(rbuf_left(&r), 0);
}

static void *t_thread_err(void *arg)
{
	(void)arg;
	/* a fresh thread has no detail: falls back to strerror */
	return (void *)(uintptr_t)(strcmp(err_msg(-ENOENT), strerror(ENOENT)) == 0);
}

static void test_err_set_and_msg(void **state)
{
	pthread_t th;
	void *ok = NULL;

	(void)state;
	err_clear();
	assert_string_equal(err_msg(-ENOENT), strerror(ENOENT));
	assert_string_equal(err_msg(EPIPE), strerror(EPIPE));
	assert_int_equal(err_set(-EBADMSG, "snapshot: truncated in RAM run %u", 3u),
			 -EBADMSG);
	assert_string_equal(err_msg(-EBADMSG), "snapshot: truncated in RAM run 3");
	/* the detail wins over the code until cleared */
	assert_string_equal(err_msg(-ENOENT), "snapshot: truncated in RAM run 3");
	/* detail is per thread */
	assert_int_equal(pthread_create(&th, NULL, t_thread_err, NULL), 0);
	assert_int_equal(pthread_join(th, &ok), 0);
	assert_true(ok != NULL);
	assert_string_equal(err_msg(-EBADMSG), "snapshot: truncated in RAM run 3");
	err_clear();
	assert_string_equal(err_msg(-EBADMSG), strerror(EBADMSG));
}

static void test_err_set_truncates_long_detail(void **state)
{
	char big[2000];

	(void)state;
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	assert_int_equal(err_set(-EINVAL, "%s", big), -EINVAL);
	assert_true(strlen(err_msg(-EINVAL)) > 100);
	assert_true(strlen(err_msg(-EINVAL)) < sizeof(big) - 1);
	err_clear();
}

static void test_errno_name(void **state)
{
	(void)state;
	assert_string_equal(errno_name(EPERM), "EPERM");
	assert_string_equal(errno_name(-EBADMSG), "EBADMSG");
	assert_string_equal(errno_name(EPROTONOSUPPORT), "EPROTONOSUPPORT");
	assert_string_equal(errno_name(0), "E?");
	assert_string_equal(errno_name(99999), "E?");
}

static void test_read_full_write_full(void **state)
{
	char out[8] = { 0 };
	int p[2];

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write_full(p[1], "abcdef", 6), 0);
	assert_int_equal(read_full(p[0], out, 4), 0);
	assert_memory_equal(out, "abcd", 4);
	close(p[1]);
	/* 2 bytes left, 4 wanted: early EOF */
	assert_int_equal(read_full(p[0], out, 4), -EPIPE);
	close(p[0]);
	assert_int_equal(write_full(-1, "x", 1), -EBADF);
}

static void test_now_ns_is_monotonic(void **state)
{
	uint64_t a, b;

	(void)state;
	a = now_ns();
	usleep(2000);
	b = now_ns();
	assert_true(b - a >= 2000000ull);
	assert_true(b - a < 5000000000ull);
	/* realtime is after 2020-01-01 */
	assert_true(now_realtime_ns() > 1577836800ull * 1000000000ull);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size_units),
		cmocka_unit_test(test_parse_size_rejects),
		cmocka_unit_test(test_parse_rejects_hidden_sign),
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_parse_seconds),
		cmocka_unit_test(test_parse_hostport_accepts),
		cmocka_unit_test(test_parse_hostport_rejects),
		cmocka_unit_test(test_wbuf_encodes_little_endian),
		cmocka_unit_test(test_wbuf_grows_and_resets),
		cmocka_unit_test(test_wbuf_patch_u32),
		cmocka_unit_test(test_rbuf_round_trip),
		cmocka_unit_test(test_rbuf_decodes_little_endian),
		cmocka_unit_test(test_rbuf_overrun_is_sticky),
		cmocka_unit_test(test_rbuf_take_points_into_input),
		cmocka_unit_test(test_rbuf_sub_bounds),
		cmocka_unit_test(test_err_set_and_msg),
		cmocka_unit_test(test_err_set_truncates_long_detail),
		cmocka_unit_test(test_errno_name),
		cmocka_unit_test(test_read_full_write_full),
		cmocka_unit_test(test_now_ns_is_monotonic),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
