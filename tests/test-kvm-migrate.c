/*
 * test-kvm-migrate.c - migration between the vCPU backends, in every mode.
 *
 * Where /dev/kvm works (the test VM of tests/vm/: suite kvm-migrate for
 * the modes, suite kvm for the trackers and regtorture; or real hardware): memverify migrated KVM->KVM, Unicorn->KVM and
 * KVM->Unicorn in post, pre, hybrid and stop-copy, each with zero
 * mismatches; pre-copy and hybrid of a two-vCPU memverify under KVM with
 * each dirty tracker (wp, kvm-log), the statistics record naming the one
 * that ran; regtorture migrated from KVM to Unicorn with pre-copy, every
 * register checked after the migration.  Elsewhere every test skips with
 * the reason.
 *
 * The guests are small (nested KVM under emulation is slow) and run
 * memverify with passes=0 (forever), so no speed assumption can make one
 * finish before its migration: the source is migrated through its control
 * socket once it has checked a whole pass, and the destination must then
 * check two more passes than the source had, so at least one full pass of
 * every page ran at the destination after the switchover.  Then the
 * destination is stopped.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"
#include "umig/vcpu-kvm.h"

static bool t_have_kvm(void)
{
	int fd;

	if (vcpu_kvm_open(&fd) < 0)
		return false;
	close(fd);
	return true;
}

static uint64_t t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ull + ts.tv_nsec / 1000000;
}

static int t_port(void)
{
	static int base;

	if (!base)
		base = 20000 + (getpid() * 11 + time(NULL)) % 20000;
	return base++;
}

/*
 * The number of the first (or last) whole line "memverify: pass N ok" in
 * text, 0 if none.  Whole lines only: the console is flushed at the pause,
 * so a line the guest was printing then ends at the source and its rest
 * ("2 ok") is printed at the destination.
 */
static unsigned t_pass(const char *text, bool first)
{
	const char *p = text, *q;
	unsigned last = 0, n;
	int end;

	while (p && (q = strstr(p, "memverify: pass ")) != NULL) {
		end = 0;
		if (sscanf(q, "memverify: pass %u ok\n%n", &n, &end) == 1 && end > 0 &&
		    q[end - 1] == '\n') {
			if (first)
				return n;
			last = n;
		}
		p = q + 1;
	}
	return last;
}

static unsigned t_last_pass(const char *text)
{
	return t_pass(text, false);
}

/* Wait until the file shows pass n or a later one; *first = its first pass. */
static bool t_wait_for_pass(const char *path, unsigned n, int timeout_ms, unsigned *first)
{
	for (int waited = 0;; waited += 100) {
		char *t = t_read_file(path);
		unsigned got = t_last_pass(t);

		*first = t_pass(t, true);
		free(t);
		if (got >= n)
			return true;
		if (waited >= timeout_ms)
			return false;
		usleep(100000);
	}
}

struct t_mig {
	const char *src, *dst;     /* vCPU backends */
	const char *mode;
	const char *track;         /* --dirty-track, NULL = the default */
	const char *want_tracker;  /* the record's dirty_tracker */
	const char *cpus;          /* --cpus */
	const char *cmdline;
};

/* The last 60 lines of a file (the umigs trace with UMIG_DEBUG=1). */
static void t_dump(const char *what, const char *path)
{
	char *t = t_read_file(path), *p;
	int lines = 0;

	for (p = t ? t + strlen(t) : NULL; p && p > t && lines <= 60; p--)
		lines += p[-1] == '\n';
	fprintf(stderr, "--- %s%s:\n%s\n", what, p && p > t ? " (its end)" : "",
		t ? p : "(none)");
	free(t);
}

/* Migrate the running source with `umig migrate`; its exit status. */
static int t_migrate(const struct t_mig *m, const char *sock, const char *listen,
		     const char *stats)
{
	/*
	 * Tracked modes: round 1 at 16 MiB/s takes a good part of a second over
	 * the guest's ballast, so that its vCPUs surely run and write while it
	 * goes (on a loaded one-CPU test VM a fast round may see no write).
	 */
	bool tracked = strcmp(m->want_tracker, "none") != 0;
	char *ma[] = { (char *)t_umig(), "migrate", "--control", (char *)sock, "--to",
		       (char *)listen, "--mode", (char *)m->mode, "--stats", (char *)stats,
		       "--max-rounds", "8", "--quiet", tracked ? "--max-bandwidth" : NULL, "16M",
		       m->track ? "--dirty-track" : NULL, (char *)m->track, NULL };
	struct t_result r;
	int st;

	t_run(ma, 40, &r);
	st = r.status;
	if (st)
		fprintf(stderr, "umig migrate (%s): status %d\n%s\n%s\n", m->mode, st, r.out, r.err);
	t_result_free(&r);
	return st;
}

