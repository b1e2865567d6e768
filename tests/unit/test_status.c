/*
 * test_status.c - the status socket server and the `pgfan status` client.
 *
 * Server and client share this process, and the client blocks in poll(),
 * so status_client_run() runs in a forked child while the parent drives the
 * loop; where interleaving matters the client side is a raw socket read a
 * little per loop turn. Every wait is bounded by a deadline; nothing sleeps.
 */
#include "../../common/buf.h"
#include "../../common/clock.h"
#include "../../common/error.h"
#include "../../common/log.h"
#include "../../common/loop.h"
#include "../../daemon/status.h"
#include "../../daemon/status_client.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char sample_doc[] =
    "{\"version\":\"0.1.0\",\"pid\":1234,\"state\":\"streaming\",\"slot\":\"pgfan\","
    "\"database\":\"shop\",\"system_id\":\"7312\",\"received_lsn\":\"0/16B3748\","
    "\"confirmed_lsn\":\"0/16B3700\",\"server_wal_end\":\"0/16B3800\",\"lag_bytes\":256,"
    "\"lag_seconds\":0.25,\"inflight_transactions\":3,\"uptime_seconds\":12.3,\"last_error\":\"\","
    "\"sinks\":[{\"name\":\"file\",\"state\":\"ok\",\"durable_lsn\":\"0/16B3700\",\"queue_depth\":0,"
    "\"queued_bytes\":0,\"events\":10,\"bytes\":1234,\"retries\":0,\"errors\":0,\"dead_letters\":0,"
    "\"last_error\":\"\"}]}";

static const char sample_table[] =
    "pgfan 0.1.0 (pid 1234)  state: streaming  slot: pgfan  database: shop\n"
    "received 0/16B3748  confirmed 0/16B3700  server end 0/16B3800\n"
    "lag 256 bytes, 0.25 s   in flight: 3 transactions   up 12 s\n"
    "SINK  STATE  DURABLE    QUEUE  EVENTS  RETRIES  ERRORS  DEAD  LAST ERROR\n"
    "file  ok     0/16B3700      0      10        0       0     0  -\n";

/* ---- fixture ----------------------------------------------------------- */

static char tmpdir[64];
static Loop *loop;

static void setup(void)
{
    strcpy(tmpdir, "/tmp/pgfan-status-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    loop = loop_new();
    ck_assert_ptr_nonnull(loop);
    log_set_level(LOG_LEVEL_ERROR); /* expected warnings would only clutter the output */
}

static void teardown(void)
{
    DIR *dir = opendir(tmpdir);
    struct dirent *de;

    clock_set_fake(-1, 0);
    loop_free(loop);
    while (dir && (de = readdir(dir)) != NULL) {
        char p[512];
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, de->d_name);
        if (unlink(p) < 0)
            rmdir(p);
    }
    if (dir)
        closedir(dir);
    rmdir(tmpdir);
}

static const char *tpath(const char *name)
{
    static char p[4][256];
    static int next;
    char *out = p[next++ % 4];

    snprintf(out, sizeof p[0], "%s/%s", tmpdir, name);
    return out;
}

/* ---- helpers ----------------------------------------------------------- */

/* Real monotonic time for test deadlines, whatever the fake clock says. */
static TimeUs real_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (TimeUs)ts.tv_sec * USECS_PER_SEC + ts.tv_nsec / 1000;
}

static void pump(void)
{
    ck_assert(loop_run_once(loop, clock_mono_us() + 5 * USECS_PER_MSEC));
}

typedef struct Render {
    Buf doc;
    int calls;
} Render;

static void render_cb(void *arg, Buf *out)
{
    Render *r = arg;

    r->calls++;
    buf_append(out, r->doc.data, r->doc.len);
}

static void render_set(Render *r, const char *text)
{
    buf_reset(&r->doc);
    buf_append_str(&r->doc, text);
}

/* A valid document of exactly size bytes. */
static void render_big(Render *r, size_t size)
{
    static const char head[] = "{\"version\":\"0.1.0\",\"padding\":\"";
    static const char tail[] = "\"}";

    buf_reset(&r->doc);
    buf_append_str(&r->doc, head);
    while (r->doc.len < size - (sizeof tail - 1))
        buf_append_char(&r->doc, (char)('a' + r->doc.len % 26));
    buf_append_str(&r->doc, tail);
}

static StatusServer *start(const char *name, Render *r)
{
    PfError err;
    StatusServer *srv;

    err_clear(&err);
    srv = status_server_new(loop, tpath(name), render_cb, r, &err);
    ck_assert_msg(srv != NULL, "status_server_new: %s", err.msg);
    return srv;
}

static char *slurp(FILE *f)
{
    long n;
    char *s;

    fflush(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    s = calloc(1, (size_t)n + 1);
    ck_assert_uint_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    return s;
}

typedef struct Result {
    int rc;
    char *out;
    char *err;
} Result;

static void result_free(Result *res)
{
    free(res->out);
    free(res->err);
}

/* Runs status_client_run_timeout in a child while this process serves the loop. */
static Result run_client(const char *path, bool json, const StatusCheck *check, TimeUs timeout)
{
    FILE *out = tmpfile();
    FILE *errout = tmpfile();
    TimeUs deadline = real_now() + 10 * USECS_PER_SEC;
    Result res;
    pid_t pid;
    int st = 0;

    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(errout);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int rc = status_client_run_timeout(path, json, check, timeout, out, errout);
        fflush(out);
        fflush(errout);
        _exit(rc);
    }
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        ck_assert_int_ge(w, 0);
        if (w == pid)
            break;
        ck_assert_msg(real_now() < deadline, "client did not finish");
        pump();
    }
    ck_assert(WIFEXITED(st));
    res.rc = WEXITSTATUS(st);
    res.out = slurp(out);
    res.err = slurp(errout);
    fclose(out);
    fclose(errout);
    return res;
}

