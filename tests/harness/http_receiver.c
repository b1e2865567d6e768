/*
 * http_receiver.c - see http_receiver.h.
 *
 * One accept thread; one thread per connection with blocking I/O. Stopping
 * closes the listening socket's wake pipe and shuts every connection down,
 * which unblocks every thread, then joins them all.
 */
#include "http_receiver.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256
#define MAX_HEADER 65536

typedef struct Conn {
    HttpReceiver *r;
    int fd;
    pthread_t thread;
} Conn;

typedef struct ScriptItem {
    HttpReply reply;
    char *body;
} ScriptItem;

struct HttpReceiver {
    int listen_fd;
    int wake[2]; /* closed write end wakes the accept thread */
    int port;
    pthread_t accept_thread;
    pthread_mutex_t mu;
    bool stopping;

    Conn *conns[MAX_CONNS];
    size_t n_conns;

    ScriptItem *script;
    size_t n_script, next_script;
    HttpReply def;
    char *def_body;
    int random_percent;
    unsigned seed;

    HttpRequest *reqs;
    size_t n_reqs;
};

static int64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* Waits ms unless the receiver stops (the wake pipe's read end turns readable). */
static void pause_ms(HttpReceiver *r, int ms)
{
    struct pollfd p = {.fd = r->wake[0], .events = POLLIN};
    int64_t until = mono_us() + (int64_t)ms * 1000;

    while (ms > 0) {
        int left = (int)((until - mono_us() + 999) / 1000);
        if (left <= 0 || poll(&p, 1, left) != 0)
            break;
    }
}

static const char *find_header_end(const char *buf, size_t len)
{
    for (size_t i = 3; i < len; i++) {
        if (buf[i - 3] == '\r' && buf[i - 2] == '\n' && buf[i - 1] == '\r' && buf[i] == '\n')
            return buf + i + 1;
    }
    return NULL;
}

static HttpReply pick_reply(HttpReceiver *r, char **body_copy)
{
    HttpReply rep;

    if (r->next_script < r->n_script) {
        rep = r->script[r->next_script].reply;
        *body_copy = r->script[r->next_script].body ? strdup(r->script[r->next_script].body) : NULL;
        r->next_script++;
        return rep;
    }
    rep = r->def;
    *body_copy = r->def_body ? strdup(r->def_body) : NULL;
    if (r->random_percent > 0 && (int)(rand_r(&r->seed) % 100) < r->random_percent) {
        rep.status = 500;
        free(*body_copy);
        *body_copy = strdup("random failure");
    }
    return rep;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 408:
        return "Request Timeout";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

/* Serves one connection until the peer closes it or the script closes it. */
static void *serve(void *arg)
{
    Conn *c = arg;
    HttpReceiver *r = c->r;
    char *buf = malloc(MAX_HEADER);
    size_t len = 0;

    for (;;) {
        const char *hend;
        size_t hlen, clen = 0, total;
        const char *cl;
        HttpRequest req;
        HttpReply rep;
        char *body = NULL;
        size_t idx;

        while ((hend = find_header_end(buf, len)) == NULL) {
            ssize_t n;
            if (len == MAX_HEADER)
                goto done;
            n = recv(c->fd, buf + len, MAX_HEADER - len, 0);
            if (n <= 0)
                goto done;
            len += (size_t)n;
        }
        hlen = (size_t)(hend - buf);
        memset(&req, 0, sizeof req);
        sscanf(buf, "%15s %255s", req.method, req.target);
        {
            const char *line_end = strstr(buf, "\r\n");
            size_t hdr_len = (size_t)(hend - line_end) - 4;
            req.headers = strndup(line_end + 2, hdr_len);
        }
        for (cl = req.headers; cl && *cl; cl = strstr(cl, "\r\n") ? strstr(cl, "\r\n") + 2 : NULL) {
            if (strncasecmp(cl, "Content-Length:", 15) == 0)
                clen = strtoul(cl + 15, NULL, 10);
        }
        total = hlen + clen;
        {
            char *big = buf;
            size_t cap = MAX_HEADER;
            if (total > cap) {
                big = realloc(buf, total);
                buf = big;
            }
            while (len < total) {
                ssize_t n = recv(c->fd, buf + len, total - len, 0);
                if (n <= 0) {
                    free(req.headers);
                    goto done;
                }
                len += (size_t)n;
            }
        }
        req.body = malloc(clen + 1);
        memcpy(req.body, buf + hlen, clen);
        req.body[clen] = '\0';
        req.body_len = clen;
        req.at_us = mono_us();
        memmove(buf, buf + total, len - total);
        len -= total;
        if (len < MAX_HEADER && total > MAX_HEADER)
            buf = realloc(buf, MAX_HEADER);

        pthread_mutex_lock(&r->mu);
        rep = pick_reply(r, &body);
        req.status = rep.status;
        r->reqs = realloc(r->reqs, (r->n_reqs + 1) * sizeof *r->reqs);
        idx = r->n_reqs++;
        r->reqs[idx] = req;
        pthread_mutex_unlock(&r->mu);
        (void)idx;

        if (rep.delay_ms > 0)
            pause_ms(r, rep.delay_ms);
        if (rep.status == 0) {
            free(body);
            goto done;
        }
        {
            char head[256];
            size_t blen = body ? strlen(body) : 0;
            int n = snprintf(head, sizeof head,
                             "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n"
                             "Content-Type: text/plain\r\n",
                             rep.status, reason(rep.status), blen);
            if (rep.retry_after > 0)
                n += snprintf(head + n, sizeof head - (size_t)n, "Retry-After: %d\r\n",
                              rep.retry_after);
            n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
            if (!write_all(c->fd, head, (size_t)n) || (blen && !write_all(c->fd, body, blen))) {
                free(body);
                goto done;
            }
        }
        free(body);
    }
done:
    free(buf);
    shutdown(c->fd, SHUT_RDWR);
    return NULL;
}

static void *accept_loop(void *arg)
{
    HttpReceiver *r = arg;
    struct pollfd p[2] = {{.fd = r->listen_fd, .events = POLLIN},
                          {.fd = r->wake[0], .events = POLLIN}};

    for (;;) {
        int fd;
        Conn *c;

        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        fd = accept(r->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&r->mu);
        if (r->stopping || r->n_conns == MAX_CONNS) {
            pthread_mutex_unlock(&r->mu);
            close(fd);
            continue;
        }
        c = calloc(1, sizeof *c);
        c->r = r;
        c->fd = fd;
        r->conns[r->n_conns++] = c;
        pthread_create(&c->thread, NULL, serve, c);
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

HttpReceiver *http_receiver_start(void)
{
    HttpReceiver *r = calloc(1, sizeof *r);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    socklen_t alen = sizeof addr;
    int one = 1;

    ck_assert_ptr_nonnull(r);
    pthread_mutex_init(&r->mu, NULL);
    r->def.status = 200;
    r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(r->listen_fd >= 0, "http_receiver: could not create socket: %s", strerror(errno));
    setsockopt(r->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(bind(r->listen_fd, (struct sockaddr *)&addr, sizeof addr) == 0,
                  "http_receiver: could not bind: %s", strerror(errno));
    ck_assert_int_eq(listen(r->listen_fd, 64), 0);
    ck_assert_int_eq(getsockname(r->listen_fd, (struct sockaddr *)&addr, &alen), 0);
    r->port = ntohs(addr.sin_port);
    ck_assert_int_eq(pipe2(r->wake, O_CLOEXEC), 0);
    ck_assert_int_eq(pthread_create(&r->accept_thread, NULL, accept_loop, r), 0);
    return r;
}

void http_receiver_stop(HttpReceiver *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_mutex_unlock(&r->mu);
    close(r->wake[1]); /* wakes the accept thread and every pause_ms */
    pthread_join(r->accept_thread, NULL);
    for (size_t i = 0; i < r->n_conns; i++)
        shutdown(r->conns[i]->fd, SHUT_RDWR);
    for (size_t i = 0; i < r->n_conns; i++) {
        pthread_join(r->conns[i]->thread, NULL);
        close(r->conns[i]->fd);
        free(r->conns[i]);
    }
    close(r->wake[0]);
    close(r->listen_fd);
    for (size_t i = 0; i < r->n_script; i++)
        free(r->script[i].body);
    free(r->script);
    free(r->def_body);
    http_requests_free(r->reqs, r->n_reqs);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int http_receiver_port(const HttpReceiver *r)
{
    return r->port;
}

char *http_receiver_url(const HttpReceiver *r, const char *path)
{
    char *s = NULL;

    ck_assert_int_ge(asprintf(&s, "http://127.0.0.1:%d%s", r->port, path ? path : "/"), 0);
    return s;
}

void http_receiver_script(HttpReceiver *r, const HttpReply *replies, size_t n)
{
    pthread_mutex_lock(&r->mu);
    r->script = realloc(r->script, (r->n_script + n) * sizeof *r->script);
    for (size_t i = 0; i < n; i++) {
        r->script[r->n_script].reply = replies[i];
        r->script[r->n_script].body = replies[i].body ? strdup(replies[i].body) : NULL;
        r->script[r->n_script].reply.body = NULL;
        r->n_script++;
    }
    pthread_mutex_unlock(&r->mu);
}

void http_receiver_set_default(HttpReceiver *r, const HttpReply *reply)
{
    pthread_mutex_lock(&r->mu);
    r->def = *reply;
    r->def.body = NULL;
    free(r->def_body);
    r->def_body = reply->body ? strdup(reply->body) : NULL;
    pthread_mutex_unlock(&r->mu);
}

void http_receiver_set_random_failures(HttpReceiver *r, int percent, unsigned seed)
{
    pthread_mutex_lock(&r->mu);
    r->random_percent = percent;
    r->seed = seed;
    pthread_mutex_unlock(&r->mu);
}

size_t http_receiver_count(HttpReceiver *r)
{
    size_t n;

    pthread_mutex_lock(&r->mu);
    n = r->n_reqs;
    pthread_mutex_unlock(&r->mu);
    return n;
}

size_t http_receiver_count_ok(HttpReceiver *r)
{
    size_t n = 0;

    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_reqs; i++)
        n += r->reqs[i].status >= 200 && r->reqs[i].status <= 299;
    pthread_mutex_unlock(&r->mu);
    return n;
}

HttpRequest *http_receiver_requests(HttpReceiver *r, size_t *n)
{
    HttpRequest *copy;

    pthread_mutex_lock(&r->mu);
    *n = r->n_reqs;
    copy = calloc(r->n_reqs ? r->n_reqs : 1, sizeof *copy);
    for (size_t i = 0; i < r->n_reqs; i++) {
        copy[i] = r->reqs[i];
        copy[i].headers = strdup(r->reqs[i].headers);
        copy[i].body = malloc(r->reqs[i].body_len + 1);
        memcpy(copy[i].body, r->reqs[i].body, r->reqs[i].body_len + 1);
    }
    pthread_mutex_unlock(&r->mu);
    return copy;
}

void http_requests_free(HttpRequest *reqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(reqs[i].headers);
        free(reqs[i].body);
    }
    free(reqs);
}

char *http_request_header(const HttpRequest *req, const char *name)
{
    size_t nlen = strlen(name);

    for (const char *p = req->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t llen = eol ? (size_t)(eol - p) : strlen(p);

        if (llen > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            return strndup(v, llen - (size_t)(v - p));
        }
        p = eol ? eol + 2 : NULL;
    }
    return NULL;
}
