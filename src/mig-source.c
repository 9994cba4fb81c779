/*
 * mig-source.c - the sending end of a migration.
 *
 * One thread runs the whole migration (mig_source_thread): connect the
 * three channels, handshake, pre-copy rounds if the mode has them,
 * switchover, then for post-copy and hybrid the bulk push in pre-paging
 * order while a second thread (src_urgent_thread) answers page requests.
 *
 * Exactly-once in post-copy: `sent` has a bit per page; whoever sets it
 * first (bulk push or urgent reply) sends the page, the other skips it.
 * A request for a page the bulk push already sent gets no reply: the page
 * is on its way and placing it wakes the faulting vCPU.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "umig/bitmap.h"
#include "umig/log.h"
#include "umig/migrate.h"
#include "umig/prepage.h"
#include "umig/uffd.h"
#include "umig/vm.h"

struct mig_source {
	struct mig_params p;
	struct vm *vm;
	pthread_t thread, urgent_thread;
	bool urgent_started;
	struct xport *x[XCH_COUNT];
	uint64_t npages;

	pthread_mutex_t lock;
	enum mig_state state;       /* (lock) */
	char error[512];            /* (lock) */
	bool resumed_remote;        /* the destination guest runs: no way back */

	struct bitmap sent;         /* post-copy: the page is at (or on its way to) dst */
	struct bitmap populated;    /* pages that may hold data (mem_scan_populated) */
	struct bitmap ever;         /* data for this page was sent at least once */
	struct dirty_tracker dirty;
	bool tracking;
	bool paused_by_us;
	struct prepage *pp;
	struct mig_progress progress;

	/* figures */
	uint64_t t_start, t_pause, t_resumed, t_end;
	uint64_t pages_bulk, pages_zero, pages_resent;
	_Atomic uint64_t pages_urgent, requests;
	unsigned rounds;
	bool converged;
	uint64_t remaining_at_stop;  /* pages sent during the downtime */
	uint64_t precopy_bytes;
	struct hb_stats hb_pause;
	json_t *dest_stats;
	json_t *record;
};

static void src_set_state(struct mig_source *s, enum mig_state to)
{
	pthread_mutex_lock(&s->lock);
	if (!mig_state_ok(s->state, to))
		pr_warn("migration: illegal transition %s -> %s ignored",
			mig_state_name(s->state), mig_state_name(to));
	else {
		pr_debug("migration: %s -> %s", mig_state_name(s->state), mig_state_name(to));
		s->state = to;
	}
	pthread_mutex_unlock(&s->lock);
}

static uint64_t wire_bytes(struct mig_source *s, enum xport_channel ch)
{
	return s->x[ch] ? s->x[ch]->bytes_sent + s->x[ch]->bytes_recv : 0;
}

/* --- sending pages -------------------------------------------------------- */

static void src_account_data(struct mig_source *s, uint64_t pfn, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (bitmap_test_and_set(&s->ever, pfn + i))
			s->pages_resent++;
}

static int src_send_run(struct mig_source *s, uint16_t type, uint64_t pfn, uint32_t n)
{
	uint8_t h[16];
	struct wbuf w = { .data = h, .cap = sizeof(h) };

	wbuf_put_u64(&w, pfn);
	wbuf_put_u32(&w, n);
	wbuf_put_u32(&w, 0);
	if (type == MSG_ZERO) {
		s->pages_zero += n;
		return proto_send(s->x[XCH_BULK], MSG_ZERO, h, 16);
	}
	s->pages_bulk += n;
	src_account_data(s, pfn, n);
	return proto_send2(s->x[XCH_BULK], MSG_PAGES, h, 16, mem_page(&s->vm->mem, pfn),
			   n * PAGE_SIZE);
}

/*
 * Accumulates consecutive pages into runs: non-zero pages into PAGES
 * frames of up to PROTO_RUN_MAX, zero pages into ZERO frames.
 */
struct run_acc {
	uint16_t type;
	uint64_t pfn;
	uint32_t n;
};

