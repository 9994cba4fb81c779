/*
 * prepage.c - the pre-paging policies of prepage.h: in which order the
 * post-copy source pushes the pages nobody has asked for yet.
 *
 * Every policy finds its pages with the bitmap scans over `sent`, so
 * "never a page already sent" and "every page exactly once" hold by
 * construction: a cursor only moves onto a page the scan found clear,
 * and next() returns the page under the cursor without moving past it,
 * so a page the caller did not manage to set (it lost the race with the
 * urgent path, which then set it) is skipped by the next scan, and a page
 * the caller never set is offered again.  This relies on `sent` only
 * gaining bits while a policy runs, which is how the engine uses it
 * (the source builds its sent map before post-copy starts and only sets
 * bits from then on); a bit cleared behind a cursor would be missed.
 *
 * Cost: each next() is O(1) plus the bitmap scans it makes, which move a
 * cursor forward over set pages a word at a time; a cursor never goes
 * back over pages until a new pivot restarts the bubble, so the scans are
 * amortised over the pages sent, plus one re-scan of the bubble per fault.
 *
 * Threading: next() runs on the bulk thread and owns the cursors; fault()
 * runs on the urgent thread (or any other) and only publishes through
 * atomics, see struct bubble.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "umig/log.h"
#include "umig/prepage.h"
#include "umig/util.h"

/* The lowest clear page at or above *low; *low stays on it.  npages if none. */
static uint64_t linear_scan(struct prepage *p, uint64_t *low)
{
	uint64_t r = bitmap_next_clear(p->sent, *low);

	*low = MIN(r, p->npages);
	return *low;
}

/* --- linear ----------------------------------------------------------- */

struct linear {
	uint64_t low;   /* every page below it is sent */
};

static int linear_init(struct prepage *p)
{
	p->priv = calloc(1, sizeof(struct linear));
	return p->priv ? 0 : -ENOMEM;
}

static uint64_t linear_next(struct prepage *p)
{
	struct linear *l = p->priv;

	return linear_scan(p, &l->low);
}

static void linear_fault(struct prepage *p, uint64_t pfn)
{
	/* Address order does not care where the guest is. */
}

static void free_priv(struct prepage *p)
{
	free(p->priv);
	p->priv = NULL;
}

/* --- bubble and bubble-dir ---------------------------------------------- */

/*
 * Direction learning (bubble-dir).  Each fault is compared with the one
 * before it (an atomic exchange on `last`, so concurrent faults still
 * form one chain of steps, though two racing steps may enter the history
 * in either order, which the counts below do not care about); a step up
 * or down is shifted into a 4-step history (equal pfns are not a step
 * and are not recorded).  The bias is chosen when next() picks up a new
 * pivot, with up/down the number of rising/falling steps among the last 4:
 *
 *   up - down >= 2    forward-biased:  4 forward pages, then 1 backward
 *   up - down <= -2   backward-biased: 4 backward pages, then 1 forward
 *   otherwise         1 forward, 1 backward (plain bubble)
 *
 * so faults 10, 20, 30, 40 (3 rising steps) give forward bias, as do two
 * rising steps alone; 10, 30, 20, 40 (2 up, 1 down) give 1:1.  The side
 * the guest walks towards leads: it holds the pivot itself and takes the
 * first DIR_RUN pages; the other side starts next to the pivot.  After
 * faults 10..40 the order is 40 41 42 43 39 44 45 46 47 38 ...  As in
 * bubble, a side that reached its end gives its turns to the other.
 */
#define DIR_HISTORY 4       /* steps remembered, at most 8 */
#define DIR_MIN_LEAD 2      /* up - down needed for a bias */
#define DIR_RUN 4           /* pages of the leading side per trailing page */

#define HIST_MASK ((1u << DIR_HISTORY) - 1)

struct bubble {
	bool learn_dir;         /* bubble-dir */

