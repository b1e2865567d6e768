/*
 * test_kafka_sink.c - the Kafka sink against librdkafka's mock cluster.
 *
 * Each test creates its mock cluster, the sink and a consumer inside the
 * test function: librdkafka handles do not survive the fork of Check's
 * fixtures (protocol-notes 0.8). The sink is driven as the daemon drives
 * it: a real Loop (the eventfd of delivery reports) plus poll() after each
 * turn, until a condition holds or a deadline passes; nothing sleeps.
 * Topics are pre-created with enough partitions (the 2.0.2 mock keeps only
 * ~5 MiB per partition, protocol-notes 0.13) and read back with a consumer
 * assigned to every partition from the beginning.
 */
#include "../../common/clock.h"
#include "../../common/log.h"
#include "../../common/mem.h"
#include "../../common/loop.h"
#include "../../sinks/envelope.h"
#include "../../sinks/kafka_test.h"
#include "../../sinks/sink.h"
#include "../../sinks/txn_tracker.h"

#include <check.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(lit) {(lit), sizeof(lit) - 1}
#define SV(lit) ((Str)S(lit))
#define MS USECS_PER_MSEC
#define SEC USECS_PER_SEC
#define WAIT (30 * SEC)
#define PARTITIONS 4
#define TOPIC "shop.public.orders"
#define API_PRODUCE 0

extern const SinkOps sink_kafka_ops;

static const SinkOps *ops = &sink_kafka_ops;

/* ---- fixture: plain memory only (no librdkafka handle survives the fork) ---- */

typedef struct Fixture {
    Config cfg;
    SourceInfo src;
    SinkContext ctx;
    Loop *loop;
    ConfigPair rdk[4];
    ConfigPair topics[2];
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mock;
} Fixture;

static Fixture fx;

static void fixture_setup(void)
{
    memset(&fx, 0, sizeof fx);
    fx.cfg.source.name = (char *)"shop";
    fx.cfg.kafka.enabled = true;
    fx.cfg.kafka.topic_prefix = (char *)"shop";
    fx.cfg.kafka.tombstones = true;
    fx.cfg.kafka.compression = KAFKA_COMPRESSION_LZ4;
    fx.cfg.kafka.linger = 5 * MS;
    fx.cfg.kafka.queue_max_messages = 100000;
    fx.cfg.kafka.queue_max_kbytes = 65536;
    /* a restarted broker is found again within a second, not after 10 s */
    fx.rdk[0] = (ConfigPair){(char *)"reconnect.backoff.max.ms", (char *)"500"};
    fx.rdk[1] = (ConfigPair){(char *)"retry.backoff.ms", (char *)"50"};
    fx.cfg.kafka.librdkafka.items = fx.rdk;
    fx.cfg.kafka.librdkafka.n = 2;
    strcpy(fx.src.dbname, "shop");
    strcpy(fx.src.name, "shop");
    strcpy(fx.src.slot, "pgfan");
    fx.loop = loop_new();
    fx.ctx.config = &fx.cfg;
    fx.ctx.source = &fx.src;
    fx.ctx.loop = fx.loop;
    log_set_level(LOG_LEVEL_WARNING);
}

static void fixture_teardown(void)
{
    if (fx.mock)
        rd_kafka_mock_cluster_destroy(fx.mock);
    if (fx.mock_rk)
        rd_kafka_destroy(fx.mock_rk);
    loop_free(fx.loop);
}

/* Starts a mock cluster of n brokers (inside the test) and points the config at it. */
static const char *start_mock(int brokers)
{
    char why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set(conf, "log_level", "0", why, sizeof why);
    fx.mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    ck_assert_msg(fx.mock_rk != NULL, "%s", why);
    fx.mock = rd_kafka_mock_cluster_new(fx.mock_rk, brokers);
    ck_assert_ptr_nonnull(fx.mock);
    fx.cfg.kafka.brokers = (char *)rd_kafka_mock_cluster_bootstraps(fx.mock);
    return fx.cfg.kafka.brokers;
}

