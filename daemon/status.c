/*
 * status.c - unix-socket status server.
 *
 * Clients live in a fixed table of STATUS_MAX_CLIENTS slots inside the
 * server, so the loop callbacks get a stable pointer and the memory a flood
 * of connections can pin is bounded (slots x document size).
 *
 * The 5 s write deadline is enforced on every accept and by a timerfd armed
 * for the earliest deadline. A timerfd rather than a loop hook because the
 * loop cannot remove hooks, and the server may be freed before the loop.
 * Deadlines are read from clock_mono_us() so tests can move the fake clock.
 */
#include "status.h"

#include "../common/log.h"
#include "../common/mem.h"

#include <errno.h>
#include <libgen.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#define COMPONENT "status"
#define LISTEN_BACKLOG 16

/* After EMFILE/ENFILE, stop accepting for this long instead of spinning. */
#define ACCEPT_PAUSE (250 * USECS_PER_MSEC)

/* A warning per this interval at most when clients are refused or dropped. */
#define WARN_INTERVAL (60 * USECS_PER_SEC)

/* Bytes a client may have sent us that we read and discard before closing. */
#define DRAIN_LIMIT 65536

typedef struct StatusClient {
    StatusServer *srv;
    int fd; /* -1: slot free */
    Buf doc;
    size_t sent;
    TimeUs deadline;
} StatusClient;

struct StatusServer {
    Loop *loop;
    char *path;
    int listen_fd;
    int timer_fd;
    dev_t dev; /* identity of the socket file we created */
    ino_t ino;
    StatusRender render;
    void *arg;
    StatusClient clients[STATUS_MAX_CLIENTS];
    size_t n_clients;
    bool accept_paused;
    TimeUs resume_at;
    TimeUs last_refused_warning;
    TimeUs last_dropped_warning;
};

static void arm_timer(StatusServer *srv);

/* ---- setup ------------------------------------------------------------- */

static char *parent_dir(const char *path)
{
    char *copy = xstrdup(path);
    char *dir = xstrdup(dirname(copy));

    free(copy);
    return dir;
}

static bool fill_addr(struct sockaddr_un *addr, const char *path, PfError *err)
{
    size_t len = strlen(path);

    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (len == 0) {
        err_set(err, ERR_CONFIG, "could not create status socket \"\": the path is empty");
        err_hint(err, "set [status] socket to a path such as /run/pgfan/status.sock");
        return false;
    }
    if (len >= sizeof addr->sun_path) {
        err_set(err, ERR_CONFIG,
                "could not create status socket \"%s\": the path is %zu bytes long, the limit is "
                "%zu bytes",
                path, len, sizeof addr->sun_path - 1);
        err_hint(err, "choose a shorter [status] socket path");
        return false;
    }
    memcpy(addr->sun_path, path, len + 1);
    return true;
}

/*
 * Is somebody accepting on the socket at addr? A non-blocking connect
 * answers at once: ECONNREFUSED means no listener (a stale file), success
 * or EAGAIN (backlog full) means a live one. Returns 1 live, 0 stale, -1 on
 * another error (errno set).
 */
static int probe_listener(const struct sockaddr_un *addr)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc;
    int saved;

    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0)
        rc = 1;
    else if (errno == EAGAIN || errno == EINPROGRESS)
        rc = 1;
    else if (errno == ECONNREFUSED)
        rc = 0;
    else
        rc = -1;
    saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static bool bind_error(const char *path, int errnum, PfError *err)
{
    char *dir = parent_dir(path);

    switch (errnum) {
    case ENOENT:
        err_set(err, ERR_CONFIG, "could not create status socket \"%s\": directory \"%s\" does not exist",
                path, dir);
        err_hint(err,
                 "create the directory (under systemd: RuntimeDirectory=pgfan) or set [status] "
                 "socket to a path in an existing directory");
        break;
    case EACCES:
    case EPERM:
    case EROFS:
        err_set(err, ERR_CONFIG, "could not create status socket \"%s\": %s", path, strerror(errnum));
        err_hint(err, "pgfan needs write access to directory \"%s\"", dir);
        break;
    case ENOTDIR:
    case ELOOP:
    case ENAMETOOLONG:
        err_set(err, ERR_CONFIG, "could not create status socket \"%s\": %s", path, strerror(errnum));
        break;
    default:
        err_set(err, ERR_FATAL, "could not create status socket \"%s\": %s", path, strerror(errnum));
        break;
    }
    free(dir);
    return false;
}

/*
 * The path is taken. Replace it only when it is a socket nobody listens on:
 * a live listener is most likely another pgfan, and a regular file is a
 * configuration mistake we must not destroy. Returns true when the stale
 * file was removed and bind() may be retried.
 */
