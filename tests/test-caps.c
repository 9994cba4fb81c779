/*
 * test-caps.c - caps_probe() tells the truth, and the table reads right.
 *
 * The probe is checked against the kernel directly: what caps_probe()
 * says is there is used for real here (UFFDIO_COPY, UFFDIO_MOVE,
 * PAGEMAP_SCAN through compat.h's definitions, which checks those ABI
 * values too).  A capability the host lacks is a skip with the reason,
 * never a silent pass.  The output and caps_require() tests run on probed
 * results with fields zeroed to stand in for a poorer host.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "t-util.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "umig/caps.h"
#include "umig/compat.h"

/* Every row of the table, by display name and JSON key, in table order. */
static const char *const t_names[] = {
	"userfaultfd", "userfaultfd MISSING", "UFFDIO_ZEROPAGE",
	"userfaultfd WP", "userfaultfd WP_ASYNC", "userfaultfd WP_UNPOPULATED",
	"userfaultfd MOVE", "userfaultfd MINOR_SHMEM", "PAGEMAP_SCAN", "io_uring", "/dev/kvm",
	"RDMA devices",
};
static const char *const t_keys[] = {
	"userfaultfd", "uffd_missing", "uffd_zeropage", "uffd_wp",
	"uffd_wp_async", "uffd_wp_unpopulated", "uffd_move", "uffd_minor_shmem", "pagemap_scan",
	"io_uring", "kvm", "rdma",
};
#define T_ROWS (sizeof(t_names) / sizeof(t_names[0]))

static struct caps t_caps;	/* probed once in the group setup */

static int t_setup(void **state)
{
	(void)state;
	return caps_probe(&t_caps) == 0 ? 0 : -1;
}


static void *t_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(p != MAP_FAILED);
	return p;
}

/* A userfaultfd with the given features enabled, or skip. */
static int t_uffd(uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	assert_true(fd >= 0);
	assert_int_equal(ioctl(fd, UFFDIO_API, &api), 0);
	return fd;
}

static char *t_capture(void (*fn)(const struct caps *, FILE *),
		       int (*jfn)(const struct caps *, FILE *),
		       const struct caps *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	if (fn)
		fn(c, f);
	else
		assert_int_equal(jfn(c, f), 0);
	assert_int_equal(fclose(f), 0);
	return buf;
}

/*
 * compat.h's values are ABI: pin them to the kernel uapi numbers, so a
 * typo cannot hide behind "the probe says MOVE is missing, skip".
 * Decoded with _IOC_*() so the check holds on every architecture.
 */
static void test_compat_matches_uapi(void **state)
{
	(void)state;
	assert_int_equal(UFFD_FEATURE_WP_UNPOPULATED, 1 << 13);
	assert_int_equal(UFFD_FEATURE_POISON, 1 << 14);
	assert_int_equal(UFFD_FEATURE_WP_ASYNC, 1 << 15);
	assert_int_equal(UFFD_FEATURE_MOVE, 1 << 16);
	assert_int_equal(_UFFDIO_MOVE, 0x05);
	assert_int_equal(_UFFDIO_POISON, 0x08);
	assert_int_equal(_IOC_TYPE(UFFDIO_MOVE), 0xAA);
	assert_int_equal(_IOC_NR(UFFDIO_MOVE), 0x05);
	assert_int_equal(_IOC_DIR(UFFDIO_MOVE), _IOC_READ | _IOC_WRITE);
	assert_int_equal(_IOC_SIZE(UFFDIO_MOVE), 40);
	assert_int_equal(offsetof(struct uffdio_move, mode), 24);
	assert_int_equal(offsetof(struct uffdio_move, move), 32);
	assert_int_equal(UFFDIO_MOVE_MODE_DONTWAKE, 1);
	assert_int_equal(UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, 2);
	assert_int_equal(_IOC_NR(UFFDIO_POISON), 0x08);
	assert_int_equal(_IOC_SIZE(UFFDIO_POISON), 32);
	assert_int_equal(_IOC_TYPE(PAGEMAP_SCAN), 'f');
	assert_int_equal(_IOC_NR(PAGEMAP_SCAN), 16);
	assert_int_equal(_IOC_DIR(PAGEMAP_SCAN), _IOC_READ | _IOC_WRITE);
	assert_int_equal(_IOC_SIZE(PAGEMAP_SCAN), 96);
	assert_int_equal(sizeof(struct page_region), 24);
	assert_int_equal(offsetof(struct pm_scan_arg, return_mask), 88);
	assert_int_equal(PAGE_IS_WPALLOWED, 1 << 0);
	assert_int_equal(PAGE_IS_WRITTEN, 1 << 1);
	assert_int_equal(PAGE_IS_FILE, 1 << 2);
	assert_int_equal(PAGE_IS_PRESENT, 1 << 3);
	assert_int_equal(PAGE_IS_SWAPPED, 1 << 4);
	assert_int_equal(PAGE_IS_PFNZERO, 1 << 5);
	assert_int_equal(PAGE_IS_HUGE, 1 << 6);
	assert_int_equal(PAGE_IS_SOFT_DIRTY, 1 << 7);
	assert_int_equal(PAGE_IS_GUARD, 1 << 8);
	assert_int_equal(PM_SCAN_WP_MATCHING, 1 << 0);
	assert_int_equal(PM_SCAN_CHECK_WPASYNC, 1 << 1);
}

