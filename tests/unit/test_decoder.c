/*
 * test_decoder.c - wal2json v2 decoder: golden files captured from a real
 * PostgreSQL 15 + wal2json 2.5, plus hand-written edge and error cases.
 *
 * Golden files live in DATA_DIR (or $PGFAN_TEST_DATA): every NAME.in holds
 * raw wal2json lines, NAME.expected the dump of the decoded Changes.
 * PGFAN_UPDATE_GOLDEN=1 rewrites the .expected files (review them by hand).
 */
#include "../../common/buf.h"
#include "../../common/mem.h"
#include "../../decoder/json.h"
#include "../../decoder/values.h"
#include "../../decoder/wal2json.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef DATA_DIR
#define DATA_DIR "tests/data/wal2json"
#endif

#define TEST_LSN ((Lsn)0x16B3748) /* 0/16B3748 */

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/*
 * Decodes from an exact-size heap copy, so a read past len is caught by
 * AddressSanitizer. The copy is returned in *copy: spans point into it.
 */
static bool decode_exact(W2jDecoder *dec, const char *line, size_t len, Change *ch, PfError *err,
                         char **copy)
{
    *copy = xmalloc(len ? len : 1);
    memcpy(*copy, line, len);
    err_clear(err);
    return w2j_decode(dec, *copy, len, TEST_LSN, ch, err);
}

static const char *type_class_name(TypeClass tc)
{
    static const char *const names[] = {
        "UNKNOWN", "BOOL", "INT",      "FLOAT", "NUMERIC", "TEXT",  "TIMESTAMPTZ", "TIMESTAMP",
        "DATE",    "TIME", "INTERVAL", "UUID",  "JSON",    "BYTEA", "ARRAY",       "OTHER",
    };

    return (size_t)tc < sizeof names / sizeof names[0] ? names[tc] : "?";
}

static const char *value_kind_name(ValueKind k)
{
    switch (k) {
    case VALUE_NULL:
        return "NULL";
    case VALUE_BOOL:
        return "BOOL";
    case VALUE_NUMBER:
        return "NUMBER";
    case VALUE_STRING:
        return "STRING";
    }
    return "?";
}

/* Quoted, escaped; long texts are shortened to a prefix, their length and a hash. */
static void dump_text(Buf *b, Str s)
{
    uint64_t h = 1469598103934665603ULL;

    if (s.len <= 200) {
        buf_append_json_string(b, s.ptr, s.len);
        return;
    }
    for (size_t i = 0; i < s.len; i++) {
        h ^= (unsigned char)s.ptr[i];
        h *= 1099511628211ULL;
    }
    buf_append_json_string(b, s.ptr, 48);
    buf_printf(b, "...(%zu bytes, fnv1a %016llx)", s.len, (unsigned long long)h);
}

static void dump_lsn(Buf *b, const char *label, Lsn lsn)
{
    char text[LSN_TEXT_SIZE];

    buf_printf(b, " %s=%s", label, lsn_format(lsn, text));
}

static void dump_cols(Buf *b, const char *label, const Column *cols, size_t n)
{
    buf_printf(b, " %s[%zu]=[", label, n);
    for (size_t i = 0; i < n; i++) {
        const Column *col = &cols[i];

        buf_append_str(b, i ? ", {" : "{");
        dump_text(b, col->name);
        buf_append_char(b, ' ');
        dump_text(b, col->type);
        buf_printf(b, " %s %s", type_class_name(col->type_class), value_kind_name(col->value.kind));
        if (col->value.kind != VALUE_NULL) {
            buf_append_char(b, ' ');
            dump_text(b, col->value.text);
        }
        buf_append_char(b, '}');
    }
    buf_append_char(b, ']');
}

/* One line per Change, every field that is set. */
static void dump_change(Buf *b, const Change *ch)
{
    buf_append_str(b, change_kind_name(ch->kind));
    dump_lsn(b, "lsn", ch->lsn);
    if (ch->end_lsn != LSN_INVALID)
        dump_lsn(b, "end", ch->end_lsn);
    if (ch->has_xid)
        buf_printf(b, " xid=%u", (unsigned)ch->xid);
    else
        buf_append_str(b, " xid=-");
    if (ch->has_commit_time) {
        time_t secs = (time_t)(ch->commit_time / USECS_PER_SEC);
        long us = (long)(ch->commit_time % USECS_PER_SEC);
        struct tm tm;
        char iso[64];

        if (us < 0) {
            secs--;
            us += 1000000;
        }
        gmtime_r(&secs, &tm);
        strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%S", &tm);
        buf_printf(b, " time=%lld(%s.%06ldZ)", (long long)ch->commit_time, iso, us);
    } else {
        buf_append_str(b, " time=-");
    }
    switch (ch->kind) {
    case CHANGE_INSERT:
    case CHANGE_UPDATE:
    case CHANGE_DELETE:
    case CHANGE_TRUNCATE:
        buf_append_str(b, " rel=");
        dump_text(b, ch->schema);
        buf_append_char(b, '.');
        dump_text(b, ch->table);
        dump_cols(b, "new", ch->new_cols, ch->n_new);
        dump_cols(b, "old", ch->old_cols, ch->n_old);
        buf_printf(b, " pk[%zu]=[", ch->n_pk);
        for (size_t i = 0; i < ch->n_pk; i++) {
            if (i)
                buf_append_str(b, ", ");
            dump_text(b, ch->pk[i]);
        }
        buf_append_char(b, ']');
        break;
    case CHANGE_MESSAGE:
        buf_printf(b, " transactional=%s prefix=", ch->transactional ? "true" : "false");
        dump_text(b, ch->prefix);
        buf_append_str(b, " content=");
        dump_text(b, ch->content);
        break;
    case CHANGE_BEGIN:
    case CHANGE_COMMIT:
        break;
    }
    buf_append_char(b, '\n');
}

static bool read_file(const char *path, Buf *out)
{
    FILE *f = fopen(path, "rb");
    char chunk[65536];
    size_t n;

    if (f == NULL)
        return false;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(out, chunk, n);
    fclose(f);
    return true;
}

