/*
 * state.c - the machine state record: CPU registers plus every device.
 *
 * The same record is the "STATE" section of a snapshot file and the
 * state message of a migration, so the two can never drift apart.
 * Layout (docs/protocol.md): u32 tag "UMST", u16 version, CPU state,
 * device records.
 */
#include <errno.h>

#include "umig/log.h"
#include "umig/vm.h"

#define MSTATE_TAG     0x54534d55u /* "UMST" */
#define MSTATE_VERSION 1

int vm_save_state(struct vm *vm, struct wbuf *w)
{
	struct cpu_state s;
	int ret;

	if (vm_get_status(vm) == VM_RUNNING)
		return err_set(-EBUSY, "machine state can only be saved while paused");
	ret = vcpu_get_state(vm->vcpu, &s);
	if (ret < 0)
		return ret;
	wbuf_put_u32(w, MSTATE_TAG);
	wbuf_put_u16(w, MSTATE_VERSION);
	cpu_state_encode(&s, w);
	devices_save(&vm->bus, w);
	return w->err;
}

int vm_load_state(struct vm *vm, struct rbuf *r)
{
	struct cpu_state s;
	uint32_t tag = rbuf_get_u32(r);
	uint16_t version = rbuf_get_u16(r);
	int ret;

	if (vm_get_status(vm) == VM_RUNNING)
		return err_set(-EBUSY, "machine state can only be loaded while stopped");
	if (r->err || tag != MSTATE_TAG)
		return err_set(-EBADMSG, "machine state: bad tag (not a umig state record)");
	if (version != MSTATE_VERSION)
		return err_set(-EPROTONOSUPPORT,
			       "machine state version %u not supported (this umig reads %u)",
			       version, MSTATE_VERSION);
	ret = cpu_state_decode(&s, r);
	if (ret < 0)
		return ret;
	ret = devices_load(&vm->bus, r);
	if (ret < 0)
		return ret;
	if (rbuf_left(r))
		return err_set(-EBADMSG, "machine state: %zu stray bytes after the devices",
			       rbuf_left(r));
	return vcpu_set_state(vm->vcpu, &s);
}
