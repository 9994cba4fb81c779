/*
 * vcpu-unicorn.c - the Unicorn (QEMU TCG) x86-64 vCPU backend.
 *
 * Guest RAM is mapped into Unicorn with uc_mem_map_ptr(), so the emulator
 * loads and stores straight through our mapping: a missing page under
 * post-copy blocks this thread in the kernel until userfaultfd fills it,
 * exactly as a KVM vCPU would block.  Port I/O arrives through instruction
 * hooks on IN and OUT and is handed to the device bus.
 *
 * Unicorn caches translated code and does not notice host-side writes to
 * guest RAM made through the pointer; whoever rewrites RAM from the host
 * (snapshot restore, hybrid discard) must call flush_code.
 *
 * Stopping: uc_emu_stop() from another thread is NOT safe in Unicorn
 * 2.0.1.  When the stop request ends a chain of translated blocks, Unicorn
 * skips re-synchronising RIP (it assumes a code hook already did), and
 * x86 TCG does not store RIP between chained blocks, so RIP is left
 * pointing at an earlier block: on resume the guest re-executes
 * instructions (a counter advances twice, a store is lost).  So a kick
 * only raises a flag; a block hook, which runs on the vCPU thread at the
 * start of every block right after Unicorn has set RIP to that block,
 * sees the flag and stops there, before the block executes.  The flag is
 * left set if no block runs, so a kick is never lost.
 * tests/test-vcpu.c pins this (pause/resume storm over memverify).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unicorn/unicorn.h>

#include "umig/devices.h"
#include "umig/guest-abi.h"
#include "umig/log.h"
#include "umig/vcpu.h"
#include "vcpu-unicorn-tlb.h"

/*
 * A page of Unicorn's own memory, far above any guest RAM (which ends by
 * 1 TiB), holding a copy of umig's GDT.  Selector loads read descriptors
 * through GDTR; pointed here while paging is off, they never touch guest
 * RAM, which on a post-copy destination is still missing when the state
 * is set (and the fault thread may not serve it yet).
 */
#define UC_SCRATCH_GDT 0x1000000000000ull

struct uc_vcpu {
	uc_engine *uc;
	uc_hook hook_in, hook_out, hook_block, hook_cpuid;
	atomic_bool stop;   /* set by kick, consumed by the block hook */
	struct uctlb tlb;   /* inline guest stores (vcpu-unicorn-tlb.c) */
};

static struct uc_vcpu *ucv(struct vcpu *v)
{
	return v->priv;
}

static uint32_t uc_on_in(uc_engine *uc, uint32_t port, int size, void *opaque)
{
	struct vcpu *v = opaque;

	return pio_in(v->bus, port, size);
}

static void uc_on_out(uc_engine *uc, uint32_t port, int size, uint32_t value,
		      void *opaque)
{
	struct vcpu *v = opaque;

	pio_out(v->bus, port, size, value);
}

/* CPUID answers from umig's CPU model, not Unicorn's own CPU definition. */
static int uc_on_cpuid(uc_engine *uc, void *opaque)
{
	struct vcpu *v = opaque;
	uint64_t rax = 0, rcx = 0, r[4];
	uint32_t out[4];

	uc_reg_read(uc, UC_X86_REG_RAX, &rax);
	uc_reg_read(uc, UC_X86_REG_RCX, &rcx);
	cpuid_model_query((uint32_t)rax, (uint32_t)rcx, v->index, out);
	for (int i = 0; i < 4; i++)
		r[i] = out[i];	/* CPUID zero-extends into the 64-bit registers */
	uc_reg_write(uc, UC_X86_REG_RAX, &r[0]);
	uc_reg_write(uc, UC_X86_REG_RBX, &r[1]);
	uc_reg_write(uc, UC_X86_REG_RCX, &r[2]);
	uc_reg_write(uc, UC_X86_REG_RDX, &r[3]);
	return 1;	/* the instruction is done: skip Unicorn's own CPUID */
}

