/*
 * ep.c - one RDMA endpoint (rdma.h): a reliable-connected queue pair with
 * registered send and receive slots, receive credits, and the progress
 * thread that reaps its completion queues and its rdma_cm events.
 *
 * Every frame is one SEND into one receive slot of the peer.  The sender
 * holds a credit per receive slot the peer has posted; the receiver hands
 * credits back in the header of its own frames, or in a credit-only frame
 * once a quarter of its slots were reposted.  A received frame stays in
 * its slot until the next reap of the queue (the engine places it from
 * there), then the slot is posted again.
 *
 * One-sided post-copy adds READs (rdma_ep_read): the destination reads
 * the source's registered guest RAM into slots of its own, and a landed
 * READ is reaped as a run just like a received frame.
 *
 * Any failed work completion, a disconnect or a shutdown fails the whole
 * endpoint: every waiter wakes with the error, and the endpoint is only
 * destroyed, never reused.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "rdma.h"
#include "umig/log.h"
#include "umig/util.h"

static void ep_wake(struct rdma_ep *e)
{
	uint64_t one = 1;

	if (write(e->qfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		pr_debug("rdma: eventfd write: %s", strerror(errno));
}

/* Record the first failure (mu held) and wake everyone. */
static void ep_fail_locked(struct rdma_ep *e, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void ep_fail_locked(struct rdma_ep *e, int err, const char *fmt, ...)
{
	va_list ap;

	if (!e->err) {
		e->err = err;
		va_start(ap, fmt);
		vsnprintf(e->errmsg, sizeof(e->errmsg), fmt, ap);
		va_end(ap);
		pr_debug("rdma: %s channel failed: %s", xport_channel_name(e->ch), e->errmsg);
	}
	ep_wake(e);
	pthread_cond_broadcast(&e->cv);
}

static int ep_error(struct rdma_ep *e)
{
	if (e->shut)
		return -ESHUTDOWN;
	return err_set(e->err, "%s", e->errmsg);
}

static int ep_post_recv(struct rdma_ep *e, uint32_t slot)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(e->rbuf + (size_t)slot * e->slot),
		.length = e->slot, .lkey = e->rmr->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = slot, .sg_list = &sge, .num_sge = 1 }, *bad;

	return ibv_post_recv(e->id->qp, &wr, &bad) ? -EIO : 0;
}

/* Post one frame from a free send slot (mu held; the caller checked both). */
static int ep_post_send(struct rdma_ep *e, struct rdma_hdr *h, const void *data, uint32_t len)
{
	uint32_t slot = e->sfree[--e->nsfree];
	uint8_t *b = e->sbuf + (size_t)slot * e->slot;
	struct ibv_sge sge = { .addr = (uintptr_t)b, .length = RDMA_HDR_LEN + len,
			       .lkey = e->smr->lkey };
	struct ibv_send_wr wr = {
		.wr_id = slot, .sg_list = &sge, .num_sge = 1,
		.opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED,
	}, *bad;
	int ret;

	h->credits = e->returned;
	rdma_hdr_put(b, h);
	if (len)
		memcpy(b + RDMA_HDR_LEN, data, len);
	ret = ibv_post_send(e->id->qp, &wr, &bad);
	if (ret) {
		e->sfree[e->nsfree++] = slot;
		ep_fail_locked(e, -EIO, "rdma %s channel: cannot post a send (%s)",
			       xport_channel_name(e->ch), strerror(ret));
		return -EIO;
	}
	e->returned = 0;
	e->bytes += sge.length;
	return 0;
}

/* Hand credits back once a quarter of the receive slots waits for it (mu held). */
static void ep_return_credits(struct rdma_ep *e)
{
	struct rdma_hdr h = { .type = MSG_RDMA_CREDIT };

	if (e->err || e->shut || e->returned < (e->nrecv - RDMA_EXTRA_RECV) / 4 || !e->nsfree)
		return;
	ep_post_send(e, &h, NULL, 0);
}

