/*
 * cli-caps.c - the `umig caps` verb: show what this host can do.
 *
 * A thin front end over caps_probe()/caps_print()/caps_print_json(): it
 * parses the verb's options, probes, prints.  Missing capabilities are
 * reported, not treated as failure; the migration commands refuse the
 * modes they cannot run themselves (caps_require()).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "umig/caps.h"
#include "umig/cli.h"
#include "umig/log.h"

static const char caps_usage[] =
	"usage: umig caps [--json]\n"
	"\n"
	"Probe this host for what umig can use - userfaultfd and its MISSING,\n"
	"ZEROPAGE, WP, WP_ASYNC, WP_UNPOPULATED and MOVE modes, PAGEMAP_SCAN,\n"
	"io_uring, /dev/kvm and RDMA devices - and print one row per\n"
	"capability: whether it is present (with the errno when it is not),\n"
	"what it is needed for, and how to get it when it is missing.\n"
	"\n"
	"options:\n"
	"  --json      print one JSON object instead of the table: a boolean per\n"
	"              capability, uffd_features/uffd_ioctls as hex, and a\n"
	"              \"missing\" object with errno, needed_for and fix\n"
	"  -h, --help  print this help and exit\n"
	"\n"
	"exit status: 0 when the probe ran, even if capabilities are missing;\n"
	"1 when the report could not be written; 2 on a usage error.\n";

/*
 * Word getopt_long's '?' for a person.  optopt is the option's value for a
 * known long option given a value ("--json=1"), the letter for an unknown
 * short one, and 0 for an unknown long one.
 */
static void caps_bad_option(const char *arg)
{
	int len = (int)strcspn(arg, "=");

	if (strncmp(arg, "--", 2))
		pr_err("caps: unknown option '-%c'; see 'umig caps --help'", optopt);
	else if (optopt)
		pr_err("caps: option '%.*s' takes no value; see 'umig caps --help'",
		       len, arg);
	else
		pr_err("caps: unknown option '%.*s'; see 'umig caps --help'",
		       len, arg);
}

int cmd_caps(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct caps c;
	bool json = false;
	int opt, ret;

	optind = 0;	/* GNU: full re-initialisation; main may have parsed */
	opterr = 0;	/* we word the error ourselves */
	while ((opt = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(caps_usage, stdout);
			return 0;
		default:
			caps_bad_option(argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		pr_err("caps: unexpected argument '%s'; see 'umig caps --help'",
		       argv[optind]);
		return 2;
	}

	caps_probe(&c);
	if (json) {
		ret = caps_print_json(&c, stdout);
	} else {
		caps_print(&c, stdout);
		ret = 0;
	}
	if (ret || fflush(stdout) || ferror(stdout)) {
		pr_err("caps: could not write the report to stdout; check that it "
		       "is writable");
		return 1;
	}
	return 0;
}
