/*
 * test-memfd.c - memfd-backed guest RAM (--ram-backing memfd) and its
 * post-copy placement with UFFDIO_CONTINUE (src/mem.c, src/mig-place.c).
 *
 * Units: the two views share their pages; dropping a page punches it out
 * of the file (MADV_DONTNEED would not); the populated map sees a page
 * written through the placement view only; a page with no folio faults
 * as missing under MISSING|MINOR (it is fetched, never read as zero),
 * and is mapped by a write plus UFFDIO_CONTINUE; dirty tracking works on
 * the shared view.  End to end: memverify migrated with memfd RAM on both
 * sides in every mode with --placement continue (and post and hybrid with
 * the default, UFFDIO_COPY), the KVM vCPU on it (in the test VM), a snapshot round trip
 * on memfd RAM, and a source killed in post-copy whose destination
 * never lets the guest read a missing page as zero.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "t-rig.h"
#include "t-util.h"
#include "umig/bitmap.h"
#include "umig/compat.h"
#include "umig/log.h"
#include "umig/mem.h"
#include "umig/uffd.h"
#include "umig/vcpu-kvm.h"

#define T_RAM (4ull << 20)

static void t_memfd(struct guest_mem *m)
{
	assert_int_equal(mem_alloc_backed(m, T_RAM, MEM_MEMFD), 0);
	assert_non_null(m->place);
	assert_true(m->fd >= 0);
	assert_true(m->place != m->host);
}

/* --- units ------------------------------------------------------------------ */

static void test_views_share_pages(void **state)
{
	struct guest_mem m;

	(void)state;
	t_memfd(&m);
	m.place[5 * PAGE_SIZE + 7] = 0x42;
	assert_int_equal(m.host[5 * PAGE_SIZE + 7], 0x42);
	m.host[9 * PAGE_SIZE] = 0x17;
	assert_int_equal(m.place[9 * PAGE_SIZE], 0x17);
	mem_free(&m);
	mem_free(&m);   /* idempotent */
	assert_null(m.host);
	assert_int_equal(m.fd, -1);
}

static void test_backing_names(void **state)
{
	enum mem_backing b = MEM_MEMFD;

	(void)state;
	assert_int_equal(mem_backing_parse("anon", &b), 0);
	assert_int_equal(b, MEM_ANON);
	assert_int_equal(mem_backing_parse("memfd", &b), 0);
	assert_int_equal(b, MEM_MEMFD);
	assert_int_equal(mem_backing_parse("hugetlb", &b), 0);
	assert_int_equal(b, MEM_HUGETLB);
	assert_int_equal(mem_backing_parse("thp", &b), 0);
	assert_int_equal(b, MEM_THP);
	assert_int_equal(mem_backing_parse("huge", &b), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "none of anon, thp, memfd, hugetlb"));
	assert_string_equal(mem_backing_name(MEM_MEMFD), "memfd");
	assert_string_equal(mem_backing_name(MEM_THP), "thp");
}

/*
 * The shmem fact hybrid's DISCARD is built around: MADV_DONTNEED on the
 * guest's view leaves the page in the cache (the stale data comes back),
 * mem_drop punches it out (zeroes, and no data extent left).
 */
static void test_drop_punches_the_file(void **state)
{
	struct guest_mem m;
	struct bitmap pop;

	(void)state;
	t_memfd(&m);
	memset(m.host + 3 * PAGE_SIZE, 0xab, 2 * PAGE_SIZE);
	assert_int_equal(madvise(m.host + 3 * PAGE_SIZE, PAGE_SIZE, MADV_DONTNEED), 0);
	assert_int_equal(m.host[3 * PAGE_SIZE], 0xab);   /* still in the page cache */
	assert_int_equal(mem_drop(&m, 3 * PAGE_SIZE, 2 * PAGE_SIZE), 0);
	assert_int_equal(bitmap_init(&pop, mem_pages(&m)), 0);
	assert_int_equal(mem_scan_populated(&m, &pop), 0);   /* no data left in the file */
	bitmap_free(&pop);
	/* (a read of a shmem hole allocates a zeroed folio: scan first, read after) */
	assert_int_equal(m.host[3 * PAGE_SIZE], 0);
	assert_int_equal(m.place[4 * PAGE_SIZE + 100], 0);
	assert_int_equal(mem_drop(&m, 1, PAGE_SIZE), -EINVAL);
	assert_int_equal(mem_drop(&m, T_RAM, PAGE_SIZE), -EINVAL);
	mem_free(&m);
}

