/*
 * caps.c - probe the host's kernel features and devices; see caps.h.
 *
 * Each probe does the real thing once on scratch resources (a userfaultfd
 * and a few anonymous pages, /proc/self/pagemap, a 4-entry ring) and
 * records success or the errno.  The probes never fail the caller: a host
 * that lacks something is a result, not an error.
 *
 * cap_table[] below is the single list of capabilities umig cares about,
 * in the spirit of kvmtool's kvm_req_ext[]: a row names the capability,
 * says how to tell it is present, what it is needed for and how to get it.
 * Printing, JSON and caps_require() all walk this table, so adding a row
 * is all it takes to make a new requirement visible everywhere.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <jansson.h>
#include <liburing.h>

#include "umig/caps.h"
#include "umig/compat.h"
#include "umig/log.h"
#include "umig/uffd.h"

#define UFFD_IOCTL_BIT(nr)	((uint64_t)1 << (nr))
#define SCRATCH_PAGES		4

/* ---- probes ------------------------------------------------------------- */

/* Read one integer from a /proc or /sys file.  Returns 0 or -errno. */
static int read_int_file(const char *path, int *val)
{
	FILE *f = fopen(path, "re");
	int ok;

	if (!f)
		return -errno;
	ok = fscanf(f, "%d", val) == 1;
	fclose(f);
	return ok ? 0 : -EINVAL;
}

