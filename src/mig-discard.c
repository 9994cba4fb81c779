/*
 * mig-discard.c - hybrid's discards, both sides: the pages written since
 * round 1 sent them are stale at the destination and must go before the
 * guest runs there (post-copy then fetches their current content).
 *
 * Without FEAT_EARLY_DISCARD every discard leaves at the pause (DISCARD),
 * and the destination applies it once the bulk stream reached the
 * pre-copy-done mark: whatever of round 1 was still queued is placed,
 * then dropped, inside the downtime.
 *
 * With it, the source does not pause right after round 1.  While the
 * guest runs on it collects what was written, sends those pages as
 * DISCARD_EARLY (tagged with the round whose data they follow), and waits
 * for PLACED, which the destination sends when its bulk receiver has
 * placed a round's end mark and after each DISCARD_EARLY it applied.  The
 * destination applies a DISCARD_EARLY only once the round it names is
 * placed, so no older copy of a page lands after its discard, however
 * slowly round 1 drains.  When the rest to discard is small, or the wait
 * reaches its bound, the source pauses and discards only the pages not
 * discarded yet (a page is discarded once: afterwards it is absent at
 * the destination until post-copy places the source's final copy, so a
 * later write needs no second discard).
 */
#include <errno.h>
#include <poll.h>

#include "mig.h"

#define DISCARD_FRAME_BYTES  (12 * 65536)  /* runs per frame: 65536 */
#define EARLY_SMALL_PAGES    256           /* left for the pause: ~1 MiB */
#define EARLY_MAX_BATCHES    64
#define EARLY_POLL_MS        5

/* --- source ------------------------------------------------------------------ */

#define COLLECT_MAX_RANGES 64   /* more pieces than this: one scan of all RAM */

/*
 * Collect what was written into s->dirty, outside the pages discarded
 * already: a discarded page stays stale whatever is written to it, so it
 * is neither scanned nor protected again (the sequential writer would
 * otherwise take a write fault on every page of its set per collection,
 * and the scan would re-protect them all).  last: the guest is stopped
 * for good, report without protecting.  Pages reported, or < 0.
 */
long src_collect_rest(struct mig_source *s, bool last)
{
	const struct bitmap *done = &s->discarded;
	uint64_t npages = s->c.npages, ranges = 0;
	long total = 0;

	for (uint64_t a = bitmap_next_clear(done, 0); a < npages && ranges <= COLLECT_MAX_RANGES;) {
		uint64_t b = bitmap_next_set(done, a);

		ranges++;
		a = b < npages ? bitmap_next_clear(done, b) : npages;
	}
	if (!s->early.pages || ranges > COLLECT_MAX_RANGES)
		return last ? dirty_collect_last(&s->tracker, &s->dirty) :
		       dirty_collect(&s->tracker, &s->dirty);
	for (uint64_t a = bitmap_next_clear(done, 0); a < npages;) {
		uint64_t b = MIN(npages, bitmap_next_set(done, a));
		long n = dirty_collect_range(&s->tracker, &s->dirty, a, b - a, !last);

		if (n < 0)
			return n;
		total += n;
		a = b < npages ? bitmap_next_clear(done, b) : npages;
	}
	return total;
}

struct discard_out {
	struct wbuf w;
	uint16_t type;
	uint32_t round;   /* DISCARD_EARLY: the round whose data the discards follow */
	uint64_t pages;
};

static void discard_begin(struct discard_out *o)
{
	wbuf_reset(&o->w);
	if (o->type == MSG_DISCARD_EARLY) {
		wbuf_put_u32(&o->w, o->round);
		wbuf_put_u32(&o->w, 0);
	}
}

static int discard_send(struct mig_source *s, struct discard_out *o)
{
	size_t head = o->type == MSG_DISCARD_EARLY ? 8 : 0;
	int ret = o->w.err;

	if (!ret && o->w.len > head) {
		ret = xport_ctl_send(s->c.x, o->type, o->w.data, o->w.len);
		if (!ret && o->type == MSG_DISCARD_EARLY)
			s->early.frames_sent++;
	}
	discard_begin(o);
	return ret;
}

