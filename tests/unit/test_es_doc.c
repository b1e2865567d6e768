/*
 * test_es_doc.c - the Elasticsearch sink's pure parts: index routing, _id,
 * document JSON (exact numerics, ISO timestamps, arrays, json), the
 * template generated from catalog types, and the bulk-response reader.
 */
#include "../../sinks/es_internal.h"

#include "../../common/mem.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#define S(lit) ((Str){(lit), sizeof(lit) - 1})

static Column col(const char *name, const char *type, TypeClass cls, ValueKind kind,
                  const char *text)
{
    Column c = {.name = {name, strlen(name)}, .type = {type, strlen(type)}, .type_class = cls};

    c.value.kind = kind;
    c.value.text = (Str){text, strlen(text)};
    return c;
}

static void free_table(EsTable *t)
{
    free(t->index_prefix);
    free(t->route_column);
    free(t->route_format);
    free(t->index_suffix);
}

START_TEST(test_index_routing_by_utc_date)
{
    EsTable t = {0};
    Buf out = BUF_INIT;
    const char *why = NULL;
    Column row[2] = {
        col("id", "bigint", TYPE_INT, VALUE_NUMBER, "42"),
        col("created_at", "timestamp with time zone", TYPE_TIMESTAMPTZ, VALUE_STRING,
            "2026-11-23 23:59:59.999999+00"),
    };

    es_table_set_index(&t, "orders-{created_at:%Y.%m.%d}");
    ck_assert_str_eq(t.index_prefix, "orders-");
    ck_assert_str_eq(t.route_column, "created_at");
    ck_assert(es_append_index(&out, &t, row, 2, &why));
    ck_assert_str_eq(out.data, "orders-2026.11.23");

    /* +05:30 is still the 23rd in UTC until 05:30 the next day */
    row[1].value.text = S("2026-11-24 05:00:00+05:30");
    buf_reset(&out);
    ck_assert(es_append_index(&out, &t, row, 2, &why));
    ck_assert_str_eq(out.data, "orders-2026.11.23");

    row[1].value.kind = VALUE_NULL;
    buf_reset(&out);
    ck_assert(!es_append_index(&out, &t, row, 2, &why));
    ck_assert_str_eq(why, "the routing column is NULL");

    row[1] = col("created_at", "timestamp with time zone", TYPE_TIMESTAMPTZ, VALUE_STRING,
                 "infinity");
    buf_reset(&out);
    ck_assert(!es_append_index(&out, &t, row, 2, &why));
    ck_assert(!es_append_index(&out, &t, row, 1, &why));
    ck_assert_str_eq(why, "the change does not carry the routing column");
    free_table(&t);

    memset(&t, 0, sizeof t);
    es_table_set_index(&t, "o-{day:%Y-%m}-v1");
    row[1] = col("day", "date", TYPE_DATE, VALUE_STRING, "2025-02-03");
    buf_reset(&out);
    ck_assert(es_append_index(&out, &t, row, 2, &why));
    ck_assert_str_eq(out.data, "o-2025-02-v1");
    free_table(&t);

    memset(&t, 0, sizeof t);
    es_table_set_index(&t, "customers");
    buf_reset(&out);
    ck_assert(es_append_index(&out, &t, row, 0, &why));
    ck_assert_str_eq(out.data, "customers");
    free_table(&t);
    buf_free(&out);
}
END_TEST

START_TEST(test_ids_are_unambiguous)
{
    char *pk1[] = {(char *)"id"};
    char *pk2[] = {(char *)"a", (char *)"b"};
    EsTable t = {.pk = pk1, .n_pk = 1};
    Buf x = BUF_INIT, y = BUF_INIT;
    Column row[2] = {col("a", "text", TYPE_TEXT, VALUE_STRING, "x|"),
                     col("b", "text", TYPE_TEXT, VALUE_STRING, "y")};
    Column other[2] = {col("a", "text", TYPE_TEXT, VALUE_STRING, "x"),
                       col("b", "text", TYPE_TEXT, VALUE_STRING, "|y")};
    Column one = col("id", "bigint", TYPE_INT, VALUE_NUMBER, "42");

    ck_assert(es_append_id(&x, &t, &one, 1));
    ck_assert_str_eq(x.data, "\"42\"");
    ck_assert(!es_append_id(&y, &t, row, 2)); /* no "id" column */

    t.pk = pk2;
    t.n_pk = 2;
    buf_reset(&x);
    buf_reset(&y);
    ck_assert(es_append_id(&x, &t, row, 2));
    ck_assert(es_append_id(&y, &t, other, 2));
    ck_assert_str_eq(x.data, "\"x\\\\||y\"");
    ck_assert_str_ne(x.data, y.data);
    buf_free(&x);
    buf_free(&y);
}
END_TEST

