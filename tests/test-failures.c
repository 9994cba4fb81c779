/*
 * test-failures.c - what umig guarantees when a peer dies or the link
 * breaks in the middle of a migration: never a guest running on memory it
 * does not have, never two running copies, and every wait bounded.
 */
#include <errno.h>
#include <jansson.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "t-rig.h"
#include "t-util.h"

/*
 * The source dies (kill -9) in the middle of post-copy: the destination
 * never lets the guest read a missing page as zero (memverify would say
 * MISMATCH), says what was lost and exits 125 within a bound.
 */
static void test_source_killed_during_postcopy(void **state)
{
	char *dir = t_tmpdir();
	char listen[32], sock[600];
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	int port = rig_port(), st;
	char *o, *e;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(sock, sizeof(sock), "%s", t_path(dir, "src.sock"));
	/* a dead source looks like a partition from here: it gets the recover timeout */
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet",
		       "--recover-timeout", "3000", NULL };
	pid_t dpid = t_spawn(da, dout, derr);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "1G",
		       "--cmdline", "wss=768 passes=0", "--control", sock, NULL };
	pid_t spid = t_spawn(sa, NULL, NULL);

	assert_true(t_wait_for_path(sock, 10000));
	sleep(4);   /* let memverify fill its working set */
	char args[128];
	char *ma[] = { (char *)t_umig(), "ctl", "--raw", sock, "migrate", args, NULL };

	snprintf(args, sizeof(args), "{\"to\": \"%s\", \"mode\": \"post\", \"prepaging\": \"linear\"}",
		 listen);
	struct t_result m;

	t_run(ma, 10, &m);
	assert_non_null(strstr(m.out, "started"));
	t_result_free(&m);
	assert_true(wait_status(sock, "\"postcopy\"", 20000));
	t_kill(spid);
	st = t_wait(dpid, 30);
	o = t_read_file(dout);
	e = t_read_file(derr);
	if (st != 125)
		fprintf(stderr, "destination: %d\n%s\n%s\n", st, o, e);
	assert_int_equal(st, 125);
	assert_null(strstr(o ? o : "", "MISMATCH"));
	assert_non_null(strstr(e, "never arrived"));
	assert_non_null(strstr(e, "did not come back within 3 s"));
	free(o);
	free(e);
	t_tmpdir_free(dir);
}

/* --- the handover under a fault-injecting proxy ---------------------------- */

/*
 * RESUMED is lost and the link partitions for longer than the peer
 * timeout: the destination runs the guest (it had the commit), the source
 * holds its copy paused, redelivers the commit once the link is back and
 * exits 0.  Never two running copies.
 */
static void handover_resumed_lost(const char *mode)
{
	static const char *const rules[] = { "control:d2s:type=18:drop=3", NULL };
	struct rig g;

	if (!strcmp(mode, "pre"))
		rig_extra = rig_few_rounds;
	rig_start(&g, mode, rules);
	rig_expect(&g, 0, 0);
	assert_said(&g, "src.err", "outcome unknown");
	assert_said(&g, "src.err", "acknowledged the commit");
	assert_ran_only_at(&g, "destination");
	rig_stop(&g);
}

static void test_resumed_lost_pre(void **s) { handover_resumed_lost("pre"); }
static void test_resumed_lost_stop_copy(void **s) { handover_resumed_lost("stop-copy"); }

/*
 * COMMIT itself is lost in a partition: both sides hold the guest paused
 * (outcome unknown), and the redelivered commit settles it when the link
 * returns: the guest runs at the destination only.
 */
static void test_commit_lost_pre(void **state)
{
	static const char *const rules[] = { "control:s2d:type=65:drop=3", NULL };
	struct rig g;

	rig_extra = rig_few_rounds;
	rig_start(&g, "pre", rules);
	rig_expect(&g, 0, 0);
	assert_said(&g, "dst.err", "outcome unknown");
	assert_said(&g, "dst.err", "redelivered the commit");
	assert_ran_only_at(&g, "destination");
	rig_stop(&g);
}

