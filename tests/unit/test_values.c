/*
 * test_values.c - type classes, timestamp reshaping/parsing, bytea base64.
 */
#include "../../common/buf.h"
#include "../../decoder/values.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static Str S(const char *s)
{
    Str r = {s, strlen(s)};
    return r;
}

/* ------------------------------------------------------------------------
 * value_type_class
 * ------------------------------------------------------------------------ */

typedef struct ClassCase {
    const char *name;
    TypeClass cls;
} ClassCase;

static const ClassCase class_cases[] = {
    {"", TYPE_UNKNOWN},
    {"bigint", TYPE_INT},
    {"integer", TYPE_INT},
    {"smallint", TYPE_INT},
    {"oid", TYPE_INT},
    {"real", TYPE_FLOAT},
    {"double precision", TYPE_FLOAT},
    {"numeric", TYPE_NUMERIC},
    {"numeric(12,2)", TYPE_NUMERIC},
    {"numeric(40,0)", TYPE_NUMERIC},
    {"text", TYPE_TEXT},
    {"character varying", TYPE_TEXT},
    {"character varying(40)", TYPE_TEXT},
    {"character(3)", TYPE_TEXT},
    {"character", TYPE_TEXT},
    {"name", TYPE_TEXT},
    {"citext", TYPE_TEXT},
    {"\"char\"", TYPE_TEXT},
    {"timestamp with time zone", TYPE_TIMESTAMPTZ},
    {"timestamp(3) with time zone", TYPE_TIMESTAMPTZ},
    {"timestamp without time zone", TYPE_TIMESTAMP},
    {"timestamp(6) without time zone", TYPE_TIMESTAMP},
    {"date", TYPE_DATE},
    {"time without time zone", TYPE_TIME},
    {"time with time zone", TYPE_TIME},
    {"time(2) with time zone", TYPE_TIME},
    {"interval", TYPE_INTERVAL},
    {"interval(3)", TYPE_INTERVAL},
    {"interval year to month", TYPE_INTERVAL},
    {"interval second(3)", TYPE_INTERVAL},
    {"uuid", TYPE_UUID},
    {"json", TYPE_JSON},
    {"jsonb", TYPE_JSON},
    {"bytea", TYPE_BYTEA},
    {"boolean", TYPE_BOOL},
    {"integer[]", TYPE_ARRAY},
    {"text[]", TYPE_ARRAY},
    {"numeric(12,2)[]", TYPE_ARRAY},
    {"\"Mood\"[]", TYPE_ARRAY},
    {"mood", TYPE_ENUM_OR_OTHER},
    {"Mood", TYPE_ENUM_OR_OTHER},
    {"money", TYPE_ENUM_OR_OTHER},
    {"int4range", TYPE_ENUM_OR_OTHER},
    {"public.my_domain", TYPE_ENUM_OR_OTHER},
    {"bit varying(8)", TYPE_ENUM_OR_OTHER},
    {"Integer", TYPE_ENUM_OR_OTHER},
    {"integer ", TYPE_ENUM_OR_OTHER},
    {"numeric(12,2", TYPE_ENUM_OR_OTHER},
    {"numeric)", TYPE_ENUM_OR_OTHER},
    {"intervalx", TYPE_ENUM_OR_OTHER},
    {"a_very_long_user_defined_type_name_that_goes_past_sixty_four_bytes_x", TYPE_ENUM_OR_OTHER},
};

START_TEST(test_type_class)
{
    const ClassCase *tc = &class_cases[_i];

    ck_assert_msg(value_type_class(S(tc->name)) == tc->cls, "'%s': got %d, want %d", tc->name,
                  (int)value_type_class(S(tc->name)), (int)tc->cls);
}
END_TEST

/* The name is a span: bytes after len are not part of it. */
START_TEST(test_type_class_span)
{
    Str t = {"integer[]", 7};
    Str n = {"numeric(12,2)xyz", 13};

    ck_assert_int_eq(value_type_class(t), TYPE_INT);
    ck_assert_int_eq(value_type_class(n), TYPE_NUMERIC);
}
END_TEST

/* ------------------------------------------------------------------------
 * Timestamps
 * ------------------------------------------------------------------------ */

typedef struct IsoCase {
    const char *in;
    const char *out;
} IsoCase;

