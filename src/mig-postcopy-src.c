/*
 * mig-postcopy-src.c - post-copy at the source: the push of every page
 * not yet sent, in pre-paging order, and the server that answers the
 * destination's page requests.
 *
 * Exactly-once: `sent` has a bit per page; whoever sets it first (the
 * push or a request) sends the page, the other skips it.  A request for
 * a page the push already sent gets no reply: the page is on its way and
 * placing it wakes the faulting vCPU.  The request server runs only on
 * transports whose fetches need the source (no XCAP_ONESIDED).
 *
 * One-sided transports (RDMA READ): the destination pulls every page
 * itself; the source only sends the zero map, as ZERO runs and a bulk-end
 * mark.  The map is taken in two steps (docs/rdma.md, "The zero map"):
 * what was populated before guest RAM was registered (registration
 * populates every page), then, after the pause, a content check of just
 * those pages.  A page in the map is zero when it is sent, and a page
 * left out is READ, which is always correct: the map only saves READs.
 */
#include <errno.h>

#include "mig.h"

static void *src_urgent_thread(void *arg)
{
	struct mig_source *s = arg;
	struct xev ev;

	for (;;) {
		struct xrun r;
		uint64_t pfn;
		int ret = xport_reap(s->c.x, XQ_URGENT, &ev, -1);

		if (ret <= 0 || ev.kind != XEV_REQ) {
			/* a broken urgent channel breaks the session: the push notices */
			xport_shutdown(s->c.x);
			break;
		}
		pfn = ev.run.pfn;
		s->requests++;
		prepage_fault(s->pp, pfn);
		if (bitmap_test_and_set(&s->sent, pfn))
			continue;   /* the push sent it already */
		r = (struct xrun){ .pfn = pfn, .n = 1, .enc = XENC_ZERO };
		if (!src_page_zero(s, pfn)) {
			r.enc = XENC_RAW;
			r.data = mem_page(&s->c.vm->mem, pfn);
			r.len = PAGE_SIZE;
			if (bitmap_test_and_set(&s->ever, pfn))
				s->pages_resent++;
		}
		if (xport_reply(s->c.x, &r) < 0) {
			xport_shutdown(s->c.x);
			break;
		}
		s->pages_urgent++;
		pr_debug("migration: urgent page %llu", (unsigned long long)pfn);
	}
	return NULL;
}

static int src_push(struct mig_source *s)
{
	struct run_acc a = { 0 };
	uint64_t pushed = 0, pfn;
	int ret;

	while ((pfn = prepage_next(s->pp)) < s->c.npages) {
		if (bitmap_test_and_set(&s->sent, pfn))
			continue;
		ret = src_acc_add(s, &a, pfn);
		if (ret < 0)
			return ret;
		/*
		 * A page in an open run is marked sent but not yet on the wire,
		 * and a fault on it waits for the run: keep runs short (a zero
		 * run once grew over the whole untouched half of RAM, and one
		 * fault waited 2.3 s for it).
		 */
		if (a.n >= (a.enc == XENC_RAW ? 16 : 256))
			ret = src_acc_flush(s, &a);
		if (ret < 0)
			return ret;
		if (!(++pushed & 1023))
			progress_update(&s->c.progress, "postcopy", bitmap_count(&s->sent), s->c.npages,
					mig_bytes(&s->c, XCH_BULK), s->requests, false);
	}
	ret = src_acc_flush(s, &a);
	if (!ret)
		ret = xport_mark(s->c.x, MARK_BULK_END, 0);
	if (!ret)
		ret = xport_flush(s->c.x);
	return ret;
}

void src_expose_ram(struct mig_source *s, struct xport *x)
{
	if (!(x->features & FEAT_RDMA_READ))
		return;
	if (!s->prereg.words) {
		/* before the first registration: afterwards every page looks populated */
		if (bitmap_init(&s->prereg, s->c.npages) < 0 ||
		    mem_scan_populated(&s->c.vm->mem, &s->prereg) < 0)
			bitmap_set_range(&s->prereg, 0, s->c.npages);
	}
	x->ram = s->c.vm->mem.host;
	x->ram_len = s->c.vm->mem.size;
}

