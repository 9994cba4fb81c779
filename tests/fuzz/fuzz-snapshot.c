/*
 * fuzz-snapshot.c - libFuzzer harness for the snapshot loader (snapshot.c).
 *
 * The input is a whole snapshot file, read through a memory stream by
 * snapshot_load_file() into a 2 MiB VM: header, sections, RAM runs, the
 * END checksum and the machine state record.  Fuzz builds skip the
 * checksum comparison (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) so that
 * mutated files reach the state decoder; everything else is checked.
 * Seeds: tests/fuzz/corpus/snapshot/, real snapshots of 2 MiB guests.
 */
#include <stdint.h>
#include <stdio.h>

#include "fuzz-vm.h"
#include "umig/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vm *vm = fuzz_vm();
	struct snapshot_info info;
	FILE *f;

	fuzz_trace(data, size);

	if (size == 0)
		return 0;   /* fmemopen() refuses an empty buffer */
	f = fmemopen((void *)data, size, "rb");
	if (!f)
		abort();
	snapshot_load_file(vm, f, &info);
	fclose(f);
	return 0;
}
