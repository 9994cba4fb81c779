/*
 * xport.c - what every page transport shares: choosing one by name, the
 * control connection with its greeting (TLS first when credentials are
 * given), accepting connections so that strangers cannot block the real
 * source, the binding of every channel to the session, and control
 * messages; see xport.h.
 *
 * The control connection is TCP whichever transport carries the pages:
 * it is small, ordered and latency-tolerant, and it is where the handshake
 * decides everything else (including whether the page channels may open).
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "umig/log.h"
#include "umig/util.h"
#include "umig/xport.h"
#include "umig/xsec.h"

/* Each accepted connection gets this long for its TLS handshake and greeting. */
#define XPORT_GREET_MS   10000
/* Connections being greeted at once; more wait in the listen backlog. */
#define XPORT_PENDING_MAX 32

static const struct xport_ops *const xport_impls[] = {
	&xport_tcp_ops,
#ifdef UMIG_HAVE_RDMA
	&xport_rdma_ops,
#endif
};

const char *xport_names(void)
{
#ifdef UMIG_HAVE_RDMA
	return "tcp, rdma";
#else
	return "tcp";
#endif
}

static const struct xport_ops *xport_find(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(xport_impls); i++)
		if (!name || !strcmp(name, xport_impls[i]->name))
			return xport_impls[i];
	return NULL;
}

int xport_known(const char *name)
{
	if (xport_find(name))
		return 0;
	if (name && !strcmp(name, "rdma"))
		return err_set(-ENOENT, "this umig was built without RDMA: install libibverbs-dev "
			       "and librdmacm-dev and rebuild (make deps && make), or use tcp");
	return err_set(-ENOENT, "unknown transport '%s' (this umig has: %s)", name, xport_names());
}

int64_t xport_feature(const char *name)
{
	const struct xport_ops *ops = xport_find(name);

	return ops ? (int64_t)ops->feature : xport_known(name);
}

static int xport_new(struct xport **out, const char *transport, struct xconn *ctl)
{
	const struct xport_ops *ops = xport_find(transport);
	struct xport *x;

	if (!ops) {
		xconn_close(ctl);
		return xport_known(transport);
	}
	x = calloc(1, sizeof(*x));
	if (!x) {
		xconn_close(ctl);
		return -ENOMEM;
	}
	x->ops = ops;
	x->caps = ops->caps;
	x->ctl = ctl;
	x->version = 1;
	x->streams = 1;
	pthread_mutex_init(&x->ctl_lock, NULL);
	*out = x;
	return 0;
}

/* --- binding channels to the session ------------------------------------------ */

/*
 * The key every channel of a session is bound with: an exporter of the
 * control connection's TLS session (RFC 8446 section 7.5), which only the
 * two ends of that TLS session can compute.
 */
static int xport_bind_key(struct xport *x)
{
	uint8_t ctx[8];
	struct wbuf w = { .data = ctx, .cap = sizeof(ctx) };

	if (!x->sec)
		return 0;
	wbuf_put_u64(&w, x->session);
	return xconn_tls_exporter(x->ctl, "EXPORTER-umig-session", ctx, sizeof(ctx), x->bind_key,
				  sizeof(x->bind_key));
}

/*
 * BIND = HMAC-SHA256(session key, "umig bind " || session || channel ||
 * this connection's own exporter): the channel belongs to this session
 * (no other control TLS session gives the key), is this channel (its
 * number), and is this very TLS connection (its exporter), so neither a
 * channel of another session nor a recorded one can be spliced in.
 */
static int bind_mac(struct xport *x, struct xconn *c, enum xport_channel ch, uint8_t *mac)
{
	uint8_t msg[10 + 8 + 2 + 32], own[32], ctx[10];
	struct wbuf w = { .data = ctx, .cap = sizeof(ctx) };
	int ret;

	wbuf_put_u64(&w, x->session);
	wbuf_put_u16(&w, ch);
	ret = xconn_tls_exporter(c, "EXPORTER-umig-channel", ctx, sizeof(ctx), own, sizeof(own));
	if (ret < 0)
		return ret;
	w = (struct wbuf){ .data = msg, .cap = sizeof(msg) };
	wbuf_put(&w, "umig bind ", 10);
	wbuf_put_u64(&w, x->session);
	wbuf_put_u16(&w, ch);
	wbuf_put(&w, own, sizeof(own));
	if (gnutls_hmac_fast(GNUTLS_MAC_SHA256, x->bind_key, sizeof(x->bind_key), msg, w.len, mac) < 0)
		return err_set(-EIO, "HMAC-SHA256 failed");
	return 0;
}

