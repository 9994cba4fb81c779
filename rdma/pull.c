/*
 * pull.c - one-sided post-copy over RDMA READ (FEAT_RDMA_READ,
 * docs/rdma.md "One-sided post-copy").
 *
 * Source: at handshake guest RAM is registered for remote READ on both
 * queue pairs (RLIMIT_MEMLOCK raised to cover it when umig may), and
 * RDMA_MR on control tells the destination where it lies and its keys;
 * after that the source's CPU takes no part in moving a page.
 *
 * Destination: a fault becomes one READ on the urgent queue pair (its
 * completion is reaped by the fault thread like a reply), and a
 * prefetch thread keeps at most RDMA_PULL_WINDOW pages in flight on the
 * bulk queue pair, in the order of a pre-paging policy that sees every
 * fault (prefetch.c).  The prefetch starts once the source's zero map has
 * arrived (its ZERO runs, then MARK_BULK_END on bulk), so that zero pages
 * never travel; the mark is held back from the engine until every page
 * was READ, and then handed on, so the bulk receiver ends as over TCP.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "prefetch.h"
#include "rdma.h"
#include "umig/buf.h"
#include "umig/log.h"
#include "umig/util.h"

#define RDMA_MR_LEN 48

static struct rdma_pages *rp(struct xport *x)
{
	return x->priv;
}

/* --- source ------------------------------------------------------------------- */

/* Pinning needs RLIMIT_MEMLOCK >= what is registered (guest RAM per protection domain). */
static int memlock_cover(uint64_t need)
{
	struct rlimit r;

	if (getrlimit(RLIMIT_MEMLOCK, &r) < 0 || r.rlim_cur == RLIM_INFINITY || r.rlim_cur >= need)
		return 0;
	struct rlimit want = { .rlim_cur = need, .rlim_max = MAX(r.rlim_max, (rlim_t)need) };

	if (r.rlim_max == RLIM_INFINITY)
		want.rlim_max = RLIM_INFINITY;
	if (!setrlimit(RLIMIT_MEMLOCK, &want))
		return 0;
	if (geteuid() == 0)
		return 0;   /* CAP_IPC_LOCK pins past the limit anyway */
	return err_set(-ENOMEM, "rdma: one-sided post-copy pins guest RAM (%llu MiB with its "
		       "buffers) but RLIMIT_MEMLOCK is %llu KiB and cannot be raised here: raise it "
		       "to at least %llu KiB (ulimit -l, LimitMEMLOCK= in systemd) or run umig as "
		       "root", (unsigned long long)(need >> 20), (unsigned long long)(r.rlim_cur >> 10),
		       (unsigned long long)(need >> 10));
}

/*
 * Register x->ram on every endpoint's protection domain, once per domain
 * (both endpoints share one as a rule): own[ch] is the endpoint's own
 * registration, NULL where the bulk endpoint's covers its domain, and
 * use[ch] the one its keys come from.  Counts what it pins in
 * x->ram_pinned (an on-demand registration pins nothing).  On failure
 * every registration made here is undone.  0 or -errno naming what for.
 */
static int ram_register(struct xport *x, int access, const char *what,
			struct ibv_mr *own[XCH_COUNT], struct ibv_mr *use[XCH_COUNT])
{
	for (int ch = XCH_BULK; ch < XCH_COUNT; ch++) {
		struct ibv_pd *pd = rp(x)->ep[ch].pd;

		own[ch] = NULL;
		use[ch] = ch != XCH_BULK && pd == rp(x)->ep[XCH_BULK].pd ? use[XCH_BULK] : NULL;
		if (use[ch])
			continue;   /* one protection domain: registered once */
		own[ch] = use[ch] = ibv_reg_mr(pd, x->ram, x->ram_len, access);
		if (!own[ch]) {
			int err = -errno;

			for (int c = XCH_BULK; c < ch; c++)
				if (own[c])
					ibv_dereg_mr(own[c]);
			x->ram_pinned = 0;
			return err_set(err, "rdma: cannot register guest RAM (%llu MiB) %s: %s "
				       "(RLIMIT_MEMLOCK: ulimit -l)",
				       (unsigned long long)(x->ram_len >> 20), what, strerror(-err));
		}
		x->ram_pinned += access & IBV_ACCESS_ON_DEMAND ? 0 : x->ram_len;
	}
	return 0;
}

