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
 *
 * With parallel bulk streams (FEAT_STREAMS) one receiver thread runs per
 * stream, each placing what its stream carries.  The source sends each
 * mark on every stream, so a receiver that reaches its k-th mark waits
 * until every stream delivered its k-th: a page re-sent in round k+1 on
 * one stream can then never be overtaken by its round-k copy on another,
 * and a DISCARD applied after the pre-copy-done mark finds every older
 * copy placed.  Within a round a page travels once.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "mig.h"

/* Wake the completion thread out of its wait on the control connection. */
void dst_signal_done(struct mig_dest *d)
{
	uint64_t one = 1;

	if (d->done_efd >= 0 && write(d->done_efd, &one, sizeof(one)) != sizeof(one))
		pr_debug("incoming: completion eventfd write failed");
}

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
			dst_signal_done(d);
		}
	}
}

/* Post-copy placement has ended: the guest exited here, or every page is present. */
static bool dst_placing_over(struct mig_dest *d)
{
	return __atomic_load_n(&d->guest_exited, __ATOMIC_ACQUIRE) ||
	       atomic_load(&d->present_count) == d->c.npages;
}

/* The run was checked against guest RAM by the transport. */
int dst_place_run(struct mig_dest *d, const struct xrun *in, bool post, unsigned stream)
{
	struct xrun dec = *in, *r = &dec;
	uint64_t off = r->pfn << PAGE_SHIFT;
	uint8_t *host = d->c.vm->mem.host + off;
	size_t len = (size_t)r->n * PAGE_SIZE;
	long placed;
	int ret;

	if (r->enc != XENC_RAW && r->enc != XENC_ZERO) {
		ret = dst_decode_run(d, r, post, stream);   /* compressed or delta: checked first */
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
	} else if (dst_placing_over(d)) {
		return 0;   /* the guest is gone or has every page: the rest only drains */
	} else {
		placed = d->huge ? dst_place_huge(d, r) :
			 d->place_continue ? dst_place_continue(d, r) :
			 r->enc == XENC_RAW ? uffd_copy(&d->uffd, off, r->data, r->n)
					    : uffd_zero(&d->uffd, off, r->n);
		/*
		 * userfaultfd is unregistered under us once the guest exited or
		 * once every page arrived (a late duplicate of a page served on
		 * the urgent channel then finds nothing left to place)
		 */
		if (placed < 0 && dst_placing_over(d))
			return 0;
		if (placed < 0)
			return placed;
		if (d->place_continue || d->huge)
			return 0;   /* marked present as claimed (memfd) or as units complete */
	}
	dst_mark_present(d, r->pfn, r->n);
	return 0;
}

/*
 * Post-copy pages may be placed once userfaultfd is armed and every
 * DISCARD and DISCARD_EARLY that precedes STATE is applied: hybrid arms
 * userfaultfd at DISCARD_EARLY, and a discard applied after a post-copy
 * page was placed would drop that fresh page (its source counts it sent).
 * The bulk receiver waits here once post-copy begins, the fault thread
 * before its first urgent reply.
 */
void dst_wait_uffd(struct mig_dest *d)
{
	pthread_mutex_lock(&d->c.lock);
	while (!(d->uffd_ready && d->discards_done) && d->c.state != MIG_FAILED)
		pthread_cond_wait(&d->c.cond, &d->c.lock);
	pthread_mutex_unlock(&d->c.lock);
}

static int dst_bulk_timeout(struct mig_dest *d);

/*
 * The k-th mark of one stream: wait (under d->c.lock) until every stream
 * delivered its k-th, bounded like any bulk wait by the peer timeout
 * counted from the last frame any stream delivered.
 */
static int dst_mark_barrier(struct mig_dest *d, unsigned k)
{
	unsigned n = d->c.x->streams;
	uint64_t limit = d->c.peer_timeout_ms * 1000000ull;
	int ret = 0;

	d->marks_in++;
	pthread_cond_broadcast(&d->c.cond);
	while (d->marks_in < k * n && !d->bulk_failed && d->c.state != MIG_FAILED) {
		uint64_t t = now_ns() + 100000000ull;
		struct timespec ts = { .tv_sec = t / 1000000000ull, .tv_nsec = t % 1000000000ull };

		if (dst_bulk_timeout(d) >= 0 && now_ns() - d->bulk_rx_ns > limit)
			return err_set(-ETIMEDOUT, "bulk channel: a stream was silent for %.1f s while "
				       "the others waited at mark %u", (now_ns() - d->bulk_rx_ns) / 1e9, k);
		pthread_cond_timedwait(&d->c.cond, &d->c.lock, &ts);
	}
	if (d->marks_in < k * n)
		ret = -ECONNABORTED;   /* another stream failed: it says why */
	return ret;
}

