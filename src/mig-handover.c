/*
 * mig-handover.c - who owns the guest, and the moment that changes: the
 * commit point of the switchover, on both sides (FEAT_COMMIT).
 *
 *   source                                 destination
 *   STATE (guest paused here)      ---->   loads RAM and state
 *                                  <----   READY      (nothing runs yet)
 *   COMMIT (the source never
 *   resumes its copy after this)   ---->   starts the vCPU
 *                                  <----   RESUMED
 *
 * Before COMMIT leaves, any failure leaves the guest with the source,
 * which resumes it and tells the destination ABORT (best effort).  After
 * READY leaves, the destination never drops its copy unless the source
 * says ABORT, and never runs it without COMMIT.  When the commit or its
 * answer is lost, neither side can know what the other did: both hold the
 * guest paused and say so (outcome-unknown, the one deliberate unbounded
 * hold), and the source, which made the decision, redelivers it by
 * reconnecting to the destination (RESOLVE) until it is acknowledged, or
 * until the operator decides (migrate-resolve).  The destination keeps
 * its listening socket for these reconnections for as long as it runs.
 *
 * A reconnection that reaches the host but finds no session to answer
 * (refused, closed before the greeting, "unknown session") means the
 * destination died; silence means a partition.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "mig.h"

#define RESOLVE_BACKOFF_MIN_MS 200
#define RESOLVE_BACKOFF_MAX_MS 2000
#define RESOLVE_ANSWER_MS      5000
#define RESOLVE_ABORT_TRY_NS   (20 * 1000000000ull)

/* --- source -------------------------------------------------------------- */

/*
 * Ask the destination on a new control connection whether it runs the
 * guest, delivering `decision` on the way: 1 it runs (after COMMIT) or it
 * dropped its copy (after ABORT), 0 no answer (partition), -ESRCH nothing
 * there knows this migration (the destination died).
 */
static int src_ask(struct mig_source *s, uint32_t decision)
{
	struct proto_msg m = { 0 };
	struct xport *x = NULL;
	uint8_t b[4] = { decision };
	uint16_t port;
	char host[256];
	int ret;

	src_target(s, host, &port);
	ret = xport_connect(&x, s->p.transport, host, port, s->c.x->session,
			    RESOLVE_BACKOFF_MAX_MS, s->c.sec);
	if (ret == -ECONNREFUSED)
		return -ESRCH;
	if (ret < 0)
		return 0;
	ret = xport_ctl_send(x, MSG_RESOLVE, b, sizeof(b));
	if (!ret)
		ret = xport_ctl_recv(x, &m, MIN(RESOLVE_ANSWER_MS, s->c.peer_timeout_ms));
	if (!ret && m.type == MSG_RESUMED)
		ret = 1;
	else if (!ret && m.type == MSG_ERROR)
		ret = decision == RESOLVE_ABORT ? 1 : -ESRCH;
	else if (ret == -EPIPE || ret == -ECONNRESET)
		ret = -ESRCH;   /* closed before answering: no umig session there */
	else
		ret = 0;
	proto_msg_free(&m);
	xport_close(x);
	return ret;
}

void src_backoff(struct mig_source *s, unsigned ms)
{
	uint64_t deadline = now_ns() + ms * 1000000ull;
	struct timespec ts = { .tv_sec = deadline / 1000000000ull, .tv_nsec = deadline % 1000000000ull };
	unsigned gen;

	pthread_mutex_lock(&s->c.lock);
	gen = s->retargets;
	while (!s->resolve_owner && s->retargets == gen && !s->cancel_recovery &&
	       pthread_cond_timedwait(&s->c.cond, &s->c.lock, &ts) == 0)
		;
	pthread_mutex_unlock(&s->c.lock);
}

void src_target(struct mig_source *s, char host[static 256], uint16_t *port)
{
	pthread_mutex_lock(&s->c.lock);
	memcpy(host, s->p.host, 256);
	*port = s->p.port;
	pthread_mutex_unlock(&s->c.lock);
}

/*
 * The commit left but its answer did not come: hold the guest paused and
 * redeliver the commit until the destination acknowledges it.  0 when the
 * destination runs the guest; -ECANCELED when the operator gave it back.
 */
