/*
 * proto.h - umig's migration wire protocol (docs/protocol.md, whose
 * registry table lists every message type and feature bit below).
 *
 * Every connection opens with a 16-byte greeting:
 *     u32 magic "UMIG", u16 lowest version spoken, u16 channel, u64 session
 * so the destination can tell the channels of one migration apart and
 * refuse a stranger or a version it cannot speak before reading anything
 * else.  The version range (PROTO_VERSION_MIN..MAX) and the features are
 * then negotiated by the handshake (mig-handshake.c): a version 1 peer
 * answers the first HELLO with no features and the session stays at
 * version 1, byte for byte what umig 0.1 sends.
 * After it, each channel carries frames:
 *     u32 payload length, u16 type, u16 flags (0), payload
 * The receiver checks the length against the type's bounds before it
 * allocates or reads the payload, and each decoder checks every field.
 * Everything is little-endian.
 */
#ifndef UMIG_PROTO_H
#define UMIG_PROTO_H

#include <stdbool.h>
#include <stdint.h>

#include "umig/buf.h"
#include "umig/xconn.h"

#define PROTO_MAGIC       0x47494d55u   /* "UMIG" */
#define PROTO_VERSION_MIN 1             /* umig 0.1 */
#define PROTO_VERSION_MAX 2             /* extended handshake (HELLO2) */
#define PROTO_GREETING_LEN 16
#define PROTO_HDR_LEN     8
#define PROTO_MAX_PAYLOAD (16u << 20)
#define PROTO_RUN_MAX     64            /* pages in one PAGES frame */
#define PROTO_FLAG_DIGEST 1u            /* frame flags: an 8-byte XXH3-64 digest ends the payload */

enum mig_mode {
	MIG_MODE_STOPCOPY = 0,
	MIG_MODE_PRE = 1,
	MIG_MODE_POST = 2,
	MIG_MODE_HYBRID = 3,
};

/*
 * Message types.  Ranges are reserved per feature so that work on several
 * features cannot collide; docs/protocol.md's registry is the reference.
 */
