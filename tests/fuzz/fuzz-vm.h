/*
 * fuzz-vm.h - the one VM the decoder harnesses load into.
 *
 * Creating a VM (RAM mapping, vCPU backend) costs far more than decoding
 * one input, so each harness creates it once, at the smallest RAM size,
 * and every input is loaded into the same created-but-never-started VM,
 * as `umig restore` and a migration destination do.  A loader that must
 * not trust its input gains nothing from a fresh VM per input: state a
 * bad input leaves behind is state the next input must cope with too.
 */
#ifndef UMIG_FUZZ_VM_H
#define UMIG_FUZZ_VM_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "umig/log.h"
#include "umig/vm.h"

static struct vm *fuzz_vm(void)
{
	static struct vm *vm;
	struct vm_config cfg = { .mem_size = MEM_MIN_SIZE, .console_fd = -1 };
	int ret;

	if (vm)
		return vm;
	ret = vm_create(&vm, &cfg);
	if (ret < 0) {
		fprintf(stderr, "fuzz: cannot create the VM: %s\n", err_msg(ret));
		abort();
	}
	return vm;
}

/*
 * With UMIG_FUZZ_TRACE=FILE, each input is written to FILE before it runs.
 * For a crash that also breaks libFuzzer's own handler (a longjmp onto a
 * garbage stack leaves no artifact), FILE then holds the input.
 */
static void fuzz_trace(const uint8_t *data, size_t size)
{
	static const char *path;
	static int checked;
	FILE *f;

	if (!checked++)
		path = getenv("UMIG_FUZZ_TRACE");
	if (!path || !(f = fopen(path, "wb")))
		return;
	fwrite(data, 1, size, f);
	fclose(f);
}

#endif
