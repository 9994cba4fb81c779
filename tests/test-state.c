/*
 * test-state.c - the machine state record (src/state.c) and the CPU model
 * (src/vcpu-cpuid.c): version 2 with N vCPUs round-trips, version 1 is
 * still written on request and read, a record from another CPU model or
 * with a bad vCPU count is refused with a clear message, and the CPUID
 * table answers every input the way docs/guest-abi.md says.
 */
#include <errno.h>
#include <string.h>

#include "t-util.h"
#include "umig/guest-abi.h"
#include "umig/log.h"
#include "umig/vm.h"

#define T_MODEL1_DIGEST 0x79eed44b77fdb5b0ull

static struct vm *t_vm(unsigned ncpus)
{
	struct vm_config cfg = { .mem_size = 4ull << 20, .console_fd = -1, .ncpus = ncpus };
	struct vm *vm = NULL;
	int ret = vm_create(&vm, &cfg);

	if (ret < 0)
		fail_msg("vm_create: %s", err_msg(ret));
	return vm;
}

/* Give vCPU i of vm distinct registers. */
static void t_set_cpu(struct vm *vm, unsigned i, uint64_t seed)
{
	struct cpu_state s;

	assert_int_equal(vcpu_get_state(vm->cpus[i].vcpu, &s), 0);
	for (int g = 0; g < GPR_COUNT; g++)
		s.gpr[g] = seed * 0x100 + g;
	s.rip = 0x100000 + seed;
	s.mxcsr = 0x1f80;
	for (int x = 0; x < 16; x++)
		memset(s.xmm[x], (int)(seed + x), 16);
	assert_int_equal(vcpu_set_state(vm->cpus[i].vcpu, &s), 0);
}

static void t_assert_same_cpus(struct vm *a, struct vm *b)
{
	struct cpu_state x, y;

	assert_int_equal(a->ncpus, b->ncpus);
	for (unsigned i = 0; i < a->ncpus; i++) {
		assert_int_equal(vcpu_get_state(a->cpus[i].vcpu, &x), 0);
		assert_int_equal(vcpu_get_state(b->cpus[i].vcpu, &y), 0);
		assert_memory_equal(&x, &y, sizeof(x));
	}
}

static void test_v2_round_trip_with_three_vcpus(void **state)
{
	struct vm *src = t_vm(3), *dst = t_vm(1);
	struct wbuf w;
	struct rbuf r;

	(void)state;
	for (unsigned i = 0; i < 3; i++)
		t_set_cpu(src, i, 7 + i);
	wbuf_init(&w);
	assert_int_equal(vm_save_state(src, &w), 0);
	/* header: tag, version 2, model id, digest, count */
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(rbuf_get_u32(&r), 0x54534d55);
	assert_int_equal(rbuf_get_u16(&r), 2);
	assert_int_equal(rbuf_get_u32(&r), UMIG_CPU_MODEL_ID);
	assert_true(rbuf_get_u64(&r) == cpuid_model_digest());
	assert_int_equal(rbuf_get_u16(&r), 3);
	/* the destination was made with one vCPU: loading gives it three */
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(vm_load_state(dst, &r), 0);
	t_assert_same_cpus(src, dst);
	wbuf_free(&w);
	vm_destroy(src);
	vm_destroy(dst);
}

static void test_v1_written_on_request_and_read(void **state)
{
	struct vm *src = t_vm(1), *dst = t_vm(1), *two = t_vm(2);
	struct wbuf w;
	struct rbuf r;

	(void)state;
	t_set_cpu(src, 0, 3);
	wbuf_init(&w);
	assert_int_equal(vm_save_state_v(src, &w, 1), 0);
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(rbuf_get_u32(&r), 0x54534d55);
	assert_int_equal(rbuf_get_u16(&r), 1);
	assert_int_equal(rbuf_get_u32(&r), CPU_STATE_TAG);	/* the CPU record follows at once */
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(vm_load_state(dst, &r), 0);
	t_assert_same_cpus(src, dst);
	wbuf_free(&w);

	/* version 1 holds one vCPU: a two-vCPU VM cannot be written as one */
	wbuf_init(&w);
	assert_int_equal(vm_save_state_v(two, &w, 1), -EOPNOTSUPP);
	assert_non_null(strstr(err_msg(-EOPNOTSUPP), "holds one vCPU; this VM has 2"));
	assert_int_equal(vm_save_state_v(two, &w, 0), -EINVAL);
	assert_int_equal(vm_save_state_v(two, &w, 3), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "this umig writes 1..2"));
	wbuf_free(&w);
	vm_destroy(src);
	vm_destroy(dst);
	vm_destroy(two);
}

