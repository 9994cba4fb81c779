/*
 * mig-ctl.c - migration on the control socket: "migrate" starts one (or,
 * with resume: true, points a paused one's reconnections elsewhere),
 * "query-migrate" reports its figures while it runs and after,
 * "migrate-cancel" and "migrate-resolve" settle it.  At a destination the
 * same commands act on the incoming migration, served from before the
 * source connects, and "migrate-recover" listens on another address.
 *
 * One outgoing migration at a time; a failed one may be retried.  The
 * serve loop asks mig_ctl_completed() to know when the source should exit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "umig/control.h"
#include "umig/log.h"
#include "umig/migopts.h"
#include "umig/migrate.h"
#include "umig/vm.h"

struct mig_ctl {
	pthread_mutex_t lock;
	struct vm *vm;                /* (lock) NULL until the guest is here */
	struct mig_source *cur;       /* (lock) */
	struct mig_dest *incoming;    /* (lock) the migration that brought the guest */
};

bool mig_source_lost(struct mig_source *s);

int mig_ctl_start(struct mig_ctl *m, const struct mig_params *p)
{
	struct mig_source *s;
	int ret = 0;

	pthread_mutex_lock(&m->lock);
	if (m->cur) {
		enum mig_state st = mig_source_state(m->cur);

		if (st != MIG_FAILED)
			ret = err_set(-EBUSY, "a migration is already %s", mig_state_name(st));
		else {
			mig_source_destroy(m->cur);
			m->cur = NULL;
		}
	}
	if (!ret && !m->vm)
		ret = err_set(-EINVAL, "no guest here yet: it is still arriving by migration");
	if (!ret)
		ret = mig_source_start(&s, m->vm, p);
	if (!ret)
		m->cur = s;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

static struct mig_source *mig_ctl_current(struct mig_ctl *m)
{
	struct mig_source *s;

	pthread_mutex_lock(&m->lock);
	s = m->cur;
	pthread_mutex_unlock(&m->lock);
	return s;
}

static struct mig_dest *mig_ctl_incoming(struct mig_ctl *m)
{
	struct mig_dest *d;

	pthread_mutex_lock(&m->lock);
	d = m->incoming;
	pthread_mutex_unlock(&m->lock);
	return d;
}

/* {"to": "HOST:PORT", "resume": true}: the paused migration reconnects there. */
static int migrate_resume(struct mig_ctl *m, json_t *args, const char *to)
{
	struct mig_source *s = mig_ctl_current(m);
	const char *key;
	json_t *v;
	char host[256];
	uint16_t port;

	json_object_foreach(args, key, v) {
		if (strcmp(key, "to") && strcmp(key, "resume"))
			return err_set(-EINVAL, "'resume' takes only 'to' (the migration keeps its "
				       "options), not '%s'", key);
	}
	if (parse_hostport(to, host, sizeof(host), &port))
		return err_set(-EINVAL, "'to': '%s' is not HOST:PORT", to);
	if (!s)
		return err_set(-EINVAL, "no migration to resume");
	return mig_source_retarget(s, host, port);
}

static int cmd_migrate(struct control *c, json_t *args, json_t **res, void *opaque)
{
	struct mig_ctl *m = opaque;
	const char *to = NULL;
	struct mig_params p;
	int ret;

	mig_params_default(&p);
	p.quiet = true;
	if (!args || json_unpack(args, "{s:s}", "to", &to))
		return err_set(-EINVAL, "arguments: {\"to\": \"HOST:PORT\", \"mode\": \"post|pre|hybrid|stop-copy\", ...} (docs/control.md)");
	if (json_is_true(json_object_get(args, "resume"))) {
		ret = migrate_resume(m, args, to);
		if (ret < 0)
			return ret;
		*res = json_pack("{s:s, s:s}", "status", "resuming", "to", to);
		return 0;
	}
	if (json_object_get(args, "resume") && !json_is_false(json_object_get(args, "resume")))
		return err_set(-EINVAL, "'resume' must be true or false");
	json_object_del(args, "resume");
	if (parse_hostport(to, p.host, sizeof(p.host), &p.port))
		return err_set(-EINVAL, "'to': '%s' is not HOST:PORT", to);
	ret = migopt_from_json(&p, args);
	if (ret < 0)
		return ret;
	ret = mig_ctl_start(m, &p);
	if (ret < 0)
		return ret;
	*res = json_pack("{s:s}", "status", "started");
	return 0;
}

static int cmd_migrate_resolve(struct control *c, json_t *args, json_t **res, void *opaque)
{
	struct mig_source *s = mig_ctl_current(opaque);
	struct mig_dest *d = mig_ctl_incoming(opaque);
	const char *owner = NULL;
	int who, ret;

	if (!args || json_unpack(args, "{s:s}", "owner", &owner))
		return err_set(-EINVAL, "arguments: {\"owner\": \"source\" | \"destination\"}");
	who = !strcmp(owner, "source") ? MIG_OWNER_SOURCE :
	      !strcmp(owner, "destination") ? MIG_OWNER_DEST : 0;
	if (!s && !d)
		return err_set(-EINVAL, "no migration to resolve");
	ret = s ? mig_source_resolve(s, who) : mig_dest_resolve(d, who);
	if (ret < 0)
		return ret;
	*res = json_pack("{s:s}", "owner", owner);
	return 0;
}

static int cmd_migrate_recover(struct control *c, json_t *args, json_t **res, void *opaque)
{
	struct mig_dest *d = mig_ctl_incoming(opaque);
	const char *at = NULL;
	char host[256];
	uint16_t port;
	int ret;

	if (!args || json_unpack(args, "{s:s}", "listen", &at))
		return err_set(-EINVAL, "arguments: {\"listen\": \"HOST:PORT\"}");
	if (parse_hostport(at, host, sizeof(host), &port))
		return err_set(-EINVAL, "'listen': '%s' is not HOST:PORT", at);
	if (!d)
		return err_set(-EINVAL, "no incoming migration here (migrate-recover is a "
			       "destination command; the source uses migrate with resume: true)");
	ret = mig_dest_recover_listen(d, host, port);
	if (ret < 0)
		return ret;
	*res = json_pack("{s:s}", "listening", at);
	return 0;
}

static int cmd_migrate_cancel(struct control *c, json_t *args, json_t **res, void *opaque)
{
	struct mig_source *s = mig_ctl_current(opaque);
	int ret;

	if (!s)
		return err_set(-EINVAL, "no migration to cancel");
	ret = mig_source_cancel(s);
	if (ret < 0)
		return ret;
	*res = json_pack("{s:s}", "status", "cancelling");
	return 0;
}

static int cmd_query_migrate(struct control *c, json_t *args, json_t **res, void *opaque)
{
	struct mig_ctl *m = opaque;

	pthread_mutex_lock(&m->lock);
	*res = m->cur ? mig_source_query(m->cur) :
	       m->incoming ? mig_dest_query(m->incoming) : json_pack("{s:s}", "status", "none");
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int mig_ctl_register(struct mig_ctl **out, struct control *c, struct vm *vm)
{
	struct mig_ctl *m = calloc(1, sizeof(*m));
	int ret = 0;

	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	m->vm = vm;
	if (c) {
		ret = control_register(c, "migrate", cmd_migrate, m);
		if (!ret)
			ret = control_register(c, "query-migrate", cmd_query_migrate, m);
		if (!ret)
			ret = control_register(c, "migrate-resolve", cmd_migrate_resolve, m);
		if (!ret)
			ret = control_register(c, "migrate-cancel", cmd_migrate_cancel, m);
		if (!ret)
			ret = control_register(c, "migrate-recover", cmd_migrate_recover, m);
	}
	if (ret < 0) {
		free(m);
		return ret;
	}
	*out = m;
	return 0;
}

void mig_ctl_set_vm(struct mig_ctl *m, struct vm *vm)
{
	pthread_mutex_lock(&m->lock);
	m->vm = vm;
	pthread_mutex_unlock(&m->lock);
}

void mig_ctl_set_incoming(struct mig_ctl *m, struct mig_dest *d)
{
	pthread_mutex_lock(&m->lock);
	m->incoming = d;
	pthread_mutex_unlock(&m->lock);
}

bool mig_ctl_completed(struct mig_ctl *m)
{
	bool done;

	if (!m)
		return false;
	pthread_mutex_lock(&m->lock);
	done = m->cur && mig_source_state(m->cur) == MIG_COMPLETED;
	pthread_mutex_unlock(&m->lock);
	return done;
}

bool mig_ctl_lost(struct mig_ctl *m, char *why, size_t len)
{
	bool lost;

	if (!m)
		return false;
	pthread_mutex_lock(&m->lock);
	lost = m->cur && mig_source_lost(m->cur);
	if (lost) {
		json_t *r = mig_source_query(m->cur);

		snprintf(why, len, "%s", json_string_value(json_object_get(r, "error")));
		json_decref(r);
	}
	pthread_mutex_unlock(&m->lock);
	return lost;
}

void mig_ctl_free(struct mig_ctl *m)
{
	if (!m)
		return;
	if (m->cur)
		mig_source_destroy(m->cur);
	pthread_mutex_destroy(&m->lock);
	free(m);
}
