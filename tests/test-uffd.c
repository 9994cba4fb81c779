/*
 * test-uffd.c - userfaultfd placement (uffd.c) and dirty tracking
 * (dirty.c) against the real kernel.
 *
 * Missing mode: threads fault on a registered mapping and block in the
 * kernel; the test's fault loop reads the faults and places pages the way
 * the destination's fault thread does.  Placement of runs, the EEXIST skip
 * and the wake after it are checked page by page.
 *
 * Dirty tracking: a 64 MiB anonymous mapping (4 KiB pages) with pages
 * written before tracking, pages only read (zero page) and pages never
 * touched; every round must report exactly the pages written in it.
 *
 * A host without userfaultfd, WP_ASYNC or PAGEMAP_SCAN skips with the
 * reason; any other failure to start is a failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"
#include "umig/bitmap.h"
#include "umig/compat.h"
#include "umig/log.h"
#include "umig/uffd.h"
#include "umig/util.h"

#define T_DIRTY_LEN	(64ull << 20)
#define T_DIRTY_PAGES	(T_DIRTY_LEN / PAGE_SIZE)


/* Probed once: why userfaultfd / dirty tracking cannot be used, or "". */
static char t_no_uffd[512];
static char t_no_dirty[512];

static int t_setup(void **state)
{
	struct dirty_tracker d;
	struct uffd u;
	void *p;
	int ret;

	(void)state;
	log_init_from_env();	/* UMIG_DEBUG=1 traces every placement */
	ret = uffd_open(&u);
	if (ret)
		snprintf(t_no_uffd, sizeof(t_no_uffd), "%s", err_msg(ret));
	uffd_close(&u);
	p = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	/* Only "the kernel lacks it" is a skip; other errors fail the tests. */
	ret = dirty_start(&d, p, PAGE_SIZE);
	if (ret == -ENOTSUP || ret == -EPERM || ret == -ENOSYS)
		snprintf(t_no_dirty, sizeof(t_no_dirty), "%s", err_msg(ret));
	dirty_stop(&d);
	munmap(p, PAGE_SIZE);
	return 0;
}

static uint8_t *t_map(uint64_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	/* 4 KiB pages, as guest RAM: THPs would be tracked 2 MiB at a time. */
	assert_int_equal(madvise(p, len, MADV_NOHUGEPAGE), 0);
	return p;
}

/* Page i of a source buffer is filled with t_byte(i, seed). */
static uint8_t t_byte(uint64_t i, unsigned seed)
{
	return (uint8_t)(i * 37 + seed * 101 + 1) ?: 0xff;
}

static uint8_t *t_src(uint64_t npages, unsigned seed)
{
	uint8_t *s = t_map(npages * PAGE_SIZE);

	for (uint64_t i = 0; i < npages; i++)
		memset(s + i * PAGE_SIZE, t_byte(i, seed), PAGE_SIZE);
	return s;
}

/* Every byte of page p equals v. */
static bool t_page_is(const uint8_t *p, uint8_t v)
{
	for (uint64_t i = 0; i < PAGE_SIZE; i++)
		if (p[i] != v)
			return false;
	return true;
}

static void t_open_registered(struct uffd *u, uint8_t *mem, uint64_t len)
{
	t_skip_unless(!t_no_uffd[0], "%s\n", t_no_uffd);
	assert_int_equal(uffd_open(u), 0);
	assert_int_equal(uffd_register_missing(u, mem, len), 0);
}

static uint64_t t_ms(void)
{
	return now_ns() / 1000000;
}

/* ---- missing mode: faults from threads --------------------------------- */

#define T_FAULT_PAGES	32

/*
 * Page i: i%4 == 0 read then written, 1 written first, 2 only read,
 * 3 written first.  Even pages are placed with a pattern (uffd_copy),
 * odd ones as zero pages (uffd_zero).
 */
struct t_toucher {
	uint8_t *mem;
	int npages;
	bool reverse;		/* the second thread walks backwards, reads only */
	uint8_t seen[T_FAULT_PAGES];
	int done;		/* __atomic */
};

static uint8_t t_fault_expect(int i)
{
	return i % 2 ? 0 : t_byte(i, 1);
}

