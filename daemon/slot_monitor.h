/*
 * slot_monitor.h - slot safety checks and heartbeats on a normal connection.
 *
 * The replication connection accepts only replication commands and simple
 * queries, and must never wait on anything else, so the monitor keeps a
 * second, ordinary libpq connection to the same database (built from
 * [source] dsn with replication=false; fallback application name
 * "pgfan-monitor"; synchronous_commit=local so a heartbeat never waits for
 * a synchronous standby; statement_timeout bounds every query). On it,
 * from the event loop and never blocking:
 *
 *   - every slot_check_interval: the slot's row of pg_replication_slots
 *     (wal_status, safe_wal_size, restart_lsn, confirmed_flush_lsn, active)
 *     and the retained WAL (current WAL position - restart_lsn). wal_status
 *     "unreserved", or safe_wal_size below slot_warn_safe_wal_size, is a
 *     warning (logged when it starts and when it ends, shown in the status
 *     document and the metrics); "lost" is fatal: slot_monitor_fatal()
 *     returns an ERR_FATAL error naming the recovery, and the daemon stops.
 *   - every heartbeat_interval, while streaming: a non-transactional
 *     pg_logical_emit_message(false, heartbeat_prefix, '{"ts":...}'). Its
 *     transaction also takes an xid, so its commit flushes the WAL at once
 *     (PostgreSQL 15 does not flush a non-transactional message by itself:
 *     measured up to 14 s on an idle server) without putting anything else
 *     in the stream (an xid without changes decodes to nothing). The
 *     function returns the message's end LSN; once the daemon's confirmed
 *     position reaches it (slot_monitor_note_confirmed), the round trip
 *     "written in PostgreSQL -> durable in every sink" is the lag.
 *
 * When the connection fails, it is retried with backoff ([source]
 * reconnect_min/max); streaming never depends on it. Queries and
 * connection attempts that take longer than SLOT_MONITOR_TIMEOUT are
 * abandoned (the connection is dropped and made again).
 *
 * Ownership: owns the connection, the last reading and the heartbeat
 * bookkeeping; borrows cfg (dsn, slot, prefix, backoff limits: not
 * reloadable) and the loop, which must outlive it.
 */
#ifndef PGFAN_SLOT_MONITOR_H
#define PGFAN_SLOT_MONITOR_H

#include "../common/buf.h"
#include "../common/clock.h"
#include "../common/error.h"
#include "../common/loop.h"
#include "../common/lsn.h"
#include "../config/config.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/* A connection attempt or query not finished by then is abandoned. */
#define SLOT_MONITOR_TIMEOUT (30 * USECS_PER_SEC)

/* Heartbeats written and not yet confirmed; more are not written. */
#define SLOT_MONITOR_MAX_PENDING 64

typedef enum SlotWalStatus {
    SLOT_WAL_UNKNOWN = 0, /* not read yet */
    SLOT_WAL_MISSING,     /* the slot does not exist (yet) */
    SLOT_WAL_RESERVED,    /* within max_wal_size */
    SLOT_WAL_EXTENDED,    /* beyond max_wal_size, kept by max_slot_wal_keep_size or wal_keep_size */
    SLOT_WAL_UNRESERVED,  /* no longer kept: the next checkpoint may invalidate the slot */
    SLOT_WAL_LOST,        /* invalidated: required WAL was removed */
} SlotWalStatus;

#define SLOT_WAL_N_STATUS 6

/* The reloadable settings (from [source]; see slot_monitor_apply). */
typedef struct SlotMonitorSettings {
    TimeUs check_interval;     /* 0: no slot checks */
    size_t warn_safe_wal_size; /* 0: warn on wal_status unreserved only */
    TimeUs heartbeat_interval; /* 0: no heartbeats */
} SlotMonitorSettings;

/* One answer of the slot query. */
typedef struct SlotReading {
    SlotWalStatus wal_status;
    bool has_safe_wal_size; /* NULL when max_slot_wal_keep_size = -1, or the slot is lost */
    int64_t safe_wal_size;  /* bytes; negative once unreserved */
    bool has_retained;      /* NULL when restart_lsn is (lost slot) */
    uint64_t retained_bytes;
    Lsn restart_lsn; /* LSN_INVALID when NULL */
    Lsn confirmed_flush_lsn;
    Lsn current_lsn; /* the server's WAL position when read */
    bool active;     /* a walsender streams from it */
} SlotReading;

typedef struct SlotMonitor SlotMonitor;

/* Settings from cfg's [source] section. */
void slot_monitor_settings_from(const Config *cfg, SlotMonitorSettings *out);

/* Creates the monitor; it connects on the first slot_monitor_poll() that has work. */
SlotMonitor *slot_monitor_new(const Config *cfg, Loop *loop, const SlotMonitorSettings *settings);

