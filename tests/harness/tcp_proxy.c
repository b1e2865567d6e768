/*
 * tcp_proxy.c - see tcp_proxy.h.
 *
 * One thread polls the listening socket, a wake pipe and every connection
 * pair (non-blocking). Each pair has a buffer per direction: read from one
 * side only when that buffer is empty, write it out to the other side when
 * that side is writable; an end's EOF becomes shutdown(SHUT_WR) of the
 * other once its buffer is out, a read or write error closes the pair.
 * Blackholed, the thread polls only the wake pipe. Switching and stopping
 * write a byte to the pipe so the thread re-reads its state.
 */
#include "tcp_proxy.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_PAIRS 64
#define BUF_SIZE 65536

typedef struct Dir {
    char buf[BUF_SIZE];
    size_t len, off; /* bytes buf[off..len) wait to be written */
    bool eof;        /* the reading side sent FIN */
    bool shut;       /* ... and it was passed on (SHUT_WR of the writing side) */
} Dir;

/* fd[0]: the accepted client, fd[1]: the target; dir[i] carries fd[i] -> fd[1 - i]. */
typedef struct Pair {
    int fd[2];
    Dir dir[2];
} Pair;

struct TcpProxy {
    int listen_fd;
    int wake[2];
    int port;
    struct sockaddr_in target;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled when the thread enters the blackhole */
    bool stopping;
    bool blackhole;
    bool holding; /* the thread is blackholed: nothing moves until restored */
    size_t accepted;
    size_t open;

    Pair *pairs[MAX_PAIRS]; /* owned by the thread */
    size_t n_pairs;
};

static void set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags >= 0)
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static void wake(TcpProxy *p)
{
    char c = 1;
    ssize_t w;

    do
        w = write(p->wake[1], &c, 1);
    while (w < 0 && errno == EINTR);
}

static void drain_wake(TcpProxy *p)
{
    char buf[64];

    while (read(p->wake[0], buf, sizeof buf) > 0)
        ;
}

static void pair_close(TcpProxy *p, size_t i)
{
    Pair *pair = p->pairs[i];

    close(pair->fd[0]);
    close(pair->fd[1]);
    free(pair);
    p->pairs[i] = p->pairs[--p->n_pairs];
    pthread_mutex_lock(&p->mu);
    p->open--;
    pthread_mutex_unlock(&p->mu);
}

/* Accepts one pending connection and connects it to the target. */
static void accept_one(TcpProxy *p)
{
    int client = accept(p->listen_fd, NULL, NULL);
    int server;
    Pair *pair;

    if (client < 0)
        return;
    server = socket(AF_INET, SOCK_STREAM, 0);
    if (p->n_pairs >= MAX_PAIRS || server < 0 ||
        connect(server, (const struct sockaddr *)&p->target, sizeof p->target) != 0) {
        if (server >= 0)
            close(server);
        close(client);
        return;
    }
    set_nonblocking(client);
    set_nonblocking(server);
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    pair = calloc(1, sizeof *pair);
    if (!pair) {
        close(server);
        close(client);
        return;
    }
    pair->fd[0] = client;
    pair->fd[1] = server;
    p->pairs[p->n_pairs++] = pair;
    pthread_mutex_lock(&p->mu);
    p->accepted++;
    p->open++;
    pthread_mutex_unlock(&p->mu);
}

static short events_for(const Pair *pair, int side)
{
    short ev = 0;
    const Dir *in = &pair->dir[side];
    const Dir *out = &pair->dir[1 - side];

    if (!in->eof && in->len == 0)
        ev |= POLLIN;
    if (out->len > out->off)
        ev |= POLLOUT;
    return ev;
}

/* Moves data for one direction; false when the pair is broken. */
static bool pump(Pair *pair, int side, short rev_from, short rev_to)
{
    Dir *d = &pair->dir[side];
    int from = pair->fd[side];
    int to = pair->fd[1 - side];

    if ((rev_from & (POLLIN | POLLHUP | POLLERR)) && !d->eof && d->len == 0) {
        ssize_t n = read(from, d->buf, sizeof d->buf);

        if (n > 0) {
            d->len = (size_t)n;
            d->off = 0;
        } else if (n == 0) {
            d->eof = true;
        } else if (errno != EAGAIN && errno != EINTR) {
            return false;
        }
    }
    if (d->len > d->off && (rev_to & POLLOUT)) {
        ssize_t n = send(to, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);

        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return false;
        if (n > 0)
            d->off += (size_t)n;
        if (d->off == d->len)
            d->len = d->off = 0;
    }
    if (d->eof && d->len == 0 && !d->shut) {
        shutdown(to, SHUT_WR);
        d->shut = true;
    }
    return true;
}

