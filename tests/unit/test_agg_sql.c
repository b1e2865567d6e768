/*
 * test_agg_sql.c - the aggregates sink's pure parts: cutting an aggregate's
 * SQL apart (config/agg_def.c), the [aggregate.NAME] sections of the config
 * loader (config/agg_loader.c), the generated SQL (sinks/agg_sql.c), COPY
 * escaping and the placement of wal2json's 32-bit xids in their epoch.
 *
 * PostgreSQL runs the generated SQL in tests/integration/test_aggregates.c;
 * here the text itself is checked: what it must contain (the filters, the
 * exact-retraction pieces) and how many statements it has (the sink maps a
 * failing statement back to its aggregate by counting them).
 */
#include "../../common/mem.h"
#include "../../config/agg_def.h"
#include "../../config/config.h"
#include "../../sinks/agg_internal.h"
#include "../../sinks/agg_sql.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* ---- splitting ---- */

START_TEST(test_split_respects_parentheses_and_quotes)
{
    char **items;
    size_t n;
    PfError err;

    ck_assert(agg_split_list("a, coalesce(b, 'x,y'), \"we,ird\" , f(g(h, i), arr[1,2]),"
                             " $$a,b$$, $t$c,d$t$, E'it\\'s,x', 'it''s,y'",
                             "group_by", &items, &n, &err));
    ck_assert_uint_eq(n, 8);
    ck_assert_str_eq(items[0], "a");
    ck_assert_str_eq(items[1], "coalesce(b, 'x,y')");
    ck_assert_str_eq(items[2], "\"we,ird\"");
    ck_assert_str_eq(items[3], "f(g(h, i), arr[1,2])");
    ck_assert_str_eq(items[4], "$$a,b$$");
    ck_assert_str_eq(items[5], "$t$c,d$t$");
    ck_assert_str_eq(items[6], "E'it\\'s,x'");
    ck_assert_str_eq(items[7], "'it''s,y'");
    agg_free_list(items, n);

    /* $1 is not a dollar quote; whitespace runs collapse outside quotes only */
    ck_assert(agg_split_list("x  +\t$1 ,  'a   b'", "w", &items, &n, &err));
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(items[0], "x + $1");
    ck_assert_str_eq(items[1], "'a   b'");
    agg_free_list(items, n);
}
END_TEST

static void split_fails(const char *text, const char *msg)
{
    char **items = NULL;
    size_t n = 0;
    PfError err;

    ck_assert_msg(!agg_split_list(text, "group_by", &items, &n, &err), "accepted: %s", text);
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, msg);
    ck_assert_ptr_null(items);
}

START_TEST(test_split_errors)
{
    split_fails("a,,b", "group_by: element 2 is empty; remove the extra comma");
    split_fails("  ", "group_by: the list is empty");
    split_fails("f(a, b", "group_by: ')' is missing");
    split_fails("a)", "group_by: unbalanced ')'");
    split_fails("f(a]", "group_by: unbalanced ']'");
    split_fails("'abc", "group_by: a quote is not closed");
    split_fails("$x$abc", "group_by: a quote is not closed");
    split_fails("a; DROP TABLE orders", "group_by: ';' is not allowed outside quotes");
    split_fails("a -- note", "group_by: SQL comments are not allowed");
    split_fails("a /* note */", "group_by: SQL comments are not allowed");
}
END_TEST

START_TEST(test_normalize)
{
    char *s = agg_normalize_sql("  status   NOT IN\t('a  b',\n 'c') ");

    ck_assert_str_eq(s, "status NOT IN ('a  b', 'c')");
    free(s);
    s = agg_normalize_sql("");
    ck_assert_str_eq(s, "");
    free(s);
}
END_TEST

/* ---- group keys ---- */

static void key_ok(const char *text, const char *expr, const char *name)
{
    AggGroupKey k;
    PfError err;

    ck_assert_msg(agg_parse_group_key(text, &k, &err), "%s: %s", text, err.msg);
    ck_assert_str_eq(k.expr, expr);
    ck_assert_str_eq(k.name, name);
    agg_group_key_free(&k);
}

