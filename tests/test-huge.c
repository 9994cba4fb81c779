/*
 * test-huge.c - hugetlb guest RAM (--ram-backing hugetlb) and post-copy
 * in 2 MiB units (src/mem.c, src/mig-huge.c, FEAT_HUGE2M).
 *
 * The host has no huge pages reserved: the group setup raises
 * vm.nr_hugepages by what both ends' guests need (and skips every test,
 * saying why, when it cannot), and the teardown -- also at exit, so a
 * failed assertion gives them back too -- restores the old value.
 *
 * Units: allocation and its errors (size not a multiple of 2 MiB, too few
 * free huge pages naming vm.nr_hugepages), dropping a unit, a fault on a
 * unit being assembled waits until UFFDIO_CONTINUE maps it, uffd-wp
 * reports one store as 512 pages.  End to end: memverify with hugetlb
 * RAM on both sides in every mode, 4 KiB sources into a hugetlb
 * destination and the reverse, a snapshot round trip, and umig 0.1
 * refused by a hugetlb post-copy destination.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "t-rig.h"
#include "t-util.h"
#include "umig/bitmap.h"
#include "umig/log.h"
#include "umig/mem.h"
#include "umig/uffd.h"

#define NR_PATH "/proc/sys/vm/nr_hugepages"
#define T_NEED  80   /* two 64 MiB guests (32 each), a restore, units: in 2 MiB pages */

static long old_nr = -1;
static char skip_why[256];

static long read_long(const char *path, const char *key)
{
	FILE *f = fopen(path, "r");
	char line[128];
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (key ? sscanf(line, key, &v) == 1 : sscanf(line, "%ld", &v) == 1)
			break;
	fclose(f);
	return v;
}

static int write_nr(long n)
{
	FILE *f = fopen(NR_PATH, "w");
	int ret;

	if (!f)
		return -errno;
	ret = fprintf(f, "%ld\n", n) < 0 ? -EIO : 0;
	return fclose(f) ? -errno : ret;
}

static void give_back(void)
{
	if (old_nr < 0)
		return;
	if (write_nr(old_nr))
		fprintf(stderr, "test-huge: cannot restore vm.nr_hugepages to %ld\n", old_nr);
	old_nr = -1;
}

static int reserve(void **state)
{
	long fr;
	int err;

	(void)state;
	old_nr = read_long(NR_PATH, NULL);
	if (old_nr < 0) {
		snprintf(skip_why, sizeof(skip_why), "no %s: no 2 MiB huge pages here\n", NR_PATH);
		return 0;
	}
	atexit(give_back);
	err = write_nr(old_nr + T_NEED);
	fr = read_long("/proc/meminfo", "HugePages_Free: %ld");
	if (err || fr < T_NEED) {
		snprintf(skip_why, sizeof(skip_why), "cannot reserve %d huge pages (vm.nr_hugepages "
			 "%ld, %ld free): %s\n", T_NEED, old_nr, fr,
			 err ? strerror(-err) : "not enough contiguous memory");
		give_back();
	}
	return 0;
}

static int unreserve(void **state)
{
	(void)state;
	give_back();
	return 0;
}

#define NEED_HUGE() t_skip_unless(!skip_why[0], "%s", skip_why)

/* --- units ------------------------------------------------------------------ */

static void test_alloc_and_errors(void **state)
{
	struct guest_mem m;
	long fr;

	(void)state;
	NEED_HUGE();
	assert_int_equal(mem_alloc_backed(&m, 4ull << 20, MEM_HUGETLB), 0);
	assert_int_equal(m.backing, MEM_HUGETLB);
	m.place[HUGE_PAGE_SIZE + 5] = 0x42;
	assert_int_equal(m.host[HUGE_PAGE_SIZE + 5], 0x42);
	assert_string_equal(mem_backing_name(MEM_HUGETLB), "hugetlb");
	mem_free(&m);
	assert_int_equal(mem_alloc_backed(&m, 3ull << 20, MEM_HUGETLB), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "not a multiple of 2 MiB"));
	fr = read_long("/proc/meminfo", "HugePages_Free: %ld");
	assert_int_equal(mem_alloc_backed(&m, (uint64_t)(fr + 2) * HUGE_PAGE_SIZE, MEM_HUGETLB),
			 -ENOMEM);
	assert_non_null(strstr(err_msg(-ENOMEM), "vm.nr_hugepages"));
	assert_null(m.host);
}

