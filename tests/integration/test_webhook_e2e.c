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

    e.dir = h_tmpdir();
    e.db = xstrdup(name);
    e.slot = xstrdup(name);
    h_create_db(e.db);
    e.conn = h_pg_connect(e.db);
    h_sql(e.conn, "%s", schema_sql);
    e.rx = http_receiver_start();
    if (fail_percent > 0)
        http_receiver_set_random_failures(e.rx, fail_percent, 7);
    url = http_receiver_url(e.rx, "/pgfan");
    buf_printf(&b, "%s/dead.ndjson", e.dir);
    e.dead = b.data;
    buf_init(&b);
    buf_printf(&b,
               "[sink.webhook]\nurl = %s\nbatch_size = 20\nmax_in_flight = 4\n"
               "batch_linger = 20ms\ndead_letter = %s\nsecret = e2e-secret\n"
               "header.X-Test = webhook-e2e\n",
               url, e.dead);
    e.config = h_write_config(e.dir, e.db, e.slot, tables, b.data);
    buf_free(&b);
    free(url);
    buf_printf(&b, "%s/pgfan.log", e.dir);
    e.log = b.data;
    return e;
}

static void env_free(Env *e)
{
    h_drop_slot(e->conn, e->slot); /* slots hold WAL */
    PQfinish(e->conn);
    http_receiver_stop(e->rx);
    h_rm_rf(e->dir);
    free(e->dir);
    free(e->db);
    free(e->slot);
    free(e->config);
    free(e->log);
    free(e->dead);
}

static pid_t start_pgfan(const Env *e)
{
    const char *argv[] = {h_pgfan_bin(), "run", "-c", e->config, NULL};
    return h_spawn(argv, e->log);
}

static void stop_pgfan(pid_t pid)
{
    h_kill(pid, SIGTERM);
    ck_assert_int_eq(h_wait_exit(pid, WAIT_MS), 0);
}

static void wait_confirmed_current(Env *e)
{
    h_wait_slot_confirmed(e->conn, e->slot, h_wal_insert_lsn(e->conn), WAIT_MS, e->log);
}

/* The integer after "key": in text, from the first occurrence. */
static uint64_t json_u64(const char *text, const char *key)
{
    char pat[64];
    const char *p;

    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(text, pat);
    ck_assert_msg(p != NULL, "no %s in %.200s", key, text);
    return strtoull(p + strlen(pat), NULL, 10);
}

/* One delivered event: identity and row. */
typedef struct Seen {
    uint64_t commit_lsn;
    uint64_t lsn;
    uint64_t id;
    bool update;
} Seen;

static int seen_cmp(const void *a, const void *b)
{
    const Seen *x = a, *y = b;
    if (x->commit_lsn != y->commit_lsn)
        return x->commit_lsn < y->commit_lsn ? -1 : 1;
    if (x->lsn != y->lsn)
        return x->lsn < y->lsn ? -1 : 1;
    return 0;
}

/* Every event of every request the server accepted (2xx). Caller frees. */
static Seen *delivered(HttpReceiver *rx, size_t *n_out)
{
    size_t n, cap = 64, count = 0;
    HttpRequest *reqs = http_receiver_requests(rx, &n);
    Seen *seen = xmalloc(cap * sizeof *seen);

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
            seen[count].commit_lsn = json_u64(src, "commit_lsn");
            seen[count].lsn = json_u64(src, "lsn");
            seen[count].id = json_u64(strstr(ev, "\"after\":"), "id");
            op = strstr(src, "\"op\":\"");
            ck_assert_ptr_nonnull(op);
            seen[count].update = op[6] == 'u';
            count++;
        }
    }
    http_requests_free(reqs, n);
    *n_out = count;
    return seen;
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
    pid_t pid = start_pgfan(&e);
    size_t n, nreq;
    Seen *seen;
    HttpRequest *reqs;
    char *h;

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    h_sql(e.conn, "INSERT INTO orders SELECT i, 'new', 10.50 FROM generate_series(1, 50) i");
    h_sql(e.conn, "UPDATE orders SET status = 'paid' WHERE id <= 10");
    wait_confirmed_current(&e);
    stop_pgfan(pid);

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
    pid_t pid = start_pgfan(&e);
    CountWait cw = {e.rx, 15};
    PGconn *w;
    Lsn confirmed;
    size_t n, dups = 0;
    Seen *seen;
    bool *inserted = calloc(WORKLOAD_ROWS + 1, sizeof(bool));
    bool *updated = calloc(WORKLOAD_ROWS + 1, sizeof(bool));

    h_wait_file_contains(e.log, "streaming from slot", WAIT_MS);
    w = h_workload_start(e.db, WORKLOAD_ROWS);
    ck_assert(h_wait_until(has_ok_requests, &cw, WAIT_MS));
    h_kill(pid, SIGKILL);
    h_wait_exit(pid, WAIT_MS);
    h_wait_slot_inactive(e.conn, e.slot, WAIT_MS);
    confirmed = h_slot_confirmed_lsn(e.conn, e.slot);

    pid = start_pgfan(&e);
    h_workload_finish(w);
    wait_confirmed_current(&e);
    stop_pgfan(pid);

    seen = delivered(e.rx, &n);
    for (size_t i = 0; i < n; i++) {
        ck_assert(seen[i].id >= 1 && seen[i].id <= WORKLOAD_ROWS);
        if (seen[i].update)
            updated[seen[i].id] = true;
        else
            inserted[seen[i].id] = true;
    }
    for (uint64_t id = 1; id <= WORKLOAD_ROWS; id++) {
        ck_assert_msg(inserted[id], "insert of id %llu lost", (unsigned long long)id);
        if (id % 3 == 2)
            ck_assert_msg(updated[id], "update of id %llu lost", (unsigned long long)id);
    }
    qsort(seen, n, sizeof *seen, seen_cmp);
    for (size_t i = 1; i < n; i++) {
        if (seen_cmp(&seen[i - 1], &seen[i]) == 0) {
            dups++;
            ck_assert_msg(seen[i].commit_lsn > confirmed,
                          "duplicate of a change confirmed before the kill (commit %llx <= %llx)",
                          (unsigned long long)seen[i].commit_lsn, (unsigned long long)confirmed);
        }
    }
    ck_assert_uint_eq(h_count_lines(e.dead), 0);
    fprintf(stderr, "webhook kill -9: %zu events delivered, %zu duplicates, %zu requests\n", n,
            dups, http_receiver_count(e.rx));
    free(seen);
    free(inserted);
    free(updated);
    env_free(&e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("webhook_e2e");
    TCase *tc = tcase_create("stream");
    SRunner *sr;
    int failed;

    if (!getenv("PGFAN_TEST_PGPORT") || !getenv("PGFAN_TEST_BIN")) {
        fprintf(
            stderr,
            "webhook_e2e: PGFAN_TEST_PGPORT and PGFAN_TEST_BIN must be set (run tests/run.sh)\n");
        return 77; /* meson: skipped */
    }
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, webhook_changes_arrive);
    tcase_add_test(tc, webhook_kill9_at_least_once);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