static int raw_connect(const char *path)
{
    struct sockaddr_un addr;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    ck_assert_msg(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0, "connect: %s",
                  strerror(errno));
    return fd;
}

static int raw_listen(const char *path, int backlog)
{
    struct sockaddr_un addr;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    ck_assert_int_eq(listen(fd, backlog), 0);
    return fd;
}

/*
 * Reads from fd (non-blocking) at most chunk bytes per loop turn until EOF.
 * Returns the read errno, 0 on a clean EOF.
 */
static int read_to_eof(int fd, size_t chunk, Buf *got)
{
    TimeUs deadline = real_now() + 10 * USECS_PER_SEC;
    char *tmp = malloc(chunk);

    for (;;) {
        ssize_t n = recv(fd, tmp, chunk, MSG_DONTWAIT);
        if (n > 0) {
            buf_append(got, tmp, (size_t)n);
        } else if (n == 0) {
            free(tmp);
            return 0;
        } else if (errno != EAGAIN) {
            int e = errno;
            free(tmp);
            return e;
        }
        ck_assert_msg(real_now() < deadline, "no EOF before the deadline (%zu bytes)", got->len);
        pump();
    }
}

static void pump_until_clients(StatusServer *srv, size_t n)
{
    TimeUs deadline = real_now() + 5 * USECS_PER_SEC;

    while (status_server_client_count(srv) != n) {
        ck_assert_msg(real_now() < deadline, "have %zu clients, want %zu",
                      status_server_client_count(srv), n);
        pump();
    }
}

/* ---- server + client round trips --------------------------------------- */