static void *scratch_map(size_t *len)
{
	void *p;

	*len = SCRATCH_PAGES * (size_t)sysconf(_SC_PAGESIZE);
	p = mmap(NULL, *len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* Only for the diagnosis of a refused open: is user-mode-only allowed? */
static int uffd_open_user_mode_only(void)
{
	long fd = syscall(SYS_userfaultfd, UFFD_USER_MODE_ONLY | O_CLOEXEC | O_NONBLOCK);

	return fd < 0 ? -errno : (int)fd;
}

/*
 * Register a scratch mapping to learn which range ioctls the kernel grants
 * for anonymous memory (the only reliable source: UFFDIO_API's ioctls
 * field lists the non-range ones).  WP is asked for when UFFDIO_API offers
 * it; if that registration fails, MISSING alone is tried.
 */
static void probe_uffd_register(struct caps *c, int fd)
{
	struct uffdio_register reg;
	struct uffdio_range range;
	size_t len;
	void *p = scratch_map(&len);

	if (!p) {
		c->uffd_register_errno = errno;
		pr_debug("caps: scratch mmap failed: %s", strerror(errno));
		return;
	}
	range = (struct uffdio_range){ .start = (uintptr_t)p, .len = len };
	reg = (struct uffdio_register){ .range = range,
					.mode = UFFDIO_REGISTER_MODE_MISSING };
	if (c->uffd_features & UFFD_FEATURE_PAGEFAULT_FLAG_WP)
		reg.mode |= UFFDIO_REGISTER_MODE_WP;
	if (ioctl(fd, UFFDIO_REGISTER, &reg) && (reg.mode & UFFDIO_REGISTER_MODE_WP)) {
		pr_debug("caps: UFFDIO_REGISTER MISSING|WP: %s; retrying MISSING",
			 strerror(errno));
		reg = (struct uffdio_register){ .range = range,
						.mode = UFFDIO_REGISTER_MODE_MISSING };
		ioctl(fd, UFFDIO_REGISTER, &reg);
	}
	if (reg.ioctls) {
		c->uffd_ioctls = reg.ioctls;
		c->uffd_register_wp = reg.mode & UFFDIO_REGISTER_MODE_WP;
		if (ioctl(fd, UFFDIO_UNREGISTER, &range))
			pr_debug("caps: UFFDIO_UNREGISTER: %s", strerror(errno));
	} else {
		c->uffd_register_errno = errno ? errno : EINVAL;
		pr_debug("caps: UFFDIO_REGISTER MISSING: %s", strerror(errno));
	}
	munmap(p, len);
}

static void probe_uffd(struct caps *c)
{
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	int fd, ufd;

	if (read_int_file("/proc/sys/vm/unprivileged_userfaultfd",
			  &c->uffd_unprivileged_sysctl))
		c->uffd_unprivileged_sysctl = -1;

	/* the engine's own open path, so caps says what migration will find */
	fd = uffd_sys_open();
	if (fd < 0) {
		c->uffd_errno = -fd;
		if (fd == -EPERM && !c->is_root) {
			c->uffd_sysctl_blocks = c->uffd_unprivileged_sysctl == 0;
			ufd = uffd_open_user_mode_only();
			if (ufd >= 0) {
				c->uffd_user_mode_only = true;
				close(ufd);
			}
		}
		pr_debug("caps: userfaultfd(2): %s", strerror(-fd));
		return;
	}
	/* features=0 asks for nothing and makes the kernel list everything. */
	if (ioctl(fd, UFFDIO_API, &api)) {
		c->uffd_errno = errno;
		pr_debug("caps: UFFDIO_API: %s", strerror(errno));
		close(fd);
		return;
	}
	c->uffd = true;
	c->uffd_features = api.features;
	probe_uffd_register(c, fd);
	close(fd);
	pr_debug("caps: uffd features %#llx range ioctls %#llx",
		 (unsigned long long)c->uffd_features,
		 (unsigned long long)c->uffd_ioctls);
}

/*
 * PAGEMAP_SCAN over a scratch mapping whose first page is touched.  Old
 * kernels have no ioctl on pagemap (ENOTTY); a kernel that does not know
 * a field or flag answers EINVAL.  Both mean "absent".
 */
static void probe_pagemap_scan(struct caps *c)
{
	struct page_region regs[SCRATCH_PAGES];
	struct pm_scan_arg arg;
	size_t len;
	char *p = scratch_map(&len);
	int fd, n;

	if (!p) {
		c->pagemap_scan_errno = errno;
		return;
	}
	*(volatile char *)p = 1;
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		c->pagemap_scan_errno = errno;
		pr_debug("caps: open /proc/self/pagemap: %s", strerror(errno));
		munmap(p, len);
		return;
	}
	arg = (struct pm_scan_arg){
		.size = sizeof(arg),
		.start = (uintptr_t)p,
		.end = (uintptr_t)p + len,
		.vec = (uintptr_t)regs,
		.vec_len = SCRATCH_PAGES,
		.return_mask = PAGE_IS_PRESENT,
	};
	n = ioctl(fd, PAGEMAP_SCAN, &arg);
	if (n < 0) {
		c->pagemap_scan_errno = errno;
		pr_debug("caps: PAGEMAP_SCAN: %s", strerror(errno));
	} else {
		c->pagemap_scan = true;
		pr_debug("caps: PAGEMAP_SCAN: %d region(s)", n);
	}
	close(fd);
	munmap(p, len);
}

static void probe_io_uring(struct caps *c)
{
	struct io_uring ring;
	int ret;

	if (read_int_file("/proc/sys/kernel/io_uring_disabled",
			  &c->io_uring_disabled_sysctl))
		c->io_uring_disabled_sysctl = -1;
	ret = io_uring_queue_init(4, &ring, 0);
	if (ret < 0) {
		c->io_uring_errno = -ret;
		pr_debug("caps: io_uring_queue_init: %s", strerror(-ret));
		return;
	}
	io_uring_queue_exit(&ring);
	c->io_uring = true;
}

static void probe_kvm(struct caps *c)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		c->kvm_errno = errno;
		pr_debug("caps: open /dev/kvm: %s", strerror(errno));
		return;
	}
	c->kvm_api = ioctl(fd, KVM_GET_API_VERSION, 0);
	close(fd);
	if (c->kvm_api != KVM_API_VERSION) {
		/* a kernel whose KVM speaks another API cannot run umig's backend */
		c->kvm_errno = EPROTO;
		pr_debug("caps: KVM API %d, umig speaks %d", c->kvm_api, KVM_API_VERSION);
		return;
	}
	c->kvm = true;
}

static void probe_rdma(struct caps *c)
{
	DIR *d = opendir("/sys/class/infiniband");
	struct dirent *e;

	c->rdma_devices = 0;
	if (!d)
		return;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			c->rdma_devices++;
	closedir(d);
}

