/*
 * test_envelope.c - golden envelopes and keys for every change kind.
 *
 * Changes are built by hand (the decoder is not involved); expected strings
 * are the exact bytes a consumer reads.
 */
#include "../../sinks/envelope.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* S() initialises a Str in a static table; SV() is the same as a value. */
#define S(lit) {(lit), sizeof(lit) - 1}
#define SV(lit) ((Str)S(lit))

#define COL(n, t, tc, k, v) {S(n), S(t), (tc), {(k), S(v)}}
#define COL_NULL(n, t, tc) {S(n), S(t), (tc), {VALUE_NULL, {"", 0}}}

/* wal2json's orders row from baseline.md section 6. */
static const Column order_new[] = {
    COL("id", "bigint", TYPE_INT, VALUE_NUMBER, "9000001"),
    COL("store_id", "integer", TYPE_INT, VALUE_NUMBER, "7"),
    COL("customer_id", "bigint", TYPE_INT, VALUE_NUMBER, "42"),
    COL("status", "text", TYPE_TEXT, VALUE_STRING, "paid"),
    COL("total_amount", "numeric(12,2)", TYPE_NUMERIC, VALUE_NUMBER, "119.90"),
    COL("currency", "character(3)", TYPE_TEXT, VALUE_STRING, "EUR"),
    COL("created_at", "timestamp with time zone", TYPE_TIMESTAMPTZ, VALUE_STRING,
        "2026-11-20 10:00:00+00"),
    COL("updated_at", "timestamp with time zone", TYPE_TIMESTAMPTZ, VALUE_STRING,
        "2026-11-20 10:05:00+00"),
};

static const Column order_old_full[] = {
    COL("id", "bigint", TYPE_INT, VALUE_NUMBER, "9000001"),
    COL("store_id", "integer", TYPE_INT, VALUE_NUMBER, "7"),
    COL("customer_id", "bigint", TYPE_INT, VALUE_NUMBER, "42"),
    COL("status", "text", TYPE_TEXT, VALUE_STRING, "pending"),
    COL("total_amount", "numeric(12,2)", TYPE_NUMERIC, VALUE_NUMBER, "129.90"),
    COL("currency", "character(3)", TYPE_TEXT, VALUE_STRING, "EUR"),
    COL("created_at", "timestamp with time zone", TYPE_TIMESTAMPTZ, VALUE_STRING,
        "2026-11-20 10:00:00+00"),
    COL("updated_at", "timestamp with time zone", TYPE_TIMESTAMPTZ, VALUE_STRING,
        "2026-11-20 10:00:00+00"),
};

static const Column order_old_key[] = {
    COL("id", "bigint", TYPE_INT, VALUE_NUMBER, "9000001"),
};

static const Str pk_id[] = {S("id")};

static const SourceInfo shop = {"shop", "7300000000000000000", "pgfan", "shop"};

#define NEW_ROW_JSON                                                                             \
    "{\"id\":9000001,\"store_id\":7,\"customer_id\":42,\"status\":\"paid\","                     \
    "\"total_amount\":119.90,\"currency\":\"EUR\",\"created_at\":\"2026-11-20T10:00:00Z\","      \
    "\"updated_at\":\"2026-11-20T10:05:00Z\"}"
#define OLD_FULL_JSON                                                                            \
    "{\"id\":9000001,\"store_id\":7,\"customer_id\":42,\"status\":\"pending\","                  \
    "\"total_amount\":129.90,\"currency\":\"EUR\",\"created_at\":\"2026-11-20T10:00:00Z\","      \
    "\"updated_at\":\"2026-11-20T10:00:00Z\"}"
#define SOURCE_JSON                                                                              \
    "\"source\":{\"version\":\"" PGFAN_VERSION "\",\"connector\":\"pgfan\",\"name\":\"shop\","  \
    "\"db\":\"shop\",\"schema\":\"public\",\"table\":\"orders\",\"lsn\":351232112,"              \
    "\"commit_lsn\":351232200,\"txId\":4896,\"ts_ms\":1763632800000,\"snapshot\":\"false\"}"

