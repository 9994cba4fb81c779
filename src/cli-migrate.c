/*
 * cli-migrate.c - `umig migrate`: ask a running umig (by its control
 * socket) to migrate its guest, and follow the migration to its end.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "umig/cli.h"
#include "umig/log.h"
#include "umig/migopts.h"
#include "umig/migrate.h"
#include "umig/util.h"

static const char migrate_help[] =
"usage: umig migrate --control PATH --to HOST:PORT [options]\n"
"\n"
"Migrate the guest of a running 'umig run ... --control PATH' to\n"
"'umig incoming --listen HOST:PORT', and report progress until it ends.\n"
"Until the switchover the source guest keeps running; if the migration\n"
"fails before it, the guest keeps running untouched at the source.\n"
"Exit status: 0 migrated, 1 the migration failed, 2 usage error,\n"
"125 the control socket could not be used.\n"
"\n"
"options:\n"
"  --control PATH         the source umig's control socket (required)\n"
"  --to HOST:PORT         the destination (required)\n"
"  -h, --help             this text\n"
"migration options (also on 'umig run --migrate-to' and the control socket):\n";

/* One request/reply on an open connection; returns the reply object. */
static json_t *mc_call(int fd, json_t *req)
{
	char *s = json_dumps(req, JSON_COMPACT), *line = NULL;
	json_t *r = NULL;

	if (s && write_full(fd, s, strlen(s)) == 0 && write_full(fd, "\n", 1) == 0 &&
	    cli_ctl_read_reply(fd, &line) == 0)
		r = json_loads(line, 0, NULL);
	free(line);
	free(s);
	json_decref(req);
	return r;
}

static void mc_progress(json_t *r, bool tty)
{
	if (!tty)
		return;
	fprintf(stderr, "\rumig migrate: %-10s %.0f ms  bulk %.1f MB  urgent pages %lld   ",
		json_string_value(json_object_get(r, "status")),
		json_number_value(json_object_get(r, "total_ms")),
		json_integer_value(json_object_get(r, "wire_bytes_bulk")) / 1e6,
		json_integer_value(json_object_get(r, "pages_urgent")));
}

static int mc_follow(int fd, bool quiet)
{
	bool tty = !quiet && isatty(STDERR_FILENO);
	char last[32] = "setup";

	/* bounded: a migration that makes no progress for hours is stuck */
	for (long i = 0; i < 10L * 3600 * 24; i++) {
		json_t *r = mc_call(fd, json_pack("{s:s}", "execute", "query-migrate"));
		json_t *ret = json_object_get(r, "return");
		const char *st = json_string_value(json_object_get(ret, "status"));

		if (!st) {
			json_decref(r);
			if (tty)
				fputc('\n', stderr);
			/* after the switchover the source exits only when it is done */
			if (!strcmp(last, "switchover") || !strcmp(last, "postcopy"))
				pr_err("the source umig exited during %s before its final record was read; "
				       "see its output and --stats", last);
			else
				pr_err("the source umig stopped answering (did it exit?)");
			return EXIT_FAILURE_UMIG;
		}
		snprintf(last, sizeof(last), "%s", st);
		if (!strcmp(st, "completed") || !strcmp(st, "failed-guest-here") || !strcmp(st, "lost")) {
			int rc = !strcmp(st, "completed") ? 0 : 1;  /* st dies with r */

			if (tty)
				fputc('\n', stderr);
			json_dumpf(ret, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
			putchar('\n');
			if (rc)
				pr_err("migration failed: %s",
				       json_string_value(json_object_get(ret, "error")));
			json_decref(r);
			return rc;
		}
		mc_progress(ret, tty);
		json_decref(r);
		usleep(100000);
	}
	return 1;
}

int cmd_migrate(int argc, char **argv)
{
	static const struct option own[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "to", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct option opts[CLI_MAX_OPTS];
	const char *control = NULL, *to = NULL;
	char stats_abs[PATH_MAX];
	struct mig_params p;
	json_t *req, *r, *args;
	int opt, ret, fd;

	mig_params_default(&p);
	if (cli_mig_longopts(own, opts) < 0)
		return EXIT_FAILURE_UMIG;
	/* the source may close the socket as it exits: an error, not a signal */
	signal(SIGPIPE, SIG_IGN);
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': control = optarg; break;
		case 't': to = optarg; break;
		case 'h': fputs(migrate_help, stdout); migopt_help(stdout); return 0;
		default:
			ret = cli_parse_mig_option("migrate", opt, optarg, &p);
			if (ret < 0)
				return -ret;
			if (!ret)
				return cli_usage_error("migrate", "unknown or incomplete option '%s'",
						       argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage_error("migrate", "unexpected argument '%s'", argv[optind]);
	if (!control || !to)
		return cli_usage_error("migrate", "--control PATH and --to HOST:PORT are required");
	if (parse_hostport(to, p.host, sizeof(p.host), &p.port))
		return cli_usage_error("migrate", "--to: '%s' is not HOST:PORT", to);
	/* the source umig writes the file: give it a path that means the same there */
	if (p.stats_path[0] && p.stats_path[0] != '/') {
		if (!getcwd(stats_abs, sizeof(stats_abs) - strlen(p.stats_path) - 2))
			return cli_usage_error("migrate", "--stats: cannot resolve the path");
		strcat(stats_abs, "/");
		strcat(stats_abs, p.stats_path);
		snprintf(p.stats_path, sizeof(p.stats_path), "%s", stats_abs);
	}
	fd = cli_ctl_connect(control);
	if (fd < 0) {
		pr_err("%s", err_msg(fd));
		return EXIT_FAILURE_UMIG;
	}
	args = migopt_to_json(&p);
	json_object_set_new(args, "to", json_string(to));
	/* the progress line is this process's; the source stays quiet */
	json_object_set_new(args, "quiet", json_true());
	req = json_pack("{s:s, s:o}", "execute", "migrate", "arguments", args);
	r = mc_call(fd, req);
	if (!json_object_get(r, "return")) {
		pr_err("migrate: %s", r ? json_string_value(json_object_get(json_object_get(r, "error"), "desc"))
					: "no reply from the control socket");
		json_decref(r);
		close(fd);
		return r ? 1 : EXIT_FAILURE_UMIG;
	}
	json_decref(r);
	ret = mc_follow(fd, p.quiet);
	close(fd);
	return ret;
}
