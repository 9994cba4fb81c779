/*
 * codec-speed.c - how fast and how well umig's page codecs and delta
 * encoder work on the pages the guests write (bench/codec-speed runs it).
 *
 * For each fill of include/umig/pagefill.h and each codec setting, it
 * compresses a working set batch by batch through codec_encode() and
 * decodes it back through codec_decode(), exactly as the engine will, and
 * prints per-core throughput (thread CPU time, so other load on the
 * machine does not count) in page MB/s and wire MB/s, and the ratio.
 * Then the delta encoder: pages re-sent after a pass that changed some of
 * their words, encode and decode throughput and the delta's size.
 *
 *   codec-speed [--quick] [--batch PAGES] [--secs S]
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "umig/codec.h"
#include "umig/delta.h"
#include "umig/pagefill.h"
#include "umig/util.h"

#define MB 1e6

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * npages of fill at generation gen; change < 100 moves only every
 * (100/change)-th word to gen, the rest stay at 0 (as memverify change=).
 * Word 0 is unique to (page, gen), as in memverify; in zero pages the
 * changed words hold gen, as dirty's counter does (0 at generation 0).
 */
static void make_pages(uint64_t *w, enum pagefill fill, size_t npages, uint64_t gen,
		       unsigned change)
{
	size_t stride = 512 / (512 * change / 100 ? 512 * change / 100 : 1);

	for (size_t p = 0; p < npages; p++) {
		enum pagefill k = pagefill_kind(fill, p);

		for (size_t i = 0; i < 512; i++) {
			uint64_t g = i % stride ? 0 : gen;

			if (i == 0)
				w[p * 512] = pagefill_mix64(p * 4096 + g);
			else if (k == PAGEFILL_ZERO)
				w[p * 512 + i] = g;
			else
				w[p * 512 + i] = pagefill_word(k, p, i, g);
		}
	}
}

struct setting {
	const char *name;
	enum codec_kind kind;
	struct codec_opts opts;
};

static const struct setting settings[] = {
	{ "lz4 accel=1", CODEC_LZ4, { .lz4_accel = 1 } },
	{ "lz4 accel=4", CODEC_LZ4, { .lz4_accel = 4 } },
	{ "lz4 accel=16", CODEC_LZ4, { .lz4_accel = 16 } },
	{ "zstd level=1", CODEC_ZSTD, { .zstd_level = 1 } },
	{ "zstd level=2", CODEC_ZSTD, { .zstd_level = 2 } },
	{ "zstd level=3", CODEC_ZSTD, { .zstd_level = 3 } },
};

static void die(const char *what, int rc)
{
	fprintf(stderr, "codec-speed: %s: %s\n", what, err_msg(rc));
	exit(1);
}

static void bench_codec(const struct setting *st, enum pagefill fill, const uint8_t *pages,
			size_t npages, size_t batch, double secs)
{
	size_t nb = npages / batch, bbytes = batch * PAGE_SIZE;
	uint8_t *enc = malloc(nb * bbytes), *out = malloc(bbytes);
	long *len = calloc(nb, sizeof(*len));
	struct codec_enc *e;
	struct codec_dec *d;
	double t0, t, in = 0, wire = 0, dec = 0, ct, dt;
	size_t b, nraw = 0;
	int rc;
	static const char *const fills[] = PAGEFILL_NAMES;

	if (!enc || !out || !len)
		die("malloc", -ENOMEM);
	if ((rc = codec_enc_new(&st->opts, &e)) || (rc = codec_dec_new(&d)))
		die("codec context", rc);
	t0 = cpu_s();
	do {
		for (b = 0; b < nb; b++) {
			len[b] = codec_encode(e, st->kind, pages + b * bbytes, batch,
					      enc + b * bbytes, bbytes);
			if (len[b] < 0)
				die("encode", (int)len[b]);
			in += bbytes;
			wire += len[b] ? (double)len[b] : (double)bbytes;
		}
	} while ((t = cpu_s() - t0) < secs);
	ct = t;
	for (b = 0; b < nb; b++)
		nraw += len[b] == CODEC_RAW;
	t0 = cpu_s();
	do {
		for (b = 0; b < nb; b++) {
			if (len[b] == CODEC_RAW) {
				memcpy(out, pages + b * bbytes, bbytes);	/* what a receiver does */
			} else if ((rc = codec_decode(d, st->kind, enc + b * bbytes, (size_t)len[b],
						      out, batch))) {
				die("decode", rc);
			}
			dec += bbytes;
		}
	} while ((t = cpu_s() - t0) < secs);
	dt = t;
	printf("%-7s %-13s %7.2f %9.0f %9.0f %9.0f %6.0f%%\n", fills[fill], st->name, in / wire,
	       in / ct / MB, wire / ct / MB, dec / dt / MB, 100.0 * (double)nraw / (double)nb);
	codec_enc_free(e);
	codec_dec_free(d);
	free(enc);
	free(out);
	free(len);
}

