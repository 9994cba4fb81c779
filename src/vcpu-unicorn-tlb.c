/*
 * vcpu-unicorn-tlb.c - inline guest stores for Unicorn 2.0.x.
 *
 * Unicorn 2.0.x (QEMU 5 inside) stubs out QEMU's dirty-memory bitmaps:
 * cpu_physical_memory_is_clean() is always true, so every TLB entry for
 * guest RAM carries TLB_NOTDIRTY and EVERY guest store leaves the
 * translated code for the softmmu slow path, where notdirty_write() builds
 * a page collection (malloc, a GLib tree) and looks for translated code to
 * invalidate, and never clears the flag (upstream unicorn #1970, fixed
 * after 2.0.1 by marking pages without code dirty).  That costs a store
 * ~400 ns here and held the `dirty` guest at a third of QEMU TCG's rate.
 *
 * The library calls three of its own exported functions through the PLT,
 * so umig's definitions below take their place (ELF symbol interposition)
 * and reach the library's own through dlsym(RTLD_NEXT):
 *
 *   tlb_set_page_with_attrs  after the library fills a TLB entry, clear its
 *                            TLB_NOTDIRTY (tlb_set_dirty) unless the guest
 *                            page holds translated code: stores go inline;
 *   tlb_protect_code         the first block translated from a page: mark
 *                            the page as code and put TLB_NOTDIRTY back on
 *                            every entry mapping it (tlb_reset_dirty), so
 *                            a guest store there still goes through
 *                            notdirty_write() and invalidates the code
 *                            (self-modifying code keeps working);
 *   tlb_unprotect_code       the page's last block is gone: unmark it.
 *
 * That is what QEMU proper does with its DIRTY_MEMORY_CODE bitmap.  The
 * state (a bit per guest page) belongs to the uc engine running on this
 * thread, named by uctlb_enter(); with none named, a fill stays on the
 * slow path, and code protected with none named turns the fast path off
 * for good (it would otherwise go unrecorded).  Guest RAM is the engine's
 * first RAM block, mapped at guest-physical 0, so its ram_addr_t is its
 * guest-physical address.
 *
 * Enabled only on Unicorn 2.0.x (uc_version) and unless the environment
 * sets UMIG_UNICORN_INLINE_STORES=0; otherwise the functions only forward.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unicorn/unicorn.h>

#include "umig/log.h"
#include "vcpu-unicorn-tlb.h"

#define UCTLB_PAGE_SHIFT 12

/* QEMU's MemTxAttrs: a 32-bit bitfield struct, passed in one register. */
struct uctlb_attrs {
	uint32_t bits;
};

typedef void set_page_fn(void *cpu, uint64_t vaddr, uint64_t paddr,
			 struct uctlb_attrs attrs, int prot, int mmu_idx, uint64_t size);
typedef void code_fn(void *uc, uint64_t ram_addr);
typedef void set_dirty_fn(void *cpu, uint64_t vaddr);
typedef void reset_dirty_fn(void *cpu, uint64_t host_start, uint64_t length);

static struct {
	set_page_fn *set_page;
	code_fn *protect, *unprotect;
	set_dirty_fn *set_dirty;
	reset_dirty_fn *reset_dirty;
	bool usable;		/* version and symbols fit */
} lib;
static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static atomic_bool lib_broken;	/* code protected outside uctlb_enter() */
static __thread struct uctlb *cur;

static void lib_resolve(void)
{
	unsigned major = 0, minor = 0;
	const char *env = getenv("UMIG_UNICORN_INLINE_STORES");

	uc_version(&major, &minor);
	lib.set_page = (set_page_fn *)dlsym(RTLD_NEXT, "tlb_set_page_with_attrs_x86_64");
	lib.protect = (code_fn *)dlsym(RTLD_NEXT, "tlb_protect_code_x86_64");
	lib.unprotect = (code_fn *)dlsym(RTLD_NEXT, "tlb_unprotect_code_x86_64");
	lib.set_dirty = (set_dirty_fn *)dlsym(RTLD_NEXT, "tlb_set_dirty_x86_64");
	lib.reset_dirty = (reset_dirty_fn *)dlsym(RTLD_NEXT, "tlb_reset_dirty_x86_64");
	lib.usable = major == 2 && minor == 0 && lib.set_page && lib.protect &&
		     lib.unprotect && lib.set_dirty && lib.reset_dirty &&
		     !(env && !strcmp(env, "0"));
	pr_debug("unicorn %u.%u: inline guest stores %s", major, minor,
		 lib.usable ? "on" : "off");
}

