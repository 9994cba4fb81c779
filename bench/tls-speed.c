/*
 * tls-speed.c - what TLS 1.3 costs a migration's connections on this
 * machine, measured on umig's own connection layer over loopback
 * (bench/tls-speed runs it).
 *
 * For plaintext (with frame digests, as a plaintext migration sends) and
 * for TLS with a pre-shared key it measures
 *   - bulk: PAGES frames of 64 pages (256 KiB) from one thread to a
 *     receiver, as the bulk channel carries them: MB/s of page data, and
 *     the sender's CPU seconds per GB;
 *   - urgent: a REQ (8 bytes) answered by a PAGE (4 KiB), one at a time,
 *     as a post-copy fault is served: round trip p50 / p99 / max in µs.
 * The guest, userfaultfd and the engine are left out, so the difference
 * is the transport's alone.
 *
 *   tls-speed [--quick]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "umig/log.h"
#include "umig/proto.h"
#include "umig/util.h"
#include "umig/xconn.h"
#include "umig/xsec.h"

struct side {
	int lfd;
	struct xsec *sec;
	bool digest;
	struct xconn *c;
	uint64_t frames;
	double cpu;
	int ret;
};

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *bulk_sink(void *arg)
{
	struct side *s = arg;
	struct proto_msg m = { 0 };

	s->ret = xconn_tcp_accept(&s->c, s->lfd, XCH_BULK, 5000);
	if (!s->ret && s->sec)
		s->ret = xconn_tls_start(s->c, s->sec, NULL, 5000);
	s->c->digest = s->digest;
	s->cpu = cpu_s();
	while (!s->ret && (s->ret = proto_recv(s->c, &m)) == 0 && m.type == MSG_PAGES)
		s->frames++;
	s->cpu = cpu_s() - s->cpu;
	proto_msg_free(&m);
	return NULL;
}

static void *urgent_server(void *arg)
{
	struct side *s = arg;
	struct proto_msg m = { 0 };
	static uint8_t page[4096];
	uint8_t h[16] = { 0 };

	s->ret = xconn_tcp_accept(&s->c, s->lfd, XCH_URGENT, 5000);
	if (!s->ret)
		xconn_tcp_set_channel(s->c, XCH_URGENT);
	if (!s->ret && s->sec)
		s->ret = xconn_tls_start(s->c, s->sec, NULL, 5000);
	s->c->digest = s->digest;
	while (!s->ret && (s->ret = proto_recv(s->c, &m)) == 0 && m.type == MSG_REQ)
		s->ret = proto_send2(s->c, MSG_PAGE, h, 16, page, sizeof(page));
	proto_msg_free(&m);
	return NULL;
}

static int connect_to(struct xconn **c, int port, enum xport_channel ch, struct xsec *sec,
		      bool digest)
{
	int ret = xconn_tcp_connect(c, "127.0.0.1", port, ch, 5000);

	if (!ret && sec)
		ret = xconn_tls_start(*c, sec, "127.0.0.1", 5000);
	if (!ret)
		(*c)->digest = digest;
	return ret;
}

static void bulk(const char *name, int port, struct xsec *ss, struct xsec *cs, uint64_t bytes)
{
	struct side s = { .lfd = xconn_tcp_listen("127.0.0.1", port), .sec = ss, .digest = !ss };
	uint8_t *data = malloc(64 * 4096), h[16] = { 0 };
	struct xconn *c = NULL;
	pthread_t th;
	double t0, c0;
	int ret;

	memset(data, 0x5a, 64 * 4096);
	pthread_create(&th, NULL, bulk_sink, &s);
	ret = connect_to(&c, port, XCH_BULK, cs, !cs);
	t0 = now_ns() / 1e9;
	c0 = cpu_s();
	for (uint64_t sent = 0; !ret && sent < bytes; sent += 64 * 4096)
		ret = proto_send2(c, MSG_PAGES, h, 16, data, 64 * 4096);
	if (!ret)
		ret = xconn_flush(c);
	if (!ret)
		ret = proto_send(c, MSG_PING, NULL, 0);
	pthread_join(th, NULL);
	if (ret < 0 || s.frames * 64 * 4096 < bytes)
		fprintf(stderr, "bulk %s failed: %s\n", name, err_msg(ret < 0 ? ret : s.ret));
	else
		printf("%-10s bulk    %8.0f MB/s   CPU s/GB: sender %5.2f, receiver %5.2f\n", name,
		       bytes / 1e6 / (now_ns() / 1e9 - t0), (cpu_s() - c0) / (bytes / 1e9),
		       s.cpu / (bytes / 1e9));
	xconn_close(c);
	xconn_close(s.c);
	close(s.lfd);
	free(data);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void urgent(const char *name, int port, struct xsec *ss, struct xsec *cs, int n)
{
	struct side s = { .lfd = xconn_tcp_listen("127.0.0.1", port), .sec = ss, .digest = !ss };
	uint64_t *us = calloc(n, sizeof(*us));
	struct proto_msg m = { 0 };
	struct xconn *c = NULL;
	uint8_t req[8] = { 0 };
	pthread_t th;
	int ret;

	pthread_create(&th, NULL, urgent_server, &s);
	ret = connect_to(&c, port, XCH_URGENT, cs, !cs);
	for (int i = 0; !ret && i < n; i++) {
		uint64_t t = now_ns();

		ret = proto_send(c, MSG_REQ, req, sizeof(req));
		if (!ret)
			ret = proto_recv(c, &m);
		us[i] = (now_ns() - t) / 1000;
	}
	if (!ret)
		ret = proto_send(c, MSG_PING, NULL, 0);
	pthread_join(th, NULL);
	if (ret < 0) {
		fprintf(stderr, "urgent %s failed: %s\n", name, err_msg(ret));
	} else {
		qsort(us, n, sizeof(*us), cmp_u64);
		printf("%-10s urgent  REQ -> 4 KiB PAGE round trip p50 %4llu us  p99 %5llu us  max %6llu us"
		       "  (%d)\n", name, (unsigned long long)us[n / 2],
		       (unsigned long long)us[n * 99 / 100], (unsigned long long)us[n - 1], n);
	}
	proto_msg_free(&m);
	xconn_close(c);
	xconn_close(s.c);
	close(s.lfd);
	free(us);
}

int main(int argc, char **argv)
{
	bool quick = argc > 1 && !strcmp(argv[1], "--quick");

	log_init_from_env();
	uint64_t bytes = quick ? 512ull << 20 : 4ull << 30;
	int n = quick ? 2000 : 20000, port = 30000 + getpid() % 20000, ret;
	char path[] = "/tmp/umig-tls-speed.XXXXXX";
	struct xsec *ss = NULL, *cs = NULL;
	int fd = mkstemp(path);

	close(fd);
	unlink(path);
	ret = xsec_keygen(path);
	if (!ret)
		ret = xsec_load(&ss, path, NULL, true);
	if (!ret)
		ret = xsec_load(&cs, path, NULL, false);
	unlink(path);
	if (ret < 0) {
		fprintf(stderr, "tls-speed: %s\n", err_msg(ret));
		return 1;
	}
	bulk("plaintext", port, NULL, NULL, bytes);
	bulk("tls-psk", port + 1, ss, cs, bytes);
	urgent("plaintext", port + 2, NULL, NULL, n);
	urgent("tls-psk", port + 3, ss, cs, n);
	xsec_free(ss);
	xsec_free(cs);
	return 0;
}
