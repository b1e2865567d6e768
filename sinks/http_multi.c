/*
 * http_multi.c - libcurl multi in the daemon's loop (see http_multi.h).
 */
#include "http_multi.h"

#include <stdio.h>

bool http_add_header(struct curl_slist **list, const char *line)
{
    struct curl_slist *n = curl_slist_append(*list, line);

    if (!n) {
        curl_slist_free_all(*list);
        *list = NULL;
        return false;
    }
    *list = n;
    return true;
}

static void collect_done(HttpMulti *m)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        void *priv = NULL;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&priv);
        curl_multi_remove_handle(m->multi, easy);
        m->on_done(m->owner, priv, easy, result);
    }
}

static void socket_action(HttpMulti *m, curl_socket_t fd, int flags)
{
    int running = 0;
    CURLMcode mc = curl_multi_socket_action(m->multi, fd, flags, &running);

    if (mc != CURLM_OK) {
        err_set(&m->error, ERR_FATAL, "could not drive %s requests: %s", m->what,
                curl_multi_strerror(mc));
        m->failed = true;
        return;
    }
    collect_done(m);
}

void http_multi_run_timeouts(HttpMulti *m)
{
    /* A few rounds: one run may arm the next timeout at 0. */
    for (int i = 0; i < 4 && !m->failed && m->timer <= clock_mono_us(); i++) {
        m->timer = TIME_NEVER;
        socket_action(m, CURL_SOCKET_TIMEOUT, 0);
    }
}

static void on_fd(void *arg, int fd, unsigned events)
{
    HttpMulti *m = arg;
    int flags = 0;

    if (events & LOOP_READ)
        flags |= CURL_CSELECT_IN;
    if (events & LOOP_WRITE)
        flags |= CURL_CSELECT_OUT;
    if (events & LOOP_ERROR)
        flags |= CURL_CSELECT_ERR;
    if (!m->failed)
        socket_action(m, fd, flags);
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    HttpMulti *m = userp;
    unsigned events = 0;

    (void)easy;
    (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        loop_unwatch(m->loop, fd);
        return 0;
    }
    if (what & CURL_POLL_IN)
        events |= LOOP_READ;
    if (what & CURL_POLL_OUT)
        events |= LOOP_WRITE;
    return loop_watch(m->loop, fd, events, on_fd, m) ? 0 : -1;
}

/* Only records the deadline: calling libcurl from here would recurse. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    HttpMulti *m = userp;

    (void)multi;
    m->timer = timeout_ms < 0 ? TIME_NEVER : clock_mono_us() + (TimeUs)timeout_ms * USECS_PER_MSEC;
    return 0;
}

bool http_multi_open(HttpMulti *m, Loop *loop, long max_connects, HttpDoneCallback on_done,
                     void *owner, const char *what, PfError *err)
{
    m->loop = loop;
    m->timer = TIME_NEVER;
    m->on_done = on_done;
    m->owner = owner;
    m->what = what;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return err_set(err, ERR_FATAL, "could not create %s client: curl_global_init failed",
                       what);
    m->global_ready = true;
    m->multi = curl_multi_init();
    if (!m->multi)
        return err_set(err, ERR_FATAL, "could not create %s client: curl_multi_init failed", what);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, max_connects);
    return true;
}

bool http_multi_add(HttpMulti *m, CURL *easy, PfError *err)
{
    CURLMcode mc = curl_multi_add_handle(m->multi, easy);

    if (mc != CURLM_OK)
        return err_set(err, ERR_FATAL, "could not start %s request: %s", m->what,
                       curl_multi_strerror(mc));
    return true;
}

void http_multi_remove(HttpMulti *m, CURL *easy)
{
    if (m->multi)
        curl_multi_remove_handle(m->multi, easy);
}

void http_multi_close(HttpMulti *m)
{
    if (m->multi)
        curl_multi_cleanup(m->multi);
    m->multi = NULL;
    if (m->global_ready)
        curl_global_cleanup();
    m->global_ready = false;
}
