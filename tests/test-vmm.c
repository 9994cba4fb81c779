/*
 * test-vmm.c - the VMM end to end: every guest runs to its expected output
 * and exit code, self-modifying code runs its new instructions, snapshot/restore continues a guest exactly, the control
 * socket answers and survives junk, bad input is refused clearly.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"

static void run_guest(const char *guest, const char *cmdline, int timeout, struct t_result *r)
{
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest(guest), "--cmdline",
			 (char *)cmdline, NULL };

	t_run(argv, timeout, r);
}

static void test_hello_prints_and_exits_zero(void **state)
{
	struct t_result r;

	run_guest("hello", "", 30, &r);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "hello from umig guest\n");
	t_result_free(&r);
	run_guest("hello", "a=1 b=two", 30, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "cmdline: a=1 b=two\n"));
	t_result_free(&r);
}

static void test_memverify_passes(void **state)
{
	struct t_result r;

	run_guest("memverify", "wss=8 passes=3", 60, &r);
	assert_int_equal(r.status, 0);
	assert_int_equal(t_count(r.out, " ok\n"), 3);
	assert_non_null(strstr(r.out, "memverify: done passes=3 mismatches=0\n"));
	t_result_free(&r);
}

/*
 * secs= ends the run on the guest clock: a full pass past 1 s, and it says
 * how many.  moved_secs= never fires in one process: the host identity
 * port reads the same value all along.
 */
static void test_memverify_secs(void **state)
{
	struct timespec a, b;
	struct t_result r;
	char want[64];
	int n;

	clock_gettime(CLOCK_MONOTONIC, &a);
	run_guest("memverify", "wss=4 secs=1 moved_secs=1", 60, &r);
	clock_gettime(CLOCK_MONOTONIC, &b);
	assert_int_equal(r.status, 0);
	n = t_count(r.out, " ok\n");
	assert_true(n >= 1);
	snprintf(want, sizeof(want), "memverify: done passes=%d mismatches=0\n", n);
	assert_non_null(strstr(r.out, want));
	assert_non_null(strstr(r.out, " secs=1 moved_secs=1\n"));
	assert_null(strstr(r.out, "moved to"));
	assert_true(b.tv_sec - a.tv_sec + (b.tv_nsec - a.tv_nsec) / 1e9 >= 1.0);
	t_result_free(&r);
}

static void test_dirty_and_idle_run_for_their_time(void **state)
{
	struct t_result r;

	run_guest("dirty", "wss=8 pattern=random secs=1", 30, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "dirty: wss=8MiB pattern=random"));
	assert_non_null(strstr(r.out, "dirty: done pages="));
	t_result_free(&r);
	run_guest("dirty", "pattern=bogus", 30, &r);
	assert_int_equal(r.status, 2);
	t_result_free(&r);
	run_guest("idle", "secs=1", 30, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "idle: done\n"));
	t_result_free(&r);
}

/*
 * A guest that rewrites code it has run gets the new code, with Unicorn's
 * inline stores (vcpu-unicorn-tlb.c) and without: a page first written as
 * data, then run, then rewritten must go back to the checked store path.
 */
static void test_self_modifying_code_runs_new_code(void **state)
{
	struct t_result r;

	for (int inline_stores = 1; inline_stores >= 0; inline_stores--) {
		if (!inline_stores)
			setenv("UMIG_UNICORN_INLINE_STORES", "0", 1);
		run_guest("smc", "rounds=20000", 60, &r);
		unsetenv("UMIG_UNICORN_INLINE_STORES");
		assert_int_equal(r.status, 0);
		assert_non_null(strstr(r.out, "smc: ok rounds=20000\n"));
		t_result_free(&r);
	}
}

static void test_bad_usage_and_bad_guests(void **state)
{
	char *dir = t_tmpdir();
	const char *junk = t_path(dir, "junk.elf");
	FILE *f = fopen(junk, "w");
	struct t_result r;

	fputs("this is not an ELF file at all, but long enough to have a header......", f);
	fclose(f);
	char *a1[] = { (char *)t_umig(), "run", (char *)junk, NULL };
	t_run(a1, 30, &r);
	assert_int_equal(r.status, 125);
	assert_non_null(strstr(r.err, "not an ELF file"));
	t_result_free(&r);
	char *a2[] = { (char *)t_umig(), "run", (char *)t_guest("hello"), "--mem", "12Q", NULL };
	t_run(a2, 30, &r);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "--mem"));
	t_result_free(&r);
	char *a3[] = { (char *)t_umig(), "run", (char *)t_guest("hello"), "--bogus", NULL };
	t_run(a3, 30, &r);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "--bogus"));
	t_result_free(&r);
	const char *verbs[] = { "run", "restore", "ctl", "caps", "migrate", "incoming" };
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		char *a4[] = { (char *)t_umig(), (char *)verbs[i], "--help", NULL };

		t_run(a4, 30, &r);
		assert_int_equal(r.status, 0);
		assert_non_null(strstr(r.out, "usage: umig"));
		t_result_free(&r);
	}
	t_tmpdir_free(dir);
}

