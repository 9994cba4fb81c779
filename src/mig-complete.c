/*
 * mig-complete.c - the last step: the destination reports COMPLETE once
 * every page is present, the source answers with its statistics, and
 * each side writes the record (docs/metrics.md).
 *
 * Only COMPLETE lets the source release the guest: until then pages the
 * destination may still need exist only at the source.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mig.h"
#include "umig/beatgap.h"

/* --- source ---------------------------------------------------------------- */

static double dget(json_t *o, const char *k)
{
	return json_number_value(json_object_get(o, k));
}

static uint64_t src_wire(struct mig_source *s, enum xport_channel ch)
{
	return mig_bytes(&s->c, ch);
}

/*
 * The outcome for machines to read (exit codes collide with the guest's):
 * completed, failed-guest-here (the guest runs on at the source), lost,
 * outcome-unknown, or the state while it runs.  (L) held.
 */
static const char *src_status(struct mig_source *s)
{
	switch (s->c.state) {
	case MIG_FAILED: return s->resumed_remote || s->committed ? "lost" : "failed-guest-here";
	case MIG_UNKNOWN: return "outcome-unknown";
	default: return mig_state_name(s->c.state);
	}
}

/*
 * The guest-perceived figures (beatgap.h): the parts measured on this
 * host's clock and the destination's, composed.  The undisturbed rate is
 * the guest's progress over the second before the migration started.
 */
static void src_guest_figures(struct mig_source *s, json_t *r, bool post)
{
	const struct hb_stats *h = &s->hb_pause;
	struct beat_parts p = {
		.src_window_ms = h->window_max_gap_ns / 1e6,
		.before_pause_ms = h->last_beat_ns && h->pause_ns >= h->last_beat_ns ?
				   (h->pause_ns - h->last_beat_ns) / 1e6 : 0,
		.downtime_ms = s->t_resumed ? (s->t_resumed - s->t_pause) / 1e6 : 0,
		.resume_to_first_ms = dget(s->dest_stats, "resume_to_first_beat_ms"),
		.dst_window_ms = dget(s->dest_stats, "postcopy_max_beat_gap_ms"),
	};
	double before = heartbeat_work_rate(&s->c.vm->bus, s->t_start - MIN(s->t_start, 1000000000ull),
					    s->t_start);
	double during = dget(s->dest_stats, "postcopy_work_rate");
	struct beat_gaps g;

	beat_gaps(&p, &g);
	json_object_set_new(r, "blackout_ms", json_real(MAX(g.switch_gap_ms, p.dst_window_ms)));
	json_object_set_new(r, "blackout_before_pause_ms", json_real(p.before_pause_ms));
	json_object_set_new(r, "switch_gap_ms", json_real(g.switch_gap_ms));
	json_object_set_new(r, "max_beat_gap_ms", json_real(g.max_beat_gap_ms));
	json_object_set_new(r, "src_max_beat_gap_ms", json_real(p.src_window_ms));
	json_object_set_new(r, "guest_rate_before", json_real(before));
	if (post)
		json_object_set_new(r, "guest_rate_during_postcopy",
				    json_real(before > 0 ? during / before : 0));
}