static void test_probe_succeeds(void **state)
{
	struct caps c;

	(void)state;
	assert_int_equal(caps_probe(&c), 0);
	assert_int_equal(caps_probe(NULL), -EINVAL);
	/* present <=> no errno recorded */
	assert_true(c.uffd == (c.uffd_errno == 0));
	assert_true(c.pagemap_scan == (c.pagemap_scan_errno == 0));
	assert_true(c.io_uring == (c.io_uring_errno == 0));
	assert_true(c.kvm == (c.kvm_errno == 0));
	assert_true(c.rdma_devices >= 0);
	assert_true(c.kernel[0] != '\0');
	/* a second probe sees the same host */
	assert_true(c.uffd == t_caps.uffd);
	assert_true(c.uffd_features == t_caps.uffd_features);
	assert_true(c.uffd_ioctls == t_caps.uffd_ioctls);
}

static void test_uffd_basics(void **state)
{
	(void)state;
	t_skip_unless(t_caps.uffd, "userfaultfd unavailable (errno %d)\n",
		      t_caps.uffd_errno);
	assert_true(t_caps.uffd_features & UFFD_FEATURE_MISSING_SHMEM);
	assert_true(t_caps.uffd_features & UFFD_FEATURE_MISSING_HUGETLBFS);
	assert_true(t_caps.uffd_ioctls & (1ULL << _UFFDIO_COPY));
	assert_true(t_caps.uffd_ioctls & (1ULL << _UFFDIO_WAKE));
	assert_true(caps_has(&t_caps, "userfaultfd MISSING"));
	assert_true(caps_has(&t_caps, "UFFD_MISSING"));	/* case-insensitive */
	/* WP granted <=> the kernel offered it */
	assert_true(t_caps.uffd_register_wp ==
		    !!(t_caps.uffd_features & UFFD_FEATURE_PAGEFAULT_FLAG_WP));
}

/* "userfaultfd MISSING" present means UFFDIO_COPY fills a registered page. */
static void test_uffd_copy_places_page(void **state)
{
	long psz = sysconf(_SC_PAGESIZE);
	char *dst, *src;
	struct uffdio_register reg;
	struct uffdio_copy cp;
	int fd;

	(void)state;
	t_skip_unless(caps_has(&t_caps, "uffd_missing"), "no UFFDIO_COPY\n");
	fd = t_uffd(0);
	dst = t_map(psz);
	src = t_map(psz);
	memset(src, 0x5a, psz);
	reg = (struct uffdio_register){
		.range = { (uintptr_t)dst, psz },
		.mode = UFFDIO_REGISTER_MODE_MISSING };
	assert_int_equal(ioctl(fd, UFFDIO_REGISTER, &reg), 0);
	cp = (struct uffdio_copy){ .dst = (uintptr_t)dst,
				   .src = (uintptr_t)src, .len = psz };
	assert_int_equal(ioctl(fd, UFFDIO_COPY, &cp), 0);
	assert_int_equal(cp.copy, psz);
	assert_int_equal(dst[0], 0x5a);
	assert_int_equal(dst[psz - 1], 0x5a);
	munmap(dst, psz);
	munmap(src, psz);
	close(fd);
}

