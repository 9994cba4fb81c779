/*
 * mig-options.c - the table of migration options (migopts.h).
 *
 * Adding an option is one row here: its command-line name, its name on
 * the control socket, the unit shown in --help, and a setter that takes
 * a string (JSON numbers and booleans are turned into the same strings,
 * so both front ends go through the same checks).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "umig/codec.h"
#include "umig/log.h"
#include "umig/migopts.h"
#include "umig/prepage.h"
#include "umig/util.h"
#include "umig/xport.h"
#include "umig/xsec.h"

struct migopt {
	const char *name;   /* --name */
	const char *json;   /* member of the control socket's "migrate" */
	const char *arg;    /* NULL: a flag */
	const char *help;
	int (*set)(struct mig_params *p, const char *v);
	json_t *(*get)(const struct mig_params *p);
};

/* set_FIELD and get_FIELD of a flag that only sets a bool of struct mig_params ("false" clears it) */
#define MIGOPT_BOOL(field)                                                  \
	static int set_##field(struct mig_params *p, const char *v)         \
	{                                                                   \
		p->field = strcmp(v, "false") != 0;                         \
		return 0;                                                   \
	}                                                                   \
	static json_t *get_##field(const struct mig_params *p)              \
	{                                                                   \
		return json_boolean(p->field);                              \
	}
#define MIGOPT_FLAG(field) set_##field, get_##field

MIGOPT_BOOL(rdma_poll)
MIGOPT_BOOL(rdma_odp)
MIGOPT_BOOL(rdma_plaintext_pages)
MIGOPT_BOOL(quiet)
MIGOPT_BOOL(insecure)
MIGOPT_BOOL(auto_converge)
MIGOPT_BOOL(dynamic_rate)

static int set_mode(struct mig_params *p, const char *v)
{
	return mig_mode_parse(v, &p->mode);
}

static json_t *get_mode(const struct mig_params *p)
{
	return json_string(mig_mode_name(p->mode));
}

static int set_string(char *dst, size_t cap, const char *v, const char *what)
{
	if (strlen(v) >= cap)
		return err_set(-EINVAL, "%s: '%s' is too long", what, v);
	strcpy(dst, v);
	return 0;
}

static int set_transport(struct mig_params *p, const char *v)
{
	int ret = xport_known(v);

	return ret < 0 ? ret : set_string(p->transport, sizeof(p->transport), v, "transport");
}

static json_t *get_transport(const struct mig_params *p)
{
	return json_string(p->transport);
}

static int set_prepaging(struct mig_params *p, const char *v)
{
	if (!prepage_known(v))
		return err_set(-EINVAL, "unknown pre-paging policy '%s' (%s)", v, prepage_names());
	return set_string(p->prepaging, sizeof(p->prepaging), v, "prepaging");
}

static json_t *get_prepaging(const struct mig_params *p)
{
	return json_string(p->prepaging);
}

int migopt_ms(const char *v, unsigned lo, unsigned hi, unsigned *out)
{
	uint64_t ms;

	if (parse_u64(v, &ms) || ms < lo || ms > hi)
		return err_set(-EINVAL, "'%s' is not milliseconds (%u..%u)", v, lo, hi);
	*out = ms;
	return 0;
}

static int set_downtime(struct mig_params *p, const char *v)
{
	unsigned ms = 0;
	int ret = migopt_ms(v, 0, 3600000, &ms);

	if (!ret)
		p->downtime_limit_ms = ms;
	return ret;
}

static json_t *get_downtime(const struct mig_params *p)
{
	return json_integer(p->downtime_limit_ms);
}

static int set_rounds(struct mig_params *p, const char *v)
{
	uint64_t n;

	if (parse_u64(v, &n) || n == 0 || n > 10000)
		return err_set(-EINVAL, "'%s' is not a round count (1..10000)", v);
	p->max_rounds = n;
	return 0;
}

static json_t *get_rounds(const struct mig_params *p)
{
	return json_integer(p->max_rounds);
}

static int set_peer_timeout(struct mig_params *p, const char *v)
{
	return migopt_ms(v, MIGOPT_PEER_TIMEOUT_RANGE, &p->peer_timeout_ms);
}

static json_t *get_peer_timeout(const struct mig_params *p)
{
	return json_integer(p->peer_timeout_ms);
}

static int set_recover_timeout(struct mig_params *p, const char *v)
{
	return migopt_ms(v, MIGOPT_RECOVER_TIMEOUT_RANGE, &p->recover_timeout_ms);
}