/* Dropping a unit frees its huge page: zero again and unpopulated. */
static void test_drop_unit(void **state)
{
	struct guest_mem m;
	struct bitmap pop;

	(void)state;
	NEED_HUGE();
	assert_int_equal(mem_alloc_backed(&m, 4ull << 20, MEM_HUGETLB), 0);
	memset(m.host, 0xab, 4ull << 20);
	assert_int_equal(bitmap_init(&pop, mem_pages(&m)), 0);
	assert_int_equal(mem_scan_populated(&m, &pop), 1024);
	assert_int_equal(mem_drop(&m, HUGE_PAGE_SIZE, HUGE_PAGE_SIZE), 0);
	bitmap_clear_all(&pop);
	assert_int_equal(mem_scan_populated(&m, &pop), 512);
	assert_false(bitmap_test(&pop, 512));
	assert_int_equal(m.host[HUGE_PAGE_SIZE + 77], 0);
	assert_int_equal(m.host[77], 0xab);
	bitmap_free(&pop);
	mem_free(&m);
}

struct reader {
	volatile uint8_t *p;
	_Atomic int done;
	uint8_t seen;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	r->seen = *r->p;
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * What mig-huge.c rests on: a touch of a unit with no page is reported;
 * pages written through the placement view do not map it (the reader
 * still waits, a minor fault); one UFFDIO_CONTINUE maps the 2 MiB.
 */
static void test_assemble_then_continue(void **state)
{
	struct reader r = { 0 };
	struct pollfd p;
	struct guest_mem m;
	struct uffd u;
	pthread_t t;
	uint64_t a = 0;
	int ret;

	(void)state;
	NEED_HUGE();
	assert_int_equal(mem_alloc_backed(&m, 4ull << 20, MEM_HUGETLB), 0);
	ret = uffd_open_huge(&u);
	t_skip_unless(ret == 0, "no hugetlbfs minor faults here: %s\n", err_msg(ret));
	assert_int_equal(uffd_register_huge(&u, m.host, m.size), 0);
	r.p = m.host + HUGE_PAGE_SIZE + 3 * PAGE_SIZE + 9;
	assert_int_equal(pthread_create(&t, NULL, reader_main, &r), 0);
	p = (struct pollfd){ .fd = u.fd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 3000), 1);
	assert_int_equal(uffd_read_faults(&u, &a, 1), 1);
	assert_int_equal(a, (uint64_t)(uintptr_t)(m.host + HUGE_PAGE_SIZE + 3 * PAGE_SIZE));
	memset(m.place + HUGE_PAGE_SIZE, 0x5c, HUGE_PAGE_SIZE);
	usleep(20000);
	assert_int_equal(__atomic_load_n(&r.done, __ATOMIC_ACQUIRE), 0);   /* still waiting */
	assert_int_equal(uffd_continue_huge(&u, HUGE_PAGE_SIZE), 0);
	pthread_join(t, NULL);
	assert_int_equal(r.seen, 0x5c);
	assert_int_equal(uffd_continue_huge(&u, HUGE_PAGE_SIZE), 0);   /* mapped: a wake */
	assert_int_equal(uffd_continue_huge(&u, PAGE_SIZE), -EINVAL);
	uffd_unregister(&u);
	uffd_close(&u);
	mem_free(&m);
}

