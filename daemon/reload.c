/* reload.c - SIGHUP: load the file again, apply what may change, report the rest. */
#include "reload.h"

#include "../common/log.h"

#include <stdlib.h>
#include <string.h>

#define COMPONENT "pgfan"

void reload_init(Reloader *r, const Config *running)
{
    memset(r, 0, sizeof *r);
    r->running = running;
}

void reload_free(Reloader *r)
{
    config_free(r->current);
    r->current = NULL;
}

const Config *reload_current(const Reloader *r)
{
    return r->current ? r->current : r->running;
}

/* Logs each line of text at level, "reload: <line>" (config errors are one problem per line). */
static void log_lines(LogLevel level, const char *prefix, const char *text)
{
    while (*text) {
        const char *nl = strchr(text, '\n');
        int len = nl ? (int)(nl - text) : (int)strlen(text);

        if (len > 0)
            log_msg(level, COMPONENT, "%s%.*s", prefix, len, text);
        text += len + (nl ? 1 : 0);
    }
}

typedef struct Counts {
    size_t applied;
    size_t restart;
} Counts;

static void note_restart(void *arg, const char *section, const char *key, const char *old_text,
                         const char *new_text, bool reloadable)
{
    Counts *c = arg;

    if (reloadable)
        return;
    log_warning(COMPONENT, "reload: [%s] %s changed (%s -> %s): needs a restart, not applied",
                section, key, old_text, new_text);
    c->restart++;
}

static void note_applied(void *arg, const char *section, const char *key, const char *old_text,
                         const char *new_text, bool reloadable)
{
    Counts *c = arg;

    if (!reloadable)
        return;
    log_info(COMPONENT, "reload: [%s] %s: %s -> %s", section, key, old_text, new_text);
    c->applied++;
}

bool reload_run(Reloader *r, ReloadApply apply, void *arg)
{
    Config *next = NULL;
    PfError err;
    Counts counts = {0, 0};

    r->last_wall = clock_wall_us();
    log_info(COMPONENT, "SIGHUP: reloading the configuration from %s", r->running->path);
    if (!config_load(r->running->path, &next, &err)) {
        const char *nl = strchr(err.msg, '\n');

        log_lines(LOG_LEVEL_ERROR, "reload: ", err.msg);
        log_lines(LOG_LEVEL_ERROR, "reload: HINT: ", err.hint);
        log_warning(COMPONENT, "reload failed: keeping the current configuration");
        snprintf(r->last_error, sizeof r->last_error, "%.*s",
                 nl ? (int)(nl - err.msg) : (int)strlen(err.msg), err.msg);
        r->failed++;
        return false;
    }
    config_compare(r->running, next, note_restart, &counts);
    config_compare(reload_current(r), next, note_applied, &counts);
    apply(arg, next);
    config_free(r->current);
    r->current = next;
    r->ok++;
    r->restart_needed = (unsigned)counts.restart;
    r->last_error[0] = '\0';
    log_info(COMPONENT, "configuration reloaded: %zu change%s applied, %zu need%s a restart",
             counts.applied, counts.applied == 1 ? "" : "s", counts.restart,
             counts.restart == 1 ? "s" : "");
    return true;
}

void reload_render_json(const Reloader *r, Buf *out)
{
    buf_printf(out,
               "\"reload\":{\"ok\":%u,\"failed\":%u,\"restart_needed\":%u,\"last_error\":", r->ok,
               r->failed, r->restart_needed);
    buf_append_json_string(out, r->last_error, strlen(r->last_error));
    buf_append_char(out, '}');
}