static void t_check_record(const struct t_mig *m, const char *stats)
{
	json_t *rec = json_load_file(stats, 0, NULL);

	assert_non_null(rec);
	assert_string_equal(json_string_value(t_json_need(rec, "status")), "completed");
	assert_string_equal(json_string_value(t_json_need(rec, "mode")), m->mode);
	assert_string_equal(json_string_value(t_json_need(rec, "dirty_tracker")), m->want_tracker);
	/*
	 * The tracker found pages the guest wrote during round 1: pre-copy sent
	 * them again; hybrid discarded them at the destination, whose guest then
	 * asked for them (requests) unless the push sent them first (resent).
	 * Had it found none, hybrid's destination would hold every page already.
	 */
	if (strcmp(m->want_tracker, "none"))
		assert_true(json_integer_value(t_json_need(rec, "pages_resent")) > 0);
	json_decref(rec);
}

/* One memverify migration as m says; fails the test on any mismatch. */
static void t_memverify_migration(const struct t_mig *m)
{
	char *dir = t_tmpdir();
	char listen[32], sock[300], sout[300], dout[300], derr[300], serr[300], stats[300];
	char *o;
	uint64_t t0 = t_now_ms();
	unsigned last, first;
	int st;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", t_port());
	snprintf(sock, sizeof(sock), "%s", t_path(dir, "c.sock"));
	snprintf(sout, sizeof(sout), "%s", t_path(dir, "src.out"));
	snprintf(serr, sizeof(serr), "%s", t_path(dir, "src.err"));
	snprintf(dout, sizeof(dout), "%s", t_path(dir, "dst.out"));
	snprintf(derr, sizeof(derr), "%s", t_path(dir, "dst.err"));
	snprintf(stats, sizeof(stats), "%s", t_path(dir, "src.json"));
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--vcpu", (char *)m->dst,
		       "--quiet", NULL };
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--vcpu",
		       (char *)m->src, "--mem", "16M", "--cpus", (char *)(m->cpus ? m->cpus : "1"),
		       "--cmdline", (char *)m->cmdline, "--control", sock, NULL };
	pid_t dpid = t_spawn(da, dout, derr), spid = t_spawn(sa, sout, serr);

	if (!t_wait_for_text(sout, "memverify: pass 1 ok", 30000)) {
		t_dump("source output", sout);
		t_dump("source errors", serr);
		t_kill(spid);
		t_kill(dpid);
		fail_msg("the source guest did not finish a pass within 30 s");
	}
	st = t_migrate(m, sock, listen, stats);
	if (st) {
		t_dump("source errors", serr);
		t_dump("destination errors", derr);
		t_kill(spid);
		t_kill(dpid);
	}
	assert_int_equal(st, 0);
	st = t_wait(spid, 15);	/* umig run exits 0 once the guest runs at the destination */
	if (st) {
		t_dump("source errors", serr);
		t_dump("destination errors", derr);
		t_kill(dpid);
	}
	assert_int_equal(st, 0);
	o = t_read_file(sout);
	last = t_last_pass(o);
	free(o);
	if (!t_wait_for_pass(dout, last + 2, 30000, &first)) {
		t_dump("destination output", dout);
		t_dump("destination errors", derr);
		t_kill(dpid);
		fail_msg("no 'memverify: pass %u ok' or later at the destination within 30 s",
			 last + 2);
	}
	kill(dpid, SIGTERM);
	t_wait(dpid, 10);
	o = t_read_file(dout);
	assert_non_null(o);
	if (strstr(o, "MISMATCH") || strstr(o, "BACKWARDS"))
		fail_msg("destination: %s", o);
	free(o);
	t_check_record(m, stats);
	t_tmpdir_free(dir);
	fprintf(stderr, "# %s -> %s, %s%s%s: passes 1..%u printed at the source, %u.. at the "
		"destination, %.1f s\n", m->src, m->dst, m->mode, m->track ? ", --dirty-track " : "",
		m->track ? m->track : "", last, first, (t_now_ms() - t0) / 1e3);
}

static const char *const t_modes[] = { "post", "pre", "hybrid", "stop-copy" };