/* uffd-wp on hugetlb: one 4-byte store reports (and resends) 512 pages. */
static void test_dirty_tracking_in_units(void **state)
{
	struct dirty_tracker d;
	struct guest_mem m;
	struct bitmap b;
	int ret;

	(void)state;
	NEED_HUGE();
	assert_int_equal(mem_alloc_backed(&m, 8ull << 20, MEM_HUGETLB), 0);
	memset(m.host, 1, m.size);
	ret = dirty_start(&d, m.host, m.size);
	t_skip_unless(ret == 0, "no async write-protect here: %s\n", err_msg(ret));
	assert_int_equal(bitmap_init(&b, mem_pages(&m)), 0);
	*(volatile uint32_t *)(m.host + 2 * HUGE_PAGE_SIZE + 12344) = 7;   /* inside the third huge page */
	assert_int_equal(dirty_collect(&d, &b), 512);
	assert_int_equal(bitmap_count_range(&b, 1024, 512), 512);
	bitmap_clear_all(&b);
	assert_int_equal(dirty_collect(&d, &b), 0);
	dirty_stop(&d);
	bitmap_free(&b);
	mem_free(&m);
}

static void test_round_out(void **state)
{
	struct bitmap b;

	(void)state;
	assert_int_equal(bitmap_init(&b, 1300), 0);
	bitmap_set(&b, 3);
	bitmap_set(&b, 1299);
	bitmap_round_out(&b, 512);
	assert_int_equal(bitmap_count(&b), 512 + 276);
	assert_true(bitmap_test(&b, 0) && bitmap_test(&b, 511) && !bitmap_test(&b, 512));
	assert_true(bitmap_test(&b, 1024) && !bitmap_test(&b, 1023));
	bitmap_free(&b);
}

/* --- end to end ------------------------------------------------------------ */

/*
 * A fault at a hugetlb destination is answered with its whole unit, as
 * runs of like pages (FEAT_URGENT_RUNS): far fewer frames than pages.  At
 * a 4 KiB destination every reply is one page.
 */
static void urgent_replies_fit(json_t *rec, const char *dst_backing)
{
	json_int_t pages = json_integer_value(t_json_need(rec, "pages_urgent"));
	json_int_t frames = json_integer_value(t_json_need(rec, "urgent_replies"));

	print_message("%s destination: %lld urgent pages in %lld frames\n", dst_backing,
		      (long long)pages, (long long)frames);
	if (strcmp(dst_backing, "hugetlb"))
		assert_int_equal(frames, pages);
	else if (pages >= 512)
		assert_true(frames * 8 <= pages);
}

/* memverify from a src_backing source into a dst_backing destination. */
static void migrate(const char *umig_src, const char *guest, const char *mode,
		    const char *src_backing, const char *dst_backing)
{
	char *dir = t_tmpdir();
	char listen[32], stats[600];
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	int dst, port = rig_port();
	struct t_result r;
	json_t *rec;
	char *o, *e;

	/* the previous release's memverify knows passes= only */
	const char *cmdline = umig_src != t_umig() ? "wss=24 passes=12" : "wss=24 secs=40 moved_secs=1";

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(stats, sizeof(stats), "%s", t_path(dir, "dst.json"));
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--stats", stats,
		       "--ram-backing", (char *)dst_backing, "--quiet", NULL };
	pid_t dpid = t_spawn(da, dout, derr);

	usleep(300000);
	char *sa[] = { (char *)umig_src, "run", (char *)guest, "--mem", "64M",
		       "--ram-backing", (char *)src_backing, "--cmdline", (char *)cmdline,
		       "--migrate-to", listen, "--migrate-after", "0.5", "--mode", (char *)mode,
		       "--quiet", NULL };
	if (umig_src != t_umig())   /* umig 0.1 has no --ram-backing */
		memmove(&sa[5], &sa[7], 10 * sizeof(char *));
	t_run(sa, 120, &r);
	dst = t_wait(dpid, 120);
	o = t_read_file(dout);
	e = t_read_file(derr);
	if (umig_src != t_umig()) {
		/* refused at the handshake, naming the fix */
		assert_true(dst != 0);
		assert_non_null(strstr(e, "FEAT_HUGE2M"));
		assert_non_null(strstr(e, "--ram-backing anon"));
	} else {
		if (r.status || dst)
			fprintf(stderr, "%s %s->%s: source %d, destination %d\n%s\n%s\n", mode,
				src_backing, dst_backing, r.status, dst, r.err, e);
		assert_int_equal(r.status, 0);
		assert_int_equal(dst, 0);
		assert_null(strstr(o, "MISMATCH"));
		assert_non_null(strstr(o, T_MV_DONE));
		rec = json_load_file(stats, 0, NULL);
		assert_non_null(rec);
		assert_string_equal(json_string_value(t_json_need(rec, "dst_ram_backing")),
				    dst_backing);
		assert_string_equal(json_string_value(t_json_need(rec, "ram_backing")), src_backing);
		urgent_replies_fit(rec, dst_backing);
		json_decref(rec);
	}
	free(o);
	free(e);
	t_result_free(&r);
	t_tmpdir_free(dir);
}

