/*
 * mig-dst.c - the destination side of a migration: its context and the
 * driver that takes one incoming migration up to the point where the
 * guest runs here.  The rest (post-copy pages, completion, the record)
 * goes on in threads of its own until mig_dest_finish().
 *
 * Threads: the caller of mig_dest_accept() (handshake, switchover); the
 * bulk receiver (mig-receive.c); the fault thread in post-copy modes
 * (mig-postcopy-dst.c); the completion thread (mig-complete.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "mig.h"

static int dst_setup(struct mig_dest *d)
{
	int ret = bitmap_init(&d->present, d->c.npages);

	if (!ret)
		ret = bitmap_init(&d->requested, d->c.npages);
	if (!ret && (d->place_continue || d->huge))
		ret = bitmap_init(&d->claimed, d->c.npages);
	if (!ret) {
		d->fault_ns = calloc(d->c.npages, sizeof(*d->fault_ns));
		ret = d->fault_ns ? 0 : -ENOMEM;
	}
	return ret;
}

static int dst_run(struct mig_dest *d, int lfd)
{
	int ret;

	mig_set_state(&d->c, MIG_SETUP);
	ret = dst_handshake(d, lfd);
	if (!ret)
		ret = dst_setup(d);
	if (!ret)
		ret = dst_dec_setup(d);
	progress_init(&d->c.progress, "dest", d->o.quiet);
	if (!ret)
		ret = dst_start_receiver(d);
	if (ret < 0)
		return ret;
	if (d->hello.mode == MIG_MODE_PRE || d->hello.mode == MIG_MODE_HYBRID)
		mig_set_state(&d->c, MIG_PRECOPY);
	/*
	 * Pure post-copy copies nothing in before the switchover, so arm
	 * userfaultfd now and keep it out of the downtime.
	 */
	if (d->hello.mode == MIG_MODE_POST)
		ret = dst_arm_postcopy(d);
	if (!ret)
		ret = dst_switchover(d);
	if (!ret)
		ret = dst_start_completion(d);
	return ret;
}

int mig_dest_listen(struct mig_dest **out, const struct mig_dest_opts *o)
{
	struct mig_dest *d = calloc(1, sizeof(*d));
	int ret;

	if (!d)
		return -ENOMEM;
	mig_common_init(&d->c, "incoming");
	d->o = *o;
	d->c.peer_timeout_ms = o->peer_timeout_ms ? o->peer_timeout_ms : MIG_PEER_TIMEOUT_DEFAULT_MS;
	d->c.recover_timeout_ms = o->recover_timeout_ms ? o->recover_timeout_ms :
				  MIG_RECOVER_TIMEOUT_DEFAULT_MS;
	d->uffd.fd = -1;
	d->lfd = d->lfd_next = d->lfd_extra = -1;
	d->quit_efd = eventfd(0, EFD_CLOEXEC);
	d->done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	lat_init(&d->lat);
	*out = d;
	ret = xsec_load(&d->c.sec, o->auth_key, o->tls_creds, true);
	if (!ret)
		ret = xsec_check_addr(d->c.sec, o->host, o->insecure, "incoming");
	if (!ret)
		ret = xsec_check_rdma(d->c.sec, o->transport, o->rdma_plaintext_pages, "incoming");
	if (ret < 0) {
		pr_err("incoming: %s", err_msg(ret));
		return ret;
	}
	d->lfd = xconn_tcp_listen(o->host, o->port);
	if (d->lfd < 0)
		return d->lfd;
	pr_info("waiting for a migration on %s:%u (%s)", o->host, o->port,
		d->c.sec ? (strcmp(xsec_kind(d->c.sec), "psk") ? "TLS, certificates" : "TLS, key") :
		"plaintext");
	return 0;
}

int mig_dest_run(struct mig_dest *d, struct vm **vm)
{
	int ret = dst_run(d, d->lfd);

	if (ret < 0) {
		bool failed = mig_get_state(&d->c) == MIG_FAILED;

		/*
		 * dst_run returns only before the commit: the guest never ran
		 * here.  A receiver thread that failed first said why; this
		 * side only saw the session end.
		 */
		pthread_mutex_lock(&d->c.lock);
		pr_err("incoming: migration failed before the commit: %s; nothing runs here, "
		       "the guest stays with the source",
		       failed && d->c.error[0] ? d->c.error : err_msg(ret));
		pthread_mutex_unlock(&d->c.lock);
		if (d->c.x && !failed)
			xport_ctl_error(d->c.x, ret, err_msg(ret));
		mig_fail(&d->c, ret);
		return ret;
	}
	d->vm_handed = true;
	*vm = d->c.vm;
	return 0;
}

int mig_dest_accept(struct mig_dest **out, const struct mig_dest_opts *o, struct vm **vm)
{
	int ret = mig_dest_listen(out, o);

	return ret < 0 ? ret : mig_dest_run(*out, vm);
}

/*
 * COMPLETE went out but the source never answered: it may be recovering
 * a link it saw break and will only learn the outcome by reconnecting.
 * Keep listening for it a while (bounded) before the process goes.
 */
static void dst_linger(struct mig_dest *d)
{
	uint64_t deadline = now_ns() + (d->c.peer_timeout_ms + 5000) * 1000000ull;
	struct timespec ts = { .tv_sec = deadline / 1000000000ull, .tv_nsec = deadline % 1000000000ull };
	bool waited = false;

	pthread_mutex_lock(&d->c.lock);
	while (d->complete_unacked && now_ns() < deadline) {
		if (!waited)
			pr_info("incoming: the source did not acknowledge the completion; waiting up to "
				"%u s for it to reconnect", d->c.peer_timeout_ms / 1000 + 5);
		waited = true;
		pthread_cond_timedwait(&d->c.cond, &d->c.lock, &ts);
	}
	pthread_mutex_unlock(&d->c.lock);
}

