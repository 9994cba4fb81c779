/*
 * t-rig.c - a migration between two umig processes on loopback through
 * tests/faultproxy.py, for the failure and operator tests: the source runs
 * memverify with a control socket, the destination listens behind the
 * proxy with one of its own, and the helpers wait for states, exit
 * statuses and messages within bounds.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "t-rig.h"
#include "t-util.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The rig started last, for rig_teardown after a failed assertion. */
static struct rig live;

int rig_port(void)
{
	static int base;

	if (!base)
		base = 20000 + (getpid() * 13 + time(NULL)) % 20000;
	return base++;
}

/* Poll the source's query-migrate until its status contains want (bounded). */
bool wait_status(const char *sock, const char *want, int timeout_ms)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		char *qa[] = { (char *)t_umig(), "ctl", "--raw", (char *)sock, "query-migrate", NULL };
		struct t_result q;
		bool hit;

		t_run(qa, 10, &q);
		hit = q.out && strstr(q.out, want);
		t_result_free(&q);
		if (hit)
			return true;
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms)
			return false;
		usleep(5000);
	}
}


/* Both sides' --peer-timeout in the rig (ms), and the guest; a test may change them. */
#define RIG_PEER_TIMEOUT "1000"
#define RIG_CMDLINE "wss=32 secs=40 moved_secs=1"
#define RIG_PREPAGING "bubble-dir"
#define RIG_AFTER "0.7"
const char *rig_peer_timeout = RIG_PEER_TIMEOUT;
const char *rig_cmdline = RIG_CMDLINE;
const char *rig_prepaging = RIG_PREPAGING;
const char *rig_after = RIG_AFTER;   /* --migrate-after, seconds */
const char *const *rig_extra;    /* more source options (NULL-terminated) */
const char *const rig_few_rounds[] = { "--max-rounds", "3", NULL };

void rig_start(struct rig *g, const char *mode, const char *const *rules)
{
	int dport = rig_port(), pport = rig_port();
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
	live = *g;
	assert_true(t_wait_for_text(t_path(g->dir, "proxy.out"), "ready", 10000));
	snprintf(g->listen, sizeof(g->listen), "127.0.0.1:%d", dport);
	snprintf(g->via, sizeof(g->via), "127.0.0.1:%d", pport);
	snprintf(g->dsock, sizeof(g->dsock), "%s", t_path(g->dir, "dst.sock"));
	char *da[] = { (char *)t_umig(), "incoming", "--listen", g->listen, "--quiet",
		       "--peer-timeout", (char *)rig_peer_timeout, "--recover-timeout", "20000",
		       "--control", g->dsock, NULL };
	g->dst = t_spawn(da, t_path(g->dir, "dst.out"), t_path(g->dir, "dst.err"));
	live = *g;
	/* the proxy connects upstream when the source connects: be listening by then */
	assert_true(t_wait_for_text(t_path(g->dir, "dst.err"), "waiting for a migration", 10000));
	snprintf(g->sock, sizeof(g->sock), "%s", t_path(g->dir, "src.sock"));
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "128M",
		       "--cmdline", (char *)rig_cmdline, "--migrate-to", g->via,
		       "--prepaging", (char *)rig_prepaging,
		       "--migrate-after", (char *)rig_after, "--mode", (char *)mode, "--peer-timeout", (char *)rig_peer_timeout,
		       "--recover-timeout", "20000", "--control", g->sock,
		       "--stats", (char *)t_path(g->dir, "src.json"), "--quiet", NULL, NULL, NULL,
		       NULL, NULL, NULL, NULL, NULL, NULL };
	size_t n_sa = 0;

	while (sa[n_sa])
		n_sa++;
	for (const char *const *e = rig_extra; e && *e && n_sa + 1 < ARRAY_LEN(sa); e++)
		sa[n_sa++] = (char *)*e;
	g->src = t_spawn(sa, t_path(g->dir, "src.out"), t_path(g->dir, "src.err"));
	live = *g;
}

/* Kill pid only while it is still an unreaped child of this process. */
static void kill_if_ours(pid_t pid)
{
	if (pid > 0 && waitpid(pid, NULL, WNOHANG) == 0)
		t_kill(pid);
}

void rig_stop(struct rig *g)
{
	t_kill(g->src);
	t_kill(g->dst);
	t_kill(g->proxy);
	t_tmpdir_free(g->dir);
	memset(&live, 0, sizeof(live));
}

int rig_teardown(void **state)
{
	(void)state;
	rig_peer_timeout = RIG_PEER_TIMEOUT;
	rig_cmdline = RIG_CMDLINE;
	rig_prepaging = RIG_PREPAGING;
	rig_after = RIG_AFTER;
	rig_extra = NULL;
	if (!live.dir)
		return 0;
	kill_if_ours(live.src);
	kill_if_ours(live.dst);
	kill_if_ours(live.proxy);
	t_tmpdir_free(live.dir);
	memset(&live, 0, sizeof(live));
	return 0;
}

char *rig_file(struct rig *g, const char *name)
{
	char *s = t_read_file(t_path(g->dir, name));

	return s ? s : strdup("");
}

