/*
 * mig.h - the migration engine's inside: one context object per side and
 * the steps of a migration, each in the file named for it.
 *
 *   mig-state.c        the state machine both sides use (states, legal
 *                      transitions, the setter that checks and logs them)
 *   mig-handshake.c    connect/accept, HELLO, version and feature
 *                      negotiation, admission, the page channels
 *   mig-pages.c        the source's page sender: runs, zero pages
 *   mig-codec.c        compression, deltas and the rate limit on bulk
 *   mig-precopy.c      pre-copy rounds (source)
 *   mig-converge.c     round decisions, auto-converge, --fallback post
 *   mig-receive.c      the destination's bulk receiver (pre-copy and
 *                      post-copy pushes land here)
 *   mig-switchover.c   pause, state, discards, resume: both sides
 *   mig-handover.c     the commit point: READY, COMMIT, RESOLVE
 *   mig-recover.c      post-copy recovery after a broken link
 *   mig-postcopy-src.c the post-copy push and the request server
 *   mig-postcopy-dst.c userfaultfd and the fault path
 *   mig-complete.c     completion and the statistics records
 *   mig-src.c          the source context and the thread driving the steps
 *   mig-dst.c          the destination context and its driver
 *
 * Locking: each context's `c.lock` protects the fields marked (L); the
 * state changes only through mig_set_state(), which broadcasts c.cond.
 */
#ifndef UMIG_MIG_H
#define UMIG_MIG_H

#include <stdatomic.h>

#include "umig/bitmap.h"
#include "umig/codec.h"
#include "umig/delta.h"
#include "umig/log.h"
#include "umig/migrate.h"
#include "umig/prepage.h"
#include "umig/uffd.h"
#include "umig/vm.h"
#include "umig/xport.h"
#include "umig/xsec.h"

/* Bounds on waits that involve the peer. */
#define MIG_CONNECT_TIMEOUT_MS   5000
#define MIG_HANDSHAKE_TIMEOUT_MS 10000

/* What both contexts start with. */
struct mig_common {
	const char *side;            /* "migration" (source) or "incoming" */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum mig_state state;        /* (L) only through mig_set_state() */
	char error[512];             /* (L) the first failure */
	struct vm *vm;
	struct xport *x;
	struct xsec *sec;            /* TLS credentials of every connection (NULL: plaintext) */
	uint64_t npages;
	struct mig_progress progress;
	unsigned peer_timeout_ms;
	unsigned recover_timeout_ms;
	uint8_t secret[PROTO_SECRET_LEN]; /* proves a reconnection belongs to this migration */
	/* transports replaced by a recovery: kept (their counters count) until the end */
	struct xport *retired[16];
	unsigned nretired;
	/* keepalive (mig-keepalive.c) */
	pthread_t ka_thread;
	bool ka_started;
	int ka_efd;                  /* written to stop the keepalive thread */
};

void mig_common_init(struct mig_common *c, const char *side);
void mig_common_destroy(struct mig_common *c);
/* Check from -> to, log it, commit it and wake waiters; -EINVAL if illegal. */
int mig_set_state(struct mig_common *c, enum mig_state to);
enum mig_state mig_get_state(struct mig_common *c);
/*
 * Replace c->x by x (a recovery).  The old one stays allocated, because
 * another thread may still be returning from a call on it, and its bytes
 * keep counting in mig_bytes(); umig frees them with the context.
 */
void mig_swap_xport(struct mig_common *c, struct xport *x);
uint64_t mig_bytes(struct mig_common *c, enum xport_channel ch);
void mig_free_xports(struct mig_common *c);
/* Record the first error and move to FAILED (no-op once COMPLETED). */
void mig_fail(struct mig_common *c, int err);

/*
 * Keepalive (mig-keepalive.c): with FEAT_KEEPALIVE each side sends PING
 * on control every peer_timeout / 5, and every control receive is bounded
 * by the peer timeout, so a peer that vanishes without a reset (a dead
 * host, a partition) is noticed within it.
 */
int mig_keepalive_start(struct mig_common *c);
void mig_keepalive_stop(struct mig_common *c);
/*
 * The next control message that is not a PING, within the peer timeout
 * when keepalives were negotiated (otherwise unbounded).  -ETIMEDOUT with
 * a message naming `what` was awaited; ERROR frames are returned as
 * messages, for the caller to judge.
 */
