/*
 * memverify.c - proves a migration moved every page, and the newest copy.
 *
 * Fills a working set with a pattern that depends on (page, word,
 * generation), then in each pass checks every word against the current
 * generation and rewrites it with the next one.  A page that arrived as
 * zeroes, a stale copy from an earlier round, or a page that landed at the
 * wrong address all fail the check.  It also checks that the guest clock
 * never runs backwards across a migration.
 *
 *   wss=MiB (16)  passes=N (0 = forever)  threads=N (1)
 *   secs=S (0): stop after the first pass that ends S guest seconds after
 *   the start (with passes=, whichever comes first); the done line gives
 *   the passes run, so a run's length follows the clock, not vCPU speed
 *   moved_secs=S (0): stop after the first pass that ends S guest seconds
 *   after the guest first found itself in another umig process (the host
 *   identity port changed: migrated or restored), so a test's guest outlives
 *   a migration of any length and then ends soon; with secs= as a cap
 *   fill=random|zero|text|mixed (random)  change=% of words a pass rewrites (100)
 *   ballast=MiB (0): written once past the working set, never touched again
 *   exit: 0 done, 1 mismatch, 2 bad args, 3 clock went backwards
 *
 * With threads=N (umig run --cpus N or more) vCPU t fills and checks the
 * t-th of N equal slices of the working set, every pass in step: the boot
 * vCPU does slice 0, waits for the others, and alone prints, beats and
 * reads the clock; a secondary that finds a mismatch records it for the
 * boot vCPU to print.
 *
 * fill picks what the words hold (umig/pagefill.h), so that compression
 * and delta encoding can be measured on a guest whose every word is still
 * checked.  With a fill other than random, word 0 of each page holds the
 * random pattern's word (unique to page and generation), so a stale page
 * or one at the wrong address fails on its first word; the other words
 * are the fill's function of (page, word, generation).  With change<100
 * only every (100/change)-th word, word 0 included, moves to the next
 * generation; the others keep generation 0's value for good.
 */
#include "rt.h"
#include "umig/pagefill.h"

#define WORDS_PER_PAGE (RT_PAGE_SIZE / 8)
#define GAMMA 0x9e3779b97f4a7c15ull	/* odd: g * GAMMA is a bijection */

