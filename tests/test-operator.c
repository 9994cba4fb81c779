/*
 * test-operator.c - the operator's commands on both ends of a migration
 * (docs/control.md): the destination's control socket from before the
 * source connects, a paused post-copy moved to another address
 * (migrate-recover at the destination, migrate with resume: true at the
 * source), and an unknown outcome settled by the operator at both ends.
 * Each runs through tests/faultproxy.py (t-rig.c), whose partitions last
 * longer than the test: only the operator's command ends them.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "t-rig.h"
#include "t-util.h"

/* the lone destination of the first test, killed by its teardown whatever happens */
static pid_t lone_dst;

static int teardown_lone_dst(void **state)
{
	if (lone_dst > 0)
		t_kill(lone_dst);
	lone_dst = 0;
	return 0;
}

/* One command on a control socket; the reply line (caller frees). */
static char *ctl(const char *sock, const char *cmd, const char *args)
{
	char *a[] = { (char *)t_umig(), "ctl", "--raw", (char *)sock, (char *)cmd,
		      (char *)args, NULL };
	struct t_result r;
	char *out;

	t_run(a, 10, &r);
	out = strdup(r.out ? r.out : "");
	t_result_free(&r);
	return out;
}

/* The reply contains want, or the test fails showing it. */
static void ctl_expect(const char *sock, const char *cmd, const char *args, const char *want)
{
	char *reply = ctl(sock, cmd, args);

	if (!strstr(reply, want))
		fail_msg("%s %s: expected '%s' in: %s", cmd, args ? args : "", want, reply);
	free(reply);
}

/*
 * `umig incoming --control` answers before any source has connected:
 * what it is waiting for, and a clear refusal of what needs a guest or a
 * paused migration.
 */
static void test_destination_socket_before_the_source(void **state)
{
	char *dir = t_tmpdir();
	char listen[32];
	const char *sock = t_path(dir, "dst.sock");
	pid_t dst;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", rig_port());
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--control",
		       (char *)sock, "--quiet", NULL };
	lone_dst = dst = t_spawn(da, t_path(dir, "dst.out"), t_path(dir, "dst.err"));
	assert_true(t_wait_for_text(t_path(dir, "dst.err"), "waiting for a migration", 10000));
	assert_true(t_wait_for_path(sock, 10000));
	ctl_expect(sock, "query-status", NULL, "\"status\":\"incoming\"");
	ctl_expect(sock, "query-migrate", NULL, "\"side\":\"destination\"");
	ctl_expect(sock, "stop", NULL, "no guest here yet");
	ctl_expect(sock, "quit", NULL, "SIGTERM");
	ctl_expect(sock, "migrate", "{\"to\":\"127.0.0.1:1\"}", "no guest here yet");
	ctl_expect(sock, "migrate-recover", "{\"listen\":\"127.0.0.1:9\"}",
		   "migrate-recover is for postcopy-paused");
	ctl_expect(sock, "migrate-recover", "{\"listen\":\"nowhere\"}", "is not HOST:PORT");
	ctl_expect(sock, "migrate-resolve", "{\"owner\":\"source\"}", "not outcome-unknown");
	/* still waiting: none of that touched the incoming migration */
	assert_int_equal(kill(dst, 0), 0);
	kill(dst, SIGTERM);
	lone_dst = 0;
	assert_true(t_wait(dst, 10) >= 0);
	t_tmpdir_free(dir);
}

/* Wait until the destination's query-migrate shows want (bounded). */
static void rig_wait_dst(struct rig *g, const char *want)
{
	assert_true(t_wait_for_path(g->dsock, 10000));
	if (!wait_status(g->dsock, want, 30000)) {
		rig_dump(g, -1, -1);
		fail_msg("the destination never showed %s", want);
	}
}

/*
 * Post-copy pauses on a partition that does not end (the proxy holds
 * every byte for a minute).  The operator opens another address at the
 * destination and points the source there: post-copy recovers on it and
 * memverify finishes clean at the destination.
 */
static void test_postcopy_resumes_at_another_address(void **state)
{
	static const char *const rules[] = { "bulk:s2d:bytes=2000000:drop=60", NULL };
	char addr[32], to[64], listen[64];
	struct rig g;
	json_t *rec;

	rig_start(&g, "post", rules);
	rig_wait_state(&g, "postcopy-paused");
	rig_wait_dst(&g, "\"postcopy-paused\"");
	ctl_expect(g.dsock, "query-migrate", NULL, "\"paused_because\"");
	/* the source cannot be pointed anywhere before the destination listens there */
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", rig_port());
	snprintf(listen, sizeof(listen), "{\"listen\":\"%s\"}", addr);
	snprintf(to, sizeof(to), "{\"to\":\"%s\",\"resume\":true}", addr);
	ctl_expect(g.sock, "migrate", "{\"to\":\"127.0.0.1:1\",\"resume\":true,\"mode\":\"pre\"}",
		   "'resume' takes only 'to'");
	ctl_expect(g.dsock, "migrate-recover", listen, "\"listening\"");
	ctl_expect(g.sock, "migrate", to, "\"resuming\"");
	rig_expect(&g, 0, 0);
	assert_ran_only_at(&g, "destination");
	assert_said(&g, "dst.err", "migrate-recover: also waiting for the source on");
	assert_said(&g, "src.err", "resume: reconnecting to");
	rec = json_load_file(t_path(g.dir, "src.json"), 0, NULL);
	assert_non_null(rec);
	assert_string_equal(json_string_value(t_json_need(rec, "status")), "completed");
	assert_true(json_integer_value(t_json_need(rec, "recoveries")) >= 1);
	json_decref(rec);
	rig_stop(&g);
}

/*
 * COMMIT is lost in a partition that does not end: both ends hold the
 * guest paused (outcome unknown).  The operator, having fenced, settles
 * it at both ends for the destination: the guest runs there only.
 */
static void test_unknown_outcome_settled_by_the_operator(void **state)
{
	static const char *const rules[] = { "control:s2d:type=65:drop=60", NULL };
	const char *dst_owns = "{\"owner\":\"destination\"}";
	struct rig g;

	rig_extra = rig_few_rounds;
	rig_start(&g, "pre", rules);
	rig_wait_state(&g, "outcome-unknown");
	rig_wait_dst(&g, "\"outcome-unknown\"");
	ctl_expect(g.dsock, "migrate-resolve", "{\"owner\":\"nobody\"}", "owner must be");
	ctl_expect(g.dsock, "migrate-resolve", dst_owns, "\"owner\":\"destination\"");
	ctl_expect(g.sock, "migrate-resolve", dst_owns, "\"owner\":\"destination\"");
	rig_expect_one(&g, &g.dst, 90, 0, "destination");
	rig_expect_one(&g, &g.src, 90, 0, "source");
	assert_ran_only_at(&g, "destination");
	assert_said(&g, "dst.err", "the operator says the guest belongs to the destination");
	rig_stop(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_destination_socket_before_the_source, teardown_lone_dst),
		cmocka_unit_test_teardown(test_postcopy_resumes_at_another_address, rig_teardown),
		cmocka_unit_test_teardown(test_unknown_outcome_settled_by_the_operator, rig_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
