/*
 * rdma.h - internals shared by the RDMA transport's files (rdma/).
 *
 * frame.c (built always, no verbs needed, unit-tested on any host): the
 * frames that travel as RDMA SENDs on the bulk and urgent queue pairs,
 * the authentication block in rdma_cm's private data, and the control
 * message that tells the source where to connect.
 * ep.c: one reliable-connected queue pair with its buffers, receive
 * credits and the thread that reaps its completion queues.
 * rdma.c: the xport ops, connection setup with librdmacm.
 */
#ifndef UMIG_RDMA_INTERNAL_H
#define UMIG_RDMA_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "umig/xport.h"

/*
 * Frame header, in front of every SEND (little-endian like proto.h):
 *   u16 type (MSG_PAGES, MSG_ZERO, MSG_MARK, MSG_REQ, MSG_PAGE, MSG_RDMA_CREDIT)
 *   u16 flags (PAGE: PAGE_FLAG_ZERO)   u32 credits returned to the receiver
 *   u64 pfn   u32 n (MARK: the mark)   u32 aux (MARK: the round)
 * followed by the page data of PAGES (n pages) and of a non-zero PAGE.
 */
#define RDMA_HDR_LEN        24
#define RDMA_BULK_PAGES     32      /* pages in one bulk frame at most */
#define RDMA_BULK_RECV      32      /* receive buffers (= credits) on bulk */
#define RDMA_URGENT_RECV    64      /* ... on urgent */
#define RDMA_SEND_SLOTS     16      /* send buffers per queue pair */
/*
 * Credit-only frames need no credit: each returns at least a quarter of
 * the receive buffers, so at most four are ever in flight; these extra
 * receive buffers hold them.
 */
#define RDMA_EXTRA_RECV     8
#define RDMA_AUTH_LEN       48      /* private data of a connect request */
#define RDMA_LISTEN_LEN     (8 + PROTO_NONCE_LEN)

struct rdma_hdr {
	uint16_t type, flags;
	uint32_t credits;
	uint64_t pfn;
	uint32_t n, aux;
};

void rdma_hdr_put(uint8_t *b, const struct rdma_hdr *h);
void rdma_hdr_get(const uint8_t *b, struct rdma_hdr *h);
/* Bytes a slot needs on channel ch (header included). */
uint32_t rdma_slot_size(enum xport_channel ch);

/*
 * Check a received frame of len bytes at b, on channel ch, at the side
 * `source` of a guest of npages, and describe it: 1 with *ev filled, 0 for
 * a credit-only frame, -EPROTO naming channel, type and field.  *h gets
 * the header either way (its credits count even for data frames).
 */
int rdma_frame_decode(const uint8_t *b, uint32_t len, enum xport_channel ch, bool source,
		      uint64_t npages, struct rdma_hdr *h, struct xev *ev);

/*
 * Authentication block a source puts in its connect request:
 *   u32 magic "UMRD", u16 channel, u16 0, u64 session,
 *   HMAC-SHA256(secret, "umig rdma " || u16 channel || u64 session || nonce)
 * with the nonce the destination sent in RDMA_LISTEN for this very
 * listener, so a block cannot be replayed to a later one.
 */
int rdma_auth_make(const uint8_t *secret, uint64_t session, const uint8_t *nonce,
		   enum xport_channel ch, uint8_t out[RDMA_AUTH_LEN]);
/* 0 with *ch set, or -EACCES / -EPROTO naming what was wrong. */
int rdma_auth_check(const uint8_t *secret, uint64_t session, const uint8_t *nonce,
		    const void *data, uint32_t len, enum xport_channel *ch);

/* RDMA_LISTEN on control: u16 port, u16 0, u32 0, 16-byte nonce. */
void rdma_listen_put(uint8_t b[RDMA_LISTEN_LEN], uint16_t port, const uint8_t *nonce);
int rdma_listen_get(const struct proto_msg *m, uint16_t *port, uint8_t *nonce);


