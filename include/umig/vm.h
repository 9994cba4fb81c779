/*
 * vm.h - one virtual machine: guest RAM, one vCPU, the device bus, and the
 * thread that runs the vCPU.
 *
 * Life cycle:  vm_create -> vm_boot (or vm_load_state) -> vm_start ->
 *              vm_pause / vm_resume ... -> vm_destroy.
 * vm_pause() is synchronous: when it returns the vCPU is outside guest
 * code, the guest clock is frozen and the console flushed, so RAM, CPU and
 * device state can be read consistently.  Locking: vm->lock protects the
 * fields marked (L); the vCPU thread owns the vCPU.
 */
#ifndef UMIG_VM_H
#define UMIG_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "umig/buf.h"
#include "umig/devices.h"
#include "umig/mem.h"
#include "umig/vcpu.h"

enum vm_status {
	VM_CREATED,  /* not yet started */
	VM_RUNNING,
	VM_PAUSED,
	VM_EXITED,   /* the guest wrote the exit port */
	VM_FAILED,   /* the guest faulted; vm->fault says how */
};

struct vm_config {
	uint64_t mem_size;
	int console_fd;          /* guest console output; -1 discards it */
	const char *backend;     /* vCPU backend, NULL = default */
};

struct vm {
	struct guest_mem mem;
	struct pio_bus bus;
	struct vcpu *vcpu;

	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;     /* CLOCK_MONOTONIC; signalled on every change */
	enum vm_status status;   /* (L) */
	bool want_run;           /* (L) the run loop should execute the guest */
	bool in_guest;           /* (L) the vCPU thread is inside vcpu_run() */
	bool quit;               /* (L) the run loop must end */
	bool event;              /* (L) vm_notify() was called */
	int exit_code;           /* (L) valid in VM_EXITED */
	char fault[256];         /* (L) valid in VM_FAILED */
	uint64_t cmd_event;      /* (L) generation counter for vm_notify() */
};

/* Caller owns *out and frees it with vm_destroy(). */
int vm_create(struct vm **out, const struct vm_config *cfg);
void vm_destroy(struct vm *vm);

/* Load a guest ELF, write its boot parameters and set the entry state. */
int vm_boot(struct vm *vm, const char *elf_path, const char *cmdline);
int vm_start(struct vm *vm);
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);

enum vm_status vm_get_status(struct vm *vm);
/* Read the vCPU state if the vCPU is outside guest code; -EBUSY if not. */
int vm_peek_cpu(struct vm *vm, struct cpu_state *s);
const char *vm_status_name(enum vm_status s);
/*
 * Wait until the guest exits or fails, vm_notify() is called, or deadline
 * (CLOCK_MONOTONIC ns, 0 = none) passes.  Returns the status.
 */
enum vm_status vm_wait(struct vm *vm, uint64_t deadline_ns);
void vm_notify(struct vm *vm);

/* Machine state (CPU + devices), docs/protocol.md.  The VM must not be running. */
int vm_save_state(struct vm *vm, struct wbuf *w);
int vm_load_state(struct vm *vm, struct rbuf *r);

/* Called by devices on the vCPU thread. */
void vm_guest_exit(struct vm *vm, int code);
void vm_vcpu_sleep(struct vm *vm, uint32_t us);

#endif
