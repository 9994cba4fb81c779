/*
 * test-kvm.c - the KVM vCPU backend.
 *
 * Everywhere: the mapping between struct cpu_state and KVM's registers
 * (round trip bit for bit, refusals by name), the x87 tag word, the CPUID
 * model check against a host's supported table, --dirty-track kvm-log
 * refused for a guest under Unicorn, and - on a host without /dev/kvm - a
 * clear error for --vcpu kvm and Unicorn for --vcpu auto.
 *
 * Where /dev/kvm works (the test VM of tests/vm/, or real hardware): every
 * guest runs to its expected output under KVM, snapshots move between the
 * backends both ways with regtorture bit-exact, and the pause storm loses
 * nothing.  Those skip with the reason elsewhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "t-util.h"
#include "umig/guest-abi.h"
#include "umig/loader.h"
#include "umig/log.h"
#include "umig/vcpu-kvm.h"

static bool t_have_kvm(void)
{
	int fd;

	if (vcpu_kvm_open(&fd) < 0)
		return false;
	close(fd);
	return true;
}

static uint64_t t_next(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* The entry state of vCPU 2 with every free register scrambled. */
static void t_state(struct cpu_state *s, uint64_t seed)
{
	struct elf_image img = { .entry = 0x100000, .image_end = 0x200000, .nsegs = 1 };

	loader_entry_state(&img, 2, s);
	for (int i = 0; i < GPR_COUNT; i++)
		s->gpr[i] = t_next(&seed);
	s->rip = 0x100abc;
	s->rflags = 0x40cd7;
	s->fs_base = 0x7f0000001000ull;
	s->gs_base = 0xffff800000002000ull;
	s->idtr.base = 0x5000;
	s->idtr.limit = 0xfff;
	s->cr2 = t_next(&seed);
	s->fcw = 0x0f7f;
	s->fsw = 0x6a20;	/* TOP = 5 */
	s->fop = 0x123;
	s->fip = t_next(&seed);
	s->fdp = t_next(&seed);
	for (int i = 0; i < 8; i++) {
		uint64_t mant = t_next(&seed) | 1ull << 63;

		memcpy(s->st[i], &mant, 8);
		s->st[i][8] = 0xff;
		s->st[i][9] = 0x3f;
	}
	/* abridged 0xb5 (registers 0 2 4 5 7 in use): the full word it expands to */
	s->ftw = cpu_ftw_expand(0xb5, s->fsw, s->st);
	s->mxcsr = 0xffa0;
	for (int i = 0; i < 16; i++)
		for (int j = 0; j < 16; j++)
			s->xmm[i][j] = (uint8_t)t_next(&seed);
}

static void test_state_round_trips_through_kvm_registers(void **state)
{
	struct cpu_state in, out;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_fpu fpu;

	(void)state;
	t_state(&in, 42);
	memset(&sregs, 0, sizeof(sregs));
	sregs.apic_base = 0xfee00900;
	assert_int_equal(kvm_state_to_regs(&in, &regs, &sregs, &fpu), 0);
	/* what hardware needs for 64-bit code */
	assert_int_equal(sregs.cs.selector, UMIG_SEL_CODE64);
	assert_int_equal(sregs.cs.l, 1);
	assert_int_equal(sregs.cs.db, 0);
	assert_int_equal(sregs.cs.type, 0xb);
	assert_int_equal(sregs.cs.s, 1);
	assert_int_equal(sregs.cs.present, 1);
	assert_true(sregs.cs.limit == 0xffffffff);
	assert_int_equal(sregs.ss.type, 0x3);
	assert_int_equal(sregs.ss.db, 1);
	assert_true(sregs.fs.base == in.fs_base && sregs.gs.base == in.gs_base);
	assert_true(sregs.ds.base == 0);
	assert_int_equal(sregs.tr.selector, UMIG_SEL_TSS);
	assert_int_equal(sregs.tr.type, 0xb);
	assert_int_equal(sregs.tr.s, 0);
	assert_true(sregs.tr.base == UMIG_TSS_GPA && sregs.tr.limit == UMIG_TSS_LIMIT);
	assert_int_equal(sregs.ldt.unusable, 1);
	assert_true(sregs.cr0 == UMIG_ENTRY_CR0 && sregs.cr4 == UMIG_ENTRY_CR4);
	assert_true(sregs.efer == UMIG_ENTRY_EFER && sregs.cr3 == UMIG_PML4_GPA);
	assert_true(sregs.apic_base == 0xfee00900);	/* left as KVM had it */
	assert_true(regs.rsi == in.gpr[GPR_RSI] && regs.rsp == in.gpr[GPR_RSP]);
	assert_true(regs.r15 == in.gpr[GPR_R15] && regs.rip == in.rip);
	assert_int_equal(fpu.ftwx, 0xb5);
	assert_memory_equal(fpu.fpr[3], in.st[3], 10);
	assert_memory_equal(fpu.xmm, in.xmm, sizeof(in.xmm));

	assert_int_equal(kvm_regs_to_state(&regs, &sregs, &fpu, &out), 0);
	assert_memory_equal(&out, &in, sizeof(in));
}

