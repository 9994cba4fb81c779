/*
 * delta.c - the source's cache of last-sent pages, XOR run-length deltas,
 * and their checked application on the receiver; see delta.h.
 *
 * Layout: slots[i] describes page copy i (pages + i * PAGE_SIZE); table is
 * an open-addressing (linear probing) index from page number to slot + 1,
 * 0 = empty, sized a power of two at least twice the slots so probes stay
 * short; deletion shifts entries back instead of leaving tombstones, so a
 * long run of inserts and evictions never slows lookups down.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <xxhash.h>

#include "umig/delta.h"
#include "umig/util.h"

struct delta_slot {
	uint64_t pfn;
	uint32_t hash;		/* XXH3-64 of the cached copy, truncated */
	uint8_t ref;		/* CLOCK's second-chance bit */
	uint8_t used;
};

struct delta_cache {
	struct delta_cfg cfg;
	uint8_t *pages;		/* nslots * PAGE_SIZE, mmap'd */
	struct delta_slot *slots;
	uint32_t *table;
	uint32_t tmask, tbits;
	uint32_t nslots, nused, hand;	/* slots, slots ever taken, CLOCK's hand */
	uint32_t live;			/* slots holding a page */
	uint64_t footprint;
	struct delta_stats stats;
};

static uint32_t page_hash(const void *p)
{
	return (uint32_t)XXH3_64bits(p, PAGE_SIZE);
}

static uint64_t cache_bytes(uint64_t nslots, uint64_t tsize)
{
	return sizeof(struct delta_cache) + nslots * (PAGE_SIZE + sizeof(struct delta_slot)) +
	       tsize * sizeof(uint32_t);
}

static uint32_t table_bits(uint64_t nslots)
{
	uint32_t bits = 1;

	while ((1ull << bits) < 2 * nslots)
		bits++;
	return bits;
}