/*
 * The local ACK timeout exponent (4.096 us << exp per try) and transport
 * retry count of a queue pair, so that a dead peer fails its sends within
 * half of ms (the peer timeout; 0 = none, then about 4 s).  Both finite:
 * rdma_cm's defaults retry for much longer, and rnr_retry 7 is forever.
 */
void rdma_retry_params(unsigned ms, uint8_t *timeout_exp, uint8_t *retries);
#define RDMA_RNR_RETRY 6

#ifdef UMIG_HAVE_RDMA
#include <pthread.h>
#include <rdma/rdma_cma.h>

/*
 * The protection domain the endpoints of one transport share when their
 * queue pairs are on the same device (they always are, but rdma_cm picks
 * each one's device on its own): guest RAM is then registered once, not
 * once per queue pair.  The last endpoint destroyed frees it.
 */
struct rdma_pd_share {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	unsigned refs;
};

/*
 * One endpoint: a reliable-connected queue pair of one channel, with
 * registered send and receive buffers (slots) and the thread that reaps
 * its completion queues.  Flow control is by credits: a data frame is
 * sent only while the peer has a receive buffer posted for it, so a
 * receiver-not-ready retry never happens in normal operation.
 *
 * Locking: mu protects everything below it; cv is broadcast whenever a
 * completion arrives or the endpoint fails or shuts down.  The progress
 * thread sleeps on the completion channel (or busy-polls with
 * --rdma-poll) and on the rdma_cm event channel, which reports a
 * disconnect.  A failed endpoint is never reused: the xport is replaced.
 */
struct rdma_ep {
	enum xport_channel ch;
	bool source;
	uint64_t npages;
	struct rdma_cm_id *id;
	struct rdma_event_channel *ec;
	struct ibv_pd *pd;
	struct rdma_pd_share *share;  /* set before rdma_ep_setup: where pd comes from (NULL: own) */
	bool pd_shared;
	struct ibv_comp_channel *cc;
	struct ibv_cq *scq, *rcq;
	struct ibv_mr *smr, *rmr;
	uint8_t *sbuf, *rbuf;
	uint32_t slot, nrecv, nsend;
	bool poll_mode;
	unsigned send_timeout_ms;    /* a send waits this long for a credit */
	pthread_t thread;
	bool thread_started;
	int stop_efd, qfd;           /* qfd: readable while a frame or an error waits */

	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stopping, shut;
	int err;                     /* the first failure, with errmsg */
	char errmsg[256];
	uint32_t credits;            /* frames the peer can take now */
	uint32_t returned;           /* buffers reposted since the peer last heard */
	uint32_t *sfree, nsfree;     /* free send slots */
	uint32_t *ready, *rlen;      /* received frames (slot ring), length per slot */
	uint32_t rhead, rcount;
	int held;                    /* the slot the last reap returned, -1 none */
	uint64_t bytes;

	/*
	 * One-sided (FEAT_RDMA_READ).  Destination: READs of the source's
	 * guest RAM into slots of their own (set ndread and dslot before
	 * rdma_ep_setup); a completed READ is reaped like a received frame,
	 * as a run, and its slot is free again at the next reap, when
	 * on_read_free (if any) hears how many pages it held.  kick makes a
	 * waiting reap return 0.  Source: guest RAM registered for READ.
	 */
	uint32_t ndread, dslot;
	uint8_t *dbuf;
	struct ibv_mr *dmr, *ram_mr;  /* ram_mr: NULL where the other endpoint's pd registered it */
	uint32_t *dfree, ndfree, *dready, dhead, dcount, *dn;
	uint64_t *dpfn;
	int dheld;
	bool kick;
	uint64_t raddr;              /* the source's guest RAM, and its key on this queue pair */
	uint32_t rkey;
	/*
	 * Destination, zero-copy: READs land at the page's offset in place
	 * (guest RAM's placement view, registered as place_mr; shutdown
	 * deregisters it, place stays).  NULL: into the slots, copied later.
	 */
	uint8_t *place;
	struct ibv_mr *place_mr;     /* NULL where another endpoint of the same pd registered it */
	uint32_t place_lkey;
	void (*on_read_free)(void *arg, uint32_t pages);
	void *read_arg;
};

