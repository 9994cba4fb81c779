/*
 * guest-abi.h - the contract between umig and the programs it runs.
 *
 * Shared by the host (src/) and the freestanding guest runtime
 * (guest-tests/rt/), so both sides always agree on port numbers and on the
 * layout of the boot-parameters page.  Plain C, no host headers: the guest
 * build includes it with -ffreestanding.
 *
 * Guest physical layout (identity-mapped by page tables umig builds; the
 * vCPU runs in 64-bit long mode with paging on, as hardware requires):
 *
 *   0x00000000 .. 0x00000fff   left unused by convention (ordinary RAM)
 *   0x00001000 .. 0x00001fff   GDT (null, 64-bit code, data, TSS) and the TSS
 *   0x00002000 .. 0x00002fff   PML4
 *   0x00003000 .. 0x00004fff   two PDPTs of 1 GiB pages (covering 1 TiB)
 *   0x00005000 .. 0x00006fff   reserved for umig
 *   0x00007000 .. 0x00007fff   struct umig_boot_params
 *   0x00008000 .. 0x0009ffff   stacks, growing down from UMIG_STACK_TOP
 *                              (vCPU n: UMIG_STACK_TOP - n * UMIG_CPU_STACK)
 *   0x00100000 ..              the ELF image (PT_LOAD segments)
 *   free_start .. mem_size     free memory for the guest's working sets
 *
 * At entry RIP = e_entry, RSP = the vCPU's stack top, RDI =
 * UMIG_BOOT_PARAMS_GPA, RSI = the vCPU number (0 = the boot vCPU).
 * docs/guest-abi.md has the full entry state.
 */
#ifndef UMIG_GUEST_ABI_H
#define UMIG_GUEST_ABI_H

#define UMIG_BOOT_PARAMS_GPA  0x7000ull
#define UMIG_STACK_TOP        0xa0000ull
#define UMIG_IMAGE_MIN_GPA    0x100000ull
#define UMIG_BOOT_MAGIC       0x544f4f4247494d55ull /* "UMIGBOOT" */
#define UMIG_BOOT_VERSION     2u
#define UMIG_CMDLINE_MAX      2048u

/* The machine environment umig builds in reserved RAM before entry. */
#define UMIG_GDT_GPA          0x1000ull  /* 8 descriptors (64 bytes) */
#define UMIG_GDT_LIMIT        0x27u      /* null, code, data, TSS (16 bytes) */
#define UMIG_TSS_GPA          0x1800ull  /* 104-byte 64-bit TSS, all zero */
#define UMIG_TSS_LIMIT        0x67u
#define UMIG_PML4_GPA         0x2000ull
#define UMIG_PDPT_GPA         0x3000ull  /* PDPT n at UMIG_PDPT_GPA + n * 4096 */
#define UMIG_PDPT_COUNT       2u         /* 2 x 512 x 1 GiB = 1 TiB */
#define UMIG_SEL_CODE64       0x08u      /* CS: 64-bit code, DPL 0 */
#define UMIG_SEL_DATA         0x10u      /* SS, DS, ES, FS, GS: flat data */
#define UMIG_SEL_TSS          0x18u      /* TR */
#define UMIG_GDT_CODE64       0x00af9b000000ffffull /* P S code RX A, L, G */
#define UMIG_GDT_DATA         0x00cf93000000ffffull /* P S data RW A, D/B, G */

/* Control registers at entry (see docs/guest-abi.md, "Entry state"). */
#define UMIG_ENTRY_CR0        0x80000033ull /* PG NE ET MP PE; EM, TS clear */
#define UMIG_ENTRY_CR4        0x00000620ull /* OSXMMEXCPT OSFXSR PAE */
#define UMIG_ENTRY_EFER       0x00000500ull /* LMA LME */
#define UMIG_ENTRY_FCW        0x037fu       /* x87 after FNINIT */
#define UMIG_ENTRY_MXCSR      0x1f80u       /* every SSE exception masked */

#define UMIG_MAX_CPUS         8u
#define UMIG_CPU_STACK        0x10000ull    /* 64 KiB per vCPU when there are several */

struct umig_boot_params {
	unsigned long long magic;      /* UMIG_BOOT_MAGIC */
	unsigned int version;          /* UMIG_BOOT_VERSION */
	unsigned int cmdline_len;      /* bytes in cmdline, without the NUL */
	unsigned long long mem_size;   /* guest RAM in bytes */
	unsigned long long free_start; /* first free byte after the image, 4 KiB aligned */
	unsigned long long free_end;   /* one past the last free byte (= mem_size) */
	char cmdline[UMIG_CMDLINE_MAX]; /* NUL-terminated "k=v k=v" */
	/* version 2 */
	unsigned int ncpus;            /* vCPUs started at the entry point (1..UMIG_MAX_CPUS) */
	unsigned int cpu_model;        /* UMIG_CPU_MODEL_ID: the CPUID model the guest sees */
};

/* The CPU model (CPUID leaves) umig gives every guest; docs/guest-abi.md. */
#define UMIG_CPU_MODEL_ID     1u
#define UMIG_CPUID_VENDOR     "UmigVirtCPU!"  /* leaf 0: EBX EDX ECX */

/*
 * Port I/O devices.  All ports are 32-bit wide unless noted; the guest uses
 * `outl`/`inl` (`outb` for the serial port).
 */
#define UMIG_PORT_SERIAL     0x3f8 /* out8: one byte of console output */
#define UMIG_PORT_EXIT       0x501 /* out32: guest exits with this code (0..255) */
#define UMIG_PORT_CLOCK_LO   0x510 /* in32: latch guest-monotonic ns, return low half */
#define UMIG_PORT_CLOCK_HI   0x514 /* in32: high half of the value latched by CLOCK_LO */
#define UMIG_PORT_SLEEP_US   0x518 /* out32: yield the vCPU for up to N microseconds */
#define UMIG_PORT_HEARTBEAT  0x520 /* out32: one heartbeat; value = guest's own beat count */
#define UMIG_PORT_HOST_ID    0x524 /* in32: names the umig process running the guest */

#endif