static const char *data_dir(void)
{
    const char *env = getenv("PGFAN_TEST_DATA");

    return env && *env ? env : DATA_DIR;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Decodes every line of dir/name.in; the dump goes to out. */
static void decode_golden(W2jDecoder *dec, const char *dir, const char *name, Buf *out)
{
    char path[4096];
    Buf in = BUF_INIT;
    size_t pos = 0, lineno = 0;

    snprintf(path, sizeof path, "%s/%s.in", dir, name);
    ck_assert_msg(read_file(path, &in), "cannot read %s", path);
    while (pos < in.len) {
        const char *nl = memchr(in.data + pos, '\n', in.len - pos);
        size_t len = nl ? (size_t)(nl - (in.data + pos)) : in.len - pos;
        Change ch;
        PfError err;
        char *copy;

        lineno++;
        ck_assert_msg(decode_exact(dec, in.data + pos, len, &ch, &err, &copy), "%s:%zu: %s", path,
                      lineno, err.msg);
        dump_change(out, &ch);
        free(copy);
        pos += len + 1;
    }
    buf_free(&in);
}

/* ------------------------------------------------------------------------
 * Golden files
 * ------------------------------------------------------------------------ */

START_TEST(test_golden_files)
{
    const char *dir = data_dir();
    bool update = getenv("PGFAN_UPDATE_GOLDEN") && strcmp(getenv("PGFAN_UPDATE_GOLDEN"), "1") == 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    char *names[256];
    size_t n = 0;
    W2jDecoder *dec = w2j_new();

    ck_assert_msg(d != NULL, "cannot open %s", dir);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);

        if (len > 3 && strcmp(e->d_name + len - 3, ".in") == 0) {
            ck_assert_uint_lt(n, sizeof names / sizeof names[0]);
            names[n++] = xstrndup(e->d_name, len - 3);
        }
    }
    closedir(d);
    ck_assert_msg(n >= 8, "expected the golden scenarios in %s, found %zu", dir, n);
    qsort(names, n, sizeof names[0], cmp_names);

    for (size_t i = 0; i < n; i++) {
        char path[4096];
        Buf got = BUF_INIT, want = BUF_INIT;

        decode_golden(dec, dir, names[i], &got);
        snprintf(path, sizeof path, "%s/%s.expected", dir, names[i]);
        if (update) {
            FILE *f = fopen(path, "wb");

            ck_assert_msg(f != NULL, "cannot write %s", path);
            fwrite(got.data, 1, got.len, f);
            fclose(f);
        } else {
            ck_assert_msg(read_file(path, &want), "cannot read %s", path);
            if (got.len != want.len || memcmp(got.data, want.data, got.len) != 0) {
                size_t k = 0, line = 1;

                while (k < got.len && k < want.len && got.data[k] == want.data[k])
                    line += got.data[k++] == '\n';
                ck_abort_msg("%s: decoded dump differs from .expected at line %zu:\n got: %.300s\n"
                             "want: %.300s",
                             names[i], line, got.data + k, want.data + k);
            }
        }
        buf_free(&got);
        buf_free(&want);
        free(names[i]);
    }
    w2j_free(dec);
}
END_TEST

/* Golden decoding through one decoder twice gives the same dump (no state leaks). */
START_TEST(test_golden_reuse)
{
    W2jDecoder *dec = w2j_new();
    Buf a = BUF_INIT, b = BUF_INIT;

    decode_golden(dec, data_dir(), "types", &a);
    decode_golden(dec, data_dir(), "toast", &b);
    buf_reset(&b);
    decode_golden(dec, data_dir(), "types", &b);
    ck_assert_uint_eq(a.len, b.len);
    ck_assert(memcmp(a.data, b.data, a.len) == 0);
    buf_free(&a);
    buf_free(&b);
    w2j_free(dec);
}
END_TEST

/* ------------------------------------------------------------------------
 * Fields and values
 * ------------------------------------------------------------------------ */

static W2jDecoder *g_dec;
static char *g_copy;

static void setup(void)
{
    g_dec = w2j_new();
    g_copy = NULL;
}

static void teardown(void)
{
    free(g_copy);
    w2j_free(g_dec);
}

static bool decode_str_n(const char *line, size_t len, Change *ch, PfError *err)
{
    free(g_copy);
    return decode_exact(g_dec, line, len, ch, err, &g_copy);
}

/* Decodes a NUL-terminated test line (the NUL is not passed). */
static bool decode_str(const char *line, Change *ch, PfError *err)
{
    return decode_str_n(line, strlen(line), ch, err);
}

static void assert_str(Str s, const char *want)
{
    ck_assert_msg(str_eq(s, want), "got '%.*s', want '%s'", (int)s.len, s.ptr, want);
}

START_TEST(test_begin_commit)
{
    Change ch;
    PfError err;

    ck_assert(
        decode_str("{\"action\":\"B\",\"xid\":731,\"timestamp\":\"2024-05-01 10:00:00.123456+00\","
                   "\"lsn\":\"0/1574CC0\",\"nextlsn\":\"0/1574CF0\"}",
                   &ch, &err));
    ck_assert_int_eq(ch.kind, CHANGE_BEGIN);
    ck_assert_uint_eq(ch.lsn, 0x1574CC0);
    ck_assert_uint_eq(ch.end_lsn, 0x1574CF0);
    ck_assert(ch.has_xid);
    ck_assert_uint_eq(ch.xid, 731);
    ck_assert(ch.has_commit_time);
    ck_assert_int_eq(ch.commit_time, INT64_C(1714557600123456));
    ck_assert_uint_eq(ch.n_new + ch.n_old + ch.n_pk, 0);
    ck_assert_uint_eq(ch.table.len, 0);

    /* Key order does not matter, unknown keys are ignored, "xid" may be absent. */
    ck_assert(decode_str(" {\"nextlsn\":\"1/0\", \"origin\": {\"id\": [1, 2]}, \"lsn\" : \"0/FF\","
                         " \"action\":\"C\"} \n",
                         &ch, &err));
    ck_assert_int_eq(ch.kind, CHANGE_COMMIT);
    ck_assert_uint_eq(ch.lsn, 0xFF);
    ck_assert_uint_eq(ch.end_lsn, UINT64_C(0x100000000));
    ck_assert(!ch.has_xid);
    ck_assert(!ch.has_commit_time);

    /* Largest xid. */
    ck_assert(decode_str(
        "{\"action\":\"B\",\"xid\":4294967295,\"lsn\":\"0/1\",\"nextlsn\":\"0/2\"}", &ch, &err));
    ck_assert_uint_eq(ch.xid, UINT32_MAX);
}
END_TEST

START_TEST(test_row_change)
{
    Change ch;
    PfError err;
    const Column *col;

    ck_assert(decode_str(
        "{\"action\":\"U\",\"xid\":5,\"timestamp\":\"2026-11-24 00:03:27.5+05:30\",\"lsn\":\"0/"
        "14EA7250\",\"schema\":\"public\",\"table\":\"orders\",\"columns\":[{\"name\":\"id\","
        "\"type\":\"bigint\",\"typeoid\":20,\"position\":1,\"optional\":false,\"default\":null,"
        "\"value\":9000001},{\"name\":\"ok\",\"type\":\"boolean\",\"value\":false},{\"name\":"
        "\"n\",\"type\":\"numeric\",\"value\":-1.5e+30},{\"name\":\"s\",\"value\":\"x\"},{\"value\""
        ":null,\"name\":\"z\",\"type\":\"text\"}],\"identity\":[{\"name\":\"id\",\"type\":"
        "\"bigint\",\"value\":9000000}],\"pk\":[{\"name\":\"id\",\"type\":\"bigint\"}]}",
        &ch, &err));
    ck_assert_int_eq(ch.kind, CHANGE_UPDATE);
    ck_assert_uint_eq(ch.lsn, 0x14EA7250);
    ck_assert_uint_eq(ch.end_lsn, LSN_INVALID);
    /* 2026-11-23T18:33:27.5Z */
    ck_assert_int_eq(ch.commit_time, INT64_C(1795458807500000));
    assert_str(ch.schema, "public");
    assert_str(ch.table, "orders");
    ck_assert_uint_eq(ch.n_new, 5);
    ck_assert_uint_eq(ch.n_old, 1);
    ck_assert_uint_eq(ch.n_pk, 1);
    assert_str(ch.pk[0], "id");

    col = change_find_column(ch.new_cols, ch.n_new, "id", 2);
    ck_assert_ptr_nonnull(col);
    ck_assert_int_eq(col->type_class, TYPE_INT);
    ck_assert_int_eq(col->value.kind, VALUE_NUMBER);
    assert_str(col->value.text, "9000001");
    col = change_find_column(ch.new_cols, ch.n_new, "ok", 2);
    ck_assert_int_eq(col->value.kind, VALUE_BOOL);
    assert_str(col->value.text, "false");
    col = change_find_column(ch.new_cols, ch.n_new, "n", 1);
    ck_assert_int_eq(col->type_class, TYPE_NUMERIC);
    assert_str(col->value.text, "-1.5e+30");
    col = change_find_column(ch.new_cols, ch.n_new, "s", 1);
    ck_assert_int_eq(col->type_class, TYPE_UNKNOWN);
    ck_assert_uint_eq(col->type.len, 0);
    ck_assert_int_eq(col->value.kind, VALUE_STRING);
    col = change_find_column(ch.new_cols, ch.n_new, "z", 1);
    ck_assert_int_eq(col->value.kind, VALUE_NULL);
    ck_assert_uint_eq(col->value.text.len, 0);
    ck_assert_ptr_nonnull(col->value.text.ptr);
    ck_assert_ptr_null(change_find_column(ch.new_cols, ch.n_new, "missing", 7));
    assert_str(ch.old_cols[0].value.text, "9000000");
}
END_TEST

