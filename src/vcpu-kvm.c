/*
 * vcpu-kvm.c - the KVM vCPU backend: guest code runs on the host CPU.
 *
 * One KVM VM per guest RAM mapping, shared by that guest's vCPUs (struct
 * kvm_ctx, found by the guest_mem it serves and reference-counted), with
 * one memory slot over the very mapping Unicorn would use
 * (vm->mem.host): a missing page under post-copy blocks KVM's fault in the
 * kernel until userfaultfd fills it, as it blocks Unicorn's load.  Each
 * vCPU is a KVM vCPU fd driven by its own thread; its run loop is one
 * switch on exit_reason, and port I/O goes to the same device bus.
 *
 * CPUID is umig's fixed model (vcpu-cpuid.c), refused when the host's
 * KVM_GET_SUPPORTED_CPUID lacks a feature bit of it, so a guest sees the
 * same CPU here as under Unicorn.
 *
 * Kicking from another thread: set the stop flag and run->immediate_exit,
 * then signal the vCPU thread.  Inside KVM_RUN the signal ends the run
 * with EINTR; just before it, immediate_exit makes KVM_RUN return at once;
 * after an I/O exit the loop sees the flag.  Returning only through a
 * KVM_RUN with immediate_exit also completes a pending IN, so the
 * registers read afterwards are consistent (Documentation/virt/kvm/api.rst,
 * "immediate_exit").
 *
 * KVM's dirty log, for pre-copy's kvm-log tracker (dirty.c), is at the
 * end: the slot's KVM_MEM_LOG_DIRTY_PAGES flag and KVM_GET_DIRTY_LOG.
 *
 * The state record holds selectors, not descriptors: set_state gives
 * umig's GDT descriptors (guest-abi.h) to the selectors that name them and
 * refuses any other; get_state refuses a segment whose hidden part is not
 * umig's, rather than save something a restore could not reproduce.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "umig/devices.h"
#include "umig/guest-abi.h"
#include "umig/log.h"
#include "umig/vcpu-kvm.h"

#define KVM_KICK_SIGNAL SIGUSR1
#define KVM_TSS_ADDR    0xfffbd000u	/* three pages far above RAM; VMX needs them */

struct kvm_ctx {
	struct kvm_ctx *next;
	const struct guest_mem *mem;
	int refs;
	int kvm_fd, vm_fd;
	int run_size;
	bool xsave;			/* KVM_CAP_XSAVE: x87/SSE state through KVM_GET_XSAVE */
	struct kvm_cpuid2 *cpuid;	/* the model as this host gives it; APIC ID per vCPU */
};

struct kvm_vcpu {
	struct kvm_ctx *ctx;
	int fd;
	struct kvm_run *run;
	atomic_bool stop;
	atomic_bool thread_known;
	pthread_t thread;
};

static pthread_mutex_t kvm_ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kvm_ctx *kvm_ctxs;

/* Capabilities the backend cannot work without, named when missing. */
static const struct {
	int cap;
	const char *name;
} kvm_req_ext[] = {
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
	{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
	{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR" },
};

static int kvm_ioctl_retry(int fd, unsigned long req, void *arg)
{
	int r;

	do
		r = ioctl(fd, req, arg);
	while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : r;
}

int vcpu_kvm_open(int *fd_out)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC), api;

	if (fd < 0) {
		int e = errno;

		if (e == ENOENT || e == ENXIO || e == ENODEV)
			return err_set(-e, "KVM unavailable: /dev/kvm: %s (this host has no KVM: "
				       "load kvm_intel or kvm_amd, which need VT-x/AMD-V or nested "
				       "virtualisation; or use --vcpu unicorn)", strerror(e));
		if (e == EACCES || e == EPERM)
			return err_set(-e, "KVM unavailable: /dev/kvm: %s (give this user read-write "
				       "access to /dev/kvm, usually group kvm; or use --vcpu unicorn)",
				       strerror(e));
		return err_set(-e, "KVM unavailable: /dev/kvm: %s", strerror(e));
	}
	api = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION) {
		close(fd);
		return err_set(-EPROTO, "KVM unavailable: /dev/kvm speaks API %d, umig needs %d",
			       api, KVM_API_VERSION);
	}
	for (size_t i = 0; i < ARRAY_SIZE(kvm_req_ext); i++)
		if (ioctl(fd, KVM_CHECK_EXTENSION, kvm_req_ext[i].cap) <= 0) {
			close(fd);
			return err_set(-EOPNOTSUPP, "KVM unavailable: this kernel's KVM lacks %s",
				       kvm_req_ext[i].name);
		}
	*fd_out = fd;
	return 0;
}