/* A page written only through the placement view is populated (pagemap of the guest's view says not). */
static void test_scan_sees_placement_writes(void **state)
{
	struct guest_mem m;
	struct bitmap pop;

	(void)state;
	t_memfd(&m);
	assert_int_equal(bitmap_init(&pop, mem_pages(&m)), 0);
	m.place[10 * PAGE_SIZE] = 1;
	m.host[700 * PAGE_SIZE + 5] = 2;
	memset(m.place + 1020 * PAGE_SIZE, 3, 4 * PAGE_SIZE);   /* the last four pages */
	assert_int_equal(mem_scan_populated(&m, &pop), 6);
	assert_true(bitmap_test(&pop, 10));
	assert_true(bitmap_test(&pop, 700));
	for (uint64_t p = 1020; p < 1024; p++)
		assert_true(bitmap_test(&pop, p));
	assert_false(bitmap_test(&pop, 11));
	assert_false(bitmap_test(&pop, 0));
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

/* Wait (bounded) for one fault on the uffd; its address, or 0. */
static uint64_t wait_fault(struct uffd *u)
{
	struct pollfd p = { .fd = u->fd, .events = POLLIN };
	uint64_t a = 0;

	if (poll(&p, 1, 3000) == 1 && uffd_read_faults(u, &a, 1) == 1)
		return a;
	return 0;
}

/*
 * The rule the destination rests on: with MISSING and MINOR registered, a
 * read of a page with no folio is reported (and waits for us) instead of
 * being given a zero page; UFFDIO_CONTINUE cannot map it (EFAULT); after
 * a write into the file it can, and the reader sees the data.
 */
static void test_hole_faults_as_missing(void **state)
{
	struct reader r = { 0 };
	struct guest_mem m;
	struct uffd u;
	pthread_t t;
	int ret;

	(void)state;
	t_memfd(&m);
	ret = uffd_open_minor(&u);
	t_skip_unless(ret == 0, "no minor faults on shmem here: %s\n", err_msg(ret));
	assert_int_equal(uffd_register(&u, m.host, m.size, true), 0);
	r.p = m.host + 42 * PAGE_SIZE + 9;
	assert_int_equal(pthread_create(&t, NULL, reader_main, &r), 0);
	assert_int_equal(wait_fault(&u), (uint64_t)(uintptr_t)(m.host + 42 * PAGE_SIZE));
	usleep(20000);
	assert_int_equal(__atomic_load_n(&r.done, __ATOMIC_ACQUIRE), 0);   /* still waiting */
	assert_int_equal(uffd_continue(&u, 42 * PAGE_SIZE, 1), -EFAULT);
	memset(m.place + 42 * PAGE_SIZE, 0x5c, PAGE_SIZE);
	assert_int_equal(uffd_continue(&u, 42 * PAGE_SIZE, 1), 1);
	pthread_join(t, NULL);
	assert_int_equal(r.seen, 0x5c);
	/* mapped now: a second continue finds it present, and it is skipped */
	assert_int_equal(uffd_continue(&u, 42 * PAGE_SIZE, 1), 0);
	/* a page in the cache but unmapped in this view is a minor fault */
	m.place[50 * PAGE_SIZE + 9] = 0x77;
	r = (struct reader){ .p = m.host + 50 * PAGE_SIZE + 9 };
	assert_int_equal(pthread_create(&t, NULL, reader_main, &r), 0);
	assert_int_equal(wait_fault(&u), (uint64_t)(uintptr_t)(m.host + 50 * PAGE_SIZE));
	assert_int_equal(uffd_continue(&u, 50 * PAGE_SIZE, 1), 1);
	pthread_join(t, NULL);
	assert_int_equal(r.seen, 0x77);
	/* zero pages: UFFDIO_ZEROPAGE gives a hole a zeroed folio and maps it */
	assert_int_equal(uffd_zero(&u, 60 * PAGE_SIZE, 2), 2);
	assert_int_equal(m.host[61 * PAGE_SIZE], 0);
	uffd_unregister(&u);
	uffd_close(&u);
	mem_free(&m);
}

/*
 * A placement view that an RDMA device may have pinned (place_pinned):
 * a hole punched under a pin would detach the pinned folio from the file,
 * and a READ landing in it would never reach the guest.  So mem_drop
 * keeps the folio (still data in the file), zeroes it, and unmaps it from
 * the guest's view: a touch there is a minor fault, CONTINUE maps the
 * page, and what was written through the placement view after the drop
 * (where a READ lands) is what the guest reads.
 */
static void test_drop_keeps_a_pinned_view(void **state)
{
	struct reader r = { 0 };
	struct guest_mem m;
	struct bitmap pop;
	struct uffd u;
	pthread_t t;
	int ret;

	(void)state;
	t_memfd(&m);
	m.place_pinned = true;
	memset(m.host + 7 * PAGE_SIZE, 0xab, 2 * PAGE_SIZE);
	assert_int_equal(mem_drop(&m, 7 * PAGE_SIZE, 2 * PAGE_SIZE), 0);
	assert_int_equal(bitmap_init(&pop, mem_pages(&m)), 0);
	assert_int_equal(mem_scan_populated(&m, &pop), 2);   /* the folios stay in the file */
	assert_true(bitmap_test(&pop, 7) && bitmap_test(&pop, 8));
	bitmap_free(&pop);
	assert_int_equal(m.place[8 * PAGE_SIZE + 17], 0);    /* ... zeroed */
	ret = uffd_open_minor(&u);
	t_skip_unless(ret == 0, "no minor faults on shmem here: %s\n", err_msg(ret));
	assert_int_equal(uffd_register(&u, m.host, m.size, true), 0);
	m.place[7 * PAGE_SIZE + 5] = 0x3d;                   /* as a READ into the view would */
	r.p = m.host + 7 * PAGE_SIZE + 5;
	assert_int_equal(pthread_create(&t, NULL, reader_main, &r), 0);
	assert_int_equal(wait_fault(&u), (uint64_t)(uintptr_t)(m.host + 7 * PAGE_SIZE));
	usleep(20000);
	assert_int_equal(__atomic_load_n(&r.done, __ATOMIC_ACQUIRE), 0);   /* unmapped: it waits */
	assert_int_equal(uffd_continue(&u, 7 * PAGE_SIZE, 1), 1);
	pthread_join(t, NULL);
	assert_int_equal(r.seen, 0x3d);
	uffd_unregister(&u);
	uffd_close(&u);
	mem_free(&m);
}

/* uffd-wp dirty tracking on the shared guest view: every written page reported. */
static void test_dirty_tracking_on_shmem(void **state)
{
	struct dirty_tracker d;
	struct guest_mem m;
	struct bitmap b;
	int ret;

	(void)state;
	t_memfd(&m);
	m.host[0] = 1;   /* some populated, some not */
	ret = dirty_start(&d, m.host, m.size);
	t_skip_unless(ret == 0, "no async write-protect here: %s\n", err_msg(ret));
	assert_int_equal(bitmap_init(&b, mem_pages(&m)), 0);
	m.host[0] = 2;
	m.host[7 * PAGE_SIZE] = 3;
	m.host[1000 * PAGE_SIZE + 1] = 4;
	assert_int_equal(dirty_collect(&d, &b), 3);
	assert_true(bitmap_test(&b, 0) && bitmap_test(&b, 7) && bitmap_test(&b, 1000));
	bitmap_clear_all(&b);
	assert_int_equal(dirty_collect(&d, &b), 0);
	m.host[7 * PAGE_SIZE + 8] = 5;
	assert_int_equal(dirty_collect(&d, &b), 1);
	dirty_stop(&d);
	bitmap_free(&b);
	mem_free(&m);
}

/* --- end to end ------------------------------------------------------------ */

static void t_fail_dump(const char *what, int src, int dst, const char *serr, const char *derr_path)
{
	char *e = t_read_file(derr_path);

	fprintf(stderr, "%s: source %d, destination %d\nsrc err: %s\ndst err: %s\n", what, src,
		dst, serr, e);
	free(e);
}

/* memverify migrated with memfd RAM on both sides; the destination's record says how it placed. */
static void migrate_memfd_on(const char *mode, const char *placement, const char *want_placement,
			     const char *vcpu)
{
	char *dir = t_tmpdir();
	char listen[32], stats[600];
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	int port = rig_port(), dst;
	struct t_result r;
	json_t *rec;
	char *o;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(stats, sizeof(stats), "%s", t_path(dir, "dst.json"));
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--stats", stats,
		       "--ram-backing", "memfd", "--vcpu", (char *)vcpu, "--quiet",
		       placement ? "--placement" : NULL, (char *)placement, NULL };
	pid_t dpid = t_spawn(da, dout, derr);

	usleep(300000);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "64M",
		       "--ram-backing", "memfd", "--cmdline", "wss=24 secs=40 moved_secs=1", "--migrate-to",
		       listen, "--migrate-after", "0.5", "--mode", (char *)mode, "--quiet", NULL };
	t_run(sa, 120, &r);
	dst = t_wait(dpid, 120);
	if (r.status || dst)
		t_fail_dump(mode, r.status, dst, r.err, derr);
	assert_int_equal(r.status, 0);
	assert_int_equal(dst, 0);
	o = t_read_file(dout);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_non_null(strstr(o, T_MV_DONE));
	rec = json_load_file(stats, 0, NULL);
	assert_non_null(rec);
	assert_string_equal(json_string_value(t_json_need(rec, "ram_backing")), "memfd");
	assert_string_equal(json_string_value(t_json_need(rec, "dst_ram_backing")), "memfd");
	assert_string_equal(json_string_value(t_json_need(rec, "dst_placement")), want_placement);
	json_decref(rec);
	free(o);
	t_result_free(&r);
	t_tmpdir_free(dir);
}

