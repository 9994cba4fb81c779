/*
 * mig-recover.c - post-copy that survives a broken link (FEAT_RECOVER).
 *
 * After the commit the guest's memory is split between the hosts, so a
 * link that breaks, resets or goes silent must not lose it.  Both sides
 * enter postcopy-paused instead of failing: the destination's guest runs
 * on wherever its pages are present and blocks only on missing ones; the
 * source keeps guest RAM and its bookkeeping.  The source reconnects with
 * backoff (the destination keeps listening) for up to --recover-timeout:
 *
 *   source                                    destination
 *   greeting (same session) + RECOVER(ns) --> 
 *                                        <--  RECOVER_CHALLENGE(nd, MAC_d)
 *   RECOVER_AUTH(MAC_s)                   -->  (both MACs checked)
 *                                        <--  RECOVER_STATE: present runs
 *   page channels, anew                   -->  bulk receiver, fault thread
 *
 * MAC_x = HMAC-SHA256(secret, "umig recover " x || session || ns || nd),
 * with the 32-byte secret the source sent at handshake (MSG_SECRET) and
 * fresh nonces on both sides, so a reconnection proves it belongs to this
 * migration and cannot be replayed; the session id alone proves nothing.
 * The source then sends again exactly the pages it had sent that never
 * became present (pages_lost_in_flight), the destination asks again for
 * the faults it had not been answered, and post-copy goes on.  A second
 * failure, during recovery too, is handled the same way.
 *
 * A reconnection refused by the destination's host means nothing listens
 * there: the destination died, and the pages never sent exist only here.
 * Silence means a partition, retried until the recover timeout.
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <string.h>
#include <unistd.h>

#include "mig.h"

#define RECOVER_BACKOFF_MIN_MS 100
#define RECOVER_BACKOFF_MAX_MS 1000
#define RECOVER_CLOSED_MAX 3   /* connections closed unanswered before the peer counts as dead */
#define RECOVER_STEP_MS        3000   /* each message of the exchange */

/*
 * MAC over (who, session, both nonces) with the migration's secret; under
 * TLS also over an exporter of the reconnection's own TLS session, so the
 * proof is good for this connection only.
 */
static int recover_mac(struct xport *x, const uint8_t *secret, char who, uint64_t session,
		       const uint8_t *ns, const uint8_t *nd, uint8_t *out)
{
	uint8_t msg[13 + 1 + 8 + 2 * PROTO_NONCE_LEN + 32], tls[32];
	struct wbuf w = { .data = msg, .cap = sizeof(msg) };

	wbuf_put(&w, "umig recover ", 13);
	wbuf_put_u8(&w, who);
	wbuf_put_u64(&w, session);
	wbuf_put(&w, ns, PROTO_NONCE_LEN);
	wbuf_put(&w, nd, PROTO_NONCE_LEN);
	if (x->sec) {
		if (xport_ctl_exporter(x, "EXPORTER-umig-reconnect", tls, sizeof(tls)) < 0)
			return err_set(-EIO, "recovery: no TLS exporter");
		wbuf_put(&w, tls, sizeof(tls));
	}
	if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret, PROTO_SECRET_LEN, msg, w.len, out) < 0)
		return err_set(-EIO, "recovery: HMAC-SHA256 failed");
	return 0;
}

static bool mac_equal(const uint8_t *a, const uint8_t *b)
{
	uint8_t d = 0;

	for (int i = 0; i < PROTO_MAC_LEN; i++)
		d |= a[i] ^ b[i];
	return !d;
}

/* --- source ------------------------------------------------------------------ */

