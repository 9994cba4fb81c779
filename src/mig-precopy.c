/*
 * mig-precopy.c - pre-copy rounds at the source, while the guest runs.
 *
 * Round 1 sends every page; each later round sends the pages written
 * since the previous one (userfaultfd write-protect in async mode plus
 * PAGEMAP_SCAN, or KVM's dirty log: --dirty-track, dirty.c), each round
 * ending with MARK round-end.  The rounds stop when what is left fits the
 * downtime limit at the last round's throughput (converged), after
 * --max-rounds, after round 1 in hybrid mode, or when the rounds stop
 * making progress with --fallback post (mig-converge.c judges each round
 * and runs auto-converge).  The set that decided the stop is left in
 * s->dirty, unsent: the switchover sends it (pre) or discards it at the
 * destination (hybrid).
 */
#include <errno.h>
#include <string.h>

#include "mig.h"

/* Round r > 1 begins: collect what the last round left dirty and decide; 1 = stop. */
static int src_round_decide(struct mig_source *s, struct conv_round *last)
{
	double rate = last->ns ? MAX(last->bytes, last->data_pages * PAGE_SIZE) /
			  (last->ns / 1e9) : 0;  /* page bytes per second the link took */
	long n;
	int stuck;

	bitmap_clear_all(&s->dirty);
	n = dirty_collect(&s->tracker, &s->dirty);
	if (n < 0)
		return n;
	last->ndirty = n;
	stuck = src_conv_round(s, last);
	/* converged: what is left fits the downtime limit */
	if (rate > 0 && n * PAGE_SIZE / rate * 1000 <= s->p.downtime_limit_ms) {
		s->converged = true;
		s->conv.reason = "converged";
		return 1;
	}
	if (s->rounds > s->p.max_rounds) {
		s->conv.reason = "round-limit";
		return 1;
	}
	if (stuck && s->p.fallback_post) {
		s->conv.reason = "no-progress";
		s->conv.to_post = true;
		pr_info("migration: pre-copy stopped making progress after %u rounds (%ld pages "
			"dirty); switching to post-copy", s->rounds - 1, n);
		return 1;
	}
	return 0;
}

static int src_rounds(struct mig_source *s)
{
	struct conv_round last = { 0 };
	long n;
	int ret;

	for (s->rounds = 1;; s->rounds++) {
		uint64_t t0 = now_ns(), b0 = mig_bytes(&s->c, XCH_BULK), d0 = s->pages_bulk;

		if (s->rounds > 1) {
			ret = src_round_decide(s, &last);
			if (ret)
				return ret < 0 ? ret : 0;
		}
		if (s->rounds == 1)
			src_scan_populated(s);
		src_rate_round(s, s->rounds);
		n = src_send_set(s, s->rounds > 1 ? &s->dirty : NULL, "precopy");
		if (n < 0)
			return n;
		ret = xport_mark(s->c.x, MARK_ROUND_END, s->rounds);
		if (!ret)
			ret = xport_flush(s->c.x);
		if (ret < 0)
			return ret;
		last = (struct conv_round){
			.round = s->rounds, .pages = n, .data_pages = s->pages_bulk - d0,
			.bytes = mig_bytes(&s->c, XCH_BULK) - b0, .ns = now_ns() - t0,
			.rate = s->enc.rate ? s->enc.rate : s->p.max_bandwidth,
		};
		pr_debug("migration: round %u sent %ld pages in %.0f ms, %.0f MB/s", s->rounds, n,
			 last.ns / 1e6, last.bytes / (last.ns / 1e3 + 1e-3));
		if (s->p.mode == MIG_MODE_HYBRID) {
			s->conv.reason = "hybrid";
			/* one full round; its discards while it drains (mig-discard.c) */
			return src_discard_early(s, last.ns);
		}
	}
}

/*
 * The tracker --dirty-track names.  auto: KVM's dirty log under KVM, write-
 * protect otherwise; chosen by mechanism, not measured (docs/architecture.md,
 * "Dirty tracking"): under KVM, re-protecting host ptes each round also
 * zaps KVM's mappings of them (reads fault again too) and splits huge
 * pages, while KVM's log re-protects only its own mappings, 4 KiB each.
 */
static int src_dirty_start(struct mig_source *s)
{
	struct vm *vm = s->c.vm;
	int t = s->p.dirty_track, ret;

	if (t == MIG_DIRTY_AUTO)
		t = strcmp(vcpu_backend_name(vm->vcpu), "kvm") ? MIG_DIRTY_WP : MIG_DIRTY_KVM_LOG;
	ret = t == MIG_DIRTY_KVM_LOG ? dirty_start_kvm(&s->tracker, &vm->mem) :
	      dirty_start(&s->tracker, vm->mem.host, vm->mem.size);
	if (!ret) {
		s->dirty_tracker = mig_dirty_track_name(t);
		pr_debug("migration: dirty tracking with %s", s->dirty_tracker);
	}
	return ret;
}

int src_precopy(struct mig_source *s)
{
	int ret = src_dirty_start(s);

	if (ret < 0)
		return ret;
	s->tracking = true;
	/* hybrid sends each page once before the switchover: nothing to delta against */
	s->enc.delta_live = s->p.mode == MIG_MODE_PRE;
	mig_set_state(&s->c, MIG_PRECOPY);
	ret = src_rounds(s);
	src_throttle_stop(s);   /* the guest runs freely until the switchover pauses it */
	return ret;
}