static int acc_flush(struct mig_source *s, struct run_acc *a)
{
	int ret = a->n ? src_send_run(s, a->type, a->pfn, a->n) : 0;

	a->n = 0;
	return ret;
}

/* Zero without reading it when the page was never populated. */
static bool src_page_zero(struct mig_source *s, uint64_t pfn)
{
	return !bitmap_test(&s->populated, pfn) || mem_page_is_zero(mem_page(&s->vm->mem, pfn));
}

/*
 * Refresh the populated map.  While the guest runs a page may become
 * populated after the scan: it is then written, so dirty tracking sends
 * it again in a later round.  On failure every page counts as populated.
 */
static void src_scan_populated(struct mig_source *s)
{
	bitmap_clear_all(&s->populated);
	if (mem_scan_populated(&s->vm->mem, &s->populated) < 0)
		bitmap_set_range(&s->populated, 0, s->npages);
}

static int acc_add(struct mig_source *s, struct run_acc *a, uint64_t pfn)
{
	uint16_t type = src_page_zero(s, pfn) ? MSG_ZERO : MSG_PAGES;
	int ret = 0;

	if (a->n && (a->type != type || a->pfn + a->n != pfn ||
		     (type == MSG_PAGES && a->n == PROTO_RUN_MAX) || a->n == UINT32_MAX))
		ret = acc_flush(s, a);
	if (!a->n) {
		a->type = type;
		a->pfn = pfn;
	}
	a->n++;
	return ret;
}

static int src_mark(struct mig_source *s, uint32_t mark, uint32_t round)
{
	uint8_t b[8];
	struct wbuf w = { .data = b, .cap = 8 };

	wbuf_put_u32(&w, mark);
	wbuf_put_u32(&w, round);
	return proto_send(s->x[XCH_BULK], MSG_MARK, b, 8);
}

/* Send every page set in `set` (NULL: every page).  Returns pages sent. */
static long src_send_set(struct mig_source *s, const struct bitmap *set, const char *phase)
{
	struct run_acc a = { 0 };
	long n = 0;
	int ret;

	for (uint64_t pfn = set ? bitmap_next_set(set, 0) : 0; pfn < s->npages;
	     pfn = set ? bitmap_next_set(set, pfn + 1) : pfn + 1) {
		/* a written page is populated, whatever an older scan said */
		if (set)
			bitmap_set(&s->populated, pfn);
		ret = acc_add(s, &a, pfn);
		if (ret < 0)
			return ret;
		n++;
		if (!(n & 1023))
			progress_update(&s->progress, phase, n, s->npages, wire_bytes(s, XCH_BULK), 0, false);
	}
	ret = acc_flush(s, &a);
	return ret < 0 ? ret : n;
}

/* --- connection and handshake ----------------------------------------------- */