static void create_topic(const char *topic, int partitions)
{
    ck_assert_int_eq(rd_kafka_mock_topic_create(fx.mock, topic, partitions, 1),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void *open_ok(void)
{
    PfError err;
    void *s = ops->open(&fx.ctx, &err);

    ck_assert_msg(s != NULL, "open failed: %s", err.msg);
    return s;
}

/* ---- changes ---- */

static const Str pk_id[] = {S("id")};

/* A row change of public.orders (or table) with id and status; lsn is its own, end its commit's. */
static bool submit_row_in(void *sink, const char *table, ChangeKind kind, int id,
                          const char *status, Lsn lsn, Lsn end, PfError *err)
{
    char idtxt[16];
    Column cols[2];
    Change c;

    snprintf(idtxt, sizeof idtxt, "%d", id);
    cols[0] = (Column){S("id"), S("bigint"), TYPE_INT, {VALUE_NUMBER, {idtxt, strlen(idtxt)}}};
    cols[1] = (Column){S("status"), S("text"), TYPE_TEXT, {VALUE_STRING, {status, strlen(status)}}};
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lsn = lsn;
    c.end_lsn = end;
    c.has_xid = true;
    c.xid = 731;
    c.has_commit_time = true;
    c.commit_time = INT64_C(1763892000000000);
    c.schema = SV("public");
    c.table = (Str){table, strlen(table)};
    if (kind != CHANGE_TRUNCATE) {
        c.pk = pk_id;
        c.n_pk = 1;
    }
    if (kind == CHANGE_INSERT || kind == CHANGE_UPDATE) {
        c.new_cols = cols;
        c.n_new = 2;
    }
    if (kind == CHANGE_UPDATE || kind == CHANGE_DELETE) {
        c.old_cols = cols;
        c.n_old = 1;
    }
    return ops->submit(sink, &c, err);
}

static void row(void *sink, ChangeKind kind, int id, const char *status, Lsn lsn, Lsn end)
{
    PfError err;

    ck_assert_msg(submit_row_in(sink, "orders", kind, id, status, lsn, end, &err), "%s",
                  err.msg);
}

static void txn_mark(void *sink, ChangeKind kind, Lsn end)
{
    Change c;
    PfError err;

    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lsn = end - 8;
    c.end_lsn = end;
    c.has_xid = true;
    c.xid = 731;
    ck_assert_msg(ops->submit(sink, &c, &err), "%s", err.msg);
}

/* One transaction of n inserts (ids first..first+n-1) ending at end. */
static void insert_txn(void *sink, int first, int n, Lsn end)
{
    txn_mark(sink, CHANGE_BEGIN, end);
    for (int i = 0; i < n; i++)
        row(sink, CHANGE_INSERT, first + i, "new", end - 4096 + (Lsn)i, end);
    txn_mark(sink, CHANGE_COMMIT, end);
}

/* ---- driving the sink like the daemon does ---- */

typedef bool (*Cond)(void *sink, const void *arg);

/* Loop turns + poll() until cond holds or max passes; false on timeout. */
static bool drive(void *sink, Cond cond, const void *arg, TimeUs max)
{
    TimeUs end = clock_mono_us() + max;
    PfError err;

    for (;;) {
        TimeUs now = clock_mono_us();
        TimeUs next;

        ck_assert_msg(ops->poll(sink, now, &next, &err), "poll failed: %s", err.msg);
        if (cond(sink, arg))
            return true;
        if (now >= end)
            return false;
        if (next > now + 50 * MS)
            next = now + 50 * MS;
        if (next > end)
            next = end;
        loop_run_once(fx.loop, next);
    }
}

static bool durable_reached(void *sink, const void *arg)
{
    return ops->durable_lsn(sink) >= *(const Lsn *)arg;
}

static bool state_is(void *sink, const void *arg)
{
    SinkStatus st;

    ops->status(sink, &st);
    return strcmp(st.state, (const char *)arg) == 0;
}

static bool never(void *sink, const void *arg)
{
    (void)sink;
    (void)arg;
    return false;
}

static void drive_to_durable(void *sink, Lsn lsn)
{
    ck_assert_msg(drive(sink, durable_reached, &lsn, WAIT), "durable_lsn %llx, want %llx",
                  (unsigned long long)ops->durable_lsn(sink), (unsigned long long)lsn);
}

/* Drives until poll() fails; returns its error. */
static PfError drive_to_failure(void *sink)
{
    TimeUs end = clock_mono_us() + WAIT;
    PfError err;

    for (;;) {
        TimeUs now = clock_mono_us();
        TimeUs next;

        if (!ops->poll(sink, now, &next, &err))
            return err;
        ck_assert_msg(now < end, "poll never failed");
        if (next > now + 50 * MS)
            next = now + 50 * MS;
        loop_run_once(fx.loop, next);
    }
}

/* ---- reading the topics back ---- */

typedef struct Record {
    int partition;
    int64_t offset;
    char *key;   /* NULL: null key */
    char *value; /* NULL: tombstone */
    char lsn[32], commit_lsn[32], xid[16], op[4];
} Record;

typedef struct Records {
    Record *items;
    size_t n;
} Records;

static void header(rd_kafka_headers_t *h, const char *name, char *out, size_t size)
{
    const void *v;
    size_t len;

    out[0] = '\0';
    if (h && rd_kafka_header_get_last(h, name, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ck_assert_uint_lt(len, size);
        memcpy(out, v, len);
        out[len] = '\0';
    }
}

static char *dup_payload(const void *p, size_t len)
{
    return p ? xstrndup(p, len) : NULL;
}

/*
 * Reads topic from the beginning of every partition until it has at least
 * want records and every partition reported its end, or the deadline.
 */
static Records consume(const char *topic, int partitions, size_t want)
{
    char why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(partitions);
    Records out = {NULL, 0};
    TimeUs end = clock_mono_us() + WAIT;
    rd_kafka_t *c;

    ck_assert_int_eq(rd_kafka_conf_set(conf, "bootstrap.servers", fx.cfg.kafka.brokers, why,
                                       sizeof why),
                     RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(conf, "group.id", "pgfan-test", why, sizeof why);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", why, sizeof why);
    rd_kafka_conf_set(conf, "log_level", "0", why, sizeof why);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", why, sizeof why);
    c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    ck_assert_msg(c != NULL, "%s", why);
    for (int p = 0; p < partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(rd_kafka_assign(c, parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(parts);
    bool at_end[64] = {false};
    int n_at_end = 0;

    ck_assert_int_le(partitions, 64);
    while ((out.n < want || n_at_end < partitions) && clock_mono_us() < end) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        rd_kafka_headers_t *h = NULL;
        Record *r;

        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (!at_end[m->partition])
                n_at_end++;
            at_end[m->partition] = true;
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        out.items = xrealloc(out.items, (out.n + 1) * sizeof *out.items);
        r = &out.items[out.n++];
        if (at_end[m->partition])
            n_at_end--;
        at_end[m->partition] = false;
        memset(r, 0, sizeof *r);
        r->partition = (int)m->partition;
        r->offset = m->offset;
        r->key = dup_payload(m->key, m->key_len);
        r->value = dup_payload(m->payload, m->len);
        rd_kafka_message_headers(m, &h);
        header(h, "pgfan.lsn", r->lsn, sizeof r->lsn);
        header(h, "pgfan.commit_lsn", r->commit_lsn, sizeof r->commit_lsn);
        header(h, "pgfan.xid", r->xid, sizeof r->xid);
        header(h, "pgfan.op", r->op, sizeof r->op);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return out;
}

static void records_free(Records *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->items[i].key);
        free(rs->items[i].value);
    }
    free(rs->items);
}

/* The records of key in consumption order (one partition: produce order). */
static size_t records_of_key(const Records *rs, const char *key, const Record **out, size_t max)
{
    size_t n = 0;

    for (size_t i = 0; i < rs->n && n < max; i++) {
        if (rs->items[i].key && strcmp(rs->items[i].key, key) == 0)
            out[n++] = &rs->items[i];
    }
    return n;
}

/* Every id in [first, first+n) appears at least once as an insert. */
static void assert_all_ids(const Records *rs, int first, int n)
{
    char *seen = xcalloc((size_t)n, 1);

    for (size_t i = 0; i < rs->n; i++) {
        int id;
        if (rs->items[i].key && sscanf(rs->items[i].key, "{\"id\":%d}", &id) == 1 &&
            id >= first && id < first + n)
            seen[id - first] = 1;
    }
    for (int i = 0; i < n; i++)
        ck_assert_msg(seen[i], "id %d was never delivered", first + i);
    free(seen);
}

/* ---- the acknowledgement FIFO (txn_tracker.h), no librdkafka ---- */

START_TEST(test_tracker_order)
{
    TxnTracker t;
    uint64_t a, b;

    txn_tracker_init(&t);
    ck_assert_uint_eq(txn_tracker_advance(&t), LSN_INVALID);
    txn_tracker_begin(&t);
    a = txn_tracker_current(&t);
    txn_tracker_sent(&t, a);
    txn_tracker_sent(&t, a);
    txn_tracker_commit(&t, 0x100);
    /* an empty transaction waits for the one before it */
    txn_tracker_begin(&t);
    txn_tracker_commit(&t, 0x200);
    txn_tracker_begin(&t);
    b = txn_tracker_current(&t);
    txn_tracker_sent(&t, b);
    txn_tracker_commit(&t, 0x300);
    ck_assert_uint_eq(txn_tracker_advance(&t), LSN_INVALID);
    /* a later transaction acknowledged first moves nothing */
    txn_tracker_acked(&t, b);
    ck_assert_uint_eq(txn_tracker_advance(&t), LSN_INVALID);
    txn_tracker_acked(&t, a);
    ck_assert_uint_eq(txn_tracker_advance(&t), LSN_INVALID);
    ck_assert_uint_eq(txn_tracker_pending(&t), 3);
    txn_tracker_acked(&t, a);
    ck_assert_uint_eq(txn_tracker_advance(&t), 0x300);
    ck_assert_uint_eq(txn_tracker_pending(&t), 0);
    /* an open transaction holds nothing back before it is committed */
    txn_tracker_begin(&t);
    ck_assert_uint_eq(txn_tracker_advance(&t), 0x300);
    ck_assert_uint_eq(txn_tracker_pending(&t), 1);
    txn_tracker_free(&t);
}
END_TEST

/* Batches acknowledge several records of a transaction at once (webhook). */
START_TEST(test_tracker_batch_acks)
{
    TxnTracker t;
    uint64_t a;

    txn_tracker_init(&t);
    txn_tracker_begin(&t);
    a = txn_tracker_current(&t);
    for (int i = 0; i < 5; i++)
        txn_tracker_sent(&t, a);
    txn_tracker_commit(&t, 0x700);
    txn_tracker_acked_n(&t, a, 3);
    ck_assert_uint_eq(txn_tracker_advance(&t), LSN_INVALID);
    txn_tracker_acked_n(&t, a, 2);
    ck_assert_uint_eq(txn_tracker_advance(&t), 0x700);
    txn_tracker_free(&t);
}
END_TEST

START_TEST(test_tracker_abandoned_and_growth)
{
    TxnTracker t;
    uint64_t first, seqs[1000];

    txn_tracker_init(&t);
    /* BEGIN, a record, BEGIN again (lost connection): the abandoned one moves no position */
    txn_tracker_begin(&t);
    first = txn_tracker_current(&t);
    txn_tracker_sent(&t, first);
    txn_tracker_begin(&t);
    txn_tracker_commit(&t, 0x500);
    ck_assert_uint_eq(txn_tracker_advance(&t), LSN_INVALID);
    txn_tracker_acked(&t, first);
    ck_assert_uint_eq(txn_tracker_advance(&t), 0x500);
    /* a COMMIT without BEGIN, and a ring that grows while records are out */
    txn_tracker_commit(&t, 0x600);
    ck_assert_uint_eq(txn_tracker_advance(&t), 0x600);
    for (int i = 0; i < 1000; i++) {
        txn_tracker_begin(&t);
        seqs[i] = txn_tracker_current(&t);
        txn_tracker_sent(&t, seqs[i]);
        txn_tracker_commit(&t, 0x1000 + (Lsn)i);
    }
    for (int i = 999; i >= 1; i--)
        txn_tracker_acked(&t, seqs[i]);
    ck_assert_uint_eq(txn_tracker_advance(&t), 0x600);
    txn_tracker_acked(&t, seqs[0]);
    ck_assert_uint_eq(txn_tracker_advance(&t), 0x1000 + 999);
    txn_tracker_free(&t);
}
END_TEST

/* ---- tests ---- */

START_TEST(test_registered)
{
    ck_assert_ptr_eq(sink_lookup("kafka"), &sink_kafka_ops);
}
END_TEST

/* Keys, envelopes, headers, tombstones, truncates, per-key order, durable only after DRs. */
START_TEST(test_delivery)
{
    void *s;
    const Record *k1[8];
    Records rs;
    SinkStatus st;

    start_mock(3);
    create_topic(TOPIC, PARTITIONS);
    s = open_ok();

    txn_mark(s, CHANGE_BEGIN, 0x1000);
    row(s, CHANGE_INSERT, 1, "new", 0x0F00, 0x1000);
    row(s, CHANGE_UPDATE, 1, "paid", 0x0F10, 0x1000);
    row(s, CHANGE_DELETE, 1, "paid", 0x0F20, 0x1000);
    txn_mark(s, CHANGE_COMMIT, 0x1000);
    /* a transaction with nothing for this sink */
    txn_mark(s, CHANGE_BEGIN, 0x2000);
    txn_mark(s, CHANGE_COMMIT, 0x2000);
    /* an abandoned transaction (lost connection), then the same again in full */
    txn_mark(s, CHANGE_BEGIN, 0x3000);
    row(s, CHANGE_INSERT, 2, "new", 0x2F00, 0x3000);
    txn_mark(s, CHANGE_BEGIN, 0x3000);
    row(s, CHANGE_INSERT, 2, "new", 0x2F00, 0x3000);
    txn_mark(s, CHANGE_COMMIT, 0x3000);
    txn_mark(s, CHANGE_BEGIN, 0x4000);
    row(s, CHANGE_TRUNCATE, 0, "", 0x3F00, 0x4000);
    txn_mark(s, CHANGE_COMMIT, 0x4000);

    /* nothing is durable before its delivery report */
    ck_assert_uint_eq(ops->durable_lsn(s), LSN_INVALID);
    ops->status(s, &st);
    ck_assert_uint_eq(st.events, 6);
    ck_assert_uint_ge(st.queue_depth, 1);
    ck_assert_uint_gt(st.queued_bytes, 0);
    drive_to_durable(s, 0x4000);
    ops->status(s, &st);
    ck_assert_str_eq(st.state, "ok");
    ck_assert_uint_eq(st.queue_depth, 0);
    ck_assert_uint_eq(st.queued_bytes, 0);
    ck_assert_uint_eq(st.errors, 0);
    ck_assert_uint_gt(st.bytes, 0);
    ck_assert_str_eq(st.last_error, "");

    rs = consume(TOPIC, PARTITIONS, 7);
    ck_assert_uint_eq(rs.n, 7);
    ck_assert_uint_eq(records_of_key(&rs, "{\"id\":1}", k1, 8), 4);
    ck_assert_str_eq(k1[0]->op, "c");
    ck_assert_str_eq(k1[1]->op, "u");
    ck_assert_str_eq(k1[2]->op, "d");
    ck_assert_str_eq(k1[3]->op, "d");
    ck_assert_ptr_null(k1[3]->value); /* the tombstone */
    ck_assert_str_eq(k1[0]->lsn, "3840");
    ck_assert_str_eq(k1[1]->lsn, "3856");
    ck_assert_str_eq(k1[0]->commit_lsn, "4096");
    ck_assert_str_eq(k1[0]->xid, "731");
    ck_assert_ptr_nonnull(strstr(k1[0]->value, "\"before\":null,\"after\":{\"id\":1,"
                                               "\"status\":\"new\"}"));
    ck_assert_ptr_nonnull(strstr(k1[0]->value, "\"op\":\"c\""));
    ck_assert_ptr_nonnull(strstr(k1[0]->value, "\"table\":\"orders\""));
    ck_assert_ptr_nonnull(strstr(k1[1]->value, "\"op\":\"u\""));
    ck_assert_ptr_nonnull(strstr(k1[2]->value, "\"op\":\"d\""));
    ck_assert_int_eq(k1[0]->partition, k1[3]->partition);
    for (int i = 1; i < 4; i++)
        ck_assert_int_gt(k1[i]->offset, k1[i - 1]->offset);
    /* the abandoned copy and the replay: both delivered (at-least-once) */
    ck_assert_uint_eq(records_of_key(&rs, "{\"id\":2}", k1, 8), 2);
    ck_assert_str_eq(k1[1]->commit_lsn, "12288");
    /* the truncate: null key, op t */
    for (size_t i = 0; i < rs.n; i++) {
        if (rs.items[i].key == NULL) {
            ck_assert_str_eq(rs.items[i].op, "t");
            ck_assert_ptr_nonnull(strstr(rs.items[i].value, "\"op\":\"t\""));
        }
    }
    records_free(&rs);
    ops->close(s);
}
END_TEST

START_TEST(test_topic_override_and_no_tombstones)
{
    void *s;
    Records rs;

    start_mock(1);
    create_topic("orders-x", 2);
    fx.topics[0] = (ConfigPair){(char *)"public.orders", (char *)"orders-x"};
    fx.cfg.kafka.topics.items = fx.topics;
    fx.cfg.kafka.topics.n = 1;
    fx.cfg.kafka.tombstones = false;
    fx.cfg.kafka.compression = KAFKA_COMPRESSION_ZSTD;
    s = open_ok();
    txn_mark(s, CHANGE_BEGIN, 0x1000);
    row(s, CHANGE_INSERT, 5, "new", 0x0F00, 0x1000);
    row(s, CHANGE_DELETE, 5, "new", 0x0F10, 0x1000);
    txn_mark(s, CHANGE_COMMIT, 0x1000);
    drive_to_durable(s, 0x1000);
    rs = consume("orders-x", 2, 2);
    ck_assert_uint_eq(rs.n, 2);
    ck_assert_str_eq(rs.items[0].op, "c");
    ck_assert_str_eq(rs.items[1].op, "d");
    ck_assert_ptr_nonnull(rs.items[1].value);
    records_free(&rs);
    ops->close(s);
}
END_TEST

/* A broker down: durable stops, nothing is lost, delivery resumes after it comes back. */
START_TEST(test_broker_down)
{
    void *s;
    Records rs;
    Lsn before;
    SinkStatus st;

    start_mock(1);
    create_topic(TOPIC, PARTITIONS);
    s = open_ok();
    insert_txn(s, 1, 10, 0x10000);
    drive_to_durable(s, 0x10000);

    ck_assert_int_eq(rd_kafka_mock_broker_set_down(fx.mock, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    for (int t = 1; t <= 10; t++)
        insert_txn(s, 1 + t * 10, 10, 0x10000 + (Lsn)t * 0x10000);
    ck_assert_msg(drive(s, state_is, "retrying", WAIT), "never reported retrying");
    before = ops->durable_lsn(s);
    drive(s, never, NULL, 500 * MS);
    ck_assert_uint_eq(ops->durable_lsn(s), before);
    ck_assert_uint_lt(before, 0xB0000);
    ops->status(s, &st);
    ck_assert_uint_gt(st.retries, 0);
    ck_assert_uint_eq(st.errors, 0);
    ck_assert_str_ne(st.last_error, "");

    ck_assert_int_eq(rd_kafka_mock_broker_set_up(fx.mock, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    drive_to_durable(s, 0xB0000);
    ops->status(s, &st);
    ck_assert_str_eq(st.state, "ok");
    rs = consume(TOPIC, PARTITIONS, 110);
    ck_assert_uint_ge(rs.n, 110);
    assert_all_ids(&rs, 1, 110);
    records_free(&rs);
    ops->close(s);
}
END_TEST

/* Produce requests failing (leader moved, connection dropped): retried, nothing lost, order kept. */
START_TEST(test_injected_produce_errors)
{
    void *s;
    Records rs;
    const Record *k[8];
    size_t dups = 0;

    start_mock(3);
    create_topic(TOPIC, PARTITIONS);
    s = open_ok();
    rd_kafka_mock_push_request_errors(fx.mock, API_PRODUCE, 6,
                                      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR__TRANSPORT,
                                      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR__TRANSPORT,
                                      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR__TRANSPORT);
    for (int t = 0; t < 20; t++) {
        Lsn end = 0x100000 + (Lsn)t * 0x1000;
        txn_mark(s, CHANGE_BEGIN, end);
        for (int i = 0; i < 10; i++) {
            row(s, CHANGE_INSERT, t * 10 + i, "new", end - 0x100 + (Lsn)i, end);
            row(s, CHANGE_UPDATE, t * 10 + i, "paid", end - 0x80 + (Lsn)i, end);
        }
        txn_mark(s, CHANGE_COMMIT, end);
    }
    drive_to_durable(s, 0x100000 + 19 * 0x1000);
    rs = consume(TOPIC, PARTITIONS, 400);
    ck_assert_uint_ge(rs.n, 400);
    assert_all_ids(&rs, 0, 200);
    for (int id = 0; id < 200; id++) {
        char key[32];
        size_t n;
        snprintf(key, sizeof key, "{\"id\":%d}", id);
        n = records_of_key(&rs, key, k, 8);
        /* At least once, and the insert first: a retried request may land
         * twice (the contract is at-least-once; consumers de-duplicate with
         * the pgfan.commit_lsn/pgfan.lsn headers), but never out of order. */
        ck_assert_uint_ge(n, 2);
        ck_assert_str_eq(k[0]->op, "c");
        for (size_t j = 1; j < n; j++) {
            if (strcmp(k[j]->op, "u") == 0)
                break;
            ck_assert_msg(j + 1 < n, "id %d: no update after the insert", id);
        }
        dups += n - 2;
    }
    fprintf(stderr, "injected produce errors: 400 changes, %zu duplicates\n", dups);
    records_free(&rs);
    ops->close(s);
}
END_TEST

/* A tiny producer queue: QUEUE_FULL is backpressure, not a lost change; order is kept. */
START_TEST(test_queue_full_backpressure)
{
    void *s;
    Records rs;
    const Record *k[64];
    SinkStatus st;

    start_mock(1);
    create_topic(TOPIC, PARTITIONS);
    fx.cfg.kafka.queue_max_messages = 10;
    s = open_ok();
    txn_mark(s, CHANGE_BEGIN, 0x9000);
    for (int i = 0; i < 50; i++) {
        char status[16];
        snprintf(status, sizeof status, "v%02d", i);
        row(s, i == 0 ? CHANGE_INSERT : CHANGE_UPDATE, 7, status, 0x8000 + (Lsn)i, 0x9000);
    }
    txn_mark(s, CHANGE_COMMIT, 0x9000);
    ck_assert(!ops->can_accept(s));
    ops->status(s, &st);
    ck_assert_str_eq(st.state, "backpressure");
    ck_assert_uint_eq(st.queue_depth, 50);
    drive_to_durable(s, 0x9000);
    ck_assert(ops->can_accept(s));
    rs = consume(TOPIC, PARTITIONS, 50);
    ck_assert_uint_eq(records_of_key(&rs, "{\"id\":7}", k, 64), 50);
    for (int i = 0; i < 50; i++) {
        char want[32];
        snprintf(want, sizeof want, "\"status\":\"v%02d\"", i);
        ck_assert_msg(strstr(k[i]->value, want), "record %d out of order: %s", i, k[i]->value);
    }
    records_free(&rs);
    ops->close(s);
}
END_TEST

/* A failed delivery report: fatal, named topic and cause, nothing confirmed after it. */
START_TEST(test_delivery_failure_is_fatal)
{
    void *s;
    PfError err;
    SinkStatus st;

    start_mock(1);
    create_topic(TOPIC, 1);
    s = open_ok();
    insert_txn(s, 1, 1, 0x1000);
    drive_to_durable(s, 0x1000);
    rd_kafka_mock_push_request_errors(fx.mock, API_PRODUCE, 1,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    insert_txn(s, 2, 1, 0x2000);
    err = drive_to_failure(s);
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_str_eq(err.msg, "could not deliver change to Kafka topic \"shop.public.orders\" "
                              "partition 0: Broker: Topic authorization failed");
    ck_assert_str_eq(err.hint, "grant the pgfan principal WRITE on the topic, or route the table "
                               "to another topic with topic.<schema>.<table> in [sink.kafka]");
    ck_assert_uint_eq(ops->durable_lsn(s), 0x1000);
    ck_assert(!ops->can_accept(s));
    ops->status(s, &st);
    ck_assert_str_eq(st.state, "failed");
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_str_eq(st.last_error, err.msg);
    /* later changes are refused with the same error */
    ck_assert(!submit_row_in(s, "orders", CHANGE_INSERT, 3, "x", 0x2F00, 0x3000, &err));
    ck_assert_str_eq(err.msg, st.last_error);
    ops->close(s);
}
END_TEST

/* A fatal producer error (idempotence broken): poll fails with one clear message. */
START_TEST(test_fatal_producer_error)
{
    void *s;
    PfError err;
    Buf want = BUF_INIT;

    start_mock(1);
    create_topic(TOPIC, PARTITIONS);
    s = open_ok();
    insert_txn(s, 1, 3, 0x1000);
    ck_assert_int_eq(rd_kafka_test_fatal_error(kafka_sink_handle_for_tests(s),
                                               RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                               "sequence gap"),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    err = drive_to_failure(s);
    ck_assert_int_eq(err.kind, ERR_FATAL);
    buf_printf(&want, "could not produce to Kafka brokers \"%s\": fatal producer error "
               "OUT_OF_ORDER_SEQUENCE_NUMBER: test_fatal_error: sequence gap",
               fx.cfg.kafka.brokers);
    ck_assert_str_eq(err.msg, want.data);
    ck_assert_str_eq(err.hint, "the idempotent producer cannot continue without risking loss or "
                               "reordering; pgfan stops without confirming undelivered changes");
    ck_assert_uint_lt(ops->durable_lsn(s), 0x1000 + 1);
    buf_free(&want);
    ops->close(s);
}
END_TEST

/* A table whose default topic name Kafka would refuse. */
START_TEST(test_invalid_topic_name)
{
    void *s;
    PfError err;

    start_mock(1);
    s = open_ok();
    txn_mark(s, CHANGE_BEGIN, 0x1000);
    ck_assert(!submit_row_in(s, "Order Items", CHANGE_INSERT, 1, "x", 0xF00, 0x1000, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_str_eq(err.msg, "could not produce to Kafka topic \"shop.public.Order Items\": Kafka "
                              "topic names are 1-249 characters of a-z, A-Z, 0-9, '.', '_' and "
                              "'-'");
    ck_assert_str_eq(err.hint, "name a topic for the table with topic.public.Order Items = <name> "
                               "in [sink.kafka]");
    ops->close(s);
}
END_TEST

static void expect_open_error(ErrKind kind, const char *msg, const char *hint)
{
    PfError err;

    ck_assert_ptr_null(ops->open(&fx.ctx, &err));
    ck_assert_int_eq(err.kind, kind);
    ck_assert_str_eq(err.msg, msg);
    if (hint)
        ck_assert_str_eq(err.hint, hint);
}

START_TEST(test_open_errors)
{
    fx.cfg.kafka.brokers = (char *)"mock:0";
    expect_open_error(ERR_CONFIG,
                      "could not configure the Kafka sink: brokers = \"mock:0\" needs a broker "
                      "count from 1 to 16 after \"mock:\"",
                      "write brokers = mock:3 for an in-process mock cluster of 3 brokers");
    fx.cfg.kafka.brokers = (char *)"mock:x";
    expect_open_error(ERR_CONFIG,
                      "could not configure the Kafka sink: brokers = \"mock:x\" needs a broker "
                      "count from 1 to 16 after \"mock:\"",
                      NULL);
    fx.cfg.kafka.brokers = NULL;
    expect_open_error(ERR_CONFIG, "could not configure the Kafka sink: no brokers configured",
                      "set brokers in [sink.kafka] (host:port,... or mock:3)");

    fx.cfg.kafka.brokers = (char *)"127.0.0.1:1";
    fx.rdk[2] = (ConfigPair){(char *)"bogus.property", (char *)"1"};
    fx.cfg.kafka.librdkafka.n = 3;
    expect_open_error(ERR_CONFIG,
                      "could not configure the Kafka producer: librdkafka.bogus.property: No "
                      "such configuration property: \"bogus.property\"",
                      "fix librdkafka.bogus.property in [sink.kafka]; the properties are listed "
                      "in librdkafka's CONFIGURATION.md");
    /* a secret's value is never echoed */
    fx.rdk[2] = (ConfigPair){(char *)"sasl.oauthbearer.method", (char *)"hunter2"};
    expect_open_error(ERR_CONFIG,
                      "could not configure the Kafka producer: librdkafka.sasl.oauthbearer.method: "
                      "invalid value (not shown: it is a secret)",
                      NULL);
    /* refused by rd_kafka_new: idempotence needs acks=all */
    fx.rdk[2] = (ConfigPair){(char *)"acks", (char *)"1"};
    {
        PfError err;
        ck_assert_ptr_null(ops->open(&fx.ctx, &err));
        ck_assert_int_eq(err.kind, ERR_CONFIG);
        ck_assert_msg(strncmp(err.msg, "could not create the Kafka producer: ", 37) == 0, "%s",
                      err.msg);
        ck_assert_ptr_nonnull(strstr(err.msg, "acks"));
        ck_assert_str_eq(err.hint, "check the librdkafka.* properties in [sink.kafka]");
    }
    fx.cfg.kafka.librdkafka.n = 2;

    fx.topics[0] = (ConfigPair){(char *)"public.orders", (char *)"bad topic"};
    fx.cfg.kafka.topics.items = fx.topics;
    fx.cfg.kafka.topics.n = 1;
    expect_open_error(ERR_CONFIG,
                      "could not configure the Kafka sink: topic.public.orders = \"bad topic\" is "
                      "not a valid Kafka topic name",
                      "Kafka topic names are 1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'");
}
END_TEST

/* brokers = mock:N: a cluster inside the sink, readable at the logged bootstrap address. */
START_TEST(test_mock_brokers)
{
    void *s;
    Records rs;

    fx.cfg.kafka.brokers = (char *)"mock:1";
    s = open_ok();
    ck_assert_ptr_nonnull(kafka_sink_mock_bootstraps(s));
    ck_assert_ptr_nonnull(strstr(kafka_sink_mock_bootstraps(s), "127.0.0.1:"));
    insert_txn(s, 1, 3, 0x1000);
    drive_to_durable(s, 0x1000);
    fx.cfg.kafka.brokers = (char *)kafka_sink_mock_bootstraps(s);
    /* auto-created topics of the mock have 4 partitions */
    rs = consume(TOPIC, 4, 3);
    ck_assert_uint_eq(rs.n, 3);
    assert_all_ids(&rs, 1, 3);
    records_free(&rs);
    ops->close(s);
}
END_TEST

/* flush() never blocks; poll() then drives delivery until durable. */
START_TEST(test_flush_and_close_with_outstanding)
{
    void *s;
    TimeUs t0;

    start_mock(1);
    create_topic(TOPIC, PARTITIONS);
    fx.cfg.kafka.linger = 1000 * MS; /* would hold the batch for a second */
    s = open_ok();
    insert_txn(s, 1, 5, 0x1000);
    t0 = clock_mono_us();
    ops->flush(s);
    ck_assert_int_lt(clock_mono_us() - t0, 200 * MS);
    drive_to_durable(s, 0x1000);
    /* close with records queued behind a downed broker returns promptly */
    ck_assert_int_eq(rd_kafka_mock_broker_set_down(fx.mock, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    insert_txn(s, 10, 5, 0x2000);
    t0 = clock_mono_us();
    ops->close(s);
    ck_assert_int_lt(clock_mono_us() - t0, 5 * SEC);
}
END_TEST

static Suite *kafka_suite(void)
{
    Suite *s = suite_create("kafka_sink");
    TCase *tc;

    tc = tcase_create("tracker");
    tcase_add_test(tc, test_tracker_order);
    tcase_add_test(tc, test_tracker_abandoned_and_growth);
    tcase_add_test(tc, test_tracker_batch_acks);
    suite_add_tcase(s, tc);

    tc = tcase_create("delivery");
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_registered);
    tcase_add_test(tc, test_delivery);
    tcase_add_test(tc, test_topic_override_and_no_tombstones);
    tcase_add_test(tc, test_mock_brokers);
    tcase_add_test(tc, test_flush_and_close_with_outstanding);
    suite_add_tcase(s, tc);

    tc = tcase_create("failures");
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_broker_down);
    tcase_add_test(tc, test_injected_produce_errors);
    tcase_add_test(tc, test_queue_full_backpressure);
    tcase_add_test(tc, test_delivery_failure_is_fatal);
    tcase_add_test(tc, test_fatal_producer_error);
    tcase_add_test(tc, test_invalid_topic_name);
    tcase_add_test(tc, test_open_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(kafka_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
