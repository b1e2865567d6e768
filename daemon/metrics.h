/*
 * metrics.h - the HTTP server for Prometheus and probes ([status] metrics_listen).
 *
 * A deliberately tiny HTTP/1.1 server on the event loop: it reads one
 * request (up to METRICS_MAX_REQUEST bytes, until the blank line that ends
 * the headers), answers it and closes the connection. Routes:
 *   GET /metrics  200, the caller's Prometheus text (format 0.0.4)
 *   GET /healthz  200 "ok": answered by the loop itself, so it shows that the
 *                 loop turns and nothing more (liveness must not depend on
 *                 PostgreSQL or the sinks)
 *   GET /readyz   200 when the caller's ready callback says so, else 503;
 *                 the body is the text the callback wrote (the state)
 *   other paths   404; other methods 405; an oversized request 431;
 *                 a malformed request line 400.
 * The server knows nothing about the pipeline: content comes from the
 * MetricsHandlers callbacks, called from the loop (they must not block).
 *
 * Nothing blocks: at most METRICS_MAX_CLIENTS connections are served at
 * once (more are accepted and closed at once), and a client that has not
 * sent its request and read the answer within METRICS_CLIENT_TIMEOUT is
 * dropped, so an idle or hostile client costs a bounded amount of memory
 * and never delays the others.
 *
 * Ownership: the server owns its listening socket, a timer descriptor and
 * the connected clients. It borrows the Loop (which must outlive it) and
 * the handlers' arg.
 */
#ifndef PGFAN_METRICS_H
#define PGFAN_METRICS_H

#include "../common/buf.h"
#include "../common/clock.h"
#include "../common/error.h"
#include "../common/loop.h"

#include <stdbool.h>
#include <stddef.h>

/* Connections served at once; more are accepted and closed immediately. */
#define METRICS_MAX_CLIENTS 16

/* Largest request (request line and headers) read; larger ones get 431. */
#define METRICS_MAX_REQUEST 8192

/* A client not done (request read and answer written) by then is dropped. */
#define METRICS_CLIENT_TIMEOUT (5 * USECS_PER_SEC)

/* Content-Type of /metrics (Prometheus text exposition format 0.0.4). */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct MetricsServer MetricsServer;

typedef struct MetricsHandlers {
    /* Appends the Prometheus text for GET /metrics to out (empty on entry). */
    void (*render)(void *arg, Buf *out);
    /* GET /readyz: returns whether pgfan is ready; appends a short reason
     * or state (one line) to out, which becomes the body. */
    bool (*ready)(void *arg, Buf *out);
    void *arg;
} MetricsHandlers;

/*
 * Listens on listen_addr ("host:port": an IPv4 literal, "localhost" (which
 * means 127.0.0.1) or a [bracketed] IPv6 literal; port 0 picks a free port,
 * see metrics_server_port()) and serves it from loop. handlers is copied.
 *
 * Errors: ERR_CONFIG when the address cannot be parsed, is not an address
 * of this host or needs privileges (ports below 1024); ERR_FATAL when the
 * port is in use or a system call fails. Returns NULL on error.
 */
MetricsServer *metrics_server_new(Loop *loop, const char *listen_addr,
                                  const MetricsHandlers *handlers, PfError *err);

/* The TCP port actually bound (useful when 0 was asked for). */
int metrics_server_port(const MetricsServer *srv);

/* Clients being served right now (accepted, not yet answered and closed). */
size_t metrics_server_client_count(const MetricsServer *srv);

/* Closes every client and the listening socket. NULL is a no-op. */
void metrics_server_free(MetricsServer *srv);

/*
 * Prometheus text helpers for render callbacks.
 *
 * metrics_append_label_value appends value escaped as a label value
 * (backslash, double quote and newline escaped; no surrounding quotes).
 * metrics_append_header appends the "# HELP" and "# TYPE" lines of a
 * metric family (type: "gauge", "counter", ...); help must not contain a
 * newline or backslash.
 */
void metrics_append_label_value(Buf *out, const char *value);
void metrics_append_header(Buf *out, const char *name, const char *type, const char *help);

/*
 * Appends a histogram family: header, cumulative <name>_bucket{le="..."}
 * samples for each of the n_bounds upper bounds and +Inf, <name>_sum and
 * <name>_count. counts has n_bounds + 1 per-bucket (not cumulative) counts.
 */
void metrics_append_histogram(Buf *out, const char *name, const char *help,
                              const double *bounds, const uint64_t *counts, size_t n_bounds,
                              double sum);

#endif
