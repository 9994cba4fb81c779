/*
 * dev-clock.c - the guest's monotonic clock and its sleep port.
 *
 * Guest time is the time the guest has spent running: it stands still
 * while the VM is paused (a snapshot on disk, a migration's downtime) and
 * continues from the saved value on restore, so the guest never sees its
 * clock jump or run backwards.  Reading CLOCK_LO latches the full 64-bit
 * value so that CLOCK_HI returns the matching high half.
 *
 * SLEEP_US yields the vCPU thread (the host CPU is idle meanwhile); the
 * sleep ends early when the VM is asked to pause, so that a sleeping guest
 * never delays a stop.
 */
#include <errno.h>
#include <stdlib.h>

#include "umig/devices.h"
#include "umig/guest-abi.h"
#include "umig/util.h"
#include "umig/vm.h"

#define CLOCK_ID 0x4b4c4343u /* "CCLK" */

struct gclock {
	pthread_mutex_t lock;   /* the control thread reads the clock too */
	uint64_t base_ns;       /* guest ns accumulated before start_ns */
	uint64_t start_ns;      /* host ns when the guest last resumed */
	bool running;
	uint64_t latch;
};

static uint64_t gclock_now(struct gclock *c)
{
	uint64_t t;

	pthread_mutex_lock(&c->lock);
	t = c->base_ns + (c->running ? now_ns() - c->start_ns : 0);
	pthread_mutex_unlock(&c->lock);
	return t;
}

static uint32_t clock_in(struct device *d, uint16_t port, unsigned size)
{
	struct gclock *c = d->priv;

	switch (port) {
	case UMIG_PORT_CLOCK_LO:
		c->latch = gclock_now(c);
		return (uint32_t)c->latch;
	case UMIG_PORT_CLOCK_HI:
		return c->latch >> 32;
	default:
		return ~0u;
	}
}

static void clock_out(struct device *d, uint16_t port, unsigned size, uint32_t val)
{
	if (port == UMIG_PORT_SLEEP_US)
		vm_vcpu_sleep(d->vm, val);
}

static void clock_pause(struct device *d)
{
	struct gclock *c = d->priv;

	pthread_mutex_lock(&c->lock);
	if (c->running)
		c->base_ns += now_ns() - c->start_ns;
	c->running = false;
	pthread_mutex_unlock(&c->lock);
}

static void clock_resume(struct device *d)
{
	struct gclock *c = d->priv;

	pthread_mutex_lock(&c->lock);
	c->start_ns = now_ns();
	c->running = true;
	pthread_mutex_unlock(&c->lock);
}

static void clock_save(struct device *d, struct wbuf *w)
{
	struct gclock *c = d->priv;

	wbuf_put_u64(w, gclock_now(c));
	wbuf_put_u64(w, c->latch);
}

static int clock_load(struct device *d, struct rbuf *r)
{
	struct gclock *c = d->priv;

	pthread_mutex_lock(&c->lock);
	c->base_ns = rbuf_get_u64(r);
	c->latch = rbuf_get_u64(r);
	c->start_ns = now_ns();
	pthread_mutex_unlock(&c->lock);
	return 0;
}

static void clock_destroy(struct device *d)
{
	struct gclock *c = d->priv;

	pthread_mutex_destroy(&c->lock);
	free(c);
}

static const struct device_ops clock_ops = {
	.name = "clock",
	.id = CLOCK_ID,
	.port = UMIG_PORT_CLOCK_LO,
	.nports = UMIG_PORT_SLEEP_US + 4 - UMIG_PORT_CLOCK_LO,
	.in = clock_in,
	.out = clock_out,
	.save = clock_save,
	.load = clock_load,
	.pause = clock_pause,
	.resume = clock_resume,
	.destroy = clock_destroy,
};

int clock_register(struct pio_bus *b, struct vm *vm)
{
	struct gclock *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->lock, NULL);
	ret = pio_register(b, &clock_ops, vm, c);
	if (ret < 0) {
		pthread_mutex_destroy(&c->lock);
		free(c);
	}
	return ret;
}

uint64_t clock_guest_ns(struct pio_bus *b)
{
	struct device *d = pio_find(b, "clock");

	return d ? gclock_now(d->priv) : 0;
}