int mig_dest_finish(struct mig_dest *d, int timeout_s)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_s * 1000000000ull;
	struct timespec ts = { .tv_sec = deadline / 1000000000ull, .tv_nsec = deadline % 1000000000ull };
	int ret = 0;

	pthread_mutex_lock(&d->c.lock);
	while (d->c.state != MIG_COMPLETED && d->c.state != MIG_FAILED && !ret)
		ret = -pthread_cond_timedwait(&d->c.cond, &d->c.lock, &ts);
	pthread_mutex_unlock(&d->c.lock);
	if (ret)
		return err_set(-ETIMEDOUT, "the migration did not complete within %d s", timeout_s);
	ret = mig_get_state(&d->c) == MIG_COMPLETED ? 0 : -ECONNABORTED;
	dst_linger(d);
	return ret;
}

enum mig_state mig_dest_state(struct mig_dest *d)
{
	return mig_get_state(&d->c);
}

bool mig_dest_pages_missing(struct mig_dest *d)
{
	return d->uffd.registered && d->vm_handed && d->present_count < d->c.npages &&
	       !d->guest_exited;
}

void mig_dest_guest_exited(struct mig_dest *d, int status)
{
	if (!d->vm_handed || d->present_count >= d->c.npages)
		return;
	pthread_mutex_lock(&d->c.lock);
	d->guest_exited = true;
	pthread_cond_broadcast(&d->c.cond);
	pthread_mutex_unlock(&d->c.lock);
	dst_signal_done(d);
	pr_info("incoming: the guest exited (status %d) before its last %llu pages arrived; "
		"the migration ends here", status,
		(unsigned long long)(d->c.npages - d->present_count));
}

uint64_t mig_dest_pages_absent(struct mig_dest *d)
{
	return d->c.npages - d->present_count;
}

/* Why the destination holds the guest, and for how long yet (query-migrate). */
static void dst_query_hold(struct mig_dest *d, json_t *r, enum mig_state st)
{
	pthread_mutex_lock(&d->c.lock);
	if ((st == MIG_PAUSED || st == MIG_RECOVERING) && d->paused_at) {
		uint64_t spent = (now_ns() - d->paused_at) / 1000000;

		json_object_set_new(r, "paused_because", json_string(d->c.error));
		json_object_set_new(r, "recover_ms_left", json_integer(
			spent < d->c.recover_timeout_ms ? d->c.recover_timeout_ms - spent : 0));
	}
	if (st == MIG_FAILED || st == MIG_UNKNOWN)
		json_object_set_new(r, "error", json_string(d->c.error));
	pthread_mutex_unlock(&d->c.lock);
}

json_t *mig_dest_query(struct mig_dest *d)
{
	enum mig_state st = mig_dest_state(d);
	json_t *r = NULL;

	/* a copy: the completion thread replaces the record a second after completion */
	pthread_mutex_lock(&d->c.lock);
	if (st == MIG_COMPLETED && d->record)
		r = json_deep_copy(d->record);
	pthread_mutex_unlock(&d->c.lock);
	/* before the vCPU starts here the guest is still being built: pages only */
	if (!r && __atomic_load_n(&d->t_resume, __ATOMIC_ACQUIRE))
		r = dst_figures(d);
	if (!r)
		r = json_pack("{s:I, s:I}", "ram_pages", (json_int_t)d->c.npages,
			      "dst_pages_present", (json_int_t)d->present_count);
	json_object_set_new(r, "side", json_string("destination"));
	json_object_set_new(r, "status", json_string(mig_state_name(st)));
	dst_query_hold(d, r, st);
	return r;
}

void mig_dest_free(struct mig_dest *d)
{
	uint64_t one = 1;

	if (!d)
		return;
	d->closing = true;
	mig_fail(&d->c, -ECANCELED);  /* no-op once completed; wakes every waiter */
	if (write(d->quit_efd, &one, sizeof(one)) != sizeof(one))
		pr_debug("incoming: quit eventfd write failed");
	mig_keepalive_stop(&d->c);
	xport_shutdown(d->c.x);
	if (d->complete_started)
		pthread_join(d->complete_thread, NULL);
	if (d->fault_started)
		pthread_join(d->fault_thread, NULL);
	dst_join_receiver(d);
	if (d->rendezvous_started)
		pthread_join(d->rendezvous_thread, NULL);
	if (d->lfd >= 0)
		close(d->lfd);
	if (d->lfd_extra >= 0)
		close(d->lfd_extra);
	if (d->lfd_next >= 0)
		close(d->lfd_next);
	uffd_close(&d->uffd);
	mig_free_xports(&d->c);
	bitmap_free(&d->present);
	bitmap_free(&d->requested);
	bitmap_free(&d->claimed);
	free(d->fault_ns);
	free(d->huge_cnt);
	free(d->huge_data);
	lat_free(&d->lat);
	dst_dec_free(d);
	json_decref(d->record);
	close(d->quit_efd);
	close(d->done_efd);
	if (!d->vm_handed)
		vm_destroy(d->c.vm);
	mig_common_destroy(&d->c);
	free(d);
}
