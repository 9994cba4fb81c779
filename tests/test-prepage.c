/*
 * test-prepage.c - pre-paging policies: every page exactly once whatever
 * happens, and the documented orders.
 *
 * The caller's side of the contract is played as the bulk thread does
 * it: take prepage_next(), check it is not sent, claim it with
 * bitmap_test_and_set(), and go again until next() says npages.  Pages
 * "sent by the urgent path" are set behind the policy's back, before or
 * during the drain, and from another thread in the concurrency test.
 * The order tests pin the exact sequences documented in prepage.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "umig/bitmap.h"
#include "umig/prepage.h"
#include "umig/util.h"

static const char *const t_policies[] = { "linear", "bubble", "bubble-dir" };
static const char *const t_bubbles[] = { "bubble", "bubble-dir" };
static const uint64_t t_sizes[] = { 1, 2, 63, 64, 1000, 100000 };

struct t_ctx {
	struct bitmap sent;
	struct prepage *p;
	uint64_t npages;
};

static void t_open(struct t_ctx *c, const char *name, uint64_t npages)
{
	c->npages = npages;
	assert_int_equal(bitmap_init(&c->sent, npages), 0);
	assert_int_equal(prepage_create(&c->p, name, npages, &c->sent), 0);
	assert_non_null(c->p);
}

static void t_close(struct t_ctx *c)
{
	prepage_destroy(c->p);
	c->p = NULL;
	bitmap_free(&c->sent);
}

/* xorshift64: the same sequence on every run. */
static uint64_t t_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* One page from next(), which must be a page nobody has sent; claim it. */
static uint64_t t_take(struct t_ctx *c)
{
	uint64_t r = prepage_next(c->p);

	assert_in_range(r, 0, c->npages - 1);
	assert_false(bitmap_test(&c->sent, r));
	assert_false(bitmap_test_and_set(&c->sent, r));
	return r;
}

/* Nothing left: next() says npages, and keeps saying it. */
static void t_expect_done(struct t_ctx *c)
{
	assert_int_equal(bitmap_count(&c->sent), c->npages);
	assert_int_equal(prepage_next(c->p), c->npages);
	assert_int_equal(prepage_next(c->p), c->npages);
}

/*
 * Drain to the end.  With a seed, every step may also fault on a random
 * pfn (some past the end) and "send" a random page as the urgent path
 * would.  Returns the pages next() gave; with the urgent wins they must
 * make npages.
 */
static uint64_t t_drain(struct t_ctx *c, uint64_t seed, uint64_t *urgent_wins)
{
	uint64_t taken = 0, limit = c->npages;

	*urgent_wins = 0;
	for (;;) {
		uint64_t r;

		if (seed) {
			if (t_rand(&seed) % 8 == 0)
				prepage_fault(c->p, t_rand(&seed) % (c->npages + 16));
			if (t_rand(&seed) % 16 == 0 &&
			    !bitmap_test_and_set(&c->sent, t_rand(&seed) % c->npages))
				++*urgent_wins;
		}
		r = prepage_next(c->p);
		if (r == c->npages)
			break;
		assert_true(taken < limit);
		assert_in_range(r, 0, c->npages - 1);
		assert_false(bitmap_test(&c->sent, r));
		assert_false(bitmap_test_and_set(&c->sent, r));
		taken++;
	}
	t_expect_done(c);
	return taken;
}

/* The next n results are exactly want[]. */
static void t_expect_seq(struct t_ctx *c, const uint64_t *want, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t r = t_take(c);

		if (r != want[i])
			fail_msg("%s: result %zu is %llu, expected %llu", c->p->ops->name,
				 i, (unsigned long long)r, (unsigned long long)want[i]);
	}
}

/* The next results count up from..to, or down when from > to. */
static void t_expect_run(struct t_ctx *c, uint64_t from, uint64_t to)
{
	for (uint64_t i = from;; i = from <= to ? i + 1 : i - 1) {
		uint64_t r = t_take(c);

		if (r != i)
			fail_msg("%s: expected %llu, got %llu", c->p->ops->name,
				 (unsigned long long)i, (unsigned long long)r);
		if (i == to)
			break;
	}
}

static void t_faults(struct t_ctx *c, const uint64_t *pfns, size_t n)
{
	for (size_t i = 0; i < n; i++)
		prepage_fault(c->p, pfns[i]);
}

/* --- exactly once ------------------------------------------------------ */

