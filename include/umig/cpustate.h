/*
 * cpustate.h - the x86-64 register set umig saves, sends and restores.
 *
 * An explicit, versioned structure (never a backend's opaque blob), so a
 * snapshot or a migration stream written by one backend or one umig
 * version is read by another.  The wire encoding is documented in
 * docs/protocol.md ("CPU state"): a 4-byte tag "CPU1", a u16 version, a
 * u32 body length, then every field below in order, little-endian.  A
 * reader rejects an unknown version or a body of the wrong length.
 */
#ifndef UMIG_CPUSTATE_H
#define UMIG_CPUSTATE_H

#include <stdint.h>

#include "umig/buf.h"

#define CPU_STATE_TAG     0x31555043u /* "CPU1" */
#define CPU_STATE_VERSION 1

enum cpu_gpr {
	GPR_RAX, GPR_RBX, GPR_RCX, GPR_RDX, GPR_RSI, GPR_RDI, GPR_RBP, GPR_RSP,
	GPR_R8, GPR_R9, GPR_R10, GPR_R11, GPR_R12, GPR_R13, GPR_R14, GPR_R15,
	GPR_COUNT
};

enum cpu_seg { SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS, SEG_COUNT };

struct cpu_dtable {
	uint64_t base;
	uint32_t limit;
};

struct cpu_state {
	uint64_t gpr[GPR_COUNT];
	uint64_t rip;
	uint64_t rflags;
	uint16_t seg[SEG_COUNT];      /* selectors */
	uint64_t fs_base, gs_base;
	struct cpu_dtable gdtr, idtr;
	uint64_t cr0, cr2, cr3, cr4;
	uint64_t efer;
	/* x87 */
	uint16_t fcw, fsw, ftw, fop;
	uint64_t fip, fdp;
	uint8_t st[8][10];            /* 80-bit registers ST0..ST7 */
	/* SSE */
	uint32_t mxcsr;
	uint8_t xmm[16][16];
};

/* Size of the body after the 10-byte header (tag, version, length). */
#define CPU_STATE_BODY_LEN (16 * 8 + 8 + 8 + 6 * 2 + 8 + 8 + 2 * (8 + 4) + \
			    4 * 8 + 8 + 4 * 2 + 8 + 8 + 8 * 10 + 4 + 16 * 16)

/*
 * The x87 tag word.  struct cpu_state holds the full one (two bits per
 * physical register: 0 valid, 1 zero, 2 special, 3 empty), as FSTENV
 * stores it and Unicorn reports it; FXSAVE and KVM hold the abridged one
 * (one bit per physical register, 1 = not empty).  Expanding classifies
 * each non-empty register by its value; physical register p is
 * ST((p - TOP) & 7), TOP from FSW bits 11..13, and st (8 registers) is in
 * ST order.
 */
uint8_t cpu_ftw_abridge(uint16_t ftw);
uint16_t cpu_ftw_expand(uint8_t ftwx, uint16_t fsw, const uint8_t (*st)[10]);

void cpu_state_encode(const struct cpu_state *s, struct wbuf *w);
/* -EBADMSG (truncated, bad tag or length) / -EPROTONOSUPPORT (version). */
int cpu_state_decode(struct cpu_state *s, struct rbuf *r);

#endif