START_TEST(test_document_values)
{
    Buf out = BUF_INIT;
    Column row[] = {
        col("id", "bigint", TYPE_INT, VALUE_NUMBER, "42"),
        col("total", "numeric(30,2)", TYPE_NUMERIC, VALUE_NUMBER,
            "1234567890123456789012345678.90"),
        col("at", "timestamp with time zone", TYPE_TIMESTAMPTZ, VALUE_STRING,
            "2026-11-23 10:00:00.5+00"),
        col("raw", "bytea", TYPE_BYTEA, VALUE_STRING, "666f6f"),
        col("meta", "jsonb", TYPE_JSON, VALUE_STRING, "{\"a\": [1, 2.50]}"),
        col("tags", "text[]", TYPE_ARRAY, VALUE_STRING, "{a,\"b c\",NULL,\"x\\\"y\"}"),
        col("nums", "numeric(5,2)[]", TYPE_ARRAY, VALUE_STRING, "{{1.50,2},{3,NaN}}"),
        col("flags", "boolean[]", TYPE_ARRAY, VALUE_STRING, "{t,f}"),
        col("note", "text", TYPE_TEXT, VALUE_NULL, ""),
    };
    Column old[] = {col("id", "bigint", TYPE_INT, VALUE_NUMBER, "42"),
                    col("big", "text", TYPE_TEXT, VALUE_STRING, "unchanged toast")};

    es_append_doc(&out, row, sizeof row / sizeof row[0], old, 2, 1000, false,
                  1763892000123456);
    ck_assert_str_eq(out.data,
                     "{\"id\":42,\"total\":1234567890123456789012345678.90,"
                     "\"at\":\"2026-11-23T10:00:00.5Z\",\"raw\":\"Zm9v\","
                     "\"meta\":{\"a\": [1, 2.50]},\"tags\":[\"a\",\"b c\",null,\"x\\\"y\"],"
                     "\"nums\":[[1.50,2],[3,\"NaN\"]],\"flags\":[true,false],\"note\":null,"
                     "\"big\":\"unchanged toast\","
                     "\"pgfan\":{\"lsn\":1000,\"deleted\":false,"
                     "\"committed_at\":\"2025-11-23T10:00:00.123456Z\"}}");

    /* A malformed array falls back to its text. */
    buf_reset(&out);
    row[0] = col("bad", "integer[]", TYPE_ARRAY, VALUE_STRING, "{1,2");
    es_append_doc(&out, row, 1, NULL, 0, 7, true, 0);
    ck_assert_str_eq(out.data, "{\"bad\":\"{1,2\",\"pgfan\":{\"lsn\":7,\"deleted\":true}}");
    buf_free(&out);
}
END_TEST

