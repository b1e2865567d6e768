/*
 * compare.c - what changed between two configurations (SIGHUP reload).
 *
 * Values are compared as stored, not as printed: printing redacts secrets,
 * and a new password must still count as a change (that needs a restart).
 * The texts handed to the callback are the printed, redacted forms.
 */
#include "internal.h"

#include <string.h>

static bool same_string(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static bool same_map(const ConfigMap *a, const ConfigMap *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->items[i].key, b->items[i].key) != 0 ||
            strcmp(a->items[i].value, b->items[i].value) != 0)
            return false;
    }
    return true;
}

/* Enum and list rows have no offset: their printed form is their value (never secret). */
static bool same_printed(const OptDef *def, const Config *a, const Config *b)
{
    Buf ta = BUF_INIT, tb = BUF_INIT;
    bool same;

    opt_print(def, a, &ta);
    opt_print(def, b, &tb);
    same = same_string(ta.data ? ta.data : "", tb.data ? tb.data : "");
    buf_free(&ta);
    buf_free(&tb);
    return same;
}

static bool same_value(const OptDef *def, const Config *a, const Config *b)
{
    const void *fa = (const char *)a + def->offset;
    const void *fb = (const char *)b + def->offset;

    if (def->print)
        return same_printed(def, a, b);
    switch (def->type) {
    case OPT_STRING:
        return same_string(*(char *const *)fa, *(char *const *)fb);
    case OPT_BOOL:
        return *(const bool *)fa == *(const bool *)fb;
    case OPT_INT:
    case OPT_SIZE:
        return *(const size_t *)fa == *(const size_t *)fb;
    case OPT_DURATION:
        return *(const TimeUs *)fa == *(const TimeUs *)fb;
    case OPT_MAP:
        return same_map(fa, fb);
    case OPT_ENUM:
    case OPT_LIST:
        break;
    }
    return same_printed(def, a, b);
}

static bool section_enabled(const SectionDef *sec, const Config *cfg)
{
    return !sec->is_sink || *(const bool *)(const void *)((const char *)cfg + sec->enabled_offset);
}

static void report(const OptDef *def, const Config *a, const Config *b, ConfigChangeFn fn,
                   void *arg)
{
    Buf ta = BUF_INIT, tb = BUF_INIT;

    opt_print(def, a, &ta);
    opt_print(def, b, &tb);
    fn(arg, def->section, def->key, ta.len ? ta.data : "(unset)", tb.len ? tb.data : "(unset)",
       def->reloadable);
    buf_free(&ta);
    buf_free(&tb);
}

size_t config_compare(const Config *old_cfg, const Config *new_cfg, ConfigChangeFn fn, void *arg)
{
    size_t n = 0;

    for (size_t s = 0; s < config_n_sections; s++) {
        const SectionDef *sec = &config_sections[s];
        bool was = section_enabled(sec, old_cfg), is = section_enabled(sec, new_cfg);

        if (was != is) {
            fn(arg, sec->name, "enabled", was ? "on" : "off", is ? "on" : "off", false);
            n++;
        }
        if (!was || !is)
            continue; /* a sink that comes or goes: "enabled" says it all */
        for (size_t i = 0; i < config_n_options; i++) {
            const OptDef *def = &config_options[i];

            if (strcmp(def->section, sec->name) != 0 || same_value(def, old_cfg, new_cfg))
                continue;
            report(def, old_cfg, new_cfg, fn, arg);
            n++;
        }
    }
    return n;
}

bool config_option_reloadable(const char *section, const char *key)
{
    const OptDef *def = config_find_option(section, key);

    return def && def->reloadable;
}
