/*
 * rt.c - the guest runtime behind rt.h: startup, devices, printf, command
 * line, and the libc bits gcc expects.
 *
 * Guests run without interrupts.  The boot vCPU runs main(); secondary
 * vCPUs (umig run --cpus N) run rt_secondary() if the guest has one and
 * otherwise sleep, so the runtime's globals are the boot vCPU's, and a
 * guest that uses secondaries shares its own data with atomics.  The boot params are read in place: they live in guest
 * RAM and migrate with the rest of it.
 */
#include "rt.h"

static const struct umig_boot_params *rt_bp;
static uint64_t rt_beats;

/* --- startup ------------------------------------------------------------- */

_Noreturn void rt_start(const struct umig_boot_params *bp, unsigned cpu);

/* What a secondary vCPU runs unless the guest defines rt_secondary(). */
__attribute__((weak)) void rt_secondary(unsigned cpu)
{
	(void)cpu;
}

/*
 * Secondary vCPUs start at the same entry point at the same time; they
 * wait until the boot vCPU has checked the boot params, run
 * rt_secondary(), and then park in the sleep port, which costs the host
 * no CPU and ends early only when umig pauses the guest.
 */
static _Noreturn void rt_secondary_start(unsigned cpu)
{
	while (!__atomic_load_n(&rt_bp, __ATOMIC_ACQUIRE))
		rt_sleep_us(1000);
	rt_secondary(cpu);
	for (;;)
		rt_sleep_us(0xffffffffu);
}

_Noreturn void rt_start(const struct umig_boot_params *bp, unsigned cpu)
{
	if (cpu)
		rt_secondary_start(cpu);
	if (bp->magic != UMIG_BOOT_MAGIC || bp->version != UMIG_BOOT_VERSION) {
		rt_printf("rt: bad boot params: magic=0x%llx version=%u (want 0x%llx version %u)\n",
			  bp->magic, bp->version, UMIG_BOOT_MAGIC, UMIG_BOOT_VERSION);
		rt_exit(120);
	}
	__atomic_store_n(&rt_bp, bp, __ATOMIC_RELEASE);
	rt_exit(main());
}

/* --- devices ------------------------------------------------------------- */

void rt_putc(char c)
{
	outb(UMIG_PORT_SERIAL, (uint8_t)c);
}

void rt_puts(const char *s)
{
	while (*s)
		rt_putc(*s++);
}

uint64_t rt_clock_ns(void)
{
	/* LO first: it latches the whole value, so the halves are consistent. */
	uint64_t lo = inl(UMIG_PORT_CLOCK_LO);
	uint64_t hi = inl(UMIG_PORT_CLOCK_HI);

	return hi << 32 | lo;
}

uint32_t rt_host_id(void)
{
	return inl(UMIG_PORT_HOST_ID);
}

void rt_sleep_us(uint32_t us)
{
	outl(UMIG_PORT_SLEEP_US, us);
}

void rt_heartbeat(void)
{
	rt_beats++;
	outl(UMIG_PORT_HEARTBEAT, (uint32_t)rt_beats);
}

/* --- the time-based heartbeat (rt.h) -------------------------------------- */

#define RT_TICK_MAX 65536u	/* count beats: ticks per slow path, at most */
#define RT_TSC_EVERY 4u		/* time beats: ticks between TSC reads */

u32 rt_tick_left = 1;		/* the first tick initialises with defaults */
static int rt_beat_ready;
static u64 rt_beat_ns = 1000000;	/* 0: beats by count */
static u64 rt_beat_units = 4096;
static u64 rt_tsc_gate;		/* TSC ticks between clock reads (~beat_us / 8) */
static u64 rt_last_tsc, rt_last_beat_ns;

static inline u64 rt_rdtsc(void)
{
	u32 lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (u64)hi << 32 | lo;
}

/*
 * TSC ticks per beat_us / 8, measured against the guest clock over about
 * a millisecond (bounded).  The TSC is only a cheap gate in front of the
 * clock, which decides every beat: it need not be continuous across a
 * migration (it is not), and a wrong rate only makes reads more or less
 * frequent.
 */
static void rt_tsc_calibrate(void)
{
	u64 c0 = rt_clock_ns(), t0 = rt_rdtsc(), c1 = c0, t1 = t0;

	for (int i = 0; i < 100000 && c1 - c0 < 1000000; i++) {
		c1 = rt_clock_ns();
		t1 = rt_rdtsc();
	}
	rt_tsc_gate = c1 > c0 && t1 > t0 ? (t1 - t0) * (rt_beat_ns / 8) / (c1 - c0) : 0;
}

