/*
 * control.c - the control socket server; see control.h and docs/control.md.
 *
 * Requests are parsed with jansson; a line longer than CTL_LINE_MAX, bad
 * JSON, a missing "execute" or an unknown command each get an error reply
 * and leave the guest untouched.
 *
 * Every client is untrusted in how it behaves, even though only the owner
 * can connect: one thread serves them all, so nothing a client does may
 * make that thread wait.  Client sockets are non-blocking; replies are
 * queued per client and written as the client reads them; a client whose
 * unread replies pass CTL_OUT_MAX, or that does nothing for CTL_IDLE_NS,
 * is dropped; one request line is at most CTL_LINE_MAX; one round runs at
 * most CTL_BURST requests of one client, so a pipelining client cannot
 * starve the others; a full client table first drops the client idle the
 * longest (if idle for CTL_EVICT_NS) and otherwise answers "busy".
 *
 * Events (QMP's convention): a client that sends "subscribe-events" then
 * also receives one line per event, {"event": NAME, "data": {...},
 * "timestamp": {"seconds": S, "microseconds": US}}, between its replies.
 * Any thread may post one (control_event); the control thread hands it to
 * every subscriber, under the same output bound.  A subscriber is exempt
 * from the idle timeout: waiting is what it is for.
 */
#include <errno.h>
#include <libgen.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "umig/control.h"
#include "umig/log.h"
#include "umig/util.h"
#include "umig/vm.h"

#define CTL_MAX_CLIENTS  16
#define CTL_MAX_COMMANDS 32
#define CTL_LINE_MAX     (64 * 1024)         /* one request, with its \n */
#define CTL_OUT_MAX      (4u << 20)          /* unread reply bytes per client */
#define CTL_BURST        16                  /* requests per client per round */
#define CTL_ACCEPT_BURST 64                  /* connections accepted per round */
#define CTL_IDLE_NS      (60ull * 1000000000) /* no byte either way: dropped */
#define CTL_EVICT_NS     (2ull * 1000000000) /* idle this long: may give way */
#define CTL_EVENTS_MAX   (1u << 20)          /* posted, not yet handed out */

struct ctl_client {
	int fd;              /* -1: a free slot */
	char *in;            /* CTL_LINE_MAX bytes of request text */
	size_t in_off, in_len;  /* in[in_off..in_len) not yet run */
	char *out;           /* queued reply bytes, out[out_off..out_len) unsent */
	size_t out_off, out_len, out_cap;
	uint64_t active_ns;  /* when a byte last moved either way */
	bool eof;            /* the client shut down its side: finish, then close */
	bool events;         /* subscribed: events are queued to it */
	bool closing;        /* close once the queued replies are sent */
};

struct ctl_command {
	const char *name;
	control_fn fn;
	void *opaque;
};

struct control {
	char path[108];
	int listen_fd;
	int quit_efd;
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;   /* commands, vm */
	struct vm *vm;
	bool quit_requested;
	struct ctl_client clients[CTL_MAX_CLIENTS];
	struct ctl_command cmds[CTL_MAX_COMMANDS];
	unsigned ncmds;
	struct ctl_client *current;  /* the client whose request runs (control thread) */
	int ev_efd;                  /* posted events wake the control thread */
	pthread_mutex_t ev_lock;     /* ev_buf; never held while calling out */
	char *ev_buf;
	size_t ev_len;
};

/* --- built-in commands ------------------------------------------------------ */

/* A destination serves its socket before the guest has arrived. */
static int no_guest_yet(void)
{
	return err_set(-EAGAIN, "no guest here yet: it is still arriving by migration "
		       "(query-migrate shows how far)");
}