static bool clear_stale(const char *path, const struct sockaddr_un *addr, PfError *err)
{
    struct stat st;
    int live;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return true; /* vanished meanwhile: just retry */
        err_set(err, ERR_FATAL, "could not create status socket \"%s\": %s", path, strerror(errno));
        return false;
    }
    if (!S_ISSOCK(st.st_mode)) {
        err_set(err, ERR_CONFIG, "could not create status socket \"%s\": the path exists and is not a socket",
                path);
        err_hint(err, "remove \"%s\" or set [status] socket to another path", path);
        return false;
    }
    live = probe_listener(addr);
    if (live < 0) {
        err_set(err, ERR_FATAL, "could not create status socket \"%s\": could not probe the existing socket: %s",
                path, strerror(errno));
        err_hint(err, "remove \"%s\" if no other process uses it", path);
        return false;
    }
    if (live) {
        err_set(err, ERR_FATAL, "could not create status socket \"%s\": another process is listening on it",
                path);
        err_hint(err,
                 "is another pgfan running? Stop it, or give this instance its own [status] socket path");
        return false;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        err_set(err, ERR_FATAL, "could not remove stale status socket \"%s\": %s", path, strerror(errno));
        return false;
    }
    log_warning(COMPONENT, "removed stale socket \"%s\" (left by a previous run)", path);
    return true;
}