static const IsoCase iso_cases[] = {
    {"2026-11-20 10:00:00.5+00", "2026-11-20T10:00:00.5Z"},
    {"2026-11-20 10:00:00+00", "2026-11-20T10:00:00Z"},
    {"2026-11-20 10:00:00+05:30", "2026-11-20T10:00:00+05:30"},
    {"2026-11-20 10:00:00-08", "2026-11-20T10:00:00-08:00"},
    {"2026-11-20 10:00:00.123456-03:30", "2026-11-20T10:00:00.123456-03:30"},
    {"2026-11-20 10:00:00", "2026-11-20T10:00:00"},
    {"2026-11-20 10:00:00.000001", "2026-11-20T10:00:00.000001"},
    {"2026-11-20 10:00:00+00:00:00", "2026-11-20T10:00:00Z"},
    {"2026-11-20 10:00:00+01:00:00", "2026-11-20T10:00:00+01:00"},
    {"10000-01-01 00:00:00", "10000-01-01T00:00:00"},
    {"2026-11-20T10:00:00Z", "2026-11-20T10:00:00Z"},
    /* Not reshaped. */
    {"1890-01-01 00:00:00+00:53:28", "1890-01-01 00:00:00+00:53:28"},
    {"0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC"},
    {"infinity", "infinity"},
    {"-infinity", "-infinity"},
    {"2026-11-20", "2026-11-20"},
    {"2026-11-20 10:00", "2026-11-20 10:00"},
    {"2026-11-20 10:00:00.1234567+00", "2026-11-20 10:00:00.1234567+00"},
    {"2026-13-20 10:00:00+00", "2026-13-20 10:00:00+00"},
    {"", ""},
};

START_TEST(test_iso_timestamp)
{
    const IsoCase *tc = &iso_cases[_i];
    Buf b = BUF_INIT;

    buf_append_str(&b, "<");
    value_append_iso_timestamp(&b, S(tc->in));
    buf_append_str(&b, ">");
    ck_assert_uint_eq(b.len, strlen(tc->out) + 2);
    ck_assert_msg(memcmp(b.data + 1, tc->out, strlen(tc->out)) == 0, "'%s' -> '%s', want '%s'",
                  tc->in, b.data, tc->out);
    buf_free(&b);
}
END_TEST

typedef struct ParseCase {
    const char *in;
    bool ok;
    TimeUs us;
} ParseCase;

static const ParseCase parse_cases[] = {
    {"1970-01-01 00:00:00+00", true, 0},
    {"1970-01-01 00:00:00", true, 0},
    {"1970-01-01 00:00:00.000001+00", true, 1},
    {"1969-12-31 23:59:59.999999+00", true, -1},
    {"2000-01-01 00:00:00+00", true, INT64_C(946684800000000)},
    {"2024-05-01 10:00:00.123456+00", true, INT64_C(1714557600123456)},
    {"2024-05-01 10:00:00.1+00", true, INT64_C(1714557600100000)},
    {"2024-05-01 10:00:00.12+00", true, INT64_C(1714557600120000)},
    {"2024-05-01 10:00:00.12345+00", true, INT64_C(1714557600123450)},
    {"2024-05-01 15:30:00.5+05:30", true, INT64_C(1714557600500000)},
    {"2024-05-01 02:00:00-08", true, INT64_C(1714557600000000)},
    {"2024-05-01 02:00:00-08:00", true, INT64_C(1714557600000000)},
    {"2024-05-01 10:00:30+00:00:30", true, INT64_C(1714557600000000)},
    {"2024-05-01T10:00:00Z", true, INT64_C(1714557600000000)},
    {"2024-02-29 00:00:00+00", true, INT64_C(1709164800000000)},
    {"2000-02-29 00:00:00+00", true, INT64_C(951782400000000)},
    {"0001-01-01 00:00:00+00", true, INT64_C(-62135596800000000)},
    {"2026-11-24 00:03:27.990693+00", true, INT64_C(1795478607990693)},
    {"200000-01-01 00:00:00+00", true, INT64_C(6249223180800000000)},
    /* Rejected. */
    {"294276-12-31 23:59:59.999999+00", false, 0}, /* past int64 microseconds */
    {"2023-02-29 00:00:00+00", false, 0},
    {"1900-02-29 00:00:00+00", false, 0},
    {"2024-04-31 00:00:00+00", false, 0},
    {"2024-00-01 00:00:00+00", false, 0},
    {"2024-05-01 24:00:00+00", false, 0},
    {"2024-05-01 10:60:00+00", false, 0},
    {"2024-05-01 10:00:60+00", false, 0},
    {"2024-05-01 10:00:00.+00", false, 0},
    {"2024-05-01 10:00:00.1234567+00", false, 0},
    {"2024-05-01 10:00:00+0", false, 0},
    {"2024-05-01 10:00:00+05:3", false, 0},
    {"2024-05-01 10:00:00+05:30:", false, 0},
    {"2024-05-01 10:00:00 +00", false, 0},
    {"2024-05-01 10:00:00+00 BC", false, 0},
    {"0044-03-15 12:00:00+00 BC", false, 0},
    {"infinity", false, 0},
    {"-infinity", false, 0},
    {"2024-05-01", false, 0},
    {"24-05-01 10:00:00+00", false, 0},
    {"0000-01-01 00:00:00+00", false, 0},
    {"1234567-01-01 00:00:00+00", false, 0},
    {"999999-12-31 23:59:59+00", false, 0},
    {"2024-5-01 10:00:00+00", false, 0},
    {"", false, 0},
};

