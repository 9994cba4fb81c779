/*
 * test-codec.c - page compression (codec.h), its adaptive chooser and the
 * delta encoding of re-sent pages (delta.h).
 *
 * The pages are the guests' own (pagefill.h), so "text" here is the text
 * the dirty and memverify guests write.  Decoders face untrusted bytes: the
 * refusal tests cut and flip every part of real encoded data and check
 * both the error and that nothing was written past the destination.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t-util.h"
#include "umig/codec.h"
#include "umig/delta.h"
#include "umig/pagefill.h"
#include "umig/util.h"

#define CANARY 0xa5
#define SLACK 64	/* canary bytes after every destination buffer */

/* npages of fill (zero: all zero) at generation gen, from page first. */
static uint8_t *t_pages(enum pagefill fill, size_t npages, uint64_t first, uint64_t gen)
{
	uint64_t *w = malloc(npages * PAGE_SIZE);
	size_t p, i;

	assert_non_null(w);
	for (p = 0; p < npages; p++) {
		enum pagefill k = pagefill_kind(fill, first + p);

		for (i = 0; i < PAGE_SIZE / 8; i++)
			w[p * 512 + i] = pagefill_word(k, first + p, i, gen);
	}
	return (uint8_t *)w;
}

static uint8_t *t_dst(size_t n)
{
	uint8_t *d = malloc(n + SLACK);

	assert_non_null(d);
	memset(d, CANARY, n + SLACK);
	return d;
}

static void t_canary_intact(const uint8_t *d, size_t n)
{
	for (size_t i = 0; i < SLACK; i++)
		assert_int_equal(d[n + i], CANARY);
}

struct t_codecs {
	struct codec_enc *e;
	struct codec_dec *d;
};

static int t_setup(void **state)
{
	struct t_codecs *c = calloc(1, sizeof(*c));

	if (!c || codec_enc_new(NULL, &c->e) || codec_dec_new(&c->d))
		return -1;
	*state = c;
	return 0;
}

static int t_teardown(void **state)
{
	struct t_codecs *c = *state;

	codec_enc_free(c->e);
	codec_dec_free(c->d);
	free(c);
	return 0;
}

/* Encode and decode; returns the encoded length (CODEC_RAW if raw). */
static long t_round_trip(struct t_codecs *c, enum codec_kind kind, const uint8_t *src,
			 size_t npages)
{
	size_t n = npages * PAGE_SIZE;
	uint8_t *enc = t_dst(n), *out = t_dst(n);
	long len = codec_encode(c->e, kind, src, npages, enc, n);

	assert_true(len >= 0);
	assert_true((size_t)len < n);
	t_canary_intact(enc, n);
	if (len > 0) {
		assert_int_equal(codec_decode(c->d, kind, enc, (size_t)len, out, npages), 0);
		assert_memory_equal(out, src, n);
		t_canary_intact(out, n);
	}
	free(enc);
	free(out);
	return len;
}

static void test_codec_round_trips(void **state)
{
	struct t_codecs *c = *state;
	static const size_t sizes[] = { 1, 3, 64 };
	enum codec_kind kinds[] = { CODEC_LZ4, CODEC_ZSTD };

	for (unsigned k = 0; k < ARRAY_SIZE(kinds); k++) {
		for (unsigned s = 0; s < ARRAY_SIZE(sizes); s++) {
			size_t np = sizes[s], n = np * PAGE_SIZE;
			uint8_t *zero = calloc(np, PAGE_SIZE);
			uint8_t *text = t_pages(PAGEFILL_TEXT, np, 7, 1);
			uint8_t *mixed = t_pages(PAGEFILL_MIXED, np, 100, 2);
			uint8_t *rnd = t_pages(PAGEFILL_RANDOM, np, 0, 0);
			long len;

			/* zero pages shrink to almost nothing */
			len = t_round_trip(c, kinds[k], zero, np);
			assert_true(len > 0 && (size_t)len < n / 50 + CODEC_HDR_SIZE + 16);
			/* text: 1.25x in a page alone, 1.5x once matches span pages */
			len = t_round_trip(c, kinds[k], text, np);
			assert_true(len > 0);
			if (np == 1)
				assert_true((size_t)len * 5 < n * 4);
			else
				assert_true((size_t)len * 3 < n * 2);
			len = t_round_trip(c, kinds[k], mixed, np);
			assert_true(len > 0);
			/* random pages never expand: they travel raw */
			assert_int_equal(t_round_trip(c, kinds[k], rnd, np), CODEC_RAW);
			free(zero);
			free(text);
			free(mixed);
			free(rnd);
		}
	}
}

