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
    e.dir = h_tmpdir();
    e.db = xstrdup(name);
    h_create_db(e.db);
    e.conn = h_pg_connect(e.db);
    h_sql(e.conn, "CREATE TABLE orders(id bigint PRIMARY KEY, v int)");
    buf_printf(&b, "%s.public.orders", name);
    e.topic = b.data;
    buf_init(&b);
    e.bootstrap = start_broker(e.dir, e.topic, &e.broker);
    buf_printf(&b, "[sink.kafka]\nbrokers = %s\n%s", e.bootstrap, extra ? extra : "");
    if (with_file) {
        e.config = h_write_config(e.dir, e.db, e.db, "public.orders", b.data);
    } else {
        char *dsn = h_dsn(e.db);
        Buf path = BUF_INIT;

        buf_printf(&path, "%s/pgfan.conf", e.dir);
        h_write_file(path.data,
                     "[source]\ndsn = %s\nslot = %s\ntables = public.orders\n"
                     "status_interval = 1s\n\n[status]\nsocket = %s/status.sock\n\n"
                     "[log]\nlevel = debug\n\n%s\n",
                     dsn, e.db, e.dir, b.data);
        e.config = path.data;
        free(dsn);
    }
    buf_free(&b);
    buf_printf(&b, "%s/pgfan.log", e.dir);
    e.log = b.data;
    buf_init(&b);
    buf_printf(&b, "%s/out.ndjson", e.dir);
    e.out = b.data;
    return e;
}

static void env_free(Env *e)
{
    h_drop_slot(e->conn, e->db);
    PQfinish(e->conn);
    h_kill(e->broker, SIGTERM);
    h_wait_exit(e->broker, WAIT_MS);
    h_rm_rf(e->dir);
    free(e->dir);
    free(e->db);
    free(e->config);
    free(e->log);
    free(e->out);
    free(e->topic);
    free(e->bootstrap);
}

static pid_t start_pgfan_with(const char *config, const char *log)
{
    const char *argv[] = {h_pgfan_bin(), "run", "-c", config, NULL};
    return h_spawn(argv, log);
}

static pid_t start_pgfan(const Env *e)
{
    return start_pgfan_with(e->config, e->log);
}

static void stop_pgfan(pid_t pid)
{
    h_kill(pid, SIGTERM);
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 0);
}

typedef struct SlotWait {
    PGconn *conn;
    const char *slot;
    Lsn target;
} SlotWait;

static bool slot_reached(void *arg)
{
    SlotWait *w = arg;
    return h_slot_confirmed_lsn(w->conn, w->slot) >= w->target;
}

static void wait_confirmed_current(Env *e)
{
    h_wait_slot_confirmed(e->conn, e->db, h_wal_insert_lsn(e->conn), WAIT_MS, e->log);
}

/* ---- reading the topic ---- */

typedef struct Record {
    uint64_t lsn, commit_lsn;
    uint64_t id;
    char op;
} Record;