static bool open_listener(StatusServer *srv, PfError *err)
{
    struct sockaddr_un addr;
    struct stat st;

    if (!fill_addr(&addr, srv->path, err))
        return false;
    srv->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (srv->listen_fd < 0)
        return err_set(err, ERR_FATAL, "could not create status socket \"%s\": %s", srv->path,
                       strerror(errno));

    if (bind(srv->listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        if (errno != EADDRINUSE)
            return bind_error(srv->path, errno, err);
        if (!clear_stale(srv->path, &addr, err))
            return false;
        /* A second EADDRINUSE means somebody raced us to the path. */
        if (bind(srv->listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0)
            return bind_error(srv->path, errno, err);
    }
    if (lstat(srv->path, &st) < 0) {
        err_set(err, ERR_FATAL, "could not create status socket \"%s\": %s", srv->path, strerror(errno));
        return false;
    }
    srv->dev = st.st_dev;
    srv->ino = st.st_ino;
    /* After bind, not via umask: the umask is process-wide and not ours to change. */
    if (chmod(srv->path, STATUS_SOCKET_MODE) < 0) {
        err_set(err, ERR_FATAL, "could not set the mode of status socket \"%s\": %s", srv->path,
                strerror(errno));
        return false;
    }
    if (listen(srv->listen_fd, LISTEN_BACKLOG) < 0) {
        err_set(err, ERR_FATAL, "could not listen on status socket \"%s\": %s", srv->path,
                strerror(errno));
        return false;
    }
    return true;
}

/* Removes the socket file, but only if it is still the one we created. */
static void unlink_own(StatusServer *srv)
{
    struct stat st;

    if (srv->ino == 0)
        return;
    if (lstat(srv->path, &st) == 0 && st.st_dev == srv->dev && st.st_ino == srv->ino)
        unlink(srv->path);
    srv->ino = 0;
}

/* ---- clients ----------------------------------------------------------- */

/*
 * Linux resets the peer (ECONNRESET instead of EOF after the document) when
 * a unix socket is closed with unread data in its receive queue; a client
 * that sent a request line would then see an error. Discard what is there.
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

static void client_close(StatusClient *c)
{
    StatusServer *srv = c->srv;

    loop_unwatch(srv->loop, c->fd);
    drain_input(c->fd);
    close(c->fd);
    c->fd = -1;
    buf_free(&c->doc);
    c->sent = 0;
    c->deadline = TIME_NEVER;
    srv->n_clients--;
}

/* Writes what the socket takes. Returns true when the client is finished (done or failed). */
static bool client_flush(StatusClient *c)
{
    while (c->sent < c->doc.len) {
        ssize_t n = send(c->fd, c->doc.data + c->sent, c->doc.len - c->sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return false;
        /* EPIPE/ECONNRESET: the client went away; nothing to report to anyone. */
        log_debug(COMPONENT, "client left before reading the whole document: %s", strerror(errno));
        return true;
    }
    return true;
}

static void on_client(void *arg, int fd, unsigned events)
{
    StatusClient *c = arg;
    StatusServer *srv = c->srv;

    (void)fd;
    (void)events; /* on LOOP_ERROR the send below fails and we close */
    if (client_flush(c)) {
        client_close(c);
        arm_timer(srv);
    }
}

/* Drops clients whose deadline has passed. */
static void expire_clients(StatusServer *srv, TimeUs now)
{
    size_t dropped = 0;

    for (size_t i = 0; i < STATUS_MAX_CLIENTS; i++) {
        StatusClient *c = &srv->clients[i];
        if (c->fd >= 0 && c->deadline <= now) {
            client_close(c);
            dropped++;
        }
    }
    if (dropped > 0 && now - srv->last_dropped_warning >= WARN_INTERVAL) {
        srv->last_dropped_warning = now;
        log_warning(COMPONENT, "dropped %zu client(s) that did not read the status document within %d s",
                    dropped, (int)(STATUS_WRITE_TIMEOUT / USECS_PER_SEC));
    }
}

static StatusClient *free_slot(StatusServer *srv)
{
    for (size_t i = 0; i < STATUS_MAX_CLIENTS; i++) {
        if (srv->clients[i].fd < 0)
            return &srv->clients[i];
    }
    return NULL;
}

static void serve(StatusServer *srv, int fd, TimeUs now)
{
    StatusClient *c = free_slot(srv);

    if (!c) {
        close(fd);
        if (now - srv->last_refused_warning >= WARN_INTERVAL) {
            srv->last_refused_warning = now;
            log_warning(COMPONENT, "refused a client: %d clients are already being served",
                        STATUS_MAX_CLIENTS);
        }
        return;
    }
    c->fd = fd;
    c->sent = 0;
    c->deadline = now + STATUS_WRITE_TIMEOUT;
    buf_init(&c->doc);
    srv->n_clients++;
    srv->render(srv->arg, &c->doc);
    if (c->doc.len > 0 && c->doc.data[c->doc.len - 1] != '\n')
        buf_append_char(&c->doc, '\n');

    if (client_flush(c)) {
        client_close(c);
        return;
    }
    if (!loop_watch(srv->loop, fd, LOOP_WRITE, on_client, c)) {
        log_warning(COMPONENT, "could not watch a client: %s", strerror(errno));
        client_close(c);
    }
}

static void on_listen(void *arg, int fd, unsigned events);

static void pause_accept(StatusServer *srv, TimeUs now, int errnum)
{
    log_warning(COMPONENT, "could not accept a client: %s; pausing for %d ms", strerror(errnum),
                (int)(ACCEPT_PAUSE / USECS_PER_MSEC));
    srv->accept_paused = true;
    srv->resume_at = now + ACCEPT_PAUSE;
    /* Level-triggered: a pending connection would wake us again at once. */
    loop_watch(srv->loop, srv->listen_fd, 0, on_listen, srv);
}

static void resume_accept(StatusServer *srv)
{
    srv->accept_paused = false;
    srv->resume_at = TIME_NEVER;
    if (!loop_watch(srv->loop, srv->listen_fd, LOOP_READ, on_listen, srv))
        log_warning(COMPONENT, "could not watch the status socket: %s", strerror(errno));
}

static void on_listen(void *arg, int fd, unsigned events)
{
    StatusServer *srv = arg;
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
                log_warning(COMPONENT, "could not accept a client: %s", strerror(errno));
            break;
        }
        serve(srv, cfd, now);
    }
    arm_timer(srv);
}

/* ---- timer ------------------------------------------------------------- */

/* Arms the timer for the earliest client deadline or accept resumption, or disarms it. */
static void arm_timer(StatusServer *srv)
{
    struct itimerspec its;
    TimeUs when = srv->accept_paused ? srv->resume_at : TIME_NEVER;

    for (size_t i = 0; i < STATUS_MAX_CLIENTS; i++) {
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
    StatusServer *srv = arg;
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

StatusServer *status_server_new(Loop *loop, const char *path, StatusRender render, void *arg,
                                PfError *err)
{
    StatusServer *srv = xcalloc(1, sizeof *srv);

    srv->loop = loop;
    srv->path = xstrdup(path);
    srv->listen_fd = -1;
    srv->render = render;
    srv->arg = arg;
    srv->resume_at = TIME_NEVER;
    srv->last_refused_warning = INT64_MIN / 2;
    srv->last_dropped_warning = INT64_MIN / 2;
    for (size_t i = 0; i < STATUS_MAX_CLIENTS; i++) {
        srv->clients[i].srv = srv;
        srv->clients[i].fd = -1;
        srv->clients[i].deadline = TIME_NEVER;
    }
    srv->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (srv->timer_fd < 0) {
        err_set(err, ERR_FATAL, "could not create status socket \"%s\": timerfd: %s", path,
                strerror(errno));
        goto fail;
    }
    if (!open_listener(srv, err))
        goto fail;
    if (!loop_watch(loop, srv->listen_fd, LOOP_READ, on_listen, srv) ||
        !loop_watch(loop, srv->timer_fd, LOOP_READ, on_timer, srv)) {
        err_set(err, ERR_FATAL, "could not watch status socket \"%s\": %s", path, strerror(errno));
        goto fail;
    }
    log_info(COMPONENT, "listening on \"%s\"", path);
    return srv;

fail:
    status_server_free(srv);
    return NULL;
}

size_t status_server_client_count(const StatusServer *srv)
{
    return srv->n_clients;
}

void status_server_free(StatusServer *srv)
{
    if (!srv)
        return;
    for (size_t i = 0; i < STATUS_MAX_CLIENTS; i++) {
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
    unlink_own(srv);
    free(srv->path);
    free(srv);
}
