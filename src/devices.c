/*
 * devices.c - the port I/O bus and device state records; see devices.h.
 */
#include <errno.h>
#include <string.h>

#include "umig/devices.h"
#include "umig/log.h"
#include "umig/util.h"

int pio_register(struct pio_bus *b, const struct device_ops *ops, struct vm *vm,
		 void *priv)
{
	for (unsigned i = 0; i < b->n; i++) {
		const struct device_ops *o = b->devs[i].ops;

		if (ops->port < o->port + o->nports && o->port < ops->port + ops->nports)
			return err_set(-EBUSY, "device %s: ports 0x%x.. overlap device %s",
				       ops->name, ops->port, o->name);
		if (ops->id == o->id)
			return err_set(-EBUSY, "device %s: state id clashes with %s",
				       ops->name, o->name);
	}
	if (b->n == PIO_MAX_DEVICES)
		return err_set(-ENOSPC, "device %s: bus is full", ops->name);
	b->devs[b->n++] = (struct device){ .ops = ops, .vm = vm, .priv = priv };
	return 0;
}

static struct device *pio_lookup(struct pio_bus *b, uint16_t port)
{
	for (unsigned i = 0; i < b->n; i++) {
		const struct device_ops *o = b->devs[i].ops;

		if (port >= o->port && port < o->port + o->nports)
			return &b->devs[i];
	}
	return NULL;
}

uint32_t pio_in(struct pio_bus *b, uint16_t port, unsigned size)
{
	struct device *d = pio_lookup(b, port);

	if (!d || !d->ops->in) {
		b->unhandled++;
		pr_debug("pio: in from unhandled port 0x%x", port);
		return ~0u;
	}
	return d->ops->in(d, port, size);
}

void pio_out(struct pio_bus *b, uint16_t port, unsigned size, uint32_t val)
{
	struct device *d = pio_lookup(b, port);

	if (!d || !d->ops->out) {
		b->unhandled++;
		pr_debug("pio: out 0x%x to unhandled port 0x%x", val, port);
		return;
	}
	d->ops->out(d, port, size, val);
}

struct device *pio_find(struct pio_bus *b, const char *name)
{
	for (unsigned i = 0; i < b->n; i++)
		if (!strcmp(b->devs[i].ops->name, name))
			return &b->devs[i];
	return NULL;
}

void devices_save(struct pio_bus *b, struct wbuf *w)
{
	unsigned n = 0;

	for (unsigned i = 0; i < b->n; i++)
		n += !b->devs[i].ops->no_state;
	wbuf_put_u32(w, n);
	for (unsigned i = 0; i < b->n; i++) {
		struct device *d = &b->devs[i];
		size_t len_at;

		if (d->ops->no_state)
			continue;
		wbuf_put_u32(w, d->ops->id);
		len_at = w->len;
		wbuf_put_u32(w, 0);
		if (d->ops->save)
			d->ops->save(d, w);
		wbuf_patch_u32(w, len_at, w->len - len_at - 4);
	}
}

static struct device *pio_find_id(struct pio_bus *b, uint32_t id)
{
	for (unsigned i = 0; i < b->n; i++)
		if (b->devs[i].ops->id == id)
			return &b->devs[i];
	return NULL;
}

int devices_load(struct pio_bus *b, struct rbuf *r)
{
	uint32_t n = rbuf_get_u32(r);

	if (r->err)
		return err_set(-EBADMSG, "device state truncated before its count");
	if (n > 64)
		return err_set(-EBADMSG, "device state claims %u devices", n);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t id = rbuf_get_u32(r);
		uint32_t len = rbuf_get_u32(r);
		struct device *d;
		struct rbuf sub;
		int ret;

		rbuf_sub(r, len, &sub);
		if (r->err)
			return err_set(-EBADMSG, "device state truncated in record %u", i);
		d = pio_find_id(b, id);
		if (!d) {
			/* a device this umig lacks: its state cannot be honoured */
			return err_set(-EPROTONOSUPPORT,
				       "device state: unknown device id 0x%08x", id);
		}
		ret = d->ops->load ? d->ops->load(d, &sub) : 0;
		if (ret < 0)
			return ret;
		if (sub.err || rbuf_left(&sub))
			return err_set(-EBADMSG, "device %s: state record is malformed",
				       d->ops->name);
	}
	return 0;
}

void devices_pause(struct pio_bus *b)
{
	for (unsigned i = 0; i < b->n; i++)
		if (b->devs[i].ops->pause)
			b->devs[i].ops->pause(&b->devs[i]);
}

void devices_resume(struct pio_bus *b)
{
	for (unsigned i = 0; i < b->n; i++)
		if (b->devs[i].ops->resume)
			b->devs[i].ops->resume(&b->devs[i]);
}

void devices_destroy(struct pio_bus *b)
{
	for (unsigned i = 0; i < b->n; i++)
		if (b->devs[i].ops->destroy)
			b->devs[i].ops->destroy(&b->devs[i]);
	b->n = 0;
}