void rt_beat_init(u64 default_units)
{
	rt_beat_ns = rt_arg_u64("beat_us", 1000) * 1000;
	rt_beat_units = rt_arg_u64("beat_units", default_units);
	if (!rt_beat_units)
		rt_beat_units = 1;
	if (rt_beat_ns)
		rt_tsc_calibrate();
	rt_last_tsc = rt_rdtsc();
	rt_last_beat_ns = rt_clock_ns();
	rt_tick_left = rt_beat_ns ? RT_TSC_EVERY :
		       (u32)(rt_beat_units < RT_TICK_MAX ? rt_beat_units : RT_TICK_MAX);
	rt_beat_ready = 1;
}

int rt_beat_timed(void)
{
	return rt_beat_ns != 0;
}

u64 rt_beat_us(void)
{
	return rt_beat_ns / 1000;
}

void rt_beat(u64 work)
{
	rt_beats++;
	outl(UMIG_PORT_HEARTBEAT, (uint32_t)work);
	if (rt_beat_ns)
		rt_last_beat_ns = rt_clock_ns();
}

/*
 * Time beats: every RT_TSC_EVERY ticks read the TSC (no exit to umig);
 * once about beat_us / 8 of it has passed, or it ran backwards (a
 * migration to another host), read the clock and beat if beat_us of guest
 * time has passed since the last beat.  Counting ticks alone between
 * clock reads would not do: a guest slowed by post-copy faults (100 µs
 * each) would take many milliseconds over a count tuned at full speed, and
 * its gaps would be the runtime's, not umig's.
 */
void rt_tick_slow(u64 work)
{
	u64 tsc, now;

	if (!rt_beat_ready)
		rt_beat_init(4096);
	if (!rt_beat_ns) {
		rt_beats++;
		outl(UMIG_PORT_HEARTBEAT, (uint32_t)work);
		rt_tick_left = (u32)(rt_beat_units < RT_TICK_MAX ? rt_beat_units : RT_TICK_MAX);
		return;
	}
	rt_tick_left = RT_TSC_EVERY;
	tsc = rt_rdtsc();
	if (tsc >= rt_last_tsc && tsc - rt_last_tsc < rt_tsc_gate)
		return;
	rt_last_tsc = tsc;
	now = rt_clock_ns();
	if (now - rt_last_beat_ns >= rt_beat_ns) {
		rt_beats++;
		outl(UMIG_PORT_HEARTBEAT, (uint32_t)work);
		rt_last_beat_ns = now;
	}
}

_Noreturn void rt_exit(int code)
{
	outl(UMIG_PORT_EXIT, (uint32_t)code);
	for (;;)	/* the vCPU stops at the next block boundary after the out: wait here */
		__asm__ volatile("pause");
}

/* --- printf -------------------------------------------------------------- */

