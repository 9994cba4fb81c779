/*
 * vcpu-cpuid.c - the CPU model: the CPUID leaves every umig guest sees.
 *
 * One fixed table, the same on every backend, so that a guest that looked
 * at CPUID before a migration is not surprised after it.  Unicorn answers
 * CPUID from it through an instruction hook; KVM gets it through
 * KVM_SET_CPUID2 after checking the host supports every feature bit in it.
 * docs/guest-abi.md ("CPU model") lists the leaves.
 *
 * The model only advertises what both backends really execute: Unicorn's
 * translator decides by its own CPU definition whether, say, POPCNT
 * decodes, not by what CPUID says, so the feature bits here are the
 * x86-64 baseline (SSE2, SSE3, CX16, LAHF) plus the 1 GiB pages the
 * entry page tables use.
 *
 * Leaves the table lacks behave as KVM makes them for a vendor that is not
 * AMD: a leaf above the highest of its range returns the highest basic
 * leaf, a leaf in range but absent returns zeros; the sub-leaf (ECX) is
 * ignored.  The Unicorn hook applies the same rule, so the two agree on
 * every input, not only on the listed leaves.
 */
#include <string.h>
#include <xxhash.h>

#include "umig/guest-abi.h"
#include "umig/util.h"
#include "umig/vcpu.h"

#define F(bit) (1u << (bit))

/* brand string, 48 bytes over 0x80000002..4, little-endian in EAX..EDX */
#define BRAND "umig virtual x86-64 CPU (model 1)"

static struct cpuid_leaf model[] = {
	/* vendor "UmigVirtCPU!" in EBX, EDX, ECX */
	{ 0x00000000, 7, 0x67696d55, 0x21555043, 0x74726956 },
	{ 0x00000001, 0x00000610, 8 << 8, /* family 6 model 1; CLFLUSH 64 bytes */
	  F(0) | F(13) | F(31),	/* SSE3 CX16 HYPERVISOR */
	  F(0) | F(3) | F(5) | F(6) | F(8) | F(15) | F(19) | F(23) | F(24) | F(25) | F(26) },
		/* FPU PSE MSR PAE CX8 CMOV CLFSH MMX FXSR SSE SSE2 */
	{ 0x00000002, 0, 0, 0, 0 }, { 0x00000003, 0, 0, 0, 0 },
	{ 0x00000004, 0, 0, 0, 0 }, { 0x00000005, 0, 0, 0, 0 },
	{ 0x00000006, 0, 0, 0, 0 }, { 0x00000007, 0, 0, 0, 0 },
	{ 0x80000000, 0x80000008, 0, 0, 0 },
	{ 0x80000001, 0, 0, F(0), F(26) | F(29) },	/* LAHF; 1 GiB pages, LM */
	/* the brand string, filled in by model_init() */
	{ 0x80000002, 0, 0, 0, 0 }, { 0x80000003, 0, 0, 0, 0 }, { 0x80000004, 0, 0, 0, 0 },
	{ 0x80000005, 0, 0, 0, 0 }, { 0x80000006, 0, 0, 0, 0 }, { 0x80000007, 0, 0, 0, 0 },
	{ 0x80000008, 0x00003028, 0, 0, 0 },		/* 40 physical, 48 linear bits */
};

/* Leaf 1 EBX bits 31..24: the initial APIC ID, which is the vCPU number. */
#define LEAF1_APIC_SHIFT 24

static void model_init(void)
{
	static int done;
	char brand[48] = BRAND;

	if (__atomic_load_n(&done, __ATOMIC_ACQUIRE))
		return;
	for (size_t i = 0; i < ARRAY_SIZE(model); i++)
		if (model[i].fn >= 0x80000002 && model[i].fn <= 0x80000004)
			memcpy(&model[i].eax, brand + 16 * (model[i].fn - 0x80000002), 16);
	__atomic_store_n(&done, 1, __ATOMIC_RELEASE);
}

const struct cpuid_leaf *cpuid_model_leaves(size_t *n)
{
	model_init();
	*n = ARRAY_SIZE(model);
	return model;
}

static const struct cpuid_leaf *model_find(uint32_t fn)
{
	for (size_t i = 0; i < ARRAY_SIZE(model); i++)
		if (model[i].fn == fn)
			return &model[i];
	return NULL;
}

void cpuid_model_query(uint32_t fn, uint32_t idx, unsigned cpu, uint32_t out[4])
{
	const struct cpuid_leaf *l, *class;
	uint32_t class_fn;

	(void)idx;	/* no leaf of the model has sub-leaves */
	model_init();
	if (fn >= 0x40000000 && fn <= 0x4fffffff)
		class_fn = fn & 0xffffff00;
	else if (fn >= 0xc0000000)
		class_fn = 0xc0000000;
	else
		class_fn = fn & 0x80000000;
	class = model_find(class_fn);
	if (!class || fn > class->eax)
		fn = model[0].eax;	/* out of range: the highest basic leaf */
	l = model_find(fn);
	memset(out, 0, 4 * sizeof(out[0]));
	if (!l)
		return;
	out[0] = l->eax;
	out[1] = l->ebx;
	out[2] = l->ecx;
	out[3] = l->edx;
	if (fn == 1)
		out[1] |= (cpu & 0xff) << LEAF1_APIC_SHIFT;
}

uint64_t cpuid_model_digest(void)
{
	uint32_t words[ARRAY_SIZE(model) * 5];

	model_init();
	for (size_t i = 0; i < ARRAY_SIZE(model); i++) {
		words[5 * i] = model[i].fn;
		words[5 * i + 1] = model[i].eax;
		words[5 * i + 2] = model[i].ebx;
		words[5 * i + 3] = model[i].ecx;
		words[5 * i + 4] = model[i].edx;
	}
	/* little-endian hosts only (umig is x86-64), so the bytes are stable */
	return XXH64(words, sizeof(words), UMIG_CPU_MODEL_ID);
}
