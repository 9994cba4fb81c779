/*
 * beatgap.h - the guest-perceived gap figures of a migration, composed
 * from parts each measured on one host's clock.
 *
 * The two hosts' clocks are not comparable off one machine, so no figure
 * subtracts a source time from a destination time.  The switchover gap is
 * (source: last beat -> pause) + (source: pause -> RESUMED, the downtime,
 * an upper bound) + (destination: resume -> first beat); the longest gap
 * between consecutive beats is the largest of the source's longest gap
 * from the migration's start to the pause, the switchover gap, and the
 * destination's longest gap from the resume on.  docs/metrics.md defines
 * them; mig-complete.c fills the parts from the heartbeat devices.
 */
#ifndef UMIG_BEATGAP_H
#define UMIG_BEATGAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct beat_parts {
	double src_window_ms;      /* source: longest beat gap, migration start -> pause */
	double before_pause_ms;    /* source: last beat -> pause */
	double downtime_ms;        /* source: pause -> RESUMED */
	double resume_to_first_ms; /* destination: resume -> first beat */
	double dst_window_ms;      /* destination: longest beat gap from the resume on */
};

struct beat_gaps {
	double switch_gap_ms;
	double max_beat_gap_ms;
};

void beat_gaps(const struct beat_parts *p, struct beat_gaps *out);

/*
 * The longest gap between consecutive beat times t[0..n) (ascending, one
 * clock) that both lie in [from, to]; 0 with fewer than two there.
 */
uint64_t beat_max_gap(const uint64_t *t, size_t n, uint64_t from, uint64_t to);

#endif