/* --- CPUID: the model, checked against what this host can give ----------- */

struct kvm_feature_reg {
	uint32_t fn;
	int reg;	/* 2 = ECX, 3 = EDX */
	const char *name;
};

/* The leaves whose bits are features the host must have. */
static const struct kvm_feature_reg kvm_feature_regs[] = {
	{ 0x00000001, 2, "CPUID.1:ECX" },
	{ 0x00000001, 3, "CPUID.1:EDX" },
	{ 0x80000001, 2, "CPUID.80000001h:ECX" },
	{ 0x80000001, 3, "CPUID.80000001h:EDX" },
};

/* KVM sets these for any guest whether or not the host CPU has them. */
#define KVM_ALWAYS_1_ECX (1u << 31)	/* hypervisor */

static uint32_t cpuid_reg(const struct kvm_cpuid_entry2 *e, int reg)
{
	return reg == 0 ? e->eax : reg == 1 ? e->ebx : reg == 2 ? e->ecx : e->edx;
}

static const struct kvm_cpuid_entry2 *find_entry(const struct kvm_cpuid2 *c, uint32_t fn)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && !c->entries[i].index)
			return &c->entries[i];
	return NULL;
}

static int kvm_get_supported(int kvm_fd, struct kvm_cpuid2 **out)
{
	for (uint32_t n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
		int r;

		if (!c)
			return -ENOMEM;
		c->nent = n;
		r = kvm_ioctl_retry(kvm_fd, KVM_GET_SUPPORTED_CPUID, c);
		if (r >= 0) {
			*out = c;
			return 0;
		}
		free(c);
		if (r != -E2BIG)
			return err_set(r, "KVM_GET_SUPPORTED_CPUID: %s", strerror(-r));
	}
	return err_set(-E2BIG, "KVM_GET_SUPPORTED_CPUID: too many entries");
}

int vcpu_kvm_build_cpuid(const struct kvm_cpuid2 *supported, struct kvm_cpuid2 **out)
{
	size_t n;
	const struct cpuid_leaf *m = cpuid_model_leaves(&n);
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < ARRAY_SIZE(kvm_feature_regs); i++) {
		const struct kvm_feature_reg *f = &kvm_feature_regs[i];
		const struct kvm_cpuid_entry2 *host = find_entry(supported, f->fn);
		uint32_t want[4], have, missing;

		cpuid_model_query(f->fn, 0, 0, want);
		have = host ? cpuid_reg(host, f->reg) : 0;
		if (f->fn == 1 && f->reg == 2)
			have |= KVM_ALWAYS_1_ECX;
		missing = want[f->reg] & ~have;
		if (missing) {
			free(c);
			return err_set(-EOPNOTSUPP,
				       "this host's KVM cannot give the guest umig's CPU model %u: "
				       "%s bit %d is not supported (KVM_GET_SUPPORTED_CPUID)",
				       UMIG_CPU_MODEL_ID, f->name, __builtin_ctz(missing));
		}
	}
	c->nent = n;
	for (size_t i = 0; i < n; i++) {
		c->entries[i].function = m[i].fn;
		c->entries[i].eax = m[i].eax;
		c->entries[i].ebx = m[i].ebx;
		c->entries[i].ecx = m[i].ecx;
		c->entries[i].edx = m[i].edx;
	}
	*out = c;
	return 0;
}

/* --- the shared VM --------------------------------------------------------- */

static void kvm_ctx_close(struct kvm_ctx *k)
{
	if (k->vm_fd >= 0)
		close(k->vm_fd);
	if (k->kvm_fd >= 0)
		close(k->kvm_fd);
	free(k->cpuid);
	free(k);
}