static void test_every_page_once(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(t_policies); i++)
		for (size_t j = 0; j < ARRAY_SIZE(t_sizes); j++) {
			struct t_ctx c;
			uint64_t urgent;

			t_open(&c, t_policies[i], t_sizes[j]);
			assert_int_equal(t_drain(&c, 0, &urgent), t_sizes[j]);
			t_close(&c);
		}
}

static void test_presets_never_returned(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(t_policies); i++) {
		uint64_t urgent, preset;
		struct t_ctx c;

		t_open(&c, t_policies[i], 1000);
		for (uint64_t pfn = 0; pfn < 1000; pfn += 7)
			bitmap_set(&c.sent, pfn);
		bitmap_set_range(&c.sent, 100, 200);
		bitmap_set(&c.sent, 999);
		bitmap_set(&c.sent, 998);
		preset = bitmap_count(&c.sent);
		assert_int_equal(preset, 143 + 200 - 28 + 2);
		prepage_fault(c.p, 150);        /* a pivot inside the sent range */
		assert_int_equal(t_drain(&c, 0, &urgent), 1000 - preset);
		t_close(&c);
	}
}

static void test_interleaved_faults(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(t_policies); i++)
		for (size_t j = 0; j < ARRAY_SIZE(t_sizes); j++) {
			struct t_ctx c;
			uint64_t taken, urgent;

			t_open(&c, t_policies[i], t_sizes[j]);
			taken = t_drain(&c, 0x2545f4914f6cdd1dull + j, &urgent);
			assert_int_equal(taken + urgent, t_sizes[j]);
			t_close(&c);
		}
}

/* --- bubble orders ------------------------------------------------------- */

static void test_linear_order(void **state)
{
	struct t_ctx c;

	t_open(&c, "linear", 100);
	bitmap_set(&c.sent, 3);
	prepage_fault(c.p, 50);         /* linear does not care */
	t_expect_run(&c, 0, 2);
	t_expect_run(&c, 4, 99);
	t_expect_done(&c);
	t_close(&c);
}

/* Before any fault a bubble is linear; the first fault starts the bubble. */
static void test_bubble_linear_until_fault(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(t_bubbles); i++) {
		static const uint64_t want[] = { 50, 49, 51, 48, 52, 47 };
		struct t_ctx c;

		t_open(&c, t_bubbles[i], 100);
		t_expect_run(&c, 0, 9);
		prepage_fault(c.p, 50);
		t_expect_seq(&c, want, ARRAY_SIZE(want));
		t_close(&c);
	}
}

/* fault(50) in 100 pages: 50 49 51 48 ... 99 0, exactly alternating. */
static void test_bubble_order_around_pivot(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(t_bubbles); i++) {
		uint64_t want[100];
		struct t_ctx c;

		for (uint64_t k = 0; k < 50; k++) {
			want[2 * k] = 50 + k;
			want[2 * k + 1] = 49 - k;
		}
		t_open(&c, t_bubbles[i], 100);
		prepage_fault(c.p, 50);
		t_expect_seq(&c, want, 100);
		t_expect_done(&c);
		t_close(&c);
	}
}

static void test_bubble_skips_sent(void **state)
{
	static const uint64_t want[] = { 50, 49, 53, 48, 54, 46, 55, 45 };
	struct t_ctx c;

	t_open(&c, "bubble", 100);
	bitmap_set(&c.sent, 51);
	bitmap_set(&c.sent, 52);
	bitmap_set(&c.sent, 47);
	prepage_fault(c.p, 50);
	t_expect_seq(&c, want, ARRAY_SIZE(want));
	t_close(&c);

	/* The faulted page itself is normally sent already by the urgent path. */
	t_open(&c, "bubble", 100);
	bitmap_set(&c.sent, 50);
	prepage_fault(c.p, 50);
	t_expect_seq(&c, (const uint64_t[]){ 51, 49, 52, 48 }, 4);
	t_close(&c);
}