/* KVM_{GET,SET}_XSAVE carry the same x87/SSE fields as KVM_{GET,SET}_FPU. */
static void test_xsave_layout(void **state)
{
	struct cpu_state in;
	struct kvm_regs regs;
	struct kvm_sregs sregs = { 0 };
	struct kvm_fpu fpu, back;
	struct kvm_xsave x;
	const uint8_t *b = (const uint8_t *)x.region;

	(void)state;
	t_state(&in, 46);
	assert_int_equal(kvm_state_to_regs(&in, &regs, &sregs, &fpu), 0);
	kvm_fpu_to_xsave(&fpu, &x);
	assert_int_equal(b[0] | b[1] << 8, 0x0f7f);		/* FCW */
	assert_int_equal(b[2] | b[3] << 8, 0x6a20);		/* FSW */
	assert_int_equal(b[4], fpu.ftwx);
	assert_memory_equal(b + 24, &in.mxcsr, 4);
	assert_memory_equal(b + 32 + 16 * 7, in.st[7], 10);
	assert_memory_equal(b + 160 + 16 * 15, in.xmm[15], 16);
	assert_int_equal(b[512], 3);				/* XSTATE_BV: x87, SSE */
	kvm_xsave_to_fpu(&x, &back);
	assert_memory_equal(&back, &fpu, sizeof(fpu));
}

static void test_null_data_selectors_are_representable(void **state)
{
	struct cpu_state in, out;
	struct kvm_regs regs;
	struct kvm_sregs sregs = { 0 };
	struct kvm_fpu fpu;

	(void)state;
	t_state(&in, 43);
	in.seg[SEG_DS] = in.seg[SEG_ES] = in.seg[SEG_FS] = in.seg[SEG_SS] = 0;
	assert_int_equal(kvm_state_to_regs(&in, &regs, &sregs, &fpu), 0);
	assert_int_equal(sregs.ds.unusable, 1);
	assert_true(sregs.fs.base == in.fs_base);	/* the base survives a null FS */
	assert_int_equal(kvm_regs_to_state(&regs, &sregs, &fpu, &out), 0);
	assert_memory_equal(&out, &in, sizeof(in));
}

static void t_to_kvm_fails(const struct cpu_state *s, const char *text)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs = { 0 };
	struct kvm_fpu fpu;

	assert_int_equal(kvm_state_to_regs(s, &regs, &sregs, &fpu), -EINVAL);
	if (!strstr(err_msg(-EINVAL), text))
		fail_msg("'%s' lacks '%s'", err_msg(-EINVAL), text);
}

