/*
 * test_webhook_e2e.c - pgfan with [sink.webhook] against a real PostgreSQL
 * 15 and a real HTTP server.
 *
 * The HTTP server is tests/harness/http_receiver, running in threads of
 * this test process (not in pgfan), so it outlives pgfan restarts. The
 * pgfan binary (PGFAN_TEST_BIN) runs with the file sink and the webhook
 * sink; the tests check what the server received against what PostgreSQL
 * decoded and the slot's confirmed_flush_lsn. Nothing sleeps: every wait
 * polls a condition under a deadline (h_wait_until).
 */
#include "../../common/buf.h"
#include "../../common/mem.h"
#include "../harness/harness.h"
#include "../harness/http_receiver.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_MS 60000

typedef struct Env {
    char *dir;
    char *db;
    char *slot;
    char *config;
    char *log;
    char *dead;
    PGconn *conn;
    HttpReceiver *rx;
} Env;

static Env env_new(const char *name, const char *schema_sql, const char *tables, int fail_percent)
{
    Env e;
    Buf b = BUF_INIT;
    char *url;

    e.conn = h_setup(name, schema_sql, &e.dir);
    e.db = xstrdup(name);
    e.slot = xstrdup(name);
    e.rx = http_receiver_start();
    if (fail_percent > 0)
        http_receiver_set_random_failures(e.rx, fail_percent, 7);
    url = http_receiver_url(e.rx, "/pgfan");
    e.dead = h_path(e.dir, "dead.ndjson");
    buf_printf(&b,
               "[sink.webhook]\nurl = %s\nbatch_size = 20\nmax_in_flight = 4\n"
               "batch_linger = 20ms\ndead_letter = %s\nsecret = e2e-secret\n"
               "header.X-Test = webhook-e2e\n",
               url, e.dead);
    e.config = h_write_config(e.dir, e.db, e.slot, tables, b.data);
    buf_free(&b);
    free(url);
    e.log = h_path(e.dir, "pgfan.log");
    return e;
}

static void env_free(Env *e)
{
    http_receiver_stop(e->rx);
    h_teardown(e->conn, e->slot, e->dir);
    free(e->db);
    free(e->slot);
    free(e->config);
    free(e->log);
    free(e->dead);
}

/* Every event of every request the server accepted (2xx). Caller frees. */
static HChange *delivered(HttpReceiver *rx, size_t *n_out)
{
    size_t n, cap = 64, count = 0;
    HttpRequest *reqs = http_receiver_requests(rx, &n);
    HChange *seen = xmalloc(cap * sizeof *seen);

    for (size_t i = 0; i < n; i++) {
        if (reqs[i].status < 200 || reqs[i].status > 299)
            continue;
        ck_assert_msg(reqs[i].body[0] == '[' && reqs[i].body[reqs[i].body_len - 1] == ']',
                      "body is not an array: %.200s", reqs[i].body);
        for (const char *ev = strstr(reqs[i].body, "{\"before\":"); ev;
             ev = strstr(ev + 1, "{\"before\":")) {
            const char *src = strstr(ev, "\"source\":");
            const char *op;

            if (count == cap) {
                cap *= 2;
                seen = xrealloc(seen, cap * sizeof *seen);
            }
            seen[count].commit_lsn = h_json_u64(src, "commit_lsn");
            seen[count].lsn = h_json_u64(src, "lsn");
            seen[count].id = h_json_u64(strstr(ev, "\"after\":"), "id");
            op = strstr(src, "\"op\":\"");
            ck_assert_ptr_nonnull(op);
            seen[count].op = op[6];
            count++;
        }
    }
    http_requests_free(reqs, n);
    *n_out = count;
    return seen;
}

/* Requests answered with status (0: closed without an answer). */
static size_t count_status(HttpReceiver *rx, int status)
{
    size_t n, count = 0;
    HttpRequest *reqs = http_receiver_requests(rx, &n);

    for (size_t i = 0; i < n; i++)
        count += reqs[i].status == status;
    http_requests_free(reqs, n);
    return count;
}

typedef struct CountWait {
    HttpReceiver *rx;
    size_t n;
} CountWait;

