/*
 * test_metrics.c - unit tests of the HTTP metrics/health server (daemon/metrics.c).
 *
 * The server runs on 127.0.0.1:0 in the test process; the test is the
 * client (plain sockets) and drives the loop with loop_run_once() between
 * its reads, so nothing sleeps.
 */
#include "../../common/buf.h"
#include "../../common/clock.h"
#include "../../common/log.h"
#include "../../common/loop.h"
#include "../../daemon/metrics.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static Loop *loop;
static MetricsServer *srv;
static bool ready_answer;
static int render_calls;

static void render(void *arg, Buf *out)
{
    (void)arg;
    render_calls++;
    metrics_append_header(out, "pgfan_up", "gauge", "1 while pgfan runs");
    buf_append_str(out, "pgfan_up 1\n");
}

static bool ready(void *arg, Buf *out)
{
    (void)arg;
    buf_append_str(out, ready_answer ? "streaming" : "reconnecting");
    return ready_answer;
}

static void setup(void)
{
    MetricsHandlers h = {.render = render, .ready = ready, .arg = NULL};
    PfError err;

    loop = loop_new();
    ck_assert_ptr_nonnull(loop);
    log_set_level(LOG_LEVEL_ERROR); /* expected warnings would only clutter the output */
    ready_answer = true;
    render_calls = 0;
    srv = metrics_server_new(loop, "127.0.0.1:0", &h, &err);
    ck_assert_msg(srv != NULL, "metrics_server_new: %s", err.msg);
    ck_assert_int_gt(metrics_server_port(srv), 0);
}

static void teardown(void)
{
    metrics_server_free(srv);
    srv = NULL;
    clock_set_fake(-1, 0);
    loop_free(loop);
}

/* ---- client helpers ---- */

static int connect_to(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* Loopback: completes from the backlog before the server accepts. */
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        ck_assert_int_gt(n, 0);
        data += n;
        len -= (size_t)n;
    }
}

/* Turns the loop once, waiting at most 10 ms. */
static void turn(void)
{
    ck_assert(loop_run_once(loop, clock_mono_us() + 10 * USECS_PER_MSEC));
}

/* Drives the loop until the server closes fd; returns what it sent (caller frees). */
static char *read_to_eof(int fd)
{
    Buf b = BUF_INIT;
    TimeUs give_up = clock_mono_us() + 10 * USECS_PER_SEC;

    for (;;) {
        char chunk[4096];
        ssize_t n = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n > 0) {
            buf_append(&b, chunk, (size_t)n);
            continue;
        }
        if (n == 0)
            break;
        ck_assert_msg(errno == EAGAIN || errno == EWOULDBLOCK, "recv: %s", strerror(errno));
        ck_assert_msg(clock_mono_us() < give_up, "no answer within 10 s");
        turn();
    }
    close(fd);
    return b.data ? b.data : strdup("");
}

static char *exchange(const char *request)
{
    int fd = connect_to(metrics_server_port(srv));

    send_all(fd, request, strlen(request));
    return read_to_eof(fd);
}

static const char *body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    ck_assert_ptr_nonnull(p);
    return p + 4;
}

/* ---- routes ---- */

START_TEST(test_metrics_route)
{
    char *r = exchange("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
    const char *body = "# HELP pgfan_up 1 while pgfan runs\n# TYPE pgfan_up gauge\npgfan_up 1\n";
    char len_header[64];

    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "got %s", r);
    ck_assert_ptr_nonnull(strstr(r, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    snprintf(len_header, sizeof len_header, "\r\nContent-Length: %zu\r\n", strlen(body));
    ck_assert_ptr_nonnull(strstr(r, len_header));
    ck_assert_ptr_nonnull(strstr(r, "\r\nConnection: close\r\n"));
    ck_assert_str_eq(body_of(r), body);
    ck_assert_int_eq(render_calls, 1);
    ck_assert_uint_eq(metrics_server_client_count(srv), 0);
    free(r);

    /* A query string does not change the route. */
    r = exchange("GET /metrics?name[]=pgfan_up HTTP/1.0\r\n\r\n");
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "got %s", r);
    free(r);
}
END_TEST

START_TEST(test_healthz)
{
    char *r;

    ready_answer = false; /* liveness does not depend on readiness */
    r = exchange("GET /healthz HTTP/1.1\r\n\r\n");
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "got %s", r);
    ck_assert_str_eq(body_of(r), "ok\n");
    ck_assert_int_eq(render_calls, 0);
    free(r);
}
END_TEST

START_TEST(test_readyz)
{
    char *r = exchange("GET /readyz HTTP/1.1\r\n\r\n");

    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "got %s", r);
    ck_assert_str_eq(body_of(r), "streaming\n");
    free(r);
    ready_answer = false;
    r = exchange("GET /readyz HTTP/1.1\r\n\r\n");
    ck_assert_msg(strncmp(r, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0, "got %s", r);
    ck_assert_str_eq(body_of(r), "reconnecting\n");
    free(r);
}
END_TEST