/* Save a 1-vCPU VM as version 2, let edit() damage it, expect code + text. */
static void t_load_fails(void (*edit)(struct wbuf *w), int code, const char *text)
{
	struct vm *src = t_vm(1), *dst = t_vm(1);
	struct wbuf w;
	struct rbuf r;

	wbuf_init(&w);
	assert_int_equal(vm_save_state(src, &w), 0);
	edit(&w);
	rbuf_init(&r, w.data, w.len);
	assert_int_equal(vm_load_state(dst, &r), code);
	if (!strstr(err_msg(code), text))
		fail_msg("error '%s' lacks '%s'", err_msg(code), text);
	assert_int_equal(dst->ncpus, 1);	/* nothing changed */
	wbuf_free(&w);
	vm_destroy(src);
	vm_destroy(dst);
}

static void edit_digest(struct wbuf *w) { w->data[10] ^= 1; }
static void edit_model_id(struct wbuf *w) { w->data[6] = 2; }
static void edit_ncpus_0(struct wbuf *w) { w->data[18] = 0; w->data[19] = 0; }
static void edit_ncpus_9(struct wbuf *w) { w->data[18] = 9; }
static void edit_ncpus_2(struct wbuf *w) { w->data[18] = 2; }
static void edit_version_3(struct wbuf *w) { w->data[4] = 3; }
static void edit_truncate_header(struct wbuf *w) { w->len = 15; }

static void test_refuses_other_models_and_bad_counts(void **state)
{
	(void)state;
	t_load_fails(edit_digest, -EPROTO, "CPU model mismatch: the guest ran on CPU model 1");
	t_load_fails(edit_model_id, -EPROTO, "CPU model mismatch: the guest ran on CPU model 2");
	t_load_fails(edit_ncpus_0, -EBADMSG, "claims 0 vCPUs (umig runs 1..8)");
	t_load_fails(edit_ncpus_9, -EBADMSG, "claims 9 vCPUs");
	/* two announced, one present: the second CPU record is the devices */
	t_load_fails(edit_ncpus_2, -EBADMSG, "CPU state");
	t_load_fails(edit_version_3, -EPROTONOSUPPORT, "version 3 not supported (this umig reads 1..2)");
	t_load_fails(edit_truncate_header, -EBADMSG, "truncated in its header");
}

static void test_set_ncpus(void **state)
{
	struct vm *vm = t_vm(2);

	(void)state;
	assert_int_equal(vm->ncpus, 2);
	assert_true(vm->vcpu == vm->cpus[0].vcpu);
	assert_int_equal(vm->cpus[1].vcpu->index, 1);
	assert_int_equal(vm_set_ncpus(vm, 0), -EINVAL);
	assert_int_equal(vm_set_ncpus(vm, VM_MAX_CPUS + 1), -EINVAL);
	assert_int_equal(vm_set_ncpus(vm, 1), 0);
	assert_int_equal(vm->ncpus, 1);
	assert_int_equal(vm_set_ncpus(vm, VM_MAX_CPUS), 0);
	assert_int_equal(vm->cpus[VM_MAX_CPUS - 1].vcpu->index, VM_MAX_CPUS - 1);
	vm_destroy(vm);
}

/* --- the CPU model ---------------------------------------------------------- */

