/*
 * metrics.c - HTTP/1.1 server for /metrics, /healthz and /readyz.
 *
 * Modelled on status.c: clients live in a fixed table of
 * METRICS_MAX_CLIENTS slots inside the server (stable pointers for the loop
 * callbacks, bounded memory), each with a fixed request buffer. A client is
 * first read (until "\r\n\r\n"), then answered, then closed: one request per
 * connection, "Connection: close", which every scraper and probe accepts.
 *
 * The per-client deadline is enforced on every accept and by a timerfd
 * armed for the earliest deadline (a timerfd rather than a loop hook: the
 * loop cannot remove hooks and the server may be freed before the loop).
 * Deadlines come from clock_mono_us() so tests can move the fake clock.
 */
#include "metrics.h"

#include "../common/log.h"
#include "../common/mem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define COMPONENT "metrics"
#define LISTEN_BACKLOG 16

/* After EMFILE/ENFILE, stop accepting for this long instead of spinning. */
#define ACCEPT_PAUSE (250 * USECS_PER_MSEC)

/* A warning per this interval at most when clients are refused or dropped. */
#define WARN_INTERVAL (60 * USECS_PER_SEC)

/* Bytes read and discarded before closing (see drain_input). */
#define DRAIN_LIMIT 65536

typedef struct MetricsClient {
    MetricsServer *srv;
    int fd; /* -1: slot free */
    bool answering; /* request read, response being written */
    char req[METRICS_MAX_REQUEST];
    size_t req_len;
    Buf resp;
    size_t sent;
    TimeUs deadline;
} MetricsClient;

struct MetricsServer {
    Loop *loop;
    char *listen_addr;
    int listen_fd;
    int timer_fd;
    int port;
    MetricsHandlers handlers;
    MetricsClient clients[METRICS_MAX_CLIENTS];
    size_t n_clients;
    bool accept_paused;
    TimeUs resume_at;
    TimeUs last_refused_warning;
    TimeUs last_dropped_warning;
};

static void arm_timer(MetricsServer *srv);

/* ---- setup ------------------------------------------------------------- */

/* Parses "host:port" into addr (port 0..65535). */
static bool parse_listen(const char *text, struct sockaddr_storage *addr, socklen_t *len,
                         PfError *err)
{
    char host[64];
    const char *colon;
    size_t hlen;
    long port = 0;

    memset(addr, 0, sizeof *addr);
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            goto bad;
        hlen = (size_t)(close - text - 1);
        if (hlen >= sizeof host)
            goto bad;
        memcpy(host, text + 1, hlen);
        host[hlen] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            goto bad;
        hlen = (size_t)(colon - text);
        if (hlen >= sizeof host)
            goto bad;
        memcpy(host, text, hlen);
        host[hlen] = '\0';
    }
    if (colon[1] == '\0')
        goto bad;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9' || port > 65535)
            goto bad;
        port = port * 10 + (*p - '0');
    }
    if (port > 65535)
        goto bad;

    if (text[0] == '[') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)addr;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
            goto bad;
        *len = sizeof *a6;
    } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)addr;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        /* Not resolved: "localhost" is the loopback address, whatever DNS says. */
        if (strcasecmp(host, "localhost") == 0)
            a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
            goto bad;
        *len = sizeof *a4;
    }
    return true;

bad:
    err_set(err, ERR_CONFIG, "could not listen on metrics address \"%s\": expected host:port", text);
    err_hint(err, "set [status] metrics_listen to for example 127.0.0.1:9187 or [::1]:9187");
    return false;
}

