/*
 * dev-serial.c - the guest console: bytes written to port 0x3f8 go to the
 * host's stdout or to the --console file.
 *
 * Output is buffered per line (and flushed on pause), so a guest printing
 * a line costs one write(2), not one per byte.  Its state is the count of
 * bytes the guest has printed, kept across snapshot and migration so that
 * the record of console output stays continuous.
 */
#include <errno.h>
#include <stdlib.h>

#include "umig/devices.h"
#include "umig/guest-abi.h"
#include "umig/util.h"

#define SERIAL_ID 0x4c524553u /* "SERL" */

struct serial {
	int fd;
	size_t n;
	uint64_t total;
	char buf[512];
};

static void serial_flush(struct serial *s)
{
	if (s->n && s->fd >= 0)
		write_full(s->fd, s->buf, s->n);
	s->n = 0;
}

static void serial_out(struct device *d, uint16_t port, unsigned size, uint32_t val)
{
	struct serial *s = d->priv;

	s->buf[s->n++] = (char)val;
	s->total++;
	if ((char)val == '\n' || s->n == sizeof(s->buf))
		serial_flush(s);
}

static void serial_save(struct device *d, struct wbuf *w)
{
	wbuf_put_u64(w, ((struct serial *)d->priv)->total);
}

static int serial_load(struct device *d, struct rbuf *r)
{
	((struct serial *)d->priv)->total = rbuf_get_u64(r);
	return 0;
}

static void serial_pause(struct device *d)
{
	serial_flush(d->priv);
}

static void serial_destroy(struct device *d)
{
	serial_flush(d->priv);
	free(d->priv);
}

static const struct device_ops serial_ops = {
	.name = "serial",
	.id = SERIAL_ID,
	.port = UMIG_PORT_SERIAL,
	.nports = 1,
	.out = serial_out,
	.save = serial_save,
	.load = serial_load,
	.pause = serial_pause,
	.destroy = serial_destroy,
};

int serial_register(struct pio_bus *b, struct vm *vm, int out_fd)
{
	struct serial *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	s->fd = out_fd;
	ret = pio_register(b, &serial_ops, vm, s);
	if (ret < 0)
		free(s);
	return ret;
}

uint64_t serial_bytes(struct pio_bus *b)
{
	struct device *d = pio_find(b, "serial");

	return d ? ((struct serial *)d->priv)->total : 0;
}
