/*
 * mig-switchover.c - the step where the guest stops at the source and
 * starts at the destination; both sides.
 *
 * Source: pause the guest, collect the last dirty set, then by mode:
 *   stop-copy  send every page         pre   send the last dirty set
 *   hybrid     DISCARD the pages written since round 1
 *   post       nothing
 * then MARK (pre-copy done for post/hybrid, bulk end otherwise), the
 * machine state, and the handover (mig-handover.c): READY, COMMIT,
 * RESUMED.  Until COMMIT leaves the source guest is the live one.
 *
 * Destination: apply DISCARDs (once the bulk stream reached the pre-copy
 * mark, so no older copy of a page can land after its discard), take the
 * state, wait for the bulk mark, arm userfaultfd for post-copy modes,
 * load the state, report READY and wait for COMMIT, then start the vCPU
 * and answer RESUMED.
 */
#include <errno.h>
#include <string.h>

#include "mig.h"

/* --- source ------------------------------------------------------------------ */

static int src_send_discards(struct mig_source *s)
{
	const struct bitmap *dirty = &s->dirty;
	uint64_t npages = s->c.npages;
	struct wbuf w;
	int ret = 0;

	wbuf_init(&w);
	for (uint64_t pfn = bitmap_next_set(dirty, 0); pfn < npages && !ret;) {
		uint64_t end = bitmap_next_clear(dirty, pfn);

		wbuf_put_u64(&w, pfn);
		wbuf_put_u32(&w, end - pfn);
		if (w.len >= 12 * 65536) {
			ret = xport_ctl_send(s->c.x, MSG_DISCARD, w.data, w.len);
			wbuf_reset(&w);
		}
		pfn = end < npages ? bitmap_next_set(dirty, end) : npages;
	}
	if (!ret && w.len)
		ret = xport_ctl_send(s->c.x, MSG_DISCARD, w.data, w.len);
	ret = ret ? ret : w.err;
	wbuf_free(&w);
	return ret;
}

/* Everything went in pre-copy; what was written since is stale there. */
static long src_discard_dirty(struct mig_source *s)
{
	int ret;

	/* a hugetlb destination drops whole 2 MiB pages: resend every page of each */
	if (s->c.x->features & FEAT_HUGE2M)
		bitmap_round_out(&s->dirty, HUGE_PAGES);
	bitmap_set_range(&s->sent, 0, s->c.npages);
	for (uint64_t p = bitmap_next_set(&s->dirty, 0); p < s->c.npages;
	     p = bitmap_next_set(&s->dirty, p + 1))
		bitmap_clear(&s->sent, p);
	ret = src_send_discards(s);
	return ret < 0 ? ret : 0;
}

/* What the mode sends while the guest is stopped; the number of pages sent. */
static long src_send_remaining(struct mig_source *s)
{
	long n;

	switch (s->p.mode) {
	case MIG_MODE_STOPCOPY:
		src_scan_populated(s);
		return src_send_set(s, NULL, "stop-copy");
	case MIG_MODE_PRE:
		/* --fallback post, no progress: on as hybrid */
		if (s->conv.to_post)
			return src_discard_dirty(s);
		n = src_send_set(s, &s->dirty, "stop-copy");
		/* --fallback post, converged: post-copy finds nothing left to push */
		if (n >= 0 && s->p.fallback_post)
			bitmap_set_range(&s->sent, 0, s->c.npages);
		return n;
	case MIG_MODE_HYBRID:
		return src_discard_dirty(s);
	case MIG_MODE_POST:
		return 0;
	}
	return -EINVAL;
}

int src_switchover(struct mig_source *s)
{
	bool post = src_post_mode(s);
	struct wbuf state;
	long n;
	int ret;

	s->t_pause = now_ns();
	ret = vm_pause(s->c.vm);
	if (ret < 0)
		return ret;
	if (vm_get_status(s->c.vm) != VM_PAUSED)
		/* it exited or faulted on its own: there is nothing to hand over */
		return err_set(-ECHILD, "the guest %s here during the migration; nothing to migrate",
			       vm_get_status(s->c.vm) == VM_EXITED ? "exited" : "failed");
	s->paused_by_us = true;
	mig_set_state(&s->c, MIG_SWITCHOVER);
	heartbeat_stats(&s->c.vm->bus, &s->hb_pause);
	if (s->tracking) {
		/*
		 * Add to, never clear, the dirty set: it still holds the set
		 * pre-copy collected to decide it had converged, which was not
		 * sent.
		 */
		n = dirty_collect(&s->tracker, &s->dirty);
		dirty_stop(&s->tracker);
		s->tracking = false;
		if (n < 0)
			return n;
	}
	n = src_send_remaining(s);
	if (n < 0)
		return n;
	s->remaining_at_stop = n;
	s->precopy_bytes = mig_bytes(&s->c, XCH_BULK);
	ret = xport_mark(s->c.x, post ? MARK_PRECOPY_DONE : MARK_BULK_END, s->rounds);
	if (!ret)
		ret = xport_flush(s->c.x);
	if (ret < 0)
		return ret;
	wbuf_init(&state);
	/* an older destination reads only the one-vCPU record */
	ret = vm_save_state_v(s->c.vm, &state, s->c.x->features & FEAT_MSTATE2 ? 2 : 1);
	if (!ret)
		ret = xport_ctl_send(s->c.x, MSG_STATE, state.data, state.len);
	wbuf_free(&state);
	s->state_sent = true;
	if (!ret && post)
		ret = src_postcopy_early(s);
	if (!ret)
		ret = src_handover(s);
	if (ret < 0)
		return ret;
	s->t_resumed = now_ns();
	s->cpu_resumed_us = cpu_self_us();
	s->resumed_remote = true;
	return 0;
}

