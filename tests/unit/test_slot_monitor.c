/*
 * test_slot_monitor.c - the slot monitor without a server: reading
 * pg_replication_slots answers (built with libpq's PGresult constructors),
 * judging them, the session options, and the connection state machine
 * against a port nobody listens on. The real server is in
 * tests/integration/test_ops.c.
 */
#include "../../common/buf.h"
#include "../../common/clock.h"
#include "../../common/log.h"
#include "../../common/loop.h"
#include "../../common/mem.h"
#include "../../daemon/slot_monitor.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- PGresults like the check query's ---- */

/* values: 8 texts, NULL for SQL NULL. */
static PGresult *slot_result(const char *const values[8])
{
    static const char *const names[8] = {"slot_name",       "wal_status",  "safe_wal_size",
                                         "pg_wal_lsn_diff", "restart_lsn", "confirmed_flush_lsn",
                                         "active",          "lsn"};
    PGresAttDesc attrs[8];
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);

    ck_assert_ptr_nonnull(res);
    memset(attrs, 0, sizeof attrs);
    for (int i = 0; i < 8; i++) {
        attrs[i].name = (char *)names[i];
        attrs[i].format = 0;
        attrs[i].typlen = -1;
        attrs[i].atttypmod = -1;
    }
    ck_assert(PQsetResultAttrs(res, 8, attrs));
    for (int i = 0; i < 8; i++) {
        int len = values[i] ? (int)strlen(values[i]) : -1;
        ck_assert(PQsetvalue(res, 0, i, (char *)(values[i] ? values[i] : ""), len));
    }
    return res;
}

static SlotReading parse_ok(const char *const values[8])
{
    PGresult *res = slot_result(values);
    SlotReading r;
    PfError err;

    ck_assert_msg(slot_reading_parse(res, &r, &err), "parse failed: %s", err.msg);
    PQclear(res);
    return r;
}

START_TEST(test_parse_reserved)
{
    const char *v[8] = {"pgfan",     "reserved",  NULL, "824",
                        "0/1969670", "0/19699A8", "t",  "0/19699A8"};
    SlotReading r = parse_ok(v);

    ck_assert_int_eq(r.wal_status, SLOT_WAL_RESERVED);
    ck_assert(!r.has_safe_wal_size);
    ck_assert(r.has_retained);
    ck_assert_uint_eq(r.retained_bytes, 824);
    ck_assert_uint_eq(r.restart_lsn, 0x1969670);
    ck_assert_uint_eq(r.confirmed_flush_lsn, 0x19699A8);
    ck_assert_uint_eq(r.current_lsn, 0x19699A8);
    ck_assert(r.active);
}
END_TEST

START_TEST(test_parse_states)
{
    const char *unreserved[8] = {"pgfan",     "unreserved", "-4194304", "37748736",
                                 "0/1000000", "0/1000100",  "f",        "0/3400000"};
    const char *lost[8] = {"pgfan", "lost", NULL, NULL, NULL, "0/1000100", "f", "0/9000000"};
    const char *missing[8] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, "0/5"};
    const char *odd[8] = {"pgfan", "something-new", "1", "2", "0/1", "0/2", "t", "0/3"};
    SlotReading r = parse_ok(unreserved);

    ck_assert_int_eq(r.wal_status, SLOT_WAL_UNRESERVED);
    ck_assert(r.has_safe_wal_size);
    ck_assert_int_eq(r.safe_wal_size, -4194304);
    ck_assert(!r.active);
    r = parse_ok(lost);
    ck_assert_int_eq(r.wal_status, SLOT_WAL_LOST);
    ck_assert(!r.has_safe_wal_size);
    ck_assert(!r.has_retained);
    ck_assert_uint_eq(r.restart_lsn, LSN_INVALID);
    ck_assert_uint_eq(r.confirmed_flush_lsn, 0x1000100);
    r = parse_ok(missing);
    ck_assert_int_eq(r.wal_status, SLOT_WAL_MISSING);
    ck_assert_uint_eq(r.current_lsn, 5);
    r = parse_ok(odd); /* a wal_status a future server may add */
    ck_assert_int_eq(r.wal_status, SLOT_WAL_UNKNOWN);
    ck_assert_str_eq(slot_wal_status_name(SLOT_WAL_EXTENDED), "extended");
    ck_assert_str_eq(slot_wal_status_name(SLOT_WAL_MISSING), "missing");
    ck_assert_str_eq(slot_wal_status_name((SlotWalStatus)42), "unknown");
}
END_TEST