START_TEST(test_exact_numbers)
{
    Change ch;
    PfError err;
    const char *big = "1234567890123456789012345678901234567890";
    const char *frac = "-0.123456789012345678901234567890";
    char line[512];

    snprintf(line, sizeof line,
             "{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"columns\":[{\"name\":\"a\","
             "\"type\":\"numeric(40,0)\",\"value\":%s},{\"name\":\"b\",\"type\":\"numeric(40,30)\","
             "\"value\":%s}]}",
             big, frac);
    ck_assert(decode_str(line, &ch, &err));
    assert_str(ch.new_cols[0].value.text, big);
    assert_str(ch.new_cols[1].value.text, frac);
    /* Spans of numbers point into the input: no conversion happened. */
    ck_assert(ch.new_cols[0].value.text.ptr >= g_copy &&
              ch.new_cols[0].value.text.ptr < g_copy + strlen(line));
}
END_TEST

START_TEST(test_truncate_and_message)
{
    Change ch;
    PfError err;

    ck_assert(
        decode_str("{\"action\":\"T\",\"xid\":780,\"timestamp\":\"2026-11-24 02:01:18.82059+00\","
                   "\"lsn\":\"0/329C9C8\",\"schema\":\"public\",\"table\":\"scratch_a\"}",
                   &ch, &err));
    ck_assert_int_eq(ch.kind, CHANGE_TRUNCATE);
    assert_str(ch.table, "scratch_a");
    ck_assert_uint_eq(ch.n_new, 0);

    ck_assert(decode_str("{\"action\":\"M\",\"xid\":null,\"timestamp\":null,\"lsn\":\"0/25EB130\","
                         "\"transactional\":false,\"prefix\":\"cdc_hb\",\"content\":\"hello\"}",
                         &ch, &err));
    ck_assert_int_eq(ch.kind, CHANGE_MESSAGE);
    ck_assert(!ch.has_xid);
    ck_assert(!ch.has_commit_time);
    ck_assert(!ch.transactional);
    assert_str(ch.prefix, "cdc_hb");
    assert_str(ch.content, "hello");

    ck_assert(decode_str("{\"action\":\"M\",\"xid\":9,\"lsn\":\"0/1\",\"transactional\":true,"
                         "\"prefix\":\"\",\"content\":\"\"}",
                         &ch, &err));
    ck_assert(ch.transactional);
    ck_assert_uint_eq(ch.xid, 9);
    ck_assert_uint_eq(ch.prefix.len, 0);
    ck_assert_ptr_nonnull(ch.content.ptr);
}
END_TEST

START_TEST(test_strings)
{
    Change ch;
    PfError err;
    const char *line =
        "{\"action\":\"I\",\"lsn\":\"0/1\",\"schema\":\"public\",\"table\":\"t\\\"q\",\"columns\":["
        "{\"name\":\"plain\",\"value\":\"zero copy\"},"
        "{\"name\":\"esc\",\"value\":\"a\\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti\\u0001j\"},"
        "{\"name\":\"plain2\",\"value\":\"Z\xc3\xbcrich \xe2\x9c\x93 \xf0\x9f\x98\x80\"},"
        "{\"name\":\"uni\",\"value\":\"\\u00fc\\u2713\\ud83d\\ude00\\u0041\\uFFFF\"},"
        "{\"name\":\"n\\u00e4me\",\"type\":\"\\\"Mood\\\"[]\",\"value\":\"\\\\u0041\"}]}";
    size_t len = strlen(line);
    const Column *c;

    ck_assert(decode_str(line, &ch, &err));
    assert_str(ch.table, "t\"q");
    c = &ch.new_cols[0];
    assert_str(c->value.text, "zero copy");
    ck_assert(c->value.text.ptr >= g_copy && c->value.text.ptr < g_copy + len);
    c = &ch.new_cols[1];
    assert_str(c->value.text, "a\"b\\c/d\be\ff\ng\rh\ti\x01j");
    ck_assert(!(c->value.text.ptr >= g_copy && c->value.text.ptr < g_copy + len));
    c = &ch.new_cols[2];
    assert_str(c->value.text, "Z\xc3\xbcrich \xe2\x9c\x93 \xf0\x9f\x98\x80");
    ck_assert(c->value.text.ptr >= g_copy && c->value.text.ptr < g_copy + len);
    c = &ch.new_cols[3];
    assert_str(c->value.text, "\xc3\xbc\xe2\x9c\x93\xf0\x9f\x98\x80"
                              "A\xef\xbf\xbf");
    c = &ch.new_cols[4];
    assert_str(c->name, "n\xc3\xa4me");
    assert_str(c->type, "\"Mood\"[]");
    ck_assert_int_eq(c->type_class, TYPE_ARRAY);
    assert_str(c->value.text, "\\u0041");
    /* Earlier unescaped spans survived the later ones (scratch never moved). */
    assert_str(ch.new_cols[1].value.text, "a\"b\\c/d\be\ff\ng\rh\ti\x01j");
}
END_TEST

/* Every string escaped: unescaped text fills scratch up to the line's size. */
START_TEST(test_scratch_full)
{
    Buf line = BUF_INIT;
    Change ch;
    PfError err;

    buf_append_str(&line, "{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"\\u0074\",\"columns\":[");
    for (int i = 0; i < 300; i++) {
        buf_printf(&line, "%s{\"name\":\"c\\u00e9%d\",\"value\":\"\\\"%d\\\"\"}", i ? "," : "", i,
                   i);
    }
    buf_append_str(&line, "]}");
    ck_assert(decode_str(line.data, &ch, &err));
    ck_assert_uint_eq(ch.n_new, 300);
    for (int i = 0; i < 300; i++) {
        char want[32];

        snprintf(want, sizeof want, "c\xc3\xa9%d", i);
        assert_str(ch.new_cols[i].name, want);
        snprintf(want, sizeof want, "\"%d\"", i);
        assert_str(ch.new_cols[i].value.text, want);
    }
    buf_free(&line);
}
END_TEST

