/*
 * agg_def.c - cutting an aggregate's SQL text apart (agg_def.h).
 *
 * One scanner knows PostgreSQL's quoting: 'strings' ('' inside), E'...'
 * (backslash escapes), "identifiers" ("" inside) and $tag$dollar$tag$
 * strings. Everything else is walked character by character with a depth
 * for ( and [. Nothing here understands SQL beyond that: PostgreSQL checks
 * the expressions when the sink probes them.
 */
#include "agg_def.h"

#include "../common/mem.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IDENT_MAX 63

static bool ident_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (unsigned char)c >= 0x80;
}

static bool ident_char(char c)
{
    return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

/*
 * If p starts a quoted token, returns the position after it (NULL when it
 * is not closed); otherwise returns p. start is the beginning of the text
 * (to look at the character before p).
 */
static const char *skip_quoted(const char *start, const char *p)
{
    bool prev_ident = p > start && ident_char(p[-1]);

    if (*p == '\'') {
        /* E'...' takes backslash escapes; a lone E before the quote, not "CASE'x'" */
        bool escapes = p > start && (p[-1] == 'E' || p[-1] == 'e') &&
                       (p - 1 == start || !ident_char(p[-2]));

        for (p++; *p; p++) {
            if (escapes && *p == '\\' && p[1]) {
                p++;
            } else if (*p == '\'') {
                if (p[1] != '\'')
                    return p + 1;
                p++;
            }
        }
        return NULL;
    }
    if (*p == '"') {
        for (p++; *p; p++) {
            if (*p == '"') {
                if (p[1] != '"')
                    return p + 1;
                p++;
            }
        }
        return NULL;
    }
    if (*p == '$' && !prev_ident) {
        const char *tag_end = p + 1;
        size_t tag_len;

        if (ident_start(*tag_end) || *tag_end == '$') {
            while (*tag_end && *tag_end != '$' && ident_char(*tag_end) && *tag_end != '$')
                tag_end++;
            if (*tag_end != '$')
                return p; /* "$1" or "$x+": not a dollar quote */
            tag_len = (size_t)(tag_end - p + 1);
            for (const char *q = tag_end + 1; *q; q++) {
                if (*q == '$' && strncmp(q, p, tag_len) == 0)
                    return q + tag_len;
            }
            return NULL;
        }
    }
    return p;
}

/* Walks text at depth 0..n; calls back at each top-level character. */
typedef bool (*TopFn)(void *arg, const char *text, const char *p);

/*
 * Scans text, checking quotes and nesting. For every character outside
 * quotes at depth 0, calls fn (may be NULL); fn returning false stops the
 * walk (returns true). Errors fill err naming what.
 */
static bool walk(const char *text, const char *what, TopFn fn, void *arg, PfError *err)
{
    char stack[64];
    size_t depth = 0;

    for (const char *p = text; *p;) {
        const char *q = skip_quoted(text, p);

        if (q == NULL) {
            err_set(err, ERR_CONFIG, "%s: a quote is not closed", what);
            err_hint(err, "close every ' and \" (a quote inside 'text' is written '')");
            return false;
        }
        if (q != p) {
            p = q;
            continue;
        }
        if (*p == ';') {
            err_set(err, ERR_CONFIG, "%s: ';' is not allowed outside quotes", what);
            err_hint(err, "an expression is one piece of SQL, not a statement");
            return false;
        }
        if ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*')) {
            err_set(err, ERR_CONFIG, "%s: SQL comments are not allowed", what);
            err_hint(err, "remove the comment; put notes on a ';' line of the config file");
            return false;
        }
        if (*p == '(' || *p == '[') {
            if (depth == sizeof stack) {
                err_set(err, ERR_CONFIG, "%s: parentheses nested too deep", what);
                return false;
            }
            stack[depth++] = *p == '(' ? ')' : ']';
        } else if (*p == ')' || *p == ']') {
            if (depth == 0 || stack[depth - 1] != *p) {
                err_set(err, ERR_CONFIG, "%s: unbalanced '%c'", what, *p);
                err_hint(err, "every ( needs its ) and every [ its ]");
                return false;
            }
            depth--;
        } else if (depth == 0 && fn && !fn(arg, text, p)) {
            return true;
        }
        p++;
    }
    if (depth > 0) {
        err_set(err, ERR_CONFIG, "%s: '%c' is missing", what, stack[depth - 1]);
        err_hint(err, "every ( needs its ) and every [ its ]");
        return false;
    }
    return true;
}

