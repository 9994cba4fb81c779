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
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };
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
	free(o);
	free(e);
	t_tmpdir_free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_source_killed_during_postcopy),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
