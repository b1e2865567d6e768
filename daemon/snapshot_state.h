/*
 * snapshot_state.h - the file that says whether a slot's initial snapshot
 * finished ([source] state_dir, one file per slot).
 *
 * The slot alone cannot tell: PostgreSQL keeps a slot whose creator died
 * half-way through reading the tables, and streaming from it would silently
 * skip every row the snapshot had not reached. So pgfan writes, durably:
 *
 *   "in progress <slot> 0/0"   before CREATE_REPLICATION_SLOT,
 *   "in progress <slot> <lsn>" once the slot exists (its consistent point),
 *   "done <slot> <lsn>"        once every sink holds the snapshot durably,
 *
 * and at start-up an existing slot whose state is "in progress" is dropped
 * and the snapshot starts over (daemon/replication.c). Writes go through a
 * temporary file, fsync and rename, so a crash leaves the old or the new
 * content, never a torn one.
 *
 * No I/O on the loop other than these small synchronous writes, three per
 * snapshot.
 */
#ifndef PGFAN_SNAPSHOT_STATE_H
#define PGFAN_SNAPSHOT_STATE_H

#include "../common/buf.h"
#include "../common/error.h"
#include "../common/lsn.h"

typedef enum SnapStateKind {
    SNAP_STATE_NONE = 0,    /* no file: pgfan never snapshotted this slot here */
    SNAP_STATE_IN_PROGRESS, /* started, not known to be durable everywhere */
    SNAP_STATE_DONE,
} SnapStateKind;

typedef struct SnapState {
    SnapStateKind kind;
    Lsn consistent_lsn; /* LSN_INVALID while the slot was being created */
} SnapState;

/* Appends the path of slot's state file in dir: "<dir>/pgfan-<slot>.snapshot". */
void snap_state_path(Buf *out, const char *dir, const char *slot);

/*
 * Reads slot's state from dir. A missing file is SNAP_STATE_NONE. Fails
 * with ERR_FATAL (and the fix as hint) when the file cannot be read or
 * does not hold what snap_state_write writes for this slot.
 */
bool snap_state_read(const char *dir, const char *slot, SnapState *out, PfError *err);

/* Replaces slot's state in dir durably (see above). ERR_FATAL on failure. */
bool snap_state_write(const char *dir, const char *slot, const SnapState *state, PfError *err);

/* Removes slot's state from dir (a missing file is fine). ERR_FATAL on failure. */
bool snap_state_remove(const char *dir, const char *slot, PfError *err);

/*
 * Checks that dir is a directory pgfan can create files in (before a
 * snapshot needs it): ERR_CONFIG naming [source] state_dir otherwise.
 */
bool snap_state_check_dir(const char *dir, PfError *err);

const char *snap_state_kind_name(SnapStateKind kind);

#endif
