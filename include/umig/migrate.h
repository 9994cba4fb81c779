/*
 * migrate.h - the migration engine's public face: source, destination,
 * their state machine and their figures.  How the engine is built inside,
 * step by step, is in src/mig.h.
 *
 * Source: mig_source_start() runs a migration of a running VM on a
 * thread of its own; the VM keeps running (pre-copy) until switchover.
 * Until the destination reports RESUMED the source guest is the live one:
 * any failure before that stops dirty tracking, resumes the guest if the
 * engine paused it, and leaves it running untouched.
 *
 * Destination: mig_dest_accept() takes one incoming migration up to the
 * point where the guest runs at the destination; the rest (post-copy
 * pages, completion, figures) continues on threads of its own until
 * mig_dest_finish().
 *
 * State (one enum, one setter that checks from -> to and logs it):
 *   IDLE -> SETUP -> [PRECOPY] -> SWITCHOVER -> [POSTCOPY] -> COMPLETED
 *   any state before COMPLETED -> FAILED
 */
#ifndef UMIG_MIGRATE_H
#define UMIG_MIGRATE_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "umig/mem.h"
#include "umig/proto.h"

struct vm;
struct control;

enum mig_state {
	MIG_IDLE,
	MIG_SETUP,
	MIG_PRECOPY,
	MIG_SWITCHOVER,
	MIG_POSTCOPY,
	MIG_UNKNOWN,      /* the commit's outcome is not known: both hold the guest paused */
	MIG_PAUSED,       /* post-copy: a link broke; waiting to recover */
	MIG_RECOVERING,   /* post-copy: reconnected, resynchronising */
	MIG_COMPLETED,
	MIG_FAILED,
};

const char *mig_state_name(enum mig_state s);
/* true if from -> to is a legal transition */
bool mig_state_ok(enum mig_state from, enum mig_state to);

struct mig_params {
	enum mig_mode mode;
	char transport[16];          /* page transport ("tcp", "rdma") */
	bool rdma_poll;              /* RDMA: busy-poll completions instead of sleeping */
	bool rdma_plaintext_pages;   /* RDMA under TLS: page data in clear accepted */
	bool rdma_odp;               /* RDMA: expose guest RAM on demand (ODP), unpinned */
	char host[256];
	uint16_t port;
	char prepaging[32];          /* post-copy policy name (prepage.h) */
	uint64_t downtime_limit_ms;  /* pre-copy convergence target */
	unsigned max_rounds;         /* pre-copy rounds before giving up */
	unsigned peer_timeout_ms;    /* a silent peer is gone after this long */
	unsigned recover_timeout_ms; /* post-copy: how long to try to recover a broken link */
	char stats_path[1024];       /* "" = none */
	bool quiet;                  /* no progress line */
	int dup_inflight;            /* post-copy: urgent duplicates of in-flight pages, MIG_DUP_* */
	char auth_key[1024];         /* TLS with this pre-shared key file ("" = none) */
	char tls_creds[1024];        /* TLS with X.509 certificates in this directory */
	bool insecure;               /* plaintext to a non-loopback address allowed */
	/* sending less and converging (docs/compression.md) */
	int compress;                /* enum codec_mode (codec.h): none, lz4, zstd, auto */
	uint64_t delta_cache;        /* bytes of the source's delta cache; 0 = no deltas */
	uint64_t max_bandwidth;      /* bulk bytes per second; 0 = unlimited */
	bool auto_converge;          /* throttle a guest that dirties faster than the link */
	bool dynamic_rate;           /* pre-copy rounds start at max_bandwidth / 4 and rise */
	bool fallback_post;          /* pre-copy that stops progressing switches to post-copy */
	int dirty_track;             /* enum mig_dirty_track: how pre-copy finds written pages */
	unsigned streams;            /* bulk connections, 1..XSTREAMS_MAX (tcp; 0 = 1) */
};

