/*
 * kafka.c - the Kafka sink ([sink.kafka]), on librdkafka.
 *
 * Records: one per INSERT, UPDATE, DELETE and TRUNCATE routed here, to the
 * topic <topic_prefix>.<schema>.<table> (or topic.<schema>.<table> from the
 * config). Key: the primary key as a JSON object (envelope_append_key;
 * null for truncates and for tables without a key). Value: the same
 * envelope as the file sink (envelope.h), so consumers read pgfan topics as
 * they read Debezium's. Headers: pgfan.lsn (the change's own LSN),
 * pgfan.commit_lsn (the end LSN of its transaction's commit), pgfan.xid
 * and pgfan.op (c, u, d, t; r for snapshot rows), LSNs as decimal numbers like source.lsn. A
 * delete is followed by a tombstone (same key, null value) unless
 * tombstones = off, so compacted topics forget deleted rows.
 *
 * Producer: idempotent (enable.idempotence, acks=all, ordered retries),
 * message.timeout.ms=0 (a message is retried until delivered, never timed
 * out and dropped), partitioner murmur2_random (the Java client's hashing:
 * all changes of a key land in one partition, in order). The local queue
 * is bounded (queue_max_messages, queue_max_kbytes): when librdkafka says
 * QUEUE_FULL the message waits in a small overflow FIFO, can_accept()
 * turns false (the pipeline stops reading PostgreSQL) and poll() retries.
 * Once anything waits there, later messages queue behind it: order is kept.
 *
 * Durability (txn_tracker.h): one entry per transaction; every message
 * carries its entry's sequence number as opaque, and its delivery report
 * settles it. The durable position is the end LSN of the last transaction
 * that is committed and fully delivered, with every earlier one (a
 * transaction with no message for this sink is durable as soon as the ones
 * before it are). A failed delivery report is fatal: nothing after it is
 * confirmed. Producer settings are in kafka_conf.c.
 *
 * One thread: delivery reports, errors and librdkafka's logs are served on
 * this thread by rd_kafka_poll(). The main queue wakes the loop through a
 * non-blocking eventfd (rd_kafka_queue_io_event_enable); poll() also calls
 * rd_kafka_poll and asks to be called again within a second while
 * messages are outstanding (librdkafka writes one wake-up per non-polling
 * period only, protocol-notes 3.4).
 *
 * brokers = mock:N starts librdkafka's mock cluster in this process (for
 * demos and tests; the data lives as long as pgfan does) and logs its
 * bootstrap address so kcat can read the topics.
 */
#include "sink.h"

#include "../common/log.h"
#include "../common/mem.h"
#include "../common/loop.h"
#include "envelope.h"
#include "kafka_conf.h"
#include "kafka_test.h"
#include "txn_tracker.h"

#include <errno.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LOG_COMPONENT "sink.kafka"

/* Safety net besides the eventfd, while messages are outstanding. */
#define POLL_INTERVAL USECS_PER_SEC
/* Retry of the overflow when no delivery report wakes us first. */
#define OVERFLOW_RETRY (100 * USECS_PER_MSEC)
/* A transient error this long ago with nothing outstanding: no longer "retrying". */
#define RETRYING_QUIET (5 * USECS_PER_SEC)
/* Delivery reports served per poll() call before yielding to the loop. */
#define POLL_BATCH 10000

/* Where the changes of one table go; the rkt is created on first use. */
typedef struct Route {
    char *table; /* "schema.table" as in the catalog */
    char *topic;
    rd_kafka_topic_t *rkt;
} Route;

/* One record. key/value are borrowed (or owned in the overflow). */
typedef struct Msg {
    size_t route;
    char *key; /* NULL: null key */
    size_t key_len;
    char *value; /* NULL: tombstone */
    size_t value_len;
    uint64_t seq; /* the TxnEntry */
    char lsn[24];
    char commit_lsn[24];
    char xid[16];
    char op[2];
} Msg;