static void uc_on_block(uc_engine *uc, uint64_t addr, uint32_t size, void *opaque)
{
	struct uc_vcpu *u = opaque;

	if (atomic_load_explicit(&u->stop, memory_order_relaxed) &&
	    atomic_exchange(&u->stop, false))
		uc_emu_stop(uc);
}

static int uc_to_errno(uc_err e)
{
	switch (e) {
	case UC_ERR_OK: return 0;
	case UC_ERR_NOMEM: return -ENOMEM;
	case UC_ERR_ARG: return -EINVAL;
	default: return -EIO;
	}
}

static int ucv_create(struct vcpu *v)
{
	struct uc_vcpu *u = calloc(1, sizeof(*u));
	uc_err e;

	if (!u || uctlb_init(&u->tlb, v->mem->host, v->mem->size) < 0) {
		free(u);
		return -ENOMEM;
	}
	e = uc_open(UC_ARCH_X86, UC_MODE_64, &u->uc);
	if (e) {
		uctlb_fini(&u->tlb);
		free(u);
		return err_set(-EIO, "unicorn: cannot create an x86-64 CPU: %s", uc_strerror(e));
	}
	e = uc_mem_map_ptr(u->uc, 0, v->mem->size, UC_PROT_ALL, v->mem->host);
	if (!e)
		e = uc_mem_map(u->uc, UC_SCRATCH_GDT, 4096, UC_PROT_READ);
	if (!e) {
		uint64_t gdt[UMIG_GDT_LIMIT / 8 + 1] = { 0 };

		gdt[UMIG_SEL_CODE64 / 8] = UMIG_GDT_CODE64;
		gdt[UMIG_SEL_DATA / 8] = UMIG_GDT_DATA;
		e = uc_mem_write(u->uc, UC_SCRATCH_GDT, gdt, sizeof(gdt));
	}
	if (!e)
		e = uc_hook_add(u->uc, &u->hook_in, UC_HOOK_INSN, uc_on_in, v, 1, 0,
				UC_X86_INS_IN);
	if (!e)
		e = uc_hook_add(u->uc, &u->hook_out, UC_HOOK_INSN, uc_on_out, v, 1, 0,
				UC_X86_INS_OUT);
	if (!e)
		e = uc_hook_add(u->uc, &u->hook_cpuid, UC_HOOK_INSN, uc_on_cpuid, v, 1, 0,
				UC_X86_INS_CPUID);
	if (!e)
		e = uc_hook_add(u->uc, &u->hook_block, UC_HOOK_BLOCK, uc_on_block, u, 1, 0);
	if (e) {
		uc_close(u->uc);
		uctlb_fini(&u->tlb);
		free(u);
		return err_set(uc_to_errno(e), "unicorn: cannot map guest RAM or hooks: %s",
			       uc_strerror(e));
	}
	v->priv = u;
	return 0;
}

static void ucv_destroy(struct vcpu *v)
{
	struct uc_vcpu *u = ucv(v);

	if (!u)
		return;
	uc_close(u->uc);
	uctlb_fini(&u->tlb);
	free(u);
	v->priv = NULL;
}

static int ucv_run(struct vcpu *v)
{
	struct uc_vcpu *u = ucv(v);
	struct uctlb *prev;
	uint64_t rip = 0;
	uc_err e;

	uc_reg_read(u->uc, UC_X86_REG_RIP, &rip);
	prev = uctlb_enter(&u->tlb);
	/* until = 0: guest code never runs at address 0 (the page is unused) */
	e = uc_emu_start(u->uc, rip, 0, 0, 0);
	uctlb_leave(prev);
	if (e == UC_ERR_OK)
		return VCPU_EXIT_KICK;
	uc_reg_read(u->uc, UC_X86_REG_RIP, &rip);
	snprintf(v->fault, sizeof(v->fault), "%s at rip 0x%llx", uc_strerror(e),
		 (unsigned long long)rip);
	return VCPU_EXIT_FAULT;
}

