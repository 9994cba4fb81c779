/*
 * test-compress.c - sending less, end to end: memverify migrated clean
 * with every compression setting and with delta encoding in each mode,
 * the figures in the record; and a destination facing a hand-made source
 * refuses a corrupted compressed run, a delta for a page it does not
 * hold and an encoding that was not negotiated, each by name.
 */
#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "t-rig.h"
#include "t-util.h"
#include "umig/codec.h"
#include "umig/delta.h"
#include "umig/pagefill.h"
#include "umig/proto.h"

/*
 * Migrate memverify (64 MiB guest, 16 MiB of text pages, a tenth of the words
 * rewritten per pass) with the extra source options; returns the
 * source's record after checking the guest finished clean there.
 */
static json_t *migrate_with(const char *mode, const char *const *extra)
{
	const struct rig_local m = { .guest = "memverify",
				     .cmdline = "wss=16 secs=40 moved_secs=1 fill=text change=10",
				     .mode = mode, .after = "0.3",
				     .done = T_MV_DONE,
				     .extra = extra, .bound_s = 120 };

	return rig_local_migrate(&m);
}

static uint64_t jint(json_t *rec, const char *k)
{
	return json_integer_value(t_json_need(rec, k));
}

static uint64_t batches(json_t *rec, const char *kind)
{
	return json_integer_value(json_object_get(json_object_get(rec, "compress_batches"), kind));
}

/* A fixed codec: every data batch of text pages goes compressed, and smaller. */
static void fixed_codec(const char *mode, const char *codec)
{
	const char *extra[] = { "--compress", codec, NULL };
	json_t *rec = migrate_with(mode, extra);

	assert_string_equal(json_string_value(json_object_get(rec, "compress")), codec);
	assert_true(batches(rec, codec) > 0);
	/* how much the guest wrote by then depends on the machine: at least some runs */
	assert_true(jint(rec, "compress_bytes_in") >= 64 * 4096);
	/*
	 * text pages with memverify's unique first word: lz4 about 2x in
	 * 64-page batches; post-copy pushes 16-page runs, which give less
	 */
	if (strcmp(mode, "post"))
		assert_true(jint(rec, "compress_bytes_out") * 3 < jint(rec, "compress_bytes_in") * 2);
	else
		assert_true(jint(rec, "compress_bytes_out") * 10 < jint(rec, "compress_bytes_in") * 9);
	assert_true(jint(rec, "wire_bytes_bulk") < jint(rec, "compress_bytes_in"));
	json_decref(rec);
}

static void test_pre_lz4(void **s) { fixed_codec("pre", "lz4"); }
static void test_post_lz4(void **s) { fixed_codec("post", "lz4"); }

/* auto: whatever it picks, the guest arrives whole and the counts add up. */
static void test_pre_auto(void **s)
{
	const char *extra[] = { "--compress", "auto", NULL };
	json_t *rec = migrate_with("pre", extra);

	assert_string_equal(json_string_value(json_object_get(rec, "compress")), "auto");
	assert_true(batches(rec, "none") + batches(rec, "lz4") + batches(rec, "zstd") > 0);
	assert_true(jint(rec, "compress_bytes_out") <= jint(rec, "compress_bytes_in"));
	json_decref(rec);
}

/* Deltas: pre-copy's later rounds re-send pages a tenth changed, as deltas. */
static void test_pre_delta(void **s)
{
	const char *extra[] = { "--delta-cache", "32M", "--max-rounds", "4", "--downtime-limit",
				"1", NULL };
	json_t *rec = migrate_with("pre", extra);

	assert_int_equal(jint(rec, "delta_cache_bytes"), 32 << 20);
	assert_true(jint(rec, "delta_hits") > 0);
	assert_true(jint(rec, "delta_pages") > 0);
	assert_true(jint(rec, "delta_bytes_saved") > jint(rec, "delta_pages") * 2048);
	json_decref(rec);
}

static void test_pre_delta_and_zstd(void **s)
{
	const char *extra[] = { "--delta-cache", "32M", "--compress", "zstd", "--max-rounds", "4",
				"--downtime-limit", "1", NULL };
	json_t *rec = migrate_with("pre", extra);

	assert_true(jint(rec, "delta_pages") > 0);
	assert_true(batches(rec, "zstd") > 0);
	json_decref(rec);
}