int mig_ctl_recv(struct mig_common *c, struct proto_msg *m, const char *what);
/* Like mig_ctl_recv, but ERROR and any type other than `type` are failures. */
int mig_ctl_expect(struct mig_common *c, struct proto_msg *m, uint16_t type, const char *what);

/* --- source -------------------------------------------------------------- */

/* Pre-copy's round decisions and the auto-converge throttle (mig-converge.c). */
struct src_conv {
	pthread_t thread;            /* the throttle */
	bool started;
	_Atomic bool stop;
	_Atomic unsigned pct;        /* of each slice the guest is paused */
	_Atomic uint64_t throttled_ns;
	unsigned pct_max;
	unsigned nrounds, stall;     /* rounds seen; rounds in a row without progress */
	uint64_t best;               /* the smallest dirty set so far */
	uint64_t wws[3];             /* the last rounds' dirty sets */
	const char *reason;          /* why pre-copy stopped */
	bool to_post;                /* --fallback post switched to post-copy */
	json_t *rounds;              /* (L) rounds_detail */
};

/* One pre-copy round, as src_conv_round() judges it. */
struct conv_round {
	unsigned round;
	uint64_t pages, data_pages;  /* sent, and of those sent as data (not zero) */
	uint64_t bytes, ns;          /* bulk wire bytes and time of the round */
	uint64_t ndirty;             /* pages written while it ran */
	uint64_t rate;               /* bytes/s the push was paced to, 0 = unlimited */
};

/* Sending less, and no faster than asked (mig-codec.c); the bulk sender's own. */
struct src_enc {
	int mode;                    /* enum codec_mode in force (none if the peer lacks it) */
	struct codec_enc *enc;       /* NULL: no compression */
	struct codec_auto chooser;   /* --compress auto */
	struct codec_auto_sample win;
	enum codec_kind kind;        /* the codec for the next batch */
	struct delta_cache *delta;   /* NULL: no deltas */
	bool delta_live;             /* deltas may go now (pre-copy rounds, their stop-copy) */
	uint8_t *stage, *out;        /* PROTO_RUN_MAX pages each */
	uint8_t dbuf[DELTA_MAX_SIZE];
	uint64_t last_ns;            /* when the previous batch was handed over */
	uint64_t next_ns;            /* rate limit: when the bucket is empty */
	uint64_t rate;               /* --dynamic-rate: this round's rate; 0 = max_bandwidth */
	uint64_t z_in, z_out;        /* page bytes given to the codec, wire bytes they took */
	uint64_t batches[CODEC_NKINDS]; /* batches by how they went (none: raw) */
	uint64_t delta_pages;
};

/* The source's switchover steps, its clock (mig-downtime.c): each ends here. */
struct src_dt {
	uint64_t paused, collected, pages_sent, saved, state_sent;
};

/* The destination's switchover steps, its clock. */
struct dst_dt {
	uint64_t state_rx, marked, ready_tx, commit_rx, resumed_tx;
	uint64_t discard_ns, discard_pages;   /* every DISCARD applied, the whole migration */
	uint64_t early_held;         /* DISCARD_EARLY frames that waited for their round */
};

struct mig_source {
	struct mig_common c;
	struct mig_params p;
	pthread_t thread, urgent_thread;
	bool urgent_started;
	bool resumed_remote;         /* the destination guest runs: no way back */
	bool paused_by_us;
	bool state_sent;             /* the destination may hold READY */
	bool committed;              /* COMMIT left: the source never resumes its copy */
	bool resolved_by_reconnect;  /* the commit was acknowledged on a new connection */
	int resolve_owner;           /* (L) the operator's decision, MIG_OWNER_* */
	unsigned retargets;          /* (L) migrate resume:true moved p.host/p.port */
	bool cancel_recovery;        /* umig is exiting: do not reconnect */
	bool scanned;                /* post-copy: populated is final */
	_Atomic bool pc_scanned;     /* ... and the request server may read it */
	char unknown_why[256];       /* (L) why the outcome became unknown */

