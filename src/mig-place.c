/*
 * mig-place.c - post-copy placement into memfd-backed guest RAM with
 * UFFDIO_CONTINUE (--ram-backing memfd, --placement continue).
 *
 * Guest RAM is one shmem file mapped twice (mem.h): the guest's view,
 * registered with userfaultfd for MISSING and MINOR faults, and a
 * placement view that only umig writes.  A received page is written into
 * the placement view at its offset -- the page cache now holds it, the
 * guest's view does not map it yet -- and UFFDIO_CONTINUE maps it and
 * wakes the vCPU.  Zero pages are placed with UFFDIO_ZEROPAGE, which on
 * shmem allocates a zeroed folio and maps it in one step
 * (UFFDIO_CONTINUE on a page with no folio would fail with EFAULT).
 *
 * UFFDIO_COPY is atomic: the kernel refuses a page that is present.  A
 * write through the placement view is not: it would overwrite what the
 * guest wrote since a first placement (the bulk push and an urgent reply
 * may carry the same page, mig-postcopy-dst.c).  So every page is
 * claimed first (`claimed`, test-and-set); only the thread that wins the
 * claim writes and maps it, the other skips it.  A page present before
 * post-copy (pre-copy rounds) is never written again.  A placement that
 * fails gives its claims back, so a later copy (after a recovery) can
 * still place the page.
 */
#include <errno.h>
#include <string.h>

#include "mig.h"

/* Write [pfn, pfn+n) of run r into the placement view and map it. */
static long place_subrun(struct mig_dest *d, const struct xrun *r, uint64_t pfn, uint64_t n)
{
	uint64_t off = pfn << PAGE_SHIFT;

	if (r->enc == XENC_ZERO)
		return uffd_zero(&d->uffd, off, n);
	memcpy(d->c.vm->mem.place + off, r->data + ((pfn - r->pfn) << PAGE_SHIFT),
	       (size_t)n * PAGE_SIZE);
	return uffd_continue(&d->uffd, off, n);
}

/* Claim pages from pfn on; returns how many consecutive ones this thread won. */
static uint64_t place_claim(struct mig_dest *d, uint64_t pfn, uint64_t end)
{
	uint64_t n = 0;

	while (pfn + n < end && !bitmap_test(&d->present, pfn + n) &&
	       !bitmap_test_and_set(&d->claimed, pfn + n))
		n++;
	return n;
}

/*
 * A raw or zero run in post-copy: each sub-run this thread claims is
 * written and mapped, then marked present.  0 or -errno.
 */
int dst_place_continue(struct mig_dest *d, const struct xrun *r)
{
	uint64_t pfn = r->pfn, end = r->pfn + r->n;

	while (pfn < end) {
		uint64_t n = place_claim(d, pfn, end);
		long placed;

		if (!n) {
			pfn++;   /* present, or another thread is placing it */
			continue;
		}
		placed = place_subrun(d, r, pfn, n);
		if (placed < 0) {
			bitmap_clear_range(&d->claimed, pfn, n);
			return (int)placed;
		}
		dst_mark_present(d, pfn, n);
		pfn += n;
	}
	return 0;
}

/*
 * A fault on a page that is present here: it holds its final content in
 * the page cache but is not mapped in the guest's view (written through
 * the placement view, a minor fault), or it is a known zero page with no
 * folio at all (a missing fault: zero runs and discards punch holes).
 */
int dst_resolve_present(struct mig_dest *d, uint64_t off)
{
	long r;

	if (!d->place_continue)
		return (int)MIN(uffd_zero(&d->uffd, off, 1), 0);
	r = uffd_continue(&d->uffd, off, 1);
	if (r == -EFAULT)
		r = uffd_zero(&d->uffd, off, 1);
	return r < 0 ? (int)r : 0;
}