/* Apply RECOVER_STATE frames: sent := present at the destination. */
static int src_resync(struct mig_source *s, struct xport *x)
{
	uint64_t before = bitmap_count(&s->sent), now = 0;
	struct proto_msg m = { 0 };
	uint32_t flags = 0;
	int ret = 0;

	bitmap_clear_all(&s->sent);
	/* bounded: each frame carries at least its flags, and one says last */
	while (!ret && !(flags & 1)) {
		struct proto_run run;
		struct rbuf r;

		ret = xport_ctl_recv(x, &m, RECOVER_STEP_MS);
		if (!ret && m.type != MSG_RECOVER_STATE)
			ret = err_set(-EPROTO, "recovery: expected RECOVER_STATE, got type %u", m.type);
		if (ret < 0)
			break;
		rbuf_init(&r, m.payload, m.len);
		flags = rbuf_get_u32(&r);
		while ((ret = proto_next_run(&r, s->c.npages, NULL, "recovery: present", &run)) > 0)
			bitmap_set_range(&s->sent, run.pfn, run.n);
	}
	proto_msg_free(&m);
	if (ret < 0)
		return ret;
	now = bitmap_count(&s->sent);
	if (before > now)
		s->pages_lost_in_flight += before - now;
	pr_info("migration: recovered: the destination has %llu of %llu pages; %llu sent before "
		"the break never arrived and go again", (unsigned long long)now,
		(unsigned long long)s->c.npages,
		(unsigned long long)(before > now ? before - now : 0));
	/* the policy starts over, skipping what is present */
	prepage_destroy(s->pp);
	return prepage_create(&s->pp, s->p.prepaging, s->c.npages, &s->sent);
}

/*
 * One attempt: 1 recovered on *out, 2 the destination had already
 * completed (its COMPLETE kept in s->complete_early, the connection on
 * *out), 0 no answer, -ESRCH nobody there, -ENOTCONN closed before it
 * answered, < 0 refused.
 */
static int src_try_recover(struct mig_source *s, struct xport **out)
{
	uint8_t ns[PROTO_NONCE_LEN], mac[PROTO_MAC_LEN], want[PROTO_MAC_LEN];
	struct proto_msg m = { 0 };
	struct xport *x = NULL;
	char text[1100], host[256];
	uint16_t port;
	int ret;

	src_target(s, host, &port);
	ret = xport_connect(&x, s->p.transport, host, port, s->c.x->session,
			    RECOVER_BACKOFF_MAX_MS, s->c.sec);
	if (ret == -ECONNREFUSED)
		return -ESRCH;
	if (ret < 0)
		return 0;
	gnutls_rnd(GNUTLS_RND_NONCE, ns, sizeof(ns));
	ret = xport_ctl_send(x, MSG_RECOVER, ns, sizeof(ns));
	if (!ret)
		ret = xport_ctl_recv(x, &m, RECOVER_STEP_MS);
	if (ret == -EPIPE || ret == -ECONNRESET) {
		/*
		 * the host answered, but nothing there speaks for this migration
		 * - or the destination was still busy with a failed attempt:
		 * the caller believes it only when it happens again
		 */
		xport_close(x);
		return -ENOTCONN;
	}
	if (!ret && m.type == MSG_COMPLETE) {
		/* every page had arrived: the break cost only the final exchange */
		json_error_t jerr;

		s->complete_early = json_loadb((char *)m.payload, m.len, 0, &jerr);
		x->npages = s->c.npages;
		x->version = s->c.x->version;
		x->features = s->c.x->features;
		proto_msg_free(&m);
		*out = x;
		return 2;
	}
	if (!ret && m.type == MSG_ERROR) {
		proto_error_text(&m, text, sizeof(text));
		ret = err_set(-ECONNREFUSED, "the destination refused to recover: %s", text);
		goto out;
	}
	if (!ret && m.type != MSG_RECOVER_CHALLENGE)
		ret = err_set(-EPROTO, "recovery: expected a challenge, got type %u", m.type);
	if (!ret)
		ret = recover_mac(x, s->c.secret, 'd', x->session, ns, m.payload, want);
	if (!ret && !mac_equal(want, m.payload + PROTO_NONCE_LEN))
		ret = err_set(-EACCES, "recovery: the destination failed authentication");
	if (!ret)
		ret = recover_mac(x, s->c.secret, 's', x->session, ns, m.payload, mac);
	if (!ret)
		ret = xport_ctl_send(x, MSG_RECOVER_AUTH, mac, sizeof(mac));
	if (!ret) {
		x->npages = s->c.npages;
		x->peer_timeout_ms = s->c.peer_timeout_ms;
		x->version = s->c.x->version;
		xport_set_features(x, s->c.x->features);
		x->streams = s->c.x->streams;
		x->secret = s->c.secret;
		x->busy_poll = s->c.x->busy_poll;
		x->odp = s->c.x->odp;
		xconn_tcp_set_user_timeout(x->ctl, s->c.peer_timeout_ms);
		mig_set_state(&s->c, MIG_RECOVERING);
		ret = src_resync(s, x);
	}
	if (!ret) {
		src_expose_ram(s, x);
		ret = xport_connect_data(x, host, port, RECOVER_STEP_MS);
	}
out:
	proto_msg_free(&m);
	if (ret == 0) {
		*out = x;
		return 1;
	}
	pr_debug("migration: recovery attempt: %s", err_msg(ret));
	xport_close(x);
	/* a refusal or a failed proof is final; anything else is retried */
	return ret == -ECONNREFUSED || ret == -EACCES ? ret : 0;
}

