/*
 * codec-auto.c - `--compress auto`: compress only while the link, not the
 * CPU, is the bottleneck.  The model and its signal are described in
 * codec.h; this file keeps the estimates and applies the hysteresis.
 *
 * Pure: everything it knows arrives in codec_auto_sample, so the engine
 * measures and this decides, and the unit tests drive it with synthetic
 * links and CPUs.
 */
#include <math.h>
#include <string.h>

#include "umig/codec.h"
#include "umig/util.h"

#define AUTO_WARMUP 4	/* raw batches before the first probe */

static const struct codec_auto_cfg auto_defaults = {
	.allowed = 1u << CODEC_LZ4 | 1u << CODEC_ZSTD,
	.hysteresis = 0.15,
	.sat_min = 0.10,
	.alpha = 0.25,
	.min_dwell = 8,
	.probe_every = 64,
	.probe_len = 2,
};

void codec_auto_init(struct codec_auto *a, const struct codec_auto_cfg *cfg)
{
	memset(a, 0, sizeof(*a));
	a->cfg = cfg ? *cfg : auto_defaults;
#define AUTO_DEFAULT(f) do { if (!a->cfg.f) a->cfg.f = auto_defaults.f; } while (0)
	AUTO_DEFAULT(allowed);
	AUTO_DEFAULT(hysteresis);
	AUTO_DEFAULT(sat_min);
	AUTO_DEFAULT(alpha);
	AUTO_DEFAULT(min_dwell);
	AUTO_DEFAULT(probe_every);
	AUTO_DEFAULT(probe_len);
#undef AUTO_DEFAULT
	a->cfg.allowed &= ~1u;	/* raw is always a choice, never a "codec" */
	a->cur = a->next = CODEC_NONE;
	a->raw_sat = -1;	/* no raw batch seen yet */
	a->since_probe = a->cfg.probe_every > AUTO_WARMUP ? a->cfg.probe_every - AUTO_WARMUP : 0;
	a->since_switch = a->cfg.min_dwell;	/* free to switch after the first probe */
}

static bool auto_allowed(const struct codec_auto *a, unsigned k)
{
	return k == CODEC_NONE || (k < CODEC_NKINDS && (a->cfg.allowed & (1u << k)));
}

static double ewma(double old, double v, double alpha, bool first)
{
	return first ? v : old + alpha * (v - old);
}

double codec_auto_rate(const struct codec_auto *a, enum codec_kind k)
{
	double r;

	if (k == CODEC_NONE) {
		/* not link-bound (or not known to be): raw is limited elsewhere */
		if (a->raw_sat < a->cfg.sat_min || a->link_bps <= 0)
			return HUGE_VAL;
		return a->link_bps;
	}
	if ((unsigned)k >= CODEC_NKINDS || a->comp_bps[k] <= 0 || a->out_ewma[k] <= 0)
		return 0;
	r = a->in_ewma[k] / a->out_ewma[k];
	return a->link_bps > 0 ? MIN(a->comp_bps[k], r * a->link_bps) : a->comp_bps[k];
}

static void auto_learn(struct codec_auto *a, const struct codec_auto_sample *s)
{
	double sat = MIN(1.0, (double)s->wire_ns / (double)s->elapsed_ns);
	double rate = (double)s->out_bytes * 1e9 / (double)s->elapsed_ns;
	double al = a->cfg.alpha;
	unsigned k = s->kind;

	if (sat >= a->cfg.sat_min)	/* the link was busy all along */
		a->link_bps = ewma(a->link_bps, rate, al, a->link_bps <= 0);
	else if (rate > a->link_bps)	/* it carried this much at least */
		a->link_bps = rate;
	if (k == CODEC_NONE) {
		a->raw_sat = ewma(a->raw_sat, sat, al, a->raw_sat < 0);
		return;
	}
	if (s->codec_ns)
		a->comp_bps[k] = ewma(a->comp_bps[k], (double)s->in_bytes * 1e9 / (double)s->codec_ns,
				      al, a->comp_bps[k] <= 0);
	a->in_ewma[k] = ewma(a->in_ewma[k], (double)s->in_bytes, al, a->out_ewma[k] <= 0);
	a->out_ewma[k] = ewma(a->out_ewma[k], (double)MAX(s->out_bytes, 1), al, a->out_ewma[k] <= 0);
}

