/*
 * test-migrate.c - live migration over loopback, end to end: each mode
 * moves memverify without losing a word, a dead destination leaves the
 * source guest running untouched, and a bad handshake is refused clearly.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"

static int t_port(void)
{
	static int base;

	if (!base)
		base = 20000 + (getpid() * 7 + time(NULL)) % 20000;
	return base++;
}

static double t_num(json_t *rec, const char *key)
{
	json_t *v = json_object_get(rec, key);

	if (!v)
		fprintf(stderr, "the record has no '%s'\n", key);
	assert_non_null(v);
	return json_number_value(v);
}

/*
 * The guest-perceived figures hold their ordering relations whatever the
 * timing (docs/metrics.md): the switchover gap contains the downtime, the
 * blackout the switchover gap, the longest beat gap both and the source's
 * part; the guest beats every millisecond, so its gaps are measured.
 */
static void check_gaps(json_t *rec, const char *mode)
{
	double sw = t_num(rec, "switch_gap_ms"), mx = t_num(rec, "max_beat_gap_ms");

	assert_true(sw >= t_num(rec, "downtime_ms"));
	assert_true(sw >= t_num(rec, "blackout_before_pause_ms") + t_num(rec, "resume_to_first_beat_ms"));
	assert_true(t_num(rec, "blackout_ms") >= sw);
	assert_true(mx >= t_num(rec, "blackout_ms"));
	assert_true(mx >= t_num(rec, "src_max_beat_gap_ms"));
	assert_true(mx >= t_num(rec, "postcopy_max_beat_gap_ms"));
	assert_true(t_num(rec, "guest_rate_before") > 0);
	if (!strcmp(mode, "post") || !strcmp(mode, "hybrid"))
		assert_true(t_num(rec, "guest_rate_during_postcopy") >= 0);
	else
		assert_null(json_object_get(rec, "guest_rate_during_postcopy"));
}

/*
 * The downtime's parts (docs/metrics.md): the source's partition
 * downtime_ms on its clock; the destination's steps are there too.  (How
 * they nest in the source's waits is not asserted: each side stamps a
 * send when it returns, so the two clocks' intervals overlap by that.)
 */
static void check_downtime_parts(json_t *rec, const char *mode)
{
	static const char *const src[] = {
		"downtime_pause_ms", "downtime_dirty_ms", "downtime_pages_ms", "downtime_save_ms",
		"downtime_send_ms", "downtime_load_ms", "downtime_commit_ms", "downtime_other_ms",
	};
	double sum = 0, dt = t_num(rec, "downtime_ms");

	for (size_t i = 0; i < sizeof(src) / sizeof(src[0]); i++) {
		assert_true(t_num(rec, src[i]) >= 0);
		sum += t_num(rec, src[i]);
	}
	assert_true(sum > dt - 0.001 && sum < dt + 0.001);
	assert_true(t_num(rec, "dst_mark_wait_ms") <= t_num(rec, "dst_load_ms"));
	assert_true(t_num(rec, "dst_vcpu_start_ms") >= 0);
	if (strcmp(mode, "pre") && strcmp(mode, "hybrid"))
		assert_int_equal(t_num(rec, "downtime_pages"), strcmp(mode, "post") ? (128 << 20) / 4096 : 0);
	if (!strcmp(mode, "hybrid")) {
		/* two umigs of this version wait for round 1 to be placed */
		assert_true(t_num(rec, "discard_early_batches") >= 0);
		assert_true(t_num(rec, "hybrid_drain_wait_ms") > 0);
		assert_true(t_num(rec, "dst_discard_pages") >=
			    t_num(rec, "discard_early_pages") + t_num(rec, "downtime_pages"));
	}
}

