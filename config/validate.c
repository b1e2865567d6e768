/*
 * validate.c - problem collection, suggestions, range checks and the
 * validators that the option table names.
 *
 * A config is checked completely before anything is reported, so a user
 * fixes every mistake in one pass instead of one per run.
 */
#include "internal.h"

#include "../common/mem.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- problems ---- */

struct Problem {
    int order; /* 0: a file line, 1: the file as a whole, 2: the environment */
    int line;
    size_t seq; /* discovery order, to keep the sort stable */
    char *text; /* "<where>: <message>" */
    char *hint; /* NULL when no fix is known */
};

void problems_init(Problems *ps, const char *path)
{
    memset(ps, 0, sizeof *ps);
    ps->path = path;
}

void problems_free(Problems *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        free(ps->items[i].text);
        free(ps->items[i].hint);
    }
    free(ps->items);
    ps->items = NULL;
    ps->n = ps->cap = 0;
}

void problems_add(Problems *ps, const Origin *at, const char *hint, const char *fmt, ...)
{
    Buf b = BUF_INIT;
    char msg[ERR_MSG_SIZE];
    Problem *p;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ps->n == ps->cap) {
        ps->cap = ps->cap ? ps->cap * 2 : 8;
        ps->items = xrealloc(ps->items, ps->cap * sizeof *ps->items);
    }
    p = &ps->items[ps->n];
    p->seq = ps->n++;
    p->line = 0;
    if (at && at->kind == ORIGIN_ENV) {
        p->order = 2;
        buf_printf(&b, "environment %s: %s", at->env_name, msg);
    } else if (at && at->kind == ORIGIN_FILE && at->line > 0) {
        p->order = 0;
        p->line = at->line;
        buf_printf(&b, "%s:%d: %s", ps->path ? ps->path : "config", at->line, msg);
    } else {
        p->order = 1;
        buf_printf(&b, "%s: %s", ps->path ? ps->path : "configuration", msg);
    }
    p->text = b.data;
    p->hint = hint && hint[0] ? xstrdup(hint) : NULL;
}