	struct bitmap sent;          /* post-copy: the page is at (or on its way to) dst */
	struct bitmap populated;     /* pages that may hold data (mem_scan_populated) */
	struct bitmap prereg;        /* one-sided: populated before RAM was registered (or NULL) */
	struct bitmap zeromap;       /* one-sided: pages found zero after the pause */
	bool zeromap_done;
	struct bitmap ever;          /* data for this page was sent at least once */
	struct bitmap dirty;         /* pre-copy: written since it was last sent */
	struct bitmap discarded;     /* hybrid: a DISCARD of the page left (mig-discard.c) */
	struct {                     /* hybrid's early discards (FEAT_EARLY_DISCARD) */
		uint32_t placed_round, frames_applied;   /* the destination's last PLACED */
		uint32_t frames_sent;
		uint64_t pages, batches, wait_ns;
	} early;
	struct dirty_tracker tracker;
	bool tracking;
	const char *dirty_tracker;   /* the one pre-copy ran ("wp", "kvm-log"); NULL = none */
	struct prepage *pp;
	/*
	 * Post-copy in-flight tracking (mig-postcopy-src.c): per page the
	 * bulk stream's byte offset just past the run that pushed it;
	 * PUSH_QUEUED while its run is still being gathered, 0 if it was not
	 * pushed in post-copy.
	 */
	_Atomic uint64_t *push_end;
	struct src_enc enc;
	struct src_conv conv;

	/* figures */
	uint64_t t_start, t_pause, t_ready, t_resumed, t_end;
	struct src_dt dt;
	uint64_t cpu_resumed_us, cpu_end_us; /* umig's own CPU time (getrusage) then */
	unsigned recoveries;
	uint64_t pages_lost_in_flight; /* sent, not placed when a link broke: sent again */
	uint64_t paused_ms;          /* post-copy time spent paused or recovering */
	uint64_t paused_since;       /* (L) this pause began, 0 = not paused */
	char paused_why[256];        /* (L) what broke */
	uint64_t pages_bulk, pages_zero, pages_resent;
	_Atomic uint64_t pages_urgent, requests;
	_Atomic uint64_t pages_dup;    /* urgent replies that duplicate an in-flight push */
	uint64_t urgent_replies;       /* frames sent on urgent (a run is one; urgent thread only) */
	unsigned rounds;
	bool converged;
	uint64_t remaining_at_stop;  /* pages sent during the downtime */
	uint64_t precopy_bytes;
	struct hb_stats hb_pause;
	json_t *dest_stats;
	json_t *record;
	json_t *complete_early;      /* COMPLETE received while recovering */
};

int src_handshake(struct mig_source *s);
/* Pages: send every page set in `set` (NULL: every page) on bulk. */
long src_send_set(struct mig_source *s, const struct bitmap *set, const char *phase);
void src_scan_populated(struct mig_source *s);
/* One-sided transports: hand guest RAM to the transport, after a scan of what is populated. */
void src_expose_ram(struct mig_source *s, struct xport *x);
bool src_page_zero(struct mig_source *s, uint64_t pfn);

/* A run being gathered before it is pushed. */
struct run_acc {
	uint32_t enc;
	uint64_t pfn;
	uint32_t n;
};
int src_acc_add(struct mig_source *s, struct run_acc *a, uint64_t pfn);
int src_acc_flush(struct mig_source *s, struct run_acc *a);

/* Encoding and pacing the bulk push (mig-codec.c). */
int src_enc_setup(struct mig_source *s);
void src_enc_free(struct mig_source *s);
bool src_enc_active(const struct mig_source *s);
int src_push_encoded(struct mig_source *s, uint64_t pfn, uint32_t n);
void src_enc_forget(struct mig_source *s, uint64_t pfn, uint64_t n);
void src_rate_wait(struct mig_source *s, uint64_t bytes);
void src_rate_round(struct mig_source *s, unsigned round);   /* --dynamic-rate */
void src_rate_full(struct mig_source *s);
void src_enc_record(struct mig_source *s, json_t *r);

int src_conv_round(struct mig_source *s, const struct conv_round *cr);
void src_throttle_stop(struct mig_source *s);
void src_conv_record(struct mig_source *s, json_t *r);

/* The destination arms post-copy: post, hybrid, and pre with --fallback post. */
static inline bool src_post_mode(const struct mig_source *s)
{
	return s->p.mode == MIG_MODE_POST || s->p.mode == MIG_MODE_HYBRID ||
	       (s->p.mode == MIG_MODE_PRE && s->p.fallback_post);
}

