/*
 * bitmap.c - the shared page bitmaps of bitmap.h.
 *
 * Bits live in 64-bit words accessed only through __atomic builtins.
 * Writers use one read-modify-write per word (fetch_or to set, fetch_and
 * to clear) with acquire-release ordering, so test_and_set has exactly
 * one winner per bit and a winner sees everything the previous owner of
 * the word published.  Scans load words relaxed: they are hints the
 * callers confirm with test_and_set, so a stale word only costs a retry.
 *
 * Scans go a word at a time: mask off the bits outside the range in the
 * first word, then ctz/clz on the first non-empty word.  The bits of the
 * last word past nbits are never set (every setter is bounds-checked)
 * and are never reported by a scan (results are clamped to nbits).
 *
 * Out-of-range indices are ignored rather than trusted: test() says
 * false, set()/clear() do nothing, and test_and_set() says true ("not
 * yours"), so that a bad pfn can never make a caller push a page.
 */
#include <errno.h>
#include <stdlib.h>

#include "umig/bitmap.h"
#include "umig/util.h"

#define BITS_PER_WORD 64
#define WORD(i) ((i) / BITS_PER_WORD)
#define BIT(i) (1ull << ((i) % BITS_PER_WORD))

static uint64_t nwords(const struct bitmap *b)
{
	return DIV_ROUND_UP(b->nbits, BITS_PER_WORD);
}

static uint64_t load(const struct bitmap *b, uint64_t w)
{
	return __atomic_load_n(&b->words[w], __ATOMIC_RELAXED);
}

int bitmap_init(struct bitmap *b, uint64_t nbits)
{
	/* At least one word, so that words is never NULL for nbits == 0. */
	uint64_t n = MAX(DIV_ROUND_UP(nbits, BITS_PER_WORD), 1);

	b->nbits = 0;
	b->words = NULL;
	if (n > SIZE_MAX / sizeof(uint64_t))
		return err_set(-ENOMEM, "bitmap: %llu bits is too many",
			       (unsigned long long)nbits);
	b->words = calloc(n, sizeof(uint64_t));
	if (!b->words)
		return err_set(-ENOMEM, "bitmap: out of memory for %llu bits",
			       (unsigned long long)nbits);
	b->nbits = nbits;
	return 0;
}

void bitmap_free(struct bitmap *b)
{
	if (!b)
		return;
	free(b->words);
	b->words = NULL;
	b->nbits = 0;
}

bool bitmap_test(const struct bitmap *b, uint64_t i)
{
	if (i >= b->nbits)
		return false;
	return load(b, WORD(i)) & BIT(i);
}

bool bitmap_test_and_set(struct bitmap *b, uint64_t i)
{
	if (i >= b->nbits)
		return true;
	return __atomic_fetch_or(&b->words[WORD(i)], BIT(i), __ATOMIC_ACQ_REL) & BIT(i);
}

void bitmap_set(struct bitmap *b, uint64_t i)
{
	if (i < b->nbits)
		__atomic_fetch_or(&b->words[WORD(i)], BIT(i), __ATOMIC_ACQ_REL);
}

void bitmap_clear(struct bitmap *b, uint64_t i)
{
	if (i < b->nbits)
		__atomic_fetch_and(&b->words[WORD(i)], ~BIT(i), __ATOMIC_ACQ_REL);
}

/* Bits [start, end) of one word, 0 <= start < end <= 64. */
static uint64_t word_mask(unsigned start, unsigned end)
{
	uint64_t hi = end == BITS_PER_WORD ? ~0ull : (1ull << end) - 1;

	return hi & (~0ull << start);
}

enum range_op { RANGE_SET, RANGE_CLEAR, RANGE_COUNT };

/*
 * Apply op to bits [start, start + n), clamped to nbits: one RMW (or one
 * load, for counting) per word touched, so O(n / 64), not O(n).
 */
static uint64_t bitmap_range(struct bitmap *b, uint64_t start, uint64_t n, enum range_op op)
{
	uint64_t end, count = 0;

	if (start >= b->nbits || n == 0)
		return 0;
	end = n > b->nbits - start ? b->nbits : start + n;
	while (start < end) {
		uint64_t w = WORD(start);
		unsigned lo = start % BITS_PER_WORD;
		unsigned hi = WORD(end - 1) == w ? (end - 1) % BITS_PER_WORD + 1
						 : BITS_PER_WORD;
		uint64_t mask = word_mask(lo, hi);

		if (op == RANGE_SET)
			__atomic_fetch_or(&b->words[w], mask, __ATOMIC_ACQ_REL);
		else if (op == RANGE_CLEAR)
			__atomic_fetch_and(&b->words[w], ~mask, __ATOMIC_ACQ_REL);
		else
			count += (uint64_t)__builtin_popcountll(load(b, w) & mask);
		start = w * BITS_PER_WORD + hi;
	}
	return count;
}