enum proto_type {
	/* control, source -> destination */
	MSG_HELLO = 1,      /* u32 page size, u32 mode, u64 ram bytes, u64 features */
	MSG_STATE = 2,      /* machine state record (state.c) */
	MSG_DISCARD = 3,    /* hybrid: runs {u64 first, u32 n} of pages to drop */
	MSG_SRC_STATS = 4,  /* JSON text: the source's figures */
	MSG_HELLO2 = 5,     /* v2: u16 min, u16 max version, u32 0, u64 offered, u64 required */
	/* control, destination -> source */
	MSG_HELLO_ACK = 16, /* u64 features accepted */
	MSG_HELLO2_ACK = 20, /* v2: u16 version chosen, u16 0, u32 0, u64 features accepted */
	MSG_ERROR = 17,     /* u32 errno, UTF-8 text */
	MSG_RESUMED = 18,   /* empty: the guest runs at the destination */
	MSG_COMPLETE = 19,  /* JSON text: every page present; the destination's figures */
	/* bulk, source -> destination */
	MSG_PAGES = 32,     /* u64 first pfn, u32 n, u32 0, n * 4096 bytes */
	MSG_ZERO = 33,      /* u64 first pfn, u32 n, u32 0: n zero pages */
	MSG_MARK = 34,      /* u32 mark (enum proto_mark), u32 round */
	/* handover and liveness (FEAT_COMMIT, FEAT_KEEPALIVE) */
	MSG_READY = 64,     /* dst -> src: everything is loaded; runs only on COMMIT */
	MSG_COMMIT = 65,    /* src -> dst: the guest is yours; the source never resumes it */
	MSG_ABORT = 66,     /* src -> dst: the source keeps the guest; drop yours */
	MSG_PING = 67,      /* both: keepalive on control, empty */
	MSG_RESOLVE = 68,   /* src -> dst, on a new control connection: u32 decision */
	/* post-copy recovery (FEAT_RECOVER), on a new control connection */
	MSG_RECOVER = 69,   /* src -> dst: 16-byte nonce */
	MSG_RECOVER_CHALLENGE = 70, /* dst -> src: 16-byte nonce, 32-byte HMAC */
	MSG_RECOVER_AUTH = 71,      /* src -> dst: 32-byte HMAC */
	MSG_RECOVER_STATE = 72,     /* dst -> src: u32 flags (1 = last), runs {u64, u32} present */
	MSG_SECRET = 73,    /* src -> dst at handshake: the migration's 32-byte secret */
	/* RDMA transport (FEAT_RDMA) */
	MSG_RDMA_LISTEN = 96, /* dst -> src on control: u16 port, u16 0, u32 0, 16-byte nonce */
	MSG_RDMA_CREDIT = 97, /* RDMA frames only: receive credits returned, no data */
	/* authentication (FEAT_TLS) */
	MSG_BIND = 80,      /* src -> dst, first frame of bulk and urgent under TLS: 32-byte HMAC */
	/* page encodings (FEAT_COMPRESS, FEAT_DELTA), bulk, source -> destination */
	MSG_PAGES_Z = 112,  /* u64 first pfn, u32 n, u32 codec (1 lz4, 2 zstd), codec batch */
	MSG_DELTA = 113,
	/* hybrid's early discards (FEAT_EARLY_DISCARD), control */
	MSG_PLACED = 128,        /* dst -> src: u32 rounds placed, u32 DISCARD_EARLY frames applied */
	MSG_DISCARD_EARLY = 129, /* src -> dst: u32 round it follows, u32 0, runs {u64, u32} */    /* u64 pfn, u32 1, u32 0, delta (delta.h) against the receiver's copy */
	MSG_RDMA_MR = 98,     /* src -> dst on control (FEAT_RDMA_READ): guest RAM's address, keys */
	MSG_RDMA_MR_ACK = 99, /* dst -> src (FEAT_RDMA_MR_ACK): u32 flags (1: READs land in place), u32 0 */
	/* parallel bulk streams (FEAT_STREAMS), control, source -> destination */
	MSG_STREAMS = 136,  /* u32 bulk connections (2..XSTREAMS_MAX), u32 0 */
	/* urgent */
	MSG_REQ = 48,       /* dst -> src: u64 pfn */
	MSG_PAGE = 49,      /* src -> dst: u64 pfn, u32 flags (1 = zero), u32 0, [4096 bytes] */
};

enum proto_mark {
	MARK_ROUND_END = 1,    /* a pre-copy round is complete */
	MARK_PRECOPY_DONE = 2, /* what follows on bulk is post-copy */
	MARK_BULK_END = 3,     /* every page has been sent */
};

#define PAGE_FLAG_ZERO 1u

/*
 * Feature bits.  In the first HELLO only FEAT_HELLO2 may be set; every
 * other feature is negotiated by HELLO2, where a bit the receiver does not
 * know is refused if the sender requires it and dropped if it only offers
 * it, and an answer may only hold bits that were offered.
 */