static int cmd_query_status(struct control *c, json_t *args, json_t **res, void *o)
{
	struct vm *vm = control_vm(c);
	enum vm_status s;

	if (!vm) {
		*res = json_pack("{s:s}", "status", "incoming");
		return 0;
	}
	s = vm_get_status(vm);

	*res = json_pack("{s:s, s:I, s:I, s:s}", "status", vm_status_name(s),
			 "ram_bytes", (json_int_t)vm->mem.size,
			 "guest_ns", (json_int_t)clock_guest_ns(&vm->bus),
			 "vcpu_backend", vcpu_backend_name(vm->vcpu));
	if (s == VM_EXITED)
		json_object_set_new(*res, "exit_code", json_integer(vm->exit_code));
	if (s == VM_FAILED)
		json_object_set_new(*res, "fault", json_string(vm->fault));
	return 0;
}

static int cmd_stop(struct control *c, json_t *args, json_t **res, void *o)
{
	struct vm *vm = control_vm(c);
	int ret = vm ? vm_pause(vm) : no_guest_yet();

	if (ret < 0)
		return ret;
	*res = json_pack("{s:s}", "status", vm_status_name(vm_get_status(vm)));
	return 0;
}

static int cmd_cont(struct control *c, json_t *args, json_t **res, void *o)
{
	struct vm *vm = control_vm(c);
	int ret;

	if (!vm)
		return no_guest_yet();
	if (vm_get_status(vm) == VM_RUNNING)
		return err_set(-EINVAL, "the guest is already running");
	ret = vm_resume(vm);
	if (ret < 0)
		return ret;
	*res = json_pack("{s:s}", "status", vm_status_name(vm_get_status(vm)));
	return 0;
}

static int cmd_quit(struct control *c, json_t *args, json_t **res, void *o)
{
	if (!control_vm(c))
		return err_set(-EAGAIN, "no guest here yet; to stop waiting for a migration, "
			       "stop umig with SIGTERM");
	pthread_mutex_lock(&c->lock);
	c->quit_requested = true;
	pthread_mutex_unlock(&c->lock);
	vm_notify(control_vm(c));
	return 0;
}

static int cmd_subscribe_events(struct control *c, json_t *args, json_t **res, void *o)
{
	if (!c->current)
		return err_set(-EINVAL, "events need a connected client");
	c->current->events = true;
	*res = json_pack("{s:b}", "subscribed", 1);
	return 0;
}

static int cmd_query_stats(struct control *c, json_t *args, json_t **res, void *o)
{
	struct vm *vm = control_vm(c);
	json_int_t max = 256, since = 0;
	struct hb_sample small[256], *samples;
	struct hb_stats hb;
	struct cpu_state cs;
	json_t *arr;
	size_t n;

	if (!vm)
		return no_guest_yet();
	if (args && json_unpack(args, "{s?I, s?I}", "max_samples", &max, "since_ns", &since))
		return err_set(-EINVAL, "arguments: max_samples and since_ns must be integers");
	if (max < 0 || max > 65536 || since < 0)
		return err_set(-EINVAL, "arguments: max_samples must be 0..65536, since_ns >= 0");
	/*
	 * Most answers are short (the default is 256): a large buffer is
	 * allocated only when the samples fill the small one, so a request
	 * for 65 536 samples of a young guest does not cost 1 MiB.
	 */
	samples = small;
	n = heartbeat_samples(&vm->bus, since, small, MIN((size_t)max, ARRAY_SIZE(small)));
	if (n == ARRAY_SIZE(small) && (size_t)max > n) {
		samples = calloc(max, sizeof(*samples));
		if (!samples)
			return -ENOMEM;
		n = heartbeat_samples(&vm->bus, since, samples, max);
	}
	arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, json_pack("[I, I]", (json_int_t)samples[i].t_ns,
						     (json_int_t)samples[i].beats));
	if (samples != small)
		free(samples);
	heartbeat_stats(&vm->bus, &hb);
	*res = json_pack("{s:I, s:I, s:I, s:I, s:o}",
			 "heartbeats", (json_int_t)hb.beats,
			 "last_beat_ns", (json_int_t)hb.last_beat_ns,
			 "console_bytes", (json_int_t)serial_bytes(&vm->bus),
			 "guest_ns", (json_int_t)clock_guest_ns(&vm->bus),
			 "samples", arr);
	/* registers are only consistent while the vCPU is stopped */
	if (!vm_peek_cpu(vm, &cs)) {
		char rip[32];

		snprintf(rip, sizeof(rip), "0x%llx", (unsigned long long)cs.rip);
		json_object_set_new(*res, "vcpu", json_pack("{s:s, s:s, s:s}",
			"state", vm_status_name(vm_get_status(vm)), "rip", rip,
			"backend", vcpu_backend_name(vm->vcpu)));
	} else {
		json_object_set_new(*res, "vcpu", json_pack("{s:s, s:s}",
			"state", vm_status_name(vm_get_status(vm)),
			"backend", vcpu_backend_name(vm->vcpu)));
	}
	return 0;
}

