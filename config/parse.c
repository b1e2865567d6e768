/*
 * parse.c - the INI reader, environment overrides and config_load().
 *
 * Why not the packaged inih (libinih-dev 55, Debian 12)? Measured with a
 * small program against the installed library:
 *  - a 300-character line is cut at 197 characters and the rest is parsed
 *    as a separate, bogus line (return code points at line 4 instead of 3);
 *    long lines only work after setting ini_use_stack/ini_allow_realloc/
 *    ini_max_line, process-wide globals that exist only in Debian's build
 *    (upstream makes them compile-time macros);
 *  - inline comments are not quote-aware: dsn = ... password='a ;b' arrives
 *    as "... password='a" (they can only be switched off globally);
 *  - there is no line number in the handler (no INI_HANDLER_LINENO); it can
 *    be recovered by counting '\n' in a custom reader, but syntax errors
 *    are reported for the first bad line only, so "report every problem"
 *    is impossible;
 *  - "key: value" is silently accepted as "key = value", and indented lines
 *    become continuations of the previous value.
 * So pgfan reads its INI dialect itself (about 150 lines below).
 *
 * The dialect: [section]; key = value; lines starting with ';' or '#' are
 * comments; " ;" (whitespace then ';') starts an inline comment unless it
 * is inside a single-quoted word, so libpq values like password='a;b'
 * survive. A quote opens a quoted word only at the start of a word (after
 * whitespace or '='), as in libpq: password=it's stays literal. Values keep
 * their quotes; CRLF line ends and a UTF-8 BOM are accepted; lines have no
 * length limit.
 */
#include "internal.h"

#include "../common/mem.h"
#include "agg_loader.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* One "<key>.<name> = value" of an OPT_MAP row; all strings owned. */
typedef struct MapEntry {
    char *name;
    char *file_value;
    int file_line;
    char *env_value; /* an override of this entry (it must be in the file) */
    char *env_name;
} MapEntry;

/* Where each option's text came from; the environment wins over the file. */
typedef struct Setting {
    char *file_value; /* owned */
    int file_line;    /* 0: not in the file */
    char *env_value;  /* owned copy */
    char *env_name;   /* owned */
    MapEntry *entries; /* OPT_MAP rows, in file order */
    size_t n_entries;
} Setting;

typedef struct Loader {
    const char *path; /* borrowed, may be NULL */
    Problems problems;
    Setting *settings;  /* one per config_options row */
    bool *section_seen; /* one per config_sections row */
    AggLoader aggs;     /* [aggregate.NAME] sections (agg_loader.h) */
} Loader;

/* ---- small text helpers ---- */

static char *trim(char *s)
{
    char *end;

    while (*s == ' ' || *s == '\t')
        s++;
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *end = '\0';
    return s;
}

/* A copy of text cut for a message, with quotes. */
static void quote_text(const char *text, Buf *out)
{
    opt_quote_for_message(NULL, text, out);
}

static void strip_inline_comment(char *value)
{
    bool quoted = false;

    for (char *p = value; *p; p++) {
        if (quoted) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == '\'')
                quoted = false;
            continue;
        }
        if (*p == '\'' && (p == value || p[-1] == ' ' || p[-1] == '\t' || p[-1] == '='))
            quoted = true;
        else if (*p == ';' && p > value && (p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            return;
        }
    }
}

static size_t section_index(const SectionDef *sec)
{
    return (size_t)(sec - config_sections);
}

static size_t option_index(const OptDef *def)
{
    return (size_t)(def - config_options);
}

/* Lists the known sinks ("file") or sections, for messages. */
static void append_known_sections(Buf *b, bool sinks)
{
    bool first = true;

    for (size_t i = 0; i < config_n_sections; i++) {
        const SectionDef *sec = &config_sections[i];

        if (sinks && !sec->is_sink)
            continue;
        buf_printf(b, "%s%s", first ? "" : ", ", sinks ? sec->name + 5 : sec->name);
        first = false;
    }
    if (!sinks)
        buf_append_str(b, ", " AGG_SECTION_PREFIX "<name>");
}

/* ---- the file ---- */

