/*
 * prefetch.c - which page one-sided post-copy READs next, and the zero
 * map's wire form (prefetch.h).  Built on every host, no verbs.
 */
#include <errno.h>
#include <stdlib.h>

#include "prefetch.h"
#include "umig/util.h"

int rdma_prefetch_create(struct rdma_prefetch **out, const char *policy, uint64_t npages,
			 const struct bitmap *skip, unsigned window)
{
	struct rdma_prefetch *p = calloc(1, sizeof(*p));
	int ret;

	if (!p)
		return -ENOMEM;
	p->npages = npages;
	p->window = window ? window : 1;
	ret = bitmap_init(&p->issued, npages);
	for (uint64_t i = skip ? bitmap_next_set(skip, 0) : npages; !ret && i < npages;
	     i = bitmap_next_set(skip, i + 1))
		bitmap_set(&p->issued, i);
	if (!ret)
		ret = prepage_create(&p->pp, policy, npages, &p->issued);
	if (ret < 0) {
		rdma_prefetch_destroy(p);
		return ret;
	}
	*out = p;
	return 0;
}

void rdma_prefetch_destroy(struct rdma_prefetch *p)
{
	if (!p)
		return;
	prepage_destroy(p->pp);
	bitmap_free(&p->issued);
	free(p);
}

int rdma_prefetch_fault(struct rdma_prefetch *p, uint64_t pfn)
{
	if (pfn >= p->npages)
		return -EINVAL;
	prepage_fault(p->pp, pfn);
	if (bitmap_test_and_set(&p->issued, pfn))
		return 0;
	p->faults_read++;
	return 1;
}

uint64_t rdma_prefetch_next(struct rdma_prefetch *p)
{
	uint64_t pfn;

	if (p->outstanding >= p->window)
		return p->npages;
	/* the policy skips issued pages, but a fault may claim one in between */
	while ((pfn = prepage_next(p->pp)) < p->npages)
		if (!bitmap_test_and_set(&p->issued, pfn))
			break;
	if (pfn < p->npages) {
		p->outstanding++;
		p->prefetched++;
	}
	return pfn;
}

void rdma_prefetch_done(struct rdma_prefetch *p)
{
	if (p->outstanding)
		p->outstanding--;
}

uint32_t rdma_prefetch_extend(struct rdma_prefetch *p, uint64_t pfn, uint32_t max, uint64_t *first)
{
	uint64_t lo = pfn, hi = pfn + 1;

	while (hi - lo < max && hi < p->npages && !bitmap_test_and_set(&p->issued, hi))
		hi++;
	while (hi - lo < max && lo > 0 && !bitmap_test_and_set(&p->issued, lo - 1))
		lo--;
	p->outstanding += (unsigned)(hi - lo - 1);
	p->prefetched += hi - lo - 1;
	*first = lo;
	return (uint32_t)(hi - lo);
}

void rdma_prefetch_skip(struct rdma_prefetch *p, uint64_t pfn, uint64_t n)
{
	for (uint64_t i = pfn; i < pfn + n && i < p->npages; i++)
		bitmap_test_and_set(&p->issued, i);
}

void rdma_zeromap_encode(struct wbuf *w, const struct bitmap *populated, uint64_t npages)
{
	for (uint64_t pfn = bitmap_next_clear(populated, 0); pfn < npages;) {
		uint64_t end = bitmap_next_set(populated, pfn);
		uint64_t n = MIN(end, npages) - pfn;

		n = MIN(n, (uint64_t)UINT32_MAX);
		wbuf_put_u64(w, pfn);
		wbuf_put_u32(w, (uint32_t)n);
		pfn += n;
		if (pfn < npages && bitmap_test(populated, pfn))
			pfn = bitmap_next_clear(populated, pfn);
	}
}

int rdma_zeromap_decode(const void *b, size_t len, uint64_t npages, struct bitmap *out)
{
	uint64_t end = 0;
	struct rbuf r;

	if (len % 12)
		return err_set(-EPROTO, "zero map: %zu bytes is not a whole number of runs", len);
	rbuf_init(&r, b, len);
	while (rbuf_left(&r)) {
		uint64_t pfn = rbuf_get_u64(&r);
		uint32_t n = rbuf_get_u32(&r);

		if (!n || pfn >= npages || n > npages - pfn)
			return err_set(-EPROTO, "zero map: run %llu+%u outside guest RAM (%llu pages)",
				       (unsigned long long)pfn, n, (unsigned long long)npages);
		if (pfn < end)
			return err_set(-EPROTO, "zero map: run %llu+%u overlaps or does not ascend",
				       (unsigned long long)pfn, n);
		bitmap_set_range(out, pfn, n);
		end = pfn + n;
	}
	return 0;
}
