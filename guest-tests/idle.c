/*
 * idle.c - a guest that does almost nothing, steadily.
 *
 * Heartbeats every interval_ms and sleeps in between, so a migration of it
 * is dominated by fixed costs, and the gap in its heartbeats measures the
 * downtime the guest saw.
 *
 *   interval_ms=N (10)  secs=N (0 = forever)
 */
#include "rt.h"

/*
 * Sleep until the clock reaches deadline (ns).  rt_sleep_us() may return
 * early (the host wakes the vCPU to pause it), so re-sleep for the rest;
 * the bound keeps a broken clock from hanging us here.
 */
static void sleep_until(u64 deadline)
{
	int tries;

	for (tries = 0; tries < 1000; tries++) {
		u64 now = rt_clock_ns();

		if (now >= deadline)
			return;
		rt_sleep_us((uint32_t)((deadline - now + 999) / 1000));
	}
}

int main(void)
{
	u64 interval_ns = rt_arg_u64("interval_ms", 10) * 1000000;
	u64 secs = rt_arg_u64("secs", 0);
	u64 now = rt_clock_ns(), up = 0;
	u64 next_up = now + RT_NS_PER_S, next_beat = now;

	for (;;) {
		if (now >= next_beat) {
			rt_heartbeat();
			next_beat = now + interval_ns;
		}
		/* A long interval must not delay the once-a-second line. */
		while (now >= next_up) {
			rt_printf("idle: up %llus\n", ++up);
			if (secs && up >= secs) {
				rt_puts("idle: done\n");
				return 0;
			}
			next_up += RT_NS_PER_S;
		}
		sleep_until(next_beat < next_up ? next_beat : next_up);
		now = rt_clock_ns();
	}
}