/* A message longer than anything before grows tokens and column arrays. */
START_TEST(test_many_columns)
{
    Buf line = BUF_INIT;
    Change ch;
    PfError err;

    for (int round = 0; round < 2; round++) {
        int ncols = round == 0 ? 2000 : 3;

        buf_reset(&line);
        buf_append_str(&line,
                       "{\"action\":\"U\",\"lsn\":\"0/1\",\"schema\":\"s\",\"table\":\"wide\","
                       "\"columns\":[");
        for (int i = 0; i < ncols; i++)
            buf_printf(&line, "%s{\"name\":\"c%d\",\"type\":\"integer\",\"value\":%d}",
                       i ? "," : "", i, i * 7);
        buf_append_str(&line, "],\"identity\":[");
        for (int i = 0; i < ncols; i++)
            buf_printf(&line, "%s{\"name\":\"c%d\",\"type\":\"integer\",\"value\":%d}",
                       i ? "," : "", i, -i);
        buf_append_str(&line, "],\"pk\":[{\"name\":\"c0\",\"type\":\"integer\"}]}");

        ck_assert_msg(decode_str(line.data, &ch, &err), "%s", err.msg);
        ck_assert_uint_eq(ch.n_new, (size_t)ncols);
        ck_assert_uint_eq(ch.n_old, (size_t)ncols);
        for (int i = 0; i < ncols; i += 97) {
            char want[32];

            snprintf(want, sizeof want, "c%d", i);
            assert_str(ch.new_cols[i].name, want);
            snprintf(want, sizeof want, "%d", i * 7);
            assert_str(ch.new_cols[i].value.text, want);
            snprintf(want, sizeof want, "%d", -i);
            assert_str(ch.old_cols[i].value.text, want);
        }
        assert_str(ch.new_cols[ncols - 1].name, round == 0 ? "c1999" : "c2");
    }
    buf_free(&line);
}
END_TEST

/* Deeply nested ignored values are skipped whole. */
START_TEST(test_ignored_nested)
{
    Change ch;
    PfError err;

    ck_assert(
        decode_str("{\"x\":[[[{\"a\":[1,{\"b\":\"}\"}]}]],{}],\"action\":\"D\",\"lsn\":\"0/9\","
                   "\"table\":\"t\",\"identity\":[{\"name\":\"id\",\"value\":1,\"extra\":"
                   "{\"k\":[true,false,null]}}],\"y\":[],\"pk\":[]}",
                   &ch, &err));
    ck_assert_int_eq(ch.kind, CHANGE_DELETE);
    ck_assert_uint_eq(ch.n_old, 1);
    ck_assert_uint_eq(ch.n_pk, 0);
    assert_str(ch.old_cols[0].value.text, "1");
}
END_TEST