/*
 * READY is lost: the source never committed, so after the peer timeout it
 * resumes its guest and tells the destination to drop its copy once the
 * link is back; the destination never runs it.
 */
static void test_ready_lost_pre(void **state)
{
	static const char *const rules[] = { "control:d2s:type=64:drop=3", NULL };
	struct rig g;

	rig_extra = rig_few_rounds;
	rig_cmdline = "wss=32 secs=8";   /* READY is due after three rounds through the proxy */
	rig_start(&g, "pre", rules);
	rig_expect(&g, 0, 125);
	assert_said(&g, "src.err", "keeps running here");
	assert_said(&g, "dst.err", "dropped");
	assert_ran_only_at(&g, "source");
	rig_stop(&g);
}

/*
 * The link breaks in the middle of post-copy (every connection reset, or
 * a partition longer than the peer timeout): both sides pause, the source
 * reconnects, proves it belongs to the migration, and the push goes on
 * with what the destination lacks.  memverify finishes clean and the
 * record counts the recovery and the pages that were lost in flight.
 */
/* Bulk streams the record must show (test_postcopy_reset_streams sets it). */
static long long want_streams = 1;

static void postcopy_breaks(const char *mode, const char *const *rules, const char *said)
{
	struct rig g;
	json_t *rec;

	rig_start(&g, mode, rules);
	/* an operator's view of it: the control socket's events */
	assert_true(t_wait_for_path(g.sock, 10000));
	char *ea[] = { (char *)t_umig(), "ctl", "--events", "60", g.sock, "query-status", NULL };
	pid_t ev = t_spawn(ea, t_path(g.dir, "events.out"), NULL);

	rig_expect(&g, 0, 0);
	t_wait(ev, 10);   /* it ends when the source closes its socket */
	assert_ran_only_at(&g, "destination");
	char *ev_text = rig_file(&g, "events.out");

	if (!strstr(ev_text, "\"status\":\"postcopy-paused\""))
		rig_dump(&g, 0, 0);
	free(ev_text);
	assert_said(&g, "events.out", "\"status\":\"postcopy-paused\"");
	assert_said(&g, "events.out", "\"status\":\"recovering\"");
	assert_said(&g, "events.out", "\"status\":\"completed\"");
	if (said)
		assert_said(&g, "dst.err", said);
	rec = json_load_file(t_path(g.dir, "src.json"), 0, NULL);
	assert_non_null(rec);
	assert_string_equal(json_string_value(json_object_get(rec, "status")), "completed");
	if (json_integer_value(json_object_get(rec, "recoveries")) < 1)
		rig_dump(&g, 0, 0);
	assert_true(json_integer_value(json_object_get(rec, "recoveries")) >= 1);
	assert_int_equal(json_integer_value(json_object_get(rec, "streams")), want_streams);
	print_message("recovered: %lld pages lost in flight and sent again\n",
		      (long long)json_integer_value(json_object_get(rec, "pages_lost_in_flight")));
	json_decref(rec);
	rig_stop(&g);
}

static void postcopy_break_said(const char *mode, const char *rule, const char *said)
{
	const char *const rules[] = { rule, NULL };

	postcopy_breaks(mode, rules, said);
}

static void postcopy_break(const char *mode, const char *rule)
{
	postcopy_break_said(mode, rule, NULL);
}

/* the rig's post-copy pushes 20-34 MB on the bulk channel (its faults take the rest) */
static void test_postcopy_reset_early(void **s) { postcopy_break("post", "bulk:s2d:bytes=300000:reset"); }
static void test_postcopy_reset_midway(void **s) { postcopy_break("post", "bulk:s2d:bytes=8000000:reset"); }
static void test_postcopy_reset_late(void **s) { postcopy_break("post", "bulk:s2d:bytes=16000000:reset"); }

/*
 * A second break during the recovery itself: the destination's present
 * runs (RECOVER_STATE, type 72) are cut off, that attempt fails at both
 * ends, and the next one recovers.
 */