static int problem_cmp(const void *a, const void *b)
{
    const Problem *x = a, *y = b;

    if (x->order != y->order)
        return x->order - y->order;
    if (x->line != y->line)
        return x->line - y->line;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Appends line to dst (newline-separated) if it fits whole; false if not. */
static bool append_line(char *dst, size_t size, const char *line)
{
    size_t used = strlen(dst);
    size_t need = strlen(line) + (used ? 1 : 0);

    if (used + need + 1 > size)
        return false;
    snprintf(dst + used, size - used, "%s%s", used ? "\n" : "", line);
    return true;
}

bool problems_report(Problems *ps, PfError *err)
{
    char more[64];
    size_t shown = 0;

    if (ps->n == 0)
        return true;
    qsort(ps->items, ps->n, sizeof *ps->items, problem_cmp);
    err_set(err, ERR_CONFIG, "%s", "");
    /* keep room for the "and N more" line so the count is never lost */
    for (; shown < ps->n; shown++) {
        if (!append_line(err->msg, sizeof err->msg - sizeof more, ps->items[shown].text))
            break;
    }
    if (shown < ps->n) {
        snprintf(more, sizeof more, "... and %zu more problem%s", ps->n - shown,
                 ps->n - shown == 1 ? "" : "s");
        append_line(err->msg, sizeof err->msg, more);
    }
    for (size_t i = 0; i < shown; i++) {
        const char *h = ps->items[i].hint;
        bool seen = false;

        if (h == NULL)
            continue;
        for (size_t j = 0; j < i; j++)
            seen = seen || (ps->items[j].hint && strcmp(ps->items[j].hint, h) == 0);
        if (!seen)
            append_line(err->hint, sizeof err->hint, h);
    }
    return false;
}

/* ---- did you mean ---- */

/* Optimal string alignment distance, ignoring case; stops counting at 3. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[3][65];

    if (la > 64 || lb > 64)
        return 3;
    if ((la > lb ? la - lb : lb - la) > 2)
        return 3;
    for (size_t j = 0; j <= lb; j++)
        row[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t *cur = row[i % 3], *prev = row[(i - 1) % 3], *prev2 = row[(i + 1) % 3];

        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t best = prev[j] + 1;

            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (prev[j - 1] + cost < best)
                best = prev[j - 1] + cost;
            if (i > 1 && j > 1 &&
                tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == tolower((unsigned char)b[j - 1]) &&
                prev2[j - 2] + 1 < best)
                best = prev2[j - 2] + 1;
            cur[j] = best;
        }
    }
    return row[la % 3][lb];
}

static bool is_prefix_of(const char *shorter, const char *longer)
{
    size_t n = strlen(shorter);

    return n >= 3 && strncasecmp(shorter, longer, n) == 0;
}

const char *config_suggest(const char *word, const char *const *candidates, size_t n)
{
    const char *best = NULL;
    size_t best_d = 3;

    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(word, candidates[i]);

        if (d < best_d) {
            best = candidates[i];
            best_d = d;
        }
    }
    if (best)
        return best;
    for (size_t i = 0; i < n; i++) {
        if (is_prefix_of(word, candidates[i]) || is_prefix_of(candidates[i], word))
            return candidates[i];
    }
    return NULL;
}

/* ---- range ---- */

bool opt_check_range(const OptDef *def, const OptValue *v, OptCheck *why)
{
    Buf b = BUF_INIT;

    if (def->type != OPT_INT && def->type != OPT_SIZE && def->type != OPT_DURATION)
        return true;
    if (def->min == 0 && def->max == 0)
        return true;
    if (v->num >= def->min && v->num <= def->max)
        return true;
    buf_printf(&b, "%s in [%s] must be between ", def->key, def->section);
    opt_format_number(def, def->min, &b);
    buf_append_str(&b, " and ");
    opt_format_number(def, def->max, &b);
    buf_append_str(&b, " (got ");
    opt_format_number(def, v->num, &b);
    buf_append_str(&b, ")");
    snprintf(why->why, sizeof why->why, "%s", b.data);
    buf_free(&b);
    return false;
}

/* ---- validators ---- */

/* PostgreSQL: NAMEDATALEN - 1 bytes of [a-z0-9_] (ReplicationSlotValidateName). */
#define SLOT_NAME_MAX 63

bool config_validate_slot(const OptValue *v, OptCheck *why)
{
    size_t len = strlen(v->str);

    if (len > SLOT_NAME_MAX) {
        snprintf(why->why, sizeof why->why, "a slot name is at most %d characters (got %zu)",
                 SLOT_NAME_MAX, len);
    } else {
        for (const char *p = v->str; *p; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) {
                snprintf(why->why, sizeof why->why,
                         "a slot name may only contain lower case letters, digits and "
                         "underscores");
                break;
            }
        }
        if (why->why[0] == '\0')
            return true;
    }
    snprintf(why->hint, sizeof why->hint,
             "PostgreSQL replication slot names are 1 to %d characters of a-z, 0-9 and _ "
             "(for example pgfan_shop)",
             SLOT_NAME_MAX);
    return false;
}

/* ---- [source] tables ---- */

/* What PostgreSQL accepts unquoted (after folding to lower case). */
static bool ident_char(char c, bool first)
{
    unsigned char u = (unsigned char)c;

    return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || u == '_' || u >= 0x80 ||
           (!first && ((u >= '0' && u <= '9') || u == '$'));
}

