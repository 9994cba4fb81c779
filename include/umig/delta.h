/*
 * delta.h - delta encoding of re-sent pages (the idea of QEMU's XBZRLE).
 *
 * A page that pre-copy sends again has usually changed in a few words.
 * The source keeps a bounded cache of the last version it sent of recently
 * sent pages; when the page goes out again it sends only the difference:
 * the XOR against the cached version, as runs of unchanged and changed
 * bytes.  The receiver applies it to its current copy of the page.
 *
 * The cache (source side): a byte budget fixes the number of page slots
 * up front (one mmap, so unused slots cost no memory); an open-addressing
 * hash table from page number to slot gives O(1) lookup; CLOCK (second
 * chance) evicts, so a page that keeps being re-sent stays while pages
 * sent once age out.  Not thread-safe: one cache per sending thread, and
 * every send of a given page must go through the same cache (partition
 * pages between threads, or lock).  A page sent by another path (a zero
 * page, a post-copy reply) must be dropped with delta_cache_drop(), or its
 * next delta is built against a base the receiver no longer has -- which
 * the receiver then refuses, failing the migration rather than corrupting
 * the page.  QEMU starts XBZRLE after the first round; the same is wise
 * here: the first round would only churn the cache.
 *
 * A delta on the wire (little-endian):
 *
 *   u8 DELTA_MAGIC  u8 version (1)  u16 0
 *   u32 XXH3-64 of the base page, truncated    (the version it applies to)
 *   u32 XXH3-64 of the resulting page, truncated
 *   then runs: uleb128 unchanged bytes, uleb128 changed bytes n (>= 1),
 *   n bytes of XOR; the page's tail after the last run is unchanged.
 *
 * The receiver checks the base hash before touching anything, so a delta
 * for a page it does not have, or whose base is not its current copy
 * (reordered, a lost update, the wrong cache), is refused; the result hash
 * catches a corrupted delta.
 */
#ifndef UMIG_DELTA_H
#define UMIG_DELTA_H

#include <stddef.h>
#include <stdint.h>

#define DELTA_MAGIC 0xd7
#define DELTA_VERSION 1
#define DELTA_HDR_SIZE 12
/* A delta never needs more room than this (it is only used when smaller). */
#define DELTA_MAX_SIZE 4096

struct delta_cfg {
	/*
	 * Use a delta only when it is at most this many per mille of the
	 * page (default 500: beyond half a page, lz4 on the raw page usually
	 * does as well on text-like data, and the cache entry is refreshed
	 * either way).  1000 = whenever it is smaller than the page.
	 */
	unsigned max_permille;
};

struct delta_stats {
	uint64_t lookups;	/* delta_encode calls */
	uint64_t hits;		/* the page was in the cache */
	uint64_t deltas;	/* hits sent as a delta */
	uint64_t too_big;	/* hits whose delta was not small enough: sent raw */
	uint64_t unchanged;	/* hits identical to the cached version */
	uint64_t inserts;	/* misses that took a slot */
	uint64_t evictions;
	uint64_t bytes_raw;	/* PAGE_SIZE per delta sent: what raw would have cost */
	uint64_t bytes_delta;	/* bytes of the deltas sent */
};

struct delta_cache;

/*
 * A cache within budget bytes (everything it allocates: slots, index and
 * the structure itself).  cfg may be NULL.  Returns 0 and *out, -EINVAL
 * (with a detail) if the budget holds fewer than 2 pages, or -ENOMEM.
 * The owner frees with delta_cache_free() (NULL is fine).
 */
int delta_cache_new(uint64_t budget, const struct delta_cfg *cfg, struct delta_cache **out);
void delta_cache_free(struct delta_cache *c);

/*
 * Encode page pfn (PAGE_SIZE bytes at page) against the cached version.
 * Returns the delta length (> 0) written to dst, or 0: send the page raw
 * (a miss, or a delta that is not small enough).  Either way the cache
 * now holds page as pfn's last version, so the caller must send exactly
 * these bytes (a delta, or page itself when 0): page must not change
 * during the call -- copy guest memory to the send buffer first.
 * dst_cap of DELTA_MAX_SIZE is always enough; less limits the delta.
 * -EINVAL for bad arguments.
 */
int delta_encode(struct delta_cache *c, uint64_t pfn, const void *page, void *dst,
		 size_t dst_cap);

/* Forget pfn (it was sent by another path).  Returns 1 if it was cached. */
int delta_cache_drop(struct delta_cache *c, uint64_t pfn);
void delta_cache_clear(struct delta_cache *c);

/* Pages the cache holds now, and at most. */
uint64_t delta_cache_count(const struct delta_cache *c);
uint64_t delta_cache_capacity(const struct delta_cache *c);
/* Bytes the cache allocated (<= its budget). */
uint64_t delta_cache_footprint(const struct delta_cache *c);
const struct delta_stats *delta_cache_stats(const struct delta_cache *c);

/*
 * Receiver side: apply the delta (len bytes) to base, the receiver's
 * current copy of the page, writing the new version to out (PAGE_SIZE
 * bytes; may be base itself).  base NULL means the receiver does not have
 * the page.  Returns 0, or -ENOENT (no base), -ESTALE (the base is not
 * the version the delta was made against) or -EBADMSG (malformed,
 * truncated, or the result fails its hash), each with a detail in
 * err_msg().  The result is built and checked aside and copied to out
 * only when it passes: on a refusal nothing is written.
 */
int delta_decode(const void *base, const void *delta, size_t len, void *out);

#endif
