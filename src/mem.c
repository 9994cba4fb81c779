/*
 * mem.c - allocation of guest RAM (anonymous, or a memfd mapped twice),
 * dropping pages and finding the populated ones; see mem.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <linux/memfd.h>
#include <unistd.h>

#include "umig/bitmap.h"

#include "umig/log.h"
#include "umig/mem.h"

static int mem_check_size(uint64_t size, enum mem_backing b)
{
	if (b == MEM_HUGETLB && size % HUGE_PAGE_SIZE)
		return err_set(-EINVAL, "guest RAM size %llu is not a multiple of 2 MiB, which "
			       "--ram-backing hugetlb needs", (unsigned long long)size);
	if (size % PAGE_SIZE)
		return err_set(-EINVAL, "guest RAM size %llu is not a multiple of 4 KiB",
			       (unsigned long long)size);
	if (size < MEM_MIN_SIZE || size > MEM_MAX_SIZE)
		return err_set(-EINVAL, "guest RAM size %llu out of range (2 MiB .. 1 TiB)",
			       (unsigned long long)size);
	return 0;
}

/*
 * 4 KiB pages only: a huge page would make one fault move 2 MiB and
 * would make write-protect tracking coarse.
 */
static void mem_no_huge(void *p, uint64_t size)
{
	if (madvise(p, size, MADV_NOHUGEPAGE))
		pr_warn("madvise(MADV_NOHUGEPAGE) on guest RAM failed: %s", strerror(errno));
}

/*
 * Anonymous RAM on a 2 MiB boundary, so that the kernel can map it with
 * transparent huge pages from its first byte: map 2 MiB more, trim.
 */
static void *mem_map_thp(uint64_t size)
{
	uint8_t *p = mmap(NULL, size + HUGE_PAGE_SIZE, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	uint64_t head;

	if (p == MAP_FAILED)
		return p;
	head = (HUGE_PAGE_SIZE - ((uintptr_t)p & (HUGE_PAGE_SIZE - 1))) & (HUGE_PAGE_SIZE - 1);
	if (head)
		munmap(p, head);
	munmap(p + head + size, HUGE_PAGE_SIZE - head);
	p += head;
	if (madvise(p, size, MADV_HUGEPAGE))
		pr_warn("madvise(MADV_HUGEPAGE) on guest RAM failed: %s; it runs on 4 KiB pages",
			strerror(errno));
	return p;
}

/* Free 2 MiB huge pages in the pool (HugePages_Free), or -1 if unknown. */
static long mem_huge_free(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	long n = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "HugePages_Free: %ld", &n) == 1)
			break;
	fclose(f);
	return n;
}

static int mem_huge_error(int err, uint64_t size)
{
	long free_pages = mem_huge_free();

	return err_set(err, "guest RAM of %llu MiB needs %llu free 2 MiB huge pages and %ld are "
		       "free: reserve them with sysctl vm.nr_hugepages=N (or "
		       "/proc/sys/vm/nr_hugepages), or use --ram-backing anon",
		       (unsigned long long)(size >> 20), (unsigned long long)(size / HUGE_PAGE_SIZE),
		       free_pages < 0 ? 0 : free_pages);
}

/*
 * One shmem file (hugetlb: a hugetlbfs file of 2 MiB pages), mapped
 * shared twice; MAP_NORESERVE as for anonymous RAM, except on hugetlbfs,
 * where the mapping reserves every huge page now, so that too few free
 * ones fail here with a clear error rather than as a SIGBUS in the guest.
 */
static int mem_alloc_memfd(struct guest_mem *m, uint64_t size, bool huge)
{
	int fd = memfd_create("umig-guest-ram", MFD_CLOEXEC |
			      (huge ? MFD_HUGETLB | MFD_HUGE_2MB : 0));
	int flags = MAP_SHARED | (huge ? 0 : MAP_NORESERVE);
	void *g = MAP_FAILED, *p = MAP_FAILED;

	if (fd < 0)
		return err_set(-errno, "memfd_create%s for guest RAM: %s (use --ram-backing anon)",
			       huge ? "(MFD_HUGETLB)" : "", strerror(errno));
	if (ftruncate(fd, (off_t)size)) {
		int err = errno;

		close(fd);
		return err_set(-err, "cannot size the guest RAM memfd to %llu bytes: %s",
			       (unsigned long long)size, strerror(err));
	}
	g = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (g != MAP_FAILED)
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (p == MAP_FAILED) {
		int err = errno;

		if (g != MAP_FAILED)
			munmap(g, size);
		close(fd);
		if (huge && err == ENOMEM)
			return mem_huge_error(-ENOMEM, size);
		return err_set(-err, "cannot map %llu bytes of memfd guest RAM twice: %s",
			       (unsigned long long)size, strerror(err));
	}
	if (!huge) {
		mem_no_huge(g, size);
		mem_no_huge(p, size);
	}
	m->host = g;
	m->place = p;
	m->fd = fd;
	return 0;
}