/* 2025-11-23T10:00:00.123456Z in Unix microseconds. */
#define NOW_WALL INT64_C(1763892000123456)

static Change orders_change(ChangeKind kind)
{
    Change c;

    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lsn = 351232112;
    c.end_lsn = 351232200;
    c.has_xid = true;
    c.xid = 4896;
    c.has_commit_time = true;
    c.commit_time = INT64_C(1763632800000999); /* ms truncated: 1763632800000 */
    c.schema = SV("public");
    c.table = SV("orders");
    c.pk = pk_id;
    c.n_pk = 1;
    return c;
}

/* Runs envelope_append into a buffer that already holds a prefix, so the
 * test also proves nothing before the envelope is touched. */
static char *envelope_of(const Change *c, const SourceInfo *src)
{
    Buf b = BUF_INIT;
    char *s;

    buf_append_str(&b, "prefix|");
    ck_assert(envelope_append(&b, c, src, NOW_WALL));
    ck_assert(strncmp(b.data, "prefix|", 7) == 0);
    s = strdup(b.data + 7);
    buf_free(&b);
    return s;
}

static char *key_of(const Change *c, bool *ok)
{
    Buf b = BUF_INIT;
    char *s;

    buf_append_str(&b, "k|");
    *ok = envelope_append_key(&b, c);
    s = strdup(b.data + 2);
    buf_free(&b);
    return s;
}

#define ASSERT_ENVELOPE(change, src, expected)                                                   \
    do {                                                                                         \
        char *got_ = envelope_of((change), (src));                                               \
        ck_assert_str_eq(got_, (expected));                                                      \
        free(got_);                                                                              \
    } while (0)

/* Envelopes ------------------------------------------------------------------ */

START_TEST(test_insert)
{
    Change c = orders_change(CHANGE_INSERT);

    c.new_cols = order_new;
    c.n_new = 8;
    ASSERT_ENVELOPE(&c, &shop,
                    "{\"before\":null,\"after\":" NEW_ROW_JSON "," SOURCE_JSON
                    ",\"op\":\"c\",\"ts_ms\":1763892000123}");
}
END_TEST

/* Initial snapshot rows: op "r", source.snapshot "true", "last" on the final one. */
START_TEST(test_snapshot_rows)
{
    Change c = orders_change(CHANGE_INSERT);
    char *got;

    c.new_cols = order_new;
    c.n_new = 8;
    c.snapshot = CHANGE_SNAP_ROW;
    got = envelope_of(&c, &shop);
    ck_assert_ptr_nonnull(strstr(got, "\"ts_ms\":1763632800000,\"snapshot\":\"true\"},\"op\":\"r\","));
    free(got);
    c.snapshot = CHANGE_SNAP_LAST;
    got = envelope_of(&c, &shop);
    ck_assert_ptr_nonnull(strstr(got, "\"snapshot\":\"last\"},\"op\":\"r\","));
    free(got);
    c = orders_change(CHANGE_TRUNCATE);
    c.snapshot = CHANGE_SNAP_ROW;
    got = envelope_of(&c, &shop);
    ck_assert_ptr_nonnull(strstr(got, "\"snapshot\":\"true\"},\"op\":\"t\","));
    free(got);
}
END_TEST

START_TEST(test_update_default_identity)
{
    Change c = orders_change(CHANGE_UPDATE);

    c.new_cols = order_new;
    c.n_new = 8;
    c.old_cols = order_old_key;
    c.n_old = 1;
    ASSERT_ENVELOPE(&c, &shop,
                    "{\"before\":{\"id\":9000001},\"after\":" NEW_ROW_JSON "," SOURCE_JSON
                    ",\"op\":\"u\",\"ts_ms\":1763892000123}");
}
END_TEST

