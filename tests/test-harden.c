/*
 * test-harden.c - hostile local clients and users: a control client that
 * closes early, floods or idles never kills umig or locks others out; the
 * control socket and snapshot files are private to their owner; an
 * unprivileged user's umig names the permission it lacks.
 *
 * Every umig started here is recorded in `kids` and killed by the
 * teardown if a failed assertion leaves it running.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"

#define T_CLIENTS 16   /* CTL_MAX_CLIENTS in src/control.c */

static pid_t kids[4];

static void t_track(pid_t pid)
{
	for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
		if (!kids[i]) {
			kids[i] = pid;
			return;
		}
}

/* t_wait() and forget: the teardown must not kill a reused pid. */
static int t_reap(pid_t pid, int timeout_s)
{
	for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++)
		if (kids[i] == pid)
			kids[i] = 0;
	return t_wait(pid, timeout_s);
}

static int teardown_kids(void **state)
{
	for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++) {
		t_kill(kids[i]);
		kids[i] = 0;
	}
	return 0;
}

static void t_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000l };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int t_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	assert_true(fd >= 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		print_message("connect %s: %s\n", path, strerror(errno));
		fail();
	}
	return fd;
}

/* Read one line within timeout_ms into buf; the line, or "" on close/timeout. */
static const char *t_read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
	size_t len = 0;

	buf[0] = 0;
	for (int waited = 0; waited < timeout_ms && len + 1 < cap;) {
		ssize_t n = recv(fd, buf + len, cap - 1 - len, MSG_DONTWAIT);

		if (n > 0) {
			len += n;
			buf[len] = 0;
			if (strchr(buf, '\n'))
				break;
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			break;
		} else {
			t_sleep_ms(10);
			waited += 10;
		}
	}
	return buf;
}

static pid_t start_idle(const char *sock, const char *out, const char *err)
{
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest("idle"), "--cmdline",
			 "secs=600", "--control", (char *)sock, NULL };
	pid_t pid = t_spawn(argv, out, err);

	t_track(pid);
	assert_true(t_wait_for_path(sock, 10000));
	return pid;
}

static char *ctl(const char *sock, const char *cmd, int *status, char **err)
{
	char *argv[] = { (char *)t_umig(), "ctl", "--raw", (char *)sock, (char *)cmd, NULL };
	struct t_result r;

	t_run(argv, 40, &r);
	*status = r.status;
	if (err)
		*err = r.err;
	else
		free(r.err);
	return r.out;
}

static void assert_answers(const char *sock)
{
	int st;
	char *reply = ctl(sock, "query-status", &st, NULL);

	assert_int_equal(st, 0);
	assert_non_null(strstr(reply, "\"status\":\"running\""));
	free(reply);
}

static void quit_and_reap(const char *sock, pid_t pid)
{
	int st;

	free(ctl(sock, "quit", &st, NULL));
	assert_int_equal(st, 0);
	assert_int_equal(t_reap(pid, 30), 0);
}

/* Regression: a request, then close without reading, killed umig run (SIGPIPE, 141). */
static void test_client_closing_early_does_not_kill_umig(void **state)
{
	char *dir = t_tmpdir();
	const char *sock = t_path(dir, "c.sock");
	pid_t pid = start_idle(sock, NULL, NULL);
	static const char req[] =
		"{\"execute\":\"query-stats\",\"arguments\":{\"max_samples\":65536}}\n"
		"{\"execute\":\"query-status\"}\n{\"execute\":\"query-status\"}\n";

	for (int i = 0; i < 20; i++) {
		int fd = t_connect(sock);

		assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
		close(fd);
	}
	t_sleep_ms(200);
	assert_int_equal(waitpid(pid, NULL, WNOHANG), 0);   /* still alive */
	assert_answers(sock);
	quit_and_reap(sock, pid);
	t_tmpdir_free(dir);
}

