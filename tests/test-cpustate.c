/*
 * test-cpustate.c - the CPU state record: its exact wire layout, a
 * lossless round trip, a decoder that refuses every malformed input
 * without reading past it, and the Unicorn backend carrying the fields
 * through set/get.
 *
 * The layout is pinned byte for byte because snapshots and migration
 * streams written by one umig are read by another (cpustate.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "t-util.h"
#include "umig/cpustate.h"
#include "umig/util.h"
#include "umig/vm.h"

#define T_HDR_LEN   10		/* tag u32, version u16, body length u32 */
#define T_FULL_LEN  (T_HDR_LEN + CPU_STATE_BODY_LEN)

/* splitmix64: a deterministic stream of well-mixed values. */
static uint64_t t_next(uint64_t *seed)
{
	uint64_t x = (*seed += 0x9e3779b97f4a7c15ull);

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Every field a different value; padding zero, as decode leaves it. */
static void t_fill(struct cpu_state *s, uint64_t seed)
{
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < GPR_COUNT; i++)
		s->gpr[i] = t_next(&seed);
	s->rip = t_next(&seed);
	s->rflags = t_next(&seed);
	for (int i = 0; i < SEG_COUNT; i++)
		s->seg[i] = t_next(&seed);
	s->fs_base = t_next(&seed);
	s->gs_base = t_next(&seed);
	s->gdtr.base = t_next(&seed);
	s->gdtr.limit = t_next(&seed);
	s->idtr.base = t_next(&seed);
	s->idtr.limit = t_next(&seed);
	s->cr0 = t_next(&seed);
	s->cr2 = t_next(&seed);
	s->cr3 = t_next(&seed);
	s->cr4 = t_next(&seed);
	s->efer = t_next(&seed);
	s->fcw = t_next(&seed);
	s->fsw = t_next(&seed);
	s->ftw = t_next(&seed);
	s->fop = t_next(&seed);
	s->fip = t_next(&seed);
	s->fdp = t_next(&seed);
	for (int i = 0; i < 8; i++)
		for (int j = 0; j < 10; j++)
			s->st[i][j] = t_next(&seed);
	s->mxcsr = t_next(&seed);
	for (int i = 0; i < 16; i++)
		for (int j = 0; j < 16; j++)
			s->xmm[i][j] = t_next(&seed);
}

static void t_encode(const struct cpu_state *s, struct wbuf *w)
{
	wbuf_init(w);
	cpu_state_encode(s, w);
	assert_int_equal(w->err, 0);
	assert_int_equal(w->len, T_FULL_LEN);
}

static uint64_t t_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Decoding buf must fail with code and leave the destination alone. */
static void t_decode_fails(const void *buf, size_t len, int code)
{
	struct cpu_state s, before;
	struct rbuf r;

	t_fill(&before, 99);
	s = before;
	rbuf_init(&r, buf, len);
	assert_int_equal(cpu_state_decode(&s, &r), code);
	assert_memory_equal(&s, &before, sizeof(s));
}

static void test_body_len_is_600(void **state)
{
	(void)state;
	/* docs/protocol.md's field list adds up to this; a change is a new version */
	assert_int_equal(CPU_STATE_BODY_LEN, 600);
	assert_int_equal(CPU_STATE_TAG, 0x31555043u);
	assert_int_equal(CPU_STATE_VERSION, 1);
}

static void test_encode_length_and_header(void **state)
{
	struct cpu_state s;
	struct wbuf w;

	(void)state;
	t_fill(&s, 1);
	t_encode(&s, &w);
	assert_memory_equal(w.data, "CPU1", 4);
	assert_true(t_le(w.data + 4, 2) == CPU_STATE_VERSION);
	assert_true(t_le(w.data + 6, 4) == CPU_STATE_BODY_LEN);
	wbuf_free(&w);
}

