/*
 * mig-codec.c - sending fewer bytes per page, and no faster than asked:
 * the source's page encoder (compression with `--compress`, deltas of
 * re-sent pages with `--delta-cache`), the rate limit on the bulk push
 * (`--max-bandwidth`), and the destination's decoder.
 *
 * Source: a run of data pages is copied out of guest memory into a
 * staging buffer first, so that what is cached, hashed and sent are the
 * same bytes.  Each page that has a small enough delta against the last
 * version sent goes as a DELTA; the pages between them go as one batch,
 * compressed when the codec in force (fixed, or the chooser's pick for
 * `auto`) makes it smaller, raw otherwise.  Only what the destination
 * negotiated is used (FEAT_COMPRESS, FEAT_DELTA); urgent replies are
 * never encoded nor delayed.
 *
 * Destination: an encoded run is decoded into a staging buffer and
 * placed only when its decoder accepted it; a delta applies to the page
 * the destination holds and is refused when it holds none.  A refusal
 * fails the migration with the run named, never placing a page.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mig.h"

#define RATE_BURST_NS 5000000ull	/* a rate-limited push may run 5 ms ahead */
#define FRAME_OVERHEAD 24		/* frame header + run header */

static const char *codec_mode_name(int m)
{
	static const char *const names[] = { "none", "lz4", "zstd", "auto" };

	return m >= 0 && m < 4 ? names[m] : "?";
}

static bool src_needs_stream(const struct mig_params *p)
{
	return p->compress != CODEC_MODE_NONE || p->delta_cache || p->max_bandwidth;
}

/* After the handshake: what the session may use, and the buffers for it. */
int src_enc_setup(struct mig_source *s)
{
	struct src_enc *e = &s->enc;
	uint64_t feat = s->c.x->features;
	int ret = 0;

	if (src_needs_stream(&s->p) && !(xport_caps(s->c.x) & XCAP_STREAM))
		return err_set(-ENOTSUP, "--compress, --delta-cache and --max-bandwidth need a "
			       "transport that carries pages as a stream (tcp); %s moves them "
			       "one-sided", s->c.x->ops->name);
	/*
	 * PAGES_Z and DELTA are frames of the TCP transport (tcp/tcp.c); the
	 * RDMA transport's frames carry raw runs only, so refuse there, clearly,
	 * rather than fail on the first encoded run.
	 */
	if ((s->p.compress != CODEC_MODE_NONE || s->p.delta_cache) && strcmp(s->c.x->ops->name, "tcp"))
		return err_set(-ENOTSUP, "--compress and --delta-cache work over the tcp transport "
			       "only; %s carries pages unencoded (use --transport tcp, or drop them)",
			       s->c.x->ops->name);
	e->mode = s->p.compress;
	if (e->mode != CODEC_MODE_NONE && !(feat & FEAT_COMPRESS)) {
		pr_warn("migration: the destination does not take compressed pages (an older "
			"umig); --compress %s falls back to none", codec_mode_name(e->mode));
		e->mode = CODEC_MODE_NONE;
	}
	if (s->p.delta_cache && !(feat & FEAT_DELTA))
		pr_warn("migration: the destination does not take deltas (an older umig); "
			"--delta-cache is not used");
	else if (s->p.delta_cache)
		ret = delta_cache_new(s->p.delta_cache, NULL, &e->delta);
	if (!ret && e->mode != CODEC_MODE_NONE)
		ret = codec_enc_new(NULL, &e->enc);
	codec_auto_init(&e->chooser, NULL);
	e->kind = e->mode == CODEC_MODE_LZ4 ? CODEC_LZ4 :
		  e->mode == CODEC_MODE_ZSTD ? CODEC_ZSTD : e->chooser.next;
	if (!ret && (e->enc || e->delta)) {
		e->stage = malloc(PROTO_RUN_MAX * PAGE_SIZE);
		e->out = malloc(PROTO_RUN_MAX * PAGE_SIZE);
		if (!e->stage || !e->out)
			ret = -ENOMEM;
	}
	return ret;
}

void src_enc_free(struct mig_source *s)
{
	codec_enc_free(s->enc.enc);
	delta_cache_free(s->enc.delta);
	free(s->enc.stage);
	free(s->enc.out);
}

/*
 * Clark's dynamic rate (--dynamic-rate): the first pre-copy round goes at
 * a quarter of --max-bandwidth, each later one an eighth of it faster, up
 * to all of it; the pages sent while the guest is paused (and the
 * post-copy push) always go at the full rate, since every millisecond
 * there is downtime or a guest waiting.  round is 1 for the first.
 */
void src_rate_round(struct mig_source *s, unsigned round)
{
	uint64_t max = s->p.max_bandwidth;

	if (!s->p.dynamic_rate || !max)
		return;
	s->enc.rate = MIN(max, max / 4 + (uint64_t)(round - 1) * (max / 8));
}

void src_rate_full(struct mig_source *s)
{
	s->enc.rate = 0;
}

