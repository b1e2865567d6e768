/*
 * reload.h - configuration reload on SIGHUP.
 *
 * The Config the daemon started with stays as it is: modules hold
 * `const Config *` to it and rely on it never changing. A reload loads the
 * file (and the environment) again into a new Config, which this module
 * owns, and then:
 *   - an invalid file changes nothing: every problem is logged (one line
 *     each, plus the hints) and the current configuration is kept;
 *   - every option that differs from the running configuration and is not
 *     marked reloadable in the option table is logged as "needs a restart"
 *     and not applied;
 *   - every reloadable option that differs from the last applied values is
 *     logged with its old and new value, and the caller's apply callback
 *     receives the new Config to take the reloadable values from (log
 *     level and format, slot check and heartbeat intervals, ...). The
 *     callback must copy what it needs or keep using reload_current(),
 *     which stays valid until the next successful reload.
 *
 * Ownership: owns the reloaded Configs; borrows the running one.
 */
#ifndef PGFAN_RELOAD_H
#define PGFAN_RELOAD_H

#include "../common/buf.h"
#include "../common/clock.h"
#include "../config/config.h"

#include <stdbool.h>

typedef void (*ReloadApply)(void *arg, const Config *cfg);

typedef struct Reloader {
    const Config *running;         /* borrowed: the configuration the daemon started with */
    Config *current;               /* owned: the last one loaded successfully, NULL before */
    unsigned ok;                   /* successful reloads */
    unsigned failed;               /* reloads refused (invalid file) */
    unsigned restart_needed;       /* options changed in the file but not applied (last reload) */
    TimeUs last_wall;              /* wall clock of the last attempt, 0 before */
    char last_error[ERR_MSG_SIZE]; /* first problem of the last failed attempt, "" after success */
} Reloader;

void reload_init(Reloader *r, const Config *running);
void reload_free(Reloader *r);

/* The configuration whose reloadable values are in effect. */
const Config *reload_current(const Reloader *r);

/*
 * Loads running->path again and applies it as described above. Returns
 * false when the new file was refused (nothing changed).
 */
bool reload_run(Reloader *r, ReloadApply apply, void *arg);

/* Appends "reload":{"ok":N,"failed":N,"restart_needed":N,"last_error":"..."} (no braces around). */
void reload_render_json(const Reloader *r, Buf *out);

#endif