static void unknown_section(Loader *ld, const Origin *at, const char *name)
{
    const char *names[16] = {NULL};
    size_t n = 0;
    bool sink = strncmp(name, "sink.", 5) == 0;
    const char *suggestion;
    Buf b = BUF_INIT;

    for (size_t i = 0; i < config_n_sections && n < 16; i++) {
        if (!sink || config_sections[i].is_sink)
            names[n++] = config_sections[i].name;
    }
    suggestion = config_suggest(name, names, n);
    buf_printf(&b, "unknown %s [%s]; ", sink ? "sink" : "section", name);
    if (suggestion)
        buf_printf(&b, "did you mean [%s]? ", suggestion);
    buf_printf(&b, "known %s: ", sink ? "sinks" : "sections");
    append_known_sections(&b, sink);
    problems_add(&ld->problems, at, NULL, "%s", b.data);
    buf_free(&b);
}

/* Suggests a key of section; env: spell it as an environment variable. */
static void unknown_key(Loader *ld, const Origin *at, const char *section, const char *key,
                        bool env)
{
    const char *keys[64] = {NULL};
    const char *suggestion;
    const OptDef *match;
    Buf b = BUF_INIT;
    Buf hint = BUF_INIT;
    size_t n = 0;

    for (size_t i = 0; i < config_n_options && n < 64; i++) {
        if (strcmp(config_options[i].section, section) == 0)
            keys[n++] = config_options[i].key;
    }
    suggestion = config_suggest(key, keys, n);
    buf_printf(&b, "unknown key \"%s\" in [%s]; ", key, section);
    if (suggestion) {
        match = config_find_option(section, suggestion);
        buf_append_str(&b, "did you mean ");
        if (env) {
            opt_env_name(section, suggestion, &b);
        } else {
            buf_printf(&b, "\"%s\"", suggestion);
        }
        buf_append_char(&b, '?');
        buf_printf(&hint, "%s in [%s]: %s", suggestion, section, match->desc);
    } else {
        buf_append_str(&b, "known keys: ");
        for (size_t i = 0; i < n; i++)
            buf_printf(&b, "%s%s", i ? ", " : "", keys[i]);
    }
    problems_add(&ld->problems, at, hint.data, "%s", b.data);
    buf_free(&b);
    buf_free(&hint);
}

static void add_map_entry(Loader *ld, const Origin *at, const OptDef *def, const char *name,
                          const char *value)
{
    Setting *set = &ld->settings[option_index(def)];
    MapEntry *e;

    for (size_t i = 0; i < set->n_entries; i++) {
        if (strcmp(set->entries[i].name, name) == 0) {
            problems_add(&ld->problems, at, NULL,
                         "duplicate key \"%s.%s\" in [%s] (first set on line %d); keep only one",
                         def->key, name, def->section, set->entries[i].file_line);
            return;
        }
    }
    set->entries = xrealloc(set->entries, (set->n_entries + 1) * sizeof *set->entries);
    e = &set->entries[set->n_entries++];
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    e->file_value = xstrdup(value);
    e->file_line = at->line;
}

/*
 * One line. *section is the current section: NULL before any header, or
 * when the last header was unknown (then *in_unknown is set and its keys
 * are skipped: the header was reported once).
 */
