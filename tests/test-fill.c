/*
 * test-fill.c - the guests' fill= and change= knobs: every fill still
 * verifies, bad values are refused, and memverify with text-like pages
 * and a partial change still catches a single corrupted byte (put into a
 * snapshot, whose checksum is then fixed up so restore accepts it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "t-util.h"

static void run_guest(const char *guest, const char *cmdline, int timeout, struct t_result *r)
{
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest(guest), "--cmdline",
			 (char *)cmdline, NULL };

	t_run(argv, timeout, r);
}

static void test_memverify_every_fill_verifies(void **state)
{
	static const char *const args[] = {
		"wss=4 passes=2 fill=zero", "wss=4 passes=2 fill=text",
		"wss=4 passes=2 fill=mixed change=10", "wss=4 passes=2 fill=random change=50",
		"wss=4 passes=2 fill=text change=1",
	};
	struct t_result r;

	(void)state;
	for (unsigned i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
		run_guest("memverify", args[i], 120, &r);
		assert_int_equal(r.status, 0);
		assert_non_null(strstr(r.out, "memverify: done passes=2 mismatches=0\n"));
		t_result_free(&r);
	}
	run_guest("memverify", "wss=4 passes=1", 60, &r);
	assert_non_null(strstr(r.out, "fill=random change=100%"));	/* the defaults */
	t_result_free(&r);
	run_guest("memverify", "wss=4 fill=lorem", 30, &r);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.out, "unknown fill 'lorem' (zero|random|text|mixed)"));
	t_result_free(&r);
}

static void test_dirty_fills(void **state)
{
	struct t_result r;

	(void)state;
	run_guest("dirty", "wss=4 secs=1 fill=text change=25", 60, &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "stores=128 fill=text\n"));
	assert_non_null(strstr(r.out, "dirty: done pages="));
	t_result_free(&r);
	run_guest("dirty", "wss=4 secs=1", 60, &r);
	assert_non_null(strstr(r.out, "stores=1 fill=zero\n"));	/* the defaults */
	t_result_free(&r);
	run_guest("dirty", "fill=bogus", 30, &r);
	assert_int_equal(r.status, 2);
	assert_non_null(strstr(r.out, "unknown fill 'bogus' (zero|random|text|mixed)"));
	t_result_free(&r);
}

/* The file at path, its length in *len; NULL if unreadable.  Caller frees. */
static unsigned char *t_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *b;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	b = malloc((size_t)n);
	if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
		free(b);
		b = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return b;
}

#ifdef __SANITIZE_ADDRESS__
#define FLIP_AFTER "3"
#else
#define FLIP_AFTER "0.5"
#endif

static void test_memverify_text_catches_one_byte(void **state)
{
	char *dir = t_tmpdir();
	const char *snap = t_path(dir, "mv.snap");
	unsigned char *b, *hit = NULL;
	struct t_result r1, r2;
	uint64_t sum;
	size_t len = 0, i;

	(void)state;
	char *a1[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--mem", "64M",
		       "--cmdline", "wss=8 passes=100000 fill=text change=10", "--snapshot",
		       (char *)snap, "--snapshot-after", FLIP_AFTER, NULL };
	t_run(a1, 60, &r1);
	assert_int_equal(r1.status, 0);
	b = t_slurp(snap, &len);
	assert_non_null(b);
	/* the last "the " in the file is in the working set, above the image */
	for (i = 0; i + 4 <= len - 8; i++) {
		if (!memcmp(b + i, "the ", 4))
			hit = b + i;
	}
	assert_non_null(hit);
	hit[1] = 'T';
	sum = XXH3_64bits(b, len - 8);
	memcpy(b + len - 8, &sum, 8);	/* little-endian host, as the format */
	{
		FILE *f = fopen(snap, "wb");

		assert_non_null(f);
		assert_int_equal(fwrite(b, 1, len, f), len);
		fclose(f);
	}
	char *a2[] = { (char *)t_umig(), "restore", (char *)snap, NULL };
	t_run(a2, 120, &r2);
	assert_int_equal(r2.status, 1);
	{
		/* and it is our byte: expected and found differ in 'h' ^ 'T' alone */
		const char *m = strstr(r2.out, "memverify: MISMATCH");
		unsigned long long want, got, x;

		assert_non_null(m);
		m = strstr(m, "expected=");
		assert_non_null(m);
		assert_int_equal(sscanf(m, "expected=0x%llx found=0x%llx", &want, &got), 2);
		x = want ^ got;
		while (x && !(x & 0xff))
			x >>= 8;
		assert_true(x == ('h' ^ 'T'));
	}
	free(b);
	t_result_free(&r1);
	t_result_free(&r2);
	t_tmpdir_free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_memverify_every_fill_verifies),
		cmocka_unit_test(test_dirty_fills),
		cmocka_unit_test(test_memverify_text_catches_one_byte),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