typedef struct KafkaSink {
    const SourceInfo *source;
    Loop *loop;
    char *brokers;      /* as configured ("mock:3" or a list) */
    char *prefix;
    bool tombstones;

    rd_kafka_t *rk;
    rd_kafka_queue_t *main_queue;
    int efd;

    rd_kafka_t *mock_rk; /* host handle of the mock cluster */
    rd_kafka_mock_cluster_t *mock;
    char *mock_bootstraps;

    const ConfigMap *overrides; /* topic.<schema>.<table>, borrowed from the Config */
    Route *routes;
    size_t n_routes;
    size_t last_route;

    TxnTracker txns; /* durability: one entry per transaction, opaque = its sequence number */

    /* messages librdkafka refused with QUEUE_FULL, oldest first (owned key/value) */
    Msg *overflow;
    size_t ov_cap, ov_head, ov_len;

    Buf key;   /* scratch for one change */
    Buf value;

    bool failed;
    PfError fatal;
    bool closing;
    bool retrying;
    TimeUs last_transient; /* monotonic time of the last transient error */

    uint64_t in_flight;     /* produced, no delivery report yet */
    uint64_t in_flight_bytes;
    uint64_t overflow_bytes;
    uint64_t events;        /* row events accepted */
    uint64_t delivered;     /* records with a successful delivery report */
    uint64_t bytes;         /* key + value bytes delivered */
    uint64_t retries;
    uint64_t errors;
    char last_error[256];
} KafkaSink;

/* Errors ------------------------------------------------------------------- */

/* Keeps msg as last_error; transient errors count as retries, not errors. */
static void record_error(KafkaSink *s, const char *msg, bool transient)
{
    size_t n = strnlen(msg, sizeof s->last_error - 1);

    if (transient)
        s->retries++;
    else
        s->errors++;
    memcpy(s->last_error, msg, n);
    s->last_error[n] = '\0';
}

/* The first fatal error wins: later ones are consequences. */
static void fail(KafkaSink *s, const PfError *err)
{
    if (s->failed)
        return;
    record_error(s, err->msg, false);
    s->failed = true;
    s->fatal = *err;
    log_error_value(LOG_COMPONENT, err);
}

/* The durable position stops at the first failure: nothing after it is confirmed. */
static void advance(KafkaSink *s)
{
    if (!s->failed)
        txn_tracker_advance(&s->txns);
}

