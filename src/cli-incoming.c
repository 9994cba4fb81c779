/*
 * cli-incoming.c - `umig incoming --listen HOST:PORT`: receive one
 * migration, then run the guest until it exits.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "umig/cli.h"
#include "umig/log.h"
#include "umig/migopts.h"
#include "umig/migrate.h"
#include "umig/util.h"
#include "umig/vm.h"
#include "umig/xport.h"

static const char incoming_help[] =
"usage: umig incoming --listen HOST:PORT [options]\n"
"\n"
"Wait for one migration from 'umig migrate' or 'umig run --migrate-to',\n"
"then run the guest here until it exits.  umig's exit status is the\n"
"guest's; 125 means the migration or umig failed, 2 a usage error.\n"
"A mismatched version or RAM layout is refused during the handshake,\n"
"while the source guest still runs untouched.\n"
"\n"
"options:\n"
"  --listen HOST:PORT     where to listen (required), e.g. 127.0.0.1:4444\n"
"  --control PATH         serve the JSON control socket at PATH, from before a\n"
"                         source connects (query-migrate, migrate-recover,\n"
"                         migrate-resolve: docs/control.md)\n"
"  --console FILE         append guest console output to FILE (default stdout)\n"
"  --stats FILE           write the statistics record (docs/metrics.md)\n"
"  --mem SIZE             refuse a guest whose RAM is not SIZE\n"
"  --vcpu unicorn|kvm|auto  vCPU backend (default unicorn; auto = kvm where\n"
"                         /dev/kvm works); --backend is the same option\n"
CLI_HELP_RAM_BACKING
"                         With --transport rdma and neither --ram-backing nor\n"
"                         --placement, the default is memfd with --placement\n"
"                         continue: post-copy's RDMA READs land straight in guest\n"
"                         RAM, never copied (docs/rdma.md, \"Zero-copy\")\n"
"  --placement copy|continue  memfd RAM, post-copy: place each page with\n"
"                         UFFDIO_COPY as for anonymous RAM (default over tcp:\n"
"                         cheaper per page here, bench/floors), or write it into\n"
"                         the memfd (RDMA: READ it there) and map it with\n"
"                         UFFDIO_CONTINUE\n"
"  --transport NAME       page transport to accept: tcp or rdma (default tcp;\n"
"                         rdma needs an RDMA device behind the --listen address)\n"
"  --rdma-poll            rdma: busy-poll completions instead of sleeping on them\n"
"  --rdma-plaintext-pages rdma with --auth-key/--tls-creds: accept that the guest's\n"
"                         pages arrive over RDMA unencrypted (TLS covers only the\n"
"                         control connection); refused without it\n"
"  --peer-timeout MS      a source silent for MS milliseconds is gone (default 5000)\n"
"  --recover-timeout MS   post-copy: wait this long for the source to recover a\n"
"                         broken link (default 600000)\n"
"  --overcommit           accept a guest larger than this host's free memory\n"
"                         (MemAvailable and memory cgroup limits): the guest\n"
"                         may then be killed after the commit, when it\n"
"                         exists only here\n"
"  --auth-key FILE        TLS 1.3 with this pre-shared key (umig keygen FILE); only a\n"
"                         source with the same key may migrate here\n"
"  --tls-creds DIR        TLS 1.3 with X.509: DIR/ca-cert.pem, server-cert.pem,\n"
"                         server-key.pem; the source must present a client certificate\n"
"                         signed by the CA\n"
"  --insecure             allow plaintext on a non-loopback address (anyone who can\n"
"                         connect can feed or read the migration)\n"
"  --quiet                no progress line\n"
"  --timeline FILE        at exit, write the guest's heartbeat samples as CSV\n"
"  --debug                trace state changes (also UMIG_DEBUG=1)\n"
"  -h, --help             this text\n";

int cmd_incoming(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "control", required_argument, NULL, 'c' },
		{ "console", required_argument, NULL, 'o' },
		{ "stats", required_argument, NULL, 's' },
		{ "backend", required_argument, NULL, 'b' },
		{ "transport", required_argument, NULL, 'T' },
		{ "rdma-poll", no_argument, NULL, 'r' },
		{ "rdma-plaintext-pages", no_argument, NULL, 'p' },
		{ "peer-timeout", required_argument, NULL, 'P' },
		{ "recover-timeout", required_argument, NULL, 'R' },
		{ "vcpu", required_argument, NULL, 'b' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "overcommit", no_argument, NULL, 'O' },
		{ "auth-key", required_argument, NULL, 'K' },
		{ "tls-creds", required_argument, NULL, 'C' },
		{ "insecure", no_argument, NULL, 'I' },
		{ "mem", required_argument, NULL, 'm' },
		{ "ram-backing", required_argument, NULL, 'M' },
		{ "placement", required_argument, NULL, 'L' },
		{ "timeline", required_argument, NULL, 't' },
		{ "debug", no_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct mig_dest_opts o = { 0 };
	struct serve_opts so = { 0 };
	const char *listen_at = NULL, *console = NULL;
	struct mig_dest *d = NULL;
	struct vm *vm = NULL;
	bool placement_given = false, backing_given = false;
	int opt, ret;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'l': listen_at = optarg; break;
		case 'c': so.control_path = optarg; break;
		case 'o': console = optarg; break;
		case 's': o.stats_path = optarg; break;
		case 'b': o.backend = optarg; break;
		case 'M':
			if (mem_backing_parse(optarg, &o.backing) < 0)
				return cli_usage_error("incoming", "--ram-backing: %s", err_msg(-EINVAL));
			backing_given = true;
			break;
		case 'L':
			if (strcmp(optarg, "copy") && strcmp(optarg, "continue"))
				return cli_usage_error("incoming", "--placement: '%s' is neither "
						       "copy nor continue", optarg);
			o.place_continue = !strcmp(optarg, "continue");
			placement_given = true;
			break;
		case 'P':
			if (migopt_ms(optarg, MIGOPT_PEER_TIMEOUT_RANGE, &o.peer_timeout_ms) < 0)
				return cli_usage_error("incoming", "--peer-timeout: %s", err_msg(-EINVAL));
			break;
		case 'R':
			if (migopt_ms(optarg, MIGOPT_RECOVER_TIMEOUT_RANGE, &o.recover_timeout_ms) < 0)
				return cli_usage_error("incoming", "--recover-timeout: %s", err_msg(-EINVAL));
			break;
		case 'T':
			if (xport_known(optarg) < 0)
				return cli_usage_error("incoming", "--transport: %s", err_msg(-ENOENT));
			o.transport = optarg;
			break;
		case 'r': o.rdma_poll = true; break;
		case 'p': o.rdma_plaintext_pages = true; break;
		case 'q': o.quiet = true; break;
		case 'O': o.overcommit = true; break;
		case 'K': o.auth_key = optarg; break;
		case 'C': o.tls_creds = optarg; break;
		case 'I': o.insecure = true; break;
		case 't': so.timeline_path = optarg; break;
		case 'm':
			if (parse_size(optarg, &o.expect_ram))
				return cli_usage_error("incoming", "--mem: '%s' is not a size", optarg);
			break;
		case 'd': log_debug_enabled = true; break;
		case 'h': fputs(incoming_help, stdout); return 0;
		default:
			return cli_usage_error("incoming", "unknown or incomplete option '%s'",
					       argv[optind - 1]);
		}
	}
	if (optind != argc)
		return cli_usage_error("incoming", "unexpected argument '%s'", argv[optind]);
	if (!listen_at)
		return cli_usage_error("incoming", "--listen HOST:PORT is required");
	if (placement_given && o.backing != MEM_MEMFD)
		return cli_usage_error("incoming", "--placement applies to --ram-backing memfd only");
	/* over RDMA, one-sided post-copy's READs land in place by default (zero-copy) */
	if (!backing_given && !placement_given && o.transport && !strcmp(o.transport, "rdma")) {
		o.backing = MEM_MEMFD;
		o.place_continue = true;
	}
	if (parse_hostport(listen_at, o.host, sizeof(o.host), &o.port))
		return cli_usage_error("incoming", "--listen: '%s' is not HOST:PORT", listen_at);
	o.console_fd = cli_open_console(console);
	if (o.console_fd < 0) {
		pr_err("%s", err_msg(o.console_fd));
		return EXIT_FAILURE_UMIG;
	}
	log_set_role("dest");
	/* served from the start: query-migrate, migrate-recover, migrate-resolve (docs/control.md) */
	if (cli_control_open(so.control_path, NULL, &so.ctl, &so.mig) < 0)
		return EXIT_FAILURE_UMIG;
	ret = mig_dest_listen(&d, &o);
	mig_ctl_set_incoming(so.mig, d);
	if (!ret)
		ret = mig_dest_run(d, &vm);
	if (ret < 0) {
		cli_control_close(so.ctl, so.mig);
		mig_dest_free(d);
		return EXIT_FAILURE_UMIG;
	}
	so.incoming = d;
	ret = cli_serve_vm(vm, &so);
	if (vm_get_status(vm) == VM_EXITED)
		mig_dest_guest_exited(d, ret);   /* a defined end, not a lost guest */
	if (mig_dest_pages_missing(d)) {
		/*
		 * Never free the migration here: closing userfaultfd would wake
		 * the blocked vCPU into zero-filled pages.  The guest stays
		 * stopped in the kernel until the process is gone.
		 */
		json_t *rec = mig_dest_query(d);

		json_object_set_new(rec, "status", json_string("lost"));
		mig_write_json(o.stats_path, rec);
		json_decref(rec);
		pr_err("incoming: the guest is stopped for good: %llu pages never arrived",
		       (unsigned long long)mig_dest_pages_absent(d));
		fflush(NULL);
		_exit(EXIT_FAILURE_UMIG);
	}
	/* the guest may exit before the last pages arrive: finish the record */
	if (mig_dest_finish(d, 60) < 0 && ret != EXIT_FAILURE_UMIG)
		pr_warn("incoming: %s", err_msg(-ETIMEDOUT));
	mig_dest_free(d);
	vm_destroy(vm);
	if (console)
		close(o.console_fd);
	return ret;
}