START_TEST(test_template_from_catalog)
{
    CatalogColumn cols[] = {
        {.name = (char *)"id", .type = (char *)"bigint", .type_class = TYPE_INT,
         .numeric_scale = -1, .pk_position = 1},
        {.name = (char *)"total", .type = (char *)"numeric(12,2)", .type_class = TYPE_NUMERIC,
         .numeric_scale = 2},
        {.name = (char *)"huge", .type = (char *)"numeric(30,2)", .type_class = TYPE_NUMERIC,
         .numeric_scale = 2},
        {.name = (char *)"name", .type = (char *)"text", .type_class = TYPE_TEXT,
         .numeric_scale = -1},
        {.name = (char *)"status", .type = (char *)"text", .type_class = TYPE_TEXT,
         .numeric_scale = -1},
        {.name = (char *)"created_at", .type = (char *)"timestamp with time zone",
         .type_class = TYPE_TIMESTAMPTZ, .numeric_scale = -1},
        {.name = (char *)"meta", .type = (char *)"jsonb", .type_class = TYPE_JSON,
         .numeric_scale = -1},
        {.name = (char *)"qty", .type = (char *)"integer[]", .type_class = TYPE_ARRAY,
         .numeric_scale = -1},
        {.name = (char *)"mood", .type = (char *)"mood", .type_class = TYPE_ENUM_OR_OTHER,
         .numeric_scale = -1, .is_enum = true},
    };
    CatalogTable ct = {.schema = (char *)"public", .table = (char *)"orders",
                       .replica_identity = 'f', .cols = cols,
                       .n_cols = sizeof cols / sizeof cols[0]};
    char *text[] = {(char *)"name"};
    EsTable t = {.qualified = (char *)"public.orders", .alias = (char *)"orders",
                 .text_cols = text, .n_text_cols = 1};
    Config cfg = {0};
    Buf out = BUF_INIT, again = BUF_INIT;
    char hash[17], hash2[17];

    cfg.elasticsearch.shards = 1;
    cfg.elasticsearch.replicas = 0;
    cfg.elasticsearch.retention_days = 400;
    es_table_set_index(&t, "orders-{created_at:%Y.%m.%d}");
    es_template_body(&out, &t, &ct, &cfg, hash);
    ck_assert_msg(strstr(out.data, "\"index_patterns\":[\"orders-*\"]"), "%s", out.data);
    ck_assert(strstr(out.data, "\"number_of_shards\":1,\"number_of_replicas\":0"));
    ck_assert(strstr(out.data, "\"index.lifecycle.name\":\"pgfan-retention-400d\","
                               "\"index.lifecycle.parse_origination_date\":true"));
    ck_assert(strstr(out.data, "\"dynamic\":\"strict\""));
    ck_assert(strstr(out.data, "\"id\":{\"type\":\"long\"}"));
    ck_assert(strstr(out.data, "\"total\":{\"type\":\"scaled_float\",\"scaling_factor\":100}"));
    ck_assert(strstr(out.data, "\"huge\":{\"type\":\"double\"}"));
    ck_assert(strstr(out.data, "\"name\":{\"type\":\"text\",\"fields\":{\"keyword\":"));
    ck_assert(strstr(out.data, "\"status\":{\"type\":\"keyword\",\"ignore_above\":8191}"));
    ck_assert(strstr(out.data, "\"created_at\":{\"type\":\"date\"}"));
    ck_assert(strstr(out.data, "\"meta\":{\"type\":\"flattened\"}"));
    ck_assert(strstr(out.data, "\"qty\":{\"type\":\"integer\"}"));
    ck_assert(strstr(out.data, "\"mood\":{\"type\":\"keyword\""));
    ck_assert(strstr(out.data, "\"pgfan\":{\"properties\":{\"lsn\":{\"type\":\"unsigned_long\"}"));
    ck_assert(strstr(out.data, "\"aliases\":{\"orders\":{\"filter\":{\"term\":"
                               "{\"pgfan.deleted\":false}}}}"));
    ck_assert(strstr(out.data, "\"pgfan_hash\":\""));
    ck_assert(strstr(out.data, hash));

    /* The same input gives the same hash; another column type another. */
    es_template_body(&again, &t, &ct, &cfg, hash2);
    ck_assert_str_eq(hash, hash2);
    cols[4].type_class = TYPE_INT;
    cols[4].type = (char *)"integer";
    buf_reset(&again);
    es_template_body(&again, &t, &ct, &cfg, hash2);
    ck_assert_str_ne(hash, hash2);
    free_table(&t);
    buf_free(&out);
    buf_free(&again);
}
END_TEST

START_TEST(test_bulk_response)
{
    EsResponse *r = es_response_new();
    const EsItemResult *items;
    const char *why = NULL;
    const char *ok = "{\"errors\":true,\"items\":[{\"index\":{\"status\":201}},"
                     "{\"index\":{\"status\":409,\"error\":{\"type\":"
                     "\"version_conflict_engine_exception\",\"reason\":\"[1]: version "
                     "conflict\"}}},{\"delete\":{\"status\":404}},{\"index\":{\"error\":"
                     "{\"type\":\"document_parsing_exception\",\"reason\":\"x\"},\"status\":400}}]}";

    ck_assert(es_response_parse(r, ok, strlen(ok), 4, &items, &why));
    ck_assert_int_eq(items[0].status, 201);
    ck_assert_uint_eq(items[0].error.len, 0);
    ck_assert_int_eq(items[1].status, 409);
    ck_assert_int_eq(strncmp(items[1].error_type.ptr, "version_conflict_engine_exception",
                             items[1].error_type.len),
                     0);
    ck_assert_int_eq(items[2].status, 404);
    ck_assert_int_eq(items[3].status, 400);
    ck_assert_int_eq(items[3].error.ptr[0], '{');
    ck_assert_int_eq(items[3].error.ptr[items[3].error.len - 1], '}');

    ck_assert(!es_response_parse(r, ok, strlen(ok), 3, &items, &why));
    ck_assert_str_eq(why, "the answer has another number of items than the request had actions");
    ck_assert(!es_response_parse(r, "{\"errors\":false}", 16, 1, &items, &why));
    ck_assert_str_eq(why, "the answer has no \"items\"");
    ck_assert(!es_response_parse(r, "<html>", 6, 1, &items, &why));
    ck_assert(!es_response_parse(r, "{\"items\":[1]}", 13, 1, &items, &why));
    es_response_free(r);
}
END_TEST

static Suite *es_doc_suite(void)
{
    Suite *s = suite_create("es_doc");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_index_routing_by_utc_date);
    tcase_add_test(tc, test_ids_are_unambiguous);
    tcase_add_test(tc, test_document_values);
    tcase_add_test(tc, test_template_from_catalog);
    tcase_add_test(tc, test_bulk_response);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(es_doc_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
