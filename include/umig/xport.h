/*
 * xport.h - the page-level transport a migration runs over.
 *
 * The engine never sees sockets or queue pairs.  It talks to one xport per
 * migration, shaped like the interfaces it must serve (io_uring's SQE/CQE,
 * libibverbs' work request / work completion): work is *posted* (push a
 * run, reply to a request, fetch a page) and *completions* are reaped
 * later from a queue (a run is in place here, the peer asks for a page).
 *
 *   control   xport_ctl_send / xport_ctl_recv: whole messages, both sides,
 *             always on the session's control connection (TCP)
 *   source    xport_push (a run, on the bulk queue, in order with marks),
 *             xport_mark, xport_reply (an urgent answer), xport_flush
 *   dest      xport_fetch (ask for a page urgently); one-sided transports:
 *             xport_pull (pull every page the destination lacks itself:
 *             the runs arrive on the bulk queue, then MARK_BULK_END)
 *   both      xport_reap(queue): the next completion, within a timeout
 *             dest:   XEV_RUN  "run R is here" (bulk or urgent queue)
 *                     XEV_MARK a bulk-stream mark, in order with the runs
 *             source: XEV_REQ  "the destination asks for page N" (urgent)
 *
 * Capability bits say what an implementation can do, and the engine checks
 * them instead of asking which transport runs:
 *   XCAP_STREAM   page data travels as framed bytes through the transport,
 *                 so per-run encodings (compression, delta) can apply;
 *   XCAP_ONESIDED fetch is served by the source's NIC without its CPU
 *                 (RDMA READ): the source needs no request server and the
 *                 destination drives the push order itself;
 *   XCAP_STREAMS  the bulk queue can be several connections (--streams).
 *
 * Setup is two-phase so that a refused migration costs one connection:
 * the control connection first (xport_connect / xport_accept, which also
 * exchange the greeting), the handshake on it (mig-handshake.c), then the
 * page channels (xport_connect_data / xport_accept_data).
 *
 * Parallel bulk streams (FEAT_STREAMS, x->streams > 1, TCP only): the bulk
 * queue is x->streams queues, XQ_BULK and xq_stream(1..streams-1), one
 * connection each, each reaped by its own thread at the destination.  The
 * transport spreads pushed runs over them (a run stays whole); a mark goes
 * on every stream, in order with that stream's runs, so the destination
 * has passed a mark once every stream delivered it (mig-receive.c).
 *
 * Threads: one thread per queue reaps it; the source's pushes come from
 * one thread and its replies from another; control messages are sent from
 * one thread at a time (x->ctl_lock) and received by one.
 * xport_shutdown() may be called from any thread: every blocked call then
 * returns -ESHUTDOWN or an I/O error.  Ownership: xport_close() frees
 * everything, including the connections.
 */
#ifndef UMIG_XPORT_H
#define UMIG_XPORT_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "umig/bitmap.h"
#include "umig/proto.h"
#include "umig/xconn.h"

enum xport_cap {
	XCAP_STREAM = 1u << 0,
	XCAP_ONESIDED = 1u << 1,
	XCAP_STREAMS = 1u << 2,   /* the bulk queue can be several connections (FEAT_STREAMS) */
	XCAP_URGENT_RUNS = 1u << 3, /* an urgent reply can be a run of pages (FEAT_URGENT_RUNS) */
};

/* Completion queues: each is reaped by one thread. */
enum xq {
	XQ_BULK = 0,     /* dest: pushed runs and marks (bulk stream 0) */
	XQ_URGENT = 1,   /* dest: fetched runs; source: requests */
	XQ_COUNT
};

/* Bulk connections of a session at most (--streams). */
#define XSTREAMS_MAX 16
/* Every queue a session can have: bulk streams 1.. follow XQ_COUNT. */
#define XQ_MAX (XQ_COUNT + XSTREAMS_MAX - 1)
/* Connection slots of xport_accept_conns: the channels, then bulk streams 1.. */
#define XCONN_SLOTS (XCH_COUNT + XSTREAMS_MAX - 1)

