/*
 * mig-huge.c - post-copy placement into hugetlbfs guest RAM
 * (--ram-backing hugetlb): 2 MiB huge pages assembled in the page cache
 * and mapped whole with UFFDIO_CONTINUE.
 *
 * A huge page can only be placed whole: UFFDIO_COPY on hugetlbfs takes
 * 2 MiB at a time, and there is no UFFDIO_ZEROPAGE.  Pages still travel
 * in 4 KiB runs (the push, and the urgent replies, which answer a request
 * with every page of its 2 MiB unit that the destination has not got:
 * FEAT_HUGE2M), so they are assembled where they will stay: each received
 * 4 KiB page is copied through the placement view into the memfd's huge
 * page (the first store allocates it, zeroed, in the page cache), which
 * the guest's view does not map yet -- a guest touch there is a minor
 * fault, and waits.  When the 512th page of a unit is in, one
 * UFFDIO_CONTINUE maps the whole 2 MiB in the guest's view and wakes its
 * waiters.  No staging buffers: a unit half received costs nothing more
 * than its huge page, which the mapping reserved anyway.
 *
 * As with memfd placement (mig-place.c) a page is claimed before it is
 * written (`claimed`, test-and-set), so the bulk push and an urgent reply
 * carrying the same page write it once; `huge_cnt` counts a unit's pages
 * written, and the thread that completes the count maps it (after every
 * write: the count is taken with release and read with acquire).  No
 * write can land after the CONTINUE.
 *
 * A unit whose 512 pages all came as zero runs is not allocated at all:
 * it is marked present, and mapped (fallocate allocates a zeroed huge
 * page, CONTINUE maps it) only if the guest faults on it before the end
 * of post-copy; after that the kernel gives the guest a zeroed page on
 * first touch anyway.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "mig.h"

static inline uint64_t unit_of(uint64_t pfn)
{
	return pfn / HUGE_PAGES;
}

/* Allocate (zeroed, if it has no page yet) and map the unit u; wakes its waiters. */
static int huge_map(struct mig_dest *d, uint64_t u)
{
	uint64_t off = u << HUGE_PAGE_SHIFT;

	if (fallocate(d->c.vm->mem.fd, 0, (off_t)off, (off_t)HUGE_PAGE_SIZE))
		return err_set(-errno, "allocating the huge page at +%#llx: %s (too few free "
			       "huge pages? see vm.nr_hugepages)", (unsigned long long)off,
			       strerror(errno));
	return uffd_continue_huge(&d->uffd, off);
}

/* Every page of unit u is written (or known zero): map it if it holds data. */
static int huge_complete(struct mig_dest *d, uint64_t u)
{
	uint64_t first = u * HUGE_PAGES;
	bool data = __atomic_load_n(&d->huge_data[u], __ATOMIC_ACQUIRE);
	int ret = 0;

	if (data)
		ret = uffd_continue_huge(&d->uffd, u << HUGE_PAGE_SHIFT);
	if (ret < 0)
		return ret;
	dst_mark_present(d, first, HUGE_PAGES);
	/* all zero, unallocated: map it only for a guest already waiting on it */
	if (!data && bitmap_test(&d->requested, first))
		ret = huge_map(d, u);
	return ret;
}

/* Claimed pages [pfn, pfn+n) of one unit are written: count them. */
static int huge_count(struct mig_dest *d, uint64_t pfn, uint64_t n, bool data)
{
	uint64_t u = unit_of(pfn);

	if (data)
		__atomic_store_n(&d->huge_data[u], true, __ATOMIC_RELEASE);
	if (__atomic_add_fetch(&d->huge_cnt[u], (uint16_t)n, __ATOMIC_ACQ_REL) == HUGE_PAGES)
		return huge_complete(d, u);
	return 0;
}

/*
 * A raw or zero run in post-copy: each page this thread claims is copied
 * into its huge page through the placement view (zero pages are zero
 * there already: a huge page is allocated zeroed), then counted.
 */
int dst_place_huge(struct mig_dest *d, const struct xrun *r)
{
	struct guest_mem *m = &d->c.vm->mem;
	uint64_t pfn = r->pfn, end = r->pfn + r->n;

	while (pfn < end) {
		uint64_t uend = MIN(end, (unit_of(pfn) + 1) * HUGE_PAGES), n = 0;
		int ret;

		while (pfn + n < uend && !bitmap_test(&d->present, pfn + n) &&
		       !bitmap_test_and_set(&d->claimed, pfn + n))
			n++;
		if (!n) {
			pfn++;   /* present, or another thread has it */
			continue;
		}
		if (r->enc == XENC_RAW)
			memcpy(m->place + (pfn << PAGE_SHIFT),
			       r->data + ((pfn - r->pfn) << PAGE_SHIFT), n * PAGE_SIZE);
		ret = huge_count(d, pfn, n, r->enc == XENC_RAW);
		if (ret < 0)
			return ret;
		pfn += n;
	}
	return 0;
}

/*
 * A fault in hugetlb RAM.  A present unit was placed a moment ago or is
 * an unallocated zero unit: map it here.  Otherwise the unit is asked for
 * once (its first page's `requested` bit), naming the faulting page,
 * which the source sends first.
 */
int dst_fault_huge(struct mig_dest *d, uint64_t pfn)
{
	uint64_t first = pfn & ~(HUGE_PAGES - 1);

	if (bitmap_test_and_set(&d->requested, first)) {
		/* asked already, or being mapped: a zero unit may have missed the request */
		if (bitmap_test(&d->present, pfn))
			return huge_map(d, unit_of(pfn));
		return 0;
	}
	if (bitmap_test(&d->present, pfn))
		return huge_map(d, unit_of(pfn));
	d->fault_ns[pfn] = now_ns();
	d->faults++;
	pr_debug("incoming: fault on page %llu, requesting its 2 MiB unit",
		 (unsigned long long)pfn);
	return xport_fetch(d->c.x, pfn);
}

/*
 * Before post-copy starts: every unit must be wholly present (pre-copy
 * rounds) or wholly absent (never sent, or discarded as a whole unit by a
 * FEAT_HUGE2M source); a unit in between would be mapped in the guest's
 * view with pages missing, which no fault would ever report.
 */
int dst_huge_setup(struct mig_dest *d)
{
	uint64_t nunits = d->c.npages / HUGE_PAGES;

	if (!(d->c.x->features & FEAT_HUGE2M))
		return err_set(-EPROTONOSUPPORT, "post-copy into hugetlb RAM needs a source that "
			       "sends 2 MiB units (FEAT_HUGE2M): start this side with "
			       "--ram-backing anon");
	if (!d->huge_cnt) {
		d->huge_cnt = calloc(nunits, sizeof(*d->huge_cnt));
		d->huge_data = calloc(nunits, sizeof(*d->huge_data));
		if (!d->huge_cnt || !d->huge_data)
			return -ENOMEM;
	}
	for (uint64_t u = 0; u < nunits; u++) {
		uint64_t have = bitmap_count_range(&d->present, u * HUGE_PAGES, HUGE_PAGES);

		if (have && have != HUGE_PAGES)
			return err_set(-EPROTO, "huge page %llu is partly present (%llu of %llu "
				       "pages) at the start of post-copy", (unsigned long long)u,
				       (unsigned long long)have, (unsigned long long)HUGE_PAGES);
		d->huge_cnt[u] = (uint16_t)have;
	}
	return 0;
}