static const char *wc_why(enum ibv_wc_status st)
{
	switch (st) {
	case IBV_WC_RETRY_EXC_ERR:
		return "the peer stopped acknowledging (transport retries exhausted)";
	case IBV_WC_RNR_RETRY_EXC_ERR:
		return "the peer posted no receive buffer (RNR retries exhausted)";
	case IBV_WC_WR_FLUSH_ERR:
		return "the queue pair went into the error state";
	default:
		return ibv_wc_status_str(st);
	}
}

static void ep_recv_done(struct rdma_ep *e, const struct ibv_wc *wc)
{
	uint32_t slot = wc->wr_id;
	struct rdma_hdr h;

	if (slot >= e->nrecv || wc->byte_len < RDMA_HDR_LEN || wc->byte_len > e->slot) {
		ep_fail_locked(e, -EPROTO, "rdma %s channel: a receive of %u bytes in slot %u",
			       xport_channel_name(e->ch), wc->byte_len, slot);
		return;
	}
	rdma_hdr_get(e->rbuf + (size_t)slot * e->slot, &h);
	/* an absurd credit count is caught by the frame check at reap */
	if (h.credits <= e->nrecv)
		e->credits += h.credits;
	if (h.type == MSG_RDMA_CREDIT && wc->byte_len == RDMA_HDR_LEN) {
		if (ep_post_recv(e, slot) < 0)
			ep_fail_locked(e, -EIO, "rdma %s channel: cannot repost a receive",
				       xport_channel_name(e->ch));
		return;
	}
	e->rlen[slot] = wc->byte_len;
	e->ready[(e->rhead + e->rcount) % e->nrecv] = slot;
	if (!e->rcount++)
		ep_wake(e);
	e->bytes += wc->byte_len;
}

/* A READ landed in its slot (mu held): it waits for a reap like a received frame. */
static void ep_read_done(struct rdma_ep *e, uint32_t slot)
{
	if (slot >= e->ndread)
		return;
	e->dready[(e->dhead + e->dcount) % e->ndread] = slot;
	if (!e->dcount++)
		ep_wake(e);
	e->bytes += (uint64_t)e->dn[slot] * PAGE_SIZE;
}

/* Reap both completion queues (mu held): how many completions there were. */
static int ep_poll(struct rdma_ep *e)
{
	struct ibv_wc wc[16];
	int n, total = 0;

	while ((n = ibv_poll_cq(e->scq, 16, wc)) > 0) {
		for (int i = 0; i < n; i++) {
			if (wc[i].status != IBV_WC_SUCCESS && !e->shut)
				ep_fail_locked(e, wc[i].status == IBV_WC_RETRY_EXC_ERR ? -ETIMEDOUT : -EPIPE,
					       "rdma %s channel: a send failed: %s",
					       xport_channel_name(e->ch), wc_why(wc[i].status));
			if (wc[i].wr_id < e->nsend)
				e->sfree[e->nsfree++] = wc[i].wr_id;
			else if ((wc[i].wr_id & RDMA_WR_READ) && wc[i].status == IBV_WC_SUCCESS)
				ep_read_done(e, (uint32_t)wc[i].wr_id);
		}
		total += n;
	}
	while ((n = ibv_poll_cq(e->rcq, 16, wc)) > 0) {
		for (int i = 0; i < n; i++) {
			if (wc[i].status != IBV_WC_SUCCESS) {
				if (!e->shut)
					ep_fail_locked(e, -EPIPE, "rdma %s channel: the connection broke: %s",
						       xport_channel_name(e->ch), wc_why(wc[i].status));
				continue;
			}
			ep_recv_done(e, &wc[i]);
		}
		total += n;
	}
	if (n < 0)
		ep_fail_locked(e, -EIO, "rdma %s channel: polling the completion queue failed",
			       xport_channel_name(e->ch));
	if (total) {
		ep_return_credits(e);
		pthread_cond_broadcast(&e->cv);
	}
	return total;
}