static int src_resolve(struct mig_source *s, int why)
{
	unsigned backoff = RESOLVE_BACKOFF_MIN_MS;
	bool said_dead = false;

	pthread_mutex_lock(&s->c.lock);
	snprintf(s->unknown_why, sizeof(s->unknown_why), "%s", err_msg(why));
	pthread_mutex_unlock(&s->c.lock);
	mig_set_state(&s->c, MIG_UNKNOWN);
	pr_err("migration: the commit was sent but not acknowledged (%s); the guest stays "
	       "paused here until the destination answers (outcome unknown)", s->unknown_why);
	mig_keepalive_stop(&s->c);
	xport_shutdown(s->c.x);
	/* deliberately unbounded (docs/protocol.md); each attempt is bounded */
	for (;;) {
		int owner, ret;

		pthread_mutex_lock(&s->c.lock);
		owner = s->resolve_owner;
		pthread_mutex_unlock(&s->c.lock);
		if (owner == MIG_OWNER_SOURCE) {
			s->committed = false;
			return err_set(-ECANCELED, "the operator gave the guest back to the source");
		}
		if (owner == MIG_OWNER_DEST) {
			pr_warn("migration: the operator says the guest runs at the destination");
			break;
		}
		ret = src_ask(s, RESOLVE_COMMIT);
		if (ret == 1) {
			pr_info("migration: the destination acknowledged the commit; the guest runs there");
			break;
		}
		if (ret == -ESRCH && !said_dead) {
			pr_err("migration: the destination has no session for this migration: it died after "
			       "the commit; the guest stays paused here (decide with migrate-resolve)");
			said_dead = true;
		}
		src_backoff(s, backoff);
		backoff = MIN(backoff * 2, RESOLVE_BACKOFF_MAX_MS);
	}
	s->resolved_by_reconnect = true;
	mig_set_state(&s->c, MIG_SWITCHOVER);
	return 0;
}

/* The guest stays here: tell a destination that may hold READY to drop it. */
void src_abort_destination(struct mig_source *s)
{
	if (!s->c.x || !(s->c.x->features & FEAT_COMMIT) || !s->state_sent)
		return;
	/*
	 * In band first; but a destination that already gave up on this
	 * connection reads it no more, so the decision also goes on new
	 * connections, with backoff, for a bounded while, until one is
	 * answered (or nothing there knows the session: it is gone).
	 */
	xport_ctl_send(s->c.x, MSG_ABORT, NULL, 0);
	for (uint64_t end = now_ns() + RESOLVE_ABORT_TRY_NS; now_ns() < end;) {
		if (src_ask(s, RESOLVE_ABORT) != 0)
			return;
		usleep(RESOLVE_BACKOFF_MAX_MS * 1000);
	}
	pr_warn("migration: could not tell the destination to drop its paused copy; "
		"it holds it until it hears from this source or is stopped");
}

int src_handover(struct mig_source *s)
{
	struct proto_msg m = { 0 };
	int ret;

	if (!(s->c.x->features & FEAT_COMMIT)) {
		/* version 1: the destination runs the guest when the state arrives */
		ret = mig_ctl_expect(&s->c, &m, MSG_RESUMED, "RESUMED");
		proto_msg_free(&m);
		return ret;
	}
	ret = mig_ctl_expect(&s->c, &m, MSG_READY, "READY");
	if (ret < 0)
		goto out;   /* nothing committed: the guest is still ours */
	s->t_ready = now_ns();
	s->committed = true;
	ret = xport_ctl_send(s->c.x, MSG_COMMIT, NULL, 0);
	if (!ret)
		ret = mig_ctl_expect(&s->c, &m, MSG_RESUMED, "RESUMED");
	if (ret == -ECONNABORTED) {
		/* the destination said it will not run the guest: take it back */
		s->committed = false;
	} else if (ret < 0) {
		ret = src_resolve(s, ret);
	}
out:
	proto_msg_free(&m);
	return ret;
}

/* --- destination ------------------------------------------------------------ */

