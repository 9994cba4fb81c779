/*
 * vcpu.h - one virtual CPU behind an ops table.
 *
 * The backend executes guest code over guest RAM (by pointer) and reports
 * port I/O to the device bus.  vcpu_run() executes until vcpu_kick() is
 * called from any thread, or the guest faults.  Everything else
 * (get/set state, flush_code, destroy) is only legal while the vCPU is
 * not inside vcpu_run(); vm.c's run loop guarantees that.
 *
 * Backends: "unicorn" (the Unicorn x86-64 emulator; runs anywhere) is the
 * default; "kvm" runs the guest on the host CPU where /dev/kvm works;
 * "auto" picks kvm when it can.  Both give the guest the same entry state
 * (loader.h), the same CPU model (below) and the same state record.
 */
#ifndef UMIG_VCPU_H
#define UMIG_VCPU_H

#include "umig/cpustate.h"
#include "umig/mem.h"

struct pio_bus;
struct vcpu;

enum vcpu_exit {
	VCPU_EXIT_KICK,   /* vcpu_kick() was called (or a device asked to stop) */
	VCPU_EXIT_FAULT,  /* the guest did something the CPU cannot continue from */
};

struct vcpu_ops {
	const char *name;
	int (*create)(struct vcpu *v);
	int (*run)(struct vcpu *v);  /* enum vcpu_exit, or -errno */
	void (*kick)(struct vcpu *v); /* thread-safe, async */
	int (*get_state)(struct vcpu *v, struct cpu_state *s);
	int (*set_state)(struct vcpu *v, const struct cpu_state *s);
	/* Forget translated code for guest RAM rewritten by the host. */
	int (*flush_code)(struct vcpu *v, uint64_t gpa, uint64_t len);
	void (*destroy)(struct vcpu *v);
};

struct vcpu {
	const struct vcpu_ops *ops;
	unsigned index;    /* the vCPU number: 0 boots, the APIC ID in CPUID */
	struct guest_mem *mem;
	struct pio_bus *bus;
	void *priv;
	char fault[256];   /* what the guest did, after VCPU_EXIT_FAULT */
};

/* backend NULL = default, "auto" = kvm if usable.  Caller frees with vcpu_destroy(). */
int vcpu_create(struct vcpu **out, const char *backend, unsigned index,
		struct guest_mem *mem, struct pio_bus *bus);
void vcpu_destroy(struct vcpu *v);
int vcpu_run(struct vcpu *v);
void vcpu_kick(struct vcpu *v);
int vcpu_get_state(struct vcpu *v, struct cpu_state *s);
int vcpu_set_state(struct vcpu *v, const struct cpu_state *s);
int vcpu_flush_code(struct vcpu *v, uint64_t gpa, uint64_t len);
const char *vcpu_backend_name(const struct vcpu *v);

extern const struct vcpu_ops vcpu_unicorn_ops;
extern const struct vcpu_ops vcpu_kvm_ops;

/*
 * The CPU model (src/vcpu-cpuid.c, docs/guest-abi.md): the CPUID leaves
 * every guest sees, identical on every backend.  The digest identifies the
 * model in snapshots and migration streams; a state saved under another
 * model is refused.
 */
struct cpuid_leaf {
	uint32_t fn, eax, ebx, ecx, edx;
};

const struct cpuid_leaf *cpuid_model_leaves(size_t *n);
/* What CPUID(fn, idx) returns on vCPU cpu, for any fn. */
void cpuid_model_query(uint32_t fn, uint32_t idx, unsigned cpu, uint32_t out[4]);
uint64_t cpuid_model_digest(void);

#endif
