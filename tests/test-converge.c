/*
 * test-converge.c - pre-copy that converges: the rate limit holds the
 * bulk push to its rate, a `dirty` guest that outruns a slow link never
 * converges alone and does with --auto-converge, and --fallback post
 * switches a stuck pre-copy to post-copy, with the reasons in the record.
 *
 * The link is made slow on loopback with --max-bandwidth, so no network
 * namespace is needed.  Bounds are loose: a busy machine only makes the
 * guest slower, which makes convergence easier, never the rate faster.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "t-rig.h"
#include "t-util.h"

/*
 * Migrate guest (64 MiB) in pre-copy with the extra options; the
 * destination's output must contain `done`.  Returns the source's record.
 */
static json_t *migrate(const char *guest, const char *cmdline, const char *done,
		       const char *const *extra)
{
	const struct rig_local m = { .guest = guest, .cmdline = cmdline, .mode = "pre",
				     .after = "0.5", .done = done, .extra = extra,
				     .bound_s = 150 };

	return rig_local_migrate(&m);
}

static double jnum(json_t *rec, const char *k)
{
	return json_number_value(t_json_need(rec, k));
}

static const char *jstr(json_t *rec, const char *k)
{
	const char *v = json_string_value(t_json_need(rec, k));

	if (!v)
		fail_msg("the record's '%s' is not a string", k);
	return v;
}

/* Every round's bulk bytes took at least bytes / rate, less the 5 ms burst. */
static void rounds_paced(json_t *rec, double rate)
{
	json_t *rounds = json_object_get(rec, "rounds_detail"), *x;
	size_t i;

	assert_true(json_array_size(rounds) > 0);
	json_array_foreach(rounds, i, x) {
		double bytes = json_number_value(json_object_get(x, "bytes"));
		double ms = json_number_value(json_object_get(x, "ms"));

		if (bytes > 1 << 20 && ms < bytes / rate * 1000 * 0.8)
			fail_msg("round %zu: %.0f bytes in %.0f ms, faster than %.0f bytes/s", i,
				 bytes, ms, rate);
	}
}

/* memverify outlives rate-limited rounds of any length and ends a second after it moves */
#define MV_CMD "wss=16 secs=40 moved_secs=1"

/* The bulk push never outruns --max-bandwidth (checked per round and in all). */
static void test_rate_limit(void **s)
{
	const char *extra[] = { "--max-bandwidth", "16M", "--max-rounds", "2", NULL };
	json_t *rec = migrate("memverify", MV_CMD, T_MV_DONE, extra);
	double rate = 16 << 20, bytes = jnum(rec, "wire_bytes_bulk");

	assert_int_equal(jnum(rec, "max_bandwidth"), 16 << 20);
	assert_true(bytes > 4 << 20);   /* what the guest wrote by then depends on the machine */
	assert_true(jnum(rec, "total_ms") >= bytes / rate * 1000 * 0.8);
	rounds_paced(rec, rate);
	json_decref(rec);
}

/*
 * `dirty` rewrites its 16 MiB every ~40 ms; a 40 MiB/s link needs 0.4 s
 * per pass, so every round finds the whole working set dirty again.
 */
#define DIRTY_CMD "wss=16 secs=10"
#define DIRTY_DONE "dirty: done"

/*
 * Clark's dynamic rate: the rounds are paced from a quarter of
 * --max-bandwidth upwards, never above it, and no write is lost.
 */
static void test_dynamic_rate(void **s)
{
	const char *extra[] = { "--max-bandwidth", "32M", "--dynamic-rate", "--max-rounds", "4", NULL };
	/* rate-limited rounds take seconds: the guest must outlive them */
	json_t *rec = migrate("memverify", MV_CMD, T_MV_DONE, extra);
	json_t *rounds = json_object_get(rec, "rounds_detail"), *x;
	double prev = 0, max = 32 << 20;
	size_t i;

	assert_true(json_array_size(rounds) >= 2);
	json_array_foreach(rounds, i, x) {
		double rate = json_number_value(json_object_get(x, "rate"));

		if (i == 0)
			assert_true(rate == max / 4);
		assert_true(rate >= prev && rate <= max);
		prev = rate;
	}
	assert_true(prev > max / 4);
	json_decref(rec);
}

static void test_dirty_never_converges_alone(void **s)
{
	const char *extra[] = { "--max-bandwidth", "40M", "--max-rounds", "5", NULL };
	json_t *rec = migrate("dirty", DIRTY_CMD, DIRTY_DONE, extra);

	assert_false(json_is_true(json_object_get(rec, "converged")));
	assert_string_equal(jstr(rec, "switch_reason"), "round-limit");
	assert_int_equal(jnum(rec, "throttle_pct_max"), 0);
	assert_int_equal(json_array_size(json_object_get(rec, "rounds_detail")), 5);
	json_decref(rec);
}

static void test_auto_converge(void **s)
{
	const char *extra[] = { "--max-bandwidth", "40M", "--max-rounds", "20", "--auto-converge",
				NULL };
	json_t *rec = migrate("dirty", DIRTY_CMD, DIRTY_DONE, extra);
	json_t *rounds = json_object_get(rec, "rounds_detail"), *x;
	unsigned prev = 0;
	size_t i;

	assert_true(json_is_true(json_object_get(rec, "converged")));
	assert_string_equal(jstr(rec, "switch_reason"), "converged");
	assert_true(jnum(rec, "throttle_pct_max") >= 20);
	assert_true(jnum(rec, "throttle_pct_max") <= 99);
	assert_true(jnum(rec, "throttled_ms") > 0);
	/* the throttle only steps up, from 20% */
	json_array_foreach(rounds, i, x) {
		unsigned pct = json_integer_value(json_object_get(x, "throttle_pct"));

		assert_true(pct >= prev);
		assert_true(!pct || pct >= 20);
		prev = pct;
	}
	json_decref(rec);
}

/* A stuck pre-copy goes on in post-copy; the guest keeps running there. */
static void test_fallback_post(void **s)
{
	const char *extra[] = { "--max-bandwidth", "40M", "--fallback", "post", NULL };
	json_t *rec = migrate("dirty", DIRTY_CMD, DIRTY_DONE, extra);

	assert_string_equal(jstr(rec, "mode"), "pre");
	assert_string_equal(jstr(rec, "fallback"), "post");
	assert_string_equal(jstr(rec, "switch_reason"), "no-progress");
	assert_true(json_is_true(json_object_get(rec, "switched_to_post")));
	assert_false(json_is_true(json_object_get(rec, "converged")));
	json_decref(rec);
}

/* memverify with the fallback, however it ends, arrives whole. */
static void test_fallback_memverify(void **s)
{
	const char *extra[] = { "--max-bandwidth", "20M", "--fallback", "post", "--delta-cache",
				"16M", NULL };
	json_t *rec = migrate("memverify", MV_CMD, T_MV_DONE, extra);
	const char *why = jstr(rec, "switch_reason");

	assert_true(!strcmp(why, "no-progress") || !strcmp(why, "converged") ||
		    !strcmp(why, "round-limit"));
	json_decref(rec);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rate_limit),
		cmocka_unit_test(test_dynamic_rate),
		cmocka_unit_test(test_dirty_never_converges_alone),
		cmocka_unit_test(test_auto_converge),
		cmocka_unit_test(test_fallback_post),
		cmocka_unit_test(test_fallback_memverify),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
