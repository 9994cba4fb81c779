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
 *   exit: 0 done, 1 mismatch, 2 bad args, 3 clock went backwards
 *
 * With threads=N (umig run --cpus N or more) vCPU t fills and checks the
 * t-th of N equal slices of the working set, every pass in step: the boot
 * vCPU does slice 0, waits for the others, and alone prints, beats and
 * reads the clock; a secondary that finds a mismatch records it for the
 * boot vCPU to print.
 */
#include "rt.h"

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

/* Heartbeat, and check the clock is monotonic; 0 or an exit code. */
static int beat(void)
{
	u64 now;

	rt_heartbeat();
	now = rt_clock_ns();
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

/* Check one page holds generation g and rewrite it as g + 1; 0, or 1 and *m. */
static int check_page(volatile u64 *w, u64 page, u64 g, u64 pass, struct mismatch *m)
{
	u64 want = page_base(page, g), next = page_base(page, g + 1);
	u64 i;

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

	for (u64 i = 0; i < WORDS_PER_PAGE; i++, v += STEP)
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
	u64 npages = wss * RT_MIB / RT_PAGE_SIZE;
	volatile u64 *base = (volatile u64 *)rt_free_start();
	u64 threads = rt_arg_u64("threads", 1), end, page, g;
	struct mismatch m;
	int rc;

	rt_printf("memverify: wss=%lluMiB pages=%llu passes=%llu", wss, npages, passes);
	rt_printf(threads > 1 ? " threads=%llu\n" : "\n", threads);
	if (wss == 0 || wss > rt_free_size() / RT_MIB) {
		rt_printf("memverify: wss must be 1..%lluMiB (free memory), got %llu\n",
			  (u64)rt_free_size() / RT_MIB, wss);
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

	last_ns = rt_clock_ns();
	__atomic_store_n(&phase_go, 1, __ATOMIC_RELEASE);
	for (page = 0; page < end; page++) {
		fill_page(base + page * WORDS_PER_PAGE, page);
		if ((page + 1) % 256 == 0 && (rc = beat()))
			return rc;
	}
	if ((rc = wait_phase(0)))
		return rc;

	for (g = 0; !passes || g < passes; g++) {
		__atomic_store_n(&phase_go, g + 2, __ATOMIC_RELEASE);
		for (page = 0; page < end; page++) {
			if (check_page(base + page * WORDS_PER_PAGE, page, g, g + 1, &m)) {
				print_mismatch(&m);
				return 1;
			}
			if ((page + 1) % 256 == 0 && (rc = beat()))
				return rc;
		}
		if ((rc = wait_phase(g + 1)) || (rc = beat()))
			return rc;
		rt_printf("memverify: pass %llu ok\n", g + 1);
	}
	rt_printf("memverify: done passes=%llu mismatches=0\n", passes);
	return 0;
}
