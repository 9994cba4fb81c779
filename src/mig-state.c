/*
 * mig-state.c - the migration state machine, the one place that knows
 * which state may follow which; both sides use it.
 *
 *   idle -> setup -> [precopy] -> switchover -> [postcopy] -> completed
 *   switchover <-> outcome-unknown (the commit or its answer was lost)
 *   postcopy -> postcopy-paused -> recovering -> postcopy (a link broke)
 *   postcopy-paused -> completed (the break came after the last page)
 *   any state before completed -> failed
 *
 * precopy is entered by pre-copy and hybrid, postcopy by post-copy and
 * hybrid; docs/protocol.md ("State machine") draws both sides.  The
 * setter checks every transition before committing it and logs it, so
 * an engine bug shows up as a refused transition instead of a silent
 * jump, and it wakes everyone waiting on the context's condition.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mig.h"

#define S(x) (1u << (x))

/* For each state, the states that may follow it. */
static const unsigned mig_next[] = {
	[MIG_IDLE] = S(MIG_SETUP) | S(MIG_FAILED),
	[MIG_SETUP] = S(MIG_PRECOPY) | S(MIG_SWITCHOVER) | S(MIG_FAILED),
	[MIG_PRECOPY] = S(MIG_SWITCHOVER) | S(MIG_FAILED),
	[MIG_SWITCHOVER] = S(MIG_POSTCOPY) | S(MIG_UNKNOWN) | S(MIG_COMPLETED) | S(MIG_FAILED),
	/* resolved: back to finishing the switchover, or the source keeps it */
	[MIG_UNKNOWN] = S(MIG_SWITCHOVER) | S(MIG_POSTCOPY) | S(MIG_COMPLETED) | S(MIG_FAILED),
	[MIG_POSTCOPY] = S(MIG_PAUSED) | S(MIG_COMPLETED) | S(MIG_FAILED),
	/* completed: the destination had every page before it heard of the break */
	[MIG_PAUSED] = S(MIG_RECOVERING) | S(MIG_COMPLETED) | S(MIG_FAILED),
	[MIG_RECOVERING] = S(MIG_POSTCOPY) | S(MIG_PAUSED) | S(MIG_FAILED),
	[MIG_COMPLETED] = 0,
	[MIG_FAILED] = 0,
};

const char *mig_state_name(enum mig_state s)
{
	static const char *const n[] = {
		[MIG_IDLE] = "idle", [MIG_SETUP] = "setup", [MIG_PRECOPY] = "precopy",
		[MIG_SWITCHOVER] = "switchover", [MIG_POSTCOPY] = "postcopy",
		[MIG_UNKNOWN] = "outcome-unknown", [MIG_PAUSED] = "postcopy-paused",
		[MIG_RECOVERING] = "recovering",
		[MIG_COMPLETED] = "completed", [MIG_FAILED] = "failed",
	};

	return (unsigned)s < ARRAY_SIZE(n) ? n[s] : "?";
}

bool mig_state_ok(enum mig_state from, enum mig_state to)
{
	return (unsigned)from < ARRAY_SIZE(mig_next) && (unsigned)to < 32 &&
	       (mig_next[from] & S(to));
}

void mig_common_init(struct mig_common *c, const char *side)
{
	pthread_condattr_t ca;

	memset(c, 0, sizeof(*c));
	c->side = side;
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	c->state = MIG_IDLE;
}

void mig_common_destroy(struct mig_common *c)
{
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
}

static int mig_set_state_locked(struct mig_common *c, enum mig_state to)
{
	if (c->state == to)
		return 0;
	if (!mig_state_ok(c->state, to)) {
		pr_warn("%s: illegal transition %s -> %s refused", c->side,
			mig_state_name(c->state), mig_state_name(to));
		return -EINVAL;
	}
	pr_debug("%s: %s -> %s", c->side, mig_state_name(c->state), mig_state_name(to));
	c->state = to;
	/* the holds an operator must see at a glance, on the progress line too */
	if (to == MIG_UNKNOWN || to == MIG_PAUSED || to == MIG_RECOVERING)
		progress_note(&c->progress, mig_state_name(to));
	pthread_cond_broadcast(&c->cond);
	return 0;
}

int mig_set_state(struct mig_common *c, enum mig_state to)
{
	int ret;

	pthread_mutex_lock(&c->lock);
	ret = mig_set_state_locked(c, to);
	pthread_mutex_unlock(&c->lock);
	return ret;
}

enum mig_state mig_get_state(struct mig_common *c)
{
	enum mig_state s;

	pthread_mutex_lock(&c->lock);
	s = c->state;
	pthread_mutex_unlock(&c->lock);
	return s;
}

void mig_fail(struct mig_common *c, int err)
{
	pthread_mutex_lock(&c->lock);
	if (c->state != MIG_COMPLETED && c->state != MIG_FAILED) {
		if (!c->error[0])
			snprintf(c->error, sizeof(c->error), "%s", err_msg(err));
		mig_set_state_locked(c, MIG_FAILED);
	}
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

void mig_swap_xport(struct mig_common *c, struct xport *x)
{
	pthread_mutex_lock(&c->lock);
	if (c->nretired == ARRAY_SIZE(c->retired)) {
		/* the oldest has been idle for fifteen recoveries */
		xport_close(c->retired[0]);
		memmove(c->retired, c->retired + 1, sizeof(c->retired) - sizeof(c->retired[0]));
		c->nretired--;
	}
	c->retired[c->nretired++] = c->x;
	c->x = x;
	pthread_mutex_unlock(&c->lock);
}

uint64_t mig_bytes(struct mig_common *c, enum xport_channel ch)
{
	uint64_t n;

	pthread_mutex_lock(&c->lock);
	n = c->x ? xport_bytes(c->x, ch) : 0;
	for (unsigned i = 0; i < c->nretired; i++)
		n += xport_bytes(c->retired[i], ch);
	pthread_mutex_unlock(&c->lock);
	return n;
}

void mig_free_xports(struct mig_common *c)
{
	for (unsigned i = 0; i < c->nretired; i++)
		xport_close(c->retired[i]);
	c->nretired = 0;
	xport_close(c->x);
	c->x = NULL;
}
