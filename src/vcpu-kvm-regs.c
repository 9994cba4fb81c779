/*
 * vcpu-kvm-regs.c - struct cpu_state <-> KVM's kvm_regs, kvm_sregs and
 * kvm_fpu; see vcpu-kvm.h.
 *
 * Pure functions with no ioctl, so that tests check the mapping on hosts
 * without /dev/kvm.  The record carries selectors only: a selector maps to
 * the descriptor umig's GDT gives it (guest-abi.h), decoded the way the CPU
 * decodes a descriptor on a selector load, and anything else is refused
 * by name instead of being guessed.
 */
#include <errno.h>
#include <string.h>

#include "umig/guest-abi.h"
#include "umig/log.h"
#include "umig/vcpu-kvm.h"

#define CR0_PG   0x80000000ull
#define EFER_LMA 0x400ull

static const char *const seg_names[SEG_COUNT] = { "ES", "CS", "SS", "DS", "FS", "GS" };

/* The hidden part a selector load gives a segment from an 8-byte descriptor. */
static void seg_from_desc(uint64_t d, uint16_t sel, uint64_t base, struct kvm_segment *k)
{
	uint32_t limit = (d & 0xffff) | ((d >> 32) & 0xf0000);

	memset(k, 0, sizeof(*k));
	k->selector = sel;
	k->base = base;
	k->type = (d >> 40) & 0xf;
	k->s = (d >> 44) & 1;
	k->dpl = (d >> 45) & 3;
	k->present = (d >> 47) & 1;
	k->avl = (d >> 52) & 1;
	k->l = (d >> 53) & 1;
	k->db = (d >> 54) & 1;
	k->g = (d >> 55) & 1;
	k->limit = k->g ? limit << 12 | 0xfff : limit;
}

static void seg_null(uint16_t sel, uint64_t base, struct kvm_segment *k)
{
	memset(k, 0, sizeof(*k));
	k->selector = sel;
	k->base = base;
	k->unusable = 1;
}

/* Segment i of s as KVM holds it, or -EINVAL naming what cannot be. */
static int seg_to_kvm(const struct cpu_state *s, int i, struct kvm_segment *k)
{
	uint16_t sel = s->seg[i];
	uint64_t base = i == SEG_FS ? s->fs_base : i == SEG_GS ? s->gs_base : 0;

	if (i == SEG_CS && sel == UMIG_SEL_CODE64)
		seg_from_desc(UMIG_GDT_CODE64, sel, 0, k);
	else if (i != SEG_CS && sel == UMIG_SEL_DATA)
		seg_from_desc(UMIG_GDT_DATA, sel, base, k);
	else if (i != SEG_CS && sel == 0)
		seg_null(sel, base, k);	/* valid in 64-bit mode, SS included at CPL 0 */
	else
		return err_set(-EINVAL, "KVM: %s selector 0x%x is not one of umig's GDT descriptors "
			       "(the state record carries selectors, not descriptors)",
			       seg_names[i], sel);
	return 0;
}

int kvm_state_to_regs(const struct cpu_state *s, struct kvm_regs *regs,
		      struct kvm_sregs *sregs, struct kvm_fpu *fpu)
{
	struct kvm_segment *segs[SEG_COUNT] = {
		&sregs->es, &sregs->cs, &sregs->ss, &sregs->ds, &sregs->fs, &sregs->gs,
	};
	int r;

	if ((s->efer & EFER_LMA) && !(s->cr0 & CR0_PG))
		return err_set(-EINVAL, "KVM: the state has long mode active with paging off "
			       "(CR0 0x%llx, EFER 0x%llx), as umig ran guests before its paging "
			       "entry state; only --vcpu unicorn runs it",
			       (unsigned long long)s->cr0, (unsigned long long)s->efer);
	memset(regs, 0, sizeof(*regs));
	regs->rax = s->gpr[GPR_RAX];
	regs->rbx = s->gpr[GPR_RBX];
	regs->rcx = s->gpr[GPR_RCX];
	regs->rdx = s->gpr[GPR_RDX];
	regs->rsi = s->gpr[GPR_RSI];
	regs->rdi = s->gpr[GPR_RDI];
	regs->rbp = s->gpr[GPR_RBP];
	regs->rsp = s->gpr[GPR_RSP];
	regs->r8 = s->gpr[GPR_R8];
	regs->r9 = s->gpr[GPR_R9];
	regs->r10 = s->gpr[GPR_R10];
	regs->r11 = s->gpr[GPR_R11];
	regs->r12 = s->gpr[GPR_R12];
	regs->r13 = s->gpr[GPR_R13];
	regs->r14 = s->gpr[GPR_R14];
	regs->r15 = s->gpr[GPR_R15];
	regs->rip = s->rip;
	regs->rflags = s->rflags;

