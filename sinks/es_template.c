/*
 * es_template.c - the index template pgfan installs per table (see
 * es_internal.h).
 *
 * Column types map to Elasticsearch field types as follows:
 *   boolean -> boolean; smallint -> short; integer -> integer;
 *   bigint, oid -> long; real -> float; double precision -> double;
 *   numeric(p,s) with p <= 18 -> scaled_float, scaling_factor 10^s
 *   (long when s = 0); other numerics -> double (the _source keeps the
 *   exact digits either way); text, varchar, char, uuid, enums, time,
 *   interval and unknown types -> keyword (text + keyword subfield for the
 *   columns listed in text.<schema>.<table>); timestamp[tz], date -> date;
 *   json, jsonb -> flattened; bytea -> binary; arrays -> their element's type.
 * Mappings are strict (dynamic: strict): a column added later is a visible
 * mapping error (dead letter) until the template and indices are updated,
 * never a silently guessed type.
 */
#include "es_internal.h"

#include "../decoder/values.h"

#include <stdio.h>
#include <string.h>

#define APPEND_LIT(b, lit) buf_append((b), (lit), sizeof(lit) - 1)

/* Bytes of a keyword value that are indexed (longer ones are kept in _source
 * only): below Lucene's 32766-byte term limit for any UTF-8. */
#define KEYWORD_IGNORE_ABOVE 8191

static bool is_text_column(const EsTable *t, const char *name)
{
    for (size_t i = 0; i < t->n_text_cols; i++) {
        if (strcmp(t->text_cols[i], name) == 0)
            return true;
    }
    return false;
}

/* 64-bit FNV-1a: enough to tell two template bodies apart. */
static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = UINT64_C(14695981039346656037);

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static void append_scalar_mapping(Buf *out, const EsTable *t, const CatalogColumn *col,
                                  TypeClass cls, const char *type)
{
    switch (cls) {
    case TYPE_BOOL:
        APPEND_LIT(out, "{\"type\":\"boolean\"}");
        return;
    case TYPE_INT:
        if (strncmp(type, "smallint", 8) == 0)
            APPEND_LIT(out, "{\"type\":\"short\"}");
        else if (strncmp(type, "integer", 7) == 0)
            APPEND_LIT(out, "{\"type\":\"integer\"}");
        else
            APPEND_LIT(out, "{\"type\":\"long\"}");
        return;
    case TYPE_FLOAT:
        if (strncmp(type, "real", 4) == 0)
            APPEND_LIT(out, "{\"type\":\"float\"}");
        else
            APPEND_LIT(out, "{\"type\":\"double\"}");
        return;
    case TYPE_NUMERIC: {
        int precision = 0, scale = col->numeric_scale;

        if (sscanf(type, "numeric(%d", &precision) != 1)
            precision = 0;
        if (precision > 0 && precision <= 18 && scale == 0) {
            APPEND_LIT(out, "{\"type\":\"long\"}");
        } else if (precision > 0 && precision <= 18 && scale > 0 && scale <= 15) {
            unsigned long long factor = 1;

            for (int i = 0; i < scale; i++)
                factor *= 10;
            buf_printf(out, "{\"type\":\"scaled_float\",\"scaling_factor\":%llu}", factor);
        } else {
            APPEND_LIT(out, "{\"type\":\"double\"}");
        }
        return;
    }
    case TYPE_TIMESTAMPTZ:
    case TYPE_TIMESTAMP:
    case TYPE_DATE:
        APPEND_LIT(out, "{\"type\":\"date\"}");
        return;
    case TYPE_JSON:
        APPEND_LIT(out, "{\"type\":\"flattened\"}");
        return;
    case TYPE_BYTEA:
        APPEND_LIT(out, "{\"type\":\"binary\"}");
        return;
    case TYPE_TEXT:
        if (is_text_column(t, col->name)) {
            APPEND_LIT(out, "{\"type\":\"text\",\"fields\":{\"keyword\":{\"type\":\"keyword\","
                            "\"ignore_above\":256}}}");
            return;
        }
        break;
    default:
        break;
    }
    buf_printf(out, "{\"type\":\"keyword\",\"ignore_above\":%d}", KEYWORD_IGNORE_ABOVE);
}

