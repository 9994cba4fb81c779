/*
 * mig-downtime.c - the downtime's parts in the statistics record, every
 * mode (docs/metrics.md, "The downtime's parts").
 *
 * The source stamps each step of its switchover on its own clock, so its
 * parts partition downtime_ms exactly: pause, last dirty set, the mode's
 * pages (stop-copy's RAM, pre's last set, hybrid's discards) with the
 * bulk mark, state save, the STATE send, then the wait for READY (the
 * destination's load plus one one-way delay) and for RESUMED (the commit
 * round trip plus the destination's vCPU start).  The destination stamps
 * its own steps on its clock and sends the durations in COMPLETE; they
 * lie inside the two waits and are never subtracted from source times.
 */
#include "mig.h"

static double ms_between(uint64_t a, uint64_t b)
{
	return a && b >= a ? (b - a) / 1e6 : 0;
}

/* Without READY (a version 1 destination) the load wait ends at RESUMED. */
void src_downtime_record(struct mig_source *s, json_t *r)
{
	const struct src_dt *t = &s->dt;
	uint64_t ready = s->t_ready ? s->t_ready : s->t_resumed;
	double total = ms_between(s->t_pause, s->t_resumed), sum = 0;
	struct { const char *key; double v; } part[] = {
		{ "downtime_pause_ms", ms_between(s->t_pause, t->paused) },
		{ "downtime_dirty_ms", ms_between(t->paused, t->collected) },
		{ "downtime_pages_ms", ms_between(t->collected, t->pages_sent) },
		{ "downtime_save_ms", ms_between(t->pages_sent, t->saved) },
		{ "downtime_send_ms", ms_between(t->saved, t->state_sent) },
		{ "downtime_load_ms", ms_between(t->state_sent, ready) },
		{ "downtime_commit_ms", s->t_ready ? ms_between(s->t_ready, s->t_resumed) : 0 },
	};

	if (s->p.mode == MIG_MODE_HYBRID) {
		/* before the pause: what left while round 1 drained (mig-discard.c) */
		json_object_set_new(r, "discard_early_pages", json_integer((json_int_t)s->early.pages));
		json_object_set_new(r, "discard_early_batches",
				    json_integer((json_int_t)s->early.batches));
		json_object_set_new(r, "hybrid_drain_wait_ms", json_real(s->early.wait_ns / 1e6));
	}
	if (!s->t_resumed)
		return;   /* no downtime yet (or none: the guest stayed here) */
	for (size_t i = 0; i < ARRAY_SIZE(part); i++) {
		json_object_set_new(r, part[i].key, json_real(part[i].v));
		sum += part[i].v;
	}
	json_object_set_new(r, "downtime_other_ms", json_real(total > sum ? total - sum : 0));
	json_object_set_new(r, "downtime_pages", json_integer((json_int_t)s->remaining_at_stop));
}

/* The destination's steps of the switchover, on its clock. */
void dst_downtime_figures(struct mig_dest *d, json_t *fig)
{
	const struct dst_dt *t = &d->dt;

	json_object_set_new(fig, "dst_mark_wait_ms", json_real(ms_between(t->state_rx, t->marked)));
	json_object_set_new(fig, "dst_load_ms", json_real(ms_between(t->state_rx, t->ready_tx)));
	json_object_set_new(fig, "dst_vcpu_start_ms",
			    json_real(ms_between(t->commit_rx, t->resumed_tx)));
	json_object_set_new(fig, "dst_discard_ms", json_real(t->discard_ns / 1e6));
	json_object_set_new(fig, "dst_discard_pages", json_integer((json_int_t)t->discard_pages));
	json_object_set_new(fig, "dst_discard_early_held", json_integer((json_int_t)t->early_held));
}
