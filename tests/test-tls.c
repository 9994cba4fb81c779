/*
 * test-tls.c - only the intended peer: TLS 1.3 with a pre-shared key and
 * with X.509 certificates (made at test time by tests/mkcerts.sh), a
 * wrong, missing or world-readable key, an untrusted certificate, a
 * replayed handshake, a channel spliced in from another session,
 * strangers that must not block incoming, plaintext refused on
 * non-loopback addresses, and RDMA's plaintext pages refused under TLS
 * without --rdma-plaintext-pages.
 *
 * Migrations run the real umig binary; the replay and splice cases use
 * the connection layer in-process, where the bytes can be controlled.
 * T_FILTER=PATTERN runs only the matching tests.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"
#include "umig/log.h"
#include "umig/util.h"
#include "umig/xport.h"
#include "umig/xsec.h"

static int t_port(void)
{
	static int base;

	if (!base)
		base = 20000 + (getpid() * 13 + time(NULL)) % 20000;
	return base++;
}

struct mig_run {
	int src_status, dst_status;
	char *src_out, *src_err, *dst_out, *dst_err;
};

static void mig_run_free(struct mig_run *m)
{
	free(m->src_out);
	free(m->src_err);
	free(m->dst_out);
	free(m->dst_err);
}

/*
 * A post-copy migration of memverify with the given credential options
 * on each side ("" for none).  The destination is killed 2 s after the
 * source ends if it still waits (a refused migration leaves it waiting).
 */
static void mig_with(const char *dir, const char *dopt, const char *dval, const char *sopt,
		     const char *sval, struct mig_run *m)
{
	char listen[32];
	int port = t_port();
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	const char *sout = t_path(dir, "src.out"), *serr = t_path(dir, "src.err");
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet",
		       *dopt ? (char *)dopt : NULL, (char *)dval, NULL };
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "64M",
		       "--cmdline", "wss=8 secs=3", "--migrate-to", listen,
		       "--migrate-after", "0.3", "--quiet", *sopt ? (char *)sopt : NULL,
		       (char *)sval, NULL };
	pid_t dpid, spid;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	dpid = t_spawn(da, dout, derr);
	usleep(300000);
	spid = t_spawn(sa, sout, serr);
	m->src_status = t_wait(spid, 90);
	m->src_err = t_read_file(serr);
	/* a migrated guest finishes at the destination; a refused one leaves it waiting */
	m->dst_status = t_wait(dpid, m->src_err && strstr(m->src_err, "now runs at the destination") ?
			       90 : 2);
	if (m->dst_status == -1)
		t_kill(dpid);
	m->src_out = t_read_file(sout);
	m->dst_out = t_read_file(dout);
	m->dst_err = t_read_file(derr);
}

static char *keygen(const char *dir, const char *name)
{
	char *path = strdup(t_path(dir, name));
	struct t_result r;
	char *a[] = { (char *)t_umig(), "keygen", path, NULL };

	t_run(a, 30, &r);
	assert_int_equal(r.status, 0);
	t_result_free(&r);
	return path;
}