/* librdkafka callbacks (run inside rd_kafka_poll, on our thread) ------------ */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    KafkaSink *s = opaque;
    uint64_t seq = (uint64_t)(uintptr_t)m->_private;
    size_t len = m->len + m->key_len;
    PfError err;

    (void)rk;
    if (s->closing)
        return; /* purged at close: nothing is confirmed any more */
    txn_tracker_acked(&s->txns, seq);
    s->in_flight--;
    s->in_flight_bytes -= len;
    if (m->err) {
        err_set(&err, ERR_FATAL, "could not deliver change to Kafka topic \"%s\" partition %d: %s",
                rd_kafka_topic_name(m->rkt), (int)m->partition, rd_kafka_err2str(m->err));
        if (m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
            err_hint(&err, "grant the pgfan principal WRITE on the topic, or route the table to "
                           "another topic with topic.<schema>.<table> in [sink.kafka]");
        else if (m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
            err_hint(&err, "raise the topic's max.message.bytes and "
                           "librdkafka.message.max.bytes in [sink.kafka]");
        else
            err_hint(&err, "pgfan stops without confirming it; fix the cause and restart: the "
                           "unconfirmed changes are sent again");
        fail(s, &err);
        return;
    }
    s->delivered++;
    s->bytes += len;
    if (s->retrying) {
        log_info(LOG_COMPONENT, "delivering to Kafka again");
        s->retrying = false;
    }
}

static void on_error(rd_kafka_t *rk, int code, const char *reason, void *opaque)
{
    KafkaSink *s = opaque;
    rd_kafka_resp_err_t e = (rd_kafka_resp_err_t)code;
    PfError err;

    if (s->closing)
        return;
    switch (e) {
    case RD_KAFKA_RESP_ERR__FATAL: {
        char why[512];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof why);

        err_set(&err, ERR_FATAL, "could not produce to Kafka brokers \"%s\": fatal producer "
                "error %s: %s", s->brokers, rd_kafka_err2name(orig), why);
        err_hint(&err, "the idempotent producer cannot continue without risking loss or "
                       "reordering; pgfan stops without confirming undelivered changes");
        fail(s, &err);
        return;
    }
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
        err_set(&err, ERR_FATAL, "could not authenticate with Kafka brokers \"%s\": %s",
                s->brokers, reason);
        err_hint(&err, "check librdkafka.security.protocol, librdkafka.sasl.* and "
                       "librdkafka.ssl.* in [sink.kafka]");
        fail(s, &err);
        return;
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        err_set(&err, ERR_FATAL, "could not produce to Kafka brokers \"%s\": not authorized: %s",
                s->brokers, reason);
        err_hint(&err, "grant the pgfan principal WRITE on its topics and IDEMPOTENT_WRITE on "
                       "the cluster");
        fail(s, &err);
        return;
    default:
        break;
    }
    /* Everything else is retried by librdkafka itself, forever. */
    s->last_transient = clock_mono_us();
    record_error(s, reason, true);
    if (e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || e == RD_KAFKA_RESP_ERR__RESOLVE ||
        (s->in_flight > 0 && e == RD_KAFKA_RESP_ERR__TRANSPORT)) {
        if (!s->retrying)
            log_warning(LOG_COMPONENT, "could not reach Kafka brokers \"%s\": %s; retrying "
                        "(nothing is lost; %llu records wait)", s->brokers, reason,
                        (unsigned long long)(s->in_flight + s->ov_len));
        s->retrying = true;
    } else {
        log_debug(LOG_COMPONENT, "librdkafka: %s: %s", rd_kafka_err2name(e), reason);
    }
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* syslog levels; librdkafka's notices about connections are noise at info */
    if (level <= 3)
        log_warning(LOG_COMPONENT, "librdkafka %s: %s", fac, buf);
    else
        log_debug(LOG_COMPONENT, "librdkafka %s: %s", fac, buf);
}

/* Serves delivery reports, errors and logs waiting on the main queue. */
static void serve(KafkaSink *s)
{
    for (int i = 0; i < POLL_BATCH; i++) {
        if (rd_kafka_poll(s->rk, 0) <= 0)
            break;
    }
}

static void on_eventfd(void *arg, int fd, unsigned events)
{
    KafkaSink *s = arg;
    uint64_t n;

    (void)events;
    /* Read first: a wake-up written while we poll must not be lost. */
    while (read(fd, &n, sizeof n) > 0) {
    }
    serve(s);
    advance(s);
}

/* Producing ------------------------------------------------------------------ */


/* The route of change's table, created (with its topic handle) on first use. */
static bool find_route(KafkaSink *s, const Change *c, size_t *out, PfError *err)
{
    Route *r;
    Buf table = BUF_INIT;
    const char *topic;

    if (s->n_routes > 0) {
        r = &s->routes[s->last_route];
        if (strlen(r->table) == c->schema.len + 1 + c->table.len &&
            memcmp(r->table, c->schema.ptr, c->schema.len) == 0 &&
            memcmp(r->table + c->schema.len + 1, c->table.ptr, c->table.len) == 0) {
            *out = s->last_route;
            return true;
        }
    }
    buf_append(&table, c->schema.ptr, c->schema.len);
    buf_append_char(&table, '.');
    buf_append(&table, c->table.ptr, c->table.len);
    for (size_t i = 0; i < s->n_routes; i++) {
        if (strcmp(s->routes[i].table, table.data) == 0) {
            buf_free(&table);
            *out = s->last_route = i;
            return true;
        }
    }
    topic = config_map_get(s->overrides, table.data);
    s->routes = xrealloc(s->routes, (s->n_routes + 1) * sizeof *s->routes);
    r = &s->routes[s->n_routes];
    r->table = table.data;
    if (topic) {
        r->topic = xstrdup(topic);
    } else {
        Buf name = BUF_INIT;
        buf_printf(&name, "%s.%s", s->prefix, table.data);
        r->topic = name.data;
    }
    r->rkt = NULL;
    s->n_routes++;
    if (!kafka_topic_name_valid(r->topic)) {
        err_set(err, ERR_FATAL, "could not produce to Kafka topic \"%s\": Kafka topic names are "
                "1-249 characters of a-z, A-Z, 0-9, '.', '_' and '-'", r->topic);
        err_hint(err, "name a topic for the table with topic.%s = <name> in [sink.kafka]",
                 r->table);
        return false;
    }
    r->rkt = rd_kafka_topic_new(s->rk, r->topic, NULL);
    if (r->rkt == NULL) {
        err_set(err, ERR_FATAL, "could not produce to Kafka topic \"%s\": %s", r->topic,
                rd_kafka_err2str(rd_kafka_last_error()));
        return false;
    }
    *out = s->last_route = s->n_routes - 1;
    return true;
}

