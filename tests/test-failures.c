/*
 * test-failures.c - what umig guarantees when a peer dies or the link
 * breaks in the middle of a migration: never a guest running on memory it
 * does not have, never two running copies, and every wait bounded.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"

static int t_port(void)
{
	static int base;

	if (!base)
		base = 20000 + (getpid() * 13 + time(NULL)) % 20000;
	return base++;
}

/* Poll the source's query-migrate until its status contains want (bounded). */
static bool wait_status(const char *sock, const char *want, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 5) {
		char *qa[] = { (char *)t_umig(), "ctl", "--raw", (char *)sock, "query-migrate", NULL };
		struct t_result q;
		bool hit;

		t_run(qa, 10, &q);
		hit = q.out && strstr(q.out, want);
		t_result_free(&q);
		if (hit)
			return true;
		usleep(5000);
	}
	return false;
}

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
	int port = t_port(), st;
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

struct rig {
	char *dir;
	pid_t proxy, dst, src;
	char listen[32], via[32];
};

static void rig_start(struct rig *g, const char *mode, const char *const *rules)
{
	int dport = t_port(), pport = t_port();
	char lp[16], dp[16];
	char *pa[16] = { "python3", "tests/faultproxy.py", "--lifetime=120", lp, dp };
	int n = 5;

	memset(g, 0, sizeof(*g));
	g->dir = t_tmpdir();
	snprintf(lp, sizeof(lp), "%d", pport);
	snprintf(dp, sizeof(dp), "%d", dport);
	for (; rules && *rules && n < 15; rules++)
		pa[n++] = (char *)*rules;
	pa[n] = NULL;
	g->proxy = t_spawn(pa, t_path(g->dir, "proxy.out"), NULL);
	assert_true(t_wait_for_text(t_path(g->dir, "proxy.out"), "ready", 10000));
	snprintf(g->listen, sizeof(g->listen), "127.0.0.1:%d", dport);
	snprintf(g->via, sizeof(g->via), "127.0.0.1:%d", pport);
	char *da[] = { (char *)t_umig(), "incoming", "--listen", g->listen, "--quiet",
		       "--peer-timeout", "1000", "--recover-timeout", "20000", NULL };
	g->dst = t_spawn(da, t_path(g->dir, "dst.out"), t_path(g->dir, "dst.err"));
	usleep(300000);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "128M",
		       "--cmdline", "wss=32 passes=24", "--migrate-to", g->via,
		       "--migrate-after", "0.7", "--mode", (char *)mode, "--peer-timeout", "1000",
		       "--recover-timeout", "20000",
		       "--stats", (char *)t_path(g->dir, "src.json"), "--quiet", NULL };
	g->src = t_spawn(sa, t_path(g->dir, "src.out"), t_path(g->dir, "src.err"));
}

static void rig_stop(struct rig *g)
{
	t_kill(g->src);
	t_kill(g->dst);
	t_kill(g->proxy);
	t_tmpdir_free(g->dir);
}

static char *rig_file(struct rig *g, const char *name)
{
	char *s = t_read_file(t_path(g->dir, name));

	return s ? s : strdup("");
}

static void rig_dump(struct rig *g, int src, int dst)
{
	char *f[] = { rig_file(g, "src.err"), rig_file(g, "dst.err"), rig_file(g, "proxy.out"),
		      rig_file(g, "src.out"), rig_file(g, "dst.out") };

	fprintf(stderr, "source %d, destination %d\n-- src err:\n%s-- dst err:\n%s-- proxy:\n%s"
		"-- src out:\n%s-- dst out:\n%s", src, dst, f[0], f[1], f[2], f[3], f[4]);
	for (int i = 0; i < 5; i++)
		free(f[i]);
}

/* Wait for both ends (bounded) and require their exit statuses. */
static void rig_expect(struct rig *g, int want_src, int want_dst)
{
	int src = t_wait(g->src, 90), dst = t_wait(g->dst, 90);

	if (src != want_src || dst != want_dst)
		rig_dump(g, src, dst);
	assert_int_equal(src, want_src);
	assert_int_equal(dst, want_dst);
}

/* One end's stderr says text. */
static void assert_said(struct rig *g, const char *file, const char *text)
{
	char *e = rig_file(g, file);
	bool hit = strstr(e, text) != NULL;

	free(e);
	if (!hit)
		fail_msg("%s does not say '%s'", file, text);
}

/* The guest finished at exactly one place, clean. */
static void assert_ran_only_at(struct rig *g, const char *where)
{
	char *so = rig_file(g, "src.out"), *dout = rig_file(g, "dst.out");
	const char *done = "memverify: done passes=24 mismatches=0";

	assert_null(strstr(so, "MISMATCH"));
	assert_null(strstr(dout, "MISMATCH"));
	if (!strcmp(where, "source")) {
		assert_non_null(strstr(so, done));
		assert_null(strstr(dout, "memverify:"));
	} else {
		assert_non_null(strstr(dout, done));
		assert_null(strstr(so, "done"));
	}
	free(so);
	free(dout);
}

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
static void postcopy_break(const char *mode, const char *rule)
{
	const char *const rules[] = { rule, NULL };
	struct rig g;
	json_t *rec;

	rig_start(&g, mode, rules);
	rig_expect(&g, 0, 0);
	assert_ran_only_at(&g, "destination");
	rec = json_load_file(t_path(g.dir, "src.json"), 0, NULL);
	assert_non_null(rec);
	assert_string_equal(json_string_value(json_object_get(rec, "status")), "completed");
	assert_true(json_integer_value(json_object_get(rec, "recoveries")) >= 1);
	print_message("recovered: %lld pages lost in flight and sent again\n",
		      (long long)json_integer_value(json_object_get(rec, "pages_lost_in_flight")));
	json_decref(rec);
	rig_stop(&g);
}

static void test_postcopy_reset_midway(void **s) { postcopy_break("post", "bulk:s2d:bytes=8000000:reset"); }
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

	rig_start(&g, mode, rules);
	rig_expect(&g, 0, 125);
	assert_said(&g, "dst.err", "digest mismatch in ");
	assert_said(&g, "dst.err", what);
	assert_said(&g, "src.err", "the guest keeps running here");
	o = rig_file(&g, "src.out");
	assert_non_null(strstr(o, "memverify: done passes=24 mismatches=0"));
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_source_killed_during_postcopy),
		cmocka_unit_test(test_resumed_lost_pre),
		cmocka_unit_test(test_resumed_lost_stop_copy),
		cmocka_unit_test(test_commit_lost_pre),
		cmocka_unit_test(test_ready_lost_pre),
		cmocka_unit_test(test_postcopy_reset_midway),
		cmocka_unit_test(test_postcopy_partition_midway),
		cmocka_unit_test(test_postcopy_urgent_cut),
		cmocka_unit_test(test_hybrid_reset_midway),
		cmocka_unit_test(test_flipped_bit_in_a_page),
		cmocka_unit_test(test_flipped_bit_in_the_state),
	};

	signal(SIGPIPE, SIG_IGN);
	if (getenv("T_FILTER"))
		cmocka_set_test_filter(getenv("T_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
