/*
 * test-streams.c - parallel bulk streams (--streams N, FEAT_STREAMS): every
 * mode migrates memverify clean over several bulk connections, with
 * compression and deltas, under TLS, and the option's refusals.  A link
 * break on one of several streams is in test-failures.c
 * (test_postcopy_reset_streams), an older destination in test-compat.c.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "t-rig.h"
#include "t-util.h"

#define DONE T_MV_DONE

/* memverify (64 MiB, 24 MiB written per pass) over n streams in mode. */
static json_t *streams_migrate(const char *mode, const char *n, const char *const *more,
			       const char *const *dest_extra)
{
	const char *extra[16] = { "--streams", n };
	int k = 2;

	for (; more && *more && k < 15; more++)
		extra[k++] = *more;
	const struct rig_local m = { .guest = "memverify", .cmdline = "wss=24 secs=40 moved_secs=1",
				     .mode = mode, .after = "0.4", .done = DONE, .extra = extra,
				     .dest_extra = dest_extra, .bound_s = 120 };
	json_t *rec = rig_local_migrate(&m);

	assert_int_equal(json_integer_value(t_json_need(rec, "streams")), atoi(n));
	return rec;
}

static void every_mode(const char *n)
{
	static const char *const modes[] = { "post", "pre", "hybrid", "stop-copy" };

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		print_message("%s over %s streams\n", modes[i], n);
		json_decref(streams_migrate(modes[i], n, NULL, NULL));
	}
}

static void test_every_mode_three_streams(void **s) { every_mode("3"); }

/* The most streams there may be, in post-copy (one receiver thread each). */
static void test_sixteen_streams(void **s)
{
	json_decref(streams_migrate("post", "16", NULL, NULL));
}

/* Each stream's receiver has its own decoder: lz4 batches and deltas on four. */
static void test_compressed_streams(void **s)
{
	static const char *const lz4[] = { "--compress", "lz4", "--delta-cache", "8M", NULL };
	static const char *const zstd[] = { "--compress", "zstd", NULL };
	json_t *rec = streams_migrate("pre", "4", lz4, NULL);

	assert_true(json_integer_value(t_json_need(rec, "compress_bytes_in")) > 0);
	json_decref(rec);
	json_decref(streams_migrate("hybrid", "4", zstd, NULL));
}

/* Under TLS every stream is its own TLS session, bound to the control one. */
static void test_tls_streams(void **s)
{
	char *dir = t_tmpdir();
	const char *key = t_path(dir, "k");
	char *ka[] = { (char *)t_umig(), "keygen", (char *)key, NULL };
	struct t_result r;

	t_run(ka, 30, &r);
	assert_int_equal(r.status, 0);
	t_result_free(&r);
	const char *const src[] = { "--auth-key", key, NULL };
	const char *const dst[] = { "--auth-key", key, NULL };
	json_t *rec = streams_migrate("post", "3", src, dst);

	assert_string_equal(json_string_value(t_json_need(rec, "security")), "tls-psk");
	json_decref(rec);
	t_tmpdir_free(dir);
}

static void refused(const char *const *args, const char *said)
{
	char *a[16] = { (char *)t_umig(), "migrate" };
	struct t_result r;
	int n = 2;

	for (; *args && n < 15; args++)
		a[n++] = (char *)*args;
	t_run(a, 30, &r);
	if (r.status == 0 || !strstr(r.err, said))
		fail_msg("expected a refusal naming '%s'; status %d, stderr: %s", said, r.status,
			 r.err);
	t_result_free(&r);
}

static void test_bad_stream_counts(void **s)
{
	static const char *const zero[] = { "--streams", "0", "x.sock", "127.0.0.1:1", NULL };
	static const char *const many[] = { "--streams", "17", "x.sock", "127.0.0.1:1", NULL };
	static const char *const word[] = { "--streams", "two", "x.sock", "127.0.0.1:1", NULL };

	refused(zero, "'0' is not a stream count (1..16)");
	refused(many, "'17' is not a stream count (1..16)");
	refused(word, "'two' is not a stream count (1..16)");
}

/* RDMA has one bulk queue pair: refused before anything connects. */
static void test_streams_over_rdma_refused(void **s)
{
	const char *const argv[] = { t_umig(), "run", t_guest("memverify"), "--mem", "64M",
				     "--migrate-to", "127.0.0.1:1", "--transport", "rdma",
				     "--streams", "2", "--quiet", NULL };
	struct t_result r;

	t_run((char **)argv, 30, &r);
	if (strstr(r.err, "not built") || strstr(r.err, "unknown transport")) {
		t_result_free(&r);
		skip();   /* a build without RDMA refuses the transport itself */
	}
	assert_int_not_equal(r.status, 0);
	if (!strstr(r.err, "--streams works over the tcp transport only"))
		fail_msg("stderr: %s", r.err);
	t_result_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_mode_three_streams),
		cmocka_unit_test(test_sixteen_streams),
		cmocka_unit_test(test_compressed_streams),
		cmocka_unit_test(test_tls_streams),
		cmocka_unit_test(test_bad_stream_counts),
		cmocka_unit_test(test_streams_over_rdma_refused),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