START_TEST(test_update_full_identity)
{
    Change c = orders_change(CHANGE_UPDATE);

    c.new_cols = order_new;
    c.n_new = 8;
    c.old_cols = order_old_full;
    c.n_old = 8;
    ASSERT_ENVELOPE(&c, &shop,
                    "{\"before\":" OLD_FULL_JSON ",\"after\":" NEW_ROW_JSON "," SOURCE_JSON
                    ",\"op\":\"u\",\"ts_ms\":1763892000123}");
}
END_TEST

START_TEST(test_update_without_old_row)
{
    Change c = orders_change(CHANGE_UPDATE);

    c.new_cols = order_new;
    c.n_new = 8;
    ASSERT_ENVELOPE(&c, &shop,
                    "{\"before\":null,\"after\":" NEW_ROW_JSON "," SOURCE_JSON
                    ",\"op\":\"u\",\"ts_ms\":1763892000123}");
}
END_TEST

START_TEST(test_delete_default_and_full)
{
    Change c = orders_change(CHANGE_DELETE);

    c.old_cols = order_old_key;
    c.n_old = 1;
    ASSERT_ENVELOPE(&c, &shop,
                    "{\"before\":{\"id\":9000001},\"after\":null," SOURCE_JSON
                    ",\"op\":\"d\",\"ts_ms\":1763892000123}");
    c.old_cols = order_old_full;
    c.n_old = 8;
    ASSERT_ENVELOPE(&c, &shop,
                    "{\"before\":" OLD_FULL_JSON ",\"after\":null," SOURCE_JSON
                    ",\"op\":\"d\",\"ts_ms\":1763892000123}");
}
END_TEST

START_TEST(test_truncate)
{
    Change c = orders_change(CHANGE_TRUNCATE);

    c.pk = NULL;
    c.n_pk = 0;
    ASSERT_ENVELOPE(&c, &shop,
                    "{\"before\":null,\"after\":null," SOURCE_JSON
                    ",\"op\":\"t\",\"ts_ms\":1763892000123}");
}
END_TEST

START_TEST(test_other_kinds_append_nothing)
{
    static const ChangeKind kinds[] = {CHANGE_BEGIN, CHANGE_COMMIT, CHANGE_MESSAGE};
    Buf b = BUF_INIT;

    buf_append_str(&b, "x");
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        Change c = orders_change(kinds[i]);

        ck_assert(!envelope_append(&b, &c, &shop, NOW_WALL));
        ck_assert(!envelope_append_key(&b, &c));
    }
    ck_assert_str_eq(b.data, "x");
    buf_free(&b);
}
END_TEST

START_TEST(test_toast_absent_column)
{
    static const Column docs_new[] = {
        COL("id", "integer", TYPE_INT, VALUE_NUMBER, "1"),
        COL("title", "text", TYPE_TEXT, VALUE_STRING, "second title"),
    };
    static const Column docs_old[] = {COL("id", "integer", TYPE_INT, VALUE_NUMBER, "1")};
    Change c = orders_change(CHANGE_UPDATE);
    char *got;

    c.table = SV("docs");
    c.new_cols = docs_new;
    c.n_new = 2;
    c.old_cols = docs_old;
    c.n_old = 1;
    got = envelope_of(&c, &shop);
    ck_assert_msg(strstr(got, "\"before\":{\"id\":1},\"after\":{\"id\":1,\"title\":\"second title\"},")
                      == got + 1,
                  "got %s", got);
    ck_assert_ptr_null(strstr(got, "body"));
    free(got);
}
END_TEST

