/*
 * regtorture.c - proves that a snapshot or a migration carries every
 * register of the CPU state record, bit for bit.
 *
 *   secs=N (3)    how long to spin holding the values, in guest seconds
 *   seed=N (1)    varies every value
 *   moved_secs=S (0)  when the guest finds itself in another umig process
 *                 (the host identity port, docs/guest-abi.md), spin at most
 *                 S guest seconds more: a migration or a restore then ends
 *                 the run soon, and a slow host cannot make it end before
 *                 it moved (0: spin secs, wherever it is)
 *
 * It loads known values into everything the record holds - the sixteen
 * general registers (RSP too), RFLAGS (DF and AC, which the spin loop
 * leaves alone), FS and GS base, CR2, IDTR, and with FXRSTOR the whole
 * x87 and SSE state: control, status with TOP = 5, tags, opcode and
 * pointers, ST0..ST7 and XMM0..XMM15, MXCSR - then spins on a counter in
 * memory without touching a register, so that umig can stop it, save it
 * and continue it elsewhere mid-way.  Every 32nd spin also writes AL to
 * port 0x80, which no device owns: an exit to umig on every backend, so
 * that stops land right after port I/O too, and so that spinning costs
 * about as much under KVM as under Unicorn (the count is calibrated on the
 * backend that starts, and may finish on the other).  Then it stores every register back
 * and compares: general registers, RFLAGS, bases, CR2 and IDTR against the
 * values loaded, the FXSAVE image against the one taken right after
 * loading (what this CPU accepted), and CR0, CR3, CR4, EFER, GDTR and the
 * selectors against the entry state of docs/guest-abi.md.  CPUID must
 * answer umig's CPU model.
 *
 * Output: "regtorture: spinning ..." before the spin, then
 * "regtorture: OK" and exit 0, or the first difference
 * "regtorture: MISMATCH what want=0x... got=0x..." and exit 1.
 */
#include "rt.h"

#define SEL_ES 0
#define SEL_CS 1
#define SEL_SS 2
#define SEL_DS 3
#define SEL_FS 4
#define SEL_GS 5

#define RFLAGS_DF 0x400ull
#define RFLAGS_AC 0x40000ull
/* after "sub $1, counter" reaches 0: ZF and PF; plus what we set and bit 1 */
#define RFLAGS_AFTER (0x2ull | 0x4ull | 0x40ull | RFLAGS_DF | RFLAGS_AC)

/* Shared with the assembly below, by name. */
u64 want_gpr[16], got_gpr[16];	/* cpu_state order: RAX RBX RCX RDX RSI RDI RBP RSP R8..R15 */
u64 want_rflags, got_rflags;
u64 want_fsbase, want_gsbase, got_fsbase, got_gsbase, got_efer;
u64 want_cr2, got_cr[5];	/* CR0, CR2, CR3, CR4, unused */
unsigned char want_idtr[10], got_idtr[10], got_gdtr[10];
unsigned short got_sel[6];
unsigned char want_fx[512] __attribute__((aligned(16)));
unsigned char ref_fx[512] __attribute__((aligned(16)));
unsigned char got_fx[512] __attribute__((aligned(16)));
u64 spins, saved_rsp, saved_callee[6];
u64 inner = 1;
u64 keep_rax, keep_rdx, moved_spins = ~0ull;
unsigned host_seen;

/*
 * One spin in EXIT_EVERY writes port 0x80 (and reads the host identity,
 * MOVED_CHECK).  An exit costs KVM about what
 * EXIT_EVERY spins cost Unicorn, on hardware (~2 us vs ~100 ns a spin) and
 * in the nested test VM alike, so a spin count calibrated on one backend
 * takes a similar time on the other.
 */
#define EXIT_EVERY "32"

/*
 * After the exit, read the host identity port (RAX and RDX hold test
 * values, so they are kept in memory around it; flags are free, the next
 * subq sets them): when it changed, at most moved_spins remain.  The same
 * code runs in the calibration loop, so it is part of a spin's cost.
 */
