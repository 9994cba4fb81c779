/*
 * hello.c - the smallest umig guest: proves boot, console and exit work.
 *
 * Prints one greeting, echoes the command line when there is one (so a
 * test can check it arrived intact), and exits 0.
 */
#include "rt.h"

int main(void)
{
	rt_puts("hello from umig guest\n");
	if (rt_cmdline()[0])
		rt_printf("cmdline: %s\n", rt_cmdline());
	return 0;
}