static void test_codec_stats_and_none(void **state)
{
	struct t_codecs *c = *state;
	uint8_t *text = t_pages(PAGEFILL_TEXT, 4, 0, 0), *dst = t_dst(4 * PAGE_SIZE);
	const struct codec_stats *st = codec_enc_stats(c->e, CODEC_LZ4);
	uint64_t b0 = st->batches, in0 = st->bytes_in;
	long len;

	assert_int_equal(codec_encode(c->e, CODEC_NONE, text, 4, dst, 4 * PAGE_SIZE), CODEC_RAW);
	len = codec_encode(c->e, CODEC_LZ4, text, 4, dst, 4 * PAGE_SIZE);
	assert_true(len > 0);
	assert_true(st->batches == b0 + 1);
	assert_true(st->bytes_in == in0 + 4 * PAGE_SIZE);
	/* a destination too small for the result means raw, not overflow */
	assert_int_equal(codec_encode(c->e, CODEC_LZ4, text, 4, dst, (size_t)len - 1), CODEC_RAW);
	assert_int_equal(codec_encode(c->e, CODEC_ZSTD, text, 4, dst, 8), CODEC_RAW);
	t_canary_intact(dst, 4 * PAGE_SIZE);
	assert_true(st->raw >= 1);
	free(text);
	free(dst);
}

static void test_codec_bad_args(void **state)
{
	struct t_codecs *c = *state;
	uint8_t page[PAGE_SIZE] = { 0 }, out[PAGE_SIZE];
	struct codec_opts bad = { .zstd_level = 40 };
	struct codec_enc *e = NULL;
	enum codec_mode m;

	assert_int_equal(codec_encode(c->e, CODEC_LZ4, page, 0, out, sizeof(out)), -EINVAL);
	assert_int_equal(codec_encode(c->e, CODEC_LZ4, page, CODEC_MAX_PAGES + 1, out, 1), -EINVAL);
	assert_int_equal(codec_encode(c->e, (enum codec_kind)7, page, 1, out, sizeof(out)), -EINVAL);
	assert_int_equal(codec_decode(c->d, CODEC_NONE, page, 100, out, 1), -EINVAL);
	assert_int_equal(codec_enc_new(&bad, &e), -EINVAL);
	assert_null(e);
	assert_int_equal(codec_mode_parse("auto", &m), 0);
	assert_int_equal(m, CODEC_MODE_AUTO);
	assert_int_equal(codec_mode_parse("zstd", &m), 0);
	assert_int_equal(m, CODEC_MODE_ZSTD);
	assert_int_equal(codec_mode_parse("gzip", &m), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "none|lz4|zstd|auto"));
	assert_string_equal(codec_kind_name(CODEC_LZ4), "lz4");
}

/* Every truncation and every single-byte flip of a real batch is refused. */
static void t_refuses_damage(struct t_codecs *c, enum codec_kind kind)
{
	size_t np = 8, n = np * PAGE_SIZE, cut, i, refused = 0;
	uint8_t *src = t_pages(PAGEFILL_MIXED, np, 3, 5), *enc = t_dst(n), *out = t_dst(n);
	uint8_t *bad = malloc(n);
	long len = codec_encode(c->e, kind, src, np, enc, n);

	assert_true(len > CODEC_HDR_SIZE);
	for (cut = 0; cut < (size_t)len; cut++) {
		assert_int_equal(codec_decode(c->d, kind, enc, cut, out, np), -EBADMSG);
		t_canary_intact(out, n);
	}
	/*
	 * A flip may leave the output unchanged (a match offset moved to
	 * identical bytes, a frame flag that does not matter): then success
	 * is right.  What must never happen is success with other pages.
	 */
	for (i = 0; i < (size_t)len; i++) {
		int rc;

		memcpy(bad, enc, (size_t)len);
		bad[i] ^= (uint8_t)(1u << (i % 8));
		rc = codec_decode(c->d, kind, bad, (size_t)len, out, np);
		if (rc == 0 && memcmp(out, src, n))
			fail_msg("%s: a flip of byte %zu of %ld decoded into wrong pages",
				 codec_kind_name(kind), i, len);
		if (rc)
			assert_int_equal(rc, -EBADMSG);
		refused += rc != 0;
		t_canary_intact(out, n);
	}
	assert_true(refused * 10 >= (size_t)len * 9);
	/* trailing garbage, the wrong page count, the wrong kind */
	memcpy(bad, enc, (size_t)len);
	bad[len] = 0;
	assert_int_equal(codec_decode(c->d, kind, bad, (size_t)len + 1, out, np), -EBADMSG);
	assert_int_equal(codec_decode(c->d, kind, enc, (size_t)len, out, np - 1), -EBADMSG);
	assert_non_null(strstr(err_msg(-EBADMSG), "expected 7"));
	assert_int_equal(codec_decode(c->d, kind, enc, (size_t)len, out, np + 1), -EBADMSG);
	t_canary_intact(out, n);
	assert_int_equal(codec_decode(c->d, kind == CODEC_LZ4 ? CODEC_ZSTD : CODEC_LZ4, enc,
				      (size_t)len, out, np), -EBADMSG);
	/* and the intact batch still decodes */
	assert_int_equal(codec_decode(c->d, kind, enc, (size_t)len, out, np), 0);
	assert_memory_equal(out, src, n);
	free(src);
	free(enc);
	free(out);
	free(bad);
}

