/*
 * caps.h - what this host can do, probed at run time.
 *
 * umig's migration modes lean on kernel features that come and go with
 * kernel version, config and sysctls (userfaultfd and its WP/MOVE modes,
 * PAGEMAP_SCAN, io_uring) and on hardware (/dev/kvm, RDMA NICs).
 * caps_probe() tries each one for real - it opens a userfaultfd, registers
 * a scratch mapping, issues PAGEMAP_SCAN, sets up a ring - and records the
 * outcome, including the errno when something is missing.
 *
 * Every capability has one row in a kvmtool-style table (src/caps.c) that
 * says what the capability is needed for and how to get it.  Callers ask
 * by name: caps_require() turns the first missing one into a message a
 * person can act on, caps_print()/caps_print_json() show the whole table
 * (`umig caps`).
 *
 * Capability names, as accepted by caps_has()/caps_require() (either the
 * display name or the JSON key, case-insensitive):
 *
 *   display name                  JSON key
 *   userfaultfd                   userfaultfd
 *   userfaultfd MISSING           uffd_missing
 *   UFFDIO_ZEROPAGE               uffd_zeropage
 *   userfaultfd WP                uffd_wp
 *   userfaultfd WP_ASYNC          uffd_wp_async
 *   userfaultfd WP_UNPOPULATED    uffd_wp_unpopulated
 *   userfaultfd MOVE              uffd_move
 *   userfaultfd MINOR_SHMEM       uffd_minor_shmem
 *   PAGEMAP_SCAN                  pagemap_scan
 *   io_uring                      io_uring
 *   /dev/kvm                      kvm
 *   RDMA devices                  rdma
 */
#ifndef UMIG_CAPS_H
#define UMIG_CAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

/*
 * Result of caps_probe().  Plain data: copy it, zero fields to simulate a
 * poorer host in tests.  An *_errno is a positive errno value, 0 when the
 * capability is present (or when there was no error to record).
 */
struct caps {
	/* uname(2) release, e.g. "6.18.4"; "" when unknown. */
	char kernel[65];

	/* userfaultfd(2) + UFFDIO_API succeeded. */
	bool uffd;
	int uffd_errno;
	/*
	 * Only meaningful when not root: vm.unprivileged_userfaultfd is 0,
	 * so an unprivileged userfaultfd(2) is refused with EPERM.
	 */
	bool uffd_sysctl_blocks;
	/*
	 * userfaultfd(2) was refused but UFFD_USER_MODE_ONLY is allowed:
	 * faults from user mode only (not from the kernel, e.g. KVM or a
	 * read(2) into guest memory) could still be handled.
	 */
	bool uffd_user_mode_only;
	/* vm.unprivileged_userfaultfd, -1 when unreadable. */
	int uffd_unprivileged_sysctl;
	bool is_root;

	/* UFFDIO_API with features=0: every feature the kernel offers. */
	uint64_t uffd_features;
	/*
	 * Range ioctls (bit N = _UFFDIO_* number N) that UFFDIO_REGISTER
	 * granted for an anonymous scratch mapping registered with
	 * MODE_MISSING, plus MODE_WP when the kernel has it.
	 */
	uint64_t uffd_ioctls;
	/* Registration with UFFDIO_REGISTER_MODE_WP succeeded. */
	bool uffd_register_wp;
	/* Why registering the scratch mapping failed, when it did. */
	int uffd_register_errno;

	/* PAGEMAP_SCAN ioctl on /proc/self/pagemap (ENOTTY/EINVAL: absent). */
	bool pagemap_scan;
	int pagemap_scan_errno;

	/* io_uring_queue_init() succeeded. */
	bool io_uring;
	int io_uring_errno;
	/* kernel.io_uring_disabled (6.6+), -1 when absent. */
	int io_uring_disabled_sysctl;

	/* open("/dev/kvm", O_RDWR) succeeded and KVM speaks API 12. */
	bool kvm;
	int kvm_errno;		/* EPROTO: another API version */
	int kvm_api;		/* KVM_GET_API_VERSION; 0 when /dev/kvm did not open */

	/* Entries under /sys/class/infiniband; 0 when the dir is missing. */
	int rdma_devices;
};

/*
 * Probe the host and fill *c.  Never fails because something is missing:
 * that is recorded in *c.  Returns 0, or -EINVAL when c is NULL.
 * Cost: a few syscalls and two small mappings; no state is left behind.
 */
int caps_probe(struct caps *c);

/*
 * True when the named capability (see the list above) is present.
 * An unknown name is reported with pr_warn() and answers false.
 */
bool caps_has(const struct caps *c, const char *name);

/*
 * Check every capability in the NULL-terminated names[].  Returns 0 when
 * all are present; -ENOTSUP for the first missing one, writing
 *   "userfaultfd MOVE missing: needed for <what>; fix: <how>"
 * (with "(EPERM)"-style errno after "missing" when one is known) into
 * why[len]; -EINVAL for an unknown name ("unknown capability 'x'").
 * why may be NULL when len is 0.
 */
int caps_require(const struct caps *c, const char *const *names,
		 char *why, size_t len);

/*
 * Human-readable, column-aligned table: name, "yes"/"no (ERRNO)", what it
 * is needed for and, when missing, the fix.
 */
void caps_print(const struct caps *c, FILE *out);

/*
 * The same as one JSON object: one boolean per capability (keyed by the
 * JSON keys above), "uffd_features"/"uffd_ioctls" as hex strings,
 * "rdma_devices", and "missing": {key: {errno, needed_for, fix}}.
 * Returns 0, -ENOMEM, or -EIO when writing failed.
 */
int caps_print_json(const struct caps *c, FILE *out);

/*
 * RDMA (src/caps-rdma.c): whether this umig has the RDMA transport, and
 * every RDMA device's ports (state, link layer, MTU, ODP for RC reads),
 * printed after the table and as "rdma_ports" in JSON.
 */
bool caps_rdma_built(void);
void caps_rdma_print(FILE *out);
json_t *caps_rdma_json(void);

#endif /* UMIG_CAPS_H */
