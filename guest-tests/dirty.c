/*
 * dirty.c - the write-heavy guest: dirties pages at a chosen rate and shape
 * so pre-copy has something to chase.
 *
 *   wss=MiB (64)  pattern=seq|random|hot (seq)  rate=pages/s (0 = flat out)
 *   stores=per page (1, max 512, spread evenly over the page)
 *   hot=% of wss in the hot set (5)  hotpct=% of writes to it (90)
 *   secs=guest seconds to run (0 = forever)
 *   threads=N (1): vCPUs that dirty pages (umig run --cpus N or more)
 *   fill=zero|random|text|mixed (zero)  change=% of each page's words a
 *   store pass rewrites (sets stores; default: stores=)
 *
 * Every store writes a new value, so a page really changes each time it is
 * dirtied: with fill=zero the running page count into a zero page; with
 * the other fills (umig/pagefill.h) the working set is first filled with
 * that kind of content and each store writes a new word of the same kind,
 * so compression and delta encoding see realistic pages.  Prints a line
 * per guest second with the total pages dirtied and the pages dirtied in
 * that second.  Heartbeats every beat_us= of guest time (1000; rt.h), the
 * beat's value the pages dirtied so far; with beat_us=0 every beat_units=
 * pages (4096), after every pass over wss, and every guest second.
 *
 * With threads=N the secondary vCPUs 1..N-1 dirty pages too, each with its
 * own PRNG and sequence position, keeping pace with the boot vCPU (so rate
 * is per thread); only the boot vCPU paces, reports and beats, and the
 * totals it prints count every thread.
 */
#include "rt.h"
#include "umig/pagefill.h"

enum pattern { PAT_SEQ, PAT_RANDOM, PAT_HOT };

static const char *const pat_names[] = { "seq", "random", "hot" };
static const char *const fill_names[] = PAGEFILL_NAMES;

#define MAX_THREADS UMIG_MAX_CPUS

struct dirty {
	volatile u64 *base;
	u64 npages, nhot, hotpct;
	u64 stores, stride;	/* stores per page, words between them */
	enum pattern pat;
	enum pagefill fill;
	u64 rng, next_seq;
	u64 rate, secs;
	u64 count, last_count;		/* pages dirtied, and at the last report */
	u64 t, next_report;		/* seconds reported, when the next is due */
	u64 pace_ns, pace_count;	/* the rate schedule's origin */
	u64 threads;
};

/*
 * Shared between vCPUs: the boot vCPU's settings (read-only once go is
 * set) and each thread's page count (written by its thread only).
 */
static struct dirty shared;
static int go;
static u64 done_by[MAX_THREADS];

/* The page the next write goes to. */
static u64 pick_page(struct dirty *d)
{
	u64 p;

	switch (d->pat) {
	case PAT_RANDOM:
		return rt_rand(&d->rng) % d->npages;
	case PAT_HOT:
		if (rt_rand(&d->rng) % 100 < d->hotpct || d->nhot == d->npages)
			return rt_rand(&d->rng) % d->nhot;
		return d->nhot + rt_rand(&d->rng) % (d->npages - d->nhot);
	default:
		p = d->next_seq;
		d->next_seq = p + 1 == d->npages ? 0 : p + 1;
		return p;
	}
}

static void dirty_page(struct dirty *d, u64 count)
{
	u64 page = pick_page(d), i;
	volatile u64 *w = d->base + page * (RT_PAGE_SIZE / 8);
	enum pagefill k = pagefill_kind(d->fill, page);

	if (k == PAGEFILL_ZERO) {
		for (i = 0; i < d->stores; i++)
			w[i * d->stride] = count;
		return;
	}
	for (i = 0; i < d->stores; i++)
		w[i * d->stride] = pagefill_word(k, page, i * d->stride, count);
}

/* Give the working set its fill's content (zero needs nothing: RAM starts zeroed). */
static void fill_wss(struct dirty *d)
{
	u64 page, i;

	if (d->fill == PAGEFILL_ZERO)
		return;
	for (page = 0; page < d->npages; page++) {
		volatile u64 *w = d->base + page * (RT_PAGE_SIZE / 8);
		enum pagefill k = pagefill_kind(d->fill, page);

		for (i = 0; i < RT_PAGE_SIZE / 8; i++)
			w[i] = pagefill_word(k, page, i, 0);
		if (rt_beat_timed())
			rt_tick(0);	/* filling is not the work the rate counts */
		else if ((page + 1) % 256 == 0)
			rt_beat(0);
	}
}

static u64 total(const struct dirty *d)
{
	u64 n = d->count;

	for (u64 t = 1; t < d->threads; t++)
		n += __atomic_load_n(&done_by[t], __ATOMIC_RELAXED);
	return n;
}

/* A secondary vCPU: dirty pages, never more than the boot vCPU has. */
void rt_secondary(unsigned cpu)
{
	struct dirty d;

	while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE))
		rt_sleep_us(1000);
	if (cpu >= shared.threads)
		return;
	d = shared;
	d.rng = 0x9e3779b97f4a7c15ull * (cpu + 1);
	d.next_seq = d.npages * cpu / d.threads;
	d.count = 0;
	for (;;) {
		while (d.count >= __atomic_load_n(&shared.count, __ATOMIC_RELAXED))
			rt_sleep_us(100);
		dirty_page(&d, ++d.count);
		__atomic_store_n(&done_by[cpu], d.count, __ATOMIC_RELAXED);
	}
}

