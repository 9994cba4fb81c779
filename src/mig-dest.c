/*
 * mig-dest.c - the receiving end of a migration.
 *
 * Threads:
 *  - the caller of mig_dest_accept(): handshake, DISCARD and STATE on the
 *    control channel, then resume the guest;
 *  - dst_bulk_thread: places pushed pages (plain copies before the guest
 *    resumes, UFFDIO_COPY / UFFDIO_ZEROPAGE after);
 *  - dst_fault_thread (post-copy): polls userfaultfd, the urgent channel
 *    and a quit eventfd; asks the source for each missing page once and
 *    places the replies;
 *  - dst_complete_thread: waits until every page is present, unregisters
 *    userfaultfd, reports COMPLETE with the destination's figures and
 *    writes the statistics record.
 *
 * `present` has a bit per page that holds its final content here (or is
 * known to be zero); present_count reaching npages is completion.  A
 * page marked present but never populated (a zero page from pre-copy)
 * can still fault; the fault thread then places a zero page locally.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "umig/bitmap.h"
#include "umig/log.h"
#include "umig/migrate.h"
#include "umig/uffd.h"
#include "umig/vm.h"

#define DST_CONNECT_TIMEOUT_MS 10000

struct mig_dest {
	struct mig_dest_opts o;
	struct vm *vm;
	struct xport *x[XCH_COUNT];
	struct proto_hello hello;
	uint64_t npages;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum mig_state state;        /* (lock) */
	char error[512];             /* (lock) */
	int bulk_mark;               /* (lock) last MARK_PRECOPY_DONE / MARK_BULK_END seen */
	bool bulk_failed;            /* (lock) */
	bool uffd_ready;             /* (lock) post-copy placement may start */

	struct bitmap present, requested;
	_Atomic uint64_t present_count;
	uint64_t *fault_ns;          /* when each page's fault was read (0 = none) */
	struct uffd uffd;
	int quit_efd;
	pthread_t bulk_thread, fault_thread, complete_thread;
	bool bulk_started, fault_started, complete_started;
	struct lat_hist lat;
	struct mig_progress progress;

	/* figures */
	uint64_t t_resume, t_complete;
	_Atomic uint64_t faults, pages_bulk, pages_urgent, pages_zero;
	unsigned rounds;
	json_t *record;
	bool vm_handed;              /* the caller owns d->vm */
};

static void dst_set_state(struct mig_dest *d, enum mig_state to)
{
	pthread_mutex_lock(&d->lock);
	if (mig_state_ok(d->state, to)) {
		pr_debug("incoming: %s -> %s", mig_state_name(d->state), mig_state_name(to));
		d->state = to;
	}
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static void dst_fail(struct mig_dest *d, int err)
{
	pthread_mutex_lock(&d->lock);
	if (!d->error[0])
		snprintf(d->error, sizeof(d->error), "%s", err_msg(err));
	pthread_mutex_unlock(&d->lock);
	dst_set_state(d, MIG_FAILED);
}

/* Mark [pfn, pfn+n) present; record service latency for faulted pages. */
static void dst_mark_present(struct mig_dest *d, uint64_t pfn, uint64_t n)
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
		if (++d->present_count == d->npages) {
			pthread_mutex_lock(&d->lock);
			pthread_cond_broadcast(&d->cond);
			pthread_mutex_unlock(&d->lock);
		}
	}
}

/* --- bulk ------------------------------------------------------------------ */

static int dst_place_run(struct mig_dest *d, const struct proto_msg *m, bool post)
{
	struct proto_run r;
	const uint8_t *data = m->payload + 16;
	uint64_t off;
	long placed;
	int ret = proto_decode_run(m, d->npages, &r);

	if (ret < 0)
		return ret;
	off = r.pfn << PAGE_SHIFT;
	if (m->type == MSG_ZERO)
		d->pages_zero += r.n;
	else
		d->pages_bulk += r.n;
	if (!post) {
		/* the guest is not running here yet: plain memory operations */
		if (m->type == MSG_PAGES)
			memcpy(d->vm->mem.host + off, data, (size_t)r.n * PAGE_SIZE);
		else if (madvise(d->vm->mem.host + off, (size_t)r.n * PAGE_SIZE, MADV_DONTNEED))
			memset(d->vm->mem.host + off, 0, (size_t)r.n * PAGE_SIZE);
	} else {
		placed = m->type == MSG_PAGES ? uffd_copy(&d->uffd, off, data, r.n)
					      : uffd_zero(&d->uffd, off, r.n);
		if (placed < 0)
			return placed;
	}
	dst_mark_present(d, r.pfn, r.n);
	return 0;
}

