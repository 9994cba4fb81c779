/*
 * t-util.c - process, file and directory helpers for the tests; see t-util.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"

const char *t_umig(void)
{
	const char *p = getenv("UMIG_BIN");

	return p && *p ? p : "build/umig";
}

const char *t_guest(const char *name)
{
	static char buf[8][512];
	static int slot;
	const char *dir = getenv("UMIG_GUESTS");
	char *b = buf[slot++ % 8];

	snprintf(b, 512, "%s/%s.elf", dir && *dir ? dir : "build/guest-tests", name);
	return b;
}

char *t_tmpdir(void)
{
	char *d = strdup("/tmp/umig-test.XXXXXX");

	if (!d || !mkdtemp(d)) {
		fprintf(stderr, "t_tmpdir: %s\n", strerror(errno));
		abort();
	}
	return d;
}

static int t_rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

void t_tmpdir_free(char *dir)
{
	if (!dir)
		return;
	nftw(dir, t_rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
}

const char *t_path(const char *dir, const char *name)
{
	static char buf[8][512];
	static int slot;
	char *b = buf[slot++ % 8];

	snprintf(b, 512, "%s/%s", dir, name);
	return b;
}

static void t_redirect(int fd, const char *path)
{
	int f = open(path ? path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (f >= 0) {
		dup2(f, fd);
		close(f);
	}
}

pid_t t_spawn(char *const argv[], const char *out_path, const char *err_path)
{
	pid_t pid = fork();

	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		/* the tests ignore SIGPIPE; umig must be seen as a user runs it */
		signal(SIGPIPE, SIG_DFL);
		dup2(nul, 0);
		t_redirect(1, out_path);
		t_redirect(2, err_path);
		execvp(argv[0], argv);
		_exit(127);
	}
	return pid;
}

int t_wait(pid_t pid, int timeout_s)
{
	struct timespec ts = { 0, 5 * 1000 * 1000 };
	int status;

	for (long i = 0; i < (long)timeout_s * 200; i++) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		if (r < 0)
			return -1;
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "t_wait: pid %d still running after %d s; killing it\n", pid, timeout_s);
	t_kill(pid);
	return -1;
}

void t_kill(pid_t pid)
{
	if (pid <= 0)
		return;
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

char *t_read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f)
		return NULL;
	do {
		if (len + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			buf = realloc(buf, cap);
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = 0;
	return buf;
}

void t_run(char *const argv[], int timeout_s, struct t_result *r)
{
	char *dir = t_tmpdir();
	char out[600], err[600];
	pid_t pid;

	snprintf(out, sizeof(out), "%s/out", dir);
	snprintf(err, sizeof(err), "%s/err", dir);
	pid = t_spawn(argv, out, err);
	r->status = t_wait(pid, timeout_s);
	r->out = t_read_file(out);
	r->err = t_read_file(err);
	if (!r->out)
		r->out = strdup("");
	if (!r->err)
		r->err = strdup("");
	t_tmpdir_free(dir);
}

void t_result_free(struct t_result *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
}

bool t_wait_for_path(const char *path, int timeout_ms)
{
	struct timespec ts = { 0, 5 * 1000 * 1000 };

	for (int i = 0; i < timeout_ms / 5; i++) {
		if (access(path, F_OK) == 0)
			return true;
		nanosleep(&ts, NULL);
	}
	return false;
}

bool t_wait_for_text(const char *path, const char *needle, int timeout_ms)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };

	for (int i = 0; i < timeout_ms / 10; i++) {
		char *s = t_read_file(path);
		bool hit = s && strstr(s, needle);

		free(s);
		if (hit)
			return true;
		nanosleep(&ts, NULL);
	}
	return false;
}

int t_count(const char *hay, const char *needle)
{
	int n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

json_t *t_json_need(json_t *rec, const char *key)
{
	json_t *v = json_object_get(rec, key);

	if (!v)
		fail_msg("the record has no '%s'", key);
	return v;
}

void t_snapshot_round_trip(const char *backing)
{
	char *dir = t_tmpdir();
	char snap[600];
	struct t_result r;

	snprintf(snap, sizeof(snap), "%s", t_path(dir, "vm.snap"));
	/* 4 guest seconds: past the snapshot at 0.5 s on any vCPU speed */
	char *ra[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "32M",
		       "--ram-backing", (char *)backing, "--cmdline", "wss=16 secs=40 moved_secs=1",
		       "--snapshot", snap, "--snapshot-after", "0.5", NULL };
	t_run(ra, 60, &r);
	if (r.status)
		fprintf(stderr, "run: %d\n%s\n", r.status, r.err);
	assert_int_equal(r.status, 0);
	assert_null(strstr(r.out, "done"));   /* it stopped mid-way */
	t_result_free(&r);
	char *sa[] = { (char *)t_umig(), "restore", snap, "--ram-backing", (char *)backing, NULL };
	t_run(sa, 60, &r);
	if (r.status)
		fprintf(stderr, "restore: %d\n%s\n", r.status, r.err);
	assert_int_equal(r.status, 0);
	assert_null(strstr(r.out, "MISMATCH"));
	assert_non_null(strstr(r.out, T_MV_DONE));
	/* a restored guest runs in another process: it sees a new host identity */
	assert_non_null(strstr(r.out, "moved to another umig process"));
	t_result_free(&r);
	t_tmpdir_free(dir);
}
