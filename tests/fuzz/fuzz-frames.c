/*
 * fuzz-frames.c - libFuzzer harness for the migration frame decoder: every
 * message type, on every channel and in both directions, through the
 * decoders the receivers use, never the steps that apply them.
 *
 * Input: byte 0 says which stream the rest is and how the session was
 * negotiated; the rest is that stream after its greeting, cut into frames
 * by proto_decode_header() exactly as proto_recv() cuts them:
 *   bits 0-2  0 control (source -> destination), 1 control (destination ->
 *             source), 2 bulk, 3 urgent (source -> destination: PAGE),
 *             4 urgent (destination -> source: REQ); others as 0
 *   bits 3-4  the migration mode (stop-copy, pre, post, hybrid)
 *   bit 5     every known feature negotiated (else none)
 * Each frame goes to its decoder: HELLO, HELLO2 with the negotiation,
 * HELLO_ACK, HELLO2_ACK with the source's check, ERROR's text, DISCARD
 * and RECOVER_STATE runs, RESOLVE, the JSON records; on bulk
 * tcp_decode_bulk() and the stream's order (proto_check_bulk_run,
 * proto_check_mark), on urgent tcp_decode_urgent().  STATE is left to
 * fuzz-state.c.  What a decoder accepts is checked against its contract
 * (a run inside guest RAM, data inside the frame, features only as
 * offered); a breach aborts, which libFuzzer reports as a crash.
 *
 * Seeds: tests/fuzz/corpus/frames/, real streams recorded by
 * tests/faultproxy.py --record and cut by tests/fuzz/seeds.py.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcp.h"
#include "umig/log.h"
#include "umig/proto.h"
#include "umig/util.h"
#include "umig/xport.h"

#define FUZZ_NPAGES 512   /* a 2 MiB guest */

enum fuzz_stream { FS_CTL_S2D, FS_CTL_D2S, FS_BULK, FS_URG_S2D, FS_URG_D2S };

#define fuzz_require(cond)                                                      \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "fuzz-frames: %s broken\n", #cond);    \
			abort();                                                \
		}                                                               \
	} while (0)

struct fuzz_ctx {
	struct xport x;
	uint32_t mode;
	bool post, ended;
	uint64_t discard_end, discarded;
};

static void fuzz_run_ok(const struct proto_msg *m, const struct xev *ev)
{
	fuzz_require(ev->run.n >= 1 && ev->run.pfn < FUZZ_NPAGES &&
		     ev->run.n <= FUZZ_NPAGES - ev->run.pfn);
	if (ev->kind == XEV_RUN && ev->run.enc == XENC_RAW) {
		fuzz_require(ev->run.data >= m->payload && ev->run.len == ev->run.n * PAGE_SIZE);
		fuzz_require(ev->run.data + ev->run.len <= m->payload + m->len);
	}
}

static void fuzz_runs(struct fuzz_ctx *c, const struct proto_msg *m, bool discard)
{
	struct proto_run run;
	struct rbuf r;

	rbuf_init(&r, m->payload, m->len);
	if (!discard)
		rbuf_get_u32(&r);   /* RECOVER_STATE's flags */
	while (proto_next_run(&r, FUZZ_NPAGES, discard ? &c->discard_end : NULL,
			      discard ? "DISCARD" : "present", &run) > 0) {
		fuzz_require(run.n && run.pfn + run.n <= FUZZ_NPAGES);
		if (discard) {
			c->discarded += run.n;
			/* ascending and disjoint: O(RAM) work for all of them */
			fuzz_require(c->discarded <= FUZZ_NPAGES && c->discard_end == run.pfn + run.n);
		}
	}
}

static void fuzz_hello2(const struct proto_msg *m)
{
	struct proto_hello2 h;
	struct proto_hello2_ack a;
	uint64_t known = FEAT_KNOWN & ~FEAT_HELLO2;

	if (proto_decode_hello2(m, &h) < 0 || proto_negotiate(&h, known, &a) < 0)
		return;
	fuzz_require(a.version >= 2 && a.version <= PROTO_VERSION_MAX);
	fuzz_require(a.version >= h.min_version && a.version <= h.max_version);
	fuzz_require(!(a.features & ~(h.offered & known)) && !(h.required & ~a.features));
}

static void fuzz_hello2_ack(const struct proto_msg *m)
{
	/* what src_negotiate offers */
	struct proto_hello2 h = { .min_version = 2, .max_version = PROTO_VERSION_MAX,
				  .offered = FEAT_KNOWN & ~FEAT_HELLO2 };
	struct proto_hello2_ack a;

	if (proto_decode_hello2_ack(m, &a) < 0 || proto_check_ack(&h, &a) < 0)
		return;
	fuzz_require(a.version >= 2 && a.version <= PROTO_VERSION_MAX && !(a.features & ~h.offered));
}