static void test_psk_migration(void **state)
{
	char *dir = t_tmpdir(), *key = keygen(dir, "k");
	struct mig_run m;
	struct stat st;

	assert_int_equal(stat(key, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	mig_with(dir, "--auth-key", key, "--auth-key", key, &m);
	assert_int_equal(m.src_status, 0);
	assert_int_equal(m.dst_status, 0);
	assert_non_null(strstr(m.dst_err, "(TLS, key)"));
	assert_non_null(strstr(m.dst_out, T_MV_DONE));
	mig_run_free(&m);
	free(key);
	t_tmpdir_free(dir);
}

/* Refused before the handshake: the source guest runs on, the destination waits on. */
static void assert_refused(struct mig_run *m, const char *dst_says)
{
	if (m->src_status != 0 || !strstr(m->src_err, "authentication failed"))
		fprintf(stderr, "source %d:\n%s\ndestination:\n%s\n", m->src_status, m->src_err,
			m->dst_err);
	assert_int_equal(m->src_status, 0);
	assert_non_null(strstr(m->src_err, "authentication failed"));
	assert_non_null(strstr(m->src_err, "the guest keeps running here"));
	assert_non_null(strstr(m->src_out, T_MV_DONE));
	assert_int_equal(m->dst_status, -1);   /* still waiting for the real source */
	assert_non_null(strstr(m->dst_err, dst_says));
	assert_null(strstr(m->dst_out ? m->dst_out : "", "memverify"));
}

static void test_wrong_and_missing_keys(void **state)
{
	char *dir = t_tmpdir(), *k1 = keygen(dir, "k1"), *k2 = keygen(dir, "k2");
	struct mig_run m;

	mig_with(dir, "--auth-key", k1, "--auth-key", k2, &m);
	assert_refused(&m, "authentication failed");
	mig_run_free(&m);

	mig_with(dir, "--auth-key", k1, "", NULL, &m);
	assert_refused(&m, "authentication failed");
	mig_run_free(&m);

	mig_with(dir, "", NULL, "--auth-key", k1, &m);
	assert_refused(&m, "the peer starts TLS and this side has no credentials");
	mig_run_free(&m);
	free(k1);
	free(k2);
	t_tmpdir_free(dir);
}

static void test_key_file_must_be_private(void **state)
{
	char *dir = t_tmpdir(), *key = keygen(dir, "k");
	struct t_result r;
	char listen[32];

	/* keygen never overwrites */
	char *kg[] = { (char *)t_umig(), "keygen", key, NULL };
	t_run(kg, 30, &r);
	assert_int_equal(r.status, 125);
	assert_non_null(strstr(r.err, "never overwrites"));
	t_result_free(&r);

	assert_int_equal(chmod(key, 0640), 0);
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", t_port());
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--auth-key", key, NULL };
	t_run(da, 30, &r);
	assert_int_equal(r.status, 125);
	assert_non_null(strstr(r.err, "readable or writable by group or others"));
	assert_non_null(strstr(r.err, "chmod 600"));
	t_result_free(&r);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("hello"), "--migrate-to", listen,
		       "--auth-key", key, NULL };
	t_run(sa, 30, &r);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.err, "chmod 600"));
	t_result_free(&r);
	free(key);
	t_tmpdir_free(dir);
}

static char *mkcerts(const char *dir, const char *name)
{
	char *path = strdup(t_path(dir, name));
	struct t_result r;
	char *a[] = { "sh", "tests/mkcerts.sh", path, NULL };

	t_run(a, 60, &r);
	if (r.status)
		print_message("mkcerts: %s\n", r.err);
	t_skip_unless(r.status == 0, "certtool (gnutls-bin) is needed to make test certificates\n");
	t_result_free(&r);
	return path;
}

static void test_x509_migration_and_untrusted(void **state)
{
	char *dir = t_tmpdir(), *a = mkcerts(dir, "a"), *b = mkcerts(dir, "b");
	char mixed[700], cmd[2200];
	struct mig_run m;

	mig_with(dir, "--tls-creds", a, "--tls-creds", b, &m);
	/* the source trusts CA b only: the destination's certificate is refused */
	assert_refused(&m, "authentication failed");
	assert_non_null(strstr(m.src_err, "not trusted"));
	mig_run_free(&m);

	/* trusts the destination, but its own certificate is from an unknown CA */
	snprintf(mixed, sizeof(mixed), "%s", t_path(dir, "mixed"));
	snprintf(cmd, sizeof(cmd), "mkdir -p %s && cp %s/ca-cert.pem %s/ && cp -p %s/client-*.pem %s/",
		 mixed, a, mixed, b, mixed);
	assert_int_equal(system(cmd), 0);
	mig_with(dir, "--tls-creds", a, "--tls-creds", mixed, &m);
	assert_refused(&m, "not trusted");
	mig_run_free(&m);

	mig_with(dir, "--tls-creds", a, "--tls-creds", a, &m);
	assert_int_equal(m.src_status, 0);
	assert_int_equal(m.dst_status, 0);
	assert_non_null(strstr(m.dst_err, "(TLS, certificates)"));
	assert_non_null(strstr(m.dst_out, T_MV_DONE));
	mig_run_free(&m);
	free(a);
	free(b);
	t_tmpdir_free(dir);
}