static void test_refuses_what_kvm_cannot_be_given(void **state)
{
	struct cpu_state s;

	(void)state;
	t_state(&s, 44);
	s.seg[SEG_DS] = UMIG_SEL_TSS;
	t_to_kvm_fails(&s, "DS selector 0x18 is not one of umig's GDT descriptors");
	t_state(&s, 44);
	s.seg[SEG_CS] = UMIG_SEL_DATA;
	t_to_kvm_fails(&s, "CS selector 0x10");
	t_state(&s, 44);
	s.seg[SEG_CS] = 0;
	t_to_kvm_fails(&s, "CS selector 0x0");
	t_state(&s, 44);
	s.seg[SEG_GS] = UMIG_SEL_DATA | 3;	/* RPL 3 */
	t_to_kvm_fails(&s, "GS selector 0x13");
	/* what umig before the paging entry state saved: long mode, paging off */
	t_state(&s, 44);
	s.cr0 = 0x11;
	s.cr4 = 0;
	s.efer = 0x500;
	t_to_kvm_fails(&s, "long mode active with paging off");
}

static void test_refuses_descriptors_not_umigs(void **state)
{
	struct cpu_state in, out;
	struct kvm_regs regs;
	struct kvm_sregs sregs = { 0 };
	struct kvm_fpu fpu;

	(void)state;
	t_state(&in, 45);
	assert_int_equal(kvm_state_to_regs(&in, &regs, &sregs, &fpu), 0);
	sregs.cs.l = 0;			/* a 32-bit code segment */
	assert_int_equal(kvm_regs_to_state(&regs, &sregs, &fpu, &out), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "CS (selector 0x8"));
	sregs.cs.l = 1;
	sregs.ds.base = 0x1000;		/* a based data segment */
	assert_int_equal(kvm_regs_to_state(&regs, &sregs, &fpu, &out), -EINVAL);
	assert_non_null(strstr(err_msg(-EINVAL), "DS (selector 0x10"));
	sregs.ds.base = 0;
	sregs.es.dpl = 3;
	assert_int_equal(kvm_regs_to_state(&regs, &sregs, &fpu, &out), -EINVAL);
	sregs.es.dpl = 0;
	assert_int_equal(kvm_regs_to_state(&regs, &sregs, &fpu, &out), 0);
}

static void test_x87_tag_word(void **state)
{
	uint8_t st[8][10];
	uint64_t one = 1ull << 63;

	(void)state;
	memset(st, 0, sizeof(st));
	assert_int_equal(cpu_ftw_abridge(0xffff), 0);
	assert_int_equal(cpu_ftw_abridge(0x0000), 0xff);
	assert_int_equal(cpu_ftw_abridge(0xfffc), 0x01);	/* register 0 valid */
	assert_int_equal(cpu_ftw_abridge(0x7fff), 0x80);	/* register 7 special */
	assert_int_equal(cpu_ftw_expand(0, 0, st), 0xffff);
	/* TOP = 0: ST0 = register 0.  1.0 is valid, 0 is zero, a denormal special */
	memcpy(st[0], &one, 8);
	st[0][8] = 0xff;
	st[0][9] = 0x3f;
	memcpy(st[2], &one, 8);		/* exponent 0, integer bit set: special */
	assert_int_equal(cpu_ftw_expand(0x07, 0, st), 0xffe4);	/* 3..7 empty, 2 special, 1 zero, 0 valid */
	/* TOP = 6: register 6 is ST0, register 0 is ST2 */
	assert_int_equal(cpu_ftw_expand(0x41, 6 << 11, st), 0xcffe);	/* 6 valid, 0 special */
	/* infinity and NaN are special */
	memset(st[0], 0, 8);
	st[0][7] = 0x80;
	st[0][8] = 0xff;
	st[0][9] = 0x7f;
	assert_int_equal(cpu_ftw_expand(0x01, 0, st) & 3, 2);
	/* abridge(expand(x)) == x for every abridged word */
	for (unsigned x = 0; x < 256; x++)
		assert_int_equal(cpu_ftw_abridge(cpu_ftw_expand(x, 3 << 11, st)), x);
}