static void ep_cm_event(struct rdma_ep *e)
{
	struct rdma_cm_event *ev;

	if (rdma_get_cm_event(e->ec, &ev))
		return;
	pr_debug("rdma: %s channel: cm event %s (status %d)", xport_channel_name(e->ch),
		 rdma_event_str(ev->event), ev->status);
	pthread_mutex_lock(&e->mu);
	if (ev->event == RDMA_CM_EVENT_DISCONNECTED || ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL ||
	    ev->event == RDMA_CM_EVENT_TIMEWAIT_EXIT)
		ep_fail_locked(e, -EPIPE, "rdma %s channel: the peer disconnected (%s)",
			       xport_channel_name(e->ch), rdma_event_str(ev->event));
	pthread_mutex_unlock(&e->mu);
	rdma_ack_cm_event(ev);
}

static void *ep_thread(void *arg)
{
	struct rdma_ep *e = arg;

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = e->cc->fd, .events = POLLIN },
			{ .fd = e->ec->fd, .events = POLLIN },
			{ .fd = e->stop_efd, .events = POLLIN },
		};
		struct ibv_cq *cq;
		void *ctx;
		int n;

		pthread_mutex_lock(&e->mu);
		n = e->stopping ? -1 : ep_poll(e);
		pthread_mutex_unlock(&e->mu);
		if (n < 0)
			break;
		if (n && !e->poll_mode)
			continue;
		if (!e->poll_mode) {
			/* arm, then look again: a completion may have come in between */
			ibv_req_notify_cq(e->scq, 0);
			ibv_req_notify_cq(e->rcq, 0);
			pthread_mutex_lock(&e->mu);
			n = ep_poll(e);
			pthread_mutex_unlock(&e->mu);
			if (n)
				continue;
		}
		if (e->poll_mode)
			sched_yield();   /* spin, but let a vCPU on the same core run */
		if (poll(p, 3, e->poll_mode ? 0 : 1000) < 0 && errno != EINTR)
			break;
		if (p[0].revents & POLLIN)
			while (!ibv_get_cq_event(e->cc, &cq, &ctx))
				ibv_ack_cq_events(cq, 1);
		if (p[1].revents & POLLIN)
			ep_cm_event(e);
	}
	return NULL;
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

static int ep_alloc_reads(struct rdma_ep *e)
{
	size_t db = (size_t)e->ndread * e->dslot;

	e->dbuf = aligned_alloc(PAGE_SIZE, ALIGN_UP(db, PAGE_SIZE));
	e->dfree = calloc(e->ndread, sizeof(uint32_t));
	e->dready = calloc(e->ndread, sizeof(uint32_t));
	e->dn = calloc(e->ndread, sizeof(uint32_t));
	e->dpfn = calloc(e->ndread, sizeof(uint64_t));
	if (!e->dbuf || !e->dfree || !e->dready || !e->dn || !e->dpfn)
		return err_set(-ENOMEM, "rdma: cannot allocate READ buffers");
	e->dmr = ibv_reg_mr(e->pd, e->dbuf, db, IBV_ACCESS_LOCAL_WRITE);
	if (!e->dmr)
		return err_set(-ENOMEM, "rdma: cannot register %zu KiB of READ buffers (%s): raise "
			       "the memlock limit (ulimit -l)", db >> 10, strerror(errno));
	for (uint32_t i = 0; i < e->ndread; i++)
		e->dfree[e->ndfree++] = i;
	return 0;
}

