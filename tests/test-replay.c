/*
 * test-replay.c - hostile bytes from a source: real migration streams,
 * replayed to fresh destinations with mutations, must end in a clean
 * error or a guest verified clean, never a signal, a hang or a guest
 * running on corrupted memory.
 *
 * Three small migrations of memverify (stop-copy, post, hybrid) are
 * recorded through tests/faultproxy.py --record; tests/replay.py plays
 * the source's side of each channel to a new `umig incoming` (peer
 * timeout 1 s, recover timeout 1 s), changed by one mutation:
 *   - named cases, one per hostile frame of docs/protocol.md ("Failure
 *     before the switchover"): each must end with exit status 125, an
 *     error naming the channel, the message type and the field, no guest
 *     started, within a bound;
 *   - seeded random cases (REPLAY_CASES, default 20): truncations and
 *     stalls anywhere, frame lengths and types, run pages and counts,
 *     marks and control fields set out of range, frames out of place.
 * Excluded until the stream carries an integrity check (they cannot be
 * told from a real stream, so the destination cannot refuse them): page
 * data and machine-state bytes, runs moved to other pages inside RAM,
 * valid marks moved, frames dropped, stale page frames replayed.
 *
 * A destination that reaches outcome-unknown (a malformed control frame
 * after READY: it cannot know whether the source committed) holds the
 * guest paused by design (docs/protocol.md, "Handover"); that counts as a
 * clean end once it said so.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"

/* the recorded guest outlives its migration and ends a second after it moves */
#define GUEST_CMDLINE "wss=4 secs=20 moved_secs=1"
#define MIN(a, b) ((a) < (b) ? (a) : (b))

static int t_port(void)
{
	static int base;

	if (!base)
		base = 20000 + (getpid() * 17 + time(NULL)) % 20000;
	return base++;
}

static double t_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *file_or_empty(const char *path)
{
	char *s = t_read_file(path);

	return s ? s : strdup("");
}

/* --- recording ------------------------------------------------------------------ */

static char *rec_root;
#define NREC 4
static char rec_dir[NREC][600];
static const char *const rec_mode[NREC] = { "stop-copy", "post", "hybrid", "post" };
static const char *const rec_name[NREC] = { "stop-copy", "post", "hybrid", "post-streams" };
/* the last recording's source asks for two bulk streams (its STREAMS frame) */
static const char *const rec_streams[NREC] = { "1", "1", "1", "2" };
enum { REC_STOPCOPY, REC_POST, REC_HYBRID, REC_STREAMS };

static void record(int i)
{
	int pport = t_port(), dport = t_port(), src, dst;
	char lp[16], dp[16], listen[32], via[32], recopt[640];
	char *dir = rec_dir[i];

	snprintf(dir, sizeof(rec_dir[i]), "%s/%s", rec_root, rec_name[i]);
	mkdir(dir, 0700);
	snprintf(lp, sizeof(lp), "%d", pport);
	snprintf(dp, sizeof(dp), "%d", dport);
	snprintf(recopt, sizeof(recopt), "--record=%s", dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", dport);
	snprintf(via, sizeof(via), "127.0.0.1:%d", pport);
	char *pa[] = { "python3", "tests/faultproxy.py", "--lifetime=60", recopt, lp, dp, NULL };
	pid_t proxy = t_spawn(pa, t_path(dir, "proxy.out"), NULL);

	assert_true(t_wait_for_text(t_path(dir, "proxy.out"), "ready", 10000));
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };
	pid_t dpid = t_spawn(da, t_path(rec_root, "dst.out"), t_path(rec_root, "dst.err"));

	usleep(300000);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "8M",
		       "--cmdline", GUEST_CMDLINE, "--migrate-to", via,
		       "--migrate-after", "0.2", "--mode", (char *)rec_mode[i],
		       "--streams", (char *)rec_streams[i], "--quiet", NULL };
	pid_t spid = t_spawn(sa, t_path(rec_root, "src.out"), t_path(rec_root, "src.err"));

	src = t_wait(spid, 60);
	dst = t_wait(dpid, 60);
	t_kill(proxy);
	if (src || dst) {
		const char *names[] = { "src.out", "src.err", "dst.out", "dst.err" };

		fprintf(stderr, "recording %s: source %d, destination %d\n", rec_mode[i], src, dst);
		for (int k = 0; k < 4; k++) {
			char *f = file_or_empty(t_path(rec_root, names[k]));

			fprintf(stderr, "-- %s:\n%s", names[k], f);
			free(f);
		}
	}
	assert_int_equal(src, 0);
	assert_int_equal(dst, 0);
}

