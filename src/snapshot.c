/*
 * snapshot.c - snapshot files; see snapshot.h and docs/snapshot.md.
 *
 * Writing streams guest RAM through stdio with a running XXH3 checksum,
 * one RAM section per run of consecutive non-zero pages (at most 1 MiB),
 * so nothing larger than a run is held in memory.  Reading streams pages
 * straight into guest RAM and verifies the checksum at END; a file that
 * fails anywhere leaves the new VM unstarted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "umig/bitmap.h"
#include "umig/log.h"
#include "umig/snapshot.h"

enum snap_section {
	SNAP_SEC_STATE = 1,
	SNAP_SEC_RAM = 2,
	SNAP_SEC_END = 3,
};

#define SNAP_HDR_LEN     32
#define SNAP_SEC_HDR_LEN 16
#define SNAP_RUN_HDR_LEN 16
#define SNAP_RUN_MAX     256          /* pages per RAM section */
#define SNAP_STATE_MAX   (1u << 20)   /* a state record is a few KiB */

struct snap_io {
	FILE *f;
	XXH3_state_t *hash;
	uint64_t off;
	int err;
};

static void sio_write(struct snap_io *s, const void *p, size_t n)
{
	if (s->err)
		return;
	if (fwrite(p, 1, n, s->f) != n)
		s->err = -errno ? -errno : -EIO;
	XXH3_64bits_update(s->hash, p, n);
	s->off += n;
}

static void sio_section(struct snap_io *s, uint32_t type, uint64_t len)
{
	struct wbuf w;

	wbuf_init(&w);
	wbuf_put_u32(&w, type);
	wbuf_put_u32(&w, 0);
	wbuf_put_u64(&w, len);
	sio_write(s, w.data, w.len);
	wbuf_free(&w);
}

static void snap_write_ram_run(struct snap_io *s, struct guest_mem *m,
			       uint64_t pfn, uint32_t n)
{
	struct wbuf w;

	sio_section(s, SNAP_SEC_RAM, SNAP_RUN_HDR_LEN + (uint64_t)n * PAGE_SIZE);
	wbuf_init(&w);
	wbuf_put_u64(&w, pfn);
	wbuf_put_u32(&w, n);
	wbuf_put_u32(&w, 0);
	sio_write(s, w.data, w.len);
	wbuf_free(&w);
	sio_write(s, mem_page(m, pfn), (size_t)n * PAGE_SIZE);
}

static void snap_write_ram(struct snap_io *s, struct guest_mem *m,
			   struct snapshot_info *info)
{
	uint64_t npages = mem_pages(m);
	uint64_t run_start = 0;
	uint32_t run_len = 0;
	struct bitmap pop = { 0 };

	/* never-populated pages are zero: skip them without faulting them in */
	bool scanned = bitmap_init(&pop, npages) == 0 && mem_scan_populated(m, &pop) >= 0;

	for (uint64_t pfn = 0; pfn < npages && !s->err; pfn++) {
		bool zero = (scanned && !bitmap_test(&pop, pfn)) ||
			    mem_page_is_zero(mem_page(m, pfn));

		if (zero)
			info->pages_zero++;
		else
			info->pages_stored++;
		if (run_len && (zero || run_len == SNAP_RUN_MAX)) {
			snap_write_ram_run(s, m, run_start, run_len);
			run_len = 0;
		}
		if (!zero && !run_len++)
			run_start = pfn;
	}
	if (run_len)
		snap_write_ram_run(s, m, run_start, run_len);
	bitmap_free(&pop);
}

static void snap_write_body(struct snap_io *s, struct vm *vm, struct wbuf *state,
			    struct snapshot_info *info)
{
	struct wbuf w;
	uint64_t digest;

	wbuf_init(&w);
	wbuf_put(&w, SNAP_MAGIC, 8);
	wbuf_put_u32(&w, SNAP_VERSION);
	wbuf_put_u32(&w, PAGE_SIZE);
	wbuf_put_u64(&w, vm->mem.size);
	wbuf_put_u64(&w, 0);
	sio_write(s, w.data, w.len);
	sio_section(s, SNAP_SEC_STATE, state->len);
	sio_write(s, state->data, state->len);
	snap_write_ram(s, &vm->mem, info);
	sio_section(s, SNAP_SEC_END, 8);
	digest = XXH3_64bits_digest(s->hash);
	wbuf_reset(&w);
	wbuf_put_u64(&w, digest);
	sio_write(s, w.data, w.len);
	wbuf_free(&w);
}

