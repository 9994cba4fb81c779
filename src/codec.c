/*
 * codec.c - lz4 and zstd over batches of guest pages; see codec.h.
 *
 * Thin on purpose: the libraries do the work, this file owns the framing
 * (a 16-byte header with the page count and a hash of the pages), the
 * "never expand" rule and the checks on the way back in.  The chooser is
 * in codec-auto.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <xxhash.h>
#include <zstd.h>

#include "umig/buf.h"
#include "umig/codec.h"
#include "umig/util.h"

struct codec_enc {
	struct codec_opts opts;
	void *lz4_state;	/* LZ4_sizeofState() bytes */
	ZSTD_CCtx *zc;
	struct codec_stats stats[CODEC_NKINDS];
};

struct codec_dec {
	ZSTD_DCtx *zd;
	struct codec_stats stats[CODEC_NKINDS];
};

static const char *const kind_names[CODEC_NKINDS] = { "none", "lz4", "zstd" };

const char *codec_kind_name(enum codec_kind k)
{
	return (unsigned)k < CODEC_NKINDS ? kind_names[k] : "?";
}

int codec_mode_parse(const char *s, enum codec_mode *out)
{
	static const char *const names[] = { "none", "lz4", "zstd", "auto" };
	unsigned i;

	for (i = 0; s && i < ARRAY_SIZE(names); i++) {
		if (!strcmp(s, names[i])) {
			*out = (enum codec_mode)i;
			return 0;
		}
	}
	return err_set(-EINVAL, "unknown compression '%s' (none|lz4|zstd|auto)", s ? s : "");
}

int codec_enc_new(const struct codec_opts *opts, struct codec_enc **out)
{
	struct codec_enc *e;
	size_t rc;

	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	if (opts)
		e->opts = *opts;
	if (!e->opts.lz4_accel)
		e->opts.lz4_accel = CODEC_LZ4_ACCEL_DEFAULT;
	if (!e->opts.zstd_level)
		e->opts.zstd_level = CODEC_ZSTD_LEVEL_DEFAULT;
	if (e->opts.lz4_accel < 1 || e->opts.zstd_level < 1 || e->opts.zstd_level > 19) {
		int bad = err_set(-EINVAL, "codec: lz4 acceleration %d (>= 1) or zstd level %d (1..19) "
			       "out of range", e->opts.lz4_accel, e->opts.zstd_level);

		free(e);
		return bad;
	}
	e->lz4_state = malloc((size_t)LZ4_sizeofState());
	e->zc = ZSTD_createCCtx();
	if (!e->lz4_state || !e->zc) {
		codec_enc_free(e);
		return -ENOMEM;
	}
	/* a checksum of our own covers both codecs; the size is checked on decode */
	rc = ZSTD_CCtx_setParameter(e->zc, ZSTD_c_compressionLevel, e->opts.zstd_level);
	if (!ZSTD_isError(rc))
		rc = ZSTD_CCtx_setParameter(e->zc, ZSTD_c_checksumFlag, 0);
	if (!ZSTD_isError(rc))
		rc = ZSTD_CCtx_setParameter(e->zc, ZSTD_c_contentSizeFlag, 1);
	if (ZSTD_isError(rc)) {
		codec_enc_free(e);
		return err_set(-EINVAL, "zstd: %s", ZSTD_getErrorName(rc));
	}
	*out = e;
	return 0;
}

void codec_enc_free(struct codec_enc *e)
{
	if (!e)
		return;
	free(e->lz4_state);
	ZSTD_freeCCtx(e->zc);
	free(e);
}

int codec_dec_new(struct codec_dec **out)
{
	struct codec_dec *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->zd = ZSTD_createDCtx();
	if (!d->zd) {
		free(d);
		return -ENOMEM;
	}
	*out = d;
	return 0;
}

void codec_dec_free(struct codec_dec *d)
{
	if (!d)
		return;
	ZSTD_freeDCtx(d->zd);
	free(d);
}

static void put_hdr(uint8_t *p, enum codec_kind kind, size_t npages, uint64_t hash)
{
	/* 16 fixed bytes written in place: a wbuf would allocate */
	p[0] = (uint8_t)kind;
	p[1] = CODEC_VERSION;
	p[2] = p[3] = 0;
	for (unsigned i = 0; i < 4; i++)
		p[4 + i] = (uint8_t)((uint64_t)npages >> (8 * i));
	for (unsigned i = 0; i < 8; i++)
		p[8 + i] = (uint8_t)(hash >> (8 * i));
}

/* Compressed payload length (> 0), or 0 when it does not fit in cap. */
static size_t compress_payload(struct codec_enc *e, enum codec_kind kind, const void *src,
			       size_t n, uint8_t *dst, size_t cap)
{
	size_t rc;
	int r;

	if (kind == CODEC_LZ4) {
		r = LZ4_compress_fast_extState(e->lz4_state, src, (char *)dst, (int)n,
					       (int)MIN(cap, (size_t)LZ4_MAX_INPUT_SIZE),
					       e->opts.lz4_accel);
		return r > 0 ? (size_t)r : 0;
	}
	/* ZSTD_e_end on a fresh session: a single frame with its content size */
	ZSTD_CCtx_reset(e->zc, ZSTD_reset_session_only);
	rc = ZSTD_compress2(e->zc, dst, cap, src, n);
	return ZSTD_isError(rc) ? 0 : rc;
}