/* Field order is the format: spot-check where each group lands. */
static void test_encode_field_offsets(void **state)
{
	const unsigned b = T_HDR_LEN;
	struct cpu_state s;
	struct wbuf w;
	const uint8_t *d;

	(void)state;
	t_fill(&s, 2);
	t_encode(&s, &w);
	d = w.data;
	for (int i = 0; i < GPR_COUNT; i++)
		assert_true(t_le(d + b + 8 * i, 8) == s.gpr[i]);
	assert_true(t_le(d + b + 128, 8) == s.rip);
	assert_true(t_le(d + b + 136, 8) == s.rflags);
	for (int i = 0; i < SEG_COUNT; i++)
		assert_true(t_le(d + b + 144 + 2 * i, 2) == s.seg[i]);
	assert_true(t_le(d + b + 156, 8) == s.fs_base);
	assert_true(t_le(d + b + 164, 8) == s.gs_base);
	assert_true(t_le(d + b + 172, 8) == s.gdtr.base);
	assert_true(t_le(d + b + 180, 4) == s.gdtr.limit);
	assert_true(t_le(d + b + 184, 8) == s.idtr.base);
	assert_true(t_le(d + b + 192, 4) == s.idtr.limit);
	assert_true(t_le(d + b + 196, 8) == s.cr0);
	assert_true(t_le(d + b + 204, 8) == s.cr2);
	assert_true(t_le(d + b + 212, 8) == s.cr3);
	assert_true(t_le(d + b + 220, 8) == s.cr4);
	assert_true(t_le(d + b + 228, 8) == s.efer);
	assert_true(t_le(d + b + 236, 2) == s.fcw);
	assert_true(t_le(d + b + 238, 2) == s.fsw);
	assert_true(t_le(d + b + 240, 2) == s.ftw);
	assert_true(t_le(d + b + 242, 2) == s.fop);
	assert_true(t_le(d + b + 244, 8) == s.fip);
	assert_true(t_le(d + b + 252, 8) == s.fdp);
	assert_memory_equal(d + b + 260, s.st, 80);
	assert_true(t_le(d + b + 340, 4) == s.mxcsr);
	assert_memory_equal(d + b + 344, s.xmm, 256);
	wbuf_free(&w);
}

static void test_round_trip(void **state)
{
	struct cpu_state in, out;
	struct wbuf w;
	struct rbuf r;

	(void)state;
	t_fill(&in, 3);
	t_encode(&in, &w);
	memset(&out, 0xee, sizeof(out));
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(cpu_state_decode(&out, &r), 0);
	assert_memory_equal(&in, &out, sizeof(in));
	assert_int_equal(rbuf_left(&r), 0);
	wbuf_free(&w);
}

/* Decode reads its own record and no further: the next record is intact. */
static void test_decode_stops_at_its_end(void **state)
{
	struct cpu_state a, b, out;
	struct wbuf w;
	struct rbuf r;

	(void)state;
	t_fill(&a, 4);
	t_fill(&b, 5);
	wbuf_init(&w);
	cpu_state_encode(&a, &w);
	cpu_state_encode(&b, &w);
	wbuf_put_u8(&w, 0x77);
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(cpu_state_decode(&out, &r), 0);
	assert_memory_equal(&out, &a, sizeof(out));
	assert_int_equal(rbuf_left(&r), T_FULL_LEN + 1);
	assert_int_equal(cpu_state_decode(&out, &r), 0);
	assert_memory_equal(&out, &b, sizeof(out));
	assert_int_equal(rbuf_get_u8(&r), 0x77);
	wbuf_free(&w);
}

static void test_rejects_every_truncation(void **state)
{
	struct cpu_state s;
	struct wbuf w;
	uint8_t *copy;

	(void)state;
	t_fill(&s, 6);
	t_encode(&s, &w);
	for (size_t len = 0; len < w.len; len++) {
		/* an exact-size heap copy, so ASan sees any read past len */
		copy = malloc(len ? len : 1);
		assert_non_null(copy);
		memcpy(copy, w.data, len);
		err_clear();
		t_decode_fails(copy, len, -EBADMSG);
		assert_non_null(strstr(err_msg(-EBADMSG), "truncated"));
		free(copy);
	}
	wbuf_free(&w);
}

