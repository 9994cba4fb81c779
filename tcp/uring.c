/*
 * uring.c - batched bulk sends through io_uring.
 *
 * The bulk sender copies messages into one of TCP_BULK_BUFS buffers; a
 * full buffer is submitted as one IORING_OP_SEND (MSG_WAITALL) and the
 * sender moves on to fill the next buffer while the kernel sends it.
 *
 * Only ONE send is in flight at a time: io_uring does not order two sends
 * on the same socket (either may be punted to a worker and run first), so
 * overlapping them interleaves bytes and breaks the framing.  One send in
 * flight plus buffers being filled still overlaps encoding with sending,
 * and bounds the bytes queued by us at TCP_BULK_INFLIGHT, which keeps
 * urgent replies from waiting behind a deep bulk queue.  A short send is
 * resubmitted for the remainder.  One thread uses a ring at a time.
 *
 * Batching is adaptive: when the socket is idle (no send in flight) what
 * is buffered goes out at once instead of waiting for a full buffer, so
 * a post-copy page the destination is faulting on never sits in a half
 * full buffer (it once waited 360 ms behind a stretch of 16-byte zero-run
 * frames that took that long to fill 256 KiB).  While a send is in
 * flight, buffers fill and go out whole.
 */
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

#include "tcp.h"
#include "umig/util.h"

struct bulk_buf {
	char *data;
	size_t len;     /* bytes filled */
	size_t done;    /* bytes the kernel has sent */
	bool inflight;
};

struct tcp_uring {
	struct io_uring ring;
	struct bulk_buf bufs[TCP_BULK_BUFS];
	unsigned cur;       /* buffer being filled */
	unsigned next;      /* oldest full buffer not yet sent */
	unsigned full;      /* full buffers waiting, the one in flight included */
	unsigned inflight;  /* 0 or 1 */
	int err;            /* sticky */
};

static int tu_submit(struct tcp_conn *t, unsigned i)
{
	struct tcp_uring *u = t->ring;
	struct bulk_buf *b = &u->bufs[i];
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_send(sqe, t->fd, b->data + b->done, b->len - b->done,
			   MSG_NOSIGNAL | MSG_WAITALL);
	io_uring_sqe_set_data(sqe, (void *)(uintptr_t)i);
	b->inflight = true;
	u->inflight++;
	return io_uring_submit(&u->ring) < 0 ? -EIO : 0;
}

/* Reap one completion (blocking unless nowait); resubmit short sends. */
static int tu_reap_one(struct tcp_conn *t, bool nowait)
{
	struct tcp_uring *u = t->ring;
	struct io_uring_cqe *cqe;
	struct bulk_buf *b;
	unsigned i;
	int res, ret;

	if (nowait) {
		if (io_uring_peek_cqe(&u->ring, &cqe))
			return 1;   /* nothing completed yet */
	} else {
		do
			ret = io_uring_wait_cqe(&u->ring, &cqe);
		while (ret == -EINTR);
		if (ret < 0)
			return ret;
	}
	i = (unsigned)(uintptr_t)io_uring_cqe_get_data(cqe);
	res = cqe->res;
	io_uring_cqe_seen(&u->ring, cqe);
	b = &u->bufs[i];
	b->inflight = false;
	u->inflight--;
	if (res < 0)
		return res == -EINTR || res == -EAGAIN ? tu_submit(t, i) : res;
	if (res == 0)
		return -EPIPE;
	b->done += res;
	if (b->done < b->len)
		return tu_submit(t, i);
	b->len = b->done = 0;
	u->full--;
	u->next = (u->next + 1) % TCP_BULK_BUFS;
	/* keep the socket busy: the next full buffer goes at once */
	return u->full ? tu_submit(t, u->next) : 0;
}

static int tu_reap(struct tcp_conn *t)
{
	return tu_reap_one(t, false);
}

/* Queue the current (full or final) buffer; send it now if nothing is in flight. */
static int tu_queue_cur(struct tcp_conn *t)
{
	struct tcp_uring *u = t->ring;

	u->full++;
	u->cur = (u->cur + 1) % TCP_BULK_BUFS;
	return u->inflight ? 0 : tu_submit(t, u->next);
}

int tcp_uring_init(struct tcp_conn *t)
{
	struct tcp_uring *u = calloc(1, sizeof(*u));
	int ret;

	if (!u)
		return -ENOMEM;
	ret = io_uring_queue_init(TCP_BULK_BUFS * 2, &u->ring, 0);
	if (ret < 0) {
		free(u);
		return err_set(ret, "io_uring_queue_init: %s", strerror(-ret));
	}
	for (int i = 0; i < TCP_BULK_BUFS; i++) {
		u->bufs[i].data = malloc(TCP_BULK_BUF_SIZE);
		if (!u->bufs[i].data) {
			t->ring = u;
			tcp_uring_destroy(t);
			return -ENOMEM;
		}
	}
	t->ring = u;
	return 0;
}

/* Make the current buffer free to fill, waiting for completions if needed. */
static int tu_wait_free(struct tcp_conn *t)
{
	struct tcp_uring *u = t->ring;

	while (u->full == TCP_BULK_BUFS) {
		int ret = tu_reap(t);

		if (ret < 0)
			return ret;
	}
	return 0;
}

int tcp_uring_send(struct tcp_conn *t, const void *buf, size_t len)
{
	struct tcp_uring *u = t->ring;

	if (u->err)
		return u->err;
	while (len) {
		struct bulk_buf *b;
		size_t n;
		int ret = tu_wait_free(t);

		if (ret < 0)
			return u->err = ret;
		b = &u->bufs[u->cur];
		n = MIN(len, (size_t)TCP_BULK_BUF_SIZE - b->len);
		memcpy(b->data + b->len, buf, n);
		b->len += n;
		buf = (const char *)buf + n;
		len -= n;
		if (b->len == TCP_BULK_BUF_SIZE) {
			ret = tu_queue_cur(t);
			if (ret < 0)
				return u->err = ret;
		}
	}
	/* adaptive batching: an idle socket gets what we have now */
	while (u->inflight) {
		int ret = tu_reap_one(t, true);

		if (ret < 0)
			return u->err = ret;
		if (ret > 0)
			break;
	}
	if (!u->inflight && !u->full && u->bufs[u->cur].len) {
		int ret = tu_queue_cur(t);

		if (ret < 0)
			return u->err = ret;
	}
	return 0;
}

int tcp_uring_flush(struct tcp_conn *t)
{
	struct tcp_uring *u = t->ring;
	int ret;

	if (u->err)
		return u->err;
	if (u->bufs[u->cur].len) {
		ret = tu_queue_cur(t);
		if (ret < 0)
			return u->err = ret;
	}
	while (u->full) {
		ret = tu_reap(t);
		if (ret < 0)
			return u->err = ret;
	}
	return 0;
}

bool tcp_uring_busy(struct tcp_conn *t)
{
	return t->ring && t->ring->inflight;
}

void tcp_uring_destroy(struct tcp_conn *t)
{
	struct tcp_uring *u = t->ring;

	if (!u)
		return;
	/* in-flight sends reference our buffers: let them finish or fail first */
	while (u->inflight && tu_reap(t) >= 0)
		;
	io_uring_queue_exit(&u->ring);
	for (int i = 0; i < TCP_BULK_BUFS; i++)
		free(u->bufs[i].data);
	free(u);
	t->ring = NULL;
}
