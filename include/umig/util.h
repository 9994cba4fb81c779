/*
 * util.h - small helpers shared by every part of umig: error details,
 * time, size parsing.
 *
 * Error convention: functions return >= 0 on success and -errno on failure.
 * A function that can say more than an errno records a one-line detail with
 * err_set(), which returns the code it was given so that
 *     return err_set(-EBADMSG, "snapshot: truncated in RAM run %u", i);
 * reads as one statement.  The detail is per thread and is read with
 * err_msg(); callers that print it add their own context.
 */
#ifndef UMIG_UTIL_H
#define UMIG_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PAGE_SIZE 4096ull
#define PAGE_SHIFT 12
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((uint64_t)(a) - 1))

int err_set(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The detail of the last err_set() on this thread, or strerror(-code) if none. */
const char *err_msg(int code);
void err_clear(void);

uint64_t now_ns(void);          /* CLOCK_MONOTONIC */
uint64_t cpu_self_us(void);     /* this process's user + system CPU time (getrusage) */
uint64_t now_realtime_ns(void); /* CLOCK_REALTIME */

/*
 * Parse "4096", "64K", "64M", "4G" (binary multiples).  Returns 0 or
 * -EINVAL (bad syntax) / -ERANGE (overflow).
 */
int parse_size(const char *s, uint64_t *out);
int parse_u64(const char *s, uint64_t *out);
int parse_seconds(const char *s, double *out);
/* "HOST:PORT" -> host (copied into buf) and port. */
int parse_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);

/* Write all of buf, retrying on EINTR and short writes. */
int write_full(int fd, const void *buf, size_t len);
int read_full(int fd, void *buf, size_t len); /* -EPIPE on early EOF */

const char *errno_name(int err); /* "EPERM" for 1; "E?" for unknown */

#endif