static void test_codec_lz4_refuses_damage(void **state)
{
	t_refuses_damage(*state, CODEC_LZ4);
}

static void test_codec_zstd_refuses_damage(void **state)
{
	t_refuses_damage(*state, CODEC_ZSTD);
}

/*
 * Regression guard for the size check: a genuine batch of 2 pages offered
 * as 1 page must not decode "successfully" into the first page.
 */
static void test_codec_refuses_size_mismatch(void **state)
{
	struct t_codecs *c = *state;
	uint8_t *src = t_pages(PAGEFILL_TEXT, 2, 0, 0), *enc = t_dst(2 * PAGE_SIZE);
	uint8_t *out = t_dst(2 * PAGE_SIZE);
	long len = codec_encode(c->e, CODEC_LZ4, src, 2, enc, 2 * PAGE_SIZE);

	assert_true(len > 0);
	/* rewrite the header's page count so only the size can tell */
	enc[4] = 1;
	assert_int_equal(codec_decode(c->d, CODEC_LZ4, enc, (size_t)len, out, 1), -EBADMSG);
	t_canary_intact(out, PAGE_SIZE);	/* 1 page: nothing past it */
	free(src);
	free(enc);
	free(out);
}

/* --- the chooser, driven by a simulated sender --------------------------- */

struct t_world {
	double link_bps, prod_bps;	/* link, and raw page production */
	double comp_bps[CODEC_NKINDS], ratio[CODEC_NKINDS];
};

/*
 * One 256 KiB batch of kind k in w: the thread produces and compresses it
 * (CPU), the kernel drains the socket in parallel (link), and the thread
 * waits for whichever is slower.
 */
static void t_batch(const struct t_world *w, enum codec_kind k, struct codec_auto_sample *s)
{
	double in = 256 * 1024, out = k ? in / w->ratio[k] : in;
	double codec = k ? in / w->comp_bps[k] * 1e9 : 0;
	double cpu = in / w->prod_bps * 1e9 + codec, link = out / w->link_bps * 1e9;
	double elapsed = MAX(cpu, link);

	s->kind = k;
	s->in_bytes = (uint64_t)in;
	s->out_bytes = (uint64_t)out;
	s->codec_ns = (uint64_t)codec;
	s->wire_ns = (uint64_t)(elapsed - cpu);
	s->elapsed_ns = (uint64_t)elapsed;
}

/* Run n batches; returns how many of the last n/2 used each kind. */
static void t_run_world(struct codec_auto *a, const struct t_world *w, unsigned n,
			unsigned used[CODEC_NKINDS])
{
	struct codec_auto_sample s;
	enum codec_kind k = a->next;

	memset(used, 0, CODEC_NKINDS * sizeof(used[0]));
	for (unsigned i = 0; i < n; i++) {
		t_batch(w, k, &s);
		if (i >= n / 2)
			used[k]++;
		k = codec_auto_update(a, &s);
	}
}

