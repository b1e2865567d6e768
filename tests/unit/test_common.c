/* test_common.c - LSN text form, buffers, JSON escaping, errors, backoff, clock. */
#include "../../common/backoff.h"
#include "../../common/buf.h"
#include "../../common/clock.h"
#include "../../common/error.h"
#include "../../common/lsn.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static bool parse(const char *text, Lsn *out)
{
    return lsn_parse(text, strlen(text), out);
}

START_TEST(test_lsn_parse_and_format)
{
    Lsn l = 0;
    char buf[LSN_TEXT_SIZE];

    ck_assert(parse("0/16B3748", &l));
    ck_assert_uint_eq(l, 0x16B3748);
    ck_assert_str_eq(lsn_format(l, buf), "0/16B3748");
    ck_assert(parse("1A/0", &l));
    ck_assert_uint_eq(l, (Lsn)0x1A << 32);
    ck_assert_str_eq(lsn_format(l, buf), "1A/0");
    ck_assert(parse("FFFFFFFF/FFFFFFFF", &l));
    ck_assert_uint_eq(l, UINT64_MAX);
    ck_assert_str_eq(lsn_format(l, buf), "FFFFFFFF/FFFFFFFF");
    ck_assert(parse("0/14eab0e0", &l));
    ck_assert_uint_eq(l, 0x14EAB0E0);
    ck_assert_str_eq(lsn_format(0, buf), "0/0");
}
END_TEST

START_TEST(test_lsn_parse_rejects)
{
    static const char *bad[] = {"", "/", "0/", "/0", "0", "0/0/0", "G/0", "0/12345678 ",
                                " 0/1", "123456789/0", "0/123456789", "0x1/0", "-1/0"};
    Lsn l = 42;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!parse(bad[i], &l), "accepted \"%s\"", bad[i]);
        ck_assert_uint_eq(l, 42);
    }
    /* Length is honoured: the text need not be NUL-terminated. */
    ck_assert(lsn_parse("0/10XYZ", 4, &l));
    ck_assert_uint_eq(l, 0x10);
}
END_TEST

START_TEST(test_buf_appends)
{
    Buf b = BUF_INIT;

    buf_append_str(&b, "a");
    buf_append_char(&b, 'b');
    buf_printf(&b, "%d-%s", 42, "x");
    buf_append_u64(&b, UINT64_MAX);
    buf_append_char(&b, ' ');
    buf_append_i64(&b, INT64_MIN);
    ck_assert_str_eq(b.data, "ab42-x18446744073709551615 -9223372036854775808");
    buf_consume(&b, 6);
    ck_assert_str_eq(b.data, "18446744073709551615 -9223372036854775808");
    buf_reset(&b);
    ck_assert_uint_eq(b.len, 0);
    for (int i = 0; i < 10000; i++)
        buf_append_char(&b, 'z');
    ck_assert_uint_eq(b.len, 10000);
    ck_assert_uint_eq(strlen(b.data), 10000);
    buf_free(&b);
}
END_TEST

START_TEST(test_json_string)
{
    Buf b = BUF_INIT;
    const char raw[] = "q\"b\\n\nt\tc\x01 Z\xc3\xbcrich \xe2\x9c\x93";

    buf_append_json_string(&b, raw, sizeof raw - 1);
    ck_assert_str_eq(b.data, "\"q\\\"b\\\\n\\nt\\tc\\u0001 Z\xc3\xbcrich \xe2\x9c\x93\"");
    buf_reset(&b);
    buf_append_json_string(&b, "a\0b", 3);
    ck_assert_str_eq(b.data, "\"a\\u0000b\"");
    buf_free(&b);
}
END_TEST

START_TEST(test_error_values)
{
    PfError err;

    err_clear(&err);
    ck_assert_int_eq(err.kind, ERR_NONE);
    ck_assert(!err_set(&err, ERR_CONFIG, "could not parse %s: %d", "x", 7));
    err_hint(&err, "fix %s", "it");
    err_prefix(&err, "sink=%s", "file");
    ck_assert_str_eq(err.msg, "sink=file: could not parse x: 7");
    ck_assert_str_eq(err.hint, "fix it");
    ck_assert_int_eq(err_exit_code(&err), 2);
    err_set(&err, ERR_FATAL, "boom");
    ck_assert_str_eq(err.hint, "");
    ck_assert_int_eq(err_exit_code(&err), 1);
    ck_assert_str_eq(err_kind_name(ERR_RETRY), "retry");

    /* A long message stays NUL-terminated after prefixing. */
    char big[ERR_MSG_SIZE * 2];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    err_set(&err, ERR_FATAL, "%s", big);
    err_prefix(&err, "ctx");
    ck_assert_uint_eq(strlen(err.msg), ERR_MSG_SIZE - 1);
    ck_assert(strncmp(err.msg, "ctx: xxx", 8) == 0);
}
END_TEST

START_TEST(test_backoff_bounds)
{
    Backoff b;
    TimeUs prev_base;

    backoff_init(&b, 100 * USECS_PER_MSEC, 2 * USECS_PER_SEC);
    prev_base = b.current;
    for (int i = 0; i < 20; i++) {
        TimeUs base = b.current;
        TimeUs d = backoff_next(&b);
        ck_assert_int_ge(d, base - base / 4);
        ck_assert_int_le(d, base + base / 4);
        ck_assert_int_ge(b.current, prev_base);
        ck_assert_int_le(b.current, 2 * USECS_PER_SEC);
        prev_base = b.current;
    }
    ck_assert_int_eq(b.current, 2 * USECS_PER_SEC);
    backoff_reset(&b);
    ck_assert_int_eq(b.current, 100 * USECS_PER_MSEC);
}
END_TEST

START_TEST(test_clock)
{
    char buf[CLOCK_ISO_SIZE];

    /* 2000-01-01 is PostgreSQL's epoch. */
    ck_assert_int_eq(clock_unix_to_pg(INT64_C(946684800) * USECS_PER_SEC), 0);
    ck_assert_int_eq(clock_pg_to_unix(0), INT64_C(946684800) * USECS_PER_SEC);
    ck_assert_str_eq(clock_format_iso(INT64_C(1763632800123456), buf), "2025-11-20T10:00:00.123Z");
    clock_set_fake(1000, 2000);
    ck_assert_int_eq(clock_mono_us(), 1000);
    clock_advance_fake(500);
    ck_assert_int_eq(clock_mono_us(), 1500);
    ck_assert_int_eq(clock_wall_us(), 2500);
    clock_set_fake(-1, 0);
    ck_assert_int_gt(clock_wall_us(), INT64_C(1700000000) * USECS_PER_SEC);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("common");
    TCase *lsn = tcase_create("lsn");
    TCase *buf = tcase_create("buf");
    TCase *misc = tcase_create("misc");
    SRunner *sr;
    int failed;

    tcase_add_test(lsn, test_lsn_parse_and_format);
    tcase_add_test(lsn, test_lsn_parse_rejects);
    tcase_add_test(buf, test_buf_appends);
    tcase_add_test(buf, test_json_string);
    tcase_add_test(misc, test_error_values);
    tcase_add_test(misc, test_backoff_bounds);
    tcase_add_test(misc, test_clock);
    suite_add_tcase(s, lsn);
    suite_add_tcase(s, buf);
    suite_add_tcase(s, misc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