#define FEAT_HELLO2        (1ull << 0)  /* HELLO2 follows the first HELLO_ACK */
#define FEAT_MSTATE2       (1ull << 1)  /* machine state record v2 (N vCPUs) */
#define FEAT_COMMIT        (1ull << 2)  /* READY / COMMIT handover, RESOLVE */
#define FEAT_KEEPALIVE     (1ull << 3)  /* PING on control; peers time out */
#define FEAT_RECOVER       (1ull << 4)  /* post-copy survives a broken link */
#define FEAT_TLS           (1ull << 8)  /* every connection is TLS 1.3; channels BIND */
#define FEAT_DIGEST        (1ull << 9)  /* plaintext: every frame ends in a digest */
#define FEAT_RDMA          (1ull << 16) /* page channels are RDMA queue pairs (RDMA_LISTEN) */
#define FEAT_RDMA_READ     (1ull << 17) /* post-copy pulls pages by RDMA READ (RDMA_MR) */
/* the destination answers RDMA_MR with RDMA_MR_ACK once its own READ targets are registered */
#define FEAT_RDMA_MR_ACK   (1ull << 18)
/* bits a transport offers without requiring them; meaningless with any other */
#define FEAT_XPORT_OPTIONAL (FEAT_RDMA_READ | FEAT_RDMA_MR_ACK)
/* bits that name the page transport: both ends must agree on them exactly */
#define FEAT_TRANSPORTS    FEAT_RDMA
#define FEAT_COMPRESS      (1ull << 24) /* PAGES_Z: lz4/zstd page batches on bulk */
#define FEAT_DELTA         (1ull << 25) /* DELTA: re-sent pages as deltas on bulk */
#define FEAT_EARLY_DISCARD (1ull << 32) /* hybrid: DISCARD_EARLY while round 1 drains, PLACED */
/* urgent replies may be PAGES and ZERO runs (up to PROTO_RUN_MAX pages), not only PAGE */
#define FEAT_URGENT_RUNS   (1ull << 33)
/* the destination places post-copy in 2 MiB units (hugetlb RAM): REQ asks for a unit */
#define FEAT_HUGE2M        (1ull << 34)
#define FEAT_STREAMS       (1ull << 36) /* STREAMS: more than one bulk connection */
/* every feature this umig knows */
#define FEAT_KNOWN         (FEAT_HELLO2 | FEAT_MSTATE2 | FEAT_COMMIT | FEAT_KEEPALIVE | \
			    FEAT_RECOVER | FEAT_TLS | FEAT_DIGEST | FEAT_RDMA | FEAT_RDMA_READ | FEAT_RDMA_MR_ACK | \
			    FEAT_COMPRESS | FEAT_DELTA | FEAT_EARLY_DISCARD | FEAT_URGENT_RUNS | \
			    FEAT_HUGE2M | FEAT_STREAMS)

#define PROTO_SECRET_LEN 32
#define PROTO_NONCE_LEN  16
#define PROTO_MAC_LEN    32

/* RESOLVE decisions */
#define RESOLVE_COMMIT 1
#define RESOLVE_ABORT  2

struct proto_hello2 {
	uint16_t min_version, max_version;
	uint64_t offered, required;
};

struct proto_hello2_ack {
	uint16_t version;
	uint64_t features;
};

struct proto_hello {
	uint32_t page_size;
	uint32_t mode;
	uint64_t ram_size;
	uint64_t features;
};

struct proto_run {
	uint64_t pfn;
	uint32_t n;
};

struct proto_msg {
	uint16_t type;
	uint32_t len;
	uint8_t *payload;   /* owned by the msg; proto_msg_free() */
	size_t cap;
};

const char *mig_mode_name(enum mig_mode m);
/* "PAGES", "DISCARD", ...; "unknown" for a type this umig does not know. */
const char *proto_type_name(uint16_t type);
int mig_mode_parse(const char *s, enum mig_mode *m);

/* The greeting names the lowest version this umig speaks. */
int proto_send_greeting(struct xconn *x, uint64_t session);
/*
 * -EPROTO / -EPROTONOSUPPORT with a message naming what was wrong; a peer
 * whose lowest version is above PROTO_VERSION_MAX is refused.
 */
int proto_recv_greeting(struct xconn *x, enum xport_channel *ch, uint64_t *session);
/* The same checks on 16 bytes already read (pure: no I/O; fuzzed). */
int proto_decode_greeting(const uint8_t g[PROTO_GREETING_LEN], enum xport_channel *ch,
			  uint64_t *session);

