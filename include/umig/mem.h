/*
 * mem.h - guest RAM: one anonymous private host mapping, or a memfd
 * (shmem) mapped twice.
 *
 * Both vCPU backends access guest RAM through this mapping by pointer, so
 * a page that is not present (post-copy) blocks the vCPU thread inside the
 * kernel until userfaultfd resolves it.  Pages are 4 KiB; transparent huge
 * pages are disabled on the mapping so that one fault moves one page and
 * dirty tracking has 4 KiB granularity.
 *
 * memfd backing (--ram-backing memfd) maps one shmem file twice: `host`
 * is the guest's view (vCPUs, dirty tracking and userfaultfd use it) and
 * `place` a second view that only umig writes.  A post-copy destination
 * with --placement continue writes an arriving page into the file
 * (pwrite on `fd`: the page-cache write a store through `place` would
 * do, without that view's page fault per page) and maps it into `host`
 * with UFFDIO_CONTINUE (mig-place.c).  A transport that lands pages
 * itself targets `place`: one-sided RDMA READs land there directly when
 * the destination registered it (`place_pinned`, docs/rdma.md).
 *
 * Facts that differ from anonymous memory, and that every user of guest
 * RAM goes through the helpers below for:
 *  - MADV_DONTNEED on a shared mapping only drops page-table entries and
 *    leaves the data in the page cache: dropping a page is
 *    fallocate(PUNCH_HOLE) (mem_drop);
 *  - pagemap's present bit of one view does not say which pages hold data
 *    (a page written into the file is not mapped in `host`): the file's
 *    SEEK_DATA / SEEK_HOLE does (mem_scan_populated).
 *
 * hugetlb backing (--ram-backing hugetlb) is the memfd backing on
 * hugetlbfs (MFD_HUGETLB, 2 MiB pages): the size must be a multiple of
 * 2 MiB and the huge pages are reserved when RAM is mapped (too few free
 * ones: an error naming vm.nr_hugepages).  hugetlbfs has no write(2) and
 * no SEEK_DATA, so the placement view is written by memcpy
 * (mig-huge.c) and the populated map comes from the guest view's pagemap,
 * which reports each 4 KiB part of a mapped huge page.
 */
#ifndef UMIG_MEM_H
#define UMIG_MEM_H

#include <stdbool.h>
#include <stdint.h>

#include "umig/util.h"

#define MEM_MIN_SIZE (2ull << 20)  /* room for boot page, stack and image */
#define MEM_MAX_SIZE (1ull << 40)

enum mem_backing {
	MEM_ANON = 0,    /* private anonymous memory (the default) */
	MEM_MEMFD = 1,   /* a memfd mapped twice: guest view + placement view */
	MEM_HUGETLB = 2, /* the same on hugetlbfs: 2 MiB huge pages (MFD_HUGETLB) */
	/*
	 * private anonymous memory the kernel may back with 2 MiB transparent
	 * huge pages (MADV_HUGEPAGE): first touch costs a fault per 2 MiB, not
	 * per 4 KiB.  Write-protect tracking reports such a page as one unit,
	 * so a source on it migrates in post-copy or stop-copy only.
	 */
	MEM_THP = 3,
};

/* hugetlb RAM's page: post-copy places, requests and discards in these units */
#define HUGE_PAGE_SHIFT 21
#define HUGE_PAGE_SIZE  (1ull << HUGE_PAGE_SHIFT)
#define HUGE_PAGES      (HUGE_PAGE_SIZE / PAGE_SIZE)   /* 4 KiB pages in one: 512 */

struct guest_mem {
	uint8_t *host;   /* start of the guest's view, NULL when not allocated */
	uint64_t size;   /* bytes, a multiple of PAGE_SIZE */
	uint8_t *place;  /* MEM_MEMFD: the placement view; NULL for MEM_ANON */
	int fd;          /* MEM_MEMFD: the memfd; -1 for MEM_ANON */
	enum mem_backing backing;
	/*
	 * MEM_MEMFD: `place` is (or may be) registered with an RDMA device,
	 * which pins its page-cache folios.  A hole punched under a pin would
	 * detach the pinned folio from the file, and a READ landing in it
	 * would never reach the guest: mem_drop then zeroes the pages in
	 * place and unmaps them from the guest's view instead.
	 */
	bool place_pinned;
};

/* Map size bytes of zeroed guest RAM.  -EINVAL names the constraint. */
int mem_alloc(struct guest_mem *m, uint64_t size);
/* The same with a choice of backing (mem_alloc is MEM_ANON). */
int mem_alloc_backed(struct guest_mem *m, uint64_t size, enum mem_backing b);
void mem_free(struct guest_mem *m);   /* idempotent */

/* Shared (memfd, hugetlb): RAM lives in a file's page cache, not in private memory. */
static inline bool mem_shared(const struct guest_mem *m)
{
	return m->backing == MEM_MEMFD || m->backing == MEM_HUGETLB;
}

/* "anon" / "thp" / "memfd" / "hugetlb" to a backing; -EINVAL naming the choices. */
int mem_backing_parse(const char *name, enum mem_backing *out);
const char *mem_backing_name(enum mem_backing b);

/*
 * Drop [off, off+len) (page aligned) so that it reads as zero and holds
 * no memory: MADV_DONTNEED for anonymous RAM, fallocate(PUNCH_HOLE) for
 * a memfd, memset when either is refused.  A memfd whose placement view
 * is pinned (place_pinned) keeps its pages: they are zeroed through
 * `place` and unmapped from `host` (a later touch there is a minor
 * fault).  0 or -errno.
 */
int mem_drop(struct guest_mem *m, uint64_t off, uint64_t len);

static inline uint64_t mem_pages(const struct guest_mem *m)
{
	return m->size >> PAGE_SHIFT;
}

static inline void *mem_page(const struct guest_mem *m, uint64_t pfn)
{
	return m->host + (pfn << PAGE_SHIFT);
}

/* True if [gpa, gpa + len) lies inside guest RAM (overflow-safe). */
static inline bool mem_range_ok(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	return gpa <= m->size && len <= m->size - gpa;
}

/* True if the 4 KiB page at p holds only zero bytes. */
bool mem_page_is_zero(const void *p);

struct bitmap;
/*
 * Set in `out` (one bit per guest page) every page that is populated:
 * present in RAM or swapped out.  A page that is neither has never been
 * written (or was dropped) and reads as zero, so callers can skip it
 * without touching it: reading an untouched page costs a page fault
 * (~10 us on a VM), which for a mostly empty 1 GiB guest is seconds.
 * Reads /proc/self/pagemap (anonymous RAM) or the memfd's SEEK_DATA /
 * SEEK_HOLE (memfd RAM); returns the number of populated pages or -errno
 * (then callers must treat every page as populated).
 */
long mem_scan_populated(const struct guest_mem *m, struct bitmap *out);

#endif
