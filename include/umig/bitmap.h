/*
 * bitmap.h - a fixed-size bitmap over guest pages, safe to share between
 * threads.
 *
 * The migration engine keeps several (sent, requested, present, dirty);
 * the bulk, urgent and fault threads test and set bits concurrently, so
 * every write is an atomic read-modify-write and test_and_set tells the
 * one caller that won.  Scans (next_set, next_clear, prev_clear, count)
 * read words relaxed: a concurrent set may or may not be seen, which the
 * callers tolerate because they re-check with test_and_set.
 */
#ifndef UMIG_BITMAP_H
#define UMIG_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

struct bitmap {
	uint64_t nbits;
	uint64_t *words;   /* accessed with __atomic builtins */
};

/* All bits clear.  Owner frees with bitmap_free(). */
int bitmap_init(struct bitmap *b, uint64_t nbits);
void bitmap_free(struct bitmap *b);

bool bitmap_test(const struct bitmap *b, uint64_t i);
/* Set bit i; returns its previous value (true: somebody set it first). */
bool bitmap_test_and_set(struct bitmap *b, uint64_t i);
void bitmap_set(struct bitmap *b, uint64_t i);
void bitmap_clear(struct bitmap *b, uint64_t i);
void bitmap_set_range(struct bitmap *b, uint64_t start, uint64_t n);
/* Range operations are O(n / 64) and clamped to nbits. */
void bitmap_clear_range(struct bitmap *b, uint64_t start, uint64_t n);
uint64_t bitmap_count_range(const struct bitmap *b, uint64_t start, uint64_t n);
void bitmap_clear_all(struct bitmap *b);
/*
 * OR n words of bits (bit i of word i / 64 = bit i, the layout of KVM's
 * dirty log) into b, clamped to nbits; returns how many bits words held.
 */
uint64_t bitmap_or_words(struct bitmap *b, const uint64_t *words, uint64_t n);
uint64_t bitmap_count(const struct bitmap *b);
/* Set every bit of each aligned unit of `unit` bits that has one set (2 MiB pages). */
void bitmap_round_out(struct bitmap *b, uint64_t unit);
/* First set / clear bit at index >= from, or nbits if none. */
uint64_t bitmap_next_set(const struct bitmap *b, uint64_t from);
uint64_t bitmap_next_clear(const struct bitmap *b, uint64_t from);
/* Last clear bit at index <= from, or UINT64_MAX if none. */
uint64_t bitmap_prev_clear(const struct bitmap *b, uint64_t from);

#endif