/* Last "pass N ok" number in a console log, 0 if none. */
static int last_pass(const char *out)
{
	int n = 0;

	for (const char *p = out; (p = strstr(p, "memverify: pass ")); p++)
		n = atoi(p + 16);
	return n;
}

/*
 * The guest would run 40 guest seconds, so the snapshot falls in the
 * middle on any vCPU speed; restored, it ends a guest second after it
 * finds itself in another process.  ASan builds start later.
 */
#ifdef __SANITIZE_ADDRESS__
#define SNAP_AFTER "4"
#else
#define SNAP_AFTER "2"
#endif
#define SNAP_CMDLINE "wss=16 secs=40 moved_secs=1"

static void test_snapshot_restore_continues_exactly(void **state)
{
	char *dir = t_tmpdir();
	const char *snap = t_path(dir, "mv.snap");
	struct t_result r1, r2, r3;
	int before;

	char *a1[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "128M",
		       "--cmdline", SNAP_CMDLINE, "--snapshot", (char *)snap,
		       "--snapshot-after", SNAP_AFTER, NULL };
	t_run(a1, 60, &r1);
	assert_int_equal(r1.status, 0);
	assert_non_null(strstr(r1.err, "snapshot written"));
	before = last_pass(r1.out);
	assert_true(before >= 1);
	assert_null(strstr(r1.out, "done"));

	char *a2[] = { (char *)t_umig(), "restore", (char *)snap, NULL };
	t_run(a2, 120, &r2);
	assert_int_equal(r2.status, 0);   /* memverify exits 1 on a mismatch, 3 if time ran back */
	/* the console continues where it stopped: the next pass, not pass 1 */
	{
		char want[64];

		snprintf(want, sizeof(want), "memverify: pass %d ok\n", before + 1);
		assert_ptr_equal(strstr(r2.out, "memverify: pass"), strstr(r2.out, want));
	}
	assert_null(strstr(r2.out, "wss="));  /* no reboot */
	assert_non_null(strstr(r2.out, T_MV_DONE));
	/* the host identity told the guest it was restored, and only then */
	assert_null(strstr(r1.out, "moved to"));
	assert_non_null(strstr(r2.out, "memverify: moved to another umig process before pass "));
	assert_true(last_pass(r2.out) > before);

	/* a truncated copy is refused with a clear message, nothing runs */
	{
		const char *trunc = t_path(dir, "trunc.snap");
		char cmd[1200];

		snprintf(cmd, sizeof(cmd), "head -c 100000 '%s' > '%s'", snap, trunc);
		assert_int_equal(system(cmd), 0);
		char *a3[] = { (char *)t_umig(), "restore", (char *)trunc, NULL };
		t_run(a3, 30, &r3);
		assert_int_equal(r3.status, 125);
		assert_non_null(strstr(r3.err, "truncated"));
		assert_string_equal(r3.out, "");
		t_result_free(&r3);
	}
	t_result_free(&r1);
	t_result_free(&r2);
	t_tmpdir_free(dir);
}

static char *ctl(const char *sock, const char *cmd, const char *args, int *status)
{
	char *argv[] = { (char *)t_umig(), "ctl", "--raw", (char *)sock, (char *)cmd,
			 (char *)args, NULL };
	struct t_result r;
	char *out;

	t_run(argv, 30, &r);
	*status = r.status;
	out = r.out;
	free(r.err);
	return out;
}

