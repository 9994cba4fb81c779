/*
 * mig-common.c - what both ends of a migration share: the fault latency
 * samples, the progress line and writing the statistics record.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "umig/log.h"
#include "umig/migrate.h"
#include "umig/util.h"

void mig_params_default(struct mig_params *p)
{
	memset(p, 0, sizeof(*p));
	p->mode = MIG_MODE_POST;
	strcpy(p->transport, "tcp");
	p->streams = 1;
	strcpy(p->prepaging, "bubble");
	p->downtime_limit_ms = 300;
	p->max_rounds = 30;
	p->peer_timeout_ms = MIG_PEER_TIMEOUT_DEFAULT_MS;
	p->recover_timeout_ms = MIG_RECOVER_TIMEOUT_DEFAULT_MS;
}

const char *mig_dirty_track_name(int t)
{
	static const char *const names[] = { "auto", "wp", "kvm-log" };

	return t >= 0 && t < (int)ARRAY_SIZE(names) ? names[t] : "?";
}

void lat_init(struct lat_hist *h)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->lock, NULL);
}

void lat_free(struct lat_hist *h)
{
	free(h->us);
	pthread_mutex_destroy(&h->lock);
}

void lat_add(struct lat_hist *h, uint64_t ns)
{
	uint64_t us = ns / 1000;

	pthread_mutex_lock(&h->lock);
	if (h->n == h->cap) {
		size_t cap = h->cap ? h->cap * 2 : 4096;
		uint32_t *p = realloc(h->us, cap * sizeof(*p));

		if (!p) {
			pthread_mutex_unlock(&h->lock);
			return;
		}
		h->us = p;
		h->cap = cap;
	}
	h->us[h->n++] = us > UINT32_MAX ? UINT32_MAX : us;
	pthread_mutex_unlock(&h->lock);
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

double lat_percentile(struct lat_hist *h, double p)
{
	double v = 0;

	pthread_mutex_lock(&h->lock);
	if (h->n) {
		/* sorting in place is fine: order of samples carries no meaning */
		qsort(h->us, h->n, sizeof(*h->us), cmp_u32);
		size_t i = (size_t)((p / 100.0) * (h->n - 1) + 0.5);

		v = h->us[i < h->n ? i : h->n - 1];
	}
	pthread_mutex_unlock(&h->lock);
	return v;
}

json_t *lat_histogram(struct lat_hist *h)
{
	uint64_t counts[33] = { 0 };
	json_t *a = json_array();

	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->n; i++) {
		unsigned b = 0;

		while (b < 32 && h->us[i] > (1u << b))
			b++;
		counts[b]++;
	}
	pthread_mutex_unlock(&h->lock);
	for (unsigned b = 0; b < 33; b++)
		if (counts[b])
			json_array_append_new(a, json_pack("[I, I]", (json_int_t)1 << b,
							  (json_int_t)counts[b]));
	return a;
}

void progress_init(struct mig_progress *pr, const char *side, bool quiet)
{
	memset(pr, 0, sizeof(*pr));
	pr->enabled = !quiet && isatty(STDERR_FILENO);
	pr->start_ns = now_ns();
	pr->side = side;
}

void progress_update(struct mig_progress *pr, const char *phase, uint64_t done,
		     uint64_t total, uint64_t bytes, uint64_t faults, bool force)
{
	uint64_t t = now_ns();
	double secs, mbs, eta;

	if (!pr->enabled || (!force && t - pr->last_ns < 200000000ull))
		return;
	pr->last_ns = t;
	secs = (t - pr->start_ns) / 1e9;
	mbs = secs > 0 ? bytes / 1e6 / secs : 0;
	eta = done && total > done ? secs * (total - done) / done : 0;
	fprintf(stderr, "\rumig[%s]: %-10s %llu/%llu pages  %.0f MB/s  %llu faults  ETA %.1fs   ",
		pr->side, phase, (unsigned long long)done, (unsigned long long)total, mbs,
		(unsigned long long)faults, eta);
}

void progress_note(struct mig_progress *pr, const char *state)
{
	if (!pr->enabled)
		return;
	pr->last_ns = now_ns();
	fprintf(stderr, "\rumig[%s]: %-16s %-50s", pr->side, state,
		!strcmp(state, "outcome-unknown") ? "guest paused until the commit is settled" :
		!strcmp(state, "postcopy-paused") ? "a link broke: waiting to reconnect" :
		"reconnected: re-synchronising pages");
}

void progress_end(struct mig_progress *pr)
{
	if (pr->enabled && pr->last_ns)
		fputc('\n', stderr);
	pr->last_ns = 0;
}

int mig_write_json(const char *path, json_t *rec)
{
	char tmp[1100];

	if (!path || !*path)
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_dump_file(rec, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) < 0)
		return err_set(-EIO, "cannot write statistics to '%s'", tmp);
	if (rename(tmp, path) < 0)
		return err_set(-errno, "cannot write statistics to '%s': %s", path, strerror(errno));
	return 0;
}
