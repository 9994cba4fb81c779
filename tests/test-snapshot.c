/*
 * test-snapshot.c - stop-and-copy to a file and back, with a real guest.
 *
 * The group setup runs memverify (4 MiB working set, forever) for a
 * moment, pauses it and writes one snapshot; the tests then read that
 * file back: its layout against include/umig/snapshot.h, a restore that
 * gives the same RAM, CPU and device state, a restored guest that keeps
 * running (memverify exits 1 on any wrong word), and for each kind of
 * damage a refusal whose message names it.  Damaged copies are written
 * next to the original in the test's temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "t-util.h"
#include "umig/snapshot.h"
#include "umig/util.h"
#include "umig/vm.h"

#define T_RAM       (64ull << 20)
#define T_PAGES     (T_RAM / PAGE_SIZE)
#define T_MS        1000000ull
#define T_HDR_LEN   32
#define T_SEC_LEN   16

enum { T_SEC_STATE = 1, T_SEC_RAM = 2, T_SEC_END = 3 };

struct t_snap {
	char *dir;
	char *path;             /* the good snapshot */
	struct vm *src;         /* paused, as it was when written */
	int console_fd;
	struct snapshot_info info;
	uint8_t *file;          /* the good snapshot's bytes */
	size_t len;
	size_t state_len;       /* STATE payload length */
	size_t ram_off;         /* offset of the first RAM section header */
	size_t ram_sections;
};

static void t_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000l };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static uint64_t t_beats(struct vm *vm)
{
	struct hb_stats st;

	heartbeat_stats(&vm->bus, &st);
	return st.beats;
}

/*
 * Wait until the guest has beaten `want` times, up to 30 s.  Guest speed
 * varies a lot (under ASan, Unicorn's mallocs make it ~25x slower), so
 * progress is waited for, never assumed from a fixed sleep.
 */
static bool t_wait_beats(struct vm *vm, uint64_t want)
{
	for (int i = 0; i < 1500 && t_beats(vm) < want; i++) {
		if (vm_get_status(vm) != VM_RUNNING)
			return false;
		t_sleep_ms(20);
	}
	return t_beats(vm) >= want;
}

static struct vm *t_vm(uint64_t size, int console_fd)
{
	struct vm_config cfg = { .mem_size = size, .console_fd = console_fd };
	struct vm *vm = NULL;

	if (vm_create(&vm, &cfg) < 0)
		return NULL;
	return vm;
}

static uint64_t t_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void t_put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = v >> (8 * i);
}

static int t_fail(const char *what, int ret)
{
	print_message("setup: %s: %s\n", what, err_msg(ret));
	return -1;
}

/* Find the STATE and first RAM sections of the good file. */
static int t_index(struct t_snap *t)
{
	size_t off = T_HDR_LEN;

	while (off + T_SEC_LEN <= t->len) {
		uint32_t type = t_le(t->file + off, 4);
		uint64_t len = t_le(t->file + off + 8, 8);

		if (type == T_SEC_STATE)
			t->state_len = len;
		if (type == T_SEC_RAM && !t->ram_sections++)
			t->ram_off = off;
		if (type == T_SEC_END)
			return 0;
		off += T_SEC_LEN + len;
	}
	return -1;
}

static int t_group_setup(void **state)
{
	struct t_snap *t = calloc(1, sizeof(*t));
	enum vm_status st;
	struct stat sb;
	char *data;
	int ret;

	if (!t)
		return -1;
	*state = t;
	t->dir = t_tmpdir();
	t->path = strdup(t_path(t->dir, "good.umig"));
	t->console_fd = open(t_path(t->dir, "console.src"),
			     O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	t->src = t_vm(T_RAM, t->console_fd);
	if (!t->path || t->console_fd < 0 || !t->src)
		return t_fail("create", -ENOMEM);
	/* beats by page count: the beat counts below stand for pages */
	ret = vm_boot(t->src, t_guest("memverify"), "wss=4 passes=0 beat_us=0");
	if (ret < 0)
		return t_fail("vm_boot memverify", ret);
	ret = vm_start(t->src);
	if (ret < 0)
		return t_fail("vm_start", ret);
	t_sleep_ms(300);
	/* memverify beats every 256 pages: 4 beats = the 4 MiB fill is done */
	if (!t_wait_beats(t->src, 4))
		return t_fail("memverify made no progress", -ETIMEDOUT);
	ret = vm_pause(t->src);
	if (ret < 0)
		return t_fail("vm_pause", ret);
	st = vm_get_status(t->src);
	if (st != VM_PAUSED) {
		print_message("setup: guest is %s (%s)\n", vm_status_name(st), t->src->fault);
		return -1;
	}
	ret = snapshot_write(t->src, t->path, &t->info);
	if (ret < 0)
		return t_fail("snapshot_write", ret);
	data = t_read_file(t->path);
	if (!data || stat(t->path, &sb))
		return t_fail("read back", -EIO);
	t->file = (uint8_t *)data;
	t->len = sb.st_size;
	return t_index(t) == 0 && t->ram_sections ? 0 : t_fail("index", -EBADMSG);
}

static int t_group_teardown(void **state)
{
	struct t_snap *t = *state;

	if (!t)
		return 0;
	vm_destroy(t->src);
	if (t->console_fd >= 0)
		close(t->console_fd);
	free(t->file);
	free(t->path);
	t_tmpdir_free(t->dir);
	free(t);
	return 0;
}

static void t_write(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, p, n), 0);
	close(fd);
}