static void key_fails(const char *text, const char *msg, const char *hint_part)
{
    AggGroupKey k;
    PfError err;

    ck_assert_msg(!agg_parse_group_key(text, &k, &err), "accepted: %s", text);
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, msg);
    ck_assert_msg(strstr(err.hint, hint_part), "hint \"%s\" lacks \"%s\"", err.hint, hint_part);
    ck_assert_ptr_null(k.expr);
}

START_TEST(test_group_keys)
{
    key_ok("(created_at AT TIME ZONE 'UTC')::date AS day", "(created_at AT TIME ZONE 'UTC')::date",
           "day");
    key_ok("store_id", "store_id", "store_id");
    key_ok("orders.Store_Id", "orders.Store_Id", "store_id");
    key_ok("CAST(created_at AS date)  as  Day", "CAST(created_at AS date)", "day");
    key_ok("date_trunc('month', created_at) AS month", "date_trunc('month', created_at)", "month");
    key_ok("'x as y' AS label", "'x as y'", "label");
    key_ok("alias AS a", "alias", "a"); /* "as" inside a word is not AS */
    key_fails("CAST(created_at AS date)", "group_by: the expression \"CAST(created_at AS date)\" "
              "needs a name", "AS <name>");
    key_fails("x AS \"Day\"", "group_by: \"\"Day\"\" after AS is not a name pgfan can use",
              "a-z, 0-9 and _");
    key_fails("x AS 1st", "group_by: \"1st\" after AS is not a name pgfan can use", "unquoted");
    key_fails(" AS day", "group_by: nothing before AS day", "");
}
END_TEST

/* ---- measures ---- */

static void measure_ok(const char *text, AggMeasureKind kind, const char *arg, const char *name)
{
    AggMeasure m;
    PfError err;

    ck_assert_msg(agg_parse_measure(text, &m, &err), "%s: %s", text, err.msg);
    ck_assert_int_eq(m.kind, kind);
    if (arg)
        ck_assert_str_eq(m.arg, arg);
    else
        ck_assert_ptr_null(m.arg);
    ck_assert_str_eq(m.name, name);
    agg_measure_free(&m);
}

static void measure_fails(const char *text, const char *msg_part, const char *hint_part)
{
    AggMeasure m;
    PfError err;

    ck_assert_msg(!agg_parse_measure(text, &m, &err), "accepted: %s", text);
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_msg(strstr(err.msg, msg_part), "message \"%s\" lacks \"%s\"", err.msg, msg_part);
    ck_assert_msg(strstr(err.hint, hint_part), "hint \"%s\" lacks \"%s\"", err.hint, hint_part);
    ck_assert_ptr_null(m.name);
}

START_TEST(test_measures)
{
    measure_ok("count(*) AS orders", AGG_MEASURE_COUNT_STAR, NULL, "orders");
    measure_ok("COUNT( * ) as N", AGG_MEASURE_COUNT_STAR, NULL, "n");
    measure_ok("count(customer_id) AS buyers", AGG_MEASURE_COUNT, "customer_id", "buyers");
    measure_ok("sum(total_amount) AS gmv", AGG_MEASURE_SUM, "total_amount", "gmv");
    measure_ok("Sum(CASE WHEN status = 'paid' THEN total_amount END) AS paid",
               AGG_MEASURE_SUM, "CASE WHEN status = 'paid' THEN total_amount END", "paid");
    measure_ok("sum(quantity * unit_price) AS revenue", AGG_MEASURE_SUM, "quantity * unit_price",
               "revenue");
    measure_ok("sum((f(a, ')')) ) AS x", AGG_MEASURE_SUM, "(f(a, ')'))", "x");
}
END_TEST