/* --- destination ------------------------------------------------------------------- */

/*
 * Drop the pages in a DISCARD frame.  Runs must be ascending and disjoint
 * across all frames, so that however the frames are cut the discards of
 * one migration touch each page at most once: bitmap work by range, one
 * drop (mem_drop) and one code invalidation per run.
 */
static int dst_discard(struct mig_dest *d, const struct proto_msg *m)
{
	struct proto_run run;
	struct rbuf r;
	int ret;

	rbuf_init(&r, m->payload, m->len);
	/* ascending and disjoint (proto_next_run), so all discards together cost O(RAM) */
	while ((ret = proto_next_run(&r, d->c.npages, &d->discard_end, "DISCARD", &run)) > 0) {
		uint64_t pfn = run.pfn;
		uint32_t n = run.n;

		d->present_count -= bitmap_count_range(&d->present, pfn, n);
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
	}
	return ret < 0 ? err_set(ret, "control channel: %s", err_msg(ret)) : 0;
}

/* Read control messages until STATE; apply discards on the way. */
static int dst_recv_state(struct mig_dest *d, struct proto_msg *state)
{
	for (;;) {
		int ret = mig_ctl_recv(&d->c, state, "the machine state");

		if (ret < 0)
			return ret;
		if (state->type == MSG_STATE)
			return 0;
		if (state->type == MSG_ERROR) {
			char text[1100];

			proto_error_text(state, text, sizeof(text));
			return err_set(-ECONNABORTED, "the source ended the migration: %s", text);
		}
		if (state->type != MSG_DISCARD || d->hello.mode != MIG_MODE_HYBRID)
			return err_set(-EPROTO, "control channel: unexpected %s (type %u) in %s mode",
				       proto_type_name(state->type), state->type,
				       mig_mode_name(d->hello.mode));
		ret = dst_wait_mark(d, MARK_PRECOPY_DONE);
		if (!ret)
			ret = dst_discard(d, state);
		if (ret < 0)
			return ret;
	}
}

int dst_switchover(struct mig_dest *d)
{
	bool post = dst_postcopy_mode(d);
	struct proto_msg state = { 0 };
	struct rbuf r;
	int ret;

	ret = dst_recv_state(d, &state);
	if (!ret)
		ret = dst_wait_mark(d, post ? MARK_PRECOPY_DONE : MARK_BULK_END);
	if (!ret)
		mig_set_state(&d->c, MIG_SWITCHOVER);
	if (!ret && post && !d->uffd_ready)
		ret = dst_arm_postcopy(d);
	if (!ret && post)
		ret = dst_start_pull(d);
	if (!ret) {
		rbuf_init(&r, state.payload, state.len);
		ret = vm_load_state(d->c.vm, &r);
	}
	proto_msg_free(&state);
	if (!ret && !post && d->present_count != d->c.npages)
		ret = err_set(-EPROTO, "the source finished with %llu of %llu pages sent",
			      (unsigned long long)d->present_count, (unsigned long long)d->c.npages);
	if (ret < 0)
		return ret;
	ret = dst_handover(d);
	if (ret < 0)
		return ret;
	heartbeat_window(&d->c.vm->bus, true);
	ret = vm_start(d->c.vm);
	if (ret < 0)
		return ret;
	d->t_resume = now_ns();
	/*
	 * After a commit the guest is ours whatever happens to RESUMED: a
	 * source that misses it redelivers the commit and hears it then.
	 */
	if (xport_ctl_send(d->c.x, MSG_RESUMED, NULL, 0) < 0 && !d->decision)
		return err_set(-EPIPE, "the control connection broke as the guest started");
	if (post) {
		mig_set_state(&d->c, MIG_POSTCOPY);
		pthread_mutex_lock(&d->c.lock);
		ret = d->early_break;
		pthread_mutex_unlock(&d->c.lock);
		if (ret < 0)
			dst_pause(d, err_set(ret, "a page channel broke during the handover"));
	}
	return 0;
}
