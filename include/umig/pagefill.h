/*
 * pagefill.h - what the test guests write into their pages, so that the
 * compressor and the delta encoder are measured on the data the guests
 * really produce.
 *
 * Shared, header-only, by the freestanding guests (dirty, memverify), the
 * unit tests and bench/codec-speed: one definition of "text-like" for all.
 * Every word is a pure function of (page, word, generation), so memverify
 * can still check each word it reads.  Freestanding: integers only, no
 * libc, no floating point.
 *
 *   zero    pages of zeroes (apart from what a guest stores in them)
 *   random  incompressible words
 *   text    words of English, log and code text from two small tables:
 *           about 2x compressible by lz4 and 3x by zstd (measured
 *           figures in docs/compression.md)
 *   mixed   per page, fixed for the page's lifetime: 1/4 zero, 1/4
 *           random, 1/2 text -- roughly a VM's mix of untouched, cached
 *           and compressed/encrypted, and text or heap pages
 */
#ifndef UMIG_PAGEFILL_H
#define UMIG_PAGEFILL_H

#include <stdint.h>

enum pagefill { PAGEFILL_ZERO, PAGEFILL_RANDOM, PAGEFILL_TEXT, PAGEFILL_MIXED };

#define PAGEFILL_NAMES { "zero", "random", "text", "mixed" }
#define PAGEFILL_COUNT 4

/* splitmix64's finalizer: a bijection, so distinct inputs stay distinct. */
static inline uint64_t pagefill_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/*
 * A hash of (page, word < 512, generation).  One mix: the guests compute
 * it for every word they check, under an emulated CPU.
 */
static inline uint64_t pagefill_hash(uint64_t page, uint64_t word, uint64_t gen)
{
	return pagefill_mix64(((page << 9) | word) ^ (gen * 0x9e3779b97f4a7c15ull));
}

/*
 * Text is built from two tables: whole 8-byte phrases (a quarter of the
 * words, chosen with a skew -- ANDing two bytes of the hash favours the
 * early, common entries as word frequencies in text do) and 4-byte
 * fragments paired at random (the rest), which give the entropy of
 * running text that a phrase table alone lacks.  Tuned by measurement to
 * land near real text's ratios; see docs/compression.md.  No NUL bytes.
 */
static const char pagefill_phrases[64][8] = {
	"the     ", "of the  ", "and the ", "to the  ", "in the  ", "is a    ",
	"that is ", "for the ", "it was  ", "as the  ", "with a  ", "be the  ",
	"by the  ", "on the  ", "not the ", "he said ", "this is ", "are not ",
	"or the  ", "from a  ", "at the  ", "which is", " but the", "have a  ",
	"an old  ", "had the ", "they are", "you can ", "were in ", "their   ",
	"one of  ", "all the ", "we have ", "can be  ", "there is", "been a  ",
	"if the  ", "more of ", "when it ", "will be ", "would be", "who was ",
	"memory: ", "page    ", "guest   ", "host    ", "migrate ", "network ",
	"kernel: ", "process ", "error:  ", "value = ", "buffer  ", "0x7fff  ",
	"/usr/lib", "/bin/sh ", "INFO    ", "WARN    ", "\n       ", ".\n      ",
	"return 0", "struct  ", "int i;  ", "NULL);\n ",
};

static const char pagefill_frags[64][4] = {
	"the ", "and ", "ing ", "tion", " of ", "ent ", "for ", "her ",
	"that", "ter ", "was ", "his ", "ere ", "con ", "res ", "ver ",
	"all ", "ons ", "nce ", "men ", "ith ", "ted ", "ers ", "pro ",
	"thi ", "wit ", "are ", "ess ", "not ", "ive ", "ly, ", "ect ",
	"rea ", "com ", "eve ", "per ", "int ", "est ", "sta ", "cti ",
	"ica ", "ist ", "ear ", "ain ", "one ", "our ", "iti ", "rat ",
	"page", "mem ", "err ", "0x7f", "/usr", "lib ", "INFO", "ret ",
	"int ", ";\n  ", "NULL", "= 0 ", ".\n  ", ", a ", "is a", "a th",
};

/*
 * A text-like word for (page, word, generation): the word whose bytes in
 * memory are the phrase, or the two fragments (loads, in host order).
 */
static inline uint64_t pagefill_text_word(uint64_t page, uint64_t word, uint64_t gen)
{
	uint64_t h = pagefill_hash(page, word, gen), v;
	uint32_t a, b;

	if (((h >> 20) & 3) == 0) {
		__builtin_memcpy(&v, pagefill_phrases[(h & (h >> 8)) & 63], 8);
		return v;
	}
	__builtin_memcpy(&a, pagefill_frags[(h >> 32) & 63], 4);
	__builtin_memcpy(&b, pagefill_frags[(h >> 40) & 63], 4);
	__builtin_memcpy((char *)&v, &a, 4);
	__builtin_memcpy((char *)&v + 4, &b, 4);
	return v;
}

/* The kind of page under fill: PAGEFILL_MIXED resolves per page. */
static inline enum pagefill pagefill_kind(enum pagefill fill, uint64_t page)
{
	uint64_t h;

	if (fill != PAGEFILL_MIXED)
		return fill;
	h = pagefill_mix64(page ^ 0x6d69786564ull) & 3;	/* "mixed" */
	return h == 0 ? PAGEFILL_ZERO : h == 1 ? PAGEFILL_RANDOM : PAGEFILL_TEXT;
}

/*
 * Word `word` of page `page` at generation gen, for a page of kind
 * (not PAGEFILL_MIXED: resolve with pagefill_kind() first).
 */
static inline uint64_t pagefill_word(enum pagefill kind, uint64_t page, uint64_t word,
				     uint64_t gen)
{
	switch (kind) {
	case PAGEFILL_RANDOM:
		return pagefill_hash(page, word, gen);
	case PAGEFILL_TEXT:
		return pagefill_text_word(page, word, gen);
	default:
		return 0;
	}
}

#endif