static void t_assert_msg_has(int code, const char *keyword)
{
	const char *msg = err_msg(code);

	if (!strstr(msg, keyword))
		fail_msg("error detail \"%s\" does not mention \"%s\"", msg, keyword);
}

/* Load bytes [0, len) of buf as a snapshot into a fresh VM: must fail so. */
static void t_rejects_in(struct t_snap *t, uint64_t ram, const void *buf, size_t len,
			 int code, const char *keyword)
{
	const char *path = t_path(t->dir, "bad.umig");
	struct snapshot_info info;
	struct vm *vm = t_vm(ram, -1);

	assert_non_null(vm);
	t_write(path, buf, len);
	err_clear();
	assert_int_equal(snapshot_load(vm, path, &info), code);
	t_assert_msg_has(code, keyword);
	/* a refused snapshot leaves the VM unstarted */
	assert_int_equal(vm_get_status(vm), VM_CREATED);
	vm_destroy(vm);
}

static void t_rejects(struct t_snap *t, const void *buf, size_t len, int code,
		      const char *keyword)
{
	t_rejects_in(t, T_RAM, buf, len, code, keyword);
}

/* A private copy of the good file to damage. */
static uint8_t *t_copy(struct t_snap *t)
{
	uint8_t *p = malloc(t->len + 16);

	assert_non_null(p);
	memcpy(p, t->file, t->len);
	return p;
}

/* --- the file as written -------------------------------------------------- */

static void test_write_info(void **state)
{
	struct t_snap *t = *state;
	struct stat st;

	assert_true(t_beats(t->src) >= 4);	/* the working set is filled */
	assert_true(t->info.ram_size == T_RAM);
	assert_true(t->info.pages_stored + t->info.pages_zero == T_PAGES);
	assert_true(t->info.pages_stored >= 1024);
	assert_int_equal(stat(t->path, &st), 0);
	assert_true((uint64_t)st.st_size == t->info.file_bytes);
	assert_true(t->info.file_bytes >= t->info.pages_stored * PAGE_SIZE);
	/* zero pages take no room: far below the 64 MiB of RAM */
	assert_true(t->info.file_bytes < T_RAM / 8);
}

/* Header, STATE, RAM runs in ascending order, END with XXH3 of the rest. */
static void test_file_layout(void **state)
{
	struct t_snap *t = *state;
	const uint8_t *f = t->file;
	uint64_t pages = 0, next_pfn = 0;
	size_t off = T_HDR_LEN;

	assert_memory_equal(f, SNAP_MAGIC, 8);
	assert_int_equal(t_le(f + 8, 4), SNAP_VERSION);
	assert_int_equal(t_le(f + 12, 4), PAGE_SIZE);
	assert_true(t_le(f + 16, 8) == T_RAM);
	assert_true(t_le(f + 24, 8) == 0);
	assert_int_equal(t_le(f + off, 4), T_SEC_STATE);
	off += T_SEC_LEN + t_le(f + off + 8, 8);
	assert_true(off == t->ram_off);
	while (t_le(f + off, 4) == T_SEC_RAM) {
		uint64_t len = t_le(f + off + 8, 8);
		uint64_t pfn = t_le(f + off + 16, 8);
		uint32_t n = t_le(f + off + 24, 4);

		assert_int_equal(t_le(f + off + 4, 4), 0);
		assert_true(n >= 1 && n <= 256);
		assert_true(len == 16 + (uint64_t)n * PAGE_SIZE);
		assert_true(pfn >= next_pfn);
		assert_true(pfn + n <= T_PAGES);
		/* the bytes are the source's pages */
		assert_memory_equal(f + off + 32, mem_page(&t->src->mem, pfn), n * PAGE_SIZE);
		pages += n;
		next_pfn = pfn + n;
		off += T_SEC_LEN + len;
		assert_true(off < t->len);
	}
	assert_true(pages == t->info.pages_stored);
	assert_int_equal(t_le(f + off, 4), T_SEC_END);
	assert_int_equal(t_le(f + off + 8, 8), 8);
	assert_true(off + T_SEC_LEN + 8 == t->len);
	assert_true(t_le(f + t->len - 8, 8) == XXH3_64bits(f, t->len - 8));
}