/* A supported table with every bit set, or with one bit taken away. */
static struct kvm_cpuid2 *t_supported(uint32_t fn, int reg, uint32_t clear)
{
	static const uint32_t fns[] = { 0, 1, 7, 0x80000000, 0x80000001, 0x80000008 };
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 8 * sizeof(c->entries[0]));

	c->nent = ARRAY_SIZE(fns);
	for (size_t i = 0; i < ARRAY_SIZE(fns); i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		e->function = fns[i];
		e->eax = e->ebx = e->ecx = e->edx = ~0u;
		if (fns[i] == fn && reg == 2)
			e->ecx &= ~clear;
		if (fns[i] == fn && reg == 3)
			e->edx &= ~clear;
	}
	return c;
}

static void test_cpuid_model_against_a_host(void **state)
{
	struct kvm_cpuid2 *sup, *out = NULL;
	size_t n;
	const struct cpuid_leaf *m = cpuid_model_leaves(&n);

	(void)state;
	sup = t_supported(0, 0, 0);
	assert_int_equal(vcpu_kvm_build_cpuid(sup, &out), 0);
	assert_int_equal(out->nent, n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(out->entries[i].function, m[i].fn);
		assert_int_equal(out->entries[i].ebx, m[i].ebx);
		assert_int_equal(out->entries[i].edx, m[i].edx);
	}
	free(out);
	free(sup);
	/* a host without SSE2 cannot run the model, and says which bit */
	sup = t_supported(1, 3, 1u << 26);
	assert_int_equal(vcpu_kvm_build_cpuid(sup, &out), -EOPNOTSUPP);
	assert_non_null(strstr(err_msg(-EOPNOTSUPP), "CPUID.1:EDX bit 26 is not supported"));
	free(sup);
	sup = t_supported(0x80000001, 3, 1u << 26);	/* no 1 GiB pages */
	assert_int_equal(vcpu_kvm_build_cpuid(sup, &out), -EOPNOTSUPP);
	assert_non_null(strstr(err_msg(-EOPNOTSUPP), "CPUID.80000001h:EDX bit 26"));
	free(sup);
	/* the hypervisor bit is KVM's to give, whatever the host reports */
	sup = t_supported(1, 2, 1u << 31);
	assert_int_equal(vcpu_kvm_build_cpuid(sup, &out), 0);
	free(out);
	free(sup);
}

/* --- the CLI on this host ---------------------------------------------------- */

static void test_vcpu_kvm_without_dev_kvm_fails_clearly(void **state)
{
	char *a1[] = { (char *)t_umig(), "run", (char *)t_guest("hello"), "--vcpu", "kvm", NULL };
	char *a2[] = { (char *)t_umig(), "run", (char *)t_guest("hello"), "--backend", "kvm", NULL };
	char *a3[] = { (char *)t_umig(), "run", (char *)t_guest("hello"), "--vcpu", "auto", NULL };
	char *a4[] = { (char *)t_umig(), "run", (char *)t_guest("hello"), "--vcpu", "qemu", NULL };
	struct t_result r;

	(void)state;
	t_skip_unless(access("/dev/kvm", F_OK) != 0, "this host has /dev/kvm\n");
	t_run(a1, 30, &r);
	assert_int_equal(r.status, 125);
	assert_non_null(strstr(r.err, "KVM unavailable: /dev/kvm: No such file or directory"));
	assert_non_null(strstr(r.err, "load kvm_intel or kvm_amd"));
	assert_non_null(strstr(r.err, "--vcpu unicorn"));
	assert_string_equal(r.out, "");
	t_result_free(&r);
	t_run(a2, 30, &r);
	assert_int_equal(r.status, 125);
	assert_non_null(strstr(r.err, "KVM unavailable"));
	t_result_free(&r);
	/* auto falls back to Unicorn */
	t_run(a3, 30, &r);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "hello from umig guest\n");
	t_result_free(&r);
	t_run(a4, 30, &r);
	assert_int_equal(r.status, 125);
	assert_non_null(strstr(r.err, "unknown vCPU backend 'qemu' (available: unicorn, kvm, auto)"));
	t_result_free(&r);
}

