/*
 * mem.h - guest RAM: one anonymous private host mapping.
 *
 * Both vCPU backends access guest RAM through this mapping by pointer, so
 * a page that is not present (post-copy) blocks the vCPU thread inside the
 * kernel until userfaultfd resolves it.  Pages are 4 KiB; transparent huge
 * pages are disabled on the mapping so that one fault moves one page and
 * dirty tracking has 4 KiB granularity.
 */
#ifndef UMIG_MEM_H
#define UMIG_MEM_H

#include <stdbool.h>
#include <stdint.h>

#include "umig/util.h"

#define MEM_MIN_SIZE (2ull << 20)  /* room for boot page, stack and image */
#define MEM_MAX_SIZE (1ull << 40)

struct guest_mem {
	uint8_t *host;   /* start of the mapping, NULL when not allocated */
	uint64_t size;   /* bytes, a multiple of PAGE_SIZE */
};

/* Map size bytes of zeroed guest RAM.  -EINVAL names the constraint. */
int mem_alloc(struct guest_mem *m, uint64_t size);
void mem_free(struct guest_mem *m);

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
 * Reads /proc/self/pagemap; returns the number of populated pages or
 * -errno (then callers must treat every page as populated).
 */
long mem_scan_populated(const struct guest_mem *m, struct bitmap *out);

#endif