/* splitmix64's finalizer: a bijection, so distinct inputs stay distinct. */
static u64 mix64(u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/*
 * The pattern is base(page, g) + word * STEP: base is odd and STEP even,
 * so no word is ever 0, and the per-word work in the hot loop is one add.
 * Different pages or generations get different bases (up to the 2^-63
 * chance that "| 1" merges two mix outputs).
 */
#define STEP (GAMMA << 1)

static u64 page_base(u64 page, u64 g)
{
	return mix64((page << 9) + g * GAMMA) | 1;
}

static u64 last_ns;
static enum pagefill fill = PAGEFILL_RANDOM;
static u64 stride = 1;		/* every stride-th word changes each pass */

/* Word i of page (of kind k) at generation g under change. */
static u64 expect(enum pagefill k, u64 page, u64 i, u64 g)
{
	if (i % stride)
		g = 0;
	if (k == PAGEFILL_RANDOM || i == 0)
		return page_base(page, g) + i * STEP;
	return pagefill_word(k, page, i, g);
}

static u64 work;		/* pages filled or checked by the boot vCPU */

/* Check the clock is monotonic; 0 or an exit code. */
static int check_clock(void)
{
	u64 now = rt_clock_ns();

	if (now < last_ns) {
		rt_printf("memverify: CLOCK BACKWARDS prev=%llu now=%llu\n", last_ns, now);
		return 3;
	}
	last_ns = now;
	return 0;
}

struct mismatch {
	u64 pass, page, word, want, got;
};

static void print_mismatch(const struct mismatch *m)
{
	rt_printf("memverify: MISMATCH pass=%llu page=%llu word=%llu "
		  "expected=0x%016llx found=0x%016llx\n",
		  m->pass, m->page, m->word, m->want, m->got);
}

/* check_page() for any fill and change: a function call per word. */
static int check_page_any(volatile u64 *w, u64 page, u64 g, u64 pass, struct mismatch *m)
{
	enum pagefill k = pagefill_kind(fill, page);
	u64 i;

	for (i = 0; i < WORDS_PER_PAGE; i++) {
		u64 want = expect(k, page, i, g), got = w[i];

		if (got != want) {
			*m = (struct mismatch){ pass, page, i, want, got };
			return 1;
		}
		if (i % stride == 0)
			w[i] = expect(k, page, i, g + 1);
	}
	return 0;
}

/* Check one page holds generation g and rewrite it as g + 1; 0, or 1 and *m. */
static int check_page(volatile u64 *w, u64 page, u64 g, u64 pass, struct mismatch *m)
{
	u64 want = page_base(page, g), next = page_base(page, g + 1);
	u64 i;

	if (fill != PAGEFILL_RANDOM || stride != 1)
		return check_page_any(w, page, g, pass, m);
	for (i = 0; i < WORDS_PER_PAGE; i++, want += STEP, next += STEP) {
		u64 got = w[i];

		if (got != want) {
			*m = (struct mismatch){ pass, page, i, want, got };
			return 1;
		}
		w[i] = next;
	}
	return 0;
}

static void fill_page(volatile u64 *w, u64 page)
{
	u64 v = page_base(page, 0);

	if (fill != PAGEFILL_RANDOM) {
		for (u64 i = 0; i < WORDS_PER_PAGE; i++)
			w[i] = expect(pagefill_kind(fill, page), page, i, 0);
		return;
	}
	for (u64 i = 0; i < WORDS_PER_PAGE; i++, v += STEP)	/* one add per word */
		w[i] = v;
}

/*
 * The threads' rendezvous.  phase 0 is the fill, phase p > 0 pass p; the
 * boot vCPU publishes the phase, each secondary reports the phases done.
 */
#define MAX_THREADS UMIG_MAX_CPUS
static volatile u64 *mv_base;
static u64 mv_npages, mv_threads;
static u64 phase_go;			/* the phase the secondaries may do, + 1 */
static u64 phase_done[MAX_THREADS];	/* phases done by thread t, + 1 */
static int failed;
static struct mismatch failure;

static u64 slice_start(u64 t) { return mv_npages * t / mv_threads; }

void rt_secondary(unsigned cpu)
{
	struct mismatch m;
	u64 p;

	while (!__atomic_load_n(&phase_go, __ATOMIC_ACQUIRE))
		rt_sleep_us(1000);
	if (cpu >= mv_threads)
		return;
	for (p = 0;; p++) {
		while (__atomic_load_n(&phase_go, __ATOMIC_ACQUIRE) <= p)
			rt_sleep_us(100);
		for (u64 page = slice_start(cpu); page < slice_start(cpu + 1); page++) {
			volatile u64 *w = mv_base + page * WORDS_PER_PAGE;

			if (!p) {
				fill_page(w, page);
			} else if (check_page(w, page, p - 1, p, &m)) {
				if (!__atomic_exchange_n(&failed, 1, __ATOMIC_ACQ_REL))
					failure = m;
				return;
			}
		}
		__atomic_store_n(&phase_done[cpu], p + 1, __ATOMIC_RELEASE);
	}
}

/* Boot vCPU: wait for the secondaries to finish phase p; 0 or an exit code. */
static int wait_phase(u64 p)
{
	for (u64 t = 1; t < mv_threads; t++)
		while (__atomic_load_n(&phase_done[t], __ATOMIC_ACQUIRE) <= p) {
			if (__atomic_load_n(&failed, __ATOMIC_ACQUIRE)) {
				print_mismatch(&failure);
				return 1;
			}
			rt_sleep_us(100);
		}
	return 0;
}

int main(void)
{
	u64 wss = rt_arg_u64("wss", 16), passes = rt_arg_u64("passes", 0);
	u64 secs = rt_arg_u64("secs", 0), start_ns;
	u64 moved_secs = rt_arg_u64("moved_secs", 0), moved_ns = 0;
	uint32_t host = rt_host_id();
	u64 npages = wss * RT_MIB / RT_PAGE_SIZE;
	volatile u64 *base = (volatile u64 *)rt_free_start();
	u64 threads = rt_arg_u64("threads", 1), end, page, g, i;
	u64 change = rt_arg_u64("change", 100);
	/* MiB written once after the working set and never touched again */
	u64 ballast = rt_arg_u64("ballast", 0);
	static const char *const fill_names[] = PAGEFILL_NAMES;
	struct mismatch m;
	int rc;

	if (rt_arg("fill")) {
		char name[64];

		for (i = 0; i < PAGEFILL_COUNT && !rt_arg_eq("fill", fill_names[i]); i++)
			;
		if (i == PAGEFILL_COUNT) {
			rt_arg_copy("fill", name, sizeof(name));
			rt_printf("memverify: unknown fill '%s' (zero|random|text|mixed)\n", name);
			return 2;
		}
		fill = (enum pagefill)i;
	}
	change = change < 1 ? 1 : change > 100 ? 100 : change;
	stride = WORDS_PER_PAGE / (WORDS_PER_PAGE * change / 100);	/* 1..102 */
	rt_printf("memverify: wss=%lluMiB pages=%llu passes=%llu fill=%s change=%llu%%",
		  wss, npages, passes, fill_names[fill], change);
	if (secs)
		rt_printf(" secs=%llu", secs);
	if (moved_secs)
		rt_printf(" moved_secs=%llu", moved_secs);
	rt_printf(threads > 1 ? " threads=%llu\n" : "\n", threads);
	if (wss == 0 || wss + ballast > rt_free_size() / RT_MIB) {
		rt_printf("memverify: wss + ballast must be 1..%lluMiB (free memory), got %llu\n",
			  (u64)rt_free_size() / RT_MIB, wss + ballast);
		return 2;
	}
	if (!threads || threads > rt_ncpus()) {
		rt_printf("memverify: threads=%llu needs as many vCPUs (umig run --cpus %llu); "
			  "the guest has %u\n", threads, threads, rt_ncpus());
		return 2;
	}
	mv_base = base;
	mv_npages = npages;
	mv_threads = threads;
	end = slice_start(1);

	start_ns = last_ns = rt_clock_ns();
	rt_beat_init(256);
	__atomic_store_n(&phase_go, 1, __ATOMIC_RELEASE);
	for (page = 0; page < end; page++) {
		fill_page(base + page * WORDS_PER_PAGE, page);
		rt_tick(++work);
		if ((page + 1) % 256 == 0 && (rc = check_clock()))
			return rc;
	}
	if ((rc = wait_phase(0)))
		return rc;
	/* pages that exist at the source but that this guest never needs again */
	for (page = 0; page < ballast * RT_MIB / RT_PAGE_SIZE; page++)
		base[(npages + page) * WORDS_PER_PAGE] = page + 1;

	for (g = 0; !passes || g < passes; g++) {
		__atomic_store_n(&phase_go, g + 2, __ATOMIC_RELEASE);
		for (page = 0; page < end; page++) {
			if (check_page(base + page * WORDS_PER_PAGE, page, g, g + 1, &m)) {
				print_mismatch(&m);
				return 1;
			}
			rt_tick(++work);
			if ((page + 1) % 256 == 0 && (rc = check_clock()))
				return rc;
		}
		if ((rc = wait_phase(g + 1)))
			return rc;
		rt_beat(work);
		if ((rc = check_clock()))
			return rc;
		rt_printf("memverify: pass %llu ok\n", g + 1);
		if (!moved_ns && rt_host_id() != host) {
			moved_ns = last_ns;
			rt_printf("memverify: moved to another umig process before pass %llu ended\n",
				  g + 1);
		}
		if ((secs && last_ns - start_ns >= secs * 1000000000ull) ||
		    (moved_secs && moved_ns && last_ns - moved_ns >= moved_secs * 1000000000ull)) {
			g++;
			break;
		}
	}
	rt_printf("memverify: done passes=%llu mismatches=0\n", g);
	return 0;
}
