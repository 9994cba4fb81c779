/*
 * mem.c - allocation of guest RAM; see mem.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "umig/bitmap.h"

#include "umig/log.h"
#include "umig/mem.h"

int mem_alloc(struct guest_mem *m, uint64_t size)
{
	void *p;

	if (size % PAGE_SIZE)
		return err_set(-EINVAL, "guest RAM size %llu is not a multiple of 4 KiB",
			       (unsigned long long)size);
	if (size < MEM_MIN_SIZE || size > MEM_MAX_SIZE)
		return err_set(-EINVAL, "guest RAM size %llu out of range (2 MiB .. 1 TiB)",
			       (unsigned long long)size);
	/* MAP_NORESERVE: a 4 GiB guest costs only the pages it touches. */
	p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return err_set(-errno, "cannot map %llu bytes of guest RAM: %s",
			       (unsigned long long)size, strerror(errno));
	/*
	 * 4 KiB pages only: a huge page would make one fault move 2 MiB and
	 * would make write-protect tracking coarse.
	 */
	if (madvise(p, size, MADV_NOHUGEPAGE))
		pr_warn("madvise(MADV_NOHUGEPAGE) on guest RAM failed: %s", strerror(errno));
	m->host = p;
	m->size = size;
	return 0;
}

void mem_free(struct guest_mem *m)
{
	if (m->host)
		munmap(m->host, m->size);
	m->host = NULL;
	m->size = 0;
}

bool mem_page_is_zero(const void *p)
{
	const uint64_t *w = p;

	/* OR eight words at a time: one branch per 64 bytes */
	for (unsigned i = 0; i < PAGE_SIZE / 8; i += 8)
		if (w[i] | w[i + 1] | w[i + 2] | w[i + 3] |
		    w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7])
			return false;
	return true;
}

#define PM_PRESENT (1ull << 63)
#define PM_SWAPPED (1ull << 62)
#define PM_CHUNK   8192   /* pagemap entries read per pread: 64 KiB */

long mem_scan_populated(const struct guest_mem *m, struct bitmap *out)
{
	uint64_t npages = mem_pages(m), first = (uintptr_t)m->host >> PAGE_SHIFT;
	uint64_t *e = malloc(PM_CHUNK * sizeof(*e));
	long populated = 0;
	int fd;

	if (!e)
		return -ENOMEM;
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(e);
		return err_set(-errno, "cannot open /proc/self/pagemap: %s", strerror(errno));
	}
	for (uint64_t pfn = 0; pfn < npages; pfn += PM_CHUNK) {
		uint64_t n = MIN((uint64_t)PM_CHUNK, npages - pfn);
		ssize_t got = pread(fd, e, n * sizeof(*e), (first + pfn) * sizeof(*e));

		if (got != (ssize_t)(n * sizeof(*e))) {
			populated = err_set(got < 0 ? -errno : -EIO, "reading /proc/self/pagemap failed");
			break;
		}
		for (uint64_t i = 0; i < n; i++)
			if (e[i] & (PM_PRESENT | PM_SWAPPED)) {
				bitmap_set(out, pfn + i);
				populated++;
			}
	}
	close(fd);
	free(e);
	return populated;
}
