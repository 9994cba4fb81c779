/*
 * cpustate.c - encoding and decoding of struct cpu_state; see cpustate.h
 * and docs/protocol.md.  Field order here IS the format: change it only
 * together with CPU_STATE_VERSION and the document.
 */
#include <errno.h>
#include <string.h>

#include "umig/cpustate.h"
#include "umig/util.h"

uint8_t cpu_ftw_abridge(uint16_t ftw)
{
	uint8_t x = 0;

	for (int p = 0; p < 8; p++)
		if (((ftw >> (2 * p)) & 3) != 3)
			x |= 1u << p;
	return x;
}

uint16_t cpu_ftw_expand(uint8_t ftwx, uint16_t fsw, const uint8_t (*st)[10])
{
	unsigned top = (fsw >> 11) & 7;
	uint16_t ftw = 0;

	for (int p = 0; p < 8; p++) {
		const uint8_t *r = st[(p - top) & 7];
		uint64_t mant;
		unsigned exp = (r[8] | r[9] << 8) & 0x7fff, tag;

		memcpy(&mant, r, 8);
		if (!(ftwx & (1u << p)))
			tag = 3;			/* empty */
		else if (!exp && !mant)
			tag = 1;			/* zero */
		else if (!exp || exp == 0x7fff || !(mant >> 63))
			tag = 2;			/* NaN, infinity, denormal, unnormal */
		else
			tag = 0;			/* valid */
		ftw |= tag << (2 * p);
	}
	return ftw;
}

void cpu_state_encode(const struct cpu_state *s, struct wbuf *w)
{
	wbuf_put_u32(w, CPU_STATE_TAG);
	wbuf_put_u16(w, CPU_STATE_VERSION);
	wbuf_put_u32(w, CPU_STATE_BODY_LEN);
	for (int i = 0; i < GPR_COUNT; i++)
		wbuf_put_u64(w, s->gpr[i]);
	wbuf_put_u64(w, s->rip);
	wbuf_put_u64(w, s->rflags);
	for (int i = 0; i < SEG_COUNT; i++)
		wbuf_put_u16(w, s->seg[i]);
	wbuf_put_u64(w, s->fs_base);
	wbuf_put_u64(w, s->gs_base);
	wbuf_put_u64(w, s->gdtr.base);
	wbuf_put_u32(w, s->gdtr.limit);
	wbuf_put_u64(w, s->idtr.base);
	wbuf_put_u32(w, s->idtr.limit);
	wbuf_put_u64(w, s->cr0);
	wbuf_put_u64(w, s->cr2);
	wbuf_put_u64(w, s->cr3);
	wbuf_put_u64(w, s->cr4);
	wbuf_put_u64(w, s->efer);
	wbuf_put_u16(w, s->fcw);
	wbuf_put_u16(w, s->fsw);
	wbuf_put_u16(w, s->ftw);
	wbuf_put_u16(w, s->fop);
	wbuf_put_u64(w, s->fip);
	wbuf_put_u64(w, s->fdp);
	wbuf_put(w, s->st, sizeof(s->st));
	wbuf_put_u32(w, s->mxcsr);
	wbuf_put(w, s->xmm, sizeof(s->xmm));
}

int cpu_state_decode(struct cpu_state *s, struct rbuf *r)
{
	uint32_t tag = rbuf_get_u32(r);
	uint16_t version = rbuf_get_u16(r);
	uint32_t len = rbuf_get_u32(r);
	struct rbuf b;

	if (r->err)
		return err_set(-EBADMSG, "CPU state truncated in its header");
	if (tag != CPU_STATE_TAG)
		return err_set(-EBADMSG, "CPU state: bad tag 0x%08x (expected \"CPU1\")", tag);
	if (version != CPU_STATE_VERSION)
		return err_set(-EPROTONOSUPPORT,
			       "CPU state version %u not supported (this umig reads %u)",
			       version, CPU_STATE_VERSION);
	if (len != CPU_STATE_BODY_LEN)
		return err_set(-EBADMSG, "CPU state: body is %u bytes, version %u has %u",
			       len, version, (unsigned)CPU_STATE_BODY_LEN);
	rbuf_sub(r, len, &b);
	if (b.err)
		return err_set(-EBADMSG, "CPU state truncated: %u bytes announced, %zu present",
			       len, rbuf_left(r));
	memset(s, 0, sizeof(*s));
	for (int i = 0; i < GPR_COUNT; i++)
		s->gpr[i] = rbuf_get_u64(&b);
	s->rip = rbuf_get_u64(&b);
	s->rflags = rbuf_get_u64(&b);
	for (int i = 0; i < SEG_COUNT; i++)
		s->seg[i] = rbuf_get_u16(&b);
	s->fs_base = rbuf_get_u64(&b);
	s->gs_base = rbuf_get_u64(&b);
	s->gdtr.base = rbuf_get_u64(&b);
	s->gdtr.limit = rbuf_get_u32(&b);
	s->idtr.base = rbuf_get_u64(&b);
	s->idtr.limit = rbuf_get_u32(&b);
	s->cr0 = rbuf_get_u64(&b);
	s->cr2 = rbuf_get_u64(&b);
	s->cr3 = rbuf_get_u64(&b);
	s->cr4 = rbuf_get_u64(&b);
	s->efer = rbuf_get_u64(&b);
	s->fcw = rbuf_get_u16(&b);
	s->fsw = rbuf_get_u16(&b);
	s->ftw = rbuf_get_u16(&b);
	s->fop = rbuf_get_u16(&b);
	s->fip = rbuf_get_u64(&b);
	s->fdp = rbuf_get_u64(&b);
	rbuf_get(&b, s->st, sizeof(s->st));
	s->mxcsr = rbuf_get_u32(&b);
	rbuf_get(&b, s->xmm, sizeof(s->xmm));
	/* the length check above makes both of these impossible; keep them honest */
	if (b.err || rbuf_left(&b))
		return err_set(-EBADMSG, "CPU state: body does not match its length");
	return 0;
}
