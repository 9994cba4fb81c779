/*
 * floors.c - the floors of this machine that post-copy's figures are
 * stated against, measured in the same run as the figures (bench/run
 * runs it before the matrix): what a fault, a round trip, a page
 * placement and the link cost with nothing of umig in the way.
 *
 *   floors local                 userfaultfd floors, and TCP over 127.0.0.1
 *   floors serve HOST:PORT       the far end for `client` (a few seconds idle ends it)
 *   floors client HOST:PORT      round trip and throughput to a `serve`
 *
 * Prints one JSON object:
 *   uffd_fault_us_p50/p99   a write to a missing page of a registered
 *                           region, served in-process by a thread that
 *                           polls the userfaultfd and answers UFFDIO_COPY
 *   uffd_copy_us_per_page   UFFDIO_COPY, one 4 KiB page per call, no fault
 *   uffd_copy64_us_per_page the same in runs of 64 pages
 *   uffd_continue_us_per_page UFFDIO_CONTINUE of a shmem page already in
 *                           the page cache (minor mode), or null and
 *                           uffd_continue_error when the kernel has none
 *   place_copy{1,64}_us_per_page      what placing a received page costs
 *   place_memcpy{1,64}_us_per_page    umig's destination, per page, in runs of
 *   place_pwrite{1,64}_us_per_page    1 and 64 pages, into fresh RAM from a
 *   place_shmcopy{1,64}_us_per_page   buffer: UFFDIO_COPY into anonymous RAM;
 *   place_populate{1,64}_us_per_page  memcpy into a memfd's second view (a write
 *                           fault per page there) then UFFDIO_CONTINUE; pwrite(2)
 *                           into the memfd then UFFDIO_CONTINUE; UFFDIO_COPY
 *                           into the memfd's guest view; MADV_POPULATE_WRITE of
 *                           the run in the second view, memcpy, UFFDIO_CONTINUE
 *                           (what receiving straight into that view would cost)
 *   rtt_us_p50/p99          16 bytes out, 4112 back (a page request and
 *                           its reply), TCP_NODELAY, one at a time
 *   tcp_MBps                one connection, 512 MiB, sender to receiver
 * Every wait is bounded (poll timeouts, SO_RCVTIMEO).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PG 4096ul
#define NPAGES 8192ul            /* 32 MiB per userfaultfd measurement */
#define RTT_N 2000
#define TPUT_BYTES (512ul << 20)
#define REQ 16
#define REPLY (PG + 16)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double pct_us(uint64_t *v, size_t n, double p)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return v[(size_t)((n - 1) * p / 100)] / 1e3;
}

/* --- userfaultfd ------------------------------------------------------------ */

static int uffd_new(uint64_t features, const char **err)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = { .api = UFFD_API, .features = features };

	if (fd < 0) {
		*err = "userfaultfd unavailable (run as root or set vm.unprivileged_userfaultfd=1)";
		return -1;
	}
	if (ioctl(fd, UFFDIO_API, &api)) {
		*err = "the kernel lacks a userfaultfd feature this needs";
		close(fd);
		return -1;
	}
	return fd;
}

static int uffd_reg(int fd, void *p, size_t len, uint64_t mode)
{
	struct uffdio_register r = { .range = { (uintptr_t)p, len }, .mode = mode };

	return ioctl(fd, UFFDIO_REGISTER, &r);
}

struct server {
	int fd, quit;
	uint8_t *page;
};

/* The fault thread: one UFFDIO_COPY per fault, as umig's destination does. */
static void *fault_server(void *arg)
{
	struct server *sv = arg;
	struct uffd_msg m;

	while (!__atomic_load_n(&sv->quit, __ATOMIC_ACQUIRE)) {
		struct pollfd p = { .fd = sv->fd, .events = POLLIN };

		if (poll(&p, 1, 100) <= 0 || read(sv->fd, &m, sizeof(m)) != sizeof(m))
			continue;
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		struct uffdio_copy c = { .dst = m.arg.pagefault.address & ~(PG - 1),
					 .src = (uintptr_t)sv->page, .len = PG };
		if (ioctl(sv->fd, UFFDIO_COPY, &c) && errno != EEXIST)
			fprintf(stderr, "floors: UFFDIO_COPY: %s\n", strerror(errno));
	}
	return NULL;
}

