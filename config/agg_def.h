/*
 * agg_def.h - the SQL pieces of an [aggregate.NAME] section.
 *
 * An aggregate's group_by, measures and where are SQL that PostgreSQL
 * evaluates; pgfan only has to cut them apart without misreading them:
 * lists split at commas outside parentheses, brackets and quotes
 * ('text', "Ident", E'esc\'aped', $tag$dollar$tag$), "expr AS name" split
 * at the last top-level AS. Measures are limited to the ones a row can be
 * added to and subtracted from exactly: count(*), count(expr), sum(expr).
 *
 * Used by the config loader (config/agg_loader.c) and by the aggregates
 * sink's SQL generation (sinks/agg_sql.c). Errors are ERR_CONFIG with a
 * message that says what is wrong with the text and a hint with the fix;
 * the loader prefixes file, line and section.
 *
 * Every returned string is malloc'd and owned by the caller (or by the
 * struct it was stored in, freed by the matching *_free function).
 */
#ifndef PGFAN_AGG_DEF_H
#define PGFAN_AGG_DEF_H

#include "../common/buf.h"
#include "../common/error.h"
#include "config.h"

#include <stdbool.h>
#include <stddef.h>

/*
 * Checks that text is usable inside a generated statement: balanced
 * parentheses and brackets, closed quotes, no ';' and no comment outside
 * quotes. what names the text in the message ("group_by").
 */
bool agg_check_sql(const char *text, const char *what, PfError *err);

/*
 * Splits text at top-level commas into *items (*n elements, each trimmed
 * and whitespace-normalised). An empty element, an unbalanced text or an
 * empty list is an error.
 */
bool agg_split_list(const char *text, const char *what, char ***items, size_t *n, PfError *err);
void agg_free_list(char **items, size_t n);

/*
 * Trims text and turns every run of whitespace outside quotes into one
 * space, so "a  ,\tb" and "a , b" compare equal. Returns a new string.
 */
char *agg_normalize_sql(const char *text);

/*
 * "expr AS name" (name: an unquoted identifier, folded to lower case), or
 * a bare column ("store_id", "orders.store_id": named after the column).
 */
bool agg_parse_group_key(const char *text, AggGroupKey *out, PfError *err);

/* "count(*) AS n", "count(expr) AS n", "sum(expr) AS n" (AS required). */
bool agg_parse_measure(const char *text, AggMeasure *out, PfError *err);

/* Whether name is an identifier pgfan accepts for tables and columns:
 * 1-63 characters of a-z, 0-9, _, not starting with a digit. */
bool agg_ident_ok(const char *name);

void agg_group_key_free(AggGroupKey *k);
void agg_measure_free(AggMeasure *m);
void agg_def_free(AggregateDef *d);

/* "count(*)", "count(<arg>)", "sum(<arg>)": the measure as SQL. */
void agg_append_measure_call(Buf *out, const AggMeasure *m);

#endif
