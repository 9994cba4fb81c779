/*
 * cli-ctl.c - `umig ctl PATH COMMAND [ARGS]`: one control request by hand.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "umig/cli.h"
#include "umig/log.h"
#include "umig/util.h"


static const char ctl_help[] =
"usage: umig ctl [--raw] [--events SECS] SOCKET COMMAND ['{\"arg\": value}']\n"
"\n"
"Send one command to a umig control socket and print the reply.\n"
"Commands: query-status, query-stats, stop, cont, quit, subscribe-events,\n"
"migrate (with \"resume\": true, reconnect a paused migration elsewhere),\n"
"query-migrate, migrate-cancel, migrate-resolve, and at a destination\n"
"migrate-recover (docs/control.md).  migrate-resolve decides who owns a\n"
"guest whose handover outcome is unknown: fence the other copy first.\n"
"Exit status: 0 the command succeeded, 1 it returned an error,\n"
"2 usage error, 125 the socket could not be reached or did not answer.\n"
"\n"
"options:\n"
"  --raw       print the reply as received (one line of JSON)\n"
"  --events SECS  subscribe to events first, send COMMAND, then print the\n"
"              reply and every event (one JSON line each) for SECS seconds\n"
"              or until umig closes the socket, e.g.\n"
"              umig ctl --events 60 SOCK migrate '{\"to\": \"HOST:PORT\"}'\n"
"  -h, --help  this text\n";

static int ctl_build_request(const char *cmd, const char *args_text, char **out)
{
	json_t *req = json_pack("{s:s}", "execute", cmd);
	json_error_t jerr;

	if (args_text) {
		json_t *args = json_loads(args_text, 0, &jerr);

		if (!json_is_object(args)) {
			json_decref(args);
			json_decref(req);
			return err_set(-EINVAL, "arguments must be a JSON object: %s",
				       args ? "not an object" : jerr.text);
		}
		json_object_set_new(req, "arguments", args);
	}
	*out = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	return *out ? 0 : -ENOMEM;
}

/*
 * --events: every line the server sends, for secs (bounded) or until it
 * closes.  0 when the command's reply (the second reply line: the first
 * answers subscribe-events) says "return", 1 when it is an error.
 */
static int ctl_follow(int fd, double secs)
{
	uint64_t deadline = now_ns() + (uint64_t)(secs * 1e9);
	char buf[65536];
	size_t len = 0;
	int replies = 0, ret = EXIT_FAILURE_UMIG;

	while (now_ns() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int ms = (int)MIN((deadline - now_ns()) / 1000000 + 1, 1000ull);
		char *nl;
		ssize_t n;

		if (poll(&p, 1, ms) <= 0)
			continue;
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += n;
		buf[len] = 0;
		while ((nl = strchr(buf, '\n')) != NULL) {
			*nl = 0;
			puts(buf);
			fflush(stdout);
			if (!strstr(buf, "\"event\"") && ++replies == 2)
				ret = strstr(buf, "\"return\"") ? 0 : 1;
			len -= nl + 1 - buf;
			memmove(buf, nl + 1, len + 1);
		}
		if (len == sizeof(buf) - 1)
			len = 0;   /* a line longer than any umig sends: skip it */
	}
	return ret;
}

int cmd_ctl(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "raw", no_argument, NULL, 'r' },
		{ "events", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	char *req = NULL, *reply = NULL;
	bool raw = false;
	double follow = 0;
	char *end;
	json_t *j;
	int opt, fd, ret, wret;

	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(ctl_help, stdout);
			return 0;
		}
		if (opt == 'e') {
			follow = strtod(optarg, &end);
			if (*end || !(follow > 0 && follow <= 86400))
				return cli_usage_error("ctl", "--events: '%s' is not 0..86400 seconds",
						       optarg);
			continue;
		}
		if (opt != 'r')
			return cli_usage_error("ctl", "unknown option '%s'", argv[optind - 1]);
		raw = true;
	}
	if (argc - optind < 2 || argc - optind > 3)
		return cli_usage_error("ctl", "expected SOCKET COMMAND [ARGS]");
	ret = ctl_build_request(argv[optind + 1], argc - optind == 3 ? argv[optind + 2] : NULL, &req);
	if (ret < 0)
		return cli_usage_error("ctl", "%s", err_msg(ret));
	fd = cli_ctl_connect(argv[optind]);
	if (fd < 0) {
		pr_err("%s", err_msg(fd));
		free(req);
		return EXIT_FAILURE_UMIG;
	}
	/*
	 * A server that refuses the connection ("busy") writes its reply and
	 * closes, so our write may fail with EPIPE: its reply is still there
	 * to read, and says more than the EPIPE.
	 */
	if (follow) {
		static const char sub[] = "{\"execute\":\"subscribe-events\"}\n";

		wret = write_full(fd, sub, strlen(sub));
		if (!wret)
			wret = write_full(fd, req, strlen(req));
		if (!wret)
			wret = write_full(fd, "\n", 1);
		free(req);
		ret = wret < 0 ? EXIT_FAILURE_UMIG : ctl_follow(fd, follow);
		close(fd);
		return ret;
	}
	wret = write_full(fd, req, strlen(req));
	if (!wret)
		wret = write_full(fd, "\n", 1);
	ret = cli_ctl_read_reply(fd, &reply);
	if (ret < 0 && wret < 0)
		ret = err_set(wret, "cannot send the request: %s", strerror(-wret));
	close(fd);
	free(req);
	if (ret < 0) {
		pr_err("%s: %s", argv[optind], err_msg(ret));
		return EXIT_FAILURE_UMIG;
	}
	j = json_loads(reply, 0, NULL);
	if (raw || !j)
		puts(reply);
	else
		json_dumpf(j, stdout, JSON_INDENT(2)), putchar('\n');
	ret = json_object_get(j, "return") ? 0 : 1;
	if (ret && json_object_get(j, "error"))
		pr_err("%s", json_string_value(json_object_get(json_object_get(j, "error"), "desc")));
	json_decref(j);
	free(reply);
	return ret;
}