/* One poll round while forwarding. */
static void forward_round(TcpProxy *p)
{
    struct pollfd fds[2 + 2 * MAX_PAIRS];
    size_t n = 0, n_pairs = p->n_pairs;

    fds[n++] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
    fds[n++] = (struct pollfd){.fd = p->listen_fd, .events = POLLIN};
    for (size_t i = 0; i < n_pairs; i++) {
        for (int side = 0; side < 2; side++)
            fds[n++] = (struct pollfd){.fd = p->pairs[i]->fd[side],
                                       .events = events_for(p->pairs[i], side)};
    }
    if (poll(fds, (nfds_t)n, -1) <= 0)
        return;
    if (fds[0].revents) {
        /* Switched or stopping: re-read the state before moving anything. */
        drain_wake(p);
        return;
    }
    /* Backwards, so closing (which moves the last pair into the hole) is safe. */
    for (size_t i = n_pairs; i-- > 0;) {
        Pair *pair = p->pairs[i];
        struct pollfd *pf = &fds[2 + 2 * i];
        bool ok = true;

        for (int side = 0; side < 2 && ok; side++) {
            bool asked_in = pf[side].events & POLLIN;
            if ((pf[side].revents & POLLERR) ||
                ((pf[side].revents & POLLHUP) && !asked_in && pair->dir[side].len == 0))
                ok = false;
        }
        for (int side = 0; side < 2 && ok; side++)
            ok = pump(pair, side, pf[side].revents, pf[1 - side].revents);
        if (!ok || (pair->dir[0].shut && pair->dir[1].shut))
            pair_close(p, i);
    }
    if (fds[1].revents & POLLIN)
        accept_one(p);
}

static void *proxy_thread(void *arg)
{
    TcpProxy *p = arg;

    for (;;) {
        bool stopping, black;

        pthread_mutex_lock(&p->mu);
        stopping = p->stopping;
        black = p->blackhole;
        p->holding = black && !stopping;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        if (stopping)
            break;
        if (black) {
            struct pollfd w = {.fd = p->wake[0], .events = POLLIN};
            if (poll(&w, 1, -1) > 0)
                drain_wake(p);
            continue;
        }
        forward_round(p);
    }
    while (p->n_pairs > 0)
        pair_close(p, p->n_pairs - 1);
    return NULL;
}

TcpProxy *tcp_proxy_start(const char *host, int port)
{
    TcpProxy *p = calloc(1, sizeof *p);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    int one = 1;

    ck_assert_msg(p != NULL, "tcp_proxy_start: could not allocate the proxy: out of memory");
    p->target.sin_family = AF_INET;
    p->target.sin_port = htons((uint16_t)port);
    ck_assert_msg(inet_pton(AF_INET, host, &p->target.sin_addr) == 1,
                  "tcp_proxy_start: could not use target host \"%s\": not a numeric IPv4 address",
                  host);
    p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_msg(p->listen_fd >= 0, "tcp_proxy_start: could not create a socket: %s",
                  strerror(errno));
    setsockopt(p->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    ck_assert_msg(bind(p->listen_fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
                      listen(p->listen_fd, 64) == 0 &&
                      getsockname(p->listen_fd, (struct sockaddr *)&addr, &len) == 0,
                  "tcp_proxy_start: could not listen on 127.0.0.1: %s", strerror(errno));
    set_nonblocking(p->listen_fd);
    p->port = ntohs(addr.sin_port);
    ck_assert_msg(pipe(p->wake) == 0, "tcp_proxy_start: could not create a pipe: %s",
                  strerror(errno));
    set_nonblocking(p->wake[0]);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    ck_assert_msg(pthread_create(&p->thread, NULL, proxy_thread, p) == 0,
                  "tcp_proxy_start: could not start the proxy thread");
    return p;
}

void tcp_proxy_stop(TcpProxy *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_mutex_unlock(&p->mu);
    wake(p);
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int tcp_proxy_port(const TcpProxy *p)
{
    return p->port;
}

/* Blackholing returns once the thread holds everything (nothing moves after it). */
static void set_blackhole(TcpProxy *p, bool on)
{
    pthread_mutex_lock(&p->mu);
    p->blackhole = on;
    pthread_mutex_unlock(&p->mu);
    wake(p);
    pthread_mutex_lock(&p->mu);
    while (on && !p->holding)
        pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void tcp_proxy_blackhole(TcpProxy *p)
{
    set_blackhole(p, true);
}

void tcp_proxy_restore(TcpProxy *p)
{
    set_blackhole(p, false);
}

size_t tcp_proxy_accepted(TcpProxy *p)
{
    size_t n;

    pthread_mutex_lock(&p->mu);
    n = p->accepted;
    pthread_mutex_unlock(&p->mu);
    return n;
}

size_t tcp_proxy_open(TcpProxy *p)
{
    size_t n;

    pthread_mutex_lock(&p->mu);
    n = p->open;
    pthread_mutex_unlock(&p->mu);
    return n;
}