/* The k-th mark in one bulk stream; 1 when the stream has ended. */
static int dst_on_mark(struct mig_dest *d, const struct xev *ev, bool *post, unsigned k)
{
	int ret = proto_check_mark(d->hello.mode, *post, ev->mark);
	bool placed;

	if (ret < 0)
		return ret;
	d->rounds = ev->round;
	pthread_mutex_lock(&d->c.lock);
	if (ev->mark == MARK_BULK_END) {
		/* nothing follows: no wait, the last stream to end ends the bulk phase */
		if (++d->streams_ended >= d->c.x->streams)
			d->bulk_mark = ev->mark;
		pthread_cond_broadcast(&d->c.cond);
		pthread_mutex_unlock(&d->c.lock);
		return 1;
	}
	ret = d->c.x->streams > 1 ? dst_mark_barrier(d, k) : 0;
	if (!ret && ev->mark != MARK_ROUND_END) {
		d->bulk_mark = ev->mark;
		pthread_cond_broadcast(&d->c.cond);
	}
	/* a round is placed once every stream passed its end: one stream says so */
	placed = !ret && ev->mark == MARK_ROUND_END && d->rounds_placed < ev->round;
	if (placed) {
		d->rounds_placed = ev->round;
		pthread_cond_broadcast(&d->c.cond);
	}
	pthread_mutex_unlock(&d->c.lock);
	/* a broken control connection is the control reader's to report */
	if (placed && dst_send_placed(d) < 0)
		pr_debug("incoming: PLACED for round %u not sent", ev->round);
	if (ret < 0 || ev->mark == MARK_ROUND_END)
		return ret;
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
	struct dst_stream *st = arg;
	struct mig_dest *d = st->d;
	bool post = d->bulk_post;
	unsigned marks = 0;
	struct xev ev;
	int ret = 0;

	d->bulk_rx_ns = now_ns();
	while (ret == 0) {
		ret = xport_reap(d->c.x, xq_stream(st->i), &ev, dst_bulk_timeout(d));
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
				ret = dst_place_run(d, &ev.run, post, st->i);
			/* the byte count takes a lock: only for a progress line that is shown */
			if (d->c.progress.enabled)
				progress_update(&d->c.progress, post ? "postcopy" : "precopy",
						d->present_count, d->c.npages,
						mig_bytes(&d->c, XCH_BULK), d->faults, false);
		} else if (ev.kind == XEV_MARK) {
			ret = dst_on_mark(d, &ev, &post, ++marks);
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
	unsigned n = MIN(d->c.x->streams, (unsigned)XSTREAMS_MAX);

	pthread_mutex_lock(&d->c.lock);
	d->marks_in = d->streams_ended = 0;   /* a recovery starts the streams anew */
	pthread_mutex_unlock(&d->c.lock);
	for (unsigned i = 0; i < n; i++) {
		d->bulk_arg[i] = (struct dst_stream){ .d = d, .i = i };
		if (pthread_create(&d->bulk_thread[i], NULL, dst_bulk_thread, &d->bulk_arg[i]))
			return err_set(-EAGAIN, "cannot start bulk receiver thread %u of %u", i + 1, n);
		d->bulk_started++;
	}
	return 0;
}

void dst_join_receiver(struct mig_dest *d)
{
	for (unsigned i = 0; i < d->bulk_started; i++)
		pthread_join(d->bulk_thread[i], NULL);
	d->bulk_started = 0;
}

/*
 * Wait for the bulk channel to reach the switchover mark.  The source sends
 * it right after its DISCARDs and before STATE, the frames this is called
 * on, so with FEAT_KEEPALIVE a bulk channel silent for the peer timeout,
 * counted from its last frame or the start of the wait, fails the
 * migration: nobody reads control meanwhile, so keepalives cannot keep
 * it waiting.
 */
static bool dst_bulk_reached(struct mig_dest *d, int mark, unsigned round)
{
	/*
	 * Marks come in order (proto_check_mark), and once userfaultfd is
	 * armed the receiver may run on from pre-copy-done to bulk-end
	 * before this side looks: reaching a mark is passing it.
	 */
	return mark ? d->bulk_mark >= mark : d->rounds_placed >= round || d->bulk_mark;
}

/* mark, or (mark 0) the end mark of round placed; -ETIMEDOUT on silence. */
static int dst_wait_bulk(struct mig_dest *d, int mark, unsigned round)
{
	bool bounded = d->c.x->features & FEAT_KEEPALIVE;
	uint64_t start = now_ns(), limit = d->c.peer_timeout_ms * 1000000ull;
	int ret = 0;

	pthread_mutex_lock(&d->c.lock);
	while (!dst_bulk_reached(d, mark, round) && !d->bulk_failed && d->c.state != MIG_FAILED) {
		uint64_t t = now_ns() + 100000000ull, last = MAX(start, (uint64_t)d->bulk_rx_ns);
		struct timespec ts = { .tv_sec = t / 1000000000ull, .tv_nsec = t % 1000000000ull };

		if (bounded && now_ns() - last > limit) {
			ret = err_set(-ETIMEDOUT, "bulk channel: the source was silent for %.1f s while "
				      "this side waited for the %s mark", (now_ns() - last) / 1e9,
				      mark == MARK_BULK_END ? "bulk-end" :
				      mark ? "pre-copy-done" : "round-end");
			break;
		}
		pthread_cond_timedwait(&d->c.cond, &d->c.lock, &ts);
	}
	if (!ret && !dst_bulk_reached(d, mark, round))
		ret = err_set(-ECONNABORTED, "%s", d->c.error[0] ? d->c.error : "the migration failed");
	else if (!ret && !mark && d->rounds_placed < round)
		ret = err_set(-EPROTO, "DISCARD_EARLY follows round %u, but pre-copy ended after "
			      "round %u", round, d->rounds_placed);
	pthread_mutex_unlock(&d->c.lock);
	return ret;
}

int dst_wait_mark(struct mig_dest *d, int mark)
{
	return dst_wait_bulk(d, mark, 0);
}

/* The bulk receiver has placed every page of round `round` (its end mark). */
int dst_wait_round(struct mig_dest *d, unsigned round)
{
	return dst_wait_bulk(d, 0, round);
}