START_TEST(test_measures_refused_with_a_way_out)
{
    measure_fails("avg(total_amount) AS avg_amount", "avg() in \"avg(total_amount)\" cannot be "
                  "kept exactly", "in a SQL view over the aggregate table");
    measure_fails("min(total_amount) AS lo", "min()", "take min/max in a SQL view");
    measure_fails("MAX(total_amount) AS hi", "MAX()", "take min/max in a SQL view");
    measure_fails("string_agg(status, ',') AS s", "string_agg()", "SQL view");
    measure_fails("count(DISTINCT customer_id) AS buyers", "count(DISTINCT ...)",
                  "group_by key of an aggregate");
    measure_fails("sum(distinct x) AS s", "sum(DISTINCT ...)", "group_by key");
    measure_fails("sum(*) AS s", "\"sum(*)\" is not count(*), count(expr) or sum(expr)",
                  "count(*) AS n");
    measure_fails("sum(x) FILTER (WHERE y) AS s", "FILTER and OVER are not supported",
                  "sum(CASE WHEN <cond> THEN <x> END)");
    measure_fails("sum(x) OVER () AS s", "FILTER and OVER", "CASE WHEN");
    measure_fails("sum(x) / 2 AS half", "is not count(*), count(expr) or sum(expr)", "");
    measure_fails("total_amount AS gmv", "is not count(*)", "");
    measure_fails("count() AS n", "is not count(*)", "");
    measure_fails("sum(total_amount)", "\"sum(total_amount)\" needs a name",
                  "sum(total_amount) AS <name>");
}
END_TEST

/* ---- the config loader ---- */

static const char *const SOURCE =
    "[source]\ndsn = host=h dbname=shop\ntables = public.orders, public.customers\n";

static void clean_env(void)
{
    char *names[64];
    size_t n = 0;

    for (char **e = environ; e && *e && n < 64; e++) {
        if (strncmp(*e, "PGFAN_", 6) == 0)
            names[n++] = xstrndup(*e, strcspn(*e, "="));
    }
    for (size_t i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
}

/* Loads SOURCE + text; returns the config or NULL with the message (file name as pgfan.conf). */
static Config *load(const char *text, PfError *err, char **msg)
{
    char path[] = "/tmp/pgfan_test_agg_XXXXXX";
    int fd = mkstemp(path);
    Buf b = BUF_INIT, shown = BUF_INIT;
    Config *cfg = NULL;

    ck_assert_int_ge(fd, 0);
    buf_printf(&b, "%s%s", SOURCE, text);
    ck_assert_int_eq(write(fd, b.data, b.len), (ssize_t)b.len);
    close(fd);
    clean_env();
    if (!config_load(path, &cfg, err)) {
        for (const char *p = err->msg; *p;) {
            if (strncmp(p, path, strlen(path)) == 0) {
                buf_append_str(&shown, "pgfan.conf");
                p += strlen(path);
            } else {
                buf_append_char(&shown, *p++);
            }
        }
        *msg = shown.data;
    } else {
        *msg = NULL;
    }
    unlink(path);
    buf_free(&b);
    return cfg;
}

static void load_fails(const char *text, const char *msg, const char *hint_part)
{
    PfError err;
    char *got;
    Config *cfg = load(text, &err, &got);

    ck_assert_ptr_null(cfg);
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(got, msg);
    ck_assert_msg(strstr(err.hint, hint_part), "hint \"%s\" lacks \"%s\"", err.hint, hint_part);
    free(got);
}

#define GMV                                                                                       \
    "[sink.aggregates]\n"                                                                       \
    "[aggregate.gmv_daily]\n"                                                                   \
    "from     = public.orders\n"                                                                \
    "group_by = (created_at AT TIME ZONE 'UTC')::date AS day, store_id, currency\n"            \
    "measures = count(*) AS orders, sum(total_amount) AS gmv\n"                               \
    "where    = status NOT IN ('cancelled', 'a;b') ; a comment\n"

START_TEST(test_config_loads_aggregates)
{
    PfError err;
    char *msg;
    Config *cfg = load(GMV "[aggregate.customer_daily]\nfrom = customers\n"
                           "group_by = created_at::date AS day, id AS customer\n"
                           "measures = count(*) AS n\nrebuild = yes\n",
                       &err, &msg);
    const AggregateDef *d;

    ck_assert_msg(cfg != NULL, "%s", msg);
    ck_assert(cfg->aggregates.enabled);
    ck_assert_str_eq(cfg->aggregates.schema, "analytics");
    ck_assert_str_eq(cfg->aggregates.dsn, "host=h dbname=shop"); /* from [source] */
    ck_assert_uint_eq(cfg->aggregates.n_defs, 2);
    d = &cfg->aggregates.defs[0];
    ck_assert_str_eq(d->name, "gmv_daily");
    ck_assert_str_eq(d->from.schema, "public");
    ck_assert_str_eq(d->from.table, "orders");
    ck_assert_uint_eq(d->n_group_by, 3);
    ck_assert_str_eq(d->group_by[0].name, "day");
    ck_assert_str_eq(d->group_by[2].expr, "currency");
    ck_assert_uint_eq(d->n_measures, 2);
    ck_assert_int_eq(d->measures[1].kind, AGG_MEASURE_SUM);
    ck_assert_str_eq(d->where, "status NOT IN ('cancelled', 'a;b')");
    ck_assert(!d->rebuild);
    ck_assert_int_eq(d->line, 5);
    ck_assert_str_eq(cfg->aggregates.defs[1].from.table, "customers");
    ck_assert(cfg->aggregates.defs[1].rebuild);
    ck_assert(!config_sink_enabled(cfg, "file")); /* [sink.aggregates] is a sink section */
    config_free(cfg);
}
END_TEST

START_TEST(test_config_print_shows_aggregates)
{
    PfError err;
    char *msg, *text = NULL;
    size_t len = 0;
    Config *cfg = load(GMV, &err, &msg);
    FILE *f = open_memstream(&text, &len);

    ck_assert_ptr_nonnull(cfg);
    config_print(cfg, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "[sink.aggregates]\ndsn = host=h dbname=shop\n"
                                       "schema = analytics\n"));
    ck_assert_ptr_nonnull(strstr(text, "[aggregate.gmv_daily]\nfrom = public.orders\n"
                                       "group_by = (created_at AT TIME ZONE 'UTC')::date AS day, "
                                       "store_id AS store_id, currency AS currency\n"
                                       "measures = count(*) AS orders, sum(total_amount) AS gmv\n"
                                       "where = status NOT IN ('cancelled', 'a;b')\n"
                                       "rebuild = no\n"));
    free(text);
    config_free(cfg);
}
END_TEST

