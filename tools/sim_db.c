/* sim_db.c - libpq helpers of the shop simulator. */
#include "sim_db.h"

#include <stdio.h>
#include <string.h>

#define COPY_CHUNK (256 * 1024)

static const char SCHEMA_HINT[] =
    "load the shop schema first: psql -v ON_ERROR_STOP=1 -d <database> -f deploy/shop/schema.sql";

/* Length of libpq's message without its trailing newline. */
static int trimmed_len(const char *msg)
{
    size_t n = strlen(msg);

    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    return (int)n;
}

static void set_pq_error(PfError *err, const char *what, const char *cause)
{
    err_set(err, ERR_FATAL, "could not %s: %.*s", what, trimmed_len(cause), cause);
}

PGconn *simdb_connect(const char *dsn, PfError *err)
{
    char *parse_err = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &parse_err);
    /* dbname is expanded as a whole conninfo; the fallback name yields to
     * an application_name in it */
    const char *const keys[] = {"dbname", "fallback_application_name", NULL};
    const char *const vals[] = {dsn, "pgfan-shop-sim", NULL};
    PGconn *conn;
    PGresult *res;

    if (!opts) {
        const char *cause = parse_err ? parse_err : "out of memory";

        err_set(err, ERR_CONFIG, "could not parse --dsn: %.*s", trimmed_len(cause), cause);
        err_hint(err, "give a libpq conninfo (\"host=127.0.0.1 port=5432 dbname=shop\") or a "
                      "URI (postgresql://user@host/shop)");
        PQfreemem(parse_err);
        return NULL;
    }
    PQconninfoFree(opts);
    conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(conn) != CONNECTION_OK) {
        set_pq_error(err, "connect to PostgreSQL", PQerrorMessage(conn));
        err_hint(err, "check --dsn and that the server is running and accepts connections");
        PQfinish(conn);
        return NULL;
    }
    res = PQexec(conn, "SET TimeZone = 'UTC'");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        set_pq_error(err, "set the session time zone", PQerrorMessage(conn));
        PQclear(res);
        PQfinish(conn);
        return NULL;
    }
    PQclear(res);
    return conn;
}

bool simdb_check_schema(PGconn *conn, PfError *err)
{
    /* Every table and the columns the simulator writes, in schema.sql order. */
    static const char sql[] =
        "SELECT t.name, c.col FROM (VALUES"
        " ('countries', 'id,code,name'),"
        " ('stores', 'id,country_id,name,created_at'),"
        " ('customers', 'id,email,name,country_id,created_at'),"
        " ('products', 'id,store_id,name,price'),"
        " ('orders', 'id,store_id,customer_id,status,total_amount,discount,currency,"
        "created_at,updated_at,shipped_at'),"
        " ('order_items', 'order_id,product_id,quantity,unit_price')) AS t(name, cols)"
        " CROSS JOIN LATERAL unnest(string_to_array(t.cols, ',')) AS c(col)"
        " WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a"
        "   WHERE a.attrelid = to_regclass(quote_ident(t.name)) AND a.attname = c.col"
        "     AND NOT a.attisdropped)"
        " UNION ALL SELECT 'shop_currency()', NULL"
        " WHERE to_regproc('shop_currency') IS NULL"
        " LIMIT 1";
    PGresult *res = simdb_query(conn, "check the shop schema", sql, 0, NULL, err);
    bool ok;

    if (!res)
        return false;
    ok = PQntuples(res) == 0;
    if (!ok && PQgetisnull(res, 0, 1)) {
        err_set(err, ERR_FATAL, "could not find the shop schema: function %s does not exist",
                PQgetvalue(res, 0, 0));
    } else if (!ok) {
        const char *table = PQgetvalue(res, 0, 0);
        PGresult *t = PQexecParams(conn, "SELECT to_regclass(quote_ident($1)) IS NOT NULL", 1,
                                   NULL, &table, NULL, NULL, 0);
        bool table_exists = PQresultStatus(t) == PGRES_TUPLES_OK && PQntuples(t) == 1 &&
                            strcmp(PQgetvalue(t, 0, 0), "t") == 0;

        if (table_exists)
            err_set(err, ERR_FATAL,
                    "could not find the shop schema: table %s has no column \"%s\" (a schema "
                    "from an older deploy/shop/schema.sql?)",
                    table, PQgetvalue(res, 0, 1));
        else
            err_set(err, ERR_FATAL, "could not find the shop schema: table %s does not exist",
                    table);
        PQclear(t);
    }
    if (!ok)
        err_hint(err, "%s", SCHEMA_HINT);
    PQclear(res);
    return ok;
}

