/*
 * state.c - the machine state record: the CPU model, every vCPU's
 * registers, every device.
 *
 * The same record is the "STATE" section of a snapshot file and the
 * state message of a migration, so the two can never drift apart.
 * Layout (docs/snapshot.md, "Machine state"):
 *   version 2: u32 tag "UMST", u16 2, u32 CPU model id, u64 CPU model
 *              digest, u16 vCPU count N, N CPU records, device records;
 *   version 1: u32 tag "UMST", u16 1, one CPU record, device records.
 * Version 1 is still written on request (a migration to an older umig)
 * and always read.
 */
#include <errno.h>
#include <stdlib.h>

#include "umig/guest-abi.h"
#include "umig/log.h"
#include "umig/vm.h"

#define MSTATE_TAG     0x54534d55u /* "UMST" */

_Static_assert(VM_MAX_CPUS == UMIG_MAX_CPUS, "one vCPU limit for host and guest");

int vm_save_state_v(struct vm *vm, struct wbuf *w, unsigned version)
{
	struct cpu_state s;
	int ret;

	if (vm_get_status(vm) == VM_RUNNING)
		return err_set(-EBUSY, "machine state can only be saved while paused");
	if (version < VM_STATE_VERSION_MIN || version > VM_STATE_VERSION)
		return err_set(-EINVAL, "machine state version %u: this umig writes %u..%u",
			       version, VM_STATE_VERSION_MIN, VM_STATE_VERSION);
	if (version == 1 && vm->ncpus > 1)
		return err_set(-EOPNOTSUPP,
			       "machine state version 1 holds one vCPU; this VM has %u "
			       "(the peer's umig is too old for a multi-vCPU guest)", vm->ncpus);
	wbuf_put_u32(w, MSTATE_TAG);
	wbuf_put_u16(w, version);
	if (version >= 2) {
		wbuf_put_u32(w, UMIG_CPU_MODEL_ID);
		wbuf_put_u64(w, cpuid_model_digest());
		wbuf_put_u16(w, vm->ncpus);
	}
	for (unsigned i = 0; i < vm->ncpus; i++) {
		ret = vcpu_get_state(vm->cpus[i].vcpu, &s);
		if (ret < 0)
			return ret;
		cpu_state_encode(&s, w);
	}
	devices_save(&vm->bus, w);
	return w->err;
}

int vm_save_state(struct vm *vm, struct wbuf *w)
{
	return vm_save_state_v(vm, w, VM_STATE_VERSION);
}

/* The model check of a version-2 record: the guest must keep its CPU. */
static int check_model(uint32_t id, uint64_t digest)
{
	if (id == UMIG_CPU_MODEL_ID && digest == cpuid_model_digest())
		return 0;
	return err_set(-EPROTO,
		       "CPU model mismatch: the guest ran on CPU model %u (digest 0x%016llx); "
		       "this umig provides model %u (digest 0x%016llx), so the guest cannot "
		       "continue here", id, (unsigned long long)digest, UMIG_CPU_MODEL_ID,
		       (unsigned long long)cpuid_model_digest());
}

int vm_load_state(struct vm *vm, struct rbuf *r)
{
	uint32_t tag = rbuf_get_u32(r);
	uint16_t version = rbuf_get_u16(r);
	struct cpu_state *s;
	unsigned n = 1;
	int ret;

	if (vm_get_status(vm) == VM_RUNNING)
		return err_set(-EBUSY, "machine state can only be loaded while stopped");
	if (r->err || tag != MSTATE_TAG)
		return err_set(-EBADMSG, "machine state: bad tag (not a umig state record)");
	if (version < VM_STATE_VERSION_MIN || version > VM_STATE_VERSION)
		return err_set(-EPROTONOSUPPORT,
			       "machine state version %u not supported (this umig reads %u..%u)",
			       version, VM_STATE_VERSION_MIN, VM_STATE_VERSION);
	if (version >= 2) {
		uint32_t id = rbuf_get_u32(r);
		uint64_t digest = rbuf_get_u64(r);

		n = rbuf_get_u16(r);
		if (r->err)
			return err_set(-EBADMSG, "machine state truncated in its header");
		ret = check_model(id, digest);
		if (ret < 0)
			return ret;
		if (n < 1 || n > VM_MAX_CPUS)
			return err_set(-EBADMSG, "machine state claims %u vCPUs (umig runs 1..%u)",
				       n, VM_MAX_CPUS);
	}
	/* decode and check everything before anything is changed */
	s = calloc(n, sizeof(*s));
	if (!s)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		ret = cpu_state_decode(&s[i], r);
		if (ret < 0)
			goto out;
	}
	ret = devices_load(&vm->bus, r);
	if (ret < 0)
		goto out;
	if (rbuf_left(r)) {
		ret = err_set(-EBADMSG, "machine state: %zu stray bytes after the devices",
			      rbuf_left(r));
		goto out;
	}
	ret = vm_set_ncpus(vm, n);
	for (unsigned i = 0; i < n && !ret; i++)
		ret = vcpu_set_state(vm->cpus[i].vcpu, &s[i]);
out:
	free(s);
	return ret;
}