/* The guest is paused for good: which of the never-populated pages are still zero. */
static void src_check_zeromap(struct mig_source *s)
{
	uint64_t n = 0;

	if (s->zeromap_done)
		return;
	if (bitmap_init(&s->zeromap, s->c.npages) < 0)
		return;   /* no map: every page is READ */
	for (uint64_t pfn = s->prereg.words ? bitmap_next_clear(&s->prereg, 0) : s->c.npages;
	     pfn < s->c.npages; pfn = bitmap_next_clear(&s->prereg, pfn + 1))
		if (mem_page_is_zero(mem_page(&s->c.vm->mem, pfn))) {
			bitmap_set(&s->zeromap, pfn);
			n++;
		}
	s->zeromap_done = true;
	s->pages_zero += n;
	pr_debug("migration: %llu of %llu pages are zero and never READ",
		 (unsigned long long)n, (unsigned long long)s->c.npages);
}

/* The zero map as ZERO runs, then the end of the bulk stream. */
static int src_send_zeromap(struct mig_source *s)
{
	int ret = 0;

	src_check_zeromap(s);
	for (uint64_t pfn = s->zeromap.words ? bitmap_next_set(&s->zeromap, 0) : s->c.npages;
	     pfn < s->c.npages && !ret;) {
		uint64_t end = MIN(bitmap_next_clear(&s->zeromap, pfn), pfn + 4096);
		struct xrun r = { .pfn = pfn, .n = (uint32_t)(end - pfn), .enc = XENC_ZERO };

		ret = xport_push(s->c.x, &r);
		pfn = bitmap_next_set(&s->zeromap, end);
	}
	if (!ret)
		ret = xport_mark(s->c.x, MARK_BULK_END, 0);
	return ret;
}

/*
 * A umig 0.1 destination may touch guest RAM while it loads the state
 * (its vCPU reads the GDT), before it reports RESUMED: serve its page
 * requests from the moment the guest is paused, so it can.  Newer
 * destinations never do, and the scan stays out of their downtime.
 */
int src_postcopy_early(struct mig_source *s)
{
	if (s->c.x->version > 1 || (xport_caps(s->c.x) & XCAP_ONESIDED))
		return 0;
	src_scan_populated(s);
	s->scanned = true;
	if (pthread_create(&s->urgent_thread, NULL, src_urgent_thread, s))
		return err_set(-EAGAIN, "cannot start the urgent thread");
	s->urgent_started = true;
	return 0;
}

static int src_serve_and_push(struct mig_source *s)
{
	if (!s->urgent_started) {
		if (pthread_create(&s->urgent_thread, NULL, src_urgent_thread, s))
			return err_set(-EAGAIN, "cannot start the urgent thread");
		s->urgent_started = true;
	}
	return src_push(s);
}

/*
 * Push everything and wait for COMPLETE; a broken link on the way pauses
 * post-copy and recovers it (mig-recover.c), then the push goes on with
 * what the destination still lacks.  Bounded by the recover timeout of
 * each break.
 */
int src_postcopy(struct mig_source *s)
{
	int ret;

	/*
	 * The guest is stopped here for good, so the map stays true;
	 * scanning after RESUMED keeps it out of the downtime.
	 */
	if (!s->scanned && !(xport_caps(s->c.x) & XCAP_ONESIDED))
		src_scan_populated(s);
	mig_set_state(&s->c, MIG_POSTCOPY);
	for (;;) {
		/* one-sided transports: the destination pulls every page itself */
		ret = xport_caps(s->c.x) & XCAP_ONESIDED ? src_send_zeromap(s) : src_serve_and_push(s);
		if (!ret)
			ret = src_complete(s);
		if (ret >= 0 || s->cancel_recovery)
			return ret;
		ret = src_recover(s, ret);
		if (ret < 0)
			return ret;
		if (ret == 1)
			return src_complete(s);   /* it completed during the break */
	}
}
