/*
 * error.h - errors as values.
 *
 * Functions that can fail return bool and fill a caller-owned PfError. The
 * kind says what the caller should do; the message follows one grammar,
 * "could not <verb> <object>: <cause>", and a hint is set when the fix is
 * known. Context is prepended as the error travels up
 * ("sink=file path=out.ndjson: could not write ...").
 */
#ifndef PGFAN_ERROR_H
#define PGFAN_ERROR_H

#include <stdbool.h>

typedef enum ErrKind {
    ERR_NONE = 0,
    ERR_RETRY,  /* transient: try again later (connection lost, server busy) */
    ERR_SKIP,   /* this one row/event is bad: dead-letter it, go on */
    ERR_CONFIG, /* bad configuration or usage: exit code 2 */
    ERR_FATAL,  /* cannot go on: stop without confirming anything more, exit code 1 */
} ErrKind;

#define ERR_MSG_SIZE 1024
#define ERR_HINT_SIZE 512

typedef struct PfError {
    ErrKind kind;
    char msg[ERR_MSG_SIZE];
    char hint[ERR_HINT_SIZE]; /* empty when no fix is known */
} PfError;

/* Resets err to "no error". */
void err_clear(PfError *err);

/* Sets kind and message (printf-style); clears any previous hint. Returns false. */
bool err_set(PfError *err, ErrKind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sets the hint (the known fix). */
void err_hint(PfError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends context: "<context>: <previous message>". */
void err_prefix(PfError *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Name of the kind for logs and status ("retry", "fatal", ...). */
const char *err_kind_name(ErrKind kind);

/* Process exit code for an error of this kind (2 for config, 1 otherwise). */
int err_exit_code(const PfError *err);

#endif