	/*
	 * Written by fault() from any thread, read by next():
	 *   last   latest faulted pfn + 1 (0: none yet), the pivot;
	 *   hist   bits 0-7: which history slots hold a step, bits 8-15:
	 *          which of those steps rose (newest in bit 0);
	 *   seq    bumped (release) after last and hist, so a next() that
	 *          sees a new seq (acquire) sees that fault's pivot, or a
	 *          later one; two faults may be seen as one, which only
	 *          drops a pivot that was already stale.
	 */
	uint64_t last;
	uint32_t hist;
	uint64_t seq;

	/* Owned by next(). */
	uint64_t seen_seq;
	bool have_pivot;
	uint64_t fwd;           /* next candidate >= fwd; npages: side done */
	uint64_t bwd;           /* next candidate <= bwd; UINT64_MAX: side done */
	int lead;               /* +1 forward leads, -1 backward leads */
	unsigned run;           /* leading-side pages per trailing page */
	unsigned phase;         /* 0..run-1: lead, run: trail */
	uint64_t low;           /* linear fallback: every page below it is sent */
};

static int bubble_init_common(struct prepage *p, bool learn_dir)
{
	struct bubble *b = calloc(1, sizeof(*b));

	if (!b)
		return -ENOMEM;
	b->learn_dir = learn_dir;
	b->lead = 1;
	b->run = 1;
	p->priv = b;
	return 0;
}

static int bubble_init(struct prepage *p)
{
	return bubble_init_common(p, false);
}

static int bubble_dir_init(struct prepage *p)
{
	return bubble_init_common(p, true);
}

