/*
 * test_webhook_sink.c - the HTTP webhook sink against a real HTTP server.
 *
 * Each test runs the sink through its SinkOps in a real Loop (libcurl's
 * sockets in epoll, the sink's poll() as the loop's hook) and points it at
 * tests/harness/http_receiver, a real HTTP/1.1 server in a thread of this
 * test, scripted per test (500s, 429 + Retry-After, 400, delays, dropped
 * connections). Nothing sleeps: the test turns the loop until a condition
 * holds or a deadline passes; time differences are read from the
 * receiver's timestamps.
 */
#include "../../common/buf.h"
#include "../../common/clock.h"
#include "../../common/log.h"
#include "../../common/loop.h"
#include "../../sinks/sink.h"
#include "../harness/http_receiver.h"

#include <check.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define JSMN_STATIC
#include <jsmn.h>

#define S(lit)                                                                                     \
    {                                                                                              \
        (lit), sizeof(lit) - 1                                                                     \
    }
#define MS USECS_PER_MSEC
#define WAIT_MS 20000

extern const SinkOps sink_webhook_ops;

static const SinkOps *ops = &sink_webhook_ops;

typedef struct Fixture {
    char dir[64];
    char dead[128];
    Config cfg;
    SourceInfo src;
    SinkContext ctx;
    Loop *loop;
    HttpReceiver *rx;
    char *url;
    void *sink;
    bool poll_failed;
    PfError poll_err;
} Fixture;

static Fixture fx;

static TimeUs sink_hook(void *arg, TimeUs now)
{
    TimeUs next = TIME_NEVER;

    (void)arg;
    if (!fx.sink || fx.poll_failed)
        return TIME_NEVER;
    err_clear(&fx.poll_err);
    if (!ops->poll(fx.sink, now, &next, &fx.poll_err))
        fx.poll_failed = true;
    return next;
}

static void fixture_setup(void)
{
    memset(&fx, 0, sizeof fx);
    log_set_level(LOG_LEVEL_ERROR);
    strcpy(fx.dir, "/tmp/pgfan-webhook-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(fx.dir));
    snprintf(fx.dead, sizeof fx.dead, "%s/dead.ndjson", fx.dir);
    fx.rx = http_receiver_start();
    fx.url = http_receiver_url(fx.rx, "/hook");
    fx.cfg.webhook.enabled = true;
    fx.cfg.webhook.url = fx.url;
    fx.cfg.webhook.batch_size = 3;
    fx.cfg.webhook.max_in_flight = 1;
    fx.cfg.webhook.timeout = 5 * USECS_PER_SEC;
    fx.cfg.webhook.batch_linger = 20 * MS;
    fx.cfg.webhook.dead_letter = fx.dead;
    fx.cfg.webhook.user_agent = (char *)"pgfan/test";
    strcpy(fx.src.dbname, "shop");
    strcpy(fx.src.name, "shop");
    fx.loop = loop_new();
    ck_assert_ptr_nonnull(fx.loop);
    loop_add_hook(fx.loop, sink_hook, NULL);
    fx.ctx.config = &fx.cfg;
    fx.ctx.source = &fx.src;
    fx.ctx.loop = fx.loop;
}

static void fixture_teardown(void)
{
    char cmd[160];

    if (fx.sink)
        ops->close(fx.sink);
    loop_free(fx.loop);
    http_receiver_stop(fx.rx);
    free(fx.url);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx.dir);
    ck_assert_int_eq(system(cmd), 0);
}

static void open_sink(void)
{
    PfError err;

    err_clear(&err);
    fx.sink = ops->open(&fx.ctx, &err);
    ck_assert_msg(fx.sink != NULL, "open failed: %s", err.msg);
}

/* Turns the loop until pred() holds; false after timeout_ms. */
static bool run_until(bool (*pred)(void *), void *arg, int timeout_ms)
{
    struct timespec ts;
    int64_t deadline;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    deadline = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
    while (!pred(arg)) {
        ck_assert_msg(!fx.poll_failed, "poll failed: %s", fx.poll_err.msg);
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 > deadline)
            return pred(arg);
        ck_assert(loop_run_once(fx.loop, clock_mono_us() + 50 * MS));
    }
    return true;
}

