/*
 * uffd.c - userfaultfd on the destination: missing-page faults and page
 * placement for post-copy; see uffd.h.
 *
 * The fault thread registers guest RAM with UFFDIO_REGISTER_MODE_MISSING
 * (and MINOR for memfd RAM placed with UFFDIO_CONTINUE), reads fault
 * messages with uffd_read_faults() and places arriving pages with
 * uffd_copy() / uffd_zero() / uffd_continue(), which also wake the
 * faulting vCPU.  The
 * bulk and urgent paths place pages concurrently, so "somebody else placed
 * this page first" is normal: the kernel answers EEXIST and we skip it.
 *
 * What the kernel does on a run of pages (fs/userfaultfd.c, mfill_atomic):
 * it fills page after page and stops at the first one it cannot fill.
 *   - all filled:            ioctl 0, .copy = len, the run is woken;
 *   - some filled, then one
 *     failed (e.g. EEXIST):  ioctl -1/EAGAIN, .copy = bytes filled (> 0),
 *                            only the filled part is woken;
 *   - the first one failed:  ioctl -1/errno, .copy = -errno (EEXIST: the
 *                            first page is already present);
 *   - mm changing (fork,
 *     mremap in progress):   ioctl -1/EAGAIN, .copy = -EAGAIN or untouched.
 * So a run is placed by calling again after each stop: skip exactly one
 * page on EEXIST, retry (bounded) on EAGAIN without progress.
 *
 * Threads: uffd_copy/zero/wake/read_faults only read *u (error details
 * are per thread), so the bulk, urgent and fault threads may call them at
 * once; open/register/unregister/close must not race with them.
 *
 * The dirty tracker (dirty.c) opens its own userfaultfd through
 * uffd_fd_new() below, so that opening, the /dev/userfaultfd fallback and
 * the error messages live in one place.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "umig/compat.h"
#include "umig/log.h"
#include "umig/mem.h"
#include "umig/uffd.h"
#include "umig/util.h"

#ifndef USERFAULTFD_IOC_NEW	/* 6.1 uapi; defined here only if missing */
#define USERFAULTFD_IOC_NEW	_IO(0xAA, 0x00)
#endif

#define UFFD_IOCTL_BIT(nr)	((uint64_t)1 << (nr))
/* Messages read per read(2); a uffd_msg is 32 bytes. */
#define UFFD_MSG_BATCH		64
/* EAGAIN without progress means the mm is changing (fork, mremap): brief. */
#define UFFD_EAGAIN_RETRIES	1000

/* userfaultfd(2) failed with err: name the fix. */
static int uffd_open_error(int err)
{
	switch (err) {
	case EPERM:
		return err_set(-EPERM, "userfaultfd unavailable (EPERM): run as "
			       "root, set vm.unprivileged_userfaultfd=1, or give this user "
			       "read-write access to /dev/userfaultfd");
	case ENOSYS:
		return err_set(-ENOSYS, "userfaultfd unavailable (ENOSYS): boot a "
			       "kernel with CONFIG_USERFAULTFD=y");
	case EMFILE:
	case ENFILE:
		return err_set(-err, "userfaultfd: out of file descriptors (%s): "
			       "raise the limit (ulimit -n)", errno_name(err));
	default:
		return err_set(-err, "userfaultfd(2) failed: %s", strerror(err));
	}
}

/*
 * A fresh userfaultfd (non-blocking, close-on-exec), before UFFDIO_API.
 * When the syscall is refused (EPERM: unprivileged with the sysctl at 0, or
 * a seccomp filter; ENOSYS: filtered), /dev/userfaultfd (6.1+) may still be
 * open to us: its access is governed by the file mode instead.
 */
int uffd_sys_open(void)
{
	long fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int err, dev;

	if (fd >= 0)
		return (int)fd;
	err = errno;
	if (err != EPERM && err != ENOSYS)
		return uffd_open_error(err);
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		pr_debug("uffd: userfaultfd(2): %s; /dev/userfaultfd: %s",
			 strerror(err), strerror(errno));
		return uffd_open_error(err);
	}
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		pr_debug("uffd: USERFAULTFD_IOC_NEW: %s", strerror(errno));
	close(dev);
	if (fd < 0)
		return uffd_open_error(err);
	pr_debug("uffd: userfaultfd(2): %s; opened through /dev/userfaultfd",
		 strerror(err));
	return (int)fd;
}

