/*
 * caps-rdma.c - the RDMA part of `umig caps`: each device under
 * /sys/class/infiniband with its ports (state, link layer, active MTU) and,
 * when umig was built with libibverbs, whether the device supports
 * on-demand paging (ODP: registering guest RAM without pinning it) for
 * RC remote reads.  The sysfs part works without the RDMA build, so a
 * host is described even by a umig that cannot use it.
 */
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "umig/caps.h"

#ifdef UMIG_HAVE_RDMA
#include <infiniband/verbs.h>
#endif

static void read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");

	buf[0] = 0;
	if (f && fgets(buf, (int)len, f))
		buf[strcspn(buf, "\n")] = 0;
	if (f)
		fclose(f);
	if (!buf[0])
		snprintf(buf, len, "?");
}

/* "yes", "no" or "unknown (...)" for RC remote-read ODP on device name. */
static const char *odp_support(const char *name)
{
#ifdef UMIG_HAVE_RDMA
	struct ibv_device **l = ibv_get_device_list(NULL);
	const char *ans = "unknown (device not open)";

	for (int i = 0; l && l[i]; i++) {
		struct ibv_device_attr_ex a = { 0 };
		struct ibv_context *ctx;

		if (strcmp(ibv_get_device_name(l[i]), name) || !(ctx = ibv_open_device(l[i])))
			continue;
		if (ibv_query_device_ex(ctx, NULL, &a))
			ans = "unknown (query failed)";
		else
			ans = (a.odp_caps.general_caps & IBV_ODP_SUPPORT) &&
			      (a.odp_caps.per_transport_caps.rc_odp_caps & IBV_ODP_SUPPORT_READ) ? "yes" : "no";
		ibv_close_device(ctx);
	}
	if (l)
		ibv_free_device_list(l);
	return ans;
#else
	(void)name;
	return "unknown (umig built without RDMA)";
#endif
}

/* Calls fn for each port of each device; returns the number of devices. */
static int rdma_walk(void (*fn)(void *arg, const char *dev, const char *port, const char *state,
				const char *link, const char *mtu, const char *odp), void *arg)
{
	DIR *d = opendir("/sys/class/infiniband"), *pd;
	struct dirent *e, *p;
	char path[1024], state[64], link[64], mtu[64];
	int n = 0;

	while (d && (e = readdir(d))) {
		const char *odp;

		if (e->d_name[0] == '.')
			continue;
		n++;
		odp = odp_support(e->d_name);
		snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports", e->d_name);
		pd = opendir(path);
		while (pd && (p = readdir(pd))) {
			if (p->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%s/state",
				 e->d_name, p->d_name);
			read_line(path, state, sizeof(state));
			snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%s/link_layer",
				 e->d_name, p->d_name);
			read_line(path, link, sizeof(link));
			snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%s/active_mtu",
				 e->d_name, p->d_name);
			read_line(path, mtu, sizeof(mtu));
			fn(arg, e->d_name, p->d_name, state, link, mtu, odp);
		}
		if (pd)
			closedir(pd);
	}
	if (d)
		closedir(d);
	return n;
}

static void print_port(void *arg, const char *dev, const char *port, const char *state,
		       const char *link, const char *mtu, const char *odp)
{
	fprintf(arg, "  %-12s port %-2s %-14s %-10s mtu %-6s ODP (RC read) %s\n", dev, port, state,
		link, mtu, odp);
}

void caps_rdma_print(FILE *out)
{
#ifdef UMIG_HAVE_RDMA
	fprintf(out, "\nRDMA transport: built in (libibverbs, librdmacm)\n");
#else
	fprintf(out, "\nRDMA transport: not built (install libibverbs-dev and librdmacm-dev, "
		"then make)\n");
#endif
	if (!rdma_walk(print_port, out))
		fprintf(out, "  no RDMA devices (/sys/class/infiniband is empty or missing)\n");
}

static void json_port(void *arg, const char *dev, const char *port, const char *state,
		      const char *link, const char *mtu, const char *odp)
{
	json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "device", dev, "port", port,
			      "state", state, "link_layer", link, "active_mtu", mtu, "odp_rc_read",
			      odp);

	if (p)
		json_array_append_new(arg, p);
}

json_t *caps_rdma_json(void)
{
	json_t *a = json_array();

	if (a)
		rdma_walk(json_port, a);
	return a;
}

bool caps_rdma_built(void)
{
#ifdef UMIG_HAVE_RDMA
	return true;
#else
	return false;
#endif
}