static void test_control_socket(void **state)
{
	char *dir = t_tmpdir();
	const char *sock = t_path(dir, "c.sock");
	const char *out = t_path(dir, "out");
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest("idle"), "--control",
			 (char *)sock, NULL };
	pid_t pid = t_spawn(argv, out, NULL);
	char *reply;
	int st;

	assert_true(t_wait_for_path(sock, 10000));
	/* the socket is served from just before the vCPUs start: "created" first */
	for (int i = 0; i < 100; i++) {
		reply = ctl(sock, "query-status", NULL, &st);
		assert_int_equal(st, 0);
		if (!strstr(reply, "\"status\":\"created\""))
			break;
		free(reply);
		usleep(20000);
	}
	assert_non_null(strstr(reply, "\"status\":\"running\""));
	free(reply);
	reply = ctl(sock, "stop", NULL, &st);
	assert_int_equal(st, 0);
	assert_non_null(strstr(reply, "\"paused\""));
	free(reply);
	reply = ctl(sock, "query-stats", "{\"max_samples\": 4}", &st);
	assert_int_equal(st, 0);
	assert_non_null(strstr(reply, "\"heartbeats\""));
	assert_non_null(strstr(reply, "\"rip\""));
	free(reply);
	reply = ctl(sock, "cont", NULL, &st);
	assert_int_equal(st, 0);
	assert_non_null(strstr(reply, "\"running\""));
	free(reply);
	reply = ctl(sock, "no-such-command", NULL, &st);
	assert_int_equal(st, 1);
	assert_non_null(strstr(reply, "command-not-found"));
	free(reply);
	reply = ctl(sock, "query-stats", "{\"max_samples\": \"x\"}", &st);
	assert_int_equal(st, 1);
	free(reply);
	/* raw junk on the socket: an error reply, the guest keeps running */
	{
		char cmd[1200];

		snprintf(cmd, sizeof(cmd), "printf '{not json\\n[1,2]\\n' | timeout 5 socat - UNIX-CONNECT:%s 2>/dev/null || "
			 "python3 -c \"import socket;s=socket.socket(socket.AF_UNIX);s.connect('%s');s.sendall(b'{not json\\\\n');print(s.recv(4096).decode())\"",
			 sock, sock);
		FILE *p = popen(cmd, "r");
		char buf[4096] = "";
		size_t n = fread(buf, 1, sizeof(buf) - 1, p);

		buf[n] = 0;
		pclose(p);
		assert_non_null(strstr(buf, "parse-error"));
	}
	reply = ctl(sock, "query-status", NULL, &st);
	assert_non_null(strstr(reply, "\"running\""));
	free(reply);
	reply = ctl(sock, "quit", NULL, &st);
	assert_int_equal(st, 0);
	free(reply);
	assert_int_equal(t_wait(pid, 30), 0);
	assert_false(t_wait_for_path(sock, 10));  /* the socket file is removed */
	t_tmpdir_free(dir);
}

/* Regression: a pause/resume storm must not lose a store (Unicorn stop bug). */
static void test_pause_resume_storm_loses_nothing(void **state)
{
	char *dir = t_tmpdir();
	const char *sock = t_path(dir, "c.sock");
	const char *out = t_path(dir, "out");
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "128M",
			 "--cmdline", "wss=32 secs=3", "--control", (char *)sock, NULL };
	pid_t pid = t_spawn(argv, out, NULL);
	int st, status;
	char *o;

	assert_true(t_wait_for_path(sock, 10000));
	for (int i = 0; i < 60; i++) {
		free(ctl(sock, "stop", NULL, &st));
		free(ctl(sock, "cont", NULL, &st));
		if (st != 0)
			break;   /* the guest finished */
	}
	status = t_wait(pid, 120);
	o = t_read_file(out);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_int_equal(status, 0);
	free(o);
	t_tmpdir_free(dir);
}

/* The same storm with four vCPUs, each verifying its own slice. */
static void test_pause_resume_storm_with_four_vcpus(void **state)
{
	char *dir = t_tmpdir();
	const char *sock = t_path(dir, "c.sock");
	const char *out = t_path(dir, "out");
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "128M",
			 "--cpus", "4", "--cmdline", "wss=32 secs=3 threads=4", "--control", (char *)sock,
			 NULL };
	pid_t pid = t_spawn(argv, out, NULL);
	int st, status;
	char *o;

	assert_true(t_wait_for_path(sock, 10000));
	for (int i = 0; i < 40; i++) {
		free(ctl(sock, "stop", NULL, &st));
		free(ctl(sock, "cont", NULL, &st));
		if (st != 0)
			break;   /* the guest finished */
	}
	status = t_wait(pid, 120);
	o = t_read_file(out);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_non_null(strstr(o, T_MV_DONE));
	assert_int_equal(status, 0);
	free(o);
	t_tmpdir_free(dir);
}