	for (int i = 0; i < SEG_COUNT; i++) {
		r = seg_to_kvm(s, i, segs[i]);
		if (r < 0)
			return r;
	}
	/* TR and LDTR are not in the record: umig's TSS, no LDT */
	seg_from_desc((uint64_t)UMIG_TSS_LIMIT | 0x8bull << 40, UMIG_SEL_TSS, UMIG_TSS_GPA,
		      &sregs->tr);
	seg_null(0, 0, &sregs->ldt);
	sregs->ldt.type = 2;	/* an LDT, as VMX wants even of an unusable one */
	sregs->gdt.base = s->gdtr.base;
	sregs->gdt.limit = s->gdtr.limit;
	memset(sregs->gdt.padding, 0, sizeof(sregs->gdt.padding));
	sregs->idt.base = s->idtr.base;
	sregs->idt.limit = s->idtr.limit;
	memset(sregs->idt.padding, 0, sizeof(sregs->idt.padding));
	sregs->cr0 = s->cr0;
	sregs->cr2 = s->cr2;
	sregs->cr3 = s->cr3;
	sregs->cr4 = s->cr4;
	sregs->cr8 = 0;
	sregs->efer = s->efer;
	memset(sregs->interrupt_bitmap, 0, sizeof(sregs->interrupt_bitmap));
	/* apic_base: as KVM_GET_SREGS gave it */

	memset(fpu, 0, sizeof(*fpu));
	for (int i = 0; i < 8; i++)
		memcpy(fpu->fpr[i], s->st[i], 10);
	fpu->fcw = s->fcw;
	fpu->fsw = s->fsw;
	fpu->ftwx = cpu_ftw_abridge(s->ftw);
	fpu->last_opcode = s->fop;
	fpu->last_ip = s->fip;
	fpu->last_dp = s->fdp;
	memcpy(fpu->xmm, s->xmm, sizeof(fpu->xmm));
	fpu->mxcsr = s->mxcsr;
	return 0;
}

/* Whether KVM's segment is what seg_to_kvm() would give for its selector. */
static int seg_check(const struct kvm_segment *k, int i)
{
	struct cpu_state one = { 0 };
	struct kvm_segment want;

	one.seg[i] = k->selector;
	if (seg_to_kvm(&one, i, &want) < 0)
		return -EINVAL;
	if (want.unusable)
		return k->unusable || !k->present ? 0 : -EINVAL;
	if (k->unusable || k->present != want.present || k->type != want.type ||
	    k->s != want.s || k->dpl != want.dpl || k->l != want.l || k->db != want.db)
		return -EINVAL;
	/* bases of ES, CS, SS, DS are ignored in 64-bit mode but must be 0 to be umig's */
	if (i != SEG_FS && i != SEG_GS && k->base)
		return -EINVAL;
	return 0;
}