json_t *src_record(struct mig_source *s)
{
	double downtime = s->t_resumed ? (s->t_resumed - s->t_pause) / 1e6 : 0;
	uint64_t end = s->t_end ? s->t_end : now_ns();
	bool post = src_post_mode(s);
	json_t *r;

	uint64_t wc = src_wire(s, XCH_CONTROL), wb = src_wire(s, XCH_BULK), wu = src_wire(s, XCH_URGENT);

	/* the byte counts take the lock themselves: read them first */
	pthread_mutex_lock(&s->c.lock);
	r = json_pack("{s:s, s:s, s:s, s:I, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
		      " s:I, s:b, s:I, s:I, s:s, s:s, s:I}",
		"mode", mig_mode_name(s->p.mode),
		"status", src_status(s),
		"state", mig_state_name(s->c.state),
		"ram_bytes", (json_int_t)s->c.vm->mem.size,
		"total_ms", (end - s->t_start) / 1e6,
		"downtime_ms", downtime,
		"precopy_ms", s->t_pause ? (s->t_pause - s->t_start) / 1e6 : (end - s->t_start) / 1e6,
		"wire_bytes", (json_int_t)(wc + wb + wu),
		"wire_bytes_control", (json_int_t)wc,
		"wire_bytes_bulk", (json_int_t)wb,
		"wire_bytes_urgent", (json_int_t)wu,
		"pages_bulk", (json_int_t)s->pages_bulk,
		"pages_urgent", (json_int_t)s->pages_urgent,
		"pages_zero", (json_int_t)s->pages_zero,
		"pages_resent", (json_int_t)s->pages_resent,
		"rounds", (json_int_t)s->rounds,
		"converged", s->converged,
		"pages_at_stop", (json_int_t)s->remaining_at_stop,
		"requests", (json_int_t)s->requests,
		"prepaging", post ? s->p.prepaging : "",
		"error", s->c.error,
		"precopy_bytes", (json_int_t)s->precopy_bytes);
	if (s->paused_since && (s->c.state == MIG_PAUSED || s->c.state == MIG_RECOVERING)) {
		uint64_t spent = (now_ns() - s->paused_since) / 1000000;

		json_object_set_new(r, "paused_because", json_string(s->paused_why));
		json_object_set_new(r, "recover_ms_left", json_integer(
			spent < s->c.recover_timeout_ms ? s->c.recover_timeout_ms - spent : 0));
	}
	pthread_mutex_unlock(&s->c.lock);
	src_guest_figures(s, r, post);
	json_object_set_new(r, "transport", json_string(s->c.x ? s->c.x->ops->name : s->p.transport));
	json_object_set_new(r, "streams", json_integer(s->c.x ? s->c.x->streams : s->p.streams));
	json_object_set_new(r, "ram_backing", json_string(mem_backing_name(s->c.vm ? s->c.vm->mem.backing : MEM_ANON)));
	json_object_set_new(r, "protocol_version", json_integer(s->c.x ? s->c.x->version : 0));
	json_object_set_new(r, "pages_dup", json_integer(s->pages_dup));
	json_object_set_new(r, "urgent_replies", json_integer((json_int_t)s->urgent_replies));
	json_object_set_new(r, "dirty_tracker",
			    json_string(s->dirty_tracker ? s->dirty_tracker : "none"));
	json_object_set_new(r, "security", json_string(xport_security(s->c.x)));
	json_object_set_new(r, "recoveries", json_integer(s->recoveries));
	json_object_set_new(r, "pages_lost_in_flight", json_integer(s->pages_lost_in_flight));
	json_object_set_new(r, "postcopy_paused_ms", json_integer(s->paused_ms));
	/* one-sided: guest RAM registered once per protection domain (one shared, as a rule) */
	if (s->c.x && (s->c.x->features & FEAT_RDMA_READ))
		json_object_set_new(r, "rdma_pinned_bytes", json_integer((json_int_t)s->c.x->ram_pinned));
	/* what serving the rest of the guest cost this process, after the switchover */
	json_object_set_new(r, "src_cpu_after_switchover_s",
			    json_real(s->cpu_resumed_us && s->cpu_end_us >= s->cpu_resumed_us ?
				      (s->cpu_end_us - s->cpu_resumed_us) / 1e6 : 0));
	src_enc_record(s, r);
	src_conv_record(s, r);
	src_downtime_record(s, r);
	if (s->unknown_why[0])
		json_object_set_new(r, "outcome_unknown_because", json_string(s->unknown_why));
	/* host CLOCK_MONOTONIC: lines the record up with heartbeat timelines */
	json_object_set_new(r, "t_start_ns", json_integer(s->t_start));
	json_object_set_new(r, "t_pause_ns", json_integer(s->t_pause));
	json_object_set_new(r, "t_end_ns", json_integer(end));
	/* the destination's figures: faults and their latency */
	static const char *const keys[] = {
		"faults", "fault_us_p50", "fault_us_p90", "fault_us_p99", "fault_us_max",
		"resume_to_first_beat_ms", "postcopy_max_beat_gap_ms", "postcopy_ms",
		"fault_us_hist", "dst_mark_wait_ms", "dst_load_ms", "dst_vcpu_start_ms",
		"dst_discard_ms", "dst_discard_pages", "dst_discard_early_held",
	};
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		json_t *v = s->dest_stats ? json_object_get(s->dest_stats, keys[i]) : NULL;

		if (v)
			json_object_set(r, keys[i], v);
		else if (i < 5 || (s->dest_stats && i < 9))
			json_object_set_new(r, keys[i], json_integer(0));
	}
	/* one-sided post-copy: what the destination pulled (absent otherwise); its RAM */
	static const char *const pulled[] = { "rdma_reads", "pull_bytes", "pull_mb_s",
					      "pages_read_in_place", "dst_rdma_pinned_bytes",
					      "dst_ram_backing",
					      "dst_placement" };

	for (size_t i = 0; i < ARRAY_SIZE(pulled); i++) {
		json_t *v = s->dest_stats ? json_object_get(s->dest_stats, pulled[i]) : NULL;

		if (v)
			json_object_set(r, pulled[i], v);
	}
	return r;
}

