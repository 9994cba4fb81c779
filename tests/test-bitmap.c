/*
 * test-bitmap.c - the shared page bitmap: single bits, ranges, the
 * word-at-a-time scans at every word boundary (with a size that is not a
 * multiple of 64, so the tail of the last word is in play), checked
 * against a bit-by-bit reference, and test_and_set having exactly one
 * winner per bit when two threads race for the same bits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "umig/bitmap.h"
#include "umig/util.h"

#define T_NBITS 1000    /* 15 words and 40 bits: a partial last word */

/* Word boundaries, and the last bit. */
static const uint64_t t_edges[] = { 0, 1, 62, 63, 64, 65, 127, 128, 959, 960, 998, 999 };

static void t_init(struct bitmap *b, uint64_t nbits)
{
	assert_int_equal(bitmap_init(b, nbits), 0);
}

static void test_set_test_clear(void **state)
{
	struct bitmap b;

	t_init(&b, T_NBITS);
	for (size_t i = 0; i < ARRAY_SIZE(t_edges); i++) {
		uint64_t e = t_edges[i];

		assert_false(bitmap_test(&b, e));
		bitmap_set(&b, e);
		assert_true(bitmap_test(&b, e));
		assert_int_equal(bitmap_count(&b), i + 1);
	}
	assert_int_equal(bitmap_count(&b), ARRAY_SIZE(t_edges));
	for (size_t i = 0; i < ARRAY_SIZE(t_edges); i++) {
		bitmap_clear(&b, t_edges[i]);
		assert_false(bitmap_test(&b, t_edges[i]));
	}
	assert_int_equal(bitmap_count(&b), 0);

	/* Out of range: ignored, and never "yours" to send. */
	bitmap_set(&b, T_NBITS);
	bitmap_set(&b, UINT64_MAX);
	assert_int_equal(bitmap_count(&b), 0);
	assert_false(bitmap_test(&b, T_NBITS));
	assert_true(bitmap_test_and_set(&b, T_NBITS));
	assert_int_equal(bitmap_count(&b), 0);
	bitmap_free(&b);
	assert_null(b.words);
	bitmap_free(&b);        /* idempotent */
}

static void test_test_and_set_returns_previous(void **state)
{
	struct bitmap b;

	t_init(&b, T_NBITS);
	for (size_t i = 0; i < ARRAY_SIZE(t_edges); i++) {
		assert_false(bitmap_test_and_set(&b, t_edges[i]));
		assert_true(bitmap_test_and_set(&b, t_edges[i]));
		assert_true(bitmap_test(&b, t_edges[i]));
	}
	assert_int_equal(bitmap_count(&b), ARRAY_SIZE(t_edges));
	bitmap_clear(&b, 63);
	assert_false(bitmap_test_and_set(&b, 63));
	bitmap_clear_all(&b);
	assert_int_equal(bitmap_count(&b), 0);
	assert_int_equal(bitmap_next_set(&b, 0), T_NBITS);
	bitmap_free(&b);
}

static void test_scans_at_word_edges(void **state)
{
	struct bitmap b;

	t_init(&b, T_NBITS);
	/* Empty: nothing set; every bit clear; the tail (1000..1023) never. */
	assert_int_equal(bitmap_next_set(&b, 0), T_NBITS);
	assert_int_equal(bitmap_next_clear(&b, 999), 999);
	assert_int_equal(bitmap_next_clear(&b, T_NBITS), T_NBITS);
	assert_int_equal(bitmap_next_clear(&b, 1023), T_NBITS);
	assert_int_equal(bitmap_next_clear(&b, UINT64_MAX), T_NBITS);
	assert_int_equal(bitmap_prev_clear(&b, 5000), 999);
	assert_int_equal(bitmap_prev_clear(&b, UINT64_MAX), 999);
	assert_int_equal(bitmap_prev_clear(&b, 0), 0);

	/* One set bit at each edge, seen from just before, at and after it. */
	for (size_t i = 0; i < ARRAY_SIZE(t_edges); i++) {
		uint64_t e = t_edges[i];

		bitmap_clear_all(&b);
		bitmap_set(&b, e);
		assert_int_equal(bitmap_next_set(&b, 0), e);
		assert_int_equal(bitmap_next_set(&b, e), e);
		assert_int_equal(bitmap_next_set(&b, e + 1), T_NBITS);
		if (e > 0)
			assert_int_equal(bitmap_next_set(&b, e - 1), e);
	}

	/* All set but one hole at each edge: next_clear and prev_clear find it. */
	for (size_t i = 0; i < ARRAY_SIZE(t_edges); i++) {
		uint64_t e = t_edges[i];

		bitmap_set_range(&b, 0, T_NBITS);
		bitmap_clear(&b, e);
		assert_int_equal(bitmap_count(&b), T_NBITS - 1);
		assert_int_equal(bitmap_next_clear(&b, 0), e);
		assert_int_equal(bitmap_next_clear(&b, e), e);
		assert_int_equal(bitmap_next_clear(&b, e + 1), T_NBITS);
		assert_int_equal(bitmap_prev_clear(&b, T_NBITS - 1), e);
		assert_int_equal(bitmap_prev_clear(&b, UINT64_MAX), e);
		assert_int_equal(bitmap_prev_clear(&b, e), e);
		if (e > 0)
			assert_int_equal(bitmap_prev_clear(&b, e - 1), UINT64_MAX);
		if (e + 1 < T_NBITS)
			assert_int_equal(bitmap_prev_clear(&b, e + 1), e);
	}

	/* Full: the tail is not a clear bit. */
	bitmap_set_range(&b, 0, T_NBITS);
	assert_int_equal(bitmap_count(&b), T_NBITS);
	assert_int_equal(bitmap_next_clear(&b, 0), T_NBITS);
	assert_int_equal(bitmap_next_clear(&b, 960), T_NBITS);
	assert_int_equal(bitmap_prev_clear(&b, UINT64_MAX), UINT64_MAX);
	bitmap_free(&b);
}