void bitmap_set_range(struct bitmap *b, uint64_t start, uint64_t n)
{
	bitmap_range(b, start, n, RANGE_SET);
}

void bitmap_clear_range(struct bitmap *b, uint64_t start, uint64_t n)
{
	bitmap_range(b, start, n, RANGE_CLEAR);
}

uint64_t bitmap_count_range(const struct bitmap *b, uint64_t start, uint64_t n)
{
	/* counting only loads: the cast drops const for the shared walker */
	return bitmap_range((struct bitmap *)b, start, n, RANGE_COUNT);
}

void bitmap_clear_all(struct bitmap *b)
{
	for (uint64_t w = 0; w < nwords(b); w++)
		__atomic_store_n(&b->words[w], 0, __ATOMIC_RELEASE);
}

uint64_t bitmap_or_words(struct bitmap *b, const uint64_t *words, uint64_t n)
{
	uint64_t count = 0, last = b->nbits % BITS_PER_WORD ? BIT(b->nbits) - 1 : ~0ull;

	n = MIN(n, nwords(b));
	for (uint64_t w = 0; w < n; w++) {
		uint64_t x = w + 1 == nwords(b) ? words[w] & last : words[w];

		if (!x)
			continue;
		__atomic_fetch_or(&b->words[w], x, __ATOMIC_ACQ_REL);
		count += __builtin_popcountll(x);
	}
	return count;
}

uint64_t bitmap_count(const struct bitmap *b)
{
	uint64_t n = 0;

	for (uint64_t w = 0; w < nwords(b); w++)
		n += (uint64_t)__builtin_popcountll(load(b, w));
	return n;
}

/*
 * The first bit >= from that is set in the words (inverted if `invert`),
 * or nbits.  Bits past nbits in the last word read as 0, which inverted
 * become 1, so the first of them is bit nbits itself and reads as "none";
 * the clamp keeps it that way should a tail bit ever be set.
 */
static uint64_t scan_forward(const struct bitmap *b, uint64_t from, bool invert)
{
	uint64_t n = nwords(b);
	uint64_t w, word;

	if (from >= b->nbits)
		return b->nbits;
	w = WORD(from);
	word = (invert ? ~load(b, w) : load(b, w)) & (~0ull << (from % BITS_PER_WORD));
	for (;;) {
		if (word) {
			uint64_t i = w * BITS_PER_WORD + (uint64_t)__builtin_ctzll(word);

			return MIN(i, b->nbits);
		}
		if (++w == n)
			return b->nbits;
		word = invert ? ~load(b, w) : load(b, w);
	}
}

uint64_t bitmap_next_set(const struct bitmap *b, uint64_t from)
{
	return scan_forward(b, from, false);
}

uint64_t bitmap_next_clear(const struct bitmap *b, uint64_t from)
{
	return scan_forward(b, from, true);
}

/* Starting at from (clamped to nbits - 1), so the tail is never seen. */
uint64_t bitmap_prev_clear(const struct bitmap *b, uint64_t from)
{
	uint64_t w, word;

	if (b->nbits == 0)
		return UINT64_MAX;
	if (from >= b->nbits)
		from = b->nbits - 1;
	w = WORD(from);
	word = ~load(b, w) & word_mask(0, from % BITS_PER_WORD + 1);
	for (;;) {
		if (word)
			return w * BITS_PER_WORD + 63 - (uint64_t)__builtin_clzll(word);
		if (w-- == 0)
			return UINT64_MAX;
		word = ~load(b, w);
	}
}

void bitmap_round_out(struct bitmap *b, uint64_t unit)
{
	for (uint64_t i = bitmap_next_set(b, 0); i < b->nbits; i = bitmap_next_set(b, i)) {
		uint64_t first = i - i % unit, n = MIN(unit, b->nbits - first);

		bitmap_set_range(b, first, n);
		i = first + n;
		if (i >= b->nbits)
			break;
	}
}
