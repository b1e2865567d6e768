/*
 * snapshot_rows.h - what the initial snapshot reads and how a COPY row
 * becomes a Change (internal to daemon/, used by snapshot.c).
 *
 * The snapshot reads each table with COPY ... TO STDOUT in text format, on
 * sessions pinned to the settings of the replication connection (DateStyle
 * ISO, TimeZone UTC, bytea_output hex, IntervalStyle iso_8601,
 * extra_float_digits 3), so every value has the text wal2json would send.
 * This module turns such a line into the Change the decoder would have made
 * of the same row: column types from the catalog (format_type(), the name
 * wal2json prints, classified by value_type_class) and value kinds as
 * wal2json writes them: integers, floats and numerics VALUE_NUMBER with the
 * exact text (NaN and infinities null, as wal2json writes them), booleans
 * VALUE_BOOL "true"/"false", bytea the hex digits without "\x", NULL
 * VALUE_NULL, everything else VALUE_STRING.
 *
 * No I/O. A SnapTable owns its strings; the Change a parse fills borrows
 * from the table, the parser and the (unescaped in place) line.
 */
#ifndef PGFAN_SNAPSHOT_ROWS_H
#define PGFAN_SNAPSHOT_ROWS_H

#include "../common/buf.h"
#include "../common/error.h"
#include "../decoder/change.h"
#include "../sinks/sink.h"

typedef struct SnapColumn {
    char *name;
    char *type; /* format_type(): "numeric(12,2)" */
    TypeClass type_class;
} SnapColumn;

/* One [source] table as the snapshot reads it. */
typedef struct SnapTable {
    char *schema;
    char *table;
    char *label;      /* schema.table as people write it, for logs and status */
    SnapColumn *cols; /* in attnum order: the COPY's column order */
    size_t n_cols;
    Column *proto; /* per column: name, type and class set, value empty */
    Str *pk;       /* primary-key column names in key order (into cols) */
    size_t n_pk;
    Str schema_s, table_s;
} SnapTable;

/* Copies what the snapshot needs of a catalog table. */
void snap_table_init(SnapTable *t, const CatalogTable *ct);
void snap_table_clear(SnapTable *t);

/*
 * Appends the COPY that reads pages [first_page, end_page) of t (end_page
 * 0: to the end; first_page 0 and end_page 0: the whole table) as text:
 *   COPY (SELECT "a", "b" FROM ONLY "s"."t" WHERE ctid >= '(0,0)' AND
 *   ctid < '(8192,0)') TO STDOUT
 * A TID range scan (PostgreSQL 14+) reads just those pages. only: leave
 * out inheritance children (a plain table; a partitioned one needs its
 * partitions).
 */
void snap_table_append_copy(Buf *out, const SnapTable *t, bool only, uint64_t first_page,
                            uint64_t end_page);

/* Column storage reused from row to row. */
typedef struct SnapRowParser {
    Column *cols;
    size_t cap;
} SnapRowParser;

void snap_row_parser_free(SnapRowParser *p);

/*
 * Parses one COPY text line of t (line[0..len), '\n' included or not),
 * unescaping it in place, into *out: an INSERT of t with every column, the
 * key names, and nothing else set (the caller sets positions, times and the
 * snapshot mark). Fails with ERR_FATAL when the line does not have one field
 * per column.
 */
bool snap_row_parse(SnapRowParser *p, const SnapTable *t, char *line, size_t len, Change *out,
                    PfError *err);

#endif
