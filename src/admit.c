/*
 * admit.c - how much memory this host can still give a guest, so that a
 * destination refuses a migration at the handshake (while the source
 * guest still runs untouched) instead of being killed by the OOM killer
 * after the commit, when the guest exists only here.
 *
 * The answer is the smallest of MemAvailable (/proc/meminfo) and, for
 * each memory cgroup from ours up to the root, limit minus usage: cgroup
 * v2 (memory.max, memory.current) or v1 (memory.limit_in_bytes,
 * memory.usage_in_bytes).  An estimate: pages the kernel could reclaim
 * inside a cgroup count as used.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "umig/admit.h"
#include "umig/util.h"

static int read_u64_file(const char *path, uint64_t *v)
{
	char buf[64];
	FILE *f = fopen(path, "re");
	int ok;

	if (!f)
		return -errno;
	ok = fgets(buf, sizeof(buf), f) != NULL;
	fclose(f);
	if (!ok)
		return -EIO;
	if (!strncmp(buf, "max", 3)) {
		*v = UINT64_MAX;
		return 0;
	}
	return sscanf(buf, "%" SCNu64, v) == 1 ? 0 : -EINVAL;
}

static uint64_t meminfo_available(void)
{
	char line[128];
	uint64_t kb = UINT64_MAX;
	FILE *f = fopen("/proc/meminfo", "re");

	if (!f)
		return UINT64_MAX;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %" SCNu64 " kB", &kb) == 1)
			break;
	fclose(f);
	return kb == UINT64_MAX ? kb : kb * 1024;
}

/*
 * Our cgroup path for the memory controller: the v2 line "0::PATH", or
 * the v1 line whose controllers include "memory".  *v1 says which.
 */
static int own_memory_cgroup(char *path, size_t len, bool *v1)
{
	char line[512];
	FILE *f = fopen("/proc/self/cgroup", "re");
	int ret = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char *ctrl = strchr(line, ':'), *p = ctrl ? strchr(ctrl + 1, ':') : NULL;

		if (!p)
			continue;
		*p++ = 0;
		p[strcspn(p, "\n")] = 0;
		if (!strcmp(ctrl + 1, "memory") || strstr(ctrl + 1, "memory,") ||
		    strstr(ctrl + 1, ",memory")) {
			snprintf(path, len, "/sys/fs/cgroup/memory%s", p);
			*v1 = true;
			ret = 0;
			break;
		}
		if (!strcmp(ctrl + 1, "") && line[0] == '0') {
			snprintf(path, len, "/sys/fs/cgroup%s", p);
			*v1 = false;
			ret = 0;   /* keep looking: a v1 memory line wins */
		}
	}
	fclose(f);
	return ret;
}

/* Headroom of one cgroup directory, UINT64_MAX when it has no limit. */
static uint64_t cgroup_headroom(const char *dir, bool v1)
{
	char p[600];
	uint64_t lim, use;

	snprintf(p, sizeof(p), "%s/%s", dir, v1 ? "memory.limit_in_bytes" : "memory.max");
	if (read_u64_file(p, &lim) < 0 || lim >= (1ull << 62))
		return UINT64_MAX;
	snprintf(p, sizeof(p), "%s/%s", dir, v1 ? "memory.usage_in_bytes" : "memory.current");
	if (read_u64_file(p, &use) < 0)
		return UINT64_MAX;
	return lim > use ? lim - use : 0;
}

uint64_t admit_mem_available(char *source, size_t len)
{
	uint64_t best = meminfo_available();
	char dir[512];
	bool v1;

	snprintf(source, len, "MemAvailable");
	if (own_memory_cgroup(dir, sizeof(dir), &v1) < 0)
		return best;
	/* from our cgroup up to the root: bounded by the path's length */
	for (int depth = 0; depth < 64; depth++) {
		uint64_t h = cgroup_headroom(dir, v1);
		char *slash;

		if (h < best) {
			best = h;
			snprintf(source, len, "the memory cgroup %s", dir);
		}
		slash = strrchr(dir, '/');
		if (!slash || slash - dir <= (long)strlen(v1 ? "/sys/fs/cgroup/memory" : "/sys/fs/cgroup"))
			break;
		*slash = 0;
	}
	return best;
}

int admit_guest_ram(uint64_t ram_bytes)
{
	char source[600];
	uint64_t avail = admit_mem_available(source, sizeof(source));

	if (avail == UINT64_MAX || ram_bytes <= avail)
		return 0;
	return err_set(-ENOMEM, "admission: the guest needs %" PRIu64 " MiB of RAM and %s has "
		       "only %" PRIu64 " MiB available; free memory, raise the limit, or pass "
		       "--overcommit to take the risk", ram_bytes >> 20, source, avail >> 20);
}
