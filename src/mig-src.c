/*
 * mig-src.c - the source side of a migration: its context and the thread
 * that runs the steps in order (handshake, pre-copy, switchover,
 * post-copy, completion); each step lives in the file named for it.
 *
 * Until the destination reports RESUMED the source guest is the live one:
 * any failure before that stops dirty tracking, resumes the guest if the
 * engine paused it, and leaves it running untouched.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mig.h"

static int src_run(struct mig_source *s)
{
	bool pre = s->p.mode == MIG_MODE_PRE || s->p.mode == MIG_MODE_HYBRID;
	bool post = src_post_mode(s);
	int ret;

	mig_set_state(&s->c, MIG_SETUP);
	ret = src_handshake(s);
	if (!ret)
		ret = src_enc_setup(s);
	if (!ret && pre)
		ret = src_precopy(s);
	if (!ret)
		ret = src_switchover(s);
	if (!ret && post)
		ret = src_postcopy(s);   /* completion included */
	else if (!ret)
		ret = src_complete(s);
	return ret;
}

static void src_failed(struct mig_source *s, int ret)
{
	mig_fail(&s->c, ret);   /* keeps an earlier error, e.g. a cancel */
	src_throttle_stop(s);
	if (s->tracking)
		dirty_stop(&s->tracker);
	s->tracking = false;
	if (vm_get_status(s->c.vm) == VM_EXITED || vm_get_status(s->c.vm) == VM_FAILED) {
		pr_err("migration cancelled: the guest %s here (status %d) before the switchover; "
		       "nothing to migrate", vm_get_status(s->c.vm) == VM_EXITED ? "exited" : "failed",
		       s->c.vm->exit_code);
		src_abort_destination(s);
	} else if (!s->resumed_remote && s->paused_by_us && !s->committed) {
		/* before the commit the source guest is the live one */
		vm_resume(s->c.vm);
		pr_err("migration failed: %s; the guest keeps running here", s->c.error);
		src_abort_destination(s);
	} else if (s->resumed_remote) {
		pr_err("migration failed after the guest resumed at the destination: %s",
		       s->c.error);
	} else {
		pr_err("migration failed: %s; the guest keeps running here", s->c.error);
	}
	s->t_end = now_ns();
	s->record = src_record(s);
}

static void *mig_source_thread(void *arg)
{
	struct mig_source *s = arg;
	int ret;

	s->t_start = now_ns();
	/* the source's part of max_beat_gap_ms: start -> pause (mig-complete.c) */
	heartbeat_window(&s->c.vm->bus, true);
	err_clear();
	ret = src_run(s);
	if (ret >= 0)
		src_dirty_done(s);
	progress_end(&s->c.progress);
	if (ret < 0)
		src_failed(s, ret);
	else if (!s->p.quiet)
		pr_info("migration complete: %s, downtime %.3f ms, total %.1f ms",
			mig_mode_name(s->p.mode), json_real_value(json_object_get(s->record, "downtime_ms")),
			json_real_value(json_object_get(s->record, "total_ms")));
	if (s->record && s->p.stats_path[0] && mig_write_json(s->p.stats_path, s->record) < 0)
		pr_err("%s", err_msg(-EIO));
	mig_keepalive_stop(&s->c);
	/* breaking the connections ends the request server */
	xport_shutdown(s->c.x);
	if (s->urgent_started)
		pthread_join(s->urgent_thread, NULL);
	vm_notify(s->c.vm);
	return NULL;
}

static void src_free(struct mig_source *s)
{
	prepage_destroy(s->pp);
	json_decref(s->conv.rounds);
	src_enc_free(s);
	bitmap_free(&s->sent);
	free((void *)s->push_end);
	bitmap_free(&s->ever);
	bitmap_free(&s->populated);
	bitmap_free(&s->prereg);
	bitmap_free(&s->zeromap);
	bitmap_free(&s->dirty);
	bitmap_free(&s->discarded);
	mig_free_xports(&s->c);
	json_decref(s->dest_stats);
	json_decref(s->complete_early);
	json_decref(s->record);
	mig_common_destroy(&s->c);
	free(s);
}