int src_complete(struct mig_source *s)
{
	bool post = src_post_mode(s);
	struct proto_msg m = { 0 };
	json_error_t jerr;
	char *txt;
	int ret = s->complete_early ? 1 : s->resolved_by_reconnect ? -ENOTCONN :
		  mig_ctl_expect(&s->c, &m, MSG_COMPLETE, "COMPLETE");

	if (ret == 1) {
		s->dest_stats = s->complete_early;
		s->complete_early = NULL;
		ret = 0;
	} else if (!ret) {
		s->dest_stats = json_loads((char *)m.payload, 0, &jerr);
		if (!s->dest_stats)
			pr_warn("migration: the destination's statistics are not JSON: %s", jerr.text);
	}
	if (s->dest_stats && json_object_get(s->dest_stats, "guest_exited_at_destination"))
		pr_info("migration: the guest exited at the destination (status %lld) before every "
			"page had arrived; the migration is over",
			(long long)json_integer_value(json_object_get(s->dest_stats,
								      "guest_exited_at_destination")));
	proto_msg_free(&m);
	/*
	 * Without post-copy the destination had every page before it ran the
	 * guest: COMPLETE only carries its figures, and losing it loses them,
	 * not the guest.
	 */
	if (ret < 0 && !post) {
		pr_warn("migration: the guest runs at the destination; its final figures did not "
			"arrive (%s)", err_msg(ret));
		ret = 0;
	}
	if (ret < 0)
		return ret;
	s->t_end = now_ns();
	s->cpu_end_us = cpu_self_us();
	mig_set_state(&s->c, MIG_COMPLETED);
	s->record = src_record(s);
	txt = json_dumps(s->record, JSON_COMPACT);
	/* the migration is complete either way: the statistics are a courtesy */
	if (!txt || xport_ctl_send(s->c.x, MSG_SRC_STATS, txt, strlen(txt)) < 0)
		pr_debug("migration: the final statistics did not reach the destination");
	free(txt);
	return 0;
}

/* --- destination ------------------------------------------------------------ */

json_t *dst_figures(struct mig_dest *d)
{
	struct hb_stats hb = { 0 };
	double first = 0, post_ms = d->t_complete > d->t_resume ? (d->t_complete - d->t_resume) / 1e6 : 0;
	uint64_t reads = d->reads_before + (d->c.x ? d->c.x->reads : 0);
	uint64_t rbytes = d->read_bytes_before + (d->c.x ? d->c.x->read_bytes : 0);
	json_t *fig;

	if (d->c.vm)
		heartbeat_stats(&d->c.vm->bus, &hb);
	if (hb.first_after_resume_ns && hb.first_after_resume_ns >= hb.resume_ns)
		first = (hb.first_after_resume_ns - hb.resume_ns) / 1e6;
	fig = json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:f, s:o}",
		"faults", (json_int_t)d->faults,
		"fault_us_p50", lat_percentile(&d->lat, 50),
		"fault_us_p90", lat_percentile(&d->lat, 90),
		"fault_us_p99", lat_percentile(&d->lat, 99),
		"fault_us_max", lat_percentile(&d->lat, 100),
		"resume_to_first_beat_ms", first,
		"postcopy_max_beat_gap_ms", hb.window_max_gap_ns / 1e6,
		"dst_pages_bulk", (json_int_t)d->pages_bulk,
		"dst_pages_urgent", (json_int_t)d->pages_urgent,
		"dst_pages_zero", (json_int_t)d->pages_zero,
		"dst_pages_decompressed", (json_int_t)d->pages_decoded,
		"dst_pages_delta", (json_int_t)d->pages_delta,
		"postcopy_ms", post_ms,
		"fault_us_hist", lat_histogram(&d->lat));
	if (fig)
		dst_downtime_figures(d, fig);
	/* the guest's progress while post-copy ran (work units per second) */
	if (fig && d->c.vm && d->t_complete > d->t_resume)
		json_object_set_new(fig, "postcopy_work_rate",
				    json_real(heartbeat_work_rate(&d->c.vm->bus, d->t_resume, d->t_complete)));
	if (fig && d->c.vm) {
		json_object_set_new(fig, "dst_ram_backing",
				    json_string(mem_backing_name(d->c.vm->mem.backing)));
		json_object_set_new(fig, "dst_placement",
				    json_string(!dst_postcopy_mode(d) ? "none" :
						d->place_continue ? "continue" : "copy"));
	}
	/* one-sided post-copy: what the destination pulled by RDMA READ */
	if (fig && d->c.x && (d->c.x->features & FEAT_RDMA_READ)) {
		json_object_set_new(fig, "rdma_reads", json_integer((json_int_t)reads));
		json_object_set_new(fig, "pull_bytes", json_integer((json_int_t)rbytes));
		json_object_set_new(fig, "pull_mb_s", json_real(post_ms > 0 ? rbytes / 1e3 / post_ms : 0));
		json_object_set_new(fig, "pages_read_in_place",
				    json_integer((json_int_t)atomic_load(&d->pages_in_place)));
		json_object_set_new(fig, "dst_rdma_pinned_bytes",
				    json_integer((json_int_t)d->c.x->ram_pinned));
	}
	return fig;
}