static void t_every_mode(const char *src, const char *dst)
{
	t_skip_unless(t_have_kvm(), "no usable /dev/kvm (%s)\n", "run it in tests/vm");
	for (size_t i = 0; i < ARRAY_SIZE(t_modes); i++) {
		bool tracked = !strcmp(t_modes[i], "pre") || !strcmp(t_modes[i], "hybrid");
		struct t_mig m = {
			.src = src, .dst = dst, .mode = t_modes[i], .cmdline = "wss=1 ballast=6 passes=0",
			/* auto: KVM's log under KVM, write-protect under Unicorn */
			.want_tracker = !tracked ? "none" : !strcmp(src, "kvm") ? "kvm-log" : "wp",
		};

		t_memverify_migration(&m);
	}
}

static void test_every_mode_kvm_to_kvm(void **state)
{
	(void)state;
	t_every_mode("kvm", "kvm");
}

static void test_every_mode_unicorn_to_kvm(void **state)
{
	(void)state;
	t_every_mode("unicorn", "kvm");
}

static void test_every_mode_kvm_to_unicorn(void **state)
{
	(void)state;
	t_every_mode("kvm", "unicorn");
}

/* Two vCPUs writing under KVM, pre-copy and hybrid, with each tracker. */
static void test_two_vcpus_with_each_tracker(void **state)
{
	static const char *const tracks[] = { "wp", "kvm-log" };

	(void)state;
	t_skip_unless(t_have_kvm(), "no usable /dev/kvm (%s)\n", "run it in tests/vm");
	for (size_t t = 0; t < ARRAY_SIZE(tracks); t++)
		for (size_t i = 1; i <= 2; i++) {
			struct t_mig m = {
				.src = "kvm", .dst = "kvm", .mode = t_modes[i], .cpus = "2",
				.cmdline = "wss=2 ballast=6 passes=0 threads=2", .track = tracks[t],
				.want_tracker = tracks[t],
			};

			t_memverify_migration(&m);
		}
}

/* regtorture mid-spin from KVM to Unicorn with pre-copy: every register checked after. */
static void test_regtorture_pre_copy_kvm_to_unicorn(void **state)
{
	char *dir;
	char listen[32], sock[300], sout[300], serr[300], dout[300], derr[300], stats[300];
	struct t_mig m = { .mode = "pre", .want_tracker = "kvm-log" };
	char *o;
	int st;

	(void)state;
	t_skip_unless(t_have_kvm(), "no usable /dev/kvm (%s)\n", "run it in tests/vm");
	dir = t_tmpdir();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", t_port());
	snprintf(sock, sizeof(sock), "%s", t_path(dir, "c.sock"));
	snprintf(sout, sizeof(sout), "%s", t_path(dir, "src.out"));
	snprintf(serr, sizeof(serr), "%s", t_path(dir, "src.err"));
	snprintf(dout, sizeof(dout), "%s", t_path(dir, "dst.out"));
	snprintf(derr, sizeof(derr), "%s", t_path(dir, "dst.err"));
	snprintf(stats, sizeof(stats), "%s", t_path(dir, "src.json"));
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--vcpu", "unicorn",
		       "--quiet", NULL };
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("regtorture"), "--vcpu", "kvm",
		       "--mem", "32M", "--cmdline", "secs=30 seed=21 moved_secs=1", "--control", sock, NULL };
	pid_t dpid = t_spawn(da, dout, derr), spid = t_spawn(sa, sout, serr);

	if (!t_wait_for_text(sout, "regtorture: spinning", 60000)) {
		t_dump("source output", sout);
		t_kill(spid);
		t_kill(dpid);
		fail_msg("regtorture did not start spinning within 60 s");
	}
	st = t_migrate(&m, sock, listen, stats);
	assert_int_equal(st, 0);
	assert_int_equal(t_wait(spid, 60), 0);
	st = t_wait(dpid, 90);
	o = t_read_file(dout);
	if (st)
		t_dump("destination errors", derr);
	assert_int_equal(st, 0);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_non_null(strstr(o, "regtorture: OK\n"));
	free(o);
	o = t_read_file(sout);
	assert_null(strstr(o, "regtorture: OK"));	/* it finished at the destination */
	free(o);
	t_check_record(&m, stats);
	t_tmpdir_free(dir);
}

/* argv[1], if given, selects tests by name (a cmocka glob), for tests/vm/suites/kvm-migrate. */
int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_mode_kvm_to_kvm),
		cmocka_unit_test(test_every_mode_unicorn_to_kvm),
		cmocka_unit_test(test_every_mode_kvm_to_unicorn),
		cmocka_unit_test(test_two_vcpus_with_each_tracker),
		cmocka_unit_test(test_regtorture_pre_copy_kvm_to_unicorn),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	setenv("UMIG_DEBUG", "1", 0);	/* the umigs' traces, shown when a migration fails */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