START_TEST(test_values)
{
    static const Column cols[] = {
        COL("n40", "numeric", TYPE_NUMERIC, VALUE_NUMBER,
            "1234567890123456789012345678901234567890.0123456789"),
        COL("neg", "double precision", TYPE_FLOAT, VALUE_NUMBER, "-1e+30"),
        COL("ok", "boolean", TYPE_BOOL, VALUE_BOOL, "true"),
        COL_NULL("gone", "text", TYPE_TEXT),
        COL("at", "timestamp with time zone", TYPE_TIMESTAMPTZ, VALUE_STRING,
            "2026-11-20 10:00:00+00"),
        COL("local", "timestamp without time zone", TYPE_TIMESTAMP, VALUE_STRING,
            "2026-11-20 10:00:00.5"),
        COL("bin", "bytea", TYPE_BYTEA, VALUE_STRING, "deadbeef"),
        COL("bin1", "bytea", TYPE_BYTEA, VALUE_STRING, "ff"),
        COL("bin0", "bytea", TYPE_BYTEA, VALUE_STRING, ""),
        COL("badbin", "bytea", TYPE_BYTEA, VALUE_STRING, "\\000zz"),
        COL("u", "uuid", TYPE_UUID, VALUE_STRING, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        COL("tags", "text[]", TYPE_ARRAY, VALUE_STRING, "{a,\"b c\"}"),
        COL("doc", "jsonb", TYPE_JSON, VALUE_STRING, "{\"k\": [1, 2]}"),
        COL("d", "date", TYPE_DATE, VALUE_STRING, "2026-11-20"),
        COL("mood", "mood", TYPE_ENUM_OR_OTHER, VALUE_STRING, "happy"),
        COL("inf", "timestamp with time zone", TYPE_TIMESTAMPTZ, VALUE_STRING, "infinity"),
    };
    Change c = orders_change(CHANGE_INSERT);
    char *got;

    c.new_cols = cols;
    c.n_new = sizeof cols / sizeof cols[0];
    got = envelope_of(&c, &shop);
    ck_assert_msg(strstr(got, "{\"before\":null,\"after\":{"
                              "\"n40\":1234567890123456789012345678901234567890.0123456789,"
                              "\"neg\":-1e+30,\"ok\":true,\"gone\":null,"
                              "\"at\":\"2026-11-20T10:00:00Z\",\"local\":\"2026-11-20T10:00:00.5\","
                              "\"bin\":\"3q2+7w==\",\"bin1\":\"/w==\",\"bin0\":\"\","
                              "\"badbin\":\"\\\\000zz\","
                              "\"u\":\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\","
                              "\"tags\":\"{a,\\\"b c\\\"}\",\"doc\":\"{\\\"k\\\": [1, 2]}\","
                              "\"d\":\"2026-11-20\",\"mood\":\"happy\",\"inf\":\"infinity\"},")
                      == got,
                  "got %s", got);
    free(got);
}
END_TEST

START_TEST(test_unicode_and_escapes)
{
    static const Column cols[] = {
        COL("na\"me", "text", TYPE_TEXT, VALUE_STRING,
            "He said \"hi\"\n\ttab \\ back\r\b\f \x01 caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x9b\x92"),
    };
    Change c = orders_change(CHANGE_INSERT);
    char *got;

    c.schema = SV("my schema");
    c.table = SV("Order \"Items\"");
    c.new_cols = cols;
    c.n_new = 1;
    got = envelope_of(&c, &shop);
    ck_assert_msg(strstr(got, "\"after\":{\"na\\\"me\":\"He said \\\"hi\\\"\\n\\ttab \\\\ back"
                              "\\r\\b\\f \\u0001 caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x9b\x92\"},")
                      != NULL,
                  "got %s", got);
    ck_assert_msg(strstr(got, "\"schema\":\"my schema\",\"table\":\"Order \\\"Items\\\"\",") != NULL,
                  "got %s", got);
    free(got);
}
END_TEST

START_TEST(test_null_xid_and_commit_time)
{
    Change c = orders_change(CHANGE_TRUNCATE);

    c.has_xid = false;
    c.has_commit_time = false;
    c.end_lsn = LSN_INVALID;
    c.lsn = UINT64_C(0xFFFFFFFFFFFFFFFF);
    ASSERT_ENVELOPE(&c, &shop,
                    "{\"before\":null,\"after\":null,\"source\":{\"version\":\"" PGFAN_VERSION
                    "\",\"connector\":\"pgfan\",\"name\":\"shop\",\"db\":\"shop\","
                    "\"schema\":\"public\",\"table\":\"orders\",\"lsn\":18446744073709551615,"
                    "\"commit_lsn\":null,\"txId\":null,\"ts_ms\":null,\"snapshot\":\"false\"},\"op\":\"t\","
                    "\"ts_ms\":1763892000123}");
}
END_TEST

START_TEST(test_source_info)
{
    SourceInfo src;
    Change c = orders_change(CHANGE_TRUNCATE);
    char *got;

    /* Before the server is identified the fields are empty strings. */
    memset(&src, 0, sizeof src);
    got = envelope_of(&c, &src);
    ck_assert_msg(strstr(got, "\"name\":\"\",\"db\":\"\",") != NULL, "got %s", got);
    free(got);

    got = envelope_of(&c, NULL);
    ck_assert_msg(strstr(got, "\"name\":\"\",\"db\":\"\",") != NULL, "got %s", got);
    free(got);

    /* name and db are distinct fields. */
    memset(&src, 0, sizeof src);
    strcpy(src.name, "shop-eu");
    strcpy(src.dbname, "shop");
    got = envelope_of(&c, &src);
    ck_assert_msg(strstr(got, "\"name\":\"shop-eu\",\"db\":\"shop\",") != NULL, "got %s", got);
    free(got);

    /* A field that fills its array without a NUL is still bounded. */
    memset(src.name, 'n', sizeof src.name);
    got = envelope_of(&c, &src);
    ck_assert_msg(strstr(got, "\"name\":\"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn\","
                              "\"db\":\"shop\",")
                      != NULL,
                  "got %s", got);
    free(got);
}
END_TEST

/* Keys ----------------------------------------------------------------------- */

START_TEST(test_key_single)
{
    Change c = orders_change(CHANGE_INSERT);
    bool ok;
    char *got;

    c.new_cols = order_new;
    c.n_new = 8;
    got = key_of(&c, &ok);
    ck_assert(ok);
    ck_assert_str_eq(got, "{\"id\":9000001}");
    free(got);

    /* DELETE under DEFAULT and FULL: the key from the old row. */
    c = orders_change(CHANGE_DELETE);
    c.old_cols = order_old_key;
    c.n_old = 1;
    got = key_of(&c, &ok);
    ck_assert(ok);
    ck_assert_str_eq(got, "{\"id\":9000001}");
    free(got);
    c.old_cols = order_old_full;
    c.n_old = 8;
    got = key_of(&c, &ok);
    ck_assert(ok);
    ck_assert_str_eq(got, "{\"id\":9000001}");
    free(got);
}
END_TEST

START_TEST(test_key_composite)
{
    static const Column item[] = {
        COL("quantity", "integer", TYPE_INT, VALUE_NUMBER, "3"),
        COL("product_id", "bigint", TYPE_INT, VALUE_NUMBER, "77"),
        COL("order_id", "bigint", TYPE_INT, VALUE_NUMBER, "42"),
    };
    static const Str pk[] = {S("order_id"), S("product_id")};
    Change c = orders_change(CHANGE_INSERT);
    bool ok;
    char *got;

    c.new_cols = item;
    c.n_new = 3;
    c.pk = pk;
    c.n_pk = 2;
    /* Key columns in primary-key order, not column order. */
    got = key_of(&c, &ok);
    ck_assert(ok);
    ck_assert_str_eq(got, "{\"order_id\":42,\"product_id\":77}");
    free(got);
}
END_TEST

START_TEST(test_key_change)
{
    static const Column new_row[] = {
        COL("code", "text", TYPE_TEXT, VALUE_STRING, "NEW"),
        COL("name", "text", TYPE_TEXT, VALUE_STRING, "x"),
    };
    static const Column old_row[] = {COL("code", "text", TYPE_TEXT, VALUE_STRING, "OLD")};
    static const Str pk[] = {S("code")};
    Change c = orders_change(CHANGE_UPDATE);
    bool ok;
    char *got;

    c.new_cols = new_row;
    c.n_new = 2;
    c.old_cols = old_row;
    c.n_old = 1;
    c.pk = pk;
    c.n_pk = 1;
    got = key_of(&c, &ok);
    ck_assert(ok);
    ck_assert_str_eq(got, "{\"code\":\"NEW\"}");
    free(got);
}
END_TEST

START_TEST(test_key_toasted_pk_from_old_row)
{
    static const Column new_row[] = {COL("name", "text", TYPE_TEXT, VALUE_STRING, "x")};
    static const Column old_row[] = {COL("code", "text", TYPE_TEXT, VALUE_STRING, "K")};
    static const Str pk[] = {S("code")};
    Change c = orders_change(CHANGE_UPDATE);
    bool ok;
    char *got;

    c.new_cols = new_row;
    c.n_new = 1;
    c.old_cols = old_row;
    c.n_old = 1;
    c.pk = pk;
    c.n_pk = 1;
    got = key_of(&c, &ok);
    ck_assert(ok);
    ck_assert_str_eq(got, "{\"code\":\"K\"}");
    free(got);
}
END_TEST

START_TEST(test_key_without_pk)
{
    Change c = orders_change(CHANGE_DELETE);
    bool ok;
    char *got;

    /* REPLICA IDENTITY FULL: the whole old row is the identity. */
    c.pk = NULL;
    c.n_pk = 0;
    c.old_cols = order_old_full;
    c.n_old = 8;
    got = key_of(&c, &ok);
    ck_assert(ok);
    ck_assert_str_eq(got, OLD_FULL_JSON);
    free(got);

    /* An INSERT into a table without a key has no identity at all. */
    c = orders_change(CHANGE_INSERT);
    c.pk = NULL;
    c.n_pk = 0;
    c.new_cols = order_new;
    c.n_new = 8;
    got = key_of(&c, &ok);
    ck_assert(!ok);
    ck_assert_str_eq(got, "");
    free(got);
}
END_TEST

START_TEST(test_key_missing_column_appends_nothing)
{
    static const Str pk[] = {S("id"), S("nope")};
    Change c = orders_change(CHANGE_INSERT);
    bool ok;
    char *got;

    c.new_cols = order_new;
    c.n_new = 8;
    c.pk = pk;
    c.n_pk = 2;
    got = key_of(&c, &ok);
    ck_assert(!ok);
    ck_assert_str_eq(got, "");
    free(got);

    c = orders_change(CHANGE_TRUNCATE);
    got = key_of(&c, &ok);
    ck_assert(!ok);
    ck_assert_str_eq(got, "");
    free(got);
}
END_TEST

static Suite *envelope_suite(void)
{
    Suite *s = suite_create("envelope");
    TCase *tc = tcase_create("envelope_append");
    TCase *tk = tcase_create("envelope_append_key");

    tcase_add_test(tc, test_insert);
    tcase_add_test(tc, test_snapshot_rows);
    tcase_add_test(tc, test_update_default_identity);
    tcase_add_test(tc, test_update_full_identity);
    tcase_add_test(tc, test_update_without_old_row);
    tcase_add_test(tc, test_delete_default_and_full);
    tcase_add_test(tc, test_truncate);
    tcase_add_test(tc, test_other_kinds_append_nothing);
    tcase_add_test(tc, test_toast_absent_column);
    tcase_add_test(tc, test_values);
    tcase_add_test(tc, test_unicode_and_escapes);
    tcase_add_test(tc, test_null_xid_and_commit_time);
    tcase_add_test(tc, test_source_info);
    suite_add_tcase(s, tc);

    tcase_add_test(tk, test_key_single);
    tcase_add_test(tk, test_key_composite);
    tcase_add_test(tk, test_key_change);
    tcase_add_test(tk, test_key_toasted_pk_from_old_row);
    tcase_add_test(tk, test_key_without_pk);
    tcase_add_test(tk, test_key_missing_column_appends_nothing);
    suite_add_tcase(s, tk);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(envelope_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