/*
 * --dirty-track kvm-log reads KVM's dirty log: refused for a guest under
 * Unicorn, before it starts (umig run) and on the control socket.
 */
static void test_kvm_log_refused_under_unicorn(void **state)
{
	char *dir = t_tmpdir(), sock[256];
	const char *why = "--dirty-track kvm-log reads KVM's dirty log, and this guest runs "
			  "under unicorn, not KVM: use --dirty-track wp (or auto), or run the "
			  "guest with --vcpu kvm";
	char *a1[] = { (char *)t_umig(), "run", (char *)t_guest("hello"), "--vcpu", "unicorn",
		       "--migrate-to", "127.0.0.1:1", "--mode", "pre", "--dirty-track", "kvm-log",
		       NULL };
	char *a2[] = { (char *)t_umig(), "run", (char *)t_guest("idle"), "--vcpu", "unicorn",
		       "--cmdline", "secs=30", "--control", sock, NULL };
	char *a3[] = { (char *)t_umig(), "migrate", "--control", sock, "--to", "127.0.0.1:1",
		       "--mode", "hybrid", "--dirty-track", "kvm-log", "--quiet", NULL };
	char *a4[] = { (char *)t_umig(), "ctl", sock, "query-status", NULL };
	struct t_result r;
	pid_t pid;

	(void)state;
	t_run(a1, 30, &r);
	assert_int_equal(r.status, 125);
	if (!strstr(r.err, why))
		fail_msg("'%s' lacks '%s'", r.err, why);
	assert_string_equal(r.out, "");		/* the guest never started */
	t_result_free(&r);
	snprintf(sock, sizeof(sock), "%s", t_path(dir, "c.sock"));
	pid = t_spawn(a2, NULL, NULL);
	assert_true(t_wait_for_path(sock, 10000));
	t_run(a3, 30, &r);
	assert_int_not_equal(r.status, 0);
	if (!strstr(r.err, why))
		fail_msg("'%s' lacks '%s'", r.err, why);
	t_result_free(&r);
	t_run(a4, 30, &r);			/* the guest runs on, untouched */
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "running"));
	t_result_free(&r);
	t_kill(pid);
	t_tmpdir_free(dir);
}

/* --- under KVM (tests/vm/, or hardware) --------------------------------------- */

/* cmdline may start with "cpus=N ": umig run --cpus N, the rest for the guest. */
static void t_run_guest(const char *backend, const char *guest, const char *cmdline,
			struct t_result *r)
{
	char cpus[8] = "1";
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest(guest), "--vcpu",
			 (char *)backend, "--cpus", cpus, "--cmdline", (char *)cmdline, NULL };

	if (!strncmp(cmdline, "cpus=", 5)) {
		snprintf(cpus, sizeof(cpus), "%.*s", (int)strcspn(cmdline + 5, " "), cmdline + 5);
		cmdline += 5 + strlen(cpus);
		argv[8] = (char *)cmdline + strspn(cmdline, " ");
	}

	t_run(argv, 120, r);
	if (r->status)
		fprintf(stderr, "%s under %s: status %d\nout: %s\nerr: %s\n", guest, backend,
			r->status, r->out, r->err);
}