START_TEST(test_config_errors_name_line_section_and_fix)
{
    load_fails("[sink.aggregates]\n[aggregate.gmv]\nfrom = public.stores\n"
               "group_by = store_id\nmeasures = count(*) AS n\n",
               "pgfan.conf:6: invalid value \"public.stores\" for from in [aggregate.gmv]: "
               "public.stores is not one of [source] tables",
               "add public.stores to tables in [source]");
    load_fails("[sink.aggregates]\n[aggregate.gmv]\nfrom = orders\ngroup_by = store_id\n"
               "measures = avg(total_amount) AS a\n",
               "pgfan.conf:8: invalid value \"avg(total_amount) AS a\" for measures in "
               "[aggregate.gmv]: avg() in \"avg(total_amount)\" cannot be kept exactly when rows "
               "change or disappear; only count(*), count(expr) and sum(expr) can",
               "keep sum(x) AS x_sum, count(x) AS x_count");
    load_fails("[sink.aggregates]\n[aggregate.gmv]\nfrom = orders\n"
               "group_by = date_trunc('month', created_at)\nmeasures = count(*) AS n\n",
               "pgfan.conf:7: invalid value \"date_trunc('month', created_at)\" for group_by in "
               "[aggregate.gmv]: the expression \"date_trunc('month', created_at)\" needs a name",
               "<expression> AS <name>");
    load_fails("[sink.aggregates]\n[aggregate.gmv]\nfrom = orders\ngroup_by = store_id\n"
               "measures = count(*) AS n\nwehre = x\n",
               "pgfan.conf:9: unknown key \"wehre\" in [aggregate.gmv]; did you mean \"where\"?",
               "where = <condition>");
    load_fails("[sink.aggregates]\n[aggregate.gmv]\nfrom = orders\n",
               "pgfan.conf:5: missing required key \"group_by\" in [aggregate.gmv]\n"
               "pgfan.conf:5: missing required key \"measures\" in [aggregate.gmv]",
               "group_by = <expr> AS <name>");
    load_fails("[sink.aggregates]\n[aggregate.gmv]\nfrom = orders\ngroup_by = store_id AS n\n"
               "measures = count(*) AS n\n",
               "pgfan.conf:8: invalid value \"count(*) AS n\" for measures in [aggregate.gmv]: "
               "the column name n is used twice",
               "its own name");
    load_fails("[sink.aggregates]\n[aggregate.gmv]\nfrom = orders\ngroup_by = store_id AS "
               "pgfan_rows\nmeasures = count(*) AS n\n",
               "pgfan.conf:7: invalid value \"store_id AS pgfan_rows\" for group_by in "
               "[aggregate.gmv]: the column name pgfan_rows is reserved (pgfan_* are pgfan's "
               "hidden columns)",
               "another name");
    load_fails("[sink.aggregates]\n[aggregate.gmv]\nfrom = orders\ngroup_by = store_id\n"
               "measures = count(*) AS n\nrebuild = maybe\n",
               "pgfan.conf:9: invalid value \"maybe\" for rebuild in [aggregate.gmv]: expected "
               "yes or no (or true/false, on/off, 1/0)",
               "");
    load_fails("[sink.aggregates]\n[aggregate.Bad-Name]\nfrom = orders\n",
               "pgfan.conf:5: invalid aggregate name [aggregate.Bad-Name]",
               "[aggregate.gmv_daily]");
}
END_TEST