/* --- requests ------------------------------------------------------------------ */

/*
 * Replace each byte of s that is not part of valid UTF-8 with '?'.  A desc
 * may quote the client's bytes (the parser's "near '...'", a truncated
 * command name), and jansson refuses a string that is not UTF-8: the reply
 * would be lost.  Overlong forms, surrogates and code points above
 * U+10FFFF are invalid too, as jansson has them.  Found by fuzz-control.
 */
static void ctl_utf8_clean(char *s)
{
	static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	unsigned char *p = (unsigned char *)s;

	while (*p) {
		int n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 :
			(*p & 0xf8) == 0xf0 ? 4 : 0;
		uint32_t cp = n == 1 ? *p : n ? *p & (0x7f >> n) : 0;
		bool ok = n > 0;

		for (int i = 1; ok && i < n; i++) {
			ok = (p[i] & 0xc0) == 0x80;
			cp = cp << 6 | (p[i] & 0x3f);
		}
		ok = ok && cp >= min[n] && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff);
		if (!ok) {
			*p++ = '?';
			continue;
		}
		p += n;
	}
}

static json_t *ctl_error(const char *cls, const char *desc, json_t *id)
{
	char clean[512];
	json_t *r;

	snprintf(clean, sizeof(clean), "%s", desc);
	ctl_utf8_clean(clean);
	r = json_pack("{s:{s:s, s:s}}", "error", "class", cls, "desc", clean);
	if (r && id)
		json_object_set(r, "id", id);
	return r;
}

static const struct ctl_command *ctl_find(struct control *c, const char *name)
{
	for (unsigned i = 0; i < c->ncmds; i++)
		if (!strcmp(c->cmds[i].name, name))
			return &c->cmds[i];
	return NULL;
}

static json_t *ctl_execute(struct control *c, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *id, *args, *result = NULL, *reply;
	const struct ctl_command *cmd;
	const char *name;
	char desc[300];
	int ret;

	if (!req) {
		snprintf(desc, sizeof(desc), "malformed JSON: %s", jerr.text);
		return ctl_error("parse-error", desc, NULL);
	}
	id = json_object_get(req, "id");
	name = json_string_value(json_object_get(req, "execute"));
	args = json_object_get(req, "arguments");
	if (!json_is_object(req) || !name) {
		reply = ctl_error("invalid-request", "a request is an object with a string \"execute\"", id);
	} else if (args && !json_is_object(args)) {
		reply = ctl_error("invalid-request", "\"arguments\" must be an object", id);
	} else {
		pthread_mutex_lock(&c->lock);
		cmd = ctl_find(c, name);
		pthread_mutex_unlock(&c->lock);
		if (!cmd) {
			snprintf(desc, sizeof(desc), "unknown command '%.200s'", name);
			reply = ctl_error("command-not-found", desc, id);
		} else {
			err_clear();
			pr_debug("control: %s", name);
			ret = cmd->fn(c, args, &result, cmd->opaque);
			if (ret < 0) {
				reply = ctl_error("command-failed", err_msg(ret), id);
			} else {
				reply = json_pack("{s:o}", "return", result ? result : json_object());
				if (id)
					json_object_set(reply, "id", id);
			}
		}
	}
	json_decref(req);
	return reply;
}

