/*
 * codec.h - compression of runs of 4 KiB guest pages (lz4, zstd), and the
 * chooser that decides, batch by batch, whether compressing pays.
 *
 * Shaped for the migration engine: one encoder context per sending thread,
 * one decoder context per receiving thread (neither is thread-safe; each
 * keeps the compressor's working memory so nothing is allocated per batch).
 * A batch is npages whole pages, compressed as one block so that matches
 * reach across pages.  A batch that would not come out smaller travels
 * raw: codec_encode() says so (CODEC_RAW) and the sender ships the pages
 * unchanged, so compression never expands the stream.
 *
 * An encoded batch is self-describing and checked end to end:
 *
 *   u8 kind  u8 version (1)  u16 0  u32 npages  u64 XXH3-64 of the pages
 *   then the lz4 block or the single zstd frame
 *
 * (CODEC_HDR_SIZE bytes, little-endian).  codec_decode() refuses, with a
 * detail in err_msg(), anything that is not exactly such a batch of the
 * expected kind and size whose pages hash to the recorded value: lz4
 * blocks carry no checksum of their own, and a flipped literal byte would
 * otherwise decode "successfully" into a wrong page.
 *
 * The adaptive chooser (codec_auto_*), behind `--compress auto`, is at the
 * end of this header; the measurements behind its defaults and the
 * levels chosen are in docs/compression.md.
 */
#ifndef UMIG_CODEC_H
#define UMIG_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum codec_kind {
	CODEC_NONE = 0,		/* raw pages */
	CODEC_LZ4 = 1,
	CODEC_ZSTD = 2,
};
#define CODEC_NKINDS 3

/* What `--compress` asked for: a fixed codec, or the chooser. */
enum codec_mode {
	CODEC_MODE_NONE,
	CODEC_MODE_LZ4,
	CODEC_MODE_ZSTD,
	CODEC_MODE_AUTO,
};

/* "none", "lz4", "zstd", "auto" -> *out; -EINVAL (with a detail) otherwise. */
int codec_mode_parse(const char *s, enum codec_mode *out);
const char *codec_kind_name(enum codec_kind k);	/* "none", "lz4", "zstd", "?" */

#define CODEC_HDR_SIZE 16
#define CODEC_VERSION 1
/* Largest batch: 64 MiB, far above the engine's batches, below lz4's limit. */
#define CODEC_MAX_PAGES 16384u

/*
 * Levels, chosen by measurement on the guests' page fills (bench/codec-speed,
 * figures in docs/compression.md): lz4 acceleration 1 (LZ4_compress_default)
 * and zstd level 1.  Compression runs only while the link is the
 * bottleneck, where ratio is what counts: lz4 acceleration 4 was 5-7%
 * faster for 3-4% less ratio, 16 was 30-40% faster for 15-20% less; zstd
 * levels 2 and 3 were 10-20% slower for at most 5% more ratio.
 */
#define CODEC_LZ4_ACCEL_DEFAULT 1
#define CODEC_ZSTD_LEVEL_DEFAULT 1

struct codec_opts {
	int lz4_accel;		/* >= 1; 0 = default */
	int zstd_level;		/* 1..19; 0 = default */
};

/* Per context and kind; bytes_in counts pages offered, raw ones included. */
struct codec_stats {
	uint64_t batches;	/* encode or decode calls that succeeded */
	uint64_t raw;		/* encodes that answered CODEC_RAW */
	uint64_t bytes_in;	/* page bytes */
	uint64_t bytes_out;	/* encoded bytes (raw batches count in full) */
	uint64_t ns;		/* time inside the codec */
};

struct codec_enc;
struct codec_dec;

/*
 * Contexts.  opts may be NULL (defaults).  Return 0 and *out, or -ENOMEM /
 * -EINVAL (bad level).  The owner frees with codec_enc_free() /
 * codec_dec_free(); both accept NULL.
 */
int codec_enc_new(const struct codec_opts *opts, struct codec_enc **out);
void codec_enc_free(struct codec_enc *e);
int codec_dec_new(struct codec_dec **out);
void codec_dec_free(struct codec_dec *d);

/* codec_encode()'s verdict for "send these pages raw". */
#define CODEC_RAW 0

/*
 * Encode npages (1..CODEC_MAX_PAGES) pages at src into dst.
 *
 * Returns the encoded length (> 0, header included, always less than
 * npages * PAGE_SIZE and at most dst_cap), or CODEC_RAW when the result
 * would not be smaller than the pages or would not fit in dst_cap (the
 * caller then sends src as it is; dst holds nothing useful), or -EINVAL
 * for bad arguments.  kind CODEC_NONE always answers CODEC_RAW.  A dst_cap
 * of npages * PAGE_SIZE is always enough.  src must not change during the
 * call (copy guest pages to the send buffer first): the recorded hash is
 * of the bytes compressed.
 */
long codec_encode(struct codec_enc *e, enum codec_kind kind, const void *src, size_t npages,
		  void *dst, size_t dst_cap);

/*
 * Decode len bytes at src, an encoded batch of `kind` that must hold
 * exactly npages pages, into dst (npages * PAGE_SIZE bytes).  Returns 0,
 * or -EBADMSG with a detail (truncated, corrupted, wrong kind, wrong page
 * count, wrong size, hash mismatch), or -EINVAL for bad arguments.  Never
 * writes outside dst; on error dst's contents are unspecified, so decode
 * into a staging buffer, never straight into pages the guest can see.
 */