static rd_kafka_resp_err_t produce(KafkaSink *s, const Msg *m)
{
    rd_kafka_resp_err_t e;

    e = rd_kafka_producev(s->rk, RD_KAFKA_V_RKT(s->routes[m->route].rkt),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_KEY(m->key, m->key_len),
                          RD_KAFKA_V_VALUE(m->value, m->value_len),
                          RD_KAFKA_V_HEADER("pgfan.lsn", m->lsn, -1),
                          RD_KAFKA_V_HEADER("pgfan.commit_lsn", m->commit_lsn, -1),
                          RD_KAFKA_V_HEADER("pgfan.xid", m->xid, -1),
                          RD_KAFKA_V_HEADER("pgfan.op", m->op, -1),
                          RD_KAFKA_V_OPAQUE((void *)(uintptr_t)m->seq), RD_KAFKA_V_END);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        s->in_flight++;
        s->in_flight_bytes += m->key_len + m->value_len;
    }
    return e;
}

static bool produce_error(KafkaSink *s, const Msg *m, rd_kafka_resp_err_t e, PfError *err)
{
    err_set(err, ERR_FATAL, "could not produce to Kafka topic \"%s\": %s",
            s->routes[m->route].topic, rd_kafka_err2str(e));
    if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
        err_hint(err, "the change is %zu bytes; raise librdkafka.message.max.bytes in "
                      "[sink.kafka] (and the topic's max.message.bytes)",
                 m->key_len + m->value_len);
    fail(s, err);
    return false;
}

static char *dup_bytes(const char *p, size_t len)
{
    char *copy = xmalloc(len ? len : 1);

    memcpy(copy, p, len);
    return copy;
}

/* The overflow owns copies: the scratch buffers are reused by the next change. */
static void overflow_push(KafkaSink *s, const Msg *m)
{
    Msg *o;

    if (s->ov_len == s->ov_cap) {
        size_t cap = s->ov_cap ? s->ov_cap * 2 : 8;
        Msg *n = xcalloc(cap, sizeof *n);

        for (size_t i = 0; i < s->ov_len; i++)
            n[i] = s->overflow[(s->ov_head + i) % s->ov_cap];
        free(s->overflow);
        s->overflow = n;
        s->ov_cap = cap;
        s->ov_head = 0;
    }
    o = &s->overflow[(s->ov_head + s->ov_len) % s->ov_cap];
    *o = *m;
    o->key = m->key ? dup_bytes(m->key, m->key_len) : NULL;
    o->value = m->value ? dup_bytes(m->value, m->value_len) : NULL;
    s->ov_len++;
    s->overflow_bytes += m->key_len + m->value_len;
}

static void overflow_pop(KafkaSink *s)
{
    Msg *o = &s->overflow[s->ov_head];

    s->overflow_bytes -= o->key_len + o->value_len;
    free(o->key);
    free(o->value);
    s->ov_head = (s->ov_head + 1) % s->ov_cap;
    s->ov_len--;
}

/* Produces the waiting messages in order until the queue is full again. */
static bool retry_overflow(KafkaSink *s, PfError *err)
{
    while (s->ov_len > 0) {
        Msg *o = &s->overflow[s->ov_head];
        rd_kafka_resp_err_t e = produce(s, o);

        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return true;
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            return produce_error(s, o, e, err);
        overflow_pop(s);
    }
    return true;
}