#define MOVED_CHECK(l)							\
	"	movq %rax, keep_rax(%rip)\n"				\
	"	movq %rdx, keep_rdx(%rip)\n"				\
	"	movl $0x524, %edx\n"					\
	"	inl %dx, %eax\n"					\
	"	cmpl host_seen(%rip), %eax\n"				\
	"	je " l "f\n"						\
	"	movl %eax, host_seen(%rip)\n"				\
	"	movq moved_spins(%rip), %rax\n"			\
	"	cmpq %rax, spins(%rip)\n"				\
	"	jbe " l "f\n"						\
	"	movq %rax, spins(%rip)\n"				\
	l ":	movq keep_rax(%rip), %rax\n"				\
	"	movq keep_rdx(%rip), %rdx\n"

void torture(void);
void spin_only(u64 n);

/*
 * Everything in memory is addressed RIP-relative, so that no register is
 * needed as a base while they all hold test values.
 */
__asm__(
	".text\n"
	".globl torture\n"
	"torture:\n"
	"	movq %rbx, saved_callee+0(%rip)\n"
	"	movq %rbp, saved_callee+8(%rip)\n"
	"	movq %r12, saved_callee+16(%rip)\n"
	"	movq %r13, saved_callee+24(%rip)\n"
	"	movq %r14, saved_callee+32(%rip)\n"
	"	movq %r15, saved_callee+40(%rip)\n"
	"	movq %rsp, saved_rsp(%rip)\n"
	"	fxrstor64 want_fx(%rip)\n"
	"	fxsave64 ref_fx(%rip)\n"
	"	movl $0xc0000100, %ecx\n"
	"	movl want_fsbase(%rip), %eax\n"
	"	movl want_fsbase+4(%rip), %edx\n"
	"	wrmsr\n"
	"	movl $0xc0000101, %ecx\n"
	"	movl want_gsbase(%rip), %eax\n"
	"	movl want_gsbase+4(%rip), %edx\n"
	"	wrmsr\n"
	"	movq want_cr2(%rip), %rax\n"
	"	movq %rax, %cr2\n"
	"	lidt want_idtr(%rip)\n"
	"	pushq want_rflags(%rip)\n"
	"	popfq\n"
	"	movq want_gpr+0(%rip), %rax\n"
	"	movq want_gpr+8(%rip), %rbx\n"
	"	movq want_gpr+16(%rip), %rcx\n"
	"	movq want_gpr+24(%rip), %rdx\n"
	"	movq want_gpr+32(%rip), %rsi\n"
	"	movq want_gpr+40(%rip), %rdi\n"
	"	movq want_gpr+48(%rip), %rbp\n"
	"	movq want_gpr+56(%rip), %rsp\n"
	"	movq want_gpr+64(%rip), %r8\n"
	"	movq want_gpr+72(%rip), %r9\n"
	"	movq want_gpr+80(%rip), %r10\n"
	"	movq want_gpr+88(%rip), %r11\n"
	"	movq want_gpr+96(%rip), %r12\n"
	"	movq want_gpr+104(%rip), %r13\n"
	"	movq want_gpr+112(%rip), %r14\n"
	"	movq want_gpr+120(%rip), %r15\n"
	"1:	subq $1, inner(%rip)\n"		/* only memory and flags change */
	"	jnz 3f\n"
	"	outb %al, $0x80\n"		/* an exit to umig: reads AL, changes nothing */
	MOVED_CHECK("5")
	"	movq $" EXIT_EVERY ", inner(%rip)\n"
	"3:	subq $1, spins(%rip)\n"
	"	jnz 1b\n"
	"	movq %rax, got_gpr+0(%rip)\n"
	"	movq %rbx, got_gpr+8(%rip)\n"
	"	movq %rcx, got_gpr+16(%rip)\n"
	"	movq %rdx, got_gpr+24(%rip)\n"
	"	movq %rsi, got_gpr+32(%rip)\n"
	"	movq %rdi, got_gpr+40(%rip)\n"
	"	movq %rbp, got_gpr+48(%rip)\n"
	"	movq %rsp, got_gpr+56(%rip)\n"
	"	movq %r8, got_gpr+64(%rip)\n"
	"	movq %r9, got_gpr+72(%rip)\n"
	"	movq %r10, got_gpr+80(%rip)\n"
	"	movq %r11, got_gpr+88(%rip)\n"
	"	movq %r12, got_gpr+96(%rip)\n"
	"	movq %r13, got_gpr+104(%rip)\n"
	"	movq %r14, got_gpr+112(%rip)\n"
	"	movq %r15, got_gpr+120(%rip)\n"
	"	movq saved_rsp(%rip), %rsp\n"
	"	pushfq\n"
	"	popq got_rflags(%rip)\n"
	"	fxsave64 got_fx(%rip)\n"
	"	movl $0xc0000100, %ecx\n"
	"	rdmsr\n"
	"	movl %eax, got_fsbase(%rip)\n"
	"	movl %edx, got_fsbase+4(%rip)\n"
	"	movl $0xc0000101, %ecx\n"
	"	rdmsr\n"
	"	movl %eax, got_gsbase(%rip)\n"
	"	movl %edx, got_gsbase+4(%rip)\n"
	"	movl $0xc0000080, %ecx\n"
	"	rdmsr\n"
	"	movl %eax, got_efer(%rip)\n"
	"	movl %edx, got_efer+4(%rip)\n"
	"	movq %cr0, %rax\n"
	"	movq %rax, got_cr+0(%rip)\n"
	"	movq %cr2, %rax\n"
	"	movq %rax, got_cr+8(%rip)\n"
	"	movq %cr3, %rax\n"
	"	movq %rax, got_cr+16(%rip)\n"
	"	movq %cr4, %rax\n"
	"	movq %rax, got_cr+24(%rip)\n"
	"	sidt got_idtr(%rip)\n"
	"	sgdt got_gdtr(%rip)\n"
	"	movw %es, got_sel+0(%rip)\n"
	"	movw %cs, got_sel+2(%rip)\n"
	"	movw %ss, got_sel+4(%rip)\n"
	"	movw %ds, got_sel+6(%rip)\n"
	"	movw %fs, got_sel+8(%rip)\n"
	"	movw %gs, got_sel+10(%rip)\n"
	"	pushq $2\n"			/* DF and AC off again for C code */
	"	popfq\n"
	"	movq saved_callee+0(%rip), %rbx\n"
	"	movq saved_callee+8(%rip), %rbp\n"
	"	movq saved_callee+16(%rip), %r12\n"
	"	movq saved_callee+24(%rip), %r13\n"
	"	movq saved_callee+32(%rip), %r14\n"
	"	movq saved_callee+40(%rip), %r15\n"
	"	ret\n"
	"\n"
	".globl spin_only\n"			/* the same loop, for calibration */
	"spin_only:\n"
	"	movq %rdi, spins(%rip)\n"
	"2:	subq $1, inner(%rip)\n"
	"	jnz 4f\n"
	"	outb %al, $0x80\n"
	MOVED_CHECK("6")
	"	movq $" EXIT_EVERY ", inner(%rip)\n"
	"4:	subq $1, spins(%rip)\n"
	"	jnz 2b\n"
	"	ret\n");