int mig_params_check_vm(const struct mig_params *p, struct vm *vm)
{
	const char *backend = vcpu_backend_name(vm->vcpu);

	if (p->dirty_track == MIG_DIRTY_KVM_LOG && strcmp(backend, "kvm"))
		return err_set(-EINVAL, "--dirty-track kvm-log reads KVM's dirty log, and this "
			       "guest runs under %s, not KVM: use --dirty-track wp (or auto), or "
			       "run the guest with --vcpu kvm", backend);
	if (vm->mem.backing == MEM_THP && (p->mode == MIG_MODE_PRE || p->mode == MIG_MODE_HYBRID))
		return err_set(-ENOTSUP, "guest RAM is on transparent huge pages (--ram-backing thp), "
			       "and %s tracks the guest's writes, which write-protect tracking reports "
			       "per 2 MiB page there: migrate it in post or stop-copy mode, or run the "
			       "guest with --ram-backing anon", mig_mode_name(p->mode));
	if (p->streams > 1 && strcmp(p->transport, "tcp"))
		return err_set(-ENOTSUP, "--streams works over the tcp transport only; %s has one "
			       "bulk queue pair (drop --streams, or use --transport tcp)", p->transport);
	return 0;
}

int mig_source_start(struct mig_source **out, struct vm *vm, const struct mig_params *p)
{
	struct mig_source *s;
	int ret = mig_params_check_vm(p, vm);

	if (ret < 0)
		return ret;
	if (p->fallback_post && p->mode != MIG_MODE_PRE)
		return err_set(-EINVAL, "--fallback post applies to --mode pre (post-copy and "
			       "hybrid already end in post-copy)");
	if (vm_get_status(vm) != VM_RUNNING)
		return err_set(-EINVAL, "the guest is %s; only a running guest can migrate",
			       vm_status_name(vm_get_status(vm)));
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	mig_common_init(&s->c, "migration");
	s->p = *p;
	s->c.vm = vm;
	s->c.npages = mem_pages(&vm->mem);
	s->c.peer_timeout_ms = p->peer_timeout_ms ? p->peer_timeout_ms : MIG_PEER_TIMEOUT_DEFAULT_MS;
	s->c.recover_timeout_ms = p->recover_timeout_ms ? p->recover_timeout_ms :
				  MIG_RECOVER_TIMEOUT_DEFAULT_MS;
	s->tracker.uffd = s->tracker.pagemap_fd = -1;
	ret = xsec_load(&s->c.sec, p->auth_key, p->tls_creds, false);
	if (!ret)
		ret = xsec_check_addr(s->c.sec, p->host, p->insecure, "migration");
	if (!ret)
		ret = xsec_check_rdma(s->c.sec, p->transport, p->rdma_plaintext_pages, "migration");
	if (!ret)
		ret = bitmap_init(&s->sent, s->c.npages);
	if (!ret)
		ret = bitmap_init(&s->ever, s->c.npages);
	if (!ret)
		ret = bitmap_init(&s->populated, s->c.npages);
	if (!ret)
		ret = bitmap_init(&s->dirty, s->c.npages);
	if (!ret)
		ret = bitmap_init(&s->discarded, s->c.npages);
	if (!ret)
		ret = prepage_create(&s->pp, p->prepaging, s->c.npages, &s->sent);
	progress_init(&s->c.progress, "source", p->quiet);
	if (!ret && pthread_create(&s->thread, NULL, mig_source_thread, s))
		ret = -EAGAIN;
	if (ret < 0) {
		src_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

enum mig_state mig_source_state(struct mig_source *s)
{
	return mig_get_state(&s->c);
}

json_t *mig_source_query(struct mig_source *s)
{
	enum mig_state st = mig_source_state(s);

	if ((st == MIG_COMPLETED || st == MIG_FAILED) && s->record)
		return json_incref(s->record);
	return src_record(s);
}

int mig_source_resolve(struct mig_source *s, int owner)
{
	int ret = 0;

	if (owner != MIG_OWNER_SOURCE && owner != MIG_OWNER_DEST)
		return err_set(-EINVAL, "owner must be 'source' or 'destination'");
	pthread_mutex_lock(&s->c.lock);
	if (s->c.state != MIG_UNKNOWN)
		ret = err_set(-EINVAL, "the migration is %s, not outcome-unknown: there is nothing "
			      "to resolve", mig_state_name(s->c.state));
	else
		s->resolve_owner = owner;
	pthread_cond_broadcast(&s->c.cond);
	pthread_mutex_unlock(&s->c.lock);
	return ret;
}

int mig_source_cancel(struct mig_source *s)
{
	enum mig_state st;
	int ret = 0;

	pthread_mutex_lock(&s->c.lock);
	st = s->c.state;
	if (st == MIG_COMPLETED || st == MIG_FAILED)
		ret = err_set(-EINVAL, "the migration is already %s", mig_state_name(st));
	else if (s->committed)
		ret = err_set(-EINVAL, "the commit has left: the guest may run at the destination; "
			      "use migrate-resolve");
	else if (!s->c.error[0])
		snprintf(s->c.error, sizeof(s->c.error), "cancelled by the operator");
	pthread_mutex_unlock(&s->c.lock);
	if (!ret) {
		pr_info("migration: cancelled by the operator");
		xport_shutdown(s->c.x);
	}
	return ret;
}

int mig_source_retarget(struct mig_source *s, const char *host, uint16_t port)
{
	enum mig_state st;
	int ret = xsec_check_addr(s->c.sec, host, s->p.insecure, "migration");

	if (ret < 0)
		return ret;
	pthread_mutex_lock(&s->c.lock);
	st = s->c.state;
	if (st != MIG_PAUSED && st != MIG_RECOVERING && st != MIG_UNKNOWN)
		ret = err_set(-EINVAL, "the migration is %s: resume is for postcopy-paused, recovering "
			      "or outcome-unknown", mig_state_name(st));
	else if (snprintf(s->p.host, sizeof(s->p.host), "%s", host) >= (int)sizeof(s->p.host))
		ret = err_set(-EINVAL, "'to': the host name is too long");
	if (!ret) {
		s->p.port = port;
		s->retargets++;
		pthread_cond_broadcast(&s->c.cond);
	}
	pthread_mutex_unlock(&s->c.lock);
	if (!ret)
		pr_info("migration: resume: reconnecting to %s:%u from now on", host, port);
	return ret;
}

bool mig_source_lost(struct mig_source *s)
{
	return mig_source_state(s) == MIG_FAILED && s->resumed_remote;
}

void mig_source_destroy(struct mig_source *s)
{
	enum mig_state st;

	if (!s)
		return;
	/* still running (umig is exiting): break its connections so it fails fast */
	st = mig_source_state(s);
	s->cancel_recovery = true;
	if (st != MIG_COMPLETED && st != MIG_FAILED && !s->committed &&
	    vm_get_status(s->c.vm) == VM_EXITED && s->c.x) {
		char why[160];

		snprintf(why, sizeof(why), "the source's guest exited (status %d) during the "
			 "migration", s->c.vm->exit_code);
		xport_ctl_error(s->c.x, ECHILD, why);
		pthread_mutex_lock(&s->c.lock);
		if (!s->c.error[0])
			snprintf(s->c.error, sizeof(s->c.error), "the guest exited during the migration");
		pthread_mutex_unlock(&s->c.lock);
	}
	if (st != MIG_COMPLETED && st != MIG_FAILED)
		xport_shutdown(s->c.x);
	pthread_join(s->thread, NULL);
	src_free(s);
}
