/*
 * agg_loader.c - [aggregate.NAME] sections (agg_loader.h).
 *
 * Keys are collected while the file is read and checked at the end, when
 * [source] tables and [sink.aggregates] are known. Every problem names the
 * line of the key (or of the header) like the option table's messages do.
 */
#include "agg_loader.h"

#include "../common/mem.h"
#include "agg_def.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { KEY_FROM = 0, KEY_GROUP_BY, KEY_MEASURES, KEY_WHERE, KEY_REBUILD };

static const char *const agg_keys[AGG_N_KEYS] = {"from", "group_by", "measures", "where",
                                                 "rebuild"};

static const char *const agg_key_desc[AGG_N_KEYS] = {
    "from = schema.table: the source table, one of [source] tables",
    "group_by = <expr> AS <name>, ...: the group keys, SQL over the source table's columns",
    "measures = count(*) AS n, count(<expr>) AS n, sum(<expr>) AS n, ...",
    "where = <condition>: only rows matching it are counted (optional)",
    "rebuild = yes: recompute the aggregate when its definition changed (optional)",
};

bool agg_loader_is_section(const char *name)
{
    return strncmp(name, AGG_SECTION_PREFIX, strlen(AGG_SECTION_PREFIX)) == 0;
}

static AggRaw *current(AggLoader *al)
{
    return al->in_section && al->n ? &al->items[al->n - 1] : NULL;
}

void agg_loader_section(AggLoader *al, Problems *ps, const char *name, int line)
{
    Origin at = {.kind = ORIGIN_FILE, .line = line};
    const char *short_name = name + strlen(AGG_SECTION_PREFIX);
    AggRaw *r;

    al->items = xrealloc(al->items, (al->n + 1) * sizeof *al->items);
    r = &al->items[al->n++];
    memset(r, 0, sizeof *r);
    r->name = xstrdup(short_name);
    r->line = line;
    al->in_section = true;
    if (!agg_ident_ok(short_name) || strncmp(short_name, "pgfan_", 6) == 0) {
        problems_add(ps, &at,
                     "name aggregates with 1-63 characters of a-z, 0-9 and _ (not starting "
                     "with pgfan_): the name is the table's name, e.g. [aggregate.gmv_daily]",
                     "invalid aggregate name [%s]", name);
        return;
    }
    for (size_t i = 0; i + 1 < al->n; i++) {
        if (strcmp(al->items[i].name, short_name) == 0) {
            problems_add(ps, &at, NULL,
                         "duplicate section [%s] (first on line %d); keep only one", name,
                         al->items[i].line);
            return;
        }
    }
    r->usable = true;
}

void agg_loader_leave(AggLoader *al)
{
    al->in_section = false;
}

bool agg_loader_in_section(const AggLoader *al)
{
    return al->in_section;
}

void agg_loader_key(AggLoader *al, Problems *ps, const char *key, const char *value, int line)
{
    Origin at = {.kind = ORIGIN_FILE, .line = line};
    AggRaw *r = current(al);
    const char *suggestion;

    if (r == NULL)
        return;
    for (int k = 0; k < AGG_N_KEYS; k++) {
        if (strcmp(key, agg_keys[k]) != 0)
            continue;
        if (r->lines[k]) {
            problems_add(ps, &at, NULL,
                         "duplicate key \"%s\" in [aggregate.%s] (first set on line %d); keep "
                         "only one",
                         key, r->name, r->lines[k]);
            return;
        }
        r->values[k] = xstrdup(value);
        r->lines[k] = line;
        return;
    }
    suggestion = config_suggest(key, agg_keys, AGG_N_KEYS);
    if (suggestion) {
        int k = 0;
        while (strcmp(agg_keys[k], suggestion) != 0)
            k++;
        problems_add(ps, &at, agg_key_desc[k],
                     "unknown key \"%s\" in [aggregate.%s]; did you mean \"%s\"?", key, r->name,
                     suggestion);
    } else {
        problems_add(ps, &at, NULL,
                     "unknown key \"%s\" in [aggregate.%s]; known keys: from, group_by, "
                     "measures, where, rebuild",
                     key, r->name);
    }
}

/* ---- checking one aggregate ---- */

static void invalid(Problems *ps, const AggRaw *r, int k, const PfError *why)
{
    Origin at = {.kind = ORIGIN_FILE, .line = r->lines[k]};
    Buf shown = BUF_INIT;
    const char *msg = why->msg;
    size_t klen = strlen(agg_keys[k]);

    /* "measures: ..." from agg_def.c: the key is named by the sentence already */
    if (strncmp(msg, agg_keys[k], klen) == 0 && msg[klen] == ':')
        msg += klen + 2;
    opt_quote_for_message(NULL, r->values[k], &shown);
    problems_add(ps, &at, why->hint, "invalid value %s for %s in [aggregate.%s]: %s", shown.data,
                 agg_keys[k], r->name, msg);
    buf_free(&shown);
}

static bool source_lists(const Config *cfg, const TableName *t)
{
    for (size_t i = 0; i < cfg->source.n_tables; i++) {
        if (strcmp(cfg->source.tables[i].schema, t->schema) == 0 &&
            strcmp(cfg->source.tables[i].table, t->table) == 0)
            return true;
    }
    return false;
}

