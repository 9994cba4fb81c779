/*
 * mig-postcopy-src.c - post-copy at the source: the push of every page
 * not yet sent, in pre-paging order, and the server that answers the
 * destination's page requests.
 *
 * `sent` has a bit per page; whoever sets it first (the push or a
 * request) sends the page.  A request for a page the push already sent
 * used to get no reply, the page being on its way; but "on its way" can
 * mean queued behind megabytes of bulk data in the socket buffer, and the
 * faulting vCPU waits for all of them.  So the push records where each
 * page's run ends in the bulk byte stream (push_end), and a request for a
 * page whose bytes the destination has not yet acknowledged (the
 * transport's bulk_inflight), with more queued ahead of it than the
 * channel delivers in DUP_MIN_WAIT_US, is answered on the urgent channel
 * as well: a deliberate duplicate, counted in pages_dup.  The guest is stopped here,
 * so both copies are the same bytes; the destination places whichever
 * arrives first and skips the other (EEXIST, uffd.c).  A page already
 * acknowledged gets no reply: it is in the destination's receive queue,
 * ahead of anything sent now.  Duplicates only go to destinations of
 * protocol 2 or later (umig 0.1's receiver never saw a page twice), and
 * `--dup-inflight off` turns them off (`always` duplicates every
 * request for a pushed page, acknowledged or not: for tests).  The request server runs only on
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
#include <stdlib.h>

#include "mig.h"

#define PUSH_QUEUED UINT64_MAX

/*
 * A duplicate pays when the push's copy would arrive later than an urgent
 * reply: when the bytes still ahead of it would take longer than this to
 * drain at the channel's delivery rate.  An urgent reply costs about a
 * round trip plus a placement (bench/floors: 40-60 us here); a margin
 * above that keeps duplicates from taking the link's bandwidth for pages
 * that were about to arrive anyway (on a 1 Gbit/s link, 300 us is 37 KB).
 */
#define DUP_MIN_WAIT_US 300

/*
 * Is the push's copy of pfn still queued at this end or on the wire, long
 * enough that an urgent copy would arrive first?  Pages not pushed in
 * post-copy (pre-copy rounds, urgent replies) are not.
 */
static bool src_inflight(struct mig_source *s, uint64_t pfn)
{
	uint64_t end = s->push_end ? atomic_load_explicit(&s->push_end[pfn], memory_order_acquire) : 0;
	uint64_t ahead, rate;

	if (!end)
		return false;
	if (end == PUSH_QUEUED || s->p.dup_inflight == MIG_DUP_ALWAYS)
		return true;
	if (xport_bulk_unacked(s->c.x, end, &ahead, &rate) < 0 || !ahead)
		return false;
	/* unknown rate: the bytes are queued, assume they wait */
	return !rate || ahead * 1000000.0 / rate > DUP_MIN_WAIT_US;
}

static bool src_dup_allowed(struct mig_source *s)
{
	return s->push_end && s->p.dup_inflight != MIG_DUP_OFF && s->c.x->version > 1;
}

