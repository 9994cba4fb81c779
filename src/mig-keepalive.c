/*
 * mig-keepalive.c - liveness on the control connection, both sides.
 *
 * TCP notices a peer that resets, not one that vanishes (a dead host, a
 * partition, a process stopped with SIGSTOP): a blocked receive then
 * waits for minutes.  With FEAT_KEEPALIVE negotiated each side sends an
 * empty PING every peer_timeout / 5 from a thread of its own, and every
 * control receive gives up after peer_timeout of silence, so a silent
 * peer is noticed within the peer timeout whatever the engine is doing.
 * The page connections carry TCP_USER_TIMEOUT for the same bound on
 * sends that are never acknowledged.
 */
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <string.h>
#include <unistd.h>

#include "mig.h"

static bool mig_keepalive_on(struct mig_common *c)
{
	return c->x && (c->x->features & FEAT_KEEPALIVE);
}

static void *mig_keepalive_thread(void *arg)
{
	struct mig_common *c = arg;
	int interval = MAX(c->peer_timeout_ms / 5, 50u);

	for (;;) {
		struct pollfd p = { .fd = c->ka_efd, .events = POLLIN };
		int r = poll(&p, 1, interval);

		if (r < 0 && errno == EINTR)
			continue;
		if (r != 0)
			return NULL;
		/* a failed send means the link is gone: the receivers say so */
		if (xport_ctl_send(c->x, MSG_PING, NULL, 0) < 0)
			return NULL;
	}
}

int mig_keepalive_start(struct mig_common *c)
{
	if (!mig_keepalive_on(c) || c->ka_started)
		return 0;
	c->ka_efd = eventfd(0, EFD_CLOEXEC);
	if (c->ka_efd < 0)
		return err_set(-errno, "keepalive: eventfd: %s", strerror(errno));
	if (pthread_create(&c->ka_thread, NULL, mig_keepalive_thread, c)) {
		close(c->ka_efd);
		return err_set(-EAGAIN, "cannot start the keepalive thread");
	}
	c->ka_started = true;
	return 0;
}

void mig_keepalive_stop(struct mig_common *c)
{
	uint64_t one = 1;

	if (!c->ka_started)
		return;
	if (write(c->ka_efd, &one, sizeof(one)) != sizeof(one))
		pr_debug("%s: cannot stop the keepalive thread", c->side);
	pthread_join(c->ka_thread, NULL);
	close(c->ka_efd);
	c->ka_started = false;
}

int mig_ctl_recv(struct mig_common *c, struct proto_msg *m, const char *what)
{
	int timeout = mig_keepalive_on(c) ? (int)c->peer_timeout_ms : -1;

	/* bounded: every PING restarts the clock, and each one is a message */
	for (;;) {
		int ret = xport_ctl_recv(c->x, m, timeout);

		if (ret == -ETIMEDOUT)
			return err_set(ret, "the peer was silent for %.1f s while this side waited for %s",
				       timeout / 1000.0, what);
		if (ret < 0)
			return err_set(ret, "waiting for %s: %s", what, err_msg(ret));
		/* PLACED answers hybrid's early discards; the source may read it late */
		if (m->type != MSG_PING && m->type != MSG_PLACED)
			return 0;
	}
}

int mig_ctl_expect(struct mig_common *c, struct proto_msg *m, uint16_t type, const char *what)
{
	char text[1100];
	int ret = mig_ctl_recv(c, m, what);

	if (ret < 0)
		return ret;
	if (m->type == MSG_ERROR) {
		proto_error_text(m, text, sizeof(text));
		return err_set(-ECONNABORTED, "the %s failed: %s",
			       c->x->source ? "destination" : "source", text);
	}
	if (m->type != type)
		return err_set(-EPROTO, "control channel: expected %s (type %u), got type %u", what,
			       type, m->type);
	return 0;
}