char *control_execute_line(struct control *c, const char *line, size_t len)
{
	json_t *reply = ctl_execute(c, line, len);
	char *s = reply ? json_dumps(reply, JSON_COMPACT) : NULL;

	json_decref(reply);
	return s;
}

/* --- clients ------------------------------------------------------------------- */

#define CTL_MSG_BUSY "{\"error\":{\"class\":\"busy\",\"desc\":\"too many clients\"}}\n"
#define CTL_MSG_EVICTED "{\"error\":{\"class\":\"timeout\",\"desc\":" \
	"\"closed: idle while the client table was full\"}}\n"
#define CTL_MSG_IDLE "{\"error\":{\"class\":\"timeout\",\"desc\":\"closed: idle for 60 s\"}}\n"
#define CTL_MSG_DENIED "{\"error\":{\"class\":\"permission\",\"desc\":" \
	"\"only the user running umig and root may use its control socket\"}}\n"

/* A one-line goodbye that never waits: whatever the kernel takes now. */
static void ctl_refuse(int fd, const char *msg)
{
	if (send(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		pr_debug("control: could not tell a client why it is closed");
	close(fd);
}

static void ctl_client_close(struct ctl_client *cl)
{
	close(cl->fd);
	free(cl->in);
	free(cl->out);
	*cl = (struct ctl_client){ .fd = -1 };
}

static bool ctl_has_line(const struct ctl_client *cl)
{
	return memchr(cl->in + cl->in_off, '\n', cl->in_len - cl->in_off) != NULL;
}

/*
 * Queue n bytes for the client.  False when that would put more than
 * CTL_OUT_MAX bytes of replies the client has not read: the caller then
 * drops the client.  The buffer is compacted only once half of it has
 * been sent, so queueing stays O(n) amortised.
 */
static bool ctl_queue(struct ctl_client *cl, const char *s, size_t n, bool bounded)
{
	size_t unsent = cl->out_len - cl->out_off;

	if (bounded && unsent + n > CTL_OUT_MAX)
		return false;
	if (cl->out_off && cl->out_off >= cl->out_cap / 2) {
		memmove(cl->out, cl->out + cl->out_off, unsent);
		cl->out_len = unsent;
		cl->out_off = 0;
	}
	if (cl->out_len + n > cl->out_cap) {
		size_t cap = MAX(MAX(cl->out_cap * 2, cl->out_len + n), (size_t)4096);
		char *nb = realloc(cl->out, cap);

		if (!nb)
			return false;
		cl->out = nb;
		cl->out_cap = cap;
	}
	memcpy(cl->out + cl->out_len, s, n);
	cl->out_len += n;
	return true;
}

/* Send what the kernel takes now; false when the connection is broken. */
static bool ctl_flush(struct ctl_client *cl)
{
	while (cl->out_off < cl->out_len) {
		ssize_t n = send(cl->fd, cl->out + cl->out_off, cl->out_len - cl->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK;
		}
		cl->out_off += n;
		cl->active_ns = now_ns();
	}
	cl->out_off = cl->out_len = 0;
	return true;
}

/* Tell an existing client why it goes, without waiting, and close it. */
static void ctl_client_drop(struct ctl_client *cl, const char *msg)
{
	if (msg)
		ctl_queue(cl, msg, strlen(msg), false);
	ctl_flush(cl);
	ctl_client_close(cl);
}

/* Queue one reply line (s is freed); false when the client must be dropped. */
static bool ctl_reply(struct ctl_client *cl, char *s)
{
	bool ok;

	if (!s) {
		pr_warn("control: cannot encode a reply; closing the client");
		return false;
	}
	ok = ctl_queue(cl, s, strlen(s), true) && ctl_queue(cl, "\n", 1, true);
	free(s);
	if (!ok)
		pr_warn("control: dropping a client that does not read its replies "
			"(more than %u MiB unread)", CTL_OUT_MAX >> 20);
	return ok;
}

/* Read what is there; false when the connection is broken. */
static bool ctl_client_read(struct ctl_client *cl)
{
	ssize_t n;

	if (cl->in_off) {
		memmove(cl->in, cl->in + cl->in_off, cl->in_len - cl->in_off);
		cl->in_len -= cl->in_off;
		cl->in_off = 0;
	}
	n = recv(cl->fd, cl->in + cl->in_len, CTL_LINE_MAX - cl->in_len, MSG_DONTWAIT);
	if (n > 0) {
		cl->in_len += n;
		cl->active_ns = now_ns();
		return true;
	}
	if (n == 0) {
		cl->eof = true;
		return true;
	}
	return errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK;
}

/*
 * Run at most CTL_BURST of the client's complete requests, in order; the
 * rest wait for the next round so that one client cannot hold the thread.
 * False when the client must be dropped.
 */
static bool ctl_client_process(struct control *c, struct ctl_client *cl)
{
	for (int done = 0; done < CTL_BURST;) {
		char *line = cl->in + cl->in_off;
		char *nl = memchr(line, '\n', cl->in_len - cl->in_off);

		if (!nl)
			break;
		cl->in_off += nl + 1 - line;
		if (nl == line)
			continue;   /* empty lines get no reply */
		c->current = cl;
		if (!ctl_reply(cl, control_execute_line(c, line, nl - line))) {
			c->current = NULL;
			return false;
		}
		c->current = NULL;
		done++;
	}
	if (cl->in_off == 0 && cl->in_len == CTL_LINE_MAX) {
		cl->closing = true;
		return ctl_reply(cl, strdup("{\"error\":{\"class\":\"invalid-request\","
					    "\"desc\":\"request line longer than 64 KiB\"}}"));
	}
	return true;
}

/* One round for one client: false when it must be closed now. */
static bool ctl_client_serve(struct control *c, struct ctl_client *cl, short revents,
			     uint64_t now)
{
	if ((revents & (POLLERR | POLLHUP)) && !(revents & POLLIN))
		return false;
	if ((revents & POLLIN) && !ctl_client_read(cl))
		return false;
	if (!cl->closing && !ctl_client_process(c, cl))
		return false;
	if (!ctl_flush(cl))
		return false;
	if (cl->out_len == 0 && (cl->closing || (cl->eof && !ctl_has_line(cl))))
		return false;
	/* active_ns may be later than now: it moves while this round runs */
	if (!cl->events && cl->active_ns + CTL_IDLE_NS < now && !ctl_has_line(cl)) {
		pr_debug("control: closing a client idle for %llu s",
			 (unsigned long long)(CTL_IDLE_NS / 1000000000));
		ctl_queue(cl, CTL_MSG_IDLE, strlen(CTL_MSG_IDLE), false);
		ctl_flush(cl);
		return false;
	}
	return true;
}

/*
 * Admit one new connection.  Only the user running umig and root may use
 * the socket (its mode already says so; the peer's credentials are checked
 * as well, in case the mode was changed).  With every slot taken, the
 * client idle the longest gives way if it has been idle CTL_EVICT_NS;
 * otherwise the newcomer is told "busy".
 */
static void ctl_admit(struct control *c, int fd)
{
	struct ucred cr;
	socklen_t crlen = sizeof(cr);
	struct ctl_client *slot = NULL, *oldest = NULL;
	uint64_t now = now_ns();

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) < 0 ||
	    (cr.uid != geteuid() && cr.uid != 0)) {
		pr_debug("control: refused a client of another user");
		ctl_refuse(fd, CTL_MSG_DENIED);
		return;
	}
	for (int i = 0; i < CTL_MAX_CLIENTS && !slot; i++) {
		struct ctl_client *cl = &c->clients[i];

		if (cl->fd < 0)
			slot = cl;
		else if (!oldest || cl->active_ns < oldest->active_ns)
			oldest = cl;
	}
	if (!slot && oldest->active_ns + CTL_EVICT_NS <= now) {
		pr_debug("control: dropping the client idle longest to admit a new one");
		ctl_client_drop(oldest, CTL_MSG_EVICTED);
		slot = oldest;
	}
	if (!slot || !(slot->in = malloc(CTL_LINE_MAX))) {
		ctl_refuse(fd, CTL_MSG_BUSY);
		return;
	}
	slot->fd = fd;
	slot->active_ns = now;
}

