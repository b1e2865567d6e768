/*
 * status_client.h - `pgfan status`: read the status socket and print it.
 *
 * Connects to the daemon's status socket, reads the one JSON document the
 * daemon writes (up to STATUS_CLIENT_MAX_DOC bytes), checks that it is valid
 * JSON, and prints it either as received (--json) or as a short table for
 * people. Keys the table does not know are ignored; keys it expects but
 * does not find are shown as "-". Strings are shown with JSON escapes
 * decoded and control characters replaced by spaces (no terminal escapes
 * from a log message reach the operator's terminal).
 *
 * Errors go to errout as one message line ("could not <verb> ...") and,
 * when the fix is known, a "HINT: ..." line. Nothing is allocated that
 * outlives the call.
 */
#ifndef PGFAN_STATUS_CLIENT_H
#define PGFAN_STATUS_CLIENT_H

#include "../common/buf.h"
#include "../common/clock.h"
#include "../common/error.h"

#include <stdbool.h>
#include <stdio.h>

/* Exit codes of status_client_run(). */
#define STATUS_EXIT_OK 0
#define STATUS_EXIT_BAD_DOCUMENT 1 /* not valid JSON, not an object, empty, too large */
#define STATUS_EXIT_UNHEALTHY 1    /* --check: the daemon answered but is not healthy */
#define STATUS_EXIT_UNREACHABLE 2  /* cannot connect, or the connection failed or timed out */

/*
 * `pgfan status --check`: the daemon is healthy when its state is
 * "streaming", the slot's wal_status (slot_health, when sent) is neither
 * "unreserved" nor "lost", no sink is "failed", and the lag is within the limits given
 * (a negative limit is no limit). One line is printed: "OK: ..." or
 * "UNHEALTHY: <reason>".
 */
typedef struct StatusCheck {
    double max_lag_seconds;
    double max_lag_bytes;
} StatusCheck;

/* Larger documents are refused (STATUS_EXIT_BAD_DOCUMENT). */
#define STATUS_CLIENT_MAX_DOC (1024 * 1024)

/* Default bound on connecting, and on waiting for each piece of the document. */
#define STATUS_CLIENT_TIMEOUT (5 * USECS_PER_SEC)

/*
 * Reads the document from the socket at path and prints it to out.
 * check != NULL: print the health verdict (see StatusCheck) and return
 * STATUS_EXIT_UNHEALTHY when unhealthy. Otherwise json: print the document
 * as received (trailing whitespace replaced by one newline), else the table.
 * Returns one of the STATUS_EXIT_* codes.
 */
int status_client_run(const char *path, bool json, const StatusCheck *check, FILE *out,
                      FILE *errout);

/*
 * The parsing half of status_client_run on a document already read: checks
 * it, then appends the verdict, the JSON or the table to out. Returns a
 * STATUS_EXIT_* code; err is set when the document is unusable (path names
 * its origin in messages). Exposed for the fuzzer.
 */
int status_client_format(const char *path, const Buf *doc, bool json, const StatusCheck *check,
                         Buf *out, PfError *err);

/* Same, with the connect and read timeout given (tests use short ones). */
int status_client_run_timeout(const char *path, bool json, const StatusCheck *check,
                              TimeUs timeout, FILE *out, FILE *errout);

#endif
