/*
 * log.c - stderr diagnostics with a per-process role prefix; see log.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "umig/log.h"

bool log_debug_enabled;
static char log_role[32];

void log_set_role(const char *role)
{
	snprintf(log_role, sizeof(log_role), "%s", role ? role : "");
}

void log_init_from_env(void)
{
	const char *v = getenv("UMIG_DEBUG");

	if (v && *v && strcmp(v, "0"))
		log_debug_enabled = true;
}

void log_msg(const char *level, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	if (log_role[0])
		n = snprintf(line, sizeof(line), "umig[%s]: %s", log_role, level);
	else
		n = snprintf(line, sizeof(line), "umig: %s", level);
	/* debug lines carry a timestamp so traces from two hosts can be lined up */
	if (level[0] == 'd') {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		n += snprintf(line + n, sizeof(line) - n, "%ld.%06ld ", (long)ts.tv_sec % 1000,
			      ts.tv_nsec / 1000);
	}
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	/* one fputs per message so lines from several threads do not interleave */
	n = strlen(line);
	if (n && line[n - 1] != '\n' && n < (int)sizeof(line) - 1) {
		line[n++] = '\n';
		line[n] = 0;
	}
	fputs(line, stderr);
}
