/*
 * vm.h - one virtual machine: guest RAM, its vCPUs, the device bus, and one
 * thread per vCPU.
 *
 * Life cycle:  vm_create -> vm_boot (or vm_load_state) -> vm_start ->
 *              vm_pause / vm_resume ... -> vm_destroy.
 * vm_pause() is synchronous: when it returns every vCPU is outside guest
 * code, the guest clock is frozen and the console flushed, so RAM, CPU and
 * device state can be read consistently.  Locking: vm->lock protects the
 * fields marked (L); each vCPU thread owns its vCPU while it runs.
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
	const char *backend;     /* vCPU backend: NULL = default, "auto", or a name */
	unsigned ncpus;          /* vCPUs, 1..UMIG_MAX_CPUS; 0 = 1 */
	enum mem_backing backing;  /* guest RAM: MEM_ANON (default), MEM_THP, MEM_MEMFD, MEM_HUGETLB */
};

#define VM_MAX_CPUS 8        /* = UMIG_MAX_CPUS in guest-abi.h */

struct vm;

struct vm_cpu {
	struct vm *vm;
	struct vcpu *vcpu;
	pthread_t thread;
	bool in_guest;           /* (L) this vCPU's thread is inside vcpu_run() */
};

struct vm {
	struct guest_mem mem;
	struct pio_bus bus;
	struct vcpu *vcpu;       /* the boot vCPU, = cpus[0].vcpu */
	unsigned ncpus;          /* vCPUs in cpus[]; changes only before vm_start */
	struct vm_cpu cpus[VM_MAX_CPUS];

	const char *backend;     /* as configured (for vCPUs added later) */
	bool thread_started;     /* the vCPU threads exist */
	pthread_mutex_t lock;
	pthread_cond_t cond;     /* CLOCK_MONOTONIC; signalled on every change */
	enum vm_status status;   /* (L) */
	bool want_run;           /* (L) the run loops should execute the guest */
	unsigned in_guest;       /* (L) vCPU threads inside vcpu_run() */
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
/* Read the boot vCPU's state if it is outside guest code; -EBUSY if not. */
int vm_peek_cpu(struct vm *vm, struct cpu_state *s);
const char *vm_status_name(enum vm_status s);
/*
 * Wait until the guest exits or fails, vm_notify() is called, or deadline
 * (CLOCK_MONOTONIC ns, 0 = none) passes.  Returns the status.
 */
enum vm_status vm_wait(struct vm *vm, uint64_t deadline_ns);
void vm_notify(struct vm *vm);

/*
 * Machine state (CPU model, every vCPU, devices), docs/snapshot.md.  The
 * VM must not be running.
 *
 * Versions: 2 carries the CPU model and N vCPUs; 1 (umig before the
 * multi-vCPU record) carries one vCPU and no model.  vm_save_state()
 * writes VM_STATE_VERSION; vm_save_state_v() writes the version asked
 * for, so a migration to an older umig can send what it reads (the
 * engine picks it from the handshake): -EINVAL for a version outside
 * VM_STATE_VERSION_MIN..VM_STATE_VERSION, -EOPNOTSUPP for version 1 of a
 * VM with more than one vCPU.  vm_load_state() reads both; a record with
 * more vCPUs than the VM has adds vCPUs (only before vm_start).
 */
#define VM_STATE_VERSION     2
#define VM_STATE_VERSION_MIN 1
int vm_save_state(struct vm *vm, struct wbuf *w);
int vm_save_state_v(struct vm *vm, struct wbuf *w, unsigned version);
int vm_load_state(struct vm *vm, struct rbuf *r);

/* Forget translated code for guest RAM rewritten by the host, on every vCPU. */
int vm_flush_code(struct vm *vm, uint64_t gpa, uint64_t len);
/* Give the VM n vCPUs (before vm_start only); -EBUSY once started. */
int vm_set_ncpus(struct vm *vm, unsigned n);

/* Called by devices on the vCPU thread. */
void vm_guest_exit(struct vm *vm, int code);
void vm_vcpu_sleep(struct vm *vm, uint32_t us);

#endif