START_TEST(test_config_sink_and_sections_go_together)
{
    load_fails("[sink.file]\n[aggregate.gmv]\nfrom = orders\ngroup_by = store_id\n"
               "measures = count(*) AS n\n",
               "pgfan.conf:5: [aggregate.gmv] is declared but the aggregates sink is not enabled",
               "add a [sink.aggregates] section");
    load_fails("[sink.aggregates]\n",
               "pgfan.conf: [sink.aggregates] is enabled but no [aggregate.NAME] section "
               "declares an aggregate",
               "[aggregate.gmv_daily]");
    load_fails(GMV "[aggregate.gmv_daily]\nfrom = orders\ngroup_by = store_id\n"
                   "measures = count(*) AS n\n",
               "pgfan.conf:10: duplicate section [aggregate.gmv_daily] (first on line 5); keep "
               "only one",
               "");
    load_fails("[sink.aggregates]\nschema = public\n[aggregate.gmv]\nfrom = orders\n"
               "group_by = store_id\nmeasures = count(*) AS n\n",
               "pgfan.conf: [source] tables lists public.orders, in the schema \"public\" where "
               "the aggregates sink writes: pgfan would capture its own writes\n"
               "pgfan.conf: [source] tables lists public.customers, in the schema \"public\" "
               "where the aggregates sink writes: pgfan would capture its own writes",
               "choose another schema in [sink.aggregates]");
    load_fails("[sink.aggregates]\nschema = Analytics\n[aggregate.gmv]\nfrom = orders\n"
               "group_by = store_id\nmeasures = count(*) AS n\n",
               "pgfan.conf:5: invalid value \"Analytics\" for schema in [sink.aggregates]: a "
               "schema name pgfan writes unquoted has 1-63 characters of a-z, 0-9 and _",
               "analytics");
}
END_TEST

/* ---- generated SQL ---- */

static Config *gmv_config(void)
{
    PfError err;
    char *msg;
    Config *cfg = load(GMV "[aggregate.nulls]\nfrom = orders\ngroup_by = status\n"
                           "measures = count(customer_id) AS buyers\n",
                       &err, &msg);

    ck_assert_msg(cfg != NULL, "%s", msg);
    return cfg;
}

/* Statements in text: ';' outside quotes and dollar quotes, plus one. */
static size_t count_statements(const char *text)
{
    size_t n = 1;

    for (const char *p = text; *p; p++) {
        if (*p == '\'') {
            for (p++; *p && !(*p == '\'' && p[1] != '\''); p++)
                if (*p == '\'')
                    p++;
        } else if (strncmp(p, "$pgfan$", 7) == 0) {
            p = strstr(p + 7, "$pgfan$") + 6;
        } else if (*p == ';') {
            n++;
        }
    }
    return n;
}

static bool contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