static void t_cpuid(uint32_t fn, uint32_t idx, unsigned cpu, uint32_t r[4])
{
	cpuid_model_query(fn, idx, cpu, r);
}

static void test_cpuid_vendor_brand_and_features(void **state)
{
	uint32_t r[4], brand[12];
	char vendor[13];

	(void)state;
	t_cpuid(0, 0, 0, r);
	assert_int_equal(r[0], 7);
	memcpy(vendor, &r[1], 4);
	memcpy(vendor + 4, &r[3], 4);	/* EBX, EDX, ECX */
	memcpy(vendor + 8, &r[2], 4);
	vendor[12] = 0;
	assert_string_equal(vendor, UMIG_CPUID_VENDOR);

	t_cpuid(1, 0, 0, r);
	assert_int_equal(r[0], 0x610);
	assert_int_equal(r[1], 8 << 8);
	assert_true(r[3] & (1u << 25) && r[3] & (1u << 26));	/* SSE SSE2 */
	assert_true(r[3] & (1u << 24));				/* FXSR */
	assert_false(r[3] & (1u << 4));				/* no TSC */
	assert_true(r[2] & (1u << 31));				/* hypervisor */
	t_cpuid(1, 0, 5, r);
	assert_int_equal(r[1] >> 24, 5);			/* APIC ID = vCPU */

	t_cpuid(0x80000001, 0, 0, r);
	assert_true(r[3] & (1u << 29) && r[3] & (1u << 26));	/* LM, 1 GiB pages */
	for (unsigned i = 0; i < 3; i++) {
		t_cpuid(0x80000002 + i, 0, 0, r);
		memcpy(brand + 4 * i, r, 16);
	}
	assert_string_equal((const char *)brand, "umig virtual x86-64 CPU (model 1)");
}

static void test_cpuid_out_of_range_is_the_highest_basic_leaf(void **state)
{
	static const uint32_t zero[4];
	uint32_t r[4], top[4];

	(void)state;
	t_cpuid(7, 0, 0, top);
	assert_memory_equal(top, zero, sizeof(top));
	t_cpuid(8, 0, 0, r);
	t_cpuid(7, 0, 0, top);
	assert_memory_equal(r, top, sizeof(r));
	t_cpuid(0x40000000, 0, 0, r);		/* no hypervisor leaves */
	assert_memory_equal(r, top, sizeof(r));
	t_cpuid(0x80000009, 0, 0, r);
	assert_memory_equal(r, top, sizeof(r));
	t_cpuid(0xc0000000, 0, 0, r);
	assert_memory_equal(r, top, sizeof(r));
	/* sub-leaves do not matter */
	t_cpuid(1, 0, 0, top);
	t_cpuid(1, 9, 0, r);
	assert_memory_equal(r, top, sizeof(r));
}

/*
 * The digest names the model in every snapshot and stream: a change to the
 * table must come with a new UMIG_CPU_MODEL_ID, and this value changes
 * with it.
 */
static void test_cpuid_digest_is_pinned(void **state)
{
	size_t n;
	const struct cpuid_leaf *l = cpuid_model_leaves(&n);

	(void)state;
	assert_int_equal(n, 17);
	assert_int_equal(l[0].fn, 0);
	print_message("model %u digest 0x%016llx\n", UMIG_CPU_MODEL_ID,
		      (unsigned long long)cpuid_model_digest());
	assert_true(cpuid_model_digest() == cpuid_model_digest());
	assert_true(cpuid_model_digest() == T_MODEL1_DIGEST);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v2_round_trip_with_three_vcpus),
		cmocka_unit_test(test_v1_written_on_request_and_read),
		cmocka_unit_test(test_refuses_other_models_and_bad_counts),
		cmocka_unit_test(test_set_ncpus),
		cmocka_unit_test(test_cpuid_vendor_brand_and_features),
		cmocka_unit_test(test_cpuid_out_of_range_is_the_highest_basic_leaf),
		cmocka_unit_test(test_cpuid_digest_is_pinned),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