/* --cpus N: N vCPUs boot, the guest runs, a snapshot carries all of them. */
static void test_several_vcpus_boot_snapshot_restore(void **state)
{
	char *dir = t_tmpdir();
	const char *snap = t_path(dir, "s.snap");
	char *a1[] = { (char *)t_umig(), "run", (char *)t_guest("idle"), "--cpus", "3",
		       "--cmdline", "secs=2", "--snapshot", (char *)snap, "--snapshot-after", "0.5",
		       NULL };
	char *a2[] = { (char *)t_umig(), "restore", (char *)snap, NULL };
	char *a3[] = { (char *)t_umig(), "run", (char *)t_guest("hello"), "--cpus", "0", NULL };
	struct t_result r;

	t_run(a1, 60, &r);
	assert_int_equal(r.status, 0);
	t_result_free(&r);
	t_run(a2, 60, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "idle: done\n"));
	t_result_free(&r);
	t_run(a3, 30, &r);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "--cpus: '0' is not 1..8"));
	t_result_free(&r);
	t_tmpdir_free(dir);
}

/* dirty and memverify spread over vCPUs; a bad thread count is refused. */
static void test_guests_use_several_vcpus(void **state)
{
	char *a1[] = { (char *)t_umig(), "run", (char *)t_guest("dirty"), "--cpus", "3",
		       "--cmdline", "wss=8 threads=3 secs=1 pattern=random", NULL };
	char *a2[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--cpus", "2",
		       "--cmdline", "wss=8 threads=2 passes=2", NULL };
	char *a3[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--cmdline",
		       "wss=8 threads=2", NULL };
	struct t_result r;

	t_run(a1, 30, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "threads=3\n"));
	assert_non_null(strstr(r.out, "dirty: done pages="));
	t_result_free(&r);
	t_run(a2, 30, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "memverify: done passes=2 mismatches=0\n"));
	t_result_free(&r);
	t_run(a3, 30, &r);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.out, "threads=2 needs as many vCPUs (umig run --cpus 2)"));
	t_result_free(&r);
}

/* A two-vCPU guest, both verifying, migrated post-copy: version 2 of the record. */
static void test_two_vcpu_guest_migrates(void **state)
{
	char *dir = t_tmpdir();
	const char *dout = t_path(dir, "dst.out");
	char listen[32];
	struct t_result r;
	int port = 20000 + (getpid() * 17 + (int)time(NULL)) % 20000, dst;
	char *o;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };
	pid_t dpid = t_spawn(da, dout, NULL);

	usleep(300000);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "128M",
		       "--cpus", "2", "--cmdline", "wss=32 secs=4 threads=2", "--migrate-to",
		       listen, "--migrate-after", "1", "--mode", "post", "--quiet", NULL };
	t_run(sa, 120, &r);
	dst = t_wait(dpid, 120);
	o = t_read_file(dout);
	assert_int_equal(r.status, 0);
	assert_null(strstr(r.out, "done"));
	assert_int_equal(dst, 0);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_non_null(strstr(o, T_MV_DONE));
	free(o);
	t_result_free(&r);
	t_tmpdir_free(dir);
}

static void test_caps_runs(void **state)
{
	char *argv[] = { (char *)t_umig(), "caps", NULL };
	struct t_result r;

	t_run(argv, 30, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "userfaultfd"));
	assert_non_null(strstr(r.out, "PAGEMAP_SCAN"));
	t_result_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_prints_and_exits_zero),
		cmocka_unit_test(test_memverify_passes),
		cmocka_unit_test(test_memverify_secs),
		cmocka_unit_test(test_dirty_and_idle_run_for_their_time),
		cmocka_unit_test(test_self_modifying_code_runs_new_code),
		cmocka_unit_test(test_bad_usage_and_bad_guests),
		cmocka_unit_test(test_snapshot_restore_continues_exactly),
		cmocka_unit_test(test_control_socket),
		cmocka_unit_test(test_pause_resume_storm_loses_nothing),
		cmocka_unit_test(test_pause_resume_storm_with_four_vcpus),
		cmocka_unit_test(test_several_vcpus_boot_snapshot_restore),
		cmocka_unit_test(test_guests_use_several_vcpus),
		cmocka_unit_test(test_two_vcpu_guest_migrates),
		cmocka_unit_test(test_caps_runs),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