long codec_encode(struct codec_enc *e, enum codec_kind kind, const void *src, size_t npages,
		  void *dst, size_t dst_cap)
{
	size_t n = npages * PAGE_SIZE, cap, len;
	struct codec_stats *st;
	uint64_t t0;

	if (!e || !src || !dst || !npages || npages > CODEC_MAX_PAGES ||
	    (unsigned)kind >= CODEC_NKINDS)
		return -EINVAL;
	st = &e->stats[kind];
	st->bytes_in += n;
	/* the result must be smaller than the pages, header included */
	if (kind == CODEC_NONE || dst_cap <= CODEC_HDR_SIZE + 1) {
		st->raw++;
		st->bytes_out += n;
		return CODEC_RAW;
	}
	t0 = now_ns();
	cap = MIN(dst_cap, n - 1) - CODEC_HDR_SIZE;
	len = compress_payload(e, kind, src, n, (uint8_t *)dst + CODEC_HDR_SIZE, cap);
	if (len)
		put_hdr(dst, kind, npages, XXH3_64bits(src, n));
	st->ns += now_ns() - t0;
	if (!len) {
		st->raw++;
		st->bytes_out += n;
		return CODEC_RAW;
	}
	st->batches++;
	st->bytes_out += CODEC_HDR_SIZE + len;
	return (long)(CODEC_HDR_SIZE + len);
}

/* The payload decoded into dst (cap bytes): its length, or -EBADMSG. */
static long decompress_payload(struct codec_dec *d, enum codec_kind kind, const uint8_t *src,
			       size_t len, void *dst, size_t cap)
{
	unsigned long long csize;
	size_t fsize, rc;
	int r;

	if (kind == CODEC_LZ4) {
		/* safe: reads at most len bytes, writes at most cap */
		r = LZ4_decompress_safe((const char *)src, dst, (int)len, (int)cap);
		if (r < 0)
			return err_set(-EBADMSG, "lz4: corrupted block (%zu bytes)", len);
		return r;
	}
	csize = ZSTD_getFrameContentSize(src, len);
	if (csize == ZSTD_CONTENTSIZE_ERROR || csize == ZSTD_CONTENTSIZE_UNKNOWN)
		return err_set(-EBADMSG, "zstd: not a frame with a content size (%zu bytes)", len);
	if (csize != cap)
		return err_set(-EBADMSG, "zstd: frame holds %llu bytes, expected %zu", csize, cap);
	fsize = ZSTD_findFrameCompressedSize(src, len);
	if (ZSTD_isError(fsize))
		return err_set(-EBADMSG, "zstd: truncated or corrupted frame (%zu bytes): %s",
			       len, ZSTD_getErrorName(fsize));
	if (fsize != len)
		return err_set(-EBADMSG, "zstd: %zu bytes after the frame", len - fsize);
	rc = ZSTD_decompressDCtx(d->zd, dst, cap, src, len);
	if (ZSTD_isError(rc))
		return err_set(-EBADMSG, "zstd: corrupted frame: %s", ZSTD_getErrorName(rc));
	return (long)rc;
}

int codec_decode(struct codec_dec *d, enum codec_kind kind, const void *src, size_t len,
		 void *dst, size_t npages)
{
	size_t n = npages * PAGE_SIZE;
	struct rbuf r;
	uint8_t hkind, ver;
	uint16_t pad;
	uint32_t hpages;
	uint64_t hash, t0;
	long got;

	if (!d || !src || !dst || !npages || npages > CODEC_MAX_PAGES ||
	    kind == CODEC_NONE || (unsigned)kind >= CODEC_NKINDS)
		return -EINVAL;
	if (len <= CODEC_HDR_SIZE)
		return err_set(-EBADMSG, "%s: batch of %zu bytes is shorter than its header",
			       codec_kind_name(kind), len);
	if (len >= n)
		return err_set(-EBADMSG, "%s: batch of %zu bytes for %zu pages: not compressed",
			       codec_kind_name(kind), len, npages);
	rbuf_init(&r, src, CODEC_HDR_SIZE);
	hkind = rbuf_get_u8(&r);
	ver = rbuf_get_u8(&r);
	pad = rbuf_get_u16(&r);
	hpages = rbuf_get_u32(&r);
	hash = rbuf_get_u64(&r);
	if (hkind != kind || ver != CODEC_VERSION || pad)
		return err_set(-EBADMSG, "%s: batch says kind %u version %u (pad %u), expected "
			       "%u version %u", codec_kind_name(kind), hkind, ver, pad, kind,
			       CODEC_VERSION);
	if (hpages != npages)
		return err_set(-EBADMSG, "%s: batch holds %u pages, expected %zu",
			       codec_kind_name(kind), hpages, npages);
	t0 = now_ns();
	got = decompress_payload(d, kind, (const uint8_t *)src + CODEC_HDR_SIZE,
				 len - CODEC_HDR_SIZE, dst, n);
	if (got < 0)
		return (int)got;
	if ((size_t)got != n)
		return err_set(-EBADMSG, "%s: batch of %zu pages decodes to %ld bytes, expected %zu",
			       codec_kind_name(kind), npages, got, n);
	if (XXH3_64bits(dst, n) != hash)
		return err_set(-EBADMSG, "%s: batch of %zu pages fails its hash: corrupted",
			       codec_kind_name(kind), npages);
	d->stats[kind].ns += now_ns() - t0;
	d->stats[kind].batches++;
	d->stats[kind].bytes_in += n;
	d->stats[kind].bytes_out += len;
	return 0;
}

const struct codec_stats *codec_enc_stats(const struct codec_enc *e, enum codec_kind k)
{
	return (unsigned)k < CODEC_NKINDS ? &e->stats[k] : NULL;
}

const struct codec_stats *codec_dec_stats(const struct codec_dec *d, enum codec_kind k)
{
	return (unsigned)k < CODEC_NKINDS ? &d->stats[k] : NULL;
}