/* UFFDIO_API; *offered gets every feature the kernel has.  0 or -errno. */
static int uffd_api(int fd, uint64_t features, uint64_t *offered)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };

	if (ioctl(fd, UFFDIO_API, &api))
		return err_set(-errno, "userfaultfd: UFFDIO_API (features %#llx) "
			       "failed: %s", (unsigned long long)features,
			       strerror(errno));
	if (offered)
		*offered = api.features;
	return 0;
}

/*
 * Open a userfaultfd with the features in `required` and those of
 * `optional` the kernel offers.  UFFDIO_API can be issued once per fd, so
 * when anything is asked for, a throwaway fd learns what is offered first.
 * Returns the fd (caller closes) with *enabled = the features requested,
 * -ENOTSUP when a required feature is missing, or -errno.
 */
int uffd_fd_new(uint64_t required, uint64_t optional, uint64_t *enabled)
{
	uint64_t offered = 0, want;
	int fd, ret;

	if (required | optional) {
		fd = uffd_sys_open();
		if (fd < 0)
			return fd;
		ret = uffd_api(fd, 0, &offered);
		close(fd);
		if (ret)
			return ret;
		if (required & ~offered)
			return err_set(-ENOTSUP, "userfaultfd lacks feature(s) "
				       "%#llx (kernel offers %#llx)",
				       (unsigned long long)(required & ~offered),
				       (unsigned long long)offered);
	}
	want = required | (optional & offered);
	fd = uffd_sys_open();
	if (fd < 0)
		return fd;
	ret = uffd_api(fd, want, want ? NULL : &offered);
	if (ret) {
		close(fd);
		return ret;
	}
	pr_debug("uffd: fd %d, features %#llx enabled (kernel offers %#llx)", fd,
		 (unsigned long long)want, (unsigned long long)offered);
	if (enabled)
		*enabled = want;
	return fd;
}

/* Missing mode needs no optional feature: faults arrive page aligned. */
int uffd_open(struct uffd *u)
{
	int fd;

	*u = (struct uffd){ .fd = -1 };
	fd = uffd_fd_new(0, 0, NULL);
	if (fd < 0)
		return fd;
	u->fd = fd;
	return 0;
}

/*
 * Minor faults on shmem (5.14+) for memfd-backed RAM: the kernel must
 * offer UFFD_FEATURE_MINOR_SHMEM, or the destination cannot place pages
 * with UFFDIO_CONTINUE.
 */
int uffd_open_minor(struct uffd *u)
{
	int fd;

	*u = (struct uffd){ .fd = -1 };
	fd = uffd_fd_new(UFFD_FEATURE_MINOR_SHMEM, 0, NULL);
	if (fd == -ENOTSUP)
		return err_set(-ENOTSUP, "userfaultfd has no minor faults on shmem "
			       "(UFFD_FEATURE_MINOR_SHMEM, Linux 5.14+): drop --placement continue "
			       "(UFFDIO_COPY works on memfd RAM too)");
	if (fd < 0)
		return fd;
	u->fd = fd;
	return 0;
}

int uffd_register_missing(struct uffd *u, void *base, uint64_t len)
{
	return uffd_register(u, base, len, false);
}