static void test_rejects_bad_tag(void **state)
{
	struct cpu_state s;
	struct wbuf w;

	(void)state;
	t_fill(&s, 7);
	t_encode(&s, &w);
	w.data[3] = '2';	/* "CPU2" */
	err_clear();
	t_decode_fails(w.data, w.len, -EBADMSG);
	assert_non_null(strstr(err_msg(-EBADMSG), "bad tag"));
	wbuf_free(&w);
}

static void test_rejects_other_versions(void **state)
{
	struct cpu_state s;
	struct wbuf w;

	(void)state;
	t_fill(&s, 8);
	t_encode(&s, &w);
	w.data[4] = 2;
	err_clear();
	t_decode_fails(w.data, w.len, -EPROTONOSUPPORT);
	assert_non_null(strstr(err_msg(-EPROTONOSUPPORT), "version 2 not supported"));
	w.data[4] = 0;
	t_decode_fails(w.data, w.len, -EPROTONOSUPPORT);
	w.data[4] = 1;
	w.data[5] = 1;		/* 257 */
	t_decode_fails(w.data, w.len, -EPROTONOSUPPORT);
	wbuf_free(&w);
}

static void test_rejects_wrong_body_length(void **state)
{
	static const uint32_t lens[] = {
		0, CPU_STATE_BODY_LEN - 1, CPU_STATE_BODY_LEN + 1, 0xffffffffu,
	};
	struct cpu_state s;
	struct wbuf w;

	(void)state;
	t_fill(&s, 9);
	t_encode(&s, &w);
	/* one byte more than the body, so "+1" is not also a truncation */
	wbuf_put_u8(&w, 0);
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		wbuf_patch_u32(&w, 6, lens[i]);
		err_clear();
		t_decode_fails(w.data, w.len, -EBADMSG);
		assert_non_null(strstr(err_msg(-EBADMSG), "body is"));
	}
	wbuf_free(&w);
}

/*
 * Random input never crashes and never over-reads; every body that
 * decodes re-encodes to the same bytes (the encoding is lossless).
 * Half the buffers start with a valid header so the body path runs too.
 */
static void test_random_garbage(void **state)
{
	uint64_t seed = 0x5eed;
	unsigned ok = 0;
	struct wbuf w;

	(void)state;
	wbuf_init(&w);
	for (int it = 0; it < 1000; it++) {
		size_t len = t_next(&seed) % (T_FULL_LEN + 32);
		uint8_t *buf = malloc(len ? len : 1);
		struct cpu_state s;
		struct rbuf r;
		int ret;

		assert_non_null(buf);
		for (size_t i = 0; i < len; i++)
			buf[i] = t_next(&seed);
		if ((it & 1) && len >= T_HDR_LEN) {
			memcpy(buf, "CPU1\x01\x00", 6);
			buf[6] = CPU_STATE_BODY_LEN & 0xff;
			buf[7] = CPU_STATE_BODY_LEN >> 8;
			buf[8] = buf[9] = 0;
		}
		rbuf_init(&r, buf, len);
		ret = cpu_state_decode(&s, &r);
		assert_true(ret == 0 || ret == -EBADMSG || ret == -EPROTONOSUPPORT);
		if (ret == 0) {
			ok++;
			assert_int_equal(r.off, T_FULL_LEN);
			wbuf_reset(&w);
			cpu_state_encode(&s, &w);
			assert_memory_equal(w.data, buf, T_FULL_LEN);
		}
		free(buf);
	}
	/* the valid-header half with enough bytes did decode */
	assert_true(ok > 0);
	wbuf_free(&w);
}

