/*
 * test_kafka_e2e.c - pgfan with the Kafka sink against a real PostgreSQL 15.
 *
 * The broker is librdkafka's mock cluster in a process of its own
 * (tests/harness/mock_broker.c, PGFAN_TEST_MOCK_BROKER), so what pgfan
 * produced survives pgfan's kill -9. Each test has its own database and
 * slot (kafka_*), its own broker and directory; records are read back with
 * a consumer assigned to every partition from the beginning. Nothing
 * sleeps: every wait polls under a deadline.
 */
#include "../../common/buf.h"
#include "../../common/mem.h"
#include "../harness/harness.h"

#include <check.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WAIT_MS 60000
#define PARTITIONS 16

typedef struct Env {
    char *dir;
    char *db;
    char *config;
    char *log;
    char *out; /* the file sink's output, when enabled */
    char *topic;
    char *bootstrap;
    pid_t broker;
    PGconn *conn;
} Env;

static bool file_exists(void *arg)
{
    return h_count_lines(arg) >= 1;
}

/* Starts a mock broker process with topic pre-created; returns its bootstrap list. */
static char *start_broker(const char *dir, const char *topic, pid_t *pid)
{
    Buf file = BUF_INIT, log = BUF_INIT, t = BUF_INIT;
    const char *bin = getenv("PGFAN_TEST_MOCK_BROKER");
    char *text;

    ck_assert_msg(bin != NULL, "PGFAN_TEST_MOCK_BROKER is not set");
    buf_printf(&file, "%s/bootstrap", dir);
    buf_printf(&log, "%s/broker.log", dir);
    buf_printf(&t, "%s:%d", topic, PARTITIONS);
    {
        const char *argv[] = {bin, file.data, "1", t.data, NULL};
        *pid = h_spawn(argv, log.data);
    }
    ck_assert_msg(h_wait_until(file_exists, file.data, WAIT_MS), "mock broker did not start");
    text = h_read_file(file.data, NULL);
    text[strcspn(text, "\n")] = '\0';
    buf_free(&file);
    buf_free(&log);
    buf_free(&t);
    return text;
}

/*
 * A database with table orders, a broker, and a config: [sink.kafka] alone,
 * or with the file sink too (with_file). extra is appended verbatim.
 */
static Env env_new(const char *name, bool with_file, const char *extra)
{
    Env e;
    Buf b = BUF_INIT;

    memset(&e, 0, sizeof e);
    e.conn = h_setup(name, "CREATE TABLE orders(id bigint PRIMARY KEY, v int)", &e.dir);
    e.db = xstrdup(name);
    buf_printf(&b, "%s.public.orders", name);
    e.topic = b.data;
    buf_init(&b);
    e.bootstrap = start_broker(e.dir, e.topic, &e.broker);
    buf_printf(&b, "[sink.kafka]\nbrokers = %s\n%s", e.bootstrap, extra ? extra : "");
    if (with_file) {
        e.config = h_write_config(e.dir, e.db, e.db, "public.orders", b.data);
    } else {
        char *dsn = h_dsn(e.db);

        e.config = h_path(e.dir, "pgfan.conf");
        h_write_file(e.config,
                     "[source]\ndsn = %s\nslot = %s\ntables = public.orders\n"
                     "status_interval = 1s\n\n[status]\nsocket = %s/status.sock\n\n"
                     "[log]\nlevel = debug\n\n%s\n",
                     dsn, e.db, e.dir, b.data);
        free(dsn);
    }
    buf_free(&b);
    e.log = h_path(e.dir, "pgfan.log");
    e.out = h_path(e.dir, "out.ndjson");
    return e;
}

static void env_free(Env *e)
{
    h_kill(e->broker, SIGTERM);
    h_wait_exit(e->broker, WAIT_MS);
    h_teardown(e->conn, e->db, e->dir);
    free(e->db);
    free(e->config);
    free(e->log);
    free(e->out);
    free(e->topic);
    free(e->bootstrap);
}

/* ---- reading the topic ---- */

typedef struct Records {
    HChange *items;
    size_t n;
} Records;