/* --dirty-track (docs/architecture.md, "Dirty tracking"); auto is the default. */
enum mig_dirty_track { MIG_DIRTY_AUTO, MIG_DIRTY_WP, MIG_DIRTY_KVM_LOG };
/* "auto", "wp", "kvm-log" */
const char *mig_dirty_track_name(int t);
/*
 * The options p can be used for this VM: -EINVAL naming the conflict (kvm-log
 * for a guest not under KVM; -ENOTSUP: --streams over a transport without
 * it).  mig_source_start() checks it; umig run checks
 * it before the guest starts.
 */
int mig_params_check_vm(const struct mig_params *p, struct vm *vm);

enum { MIG_DUP_ON = 0, MIG_DUP_OFF = 1, MIG_DUP_ALWAYS = 2 };

#define MIG_PEER_TIMEOUT_DEFAULT_MS 5000
#define MIG_RECOVER_TIMEOUT_DEFAULT_MS (10 * 60 * 1000)
void mig_params_default(struct mig_params *p);

/* Fault service latency samples (microseconds), thread-safe. */
struct lat_hist {
	pthread_mutex_t lock;
	uint32_t *us;
	size_t n, cap;
};

void lat_init(struct lat_hist *h);
void lat_free(struct lat_hist *h);
void lat_add(struct lat_hist *h, uint64_t ns);
/* p in [0,100]; 0 if empty. */
double lat_percentile(struct lat_hist *h, double p);
/* [[upper bound us, count], ...] over power-of-two buckets (for CDFs). */
json_t *lat_histogram(struct lat_hist *h);

/* Progress line on a terminal (stderr), at most 5 times a second. */
struct mig_progress {
	bool enabled;
	uint64_t last_ns, start_ns;
	const char *side;
};

void progress_init(struct mig_progress *pr, const char *side, bool quiet);
void progress_update(struct mig_progress *pr, const char *phase, uint64_t done,
		     uint64_t total, uint64_t bytes, uint64_t faults, bool force);
void progress_end(struct mig_progress *pr);
/*
 * Every state change of the migration in this process, for the control
 * socket's events.  Called with the migration's lock held: fn only queues.
 * NULL removes it.
 */
typedef void (*mig_event_fn)(void *opaque, const char *side, const char *from,
			     const char *to, const char *why);
void mig_set_event_hook(mig_event_fn fn, void *opaque);

/* One line for a state an operator must notice (outcome-unknown, paused). */
void progress_note(struct mig_progress *pr, const char *state);

/* Who owns the guest, as an operator decides it (migrate-resolve). */
enum { MIG_OWNER_SOURCE = 1, MIG_OWNER_DEST = 2 };

/* --- source ------------------------------------------------------------- */

struct mig_source;

int mig_source_start(struct mig_source **out, struct vm *vm, const struct mig_params *p);
enum mig_state mig_source_state(struct mig_source *s);
/* The statistics record so far (a new reference). */
json_t *mig_source_query(struct mig_source *s);
/*
 * The operator settles an unknown outcome: owner MIG_OWNER_SOURCE resumes
 * the guest here, MIG_OWNER_DEST lets it go.  -EINVAL unless the outcome
 * is unknown.
 */
int mig_source_resolve(struct mig_source *s, int owner);
/* Before the commit: stop the migration; the guest keeps running here. */
int mig_source_cancel(struct mig_source *s);
/*
 * migrate with resume: true - reconnect to host:port from now on, while
 * post-copy is paused or recovering or the outcome is unknown; -EINVAL
 * in any other state.
 */
int mig_source_retarget(struct mig_source *s, const char *host, uint16_t port);
/* Wait for the migration thread; free everything. */
void mig_source_destroy(struct mig_source *s);

/*
 * The migration commands on the control socket (docs/control.md): one
 * outgoing migration at a time, and at a destination the incoming one.
 * vm may be NULL until the guest has arrived (mig_ctl_set_vm).
 */