static void parse_line(Loader *ld, char *line, int lineno, const SectionDef **section,
                       bool *in_unknown)
{
    Origin at = {.kind = ORIGIN_FILE, .line = lineno};
    char *p = trim(line);
    char *eq, *key, *value;
    Buf b = BUF_INIT;

    if (*p == '\0' || *p == ';' || *p == '#')
        return;
    if (*p == '[') {
        char *close = strchr(p, ']');
        char *rest;

        if (close == NULL) {
            quote_text(p, &b);
            problems_add(&ld->problems, &at, NULL,
                         "unterminated section header %s; expected [name]", b.data);
            buf_free(&b);
            *section = NULL;
            *in_unknown = true;
            return;
        }
        *close = '\0';
        rest = trim(close + 1);
        if (*rest != '\0' && *rest != ';' && *rest != '#') {
            quote_text(rest, &b);
            problems_add(&ld->problems, &at, NULL, "unexpected text %s after section header [%s]",
                         b.data, trim(p + 1));
            buf_free(&b);
        }
        p = trim(p + 1);
        agg_loader_leave(&ld->aggs);
        if (agg_loader_is_section(p)) {
            agg_loader_section(&ld->aggs, &ld->problems, p, lineno);
            *section = NULL;
            *in_unknown = false;
            return;
        }
        *section = config_find_section(p);
        *in_unknown = *section == NULL;
        if (*section)
            ld->section_seen[section_index(*section)] = true;
        else
            unknown_section(ld, &at, p);
        return;
    }
    eq = strchr(p, '=');
    if (eq == NULL) {
        quote_text(p, &b);
        problems_add(&ld->problems, &at, NULL, "expected \"key = value\" or \"[section]\", got %s",
                     b.data);
        buf_free(&b);
        return;
    }
    *eq = '\0';
    key = trim(p);
    value = eq + 1;
    strip_inline_comment(value);
    value = trim(value);
    if (*key == '\0') {
        problems_add(&ld->problems, &at, NULL, "missing key before '='");
        return;
    }
    if (*in_unknown)
        return;
    if (agg_loader_in_section(&ld->aggs)) {
        agg_loader_key(&ld->aggs, &ld->problems, key, value, lineno);
        return;
    }
    if (*section == NULL) {
        problems_add(&ld->problems, &at, NULL,
                     "key \"%s\" is outside any section; put it under a header such as "
                     "[source]",
                     key);
        return;
    }
    const OptDef *def = config_find_option((*section)->name, key);
    const char *map_name;
    if (def == NULL && (def = config_find_map_option((*section)->name, key, &map_name))) {
        add_map_entry(ld, &at, def, map_name, value);
        return;
    }
    if (def == NULL) {
        unknown_key(ld, &at, (*section)->name, key, false);
        return;
    }
    Setting *set = &ld->settings[option_index(def)];
    if (set->file_line) {
        problems_add(&ld->problems, &at, NULL,
                     "duplicate key \"%s\" in [%s] (first set on line %d); keep only one", key,
                     def->section, set->file_line);
        return;
    }
    set->file_value = xstrdup(value);
    set->file_line = lineno;
}

static bool read_file(Loader *ld, PfError *err)
{
    FILE *f = fopen(ld->path, "r");
    const SectionDef *section = NULL;
    bool in_unknown = false;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0;

    if (f == NULL) {
        err_set(err, ERR_CONFIG, "could not open config file \"%s\": %s", ld->path,
                strerror(errno));
        return false;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        size_t n = (size_t)len;

        lineno++;
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (strlen(line) != n) {
            Origin at = {.kind = ORIGIN_FILE, .line = lineno};
            problems_add(&ld->problems, &at, NULL, "line contains a NUL byte");
            continue;
        }
        if (lineno == 1 && strncmp(line, "\xEF\xBB\xBF", 3) == 0)
            memmove(line, line + 3, n - 2);
        parse_line(ld, line, lineno, &section, &in_unknown);
    }
    free(line);
    if (ferror(f)) {
        err_set(err, ERR_CONFIG, "could not read config file \"%s\": %s", ld->path,
                strerror(errno));
        fclose(f);
        return false;
    }
    fclose(f);
    return true;
}

/* ---- the environment ---- */

/* "PGFAN_SINK_FILE_" for [sink.file]. */
static void env_prefix(const SectionDef *sec, Buf *out)
{
    buf_append_str(out, "PGFAN_");
    for (const char *p = sec->name; *p; p++)
        buf_append_char(out, *p == '.' ? '_' : (char)toupper((unsigned char)*p));
    buf_append_char(out, '_');
}

/*
 * PGFAN_SINK_KAFKA_LIBRDKAFKA_<NAME> for an OPT_MAP row: the variable name
 * cannot be mapped back (SASL_PASSWORD: sasl.password? sasl_password?), so
 * it overrides only an entry the file sets, found by spelling each entry
 * as a variable. True when name starts like one of the section's map rows
 * (handled: applied or reported).
 */