static void test_every_guest_runs_under_kvm(void **state)
{
	struct t_result r;

	(void)state;
	t_skip_unless(t_have_kvm(), "no usable /dev/kvm (%s)\n", "run it in tests/vm");
	t_run_guest("kvm", "hello", "a=1", &r);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "hello from umig guest\ncmdline: a=1\n");
	t_result_free(&r);
	t_run_guest("kvm", "memverify", "wss=8 passes=3", &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "memverify: done passes=3 mismatches=0\n"));
	t_result_free(&r);
	t_run_guest("kvm", "dirty", "wss=8 pattern=random secs=1", &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "dirty: done pages="));
	t_result_free(&r);
	t_run_guest("kvm", "idle", "secs=1", &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "idle: done\n"));
	t_result_free(&r);
	t_run_guest("kvm", "spin", "loops=1000000", &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "spin: loops=1000000 insns=8000000"));
	t_result_free(&r);
	t_run_guest("kvm", "regtorture", "secs=1", &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "regtorture: OK\n"));
	t_result_free(&r);
	/* several vCPUs: the guests that use them, and one whose secondaries only wait */
	t_run_guest("kvm", "memverify", "cpus=2 wss=8 passes=3 threads=2", &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, "threads=2\n"));
	assert_non_null(strstr(r.out, "memverify: done passes=3 mismatches=0\n"));
	t_result_free(&r);
	t_run_guest("kvm", "dirty", "cpus=2 wss=8 pattern=random secs=1 threads=2", &r);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.out, " threads=2\n"));
	assert_non_null(strstr(r.out, "dirty: done pages="));
	t_result_free(&r);
	t_run_guest("kvm", "hello", "cpus=3 b=2", &r);
	assert_int_equal(r.status, 0);
	assert_string_equal(r.out, "hello from umig guest\ncmdline: b=2\n");
	t_result_free(&r);
}

/*
 * regtorture snapshotted mid-spin under one backend, restored under the
 * other.  The spin is calibrated where it starts; each spin is a port
 * write, an exit on both backends, so the rest of it takes a similar time
 * on the other (in the test VM, Unicorn is itself emulated, and an exit to
 * nested KVM costs tens of microseconds).
 */
static void t_cross(const char *from, const char *to, const char *cmdline, const char *after)
{
	char *dir = t_tmpdir();
	const char *snap = t_path(dir, "x.snap");
	char *a1[] = { (char *)t_umig(), "run", (char *)t_guest("regtorture"), "--vcpu",
		       (char *)from, "--cmdline", (char *)cmdline, "--snapshot", (char *)snap,
		       "--snapshot-after", (char *)after, NULL };
	char *a2[] = { (char *)t_umig(), "restore", (char *)snap, "--vcpu", (char *)to, NULL };
	struct t_result r;

	t_run(a1, 60, &r);
	if (r.status)
		fprintf(stderr, "run under %s: %d\n%s\n%s\n", from, r.status, r.out, r.err);
	assert_int_equal(r.status, 0);
	assert_null(strstr(r.out, "regtorture: OK"));
	t_result_free(&r);
	t_run(a2, 60, &r);
	if (r.status)
		fprintf(stderr, "restore under %s: %d\n%s\n%s\n", to, r.status, r.out, r.err);
	assert_int_equal(r.status, 0);
	assert_null(strstr(r.out, "MISMATCH"));
	assert_non_null(strstr(r.out, "regtorture: OK\n"));
	t_result_free(&r);
	t_tmpdir_free(dir);
}

static void test_snapshot_from_unicorn_restores_under_kvm(void **state)
{
	(void)state;
	t_skip_unless(t_have_kvm(), "no usable /dev/kvm (%s)\n", "run it in tests/vm");
	t_cross("unicorn", "kvm", "secs=30 seed=11 moved_secs=1", "0.7");
}

static void test_snapshot_from_kvm_restores_under_unicorn(void **state)
{
	(void)state;
	t_skip_unless(t_have_kvm(), "no usable /dev/kvm (%s)\n", "run it in tests/vm");
	t_cross("kvm", "unicorn", "secs=30 seed=12 moved_secs=1", "0.7");
}

static void test_snapshot_from_kvm_restores_under_kvm(void **state)
{
	(void)state;
	t_skip_unless(t_have_kvm(), "no usable /dev/kvm (%s)\n", "run it in tests/vm");
	t_cross("kvm", "kvm", "secs=30 seed=13 moved_secs=1", "1");
}