static bool durable_at(void *arg)
{
    return ops->durable_lsn(fx.sink) >= *(Lsn *)arg;
}

static void wait_durable(Lsn lsn)
{
    char a[LSN_TEXT_SIZE];

    ck_assert_msg(run_until(durable_at, &lsn, WAIT_MS), "durable_lsn never reached %s",
                  lsn_format(lsn, a));
}

static bool rx_has(void *arg)
{
    return http_receiver_count(fx.rx) >= *(size_t *)arg;
}

static bool accepting(void *arg)
{
    (void)arg;
    return ops->can_accept(fx.sink);
}

/* Changes -------------------------------------------------------------------- */

static const Str pk_id[] = {S("id")};

/* One row change of public.<table>(id, v); strings live in static storage
 * (a Change is borrowed only for the submit call). */
static void submit_row(ChangeKind kind, const char *table, int id, int v, Lsn lsn, Lsn end_lsn)
{
    static char id_text[32], v_text[32];
    static Column cols[2];
    Change c;
    PfError err;

    snprintf(id_text, sizeof id_text, "%d", id);
    snprintf(v_text, sizeof v_text, "%d", v);
    cols[0] = (Column){S("id"), S("bigint"), TYPE_INT, {VALUE_NUMBER, {id_text, strlen(id_text)}}};
    cols[1] = (Column){S("v"), S("integer"), TYPE_INT, {VALUE_NUMBER, {v_text, strlen(v_text)}}};
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lsn = lsn;
    c.end_lsn = end_lsn;
    c.has_xid = true;
    c.xid = 731;
    c.schema = (Str)S("public");
    c.table = (Str){table, strlen(table)};
    c.pk = pk_id;
    c.n_pk = 1;
    if (kind != CHANGE_DELETE) {
        c.new_cols = cols;
        c.n_new = 2;
    }
    if (kind != CHANGE_INSERT) {
        c.old_cols = cols;
        c.n_old = 1;
    }
    err_clear(&err);
    ck_assert_msg(ops->submit(fx.sink, &c, &err), "submit failed: %s", err.msg);
}

static void submit_mark(ChangeKind kind, Lsn end_lsn)
{
    Change c;
    PfError err;

    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lsn = end_lsn - 0x10;
    c.end_lsn = end_lsn;
    err_clear(&err);
    ck_assert_msg(ops->submit(fx.sink, &c, &err), "submit failed: %s", err.msg);
}

/* BEGIN, n inserts of ids first_id.., COMMIT; row i has lsn end_lsn - 0x100 + i. */
static void submit_txn(Lsn end_lsn, int first_id, int n)
{
    submit_mark(CHANGE_BEGIN, end_lsn);
    for (int i = 0; i < n; i++)
        submit_row(CHANGE_INSERT, "orders", first_id + i, 1, end_lsn - 0x100 + (Lsn)i, end_lsn);
    submit_mark(CHANGE_COMMIT, end_lsn);
}

/* Checks body is a JSON array of n objects; returns n. */
static int json_array_len(const char *body, size_t len)
{
    jsmn_parser p;
    jsmntok_t toks[4096];
    int r;

    jsmn_init(&p);
    r = jsmn_parse(&p, body, len, toks, sizeof toks / sizeof toks[0]);
    ck_assert_msg(r > 0, "body is not JSON (%d): %s", r, body);
    ck_assert_msg(toks[0].type == JSMN_ARRAY && toks[0].end == (int)len, "not one array: %s", body);
    return toks[0].size;
}

/* The ids of the "after" rows of a body, in order (at most max). */
static size_t body_ids(const char *body, int *ids, int *vs, size_t max)
{
    size_t n = 0;

    for (const char *p = strstr(body, "\"after\":{\"id\":"); p && n < max;
         p = strstr(p + 1, "\"after\":{\"id\":")) {
        ids[n] = atoi(p + strlen("\"after\":{\"id\":"));
        if (vs)
            vs[n] = atoi(strstr(p, "\"v\":") + 4);
        n++;
    }
    return n;
}