static int setup_recordings(void **state)
{
	struct t_result r;
	char *pa[] = { "python3", "-c", "pass", NULL };

	t_run(pa, 10, &r);
	if (r.status) {
		t_result_free(&r);
		print_message("skip: python3 is not installed (make deps installs it)\n");
		return 0;
	}
	t_result_free(&r);
	rec_root = t_tmpdir();
	for (int i = 0; i < NREC; i++)
		record(i);
	return 0;
}

static int teardown_recordings(void **state)
{
	if (rec_root)
		t_tmpdir_free(rec_root);
	return 0;
}

/* --- one replay -------------------------------------------------------------------- */

struct outcome {
	int status;         /* the destination's; -1 if it was still running at the bound */
	int port;
	double secs;
	char *out, *err, *log;
};

static void outcome_free(struct outcome *o)
{
	free(o->out);
	free(o->err);
	free(o->log);
}

static void replay(int rec, const char *mutation, int bound_s, struct outcome *o)
{
	char *dir = t_tmpdir();
	char listen[32], port[16];
	int p = t_port();
	double t0;

	o->port = p;
	snprintf(port, sizeof(port), "%d", p);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", p);
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--peer-timeout", "1000",
		       "--recover-timeout", "1000", NULL };
	pid_t dpid = t_spawn(da, t_path(dir, "dst.out"), t_path(dir, "dst.err"));

	/* never probe the port: the first connection is taken as control */
	if (!t_wait_for_text(t_path(dir, "dst.err"), "waiting for a migration", 10000)) {
		t_kill(dpid);
		t_tmpdir_free(dir);
		fail_msg("umig incoming did not start listening within 10 s");
	}
	t0 = t_now();
	char *ra[] = { "python3", "tests/replay.py", "--lifetime=40", "--mutate", (char *)mutation,
		       rec_dir[rec], port, NULL };
	pid_t rpid = t_spawn(ra, t_path(dir, "replay.out"), t_path(dir, "replay.out"));

	o->status = -1;
	/* an outcome-unknown hold is deliberate and unbounded: stop at its word */
	for (int waited = 0; waited < bound_s * 10; waited++) {
		int st;

		if (waitpid(dpid, &st, WNOHANG) == dpid) {
			o->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			break;
		}
		if (t_wait_for_text(t_path(dir, "dst.err"), "outcome unknown", 100))
			break;
	}
	o->secs = t_now() - t0;
	if (o->status == -1)
		t_kill(dpid);
	t_kill(rpid);
	o->out = file_or_empty(t_path(dir, "dst.out"));
	o->err = file_or_empty(t_path(dir, "dst.err"));
	o->log = file_or_empty(t_path(dir, "replay.out"));
	t_tmpdir_free(dir);
}

static void dump(const char *what, const struct outcome *o)
{
	fprintf(stderr, "%s: status %d after %.1f s\n-- replay:\n%s-- dst err:\n%s-- dst out:\n%s",
		what, o->status, o->secs, o->log, o->err, o->out);
}

/* Nothing listens on the port any more: the connection is refused. */
static bool port_closed(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ret;

	ret = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	return ret < 0 && errno == ECONNREFUSED;
}