START_TEST(test_parse_timestamptz)
{
    const ParseCase *tc = &parse_cases[_i];
    TimeUs us = 12345;
    bool ok = value_parse_timestamptz(S(tc->in), &us);

    ck_assert_msg(ok == tc->ok, "'%s': ok=%d", tc->in, ok);
    if (tc->ok)
        ck_assert_msg(us == tc->us, "'%s': got %lld, want %lld", tc->in, (long long)us,
                      (long long)tc->us);
    else
        ck_assert_int_eq(us, 12345); /* untouched */
}
END_TEST

/* Spans: text after len is ignored; a cut inside the offset is an error. */
START_TEST(test_parse_timestamptz_span)
{
    Str t = {"2024-05-01 10:00:00+00garbage", 22};
    Str cut = {"2024-05-01 10:00:00+05:30", 24};
    TimeUs us;

    ck_assert(value_parse_timestamptz(t, &us));
    ck_assert_int_eq(us, INT64_C(1714557600000000));
    ck_assert(!value_parse_timestamptz(cut, &us));
}
END_TEST

/* ------------------------------------------------------------------------
 * bytea -> base64
 * ------------------------------------------------------------------------ */

typedef struct B64Case {
    const char *hex;
    const char *b64;
} B64Case;

static const B64Case b64_cases[] = {
    /* RFC 4648 section 10 vectors: "", "f", "fo", "foo", "foob", "fooba", "foobar". */
    {"", ""},
    {"66", "Zg=="},
    {"666f", "Zm8="},
    {"666f6f", "Zm9v"},
    {"666f6f62", "Zm9vYg=="},
    {"666f6f6261", "Zm9vYmE="},
    {"666f6f626172", "Zm9vYmFy"},
    {"00ff10deadbeef", "AP8Q3q2+7w=="},
    {"00FF10DEADBEEF", "AP8Q3q2+7w=="},
    {"fbff", "+/8="},
};

START_TEST(test_base64)
{
    const B64Case *tc = &b64_cases[_i];
    Buf b = BUF_INIT;

    buf_append_str(&b, "x:");
    ck_assert(value_append_base64_from_hex(&b, S(tc->hex)));
    ck_assert_str_eq(b.data + 2, tc->b64);
    ck_assert_uint_eq(b.len, strlen(tc->b64) + 2);
    buf_free(&b);
}
END_TEST

START_TEST(test_base64_errors)
{
    const char *bad[] = {"0", "abc", "0g", "zz00", "00ff10deadbee", "00ff10deadbeeg", "\\x00"};
    Buf b = BUF_INIT;

    buf_append_str(&b, "keep");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!value_append_base64_from_hex(&b, S(bad[i])), "'%s' accepted", bad[i]);
        /* out is left as it was. */
        ck_assert_str_eq(b.data, "keep");
        ck_assert_uint_eq(b.len, 4);
    }
    buf_free(&b);
}
END_TEST

/* A long value crosses buffer growth. */
START_TEST(test_base64_long)
{
    Buf hex = BUF_INIT, out = BUF_INIT;
    Str h;

    for (int i = 0; i < 3000; i++)
        buf_append_str(&hex, "ff");
    h.ptr = hex.data;
    h.len = hex.len;
    ck_assert(value_append_base64_from_hex(&out, h));
    ck_assert_uint_eq(out.len, 4000);
    for (size_t i = 0; i < out.len; i++)
        ck_assert_int_eq(out.data[i], '/');
    buf_free(&hex);
    buf_free(&out);
}
END_TEST

static Suite *values_suite(void)
{
    Suite *s = suite_create("values");
    TCase *tc;

    tc = tcase_create("type_class");
    tcase_add_loop_test(tc, test_type_class, 0, (int)(sizeof class_cases / sizeof class_cases[0]));
    tcase_add_test(tc, test_type_class_span);
    suite_add_tcase(s, tc);

    tc = tcase_create("timestamp");
    tcase_add_loop_test(tc, test_iso_timestamp, 0, (int)(sizeof iso_cases / sizeof iso_cases[0]));
    tcase_add_loop_test(tc, test_parse_timestamptz, 0,
                        (int)(sizeof parse_cases / sizeof parse_cases[0]));
    tcase_add_test(tc, test_parse_timestamptz_span);
    suite_add_tcase(s, tc);

    tc = tcase_create("base64");
    tcase_add_loop_test(tc, test_base64, 0, (int)(sizeof b64_cases / sizeof b64_cases[0]));
    tcase_add_test(tc, test_base64_errors);
    tcase_add_test(tc, test_base64_long);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(values_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
