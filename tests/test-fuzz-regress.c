/*
 * test-fuzz-regress.c - every input that ever crashed a fuzz harness, and
 * every seed, run through the same harness code with the normal build.
 *
 * The harnesses (tests/fuzz/fuzz-*.c) are compiled in here under other
 * names, so `make check` replays tests/fuzz/regress/NAME/ and
 * tests/fuzz/corpus/NAME/ without clang or libFuzzer: a crash is a failed
 * test program.  Crashes that need a specific outcome pinned have their
 * own test below, named after the bug.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t-util.h"

#define LLVMFuzzerTestOneInput fuzz_state_one
#include "fuzz/fuzz-state.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_snapshot_one
#include "fuzz/fuzz-snapshot.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_control_one
#include "fuzz/fuzz-control.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_frames_one
#include "fuzz/fuzz-frames.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_handshake_one
#include "fuzz/fuzz-handshake.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_discard_one
#include "fuzz/fuzz-discard.c"
#undef LLVMFuzzerTestOneInput

static uint8_t *t_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc(n ? n : 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, n, f), (size_t)n);
	fclose(f);
	*len = n;
	return buf;
}

/* Feed every file in dir to fn; returns how many. */
static int t_replay(const char *dir, int (*fn)(const uint8_t *, size_t))
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[1024];
	int n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		uint8_t *data;
		size_t len;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		data = t_slurp(path, &len);
		fn(data, len);
		free(data);
		n++;
	}
	closedir(d);
	return n;
}

static void replay(const char *name, int (*fn)(const uint8_t *, size_t))
{
	char dir[256];
	int seeds, crashes;

	snprintf(dir, sizeof(dir), "tests/fuzz/corpus/%s", name);
	seeds = t_replay(dir, fn);
	snprintf(dir, sizeof(dir), "tests/fuzz/regress/%s", name);
	crashes = t_replay(dir, fn);
	print_message("%s: %d seeds, %d former crashes replayed\n", name, seeds, crashes);
	assert_true(seeds > 0);
}

static void test_replay_state(void **state)
{
	replay("state", fuzz_state_one);
}

static void test_replay_snapshot(void **state)
{
	replay("snapshot", fuzz_snapshot_one);
}

static void test_replay_control(void **state)
{
	replay("control", fuzz_control_one);
}

static void test_replay_frames(void **state)
{
	replay("frames", fuzz_frames_one);
}

static void test_replay_handshake(void **state)
{
	replay("handshake", fuzz_handshake_one);
}

static void test_replay_discard(void **state)
{
	replay("discard", fuzz_discard_one);
}

/*
 * Regression (fuzz-state): a state record whose segment selectors name a
 * descriptor outside guest RAM made Unicorn fault while loading it, and
 * longjmp onto a stale stack: umig died instead of refusing the record.
 */
static void test_selector_outside_ram_is_refused(void **state)
{
	size_t len;
	uint8_t *data = t_slurp("tests/fuzz/regress/state/selector-gdt-outside-ram", &len);
	struct rbuf r;
	int ret;

	rbuf_init(&r, data, len);
	ret = vm_load_state(fuzz_vm(), &r);
	assert_int_equal(ret, -EINVAL);
	/* refused, naming the selector (whichever check catches it first) */
	assert_non_null(strstr(err_msg(ret), "segment selector"));
	free(data);
}

/*
 * Regression (fuzz-control): an error whose desc quoted the client's bytes
 * as invalid UTF-8 (the parser's "near '...'" after a broken escape, an
 * unknown command name cut at 200 bytes inside a character) could not be
 * encoded, and the request got no reply at all.
 */
static void test_error_reply_with_invalid_utf8_is_sent(void **state)
{
	static const char *files[] = {
		"tests/fuzz/regress/control/parse-error-invalid-utf8",
		"tests/fuzz/regress/control/unknown-command-cut-in-utf8",
	};
	static const char *want[] = { "\"parse-error\"", "\"command-not-found\"" };
	struct control *c;

	assert_int_equal(control_create(&c, fuzz_vm()), 0);
	for (int i = 0; i < 2; i++) {
		size_t len;
		uint8_t *data = t_slurp(files[i], &len);
		char *reply;

		while (len && data[len - 1] == '\n')
			len--;
		reply = control_execute_line(c, (const char *)data, len);
		assert_non_null(reply);
		assert_non_null(strstr(reply, want[i]));
		free(reply);
		free(data);
	}
	control_stop(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_replay_state),
		cmocka_unit_test(test_replay_snapshot),
		cmocka_unit_test(test_replay_control),
		cmocka_unit_test(test_replay_frames),
		cmocka_unit_test(test_replay_handshake),
		cmocka_unit_test(test_replay_discard),
		cmocka_unit_test(test_selector_outside_ram_is_refused),
		cmocka_unit_test(test_error_reply_with_invalid_utf8_is_sent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
