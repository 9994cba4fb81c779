/*
 * fuzz-discard.c - libFuzzer harness for DISCARD handling: the runs of
 * every DISCARD frame in a control stream, decoded by proto_next_run()
 * with the ordering floor the destination keeps across frames, and the
 * bookkeeping dst_discard() does with them on the `present` bitmap
 * (mig-switchover.c; the madvise of guest RAM is left out).
 *
 * What it checks is the bound of issue "a DISCARD costs O(its bytes),
 * not O(RAM x runs)": however the runs are framed, all the discards of
 * one migration touch each page at most once, every run lies inside
 * guest RAM, and the present count stays equal to the bitmap's.
 *
 * Input: byte 0 picks the guest's size (2, 8, 16 MiB or 1 GiB); the rest
 * is a control stream (source to destination) after its greeting; frames
 * other than DISCARD are skipped as the destination's state step skips
 * nothing but them.  Seeds: tests/fuzz/corpus/discard/, control streams
 * of recorded hybrid migrations (tests/fuzz/seeds.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "umig/bitmap.h"
#include "umig/log.h"
#include "umig/proto.h"

#define dc_require(cond)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "fuzz-discard: %s broken\n", #cond);   \
			abort();                                                \
		}                                                               \
	} while (0)

static const uint64_t dc_sizes[] = { 512, 2048, 4096, 262144 };

struct dc {
	struct bitmap present;
	uint64_t npages, present_count, floor, touched;
};

/* dst_discard()'s bookkeeping; -EPROTO as it would fail. */
static int dc_apply(struct dc *d, const uint8_t *p, uint32_t len)
{
	struct proto_run run;
	struct rbuf r;
	int ret;

	rbuf_init(&r, p, len);
	while ((ret = proto_next_run(&r, d->npages, &d->floor, "DISCARD", &run)) > 0) {
		dc_require(run.n && run.pfn < d->npages && run.n <= d->npages - run.pfn);
		d->touched += run.n;
		dc_require(d->touched <= d->npages);
		d->present_count -= bitmap_count_range(&d->present, run.pfn, run.n);
		bitmap_clear_range(&d->present, run.pfn, run.n);
	}
	return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dc d;
	size_t off = 1;

	if (size < 1)
		return 0;
	bitmap_free(&d.present);
	memset(&d, 0, sizeof(d));
	d.npages = dc_sizes[data[0] & 3];
	if (bitmap_init(&d.present, d.npages) < 0)
		abort();
	bitmap_set_range(&d.present, 0, d.npages);
	d.present_count = d.npages;
	while (size - off >= PROTO_HDR_LEN) {
		struct proto_msg m = { 0 };
		uint8_t *copy;
		int ret;

		if (proto_decode_header(data + off, XCH_CONTROL, &m) < 0)
			break;
		off += PROTO_HDR_LEN;
		if (m.len > size - off)
			break;
		if (m.type != MSG_DISCARD) {
			off += m.len;
			continue;
		}
		copy = malloc(m.len + 1);   /* exact, so ASan sees a read past it */
		if (!copy)
			abort();
		memcpy(copy, data + off, m.len);
		off += m.len;
		ret = dc_apply(&d, copy, m.len);
		free(copy);
		if (ret < 0)
			break;
	}
	dc_require(d.present_count == bitmap_count(&d.present));
	dc_require(d.present_count + d.touched >= d.npages);
	return 0;
}