static void dst_decide(struct mig_dest *d, int decision)
{
	pthread_mutex_lock(&d->c.lock);
	if (!d->decision)
		d->decision = decision;
	pthread_cond_broadcast(&d->c.cond);
	pthread_mutex_unlock(&d->c.lock);
}

/*
 * Serve one reconnection from the source of this migration: RESOLVE (the
 * handover's decision) or RECOVER (post-copy recovery, which takes the
 * connection over).  Returns the transport if the caller still owns it.
 */
static struct xport *dst_serve_reconnect(struct mig_dest *d, struct xport *x, int lfd)
{
	struct proto_msg m = { 0 };
	struct rbuf r;
	uint32_t decision;
	int ret = xport_ctl_recv(x, &m, RESOLVE_ANSWER_MS);

	if (!ret && m.type == MSG_RECOVER) {
		dst_serve_recover(d, x, &m, lfd);
		proto_msg_free(&m);
		return NULL;
	}
	if (ret < 0 || m.type != MSG_RESOLVE)
		goto out;
	if (x->session != d->c.x->session) {
		xport_ctl_error(x, ESRCH, "unknown session");
		goto out;
	}
	rbuf_init(&r, m.payload, m.len);
	decision = rbuf_get_u32(&r);
	if (decision != RESOLVE_COMMIT && decision != RESOLVE_ABORT) {
		xport_ctl_error(x, EPROTO, "RESOLVE: unknown decision");
		goto out;
	}
	dst_decide(d, decision);
	if (decision == RESOLVE_ABORT || d->decision == RESOLVE_ABORT) {
		xport_ctl_error(x, ECANCELED, "the guest was dropped here");
		goto out;
	}
	/* bounded: the vCPU starts right after the decision */
	for (int i = 0; i < 100 && !d->t_resume; i++)
		usleep(10000);
	if (d->t_resume)
		xport_ctl_send(x, MSG_RESUMED, NULL, 0);
out:
	proto_msg_free(&m);
	return x;
}

/* Take over a socket migrate-recover opened (this thread alone polls it). */
static void dst_take_next_listener(struct mig_dest *d)
{
	int fd;

	pthread_mutex_lock(&d->c.lock);
	fd = d->lfd_next;
	d->lfd_next = -1;
	pthread_mutex_unlock(&d->c.lock);
	if (fd < 0)
		return;
	if (d->lfd_extra >= 0)
		close(d->lfd_extra);
	d->lfd_extra = fd;
}

#define RENDEZVOUS_POLL_MS 200   /* how soon a migrate-recover socket is served */

static void *dst_rendezvous_thread(void *arg)
{
	struct mig_dest *d = arg;

	for (;;) {
		struct pollfd p[3] = {
			{ .fd = d->quit_efd, .events = POLLIN },
			{ .fd = d->lfd, .events = POLLIN },
			{ .fd = d->lfd_extra, .events = POLLIN },
		};
		int n;

		dst_take_next_listener(d);
		p[2].fd = d->lfd_extra;   /* a negative fd is ignored by poll */
		n = poll(p, 3, RENDEZVOUS_POLL_MS);
		if (n < 0 && errno != EINTR)
			return NULL;
		if (p[0].revents)
			return NULL;
		for (int i = 1; i < 3 && n > 0; i++) {
			struct xport *x = NULL;

			if (!p[i].revents)
				continue;
			/* bounded: a stranger is dropped after its greeting deadline */
			if (xport_accept(&x, d->o.transport, p[i].fd, MIG_HANDSHAKE_TIMEOUT_MS,
					 d->c.sec) == 0)
				x = dst_serve_reconnect(d, x, p[i].fd);
			xport_close(x);
		}
	}
}

