/*
 * test-beatgap.c - the guest-perceived gap figures composed from parts
 * measured on two clocks (beatgap.h), checked on synthetic timelines
 * against the truth that only a test can know: the source and the
 * destination beat on clocks a large offset apart, the parts are taken
 * the way umig takes them (each on one clock), and the composed figures
 * must equal the true gaps when the downtime is exact, and bound them
 * from above when RESUMED arrives late (the downtime is an upper bound).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>

#include "umig/beatgap.h"

#define MS 1000000ull
#define OFFSET (123456789ull * MS)   /* destination clock = true time + OFFSET */

struct tl {
	uint64_t src[256], dst[256];   /* beat times, each on its own clock */
	size_t ns, nd;
	uint64_t start, pause;         /* source clock */
	uint64_t resume, end;          /* destination clock */
	uint64_t resumed_at_src;       /* RESUMED arriving, source clock */
};

/*
 * Source beats every 1 ms from 0 (true time) with a stall at 40..47 ms;
 * pause at 100.5; the destination resumes at 103.5 (true) and beats first
 * at 104.2, then every 1 ms with a stall of dst_stall ms from 150.2.
 */
static void make(struct tl *t, uint64_t resumed_late, uint64_t dst_stall)
{
	uint64_t x;

	*t = (struct tl){ .start = 0, .pause = 100 * MS + MS / 2 };
	for (x = 0; x <= 100 * MS; x += MS)
		if (x <= 40 * MS || x >= 47 * MS)
			t->src[t->ns++] = x;
	t->resume = 103 * MS + MS / 2 + OFFSET;
	t->resumed_at_src = 103 * MS + MS / 2 + resumed_late;
	for (x = 104 * MS + MS / 5; x < 200 * MS; x += MS) {
		if (x > 150 * MS + MS / 5 && x < 150 * MS + MS / 5 + dst_stall * MS)
			continue;
		t->dst[t->nd++] = x + OFFSET;
	}
	t->end = 200 * MS + OFFSET;
}

/* The parts, each from one clock, as mig-complete.c takes them. */
static void parts(const struct tl *t, struct beat_parts *p)
{
	p->src_window_ms = beat_max_gap(t->src, t->ns, t->start, t->pause) / 1e6;
	p->before_pause_ms = (t->pause - t->src[t->ns - 1]) / 1e6;
	p->downtime_ms = (t->resumed_at_src - t->pause) / 1e6;
	p->resume_to_first_ms = t->nd ? (t->dst[0] - t->resume) / 1e6 : 0;
	p->dst_window_ms = beat_max_gap(t->dst, t->nd, t->resume, t->end) / 1e6;
}

static void test_exact_downtime_gives_the_true_gaps(void **state)
{
	struct tl t;
	struct beat_parts p;
	struct beat_gaps g;

	(void)state;
	make(&t, 0, 12);
	parts(&t, &p);
	beat_gaps(&p, &g);
	/* true switchover gap: last source beat 100.0 -> first destination beat 104.2 */
	assert_true(fabs(g.switch_gap_ms - 4.2) < 1e-9);
	/* the longest gap is the destination's stall: 150 -> 162 (12 ms, on its clock) */
	assert_true(fabs(p.dst_window_ms - 12.0) < 1e-9);
	assert_true(fabs(g.max_beat_gap_ms - 12.0) < 1e-9);
	assert_true(fabs(p.src_window_ms - 7.0) < 1e-9);
}

static void test_switchover_can_be_the_longest(void **state)
{
	struct tl t;
	struct beat_parts p;
	struct beat_gaps g;

	(void)state;
	make(&t, 0, 2);
	parts(&t, &p);
	beat_gaps(&p, &g);
	/* the source's 7 ms stall beats the 4.2 ms switchover and the 2 ms stall */
	assert_true(fabs(g.max_beat_gap_ms - 7.0) < 1e-9);
	make(&t, 6 * MS, 2);   /* RESUMED arrives 6 ms late: downtime is an upper bound */
	parts(&t, &p);
	beat_gaps(&p, &g);
	assert_true(fabs(g.switch_gap_ms - 10.2) < 1e-9);
	assert_true(g.max_beat_gap_ms == g.switch_gap_ms);
}

/* The ordering relations an integration test relies on, whatever the timing. */
static void test_ordering_relations(void **state)
{
	(void)state;
	for (uint64_t late = 0; late < 20; late += 3)
		for (uint64_t stall = 0; stall < 30; stall += 7) {
			struct tl t;
			struct beat_parts p;
			struct beat_gaps g;

			make(&t, late * MS, stall);
			parts(&t, &p);
			beat_gaps(&p, &g);
			assert_true(g.switch_gap_ms >= p.downtime_ms);
			assert_true(g.switch_gap_ms >= 4.2 - 1e-9);   /* never below the truth */
			assert_true(g.max_beat_gap_ms >= g.switch_gap_ms);
			assert_true(g.max_beat_gap_ms >= p.src_window_ms);
			assert_true(g.max_beat_gap_ms >= p.dst_window_ms);
		}
}

/* A gap counts only when both of its beats are inside the range. */
static void test_max_gap_range_and_edges(void **state)
{
	uint64_t t[] = { 10, 20, 50, 55, 100 };

	(void)state;
	assert_int_equal(beat_max_gap(t, 5, 0, 1000), 45);
	assert_int_equal(beat_max_gap(t, 5, 20, 55), 30);
	assert_int_equal(beat_max_gap(t, 5, 21, 99), 5);
	assert_int_equal(beat_max_gap(t, 5, 60, 99), 0);
	assert_int_equal(beat_max_gap(t, 1, 0, 1000), 0);
	assert_int_equal(beat_max_gap(t, 0, 0, 1000), 0);
}

/* No beat at the destination: the switchover part is what was measured. */
static void test_no_destination_beats(void **state)
{
	struct beat_parts p = { .before_pause_ms = 0.5, .downtime_ms = 3 };
	struct beat_gaps g;

	(void)state;
	beat_gaps(&p, &g);
	assert_true(fabs(g.switch_gap_ms - 3.5) < 1e-9);
	assert_true(g.max_beat_gap_ms == g.switch_gap_ms);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exact_downtime_gives_the_true_gaps),
		cmocka_unit_test(test_switchover_can_be_the_longest),
		cmocka_unit_test(test_ordering_relations),
		cmocka_unit_test(test_max_gap_range_and_edges),
		cmocka_unit_test(test_no_destination_beats),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