static int kvm_ctx_open(const struct guest_mem *mem, struct kvm_ctx **out)
{
	struct kvm_ctx *k = calloc(1, sizeof(*k));
	struct kvm_userspace_memory_region slot = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = mem->size,
		.userspace_addr = (uintptr_t)mem->host,
	};
	struct kvm_cpuid2 *supported = NULL;
	int r;

	if (!k)
		return -ENOMEM;
	k->mem = mem;
	k->vm_fd = -1;
	r = vcpu_kvm_open(&k->kvm_fd);
	if (r < 0) {
		k->kvm_fd = -1;
		goto fail;
	}
	k->xsave = ioctl(k->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE) > 0;
	k->run_size = ioctl(k->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (k->run_size < (int)sizeof(struct kvm_run)) {
		r = err_set(-EIO, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
		goto fail;
	}
	r = kvm_get_supported(k->kvm_fd, &supported);
	if (!r)
		r = vcpu_kvm_build_cpuid(supported, &k->cpuid);
	free(supported);
	if (r < 0)
		goto fail;
	r = kvm_ioctl_retry(k->kvm_fd, KVM_CREATE_VM, 0);
	if (r < 0) {
		r = err_set(r, "KVM_CREATE_VM: %s", strerror(-r));
		goto fail;
	}
	k->vm_fd = r;
	r = kvm_ioctl_retry(k->vm_fd, KVM_SET_TSS_ADDR, (void *)(uintptr_t)KVM_TSS_ADDR);
	if (r < 0) {
		r = err_set(r, "KVM_SET_TSS_ADDR: %s", strerror(-r));
		goto fail;
	}
	r = kvm_ioctl_retry(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot);
	if (r < 0) {
		r = err_set(r, "KVM_SET_USER_MEMORY_REGION (%llu MiB of guest RAM): %s",
			    (unsigned long long)(mem->size >> 20), strerror(-r));
		goto fail;
	}
	*out = k;
	pr_debug("kvm: VM created, one slot of %llu MiB at host %p",
		 (unsigned long long)(mem->size >> 20), (void *)mem->host);
	return 0;
fail:
	kvm_ctx_close(k);
	return r;
}

static int kvm_ctx_get(const struct guest_mem *mem, struct kvm_ctx **out)
{
	struct kvm_ctx *k;
	int r = 0;

	pthread_mutex_lock(&kvm_ctx_lock);
	for (k = kvm_ctxs; k && k->mem != mem; k = k->next)
		;
	if (!k) {
		r = kvm_ctx_open(mem, &k);
		if (!r) {
			k->next = kvm_ctxs;
			kvm_ctxs = k;
		}
	}
	if (!r) {
		k->refs++;
		*out = k;
	}
	pthread_mutex_unlock(&kvm_ctx_lock);
	return r;
}

static void kvm_ctx_put(struct kvm_ctx *k)
{
	struct kvm_ctx **p;

	pthread_mutex_lock(&kvm_ctx_lock);
	if (--k->refs == 0) {
		for (p = &kvm_ctxs; *p != k; p = &(*p)->next)
			;
		*p = k->next;
		kvm_ctx_close(k);
	}
	pthread_mutex_unlock(&kvm_ctx_lock);
}

/* --- create, run, kick ----------------------------------------------------- */

static void kvm_on_kick(int sig)
{
	(void)sig;	/* only there to end KVM_RUN with EINTR */
}

static int kvm_kick_handler_ret;

static void kvm_kick_handler_install(void)
{
	struct sigaction sa = { .sa_handler = kvm_on_kick };

	sigemptyset(&sa.sa_mask);	/* no SA_RESTART: KVM_RUN must end */
	kvm_kick_handler_ret = sigaction(KVM_KICK_SIGNAL, &sa, NULL) ? -errno : 0;
}

static int kvm_install_kick_handler(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, kvm_kick_handler_install);
	return kvm_kick_handler_ret;
}

static struct kvm_vcpu *kv(struct vcpu *v)
{
	return v->priv;
}