/* Bytes after len are never read, whatever they are. */
START_TEST(test_garbage_after_len)
{
    const char *obj = "{\"action\":\"C\",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\"}";
    size_t n = strlen(obj);
    char *buf = xmalloc(n + 16);
    Change ch;
    PfError err;

    memcpy(buf, obj, n);
    memcpy(buf + n, "}}xyz\"\\{[,1", 11);
    memset(buf + n + 11, 0xff, 5);
    err_clear(&err);
    ck_assert_msg(w2j_decode(g_dec, buf, n, TEST_LSN, &ch, &err), "%s", err.msg);
    ck_assert_int_eq(ch.kind, CHANGE_COMMIT);
    ck_assert_uint_eq(ch.end_lsn, 2);
    /* Cut inside the object: the garbage must not complete it. */
    ck_assert(!w2j_decode(g_dec, buf, n - 1, TEST_LSN, &ch, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_str_eq(err.msg, "could not decode wal2json message at 0/16B3748: truncated JSON near "
                              "'0/1\",\"nextlsn\":\"0/2\"'");
    /* One byte of the garbage included. */
    ck_assert(!w2j_decode(g_dec, buf, n + 1, TEST_LSN, &ch, &err));
    ck_assert_str_eq(err.msg, "could not decode wal2json message at 0/16B3748: invalid JSON near "
                              "'/1\",\"nextlsn\":\"0/2\"}}'");
    free(buf);
}
END_TEST

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

typedef struct ErrCase {
    const char *input;
    const char *msg; /* after "could not decode wal2json message at 0/16B3748: " */
} ErrCase;

static const ErrCase err_cases[] = {
    /* Not JSON / not an object. */
    {"", "expected a JSON object near ''"},
    {"   ", "expected a JSON object near '   '"},
    {"[1,2]", "expected a JSON object near '[1,2]'"},
    {"\"action\"", "expected a JSON object near '\"action\"'"},
    {"{\"action\":\"B\"", "truncated JSON near '{\"action\":\"B\"'"},
    {"{\"action\":\"B", "truncated JSON near '{\"action\":\"B'"},
    {"{\"action\":12", "truncated JSON near '{\"action\":12'"},
    {"{\"action\":\"B\"}}", "invalid JSON near '{\"action\":\"B\"}}'"},
    {"{\"action\":\"B\"} {}", "unexpected data after the object near '{\"action\":\"B\"} {}'"},
    {"{\"action\":\"B\"} x", "invalid JSON near '{\"action\":\"B\"} x'"},
    {"{\"action\" \"B\"}", "invalid JSON near '{\"action\" \"B\"}'"},
    {"{\"action\":\"B\",,\"lsn\":\"0/1\"}",
     "invalid JSON near '{\"action\":\"B\",,\"lsn\":\"0/1\"}'"},
    {"{\"action\":\"B\",}", "invalid JSON near '{\"action\":\"B\",}'"},
    {"{\"a\":[1,,2]}", "invalid JSON near '{\"a\":[1,,2]}'"},
    {"{\"a\":[1 2]}", "invalid JSON near '{\"a\":[1 2]}'"},
    {"{\"a\":tru}", "invalid JSON literal near '{\"a\":tru}'"},
    {"{\"a\":1.2.3}", "invalid JSON literal near '{\"a\":1.2.3}'"},
    {"{\"a\":01}", "invalid JSON literal near '{\"a\":01}'"},
    {"{\"a\":-}", "invalid JSON literal near '{\"a\":-}'"},
    {"{\"a\":1e}", "invalid JSON literal near '{\"a\":1e}'"},
    {"{\"a\"}", "invalid JSON near '{\"a\"}'"},
    {"{\"a\":\"b\":1}", "invalid JSON near '{\"a\":\"b\":1}'"},
    {"{\"a\":[\"b\":1]}", "invalid JSON near '{\"a\":[\"b\":1]}'"},
    {"{1:2}", "invalid JSON near '{1:2}'"},
    {"{\"a\":1\x01}", "invalid JSON near '{\"a\":1\\x01}'"},
    {"{\"a\":[1,2,]}", "invalid JSON near '{\"a\":[1,2,]}'"},
    {"{\"a\":00}", "invalid JSON literal near '{\"a\":00}'"},
    {"{\"action\":\"B\"}{\"action\":\"C\"}",
     "unexpected data after the object near '{\"action\":\"B\"}{\"action\":\"C\"}'"},
    /* Escapes. */
    {"{\"action\":\"\\x\"}", "invalid escape in string near '{\"action\":\"\\x\"}'"},
    {"{\"action\":\"\\u12G4\"}", "invalid escape in string near '{\"action\":\"\\u12G4\"}'"},
    {"{\"action\":\"T\",\"lsn\":\"0/1\",\"table\":\"\\ud83d\"}",
     "unpaired UTF-16 surrogate in string near 'lsn\":\"0/1\",\"table\":\"\\ud83d\"}'"},
    {"{\"action\":\"T\",\"lsn\":\"0/1\",\"table\":\"\\ud83d\\u0041\"}",
     "unpaired UTF-16 surrogate in string near 'lsn\":\"0/1\",\"table\":\"\\ud83d\\u0041\"}'"},
    {"{\"action\":\"T\",\"lsn\":\"0/1\",\"table\":\"\\ud83d\\ud83d\"}",
     "unpaired UTF-16 surrogate in string near 'lsn\":\"0/1\",\"table\":\"\\ud83d\\ud83d\"}'"},
    {"{\"action\":\"T\",\"lsn\":\"0/1\",\"table\":\"x\\ude00\"}",
     "unpaired UTF-16 surrogate in string near 'sn\":\"0/1\",\"table\":\"x\\ude00\"}'"},
    {"{\"action\":\"T\",\"lsn\":\"0/1\",\"table\":\"\\ud83d\\ude0\"}",
     "invalid escape in string near '0/1\",\"table\":\"\\ud83d\\ude0\"}'"},
    {"{\"action\":\"T\",\"lsn\":\"0/1\",\"table\":\"\\",
     "truncated JSON near '\"lsn\":\"0/1\",\"table\":\"\\'"},
    /* Fields. */
    {"{\"lsn\":\"0/1\"}", "missing \"action\" near '{\"lsn\":\"0/1\"}'"},
    {"{\"action\":7,\"lsn\":\"0/1\"}",
     "\"action\" must be a string near '{\"action\":7,\"lsn\":\"0/1\"}'"},
    {"{\"action\":\"X\",\"lsn\":\"0/1\"}",
     "unknown \"action\" value near '{\"action\":\"X\",\"lsn\":\"0/1\"}'"},
    {"{\"action\":\"BB\",\"lsn\":\"0/1\"}",
     "unknown \"action\" value near '{\"action\":\"BB\",\"lsn\":\"0/1\"}'"},
    {"{\"action\":\"I\",\"table\":\"t\"}", "missing \"lsn\" near '{\"action\":\"I\",\"table'"},
    {"{\"action\":\"I\",\"lsn\":16,\"table\":\"t\"}",
     "\"lsn\" must be a string near '{\"action\":\"I\",\"lsn\":16,\"table\":\"t\"}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/XYZ\",\"table\":\"t\"}",
     "invalid \"lsn\" value near '\"action\":\"I\",\"lsn\":\"0/XYZ\",\"table\":\"t\"}'"},
    {"{\"action\":\"I\",\"lsn\":\"16B3748\",\"table\":\"t\"}",
     "invalid \"lsn\" value near '\"action\":\"I\",\"lsn\":\"16B3748\",\"table\":\"t\"'"},
    {"{\"action\":\"C\",\"lsn\":\"0/1\"}", "missing \"nextlsn\" near '{\"action\":\"C\",\"lsn\":'"},
    {"{\"action\":\"B\",\"lsn\":\"0/1\",\"nextlsn\":null}",
     "\"nextlsn\" must be a string near 'sn\":\"0/1\",\"nextlsn\":null}'"},
    {"{\"action\":\"B\",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\",\"xid\":\"5\"}",
     "\"xid\" must be an integer or null near 'xtlsn\":\"0/2\",\"xid\":\"5\"}'"},
    {"{\"action\":\"B\",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\",\"xid\":-5}",
     "\"xid\" must be an integer or null near 'extlsn\":\"0/2\",\"xid\":-5}'"},
    {"{\"action\":\"B\",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\",\"xid\":1.5}",
     "\"xid\" must be an integer or null near 'extlsn\":\"0/2\",\"xid\":1.5}'"},
    {"{\"action\":\"B\",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\",\"xid\":4294967296}",
     "invalid \"xid\" value near 'extlsn\":\"0/2\",\"xid\":4294967296}'"},
    {"{\"action\":\"B\",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\",\"timestamp\":1}",
     "\"timestamp\" must be a string or null near '\":\"0/2\",\"timestamp\":1}'"},
    {"{\"action\":\"B\",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\",\"timestamp\":\"yesterday\"}",
     "invalid \"timestamp\" value near ':\"0/2\",\"timestamp\":\"yesterday\"}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\"}", "missing \"table\" near '{\"action\":\"I\",\"lsn\":'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":[]}",
     "\"table\" must be a string near '\"lsn\":\"0/1\",\"table\":[]}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"schema\":false}",
     "\"schema\" must be a string near 'table\":\"t\",\"schema\":false}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"columns\":{}}",
     "\"columns\" must be an array near 'able\":\"t\",\"columns\":{}}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"columns\":[1]}",
     "\"columns\" element must be an object near 'ble\":\"t\",\"columns\":[1]}'"},
    {"{\"action\":\"D\",\"lsn\":\"0/1\",\"table\":\"t\",\"identity\":[[]]}",
     "\"identity\" element must be an object near 'le\":\"t\",\"identity\":[[]]}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"columns\":[{\"value\":1}]}",
     "column without \"name\" near 'ble\":\"t\",\"columns\":[{\"value\":1}]}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"columns\":[{\"name\":1,\"value\":1}]}",
     "column \"name\" must be a string near ',\"columns\":[{\"name\":1,\"value\":1}]}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"columns\":[{\"name\":\"a\"}]}",
     "column without \"value\" near 'ble\":\"t\",\"columns\":[{\"name\":\"a\"}]}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"type\":5,"
     "\"value\":1}]}",
     "column \"type\" must be a string near '[{\"name\":\"a\",\"type\":5,\"value\":1}]}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/"
     "1\",\"table\":\"t\",\"columns\":[{\"name\":\"a\",\"value\":[1]}]}",
     "column \"value\" must be a scalar near '{\"name\":\"a\",\"value\":[1]}]}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"pk\":\"id\"}",
     "\"pk\" must be an array near '\",\"table\":\"t\",\"pk\":\"id\"}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"pk\":[\"id\"]}",
     "\"pk\" element must be an object near ',\"table\":\"t\",\"pk\":[\"id\"]}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"pk\":[{\"type\":\"int\"}]}",
     "\"pk\" element without \"name\" near '\",\"table\":\"t\",\"pk\":[{\"type\":\"int\"}]}'"},
    {"{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"pk\":[{\"name\":null}]}",
     "\"pk\" \"name\" must be a string near '\":\"t\",\"pk\":[{\"name\":null}]}'"},
    {"{\"action\":\"M\",\"lsn\":\"0/1\",\"prefix\":\"p\",\"content\":\"c\"}",
     "missing \"transactional\" near '{\"action\":\"M\",\"lsn\":'"},
    {"{\"action\":\"M\",\"lsn\":\"0/1\",\"transactional\":1,\"prefix\":\"p\",\"content\":\"c\"}",
     "\"transactional\" must be true or false near "
     "'/1\",\"transactional\":1,\"prefix\":\"p\",\"cont'"},
    {"{\"action\":\"M\",\"lsn\":\"0/1\",\"transactional\":true,\"content\":\"c\"}",
     "missing \"prefix\" near '{\"action\":\"M\",\"lsn\":'"},
    {"{\"action\":\"M\",\"lsn\":\"0/1\",\"transactional\":true,\"prefix\":\"p\"}",
     "missing \"content\" near '{\"action\":\"M\",\"lsn\":'"},
    {"{\"action\":\"M\",\"lsn\":\"0/1\",\"transactional\":true,\"prefix\":\"p\",\"content\":null}",
     "\"content\" must be a string near 'efix\":\"p\",\"content\":null}'"},
};

START_TEST(test_errors)
{
    const ErrCase *tc = &err_cases[_i];
    Change ch;
    PfError err;
    char want[ERR_MSG_SIZE];

    snprintf(want, sizeof want, "could not decode wal2json message at 0/16B3748: %s", tc->msg);
    ck_assert_msg(!decode_str(tc->input, &ch, &err), "case %d accepted: %s", _i, tc->input);
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_str_eq(err.msg, want);
    /* The decoder is still usable after any error. */
    ck_assert(decode_str("{\"action\":\"C\",\"lsn\":\"0/1\",\"nextlsn\":\"0/2\"}", &ch, &err));
}
END_TEST

/* The snippet is at most ~40 bytes, printable, and never splits a UTF-8 character. */
START_TEST(test_error_snippet)
{
    Change ch;
    PfError err;
    const char *prefix = "could not decode wal2json message at 0/16B3748: ";

    ck_assert(
        !decode_str("{\"action\":\"I\",\"lsn\":\"0/1\",\"table\":\"t\",\"columns\":[{\"name\":"
                    "\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                    "\xc3\xa9\xc3\xa9\xc3\xa9\",\"value\":{}}]}",
                    &ch, &err));
    ck_assert_str_eq(err.msg + strlen(prefix),
                     "column \"value\" must be a scalar near "
                     "'\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\",\"value\":{}}]}'");

    ck_assert(!decode_str("{\"action\":\"X\n\t\x7f\"}", &ch, &err));
    ck_assert_str_eq(err.msg + strlen(prefix),
                     "unknown \"action\" value near '{\"action\":\"X\\x0a\\x09\\x7f\"}'");

    /* A long line: the window is clipped on both sides. */
    {
        Buf line = BUF_INIT;

        buf_append_str(&line, "{\"action\":\"I\",\"pad\":\"");
        for (int i = 0; i < 100; i++)
            buf_append_char(&line, (char)('a' + i % 26));
        buf_append_str(&line, "\",\"lsn\":\"bad\",\"pad2\":\"");
        for (int i = 0; i < 100; i++)
            buf_append_char(&line, 'z');
        buf_append_str(&line, "\"}");
        ck_assert(!decode_str(line.data, &ch, &err));
        ck_assert_str_eq(
            err.msg + strlen(prefix),
            "invalid \"lsn\" value near 'lmnopqrstuv\",\"lsn\":\"bad\",\"pad2\":\"zzzzzzz'");
        buf_free(&line);
    }
}
END_TEST

/*
 * Robustness: every truncation of real lines fails cleanly, and random byte
 * mutations never crash (ASan/UBSan builds catch what a plain run cannot).
 */
START_TEST(test_mutations)
{
    static const char *const files[] = {"types", "messages", "dml_full"};
    const char *prefix = "could not decode wal2json message at 0/16B3748: ";
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    size_t accepted = 0, rejected = 0;

    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[4096];
        Buf in = BUF_INIT;
        size_t pos = 0;

        snprintf(path, sizeof path, "%s/%s.in", data_dir(), files[f]);
        ck_assert_msg(read_file(path, &in), "cannot read %s", path);
        while (pos < in.len) {
            const char *nl = memchr(in.data + pos, '\n', in.len - pos);
            size_t len = nl ? (size_t)(nl - (in.data + pos)) : in.len - pos;
            const char *line = in.data + pos;
            Change ch;
            PfError err;

            for (size_t cut = 0; cut < len; cut++) {
                ck_assert_msg(!decode_str_n(line, cut, &ch, &err), "prefix of %zu accepted", cut);
                ck_assert_int_eq(err.kind, ERR_FATAL);
                ck_assert(strncmp(err.msg, prefix, strlen(prefix)) == 0);
            }
            for (int m = 0; m < 300; m++) {
                char *copy = xmalloc(len);
                int nmut = 1 + (int)(rng % 3);

                memcpy(copy, line, len);
                for (int k = 0; k < nmut; k++) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    copy[rng % len] = (char)(rng >> 32);
                }
                if (decode_str_n(copy, len, &ch, &err)) {
                    accepted++;
                } else {
                    rejected++;
                    ck_assert_int_eq(err.kind, ERR_FATAL);
                    ck_assert(strncmp(err.msg, prefix, strlen(prefix)) == 0);
                }
                free(copy);
            }
            pos += len + 1;
        }
        buf_free(&in);
    }
    ck_assert_uint_gt(accepted, 0);
    ck_assert_uint_gt(rejected, 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * JSON layer (json.c): the tokenizer's tokens and verdicts, directly
 * ------------------------------------------------------------------------ */

typedef struct TokWant {
    jsmntype_t type;
    int start, end, size, parent;
} TokWant;

/* json_parse() on an exact-size copy of js[0..len) (ASan sees overreads). */
static bool json_parse_exact(JsonDoc *doc, const char *js, size_t len, JsonError *err,
                             char **copy)
{
    *copy = xmalloc(len ? len : 1);
    memcpy(*copy, js, len);
    return json_parse(doc, *copy, len, err);
}

/* jsmn's layout, whitespace everywhere: what the rest of the decoder walks. */
START_TEST(test_json_token_layout)
{
    static const char js[] = " {\t\"a\" :\n[ 1 ,-0,1e5 , 1.5E-3,true , false,null,{ },[ ] ,"
                             "\"s\\n\" ] ,\r\n\"b\":{\"c\" : \"d\"} } \n";
    static const TokWant want[] = {
        {JSMN_OBJECT, 1, 85, 2, -1},    {JSMN_STRING, 4, 5, 1, 0},      /* "a" */
        {JSMN_ARRAY, 9, 64, 10, 1},     {JSMN_PRIMITIVE, 11, 12, 0, 2}, /* 1 */
        {JSMN_PRIMITIVE, 14, 16, 0, 2}, /* -0 */
        {JSMN_PRIMITIVE, 17, 20, 0, 2}, /* 1e5 */
        {JSMN_PRIMITIVE, 23, 29, 0, 2}, /* 1.5E-3 */
        {JSMN_PRIMITIVE, 30, 34, 0, 2}, /* true */
        {JSMN_PRIMITIVE, 37, 42, 0, 2}, /* false */
        {JSMN_PRIMITIVE, 43, 47, 0, 2}, /* null */
        {JSMN_OBJECT, 48, 51, 0, 2},    /* { } */
        {JSMN_ARRAY, 52, 55, 0, 2},     /* [ ] */
        {JSMN_STRING, 58, 61, 0, 2},    /* "s\n" */
        {JSMN_STRING, 69, 70, 1, 0},    /* "b" */
        {JSMN_OBJECT, 72, 83, 1, 13},   {JSMN_STRING, 74, 75, 1, 14}, /* "c" */
        {JSMN_STRING, 80, 81, 0, 15},                                 /* "d" */
    };
    JsonDoc doc;
    JsonError err;
    char *copy;
    Str s;

    json_doc_init(&doc);
    ck_assert_msg(json_parse_exact(&doc, js, sizeof js - 1, &err, &copy), "%s at %zu", err.what,
                  err.pos);
    ck_assert_int_eq(doc.ntok, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < doc.ntok; i++) {
        const jsmntok_t *t = &doc.toks[i];

        ck_assert_msg(t->type == want[i].type && t->start == want[i].start &&
                          t->end == want[i].end && t->size == want[i].size &&
                          t->parent == want[i].parent,
                      "token %d: type %d start %d end %d size %d parent %d", i, t->type, t->start,
                      t->end, t->size, t->parent);
    }
    ck_assert_int_eq(json_skip(&doc, 2), 13);
    ck_assert_int_eq(json_skip(&doc, 0), doc.ntok);
    ck_assert(json_string(&doc, 12, &s, &err));
    ck_assert(s.len == 2 && memcmp(s.ptr, "s\n", 2) == 0);
    free(copy);
    json_doc_free(&doc);
}
END_TEST

/* Nesting deeper than any stack would like, and token arrays past their first size. */
START_TEST(test_json_deep_nesting)
{
    enum { DEPTH = 100000 };
    Buf b = BUF_INIT;
    JsonDoc doc;
    JsonError err;
    char *copy;

    json_doc_init(&doc);
    /* {"a":[[[...]]]}: each array is the only element of the one around it. */
    buf_append_str(&b, "{\"a\":");
    for (int i = 0; i < DEPTH; i++)
        buf_append_char(&b, '[');
    for (int i = 0; i < DEPTH; i++)
        buf_append_char(&b, ']');
    buf_append_char(&b, '}');
    ck_assert_msg(json_parse_exact(&doc, b.data, b.len, &err, &copy), "%s", err.what);
    ck_assert_int_eq(doc.ntok, DEPTH + 2);
    for (int i = 2; i < doc.ntok; i++) {
        ck_assert_int_eq(doc.toks[i].parent, i - 1);
        ck_assert_int_eq(doc.toks[i].size, i + 1 < doc.ntok ? 1 : 0);
        ck_assert_int_eq(doc.toks[i].end, (int)b.len - 1 - (i - 2));
    }
    ck_assert_int_eq(json_skip(&doc, 2), doc.ntok);
    free(copy);

    /* {"a":{"a":{...}}}: a value's parent is its key, the key's its object. */
    buf_reset(&b);
    for (int i = 0; i < DEPTH / 10; i++)
        buf_append_str(&b, "{\"a\":");
    buf_append_str(&b, "null");
    for (int i = 0; i < DEPTH / 10; i++)
        buf_append_char(&b, '}');
    ck_assert_msg(json_parse_exact(&doc, b.data, b.len, &err, &copy), "%s", err.what);
    ck_assert_int_eq(doc.ntok, 2 * (DEPTH / 10) + 1);
    for (int i = 1; i < doc.ntok; i++)
        ck_assert_int_eq(doc.toks[i].parent, i - 1);
    ck_assert_int_eq(doc.toks[doc.ntok - 1].type, JSMN_PRIMITIVE);
    free(copy);

    /* Unclosed at depth: truncated at the end. The grown array serves a small message. */
    ck_assert(!json_parse_exact(&doc, b.data, b.len - 1, &err, &copy));
    ck_assert_str_eq(err.what, "truncated JSON");
    ck_assert_uint_eq(err.pos, b.len - 1);
    free(copy);
    ck_assert(json_parse_exact(&doc, "{}", 2, &err, &copy));
    ck_assert_int_eq(doc.ntok, 1);
    ck_assert_int_eq(doc.toks[0].end, 2);
    free(copy);
    buf_free(&b);
    json_doc_free(&doc);
}
END_TEST

typedef struct JsonCase {
    const char *js;
    int ntok;         /* accepted: number of tokens; refused: -1 */
    const char *what; /* refused: the description */
    size_t pos;       /* refused: the position */
} JsonCase;

static const JsonCase json_cases[] = {
    /* Accepted. */
    {"{}", 1, NULL, 0},
    {" \t\r\n{ \t\r\n} \t\r\n", 1, NULL, 0},
    {"{\"a\":{}}", 3, NULL, 0},
    {"{\"a\":[]}", 3, NULL, 0},
    {"{\"a\":[{},[],\"\",0]}", 7, NULL, 0},
    {"{\"a\":-0,\"b\":1e5,\"c\":1.5E-3,\"d\":-1.25e+10,\"e\":0.0,\"f\":10}", 13, NULL, 0},
    {"{\"a\":true,\"b\":false,\"c\":null}", 7, NULL, 0},
    {"{\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\":\"\"}", 3, NULL, 0},
    {"{\"a\":\"raw \x01\x1f\x7f\xc3\xa9 bytes\"}", 3, NULL, 0},
    /* Numbers. */
    {"{\"a\":00}", -1, "invalid JSON literal", 5},
    {"{\"a\":-01}", -1, "invalid JSON literal", 5},
    {"{\"a\":1.}", -1, "invalid JSON literal", 5},
    {"{\"a\":1e+}", -1, "invalid JSON literal", 5},
    {"{\"a\":.5}", -1, "invalid JSON", 5},
    {"{\"a\":+1}", -1, "invalid JSON", 5},
    {"{\"a\":1x}", -1, "invalid JSON literal", 5},
    /* Literals. */
    {"{\"a\":tru}", -1, "invalid JSON literal", 5},
    {"{\"a\":truex}", -1, "invalid JSON literal", 5},
    {"{\"a\":nul}", -1, "invalid JSON literal", 5},
    {"{\"a\":True}", -1, "invalid JSON", 5},
    {"{\"a\":tru", -1, "truncated JSON", 5},
    /* Separators. */
    {"{\"a\":1,}", -1, "invalid JSON", 7},
    {"{\"a\":[1,2,]}", -1, "invalid JSON", 10},
    {"{\"a\":[,1]}", -1, "invalid JSON", 6},
    {"{,\"a\":1}", -1, "invalid JSON", 1},
    {"{\"a\":1,,\"b\":2}", -1, "invalid JSON", 7},
    {"{\"a\" 1}", -1, "invalid JSON", 5},
    {"{\"a\"::1}", -1, "invalid JSON", 5},
    {"{\"a\":1 \"b\":2}", -1, "invalid JSON", 7},
    {"{\"a\":}", -1, "invalid JSON", 5},
    {"{\"a\":[1}", -1, "invalid JSON", 7},
    {"{\"a\":1]", -1, "invalid JSON", 6},
    {"{[]:1}", -1, "invalid JSON", 1},
    /* One top-level object. */
    {"", -1, "expected a JSON object", 0},
    {" \n", -1, "expected a JSON object", 0},
    {" [1]", -1, "expected a JSON object", 1},
    {"{}{}", -1, "unexpected data after the object", 2},
    {"{\"a\":1} [2]", -1, "unexpected data after the object", 8},
    {"{} \"x\"", -1, "unexpected data after the object", 3},
    {"{}}", -1, "invalid JSON", 2},
    {"{} ,", -1, "unexpected data after the object", 3},
    /* Strings. */
    {"{\"a\":\"bc", -1, "truncated JSON", 5},
    {"{\"a\":\"b\\\"}", -1, "truncated JSON", 5},
    {"{\"a\":\"\\u12", -1, "truncated JSON", 5},
    {"{\"a", -1, "truncated JSON", 1},
    {"{\"a\":\"\\x\"}", -1, "invalid escape in string", 6},
    {"{\"a\":\"\\u12G4\"}", -1, "invalid escape in string", 6},
    {"{\"a\":\"\\u12\"}", -1, "invalid escape in string", 6},
    /* Truncated structure. */
    {"{", -1, "truncated JSON", 1},
    {"{\"a\":[1,", -1, "truncated JSON", 8},
    {"{\"a\":", -1, "truncated JSON", 5},
};

START_TEST(test_json_cases)
{
    const JsonCase *tc = &json_cases[_i];
    JsonDoc doc;
    JsonError err = {0, NULL};
    char *copy;
    bool ok;

    json_doc_init(&doc);
    ok = json_parse_exact(&doc, tc->js, strlen(tc->js), &err, &copy);
    if (tc->ntok >= 0) {
        ck_assert_msg(ok, "case %d refused: %s at %zu", _i, err.what, err.pos);
        ck_assert_int_eq(doc.ntok, tc->ntok);
        ck_assert_int_eq(doc.toks[0].type, JSMN_OBJECT);
        ck_assert_int_eq(json_skip(&doc, 0), doc.ntok);
    } else {
        ck_assert_msg(!ok, "case %d accepted: %s", _i, tc->js);
        ck_assert_str_eq(err.what, tc->what);
        ck_assert_uint_eq(err.pos, tc->pos);
    }
    free(copy);
    json_doc_free(&doc);
}
END_TEST

/* A NUL byte ends the text (as it ended jsmn's): refused wherever it is. */
START_TEST(test_json_nul)
{
    static const struct {
        const char *js;
        size_t len;
        size_t pos;
    } cases[] = {
        {"{\"a\":\"x\0y\"}", 11, 7}, /* inside a string */
        {"{\"a\":1}\0", 8, 7},       /* after the object */
        {"{\"a\":1\0}", 8, 6},       /* after a number */
        {"\0{}", 3, 0},
    };
    JsonDoc doc;
    JsonError err;
    char *copy;

    json_doc_init(&doc);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_msg(!json_parse_exact(&doc, cases[i].js, cases[i].len, &err, &copy),
                      "case %zu accepted", i);
        ck_assert_str_eq(err.what, i == 3 ? "expected a JSON object" : "invalid JSON");
        ck_assert_uint_eq(err.pos, cases[i].pos);
        free(copy);
    }
    json_doc_free(&doc);
}
END_TEST

