/*
 * control.c - the control socket server; see control.h and docs/control.md.
 *
 * Requests are parsed with jansson; a line longer than CTL_LINE_MAX, bad
 * JSON, a missing "execute" or an unknown command each get an error reply
 * and leave the guest untouched.  The socket is local and its clients are
 * people and scripts, so replies are written blocking with a send timeout.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "umig/control.h"
#include "umig/log.h"
#include "umig/util.h"
#include "umig/vm.h"

#define CTL_MAX_CLIENTS  8
#define CTL_MAX_COMMANDS 32
#define CTL_LINE_MAX     (64 * 1024)

struct ctl_client {
	int fd;
	size_t len;
	char *buf;
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
	pthread_mutex_t lock;   /* commands, vm */
	struct vm *vm;
	bool quit_requested;
	struct ctl_client clients[CTL_MAX_CLIENTS];
	struct ctl_command cmds[CTL_MAX_COMMANDS];
	unsigned ncmds;
};

/* --- built-in commands ------------------------------------------------------ */

static int cmd_query_status(struct control *c, json_t *args, json_t **res, void *o)
{
	struct vm *vm = control_vm(c);
	enum vm_status s = vm_get_status(vm);

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
	int ret = vm_pause(vm);

	if (ret < 0)
		return ret;
	*res = json_pack("{s:s}", "status", vm_status_name(vm_get_status(vm)));
	return 0;
}

static int cmd_cont(struct control *c, json_t *args, json_t **res, void *o)
{
	struct vm *vm = control_vm(c);
	int ret;

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
	pthread_mutex_lock(&c->lock);
	c->quit_requested = true;
	pthread_mutex_unlock(&c->lock);
	vm_notify(control_vm(c));
	return 0;
}

