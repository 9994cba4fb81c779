/*
 * mig-place.c - post-copy placement into memfd-backed guest RAM with
 * UFFDIO_CONTINUE (--ram-backing memfd --placement continue; without
 * --placement continue memfd RAM is placed with UFFDIO_COPY, which
 * bench/floors measures cheaper per page on this kind of host).
 *
 * Guest RAM is one shmem file mapped twice (mem.h): the guest's view,
 * registered with userfaultfd for MISSING and MINOR faults, and a
 * placement view that only umig writes.  A received page is written into
 * the file at its offset (pwrite(2): the page-cache write a store through
 * the placement view would do, without that view's page faults) -- the
 * page cache now holds it, the guest's view does not map it yet -- and
 * UFFDIO_CONTINUE maps it and wakes the vCPU.  Zero pages are placed
 * with UFFDIO_ZEROPAGE, which on shmem allocates a zeroed folio and maps
 * it in one step (UFFDIO_CONTINUE on a page with no folio would fail
 * with EFAULT).
 *
 * UFFDIO_COPY is atomic: the kernel refuses a page that is present.  A
 * write into the file is not: it would overwrite what the
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
#include <unistd.h>

#include "mig.h"

/*
 * pwrite(2) into the memfd: the same page-cache write as a store through
 * the placement view, without the write fault per page that the view's
 * first touch costs (bench/floors on a VM: ~33 us a page in runs of 64,
 * against ~3 us for pwrite plus UFFDIO_CONTINUE).  Bounded: each pass writes something
 * or fails.
 */
static int place_write(struct guest_mem *m, uint64_t off, const uint8_t *src, size_t len)
{
	while (len) {
		ssize_t w = pwrite(m->fd, src, len, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return err_set(w < 0 ? -errno : -EIO, "writing page +%#llx into the guest "
				       "RAM memfd: %s", (unsigned long long)off,
				       w < 0 ? strerror(errno) : "nothing written");
		src += w;
		off += (uint64_t)w;
		len -= (size_t)w;
	}
	return 0;
}

/*
 * One-sided RDMA into memfd RAM with --placement continue: offer the
 * transport the placement view, for READs to land in place (zero-copy,
 * docs/rdma.md).  From here on the view may be pinned, so a drop must
 * not punch holes under it (mem_drop).
 */
void dst_offer_place(struct mig_dest *d, struct xport *x)
{
	if (!d->place_continue || !(x->features & FEAT_RDMA_READ))
		return;
	d->c.vm->mem.place_pinned = true;
	x->ram = d->c.vm->mem.place;
	x->ram_len = d->c.vm->mem.size;
}

/* Write [pfn, pfn+n) of run r into the page cache and map it. */
static long place_subrun(struct mig_dest *d, const struct xrun *r, uint64_t pfn, uint64_t n)
{
	struct guest_mem *m = &d->c.vm->mem;
	uint64_t off = pfn << PAGE_SHIFT;
	const uint8_t *src = r->data + ((pfn - r->pfn) << PAGE_SHIFT);
	int ret = 0;

	if (r->enc == XENC_ZERO) {
		if (!m->place_pinned)
			return uffd_zero(&d->uffd, off, n);
		/* pinned: every page has a folio (ZEROPAGE would find it), maybe a discarded one */
		memset(m->place + off, 0, (size_t)n * PAGE_SIZE);
	} else if (src == m->place + off) {
		d->pages_in_place += n;   /* an RDMA READ landed it there: nothing to copy */
	} else {
		ret = place_write(m, off, src, (size_t)n * PAGE_SIZE);
	}
	return ret < 0 ? ret : uffd_continue(&d->uffd, off, n);
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
 * the page cache but is not mapped in the guest's view (written into the
 * file, a minor fault), or it is a known zero page with no
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
