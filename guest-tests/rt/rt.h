/*
 * rt.h - the tiny runtime shared by umig's freestanding test guests.
 *
 * Gives a guest the few things it needs to be a useful migration workload:
 * port I/O to umig's devices (serial console, exit, clock, sleep,
 * heartbeat; see include/umig/guest-abi.h), a small printf, "k=v" command
 * line parsing, the free-memory range from the boot params, and a PRNG.
 * start.S calls rt_start(), which checks the boot params and runs main().
 */
#ifndef UMIG_GUEST_RT_H
#define UMIG_GUEST_RT_H

/*
 * Guests use no SSE/x87: keeps the vCPU state a migration has to carry to
 * the general registers, and avoids depending on how the host set up
 * CR0/CR4 for floating point.  Applies to everything after this line.
 */
#pragma GCC target("general-regs-only")

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "umig/guest-abi.h"

/* unsigned long long, so "%llu" matches without casts (uint64_t is long). */
typedef unsigned long long u64;
typedef unsigned int u32;

#define RT_PAGE_SIZE 4096ull
#define RT_MIB       (1024ull * 1024)
#define RT_NS_PER_S  1000000000ull

/* --- port I/O: the only way to reach umig's devices ------------------- */

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;

	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* --- console (serial port, one outb per byte) -------------------------- */

void rt_putc(char c);
void rt_puts(const char *s);		/* no newline added */
int rt_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int rt_vprintf(const char *fmt, va_list ap);

/* --- devices ------------------------------------------------------------- */

uint64_t rt_clock_ns(void);		/* guest-monotonic nanoseconds */
void rt_sleep_us(uint32_t us);		/* may return early */
void rt_heartbeat(void);
/* names the umig process running the guest: a change means it moved */
uint32_t rt_host_id(void);
_Noreturn void rt_exit(int code);	/* code 0..255 */

/*
 * The time-based heartbeat.  A guest calls rt_tick(work) after each unit of
 * work (a page dirtied, a page checked) with its running count of units;
 * the runtime beats once every beat_us= microseconds of guest time
 * (default 1000), writing `work` as the beat's value, so umig's timeline
 * shows both liveness (beats) and progress (work).  A tick costs a
 * decrement and a branch; every fourth reads the TSC (no exit to umig),
 * and about eight times per beat interval of TSC time the guest clock,
 * which decides the beats.  beat_us=0 selects beats by count instead: one every
 * beat_units= ticks (the guest's default, e.g. 4096 pages for dirty).
 * Only the boot vCPU may tick (the clock is the boot vCPU's).
 */
extern u32 rt_tick_left;
void rt_tick_slow(u64 work);
void rt_beat_init(u64 default_units);	/* reads beat_us= and beat_units= */
int rt_beat_timed(void);		/* 1: beats every beat_us; 0: by count */
u64 rt_beat_us(void);
void rt_beat(u64 work);			/* beat now with this progress value */

static inline void rt_tick(u64 work)
{
	if (__builtin_expect(--rt_tick_left == 0, 0))
		rt_tick_slow(work);
}

/* --- boot params ------------------------------------------------------- */

/*
 * Command line "k=v k=v ...".  rt_arg() returns a pointer into the boot
 * params to the value, which ends at the next space or NUL (so it is not
 * a C string on its own; use rt_arg_copy() for that), "" for a bare "k",
 * or NULL if the key is absent.
 */
const char *rt_cmdline(void);
const char *rt_arg(const char *key);
uint64_t rt_arg_u64(const char *key, uint64_t def);	/* decimal; def if absent or bad */
int rt_arg_eq(const char *key, const char *val);
int rt_arg_copy(const char *key, char *buf, size_t size); /* length, or -1 if absent */

uint64_t rt_free_start(void);		/* page aligned */
unsigned rt_ncpus(void);		/* vCPUs the guest has (umig run --cpus) */

/*
 * A guest may define this: secondary vCPU cpu (1..rt_ncpus()-1) runs it
 * once the boot vCPU has entered main(); when it returns the vCPU sleeps
 * for good.  It must not use the console or the clock while main() does
 * (the devices serve one vCPU at a time), nor rt_printf's globals.
 */
void rt_secondary(unsigned cpu);
uint64_t rt_free_size(void);

/* --- PRNG: xorshift64* (Vigna), plenty for picking pages ---------------- */

static inline u64 rt_rand(u64 *state)
{
	u64 x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;			/* never 0 if the seed was not 0 */
	return x * 0x2545f4914f6cdd1dull;
}

/* --- what gcc may call even with -ffreestanding --------------------------- */

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

int main(void);

#endif