static void *t_touch(void *arg)
{
	struct t_toucher *t = arg;

	for (int k = 0; k < t->npages; k++) {
		int i = t->reverse ? t->npages - 1 - k : k;
		volatile uint8_t *pg = t->mem + i * PAGE_SIZE;

		if (!t->reverse && (i % 4 == 1 || i % 4 == 3))
			pg[0] = 0xee;		/* write fault on a missing page */
		t->seen[i] = pg[100];		/* read fault (or present) */
		if (!t->reverse && i % 4 == 0)
			pg[0] = 0xee;
	}
	__atomic_store_n(&t->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Serve faults until both threads are done; returns pages placed. */
static long t_serve(struct uffd *u, const uint8_t *src, struct t_toucher *t,
		    int nt, long *faults)
{
	uint64_t addrs[16], deadline = t_ms() + 10000;
	struct pollfd pfd = { .fd = u->fd, .events = POLLIN };
	long placed = 0, r;
	int n, i, done;

	*faults = 0;
	for (;;) {
		for (done = 0, i = 0; i < nt; i++)
			done += __atomic_load_n(&t[i].done, __ATOMIC_ACQUIRE);
		if (done == nt)
			return placed;
		assert_true(t_ms() < deadline);
		poll(&pfd, 1, 100);
		n = uffd_read_faults(u, addrs, ARRAY_SIZE(addrs));
		assert_true(n >= 0);
		for (i = 0; i < n; i++) {
			uint64_t off = addrs[i] - (uintptr_t)u->base;
			uint64_t pg = off / PAGE_SIZE;

			assert_true(addrs[i] % PAGE_SIZE == 0);
			assert_true(pg < T_FAULT_PAGES);
			if (pg % 2)
				r = uffd_zero(u, off, 1);
			else
				r = uffd_copy(u, off, src + off, 1);
			/* 0: the other thread's fault got there first */
			assert_true(r == 0 || r == 1);
			placed += r;
			(*faults)++;
		}
	}
}

static void test_faults_are_served(void **state)
{
	struct t_toucher t[2];
	uint8_t *mem = t_map(T_FAULT_PAGES * PAGE_SIZE);
	uint8_t *src = t_src(T_FAULT_PAGES, 1);
	pthread_t th[2];
	struct uffd u;
	long placed, faults;

	(void)state;
	t_open_registered(&u, mem, T_FAULT_PAGES * PAGE_SIZE);
	for (int k = 0; k < 2; k++) {
		t[k] = (struct t_toucher){ .mem = mem, .npages = T_FAULT_PAGES,
					   .reverse = k == 1 };
		assert_int_equal(pthread_create(&th[k], NULL, t_touch, &t[k]), 0);
	}
	placed = t_serve(&u, src, t, 2, &faults);
	for (int k = 0; k < 2; k++)
		assert_int_equal(pthread_join(th[k], NULL), 0);
	/* each page placed exactly once, whoever faulted on it */
	assert_int_equal(placed, T_FAULT_PAGES);
	assert_true(faults >= T_FAULT_PAGES);
	for (int i = 0; i < T_FAULT_PAGES; i++) {
		uint8_t *pg = mem + i * PAGE_SIZE;

		assert_int_equal(t[0].seen[i], t_fault_expect(i));
		assert_int_equal(t[1].seen[i], t_fault_expect(i));
		assert_int_equal(pg[0], i % 4 == 2 ? t_fault_expect(i) : 0xee);
		assert_int_equal(pg[1], t_fault_expect(i));
		assert_int_equal(pg[PAGE_SIZE - 1], t_fault_expect(i));
	}
	/* nothing left pending */
	assert_int_equal(uffd_read_faults(&u, (uint64_t[4]){ 0 }, 4), 0);
	uffd_close(&u);
	munmap(mem, T_FAULT_PAGES * PAGE_SIZE);
	munmap(src, T_FAULT_PAGES * PAGE_SIZE);
}

/*
 * A thread blocked on a page that another placer filled with DONTWAKE is
 * woken by our uffd_copy(), which finds the page present (EEXIST).
 */
static void test_eexist_wakes_waiter(void **state)
{
	uint8_t *mem = t_map(4 * PAGE_SIZE), *src = t_src(4, 2);
	struct t_toucher t = { .mem = mem, .npages = 4 };
	struct pollfd pfd;
	uint64_t addr = 0;
	struct uffdio_copy c;
	struct uffd u;
	pthread_t th;
	int n;

	(void)state;
	t_open_registered(&u, mem, 4 * PAGE_SIZE);
	/* page 0 faults first (read, then write): the thread blocks there */
	assert_int_equal(pthread_create(&th, NULL, t_touch, &t), 0);
	pfd = (struct pollfd){ .fd = u.fd, .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	n = uffd_read_faults(&u, &addr, 1);
	assert_int_equal(n, 1);
	assert_true(addr == (uintptr_t)mem);
	c = (struct uffdio_copy){ .dst = addr, .src = (uintptr_t)src,
				  .len = PAGE_SIZE,
				  .mode = UFFDIO_COPY_MODE_DONTWAKE };
	assert_int_equal(ioctl(u.fd, UFFDIO_COPY, &c), 0);
	usleep(50 * 1000);
	/* still blocked: present but not woken; and it wrote nothing yet */
	assert_int_equal(mem[0], t_byte(0, 2));
	assert_int_equal(uffd_copy(&u, 0, src, 1), 0);
	/* woken: it goes on to fault on page 1, which we serve */
	assert_int_equal(poll(&pfd, 1, 5000), 1);
	assert_int_equal(uffd_read_faults(&u, &addr, 1), 1);
	assert_true(addr == (uintptr_t)mem + PAGE_SIZE);
	/* and now the rest, so that the thread can finish */
	assert_int_equal(uffd_zero(&u, PAGE_SIZE, 3), 3);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(t.seen[0], t_byte(0, 2));
	assert_int_equal(mem[0], 0xee);
	uffd_close(&u);
	munmap(mem, 4 * PAGE_SIZE);
	munmap(src, 4 * PAGE_SIZE);
}

/* ---- missing mode: runs ------------------------------------------------ */

static void test_copy_run(void **state)
{
	uint8_t *mem = t_map(128 * PAGE_SIZE);
	uint8_t *a = t_src(128, 3), *b = t_src(128, 4);
	struct uffd u;

	(void)state;
	t_open_registered(&u, mem, 128 * PAGE_SIZE);
	assert_int_equal(uffd_copy(&u, 0, a, 64), 64);
	assert_memory_equal(mem, a, 64 * PAGE_SIZE);
	/* overlapping run: 60..63 are present, 64..75 are new */
	assert_int_equal(uffd_copy(&u, 60 * PAGE_SIZE, b + 60 * PAGE_SIZE, 16), 12);
	assert_memory_equal(mem, a, 64 * PAGE_SIZE);
	assert_memory_equal(mem + 64 * PAGE_SIZE, b + 64 * PAGE_SIZE,
			    12 * PAGE_SIZE);
	/* all present: nothing placed */
	assert_int_equal(uffd_copy(&u, 0, b, 76), 0);
	assert_memory_equal(mem, a, 64 * PAGE_SIZE);
	assert_int_equal(uffd_copy(&u, 0, b, 0), 0);
	/* unaligned source is fine (the kernel copies from user memory) */
	assert_int_equal(uffd_copy(&u, 100 * PAGE_SIZE, b + 7, 1), 1);
	assert_memory_equal(mem + 100 * PAGE_SIZE, b + 7, PAGE_SIZE);
	uffd_close(&u);
	munmap(mem, 128 * PAGE_SIZE);
	munmap(a, 128 * PAGE_SIZE);
	munmap(b, 128 * PAGE_SIZE);
}

/* Present pages scattered in a run, including its first and last page. */
static void test_copy_skips_present(void **state)
{
	static const int present[] = { 0, 6, 16, 17, 18, 40, 63 };
	uint8_t *mem = t_map(64 * PAGE_SIZE);
	uint8_t *a = t_src(64, 5), *b = t_src(64, 6);
	struct uffd u;
	size_t k;

	(void)state;
	t_open_registered(&u, mem, 64 * PAGE_SIZE);
	for (k = 0; k < ARRAY_SIZE(present); k++)
		assert_int_equal(uffd_copy(&u, present[k] * PAGE_SIZE,
					   a + present[k] * PAGE_SIZE, 1), 1);
	assert_int_equal(uffd_copy(&u, 0, b, 64), 64 - ARRAY_SIZE(present));
	for (int i = 0, j = 0; i < 64; i++) {
		bool old = j < (int)ARRAY_SIZE(present) && present[j] == i;

		assert_true(t_page_is(mem + i * PAGE_SIZE,
				      old ? t_byte(i, 5) : t_byte(i, 6)));
		j += old;
	}
	uffd_close(&u);
	munmap(mem, 64 * PAGE_SIZE);
	munmap(a, 64 * PAGE_SIZE);
	munmap(b, 64 * PAGE_SIZE);
}

static void test_zero_skips_present(void **state)
{
	static const int present[] = { 0, 5, 6, 31 };
	uint8_t *mem = t_map(32 * PAGE_SIZE), *a = t_src(32, 7);
	struct uffd u;
	size_t k;

	(void)state;
	t_open_registered(&u, mem, 32 * PAGE_SIZE);
	for (k = 0; k < ARRAY_SIZE(present); k++)
		assert_int_equal(uffd_copy(&u, present[k] * PAGE_SIZE,
					   a + present[k] * PAGE_SIZE, 1), 1);
	assert_int_equal(uffd_zero(&u, 0, 32), 32 - ARRAY_SIZE(present));
	assert_int_equal(uffd_zero(&u, 0, 32), 0);
	for (int i = 0; i < 32; i++) {
		bool old = i == 0 || i == 5 || i == 6 || i == 31;

		assert_true(t_page_is(mem + i * PAGE_SIZE, old ? t_byte(i, 7) : 0));
	}
	/* a zero page is writable like any other (copy on write) */
	mem[PAGE_SIZE] = 1;
	assert_int_equal(mem[PAGE_SIZE], 1);
	uffd_close(&u);
	munmap(mem, 32 * PAGE_SIZE);
	munmap(a, 32 * PAGE_SIZE);
}

static void test_read_faults_empty(void **state)
{
	uint8_t *mem = t_map(4 * PAGE_SIZE);
	uint64_t addrs[8];
	struct uffd u;

	(void)state;
	t_open_registered(&u, mem, 4 * PAGE_SIZE);
	assert_int_equal(uffd_read_faults(&u, addrs, ARRAY_SIZE(addrs)), 0);
	assert_int_equal(uffd_read_faults(&u, addrs, 0), 0);
	assert_int_equal(uffd_read_faults(&u, NULL, 1), -EINVAL);
	uffd_close(&u);
	munmap(mem, 4 * PAGE_SIZE);
}

static void test_bad_ranges(void **state)
{
	uint8_t *mem = t_map(8 * PAGE_SIZE), *src = t_src(8, 8);
	struct uffd u;

	(void)state;
	t_open_registered(&u, mem, 4 * PAGE_SIZE);
	assert_int_equal(uffd_copy(&u, 4 * PAGE_SIZE, src, 1), -EINVAL);
	assert_int_equal(uffd_copy(&u, 2 * PAGE_SIZE, src, 3), -EINVAL);
	assert_int_equal(uffd_copy(&u, 1, src, 1), -EINVAL);
	assert_int_equal(uffd_copy(&u, 0, NULL, 1), -EINVAL);
	assert_int_equal(uffd_copy(&u, 0, src, UINT64_MAX / 2), -EINVAL);
	assert_int_equal(uffd_zero(&u, UINT64_MAX & ~(PAGE_SIZE - 1), 1), -EINVAL);
	assert_int_equal(uffd_wake(&u, 0, 0), -EINVAL);
	assert_int_equal(uffd_wake(&u, 0, 5 * PAGE_SIZE), -EINVAL);
	assert_int_equal(uffd_wake(&u, 0, 4 * PAGE_SIZE), 0);
	/* nothing was placed by the refused calls */
	assert_int_equal(uffd_zero(&u, 0, 4), 4);
	uffd_close(&u);
	munmap(mem, 8 * PAGE_SIZE);
	munmap(src, 8 * PAGE_SIZE);
}

static void test_lifecycle(void **state)
{
	uint8_t *mem = t_map(4 * PAGE_SIZE), *src = t_src(1, 9);
	struct uffd u = { .fd = -1 };
	uint64_t addr;

	(void)state;
	t_skip_unless(!t_no_uffd[0], "%s\n", t_no_uffd);
	uffd_close(&u);
	uffd_close(&u);
	assert_int_equal(uffd_unregister(&u), 0);
	assert_int_equal(uffd_open(&u), 0);
	assert_true(u.fd >= 0);
	assert_int_equal(uffd_register_missing(&u, mem + 1, PAGE_SIZE), -EINVAL);
	assert_int_equal(uffd_register_missing(&u, mem, 0), -EINVAL);
	assert_int_equal(uffd_register_missing(&u, mem, 4 * PAGE_SIZE), 0);
	assert_int_equal(uffd_register_missing(&u, mem, 4 * PAGE_SIZE), -EBUSY);
	assert_int_equal(uffd_unregister(&u), 0);
	assert_false(u.registered);
	assert_int_equal(uffd_unregister(&u), 0);
	/* unregistered: placing is refused, the memory faults normally */
	assert_int_equal(uffd_copy(&u, 0, src, 1), -EINVAL);
	assert_int_equal(mem[0], 0);
	assert_int_equal(uffd_register_missing(&u, mem, 4 * PAGE_SIZE), 0);
	uffd_close(&u);
	assert_int_equal(u.fd, -1);
	assert_false(u.registered);
	uffd_close(&u);
	/* closing unregistered too: touching the rest does not block */
	mem[3 * PAGE_SIZE] = 1;
	/* every operation on a closed uffd fails cleanly */
	assert_int_equal(uffd_copy(&u, 0, src, 1), -EBADF);
	assert_non_null(strstr(err_msg(-EBADF), "not open"));
	assert_int_equal(uffd_zero(&u, 0, 1), -EBADF);
	assert_int_equal(uffd_wake(&u, 0, PAGE_SIZE), -EBADF);
	assert_int_equal(uffd_read_faults(&u, &addr, 1), -EBADF);
	assert_int_equal(uffd_register_missing(&u, mem, PAGE_SIZE), -EBADF);
	assert_int_equal(uffd_unregister(&u), 0);
	munmap(mem, 4 * PAGE_SIZE);
	munmap(src, PAGE_SIZE);
}

#if defined(__x86_64__)
#define T_AUDIT_ARCH	AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define T_AUDIT_ARCH	AUDIT_ARCH_AARCH64
#endif

/*
 * userfaultfd(2) refused (here by a seccomp filter, as a container policy
 * would): uffd_open() gets its fd from /dev/userfaultfd instead.
 */
static void test_open_falls_back_to_device(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	t_skip_unless(!t_no_uffd[0], "%s\n", t_no_uffd);
	t_skip_unless(geteuid() == 0 && access("/dev/userfaultfd", F_OK) == 0,
		      "needs root and /dev/userfaultfd (Linux 6.1+)\n");
#ifndef T_AUDIT_ARCH
	t_skip_unless(false, "no seccomp arch value for this CPU\n");
#else
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
				 offsetof(struct seccomp_data, arch)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, T_AUDIT_ARCH, 1, 0),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
				 offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = { ARRAY_SIZE(f), f };
		uint8_t *mem = mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		uint8_t src[PAGE_SIZE];
		struct uffd u;

		memset(src, 0x42, sizeof(src));
		if (mem == MAP_FAILED || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
			_exit(10);
		if (syscall(SYS_userfaultfd, O_CLOEXEC) >= 0 || errno != EPERM)
			_exit(11);
		if (uffd_open(&u) || uffd_register_missing(&u, mem, PAGE_SIZE))
			_exit(12);
		if (uffd_copy(&u, 0, src, 1) != 1 || mem[100] != 0x42)
			_exit(13);
		uffd_close(&u);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
#endif
}

/* ---- dirty tracking ----------------------------------------------------- */

/*
 * The initial state of the 64 MiB mapping: every 7th page of the first
 * half written, every 11th (+3) of the third quarter only read (mapped
 * to the zero page), the rest never touched.
 */
enum t_kind { T_NEVER, T_WRITTEN, T_READ };

static enum t_kind t_kind(uint64_t i)
{
	if (i < T_DIRTY_PAGES / 2 && i % 7 == 0)
		return T_WRITTEN;
	if (i >= T_DIRTY_PAGES / 2 && i < 3 * T_DIRTY_PAGES / 4 && i % 11 == 3)
		return T_READ;
	return T_NEVER;
}

struct t_dirty {
	uint8_t *mem;
	uint8_t *shadow;	/* expected byte at t_off(i) of page i */
	bool *touched;		/* page i was read or written by the test */
	struct dirty_tracker d;
	struct bitmap b;
};

/* Where page i is written: one byte, so one write is one page write. */
static uint64_t t_off(uint64_t i)
{
	return i * PAGE_SIZE + (i * 131) % PAGE_SIZE;
}

static void t_write(struct t_dirty *t, uint64_t i, unsigned seed)
{
	t->mem[t_off(i)] = t->shadow[i] = t_byte(i, seed);
	t->touched[i] = true;
}

static void t_read(struct t_dirty *t, uint64_t i)
{
	volatile uint8_t v = t->mem[t_off(i)];

	(void)v;
	t->touched[i] = true;
}

static void t_dirty_init(struct t_dirty *t)
{
	int ret;

	t_skip_unless(!t_no_dirty[0], "%s\n", t_no_dirty);
	t->mem = t_map(T_DIRTY_LEN);
	t->shadow = calloc(T_DIRTY_PAGES, 1);
	t->touched = calloc(T_DIRTY_PAGES, sizeof(bool));
	assert_non_null(t->shadow);
	assert_non_null(t->touched);
	for (uint64_t i = 0; i < T_DIRTY_PAGES; i++) {
		if (t_kind(i) == T_WRITTEN)
			t_write(t, i, 10);
		else if (t_kind(i) == T_READ)
			t_read(t, i);
	}
	ret = dirty_start(&t->d, t->mem, T_DIRTY_LEN);
	if (ret)
		print_message("dirty_start: %s\n", err_msg(ret));
	assert_int_equal(ret, 0);
	assert_int_equal(bitmap_init(&t->b, T_DIRTY_PAGES), 0);
}

static void t_dirty_fini(struct t_dirty *t)
{
	dirty_stop(&t->d);
	bitmap_free(&t->b);
	munmap(t->mem, T_DIRTY_LEN);
	free(t->shadow);
	free(t->touched);
}

/* Collect, and check that exactly pages[0..n) were reported. */
static void t_expect(struct t_dirty *t, const uint64_t *pages, size_t n)
{
	long got;

	bitmap_clear_all(&t->b);
	got = dirty_collect(&t->d, &t->b);
	if (got < 0)
		print_message("dirty_collect: %s\n", err_msg(got));
	assert_int_equal(got, n);
	assert_int_equal(bitmap_count(&t->b), n);
	for (size_t k = 0; k < n; k++)
		assert_true(bitmap_test(&t->b, pages[k]));
}

/* Every page still holds what the test wrote, and is writable. */
static void t_check_intact(struct t_dirty *t)
{
	for (uint64_t i = 0; i < T_DIRTY_PAGES; i++)
		assert_int_equal(t->mem[t_off(i)], t->shadow[i]);
	for (uint64_t i = 0; i < T_DIRTY_PAGES; i++)
		t->mem[i * PAGE_SIZE + PAGE_SIZE - 1 - (i * 131) % PAGE_SIZE] = 0x5a;
	for (uint64_t i = 0; i < T_DIRTY_PAGES; i++)
		assert_int_equal(t->mem[i * PAGE_SIZE + PAGE_SIZE - 1 -
					(i * 131) % PAGE_SIZE], 0x5a);
}

/*
 * After dirty_stop no pte carries the uffd-wp bit (pagemap bit 57, also
 * set for a uffd-wp marker), and the pages the test never touched were not
 * populated by the tracker.
 */
static void t_check_untracked(struct t_dirty *t)
{
	uint64_t *pm = malloc(T_DIRTY_PAGES * sizeof(*pm));
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	off_t at = (uintptr_t)t->mem / PAGE_SIZE * sizeof(*pm);

	assert_non_null(pm);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, pm, T_DIRTY_PAGES * sizeof(*pm), at),
			 T_DIRTY_PAGES * sizeof(*pm));
	for (uint64_t i = 0; i < T_DIRTY_PAGES; i++) {
		assert_false(pm[i] >> 57 & 1);
		if (!t->touched[i])
			assert_false(pm[i] >> 63 & 1);
	}
	close(fd);
	free(pm);
}

static void test_dirty_rounds(void **state)
{
	/* first and last page, each kind of page, a run, a repeat */
	static const uint64_t s1[] = {
		0, 1, 7, 700, 5000, 8198, 8201, 12000, 16000,
		T_DIRTY_PAGES - 1,
	};
	static const uint64_t s2[] = { 1, 14, 8209, 9000, 9001, 9002, 9003 };
	struct t_dirty t;
	bool kinds[3] = { false };

	(void)state;
	for (size_t k = 0; k < ARRAY_SIZE(s1); k++)
		kinds[t_kind(s1[k])] = true;
	assert_true(kinds[T_NEVER] && kinds[T_WRITTEN] && kinds[T_READ]);
	t_dirty_init(&t);
	/* nothing written since start: nothing reported */
	t_expect(&t, NULL, 0);
	for (size_t k = 0; k < ARRAY_SIZE(s1); k++)
		t_write(&t, s1[k], 11);
	t_write(&t, 5000, 12);		/* twice: still one page */
	t_expect(&t, s1, ARRAY_SIZE(s1));
	t_expect(&t, NULL, 0);
	/* reading never-touched pages maps the zero page: not a write */
	for (uint64_t i = 100; i < 110; i++)
		t_read(&t, T_DIRTY_PAGES - i);
	t_expect(&t, NULL, 0);
	for (size_t k = 0; k < ARRAY_SIZE(s2); k++)
		t_write(&t, s2[k], 13);
	t_expect(&t, s2, ARRAY_SIZE(s2));
	t_expect(&t, NULL, 0);
	dirty_stop(&t.d);
	dirty_stop(&t.d);		/* idempotent */
	t_check_untracked(&t);
	t_check_intact(&t);
	t_dirty_fini(&t);
}

/* 8192 separate regions: more than one scan's worth (4096). */
static void test_dirty_many_regions(void **state)
{
	struct t_dirty t;
	uint64_t *pages = malloc(T_DIRTY_PAGES / 2 * sizeof(*pages));
	size_t n = 0;

	(void)state;
	assert_non_null(pages);
	t_dirty_init(&t);
	t_expect(&t, NULL, 0);
	for (uint64_t i = 1; i < T_DIRTY_PAGES; i += 2) {
		t_write(&t, i, 14);
		pages[n++] = i;
	}
	t_expect(&t, pages, n);
	for (uint64_t i = 0; i + 1 < T_DIRTY_PAGES; i += 2)
		assert_false(bitmap_test(&t.b, i));
	t_expect(&t, NULL, 0);
	t_dirty_fini(&t);
	free(pages);
}

/* Every page written: all 16384 reported, in few regions. */
static void test_dirty_all(void **state)
{
	struct t_dirty t;
	uint64_t t0, t1;
	long got;

	(void)state;
	t_dirty_init(&t);
	t_expect(&t, NULL, 0);
	t0 = now_ns();
	for (uint64_t i = 0; i < T_DIRTY_PAGES; i++)
		t_write(&t, i, 15);
	t1 = now_ns();
	got = dirty_collect(&t.d, &t.b);
	assert_int_equal(got, T_DIRTY_PAGES);
	assert_int_equal(bitmap_count(&t.b), T_DIRTY_PAGES);
	print_message("info: first write after protect %.2f us/page, "
		      "collect of %llu written pages %.2f ms\n",
		      (t1 - t0) / 1e3 / T_DIRTY_PAGES,
		      (unsigned long long)T_DIRTY_PAGES,
		      (now_ns() - t1) / 1e6);
	t_expect(&t, NULL, 0);
	dirty_stop(&t.d);
	t_check_untracked(&t);
	t_check_intact(&t);
	t_dirty_fini(&t);
}

/* Writes from another thread, while we collect, are all caught. */
struct t_writer {
	struct t_dirty *t;
	uint64_t first, step, n;
	int done;		/* __atomic */
};

static void *t_write_thread(void *arg)
{
	struct t_writer *w = arg;

	for (uint64_t k = 0; k < w->n; k++) {
		t_write(w->t, (w->first + k * w->step) % T_DIRTY_PAGES, 16);
		if (k % 256 == 0)
			sched_yield();
	}
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * Writes from another thread while we collect, as pre-copy does: each
 * round copies the reported pages into a replica, and once the writer has
 * finished and a last round has run, the replica must equal the memory.
 * A page may be reported in two rounds when its write fault races with
 * the scan (the store lands after the re-protect and faults again); that
 * is a resend, never a lost write.  No page outside the written set may
 * be reported.
 */
static void test_dirty_other_thread(void **state)
{
	struct t_dirty t;
	struct t_writer w;
	struct bitmap all;
	uint8_t *replica;
	pthread_t th;
	long got, total = 0;
	int rounds = 0, last;

	(void)state;
	t_dirty_init(&t);
	t_expect(&t, NULL, 0);
	replica = malloc(T_DIRTY_LEN);
	assert_non_null(replica);
	memcpy(replica, t.mem, T_DIRTY_LEN);
	assert_int_equal(bitmap_init(&all, T_DIRTY_PAGES), 0);
	/* 97 is prime to 16384: n distinct pages */
	w = (struct t_writer){ .t = &t, .first = 3, .step = 97, .n = 6000 };
	assert_int_equal(pthread_create(&th, NULL, t_write_thread, &w), 0);
	do {
		last = __atomic_load_n(&w.done, __ATOMIC_ACQUIRE);
		bitmap_clear_all(&t.b);
		got = dirty_collect(&t.d, &t.b);
		assert_true(got >= 0);
		for (uint64_t i = bitmap_next_set(&t.b, 0); i < T_DIRTY_PAGES;
		     i = bitmap_next_set(&t.b, i + 1)) {
			memcpy(replica + i * PAGE_SIZE, t.mem + i * PAGE_SIZE,
			       PAGE_SIZE);
			bitmap_set(&all, i);
		}
		total += got;
		rounds++;
	} while (!last);	/* one full round after the writer finished */
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(memcmp(replica, t.mem, T_DIRTY_LEN), 0);
	assert_int_equal(bitmap_count(&all), w.n);
	for (uint64_t k = 0; k < w.n; k++)
		assert_true(bitmap_test(&all, (w.first + k * w.step) % T_DIRTY_PAGES));
	assert_true(total >= (long)w.n);
	print_message("info: %d rounds while the writer ran, %ld extra "
		      "reports for %llu pages written once\n", rounds,
		      total - (long)w.n, (unsigned long long)w.n);
	t_expect(&t, NULL, 0);
	bitmap_free(&all);
	free(replica);
	dirty_stop(&t.d);
	t_check_intact(&t);
	t_dirty_fini(&t);
}

/* A written page dropped with MADV_DONTNEED changed (to zeroes): reported. */
static void test_dirty_dontneed(void **state)
{
	static const uint64_t one[] = { 4242 };
	struct t_dirty t;

	(void)state;
	t_dirty_init(&t);
	t_write(&t, 4242, 17);
	t_expect(&t, one, 1);
	/* protected again; now drop it */
	assert_int_equal(madvise(t.mem + 4242 * PAGE_SIZE, PAGE_SIZE,
				 MADV_DONTNEED), 0);
	t.shadow[4242] = 0;
	t.touched[4242] = false;
	t_expect(&t, one, 1);
	t_expect(&t, NULL, 0);
	dirty_stop(&t.d);
	t_check_untracked(&t);
	t_check_intact(&t);
	t_dirty_fini(&t);
}

static void test_dirty_misuse(void **state)
{
	uint8_t *mem = t_map(4 * PAGE_SIZE);
	struct dirty_tracker d;
	struct bitmap small;

	(void)state;
	assert_int_equal(dirty_start(&d, mem + 1, PAGE_SIZE), -EINVAL);
	assert_int_equal(d.uffd, -1);
	assert_int_equal(dirty_start(&d, mem, 0), -EINVAL);
	assert_int_equal(dirty_collect(&d, NULL), -EBADF);
	dirty_stop(&d);
	dirty_stop(&d);
	t_skip_unless(!t_no_dirty[0], "%s\n", t_no_dirty);
	assert_int_equal(dirty_start(&d, mem, 4 * PAGE_SIZE), 0);
	assert_int_equal(bitmap_init(&small, 3), 0);
	assert_int_equal(dirty_collect(&d, &small), -EINVAL);
	assert_int_equal(dirty_collect(&d, NULL), -EINVAL);
	bitmap_free(&small);
	dirty_stop(&d);
	assert_int_equal(d.uffd, -1);
	assert_int_equal(d.pagemap_fd, -1);
	assert_null(d.regions);
	assert_int_equal(dirty_collect(&d, NULL), -EBADF);
	dirty_stop(&d);
	munmap(mem, 4 * PAGE_SIZE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_faults_are_served),
		cmocka_unit_test(test_eexist_wakes_waiter),
		cmocka_unit_test(test_copy_run),
		cmocka_unit_test(test_copy_skips_present),
		cmocka_unit_test(test_zero_skips_present),
		cmocka_unit_test(test_read_faults_empty),
		cmocka_unit_test(test_bad_ranges),
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_open_falls_back_to_device),
		cmocka_unit_test(test_dirty_rounds),
		cmocka_unit_test(test_dirty_many_regions),
		cmocka_unit_test(test_dirty_all),
		cmocka_unit_test(test_dirty_other_thread),
		cmocka_unit_test(test_dirty_dontneed),
		cmocka_unit_test(test_dirty_misuse),
	};

	return cmocka_run_group_tests(tests, t_setup, NULL);
}