static bool bind_error(const char *text, int errnum, PfError *err)
{
    switch (errnum) {
    case EADDRINUSE:
        err_set(err, ERR_FATAL, "could not listen on metrics address \"%s\": %s", text,
                strerror(errnum));
        err_hint(err,
                 "another process (another pgfan?) uses this port: stop it or set [status] "
                 "metrics_listen to a free port");
        break;
    case EADDRNOTAVAIL:
        err_set(err, ERR_CONFIG, "could not listen on metrics address \"%s\": %s", text,
                strerror(errnum));
        err_hint(err,
                 "the host is not an address of this machine: use 127.0.0.1 (local scrapers) or "
                 "0.0.0.0 (all interfaces) in [status] metrics_listen");
        break;
    case EACCES:
    case EPERM:
        err_set(err, ERR_CONFIG, "could not listen on metrics address \"%s\": %s", text,
                strerror(errnum));
        err_hint(err, "ports below 1024 need privileges: use a port such as 9187");
        break;
    default:
        err_set(err, ERR_FATAL, "could not listen on metrics address \"%s\": %s", text,
                strerror(errnum));
        break;
    }
    return false;
}

static bool open_listener(MetricsServer *srv, PfError *err)
{
    struct sockaddr_storage addr;
    socklen_t len = 0;
    int one = 1;

    if (!parse_listen(srv->listen_addr, &addr, &len, err))
        return false;
    srv->listen_fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (srv->listen_fd < 0)
        return bind_error(srv->listen_addr, errno, err);
    /* A restarted pgfan must not wait for TIME_WAIT connections of the old one. */
    if (setsockopt(srv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        return bind_error(srv->listen_addr, errno, err);
    if (bind(srv->listen_fd, (struct sockaddr *)&addr, len) < 0)
        return bind_error(srv->listen_addr, errno, err);
    if (listen(srv->listen_fd, LISTEN_BACKLOG) < 0)
        return bind_error(srv->listen_addr, errno, err);
    len = sizeof addr;
    if (getsockname(srv->listen_fd, (struct sockaddr *)&addr, &len) < 0)
        return bind_error(srv->listen_addr, errno, err);
    if (addr.ss_family == AF_INET6)
        srv->port = ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    else
        srv->port = ntohs(((struct sockaddr_in *)&addr)->sin_port);
    return true;
}

/* ---- clients ----------------------------------------------------------- */

/*
 * Closing a TCP socket with unread data in its receive queue sends a reset,
 * and the client may then lose the answer. Discard what is there.
 */
static void drain_input(int fd)
{
    char scratch[4096];
    size_t total = 0;

    while (total < DRAIN_LIMIT) {
        ssize_t n = recv(fd, scratch, sizeof scratch, MSG_DONTWAIT);
        if (n > 0)
            total += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else
            break;
    }
}

static void client_close(MetricsClient *c)
{
    MetricsServer *srv = c->srv;

    loop_unwatch(srv->loop, c->fd);
    drain_input(c->fd);
    close(c->fd);
    c->fd = -1;
    c->answering = false;
    c->req_len = 0;
    buf_free(&c->resp);
    c->sent = 0;
    c->deadline = TIME_NEVER;
    srv->n_clients--;
}

static void respond(MetricsClient *c, int code, const char *reason, const char *type,
                    const char *extra_headers, const Buf *body)
{
    size_t body_len = body ? body->len : 0;

    buf_reset(&c->resp);
    buf_printf(&c->resp,
               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
               "Connection: close\r\n\r\n",
               code, reason, type, body_len, extra_headers ? extra_headers : "");
    if (body_len > 0)
        buf_append(&c->resp, body->data, body_len);
    c->answering = true;
    c->sent = 0;
}

static void respond_text(MetricsClient *c, int code, const char *reason, const char *extra_headers,
                         const char *text)
{
    Buf body = BUF_INIT;

    buf_append_str(&body, text);
    respond(c, code, reason, "text/plain; charset=utf-8", extra_headers, &body);
    buf_free(&body);
}

/* Builds the answer to the complete request in c->req. */
static void route(MetricsClient *c)
{
    MetricsServer *srv = c->srv;
    const char *line_end = memchr(c->req, '\r', c->req_len);
    const char *sp1;
    const char *sp2;
    size_t method_len;
    size_t path_len;
    const char *path;
    Buf body = BUF_INIT;

    sp1 = line_end ? memchr(c->req, ' ', (size_t)(line_end - c->req)) : NULL;
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
    if (sp2 == NULL || sp1 == c->req || sp2 == sp1 + 1) {
        respond_text(c, 400, "Bad Request", NULL, "bad request\n");
        return;
    }
    method_len = (size_t)(sp1 - c->req);
    path = sp1 + 1;
    path_len = (size_t)(sp2 - path);
    /* A query string (?name[]=...) does not select anything here. */
    for (size_t i = 0; i < path_len; i++) {
        if (path[i] == '?') {
            path_len = i;
            break;
        }
    }
    if (!(method_len == 3 && memcmp(c->req, "GET", 3) == 0)) {
        respond_text(c, 405, "Method Not Allowed", "Allow: GET\r\n", "method not allowed\n");
        return;
    }
    if (path_len == 8 && memcmp(path, "/metrics", 8) == 0) {
        srv->handlers.render(srv->handlers.arg, &body);
        respond(c, 200, "OK", METRICS_CONTENT_TYPE, NULL, &body);
    } else if (path_len == 8 && memcmp(path, "/healthz", 8) == 0) {
        respond_text(c, 200, "OK", NULL, "ok\n");
    } else if (path_len == 7 && memcmp(path, "/readyz", 7) == 0) {
        bool ready = srv->handlers.ready(srv->handlers.arg, &body);
        if (body.len == 0 || body.data[body.len - 1] != '\n')
            buf_append_char(&body, '\n');
        if (ready)
            respond(c, 200, "OK", "text/plain; charset=utf-8", NULL, &body);
        else
            respond(c, 503, "Service Unavailable", "text/plain; charset=utf-8", NULL, &body);
    } else {
        respond_text(c, 404, "Not Found", NULL, "not found: try /metrics, /healthz or /readyz\n");
    }
    buf_free(&body);
}

/* Reads what is there. Returns true when the request is complete (answer built). Sets *done on EOF/error. */
static bool client_read(MetricsClient *c, bool *done)
{
    *done = false;
    while (c->req_len < sizeof c->req) {
        size_t old = c->req_len;
        size_t from;
        ssize_t n = recv(c->fd, c->req + c->req_len, sizeof c->req - c->req_len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return false;
        if (n <= 0) {
            /* EOF or reset before a complete request: nobody to answer. */
            *done = true;
            return false;
        }
        c->req_len += (size_t)n;
        /* The terminator may straddle two reads: look 3 bytes back. */
        from = old >= 3 ? old - 3 : 0;
        for (size_t i = from; i + 4 <= c->req_len; i++) {
            if (memcmp(c->req + i, "\r\n\r\n", 4) == 0) {
                route(c);
                return true;
            }
        }
    }
    respond_text(c, 431, "Request Header Fields Too Large", NULL, "request too large\n");
    return true;
}

/* Writes what the socket takes. Returns true when the client is finished (done or failed). */
static bool client_flush(MetricsClient *c)
{
    while (c->sent < c->resp.len) {
        ssize_t n = send(c->fd, c->resp.data + c->sent, c->resp.len - c->sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return false;
        log_debug(COMPONENT, "client left before reading the whole answer: %s", strerror(errno));
        return true;
    }
    return true;
}

static void on_client(void *arg, int fd, unsigned events)
{
    MetricsClient *c = arg;
    MetricsServer *srv = c->srv;
    bool done = false;

    (void)fd;
    (void)events; /* on LOOP_ERROR the recv/send below fails and we close */
    if (!c->answering) {
        if (!client_read(c, &done)) {
            if (done) {
                client_close(c);
                arm_timer(srv);
            }
            return;
        }
    }
    if (client_flush(c)) {
        client_close(c);
        arm_timer(srv);
        return;
    }
    if (!loop_watch(srv->loop, c->fd, LOOP_WRITE, on_client, c)) {
        log_warning(COMPONENT, "could not watch a client: %s", strerror(errno));
        client_close(c);
        arm_timer(srv);
    }
}

/* Drops clients whose deadline has passed. */
static void expire_clients(MetricsServer *srv, TimeUs now)
{
    size_t dropped = 0;

    for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++) {
        MetricsClient *c = &srv->clients[i];
        if (c->fd >= 0 && c->deadline <= now) {
            client_close(c);
            dropped++;
        }
    }
    if (dropped > 0 && now - srv->last_dropped_warning >= WARN_INTERVAL) {
        srv->last_dropped_warning = now;
        log_warning(COMPONENT, "dropped %zu HTTP client(s) not done within %d s", dropped,
                    (int)(METRICS_CLIENT_TIMEOUT / USECS_PER_SEC));
    }
}

static MetricsClient *free_slot(MetricsServer *srv)
{
    for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++) {
        if (srv->clients[i].fd < 0)
            return &srv->clients[i];
    }
    return NULL;
}

static void serve(MetricsServer *srv, int fd, TimeUs now)
{
    MetricsClient *c = free_slot(srv);

    if (!c) {
        close(fd);
        if (now - srv->last_refused_warning >= WARN_INTERVAL) {
            srv->last_refused_warning = now;
            log_warning(COMPONENT, "refused an HTTP client: %d clients are already being served",
                        METRICS_MAX_CLIENTS);
        }
        return;
    }
    c->fd = fd;
    c->answering = false;
    c->req_len = 0;
    c->sent = 0;
    c->deadline = now + METRICS_CLIENT_TIMEOUT;
    buf_init(&c->resp);
    srv->n_clients++;
    if (!loop_watch(srv->loop, fd, LOOP_READ, on_client, c)) {
        log_warning(COMPONENT, "could not watch a client: %s", strerror(errno));
        client_close(c);
    }
}

static void on_listen(void *arg, int fd, unsigned events);

static void pause_accept(MetricsServer *srv, TimeUs now, int errnum)
{
    log_warning(COMPONENT, "could not accept an HTTP client: %s; pausing for %d ms",
                strerror(errnum), (int)(ACCEPT_PAUSE / USECS_PER_MSEC));
    srv->accept_paused = true;
    srv->resume_at = now + ACCEPT_PAUSE;
    /* Level-triggered: a pending connection would wake us again at once. */
    loop_watch(srv->loop, srv->listen_fd, 0, on_listen, srv);
}

static void resume_accept(MetricsServer *srv)
{
    srv->accept_paused = false;
    srv->resume_at = TIME_NEVER;
    if (!loop_watch(srv->loop, srv->listen_fd, LOOP_READ, on_listen, srv))
        log_warning(COMPONENT, "could not watch the metrics socket: %s", strerror(errno));
}

static void on_listen(void *arg, int fd, unsigned events)
{
    MetricsServer *srv = arg;
    TimeUs now = clock_mono_us();

    (void)events;
    expire_clients(srv, now);
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accept(srv, now, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warning(COMPONENT, "could not accept an HTTP client: %s", strerror(errno));
            break;
        }
        serve(srv, cfd, now);
    }
    arm_timer(srv);
}

/* ---- timer ------------------------------------------------------------- */

static void arm_timer(MetricsServer *srv)
{
    struct itimerspec its;
    TimeUs when = srv->accept_paused ? srv->resume_at : TIME_NEVER;

    for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++) {
        if (srv->clients[i].fd >= 0 && srv->clients[i].deadline < when)
            when = srv->clients[i].deadline;
    }
    memset(&its, 0, sizeof its);
    if (when != TIME_NEVER) {
        TimeUs rel = when - clock_mono_us();
        if (rel < USECS_PER_MSEC)
            rel = USECS_PER_MSEC; /* zero would disarm */
        its.it_value.tv_sec = (time_t)(rel / USECS_PER_SEC);
        its.it_value.tv_nsec = (long)(rel % USECS_PER_SEC) * 1000;
    }
    if (timerfd_settime(srv->timer_fd, 0, &its, NULL) < 0)
        log_warning(COMPONENT, "could not arm the client timer: %s", strerror(errno));
}