/* --- the Unicorn backend --------------------------------------------------- */

static struct vm *t_vm(void)
{
	struct vm_config cfg = { .mem_size = 4ull << 20, .console_fd = -1 };
	struct vm *vm = NULL;
	int ret = vm_create(&vm, &cfg);

	if (ret < 0)
		fail_msg("vm_create: %s", err_msg(ret));
	return vm;
}

static void test_backend_set_get(void **state)
{
	struct cpu_state in, out;
	uint64_t seed = 11;
	struct vm *vm = t_vm();

	(void)state;
	assert_int_equal(vcpu_get_state(vm->vcpu, &in), 0);
	for (int i = 0; i < GPR_COUNT; i++)
		in.gpr[i] = t_next(&seed);
	in.rip = 0x100123;
	in.rflags = 0x202 | 0x1 | 0x4 | 0x40 | 0x80 | 0x800; /* IF CF PF ZF SF OF */
	in.fs_base = 0x7f0000001000ull;
	in.gs_base = 0x7f0000002000ull;
	for (int i = 0; i < 16; i++)
		for (int j = 0; j < 16; j++)
			in.xmm[i][j] = t_next(&seed);
	in.mxcsr = 0x1f80 | 0x6000;	/* masked, round toward zero */
	assert_int_equal(vcpu_set_state(vm->vcpu, &in), 0);

	memset(&out, 0, sizeof(out));
	assert_int_equal(vcpu_get_state(vm->vcpu, &out), 0);
	assert_memory_equal(out.gpr, in.gpr, sizeof(in.gpr));
	assert_true(out.rip == in.rip);
	assert_true(out.rflags == in.rflags);
	assert_true(out.fs_base == in.fs_base);
	assert_true(out.gs_base == in.gs_base);
	assert_memory_equal(out.xmm, in.xmm, sizeof(in.xmm));
	assert_int_equal(out.mxcsr, in.mxcsr);
	/* and nothing else moved */
	assert_memory_equal(&out, &in, sizeof(in));
	vm_destroy(vm);
}

/* get -> encode -> decode -> set on another vCPU -> get: the same state. */
static void test_backend_state_moves_between_vms(void **state)
{
	struct cpu_state a, b;
	uint64_t seed = 12;
	struct vm *src = t_vm(), *dst = t_vm();
	struct wbuf w;
	struct rbuf r;

	(void)state;
	assert_int_equal(vcpu_get_state(src->vcpu, &a), 0);
	for (int i = 0; i < GPR_COUNT; i++)
		a.gpr[i] = t_next(&seed);
	a.rip = 0x100456;
	a.rflags = 0x246;
	a.mxcsr = 0x1fa0;	/* masked, PE flag set */
	assert_int_equal(vcpu_set_state(src->vcpu, &a), 0);
	assert_int_equal(vcpu_get_state(src->vcpu, &a), 0);

	t_encode(&a, &w);
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(cpu_state_decode(&b, &r), 0);
	assert_int_equal(vcpu_set_state(dst->vcpu, &b), 0);
	memset(&b, 0, sizeof(b));
	assert_int_equal(vcpu_get_state(dst->vcpu, &b), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	wbuf_free(&w);
	vm_destroy(src);
	vm_destroy(dst);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_body_len_is_600),
		cmocka_unit_test(test_encode_length_and_header),
		cmocka_unit_test(test_encode_field_offsets),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_decode_stops_at_its_end),
		cmocka_unit_test(test_rejects_every_truncation),
		cmocka_unit_test(test_rejects_bad_tag),
		cmocka_unit_test(test_rejects_other_versions),
		cmocka_unit_test(test_rejects_wrong_body_length),
		cmocka_unit_test(test_random_garbage),
		cmocka_unit_test(test_backend_set_get),
		cmocka_unit_test(test_backend_state_moves_between_vms),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
