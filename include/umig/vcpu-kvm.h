/*
 * vcpu-kvm.h - the KVM backend's pieces that tests reach without /dev/kvm:
 * opening KVM with a clear error, the CPUID model check, and the mapping
 * between struct cpu_state and KVM's register structures.
 */
#ifndef UMIG_VCPU_KVM_H
#define UMIG_VCPU_KVM_H

#include <linux/kvm.h>

#include "umig/cpustate.h"
#include "umig/vcpu.h"

/*
 * Open /dev/kvm and check the API version and the capabilities the
 * backend needs.  On failure the message names what is missing and the
 * fix; -ENOENT (no /dev/kvm), -EACCES, -EPROTO (API), -EOPNOTSUPP (a
 * capability).  Caller closes *fd.
 */
int vcpu_kvm_open(int *fd);

/*
 * umig's CPU model as KVM_SET_CPUID2 entries, or -EOPNOTSUPP naming the
 * first feature bit the host (supported, from KVM_GET_SUPPORTED_CPUID)
 * lacks.  Caller frees *out.
 */
int vcpu_kvm_build_cpuid(const struct kvm_cpuid2 *supported, struct kvm_cpuid2 **out);

/*
 * struct cpu_state -> KVM.  sregs comes in as KVM_GET_SREGS gave it (for
 * the APIC base) and goes out complete; -EINVAL naming the register when
 * the state cannot be represented (a selector that is not one of umig's
 * GDT, long mode without paging).
 */
int kvm_state_to_regs(const struct cpu_state *s, struct kvm_regs *regs,
		      struct kvm_sregs *sregs, struct kvm_fpu *fpu);
/* KVM -> struct cpu_state; -EINVAL when a segment's hidden part is not umig's. */
int kvm_regs_to_state(const struct kvm_regs *regs, const struct kvm_sregs *sregs,
		      const struct kvm_fpu *fpu, struct cpu_state *s);

/* x87/SSE state between kvm_fpu and the standard XSAVE layout (KVM_{GET,SET}_XSAVE). */
void kvm_xsave_to_fpu(const struct kvm_xsave *x, struct kvm_fpu *fpu);
void kvm_fpu_to_xsave(const struct kvm_fpu *fpu, struct kvm_xsave *x);

/*
 * KVM's dirty log over the guest RAM mem that a KVM VM maps (dirty.c's
 * kvm-log tracker): start turns KVM_MEM_LOG_DIRTY_PAGES on (-ENODEV when
 * no KVM VM maps mem: the guest runs under another backend); get fills
 * words (one bit per 4 KiB page, mem->size / 32768 bytes rounded up to 8)
 * with the pages vCPUs wrote since start or the previous get, and clears
 * the log; stop turns logging off and drops the reference start took.
 */
struct kvm_ctx;
int vcpu_kvm_dirty_log_start(const struct guest_mem *mem, struct kvm_ctx **out);
int vcpu_kvm_dirty_log_get(struct kvm_ctx *k, uint64_t *words);
void vcpu_kvm_dirty_log_stop(struct kvm_ctx *k);

#endif