static int ep_alloc(struct rdma_ep *e)
{
	struct ibv_context *ctx = e->id->verbs;
	size_t rb = (size_t)e->nrecv * e->slot, sb = (size_t)e->nsend * e->slot;

	if (e->share && e->share->pd && e->share->ctx == ctx) {
		e->pd = e->share->pd;   /* the other queue pair's: one registration of guest RAM */
	} else {
		e->pd = ibv_alloc_pd(ctx);
		if (e->pd && e->share && !e->share->pd) {
			e->share->pd = e->pd;
			e->share->ctx = ctx;
		}
	}
	e->pd_shared = e->pd && e->share && e->share->pd == e->pd;
	if (e->pd_shared)
		e->share->refs++;
	e->cc = e->pd ? ibv_create_comp_channel(ctx) : NULL;
	if (!e->cc)
		return err_set(-ENOMEM, "rdma: cannot allocate a protection domain or completion channel");
	e->scq = ibv_create_cq(ctx, e->nsend + e->ndread + 1, e, e->cc, 0);
	e->rcq = ibv_create_cq(ctx, e->nrecv + 1, e, e->cc, 0);
	e->sbuf = aligned_alloc(PAGE_SIZE, ALIGN_UP(sb, PAGE_SIZE));
	e->rbuf = aligned_alloc(PAGE_SIZE, ALIGN_UP(rb, PAGE_SIZE));
	e->sfree = calloc(e->nsend, sizeof(uint32_t));
	e->ready = calloc(e->nrecv, sizeof(uint32_t));
	e->rlen = calloc(e->nrecv, sizeof(uint32_t));
	if (!e->scq || !e->rcq || !e->sbuf || !e->rbuf || !e->sfree || !e->ready || !e->rlen)
		return err_set(-ENOMEM, "rdma: cannot allocate completion queues or buffers");
	e->smr = ibv_reg_mr(e->pd, e->sbuf, sb, IBV_ACCESS_LOCAL_WRITE);
	e->rmr = ibv_reg_mr(e->pd, e->rbuf, rb, IBV_ACCESS_LOCAL_WRITE);
	if (!e->smr || !e->rmr)
		return err_set(-ENOMEM, "rdma: cannot register %zu KiB of buffers (%s): raise the "
			       "memlock limit (ulimit -l)", (rb + sb) >> 10, strerror(errno));
	return e->ndread ? ep_alloc_reads(e) : 0;
}

int rdma_ep_setup(struct rdma_ep *e, struct rdma_cm_id *id, enum xport_channel ch, bool source,
		  uint64_t npages, bool poll_mode, unsigned send_timeout_ms)
{
	struct ibv_qp_init_attr qa = { 0 };
	int ret;

	e->ch = ch;
	e->source = source;
	e->npages = npages;
	e->id = id;
	e->poll_mode = poll_mode;
	e->send_timeout_ms = send_timeout_ms;
	e->nrecv = (ch == XCH_BULK ? RDMA_BULK_RECV : RDMA_URGENT_RECV) + RDMA_EXTRA_RECV;
	e->nsend = RDMA_SEND_SLOTS;
	e->credits = e->nrecv - RDMA_EXTRA_RECV;   /* the peer posts as many */
	e->held = e->dheld = -1;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	e->slot = rdma_slot_size(ch);   /* from here on, rdma_ep_destroy frees it all */
	e->qfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	e->stop_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (e->qfd < 0 || e->stop_efd < 0)
		return err_set(-errno, "rdma: eventfd: %s", strerror(errno));
	ret = ep_alloc(e);
	if (ret < 0)
		return ret;
	qa.send_cq = e->scq;
	qa.recv_cq = e->rcq;
	qa.qp_type = IBV_QPT_RC;
	qa.cap.max_send_wr = e->nsend + e->ndread;
	qa.cap.max_recv_wr = e->nrecv;
	qa.cap.max_send_sge = qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(id, e->pd, &qa))
		return err_set(-errno, "rdma: cannot create a queue pair on %s: %s",
			       ibv_get_device_name(id->verbs->device), strerror(errno));
	for (uint32_t i = 0; i < e->nsend; i++)
		e->sfree[e->nsfree++] = i;
	for (uint32_t i = 0; i < e->nrecv; i++)
		if (ep_post_recv(e, i) < 0)
			return err_set(-EIO, "rdma: cannot post receive buffers");
	return 0;
}