int caps_probe(struct caps *c)
{
	struct utsname u;

	if (!c)
		return -EINVAL;
	memset(c, 0, sizeof(*c));
	if (!uname(&u))
		snprintf(c->kernel, sizeof(c->kernel), "%s", u.release);
	c->is_root = geteuid() == 0;
	probe_uffd(c);
	probe_pagemap_scan(c);
	probe_io_uring(c);
	probe_kvm(c);
	probe_rdma(c);
	return 0;
}

/* ---- the table ------------------------------------------------------------ */

static bool has_uffd(const struct caps *c)
{
	return c->uffd;
}

static bool has_uffd_ioctl(const struct caps *c, int nr)
{
	return c->uffd && (c->uffd_ioctls & UFFD_IOCTL_BIT(nr));
}

static bool has_missing(const struct caps *c)
{
	return has_uffd_ioctl(c, _UFFDIO_COPY);
}

static bool has_zeropage(const struct caps *c)
{
	return has_uffd_ioctl(c, _UFFDIO_ZEROPAGE);
}

static bool has_wp(const struct caps *c)
{
	return c->uffd_register_wp &&
	       (c->uffd_features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) &&
	       has_uffd_ioctl(c, _UFFDIO_WRITEPROTECT);
}

static bool has_wp_async(const struct caps *c)
{
	return has_wp(c) && (c->uffd_features & UFFD_FEATURE_WP_ASYNC);
}

static bool has_wp_unpopulated(const struct caps *c)
{
	return has_wp(c) && (c->uffd_features & UFFD_FEATURE_WP_UNPOPULATED);
}

static bool has_move(const struct caps *c)
{
	return (c->uffd_features & UFFD_FEATURE_MOVE) &&
	       has_uffd_ioctl(c, _UFFDIO_MOVE);
}

static bool has_minor_shmem(const struct caps *c)
{
	return c->uffd && (c->uffd_features & UFFD_FEATURE_MINOR_SHMEM);
}

static bool has_pagemap_scan(const struct caps *c)
{
	return c->pagemap_scan;
}

static bool has_io_uring(const struct caps *c)
{
	return c->io_uring;
}

static bool has_kvm(const struct caps *c)
{
	return c->kvm;
}

/* A device, and a umig that can use it. */
static bool has_rdma(const struct caps *c)
{
	return c->rdma_devices > 0 && caps_rdma_built();
}

static const char *rdma_fix(const struct caps *c)
{
	if (!caps_rdma_built())
		return "this umig was built without RDMA: install libibverbs-dev and librdmacm-dev, "
		       "then rebuild (make deps && make)";
	return NULL;
}

/* The fix depends on why userfaultfd(2) failed, and on who we are. */
static const char *uffd_fix(const struct caps *c)
{
	switch (c->uffd_errno) {
	case EPERM:
		if (!c->is_root && c->uffd_unprivileged_sysctl != 1)
			return "run as root, set vm.unprivileged_userfaultfd=1, or give this "
			       "user read-write access to /dev/userfaultfd";
		return "userfaultfd(2) is refused even though it is allowed "
		       "(seccomp filter or container policy?): allow the "
		       "userfaultfd syscall";
	case ENOSYS:
		return "kernel built without CONFIG_USERFAULTFD: boot a kernel "
		       "with CONFIG_USERFAULTFD=y";
	case EMFILE:
	case ENFILE:
		return "out of file descriptors: raise the limit (ulimit -n)";
	default:
		return NULL;
	}
}

static const char *pagemap_scan_fix(const struct caps *c)
{
	if (c->pagemap_scan_errno == ENOENT)
		return "mount /proc";
	return NULL;
}

static const char *io_uring_fix(const struct caps *c)
{
	switch (c->io_uring_errno) {
	case EPERM:
		if (c->io_uring_disabled_sysctl == 2)
			return "io_uring is disabled: set kernel.io_uring_disabled=0";
		if (c->io_uring_disabled_sysctl == 1)
			return "set kernel.io_uring_disabled=0, or run as a member "
			       "of the group in kernel.io_uring_group";
		return "io_uring_setup(2) is refused (seccomp filter or "
		       "container policy?): allow it";
	case ENOSYS:
		return "kernel built without CONFIG_IO_URING: boot a 5.1+ kernel "
		       "with CONFIG_IO_URING=y";
	case ENOMEM:
		return "raise the locked-memory limit (ulimit -l)";
	default:
		return NULL;
	}
}

