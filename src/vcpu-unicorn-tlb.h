/*
 * vcpu-unicorn-tlb.h - inline guest stores for Unicorn 2.0.x; see
 * vcpu-unicorn-tlb.c for why and how.
 *
 * One struct uctlb per uc engine.  Every call into the engine that may
 * translate code or fill its TLB (uc_emu_start, uc_ctl_remove_cache) runs
 * between uctlb_enter() and uctlb_leave() on the calling thread.
 */
#ifndef UMIG_VCPU_UNICORN_TLB_H
#define UMIG_VCPU_UNICORN_TLB_H

#include <stdbool.h>
#include <stdint.h>

struct uctlb {
	void *host;		/* guest RAM as the engine maps it (gpa 0) */
	uint64_t ram_size;
	uint64_t *code;		/* a bit per guest page holding translated code */
	void *cpu;		/* the engine's CPUState, seen on its first TLB fill */
};

/* 0 or -ENOMEM; with an unsuitable Unicorn, t only forwards (code NULL). */
int uctlb_init(struct uctlb *t, void *host, uint64_t ram_size);
void uctlb_fini(struct uctlb *t);
/* Stores to guest RAM without translated code take the inline path. */
bool uctlb_inline_stores(const struct uctlb *t);
/* Name t as this thread's engine; returns the one to give uctlb_leave(). */
struct uctlb *uctlb_enter(struct uctlb *t);
void uctlb_leave(struct uctlb *prev);

#endif
