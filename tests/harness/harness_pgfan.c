/*
 * harness_pgfan.c - helpers for the daemon under test (see harness.h):
 * running pgfan, reading what it wrote, its HTTP endpoints, and a suite's
 * main().
 *
 * Failures go through h_fail() like the rest of the harness, and helpers
 * free what they hold before failing (see harness.c).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define H_CMD_ARGS 16 /* h_pgfan_cmd: the binary and at most 15 arguments */
#define H_HTTP_TIMEOUT_S 10

/* --- pgfan under test ---------------------------------------------------- */

pid_t h_pgfan_start(const char *config, const char *log_path)
{
    const char *argv[] = {h_pgfan_bin(), "run", "-c", config, NULL};

    return h_spawn(argv, log_path);
}

void h_pgfan_stop(pid_t pid, int timeout_ms)
{
    int rc;

    h_kill(pid, SIGTERM);
    rc = h_wait_exit(pid, timeout_ms);
    if (rc < 0)
        h_fail("h_pgfan_stop: could not stop pgfan (pid %d): still running %d ms after SIGTERM",
               (int)pid, timeout_ms);
    if (rc != 0)
        h_fail("h_pgfan_stop: could not stop pgfan (pid %d) cleanly: exit status %d after "
               "SIGTERM, want 0",
               (int)pid, rc);
}

Lsn h_pgfan_crash(pid_t pid, PGconn *conn, const char *slot, int timeout_ms)
{
    h_kill(pid, SIGKILL);
    if (h_wait_exit(pid, timeout_ms) < 0)
        h_fail("h_pgfan_crash: could not kill pgfan (pid %d): still running %d ms after SIGKILL",
               (int)pid, timeout_ms);
    h_wait_slot_inactive(conn, slot, timeout_ms);
    return h_slot_confirmed_lsn(conn, slot);
}

int h_pgfan_cmd(const char *out_path, int timeout_ms, ...)
{
    const char *argv[H_CMD_ARGS + 1];
    size_t n = 0;
    va_list ap;
    const char *arg;
    pid_t pid;
    int rc;

    argv[n++] = h_pgfan_bin();
    va_start(ap, timeout_ms);
    while ((arg = va_arg(ap, const char *)) != NULL && n < H_CMD_ARGS)
        argv[n++] = arg;
    va_end(ap);
    if (arg != NULL)
        h_fail("h_pgfan_cmd: could not run pgfan %s ...: more than %d arguments", argv[1],
               H_CMD_ARGS - 1);
    argv[n] = NULL;
    pid = h_spawn(argv, out_path);
    rc = h_wait_exit(pid, timeout_ms);
    if (rc < 0) {
        h_kill(pid, SIGKILL);
        h_wait_exit(pid, timeout_ms);
    }
    return rc;
}

/* --- what pgfan wrote ---------------------------------------------------- */

uint64_t h_json_u64(const char *text, const char *key)
{
    char pat[128];
    const char *p;

    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = strstr(text, pat);
    if (p == NULL)
        h_fail("h_json_u64: could not find %s in %.200s", pat, text);
    return strtoull(p + strlen(pat), NULL, 10);
}

static int change_cmp(const void *a, const void *b)
{
    const HChange *x = a, *y = b;

    if (x->commit_lsn != y->commit_lsn)
        return x->commit_lsn < y->commit_lsn ? -1 : 1;
    if (x->lsn != y->lsn)
        return x->lsn < y->lsn ? -1 : 1;
    return 0;
}

/* The first change the workload cannot have made (an id outside 1..rows,
 * an op other than c and u), or n when there is none. */
static size_t first_foreign(const HChange *changes, size_t n, int rows)
{
    for (size_t i = 0; i < n; i++) {
        const HChange *c = &changes[i];

        if (c->id < 1 || c->id > (uint64_t)rows || (c->op != 'c' && c->op != 'u'))
            return i;
    }
    return n;
}