static void ctl_accept(struct control *c)
{
	for (int i = 0; i < CTL_ACCEPT_BURST; i++) {
		int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0)
			return;
		ctl_admit(c, fd);
	}
}

/* Until the first client's idle deadline; 0 when a request is waiting. */
static int ctl_poll_timeout(struct control *c, uint64_t now)
{
	uint64_t next = UINT64_MAX;

	for (int i = 0; i < CTL_MAX_CLIENTS; i++) {
		struct ctl_client *cl = &c->clients[i];

		if (cl->fd < 0)
			continue;
		if (!cl->closing && ctl_has_line(cl))
			return 0;
		if (!cl->events)
			next = MIN(next, cl->active_ns + CTL_IDLE_NS);
	}
	if (next == UINT64_MAX)
		return -1;
	return next <= now ? 0 : (int)MIN((next - now) / 1000000 + 1, 60000ull);
}

/* Hand the posted events to every subscriber; one that cannot take them goes. */
static void ctl_deliver_events(struct control *c)
{
	uint64_t v;
	char *buf;
	size_t len;

	if (read(c->ev_efd, &v, sizeof(v)) != sizeof(v))
		return;
	pthread_mutex_lock(&c->ev_lock);
	buf = c->ev_buf;
	len = c->ev_len;
	c->ev_buf = NULL;
	c->ev_len = 0;
	pthread_mutex_unlock(&c->ev_lock);
	for (int i = 0; i < CTL_MAX_CLIENTS && buf; i++) {
		struct ctl_client *cl = &c->clients[i];

		if (cl->fd >= 0 && cl->events && !cl->closing &&
		    (!ctl_queue(cl, buf, len, true) || !ctl_flush(cl)))
			ctl_client_drop(cl, NULL);
	}
	free(buf);
}