static void dst_wait_uffd(struct mig_dest *d)
{
	pthread_mutex_lock(&d->lock);
	while (!d->uffd_ready && d->state != MIG_FAILED)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
}

static void *dst_bulk_thread(void *arg)
{
	struct mig_dest *d = arg;
	struct proto_msg m = { 0 };
	bool post = false;
	int ret = 0;

	while (ret == 0) {
		ret = proto_recv(d->x[XCH_BULK], &m);
		if (ret < 0)
			break;
		if (m.type == MSG_PAGES || m.type == MSG_ZERO) {
			ret = dst_place_run(d, &m, post);
			progress_update(&d->progress, post ? "postcopy" : "precopy", d->present_count,
					d->npages, d->x[XCH_BULK]->bytes_recv, d->faults, false);
		} else if (m.type == MSG_MARK) {
			struct rbuf r;
			uint32_t mark;

			rbuf_init(&r, m.payload, m.len);
			mark = rbuf_get_u32(&r);
			d->rounds = rbuf_get_u32(&r);
			if (mark == MARK_ROUND_END)
				continue;
			if (mark != MARK_PRECOPY_DONE && mark != MARK_BULK_END) {
				ret = err_set(-EPROTO, "bulk channel: unknown mark %u", mark);
				break;
			}
			pthread_mutex_lock(&d->lock);
			d->bulk_mark = mark;
			pthread_cond_broadcast(&d->cond);
			pthread_mutex_unlock(&d->lock);
			if (mark == MARK_BULK_END)
				break;
			/* post-copy pages may only be placed once userfaultfd is armed */
			dst_wait_uffd(d);
			post = true;
		} else {
			ret = err_set(-EPROTO, "bulk channel: unexpected message type %u", m.type);
		}
	}
	proto_msg_free(&m);
	if (ret < 0) {
		pthread_mutex_lock(&d->lock);
		d->bulk_failed = true;
		pthread_mutex_unlock(&d->lock);
		dst_fail(d, ret);
		pr_err("incoming: bulk channel: %s", err_msg(ret));
	}
	return NULL;
}

/* --- faults --------------------------------------------------------------------- */

static int dst_handle_fault(struct mig_dest *d, uint64_t addr)
{
	uint64_t off = addr - (uint64_t)d->vm->mem.host, pfn = off >> PAGE_SHIFT;
	uint8_t b[8];
	struct wbuf w = { .data = b, .cap = 8 };

	if (off >= d->vm->mem.size)
		return 0;
	if (bitmap_test(&d->present, pfn)) {
		/* known zero and never populated, or placed a moment ago */
		long r = uffd_zero(&d->uffd, off, 1);

		return r < 0 ? (int)r : 0;
	}
	if (bitmap_test_and_set(&d->requested, pfn))
		return 0;   /* asked already: never twice */
	d->fault_ns[pfn] = now_ns();
	d->faults++;
	wbuf_put_u64(&w, pfn);
	pr_debug("incoming: fault on page %llu, requesting", (unsigned long long)pfn);
	return proto_send(d->x[XCH_URGENT], MSG_REQ, b, 8);
}