static void test_writer_leaves_no_tmp(void **state)
{
	struct t_snap *t = *state;
	char tmp[600];

	snprintf(tmp, sizeof(tmp), "%s.tmp", t->path);
	assert_int_equal(access(tmp, F_OK), -1);
	assert_int_equal(errno, ENOENT);
}

static void test_write_to_missing_dir_fails_cleanly(void **state)
{
	struct t_snap *t = *state;
	const char *path = t_path(t->dir, "no-such-dir/snap.umig");
	struct snapshot_info info;

	err_clear();
	assert_int_equal(snapshot_write(t->src, path, &info), -ENOENT);
	t_assert_msg_has(-ENOENT, "cannot create snapshot");
	t_assert_msg_has(-ENOENT, "no-such-dir");
	assert_int_equal(access(t_path(t->dir, "no-such-dir"), F_OK), -1);
	/* the source is still paused and intact */
	assert_int_equal(vm_get_status(t->src), VM_PAUSED);
}

static void test_read_header(void **state)
{
	struct t_snap *t = *state;
	const char *path = t_path(t->dir, "short.umig");
	uint64_t ram = 0;

	assert_int_equal(snapshot_read_header(t->path, &ram), 0);
	assert_true(ram == T_RAM);
	t_write(path, t->file, T_HDR_LEN - 1);
	err_clear();
	assert_int_equal(snapshot_read_header(path, &ram), -EBADMSG);
	t_assert_msg_has(-EBADMSG, "truncated");
	err_clear();
	assert_int_equal(snapshot_read_header(t_path(t->dir, "nope"), &ram), -ENOENT);
	t_assert_msg_has(-ENOENT, "cannot open snapshot");
}

/* --- restoring ------------------------------------------------------------- */