START_TEST(test_sql_definition_ignores_layout)
{
    Config *cfg = gmv_config();
    PfError err;
    char *msg;
    Config *other = load("[sink.aggregates]\n[aggregate.gmv_daily]\nfrom=orders\n"
                         "group_by=(created_at   AT TIME ZONE 'UTC')::date as day,store_id,"
                         "currency\nmeasures=COUNT(*) as orders,  sum( total_amount ) as gmv\n"
                         "where=status NOT IN ('cancelled', 'a;b')\n",
                         &err, &msg);
    Buf a = BUF_INIT, b = BUF_INIT;

    ck_assert_msg(other != NULL, "%s", msg);
    agg_sql_definition(&a, &cfg->aggregates.defs[0]);
    agg_sql_definition(&b, &other->aggregates.defs[0]);
    ck_assert_str_eq(a.data, "from public.orders; group_by (created_at AT TIME ZONE 'UTC')::date "
                             "AS day, store_id AS store_id, currency AS currency; measures "
                             "count(*) AS orders, sum(total_amount) AS gmv; where status NOT IN "
                             "('cancelled', 'a;b')");
    ck_assert_str_eq(a.data, b.data);
    buf_free(&a);
    buf_free(&b);
    config_free(cfg);
    config_free(other);
}
END_TEST

START_TEST(test_sql_create_and_fill)
{
    Config *cfg = gmv_config();
    const AggregateDef *d = &cfg->aggregates.defs[0];
    const char *keys[] = {"date", "integer", "character(3)"};
    const char *measures[] = {"bigint", "numeric"};
    Buf b = BUF_INIT;

    agg_sql_create(&b, "analytics", d, keys, measures);
    ck_assert(contains(b.data, "CREATE TABLE \"analytics\".\"gmv_daily\" (\"day\" date, "
                               "\"store_id\" integer, \"currency\" character(3), \"orders\" "
                               "bigint NOT NULL, \"gmv\" numeric GENERATED ALWAYS AS (CASE WHEN "
                               "\"pgfan_nn_2\" = 0 THEN NULL ELSE \"pgfan_sum_2\" END) STORED, "
                               "\"pgfan_rows\" bigint NOT NULL, \"pgfan_sum_2\" numeric, "
                               "\"pgfan_nn_2\" bigint NOT NULL, UNIQUE NULLS NOT DISTINCT "
                               "(\"day\", \"store_id\", \"currency\")) WITH (fillfactor = 70)"));
    ck_assert(contains(b.data, "COMMENT ON TABLE \"analytics\".\"gmv_daily\" IS 'maintained by "
                               "pgfan: from public.orders; group_by (created_at AT TIME ZONE "
                               "''UTC'')::date AS day"));
    ck_assert_uint_eq(count_statements(b.data), 2);
    buf_reset(&b);
    agg_sql_fill(&b, "analytics", d);
    ck_assert_str_eq(b.data, "INSERT INTO \"analytics\".\"gmv_daily\" (\"day\", \"store_id\", "
                             "\"currency\", \"orders\", \"pgfan_sum_2\", \"pgfan_nn_2\", "
                             "\"pgfan_rows\") SELECT ((created_at AT TIME ZONE 'UTC')::date) AS "
                             "\"day\", (store_id) AS \"store_id\", (currency) AS \"currency\", "
                             "count(*), sum(total_amount), count(total_amount), count(*) FROM "
                             "\"public\".\"orders\" AS \"orders\" WHERE (status NOT IN "
                             "('cancelled', 'a;b')) GROUP BY 1, 2, 3");
    buf_reset(&b);
    agg_sql_probe(&b, d);
    ck_assert_str_eq(b.data, "SELECT ((created_at AT TIME ZONE 'UTC')::date) AS \"day\", "
                             "(store_id) AS \"store_id\", (currency) AS \"currency\", count(*) AS "
                             "\"orders\", sum(total_amount) AS \"gmv\" FROM \"public\".\"orders\" "
                             "AS \"orders\" WHERE (status NOT IN ('cancelled', 'a;b')) GROUP BY "
                             "1, 2, 3 LIMIT 0");
    buf_free(&b);
    config_free(cfg);
}
END_TEST