static int dst_handle_reply(struct mig_dest *d, struct proto_msg *m)
{
	struct rbuf r;
	uint64_t pfn;
	uint32_t flags;
	long placed;

	if (m->type != MSG_PAGE)
		return err_set(-EPROTO, "urgent channel: unexpected message type %u", m->type);
	rbuf_init(&r, m->payload, m->len);
	pfn = rbuf_get_u64(&r);
	flags = rbuf_get_u32(&r);
	if (pfn >= d->npages || ((flags & PAGE_FLAG_ZERO) != 0) != (m->len == 16))
		return err_set(-EPROTO, "urgent channel: bad PAGE for page %llu",
			       (unsigned long long)pfn);
	placed = flags & PAGE_FLAG_ZERO ? uffd_zero(&d->uffd, pfn << PAGE_SHIFT, 1)
					: uffd_copy(&d->uffd, pfn << PAGE_SHIFT, m->payload + 16, 1);
	if (placed < 0)
		return placed;
	d->pages_urgent++;
	dst_mark_present(d, pfn, 1);
	return 0;
}

static void *dst_fault_thread(void *arg)
{
	struct mig_dest *d = arg;
	struct proto_msg m = { 0 };
	uint64_t addrs[64];
	int ret = 0;

	while (!ret) {
		struct pollfd p[3] = {
			{ .fd = d->uffd.fd, .events = POLLIN },
			{ .fd = xport_fd(d->x[XCH_URGENT]), .events = POLLIN },
			{ .fd = d->quit_efd, .events = POLLIN },
		};

		if (poll(p, 3, -1) < 0) {
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
		if (!ret && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			ret = proto_recv(d->x[XCH_URGENT], &m);
			if (!ret)
				ret = dst_handle_reply(d, &m);
		}
	}
	proto_msg_free(&m);
	if (ret < 0 && d->present_count < d->npages) {
		pr_err("incoming: post-copy fault path: %s", err_msg(ret));
		dst_fail(d, ret);
	}
	return NULL;
}

/* --- completion --------------------------------------------------------------- */

static json_t *dst_figures(struct mig_dest *d)
{
	struct hb_stats hb;
	double first = 0;

	heartbeat_stats(&d->vm->bus, &hb);
	if (hb.first_after_resume_ns && hb.first_after_resume_ns >= hb.resume_ns)
		first = (hb.first_after_resume_ns - hb.resume_ns) / 1e6;
	return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:f, s:o}",
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
		"postcopy_ms", d->t_complete > d->t_resume ? (d->t_complete - d->t_resume) / 1e6 : 0.0,
		"fault_us_hist", lat_histogram(&d->lat));
}

static int dst_wait_complete(struct mig_dest *d)
{
	pthread_mutex_lock(&d->lock);
	while (d->present_count < d->npages && d->state != MIG_FAILED)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
	return d->state == MIG_FAILED ? -ECONNABORTED : 0;
}

static void *dst_complete_thread(void *arg)
{
	struct mig_dest *d = arg;
	struct proto_msg m = { 0 };
	uint64_t one = 1, deadline;
	json_t *fig;
	char *txt;
	int ret = dst_wait_complete(d);

	if (ret < 0)
		return NULL;
	d->t_complete = now_ns();
	if (d->fault_started) {
		if (write(d->quit_efd, &one, sizeof(one)) != sizeof(one))
			pr_warn("incoming: cannot stop the fault thread");
		pthread_join(d->fault_thread, NULL);
		d->fault_started = false;
		uffd_unregister(&d->uffd);
		uffd_close(&d->uffd);
	}
	/* blackout needs the guest's first beat after resume: wait for it, bounded */
	deadline = now_ns() + 2000000000ull;
	for (struct hb_stats hb; heartbeat_stats(&d->vm->bus, &hb), !hb.first_after_resume_ns &&
	     now_ns() < deadline && vm_get_status(d->vm) == VM_RUNNING;)
		usleep(1000);
	heartbeat_window(&d->vm->bus, false);
	progress_end(&d->progress);
	fig = dst_figures(d);
	txt = json_dumps(fig, JSON_COMPACT);
	json_decref(fig);
	ret = txt ? proto_send(d->x[XCH_CONTROL], MSG_COMPLETE, txt, strlen(txt)) : -ENOMEM;
	free(txt);
	if (!ret)
		ret = proto_recv(d->x[XCH_CONTROL], &m);
	if (!ret && m.type == MSG_SRC_STATS) {
		json_error_t jerr;

		d->record = json_loads((char *)m.payload, 0, &jerr);
	}
	proto_msg_free(&m);
	if (!d->record)
		d->record = dst_figures(d);
	dst_set_state(d, MIG_COMPLETED);
	if (d->o.stats_path && mig_write_json(d->o.stats_path, d->record) < 0)
		pr_err("%s", err_msg(-EIO));
	return NULL;
}