static void on_timer(void *arg, int fd, unsigned events)
{
    MetricsServer *srv = arg;
    uint64_t expirations;
    TimeUs now = clock_mono_us();

    (void)events;
    if (read(fd, &expirations, sizeof expirations) < 0) {
        /* EAGAIN: nothing pending; the checks below are harmless. */
    }
    expire_clients(srv, now);
    if (srv->accept_paused && now >= srv->resume_at)
        resume_accept(srv);
    arm_timer(srv);
}

/* ---- public ------------------------------------------------------------ */

MetricsServer *metrics_server_new(Loop *loop, const char *listen_addr,
                                  const MetricsHandlers *handlers, PfError *err)
{
    MetricsServer *srv = xcalloc(1, sizeof *srv);

    srv->loop = loop;
    srv->listen_addr = xstrdup(listen_addr);
    srv->listen_fd = -1;
    srv->handlers = *handlers;
    srv->resume_at = TIME_NEVER;
    srv->last_refused_warning = INT64_MIN / 2;
    srv->last_dropped_warning = INT64_MIN / 2;
    for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++) {
        srv->clients[i].srv = srv;
        srv->clients[i].fd = -1;
        srv->clients[i].deadline = TIME_NEVER;
    }
    srv->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (srv->timer_fd < 0) {
        err_set(err, ERR_FATAL, "could not listen on metrics address \"%s\": timerfd: %s",
                listen_addr, strerror(errno));
        goto fail;
    }
    if (!open_listener(srv, err))
        goto fail;
    if (!loop_watch(loop, srv->listen_fd, LOOP_READ, on_listen, srv) ||
        !loop_watch(loop, srv->timer_fd, LOOP_READ, on_timer, srv)) {
        err_set(err, ERR_FATAL, "could not watch metrics address \"%s\": %s", listen_addr,
                strerror(errno));
        goto fail;
    }
    log_info(COMPONENT, "serving /metrics, /healthz and /readyz on %s (port %d)", listen_addr,
             srv->port);
    return srv;