/*
 * Produces m, or keeps it in the overflow behind earlier ones. Either way
 * its transaction now waits for its delivery report.
 */
static bool send_msg(KafkaSink *s, const Msg *m, PfError *err)
{
    rd_kafka_resp_err_t e;

    txn_tracker_sent(&s->txns, m->seq);
    if (s->ov_len == 0) {
        e = produce(s, m);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            return true;
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return produce_error(s, m, e, err);
        log_debug(LOG_COMPONENT, "producer queue full (%d records): backpressure",
                  rd_kafka_outq_len(s->rk));
    }
    overflow_push(s, m);
    return true;
}

static const char *op_of(ChangeKind kind)
{
    switch (kind) {
    case CHANGE_INSERT:
        return "c";
    case CHANGE_UPDATE:
        return "u";
    case CHANGE_DELETE:
        return "d";
    default:
        return "t";
    }
}

static bool submit_row(KafkaSink *s, const Change *c, PfError *err)
{
    Msg m;

    memset(&m, 0, sizeof m);
    if (!find_route(s, c, &m.route, err)) {
        fail(s, err);
        return false;
    }
    m.seq = txn_tracker_current(&s->txns);
    buf_reset(&s->key);
    buf_reset(&s->value);
    if (c->kind != CHANGE_TRUNCATE && envelope_append_key(&s->key, c)) {
        m.key = s->key.data;
        m.key_len = s->key.len;
    }
    envelope_append(&s->value, c, s->source, clock_wall_us());
    m.value = s->value.data;
    m.value_len = s->value.len;
    snprintf(m.lsn, sizeof m.lsn, "%llu", (unsigned long long)c->lsn);
    snprintf(m.commit_lsn, sizeof m.commit_lsn, "%llu", (unsigned long long)c->end_lsn);
    if (c->has_xid)
        snprintf(m.xid, sizeof m.xid, "%u", c->xid);
    /* an initial snapshot row is Debezium's "r" (read), as in the envelope */
    memcpy(m.op, c->snapshot && c->kind == CHANGE_INSERT ? "r" : op_of(c->kind), 2);
    s->events++;
    if (!send_msg(s, &m, err))
        return false;
    if (c->kind == CHANGE_DELETE && s->tombstones && m.key) {
        m.value = NULL;
        m.value_len = 0;
        return send_msg(s, &m, err);
    }
    return true;
}

/* Open ------------------------------------------------------------------------ */



static bool start_mock(KafkaSink *s, int count, PfError *err)
{
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    /* its own logs would come from internal threads: only errors, on stderr */
    rd_kafka_conf_set(conf, "log_level", "3", why, sizeof why);
    s->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (s->mock_rk == NULL) {
        rd_kafka_conf_destroy(conf);
        return err_set(err, ERR_FATAL, "could not start the mock Kafka cluster: %s", why);
    }
    s->mock = rd_kafka_mock_cluster_new(s->mock_rk, count);
    if (s->mock == NULL)
        return err_set(err, ERR_FATAL, "could not start the mock Kafka cluster: "
                       "rd_kafka_mock_cluster_new failed");
    s->mock_bootstraps = xstrdup(rd_kafka_mock_cluster_bootstraps(s->mock));
    log_info(LOG_COMPONENT, "mock Kafka cluster of %d broker%s listening on %s (in this process: "
             "its data is lost when pgfan stops); read it with: kcat -b %s -C -t <topic>",
             count, count == 1 ? "" : "s", s->mock_bootstraps, s->mock_bootstraps);
    return true;
}


static void kafka_close(void *self);