/* Regression: `umig ctl` died of SIGPIPE when the server answered busy and closed. */
static void test_ctl_survives_busy_server(void **state)
{
	char *dir = t_tmpdir();
	const char *sock = t_path(dir, "c.sock");
	pid_t pid = start_idle(sock, NULL, NULL);
	int fds[T_CLIENTS], st;
	char *reply, *err;

	for (int i = 0; i < T_CLIENTS; i++)
		fds[i] = t_connect(sock);
	/* an empty line is activity without a reply: none of them is idle */
	for (int i = 0; i < T_CLIENTS; i++)
		assert_int_equal(write(fds[i], "\n", 1), 1);
	/* whether ctl's write meets the closed socket is a race: try a few times */
	for (int i = 0; i < 5; i++) {
		reply = ctl(sock, "query-status", &st, &err);
		assert_int_equal(st, 1);
		assert_non_null(strstr(reply, "\"busy\""));
		assert_non_null(strstr(err, "too many clients"));
		free(reply);
		free(err);
	}
	for (int i = 0; i < T_CLIENTS; i++)
		close(fds[i]);
	t_sleep_ms(100);
	assert_answers(sock);
	quit_and_reap(sock, pid);
	t_tmpdir_free(dir);
}

/*
 * Idle clients filling the table, one that pipelines requests and never
 * reads, and one that sends an endless line: another client still gets
 * its answers meanwhile, the flooder is dropped, `quit` works.
 */
static void test_idle_and_flooding_clients_lock_nobody_out(void **state)
{
	char *dir = t_tmpdir();
	const char *sock = t_path(dir, "c.sock");
	const char *err = t_path(dir, "err");
	pid_t pid = start_idle(sock, NULL, err);
	int idle[T_CLIENTS - 1], flood, fd;
	char chunk[64 * 27 + 1] = "", line[512];
	bool dropped = false, answered = false;
	char *e;

	for (int i = 0; i < T_CLIENTS - 1; i++)
		idle[i] = t_connect(sock);
	flood = t_connect(sock);
	fcntl(flood, F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 64; i++)
		strcat(chunk, "{\"execute\":\"query-status\"}\n");
	t_sleep_ms(2300);   /* the idle ones are now idle longer than CTL_EVICT_NS */
	/* bounded: 4 MiB of replies is ~40 000 requests, ~20 000 chunks at most */
	for (int i = 0; i < 200000 && !dropped; i++) {
		ssize_t n = send(flood, chunk, strlen(chunk), MSG_NOSIGNAL);

		if (n < 0 && (errno == EPIPE || errno == ECONNRESET))
			dropped = true;
		else if (n < 0)
			t_sleep_ms(1);
		if (i == 100) {   /* mid-flood, the table full: a client still gets in */
			assert_answers(sock);
			answered = true;
		}
	}
	assert_true(answered);
	assert_true(dropped);
	assert_true(t_wait_for_text(err, "does not read its replies", 5000));
	/* the client idle longest gave way, and was told why */
	assert_non_null(strstr(t_read_line(idle[0], line, sizeof(line), 2000),
			       "\"class\":\"timeout\""));
	/* a request line without an end is refused, the connection closed */
	{
		static char big[70 * 1024];

		memset(big, ' ', sizeof(big));
		fd = t_connect(sock);
		fcntl(fd, F_SETFL, O_NONBLOCK);
		for (size_t off = 0, tries = 0; off < 65536 && tries < 1000; tries++) {
			ssize_t n = send(fd, big + off, sizeof(big) - off, MSG_NOSIGNAL);

			if (n > 0)
				off += n;
			else
				t_sleep_ms(5);
		}
		assert_non_null(strstr(t_read_line(fd, line, sizeof(line), 5000),
				       "request line longer than 64 KiB"));
		close(fd);
	}
	assert_answers(sock);
	quit_and_reap(sock, pid);
	e = t_read_file(err);
	assert_non_null(strstr(e, "quit requested"));
	free(e);
	for (int i = 0; i < T_CLIENTS - 1; i++)
		close(idle[i]);
	close(flood);
	t_tmpdir_free(dir);
}