static void test_postcopy_reset_during_recovery(void **s)
{
	static const char *const rules[] = { "bulk:s2d:bytes=8000000:reset",
					     "control:d2s:type=72:reset", NULL };

	postcopy_breaks("post", rules, "recovery attempt failed");
}
/*
 * Integrity on plaintext (FEAT_DIGEST): a bit flipped on the way, which
 * TCP's checksum can miss, is caught before the frame is used.  Before
 * the commit the migration fails and the source guest runs on untouched;
 * the corrupted copy never runs.
 */
static void corrupted(const char *mode, const char *rule, const char *what)
{
	const char *rules[] = { rule, NULL };
	struct rig g;
	char *o;

	rig_cmdline = RIG_AT_SOURCE;
	rig_start(&g, mode, rules);
	rig_expect(&g, 0, 125);
	assert_said(&g, "dst.err", "digest mismatch in ");
	assert_said(&g, "dst.err", what);
	assert_said(&g, "src.err", "the guest keeps running here");
	o = rig_file(&g, "src.out");
	assert_non_null(strstr(o, T_MV_DONE));
	free(o);
	o = rig_file(&g, "dst.out");
	assert_null(strstr(o, "memverify"));
	free(o);
	rig_stop(&g);
}

static void test_flipped_bit_in_a_page(void **s) { corrupted("pre", "bulk:s2d:type=32:flip", "the page run "); }
static void test_flipped_bit_in_the_state(void **s) { corrupted("post", "control:s2d:type=2:flip", "the machine state"); }

static void test_postcopy_partition_midway(void **s) { postcopy_break("post", "bulk:s2d:bytes=8000000:drop=3"); }
static void test_postcopy_urgent_cut(void **s) { postcopy_break("post", "urgent:d2s:bytes=40:cut"); }
static void test_hybrid_reset_midway(void **s) { postcopy_break("hybrid", "bulk:s2d:bytes=40000000:reset"); }

/*
 * Hybrid's early discards against a slow drain of round 1: the proxy
 * holds the bulk stream at round 1's end mark, so the source's first
 * DISCARD_EARLY reaches the destination before round 1 is placed there
 * and must wait for it (counted: dst_discard_early_held); a stale copy
 * landing after its discard would show as a MISMATCH in memverify, which
 * runs on to the end at the destination.
 */
static void test_hybrid_discard_before_round_placed(void **state)
{
	static const char *const rules[] = { "bulk:s2d:bytes=33200000:stall=0.6", NULL };
	struct rig g;
	json_t *rec;
	char *o;

	(void)state;
	rig_start(&g, "hybrid", rules);
	rig_expect(&g, 0, 0);
	assert_said(&g, "proxy.out", "stall");
	assert_ran_only_at(&g, "destination");
	o = rig_file(&g, "dst.out");
	assert_null(strstr(o, "MISMATCH"));
	free(o);
	rec = json_load_file(t_path(g.dir, "src.json"), 0, NULL);
	assert_non_null(rec);
	assert_true(json_integer_value(json_object_get(rec, "discard_early_pages")) > 0);
	assert_true(json_integer_value(json_object_get(rec, "dst_discard_early_held")) >= 1);
	/* every page discarded early was fetched again: it counts as resent */
	assert_true(json_integer_value(json_object_get(rec, "pages_resent")) > 0);
	json_decref(rec);
	rig_stop(&g);
}

/*
 * Three bulk streams, one of them reset 3 MB into it (each carries a
 * third of the push): every connection goes, the recovery opens three
 * again, and the receivers meet at the bulk-end mark on the new ones.
 */
static void test_postcopy_reset_streams(void **s)
{
	static const char *const extra[] = { "--streams", "3", NULL };

	rig_extra = extra;
	want_streams = 3;
	postcopy_break("post", "bulk:s2d:bytes=3000000:reset");
}

static int streams_teardown(void **state)
{
	want_streams = 1;
	return rig_teardown(state);
}

