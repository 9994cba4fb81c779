/*
 * tests/vm/uffd-check.c - userfaultfd inside the test VM (smoke suite).
 *
 * Prints the kernel's userfaultfd feature bits, requires the ones umig's
 * post-copy and dirty tracking use (MISSING on anonymous and shmem memory,
 * WP_ASYNC, MOVE; WP_UNPOPULATED and POISON are printed), then serves a
 * real fault: a thread reads a registered page, the handler answers the
 * uffd_msg with UFFDIO_COPY and the reader must see the copied pattern.
 * Exit 0 pass, 77 no userfaultfd, 1 failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "umig/compat.h"

#define PAGE 4096

static const struct {
	uint64_t bit;
	const char *name;
	int required;
} features[] = {
	{ UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM", 1 },
	{ UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS", 0 },
	{ UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM", 0 },
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "WP", 1 },
	{ UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED", 0 },
	{ UFFD_FEATURE_WP_ASYNC, "WP_ASYNC", 1 },
	{ UFFD_FEATURE_MOVE, "MOVE", 1 },
	{ UFFD_FEATURE_POISON, "POISON", 0 },
};

static void *reader(void *p)
{
	return (void *)(uintptr_t)*(volatile uint64_t *)p;
}

static int fail(const char *what)
{
	fprintf(stderr, "uffd-check: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg;
	struct uffdio_copy copy;
	struct uffd_msg msg;
	struct pollfd pfd;
	pthread_t t;
	uint64_t *src, *area;
	void *got;
	int uffd, missing = 0;
	size_t i;

	uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0) {
		fprintf(stderr, "uffd-check: skip: userfaultfd: %s\n", strerror(errno));
		return 77;
	}
	if (ioctl(uffd, UFFDIO_API, &api) < 0)
		return fail("UFFDIO_API");
	printf("uffd-check: features 0x%llx\n", (unsigned long long)api.features);
	for (i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
		int have = (api.features & features[i].bit) != 0;

		printf("uffd-check:   %-18s %s\n", features[i].name, have ? "yes" : "no");
		if (!have && features[i].required)
			missing++;
	}
	if (missing) {
		fprintf(stderr, "uffd-check: %d required feature(s) missing\n", missing);
		return 1;
	}

	src = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	area = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED || area == MAP_FAILED)
		return fail("mmap");
	for (i = 0; i < PAGE / 8; i++)
		src[i] = 0x756d696700000000ull | i;
	reg = (struct uffdio_register){
		.range = { .start = (uintptr_t)area, .len = PAGE },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		return fail("UFFDIO_REGISTER");
	if (pthread_create(&t, NULL, reader, area + 7) != 0)
		return fail("pthread_create");

	pfd = (struct pollfd){ .fd = uffd, .events = POLLIN };
	if (poll(&pfd, 1, 10000) != 1)
		return fail("no fault within 10 s");
	if (read(uffd, &msg, sizeof(msg)) != sizeof(msg))
		return fail("read uffd_msg");
	if (msg.event != UFFD_EVENT_PAGEFAULT ||
	    (msg.arg.pagefault.address & ~(uint64_t)(PAGE - 1)) != (uintptr_t)area) {
		fprintf(stderr, "uffd-check: unexpected event %u at 0x%llx\n", msg.event,
			(unsigned long long)msg.arg.pagefault.address);
		return 1;
	}
	copy = (struct uffdio_copy){
		.dst = (uintptr_t)area, .src = (uintptr_t)src, .len = PAGE,
	};
	if (ioctl(uffd, UFFDIO_COPY, &copy) < 0 || copy.copy != PAGE)
		return fail("UFFDIO_COPY");
	pthread_join(t, &got);
	if ((uint64_t)(uintptr_t)got != src[7] || memcmp(src, area, PAGE) != 0) {
		fprintf(stderr, "uffd-check: the faulting reader saw 0x%llx, expected 0x%llx\n",
			(unsigned long long)(uintptr_t)got, (unsigned long long)src[7]);
		return 1;
	}
	printf("uffd-check: fault at page offset 56 served by UFFDIO_COPY, data verified\n");
	return 0;
}