static void fuzz_control(struct fuzz_ctx *c, const struct proto_msg *m)
{
	struct proto_hello h;
	uint64_t features;
	char text[1100];
	json_t *j;

	switch (m->type) {
	case MSG_HELLO:
		if (!proto_decode_hello(m, &h))
			fuzz_require(h.mode <= MIG_MODE_HYBRID && !(h.features & ~FEAT_HELLO2));
		break;
	case MSG_HELLO2: fuzz_hello2(m); break;
	case MSG_HELLO_ACK:
		if (!proto_decode_hello_ack(m, &features))
			fuzz_require(!(features & ~FEAT_HELLO2));
		break;
	case MSG_HELLO2_ACK: fuzz_hello2_ack(m); break;
	case MSG_ERROR:
		proto_error_text(m, text, sizeof(text));
		for (char *p = text; *p; p++)
			fuzz_require(*p >= 0x20 && *p < 0x7f);
		break;
	case MSG_DISCARD: fuzz_runs(c, m, true); break;
	case MSG_RECOVER_STATE: fuzz_runs(c, m, false); break;
	case MSG_SRC_STATS:
	case MSG_COMPLETE:
		j = json_loadb((const char *)m->payload, m->len, 0, NULL);
		json_decref(j);
		break;
	default:
		break;   /* fixed-length frames: the header check is their decoder */
	}
}

static void fuzz_bulk(struct fuzz_ctx *c, const struct proto_msg *m)
{
	struct xev ev;

	memset(&ev, 0, sizeof(ev));
	if (tcp_decode_bulk(&c->x, m, &ev) != 1) {
		c->ended = true;   /* the receiver stops at the first bad frame */
		return;
	}
	if (ev.kind == XEV_RUN) {
		fuzz_run_ok(m, &ev);
		c->ended = proto_check_bulk_run(c->mode, c->post, m->type) < 0;
		return;
	}
	fuzz_require(ev.kind == XEV_MARK);
	if (proto_check_mark(c->mode, c->post, ev.mark) < 0 || ev.mark == MARK_BULK_END)
		c->ended = true;
	else if (ev.mark == MARK_PRECOPY_DONE)
		c->post = true;
}

static void fuzz_urgent(struct fuzz_ctx *c, const struct proto_msg *m)
{
	struct xev ev;

	memset(&ev, 0, sizeof(ev));
	if (tcp_decode_urgent(&c->x, m, &ev) != 1) {
		c->ended = true;
		return;
	}
	fuzz_require(ev.kind == (c->x.source ? XEV_REQ : XEV_RUN) && ev.run.n == 1);
	fuzz_run_ok(m, &ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_ctx c = { .x.npages = FUZZ_NPAGES };
	enum fuzz_stream s;
	enum xport_channel ch;
	size_t off = 1;

	if (size < 1)
		return 0;
	s = data[0] & 7;
	s = s > FS_URG_D2S ? FS_CTL_S2D : s;
	c.mode = (data[0] >> 3) & 3;
	c.x.features = data[0] & 0x20 ? FEAT_KNOWN : 0;
	c.x.source = s == FS_CTL_D2S || s == FS_URG_D2S;
	ch = s <= FS_CTL_D2S ? XCH_CONTROL : s == FS_BULK ? XCH_BULK : XCH_URGENT;
	while (!c.ended && size - off >= PROTO_HDR_LEN) {
		struct proto_msg m = { 0 };

		if (proto_decode_header(data + off, ch, &m) < 0)
			break;
		off += PROTO_HDR_LEN;
		if (m.len > size - off)
			break;   /* truncated: proto_recv fails the same way */
		fuzz_require(m.len <= PROTO_MAX_PAYLOAD);
		/* an exact copy, as proto_recv makes, so ASan sees a read past the payload */
		m.payload = malloc(m.len + 1);
		if (!m.payload)
			abort();
		memcpy(m.payload, data + off, m.len);
		m.payload[m.len] = 0;
		m.cap = m.len + 1;
		off += m.len;
		if (ch == XCH_CONTROL)
			fuzz_control(&c, &m);
		else if (ch == XCH_BULK)
			fuzz_bulk(&c, &m);
		else
			fuzz_urgent(&c, &m);
		free(m.payload);
	}
	return 0;
}
