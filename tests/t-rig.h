/*
 * t-rig.h - a source and a destination umig on loopback with
 * tests/faultproxy.py between them (t-rig.c), for tests of failures and
 * of the operator's commands.
 */
#ifndef UMIG_T_RIG_H
#define UMIG_T_RIG_H

#include <stdbool.h>
#include <sys/types.h>
#include <jansson.h>

struct rig {
	char *dir;
	pid_t proxy, dst, src;
	char listen[32], via[32];
	char sock[600];    /* the source's control socket */
	char dsock[600];   /* the destination's, served from before the source connects */
};

/*
 * Both sides' --peer-timeout in the rig (ms), the guest, and more source
 * options: a test may change them, rig_teardown restores them all.
 */
extern const char *rig_peer_timeout;
extern const char *rig_cmdline;
extern const char *rig_prepaging;
extern const char *rig_after;   /* --migrate-after, seconds */
extern const char *const *rig_extra;   /* NULL-terminated */
/*
 * For rig_extra in pre-copy: memverify rewrites its whole working set
 * every pass, so pre-copy never converges on it; a few rounds bring the
 * handover well inside the guest's run.
 */
extern const char *const rig_few_rounds[];
/*
 * The rig's guest by default ends one guest second after it finds itself
 * moved (memverify moved_secs=1, capped at 40 s), so it outlives a
 * migration of any length.  A test whose guest stays at the source sets
 * rig_cmdline = RIG_AT_SOURCE: it runs long enough for the migration to
 * fail first, and ends on its own there.
 */
#define RIG_AT_SOURCE "wss=32 secs=6"

/* A loopback port not used before by this process. */
int rig_port(void);
/* Poll query-migrate on sock until its reply contains want (bounded). */
bool wait_status(const char *sock, const char *want, int timeout_ms);
/* Start proxy (with its rules), destination, then the source migrating in mode. */
void rig_start(struct rig *g, const char *mode, const char *const *rules);
void rig_stop(struct rig *g);
/*
 * A cmocka teardown: after a failed assertion, stop what the last rig
 * started (processes still running, its directory); nothing after rig_stop.
 */
int rig_teardown(void **state);
/* A file of the rig's directory ("" if absent; caller frees). */
char *rig_file(struct rig *g, const char *name);
void rig_dump(struct rig *g, int src, int dst);
/* Wait for both ends (bounded) and require their exit statuses. */
void rig_expect(struct rig *g, int want_src, int want_dst);
/* One end's stderr (file) says text. */
void assert_said(struct rig *g, const char *file, const char *text);
/* memverify finished clean at exactly one place: "source" or "destination". */
void assert_ran_only_at(struct rig *g, const char *where);
/* Wait until the source's query-migrate reports state. */
void rig_wait_state(struct rig *g, const char *state);
/* Wait for one process, bounded by bound_s, and require its status. */
void rig_expect_one(struct rig *g, pid_t *pid, int bound_s, int want, const char *who);

/* One migration on loopback, no proxy (rig_local_migrate). */
struct rig_local {
	const char *guest, *cmdline, *mode;
	const char *after;              /* --migrate-after, seconds */
	const char *done;               /* what the destination's output must contain */
	const char *const *extra;       /* more source options, NULL-terminated */
	const char *const *dest_extra;  /* more destination options, NULL-terminated */
	int bound_s;                    /* bound on each process */
};
json_t *rig_local_migrate(const struct rig_local *m);

#endif