static bool has_ok_requests(void *arg)
{
    CountWait *w = arg;
    return http_receiver_count_ok(w->rx) >= w->n;
}

/* ---- tests -------------------------------------------------------------- */

START_TEST(webhook_changes_arrive)
{
    Env e = env_new("webhook_basic",
                    "CREATE TABLE orders(id bigint PRIMARY KEY, status text, total numeric(12,2))",
                    "public.orders", 0);
    pid_t pid = h_pgfan_start(e.config, e.log);
    size_t n, nreq;
    HChange *seen;
    HttpRequest *reqs;
    char *h;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders SELECT i, 'new', 10.50 FROM generate_series(1, 50) i");
    h_sql(e.conn, "UPDATE orders SET status = 'paid' WHERE id <= 10");
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);

    seen = delivered(e.rx, &n);
    ck_assert_uint_eq(n, 60);
    free(seen);
    reqs = http_receiver_requests(e.rx, &nreq);
    ck_assert_uint_ge(nreq, 3);
    ck_assert_ptr_nonnull(strstr(reqs[0].body, "\"db\":\"webhook_basic\",\"schema\":\"public\","
                                               "\"table\":\"orders\""));
    ck_assert_ptr_nonnull(strstr(reqs[0].body, "\"total\":10.50"));
    h = http_request_header(&reqs[0], "X-Test");
    ck_assert_str_eq(h, "webhook-e2e");
    free(h);
    h = http_request_header(&reqs[0], "X-Pgfan-Signature");
    ck_assert(h && strncmp(h, "sha256=", 7) == 0 && strlen(h) == 7 + 64);
    free(h);
    h = http_request_header(&reqs[0], "User-Agent");
    ck_assert_str_eq(h, "pgfan/0.1.0");
    free(h);
    http_requests_free(reqs, nreq);
    env_free(&e);
}
END_TEST

/* Rows of the harness's crash-test workload (h_workload_start). */
#define WORKLOAD_ROWS 3000

/* kill -9 mid-stream, with a tenth of the requests failing with 500, then
 * restart: every change is delivered at least once, and every duplicate
 * lies after the position confirmed when pgfan was killed. */
START_TEST(webhook_kill9_at_least_once)
{
    Env e = env_new("webhook_kill", "CREATE TABLE orders(id bigint PRIMARY KEY, v int)",
                    "public.orders", 10);
    pid_t pid = h_pgfan_start(e.config, e.log);
    CountWait cw = {e.rx, 15};
    PGconn *w;
    Lsn confirmed;
    size_t n, dups;
    HChange *seen;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    w = h_workload_start(e.db, WORKLOAD_ROWS);
    ck_assert(h_wait_until(has_ok_requests, &cw, WAIT_MS));
    confirmed = h_pgfan_crash(pid, e.conn, e.slot, WAIT_MS);

    pid = h_pgfan_start(e.config, e.log);
    h_workload_finish(w);
    h_wait_caught_up(e.conn, e.slot, WAIT_MS, e.log);
    h_pgfan_stop(pid, WAIT_MS);

    seen = delivered(e.rx, &n);
    dups = h_workload_check(seen, n, WORKLOAD_ROWS, confirmed);
    ck_assert_uint_eq(h_count_lines(e.dead), 0);
    /* h_workload_check fails the test on any lost change. */
    fprintf(stderr,
            "webhook_kill: %d changes checked, 0 lost, %zu duplicates (all after the confirmed "
            "position), 1 kill, %zu events delivered, %zu requests of which %zu answered 500, "
            "0 dead-lettered\n",
            WORKLOAD_ROWS + WORKLOAD_ROWS / 3, dups, n, http_receiver_count(e.rx),
            count_status(e.rx, 500));
    free(seen);
    env_free(&e);
}
END_TEST

int main(void)
{
    const char *const env[] = {"PGFAN_TEST_PGPORT", "PGFAN_TEST_BIN", NULL};
    const TTest *const tests[] = {webhook_changes_arrive, webhook_kill9_at_least_once, NULL};

    return h_run_suite("webhook_e2e", "stream", 180, env, tests, NULL);
}