static void ucv_kick(struct vcpu *v)
{
	/* see the top of this file: never uc_emu_stop() from here */
	atomic_store(&ucv(v)->stop, true);
}

/* Registers transferred one to one, in struct cpu_state order. */
static const int uc_gpr_ids[GPR_COUNT] = {
	UC_X86_REG_RAX, UC_X86_REG_RBX, UC_X86_REG_RCX, UC_X86_REG_RDX,
	UC_X86_REG_RSI, UC_X86_REG_RDI, UC_X86_REG_RBP, UC_X86_REG_RSP,
	UC_X86_REG_R8, UC_X86_REG_R9, UC_X86_REG_R10, UC_X86_REG_R11,
	UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15,
};
static const int uc_seg_ids[SEG_COUNT] = {
	UC_X86_REG_ES, UC_X86_REG_CS, UC_X86_REG_SS,
	UC_X86_REG_DS, UC_X86_REG_FS, UC_X86_REG_GS,
};

#define EFER_MSR 0xc0000080u

static int ucv_get_state(struct vcpu *v, struct cpu_state *s)
{
	uc_engine *uc = ucv(v)->uc;
	uc_x86_mmr mmr;
	uc_x86_msr msr = { .rid = EFER_MSR };
	uint64_t seg;
	uint64_t x[2];
	int e = 0;

	memset(s, 0, sizeof(*s));
	for (int i = 0; i < GPR_COUNT; i++)
		e |= uc_reg_read(uc, uc_gpr_ids[i], &s->gpr[i]);
	e |= uc_reg_read(uc, UC_X86_REG_RIP, &s->rip);
	e |= uc_reg_read(uc, UC_X86_REG_RFLAGS, &s->rflags);
	for (int i = 0; i < SEG_COUNT; i++) {
		seg = 0;
		e |= uc_reg_read(uc, uc_seg_ids[i], &seg);
		s->seg[i] = seg;
	}
	e |= uc_reg_read(uc, UC_X86_REG_FS_BASE, &s->fs_base);
	e |= uc_reg_read(uc, UC_X86_REG_GS_BASE, &s->gs_base);
	e |= uc_reg_read(uc, UC_X86_REG_GDTR, &mmr);
	s->gdtr.base = mmr.base;
	s->gdtr.limit = mmr.limit;
	e |= uc_reg_read(uc, UC_X86_REG_IDTR, &mmr);
	s->idtr.base = mmr.base;
	s->idtr.limit = mmr.limit;
	e |= uc_reg_read(uc, UC_X86_REG_CR0, &s->cr0);
	e |= uc_reg_read(uc, UC_X86_REG_CR2, &s->cr2);
	e |= uc_reg_read(uc, UC_X86_REG_CR3, &s->cr3);
	e |= uc_reg_read(uc, UC_X86_REG_CR4, &s->cr4);
	e |= uc_reg_read(uc, UC_X86_REG_MSR, &msr);
	s->efer = msr.value;
	e |= uc_reg_read(uc, UC_X86_REG_FPCW, &s->fcw);
	e |= uc_reg_read(uc, UC_X86_REG_FPSW, &s->fsw);
	e |= uc_reg_read(uc, UC_X86_REG_FPTAG, &s->ftw);
	e |= uc_reg_read(uc, UC_X86_REG_FOP, &s->fop);
	e |= uc_reg_read(uc, UC_X86_REG_FIP, &s->fip);
	e |= uc_reg_read(uc, UC_X86_REG_FDP, &s->fdp);
	for (int i = 0; i < 8; i++)
		e |= uc_reg_read(uc, UC_X86_REG_ST0 + i, s->st[i]);
	e |= uc_reg_read(uc, UC_X86_REG_MXCSR, &s->mxcsr);
	for (int i = 0; i < 16; i++) {
		e |= uc_reg_read(uc, UC_X86_REG_XMM0 + i, x);
		memcpy(s->xmm[i], x, 16);
	}
	return e ? err_set(-EIO, "unicorn: reading CPU state failed") : 0;
}