static const char *kvm_fix(const struct caps *c)
{
	switch (c->kvm_errno) {
	case EPROTO:
		return "the kernel's KVM reports another API version than 12 "
		       "(KVM_GET_API_VERSION); use a kernel with the stable KVM API";
	case EACCES:
	case EPERM:
		return "give this user read-write access to /dev/kvm "
		       "(usually: add it to group kvm)";
	default:
		return NULL;
	}
}

static int uffd_err(const struct caps *c)
{
	return c->uffd ? c->uffd_register_errno : c->uffd_errno;
}

static int pagemap_scan_err(const struct caps *c)
{
	return c->pagemap_scan_errno;
}

static int io_uring_err(const struct caps *c)
{
	return c->io_uring_errno;
}

static int kvm_err(const struct caps *c)
{
	return c->kvm_errno;
}

static const struct cap_desc {
	const char *name;		/* for people */
	const char *key;		/* for JSON and scripts */
	bool (*present)(const struct caps *);
	const char *needed_for;		/* what a missing one disables */
	const char *fix;		/* how to get it, in general */
	/* optional: the errno to show when missing */
	int (*err)(const struct caps *);
	/* optional: a fix specific to how it failed (NULL: use fix) */
	const char *(*fix_for)(const struct caps *);
	/* built on userfaultfd: when that is missing, its fix comes first */
	bool needs_uffd;
} cap_table[] = {
	{ "userfaultfd", "userfaultfd", has_uffd,
	  "post-copy and hybrid migration (destination)",
	  "use a kernel with CONFIG_USERFAULTFD=y (4.3+)",
	  uffd_err, uffd_fix, false },
	{ "userfaultfd MISSING", "uffd_missing", has_missing,
	  "post-copy and hybrid migration (destination): UFFDIO_COPY places "
	  "fetched pages",
	  "use a 4.3+ kernel that allows anonymous-memory registration",
	  uffd_err, NULL, true },
	{ "UFFDIO_ZEROPAGE", "uffd_zeropage", has_zeropage,
	  "placing all-zero pages without sending them (falls back to "
	  "UFFDIO_COPY of a zero page)",
	  "use a 4.3+ kernel",
	  uffd_err, NULL, true },
	{ "userfaultfd WP", "uffd_wp", has_wp,
	  "pre-copy dirty tracking by write-protection (source)",
	  "use a 5.7+ kernel on an architecture with "
	  "CONFIG_HAVE_ARCH_USERFAULTFD_WP (e.g. x86-64)",
	  uffd_err, NULL, true },
	{ "userfaultfd WP_ASYNC", "uffd_wp_async", has_wp_async,
	  "pre-copy dirty tracking without a fault round-trip per write "
	  "(with PAGEMAP_SCAN)",
	  "use a 6.7+ kernel",
	  uffd_err, NULL, true },
	{ "userfaultfd WP_UNPOPULATED", "uffd_wp_unpopulated", has_wp_unpopulated,
	  "tracking the first write to never-touched guest pages",
	  "use a 6.4+ kernel",
	  uffd_err, NULL, true },
	{ "userfaultfd MOVE", "uffd_move", has_move,
	  "zero-copy page placement on the destination (falls back to "
	  "UFFDIO_COPY)",
	  "use a 6.8+ kernel",
	  uffd_err, NULL, true },
	{ "userfaultfd MINOR_SHMEM", "uffd_minor_shmem", has_minor_shmem,
	  "--ram-backing memfd --placement continue (destination): pages written "
	  "into the memfd and mapped with UFFDIO_CONTINUE (the default, copy, needs none)",
	  "use a 5.14+ kernel",
	  uffd_err, NULL, true },
	{ "PAGEMAP_SCAN", "pagemap_scan", has_pagemap_scan,
	  "pre-copy dirty tracking (find and re-protect written pages in one "
	  "call)",
	  "use a 6.7+ kernel",
	  pagemap_scan_err, pagemap_scan_fix, false },
	{ "io_uring", "io_uring", has_io_uring,
	  "TCP transport bulk path (falls back to plain send)",
	  "use a 5.1+ kernel with CONFIG_IO_URING=y and kernel.io_uring_disabled=0",
	  io_uring_err, io_uring_fix, false },
	{ "/dev/kvm", "kvm", has_kvm,
	  "KVM vCPU backend, API 12 (--vcpu kvm; --vcpu auto uses Unicorn instead)",
	  "load kvm-intel or kvm-amd (needs VT-x/AMD-V, or nested "
	  "virtualisation inside a VM)",
	  kvm_err, kvm_fix, false },
	{ "RDMA devices", "rdma", has_rdma,
	  "RDMA transport (--transport rdma; TCP is used without it)",
	  "add an RDMA NIC, or a soft-RoCE device: "
	  "rdma link add rxe0 type rxe netdev <ifname>",
	  NULL, rdma_fix, false },
};

