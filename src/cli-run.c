/*
 * cli-run.c - `umig run GUEST.elf ...`: boot a guest and serve it.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "umig/cli.h"
#include "umig/log.h"
#include "umig/migopts.h"
#include "umig/migrate.h"
#include "umig/vm.h"

static const char run_help[] =
"usage: umig run GUEST.elf [options]\n"
"\n"
"Boot a static x86-64 guest program and run it until it exits.\n"
"umig's exit status is the guest's; 125 means umig itself failed\n"
"(a guest fault, an I/O error), 2 a usage error.\n"
"\n"
"options:\n"
"  --mem SIZE             guest RAM, e.g. 64M, 1G (default 64M)\n"
"  --cmdline 'k=v ...'    command line handed to the guest\n"
"  --console FILE         append guest console output to FILE (default stdout)\n"
"  --control PATH         serve the JSON control socket at PATH (docs/control.md)\n"
"  --snapshot FILE        after --snapshot-after seconds, stop the guest and\n"
"                         write a snapshot to FILE (resume it with umig restore)\n"
"  --snapshot-after SECS  when to snapshot (default 1)\n"
"  --vcpu unicorn|kvm|auto  vCPU backend (default unicorn; auto = kvm where\n"
"                         /dev/kvm works); --backend is the same option\n"
CLI_HELP_RAM_BACKING
"  --cpus N               vCPUs, 1..8 (default 1); the guest runtime parks\n"
"                         every vCPU but the first unless the guest uses it\n"
"  --debug                trace state changes (also UMIG_DEBUG=1)\n"
"  --timeline FILE        at exit, write the guest's heartbeat samples as CSV\n"
"                         (host CLOCK_MONOTONIC ns, cumulative beats; 1 ms apart)\n"
"  -h, --help             this text\n"
"\n"
"scripted migration (without a control socket; see also 'umig migrate'):\n"
"  --migrate-to HOST:PORT migrate to 'umig incoming' at HOST:PORT ...\n"
"  --migrate-after SECS   ... this many seconds after boot (default 1)\n"
"and the migration options (also on 'umig migrate' and the control socket):\n";

enum { OPT_MEM = 256, OPT_CMDLINE, OPT_CONSOLE, OPT_CONTROL, OPT_SNAPSHOT,
       OPT_SNAPSHOT_AFTER, OPT_BACKEND, OPT_DEBUG, OPT_MIGRATE_TO, OPT_MIGRATE_AFTER, OPT_TIMELINE, OPT_CPUS,
       OPT_RAM_BACKING };

static const struct option run_options[] = {
	{ "mem", required_argument, NULL, OPT_MEM },
	{ "cmdline", required_argument, NULL, OPT_CMDLINE },
	{ "console", required_argument, NULL, OPT_CONSOLE },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ "snapshot", required_argument, NULL, OPT_SNAPSHOT },
	{ "snapshot-after", required_argument, NULL, OPT_SNAPSHOT_AFTER },
	{ "backend", required_argument, NULL, OPT_BACKEND },
	{ "vcpu", required_argument, NULL, OPT_BACKEND },
	{ "cpus", required_argument, NULL, OPT_CPUS },
	{ "ram-backing", required_argument, NULL, OPT_RAM_BACKING },
	{ "debug", no_argument, NULL, OPT_DEBUG },
	{ "timeline", required_argument, NULL, OPT_TIMELINE },
	{ "migrate-to", required_argument, NULL, OPT_MIGRATE_TO },
	{ "migrate-after", required_argument, NULL, OPT_MIGRATE_AFTER },
	{ "help", no_argument, NULL, 'h' },
	{ 0 }
};

int cmd_run(int argc, char **argv)
{
	struct vm_config cfg = { .mem_size = 64ull << 20 };
	struct serve_opts so = { .snapshot_after = 1.0, .migrate_after = 1.0 };
	const char *cmdline = "", *console = NULL;
	bool after_given = false, mig_given = false;
	struct option longopts[CLI_MAX_OPTS];
	struct mig_params mp;
	struct vm *vm;
	int opt, ret;

	mig_params_default(&mp);
	if (cli_mig_longopts(run_options, longopts) < 0)
		return EXIT_FAILURE_UMIG;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_MEM:
			if (parse_size(optarg, &cfg.mem_size))
				return cli_usage_error("run", "--mem: '%s' is not a size (e.g. 64M, 1G)", optarg);
			break;
		case OPT_CMDLINE: cmdline = optarg; break;
		case OPT_CONSOLE: console = optarg; break;
		case OPT_CONTROL: so.control_path = optarg; break;
		case OPT_SNAPSHOT: so.snapshot_path = optarg; break;
		case OPT_SNAPSHOT_AFTER:
			if (parse_seconds(optarg, &so.snapshot_after))
				return cli_usage_error("run", "--snapshot-after: '%s' is not a number of seconds", optarg);
			after_given = true;
			break;
		case OPT_BACKEND: cfg.backend = optarg; break;
		case OPT_RAM_BACKING:
			if (mem_backing_parse(optarg, &cfg.backing) < 0)
				return cli_usage_error("run", "--ram-backing: %s", err_msg(-EINVAL));
			break;
		case OPT_CPUS: {
			char *end;
			unsigned long n = strtoul(optarg, &end, 10);

			if (!*optarg || *end || n < 1 || n > VM_MAX_CPUS)
				return cli_usage_error("run", "--cpus: '%s' is not 1..%u", optarg,
						       VM_MAX_CPUS);
			cfg.ncpus = n;
			break;
		}
		case OPT_DEBUG: log_debug_enabled = true; break;
		case OPT_TIMELINE: so.timeline_path = optarg; break;
		case OPT_MIGRATE_TO:
			if (parse_hostport(optarg, mp.host, sizeof(mp.host), &mp.port))
				return cli_usage_error("run", "--migrate-to: '%s' is not HOST:PORT", optarg);
			so.migrate = &mp;
			break;
		case OPT_MIGRATE_AFTER:
			if (parse_seconds(optarg, &so.migrate_after))
				return cli_usage_error("run", "--migrate-after: '%s' is not a number of seconds", optarg);
			mig_given = true;
			break;
		case 'h':
			fputs(run_help, stdout);
			migopt_help(stdout);
			puts("umig exits 0 once the guest runs at the destination.");
			return 0;
		default:
			ret = cli_parse_mig_option("run", opt, optarg, &mp);
			if (ret < 0)
				return -ret;
			if (ret == 0)
				return cli_usage_error("run", "unknown or incomplete option '%s'", argv[optind - 1]);
			mig_given = true;
		}
	}
	if (mig_given && !so.migrate)
		return cli_usage_error("run", "migration options need --migrate-to HOST:PORT");
	if (so.migrate && !mig_given)
		so.migrate_after = 1.0;
	if (optind != argc - 1)
		return cli_usage_error("run", optind == argc ? "missing GUEST.elf" : "more than one guest given");
	if (after_given && !so.snapshot_path)
		return cli_usage_error("run", "--snapshot-after needs --snapshot FILE");

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
	ret = so.migrate ? mig_params_check_vm(so.migrate, vm) : 0;
	if (ret < 0) {
		pr_err("%s", err_msg(ret));
		vm_destroy(vm);
		return EXIT_FAILURE_UMIG;
	}
	ret = vm_boot(vm, argv[optind], cmdline);
	if (ret < 0) {
		pr_err("%s", err_msg(ret));
		vm_destroy(vm);
		return EXIT_FAILURE_UMIG;
	}
	ret = cli_serve_vm(vm, &so);
	vm_destroy(vm);
	if (console)
		close(cfg.console_fd);
	return ret;
}