int src_recover(struct mig_source *s, int why)
{
	uint64_t t0 = now_ns(), deadline = t0 + s->c.recover_timeout_ms * 1000000ull;
	unsigned backoff = RECOVER_BACKOFF_MIN_MS;
	struct xport *x = NULL;
	int ret;

	if (!(s->c.x->features & FEAT_RECOVER))
		return why;
	pthread_mutex_lock(&s->c.lock);
	s->paused_since = t0;
	snprintf(s->paused_why, sizeof(s->paused_why), "%s", err_msg(why));
	pthread_mutex_unlock(&s->c.lock);
	mig_set_state(&s->c, MIG_PAUSED);
	pr_err("migration: post-copy paused: %s; the guest's pages stay here, reconnecting for up "
	       "to %u s", err_msg(why), s->c.recover_timeout_ms / 1000);
	mig_keepalive_stop(&s->c);
	xport_shutdown(s->c.x);
	if (s->urgent_started) {
		pthread_join(s->urgent_thread, NULL);
		s->urgent_started = false;
	}
	for (unsigned closed = 0;;) {
		if (s->cancel_recovery)
			return err_set(-ECANCELED, "umig is exiting: post-copy recovery abandoned");
		ret = src_try_recover(s, &x);
		if (ret == 1 || ret == 2)
			break;
		/* closed unanswered three times running: nothing there knows this migration */
		closed = ret == -ENOTCONN ? closed + 1 : 0;
		if (ret == -ENOTCONN)
			ret = closed >= RECOVER_CLOSED_MAX ? -ESRCH : 0;
		if (ret == -ESRCH && (xport_caps(s->c.x) & XCAP_ONESIDED))
			return err_set(-ESRCH, "the destination died after switchover; the guest's pages "
				       "it had not READ yet exist only here");
		if (ret == -ESRCH) {
			return err_set(-ESRCH, "the destination died after switchover; the guest's pages "
				       "not yet sent exist only here (%llu of %llu present there)",
				       (unsigned long long)bitmap_count(&s->sent),
				       (unsigned long long)s->c.npages);
		}
		if (ret < 0)
			return ret;
		if (now_ns() >= deadline)
			return err_set(-ETIMEDOUT, "post-copy could not recover within %u s: %s",
				       s->c.recover_timeout_ms / 1000, err_msg(why));
		mig_set_state(&s->c, MIG_PAUSED);
		src_backoff(s, backoff);   /* cut short by migrate resume:true */
		backoff = MIN(backoff * 2, RECOVER_BACKOFF_MAX_MS);
	}
	mig_swap_xport(&s->c, x);
	s->recoveries++;
	s->paused_ms += (now_ns() - t0) / 1000000;
	pthread_mutex_lock(&s->c.lock);
	s->paused_since = 0;
	pthread_mutex_unlock(&s->c.lock);
	if (ret == 2) {
		pr_info("migration: the destination had every page before the link broke; "
			"the migration is complete");
		return 1;
	}
	mig_set_state(&s->c, MIG_POSTCOPY);
	return mig_keepalive_start(&s->c);
}

/* --- destination ------------------------------------------------------------------ */

bool dst_recovering_allowed(struct mig_dest *d)
{
	return d->c.x && (d->c.x->features & FEAT_RECOVER);
}

void dst_pause(struct mig_dest *d, int why)
{
	bool first;

	pthread_mutex_lock(&d->c.lock);
	first = d->c.state == MIG_POSTCOPY;
	if (first) {
		d->paused_at = now_ns();
		snprintf(d->c.error, sizeof(d->c.error), "%s", err_msg(why));
	}
	pthread_mutex_unlock(&d->c.lock);
	if (!first)
		return;
	mig_set_state(&d->c, MIG_PAUSED);
	pr_err("incoming: post-copy paused: %s; the guest runs on where its pages are here and "
	       "waits for the source to reconnect (up to %u s)", d->c.error,
	       d->c.recover_timeout_ms / 1000);
	/* every thread on the broken session returns; the fault path waits */
	xport_shutdown(d->c.x);
}