int uctlb_init(struct uctlb *t, void *host, uint64_t ram_size)
{
	uint64_t pages = ram_size >> UCTLB_PAGE_SHIFT;

	pthread_once(&lib_once, lib_resolve);
	memset(t, 0, sizeof(*t));
	t->host = host;
	t->ram_size = ram_size;
	if (!lib.usable)
		return 0;
	t->code = calloc((pages + 63) / 64, sizeof(uint64_t));
	return t->code ? 0 : -ENOMEM;
}

void uctlb_fini(struct uctlb *t)
{
	free(t->code);
	t->code = NULL;
}

bool uctlb_inline_stores(const struct uctlb *t)
{
	return t->code && !atomic_load(&lib_broken);
}

struct uctlb *uctlb_enter(struct uctlb *t)
{
	struct uctlb *prev = cur;

	cur = t;
	return prev;
}

void uctlb_leave(struct uctlb *prev)
{
	cur = prev;
}

static bool uctlb_is_code(const struct uctlb *t, uint64_t page)
{
	return t->code[page / 64] >> (page % 64) & 1;
}

/* The interposed functions: names and types are Unicorn 2.0.x's. */
void tlb_set_page_with_attrs_x86_64(void *cpu, uint64_t vaddr, uint64_t paddr,
				    struct uctlb_attrs attrs, int prot, int mmu_idx,
				    uint64_t size);
void tlb_protect_code_x86_64(void *uc, uint64_t ram_addr);
void tlb_unprotect_code_x86_64(void *uc, uint64_t ram_addr);

void tlb_set_page_with_attrs_x86_64(void *cpu, uint64_t vaddr, uint64_t paddr,
				    struct uctlb_attrs attrs, int prot, int mmu_idx,
				    uint64_t size)
{
	struct uctlb *t = cur;

	pthread_once(&lib_once, lib_resolve);
	lib.set_page(cpu, vaddr, paddr, attrs, prot, mmu_idx, size);
	if (!t || !t->code)
		return;
	t->cpu = cpu;
	if (paddr < t->ram_size && uctlb_inline_stores(t) &&
	    !uctlb_is_code(t, paddr >> UCTLB_PAGE_SHIFT))
		lib.set_dirty(cpu, vaddr);	/* clears TLB_NOTDIRTY only */
}

void tlb_protect_code_x86_64(void *uc, uint64_t ram_addr)
{
	struct uctlb *t = cur;
	uint64_t page = ram_addr >> UCTLB_PAGE_SHIFT;

	pthread_once(&lib_once, lib_resolve);
	lib.protect(uc, ram_addr);
	if (!lib.usable)
		return;
	if (!t) {	/* not expected: blocks are translated inside uc_emu_start */
		if (!atomic_exchange(&lib_broken, true))
			pr_warn("unicorn: code translated outside a vCPU run; "
				"guest stores take the slow path from now on");
		return;
	}
	if (!t->code || ram_addr >= t->ram_size)
		return;
	t->code[page / 64] |= 1ull << (page % 64);
	if (t->cpu)	/* entries filled before the page held code: slow again */
		lib.reset_dirty(t->cpu, (uint64_t)(uintptr_t)t->host +
				(ram_addr & ~((1ull << UCTLB_PAGE_SHIFT) - 1)),
				1ull << UCTLB_PAGE_SHIFT);
}

void tlb_unprotect_code_x86_64(void *uc, uint64_t ram_addr)
{
	struct uctlb *t = cur;
	uint64_t page = ram_addr >> UCTLB_PAGE_SHIFT;

	pthread_once(&lib_once, lib_resolve);
	lib.unprotect(uc, ram_addr);
	/* without a current engine the page stays marked: safe, only slower */
	if (t && t->code && ram_addr < t->ram_size)
		t->code[page / 64] &= ~(1ull << (page % 64));
}
