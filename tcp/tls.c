/*
 * tls.c - TLS 1.3 on a migration's TCP connections (xsec.h, xconn.h).
 *
 * GnuTLS (QEMU's choice, a Debian 12 package already linked for HMAC):
 * a session allows one sending and one receiving thread at the same time
 * without a lock, which is exactly how umig uses a connection (the bulk
 * sender and the destination's receiver; the urgent channel's request
 * reader and reply writer; control under x->ctl_lock).  OpenSSL would
 * need a lock around every SSL_read/SSL_write of a connection, putting
 * the urgent replies behind whatever the other direction is doing.
 *
 * The handshake runs right after the TCP connection is made and before
 * any umig byte, bounded by a deadline.  Afterwards every byte of the
 * connection is a TLS record, so the engine's frames are authenticated
 * and encrypted whatever they are.  Record layer pitfall: GnuTLS keeps
 * decrypted bytes of a record that a read did not consume, so a poll()
 * on the socket can say "nothing to read" while a whole frame waits in
 * the library; xconn_pending() says so and the fault thread checks it
 * before it polls.  io_uring cannot encrypt, so a TLS bulk channel sends
 * through gnutls_record_send, one record per frame (tcp/conn.c).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tcp.h"
#include "umig/log.h"
#include "umig/util.h"
#include "umig/xsec.h"

#define PSK_USER "umig"
/*
 * TLS 1.3 only; PSK always with (EC)DHE, for forward secrecy.  AES-GCM
 * first: GnuTLS 3.7 otherwise picked ChaCha20-Poly1305 here, 250 MB/s
 * against AES-128-GCM's 4 GB/s with AES-NI (gnutls-cli --benchmark-ciphers),
 * and the bulk channel is bound by the cipher.
 */
#define PRIO_CIPHERS "-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
#define PRIO_PSK  "NORMAL:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-PSK:+DHE-PSK:" PRIO_CIPHERS
#define PRIO_X509 "NORMAL:-VERS-ALL:+VERS-TLS1.3:" PRIO_CIPHERS

struct xsec {
	bool server;
	bool psk;
	uint8_t key[XSEC_KEY_BYTES];
	gnutls_psk_client_credentials_t pskc;
	gnutls_psk_server_credentials_t psks;
	gnutls_certificate_credentials_t cert;
	gnutls_priority_t prio;
};

int xsec_check_private(const char *path, const char *what)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return err_set(-errno, "%s %s: %s", what, path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return err_set(-EINVAL, "%s %s is not a regular file", what, path);
	if (st.st_mode & 077)
		return err_set(-EPERM, "%s %s is readable or writable by group or others (mode %03o); "
			       "a secret must be private: chmod 600 %s", what, path,
			       (unsigned)(st.st_mode & 0777), path);
	return 0;
}

/* The key file: 64 hex digits and an optional newline, nothing else. */
static int key_read(const char *path, uint8_t *key)
{
	char buf[256];
	gnutls_datum_t hex;
	size_t size = XSEC_KEY_BYTES;
	int fd, ret = xsec_check_private(path, "--auth-key");
	ssize_t n;

	if (ret < 0)
		return ret;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "--auth-key %s: %s", path, strerror(errno));
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return err_set(-EIO, "--auth-key %s: %s", path, strerror(errno));
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	buf[n] = 0;
	hex = (gnutls_datum_t){ (unsigned char *)buf, (unsigned)n };
	if (n != 2 * XSEC_KEY_BYTES || gnutls_hex_decode(&hex, key, &size) < 0 ||
	    size != XSEC_KEY_BYTES)
		return err_set(-EINVAL, "--auth-key %s is not a umig key (64 hex digits); make one "
			       "with 'umig keygen FILE'", path);
	return 0;
}

static int psk_server_key(gnutls_session_t g, const char *user, gnutls_datum_t *key)
{
	const struct xsec *s = gnutls_session_get_ptr(g);

	if (strcmp(user, PSK_USER))
		return -1;
	key->data = gnutls_malloc(XSEC_KEY_BYTES);
	if (!key->data)
		return -1;
	memcpy(key->data, s->key, XSEC_KEY_BYTES);
	key->size = XSEC_KEY_BYTES;
	return 0;
}