static void test_load_gives_identical_vm(void **state)
{
	struct t_snap *t = *state;
	struct snapshot_info info;
	struct cpu_state a, b;
	struct wbuf da, db;
	struct vm *dst = t_vm(T_RAM, -1);

	assert_non_null(dst);
	assert_int_equal(snapshot_load(dst, t->path, &info), 0);
	assert_true(info.ram_size == T_RAM);
	assert_true(info.pages_stored == t->info.pages_stored);
	assert_true(info.pages_zero == t->info.pages_zero);
	assert_true(info.file_bytes == t->info.file_bytes);
	assert_int_equal(memcmp(dst->mem.host, t->src->mem.host, T_RAM), 0);
	assert_int_equal(vcpu_get_state(t->src->vcpu, &a), 0);
	assert_int_equal(vcpu_get_state(dst->vcpu, &b), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_true(a.rip >= 0x100000);	/* a guest position, not a reset value */
	/* devices too: both clocks stopped, so the records match byte for byte */
	wbuf_init(&da);
	wbuf_init(&db);
	devices_save(&t->src->bus, &da);
	devices_save(&dst->bus, &db);
	assert_int_equal(da.len, db.len);
	assert_memory_equal(da.data, db.data, da.len);
	wbuf_free(&da);
	wbuf_free(&db);
	vm_destroy(dst);
}

/*
 * memverify checks every word on every pass and exits 1 on a wrong one:
 * a restored guest that completes a whole pass and is still running had
 * every page of its working set restored right.
 */
static void test_restored_vm_runs(void **state)
{
	struct t_snap *t = *state;
	const char *console = t_path(t->dir, "console.dst");
	int fd = open(console, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	struct snapshot_info info;
	uint64_t beats0, clock0;
	struct vm *dst;
	char *out;

	assert_true(fd >= 0);
	dst = t_vm(T_RAM, fd);
	assert_non_null(dst);
	assert_int_equal(snapshot_load(dst, t->path, &info), 0);
	beats0 = t_beats(dst);
	assert_true(beats0 == t_beats(t->src));
	clock0 = clock_guest_ns(&dst->bus);
	assert_int_equal(vm_start(dst), 0);
	t_sleep_ms(200);
	assert_int_equal(vm_get_status(dst), VM_RUNNING);
	/* a pass is 5 beats: 10 more span at least one whole pass */
	assert_true(t_wait_beats(dst, beats0 + 10));
	assert_int_equal(vm_pause(dst), 0);
	assert_int_equal(vm_get_status(dst), VM_PAUSED);
	assert_true(clock_guest_ns(&dst->bus) > clock0);
	vm_destroy(dst);
	close(fd);
	out = t_read_file(console);
	assert_non_null(out);
	assert_null(strstr(out, "MISMATCH"));
	assert_null(strstr(out, "BACKWARDS"));
	assert_true(t_count(out, " ok\n") >= 1);
	free(out);
}

static void test_write_refuses_running_vm(void **state)
{
	struct t_snap *t = *state;
	const char *path = t_path(t->dir, "live.umig");
	struct snapshot_info info;
	struct vm *vm = t_vm(T_RAM, -1);

	assert_non_null(vm);
	assert_int_equal(snapshot_load(vm, t->path, &info), 0);
	assert_int_equal(vm_start(vm), 0);
	err_clear();
	assert_int_equal(snapshot_write(vm, path, &info), -EBUSY);
	t_assert_msg_has(-EBUSY, "paused");
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(access(t_path(t->dir, "live.umig.tmp"), F_OK), -1);
	vm_destroy(vm);
}

/* --- damaged files ------------------------------------------------------------ */

static void test_rejects_truncation(void **state)
{
	struct t_snap *t = *state;
	const size_t ram = t->ram_off;
	const size_t cuts[] = {
		0, 16, T_HDR_LEN,		/* header */
		T_HDR_LEN + 8,			/* a section header */
		T_HDR_LEN + T_SEC_LEN + 10,	/* the state */
		ram + T_SEC_LEN + 8,		/* a RAM run header */
		ram + T_SEC_LEN + 16 + 100,	/* RAM pages */
		t->len / 2,
		t->len - 24,			/* before END */
		t->len - 4,			/* inside the checksum */
	};

	for (size_t i = 0; i < ARRAY_SIZE(cuts); i++)
		t_rejects(t, t->file, cuts[i], -EBADMSG, "truncated");
}

static void test_rejects_flipped_ram_byte(void **state)
{
	struct t_snap *t = *state;
	uint8_t *f = t_copy(t);

	f[t->ram_off + T_SEC_LEN + 16 + 123] ^= 0x01;
	t_rejects(t, f, t->len, -EBADMSG, "checksum");
	free(f);
	/* the last stored byte */
	f = t_copy(t);
	f[t->len - 24 - 1] ^= 0x80;
	t_rejects(t, f, t->len, -EBADMSG, "checksum");
	free(f);
}

/* The state is only decoded after the checksum matched. */
static void test_rejects_flipped_state_byte(void **state)
{
	struct t_snap *t = *state;
	uint8_t *f = t_copy(t);

	f[T_HDR_LEN + T_SEC_LEN + t->state_len / 2] ^= 0x10;
	t_rejects(t, f, t->len, -EBADMSG, "checksum");
	free(f);
}

static void test_rejects_wrong_version(void **state)
{
	struct t_snap *t = *state;
	uint8_t *f = t_copy(t);

	t_put_le(f + 8, SNAP_VERSION + 1, 4);
	t_rejects(t, f, t->len, -EPROTONOSUPPORT, "version 2 not supported");
	free(f);
}

static void test_rejects_bad_magic(void **state)
{
	struct t_snap *t = *state;
	uint8_t *f = t_copy(t);

	memcpy(f, "\x7f" "ELF", 4);
	t_rejects(t, f, t->len, -EBADMSG, "not a umig snapshot");
	free(f);
}

static void test_rejects_bad_page_size(void **state)
{
	struct t_snap *t = *state;
	uint8_t *f = t_copy(t);

	t_put_le(f + 12, 65536, 4);
	t_rejects(t, f, t->len, -EBADMSG, "page size 65536");
	free(f);
}

static void test_rejects_ram_size_mismatch(void **state)
{
	struct t_snap *t = *state;
	uint8_t *f = t_copy(t);

	/* the VM is smaller than the snapshot */
	t_rejects_in(t, 32ull << 20, t->file, t->len, -EINVAL, "64 MiB");
	t_assert_msg_has(-EINVAL, "the VM has 32 MiB");
	/* a header RAM size no VM can have */
	t_put_le(f + 16, T_RAM + 1, 8);
	t_rejects(t, f, t->len, -EBADMSG, "RAM size");
	free(f);
}

/* Checked against the VM before the pages are read or the checksum is. */
static void test_rejects_ram_run_outside_ram(void **state)
{
	struct t_snap *t = *state;
	const size_t run = t->ram_off + T_SEC_LEN;
	uint32_t n = t_le(t->file + run + 8, 4);
	/* past the end, straddling it, pfn + n wrapping, pfn << 12 wrapping */
	const uint64_t pfns[] = {
		T_PAGES, T_PAGES - n + 1, UINT64_MAX, UINT64_MAX - n + 1, 1ull << 52,
	};

	for (size_t i = 0; i < ARRAY_SIZE(pfns); i++) {
		uint8_t *f = t_copy(t);

		t_put_le(f + run, pfns[i], 8);
		t_rejects(t, f, t->len, -EBADMSG, "outside");
		free(f);
	}
}

static void test_rejects_bad_ram_run_count(void **state)
{
	struct t_snap *t = *state;
	const size_t run = t->ram_off + T_SEC_LEN;
	const uint32_t counts[] = { 0, 257 };

	for (size_t i = 0; i < ARRAY_SIZE(counts); i++) {
		uint8_t *f = t_copy(t);

		t_put_le(f + run + 8, counts[i], 4);
		t_rejects(t, f, t->len, -EBADMSG, "RAM run of");
		free(f);
	}
}

static void test_rejects_unknown_section(void **state)
{
	struct t_snap *t = *state;
	uint8_t *f = t_copy(t);

	t_put_le(f + t->ram_off, 9, 4);
	t_rejects(t, f, t->len, -EBADMSG, "unknown section type 9");
	free(f);
}

static void test_rejects_trailing_garbage(void **state)
{
	struct t_snap *t = *state;
	uint8_t *f = t_copy(t);

	f[t->len] = 0;
	t_rejects(t, f, t->len + 1, -EBADMSG, "after the END");
	free(f);
}

static void test_rejects_nonexistent_file(void **state)
{
	struct t_snap *t = *state;
	struct snapshot_info info;
	struct vm *vm = t_vm(T_RAM, -1);

	assert_non_null(vm);
	err_clear();
	assert_int_equal(snapshot_load(vm, t_path(t->dir, "missing.umig"), &info), -ENOENT);
	t_assert_msg_has(-ENOENT, "cannot open snapshot");
	t_assert_msg_has(-ENOENT, "missing.umig");
	vm_destroy(vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_info),
		cmocka_unit_test(test_file_layout),
		cmocka_unit_test(test_writer_leaves_no_tmp),
		cmocka_unit_test(test_write_to_missing_dir_fails_cleanly),
		cmocka_unit_test(test_read_header),
		cmocka_unit_test(test_load_gives_identical_vm),
		cmocka_unit_test(test_restored_vm_runs),
		cmocka_unit_test(test_write_refuses_running_vm),
		cmocka_unit_test(test_rejects_truncation),
		cmocka_unit_test(test_rejects_flipped_ram_byte),
		cmocka_unit_test(test_rejects_flipped_state_byte),
		cmocka_unit_test(test_rejects_wrong_version),
		cmocka_unit_test(test_rejects_bad_magic),
		cmocka_unit_test(test_rejects_bad_page_size),
		cmocka_unit_test(test_rejects_ram_size_mismatch),
		cmocka_unit_test(test_rejects_ram_run_outside_ram),
		cmocka_unit_test(test_rejects_bad_ram_run_count),
		cmocka_unit_test(test_rejects_unknown_section),
		cmocka_unit_test(test_rejects_trailing_garbage),
		cmocka_unit_test(test_rejects_nonexistent_file),
	};

	return cmocka_run_group_tests(tests, t_group_setup, t_group_teardown);
}