/*
 * A corrupted frame after the commit (the proxy sets a run's first page,
 * or a reply's page number, to all ones): on a plaintext session the
 * frame's digest no longer matches, so the destination drops it
 * unplaced, closes the session, and recovery takes over; the migration
 * completes and memverify finds every word.  (The decoders' own checks
 * behind the digest are exercised by the fuzz harnesses; before the
 * commit the same corruption is test_flipped_bit_in_a_page.)
 */
static void test_postcopy_garbled_bulk(void **s)
{
	postcopy_break_said("post", "bulk:s2d:bytes=8000000:garble", "digest mismatch in the page run");
}

static void test_postcopy_garbled_urgent(void **s)
{
	postcopy_break_said("post", "urgent:s2d:type=49:garble", "digest mismatch in page");
}

/* --- a peer killed (-9) or stopped (SIGSTOP) at each phase ------------------ */

/*
 * The destination dies before the commit (pre-copy round, stop-copy
 * transfer, hybrid round): the source keeps its guest, which finishes
 * clean there, and says so.
 */
static void dest_killed_before_commit(const char *mode, const char *state)
{
	static const char *const rules[] = { "bulk:s2d:bytes=4000000:stall=8", NULL };
	struct rig g;

	rig_cmdline = RIG_AT_SOURCE;
	rig_start(&g, mode, rules);
	rig_wait_state(&g, state);
	t_kill(g.dst);
	g.dst = 0;
	rig_expect_one(&g, &g.src, 90, 0, "source");
	assert_said(&g, "src.err", "keeps running here");
	assert_ran_only_at(&g, "source");
	rig_stop(&g);
}

static void test_dest_killed_in_precopy(void **s) { dest_killed_before_commit("pre", "precopy"); }
static void test_dest_killed_in_stop_copy(void **s) { dest_killed_before_commit("stop-copy", "switchover"); }
static void test_dest_killed_in_hybrid_round(void **s) { dest_killed_before_commit("hybrid", "precopy"); }

/*
 * The source dies before the commit: the destination never ran the guest,
 * so it has nothing to lose; it says the source vanished and exits 125
 * within the peer timeout (plus slack), leaving nothing running.
 */
static void source_killed_before_commit(const char *mode, const char *state)
{
	static const char *const rules[] = { "bulk:s2d:bytes=4000000:stall=8", NULL };
	struct rig g;
	char *dout;

	rig_start(&g, mode, rules);
	rig_wait_state(&g, state);
	t_kill(g.src);
	g.src = 0;
	rig_expect_one(&g, &g.dst, 15, 125, "destination");
	dout = rig_file(&g, "dst.out");
	assert_null(strstr(dout, "memverify"));
	free(dout);
	assert_said(&g, "dst.err", "before the commit");
	rig_stop(&g);
}

static void test_source_killed_in_precopy(void **s) { source_killed_before_commit("pre", "precopy"); }
static void test_source_killed_in_stop_copy(void **s) { source_killed_before_commit("stop-copy", "switchover"); }

/*
 * The destination dies in the middle of post-copy: the guest's state and
 * the pages it wrote there are gone; the source's copy must never run
 * again (it is out of date), so it says what died and what is lost,
 * within a bound, and exits 125.  Nobody reports a MISMATCH: no copy of
 * the guest ever ran on memory it did not have.
 */
static void test_dest_killed_in_postcopy(void **state)
{
	static const char *const rules[] = { "bulk:s2d:bytes=6000000:stall=8", NULL };
	struct rig g;
	char *so;

	rig_start(&g, "post", rules);
	rig_wait_state(&g, "postcopy");
	t_kill(g.dst);
	g.dst = 0;
	rig_expect_one(&g, &g.src, 30, 125, "source");
	assert_said(&g, "src.err", "the destination died after switchover");
	so = rig_file(&g, "src.out");
	assert_null(strstr(so, "MISMATCH"));
	assert_null(strstr(so, "done"));
	free(so);
	rig_stop(&g);
}

/*
 * One side stops (SIGSTOP: a hung host, a long GC pause, a debugger) in
 * the middle of post-copy for longer than the peer timeout, then
 * continues: the other side paused, the link is recovered, and the guest
 * finishes clean at the destination.
 */