#define CAP_COUNT (sizeof(cap_table) / sizeof(cap_table[0]))

static const struct cap_desc *cap_find(const char *name)
{
	size_t i;

	for (i = 0; name && i < CAP_COUNT; i++)
		if (!strcasecmp(name, cap_table[i].name) ||
		    !strcasecmp(name, cap_table[i].key))
			return &cap_table[i];
	return NULL;
}

static const char *cap_fix(const struct cap_desc *d, const struct caps *c)
{
	const char *s = NULL;

	if (d->needs_uffd && !c->uffd)
		d = &cap_table[0];
	if (d->fix_for)
		s = d->fix_for(c);
	return s ? s : d->fix;
}

static int cap_errno(const struct cap_desc *d, const struct caps *c)
{
	return d->err ? d->err(c) : 0;
}

/* "EPERM", or "errno 4242" for a number glibc does not know. */
static const char *errno_name(int err, char *buf, size_t len)
{
	const char *s = strerrorname_np(err);

	if (s)
		return s;
	snprintf(buf, len, "errno %d", err);
	return buf;
}

bool caps_has(const struct caps *c, const char *name)
{
	const struct cap_desc *d = cap_find(name);

	if (!d) {
		pr_warn("caps: unknown capability '%s'", name ? name : "(null)");
		return false;
	}
	return c && d->present(c);
}

int caps_require(const struct caps *c, const char *const *names,
		 char *why, size_t len)
{
	const struct cap_desc *d;
	char ebuf[24], paren[40] = "";
	int err;

	if (why && len)
		why[0] = '\0';
	for (; c && names && *names; names++) {
		d = cap_find(*names);
		if (!d) {
			if (why && len)
				snprintf(why, len, "unknown capability '%s'", *names);
			return -EINVAL;
		}
		if (d->present(c))
			continue;
		err = cap_errno(d, c);
		if (err)
			snprintf(paren, sizeof(paren), " (%s)",
				 errno_name(err, ebuf, sizeof(ebuf)));
		if (why && len)
			snprintf(why, len, "%s missing%s: needed for %s; fix: %s",
				 d->name, paren, d->needed_for, cap_fix(d, c));
		return -ENOTSUP;
	}
	return c ? 0 : -EINVAL;
}

/* ---- output ------------------------------------------------------------- */

static void cap_status(const struct cap_desc *d, const struct caps *c,
		       char *buf, size_t len)
{
	char ebuf[24];
	int err;

	if (d->present(c)) {
		if (d->present == has_rdma)
			snprintf(buf, len, "yes (%d)", c->rdma_devices);
		else if (d->present == has_rdma)
			snprintf(buf, len, "no");
		else if (d->present == has_kvm)
			snprintf(buf, len, "yes (API %d)", c->kvm_api);
		else
			snprintf(buf, len, "yes");
		return;
	}
	err = cap_errno(d, c);
	if (err)
		snprintf(buf, len, "no (%s)", errno_name(err, ebuf, sizeof(ebuf)));
	else
		snprintf(buf, len, "no");
}