fail:
    metrics_server_free(srv);
    return NULL;
}

int metrics_server_port(const MetricsServer *srv)
{
    return srv->port;
}

size_t metrics_server_client_count(const MetricsServer *srv)
{
    return srv->n_clients;
}

void metrics_server_free(MetricsServer *srv)
{
    if (!srv)
        return;
    for (size_t i = 0; i < METRICS_MAX_CLIENTS; i++) {
        if (srv->clients[i].fd >= 0)
            client_close(&srv->clients[i]);
    }
    if (srv->listen_fd >= 0) {
        loop_unwatch(srv->loop, srv->listen_fd);
        close(srv->listen_fd);
    }
    if (srv->timer_fd >= 0) {
        loop_unwatch(srv->loop, srv->timer_fd);
        close(srv->timer_fd);
    }
    free(srv->listen_addr);
    free(srv);
}

/* ---- text format helpers ----------------------------------------------- */

void metrics_append_label_value(Buf *out, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\')
            buf_append_str(out, "\\\\");
        else if (*p == '"')
            buf_append_str(out, "\\\"");
        else if (*p == '\n')
            buf_append_str(out, "\\n");
        else
            buf_append_char(out, *p);
    }
}

void metrics_append_header(Buf *out, const char *name, const char *type, const char *help)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_append_histogram(Buf *out, const char *name, const char *help,
                              const double *bounds, const uint64_t *counts, size_t n_bounds,
                              double sum)
{
    uint64_t cumulative = 0;

    metrics_append_header(out, name, "histogram", help);
    for (size_t i = 0; i < n_bounds; i++) {
        cumulative += counts[i];
        buf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i],
                   (unsigned long long)cumulative);
    }
    cumulative += counts[n_bounds];
    buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
               (unsigned long long)cumulative, name, sum, name, (unsigned long long)cumulative);
}