static int kvm_vcpu_create(struct vcpu *v)
{
	struct kvm_vcpu *k = calloc(1, sizeof(*k));
	struct kvm_cpuid2 *cpuid;
	size_t size;
	int r;

	if (!k)
		return -ENOMEM;
	k->fd = -1;
	r = kvm_install_kick_handler();
	if (r < 0) {
		free(k);
		return err_set(r, "KVM: cannot install the kick signal handler: %s", strerror(-r));
	}
	r = kvm_ctx_get(v->mem, &k->ctx);
	if (r < 0) {
		free(k);
		return r;
	}
	r = kvm_ioctl_retry(k->ctx->vm_fd, KVM_CREATE_VCPU, (void *)(uintptr_t)v->index);
	if (r < 0) {
		r = err_set(r, "KVM_CREATE_VCPU %u: %s", v->index, strerror(-r));
		goto fail;
	}
	k->fd = r;
	k->run = mmap(NULL, k->ctx->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, k->fd, 0);
	if (k->run == MAP_FAILED) {
		k->run = NULL;
		r = err_set(-errno, "KVM: cannot map the vCPU's run page: %s", strerror(errno));
		goto fail;
	}
	/* the model, with this vCPU's APIC ID; before any SET_SREGS (EFER.LME needs CPUID.LM) */
	size = sizeof(*cpuid) + k->ctx->cpuid->nent * sizeof(cpuid->entries[0]);
	cpuid = malloc(size);
	if (!cpuid) {
		r = -ENOMEM;
		goto fail;
	}
	memcpy(cpuid, k->ctx->cpuid, size);
	for (uint32_t i = 0; i < cpuid->nent; i++)
		if (cpuid->entries[i].function == 1)
			cpuid->entries[i].ebx |= (v->index & 0xff) << 24;
	r = kvm_ioctl_retry(k->fd, KVM_SET_CPUID2, cpuid);
	free(cpuid);
	if (r < 0) {
		r = err_set(r, "KVM_SET_CPUID2: %s", strerror(-r));
		goto fail;
	}
	v->priv = k;
	pr_debug("kvm: vCPU %u created (API %d, %u CPUID leaves of model %u, %s)", v->index,
		 KVM_API_VERSION, k->ctx->cpuid->nent, UMIG_CPU_MODEL_ID,
		 k->ctx->xsave ? "XSAVE" : "FPU");
	return 0;
fail:
	if (k->run)
		munmap(k->run, k->ctx->run_size);
	if (k->fd >= 0)
		close(k->fd);
	kvm_ctx_put(k->ctx);
	free(k);
	return r;
}

static void kvm_vcpu_destroy(struct vcpu *v)
{
	struct kvm_vcpu *k = kv(v);

	if (!k)
		return;
	munmap(k->run, k->ctx->run_size);
	close(k->fd);
	kvm_ctx_put(k->ctx);
	free(k);
	v->priv = NULL;
}