/*
 * The first id (all of 1..rows, which first_foreign checked) whose insert,
 * or update (ids 2, 5, 8, ...), is not among changes, with *what saying
 * which; 0 when nothing is lost.
 */
static int first_lost(const HChange *changes, size_t n, int rows, const char **what)
{
    bool *inserted = calloc((size_t)rows + 1, sizeof *inserted);
    bool *updated = calloc((size_t)rows + 1, sizeof *updated);
    int lost = 0;

    if (inserted == NULL || updated == NULL) {
        free(inserted);
        free(updated);
        h_fail("h_workload_check: could not check %zu changes: out of memory", n);
    }
    for (size_t i = 0; i < n; i++) {
        if (changes[i].op == 'c')
            inserted[changes[i].id] = true;
        else
            updated[changes[i].id] = true;
    }
    for (int id = 1; id <= rows && lost == 0; id++) {
        *what = !inserted[id] ? "insert" : "update";
        if (!inserted[id] || (id % 3 == 2 && !updated[id]))
            lost = id;
    }
    free(inserted);
    free(updated);
    return lost;
}

size_t h_workload_check(HChange *changes, size_t n, int rows, Lsn confirmed_before)
{
    size_t bad = first_foreign(changes, n, rows);
    const char *what = NULL;
    int lost;
    size_t dups = 0;
    char a[LSN_TEXT_SIZE], b[LSN_TEXT_SIZE];

    if (bad < n)
        h_fail("h_workload_check: could not place change %zu (op '%c', id %llu): the workload "
               "makes ops c and u of ids 1..%d",
               bad, changes[bad].op ? changes[bad].op : '?', (unsigned long long)changes[bad].id,
               rows);
    lost = first_lost(changes, n, rows, &what);
    if (lost != 0)
        h_fail("h_workload_check: could not find the %s of id %d among %zu changes: lost", what,
               lost, n);
    qsort(changes, n, sizeof *changes, change_cmp);
    for (size_t i = 1; i < n; i++) {
        if (change_cmp(&changes[i - 1], &changes[i]) != 0)
            continue;
        dups++;
        if (changes[i].commit_lsn <= confirmed_before)
            h_fail("h_workload_check: could not accept a second copy of the change at %s: its "
                   "transaction (commit %s) was confirmed before pgfan stopped",
                   lsn_format(changes[i].lsn, a), lsn_format(changes[i].commit_lsn, b));
    }
    return dups;
}

size_t h_load_es_docs(PGconn *conn, const char *ndjson)
{
    static const char insert[] =
        "INSERT INTO es_docs SELECT d->>'_index', d->>'_id', (d->>'_version')::numeric, "
        "d->'_source' FROM (SELECT $1::jsonb d) s";
    char *text = strdup(ndjson);
    size_t n = 0;

    if (text == NULL)
        h_fail("h_load_es_docs: could not copy the documents: out of memory");
    h_sql(conn, "DROP TABLE IF EXISTS es_docs; CREATE TABLE es_docs (idx text, id text, "
                "version numeric, doc jsonb)");
    for (char *line = text, *nl; line != NULL && *line != '\0'; line = nl ? nl + 1 : NULL) {
        const char *params[1] = {line};
        PGresult *res;

        nl = strchr(line, '\n');
        if (nl != NULL)
            *nl = '\0';
        if (*line == '\0')
            continue;
        res = PQexecParams(conn, insert, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            char cause[512];

            snprintf(cause, sizeof cause, "%s", PQresultErrorMessage(res));
            PQclear(res);
            free(text);
            h_fail("h_load_es_docs: could not load document %zu: %s", n + 1, cause);
        }
        PQclear(res);
        n++;
    }
    free(text);
    return n;
}