static bool env_map_entry(Loader *ld, const Origin *at, const SectionDef *sec, const char *name,
                          const char *value)
{
    for (size_t i = 0; i < config_n_options; i++) {
        const OptDef *def = &config_options[i];
        Setting *set = &ld->settings[i];
        Buf prefix = BUF_INIT;
        bool match;

        if (def->type != OPT_MAP || strcmp(def->section, sec->name) != 0)
            continue;
        opt_env_name(def->section, def->key, &prefix);
        buf_append_char(&prefix, '_');
        match = strncmp(name, prefix.data, prefix.len) == 0 && name[prefix.len] != '\0';
        buf_free(&prefix);
        if (!match)
            continue;
        for (size_t e = 0; e < set->n_entries; e++) {
            Buf spelled = BUF_INIT;
            bool same;

            opt_env_name_map_entry(def, set->entries[e].name, &spelled);
            same = strcmp(spelled.data, name) == 0;
            buf_free(&spelled);
            if (same && set->entries[e].env_name == NULL) {
                set->entries[e].env_name = xstrdup(name);
                set->entries[e].env_value = xstrdup(value);
                return true;
            }
            if (same)
                return true; /* a duplicate in environ: getenv() would see the first */
        }
        problems_add(&ld->problems, at, NULL,
                     "no %s.<name> line of [%s] in the config file matches it; a %s.* key can "
                     "be overridden from the environment only when the file sets it (add "
                     "%s.<name> = <value> to the file)",
                     def->key, def->section, def->key, def->key);
        return true;
    }
    return false;
}

static void read_env_var(Loader *ld, const char *entry)
{
    const char *eq = strchr(entry, '=');
    const SectionDef *best = NULL;
    size_t best_len = 0;
    char *name;
    Origin at = {.kind = ORIGIN_ENV};

    if (eq == NULL)
        return;
    name = xstrndup(entry, (size_t)(eq - entry));
    for (size_t i = 0; i < config_n_sections; i++) {
        Buf prefix = BUF_INIT;

        env_prefix(&config_sections[i], &prefix);
        if (strncmp(name, prefix.data, prefix.len) == 0 && prefix.len > best_len) {
            best = &config_sections[i];
            best_len = prefix.len;
        }
        buf_free(&prefix);
    }
    at.env_name = name;
    if (best == NULL) {
        if (strncmp(name, "PGFAN_SINK_", 11) == 0) {
            Buf b = BUF_INIT;
            append_known_sections(&b, true);
            problems_add(&ld->problems, &at, NULL,
                         "does not name a known sink; known sinks: %s (PGFAN_SINK_<NAME>_<KEY>)",
                         b.data);
            buf_free(&b);
        }
        free(name);
        return;
    }

    char *key = xstrdup(name + best_len);
    for (char *p = key; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    const OptDef *def = config_find_option(best->name, key);
    if (def == NULL && env_map_entry(ld, &at, best, name, eq + 1)) {
        free(key);
        free(name);
        return;
    }
    if (def == NULL) {
        unknown_key(ld, &at, best->name, key, true);
        free(key);
        free(name);
        return;
    }
    free(key);
    Setting *set = &ld->settings[option_index(def)];
    if (set->env_name) { /* a duplicate in environ: getenv() would see the first */
        free(name);
        return;
    }
    set->env_name = name;
    set->env_value = xstrdup(eq + 1);
    ld->section_seen[section_index(best)] = true;
}

static void read_env(Loader *ld)
{
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "PGFAN_", 6) == 0)
            read_env_var(ld, *e);
    }
}

/* ---- resolving values ---- */

/* The effective text of def and where it came from; NULL when unset. */
static const char *setting_text(const Loader *ld, const OptDef *def, Origin *at)
{
    const Setting *set = &ld->settings[option_index(def)];

    memset(at, 0, sizeof *at);
    if (set->env_name) {
        at->kind = ORIGIN_ENV;
        at->env_name = set->env_name;
        return set->env_value;
    }
    if (set->file_line) {
        at->kind = ORIGIN_FILE;
        at->line = set->file_line;
        return set->file_value;
    }
    return def->def;
}

static void invalid_value(Loader *ld, const Origin *at, const OptDef *def, const char *text,
                          const OptCheck *why)
{
    Buf shown = BUF_INIT;

    opt_quote_for_message(def, text, &shown);
    problems_add(&ld->problems, at, why->hint, "invalid value %s for %s in [%s]: %s", shown.data,
                 def->key, def->section, why->why);
    buf_free(&shown);
}