/* The socket is 0600 whatever the umask; a directory others may write to is refused. */
static void test_control_socket_is_private(void **state)
{
	char *dir = t_tmpdir();
	const char *sock = t_path(dir, "c.sock");
	const char *open_dir = t_path(dir, "open");
	char open_sock[600];
	mode_t old = umask(0);
	struct t_result r;
	struct stat st;
	pid_t pid;

	pid = start_idle(sock, NULL, NULL);
	umask(old);
	assert_int_equal(lstat(sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	quit_and_reap(sock, pid);

	assert_int_equal(mkdir(open_dir, 0777), 0);
	assert_int_equal(chmod(open_dir, 0777), 0);
	snprintf(open_sock, sizeof(open_sock), "%s/c.sock", open_dir);
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest("hello"), "--control",
			 open_sock, NULL };
	t_run(argv, 30, &r);
	assert_int_equal(r.status, 125);
	assert_non_null(strstr(r.err, "writable by every user and has no sticky bit"));
	assert_string_equal(r.out, "");
	t_result_free(&r);
	/* with the sticky bit (like /tmp) it is allowed */
	assert_int_equal(chmod(open_dir, 01777), 0);
	t_run(argv, 30, &r);
	assert_int_equal(r.status, 0);
	t_result_free(&r);
	t_tmpdir_free(dir);
}

/* A snapshot holds the guest's memory: 0600 whatever the umask or a stale .tmp. */
static void test_snapshot_file_is_private(void **state)
{
	char *dir = t_tmpdir();
	const char *snap = t_path(dir, "s.snap");
	const char *tmp = t_path(dir, "s.snap.tmp");
	mode_t old = umask(0);
	struct t_result r;
	struct stat st;
	int fd = open(tmp, O_WRONLY | O_CREAT, 0666);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "old", 3), 3);
	close(fd);
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest("idle"), "--mem", "8M",
			 "--snapshot", (char *)snap, "--snapshot-after", "0.3", NULL };
	t_run(argv, 60, &r);
	umask(old);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.err, "snapshot written"));
	assert_int_equal(stat(snap, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(access(tmp, F_OK), -1);
	t_result_free(&r);
	t_tmpdir_free(dir);
}

/* --- an unprivileged user ------------------------------------------------------ */

static int t_port(void)
{
	static int base;

	if (!base)
		base = 40000 + (getpid() * 13 + time(NULL)) % 20000;
	return base++;
}

/* cp src dst and make it executable for everyone. */
static void t_copy_exec(const char *src, const char *dst)
{
	char cmd[1400];

	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && chmod 0755 '%s'", src, dst, dst);
	assert_int_equal(system(cmd), 0);
}

/* Like t_spawn(), as user pw (no supplementary groups). */
static pid_t t_spawn_as(const struct passwd *pw, char *const argv[], const char *out,
			const char *err)
{
	pid_t pid = fork();

	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);
		int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0666);
		int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0666);

		signal(SIGPIPE, SIG_DFL);
		dup2(nul, 0);
		dup2(o, 1);
		dup2(e, 2);
		if (setgroups(0, NULL) || setgid(pw->pw_gid) || setuid(pw->pw_uid))
			_exit(126);
		execv(argv[0], argv);
		_exit(127);
	}
	t_track(pid);
	return pid;
}

/*
 * As `nobody`: a pre-copy migration needs userfaultfd write-protection,
 * and the error says so and how to fix it while the guest keeps running;
 * root's control socket refuses the connection.
 */