static uint64_t header_u64(rd_kafka_headers_t *h, const char *name)
{
    const void *v;
    size_t len;
    char text[32];

    ck_assert_msg(h && rd_kafka_header_get_last(h, name, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR &&
                      len < sizeof text,
                  "record without header %s", name);
    memcpy(text, v, len);
    text[len] = '\0';
    return strtoull(text, NULL, 10);
}

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Every record of the topic (tombstones skipped), from the beginning of
 * every partition until each reported its end and at least want were read.
 */
static Records consume(const Env *e, size_t want)
{
    char why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    Records out = {NULL, 0};
    bool at_end[PARTITIONS] = {false};
    bool started[PARTITIONS] = {false};
    int n_at_end = 0;
    size_t seen = 0;
    long long end = mono_ms() + WAIT_MS;
    rd_kafka_t *c;

    rd_kafka_conf_set(conf, "bootstrap.servers", e->bootstrap, why, sizeof why);
    rd_kafka_conf_set(conf, "group.id", "pgfan-e2e", why, sizeof why);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof why);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", why, sizeof why);
    rd_kafka_conf_set(conf, "log_level", "0", why, sizeof why);
    c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    ck_assert_msg(c != NULL, "%s", why);
    for (int p = 0; p < PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(parts, e->topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(c, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    while ((seen < want || n_at_end < PARTITIONS) && mono_ms() < end) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        rd_kafka_headers_t *h = NULL;
        const char *after;
        HChange *r;

        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (!at_end[m->partition])
                n_at_end++;
            at_end[m->partition] = true;
        }
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        /* the mock keeps only ~5 MiB per partition: a partition read from
         * the beginning must start at offset 0, or the mock dropped records */
        if (!started[m->partition]) {
            ck_assert_msg(m->offset == 0, "partition %d starts at offset %lld: the mock "
                          "truncated it", (int)m->partition, (long long)m->offset);
            started[m->partition] = true;
        }
        if (m->payload == NULL) { /* a tombstone */
            rd_kafka_message_destroy(m);
            continue;
        }
        seen++;
        if (at_end[m->partition])
            n_at_end--;
        at_end[m->partition] = false;
        out.items = xrealloc(out.items, (out.n + 1) * sizeof *out.items);
        r = &out.items[out.n++];
        rd_kafka_message_headers(m, &h);
        r->lsn = header_u64(h, "pgfan.lsn");
        r->commit_lsn = header_u64(h, "pgfan.commit_lsn");
        {
            const void *v;
            size_t len;
            ck_assert_int_eq(rd_kafka_header_get_last(h, "pgfan.op", &v, &len), 0);
            r->op = *(const char *)v;
        }
        {
            char *value = xstrndup(m->payload, m->len);
            after = strstr(value, "\"after\":{\"id\":");
            r->id = after ? strtoull(after + 14, NULL, 10) : 0;
            free(value);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return out;
}

static bool has_id(const Records *rs, uint64_t id)
{
    for (size_t i = 0; i < rs->n; i++) {
        if (rs->items[i].id == id)
            return true;
    }
    return false;
}

/* ---- workload (as in test_e2e.c) ---- */

/* Rows of the harness's crash-test workload (h_workload_start). */
#define WORKLOAD_ROWS 3000

/* ---- tests ---- */

/*
 * kill -9 mid-stream, restart: every change at least once, and every
 * duplicate belongs to a transaction after the position the slot had
 * confirmed when pgfan died (pgfan.commit_lsn > confirmed_flush_lsn).
 */
START_TEST(test_kafka_kill9_at_least_once)
{
    Env e = env_new("kafka_kill", false, NULL);
    pid_t pid = h_pgfan_start(e.config, e.log);
    PGconn *w;
    Lsn start, confirmed;
    Records rs;
    size_t dups;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    start = h_wal_insert_lsn(e.conn);
    w = h_workload_start(e.db, WORKLOAD_ROWS);
    /* mid-stream: something was delivered and confirmed, the workload goes on */
    ck_assert(h_slot_reaches(e.conn, e.db, start + 1, WAIT_MS));
    confirmed = h_pgfan_crash(pid, e.conn, e.db, WAIT_MS);

    pid = h_pgfan_start(e.config, e.log);
    h_workload_finish(w);
    h_wait_caught_up(e.conn, e.db, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);

    rs = consume(&e, WORKLOAD_ROWS + WORKLOAD_ROWS / 3);
    dups = h_workload_check(rs.items, rs.n, WORKLOAD_ROWS, confirmed);
    /* h_workload_check fails the test on any lost change. */
    fprintf(stderr,
            "kafka_kill: %d changes checked, 0 lost, %zu duplicates (all after the confirmed "
            "position), 1 kill, %zu records read\n",
            WORKLOAD_ROWS + WORKLOAD_ROWS / 3, dups, rs.n);
    free(rs.items);
    env_free(&e);
}
END_TEST

/*
 * File and Kafka together: the slot confirms the minimum. A frozen broker
 * (SIGSTOP) holds the confirmed position back although the file has the
 * row; after SIGCONT both have it and the slot catches up.
 */
START_TEST(test_kafka_and_file_confirm_the_minimum)
{
    Env e = env_new("kafka_min", true, NULL);
    pid_t pid;
    Lsn second;
    Records rs;
    char *text;

    /* h_write_config has no status_interval: append it to [source] via env */
    setenv("PGFAN_SOURCE_STATUS_INTERVAL", "1s", 1);
    pid = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1, 0)");
    h_wait_caught_up(e.conn, e.db, WAIT_MS, e.log);

    kill(e.broker, SIGSTOP);
    h_sql(e.conn, "INSERT INTO orders VALUES (2, 0)");
    second = h_wal_insert_lsn(e.conn);
    h_wait_file_contains(e.out, "\"after\":{\"id\":2,", WAIT_MS);
    /* the file has it; Kafka does not: several status updates must not confirm it */
    ck_assert_msg(!h_slot_reaches(e.conn, e.db, second, 3000),
                  "the slot confirmed a change the frozen broker never acknowledged");
    kill(e.broker, SIGCONT);
    h_wait_caught_up(e.conn, e.db, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);
    rs = consume(&e, 2);
    ck_assert(has_id(&rs, 1));
    ck_assert(has_id(&rs, 2));
    text = h_read_file(e.out, NULL);
    ck_assert_ptr_nonnull(strstr(text, "\"after\":{\"id\":1,"));
    free(text);
    fprintf(stderr,
            "kafka_frozen_broker: 2 changes checked, 0 lost, %zu records read; the slot did "
            "not confirm the change the frozen broker held for 3 s\n",
            rs.n);
    free(rs.items);
    unsetenv("PGFAN_SOURCE_STATUS_INTERVAL");
    env_free(&e);
}
END_TEST

/* A second pgfan with Kafka enabled waits on 55006 and takes over when the first stops. */
START_TEST(test_kafka_standby_takes_over)
{
    Env e = env_new("kafka_ha", false, NULL);
    char *dir2 = h_tmpdir();
    char *cfg2 = h_path(dir2, "pgfan.conf");
    char *log2 = h_path(dir2, "pgfan.log");
    char *conf_text = h_read_file(e.config, NULL);
    pid_t active, standby;
    Records rs;

    /* the same config, its own status socket */
    {
        char *sock = strstr(conf_text, e.dir);
        Buf text = BUF_INIT;
        ck_assert_ptr_nonnull(sock);
        buf_append(&text, conf_text, (size_t)(sock - conf_text));
        buf_append_str(&text, dir2);
        buf_append_str(&text, sock + strlen(e.dir));
        h_write_file(cfg2, "%s", text.data);
        buf_free(&text);
    }
    active = h_pgfan_start(e.config, e.log);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    standby = h_pgfan_start(cfg2, log2);
    h_wait_file_contains(log2, "is held by another consumer", WAIT_MS);

    h_pgfan_stop(active, WAIT_MS);
    h_wait_file_contains(log2, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (77, 0)");
    h_wait_caught_up(e.conn, e.db, WAIT_MS, e.log);
    h_pgfan_stop(standby, WAIT_MS);
    rs = consume(&e, 1);
    ck_assert(has_id(&rs, 77));
    free(rs.items);
    free(conf_text);
    h_rm_rf(dir2);
    free(dir2);
    free(cfg2);
    free(log2);
    env_free(&e);
}
END_TEST

int main(void)
{
    const char *const env[] = {"PGFAN_TEST_PGPORT", "PGFAN_TEST_BIN", NULL};
    const TTest *const tests[] = {test_kafka_kill9_at_least_once,
                                  test_kafka_and_file_confirm_the_minimum,
                                  test_kafka_standby_takes_over, NULL};

    return h_run_suite("kafka_e2e", "stream", 240, env, tests, NULL);
}