/* Source: RDMA_MR_ACK, or the destination's refusal, within timeout_ms. */
static int rdma_mr_ack_wait(struct xport *x, int timeout_ms)
{
	struct proto_msg m = { 0 };
	char text[1100];
	int ret;

	if (!(x->features & FEAT_RDMA_MR_ACK))
		return 0;
	pr_debug("migration: RDMA_MR sent; waiting for the destination to register its side");
	ret = xport_ctl_recv(x, &m, timeout_ms);
	if (ret == -ETIMEDOUT)
		ret = err_set(ret, "rdma: the destination did not register its side of the READs "
			      "within %d ms", timeout_ms);
	else if (ret < 0)
		ret = err_set(ret, "rdma: while the destination registered its side of the READs: %s",
			      err_msg(ret));
	else if (m.type == MSG_ERROR) {
		proto_error_text(&m, text, sizeof(text));
		ret = err_set(-ECONNREFUSED, "the destination cannot take one-sided RDMA: %s", text);
	} else if (m.type != MSG_RDMA_MR_ACK)
		ret = err_set(-EPROTO, "rdma: expected RDMA_MR_ACK, got %s (type %u, %u bytes)",
			      proto_type_name(m.type), m.type, m.len);
	if (!ret)
		pr_debug("migration: the destination READs %s",
			 m.payload[0] & 1 ? "straight into guest RAM" : "into buffers");
	proto_msg_free(&m);
	return ret;
}

/* What registering guest RAM pins: once per protection domain (one, shared, as a rule). */
static uint64_t rdma_pinned_len(struct xport *x)
{
	bool one = rp(x)->ep[XCH_URGENT].pd == rp(x)->ep[XCH_BULK].pd;

	return (one ? 1 : 2) * x->ram_len;
}

int rdma_ram_expose(struct xport *x, int timeout_ms)
{
	struct ibv_mr *own[XCH_COUNT], *use[XCH_COUNT];
	struct wbuf w;
	int ret;

	if (!(x->features & FEAT_RDMA_READ))
		return 0;
	if (!x->ram || x->ram_len != x->npages * PAGE_SIZE)
		return err_set(-EINVAL, "rdma: guest RAM was not handed to the transport");
	/*
	 * --rdma-odp: registered on demand, nothing is pinned or populated
	 * (the device faults pages in as READs reach them); refused up front
	 * where the device cannot.  Never run on hardware: Soft-RoCE in the
	 * test VM has no ODP, so only the refusal is tested.
	 */
	for (int ch = XCH_BULK; x->odp && ch < XCH_COUNT; ch++)
		if (!rdma_odp_read(rp(x)->ep[ch].id->verbs))
			return err_set(-EOPNOTSUPP, "rdma: --rdma-odp: %s has no on-demand paging "
				       "for RC READs (umig caps); migrate without --rdma-odp, "
				       "which pins guest RAM instead",
				       ibv_get_device_name(rp(x)->ep[ch].id->verbs->device));
	ret = x->odp ? 0 : memlock_cover(rdma_pinned_len(x) + (64ull << 20));
	if (!ret)
		ret = ram_register(x, IBV_ACCESS_REMOTE_READ | (x->odp ? IBV_ACCESS_ON_DEMAND : 0),
				   "for remote READ", own, use);
	wbuf_init(&w);
	for (int ch = XCH_BULK; !ret && ch < XCH_COUNT; ch++) {
		rp(x)->ep[ch].ram_mr = own[ch];
		wbuf_put_u64(&w, (uintptr_t)x->ram);
		wbuf_put_u64(&w, x->ram_len);
		wbuf_put_u32(&w, use[ch]->rkey);
		wbuf_put_u32(&w, 0);
	}
	if (!ret)
		ret = w.err ? w.err : xport_ctl_send(x, MSG_RDMA_MR, w.data, w.len);
	wbuf_free(&w);
	/* the destination may pin (and so allocate) all of its RAM first: 1 s more per GiB */
	if (!ret)
		ret = rdma_mr_ack_wait(x, timeout_ms + (int)MIN(x->ram_len >> 30, 3600) * 1000);
	if (!ret) {
		x->caps |= XCAP_ONESIDED;
		pr_debug("migration: guest RAM (%llu MiB) registered for RDMA READ%s",
			 (unsigned long long)(x->ram_len >> 20), x->odp ? ", on demand" : "");
	}
	return ret;
}

/* --- destination: setup ---------------------------------------------------------- */

void rdma_pull_prepare(struct xport *x, struct rdma_ep *e, enum xport_channel ch)
{
	if (!(x->features & FEAT_RDMA_READ))
		return;
	e->ndread = ch == XCH_BULK ? RDMA_PULL_SLOTS : RDMA_FAULT_SLOTS;
	e->dslot = (ch == XCH_BULK ? RDMA_PULL_RUN : 1) * PAGE_SIZE;
}

/*
 * Destination, zero-copy: register the placement view of memfd guest RAM
 * for local write on both queue pairs, so that a READ lands at the page's
 * place in the page cache and UFFDIO_CONTINUE maps it with no copy.
 * Registration pins, and so allocates, every page of the file (the guest
 * cannot see them: its view faults on every page not placed).  Where it
 * fails (the memlock limit, a device that cannot register shmem) the
 * READs land in the slots and are written into the file once, as before:
 * said, not fatal.
 */