/* At the upper end the bubble goes on downward only, and the reverse. */
static void test_bubble_ends(void **state)
{
	static const uint64_t high[] = { 97, 96, 98, 95, 99, 94 };
	static const uint64_t low[] = { 2, 1, 3, 0 };
	struct t_ctx c;

	t_open(&c, "bubble", 100);
	prepage_fault(c.p, 97);
	t_expect_seq(&c, high, ARRAY_SIZE(high));
	t_expect_run(&c, 93, 0);
	t_expect_done(&c);
	t_close(&c);

	t_open(&c, "bubble", 100);
	prepage_fault(c.p, 2);
	t_expect_seq(&c, low, ARRAY_SIZE(low));
	t_expect_run(&c, 4, 99);
	t_expect_done(&c);
	t_close(&c);

	t_open(&c, "bubble", 100);
	prepage_fault(c.p, 0);
	t_expect_run(&c, 0, 99);
	t_expect_done(&c);
	t_close(&c);

	t_open(&c, "bubble", 100);
	prepage_fault(c.p, 99);
	t_expect_run(&c, 99, 0);
	t_expect_done(&c);
	t_close(&c);
}

/*
 * A new fault moves the pivot and restarts the alternation (forward
 * first, even after an odd number of pages); the old bubble's pages are
 * skipped.
 */
static void test_bubble_new_pivot(void **state)
{
	static const uint64_t first[] = { 50, 49, 51 };
	uint64_t want[20];
	struct t_ctx c;

	for (uint64_t k = 0; k < 10; k++) {
		want[2 * k] = 10 + k;
		want[2 * k + 1] = 9 - k;
	}
	t_open(&c, "bubble", 100);
	prepage_fault(c.p, 50);
	t_expect_seq(&c, first, ARRAY_SIZE(first));
	prepage_fault(c.p, 10);
	t_expect_seq(&c, want, ARRAY_SIZE(want));       /* down to 0 */
	t_expect_run(&c, 20, 48);                        /* then up only */
	t_expect_run(&c, 52, 99);
	t_expect_done(&c);
	t_close(&c);
}

/* --- bubble-dir ----------------------------------------------------------- */

/* 4 forward : 1 backward after rising faults; plain bubble stays 1:1. */
static void test_bubble_dir_forward(void **state)
{
	static const uint64_t faults[] = { 10, 20, 30, 40 };
	static const uint64_t dir[] = { 40, 41, 42, 43, 39, 44, 45, 46, 47, 38 };
	static const uint64_t plain[] = { 40, 39, 41, 38, 42, 37, 43, 36, 44, 35 };
	struct t_ctx c;
	unsigned ahead = 0;

	t_open(&c, "bubble-dir", 100);
	t_faults(&c, faults, ARRAY_SIZE(faults));
	for (size_t i = 0; i < ARRAY_SIZE(dir); i++) {
		uint64_t r = t_take(&c);

		assert_int_equal(r, dir[i]);
		ahead += r >= 40;
	}
	assert_int_equal(ahead, 8);     /* 8 of 10 at or past the pivot */
	t_close(&c);

	t_open(&c, "bubble", 100);
	t_faults(&c, faults, ARRAY_SIZE(faults));
	t_expect_seq(&c, plain, ARRAY_SIZE(plain));
	t_close(&c);
}

static void test_bubble_dir_backward(void **state)
{
	static const uint64_t faults[] = { 90, 80, 70, 60 };
	static const uint64_t want[] = { 60, 59, 58, 57, 61, 56, 55, 54, 53, 62 };
	struct t_ctx c;

	t_open(&c, "bubble-dir", 100);
	t_faults(&c, faults, ARRAY_SIZE(faults));
	t_expect_seq(&c, want, ARRAY_SIZE(want));
	t_close(&c);
}

/* The rule of prepage.c: up - down over the last 4 steps, +-2 for a bias. */
static void test_bubble_dir_rule(void **state)
{
	static const struct {
		uint64_t faults[8];
		size_t n;
		uint64_t want[6];
	} cases[] = {
		/* one step: not enough */
		{ { 10, 20 }, 2, { 20, 19, 21, 18, 22, 17 } },
		/* two rising steps: forward */
		{ { 10, 20, 30 }, 3, { 30, 31, 32, 33, 29, 34 } },
		/* mixed, 2 up 1 down: 1:1 */
		{ { 10, 30, 20, 40 }, 4, { 40, 39, 41, 38, 42, 37 } },
		/* a repeated pfn is not a step (as a fall, u u d d would be 1:1) */
		{ { 10, 20, 30, 30, 30 }, 5, { 30, 31, 32, 33, 29, 34 } },
		/* only the last 4 steps count: d d d d u u = 2 d 2 u: 1:1 */
		{ { 90, 80, 70, 60, 50, 60, 70 }, 7, { 70, 69, 71, 68, 72, 67 } },
		/* ... and one more rise: d u u u: forward */
		{ { 90, 80, 70, 60, 50, 60, 70, 80 }, 8, { 80, 81, 82, 83, 79, 84 } },
		/* forward bias at the upper end: forward until the end, then down */
		{ { 10, 20, 30, 97 }, 4, { 97, 98, 99, 96, 95, 94 } },
		/* backward bias at the lower end */
		{ { 90, 80, 70, 2 }, 4, { 2, 1, 0, 3, 4, 5 } },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct t_ctx c;

		t_open(&c, "bubble-dir", 100);
		t_faults(&c, cases[i].faults, cases[i].n);
		t_expect_seq(&c, cases[i].want, ARRAY_SIZE(cases[i].want));
		t_close(&c);
	}
}