/* --- transparent huge pages (--ram-backing thp) ----------------------------- */

/* Why THP cannot be tested here ("" when it can): the kernel's switch. */
static const char *thp_skip_why(void)
{
	static char why[160];
	char *s = t_read_file("/sys/kernel/mm/transparent_hugepage/enabled");

	why[0] = 0;
	if (!s)
		snprintf(why, sizeof(why), "no transparent huge pages in this kernel\n");
	else if (strstr(s, "[never]"))
		snprintf(why, sizeof(why), "transparent huge pages are switched off here "
			 "(/sys/kernel/mm/transparent_hugepage/enabled: never)\n");
	free(s);
	return why;
}

/* kB of the process's anonymous memory on transparent huge pages. */
static long anon_huge_kb(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	return read_long(path, "AnonHugePages: %ld kB");
}

/*
 * thp RAM is touched in 2 MiB pages: a running guest's working set shows
 * up as AnonHugePages, where anon RAM (MADV_NOHUGEPAGE) has none; the
 * guest verifies every word all along.
 */
static void thp_touch(const char *backing, long *kb)
{
	char *dir = t_tmpdir();
	const char *out = t_path(dir, "out");
	char *a[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "64M",
		      "--ram-backing", (char *)backing, "--cmdline", "wss=32 secs=3", NULL };
	pid_t pid = t_spawn(a, out, t_path(dir, "err"));
	char *o;

	/* the fill is done once the first pass is */
	assert_true(t_wait_for_text(out, "pass 1 ok", 20000));
	*kb = anon_huge_kb(pid);
	assert_int_equal(t_wait(pid, 30), 0);
	o = t_read_file(out);
	assert_non_null(strstr(o, T_MV_DONE));
	free(o);
	t_tmpdir_free(dir);
}

static void test_thp_first_touch(void **state)
{
	const char *why = thp_skip_why();
	char *mode = t_read_file("/sys/kernel/mm/transparent_hugepage/enabled");
	long thp, anon;

	(void)state;
	t_skip_unless(!why[0], "%s", why);
	thp_touch("thp", &thp);
	thp_touch("anon", &anon);
	print_message("AnonHugePages: thp %ld kB, anon %ld kB\n", thp, anon);
	/*
	 * The 32 MiB working set, less what the kernel could not back whole.
	 * Unicorn's code buffer asks for huge pages of its own (2 MiB here),
	 * so thp RAM shows as the difference.  Where the kernel gives huge
	 * pages to every mapping ("always"), anon RAM still has none: it
	 * asks for MADV_NOHUGEPAGE.
	 */
	assert_true(thp - anon >= 16 * 1024);
	if (mode && strstr(mode, "[always]"))
		assert_true(anon < 16 * 1024);
	free(mode);
}