static int bad;

static void check(const char *what, u64 want, u64 got)
{
	if (bad || want == got)
		return;
	rt_printf("regtorture: MISMATCH %s want=0x%016llx got=0x%016llx\n", what, want, got);
	bad = 1;
}

static u64 get(const unsigned char *p, unsigned n)
{
	u64 v = 0;

	while (n--)
		v = v << 8 | p[n];
	return v;
}

static void check_bytes(const char *what, unsigned i, const unsigned char *want,
			const unsigned char *got, unsigned n)
{
	char name[32];
	unsigned k = 0;

	for (const char *p = what; *p && k < sizeof(name) - 4; p++)
		name[k++] = *p;
	if (i < 10)
		name[k++] = '0' + i;
	else {
		name[k++] = '1';
		name[k++] = '0' + i - 10;
	}
	name[k] = 0;
	/* in 8-byte pieces, high piece first, so the message shows the value */
	for (unsigned off = 0; off < n; off += 8) {
		unsigned len = n - off < 8 ? n - off : 8;

		check(name, get(want + off, len), get(got + off, len));
	}
}

static void check_cpuid(void)
{
	u32 a, b, c, d;
	char vendor[13];

	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
	memcpy(vendor, &b, 4);
	memcpy(vendor + 4, &d, 4);
	memcpy(vendor + 8, &c, 4);
	vendor[12] = 0;
	if (memcmp(vendor, UMIG_CPUID_VENDOR, 12)) {
		rt_printf("regtorture: MISMATCH cpuid vendor '%s', want '%s'\n", vendor,
			  UMIG_CPUID_VENDOR);
		bad = 1;
	}
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
	check("cpuid.1.eax", 0x610, a);
	check("cpuid.1.ebx", 8 << 8, b);	/* APIC ID 0: the boot vCPU */
}