void caps_print(const struct caps *c, FILE *out)
{
	int namew = (int)strlen("CAPABILITY"), statw = (int)strlen("PRESENT");
	char status[CAP_COUNT][40];
	size_t i;

	for (i = 0; i < CAP_COUNT; i++) {
		cap_status(&cap_table[i], c, status[i], sizeof(status[i]));
		if ((int)strlen(cap_table[i].name) > namew)
			namew = (int)strlen(cap_table[i].name);
		if ((int)strlen(status[i]) > statw)
			statw = (int)strlen(status[i]);
	}
	fprintf(out, "umig host capabilities (kernel %s)\n\n",
		c->kernel[0] ? c->kernel : "unknown");
	fprintf(out, "%-*s  %-*s  %s\n", namew, "CAPABILITY", statw, "PRESENT",
		"NEEDED FOR");
	for (i = 0; i < CAP_COUNT; i++) {
		const struct cap_desc *d = &cap_table[i];

		fprintf(out, "%-*s  %-*s  %s\n", namew, d->name, statw,
			status[i], d->needed_for);
		if (!d->present(c))
			fprintf(out, "%-*s  %-*s  fix: %s\n", namew, "", statw,
				"", cap_fix(d, c));
	}
	caps_rdma_print(out);
	fprintf(out, "\nuserfaultfd features %#llx, range ioctls %#llx\n",
		(unsigned long long)c->uffd_features,
		(unsigned long long)c->uffd_ioctls);
	if (!c->is_root)
		fprintf(out, "vm.unprivileged_userfaultfd = %d%s\n",
			c->uffd_unprivileged_sysctl,
			c->uffd_user_mode_only ?
			" (user-mode-only userfaultfd is allowed)" : "");
}

/* json_object_set_new() that remembers the first failure in *err. */
static void jset(json_t *obj, const char *key, json_t *val, int *err)
{
	if (!val || json_object_set_new(obj, key, val))
		*err = -ENOMEM;
}

static json_t *cap_missing_json(const struct cap_desc *d, const struct caps *c,
				int *err)
{
	json_t *m = json_object();
	char ebuf[24];
	int e = cap_errno(d, c);

	if (!m) {
		*err = -ENOMEM;
		return NULL;
	}
	jset(m, "name", json_string(d->name), err);
	jset(m, "errno", e ? json_string(errno_name(e, ebuf, sizeof(ebuf)))
			   : json_null(), err);
	jset(m, "needed_for", json_string(d->needed_for), err);
	jset(m, "fix", json_string(cap_fix(d, c)), err);
	return m;
}

int caps_print_json(const struct caps *c, FILE *out)
{
	json_t *root = json_object(), *missing = json_object();
	char hex[24];
	size_t i;
	int err = 0;

	if (!root || !missing) {
		json_decref(root);
		json_decref(missing);
		return -ENOMEM;
	}
	jset(root, "kernel", json_string(c->kernel), &err);
	for (i = 0; i < CAP_COUNT; i++) {
		const struct cap_desc *d = &cap_table[i];

		jset(root, d->key, json_boolean(d->present(c)), &err);
		if (!d->present(c))
			jset(missing, d->key, cap_missing_json(d, c, &err), &err);
	}
	snprintf(hex, sizeof(hex), "%#llx", (unsigned long long)c->uffd_features);
	jset(root, "uffd_features", json_string(hex), &err);
	snprintf(hex, sizeof(hex), "%#llx", (unsigned long long)c->uffd_ioctls);
	jset(root, "uffd_ioctls", json_string(hex), &err);
	jset(root, "rdma_devices", json_integer(c->rdma_devices), &err);
	jset(root, "rdma_built", json_boolean(caps_rdma_built()), &err);
	jset(root, "rdma_ports", caps_rdma_json(), &err);
	jset(root, "kvm_api_version", c->kvm_api > 0 ? json_integer(c->kvm_api) : json_null(),
	     &err);
	jset(root, "missing", missing, &err);
	if (!err && (json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) ||
		     fputc('\n', out) == EOF || ferror(out)))
		err = -EIO;
	json_decref(root);
	return err;
}
