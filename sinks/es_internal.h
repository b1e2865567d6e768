/*
 * es_internal.h - what the Elasticsearch sink's files share; nothing else
 * includes it.
 *
 * es_doc.c       a row change as bulk actions: the index a row belongs in
 *                (a fixed name, or prefix + the UTC date of a column), the
 *                document _id (primary key), the document JSON (values
 *                exact; arrays as arrays, json as objects);
 * es_template.c  the index template (mapping from the PostgreSQL column
 *                types), its content hash, the ILM policy;
 * es_response.c  the per-item outcome of a bulk response;
 * elasticsearch.c the sink: SinkOps, start-up (templates), batching,
 *                requests through http_multi, retries, dead letters.
 */
#ifndef PGFAN_ES_INTERNAL_H
#define PGFAN_ES_INTERNAL_H

#include "../common/buf.h"
#include "sink.h"

#include <stdbool.h>
#include <stddef.h>

/* Every document carries this object (mapped in the template). */
#define ES_META_FIELD "pgfan"

/* One configured source table as the sink writes it. */
typedef struct EsTable {
    char *schema, *table; /* as in [source] tables */
    char *qualified;      /* "public.orders", for messages */
    char *index_prefix;   /* the fixed name, or the part before {column:format} */
    char *route_column;   /* NULL: a fixed index */
    char *route_format;   /* "%Y.%m.%d" */
    char *index_suffix;   /* the part after {column:format} */
    char *alias;
    char *template_name;  /* "pgfan-public-orders" */
    char **text_cols;     /* columns mapped as text + keyword */
    size_t n_text_cols;

    /* From the catalog (prepare). */
    char **pk; /* key columns in key order */
    size_t n_pk;
    bool prepared;
} EsTable;

/* --- es_doc.c --- */

/*
 * Parses an index setting ("orders-{created_at:%Y.%m.%d}" or "customers")
 * into t's index fields. The config validated its form already.
 */
void es_table_set_index(EsTable *t, const char *setting);

/*
 * Appends the index a row belongs in. False with *why (static text) when the
 * routing column is missing, NULL or not a date/timestamp.
 */
bool es_append_index(Buf *out, const EsTable *t, const Column *cols, size_t n, const char **why);

/*
 * Appends the document _id as a JSON string: the key value's text, or for a
 * composite key the values joined with '|' ('|' and '\' inside a value are
 * escaped with '\'), so different keys never share an _id. False when a key
 * column is missing or NULL.
 */
bool es_append_id(Buf *out, const EsTable *t, const Column *cols, size_t n);

/* Appends one value as Elasticsearch wants it (see es_append_doc). */
void es_append_value(Buf *out, const Column *col);

/*
 * Appends the document: every column of cols, then those of fill that cols
 * lacks (an UPDATE's unchanged TOAST values from the old row), then
 * "pgfan":{"lsn":N,"deleted":bool,"committed_at":"..."}. Numbers keep their
 * digits, timestamps are ISO-8601, bytea base64, json/jsonb objects, arrays
 * JSON arrays.
 */
void es_append_doc(Buf *out, const Column *cols, size_t n, const Column *fill, size_t n_fill,
                   Lsn lsn, bool deleted, TimeUs commit_time);

/* --- es_template.c --- */

/*
 * Appends the composable index template of t from its catalog entry, with
 * _meta.pgfan_hash = hash of everything else (16 hex digits, also written
 * to hash_out) so an existing template can be compared by its hash.
 */
void es_template_body(Buf *out, const EsTable *t, const CatalogTable *ct, const Config *cfg,
                      char hash_out[17]);

/* Appends the ILM policy that deletes indices retention_days after their date. */
void es_ilm_policy_body(Buf *out, size_t retention_days);

/* The ILM policy name for a retention ("pgfan-retention-400d"). */
void es_ilm_policy_name(Buf *out, size_t retention_days);

/* --- es_response.c --- */

typedef struct EsItemResult {
    int status;      /* the item's HTTP status; 0 when missing */
    Str error_type;  /* "version_conflict_engine_exception"; empty when none */
    Str error;       /* the item's raw "error" JSON object; empty when none */
} EsItemResult;

typedef struct EsResponse EsResponse;

EsResponse *es_response_new(void);
void es_response_free(EsResponse *r);

/*
 * Parses a bulk response body into exactly n_items results (spans borrow
 * body and r, valid until the next parse). False with *why (static text)
 * when the body is not a bulk response or has another number of items.
 */
bool es_response_parse(EsResponse *r, const char *body, size_t len, size_t n_items,
                       const EsItemResult **items, const char **why);

#endif