START_TEST(test_json_mode)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;

    render_set(&r, sample_doc);
    srv = start("s.sock", &r);
    res = run_client(tpath("s.sock"), true, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_str_eq(res.err, "");
    ck_assert_uint_eq(strlen(res.out), strlen(sample_doc) + 1);
    ck_assert_int_eq(strncmp(res.out, sample_doc, strlen(sample_doc)), 0);
    ck_assert_str_eq(res.out + strlen(sample_doc), "\n");
    ck_assert_int_eq(r.calls, 1);
    result_free(&res);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_table_mode)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;

    render_set(&r, sample_doc);
    srv = start("s.sock", &r);
    res = run_client(tpath("s.sock"), false, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_str_eq(res.err, "");
    ck_assert_str_eq(res.out, sample_table);
    result_free(&res);

    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

/* --check against a document; returns the client's result. */
static Result check_doc(Render *r, const char *doc, double max_s, double max_b)
{
    StatusCheck limits = {max_s, max_b};
    StatusServer *srv;
    Result res;

    render_set(r, doc);
    srv = start("c.sock", r);
    res = run_client(tpath("c.sock"), false, &limits, STATUS_CLIENT_TIMEOUT);
    status_server_free(srv);
    return res;
}

START_TEST(test_check_mode)
{
    Render r = {BUF_INIT, 0};
    Result res;

    res = check_doc(&r, sample_doc, -1, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_str_eq(res.out, "OK: streaming, lag 0.250 s, 256 bytes\n");
    ck_assert_str_eq(res.err, "");
    result_free(&res);

    res = check_doc(&r, sample_doc, 10, 1000);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    result_free(&res);

    res = check_doc(&r, sample_doc, 0.1, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_UNHEALTHY);
    ck_assert_str_eq(res.out, "UNHEALTHY: lag 0.250 s exceeds --max-lag-seconds 0.1\n");
    result_free(&res);

    res = check_doc(&r, sample_doc, -1, 100);
    ck_assert_int_eq(res.rc, STATUS_EXIT_UNHEALTHY);
    ck_assert_str_eq(res.out, "UNHEALTHY: lag 256 bytes exceeds --max-lag-bytes 100\n");
    result_free(&res);

    res = check_doc(&r,
                    "{\"state\":\"reconnecting\",\"last_error\":\"could not connect to "
                    "PostgreSQL: Connection refused\",\"sinks\":[]}",
                    -1, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_UNHEALTHY);
    ck_assert_str_eq(res.out, "UNHEALTHY: state is reconnecting: could not connect to "
                              "PostgreSQL: Connection refused\n");
    result_free(&res);

    res = check_doc(&r, "{\"state\":\"waiting_for_slot\",\"last_error\":\"\"}", -1, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_UNHEALTHY);
    ck_assert_str_eq(res.out, "UNHEALTHY: state is waiting_for_slot\n");
    result_free(&res);

    res = check_doc(&r,
                    "{\"state\":\"streaming\",\"lag_seconds\":0,\"lag_bytes\":0,\"sinks\":["
                    "{\"name\":\"file\",\"state\":\"ok\",\"last_error\":\"\"},"
                    "{\"name\":\"kafka\",\"state\":\"failed\",\"last_error\":\"broker said "
                    "no\"}]}",
                    -1, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_UNHEALTHY);
    ck_assert_str_eq(res.out, "UNHEALTHY: sink kafka failed: broker said no\n");
    result_free(&res);
    buf_free(&r.doc);
}
END_TEST

/* The slot monitor's members as daemon/slot_monitor.c renders them. */
#define SLOT_DOC(wal_status, safe, warning)                                                       \
    "{\"state\":\"streaming\",\"lag_seconds\":0.5,\"lag_bytes\":10,\"slot_health\":{"            \
    "\"monitor\":\"connected\",\"wal_status\":\"" wal_status "\",\"safe_wal_size\":" safe ","   \
    "\"retained_bytes\":4096,\"restart_lsn\":\"0/10\",\"slot_confirmed_lsn\":\"0/20\","          \
    "\"active\":true,\"checked_seconds_ago\":1.0,\"warning\":\"" warning "\","                   \
    "\"last_error\":\"\"},\"heartbeat\":{\"interval_seconds\":10.000,\"sent\":3,"                \
    "\"last_lsn\":\"0/30\",\"lag_seconds\":0.125,\"last_error\":\"\"},\"sinks\":[]}"

START_TEST(test_check_slot_health)
{
    Render r = {BUF_INIT, 0};
    Result res;

    res = check_doc(&r, SLOT_DOC("reserved", "null", ""), -1, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_str_eq(res.out, "OK: streaming, lag 0.500 s, 10 bytes\n");
    result_free(&res);
    /* a low safe_wal_size is a warning, not a failed probe */
    res = check_doc(&r, SLOT_DOC("extended", "1024", "slot has only 1.0 kB left"), -1, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    result_free(&res);
    res = check_doc(&r, SLOT_DOC("unreserved", "-4096", "slot \\\"x\\\" is unreserved"), -1, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_UNHEALTHY);
    ck_assert_str_eq(res.out, "UNHEALTHY: slot wal_status is unreserved: slot \"x\" is unreserved\n");
    result_free(&res);
    res = check_doc(&r, SLOT_DOC("lost", "null", ""), -1, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_UNHEALTHY);
    ck_assert_str_eq(res.out, "UNHEALTHY: slot wal_status is lost\n");
    result_free(&res);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_table_slot_health)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;

    render_set(&r, SLOT_DOC("unreserved", "-4096", "slot is unreserved"));
    srv = start("s.sock", &r);
    res = run_client(tpath("s.sock"), false, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_msg(strstr(res.out, "\nslot wal_status unreserved  safe_wal_size -4096 bytes  "
                                  "retained 4096 bytes  monitor connected  heartbeat lag 0.125 s\n"
                                  "slot warning: slot is unreserved\n") != NULL,
                  "got:\n%s", res.out);
    result_free(&res);
    status_server_free(srv);
    render_set(&r, SLOT_DOC("reserved", "null", ""));
    srv = start("s.sock", &r);
    res = run_client(tpath("s.sock"), false, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_msg(strstr(res.out, "\nslot wal_status reserved  safe_wal_size -  retained 4096 "
                                  "bytes  monitor connected  heartbeat lag 0.125 s\nSINK") != NULL,
                  "got:\n%s", res.out);
    result_free(&res);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

/* The initial snapshot as daemon/snapshot.c renders it. */
#define SNAPSHOT_DOC(state, sink_state)                                                            \
    "{\"state\":\"" state "\",\"lag_seconds\":900,\"lag_bytes\":0,\"snapshot\":{"                    \
    "\"state\":\"reading\",\"consistent_lsn\":\"0/1DB4FF0\",\"workers\":2,\"rows\":523000,"        \
    "\"estimated_rows\":1003000,\"elapsed_seconds\":2.5,\"rows_per_second\":209200,"             \
    "\"eta_seconds\":2,\"tables\":[{\"table\":\"public.orders\",\"rows\":520000,"                \
    "\"estimated_rows\":1000000,\"ranges\":9,\"ranges_done\":4,\"done\":false},"                \
    "{\"table\":\"public.stores\",\"rows\":3000,\"estimated_rows\":3000,\"ranges\":1,"           \
    "\"ranges_done\":1,\"done\":true}]},\"sinks\":[{\"name\":\"file\",\"state\":\"" sink_state   \
    "\",\"last_error\":\"disk full\"}]}"

/* A snapshot is healthy whatever its age; the table shows its progress. */
START_TEST(test_snapshot_progress)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;

    res = check_doc(&r, SNAPSHOT_DOC("snapshot", "ok"), 300, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_str_eq(res.out, "OK: initial snapshot, 523000 of ~1003000 rows\n");
    result_free(&res);
    res = check_doc(&r, SNAPSHOT_DOC("snapshot", "failed"), -1, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_UNHEALTHY);
    ck_assert_str_eq(res.out, "UNHEALTHY: sink file failed: disk full\n");
    result_free(&res);
    /* streaming with the same lag is judged by the limits as always */
    res = check_doc(&r, SNAPSHOT_DOC("streaming", "ok"), 300, -1);
    ck_assert_int_eq(res.rc, STATUS_EXIT_UNHEALTHY);
    result_free(&res);

    render_set(&r, SNAPSHOT_DOC("snapshot", "ok"));
    srv = start("s.sock", &r);
    res = run_client(tpath("s.sock"), false, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_msg(strstr(res.out, "\nsnapshot reading: 523000 of ~1003000 rows, 209200 rows/s, "
                                  "ETA 2 s, 2.5 s elapsed, consistent point 0/1DB4FF0\n"
                                  "  public.orders  520000 of ~1000000 rows, ranges 4/9\n"
                                  "  public.stores  3000 rows, done\nSINK") != NULL,
                  "got:\n%s", res.out);
    result_free(&res);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_table_missing_extra_keys_escapes)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;

    render_set(&r,
               " {\"extra\":{\"nested\":[1,{\"pid\":9},[]],\"x\":null},\"version\":\"0.1.0\","
               "\"pid\":77,\"state\":\"reconnecting\",\"slot\":null,\"lag_bytes\":0,"
               "\"uptime_seconds\":3725.9,\"last_error\":\"could not connect: \\\"db\\\"\\ndown "
               "\\u00e9\\ud83d\\ude00\\u001b[31m\",\"sinks\":[{\"name\":\"kafka\",\"state\":"
               "\"retrying\",\"events\":123456789,\"retries\":4,\"last_error\":\"broker\\tdown\","
               "\"future\":{\"a\":[]}},{\"name\":\"elasticsearch\",\"state\":\"ok\","
               "\"durable_lsn\":\"AB/CDEF0123\",\"queue_depth\":12,\"dead_letters\":1}],"
               "\"more\":true}\n\n");
    srv = start("s.sock", &r);
    res = run_client(tpath("s.sock"), false, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_str_eq(res.out,
                     "pgfan 0.1.0 (pid 77)  state: reconnecting  slot: -  database: -\n"
                     "received -  confirmed -  server end -\n"
                     "lag 0 bytes, - s   in flight: - transactions   up 1 h 2 min\n"
                     "last error: could not connect: \"db\" down \xc3\xa9\xf0\x9f\x98\x80 [31m\n"
                     "SINK           STATE     DURABLE      QUEUE     EVENTS  RETRIES  ERRORS  DEAD  "
                     "LAST ERROR\n"
                     "kafka          retrying  -                -  123456789        4       -     -  "
                     "broker down\n"
                     "elasticsearch  ok        AB/CDEF0123     12          -        -       -     1  "
                     "-\n");
    result_free(&res);

    /* --json keeps the document as sent, only the trailing newlines become one. */
    res = run_client(tpath("s.sock"), true, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_uint_eq(strlen(res.out), r.doc.len - 1);
    ck_assert_int_eq(strncmp(res.out, r.doc.data, r.doc.len - 2), 0);
    result_free(&res);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_no_sinks)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;

    render_set(&r, "{\"version\":\"0.1.0\",\"uptime_seconds\":200000}");
    srv = start("s.sock", &r);
    res = run_client(tpath("s.sock"), false, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_str_eq(res.out,
                     "pgfan 0.1.0 (pid -)  state: -  slot: -  database: -\n"
                     "received -  confirmed -  server end -\n"
                     "lag - bytes, - s   in flight: - transactions   up 2 d 7 h\n"
                     "SINK  STATE  DURABLE  QUEUE  EVENTS  RETRIES  ERRORS  DEAD  LAST ERROR\n");
    result_free(&res);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_server_appends_newline)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Buf got = BUF_INIT;
    int fd;

    render_set(&r, "{}");
    srv = start("s.sock", &r);
    fd = raw_connect(tpath("s.sock"));
    ck_assert_int_eq(read_to_eof(fd, 4096, &got), 0);
    ck_assert_str_eq(got.data, "{}\n");
    close(fd);
    buf_free(&got);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_socket_mode)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    struct stat st;

    render_set(&r, "{}");
    srv = start("s.sock", &r);
    ck_assert_int_eq(lstat(tpath("s.sock"), &st), 0);
    ck_assert(S_ISSOCK(st.st_mode));
    ck_assert_int_eq(st.st_mode & 07777, 0660);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_free_unlinks_and_closes_clients)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    struct stat st;
    Buf got = BUF_INIT;
    int fd;

    render_big(&r, 600 * 1024);
    srv = start("s.sock", &r);
    fd = raw_connect(tpath("s.sock"));
    pump_until_clients(srv, 1);
    status_server_free(srv);
    ck_assert_int_eq(lstat(tpath("s.sock"), &st), -1);
    ck_assert_int_eq(errno, ENOENT);
    /* The client gets what was written, then EOF: no loop needed any more. */
    ck_assert_int_eq(read_to_eof(fd, 65536, &got), 0);
    ck_assert_uint_gt(got.len, 0);
    ck_assert_uint_lt(got.len, r.doc.len);
    close(fd);
    buf_free(&got);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_free_keeps_replaced_file)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    struct stat st;
    int fd;

    render_set(&r, "{}");
    srv = start("s.sock", &r);
    /* Somebody else took the path over: their file must survive our exit. */
    ck_assert_int_eq(unlink(tpath("s.sock")), 0);
    fd = open(tpath("s.sock"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    status_server_free(srv);
    ck_assert_int_eq(lstat(tpath("s.sock"), &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_client_request_ignored)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Buf got = BUF_INIT;
    int fd;

    render_set(&r, sample_doc);
    srv = start("s.sock", &r);
    fd = raw_connect(tpath("s.sock"));
    /* Unread input at close would turn the client's EOF into ECONNRESET. */
    ck_assert_int_eq(send(fd, "status\n", 7, MSG_NOSIGNAL), 7);
    ck_assert_int_eq(read_to_eof(fd, 4096, &got), 0);
    ck_assert_uint_eq(got.len, strlen(sample_doc) + 1);
    ck_assert_int_eq(memcmp(got.data, sample_doc, strlen(sample_doc)), 0);
    close(fd);
    buf_free(&got);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

/* ---- socket path errors ------------------------------------------------ */

START_TEST(test_stale_socket_replaced)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;
    struct sockaddr_un addr;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    /* A socket file whose owner died: bound, never unlinked. */
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, tpath("s.sock"));
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    close(fd);

    render_set(&r, sample_doc);
    srv = start("s.sock", &r);
    res = run_client(tpath("s.sock"), true, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_int_eq(strncmp(res.out, sample_doc, strlen(sample_doc)), 0);
    result_free(&res);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_live_listener)
{
    Render r = {BUF_INIT, 0};
    PfError err;
    char want[512];
    int other = raw_listen(tpath("s.sock"), 4);
    struct stat st;

    err_clear(&err);
    ck_assert_ptr_null(status_server_new(loop, tpath("s.sock"), render_cb, &r, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    snprintf(want, sizeof want,
             "could not create status socket \"%s\": another process is listening on it",
             tpath("s.sock"));
    ck_assert_str_eq(err.msg, want);
    ck_assert_str_eq(err.hint,
                     "is another pgfan running? Stop it, or give this instance its own [status] "
                     "socket path");
    /* The other process's socket is left alone. */
    ck_assert_int_eq(lstat(tpath("s.sock"), &st), 0);
    close(other);
}
END_TEST

START_TEST(test_regular_file)
{
    Render r = {BUF_INIT, 0};
    PfError err;
    char want[512];
    struct stat st;
    int fd = open(tpath("s.sock"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);

    ck_assert_int_ge(fd, 0);
    close(fd);
    err_clear(&err);
    ck_assert_ptr_null(status_server_new(loop, tpath("s.sock"), render_cb, &r, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    snprintf(want, sizeof want,
             "could not create status socket \"%s\": the path exists and is not a socket",
             tpath("s.sock"));
    ck_assert_str_eq(err.msg, want);
    snprintf(want, sizeof want, "remove \"%s\" or set [status] socket to another path",
             tpath("s.sock"));
    ck_assert_str_eq(err.hint, want);
    ck_assert_int_eq(lstat(tpath("s.sock"), &st), 0);
    ck_assert(S_ISREG(st.st_mode));
}
END_TEST

START_TEST(test_path_too_long)
{
    Render r = {BUF_INIT, 0};
    PfError err;
    char path[200];
    char want[512];

    memset(path, 'x', sizeof path);
    path[0] = '/';
    path[108] = '\0'; /* 108 bytes: one more than sun_path can hold with its NUL */
    err_clear(&err);
    ck_assert_ptr_null(status_server_new(loop, path, render_cb, &r, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    snprintf(want, sizeof want,
             "could not create status socket \"%s\": the path is 108 bytes long, the limit is 107 "
             "bytes",
             path);
    ck_assert_str_eq(err.msg, want);
    ck_assert_str_eq(err.hint, "choose a shorter [status] socket path");
}
END_TEST

START_TEST(test_path_empty)
{
    Render r = {BUF_INIT, 0};
    PfError err;

    err_clear(&err);
    ck_assert_ptr_null(status_server_new(loop, "", render_cb, &r, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, "could not create status socket \"\": the path is empty");
    ck_assert_str_eq(err.hint, "set [status] socket to a path such as /run/pgfan/status.sock");
}
END_TEST

START_TEST(test_missing_directory)
{
    Render r = {BUF_INIT, 0};
    PfError err;
    char want[512];

    err_clear(&err);
    ck_assert_ptr_null(status_server_new(loop, tpath("nodir/s.sock"), render_cb, &r, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    snprintf(want, sizeof want,
             "could not create status socket \"%s\": directory \"%s\" does not exist",
             tpath("nodir/s.sock"), tpath("nodir"));
    ck_assert_str_eq(err.msg, want);
    ck_assert_str_eq(err.hint,
                     "create the directory (under systemd: RuntimeDirectory=pgfan) or set [status] "
                     "socket to a path in an existing directory");
}
END_TEST

START_TEST(test_parent_not_directory)
{
    Render r = {BUF_INIT, 0};
    PfError err;
    char want[512];
    int fd = open(tpath("file"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);

    ck_assert_int_ge(fd, 0);
    close(fd);
    err_clear(&err);
    ck_assert_ptr_null(status_server_new(loop, tpath("file/s.sock"), render_cb, &r, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    snprintf(want, sizeof want, "could not create status socket \"%s\": Not a directory",
             tpath("file/s.sock"));
    ck_assert_str_eq(err.msg, want);
}
END_TEST

START_TEST(test_directory_not_writable)
{
    Render r = {BUF_INIT, 0};
    PfError err;
    char want[512];
    StatusServer *srv;

    ck_assert_int_eq(mkdir(tpath("ro"), 0555), 0);
    /* root ignores directory modes: act as nobody, keeping the saved uid to come back. */
    if (geteuid() == 0) {
        ck_assert_int_eq(chmod(tmpdir, 0711), 0);
        ck_assert_int_eq(setegid(65534), 0);
        ck_assert_int_eq(seteuid(65534), 0);
    }
    err_clear(&err);
    srv = status_server_new(loop, tpath("ro/s.sock"), render_cb, &r, &err);
    if (getuid() == 0) {
        ck_assert_int_eq(seteuid(0), 0);
        ck_assert_int_eq(setegid(0), 0);
    }
    ck_assert_ptr_null(srv);
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    snprintf(want, sizeof want, "could not create status socket \"%s\": Permission denied",
             tpath("ro/s.sock"));
    ck_assert_str_eq(err.msg, want);
    snprintf(want, sizeof want, "pgfan needs write access to directory \"%s\"", tpath("ro"));
    ck_assert_str_eq(err.hint, want);
}
END_TEST

/* ---- flow control ------------------------------------------------------ */

START_TEST(test_stuck_client_does_not_block_others)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Buf got = BUF_INIT;
    int stuck;
    int other;

    /* Larger than a unix socket's send buffer, so the stuck client stays pending. */
    render_big(&r, 600 * 1024);
    srv = start("s.sock", &r);
    stuck = raw_connect(tpath("s.sock"));
    pump_until_clients(srv, 1);

    other = raw_connect(tpath("s.sock"));
    ck_assert_int_eq(read_to_eof(other, 65536, &got), 0);
    ck_assert_uint_eq(got.len, r.doc.len + 1);
    ck_assert_int_eq(memcmp(got.data, r.doc.data, r.doc.len), 0);
    ck_assert_uint_eq(status_server_client_count(srv), 1); /* the stuck one */

    /* And the stuck one still gets everything once it reads. */
    buf_reset(&got);
    ck_assert_int_eq(read_to_eof(stuck, 65536, &got), 0);
    ck_assert_uint_eq(got.len, r.doc.len + 1);
    ck_assert_int_eq(memcmp(got.data, r.doc.data, r.doc.len), 0);
    ck_assert_uint_eq(status_server_client_count(srv), 0);
    close(stuck);
    close(other);
    buf_free(&got);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_large_document_slow_reader)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Buf got = BUF_INIT;
    Result res;
    int fd;

    render_big(&r, 200 * 1000);
    srv = start("s.sock", &r);
    fd = raw_connect(tpath("s.sock"));
    /* 1000 bytes per loop turn: hundreds of partial writes on the server side. */
    ck_assert_int_eq(read_to_eof(fd, 1000, &got), 0);
    ck_assert_uint_eq(got.len, r.doc.len + 1);
    ck_assert_int_eq(memcmp(got.data, r.doc.data, r.doc.len), 0);
    ck_assert_int_eq(got.data[r.doc.len], '\n');
    close(fd);

    res = run_client(tpath("s.sock"), true, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    ck_assert_uint_eq(strlen(res.out), r.doc.len + 1);
    ck_assert_int_eq(memcmp(res.out, r.doc.data, r.doc.len), 0);
    result_free(&res);
    buf_free(&got);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_client_cap)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Buf got = BUF_INIT;
    int fds[STATUS_MAX_CLIENTS];
    int extra;

    render_big(&r, 600 * 1024);
    srv = start("s.sock", &r);
    for (int i = 0; i < STATUS_MAX_CLIENTS; i++) {
        fds[i] = raw_connect(tpath("s.sock"));
        pump_until_clients(srv, (size_t)i + 1);
    }
    /* One too many: accepted and closed at once, nothing written. */
    extra = raw_connect(tpath("s.sock"));
    ck_assert_int_eq(read_to_eof(extra, 65536, &got), 0);
    ck_assert_uint_eq(got.len, 0);
    ck_assert_uint_eq(status_server_client_count(srv), STATUS_MAX_CLIENTS);
    close(extra);

    /* A slot freed is a slot reused. */
    close(fds[0]);
    pump_until_clients(srv, STATUS_MAX_CLIENTS - 1);
    fds[0] = raw_connect(tpath("s.sock"));
    pump_until_clients(srv, STATUS_MAX_CLIENTS);
    for (int i = 0; i < STATUS_MAX_CLIENTS; i++)
        close(fds[i]);
    pump_until_clients(srv, 0);
    buf_free(&got);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_stuck_client_dropped_after_timeout)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Buf got = BUF_INIT;
    int stuck;
    int other;

    clock_set_fake(1000 * USECS_PER_SEC, INT64_C(1763632800000000));
    render_big(&r, 600 * 1024);
    srv = start("s.sock", &r);
    stuck = raw_connect(tpath("s.sock"));
    pump_until_clients(srv, 1);

    /* Just before the deadline the client is kept... */
    clock_advance_fake(STATUS_WRITE_TIMEOUT - 1);
    render_set(&r, "{}");
    other = raw_connect(tpath("s.sock"));
    ck_assert_int_eq(read_to_eof(other, 4096, &got), 0);
    ck_assert_uint_eq(status_server_client_count(srv), 1);
    close(other);

    /* ...at the deadline the next accept drops it. */
    clock_advance_fake(1);
    other = raw_connect(tpath("s.sock"));
    buf_reset(&got);
    ck_assert_int_eq(read_to_eof(other, 4096, &got), 0);
    ck_assert_str_eq(got.data, "{}\n");
    ck_assert_uint_eq(status_server_client_count(srv), 0);

    /* The dropped client sees a truncated document, then EOF. */
    buf_reset(&got);
    ck_assert_int_eq(read_to_eof(stuck, 65536, &got), 0);
    ck_assert_uint_gt(got.len, 0);
    ck_assert_uint_lt(got.len, 600 * 1024);
    close(stuck);
    close(other);
    buf_free(&got);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_client_gone_mid_write)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;
    int fd;

    render_big(&r, 600 * 1024);
    srv = start("s.sock", &r);
    fd = raw_connect(tpath("s.sock"));
    pump_until_clients(srv, 1);
    close(fd);
    /* The next write fails with EPIPE: no SIGPIPE, the client is closed. */
    pump_until_clients(srv, 0);

    render_set(&r, sample_doc);
    res = run_client(tpath("s.sock"), true, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_OK);
    result_free(&res);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_fd_exhaustion_pauses_accept)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Buf got = BUF_INIT;
    struct rlimit old;
    struct rlimit low;
    TimeUs deadline;
    int fd;
    int probe;

    render_set(&r, "{}");
    srv = start("s.sock", &r);
    fd = raw_connect(tpath("s.sock"));
    probe = dup(0);
    ck_assert_int_ge(probe, 0);
    close(probe);
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)probe; /* accept4 needs fd number `probe`: EMFILE */
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
    for (int i = 0; i < 5; i++)
        pump();
    ck_assert_uint_eq(status_server_client_count(srv), 0);
    ck_assert_int_eq(recv(fd, &probe, 1, MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);

    /* Accepting resumes by itself after the pause. */
    deadline = real_now() + 3 * USECS_PER_SEC;
    while (got.len == 0) {
        char c[16];
        ssize_t n = recv(fd, c, sizeof c, MSG_DONTWAIT);
        if (n > 0)
            buf_append(&got, c, (size_t)n);
        ck_assert_msg(real_now() < deadline, "accepting did not resume");
        pump();
    }
    ck_assert_int_eq(read_to_eof(fd, 4096, &got), 0);
    ck_assert_str_eq(got.data, "{}\n");
    close(fd);
    buf_free(&got);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

/* ---- client errors ----------------------------------------------------- */

START_TEST(test_client_unreachable)
{
    FILE *out = tmpfile();
    FILE *errout = tmpfile();
    char want[1024];
    char *o;
    char *e;
    int rc;

    rc = status_client_run(tpath("missing.sock"), false, NULL, out, errout);
    ck_assert_int_eq(rc, STATUS_EXIT_UNREACHABLE);
    o = slurp(out);
    e = slurp(errout);
    ck_assert_str_eq(o, "");
    snprintf(want, sizeof want,
             "could not connect to status socket \"%s\": No such file or directory\n"
             "HINT: is pgfan running? Is the path right (-s SOCKET, or [status] socket in the "
             "config)?\n",
             tpath("missing.sock"));
    ck_assert_str_eq(e, want);
    free(o);
    free(e);
    fclose(out);
    fclose(errout);
}
END_TEST

START_TEST(test_client_refused)
{
    FILE *out = tmpfile();
    FILE *errout = tmpfile();
    struct sockaddr_un addr;
    char want[1024];
    char *e;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, tpath("stale.sock"));
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    close(fd);
    ck_assert_int_eq(status_client_run(tpath("stale.sock"), true, NULL, out, errout),
                     STATUS_EXIT_UNREACHABLE);
    e = slurp(errout);
    snprintf(want, sizeof want,
             "could not connect to status socket \"%s\": Connection refused\nHINT: ",
             tpath("stale.sock"));
    ck_assert_int_eq(strncmp(e, want, strlen(want)), 0);
    free(e);
    fclose(out);
    fclose(errout);
}
END_TEST

START_TEST(test_client_path_too_long)
{
    FILE *out = tmpfile();
    FILE *errout = tmpfile();
    char path[120];
    char want[1024];
    char *e;

    memset(path, 'y', sizeof path);
    path[0] = '/';
    path[110] = '\0';
    ck_assert_int_eq(status_client_run(path, false, NULL, out, errout), STATUS_EXIT_UNREACHABLE);
    e = slurp(errout);
    snprintf(want, sizeof want,
             "could not connect to status socket \"%s\": the path is 110 bytes long, the limit is "
             "107 bytes\nHINT: ",
             path);
    ck_assert_int_eq(strncmp(e, want, strlen(want)), 0);
    free(e);
    fclose(out);
    fclose(errout);
}
END_TEST

START_TEST(test_client_read_timeout)
{
    FILE *out = tmpfile();
    FILE *errout = tmpfile();
    char want[1024];
    char *e;
    int lfd = raw_listen(tpath("mute.sock"), 4); /* accepts in the kernel, never answers */
    TimeUs t0 = real_now();

    ck_assert_int_eq(status_client_run_timeout(tpath("mute.sock"), false, NULL,
                                               200 * USECS_PER_MSEC, out, errout),
                     STATUS_EXIT_UNREACHABLE);
    ck_assert_int_ge(real_now() - t0, 200 * USECS_PER_MSEC);
    e = slurp(errout);
    snprintf(want, sizeof want,
             "could not read status document from \"%s\": timed out after 0.2 s\n"
             "HINT: the daemon accepted the connection but did not answer; is its event loop "
             "stuck?\n",
             tpath("mute.sock"));
    ck_assert_str_eq(e, want);
    free(e);
    close(lfd);
    fclose(out);
    fclose(errout);
}
END_TEST

START_TEST(test_client_connect_timeout)
{
    FILE *out = tmpfile();
    FILE *errout = tmpfile();
    char want[1024];
    char *e;
    int lfd = raw_listen(tpath("full.sock"), 0);
    int filler = raw_connect(tpath("full.sock")); /* fills the backlog of 0 (+1) */
    TimeUs t0 = real_now();

    ck_assert_int_eq(status_client_run_timeout(tpath("full.sock"), false, NULL,
                                               200 * USECS_PER_MSEC, out, errout),
                     STATUS_EXIT_UNREACHABLE);
    ck_assert_int_ge(real_now() - t0, 200 * USECS_PER_MSEC);
    e = slurp(errout);
    snprintf(want, sizeof want,
             "could not connect to status socket \"%s\": timed out after 0.2 s\n"
             "HINT: the daemon does not accept connections; is its event loop stuck?\n",
             tpath("full.sock"));
    ck_assert_str_eq(e, want);
    free(e);
    close(filler);
    close(lfd);
    fclose(out);
    fclose(errout);
}
END_TEST

/* Documents the daemon must never send; each must give exit 1 and name the byte. */
static const struct {
    const char *doc;
    const char *cause;
} bad_docs[] = {
    {"{\"version\":\"0.1.0\"", "invalid JSON at byte 18"},
    {"{\"a\" 1}", "invalid JSON at byte 5"},        /* jsmn accepts a missing colon */
    {"{\"a\":1 \"b\":2}", "invalid JSON at byte 7"}, /* and a missing comma */
    {"{\"a\":tru}", "invalid JSON at byte 5"},
    {"{\"a\":1,}", "invalid JSON at byte 7"},
    {"{\"a\":\"x\\u12\"}", "invalid JSON at byte 11"},
    {"{\"a\":\"x\x01\"}", "invalid JSON at byte 7"},
    {"{\"a\":01}", "invalid JSON at byte 6"},
    {"{} {}", "invalid JSON at byte 3"},
    {"not json", "invalid JSON at byte 0"},
    {"[1,2,3]", "not a JSON object"},
    {"\"text\"", "not a JSON object"},
    {"", "the daemon closed the connection without sending one"},
};

START_TEST(test_client_bad_document)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;
    char want[1024];

    render_set(&r, bad_docs[_i].doc);
    srv = start("s.sock", &r);
    for (int json = 0; json <= 1; json++) {
        res = run_client(tpath("s.sock"), json, false, STATUS_CLIENT_TIMEOUT);
        ck_assert_int_eq(res.rc, STATUS_EXIT_BAD_DOCUMENT);
        ck_assert_str_eq(res.out, "");
        snprintf(want, sizeof want, "could not parse status document from \"%s\": %s\n",
                 tpath("s.sock"), bad_docs[_i].cause);
        ck_assert_int_eq(strncmp(res.err, want, strlen(want)), 0);
        result_free(&res);
    }
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_client_empty_document_hint)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;
    char want[1024];

    render_set(&r, "");
    srv = start("s.sock", &r);
    res = run_client(tpath("s.sock"), false, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_BAD_DOCUMENT);
    snprintf(want, sizeof want,
             "could not parse status document from \"%s\": the daemon closed the connection "
             "without sending one\nHINT: the daemon serves at most 32 clients at once; try again\n",
             tpath("s.sock"));
    ck_assert_str_eq(res.err, want);
    result_free(&res);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_client_too_large)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    Result res;
    char want[1024];

    render_big(&r, STATUS_CLIENT_MAX_DOC + 100);
    srv = start("s.sock", &r);
    res = run_client(tpath("s.sock"), true, NULL, STATUS_CLIENT_TIMEOUT);
    ck_assert_int_eq(res.rc, STATUS_EXIT_BAD_DOCUMENT);
    ck_assert_str_eq(res.out, "");
    snprintf(want, sizeof want,
             "could not read status document from \"%s\": larger than 1048576 bytes\n",
             tpath("s.sock"));
    ck_assert_str_eq(res.err, want);
    result_free(&res);
    /* The server drops the client that stopped reading: EPIPE, no SIGPIPE. */
    pump_until_clients(srv, 0);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

START_TEST(test_client_output_error)
{
    Render r = {BUF_INIT, 0};
    StatusServer *srv;
    FILE *out = fopen("/dev/full", "w");
    FILE *errout = tmpfile();
    TimeUs deadline = real_now() + 5 * USECS_PER_SEC;
    pid_t pid;
    int st = 0;
    char *e;

    ck_assert_ptr_nonnull(out);
    render_set(&r, sample_doc);
    srv = start("s.sock", &r);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(status_client_run(tpath("s.sock"), true, NULL, out, errout));
    while (waitpid(pid, &st, WNOHANG) == 0) {
        ck_assert(real_now() < deadline);
        pump();
    }
    ck_assert_int_eq(WEXITSTATUS(st), 1);
    e = slurp(errout);
    ck_assert_str_eq(e, "could not write status output: No space left on device\n");
    free(e);
    fclose(out);
    fclose(errout);
    status_server_free(srv);
    buf_free(&r.doc);
}
END_TEST

/* ---- suite ------------------------------------------------------------- */

static Suite *status_suite(void)
{
    Suite *s = suite_create("status");
    TCase *tc;

    tc = tcase_create("round_trip");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_json_mode);
    tcase_add_test(tc, test_table_mode);
    tcase_add_test(tc, test_check_mode);
    tcase_add_test(tc, test_check_slot_health);
    tcase_add_test(tc, test_table_slot_health);
    tcase_add_test(tc, test_snapshot_progress);
    tcase_add_test(tc, test_table_missing_extra_keys_escapes);
    tcase_add_test(tc, test_no_sinks);
    tcase_add_test(tc, test_server_appends_newline);
    tcase_add_test(tc, test_socket_mode);
    tcase_add_test(tc, test_free_unlinks_and_closes_clients);
    tcase_add_test(tc, test_free_keeps_replaced_file);
    tcase_add_test(tc, test_client_request_ignored);
    suite_add_tcase(s, tc);

    tc = tcase_create("socket_path");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_stale_socket_replaced);
    tcase_add_test(tc, test_live_listener);
    tcase_add_test(tc, test_regular_file);
    tcase_add_test(tc, test_path_too_long);
    tcase_add_test(tc, test_path_empty);
    tcase_add_test(tc, test_missing_directory);
    tcase_add_test(tc, test_parent_not_directory);
    tcase_add_test(tc, test_directory_not_writable);
    suite_add_tcase(s, tc);

    tc = tcase_create("flow_control");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 15);
    tcase_add_test(tc, test_stuck_client_does_not_block_others);
    tcase_add_test(tc, test_large_document_slow_reader);
    tcase_add_test(tc, test_client_cap);
    tcase_add_test(tc, test_stuck_client_dropped_after_timeout);
    tcase_add_test(tc, test_client_gone_mid_write);
    tcase_add_test(tc, test_fd_exhaustion_pauses_accept);
    suite_add_tcase(s, tc);

    tc = tcase_create("client_errors");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 15);
    tcase_add_test(tc, test_client_unreachable);
    tcase_add_test(tc, test_client_refused);
    tcase_add_test(tc, test_client_path_too_long);
    tcase_add_test(tc, test_client_read_timeout);
    tcase_add_test(tc, test_client_connect_timeout);
    tcase_add_loop_test(tc, test_client_bad_document, 0,
                        (int)(sizeof bad_docs / sizeof bad_docs[0]));
    tcase_add_test(tc, test_client_empty_document_hint);
    tcase_add_test(tc, test_client_too_large);
    tcase_add_test(tc, test_client_output_error);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(status_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