int rdma_ep_start(struct rdma_ep *e)
{
	int ret = set_nonblock(e->cc->fd);

	if (!ret)
		ret = set_nonblock(e->ec->fd);
	if (ret < 0)
		return err_set(ret, "rdma: cannot make the completion channel non-blocking");
	if (pthread_create(&e->thread, NULL, ep_thread, e))
		return err_set(-EAGAIN, "rdma: cannot start the progress thread");
	e->thread_started = true;
	return 0;
}

static void deadline_in(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

int rdma_ep_send(struct rdma_ep *e, struct rdma_hdr *h, const void *data, uint32_t len)
{
	struct timespec dl;
	int ret = 0;

	deadline_in(&dl, e->send_timeout_ms);
	pthread_mutex_lock(&e->mu);
	while (!e->err && !e->shut && (!e->credits || !e->nsfree) && ret != ETIMEDOUT)
		ret = pthread_cond_timedwait(&e->cv, &e->mu, &dl);
	if (e->err || e->shut)
		ret = ep_error(e);
	else if (!e->credits || !e->nsfree)
		ret = err_set(-ETIMEDOUT, "rdma %s channel: the peer took no frame for %u ms",
			      xport_channel_name(e->ch), e->send_timeout_ms);
	else if (!(ret = ep_post_send(e, h, data, len)))
		e->credits--;
	pthread_mutex_unlock(&e->mu);
	return ret;
}

/* Give the slot the previous reap returned back to the receive queue (mu held). */
static void ep_release_held(struct rdma_ep *e)
{
	if (e->held < 0)
		return;
	if (!e->err && !e->shut && ep_post_recv(e, e->held) < 0)
		ep_fail_locked(e, -EIO, "rdma %s channel: cannot repost a receive",
			       xport_channel_name(e->ch));
	e->held = -1;
	e->returned++;
	ep_return_credits(e);
}

/* Give the READ slot the previous reap returned back (mu held). */
static void ep_release_read(struct rdma_ep *e)
{
	uint32_t n;

	if (e->dheld < 0)
		return;
	n = e->dn[e->dheld];
	e->dfree[e->ndfree++] = e->dheld;
	e->dheld = -1;
	if (e->on_read_free)
		e->on_read_free(e->read_arg, n);
	pthread_cond_broadcast(&e->cv);
}

/* Hand out a completed READ (mu held, dcount > 0): a run of raw pages. */
static int ep_take_read(struct rdma_ep *e, struct xev *ev)
{
	uint32_t slot = e->dready[e->dhead];
	uint64_t v;

	e->dhead = (e->dhead + 1) % e->ndread;
	if (!--e->dcount && !e->rcount && !e->err && !e->shut && read(e->qfd, &v, sizeof(v)) < 0)
		v = 0;   /* nothing to drain */
	e->dheld = (int)slot;
	*ev = (struct xev){ .kind = XEV_RUN };
	ev->run = (struct xrun){ .pfn = e->dpfn[slot], .n = e->dn[slot], .enc = XENC_RAW,
				 .data = e->place ? e->place + e->dpfn[slot] * PAGE_SIZE
						  : e->dbuf + (size_t)slot * e->dslot,
				 .len = e->dn[slot] * PAGE_SIZE };
	pthread_mutex_unlock(&e->mu);
	return 1;
}

int rdma_ep_reap(struct rdma_ep *e, struct xev *ev, int timeout_ms)
{
	struct timespec dl;
	struct rdma_hdr h;
	uint32_t slot;
	uint64_t v;
	int ret = 0;

	if (timeout_ms > 0)
		deadline_in(&dl, timeout_ms);
	pthread_mutex_lock(&e->mu);
	ep_release_held(e);
	ep_release_read(e);
	while (!e->rcount && !e->dcount && !e->err && !e->shut && !e->kick && timeout_ms &&
	       ret != ETIMEDOUT)
		ret = timeout_ms < 0 ? pthread_cond_wait(&e->cv, &e->mu)
				     : pthread_cond_timedwait(&e->cv, &e->mu, &dl);
	e->kick = false;
	if (e->dcount && !e->err)
		return ep_take_read(e, ev);
	if (!e->rcount) {
		ret = e->err || e->shut ? ep_error(e) : 0;
		pthread_mutex_unlock(&e->mu);
		return ret;
	}
	slot = e->ready[e->rhead];
	e->rhead = (e->rhead + 1) % e->nrecv;
	if (!--e->rcount && !e->dcount && !e->err && !e->shut && read(e->qfd, &v, sizeof(v)) < 0)
		v = 0;   /* nothing to drain */
	e->held = slot;
	pthread_mutex_unlock(&e->mu);
	ret = rdma_frame_decode(e->rbuf + (size_t)slot * e->slot, e->rlen[slot], e->ch, e->source,
				e->npages, &h, ev);
	/* credit-only frames never reach the ready ring */
	return ret == 0 ? err_set(-EPROTO, "rdma: a credit frame with data") : ret;
}

void rdma_ep_kick(struct rdma_ep *e)
{
	pthread_mutex_lock(&e->mu);
	e->kick = true;
	ep_wake(e);
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

int rdma_ep_read(struct rdma_ep *e, uint64_t pfn, uint32_t n)
{
	struct ibv_sge sge = { .length = n * PAGE_SIZE };
	struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_RDMA_READ,
				  .send_flags = IBV_SEND_SIGNALED }, *bad;
	struct timespec dl;
	uint32_t slot;
	int ret = 0;

	if (!e->dmr || !n || n * PAGE_SIZE > e->dslot || pfn >= e->npages || n > e->npages - pfn)
		return err_set(-EINVAL, "rdma: cannot READ run %llu+%u", (unsigned long long)pfn, n);
	deadline_in(&dl, e->send_timeout_ms);
	pthread_mutex_lock(&e->mu);
	while (!e->err && !e->shut && !e->ndfree && ret != ETIMEDOUT)
		ret = pthread_cond_timedwait(&e->cv, &e->mu, &dl);
	if (e->err || e->shut || !e->ndfree) {
		ret = e->err || e->shut ? ep_error(e)
			: err_set(-ETIMEDOUT, "rdma %s channel: no READ buffer came free for %u ms",
				  xport_channel_name(e->ch), e->send_timeout_ms);
		pthread_mutex_unlock(&e->mu);
		return ret;
	}
	slot = e->dfree[--e->ndfree];
	e->dpfn[slot] = pfn;
	e->dn[slot] = n;
	/* zero-copy: straight into the page's place in guest RAM; else into the slot */
	sge.addr = e->place ? (uintptr_t)(e->place + pfn * PAGE_SIZE)
			    : (uintptr_t)(e->dbuf + (size_t)slot * e->dslot);
	sge.lkey = e->place ? e->place_lkey : e->dmr->lkey;
	wr.wr_id = RDMA_WR_READ | slot;
	wr.wr.rdma.remote_addr = e->raddr + pfn * PAGE_SIZE;
	wr.wr.rdma.rkey = e->rkey;
	ret = ibv_post_send(e->id->qp, &wr, &bad);
	if (ret) {
		e->dfree[e->ndfree++] = slot;
		ep_fail_locked(e, -EIO, "rdma %s channel: cannot post a READ (%s)",
			       xport_channel_name(e->ch), strerror(ret));
		ret = -EIO;
	}
	pthread_mutex_unlock(&e->mu);
	return ret;
}

uint8_t rdma_rd_atom(struct ibv_context *ctx)
{
	struct ibv_device_attr a;

	if (ibv_query_device(ctx, &a))
		return 1;
	return (uint8_t)MAX(1, MIN(16, MIN(a.max_qp_rd_atom, a.max_qp_init_rd_atom)));
}

bool rdma_odp_read(struct ibv_context *ctx)
{
	struct ibv_device_attr_ex a = { 0 };

	return !ibv_query_device_ex(ctx, NULL, &a) &&
	       (a.odp_caps.general_caps & IBV_ODP_SUPPORT) &&
	       (a.odp_caps.per_transport_caps.rc_odp_caps & IBV_ODP_SUPPORT_READ);
}

void rdma_ep_shutdown(struct rdma_ep *e)
{
	struct ibv_mr *ram, *place;

	if (!e || !e->id)
		return;
	pthread_mutex_lock(&e->mu);
	e->shut = true;
	ram = e->ram_mr;
	e->ram_mr = NULL;
	place = e->place_mr;
	e->place_mr = NULL;
	ep_wake(e);
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	/* the queue pair goes to the error state: no READ of it lands after this */
	rdma_disconnect(e->id);
	/*
	 * A shut queue pair never serves or issues a READ again, and a
	 * recovery registers guest RAM anew on its own queue pairs: unpin it
	 * now, or every recovery would pin the guest twice more against the
	 * memlock limit while the retired transport waits for the end.  So
	 * for the destination's placement view: it stays mapped (it is guest
	 * RAM), so a run a reap handed out still points at its pages.
	 */
	if (ram)
		ibv_dereg_mr(ram);
	if (place)
		ibv_dereg_mr(place);
}

void rdma_ep_destroy(struct rdma_ep *e)
{
	uint64_t one = 1;

	if (!e)
		return;
	if (!e->slot) {
		/* never set up: an id and its channel at most */
		if (e->id)
			rdma_destroy_id(e->id);
		if (e->ec)
			rdma_destroy_event_channel(e->ec);
		e->id = NULL;
		e->ec = NULL;
		return;
	}
	if (e->thread_started) {
		pthread_mutex_lock(&e->mu);
		e->stopping = true;
		pthread_mutex_unlock(&e->mu);
		if (write(e->stop_efd, &one, sizeof(one)) < 0)
			pr_debug("rdma: eventfd write: %s", strerror(errno));
		pthread_join(e->thread, NULL);
	}
	if (e->id && e->id->qp)
		rdma_destroy_qp(e->id);
	if (e->smr)
		ibv_dereg_mr(e->smr);
	if (e->rmr)
		ibv_dereg_mr(e->rmr);
	if (e->dmr)
		ibv_dereg_mr(e->dmr);
	if (e->ram_mr)
		ibv_dereg_mr(e->ram_mr);
	if (e->place_mr)
		ibv_dereg_mr(e->place_mr);
	if (e->scq)
		ibv_destroy_cq(e->scq);
	if (e->rcq)
		ibv_destroy_cq(e->rcq);
	if (e->cc)
		ibv_destroy_comp_channel(e->cc);
	if (e->pd_shared && !--e->share->refs) {
		ibv_dealloc_pd(e->pd);   /* the last of its endpoints: their MRs are gone */
		e->share->pd = NULL;
		e->share->ctx = NULL;
	} else if (e->pd && !e->pd_shared) {
		ibv_dealloc_pd(e->pd);
	}
	if (e->id)
		rdma_destroy_id(e->id);
	if (e->ec)
		rdma_destroy_event_channel(e->ec);
	if (e->qfd >= 0)
		close(e->qfd);
	if (e->stop_efd >= 0)
		close(e->stop_efd);
	free(e->sbuf);
	free(e->rbuf);
	free(e->sfree);
	free(e->ready);
	free(e->rlen);
	free(e->dbuf);
	free(e->dfree);
	free(e->dready);
	free(e->dn);
	free(e->dpfn);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	memset(e, 0, sizeof(*e));
	e->qfd = e->stop_efd = -1;
	e->held = e->dheld = -1;
}