/* Ten idle connections and one that sends junk do not keep the source out. */
static void test_strangers_do_not_block_incoming(void **state)
{
	char *dir = t_tmpdir();
	char listen[32];
	int port = t_port(), fds[11], st;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	const char *dout = t_path(dir, "dst.out"), *derr = t_path(dir, "dst.err");
	struct t_result r;
	char *o;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };
	pid_t dpid = t_spawn(da, dout, derr);

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	for (int i = 0; i < 11; i++) {
		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		for (int j = 0; j < 100 && connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)); j++)
			usleep(50000);
	}
	assert_int_equal(write(fds[10], "junk junk junk junk", 19), 19);
	char *sa2[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "64M",
			"--cmdline", "wss=8 secs=40 moved_secs=1", "--migrate-to", listen,
			"--migrate-after", "0.2", "--quiet", NULL };
	t_run(sa2, 90, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.err, "the guest now runs at the destination"));
	st = t_wait(dpid, 60);
	assert_int_equal(st, 0);
	o = t_read_file(derr);
	assert_non_null(strstr(o, "dropped a connection"));
	free(o);
	o = t_read_file(dout);
	assert_non_null(strstr(o, T_MV_DONE));
	free(o);
	for (int i = 0; i < 11; i++)
		close(fds[i]);
	t_result_free(&r);
	t_tmpdir_free(dir);
}

static void test_plaintext_needs_loopback(void **state)
{
	char *dir = t_tmpdir(), *key = keygen(dir, "k");
	char listen[32];
	struct t_result r;
	const char *derr = t_path(dir, "dst.err");

	snprintf(listen, sizeof(listen), "0.0.0.0:%d", t_port());
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, NULL };
	t_run(da, 30, &r);
	assert_int_equal(r.status, 125);
	assert_non_null(strstr(r.err, "is not a loopback address"));
	assert_non_null(strstr(r.err, "--insecure"));
	t_result_free(&r);

	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "64M",
		       "--cmdline", "wss=8 secs=2", "--migrate-to", "192.0.2.1:4444",
		       "--migrate-after", "0.1", "--quiet", NULL };
	t_run(sa, 60, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.err, "192.0.2.1 is not a loopback address"));
	assert_non_null(strstr(r.out, T_MV_DONE));
	t_result_free(&r);

	/* --insecure says why it is dangerous, and listens */
	char *di[] = { (char *)t_umig(), "incoming", "--listen", listen, "--insecure", NULL };
	pid_t dpid = t_spawn(di, NULL, derr);
	assert_true(t_wait_for_text(derr, "waiting for a migration", 10000));
	char *o = t_read_file(derr);
	assert_non_null(strstr(o, "--insecure"));
	assert_non_null(strstr(o, "anyone on the network path can read the guest's memory"));
	free(o);
	t_kill(dpid);

	/* with a key, any address is fine */
	char *dk[] = { (char *)t_umig(), "incoming", "--listen", listen, "--auth-key", key, NULL };
	dpid = t_spawn(dk, NULL, derr);
	assert_true(t_wait_for_text(derr, "(TLS, key)", 10000));
	t_kill(dpid);
	free(key);
	t_tmpdir_free(dir);
}

/*
 * RDMA page data is not encrypted: under TLS, --transport rdma needs
 * --rdma-plaintext-pages on either side, refused without it before any RDMA
 * device is looked for (so this runs on a host without one), and said on
 * start with it.
 */
static void test_rdma_under_tls_needs_plaintext_flag(void **state)
{
	char *dir = t_tmpdir(), *key = keygen(dir, "k");
	char listen[32];
	struct t_result r;
	const char *derr = t_path(dir, "dst.err");

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", t_port());
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--transport", "rdma",
		       "--auth-key", key, NULL };
	t_run(da, 30, &r);
	assert_int_equal(r.status, 125);
	assert_non_null(strstr(r.err, "the guest's pages would cross the RDMA network unencrypted"));
	assert_non_null(strstr(r.err, "--rdma-plaintext-pages"));
	assert_null(strstr(r.err, "RDMA device"));   /* refused before device setup */
	t_result_free(&r);

	/* the source refuses before it connects: its guest runs on */
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "64M",
		       "--cmdline", "wss=8 secs=2", "--migrate-to", listen, "--transport", "rdma",
		       "--auth-key", key, "--migrate-after", "0.1", "--quiet", NULL };
	t_run(sa, 60, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.err, "--rdma-plaintext-pages on both sides"));
	assert_null(strstr(r.err, "RDMA device"));
	assert_non_null(strstr(r.out, T_MV_DONE));
	t_result_free(&r);

	/* with the flag it is said on start; no device here may then stop it later */
	char *dk[] = { (char *)t_umig(), "incoming", "--listen", listen, "--transport", "rdma",
		       "--auth-key", key, "--rdma-plaintext-pages", NULL };
	pid_t dpid = t_spawn(dk, NULL, derr);
	assert_true(t_wait_for_text(derr, "waiting for a migration", 10000));
	char *o = t_read_file(derr);
	assert_non_null(strstr(o, "--rdma-plaintext-pages: TLS (psk) protects the control "
			       "connection only"));
	free(o);
	t_kill(dpid);

	/* plaintext on loopback needs no flag: nothing is encrypted anyway */
	char *dp[] = { (char *)t_umig(), "incoming", "--listen", listen, "--transport", "rdma", NULL };
	dpid = t_spawn(dp, NULL, derr);
	assert_true(t_wait_for_text(derr, "waiting for a migration", 10000));
	t_kill(dpid);
	free(key);
	t_tmpdir_free(dir);
}

