/*
 * dirty.c - pre-copy dirty tracking on the source; see uffd.h.
 *
 * Guest RAM is registered with a userfaultfd of its own in write-protect
 * mode with UFFD_FEATURE_WP_ASYNC and write-protected as a whole.  In async
 * mode the kernel resolves a write to a protected page itself (it drops the
 * page's uffd-wp bit and lets the write through); nothing is queued on the
 * fd and no thread of ours is involved.  A round's dirty set is then "every
 * page that lost its uffd-wp bit", which one PAGEMAP_SCAN ioctl on
 * /proc/self/pagemap returns and write-protects again (PM_SCAN_WP_MATCHING).
 *
 * Kernel facts this relies on (fs/proc/task_mmu.c, fs/userfaultfd.c):
 *  - The scan tests and re-protects each pte under its page-table lock, so
 *    a write racing with dirty_collect() is reported by this call or the
 *    next one, never lost.  It can be reported by both: when the fault
 *    has dropped the uffd-wp bit but the store lands only after the scan
 *    re-protected the page (a copy-on-write fault drops the lock), the
 *    store faults again.  The second report is needed, the page may have
 *    been sent without that store; tests saw ~0.5% extra reports with a
 *    writer racing a collector in a loop.
 *  - For anonymous memory, PAGEMAP_SCAN only write-protects VMAs whose
 *    userfaultfd has UFFD_FEATURE_WP_UNPOPULATED (pte markers); otherwise
 *    it fails with EPERM (PM_SCAN_CHECK_WPASYNC, which we pass so that this
 *    is an error rather than a silently empty dirty set).  The kernel turns
 *    WP_UNPOPULATED on whenever WP_ASYNC is asked for, and both exist
 *    exactly when CONFIG_PTE_MARKER_UFFD_WP is set, so WP_ASYNC is the one
 *    feature to require.
 *  - With WP_UNPOPULATED, UFFDIO_WRITEPROTECT puts a marker in every
 *    never-touched pte: the first write to such a page is reported, a read
 *    maps the zero page still protected and is not.  Right after
 *    dirty_start() nothing is reported.
 *  - The mask pair category_mask = return_mask = PAGE_IS_WRITTEN takes the
 *    kernel's fast path, which also reports a pte that became empty (e.g.
 *    MADV_DONTNEED of a written page): its content did change, to zeroes.
 *  - A PMD-mapped transparent huge page is reported (and re-protected) as
 *    one 2 MiB region: umig maps guest RAM with 4 KiB pages.
 *
 * The second mechanism, for guests under KVM, is KVM's own dirty log
 * (dirty_start_kvm; the ioctls are in vcpu-kvm.c): a bit per 4 KiB guest
 * page written by a vCPU, read and cleared by KVM_GET_DIRTY_LOG.  The
 * engine picks one with --dirty-track (mig-precopy.c); both fill the same
 * bitmap, and dirty_collect / dirty_stop work on either.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "umig/bitmap.h"
#include "umig/compat.h"
#include "umig/log.h"
#include "umig/uffd.h"
#include "umig/util.h"
#include "umig/vcpu-kvm.h"

/* Regions per PAGEMAP_SCAN call (24 bytes each): a full vec just loops. */
#define DIRTY_REGIONS		4096