/* --- names and bad input ------------------------------------------------- */

static void test_names(void **state)
{
	char list[128], *save = NULL;
	size_t n = 0;

	assert_string_equal(prepage_names(), "linear, bubble, bubble-dir");
	strcpy(list, prepage_names());
	for (char *s = strtok_r(list, ", ", &save); s; s = strtok_r(NULL, ", ", &save)) {
		struct t_ctx c;

		t_open(&c, s, 10);
		assert_string_equal(c.p->ops->name, s);
		assert_non_null(c.p->ops->summary);
		t_close(&c);
		n++;
	}
	assert_int_equal(n, ARRAY_SIZE(t_policies));
}

static void test_unknown_policy(void **state)
{
	struct prepage *p = (struct prepage *)&p;
	struct bitmap sent;

	assert_int_equal(bitmap_init(&sent, 10), 0);
	err_clear();
	assert_int_equal(prepage_create(&p, "spiral", 10, &sent), -ENOENT);
	assert_null(p);
	assert_string_equal(err_msg(-ENOENT),
			    "unknown pre-paging policy 'spiral' (known: linear, bubble, bubble-dir)");
	assert_int_equal(prepage_create(&p, NULL, 10, &sent), -ENOENT);
	assert_non_null(strstr(err_msg(-ENOENT), "known: linear, bubble, bubble-dir"));
	/* A sent map smaller than the RAM is refused. */
	assert_int_equal(prepage_create(&p, "linear", 11, &sent), -EINVAL);
	assert_null(p);
	prepage_destroy(NULL);
	bitmap_free(&sent);
}

static void test_fault_out_of_range_ignored(void **state)
{
	static const uint64_t bogus[] = { 100, 101, 1000, UINT64_MAX };
	static const uint64_t dir_faults[] = { 40, 30, 500, 20 };
	static const uint64_t dir_want[] = { 20, 19, 18, 17, 21, 16 };
	struct t_ctx c;

	for (size_t i = 0; i < ARRAY_SIZE(t_bubbles); i++) {
		t_open(&c, t_bubbles[i], 100);
		t_faults(&c, bogus, ARRAY_SIZE(bogus));
		t_expect_run(&c, 0, 2);                         /* still linear */
		prepage_fault(c.p, 50);
		t_expect_seq(&c, (const uint64_t[]){ 50, 49 }, 2);
		t_faults(&c, bogus, ARRAY_SIZE(bogus));         /* no restart */
		t_expect_seq(&c, (const uint64_t[]){ 51, 48, 52, 47 }, 4);
		t_close(&c);
	}

	/*
	 * Nor are they steps: 40 30 (500) 20 is down, down: backward.  Had 500
	 * counted, down up down would be 1:1.
	 */
	t_open(&c, "bubble-dir", 100);
	t_faults(&c, dir_faults, ARRAY_SIZE(dir_faults));
	t_expect_seq(&c, dir_want, ARRAY_SIZE(dir_want));
	t_close(&c);

	/* A sent map larger than the RAM: nothing past npages comes out. */
	for (size_t i = 0; i < ARRAY_SIZE(t_policies); i++) {
		uint64_t urgent;

		assert_int_equal(bitmap_init(&c.sent, 1000), 0);
		c.npages = 100;
		assert_int_equal(prepage_create(&c.p, t_policies[i], 100, &c.sent), 0);
		prepage_fault(c.p, 99);
		prepage_fault(c.p, 500);
		assert_int_equal(t_drain(&c, 0, &urgent), 100);
		assert_false(bitmap_test(&c.sent, 100));
		t_close(&c);
	}
}

/* --- concurrency ------------------------------------------------------------ */

#define T_CONC_PAGES 100000