/* want: 1 at least one recovery, 0 none, -1 either (see the test) */
static void postcopy_stopped(bool stop_source, unsigned stop_ms, int want)
{
	static const char *const rules[] = { "bulk:s2d:bytes=6000000:stall=2", NULL };
	struct rig g;
	json_t *rec;
	long long recoveries;

	rig_start(&g, "post", rules);
	rig_wait_state(&g, "postcopy");
	kill(stop_source ? g.src : g.dst, SIGSTOP);
	usleep(stop_ms * 1000);
	kill(stop_source ? g.src : g.dst, SIGCONT);
	rig_expect(&g, 0, 0);
	assert_ran_only_at(&g, "destination");
	rec = json_load_file(t_path(g.dir, "src.json"), 0, NULL);
	assert_non_null(rec);
	assert_string_equal(json_string_value(json_object_get(rec, "status")), "completed");
	recoveries = json_integer_value(json_object_get(rec, "recoveries"));
	print_message("%s stopped %u ms: %lld recoveries\n", stop_source ? "source" : "destination",
		      stop_ms, recoveries);
	if ((want == 1 && recoveries < 1) || (want == 0 && recoveries != 0))
		rig_dump(&g, 0, 0);
	if (want == 1)
		assert_true(recoveries >= 1);
	else if (want == 0)
		assert_int_equal(recoveries, 0);
	json_decref(rec);
	rig_stop(&g);
}

/*
 * The destination stopped: whether the source notices depends on whether
 * its push was done before the stop (then only the destination's COMPLETE
 * is late, which is no break); either way the guest must end clean there.
 */
static void test_dest_stopped_past_timeout(void **s) { postcopy_stopped(false, 3000, -1); }
static void test_source_stopped_past_timeout(void **s) { postcopy_stopped(true, 3000, 1); }
/*
 * Stopped for less than the peer timeout: nothing breaks.  The timeout is
 * longer here than the proxy's 2 s stall of the bulk channel, which a
 * 1 s timeout would rightly count as a broken link.
 */
static void test_dest_stopped_briefly(void **s)
{
	rig_peer_timeout = "4000";
	postcopy_stopped(false, 150, 0);
}

/*
 * The source stops during its pre-copy round for longer than the peer
 * timeout: the destination, which never got the commit, gives up and
 * exits 125 without running anything; the source, once continued, finds
 * the destination gone and keeps its guest.
 */
static void test_source_stopped_in_precopy(void **state)
{
	static const char *const rules[] = { "bulk:s2d:bytes=4000000:stall=3", NULL };
	struct rig g;

	rig_cmdline = RIG_AT_SOURCE;
	rig_start(&g, "pre", rules);
	rig_wait_state(&g, "precopy");
	kill(g.src, SIGSTOP);
	rig_expect_one(&g, &g.dst, 15, 125, "destination");
	kill(g.src, SIGCONT);
	rig_expect_one(&g, &g.src, 90, 0, "source");
	assert_said(&g, "src.err", "keeps running here");
	assert_ran_only_at(&g, "source");
	rig_stop(&g);
}

/* --- a guest that exits by itself during the migration ---------------------- */

/*
 * At the source, before the switchover: the migration is cancelled, the
 * destination told why; the guest's own exit status is umig's.
 */
static void test_guest_exits_at_source(void **state)
{
	static const char *const rules[] = { "bulk:s2d:bytes=4000000:stall=10", NULL };
	struct rig g;

	rig_peer_timeout = "15000";
	rig_cmdline = "wss=32 secs=3";   /* ends inside the proxy's 10 s stall */
	rig_start(&g, "pre", rules);
	rig_expect_one(&g, &g.src, 60, 0, "source");
	rig_expect_one(&g, &g.dst, 20, 125, "destination");
	assert_said(&g, "src.err", "the guest exited here (status 0) before the switchover");
	assert_said(&g, "dst.err", "the source's guest exited (status 0) during the migration");
	assert_said(&g, "src.out", T_MV_DONE);
	char *dout = rig_file(&g, "dst.out");

	assert_null(strstr(dout, "memverify"));
	free(dout);
	rig_stop(&g);
}