/* Register [base, len) for WP and protect all of it, markers included. */
static int dirty_protect(struct dirty_tracker *d, void *base, uint64_t len)
{
	struct uffdio_register reg = {
		.range = { (uintptr_t)base, len },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	struct uffdio_writeprotect wp = {
		.range = { (uintptr_t)base, len },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};

	if (ioctl(d->uffd, UFFDIO_REGISTER, &reg))
		return err_set(-errno, "dirty: register %p+%#llx (WP): %s (must "
			       "be anonymous memory not registered elsewhere)",
			       base, (unsigned long long)len, strerror(errno));
	d->base = base;	/* registered: dirty_stop() unregisters */
	d->len = len;
	if (!(reg.ioctls & ((uint64_t)1 << _UFFDIO_WRITEPROTECT)))
		return err_set(-ENOTSUP, "dirty: kernel grants no "
			       "UFFDIO_WRITEPROTECT for %p+%#llx: use an x86-64 "
			       "or arm64 6.7+ kernel", base,
			       (unsigned long long)len);
	if (ioctl(d->uffd, UFFDIO_WRITEPROTECT, &wp))
		return err_set(-errno, "dirty: write-protect %p+%#llx: %s", base,
			       (unsigned long long)len, strerror(errno));
	return 0;
}

/*
 * Open pagemap and try PAGEMAP_SCAN on the first page with the check that
 * async write-protection is in effect, so that a kernel without the ioctl
 * or a mapping it cannot track fails here and not in the first round.
 */
static int dirty_open_scan(struct dirty_tracker *d)
{
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.flags = PM_SCAN_CHECK_WPASYNC,
		.start = (uintptr_t)d->base,
		.end = (uintptr_t)d->base + PAGE_SIZE,
	};
	int err;

	d->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (d->pagemap_fd < 0)
		return err_set(-errno, "dirty: open /proc/self/pagemap: %s%s",
			       strerror(errno),
			       errno == ENOENT ? ": mount /proc" : "");
	d->regions = calloc(DIRTY_REGIONS, sizeof(struct page_region));
	if (!d->regions)
		return err_set(-ENOMEM, "dirty: no memory for %d scan regions",
			       DIRTY_REGIONS);
	d->nregions = DIRTY_REGIONS;
	if (ioctl(d->pagemap_fd, PAGEMAP_SCAN, &arg) >= 0)
		return 0;
	err = errno;
	if (err == ENOTTY || err == EINVAL)
		return err_set(-ENOTSUP, "dirty: PAGEMAP_SCAN missing (%s): "
			       "pre-copy dirty tracking needs a 6.7+ kernel",
			       errno_name(err));
	if (err == EPERM)
		return err_set(-ENOTSUP, "dirty: PAGEMAP_SCAN: async "
			       "write-protect is not in effect on %p (anonymous "
			       "memory needs UFFD_FEATURE_WP_UNPOPULATED): use a "
			       "6.7+ kernel with CONFIG_PTE_MARKER_UFFD_WP",
			       (void *)d->base);
	return err_set(-err, "dirty: PAGEMAP_SCAN: %s", strerror(err));
}

int dirty_start(struct dirty_tracker *d, void *base, uint64_t len)
{
	uint64_t features = 0, t0 = now_ns();
	char why[200];
	int ret;

	*d = (struct dirty_tracker){ .uffd = -1, .pagemap_fd = -1 };
	if (!base || !len || ((uintptr_t)base | len) & (PAGE_SIZE - 1))
		return err_set(-EINVAL, "dirty: %p+%#llx is empty or not page "
			       "aligned", base, (unsigned long long)len);
	ret = uffd_fd_new(UFFD_FEATURE_WP_ASYNC, UFFD_FEATURE_WP_UNPOPULATED,
			  &features);
	if (ret == -ENOTSUP) {
		snprintf(why, sizeof(why), "%s", err_msg(ret));
		return err_set(ret, "dirty tracking needs userfaultfd WP_ASYNC "
			       "(%s): use a 6.7+ kernel with "
			       "CONFIG_PTE_MARKER_UFFD_WP", why);
	}
	if (ret < 0)
		return ret;
	d->uffd = ret;
	ret = dirty_protect(d, base, len);
	if (!ret)
		ret = dirty_open_scan(d);
	if (ret) {
		snprintf(why, sizeof(why), "%s", err_msg(ret));
		dirty_stop(d);
		return err_set(ret, "%s", why);
	}
	pr_debug("dirty: tracking %p+%#llx (%llu pages), uffd features %#llx, "
		 "started in %llu us", base, (unsigned long long)len,
		 (unsigned long long)(len / PAGE_SIZE),
		 (unsigned long long)features,
		 (unsigned long long)((now_ns() - t0) / 1000));
	return 0;
}