static void kvm_vcpu_kick(struct vcpu *v)
{
	struct kvm_vcpu *k = kv(v);

	atomic_store(&k->stop, true);
	__atomic_store_n(&k->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (atomic_load(&k->thread_known) && !pthread_equal(k->thread, pthread_self()))
		pthread_kill(k->thread, KVM_KICK_SIGNAL);
}

static int kvm_fault(struct vcpu *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int kvm_fault(struct vcpu *v, const char *fmt, ...)
{
	struct kvm_regs regs;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(v->fault, sizeof(v->fault), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(v->fault) && !ioctl(kv(v)->fd, KVM_GET_REGS, &regs))
		snprintf(v->fault + n, sizeof(v->fault) - n, " at rip 0x%llx", regs.rip);
	return VCPU_EXIT_FAULT;
}

static void kvm_handle_io(struct vcpu *v, struct kvm_run *run)
{
	uint8_t *data = (uint8_t *)run + run->io.data_offset;

	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
		uint32_t val = 0;

		if (run->io.direction == KVM_EXIT_IO_OUT) {
			memcpy(&val, data, run->io.size);
			pio_out(v->bus, run->io.port, run->io.size, val);
		} else {
			val = pio_in(v->bus, run->io.port, run->io.size);
			memcpy(data, &val, run->io.size);
		}
	}
}

static int kvm_vcpu_run(struct vcpu *v)
{
	struct kvm_vcpu *k = kv(v);
	struct kvm_run *run = k->run;

	if (!atomic_load(&k->thread_known)) {
		k->thread = pthread_self();
		atomic_store(&k->thread_known, true);
	}
	for (;;) {
		int r;

		if (atomic_load(&k->stop))
			__atomic_store_n(&run->immediate_exit, 1, __ATOMIC_SEQ_CST);
		r = ioctl(k->fd, KVM_RUN, 0);
		if (r < 0) {
			if (errno != EINTR && errno != EAGAIN)
				return kvm_fault(v, "KVM_RUN failed: %s", strerror(errno));
			/* a kick: pending I/O is complete, the registers are consistent */
			__atomic_store_n(&run->immediate_exit, 0, __ATOMIC_SEQ_CST);
			atomic_store(&k->stop, false);
			return VCPU_EXIT_KICK;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			kvm_handle_io(v, run);
			break;	/* re-enter: completes an IN, or sees a kick */
		case KVM_EXIT_INTR:
			break;
		case KVM_EXIT_HLT:
			return kvm_fault(v, "the guest halted with interrupts off (hlt)");
		case KVM_EXIT_SHUTDOWN:
			return kvm_fault(v, "triple fault: the guest took an exception it "
					 "cannot handle (there is no IDT)");
		case KVM_EXIT_MMIO:
			return kvm_fault(v, "guest %s of %u bytes at 0x%llx, outside guest RAM",
					 run->mmio.is_write ? "write" : "read", run->mmio.len,
					 (unsigned long long)run->mmio.phys_addr);
		case KVM_EXIT_FAIL_ENTRY:
			return kvm_fault(v, "the CPU refused to enter the guest "
					 "(hardware entry failure reason 0x%llx)",
					 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		case KVM_EXIT_INTERNAL_ERROR:
			return kvm_fault(v, "KVM internal error, suberror %u", run->internal.suberror);
		default:
			return kvm_fault(v, "unexpected KVM exit reason %u", run->exit_reason);
		}
	}
}

static int kvm_vcpu_flush_code(struct vcpu *v, uint64_t gpa, uint64_t len)
{
	(void)v, (void)gpa, (void)len;
	return 0;	/* the CPU sees guest RAM itself; nothing is cached on the side */
}

static int vcpu_kvm_get_state(struct vcpu *v, struct cpu_state *s);
static int vcpu_kvm_set_state(struct vcpu *v, const struct cpu_state *s);

const struct vcpu_ops vcpu_kvm_ops = {
	.name = "kvm",
	.create = kvm_vcpu_create,
	.run = kvm_vcpu_run,
	.kick = kvm_vcpu_kick,
	.get_state = vcpu_kvm_get_state,
	.set_state = vcpu_kvm_set_state,
	.flush_code = kvm_vcpu_flush_code,
	.destroy = kvm_vcpu_destroy,
};

/*
 * x87 and SSE state.  KVM_GET_XSAVE where the kernel has it: the kernel
 * converts its own (possibly compacted, possibly init-optimised) buffer to
 * the standard layout, substituting the init values of components not in
 * use, whereas KVM_GET_FPU copies the legacy area of the buffer as it is.
 */
static int kvm_get_fpu(struct kvm_vcpu *k, struct kvm_fpu *fpu)
{
	struct kvm_xsave x;

	if (!k->ctx->xsave)
		return ioctl(k->fd, KVM_GET_FPU, fpu) ? -errno : 0;
	if (ioctl(k->fd, KVM_GET_XSAVE, &x))
		return -errno;
	kvm_xsave_to_fpu(&x, fpu);
	return 0;
}

static int kvm_set_fpu(struct kvm_vcpu *k, const struct kvm_fpu *fpu)
{
	struct kvm_xsave x;

	if (!k->ctx->xsave)
		return ioctl(k->fd, KVM_SET_FPU, fpu) ? -errno : 0;
	kvm_fpu_to_xsave(fpu, &x);
	return ioctl(k->fd, KVM_SET_XSAVE, &x) ? -errno : 0;
}

/* The register mapping lives in vcpu-kvm-regs.c (pure, unit-tested anywhere). */
static int vcpu_kvm_get_state(struct vcpu *v, struct cpu_state *s)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_fpu fpu;
	int fd = kv(v)->fd, r;

	if (ioctl(fd, KVM_GET_REGS, &regs) || ioctl(fd, KVM_GET_SREGS, &sregs))
		return err_set(-errno, "KVM: reading CPU state failed: %s", strerror(errno));
	r = kvm_get_fpu(kv(v), &fpu);
	if (r < 0)
		return err_set(r, "KVM: reading x87/SSE state failed: %s", strerror(-r));
	return kvm_regs_to_state(&regs, &sregs, &fpu, s);
}

static int vcpu_kvm_set_state(struct vcpu *v, const struct cpu_state *s)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_fpu fpu;
	int fd = kv(v)->fd, r;

	if (ioctl(fd, KVM_GET_SREGS, &sregs))
		return err_set(-errno, "KVM_GET_SREGS: %s", strerror(errno));
	r = kvm_state_to_regs(s, &regs, &sregs, &fpu);
	if (r < 0)
		return r;
	/* sregs first: FPU and register state are checked against the mode */
	if (ioctl(fd, KVM_SET_SREGS, &sregs))
		return err_set(-errno, "KVM_SET_SREGS: %s (CR0 0x%llx CR4 0x%llx EFER 0x%llx)",
			       strerror(errno), (unsigned long long)s->cr0,
			       (unsigned long long)s->cr4, (unsigned long long)s->efer);
	if (ioctl(fd, KVM_SET_REGS, &regs))
		return err_set(-errno, "KVM_SET_REGS: %s", strerror(errno));
	r = kvm_set_fpu(kv(v), &fpu);
	if (r < 0)
		return err_set(r, "KVM: writing x87/SSE state failed: %s", strerror(-r));
	return 0;
}

