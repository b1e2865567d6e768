/*
 * test_snapshot_rows.c - the initial snapshot's pure parts: COPY text rows
 * into Changes as the decoder would make them from wal2json
 * (daemon/snapshot_rows.h), the COPY it sends, and the state file
 * (daemon/snapshot_state.h).
 */
#include "../../common/mem.h"
#include "../../daemon/snapshot_rows.h"
#include "../../daemon/snapshot_state.h"
#include "../../decoder/values.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A catalog table: (name, type, pk_position) triples. */
static CatalogTable make_table(const char *schema, const char *table, const char *const *spec,
                               size_t n)
{
    CatalogTable t;

    memset(&t, 0, sizeof t);
    t.schema = (char *)schema;
    t.table = (char *)table;
    t.cols = xcalloc(n, sizeof *t.cols);
    t.n_cols = n;
    for (size_t i = 0; i < n; i++) {
        t.cols[i].name = (char *)spec[3 * i];
        t.cols[i].type = (char *)spec[3 * i + 1];
        t.cols[i].type_class = value_type_class((Str){spec[3 * i + 1], strlen(spec[3 * i + 1])});
        t.cols[i].pk_position = atoi(spec[3 * i + 2]);
    }
    return t;
}

/* clang-format off */
static const char *const all_types[] = {
    "id", "bigint", "2",       "flag", "boolean", "0",       "amount", "numeric(12,2)", "0",
    "ratio", "double precision", "0", "at", "timestamp with time zone", "0",
    "data", "bytea", "0",      "note", "text", "0",          "tags", "text[]", "0",
    "shop", "integer", "1",
};
/* clang-format on */
#define N_ALL 9

static SnapTable all_types_table(void)
{
    CatalogTable ct = make_table("public", "Orders", all_types, N_ALL);
    SnapTable t;

    snap_table_init(&t, &ct);
    free(ct.cols);
    return t;
}

static void assert_value(const Column *c, const char *name, ValueKind kind, const char *text)
{
    ck_assert_msg(c->name.len == strlen(name) && memcmp(c->name.ptr, name, c->name.len) == 0,
                  "column %.*s, expected %s", (int)c->name.len, c->name.ptr, name);
    ck_assert_msg(c->value.kind == kind, "%s: kind %d, expected %d", name, c->value.kind, kind);
    ck_assert_msg(c->value.text.len == strlen(text) &&
                      memcmp(c->value.text.ptr, text, c->value.text.len) == 0,
                  "%s: \"%.*s\", expected \"%s\"", name, (int)c->value.text.len, c->value.text.ptr,
                  text);
}

START_TEST(test_row_values_as_wal2json_sends_them)
{
    SnapTable t = all_types_table();
    SnapRowParser p = {0};
    Change c;
    PfError err;
    char *line = xstrdup("42\tt\t129.90\t1.0000000000000002\t2026-11-20 10:00:00.5+00\t"
                         "\\\\x00ff\ttab\\there\\nnew \\\\ back\t{a,\"b c\"}\t7\n");

    ck_assert(snap_row_parse(&p, &t, line, strlen(line), &c, &err));
    ck_assert_int_eq(c.kind, CHANGE_INSERT);
    ck_assert(str_eq(c.schema, "public") && str_eq(c.table, "Orders"));
    ck_assert_uint_eq(c.n_new, N_ALL);
    assert_value(&c.new_cols[0], "id", VALUE_NUMBER, "42");
    assert_value(&c.new_cols[1], "flag", VALUE_BOOL, "true");
    assert_value(&c.new_cols[2], "amount", VALUE_NUMBER, "129.90");
    assert_value(&c.new_cols[3], "ratio", VALUE_NUMBER, "1.0000000000000002");
    assert_value(&c.new_cols[4], "at", VALUE_STRING, "2026-11-20 10:00:00.5+00");
    assert_value(&c.new_cols[5], "data", VALUE_STRING, "00ff"); /* hex digits, no \x */
    assert_value(&c.new_cols[6], "note", VALUE_STRING, "tab\there\nnew \\ back");
    assert_value(&c.new_cols[7], "tags", VALUE_STRING, "{a,\"b c\"}");
    assert_value(&c.new_cols[8], "shop", VALUE_NUMBER, "7");
    ck_assert_int_eq(c.new_cols[2].type_class, TYPE_NUMERIC);
    ck_assert(str_eq(c.new_cols[2].type, "numeric(12,2)"));
    ck_assert_int_eq(c.new_cols[4].type_class, TYPE_TIMESTAMPTZ);
    ck_assert_int_eq(c.new_cols[7].type_class, TYPE_ARRAY);
    /* key in key order: shop (position 1), then id (position 2) */
    ck_assert_uint_eq(c.n_pk, 2);
    ck_assert(str_eq(c.pk[0], "shop") && str_eq(c.pk[1], "id"));
    ck_assert_int_eq(c.snapshot, CHANGE_SNAP_NONE);
    ck_assert_uint_eq(c.n_old, 0);
    free(line);
    snap_row_parser_free(&p);
    snap_table_clear(&t);
}
END_TEST