static int uffd_fault_floor(double *p50, double *p99, const char **err)
{
	uint64_t *lat = calloc(NPAGES, sizeof(*lat));
	uint8_t *mem = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct server sv = { .page = aligned_alloc(PG, PG) };
	pthread_t t;

	if (!lat || mem == MAP_FAILED || !sv.page)
		return *err = "out of memory", -1;
	memset(sv.page, 0x5a, PG);
	sv.fd = uffd_new(0, err);
	if (sv.fd < 0)
		return -1;
	if (uffd_reg(sv.fd, mem, NPAGES * PG, UFFDIO_REGISTER_MODE_MISSING))
		return *err = "UFFDIO_REGISTER failed", -1;
	pthread_create(&t, NULL, fault_server, &sv);
	for (size_t i = 0; i < NPAGES; i++) {
		uint64_t t0 = now_ns();

		((volatile uint8_t *)mem)[i * PG] = 1;
		lat[i] = now_ns() - t0;
	}
	__atomic_store_n(&sv.quit, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	*p50 = pct_us(lat, NPAGES, 50);
	*p99 = pct_us(lat, NPAGES, 99);
	close(sv.fd);
	munmap(mem, NPAGES * PG);
	free(sv.page);
	free(lat);
	return 0;
}

/* UFFDIO_COPY cost per page in runs of `run` pages, nothing faulting. */
static double uffd_copy_floor(size_t run, const char **err)
{
	uint8_t *mem = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *src = aligned_alloc(PG, run * PG);
	int fd = uffd_new(0, err);
	uint64_t t0;

	if (fd < 0 || mem == MAP_FAILED || !src)
		return -1;
	memset(src, 0x33, run * PG);
	if (uffd_reg(fd, mem, NPAGES * PG, UFFDIO_REGISTER_MODE_MISSING))
		return *err = "UFFDIO_REGISTER failed", -1;
	t0 = now_ns();
	for (size_t i = 0; i + run <= NPAGES; i += run) {
		struct uffdio_copy c = { .dst = (uintptr_t)(mem + i * PG), .src = (uintptr_t)src,
					 .len = run * PG };

		if (ioctl(fd, UFFDIO_COPY, &c))
			return *err = "UFFDIO_COPY failed", -1;
	}
	t0 = now_ns() - t0;
	close(fd);
	munmap(mem, NPAGES * PG);
	free(src);
	return t0 / 1e3 / NPAGES;
}

/* UFFDIO_CONTINUE per page: shmem populated through a second view. */
static double uffd_continue_floor(const char **err)
{
	int mfd = memfd_create("floors", MFD_CLOEXEC), fd;
	uint8_t *a, *b;
	uint64_t t0;

	if (mfd < 0 || ftruncate(mfd, NPAGES * PG))
		return *err = "memfd_create failed", -1;
	a = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	b = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (a == MAP_FAILED || b == MAP_FAILED)
		return *err = "mmap of the memfd failed", -1;
	for (size_t i = 0; i < NPAGES; i++)
		b[i * PG] = 1;   /* in the page cache, not mapped in a */
	fd = uffd_new(UFFD_FEATURE_MINOR_SHMEM, err);
	if (fd < 0)
		return *err = "no minor faults on shmem (UFFD_FEATURE_MINOR_SHMEM)", -1;
	if (uffd_reg(fd, a, NPAGES * PG, UFFDIO_REGISTER_MODE_MINOR))
		return *err = "UFFDIO_REGISTER_MODE_MINOR failed", -1;
	t0 = now_ns();
	for (size_t i = 0; i < NPAGES; i++) {
		struct uffdio_continue c = { .range = { (uintptr_t)(a + i * PG), PG } };

		if (ioctl(fd, UFFDIO_CONTINUE, &c))
			return *err = "UFFDIO_CONTINUE failed", -1;
	}
	t0 = now_ns() - t0;
	close(fd);
	munmap(a, NPAGES * PG);
	munmap(b, NPAGES * PG);
	close(mfd);
	return t0 / 1e3 / NPAGES;
}

/* --- TCP -------------------------------------------------------------------- */

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *c = strrchr(s, ':');

	if (!c || (size_t)(c - s) >= sizeof(host))
		return -1;
	memcpy(host, s, c - s);
	host[c - s] = 0;
	*sa = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(atoi(c + 1)) };
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int full(int fd, void *buf, size_t len, int send_it)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = send_it ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);

		if (n <= 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

static void timeouts(int fd, int secs)
{
	struct timeval tv = { .tv_sec = secs };
	int one = 1;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* One connection: 'R' ping-pong until EOF, or 'T' count until EOF and answer the count. */
static void serve_one(int c)
{
	static uint8_t buf[1 << 20];
	uint64_t total = 0;
	char kind;

	timeouts(c, 10);
	if (recv(c, &kind, 1, 0) != 1)
		return;
	if (kind == 'R') {
		while (!full(c, buf, REQ, 0))
			if (full(c, buf, REPLY, 1))
				break;
		return;
	}
	for (;;) {
		ssize_t n = recv(c, buf, sizeof(buf), 0);

		if (n <= 0)
			break;
		total += n;
	}
	full(c, &total, sizeof(total), 1);
}

/* Serve connections until none arrives for idle_s seconds. */
static int serve(const char *addr, int idle_s, int ready_fd)
{
	struct sockaddr_in sa;
	int one = 1, l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (l < 0 || parse_addr(addr, &sa))
		return fprintf(stderr, "floors: bad address '%s' (want IPv4:PORT)\n", addr), 2;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 4))
		return fprintf(stderr, "floors: cannot listen on %s: %s\n", addr, strerror(errno)), 1;
	if (ready_fd >= 0) {
		if (write(ready_fd, "r", 1) != 1)
			return 1;
		close(ready_fd);
	}
	for (;;) {
		struct pollfd p = { .fd = l, .events = POLLIN };
		int c;

		if (poll(&p, 1, idle_s * 1000) <= 0)
			break;
		c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (c >= 0) {
			serve_one(c);
			close(c);
		}
	}
	close(l);
	return 0;
}

