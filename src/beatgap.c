/*
 * beatgap.c - the guest-perceived gap figures (beatgap.h): pure functions,
 * so the composition is tested on synthetic timelines (tests/test-beatgap.c).
 */
#include "umig/beatgap.h"
#include "umig/util.h"

void beat_gaps(const struct beat_parts *p, struct beat_gaps *out)
{
	out->switch_gap_ms = p->before_pause_ms + p->downtime_ms + p->resume_to_first_ms;
	out->max_beat_gap_ms = MAX(out->switch_gap_ms, MAX(p->src_window_ms, p->dst_window_ms));
}

uint64_t beat_max_gap(const uint64_t *t, size_t n, uint64_t from, uint64_t to)
{
	uint64_t best = 0;

	for (size_t i = 1; i < n; i++)
		if (t[i - 1] >= from && t[i] <= to && t[i] - t[i - 1] > best)
			best = t[i] - t[i - 1];
	return best;
}