static void fill(u64 seed)
{
	u64 st = seed * 0x9e3779b97f4a7c15ull | 1;

	for (int i = 0; i < 16; i++)
		want_gpr[i] = rt_rand(&st);
	want_gpr[7] = 0x00007ff0deadbee8ull;	/* RSP: canonical, unused while spinning */
	want_rflags = 0x2 | RFLAGS_DF | RFLAGS_AC | 0x1 | 0x80 | 0x800; /* + CF SF OF */
	want_fsbase = 0x00007f0000000000ull | (rt_rand(&st) & 0xfffffffff000ull);
	want_gsbase = 0xffff800000000000ull | (rt_rand(&st) & 0x7fffffffffffull);
	want_cr2 = rt_rand(&st);
	want_idtr[0] = 0xff;			/* limit 0x0fff */
	want_idtr[1] = 0x0f;
	for (int i = 2; i < 10; i++)		/* base 0x5000 (umig's reserved page) */
		want_idtr[i] = 0;
	want_idtr[3] = 0x50;

	memset(want_fx, 0, sizeof(want_fx));
	want_fx[0] = 0x7f;			/* FCW 0x0f7f: round to zero, 64-bit */
	want_fx[1] = 0x0f;
	want_fx[2] = 0x20;			/* FSW 0x6a20: PE, C1, TOP = 5, C3 */
	want_fx[3] = 0x6a;
	want_fx[4] = 0xb5;			/* abridged tags: registers 0 2 4 5 7 valid */
	want_fx[6] = 0x23;			/* FOP 0x123 */
	want_fx[7] = 0x01;
	for (int i = 8; i < 24; i++)		/* FIP, FDP */
		want_fx[i] = (unsigned char)rt_rand(&st);
	want_fx[24] = 0xa0;			/* MXCSR 0xffa0: FTZ, round to zero, PE */
	want_fx[25] = 0xff;
	for (int i = 0; i < 8; i++) {		/* ST0..ST7: normal values, sign varying */
		u64 mant = rt_rand(&st) | 1ull << 63;
		unsigned se = (0x3fff + (unsigned)(rt_rand(&st) % 64) - 32) | (i & 1) << 15;

		memcpy(want_fx + 32 + 16 * i, &mant, 8);
		want_fx[32 + 16 * i + 8] = se & 0xff;
		want_fx[32 + 16 * i + 9] = se >> 8;
	}
	for (int i = 0; i < 16 * 16; i++)	/* XMM0..XMM15 */
		want_fx[160 + i] = (unsigned char)rt_rand(&st);
}