/* Tests ------------------------------------------------------------------------ */

START_TEST(test_batches_and_headers)
{
    size_t n;
    HttpRequest *reqs;
    int ids[16];
    char *h;
    ConfigPair extra[] = {{(char *)"X-Api-Key", (char *)"abc123"}};

    fx.cfg.webhook.headers.items = extra;
    fx.cfg.webhook.headers.n = 1;
    open_sink();
    ck_assert_uint_eq(ops->durable_lsn(fx.sink), LSN_INVALID);
    submit_txn(0x1000, 1, 4);
    submit_txn(0x2000, 5, 3);
    wait_durable(0x2000);

    reqs = http_receiver_requests(fx.rx, &n);
    ck_assert_uint_eq(n, 3);
    /* 3 + 3 full batches (spanning the two transactions), then the last
     * one after batch_linger */
    ck_assert_int_eq(json_array_len(reqs[0].body, reqs[0].body_len), 3);
    ck_assert_int_eq(json_array_len(reqs[1].body, reqs[1].body_len), 3);
    ck_assert_int_eq(json_array_len(reqs[2].body, reqs[2].body_len), 1);
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(body_ids(reqs[i].body, ids, NULL, 16), i < 2 ? 3 : 1);
        for (size_t j = 0; j < (i < 2 ? 3u : 1u); j++)
            ck_assert_int_eq(ids[j], (int)(i * 3 + j + 1));
        ck_assert_str_eq(reqs[i].method, "POST");
        ck_assert_str_eq(reqs[i].target, "/hook");
    }
    ck_assert_ptr_nonnull(strstr(reqs[0].body, "\"op\":\"c\""));
    ck_assert_ptr_nonnull(strstr(reqs[0].body, "\"schema\":\"public\",\"table\":\"orders\""));
    ck_assert_ptr_nonnull(strstr(reqs[0].body, "\"commit_lsn\":4096"));
    h = http_request_header(&reqs[0], "Content-Type");
    ck_assert_str_eq(h, "application/json");
    free(h);
    h = http_request_header(&reqs[0], "User-Agent");
    ck_assert_str_eq(h, "pgfan/test");
    free(h);
    h = http_request_header(&reqs[0], "X-Api-Key");
    ck_assert_str_eq(h, "abc123");
    free(h);
    /* first commit_lsn - first lsn - last lsn of each batch */
    h = http_request_header(&reqs[0], "Idempotency-Key");
    ck_assert_str_eq(h, "0/1000-0/F00-0/F02");
    free(h);
    h = http_request_header(&reqs[1], "Idempotency-Key");
    ck_assert_str_eq(h, "0/1000-0/F03-0/1F01");
    free(h);
    h = http_request_header(&reqs[0], "X-Pgfan-Signature");
    ck_assert_ptr_null(h);
    http_requests_free(reqs, n);
}
END_TEST

START_TEST(test_durable_only_after_2xx)
{
    HttpReply slow = {.status = 200, .delay_ms = 300};
    size_t one = 1;
    SinkStatus st;

    http_receiver_script(fx.rx, &slow, 1);
    open_sink();
    submit_txn(0x1000, 1, 3);
    ck_assert(run_until(rx_has, &one, WAIT_MS));
    ck_assert_uint_eq(ops->durable_lsn(fx.sink), LSN_INVALID);
    ops->status(fx.sink, &st);
    ck_assert_uint_eq(st.queue_depth, 3);
    ck_assert_str_eq(st.state, "ok");
    wait_durable(0x1000);
    ops->status(fx.sink, &st);
    ck_assert_uint_eq(st.queue_depth, 0);
    ck_assert_uint_eq(st.events, 3);
    ck_assert_uint_eq(st.retries, 0);
    ck_assert_uint_gt(st.bytes, 0);
}
END_TEST

