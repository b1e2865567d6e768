/*
 * http_receiver.h - a small real HTTP/1.1 server for the webhook tests.
 *
 * Listens on 127.0.0.1 on a free port and serves each connection in a
 * thread of the TEST process (never in pgfan): keep-alive, requests with
 * Content-Length bodies. Every complete request is stored (method, target,
 * raw header block, body, the CLOCK_MONOTONIC time it arrived, the status
 * answered) and answered according to a script the test sets: replies are
 * taken in order, then the default reply (200 unless changed), optionally
 * with a random share of 500s. A reply may be delayed, carry Retry-After,
 * or close the connection without answering.
 *
 * Ownership: http_receiver_start() returns a receiver owned by the caller
 * (http_receiver_stop() joins every thread and frees it). Snapshots from
 * http_receiver_requests() are deep copies owned by the caller
 * (http_requests_free()). Strings returned by http_receiver_url() are
 * malloc'd. Functions fail the current Check test on setup errors.
 *
 * All functions are thread-safe with respect to the serving threads.
 */
#ifndef PGFAN_TEST_HTTP_RECEIVER_H
#define PGFAN_TEST_HTTP_RECEIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct HttpReceiver HttpReceiver;

/* One answer. status 0: close the connection without answering. */
typedef struct HttpReply {
    int status;
    int delay_ms;     /* wait this long before answering (or closing) */
    int retry_after;  /* > 0: a "Retry-After: <n>" header */
    const char *body; /* NULL: empty; copied when scripted */
} HttpReply;

typedef struct HttpRequest {
    char method[16];
    char target[256];
    char *headers; /* the header lines as received, "\r\n"-separated */
    char *body;    /* NUL-terminated; body_len excludes the NUL */
    size_t body_len;
    int64_t at_us; /* CLOCK_MONOTONIC microseconds when the request was complete */
    int status;    /* what was answered; 0: the connection was closed instead */
} HttpRequest;

HttpReceiver *http_receiver_start(void);
void http_receiver_stop(HttpReceiver *r);

int http_receiver_port(const HttpReceiver *r);

/* "http://127.0.0.1:<port><path>", malloc'd. */
char *http_receiver_url(const HttpReceiver *r, const char *path);

/* Appends replies to the script (used once each, in order). */
void http_receiver_script(HttpReceiver *r, const HttpReply *replies, size_t n);

/* The reply once the script is used up (initially 200, empty body). */
void http_receiver_set_default(HttpReceiver *r, const HttpReply *reply);

/* Default replies become 500 with this probability (0..100), seeded. */
void http_receiver_set_random_failures(HttpReceiver *r, int percent, unsigned seed);

/* Requests received so far. */
size_t http_receiver_count(HttpReceiver *r);

/* Requests answered with a 2xx so far. */
size_t http_receiver_count_ok(HttpReceiver *r);

/* A deep copy of every request so far; *n is their count. */
HttpRequest *http_receiver_requests(HttpReceiver *r, size_t *n);
void http_requests_free(HttpRequest *reqs, size_t n);

/*
 * The value of header name (case-insensitive) of req, malloc'd, or NULL
 * when the request has no such header.
 */
char *http_request_header(const HttpRequest *req, const char *name);

#endif