static void migrate_memfd(const char *mode, const char *placement, const char *want_placement)
{
	migrate_memfd_on(mode, placement, want_placement, "unicorn");
}

static void migrate_memfd_vcpu(const char *mode, const char *vcpu)
{
	migrate_memfd_on(mode, "continue", "continue", vcpu);
}

static void test_migrate_post(void **s) { (void)s; migrate_memfd("post", "continue", "continue"); }
static void test_migrate_hybrid(void **s) { (void)s; migrate_memfd("hybrid", "continue", "continue"); }
static void test_migrate_pre(void **s) { (void)s; migrate_memfd("pre", "continue", "none"); }
static void test_migrate_stop_copy(void **s) { (void)s; migrate_memfd("stop-copy", "continue", "none"); }
/* the default placement on memfd RAM, and the post-copy lanes with it */
static void test_migrate_post_copy(void **s) { (void)s; migrate_memfd("post", NULL, "copy"); }
static void test_migrate_hybrid_copy(void **s) { (void)s; migrate_memfd("hybrid", "copy", "copy"); }

/*
 * KVM's memory slot over the shared guest view: post-copy from Unicorn on
 * memfd RAM into KVM on memfd RAM (tests/vm/suites/kvm runs it on the
 * test VM's nested /dev/kvm).
 */