bool agg_check_sql(const char *text, const char *what, PfError *err)
{
    const char *p = text;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0') {
        err_set(err, ERR_CONFIG, "%s: the expression is empty", what);
        return false;
    }
    return walk(text, what, NULL, NULL, err);
}

char *agg_normalize_sql(const char *text)
{
    Buf b = BUF_INIT;
    bool space = false;

    for (const char *p = text; *p;) {
        const char *q = skip_quoted(text, p);

        if (q == NULL)
            q = p + strlen(p); /* unterminated: copied as is (agg_check_sql reports it) */
        if (q != p) {
            if (space && b.len)
                buf_append_char(&b, ' ');
            space = false;
            buf_append(&b, p, (size_t)(q - p));
            p = q;
            continue;
        }
        if (isspace((unsigned char)*p)) {
            space = true;
        } else {
            if (space && b.len)
                buf_append_char(&b, ' ');
            space = false;
            buf_append_char(&b, *p);
        }
        p++;
    }
    if (b.data == NULL)
        return xstrdup("");
    return b.data;
}

/* ---- lists ---- */

typedef struct SplitState {
    const char *start;
    char **items;
    size_t n;
} SplitState;

static void split_add(SplitState *s, const char *from, const char *to)
{
    char *raw = xstrndup(from, (size_t)(to - from));

    s->items = xrealloc(s->items, (s->n + 1) * sizeof *s->items);
    s->items[s->n++] = agg_normalize_sql(raw);
    free(raw);
}

static bool split_at_comma(void *arg, const char *text, const char *p)
{
    SplitState *s = arg;

    (void)text;
    if (*p == ',') {
        split_add(s, s->start, p);
        s->start = p + 1;
    }
    return true;
}

bool agg_split_list(const char *text, const char *what, char ***items, size_t *n, PfError *err)
{
    SplitState s = {text, NULL, 0};

    *items = NULL;
    *n = 0;
    if (!walk(text, what, split_at_comma, &s, err)) {
        agg_free_list(s.items, s.n);
        return false;
    }
    split_add(&s, s.start, text + strlen(text));
    for (size_t i = 0; i < s.n; i++) {
        if (s.items[i][0] == '\0') {
            if (s.n == 1)
                err_set(err, ERR_CONFIG, "%s: the list is empty", what);
            else
                err_set(err, ERR_CONFIG, "%s: element %zu is empty; remove the extra comma", what,
                        i + 1);
            agg_free_list(s.items, s.n);
            return false;
        }
    }
    *items = s.items;
    *n = s.n;
    return true;
}

void agg_free_list(char **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

/* ---- "expr AS name" ---- */

bool agg_ident_ok(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || len > IDENT_MAX || !(ident_start(name[0]) && (unsigned char)name[0] < 0x80))
        return false;
    for (const char *p = name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    }
    return true;
}

typedef struct AsState {
    const char *last_as; /* the last top-level "AS" word */
} AsState;

static bool find_as(void *arg, const char *text, const char *p)
{
    AsState *s = arg;

    if ((p[0] == 'a' || p[0] == 'A') && (p[1] == 's' || p[1] == 'S') &&
        (p == text || !ident_char(p[-1])) && !ident_char(p[2]) && p[2] != '\0')
        s->last_as = p;
    return true;
}

