/* test_common.c - LSN text form, buffers, JSON escaping, errors, backoff, clock, log lines. */
#include "../../common/backoff.h"
#include "../../common/buf.h"
#include "../../common/clock.h"
#include "../../common/error.h"
#include "../../common/log.h"
#include "../../common/lsn.h"

#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---- log lines: text, JSON, journal priorities ---- */

/* 2025-11-20T10:00:00.123Z */
#define LOG_TS INT64_C(1763632800123456)

static void log_reset(void)
{
    log_set_level(LOG_LEVEL_INFO);
    log_set_format(LOG_FORMAT_TEXT);
    log_set_journal(false);
}

START_TEST(test_log_text_line)
{
    Buf b = BUF_INIT;
    PfError err;

    log_reset();
    log_format_line(&b, LOG_LEVEL_INFO, "replication", "streaming from slot \"pgfan\"", NULL,
                    LOG_TS);
    ck_assert_str_eq(b.data,
                     "2025-11-20T10:00:00.123Z INFO replication: streaming from slot \"pgfan\"\n");
    buf_reset(&b);
    err_set(&err, ERR_RETRY, "could not connect to PostgreSQL: refused");
    err_hint(&err, "start the server");
    log_format_line(&b, LOG_LEVEL_WARNING, "slot-monitor", err.msg, &err, LOG_TS);
    ck_assert_str_eq(b.data, "2025-11-20T10:00:00.123Z WARNING slot-monitor: could not connect to "
                             "PostgreSQL: refused\n"
                             "2025-11-20T10:00:00.123Z WARNING slot-monitor: HINT: start the server\n");
    buf_free(&b);
}
END_TEST

START_TEST(test_log_json_line)
{
    Buf b = BUF_INIT;
    PfError err;

    log_reset();
    log_set_format(LOG_FORMAT_JSON);
    log_format_line(&b, LOG_LEVEL_DEBUG, "pgfan", "a \"quoted\"\tword\n", NULL, LOG_TS);
    ck_assert_str_eq(b.data, "{\"ts\":\"2025-11-20T10:00:00.123Z\",\"level\":\"debug\","
                             "\"component\":\"pgfan\",\"msg\":\"a \\\"quoted\\\"\\tword\\n\"}\n");
    buf_reset(&b);
    err_set(&err, ERR_FATAL, "could not keep streaming");
    err_hint(&err, "drop the slot");
    log_format_line(&b, LOG_LEVEL_ERROR, "slot-monitor", err.msg, &err, LOG_TS);
    ck_assert_str_eq(b.data, "{\"ts\":\"2025-11-20T10:00:00.123Z\",\"level\":\"error\","
                             "\"component\":\"slot-monitor\",\"msg\":\"could not keep streaming\","
                             "\"error\":\"fatal\",\"hint\":\"drop the slot\"}\n");
    buf_free(&b);
    log_reset();
}
END_TEST

START_TEST(test_log_journal_priorities)
{
    Buf b = BUF_INIT;
    PfError err;

    log_reset();
    log_set_journal(true);
    ck_assert_int_eq(log_syslog_priority(LOG_LEVEL_ERROR), 3);
    ck_assert_int_eq(log_syslog_priority(LOG_LEVEL_WARNING), 4);
    ck_assert_int_eq(log_syslog_priority(LOG_LEVEL_INFO), 6);
    ck_assert_int_eq(log_syslog_priority(LOG_LEVEL_DEBUG), 7);
    log_format_line(&b, LOG_LEVEL_INFO, "pgfan", "ready", NULL, LOG_TS);
    ck_assert_str_eq(b.data, "<6>2025-11-20T10:00:00.123Z INFO pgfan: ready\n");
    buf_reset(&b);
    err_set(&err, ERR_CONFIG, "bad");
    err_hint(&err, "fix it");
    log_format_line(&b, LOG_LEVEL_ERROR, "pgfan", err.msg, &err, LOG_TS);
    ck_assert_str_eq(b.data, "<3>2025-11-20T10:00:00.123Z ERROR pgfan: bad\n"
                             "<3>2025-11-20T10:00:00.123Z ERROR pgfan: HINT: fix it\n");
    buf_reset(&b);
    log_set_format(LOG_FORMAT_JSON);
    log_format_line(&b, LOG_LEVEL_WARNING, "pgfan", "slow", NULL, LOG_TS);
    ck_assert_str_eq(b.data, "<4>{\"ts\":\"2025-11-20T10:00:00.123Z\",\"level\":\"warning\","
                             "\"component\":\"pgfan\",\"msg\":\"slow\"}\n");
    buf_free(&b);
    log_reset();
}
END_TEST