static void test_kvm_postcopy_on_memfd(void **state)
{
	int fd;

	(void)state;
	t_skip_unless(vcpu_kvm_open(&fd) == 0, "no usable /dev/kvm (%s)\n", "run it in tests/vm");
	close(fd);
	migrate_memfd_vcpu("post", "kvm");
}

/* A snapshot of memfd RAM restored into memfd RAM: memverify goes on clean. */
static void test_snapshot_round_trip(void **state)
{
	(void)state;
	t_snapshot_round_trip("memfd");
}

/*
 * The source dies in post-copy with the push held back by a rate limit,
 * so pages are missing for sure: on memfd RAM registered MISSING|MINOR
 * (--placement continue) a page with no folio must be fetched, never
 * read as zero -- memverify would say MISMATCH.  The
 * destination says what was lost and exits 125.
 */
static void test_source_killed_in_postcopy(void **state)
{
	char *dir = t_tmpdir();
	char listen[32], sock[600], args[200];
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	int port = rig_port(), st;
	struct t_result m;
	char *o, *e;

	(void)state;
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(sock, sizeof(sock), "%s", t_path(dir, "src.sock"));
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet",
		       "--ram-backing", "memfd", "--placement", "continue", "--recover-timeout", "2000",
		       NULL };
	pid_t dpid = t_spawn(da, dout, derr);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "128M",
		       "--ram-backing", "memfd", "--cmdline", "wss=96 passes=0", "--control", sock,
		       NULL };
	pid_t spid = t_spawn(sa, NULL, NULL);

	assert_true(t_wait_for_path(sock, 10000));
	sleep(2);   /* let memverify fill its working set */
	char *ma[] = { (char *)t_umig(), "ctl", "--raw", sock, "migrate", args, NULL };

	snprintf(args, sizeof(args), "{\"to\": \"%s\", \"mode\": \"post\", \"prepaging\": "
		 "\"linear\", \"max_bandwidth\": \"8M\"}", listen);
	t_run(ma, 10, &m);
	if (!strstr(m.out, "started"))
		fprintf(stderr, "migrate: %s %s\n", m.out, m.err);
	assert_non_null(strstr(m.out, "started"));
	t_result_free(&m);
	assert_true(wait_status(sock, "\"postcopy\"", 20000));
	usleep(300000);   /* the guest runs at the destination, faulting */
	t_kill(spid);
	st = t_wait(dpid, 30);
	o = t_read_file(dout);
	e = t_read_file(derr);
	if (st != 125)
		fprintf(stderr, "destination: %d\n%s\n%s\n", st, o, e);
	assert_int_equal(st, 125);
	assert_null(strstr(o ? o : "", "MISMATCH"));
	assert_non_null(strstr(e, "never arrived"));
	free(o);
	free(e);
	t_tmpdir_free(dir);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_views_share_pages),
		cmocka_unit_test(test_backing_names),
		cmocka_unit_test(test_drop_punches_the_file),
		cmocka_unit_test(test_scan_sees_placement_writes),
		cmocka_unit_test(test_hole_faults_as_missing),
		cmocka_unit_test(test_drop_keeps_a_pinned_view),
		cmocka_unit_test(test_dirty_tracking_on_shmem),
		cmocka_unit_test(test_migrate_post),
		cmocka_unit_test(test_migrate_hybrid),
		cmocka_unit_test(test_migrate_pre),
		cmocka_unit_test(test_migrate_stop_copy),
		cmocka_unit_test(test_migrate_post_copy),
		cmocka_unit_test(test_migrate_hybrid_copy),
		cmocka_unit_test(test_kvm_postcopy_on_memfd),
		cmocka_unit_test(test_snapshot_round_trip),
		cmocka_unit_test(test_source_killed_in_postcopy),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);   /* one test, e.g. for tests/vm/suites/kvm */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
