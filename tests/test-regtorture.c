/*
 * test-regtorture.c - every register of the CPU state record survives a
 * snapshot and a migration taken while the regtorture guest holds known
 * values in all of them (guest-tests/regtorture.c): it must print
 * "regtorture: OK" where it finishes, never a MISMATCH.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"

static void t_print_on_failure(const struct t_result *r)
{
	if (r->status)
		fprintf(stderr, "status %d\nstdout: %s\nstderr: %s\n", r->status, r->out, r->err);
}

static void test_runs_ok(void **state)
{
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest("regtorture"),
			 "--cmdline", "secs=0 seed=3", NULL };
	struct t_result r;

	t_run(argv, 60, &r);
	t_print_on_failure(&r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "regtorture: spinning"));
	assert_non_null(strstr(r.out, "regtorture: OK\n"));
	t_result_free(&r);
}

/* Snapshot mid-spin, restore, OK: with vcpus = "1" or more (secondaries sleep). */
static void torture_round_trip(const char *cpus, const char *seed)
{
	char *dir = t_tmpdir();
	const char *snap = t_path(dir, "rt.snap");
	char cmdline[64];
	struct t_result r1, r2;

	/* 30 s where it started, 1 s more once restored: a slow host cannot finish it early */
	snprintf(cmdline, sizeof(cmdline), "secs=30 seed=%s moved_secs=1", seed);
	char *a1[] = { (char *)t_umig(), "run", (char *)t_guest("regtorture"), "--cpus",
		       (char *)cpus, "--cmdline", cmdline, "--snapshot", (char *)snap,
		       "--snapshot-after", "1", NULL };
	char *a2[] = { (char *)t_umig(), "restore", (char *)snap, NULL };

	t_run(a1, 60, &r1);
	t_print_on_failure(&r1);
	assert_int_equal(r1.status, 0);
	/* stopped while spinning: the check has not run yet */
	assert_non_null(strstr(r1.out, "regtorture: spinning"));
	assert_null(strstr(r1.out, "regtorture: OK"));
	assert_null(strstr(r1.out, "MISMATCH"));
	t_run(a2, 20, &r2);	/* within 20 s only if the restore was seen as a move */
	t_print_on_failure(&r2);
	assert_int_equal(r2.status, 0);
	assert_null(strstr(r2.out, "MISMATCH"));
	assert_non_null(strstr(r2.out, "regtorture: OK\n"));
	t_result_free(&r1);
	t_result_free(&r2);
	t_tmpdir_free(dir);
}

static void test_snapshot_mid_spin_restores_every_register(void **state)
{
	torture_round_trip("1", "7");
}

static void test_snapshot_mid_spin_with_two_vcpus(void **state)
{
	torture_round_trip("2", "8");
}

/* A post-copy migration mid-spin: the registers arrive before any page. */
static void test_migration_mid_spin(void **state)
{
	char *dir = t_tmpdir();
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	char listen[32];
	struct t_result r;
	int port = 20000 + (getpid() * 11 + time(NULL)) % 20000, dst;
	char *o;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };
	pid_t dpid = t_spawn(da, dout, derr);

	usleep(300000);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("regtorture"), "--cmdline",
		       "secs=30 seed=9 moved_secs=1", "--migrate-to", listen, "--migrate-after", "1",
		       "--mode", "post", "--quiet", NULL };
	t_run(sa, 60, &r);
	dst = t_wait(dpid, 20);	/* 30 guest seconds unless it saw that it moved */
	o = t_read_file(dout);
	t_print_on_failure(&r);
	assert_int_equal(r.status, 0);
	assert_null(strstr(r.out, "regtorture: OK"));
	assert_int_equal(dst, 0);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_non_null(strstr(o, "regtorture: OK\n"));
	free(o);
	t_result_free(&r);
	t_tmpdir_free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_runs_ok),
		cmocka_unit_test(test_snapshot_mid_spin_restores_every_register),
		cmocka_unit_test(test_snapshot_mid_spin_with_two_vcpus),
		cmocka_unit_test(test_migration_mid_spin),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
