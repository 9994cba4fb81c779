/*
 * compat.h - kernel uapi that the build host's headers may lack.
 *
 * umig is built against Debian 12's linux-libc-dev (6.1 uapi) but runs on
 * newer kernels whose userfaultfd and pagemap interfaces it wants to use:
 * UFFD_FEATURE_WP_UNPOPULATED (6.4), UFFDIO_POISON (6.6), UFFD_FEATURE_WP_ASYNC
 * and the PAGEMAP_SCAN ioctl (6.7), UFFDIO_MOVE (6.8), PAGE_IS_GUARD (6.15).
 * This is the one place that defines them.  Every definition sits under
 * #ifndef so that newer system headers win, and every value is copied from
 * the kernel's include/uapi/linux/userfaultfd.h and include/uapi/linux/fs.h;
 * they are ABI and must never be "adjusted".
 *
 * Defining a constant here does not mean the running kernel has it: probe
 * with caps_probe() (caps.h) before relying on any of them.
 *
 * Include this instead of <linux/userfaultfd.h> / <linux/fs.h> directly.
 */
#ifndef UMIG_COMPAT_H
#define UMIG_COMPAT_H

#include <linux/userfaultfd.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <linux/types.h>

/* ---- userfaultfd(2) flags ---------------------------------------------- */

/* 5.11+: handle faults from user mode only (allowed to unprivileged users). */
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

/* ---- userfaultfd: features reported by UFFDIO_API ---------------------- */

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED		(1<<13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON			(1<<14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC			(1<<15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE			(1<<16)
#endif

/*
 * ---- userfaultfd: ioctl numbers ----------------------------------------
 *
 * The _UFFDIO_* numbers are also bit positions in the ioctls mask that
 * UFFDIO_REGISTER returns, so test "(1ULL << _UFFDIO_MOVE) & reg.ioctls".
 *
 * Note that an old header's UFFD_API_RANGE_IOCTLS does not include
 * _UFFDIO_MOVE or _UFFDIO_POISON.  That macro describes what the *header's*
 * kernel offered; never compare a register result against it.  Test the
 * individual bits instead.
 */
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE				(0x05)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON				(0x08)
#endif

/*
 * The structs are keyed on their ioctl macro: a header new enough to define
 * UFFDIO_MOVE also defines struct uffdio_move, and the reverse.
 */
#ifndef UFFDIO_MOVE
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
	/*
	 * Especially if used to atomically remove memory from the
	 * address space the wake on the dst range is not needed.
	 */
#define UFFDIO_MOVE_MODE_DONTWAKE		((__u64)1<<0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES	((__u64)1<<1)
	__u64 mode;
	/*
	 * "move" is written by the ioctl and must be at the end: the
	 * copy_from_user will not read the last 8 bytes.
	 */
	__s64 move;
};
#define UFFDIO_MOVE		_IOWR(UFFDIO, _UFFDIO_MOVE,	\
				      struct uffdio_move)
#endif

#ifndef UFFDIO_POISON
struct uffdio_poison {
	struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE		((__u64)1<<0)
	__u64 mode;
	/*
	 * Fields below here are written by the ioctl and must be at the end:
	 * the copy_from_user will not read past here.
	 */
	__s64 updated;
};
#define UFFDIO_POISON		_IOWR(UFFDIO, _UFFDIO_POISON,	\
				      struct uffdio_poison)
#endif

/* ---- PAGEMAP_SCAN ioctl on /proc/<pid>/pagemap (6.7+) ------------------ */

/*
 * Category bits, used both in pm_scan_arg's masks and in
 * page_region.categories.
 */
#ifndef PAGE_IS_WPALLOWED
#define PAGE_IS_WPALLOWED	(1 << 0)
#endif
#ifndef PAGE_IS_WRITTEN
#define PAGE_IS_WRITTEN		(1 << 1)
#endif
#ifndef PAGE_IS_FILE
#define PAGE_IS_FILE		(1 << 2)
#endif
#ifndef PAGE_IS_PRESENT
#define PAGE_IS_PRESENT		(1 << 3)
#endif
#ifndef PAGE_IS_SWAPPED
#define PAGE_IS_SWAPPED		(1 << 4)
#endif
#ifndef PAGE_IS_PFNZERO
#define PAGE_IS_PFNZERO		(1 << 5)
#endif
#ifndef PAGE_IS_HUGE
#define PAGE_IS_HUGE		(1 << 6)
#endif
#ifndef PAGE_IS_SOFT_DIRTY
#define PAGE_IS_SOFT_DIRTY	(1 << 7)
#endif
/* 6.15+; a 6.7..6.14 kernel rejects masks containing it with EINVAL. */
#ifndef PAGE_IS_GUARD
#define PAGE_IS_GUARD		(1 << 8)
#endif

/* pm_scan_arg.flags */
#ifndef PM_SCAN_WP_MATCHING
#define PM_SCAN_WP_MATCHING	(1 << 0)	/* Write protect the pages matched. */
#endif
#ifndef PM_SCAN_CHECK_WPASYNC
#define PM_SCAN_CHECK_WPASYNC	(1 << 1)	/* Abort the scan when a non-WP-enabled page is found. */
#endif

#ifndef PAGEMAP_SCAN
/*
 * struct page_region - Page region with flags
 * @start:	Start of the region
 * @end:	End of the region (exclusive)
 * @categories:	PAGE_IS_* category bitmask for the region
 */
struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};

/*
 * struct pm_scan_arg - Pagemap ioctl argument
 * @size:		Size of the structure (the kernel checks it)
 * @flags:		PM_SCAN_* flags
 * @start:		Starting address of the region (page aligned)
 * @end:		Ending address of the region
 * @walk_end:		Address where the scan stopped (written by kernel)
 * @vec:		Address of page_region struct array for output
 * @vec_len:		Length of the page_region struct array
 * @max_pages:		Optional limit for number of returned pages (0 = none)
 * @category_inverted:	PAGE_IS_* categories which match if 0 instead of 1
 * @category_mask:	Skip pages for which any category doesn't match
 * @category_anyof_mask: Skip pages for which no category matches
 * @return_mask:	PAGE_IS_* categories reported in the page_regions
 *
 * The ioctl returns the number of page_regions filled, or -1/errno.
 */
struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_SCAN	_IOWR('f', 16, struct pm_scan_arg)
#endif

#endif /* UMIG_COMPAT_H */