/* Send one frame: header + payload (len bytes). */
int proto_send(struct xconn *x, uint16_t type, const void *payload, uint32_t len);
/* Send a frame whose payload is header part + data part (no copy of data). */
int proto_send2(struct xconn *x, uint16_t type, const void *a, uint32_t alen,
		const void *b, uint32_t blen);
/*
 * Receive one frame into m (reusing its buffer).  Rejects lengths above
 * PROTO_MAX_PAYLOAD and frames whose length does not fit their type.
 */
int proto_recv(struct xconn *x, struct proto_msg *m);
/*
 * A frame header as proto_recv checks it (pure; fuzzed): sets m->type and
 * m->len, -EPROTO naming the channel and the type when the length exceeds
 * PROTO_MAX_PAYLOAD, does not fit the type, or the type is unknown.
 */
int proto_decode_header(const uint8_t h[PROTO_HDR_LEN], enum xport_channel ch,
			struct proto_msg *m);
/*
 * The same for a session that negotiated frame digests (FEAT_DIGEST):
 * the digest flag is then required, and m->len excludes the 8-byte digest
 * that follows the payload.  Unknown flags are refused either way.
 */
int proto_decode_header_digest(const uint8_t h[PROTO_HDR_LEN], enum xport_channel ch,
			       bool digest, struct proto_msg *m);
void proto_msg_free(struct proto_msg *m);

void proto_encode_hello(struct wbuf *w, const struct proto_hello *h);
/* Checks every field; feature bits other than FEAT_HELLO2 are refused. */
int proto_decode_hello(const struct proto_msg *m, struct proto_hello *h);
/* The source's check of HELLO_ACK: only FEAT_HELLO2 may be accepted. */
int proto_decode_hello_ack(const struct proto_msg *m, uint64_t *features);
void proto_encode_hello2(struct wbuf *w, const struct proto_hello2 *h);
int proto_decode_hello2(const struct proto_msg *m, struct proto_hello2 *h);
void proto_encode_hello2_ack(struct wbuf *w, const struct proto_hello2_ack *a);
int proto_decode_hello2_ack(const struct proto_msg *m, struct proto_hello2_ack *a);
/*
 * The destination's half of HELLO2: pick the highest common version and
 * the offered features it knows; -EPROTONOSUPPORT / -ENOTSUP with a
 * message when the ranges do not meet or a required bit is unknown.
 */
int proto_negotiate(const struct proto_hello2 *h, uint64_t known, struct proto_hello2_ack *out);
/* The source's check of the answer: a version in range, only offered bits. */
int proto_check_ack(const struct proto_hello2 *h, const struct proto_hello2_ack *a);
/* PAGES/ZERO header: the run, checked against npages; data = payload + 16. */
int proto_decode_run(const struct proto_msg *m, uint64_t npages, struct proto_run *r);
/*
 * The next {u64 first page, u32 count} run of a DISCARD or RECOVER_STATE
 * payload at r: 1 with *run, 0 at the end, -EPROTO naming `what` for a
 * cut run, an empty one or one outside [0, npages).  With floor, runs
 * must also ascend without overlap (across frames: *floor carries on),
 * which bounds all of a migration's DISCARDs to O(RAM) work.
 */
int proto_next_run(struct rbuf *r, uint64_t npages, uint64_t *floor, const char *what,
		   struct proto_run *run);
/*
 * The bulk stream's order (pure; fuzzed): may a page run of `type`, or a
 * MARK `mark`, come now in `mode`, before (post = false) or after the
 * pre-copy-done mark?  0, or -EPROTO naming the channel, type and field.
 */
int proto_check_bulk_run(uint32_t mode, bool post, uint16_t type);
int proto_check_mark(uint32_t mode, bool post, uint32_t mark);
int proto_send_error(struct xconn *x, int err, const char *text);
/* Format an ERROR frame's text for a person. */
void proto_error_text(const struct proto_msg *m, char *buf, size_t len);

#endif