/* The queue of bulk stream i (0: XQ_BULK). */
static inline enum xq xq_stream(unsigned i)
{
	return i ? (enum xq)(XQ_COUNT + i - 1) : XQ_BULK;
}

enum xrun_enc {
	XENC_RAW = 0,    /* n * 4096 bytes of page data */
	XENC_ZERO = 1,   /* n zero pages, no data */
	/* XCAP_STREAM only, once negotiated (FEAT_COMPRESS, FEAT_DELTA): */
	XENC_LZ4 = 2,    /* a codec.h batch of n pages, lz4 */
	XENC_ZSTD = 3,   /* a codec.h batch of n pages, zstd */
	XENC_DELTA = 4,  /* one page as a delta.h delta against the receiver's copy */
};

struct xrun {
	uint64_t pfn;
	uint32_t n;
	uint32_t enc;          /* enum xrun_enc */
	const uint8_t *data;   /* dest: valid until the next reap of its queue */
	uint32_t len;          /* bytes at data */
};

enum xev_kind {
	XEV_RUN = 1,
	XEV_MARK = 2,
	XEV_REQ = 3,
};

struct xev {
	enum xev_kind kind;
	struct xrun run;       /* XEV_RUN; XEV_REQ: run.pfn, run.n = 1 */
	uint32_t mark, round;  /* XEV_MARK */
};

struct xport;

struct xport_ops {
	const char *name;
	uint32_t caps;
	uint64_t feature;            /* FEAT_TRANSPORTS bit both ends must agree on (0: TCP) */
	uint64_t optional;           /* FEAT_XPORT_OPTIONAL bits offered, used if both agree */
	int (*connect_data)(struct xport *x, const char *host, uint16_t port, int timeout_ms);
	int (*accept_data)(struct xport *x, int listen_fd, int timeout_ms);
	int (*push)(struct xport *x, const struct xrun *r);
	int (*mark)(struct xport *x, uint32_t mark, uint32_t round);
	int (*reply)(struct xport *x, const struct xrun *r);
	int (*flush)(struct xport *x);
	int (*fetch)(struct xport *x, uint64_t pfn);
	/* XCAP_ONESIDED, destination: start pulling every page not in have (NULL: none) */
	int (*pull)(struct xport *x, const struct bitmap *have, const char *policy);
	int (*reap)(struct xport *x, enum xq q, struct xev *ev, int timeout_ms);
	int (*queue_fd)(struct xport *x, enum xq q);
	bool (*pending)(struct xport *x, enum xq q);   /* NULL: never */
	uint64_t (*bytes)(struct xport *x, enum xport_channel ch);
	void (*shutdown)(struct xport *x);
	void (*close)(struct xport *x);
	/*
	 * Optional (NULL: unknown), source.  bulk_pos, pushing thread only:
	 * where the bulk stream that carried the last push ends now, an
	 * opaque non-zero position.  bulk_unacked, any thread: how many bytes
	 * up to position pos the peer has not yet acknowledged (0: all of
	 * them; a run whose end lies beyond is still queued here or on the
	 * wire) and the rate that stream delivers at, bytes/s (0: not known
	 * yet); it may take a lock on the connection.
	 */
	int (*bulk_pos)(struct xport *x, uint64_t *pos);
	int (*bulk_unacked)(struct xport *x, uint64_t pos, uint64_t *ahead, uint64_t *rate);
};

struct xsec;