static void rdma_place_register(struct xport *x)
{
	struct ibv_mr *own[XCH_COUNT], *use[XCH_COUNT];
	uint64_t t0 = now_ns();
	int ret = memlock_cover(rdma_pinned_len(x) + (64ull << 20));

	if (!ret)
		ret = ram_register(x, IBV_ACCESS_LOCAL_WRITE, "to READ into", own, use);
	for (int ch = XCH_BULK; ch < XCH_COUNT; ch++) {
		struct rdma_ep *e = &rp(x)->ep[ch];

		pthread_mutex_lock(&e->mu);
		e->place_mr = ret ? NULL : own[ch];
		e->place_lkey = ret ? 0 : use[ch]->lkey;
		e->place = ret ? NULL : x->ram;
		pthread_mutex_unlock(&e->mu);
	}
	if (ret)
		pr_warn("%s; READs land in buffers and are copied into guest RAM once", err_msg(ret));
	else
		pr_debug("incoming: guest RAM (%llu MiB) registered: READs land in place "
			 "(%.0f ms)", (unsigned long long)(x->ram_len >> 20),
			 (now_ns() - t0) / 1e6);
}

int rdma_ram_learn(struct xport *x, int timeout_ms)
{
	struct proto_msg m = { 0 };
	struct rbuf r;
	int ret;

	if (!(x->features & FEAT_RDMA_READ))
		return 0;
	ret = xport_ctl_recv(x, &m, timeout_ms);
	if (ret == -ETIMEDOUT)
		ret = err_set(ret, "rdma: the source did not say where guest RAM is within %d ms",
			      timeout_ms);
	if (!ret && (m.type != MSG_RDMA_MR || m.len != RDMA_MR_LEN))
		ret = err_set(-EPROTO, "rdma: expected RDMA_MR (48 bytes), got %s (type %u, %u bytes)",
			      proto_type_name(m.type), m.type, m.len);
	rbuf_init(&r, m.payload, m.len);
	for (int ch = XCH_BULK; !ret && ch < XCH_COUNT; ch++) {
		struct rdma_ep *e = &rp(x)->ep[ch];
		uint64_t addr = rbuf_get_u64(&r), len = rbuf_get_u64(&r);
		uint32_t rkey = rbuf_get_u32(&r);

		rbuf_get_u32(&r);
		if (len != x->npages * PAGE_SIZE) {
			ret = err_set(-EPROTO, "rdma: RDMA_MR: the source's region is %llu bytes, guest "
				      "RAM %llu", (unsigned long long)len,
				      (unsigned long long)(x->npages * PAGE_SIZE));
			break;
		}
		e->raddr = addr;
		e->rkey = rkey;
	}
	proto_msg_free(&m);
	if (!ret)
		x->caps |= XCAP_ONESIDED;
	if (!ret && x->ram)
		rdma_place_register(x);
	if (!ret && (x->features & FEAT_RDMA_MR_ACK)) {
		uint8_t ack[8] = { rp(x)->ep[XCH_BULK].place ? 1 : 0 };

		ret = xport_ctl_send(x, MSG_RDMA_MR_ACK, ack, sizeof(ack));
	}
	return ret;
}

/* --- destination: the prefetcher ------------------------------------------------ */

static void pull_read_free(void *arg, uint32_t pages)
{
	struct rdma_pull *pl = arg;

	for (uint32_t i = 0; pl->pf && i < pages; i++)
		rdma_prefetch_done(pl->pf);
}

/* Wait on the bulk endpoint (mu held) until pred or a failure; false on failure. */
static bool pull_wait(struct rdma_pull *pl, struct rdma_ep *e, bool (*pred)(struct rdma_pull *))
{
	while (!pred(pl) && !pl->stop && !e->err && !e->shut) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&e->cv, &e->mu, &ts);
	}
	return !pl->stop && !e->err && !e->shut;
}

static bool pull_may_start(struct rdma_pull *pl)
{
	return pl->zero_done;
}

static bool pull_has_room(struct rdma_pull *pl)
{
	return pl->pf->outstanding < pl->pf->window && pl->e->ndfree;
}

static bool pull_drained(struct rdma_pull *pl)
{
	return !pl->pf->outstanding;
}

