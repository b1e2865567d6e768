/* log.c - component-prefixed log lines on stderr (text or JSON, journal-aware). */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static LogLevel current_level = LOG_LEVEL_INFO;
static LogFormat current_format = LOG_FORMAT_TEXT;
static bool journal = false;

static const char *const level_names[] = {"debug", "info", "warning", "error"};
static const char *const level_tags[] = {"DEBUG", "INFO", "WARNING", "ERROR"};
static const char *const format_names[] = {"text", "json"};
/* sd-daemon.h: SD_ERR <3>, SD_WARNING <4>, SD_INFO <6>, SD_DEBUG <7>. */
static const int syslog_priorities[] = {7, 6, 4, 3};

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

void log_set_format(LogFormat format)
{
    current_format = format;
}

LogFormat log_get_format(void)
{
    return current_format;
}

bool log_format_parse(const char *text, LogFormat *out)
{
    for (int i = LOG_FORMAT_TEXT; i <= LOG_FORMAT_JSON; i++) {
        if (strcmp(text, format_names[i]) == 0) {
            *out = (LogFormat)i;
            return true;
        }
    }
    return false;
}

const char *log_format_name(LogFormat format)
{
    return format_names[format];
}

int log_syslog_priority(LogLevel level)
{
    return syslog_priorities[level];
}

/* JOURNAL_STREAM is "<device>:<inode>" in decimal (systemd.exec(5)). */
bool log_detect_journal(void)
{
    const char *env = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    char tail;
    struct stat st;

    journal = env && sscanf(env, "%llu:%llu%c", &dev, &ino, &tail) == 2 &&
              fstat(STDERR_FILENO, &st) == 0 && (unsigned long long)st.st_dev == dev &&
              (unsigned long long)st.st_ino == ino;
    return journal;
}

void log_set_journal(bool on)
{
    journal = on;
}

bool log_get_journal(void)
{
    return journal;
}

static void format_json(Buf *out, LogLevel level, const char *component, const char *msg,
                        const PfError *err, const char *ts)
{
    buf_printf(out, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":", ts, level_names[level]);
    buf_append_json_string(out, component, strlen(component));
    buf_append_str(out, ",\"msg\":");
    buf_append_json_string(out, msg, strlen(msg));
    if (err && err->kind != ERR_NONE)
        buf_printf(out, ",\"error\":\"%s\"", err_kind_name(err->kind));
    if (err && err->hint[0]) {
        buf_append_str(out, ",\"hint\":");
        buf_append_json_string(out, err->hint, strlen(err->hint));
    }
    buf_append_str(out, "}\n");
}

static void format_text(Buf *out, LogLevel level, const char *component, const char *text,
                        const char *ts)
{
    if (journal)
        buf_printf(out, "<%d>", syslog_priorities[level]);
    buf_printf(out, "%s %s %s: %s\n", ts, level_tags[level], component, text);
}

void log_format_line(Buf *out, LogLevel level, const char *component, const char *msg,
                     const PfError *err, TimeUs ts)
{
    char when[CLOCK_ISO_SIZE];

    clock_format_iso(ts, when);
    if (current_format == LOG_FORMAT_JSON) {
        if (journal)
            buf_printf(out, "<%d>", syslog_priorities[level]);
        format_json(out, level, component, msg, err, when);
        return;
    }
    format_text(out, level, component, msg, when);
    if (err && err->hint[0]) {
        Buf hint = BUF_INIT;

        buf_printf(&hint, "HINT: %s", err->hint);
        format_text(out, level, component, hint.data, when);
        buf_free(&hint);
    }
}

/* One write(2) per call so lines from pgfan and its children do not interleave. */
static void emit(LogLevel level, const char *component, const char *text, const PfError *err)
{
    Buf line = BUF_INIT;

    log_format_line(&line, level, component, text, err, clock_wall_us());
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
    emit(level, component, text, NULL);
}

void log_error_value(const char *component, const PfError *err)
{
    LogLevel level = err->kind == ERR_RETRY ? LOG_LEVEL_WARNING : LOG_LEVEL_ERROR;

    if (level < current_level)
        return;
    emit(level, component, err->msg, err);
}