/* Speeds and ratios as bench/codec-speed measured them on text pages. */
#define MB 1e6
static const struct t_world slow_link = {	/* 100 MB/s link, idle CPU */
	.link_bps = 100 * MB, .prod_bps = 4000 * MB,
	.comp_bps = { 0, 400 * MB, 300 * MB }, .ratio = { 1, 2.0, 3.2 },
};
static const struct t_world fast_link = {	/* the link outruns page production */
	.link_bps = 10000 * MB, .prod_bps = 4000 * MB,
	.comp_bps = { 0, 400 * MB, 300 * MB }, .ratio = { 1, 2.0, 3.2 },
};
static const struct t_world busy_cpu = {	/* 1 GB/s link, compressors starved */
	.link_bps = 1000 * MB, .prod_bps = 4000 * MB,
	.comp_bps = { 0, 300 * MB, 120 * MB }, .ratio = { 1, 2.0, 3.2 },
};

static void test_auto_link_bound_compresses(void **state)
{
	struct codec_auto a;
	unsigned used[CODEC_NKINDS];

	(void)state;
	codec_auto_init(&a, NULL);
	t_run_world(&a, &slow_link, 400, used);
	/* zstd: min(300, 3.2 * 100) beats lz4's min(400, 2 * 100) and raw's 100 */
	assert_int_equal(a.cur, CODEC_ZSTD);
	assert_true(used[CODEC_ZSTD] >= 190);
	assert_true(fabs(a.link_bps - 100 * MB) < 5 * MB);
	assert_true(codec_auto_rate(&a, CODEC_ZSTD) > 2.5 * codec_auto_rate(&a, CODEC_NONE));

	/* lz4 alone: still worth it, 200 against 100 */
	codec_auto_init(&a, &(struct codec_auto_cfg){ .allowed = 1u << CODEC_LZ4 });
	t_run_world(&a, &slow_link, 400, used);
	assert_int_equal(a.cur, CODEC_LZ4);
	assert_int_equal(used[CODEC_ZSTD], 0);
	assert_true(used[CODEC_LZ4] >= 190);
}

static void test_auto_cpu_bound_stays_raw(void **state)
{
	struct codec_auto a;
	unsigned used[CODEC_NKINDS];

	(void)state;
	codec_auto_init(&a, NULL);
	t_run_world(&a, &fast_link, 400, used);
	assert_int_equal(a.cur, CODEC_NONE);
	assert_true(used[CODEC_NONE] >= 190);	/* probes are the rest */
	assert_true(isinf(codec_auto_rate(&a, CODEC_NONE)));	/* raw is not link-bound */

	codec_auto_init(&a, NULL);
	t_run_world(&a, &busy_cpu, 400, used);
	assert_int_equal(a.cur, CODEC_NONE);
	assert_true(used[CODEC_NONE] >= 190);
	assert_int_equal(a.switches, 0);
}

static void test_auto_switches_both_ways(void **state)
{
	struct t_world w = slow_link;
	struct codec_auto a;
	unsigned used[CODEC_NKINDS];

	(void)state;
	codec_auto_init(&a, NULL);
	t_run_world(&a, &w, 300, used);
	assert_int_equal(a.cur, CODEC_ZSTD);
	/* the CPU gets busy (the guest, the other end): compressing now costs */
	w.link_bps = 1000 * MB;
	w.comp_bps[CODEC_LZ4] = 300 * MB;
	w.comp_bps[CODEC_ZSTD] = 120 * MB;
	t_run_world(&a, &w, 600, used);
	assert_int_equal(a.cur, CODEC_NONE);
	assert_true(used[CODEC_NONE] >= 280);
	/* and the link is the bottleneck again */
	t_run_world(&a, &slow_link, 600, used);
	assert_int_equal(a.cur, CODEC_ZSTD);
	assert_true(used[CODEC_ZSTD] >= 280);
	assert_true(a.switches >= 3 && a.switches <= 6);
}

static void test_auto_incompressible_goes_raw(void **state)
{
	struct t_world w = slow_link;
	struct codec_auto a;
	unsigned used[CODEC_NKINDS];

	(void)state;
	codec_auto_init(&a, NULL);
	t_run_world(&a, &w, 300, used);
	assert_int_equal(a.cur, CODEC_ZSTD);
	/* the guest now writes random data: every batch comes back raw */
	w.ratio[CODEC_LZ4] = w.ratio[CODEC_ZSTD] = 1.0;
	t_run_world(&a, &w, 300, used);
	assert_int_equal(a.cur, CODEC_NONE);
}