/* "userfaultfd MOVE" present means compat.h's UFFDIO_MOVE really moves. */
static void test_uffd_move_moves_page(void **state)
{
	long psz = sysconf(_SC_PAGESIZE);
	char *dst, *src;
	struct uffdio_register reg;
	struct uffdio_move mv;
	int fd;

	(void)state;
	t_skip_unless(caps_has(&t_caps, "uffd_move"),
		      "no UFFDIO_MOVE (needs 6.8+)\n");
	fd = t_uffd(UFFD_FEATURE_MOVE);
	dst = t_map(psz);
	src = t_map(psz);
	memset(src, 0xa5, psz);
	reg = (struct uffdio_register){
		.range = { (uintptr_t)dst, psz },
		.mode = UFFDIO_REGISTER_MODE_MISSING };
	assert_int_equal(ioctl(fd, UFFDIO_REGISTER, &reg), 0);
	assert_true(reg.ioctls & (1ULL << _UFFDIO_MOVE));
	mv = (struct uffdio_move){ .dst = (uintptr_t)dst,
				   .src = (uintptr_t)src, .len = psz };
	assert_int_equal(ioctl(fd, UFFDIO_MOVE, &mv), 0);
	assert_int_equal(mv.move, psz);
	assert_int_equal((unsigned char)dst[0], 0xa5);
	assert_int_equal((unsigned char)src[0], 0);	/* src is a hole now */
	munmap(dst, psz);
	munmap(src, psz);
	close(fd);
}

/* Our own PAGEMAP_SCAN agrees with the probe, and reports what we touched. */
static void test_pagemap_scan_consistent(void **state)
{
	long psz = sysconf(_SC_PAGESIZE);
	struct page_region regs[4];
	struct pm_scan_arg arg;
	char *p = t_map(4 * psz);
	int fd, n, err;

	(void)state;
	p[psz] = 1;	/* only the second page is present */
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	arg = (struct pm_scan_arg){
		.size = sizeof(arg), .start = (uintptr_t)p,
		.end = (uintptr_t)p + 4 * psz, .vec = (uintptr_t)regs,
		.vec_len = 4, .category_mask = PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PRESENT };
	n = ioctl(fd, PAGEMAP_SCAN, &arg);
	err = n < 0 ? errno : 0;
	close(fd);
	assert_true((n >= 0) == t_caps.pagemap_scan);
	assert_int_equal(err, t_caps.pagemap_scan_errno);
	t_skip_unless(t_caps.pagemap_scan, "no PAGEMAP_SCAN (errno %d)\n", err);
	assert_int_equal(n, 1);
	assert_true(regs[0].start == (uintptr_t)p + psz);
	assert_true(regs[0].end == (uintptr_t)p + 2 * psz);
	assert_true(regs[0].categories == PAGE_IS_PRESENT);
	assert_true(arg.walk_end == arg.end);
	munmap(p, 4 * psz);
}

static void test_print_has_every_row(void **state)
{
	struct caps c = t_caps;
	char *out;
	size_t i;

	(void)state;
	out = t_capture(caps_print, NULL, &c);
	for (i = 0; i < T_ROWS; i++)
		assert_non_null(strstr(out, t_names[i]));
	free(out);

	/* a missing row says so, with its errno and its fix */
	c.kvm = false;
	c.kvm_errno = ENOENT;
	out = t_capture(caps_print, NULL, &c);
	assert_non_null(strstr(out, "no (ENOENT)"));
	assert_non_null(strstr(out, "fix: load kvm-intel or kvm-amd"));
	free(out);
}

/* KVM's row shows the API version, and names a wrong one. */
static void test_kvm_row_shows_the_api_version(void **state)
{
	struct caps c = t_caps;
	char *out;

	(void)state;
	c.kvm = true;
	c.kvm_errno = 0;
	c.kvm_api = 12;
	out = t_capture(caps_print, NULL, &c);
	assert_non_null(strstr(out, "yes (API 12)"));
	free(out);
	out = t_capture(NULL, caps_print_json, &c);
	assert_non_null(strstr(out, "\"kvm_api_version\": 12"));
	free(out);
	c.kvm = false;
	c.kvm_errno = EPROTO;
	c.kvm_api = 11;
	out = t_capture(caps_print, NULL, &c);
	assert_non_null(strstr(out, "no (EPROTO)"));
	assert_non_null(strstr(out, "another API version than 12"));
	free(out);
	/* probed here: the API is known exactly when /dev/kvm opened */
	assert_true(t_caps.kvm ? t_caps.kvm_api == 12 : t_caps.kvm_errno != 0);
}

static void test_json_round_trip(void **state)
{
	json_error_t jerr;
	json_t *root, *v, *missing;
	char *out = t_capture(NULL, caps_print_json, &t_caps);
	size_t i;

	(void)state;
	root = json_loads(out, 0, &jerr);
	assert_non_null(root);
	for (i = 0; i < T_ROWS; i++) {
		v = json_object_get(root, t_keys[i]);
		assert_non_null(v);
		assert_true(json_is_boolean(v));
		assert_true(json_is_true(v) == caps_has(&t_caps, t_keys[i]));
	}
	v = json_object_get(root, "uffd_features");
	assert_true(json_is_string(v));
	assert_true(strtoull(json_string_value(v), NULL, 16) == t_caps.uffd_features);
	v = json_object_get(root, "uffd_ioctls");
	assert_true(json_is_string(v));
	assert_true(strtoull(json_string_value(v), NULL, 16) == t_caps.uffd_ioctls);
	assert_int_equal(json_integer_value(json_object_get(root, "rdma_devices")),
			 t_caps.rdma_devices);
	missing = json_object_get(root, "missing");
	assert_true(json_is_object(missing));
	for (i = 0; i < T_ROWS; i++) {
		v = json_object_get(missing, t_keys[i]);
		assert_true(!v == caps_has(&t_caps, t_keys[i]));
		if (v)
			assert_true(json_is_string(json_object_get(v, "fix")));
	}
	json_decref(root);
	free(out);
}