/* The run of pages that are gathered but not yet stamped: stamp them. */
static void src_stamp(struct mig_source *s, const uint64_t *pfns, size_t n)
{
	uint64_t queued;

	if (!s->push_end || !n || xport_bulk_pos(s->c.x, &queued) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		atomic_store_explicit(&s->push_end[pfns[i]], queued, memory_order_release);
}

/*
 * Whether a requested page is zero.  The request server starts before the
 * scan of populated pages (it takes tens of ms for a large guest, and the
 * destination's first faults would wait for it): until the scan is done
 * the page itself is looked at (reading a never-touched page maps the
 * shared zero page, which costs a fault but is correct).
 */
static bool src_reply_zero(struct mig_source *s, uint64_t pfn)
{
	if (atomic_load_explicit(&s->pc_scanned, memory_order_acquire))
		return src_page_zero(s, pfn);
	return mem_page_is_zero(mem_page(&s->c.vm->mem, pfn));
}

enum answer { ANSWER_NONE, ANSWER_ZERO, ANSWER_DATA };

/*
 * What a request for pfn needs: nothing (the push delivered it), a zero
 * page or its data.  The page counts as sent (and urgent) from here on.
 */
static enum answer src_answer_needs(struct mig_source *s, uint64_t pfn)
{
	bool dup = false;

	if (bitmap_test_and_set(&s->sent, pfn)) {
		/* the push sent it: answer too only if it is still queued */
		dup = src_dup_allowed(s) && src_inflight(s, pfn);
		if (!dup)
			return ANSWER_NONE;
	}
	s->pages_urgent++;
	s->pages_dup += dup;
	pr_debug("migration: urgent page %llu%s", (unsigned long long)pfn,
		 dup ? " (a duplicate of an in-flight push)" : "");
	if (src_reply_zero(s, pfn))
		return ANSWER_ZERO;
	if (!dup && bitmap_test_and_set(&s->ever, pfn))
		s->pages_resent++;
	return ANSWER_DATA;
}

/* Send pages [pfn, pfn + n), all zero or all data, as one reply; < 0 if the channel failed. */
static int src_reply_run(struct mig_source *s, uint64_t pfn, uint32_t n, enum answer a)
{
	struct xrun r = { .pfn = pfn, .n = n, .enc = XENC_ZERO };

	if (a == ANSWER_NONE || !n)
		return 0;
	if (a == ANSWER_DATA) {
		r.enc = XENC_RAW;
		r.data = mem_page(&s->c.vm->mem, pfn);
		r.len = n * PAGE_SIZE;
	}
	s->urgent_replies++;
	return xport_reply(s->c.x, &r) < 0 ? -EIO : 0;
}

/* Answer a request for pfn alone: < 0 when the channel failed. */
static int src_answer(struct mig_source *s, uint64_t pfn)
{
	return src_reply_run(s, pfn, 1, src_answer_needs(s, pfn));
}

/*
 * Answer pages [first, end) of a 2 MiB unit.  With FEAT_URGENT_RUNS the
 * pages go as runs of like pages (zero or data, up to PROTO_RUN_MAX): a
 * few frames and sends for the unit instead of one per page, which is
 * most of what a 2 MiB fault waits for on a loaded host.
 */
static int src_answer_unit(struct mig_source *s, uint64_t first, uint64_t end, uint64_t skip)
{
	bool runs = s->c.x->features & FEAT_URGENT_RUNS;
	enum answer open = ANSWER_NONE;
	uint64_t start = first;
	int ret = 0;

	for (uint64_t p = first; p < end && ret >= 0; p++) {
		enum answer a = p == skip ? ANSWER_NONE : src_answer_needs(s, p);

		if (!runs) {
			ret = src_reply_run(s, p, 1, a);
			continue;
		}
		if (a != open || p - start == PROTO_RUN_MAX) {
			ret = src_reply_run(s, start, (uint32_t)(p - start), open);
			open = a;
			start = p;
		}
	}
	if (runs && ret >= 0)
		ret = src_reply_run(s, start, (uint32_t)(end - start), open);
	return ret;
}

/*
 * One request.  A destination with hugetlb RAM (FEAT_HUGE2M) places
 * whole 2 MiB pages, so a request for one page is a request for the
 * 512 of its unit: every one it has not got is answered.
 */
static int src_serve_request(struct mig_source *s, uint64_t pfn)
{
	uint64_t first = pfn & ~(HUGE_PAGES - 1);
	int ret;

	s->requests++;
	prepage_fault(s->pp, pfn);
	if (!(s->c.x->features & FEAT_HUGE2M))
		return src_answer(s, pfn);
	/* the faulting page first: the rest of the unit follows it */
	ret = src_answer(s, pfn);
	if (ret >= 0)
		ret = src_answer_unit(s, first, MIN(first + HUGE_PAGES, s->c.npages), pfn);
	return ret < 0 ? ret : 0;
}

static void *src_urgent_thread(void *arg)
{
	struct mig_source *s = arg;
	struct xev ev;

	for (;;) {
		int ret = xport_reap(s->c.x, XQ_URGENT, &ev, -1);

		/* a broken urgent channel breaks the session: the push notices */
		if (ret <= 0 || ev.kind != XEV_REQ || src_serve_request(s, ev.run.pfn) < 0) {
			xport_shutdown(s->c.x);
			break;
		}
	}
	return NULL;
}

/*
 * Push every page not yet sent.  Each page is marked PUSH_QUEUED before
 * it joins a run and stamped with the bulk offset once its run has been
 * handed to the transport (after the flush that src_acc_add() may do
 * when a page does not extend the run, or the one below).  A request
 * that finds the bit set before PUSH_QUEUED is stored reads 0 and gets no
 * duplicate, as before duplicates existed: a window of nanoseconds.
 */
static int src_push(struct mig_source *s)
{
	struct run_acc a = { 0 };
	uint64_t pushed = 0, pfn, open[256];
	size_t nopen = 0;
	int ret;

	while ((pfn = prepage_next(s->pp)) < s->c.npages) {
		if (bitmap_test_and_set(&s->sent, pfn))
			continue;
		if (s->push_end)
			atomic_store_explicit(&s->push_end[pfn], PUSH_QUEUED, memory_order_release);
		ret = src_acc_add(s, &a, pfn);
		if (ret < 0)
			return ret;
		if (a.n == 1) {   /* a new run: the pages before it were flushed */
			src_stamp(s, open, nopen);
			nopen = 0;
		}
		open[nopen++] = pfn;
		/*
		 * A page in an open run is marked sent but not yet on the wire,
		 * and a fault on it waits for the run: keep runs short (a zero
		 * run once grew over the whole untouched half of RAM, and one
		 * fault waited 2.3 s for it).
		 */
		if (a.n >= (a.enc == XENC_RAW ? 16 : 256) || nopen == ARRAY_SIZE(open)) {
			ret = src_acc_flush(s, &a);
			src_stamp(s, open, nopen);
			nopen = 0;
		}
		if (ret < 0)
			return ret;
		if (!(++pushed & 1023))
			progress_update(&s->c.progress, "postcopy", bitmap_count(&s->sent), s->c.npages,
					mig_bytes(&s->c, XCH_BULK), s->requests, false);
	}
	ret = src_acc_flush(s, &a);
	src_stamp(s, open, nopen);
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
	atomic_store_explicit(&s->pc_scanned, true, memory_order_release);
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
	/*
	 * The guest is stopped here for good, so the map stays true;
	 * scanning after RESUMED keeps it out of the downtime, and after
	 * starting the request server out of the first faults.
	 */
	if (!s->scanned && s->dirty_tracker) {
		/*
		 * Pre-copy ran: its round-1 scan plus every page written since
		 * (the dirty set) cover what is populated, without a scan of
		 * RAM in the way of the first pushes (tens of ms per GiB).
		 */
		bitmap_or_words(&s->populated, s->dirty.words, (s->dirty.nbits + 63) / 64);
		s->scanned = true;
		atomic_store_explicit(&s->pc_scanned, true, memory_order_release);
	} else if (!s->scanned) {
		src_scan_populated(s);
		s->scanned = true;
		atomic_store_explicit(&s->pc_scanned, true, memory_order_release);
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

	/* without it, no duplicates: every push is then taken as delivered */
	if (!s->push_end && s->p.dup_inflight != MIG_DUP_OFF)
		s->push_end = calloc(s->c.npages, sizeof(*s->push_end));
	mig_set_state(&s->c, MIG_POSTCOPY);
	s->enc.delta_live = false;   /* each page goes once now, maybe to a page dropped there */
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