START_TEST(test_not_found)
{
    char *r = exchange("GET /nope HTTP/1.1\r\n\r\n");

    ck_assert_msg(strncmp(r, "HTTP/1.1 404 Not Found\r\n", 24) == 0, "got %s", r);
    ck_assert_str_eq(body_of(r), "not found: try /metrics, /healthz or /readyz\n");
    free(r);
    r = exchange("GET /metricsx HTTP/1.1\r\n\r\n");
    ck_assert_msg(strncmp(r, "HTTP/1.1 404 Not Found\r\n", 24) == 0, "got %s", r);
    free(r);
}
END_TEST

START_TEST(test_method_not_allowed)
{
    char *r = exchange("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");

    ck_assert_msg(strncmp(r, "HTTP/1.1 405 Method Not Allowed\r\n", 33) == 0, "got %s", r);
    ck_assert_ptr_nonnull(strstr(r, "\r\nAllow: GET\r\n"));
    ck_assert_int_eq(render_calls, 0);
    free(r);
}
END_TEST

START_TEST(test_bad_request)
{
    char *r = exchange("GARBAGE\r\n\r\n");

    ck_assert_msg(strncmp(r, "HTTP/1.1 400 Bad Request\r\n", 26) == 0, "got %s", r);
    free(r);
}
END_TEST

START_TEST(test_oversized_request)
{
    size_t len = METRICS_MAX_REQUEST + 1000;
    char *big = malloc(len + 1);
    char *r;

    memcpy(big, "GET /metrics HTTP/1.1\r\nX-Pad: ", 30);
    memset(big + 30, 'a', len - 30);
    big[len] = '\0';
    r = exchange(big);
    ck_assert_msg(strncmp(r, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46) == 0,
                  "got %.60s", r);
    ck_assert_int_eq(render_calls, 0);
    ck_assert_uint_eq(metrics_server_client_count(srv), 0);
    free(r);
    free(big);
}
END_TEST

START_TEST(test_request_in_pieces)
{
    int fd = connect_to(metrics_server_port(srv));
    char *r;

    send_all(fd, "GET /healthz HTTP/1.1\r\n\r", 24);
    for (int i = 0; i < 5; i++)
        turn();
    ck_assert_uint_eq(metrics_server_client_count(srv), 1);
    send_all(fd, "\n", 1);
    r = read_to_eof(fd);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "got %s", r);
    free(r);
}
END_TEST

/* ---- slow and idle clients ---- */

START_TEST(test_idle_client_does_not_block_others)
{
    int idle;
    int late;
    char *r;
    char scratch[16];

    clock_set_fake(1000 * USECS_PER_SEC, 1700000000 * USECS_PER_SEC);
    idle = connect_to(metrics_server_port(srv));
    turn();
    ck_assert_uint_eq(metrics_server_client_count(srv), 1);

    r = exchange("GET /healthz HTTP/1.1\r\n\r\n");
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "got %s", r);
    free(r);
    ck_assert_uint_eq(metrics_server_client_count(srv), 1); /* the idle one */

    /* Past the deadline, the next accept drops the idle client. */
    clock_advance_fake(METRICS_CLIENT_TIMEOUT + USECS_PER_SEC);
    late = connect_to(metrics_server_port(srv));
    turn();
    ck_assert_uint_eq(metrics_server_client_count(srv), 1); /* only the new one */
    ck_assert_int_eq(recv(idle, scratch, sizeof scratch, MSG_DONTWAIT), 0);
    close(idle);
    send_all(late, "GET /readyz HTTP/1.1\r\n\r\n", 24);
    r = read_to_eof(late);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "got %s", r);
    free(r);
}
END_TEST

START_TEST(test_client_limit)
{
    int fds[METRICS_MAX_CLIENTS];
    int extra;
    char *r;

    for (int i = 0; i < METRICS_MAX_CLIENTS; i++)
        fds[i] = connect_to(metrics_server_port(srv));
    for (int i = 0; i < 5 && metrics_server_client_count(srv) < METRICS_MAX_CLIENTS; i++)
        turn();
    ck_assert_uint_eq(metrics_server_client_count(srv), METRICS_MAX_CLIENTS);

    /* One more is accepted and closed at once, without an answer. */
    extra = connect_to(metrics_server_port(srv));
    r = read_to_eof(extra);
    ck_assert_str_eq(r, "");
    free(r);

    /* The table frees up as clients are answered. */
    send_all(fds[0], "GET /healthz HTTP/1.1\r\n\r\n", 25);
    r = read_to_eof(fds[0]);
    ck_assert_msg(strncmp(r, "HTTP/1.1 200 OK\r\n", 17) == 0, "got %s", r);
    free(r);
    ck_assert_uint_eq(metrics_server_client_count(srv), METRICS_MAX_CLIENTS - 1);
    for (int i = 1; i < METRICS_MAX_CLIENTS; i++)
        close(fds[i]);
    for (int i = 0; i < 20 && metrics_server_client_count(srv) > 0; i++)
        turn();
    ck_assert_uint_eq(metrics_server_client_count(srv), 0);
}
END_TEST

