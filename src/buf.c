/*
 * buf.c - the bounds-checked encoders and decoders of buf.h.
 *
 * Values are stored little-endian regardless of the host, so a snapshot
 * or a stream is portable between hosts.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "umig/buf.h"

void wbuf_init(struct wbuf *w)
{
	memset(w, 0, sizeof(*w));
}

void wbuf_free(struct wbuf *w)
{
	free(w->data);
	wbuf_init(w);
}

void wbuf_reset(struct wbuf *w)
{
	w->len = 0;
	w->err = 0;
}

void *wbuf_reserve(struct wbuf *w, size_t n)
{
	void *p;

	if (w->err)
		return NULL;
	if (w->len + n > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		uint8_t *d;

		while (cap < w->len + n)
			cap *= 2;
		d = realloc(w->data, cap);
		if (!d) {
			w->err = -ENOMEM;
			return NULL;
		}
		w->data = d;
		w->cap = cap;
	}
	p = w->data + w->len;
	w->len += n;
	return p;
}

void wbuf_put(struct wbuf *w, const void *p, size_t n)
{
	void *d = wbuf_reserve(w, n);

	if (d && n)
		memcpy(d, p, n);
}

static void put_le(struct wbuf *w, uint64_t v, unsigned n)
{
	uint8_t *d = wbuf_reserve(w, n);

	for (unsigned i = 0; d && i < n; i++)
		d[i] = v >> (8 * i);
}

void wbuf_put_u8(struct wbuf *w, uint8_t v) { put_le(w, v, 1); }
void wbuf_put_u16(struct wbuf *w, uint16_t v) { put_le(w, v, 2); }
void wbuf_put_u32(struct wbuf *w, uint32_t v) { put_le(w, v, 4); }
void wbuf_put_u64(struct wbuf *w, uint64_t v) { put_le(w, v, 8); }

void wbuf_patch_u32(struct wbuf *w, size_t off, uint32_t v)
{
	if (w->err || off > w->len || w->len - off < 4)
		return;
	for (unsigned i = 0; i < 4; i++)
		w->data[off + i] = v >> (8 * i);
}

void rbuf_init(struct rbuf *r, const void *p, size_t len)
{
	r->p = p;
	r->len = len;
	r->off = 0;
	r->err = 0;
}

size_t rbuf_left(const struct rbuf *r)
{
	return r->err ? 0 : r->len - r->off;
}

const void *rbuf_take(struct rbuf *r, size_t n)
{
	const void *p;

	if (r->err || n > r->len - r->off) {
		r->err = -EBADMSG;
		return NULL;
	}
	p = r->p + r->off;
	r->off += n;
	return p;
}

void rbuf_get(struct rbuf *r, void *dst, size_t n)
{
	const void *p = rbuf_take(r, n);

	if (p)
		memcpy(dst, p, n);
	else
		memset(dst, 0, n);
}

static uint64_t get_le(struct rbuf *r, unsigned n)
{
	const uint8_t *p = rbuf_take(r, n);
	uint64_t v = 0;

	for (unsigned i = 0; p && i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

uint8_t rbuf_get_u8(struct rbuf *r) { return get_le(r, 1); }
uint16_t rbuf_get_u16(struct rbuf *r) { return get_le(r, 2); }
uint32_t rbuf_get_u32(struct rbuf *r) { return get_le(r, 4); }
uint64_t rbuf_get_u64(struct rbuf *r) { return get_le(r, 8); }

void rbuf_sub(struct rbuf *r, size_t n, struct rbuf *sub)
{
	const void *p = rbuf_take(r, n);

	rbuf_init(sub, p, p ? n : 0);
	if (!p)
		sub->err = -EBADMSG;
}
