/*
 * mig-converge.c - how pre-copy decides, round by round, whether it is
 * getting anywhere, and what it does about a guest that dirties memory
 * faster than the link carries it.
 *
 * Each round's figures (pages and bytes sent, time, the pages dirtied
 * meanwhile, the writable-working-set estimate, the throttle) go into
 * the record's `rounds_detail`, and the reason the rounds stopped into
 * `switch_reason`.
 *
 * Auto-converge (`--auto-converge`): when the pages dirtied during a
 * round amount to more than half the page bytes the link carried in it
 * (QEMU's throttle-trigger-threshold), a throttle thread starts pausing
 * the guest for 20% of every 50 ms slice, and steps up by 10 points each
 * further round in which that still holds, up to 99%.  The pause is a
 * real one (vm_pause: every vCPU thread out of the guest, devices
 * stopped), so the guest's heartbeat shows it as lost work.  It is
 * released before the switchover and on any failure.
 *
 * No progress: the dirty set failed to shrink below 90% of its smallest
 * size for 3 rounds running, and the throttle (if any) is at its cap.
 * With `--mode pre --fallback post` that ends pre-copy and the switchover
 * goes on as hybrid does: the pages still dirty are discarded at the
 * destination and fetched in post-copy.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "mig.h"

#define THROTTLE_SLICE_NS 50000000ull
#define THROTTLE_START 20
#define THROTTLE_STEP 10
#define THROTTLE_CAP 99
#define STALL_ROUNDS 3

static void nap_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000ull, .tv_nsec = ns % 1000000000ull };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void *src_throttle_thread(void *arg)
{
	struct mig_source *s = arg;
	struct src_conv *v = &s->conv;

	while (!atomic_load(&v->stop)) {
		unsigned pct = atomic_load(&v->pct);
		uint64_t off = THROTTLE_SLICE_NS * pct / 100, t0;

		if (!pct || vm_get_status(s->c.vm) != VM_RUNNING) {
			nap_ns(THROTTLE_SLICE_NS / 5);
			continue;
		}
		t0 = now_ns();
		if (vm_pause(s->c.vm) < 0)
			break;
		nap_ns(off);
		vm_resume(s->c.vm);
		atomic_fetch_add(&v->throttled_ns, now_ns() - t0);
		nap_ns(THROTTLE_SLICE_NS - off);
	}
	return NULL;
}

/* Before the switchover pauses the guest, and on failure: the guest runs freely again. */
void src_throttle_stop(struct mig_source *s)
{
	struct src_conv *v = &s->conv;

	src_rate_full(s);   /* the rest is downtime or a waiting guest: full rate */
	if (!v->started)
		return;
	atomic_store(&v->stop, true);
	pthread_join(v->thread, NULL);
	v->started = false;
	if (v->pct_max)
		pr_info("migration: auto-converge released the guest (throttled up to %u%%, "
			"%.0f ms in all)", v->pct_max, atomic_load(&v->throttled_ns) / 1e6);
}

static int src_throttle_raise(struct mig_source *s)
{
	struct src_conv *v = &s->conv;
	unsigned pct = atomic_load(&v->pct);

	pct = pct ? MIN(pct + THROTTLE_STEP, THROTTLE_CAP) : THROTTLE_START;
	atomic_store(&v->pct, pct);
	v->pct_max = MAX(v->pct_max, pct);
	pr_debug("migration: auto-converge throttles the guest to %u%%", pct);
	if (v->started)
		return 0;
	if (pthread_create(&v->thread, NULL, src_throttle_thread, s))
		return err_set(-EAGAIN, "cannot start the auto-converge thread");
	v->started = true;
	return 0;
}

/*
 * Round r's figures are in: the round sent `pages` data pages in ns,
 * during which `ndirty` pages were written.  Records the round, steps the
 * throttle, and returns 1 when pre-copy is making no progress, else 0.
 */
int src_conv_round(struct mig_source *s, const struct conv_round *cr)
{
	struct src_conv *v = &s->conv;
	uint64_t carried = cr->data_pages * PAGE_SIZE, dirtied = cr->ndirty * PAGE_SIZE;
	bool fast = dirtied * 2 > carried;
	uint64_t wws = cr->ndirty;
	json_t *j;

	/* progress: the dirty set went below 90% of its smallest size so far */
	if (!v->nrounds || cr->ndirty * 10 <= v->best * 9)
		v->stall = 0;
	else
		v->stall++;
	v->best = v->nrounds ? MIN(v->best, cr->ndirty) : cr->ndirty;
	/* the writable working set: the floor the last rounds' dirty sets do not go below */
	v->wws[v->nrounds % STALL_ROUNDS] = cr->ndirty;
	v->nrounds++;
	for (unsigned i = 0; i < MIN(v->nrounds, STALL_ROUNDS); i++)
		wws = MIN(wws, v->wws[i]);
	j = json_pack("{s:I, s:I, s:I, s:f, s:I, s:I, s:i, s:I}", "round", (json_int_t)cr->round,
		      "pages", (json_int_t)cr->pages, "bytes", (json_int_t)cr->bytes,
		      "ms", cr->ns / 1e6, "dirty_pages", (json_int_t)cr->ndirty,
		      "wws_pages", (json_int_t)wws, "throttle_pct", (int)atomic_load(&v->pct),
		      "rate", (json_int_t)cr->rate);
	pthread_mutex_lock(&s->c.lock);
	if (!v->rounds)
		v->rounds = json_array();
	if (j)
		json_array_append_new(v->rounds, j);
	pthread_mutex_unlock(&s->c.lock);
	if (s->p.auto_converge && fast && src_throttle_raise(s) < 0)
		pr_warn("migration: %s; auto-converge is off", err_msg(-EAGAIN));
	return v->stall >= STALL_ROUNDS &&
	       (!s->p.auto_converge || atomic_load(&v->pct) >= THROTTLE_CAP);
}

void src_conv_record(struct mig_source *s, json_t *r)
{
	struct src_conv *v = &s->conv;

	json_object_set_new(r, "switch_reason", json_string(v->reason ? v->reason : ""));
	json_object_set_new(r, "fallback", json_string(s->p.fallback_post ? "post" : "none"));
	json_object_set_new(r, "switched_to_post", json_boolean(v->to_post));
	json_object_set_new(r, "auto_converge", json_boolean(s->p.auto_converge));
	json_object_set_new(r, "throttle_pct_max", json_integer(v->pct_max));
	json_object_set_new(r, "throttled_ms",
			    json_real(atomic_load(&v->throttled_ns) / 1e6));
	pthread_mutex_lock(&s->c.lock);
	json_object_set_new(r, "rounds_detail", v->rounds ? json_deep_copy(v->rounds) : json_array());
	pthread_mutex_unlock(&s->c.lock);
}