START_TEST(test_row_nulls_false_and_nonfinite)
{
    SnapTable t = all_types_table();
    SnapRowParser p = {0};
    Change c;
    PfError err;
    /* wal2json writes NaN and infinities of numbers as null */
    char *line = xstrdup("1\tf\tNaN\t-Infinity\t\\N\t\\N\t\t\\N\t\\N");

    ck_assert(snap_row_parse(&p, &t, line, strlen(line), &c, &err));
    assert_value(&c.new_cols[1], "flag", VALUE_BOOL, "false");
    assert_value(&c.new_cols[2], "amount", VALUE_NULL, "");
    assert_value(&c.new_cols[3], "ratio", VALUE_NULL, "");
    assert_value(&c.new_cols[4], "at", VALUE_NULL, "");
    assert_value(&c.new_cols[6], "note", VALUE_STRING, ""); /* empty, not NULL */
    assert_value(&c.new_cols[8], "shop", VALUE_NULL, "");
    free(line);
    snap_row_parser_free(&p);
    snap_table_clear(&t);
}
END_TEST

START_TEST(test_row_escapes)
{
    static const char *const one[] = {"s", "text", "0"};
    CatalogTable ct = make_table("public", "t", one, 1);
    SnapTable t;
    SnapRowParser p = {0};
    Change c;
    PfError err;
    /* what COPY TO writes, and the octal/hex forms COPY FROM also reads */
    char *line = xstrdup("a\\bb\\fc\\rd\\ve\\\\f\\101\\x42\\q\n");

    snap_table_init(&t, &ct);
    free(ct.cols);
    ck_assert(snap_row_parse(&p, &t, line, strlen(line), &c, &err));
    assert_value(&c.new_cols[0], "s", VALUE_STRING, "a\bb\fc\rd\ve\\fABq");
    ck_assert_uint_eq(c.n_pk, 0);
    free(line);
    snap_row_parser_free(&p);
    snap_table_clear(&t);
}
END_TEST

