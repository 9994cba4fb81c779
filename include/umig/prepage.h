/*
 * prepage.h - pre-paging policies: the order in which the post-copy
 * source pushes the pages the destination has not asked for.
 *
 * The bulk thread calls prepage_next() for the next page to push; the
 * urgent thread calls prepage_fault() for every page the destination
 * faulted on, which adaptive policies use as their pivot.  prepage_next()
 * never returns a page already set in the `sent` bitmap it was given,
 * and returns npages once every page is sent, so every page is pushed
 * exactly once whatever the policy.
 *
 * Policies:
 *   linear      address order (the baseline)
 *   bubble      Hines & Gopalan: expand outward from the latest faulted
 *               page (the pivot), alternating forward and backward, and
 *               move the pivot when a new fault arrives
 *   bubble-dir  bubble that learns the direction the guest walks memory
 *               in from its recent faults and pushes mostly that way
 *
 * Threading: next() from one thread, fault() from any thread.
 */
#ifndef UMIG_PREPAGE_H
#define UMIG_PREPAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "umig/bitmap.h"

struct prepage;

struct prepage_ops {
	const char *name;
	const char *summary;
	int (*init)(struct prepage *p);
	uint64_t (*next)(struct prepage *p);
	void (*fault)(struct prepage *p, uint64_t pfn);
	void (*destroy)(struct prepage *p);
};

struct prepage {
	const struct prepage_ops *ops;
	uint64_t npages;
	struct bitmap *sent;    /* not owned */
	void *priv;
};

/* -ENOENT (with err_set naming the known policies) for an unknown name. */
int prepage_create(struct prepage **out, const char *name, uint64_t npages,
		   struct bitmap *sent);
void prepage_destroy(struct prepage *p);
/* Next page to push (not set in sent), or npages when none is left. */
uint64_t prepage_next(struct prepage *p);
void prepage_fault(struct prepage *p, uint64_t pfn);
bool prepage_known(const char *name);
/* "linear, bubble, bubble-dir" */
const char *prepage_names(void);

#endif
