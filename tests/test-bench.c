/*
 * test-bench.c - bench/report.py reads the records bench/run keeps and
 * writes a valid CSV and summary.  The input is real: one loopback
 * migration laid out exactly as bench/run lays out a run.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"

static void test_report_parses_a_real_run(void **state)
{
	char *res = t_tmpdir();
	char raw[600], run[700], listen[32], p[800], cmd[2048];
	int port = 20000 + (getpid() * 13 + time(NULL)) % 20000, dst;
	struct t_result r;
	char *csv, *line2, *summary;
	json_t *rec;

	snprintf(raw, sizeof(raw), "%s/raw", res);
	mkdir(raw, 0755);
	snprintf(run, sizeof(run), "%s/unshaped.idle.64M.post.bubble.r1", raw);
	mkdir(run, 0755);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
#define RUNF(name) ((char *)t_path(run, name))
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet",
		       "--stats", RUNF("dst.json"), "--timeline", RUNF("dst-timeline.csv"),
		       "--console", RUNF("dst-console.txt"), NULL };
	pid_t dpid = t_spawn(da, NULL, NULL);

	usleep(300000);
	/* the guest ends 2.5 s after boot, about 1.5 s after its migration */
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("idle"), "--mem", "64M",
		       "--cmdline", "interval_ms=1 secs=3", "--migrate-to", listen,
		       "--migrate-after", "2.2", "--stats", RUNF("src.json"),
		       "--timeline", RUNF("src-timeline.csv"), "--quiet", NULL };
	t_run(sa, 60, &r);
	dst = t_wait(dpid, 60);
	assert_int_equal(r.status, 0);
	assert_int_equal(dst, 0);
	t_result_free(&r);
	snprintf(p, sizeof(p), "%s/meta.json", run);
	rec = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i}", "link", "unshaped",
			"guest", "idle", "ram", "64M", "mode", "post", "prepaging", "bubble",
			"rep", 1, "src_exit", 0, "dst_exit", 0);
	json_dump_file(rec, p, 0);
	json_decref(rec);

	snprintf(cmd, sizeof(cmd), "python3 bench/report.py '%s' > /dev/null", res);
	assert_int_equal(system(cmd), 0);
	snprintf(p, sizeof(p), "%s/runs.csv", res);
	csv = t_read_file(p);
	assert_non_null(csv);
	/* a header and exactly one row, with the same number of columns */
	assert_int_equal(t_count(csv, "\n"), 2);
	assert_true(strncmp(csv, "run,link,guest,ram,mode,prepaging,rep,status,failed,", 51) == 0);
	line2 = strchr(csv, '\n') + 1;
	{
		int cols1 = 0, cols2 = 0;

		for (char *c = csv; c < line2; c++)
			cols1 += *c == ',';
		for (char *c = line2; *c; c++)
			cols2 += *c == ',';
		assert_int_equal(cols1, cols2);
	}
	assert_non_null(strstr(line2, "unshaped.idle.64M.post.bubble.r1,unshaped,idle,64M,post,bubble,1,completed,0,"));
	/* the downtime in the CSV is the record's, and lost work was derived */
	snprintf(p, sizeof(p), "%s/src.json", run);
	rec = json_load_file(p, 0, NULL);
	assert_non_null(rec);
	{
		char want[64];
		double dt = json_number_value(json_object_get(rec, "downtime_ms"));
		char *f = line2;

		/* column 11 (1-based) is downtime_ms */
		for (int i = 0; i < 10; i++)
			f = strchr(f, ',') + 1;
		snprintf(want, sizeof(want), "%.3f", dt);
		assert_true(fabs(strtod(f, NULL) - dt) < 1e-6 * (dt + 1));
		(void)want;
	}
	json_decref(rec);
	/* rate_before_hz and lost_work_s are the last two columns: both numbers */
	{
		char *last = strrchr(line2, ',');
		char *prev = last - 1;

		while (prev > line2 && *prev != ',')
			prev--;
		assert_true(strtod(prev + 1, NULL) > 10.0);   /* idle beats ~1000/s */
		assert_true(last[1] >= '0' && last[1] <= '9');
	}
	snprintf(p, sizeof(p), "%s/summary.md", res);
	summary = t_read_file(p);
	assert_non_null(summary);
	assert_non_null(strstr(summary, "## link: unshaped"));
	assert_non_null(strstr(summary, "| idle | 64M | post | bubble | 1 |"));
	free(summary);
	free(csv);
	t_tmpdir_free(res);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_report_parses_a_real_run),
	};

	if (system("command -v python3 > /dev/null") != 0) {
		printf("test-bench: python3 is missing (make deps installs it)\n");
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