/* thp RAM migrates in post-copy and stop-copy; pre-copy and hybrid are refused up front. */
static void test_thp_migrates_and_refuses_tracking(void **state)
{
	static const char *const tracked[] = { "pre", "hybrid" };
	const char *why = thp_skip_why();
	struct t_result r;

	(void)state;
	t_skip_unless(!why[0], "%s", why);
	migrate(t_umig(), t_guest("memverify"), "post", "thp", "anon");
	migrate(t_umig(), t_guest("memverify"), "stop-copy", "thp", "thp");
	/* a thp destination takes pre-copy's writes */
	migrate(t_umig(), t_guest("memverify"), "pre", "anon", "thp");
	for (size_t i = 0; i < 2; i++) {
		char *a[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "64M",
			      "--ram-backing", "thp", "--cmdline", "wss=8 secs=1", "--migrate-to",
			      "127.0.0.1:9", "--mode", (char *)tracked[i], NULL };

		t_run(a, 20, &r);
		assert_int_equal(r.status, 125);
		assert_non_null(strstr(r.err, "--ram-backing thp"));
		assert_non_null(strstr(r.err, "migrate it in post or stop-copy mode"));
		assert_null(strstr(r.out, "memverify"));   /* refused before the guest ran */
		t_result_free(&r);
	}
}

static void huge_both(const char *mode)
{
	NEED_HUGE();
	migrate(t_umig(), t_guest("memverify"), mode, "hugetlb", "hugetlb");
}

static void test_post(void **s) { (void)s; huge_both("post"); }
static void test_hybrid(void **s) { (void)s; huge_both("hybrid"); }
static void test_pre(void **s) { (void)s; huge_both("pre"); }
static void test_stop_copy(void **s) { (void)s; huge_both("stop-copy"); }

/* 4 KiB sources into 2 MiB placement (FEAT_HUGE2M), and 2 MiB sources into 4 KiB RAM. */
static void test_anon_to_huge_post(void **s)
{
	(void)s;
	NEED_HUGE();
	migrate(t_umig(), t_guest("memverify"), "post", "anon", "hugetlb");
}

static void test_memfd_to_huge_hybrid(void **s)
{
	(void)s;
	NEED_HUGE();
	migrate(t_umig(), t_guest("memverify"), "hybrid", "memfd", "hugetlb");
}

static void test_huge_to_anon_hybrid(void **s)
{
	(void)s;
	NEED_HUGE();
	migrate(t_umig(), t_guest("memverify"), "hybrid", "hugetlb", "anon");
}

/* umig 0.1 cannot send 2 MiB units: a hugetlb post-copy destination refuses it. */
static void test_previous_refused(void **state)
{
	char *argv[] = { "tests/compat/build-previous", NULL };
	char umig[600], guest[600];
	struct t_result r;

	(void)state;
	NEED_HUGE();
	t_run(argv, 600, &r);
	if (r.status)
		fprintf(stderr, "previous release: %s\n", r.out);
	t_skip_unless(r.status == 0, "the previous release cannot be built here\n");
	r.out[strcspn(r.out, "\n")] = 0;
	snprintf(umig, sizeof(umig), "%s/build/umig", r.out);
	snprintf(guest, sizeof(guest), "%s/build/guest-tests/memverify.elf", r.out);
	t_result_free(&r);
	migrate(umig, guest, "post", "anon", "hugetlb");
}

/* A snapshot of hugetlb RAM restored into hugetlb RAM: memverify goes on clean. */
static void test_snapshot_round_trip(void **state)
{
	(void)state;
	NEED_HUGE();
	t_snapshot_round_trip("hugetlb");
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_and_errors),
		cmocka_unit_test(test_drop_unit),
		cmocka_unit_test(test_assemble_then_continue),
		cmocka_unit_test(test_dirty_tracking_in_units),
		cmocka_unit_test(test_round_out),
		cmocka_unit_test(test_post),
		cmocka_unit_test(test_hybrid),
		cmocka_unit_test(test_pre),
		cmocka_unit_test(test_stop_copy),
		cmocka_unit_test(test_anon_to_huge_post),
		cmocka_unit_test(test_memfd_to_huge_hybrid),
		cmocka_unit_test(test_huge_to_anon_hybrid),
		cmocka_unit_test(test_previous_refused),
		cmocka_unit_test(test_snapshot_round_trip),
		cmocka_unit_test(test_thp_first_touch),
		cmocka_unit_test(test_thp_migrates_and_refuses_tracking),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, reserve, unreserve);
}