int mem_alloc_backed(struct guest_mem *m, uint64_t size, enum mem_backing b)
{
	int ret = mem_check_size(size, b);
	void *p;

	*m = (struct guest_mem){ .fd = -1, .backing = b };
	if (ret)
		return ret;
	if (b == MEM_MEMFD || b == MEM_HUGETLB) {
		ret = mem_alloc_memfd(m, size, b == MEM_HUGETLB);
		if (!ret)
			m->size = size;
		return ret;
	}
	/* MAP_NORESERVE: a 4 GiB guest costs only the pages it touches. */
	p = b == MEM_THP ? mem_map_thp(size) :
	    mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (p == MAP_FAILED)
		return err_set(-errno, "cannot map %llu bytes of guest RAM: %s",
			       (unsigned long long)size, strerror(errno));
	if (b != MEM_THP)
		mem_no_huge(p, size);
	m->host = p;
	m->size = size;
	return 0;
}

int mem_alloc(struct guest_mem *m, uint64_t size)
{
	return mem_alloc_backed(m, size, MEM_ANON);
}

void mem_free(struct guest_mem *m)
{
	if (m->host)
		munmap(m->host, m->size);
	if (m->place)
		munmap(m->place, m->size);
	if (m->fd >= 0 && mem_shared(m))
		close(m->fd);
	*m = (struct guest_mem){ .fd = -1 };
}

int mem_backing_parse(const char *name, enum mem_backing *out)
{
	if (!strcmp(name, "anon"))
		*out = MEM_ANON;
	else if (!strcmp(name, "memfd"))
		*out = MEM_MEMFD;
	else if (!strcmp(name, "hugetlb"))
		*out = MEM_HUGETLB;
	else if (!strcmp(name, "thp"))
		*out = MEM_THP;
	else
		return err_set(-EINVAL, "RAM backing '%s' is none of anon, thp, memfd, hugetlb", name);
	return 0;
}

const char *mem_backing_name(enum mem_backing b)
{
	return b == MEM_MEMFD ? "memfd" : b == MEM_HUGETLB ? "hugetlb" : b == MEM_THP ? "thp" : "anon";
}

int mem_drop(struct guest_mem *m, uint64_t off, uint64_t len)
{
	int ret;

	if (off > m->size || len > m->size - off || (off | len) & (PAGE_SIZE - 1))
		return err_set(-EINVAL, "dropping guest RAM +%#llx+%#llx: outside or unaligned",
			       (unsigned long long)off, (unsigned long long)len);
	/*
	 * shared memory keeps its data in the page cache: punch it out of the
	 * file (hugetlbfs frees the whole huge pages inside the range and
	 * zeroes the parts of the others)
	 */
	if (m->place_pinned)   /* keep the pinned folios: zero them, unmap the guest's view */
		memset(m->place + off, 0, len);
	if (mem_shared(m) && !m->place_pinned)
		ret = fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)off, (off_t)len);
	else
		ret = madvise(m->host + off, len, MADV_DONTNEED);
	if (ret) {
		pr_debug("mem: dropping +%#llx+%#llx: %s; writing zeroes instead",
			 (unsigned long long)off, (unsigned long long)len, strerror(errno));
		memset(m->host + off, 0, len);
	}
	return 0;
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

/*
 * memfd RAM: the file's data extents.  Either view may have written a
 * page, so neither view's pagemap can tell; SEEK_DATA counts swapped-out
 * shmem pages as data too.
 */
static long mem_scan_memfd(const struct guest_mem *m, struct bitmap *out)
{
	off_t pos = 0, data, hole, size = (off_t)m->size;
	long populated = 0;

	while (pos < size) {
		data = lseek(m->fd, pos, SEEK_DATA);
		if (data < 0 && errno == ENXIO)
			break;   /* no data after pos */
		hole = data < 0 ? -1 : lseek(m->fd, data, SEEK_HOLE);
		if (hole < 0)
			return err_set(-errno, "lseek(SEEK_DATA/SEEK_HOLE) on the guest RAM memfd: %s",
				       strerror(errno));
		hole = MIN(hole, size);
		data &= ~(off_t)(PAGE_SIZE - 1);
		bitmap_set_range(out, (uint64_t)data >> PAGE_SHIFT,
				 (uint64_t)(hole - data + PAGE_SIZE - 1) >> PAGE_SHIFT);
		populated += (hole - data + PAGE_SIZE - 1) >> PAGE_SHIFT;
		pos = hole;
	}
	return populated;
}

long mem_scan_populated(const struct guest_mem *m, struct bitmap *out)
{
	uint64_t npages = mem_pages(m), first = (uintptr_t)m->host >> PAGE_SHIFT;
	uint64_t *e = malloc(PM_CHUNK * sizeof(*e));
	long populated = 0;
	int fd;

	/* hugetlbfs has no SEEK_DATA; every write goes through the guest's view */
	if (m->backing == MEM_MEMFD) {
		free(e);
		return mem_scan_memfd(m, out);
	}
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