/*
 * At the destination, in post-copy, while pages it will never need are
 * still on their way: a defined end, not a lost guest.  The destination
 * says so and exits with the guest's status; the source learns it from
 * COMPLETE and exits 0.
 */
static void test_guest_exits_at_dest_in_postcopy(void **state)
{
	/*
	 * The stall outlasts the guest's two seconds there; the guest at the
	 * source outlasts the wait here.  The source learns of the end only
	 * when its push is through (README), so the stall is the test's length.
	 */
	static const char *const rules[] = { "bulk:s2d:bytes=14000000:stall=8", NULL };
	struct rig g;
	char *dout;

	rig_peer_timeout = "25000";
	rig_cmdline = "wss=8 secs=30 moved_secs=2 ballast=96";
	/* in order: the working set goes out before the ballast that the stall holds */
	rig_prepaging = "linear";
	rig_after = "1.5";   /* the ballast is written at the source, not here */
	rig_start(&g, "post", rules);
	rig_expect(&g, 0, 0);
	dout = rig_file(&g, "dst.out");
	assert_non_null(strstr(dout, T_MV_DONE));
	free(dout);
	assert_said(&g, "dst.err", "the guest exited (status 0) before its last");
	assert_said(&g, "src.err", "the guest exited at the destination (status 0)");
	rig_stop(&g);
}

/* --- admission --------------------------------------------------------------- */

/*
 * A child memory cgroup of ours (v2 or v1) limited to limit bytes, for
 * the destination; NULL (and the reason) when this host cannot make one.
 */
static char *make_memcg(unsigned long long limit, char *why, size_t len)
{
	static char dir[700];
	char line[512], path[800], *p = NULL;
	FILE *f = fopen("/proc/self/cgroup", "r");
	bool v1 = false, found = false;

	while (f && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if ((p = strstr(line, ":memory:")) != NULL) {
			snprintf(dir, sizeof(dir), "/sys/fs/cgroup/memory%s", p + 8);
			v1 = found = true;
			break;
		}
		if (!strncmp(line, "0::", 3)) {
			snprintf(dir, sizeof(dir), "/sys/fs/cgroup%s", line + 3);
			found = true;
		}
	}
	if (f)
		fclose(f);
	if (!found) {
		snprintf(why, len, "no memory cgroup in /proc/self/cgroup");
		return NULL;
	}
	snprintf(path, sizeof(path), "%.600s/umig-test-%d", dir, getpid());
	snprintf(dir, sizeof(dir), "%.690s", path);
	if (mkdir(dir, 0755) < 0) {
		snprintf(why, len, "cannot create the cgroup %s: %s", dir, strerror(errno));
		return NULL;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, v1 ? "memory.limit_in_bytes" : "memory.max");
	f = fopen(path, "w");
	if (!f || fprintf(f, "%llu\n", limit) < 0 || fclose(f)) {
		snprintf(why, len, "cannot limit the cgroup %s", dir);
		rmdir(dir);
		return NULL;
	}
	return dir;
}

/*
 * The destination cannot hold the guest (its memory cgroup allows 64 MiB,
 * the guest has 128 MiB): it refuses at the handshake, naming the limit,
 * while the source guest still runs untouched.
 */