/* --- HTTP and metrics ---------------------------------------------------- */

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a;

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int h_free_tcp_port(void)
{
    struct sockaddr_in a = loopback(0);
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int e;

    if (fd < 0)
        h_fail("h_free_tcp_port: could not open a socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        e = errno;
        close(fd);
        h_fail("h_free_tcp_port: could not bind a port on 127.0.0.1: %s", strerror(e));
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Sends all of req on fd; false on an error. */
static bool send_all(int fd, const char *req, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, req, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        req += n;
        len -= (size_t)n;
    }
    return true;
}

/* Everything fd sends until it closes (or the receive timeout), malloc'd. */
static char *recv_all(int fd, const char *who)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&buf, &size);
    char chunk[4096];
    ssize_t n;

    if (out == NULL) {
        close(fd);
        h_fail("%s: could not open a memory stream: %s", who, strerror(errno));
    }
    while ((n = recv(fd, chunk, sizeof chunk, 0)) > 0)
        fwrite(chunk, 1, (size_t)n, out);
    if (fclose(out) != 0) {
        free(buf);
        close(fd);
        h_fail("%s: could not keep the response: out of memory", who);
    }
    return buf;
}

char *h_http_get(int port, const char *path)
{
    struct sockaddr_in a = loopback(port);
    struct timeval tv = {H_HTTP_TIMEOUT_S, 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char req[1024];
    int len;
    char *resp;

    if (fd < 0)
        h_fail("h_http_get: could not open a socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return NULL;
    }
    len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
    if (len < 0 || (size_t)len >= sizeof req || !send_all(fd, req, (size_t)len)) {
        int e = errno;
        close(fd);
        h_fail("h_http_get: could not send GET %s to 127.0.0.1:%d: %s", path, port,
               len < 0 || (size_t)len >= sizeof req ? "path too long" : strerror(e));
    }
    resp = recv_all(fd, "h_http_get");
    close(fd);
    return resp;
}

double h_metric_value(const char *body, const char *series)
{
    size_t len = strlen(series);

    for (const char *p = body; p != NULL && *p != '\0';
         p = strchr(p, '\n') != NULL ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, series, len) == 0 && p[len] == ' ')
            return strtod(p + len + 1, NULL);
    }
    return -1;
}

void h_promtool_check(const char *dir, const char *body)
{
    static const char promtool[] = "/usr/bin/promtool";
    char *path;
    char *out;
    char cmd[1024];
    int rc;

    if (access(promtool, X_OK) != 0) {
        printf("h_promtool_check: %s not installed; skipping promtool check metrics\n", promtool);
        return;
    }
    path = h_path(dir, "metrics.txt");
    out = h_path(dir, "promtool.out");
    h_write_file(path, "%s", body);
    snprintf(cmd, sizeof cmd, "%s check metrics < '%s' > '%s' 2>&1", promtool, path, out);
    free(path);
    fflush(NULL);
    rc = system(cmd);
    if (rc != 0) {
        char *said = h_read_file(out, NULL);
        char copy[1500];

        snprintf(copy, sizeof copy, "%s", said);
        free(said);
        free(out);
        h_fail("h_promtool_check: could not pass promtool check metrics (status %d):\n%s", rc,
               copy);
    }
    free(out);
}

/* --- a suite's main() ---------------------------------------------------- */

int h_run_suite(const char *name, const char *tcase_name, double timeout_s,
                const char *const required_env[], const TTest *const tests[],
                void (*teardown)(void))
{
    Suite *s;
    TCase *tc;
    SRunner *sr;
    int failed;

    for (const char *const *var = required_env; *var != NULL; var++) {
        const char *v = getenv(*var);

        if (v == NULL || v[0] == '\0') {
            fprintf(stderr, "%s: skipped: %s is not set (run tests/run.sh)\n", name, *var);
            return 77; /* meson: skipped */
        }
    }
    s = suite_create(name);
    tc = tcase_create(tcase_name);
    tcase_set_timeout(tc, timeout_s);
    if (teardown != NULL)
        tcase_add_unchecked_fixture(tc, NULL, teardown);
    for (const TTest *const *t = tests; *t != NULL; t++)
        tcase_add_test(tc, *t);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