/* Write a control register or MSR only when it changes: in long mode a
 * write re-derives the CPU mode, which need not happen on a restore. */
static uc_err uc_write_if_changed(uc_engine *uc, int id, uint64_t want)
{
	uint64_t cur = 0;

	uc_reg_read(uc, id, &cur);
	return cur == want ? UC_ERR_OK : uc_reg_write(uc, id, &want);
}

/* The descriptor of sel lies inside the engine's GDT limit and guest RAM. */
static bool ucv_selector_in_ram(struct vcpu *v, uc_engine *uc, uint16_t sel)
{
	uc_x86_mmr gdtr = { 0 };
	uint64_t index = sel & ~7u;

	if (!(sel & ~3u))
		return true;   /* null: no descriptor is read */
	uc_reg_read(uc, UC_X86_REG_GDTR, &gdtr);
	return !(sel & 4) && index + 7 <= gdtr.limit && gdtr.base + index >= gdtr.base &&
	       mem_range_ok(v->mem, gdtr.base + index, 8);
}

/*
 * Selector loads read the descriptor table, as on a real CPU; the record
 * carries selectors only, so their hidden parts are those of umig's GDT
 * (docs/guest-abi.md).  A fresh engine (paging still off, Unicorn's
 * initial long mode) loads them from the scratch copy of that GDT, never
 * from guest RAM; an engine with paging on loads them from the guest's own
 * GDT, which must then be in RAM.  Only selectors that differ are loaded,
 * so a state from a umig that ran guests without a GDT (selectors 0)
 * loads too.
 */
static int ucv_load_selectors(struct vcpu *v, uc_engine *uc, const struct cpu_state *s)
{
	uc_x86_mmr mmr = { .base = UC_SCRATCH_GDT, .limit = UMIG_GDT_LIMIT };
	uint64_t cr0 = 0, seg;
	bool scratch;
	int e = 0;

	uc_reg_read(uc, UC_X86_REG_CR0, &cr0);
	scratch = !(cr0 & 0x80000000u);
	if (scratch)
		e |= uc_reg_write(uc, UC_X86_REG_GDTR, &mmr);
	for (int i = 0; i < SEG_COUNT && !e; i++) {
		seg = 0;
		uc_reg_read(uc, uc_seg_ids[i], &seg);
		if (seg == s->seg[i])
			continue;
		seg = s->seg[i];
		/*
		 * A descriptor read that faults outside uc_emu_start() makes
		 * Unicorn longjmp onto a stale stack and the process dies, so a
		 * state record (a snapshot file, a migration peer) must not name
		 * one outside the GDT or guest RAM (found by fuzz-state).
		 */
		if (!scratch && !ucv_selector_in_ram(v, uc, s->seg[i]))
			return err_set(-EINVAL, "CPU state: segment selector 0x%x names a descriptor "
				       "outside the GDT or guest RAM", s->seg[i]);
		if (uc_reg_write(uc, uc_seg_ids[i], &seg))
			return err_set(-EINVAL, "unicorn: segment selector 0x%x does not name a "
				       "descriptor of umig's GDT", s->seg[i]);
	}
	return e ? err_set(-EIO, "unicorn: writing segment state failed") : 0;
}