static void test_unprivileged_user_is_told_what_is_missing(void **state)
{
	struct passwd *pw = getpwnam("nobody");
	char *dir, bin[600], guest[600], dst[32];
	const char *out, *err, *sock;
	pid_t inc, pid, ctlpid;
	char *o, *e;
	int st;

	t_skip_unless(geteuid() == 0, "switching to an unprivileged user needs root\n");
	t_skip_unless(pw && pw->pw_uid != 0, "no 'nobody' user on this host\n");
	dir = t_tmpdir();
	assert_int_equal(chmod(dir, 0755), 0);
	out = t_path(dir, "out");
	err = t_path(dir, "err");
	snprintf(bin, sizeof(bin), "%s/umig", dir);
	snprintf(guest, sizeof(guest), "%s/idle.elf", dir);
	t_copy_exec(t_umig(), bin);
	t_copy_exec(t_guest("idle"), guest);

	/* is userfaultfd open to unprivileged users here? Then nothing is missing. */
	char *caps_argv[] = { bin, "caps", NULL };
	pid = t_spawn_as(pw, caps_argv, out, err);
	st = t_reap(pid, 30);
	if (st == 126 || st == 127) {
		t_tmpdir_free(dir);
		t_skip_unless(false, "cannot run umig as 'nobody' (status %d)\n", st);
	}
	o = t_read_file(out);
	assert_non_null(o);
	if (!strstr(o, "fix: run as root, set vm.unprivileged_userfaultfd=1")) {
		free(o);
		t_tmpdir_free(dir);
		t_skip_unless(false, "userfaultfd is open to unprivileged users on this host "
			      "(vm.unprivileged_userfaultfd=1 or /dev/userfaultfd): nothing is missing\n");
	}
	free(o);

	/* a root destination, an unprivileged source */
	snprintf(dst, sizeof(dst), "127.0.0.1:%d", t_port());
	char *inc_argv[] = { (char *)t_umig(), "incoming", "--listen", dst, NULL };
	inc = t_spawn(inc_argv, NULL, NULL);
	t_track(inc);
	t_sleep_ms(300);
	char *run_argv[] = { bin, "run", guest, "--cmdline", "secs=2", "--migrate-to", dst,
			     "--migrate-after", "0.3", "--mode", "pre", NULL };
	pid = t_spawn_as(pw, run_argv, out, err);
	st = t_reap(pid, 60);
	o = t_read_file(out);
	e = t_read_file(err);
	assert_non_null(e);
	print_message("as nobody: %s", e);
	assert_non_null(strstr(e, "userfaultfd unavailable (EPERM)"));
	assert_non_null(strstr(e, "vm.unprivileged_userfaultfd=1"));
	assert_non_null(strstr(e, "the guest keeps running here"));
	assert_int_equal(st, 0);
	assert_non_null(strstr(o, "idle: done"));
	free(o);
	free(e);
	kill(inc, SIGKILL);
	t_reap(inc, 10);

	/* root's control socket: nobody may not connect */
	sock = t_path(dir, "root.sock");
	pid = start_idle(sock, NULL, NULL);
	char *ctl_argv[] = { bin, "ctl", (char *)sock, "query-status", NULL };
	ctlpid = t_spawn_as(pw, ctl_argv, out, err);
	assert_int_equal(t_reap(ctlpid, 30), 125);
	e = t_read_file(err);
	assert_non_null(strstr(e, "Permission denied"));
	free(e);
	quit_and_reap(sock, pid);
	t_tmpdir_free(dir);
}

/* vm.unprivileged_userfaultfd as found, restored by the teardown (-1: untouched) */
static int uffd_sysctl_saved = -1;

static int uffd_sysctl(int set)
{
	FILE *f = fopen("/proc/sys/vm/unprivileged_userfaultfd", set < 0 ? "r" : "w");
	int v = -1;

	if (!f)
		return -1;
	if (set < 0 && fscanf(f, "%d", &v) != 1)
		v = -1;
	if (set >= 0)
		v = fprintf(f, "%d\n", set) > 0 ? set : -1;
	if (fclose(f))
		v = -1;
	return v;
}