static void record_step(struct bubble *b, bool rose)
{
	uint32_t old = __atomic_load_n(&b->hist, __ATOMIC_RELAXED), new;

	/* Lock-free shift; retries only when another fault() raced us. */
	do {
		uint32_t valid = ((old & 0xff) << 1 | 1) & HIST_MASK;
		uint32_t up = ((old >> 8 & 0xff) << 1 | rose) & HIST_MASK;

		new = valid | up << 8;
	} while (!__atomic_compare_exchange_n(&b->hist, &old, new, true,
					      __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
}

static void bubble_fault(struct prepage *p, uint64_t pfn)
{
	struct bubble *b = p->priv;
	uint64_t prev = __atomic_exchange_n(&b->last, pfn + 1, __ATOMIC_ACQ_REL);

	if (b->learn_dir && prev && prev - 1 != pfn)
		record_step(b, pfn > prev - 1);
	__atomic_add_fetch(&b->seq, 1, __ATOMIC_RELEASE);
}

/* up - down over the remembered steps. */
static int dir_score(const struct bubble *b)
{
	uint32_t h = __atomic_load_n(&b->hist, __ATOMIC_ACQUIRE);
	int steps = __builtin_popcount(h & 0xff);
	int up = __builtin_popcount(h >> 8 & 0xff);

	return up - (steps - up);
}

/* Restart the bubble around the latest pivot. */
static void bubble_recenter(struct prepage *p, struct bubble *b)
{
	uint64_t pivot = __atomic_load_n(&b->last, __ATOMIC_ACQUIRE) - 1;
	int score = b->learn_dir ? dir_score(b) : 0;

	b->lead = score <= -DIR_MIN_LEAD ? -1 : 1;
	b->run = score >= DIR_MIN_LEAD || score <= -DIR_MIN_LEAD ? DIR_RUN : 1;
	b->phase = 0;
	b->have_pivot = true;
	if (b->lead > 0) {
		b->fwd = pivot;
		b->bwd = pivot ? pivot - 1 : UINT64_MAX;
	} else {
		b->bwd = pivot;
		b->fwd = pivot + 1;
	}
	pr_debug("prepage %s: pivot %llu, %s, %u:1", p->ops->name,
		 (unsigned long long)pivot, b->lead > 0 ? "forward" : "backward",
		 b->run);
}

/* The next clear page on one side, moving that cursor onto it; false if done. */
static bool bubble_step(struct prepage *p, struct bubble *b, int dir, uint64_t *out)
{
	uint64_t r;

	if (dir > 0) {
		if (b->fwd >= p->npages)
			return false;
		r = bitmap_next_clear(p->sent, b->fwd);
		if (r >= p->npages) {
			b->fwd = p->npages;
			return false;
		}
		*out = b->fwd = r;
	} else {
		if (b->bwd == UINT64_MAX)
			return false;
		b->bwd = bitmap_prev_clear(p->sent, b->bwd);
		if (b->bwd == UINT64_MAX)
			return false;
		*out = b->bwd;
	}
	return true;
}

static uint64_t bubble_next(struct prepage *p)
{
	struct bubble *b = p->priv;
	uint64_t seq = __atomic_load_n(&b->seq, __ATOMIC_ACQUIRE);
	uint64_t r;
	int dir;

	if (seq != b->seen_seq) {
		b->seen_seq = seq;
		bubble_recenter(p, b);
	}
	if (!b->have_pivot)
		return linear_scan(p, &b->low);

	dir = b->phase < b->run ? b->lead : -b->lead;
	b->phase = (b->phase + 1) % (b->run + 1);
	if (bubble_step(p, b, dir, &r) || bubble_step(p, b, -dir, &r))
		return r;
	/*
	 * Both sides hit the ends: with `sent` only gaining bits, everything
	 * is sent; the linear scan says so (or finds what a cleared bit left).
	 */
	return linear_scan(p, &b->low);
}

/* --- the table ------------------------------------------------------------ */

static const struct prepage_ops prepage_policies[] = {
	{
		.name = "linear",
		.summary = "address order (the baseline)",
		.init = linear_init,
		.next = linear_next,
		.fault = linear_fault,
		.destroy = free_priv,
	},
	{
		.name = "bubble",
		.summary = "expand outward from the latest fault, 1 forward : 1 backward",
		.init = bubble_init,
		.next = bubble_next,
		.fault = bubble_fault,
		.destroy = free_priv,
	},
	{
		.name = "bubble-dir",
		.summary = "bubble biased 4:1 towards the direction recent faults walk",
		.init = bubble_dir_init,
		.next = bubble_next,
		.fault = bubble_fault,
		.destroy = free_priv,
	},
};

const char *prepage_names(void)
{
	/* Keep in step with prepage_policies[]; the tests create every name. */
	return "linear, bubble, bubble-dir";
}

bool prepage_known(const char *name)
{
	for (size_t i = 0; name && i < ARRAY_SIZE(prepage_policies); i++)
		if (!strcmp(prepage_policies[i].name, name))
			return true;
	return false;
}

int prepage_create(struct prepage **out, const char *name, uint64_t npages,
		   struct bitmap *sent)
{
	const struct prepage_ops *ops = NULL;
	struct prepage *p;
	int ret;

	*out = NULL;
	for (size_t i = 0; name && i < ARRAY_SIZE(prepage_policies); i++)
		if (!strcmp(prepage_policies[i].name, name))
			ops = &prepage_policies[i];
	if (!ops)
		return err_set(-ENOENT, "unknown pre-paging policy '%s' (known: %s)",
			       name ? name : "", prepage_names());
	if (!sent || sent->nbits < npages)
		return err_set(-EINVAL, "prepage %s: sent bitmap has %llu bits, need %llu",
			       ops->name, sent ? (unsigned long long)sent->nbits : 0ull,
			       (unsigned long long)npages);
	p = calloc(1, sizeof(*p));
	if (!p)
		return err_set(-ENOMEM, "prepage %s: out of memory", ops->name);
	*p = (struct prepage){ .ops = ops, .npages = npages, .sent = sent };
	ret = ops->init(p);
	if (ret < 0) {
		free(p);
		return err_set(ret, "prepage %s: init failed", ops->name);
	}
	pr_debug("prepage %s: %llu pages", ops->name, (unsigned long long)npages);
	*out = p;
	return 0;
}

void prepage_destroy(struct prepage *p)
{
	if (!p)
		return;
	if (p->ops->destroy)
		p->ops->destroy(p);
	free(p);
}

uint64_t prepage_next(struct prepage *p)
{
	return p->ops->next(p);
}

/* Called from the urgent thread; a pfn outside guest RAM is not a pivot. */
void prepage_fault(struct prepage *p, uint64_t pfn)
{
	if (pfn >= p->npages || !p->ops->fault)
		return;
	p->ops->fault(p, pfn);
}
