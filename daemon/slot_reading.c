/*
 * slot_reading.c - the slot monitor's pure parts: reading an answer of the
 * pg_replication_slots query, judging it, and the monitor's session
 * options (declared in slot_monitor.h; no connection, no state).
 */
#include "slot_monitor.h"

#include "repl_protocol.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[SLOT_WAL_N_STATUS] = {"unknown",  "missing",    "reserved",
                                                            "extended", "unreserved", "lost"};

const char *slot_wal_status_name(SlotWalStatus status)
{
    return (unsigned)status < SLOT_WAL_N_STATUS ? status_names[status] : "unknown";
}

/* "1.5 GB", "-16.0 MB", "512 B": for messages only (metrics and JSON carry bytes). */
const char *slot_format_bytes(int64_t v, char buf[32])
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    double x = (double)(v < 0 ? -v : v);
    size_t u = 0;

    while (x >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        x /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, 32, "%s%.0f B", v < 0 ? "-" : "", x);
    else
        snprintf(buf, 32, "%s%.1f %s", v < 0 ? "-" : "", x, units[u]);
    return buf;
}

static bool parse_i64(const char *text, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool parse_lsn_field(const PGresult *res, int col, Lsn *out)
{
    const char *text;

    *out = LSN_INVALID;
    if (PQgetisnull(res, 0, col))
        return true;
    text = PQgetvalue(res, 0, col);
    return lsn_parse(text, strlen(text), out);
}

bool slot_reading_parse(const PGresult *res, SlotReading *out, PfError *err)
{
    int64_t n;

    memset(out, 0, sizeof *out);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) != 8)
        return err_set(err, ERR_RETRY,
                       "could not read pg_replication_slots: expected 1 row of 8 columns, got %d "
                       "of %d",
                       PQntuples(res), PQnfields(res));
    if (!parse_lsn_field(res, 7, &out->current_lsn))
        goto malformed;
    if (PQgetisnull(res, 0, 0)) {
        out->wal_status = SLOT_WAL_MISSING;
        return true;
    }
    out->wal_status = SLOT_WAL_UNKNOWN;
    for (int i = SLOT_WAL_RESERVED; i < SLOT_WAL_N_STATUS; i++) {
        if (!PQgetisnull(res, 0, 1) && strcmp(PQgetvalue(res, 0, 1), status_names[i]) == 0)
            out->wal_status = (SlotWalStatus)i;
    }
    if (!PQgetisnull(res, 0, 2)) {
        if (!parse_i64(PQgetvalue(res, 0, 2), &out->safe_wal_size))
            goto malformed;
        out->has_safe_wal_size = true;
    }
    if (!PQgetisnull(res, 0, 3)) {
        if (!parse_i64(PQgetvalue(res, 0, 3), &n))
            goto malformed;
        out->retained_bytes = n > 0 ? (uint64_t)n : 0;
        out->has_retained = true;
    }
    if (!parse_lsn_field(res, 4, &out->restart_lsn) ||
        !parse_lsn_field(res, 5, &out->confirmed_flush_lsn))
        goto malformed;
    out->active = !PQgetisnull(res, 0, 6) && strcmp(PQgetvalue(res, 0, 6), "t") == 0;
    return true;

malformed:
    return err_set(err, ERR_RETRY, "could not read pg_replication_slots: malformed value in %s",
                   "the slot's row");
}

static void judge_lost(const SlotReading *r, const char *slot, PfError *fatal)
{
    char lsn[LSN_TEXT_SIZE];

    err_set(fatal, ERR_FATAL,
            "could not keep streaming from replication slot \"%s\": it is lost (wal_status "
            "lost): PostgreSQL removed WAL the slot still needed, so the changes after %s can "
            "no longer be decoded",
            slot, lsn_format(r->confirmed_flush_lsn, lsn));
    err_hint(fatal,
             "drop and recreate the slot (SELECT pg_drop_replication_slot('%s'); pgfan creates "
             "it again at start), then resync every sink from a fresh copy of the captured "
             "tables: the changes between %s and the new slot are gone. Raise "
             "max_slot_wal_keep_size or fix what kept pgfan behind.",
             slot, lsn);
}

SlotVerdict slot_reading_judge(const SlotReading *r, const char *slot, size_t warn_safe_wal_size,
                               char *warning, size_t warning_size, PfError *fatal)
{
    char safe[32], kept[32], limit[32];

    warning[0] = '\0';
    if (r->wal_status == SLOT_WAL_LOST) {
        judge_lost(r, slot, fatal);
        return SLOT_FATAL;
    }
    slot_format_bytes(r->has_safe_wal_size ? r->safe_wal_size : 0, safe);
    slot_format_bytes((int64_t)r->retained_bytes, kept);
    if (r->wal_status == SLOT_WAL_UNRESERVED) {
        snprintf(warning, warning_size,
                 "replication slot \"%s\" is unreserved: it holds %s of WAL that "
                 "max_slot_wal_keep_size no longer protects, and the next checkpoint may "
                 "invalidate it; pgfan must catch up (check the sinks) or max_slot_wal_keep_size "
                 "be raised",
                 slot, kept);
        return SLOT_WARN;
    }
    if (r->has_safe_wal_size && warn_safe_wal_size > 0 &&
        r->safe_wal_size < (int64_t)warn_safe_wal_size) {
        snprintf(warning, warning_size,
                 "replication slot \"%s\" has only %s of WAL left before max_slot_wal_keep_size "
                 "invalidates it (slot_warn_safe_wal_size %s; it holds %s)",
                 slot, safe, slot_format_bytes((int64_t)warn_safe_wal_size, limit), kept);
        return SLOT_WARN;
    }
    return SLOT_OK;
}

char *slot_monitor_session_options(const char *dsn, PfError *err)
{
    return repl_session_options_pinned(dsn, SLOT_MONITOR_SESSION_OPTIONS, err);
}