static int teardown_sysctl(void **state)
{
	if (uffd_sysctl_saved >= 0)
		uffd_sysctl(uffd_sysctl_saved);
	uffd_sysctl_saved = -1;
	return teardown_kids(state);
}

/*
 * As `nobody` at both ends, with what the README says an unprivileged
 * user needs (here vm.unprivileged_userfaultfd=1, set for this test and
 * restored after it): a hybrid migration - write-protect dirty tracking
 * at the source, userfaultfd post-copy at the destination - of memverify
 * finishes clean.
 */
static void test_unprivileged_migration_with_what_it_needs(void **state)
{
	struct passwd *pw = getpwnam("nobody");
	char *dir, bin[600], guest[600], dst[32];
	pid_t inc, src;
	char *o;

	t_skip_unless(geteuid() == 0, "switching to an unprivileged user needs root\n");
	t_skip_unless(pw && pw->pw_uid != 0, "no 'nobody' user on this host\n");
	uffd_sysctl_saved = uffd_sysctl(-1);
	t_skip_unless(uffd_sysctl_saved >= 0 && uffd_sysctl(1) == 1,
		      "cannot set vm.unprivileged_userfaultfd here\n");
	dir = t_tmpdir();
	assert_int_equal(chmod(dir, 0755), 0);
	snprintf(bin, sizeof(bin), "%s/umig", dir);
	snprintf(guest, sizeof(guest), "%s/memverify.elf", dir);
	t_copy_exec(t_umig(), bin);
	t_copy_exec(t_guest("memverify"), guest);
	snprintf(dst, sizeof(dst), "127.0.0.1:%d", t_port());
	char *inc_argv[] = { bin, "incoming", "--listen", dst, "--quiet", NULL };
	inc = t_spawn_as(pw, inc_argv, t_path(dir, "dst.out"), t_path(dir, "dst.err"));
	assert_true(t_wait_for_text(t_path(dir, "dst.err"), "waiting for a migration", 10000));
	char *run_argv[] = { bin, "run", guest, "--mem", "64M", "--cmdline", "wss=16 secs=40 moved_secs=1",
			     "--migrate-to", dst, "--migrate-after", "0.5", "--mode", "hybrid",
			     "--quiet", NULL };
	src = t_spawn_as(pw, run_argv, t_path(dir, "src.out"), t_path(dir, "src.err"));
	int st_src = t_reap(src, 90), st_dst = t_reap(inc, 90);

	o = t_read_file(t_path(dir, "dst.out"));
	if (st_src || st_dst || !o || !strstr(o, T_MV_DONE)) {
		char *se = t_read_file(t_path(dir, "src.err")), *de = t_read_file(t_path(dir, "dst.err"));

		fprintf(stderr, "source %d, destination %d\n-- src:\n%s-- dst:\n%s-- dst out:\n%s",
			st_src, st_dst, se, de, o);
		free(se);
		free(de);
	}
	assert_int_equal(st_src, 0);
	assert_int_equal(st_dst, 0);
	assert_non_null(o);
	assert_non_null(strstr(o, T_MV_DONE));
	free(o);
	t_tmpdir_free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_client_closing_early_does_not_kill_umig, teardown_kids),
		cmocka_unit_test_teardown(test_ctl_survives_busy_server, teardown_kids),
		cmocka_unit_test_teardown(test_idle_and_flooding_clients_lock_nobody_out, teardown_kids),
		cmocka_unit_test_teardown(test_control_socket_is_private, teardown_kids),
		cmocka_unit_test_teardown(test_snapshot_file_is_private, teardown_kids),
		cmocka_unit_test_teardown(test_unprivileged_user_is_told_what_is_missing, teardown_kids),
		cmocka_unit_test_teardown(test_unprivileged_migration_with_what_it_needs, teardown_sysctl),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