/* --- accept ------------------------------------------------------------------- */

static int dst_handshake(struct mig_dest *d, int lfd)
{
	struct proto_msg m = { 0 };
	struct vm_config cfg = { .console_fd = d->o.console_fd, .backend = d->o.backend };
	enum xport_channel ch;
	uint64_t session, s2;
	uint8_t ack[8] = { 0 };
	int ret;

	ret = xport_tcp_accept(&d->x[XCH_CONTROL], lfd, XCH_CONTROL, -1);
	if (!ret)
		ret = proto_recv_greeting(d->x[XCH_CONTROL], &ch, &session);
	if (!ret && ch != XCH_CONTROL)
		ret = err_set(-EPROTO, "the first connection must be the control channel");
	if (!ret)
		ret = proto_recv(d->x[XCH_CONTROL], &m);
	if (!ret)
		ret = proto_decode_hello(&m, &d->hello);
	proto_msg_free(&m);
	if (ret < 0)
		goto refuse;
	cfg.mem_size = d->hello.ram_size;
	if (d->o.expect_ram && d->o.expect_ram != d->hello.ram_size) {
		ret = err_set(-EINVAL, "RAM size mismatch: the source has %llu MiB, this destination expects %llu MiB",
			      (unsigned long long)(d->hello.ram_size >> 20),
			      (unsigned long long)(d->o.expect_ram >> 20));
		goto refuse;
	}
	if (d->hello.mode == MIG_MODE_POST || d->hello.mode == MIG_MODE_HYBRID) {
		/* refuse now, while the source guest still runs untouched */
		struct uffd probe = { .fd = -1 };

		ret = uffd_open(&probe);
		uffd_close(&probe);
		if (ret < 0)
			goto refuse;
	}
	ret = vm_create(&d->vm, &cfg);
	if (ret < 0)
		goto refuse;
	d->npages = mem_pages(&d->vm->mem);
	ret = proto_send(d->x[XCH_CONTROL], MSG_HELLO_ACK, ack, 8);
	for (int c = XCH_BULK; !ret && c < XCH_COUNT; c++) {
		ret = xport_tcp_accept(&d->x[c], lfd, c, DST_CONNECT_TIMEOUT_MS);
		if (!ret)
			ret = proto_recv_greeting(d->x[c], &ch, &s2);
		if (!ret && (ch != (enum xport_channel)c || s2 != session))
			ret = err_set(-EPROTO, "expected the %s channel of this migration",
				      xport_channel_name(c));
		if (!ret)
			xport_tcp_set_channel(d->x[c], c);
	}
	return ret;
refuse:
	pr_err("incoming: refusing the migration: %s", err_msg(ret));
	if (d->x[XCH_CONTROL])
		proto_send_error(d->x[XCH_CONTROL], ret, err_msg(ret));
	return ret;
}

/* Wait for the bulk channel to reach the switchover mark. */
static int dst_wait_mark(struct mig_dest *d, int mark)
{
	int ret = 0;

	pthread_mutex_lock(&d->lock);
	while (d->bulk_mark != mark && !d->bulk_failed)
		pthread_cond_wait(&d->cond, &d->lock);
	if (d->bulk_failed)
		ret = err_set(-ECONNABORTED, "%s", d->error);
	pthread_mutex_unlock(&d->lock);
	return ret;
}