static void test_auto_hysteresis_holds(void **state)
{
	struct t_world w = slow_link;
	struct codec_auto a;
	unsigned used[CODEC_NKINDS];

	(void)state;
	/* lz4 sustains 108 MB/s against raw's 100: within the 15% margin */
	w.comp_bps[CODEC_LZ4] = 108 * MB;
	codec_auto_init(&a, &(struct codec_auto_cfg){ .allowed = 1u << CODEC_LZ4 });
	t_run_world(&a, &w, 400, used);
	assert_int_equal(a.cur, CODEC_NONE);
	assert_int_equal(a.switches, 0);
	/* noise: just better, just worse, every other batch (mean 110) */
	for (unsigned i = 0; i < 640; i++) {
		w.comp_bps[CODEC_LZ4] = (i & 1 ? 125 : 95) * MB;
		t_run_world(&a, &w, 1, used);
	}
	assert_int_equal(a.switches, 0);
	/* the same noise around 130: it switches to lz4 once, and stays */
	for (unsigned i = 0; i < 640; i++) {
		w.comp_bps[CODEC_LZ4] = (i & 1 ? 150 : 110) * MB;
		t_run_world(&a, &w, 1, used);
	}
	assert_int_equal(a.cur, CODEC_LZ4);
	assert_int_equal(a.switches, 1);
	/* ignored samples change nothing */
	struct codec_auto before = a;
	codec_auto_update(&a, &(struct codec_auto_sample){ .kind = CODEC_LZ4 });
	assert_true(a.link_bps == before.link_bps);
}

static void test_auto_window_sums_batches(void **state)
{
	struct codec_auto_sample win = { 0 }, b = { .kind = CODEC_LZ4, .in_bytes = 262144,
		.out_bytes = 131072, .codec_ns = 600000, .wire_ns = 100000, .elapsed_ns = 2000000 };
	int done = 0;
	unsigned n;

	(void)state;
	for (n = 1; !done; n++)
		done = codec_auto_window_add(&win, &b, CODEC_AUTO_WINDOW_NS);
	assert_int_equal(n - 1, 5);	/* 5 x 2 ms */
	assert_true(win.in_bytes == 5 * 262144ull && win.out_bytes == 5 * 131072ull);
	assert_true(win.codec_ns == 3000000 && win.wire_ns == 500000);
	assert_true(win.elapsed_ns == 10000000);
	/* a batch of another kind starts a new window */
	b.kind = CODEC_NONE;
	assert_int_equal(codec_auto_window_add(&win, &b, CODEC_AUTO_WINDOW_NS), 0);
	assert_int_equal(win.kind, CODEC_NONE);
	assert_true(win.in_bytes == 262144 && win.elapsed_ns == 2000000);
}

/* --- delta ------------------------------------------------------------------ */

/* Page p as the dirty guest leaves it: fill, with `stores` words rewritten. */
static void t_dirty_page(uint8_t *page, enum pagefill fill, uint64_t p, unsigned stores,
			 uint64_t gen)
{
	uint64_t *w = (uint64_t *)page;
	enum pagefill k = pagefill_kind(fill, p);

	for (unsigned i = 0; i < 512; i++)
		w[i] = pagefill_word(k, p, i, 0);
	for (unsigned i = 0; i < stores; i++)
		w[i * (512 / stores)] = k == PAGEFILL_ZERO ? gen : pagefill_word(k, p, i, gen);
}

