/*
 * agg_sql.h - the SQL the aggregates sink sends, generated from an
 * AggregateDef (config.h). Pure text functions: no connection, no state,
 * so tests/unit/test_agg_sql.c checks them (and PostgreSQL runs them in
 * tests/integration/test_aggregates.c).
 *
 * The table of aggregate A in schema S:
 *
 *   S.A (<key columns>, <measure columns>, pgfan_rows bigint,
 *        pgfan_sum_<i>, pgfan_nn_<i> for each sum measure i,
 *        UNIQUE NULLS NOT DISTINCT (<keys>))
 *
 * pgfan_rows counts the group's rows (a group whose count reaches 0 is
 * deleted, whatever the declared measures). count(*) is pgfan_rows again,
 * count(x) sums +-1 for rows where x is not NULL. A sum keeps the exact
 * running total in pgfan_sum_<i> and the number of non-NULL inputs in
 * pgfan_nn_<i>; the visible column is generated from them (NULL when no
 * input is non-NULL, as sum() over such rows is), so the table equals the
 * batch GROUP BY even for nullable inputs.
 *
 * Changes arrive as weighted rows in a work table shaped like the source
 * table plus pgfan_w (+1 new row, -1 old row), pgfan_xid (the source
 * transaction's xid8) and pgfan_seg (which segment of the batch: a TRUNCATE
 * of the source table starts a new one). The apply statement groups them
 * with the same expressions (the work table is aliased with the source
 * table's name, so "orders.status" works), sums weights and
 * weight-signed measures, upserts with m = m + excluded.m and deletes the
 * groups whose pgfan_rows became 0.
 *
 * Every identifier from the config is double-quoted; every literal goes
 * through agg_sql_literal (standard_conforming_strings is pinned on).
 */
#ifndef PGFAN_AGG_SQL_H
#define PGFAN_AGG_SQL_H

#include "../common/buf.h"
#include "../config/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The catalog tables in schema (see agg_sql.c for their columns). */
#define AGG_STATE_TABLE "pgfan_state"
#define AGG_CATALOG_TABLE "pgfan_aggregates"

/* "ident" with "" for quotes inside. */
void agg_sql_ident(Buf *out, const char *ident);

/* 'text' with '' for quotes inside. */
void agg_sql_literal(Buf *out, const char *text);

/* "schema"."name". */
void agg_sql_table(Buf *out, const char *schema, const char *name);

/*
 * The definition as stored in the catalog and compared at start-up: from,
 * group_by, measures and where, whitespace-normalised, so only a change of
 * meaning (not of layout) asks for a rebuild.
 */
void agg_sql_definition(Buf *out, const AggregateDef *d);

/*
 * SELECT <keys>, <measures> FROM <source> WHERE <where> GROUP BY ... LIMIT 0:
 * checks every expression and gives the result columns' types (key columns
 * first, then one per measure, in order).
 */
void agg_sql_probe(Buf *out, const AggregateDef *d);

/* Creates schema and the catalog tables when missing. */
void agg_sql_catalog_ddl(Buf *out, const char *schema);

/*
 * CREATE TABLE of the aggregate; key_types[k] and measure_types[m] are
 * format_type() texts from the probe (a count's type is bigint whatever
 * the probe says).
 */
void agg_sql_create(Buf *out, const char *schema, const AggregateDef *d,
                    const char *const *key_types, const char *const *measure_types);

/* INSERT INTO <aggregate> SELECT ... FROM <source> GROUP BY ...: the history. */
void agg_sql_fill(Buf *out, const char *schema, const AggregateDef *d);

/*
 * Applies the weighted rows of work_table (pg_temp.<name>) to the
 * aggregate: upsert, then delete emptied groups (through pg_temp.pgfan_zero,
 * a tid table). segment >= 0 restricts to rows of that segment. With
 * snapshot_filter, rows of transactions visible in the aggregate's history
 * snapshot (its catalog row) are left out: the history already has them.
 */
void agg_sql_apply(Buf *out, const char *schema, const AggregateDef *d, const char *work_table,
                   int segment, bool snapshot_filter);
#define AGG_SQL_APPLY_STATEMENTS 3 /* statements agg_sql_apply appends */

/*
 * After a TRUNCATE of the source table in the transaction with xid8 xid:
 * checks that transaction is visible to this one (else SQLSTATE PGF01: try
 * again), empties the aggregate and fills it from the source table, and
 * records the new history snapshot.
 */
void agg_sql_recompute(Buf *out, const char *schema, const AggregateDef *d, uint64_t xid,
                       const char *slot);
#define AGG_SQL_RECOMPUTE_STATEMENTS 4

/*
 * The catalog row of an aggregate just built in this transaction: its
 * definition, slot, and this transaction's snapshot with the WAL insert
 * position after it.
 */
void agg_sql_register(Buf *out, const char *schema, const AggregateDef *d, const char *slot);

/*
 * Appends s[0..len) for COPY's text format: backslash, tab, newline and
 * carriage return escaped.
 */
void agg_copy_text(Buf *out, const char *s, size_t len);

/* The SQLSTATE agg_sql_recompute raises when it must be tried again. */
#define AGG_SQLSTATE_NOT_YET "PGF01"

#endif