/* --- in-process: replay and splice ------------------------------------------------- */

struct dst_side {
	int lfd;
	struct xsec *sec;
	uint64_t features;
	bool data;        /* also accept the page channels */
	int ret;
	char why[512];
};

static void *dst_thread(void *arg)
{
	struct dst_side *d = arg;
	struct xport *x = NULL;

	d->ret = xport_accept(&x, "tcp", d->lfd, 3000, d->sec);
	/* the source opens its page channels only once control is accepted, as umig does */
	if (!d->ret)
		d->ret = xport_ctl_send(x, MSG_PING, NULL, 0);
	if (!d->ret && d->data) {
		x->features = d->features;
		x->npages = 16;
		d->ret = xport_accept_data(x, d->lfd, 3000);
	}
	snprintf(d->why, sizeof(d->why), "%s", d->ret < 0 ? err_msg(d->ret) : "");
	xport_close(x);
	return NULL;
}

/* stderr into a file while fn runs, to read what the destination logged */
static char *capture_stderr(const char *path, void (*fn)(void *), void *arg)
{
	int save = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	fflush(stderr);
	dup2(fd, 2);
	fn(arg);
	fflush(stderr);
	dup2(save, 2);
	close(fd);
	close(save);
	return t_read_file(path);
}

struct splice {
	struct dst_side d;
	struct xsec *csec;
	int port;
	bool foreign;     /* bind the channels with another session's key */
	int src_ret;
};

static void splice_run(void *arg)
{
	struct splice *s = arg;
	struct xport *a = NULL, *b = NULL;
	struct proto_msg m = { 0 };
	pthread_t th;

	pthread_create(&th, NULL, dst_thread, &s->d);
	s->src_ret = xport_connect(&a, "tcp", "127.0.0.1", s->port, 77, 3000, s->csec);
	if (!s->src_ret)
		s->src_ret = xport_ctl_recv(a, &m, 3000);
	if (!s->src_ret && s->foreign) {
		/* a second session with the same id and key: its control TLS session differs */
		s->src_ret = xport_connect(&b, "tcp", "127.0.0.1", s->port, 77, 3000, s->csec);
		if (!s->src_ret)
			memcpy(a->bind_key, b->bind_key, sizeof(a->bind_key));
	}
	if (!s->src_ret) {
		a->features = FEAT_TLS;
		s->src_ret = xport_connect_data(a, "127.0.0.1", s->port, 3000);
	}
	pthread_join(th, NULL);
	proto_msg_free(&m);
	xport_close(b);
	xport_close(a);
}

static void test_channel_from_another_session_refused(void **state)
{
	char *dir = t_tmpdir(), *key = keygen(dir, "k"), *log;
	struct splice s = { 0 };

	assert_int_equal(xsec_load(&s.d.sec, key, NULL, true), 0);
	assert_int_equal(xsec_load(&s.csec, key, NULL, false), 0);
	s.d.data = true;
	s.d.features = FEAT_TLS;

	/* first the real thing, so the refusal below is the binding's doing */
	s.port = t_port();
	s.d.lfd = xconn_tcp_listen("127.0.0.1", s.port);
	assert_true(s.d.lfd >= 0);
	splice_run(&s);
	if (s.d.ret || s.src_ret)
		print_message("destination: %s; source %d: %s\n", s.d.why, s.src_ret,
			      s.src_ret ? err_msg(s.src_ret) : "");
	assert_int_equal(s.src_ret, 0);
	assert_int_equal(s.d.ret, 0);
	close(s.d.lfd);

	s.port = t_port();
	s.d.lfd = xconn_tcp_listen("127.0.0.1", s.port);
	s.foreign = true;
	log = capture_stderr(t_path(dir, "log"), splice_run, &s);
	assert_int_equal(s.src_ret, 0);   /* the bytes left; the destination judges them */
	assert_int_equal(s.d.ret, -ETIMEDOUT);
	assert_non_null(strstr(log, "not bound to this migration's TLS session"));
	close(s.d.lfd);
	free(log);
	xsec_free(s.d.sec);
	xsec_free(s.csec);
	free(key);
	t_tmpdir_free(dir);
}