START_TEST(test_parse_malformed)
{
    const char *bad_lsn[8] = {"pgfan", "reserved", NULL, "1", "0/zz", "0/1", "t", "0/1"};
    const char *bad_num[8] = {"pgfan", "reserved", "12abc", "1", "0/1", "0/1", "t", "0/1"};
    PGresult *res = slot_result(bad_lsn);
    SlotReading r;
    PfError err;

    ck_assert(!slot_reading_parse(res, &r, &err));
    ck_assert_int_eq(err.kind, ERR_RETRY);
    ck_assert_str_eq(err.msg, "could not read pg_replication_slots: malformed value in the "
                              "slot's row");
    PQclear(res);
    res = slot_result(bad_num);
    ck_assert(!slot_reading_parse(res, &r, &err));
    PQclear(res);
    res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    ck_assert(!slot_reading_parse(res, &r, &err));
    ck_assert_str_eq(err.msg, "could not read pg_replication_slots: expected 1 row of 8 columns, "
                              "got 0 of 0");
    PQclear(res);
}
END_TEST

/* ---- verdicts ---- */

#define GB (1024u * 1024 * 1024)

START_TEST(test_judge)
{
    SlotReading r = {
        .wal_status = SLOT_WAL_RESERVED, .has_retained = true, .retained_bytes = 3 * 1024 * 1024};
    char warning[ERR_MSG_SIZE];
    PfError fatal;

    err_clear(&fatal);
    /* unlimited max_slot_wal_keep_size: safe_wal_size is NULL, never a warning */
    ck_assert_int_eq(slot_reading_judge(&r, "pgfan", GB, warning, sizeof warning, &fatal), SLOT_OK);
    ck_assert_str_eq(warning, "");
    r.has_safe_wal_size = true;
    r.safe_wal_size = 2 * (int64_t)GB;
    ck_assert_int_eq(slot_reading_judge(&r, "pgfan", GB, warning, sizeof warning, &fatal), SLOT_OK);
    r.wal_status = SLOT_WAL_EXTENDED;
    r.safe_wal_size = 512 * 1024 * 1024;
    ck_assert_int_eq(slot_reading_judge(&r, "pgfan", GB, warning, sizeof warning, &fatal),
                     SLOT_WARN);
    ck_assert_str_eq(warning, "replication slot \"pgfan\" has only 512.0 MB of WAL left before "
                              "max_slot_wal_keep_size invalidates it (slot_warn_safe_wal_size "
                              "1.0 GB; it holds 3.0 MB)");
    /* threshold 0: only unreserved warns */
    ck_assert_int_eq(slot_reading_judge(&r, "pgfan", 0, warning, sizeof warning, &fatal), SLOT_OK);
    r.wal_status = SLOT_WAL_UNRESERVED;
    r.safe_wal_size = -1024;
    ck_assert_int_eq(slot_reading_judge(&r, "pgfan", 0, warning, sizeof warning, &fatal),
                     SLOT_WARN);
    ck_assert_str_eq(warning, "replication slot \"pgfan\" is unreserved: it holds 3.0 MB of WAL "
                              "that max_slot_wal_keep_size no longer protects, and the next "
                              "checkpoint may invalidate it; pgfan must catch up (check the sinks) "
                              "or max_slot_wal_keep_size be raised");
    ck_assert_int_eq(fatal.kind, ERR_NONE);
}
END_TEST