/*
 * What to use next, with the hysteresis: from raw, a codec must beat raw
 * by the margin; a codec in use is kept while it beats raw by half the
 * margin (so a tie goes to raw: compressing for nothing only costs CPU)
 * and is replaced by another codec only if that one beats it by the margin.
 */
static enum codec_kind auto_best(const struct codec_auto *a)
{
	double h = a->cfg.hysteresis, eraw = codec_auto_rate(a, CODEC_NONE);
	double ecur = codec_auto_rate(a, a->cur), ebest = 0;
	enum codec_kind best = CODEC_NONE;
	unsigned k;

	for (k = 1; k < CODEC_NKINDS; k++) {
		double e = codec_auto_rate(a, (enum codec_kind)k);

		if (auto_allowed(a, k) && e > ebest) {
			best = (enum codec_kind)k;
			ebest = e;
		}
	}
	if (best == CODEC_NONE || ebest <= eraw * (1 + h))
		best = CODEC_NONE;	/* no codec pays enough to start */
	if (a->cur == CODEC_NONE)
		return best;
	if (ecur <= eraw * (1 + h / 2))
		return best;		/* the one in use stopped paying */
	return best != CODEC_NONE && ebest > ecur * (1 + h) ? best : a->cur;
}

/* An allowed codec with no figures yet. */
static bool auto_unmeasured(const struct codec_auto *a)
{
	unsigned k;

	for (k = 1; k < CODEC_NKINDS; k++) {
		if (auto_allowed(a, k) && a->comp_bps[k] <= 0)
			return true;
	}
	return false;
}

/* The next choice other than cur to probe, round robin; cur if none. */
static enum codec_kind auto_probe_kind(struct codec_auto *a)
{
	unsigned i, k;

	/* one never measured goes first */
	for (k = 1; k < CODEC_NKINDS; k++) {
		if (k != a->cur && auto_allowed(a, k) && a->comp_bps[k] <= 0)
			return (enum codec_kind)k;
	}
	for (i = 1; i <= CODEC_NKINDS; i++) {
		k = (a->probe_rr + i) % CODEC_NKINDS;
		if (k != a->cur && auto_allowed(a, k)) {
			a->probe_rr = k;
			return (enum codec_kind)k;
		}
	}
	return a->cur;
}

enum codec_kind codec_auto_update(struct codec_auto *a, const struct codec_auto_sample *s)
{
	enum codec_kind best;

	if (s && s->elapsed_ns && s->in_bytes && (unsigned)s->kind < CODEC_NKINDS)
		auto_learn(a, s);
	if (a->probing && --a->probing)
		return a->next;		/* the probe goes on */
	a->since_switch++;
	best = auto_best(a);
	if (best != a->cur && a->since_switch >= a->cfg.min_dwell) {
		a->cur = best;
		a->since_switch = 0;
		a->switches++;
	}
	a->next = a->cur;
	if (++a->since_probe >= a->cfg.probe_every || (a->warm && auto_unmeasured(a))) {
		a->warm = true;
		a->since_probe = 0;
		a->next = auto_probe_kind(a);
		if (a->next != a->cur)
			a->probing = a->cfg.probe_len;
	}
	return a->next;
}

int codec_auto_window_add(struct codec_auto_sample *win, const struct codec_auto_sample *s,
			  uint64_t min_ns)
{
	if (win->elapsed_ns && win->kind != s->kind)
		memset(win, 0, sizeof(*win));	/* a kind change: what was summed is moot */
	win->kind = s->kind;
	win->in_bytes += s->in_bytes;
	win->out_bytes += s->out_bytes;
	win->codec_ns += s->codec_ns;
	win->wire_ns += s->wire_ns;
	win->elapsed_ns += s->elapsed_ns;
	return win->elapsed_ns >= min_ns;
}