static int src_connect(struct mig_source *s)
{
	struct proto_hello h = {
		.page_size = PAGE_SIZE, .mode = s->p.mode, .ram_size = s->vm->mem.size,
	};
	struct proto_msg m = { 0 };
	struct wbuf w;
	uint64_t session;
	char text[1100];
	int ret;

	if (getrandom(&session, sizeof(session), 0) != sizeof(session))
		session = now_realtime_ns();
	for (int ch = 0; ch < XCH_COUNT; ch++) {
		ret = xport_tcp_connect(&s->x[ch], s->p.host, s->p.port, ch, 5000);
		if (!ret)
			ret = proto_send_greeting(s->x[ch], session);
		if (ret < 0)
			return ret;
		if (ch == XCH_CONTROL) {
			/* handshake before opening the other channels */
			wbuf_init(&w);
			proto_encode_hello(&w, &h);
			ret = w.err ? w.err : proto_send(s->x[ch], MSG_HELLO, w.data, w.len);
			wbuf_free(&w);
			if (!ret)
				ret = proto_recv(s->x[ch], &m);
			if (!ret && m.type == MSG_ERROR) {
				proto_error_text(&m, text, sizeof(text));
				ret = err_set(-ECONNREFUSED, "the destination refused: %s", text);
			} else if (!ret && m.type != MSG_HELLO_ACK) {
				ret = err_set(-EPROTO, "expected HELLO_ACK, got message type %u", m.type);
			}
			proto_msg_free(&m);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}

/* Read one control message, turning ERROR into a failure with its text. */
static int src_expect(struct mig_source *s, struct proto_msg *m, uint16_t type)
{
	char text[1100];
	int ret = proto_recv(s->x[XCH_CONTROL], m);

	if (ret < 0)
		return err_set(ret, "waiting for the destination: %s", err_msg(ret));
	if (m->type == MSG_ERROR) {
		proto_error_text(m, text, sizeof(text));
		return err_set(-ECONNABORTED, "the destination failed: %s", text);
	}
	if (m->type != type)
		return err_set(-EPROTO, "expected message type %u, got %u", type, m->type);
	return 0;
}

/* --- pre-copy ------------------------------------------------------------------ */

static int src_precopy(struct mig_source *s, struct bitmap *dirty)
{
	double bw = 0;  /* bytes per second over the last round */
	long n;
	int ret;

	src_set_state(s, MIG_PRECOPY);
	for (s->rounds = 1;; s->rounds++) {
		uint64_t t0 = now_ns(), b0 = wire_bytes(s, XCH_BULK);
		uint64_t ndirty = 0;

		if (s->rounds > 1) {
			bitmap_clear_all(dirty);
			n = dirty_collect(&s->dirty, dirty);
			if (n < 0)
				return n;
			ndirty = n;
			/* converged: what is left fits the downtime limit */
			if (bw > 0 && ndirty * PAGE_SIZE / bw * 1000 <= s->p.downtime_limit_ms) {
				s->converged = true;
				return 0;
			}
			if (s->rounds > s->p.max_rounds || s->p.mode == MIG_MODE_HYBRID)
				return 0;
		}
		if (s->rounds == 1)
			src_scan_populated(s);
		n = src_send_set(s, s->rounds > 1 ? dirty : NULL, "precopy");
		if (n < 0)
			return n;
		ret = src_mark(s, MARK_ROUND_END, s->rounds);
		if (!ret)
			ret = xport_flush(s->x[XCH_BULK]);
		if (ret < 0)
			return ret;
		bw = (wire_bytes(s, XCH_BULK) - b0) / ((now_ns() - t0) / 1e9 + 1e-9);
		pr_debug("migration: round %u sent %ld pages (%llu dirty), %.0f MB/s", s->rounds, n,
			 (unsigned long long)ndirty, bw / 1e6);
		if (s->p.mode == MIG_MODE_HYBRID) {
			/* one full round, then straight to switchover */
			return 0;
		}
	}
}

/* --- post-copy ----------------------------------------------------------------- */

static void *src_urgent_thread(void *arg)
{
	struct mig_source *s = arg;
	struct xport *x = s->x[XCH_URGENT];
	struct proto_msg m = { 0 };

	for (;;) {
		uint8_t h[16];
		struct wbuf w = { .data = h, .cap = sizeof(h) };
		struct rbuf r;
		uint64_t pfn;
		void *page;
		bool zero;

		if (proto_recv(x, &m) < 0 || m.type != MSG_REQ)
			break;
		rbuf_init(&r, m.payload, m.len);
		pfn = rbuf_get_u64(&r);
		if (pfn >= s->npages) {
			pr_err("migration: the destination requested page %llu of %llu",
			       (unsigned long long)pfn, (unsigned long long)s->npages);
			break;
		}
		s->requests++;
		prepage_fault(s->pp, pfn);
		if (bitmap_test_and_set(&s->sent, pfn))
			continue;   /* the bulk push sent it already */
		page = mem_page(&s->vm->mem, pfn);
		zero = src_page_zero(s, pfn);
		wbuf_put_u64(&w, pfn);
		wbuf_put_u32(&w, zero ? PAGE_FLAG_ZERO : 0);
		wbuf_put_u32(&w, 0);
		if (!zero && bitmap_test_and_set(&s->ever, pfn))
			s->pages_resent++;
		if (proto_send2(x, MSG_PAGE, h, 16, zero ? NULL : page, zero ? 0 : PAGE_SIZE) < 0)
			break;
		s->pages_urgent++;
		pr_debug("migration: urgent page %llu", (unsigned long long)pfn);
	}
	proto_msg_free(&m);
	return NULL;
}

static int src_postcopy_push(struct mig_source *s)
{
	struct run_acc a = { 0 };
	uint64_t pushed = 0, pfn;
	int ret;

	while ((pfn = prepage_next(s->pp)) < s->npages) {
		if (bitmap_test_and_set(&s->sent, pfn))
			continue;
		ret = acc_add(s, &a, pfn);
		if (ret < 0)
			return ret;
		/*
		 * A page in an open run is marked sent but not yet on the wire,
		 * and a fault on it waits for the run: keep runs short (a zero
		 * run once grew over the whole untouched half of RAM, and one
		 * fault waited 2.3 s for it).
		 */
		if (a.n >= (a.type == MSG_PAGES ? 16 : 256))
			ret = acc_flush(s, &a);
		if (ret < 0)
			return ret;
		if (!(++pushed & 1023))
			progress_update(&s->progress, "postcopy", bitmap_count(&s->sent), s->npages,
					wire_bytes(s, XCH_BULK), s->requests, false);
	}
	ret = acc_flush(s, &a);
	if (!ret)
		ret = src_mark(s, MARK_BULK_END, 0);
	if (!ret)
		ret = xport_flush(s->x[XCH_BULK]);
	return ret;
}

/* --- switchover ---------------------------------------------------------------- */

static int src_send_discards(struct mig_source *s, struct bitmap *dirty)
{
	struct wbuf w;
	int ret = 0;

	wbuf_init(&w);
	for (uint64_t pfn = bitmap_next_set(dirty, 0); pfn < s->npages && !ret;) {
		uint64_t end = bitmap_next_clear(dirty, pfn);

		wbuf_put_u64(&w, pfn);
		wbuf_put_u32(&w, end - pfn);
		if (w.len >= 12 * 65536)
			ret = proto_send(s->x[XCH_CONTROL], MSG_DISCARD, w.data, w.len), wbuf_reset(&w);
		pfn = end < s->npages ? bitmap_next_set(dirty, end) : s->npages;
	}
	if (!ret && w.len)
		ret = proto_send(s->x[XCH_CONTROL], MSG_DISCARD, w.data, w.len);
	ret = ret ? ret : w.err;
	wbuf_free(&w);
	return ret;
}

/* Stop the guest and send what the destination needs to resume it. */
static int src_switchover(struct mig_source *s, struct bitmap *dirty)
{
	struct proto_msg m = { 0 };
	struct wbuf state;
	long n = 0;
	int ret;

	s->t_pause = now_ns();
	ret = vm_pause(s->vm);
	if (ret < 0)
		return ret;
	s->paused_by_us = true;
	src_set_state(s, MIG_SWITCHOVER);
	heartbeat_stats(&s->vm->bus, &s->hb_pause);
	if (s->tracking) {
		/*
		 * Add to, never clear, `dirty`: it still holds the set pre-copy
		 * collected to decide it had converged, which was not sent.
		 */
		n = dirty_collect(&s->dirty, dirty);
		dirty_stop(&s->dirty);
		s->tracking = false;
		if (n < 0)
			return n;
	}
	switch (s->p.mode) {
	case MIG_MODE_STOPCOPY:
		src_scan_populated(s);
		n = src_send_set(s, NULL, "stop-copy");
		break;
	case MIG_MODE_PRE:
		n = src_send_set(s, dirty, "stop-copy");
		break;
	case MIG_MODE_HYBRID:
		/* everything went in round 1; what was written since is stale there */
		bitmap_set_range(&s->sent, 0, s->npages);
		for (uint64_t p = bitmap_next_set(dirty, 0); p < s->npages; p = bitmap_next_set(dirty, p + 1))
			bitmap_clear(&s->sent, p);
		ret = src_send_discards(s, dirty);
		if (ret < 0)
			return ret;
		n = 0;
		break;
	case MIG_MODE_POST:
		n = 0;
		break;
	}
	if (n < 0)
		return n;
	s->remaining_at_stop = n;
	s->precopy_bytes = wire_bytes(s, XCH_BULK);
	ret = src_mark(s, s->p.mode == MIG_MODE_POST || s->p.mode == MIG_MODE_HYBRID ?
		       MARK_PRECOPY_DONE : MARK_BULK_END, s->rounds);
	if (!ret)
		ret = xport_flush(s->x[XCH_BULK]);
	if (ret < 0)
		return ret;
	wbuf_init(&state);
	ret = vm_save_state(s->vm, &state);
	if (!ret)
		ret = proto_send(s->x[XCH_CONTROL], MSG_STATE, state.data, state.len);
	wbuf_free(&state);
	if (!ret)
		ret = src_expect(s, &m, MSG_RESUMED);
	proto_msg_free(&m);
	if (ret < 0)
		return ret;
	s->t_resumed = now_ns();
	s->resumed_remote = true;
	return 0;
}

/* --- the record ----------------------------------------------------------------- */

static double dget(json_t *o, const char *k)
{
	return json_number_value(json_object_get(o, k));
}

static json_t *src_record(struct mig_source *s)
{
	double downtime = s->t_resumed ? (s->t_resumed - s->t_pause) / 1e6 : 0;
	double gap_before = s->hb_pause.last_beat_ns && s->hb_pause.pause_ns >= s->hb_pause.last_beat_ns ?
			    (s->hb_pause.pause_ns - s->hb_pause.last_beat_ns) / 1e6 : 0;
	double switch_gap = gap_before + downtime + dget(s->dest_stats, "resume_to_first_beat_ms");
	double window_gap = dget(s->dest_stats, "postcopy_max_beat_gap_ms");
	uint64_t end = s->t_end ? s->t_end : now_ns();
	json_t *r;

	pthread_mutex_lock(&s->lock);
	r = json_pack("{s:s, s:s, s:I, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
		      " s:I, s:b, s:I, s:I, s:s, s:s, s:I}",
		"mode", mig_mode_name(s->p.mode),
		"status", mig_state_name(s->state),
		"ram_bytes", (json_int_t)s->vm->mem.size,
		"total_ms", (end - s->t_start) / 1e6,
		"downtime_ms", downtime,
		"blackout_ms", MAX(switch_gap, window_gap),
		"precopy_ms", s->t_pause ? (s->t_pause - s->t_start) / 1e6 : (end - s->t_start) / 1e6,
		"wire_bytes", (json_int_t)(wire_bytes(s, XCH_CONTROL) + wire_bytes(s, XCH_BULK) +
					   wire_bytes(s, XCH_URGENT)),
		"wire_bytes_control", (json_int_t)wire_bytes(s, XCH_CONTROL),
		"wire_bytes_bulk", (json_int_t)wire_bytes(s, XCH_BULK),
		"wire_bytes_urgent", (json_int_t)wire_bytes(s, XCH_URGENT),
		"pages_bulk", (json_int_t)s->pages_bulk,
		"pages_urgent", (json_int_t)s->pages_urgent,
		"pages_zero", (json_int_t)s->pages_zero,
		"pages_resent", (json_int_t)s->pages_resent,
		"rounds", (json_int_t)s->rounds,
		"converged", s->converged,
		"pages_at_stop", (json_int_t)s->remaining_at_stop,
		"requests", (json_int_t)s->requests,
		"prepaging", s->p.mode == MIG_MODE_POST || s->p.mode == MIG_MODE_HYBRID ?
			     s->p.prepaging : "",
		"error", s->error,
		"precopy_bytes", (json_int_t)s->precopy_bytes);
	pthread_mutex_unlock(&s->lock);
	json_object_set_new(r, "blackout_before_pause_ms", json_real(gap_before));
	/* host CLOCK_MONOTONIC: lines the record up with heartbeat timelines */
	json_object_set_new(r, "t_start_ns", json_integer(s->t_start));
	json_object_set_new(r, "t_pause_ns", json_integer(s->t_pause));
	json_object_set_new(r, "t_end_ns", json_integer(end));
	/* the destination's figures: faults and their latency */
	if (s->dest_stats) {
		static const char *const keys[] = {
			"faults", "fault_us_p50", "fault_us_p90", "fault_us_p99", "fault_us_max",
			"resume_to_first_beat_ms", "postcopy_max_beat_gap_ms", "postcopy_ms",
			"fault_us_hist",
		};

		for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
			json_t *v = json_object_get(s->dest_stats, keys[i]);

			json_object_set(r, keys[i], v ? v : json_integer(0));
		}
	} else {
		json_object_set_new(r, "faults", json_integer(0));
		json_object_set_new(r, "fault_us_p50", json_integer(0));
		json_object_set_new(r, "fault_us_p90", json_integer(0));
		json_object_set_new(r, "fault_us_p99", json_integer(0));
		json_object_set_new(r, "fault_us_max", json_integer(0));
	}
	return r;
}

/* --- the migration thread -------------------------------------------------- */

static int src_run(struct mig_source *s, struct bitmap *dirty)
{
	struct proto_msg m = { 0 };
	json_error_t jerr;
	char *txt;
	int ret;

	src_set_state(s, MIG_SETUP);
	ret = src_connect(s);
	if (ret < 0)
		return ret;
	if (s->p.mode == MIG_MODE_PRE || s->p.mode == MIG_MODE_HYBRID) {
		ret = dirty_start(&s->dirty, s->vm->mem.host, s->vm->mem.size);
		if (ret < 0)
			return ret;
		s->tracking = true;
		ret = src_precopy(s, dirty);
		if (ret < 0)
			return ret;
	}
	ret = src_switchover(s, dirty);
	if (ret < 0)
		return ret;
	if (s->p.mode == MIG_MODE_POST || s->p.mode == MIG_MODE_HYBRID) {
		/*
		 * The guest is stopped here for good, so the map stays true;
		 * scanning after RESUMED keeps it out of the downtime.
		 */
		src_scan_populated(s);
		src_set_state(s, MIG_POSTCOPY);
		if (pthread_create(&s->urgent_thread, NULL, src_urgent_thread, s))
			return err_set(-EAGAIN, "cannot start the urgent thread");
		s->urgent_started = true;
		ret = src_postcopy_push(s);
		if (ret < 0)
			return ret;
	}
	ret = src_expect(s, &m, MSG_COMPLETE);
	if (!ret) {
		s->dest_stats = json_loads((char *)m.payload, 0, &jerr);
		if (!s->dest_stats)
			pr_warn("migration: the destination's statistics are not JSON: %s", jerr.text);
	}
	proto_msg_free(&m);
	if (ret < 0)
		return ret;
	s->t_end = now_ns();
	src_set_state(s, MIG_COMPLETED);
	s->record = src_record(s);
	txt = json_dumps(s->record, JSON_COMPACT);
	ret = txt ? proto_send(s->x[XCH_CONTROL], MSG_SRC_STATS, txt, strlen(txt)) : -ENOMEM;
	free(txt);
	return ret < 0 ? 0 : 0;  /* the migration is complete either way */
}

static void *mig_source_thread(void *arg)
{
	struct mig_source *s = arg;
	struct bitmap dirty = { 0 };
	int ret;

	s->t_start = now_ns();
	err_clear();
	ret = bitmap_init(&dirty, s->npages);
	if (!ret)
		ret = src_run(s, &dirty);
	progress_end(&s->progress);
	if (ret < 0) {
		pthread_mutex_lock(&s->lock);
		snprintf(s->error, sizeof(s->error), "%s", err_msg(ret));
		pthread_mutex_unlock(&s->lock);
		if (s->tracking)
			dirty_stop(&s->dirty);
		s->tracking = false;
		if (!s->resumed_remote && s->paused_by_us) {
			/* before switchover completed the source guest is the live one */
			vm_resume(s->vm);
			pr_err("migration failed: %s; the guest keeps running here", s->error);
		} else if (s->resumed_remote) {
			pr_err("migration failed after the guest resumed at the destination: %s",
			       s->error);
		} else {
			pr_err("migration failed: %s; the guest keeps running here", s->error);
		}
		src_set_state(s, MIG_FAILED);
		s->t_end = now_ns();
		s->record = src_record(s);
	} else if (!s->p.quiet) {
		pr_info("migration complete: %s, downtime %.3f ms, total %.1f ms",
			mig_mode_name(s->p.mode), json_real_value(json_object_get(s->record, "downtime_ms")),
			json_real_value(json_object_get(s->record, "total_ms")));
	}
	if (s->record && s->p.stats_path[0] && mig_write_json(s->p.stats_path, s->record) < 0)
		pr_err("%s", err_msg(-EIO));
	/* closing the urgent channel ends the urgent thread */
	if (s->x[XCH_URGENT])
		shutdown(xport_fd(s->x[XCH_URGENT]), SHUT_RDWR);
	if (s->urgent_started)
		pthread_join(s->urgent_thread, NULL);
	for (int ch = 0; ch < XCH_COUNT; ch++) {
		xport_close(s->x[ch]);
		s->x[ch] = NULL;
	}
	bitmap_free(&dirty);
	vm_notify(s->vm);
	return NULL;
}

int mig_source_start(struct mig_source **out, struct vm *vm, const struct mig_params *p)
{
	struct mig_source *s;
	int ret;

	if (vm_get_status(vm) != VM_RUNNING)
		return err_set(-EINVAL, "the guest is %s; only a running guest can migrate",
			       vm_status_name(vm_get_status(vm)));
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->p = *p;
	s->vm = vm;
	s->npages = mem_pages(&vm->mem);
	s->dirty.uffd = s->dirty.pagemap_fd = -1;
	pthread_mutex_init(&s->lock, NULL);
	ret = bitmap_init(&s->sent, s->npages);
	if (!ret)
		ret = bitmap_init(&s->ever, s->npages);
	if (!ret)
		ret = bitmap_init(&s->populated, s->npages);
	if (!ret)
		ret = prepage_create(&s->pp, p->prepaging, s->npages, &s->sent);
	progress_init(&s->progress, "source", p->quiet);
	if (!ret && pthread_create(&s->thread, NULL, mig_source_thread, s))
		ret = -EAGAIN;
	if (ret < 0) {
		prepage_destroy(s->pp);
		bitmap_free(&s->sent);
		bitmap_free(&s->ever);
		bitmap_free(&s->populated);
		free(s);
		return ret;
	}
	*out = s;
	return 0;
}

enum mig_state mig_source_state(struct mig_source *s)
{
	enum mig_state st;

	pthread_mutex_lock(&s->lock);
	st = s->state;
	pthread_mutex_unlock(&s->lock);
	return st;
}

json_t *mig_source_query(struct mig_source *s)
{
	enum mig_state st = mig_source_state(s);

	if ((st == MIG_COMPLETED || st == MIG_FAILED) && s->record)
		return json_incref(s->record);
	return src_record(s);
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
	if (st != MIG_COMPLETED && st != MIG_FAILED)
		for (int ch = 0; ch < XCH_COUNT; ch++)
			if (s->x[ch])
				shutdown(xport_fd(s->x[ch]), SHUT_RDWR);
	pthread_join(s->thread, NULL);
	prepage_destroy(s->pp);
	bitmap_free(&s->sent);
	bitmap_free(&s->ever);
	bitmap_free(&s->populated);
	json_decref(s->dest_stats);
	json_decref(s->record);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