START_TEST(test_retries_500_same_key)
{
    HttpReply script[] = {{.status = 500, .body = "db down"}, {.status = 503}};
    HttpRequest *reqs;
    size_t n;
    SinkStatus st;
    char *k0, *k1, *k2;

    http_receiver_script(fx.rx, script, 2);
    open_sink();
    submit_txn(0x1000, 1, 3);
    wait_durable(0x1000);
    reqs = http_receiver_requests(fx.rx, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(reqs[0].status, 500);
    ck_assert_int_eq(reqs[2].status, 200);
    ck_assert_str_eq(reqs[0].body, reqs[2].body);
    k0 = http_request_header(&reqs[0], "Idempotency-Key");
    k1 = http_request_header(&reqs[1], "Idempotency-Key");
    k2 = http_request_header(&reqs[2], "Idempotency-Key");
    ck_assert_str_eq(k0, "0/1000-0/F00-0/F02");
    ck_assert_str_eq(k0, k1);
    ck_assert_str_eq(k0, k2);
    free(k0);
    free(k1);
    free(k2);
    /* exponential backoff: the second wait is longer than the first's floor */
    ck_assert_int_ge(reqs[1].at_us - reqs[0].at_us, 75 * 1000);
    ck_assert_int_ge(reqs[2].at_us - reqs[1].at_us, 150 * 1000);
    ops->status(fx.sink, &st);
    ck_assert_uint_eq(st.retries, 2);
    ck_assert_uint_eq(st.errors, 2);
    ck_assert_str_eq(st.state, "ok");
    ck_assert_msg(
        strncmp(st.last_error, "could not deliver webhook batch to http://127.0.0.1:", 51) == 0 &&
            strstr(st.last_error, "/hook: HTTP 503") != NULL,
        "last_error: %s", st.last_error);
    http_requests_free(reqs, n);
}
END_TEST

START_TEST(test_retry_after_honoured)
{
    HttpReply script[] = {{.status = 429, .retry_after = 1, .body = "slow down"}};
    HttpRequest *reqs;
    size_t n;

    http_receiver_script(fx.rx, script, 1);
    open_sink();
    submit_txn(0x1000, 1, 3);
    wait_durable(0x1000);
    reqs = http_receiver_requests(fx.rx, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(reqs[0].status, 429);
    ck_assert_msg(reqs[1].at_us - reqs[0].at_us >= 1000 * 1000,
                  "retry came %lld us after a Retry-After: 1",
                  (long long)(reqs[1].at_us - reqs[0].at_us));
    http_requests_free(reqs, n);
}
END_TEST

START_TEST(test_signature)
{
    HttpRequest *reqs;
    size_t n;
    char *sig;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    char want[7 + 65] = "sha256=";

    fx.cfg.webhook.secret = (char *)"s3cret";
    open_sink();
    submit_txn(0x1000, 1, 2);
    wait_durable(0x1000);
    reqs = http_receiver_requests(fx.rx, &n);
    ck_assert_uint_eq(n, 1);
    HMAC(EVP_sha256(), "s3cret", 6, (const unsigned char *)reqs[0].body, reqs[0].body_len, md,
         &md_len);
    ck_assert_uint_eq(md_len, 32);
    for (unsigned i = 0; i < md_len; i++)
        snprintf(want + 7 + 2 * i, 3, "%02x", md[i]);
    sig = http_request_header(&reqs[0], "X-Pgfan-Signature");
    ck_assert_ptr_nonnull(sig);
    ck_assert_str_eq(sig, want);
    free(sig);
    http_requests_free(reqs, n);
}
END_TEST

START_TEST(test_400_dead_letter)
{
    HttpReply script[] = {{.status = 400, .body = "{\"error\":\"bad \\\"thing\\\"\"}"}};
    size_t n;
    char *line;
    FILE *f;
    char buf[8192];
    SinkStatus st;
    HttpRequest *reqs;

    http_receiver_script(fx.rx, script, 1);
    open_sink();
    submit_txn(0x1000, 1, 3);
    submit_txn(0x2000, 4, 3);
    wait_durable(0x2000);
    reqs = http_receiver_requests(fx.rx, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(reqs[1].status, 200);
    ck_assert_ptr_nonnull(strstr(reqs[1].body, "\"after\":{\"id\":4,"));
    http_requests_free(reqs, n);

    f = fopen(fx.dead, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(buf, sizeof buf, f));
    ck_assert_ptr_null(fgets(buf + strlen(buf), (int)(sizeof buf - strlen(buf)), f));
    fclose(f);
    line = buf;
    ck_assert_msg(strncmp(line,
                          "{\"status\":400,\"response\":\"{\\\"error\\\":\\\"bad "
                          "\\\\\\\"thing\\\\\\\"\\\"}\",\"url\":\"http://127.0.0.1:",
                          80) == 0,
                  "dead letter: %s", line);
    ck_assert_ptr_nonnull(
        strstr(line, "/hook\",\"events\":[{\"before\":null,\"after\":{\"id\":1,"));
    ck_assert_ptr_nonnull(strstr(line, "\"after\":{\"id\":3,"));
    ck_assert_str_eq(line + strlen(line) - 3, "]}\n");
    ops->status(fx.sink, &st);
    ck_assert_uint_eq(st.dead_letters, 1);
    ck_assert_uint_eq(st.retries, 0);
    ck_assert_uint_eq(st.queue_depth, 0);
}
END_TEST

START_TEST(test_dropped_connection_retried)
{
    HttpReply script[] = {{.status = 0}};
    size_t n;
    HttpRequest *reqs;
    SinkStatus st;

    http_receiver_script(fx.rx, script, 1);
    open_sink();
    submit_txn(0x1000, 1, 3);
    wait_durable(0x1000);
    reqs = http_receiver_requests(fx.rx, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(reqs[0].status, 0);
    ck_assert_str_eq(reqs[0].body, reqs[1].body);
    http_requests_free(reqs, n);
    ops->status(fx.sink, &st);
    ck_assert_uint_eq(st.retries, 1);
    ck_assert_ptr_nonnull(strstr(st.last_error, "could not deliver webhook batch to "));
}
END_TEST

START_TEST(test_timeout_retried)
{
    HttpReply script[] = {{.status = 200, .delay_ms = 3000}};
    size_t n;
    HttpRequest *reqs;
    SinkStatus st;

    fx.cfg.webhook.timeout = 300 * MS;
    http_receiver_script(fx.rx, script, 1);
    open_sink();
    submit_txn(0x1000, 1, 3);
    wait_durable(0x1000);
    reqs = http_receiver_requests(fx.rx, &n);
    ck_assert_uint_eq(n, 2);
    http_requests_free(reqs, n);
    ops->status(fx.sink, &st);
    ck_assert_uint_eq(st.retries, 1);
    ck_assert_msg(strstr(st.last_error, "timed out after 30") != NULL, "last_error: %s",
                  st.last_error);
}
END_TEST

/* Every key's versions arrive in order although 4 requests fly at once and
 * a fifth of the answers are 500s. */
START_TEST(test_per_key_order_under_failures)
{
    enum { KEYS = 20, VERSIONS = 15, PER_TXN = 10 };
    int last[KEYS + 1];
    int count[KEYS + 1];
    HttpRequest *reqs;
    size_t n, events = 0;
    Lsn end = 0x10000;
    int k = 0;
    int ids[64], vs[64];

    fx.cfg.webhook.max_in_flight = 4;
    fx.cfg.webhook.batch_size = 5;
    http_receiver_set_random_failures(fx.rx, 20, 42);
    open_sink();
    for (int v = 1; v <= VERSIONS; v++) {
        for (int id = 1; id <= KEYS; id++) {
            if (k % PER_TXN == 0) {
                end += 0x1000;
                submit_mark(CHANGE_BEGIN, end);
            }
            submit_row(CHANGE_UPDATE, "orders", id, v, end - 0x800 + (Lsn)(k % PER_TXN), end);
            k++;
            if (k % PER_TXN == 0) {
                submit_mark(CHANGE_COMMIT, end);
                ck_assert(run_until(accepting, NULL, WAIT_MS));
            }
        }
    }
    wait_durable(end);

    memset(last, 0, sizeof last);
    memset(count, 0, sizeof count);
    reqs = http_receiver_requests(fx.rx, &n);
    for (size_t i = 0; i < n; i++) {
        size_t m;
        if (reqs[i].status != 200)
            continue;
        m = body_ids(reqs[i].body, ids, vs, 64);
        for (size_t j = 0; j < m; j++) {
            ck_assert_int_ge(ids[j], 1);
            ck_assert_int_le(ids[j], KEYS);
            ck_assert_msg(vs[j] == last[ids[j]] + 1, "key %d: version %d after %d", ids[j], vs[j],
                          last[ids[j]]);
            last[ids[j]] = vs[j];
            count[ids[j]]++;
            events++;
        }
    }
    ck_assert_uint_eq(events, KEYS * VERSIONS);
    for (int id = 1; id <= KEYS; id++)
        ck_assert_int_eq(count[id], VERSIONS);
    ck_assert_uint_gt(n, http_receiver_count_ok(fx.rx)); /* some 500s happened */
    http_requests_free(reqs, n);
}
END_TEST

START_TEST(test_backpressure)
{
    HttpReply slow = {.status = 200, .delay_ms = 200};
    SinkStatus st;

    fx.cfg.webhook.batch_size = 2; /* 2 * 1 lane * 4 = 8 events */
    http_receiver_set_default(fx.rx, &slow);
    open_sink();
    submit_mark(CHANGE_BEGIN, 0x1000);
    for (int i = 0; i < 7; i++) {
        submit_row(CHANGE_INSERT, "orders", i + 1, 1, 0xF00 + (Lsn)i, 0x1000);
        ck_assert(ops->can_accept(fx.sink));
    }
    submit_row(CHANGE_INSERT, "orders", 8, 1, 0xF08, 0x1000);
    submit_mark(CHANGE_COMMIT, 0x1000);
    ck_assert(!ops->can_accept(fx.sink));
    ops->status(fx.sink, &st);
    ck_assert_str_eq(st.state, "backpressure");
    ck_assert_uint_eq(st.queue_depth, 8);
    ck_assert_uint_gt(st.queued_bytes, 8 * 100);
    ck_assert(run_until(accepting, NULL, WAIT_MS));
    wait_durable(0x1000);
    ops->status(fx.sink, &st);
    ck_assert_uint_eq(st.queued_bytes, 0);
    ck_assert_uint_eq(http_receiver_count(fx.rx), 4);
}
END_TEST

START_TEST(test_empty_and_abandoned_transactions)
{
    size_t n;
    HttpRequest *reqs;

    open_sink();
    submit_mark(CHANGE_BEGIN, 0x500);
    submit_mark(CHANGE_COMMIT, 0x500);
    ck_assert_uint_eq(ops->durable_lsn(fx.sink), 0x500); /* nothing for this sink */
    /* an open transaction abandoned by a reconnect, then the same again */
    submit_mark(CHANGE_BEGIN, 0x1000);
    submit_row(CHANGE_INSERT, "orders", 1, 1, 0xF00, 0x1000);
    submit_mark(CHANGE_BEGIN, 0x1000);
    submit_row(CHANGE_INSERT, "orders", 1, 1, 0xF00, 0x1000);
    submit_row(CHANGE_INSERT, "orders", 2, 1, 0xF01, 0x1000);
    submit_mark(CHANGE_COMMIT, 0x1000);
    submit_mark(CHANGE_BEGIN, 0x2000);
    submit_mark(CHANGE_COMMIT, 0x2000);
    ck_assert_uint_eq(ops->durable_lsn(fx.sink), 0x500);
    wait_durable(0x2000);
    reqs = http_receiver_requests(fx.rx, &n);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(json_array_len(reqs[0].body, reqs[0].body_len), 3);
    http_requests_free(reqs, n);
}
END_TEST

START_TEST(test_flush_sends_partial_batch_now)
{
    size_t one = 1;

    fx.cfg.webhook.batch_linger = 10 * USECS_PER_SEC;
    fx.cfg.webhook.batch_size = 100;
    open_sink();
    submit_txn(0x1000, 1, 2);
    ck_assert(!run_until(rx_has, &one, 200));
    ops->flush(fx.sink);
    wait_durable(0x1000);
}
END_TEST

/* Open errors ----------------------------------------------------------------- */

static void expect_open_error(ErrKind kind, const char *msg, const char *hint)
{
    PfError err;

    err_clear(&err);
    ck_assert_ptr_null(ops->open(&fx.ctx, &err));
    ck_assert_int_eq(err.kind, kind);
    ck_assert_str_eq(err.msg, msg);
    ck_assert_str_eq(err.hint, hint);
}

START_TEST(test_open_errors)
{
    char want[256];

    fx.cfg.webhook.url = NULL;
    expect_open_error(ERR_CONFIG, "could not open webhook sink: no url configured",
                      "set url in [sink.webhook]");
    fx.cfg.webhook.url = (char *)"ftp://user:pw@example.com/x";
    expect_open_error(ERR_CONFIG,
                      "could not open webhook sink: url \"ftp://example.com/x\" is not http:// or "
                      "https://",
                      "write the full URL, e.g. https://hooks.example.com/pgfan");
    fx.cfg.webhook.url = fx.url;
    fx.cfg.webhook.dead_letter = (char *)"/nonexistent-dir/dead.ndjson";
    snprintf(want, sizeof want,
             "could not open webhook dead-letter file \"/nonexistent-dir/dead.ndjson\": "
             "No such file or directory");
    expect_open_error(ERR_CONFIG, want,
                      "set dead_letter in [sink.webhook] to a file pgfan may create and write");
}
END_TEST

START_TEST(test_dead_letter_write_failure_is_fatal)
{
    HttpReply script[] = {{.status = 422}};
    PfError err;
    TimeUs next;
    SinkStatus st;

    fx.cfg.webhook.dead_letter = (char *)"/dev/full";
    http_receiver_script(fx.rx, script, 1);
    open_sink();
    submit_txn(0x1000, 1, 3);
    while (!fx.poll_failed)
        ck_assert(loop_run_once(fx.loop, clock_mono_us() + 50 * MS));
    ck_assert_int_eq(fx.poll_err.kind, ERR_FATAL);
    ck_assert_str_eq(fx.poll_err.msg, "could not write webhook dead-letter file \"/dev/full\": "
                                      "No space left on device");
    ck_assert_uint_eq(ops->durable_lsn(fx.sink), LSN_INVALID);
    ck_assert(!ops->can_accept(fx.sink));
    err_clear(&err);
    ck_assert(!ops->poll(fx.sink, clock_mono_us(), &next, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ops->status(fx.sink, &st);
    ck_assert_str_eq(st.state, "failed");
}
END_TEST

START_TEST(test_registry)
{
    ck_assert_ptr_eq(sink_lookup("webhook"), &sink_webhook_ops);
}
END_TEST

static Suite *webhook_suite(void)
{
    Suite *s = suite_create("webhook_sink");
    TCase *tc = tcase_create("delivery");

    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_batches_and_headers);
    tcase_add_test(tc, test_durable_only_after_2xx);
    tcase_add_test(tc, test_flush_sends_partial_batch_now);
    tcase_add_test(tc, test_empty_and_abandoned_transactions);
    suite_add_tcase(s, tc);

    tc = tcase_create("failures");
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_retries_500_same_key);
    tcase_add_test(tc, test_retry_after_honoured);
    tcase_add_test(tc, test_400_dead_letter);
    tcase_add_test(tc, test_dropped_connection_retried);
    tcase_add_test(tc, test_timeout_retried);
    tcase_add_test(tc, test_dead_letter_write_failure_is_fatal);
    suite_add_tcase(s, tc);

    tc = tcase_create("ordering");
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_per_key_order_under_failures);
    tcase_add_test(tc, test_backpressure);
    suite_add_tcase(s, tc);

    tc = tcase_create("setup");
    tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
    tcase_add_test(tc, test_signature);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_registry);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(webhook_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