/* Wait on the context's condition for at most ms (CLOCK_MONOTONIC). */
static void dst_nap(struct mig_dest *d, unsigned ms)
{
	uint64_t t = now_ns() + ms * 1000000ull;
	struct timespec ts = { .tv_sec = t / 1000000000ull, .tv_nsec = t % 1000000000ull };

	pthread_mutex_lock(&d->c.lock);
	if (d->present_count < d->c.npages && d->c.state != MIG_FAILED && !d->guest_exited)
		pthread_cond_timedwait(&d->c.cond, &d->c.lock, &ts);
	pthread_mutex_unlock(&d->c.lock);
}

/*
 * Wait until every page is present.  In post-copy this thread also keeps
 * an ear on the control connection (the source's keepalives): a source
 * silent past the peer timeout pauses post-copy, and a pause longer than
 * the recover timeout loses the guest.
 */
static int dst_wait_complete(struct mig_dest *d)
{
	bool listen = dst_postcopy_mode(d) && (d->c.x->features & FEAT_KEEPALIVE);
	uint64_t last_rx = now_ns();
	struct proto_msg m = { 0 };
	int ret = 0;

	for (;;) {
		enum mig_state st = mig_get_state(&d->c);
		bool gone = __atomic_load_n(&d->guest_exited, __ATOMIC_ACQUIRE);
		uint64_t t = now_ns();

		/* a recovery in progress owns the threads; complete once it is over */
		if (d->present_count == d->c.npages && st != MIG_RECOVERING)
			break;
		/* the guest is gone: what is missing no longer matters (a recovery ends first) */
		if (gone && st != MIG_RECOVERING)
			break;
		if (st == MIG_FAILED) {
			ret = -ECONNABORTED;
			break;
		}
		if (st == MIG_PAUSED || st == MIG_RECOVERING) {
			if (d->present_count == d->c.npages || gone) {
				usleep(20000);   /* recovering: bounded by the recovery's own steps */
				continue;
			}
			if (d->paused_at && t - d->paused_at > d->c.recover_timeout_ms * 1000000ull) {
				ret = err_set(-ETIMEDOUT, "the source did not come back within %u s; %llu "
					      "pages were never received; the guest cannot continue",
					      d->c.recover_timeout_ms / 1000,
					      (unsigned long long)(d->c.npages - d->present_count));
				pr_err("incoming: %s", err_msg(ret));
				mig_fail(&d->c, ret);
				break;
			}
			last_rx = t;
			dst_nap(d, 100);
			continue;
		}
		if (!listen || st != MIG_POSTCOPY) {
			dst_nap(d, 100);
			continue;
		}
		/*
		 * Sleep until the source speaks or the last page lands (done_efd):
		 * a fixed receive step here once added up to 100 ms to every
		 * post-copy.  A frame is read only once its first bytes are here,
		 * so it gets the whole step; a TLS record read ahead of the one
		 * taken waits for the next keepalive, which comes well inside
		 * the peer timeout.
		 */
		struct pollfd p[2] = {
			{ .fd = xconn_fd(d->c.x->ctl), .events = POLLIN },
			{ .fd = d->done_efd, .events = POLLIN },
		};
		int n = poll(p, 2, 100);

		if (n > 0 && p[1].revents) {
			uint64_t v;

			/* drained: a stale wake-up (pages discarded since) costs one turn */
			if (read(d->done_efd, &v, sizeof(v)) < 0)
				pr_debug("incoming: completion eventfd read failed");
			continue;   /* every page is here, or the guest is gone: the top ends it */
		}
		ret = n > 0 && p[0].revents ? xport_ctl_recv(d->c.x, &m, 100) : -ETIMEDOUT;
		if (!ret) {
			last_rx = now_ns();
		} else if (ret != -ETIMEDOUT) {
			dst_pause(d, ret);
		} else if (t - last_rx > d->c.peer_timeout_ms * 1000000ull) {
			dst_pause(d, err_set(-ETIMEDOUT, "the source was silent for %.1f s",
					     (t - last_rx) / 1e9));
		}
		ret = 0;
	}
	proto_msg_free(&m);
	return ret;
}