static void bench_delta(enum pagefill fill, unsigned change, size_t npages, double secs)
{
	uint64_t *v[2] = { malloc(npages * PAGE_SIZE), malloc(npages * PAGE_SIZE) };
	uint8_t *dl = malloc(npages * DELTA_MAX_SIZE), tmp[PAGE_SIZE];
	int *len = calloc(npages, sizeof(*len));
	const struct delta_stats *s;
	struct delta_cache *c;
	double t0, t, et, dt, enc = 0, dec = 0;
	static const char *const fills[] = PAGEFILL_NAMES;
	size_t p, ndelta = 0, dbytes = 0;
	unsigned gen = 1;
	int rc;

	if (!v[0] || !v[1] || !dl || !len)
		die("malloc", -ENOMEM);
	make_pages(v[0], fill, npages, 1, change);
	make_pages(v[1], fill, npages, 2, change);
	/* a cache that holds the working set: this measures the encoder, not eviction */
	if ((rc = delta_cache_new((uint64_t)npages * (PAGE_SIZE + 64) + (1 << 20), NULL, &c)))
		die("delta cache", rc);
	for (p = 0; p < npages; p++)
		delta_encode(c, p, (uint8_t *)v[0] + p * PAGE_SIZE, tmp, sizeof(tmp));
	t0 = cpu_s();
	do {
		gen ^= 1;	/* alternate v1, v0, v1: every send differs from the cached one */
		for (p = 0; p < npages; p++) {
			len[p] = delta_encode(c, p, (uint8_t *)v[1 - gen] + p * PAGE_SIZE,
					      dl + p * DELTA_MAX_SIZE, DELTA_MAX_SIZE);
			enc += PAGE_SIZE;
		}
	} while ((t = cpu_s() - t0) < secs);
	et = t;
	/* the last pass's deltas turn v[gen] into v[1 - gen] */
	for (p = 0; p < npages; p++) {
		ndelta += len[p] > 0;
		dbytes += len[p] > 0 ? (size_t)len[p] : 0;
	}
	t0 = cpu_s();
	do {
		for (p = 0; p < npages; p++) {
			if (len[p] > 0 && (rc = delta_decode((uint8_t *)v[gen] + p * PAGE_SIZE,
							     dl + p * DELTA_MAX_SIZE,
							     (size_t)len[p], tmp)))
				die("delta decode", rc);
			dec += PAGE_SIZE;
		}
	} while ((t = cpu_s() - t0) < secs);
	dt = t;
	s = delta_cache_stats(c);
	if (s->unchanged)
		die("delta", -EINVAL);	/* every send must differ from its base */
	printf("%-7s %5u%% %10.0f ", fills[fill], change, enc / et / MB);
	if (ndelta)
		printf("%10.0f %8.0f%% %10.0f %8.1fx\n", dec / dt / MB,
		       100.0 * (double)ndelta / (double)npages, (double)dbytes / (double)ndelta,
		       (double)s->bytes_raw / (double)s->bytes_delta);
	else
		printf("%10s %8.0f%% %10s %9s\n", "-", 0.0, "-", "-");
	delta_cache_free(c);
	free(v[0]);
	free(v[1]);
	free(dl);
	free(len);
}

int main(int argc, char **argv)
{
	size_t batch = 64, npages = 4096;
	double secs = 0.3;
	uint64_t *pages;
	static const unsigned changes[] = { 1, 10, 25, 50 };

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			secs = 0.1;
			npages = 1024;
		} else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
			batch = strtoul(argv[++i], NULL, 10);
		} else if (!strcmp(argv[i], "--secs") && i + 1 < argc) {
			secs = strtod(argv[++i], NULL);
		} else {
			fprintf(stderr, "usage: codec-speed [--quick] [--batch PAGES] [--secs S]\n");
			return 2;
		}
	}
	if (!batch || batch > CODEC_MAX_PAGES || batch > npages) {
		fprintf(stderr, "codec-speed: --batch must be 1..%zu pages\n", npages);
		return 2;
	}
	pages = malloc(npages * PAGE_SIZE);
	if (!pages)
		die("malloc", -ENOMEM);
	printf("codecs: %zu pages (%zu MiB) per fill, batches of %zu pages (%zu KiB), "
	       ">= %.1f s CPU per figure\n", npages, (size_t)(npages * PAGE_SIZE >> 20), batch,
	       (size_t)(batch * PAGE_SIZE >> 10), secs);
	printf("MB/s per core (thread CPU time); raw%% = batches sent raw (not smaller)\n\n");
	printf("%-7s %-13s %7s %9s %9s %9s %7s\n", "fill", "codec", "ratio", "comp in", "comp out",
	       "decomp", "raw%");
	for (unsigned f = 0; f < PAGEFILL_COUNT; f++) {
		make_pages(pages, (enum pagefill)f, npages, 0, 100);
		for (unsigned s = 0; s < ARRAY_SIZE(settings); s++)
			bench_codec(&settings[s], (enum pagefill)f, (uint8_t *)pages, npages, batch,
				    secs);
	}
	printf("\ndelta: every page re-sent after a pass that changed change%% of its words\n"
	       "(memverify change=); MB/s of pages per core; as delta = pages sent as a\n"
	       "delta (the rest raw: the delta was over half a page); bytes per delta;\n"
	       "saving = page bytes / delta bytes over the pages sent as deltas\n\n");
	printf("%-7s %6s %10s %10s %9s %10s %9s\n", "fill", "change", "encode", "decode",
	       "as delta", "bytes", "saving");
	for (unsigned f = 0; f < PAGEFILL_COUNT; f++) {
		for (unsigned c = 0; c < ARRAY_SIZE(changes); c++)
			bench_delta((enum pagefill)f, changes[c], npages, secs);
	}
	free(pages);
	return 0;
}
