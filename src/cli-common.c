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
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "umig/cli.h"
#include "umig/control.h"
#include "umig/log.h"
#include "umig/snapshot.h"
#include "umig/vm.h"

static volatile int cli_signal;

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

static int cli_serve_loop(struct vm *vm, struct control *ctl, const struct serve_opts *o)
{
	uint64_t deadline = 0;

	if (o->snapshot_path)
		deadline = now_ns() + (uint64_t)(o->snapshot_after * 1e9);
	for (;;) {
		enum vm_status s = vm_wait(vm, deadline);

		if (s == VM_EXITED)
			return vm->exit_code;
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

int cli_serve_vm(struct vm *vm, const struct serve_opts *o)
{
	struct sig_ctx sc = { .vm = vm };
	struct control *ctl = NULL;
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
		return EXIT_FAILURE_UMIG;
	}
	if (o->control_path) {
		ret = control_start(&ctl, o->control_path, vm);
		if (ret < 0) {
			pr_err("%s", err_msg(ret));
			ret = EXIT_FAILURE_UMIG;
			goto out;
		}
	}
	ret = vm_start(vm);
	if (ret < 0) {
		pr_err("cannot start the guest: %s", err_msg(ret));
		ret = EXIT_FAILURE_UMIG;
		goto out;
	}
	ret = cli_serve_loop(vm, ctl, o);
out:
	control_stop(ctl);
	pthread_kill(sig_thread, SIGUSR2);
	pthread_join(sig_thread, NULL);
	return ret;
}
