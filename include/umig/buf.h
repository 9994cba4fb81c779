/*
 * buf.h - bounds-checked little-endian encoding and decoding.
 *
 * Every byte umig writes to a file or a socket goes through a wbuf, and
 * every byte it reads back goes through an rbuf, so that all untrusted
 * input is length-checked in one place.  Both carry a sticky error: a
 * sequence of gets needs one check at the end, and a failed get returns 0
 * rather than reading past the end.
 */
#ifndef UMIG_BUF_H
#define UMIG_BUF_H

#include <stddef.h>
#include <stdint.h>

/* A growable output buffer.  Owner calls wbuf_free(). err is 0 or -ENOMEM. */
struct wbuf {
	uint8_t *data;
	size_t len;
	size_t cap;
	int err;
};

void wbuf_init(struct wbuf *w);
void wbuf_free(struct wbuf *w);
void wbuf_reset(struct wbuf *w); /* len = 0, keeps the allocation */
void wbuf_put(struct wbuf *w, const void *p, size_t n);
void wbuf_put_u8(struct wbuf *w, uint8_t v);
void wbuf_put_u16(struct wbuf *w, uint16_t v);
void wbuf_put_u32(struct wbuf *w, uint32_t v);
void wbuf_put_u64(struct wbuf *w, uint64_t v);
/* Reserve n bytes and return where to write them, or NULL on -ENOMEM. */
void *wbuf_reserve(struct wbuf *w, size_t n);
/* Overwrite a u32 written earlier at offset off (for length prefixes). */
void wbuf_patch_u32(struct wbuf *w, size_t off, uint32_t v);

/* A read cursor over memory owned by someone else.  err is 0 or -EBADMSG. */
struct rbuf {
	const uint8_t *p;
	size_t len;
	size_t off;
	int err;
};

void rbuf_init(struct rbuf *r, const void *p, size_t len);
size_t rbuf_left(const struct rbuf *r);
void rbuf_get(struct rbuf *r, void *dst, size_t n);
uint8_t rbuf_get_u8(struct rbuf *r);
uint16_t rbuf_get_u16(struct rbuf *r);
uint32_t rbuf_get_u32(struct rbuf *r);
uint64_t rbuf_get_u64(struct rbuf *r);
/* Point at the next n bytes and skip them; NULL (and err set) if short. */
const void *rbuf_take(struct rbuf *r, size_t n);
/* Carve the next n bytes into *sub; marks r bad if fewer remain. */
void rbuf_sub(struct rbuf *r, size_t n, struct rbuf *sub);

#endif