void control_event(struct control *c, const char *name, json_t *data)
{
	struct timespec ts;
	json_t *ev;
	char *line;
	uint64_t one = 1;
	size_t n;

	if (!c || c->ev_efd < 0) {
		json_decref(data);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	ev = json_pack("{s:s, s:o, s:{s:I, s:I}}", "event", name, "data", data ? data : json_object(),
		       "timestamp", "seconds", (json_int_t)ts.tv_sec,
		       "microseconds", (json_int_t)(ts.tv_nsec / 1000));
	line = ev ? json_dumps(ev, JSON_COMPACT) : NULL;
	json_decref(ev);
	if (!line)
		return;
	n = strlen(line);
	pthread_mutex_lock(&c->ev_lock);
	/* bounded: a stuck control thread loses events, never memory */
	if (c->ev_len + n + 1 <= CTL_EVENTS_MAX) {
		char *b = realloc(c->ev_buf, c->ev_len + n + 1);

		if (b) {
			memcpy(b + c->ev_len, line, n);
			b[c->ev_len + n] = '\n';
			c->ev_buf = b;
			c->ev_len += n + 1;
		}
	}
	pthread_mutex_unlock(&c->ev_lock);
	free(line);
	if (write(c->ev_efd, &one, sizeof(one)) != sizeof(one))
		pr_debug("control: cannot wake the control thread for an event");
}

static void *ctl_thread(void *arg)
{
	struct control *c = arg;

	for (;;) {
		struct pollfd pfd[CTL_MAX_CLIENTS + 3];
		int map[CTL_MAX_CLIENTS + 3];
		int n = 0, timeout = ctl_poll_timeout(c, now_ns());
		uint64_t now;

		pfd[n++] = (struct pollfd){ .fd = c->quit_efd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = c->listen_fd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = c->ev_efd, .events = POLLIN };
		for (int i = 0; i < CTL_MAX_CLIENTS; i++) {
			struct ctl_client *cl = &c->clients[i];
			short ev = 0;

			if (cl->fd < 0)
				continue;
			if (!cl->eof && !cl->closing && !ctl_has_line(cl))
				ev |= POLLIN;
			if (cl->out_len > cl->out_off)
				ev |= POLLOUT;
			map[n] = i;
			pfd[n++] = (struct pollfd){ .fd = cl->fd, .events = ev };
		}
		if (poll(pfd, n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			pr_err("control: poll failed: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break;
		now = now_ns();
		if (pfd[2].revents & POLLIN)
			ctl_deliver_events(c);
		for (int i = 3; i < n; i++) {
			struct ctl_client *cl = &c->clients[map[i]];

			if (cl->fd >= 0 && !ctl_client_serve(c, cl, pfd[i].revents, now))
				ctl_client_close(cl);
		}
		if (pfd[1].revents & POLLIN)
			ctl_accept(c);
	}
	return NULL;
}

/* --- the socket ------------------------------------------------------------------ */

/*
 * The directory must not let other users remove or replace the socket
 * (and so pose as this umig to its clients): refuse one that a group or
 * everyone may write to, unless it has the sticky bit, as /tmp does.
 */
static int ctl_check_dir(const char *path)
{
	char buf[108];
	const char *dir;
	struct stat st;

	snprintf(buf, sizeof(buf), "%s", path);
	dir = dirname(buf);
	if (stat(dir, &st) < 0)
		return err_set(-errno, "control socket directory '%s': %s", dir, strerror(errno));
	if ((st.st_mode & (S_IWOTH | S_IWGRP)) && !(st.st_mode & S_ISVTX))
		return err_set(-EPERM, "control socket directory '%s' is writable by %s and has no "
			       "sticky bit, so another user could replace the socket: use a private "
			       "directory (mode 0700) or one with the sticky bit",
			       dir, st.st_mode & S_IWOTH ? "every user" : "its group");
	return 0;
}

/* Replace a stale socket left by a crashed umig; never a live one, a file or another user's. */
static int ctl_remove_stale(const char *path, const struct sockaddr_un *sa)
{
	struct stat st;
	int probe;

	if (lstat(path, &st) < 0)
		return 0;
	if (!S_ISSOCK(st.st_mode))
		return err_set(-EEXIST, "control path '%s' exists and is not a socket", path);
	if (st.st_uid != geteuid())
		return err_set(-EPERM, "control socket '%s' belongs to uid %u; not replacing it",
			       path, (unsigned)st.st_uid);
	probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
		close(probe);
		return err_set(-EADDRINUSE, "control socket '%s' is in use by a running umig", path);
	}
	if (probe >= 0)
		close(probe);
	unlink(path);
	return 0;
}

static int ctl_listen(struct control *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX }, bsa;
	bool staged;
	mode_t old;
	int ret;

	if (strlen(path) >= sizeof(sa.sun_path))
		return err_set(-ENAMETOOLONG, "control socket path '%s' is too long (max %zu)",
			       path, sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	/*
	 * Bound as PATH.new and renamed once it listens, so that the path
	 * appears only when it accepts connections: a script that waits for
	 * the file and connects at once never sees ECONNREFUSED.  (A path
	 * too long for the suffix is bound directly.)
	 */
	bsa = sa;
	staged = snprintf(bsa.sun_path, sizeof(bsa.sun_path), "%s.new", path) <
		 (int)sizeof(bsa.sun_path);
	if (!staged)
		bsa = sa;
	ret = ctl_check_dir(path);
	if (!ret)
		ret = ctl_remove_stale(path, &sa);
	if (!ret && staged)
		ret = ctl_remove_stale(bsa.sun_path, &bsa);
	if (ret < 0)
		return ret;
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->listen_fd < 0)
		return -errno;
	/*
	 * Created 0600 from the start: connecting needs write permission, so
	 * only this user (and root) can.  umask is process-wide; this runs
	 * before the vCPU and migration threads exist, and the only other
	 * thread (signals) creates no files.
	 */
	old = umask(0177);
	ret = bind(c->listen_fd, (struct sockaddr *)&bsa, sizeof(bsa));
	umask(old);
	if (ret < 0)
		return err_set(-errno, "cannot listen on control socket '%s': %s", path,
			       strerror(errno));
	if (listen(c->listen_fd, 32) < 0 || (staged && rename(bsa.sun_path, path) < 0)) {
		ret = err_set(-errno, "cannot listen on control socket '%s': %s", path,
			      strerror(errno));
		unlink(bsa.sun_path);
		return ret;
	}
	strcpy(c->path, path);
	return 0;
}

int control_create(struct control **out, struct vm *vm)
{
	struct control *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->vm = vm;
	c->listen_fd = -1;
	c->quit_efd = -1;
	c->ev_efd = -1;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->ev_lock, NULL);
	for (int i = 0; i < CTL_MAX_CLIENTS; i++)
		c->clients[i].fd = -1;
	control_register(c, "query-status", cmd_query_status, NULL);
	control_register(c, "query-stats", cmd_query_stats, NULL);
	control_register(c, "stop", cmd_stop, NULL);
	control_register(c, "cont", cmd_cont, NULL);
	control_register(c, "quit", cmd_quit, NULL);
	control_register(c, "subscribe-events", cmd_subscribe_events, NULL);
	*out = c;
	return 0;
}

int control_start(struct control **out, const char *path, struct vm *vm)
{
	struct control *c;
	int ret = control_create(&c, vm);

	if (ret < 0)
		return ret;
	c->quit_efd = eventfd(0, EFD_CLOEXEC);
	c->ev_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ret = c->quit_efd < 0 || c->ev_efd < 0 ? -errno : ctl_listen(c, path);
	if (!ret)
		ret = -pthread_create(&c->thread, NULL, ctl_thread, c);
	if (ret < 0) {
		control_stop(c);
		return ret;
	}
	c->thread_started = true;
	*out = c;
	return 0;
}

int control_register(struct control *c, const char *name, control_fn fn, void *opaque)
{
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	if (ctl_find(c, name))
		ret = err_set(-EEXIST, "control command '%s' registered twice", name);
	else if (c->ncmds == CTL_MAX_COMMANDS)
		ret = err_set(-ENOSPC, "too many control commands");
	else
		c->cmds[c->ncmds++] = (struct ctl_command){ name, fn, opaque };
	pthread_mutex_unlock(&c->lock);
	return ret;
}

void control_stop(struct control *c)
{
	uint64_t one = 1;

	if (!c)
		return;
	if (c->thread_started) {
		if (write(c->quit_efd, &one, sizeof(one)) != sizeof(one))
			pr_warn("control: cannot signal the control thread");
		pthread_join(c->thread, NULL);
	}
	/* the last replies (quit's) go out if the client's socket takes them now */
	for (int i = 0; i < CTL_MAX_CLIENTS; i++)
		if (c->clients[i].fd >= 0)
			ctl_client_drop(&c->clients[i], NULL);
	if (c->listen_fd >= 0) {
		close(c->listen_fd);
		if (c->path[0])
			unlink(c->path);
	}
	if (c->quit_efd >= 0)
		close(c->quit_efd);
	if (c->ev_efd >= 0)
		close(c->ev_efd);
	free(c->ev_buf);
	pthread_mutex_destroy(&c->ev_lock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

bool control_quit_requested(struct control *c)
{
	bool q;

	if (!c)
		return false;
	pthread_mutex_lock(&c->lock);
	q = c->quit_requested;
	pthread_mutex_unlock(&c->lock);
	return q;
}

struct vm *control_vm(struct control *c)
{
	struct vm *vm;

	pthread_mutex_lock(&c->lock);
	vm = c->vm;
	pthread_mutex_unlock(&c->lock);
	return vm;
}

void control_set_vm(struct control *c, struct vm *vm)
{
	pthread_mutex_lock(&c->lock);
	c->vm = vm;
	pthread_mutex_unlock(&c->lock);
}
