/*
 * cli-restore.c - `umig restore FILE`: continue a guest from a snapshot.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <unistd.h>

#include "umig/cli.h"
#include "umig/log.h"
#include "umig/snapshot.h"
#include "umig/vm.h"

static const char restore_help[] =
"usage: umig restore SNAPSHOT [options]\n"
"\n"
"Continue a guest from a snapshot written by 'umig run --snapshot'.\n"
"The guest resumes where it stopped: its RAM, registers, console count,\n"
"heartbeat count and clock continue (the clock does not count the time\n"
"spent on disk).  A truncated, corrupted or wrong-version file is refused\n"
"with exit status 125 before anything runs.\n"
"\n"
"options:\n"
"  --console FILE         append guest console output to FILE (default stdout)\n"
"  --control PATH         serve the JSON control socket at PATH\n"
"  --snapshot FILE        snapshot again after --snapshot-after seconds\n"
"  --snapshot-after SECS  when to snapshot (default 1)\n"
"  --vcpu unicorn|kvm|auto  vCPU backend (default unicorn; auto = kvm where\n"
"                         /dev/kvm works); --backend is the same option\n"
CLI_HELP_RAM_BACKING
"  --debug                trace state changes (also UMIG_DEBUG=1)\n"
"  -h, --help             this text\n";

enum { OPT_CONSOLE = 256, OPT_CONTROL, OPT_SNAPSHOT, OPT_SNAPSHOT_AFTER,
       OPT_BACKEND, OPT_DEBUG, OPT_RAM_BACKING };

static const struct option restore_options[] = {
	{ "console", required_argument, NULL, OPT_CONSOLE },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ "snapshot", required_argument, NULL, OPT_SNAPSHOT },
	{ "snapshot-after", required_argument, NULL, OPT_SNAPSHOT_AFTER },
	{ "backend", required_argument, NULL, OPT_BACKEND },
	{ "vcpu", required_argument, NULL, OPT_BACKEND },
	{ "ram-backing", required_argument, NULL, OPT_RAM_BACKING },
	{ "debug", no_argument, NULL, OPT_DEBUG },
	{ "help", no_argument, NULL, 'h' },
	{ 0 }
};

int cmd_restore(int argc, char **argv)
{
	struct vm_config cfg = { 0 };
	struct serve_opts so = { .snapshot_after = 1.0 };
	struct snapshot_info info;
	const char *console = NULL, *path;
	bool after_given = false;
	struct vm *vm;
	int opt, ret;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", restore_options, NULL)) != -1) {
		switch (opt) {
		case OPT_CONSOLE: console = optarg; break;
		case OPT_CONTROL: so.control_path = optarg; break;
		case OPT_SNAPSHOT: so.snapshot_path = optarg; break;
		case OPT_SNAPSHOT_AFTER:
			if (parse_seconds(optarg, &so.snapshot_after))
				return cli_usage_error("restore", "--snapshot-after: '%s' is not a number of seconds", optarg);
			after_given = true;
			break;
		case OPT_BACKEND: cfg.backend = optarg; break;
		case OPT_RAM_BACKING:
			if (mem_backing_parse(optarg, &cfg.backing) < 0)
				return cli_usage_error("restore", "--ram-backing: %s", err_msg(-EINVAL));
			break;
		case OPT_DEBUG: log_debug_enabled = true; break;
		case 'h': fputs(restore_help, stdout); return 0;
		default:
			return cli_usage_error("restore", "unknown or incomplete option '%s'", argv[optind - 1]);
		}
	}
	if (optind != argc - 1)
		return cli_usage_error("restore", optind == argc ? "missing SNAPSHOT" : "more than one snapshot given");
	if (after_given && !so.snapshot_path)
		return cli_usage_error("restore", "--snapshot-after needs --snapshot FILE");
	path = argv[optind];

	ret = snapshot_read_header(path, &cfg.mem_size);
	if (ret < 0) {
		pr_err("%s: %s", path, err_msg(ret));
		return EXIT_FAILURE_UMIG;
	}
	cfg.console_fd = cli_open_console(console);
	if (cfg.console_fd < 0) {
		pr_err("%s", err_msg(cfg.console_fd));
		return EXIT_FAILURE_UMIG;
	}
	ret = vm_create(&vm, &cfg);
	if (ret < 0) {
		pr_err("cannot create the VM: %s", err_msg(ret));
		return EXIT_FAILURE_UMIG;
	}
	ret = snapshot_load(vm, path, &info);
	if (ret < 0) {
		pr_err("%s: %s", path, err_msg(ret));
		vm_destroy(vm);
		return EXIT_FAILURE_UMIG;
	}
	pr_debug("restored %llu pages from %s", (unsigned long long)info.pages_stored, path);
	ret = cli_serve_vm(vm, &so);
	vm_destroy(vm);
	if (console)
		close(cfg.console_fd);
	return ret;
}
