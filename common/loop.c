/*
 * loop.c - epoll reactor.
 *
 * Watchers live in a table indexed by fd (fds are small integers), so
 * dispatch needs no lookup structure. Hooks run after every dispatch round;
 * the earliest deadline they return bounds the next wait.
 */
#include "loop.h"

#include "mem.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

typedef struct Watcher {
    bool active;
    unsigned events;
    LoopFdCallback cb;
    void *arg;
} Watcher;

typedef struct Hook {
    LoopHook fn;
    void *arg;
} Hook;

struct Loop {
    int epfd;
    Watcher *watchers; /* indexed by fd */
    size_t n_watchers;
    Hook *hooks;
    size_t n_hooks;
    TimeUs hook_deadline; /* earliest deadline the hooks asked for */
};

Loop *loop_new(void)
{
    Loop *loop = xcalloc(1, sizeof *loop);

    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        free(loop);
        return NULL;
    }
    loop->hook_deadline = 0; /* run hooks on the first turn */
    return loop;
}

void loop_free(Loop *loop)
{
    if (!loop)
        return;
    close(loop->epfd);
    free(loop->watchers);
    free(loop->hooks);
    free(loop);
}

static uint32_t to_epoll(unsigned events)
{
    uint32_t ev = 0;
    if (events & LOOP_READ)
        ev |= EPOLLIN;
    if (events & LOOP_WRITE)
        ev |= EPOLLOUT;
    return ev;
}

bool loop_watch(Loop *loop, int fd, unsigned events, LoopFdCallback cb, void *arg)
{
    struct epoll_event ev;
    Watcher *w;
    int op;

    if (fd < 0) {
        errno = EBADF;
        return false;
    }
    if ((size_t)fd >= loop->n_watchers) {
        size_t n = loop->n_watchers ? loop->n_watchers : 64;
        while (n <= (size_t)fd)
            n *= 2;
        loop->watchers = xrealloc(loop->watchers, n * sizeof *loop->watchers);
        memset(loop->watchers + loop->n_watchers, 0,
               (n - loop->n_watchers) * sizeof *loop->watchers);
        loop->n_watchers = n;
    }
    w = &loop->watchers[fd];
    memset(&ev, 0, sizeof ev);
    ev.events = to_epoll(events);
    ev.data.fd = fd;
    op = w->active ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(loop->epfd, op, fd, &ev) < 0) {
        /* The fd number was reused after a close we did not see: re-add. */
        if (op == EPOLL_CTL_MOD && errno == ENOENT)
            op = EPOLL_CTL_ADD;
        else if (op == EPOLL_CTL_ADD && errno == EEXIST)
            op = EPOLL_CTL_MOD;
        else
            return false;
        if (epoll_ctl(loop->epfd, op, fd, &ev) < 0)
            return false;
    }
    w->active = true;
    w->events = events;
    w->cb = cb;
    w->arg = arg;
    return true;
}

void loop_unwatch(Loop *loop, int fd)
{
    if (fd < 0 || (size_t)fd >= loop->n_watchers || !loop->watchers[fd].active)
        return;
    /* ENOENT/EBADF are fine: the descriptor may already be closed. */
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
    memset(&loop->watchers[fd], 0, sizeof loop->watchers[fd]);
}

void loop_add_hook(Loop *loop, LoopHook hook, void *arg)
{
    loop->hooks = xrealloc(loop->hooks, (loop->n_hooks + 1) * sizeof *loop->hooks);
    loop->hooks[loop->n_hooks].fn = hook;
    loop->hooks[loop->n_hooks].arg = arg;
    loop->n_hooks++;
}

bool loop_run_once(Loop *loop, TimeUs deadline)
{
    struct epoll_event events[64];
    TimeUs now = clock_mono_us();
    TimeUs until = deadline < loop->hook_deadline ? deadline : loop->hook_deadline;
    int timeout_ms;
    int n;

    if (until <= now)
        timeout_ms = 0;
    else if (until - now > INT64_C(60) * USECS_PER_SEC)
        timeout_ms = 60000;
    else
        timeout_ms = (int)((until - now + USECS_PER_MSEC - 1) / USECS_PER_MSEC);

    n = epoll_wait(loop->epfd, events, (int)(sizeof events / sizeof events[0]), timeout_ms);
    if (n < 0) {
        if (errno != EINTR)
            return false;
        n = 0;
    }
    for (int i = 0; i < n; i++) {
        int fd = events[i].data.fd;
        unsigned ready = 0;
        Watcher *w;

        if ((size_t)fd >= loop->n_watchers || !loop->watchers[fd].active)
            continue; /* unwatched by an earlier callback in this round */
        w = &loop->watchers[fd];
        if (events[i].events & EPOLLIN)
            ready |= LOOP_READ;
        if (events[i].events & EPOLLOUT)
            ready |= LOOP_WRITE;
        if (events[i].events & (EPOLLERR | EPOLLHUP))
            ready |= LOOP_ERROR;
        w->cb(w->arg, fd, ready);
    }

    now = clock_mono_us();
    loop->hook_deadline = TIME_NEVER;
    for (size_t i = 0; i < loop->n_hooks; i++) {
        TimeUs want = loop->hooks[i].fn(loop->hooks[i].arg, now);
        if (want < loop->hook_deadline)
            loop->hook_deadline = want;
    }
    return true;
}
