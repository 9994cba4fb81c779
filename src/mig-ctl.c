/*
 * mig-ctl.c - migration on the control socket: "migrate" starts one,
 * "query-migrate" reports its figures while it runs and after.
 *
 * One migration at a time; a failed one may be retried.  The serve loop
 * asks mig_ctl_completed() to know when the source should exit.
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
	struct vm *vm;
	struct mig_source *cur;   /* (lock) */
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
	if (!ret)
		ret = mig_source_start(&s, m->vm, p);
	if (!ret)
		m->cur = s;
	pthread_mutex_unlock(&m->lock);
	return ret;
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

static struct mig_source *mig_ctl_current(struct mig_ctl *m)
{
	struct mig_source *s;

	pthread_mutex_lock(&m->lock);
	s = m->cur;
	pthread_mutex_unlock(&m->lock);
	return s;
}

static int cmd_migrate_resolve(struct control *c, json_t *args, json_t **res, void *opaque)
{
	struct mig_source *s = mig_ctl_current(opaque);
	const char *owner = NULL;
	int ret;

	if (!args || json_unpack(args, "{s:s}", "owner", &owner))
		return err_set(-EINVAL, "arguments: {\"owner\": \"source\" | \"destination\"}");
	if (!s)
		return err_set(-EINVAL, "no migration to resolve");
	ret = mig_source_resolve(s, !strcmp(owner, "source") ? MIG_OWNER_SOURCE :
				    !strcmp(owner, "destination") ? MIG_OWNER_DEST : 0);
	if (ret < 0)
		return ret;
	*res = json_pack("{s:s}", "owner", owner);
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
	*res = m->cur ? mig_source_query(m->cur) : json_pack("{s:s}", "status", "none");
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
	}
	if (ret < 0) {
		free(m);
		return ret;
	}
	*out = m;
	return 0;
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