static void test_admission_refuses_too_big_a_guest(void **state)
{
	char why[1024], script[1200], listen[32], *cg = make_memcg(64ull << 20, why, sizeof(why));
	char *dir, *so, *de;
	int port = rig_port(), st;

	if (!cg) {
		print_message("skipped: %s\n", why);
		skip();
	}
	dir = t_tmpdir();
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(script, sizeof(script), "echo $$ > %s/cgroup.procs && exec %s incoming --listen %s",
		 cg, t_umig(), listen);
	char *da[] = { "sh", "-c", script, NULL };
	pid_t dst = t_spawn(da, NULL, t_path(dir, "dst.err"));

	assert_true(t_wait_for_text(t_path(dir, "dst.err"), "waiting for a migration", 10000));
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "128M",
		       "--cmdline", "wss=16 secs=3", "--migrate-to", listen, "--migrate-after",
		       "0.3", "--quiet", NULL };
	pid_t src = t_spawn(sa, t_path(dir, "src.out"), t_path(dir, "src.err"));

	st = t_wait(dst, 20);
	assert_int_equal(t_wait(src, 60), 0);
	so = t_read_file(t_path(dir, "src.out"));
	de = t_read_file(t_path(dir, "dst.err"));
	rmdir(cg);
	if (st != 125 || !strstr(de, "admission: the guest needs 128 MiB"))
		fprintf(stderr, "destination %d:\n%s", st, de);
	assert_int_equal(st, 125);
	assert_non_null(strstr(de, "admission: the guest needs 128 MiB"));
	assert_non_null(strstr(so, T_MV_DONE));
	free(so);
	free(de);
	t_tmpdir_free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_source_killed_during_postcopy, rig_teardown),
		cmocka_unit_test_teardown(test_resumed_lost_pre, rig_teardown),
		cmocka_unit_test_teardown(test_resumed_lost_stop_copy, rig_teardown),
		cmocka_unit_test_teardown(test_commit_lost_pre, rig_teardown),
		cmocka_unit_test_teardown(test_ready_lost_pre, rig_teardown),
		cmocka_unit_test_teardown(test_postcopy_reset_early, rig_teardown),
		cmocka_unit_test_teardown(test_postcopy_reset_midway, rig_teardown),
		cmocka_unit_test_teardown(test_postcopy_reset_late, rig_teardown),
		cmocka_unit_test_teardown(test_postcopy_reset_during_recovery, rig_teardown),
		cmocka_unit_test_teardown(test_postcopy_partition_midway, rig_teardown),
		cmocka_unit_test_teardown(test_postcopy_urgent_cut, rig_teardown),
		cmocka_unit_test_teardown(test_hybrid_reset_midway, rig_teardown),
		cmocka_unit_test_teardown(test_hybrid_discard_before_round_placed, rig_teardown),
		cmocka_unit_test_teardown(test_postcopy_reset_streams, streams_teardown),
		cmocka_unit_test_teardown(test_postcopy_garbled_bulk, rig_teardown),
		cmocka_unit_test_teardown(test_postcopy_garbled_urgent, rig_teardown),
		cmocka_unit_test_teardown(test_dest_killed_in_precopy, rig_teardown),
		cmocka_unit_test_teardown(test_dest_killed_in_stop_copy, rig_teardown),
		cmocka_unit_test_teardown(test_dest_killed_in_hybrid_round, rig_teardown),
		cmocka_unit_test_teardown(test_source_killed_in_precopy, rig_teardown),
		cmocka_unit_test_teardown(test_source_killed_in_stop_copy, rig_teardown),
		cmocka_unit_test_teardown(test_dest_killed_in_postcopy, rig_teardown),
		cmocka_unit_test_teardown(test_dest_stopped_past_timeout, rig_teardown),
		cmocka_unit_test_teardown(test_source_stopped_past_timeout, rig_teardown),
		cmocka_unit_test_teardown(test_dest_stopped_briefly, rig_teardown),
		cmocka_unit_test_teardown(test_source_stopped_in_precopy, rig_teardown),
		cmocka_unit_test_teardown(test_admission_refuses_too_big_a_guest, rig_teardown),
		cmocka_unit_test_teardown(test_guest_exits_at_source, rig_teardown),
		cmocka_unit_test_teardown(test_guest_exits_at_dest_in_postcopy, rig_teardown),
		cmocka_unit_test_teardown(test_flipped_bit_in_a_page, rig_teardown),
		cmocka_unit_test_teardown(test_flipped_bit_in_the_state, rig_teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	if (getenv("T_FILTER"))
		cmocka_set_test_filter(getenv("T_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