int uffd_register(struct uffd *u, void *base, uint64_t len, bool minor)
{
	const uint64_t need = UFFD_IOCTL_BIT(_UFFDIO_COPY) |
			      UFFD_IOCTL_BIT(_UFFDIO_ZEROPAGE) |
			      UFFD_IOCTL_BIT(_UFFDIO_WAKE) |
			      (minor ? UFFD_IOCTL_BIT(_UFFDIO_CONTINUE) : 0);
	/*
	 * MINOR alone is not enough on shmem: a guest touch of a page with no
	 * page-cache folio would be given a zero page by the kernel without
	 * telling us.  MISSING reports it, and it is fetched.
	 */
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)base, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING |
			(minor ? UFFDIO_REGISTER_MODE_MINOR : 0),
	};
	int err;

	if (u->fd < 0)
		return err_set(-EBADF, "uffd: register: userfaultfd is not open");
	if (u->registered)
		return err_set(-EBUSY, "uffd: register: %p+%#llx is already "
			       "registered", (void *)u->base,
			       (unsigned long long)u->len);
	if (!len || ((uintptr_t)base | len) & (PAGE_SIZE - 1))
		return err_set(-EINVAL, "uffd: register: %p+%#llx is not page "
			       "aligned", base, (unsigned long long)len);
	if (ioctl(u->fd, UFFDIO_REGISTER, &reg)) {
		err = errno;
		if (err == EBUSY)
			return err_set(-EBUSY, "uffd: register %p+%#llx: already "
				       "registered with another userfaultfd", base,
				       (unsigned long long)len);
		return err_set(-err, "uffd: register %p+%#llx (MISSING%s): %s "
			       "(must be anonymous, shmem or hugetlbfs memory, "
			       "fully mapped)", base, (unsigned long long)len,
			       minor ? "|MINOR" : "", strerror(err));
	}
	if ((reg.ioctls & need) != need) {
		struct uffdio_range range = reg.range;

		if (ioctl(u->fd, UFFDIO_UNREGISTER, &range))
			pr_debug("uffd: UFFDIO_UNREGISTER: %s", strerror(errno));
		return err_set(-ENOTSUP, "uffd: register %p+%#llx: kernel grants "
			       "ioctls %#llx, umig needs COPY, ZEROPAGE, WAKE%s "
			       "(%#llx): use a 4.3+ kernel (5.14+ for memfd RAM)", base,
			       (unsigned long long)len,
			       (unsigned long long)reg.ioctls,
			       minor ? " and CONTINUE" : "",
			       (unsigned long long)need);
	}
	u->base = base;
	u->len = len;
	u->registered = true;
	u->minor = minor;
	pr_debug("uffd: registered %p+%#llx (%llu pages) for missing%s faults",
		 base, (unsigned long long)len,
		 (unsigned long long)(len / PAGE_SIZE), minor ? " and minor" : "");
	return 0;
}

/*
 * Not registered: nothing to do.  The state is cleared even when the ioctl
 * fails (the mapping may be gone already, which unregisters it too).
 */
int uffd_unregister(struct uffd *u)
{
	struct uffdio_range range = { (uintptr_t)u->base, u->len };
	int ret = 0;

	if (!u->registered)
		return 0;
	if (u->fd >= 0 && ioctl(u->fd, UFFDIO_UNREGISTER, &range))
		ret = err_set(-errno, "uffd: unregister %p+%#llx: %s",
			      (void *)u->base, (unsigned long long)u->len,
			      strerror(errno));
	pr_debug("uffd: unregistered %p+%#llx", (void *)u->base,
		 (unsigned long long)u->len);
	u->registered = false;
	u->minor = false;
	u->base = NULL;
	u->len = 0;
	return ret;
}

/* Closing unregisters everything and wakes every blocked thread. */
void uffd_close(struct uffd *u)
{
	if (u->fd >= 0) {
		close(u->fd);
		pr_debug("uffd: closed fd %d", u->fd);
	}
	*u = (struct uffd){ .fd = -1 };
}

