/* log.c - component-prefixed log lines on stderr. */
#include "log.h"

#include "buf.h"
#include "clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static LogLevel current_level = LOG_LEVEL_INFO;

static const char *const level_names[] = {"debug", "info", "warning", "error"};
static const char *const level_tags[] = {"DEBUG", "INFO", "WARNING", "ERROR"};

void log_set_level(LogLevel level)
{
    current_level = level;
}

LogLevel log_get_level(void)
{
    return current_level;
}

bool log_level_parse(const char *text, LogLevel *out)
{
    for (int i = LOG_LEVEL_DEBUG; i <= LOG_LEVEL_ERROR; i++) {
        if (strcmp(text, level_names[i]) == 0) {
            *out = (LogLevel)i;
            return true;
        }
    }
    return false;
}

const char *log_level_name(LogLevel level)
{
    return level_names[level];
}

/* One write(2) per line so lines from pgfan and its children do not interleave. */
static void emit(LogLevel level, const char *component, const char *text)
{
    char ts[CLOCK_ISO_SIZE];
    Buf line = BUF_INIT;

    buf_printf(&line, "%s %s %s: %s\n", clock_format_iso(clock_wall_us(), ts), level_tags[level],
               component, text);
    if (write(STDERR_FILENO, line.data, line.len) < 0) {
        /* Nowhere left to report it. */
    }
    buf_free(&line);
}

void log_msg(LogLevel level, const char *component, const char *fmt, ...)
{
    char text[4096];
    va_list ap;

    if (level < current_level)
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    emit(level, component, text);
}

void log_error_value(const char *component, const PfError *err)
{
    LogLevel level = err->kind == ERR_RETRY ? LOG_LEVEL_WARNING : LOG_LEVEL_ERROR;

    if (level < current_level)
        return;
    emit(level, component, err->msg);
    if (err->hint[0])
        log_msg(level, component, "HINT: %s", err->hint);
}