static int dial(const char *addr, char kind)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || parse_addr(addr, &sa))
		return -1;
	timeouts(fd, 10);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) || send(fd, &kind, 1, 0) != 1) {
		close(fd);
		return -1;
	}
	return fd;
}

static int tcp_floors(const char *addr, double *p50, double *p99, double *mbps)
{
	static uint8_t buf[1 << 20];
	uint64_t lat[RTT_N], t0, got = 0;
	int fd = dial(addr, 'R');

	if (fd < 0)
		return -1;
	for (int i = 0; i < RTT_N; i++) {
		t0 = now_ns();
		if (full(fd, buf, REQ, 1) || full(fd, buf, REPLY, 0))
			return close(fd), -1;
		lat[i] = now_ns() - t0;
	}
	close(fd);
	*p50 = pct_us(lat, RTT_N, 50);
	*p99 = pct_us(lat, RTT_N, 99);
	fd = dial(addr, 'T');
	if (fd < 0)
		return -1;
	t0 = now_ns();
	for (size_t sent = 0; sent < TPUT_BYTES; sent += sizeof(buf))
		if (full(fd, buf, sizeof(buf), 1))
			return close(fd), -1;
	shutdown(fd, SHUT_WR);
	if (full(fd, &got, sizeof(got), 0) || got != TPUT_BYTES)
		return close(fd), -1;
	*mbps = TPUT_BYTES / ((now_ns() - t0) / 1e9) / 1e6;
	close(fd);
	return 0;
}

struct local_srv {
	char addr[32];
	int ready;
};

static void *local_server(void *arg)
{
	struct local_srv *ls = arg;

	serve(ls->addr, 2, ls->ready);
	return NULL;
}

static void print_num(const char *key, double v, int ok, const char *sep)
{
	if (ok)
		printf("\"%s\": %.3f%s", key, v, sep);
	else
		printf("\"%s\": null%s", key, sep);
}

/* One placement method in runs of `run` pages (see the top of the file). */
enum place_how { PLACE_MEMCPY, PLACE_PWRITE, PLACE_SHMCOPY, PLACE_POPULATE };

static int place_one(int fd, int mfd, uint8_t *guest, uint8_t *place, const uint8_t *src,
		     size_t i, size_t run, enum place_how how)
{
	struct uffdio_continue c = { .range = { (uintptr_t)(guest + i * PG), run * PG } };
	struct uffdio_copy cp = { .dst = (uintptr_t)(guest + i * PG), .src = (uintptr_t)src,
				  .len = run * PG };

	if (how == PLACE_SHMCOPY)
		return ioctl(fd, UFFDIO_COPY, &cp);
	/* prefault the run in the placement view in one call: what a recv() into it would need */
	if (how == PLACE_POPULATE && madvise(place + i * PG, run * PG, MADV_POPULATE_WRITE))
		return -1;
	if (how == PLACE_MEMCPY || how == PLACE_POPULATE)
		memcpy(place + i * PG, src, run * PG);
	else if (pwrite(mfd, src, run * PG, (off_t)(i * PG)) != (ssize_t)(run * PG))
		return -1;
	return ioctl(fd, UFFDIO_CONTINUE, &c);
}

static double place_floor(size_t run, enum place_how how, const char **err)
{
	int mfd = memfd_create("floors-place", MFD_CLOEXEC), fd;
	uint8_t *src = aligned_alloc(PG, run * PG), *g, *pl;
	uint64_t t0;

	if (mfd < 0 || ftruncate(mfd, NPAGES * PG) || !src)
		return *err = "memfd_create failed", -1;
	memset(src, 0x5a, run * PG);
	g = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	pl = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (g == MAP_FAILED || pl == MAP_FAILED)
		return *err = "mmap of the memfd failed", -1;
	madvise(g, NPAGES * PG, MADV_NOHUGEPAGE);
	madvise(pl, NPAGES * PG, MADV_NOHUGEPAGE);
	fd = uffd_new(UFFD_FEATURE_MINOR_SHMEM, err);
	if (fd < 0)
		return *err = "no minor faults on shmem (UFFD_FEATURE_MINOR_SHMEM)", -1;
	if (uffd_reg(fd, g, NPAGES * PG, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR))
		return *err = "UFFDIO_REGISTER_MODE_MISSING|MINOR failed", -1;
	t0 = now_ns();
	for (size_t i = 0; i + run <= NPAGES; i += run)
		if (place_one(fd, mfd, g, pl, src, i, run, how))
			return *err = "placing through the second view failed", -1;
	t0 = now_ns() - t0;
	close(fd);
	munmap(g, NPAGES * PG);
	munmap(pl, NPAGES * PG);
	close(mfd);
	free(src);
	return t0 / 1e3 / NPAGES;
}

