/*
 * spin.c - an ALU-bound guest: measures how many guest instructions per
 * second the vCPU backend executes.
 *
 *   loops=N (200000000)
 *
 * The timed loop touches no memory and does no port I/O, so it measures
 * raw instruction throughput and nothing else.  Each iteration executes
 * exactly SPIN_INSNS_PER_LOOP = 8 instructions:
 *
 *   6 x add $imm, %reg   six independent registers (no dependency chain
 *                        between them, so a real CPU may run them in
 *                        parallel; an emulator runs them one by one)
 *   1 x dec %counter
 *   1 x jnz back
 *
 * The loop is one basic block, so every iteration is also one block entry
 * for the emulator.  insns counts the loop only (loops x 8); the handful of
 * instructions around it and the two clock reads are not counted, which is
 * well under a millionth at the default loops.  Prints one line,
 *
 *   spin: loops=N insns=N ns=N mips=N
 *
 * with ns the guest-clock time of the loop and mips = insns per guest
 * microsecond, then exits 0.  Exit 2: loops out of range.
 */
#include "rt.h"

#define SPIN_INSNS_PER_LOOP 8ull
#define SPIN_LOOPS_MAX      (1ull << 60)	/* so loops x 8 fits in 64 bits */

/* Run the 8-instruction body n times (n >= 1). */
static void spin(u64 n)
{
	u64 a = 0, b = 0, c = 0, d = 0, e = 0, f = 0;

	__asm__ volatile(
		"1:\n\t"
		"add $1, %[a]\n\t"
		"add $2, %[b]\n\t"
		"add $3, %[c]\n\t"
		"add $4, %[d]\n\t"
		"add $5, %[e]\n\t"
		"add $6, %[f]\n\t"
		"dec %[n]\n\t"
		"jnz 1b"
		: [a] "+r"(a), [b] "+r"(b), [c] "+r"(c), [d] "+r"(d),
		  [e] "+r"(e), [f] "+r"(f), [n] "+r"(n)
		:
		: "cc");
}

/* insns per microsecond, without overflowing for huge counts. */
static u64 mips(u64 insns, u64 ns)
{
	if (!ns)
		return 0;
	if (insns <= ~0ull / 1000)
		return insns * 1000 / ns;
	return ns >= 1000 ? insns / (ns / 1000) : 0;
}

int main(void)
{
	u64 loops = rt_arg_u64("loops", 200000000);
	u64 insns, t0, t1;

	if (!loops || loops > SPIN_LOOPS_MAX) {
		rt_printf("spin: loops must be 1..%llu, got %llu\n", SPIN_LOOPS_MAX, loops);
		return 2;
	}
	insns = loops * SPIN_INSNS_PER_LOOP;
	t0 = rt_clock_ns();
	spin(loops);
	t1 = rt_clock_ns();
	rt_printf("spin: loops=%llu insns=%llu ns=%llu mips=%llu\n",
		  loops, insns, t1 - t0, mips(insns, t1 - t0));
	return 0;
}