static void compare(void)
{
	static const char *const gpr[16] = {
		"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
		"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
	};

	for (int i = 0; i < 16; i++)
		check(gpr[i], want_gpr[i], got_gpr[i]);
	check("rflags", RFLAGS_AFTER, got_rflags);
	check("fs_base", want_fsbase, got_fsbase);
	check("gs_base", want_gsbase, got_gsbase);
	check("cr2", want_cr2, got_cr[1]);
	check("idtr.limit", get(want_idtr, 2), get(got_idtr, 2));
	check("idtr.base", get(want_idtr + 2, 8), get(got_idtr + 2, 8));
	check("cr0", UMIG_ENTRY_CR0, got_cr[0]);
	check("cr3", UMIG_PML4_GPA, got_cr[2]);
	check("cr4", UMIG_ENTRY_CR4, got_cr[3]);
	check("efer", UMIG_ENTRY_EFER, got_efer);
	check("gdtr.limit", UMIG_GDT_LIMIT, get(got_gdtr, 2));
	check("gdtr.base", UMIG_GDT_GPA, get(got_gdtr + 2, 8));
	check("cs", UMIG_SEL_CODE64, got_sel[SEL_CS]);
	check("ss", UMIG_SEL_DATA, got_sel[SEL_SS]);
	check("ds", UMIG_SEL_DATA, got_sel[SEL_DS]);
	check("es", UMIG_SEL_DATA, got_sel[SEL_ES]);
	check("fs", UMIG_SEL_DATA, got_sel[SEL_FS]);
	check("gs", UMIG_SEL_DATA, got_sel[SEL_GS]);

	/* the CPU took the values (pointers and opcode are the CPU's business) */
	check("fcw (loaded)", get(want_fx, 2), get(ref_fx, 2));
	check("fsw (loaded)", get(want_fx + 2, 2), get(ref_fx + 2, 2));
	check("ftw (loaded)", want_fx[4], ref_fx[4]);
	check("mxcsr (loaded)", get(want_fx + 24, 4), get(ref_fx + 24, 4));
	for (int i = 0; i < 8; i++)
		check_bytes("st (loaded) ", i, want_fx + 32 + 16 * i, ref_fx + 32 + 16 * i, 10);
	for (int i = 0; i < 16; i++)
		check_bytes("xmm (loaded) ", i, want_fx + 160 + 16 * i, ref_fx + 160 + 16 * i, 16);

	/* and kept them across the spin, bit for bit */
	check("fcw", get(ref_fx, 2), get(got_fx, 2));
	check("fsw", get(ref_fx + 2, 2), get(got_fx + 2, 2));
	check("ftw", ref_fx[4], got_fx[4]);
	check("fop", get(ref_fx + 6, 2), get(got_fx + 6, 2));
	check("fip", get(ref_fx + 8, 8), get(got_fx + 8, 8));
	check("fdp", get(ref_fx + 16, 8), get(got_fx + 16, 8));
	check("mxcsr", get(ref_fx + 24, 4), get(got_fx + 24, 4));
	for (int i = 0; i < 8; i++)
		check_bytes("st", i, ref_fx + 32 + 16 * i, got_fx + 32 + 16 * i, 10);
	for (int i = 0; i < 16; i++)
		check_bytes("xmm", i, ref_fx + 160 + 16 * i, got_fx + 160 + 16 * i, 16);
}

int main(void)
{
	u64 secs = rt_arg_u64("secs", 3), seed = rt_arg_u64("seed", 1);
	u64 moved_secs = rt_arg_u64("moved_secs", 0);
	u64 n = 1000, t0, ns, ps;

	check_cpuid();
	if (bad)
		return 1;
	host_seen = rt_host_id();
	/*
	 * calibrate on the very loop that will spin: grow n until it takes
	 * 50 ms, then time it twice more and keep the fastest, so that a
	 * first-time translation or a busy host does not make the spin short
	 */
	for (;;) {
		t0 = rt_clock_ns();
		spin_only(n);
		ns = rt_clock_ns() - t0;
		if (ns >= 50000000ull || n >= 1ull << 40)
			break;
		n *= 4;
	}
	for (int i = 0; i < 2; i++) {
		u64 again;

		t0 = rt_clock_ns();
		spin_only(n);
		again = rt_clock_ns() - t0;
		ns = again < ns ? again : ns;
	}
	ps = ns * 1000 / n;	/* picoseconds a spin */
	spins = secs * 1000 * RT_NS_PER_S / (ps ? ps : 1);
	if (!spins)
		spins = 1;
	if (moved_secs)
		moved_spins = moved_secs * 1000 * RT_NS_PER_S / (ps ? ps : 1) + 1;
	fill(seed);
	rt_printf("regtorture: spinning spins=%llu secs=%llu seed=%llu moved_secs=%llu\n", spins,
		  secs, seed, moved_secs);
	torture();
	compare();
	if (bad)
		return 1;
	rt_puts("regtorture: OK\n");
	return 0;
}