int uffd_read_faults(struct uffd *u, uint64_t *addrs, int max)
{
	struct uffd_msg msg[UFFD_MSG_BATCH];
	uint64_t end = (uintptr_t)u->base + u->len;
	int n = 0, round, i, k, want;
	ssize_t r;

	if (u->fd < 0)
		return err_set(-EBADF, "uffd: read faults: userfaultfd is not open");
	if (max < 0 || (max && !addrs))
		return err_set(-EINVAL, "uffd: read faults: bad buffer");
	/* Bounded: a fault storm must not keep the caller here forever. */
	for (round = 0; n < max && round < 8; round++) {
		want = MIN(max - n, UFFD_MSG_BATCH);
		r = read(u->fd, msg, want * sizeof(msg[0]));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			return err_set(-errno, "uffd: read: %s", strerror(errno));
		}
		if (r == 0 || r % sizeof(msg[0]))
			return err_set(-EIO, "uffd: read returned %zd bytes, not "
				       "a multiple of %zu", r, sizeof(msg[0]));
		k = r / sizeof(msg[0]);
		for (i = 0; i < k; i++) {
			uint64_t a = msg[i].arg.pagefault.address & ~(PAGE_SIZE - 1);

			if (msg[i].event != UFFD_EVENT_PAGEFAULT) {
				pr_debug("uffd: skipping event %u", msg[i].event);
				continue;
			}
			/* The kernel only reports registered ranges; check anyway. */
			if (!u->registered || a < (uintptr_t)u->base || a >= end) {
				pr_warn("uffd: fault at %#llx outside %p+%#llx, "
					"ignored", (unsigned long long)a,
					(void *)u->base, (unsigned long long)u->len);
				continue;
			}
			addrs[n++] = a;
			pr_debug("uffd: %s fault at +%#llx",
				 msg[i].arg.pagefault.flags &
				 UFFD_PAGEFAULT_FLAG_WRITE ? "write" : "read",
				 (unsigned long long)(a - (uintptr_t)u->base));
		}
		if (k < want)
			break;	/* drained */
	}
	return n;
}

int uffd_wake(struct uffd *u, uint64_t off, uint64_t len)
{
	struct uffdio_range range = { (uintptr_t)u->base + off, len };

	if (u->fd < 0)
		return err_set(-EBADF, "uffd: wake: userfaultfd is not open");
	/* len 0 would mean "wake everything" to the kernel: refuse it. */
	if (!u->registered || !len || (off | len) & (PAGE_SIZE - 1) ||
	    off > u->len || len > u->len - off)
		return err_set(-EINVAL, "uffd: wake +%#llx+%#llx: outside the "
			       "registered range or unaligned",
			       (unsigned long long)off, (unsigned long long)len);
	if (ioctl(u->fd, UFFDIO_WAKE, &range))
		return err_set(-errno, "uffd: wake +%#llx+%#llx: %s",
			       (unsigned long long)off, (unsigned long long)len,
			       strerror(errno));
	return 0;
}

/* ---- placement ------------------------------------------------------------ */

enum uffd_op { UFFD_OP_COPY, UFFD_OP_ZERO, UFFD_OP_CONTINUE };

/*
 * One UFFDIO_COPY (from src), UFFDIO_ZEROPAGE or UFFDIO_CONTINUE of
 * npages at off.  Returns 0 when all were placed, else the errno; *bytes
 * is what the kernel reported placed before it stopped (<= 0: nothing).
 */
static int uffd_fill_once(struct uffd *u, enum uffd_op op, uint64_t off, const uint8_t *src,
			  uint64_t npages, int64_t *bytes)
{
	uint64_t dst = (uintptr_t)u->base + off, len = npages * PAGE_SIZE;
	int ret;

	if (op == UFFD_OP_COPY) {
		struct uffdio_copy c = { .dst = dst, .src = (uintptr_t)src,
					 .len = len, .mode = 0 };

		ret = ioctl(u->fd, UFFDIO_COPY, &c);
		*bytes = c.copy;
	} else if (op == UFFD_OP_ZERO) {
		struct uffdio_zeropage z = { .range = { dst, len }, .mode = 0 };

		ret = ioctl(u->fd, UFFDIO_ZEROPAGE, &z);
		*bytes = z.zeropage;
	} else {
		struct uffdio_continue c = { .range = { dst, len }, .mode = 0 };

		ret = ioctl(u->fd, UFFDIO_CONTINUE, &c);
		*bytes = c.mapped;
	}
	if (!ret) {
		*bytes = len;
		return 0;
	}
	return errno;
}