struct xport {
	const struct xport_ops *ops;
	struct xconn *ctl;           /* the control connection */
	const struct xsec *sec;      /* TLS credentials of every connection; NULL: plaintext */
	char host[256];              /* source: the destination's name (certificate check) */
	uint8_t bind_key[32];        /* TLS: binds each channel to the session (xport.c) */
	pthread_mutex_t ctl_lock;    /* one control sender at a time */
	uint64_t session;
	bool source;                 /* this end sends the guest */
	uint64_t npages;             /* guest pages: every run is checked against it */
	unsigned peer_timeout_ms;    /* TCP_USER_TIMEOUT of every connection (0: none) */
	unsigned version;            /* negotiated protocol version */
	uint64_t features;           /* negotiated feature bits */
	unsigned streams;            /* bulk connections (1; FEAT_STREAMS: up to XSTREAMS_MAX) */
	const uint8_t *secret;       /* the migration's secret (authenticates page channels) */
	bool busy_poll;              /* spin on completions instead of sleeping (--rdma-poll) */
	bool odp;                    /* source, one-sided: expose RAM on demand (--rdma-odp) */
	uint32_t caps;               /* the ops' caps, plus what this session negotiated */
	/*
	 * One-sided transports.  Source: guest RAM, to expose for READ.
	 * Destination (NULL: none): the placement view of memfd RAM, for
	 * READs to land in directly (zero-copy) where the transport can
	 * register it.
	 */
	uint8_t *ram;
	uint64_t ram_len;
	uint64_t ram_pinned;         /* bytes of it this session registered (once per protection domain) */
	_Atomic uint64_t reads, read_bytes;  /* destination: one-sided reads and their bytes */
	void *priv;                  /* the implementation's page channels */
};

/*
 * Source: connect the control connection of a new session to host:port
 * within timeout_ms, run TLS on it when sec is given (before any umig
 * byte), and send its greeting.  transport: "tcp" or "rdma" (NULL = tcp);
 * the engine sets npages, peer_timeout_ms and, for rdma, secret before
 * xport_connect_data / xport_accept_data.  sec is borrowed: it must
 * outlive the xport.
 */
int xport_connect(struct xport **out, const char *transport, const char *host,
		  uint16_t port, uint64_t session, int timeout_ms, const struct xsec *sec);
/*
 * Destination: the first control connection, within timeout_ms (-1 = no
 * bound), that finishes its TLS handshake (when sec is given) and its
 * greeting.  Connections are greeted concurrently, each within 10 s: a
 * stranger that stays silent, sends junk or fails authentication is
 * logged and dropped, and never delays the real source.
 */
int xport_accept(struct xport **out, const char *transport, int listen_fd, int timeout_ms,
		 const struct xsec *sec);
/*
 * The same for the transports: n connections into out[channel] (which
 * has XCONN_SLOTS slots), all within timeout_ms.  x NULL wants one control
 * channel; otherwise n distinct bulk or urgent channels of x's session
 * (bulk streams 1.. of x->streams go to out[XCH_COUNT..], in the order
 * they are greeted),
 * which under TLS must open with a BIND frame proving they belong to x's
 * control TLS session (docs/protocol.md, "Authentication").
 */
int xport_accept_conns(struct xconn **out, unsigned n, int listen_fd, struct xport *x,
		       const struct xsec *sec, int timeout_ms, uint64_t *session);
/* Source: after the greeting of a data channel, bind it (no-op without TLS). */
int xport_bind_send(struct xport *x, struct xconn *c);
/*
 * Under TLS, make the recovery secret depend on the control connection's
 * TLS session too (in place); no-op without TLS.
 */
int xport_bind_secret(struct xport *x, uint8_t *secret);
/*
 * Source: a control connection that the destination closed before
 * answering anything was refused by its authentication (TLS 1.3 checks
 * the client's credentials after the client's handshake is done); say so
 * instead of "broken pipe".  Other errors are returned unchanged.
 */
int xport_explain_refusal(struct xport *x, int err);
/*
 * The negotiated features; with FEAT_DIGEST every later frame on control
 * carries a digest (both sides switch right after HELLO2_ACK).
 */