/* Post-copy recovery (mig-recover.c): 0 to go on pushing, < 0 lost. */
/* 0 post-copy goes on, 1 it had completed during the break, < 0 lost */
int src_recover(struct mig_source *s, int why);
int src_precopy(struct mig_source *s);
int src_switchover(struct mig_source *s);
/* Hybrid's discards (mig-discard.c). */
int src_discard_early(struct mig_source *s, uint64_t round_ns);
long src_discard_dirty(struct mig_source *s);
long src_collect_rest(struct mig_source *s, bool last);
int dst_discard(struct mig_dest *d, const struct proto_msg *m);
int dst_discard_early(struct mig_dest *d, const struct proto_msg *m);
int dst_send_placed(struct mig_dest *d);
int dst_wait_round(struct mig_dest *d, unsigned round);
void src_dirty_done(struct mig_source *s);
int src_handover(struct mig_source *s);
void src_abort_destination(struct mig_source *s);
int src_postcopy(struct mig_source *s);
int src_postcopy_early(struct mig_source *s);
int src_complete(struct mig_source *s);
json_t *src_record(struct mig_source *s);
/* The downtime's parts (mig-downtime.c). */
void src_downtime_record(struct mig_source *s, json_t *r);

/* --- destination ------------------------------------------------------------- */

struct mig_dest {
	struct mig_common c;
	struct mig_dest_opts o;
	struct proto_hello hello;

	int bulk_mark;               /* (L) last MARK_PRECOPY_DONE / MARK_BULK_END seen */
	unsigned marks_in;           /* (L) marks the bulk streams delivered (all streams) */
	unsigned streams_ended;      /* (L) bulk streams past MARK_BULK_END */
	bool bulk_failed;            /* (L) */
	bool uffd_ready;             /* (L) userfaultfd is armed */
	bool discards_done;          /* (L) every DISCARD before STATE applied (dst_switchover) */
	bool ready_sent;             /* (L) READY left: the source may have committed */
	int early_break;             /* (L) a page channel broke after READY, before post-copy */
	_Atomic uint64_t bulk_rx_ns; /* when the bulk channel last delivered a frame */
	uint64_t discard_end;        /* DISCARD runs so far end here (they ascend) */
	unsigned rounds_placed;      /* (L) the last round whose end mark the receiver placed */
	uint32_t early_applied;      /* (L) DISCARD_EARLY frames applied */
	int decision;                /* (L) RESOLVE_COMMIT / RESOLVE_ABORT, 0 = none yet */
	int lfd;                     /* the listening socket, kept for reconnections */
	int lfd_next;                /* (L) migrate-recover's socket, not yet polled */
	int lfd_extra;               /* migrate-recover's socket (rendezvous thread's) */
	pthread_t rendezvous_thread;
	bool rendezvous_started;

	struct bitmap present, requested;
	struct bitmap claimed;       /* --placement continue: pages a placer has taken (mig-place.c) */
	bool place_continue;         /* memfd RAM placed with UFFDIO_CONTINUE (else UFFDIO_COPY) */
	bool huge;                   /* hugetlb RAM: placed in 2 MiB units (mig-huge.c) */
	uint16_t *huge_cnt;          /* hugetlb: pages of each 2 MiB unit written */
	bool *huge_data;             /* hugetlb: the unit holds a data page (is allocated) */
	_Atomic uint64_t present_count;
	uint64_t *fault_ns;          /* when each page's fault was read (0 = none) */
	struct uffd uffd;
	int quit_efd;
	int done_efd;                  /* readable once every page is present or the guest exited */
	pthread_t bulk_thread[XSTREAMS_MAX], fault_thread, complete_thread;
	unsigned bulk_started;       /* bulk receiver threads running (one per stream) */
	struct dst_stream { struct mig_dest *d; unsigned i; } bulk_arg[XSTREAMS_MAX];
	bool fault_started, complete_started;
	struct lat_hist lat;
	struct codec_dec *dec[XSTREAMS_MAX];   /* each bulk receiver's, with FEAT_COMPRESS */
	uint8_t *stage[XSTREAMS_MAX];          /* its decoded pages before placement */
	_Atomic uint64_t pages_decoded, pages_delta;

	bool bulk_post;              /* the receiver starts in post-copy (after a recovery) */
	uint64_t paused_at;          /* (L) when post-copy paused, 0 = running */
	uint64_t paused_ns;          /* post-copy time spent paused or recovering */
	unsigned recoveries;