static int discard_add(struct mig_source *s, struct discard_out *o, uint64_t pfn, uint64_t n)
{
	while (n) {
		uint32_t k = n > UINT32_MAX ? UINT32_MAX : n;

		wbuf_put_u64(&o->w, pfn);
		wbuf_put_u32(&o->w, k);
		bitmap_set_range(&s->discarded, pfn, k);
		o->pages += k;
		pfn += k;
		n -= k;
		if (o->w.len >= DISCARD_FRAME_BYTES) {
			int ret = discard_send(s, o);

			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* Discard every page of s->dirty not discarded yet, in ascending runs; pages, or < 0. */
static long src_discard_new(struct mig_source *s, uint16_t type)
{
	const struct bitmap *dirty = &s->dirty, *done = &s->discarded;
	struct discard_out o = { .type = type, .round = s->rounds };
	uint64_t npages = s->c.npages;
	int ret = 0;

	wbuf_init(&o.w);
	discard_begin(&o);
	for (uint64_t a = bitmap_next_set(dirty, 0); a < npages && !ret;) {
		uint64_t b = bitmap_next_clear(dirty, a);

		for (uint64_t q = a; q < b && !ret;) {
			uint64_t e;

			q = bitmap_next_clear(done, q);
			if (q >= b)
				break;
			e = MIN(b, bitmap_next_set(done, q));
			ret = discard_add(s, &o, q, e - q);
			q = e;
		}
		a = b < npages ? bitmap_next_set(dirty, b) : npages;
	}
	if (!ret)
		ret = discard_send(s, &o);
	wbuf_free(&o.w);
	return ret < 0 ? ret : (long)o.pages;
}

/*
 * At the pause: everything went in pre-copy, and what was written since
 * is stale there.  Discards what is not discarded yet; the pages discarded.
 */
long src_discard_dirty(struct mig_source *s)
{
	uint64_t npages = s->c.npages;

	/* a hugetlb destination drops whole 2 MiB pages: resend every page of each */
	if (s->c.x->features & FEAT_HUGE2M)
		bitmap_round_out(&s->dirty, HUGE_PAGES);
	bitmap_set_range(&s->sent, 0, npages);
	for (uint64_t a = bitmap_next_set(&s->dirty, 0); a < npages;) {
		uint64_t b = bitmap_next_clear(&s->dirty, a);

		bitmap_clear_range(&s->sent, a, b - a);
		a = b < npages ? bitmap_next_set(&s->dirty, b) : npages;
	}
	return src_discard_new(s, MSG_DISCARD);
}

/* PLACED: u32 rounds placed, u32 DISCARD_EARLY frames applied. */
static int src_on_ctl(struct mig_source *s, struct proto_msg *m)
{
	char text[1100];
	struct rbuf r;

	switch (m->type) {
	case MSG_PING:
		return 0;
	case MSG_PLACED:
		rbuf_init(&r, m->payload, m->len);
		s->early.placed_round = rbuf_get_u32(&r);
		s->early.frames_applied = rbuf_get_u32(&r);
		return 0;
	case MSG_ERROR:
		proto_error_text(m, text, sizeof(text));
		return err_set(-ECONNABORTED, "the destination failed: %s", text);
	default:
		return err_set(-EPROTO, "control channel: unexpected %s (type %u) before the "
			       "switchover", proto_type_name(m->type), m->type);
	}
}

/* Read control messages for up to ms; a frame begun is read to its end. */
static int src_read_ctl(struct mig_source *s, int ms)
{
	struct xconn *ctl = s->c.x->ctl;
	int timeout = s->c.x->features & FEAT_KEEPALIVE ? (int)s->c.peer_timeout_ms : -1;

	for (;;) {
		struct pollfd p = { .fd = xconn_fd(ctl), .events = POLLIN };
		struct proto_msg m = { 0 };
		int ret;

		if (!xconn_pending(ctl) && poll(&p, 1, ms) <= 0)
			return 0;
		ret = xport_ctl_recv(s->c.x, &m, timeout);
		if (!ret)
			ret = src_on_ctl(s, &m);
		proto_msg_free(&m);
		if (ret < 0)
			return err_set(ret, "waiting for the destination to place round %u: %s",
				       s->rounds, err_msg(ret));
		ms = 0;   /* drain what is there, then return */
	}
}

static bool src_early_caught_up(const struct mig_source *s)
{
	return s->early.placed_round >= s->rounds &&
	       s->early.frames_applied >= s->early.frames_sent;
}

/*
 * Hybrid, after round 1, the guest still running: discard what it writes
 * while round 1 drains, until the destination has placed the round and
 * applied every discard, and the rest is small.  Bounded by the peer
 * timeout plus round 1's own time; past it the switchover goes on the old
 * way (correct either way: the destination orders discards itself).
 */
int src_discard_early(struct mig_source *s, uint64_t round_ns)
{
	uint64_t t0 = now_ns(), bound = t0 + round_ns + s->c.peer_timeout_ms * 1000000ull;
	int ret = 0;

	if (s->p.mode != MIG_MODE_HYBRID || !(s->c.x->features & FEAT_EARLY_DISCARD))
		return 0;
	for (unsigned batch = 0; batch < EARLY_MAX_BATCHES && !ret; batch++) {
		uint64_t left;
		long n = src_collect_rest(s, false);

		if (n < 0)
			return n;
		left = bitmap_count(&s->dirty) - s->early.pages;
		if (src_early_caught_up(s) && left <= EARLY_SMALL_PAGES)
			break;
		n = left ? src_discard_new(s, MSG_DISCARD_EARLY) : 0;
		if (n < 0)
			return n;
		s->early.pages += n;
		s->early.batches += n > 0;
		while (!ret && !src_early_caught_up(s) && now_ns() < bound)
			ret = src_read_ctl(s, EARLY_POLL_MS);
		if (!ret && !src_early_caught_up(s)) {
			pr_info("migration: the destination had not placed round %u after %.1f s; "
				"pausing anyway (its discards then wait inside the downtime)",
				s->rounds, (now_ns() - t0) / 1e9);
			break;
		}
	}
	s->early.wait_ns = now_ns() - t0;
	return ret;
}

/* --- destination ------------------------------------------------------------- */

/* PLACED to the source: how far the bulk stream is placed, the discards applied. */
int dst_send_placed(struct mig_dest *d)
{
	struct wbuf w;
	int ret;

	if (!(d->c.x->features & FEAT_EARLY_DISCARD) || d->hello.mode != MIG_MODE_HYBRID)
		return 0;
	wbuf_init(&w);
	pthread_mutex_lock(&d->c.lock);
	wbuf_put_u32(&w, d->rounds_placed);
	wbuf_put_u32(&w, d->early_applied);
	pthread_mutex_unlock(&d->c.lock);
	ret = w.err ? w.err : xport_ctl_send(d->c.x, MSG_PLACED, w.data, w.len);
	wbuf_free(&w);
	return ret;
}

/*
 * Drop the pages of DISCARD runs.  Without FEAT_EARLY_DISCARD runs must
 * ascend and be disjoint across all frames (discard_end), so the discards
 * of one migration touch each page at most once; with it each frame
 * ascends on its own, and every page discarded must be present (each is
 * discarded at most once), which bounds the work the same way.  Bitmap
 * work by range, one drop (mem_drop) and one code invalidation per run.
 */
static int dst_discard_runs(struct mig_dest *d, struct rbuf *r, const char *what)
{
	bool once = d->c.x->features & FEAT_EARLY_DISCARD;
	uint64_t t0 = now_ns(), frame_end = 0, *floor = once ? &frame_end : &d->discard_end;
	struct proto_run run;
	int ret;

	while ((ret = proto_next_run(r, d->c.npages, floor, what, &run)) > 0) {
		uint64_t pfn = run.pfn, have = bitmap_count_range(&d->present, pfn, run.n);
		uint32_t n = run.n;

		if (once && have != n)
			return err_set(-EPROTO, "control channel: %s run %llu+%u: %llu of its pages "
				       "were discarded before or never placed", what, (unsigned long long)pfn, n,
				       (unsigned long long)(n - have));
		d->present_count -= have;
		bitmap_clear_range(&d->present, pfn, n);
		/* memfd RAM: MADV_DONTNEED would leave the stale page in the page cache */
		ret = mem_drop(&d->c.vm->mem, pfn << PAGE_SHIFT, (uint64_t)n * PAGE_SIZE);
		if (ret < 0)
			return err_set(ret, "discarding stale pages: %s", err_msg(ret));
		/*
		 * No translated code may outlive the bytes it came from.  (The
		 * destination vCPU has not run yet, so this is cheap; it keeps
		 * discards correct if that ever changes.)
		 */
		ret = vm_flush_code(d->c.vm, pfn << PAGE_SHIFT, (uint64_t)n * PAGE_SIZE);
		if (ret < 0)
			return ret;
		d->dt.discard_pages += n;
	}
	d->dt.discard_ns += now_ns() - t0;
	return ret < 0 ? err_set(ret, "control channel: %s", err_msg(ret)) : 0;
}

/* DISCARD (at the pause): applied once the bulk stream reached pre-copy-done. */
int dst_discard(struct mig_dest *d, const struct proto_msg *m)
{
	struct rbuf r;
	int ret = dst_wait_mark(d, MARK_PRECOPY_DONE);

	rbuf_init(&r, m->payload, m->len);
	return ret < 0 ? ret : dst_discard_runs(d, &r, "DISCARD");
}

/* DISCARD_EARLY: applied once the round it follows is placed, then PLACED. */
int dst_discard_early(struct mig_dest *d, const struct proto_msg *m)
{
	struct rbuf r;
	uint32_t round;
	int ret;

	if (!(d->c.x->features & FEAT_EARLY_DISCARD) || d->hello.mode != MIG_MODE_HYBRID)
		return err_set(-EPROTO, "control channel: DISCARD_EARLY in a session that did not "
			       "negotiate it (FEAT_EARLY_DISCARD, hybrid mode)");
	rbuf_init(&r, m->payload, m->len);
	round = rbuf_get_u32(&r);
	rbuf_get_u32(&r);
	if (!round)
		return err_set(-EPROTO, "DISCARD_EARLY: round 0 (it must name the round it follows)");
	pthread_mutex_lock(&d->c.lock);
	d->dt.early_held += d->rounds_placed < round;   /* the ordering that matters, counted */
	pthread_mutex_unlock(&d->c.lock);
	ret = dst_wait_round(d, round);
	/*
	 * Round 1 is placed, so no page is written here until post-copy
	 * places it: arm userfaultfd now, outside the downtime, as pure
	 * post-copy does before its switchover.
	 */
	if (!ret && !d->uffd_ready)
		ret = dst_arm_postcopy(d);
	if (!ret)
		ret = dst_discard_runs(d, &r, "DISCARD_EARLY");
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&d->c.lock);
	d->early_applied++;
	pthread_mutex_unlock(&d->c.lock);
	return dst_send_placed(d);
}