/* Parses, checks and stores one option; false (problem recorded) if refused. */
static bool resolve(Loader *ld, const OptDef *def, const char *text, const Origin *at, Config *cfg,
                    OptValue *value)
{
    OptCheck why;

    if (!opt_parse_value(def, text, value, &why)) {
        invalid_value(ld, at, def, text, &why);
        return false;
    }
    if (!opt_check_range(def, value, &why)) {
        problems_add(&ld->problems, at, NULL, "%s", why.why);
        return false;
    }
    why.why[0] = why.hint[0] = '\0';
    if ((def->validate && !def->validate(value, &why)) || !opt_store(def, value, cfg, &why)) {
        invalid_value(ld, at, def, text, &why);
        return false;
    }
    return true;
}

/* Every entry of an OPT_MAP row, each checked like a string value. */
static bool resolve_map(Loader *ld, const OptDef *def, Config *cfg)
{
    const Setting *set = &ld->settings[option_index(def)];
    bool fine = true;

    for (size_t i = 0; i < set->n_entries; i++) {
        const MapEntry *e = &set->entries[i];
        Origin at = {.kind = ORIGIN_FILE, .line = e->file_line};
        const char *text = e->file_value;
        OptValue value;
        OptCheck why;
        char *name = e->name;

        if (e->env_name) {
            at.kind = ORIGIN_ENV;
            at.env_name = e->env_name;
            text = e->env_value;
        }
        why.why[0] = why.hint[0] = '\0';
        if (!opt_parse_value(def, text, &value, &why) ||
            (def->validate_entry && !def->validate_entry(name, text, &why))) {
            Buf shown = BUF_INIT;

            buf_append_char(&shown, '"');
            buf_append_str(&shown, opt_map_name_is_secret(def, name) ? "*****" : text);
            buf_append_char(&shown, '"');
            problems_add(&ld->problems, &at, why.hint, "invalid value %s for %s.%s in [%s]: %s",
                         shown.data, def->key, name, def->section, why.why);
            buf_free(&shown);
            opt_value_free(&value);
            fine = false;
            continue;
        }
        value.items = &name;
        value.n_items = 1;
        opt_store(def, &value, cfg, &why);
        value.items = NULL;
        value.n_items = 0;
        opt_value_free(&value);
    }
    return fine;
}

static void check_orders(Loader *ld, const OptValue *values, const bool *ok)
{
    for (size_t i = 0; i < config_n_orders; i++) {
        const OptOrder *o = &config_orders[i];
        const OptDef *low = config_find_option(o->section, o->low);
        const OptDef *high = config_find_option(o->section, o->high);
        size_t li = option_index(low), hi = option_index(high);
        Origin at;
        Buf b = BUF_INIT;

        if (!ok[li] || !ok[hi] || values[li].num <= values[hi].num)
            continue;
        /* blame the one the user set; the high end when both were set */
        setting_text(ld, high, &at);
        if (at.kind == ORIGIN_NONE)
            setting_text(ld, low, &at);
        buf_printf(&b, "%s in [%s] (", high->key, o->section);
        opt_format_number(high, values[hi].num, &b);
        buf_printf(&b, ") must not be less than %s (", low->key);
        opt_format_number(low, values[li].num, &b);
        buf_append_str(&b, ")");
        problems_add(&ld->problems, &at, NULL, "%s; raise %s or lower %s", b.data, high->key,
                     low->key);
        buf_free(&b);
    }
}

/* A sink is on when its section was seen; with none at all, the default sink. */
static void enable_sinks(Loader *ld, Config *cfg)
{
    bool any_sink = false;

    for (size_t s = 0; s < config_n_sections; s++) {
        const SectionDef *sec = &config_sections[s];
        if (sec->is_sink && ld->section_seen[s]) {
            *(bool *)(void *)((char *)cfg + sec->enabled_offset) = true;
            any_sink = true;
        }
    }
    for (size_t s = 0; s < config_n_sections && !any_sink; s++) {
        const SectionDef *sec = &config_sections[s];
        if (sec->default_sink) {
            *(bool *)(void *)((char *)cfg + sec->enabled_offset) = true;
            ld->section_seen[s] = true;
        }
    }
}

/* Non-sink sections are always in force; a sink only when enabled. */
static bool section_active(const Loader *ld, const SectionDef *sec)
{
    return !sec->is_sink || ld->section_seen[section_index(sec)];
}

