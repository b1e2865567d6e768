/*
 * es_server.h - the Elasticsearch 8 test server (tests/es_server/es_server.py)
 * as a process of a Check test.
 *
 * No Elasticsearch can be installed here, so pgfan's Elasticsearch sink is
 * tested against a Python server that behaves like Elasticsearch 8.11 for
 * what pgfan uses (see tests/es_server/README.md). h_es_start runs
 * `python3 $PGFAN_TEST_ES_SERVER --port 0 --port-file F ...` (tests/meson.build
 * sets the variable for the suites that link this helper), waits for the
 * port it bound, and returns a handle; h_es_stop ends it with SIGTERM.
 *
 * Like the helpers in harness.h, every function either succeeds or fails
 * the current test with ck_abort_msg and a message
 * "h_<helper>: could not <verb> <object>: <cause>". The server dies with
 * the test process (PR_SET_PDEATHSIG), so a failed test leaves nothing
 * running, and nothing stays on disk: its stdout/stderr go to an unlinked
 * file whose tail is part of the failure message when it does not start.
 *
 * Ownership: the EsServer is owned by the caller and freed by h_es_stop;
 * h_es_url returns a pointer borrowed from it; h_es_request returns a
 * malloc'd string the caller frees.
 */
#ifndef PGFAN_TEST_ES_SERVER_H
#define PGFAN_TEST_ES_SERVER_H

typedef struct EsServer EsServer;

/*
 * Starts the server on a free loopback port. extra_args (NULL, or a
 * NULL-terminated array) are passed on, e.g. {"--api-key", "KEY", NULL} or
 * {"--tls-cert", CERT, "--tls-key", KEY, NULL}. With --api-key or --basic
 * the requests of h_es_request authenticate with them.
 */
EsServer *h_es_start(const char *const *extra_args);

/* "http://127.0.0.1:PORT" (https with --tls-cert); borrowed. */
const char *h_es_url(const EsServer *es);

/* SIGTERM, waits for the exit (SIGKILL after 10 s), frees es. NULL is
 * accepted. */
void h_es_stop(EsServer *es);

/*
 * One blocking request: method ("GET", "PUT", "POST", "DELETE", "HEAD"),
 * path with query ("/_bulk?refresh=true"), body (NULL: none). The content
 * type is application/x-ndjson when path contains "_bulk", else
 * application/json. *status (may be NULL) gets the HTTP status; any status
 * is returned normally, only a transport failure fails the test. Returns the
 * response body, NUL-terminated, malloc'd.
 */
char *h_es_request(const EsServer *es, const char *method, const char *path, const char *body,
                   long *status);

/* Refreshes the indices matching index_pattern, then returns their _count
 * (0 when the pattern matches no index). */
long h_es_count(const EsServer *es, const char *index_pattern);

#endif