int snapshot_write(struct vm *vm, const char *path, struct snapshot_info *info)
{
	struct snap_io s = { 0 };
	struct wbuf state;
	char tmp[4096];
	int ret, fd;

	memset(info, 0, sizeof(*info));
	info->ram_size = vm->mem.size;
	wbuf_init(&state);
	ret = vm_save_state(vm, &state);
	if (ret < 0)
		goto out;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		ret = err_set(-ENAMETOOLONG, "snapshot path too long");
		goto out;
	}
	/*
	 * A snapshot holds the guest's whole memory, secrets included: only
	 * its owner may read it, whatever the umask, and a leftover .tmp of
	 * looser mode is tightened before anything is written into it.
	 */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0 && fchmod(fd, 0600) < 0) {
		ret = err_set(-errno, "cannot restrict snapshot '%s' to mode 0600: %s", tmp,
			      strerror(errno));
		close(fd);
		goto out;
	}
	s.f = fd >= 0 ? fdopen(fd, "wb") : NULL;
	if (!s.f) {
		ret = err_set(-errno, "cannot create snapshot '%s': %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	setvbuf(s.f, NULL, _IOFBF, 1 << 20);
	s.hash = XXH3_createState();
	XXH3_64bits_reset(s.hash);
	snap_write_body(&s, vm, &state, info);
	XXH3_freeState(s.hash);
	if (fflush(s.f) || fsync(fileno(s.f)))
		s.err = s.err ? s.err : -errno;
	if (fclose(s.f) && !s.err)
		s.err = -errno;
	if (!s.err && rename(tmp, path))
		s.err = -errno;
	if (s.err) {
		unlink(tmp);
		ret = err_set(s.err, "writing snapshot '%s' failed: %s", path, strerror(-s.err));
		goto out;
	}
	info->file_bytes = s.off;
out:
	wbuf_free(&state);
	return ret;
}

/* --- reading ------------------------------------------------------------ */

static int sio_read(struct snap_io *s, void *p, size_t n, const char *what)
{
	size_t got = fread(p, 1, n, s->f);

	XXH3_64bits_update(s->hash, p, got);
	s->off += got;
	if (got != n)
		return err_set(-EBADMSG, "snapshot truncated: file ends at byte %llu inside %s",
			       (unsigned long long)s->off, what);
	return 0;
}

static int snap_check_header(const uint8_t *h, uint64_t *ram_size)
{
	struct rbuf r;
	uint32_t version, page_size;

	if (memcmp(h, SNAP_MAGIC, 8))
		return err_set(-EBADMSG, "not a umig snapshot (bad magic)");
	rbuf_init(&r, h + 8, SNAP_HDR_LEN - 8);
	version = rbuf_get_u32(&r);
	page_size = rbuf_get_u32(&r);
	*ram_size = rbuf_get_u64(&r);
	if (version != SNAP_VERSION)
		return err_set(-EPROTONOSUPPORT,
			       "snapshot version %u not supported (this umig reads version %u)",
			       version, SNAP_VERSION);
	if (page_size != PAGE_SIZE)
		return err_set(-EBADMSG, "snapshot page size %u (umig uses 4096)", page_size);
	if (*ram_size % PAGE_SIZE || *ram_size < MEM_MIN_SIZE || *ram_size > MEM_MAX_SIZE)
		return err_set(-EBADMSG, "snapshot RAM size %llu is invalid",
			       (unsigned long long)*ram_size);
	return 0;
}

int snapshot_read_header(const char *path, uint64_t *ram_size)
{
	uint8_t h[SNAP_HDR_LEN];
	FILE *f = fopen(path, "rb");
	size_t got;

	if (!f)
		return err_set(-errno, "cannot open snapshot '%s': %s", path, strerror(errno));
	got = fread(h, 1, sizeof(h), f);
	fclose(f);
	if (got != sizeof(h))
		return err_set(-EBADMSG, "snapshot truncated: only %zu bytes of header", got);
	return snap_check_header(h, ram_size);
}

static int snap_read_ram(struct snap_io *s, struct vm *vm, uint64_t len,
			 struct snapshot_info *info)
{
	uint8_t h[SNAP_RUN_HDR_LEN];
	struct rbuf r;
	uint64_t pfn;
	uint32_t n;
	int ret;

	if (len < SNAP_RUN_HDR_LEN)
		return err_set(-EBADMSG, "snapshot corrupted: RAM section of %llu bytes",
			       (unsigned long long)len);
	ret = sio_read(s, h, sizeof(h), "a RAM section header");
	if (ret < 0)
		return ret;
	rbuf_init(&r, h, sizeof(h));
	pfn = rbuf_get_u64(&r);
	n = rbuf_get_u32(&r);
	if (n == 0 || n > SNAP_RUN_MAX || len != SNAP_RUN_HDR_LEN + (uint64_t)n * PAGE_SIZE)
		return err_set(-EBADMSG, "snapshot corrupted: RAM run of %u pages in %llu bytes",
			       n, (unsigned long long)len);
	if (pfn >= mem_pages(&vm->mem) || n > mem_pages(&vm->mem) - pfn)
		return err_set(-EBADMSG, "snapshot corrupted: RAM run at page %llu lies outside %llu MiB",
			       (unsigned long long)pfn,
			       (unsigned long long)(vm->mem.size >> 20));
	info->pages_stored += n;
	return sio_read(s, mem_page(&vm->mem, pfn), (size_t)n * PAGE_SIZE, "RAM pages");
}

static int snap_read_end(struct snap_io *s, uint64_t len)
{
	uint64_t want = XXH3_64bits_digest(s->hash);
	uint8_t d[8];
	struct rbuf r;
	int ret;

	if (len != 8)
		return err_set(-EBADMSG, "snapshot corrupted: END section of %llu bytes",
			       (unsigned long long)len);
	ret = sio_read(s, d, 8, "the checksum");
	if (ret < 0)
		return ret;
	rbuf_init(&r, d, 8);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
	/* a fuzzer cannot forge a checksum: its builds check everything else */
	if (rbuf_get_u64(&r) != want)
		return err_set(-EBADMSG, "snapshot corrupted: checksum mismatch");
#else
	(void)want;
#endif
	if (fgetc(s->f) != EOF)
		return err_set(-EBADMSG, "snapshot corrupted: data after the END section");
	return 0;
}

static int snap_read_sections(struct snap_io *s, struct vm *vm, struct wbuf *state,
			      struct snapshot_info *info)
{
	for (;;) {
		uint8_t h[SNAP_SEC_HDR_LEN];
		struct rbuf r;
		uint32_t type;
		uint64_t len;
		void *dst;
		int ret;

		ret = sio_read(s, h, sizeof(h), "a section header (no END section)");
		if (ret < 0)
			return ret;
		rbuf_init(&r, h, sizeof(h));
		type = rbuf_get_u32(&r);
		rbuf_get_u32(&r);
		len = rbuf_get_u64(&r);
		switch (type) {
		case SNAP_SEC_STATE:
			if (state->len || len == 0 || len > SNAP_STATE_MAX)
				return err_set(-EBADMSG, "snapshot corrupted: bad STATE section");
			dst = wbuf_reserve(state, len);
			ret = dst ? sio_read(s, dst, len, "the machine state") : -ENOMEM;
			break;
		case SNAP_SEC_RAM:
			ret = snap_read_ram(s, vm, len, info);
			break;
		case SNAP_SEC_END:
			return snap_read_end(s, len);
		default:
			return err_set(-EBADMSG, "snapshot corrupted: unknown section type %u at byte %llu",
				       type, (unsigned long long)(s->off - SNAP_SEC_HDR_LEN));
		}
		if (ret < 0)
			return ret;
	}
}

int snapshot_load(struct vm *vm, const char *path, struct snapshot_info *info)
{
	FILE *f = fopen(path, "rb");
	int ret;

	if (!f) {
		memset(info, 0, sizeof(*info));
		return err_set(-errno, "cannot open snapshot '%s': %s", path, strerror(errno));
	}
	setvbuf(f, NULL, _IOFBF, 1 << 20);
	ret = snapshot_load_file(vm, f, info);
	fclose(f);
	return ret;
}

int snapshot_load_file(struct vm *vm, FILE *f, struct snapshot_info *info)
{
	struct snap_io s = { .f = f };
	uint8_t h[SNAP_HDR_LEN];
	struct wbuf state;
	struct rbuf r;
	int ret;

	memset(info, 0, sizeof(*info));
	wbuf_init(&state);
	s.hash = XXH3_createState();
	XXH3_64bits_reset(s.hash);
	ret = sio_read(&s, h, sizeof(h), "the header");
	if (!ret)
		ret = snap_check_header(h, &info->ram_size);
	if (!ret && info->ram_size != vm->mem.size)
		ret = err_set(-EINVAL, "snapshot is for %llu MiB of RAM, the VM has %llu MiB",
			      (unsigned long long)(info->ram_size >> 20),
			      (unsigned long long)(vm->mem.size >> 20));
	if (!ret)
		ret = snap_read_sections(&s, vm, &state, info);
	if (!ret && !state.len)
		ret = err_set(-EBADMSG, "snapshot corrupted: no STATE section");
	info->file_bytes = s.off;
	XXH3_freeState(s.hash);
	if (!ret) {
		rbuf_init(&r, state.data, state.len);
		ret = vm_load_state(vm, &r);
	}
	/* pages were written behind the vCPUs' back: drop any translated code */
	if (!ret)
		ret = vm_flush_code(vm, 0, vm->mem.size);
	if (!ret)
		info->pages_zero = mem_pages(&vm->mem) - info->pages_stored;
	wbuf_free(&state);
	return ret;
}
