/*
 * cli-common.c - what the run and restore verbs share: the console, the
 * signal thread and the serve loop.
 *
 * SIGINT and SIGTERM are blocked in every thread and received by one
 * thread with sigwait(), which asks the serve loop to stop the guest
 * cleanly (flush the console, remove the control socket) instead of
 * dying mid-write.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "umig/cli.h"
#include "umig/control.h"
#include "umig/log.h"
#include "umig/migopts.h"
#include "umig/migrate.h"
#include "umig/snapshot.h"
#include "umig/vm.h"

static volatile int cli_signal;

#define CTL_REPLY_MAX (4u << 20)
#define CTL_TIMEOUT_MS 30000

int cli_usage_error(const char *verb, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "umig %s: %s\nsee 'umig %s --help'\n", verb, msg, verb);
	return EXIT_USAGE;
}

/* Connect to a control socket; the message says what to check. */
int cli_ctl_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return err_set(-ENAMETOOLONG, "socket path too long");
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		return err_set(-e, "cannot connect to '%s': %s%s", path, strerror(e),
			       e == ENOENT || e == ECONNREFUSED ? " (is umig running with --control?)" : "");
	}
	return fd;
}

/*
 * Read one reply line into a malloc'd string, within CTL_TIMEOUT_MS.  The
 * server answers one request at a time, so nothing follows the line.
 */
int cli_ctl_read_reply(int fd, char **out)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);

	if (!buf)
		return -ENOMEM;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;
		char *nl;

		if (poll(&p, 1, CTL_TIMEOUT_MS) <= 0) {
			free(buf);
			return err_set(-ETIMEDOUT, "no reply within %d s", CTL_TIMEOUT_MS / 1000);
		}
		if (len + 1 == cap) {
			char *nb = cap < CTL_REPLY_MAX ? realloc(buf, cap * 2) : NULL;

			if (!nb) {
				free(buf);
				return err_set(-E2BIG, "reply too large");
			}
			buf = nb;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - 1 - len);
		if (n <= 0) {
			free(buf);
			return err_set(-EPIPE, "the connection closed before a reply");
		}
		len += n;
		buf[len] = 0;
		nl = strchr(buf, '\n');
		if (nl) {
			*nl = 0;
			*out = buf;
			return 0;
		}
	}
}

int cli_open_console(const char *path)
{
	int fd;

	if (!path)
		return STDOUT_FILENO;
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return err_set(-errno, "cannot open console file '%s': %s", path, strerror(errno));
	return fd;
}

struct sig_ctx {
	sigset_t set;
	struct vm *vm;
};

static void *cli_signal_thread(void *arg)
{
	struct sig_ctx *s = arg;
	int sig;

	if (sigwait(&s->set, &sig) == 0 && sig != SIGUSR2) {
		cli_signal = sig;
		vm_notify(s->vm);
	}
	return NULL;
}

static int cli_snapshot(struct vm *vm, const char *path)
{
	struct snapshot_info info;
	int ret;

	ret = vm_pause(vm);
	if (!ret)
		ret = snapshot_write(vm, path, &info);
	if (ret < 0) {
		pr_err("snapshot failed: %s", err_msg(ret));
		return EXIT_FAILURE_UMIG;
	}
	pr_info("snapshot written to %s: %llu MiB RAM, %llu pages stored, %llu zero pages skipped, %.1f MiB file",
		path, (unsigned long long)(info.ram_size >> 20),
		(unsigned long long)info.pages_stored, (unsigned long long)info.pages_zero,
		info.file_bytes / 1048576.0);
	return 0;
}

int cli_parse_mig_option(const char *verb, int opt, const char *arg, struct mig_params *p)
{
	int ret = migopt_parse(p, opt, arg);

	if (ret < 0)
		return -cli_usage_error(verb, "%s", err_msg(ret));
	return ret;
}

int cli_mig_longopts(const struct option *own, struct option *out)
{
	return migopt_longopts(own, out, CLI_MAX_OPTS);
}