static void *kafka_open(const SinkContext *ctx, PfError *err)
{
    const Config *cfg = ctx->config;
    KafkaSink *s;
    rd_kafka_conf_t *conf;
    char why[512];
    int mock_count = 0;
    uint64_t one = 1;

    if (!cfg->kafka.brokers || !cfg->kafka.brokers[0]) {
        err_set(err, ERR_CONFIG, "could not configure the Kafka sink: no brokers configured");
        err_hint(err, "set brokers in [sink.kafka] (host:port,... or mock:3)");
        return NULL;
    }
    for (size_t i = 0; i < cfg->kafka.topics.n; i++) {
        if (!kafka_topic_name_valid(cfg->kafka.topics.items[i].value)) {
            err_set(err, ERR_CONFIG, "could not configure the Kafka sink: topic.%s = \"%s\" is "
                    "not a valid Kafka topic name", cfg->kafka.topics.items[i].key,
                    cfg->kafka.topics.items[i].value);
            err_hint(err, "Kafka topic names are 1-249 characters of a-z, A-Z, 0-9, '.', '_' "
                          "and '-'");
            return NULL;
        }
    }
    if (!kafka_conf_mock_count(cfg->kafka.brokers, &mock_count, err))
        return NULL;

    s = xcalloc(1, sizeof *s);
    s->efd = -1;
    s->source = ctx->source;
    s->loop = ctx->loop;
    s->brokers = xstrdup(cfg->kafka.brokers);
    s->prefix = xstrdup(cfg->kafka.topic_prefix && cfg->kafka.topic_prefix[0]
                            ? cfg->kafka.topic_prefix
                            : cfg->source.name ? cfg->source.name : "pgfan");
    s->tombstones = cfg->kafka.tombstones;
    s->overrides = &cfg->kafka.topics;
    buf_init(&s->key);
    buf_init(&s->value);
    txn_tracker_init(&s->txns);

    if (mock_count > 0 && !start_mock(s, mock_count, err)) {
        kafka_close(s);
        return NULL;
    }
    conf = rd_kafka_conf_new();
    if (!kafka_conf_apply(conf, cfg, s->mock_bootstraps ? s->mock_bootstraps : s->brokers,
                          err)) {
        rd_kafka_conf_destroy(conf);
        kafka_close(s);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, s);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    s->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (s->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        err_set(err, ERR_CONFIG, "could not create the Kafka producer: %s", why);
        err_hint(err, "check the librdkafka.* properties in [sink.kafka]");
        kafka_close(s);
        return NULL;
    }
    /* logs on the main queue: served by rd_kafka_poll on this thread */
    rd_kafka_set_log_queue(s->rk, NULL);
    s->main_queue = rd_kafka_queue_get_main(s->rk);
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        err_set(err, ERR_FATAL, "could not create an eventfd for the Kafka producer: %s",
                strerror(errno));
        kafka_close(s);
        return NULL;
    }
    rd_kafka_queue_io_event_enable(s->main_queue, s->efd, &one, sizeof one);
    if (s->loop && !loop_watch(s->loop, s->efd, LOOP_READ, on_eventfd, s)) {
        err_set(err, ERR_FATAL, "could not watch the Kafka producer's eventfd: %s",
                strerror(errno));
        kafka_close(s);
        return NULL;
    }
    log_info(LOG_COMPONENT, "producing to %s%s%s, topics %s.<schema>.<table>, compression %s",
             s->mock_bootstraps ? "the mock cluster at " : "brokers ",
             s->mock_bootstraps ? s->mock_bootstraps : s->brokers, "", s->prefix,
             kafka_compression_name(cfg->kafka.compression));
    return s;
}

/* Operations ----------------------------------------------------------------- */

static bool kafka_submit(void *self, const Change *change, PfError *err)
{
    KafkaSink *s = self;

    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    switch (change->kind) {
    case CHANGE_BEGIN:
        /* an open one was abandoned after a lost connection: it comes again in full */
        txn_tracker_begin(&s->txns);
        return true;
    case CHANGE_INSERT:
    case CHANGE_UPDATE:
    case CHANGE_DELETE:
    case CHANGE_TRUNCATE:
        return submit_row(s, change, err);
    case CHANGE_COMMIT:
        txn_tracker_commit(&s->txns, change->end_lsn);
        advance(s);
        return true;
    case CHANGE_MESSAGE:
        return true;
    }
    return true;
}

static Lsn kafka_durable_lsn(const void *self)
{
    const KafkaSink *s = self;

    return s->txns.durable;
}

static bool kafka_can_accept(const void *self)
{
    const KafkaSink *s = self;

    return !s->failed && s->ov_len == 0;
}

