/*
 * mig-handshake.c - the first step of a migration, on both sides: the
 * control connection, HELLO, version and feature negotiation, admission
 * checks at the destination, then the page channels.
 *
 *   source                               destination
 *   greeting (lowest version 1)  ---->   checks magic, version, channel
 *   HELLO (mode, RAM, FEAT_HELLO2) --->  checks every field, admission
 *                                <----   HELLO_ACK (FEAT_HELLO2) | ERROR
 *   HELLO2 (versions, features)  ---->   picks version and features
 *                                <----   HELLO2_ACK | ERROR
 *   page channels (transport)    ---->   accepted for this session only
 *
 * A umig 0.1 destination answers HELLO_ACK with no features, and a 0.1
 * source sends no FEAT_HELLO2: the session then stays at version 1,
 * whose frames are a subset of what this umig sends.  Every wait here is
 * bounded; a refusal costs the source one connection and its guest runs on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "mig.h"
#include "umig/admit.h"

/* Read one control message, turning ERROR into a failure with its text. */
static int hs_expect(struct mig_source *s, struct proto_msg *m, uint16_t type)
{
	char text[1100];
	int ret = xport_ctl_recv(s->c.x, m, MIG_HANDSHAKE_TIMEOUT_MS);

	if (ret == -ETIMEDOUT)
		return err_set(ret, "the destination did not answer the handshake within %d s",
			       MIG_HANDSHAKE_TIMEOUT_MS / 1000);
	if (ret < 0)
		return err_set(ret, "handshake: %s", err_msg(ret));
	if (m->type == MSG_ERROR) {
		proto_error_text(m, text, sizeof(text));
		return err_set(-ECONNREFUSED, "the destination refused: %s", text);
	}
	if (m->type != type)
		return err_set(-EPROTO, "handshake: expected message type %u, got %u", type, m->type);
	return 0;
}

static int src_send_encoded(struct mig_source *s, uint16_t type, struct wbuf *w)
{
	int ret = w->err ? w->err : xport_ctl_send(s->c.x, type, w->data, w->len);

	wbuf_free(w);
	return ret;
}

/* With FEAT_STREAMS: how many bulk connections follow (docs/protocol.md). */
static int src_send_streams(struct mig_source *s)
{
	uint8_t b[8] = { 0 };
	struct wbuf w = { .data = b, .cap = sizeof(b) };

	if (!(s->c.x->features & FEAT_STREAMS))
		return 0;
	s->c.x->streams = s->p.streams;
	wbuf_put_u32(&w, s->p.streams);
	return xport_ctl_send(s->c.x, MSG_STREAMS, b, sizeof(b));
}

/* HELLO2 and its answer: the version and the features of the session. */
static int src_negotiate(struct mig_source *s, struct proto_msg *m)
{
	/* the transport's bit is required: pages go over it or not at all */
	uint64_t feat = s->c.x->ops->feature;
	/* a transport's optional bits (one-sided READ) only serve post-copy */
	bool post = s->p.mode == MIG_MODE_POST || s->p.mode == MIG_MODE_HYBRID;
	struct proto_hello2 h = {
		.min_version = 2, .max_version = PROTO_VERSION_MAX,
		/* TLS records authenticate everything; frame digests are for plaintext */
		.offered = (((FEAT_KNOWN & ~FEAT_HELLO2 & ~FEAT_TRANSPORTS & ~FEAT_XPORT_OPTIONAL) | feat |
			    (post ? s->c.x->ops->optional : 0))) & ~(s->c.sec ? FEAT_DIGEST : FEAT_TLS),
		.required = feat | (s->c.sec ? FEAT_TLS : 0),
	};
	struct proto_hello2_ack a;
	struct wbuf w;
	int ret;

	if (s->p.streams <= 1)
		h.offered &= ~FEAT_STREAMS;   /* one stream is what every umig does */
	if (!(s->c.x->ops->caps & XCAP_URGENT_RUNS))
		h.offered &= ~FEAT_URGENT_RUNS;
	wbuf_init(&w);
	proto_encode_hello2(&w, &h);
	ret = src_send_encoded(s, MSG_HELLO2, &w);
	if (!ret)
		ret = hs_expect(s, m, MSG_HELLO2_ACK);
	if (!ret)
		ret = proto_decode_hello2_ack(m, &a);
	if (!ret)
		ret = proto_check_ack(&h, &a);
	if (ret < 0)
		return ret;
	s->c.x->version = a.version;
	xport_set_features(s->c.x, a.features);
	if (a.features & FEAT_RECOVER) {
		/* what a reconnection must prove it knows (mig-recover.c) */
		if (gnutls_rnd(GNUTLS_RND_KEY, s->c.secret, sizeof(s->c.secret)) < 0)
			return err_set(-EIO, "cannot draw the migration's secret");
		s->c.x->secret = s->c.secret;
		ret = xport_ctl_send(s->c.x, MSG_SECRET, s->c.secret, sizeof(s->c.secret));
		/* under TLS the secret is worth nothing without this TLS session */
		if (!ret)
			ret = xport_bind_secret(s->c.x, s->c.secret);
	}
	return ret < 0 ? ret : src_send_streams(s);
}