typedef struct Records {
    Record *items;
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
        Record *r;

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

static int record_cmp(const void *a, const void *b)
{
    const Record *x = a, *y = b;
    if (x->commit_lsn != y->commit_lsn)
        return x->commit_lsn < y->commit_lsn ? -1 : 1;
    if (x->lsn != y->lsn)
        return x->lsn < y->lsn ? -1 : 1;
    return 0;
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
    pid_t pid = start_pgfan(&e);
    SlotWait moved;
    PGconn *w;
    Lsn confirmed;
    Records rs;
    size_t dups = 0;
    bool *inserted, *updated;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    moved.conn = e.conn;
    moved.slot = e.db;
    moved.target = h_wal_insert_lsn(e.conn) + 1;
    w = h_workload_start(e.db, WORKLOAD_ROWS);
    /* mid-stream: something was delivered and confirmed, the workload goes on */
    ck_assert(h_wait_until(slot_reached, &moved, WAIT_MS));
    h_kill(pid, SIGKILL);
    h_wait_exit(pid, WAIT_MS);
    h_wait_slot_inactive(e.conn, e.db, WAIT_MS);
    confirmed = h_slot_confirmed_lsn(e.conn, e.db);

    pid = start_pgfan(&e);
    h_workload_finish(w);
    wait_confirmed_current(&e);
    stop_pgfan(pid);

    rs = consume(&e, WORKLOAD_ROWS + WORKLOAD_ROWS / 3);
    inserted = xcalloc(WORKLOAD_ROWS + 1, sizeof *inserted);
    updated = xcalloc(WORKLOAD_ROWS + 1, sizeof *updated);
    for (size_t i = 0; i < rs.n; i++) {
        uint64_t id = rs.items[i].id;
        ck_assert(id >= 1 && id <= WORKLOAD_ROWS);
        if (rs.items[i].op == 'c')
            inserted[id] = true;
        else if (rs.items[i].op == 'u')
            updated[id] = true;
    }
    for (uint64_t id = 1; id <= WORKLOAD_ROWS; id++) {
        ck_assert_msg(inserted[id], "insert of id %llu lost", (unsigned long long)id);
        if (id % 3 == 2)
            ck_assert_msg(updated[id], "update of id %llu lost", (unsigned long long)id);
    }
    qsort(rs.items, rs.n, sizeof *rs.items, record_cmp);
    for (size_t i = 1; i < rs.n; i++) {
        if (record_cmp(&rs.items[i - 1], &rs.items[i]) == 0) {
            dups++;
            ck_assert_msg(rs.items[i].commit_lsn > confirmed,
                          "duplicate of a change confirmed before the kill (commit %llx <= %llx)",
                          (unsigned long long)rs.items[i].commit_lsn,
                          (unsigned long long)confirmed);
        }
    }
    fprintf(stderr, "kafka kill -9: %zu records, %zu duplicates, all after the confirmed "
            "position\n", rs.n, dups);
    free(inserted);
    free(updated);
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
    SlotWait w;
    Records rs;
    char *text;

    /* h_write_config has no status_interval: append it to [source] via env */
    setenv("PGFAN_SOURCE_STATUS_INTERVAL", "1s", 1);
    pid = start_pgfan(&e);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (1, 0)");
    wait_confirmed_current(&e);

    kill(e.broker, SIGSTOP);
    h_sql(e.conn, "INSERT INTO orders VALUES (2, 0)");
    w.conn = e.conn;
    w.slot = e.db;
    w.target = h_wal_insert_lsn(e.conn);
    h_wait_file_contains(e.out, "\"after\":{\"id\":2,", WAIT_MS);
    /* the file has it; Kafka does not: several status updates must not confirm it */
    ck_assert_msg(!h_wait_until(slot_reached, &w, 3000),
                  "the slot confirmed a change the frozen broker never acknowledged");
    kill(e.broker, SIGCONT);
    wait_confirmed_current(&e);
    stop_pgfan(pid);
    rs = consume(&e, 2);
    ck_assert(has_id(&rs, 1));
    ck_assert(has_id(&rs, 2));
    text = h_read_file(e.out, NULL);
    ck_assert_ptr_nonnull(strstr(text, "\"after\":{\"id\":1,"));
    free(text);
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
    Buf cfg2 = BUF_INIT, log2 = BUF_INIT;
    char *conf_text = h_read_file(e.config, NULL);
    pid_t active, standby;
    Records rs;

    /* the same config, its own status socket */
    buf_printf(&cfg2, "%s/pgfan.conf", dir2);
    buf_printf(&log2, "%s/pgfan.log", dir2);
    {
        char *sock = strstr(conf_text, e.dir);
        Buf text = BUF_INIT;
        ck_assert_ptr_nonnull(sock);
        buf_append(&text, conf_text, (size_t)(sock - conf_text));
        buf_append_str(&text, dir2);
        buf_append_str(&text, sock + strlen(e.dir));
        h_write_file(cfg2.data, "%s", text.data);
        buf_free(&text);
    }
    active = start_pgfan(&e);
    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    standby = start_pgfan_with(cfg2.data, log2.data);
    h_wait_file_contains(log2.data, "is held by another consumer", WAIT_MS);

    stop_pgfan(active);
    h_wait_file_contains(log2.data, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders VALUES (77, 0)");
    wait_confirmed_current(&e);
    stop_pgfan(standby);
    rs = consume(&e, 1);
    ck_assert(has_id(&rs, 77));
    free(rs.items);
    free(conf_text);
    h_rm_rf(dir2);
    free(dir2);
    buf_free(&cfg2);
    buf_free(&log2);
    env_free(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kafka_e2e");
    TCase *tc = tcase_create("stream");
    SRunner *sr;
    int failed;

    if (!getenv("PGFAN_TEST_PGPORT") || !getenv("PGFAN_TEST_BIN")) {
        fprintf(stderr,
                "kafka_e2e: PGFAN_TEST_PGPORT and PGFAN_TEST_BIN must be set (run tests/run.sh)\n");
        return 77; /* meson: skipped */
    }
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_kafka_kill9_at_least_once);
    tcase_add_test(tc, test_kafka_and_file_confirm_the_minimum);
    tcase_add_test(tc, test_kafka_standby_takes_over);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