	/* figures */
	uint64_t t_resume, t_complete;
	struct dst_dt dt;
	bool complete_unacked;       /* (L) COMPLETE sent, the source's answer never came */
	bool guest_exited;           /* (L) the guest exited here before every page arrived */
	_Atomic uint64_t faults, pages_bulk, pages_urgent, pages_zero;
	uint64_t reads_before, read_bytes_before;  /* one-sided reads on sessions replaced */
	_Atomic uint64_t pages_in_place;  /* placed where an RDMA READ had landed them: no copy */
	unsigned rounds;
	json_t *record;
	bool vm_handed;              /* the caller owns c.vm */
	_Atomic bool closing;        /* mig_dest_free() runs: stop waiting */
};

static inline bool dst_postcopy_mode(const struct mig_dest *d)
{
	return d->hello.mode == MIG_MODE_POST || d->hello.mode == MIG_MODE_HYBRID;
}

int dst_handshake(struct mig_dest *d, int lfd);
int dst_start_receiver(struct mig_dest *d);
/* Join every bulk receiver thread (after the transport was shut down or ended). */
void dst_join_receiver(struct mig_dest *d);
int dst_wait_mark(struct mig_dest *d, int mark);
void dst_mark_present(struct mig_dest *d, uint64_t pfn, uint64_t n);
void dst_signal_done(struct mig_dest *d);
/* stream: the bulk stream whose decoder state serves an encoded run (urgent: 0, never encoded) */
int dst_place_run(struct mig_dest *d, const struct xrun *r, bool post, unsigned stream);
/* Until post-copy pages may be placed: userfaultfd armed, the switchover's discards applied. */
void dst_wait_uffd(struct mig_dest *d);
/* mig-place.c: a raw or zero post-copy run into memfd RAM, UFFDIO_CONTINUE. */
int dst_place_continue(struct mig_dest *d, const struct xrun *r);
/* Before a session's page channels: one-sided RDMA may READ into the placement view. */
void dst_offer_place(struct mig_dest *d, struct xport *x);
/* mig-huge.c: hugetlb RAM, assembled in 2 MiB units and mapped with UFFDIO_CONTINUE. */
int dst_place_huge(struct mig_dest *d, const struct xrun *r);
int dst_fault_huge(struct mig_dest *d, uint64_t pfn);
int dst_huge_setup(struct mig_dest *d);
/* A fault on a page already present here: map it (or its zeroes) locally. */
int dst_resolve_present(struct mig_dest *d, uint64_t off);
int dst_dec_setup(struct mig_dest *d);
void dst_dec_free(struct mig_dest *d);
int dst_decode_run(struct mig_dest *d, struct xrun *r, bool post, unsigned stream);
int dst_arm_postcopy(struct mig_dest *d);
/* One-sided transports: start pulling what is not present (the source is paused). */
int dst_start_pull(struct mig_dest *d);
int dst_start_fault_thread(struct mig_dest *d);
/* A link broke in post-copy: keep the guest and wait for the source (mig-recover.c). */
void dst_pause(struct mig_dest *d, int why);
/*
 * A page channel failed (a malformed frame, a reset, silence): before
 * READY the migration fails, the source is told why and the session ends
 * so no thread waits on it; after the commit post-copy pauses for a
 * recovery (dst_pause); in between, post-copy pauses as soon as it starts.
 */
void dst_channel_failed(struct mig_dest *d, int why);
/* A reconnection asks to recover: authenticate it and resume post-copy on it. */
/* lfd: the listening socket the reconnection came on (its page channels follow there) */
/*
 * The source's reconnections: where to (migrate resume:true may move it),
 * and a wait between attempts cut short by the operator.
 */
void src_target(struct mig_source *s, char host[static 256], uint16_t *port);
void src_backoff(struct mig_source *s, unsigned ms);
void dst_serve_recover(struct mig_dest *d, struct xport *x, const struct proto_msg *m, int lfd);
bool dst_recovering_allowed(struct mig_dest *d);
void dst_stop_fault_thread(struct mig_dest *d);
int dst_switchover(struct mig_dest *d);
int dst_handover(struct mig_dest *d);
int dst_start_completion(struct mig_dest *d);
json_t *dst_figures(struct mig_dest *d);
void dst_downtime_figures(struct mig_dest *d, json_t *fig);

#endif