static int dst_discard(struct mig_dest *d, const struct proto_msg *m)
{
	struct rbuf r;
	int ret;

	rbuf_init(&r, m->payload, m->len);
	while (rbuf_left(&r)) {
		uint64_t pfn = rbuf_get_u64(&r);
		uint32_t n = rbuf_get_u32(&r);

		if (!n || pfn >= d->npages || n > d->npages - pfn)
			return err_set(-EPROTO, "DISCARD run %llu+%u outside guest RAM",
				       (unsigned long long)pfn, n);
		for (uint64_t i = pfn; i < pfn + n; i++)
			if (bitmap_test(&d->present, i)) {
				bitmap_clear(&d->present, i);
				d->present_count--;
			}
		if (madvise(d->vm->mem.host + (pfn << PAGE_SHIFT), (size_t)n * PAGE_SIZE, MADV_DONTNEED))
			return err_set(-errno, "discarding stale pages: %s", strerror(errno));
		/*
		 * No translated code may outlive the bytes it came from.  (The
		 * destination vCPU has not run yet, so this is cheap; it keeps
		 * discards correct if that ever changes.)
		 */
		ret = vcpu_flush_code(d->vm->vcpu, pfn << PAGE_SHIFT, (uint64_t)n * PAGE_SIZE);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Read control messages until STATE; apply discards on the way. */
static int dst_recv_state(struct mig_dest *d, struct proto_msg *state)
{
	for (;;) {
		int ret = proto_recv(d->x[XCH_CONTROL], state);

		if (ret < 0)
			return ret;
		if (state->type == MSG_STATE)
			return 0;
		if (state->type != MSG_DISCARD)
			return err_set(-EPROTO, "control channel: unexpected message type %u",
				       state->type);
		ret = dst_wait_mark(d, MARK_PRECOPY_DONE);
		if (!ret)
			ret = dst_discard(d, state);
		if (ret < 0)
			return ret;
	}
}

static int dst_arm_postcopy(struct mig_dest *d)
{
	int ret = uffd_open(&d->uffd);

	if (!ret)
		ret = uffd_register_missing(&d->uffd, d->vm->mem.host, d->vm->mem.size);
	if (!ret && pthread_create(&d->fault_thread, NULL, dst_fault_thread, d))
		ret = -EAGAIN;
	if (ret < 0)
		return ret;
	d->fault_started = true;
	pthread_mutex_lock(&d->lock);
	d->uffd_ready = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

static int dst_switchover(struct mig_dest *d)
{
	bool post = d->hello.mode == MIG_MODE_POST || d->hello.mode == MIG_MODE_HYBRID;
	struct proto_msg state = { 0 };
	struct rbuf r;
	int ret;

	ret = dst_recv_state(d, &state);
	if (!ret)
		ret = dst_wait_mark(d, post ? MARK_PRECOPY_DONE : MARK_BULK_END);
	dst_set_state(d, MIG_SWITCHOVER);
	if (!ret && post && !d->uffd_ready)
		ret = dst_arm_postcopy(d);
	pr_debug("incoming: post-copy armed");
	if (!ret) {
		rbuf_init(&r, state.payload, state.len);
		ret = vm_load_state(d->vm, &r);
	}
	pr_debug("incoming: state loaded");
	proto_msg_free(&state);
	if (!ret && !post && d->present_count != d->npages)
		ret = err_set(-EPROTO, "the source finished with %llu of %llu pages sent",
			      (unsigned long long)d->present_count, (unsigned long long)d->npages);
	if (ret < 0)
		return ret;
	heartbeat_window(&d->vm->bus, true);
	d->t_resume = now_ns();
	ret = vm_start(d->vm);
	if (!ret)
		ret = proto_send(d->x[XCH_CONTROL], MSG_RESUMED, NULL, 0);
	if (!ret && post)
		dst_set_state(d, MIG_POSTCOPY);
	return ret;
}

int mig_dest_accept(struct mig_dest **out, const struct mig_dest_opts *o, struct vm **vm)
{
	struct mig_dest *d = calloc(1, sizeof(*d));
	int lfd, ret;

	if (!d)
		return -ENOMEM;
	d->o = *o;
	d->uffd.fd = -1;
	d->quit_efd = eventfd(0, EFD_CLOEXEC);
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	lat_init(&d->lat);
	*out = d;
	lfd = xport_tcp_listen(o->host, o->port);
	if (lfd < 0)
		return lfd;
	pr_info("waiting for a migration on %s:%u", o->host, o->port);
	dst_set_state(d, MIG_SETUP);
	ret = dst_handshake(d, lfd);
	close(lfd);
	if (!ret)
		ret = bitmap_init(&d->present, d->npages);
	if (!ret)
		ret = bitmap_init(&d->requested, d->npages);
	if (!ret) {
		d->fault_ns = calloc(d->npages, sizeof(*d->fault_ns));
		ret = d->fault_ns ? 0 : -ENOMEM;
	}
	progress_init(&d->progress, "dest", o->quiet);
	if (!ret && pthread_create(&d->bulk_thread, NULL, dst_bulk_thread, d))
		ret = -EAGAIN;
	if (ret < 0)
		goto fail;
	d->bulk_started = true;
	if (d->hello.mode == MIG_MODE_PRE || d->hello.mode == MIG_MODE_HYBRID)
		dst_set_state(d, MIG_PRECOPY);
	/*
	 * Pure post-copy copies nothing in before the switchover, so arm
	 * userfaultfd now and keep it out of the downtime.
	 */
	if (d->hello.mode == MIG_MODE_POST) {
		ret = dst_arm_postcopy(d);
		if (ret < 0)
			goto fail;
	}
	ret = dst_switchover(d);
	if (!ret && pthread_create(&d->complete_thread, NULL, dst_complete_thread, d))
		ret = -EAGAIN;
	if (ret < 0)
		goto fail;
	d->complete_started = true;
	d->vm_handed = true;
	*vm = d->vm;
	return 0;
fail:
	pr_err("incoming: migration failed: %s", err_msg(ret));
	if (d->x[XCH_CONTROL] && d->state != MIG_FAILED)
		proto_send_error(d->x[XCH_CONTROL], ret, err_msg(ret));
	dst_fail(d, ret);
	return ret;
}

int mig_dest_finish(struct mig_dest *d, int timeout_s)
{
	struct timespec ts;
	int ret = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_s;
	pthread_mutex_lock(&d->lock);
	while (d->state != MIG_COMPLETED && d->state != MIG_FAILED && !ret)
		ret = -pthread_cond_timedwait(&d->cond, &d->lock, &ts);
	pthread_mutex_unlock(&d->lock);
	if (ret)
		return err_set(-ETIMEDOUT, "the migration did not complete within %d s", timeout_s);
	return d->state == MIG_COMPLETED ? 0 : -ECONNABORTED;
}

enum mig_state mig_dest_state(struct mig_dest *d)
{
	enum mig_state s;

	pthread_mutex_lock(&d->lock);
	s = d->state;
	pthread_mutex_unlock(&d->lock);
	return s;
}

json_t *mig_dest_query(struct mig_dest *d)
{
	json_t *r = d->record && mig_dest_state(d) == MIG_COMPLETED ?
		    json_incref(d->record) : dst_figures(d);

	json_object_set_new(r, "status", json_string(mig_state_name(mig_dest_state(d))));
	return r;
}

void mig_dest_free(struct mig_dest *d)
{
	uint64_t one = 1;

	if (!d)
		return;
	dst_fail(d, -ECANCELED);  /* no-op once completed; wakes every waiter */
	if (write(d->quit_efd, &one, sizeof(one)) != sizeof(one))
		pr_debug("incoming: quit eventfd write failed");
	for (int ch = 0; ch < XCH_COUNT; ch++)
		if (d->x[ch])
			shutdown(xport_fd(d->x[ch]), SHUT_RDWR);
	if (d->complete_started)
		pthread_join(d->complete_thread, NULL);
	if (d->fault_started)
		pthread_join(d->fault_thread, NULL);
	if (d->bulk_started)
		pthread_join(d->bulk_thread, NULL);
	uffd_close(&d->uffd);
	for (int ch = 0; ch < XCH_COUNT; ch++)
		xport_close(d->x[ch]);
	bitmap_free(&d->present);
	bitmap_free(&d->requested);
	free(d->fault_ns);
	lat_free(&d->lat);
	json_decref(d->record);
	close(d->quit_efd);
	if (!d->vm_handed)
		vm_destroy(d->vm);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d);
}