static int uffd_check_run(const struct uffd *u, uint64_t off, uint64_t npages,
			  const char *what)
{
	if (u->fd < 0)
		return err_set(-EBADF, "uffd: %s: userfaultfd is not open", what);
	if (!u->registered || off & (PAGE_SIZE - 1) || off > u->len ||
	    npages > (u->len - off) / PAGE_SIZE)
		return err_set(-EINVAL, "uffd: %s +%#llx, %llu pages: outside "
			       "the registered range or unaligned", what,
			       (unsigned long long)off,
			       (unsigned long long)npages);
	return 0;
}

/*
 * Place npages at off, copying from src or zero-filling when src is NULL;
 * see the top of the file for the kernel's answers.  Skipped (present)
 * pages are woken in coalesced ranges: a thread may be blocked on one if
 * its placer used DONTWAKE (umig never does, but a wake is cheap).
 * Iterations are bounded by npages skips plus UFFD_EAGAIN_RETRIES stalls.
 */
static long uffd_fill(struct uffd *u, enum uffd_op op, uint64_t off, const uint8_t *src,
		      uint64_t npages, const char *what)
{
	uint64_t done = 0, placed = 0, wake_from = 0, nwake = 0;
	int retries = 0, stalls = 0, err = uffd_check_run(u, off, npages, what);
	uint64_t t0 = now_ns();
	int64_t bytes;

	if (err)
		return err;
	while (done < npages) {
		err = uffd_fill_once(u, op, off + done * PAGE_SIZE,
				     src ? src + done * PAGE_SIZE : NULL,
				     npages - done, &bytes);
		if (bytes > 0) {
			if (bytes % PAGE_SIZE ||
			    (uint64_t)bytes > (npages - done) * PAGE_SIZE)
				return err_set(-EIO, "uffd: %s: kernel reported "
					       "%lld bytes placed", what,
					       (long long)bytes);
			placed += bytes / PAGE_SIZE;
			done += bytes / PAGE_SIZE;
			retries = 0;
		}
		if (!err)
			continue;
		if (err == EEXIST && done < npages) {
			if (nwake && wake_from + nwake != done) {
				uffd_wake(u, off + wake_from * PAGE_SIZE,
					  nwake * PAGE_SIZE);
				nwake = 0;
			}
			if (!nwake)
				wake_from = done;
			nwake++;
			done++;
			continue;
		}
		if (err == EAGAIN) {
			if (bytes > 0)
				continue;	/* stopped at a present page */
			stalls++;
			if (++retries <= UFFD_EAGAIN_RETRIES) {
				sched_yield();
				continue;
			}
		}
		return err_set(-err, "uffd: %s at +%#llx (page %llu of %llu): %s",
			       what, (unsigned long long)(off + done * PAGE_SIZE),
			       (unsigned long long)done,
			       (unsigned long long)npages, strerror(err));
	}
	if (nwake)
		uffd_wake(u, off + wake_from * PAGE_SIZE, nwake * PAGE_SIZE);
	pr_debug("uffd: %s +%#llx: %llu page(s) placed, %llu already present, %d EAGAIN, %.3f ms",
		 what, (unsigned long long)off, (unsigned long long)placed,
		 (unsigned long long)(npages - placed), stalls, (now_ns() - t0) / 1e6);
	return (long)placed;
}

long uffd_copy(struct uffd *u, uint64_t dst_off, const void *src, uint64_t npages)
{
	if (!src)
		return err_set(-EINVAL, "uffd: copy: no source buffer");
	return uffd_fill(u, UFFD_OP_COPY, dst_off, src, npages, "copy");
}

long uffd_zero(struct uffd *u, uint64_t dst_off, uint64_t npages)
{
	return uffd_fill(u, UFFD_OP_ZERO, dst_off, NULL, npages, "zero");
}

long uffd_continue(struct uffd *u, uint64_t dst_off, uint64_t npages)
{
	if (!u->minor)
		return err_set(-EINVAL, "uffd: continue: the range is not registered for "
			       "minor faults");
	return uffd_fill(u, UFFD_OP_CONTINUE, dst_off, NULL, npages, "continue");
}