static json_t *get_recover_timeout(const struct mig_params *p)
{
	return json_integer(p->recover_timeout_ms);
}

static int set_stats(struct mig_params *p, const char *v)
{
	return set_string(p->stats_path, sizeof(p->stats_path), v, "stats");
}

static json_t *get_stats(const struct mig_params *p)
{
	return json_string(p->stats_path);
}

static int set_dup(struct mig_params *p, const char *v)
{
	if (!strcmp(v, "on") || !strcmp(v, "true"))
		p->dup_inflight = MIG_DUP_ON;
	else if (!strcmp(v, "off") || !strcmp(v, "false"))
		p->dup_inflight = MIG_DUP_OFF;
	else if (!strcmp(v, "always"))
		p->dup_inflight = MIG_DUP_ALWAYS;
	else
		return err_set(-EINVAL, "dup-inflight: '%s' is not on, off or always", v);
	return 0;
}

static json_t *get_dup(const struct mig_params *p)
{
	static const char *const names[] = { "on", "off", "always" };

	return json_string(names[p->dup_inflight]);
}

/*
 * A credentials path, made absolute: `umig migrate` hands it to the
 * running umig, whose working directory may be another.
 */
static int set_path(char *dst, size_t cap, const char *v, const char *what)
{
	char *abs;
	int ret;

	if (!*v) {
		*dst = 0;
		return 0;
	}
	abs = realpath(v, NULL);
	if (!abs)
		return err_set(-errno, "%s: %s", v, strerror(errno));
	ret = set_string(dst, cap, abs, what);
	free(abs);
	return ret;
}

static int set_auth_key(struct mig_params *p, const char *v)
{
	int ret = *v ? xsec_check_private(v, "key file") : 0;

	return ret < 0 ? ret : set_path(p->auth_key, sizeof(p->auth_key), v, "auth-key");
}

static json_t *get_auth_key(const struct mig_params *p)
{
	return json_string(p->auth_key);
}

static int set_tls_creds(struct mig_params *p, const char *v)
{
	return set_path(p->tls_creds, sizeof(p->tls_creds), v, "tls-creds");
}

static json_t *get_tls_creds(const struct mig_params *p)
{
	return json_string(p->tls_creds);
}

static int set_compress(struct mig_params *p, const char *v)
{
	enum codec_mode m;
	int ret = codec_mode_parse(v, &m);

	if (!ret)
		p->compress = m;
	return ret;
}

static json_t *get_compress(const struct mig_params *p)
{
	static const char *const names[] = { "none", "lz4", "zstd", "auto" };

	return json_string(p->compress >= 0 && p->compress < 4 ? names[p->compress] : "?");
}

/* A size in bytes with K/M/G suffixes, in lo..hi (0 always allowed: off). */
static int migopt_size(const char *v, uint64_t lo, uint64_t hi, const char *what, uint64_t *out)
{
	uint64_t n;

	if (parse_size(v, &n) || (n && (n < lo || n > hi)))
		return err_set(-EINVAL, "'%s' is not %s (0 = off, or %llu..%llu, K/M/G suffixes)",
			       v, what, (unsigned long long)lo, (unsigned long long)hi);
	*out = n;
	return 0;
}

static int set_delta_cache(struct mig_params *p, const char *v)
{
	return migopt_size(v, 2 * 4096 + 4096, 1ull << 40, "a cache size in bytes",
			   &p->delta_cache);
}

static json_t *get_delta_cache(const struct mig_params *p)
{
	return json_integer(p->delta_cache);
}

static int set_max_bandwidth(struct mig_params *p, const char *v)
{
	return migopt_size(v, 1 << 20, 1ull << 40, "a rate in bytes per second",
			   &p->max_bandwidth);
}

static json_t *get_max_bandwidth(const struct mig_params *p)
{
	return json_integer(p->max_bandwidth);
}

static int set_fallback(struct mig_params *p, const char *v)
{
	if (strcmp(v, "post") && strcmp(v, "none"))
		return err_set(-EINVAL, "'%s' is not a fallback (post or none)", v);
	p->fallback_post = !strcmp(v, "post");
	return 0;
}

static json_t *get_fallback(const struct mig_params *p)
{
	return json_string(p->fallback_post ? "post" : "none");
}

static int set_dirty_track(struct mig_params *p, const char *v)
{
	for (int t = MIG_DIRTY_AUTO; t <= MIG_DIRTY_KVM_LOG; t++)
		if (!strcmp(v, mig_dirty_track_name(t))) {
			p->dirty_track = t;
			return 0;
		}
	return err_set(-EINVAL, "'%s' is not a dirty tracker (auto, wp or kvm-log)", v);
}