static void append_column_mapping(Buf *out, const EsTable *t, const CatalogColumn *col)
{
    if (col->type_class == TYPE_ARRAY) {
        char elem[128];
        size_t n = strlen(col->type);

        while (n >= 2 && col->type[n - 2] == '[' && col->type[n - 1] == ']')
            n -= 2;
        snprintf(elem, sizeof elem, "%.*s", (int)n, col->type);
        append_scalar_mapping(out, t, col, value_type_class((Str){elem, strlen(elem)}), elem);
        return;
    }
    append_scalar_mapping(out, t, col, col->is_enum ? TYPE_ENUM_OR_OTHER : col->type_class,
                          col->type);
}

void es_ilm_policy_name(Buf *out, size_t retention_days)
{
    buf_printf(out, "pgfan-retention-%zud", retention_days);
}

void es_ilm_policy_body(Buf *out, size_t retention_days)
{
    buf_printf(out,
               "{\"policy\":{\"_meta\":{\"managed_by\":\"pgfan\"},\"phases\":{\"delete\":"
               "{\"min_age\":\"%zud\",\"actions\":{\"delete\":{}}}}}}",
               retention_days);
}

/* Daily indices named <prefix>{yyyy.MM.dd} carry their date: ILM counts the
 * age from it (index.lifecycle.parse_origination_date). */
static bool name_has_origination_date(const EsTable *t)
{
    size_t n = strlen(t->index_prefix);

    return t->route_column && strcmp(t->route_format, "%Y.%m.%d") == 0 &&
           t->index_suffix[0] == '\0' && n > 0 && t->index_prefix[n - 1] == '-';
}

void es_template_body(Buf *out, const EsTable *t, const CatalogTable *ct, const Config *cfg,
                      char hash_out[17])
{
    Buf body = BUF_INIT;

    APPEND_LIT(&body, "{\"index_patterns\":[");
    if (t->route_column) {
        Buf pattern = BUF_INIT;

        buf_printf(&pattern, "%s*%s", t->index_prefix, t->index_suffix);
        buf_append_json_string(&body, pattern.data, pattern.len);
        buf_free(&pattern);
    } else {
        buf_append_json_string(&body, t->index_prefix, strlen(t->index_prefix));
    }
    buf_printf(&body, "],\"priority\":200,\"template\":{\"settings\":{\"number_of_shards\":%zu,"
                      "\"number_of_replicas\":%zu",
               cfg->elasticsearch.shards, cfg->elasticsearch.replicas);
    if (cfg->elasticsearch.refresh_interval) {
        APPEND_LIT(&body, ",\"refresh_interval\":");
        buf_append_json_string(&body, cfg->elasticsearch.refresh_interval,
                               strlen(cfg->elasticsearch.refresh_interval));
    }
    if (cfg->elasticsearch.retention_days > 0) {
        Buf name = BUF_INIT;

        es_ilm_policy_name(&name, cfg->elasticsearch.retention_days);
        APPEND_LIT(&body, ",\"index.lifecycle.name\":");
        buf_append_json_string(&body, name.data, name.len);
        buf_free(&name);
        if (name_has_origination_date(t))
            APPEND_LIT(&body, ",\"index.lifecycle.parse_origination_date\":true");
    }
    APPEND_LIT(&body, "},\"mappings\":{\"dynamic\":\"strict\",\"properties\":{");
    for (size_t i = 0; i < ct->n_cols; i++) {
        buf_append_json_string(&body, ct->cols[i].name, strlen(ct->cols[i].name));
        buf_append_char(&body, ':');
        append_column_mapping(&body, t, &ct->cols[i]);
        buf_append_char(&body, ',');
    }
    APPEND_LIT(&body, "\"" ES_META_FIELD "\":{\"properties\":{\"lsn\":{\"type\":\"unsigned_long\"},"
                      "\"deleted\":{\"type\":\"boolean\"},\"committed_at\":{\"type\":\"date\"}}}}}");
    if (t->alias) {
        APPEND_LIT(&body, ",\"aliases\":{");
        buf_append_json_string(&body, t->alias, strlen(t->alias));
        APPEND_LIT(&body, ":{\"filter\":{\"term\":{\"" ES_META_FIELD ".deleted\":false}}}}");
    }
    APPEND_LIT(&body, "}");

    snprintf(hash_out, 17, "%016llx", (unsigned long long)fnv1a(body.data, body.len));
    buf_append(out, body.data, body.len);
    APPEND_LIT(out, ",\"_meta\":{\"managed_by\":\"pgfan\",\"source_table\":");
    buf_append_json_string(out, t->qualified, strlen(t->qualified));
    buf_printf(out, ",\"pgfan_hash\":\"%s\"}}", hash_out);
    buf_free(&body);
}
