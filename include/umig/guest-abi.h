/*
 * guest-abi.h - the contract between umig and the programs it runs.
 *
 * Shared by the host (src/) and the freestanding guest runtime
 * (guest-tests/rt/), so both sides always agree on port numbers and on the
 * layout of the boot-parameters page.  Plain C, no host headers: the guest
 * build includes it with -ffreestanding.
 *
 * Guest physical layout (identity-mapped; the vCPU runs in 64-bit mode
 * without paging):
 *
 *   0x00000000 .. 0x00000fff   left unused by convention (ordinary RAM: there
 *                              is no paging to make a NULL access fault)
 *   0x00007000 .. 0x00007fff   struct umig_boot_params
 *   0x00008000 .. 0x0009ffff   stack, grows down from UMIG_STACK_TOP
 *   0x00100000 ..              the ELF image (PT_LOAD segments)
 *   free_start .. mem_size     free memory for the guest's working sets
 *
 * At entry RIP = e_entry, RSP = UMIG_STACK_TOP, RDI = UMIG_BOOT_PARAMS_GPA.
 */
#ifndef UMIG_GUEST_ABI_H
#define UMIG_GUEST_ABI_H

#define UMIG_BOOT_PARAMS_GPA  0x7000ull
#define UMIG_STACK_TOP        0xa0000ull
#define UMIG_IMAGE_MIN_GPA    0x100000ull
#define UMIG_BOOT_MAGIC       0x544f4f4247494d55ull /* "UMIGBOOT" */
#define UMIG_BOOT_VERSION     1u
#define UMIG_CMDLINE_MAX      2048u

struct umig_boot_params {
	unsigned long long magic;      /* UMIG_BOOT_MAGIC */
	unsigned int version;          /* UMIG_BOOT_VERSION */
	unsigned int cmdline_len;      /* bytes in cmdline, without the NUL */
	unsigned long long mem_size;   /* guest RAM in bytes */
	unsigned long long free_start; /* first free byte after the image, 4 KiB aligned */
	unsigned long long free_end;   /* one past the last free byte (= mem_size) */
	char cmdline[UMIG_CMDLINE_MAX]; /* NUL-terminated "k=v k=v" */
};

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

#endif
