/*
 * log.h - log lines on stderr.
 *
 * Every line names the component that wrote it. Two formats ([log] format):
 *   text  2026-11-24T01:02:03.456Z INFO replication: streaming from slot "pgfan" at 0/16B3748
 *   json  {"ts":"2026-11-24T01:02:03.456Z","level":"info","component":"replication",
 *          "msg":"streaming from slot \"pgfan\" at 0/16B3748"}
 * (one object per line; an error logged with log_error_value() adds "error"
 * with its kind and "hint" when it has one; text puts the hint on a
 * "HINT: ..." line of its own).
 *
 * Under systemd, when stderr is the journal (JOURNAL_STREAM names stderr's
 * device and inode), every line starts with the syslog priority as
 * sd-daemon.h spells it ("<3>" error, "<4>" warning, "<6>" info, "<7>"
 * debug), which journald strips and stores as the entry's priority.
 *
 * Level, format and journal mode are process-wide: main()/the daemon set
 * them from the configuration and change them on reload (one thread: no
 * locking).
 */
#ifndef PGFAN_LOG_H
#define PGFAN_LOG_H

#include "buf.h"
#include "clock.h"
#include "error.h"

typedef enum LogLevel {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARNING,
    LOG_LEVEL_ERROR,
} LogLevel;

typedef enum LogFormat {
    LOG_FORMAT_TEXT = 0,
    LOG_FORMAT_JSON,
} LogFormat;

void log_set_level(LogLevel level);
LogLevel log_get_level(void);

/* Parses "debug", "info", "warning", "error"; false on anything else. */
bool log_level_parse(const char *text, LogLevel *out);
const char *log_level_name(LogLevel level);

void log_set_format(LogFormat format);
LogFormat log_get_format(void);

/* Parses "text", "json"; false on anything else. */
bool log_format_parse(const char *text, LogFormat *out);
const char *log_format_name(LogFormat format);

/*
 * Turns the journal priority prefix on when $JOURNAL_STREAM ("<dev>:<inode>",
 * set by systemd for services whose stderr goes to the journal) matches
 * stderr's device and inode, off otherwise. Returns the new mode.
 */
bool log_detect_journal(void);
void log_set_journal(bool on);
bool log_get_journal(void);

/* The syslog priority of a level (sd-daemon.h SD_ERR = 3 ... SD_DEBUG = 7). */
int log_syslog_priority(LogLevel level);

void log_msg(LogLevel level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs err at error level (or warning for ERR_RETRY), plus its hint. */
void log_error_value(const char *component, const PfError *err);

/*
 * Appends the line(s) one log call writes, in the current format and
 * journal mode, newline-terminated, to out: the message msg of component at
 * level, at wall time ts; err (may be NULL) adds its kind and hint. What
 * log_msg and log_error_value write; exposed for tests.
 */
void log_format_line(Buf *out, LogLevel level, const char *component, const char *msg,
                     const PfError *err, TimeUs ts);

#define log_debug(comp, ...) log_msg(LOG_LEVEL_DEBUG, comp, __VA_ARGS__)
#define log_info(comp, ...) log_msg(LOG_LEVEL_INFO, comp, __VA_ARGS__)
#define log_warning(comp, ...) log_msg(LOG_LEVEL_WARNING, comp, __VA_ARGS__)
#define log_error(comp, ...) log_msg(LOG_LEVEL_ERROR, comp, __VA_ARGS__)

#endif