static bool check_from(Problems *ps, const AggRaw *r, const Config *cfg, AggregateDef *d)
{
    OptCheck why = {{0}, {0}};
    PfError err;
    Buf name = BUF_INIT;

    if (!config_parse_table_name(r->values[KEY_FROM], &d->from, &why)) {
        err_set(&err, ERR_CONFIG, "%s", why.why);
        err_hint(&err, "write schema.table, e.g. public.orders");
        invalid(ps, r, KEY_FROM, &err);
        return false;
    }
    if (source_lists(cfg, &d->from))
        return true;
    config_append_qualified(&name, d->from.schema, d->from.table);
    err_set(&err, ERR_CONFIG, "%s is not one of [source] tables", name.data);
    err_hint(&err, "add %s to tables in [source]: pgfan only sees the changes of those tables",
             name.data);
    buf_free(&name);
    invalid(ps, r, KEY_FROM, &err);
    return false;
}

static bool check_group_by(Problems *ps, const AggRaw *r, AggregateDef *d)
{
    char **items;
    size_t n;
    PfError err;

    if (!agg_split_list(r->values[KEY_GROUP_BY], "group_by", &items, &n, &err)) {
        invalid(ps, r, KEY_GROUP_BY, &err);
        return false;
    }
    d->group_by = xcalloc(n, sizeof *d->group_by);
    for (size_t i = 0; i < n; i++) {
        if (!agg_parse_group_key(items[i], &d->group_by[d->n_group_by], &err)) {
            invalid(ps, r, KEY_GROUP_BY, &err);
            agg_free_list(items, n);
            return false;
        }
        d->n_group_by++;
    }
    agg_free_list(items, n);
    return true;
}

static bool check_measures(Problems *ps, const AggRaw *r, AggregateDef *d)
{
    char **items;
    size_t n;
    PfError err;

    if (!agg_split_list(r->values[KEY_MEASURES], "measures", &items, &n, &err)) {
        invalid(ps, r, KEY_MEASURES, &err);
        return false;
    }
    d->measures = xcalloc(n, sizeof *d->measures);
    for (size_t i = 0; i < n; i++) {
        if (!agg_parse_measure(items[i], &d->measures[d->n_measures], &err)) {
            invalid(ps, r, KEY_MEASURES, &err);
            agg_free_list(items, n);
            return false;
        }
        d->n_measures++;
    }
    agg_free_list(items, n);
    return true;
}

/* Column names: unique, and pgfan_* is kept for pgfan's hidden columns. */
static bool check_names(Problems *ps, const AggRaw *r, const AggregateDef *d)
{
    size_t n = d->n_group_by + d->n_measures;
    PfError err;

    for (size_t i = 0; i < n; i++) {
        const char *a = i < d->n_group_by ? d->group_by[i].name
                                           : d->measures[i - d->n_group_by].name;
        int k = i < d->n_group_by ? KEY_GROUP_BY : KEY_MEASURES;

        if (strncmp(a, "pgfan_", 6) == 0) {
            err_set(&err, ERR_CONFIG, "the column name %s is reserved (pgfan_* are pgfan's "
                    "hidden columns)", a);
            err_hint(&err, "choose another name after AS");
            invalid(ps, r, k, &err);
            return false;
        }
        for (size_t j = 0; j < i; j++) {
            const char *b = j < d->n_group_by ? d->group_by[j].name
                                               : d->measures[j - d->n_group_by].name;
            if (strcmp(a, b) == 0) {
                err_set(&err, ERR_CONFIG, "the column name %s is used twice", a);
                err_hint(&err, "give every group key and measure its own name with AS");
                invalid(ps, r, k, &err);
                return false;
            }
        }
    }
    return true;
}

static bool parse_yes_no(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "on", "yes", "1"};
    static const char *const no[] = {"false", "off", "no", "0"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0)
            return (*out = true);
        if (strcasecmp(text, no[i]) == 0)
            return !(*out = false);
    }
    return false;
}

static bool check_one(Problems *ps, const AggRaw *r, const Config *cfg, AggregateDef *d)
{
    Origin at = {.kind = ORIGIN_FILE, .line = r->line};
    bool fine = true;
    PfError err;

    d->name = xstrdup(r->name);
    d->line = r->line;
    for (int k = KEY_FROM; k <= KEY_MEASURES; k++) {
        if (r->values[k] == NULL) {
            problems_add(ps, &at, agg_key_desc[k], "missing required key \"%s\" in [aggregate.%s]",
                         agg_keys[k], r->name);
            fine = false;
        }
    }
    if (!fine)
        return false;
    fine = check_from(ps, r, cfg, d);
    fine = check_group_by(ps, r, d) && fine;
    fine = check_measures(ps, r, d) && fine;
    fine = fine && check_names(ps, r, d);
    if (r->values[KEY_WHERE]) {
        if (agg_check_sql(r->values[KEY_WHERE], "where", &err))
            d->where = agg_normalize_sql(r->values[KEY_WHERE]);
        else {
            invalid(ps, r, KEY_WHERE, &err);
            fine = false;
        }
    }
    if (r->values[KEY_REBUILD] && !parse_yes_no(r->values[KEY_REBUILD], &d->rebuild)) {
        err_set(&err, ERR_CONFIG, "expected yes or no (or true/false, on/off, 1/0)");
        invalid(ps, r, KEY_REBUILD, &err);
        fine = false;
    }
    return fine;
}