static void test_sizes_without_a_tail(void **state)
{
	struct bitmap b;

	t_init(&b, 0);
	assert_int_equal(bitmap_count(&b), 0);
	assert_int_equal(bitmap_next_clear(&b, 0), 0);
	assert_int_equal(bitmap_next_set(&b, 0), 0);
	assert_int_equal(bitmap_prev_clear(&b, 0), UINT64_MAX);
	assert_true(bitmap_test_and_set(&b, 0));
	bitmap_set_range(&b, 0, 10);
	bitmap_free(&b);

	t_init(&b, 64);
	bitmap_set_range(&b, 0, 64);
	assert_int_equal(bitmap_count(&b), 64);
	assert_int_equal(bitmap_next_clear(&b, 0), 64);
	assert_int_equal(bitmap_prev_clear(&b, 63), UINT64_MAX);
	bitmap_clear(&b, 63);
	assert_int_equal(bitmap_next_clear(&b, 0), 63);
	assert_int_equal(bitmap_prev_clear(&b, 1000), 63);
	bitmap_free(&b);

	t_init(&b, 1);
	assert_int_equal(bitmap_next_clear(&b, 0), 0);
	bitmap_set(&b, 0);
	assert_int_equal(bitmap_next_clear(&b, 0), 1);
	assert_int_equal(bitmap_prev_clear(&b, 0), UINT64_MAX);
	bitmap_free(&b);
}

static void t_expect_range(const struct bitmap *b, uint64_t start, uint64_t end)
{
	for (uint64_t i = 0; i < b->nbits; i++)
		assert_int_equal(bitmap_test(b, i), i >= start && i < end);
	assert_int_equal(bitmap_count(b), end - start);
}

static void test_set_range(void **state)
{
	static const struct { uint64_t start, n, end; } cases[] = {
		{ 0, 0, 0 },            /* empty */
		{ 5, 1, 6 },            /* one bit */
		{ 0, 64, 64 },          /* exactly one word */
		{ 60, 10, 70 },         /* across one boundary */
		{ 63, 2, 65 },
		{ 1, 998, 999 },        /* many whole words, partial both ends */
		{ 64, 896, 960 },       /* whole words only */
		{ 990, 100, 1000 },     /* clamped at nbits */
		{ 0, UINT64_MAX, 1000 },/* n overflowing start + n */
		{ 1000, 5, 1000 },      /* starting past the end: nothing */
	};
	struct bitmap b;

	t_init(&b, T_NBITS);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		uint64_t start = MIN(cases[i].start, cases[i].end);

		bitmap_clear_all(&b);
		bitmap_set_range(&b, cases[i].start, cases[i].n);
		t_expect_range(&b, start, cases[i].end);
	}
	bitmap_free(&b);
}

