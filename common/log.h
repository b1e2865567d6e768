/*
 * log.h - log lines on stderr.
 *
 * Every line names the component that wrote it:
 *   2026-11-24T01:02:03.456Z INFO replication: streaming from slot "pgfan" at 0/16B3748
 * Errors carried in a PfError are logged with log_error_value(), which adds
 * the HINT line when the error has one. The level is process-wide, set once
 * from the configuration by main().
 */
#ifndef PGFAN_LOG_H
#define PGFAN_LOG_H

#include "error.h"

typedef enum LogLevel {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARNING,
    LOG_LEVEL_ERROR,
} LogLevel;

void log_set_level(LogLevel level);
LogLevel log_get_level(void);

/* Parses "debug", "info", "warning", "error"; false on anything else. */
bool log_level_parse(const char *text, LogLevel *out);
const char *log_level_name(LogLevel level);

void log_msg(LogLevel level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs err at error level (or warning for ERR_RETRY), plus its hint. */
void log_error_value(const char *component, const PfError *err);

#define log_debug(comp, ...) log_msg(LOG_LEVEL_DEBUG, comp, __VA_ARGS__)
#define log_info(comp, ...) log_msg(LOG_LEVEL_INFO, comp, __VA_ARGS__)
#define log_warning(comp, ...) log_msg(LOG_LEVEL_WARNING, comp, __VA_ARGS__)
#define log_error(comp, ...) log_msg(LOG_LEVEL_ERROR, comp, __VA_ARGS__)

#endif