START_TEST(test_judge_lost)
{
    SlotReading r = {.wal_status = SLOT_WAL_LOST, .confirmed_flush_lsn = 0x16B3748};
    char warning[ERR_MSG_SIZE];
    PfError fatal;

    ck_assert_int_eq(slot_reading_judge(&r, "shop", GB, warning, sizeof warning, &fatal),
                     SLOT_FATAL);
    ck_assert_int_eq(fatal.kind, ERR_FATAL);
    ck_assert_int_eq(err_exit_code(&fatal), 1);
    ck_assert_str_eq(fatal.msg, "could not keep streaming from replication slot \"shop\": it is "
                                "lost (wal_status lost): PostgreSQL removed WAL the slot still "
                                "needed, so the changes after 0/16B3748 can no longer be decoded");
    ck_assert_str_eq(fatal.hint,
                     "drop and recreate the slot (SELECT pg_drop_replication_slot('shop'); pgfan "
                     "creates it again at start), then resync every sink from a fresh copy of the "
                     "captured tables: the changes between 0/16B3748 and the new slot are gone. "
                     "Raise max_slot_wal_keep_size or fix what kept pgfan behind.");
}
END_TEST

START_TEST(test_session_options)
{
    PfError err;
    char *opts = slot_monitor_session_options("host=h dbname=d options='-c work_mem=8MB'", &err);

    ck_assert_str_eq(opts, "-c work_mem=8MB -c synchronous_commit=local -c statement_timeout=30s");
    free(opts);
    opts = slot_monitor_session_options("postgresql://u@h/d", &err);
    ck_assert_str_eq(opts, "-c synchronous_commit=local -c statement_timeout=30s");
    free(opts);
    ck_assert_ptr_null(slot_monitor_session_options("host=h dbname", &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "could not parse [source] dsn: "));
}
END_TEST

/* ---- the state machine, against a port nobody listens on ---- */

static int closed_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static Config *load_config(const char *extra)
{
    char path[] = "/tmp/pgfan-slotmon-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    Config *cfg = NULL;
    PfError err;

    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "[source]\ndsn = host=127.0.0.1 port=%d dbname=x user=u connect_timeout=5\n"
            "tables = orders\nreconnect_min = 100ms\nreconnect_max = 1s\n%s",
            closed_port(), extra);
    fclose(f);
    ck_assert_msg(config_load(path, &cfg, &err), "%s", err.msg);
    unlink(path);
    return cfg;
}

/* Drives the monitor until the status document contains needle (or 10 s pass). */
static bool drive_until(SlotMonitor *m, Loop *loop, const char *needle, Buf *doc)
{
    TimeUs end = clock_mono_us() + 10 * USECS_PER_SEC;

    for (;;) {
        TimeUs now = clock_mono_us();
        TimeUs next = slot_monitor_poll(m, now, true);
        TimeUs before = clock_mono_us();

        /* poll never blocks: it only starts things */
        ck_assert_int_lt(before - now, USECS_PER_SEC);
        buf_reset(doc);
        slot_monitor_render_json(m, doc, clock_wall_us());
        if (strstr(doc->data, needle))
            return true;
        if (now >= end)
            return false;
        loop_run_once(loop, next < now + 50 * USECS_PER_MSEC ? next : now + 50 * USECS_PER_MSEC);
    }
}

