/*
 * loader.h - static ELF64 guests and their boot-parameters page.
 *
 * The loader trusts nothing in the file: every header field, segment
 * offset and size is checked against the file and against guest RAM
 * before a byte is copied, and a bad file gets an error naming the field.
 */
#ifndef UMIG_LOADER_H
#define UMIG_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "umig/cpustate.h"
#include "umig/mem.h"

struct elf_image {
	uint64_t entry;
	uint64_t image_end;   /* page-aligned end of the highest segment */
	unsigned nsegs;       /* PT_LOAD segments loaded */
};

/* Parse and copy an ELF image held in memory into guest RAM. */
int loader_load_elf(struct guest_mem *m, const void *data, size_t len,
		    struct elf_image *out);
int loader_load_file(struct guest_mem *m, const char *path, struct elf_image *out);
/* -E2BIG if cmdline does not fit the boot page; -EINVAL for a bad ncpus. */
int loader_write_boot_params(struct guest_mem *m, const struct elf_image *img,
			     const char *cmdline, unsigned ncpus);
/*
 * The environment hardware needs for 64-bit code, in reserved low RAM
 * (guest-abi.h): GDT and TSS, and page tables identity-mapping all of RAM
 * with 1 GiB pages.  -E2BIG if RAM is outside 1 MiB .. 1 TiB.
 */
int loader_setup_machine(struct guest_mem *m);
/*
 * The whole entry state of vCPU cpu (docs/guest-abi.md): long mode with
 * paging over loader_setup_machine()'s tables, RIP = entry, RSP = that
 * vCPU's stack top, RDI = boot params, RSI = cpu, x87/SSE at reset values.
 */
void loader_entry_state(const struct elf_image *img, unsigned cpu, struct cpu_state *s);

#endif
