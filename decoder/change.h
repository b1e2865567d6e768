/*
 * change.h - plugin-neutral change values.
 *
 * The decoder turns each message of the logical replication stream into one
 * Change. Sinks consume Changes and never see the plugin's format: moving
 * from wal2json to pgoutput must touch decoder/ only.
 *
 * Lifetime: every pointer inside a Change is BORROWED from the decoder (or
 * from the message buffer it decoded) and stays valid only until the next
 * decode call on the same decoder. A sink that keeps anything must copy it
 * before its submit callback returns.
 *
 * Strings are (pointer, length) spans of UTF-8, not NUL-terminated, already
 * unescaped (the JSON escaping of the plugin is gone).
 */
#ifndef PGFAN_CHANGE_H
#define PGFAN_CHANGE_H

#include "../common/clock.h"
#include "../common/lsn.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Str {
    const char *ptr;
    size_t len;
} Str;

typedef enum ChangeKind {
    CHANGE_BEGIN = 0,  /* start of a transaction */
    CHANGE_COMMIT,     /* end of a transaction: end_lsn is the position to confirm */
    CHANGE_INSERT,
    CHANGE_UPDATE,
    CHANGE_DELETE,
    CHANGE_TRUNCATE,   /* one per truncated relation */
    CHANGE_MESSAGE,    /* pg_logical_emit_message(); transactional or not */
} ChangeKind;

/* How a value was sent. The text of NUMBER keeps the server's exact digits. */
typedef enum ValueKind {
    VALUE_NULL = 0,
    VALUE_BOOL,   /* text is "true" or "false" */
    VALUE_NUMBER, /* integer, float or numeric: exact text as sent ("129.90", "-1e+30") */
    VALUE_STRING, /* everything else, in the type's output format (DateStyle ISO, TimeZone UTC) */
} ValueKind;

/*
 * A coarse classification of the column's PostgreSQL type, derived from the
 * type name, so sinks can format values (timestamps as ISO-8601, bytea as
 * base64) and map types without knowing type names themselves.
 */
typedef enum TypeClass {
    TYPE_UNKNOWN = 0, /* no type information sent, or a type not listed here */
    TYPE_BOOL,
    TYPE_INT,         /* smallint, integer, bigint, oid */
    TYPE_FLOAT,       /* real, double precision */
    TYPE_NUMERIC,     /* numeric / decimal (any typmod) */
    TYPE_TEXT,        /* text, varchar, char, name, citext */
    TYPE_TIMESTAMPTZ, /* timestamp with time zone */
    TYPE_TIMESTAMP,   /* timestamp without time zone */
    TYPE_DATE,
    TYPE_TIME,        /* time with or without time zone */
    TYPE_INTERVAL,
    TYPE_UUID,
    TYPE_JSON,        /* json, jsonb */
    TYPE_BYTEA,       /* value is hex digits without the \x prefix */
    TYPE_ARRAY,       /* any array type ("integer[]", "text[]"); value in PostgreSQL array text */
    TYPE_ENUM_OR_OTHER, /* a named type the decoder does not classify (enums, domains, ranges) */
} TypeClass;

typedef struct Value {
    ValueKind kind;
    Str text; /* empty for VALUE_NULL */
} Value;

typedef struct Column {
    Str name;
    Str type;        /* type name as sent ("numeric(12,2)"); empty when types are off */
    TypeClass type_class;
    Value value;
} Column;

typedef struct Change {
    ChangeKind kind;

    /*
     * lsn: for row changes, truncates and messages, the change's own WAL
     * position (unique within a transaction, increasing per row). For BEGIN
     * and COMMIT, the commit record's start.
     */
    Lsn lsn;

    /*
     * end_lsn: for BEGIN and COMMIT, the end of the commit record (wal2json
     * "nextlsn"). This, and only this, is the position that may be confirmed
     * once the transaction is durable everywhere. The decoder leaves it
     * LSN_INVALID for other kinds; the pipeline fills it in for row changes
     * and transactional messages from their transaction's BEGIN before sinks
     * see them, so every event can name the commit it belongs to.
     */
    Lsn end_lsn;

    bool has_xid;
    uint32_t xid;

    bool has_commit_time;
    TimeUs commit_time; /* Unix-epoch microseconds of the transaction's commit */

    /* Row changes and truncates: the relation. */
    Str schema;
    Str table;

    /* INSERT and UPDATE: the new row. An UPDATE may omit unchanged TOAST
     * columns: such a column is absent from this array, never NULL. */
    const Column *new_cols;
    size_t n_new;

    /* UPDATE and DELETE: the old row as the replica identity carries it
     * (key columns only under REPLICA IDENTITY DEFAULT, every column under
     * FULL). UPDATE under DEFAULT without a key change carries the key. */
    const Column *old_cols;
    size_t n_old;

    /* Primary-key column names (may be empty: table without a primary key). */
    const Str *pk;
    size_t n_pk;

    /* MESSAGE only. */
    bool transactional;
    Str prefix;
    Str content;

    /*
     * 0 (CHANGE_SNAP_NONE) for everything the stream carries. The initial
     * snapshot (daemon/snapshot.h) reads the tables into one pseudo-
     * transaction: its BEGIN, COMMIT, rows (INSERT) and, when the sinks may
     * hold rows of an earlier slot, one TRUNCATE per table first, all carry
     * CHANGE_SNAP_ROW, except the last row of the whole snapshot, which
     * carries CHANGE_SNAP_LAST. Their end_lsn is the slot's consistent point;
     * the rows' lsn is the slot's starting WAL position minus one: below
     * every change the slot will stream (a transaction still open at the
     * consistent point streams changes older than that point), above
     * everything an earlier slot sent. LSN-versioned sinks therefore let any
     * streamed change win over a snapshot row, and a new snapshot win over
     * an old one.
     */
    uint8_t snapshot;
} Change;

/* Values of Change.snapshot. */
#define CHANGE_SNAP_NONE 0
#define CHANGE_SNAP_ROW 1
#define CHANGE_SNAP_LAST 2

/* "B", "C", "I", ... for logs. */
const char *change_kind_name(ChangeKind kind);

/* Finds a column by name in cols[0..n), or NULL. */
const Column *change_find_column(const Column *cols, size_t n, const char *name, size_t name_len);

/* True when the span equals the NUL-terminated string s. */
bool str_eq(Str a, const char *s);

#endif
