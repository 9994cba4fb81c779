/*
 * dev-heartbeat.c - the guest's progress counter.
 *
 * The guest writes to port 0x520 each time it completes a unit of work.
 * The host timestamps beats with its own monotonic clock and keeps
 *  - a ring of (time, cumulative beats) samples, at most one per
 *    millisecond, from which bench/ draws the guest's progress rate around
 *    a migration;
 *  - the pause/resume times and the first beat after a resume, from which
 *    the migration engine derives guest-perceived blackout;
 *  - the longest gap between beats inside a window the engine opens (e.g.
 *    the post-copy phase, where faults stall the guest).
 * The value the guest writes is its running count of work units (the
 * runtime's rt_tick(); a guest with no finer measure writes its beat
 * count): the device widens it to 64 bits, so the timeline shows progress
 * as well as liveness, which a time-based heartbeat alone cannot.
 * The beat count and the guest's value are device state: they survive
 * snapshot and migration.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "umig/devices.h"
#include "umig/guest-abi.h"
#include "umig/util.h"

#define HB_ID 0x54424848u           /* "HHBT" */
#define HB_RING 65536               /* 65 s of 1 ms samples */
#define HB_SAMPLE_NS 1000000ull

struct heartbeat {
	pthread_mutex_t lock;
	struct hb_stats st;
	bool window;
	uint32_t guest_count;          /* the guest's own count (low 32 bits) */
	uint64_t last_sample_ns;
	size_t head, count;            /* ring: next slot, valid samples */
	struct hb_sample ring[HB_RING];
};

static void hb_push(struct heartbeat *h, uint64_t t)
{
	h->ring[h->head] = (struct hb_sample){ .t_ns = t, .beats = h->st.beats, .work = h->st.work };
	h->head = (h->head + 1) % HB_RING;
	if (h->count < HB_RING)
		h->count++;
	h->last_sample_ns = t;
}

static void hb_out(struct device *d, uint16_t port, unsigned size, uint32_t val)
{
	struct heartbeat *h = d->priv;
	uint64_t t = now_ns();

	pthread_mutex_lock(&h->lock);
	if (h->window && h->st.last_beat_ns && t - h->st.last_beat_ns > h->st.window_max_gap_ns)
		h->st.window_max_gap_ns = t - h->st.last_beat_ns;
	h->st.beats++;
	h->st.last_beat_ns = t;
	/* widen: the difference modulo 2^32 is the progress since the last beat */
	h->st.work += (uint32_t)(val - h->guest_count);
	h->guest_count = val;
	if (!h->st.first_after_resume_ns && h->st.resume_ns)
		h->st.first_after_resume_ns = t;
	if (t - h->last_sample_ns >= HB_SAMPLE_NS)
		hb_push(h, t);
	pthread_mutex_unlock(&h->lock);
}

static void hb_pause(struct device *d)
{
	struct heartbeat *h = d->priv;
	uint64_t t = now_ns();

	pthread_mutex_lock(&h->lock);
	h->st.pause_ns = t;
	hb_push(h, t);  /* so the timeline shows exactly where progress stopped */
	pthread_mutex_unlock(&h->lock);
}

static void hb_resume(struct device *d)
{
	struct heartbeat *h = d->priv;
	uint64_t t = now_ns();

	pthread_mutex_lock(&h->lock);
	h->st.resume_ns = t;
	h->st.first_after_resume_ns = 0;
	h->st.resume_work = h->st.work;
	/* a gap spanning the pause is downtime, not a window gap */
	h->st.last_beat_ns = 0;
	hb_push(h, t);
	pthread_mutex_unlock(&h->lock);
}

static void hb_save(struct device *d, struct wbuf *w)
{
	struct heartbeat *h = d->priv;

	pthread_mutex_lock(&h->lock);
	wbuf_put_u64(w, h->st.beats);
	wbuf_put_u32(w, h->guest_count);
	pthread_mutex_unlock(&h->lock);
}

static int hb_load(struct device *d, struct rbuf *r)
{
	struct heartbeat *h = d->priv;

	pthread_mutex_lock(&h->lock);
	h->st.beats = rbuf_get_u64(r);
	h->guest_count = rbuf_get_u32(r);
	h->st.work = h->guest_count;
	pthread_mutex_unlock(&h->lock);
	return 0;
}

static void hb_destroy(struct device *d)
{
	struct heartbeat *h = d->priv;

	pthread_mutex_destroy(&h->lock);
	free(h);
}

static const struct device_ops hb_ops = {
	.name = "heartbeat",
	.id = HB_ID,
	.port = UMIG_PORT_HEARTBEAT,
	.nports = 4,
	.out = hb_out,
	.save = hb_save,
	.load = hb_load,
	.pause = hb_pause,
	.resume = hb_resume,
	.destroy = hb_destroy,
};

int heartbeat_register(struct pio_bus *b, struct vm *vm)
{
	struct heartbeat *h = calloc(1, sizeof(*h));
	int ret;

	if (!h)
		return -ENOMEM;
	pthread_mutex_init(&h->lock, NULL);
	ret = pio_register(b, &hb_ops, vm, h);
	if (ret < 0) {
		pthread_mutex_destroy(&h->lock);
		free(h);
	}
	return ret;
}

static struct heartbeat *hb_get(struct pio_bus *b)
{
	struct device *d = pio_find(b, "heartbeat");

	return d ? d->priv : NULL;
}

void heartbeat_stats(struct pio_bus *b, struct hb_stats *out)
{
	struct heartbeat *h = hb_get(b);

	memset(out, 0, sizeof(*out));
	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	*out = h->st;
	pthread_mutex_unlock(&h->lock);
}

size_t heartbeat_samples(struct pio_bus *b, uint64_t since_ns,
			 struct hb_sample *out, size_t max)
{
	struct heartbeat *h = hb_get(b);
	size_t first = 0, n, start;

	if (!h)
		return 0;
	pthread_mutex_lock(&h->lock);
	start = (h->head + HB_RING - h->count) % HB_RING;
	/* samples are in time order: skip the old ones, then keep the newest max */
	while (first < h->count && h->ring[(start + first) % HB_RING].t_ns <= since_ns)
		first++;
	if (h->count - first > max)
		first = h->count - max;
	n = h->count - first;
	for (size_t i = 0; i < n; i++)
		out[i] = h->ring[(start + first + i) % HB_RING];
	pthread_mutex_unlock(&h->lock);
	return n;
}

void heartbeat_window(struct pio_bus *b, bool on)
{
	struct heartbeat *h = hb_get(b);

	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	h->window = on;
	if (on)
		h->st.window_max_gap_ns = 0;
	pthread_mutex_unlock(&h->lock);
}

double heartbeat_work_rate(struct pio_bus *b, uint64_t from_ns, uint64_t to_ns)
{
	struct heartbeat *h = hb_get(b);
	struct hb_sample first = { 0 }, last = { 0 };
	size_t start, n = 0;

	if (!h)
		return 0;
	pthread_mutex_lock(&h->lock);
	start = (h->head + HB_RING - h->count) % HB_RING;
	for (size_t i = 0; i < h->count; i++) {
		const struct hb_sample *x = &h->ring[(start + i) % HB_RING];

		if (x->t_ns < from_ns || x->t_ns > to_ns)
			continue;
		if (!n++)
			first = *x;
		last = *x;
	}
	pthread_mutex_unlock(&h->lock);
	if (n < 2 || last.t_ns <= first.t_ns)
		return 0;
	return (double)(last.work - first.work) * 1e9 / (double)(last.t_ns - first.t_ns);
}
