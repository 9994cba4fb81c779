/*
 * cli-keygen.c - `umig keygen FILE`: a new pre-shared key for --auth-key.
 *
 * The key is 32 random bytes from GnuTLS's key generator, written as 64
 * hex digits to a new file of mode 0600 (an existing file is never
 * overwritten).  Copy it to the other host by a channel you trust; both
 * ends of a migration give the same file to --auth-key.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "umig/cli.h"
#include "umig/log.h"
#include "umig/util.h"
#include "umig/xsec.h"

static const char keygen_help[] =
"usage: umig keygen FILE\n"
"\n"
"Write a new random 256-bit pre-shared key to FILE (created with mode\n"
"0600; an existing FILE is never overwritten).  Give the same file to\n"
"both ends of a migration:\n"
"  umig incoming --listen HOST:PORT --auth-key FILE\n"
"  umig migrate --control PATH --to HOST:PORT --auth-key FILE\n"
"Every connection of the migration then runs TLS 1.3 with this key:\n"
"only a peer that holds it can send or receive the guest.  umig refuses\n"
"a key file that group or others may read.  Copy it between hosts by a\n"
"channel you trust (scp, a secrets manager); anyone who has it can\n"
"receive or feed a migration.\n"
"\n"
"options:\n"
"  -h, --help   this text\n";

int cmd_keygen(int argc, char **argv)
{
	int ret;

	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		fputs(keygen_help, stdout);
		return 0;
	}
	if (argc != 2 || argv[1][0] == '-')
		return cli_usage_error("keygen", "one argument: the key FILE to create");
	ret = xsec_keygen(argv[1]);
	if (ret < 0) {
		pr_err("keygen: %s", err_msg(ret));
		return EXIT_FAILURE_UMIG;
	}
	printf("umig: wrote a new key to %s (mode 0600); give it to --auth-key on both hosts\n",
	       argv[1]);
	return 0;
}
