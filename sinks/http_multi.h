/*
 * http_multi.h - libcurl's multi interface driven by the daemon's loop, for
 * the sinks that speak HTTP (webhook, Elasticsearch).
 *
 * One multi handle for the sink's life (its connection cache gives
 * keep-alive). libcurl's sockets go into the loop (CURLMOPT_SOCKETFUNCTION
 * -> loop_watch); its timer (CURLMOPT_TIMERFUNCTION) only records a
 * deadline that the sink's poll() returns and then runs through
 * http_multi_run_timeouts(), so libcurl is never re-entered from its own
 * callback. Every finished transfer is handed to the owner's on_done
 * callback with the easy handle's CURLOPT_PRIVATE pointer, after the handle
 * was removed from the multi (it may be reused at once).
 */
#ifndef PGFAN_HTTP_MULTI_H
#define PGFAN_HTTP_MULTI_H

#include "../common/clock.h"
#include "../common/error.h"
#include "../common/loop.h"

#include <curl/curl.h>
#include <stdbool.h>

/* A finished transfer: private is the easy handle's CURLOPT_PRIVATE. */
typedef void (*HttpDoneCallback)(void *owner, void *private_, CURL *easy, CURLcode result);

typedef struct HttpMulti {
    CURLM *multi;
    Loop *loop;
    TimeUs timer;       /* libcurl's deadline, TIME_NEVER when disarmed */
    bool global_ready;  /* curl_global_init succeeded: close undoes it */
    bool failed;        /* the multi handle is unusable; see error */
    PfError error;
    HttpDoneCallback on_done;
    void *owner;
    const char *what;   /* "webhook", "Elasticsearch": for messages */
} HttpMulti;

/* Creates the multi handle (max_connects: size of its connection cache). */
bool http_multi_open(HttpMulti *m, Loop *loop, long max_connects, HttpDoneCallback on_done,
                     void *owner, const char *what, PfError *err);

/* Releases the multi handle; transfers still added must be removed first. */
void http_multi_close(HttpMulti *m);

/* Starts a transfer. False (err set, ERR_FATAL) when libcurl refuses. */
bool http_multi_add(HttpMulti *m, CURL *easy, PfError *err);

/* Aborts a transfer in progress (no on_done call). */
void http_multi_remove(HttpMulti *m, CURL *easy);

/* Runs libcurl's due timeouts and collects finished transfers. */
void http_multi_run_timeouts(HttpMulti *m);

/* Appends a header line; on failure (out of memory) frees the whole list. */
bool http_add_header(struct curl_slist **list, const char *line);

#endif
