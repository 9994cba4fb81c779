/*
 * log.h - umig's diagnostics.
 *
 * Every message goes to stderr prefixed with "umig: " (and the role, when a
 * process has one, e.g. "umig[dest]: ").  pr_debug() is compiled in but off
 * unless UMIG_DEBUG=1 is in the environment or --debug was given, so state
 * changes, page requests and placements can be traced in the field without
 * a rebuild.
 */
#ifndef UMIG_LOG_H
#define UMIG_LOG_H

#include <stdbool.h>

extern bool log_debug_enabled;

void log_set_role(const char *role);
void log_init_from_env(void);
void log_msg(const char *level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define pr_err(...)  log_msg("error: ", __VA_ARGS__)
#define pr_warn(...) log_msg("warning: ", __VA_ARGS__)
#define pr_info(...) log_msg("", __VA_ARGS__)
#define pr_debug(...)                                  \
	do {                                           \
		if (__builtin_expect(log_debug_enabled, 0)) \
			log_msg("debug: ", __VA_ARGS__); \
	} while (0)

#endif