static void migrate_mode(const char *mode)
{
	char *dir = t_tmpdir();
	char listen[32], stats[600], sstats[600];
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	struct t_result r;
	json_t *rec;
	char *o;
	int port = t_port(), dst;
	double sw;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(stats, sizeof(stats), "%s", t_path(dir, "dst.json"));
	snprintf(sstats, sizeof(sstats), "%s", t_path(dir, "src.json"));
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--stats", stats,
		       "--quiet", NULL };
	pid_t dpid = t_spawn(da, dout, derr);

	usleep(300000);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "128M",
		       "--cmdline", "wss=32 secs=40 moved_secs=1", "--migrate-to", listen,
		       "--migrate-after", "0.7", "--mode", (char *)mode, "--stats", sstats,
		       "--quiet", NULL };
	t_run(sa, 120, &r);
	dst = t_wait(dpid, 120);
	o = t_read_file(dout);
	if (r.status || dst) {
		char *e = t_read_file(derr);

		fprintf(stderr, "mode %s: source %d, destination %d\nsrc err: %s\ndst err: %s\n",
			mode, r.status, dst, r.err, e);
		free(e);
	}
	assert_int_equal(r.status, 0);
	assert_int_equal(dst, 0);
	/* the guest finished at the destination, continuing its passes */
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_null(strstr(o, "BACKWARDS"));
	assert_null(strstr(o, "wss="));
	assert_non_null(strstr(o, T_MV_DONE));
	assert_null(strstr(r.out, "done"));
	/* ... and it saw that it had moved; it never did at the source */
	assert_non_null(strstr(o, "memverify: moved to another umig process before pass "));
	assert_null(strstr(r.out, "moved to"));
	/* the record has the documented keys and sane values */
	rec = json_load_file(sstats, 0, NULL);
	assert_non_null(rec);
	assert_string_equal(json_string_value(json_object_get(rec, "mode")), mode);
	assert_string_equal(json_string_value(json_object_get(rec, "status")), "completed");
	/* two umigs of this version speak the newest protocol */
	assert_int_equal(json_integer_value(json_object_get(rec, "protocol_version")), 2);
	static const char *const keys[] = {
		"ram_bytes", "total_ms", "downtime_ms", "blackout_ms", "wire_bytes",
		"pages_bulk", "pages_urgent", "pages_zero", "pages_resent", "rounds",
		"faults", "fault_us_p50", "fault_us_p99", "fault_us_max",
	};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		assert_non_null(json_object_get(rec, keys[i]));
	assert_int_equal(json_integer_value(json_object_get(rec, "ram_bytes")), 128 << 20);
	assert_true(json_number_value(json_object_get(rec, "downtime_ms")) > 0);
	assert_true(json_number_value(json_object_get(rec, "total_ms")) >=
		    json_number_value(json_object_get(rec, "downtime_ms")));
	/* every page went once as data or as a zero run, at least */
	assert_true(json_integer_value(json_object_get(rec, "pages_bulk")) +
		    json_integer_value(json_object_get(rec, "pages_urgent")) +
		    json_integer_value(json_object_get(rec, "pages_zero")) >= (128 << 20) / 4096);
	if (!strcmp(mode, "post"))
		assert_int_equal(json_integer_value(json_object_get(rec, "pages_resent")), 0);
	check_gaps(rec, mode);
	check_downtime_parts(rec, mode);
	sw = t_num(rec, "max_beat_gap_ms");
	json_decref(rec);
	rec = json_load_file(stats, 0, NULL);
	assert_non_null(rec);   /* the destination wrote the same record */
	/* ... and a second after completion the tail of max_beat_gap_ms */
	check_gaps(rec, mode);
	assert_true(t_num(rec, "max_beat_gap_ms") >= sw);
	assert_true(t_num(rec, "max_beat_gap_ms") >= t_num(rec, "dst_max_beat_gap_ms"));
	assert_true(t_num(rec, "dst_max_beat_gap_ms") >= t_num(rec, "postcopy_max_beat_gap_ms"));
	json_decref(rec);
	free(o);
	t_result_free(&r);
	t_tmpdir_free(dir);
}

/*
 * One post-copy migration of memverify with --dup-inflight DUP; the
 * source's pages_dup, or -1 if the run failed.  Asserts the guest finished
 * clean at the destination: duplicates must never place a page twice or
 * a stale one.
 */
static long migrate_dup(const char *dup)
{
	char *dir = t_tmpdir();
	char listen[32], sstats[600];
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	struct t_result r;
	json_t *rec;
	long n;
	char *o;
	int dst;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", t_port());
	snprintf(sstats, sizeof(sstats), "%s", t_path(dir, "src.json"));
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };
	pid_t dpid = t_spawn(da, dout, derr);

	usleep(300000);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "128M",
		       "--cmdline", "wss=48 secs=40 moved_secs=1", "--migrate-to", listen,
		       "--migrate-after", "0.7", "--mode", "post", "--prepaging", "linear",
		       "--dup-inflight", (char *)dup, "--stats", sstats, "--quiet", NULL };
	t_run(sa, 120, &r);
	dst = t_wait(dpid, 120);
	o = t_read_file(dout);
	assert_int_equal(r.status, 0);
	assert_int_equal(dst, 0);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_non_null(strstr(o, T_MV_DONE));
	rec = json_load_file(sstats, 0, NULL);
	assert_non_null(rec);
	n = (long)json_integer_value(json_object_get(rec, "pages_dup"));
	/* a duplicate is not a resend: pages_resent keeps its meaning */
	assert_int_equal(json_integer_value(json_object_get(rec, "pages_resent")), 0);
	assert_true(json_integer_value(json_object_get(rec, "pages_urgent")) >= n);
	json_decref(rec);
	free(o);
	t_result_free(&r);
	t_tmpdir_free(dir);
	return n;
}

