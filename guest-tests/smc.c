/*
 * smc.c - the self-modifying guest: proves the vCPU runs the code a guest
 * has just written, not a stale translation of what was there before.
 *
 *   rounds=N (20000)
 *
 * Each round writes "mov eax, imm32; ret" with a new immediate into a
 * page of free RAM and calls it; the call must return the new immediate.
 * The code moves around within the page and over 4 pages, and before the
 * first round each page is first written as plain data (a store-only page
 * the vCPU may have mapped for fast stores before it held code).  Prints
 * "smc: ok rounds=N" and exits 0, or names the first stale result and
 * exits 1.
 */
#include "rt.h"

#define SMC_PAGES 4

typedef u32 smc_fn(void);

static void emit(volatile unsigned char *p, u32 imm)
{
	p[0] = 0xb8;	/* mov eax, imm32 */
	p[1] = (unsigned char)imm;
	p[2] = (unsigned char)(imm >> 8);
	p[3] = (unsigned char)(imm >> 16);
	p[4] = (unsigned char)(imm >> 24);
	p[5] = 0xc3;	/* ret */
}

int main(void)
{
	volatile unsigned char *buf = (volatile unsigned char *)rt_free_start();
	u64 rounds = rt_arg_u64("rounds", 20000), i;

	for (i = 0; i < SMC_PAGES * RT_PAGE_SIZE; i++)
		buf[i] = (unsigned char)i;	/* data first: fast store mappings */
	for (i = 0; i < rounds; i++) {
		u64 page = i % SMC_PAGES, off = (i / SMC_PAGES) % 64 * 64;
		volatile unsigned char *code = buf + page * RT_PAGE_SIZE + off;
		u32 want = (u32)(i * 2654435761u), got;

		emit(code, want);
		got = ((smc_fn *)(uintptr_t)code)();
		if (got != want) {
			rt_printf("smc: round %llu: code at %p returned 0x%x, wrote 0x%x\n",
				  i, (void *)code, got, want);
			return 1;
		}
		/* a data store beside the code in the same page must not disturb it */
		code[RT_PAGE_SIZE / 2 - off / 2] = (unsigned char)i;
	}
	rt_printf("smc: ok rounds=%llu\n", rounds);
	return 0;
}
