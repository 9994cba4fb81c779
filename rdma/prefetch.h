/*
 * prefetch.h - the bookkeeping of one-sided post-copy's destination side
 * (docs/rdma.md, "Where READ goes"): which page to READ next, and the map
 * of pages that never need to travel.  No verbs: unit-tested everywhere
 * (tests/test-rdma.c).  Wired in by rdma/pull.c.
 *
 * The destination READs a faulted page at once on the fault queue pair;
 * a prefetcher keeps at most `window` READs outstanding on a second queue
 * pair, in the order of a pre-paging policy that sees each fault where it
 * happens.  Every page is READ exactly once: a page is `issued` by
 * whoever claims it first (a fault or the prefetcher), and pages in the
 * skip map (zero at the source, or already present) are never issued.
 *
 * Threads: rdma_prefetch_fault() from the fault thread, _next() and
 * _done() from the prefetcher; the issued bitmap is claimed atomically.
 */
#ifndef UMIG_RDMA_PREFETCH_H
#define UMIG_RDMA_PREFETCH_H

#include <stdatomic.h>
#include <stdint.h>

#include "umig/bitmap.h"
#include "umig/buf.h"
#include "umig/prepage.h"

struct rdma_prefetch {
	uint64_t npages;
	struct bitmap issued;        /* READ posted (or skipped): never again */
	struct prepage *pp;          /* the policy, over `issued` */
	unsigned window;             /* READs the prefetcher may have outstanding */
	_Atomic unsigned outstanding;
	_Atomic uint64_t faults_read, prefetched;
};

/* skip: pages never to READ (NULL: none); window >= 1. */
int rdma_prefetch_create(struct rdma_prefetch **out, const char *policy, uint64_t npages,
			 const struct bitmap *skip, unsigned window);
void rdma_prefetch_destroy(struct rdma_prefetch *p);
/*
 * The guest faulted on pfn: 1 if the caller must READ it now (nobody has),
 * 0 if a READ of it is already on its way (wait for that one).  Moves the
 * policy's pivot either way.
 */
int rdma_prefetch_fault(struct rdma_prefetch *p, uint64_t pfn);
/* The next page to prefetch, or npages if the window is full or none is left. */
uint64_t rdma_prefetch_next(struct rdma_prefetch *p);
/* A prefetch READ of one page completed: the window has room again. */
void rdma_prefetch_done(struct rdma_prefetch *p);
/*
 * Grow the page next() returned into a run for one READ: claim its
 * unissued neighbours, forward first, then backward, up to max pages in
 * all (each counts in the window).  Returns the run's length, with its
 * first page in *first.
 */
uint32_t rdma_prefetch_extend(struct rdma_prefetch *p, uint64_t pfn, uint32_t max, uint64_t *first);
/* Pages [pfn, pfn+n) arrive another way (a zero run): never READ them. */
void rdma_prefetch_skip(struct rdma_prefetch *p, uint64_t pfn, uint64_t n);

/*
 * The zero map on the wire (the source computes it before registering
 * guest RAM, since registration populates every page): runs
 * {u64 first page, u32 count} of pages that are zero, ascending and not
 * touching.  Decode checks every run against guest RAM and the order,
 * and sets the pages in out (which must have npages bits).
 */
void rdma_zeromap_encode(struct wbuf *w, const struct bitmap *populated, uint64_t npages);
int rdma_zeromap_decode(const void *b, size_t len, uint64_t npages, struct bitmap *out);

#endif
