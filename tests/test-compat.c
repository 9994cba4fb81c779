/*
 * test-compat.c - migration between versions: operators upgrade hosts by
 * migrating guests off them, so this umig must migrate memverify to and
 * from the previous release (tests/compat/previous), in post-copy and
 * pre-copy.  The previous release is built from git history by
 * tests/compat/build-previous; without the history the tests skip.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"

static char prev_umig[600], prev_guests[600], skip_why[600];

static int group_setup(void **state)
{
	char *argv[] = { "tests/compat/build-previous", NULL };
	struct t_result r;
	char *nl;

	t_run(argv, 900, &r);
	nl = strchr(r.out, '\n');
	if (nl)
		*nl = 0;
	if (r.status == 0) {
		snprintf(prev_umig, sizeof(prev_umig), "%s/build/umig", r.out);
		snprintf(prev_guests, sizeof(prev_guests), "%s/build/guest-tests/memverify.elf", r.out);
	} else if (r.status == 77) {
		snprintf(skip_why, sizeof(skip_why), "%s", r.out);
	} else {
		fprintf(stderr, "building the previous release failed (%d):\n%s%s\n", r.status, r.out,
			r.err);
		t_result_free(&r);
		return -1;
	}
	t_result_free(&r);
	return 0;
}

static int t_port(void)
{
	static int base;

	if (!base)
		base = 20000 + (getpid() * 11 + time(NULL)) % 20000;
	return base++;
}

/* Migrate memverify from src_umig to dst_umig; returns the source's record. */
static json_t *migrate_between(const char *src_umig, const char *guest, const char *dst_umig,
			       const char *mode, const char *const *extra)
{
	char *dir = t_tmpdir();
	char listen[32], sstats[600];
	/* the previous release's memverify knows only passes=, run by its slower vCPU */
	const char *cmdline = strcmp(src_umig, t_umig()) ? "wss=32 passes=48" : "wss=32 secs=40 moved_secs=1";
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	struct t_result r;
	json_t *rec;
	char *o, *e;
	int port = t_port(), dst;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(sstats, sizeof(sstats), "%s", t_path(dir, "src.json"));
	char *da[] = { (char *)dst_umig, "incoming", "--listen", listen, "--quiet", NULL };
	pid_t dpid = t_spawn(da, dout, derr);

	usleep(300000);
	char *sa[32] = { (char *)src_umig, "run", (char *)guest, "--mem", "128M",
			 "--cmdline", (char *)cmdline, "--migrate-to", listen,
			 "--migrate-after", "0.7", "--mode", (char *)mode, "--stats", sstats,
			 "--quiet", NULL };
	for (int i = 15; extra && *extra && i < 31; i++)
		sa[i] = (char *)*extra++;
	t_run(sa, 120, &r);
	dst = t_wait(dpid, 120);
	o = t_read_file(dout);
	e = t_read_file(derr);
	if (r.status || dst)
		fprintf(stderr, "%s -> %s, %s: source %d, destination %d\nsrc err: %s\ndst err: %s\n",
			src_umig, dst_umig, mode, r.status, dst, r.err, e);
	assert_int_equal(r.status, 0);
	assert_int_equal(dst, 0);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_non_null(strstr(o, T_MV_DONE));
	rec = json_load_file(sstats, 0, NULL);
	assert_non_null(rec);
	assert_string_equal(json_string_value(json_object_get(rec, "status")), "completed");
	free(o);
	free(e);
	t_result_free(&r);
	t_tmpdir_free(dir);
	return rec;
}

static void old_to_new(const char *mode)
{
	t_skip_unless(prev_umig[0], "%s", skip_why);
	json_decref(migrate_between(prev_umig, prev_guests, t_umig(), mode, NULL));
}

static void new_to_old(const char *mode)
{
	json_t *rec;

	t_skip_unless(prev_umig[0], "%s", skip_why);
	rec = migrate_between(t_umig(), t_guest("memverify"), prev_umig, mode, NULL);
	/* the older destination answered HELLO without features: version 1 */
	assert_int_equal(json_integer_value(json_object_get(rec, "protocol_version")), 1);
	json_decref(rec);
}

/* Compression and deltas asked of an older destination: plain pages, after a warning. */
static void test_this_to_previous_compressed(void **s)
{
	static const char *const extra[] = { "--compress", "zstd", "--delta-cache", "16M", NULL };
	json_t *rec;

	t_skip_unless(prev_umig[0], "%s", skip_why);
	rec = migrate_between(t_umig(), t_guest("memverify"), prev_umig, "pre", extra);
	assert_string_equal(json_string_value(json_object_get(rec, "compress")), "none");
	assert_int_equal(json_integer_value(json_object_get(rec, "delta_cache_bytes")), 0);
	assert_int_equal(json_integer_value(json_object_get(rec, "compress_bytes_in")), 0);
	json_decref(rec);
}

/* Parallel streams asked of an older destination: one stream, after a warning. */
static void test_this_to_previous_streams(void **s)
{
	static const char *const extra[] = { "--streams", "3", NULL };
	json_t *rec;

	t_skip_unless(prev_umig[0], "%s", skip_why);
	rec = migrate_between(t_umig(), t_guest("memverify"), prev_umig, "post", extra);
	assert_int_equal(json_integer_value(json_object_get(rec, "streams")), 1);
	json_decref(rec);
}

static void test_previous_to_this_post(void **s) { old_to_new("post"); }
static void test_previous_to_this_pre(void **s) { old_to_new("pre"); }
static void test_this_to_previous_post(void **s) { new_to_old("post"); }
static void test_this_to_previous_pre(void **s) { new_to_old("pre"); }

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_previous_to_this_post),
		cmocka_unit_test(test_previous_to_this_pre),
		cmocka_unit_test(test_this_to_previous_post),
		cmocka_unit_test(test_this_to_previous_pre),
		cmocka_unit_test(test_this_to_previous_compressed),
		cmocka_unit_test(test_this_to_previous_streams),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