/*
 * --- KVM's dirty log (dirty.c's kvm-log tracker) -----------------------------
 *
 * KVM_MEM_LOG_DIRTY_PAGES on the one slot: KVM write-protects its own
 * second-level page tables (or, with PML on Intel, logs the CPU's dirty
 * bits) and sets a bit per 4 KiB guest page written by a vCPU, whatever
 * the host page size.  Without KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 enabled,
 * KVM_GET_DIRTY_LOG returns the bitmap and clears it and re-protects
 * those pages under the MMU lock before it returns, so a store racing
 * with the call is in this bitmap or the next.  Changing only a slot's
 * flags is allowed while the vCPUs run.  Writes by the host through the
 * mapping are not logged: on the source no umig device writes guest RAM.
 */
static int kvm_slot_flags(struct kvm_ctx *k, uint32_t flags)
{
	struct kvm_userspace_memory_region slot = {
		.slot = 0, .flags = flags, .guest_phys_addr = 0, .memory_size = k->mem->size,
		.userspace_addr = (uintptr_t)k->mem->host,
	};

	return kvm_ioctl_retry(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot);
}

int vcpu_kvm_dirty_log_start(const struct guest_mem *mem, struct kvm_ctx **out)
{
	struct kvm_ctx *k;
	int r;

	pthread_mutex_lock(&kvm_ctx_lock);
	for (k = kvm_ctxs; k && k->mem != mem; k = k->next)
		;
	if (k)
		k->refs++;	/* the tracker's, until vcpu_kvm_dirty_log_stop() */
	pthread_mutex_unlock(&kvm_ctx_lock);
	if (!k)
		return err_set(-ENODEV, "KVM dirty log: this guest does not run under KVM "
			       "(--vcpu kvm); use --dirty-track wp");
	r = kvm_slot_flags(k, KVM_MEM_LOG_DIRTY_PAGES);
	if (r < 0) {
		kvm_ctx_put(k);
		return err_set(r, "KVM dirty log: KVM_SET_USER_MEMORY_REGION with "
			       "KVM_MEM_LOG_DIRTY_PAGES: %s; use --dirty-track wp", strerror(-r));
	}
	*out = k;
	return 0;
}

int vcpu_kvm_dirty_log_get(struct kvm_ctx *k, uint64_t *words)
{
	struct kvm_dirty_log log = { .slot = 0, .dirty_bitmap = words };
	int r = kvm_ioctl_retry(k->vm_fd, KVM_GET_DIRTY_LOG, &log);

	return r < 0 ? err_set(r, "KVM_GET_DIRTY_LOG: %s", strerror(-r)) : 0;
}

void vcpu_kvm_dirty_log_stop(struct kvm_ctx *k)
{
	int r = kvm_slot_flags(k, 0);

	if (r < 0)
		pr_warn("KVM dirty log: turning it off failed (%s); the guest runs on with "
			"logging", strerror(-r));
	kvm_ctx_put(k);
}