/* xorshift64: the same sequence on every run. */
static uint64_t t_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* The scans agree with a bit-by-bit reference from every start, at several densities. */
static void test_scans_match_reference(void **state)
{
	static const unsigned pct[] = { 0, 1, 10, 50, 90, 99, 100 };
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	struct bitmap b;

	t_init(&b, T_NBITS);
	for (size_t d = 0; d < ARRAY_SIZE(pct); d++) {
		bool ref[T_NBITS];

		bitmap_clear_all(&b);
		for (uint64_t i = 0; i < T_NBITS; i++) {
			ref[i] = t_rand(&seed) % 100 < pct[d];
			if (ref[i])
				bitmap_set(&b, i);
		}
		for (uint64_t from = 0; from <= T_NBITS + 30; from++) {
			uint64_t ns = T_NBITS, nc = T_NBITS, pc = UINT64_MAX;

			for (uint64_t i = from; i < T_NBITS; i++)
				if (ref[i]) {
					ns = i;
					break;
				}
			for (uint64_t i = from; i < T_NBITS; i++)
				if (!ref[i]) {
					nc = i;
					break;
				}
			for (uint64_t i = MIN(from, T_NBITS - 1) + 1; i-- > 0;)
				if (!ref[i]) {
					pc = i;
					break;
				}
			assert_int_equal(bitmap_next_set(&b, from), ns);
			assert_int_equal(bitmap_next_clear(&b, from), nc);
			assert_int_equal(bitmap_prev_clear(&b, from), pc);
		}
	}
	bitmap_free(&b);
}

#define T_RACE_BITS 100000

struct t_racer {
	struct bitmap *b;
	pthread_barrier_t *go;
	bool *won;              /* T_RACE_BITS entries */
	uint64_t wins;
};

static void *t_race(void *arg)
{
	struct t_racer *r = arg;

	pthread_barrier_wait(r->go);
	for (uint64_t i = 0; i < T_RACE_BITS; i++)
		if (!bitmap_test_and_set(r->b, i)) {
			r->won[i] = true;
			r->wins++;
		}
	return NULL;
}

/* Two threads claim the same 1e5 bits: each bit has exactly one winner. */
/* KVM's dirty log ORed in: bits kept, counted, clamped to nbits. */
static void test_or_words(void **state)
{
	struct bitmap b;
	uint64_t w[3] = { 0x8000000000000001ull, 0, ~0ull };

	(void)state;
	assert_int_equal(bitmap_init(&b, 130), 0);
	bitmap_set(&b, 5);
	bitmap_set(&b, 63);
	/* bits 0, 63 and 128..129 (the rest of word 2 is past nbits) */
	assert_int_equal(bitmap_or_words(&b, w, 3), 4);
	assert_int_equal(bitmap_count(&b), 5);
	assert_true(bitmap_test(&b, 0) && bitmap_test(&b, 5) && bitmap_test(&b, 63));
	assert_true(bitmap_test(&b, 128) && bitmap_test(&b, 129));
	assert_int_equal(bitmap_next_set(&b, 64), 128);
	assert_int_equal(bitmap_or_words(&b, w, 1), 2);	/* n words only */
	assert_int_equal(bitmap_count(&b), 5);
	bitmap_free(&b);
}

static void test_test_and_set_one_winner(void **state)
{
	pthread_barrier_t go;
	struct t_racer r[2];
	pthread_t th[2];
	struct bitmap b;

	t_init(&b, T_RACE_BITS);
	assert_int_equal(pthread_barrier_init(&go, NULL, 2), 0);
	for (int i = 0; i < 2; i++) {
		r[i] = (struct t_racer){ .b = &b, .go = &go };
		r[i].won = calloc(T_RACE_BITS, sizeof(bool));
		assert_non_null(r[i].won);
		assert_int_equal(pthread_create(&th[i], NULL, t_race, &r[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	for (uint64_t i = 0; i < T_RACE_BITS; i++)
		assert_true(r[0].won[i] != r[1].won[i]);
	assert_int_equal(r[0].wins + r[1].wins, T_RACE_BITS);
	assert_int_equal(bitmap_count(&b), T_RACE_BITS);
	print_message("test_and_set race: %llu / %llu wins\n",
		      (unsigned long long)r[0].wins, (unsigned long long)r[1].wins);
	for (int i = 0; i < 2; i++)
		free(r[i].won);
	pthread_barrier_destroy(&go);
	bitmap_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_set_test_clear),
		cmocka_unit_test(test_test_and_set_returns_previous),
		cmocka_unit_test(test_scans_at_word_edges),
		cmocka_unit_test(test_sizes_without_a_tail),
		cmocka_unit_test(test_set_range),
		cmocka_unit_test(test_scans_match_reference),
		cmocka_unit_test(test_or_words),
		cmocka_unit_test(test_test_and_set_one_winner),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
