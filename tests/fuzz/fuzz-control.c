/*
 * fuzz-control.c - libFuzzer harness for the control socket's request
 * parser and dispatch (control_execute_line() in control.c).
 *
 * The input is what a client sends: it is cut into lines at '\n' as the
 * server does, and every non-empty line is executed against the built-in
 * commands of a control without a socket, on a created VM that is never
 * started, so `stop`, `cont` and `quit` have no effect beyond their
 * replies.  Every line must get exactly one reply: one line of JSON (no
 * '\n' inside) that is an object with "return" or "error"; anything else
 * aborts, and libFuzzer reports it as a crash.
 * Seeds: tests/fuzz/corpus/control/, requests from docs/control.md.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz-vm.h"
#include "umig/control.h"

/*
 * jansson's encoder writes valid JSON and keeps the keys in the order they
 * were added, so a reply is well formed when it is one line that starts
 * with the member the protocol puts first.
 */
#define FUZZ_STARTS(s, lit) (strncmp((s), lit, sizeof(lit) - 1) == 0)

static void fuzz_check_reply(const char *reply)
{
	if (!reply || strchr(reply, '\n') ||
	    !(FUZZ_STARTS(reply, "{\"return\":") || FUZZ_STARTS(reply, "{\"error\":{\"class\":")))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct control *c;
	const char *p = (const char *)data, *end = p + size;

	fuzz_trace(data, size);

	if (!c && control_create(&c, fuzz_vm()) < 0)
		abort();
	while (p < end) {
		const char *nl = memchr(p, '\n', end - p);
		size_t len = (nl ? nl : end) - p;

		if (len) {
			char *reply = control_execute_line(c, p, len);

			fuzz_check_reply(reply);
			free(reply);
		}
		p += len + 1;
	}
	return 0;
}