/* ---- hugetlbfs RAM (--ram-backing hugetlb) ---------------------------------- */

int uffd_open_huge(struct uffd *u)
{
	int fd;

	*u = (struct uffd){ .fd = -1 };
	/*
	 * Exact addresses (5.18+): without them a fault names its huge page's
	 * start, and the source could not send the faulting 4 KiB page first.
	 */
	fd = uffd_fd_new(UFFD_FEATURE_MINOR_HUGETLBFS | UFFD_FEATURE_MISSING_HUGETLBFS,
			 UFFD_FEATURE_EXACT_ADDRESS, NULL);
	if (fd == -ENOTSUP)
		return err_set(-ENOTSUP, "userfaultfd has no missing and minor faults on hugetlbfs "
			       "(Linux 5.13+): use --ram-backing anon for post-copy");
	if (fd < 0)
		return fd;
	u->fd = fd;
	return 0;
}

/*
 * MISSING and MINOR on hugetlbfs RAM.  hugetlb has no UFFDIO_ZEROPAGE:
 * umig places every huge page with UFFDIO_CONTINUE once it is assembled
 * in the page cache (mig-huge.c).
 */
int uffd_register_huge(struct uffd *u, void *base, uint64_t len)
{
	const uint64_t need = UFFD_IOCTL_BIT(_UFFDIO_COPY) | UFFD_IOCTL_BIT(_UFFDIO_WAKE) |
			      UFFD_IOCTL_BIT(_UFFDIO_CONTINUE);
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)base, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR,
	};

	if (u->fd < 0 || u->registered)
		return err_set(-EBADF, "uffd: register: userfaultfd not open or already used");
	if (!len || ((uintptr_t)base | len) & (HUGE_PAGE_SIZE - 1))
		return err_set(-EINVAL, "uffd: register %p+%#llx: not 2 MiB aligned", base,
			       (unsigned long long)len);
	if (ioctl(u->fd, UFFDIO_REGISTER, &reg))
		return err_set(-errno, "uffd: register %p+%#llx (hugetlbfs, MISSING|MINOR): %s",
			       base, (unsigned long long)len, strerror(errno));
	if ((reg.ioctls & need) != need) {
		struct uffdio_range range = reg.range;

		if (ioctl(u->fd, UFFDIO_UNREGISTER, &range))
			pr_debug("uffd: UFFDIO_UNREGISTER: %s", strerror(errno));
		return err_set(-ENOTSUP, "uffd: hugetlbfs RAM: kernel grants ioctls %#llx, umig "
			       "needs COPY, WAKE and CONTINUE", (unsigned long long)reg.ioctls);
	}
	u->base = base;
	u->len = len;
	u->registered = true;
	u->minor = true;
	pr_debug("uffd: registered %p+%#llx (hugetlbfs) for missing and minor faults", base,
		 (unsigned long long)len);
	return 0;
}

/*
 * Map the huge page at off (its data is in the page cache) and wake its
 * waiters.  EEXIST (mapped already): wake, in case a fault raced.
 * EAGAIN (the mapping changed under the ioctl): retry, bounded.
 */
int uffd_continue_huge(struct uffd *u, uint64_t off)
{
	struct uffdio_continue c = {
		.range = { (uintptr_t)u->base + off, HUGE_PAGE_SIZE }, .mode = 0 };

	if (u->fd < 0 || !u->registered || off & (HUGE_PAGE_SIZE - 1) ||
	    off >= u->len)
		return err_set(-EINVAL, "uffd: continue huge page +%#llx: outside or unaligned",
			       (unsigned long long)off);
	for (int tries = 0; ioctl(u->fd, UFFDIO_CONTINUE, &c); tries++) {
		if (errno == EEXIST)
			return uffd_wake(u, off, HUGE_PAGE_SIZE);
		if (errno != EAGAIN || tries >= UFFD_EAGAIN_RETRIES)
			return err_set(-errno, "uffd: continue huge page +%#llx: %s",
				       (unsigned long long)off, strerror(errno));
		c.mapped = 0;
		sched_yield();
	}
	return 0;
}
