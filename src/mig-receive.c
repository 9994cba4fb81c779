/*
 * mig-receive.c - the destination's bulk receiver: every pushed run lands
 * here, in pre-copy rounds and in the post-copy push alike.
 *
 * Before the switchover the guest does not run here, so runs are plain
 * memory operations; after MARK pre-copy-done (and once userfaultfd is
 * armed) they are placed with UFFDIO_COPY / UFFDIO_ZEROPAGE, which wake
 * any vCPU faulting on them.  `present` has a bit per page that holds its
 * final content here (or is known to be zero); present_count reaching
 * npages is completion.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "mig.h"

/* Mark [pfn, pfn+n) present; record service latency for faulted pages. */
void dst_mark_present(struct mig_dest *d, uint64_t pfn, uint64_t n)
{
	uint64_t t = 0;

	for (uint64_t i = pfn; i < pfn + n; i++) {
		if (bitmap_test_and_set(&d->present, i))
			continue;
		if (d->fault_ns[i]) {
			t = t ? t : now_ns();
			lat_add(&d->lat, t - d->fault_ns[i]);
			if (t - d->fault_ns[i] > 20000000ull)
				pr_debug("incoming: page %llu waited %.1f ms", (unsigned long long)i,
					 (t - d->fault_ns[i]) / 1e6);
		}
		if (++d->present_count == d->c.npages) {
			pthread_mutex_lock(&d->c.lock);
			pthread_cond_broadcast(&d->c.cond);
			pthread_mutex_unlock(&d->c.lock);
		}
	}
}

/* The run was checked against guest RAM by the transport. */
int dst_place_run(struct mig_dest *d, const struct xrun *in, bool post)
{
	struct xrun dec = *in, *r = &dec;
	uint64_t off = r->pfn << PAGE_SHIFT;
	uint8_t *host = d->c.vm->mem.host + off;
	size_t len = (size_t)r->n * PAGE_SIZE;
	long placed;
	int ret;

	if (r->enc != XENC_RAW && r->enc != XENC_ZERO) {
		ret = dst_decode_run(d, r, post);   /* compressed or delta: checked first */
		if (ret)
			return ret < 0 ? ret : 0;
	}

	if (r->enc == XENC_RAW && (!r->data || r->len != len))
		return err_set(-EPROTO, "page run %llu+%u carries %u bytes",
			       (unsigned long long)r->pfn, r->n, r->len);
	if (!post) {
		/* the guest is not running here yet: plain memory operations */
		if (r->enc == XENC_RAW)
			memcpy(host, r->data, len);
		else if (madvise(host, len, MADV_DONTNEED))
			memset(host, 0, len);
	} else {
		placed = r->enc == XENC_RAW ? uffd_copy(&d->uffd, off, r->data, r->n)
					    : uffd_zero(&d->uffd, off, r->n);
		if (placed < 0)
			return placed;
	}
	dst_mark_present(d, r->pfn, r->n);
	return 0;
}

static void dst_wait_uffd(struct mig_dest *d)
{
	pthread_mutex_lock(&d->c.lock);
	while (!d->uffd_ready && d->c.state != MIG_FAILED)
		pthread_cond_wait(&d->c.cond, &d->c.lock);
	pthread_mutex_unlock(&d->c.lock);
}

/* A mark in the bulk stream; 1 when the stream has ended. */
static int dst_on_mark(struct mig_dest *d, const struct xev *ev, bool *post)
{
	d->rounds = ev->round;
	switch (ev->mark) {
	case MARK_ROUND_END:
		if (*post || !(d->hello.mode == MIG_MODE_PRE || d->hello.mode == MIG_MODE_HYBRID))
			return err_set(-EPROTO, "bulk channel: round-end mark in %s mode%s",
				       mig_mode_name(d->hello.mode), *post ? " after pre-copy" : "");
		return 0;
	case MARK_PRECOPY_DONE:
		if (*post || !dst_postcopy_mode(d))
			return err_set(-EPROTO, "bulk channel: pre-copy-done mark in %s mode",
				       mig_mode_name(d->hello.mode));
		break;
	case MARK_BULK_END:
		if (dst_postcopy_mode(d) && !*post)
			return err_set(-EPROTO, "bulk channel: bulk-end mark where pre-copy-done belongs");
		break;
	default:
		return err_set(-EPROTO, "bulk channel: unknown mark %u", ev->mark);
	}
	pthread_mutex_lock(&d->c.lock);
	d->bulk_mark = ev->mark;
	pthread_cond_broadcast(&d->c.cond);
	pthread_mutex_unlock(&d->c.lock);
	if (ev->mark == MARK_BULK_END)
		return 1;
	/* post-copy pages may only be placed once userfaultfd is armed */
	dst_wait_uffd(d);
	*post = true;
	return 0;
}

static void *dst_bulk_thread(void *arg)
{
	struct mig_dest *d = arg;
	bool post = d->bulk_post;
	struct xev ev;
	int ret = 0;

	while (ret == 0) {
		ret = xport_reap(d->c.x, XQ_BULK, &ev, -1);
		if (ret <= 0) {
			ret = ret ? ret : err_set(-EIO, "bulk channel: no completion");
			break;
		}
		if (ev.kind == XEV_RUN) {
			ret = dst_place_run(d, &ev.run, post);
			/* the byte count takes a lock: only for a progress line that is shown */
			if (d->c.progress.enabled)
				progress_update(&d->c.progress, post ? "postcopy" : "precopy",
						d->present_count, d->c.npages,
						mig_bytes(&d->c, XCH_BULK), d->faults, false);
		} else if (ev.kind == XEV_MARK) {
			ret = dst_on_mark(d, &ev, &post);
		} else {
			ret = err_set(-EPROTO, "bulk channel: unexpected completion %d", ev.kind);
		}
	}
	if (ret < 0 && post && dst_recovering_allowed(d) && mig_get_state(&d->c) != MIG_FAILED) {
		dst_pause(d, ret);   /* after the commit: recover, never fail */
	} else if (ret < 0) {
		pthread_mutex_lock(&d->c.lock);
		d->bulk_failed = true;
		pthread_mutex_unlock(&d->c.lock);
		mig_fail(&d->c, ret);
		pr_err("incoming: bulk channel: %s", err_msg(ret));
	}
	return NULL;
}

int dst_start_receiver(struct mig_dest *d)
{
	if (pthread_create(&d->bulk_thread, NULL, dst_bulk_thread, d))
		return err_set(-EAGAIN, "cannot start the bulk receiver thread");
	d->bulk_started = true;
	return 0;
}

/* Wait for the bulk channel to reach the switchover mark. */
int dst_wait_mark(struct mig_dest *d, int mark)
{
	int ret = 0;

	pthread_mutex_lock(&d->c.lock);
	while (d->bulk_mark != mark && !d->bulk_failed && d->c.state != MIG_FAILED)
		pthread_cond_wait(&d->c.cond, &d->c.lock);
	if (d->bulk_mark != mark)
		ret = err_set(-ECONNABORTED, "%s", d->c.error[0] ? d->c.error : "the migration failed");
	pthread_mutex_unlock(&d->c.lock);
	return ret;
}