static int psk_load(struct xsec *s, const char *path)
{
	gnutls_datum_t k = { s->key, XSEC_KEY_BYTES };
	int ret = key_read(path, s->key);

	if (ret < 0)
		return ret;
	s->psk = true;
	if (s->server) {
		if (gnutls_psk_allocate_server_credentials(&s->psks) < 0)
			return -ENOMEM;
		gnutls_psk_set_server_credentials_function(s->psks, psk_server_key);
		return 0;
	}
	if (gnutls_psk_allocate_client_credentials(&s->pskc) < 0 ||
	    gnutls_psk_set_client_credentials(s->pskc, PSK_USER, &k, GNUTLS_PSK_KEY_RAW) < 0)
		return -ENOMEM;
	return 0;
}

/* QEMU's names: ca-cert.pem, and server-* or client-* for this side. */
static int x509_load(struct xsec *s, const char *dir)
{
	const char *who = s->server ? "server" : "client";
	char ca[1100], cert[1100], key[1100];
	int ret;

	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
	snprintf(cert, sizeof(cert), "%s/%s-cert.pem", dir, who);
	snprintf(key, sizeof(key), "%s/%s-key.pem", dir, who);
	ret = xsec_check_private(key, "--tls-creds: private key");
	if (ret < 0)
		return ret;
	if (gnutls_certificate_allocate_credentials(&s->cert) < 0)
		return -ENOMEM;
	ret = gnutls_certificate_set_x509_trust_file(s->cert, ca, GNUTLS_X509_FMT_PEM);
	if (ret <= 0)
		return err_set(-EINVAL, "--tls-creds: no CA certificate in %s (%s)", ca,
			       ret < 0 ? gnutls_strerror(ret) : "empty");
	ret = gnutls_certificate_set_x509_key_file(s->cert, cert, key, GNUTLS_X509_FMT_PEM);
	if (ret < 0)
		return err_set(-EINVAL, "--tls-creds: cannot use %s with %s: %s", cert, key,
			       gnutls_strerror(ret));
	return 0;
}