/* Blackout needs the guest's first beat after resume: wait for it, bounded. */
static void dst_wait_first_beat(struct mig_dest *d)
{
	uint64_t deadline = now_ns() + 2000000000ull;
	struct hb_stats hb;

	for (;;) {
		heartbeat_stats(&d->c.vm->bus, &hb);
		if (hb.first_after_resume_ns || now_ns() >= deadline ||
		    vm_get_status(d->c.vm) != VM_RUNNING)
			return;
		usleep(1000);
	}
}

/*
 * max_beat_gap_ms runs to one second after completion: keep the window
 * open that long (less if the guest stops or umig exits), then add the
 * tail to the record and write it again.  The source's record, sent at
 * COMPLETE, cannot wait for it; docs/metrics.md says which covers what.
 */
static void dst_beat_tail(struct mig_dest *d)
{
	uint64_t until = d->t_complete + 1000000000ull;
	struct hb_stats hb;
	json_t *rec;

	while (now_ns() < until && !d->closing && vm_get_status(d->c.vm) == VM_RUNNING)
		usleep(10000);
	heartbeat_stats(&d->c.vm->bus, &hb);
	heartbeat_window(&d->c.vm->bus, false);
	rec = json_deep_copy(d->record);
	if (!rec)
		return;
	json_object_set_new(rec, "dst_max_beat_gap_ms", json_real(hb.window_max_gap_ns / 1e6));
	json_object_set_new(rec, "dst_tail_ms", json_real((MIN(now_ns(), until) - d->t_complete) / 1e6));
	json_object_set_new(rec, "max_beat_gap_ms",
			    json_real(MAX(dget(rec, "max_beat_gap_ms"), hb.window_max_gap_ns / 1e6)));
	pthread_mutex_lock(&d->c.lock);
	json_decref(d->record);
	d->record = rec;
	pthread_mutex_unlock(&d->c.lock);
	if (d->o.stats_path && mig_write_json(d->o.stats_path, rec) < 0)
		pr_err("%s", err_msg(-EIO));
}

static void *dst_complete_thread(void *arg)
{
	struct mig_dest *d = arg;
	struct proto_msg m = { 0 };
	json_t *fig;
	char *txt;
	int ret = dst_wait_complete(d);

	if (ret < 0)
		return NULL;
	d->t_complete = now_ns();
	dst_stop_fault_thread(d);
	dst_wait_first_beat(d);
	progress_end(&d->c.progress);
	fig = dst_figures(d);
	if (d->guest_exited)
		json_object_set_new(fig, "guest_exited_at_destination",
				    json_integer(d->c.vm->exit_code));
	txt = json_dumps(fig, JSON_COMPACT);
	json_decref(fig);
	ret = txt ? xport_ctl_send(d->c.x, MSG_COMPLETE, txt, strlen(txt)) : -ENOMEM;
	free(txt);
	if (!ret)
		ret = mig_ctl_recv(&d->c, &m, "the source's statistics");
	if (ret < 0 && dst_recovering_allowed(d)) {
		/*
		 * The source may be recovering a link it saw break: it learns
		 * that the migration completed when it reconnects (RECOVER is
		 * answered with COMPLETE), so the process waits a while for it.
		 */
		pthread_mutex_lock(&d->c.lock);
		d->complete_unacked = true;
		pthread_mutex_unlock(&d->c.lock);
	}
	if (!ret && m.type == MSG_SRC_STATS) {
		json_error_t jerr;

		d->record = json_loads((char *)m.payload, 0, &jerr);
	}
	proto_msg_free(&m);
	if (!d->record)
		d->record = dst_figures(d);
	mig_set_state(&d->c, MIG_COMPLETED);
	if (d->o.stats_path && mig_write_json(d->o.stats_path, d->record) < 0)
		pr_err("%s", err_msg(-EIO));
	dst_beat_tail(d);
	return NULL;
}

int dst_start_completion(struct mig_dest *d)
{
	if (pthread_create(&d->complete_thread, NULL, dst_complete_thread, d))
		return err_set(-EAGAIN, "cannot start the completion thread");
	d->complete_started = true;
	return 0;
}