/* ---- setup errors ---- */

START_TEST(test_bad_address)
{
    MetricsHandlers h = {.render = render, .ready = ready, .arg = NULL};
    PfError err;

    ck_assert_ptr_null(metrics_server_new(loop, "nonsense", &h, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, "could not listen on metrics address \"nonsense\": expected host:port");
    ck_assert_str_eq(err.hint,
                     "set [status] metrics_listen to for example 127.0.0.1:9187 or [::1]:9187");
    ck_assert_ptr_null(metrics_server_new(loop, "example.com:80", &h, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_ptr_null(metrics_server_new(loop, "127.0.0.1:65536", &h, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
}
END_TEST

START_TEST(test_port_in_use)
{
    MetricsHandlers h = {.render = render, .ready = ready, .arg = NULL};
    PfError err;
    char addr[64];

    snprintf(addr, sizeof addr, "127.0.0.1:%d", metrics_server_port(srv));
    ck_assert_ptr_null(metrics_server_new(loop, addr, &h, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "could not listen on metrics address \"127.0.0.1:"));
    ck_assert_ptr_nonnull(strstr(err.msg, "\": Address already in use"));
    ck_assert_str_eq(err.hint, "another process (another pgfan?) uses this port: stop it or set "
                               "[status] metrics_listen to a free port");
}
END_TEST

START_TEST(test_address_not_local)
{
    MetricsHandlers h = {.render = render, .ready = ready, .arg = NULL};
    PfError err;

    /* 192.0.2.0/24 is TEST-NET-1: never an address of this host. */
    ck_assert_ptr_null(metrics_server_new(loop, "192.0.2.1:9187", &h, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, "could not listen on metrics address \"192.0.2.1:9187\": Cannot "
                              "assign requested address");
    ck_assert_str_eq(err.hint, "the host is not an address of this machine: use 127.0.0.1 (local "
                               "scrapers) or 0.0.0.0 (all interfaces) in [status] metrics_listen");
}
END_TEST

START_TEST(test_localhost_and_ipv6)
{
    MetricsHandlers h = {.render = render, .ready = ready, .arg = NULL};
    PfError err;
    MetricsServer *other = metrics_server_new(loop, "localhost:0", &h, &err);

    ck_assert_msg(other != NULL, "%s", err.msg);
    ck_assert_int_gt(metrics_server_port(other), 0);
    metrics_server_free(other);
    other = metrics_server_new(loop, "[::1]:0", &h, &err);
    if (other == NULL) {
        /* A host without IPv6 loopback: the error must still be a clean one. */
        ck_assert(err.kind == ERR_CONFIG || err.kind == ERR_FATAL);
        return;
    }
    ck_assert_int_gt(metrics_server_port(other), 0);
    metrics_server_free(other);
}
END_TEST

/* ---- text helpers ---- */

START_TEST(test_label_escaping)
{
    Buf b = BUF_INIT;

    metrics_append_label_value(&b, "a\"b\\c\nd");
    ck_assert_str_eq(b.data, "a\\\"b\\\\c\\nd");
    buf_reset(&b);
    metrics_append_header(&b, "x_total", "counter", "things");
    ck_assert_str_eq(b.data, "# HELP x_total things\n# TYPE x_total counter\n");
    buf_reset(&b);
    {
        const double bounds[] = {0.01, 0.5};
        const uint64_t counts[] = {2, 0, 1}; /* per bucket; the last is +Inf */

        metrics_append_histogram(&b, "t_seconds", "time", bounds, counts, 2, 3.25);
        ck_assert_str_eq(b.data, "# HELP t_seconds time\n# TYPE t_seconds histogram\n"
                                 "t_seconds_bucket{le=\"0.01\"} 2\n"
                                 "t_seconds_bucket{le=\"0.5\"} 2\n"
                                 "t_seconds_bucket{le=\"+Inf\"} 3\n"
                                 "t_seconds_sum 3.250000\nt_seconds_count 3\n");
    }
    buf_free(&b);
    metrics_server_free(NULL);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc;

    tc = tcase_create("routes");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_metrics_route);
    tcase_add_test(tc, test_healthz);
    tcase_add_test(tc, test_readyz);
    tcase_add_test(tc, test_not_found);
    tcase_add_test(tc, test_method_not_allowed);
    tcase_add_test(tc, test_bad_request);
    tcase_add_test(tc, test_oversized_request);
    tcase_add_test(tc, test_request_in_pieces);
    suite_add_tcase(s, tc);

    tc = tcase_create("clients");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_idle_client_does_not_block_others);
    tcase_add_test(tc, test_client_limit);
    suite_add_tcase(s, tc);

    tc = tcase_create("setup");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_bad_address);
    tcase_add_test(tc, test_port_in_use);
    tcase_add_test(tc, test_address_not_local);
    tcase_add_test(tc, test_localhost_and_ipv6);
    tcase_add_test(tc, test_label_escaping);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