static int parse(struct dirty *d)
{
	u64 wss = rt_arg_u64("wss", 64), hot = rt_arg_u64("hot", 5);
	unsigned i;

	d->pat = PAT_SEQ;
	if (rt_arg("pattern")) {
		for (i = 0; i < 3 && !rt_arg_eq("pattern", pat_names[i]); i++)
			;
		if (i == 3) {
			char name[64];

			rt_arg_copy("pattern", name, sizeof(name));
			rt_printf("dirty: unknown pattern '%s' (seq|random|hot)\n", name);
			return 2;
		}
		d->pat = (enum pattern)i;
	}
	d->fill = PAGEFILL_ZERO;
	if (rt_arg("fill")) {
		for (i = 0; i < PAGEFILL_COUNT && !rt_arg_eq("fill", fill_names[i]); i++)
			;
		if (i == PAGEFILL_COUNT) {
			char name[64];

			rt_arg_copy("fill", name, sizeof(name));
			rt_printf("dirty: unknown fill '%s' (zero|random|text|mixed)\n", name);
			return 2;
		}
		d->fill = (enum pagefill)i;
	}
	if (!wss || wss > rt_free_size() / RT_MIB) {
		rt_printf("dirty: wss must be 1..%lluMiB, got %llu\n",
			  (u64)rt_free_size() / RT_MIB, wss);
		return 2;
	}
	d->base = (volatile u64 *)rt_free_start();
	d->npages = wss * RT_MIB / RT_PAGE_SIZE;
	d->nhot = d->npages * (hot > 100 ? 100 : hot) / 100;
	d->nhot = d->nhot ? d->nhot : 1;
	d->hotpct = rt_arg_u64("hotpct", 90);
	d->stores = rt_arg_u64("stores", 1);
	if (rt_arg("change"))
		d->stores = rt_arg_u64("change", 0) * 512 / 100;
	d->stores = d->stores < 1 ? 1 : d->stores > 512 ? 512 : d->stores;
	d->stride = (RT_PAGE_SIZE / 8) / d->stores;
	d->rate = rt_arg_u64("rate", 0);
	d->secs = rt_arg_u64("secs", 0);
	d->threads = rt_arg_u64("threads", 1);
	if (!d->threads || d->threads > rt_ncpus()) {
		rt_printf("dirty: threads=%llu needs as many vCPUs (umig run --cpus %llu); "
			  "the guest has %u\n", d->threads, d->threads, rt_ncpus());
		return 2;
	}
	d->rng = 0x9e3779b97f4a7c15ull;
	rt_printf("dirty: wss=%lluMiB pattern=%s rate=%llu stores=%llu fill=%s",
		  wss, pat_names[d->pat], d->rate, d->stores, fill_names[d->fill]);
	rt_printf(d->threads > 1 ? " threads=%llu\n" : "\n", d->threads);
	return 0;
}

/* When the n-th page is due at rate pages/s, in ns (no overflow). */
static u64 due_ns(u64 n, u64 rate)
{
	return n / rate * RT_NS_PER_S + n % rate * RT_NS_PER_S / rate;
}

/*
 * Sleep while ahead of the rate's schedule, printing the per-second line
 * on the way.  Returns 1 once secs have passed.  The schedule is counted
 * from (pace_ns, pace_count); after a stall (say, a long migration pause)
 * it restarts from now, because rate is a ceiling, not a debt to burst off.
 */
static int pace_and_report(struct dirty *d)
{
	for (;;) {
		u64 now = rt_clock_ns(), due;

		while (now >= d->next_report) {
			d->t++;
			u64 n = total(d);

			rt_printf("dirty: t=%llus pages=%llu rate=%llu/s\n",
				  d->t, n, n - d->last_count);
			d->last_count = n;
			d->next_report += RT_NS_PER_S;
			rt_beat(d->count);	/* a slow rate may not fill beat_units pages */
			if (d->secs && d->t >= d->secs)
				return 1;
		}
		if (!d->rate)
			return 0;
		due = d->pace_ns + due_ns(d->count - d->pace_count, d->rate);
		if (now > due + RT_NS_PER_S / 10) {
			d->pace_ns = now;
			d->pace_count = d->count;
		}
		if (due <= now)
			return 0;
		due = due < d->next_report ? due : d->next_report;
		rt_sleep_us((uint32_t)((due - now + 999) / 1000));
	}
}

int main(void)
{
	struct dirty *dp = &shared, d;
	int rc = parse(dp);
	u64 chunk = 64, i, pass_left;
	int count_beats;

	if (rc)
		return rc;
	rt_beat_init(4096);
	fill_wss(&shared);   /* before any vCPU dirties it */
	__atomic_store_n(&go, 1, __ATOMIC_RELEASE);
	d = shared;	/* the boot vCPU works on a copy; shared.count publishes its count */
	/* At low rates look at the clock more often, or pacing gets lumpy. */
	if (d.rate && d.rate < 1024)
		chunk = d.rate / 16 ? d.rate / 16 : 1;
	d.pace_ns = rt_clock_ns();
	d.next_report = d.pace_ns + RT_NS_PER_S;
	count_beats = !rt_beat_timed();
	pass_left = d.npages;	/* a countdown, not count % npages: no divide per page */
	for (;;) {
		for (i = 0; i < chunk; i++) {
			dirty_page(&d, ++d.count);
			rt_tick(d.count);
			if (__builtin_expect(--pass_left == 0, 0)) {
				pass_left = d.npages;
				if (count_beats)
					rt_beat(d.count);	/* count beats: also every pass */
			}
		}
		__atomic_store_n(&shared.count, d.count, __ATOMIC_RELAXED);
		if (pace_and_report(&d)) {
			rt_printf("dirty: done pages=%llu\n", total(&d));
			return 0;
		}
	}
}
