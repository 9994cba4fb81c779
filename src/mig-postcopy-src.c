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
	if (!s->scanned)
		src_scan_populated(s);
	mig_set_state(&s->c, MIG_POSTCOPY);
	s->enc.delta_live = false;   /* each page goes once now, maybe to a page dropped there */
	/* one-sided transports: the destination pulls every page itself */
	if (xport_caps(s->c.x) & XCAP_ONESIDED)
		return src_complete(s);
	for (;;) {
		ret = 0;
		if (!s->urgent_started) {
			if (pthread_create(&s->urgent_thread, NULL, src_urgent_thread, s))
				return err_set(-EAGAIN, "cannot start the urgent thread");
			s->urgent_started = true;
		}
		ret = src_push(s);
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