/* Pace the bulk push to --max-bandwidth (a token bucket of RATE_BURST_NS). */
void src_rate_wait(struct mig_source *s, uint64_t bytes)
{
	struct src_enc *e = &s->enc;
	uint64_t now, rate = e->rate ? e->rate : s->p.max_bandwidth;
	struct timespec ts;

	if (!rate)
		return;
	now = now_ns();
	if (e->next_ns + RATE_BURST_NS < now)
		e->next_ns = now - RATE_BURST_NS;
	e->next_ns += bytes * 1000000000ull / rate;
	if (e->next_ns <= now)
		return;
	ts.tv_sec = (e->next_ns - now) / 1000000000ull;
	ts.tv_nsec = (e->next_ns - now) % 1000000000ull;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

bool src_enc_active(const struct mig_source *s)
{
	return s->enc.enc || (s->enc.delta && s->enc.delta_live);
}

/* Pages [pfn, pfn+n) went by another path (zero runs): their cached versions are stale. */
void src_enc_forget(struct mig_source *s, uint64_t pfn, uint64_t n)
{
	if (!s->enc.delta || !delta_cache_count(s->enc.delta))
		return;
	for (uint64_t i = pfn; i < pfn + n; i++)
		if (bitmap_test(&s->ever, i))
			delta_cache_drop(s->enc.delta, i);
}

/* --auto: one batch's figures, summed into windows for the chooser. */
static void src_enc_sample(struct src_enc *e, enum codec_kind asked, uint64_t in, uint64_t out,
			   uint64_t t0, uint64_t t1, uint64_t t3)
{
	struct codec_auto_sample b = {
		.kind = asked, .in_bytes = in, .out_bytes = out, .codec_ns = t1 - t0,
		.wire_ns = t3 - t1, .elapsed_ns = e->last_ns ? t3 - e->last_ns : t3 - t0,
	};

	e->last_ns = t3;
	if (e->mode != CODEC_MODE_AUTO)
		return;
	if (codec_auto_window_add(&e->win, &b, CODEC_AUTO_WINDOW_NS)) {
		e->kind = codec_auto_update(&e->chooser, &e->win);
		memset(&e->win, 0, sizeof(e->win));
	}
}

/* n staged pages at data: compressed if that makes them smaller, raw otherwise. */
static int src_push_batch(struct mig_source *s, uint64_t pfn, const uint8_t *data, uint32_t n)
{
	struct src_enc *e = &s->enc;
	enum codec_kind kind = e->enc ? e->kind : CODEC_NONE;
	struct xrun r = { .pfn = pfn, .n = n, .enc = XENC_RAW, .data = data, .len = n * PAGE_SIZE };
	uint64_t t0, t1, t3;
	long len = CODEC_RAW;
	int ret;

	if (!n)
		return 0;
	t0 = now_ns();
	if (kind != CODEC_NONE)
		len = codec_encode(e->enc, kind, data, n, e->out, (size_t)n * PAGE_SIZE);
	if (len < 0)
		return err_set(len, "compressing run %llu+%u: %s", (unsigned long long)pfn, n,
			       err_msg(len));
	if (len > 0)
		r = (struct xrun){ .pfn = pfn, .n = n, .enc = kind == CODEC_LZ4 ? XENC_LZ4 : XENC_ZSTD,
				   .data = e->out, .len = len };
	t1 = now_ns();
	src_rate_wait(s, r.len + FRAME_OVERHEAD);
	ret = xport_push(s->c.x, &r);
	t3 = now_ns();
	e->batches[len > 0 ? kind : CODEC_NONE]++;
	if (e->enc) {
		e->z_in += (uint64_t)n * PAGE_SIZE;
		e->z_out += r.len;
	}
	src_enc_sample(e, kind, (uint64_t)n * PAGE_SIZE, r.len, t0, t1, t3);
	return ret;
}

/*
 * A data run through the encoder: staged, then deltas for the pages that
 * have one, batches for the runs between them.
 */
int src_push_encoded(struct mig_source *s, uint64_t pfn, uint32_t n)
{
	struct src_enc *e = &s->enc;
	uint32_t start = 0;
	int ret;

	memcpy(e->stage, mem_page(&s->c.vm->mem, pfn), (size_t)n * PAGE_SIZE);
	for (uint32_t i = 0; i < n && e->delta && e->delta_live; i++) {
		int dl = delta_encode(e->delta, pfn + i, e->stage + (size_t)i * PAGE_SIZE, e->dbuf,
				      sizeof(e->dbuf));
		struct xrun r = { .pfn = pfn + i, .n = 1, .enc = XENC_DELTA, .data = e->dbuf };

		if (dl < 0)
			return err_set(dl, "delta of page %llu: %s", (unsigned long long)(pfn + i),
				       err_msg(dl));
		if (!dl)
			continue;
		ret = src_push_batch(s, pfn + start, e->stage + (size_t)start * PAGE_SIZE, i - start);
		r.len = dl;
		src_rate_wait(s, r.len + FRAME_OVERHEAD);
		if (!ret)
			ret = xport_push(s->c.x, &r);
		if (ret < 0)
			return ret;
		e->delta_pages++;
		start = i + 1;
	}
	return src_push_batch(s, pfn + start, e->stage + (size_t)start * PAGE_SIZE, n - start);
}

/* The record's figures for compression, deltas and the rate limit. */
void src_enc_record(struct mig_source *s, json_t *r)
{
	struct src_enc *e = &s->enc;
	const struct delta_stats *ds = e->delta ? delta_cache_stats(e->delta) : NULL;
	json_t *b = json_object();

	json_object_set_new(r, "compress", json_string(codec_mode_name(e->mode)));
	json_object_set_new(r, "compress_bytes_in", json_integer(e->z_in));
	json_object_set_new(r, "compress_bytes_out", json_integer(e->z_out));
	for (int k = 0; k < CODEC_NKINDS; k++)
		json_object_set_new(b, codec_kind_name(k), json_integer(e->batches[k]));
	json_object_set_new(r, "compress_batches", b);
	json_object_set_new(r, "compress_switches", json_integer(e->chooser.switches));
	json_object_set_new(r, "delta_cache_bytes", json_integer(e->delta ? s->p.delta_cache : 0));
	json_object_set_new(r, "delta_lookups", json_integer(ds ? ds->lookups : 0));
	json_object_set_new(r, "delta_hits", json_integer(ds ? ds->hits : 0));
	json_object_set_new(r, "delta_hit_rate",
			    json_real(ds && ds->lookups ? (double)ds->hits / ds->lookups : 0));
	json_object_set_new(r, "delta_pages", json_integer(e->delta_pages));
	json_object_set_new(r, "delta_bytes_saved",
			    json_integer(ds ? ds->bytes_raw - ds->bytes_delta : 0));
	json_object_set_new(r, "max_bandwidth", json_integer(s->p.max_bandwidth));
}

/* --- destination ------------------------------------------------------------ */

int dst_dec_setup(struct mig_dest *d)
{
	int ret = 0;

	if (!(d->c.x->features & (FEAT_COMPRESS | FEAT_DELTA)) || d->stage[0])
		return 0;
	for (unsigned i = 0; !ret && i < d->c.x->streams && i < XSTREAMS_MAX; i++) {
		if (d->c.x->features & FEAT_COMPRESS)
			ret = codec_dec_new(&d->dec[i]);
		d->stage[i] = ret ? NULL : malloc(PROTO_RUN_MAX * PAGE_SIZE);
		ret = ret ? ret : d->stage[i] ? 0 : -ENOMEM;
	}
	return ret;
}

void dst_dec_free(struct mig_dest *d)
{
	for (unsigned i = 0; i < XSTREAMS_MAX; i++) {
		codec_dec_free(d->dec[i]);
		free(d->stage[i]);
	}
}

/*
 * Turn a compressed run into a raw one (data in the stream's stage), or apply a
 * delta to the page this side holds: 1 when the run was a delta and is
 * placed, 0 when *r is now a raw run to place, < 0 refused.
 */
int dst_decode_run(struct mig_dest *d, struct xrun *r, bool post, unsigned stream)
{
	uint8_t *host = d->c.vm->mem.host + (r->pfn << PAGE_SHIFT);
	enum codec_kind kind = r->enc == XENC_LZ4 ? CODEC_LZ4 : CODEC_ZSTD;
	int ret;

	if (r->enc == XENC_DELTA) {
		/* deltas only while pages are plain memory here: the pre-copy rounds */
		if (post)
			return err_set(-EPROTO, "bulk channel: a delta for page %llu after the "
				       "pre-copy phase", (unsigned long long)r->pfn);
		ret = delta_decode(bitmap_test(&d->present, r->pfn) ? host : NULL, r->data, r->len,
				   host);
		if (ret < 0)
			return err_set(-EBADMSG, "bulk channel: delta for page %llu (%u bytes) "
				       "refused: %s", (unsigned long long)r->pfn, r->len,
				       err_msg(ret));
		d->pages_delta++;
		dst_mark_present(d, r->pfn, 1);
		return 1;
	}
	if (stream >= XSTREAMS_MAX || !d->dec[stream])
		return err_set(-EPROTO, "bulk channel: a compressed run without a decoder");
	ret = codec_decode(d->dec[stream], kind, r->data, r->len, d->stage[stream], r->n);
	if (ret < 0)
		return err_set(-EBADMSG, "bulk channel: %s run %llu+%u (%u bytes) refused: %s",
			       codec_kind_name(kind), (unsigned long long)r->pfn, r->n, r->len,
			       err_msg(ret));
	d->pages_decoded += r->n;
	r->enc = XENC_RAW;
	r->data = d->stage[stream];
	r->len = r->n * PAGE_SIZE;
	return 0;
}