/* A post-copy migration mid-spin from an emulated to a hardware-virtualised host. */
static void test_migration_from_unicorn_to_kvm(void **state)
{
	char *dir;
	const char *dout, *derr;
	char listen[32];
	struct t_result r;
	int port = 20000 + (getpid() * 13 + time(NULL)) % 20000, dst;
	char *o;

	(void)state;
	t_skip_unless(t_have_kvm(), "no usable /dev/kvm (%s)\n", "run it in tests/vm");
	dir = t_tmpdir();
	dout = t_path(dir, "dst.out");
	derr = t_path(dir, "dst.err");
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	char *da[] = { (char *)t_umig(), "incoming", "--listen", listen, "--vcpu", "kvm",
		       "--quiet", NULL };
	pid_t dpid = t_spawn(da, dout, derr);

	usleep(500000);
	char *sa[] = { (char *)t_umig(), "run", (char *)t_guest("regtorture"), "--vcpu", "unicorn",
		       "--cmdline", "secs=30 seed=14 moved_secs=1", "--migrate-to", listen, "--migrate-after",
		       "1", "--mode", "post", "--quiet", NULL };
	t_run(sa, 60, &r);
	dst = t_wait(dpid, 60);
	o = t_read_file(dout);
	if (r.status || dst) {
		char *e = t_read_file(derr);

		fprintf(stderr, "source %d: %s\ndestination %d: %s\n", r.status, r.err, dst, e);
		free(e);
	}
	assert_int_equal(r.status, 0);
	assert_null(strstr(r.out, "regtorture: OK"));
	assert_int_equal(dst, 0);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_non_null(strstr(o, "regtorture: OK\n"));
	free(o);
	t_result_free(&r);
	t_tmpdir_free(dir);
}

static void test_pause_storm_under_kvm(void **state)
{
	char *dir, sock[256], out[256];
	char *argv[] = { (char *)t_umig(), "run", (char *)t_guest("memverify"), "--vcpu", "kvm",
			 "--cpus", "2", "--mem", "128M", "--cmdline", "wss=32 passes=20 threads=2",
			 "--control", sock, NULL };
	pid_t pid;
	int status;
	char *o;

	(void)state;
	t_skip_unless(t_have_kvm(), "no usable /dev/kvm (%s)\n", "run it in tests/vm");
	dir = t_tmpdir();
	snprintf(sock, sizeof(sock), "%s", t_path(dir, "c.sock"));
	snprintf(out, sizeof(out), "%s", t_path(dir, "out"));
	pid = t_spawn(argv, out, NULL);
	assert_true(t_wait_for_path(sock, 10000));
	for (int i = 0; i < 60; i++) {
		char cmd[1400];

		snprintf(cmd, sizeof(cmd), "%s ctl %s stop >/dev/null 2>&1 && %s ctl %s cont "
			 ">/dev/null 2>&1", t_umig(), sock, t_umig(), sock);
		if (system(cmd))
			break;	/* the guest finished */
	}
	status = t_wait(pid, 120);
	o = t_read_file(out);
	assert_non_null(o);
	assert_null(strstr(o, "MISMATCH"));
	assert_int_equal(status, 0);
	free(o);
	t_tmpdir_free(dir);
}

/* argv[1], if given, selects tests by name (a cmocka glob), for tests/vm/suites/kvm. */
int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_round_trips_through_kvm_registers),
		cmocka_unit_test(test_xsave_layout),
		cmocka_unit_test(test_null_data_selectors_are_representable),
		cmocka_unit_test(test_refuses_what_kvm_cannot_be_given),
		cmocka_unit_test(test_refuses_descriptors_not_umigs),
		cmocka_unit_test(test_x87_tag_word),
		cmocka_unit_test(test_cpuid_model_against_a_host),
		cmocka_unit_test(test_vcpu_kvm_without_dev_kvm_fails_clearly),
		cmocka_unit_test(test_kvm_log_refused_under_unicorn),
		cmocka_unit_test(test_every_guest_runs_under_kvm),
		cmocka_unit_test(test_snapshot_from_unicorn_restores_under_kvm),
		cmocka_unit_test(test_snapshot_from_kvm_restores_under_unicorn),
		cmocka_unit_test(test_snapshot_from_kvm_restores_under_kvm),
		cmocka_unit_test(test_migration_from_unicorn_to_kvm),
		cmocka_unit_test(test_pause_storm_under_kvm),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
