/*
 * cli.h - umig's verbs (one file each, src/cli-*.c) and what they share.
 *
 * Every verb takes (argc, argv) with argv[0] the verb's name, answers
 * -h/--help on stdout with exit status 0, and returns its exit status:
 * 0 success, 2 bad usage, 125 a failure of umig itself; `run` and
 * `restore` otherwise return the guest's own exit code.
 */
#ifndef UMIG_CLI_H
#define UMIG_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

struct vm;
struct control;

#define EXIT_USAGE   2
#define EXIT_FAILURE_UMIG 125

int cmd_caps(int argc, char **argv);
int cmd_ctl(int argc, char **argv);
int cmd_incoming(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_run(int argc, char **argv);

/* Print "umig VERB: MSG; see 'umig VERB --help'" and return EXIT_USAGE. */
int cli_usage_error(const char *verb, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

struct mig_params;
struct mig_dest;
struct mig_ctl;

/* What a running VM is served with, shared by run, restore and incoming. */
struct serve_opts {
	const char *control_path;    /* NULL: no control socket */
	const char *snapshot_path;   /* NULL: no snapshot */
	double snapshot_after;       /* seconds */
	const struct mig_params *migrate;  /* NULL: no scripted migration */
	double migrate_after;        /* seconds */
	struct mig_dest *incoming;   /* the VM arrived by migration and runs */
	const char *timeline_path;   /* heartbeat samples written at exit */
	/* opened before the guest existed (cli_control_open); cli_serve_vm closes them */
	struct control *ctl;
	struct mig_ctl *mig;
};

/*
 * The migration options (migopts.h) on a verb's command line: 1 handled,
 * 0 not a migration option, < 0 a usage error already printed (negated
 * exit status).
 */
int cli_parse_mig_option(const char *verb, int opt, const char *arg, struct mig_params *p);
/* A verb's getopt table: its own options followed by every migration option. */
#define CLI_MAX_OPTS 64
int cli_mig_longopts(const struct option *own, struct option *out);

/* Connect to a umig control socket; fd or -errno (err_msg says why). */
int cli_ctl_connect(const char *path);
/* One reply line (caller frees); -ETIMEDOUT after 30 s, -EPIPE on close. */
int cli_ctl_read_reply(int fd, char **out);

/* Open the console file (or stdout for NULL).  Returns an fd or -errno. */
int cli_open_console(const char *path);
/*
 * Start the VM and serve it until the guest exits, faults, a client sends
 * "quit", SIGINT/SIGTERM arrives, or the snapshot deadline passes.
 * Returns the process exit status.
 */
int cli_serve_vm(struct vm *vm, const struct serve_opts *o);
/*
 * The control socket at path (none if NULL) with the migration commands,
 * vm NULL until the guest exists; 0 or -errno (already printed).
 */
int cli_control_open(const char *path, struct vm *vm, struct control **ctl, struct mig_ctl **mig);
void cli_control_close(struct control *ctl, struct mig_ctl *mig);

/* --ram-backing in the help of every verb that makes guest RAM */
#define CLI_HELP_RAM_BACKING \
"  --ram-backing anon|thp|memfd|hugetlb  guest RAM: private anonymous memory\n" \
"                         (default); the same on 2 MiB transparent huge pages\n" \
"                         (thp: a fault per 2 MiB on first touch; migrates in\n" \
"                         post or stop-copy mode only); a memfd mapped twice\n" \
"                         (docs/architecture.md, \"memfd RAM\"); or that memfd on\n" \
"                         2 MiB huge pages (hugetlb: needs RAM / 2 MiB free pages,\n" \
"                         sysctl vm.nr_hugepages)\n"

#endif