static json_t *get_dirty_track(const struct mig_params *p)
{
	return json_string(mig_dirty_track_name(p->dirty_track));
}

static int set_streams(struct mig_params *p, const char *v)
{
	uint64_t n;

	if (parse_u64(v, &n) || n == 0 || n > XSTREAMS_MAX)
		return err_set(-EINVAL, "'%s' is not a stream count (1..%d)", v, XSTREAMS_MAX);
	p->streams = n;
	return 0;
}

static json_t *get_streams(const struct mig_params *p)
{
	return json_integer(p->streams ? p->streams : 1);
}

static const struct migopt migopts[] = {
	{ "mode", "mode", "MODE", "post|pre|hybrid|stop-copy (default post)", set_mode, get_mode },
	{ "transport", "transport", "NAME", "page transport: tcp or rdma (default tcp)", set_transport,
	  get_transport },
	{ "rdma-poll", "rdma_poll", NULL,
	  "rdma: busy-poll completions (a core spins) instead of sleeping on them",
	  MIGOPT_FLAG(rdma_poll) },
	{ "rdma-odp", "rdma_odp", NULL,
	  "rdma, post and hybrid: register guest RAM for READ with on-demand paging, unpinned "
	  "(the device must support ODP for RC reads: umig caps; never run on hardware yet)",
	  MIGOPT_FLAG(rdma_odp) },
	{ "rdma-plaintext-pages", "rdma_plaintext_pages", NULL,
	  "rdma with --auth-key/--tls-creds: accept that the guest's pages cross the RDMA "
	  "network unencrypted (TLS covers only the control connection); refused without it",
	  MIGOPT_FLAG(rdma_plaintext_pages) },
	{ "streams", "streams", "N",
	  "tcp: N bulk connections, each with its own receiver placing pages at the "
	  "destination, 1..16 (default 1)", set_streams, get_streams },
	{ "prepaging", "prepaging", "POLICY",
	  "post-copy push order: linear, bubble, bubble-dir (default bubble)", set_prepaging,
	  get_prepaging },
	{ "dup-inflight", "dup_inflight", "on|off|always",
	  "post-copy: a fault on a page still queued behind bulk data is answered on the urgent "
	  "channel too, a counted duplicate (default on; always: whether queued or not, to "
	  "test the duplicate path)", set_dup, get_dup },
	{ "downtime-limit", "downtime_limit_ms", "MS",
	  "pre-copy stops when the rest fits MS milliseconds (default 300)", set_downtime,
	  get_downtime },
	{ "max-rounds", "max_rounds", "N", "pre-copy rounds before stop-and-copy, 1..10000 (default 30)",
	  set_rounds, get_rounds },
	{ "peer-timeout", "peer_timeout_ms", "MS",
	  "a peer silent for MS milliseconds is gone (default 5000)", set_peer_timeout,
	  get_peer_timeout },
	{ "recover-timeout", "recover_timeout_ms", "MS",
	  "post-copy: try this long to recover a broken link (default 600000)",
	  set_recover_timeout, get_recover_timeout },
	{ "compress", "compress", "CODEC",
	  "compress bulk pages: none, lz4, zstd, auto (while the link is the bottleneck; "
	  "default none)", set_compress, get_compress },
	{ "delta-cache", "delta_cache", "SIZE",
	  "pre-copy: cache SIZE bytes of sent pages, re-send them as deltas (default 0: off)",
	  set_delta_cache, get_delta_cache },
	{ "max-bandwidth", "max_bandwidth", "RATE",
	  "bulk pages at most RATE bytes/s, K/M/G suffixes (default 0: unlimited)",
	  set_max_bandwidth, get_max_bandwidth },
	{ "dynamic-rate", "dynamic_rate", NULL,
	  "with --max-bandwidth: pre-copy's first round at a quarter of it, each later round an "
	  "eighth faster, up to all of it; the switchover and post-copy at the full rate",
	  MIGOPT_FLAG(dynamic_rate) },
	{ "auto-converge", "auto_converge", NULL,
	  "pre-copy: throttle the vCPUs while the guest dirties faster than the link",
	  MIGOPT_FLAG(auto_converge) },
	{ "fallback", "fallback", "MODE",
	  "pre: switch to post-copy when rounds stop making progress (post|none, default none)",
	  set_fallback, get_fallback },
	{ "dirty-track", "dirty_track", "TRACKER",
	  "how pre-copy and hybrid find written pages: wp (userfaultfd write-protect, any "
	  "backend), kvm-log (KVM's dirty log, --vcpu kvm only); auto (default): kvm-log "
	  "under KVM, else wp (provisional, docs/architecture.md)", set_dirty_track,
	  get_dirty_track },
	{ "stats", "stats", "FILE", "write the statistics record (docs/metrics.md)", set_stats,
	  get_stats },
	{ "quiet", "quiet", NULL, "no progress line", MIGOPT_FLAG(quiet) },
	{ "auth-key", "auth_key", "FILE",
	  "TLS 1.3 with this pre-shared key (umig keygen FILE; the same file at the destination)",
	  set_auth_key, get_auth_key },
	{ "tls-creds", "tls_creds", "DIR",
	  "TLS 1.3 with X.509: DIR/ca-cert.pem, client-cert.pem, client-key.pem", set_tls_creds,
	  get_tls_creds },
	{ "insecure", "insecure", NULL,
	  "allow plaintext to a non-loopback address (anyone on the path can read the guest)",
	  MIGOPT_FLAG(insecure) },
};