struct mig_ctl;
struct mig_dest;
int mig_ctl_register(struct mig_ctl **out, struct control *c, struct vm *vm);
void mig_ctl_set_vm(struct mig_ctl *m, struct vm *vm);
/* The incoming migration query-migrate, migrate-recover and migrate-resolve act on. */
void mig_ctl_set_incoming(struct mig_ctl *m, struct mig_dest *d);
/* Start a migration without the control socket (umig run --migrate-to). */
int mig_ctl_start(struct mig_ctl *m, const struct mig_params *p);
/* True once a migration completed (the source should exit 0). */
bool mig_ctl_completed(struct mig_ctl *m);
/* True once a migration failed after switchover (the guest is lost here). */
bool mig_ctl_lost(struct mig_ctl *m, char *why, size_t len);
void mig_ctl_free(struct mig_ctl *m);

/* --- destination ---------------------------------------------------------- */

struct mig_dest_opts {
	char host[256];
	uint16_t port;
	const char *stats_path;
	int console_fd;
	const char *backend;
	enum mem_backing backing;    /* guest RAM here: anon (default) or memfd */
	bool place_continue;         /* memfd: place with pwrite + UFFDIO_CONTINUE, not UFFDIO_COPY */
	const char *transport;       /* page transport, NULL = tcp */
	bool rdma_poll;              /* RDMA: busy-poll completions instead of sleeping */
	bool rdma_plaintext_pages;   /* RDMA under TLS: page data in clear accepted */
	uint64_t expect_ram;         /* 0 = accept the source's size */
	unsigned peer_timeout_ms;    /* 0 = the default */
	unsigned recover_timeout_ms; /* 0 = the default */
	bool quiet;
	bool overcommit;             /* skip the free-memory admission check */
	const char *auth_key;        /* TLS: pre-shared key file (NULL = none) */
	const char *tls_creds;       /* TLS: X.509 directory (NULL = none) */
	bool insecure;               /* plaintext on a non-loopback address allowed */
};

/*
 * Wait for one migration on host:port and run it until the guest runs
 * here.  On success *vm is running and owned by the caller (destroy it
 * after mig_dest_finish()).  mig_dest_accept = mig_dest_listen + _run;
 * between the two the control socket can be given the migration.
 */
int mig_dest_accept(struct mig_dest **out, const struct mig_dest_opts *o, struct vm **vm);
int mig_dest_listen(struct mig_dest **out, const struct mig_dest_opts *o);
int mig_dest_run(struct mig_dest *d, struct vm **vm);
/*
 * migrate-recover: also listen on host:port for the source's
 * reconnection, while post-copy is paused or recovering or the outcome
 * is unknown.  -EINVAL in any other state.
 */
int mig_dest_recover_listen(struct mig_dest *d, const char *host, uint16_t port);
/*
 * migrate-resolve at the destination, outcome unknown: MIG_OWNER_DEST
 * runs the guest here, MIG_OWNER_SOURCE drops the copy here.
 */
int mig_dest_resolve(struct mig_dest *d, int owner);
/* Wait (bounded) for completion, write the statistics; 0 or -errno. */
int mig_dest_finish(struct mig_dest *d, int timeout_s);
enum mig_state mig_dest_state(struct mig_dest *d);
/*
 * True while the guest runs here under userfaultfd with pages that have
 * not arrived.  Tearing userfaultfd down then would let the vCPU read
 * those pages as zeroes, so a caller that must give up exits the process
 * without freeing the migration (the vCPU stays blocked in the kernel).
 */
bool mig_dest_pages_missing(struct mig_dest *d);
uint64_t mig_dest_pages_absent(struct mig_dest *d);
/*
 * The guest exited by itself at the destination (status) before every
 * page arrived: the migration ends there (COMPLETE says so to the source)
 * instead of counting the guest as lost.
 */
void mig_dest_guest_exited(struct mig_dest *d, int status);
json_t *mig_dest_query(struct mig_dest *d);
void mig_dest_free(struct mig_dest *d);

/* Write a JSON record to path (atomically).  0 or -errno. */
int mig_write_json(const char *path, json_t *rec);

#endif