/*
 * Duplicates happen (a fault racing the push: `always` answers every
 * request for a pushed page) and memverify stays clean; `off` sends none.
 * A run without a single race is possible, so up to three are tried.
 */
static void test_postcopy_duplicates_are_safe(void **state)
{
	long n = 0;

	(void)state;
	for (int i = 0; i < 3 && n == 0; i++)
		n = migrate_dup("always");
	if (n == 0)
		fprintf(stderr, "no fault raced the push in three migrations\n");
	assert_true(n > 0);
	assert_int_equal(migrate_dup("off"), 0);
}

static void test_migrate_post(void **s) { migrate_mode("post"); }
static void test_migrate_pre(void **s) { migrate_mode("pre"); }
static void test_migrate_hybrid(void **s) { migrate_mode("hybrid"); }
static void test_migrate_stop_copy(void **s) { migrate_mode("stop-copy"); }

/* `umig migrate` drives a guest started with --control and reports its end. */
static void test_migrate_verb_follows_to_the_end(void **state)
{
	char *dir = t_tmpdir();
	char listen[32], sock[600];
	const char *dout = t_path(dir, "dst.out");
	struct t_result q, r;
	int port = t_port(), st;
	char *o;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(sock, sizeof(sock), "%s", t_path(dir, "src.sock"));
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };
	pid_t dpid = t_spawn(da, dout, NULL);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "64M",
		       "--cmdline", "wss=8 secs=3", "--control", sock, NULL };
	pid_t spid = t_spawn(sa, NULL, NULL);

	assert_true(t_wait_for_path(sock, 10000));
	char *qa[] = { (char *)t_umig(), "ctl", "--raw", sock, "query-migrate", NULL };
	t_run(qa, 30, &q);
	assert_non_null(strstr(q.out, "\"status\":\"none\""));
	t_result_free(&q);
	char *ma[] = { (char *)t_umig(), "migrate", "--control", sock, "--to", listen,
		       "--mode", "post", "--prepaging", "bubble-dir", "--quiet", NULL };
	t_run(ma, 120, &r);
	/* 0, not a signal: the source closes its socket as it exits */
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "\"status\": \"completed\""));
	assert_non_null(strstr(r.out, "\"prepaging\": \"bubble-dir\""));
	st = t_wait(spid, 60);
	assert_int_equal(st, 0);
	assert_int_equal(t_wait(dpid, 120), 0);
	o = t_read_file(dout);
	assert_non_null(strstr(o, T_MV_DONE));
	free(o);
	t_result_free(&r);
	t_tmpdir_free(dir);
}

/* The destination dies during pre-copy: the source guest goes on untouched. */
static void test_dest_killed_during_precopy(void **state)
{
	char *dir = t_tmpdir();
	char listen[32];
	const char *sout = t_path(dir, "src.out"), *serr = t_path(dir, "src.err");
	int port = t_port(), st;
	char *o, *e;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };
	pid_t dpid = t_spawn(da, NULL, NULL);

	usleep(300000);
	/*
	 * A zero downtime limit converges only on a round with nothing dirty;
	 * the 128 MiB first round takes seconds here, so the kill lands in it.
	 */
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "256M",
		       "--cmdline", "wss=128 secs=3", "--migrate-to", listen,
		       "--migrate-after", "0.3", "--mode", "pre", "--downtime-limit", "0",
		       "--max-rounds", "10000", "--quiet", NULL };
	pid_t spid = t_spawn(sa, sout, serr);

	usleep(900000);
	t_kill(dpid);
	st = t_wait(spid, 180);
	o = t_read_file(sout);
	e = t_read_file(serr);
	assert_int_equal(st, 0);
	assert_non_null(strstr(e, "migration failed"));
	assert_non_null(strstr(e, "keeps running"));
	assert_null(strstr(o, "MISMATCH"));
	assert_non_null(strstr(o, T_MV_DONE));
	free(o);
	free(e);
	t_tmpdir_free(dir);
}

/* Send raw bytes to an incoming umig and return its exit status and stderr. */
static int incoming_fed(const void *bytes, size_t len, const char *mem, char **err)
{
	char *dir = t_tmpdir();
	char listen[32];
	const char *errp = t_path(dir, "err");
	int port = t_port(), st, fd;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet",
		       mem ? "--mem" : NULL, (char *)mem, NULL };
	pid_t dpid = t_spawn(da, NULL, errp);

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	for (int i = 0; i < 100 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)); i++)
		usleep(50000);
	if (write(fd, bytes, len) != (ssize_t)len)
		fprintf(stderr, "short write to incoming\n");
	shutdown(fd, SHUT_WR);
	st = t_wait(dpid, 30);
	close(fd);
	*err = t_read_file(errp);
	t_tmpdir_free(dir);
	return st;
}