/* Emit digits of v in base (10 or 16), padded to width with pad. */
static int rt_putnum(u64 v, unsigned base, int neg, int width, char pad, int left)
{
	char buf[24];
	int n = 0, len, out = 0;

	do {
		buf[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	len = n + neg;
	if (neg && pad == '0') {	/* "-0042", not "00-42" */
		rt_putc('-');
		out++;
		neg = 0;
	}
	for (; !left && width > len; width--, out++)
		rt_putc(pad);
	if (neg) {
		rt_putc('-');
		out++;
	}
	for (out += n; n; n--)
		rt_putc(buf[n - 1]);
	for (; left && width > len; width--, out++)
		rt_putc(' ');
	return out;
}

int rt_vprintf(const char *fmt, va_list ap)
{
	int out = 0;

	for (; *fmt; fmt++) {
		int width = 0, left = 0, lng = 0, neg = 0;
		char pad = ' ';
		u64 v;

		if (*fmt != '%') {
			rt_putc(*fmt);
			out++;
			continue;
		}
		fmt++;
		for (; *fmt == '-' || *fmt == '0'; fmt++) {
			if (*fmt == '-')
				left = 1;
			else
				pad = '0';
		}
		for (; *fmt >= '0' && *fmt <= '9'; fmt++)
			width = width * 10 + (*fmt - '0');
		for (; *fmt == 'l' || *fmt == 'z'; fmt++)
			lng++;		/* l, ll and z are all 64 bits here */
		if (left)
			pad = ' ';

		switch (*fmt) {
		case 'd':
		case 'i': {
			long long s = lng ? va_arg(ap, long long) : va_arg(ap, int);

			neg = s < 0;
			v = neg ? -(u64)s : (u64)s;
			out += rt_putnum(v, 10, neg, width, pad, left);
			break;
		}
		case 'u':
		case 'x':
			v = lng ? va_arg(ap, u64) : va_arg(ap, unsigned int);
			out += rt_putnum(v, *fmt == 'u' ? 10 : 16, 0, width, pad, left);
			break;
		case 'p':
			rt_puts("0x");
			out += 2 + rt_putnum((uintptr_t)va_arg(ap, void *), 16, 0, width, pad, left);
			break;
		case 'c':
			rt_putc((char)va_arg(ap, int));
			out++;
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			int len;

			s = s ? s : "(null)";
			len = (int)strlen(s);
			for (; !left && width > len; width--, out++)
				rt_putc(' ');
			rt_puts(s);
			out += len;
			for (; left && width > len; width--, out++)
				rt_putc(' ');
			break;
		}
		case '%':
			rt_putc('%');
			out++;
			break;
		case '\0':
			return out;
		default:	/* unknown conversion: show it rather than guess */
			rt_putc('%');
			rt_putc(*fmt);
			out += 2;
			break;
		}
	}
	return out;
}

int rt_printf(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = rt_vprintf(fmt, ap);
	va_end(ap);
	return n;
}

/* --- boot params and command line ------------------------------------------ */

const char *rt_cmdline(void)
{
	return rt_bp->cmdline;
}

unsigned rt_ncpus(void)
{
	return rt_bp->ncpus;
}

uint64_t rt_free_start(void)
{
	return rt_bp->free_start;
}

uint64_t rt_free_size(void)
{
	return rt_bp->free_end > rt_bp->free_start ?
	       rt_bp->free_end - rt_bp->free_start : 0;
}

static int rt_is_end(char c)
{
	return c == ' ' || c == '\0';
}

const char *rt_arg(const char *key)
{
	/*
	 * Scan to the NUL rather than trusting cmdline_len, but never past the
	 * array: a host bug should cost us arguments, not a wild read.
	 */
	const char *p = rt_bp->cmdline, *end = p;
	size_t klen = strlen(key);

	while (end < p + UMIG_CMDLINE_MAX - 1 && *end)
		end++;

	while (p < end) {
		while (p < end && *p == ' ')
			p++;
		if (p + klen <= end && !memcmp(p, key, klen)) {
			if (p[klen] == '=')
				return p + klen + 1;
			if (rt_is_end(p[klen]))
				return p + klen;	/* bare "key": empty value */
		}
		while (p < end && !rt_is_end(*p))
			p++;
	}
	return NULL;
}

uint64_t rt_arg_u64(const char *key, uint64_t def)
{
	const char *v = rt_arg(key);
	uint64_t n = 0;

	if (!v || rt_is_end(*v))
		return def;
	for (; !rt_is_end(*v); v++) {
		if (*v < '0' || *v > '9')
			return def;
		n = n * 10 + (uint64_t)(*v - '0');
	}
	return n;
}

int rt_arg_eq(const char *key, const char *val)
{
	const char *v = rt_arg(key);

	if (!v)
		return 0;
	while (*val && !rt_is_end(*v) && *v == *val)
		v++, val++;
	return !*val && rt_is_end(*v);
}

int rt_arg_copy(const char *key, char *buf, size_t size)
{
	const char *v = rt_arg(key);
	size_t n = 0;

	if (!v)
		return -1;
	for (; !rt_is_end(v[n]) && n + 1 < size; n++)
		buf[n] = v[n];
	if (size)
		buf[n] = '\0';
	return (int)n;
}

/*
 * --- libc: gcc emits calls to these even with -ffreestanding --------------
 * The string instructions keep gcc from "optimising" a plain loop here
 * back into a call to the very function being defined.
 */

void *memset(void *d, int c, size_t n)
{
	void *p = d;

	__asm__ volatile("rep stosb" : "+D"(p), "+c"(n) : "a"(c) : "memory");
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	void *p = d;

	__asm__ volatile("rep movsb" : "+D"(p), "+S"(s), "+c"(n) : : "memory");
	return d;
}

void *memmove(void *d, const void *s, size_t n)
{
	if (d <= s || (const char *)s + n <= (char *)d)
		return memcpy(d, s, n);
	/* Overlapping with d above s: copy backwards, last byte first. */
	{
		char *pd = (char *)d + n - 1;
		const char *ps = (const char *)s + n - 1;

		__asm__ volatile("std; rep movsb; cld"
				 : "+D"(pd), "+S"(ps), "+c"(n) : : "memory");
	}
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;

	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}

size_t strlen(const char *s)
{
	const char *p = s;

	while (*p)
		p++;
	return (size_t)(p - s);
}