static void test_require_names_missing(void **state)
{
	const char *const want_move[] = { "io_uring", "uffd_move", NULL };
	const char *const want_uffd[] = { "userfaultfd", NULL };
	const char *const want_bad[] = { "warp drive", NULL };
	struct caps c = t_caps;
	char why[512];

	(void)state;
	/* only what the host has: fine */
	assert_int_equal(caps_require(&t_caps, (const char *const[]){ NULL },
				      why, sizeof(why)), 0);

	c.io_uring = true;
	c.uffd = true;
	c.uffd_ioctls |= 1ULL << _UFFDIO_MOVE;
	c.uffd_features &= ~(uint64_t)UFFD_FEATURE_MOVE;
	assert_int_equal(caps_require(&c, want_move, why, sizeof(why)), -ENOTSUP);
	assert_non_null(strstr(why, "userfaultfd MOVE missing: needed for "));
	assert_non_null(strstr(why, "; fix: use a 6.8+ kernel"));

	c = t_caps;
	c.uffd = false;
	c.uffd_errno = EPERM;
	c.is_root = false;
	c.uffd_unprivileged_sysctl = 0;
	assert_int_equal(caps_require(&c, want_uffd, why, sizeof(why)), -ENOTSUP);
	assert_non_null(strstr(why, "userfaultfd missing (EPERM): needed for post-copy"));
	assert_non_null(strstr(why, "fix: run as root, set vm.unprivileged_userfaultfd=1"));
	/* a mode built on userfaultfd gets userfaultfd's fix */
	assert_int_equal(caps_require(&c, want_move, why, sizeof(why)), -ENOTSUP);
	assert_non_null(strstr(why, "vm.unprivileged_userfaultfd=1"));

	c.uffd_errno = ENOSYS;
	assert_int_equal(caps_require(&c, want_uffd, why, sizeof(why)), -ENOTSUP);
	assert_non_null(strstr(why, "CONFIG_USERFAULTFD"));

	assert_int_equal(caps_require(&c, want_bad, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "unknown capability 'warp drive'"));
	assert_int_equal(caps_require(&c, want_uffd, NULL, 0), -ENOTSUP);
}

/*
 * The EPERM path for real: as root with vm.unprivileged_userfaultfd=0, a
 * child that drops to nobody must be refused and told about the sysctl.
 */
static void test_unprivileged_is_refused(void **state)
{
	const char *const want[] = { "userfaultfd", NULL };
	int status;
	pid_t pid;

	(void)state;
	t_skip_unless(geteuid() == 0 && t_caps.uffd &&
		      t_caps.uffd_unprivileged_sysctl == 0,
		      "needs root, userfaultfd and vm.unprivileged_userfaultfd=0\n");
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct caps c;
		char why[512];

		if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
		    setresuid(65534, 65534, 65534))
			_exit(10);
		caps_probe(&c);
		if (c.uffd || c.uffd_errno != EPERM || !c.uffd_sysctl_blocks)
			_exit(11);
		if (!c.uffd_user_mode_only)	/* 5.11+ allows it */
			_exit(12);
		if (caps_require(&c, want, why, sizeof(why)) != -ENOTSUP ||
		    !strstr(why, "run as root, set vm.unprivileged_userfaultfd=1"))
			_exit(13);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_compat_matches_uapi),
		cmocka_unit_test(test_probe_succeeds),
		cmocka_unit_test(test_uffd_basics),
		cmocka_unit_test(test_uffd_copy_places_page),
		cmocka_unit_test(test_uffd_move_moves_page),
		cmocka_unit_test(test_pagemap_scan_consistent),
		cmocka_unit_test(test_print_has_every_row),
		cmocka_unit_test(test_json_round_trip),
		cmocka_unit_test(test_kvm_row_shows_the_api_version),
		cmocka_unit_test(test_require_names_missing),
		cmocka_unit_test(test_unprivileged_is_refused),
	};

	return cmocka_run_group_tests(tests, t_setup, NULL);
}
