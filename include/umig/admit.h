/*
 * admit.h - admission checks a destination makes before it accepts a
 * guest: today, that this host can hold the guest's RAM (free memory and
 * memory cgroup limits).  See src/admit.c.
 */
#ifndef UMIG_ADMIT_H
#define UMIG_ADMIT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Bytes of memory this process can still be given: the smallest of
 * MemAvailable and each enclosing memory cgroup's limit minus usage;
 * UINT64_MAX when nothing says.  `source` names the smallest.
 */
uint64_t admit_mem_available(char *source, size_t len);

/* 0 if ram_bytes fits, else -ENOMEM with a message naming the limit. */
int admit_guest_ram(uint64_t ram_bytes);

#endif