int xport_bind_send(struct xport *x, struct xconn *c)
{
	uint8_t mac[PROTO_MAC_LEN];
	int ret;

	if (!x->sec)
		return 0;
	ret = bind_mac(x, c, c->ch, mac);
	return ret < 0 ? ret : proto_send(c, MSG_BIND, mac, sizeof(mac));
}

/* Destination: the first frame of a data channel under TLS must bind it. */
static int xport_bind_check(struct xport *x, struct xconn *c, enum xport_channel ch)
{
	uint8_t want[PROTO_MAC_LEN], d = 0;
	struct proto_msg m = { 0 };
	int ret;

	xconn_set_timeout(c, XPORT_GREET_MS);
	ret = proto_recv(c, &m);
	xconn_set_timeout(c, -1);
	if (!ret && m.type != MSG_BIND)
		ret = err_set(-EPROTO, "%s channel: expected BIND, got message type %u",
			      xport_channel_name(ch), m.type);
	if (!ret)
		ret = bind_mac(x, c, ch, want);
	for (int i = 0; !ret && i < PROTO_MAC_LEN; i++)
		d |= want[i] ^ m.payload[i];
	if (!ret && d)
		ret = err_set(-EACCES, "%s channel: not bound to this migration's TLS session "
			      "(a channel of another session)", xport_channel_name(ch));
	proto_msg_free(&m);
	return ret;
}

int xport_bind_secret(struct xport *x, uint8_t *secret)
{
	uint8_t e[PROTO_SECRET_LEN];
	int ret;

	if (!x->sec)
		return 0;
	ret = xconn_tls_exporter(x->ctl, "EXPORTER-umig-recover", NULL, 0, e, sizeof(e));
	if (!ret && gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret, PROTO_SECRET_LEN, e, sizeof(e),
				     secret) < 0)
		ret = err_set(-EIO, "HMAC-SHA256 failed");
	gnutls_memset(e, 0, sizeof(e));
	return ret;
}

const char *xport_security(const struct xport *x)
{
	if (x && x->sec)
		return strcmp(xsec_kind(x->sec), "psk") ? "tls-x509" : "tls-psk";
	return x && (x->features & FEAT_DIGEST) ? "digest" : "plaintext";
}

void xport_set_features(struct xport *x, uint64_t features)
{
	x->features = features;
	x->ctl->digest = features & FEAT_DIGEST;
}

int xport_explain_refusal(struct xport *x, int err)
{
	if (x->ctl->bytes_recv || (err != -EPIPE && err != -ECONNRESET && err != -EACCES))
		return err;
	if (err == -EACCES)
		return err;
	if (x->sec)
		return err_set(-EACCES, "authentication failed: the destination closed the "
			       "connection after the TLS handshake: it does not trust this source's "
			       "%s", strcmp(xsec_kind(x->sec), "psk") ? "certificate" : "key");
	return err_set(-EACCES, "authentication failed: the destination closed the connection "
		       "during the handshake (a destination with --auth-key or --tls-creds drops "
		       "a source without them)");
}

int xport_ctl_exporter(struct xport *x, const char *label, uint8_t *out, size_t len)
{
	memset(out, 0, len);
	return x->sec ? xconn_tls_exporter(x->ctl, label, NULL, 0, out, len) : 0;
}

/* --- connecting and accepting ------------------------------------------------- */

int xport_connect(struct xport **out, const char *transport, const char *host,
		  uint16_t port, uint64_t session, int timeout_ms, const struct xsec *sec)
{
	struct xconn *ctl;
	int ret = xport_known(transport ? transport : "tcp");

	if (!ret)
		ret = xconn_tcp_connect(&ctl, host, port, XCH_CONTROL, timeout_ms);
	if (!ret)
		ret = xport_new(out, transport, ctl);
	if (ret < 0)
		return ret;
	(*out)->session = session;
	(*out)->source = true;
	(*out)->sec = sec;
	snprintf((*out)->host, sizeof((*out)->host), "%s", host);
	/* TLS before any umig byte: a stranger learns nothing, not even the session */
	ret = sec ? xconn_tls_start(ctl, sec, host, XPORT_GREET_MS) : 0;
	if (!ret)
		ret = xport_bind_key(*out);
	if (!ret)
		ret = proto_send_greeting(ctl, session);
	if (ret < 0) {
		xport_close(*out);
		*out = NULL;
	}
	return ret;
}

/* One connection being greeted on a thread of its own. */
struct greet {
	pthread_t th;
	struct xconn *c;
	struct xport *x;           /* data channels: the session they must belong to */
	const struct xsec *sec;
	int efd;                   /* written when done */
	_Atomic bool done;
	bool busy;
	int ret;
	enum xport_channel ch;
	uint64_t session;
	char peer[80], why[512];
};