int src_handshake(struct mig_source *s)
{
	struct proto_hello h = {
		/* pre with a post-copy fallback: the destination must be ready for both */
		.page_size = PAGE_SIZE, .ram_size = s->c.vm->mem.size,
		.mode = src_post_mode(s) && s->p.mode == MIG_MODE_PRE ? MIG_MODE_HYBRID : s->p.mode,
		.features = FEAT_HELLO2,
	};
	struct proto_msg m = { 0 };
	struct wbuf w;
	uint64_t session, acked = 0;
	int ret;

	if (getrandom(&session, sizeof(session), 0) != sizeof(session))
		session = now_realtime_ns();
	ret = xport_connect(&s->c.x, s->p.transport, s->p.host, s->p.port, session,
			    MIG_CONNECT_TIMEOUT_MS, s->c.sec);
	if (ret < 0)
		return ret;
	s->c.x->npages = s->c.npages;
	s->c.x->peer_timeout_ms = s->c.peer_timeout_ms;
	xconn_tcp_set_user_timeout(s->c.x->ctl, s->c.peer_timeout_ms);
	wbuf_init(&w);
	proto_encode_hello(&w, &h);
	ret = src_send_encoded(s, MSG_HELLO, &w);
	if (!ret)
		ret = hs_expect(s, &m, MSG_HELLO_ACK);
	if (!ret)
		ret = proto_decode_hello_ack(&m, &acked);
	if (!ret && (acked & FEAT_HELLO2))
		ret = src_negotiate(s, &m);
	proto_msg_free(&m);
	if (!ret && s->p.streams > 1 && !(s->c.x->features & FEAT_STREAMS))
		pr_warn("migration: the destination takes one bulk stream (an older umig); "
			"--streams %u falls back to 1", s->p.streams);
	if (!ret && (s->c.x->ops->feature & ~s->c.x->features))
		ret = err_set(-EPROTONOSUPPORT, "the destination cannot take pages over %s (a umig "
			      "before 0.2, or one built without it): use --transport tcp",
			      s->c.x->ops->name);
	if (ret < 0)
		return xport_explain_refusal(s->c.x, ret);
	s->c.x->busy_poll = s->p.rdma_poll;
	s->c.x->odp = s->p.rdma_odp;
	pr_debug("migration: protocol version %u, features %#llx", s->c.x->version,
		 (unsigned long long)s->c.x->features);
	src_expose_ram(s, s->c.x);
	ret = xport_connect_data(s->c.x, s->p.host, s->p.port, MIG_CONNECT_TIMEOUT_MS);
	return ret < 0 ? ret : mig_keepalive_start(&s->c);
}

/* --- destination --------------------------------------------------------------- */

