/*
 * migopts.h - every migration option, declared once.
 *
 * One table (src/mig-options.c) names each option for the command line
 * (`--downtime-limit`) and for the control socket's `migrate` command
 * (`downtime_limit_ms`), says its unit in the help text, and parses and
 * prints its value, so `umig migrate`, `umig run --migrate-to` and the
 * control socket accept exactly the same options with the same checks.
 * Units: times in milliseconds (MS), sizes in bytes with K/M/G suffixes
 * (SIZE), rates in bytes per second with K/M/G suffixes (RATE).
 */
#ifndef UMIG_MIGOPTS_H
#define UMIG_MIGOPTS_H

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>

#include "umig/migrate.h"

/* getopt values of the table's options: MIGOPT_BASE + index. */
#define MIGOPT_BASE 1000

/* Number of options in the table. */
size_t migopt_count(void);
/*
 * Append the table's options to `own` (ending in a zero entry) into out,
 * which has room for cap entries; -ENOSPC if it does not fit.
 */
int migopt_longopts(const struct option *own, struct option *out, size_t cap);
/*
 * Set option `opt` (a getopt value) from a command-line string: 1 if it
 * was a migration option, 0 if not, -EINVAL with err_set() naming the
 * option and what it expects.
 */
int migopt_parse(struct mig_params *p, int opt, const char *arg);
/* Set every member of a control-socket `migrate` object but "to"; unknown members are refused. */
int migopt_from_json(struct mig_params *p, json_t *args);
/* Every option of p as the control socket's `migrate` arguments. */
json_t *migopt_to_json(const struct mig_params *p);
/*
 * Milliseconds in lo..hi into *out; -EINVAL naming the range.  Also for
 * the destination's own timeouts (umig incoming), so both ends check the
 * same bounds.
 */
int migopt_ms(const char *v, unsigned lo, unsigned hi, unsigned *out);
#define MIGOPT_PEER_TIMEOUT_RANGE    200, 3600000
#define MIGOPT_RECOVER_TIMEOUT_RANGE 1000, 86400000
/* The help lines for the table, two-space indented. */
void migopt_help(FILE *out);

#endif