/* A lower-cased copy of an unquoted identifier, or NULL when text is not one. */
static char *fold_ident(const char *text)
{
    char *name = xstrdup(text);

    for (char *p = name; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (!agg_ident_ok(name)) {
        free(name);
        return NULL;
    }
    return name;
}

/*
 * Splits "expr AS name". *expr gets the normalised expression, *name the
 * folded name or NULL when there is no AS. what names the text in errors.
 */
static bool split_as(const char *text, const char *what, char **expr, char **name, PfError *err)
{
    AsState s = {NULL};
    char *norm;
    const char *after;

    *expr = *name = NULL;
    if (!agg_check_sql(text, what, err))
        return false;
    norm = agg_normalize_sql(text);
    walk(norm, what, find_as, &s, err);
    if (s.last_as == NULL) {
        *expr = norm;
        return true;
    }
    after = s.last_as + 2;
    while (*after == ' ')
        after++;
    *name = fold_ident(after);
    if (*name == NULL) {
        err_set(err, ERR_CONFIG, "%s: \"%s\" after AS is not a name pgfan can use", what, after);
        err_hint(err, "name columns with 1-63 characters of a-z, 0-9 and _ (unquoted), e.g. "
                      "... AS order_day");
        free(norm);
        return false;
    }
    *expr = xstrndup(norm, (size_t)(s.last_as - norm));
    free(norm);
    norm = agg_normalize_sql(*expr); /* drops the space before AS */
    free(*expr);
    *expr = norm;
    if (**expr == '\0') {
        err_set(err, ERR_CONFIG, "%s: nothing before AS %s", what, *name);
        free(*expr);
        free(*name);
        *expr = *name = NULL;
        return false;
    }
    return true;
}

/* "col" or "alias.col": the column name, folded; NULL for anything else. */
static char *column_name_of(const char *expr)
{
    const char *dot = strrchr(expr, '.');
    const char *last = dot ? dot + 1 : expr;

    if (dot) {
        char *first = xstrndup(expr, (size_t)(dot - expr));
        char *folded = fold_ident(first);
        bool ok = folded != NULL;

        free(first);
        free(folded);
        if (!ok)
            return NULL;
    }
    return fold_ident(last);
}

bool agg_parse_group_key(const char *text, AggGroupKey *out, PfError *err)
{
    memset(out, 0, sizeof *out);
    if (!split_as(text, "group_by", &out->expr, &out->name, err))
        return false;
    if (out->name == NULL)
        out->name = column_name_of(out->expr);
    if (out->name == NULL) {
        err_set(err, ERR_CONFIG, "group_by: the expression \"%s\" needs a name", out->expr);
        err_hint(err, "write it as <expression> AS <name>, e.g. "
                      "(created_at AT TIME ZONE 'UTC')::date AS day");
        agg_group_key_free(out);
        return false;
    }
    return true;
}

/* ---- measures ---- */

/* Why an aggregate function cannot be a measure, and what to do instead. */
static void refuse_function(const char *fn, const char *text, PfError *err)
{
    err_set(err, ERR_CONFIG,
            "measures: %s() in \"%s\" cannot be kept exactly when rows change or disappear; "
            "only count(*), count(expr) and sum(expr) can",
            fn, text);
    if (strcasecmp(fn, "avg") == 0)
        err_hint(err, "keep sum(x) AS x_sum, count(x) AS x_count and compute x_sum / x_count "
                      "in a SQL view over the aggregate table");
    else if (strcasecmp(fn, "min") == 0 || strcasecmp(fn, "max") == 0)
        err_hint(err, "a deleted minimum or maximum cannot be subtracted: add the column to "
                      "group_by and take min/max in a SQL view over the aggregate table");
    else
        err_hint(err, "compute %s() in a SQL view over the aggregate table (or the source "
                      "table)",
                 fn);
}

static bool bad_measure(const char *text, PfError *err)
{
    err_set(err, ERR_CONFIG, "measures: \"%s\" is not count(*), count(expr) or sum(expr)", text);
    err_hint(err, "write each measure as count(*) AS n, count(expr) AS n or sum(expr) AS n; for "
                  "a condition use sum(CASE WHEN <cond> THEN <x> END)");
    return false;
}

/* Parses "fn(arg)" (normalised) into out->kind and out->arg. */
static bool parse_call(const char *call, AggMeasure *out, PfError *err)
{
    const char *p = call;
    const char *open, *close = NULL;
    char fn[32];
    size_t fn_len = 0;
    int depth = 0;
    char *arg;

    while (ident_char(*p) && fn_len < sizeof fn - 1)
        fn[fn_len++] = *p++;
    fn[fn_len] = '\0';
    while (*p == ' ')
        p++;
    if (fn_len == 0 || *p != '(')
        return bad_measure(call, err);
    open = p;
    for (; *p; p++) {
        const char *q = skip_quoted(call, p);

        if (q != p) {
            p = q - 1;
            continue;
        }
        if (*p == '(' || *p == '[')
            depth++;
        else if ((*p == ')' || *p == ']') && --depth == 0) {
            close = p;
            break;
        }
    }
    if (close == NULL || close[1] != '\0') {
        if (close && (strncasecmp(close + 1, " FILTER", 7) == 0 ||
                      strncasecmp(close + 1, " OVER", 5) == 0)) {
            err_set(err, ERR_CONFIG, "measures: \"%s\": FILTER and OVER are not supported", call);
            err_hint(err, "write a condition as sum(CASE WHEN <cond> THEN <x> END) or "
                          "count(CASE WHEN <cond> THEN 1 END)");
            return false;
        }
        return bad_measure(call, err);
    }
    if (strcasecmp(fn, "count") != 0 && strcasecmp(fn, "sum") != 0) {
        refuse_function(fn, call, err);
        return false;
    }
    {
        char *raw = xstrndup(open + 1, (size_t)(close - open - 1));
        arg = agg_normalize_sql(raw);
        free(raw);
    }
    if (strncasecmp(arg, "distinct", 8) == 0 && !ident_char(arg[8])) {
        err_set(err, ERR_CONFIG, "measures: %s(DISTINCT ...) in \"%s\" cannot be kept by adding "
                "and subtracting rows", fn, call);
        err_hint(err, "make the column a group_by key of an aggregate and count its rows in a "
                      "SQL view over that aggregate table");
        free(arg);
        return false;
    }
    if (arg[0] == '\0' || (strncasecmp(arg, "all", 3) == 0 && !ident_char(arg[3]))) {
        free(arg);
        return bad_measure(call, err);
    }
    if (strcmp(arg, "*") == 0) {
        free(arg);
        if (strcasecmp(fn, "count") != 0)
            return bad_measure(call, err);
        out->kind = AGG_MEASURE_COUNT_STAR;
        out->arg = NULL;
        return true;
    }
    out->kind = strcasecmp(fn, "count") == 0 ? AGG_MEASURE_COUNT : AGG_MEASURE_SUM;
    out->arg = arg;
    return true;
}

bool agg_parse_measure(const char *text, AggMeasure *out, PfError *err)
{
    char *call = NULL;

    memset(out, 0, sizeof *out);
    if (!split_as(text, "measures", &call, &out->name, err))
        return false;
    if (!parse_call(call, out, err)) {
        free(call);
        agg_measure_free(out);
        return false;
    }
    if (out->name == NULL) {
        err_set(err, ERR_CONFIG, "measures: \"%s\" needs a name", call);
        err_hint(err, "write %s AS <name>, e.g. count(*) AS orders, sum(total_amount) AS gmv",
                 call);
        free(call);
        agg_measure_free(out);
        return false;
    }
    free(call);
    return true;
}

void agg_append_measure_call(Buf *out, const AggMeasure *m)
{
    switch (m->kind) {
    case AGG_MEASURE_COUNT_STAR:
        buf_append_str(out, "count(*)");
        return;
    case AGG_MEASURE_COUNT:
        buf_printf(out, "count(%s)", m->arg);
        return;
    case AGG_MEASURE_SUM:
        buf_printf(out, "sum(%s)", m->arg);
        return;
    }
}

/* ---- freeing ---- */

void agg_group_key_free(AggGroupKey *k)
{
    free(k->expr);
    free(k->name);
    k->expr = k->name = NULL;
}

void agg_measure_free(AggMeasure *m)
{
    free(m->arg);
    free(m->name);
    m->arg = m->name = NULL;
}

void agg_def_free(AggregateDef *d)
{
    free(d->name);
    free(d->from.schema);
    free(d->from.table);
    for (size_t i = 0; i < d->n_group_by; i++)
        agg_group_key_free(&d->group_by[i]);
    free(d->group_by);
    for (size_t i = 0; i < d->n_measures; i++)
        agg_measure_free(&d->measures[i]);
    free(d->measures);
    free(d->where);
    memset(d, 0, sizeof *d);
}
