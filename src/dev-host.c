/*
 * dev-host.c - the host identity device: an `in` from port 0x524 returns a
 * nonzero 32-bit value that names the umig process running the guest.  It
 * stays the same for as long as the guest runs in one process and is drawn
 * afresh (getrandom) by each process, so a guest that compares it with the
 * value it read at boot learns that it has been migrated or restored
 * elsewhere: the idea of a VM generation ID, without any state to carry.
 * Stateless, and it writes no device state record, so a stream to an umig
 * that lacks the device stays acceptable there.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#include "umig/devices.h"
#include "umig/guest-abi.h"
#include "umig/util.h"

#define HOST_ID 0x54534f48u /* "HOST" */

static uint32_t host_in(struct device *d, uint16_t port, unsigned size)
{
	return port == UMIG_PORT_HOST_ID ? (uint32_t)(uintptr_t)d->priv : 0xffffffffu;
}

static const struct device_ops host_ops = {
	.name = "host",
	.id = HOST_ID,
	.port = UMIG_PORT_HOST_ID,
	.nports = 4,
	.in = host_in,
	.no_state = true,
};

/* A value no other process is likely to draw: never 0 nor all ones. */
static uint32_t host_draw(void)
{
	uint32_t v = 0;

	for (int i = 0; i < 8 && (v == 0 || v == 0xffffffffu); i++)
		if (getrandom(&v, sizeof(v), 0) != sizeof(v))
			v = (uint32_t)(now_ns() ^ (uint64_t)getpid() << 16);
	return v == 0 || v == 0xffffffffu ? 1 : v;
}

int host_register(struct pio_bus *b, struct vm *vm)
{
	return pio_register(b, &host_ops, vm, (void *)(uintptr_t)host_draw());
}

uint32_t host_id(struct pio_bus *b)
{
	struct device *d = pio_find(b, "host");

	return d ? (uint32_t)(uintptr_t)d->priv : 0;
}