static int cli_serve_loop(struct vm *vm, struct control *ctl, struct mig_ctl *mig,
			  const struct serve_opts *o)
{
	uint64_t deadline = 0, mig_deadline = 0;
	char why[512];

	if (o->snapshot_path)
		deadline = now_ns() + (uint64_t)(o->snapshot_after * 1e9);
	if (o->migrate)
		mig_deadline = now_ns() + (uint64_t)(o->migrate_after * 1e9);
	for (;;) {
		uint64_t next = deadline && mig_deadline ? MIN(deadline, mig_deadline) :
				deadline ? deadline : mig_deadline;
		enum vm_status s = vm_wait(vm, next ? next : now_ns() + 200000000ull);

		if (mig_ctl_completed(mig)) {
			pr_info("the guest now runs at the destination; exiting");
			/* let a follower ('umig migrate' polls every 100 ms) read the final record */
			if (ctl)
				usleep(500000);
			return 0;
		}
		if (mig_ctl_lost(mig, why, sizeof(why))) {
			pr_err("the guest was lost: %s", why);
			return EXIT_FAILURE_UMIG;
		}
		if (o->incoming && mig_dest_state(o->incoming) == MIG_FAILED &&
		    s == VM_RUNNING) {
			pr_err("post-copy failed: the guest cannot continue without its pages");
			return EXIT_FAILURE_UMIG;
		}
		if (mig_deadline && now_ns() >= mig_deadline) {
			mig_deadline = 0;
			int r = mig_ctl_start(mig, o->migrate);

			if (r < 0)
				pr_err("cannot start the migration: %s", err_msg(r));
		}
		if (s == VM_EXITED) {
			if (mig_deadline)
				pr_warn("the guest exited (status %d) before --migrate-after: "
					"nothing was migrated", vm->exit_code);
			if (deadline)
				pr_warn("the guest exited (status %d) before --snapshot-after: "
					"no snapshot was written", vm->exit_code);
			return vm->exit_code;
		}
		if (s == VM_FAILED) {
			pr_err("guest fault: %s", vm->fault);
			return EXIT_FAILURE_UMIG;
		}
		if (cli_signal) {
			vm_pause(vm);
			pr_info("stopped by signal %d (%s)", cli_signal, strsignal(cli_signal));
			return 128 + cli_signal;
		}
		if (control_quit_requested(ctl)) {
			vm_pause(vm);
			pr_info("quit requested on the control socket");
			return 0;
		}
		if (deadline && now_ns() >= deadline)
			return cli_snapshot(vm, o->snapshot_path);
	}
}

/*
 * The heartbeat timeline as CSV: host CLOCK_MONOTONIC ns, cumulative beats,
 * the guest's progress count.
 */
static void cli_write_timeline(struct vm *vm, const char *path)
{
	size_t max = 65536, n;
	struct hb_sample *s = calloc(max, sizeof(*s));
	FILE *f;

	if (!s)
		return;
	n = heartbeat_samples(&vm->bus, 0, s, max);
	f = fopen(path, "w");
	if (!f) {
		pr_err("cannot write the timeline '%s': %s", path, strerror(errno));
		free(s);
		return;
	}
	fprintf(f, "t_ns,beats,work\n");
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%llu,%llu,%llu\n", (unsigned long long)s[i].t_ns,
			(unsigned long long)s[i].beats, (unsigned long long)s[i].work);
	fclose(f);
	free(s);
}

/* A migration state change, as the control socket's MIGRATION event. */
static void cli_mig_event(void *opaque, const char *side, const char *from, const char *to,
			  const char *why)
{
	json_t *data = json_pack("{s:s, s:s, s:s}", "side", side, "status", to, "from", from);

	if (data && why && *why)
		json_object_set_new(data, "reason", json_string(why));
	control_event(opaque, "MIGRATION", data);
}

int cli_control_open(const char *path, struct vm *vm, struct control **ctl, struct mig_ctl **mig)
{
	int ret = 0;

	*ctl = NULL;
	*mig = NULL;
	if (path) {
		ret = control_start(ctl, path, vm);
		if (ret < 0) {
			pr_err("%s", err_msg(ret));
			return ret;
		}
		mig_set_event_hook(cli_mig_event, *ctl);
	}
	ret = mig_ctl_register(mig, *ctl, vm);
	if (ret < 0) {
		pr_err("%s", err_msg(ret));
		cli_control_close(*ctl, NULL);
		*ctl = NULL;
	}
	return ret;
}

void cli_control_close(struct control *ctl, struct mig_ctl *mig)
{
	mig_set_event_hook(NULL, NULL);
	control_stop(ctl);
	mig_ctl_free(mig);
}

int cli_serve_vm(struct vm *vm, const struct serve_opts *o)
{
	struct sig_ctx sc = { .vm = vm };
	struct control *ctl = o->ctl;
	struct mig_ctl *mig = o->mig;
	pthread_t sig_thread;
	int ret;

	/* block before any thread starts, so they all inherit the mask */
	sigemptyset(&sc.set);
	sigaddset(&sc.set, SIGINT);
	sigaddset(&sc.set, SIGTERM);
	sigaddset(&sc.set, SIGUSR2);  /* used only to end the signal thread */
	pthread_sigmask(SIG_BLOCK, &sc.set, NULL);
	if (pthread_create(&sig_thread, NULL, cli_signal_thread, &sc)) {
		pr_err("cannot start the signal thread");
		cli_control_close(ctl, mig);
		return EXIT_FAILURE_UMIG;
	}
	if (mig) {
		/* opened before the guest arrived (umig incoming): it is here now */
		if (ctl)
			control_set_vm(ctl, vm);
		mig_ctl_set_vm(mig, vm);
	} else if (cli_control_open(o->control_path, vm, &ctl, &mig) < 0) {
		ret = EXIT_FAILURE_UMIG;
		goto out;
	}
	ret = o->incoming ? 0 : vm_start(vm);
	if (ret < 0) {
		pr_err("cannot start the guest: %s", err_msg(ret));
		ret = EXIT_FAILURE_UMIG;
		goto out;
	}
	ret = cli_serve_loop(vm, ctl, mig, o);
out:
	cli_control_close(ctl, mig);
	if (o->timeline_path)
		cli_write_timeline(vm, o->timeline_path);
	pthread_kill(sig_thread, SIGUSR2);
	pthread_join(sig_thread, NULL);
	return ret;
}