/* The aggregate tables are written into the database the slot decodes. */
static void check_schema_not_captured(Problems *ps, const Config *cfg)
{
    for (size_t i = 0; cfg->aggregates.schema && i < cfg->source.n_tables; i++) {
        const TableName *t = &cfg->source.tables[i];
        Buf name = BUF_INIT;

        if (strcmp(t->schema, cfg->aggregates.schema) != 0)
            continue;
        config_append_qualified(&name, t->schema, t->table);
        problems_add(ps, NULL,
                     "remove it from tables in [source], or choose another schema in "
                     "[sink.aggregates]",
                     "[source] tables lists %s, in the schema \"%s\" where the aggregates sink "
                     "writes: pgfan would capture its own writes",
                     name.data, cfg->aggregates.schema);
        buf_free(&name);
    }
}

void agg_loader_finish(AggLoader *al, Problems *ps, Config *cfg)
{
    size_t first_usable = al->n;

    for (size_t i = 0; i < al->n; i++) {
        AggregateDef d;

        if (!al->items[i].usable)
            continue;
        if (first_usable == al->n)
            first_usable = i;
        memset(&d, 0, sizeof d);
        if (!check_one(ps, &al->items[i], cfg, &d)) {
            agg_def_free(&d);
            continue;
        }
        cfg->aggregates.defs =
            xrealloc(cfg->aggregates.defs, (cfg->aggregates.n_defs + 1) * sizeof d);
        cfg->aggregates.defs[cfg->aggregates.n_defs++] = d;
    }
    if (al->n > 0 && !cfg->aggregates.enabled) {
        Origin at = {.kind = ORIGIN_FILE, .line = al->items[0].line};
        problems_add(ps, &at,
                     "add a [sink.aggregates] section (its defaults write to the source "
                     "database, schema analytics)",
                     "[aggregate.%s] is declared but the aggregates sink is not enabled",
                     al->items[0].name);
    }
    if (cfg->aggregates.enabled) {
        if (al->n == 0)
            problems_add(ps, NULL,
                         "declare one, e.g. [aggregate.gmv_daily] with from = public.orders, "
                         "group_by = (created_at AT TIME ZONE 'UTC')::date AS day, store_id, "
                         "measures = count(*) AS orders, sum(total_amount) AS gmv",
                         "[sink.aggregates] is enabled but no [aggregate.NAME] section "
                         "declares an aggregate");
        check_schema_not_captured(ps, cfg);
    }
}

void agg_loader_free(AggLoader *al)
{
    for (size_t i = 0; i < al->n; i++) {
        free(al->items[i].name);
        for (int k = 0; k < AGG_N_KEYS; k++)
            free(al->items[i].values[k]);
    }
    free(al->items);
    memset(al, 0, sizeof *al);
}

void agg_defs_free(Config *cfg)
{
    for (size_t i = 0; i < cfg->aggregates.n_defs; i++)
        agg_def_free(&cfg->aggregates.defs[i]);
    free(cfg->aggregates.defs);
    cfg->aggregates.defs = NULL;
    cfg->aggregates.n_defs = 0;
}

bool agg_validate_schema(const OptValue *v, OptCheck *why)
{
    if (agg_ident_ok(v->str))
        return true;
    snprintf(why->why, sizeof why->why, "a schema name pgfan writes unquoted has 1-63 "
             "characters of a-z, 0-9 and _");
    snprintf(why->hint, sizeof why->hint, "write for example analytics");
    return false;
}

void agg_print_defs(const Config *cfg, Buf *out)
{
    for (size_t i = 0; i < cfg->aggregates.n_defs; i++) {
        const AggregateDef *d = &cfg->aggregates.defs[i];

        buf_printf(out, "\n[aggregate.%s]\nfrom = ", d->name);
        config_append_qualified(out, d->from.schema, d->from.table);
        buf_append_str(out, "\ngroup_by = ");
        for (size_t k = 0; k < d->n_group_by; k++)
            buf_printf(out, "%s%s AS %s", k ? ", " : "", d->group_by[k].expr, d->group_by[k].name);
        buf_append_str(out, "\nmeasures = ");
        for (size_t k = 0; k < d->n_measures; k++) {
            if (k)
                buf_append_str(out, ", ");
            agg_append_measure_call(out, &d->measures[k]);
            buf_printf(out, " AS %s", d->measures[k].name);
        }
        if (d->where)
            buf_printf(out, "\nwhere = %s", d->where);
        else
            buf_append_str(out, "\n; where is not set: every row counts");
        buf_printf(out, "\nrebuild = %s\n", d->rebuild ? "yes" : "no");
    }
}