/* One identifier at *pp: "quoted" or bare. Leaves *pp after it. */
static bool parse_ident(const char **pp, char **out, const char *whole, OptCheck *why)
{
    const char *p = *pp;
    Buf b = BUF_INIT;

    if (*p == '"') {
        for (p++;; p++) {
            if (*p == '\0') {
                snprintf(why->why, sizeof why->why, "unterminated double quote in %s", whole);
                buf_free(&b);
                return false;
            }
            if (*p == '"') {
                if (p[1] != '"')
                    break;
                p++; /* "" is one quote */
            }
            buf_append_char(&b, *p);
        }
        p++;
        if (b.len == 0) {
            snprintf(why->why, sizeof why->why, "empty quoted name in %s", whole);
            return false;
        }
    } else {
        for (; *p && *p != '.'; p++) {
            if (!ident_char(*p, b.len == 0)) {
                snprintf(why->why, sizeof why->why,
                         "%s: unquoted names may only contain letters, digits, _ and $; "
                         "write other names in double quotes, e.g. public.\"Order Items\"",
                         whole);
                buf_free(&b);
                return false;
            }
            buf_append_char(&b, (char)tolower((unsigned char)*p));
        }
        if (b.len == 0) {
            snprintf(why->why, sizeof why->why, "%s: missing name around '.'", whole);
            return false;
        }
    }
    *out = b.data;
    *pp = p;
    return true;
}

bool config_parse_table_name(const char *text, TableName *out, OptCheck *why)
{
    const char *p = text;
    char *first = NULL, *second = NULL;

    if (!parse_ident(&p, &first, text, why))
        return false;
    if (*p == '.') {
        p++;
        if (!parse_ident(&p, &second, text, why)) {
            free(first);
            return false;
        }
    }
    if (*p != '\0') {
        snprintf(why->why, sizeof why->why,
                 *p == '.' ? "%s: too many dots; expected schema.table"
                           : "%s: unexpected text after the name; write names with spaces in "
                             "double quotes",
                 text);
        free(first);
        free(second);
        return false;
    }
    out->schema = second ? first : xstrdup("public");
    out->table = second ? second : first;
    return true;
}

static void free_tables(TableName *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(t[i].schema);
        free(t[i].table);
    }
    free(t);
}

bool config_set_tables(Config *cfg, const OptValue *v, OptCheck *why)
{
    TableName *t = xcalloc(v->n_items, sizeof *t);
    size_t n = 0;

    for (; n < v->n_items; n++) {
        if (!config_parse_table_name(v->items[n], &t[n], why))
            goto fail;
        for (size_t j = 0; j < n; j++) {
            if (strcmp(t[j].schema, t[n].schema) == 0 && strcmp(t[j].table, t[n].table) == 0) {
                Buf name = BUF_INIT;

                config_append_ident(&name, t[n].schema);
                buf_append_char(&name, '.');
                config_append_ident(&name, t[n].table);
                snprintf(why->why, sizeof why->why, "%s is listed twice (elements %zu and %zu)",
                         name.data, j + 1, n + 1);
                buf_free(&name);
                n++;
                goto fail;
            }
        }
    }
    free_tables(cfg->source.tables, cfg->source.n_tables);
    cfg->source.tables = t;
    cfg->source.n_tables = n;
    return true;
fail:
    free_tables(t, n);
    return false;
}

void config_append_ident(Buf *out, const char *ident)
{
    bool plain = ident[0] != '\0';

    for (const char *p = ident; *p && plain; p++) {
        plain = ident_char(*p, p == ident) && !(*p >= 'A' && *p <= 'Z');
    }
    if (plain) {
        buf_append_str(out, ident);
        return;
    }
    buf_append_char(out, '"');
    for (const char *p = ident; *p; p++) {
        if (*p == '"')
            buf_append_char(out, '"');
        buf_append_char(out, *p);
    }
    buf_append_char(out, '"');
}

void config_append_qualified(Buf *out, const char *schema, const char *table)
{
    config_append_ident(out, schema);
    buf_append_char(out, '.');
    config_append_ident(out, table);
}

void config_print_tables(const Config *cfg, Buf *out)
{
    for (size_t i = 0; i < cfg->source.n_tables; i++) {
        if (i)
            buf_append_str(out, ", ");
        config_append_ident(out, cfg->source.tables[i].schema);
        buf_append_char(out, '.');
        config_append_ident(out, cfg->source.tables[i].table);
    }
}
