/*
 * mig-pages.c - how the source puts pages on the bulk queue: consecutive
 * pages are gathered into runs (data runs of up to PROTO_RUN_MAX pages,
 * zero runs of up to ZERO_RUN_MAX), zero pages are never sent as data, and an
 * untouched page is known to be zero without being read.
 *
 * Used by every step that sends pages: pre-copy rounds, stop-and-copy at
 * the switchover, and the post-copy push.
 */
#include <errno.h>

#include "mig.h"

static uint64_t bulk_bytes(struct mig_source *s)
{
	return mig_bytes(&s->c, XCH_BULK);
}

static void src_account_data(struct mig_source *s, uint64_t pfn, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (bitmap_test_and_set(&s->ever, pfn + i))
			s->pages_resent++;
}

static int src_push_run(struct mig_source *s, uint32_t enc, uint64_t pfn, uint32_t n)
{
	struct xrun r = { .pfn = pfn, .n = n, .enc = enc };

	if (enc == XENC_ZERO) {
		s->pages_zero += n;
		src_enc_forget(s, pfn, n);
	} else {
		s->pages_bulk += n;
		src_account_data(s, pfn, n);
		if (src_enc_active(s))
			return src_push_encoded(s, pfn, n);
		r.data = mem_page(&s->c.vm->mem, pfn);
		r.len = n * PAGE_SIZE;
	}
	src_rate_wait(s, r.len + 24);
	return xport_push(s->c.x, &r);
}

int src_acc_flush(struct mig_source *s, struct run_acc *a)
{
	int ret = a->n ? src_push_run(s, a->enc, a->pfn, a->n) : 0;

	a->n = 0;
	return ret;
}

/* Zero without reading it when the page was never populated. */
bool src_page_zero(struct mig_source *s, uint64_t pfn)
{
	return !bitmap_test(&s->populated, pfn) || mem_page_is_zero(mem_page(&s->c.vm->mem, pfn));
}

/*
 * Refresh the populated map.  While the guest runs a page may become
 * populated after the scan: it is then written, so dirty tracking sends
 * it again in a later round.  On failure every page counts as populated.
 */
void src_scan_populated(struct mig_source *s)
{
	bitmap_clear_all(&s->populated);
	if (mem_scan_populated(&s->c.vm->mem, &s->populated) < 0)
		bitmap_set_range(&s->populated, 0, s->c.npages);
}

/*
 * A zero run goes out every 16 MiB at the latest.  Deciding that a page
 * is zero may mean reading it (10-20 us on a write-protected page never
 * touched), and while a run grows nothing is handed to the transport: a
 * frame left half sent in its batch would wait for the whole run, and
 * the destination bounds a frame stopped half way by the peer timeout
 * (1 GiB of such pages held a frame for 4 s).
 */
#define ZERO_RUN_MAX 4096

int src_acc_add(struct mig_source *s, struct run_acc *a, uint64_t pfn)
{
	uint32_t enc = src_page_zero(s, pfn) ? XENC_ZERO : XENC_RAW;
	int ret = 0;

	if (a->n && (a->enc != enc || a->pfn + a->n != pfn ||
		     (enc == XENC_RAW && a->n == PROTO_RUN_MAX) || a->n == ZERO_RUN_MAX))
		ret = src_acc_flush(s, a);
	if (!a->n) {
		a->enc = enc;
		a->pfn = pfn;
	}
	a->n++;
	return ret;
}

long src_send_set(struct mig_source *s, const struct bitmap *set, const char *phase)
{
	uint64_t npages = s->c.npages;
	struct run_acc a = { 0 };
	long n = 0;
	int ret;

	for (uint64_t pfn = set ? bitmap_next_set(set, 0) : 0; pfn < npages;
	     pfn = set ? bitmap_next_set(set, pfn + 1) : pfn + 1) {
		/* a written page is populated, whatever an older scan said */
		if (set)
			bitmap_set(&s->populated, pfn);
		ret = src_acc_add(s, &a, pfn);
		if (ret < 0)
			return ret;
		n++;
		if (!(n & 1023))
			progress_update(&s->c.progress, phase, n, npages, bulk_bytes(s), 0, false);
	}
	ret = src_acc_flush(s, &a);
	return ret < 0 ? ret : n;
}
