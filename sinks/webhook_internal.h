/*
 * webhook_internal.h - what webhook.c and webhook_http.c share; nothing
 * else includes it.
 *
 * webhook.c       the sink: SinkOps, batching into lanes, the transaction
 *                 FIFO and durable position, retries scheduling, dead letters
 *                 (their file is a DeadLetter, dead_letter.h);
 * webhook_http.c  the libcurl transport: one reused easy handle per lane on
 *                 the shared multi handle (HttpMulti, http_multi.h, driven by
 *                 the daemon's loop), request headers (Idempotency-Key,
 *                 signature) and the outcome of each request (2xx / retry /
 *                 dead letter).
 *
 * Every structure is owned by its WebhookSink; a Batch is freed when done.
 */
#ifndef PGFAN_WEBHOOK_INTERNAL_H
#define PGFAN_WEBHOOK_INTERNAL_H

#include "../common/backoff.h"
#include "../common/buf.h"
#include "../common/loop.h"
#include "dead_letter.h"
#include "http_multi.h"
#include "sink.h"
#include "txn_tracker.h"

#include <curl/curl.h>

#define RETRY_MIN (100 * USECS_PER_MSEC)
#define RETRY_MAX (30 * USECS_PER_SEC)
/* A Retry-After longer than this is taken as this (a misconfigured server
 * must not park the stream for a day). */
#define RETRY_AFTER_MAX (600 * USECS_PER_SEC)

/* Response bytes kept for logs and the dead-letter file. */
#define RESPONSE_KEEP 1024

/* `count` of a batch's events belong to the transaction numbered `seq` */
typedef struct TxnSpan {
    uint64_t seq;
    uint64_t count;
} TxnSpan;

typedef struct Batch {
    struct Batch *next;
    Buf body; /* "[e1,e2" while open; "]" is appended when sealed */
    size_t n_events;
    Lsn first_commit, first_lsn, last_lsn;
    TxnSpan *spans;
    size_t n_spans;
    TimeUs opened_at;
    bool sealed;
} Batch;

typedef struct WebhookSink WebhookSink;

typedef struct Lane {
    WebhookSink *sink;
    Batch *head, *tail;
    CURL *easy;
    struct curl_slist *req_headers; /* of the request in flight */
    bool in_flight;
    bool retrying;
    TimeUs retry_at;
    Backoff backoff;
    Buf response;          /* first RESPONSE_KEEP bytes of the answer */
    int64_t retry_after_s; /* Retry-After of the answer, -1 when none */
    char errbuf[CURL_ERROR_SIZE];
} Lane;

struct WebhookSink {
    char *url;
    char *shown_url; /* url without user:password@, for logs and dead letters */
    char *secret;
    DeadLetter dead_letter;
    size_t batch_size;
    TimeUs linger;
    size_t max_events;
    const SourceInfo *source;
    Loop *loop;

    HttpMulti http;
    struct curl_slist *base_headers;
    Lane *lanes;
    size_t n_lanes;
    bool flushing;

    /* transactions and how many of their events are not done yet; an event
     * is done when its batch got a 2xx or went to the dead letters */
    TxnTracker txns;
    uint64_t queued_events;
    size_t queued_bytes;
    Buf scratch;

    bool failed;
    PfError fatal;

    uint64_t events;
    uint64_t bytes;
    uint64_t retries;
    uint64_t errors;
    uint64_t dead_letters;
    char last_error[256];
};

/* --- webhook.c: called by the transport with a request's outcome --- */

/* The lane's head batch is done (2xx or dead-lettered): frees it and moves
 * the durable position. */
void webhook_lane_done(Lane *lane);

/* Schedules the lane's head batch again after a backoff (at least the
 * answer's Retry-After); cause ends the logged "could not deliver" message. */
void webhook_lane_retry(Lane *lane, TimeUs now, const char *cause);

/* Writes the lane's head batch to the dead-letter file (fsynced); false
 * when that failed, which fails the sink. */
bool webhook_dead_letter(Lane *lane, long status);

/* Marks the sink failed with err (kept and returned by every poll). */
void webhook_fail(WebhookSink *s, const PfError *err);

/* --- webhook_http.c --- */

/* Opens s->http (its sockets and timer in s->loop), the common headers and
 * one easy handle per lane. */
bool webhook_http_open(WebhookSink *s, const Config *cfg, PfError *err);

/* Releases every libcurl object; requests in flight are abandoned. */
void webhook_http_close(WebhookSink *s);

/* Sends the lane's head batch (sealed). False: the sink failed. */
bool webhook_http_start(Lane *lane);

/* Runs libcurl's due timeouts and collects finished requests; fails the
 * sink when the multi handle failed (also while the loop drove it). */
void webhook_http_run_timeouts(WebhookSink *s);

#endif