/* Closes the connection. NULL is a no-op. */
void slot_monitor_free(SlotMonitor *m);

/*
 * New settings (SIGHUP): a shorter interval takes effect at once; both
 * intervals 0 close the connection.
 */
void slot_monitor_apply(SlotMonitor *m, const SlotMonitorSettings *settings);

/*
 * Before-sleep step: (re)connects, sends the check or heartbeat that is
 * due, abandons what timed out. streaming: whether the daemon streams from
 * the slot right now (heartbeats are written only then). Returns the next
 * monotonic deadline it needs.
 */
TimeUs slot_monitor_poll(SlotMonitor *m, TimeUs now, bool streaming);

/* The position confirmed to PostgreSQL: completes heartbeat round trips. */
void slot_monitor_note_confirmed(SlotMonitor *m, Lsn confirmed, TimeUs now_wall);

/* Shutdown: closes the connection; nothing more is sent. */
void slot_monitor_stop(SlotMonitor *m);

/* The fatal error (slot lost), or NULL. Borrowed. */
const PfError *slot_monitor_fatal(const SlotMonitor *m);

/* The last reading, or NULL before the first one. Borrowed. */
const SlotReading *slot_monitor_reading(const SlotMonitor *m);

/* The current slot warning ("" when none). Borrowed. */
const char *slot_monitor_warning(const SlotMonitor *m);

/*
 * Heartbeat lag in microseconds at now_wall: the last measured round trip,
 * or the age of the oldest heartbeat not yet confirmed when that is
 * larger; -1 when nothing was measured and nothing is pending.
 */
TimeUs slot_monitor_heartbeat_lag_us(const SlotMonitor *m, TimeUs now_wall);

/*
 * Appends the monitor's members of the status document (no braces):
 *   "slot_health":{"monitor":"connected","wal_status":"reserved",
 *     "safe_wal_size":...|null,"retained_bytes":...|null,"restart_lsn":...|null,
 *     "slot_confirmed_lsn":...|null,"active":true|false,"checked_seconds_ago":...|null,
 *     "warning":"","last_error":""},
 *   "heartbeat":{"interval_seconds":10,"sent":3,"last_lsn":"0/..."|null,
 *     "lag_seconds":...|null,"last_error":""}
 */
void slot_monitor_render_json(const SlotMonitor *m, Buf *out, TimeUs now_wall);

/*
 * Appends the Prometheus families pgfan_slot_wal_status{wal_status=...}
 * (1 for the current status, 0 for the others), pgfan_slot_safe_wal_size_bytes
 * (when known), pgfan_slot_retained_wal_bytes (when known),
 * pgfan_slot_monitor_up, pgfan_heartbeats_total and
 * pgfan_heartbeat_lag_seconds (when known).
 */
void slot_monitor_render_metrics(const SlotMonitor *m, Buf *out, TimeUs now_wall);

/* ---- the pure parts (daemon/slot_reading.c), exposed for tests ---- */

/* Pinned on the monitor's session, after the dsn's own options. */
#define SLOT_MONITOR_SESSION_OPTIONS "-c synchronous_commit=local -c statement_timeout=30s"

/* "1.5 GB", "-16.0 MB", "512 B" into buf: for messages (JSON and metrics carry bytes). */
const char *slot_format_bytes(int64_t v, char buf[32]);

/* "reserved", ..., "lost"; "unknown" and "missing" for the others. */
const char *slot_wal_status_name(SlotWalStatus status);

/*
 * Reads one answer of the slot query (the columns slot_name, wal_status,
 * safe_wal_size, retained, restart_lsn, confirmed_flush_lsn, active,
 * current_lsn; one row, slot_name NULL when the slot does not exist).
 * ERR_RETRY when the answer is malformed.
 */
bool slot_reading_parse(const PGresult *res, SlotReading *out, PfError *err);

typedef enum SlotVerdict {
    SLOT_OK = 0,
    SLOT_WARN,  /* *warning says why (one line) */
    SLOT_FATAL, /* *fatal: ERR_FATAL with the recovery as hint */
} SlotVerdict;

/*
 * Judges a reading of slot: lost -> SLOT_FATAL; unreserved, or
 * safe_wal_size known and below warn_safe_wal_size -> SLOT_WARN.
 */
SlotVerdict slot_reading_judge(const SlotReading *r, const char *slot, size_t warn_safe_wal_size,
                               char *warning, size_t warning_size, PfError *fatal);

/* The libpq "options" for the monitor: the dsn's own, then the monitor's
 * settings. Caller frees; NULL with ERR_CONFIG when the dsn does not parse. */
char *slot_monitor_session_options(const char *dsn, PfError *err);

#endif
