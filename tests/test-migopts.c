/*
 * test-migopts.c - the migration options are declared once: the command
 * line and the control socket accept the same names, values and checks.
 */
#include <errno.h>
#include <string.h>

#include "t-util.h"
#include "umig/codec.h"
#include "umig/migopts.h"
#include "umig/util.h"

static int opt_of(const struct option *o, const char *name)
{
	for (; o->name; o++)
		if (!strcmp(o->name, name))
			return o->val;
	fail_msg("no option --%s", name);
	return -1;
}

static void test_command_line(void **state)
{
	static const struct option own[] = { { "to", required_argument, NULL, 't' }, { 0 } };
	struct option o[64];
	struct mig_params p;

	mig_params_default(&p);
	assert_int_equal(migopt_longopts(own, o, 64), 0);
	assert_string_equal(o[0].name, "to");
	assert_int_equal(migopt_parse(&p, 't', "x"), 0);   /* not ours */
	assert_int_equal(migopt_parse(&p, opt_of(o, "mode"), "hybrid"), 1);
	assert_int_equal(p.mode, MIG_MODE_HYBRID);
	assert_int_equal(migopt_parse(&p, opt_of(o, "downtime-limit"), "25"), 1);
	assert_int_equal(p.downtime_limit_ms, 25);
	assert_int_equal(migopt_parse(&p, opt_of(o, "quiet"), NULL), 1);
	assert_true(p.quiet);
	/* a bad value names the option and what it takes */
	assert_int_equal(migopt_parse(&p, opt_of(o, "max-rounds"), "0"), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "--max-rounds"));
	assert_non_null(strstr(err_msg(-EINVAL), "1..10000"));
	assert_int_equal(migopt_parse(&p, opt_of(o, "prepaging"), "sideways"), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "bubble-dir"));
	assert_int_equal(migopt_parse(&p, opt_of(o, "transport"), "carrier-pigeon"), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "unknown transport"));
	assert_int_equal(migopt_longopts(own, o, 3), -ENOSPC);
}

/* The options of sending less and converging. */
static void test_sending_less(void **state)
{
	static const struct option own[] = { { 0 } };
	struct option o[64];
	struct mig_params p;

	mig_params_default(&p);
	assert_int_equal(p.compress, CODEC_MODE_NONE);
	assert_int_equal(p.delta_cache, 0);
	assert_int_equal(p.max_bandwidth, 0);
	assert_int_equal(migopt_longopts(own, o, 64), 0);
	assert_int_equal(migopt_parse(&p, opt_of(o, "compress"), "zstd"), 1);
	assert_int_equal(p.compress, CODEC_MODE_ZSTD);
	assert_int_equal(migopt_parse(&p, opt_of(o, "compress"), "auto"), 1);
	assert_int_equal(p.compress, CODEC_MODE_AUTO);
	assert_int_equal(migopt_parse(&p, opt_of(o, "compress"), "gzip"), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "--compress"));
	assert_int_equal(migopt_parse(&p, opt_of(o, "delta-cache"), "64M"), 1);
	assert_int_equal(p.delta_cache, 64 << 20);
	assert_int_equal(migopt_parse(&p, opt_of(o, "delta-cache"), "0"), 1);
	assert_int_equal(p.delta_cache, 0);
	assert_int_equal(migopt_parse(&p, opt_of(o, "delta-cache"), "4K"), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "--delta-cache"));
	assert_int_equal(migopt_parse(&p, opt_of(o, "max-bandwidth"), "118M"), 1);
	assert_int_equal(p.max_bandwidth, 118ull << 20);
	assert_int_equal(migopt_parse(&p, opt_of(o, "max-bandwidth"), "1G"), 1);
	assert_int_equal(p.max_bandwidth, 1ull << 30);
	assert_int_equal(migopt_parse(&p, opt_of(o, "max-bandwidth"), "fast"), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "bytes per second"));
	assert_int_equal(migopt_parse(&p, opt_of(o, "max-bandwidth"), "100K"), -EINVAL);
	assert_int_equal(migopt_parse(&p, opt_of(o, "auto-converge"), NULL), 1);
	assert_true(p.auto_converge);
	assert_int_equal(migopt_parse(&p, opt_of(o, "fallback"), "post"), 1);
	assert_true(p.fallback_post);
	assert_int_equal(migopt_parse(&p, opt_of(o, "fallback"), "stop-copy"), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "post or none"));
	assert_int_equal(p.dirty_track, MIG_DIRTY_AUTO);	/* the default */
	assert_int_equal(migopt_parse(&p, opt_of(o, "dirty-track"), "kvm-log"), 1);
	assert_int_equal(p.dirty_track, MIG_DIRTY_KVM_LOG);
	assert_int_equal(migopt_parse(&p, opt_of(o, "dirty-track"), "wp"), 1);
	assert_int_equal(p.dirty_track, MIG_DIRTY_WP);
	assert_int_equal(migopt_parse(&p, opt_of(o, "dirty-track"), "ring"), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "--dirty-track: 'ring' is not a dirty tracker "
					    "(auto, wp or kvm-log)"));
}

/* What one front end prints the other reads back unchanged. */
static void test_json_round_trip(void **state)
{
	struct mig_params a, b;
	json_t *ja, *jb;

	mig_params_default(&a);
	a.mode = MIG_MODE_PRE;
	a.downtime_limit_ms = 7;
	a.max_rounds = 3;
	strcpy(a.prepaging, "linear");
	strcpy(a.stats_path, "/x/y.json");
	a.quiet = true;
	a.compress = CODEC_MODE_LZ4;
	a.delta_cache = 32 << 20;
	a.max_bandwidth = 118ull << 20;
	a.auto_converge = true;
	a.fallback_post = true;
	a.dirty_track = MIG_DIRTY_KVM_LOG;
	ja = migopt_to_json(&a);
	assert_int_equal(json_object_size(ja), migopt_count());
	mig_params_default(&b);
	assert_int_equal(migopt_from_json(&b, ja), 0);
	jb = migopt_to_json(&b);
	assert_true(json_equal(ja, jb));
	json_decref(ja);
	json_decref(jb);
}

static void test_json_refusals(void **state)
{
	struct mig_params p;
	json_t *j;

	mig_params_default(&p);
	j = json_pack("{s:s, s:i}", "to", "h:1", "downtime_limt_ms", 5);
	assert_int_equal(migopt_from_json(&p, j), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "unknown migrate argument 'downtime_limt_ms'"));
	json_decref(j);
	j = json_pack("{s:s}", "max_rounds", "lots");
	assert_int_equal(migopt_from_json(&p, j), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "'max_rounds'"));
	json_decref(j);
	j = json_pack("{s:i}", "quiet", 1);
	assert_int_equal(migopt_from_json(&p, j), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "true or false"));
	json_decref(j);
	j = json_pack("{s:i}", "downtime_limit_ms", -4);
	assert_int_equal(migopt_from_json(&p, j), -EINVAL);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_command_line),
		cmocka_unit_test(test_sending_less),
		cmocka_unit_test(test_json_round_trip),
		cmocka_unit_test(test_json_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
