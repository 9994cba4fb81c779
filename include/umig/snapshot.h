/*
 * snapshot.h - stop-and-copy to a file, and back.
 *
 * File layout (docs/snapshot.md):
 *   header   "UMIGSNAP", u32 version, u32 page size, u64 RAM bytes, u64 flags
 *   sections u32 type, u32 zero, u64 length, payload
 *     STATE  the machine state record (state.c)
 *     RAM    u64 first page, u32 page count, u32 zero, the pages' bytes;
 *            only non-zero pages are stored, so a sparse guest stays small
 *     END    u64 XXH3-64 of every byte before the checksum itself; last
 * A reader checks every length against the file and the RAM size before
 * using it, and names what is wrong: truncated, corrupted, wrong version.
 */
#ifndef UMIG_SNAPSHOT_H
#define UMIG_SNAPSHOT_H

#include <stdint.h>
#include <stdio.h>

#include "umig/vm.h"

#define SNAP_MAGIC   "UMIGSNAP"
#define SNAP_VERSION 1

struct snapshot_info {
	uint64_t ram_size;
	uint64_t pages_stored;    /* non-zero pages written / read */
	uint64_t pages_zero;      /* zero pages skipped */
	uint64_t file_bytes;
};

/*
 * Write a snapshot of a paused VM to path (atomically: path.tmp, rename).
 * The file is mode 0600: it holds the guest's memory.
 */
int snapshot_write(struct vm *vm, const char *path, struct snapshot_info *info);
/* Read only the header: the RAM size needed to create the VM. */
int snapshot_read_header(const char *path, uint64_t *ram_size);
/* Fill a freshly created VM of the right size from path. */
int snapshot_load(struct vm *vm, const char *path, struct snapshot_info *info);
/* The same from an open stream (the caller closes it): for the fuzz harness. */
int snapshot_load_file(struct vm *vm, FILE *f, struct snapshot_info *info);

#endif