START_TEST(test_sql_apply)
{
    Config *cfg = gmv_config();
    const AggregateDef *d = &cfg->aggregates.defs[0];
    Buf b = BUF_INIT;

    agg_sql_apply(&b, "analytics", d, "pgfan_w_0", -1, false);
    ck_assert_uint_eq(count_statements(b.data), AGG_SQL_APPLY_STATEMENTS);
    /* weights: the sign of the row, for the sum and for the hidden counts */
    ck_assert(contains(b.data, "sum(CASE WHEN pgfan_w > 0 THEN (total_amount) ELSE "
                               "-(total_amount) END)"));
    ck_assert(contains(b.data, "sum(CASE WHEN (total_amount) IS NOT NULL THEN pgfan_w ELSE 0 "
                               "END)"));
    ck_assert(contains(b.data, " FROM pg_temp.\"pgfan_w_0\" AS \"orders\" WHERE (status NOT IN "
                               "('cancelled', 'a;b')) AND true GROUP BY 1, 2, 3 HAVING "
                               "sum(pgfan_w) <> 0 OR "));
    ck_assert(contains(b.data, "ON CONFLICT (\"day\", \"store_id\", \"currency\") DO UPDATE SET "
                               "\"orders\" = a.\"orders\" + excluded.\"orders\", \"pgfan_sum_2\" "
                               "= coalesce(a.\"pgfan_sum_2\" + excluded.\"pgfan_sum_2\", "
                               "a.\"pgfan_sum_2\", excluded.\"pgfan_sum_2\"), \"pgfan_nn_2\" = "
                               "a.\"pgfan_nn_2\" + excluded.\"pgfan_nn_2\", \"pgfan_rows\" = "
                               "a.\"pgfan_rows\" + excluded.\"pgfan_rows\" RETURNING a.ctid"));
    ck_assert(contains(b.data, "DELETE FROM \"analytics\".\"gmv_daily\" WHERE ctid = ANY "
                               "(ARRAY(SELECT t FROM pg_temp.pgfan_zero))"));
    ck_assert(!contains(b.data, "pg_visible_in_snapshot"));
    ck_assert(!contains(b.data, "pgfan_seg"));
    buf_reset(&b);
    agg_sql_apply(&b, "analytics", d, "pgfan_w_0", 2, true);
    ck_assert_uint_eq(count_statements(b.data), AGG_SQL_APPLY_STATEMENTS);
    ck_assert(contains(b.data, "AND pgfan_seg = 2 AND NOT coalesce(pg_visible_in_snapshot("
                               "pgfan_xid, (SELECT snapshot FROM \"analytics\"."
                               "\"pgfan_aggregates\" WHERE name = 'gmv_daily')), false) AND "
                               "true"));
    buf_reset(&b);
    agg_sql_apply(&b, "analytics", &cfg->aggregates.defs[1], "pgfan_w_0", -1, false);
    /* count(x): no sum pieces, its own running count */
    ck_assert(contains(b.data, "\"buyers\" = a.\"buyers\" + excluded.\"buyers\""));
    ck_assert(!contains(b.data, "pgfan_sum"));
    buf_free(&b);
    config_free(cfg);
}
END_TEST

START_TEST(test_sql_recompute_register_catalog)
{
    Config *cfg = gmv_config();
    const AggregateDef *d = &cfg->aggregates.defs[0];
    Buf b = BUF_INIT;

    agg_sql_recompute(&b, "analytics", d, UINT64_C(4294967301), "pgfan");
    ck_assert_uint_eq(count_statements(b.data), AGG_SQL_RECOMPUTE_STATEMENTS);
    ck_assert(contains(b.data, "IF NOT pg_visible_in_snapshot('4294967301'::xid8, "
                               "pg_current_snapshot()) THEN RAISE EXCEPTION"));
    ck_assert(contains(b.data, "USING ERRCODE = 'PGF01'"));
    ck_assert(contains(b.data, "; DELETE FROM \"analytics\".\"gmv_daily\"; INSERT INTO "
                               "\"analytics\".\"gmv_daily\""));
    ck_assert(contains(b.data, "VALUES ('gmv_daily', 'pgfan', 'public.orders', 'from "
                               "public.orders; group_by (created_at AT TIME ZONE ''UTC'')"));
    ck_assert(contains(b.data, "pg_current_snapshot(), pg_current_wal_insert_lsn(), now(), "
                               "true) ON CONFLICT (name) DO UPDATE SET"));
    buf_reset(&b);
    agg_sql_catalog_ddl(&b, "analytics");
    ck_assert_uint_eq(count_statements(b.data), 3);
    ck_assert(contains(b.data, "CREATE TABLE IF NOT EXISTS \"analytics\".\"pgfan_state\" (slot "
                               "text PRIMARY KEY, commit_lsn pg_lsn NOT NULL, change_lsn pg_lsn "
                               "NOT NULL, change_seq integer NOT NULL"));
    buf_free(&b);
    config_free(cfg);
}
END_TEST

