/*
 * mig-postcopy-dst.c - post-copy at the destination: guest RAM registered
 * with userfaultfd (missing mode) and the fault path.
 *
 * The fault thread polls the userfaultfd, the urgent queue and a quit
 * eventfd.  A fault on a page not yet present is fetched from the source
 * once (`requested`: never twice); the reply is placed with UFFDIO_COPY
 * (or, memfd RAM with --placement continue, written into the memfd and
 * mapped with UFFDIO_CONTINUE: mig-place.c), which wakes the vCPU.  A page already
 * present that still faults was a zero page never populated here, was
 * placed a moment ago, or (memfd) sits in the page cache unmapped: it is
 * resolved locally.  The bulk receiver (mig-receive.c) places pushed
 * pages concurrently; whoever places a page first wins, the other gets
 * EEXIST, which uffd.c treats as done.  That is also how a deliberate
 * duplicate (the source answering a request for a page its push sent but
 * that is still in flight, mig-postcopy-src.c) is ignored: the same bytes
 * arrive twice, and the second copy finds the page present.
 */
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "mig.h"

static int dst_handle_fault(struct mig_dest *d, uint64_t addr)
{
	uint64_t off = addr - (uint64_t)d->c.vm->mem.host, pfn = off >> PAGE_SHIFT;

	if (off >= d->c.vm->mem.size)
		return 0;
	if (d->huge)
		return dst_fault_huge(d, pfn);
	if (bitmap_test(&d->present, pfn))
		/* known zero and never populated, placed a moment ago, or in the page cache */
		return dst_resolve_present(d, off);
	if (bitmap_test_and_set(&d->requested, pfn))
		return 0;   /* asked already: never twice */
	d->fault_ns[pfn] = now_ns();
	d->faults++;
	pr_debug("incoming: fault on page %llu, requesting", (unsigned long long)pfn);
	return xport_fetch(d->c.x, pfn);
}

static int dst_handle_reply(struct mig_dest *d, const struct xev *ev)
{
	int ret;

	if (ev->kind != XEV_RUN)
		return err_set(-EPROTO, "urgent channel: unexpected completion %d", ev->kind);
	ret = dst_place_run(d, &ev->run, true, 0);
	if (!ret)
		d->pages_urgent += ev->run.n;
	return ret;
}

static void *dst_fault_thread(void *arg)
{
	struct mig_dest *d = arg;
	uint64_t addrs[64];
	bool placing = false;
	struct xev ev;
	int ret = 0;

	while (!ret) {
		struct pollfd p[3] = {
			{ .fd = d->uffd.fd, .events = POLLIN },
			{ .fd = xport_queue_fd(d->c.x, XQ_URGENT), .events = POLLIN },
			{ .fd = d->quit_efd, .events = POLLIN },
		};

		/* TLS may hold a decrypted reply that poll() cannot see */
		bool pending = xport_pending(d->c.x, XQ_URGENT);

		if (poll(p, 3, pending ? 0 : -1) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		if (p[2].revents)
			break;
		if (p[0].revents & POLLIN) {
			int n = uffd_read_faults(&d->uffd, addrs, 64);

			for (int i = 0; i < n && !ret; i++)
				ret = dst_handle_fault(d, addrs[i]);
			if (n < 0)
				ret = n;
		}
		if (!ret && (pending || (p[1].revents & (POLLIN | POLLHUP | POLLERR)))) {
			/* poll saw the header start: the rest of the frame gets the peer timeout */
			ret = xport_reap(d->c.x, XQ_URGENT, &ev, (int)d->c.peer_timeout_ms);
			/*
			 * An urgent reply before the switchover's discards are
			 * applied (hybrid arms userfaultfd at DISCARD_EARLY; only a
			 * source that does not wait for requests sends one) must
			 * not race a discard of its page: placed, then dropped
			 * while marked present, it would read as zeroes.
			 */
			if (ret > 0 && !placing) {
				dst_wait_uffd(d);
				placing = true;
			}
			ret = ret > 0 ? dst_handle_reply(d, &ev) : ret ? ret : -EIO;
		}
	}
	if (ret < 0 && d->present_count < d->c.npages)
		dst_channel_failed(d, ret);
	return NULL;
}

/* Ask again for what was asked on a broken session and never answered. */
static int dst_refetch(struct mig_dest *d)
{
	int ret = 0;
	uint64_t n = 0;

	for (uint64_t pfn = bitmap_next_set(&d->requested, 0); pfn < d->c.npages && !ret;
	     pfn = bitmap_next_set(&d->requested, pfn + 1))
		if (!bitmap_test(&d->present, pfn)) {
			ret = xport_fetch(d->c.x, pfn);
			n++;
		}
	if (n)
		pr_debug("incoming: asked again for %llu pages", (unsigned long long)n);
	return ret;
}

static void *dst_fault_main(void *arg)
{
	struct mig_dest *d = arg;
	int ret = dst_refetch(d);

	if (ret < 0) {
		dst_pause(d, ret);
		return NULL;
	}
	return dst_fault_thread(arg);
}

int dst_start_fault_thread(struct mig_dest *d)
{
	if (pthread_create(&d->fault_thread, NULL, dst_fault_main, d))
		return err_set(-EAGAIN, "cannot start the fault thread");
	d->fault_started = true;
	return 0;
}

/*
 * One-sided transports pull the pages themselves, in the order of a
 * pre-paging policy that sees every fault here: start them once the
 * source guest is paused (its RAM no longer changes) and again on each
 * recovered session, with what is present now.
 */
int dst_start_pull(struct mig_dest *d)
{
	if (!(xport_caps(d->c.x) & XCAP_ONESIDED))
		return 0;
	return xport_pull(d->c.x, &d->present, "bubble");
}

int dst_arm_postcopy(struct mig_dest *d)
{
	int ret = d->huge ? dst_huge_setup(d) : 0;

	if (!ret)
		ret = d->huge ? uffd_open_huge(&d->uffd) :
		      d->place_continue ? uffd_open_minor(&d->uffd) : uffd_open(&d->uffd);
	/* memfd: MISSING as well as MINOR, so a page with no folio is fetched, never zeroed */
	if (!ret && d->huge)
		ret = uffd_register_huge(&d->uffd, d->c.vm->mem.host, d->c.vm->mem.size);
	else if (!ret)
		ret = uffd_register(&d->uffd, d->c.vm->mem.host, d->c.vm->mem.size,
				    d->place_continue);
	if (!ret)
		ret = dst_start_fault_thread(d);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&d->c.lock);
	d->uffd_ready = true;
	pthread_cond_broadcast(&d->c.cond);
	pthread_mutex_unlock(&d->c.lock);
	pr_debug("incoming: post-copy armed");
	return 0;
}

/* Every page is present: stop faulting and hand RAM back to the kernel. */
void dst_stop_fault_thread(struct mig_dest *d)
{
	uint64_t one = 1;

	if (!d->fault_started)
		return;
	if (write(d->quit_efd, &one, sizeof(one)) != sizeof(one))
		pr_warn("incoming: cannot stop the fault thread");
	pthread_join(d->fault_thread, NULL);
	d->fault_started = false;
	uffd_unregister(&d->uffd);
	uffd_close(&d->uffd);
}
