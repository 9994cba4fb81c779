/*
 * mig-precopy.c - pre-copy rounds at the source, while the guest runs.
 *
 * Round 1 sends every page; each later round sends the pages written
 * since the previous one (userfaultfd write-protect in async mode plus
 * PAGEMAP_SCAN, dirty.c), each round ending with MARK round-end.  The
 * rounds stop when what is left fits the downtime limit at the last
 * round's throughput (converged), after --max-rounds, or after round 1 in
 * hybrid mode.  The set that decided the stop is left in s->dirty, unsent:
 * the switchover sends it (pre) or discards it at the destination (hybrid).
 */
#include <errno.h>

#include "mig.h"

int src_precopy(struct mig_source *s)
{
	double bw = 0;  /* bytes per second over the last round */
	long n;
	int ret;

	ret = dirty_start(&s->tracker, s->c.vm->mem.host, s->c.vm->mem.size);
	if (ret < 0)
		return ret;
	s->tracking = true;
	/* hybrid sends each page once before the switchover: nothing to delta against */
	s->enc.delta_live = s->p.mode == MIG_MODE_PRE;
	mig_set_state(&s->c, MIG_PRECOPY);
	for (s->rounds = 1;; s->rounds++) {
		uint64_t t0 = now_ns(), b0 = mig_bytes(&s->c, XCH_BULK);
		uint64_t ndirty = 0;

		if (s->rounds > 1) {
			bitmap_clear_all(&s->dirty);
			n = dirty_collect(&s->tracker, &s->dirty);
			if (n < 0)
				return n;
			ndirty = n;
			/* converged: what is left fits the downtime limit */
			if (bw > 0 && ndirty * PAGE_SIZE / bw * 1000 <= s->p.downtime_limit_ms) {
				s->converged = true;
				return 0;
			}
			if (s->rounds > s->p.max_rounds)
				return 0;
		}
		if (s->rounds == 1)
			src_scan_populated(s);
		n = src_send_set(s, s->rounds > 1 ? &s->dirty : NULL, "precopy");
		if (n < 0)
			return n;
		ret = xport_mark(s->c.x, MARK_ROUND_END, s->rounds);
		if (!ret)
			ret = xport_flush(s->c.x);
		if (ret < 0)
			return ret;
		bw = (mig_bytes(&s->c, XCH_BULK) - b0) / ((now_ns() - t0) / 1e9 + 1e-9);
		pr_debug("migration: round %u sent %ld pages (%llu dirty), %.0f MB/s", s->rounds, n,
			 (unsigned long long)ndirty, bw / 1e6);
		if (s->p.mode == MIG_MODE_HYBRID)
			return 0;   /* one full round, then straight to switchover */
	}
}