size_t migopt_count(void)
{
	return ARRAY_SIZE(migopts);
}

int migopt_longopts(const struct option *own, struct option *out, size_t cap)
{
	size_t n = 0;

	for (; own[n].name; n++) {
		if (n + 1 >= cap)
			return -ENOSPC;
		out[n] = own[n];
	}
	for (size_t i = 0; i < ARRAY_SIZE(migopts); i++, n++) {
		if (n + 1 >= cap)
			return -ENOSPC;
		out[n] = (struct option){ migopts[i].name,
					  migopts[i].arg ? required_argument : no_argument, NULL,
					  (int)(MIGOPT_BASE + i) };
	}
	out[n] = (struct option){ 0 };
	return 0;
}

int migopt_parse(struct mig_params *p, int opt, const char *arg)
{
	const struct migopt *o;
	int ret;

	if (opt < MIGOPT_BASE || opt >= MIGOPT_BASE + (int)ARRAY_SIZE(migopts))
		return 0;
	o = &migopts[opt - MIGOPT_BASE];
	ret = o->set(p, o->arg ? arg : "true");
	if (ret < 0)
		return err_set(-EINVAL, "--%s: %s", o->name, err_msg(ret));
	return 1;
}

/* A JSON member as the string the command line would have given. */
static int json_as_arg(json_t *v, char *buf, size_t cap)
{
	if (json_is_string(v))
		snprintf(buf, cap, "%s", json_string_value(v));
	else if (json_is_integer(v) && json_integer_value(v) >= 0)
		snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
	else if (json_is_boolean(v))
		snprintf(buf, cap, "%s", json_is_true(v) ? "true" : "false");
	else
		return -EINVAL;
	return 0;
}

int migopt_from_json(struct mig_params *p, json_t *args)
{
	const char *key;
	json_t *v;

	json_object_foreach(args, key, v) {
		const struct migopt *o = NULL;
		char buf[1100];
		int ret;

		if (!strcmp(key, "to"))
			continue;
		for (size_t i = 0; i < ARRAY_SIZE(migopts) && !o; i++)
			if (!strcmp(key, migopts[i].json))
				o = &migopts[i];
		if (!o)
			return err_set(-EINVAL, "unknown migrate argument '%s' (docs/control.md)", key);
		if (json_as_arg(v, buf, sizeof(buf)) < 0 || (!o->arg && !json_is_boolean(v)))
			return err_set(-EINVAL, "'%s': wrong type (%s)", key,
				       o->arg ? o->arg : "true or false");
		ret = o->set(p, buf);
		if (ret < 0)
			return err_set(-EINVAL, "'%s': %s", key, err_msg(ret));
	}
	return 0;
}

json_t *migopt_to_json(const struct mig_params *p)
{
	json_t *o = json_object();

	for (size_t i = 0; i < ARRAY_SIZE(migopts); i++)
		json_object_set_new(o, migopts[i].json, migopts[i].get(p));
	return o;
}

void migopt_help(FILE *out)
{
	for (size_t i = 0; i < ARRAY_SIZE(migopts); i++) {
		char lhs[64];

		snprintf(lhs, sizeof(lhs), "--%s%s%s", migopts[i].name, migopts[i].arg ? " " : "",
			 migopts[i].arg ? migopts[i].arg : "");
		fprintf(out, "  %-22s %s\n", lhs, migopts[i].help);
	}
}