static void *greet_thread(void *arg)
{
	struct greet *g = arg;
	uint64_t one = 1;
	int ret = g->sec ? xconn_tls_start(g->c, g->sec, NULL, XPORT_GREET_MS) : 0;

	if (!ret) {
		/* the greeting is the first bytes: a silent stranger gets no more than this */
		xconn_set_timeout(g->c, XPORT_GREET_MS);
		ret = proto_recv_greeting(g->c, &g->ch, &g->session);
		xconn_set_timeout(g->c, -1);
	}
	if (!ret && g->x && g->ch != XCH_CONTROL && g->session == g->x->session && g->sec)
		ret = xport_bind_check(g->x, g->c, g->ch);
	if (ret < 0)
		snprintf(g->why, sizeof(g->why), "%s", err_msg(ret));
	g->ret = ret;
	atomic_store(&g->done, true);
	if (write(g->efd, &one, sizeof(one)) < 0)
		pr_debug("greeting: cannot signal: %s", strerror(errno));
	return NULL;
}

static int greet_start(struct greet *g, int lfd, struct xport *x, const struct xsec *sec, int efd)
{
	int ret = xconn_tcp_accept(&g->c, lfd, XCH_CONTROL, 0);

	if (ret < 0)
		return ret;
	*g = (struct greet){ .c = g->c, .x = x, .sec = sec, .efd = efd, .busy = true };
	xconn_tcp_peer_name(g->c, g->peer, sizeof(g->peer));
	if (pthread_create(&g->th, NULL, greet_thread, g)) {
		xconn_close(g->c);
		g->busy = false;
		return -EAGAIN;
	}
	return 0;
}

/* A greeted connection: is it one the caller waits for?  NULL if so, else why not. */
/* The slot of x's next bulk stream beyond the first (NULL: it has them all). */
static struct xconn **greet_stream_slot(const struct xport *x, struct xconn **out)
{
	for (unsigned i = 1; i < x->streams && i < XSTREAMS_MAX; i++)
		if (!out[XCH_COUNT + i - 1])
			return &out[XCH_COUNT + i - 1];
	return NULL;
}

static const char *greet_wanted(const struct greet *g, struct xconn **out)
{
	if (g->ret < 0)
		return g->why;
	if (!g->x)
		return g->ch == XCH_CONTROL ? NULL : "the first connection must be the control channel";
	if (g->ch == XCH_CONTROL || g->session != g->x->session)
		return "expected the bulk or urgent channel of this migration";
	if (out[g->ch] && (g->ch != XCH_BULK || !greet_stream_slot(g->x, out)))
		return "a second connection for a channel this migration has";
	return NULL;
}