/* "clean error" | "verified guest" | "outcome unknown"; NULL if it was not clean. */
static const char *judge(const struct outcome *o)
{
	if (strstr(o->err, "AddressSanitizer") || strstr(o->err, "runtime error") ||
	    strstr(o->out, "MISMATCH"))
		return NULL;
	if (o->status == 0)
		return strstr(o->out, "mismatches=0") ? "verified guest" : NULL;
	if (o->status == 125)
		return strstr(o->err, "incoming: ") ? "clean error" : NULL;
	if (o->status == -1 && strstr(o->err, "outcome unknown"))
		return "outcome unknown";
	return NULL;   /* a signal, a hang, or the guest's own failure (memverify exits 1) */
}

/* --- named hostile frames, before the commit --------------------------------------- */

struct hostile {
	int rec;
	const char *mutation;
	const char *says[3];   /* the error names the channel, the type and the field */
};

/* Frames written out by hand, as hex: header (u32 len, u16 type, u16 0), payload. */
#define F_DISCARD_0_1  "0c000000" "0300" "0000" "0000000000000000" "01000000"
#define F_ZERO_0_1     "10000000" "2100" "0000" "0000000000000000" "01000000" "00000000"
#define F_PAGE_FAR     "10000000" "3100" "0000" "0000000000010000" "01000000" "00000000"
#define F_STREAMS_2    "08000000" "8800" "0000" "02000000" "00000000"

static const struct hostile hostile_cases[] = {
	{ REC_STOPCOPY, "bulk:field=32#0:pfn=1099511627776",
	  { "bulk channel", "PAGES (type 32)", "page run 1099511627776+" } },
	{ REC_STOPCOPY, "bulk:field=33#0:count=4294967295",
	  { "bulk channel", "ZERO (type 33)", "outside guest RAM" } },
	/* the length field counts the frame's 8-byte digest: 25 = a 17-byte payload */
	{ REC_STOPCOPY, "bulk:field=33#0:len=25",
	  { "bulk channel", "message type 33", "bad length 17" } },
	{ REC_STOPCOPY, "bulk:field=33#0:type=65535",
	  { "bulk channel", "unknown message type 65535", NULL } },
	{ REC_STOPCOPY, "bulk:field=34#0:mark=9",
	  { "bulk channel", "MARK", "unknown mark 9" } },
	{ REC_STOPCOPY, "bulk:cut=5000",
	  { "bulk channel", "truncated message", NULL } },
	{ REC_STOPCOPY, "control:insert=2#0:" F_DISCARD_0_1,
	  { "control channel", "DISCARD (type 3)", "in stop-copy mode" } },
	{ REC_STOPCOPY, "control:field=2#0:type=65535",
	  { "control channel", "unknown message type 65535", NULL } },
	{ REC_STOPCOPY, "control:field=1#0:u32@0=8192",
	  { "8192-byte pages", NULL, NULL } },
	/* HELLO, HELLO2 and SECRET (with its digest) are 112 bytes: then silence, no PING */
	{ REC_STOPCOPY, "control:stall=112",
	  { "silent for 1.0 s", "the machine state", NULL } },
	{ REC_POST, "bulk:field=34#0:mark=3",
	  { "bulk channel", "MARK", "bulk-end mark where pre-copy-done belongs" } },
	{ REC_POST, "bulk:insert=34#0:" F_ZERO_0_1,
	  { "bulk channel", "ZERO (type 33)", "before the pre-copy-done mark in post mode" } },
	{ REC_POST, "urgent:insert=0:" F_PAGE_FAR,
	  { "urgent channel", "PAGE", "page 1099511627776 lies outside guest RAM" } },
	{ REC_HYBRID, "control:insert=2#0:" F_DISCARD_0_1 F_DISCARD_0_1,
	  { "control channel", "DISCARD run 0+1", "discarded before or never placed" } },
	/* parallel bulk streams: a count out of range, STREAMS never negotiated */
	{ REC_STREAMS, "control:field=136#0:u32@0=99", { "STREAMS: 99 bulk streams (2..16)" } },
	{ REC_STOPCOPY, "control:insert=2#0:" F_STREAMS_2, { "STREAMS" } },
};

