/*
 * vm.c - the VM object and the vCPU run loop; see vm.h.
 *
 * The vCPU thread loops: wait until the VM should run, run the guest until
 * a kick or a fault, record why it stopped.  Pausing is a handshake: the
 * pauser clears want_run and kicks the vCPU until the thread reports it
 * has left guest code.  The kick is repeated because a kick that lands
 * just before the backend enters guest code is lost (Unicorn clears its
 * stop request on entry); each retry is bounded and the whole pause is
 * bounded, so a wedged backend turns into an error, not a hang.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "umig/loader.h"
#include "umig/log.h"
#include "umig/vm.h"

#define VM_PAUSE_TIMEOUT_NS (10ull * 1000000000ull)
#define VM_KICK_RETRY_NS    (1000000ull)

static void deadline_ts(uint64_t ns, struct timespec *ts)
{
	ts->tv_sec = ns / 1000000000ull;
	ts->tv_nsec = ns % 1000000000ull;
}

static void vm_timedwait(struct vm *vm, uint64_t deadline_ns)
{
	struct timespec ts;

	deadline_ts(deadline_ns, &ts);
	pthread_cond_timedwait(&vm->cond, &vm->lock, &ts);
}

static void *vm_run_loop(void *arg)
{
	struct vm *vm = arg;

	pthread_mutex_lock(&vm->lock);
	while (!vm->quit) {
		int r;

		if (!vm->want_run) {
			pthread_cond_wait(&vm->cond, &vm->lock);
			continue;
		}
		vm->in_guest = true;
		pthread_mutex_unlock(&vm->lock);
		r = vcpu_run(vm->vcpu);
		pthread_mutex_lock(&vm->lock);
		vm->in_guest = false;
		if (r == VCPU_EXIT_FAULT || r < 0) {
			snprintf(vm->fault, sizeof(vm->fault), "%s",
				 r < 0 ? err_msg(r) : vm->vcpu->fault);
			vm->status = VM_FAILED;
			vm->want_run = false;
			pr_debug("vm: vCPU fault: %s", vm->fault);
		} else if (vm->status == VM_EXITED) {
			vm->want_run = false;
		}
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

int vm_create(struct vm **out, const struct vm_config *cfg)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	pthread_condattr_t ca;
	int ret;

	if (!vm)
		return -ENOMEM;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->cond, &ca);
	pthread_condattr_destroy(&ca);
	vm->status = VM_CREATED;

	ret = mem_alloc(&vm->mem, cfg->mem_size);
	if (!ret)
		ret = serial_register(&vm->bus, vm, cfg->console_fd);
	if (!ret)
		ret = clock_register(&vm->bus, vm);
	if (!ret)
		ret = heartbeat_register(&vm->bus, vm);
	if (!ret)
		ret = exit_register(&vm->bus, vm);
	if (!ret)
		ret = vcpu_create(&vm->vcpu, cfg->backend, &vm->mem, &vm->bus);
	if (ret < 0) {
		vm_destroy(vm);
		return ret;
	}
	*out = vm;
	return 0;
}

void vm_destroy(struct vm *vm)
{
	if (!vm)
		return;
	if (vm->thread_started) {
		uint64_t deadline = now_ns() + VM_PAUSE_TIMEOUT_NS;

		pthread_mutex_lock(&vm->lock);
		vm->quit = true;
		vm->want_run = false;
		pthread_cond_broadcast(&vm->cond);
		while (vm->in_guest && now_ns() < deadline) {
			pthread_mutex_unlock(&vm->lock);
			vcpu_kick(vm->vcpu);
			pthread_mutex_lock(&vm->lock);
			vm_timedwait(vm, now_ns() + VM_KICK_RETRY_NS);
		}
		pthread_mutex_unlock(&vm->lock);
		pthread_join(vm->thread, NULL);
	}
	devices_destroy(&vm->bus);
	vcpu_destroy(vm->vcpu);
	mem_free(&vm->mem);
	pthread_cond_destroy(&vm->cond);
	pthread_mutex_destroy(&vm->lock);
	free(vm);
}

int vm_boot(struct vm *vm, const char *elf_path, const char *cmdline)
{
	struct elf_image img;
	struct cpu_state s;
	int ret;

	ret = loader_load_file(&vm->mem, elf_path, &img);
	if (ret < 0)
		return ret;
	ret = loader_write_boot_params(&vm->mem, &img, cmdline);
	if (ret < 0)
		return ret;
	ret = vcpu_get_state(vm->vcpu, &s);
	if (ret < 0)
		return ret;
	loader_entry_state(&img, &s);
	return vcpu_set_state(vm->vcpu, &s);
}

int vm_start(struct vm *vm)
{
	int ret;

	if (vm->thread_started)
		return -EALREADY;
	ret = -pthread_create(&vm->thread, NULL, vm_run_loop, vm);
	if (ret < 0)
		return err_set(ret, "cannot start the vCPU thread: %s", strerror(-ret));
	vm->thread_started = true;
	pthread_mutex_lock(&vm->lock);
	vm->status = VM_PAUSED;
	pthread_mutex_unlock(&vm->lock);
	return vm_resume(vm);
}

int vm_pause(struct vm *vm)
{
	uint64_t deadline = now_ns() + VM_PAUSE_TIMEOUT_NS;

	pthread_mutex_lock(&vm->lock);
	if (vm->status != VM_RUNNING) {
		pthread_mutex_unlock(&vm->lock);
		return 0;
	}
	vm->want_run = false;
	pthread_cond_broadcast(&vm->cond); /* ends a guest sleep at once */
	while (vm->in_guest) {
		if (now_ns() > deadline) {
			pthread_mutex_unlock(&vm->lock);
			return err_set(-ETIMEDOUT, "the vCPU did not stop within 10 s");
		}
		pthread_mutex_unlock(&vm->lock);
		vcpu_kick(vm->vcpu);
		pthread_mutex_lock(&vm->lock);
		if (vm->in_guest)
			vm_timedwait(vm, now_ns() + VM_KICK_RETRY_NS);
	}
	/* the guest may have exited or faulted on its way out */
	if (vm->status == VM_RUNNING)
		vm->status = VM_PAUSED;
	pthread_mutex_unlock(&vm->lock);
	devices_pause(&vm->bus);
	pr_debug("vm: paused");
	return 0;
}

int vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->status != VM_PAUSED) {
		enum vm_status s = vm->status;

		pthread_mutex_unlock(&vm->lock);
		return err_set(-EINVAL, "cannot resume a VM that is %s", vm_status_name(s));
	}
	pthread_mutex_unlock(&vm->lock);
	devices_resume(&vm->bus);
	pthread_mutex_lock(&vm->lock);
	vm->status = VM_RUNNING;
	vm->want_run = true;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	pr_debug("vm: running");
	return 0;
}

enum vm_status vm_get_status(struct vm *vm)
{
	enum vm_status s;

	pthread_mutex_lock(&vm->lock);
	s = vm->status;
	pthread_mutex_unlock(&vm->lock);
	return s;
}

int vm_peek_cpu(struct vm *vm, struct cpu_state *s)
{
	int ret = -EBUSY;

	/* holding the lock keeps the run loop from entering the guest meanwhile */
	pthread_mutex_lock(&vm->lock);
	if (!vm->in_guest && !vm->want_run)
		ret = vcpu_get_state(vm->vcpu, s);
	pthread_mutex_unlock(&vm->lock);
	return ret;
}

const char *vm_status_name(enum vm_status s)
{
	static const char *const names[] = {
		[VM_CREATED] = "created", [VM_RUNNING] = "running",
		[VM_PAUSED] = "paused", [VM_EXITED] = "exited",
		[VM_FAILED] = "failed",
	};

	return (unsigned)s < ARRAY_SIZE(names) ? names[s] : "unknown";
}

enum vm_status vm_wait(struct vm *vm, uint64_t deadline_ns)
{
	enum vm_status s;

	pthread_mutex_lock(&vm->lock);
	while (vm->status != VM_EXITED && vm->status != VM_FAILED && !vm->event) {
		if (deadline_ns && now_ns() >= deadline_ns)
			break;
		if (deadline_ns)
			vm_timedwait(vm, deadline_ns);
		else
			pthread_cond_wait(&vm->cond, &vm->lock);
	}
	vm->event = false;
	s = vm->status;
	pthread_mutex_unlock(&vm->lock);
	return s;
}

void vm_notify(struct vm *vm)
{
	pthread_mutex_lock(&vm->lock);
	vm->event = true;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
}

void vm_guest_exit(struct vm *vm, int code)
{
	pthread_mutex_lock(&vm->lock);
	vm->exit_code = code;
	vm->status = VM_EXITED;
	vm->want_run = false;
	pthread_mutex_unlock(&vm->lock);
	/* we are on the vCPU thread inside the backend: stop after this insn */
	vcpu_kick(vm->vcpu);
	pr_debug("vm: guest exit %d", code);
}

void vm_vcpu_sleep(struct vm *vm, uint32_t us)
{
	uint64_t deadline = now_ns() + (uint64_t)us * 1000;

	pthread_mutex_lock(&vm->lock);
	while (vm->want_run && !vm->quit && now_ns() < deadline)
		vm_timedwait(vm, deadline);
	pthread_mutex_unlock(&vm->lock);
}