/* Reap the finished greetings into out[channel]; how many were wanted. */
static unsigned greet_reap(struct greet *gs, int efd, struct xconn **out, uint64_t *session)
{
	unsigned got = 0;
	uint64_t n;

	if (read(efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		pr_debug("greeting: %s", strerror(errno));
	for (int i = 0; i < XPORT_PENDING_MAX; i++) {
		struct greet *g = &gs[i];
		const char *why;

		if (!g->busy || !atomic_load(&g->done))
			continue;
		pthread_join(g->th, NULL);
		g->busy = false;
		why = greet_wanted(g, out);
		if (!why && !(g->x == NULL && out[XCH_CONTROL])) {
			*(out[g->ch] ? greet_stream_slot(g->x, out) : &out[g->ch]) = g->c;
			*session = g->session;
			got++;
			continue;
		}
		pr_warn("incoming: dropped a connection from %s: %s", g->peer,
			why ? why : "a migration is already being set up");
		xconn_close(g->c);
	}
	return got;
}

static void greet_cancel(struct greet *gs)
{
	/* the strangers still being greeted are cut short */
	for (int i = 0; i < XPORT_PENDING_MAX; i++)
		if (gs[i].busy)
			xconn_shutdown(gs[i].c);
	for (int i = 0; i < XPORT_PENDING_MAX; i++)
		if (gs[i].busy) {
			pthread_join(gs[i].th, NULL);
			xconn_close(gs[i].c);
			gs[i].busy = false;
		}
}

static int greet_wait_ms(uint64_t deadline)
{
	uint64_t now = now_ns();

	if (deadline == UINT64_MAX)
		return -1;
	return now >= deadline ? 0 : (int)MIN((deadline - now) / 1000000 + 1, (uint64_t)INT32_MAX);
}

int xport_accept_conns(struct xconn **out, unsigned n, int lfd, struct xport *x,
		       const struct xsec *sec, int timeout_ms, uint64_t *session)
{
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_ns() + timeout_ms * 1000000ull;
	struct greet gs[XPORT_PENDING_MAX] = { 0 };
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), ret = 0;
	unsigned got = 0;

	if (efd < 0)
		return -errno;
	for (int ch = 0; ch < XCONN_SLOTS; ch++)
		out[ch] = NULL;
	while (got < n && !ret) {
		/*
		 * The page channels of x: its control connection closing meanwhile
		 * means the peer gave this attempt up (a recovery it starts over).
		 */
		struct pollfd p[3] = { { .fd = efd, .events = POLLIN }, { .fd = lfd, .events = POLLIN },
				       { .fd = x && x->ctl ? xconn_fd(x->ctl) : -1, .events = POLLRDHUP } };
		int wait = greet_wait_ms(deadline), nbusy = 0;

		for (int i = 0; i < XPORT_PENDING_MAX; i++)
			nbusy += gs[i].busy;
		if (!wait) {
			ret = err_set(-ETIMEDOUT, "no %s connection within %d s",
				      x ? "bulk or urgent" : "control", timeout_ms / 1000);
			break;
		}
		if (nbusy == XPORT_PENDING_MAX)
			p[1].fd = -1;   /* every greeting slot busy: accept no more for now */
		if (poll(p, 3, wait) < 0) {
			ret = errno == EINTR ? 0 : -errno;
			continue;
		}
		if (p[2].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
			ret = err_set(-ECONNRESET, "the control connection closed before the %s channels "
				      "connected", "bulk and urgent");
			break;
		}
		if (p[0].revents)
			got += greet_reap(gs, efd, out, session);
		for (int i = 0; got < n && (p[1].revents & POLLIN) && i < XPORT_PENDING_MAX; i++)
			if (!gs[i].busy) {
				ret = greet_start(&gs[i], lfd, x, sec, efd);
				ret = ret == -ETIMEDOUT || ret == -EAGAIN || ret == -ECONNABORTED ? 0 : ret;
				break;
			}
	}
	greet_cancel(gs);
	close(efd);
	if (ret < 0)
		for (int ch = 0; ch < XCONN_SLOTS; ch++) {
			xconn_close(out[ch]);
			out[ch] = NULL;
		}
	return ret;
}

int xport_accept(struct xport **out, const char *transport, int listen_fd, int timeout_ms,
		 const struct xsec *sec)
{
	struct xconn *c[XCONN_SLOTS];
	uint64_t session;
	int ret = xport_known(transport ? transport : "tcp");

	if (!ret)
		ret = xport_accept_conns(c, 1, listen_fd, NULL, sec, timeout_ms, &session);
	if (!ret)
		ret = xport_new(out, transport, c[XCH_CONTROL]);
	if (ret < 0)
		return ret;
	(*out)->session = session;
	(*out)->sec = sec;
	ret = xport_bind_key(*out);
	return ret;
}

void xport_shutdown(struct xport *x)
{
	if (!x)
		return;
	xconn_shutdown(x->ctl);
	if (x->priv)
		x->ops->shutdown(x);
}

void xport_close(struct xport *x)
{
	if (!x)
		return;
	if (x->priv)
		x->ops->close(x);
	xconn_close(x->ctl);
	pthread_mutex_destroy(&x->ctl_lock);
	free(x);
}

int xport_ctl_send(struct xport *x, uint16_t type, const void *p, uint32_t len)
{
	int ret;

	pthread_mutex_lock(&x->ctl_lock);
	ret = proto_send(x->ctl, type, p, len);
	pthread_mutex_unlock(&x->ctl_lock);
	return ret;
}

int xport_ctl_recv(struct xport *x, struct proto_msg *m, int timeout_ms)
{
	int ret;

	xconn_set_timeout(x->ctl, timeout_ms);
	ret = proto_recv(x->ctl, m);
	xconn_set_timeout(x->ctl, -1);
	return ret;
}

int xport_ctl_error(struct xport *x, int err, const char *text)
{
	int ret;

	pthread_mutex_lock(&x->ctl_lock);
	ret = proto_send_error(x->ctl, err, text);
	pthread_mutex_unlock(&x->ctl_lock);
	return ret;
}

uint64_t xport_bytes(struct xport *x, enum xport_channel ch)
{
	if (ch == XCH_CONTROL)
		return x->ctl ? x->ctl->bytes_sent + x->ctl->bytes_recv : 0;
	return x->priv ? x->ops->bytes(x, ch) : 0;
}