static void test_hostile_frames_end_the_migration(void **state)
{
	t_skip_unless(rec_root, "no recordings (python3 missing)\n");
	for (size_t i = 0; i < sizeof(hostile_cases) / sizeof(hostile_cases[0]); i++) {
		const struct hostile *h = &hostile_cases[i];
		struct outcome o;
		bool named = true;

		replay(h->rec, h->mutation, 20, &o);
		for (int k = 0; k < 3 && h->says[k]; k++)
			named = named && strstr(o.err, h->says[k]);
		if (o.status != 125 || !named || strstr(o.out, "memverify: pass") || o.secs > 15)
			dump(h->mutation, &o);
		print_message("%-45.45s %.1f s\n", h->mutation, o.secs);
		assert_int_equal(o.status, 125);
		assert_true(named);
		/* before the commit: the guest never started here */
		assert_null(strstr(o.out, "memverify: pass"));
		/* within the peer timeout, with room for a loaded machine */
		assert_true(o.secs < 15);
		/* and nothing is left listening */
		assert_true(port_closed(o.port));
		outcome_free(&o);
	}
}

/*
 * Regressions the random cases found.  A bulk channel that stopped inside
 * a frame, its connection left open, hung the destination (its bulk
 * thread read forever, its driver waited for the mark): now the peer
 * timeout bounds it before READY.  A control channel that stopped inside
 * the source's last frame (SRC_STATS), after every page had arrived,
 * paused post-copy with nothing left to recover and the destination never
 * exited: now it completes and runs the guest to its end.
 */
static void test_regressions_found_by_replay(void **state)
{
	struct outcome o;

	t_skip_unless(rec_root, "no recordings (python3 missing)\n");
	replay(REC_STOPCOPY, "bulk:stall=5000", 20, &o);
	/* mid-frame: "truncated message"; between frames (digests move them): "silent" */
	bool said = strstr(o.err, "bulk channel: truncated message") ||
		    strstr(o.err, "bulk channel: the source was silent");
	if (o.status != 125 || !said)
		dump("bulk:stall=5000", &o);
	assert_int_equal(o.status, 125);
	assert_true(said);
	outcome_free(&o);

	replay(REC_HYBRID, "control:stall=-100", 20, &o);
	if (o.status != 0)
		dump("control:stall=-100", &o);
	assert_int_equal(o.status, 0);
	assert_non_null(strstr(o.out, T_MV_DONE));
	outcome_free(&o);
}

/* --- seeded random mutations ------------------------------------------------------- */

static void test_mutated_streams_end_cleanly(void **state)
{
	const char *env = getenv("REPLAY_CASES");
	int n = env ? atoi(env) : 20, counts[3] = { 0 };
	const char *kinds[3] = { "clean error", "verified guest", "outcome unknown" };

	t_skip_unless(rec_root, "no recordings (python3 missing)\n");
	for (int seed = 1; seed <= n; seed++) {
		char m[32];
		struct outcome o;
		const char *verdict, *line;

		snprintf(m, sizeof(m), "random=%d", seed);
		replay(seed % 3, m, 25, &o);
		verdict = judge(&o);
		line = strncmp(o.log, "replay: ", 8) ? o.log : o.log + 8;
		print_message("%-10s %-60.*s %s, %.1f s\n", m, (int)MIN(strcspn(line, "\n"), 60), line,
			      verdict ? verdict : "NOT CLEAN", o.secs);
		if (!verdict)
			dump(m, &o);
		assert_non_null(verdict);
		for (int k = 0; k < 3; k++)
			counts[k] += !strcmp(verdict, kinds[k]);
		outcome_free(&o);
	}
	print_message("%d mutated replays: %d clean errors, %d verified guests, %d outcome-unknown holds\n",
		      n, counts[0], counts[1], counts[2]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hostile_frames_end_the_migration),
		cmocka_unit_test(test_regressions_found_by_replay),
		cmocka_unit_test(test_mutated_streams_end_cleanly),
	};

	return cmocka_run_group_tests(tests, setup_recordings, teardown_recordings);
}