/* Mark one returned region in out.  0, or -EIO if the kernel went astray. */
static int dirty_mark(struct dirty_tracker *d, const struct page_region *r,
		      uint64_t from, struct bitmap *out, uint64_t *count)
{
	uint64_t base = (uintptr_t)d->base, end = base + d->len;

	if (r->start < from || r->end > end || r->start >= r->end ||
	    (r->start | r->end) & (PAGE_SIZE - 1))
		return err_set(-EIO, "dirty: PAGEMAP_SCAN returned region "
			       "%#llx-%#llx outside %#llx-%#llx",
			       (unsigned long long)r->start,
			       (unsigned long long)r->end,
			       (unsigned long long)from, (unsigned long long)end);
	bitmap_set_range(out, (r->start - base) >> PAGE_SHIFT,
			 (r->end - r->start) >> PAGE_SHIFT);
	*count += (r->end - r->start) >> PAGE_SHIFT;
	return 0;
}

int dirty_start_kvm(struct dirty_tracker *d, const struct guest_mem *mem)
{
	int ret;

	*d = (struct dirty_tracker){ .mech = DIRTY_KVM_LOG, .uffd = -1, .pagemap_fd = -1 };
	d->log = calloc((mem->size / PAGE_SIZE + 63) / 64, sizeof(uint64_t));
	if (!d->log)
		return err_set(-ENOMEM, "dirty: no memory for the KVM dirty log's bitmap");
	ret = vcpu_kvm_dirty_log_start(mem, &d->kvm);
	if (ret < 0) {
		free(d->log);
		*d = (struct dirty_tracker){ .uffd = -1, .pagemap_fd = -1 };
		return ret;
	}
	d->base = mem->host;
	d->len = mem->size;
	pr_debug("dirty: KVM dirty log on %p+%#llx (%llu pages)", (void *)d->base,
		 (unsigned long long)d->len, (unsigned long long)(d->len / PAGE_SIZE));
	return 0;
}

/* KVM's log since the last call, ORed into out. */
static long dirty_collect_kvm(struct dirty_tracker *d, struct bitmap *out)
{
	uint64_t nwords = (d->len / PAGE_SIZE + 63) / 64, t0 = now_ns(), count;
	int ret = vcpu_kvm_dirty_log_get(d->kvm, d->log);

	if (ret < 0)
		return ret;
	count = bitmap_or_words(out, d->log, nwords);
	pr_debug("dirty: %llu page(s) written (KVM dirty log), %llu us",
		 (unsigned long long)count, (unsigned long long)((now_ns() - t0) / 1000));
	return (long)count;
}

/*
 * One scan returns at most nregions regions and then stops with walk_end
 * at the first page it did not report (and did not re-protect), so we go
 * on from there.  Each call must advance; the loop is bounded by the page
 * count in case a kernel bug ever makes it stall.  The count is of pages
 * reported, whether or not their bit was already set in out.
 * Not thread-safe: one collector per tracker (the regions are scratch).
 */
static long dirty_scan(struct dirty_tracker *d, struct bitmap *out, uint64_t first,
		       uint64_t npages, bool reprotect);

long dirty_collect(struct dirty_tracker *d, struct bitmap *out)
{
	return dirty_scan(d, out, 0, d->len / PAGE_SIZE, true);
}

/*
 * Only pages [first, first + n): what lies outside is neither reported
 * nor protected again (the dirty log of KVM is always read whole).
 */
long dirty_collect_range(struct dirty_tracker *d, struct bitmap *out, uint64_t first,
			 uint64_t n, bool reprotect)
{
	return dirty_scan(d, out, first, n, reprotect || d->kvm);
}

/*
 * The last collection, with the guest stopped: the same report without
 * write-protecting the pages again (that costs about as much again per
 * written page, inside the downtime, for a tracker about to stop).
 */
long dirty_collect_last(struct dirty_tracker *d, struct bitmap *out)
{
	return dirty_scan(d, out, 0, d->len / PAGE_SIZE, !!d->kvm);
}