static bool kafka_poll(void *self, TimeUs now, TimeUs *next_deadline, PfError *err)
{
    KafkaSink *s = self;

    *next_deadline = TIME_NEVER;
    if (!s->failed)
        serve(s);
    if (!s->failed && !retry_overflow(s, err))
        return false;
    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    advance(s);
    if (s->retrying && s->in_flight == 0 && s->ov_len == 0 &&
        now - s->last_transient >= RETRYING_QUIET)
        s->retrying = false;
    if (s->ov_len > 0)
        *next_deadline = now + OVERFLOW_RETRY;
    else if (s->in_flight > 0 || s->retrying)
        *next_deadline = now + POLL_INTERVAL;
    return true;
}

static void kafka_flush(void *self)
{
    KafkaSink *s = self;
    PfError err;

    if (s->failed)
        return;
    /* timeout 0: wakes the brokers to send lingering batches now and serves
     * what is ready, without blocking; poll() does the rest */
    rd_kafka_flush(s->rk, 0);
    if (retry_overflow(s, &err))
        advance(s);
}

static void kafka_status(const void *self, SinkStatus *out)
{
    const KafkaSink *s = self;

    memset(out, 0, sizeof *out);
    if (s->failed)
        out->state = "failed";
    else if (s->retrying)
        out->state = "retrying";
    else if (s->ov_len > 0)
        out->state = "backpressure";
    else
        out->state = "ok";
    out->durable_lsn = s->txns.durable;
    out->queue_depth = (uint64_t)(s->rk ? rd_kafka_outq_len(s->rk) : 0) + s->ov_len;
    out->queued_bytes = s->in_flight_bytes + s->overflow_bytes;
    out->events = s->events;
    out->bytes = s->bytes;
    out->retries = s->retries;
    out->errors = s->errors;
    snprintf(out->last_error, sizeof out->last_error, "%s", s->last_error);
}

static void kafka_close(void *self)
{
    KafkaSink *s = self;

    if (!s)
        return;
    s->closing = true;
    if (s->rk) {
        /* drop what is queued or in flight (never confirmed: it is replayed),
         * so destroy does not wait for it */
        rd_kafka_purge(s->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT |
                                  RD_KAFKA_PURGE_F_NON_BLOCKING);
        serve(s);
    }
    if (s->efd >= 0) {
        if (s->loop)
            loop_unwatch(s->loop, s->efd);
        if (s->main_queue)
            rd_kafka_queue_io_event_enable(s->main_queue, -1, NULL, 0);
        close(s->efd);
    }
    if (s->main_queue)
        rd_kafka_queue_destroy(s->main_queue);
    for (size_t i = 0; i < s->n_routes; i++) {
        if (s->routes[i].rkt)
            rd_kafka_topic_destroy(s->routes[i].rkt);
        free(s->routes[i].table);
        free(s->routes[i].topic);
    }
    free(s->routes);
    if (s->rk)
        rd_kafka_destroy(s->rk);
    if (s->mock)
        rd_kafka_mock_cluster_destroy(s->mock);
    if (s->mock_rk)
        rd_kafka_destroy(s->mock_rk);
    while (s->ov_len > 0)
        overflow_pop(s);
    free(s->overflow);
    txn_tracker_free(&s->txns);
    buf_free(&s->key);
    buf_free(&s->value);
    free(s->mock_bootstraps);
    free(s->brokers);
    free(s->prefix);
    free(s);
}

/* Test seam ---------------------------------------------------------------- */

rd_kafka_t *kafka_sink_handle_for_tests(void *self)
{
    KafkaSink *s = self;

    return s->rk;
}

const char *kafka_sink_mock_bootstraps(const void *self)
{
    const KafkaSink *s = self;

    return s->mock_bootstraps;
}

const SinkOps sink_kafka_ops = {
    .name = "kafka",
    .open = kafka_open,
    .submit = kafka_submit,
    .durable_lsn = kafka_durable_lsn,
    .can_accept = kafka_can_accept,
    .poll = kafka_poll,
    .flush = kafka_flush,
    .status = kafka_status,
    .close = kafka_close,
};
