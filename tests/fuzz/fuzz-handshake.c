/*
 * fuzz-handshake.c - libFuzzer harness for the handshake's validation: the
 * greetings and the HELLO / HELLO2 sequence, each side as it checks what
 * its peer sent (mig-handshake.c, xport.c, tcp.c's accept), through the
 * pure decoders those steps call.
 *
 * Input: byte 0 bit 0 picks the side that reads the rest.
 *   destination: the control greeting (16 bytes), then frames: HELLO,
 *                HELLO2 if HELLO offered it, SECRET if FEAT_RECOVER was
 *                negotiated; then the page channels' greetings (16 bytes
 *                each), which must be bulk and urgent of the same session
 *   source:      frames: HELLO_ACK, then HELLO2_ACK if HELLO_ACK accepted
 *                FEAT_HELLO2
 * Bit 1 sets the destination's --mem to 64 MiB (admission checks RAM).
 * What passes is checked against the rules of docs/protocol.md
 * ("Versions and features"); a breach aborts.
 *
 * Seeds: tests/fuzz/corpus/handshake/, the handshakes of recorded real
 * migrations (tests/fuzz/seeds.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "umig/log.h"
#include "umig/proto.h"
#include "umig/util.h"

#define hs_require(cond)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "fuzz-handshake: %s broken\n", #cond); \
			abort();                                                \
		}                                                               \
	} while (0)

struct hs_in {
	const uint8_t *p;
	size_t left;
	struct proto_msg m;
};

/* The next frame, as proto_recv on the control channel would have it; 0 if none. */
static int hs_frame(struct hs_in *in)
{
	free(in->m.payload);
	memset(&in->m, 0, sizeof(in->m));
	if (in->left < PROTO_HDR_LEN || proto_decode_header(in->p, XCH_CONTROL, &in->m) < 0)
		return 0;
	if (in->m.len > in->left - PROTO_HDR_LEN)
		return 0;
	in->m.payload = malloc(in->m.len + 1);
	if (!in->m.payload)
		abort();
	memcpy(in->m.payload, in->p + PROTO_HDR_LEN, in->m.len);
	in->m.payload[in->m.len] = 0;
	in->p += PROTO_HDR_LEN + in->m.len;
	in->left -= PROTO_HDR_LEN + in->m.len;
	return 1;
}

static int hs_greeting(struct hs_in *in, enum xport_channel *ch, uint64_t *session)
{
	int ret;

	if (in->left < PROTO_GREETING_LEN)
		return -1;
	ret = proto_decode_greeting(in->p, ch, session);
	in->p += PROTO_GREETING_LEN;
	in->left -= PROTO_GREETING_LEN;
	if (!ret)
		hs_require(*ch < XCH_COUNT);
	return ret;
}

/* The page channels, as tcp_accept_data takes them: this session's, once each. */
static void hs_data_channels(struct hs_in *in, uint64_t session)
{
	bool seen[XCH_COUNT] = { false };

	for (int i = 0; i < 2; i++) {
		enum xport_channel ch;
		uint64_t s;

		if (hs_greeting(in, &ch, &s) < 0 || ch == XCH_CONTROL || seen[ch] || s != session)
			return;
		seen[ch] = true;
	}
	hs_require(seen[XCH_BULK] && seen[XCH_URGENT]);
}

static void hs_destination(struct hs_in *in, uint64_t expect_ram)
{
	struct proto_hello h;
	struct proto_hello2 h2;
	struct proto_hello2_ack a = { .version = 1 };
	enum xport_channel ch;
	uint64_t session;

	if (hs_greeting(in, &ch, &session) < 0 || ch != XCH_CONTROL)
		return;
	if (!hs_frame(in) || proto_decode_hello(&in->m, &h) < 0)
		return;
	hs_require(h.page_size == PAGE_SIZE && h.mode <= MIG_MODE_HYBRID);
	hs_require(h.ram_size >= (2ull << 20) && h.ram_size <= (1ull << 40) && !(h.ram_size % PAGE_SIZE));
	hs_require(!(h.features & ~FEAT_HELLO2));
	if (expect_ram && h.ram_size != expect_ram)
		return;   /* dst_admit: "RAM size mismatch" */
	if (h.features & FEAT_HELLO2) {
		if (!hs_frame(in) || proto_decode_hello2(&in->m, &h2) < 0 ||
		    proto_negotiate(&h2, FEAT_KNOWN & ~FEAT_HELLO2, &a) < 0)
			return;
		hs_require(a.version >= h2.min_version && a.version <= h2.max_version);
		hs_require(!(a.features & ~h2.offered) && !(a.features & FEAT_HELLO2));
		if ((a.features & FEAT_RECOVER) && (!hs_frame(in) || in->m.type != MSG_SECRET))
			return;
		if (a.features & FEAT_RECOVER)
			hs_require(in->m.len == PROTO_SECRET_LEN);
	}
	hs_data_channels(in, session);
}

static void hs_source(struct hs_in *in)
{
	struct proto_hello2 h = { .min_version = 2, .max_version = PROTO_VERSION_MAX,
				  .offered = FEAT_KNOWN & ~FEAT_HELLO2 };
	struct proto_hello2_ack a;
	uint64_t acked;

	if (!hs_frame(in) || in->m.type == MSG_ERROR || proto_decode_hello_ack(&in->m, &acked) < 0)
		return;
	hs_require(!(acked & ~FEAT_HELLO2));
	if (!(acked & FEAT_HELLO2))
		return;   /* a version 1 session */
	if (!hs_frame(in) || in->m.type == MSG_ERROR || proto_decode_hello2_ack(&in->m, &a) < 0 ||
	    proto_check_ack(&h, &a) < 0)
		return;
	hs_require(a.version >= 2 && a.version <= PROTO_VERSION_MAX && !(a.features & ~h.offered));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hs_in in = { .p = data + 1, .left = size ? size - 1 : 0 };

	if (!size)
		return 0;
	if (data[0] & 1)
		hs_source(&in);
	else
		hs_destination(&in, data[0] & 2 ? 64ull << 20 : 0);
	free(in.m.payload);
	return 0;
}
