/*
 * uffd.h - userfaultfd, as the migration engine uses it.
 *
 * Destination (post-copy): register guest RAM for missing-page faults,
 * read fault messages, place pages with UFFDIO_COPY / UFFDIO_ZEROPAGE
 * (contiguous runs in one call; a page somebody else placed first is
 * -EEXIST and is skipped, not an error), unregister when complete.
 *
 * Source (pre-copy): dirty tracking with write-protect in async mode
 * (UFFD_FEATURE_WP_ASYNC: the kernel resolves write faults by itself and
 * only records them) and the PAGEMAP_SCAN ioctl, which returns the pages
 * written since the last scan and write-protects them again in the same
 * call.  No fault ever reaches user space on the source.
 *
 * All functions return >= 0 or -errno with err_set() naming the problem
 * and the fix (e.g. EPERM -> run as root or set vm.unprivileged_userfaultfd=1).
 */
#ifndef UMIG_UFFD_H
#define UMIG_UFFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- opening: the one path everything (caps included) goes through ------ */

/*
 * userfaultfd(2), falling back to /dev/userfaultfd when the syscall is
 * refused; non-blocking, close-on-exec, no UFFDIO_API yet.  fd or -errno
 * with err_set() naming the fix.
 */
int uffd_sys_open(void);
/*
 * An fd with the features in `required` and those of `optional` the
 * kernel offers (*enabled, may be NULL), UFFDIO_API done.  -ENOTSUP when a
 * required feature is missing.
 */
int uffd_fd_new(uint64_t required, uint64_t optional, uint64_t *enabled);

/* --- destination: missing-page faults --------------------------------- */

struct uffd {
	int fd;              /* -1 when closed */
	uint8_t *base;       /* registered range */
	uint64_t len;
	bool registered;
	bool minor;          /* registered for minor faults too (memfd RAM) */
};

/* Open a userfaultfd (non-blocking, close-on-exec) and negotiate the API. */
int uffd_open(struct uffd *u);
/* The same with UFFD_FEATURE_MINOR_SHMEM (-ENOTSUP naming the fix without it). */
int uffd_open_minor(struct uffd *u);
/* Register [base, base+len) with UFFDIO_REGISTER_MODE_MISSING. */
int uffd_register_missing(struct uffd *u, void *base, uint64_t len);
/*
 * The same, and with minor = true MINOR as well (shmem: a fault on a page
 * whose folio is in the page cache but not mapped in this view); then
 * UFFDIO_CONTINUE is granted too.
 */
int uffd_register(struct uffd *u, void *base, uint64_t len, bool minor);
int uffd_unregister(struct uffd *u);
void uffd_close(struct uffd *u);   /* idempotent */

/*
 * Read up to max pending fault addresses (page aligned) without blocking.
 * Returns the number read (0 if none pending: EAGAIN is benign).
 * Non-pagefault events are skipped.
 */
int uffd_read_faults(struct uffd *u, uint64_t *addrs, int max);

/*
 * Copy npages pages from src to dst (inside the registered range) with
 * as few UFFDIO_COPY calls as possible, waking faulting threads.  Pages
 * already present (-EEXIST) are skipped.  Returns the number of pages
 * this call placed (0..npages) or -errno on a real error.
 */
long uffd_copy(struct uffd *u, uint64_t dst_off, const void *src, uint64_t npages);
/* Same with zero pages (UFFDIO_ZEROPAGE). */
long uffd_zero(struct uffd *u, uint64_t dst_off, uint64_t npages);
/*
 * Map npages whose data is already in the page cache (written through a
 * second view of the file) with UFFDIO_CONTINUE, waking faulting
 * threads.  Mapped pages (-EEXIST) are skipped; a page with no folio is
 * -EFAULT (write it, zeroes included, first).  Needs minor registration.
 */
long uffd_continue(struct uffd *u, uint64_t dst_off, uint64_t npages);

/*
 * hugetlbfs RAM: open with minor and missing faults on hugetlbfs,
 * register [base, base+len) (2 MiB aligned) for both, and map one
 * assembled 2 MiB huge page at off with UFFDIO_CONTINUE, waking its
 * waiters (mapped already: only the wake).  0 or -errno.
 */
int uffd_open_huge(struct uffd *u);
int uffd_register_huge(struct uffd *u, void *base, uint64_t len);
int uffd_continue_huge(struct uffd *u, uint64_t off);
/* Wake threads blocked on [off, off+len) (after a -EEXIST race). */
int uffd_wake(struct uffd *u, uint64_t off, uint64_t len);

/* --- source: dirty tracking -------------------------------------------- */

/*
 * Two mechanisms behind one interface (docs/architecture.md, "Dirty
 * tracking"): write-protect (any backend: userfaultfd WP_ASYNC on the host
 * mapping + PAGEMAP_SCAN) and KVM's dirty log (--vcpu kvm only).
 */
enum dirty_mech {
	DIRTY_WP,            /* dirty_start() */
	DIRTY_KVM_LOG,       /* dirty_start_kvm() */
};

struct kvm_ctx;
struct guest_mem;

struct dirty_tracker {
	enum dirty_mech mech;
	struct kvm_ctx *kvm; /* kvm-log: the KVM VM whose log this reads */
	uint64_t *log;       /* kvm-log: scratch bitmap KVM_GET_DIRTY_LOG fills */
	int uffd;            /* write-protect uffd, -1 when closed */
	int pagemap_fd;      /* /proc/self/pagemap */
	uint8_t *base;
	uint64_t len;
	void *regions;       /* scratch struct page_region array */
	uint64_t nregions;
};

/*
 * Start tracking writes to [base, base+len): register MODE_WP with
 * WP_ASYNC (+ WP_UNPOPULATED when offered) and write-protect the range.
 * -ENOTSUP with a clear message when the kernel lacks WP_ASYNC or
 * PAGEMAP_SCAN.
 */
int dirty_start(struct dirty_tracker *d, void *base, uint64_t len);
/*
 * Start tracking the vCPUs' writes to the guest RAM mem with KVM's dirty
 * log; -ENODEV with a clear message unless a KVM VM maps mem.
 */
int dirty_start_kvm(struct dirty_tracker *d, const struct guest_mem *mem);
/*
 * Get and clear the pages written since dirty_start or the previous
 * call: sets their page numbers (offset / 4096) in `out` (a bitmap of
 * len/4096 bits, see bitmap.h) and returns how many were set.  Loops on
 * the scan's walk_end until the whole range is covered.
 */
struct bitmap;
long dirty_collect(struct dirty_tracker *d, struct bitmap *out);
/* The same with the guest stopped for good: nothing is protected again. */
long dirty_collect_last(struct dirty_tracker *d, struct bitmap *out);
/* Pages [first, first + n) only; reprotect false: report without protecting again. */
long dirty_collect_range(struct dirty_tracker *d, struct bitmap *out, uint64_t first,
			 uint64_t n, bool reprotect);
void dirty_stop(struct dirty_tracker *d);  /* idempotent */

#endif