int mig_dest_recover_listen(struct mig_dest *d, const char *host, uint16_t port)
{
	enum mig_state st = mig_get_state(&d->c);
	int fd, ret;

	if (st != MIG_PAUSED && st != MIG_RECOVERING && st != MIG_UNKNOWN)
		return err_set(-EINVAL, "the migration is %s: migrate-recover is for postcopy-paused, "
			       "recovering or outcome-unknown", mig_state_name(st));
	if (!d->rendezvous_started)
		return err_set(-EINVAL, "this migration has no reconnections (the source is umig 0.1)");
	ret = xsec_check_addr(d->c.sec, host, d->o.insecure, "migrate-recover");
	if (ret < 0)
		return ret;
	fd = xconn_tcp_listen(host, port);
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&d->c.lock);
	if (d->lfd_next >= 0)
		close(d->lfd_next);
	d->lfd_next = fd;
	pthread_mutex_unlock(&d->c.lock);
	pr_info("incoming: migrate-recover: also waiting for the source on %s:%u", host, port);
	return 0;
}

int mig_dest_resolve(struct mig_dest *d, int owner)
{
	enum mig_state st = mig_get_state(&d->c);

	if (owner != MIG_OWNER_SOURCE && owner != MIG_OWNER_DEST)
		return err_set(-EINVAL, "owner must be 'source' or 'destination'");
	if (st != MIG_UNKNOWN)
		return err_set(-EINVAL, "the migration is %s, not outcome-unknown: there is nothing "
			       "to resolve", mig_state_name(st));
	pr_warn("incoming: the operator says the guest belongs to the %s",
		owner == MIG_OWNER_DEST ? "destination: it runs here" : "source: the copy here is dropped");
	dst_decide(d, owner == MIG_OWNER_DEST ? RESOLVE_COMMIT : RESOLVE_ABORT);
	return 0;
}

static int dst_start_rendezvous(struct mig_dest *d)
{
	if (d->rendezvous_started)
		return 0;
	if (pthread_create(&d->rendezvous_thread, NULL, dst_rendezvous_thread, d))
		return err_set(-EAGAIN, "cannot start the reconnection listener");
	d->rendezvous_started = true;
	return 0;
}

/* The link failed after READY: hold the guest paused until the source decides. */
static int dst_await_decision(struct mig_dest *d, int why)
{
	mig_set_state(&d->c, MIG_UNKNOWN);
	pr_err("incoming: the link failed after READY (%s); the guest stays paused here until "
	       "the source says who owns it (outcome unknown)", err_msg(why));
	mig_keepalive_stop(&d->c);
	pthread_mutex_lock(&d->c.lock);
	/* deliberately unbounded (docs/protocol.md): only the source's decision ends it */
	while (!d->decision)
		pthread_cond_wait(&d->c.cond, &d->c.lock);
	pthread_mutex_unlock(&d->c.lock);
	if (d->decision == RESOLVE_ABORT)
		return err_set(-ECANCELED, "the source kept the guest; the copy here was dropped");
	pr_info("incoming: the source redelivered the commit; the guest runs here");
	mig_set_state(&d->c, MIG_SWITCHOVER);
	return 0;
}

int dst_handover(struct mig_dest *d)
{
	struct proto_msg m = { 0 };
	int ret;

	if (!(d->c.x->features & FEAT_COMMIT))
		return 0;   /* version 1: the guest runs as soon as it is loaded */
	ret = dst_start_rendezvous(d);
	if (!ret) {
		pthread_mutex_lock(&d->c.lock);
		d->ready_sent = true;   /* from here a broken page channel is recovered, not fatal */
		pthread_mutex_unlock(&d->c.lock);
		d->dt.ready_tx = now_ns();
		ret = xport_ctl_send(d->c.x, MSG_READY, NULL, 0);
	}
	if (ret < 0)
		return ret;   /* READY never left: the source cannot have committed */
	ret = mig_ctl_recv(&d->c, &m, "COMMIT");
	d->dt.commit_rx = now_ns();
	if (!ret && m.type == MSG_COMMIT)
		dst_decide(d, RESOLVE_COMMIT);
	else if (!ret && (m.type == MSG_ABORT || m.type == MSG_ERROR))
		dst_decide(d, RESOLVE_ABORT);
	proto_msg_free(&m);
	if (!d->decision)
		return dst_await_decision(d, ret < 0 ? ret :
					  err_set(-EPROTO, "control channel: unexpected type after READY"));
	if (d->decision == RESOLVE_ABORT)
		return err_set(-ECANCELED, "the source kept the guest; the copy here was dropped");
	return 0;
}