/* wr_id of a READ: the slot, tagged */
#define RDMA_WR_READ (1ull << 32)

/* One-sided post-copy's windows (pull.c) */
#define RDMA_PULL_RUN       16      /* pages in one prefetch READ at most */
#define RDMA_PULL_WINDOW    256     /* prefetched pages in flight or unplaced */
#define RDMA_PULL_SLOTS     32      /* prefetch READ buffers */
#define RDMA_FAULT_SLOTS    64      /* fault READ buffers: one per waiting vCPU */

struct rdma_prefetch;

/* The destination's prefetcher (pull.c); flags change under the bulk endpoint's mu. */
struct rdma_pull {
	struct xport *x;
	struct rdma_ep *e;           /* the bulk endpoint */
	struct rdma_prefetch *pf;
	pthread_t thread;
	bool started;
	_Atomic bool stop, zero_done, finished;
	bool end_seen, end_given;    /* MARK_BULK_END from the source, and to the engine */
};

struct rdma_pages {
	struct rdma_ep ep[XCH_COUNT];    /* [XCH_BULK], [XCH_URGENT]; [XCH_CONTROL] unused */
	struct rdma_pd_share pds;
	struct rdma_pull pull;
};

/*
 * Source: register guest RAM for READ and send RDMA_MR (with
 * FEAT_RDMA_READ); with FEAT_RDMA_MR_ACK wait up to timeout_ms for the
 * destination to have registered its own side, so that its registration
 * never falls inside the downtime.
 */
int rdma_ram_expose(struct xport *x, int timeout_ms);
/* Destination: READ buffers for the endpoint of ch (before rdma_ep_setup). */
void rdma_pull_prepare(struct xport *x, struct rdma_ep *e, enum xport_channel ch);
/* Destination: receive RDMA_MR within timeout_ms. */
int rdma_ram_learn(struct xport *x, int timeout_ms);
int rdma_pull_start(struct xport *x, const struct bitmap *have, const char *policy);
void rdma_pull_stop(struct xport *x);
int rdma_pull_fetch(struct xport *x, uint64_t pfn);
int rdma_pull_reap(struct xport *x, struct xev *ev, int timeout_ms);

/* 0, or -ENODEV saying there is no RDMA device and what to do. */
int rdma_devices_check(void);
/* Allocate the queue pair and buffers on id (resolved or requested). */
int rdma_ep_setup(struct rdma_ep *e, struct rdma_cm_id *id, enum xport_channel ch, bool source,
		  uint64_t npages, bool poll_mode, unsigned send_timeout_ms);
/* After ESTABLISHED: start reaping. */
int rdma_ep_start(struct rdma_ep *e);
int rdma_ep_send(struct rdma_ep *e, struct rdma_hdr *h, const void *data, uint32_t len);
int rdma_ep_reap(struct rdma_ep *e, struct xev *ev, int timeout_ms);
/* Destination: READ pages [pfn, pfn+n) of the source into a free slot, waiting for one. */
int rdma_ep_read(struct rdma_ep *e, uint64_t pfn, uint32_t n);
/* Wake a reap waiting on e (it returns 0). */
void rdma_ep_kick(struct rdma_ep *e);
/* Query the device: how many READs a queue pair may have in flight either way. */
uint8_t rdma_rd_atom(struct ibv_context *ctx);
/* Does the device serve RC READs from a memory region registered on demand (ODP)? */
bool rdma_odp_read(struct ibv_context *ctx);
/* Fail e for good: wake every waiter, disconnect, unpin guest RAM (source). */
void rdma_ep_shutdown(struct rdma_ep *e);
void rdma_ep_destroy(struct rdma_ep *e);
#endif

#endif