START_TEST(test_sql_quoting)
{
    Buf b = BUF_INIT;

    agg_sql_ident(&b, "we\"ird");
    buf_append_char(&b, ' ');
    agg_sql_literal(&b, "it's");
    ck_assert_str_eq(b.data, "\"we\"\"ird\" 'it''s'");
    buf_free(&b);
}
END_TEST

START_TEST(test_copy_text_escapes)
{
    Buf b = BUF_INIT;
    const char in[] = "a\tb\nc\\d\re f";

    agg_copy_text(&b, in, sizeof in - 1);
    ck_assert_str_eq(b.data, "a\\tb\\nc\\\\d\\re f");
    buf_reset(&b);
    agg_copy_text(&b, "plain", 5);
    ck_assert_str_eq(b.data, "plain");
    buf_reset(&b);
    agg_copy_text(&b, "", 0);
    ck_assert_uint_eq(b.len, 0);
    buf_free(&b);
}
END_TEST

START_TEST(test_xid_epoch)
{
    const uint64_t epoch = UINT64_C(1) << 32;
    AggSink s;

    memset(&s, 0, sizeof s);
    s.xid_ref = epoch + 100;
    ck_assert_uint_eq(agg_full_xid(&s, 50), epoch + 50);        /* replayed, same epoch */
    ck_assert_uint_eq(agg_full_xid(&s, 4294967000u), 4294967000u); /* just before the wrap */
    ck_assert_uint_eq(agg_full_xid(&s, 200), epoch + 200);      /* newer */
    ck_assert_uint_eq(s.xid_ref, epoch + 200);
    s.xid_ref = 4294967000u;                                    /* ref before the wrap */
    ck_assert_uint_eq(agg_full_xid(&s, 5), epoch + 5);
    ck_assert_uint_eq(s.xid_ref, epoch + 5);
    s.xid_ref = 1000;                                           /* first epoch: never below 0 */
    ck_assert_uint_eq(agg_full_xid(&s, 4294967000u), 4294967000u);
}
END_TEST

START_TEST(test_positions_order)
{
    AggPos a = {100, 50, 0}, b = {100, 50, 1}, c = {100, 60, 0}, d = {200, 10, 0};

    ck_assert_int_lt(agg_pos_cmp(&a, &b), 0);
    ck_assert_int_lt(agg_pos_cmp(&b, &c), 0);
    ck_assert_int_lt(agg_pos_cmp(&c, &d), 0); /* a later transaction, whatever its changes */
    ck_assert_int_eq(agg_pos_cmp(&c, &c), 0);
    ck_assert_int_gt(agg_pos_cmp(&d, &a), 0);
}
END_TEST

static Suite *agg_suite(void)
{
    Suite *s = suite_create("agg_sql");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_split_respects_parentheses_and_quotes);
    tcase_add_test(tc, test_split_errors);
    tcase_add_test(tc, test_normalize);
    tcase_add_test(tc, test_group_keys);
    tcase_add_test(tc, test_measures);
    tcase_add_test(tc, test_measures_refused_with_a_way_out);
    tcase_add_test(tc, test_config_loads_aggregates);
    tcase_add_test(tc, test_config_print_shows_aggregates);
    tcase_add_test(tc, test_config_errors_name_line_section_and_fix);
    tcase_add_test(tc, test_config_sink_and_sections_go_together);
    tcase_add_test(tc, test_sql_definition_ignores_layout);
    tcase_add_test(tc, test_sql_create_and_fill);
    tcase_add_test(tc, test_sql_apply);
    tcase_add_test(tc, test_sql_recompute_register_catalog);
    tcase_add_test(tc, test_sql_quoting);
    tcase_add_test(tc, test_copy_text_escapes);
    tcase_add_test(tc, test_xid_epoch);
    tcase_add_test(tc, test_positions_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(agg_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