/* Refuse now, while the source guest still runs untouched. */
static int dst_admit(struct mig_dest *d)
{
	if (d->o.expect_ram && d->o.expect_ram != d->hello.ram_size)
		return err_set(-EINVAL, "RAM size mismatch: the source has %llu MiB, this destination expects %llu MiB",
			       (unsigned long long)(d->hello.ram_size >> 20),
			       (unsigned long long)(d->o.expect_ram >> 20));
	if (!d->o.overcommit) {
		int ret = admit_guest_ram(d->hello.ram_size);

		if (ret < 0)
			return ret;
	}
	if (dst_postcopy_mode(d)) {
		struct uffd probe = { .fd = -1 };
		int ret = uffd_open(&probe);

		uffd_close(&probe);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Both ends must name the same page transport. */
static int dst_check_transport(struct mig_dest *d, uint64_t offered)
{
	uint64_t mine = d->c.x->ops->feature;

	if ((offered & FEAT_TRANSPORTS) == mine)
		return 0;
	if (!mine)
		return err_set(-EPROTONOSUPPORT, "the source sends pages over rdma; this destination "
			       "takes them over tcp (start it with --transport rdma)");
	return err_set(-EPROTONOSUPPORT, "this destination takes pages over %s only; migrate "
		       "with --transport %s", d->c.x->ops->name, d->c.x->ops->name);
}

/* With FEAT_STREAMS: STREAMS, the number of bulk connections to accept. */
static int dst_recv_streams(struct mig_dest *d, struct proto_msg *m)
{
	struct rbuf r;
	uint32_t n;
	int ret;

	if (!(d->c.x->features & FEAT_STREAMS))
		return 0;
	ret = xport_ctl_recv(d->c.x, m, MIG_HANDSHAKE_TIMEOUT_MS);
	if (!ret && m->type != MSG_STREAMS)
		ret = err_set(-EPROTO, "expected STREAMS, got message type %u", m->type);
	if (ret < 0)
		return ret;
	rbuf_init(&r, m->payload, m->len);
	n = rbuf_get_u32(&r);
	if (n < 2 || n > XSTREAMS_MAX || rbuf_get_u32(&r) != 0)
		return err_set(-EPROTO, "STREAMS: %u bulk streams (2..%d)", n, XSTREAMS_MAX);
	d->c.x->streams = n;
	return 0;
}

/*
 * hugetlb RAM can be placed in post-copy only whole 2 MiB pages at a
 * time, so the source must answer a fault with the whole unit and discard
 * whole units (FEAT_HUGE2M).  Pre-copy and stop-copy write RAM directly
 * and take any source.
 */
static int dst_check_huge(struct mig_dest *d, uint64_t features)
{
	if (d->c.vm->mem.backing != MEM_HUGETLB || !dst_postcopy_mode(d) ||
	    (features & FEAT_HUGE2M))
		return 0;
	return err_set(-EPROTONOSUPPORT, "this destination's guest RAM is 2 MiB huge pages "
		       "(--ram-backing hugetlb) and the source cannot migrate post-copy in 2 MiB "
		       "units (FEAT_HUGE2M, which umig 0.1 lacks): upgrade the source, migrate in pre or "
		       "stop-copy mode, or start this side with --ram-backing anon");
}

static int dst_negotiate(struct mig_dest *d, struct proto_msg *m)
{
	uint64_t known = (FEAT_KNOWN & ~FEAT_HELLO2 & ~FEAT_TRANSPORTS & ~FEAT_XPORT_OPTIONAL) |
			 d->c.x->ops->feature | d->c.x->ops->optional;
	/* several bulk connections only where the transport has them */
	if (!(d->c.x->ops->caps & XCAP_STREAMS))
		known &= ~FEAT_STREAMS;
	if (!(d->c.x->ops->caps & XCAP_URGENT_RUNS))
		known &= ~FEAT_URGENT_RUNS;
	struct proto_hello2 h;
	struct proto_hello2_ack a;
	struct wbuf w;
	int ret = xport_ctl_recv(d->c.x, m, MIG_HANDSHAKE_TIMEOUT_MS);

	if (ret == -ETIMEDOUT)
		ret = err_set(ret, "no HELLO2 within %d s", MIG_HANDSHAKE_TIMEOUT_MS / 1000);
	if (!ret)
		ret = proto_decode_hello2(m, &h);
	if (!ret)
		ret = dst_check_transport(d, h.offered);
	/*
	 * 2 MiB units only for hugetlb RAM, which the one-sided pull does not
	 * place, and whose discards drop whole units: only at the pause, where
	 * the source rounds them out (src_discard_dirty)
	 */
	if (d->c.vm->mem.backing == MEM_HUGETLB)
		known &= ~(FEAT_RDMA_READ | FEAT_RDMA_MR_ACK | FEAT_EARLY_DISCARD);
	else
		known &= ~FEAT_HUGE2M;
	if (!ret)
		ret = proto_negotiate(&h, known & ~(d->c.sec ? FEAT_DIGEST : FEAT_TLS), &a);
	if (!ret)
		ret = dst_check_huge(d, a.features);
	if (!ret && d->c.sec && !(a.features & FEAT_TLS))
		ret = err_set(-EPROTO, "this destination runs TLS and the source does not bind its "
			      "channels to the session (FEAT_TLS)");
	if (ret < 0)
		return ret;
	wbuf_init(&w);
	proto_encode_hello2_ack(&w, &a);
	ret = w.err ? w.err : xport_ctl_send(d->c.x, MSG_HELLO2_ACK, w.data, w.len);
	wbuf_free(&w);
	d->c.x->version = a.version;
	xport_set_features(d->c.x, a.features);
	if (ret < 0 || !(a.features & FEAT_RECOVER))
		return ret < 0 ? ret : dst_recv_streams(d, m);
	ret = xport_ctl_recv(d->c.x, m, MIG_HANDSHAKE_TIMEOUT_MS);
	if (!ret && m->type != MSG_SECRET)
		ret = err_set(-EPROTO, "expected the migration's secret, got message type %u", m->type);
	if (!ret) {
		memcpy(d->c.secret, m->payload, sizeof(d->c.secret));
		d->c.x->secret = d->c.secret;
	}
	if (!ret)
		ret = xport_bind_secret(d->c.x, d->c.secret);
	return ret < 0 ? ret : dst_recv_streams(d, m);
}

int dst_handshake(struct mig_dest *d, int lfd)
{
	struct vm_config cfg = { .console_fd = d->o.console_fd, .backend = d->o.backend,
				 .backing = d->o.backing };
	struct proto_msg m = { 0 };
	uint8_t ack[8] = { 0 };
	int ret;

	ret = xport_accept(&d->c.x, d->o.transport, lfd, -1, d->c.sec);
	if (!ret)
		ret = xport_ctl_recv(d->c.x, &m, MIG_HANDSHAKE_TIMEOUT_MS);
	if (ret == -ETIMEDOUT)
		ret = err_set(ret, "no HELLO within %d s", MIG_HANDSHAKE_TIMEOUT_MS / 1000);
	if (!ret)
		ret = proto_decode_hello(&m, &d->hello);
	if (!ret && !(d->hello.features & FEAT_HELLO2))
		ret = dst_check_transport(d, 0);
	if (!ret)
		ret = dst_admit(d);
	if (!ret) {
		cfg.mem_size = d->hello.ram_size;
		ret = vm_create(&d->c.vm, &cfg);
	}
	if (ret < 0)
		goto refuse;
	d->c.npages = mem_pages(&d->c.vm->mem);
	d->place_continue = d->c.vm->mem.backing == MEM_MEMFD && d->o.place_continue;
	d->huge = d->c.vm->mem.backing == MEM_HUGETLB;
	d->c.x->npages = d->c.npages;
	d->c.x->peer_timeout_ms = d->c.peer_timeout_ms;
	xconn_tcp_set_user_timeout(d->c.x->ctl, d->c.peer_timeout_ms);
	ack[0] = d->hello.features & FEAT_HELLO2;
	ret = xport_ctl_send(d->c.x, MSG_HELLO_ACK, ack, 8);
	if (!ret && (d->hello.features & FEAT_HELLO2))
		ret = dst_negotiate(d, &m);
	else if (!ret)
		ret = dst_check_huge(d, 0);   /* a version 1 source */
	proto_msg_free(&m);
	if (ret < 0)
		goto refuse;
	d->c.x->busy_poll = d->o.rdma_poll;
	pr_debug("incoming: protocol version %u, features %#llx", d->c.x->version,
		 (unsigned long long)d->c.x->features);
	dst_offer_place(d, d->c.x);
	ret = xport_accept_data(d->c.x, lfd, MIG_HANDSHAKE_TIMEOUT_MS);
	return ret < 0 ? ret : mig_keepalive_start(&d->c);
refuse:
	proto_msg_free(&m);
	pr_err("incoming: refusing the migration: %s", err_msg(ret));
	if (d->c.x)
		xport_ctl_error(d->c.x, ret, err_msg(ret));
	return ret;
}