int kvm_regs_to_state(const struct kvm_regs *regs, const struct kvm_sregs *sregs,
		      const struct kvm_fpu *fpu, struct cpu_state *s)
{
	const struct kvm_segment *segs[SEG_COUNT] = {
		&sregs->es, &sregs->cs, &sregs->ss, &sregs->ds, &sregs->fs, &sregs->gs,
	};

	memset(s, 0, sizeof(*s));
	for (int i = 0; i < SEG_COUNT; i++) {
		if (seg_check(segs[i], i) < 0)
			return err_set(-EINVAL, "KVM: %s (selector 0x%x, type %u, base 0x%llx) is not "
				       "a descriptor of umig's GDT; the state record cannot carry it",
				       seg_names[i], segs[i]->selector, segs[i]->type,
				       (unsigned long long)segs[i]->base);
		s->seg[i] = segs[i]->selector;
	}
	s->gpr[GPR_RAX] = regs->rax;
	s->gpr[GPR_RBX] = regs->rbx;
	s->gpr[GPR_RCX] = regs->rcx;
	s->gpr[GPR_RDX] = regs->rdx;
	s->gpr[GPR_RSI] = regs->rsi;
	s->gpr[GPR_RDI] = regs->rdi;
	s->gpr[GPR_RBP] = regs->rbp;
	s->gpr[GPR_RSP] = regs->rsp;
	s->gpr[GPR_R8] = regs->r8;
	s->gpr[GPR_R9] = regs->r9;
	s->gpr[GPR_R10] = regs->r10;
	s->gpr[GPR_R11] = regs->r11;
	s->gpr[GPR_R12] = regs->r12;
	s->gpr[GPR_R13] = regs->r13;
	s->gpr[GPR_R14] = regs->r14;
	s->gpr[GPR_R15] = regs->r15;
	s->rip = regs->rip;
	s->rflags = regs->rflags;
	s->fs_base = sregs->fs.base;
	s->gs_base = sregs->gs.base;
	s->gdtr.base = sregs->gdt.base;
	s->gdtr.limit = sregs->gdt.limit;
	s->idtr.base = sregs->idt.base;
	s->idtr.limit = sregs->idt.limit;
	s->cr0 = sregs->cr0;
	s->cr2 = sregs->cr2;
	s->cr3 = sregs->cr3;
	s->cr4 = sregs->cr4;
	s->efer = sregs->efer;

	for (int i = 0; i < 8; i++)
		memcpy(s->st[i], fpu->fpr[i], 10);
	s->fcw = fpu->fcw;
	s->fsw = fpu->fsw;
	s->ftw = cpu_ftw_expand(fpu->ftwx, fpu->fsw, s->st);
	s->fop = fpu->last_opcode;
	s->fip = fpu->last_ip;
	s->fdp = fpu->last_dp;
	memcpy(s->xmm, fpu->xmm, sizeof(s->xmm));
	s->mxcsr = fpu->mxcsr;
	return 0;
}

/* The standard XSAVE layout: the FXSAVE64 image, then the header at 512. */
#define XS_FCW    0
#define XS_FSW    2
#define XS_FTW    4
#define XS_FOP    6
#define XS_FIP    8
#define XS_FDP    16
#define XS_MXCSR  24
#define XS_ST     32
#define XS_XMM    160
#define XS_BV     512
#define XFEATURE_FP_SSE 3ull

void kvm_xsave_to_fpu(const struct kvm_xsave *x, struct kvm_fpu *fpu)
{
	const uint8_t *b = (const uint8_t *)x->region;

	memset(fpu, 0, sizeof(*fpu));
	memcpy(&fpu->fcw, b + XS_FCW, 2);
	memcpy(&fpu->fsw, b + XS_FSW, 2);
	fpu->ftwx = b[XS_FTW];
	memcpy(&fpu->last_opcode, b + XS_FOP, 2);
	memcpy(&fpu->last_ip, b + XS_FIP, 8);
	memcpy(&fpu->last_dp, b + XS_FDP, 8);
	memcpy(&fpu->mxcsr, b + XS_MXCSR, 4);
	for (int i = 0; i < 8; i++)
		memcpy(fpu->fpr[i], b + XS_ST + 16 * i, 16);
	memcpy(fpu->xmm, b + XS_XMM, sizeof(fpu->xmm));
}

void kvm_fpu_to_xsave(const struct kvm_fpu *fpu, struct kvm_xsave *x)
{
	uint8_t *b = (uint8_t *)x->region;
	uint64_t bv = XFEATURE_FP_SSE;	/* x87 and SSE are in use: the record holds them */

	memset(x, 0, sizeof(*x));
	memcpy(b + XS_FCW, &fpu->fcw, 2);
	memcpy(b + XS_FSW, &fpu->fsw, 2);
	b[XS_FTW] = fpu->ftwx;
	memcpy(b + XS_FOP, &fpu->last_opcode, 2);
	memcpy(b + XS_FIP, &fpu->last_ip, 8);
	memcpy(b + XS_FDP, &fpu->last_dp, 8);
	memcpy(b + XS_MXCSR, &fpu->mxcsr, 4);
	for (int i = 0; i < 8; i++)
		memcpy(b + XS_ST + 16 * i, fpu->fpr[i], 16);
	memcpy(b + XS_XMM, fpu->xmm, sizeof(fpu->xmm));
	memcpy(b + XS_BV, &bv, 8);
}