static void print_place_floors(void)
{
	static const size_t runs[] = { 1, 64 };
	const char *err = NULL;
	char key[64];

	for (size_t k = 0; k < 2; k++) {
		double c = uffd_copy_floor(runs[k], &err);
		double m = place_floor(runs[k], PLACE_MEMCPY, &err);
		double w = place_floor(runs[k], PLACE_PWRITE, &err);
		double sc = place_floor(runs[k], PLACE_SHMCOPY, &err);
		double pp = place_floor(runs[k], PLACE_POPULATE, &err);

		snprintf(key, sizeof(key), "place_copy%zu_us_per_page", runs[k]);
		print_num(key, c, c >= 0, ", ");
		snprintf(key, sizeof(key), "place_memcpy%zu_us_per_page", runs[k]);
		print_num(key, m, m >= 0, ", ");
		snprintf(key, sizeof(key), "place_pwrite%zu_us_per_page", runs[k]);
		print_num(key, w, w >= 0, ", ");
		snprintf(key, sizeof(key), "place_shmcopy%zu_us_per_page", runs[k]);
		print_num(key, sc, sc >= 0, ", ");
		snprintf(key, sizeof(key), "place_populate%zu_us_per_page", runs[k]);
		print_num(key, pp, pp >= 0, ", ");
	}
	if (err)
		printf("\"place_error\": \"%s\", ", err);
}

static int run_tcp(const char *addr)
{
	double p50 = 0, p99 = 0, mbps = 0;
	int ok = !tcp_floors(addr, &p50, &p99, &mbps);

	if (!ok)
		fprintf(stderr, "floors: the TCP measurement to %s failed\n", addr);
	print_num("rtt_us_p50", p50, ok, ", ");
	print_num("rtt_us_p99", p99, ok, ", ");
	print_num("tcp_MBps", mbps, ok, "");
	return ok ? 0 : 1;
}

static int run_local(void)
{
	const char *e1 = NULL, *e2 = NULL, *e3 = NULL, *e4 = NULL;
	double f50 = 0, f99 = 0, c1, c64, cont;
	int okf = !uffd_fault_floor(&f50, &f99, &e1), p[2];
	struct local_srv ls;
	pthread_t t;
	int ret;

	c1 = uffd_copy_floor(1, &e2);
	c64 = uffd_copy_floor(64, &e3);
	cont = uffd_continue_floor(&e4);
	printf("{");
	print_num("uffd_fault_us_p50", f50, okf, ", ");
	print_num("uffd_fault_us_p99", f99, okf, ", ");
	if (!okf)
		printf("\"uffd_error\": \"%s\", ", e1);
	print_num("uffd_copy_us_per_page", c1, c1 >= 0, ", ");
	print_num("uffd_copy64_us_per_page", c64, c64 >= 0, ", ");
	print_num("uffd_continue_us_per_page", cont, cont >= 0, ", ");
	if (cont < 0)
		printf("\"uffd_continue_error\": \"%s\", ", e4);
	print_place_floors();
	(void)e2;
	(void)e3;
	snprintf(ls.addr, sizeof(ls.addr), "127.0.0.1:%d", 30000 + getpid() % 20000);
	if (pipe(p))
		return 1;
	ls.ready = p[1];
	pthread_create(&t, NULL, local_server, &ls);
	{
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		char c;

		if (poll(&pf, 1, 5000) != 1 || read(p[0], &c, 1) != 1)
			fprintf(stderr, "floors: the local server did not start\n");
	}
	ret = run_tcp(ls.addr);
	printf("}\n");
	pthread_join(t, NULL);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "local"))
		return run_local();
	if (argc == 3 && !strcmp(argv[1], "serve"))
		return serve(argv[2], 5, -1);
	if (argc == 3 && !strcmp(argv[1], "client")) {
		int ret;

		printf("{");
		ret = run_tcp(argv[2]);
		printf("}\n");
		return ret;
	}
	fprintf(stderr, "usage: floors local | floors serve IPv4:PORT | floors client IPv4:PORT\n");
	return 2;
}
