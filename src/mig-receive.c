/*
 * mig-receive.c - the destination's bulk receiver: every pushed run lands
 * here, in pre-copy rounds and in the post-copy push alike.
 *
 * Before the switchover the guest does not run here, so runs are plain
 * memory operations; after MARK pre-copy-done (and once userfaultfd is
 * armed) they are placed with UFFDIO_COPY / UFFDIO_ZEROPAGE, which wake
 * any vCPU faulting on them (memfd RAM with --placement continue: written
 * into the memfd and mapped with UFFDIO_CONTINUE, mig-place.c).
 * `present` has a bit per page that holds its
 * final content here (or is known to be zero); present_count reaching
 * npages is completion.
 */
#include <errno.h>
#include <string.h>

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
		else
			mem_drop(&d->c.vm->mem, off, len);   /* memfd: a hole, not just unmapped */
	} else if (__atomic_load_n(&d->guest_exited, __ATOMIC_ACQUIRE)) {
		return 0;   /* the guest is gone: the rest only drains the stream */
	} else {
		placed = d->huge ? dst_place_huge(d, r) :
			 d->place_continue ? dst_place_continue(d, r) :
			 r->enc == XENC_RAW ? uffd_copy(&d->uffd, off, r->data, r->n)
					    : uffd_zero(&d->uffd, off, r->n);
		/* userfaultfd may close under us once the guest exited */
		if (placed < 0 && __atomic_load_n(&d->guest_exited, __ATOMIC_ACQUIRE))
			return 0;
		if (placed < 0)
			return placed;
		if (d->place_continue || d->huge)
			return 0;   /* marked present as claimed (memfd) or as units complete */
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
	int ret = proto_check_mark(d->hello.mode, *post, ev->mark);

	if (ret < 0)
		return ret;
	d->rounds = ev->round;
	if (ev->mark == MARK_ROUND_END)
		return 0;
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

/*
 * With FEAT_KEEPALIVE a frame that has begun must end within the peer
 * timeout (a source stopped half way through one would otherwise hold
 * this thread for good: "truncated message"); silence between frames is
 * left to the waits that are bounded by the keepalives and to
 * dst_wait_mark.  -1: no bound (a version 1 peer).
 */
static int dst_bulk_timeout(struct mig_dest *d)
{
	return d->c.x->features & FEAT_KEEPALIVE ? (int)d->c.peer_timeout_ms : -1;
}

static void *dst_bulk_thread(void *arg)
{
	struct mig_dest *d = arg;
	bool post = d->bulk_post;
	struct xev ev;
	int ret = 0;

	d->bulk_rx_ns = now_ns();
	while (ret == 0) {
		ret = xport_reap(d->c.x, XQ_BULK, &ev, dst_bulk_timeout(d));
		if (ret == 0)
			continue;   /* nothing between frames: not this thread's to judge */
		if (ret < 0)
			break;
		d->bulk_rx_ns = now_ns();
		ret = 0;
		if (ev.kind == XEV_RUN) {
			ret = proto_check_bulk_run(d->hello.mode, post,
						   ev.run.enc == XENC_ZERO ? MSG_ZERO : MSG_PAGES);
			if (!ret)
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
	/* the frame that failed was never placed */
	if (ret < 0)
		dst_channel_failed(d, ret);
	return NULL;
}

int dst_start_receiver(struct mig_dest *d)
{
	if (pthread_create(&d->bulk_thread, NULL, dst_bulk_thread, d))
		return err_set(-EAGAIN, "cannot start the bulk receiver thread");
	d->bulk_started = true;
	return 0;
}

/*
 * Wait for the bulk channel to reach the switchover mark.  The source sends
 * it right after its DISCARDs and before STATE, the frames this is called
 * on, so with FEAT_KEEPALIVE a bulk channel silent for the peer timeout,
 * counted from its last frame or the start of the wait, fails the
 * migration: nobody reads control meanwhile, so keepalives cannot keep
 * it waiting.
 */
int dst_wait_mark(struct mig_dest *d, int mark)
{
	bool bounded = d->c.x->features & FEAT_KEEPALIVE;
	uint64_t start = now_ns(), limit = d->c.peer_timeout_ms * 1000000ull;
	int ret = 0;

	pthread_mutex_lock(&d->c.lock);
	while (d->bulk_mark != mark && !d->bulk_failed && d->c.state != MIG_FAILED) {
		uint64_t t = now_ns() + 100000000ull, last = MAX(start, (uint64_t)d->bulk_rx_ns);
		struct timespec ts = { .tv_sec = t / 1000000000ull, .tv_nsec = t % 1000000000ull };

		if (bounded && now_ns() - last > limit) {
			ret = err_set(-ETIMEDOUT, "bulk channel: the source was silent for %.1f s while "
				      "this side waited for the %s mark", (now_ns() - last) / 1e9,
				      mark == MARK_BULK_END ? "bulk-end" : "pre-copy-done");
			break;
		}
		pthread_cond_timedwait(&d->c.cond, &d->c.lock, &ts);
	}
	if (!ret && d->bulk_mark != mark)
		ret = err_set(-ECONNABORTED, "%s", d->c.error[0] ? d->c.error : "the migration failed");
	pthread_mutex_unlock(&d->c.lock);
	return ret;
}
