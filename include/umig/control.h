/*
 * control.h - the JSON control socket (docs/control.md).
 *
 * A Unix stream socket; each request is one line of JSON,
 *     {"execute": "query-status", "arguments": {...}, "id": any}
 * and each reply is one line:
 *     {"return": {...}, "id": ...}   or
 *     {"error": {"class": "...", "desc": "..."}, "id": ...}
 * One thread serves every client with poll(); a handler runs on that
 * thread.  Built-in commands manage the VM; other subsystems (migration)
 * add theirs with control_register().  The socket is created mode 0600;
 * clients that idle, do not read or flood are dropped (docs/control.md).
 */
#ifndef UMIG_CONTROL_H
#define UMIG_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct control;
struct vm;

/*
 * A command handler.  On success return 0 and set *result to a new
 * reference (an object; NULL means {}).  On failure return -errno and
 * describe the problem with err_set(): it becomes the error's "desc".
 */
typedef int (*control_fn)(struct control *c, json_t *args, json_t **result,
			  void *opaque);

/* Listen on path (a stale socket file is replaced).  Owner: control_stop(). */
int control_start(struct control **out, const char *path, struct vm *vm);
/*
 * The same commands without a socket or a thread, for tests and the fuzz
 * harness.  Owner: control_stop().
 */
int control_create(struct control **out, struct vm *vm);
/*
 * Parse one request line (len bytes, without the '\n'; need not be
 * NUL-terminated), run its command and return the reply line as a new
 * string (no '\n'; caller frees), or NULL if it cannot be encoded.
 */
char *control_execute_line(struct control *c, const char *line, size_t len);
int control_register(struct control *c, const char *name, control_fn fn, void *opaque);
/* Stops the thread, closes every client and removes the socket file. */
void control_stop(struct control *c);
/*
 * Post an event to every client subscribed with "subscribe-events" (any
 * thread; never blocks; takes data).  QMP's shape: docs/control.md.
 */
void control_event(struct control *c, const char *name, json_t *data);
/* True once a client has sent "quit". */
bool control_quit_requested(struct control *c);
struct vm *control_vm(struct control *c);
/* Replace the VM the built-in commands act on (e.g. after migration). */
void control_set_vm(struct control *c, struct vm *vm);

#endif