static int cmd_query_stats(struct control *c, json_t *args, json_t **res, void *o)
{
	struct vm *vm = control_vm(c);
	json_int_t max = 256, since = 0;
	struct hb_sample *samples;
	struct hb_stats hb;
	struct cpu_state cs;
	json_t *arr;
	size_t n;

	if (args && json_unpack(args, "{s?I, s?I}", "max_samples", &max, "since_ns", &since))
		return err_set(-EINVAL, "arguments: max_samples and since_ns must be integers");
	if (max < 0 || max > 65536 || since < 0)
		return err_set(-EINVAL, "arguments: max_samples must be 0..65536, since_ns >= 0");
	samples = calloc(max ? max : 1, sizeof(*samples));
	if (!samples)
		return -ENOMEM;
	n = heartbeat_samples(&vm->bus, since, samples, max);
	arr = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(arr, json_pack("[I, I]", (json_int_t)samples[i].t_ns,
						     (json_int_t)samples[i].beats));
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

/* --- protocol ------------------------------------------------------------------ */

static void ctl_reply(struct ctl_client *cl, json_t *reply)
{
	char *s = json_dumps(reply, JSON_COMPACT);

	if (s) {
		/* a client that stops reading gets dropped, not waited for */
		if (write_full(cl->fd, s, strlen(s)) < 0 || write_full(cl->fd, "\n", 1) < 0)
			pr_debug("control: reply to a client failed");
		free(s);
	}
	json_decref(reply);
}

static json_t *ctl_error(const char *cls, const char *desc, json_t *id)
{
	json_t *r = json_pack("{s:{s:s, s:s}}", "error", "class", cls, "desc", desc);

	if (id)
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

static json_t *ctl_execute(struct control *c, const char *line)
{
	json_error_t jerr;
	json_t *req = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
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

/* Returns false when the client must be closed. */
static bool ctl_client_read(struct control *c, struct ctl_client *cl)
{
	ssize_t n = read(cl->fd, cl->buf + cl->len, CTL_LINE_MAX - cl->len);
	char *nl;

	if (n <= 0)
		return n < 0 && errno == EINTR;
	cl->len += n;
	while ((nl = memchr(cl->buf, '\n', cl->len))) {
		*nl = 0;
		if (nl > cl->buf)
			ctl_reply(cl, ctl_execute(c, cl->buf));
		cl->len -= nl + 1 - cl->buf;
		memmove(cl->buf, nl + 1, cl->len);
	}
	if (cl->len == CTL_LINE_MAX) {
		ctl_reply(cl, ctl_error("invalid-request", "request line longer than 64 KiB", NULL));
		return false;
	}
	return true;
}

static void ctl_client_close(struct ctl_client *cl)
{
	close(cl->fd);
	free(cl->buf);
	cl->fd = -1;
	cl->buf = NULL;
	cl->len = 0;
}

static void ctl_accept(struct control *c)
{
	struct timeval tv = { .tv_sec = 2 };
	int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	for (int i = 0; i < CTL_MAX_CLIENTS; i++) {
		struct ctl_client *cl = &c->clients[i];

		if (cl->fd >= 0)
			continue;
		cl->buf = malloc(CTL_LINE_MAX);
		if (!cl->buf)
			break;
		cl->fd = fd;
		return;
	}
	write_full(fd, "{\"error\":{\"class\":\"busy\",\"desc\":\"too many clients\"}}\n", 53);
	close(fd);
}

static void *ctl_thread(void *arg)
{
	struct control *c = arg;

	for (;;) {
		struct pollfd pfd[CTL_MAX_CLIENTS + 2];
		int map[CTL_MAX_CLIENTS + 2];
		int n = 0;

		pfd[n++] = (struct pollfd){ .fd = c->quit_efd, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = c->listen_fd, .events = POLLIN };
		for (int i = 0; i < CTL_MAX_CLIENTS; i++)
			if (c->clients[i].fd >= 0) {
				map[n] = i;
				pfd[n++] = (struct pollfd){ .fd = c->clients[i].fd, .events = POLLIN };
			}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			pr_err("control: poll failed: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break;
		if (pfd[1].revents & POLLIN)
			ctl_accept(c);
		for (int i = 2; i < n; i++)
			if (pfd[i].revents && !ctl_client_read(c, &c->clients[map[i]]))
				ctl_client_close(&c->clients[map[i]]);
	}
	return NULL;
}

static int ctl_listen(struct control *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;

	if (strlen(path) >= sizeof(sa.sun_path))
		return err_set(-ENAMETOOLONG, "control socket path '%s' is too long (max %zu)",
			       path, sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	strcpy(c->path, path);
	/* replace a stale socket left by a crashed umig; never a live one or a file */
	if (!lstat(path, &st)) {
		int probe;

		if (!S_ISSOCK(st.st_mode))
			return err_set(-EEXIST, "control path '%s' exists and is not a socket", path);
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			return err_set(-EADDRINUSE, "control socket '%s' is in use by a running umig",
				       path);
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
	}
	c->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->listen_fd < 0)
		return -errno;
	if (bind(c->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(c->listen_fd, 8) < 0)
		return err_set(-errno, "cannot listen on control socket '%s': %s", path,
			       strerror(errno));
	return 0;
}

int control_start(struct control **out, const char *path, struct vm *vm)
{
	struct control *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	c->vm = vm;
	c->listen_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	for (int i = 0; i < CTL_MAX_CLIENTS; i++)
		c->clients[i].fd = -1;
	control_register(c, "query-status", cmd_query_status, NULL);
	control_register(c, "query-stats", cmd_query_stats, NULL);
	control_register(c, "stop", cmd_stop, NULL);
	control_register(c, "cont", cmd_cont, NULL);
	control_register(c, "quit", cmd_quit, NULL);
	c->quit_efd = eventfd(0, EFD_CLOEXEC);
	ret = c->quit_efd < 0 ? -errno : ctl_listen(c, path);
	if (!ret)
		ret = -pthread_create(&c->thread, NULL, ctl_thread, c);
	if (ret < 0) {
		if (c->listen_fd >= 0) {
			close(c->listen_fd);
			unlink(c->path);
		}
		if (c->quit_efd >= 0)
			close(c->quit_efd);
		pthread_mutex_destroy(&c->lock);
		free(c);
		return ret;
	}
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
	if (write(c->quit_efd, &one, sizeof(one)) != sizeof(one))
		pr_warn("control: cannot signal the control thread");
	pthread_join(c->thread, NULL);
	for (int i = 0; i < CTL_MAX_CLIENTS; i++)
		if (c->clients[i].fd >= 0)
			ctl_client_close(&c->clients[i]);
	close(c->listen_fd);
	close(c->quit_efd);
	unlink(c->path);
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
