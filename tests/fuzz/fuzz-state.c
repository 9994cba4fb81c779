/*
 * fuzz-state.c - libFuzzer harness for the machine state record (state.c):
 * tag and version, cpu_state_decode() and devices_load() with every
 * device's own loader, then vcpu_set_state() on the backend.
 *
 * The same record is a snapshot's STATE section and a migration's state
 * message, so this covers both.  Seeds: tests/fuzz/corpus/state/, STATE
 * sections cut from real snapshots.
 */
#include <stdint.h>

#include "fuzz-vm.h"
#include "umig/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm *vm = fuzz_vm();
	struct rbuf r;

	fuzz_trace(data, size);

	rbuf_init(&r, data, size);
	vm_load_state(vm, &r);
	return 0;
}