int codec_decode(struct codec_dec *d, enum codec_kind kind, const void *src, size_t len,
		 void *dst, size_t npages);

const struct codec_stats *codec_enc_stats(const struct codec_enc *e, enum codec_kind k);
const struct codec_stats *codec_dec_stats(const struct codec_dec *d, enum codec_kind k);

/*
 * --- the adaptive chooser ---------------------------------------------
 *
 * The signal: the page rate each choice would sustain, from measurements
 * the sender takes per batch anyway.
 *
 *   L    the link's capacity in wire bytes/s
 *   C_k  codec k's compression speed in page bytes/s (one sending thread)
 *   r_k  codec k's ratio, page bytes / wire bytes
 *
 *   raw sustains       E_raw = L
 *   codec k sustains   E_k   = min(C_k, r_k * L)
 *
 * since the kernel drains the socket while the thread compresses the next
 * batch.  Compressing pays exactly when E_k > E_raw: when the link, not the
 * CPU, is the bottleneck (r_k * L < C_k means the link stays the bottleneck
 * even compressed, and every page rides r_k times cheaper).
 *
 * L is only measurable while the link is the bottleneck.  A sample (one
 * batch, or better a window of them: see codec_auto_window_add) during
 * which the sender waited on the transport for at least sat_min of its
 * time kept the link busy throughout, so out_bytes / elapsed_ns is the
 * link's rate; any other batch only proves L >= out_bytes / elapsed_ns.
 * If raw batches do not make the sender wait, raw is not link-bound and
 * E_raw is unbounded: nothing to gain by compressing (a guest that dirties
 * slowly, a fast link).  C_k and r_k come from the batches sent with k;
 * the chooser re-probes the choices it is not using (probe_len batches
 * every probe_every) to keep their figures current, so it notices both a
 * link that got faster and a CPU that got busier.
 *
 * Hysteresis: from raw, a codec must beat E_raw by `hysteresis` (15%); a
 * codec in use is kept while it beats raw by half that (so a tie goes to
 * raw: compressing for nothing only costs CPU) and gives way to another
 * codec only if that one beats it by the full margin; at most one switch
 * every min_dwell samples.  All figures are EWMAs with weight alpha.
 *
 * codec_auto_update() is a pure function of its state and the sample: no
 * clock, no globals, so it is unit-tested with synthetic links and CPUs.
 * One state per sending thread.
 */
/* Fields left 0 take the default shown. */
struct codec_auto_cfg {
	unsigned allowed;	/* bit (1 << kind) per codec it may pick; lz4 and zstd */
	double hysteresis;	/* 0.15 */
	double sat_min;		/* 0.10: fraction of a batch spent waiting = link-bound */
	double alpha;		/* 0.25 */
	unsigned min_dwell;	/* 8 batches */
	unsigned probe_every;	/* 64 batches */
	unsigned probe_len;	/* 2 batches */
};

/* One batch (or a window of them), as the sender measured it. */
struct codec_auto_sample {
	enum codec_kind kind;	/* what codec_encode was asked for (CODEC_NONE: raw) */
	uint64_t in_bytes;	/* npages * PAGE_SIZE */
	uint64_t out_bytes;	/* what went on the wire (in_bytes if it went raw) */
	uint64_t codec_ns;	/* time in codec_encode (0 for CODEC_NONE) */
	uint64_t wire_ns;	/* time spent waiting for the transport to take it */
	uint64_t elapsed_ns;	/* wall time from this batch's start to the next's */
};

struct codec_auto {
	struct codec_auto_cfg cfg;
	enum codec_kind cur;		/* the choice in force */
	enum codec_kind next;		/* what the next batch uses (cur, or a probe) */
	double link_bps;		/* L; 0 = never measured */
	double raw_sat;			/* EWMA of wait fraction over raw batches */
	double comp_bps[CODEC_NKINDS];	/* C_k; 0 = never measured */
	double in_ewma[CODEC_NKINDS], out_ewma[CODEC_NKINDS]; /* r_k = in / out */
	unsigned since_switch, since_probe, probing, probe_rr;
	bool warm;			/* the first probe has begun */
	uint64_t switches;
};

/* Start raw, probing each allowed codec after a few batches.  cfg may be NULL. */
void codec_auto_init(struct codec_auto *a, const struct codec_auto_cfg *cfg);
/*
 * Feed one batch's measurements; returns the kind for the next batch
 * (also left in a->next).  Samples with elapsed_ns or in_bytes of 0 are
 * ignored.
 */
enum codec_kind codec_auto_update(struct codec_auto *a, const struct codec_auto_sample *s);
/* The page rate (bytes/s) the state predicts for kind; HUGE_VAL = unbounded, 0 = unknown. */
double codec_auto_rate(const struct codec_auto *a, enum codec_kind k);

/*
 * A sample must span more than the socket's send buffer, or a batch that
 * fits in the buffer looks link-free.  The engine sums its batches into a
 * window of at least CODEC_AUTO_WINDOW_NS and feeds the chooser once per
 * window; every batch of a window uses the kind the chooser last returned.
 * codec_auto_window_add() adds batch s to win (start win zeroed) and
 * returns 1 when win is complete: feed it to codec_auto_update(), then
 * zero it.  A batch of another kind than the window's starts it over.
 */
#define CODEC_AUTO_WINDOW_NS 10000000ull	/* 10 ms */
int codec_auto_window_add(struct codec_auto_sample *win, const struct codec_auto_sample *s,
			  uint64_t min_ns);

#endif