static void test_delta_round_trips(void **state)
{
	struct delta_cache *c;
	uint8_t v0[PAGE_SIZE], v1[PAGE_SIZE], rx[PAGE_SIZE], d[DELTA_MAX_SIZE];
	static const enum pagefill fills[] = { PAGEFILL_ZERO, PAGEFILL_RANDOM, PAGEFILL_TEXT,
					       PAGEFILL_MIXED };
	static const unsigned stores[] = { 1, 8, 64 };
	int n;

	(void)state;
	assert_int_equal(delta_cache_new(1 << 20, NULL, &c), 0);
	for (unsigned f = 0; f < ARRAY_SIZE(fills); f++) {
		for (unsigned s = 0; s < ARRAY_SIZE(stores); s++) {
			uint64_t pfn = f * 10 + s;

			t_dirty_page(v0, fills[f], pfn, stores[s], 1);
			t_dirty_page(v1, fills[f], pfn, stores[s], 2);
			assert_int_equal(delta_encode(c, pfn, v0, d, sizeof(d)), 0); /* miss */
			memcpy(rx, v0, PAGE_SIZE);	/* what the receiver got raw */
			n = delta_encode(c, pfn, v1, d, sizeof(d));
			/* per changed word: 8 bytes, its length, a gap of up to 2 bytes */
			assert_true(n > DELTA_HDR_SIZE);
			assert_true(n <= DELTA_HDR_SIZE + (int)stores[s] * 11);
			assert_int_equal(delta_decode(rx, d, (size_t)n, rx), 0);
			assert_memory_equal(rx, v1, PAGE_SIZE);
		}
	}
	/* an unchanged page is a bare header, and applies as one */
	memcpy(rx, v1, PAGE_SIZE);
	assert_int_equal(delta_encode(c, 32, v1, d, sizeof(d)), DELTA_HDR_SIZE);
	assert_int_equal(delta_decode(rx, d, DELTA_HDR_SIZE, rx), 0);
	assert_memory_equal(rx, v1, PAGE_SIZE);
	assert_true(delta_cache_stats(c)->unchanged == 1);
	assert_true(delta_cache_stats(c)->hits == 13);
	assert_true(delta_cache_stats(c)->lookups == 25);
	assert_true(delta_cache_stats(c)->bytes_delta < delta_cache_stats(c)->bytes_raw / 10);
	delta_cache_free(c);
}

static void test_delta_fully_changed_is_raw(void **state)
{
	struct delta_cache *c;
	uint8_t *v0 = t_pages(PAGEFILL_TEXT, 1, 9, 0), *v1 = t_pages(PAGEFILL_TEXT, 1, 9, 1);
	uint8_t *r0 = t_pages(PAGEFILL_RANDOM, 1, 9, 0), *r1 = t_pages(PAGEFILL_RANDOM, 1, 9, 1);
	uint8_t d[DELTA_MAX_SIZE], rx[PAGE_SIZE];
	struct delta_cfg any = { .max_permille = 1000 };

	(void)state;
	assert_int_equal(delta_cache_new(64 << 10, &any, &c), 0);
	assert_int_equal(delta_encode(c, 9, r0, d, sizeof(d)), 0);
	assert_int_equal(delta_encode(c, 9, r1, d, sizeof(d)), 0);	/* every byte changed */
	assert_true(delta_cache_stats(c)->too_big == 1);
	/* the cache took the raw version: the next delta is against r1 */
	memcpy(rx, r1, PAGE_SIZE);
	r1[100] ^= 1;
	assert_int_equal(delta_encode(c, 9, r1, d, sizeof(d)), DELTA_HDR_SIZE + 3);
	assert_int_equal(delta_decode(rx, d, DELTA_HDR_SIZE + 3, rx), 0);
	assert_memory_equal(rx, r1, PAGE_SIZE);
	delta_cache_free(c);

	/* text rewritten everywhere: with the default half-page limit, raw */
	assert_int_equal(delta_cache_new(64 << 10, NULL, &c), 0);
	assert_int_equal(delta_encode(c, 1, v0, d, sizeof(d)), 0);
	assert_int_equal(delta_encode(c, 1, v1, d, sizeof(d)), 0);
	/* and a dst too small for a delta means raw, never an overrun */
	v0[0] ^= 0xff;
	assert_int_equal(delta_encode(c, 1, v0, d, DELTA_HDR_SIZE), 0);
	delta_cache_free(c);
	free(v0);
	free(v1);
	free(r0);
	free(r1);
}

