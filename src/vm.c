/*
 * vm.c - the VM object and the vCPU run loop; see vm.h.
 *
 * Each vCPU has a thread that loops: wait until the VM should run, run the
 * guest until a kick or a fault, record why it stopped.  A fault or a
 * guest exit on any vCPU stops them all.  Pausing is a handshake: the
 * pauser clears want_run and kicks every vCPU until all their threads
 * report they have left guest code.  The kick is repeated because a kick that lands
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

/* Kick every vCPU inside guest code.  Caller holds vm->lock (kicks never block). */
static void vm_kick_all(struct vm *vm)
{
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (vm->cpus[i].in_guest)
			vcpu_kick(vm->cpus[i].vcpu);
}

/* One per vCPU: run the guest while want_run, record why it stopped. */
static void *vm_run_loop(void *arg)
{
	struct vm_cpu *c = arg;
	struct vm *vm = c->vm;

	pthread_mutex_lock(&vm->lock);
	while (!vm->quit) {
		int r;

		if (!vm->want_run) {
			pthread_cond_wait(&vm->cond, &vm->lock);
			continue;
		}
		c->in_guest = true;
		vm->in_guest++;
		pthread_mutex_unlock(&vm->lock);
		r = vcpu_run(c->vcpu);
		pthread_mutex_lock(&vm->lock);
		c->in_guest = false;
		vm->in_guest--;
		if (r == VCPU_EXIT_FAULT || r < 0) {
			/* the first fault is the one worth reporting */
			if (vm->status != VM_FAILED) {
				const char *why = r < 0 ? err_msg(r) : c->vcpu->fault;

				if (c->vcpu->index)
					snprintf(vm->fault, sizeof(vm->fault), "vCPU %u: %.200s",
						 c->vcpu->index, why);
				else
					snprintf(vm->fault, sizeof(vm->fault), "%s", why);
				vm->status = VM_FAILED;
			}
			vm->want_run = false;
			vm_kick_all(vm);
			pr_debug("vm: vCPU %u fault: %s", c->vcpu->index, vm->fault);
		} else if (vm->status == VM_EXITED) {
			vm->want_run = false;
			vm_kick_all(vm);
		}
		pthread_cond_broadcast(&vm->cond);
	}
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

int vm_set_ncpus(struct vm *vm, unsigned n)
{
	if (n < 1 || n > VM_MAX_CPUS)
		return err_set(-EINVAL, "%u vCPUs: umig runs 1..%u", n, VM_MAX_CPUS);
	if (vm->thread_started && n != vm->ncpus)
		return err_set(-EBUSY, "the VM runs %u vCPUs; the count cannot change now",
			       vm->ncpus);
	while (vm->ncpus > n) {
		vm->ncpus--;
		vcpu_destroy(vm->cpus[vm->ncpus].vcpu);
		vm->cpus[vm->ncpus].vcpu = NULL;
	}
	while (vm->ncpus < n) {
		struct vm_cpu *c = &vm->cpus[vm->ncpus];
		/* every vCPU runs on the boot vCPU's backend, "auto" resolved once */
		const char *backend = vm->vcpu ? vcpu_backend_name(vm->vcpu) : vm->backend;
		int ret = vcpu_create(&c->vcpu, backend, vm->ncpus, &vm->mem, &vm->bus);

		if (ret < 0)
			return ret;
		c->vm = vm;
		vm->ncpus++;
		vm->vcpu = vm->cpus[0].vcpu;
	}
	return 0;
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
	vm->backend = cfg->backend;

	ret = mem_alloc_backed(&vm->mem, cfg->mem_size, cfg->backing);
	if (!ret)
		ret = serial_register(&vm->bus, vm, cfg->console_fd);
	if (!ret)
		ret = clock_register(&vm->bus, vm);
	if (!ret)
		ret = heartbeat_register(&vm->bus, vm);
	if (!ret)
		ret = exit_register(&vm->bus, vm);
	if (!ret)
		ret = host_register(&vm->bus, vm);
	if (!ret)
		ret = vm_set_ncpus(vm, cfg->ncpus ? cfg->ncpus : 1);
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
			vm_kick_all(vm);
			vm_timedwait(vm, now_ns() + VM_KICK_RETRY_NS);
		}
		pthread_mutex_unlock(&vm->lock);
		for (unsigned i = 0; i < vm->ncpus; i++)
			pthread_join(vm->cpus[i].thread, NULL);
	}
	devices_destroy(&vm->bus);
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_destroy(vm->cpus[i].vcpu);
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
	ret = loader_write_boot_params(&vm->mem, &img, cmdline, vm->ncpus);
	if (ret < 0)
		return ret;
	ret = loader_setup_machine(&vm->mem);
	if (ret < 0)
		return ret;
	for (unsigned i = 0; i < vm->ncpus; i++) {
		loader_entry_state(&img, i, &s);
		ret = vcpu_set_state(vm->cpus[i].vcpu, &s);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int vm_flush_code(struct vm *vm, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < vm->ncpus; i++) {
		int ret = vcpu_flush_code(vm->cpus[i].vcpu, gpa, len);

		if (ret < 0)
			return ret;
	}
	return 0;
}

int vm_start(struct vm *vm)
{
	int ret;

	if (vm->thread_started)
		return -EALREADY;
	for (unsigned i = 0; i < vm->ncpus; i++) {
		ret = -pthread_create(&vm->cpus[i].thread, NULL, vm_run_loop, &vm->cpus[i]);
		if (ret < 0) {
			/* stop the ones already waiting, then fail */
			pthread_mutex_lock(&vm->lock);
			vm->quit = true;
			pthread_cond_broadcast(&vm->cond);
			pthread_mutex_unlock(&vm->lock);
			while (i--)
				pthread_join(vm->cpus[i].thread, NULL);
			return err_set(ret, "cannot start a vCPU thread: %s", strerror(-ret));
		}
	}
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
			unsigned n = vm->in_guest, all = vm->ncpus;

			pthread_mutex_unlock(&vm->lock);
			if (all == 1)
				return err_set(-ETIMEDOUT, "the vCPU did not stop within 10 s");
			return err_set(-ETIMEDOUT, "%u of %u vCPUs did not stop within 10 s",
				       n, all);
		}
		vm_kick_all(vm);
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
	/* we are on a vCPU thread inside the backend: it stops after this
	 * instruction, the others at their next chance */
	vm_kick_all(vm);
	pthread_mutex_unlock(&vm->lock);
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