START_TEST(test_log_names)
{
    LogFormat f = LOG_FORMAT_TEXT;
    LogLevel l = LOG_LEVEL_INFO;

    ck_assert(log_format_parse("json", &f));
    ck_assert_int_eq(f, LOG_FORMAT_JSON);
    ck_assert_str_eq(log_format_name(f), "json");
    ck_assert(log_format_parse("text", &f));
    ck_assert_int_eq(f, LOG_FORMAT_TEXT);
    ck_assert(!log_format_parse("JSON ", &f));
    ck_assert(!log_format_parse("", &f));
    ck_assert_int_eq(f, LOG_FORMAT_TEXT);
    ck_assert(log_level_parse("warning", &l));
    ck_assert_int_eq(l, LOG_LEVEL_WARNING);
    ck_assert(!log_level_parse("warn", &l));
}
END_TEST

/* Points stderr at a new file; returns the saved stderr. */
static int stderr_to(const char *path)
{
    int saved = dup(STDERR_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    close(fd);
    return saved;
}

static void stderr_back(int saved)
{
    ck_assert_int_eq(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    Buf b = BUF_INIT;
    char chunk[512];
    size_t n;

    ck_assert_ptr_nonnull(f);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, n);
    fclose(f);
    return b.data ? b.data : strdup("");
}

START_TEST(test_log_writes_stderr_and_filters)
{
    char path[] = "/tmp/pgfan-log-XXXXXX";
    int fd = mkstemp(path);
    int saved;
    char *text;
    PfError err;

    ck_assert_int_ge(fd, 0);
    close(fd);
    log_reset();
    saved = stderr_to(path);
    log_set_level(LOG_LEVEL_WARNING);
    log_info("pgfan", "hidden %d", 1);
    log_warning("pgfan", "shown %d", 2);
    err_set(&err, ERR_RETRY, "retry me");
    log_error_value("sink", &err); /* ERR_RETRY logs at warning */
    log_set_format(LOG_FORMAT_JSON);
    log_error("pgfan", "as json");
    stderr_back(saved);
    text = slurp(path);
    ck_assert_ptr_null(strstr(text, "hidden"));
    ck_assert_ptr_nonnull(strstr(text, " WARNING pgfan: shown 2\n"));
    ck_assert_ptr_nonnull(strstr(text, " WARNING sink: retry me\n"));
    ck_assert_ptr_nonnull(strstr(text, "\"level\":\"error\",\"component\":\"pgfan\",\"msg\":\"as json\"}\n"));
    free(text);
    unlink(path);
    log_reset();
}
END_TEST

START_TEST(test_log_detect_journal)
{
    char path[] = "/tmp/pgfan-log-XXXXXX";
    int fd = mkstemp(path);
    int saved;
    struct stat st;
    char env[64];

    ck_assert_int_ge(fd, 0);
    close(fd);
    log_reset();
    saved = stderr_to(path);
    ck_assert_int_eq(fstat(STDERR_FILENO, &st), 0);
    unsetenv("JOURNAL_STREAM");
    ck_assert(!log_detect_journal());
    snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    setenv("JOURNAL_STREAM", env, 1);
    ck_assert(log_detect_journal());
    ck_assert(log_get_journal());
    log_info("pgfan", "to the journal");
    /* Another inode: stderr was redirected away from the journal (e.g. 2>file). */
    snprintf(env, sizeof env, "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + 1);
    setenv("JOURNAL_STREAM", env, 1);
    ck_assert(!log_detect_journal());
    setenv("JOURNAL_STREAM", "garbage", 1);
    ck_assert(!log_detect_journal());
    stderr_back(saved);
    unsetenv("JOURNAL_STREAM");
    {
        char *text = slurp(path);
        ck_assert_msg(strncmp(text, "<6>", 3) == 0 && strstr(text, " INFO pgfan: to the journal\n"),
                      "got: %s", text);
        free(text);
    }
    unlink(path);
    log_reset();
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
    tcase_add_test(misc, test_log_text_line);
    tcase_add_test(misc, test_log_json_line);
    tcase_add_test(misc, test_log_journal_priorities);
    tcase_add_test(misc, test_log_names);
    tcase_add_test(misc, test_log_writes_stderr_and_filters);
    tcase_add_test(misc, test_log_detect_journal);
    suite_add_tcase(s, lsn);
    suite_add_tcase(s, buf);
    suite_add_tcase(s, misc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