int delta_cache_new(uint64_t budget, const struct delta_cfg *cfg, struct delta_cache **out)
{
	uint64_t n = budget / (PAGE_SIZE + sizeof(struct delta_slot) + 4 * sizeof(uint32_t));
	struct delta_cache *c;
	uint32_t bits;

	n = MIN(n, (uint64_t)1 << 30);
	while (n && cache_bytes(n, 1ull << table_bits(n)) > budget)
		n--;
	if (n < 2)
		return err_set(-EINVAL, "delta cache of %llu bytes holds fewer than 2 pages; "
			       "give at least 16K", (unsigned long long)budget);
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	bits = table_bits(n);
	c->cfg.max_permille = cfg && cfg->max_permille ? MIN(cfg->max_permille, 1000u) : 500;
	c->nslots = (uint32_t)n;
	c->tbits = bits;
	c->tmask = (1u << bits) - 1;
	c->footprint = cache_bytes(n, 1ull << bits);
	c->slots = calloc(n, sizeof(*c->slots));
	c->table = calloc(1ull << bits, sizeof(*c->table));
	/* MAP_NORESERVE: a generous --delta-cache costs only the pages used */
	c->pages = mmap(NULL, n * PAGE_SIZE, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (c->pages == MAP_FAILED)
		c->pages = NULL;
	if (!c->slots || !c->table || !c->pages) {
		delta_cache_free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void delta_cache_free(struct delta_cache *c)
{
	if (!c)
		return;
	if (c->pages)
		munmap(c->pages, (size_t)c->nslots * PAGE_SIZE);
	free(c->slots);
	free(c->table);
	free(c);
}

static uint32_t home(const struct delta_cache *c, uint64_t pfn)
{
	return (uint32_t)((pfn * 0x9e3779b97f4a7c15ull) >> (64 - c->tbits));
}

/* Table position holding pfn, or -1. */
static long find(const struct delta_cache *c, uint64_t pfn)
{
	uint32_t i = home(c, pfn);

	for (;; i = (i + 1) & c->tmask) {
		uint32_t s = c->table[i];

		if (!s)
			return -1;
		if (c->slots[s - 1].pfn == pfn)
			return i;
	}
}

/* Remove table entry at position i, shifting later entries of its cluster back. */
static void table_delete(struct delta_cache *c, uint32_t i)
{
	uint32_t j = i;

	for (;;) {
		uint32_t h;

		j = (j + 1) & c->tmask;
		if (!c->table[j])
			break;
		h = home(c, c->slots[c->table[j] - 1].pfn);
		/* move j back to i unless its home lies cyclically in (i, j] */
		if (((j - h) & c->tmask) >= ((j - i) & c->tmask)) {
			c->table[i] = c->table[j];
			i = j;
		}
	}
	c->table[i] = 0;
}

static void table_insert(struct delta_cache *c, uint64_t pfn, uint32_t slot)
{
	uint32_t i = home(c, pfn);

	while (c->table[i])
		i = (i + 1) & c->tmask;
	c->table[i] = slot + 1;
}

/* A slot for a new page: a free one, else CLOCK's victim. */
static uint32_t take_slot(struct delta_cache *c)
{
	struct delta_slot *s;

	if (c->nused < c->nslots)
		return c->nused++;
	for (;;) {
		uint32_t v = c->hand;

		c->hand = c->hand + 1 == c->nslots ? 0 : c->hand + 1;
		s = &c->slots[v];
		if (s->ref) {
			s->ref = 0;
			continue;
		}
		if (s->used) {	/* else dropped: free for the taking */
			table_delete(c, (uint32_t)find(c, s->pfn));
			s->used = 0;
			c->live--;
			c->stats.evictions++;
		}
		return v;
	}
}

static size_t put_uleb(uint8_t *p, uint32_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* First index >= i where a and b differ, or PAGE_SIZE. */
static size_t next_diff(const uint8_t *a, const uint8_t *b, size_t i)
{
	uint64_t x, y;

	while (i < PAGE_SIZE && (i & 7)) {
		if (a[i] != b[i])
			return i;
		i++;
	}
	for (; i < PAGE_SIZE; i += 8) {
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		if (x != y)
			return i + (size_t)__builtin_ctzll(x ^ y) / 8;	/* little-endian */
	}
	return PAGE_SIZE;
}

/*
 * End of the changed run starting at i.  Gaps of up to 2 equal bytes are
 * swallowed: a new run would cost at least the 2 bytes of its lengths.
 */
static size_t run_end(const uint8_t *a, const uint8_t *b, size_t i)
{
	while (i < PAGE_SIZE) {
		size_t g = 0;

		if (a[i] != b[i]) {
			i++;
			continue;
		}
		while (i + g < PAGE_SIZE && g < 3 && a[i + g] == b[i + g])
			g++;
		if (g == 3 || i + g == PAGE_SIZE)
			break;
		i += g;
	}
	return i;
}

/* Runs of base ^ page into out; their length, or -1 past cap. */
static long xor_runs(const uint8_t *base, const uint8_t *page, uint8_t *out, size_t cap)
{
	size_t i = 0, o = 0, start, end, k;
	uint8_t len[6];
	size_t nl;

	while ((start = next_diff(base, page, i)) < PAGE_SIZE) {
		end = run_end(base, page, start);
		nl = put_uleb(len, (uint32_t)(start - i));
		nl += put_uleb(len + nl, (uint32_t)(end - start));
		if (o + nl + (end - start) > cap)
			return -1;
		memcpy(out + o, len, nl);
		o += nl;
		for (k = start; k < end; k++)
			out[o++] = base[k] ^ page[k];
		i = end;
	}
	return (long)o;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (unsigned i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int delta_encode(struct delta_cache *c, uint64_t pfn, const void *page, void *dst,
		 size_t dst_cap)
{
	size_t limit;
	struct delta_slot *s;
	uint8_t *copy, *d = dst;
	uint32_t slot, hash;
	long pos, n = -1;

	if (!c || !page || !dst)
		return -EINVAL;
	c->stats.lookups++;
	hash = page_hash(page);
	pos = find(c, pfn);
	if (pos < 0) {
		slot = take_slot(c);
		s = &c->slots[slot];
		s->pfn = pfn;
		s->used = 1;
		s->ref = 0;	/* sent once so far: the first to go */
		table_insert(c, pfn, slot);
		c->live++;
		c->stats.inserts++;
	} else {
		slot = c->table[pos] - 1;
		s = &c->slots[slot];
		s->ref = 1;
		c->stats.hits++;
		limit = MIN(dst_cap, (size_t)(PAGE_SIZE * c->cfg.max_permille / 1000));
		limit = MIN(limit, (size_t)PAGE_SIZE - 1);
		copy = c->pages + (size_t)slot * PAGE_SIZE;
		if (limit > DELTA_HDR_SIZE)
			n = xor_runs(copy, page, d + DELTA_HDR_SIZE, limit - DELTA_HDR_SIZE);
		if (n >= 0) {
			d[0] = DELTA_MAGIC;
			d[1] = DELTA_VERSION;
			d[2] = d[3] = 0;
			put_le32(d + 4, s->hash);
			put_le32(d + 8, hash);
			n += DELTA_HDR_SIZE;
			c->stats.deltas++;
			c->stats.unchanged += n == DELTA_HDR_SIZE;
			c->stats.bytes_raw += PAGE_SIZE;
			c->stats.bytes_delta += (uint64_t)n;
		} else {
			c->stats.too_big++;
		}
	}
	memcpy(c->pages + (size_t)slot * PAGE_SIZE, page, PAGE_SIZE);
	s->hash = hash;
	return n > 0 ? (int)n : 0;
}

int delta_cache_drop(struct delta_cache *c, uint64_t pfn)
{
	long pos = find(c, pfn);
	struct delta_slot *s;

	if (pos < 0)
		return 0;
	s = &c->slots[c->table[pos] - 1];
	table_delete(c, (uint32_t)pos);
	/* the slot stays allocated but unused; CLOCK reclaims it first */
	s->used = 0;
	s->ref = 0;
	c->live--;
	return 1;
}

void delta_cache_clear(struct delta_cache *c)
{
	memset(c->table, 0, ((size_t)c->tmask + 1) * sizeof(*c->table));
	memset(c->slots, 0, (size_t)c->nslots * sizeof(*c->slots));
	c->nused = 0;
	c->hand = 0;
	c->live = 0;
}

uint64_t delta_cache_count(const struct delta_cache *c)
{
	return c->live;
}

uint64_t delta_cache_capacity(const struct delta_cache *c)
{
	return c->nslots;
}

uint64_t delta_cache_footprint(const struct delta_cache *c)
{
	return c->footprint;
}

const struct delta_stats *delta_cache_stats(const struct delta_cache *c)
{
	return &c->stats;
}

/* A uleb128 length of at most PAGE_SIZE at *p (< end); -1 if malformed. */
static long get_uleb(const uint8_t **p, const uint8_t *end)
{
	uint32_t v = 0;
	unsigned shift;

	for (shift = 0; shift < 14; shift += 7) {
		if (*p >= end)
			return -1;
		v |= (uint32_t)(**p & 0x7f) << shift;
		if (!(*(*p)++ & 0x80))
			return v <= PAGE_SIZE ? (long)v : -1;
	}
	return -1;
}

int delta_decode(const void *base, const void *delta, size_t len, void *out)
{
	const uint8_t *d = delta, *p, *end;
	uint8_t tmp[PAGE_SIZE];
	uint32_t want, have;
	size_t pos = 0, k;
	long z, n;

	if (!base)
		return err_set(-ENOENT, "delta for a page this side does not have");
	if (!delta || !out)
		return -EINVAL;
	if (len < DELTA_HDR_SIZE || len > DELTA_MAX_SIZE)
		return err_set(-EBADMSG, "delta of %zu bytes (%u..%u)", len, DELTA_HDR_SIZE,
			       DELTA_MAX_SIZE);
	if (d[0] != DELTA_MAGIC || d[1] != DELTA_VERSION || d[2] || d[3])
		return err_set(-EBADMSG, "not a delta (magic 0x%02x version %u pad %u)", d[0], d[1],
			       d[2] | d[3] << 8);
	want = get_le32(d + 4);
	have = page_hash(base);
	if (want != have)
		return err_set(-ESTALE, "delta against another version of the page "
			       "(base hash %08x, this side has %08x)", want, have);
	memcpy(tmp, base, PAGE_SIZE);
	p = d + DELTA_HDR_SIZE;
	end = d + len;
	while (p < end) {
		z = get_uleb(&p, end);
		n = get_uleb(&p, end);
		if (z < 0 || n <= 0)
			return err_set(-EBADMSG, "delta: malformed run at byte %zu",
				       (size_t)(p - d));
		if (pos + (size_t)z + (size_t)n > PAGE_SIZE || (size_t)(end - p) < (size_t)n)
			return err_set(-EBADMSG, "delta: run of %ld bytes at offset %zu overruns "
				       "the %s", n, pos + (size_t)z,
				       pos + (size_t)z + (size_t)n > PAGE_SIZE ? "page" : "delta");
		pos += (size_t)z;
		for (k = 0; k < (size_t)n; k++)
			tmp[pos + k] ^= p[k];
		p += n;
		pos += (size_t)n;
	}
	if (page_hash(tmp) != get_le32(d + 8))
		return err_set(-EBADMSG, "delta: the result fails its hash: corrupted");
	memcpy(out, tmp, PAGE_SIZE);
	return 0;
}