/*
 * Send raw bytes that never make a greeting to an incoming umig: it says
 * why it dropped the connection and keeps waiting for the real source.
 */
static void incoming_drops(const void *bytes, size_t len, const char *why)
{
	char *dir = t_tmpdir();
	char listen[32];
	const char *errp = t_path(dir, "err");
	int port = t_port(), fd, st;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };
	pid_t dpid = t_spawn(da, NULL, errp);

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	for (int i = 0; i < 100 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)); i++)
		usleep(50000);
	if (write(fd, bytes, len) != (ssize_t)len)
		fprintf(stderr, "short write to incoming\n");
	shutdown(fd, SHUT_WR);
	assert_true(t_wait_for_text(errp, why, 15000));
	assert_true(t_wait_for_text(errp, "dropped a connection", 1000));
	/* still waiting: the junk cost one connection, not the migration */
	assert_int_equal(waitpid(dpid, &st, WNOHANG), 0);
	t_kill(dpid);
	close(fd);
	t_tmpdir_free(dir);
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = v >> (8 * i);
}

static size_t greeting(uint8_t *g, uint16_t version)
{
	put_le(g, 0x47494d55u, 4);
	put_le(g + 4, version, 2);
	put_le(g + 6, 0, 2);
	put_le(g + 8, 42, 8);
	return 16;
}

static size_t hello(uint8_t *h, uint64_t ram)
{
	put_le(h, 24, 4);       /* length */
	put_le(h + 4, 1, 2);    /* MSG_HELLO */
	put_le(h + 6, 0, 2);
	put_le(h + 8, 4096, 4);
	put_le(h + 12, 2, 4);   /* post */
	put_le(h + 16, ram, 8);
	put_le(h + 24, 0, 8);
	return 32;
}

static void test_handshake_rejections(void **state)
{
	uint8_t b[256];
	char *err;
	size_t n;

	/* before the greeting is complete: dropped, and incoming keeps waiting */
	incoming_drops("GET / HTTP/1.0\r\n\r\n", 18, "not a umig migration stream");
	n = greeting(b, 99);
	incoming_drops(b, n, "version 99 not supported");
	incoming_drops(b, 5, "connection closed during the greeting");

	/* after it, a refusal ends the migration as before */

	n = greeting(b, 1);
	n += hello(b + n, 64 << 20);
	assert_int_equal(incoming_fed(b, n, "128M", &err), 125);
	assert_non_null(strstr(err, "RAM size mismatch"));
	free(err);

	/* truncated: the HELLO stops half way */
	n = greeting(b, 1);
	n += hello(b + n, 64 << 20) - 10;
	assert_int_equal(incoming_fed(b, n, NULL, &err), 125);
	assert_non_null(strstr(err, "truncated"));
	free(err);

	/* an absurd frame length is refused before anything is allocated */
	n = greeting(b, 1);
	put_le(b + n, 0xfffffff0u, 4);
	put_le(b + n + 4, 1, 2);
	put_le(b + n + 6, 0, 2);
	assert_int_equal(incoming_fed(b, n + 8, NULL, &err), 125);
	assert_non_null(strstr(err, "exceeds"));
	free(err);
}

/*
 * memverify (cmdline) told to migrate, after `after` seconds, to a port
 * nobody listens on: the guest ends clean here, and the source says `says`.
 */
static void migrate_to_nowhere(const char *cmdline, const char *after, const char *says)
{
	char listen[32];
	struct t_result r;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", t_port());
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "64M",
		       "--cmdline", (char *)cmdline, "--migrate-to", listen,
		       "--migrate-after", (char *)after, "--quiet", NULL };
	t_run(sa, 60, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, T_MV_DONE));
	assert_non_null(strstr(r.err, says));
	t_result_free(&r);
}

/* A source told to migrate to nowhere keeps its guest. */
static void test_unreachable_destination(void **state)
{
	migrate_to_nowhere("wss=8 secs=3", "0.2", "cannot connect");
}

/* A guest that ends before --migrate-after: its status, and a word that nothing moved. */
static void test_guest_ends_before_migrate_after(void **state)
{
	migrate_to_nowhere("wss=1 passes=1", "30",
			   "the guest exited (status 0) before --migrate-after: nothing was migrated");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_migrate_post),
		cmocka_unit_test(test_migrate_pre),
		cmocka_unit_test(test_migrate_hybrid),
		cmocka_unit_test(test_migrate_stop_copy),
		cmocka_unit_test(test_postcopy_duplicates_are_safe),
		cmocka_unit_test(test_migrate_verb_follows_to_the_end),
		cmocka_unit_test(test_dest_killed_during_precopy),
		cmocka_unit_test(test_handshake_rejections),
		cmocka_unit_test(test_unreachable_destination),
		cmocka_unit_test(test_guest_ends_before_migrate_after),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