/* Hybrid and stop-copy send each page once before the switchover: no delta, no harm. */
static void test_hybrid_delta(void **s)
{
	const char *extra[] = { "--delta-cache", "8M", "--compress", "zstd", NULL };
	json_t *rec = migrate_with("hybrid", extra);

	assert_int_equal(jint(rec, "delta_pages"), 0);
	assert_true(batches(rec, "zstd") > 0);
	json_decref(rec);
}

static void test_stop_copy_delta(void **s)
{
	const char *extra[] = { "--delta-cache", "8M", "--compress", "lz4", NULL };
	json_t *rec = migrate_with("stop-copy", extra);

	assert_int_equal(jint(rec, "delta_pages"), 0);
	assert_true(batches(rec, "lz4") > 0);
	json_decref(rec);
}

/* --- a hand-made source --------------------------------------------------------- */

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = v >> (8 * i);
}

static int t_connect(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct timeval tv = { .tv_sec = 10 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	for (int i = 0; i < 100 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)); i++)
		usleep(50000);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void t_send(int fd, const void *b, size_t n)
{
	assert_int_equal(send(fd, b, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void t_greeting(int fd, unsigned ch)
{
	uint8_t g[16];

	put_le(g, PROTO_MAGIC, 4);
	put_le(g + 4, 1, 2);
	put_le(g + 6, ch, 2);
	put_le(g + 8, 4242, 8);
	t_send(fd, g, 16);
}

static void t_frame(int fd, uint16_t type, const void *a, uint32_t alen, const void *b,
		    uint32_t blen)
{
	uint8_t h[8];

	put_le(h, alen + blen, 4);
	put_le(h + 4, type, 2);
	put_le(h + 6, 0, 2);
	t_send(fd, h, 8);
	if (alen)
		t_send(fd, a, alen);
	if (blen)
		t_send(fd, b, blen);
}

/* Read one frame; returns its type. */
static int t_read_frame(int fd)
{
	uint8_t h[8], b[256];
	uint32_t len;

	assert_int_equal(recv(fd, h, 8, MSG_WAITALL), 8);
	len = h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24;
	assert_true(len <= sizeof(b));
	if (len)
		assert_int_equal(recv(fd, b, len, MSG_WAITALL), (ssize_t)len);
	return h[4] | h[5] << 8;
}

/*
 * Open a pre-copy session offering `offer`, then send one frame on bulk:
 * type with header {pfn, n, codec} and body.  Returns the destination's
 * exit status and stderr.
 */
static int fake_source(uint64_t offer, uint16_t type, uint64_t pfn, uint32_t n, uint32_t codec,
		       const void *body, uint32_t blen, char **err)
{
	char *dir = t_tmpdir();
	char listen[32];
	const char *errp = t_path(dir, "err");
	uint8_t p[24];
	int port = rig_port(), st, c, bulk, urg;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--quiet", NULL };
	pid_t dpid = t_spawn(da, NULL, errp);

	c = t_connect(port);
	t_greeting(c, 0);
	put_le(p, 4096, 4);
	put_le(p + 4, MIG_MODE_PRE, 4);
	put_le(p + 8, 64 << 20, 8);
	put_le(p + 16, FEAT_HELLO2, 8);
	t_frame(c, MSG_HELLO, p, 24, NULL, 0);
	assert_int_equal(t_read_frame(c), MSG_HELLO_ACK);
	put_le(p, 2, 2);
	put_le(p + 2, 2, 2);
	put_le(p + 4, 0, 4);
	put_le(p + 8, offer, 8);
	put_le(p + 16, 0, 8);
	t_frame(c, MSG_HELLO2, p, 24, NULL, 0);
	assert_int_equal(t_read_frame(c), MSG_HELLO2_ACK);
	bulk = t_connect(port);
	t_greeting(bulk, 1);
	urg = t_connect(port);
	t_greeting(urg, 2);
	put_le(p, pfn, 8);
	put_le(p + 8, n, 4);
	put_le(p + 12, codec, 4);
	t_frame(bulk, type, p, 16, body, blen);
	/* the receiver names the run at once; closing control then ends the destination */
	t_wait_for_text(errp, "bulk channel", 10000);
	close(bulk);
	close(urg);
	close(c);
	st = t_wait(dpid, 30);
	*err = t_read_file(errp);
	t_tmpdir_free(dir);
	return st;
}

static uint8_t *text_pages(size_t n, uint64_t first, uint64_t gen)
{
	uint64_t *w = malloc(n * 4096);

	assert_non_null(w);
	for (size_t p = 0; p < n; p++)
		for (size_t i = 0; i < 512; i++)
			w[p * 512 + i] = pagefill_word(PAGEFILL_TEXT, first + p, i, gen);
	return (uint8_t *)w;
}

/* One flipped byte inside a compressed run: refused by name, the migration fails. */
static void corrupted(enum codec_kind kind, size_t at)
{
	uint8_t *pages = text_pages(8, 100, 1), *z = malloc(8 * 4096);
	struct codec_enc *e;
	char *err, want[64];
	long len;

	assert_int_equal(codec_enc_new(NULL, &e), 0);
	len = codec_encode(e, kind, pages, 8, z, 8 * 4096);
	assert_true(len > CODEC_HDR_SIZE);
	z[at < (size_t)len ? at : (size_t)len / 2] ^= 0x10;
	assert_int_equal(fake_source(FEAT_COMPRESS, MSG_PAGES_Z, 100, 8, kind, z, len, &err), 125);
	snprintf(want, sizeof(want), "%s run 100+8 (%ld bytes) refused", codec_kind_name(kind),
		 len);
	if (!strstr(err, want))
		fail_msg("no '%s' in: %s", want, err);
	free(err);
	codec_enc_free(e);
	free(pages);
	free(z);
}

static void test_corrupt_lz4_hash(void **s) { corrupted(CODEC_LZ4, 8); }
static void test_corrupt_lz4_body(void **s) { corrupted(CODEC_LZ4, 200); }
static void test_corrupt_zstd_body(void **s) { corrupted(CODEC_ZSTD, 300); }

/* A delta for a page the destination never received. */
static void test_delta_without_base(void **s)
{
	uint8_t *v1 = text_pages(1, 7, 1), *v2 = text_pages(1, 7, 1), d[DELTA_MAX_SIZE];
	struct delta_cache *c;
	char *err;
	int len;

	v2[100] ^= 0xff;
	assert_int_equal(delta_cache_new(1 << 20, NULL, &c), 0);
	assert_int_equal(delta_encode(c, 7, v1, d, sizeof(d)), 0);
	len = delta_encode(c, 7, v2, d, sizeof(d));
	assert_true(len > 0);
	assert_int_equal(fake_source(FEAT_DELTA, MSG_DELTA, 7, 1, 0, d, len, &err), 125);
	assert_non_null(strstr(err, "delta for page 7"));
	assert_non_null(strstr(err, "does not have"));
	free(err);
	delta_cache_free(c);
	free(v1);
	free(v2);
}

/* A compressed run on a session that did not negotiate compression. */
static void test_not_negotiated(void **s)
{
	uint8_t *pages = text_pages(4, 0, 1), *z = malloc(4 * 4096);
	struct codec_enc *e;
	char *err;
	long len;

	assert_int_equal(codec_enc_new(NULL, &e), 0);
	len = codec_encode(e, CODEC_LZ4, pages, 4, z, 4 * 4096);
	assert_true(len > 0);
	assert_int_equal(fake_source(0, MSG_PAGES_Z, 0, 4, 1, z, len, &err), 125);
	assert_non_null(strstr(err, "PAGES_Z on a session that did not negotiate it"));
	free(err);
	/* and a codec number nobody knows */
	assert_int_equal(fake_source(FEAT_COMPRESS, MSG_PAGES_Z, 0, 4, 9, z, len, &err), 125);
	assert_non_null(strstr(err, "names codec 9"));
	free(err);
	codec_enc_free(e);
	free(pages);
	free(z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pre_lz4),
		cmocka_unit_test(test_pre_auto),
		cmocka_unit_test(test_post_lz4),
		cmocka_unit_test(test_pre_delta),
		cmocka_unit_test(test_pre_delta_and_zstd),
		cmocka_unit_test(test_hybrid_delta),
		cmocka_unit_test(test_stop_copy_delta),
		cmocka_unit_test(test_corrupt_lz4_hash),
		cmocka_unit_test(test_corrupt_lz4_body),
		cmocka_unit_test(test_corrupt_zstd_body),
		cmocka_unit_test(test_delta_without_base),
		cmocka_unit_test(test_not_negotiated),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