void xport_set_features(struct xport *x, uint64_t features);
/* "tls-psk", "tls-x509", "digest" (plaintext with frame digests) or "plaintext". */
const char *xport_security(const struct xport *x);
/* An exporter of the control connection's TLS session; zeroes without TLS. */
int xport_ctl_exporter(struct xport *x, const char *label, uint8_t *out, size_t len);
void xport_close(struct xport *x);
void xport_shutdown(struct xport *x);
/* Names of the transports this build has ("tcp", "tcp, rdma"). */
const char *xport_names(void);
int xport_known(const char *name);

int xport_ctl_send(struct xport *x, uint16_t type, const void *p, uint32_t len);
/* -ETIMEDOUT after timeout_ms (-1 = no bound) without a message. */
int xport_ctl_recv(struct xport *x, struct proto_msg *m, int timeout_ms);
int xport_ctl_error(struct xport *x, int err, const char *text);

static inline uint32_t xport_caps(const struct xport *x) { return x->caps; }

static inline int xport_connect_data(struct xport *x, const char *host, uint16_t port, int timeout_ms)
{
	return x->ops->connect_data(x, host, port, timeout_ms);
}

static inline int xport_accept_data(struct xport *x, int listen_fd, int timeout_ms)
{
	return x->ops->accept_data(x, listen_fd, timeout_ms);
}

static inline int xport_push(struct xport *x, const struct xrun *r) { return x->ops->push(x, r); }

static inline int xport_mark(struct xport *x, uint32_t mark, uint32_t round)
{
	return x->ops->mark(x, mark, round);
}

static inline int xport_reply(struct xport *x, const struct xrun *r) { return x->ops->reply(x, r); }
static inline int xport_flush(struct xport *x) { return x->ops->flush(x); }
static inline int xport_fetch(struct xport *x, uint64_t pfn) { return x->ops->fetch(x, pfn); }

static inline int xport_pull(struct xport *x, const struct bitmap *have, const char *policy)
{
	return x->ops->pull ? x->ops->pull(x, have, policy) : 0;
}

/*
 * The next completion on queue q: 1 with *ev filled, 0 if none arrived
 * within timeout_ms (0 = do not wait, -1 = no bound), or -errno (the peer
 * closed: -EPIPE; a malformed frame: -EPROTO naming channel, type, field).
 */
static inline int xport_reap(struct xport *x, enum xq q, struct xev *ev, int timeout_ms)
{
	return x->ops->reap(x, q, ev, timeout_ms);
}

/* Readable when a reap of q may find a completion (for poll()). */
static inline int xport_queue_fd(struct xport *x, enum xq q) { return x->ops->queue_fd(x, q); }

/* -EOPNOTSUPP when the transport cannot tell (see xport_ops.bulk_pos). */
static inline int xport_bulk_pos(struct xport *x, uint64_t *pos)
{
	return x->ops->bulk_pos ? x->ops->bulk_pos(x, pos) : -EOPNOTSUPP;
}

static inline int xport_bulk_unacked(struct xport *x, uint64_t pos, uint64_t *ahead,
				     uint64_t *rate)
{
	return x->ops->bulk_unacked ? x->ops->bulk_unacked(x, pos, ahead, rate) : -EOPNOTSUPP;
}

/*
 * A completion of q is already received (TLS holds decrypted bytes that
 * poll() on queue_fd does not see): check this before polling.
 */
static inline bool xport_pending(struct xport *x, enum xq q)
{
	return x->ops->pending && x->ops->pending(x, q);
}

/* Bytes sent plus received on a channel (control included). */
uint64_t xport_bytes(struct xport *x, enum xport_channel ch);

/* --- implementations ------------------------------------------------------- */

/* TCP (tcp/tcp.c): today's frames on a bulk and an urgent connection. */
extern const struct xport_ops xport_tcp_ops;
/* RDMA verbs (rdma/rdma.c): SENDs on two RC queue pairs, set up with rdma_cm. */
extern const struct xport_ops xport_rdma_ops;
/*
 * The feature bit the named transport needs negotiated (0 for tcp), or
 * -ENOENT for an unknown one.
 */
int64_t xport_feature(const char *name);

#endif
