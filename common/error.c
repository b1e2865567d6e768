/* error.c - PfError helpers. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void err_clear(PfError *err)
{
    err->kind = ERR_NONE;
    err->msg[0] = '\0';
    err->hint[0] = '\0';
}

bool err_set(PfError *err, ErrKind kind, const char *fmt, ...)
{
    va_list ap;

    err->kind = kind;
    err->hint[0] = '\0';
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return false;
}

void err_hint(PfError *err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err->hint, sizeof err->hint, fmt, ap);
    va_end(ap);
}

void err_prefix(PfError *err, const char *fmt, ...)
{
    char joined[2 * ERR_MSG_SIZE + 2];
    size_t n;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(joined, ERR_MSG_SIZE, fmt, ap);
    va_end(ap);
    n = strlen(joined);
    joined[n++] = ':';
    joined[n++] = ' ';
    memcpy(joined + n, err->msg, strnlen(err->msg, ERR_MSG_SIZE - 1) + 1);
    joined[ERR_MSG_SIZE - 1] = '\0';
    memcpy(err->msg, joined, ERR_MSG_SIZE);
}

const char *err_kind_name(ErrKind kind)
{
    switch (kind) {
    case ERR_NONE:
        return "none";
    case ERR_RETRY:
        return "retry";
    case ERR_SKIP:
        return "skip";
    case ERR_CONFIG:
        return "config";
    case ERR_FATAL:
        return "fatal";
    }
    return "unknown";
}

int err_exit_code(const PfError *err)
{
    return err->kind == ERR_CONFIG ? 2 : 1;
}