static void *pull_thread(void *arg)
{
	struct rdma_pull *pl = arg;
	struct rdma_ep *e = pl->e;
	uint64_t pfn, first;
	bool ok;

	pthread_mutex_lock(&e->mu);
	ok = pull_wait(pl, e, pull_may_start);
	pthread_mutex_unlock(&e->mu);
	while (ok) {
		pthread_mutex_lock(&e->mu);
		ok = pull_wait(pl, e, pull_has_room);
		pthread_mutex_unlock(&e->mu);
		if (!ok)
			break;
		/* only this thread adds to the window, and it has room: npages means none left */
		pfn = rdma_prefetch_next(pl->pf);
		if (pfn >= pl->pf->npages) {
			pthread_mutex_lock(&e->mu);
			pl->finished = !pl->pf->outstanding;
			ok = !pl->finished && pull_wait(pl, e, pull_drained);
			pthread_mutex_unlock(&e->mu);
			if (pl->finished)
				break;
			continue;
		}
		uint32_t n = rdma_prefetch_extend(pl->pf, pfn, RDMA_PULL_RUN, &first);

		if (rdma_ep_read(e, first, n) < 0)
			break;   /* the endpoint failed: reaps report it */
		pl->x->reads++;
		pl->x->read_bytes += (uint64_t)n * PAGE_SIZE;
	}
	if (pl->finished)
		rdma_ep_kick(e);
	pr_debug("incoming: rdma prefetch %s: %llu pages READ ahead, %llu on faults",
		 pl->finished ? "done" : "stopped", (unsigned long long)pl->pf->prefetched,
		 (unsigned long long)pl->pf->faults_read);
	return NULL;
}

int rdma_pull_start(struct xport *x, const struct bitmap *have, const char *policy)
{
	struct rdma_pull *pl = &rp(x)->pull;
	struct rdma_ep *e = &rp(x)->ep[XCH_BULK];
	int ret;

	if (!(x->caps & XCAP_ONESIDED) || x->source || pl->pf)
		return 0;
	ret = rdma_prefetch_create(&pl->pf, policy, x->npages, have, RDMA_PULL_WINDOW);
	if (ret < 0)
		return ret;
	pl->x = x;
	pl->e = e;
	pthread_mutex_lock(&e->mu);
	e->on_read_free = pull_read_free;
	e->read_arg = pl;
	pthread_mutex_unlock(&e->mu);
	if (pthread_create(&pl->thread, NULL, pull_thread, pl))
		return err_set(-EAGAIN, "rdma: cannot start the prefetch thread");
	pl->started = true;
	return 0;
}

void rdma_pull_stop(struct xport *x)
{
	struct rdma_pull *pl = &rp(x)->pull;

	if (pl->started) {
		pthread_mutex_lock(&pl->e->mu);
		pl->stop = true;
		pthread_cond_broadcast(&pl->e->cv);
		pthread_mutex_unlock(&pl->e->mu);
		pthread_join(pl->thread, NULL);
		pl->started = false;
	}
	if (pl->e) {
		pthread_mutex_lock(&pl->e->mu);
		pl->e->on_read_free = NULL;
		pthread_mutex_unlock(&pl->e->mu);
	}
	rdma_prefetch_destroy(pl->pf);
	pl->pf = NULL;
}

/* --- destination: the page operations ------------------------------------------- */

int rdma_pull_fetch(struct xport *x, uint64_t pfn)
{
	struct rdma_pull *pl = &rp(x)->pull;
	int ret = pl->pf ? rdma_prefetch_fault(pl->pf, pfn) : 1;

	if (ret <= 0)
		return ret;   /* a READ of it is on its way already (or it is zero) */
	ret = rdma_ep_read(&rp(x)->ep[XCH_URGENT], pfn, 1);
	if (!ret) {
		x->reads++;
		x->read_bytes += PAGE_SIZE;
	}
	return ret;
}

/*
 * The bulk queue of a one-sided destination: READ completions and the
 * source's zero map; MARK_BULK_END is handed on only once every page
 * was READ.
 */
int rdma_pull_reap(struct xport *x, struct xev *ev, int timeout_ms)
{
	struct rdma_pull *pl = &rp(x)->pull;
	struct rdma_ep *e = &rp(x)->ep[XCH_BULK];
	int ret;

	for (;;) {
		if (pl->finished && pl->end_seen && !pl->end_given) {
			pl->end_given = true;
			*ev = (struct xev){ .kind = XEV_MARK, .mark = MARK_BULK_END };
			return 1;
		}
		ret = rdma_ep_reap(e, ev, timeout_ms);
		if (ret <= 0)
			return ret;
		if (ev->kind == XEV_RUN && ev->run.enc == XENC_ZERO && pl->pf)
			rdma_prefetch_skip(pl->pf, ev->run.pfn, ev->run.n);
		if (ev->kind != XEV_MARK || ev->mark != MARK_BULK_END)
			return 1;
		pl->end_seen = true;
		pthread_mutex_lock(&e->mu);
		pl->zero_done = true;
		pthread_cond_broadcast(&e->cv);
		pthread_mutex_unlock(&e->mu);
	}
}