static long dirty_scan(struct dirty_tracker *d, struct bitmap *out, uint64_t first,
		       uint64_t len_pages, bool reprotect)
{
	struct page_region *regs = d->regions;
	uint64_t start = (uintptr_t)d->base + first * PAGE_SIZE, end = start + len_pages * PAGE_SIZE;
	uint64_t count = 0, npages = d->len / PAGE_SIZE, scans = 0;
	uint64_t t0 = now_ns();
	int n, i, ret, eintr = 0;

	if ((d->uffd < 0 || d->pagemap_fd < 0 || !regs) && !d->kvm)
		return err_set(-EBADF, "dirty: collect: tracker not started");
	if (!out || !out->words || out->nbits < npages)
		return err_set(-EINVAL, "dirty: collect: bitmap smaller than "
			       "%llu pages", (unsigned long long)npages);
	if (d->kvm)
		return dirty_collect_kvm(d, out);
	if (first > npages || len_pages > npages - first)
		return err_set(-EINVAL, "dirty: collect: pages %llu+%llu outside the %llu tracked",
			       (unsigned long long)first, (unsigned long long)len_pages,
			       (unsigned long long)npages);
	while (start < end) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.flags = (reprotect ? PM_SCAN_WP_MATCHING : 0) | PM_SCAN_CHECK_WPASYNC,
			.start = start,
			.end = end,
			.vec = (uintptr_t)regs,
			.vec_len = d->nregions,
			.category_mask = PAGE_IS_WRITTEN,
			.return_mask = PAGE_IS_WRITTEN,
		};

		if (++scans > npages + 1)
			return err_set(-EIO, "dirty: PAGEMAP_SCAN makes no "
				       "progress at %#llx",
				       (unsigned long long)start);
		n = ioctl(d->pagemap_fd, PAGEMAP_SCAN, &arg);
		if (n < 0) {
			if (errno == EINTR && ++eintr < 100)
				continue;
			return err_set(-errno, "dirty: PAGEMAP_SCAN %#llx-%#llx: "
				       "%s", (unsigned long long)start,
				       (unsigned long long)end, strerror(errno));
		}
		if ((uint64_t)n > d->nregions || arg.walk_end <= start ||
		    arg.walk_end > end)
			return err_set(-EIO, "dirty: PAGEMAP_SCAN from %#llx "
				       "returned %d regions, walk_end %#llx",
				       (unsigned long long)start, n,
				       (unsigned long long)arg.walk_end);
		for (i = 0; i < n; i++) {
			ret = dirty_mark(d, &regs[i], start, out, &count);
			if (ret)
				return ret;
		}
		start = arg.walk_end;
	}
	pr_debug("dirty: %llu page(s) written, %llu scan(s), %llu us",
		 (unsigned long long)count, (unsigned long long)scans,
		 (unsigned long long)((now_ns() - t0) / 1000));
	return (long)count;
}

/*
 * Unregistering drops the write protection (uffd-wp bits and markers) so
 * the guest runs on with no trace of the tracker; closing the fd would do
 * the same, the explicit unregister just says so and reports trouble.
 */
void dirty_stop(struct dirty_tracker *d)
{
	struct uffdio_range range = { (uintptr_t)d->base, d->len };

	if (d->kvm) {
		vcpu_kvm_dirty_log_stop(d->kvm);
		pr_debug("dirty: stopped KVM's dirty log on %p+%#llx", (void *)d->base,
			 (unsigned long long)d->len);
	}
	free(d->log);
	if (d->uffd >= 0) {
		if (d->base && ioctl(d->uffd, UFFDIO_UNREGISTER, &range))
			pr_debug("dirty: unregister %p+%#llx: %s",
				 (void *)d->base, (unsigned long long)d->len,
				 strerror(errno));
		close(d->uffd);
		pr_debug("dirty: stopped tracking %p+%#llx", (void *)d->base,
			 (unsigned long long)d->len);
	}
	if (d->pagemap_fd >= 0)
		close(d->pagemap_fd);
	free(d->regions);
	*d = (struct dirty_tracker){ .uffd = -1, .pagemap_fd = -1 };
}
