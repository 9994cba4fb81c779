/*
 * mig-switchover.c - the step where the guest stops at the source and
 * starts at the destination; both sides.
 *
 * Source: pause the guest, collect the last dirty set, then by mode:
 *   stop-copy  send every page         pre   send the last dirty set
 *   hybrid     DISCARD the pages written since round 1 and not discarded
 *              while it drained (mig-discard.c)
 *   post       nothing
 * then MARK (pre-copy done for post/hybrid, bulk end otherwise), the
 * machine state, and the handover (mig-handover.c): READY, COMMIT,
 * RESUMED.  Until COMMIT leaves the source guest is the live one.
 *
 * Destination: apply DISCARDs (mig-discard.c: each once the bulk data it
 * follows is placed, so no older copy of a page can land after it), take
 * the state, wait for the bulk mark, arm userfaultfd for post-copy modes,
 * load the state, report READY and wait for COMMIT, then start the vCPU
 * and answer RESUMED.
 */
#include <errno.h>
#include <string.h>

#include "mig.h"

/* --- source ------------------------------------------------------------------ */

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
	s->dt.paused = now_ns();
	mig_set_state(&s->c, MIG_SWITCHOVER);
	heartbeat_stats(&s->c.vm->bus, &s->hb_pause);
	if (s->tracking) {
		/*
		 * Add to, never clear, the dirty set: it still holds the set
		 * pre-copy collected to decide it had converged, which was not
		 * sent.  The tracker stops after the guest resumed at the
		 * destination (src_dirty_done): unregistering 1 GiB of write-
		 * protected RAM took ~280 ms here, all of it downtime.
		 */
		n = src_collect_rest(s, true);
		if (n < 0)
			return n;
	}
	s->dt.collected = now_ns();
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
	s->dt.pages_sent = now_ns();
	wbuf_init(&state);
	/* an older destination reads only the one-vCPU record */
	ret = vm_save_state_v(s->c.vm, &state, s->c.x->features & FEAT_MSTATE2 ? 2 : 1);
	s->dt.saved = now_ns();
	if (!ret)
		ret = xport_ctl_send(s->c.x, MSG_STATE, state.data, state.len);
	wbuf_free(&state);
	s->state_sent = true;
	if (!ret && post)
		ret = src_postcopy_early(s);
	s->dt.state_sent = now_ns();
	if (!ret)
		ret = src_handover(s);
	if (ret < 0)
		return ret;
	s->t_resumed = now_ns();
	s->cpu_resumed_us = cpu_self_us();
	s->resumed_remote = true;
	return 0;
}

/*
 * The migration is over: drop the write protection.  Not earlier: it
 * takes the mmap lock for ~250 ms per GiB, which would hold the first
 * post-copy faults back.  The paused source guest writes nothing more;
 * a failure before the commit stops the tracker in src_failed, before
 * the guest resumes here.
 */
void src_dirty_done(struct mig_source *s)
{
	if (s->tracking)
		dirty_stop(&s->tracker);
	s->tracking = false;
}

/* --- destination ------------------------------------------------------------------- */

/* Read control messages until STATE; apply discards on the way. */
static int dst_recv_state(struct mig_dest *d, struct proto_msg *state)
{
	for (;;) {
		int ret = mig_ctl_recv(&d->c, state, "the machine state");

		if (ret < 0)
			return ret;
		if (state->type == MSG_STATE) {
			d->dt.state_rx = now_ns();
			return 0;
		}
		if (state->type == MSG_ERROR) {
			char text[1100];

			proto_error_text(state, text, sizeof(text));
			return err_set(-ECONNABORTED, "the source ended the migration: %s", text);
		}
		if ((state->type != MSG_DISCARD && state->type != MSG_DISCARD_EARLY) ||
		    d->hello.mode != MIG_MODE_HYBRID)
			return err_set(-EPROTO, "control channel: unexpected %s (type %u) in %s mode",
				       proto_type_name(state->type), state->type,
				       mig_mode_name(d->hello.mode));
		ret = state->type == MSG_DISCARD ? dst_discard(d, state) : dst_discard_early(d, state);
		proto_msg_free(state);
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
	if (!ret) {
		pthread_mutex_lock(&d->c.lock);
		d->discards_done = true;
		pthread_cond_broadcast(&d->c.cond);
		pthread_mutex_unlock(&d->c.lock);
	}
	if (!ret)
		ret = dst_wait_mark(d, post ? MARK_PRECOPY_DONE : MARK_BULK_END);
	d->dt.marked = now_ns();
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
	if (!d->dt.commit_rx)   /* version 1: no READY and COMMIT, the guest runs now */
		d->dt.ready_tx = d->dt.commit_rx = now_ns();
	heartbeat_window(&d->c.vm->bus, true);
	ret = vm_start(d->c.vm);
	if (ret < 0)
		return ret;
	d->t_resume = now_ns();
	/*
	 * After a commit the guest is ours whatever happens to RESUMED: a
	 * source that misses it redelivers the commit and hears it then.
	 */
	ret = xport_ctl_send(d->c.x, MSG_RESUMED, NULL, 0);
	d->dt.resumed_tx = now_ns();
	if (ret < 0 && !d->decision)
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