START_TEST(test_unreachable_server_retries)
{
    Config *cfg = load_config("");
    Loop *loop = loop_new();
    SlotMonitorSettings set;
    SlotMonitor *m;
    Buf doc = BUF_INIT;

    slot_monitor_settings_from(cfg, &set);
    ck_assert_int_eq(set.check_interval, 30 * USECS_PER_SEC);
    ck_assert_int_eq(set.heartbeat_interval, 10 * USECS_PER_SEC);
    m = slot_monitor_new(cfg, loop, &set);
    slot_monitor_render_json(m, &doc, clock_wall_us());
    ck_assert_ptr_nonnull(strstr(doc.data, "\"slot_health\":{\"monitor\":\"connecting\","
                                           "\"wal_status\":\"unknown\",\"safe_wal_size\":null,"
                                           "\"retained_bytes\":null,\"restart_lsn\":null,"
                                           "\"slot_confirmed_lsn\":null,\"active\":false,"
                                           "\"checked_seconds_ago\":null,\"warning\":\"\","
                                           "\"last_error\":\"\"},"));
    ck_assert_msg(drive_until(m, loop, "\"monitor\":\"reconnecting\"", &doc), "%s", doc.data);
    ck_assert_ptr_nonnull(strstr(doc.data, "\"last_error\":\"could not connect to PostgreSQL: "));
    ck_assert_ptr_nonnull(strstr(doc.data, "\"heartbeat\":{\"interval_seconds\":10.000,\"sent\":0,"
                                           "\"last_lsn\":null,\"lag_seconds\":null,"
                                           "\"last_error\":\"\"}"));
    ck_assert_ptr_null(slot_monitor_reading(m));
    ck_assert_ptr_null(slot_monitor_fatal(m));
    ck_assert_int_eq(slot_monitor_heartbeat_lag_us(m, clock_wall_us()), -1);

    buf_reset(&doc);
    slot_monitor_render_metrics(m, &doc, clock_wall_us());
    ck_assert_ptr_nonnull(strstr(doc.data, "pgfan_slot_wal_status{wal_status=\"unknown\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(doc.data, "pgfan_slot_wal_status{wal_status=\"lost\"} 0\n"));
    ck_assert_ptr_nonnull(strstr(doc.data, "# TYPE pgfan_slot_wal_status gauge\n"));
    ck_assert_ptr_nonnull(strstr(doc.data, "pgfan_slot_monitor_up 0\n"));
    ck_assert_ptr_nonnull(strstr(doc.data, "pgfan_heartbeats_total 0\n"));
    ck_assert_ptr_null(strstr(doc.data, "pgfan_slot_safe_wal_size_bytes"));
    ck_assert_ptr_null(strstr(doc.data, "pgfan_heartbeat_lag_seconds"));

    /* both intervals 0: the monitor closes everything and stays off */
    set.check_interval = 0;
    set.heartbeat_interval = 0;
    slot_monitor_apply(m, &set);
    ck_assert_int_eq(slot_monitor_poll(m, clock_mono_us(), true), TIME_NEVER);
    buf_reset(&doc);
    slot_monitor_render_json(m, &doc, clock_wall_us());
    ck_assert_ptr_nonnull(strstr(doc.data, "\"monitor\":\"off\""));
    ck_assert_ptr_nonnull(strstr(doc.data, "\"interval_seconds\":0.000"));
    /* and starts again when given work */
    set.check_interval = USECS_PER_SEC;
    slot_monitor_apply(m, &set);
    ck_assert(drive_until(m, loop, "\"monitor\":\"reconnecting\"", &doc));

    slot_monitor_stop(m);
    ck_assert_int_eq(slot_monitor_poll(m, clock_mono_us(), true), TIME_NEVER);
    buf_reset(&doc);
    slot_monitor_render_json(m, &doc, clock_wall_us());
    ck_assert_ptr_nonnull(strstr(doc.data, "\"monitor\":\"stopped\""));
    slot_monitor_free(m);
    loop_free(loop);
    config_free(cfg);
    buf_free(&doc);
}
END_TEST

START_TEST(test_disabled_monitor_never_connects)
{
    Config *cfg = load_config("slot_check_interval = 0\nheartbeat_interval = 0\n");
    Loop *loop = loop_new();
    SlotMonitorSettings set;
    SlotMonitor *m;
    Buf doc = BUF_INIT;

    slot_monitor_settings_from(cfg, &set);
    m = slot_monitor_new(cfg, loop, &set);
    ck_assert_int_eq(slot_monitor_poll(m, clock_mono_us(), true), TIME_NEVER);
    slot_monitor_render_json(m, &doc, clock_wall_us());
    ck_assert_ptr_nonnull(strstr(doc.data, "\"monitor\":\"off\""));
    slot_monitor_free(m);
    loop_free(loop);
    config_free(cfg);
    buf_free(&doc);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("slot_monitor");
    TCase *pure = tcase_create("pure");
    TCase *conn = tcase_create("connection");
    SRunner *sr;
    int failed;

    log_set_level(LOG_LEVEL_ERROR);
    tcase_add_test(pure, test_parse_reserved);
    tcase_add_test(pure, test_parse_states);
    tcase_add_test(pure, test_parse_malformed);
    tcase_add_test(pure, test_judge);
    tcase_add_test(pure, test_judge_lost);
    tcase_add_test(pure, test_session_options);
    tcase_set_timeout(conn, 60);
    tcase_add_test(conn, test_unreachable_server_retries);
    tcase_add_test(conn, test_disabled_monitor_never_connects);
    suite_add_tcase(s, pure);
    suite_add_tcase(s, conn);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