void rig_dump(struct rig *g, int src, int dst)
{
	char *f[] = { rig_file(g, "src.err"), rig_file(g, "dst.err"), rig_file(g, "proxy.out"),
		      rig_file(g, "src.out"), rig_file(g, "dst.out") };

	fprintf(stderr, "source %d, destination %d\n-- src err:\n%s-- dst err:\n%s-- proxy:\n%s"
		"-- src out:\n%s-- dst out:\n%s", src, dst, f[0], f[1], f[2], f[3], f[4]);
	for (int i = 0; i < 5; i++)
		free(f[i]);
}

/* Wait for both ends (bounded) and require their exit statuses. */
void rig_expect(struct rig *g, int want_src, int want_dst)
{
	int src = t_wait(g->src, 90), dst = t_wait(g->dst, 90);

	if (src != want_src || dst != want_dst)
		rig_dump(g, src, dst);
	assert_int_equal(src, want_src);
	assert_int_equal(dst, want_dst);
}

/* One end's stderr says text. */
void assert_said(struct rig *g, const char *file, const char *text)
{
	char *e = rig_file(g, file);
	bool hit = strstr(e, text) != NULL;

	if (!hit)
		fprintf(stderr, "-- %s:\n%s", file, e);
	free(e);
	if (!hit)
		fail_msg("%s does not say '%s'", file, text);
}

/* The guest finished at exactly one place, clean. */
void assert_ran_only_at(struct rig *g, const char *where)
{
	char *so = rig_file(g, "src.out"), *dout = rig_file(g, "dst.out");
	const char *done = T_MV_DONE;

	assert_null(strstr(so, "MISMATCH"));
	assert_null(strstr(dout, "MISMATCH"));
	/* the source's process never looks moved to its own guest */
	assert_null(strstr(so, "moved to another"));
	if (!strcmp(where, "source")) {
		assert_non_null(strstr(so, done));
		assert_null(strstr(dout, "memverify:"));
	} else {
		assert_non_null(strstr(dout, done));
		assert_null(strstr(so, "done"));
		/* the guest saw the destination's host identity, not the source's */
		if (strstr(rig_cmdline, "moved_secs"))
			assert_non_null(strstr(dout, "moved to another umig process"));
	}
	free(so);
	free(dout);
}

/*
 * Wait until the source's query-migrate reports state; the proxy rule of
 * each test stalls the bulk channel there, so the phase lasts seconds.
 */
void rig_wait_state(struct rig *g, const char *state)
{
	char want[64];

	assert_true(t_wait_for_path(g->sock, 10000));
	snprintf(want, sizeof(want), "\"%s\"", state);
	if (!wait_status(g->sock, want, 30000)) {
		rig_dump(g, -1, -1);
		fail_msg("the source never reached %s", state);
	}
}

/* Wait for one process, bounded by `bound_s`, and require its status. */
void rig_expect_one(struct rig *g, pid_t *pid, int bound_s, int want, const char *who)
{
	int st = t_wait(*pid, bound_s);

	*pid = 0;
	if (st != want) {
		rig_dump(g, who[0] == 's' ? st : -1, who[0] == 'd' ? st : -1);
		fail_msg("%s exited %d, expected %d within %d s", who, st, want, bound_s);
	}
}


/*
 * One migration on loopback without the proxy: `umig incoming` on a fresh
 * port, then `umig run GUEST --migrate-to` in m->mode with m->extra.  Both
 * must exit 0, the destination's output must contain m->done and no
 * MISMATCH, and the source's record say completed; returns that record.
 */
json_t *rig_local_migrate(const struct rig_local *m)
{
	char *dir = t_tmpdir();
	char listen[32], sstats[600];
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	char *sa[48];
	struct t_result r;
	json_t *rec;
	int dst, n = 0;
	char *o;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", rig_port());
	snprintf(sstats, sizeof(sstats), "%s", t_path(dir, "src.json"));
	char *da[16] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };

	for (const char *const *e = m->dest_extra; e && *e && n < 10; e++)
		da[5 + n++] = (char *)*e;
	n = 0;
	pid_t dpid = t_spawn(da, dout, derr);

	usleep(300000);
	const char *base[] = { t_umig(), "run", t_guest(m->guest), "--mem", "64M", "--cmdline",
			       m->cmdline, "--migrate-to", listen, "--migrate-after", m->after,
			       "--mode", m->mode, "--stats", sstats, "--quiet" };
	for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i++)
		sa[n++] = (char *)base[i];
	for (const char *const *e = m->extra; e && *e && n < 47; e++)
		sa[n++] = (char *)*e;
	sa[n] = NULL;
	t_run(sa, m->bound_s, &r);
	dst = t_wait(dpid, m->bound_s);
	o = t_read_file(dout);
	if (r.status || dst) {
		char *e = t_read_file(derr);

		fprintf(stderr, "%s: source %d, destination %d\nsrc err: %s\ndst err: %s\n",
			m->mode, r.status, dst, r.err, e);
		free(e);
	}
	assert_int_equal(r.status, 0);
	assert_int_equal(dst, 0);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	if (!strstr(o, m->done))
		fail_msg("no '%s' at the destination: %s", m->done, o);
	rec = json_load_file(sstats, 0, NULL);
	assert_non_null(rec);
	assert_string_equal(json_string_value(json_object_get(rec, "status")), "completed");
	free(o);
	t_result_free(&r);
	t_tmpdir_free(dir);
	return rec;
}