static void test_delta_refusals(void **state)
{
	struct delta_cache *c;
	uint8_t v0[PAGE_SIZE], v1[PAGE_SIZE], v2[PAGE_SIZE], rx[PAGE_SIZE], keep[PAGE_SIZE];
	uint8_t d[DELTA_MAX_SIZE], bad[DELTA_MAX_SIZE];
	int n, n2;

	(void)state;
	assert_int_equal(delta_cache_new(64 << 10, NULL, &c), 0);
	t_dirty_page(v0, PAGEFILL_TEXT, 5, 8, 1);
	t_dirty_page(v1, PAGEFILL_TEXT, 5, 8, 2);
	t_dirty_page(v2, PAGEFILL_TEXT, 5, 8, 3);
	delta_encode(c, 5, v0, d, sizeof(d));
	n = delta_encode(c, 5, v1, d, sizeof(d));
	assert_true(n > 0);

	/* the receiver does not have the page */
	assert_int_equal(delta_decode(NULL, d, (size_t)n, rx), -ENOENT);
	assert_non_null(strstr(err_msg(-ENOENT), "does not have"));
	/* its copy is not the base: zeroes, a newer version */
	memset(rx, 0, sizeof(rx));
	assert_int_equal(delta_decode(rx, d, (size_t)n, rx), -ESTALE);
	assert_non_null(strstr(err_msg(-ESTALE), "another version"));
	memcpy(rx, v1, PAGE_SIZE);
	assert_int_equal(delta_decode(rx, d, (size_t)n, rx), -ESTALE);
	assert_memory_equal(rx, v1, PAGE_SIZE);
	/* a delta skipped: v2's delta is against v1, the receiver has v0 */
	n2 = delta_encode(c, 5, v2, bad, sizeof(bad));
	assert_true(n2 > 0);
	memcpy(rx, v0, PAGE_SIZE);
	assert_int_equal(delta_decode(rx, bad, (size_t)n2, rx), -ESTALE);

	/* every truncation and every flipped byte: refused, nothing written */
	memcpy(keep, v0, PAGE_SIZE);
	for (int cut = 0; cut < n; cut++) {
		int rc = delta_decode(rx, d, (size_t)cut, rx);

		/* a cut on a run boundary is a well-formed shorter delta: its hash fails */
		assert_true(rc == -EBADMSG);
		assert_memory_equal(rx, keep, PAGE_SIZE);
	}
	for (int i = 0; i < n; i++) {
		int rc;

		memcpy(bad, d, (size_t)n);
		bad[i] ^= 0x10;
		rc = delta_decode(rx, bad, (size_t)n, rx);
		if (!(rc == -EBADMSG || (rc == -ESTALE && i >= 4 && i < 8)))
			print_message("byte %d rc %d\n", i, rc);
		assert_true(rc == -EBADMSG || (rc == -ESTALE && i >= 4 && i < 8));
		assert_memory_equal(rx, keep, PAGE_SIZE);
	}
	/* a run that reaches past the page */
	memcpy(bad, d, DELTA_HDR_SIZE);
	bad[DELTA_HDR_SIZE] = 0xff;
	bad[DELTA_HDR_SIZE + 1] = 0x1f;	/* 4095 unchanged */
	bad[DELTA_HDR_SIZE + 2] = 2;	/* then 2 changed */
	bad[DELTA_HDR_SIZE + 3] = bad[DELTA_HDR_SIZE + 4] = 1;
	assert_int_equal(delta_decode(rx, bad, DELTA_HDR_SIZE + 5, rx), -EBADMSG);
	assert_non_null(strstr(err_msg(-EBADMSG), "overruns the page"));
	assert_int_equal(delta_decode(rx, d, (size_t)n, rx), 0);
	assert_memory_equal(rx, v1, PAGE_SIZE);
	delta_cache_free(c);
}

static void test_delta_cache_bound(void **state)
{
	static const uint64_t budgets[] = { 16 << 10, 100000, 1 << 20, 64 << 20 };
	struct delta_cache *c;
	uint8_t page[PAGE_SIZE], d[DELTA_MAX_SIZE];

	(void)state;
	assert_int_equal(delta_cache_new(8 << 10, NULL, &c), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "fewer than 2 pages"));
	for (unsigned b = 0; b < ARRAY_SIZE(budgets); b++) {
		uint64_t cap;

		assert_int_equal(delta_cache_new(budgets[b], NULL, &c), 0);
		cap = delta_cache_capacity(c);
		assert_true(delta_cache_footprint(c) <= budgets[b]);
		/* and not wastefully below: within 2% (+ one page) of the budget */
		assert_true((cap + 1) * PAGE_SIZE >= budgets[b] * 98 / 100 - 2 * PAGE_SIZE);
		for (uint64_t p = 0; p < 3 * cap + 5; p++) {
			memset(page, (int)p, sizeof(page));
			delta_encode(c, p * 7919, page, d, sizeof(d));
			assert_true(delta_cache_count(c) <= cap);
		}
		assert_true(delta_cache_count(c) == cap);
		assert_true(delta_cache_stats(c)->evictions == 2 * cap + 5);
		delta_cache_free(c);
	}
}