bool simdb_exec(PGconn *conn, const char *what, const char *sql, PfError *err)
{
    PGresult *res = PQexec(conn, sql);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;

    if (!ok)
        set_pq_error(err, what, PQerrorMessage(conn));
    PQclear(res);
    return ok;
}

static PGresult *check_result(PGconn *conn, PGresult *res, const char *what, PfError *err)
{
    ExecStatusType st = PQresultStatus(res);

    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    set_pq_error(err, what, PQerrorMessage(conn));
    PQclear(res);
    return NULL;
}

PGresult *simdb_query(PGconn *conn, const char *what, const char *sql, int n_params,
                      const char *const *params, PfError *err)
{
    return check_result(conn, PQexecParams(conn, sql, n_params, NULL, params, NULL, NULL, 0),
                        what, err);
}

PGresult *simdb_exec_prepared(PGconn *conn, const char *what, const char *name, int n_params,
                              const char *const *params, PfError *err)
{
    return check_result(conn, PQexecPrepared(conn, name, n_params, params, NULL, NULL, 0), what,
                        err);
}

bool simdb_prepare(PGconn *conn, const char *name, const char *sql, PfError *err)
{
    PGresult *res = check_result(conn, PQprepare(conn, name, sql, 0, NULL), "prepare a statement",
                                 err);

    if (!res) {
        err_prefix(err, "statement %s", name);
        return false;
    }
    PQclear(res);
    return true;
}

bool simcopy_begin(SimCopy *c, PGconn *conn, const char *table, const char *columns,
                   PfError *err)
{
    char sql[512];
    PGresult *res;

    c->conn = conn;
    c->table = table;
    c->rows = 0;
    buf_init(&c->row);
    snprintf(sql, sizeof sql, "COPY %s (%s) FROM STDIN", table, columns);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_IN) {
        set_pq_error(err, "start COPY", PQerrorMessage(conn));
        err_prefix(err, "table %s", table);
        PQclear(res);
        c->conn = NULL;
        return false;
    }
    PQclear(res);
    buf_reserve(&c->row, COPY_CHUNK + 4096);
    return true;
}

static bool copy_send(SimCopy *c, PfError *err)
{
    if (c->row.len == 0)
        return true;
    if (PQputCopyData(c->conn, c->row.data, (int)c->row.len) != 1) {
        set_pq_error(err, "send COPY data", PQerrorMessage(c->conn));
        err_prefix(err, "table %s", c->table);
        return false;
    }
    buf_reset(&c->row);
    return true;
}

bool simcopy_row_end(SimCopy *c, PfError *err)
{
    c->rows++;
    return c->row.len < COPY_CHUNK || copy_send(c, err);
}

bool simcopy_end(SimCopy *c, PfError *err)
{
    bool ok = copy_send(c, err);
    PGresult *res;

    buf_free(&c->row);
    if (!ok) {
        simcopy_abort(c);
        return false;
    }
    if (PQputCopyEnd(c->conn, NULL) != 1) {
        set_pq_error(err, "end COPY", PQerrorMessage(c->conn));
        err_prefix(err, "table %s", c->table);
        c->conn = NULL;
        return false;
    }
    res = PQgetResult(c->conn);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) {
        set_pq_error(err, "load rows with COPY", PQerrorMessage(c->conn));
        err_prefix(err, "table %s", c->table);
    }
    PQclear(res);
    while ((res = PQgetResult(c->conn)) != NULL)
        PQclear(res);
    c->conn = NULL;
    return ok;
}

void simcopy_abort(SimCopy *c)
{
    PGresult *res;

    buf_free(&c->row);
    if (!c->conn)
        return;
    PQputCopyEnd(c->conn, "pgfan-shop-sim: aborted");
    while ((res = PQgetResult(c->conn)) != NULL)
        PQclear(res);
    c->conn = NULL;
}