START_TEST(test_row_wrong_field_count)
{
    SnapTable t = all_types_table();
    SnapRowParser p = {0};
    Change c;
    PfError err;
    char *few = xstrdup("1\tt\n");
    char *many = xstrdup("1\tt\t1\t1\t\\N\t\\N\tx\t\\N\t7\textra\n");

    ck_assert(!snap_row_parse(&p, &t, few, strlen(few), &c, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_str_eq(err.msg, "could not read a row of public.\"Orders\": 2 fields for 9 columns");
    ck_assert(!snap_row_parse(&p, &t, many, strlen(many), &c, &err));
    ck_assert_str_eq(err.msg, "could not read a row of public.\"Orders\": more than the 9 "
                              "columns of the table");
    free(few);
    free(many);
    snap_row_parser_free(&p);
    snap_table_clear(&t);
}
END_TEST

START_TEST(test_copy_statements)
{
    static const char *const cols[] = {"id", "bigint", "1", "we\"ird", "text", "0"};
    CatalogTable ct = make_table("my schema", "t", cols, 2);
    SnapTable t;
    Buf b = BUF_INIT;

    snap_table_init(&t, &ct);
    free(ct.cols);
    snap_table_append_copy(&b, &t, true, 0, 0);
    ck_assert_str_eq(b.data, "COPY (SELECT \"id\", \"we\"\"ird\" FROM ONLY \"my schema\".\"t\") "
                             "TO STDOUT");
    buf_reset(&b);
    snap_table_append_copy(&b, &t, true, 0, 2048);
    ck_assert_str_eq(b.data, "COPY (SELECT \"id\", \"we\"\"ird\" FROM ONLY \"my schema\".\"t\" "
                             "WHERE ctid >= '(0,0)' AND ctid < '(2048,0)') TO STDOUT");
    buf_reset(&b);
    snap_table_append_copy(&b, &t, false, 4096, 0);
    ck_assert_str_eq(b.data, "COPY (SELECT \"id\", \"we\"\"ird\" FROM \"my schema\".\"t\" "
                             "WHERE ctid >= '(4096,0)') TO STDOUT");
    ck_assert_str_eq(t.label, "\"my schema\".t");
    buf_free(&b);
    snap_table_clear(&t);
}
END_TEST

/* ---- state file ---- */

static char *tmpdir(void)
{
    char tmpl[] = "/tmp/pgfan-snapstate.XXXXXX";
    char *d = mkdtemp(tmpl);

    ck_assert_ptr_nonnull(d);
    return xstrdup(d);
}

static void rmdir_all(char *dir, const char *slot)
{
    Buf p = BUF_INIT;

    snap_state_path(&p, dir, slot);
    unlink(p.data);
    rmdir(dir);
    buf_free(&p);
    free(dir);
}

START_TEST(test_state_round_trip)
{
    char *dir = tmpdir();
    SnapState st = {SNAP_STATE_IN_PROGRESS, LSN_INVALID};
    SnapState got;
    PfError err;
    Buf path = BUF_INIT;
    FILE *f;
    char text[128] = {0};

    ck_assert(snap_state_read(dir, "shop", &got, &err));
    ck_assert_int_eq(got.kind, SNAP_STATE_NONE);
    ck_assert(snap_state_write(dir, "shop", &st, &err));
    ck_assert(snap_state_read(dir, "shop", &got, &err));
    ck_assert_int_eq(got.kind, SNAP_STATE_IN_PROGRESS);
    ck_assert_uint_eq(got.consistent_lsn, LSN_INVALID);
    st.kind = SNAP_STATE_DONE;
    st.consistent_lsn = UINT64_C(0x1DB4FF0);
    ck_assert(snap_state_write(dir, "shop", &st, &err));
    snap_state_path(&path, dir, "shop");
    f = fopen(path.data, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_gt(fread(text, 1, sizeof text - 1, f), 0);
    fclose(f);
    ck_assert_str_eq(text, "done shop 0/1DB4FF0\n");
    ck_assert(snap_state_read(dir, "shop", &got, &err));
    ck_assert_int_eq(got.kind, SNAP_STATE_DONE);
    ck_assert_uint_eq(got.consistent_lsn, UINT64_C(0x1DB4FF0));
    /* another slot's state is its own file */
    ck_assert(snap_state_read(dir, "other", &got, &err));
    ck_assert_int_eq(got.kind, SNAP_STATE_NONE);
    ck_assert(snap_state_remove(dir, "shop", &err));
    ck_assert(snap_state_read(dir, "shop", &got, &err));
    ck_assert_int_eq(got.kind, SNAP_STATE_NONE);
    ck_assert(snap_state_remove(dir, "shop", &err)); /* missing is fine */
    buf_free(&path);
    rmdir_all(dir, "shop");
}
END_TEST

START_TEST(test_state_refuses_foreign_or_torn_files)
{
    char *dir = tmpdir();
    Buf path = BUF_INIT;
    SnapState got;
    PfError err;
    FILE *f;

    snap_state_path(&path, dir, "shop");
    f = fopen(path.data, "w");
    ck_assert_ptr_nonnull(f);
    fputs("done other 0/1\n", f); /* copied from another slot */
    fclose(f);
    ck_assert(!snap_state_read(dir, "shop", &got, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "could not read the snapshot state"));
    ck_assert_ptr_nonnull(strstr(err.msg, "is not \"in progress|done <slot> <lsn>\""));
    ck_assert_ptr_nonnull(strstr(err.hint, "delete it and drop the replication slot"));
    f = fopen(path.data, "w");
    fputs("in progress shop 0/1", f); /* no newline: torn */
    fclose(f);
    ck_assert(!snap_state_read(dir, "shop", &got, &err));
    buf_free(&path);
    rmdir_all(dir, "shop");
}
END_TEST

START_TEST(test_state_dir_checked)
{
    char *dir = tmpdir();
    PfError err;
    Buf file = BUF_INIT;
    FILE *f;

    ck_assert(snap_state_check_dir(dir, &err));
    ck_assert(!snap_state_check_dir("/nonexistent/pgfan", &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, "could not use [source] state_dir \"/nonexistent/pgfan\": No such "
                              "file or directory");
    buf_printf(&file, "%s/plain", dir);
    f = fopen(file.data, "w");
    fclose(f);
    ck_assert(!snap_state_check_dir(file.data, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "not a directory"));
    ck_assert(!snap_state_write(file.data, "shop", &(SnapState){SNAP_STATE_DONE, 1}, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "could not write the snapshot state"));
    unlink(file.data);
    buf_free(&file);
    rmdir_all(dir, "shop");
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("snapshot_rows");
    TCase *tc = tcase_create("rows");
    TCase *ts = tcase_create("state");

    tcase_add_test(tc, test_row_values_as_wal2json_sends_them);
    tcase_add_test(tc, test_row_nulls_false_and_nonfinite);
    tcase_add_test(tc, test_row_escapes);
    tcase_add_test(tc, test_row_wrong_field_count);
    tcase_add_test(tc, test_copy_statements);
    suite_add_tcase(s, tc);
    tcase_add_test(ts, test_state_round_trip);
    tcase_add_test(ts, test_state_refuses_foreign_or_torn_files);
    tcase_add_test(ts, test_state_dir_checked);
    suite_add_tcase(s, ts);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