/* One TCP relay that records what the source sent. */
struct relay {
	int lfd, port_to;
	uint8_t rec[65536];
	size_t nrec;
};

static void *relay_thread(void *arg)
{
	struct relay *r = arg;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(r->port_to) };
	int c = accept(r->lfd, NULL, NULL), u = socket(AF_INET, SOCK_STREAM, 0);
	uint8_t buf[16384];

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (c < 0 || connect(u, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto out;
	for (int idle = 0; idle < 20;) {
		struct pollfd p[2] = { { .fd = c, .events = POLLIN }, { .fd = u, .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, 100) <= 0) {
			idle++;
			continue;
		}
		if (p[0].revents) {
			n = read(c, buf, sizeof(buf));
			if (n <= 0)
				break;
			if (r->nrec + n <= sizeof(r->rec)) {
				memcpy(r->rec + r->nrec, buf, n);
				r->nrec += n;
			}
			if (write(u, buf, n) != n)
				break;
		}
		if (p[1].revents) {
			n = read(u, buf, sizeof(buf));
			if (n <= 0 || write(c, buf, n) != n)
				break;
		}
	}
out:
	close(c);
	close(u);
	return NULL;
}

struct replay {
	struct dst_side d;
	struct relay *r;
};

static void replay_run(void *arg)
{
	struct replay *p = arg;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	pthread_t th;
	int fd;

	pthread_create(&th, NULL, dst_thread, &p->d);
	socklen_t len = sizeof(sa);
	getsockname(p->d.lfd, (struct sockaddr *)&sa, &len);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	if (!connect(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
	    write(fd, p->r->rec, p->r->nrec) != (ssize_t)p->r->nrec)
		fprintf(stderr, "short replay\n");
	pthread_join(th, NULL);
	close(fd);
}

static void test_replayed_handshake_refused(void **state)
{
	char *dir = t_tmpdir(), *key = keygen(dir, "k"), *log;
	struct relay *r = calloc(1, sizeof(*r));
	struct replay p = { 0 };
	struct xsec *csec;
	struct xport *x = NULL;
	pthread_t rth, dth;
	int rport = t_port();

	assert_int_equal(xsec_load(&p.d.sec, key, NULL, true), 0);
	assert_int_equal(xsec_load(&csec, key, NULL, false), 0);
	/* record a real source's control connection through the relay */
	r->port_to = t_port();
	p.d.lfd = xconn_tcp_listen("127.0.0.1", r->port_to);
	r->lfd = xconn_tcp_listen("127.0.0.1", rport);
	assert_true(p.d.lfd >= 0 && r->lfd >= 0);
	pthread_create(&dth, NULL, dst_thread, &p.d);
	pthread_create(&rth, NULL, relay_thread, r);
	assert_int_equal(xport_connect(&x, "tcp", "127.0.0.1", rport, 99, 3000, csec), 0);
	assert_int_equal(xport_ctl_send(x, MSG_PING, NULL, 0), 0);
	pthread_join(dth, NULL);
	assert_int_equal(p.d.ret, 0);
	xport_close(x);
	pthread_join(rth, NULL);
	assert_true(r->nrec > 100);

	/* the same bytes again, to a destination that expects a new handshake */
	p.r = r;
	log = capture_stderr(t_path(dir, "log"), replay_run, &p);
	assert_int_equal(p.d.ret, -ETIMEDOUT);
	assert_non_null(strstr(log, "authentication failed"));
	free(log);
	close(p.d.lfd);
	close(r->lfd);
	free(r);
	xsec_free(p.d.sec);
	xsec_free(csec);
	free(key);
	t_tmpdir_free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_psk_migration),
		cmocka_unit_test(test_wrong_and_missing_keys),
		cmocka_unit_test(test_key_file_must_be_private),
		cmocka_unit_test(test_x509_migration_and_untrusted),
		cmocka_unit_test(test_strangers_do_not_block_incoming),
		cmocka_unit_test(test_plaintext_needs_loopback),
		cmocka_unit_test(test_rdma_under_tls_needs_plaintext_flag),
		cmocka_unit_test(test_channel_from_another_session_refused),
		cmocka_unit_test(test_replayed_handshake_refused),
	};

	signal(SIGPIPE, SIG_IGN);
	if (getenv("T_FILTER"))
		cmocka_set_test_filter(getenv("T_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