static int ucv_set_state(struct vcpu *v, const struct cpu_state *s)
{
	uc_engine *uc = ucv(v)->uc;
	uc_x86_mmr mmr = { 0 };
	uc_x86_msr msr = { .rid = EFER_MSR };
	uint64_t x[2];
	int e = 0;

	e = ucv_load_selectors(v, uc, s);
	if (e < 0)
		return e;
	/*
	 * The order a CPU enters long mode in: CR4 (PAE), CR3, EFER (LME),
	 * then CR0.PG, at which Unicorn sets EFER.LMA.  CR0 first would be
	 * refused silently (PG with LME but without PAE).
	 */
	e |= uc_write_if_changed(uc, UC_X86_REG_CR4, s->cr4);
	e |= uc_write_if_changed(uc, UC_X86_REG_CR3, s->cr3);
	e |= uc_reg_read(uc, UC_X86_REG_MSR, &msr);
	if (msr.value != s->efer) {
		msr.value = s->efer;
		e |= uc_reg_write(uc, UC_X86_REG_MSR, &msr);
	}
	e |= uc_write_if_changed(uc, UC_X86_REG_CR0, s->cr0);
	e |= uc_reg_write(uc, UC_X86_REG_CR2, &s->cr2);
	mmr.base = s->gdtr.base;
	mmr.limit = s->gdtr.limit;
	e |= uc_reg_write(uc, UC_X86_REG_GDTR, &mmr);
	mmr.base = s->idtr.base;
	mmr.limit = s->idtr.limit;
	e |= uc_reg_write(uc, UC_X86_REG_IDTR, &mmr);
	e |= uc_reg_write(uc, UC_X86_REG_FS_BASE, &s->fs_base);
	e |= uc_reg_write(uc, UC_X86_REG_GS_BASE, &s->gs_base);
	for (int i = 0; i < GPR_COUNT; i++)
		e |= uc_reg_write(uc, uc_gpr_ids[i], &s->gpr[i]);
	e |= uc_reg_write(uc, UC_X86_REG_RFLAGS, &s->rflags);
	e |= uc_reg_write(uc, UC_X86_REG_FPCW, &s->fcw);
	e |= uc_reg_write(uc, UC_X86_REG_FPSW, &s->fsw);
	e |= uc_reg_write(uc, UC_X86_REG_FPTAG, &s->ftw);
	e |= uc_reg_write(uc, UC_X86_REG_FOP, &s->fop);
	e |= uc_reg_write(uc, UC_X86_REG_FIP, &s->fip);
	e |= uc_reg_write(uc, UC_X86_REG_FDP, &s->fdp);
	for (int i = 0; i < 8; i++)
		e |= uc_reg_write(uc, UC_X86_REG_ST0 + i, s->st[i]);
	e |= uc_reg_write(uc, UC_X86_REG_MXCSR, &s->mxcsr);
	for (int i = 0; i < 16; i++) {
		memcpy(x, s->xmm[i], 16);
		e |= uc_reg_write(uc, UC_X86_REG_XMM0 + i, x);
	}
	/* RIP last: some writes above may reset the translation state */
	e |= uc_reg_write(uc, UC_X86_REG_RIP, &s->rip);
	return e ? err_set(-EIO, "unicorn: writing CPU state failed") : 0;
}

static int ucv_flush_code(struct vcpu *v, uint64_t gpa, uint64_t len)
{
	struct uctlb *prev;
	uc_err e;

	/*
	 * Range invalidation even for all of RAM: Unicorn 2.0.1's full flush
	 * (UC_CTL_TB_FLUSH) costs about a second, which would land in the
	 * middle of a migration's downtime; removing the range takes < 1 ms.
	 */
	prev = uctlb_enter(&ucv(v)->tlb);	/* pages left without code: inline stores */
	e = uc_ctl_remove_cache(ucv(v)->uc, gpa, gpa + len);
	uctlb_leave(prev);
	return e ? err_set(-EIO, "unicorn: flushing translated code failed: %s",
			   uc_strerror(e)) : 0;
}

const struct vcpu_ops vcpu_unicorn_ops = {
	.name = "unicorn",
	.create = ucv_create,
	.run = ucv_run,
	.kick = ucv_kick,
	.get_state = ucv_get_state,
	.set_state = ucv_set_state,
	.flush_code = ucv_flush_code,
	.destroy = ucv_destroy,
};