static void resolve_all(Loader *ld, Config *cfg)
{
    OptValue *values = xcalloc(config_n_options, sizeof *values);
    bool *ok = xcalloc(config_n_options, sizeof *ok);

    enable_sinks(ld, cfg);

    for (size_t i = 0; i < config_n_options; i++) {
        const OptDef *def = &config_options[i];
        Origin at;
        const char *text = setting_text(ld, def, &at);

        if (def->type == OPT_MAP) {
            ok[i] = resolve_map(ld, def, cfg);
            continue;
        }
        if (text == NULL) {
            /* a disabled sink's required keys are not required */
            if (def->required && section_active(ld, config_find_section(def->section))) {
                Buf env = BUF_INIT;
                Buf hint = BUF_INIT;
                opt_env_name(def->section, def->key, &env);
                buf_printf(&hint, "%s in [%s]: %s", def->key, def->section, def->desc);
                problems_add(&ld->problems, NULL, hint.data,
                             "missing required key \"%s\" in [%s]; set it in the file or with %s",
                             def->key, def->section, env.data);
                buf_free(&env);
                buf_free(&hint);
            }
            continue;
        }
        ok[i] = resolve(ld, def, text, &at, cfg, &values[i]);
    }
    /* defaults taken from another option, once that one is known */
    for (size_t i = 0; i < config_n_options; i++) {
        const OptDef *def = &config_options[i];
        Origin at;

        if (def->default_from == NULL || setting_text(ld, def, &at) != NULL)
            continue;
        const OptDef *from = config_find_option(
            def->default_from_section ? def->default_from_section : def->section,
            def->default_from);
        size_t fi = option_index(from);
        const char *text = ok[fi] ? setting_text(ld, from, &at) : NULL;
        /* a chain ([sink.kafka] topic_prefix <- [source] name <- slot) */
        while (text == NULL && ok[fi] && from->default_from) {
            from = config_find_option(
                from->default_from_section ? from->default_from_section : from->section,
                from->default_from);
            fi = option_index(from);
            text = ok[fi] ? setting_text(ld, from, &at) : NULL;
        }
        if (text)
            ok[i] = resolve(ld, def, text, &at, cfg, &values[i]);
    }
    check_orders(ld, values, ok);

    for (size_t i = 0; i < config_n_options; i++)
        opt_value_free(&values[i]);
    free(values);
    free(ok);
}

/* ---- public ---- */

bool config_load(const char *path, Config **out, PfError *err)
{
    Loader ld = {.path = path};
    Config *cfg = xcalloc(1, sizeof *cfg);
    bool fine = true;

    *out = NULL;
    err_clear(err);
    problems_init(&ld.problems, path);
    ld.settings = xcalloc(config_n_options, sizeof *ld.settings);
    ld.section_seen = xcalloc(config_n_sections, sizeof *ld.section_seen);
    cfg->path = path ? xstrdup(path) : NULL;

    if (path && !read_file(&ld, err)) {
        fine = false;
    } else {
        read_env(&ld);
        resolve_all(&ld, cfg);
        agg_loader_finish(&ld.aggs, &ld.problems, cfg);
        fine = problems_report(&ld.problems, err);
    }

    for (size_t i = 0; i < config_n_options; i++) {
        free(ld.settings[i].file_value);
        free(ld.settings[i].env_value);
        free(ld.settings[i].env_name);
        for (size_t e = 0; e < ld.settings[i].n_entries; e++) {
            free(ld.settings[i].entries[e].name);
            free(ld.settings[i].entries[e].file_value);
            free(ld.settings[i].entries[e].env_value);
            free(ld.settings[i].entries[e].env_name);
        }
        free(ld.settings[i].entries);
    }
    free(ld.settings);
    free(ld.section_seen);
    agg_loader_free(&ld.aggs);
    problems_free(&ld.problems);
    if (!fine) {
        config_free(cfg);
        return false;
    }
    *out = cfg;
    return true;
}

void config_free(Config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < config_n_options; i++) {
        const OptDef *def = &config_options[i];

        if (def->type == OPT_STRING && def->set == NULL)
            free(*(char **)(void *)((char *)cfg + def->offset));
        if (def->type == OPT_MAP)
            config_map_free((ConfigMap *)(void *)((char *)cfg + def->offset));
    }
    for (size_t i = 0; i < cfg->source.n_tables; i++) {
        free(cfg->source.tables[i].schema);
        free(cfg->source.tables[i].table);
    }
    free(cfg->source.tables);
    agg_defs_free(cfg);
    free(cfg->path);
    free(cfg);
}