int xsec_load(struct xsec **out, const char *key_file, const char *creds_dir, bool server)
{
	bool k = key_file && *key_file, c = creds_dir && *creds_dir;
	struct xsec *s;
	int ret;

	*out = NULL;
	if (k && c)
		return err_set(-EINVAL, "--auth-key and --tls-creds exclude each other: choose one");
	if (!k && !c)
		return 0;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->server = server;
	ret = k ? psk_load(s, key_file) : x509_load(s, creds_dir);
	if (!ret && gnutls_priority_init(&s->prio, k ? PRIO_PSK : PRIO_X509, NULL) < 0)
		ret = err_set(-EINVAL, "GnuTLS does not know the TLS 1.3 priorities umig needs");
	if (ret < 0) {
		xsec_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

void xsec_free(struct xsec *s)
{
	if (!s)
		return;
	if (s->pskc)
		gnutls_psk_free_client_credentials(s->pskc);
	if (s->psks)
		gnutls_psk_free_server_credentials(s->psks);
	if (s->cert)
		gnutls_certificate_free_credentials(s->cert);
	if (s->prio)
		gnutls_priority_deinit(s->prio);
	gnutls_memset(s->key, 0, sizeof(s->key));
	free(s);
}

const char *xsec_kind(const struct xsec *s)
{
	return !s ? "none" : s->psk ? "psk" : "x509";
}

static bool addr_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

/* Every address host resolves to is a loopback address. */
static bool host_loopback(const char *host)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai, *p;
	bool lo = true;

	if (!host || !*host || getaddrinfo(host, NULL, &hints, &ai))
		return false;
	for (p = ai; p && lo; p = p->ai_next)
		lo = addr_loopback(p->ai_addr);
	freeaddrinfo(ai);
	return lo;
}

int xsec_check_addr(const struct xsec *s, const char *host, bool insecure, const char *who)
{
	if (s || host_loopback(host))
		return 0;
	if (!insecure)
		return err_set(-EPERM, "%s is not a loopback address, and a migration carries the "
			       "guest's whole memory: give --auth-key FILE (umig keygen) or --tls-creds "
			       "DIR on both sides, or --insecure to send it in clear", host);
	pr_warn("%s: --insecure: the migration stream to or from %s is not encrypted or "
		"authenticated; anyone on the network path can read the guest's memory, and "
		"anyone who can connect can take or feed the migration", who, host);
	return 0;
}

int xsec_check_rdma(const struct xsec *s, const char *transport, bool plaintext_pages,
		    const char *who)
{
	if (!s || !transport || strcmp(transport, "rdma"))
		return 0;
	if (!plaintext_pages)
		return err_set(-EPERM, "--transport rdma with TLS: TLS protects only the control "
			       "connection, and the guest's pages would cross the RDMA network "
			       "unencrypted; give --rdma-plaintext-pages on both sides to accept "
			       "that, or use --transport tcp to keep them encrypted");
	pr_warn("%s: --rdma-plaintext-pages: TLS (%s) protects the control connection only; the "
		"guest's pages cross the RDMA network unencrypted, and anyone who can read it can "
		"read the guest's memory", who, xsec_kind(s));
	return 0;
}

int xsec_keygen(const char *path)
{
	uint8_t key[XSEC_KEY_BYTES];
	char hex[2 * XSEC_KEY_BYTES + 2];
	size_t size = sizeof(hex);
	gnutls_datum_t k = { key, sizeof(key) };
	int fd, ret;

	if (gnutls_rnd(GNUTLS_RND_KEY, key, sizeof(key)) < 0 || gnutls_hex_encode(&k, hex, &size) < 0)
		return err_set(-EIO, "cannot draw a random key");
	gnutls_memset(key, 0, sizeof(key));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(-errno, "cannot create %s: %s%s", path, strerror(errno),
			       errno == EEXIST ? " (umig keygen never overwrites a key)" : "");
	strcat(hex, "\n");
	ret = fchmod(fd, 0600) < 0 ? -errno : write_full(fd, hex, strlen(hex));
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	gnutls_memset(hex, 0, sizeof(hex));
	if (ret < 0) {
		unlink(path);
		return err_set(ret, "cannot write %s: %s", path, strerror(-ret));
	}
	return 0;
}

/* --- a TLS session on one connection ---------------------------------------- */

static int tls_session(gnutls_session_t *out, const struct xsec *s, int fd, const char *host)
{
	gnutls_session_t g;
	struct in6_addr a6;
	struct in_addr a4;
	int ret = gnutls_init(&g, (s->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_SIGNAL);

	if (ret < 0)
		return -ENOMEM;
	ret = gnutls_priority_set(g, s->prio);
	if (!ret && s->psk)
		ret = gnutls_credentials_set(g, GNUTLS_CRD_PSK,
					     s->server ? (void *)s->psks : (void *)s->pskc);
	else if (!ret)
		ret = gnutls_credentials_set(g, GNUTLS_CRD_CERTIFICATE, s->cert);
	if (!ret && !s->psk && s->server) {
		gnutls_certificate_server_set_request(g, GNUTLS_CERT_REQUIRE);
		gnutls_session_set_verify_cert(g, NULL, 0);
	} else if (!ret && !s->psk) {
		/* the destination's certificate must name the host we connect to */
		gnutls_session_set_verify_cert(g, host, 0);
		if (host && inet_pton(AF_INET, host, &a4) != 1 && inet_pton(AF_INET6, host, &a6) != 1)
			gnutls_server_name_set(g, GNUTLS_NAME_DNS, host, strlen(host));
	}
	if (ret < 0) {
		gnutls_deinit(g);
		return err_set(-EINVAL, "TLS setup: %s", gnutls_strerror(ret));
	}
	gnutls_session_set_ptr(g, (void *)s);
	gnutls_transport_set_int(g, fd);
	*out = g;
	return 0;
}

/* What a failed handshake means, for a person. */
static int tls_handshake_error(gnutls_session_t g, const struct xsec *s, int ret, int timeout_ms)
{
	gnutls_datum_t st = { 0 };
	int err;

	if (ret == GNUTLS_E_TIMEDOUT)
		return err_set(-ETIMEDOUT, "the TLS handshake did not finish within %d ms", timeout_ms);
	if (ret == GNUTLS_E_PREMATURE_TERMINATION || ret == GNUTLS_E_PULL_ERROR ||
	    ret == GNUTLS_E_PUSH_ERROR)
		return err_set(-ECONNRESET, "authentication failed: the peer closed the connection "
			       "during the TLS handshake (it has no or other credentials)");
	if (ret == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR &&
	    !gnutls_certificate_verification_status_print(
		    gnutls_session_get_verify_cert_status(g), GNUTLS_CRT_X509, &st, 0)) {
		err = err_set(-EACCES, "authentication failed: the peer's certificate is not trusted: "
			      "%s", st.data);
		gnutls_free(st.data);
		return err;
	}
	if (ret == GNUTLS_E_FATAL_ALERT_RECEIVED)
		return err_set(-EACCES, "authentication failed: the peer refused this side's %s (%s)",
			       s->psk ? "key" : "certificate",
			       gnutls_alert_get_name(gnutls_alert_get(g)));
	return err_set(-EACCES, "authentication failed (%s)", gnutls_strerror(ret));
}

int xconn_tls_start(struct xconn *x, const struct xsec *s, const char *host, int timeout_ms)
{
	struct tcp_conn *t = x->priv;
	gnutls_session_t g = NULL;
	int ret = tls_session(&g, s, t->fd, host);

	if (ret < 0)
		return ret;
	if (timeout_ms <= 0)
		timeout_ms = 10000;
	gnutls_handshake_set_timeout(g, timeout_ms);
	do
		ret = gnutls_handshake(g);
	while (ret < 0 && !gnutls_error_is_fatal(ret));
	if (ret < 0) {
		ret = tls_handshake_error(g, s, ret, timeout_ms);
		gnutls_deinit(g);
		return ret;
	}
	if (log_debug_enabled) {
		char *desc = gnutls_session_get_desc(g);

		pr_debug("%s channel: %s", xport_channel_name(x->ch), desc);
		gnutls_free(desc);
	}
	/* io_uring would send plaintext: this connection's bytes go through GnuTLS */
	if (t->ring)
		tcp_uring_destroy(t);
	t->tls = g;
	t->batch = x->ch == XCH_BULK;
	x->tls = true;
	return 0;
}

int xconn_tls_exporter(struct xconn *x, const char *label, const void *ctx, size_t ctxlen,
		       uint8_t *out, size_t len)
{
	struct tcp_conn *t = x->priv;
	int ret;

	if (!x->tls)
		return -ENOTCONN;
	ret = gnutls_prf_rfc5705(t->tls, strlen(label), label, ctxlen, ctx, len, (char *)out);
	return ret < 0 ? err_set(-EIO, "TLS exporter: %s", gnutls_strerror(ret)) : 0;
}

bool xconn_tls_on(struct xconn *x)
{
	return x && x->tls;
}

bool xconn_pending(struct xconn *x)
{
	struct tcp_conn *t = x->priv;

	return x->tls && gnutls_record_check_pending(t->tls) > 0;
}

/* GnuTLS's failures as the -errno the engine expects of a connection. */
static int tls_errno(struct tcp_conn *t, ssize_t n, const char *what)
{
	/*
	 * In TLS 1.3 a client's handshake ends before the server has checked
	 * its certificate or key: a server that refuses it just closes, and
	 * the client learns it on its first read or write.
	 */
	if (!t->heard && t->sends < 2 && (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION ||
					   n == GNUTLS_E_PULL_ERROR || n == GNUTLS_E_PUSH_ERROR))
		return err_set(-EACCES, "authentication failed: the peer closed the connection "
			       "right after the TLS handshake, before this side's first %s (it does "
			       "not trust this side's certificate or key)", what);
	if (n == GNUTLS_E_PREMATURE_TERMINATION)
		return -EPIPE;
	if (n == GNUTLS_E_PULL_ERROR)
		return -ECONNRESET;
	if (n == GNUTLS_E_PUSH_ERROR)
		return -EPIPE;
	if (n == GNUTLS_E_FATAL_ALERT_RECEIVED)
		return err_set(-EACCES, "authentication failed: the peer ended TLS (%s)",
			       gnutls_alert_get_name(gnutls_alert_get(t->tls)));
	return err_set(-EPROTO, "TLS %s: %s", what, gnutls_strerror((int)n));
}

int tcp_tls_send(struct tcp_conn *t, const void *buf, size_t len)
{
	while (len) {
		ssize_t n = gnutls_record_send(t->tls, buf, len);

		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
			continue;
		if (n < 0)
			return tls_errno(t, n, "send");
		buf = (const char *)buf + n;
		len -= n;
		t->sends += t->sends < 2;
	}
	return 0;
}

int tcp_tls_flush(struct tcp_conn *t)
{
	ssize_t r;

	if (!t->corked)
		return 0;
	t->corked = 0;
	do
		r = gnutls_record_uncork(t->tls, GNUTLS_RECORD_WAIT);
	while (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED);
	return r < 0 ? tls_errno(t, r, "send") : 0;
}

/* The kernel has sent (and loopback or the peer acknowledged) everything. */
static bool socket_idle(int fd)
{
	int queued = 0;

	return ioctl(fd, SIOCOUTQ, &queued) < 0 || queued == 0;
}

/*
 * A frame's parts are corked together: one record (or a few, above 16
 * KiB), never one per part.  The bulk channel batches further, the way
 * tcp/uring.c does for plaintext: while the socket still has bytes
 * queued, frames gather (up to TCP_BULK_BUF_SIZE) into full records and
 * fewer sends; an idle socket gets what there is at once, so a pushed
 * page a vCPU waits for never sits in the batch.
 */
int tcp_tls_sendv(struct tcp_conn *t, const struct iovec *iov, int n)
{
	int ret = 0;

	if (!t->corked)
		gnutls_record_cork(t->tls);
	for (int i = 0; i < n && !ret; i++)
		if (iov[i].iov_len) {
			ret = tcp_tls_send(t, iov[i].iov_base, iov[i].iov_len);
			t->corked += iov[i].iov_len;
		}
	if (!t->corked)
		t->corked = 1;   /* an empty frame still uncorks below */
	if (!ret && t->batch && t->corked < TCP_BULK_BUF_SIZE && !socket_idle(t->fd))
		return 0;
	ret = ret ? ret : tcp_tls_flush(t);
	t->corked = 0;
	return ret;
}

/* Exact receive with the connection's deadline (0 = none for GnuTLS). */
int tcp_tls_recv(struct tcp_conn *t, int timeout_ms, void *buf, size_t len)
{
	size_t got = 0;

	gnutls_record_set_timeout(t->tls, timeout_ms < 0 ? 0 : MAX(timeout_ms, 1));
	while (len) {
		ssize_t n = gnutls_record_recv(t->tls, buf, len);

		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
			continue;
		if (n == GNUTLS_E_TIMEDOUT)
			return got ? -EPROTO : -ETIMEDOUT;
		if (n == 0 && (t->heard || t->sends >= 2))
			return -EPIPE;
		if (n <= 0)
			return tls_errno(t, n, "receive");
		t->heard = true;
		buf = (char *)buf + n;
		len -= n;
		got += n;
	}
	return 0;
}

void tcp_tls_free(struct tcp_conn *t)
{
	if (t->tls)
		gnutls_deinit(t->tls);
	t->tls = NULL;
}