void dst_channel_failed(struct mig_dest *d, int why)
{
	bool recover = dst_recovering_allowed(d), ready;
	enum mig_state st;

	pthread_mutex_lock(&d->c.lock);
	st = d->c.state;
	ready = d->ready_sent;
	if (recover && ready && !d->early_break && (st == MIG_SWITCHOVER || st == MIG_UNKNOWN))
		d->early_break = why;
	pthread_mutex_unlock(&d->c.lock);
	if (st == MIG_FAILED || st == MIG_COMPLETED)
		return;
	if (recover && (st == MIG_POSTCOPY || st == MIG_PAUSED || st == MIG_RECOVERING)) {
		dst_pause(d, why);   /* after the commit: recover, never fail */
		return;
	}
	if (recover && ready) {
		/* the handover decides who owns the guest; post-copy then pauses at once */
		pr_warn("incoming: %s; post-copy will pause for a recovery", err_msg(why));
		return;
	}
	pthread_mutex_lock(&d->c.lock);
	d->bulk_failed = true;
	pthread_mutex_unlock(&d->c.lock);
	mig_fail(&d->c, why);
	/* the driver may be waiting on control: tell the source why, then end the session */
	xport_ctl_error(d->c.x, why, err_msg(why));
	xport_shutdown(d->c.x);
}

/* The present bitmap as runs, in frames of at most 64 Ki runs. */
static int dst_send_present(struct mig_dest *d, struct xport *x)
{
	uint64_t npages = d->c.npages;
	struct wbuf w;
	int ret = 0;

	wbuf_init(&w);
	wbuf_put_u32(&w, 0);
	for (uint64_t pfn = bitmap_next_set(&d->present, 0); pfn < npages && !ret;) {
		uint64_t end = bitmap_next_clear(&d->present, pfn);
		uint64_t n = MIN(end - pfn, (uint64_t)UINT32_MAX);

		wbuf_put_u64(&w, pfn);
		wbuf_put_u32(&w, n);
		pfn += n;
		if (pfn >= end)
			pfn = end < npages ? bitmap_next_set(&d->present, end) : npages;
		if (w.len >= 4 + 12 * 65536) {
			ret = w.err ? w.err : xport_ctl_send(x, MSG_RECOVER_STATE, w.data, w.len);
			wbuf_reset(&w);
			wbuf_put_u32(&w, 0);
		}
	}
	if (!ret) {
		wbuf_patch_u32(&w, 0, 1);
		ret = w.err ? w.err : xport_ctl_send(x, MSG_RECOVER_STATE, w.data, w.len);
	}
	wbuf_free(&w);
	return ret;
}

static int dst_check_proof(struct mig_dest *d, struct xport *x, const struct proto_msg *m)
{
	uint8_t nd[PROTO_NONCE_LEN], mac[PROTO_MAC_LEN], want[PROTO_MAC_LEN];
	uint8_t ch[PROTO_NONCE_LEN + PROTO_MAC_LEN];
	struct proto_msg a = { 0 };
	int ret;

	if (x->session != d->c.x->session)
		return err_set(-ESRCH, "unknown session");
	gnutls_rnd(GNUTLS_RND_NONCE, nd, sizeof(nd));
	ret = recover_mac(x, d->c.secret, 'd', x->session, m->payload, nd, mac);
	memcpy(ch, nd, sizeof(nd));
	memcpy(ch + sizeof(nd), mac, sizeof(mac));
	if (!ret)
		ret = xport_ctl_send(x, MSG_RECOVER_CHALLENGE, ch, sizeof(ch));
	if (!ret)
		ret = xport_ctl_recv(x, &a, RECOVER_STEP_MS);
	if (!ret && a.type != MSG_RECOVER_AUTH)
		ret = err_set(-EPROTO, "recovery: expected RECOVER_AUTH, got type %u", a.type);
	if (!ret)
		ret = recover_mac(x, d->c.secret, 's', x->session, m->payload, nd, want);
	if (!ret && !mac_equal(want, a.payload))
		ret = err_set(-EACCES, "authentication failed");
	proto_msg_free(&a);
	return ret;
}