struct t_urgent {
	struct t_ctx *c;
	pthread_barrier_t go;
	bool *won;
	uint64_t wins;
	uint64_t faults;        /* __atomic: main waits on its progress */
	int stop;               /* __atomic */
};

/* The urgent path: fault on random pages and send every other one. */
static void *t_urgent_thread(void *arg)
{
	struct t_urgent *u = arg;
	uint64_t seed = 0x853c49e6748fea9bull;

	pthread_barrier_wait(&u->go);
	while (!__atomic_load_n(&u->stop, __ATOMIC_ACQUIRE)) {
		uint64_t pfn = t_rand(&seed) % T_CONC_PAGES;
		uint64_t n = __atomic_add_fetch(&u->faults, 1, __ATOMIC_RELAXED);

		prepage_fault(u->c->p, pfn);
		if (n % 2 == 0 && !bitmap_test_and_set(&u->c->sent, pfn)) {
			u->won[pfn] = true;
			u->wins++;
		}
	}
	return NULL;
}

/*
 * So that the threads overlap even on one core, the drain waits every
 * T_CONC_STEP calls until the urgent thread has made some progress.
 */
#define T_CONC_STEP 4096

static void t_wait_progress(struct t_urgent *u, uint64_t *seen)
{
	while (__atomic_load_n(&u->faults, __ATOMIC_RELAXED) < *seen + 16)
		sched_yield();
	*seen = __atomic_load_n(&u->faults, __ATOMIC_RELAXED);
}

static void test_concurrent_faults(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(t_policies); i++) {
		bool *won = calloc(T_CONC_PAGES, sizeof(bool));
		uint64_t taken = 0, lost = 0, calls = 0, seen = 0;
		struct t_urgent u;
		struct t_ctx c;
		pthread_t th;

		assert_non_null(won);
		t_open(&c, t_policies[i], T_CONC_PAGES);
		u = (struct t_urgent){ .c = &c };
		u.won = calloc(T_CONC_PAGES, sizeof(bool));
		assert_non_null(u.won);
		assert_int_equal(pthread_barrier_init(&u.go, NULL, 2), 0);
		assert_int_equal(pthread_create(&th, NULL, t_urgent_thread, &u), 0);
		pthread_barrier_wait(&u.go);
		for (;;) {
			uint64_t r;

			if (calls % T_CONC_STEP == 0)
				t_wait_progress(&u, &seen);
			r = prepage_next(c.p);

			/* each call either claims a page or lost it to the urgent path */
			assert_true(++calls <= 2 * T_CONC_PAGES + 1);
			if (r == T_CONC_PAGES)
				break;
			assert_in_range(r, 0, T_CONC_PAGES - 1);
			if (bitmap_test_and_set(&c.sent, r)) {
				lost++;
				continue;
			}
			assert_false(won[r]);
			won[r] = true;
			taken++;
		}
		__atomic_store_n(&u.stop, 1, __ATOMIC_RELEASE);
		assert_int_equal(pthread_join(th, NULL), 0);
		pthread_barrier_destroy(&u.go);

		for (uint64_t pfn = 0; pfn < T_CONC_PAGES; pfn++)
			if (won[pfn] == u.won[pfn])
				fail_msg("%s: page %llu sent %s", t_policies[i],
					 (unsigned long long)pfn, won[pfn] ? "twice" : "never");
		assert_int_equal(taken + u.wins, T_CONC_PAGES);
		t_expect_done(&c);
		print_message("%s: bulk %llu, urgent %llu (lost %llu races), %llu faults\n",
			      t_policies[i], (unsigned long long)taken,
			      (unsigned long long)u.wins, (unsigned long long)lost,
			      (unsigned long long)u.faults);
		free(u.won);
		free(won);
		t_close(&c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_page_once),
		cmocka_unit_test(test_presets_never_returned),
		cmocka_unit_test(test_interleaved_faults),
		cmocka_unit_test(test_linear_order),
		cmocka_unit_test(test_bubble_linear_until_fault),
		cmocka_unit_test(test_bubble_order_around_pivot),
		cmocka_unit_test(test_bubble_skips_sent),
		cmocka_unit_test(test_bubble_ends),
		cmocka_unit_test(test_bubble_new_pivot),
		cmocka_unit_test(test_bubble_dir_forward),
		cmocka_unit_test(test_bubble_dir_backward),
		cmocka_unit_test(test_bubble_dir_rule),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_unknown_policy),
		cmocka_unit_test(test_fault_out_of_range_ignored),
		cmocka_unit_test(test_concurrent_faults),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
