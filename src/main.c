/*
 * main.c - umig's entry point: dispatch to one file per verb.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "umig/cli.h"
#include "umig/log.h"

#define UMIG_VERSION "0.1.0"

static const struct verb {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
} verbs[] = {
	{ "run", cmd_run, "boot a guest program (optionally snapshot or migrate it)" },
	{ "migrate", cmd_migrate, "migrate the guest of a running umig to another host" },
	{ "incoming", cmd_incoming, "receive one migration and run the guest" },
	{ "restore", cmd_restore, "continue a guest from a snapshot file" },
	{ "ctl", cmd_ctl, "send one command to a control socket" },
	{ "caps", cmd_caps, "show what this host supports and what is missing" },
	{ "keygen", cmd_keygen, "make a pre-shared key file for authenticated migration" },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: umig VERB [options]   (umig VERB --help for each)\n\n");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		fprintf(out, "  %-10s %s\n", verbs[i].name, verbs[i].summary);
	fprintf(out, "\numig %s - live migration of virtual machines (docs/ and README.md)\n",
		UMIG_VERSION);
}

int main(int argc, char **argv)
{
	/*
	 * A peer that closes early (a control client, a migration peer, a TLS
	 * library's own writes) must give an EPIPE error, never kill umig and
	 * its guest: every verb ignores SIGPIPE, set before any thread starts.
	 */
	signal(SIGPIPE, SIG_IGN);
	log_init_from_env();
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("umig %s\n", UMIG_VERSION);
		return 0;
	}
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (!strcmp(argv[1], verbs[i].name))
			return verbs[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "umig: unknown verb '%s'\n\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