/*
 * A source that reconnects after this side completed saw the link break
 * after the last page: tell it the migration is complete (the figures of
 * COMPLETE again), and take its statistics if they come.
 */
static void dst_tell_completed(struct mig_dest *d, struct xport *x)
{
	json_t *fig = d->record ? json_incref(d->record) : dst_figures(d);
	char *txt = json_dumps(fig, JSON_COMPACT);
	struct proto_msg m = { 0 };

	json_decref(fig);
	if (txt && !xport_ctl_send(x, MSG_COMPLETE, txt, strlen(txt)) &&
	    !xport_ctl_recv(x, &m, RECOVER_STEP_MS) && m.type == MSG_SRC_STATS) {
		json_error_t jerr;
		json_t *r = json_loadb((char *)m.payload, m.len, 0, &jerr);

		if (r && d->o.stats_path)
			mig_write_json(d->o.stats_path, r);
		json_decref(r);
	}
	free(txt);
	proto_msg_free(&m);
	pthread_mutex_lock(&d->c.lock);
	d->complete_unacked = false;
	pthread_cond_broadcast(&d->c.cond);
	pthread_mutex_unlock(&d->c.lock);
	pr_info("incoming: the source reconnected after the migration completed; told it so");
	xport_close(x);
}

void dst_serve_recover(struct mig_dest *d, struct xport *x, const struct proto_msg *m, int lfd)
{
	enum mig_state st = mig_get_state(&d->c);
	int ret;

	if (dst_recovering_allowed(d) && st == MIG_COMPLETED && x->session == d->c.x->session) {
		dst_tell_completed(d, x);
		return;
	}
	if (!dst_recovering_allowed(d) || (st != MIG_POSTCOPY && st != MIG_PAUSED &&
					   st != MIG_RECOVERING)) {
		xport_ctl_error(x, EINVAL, "nothing to recover here");
		xport_close(x);
		return;
	}
	ret = dst_check_proof(d, x, m);
	if (ret < 0) {
		pr_warn("incoming: a reconnection was refused: %s", err_msg(ret));
		xport_ctl_error(x, -ret, err_msg(ret));
		xport_close(x);
		return;
	}
	/* the source saw the break first: pause here too */
	dst_pause(d, err_set(-ECONNRESET, "the source reconnected"));
	mig_set_state(&d->c, MIG_RECOVERING);
	mig_keepalive_stop(&d->c);
	dst_join_receiver(d);
	if (d->fault_started)
		pthread_join(d->fault_thread, NULL);
	d->fault_started = false;
	x->npages = d->c.npages;
	x->peer_timeout_ms = d->c.peer_timeout_ms;
	x->version = d->c.x->version;
	xport_set_features(x, d->c.x->features);
	x->streams = d->c.x->streams;
	x->secret = d->c.secret;
	x->busy_poll = d->c.x->busy_poll;
	xconn_tcp_set_user_timeout(x->ctl, d->c.peer_timeout_ms);
	ret = dst_send_present(d, x);
	dst_offer_place(d, x);
	if (!ret)
		ret = xport_accept_data(x, lfd, RECOVER_STEP_MS);
	if (ret < 0) {
		pr_warn("incoming: recovery attempt failed: %s", err_msg(ret));
		xport_close(x);
		mig_set_state(&d->c, MIG_PAUSED);
		return;
	}
	d->reads_before += d->c.x->reads;
	d->read_bytes_before += d->c.x->read_bytes;
	mig_swap_xport(&d->c, x);
	pthread_mutex_lock(&d->c.lock);
	d->paused_ns += now_ns() - d->paused_at;
	d->paused_at = 0;
	d->c.error[0] = 0;
	pthread_mutex_unlock(&d->c.lock);
	d->recoveries++;
	d->bulk_post = true;
	mig_set_state(&d->c, MIG_POSTCOPY);
	ret = mig_keepalive_start(&d->c);
	if (!ret)
		ret = dst_start_pull(d);   /* what the old queue pairs had outstanding is READ again */
	if (!ret)
		ret = dst_start_receiver(d);
	if (!ret)
		ret = dst_start_fault_thread(d);
	if (ret < 0)
		dst_pause(d, ret);
	else
		pr_info("incoming: post-copy recovered (%llu of %llu pages present)",
			(unsigned long long)d->present_count, (unsigned long long)d->c.npages);
}