/* Whitespace everywhere JSON allows it, through the whole decoder. */
START_TEST(test_json_whitespace)
{
    Change ch;
    PfError err;

    ck_assert_msg(decode_str(" \t{ \"action\" :\n\"I\" ,\r\n\"lsn\" : \"0/1\" , \"table\" : \"t\" ,"
                             " \"columns\" : [ { \"name\" : \"id\" , \"type\" : \"integer\" ,"
                             " \"value\" : -0 } , { \"name\" : \"x\" , \"value\" : 1.5E-3 } ] ,"
                             " \"pk\" : [ ] }\n",
                             &ch, &err),
                  "%s", err.msg);
    ck_assert_int_eq(ch.kind, CHANGE_INSERT);
    ck_assert_uint_eq(ch.n_new, 2);
    assert_str(ch.new_cols[0].value.text, "-0");
    assert_str(ch.new_cols[1].value.text, "1.5E-3");
    ck_assert_uint_eq(ch.n_pk, 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * change.c helpers
 * ------------------------------------------------------------------------ */

START_TEST(test_change_helpers)
{
    Column cols[2];
    Str s = {"abc", 3};
    Str empty = {"", 0};

    ck_assert_str_eq(change_kind_name(CHANGE_BEGIN), "B");
    ck_assert_str_eq(change_kind_name(CHANGE_COMMIT), "C");
    ck_assert_str_eq(change_kind_name(CHANGE_INSERT), "I");
    ck_assert_str_eq(change_kind_name(CHANGE_UPDATE), "U");
    ck_assert_str_eq(change_kind_name(CHANGE_DELETE), "D");
    ck_assert_str_eq(change_kind_name(CHANGE_TRUNCATE), "T");
    ck_assert_str_eq(change_kind_name(CHANGE_MESSAGE), "M");
    ck_assert_str_eq(change_kind_name((ChangeKind)99), "?");

    ck_assert(str_eq(s, "abc"));
    ck_assert(!str_eq(s, "ab"));
    ck_assert(!str_eq(s, "abcd"));
    ck_assert(str_eq(empty, ""));
    ck_assert(!str_eq(empty, "a"));

    memset(cols, 0, sizeof cols);
    cols[0].name = (Str){"id", 2};
    cols[1].name = (Str){"idx", 3};
    ck_assert_ptr_eq(change_find_column(cols, 2, "idx", 3), &cols[1]);
    ck_assert_ptr_eq(change_find_column(cols, 2, "id", 2), &cols[0]);
    ck_assert_ptr_null(change_find_column(cols, 2, "i", 1));
    ck_assert_ptr_null(change_find_column(cols, 0, "id", 2));
}
END_TEST

static Suite *decoder_suite(void)
{
    Suite *s = suite_create("decoder");
    TCase *tc;

    tc = tcase_create("golden");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_golden_files);
    tcase_add_test(tc, test_golden_reuse);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_begin_commit);
    tcase_add_test(tc, test_row_change);
    tcase_add_test(tc, test_exact_numbers);
    tcase_add_test(tc, test_truncate_and_message);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_scratch_full);
    tcase_add_test(tc, test_many_columns);
    tcase_add_test(tc, test_ignored_nested);
    tcase_add_test(tc, test_garbage_after_len);
    tcase_add_test(tc, test_json_whitespace);
    suite_add_tcase(s, tc);

    tc = tcase_create("json");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_json_token_layout);
    tcase_add_test(tc, test_json_deep_nesting);
    tcase_add_loop_test(tc, test_json_cases, 0, (int)(sizeof json_cases / sizeof json_cases[0]));
    tcase_add_test(tc, test_json_nul);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_errors, 0, (int)(sizeof err_cases / sizeof err_cases[0]));
    tcase_add_test(tc, test_error_snippet);
    tcase_add_test(tc, test_mutations);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);

    tc = tcase_create("change");
    tcase_add_test(tc, test_change_helpers);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(decoder_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