/* CLOCK keeps pages that are re-sent while a stream of one-off pages passes. */
static void test_delta_cache_keeps_hot_pages(void **state)
{
	struct delta_cache *c;
	uint8_t page[PAGE_SIZE] = { 0 }, d[DELTA_MAX_SIZE];
	uint64_t cap, hot = 8, hits0;

	(void)state;
	assert_int_equal(delta_cache_new(64 * PAGE_SIZE + 8192, NULL, &c), 0);
	cap = delta_cache_capacity(c);
	assert_true(cap >= 32);
	for (uint64_t round = 0; round < 50; round++) {
		for (uint64_t h = 0; h < hot; h++) {
			page[0] = (uint8_t)round;
			delta_encode(c, h, page, d, sizeof(d));
		}
		for (uint64_t s = 0; s < cap / 4; s++)	/* cold pages, never again */
			delta_encode(c, 1000000 + round * cap + s, page, d, sizeof(d));
	}
	hits0 = delta_cache_stats(c)->hits;
	/* every hot page hit every round after its first */
	assert_true(hits0 == hot * 49);
	/* a dropped page misses next time */
	assert_int_equal(delta_cache_drop(c, 3), 1);
	assert_int_equal(delta_cache_drop(c, 3), 0);
	assert_int_equal(delta_encode(c, 3, page, d, sizeof(d)), 0);
	assert_true(delta_cache_stats(c)->hits == hits0);
	delta_cache_clear(c);
	assert_true(delta_cache_count(c) == 0);
	assert_int_equal(delta_encode(c, 0, page, d, sizeof(d)), 0);
	delta_cache_free(c);
}

/*
 * A source and a receiver over many rounds of random sends, changes,
 * drops and evictions in a small cache: the receiver's pages always end
 * equal to the source's, so the index never returns a wrong slot.
 */
static void test_delta_cache_churn(void **state)
{
	enum { NP = 97 };
	uint8_t (*src)[PAGE_SIZE] = calloc(NP, PAGE_SIZE), (*rx)[PAGE_SIZE] = calloc(NP, PAGE_SIZE);
	uint8_t d[DELTA_MAX_SIZE];
	struct delta_cache *c;
	uint64_t rng = 12345, deltas = 0;

	(void)state;
	assert_int_equal(delta_cache_new(40 * PAGE_SIZE, NULL, &c), 0);
	for (unsigned i = 0; i < 20000; i++) {
		uint64_t r = pagefill_mix64(rng++), p = r % NP;
		int n;

		if ((r >> 20) % 16 == 0) {
			delta_cache_drop(c, p);
			continue;
		}
		for (unsigned k = 0; k < (r >> 24) % 6; k++)
			src[p][(r >> (30 + 2 * k)) % PAGE_SIZE] ^= (uint8_t)(r >> 8 | 1);
		n = delta_encode(c, p, src[p], d, sizeof(d));
		assert_true(n >= 0);
		if (n) {
			assert_int_equal(delta_decode(rx[p], d, (size_t)n, rx[p]), 0);
			deltas++;
		} else {
			memcpy(rx[p], src[p], PAGE_SIZE);
		}
		assert_memory_equal(rx[p], src[p], PAGE_SIZE);
	}
	assert_true(deltas > 5000);
	assert_true(delta_cache_stats(c)->evictions > 1000);
	delta_cache_free(c);
	free(src);
	free(rx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_codec_round_trips, t_setup, t_teardown),
		cmocka_unit_test_setup_teardown(test_codec_stats_and_none, t_setup, t_teardown),
		cmocka_unit_test_setup_teardown(test_codec_bad_args, t_setup, t_teardown),
		cmocka_unit_test_setup_teardown(test_codec_lz4_refuses_damage, t_setup, t_teardown),
		cmocka_unit_test_setup_teardown(test_codec_zstd_refuses_damage, t_setup, t_teardown),
		cmocka_unit_test_setup_teardown(test_codec_refuses_size_mismatch, t_setup, t_teardown),
		cmocka_unit_test(test_auto_link_bound_compresses),
		cmocka_unit_test(test_auto_cpu_bound_stays_raw),
		cmocka_unit_test(test_auto_switches_both_ways),
		cmocka_unit_test(test_auto_incompressible_goes_raw),
		cmocka_unit_test(test_auto_hysteresis_holds),
		cmocka_unit_test(test_auto_window_sums_batches),
		cmocka_unit_test(test_delta_round_trips),
		cmocka_unit_test(test_delta_fully_changed_is_raw),
		cmocka_unit_test(test_delta_refusals),
		cmocka_unit_test(test_delta_cache_bound),
		cmocka_unit_test(test_delta_cache_keeps_hot_pages),
		cmocka_unit_test(test_delta_cache_churn),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
