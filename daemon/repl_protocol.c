/*
 * repl_protocol.c - what goes over the replication connection and what
 * comes back: the texts of the start-up commands, the reading of their
 * answers (which tables exist and can be streamed, whether the slot fits,
 * what a server error means for pgfan: retry, wait as standby, or stop) and
 * the binary CopyBoth messages (big-endian).
 */
#include "repl_protocol.h"

#include "../common/log.h"
#include "../common/mem.h"
#include "../decoder/values.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMPONENT "replication"

/* Trims libpq's trailing newline from an error text. */
void repl_copy_trimmed(char *dst, size_t size, const char *src)
{
    size_t n;

    snprintf(dst, size, "%s", src ? src : "");
    n = strlen(dst);
    while (n > 0 && (dst[n - 1] == '\n' || dst[n - 1] == ' '))
        dst[--n] = '\0';
}

void repl_classify_error(const PGresult *res, const char *conn_message, const char *slot,
                         const char *what, PfError *err, bool *busy_slot)
{
    const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char msg[ERR_MSG_SIZE];

    *busy_slot = false;
    /* The primary message only: one line; the server's own HINT is replaced by ours. */
    if (res && PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY))
        repl_copy_trimmed(msg, sizeof msg, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    else
        repl_copy_trimmed(msg, sizeof msg, res ? PQresultErrorMessage(res) : conn_message);
    if (!msg[0])
        snprintf(msg, sizeof msg, "connection lost");

    if (sqlstate && strcmp(sqlstate, "55006") == 0) {
        *busy_slot = true;
        err_set(err, ERR_RETRY, "replication slot \"%s\" is held by another consumer: %s",
                slot, msg);
        err_hint(err, "another pgfan (or other client) is streaming from this slot; this one "
                      "waits and takes over when it stops");
        return;
    }
    if (strstr(msg, "can no longer get changes from replication slot")) {
        err_set(err, ERR_FATAL, "could not %s: replication slot \"%s\" has been invalidated (%s)",
                what, slot, msg);
        err_hint(err, "PostgreSQL removed WAL the slot still needed (max_slot_wal_keep_size): "
                      "changes are lost for pgfan. Drop the slot (SELECT "
                      "pg_drop_replication_slot('%s')), let pgfan create it again (snapshot = "
                      "initial reloads the tables) and resynchronise every sink",
                 slot);
        return;
    }
    if (strstr(msg, "may not be used as an output plugin")) {
        err_set(err, ERR_FATAL, "could not %s: PostgreSQL refuses wal2json as an output plugin (%s)",
                what, msg);
        err_hint(err, "add wal2json to output_plugin_libraries in postgresql.conf, e.g. "
                      "output_plugin_libraries = 'pgoutput, test_decoding, wal2json', then "
                      "reload the server (SELECT pg_reload_conf())");
        return;
    }
    if (strstr(msg, "could not access file \"wal2json\"")) {
        err_set(err, ERR_FATAL, "could not %s: wal2json is not installed on the server (%s)", what,
                msg);
        err_hint(err, "install the package postgresql-15-wal2json on the database server");
        return;
    }
    if (sqlstate && (strcmp(sqlstate, "42501") == 0 || strcmp(sqlstate, "28000") == 0)) {
        err_set(err, ERR_FATAL, "could not %s: %s", what, msg);
        err_hint(err, "the role in [source] dsn needs the REPLICATION attribute: ALTER ROLE ... "
                      "REPLICATION");
        return;
    }
    err_set(err, ERR_RETRY, "could not %s: %s", what, msg);
}

/* wal2json add-tables syntax: backslash before every special character. */
static void append_w2j_name(Buf *b, const char *name)
{
    for (const char *c = name; *c; c++) {
        if (strchr(" ',.*\\", *c))
            buf_append_char(b, '\\');
        if (*c == '\'')
            buf_append_char(b, '\''); /* doubled: the value is an SQL string literal */
        buf_append_char(b, *c);
    }
}

/* Appends "(0, 'public', 'orders'), ..." for the configured tables. */
static void append_table_values(Buf *out, PGconn *conn, const Config *cfg)
{
    for (size_t i = 0; i < cfg->source.n_tables; i++) {
        const TableName *t = &cfg->source.tables[i];
        char *s = PQescapeLiteral(conn, t->schema, strlen(t->schema));
        char *n = PQescapeLiteral(conn, t->table, strlen(t->table));

        buf_printf(out, "%s(%d, %s, %s)", i ? ", " : "", (int)i, s ? s : "''", n ? n : "''");
        PQfreemem(s);
        PQfreemem(n);
    }
}

void repl_cmd_check_tables(Buf *out, PGconn *conn, const Config *cfg)
{
    buf_append_str(out, "SELECT t.schema_name, t.table_name, c.relkind, c.relreplident, "
                        "EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid "
                        "AND i.indisprimary) FROM (VALUES ");
    append_table_values(out, conn, cfg);
    buf_append_str(out, ") AS t(ord, schema_name, table_name) "
                        "LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = t.schema_name "
                        "LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid "
                        "AND c.relname = t.table_name ORDER BY t.ord");
}

void repl_cmd_catalog(Buf *out, PGconn *conn, const Config *cfg)
{
    buf_append_str(out,
                   "SELECT t.ord, t.schema_name, t.table_name, c.relreplident, a.attname, "
                   "pg_catalog.format_type(a.atttypid, a.atttypmod), "
                   "CASE WHEN a.atttypid = 'pg_catalog.numeric'::pg_catalog.regtype THEN "
                   "COALESCE(information_schema._pg_numeric_scale(a.atttypid, a.atttypmod), -1) "
                   "ELSE -1 END, "
                   "COALESCE((SELECT k.n FROM pg_catalog.unnest(pk.indkey::int2[]) "
                   "WITH ORDINALITY AS k(att, n) WHERE k.att = a.attnum), 0), "
                   "COALESCE(c.relreplident = 'f' "
                   "OR (c.relreplident = 'd' AND a.attnum = ANY (pk.indkey::int2[])) "
                   "OR (c.relreplident = 'i' AND a.attnum = ANY (ri.indkey::int2[])), false), "
                   "a.attstorage <> 'p', ty.typtype = 'e' FROM (VALUES ");
    append_table_values(out, conn, cfg);
    buf_append_str(out,
                   ") AS t(ord, schema_name, table_name) "
                   "JOIN pg_catalog.pg_namespace ns ON ns.nspname = t.schema_name "
                   "JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid "
                   "AND c.relname = t.table_name "
                   "JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
                   "AND NOT a.attisdropped "
                   "JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid "
                   "LEFT JOIN pg_catalog.pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary "
                   "LEFT JOIN pg_catalog.pg_index ri ON ri.indrelid = c.oid AND ri.indisreplident "
                   "ORDER BY t.ord, a.attnum");
}

void repl_read_catalog(const PGresult *res, Catalog *out)
{
    int n = PQntuples(res);
    int last_ord = -1;
    CatalogTable *t = NULL;

    catalog_clear(out);
    for (int i = 0; i < n; i++) {
        int ord = atoi(PQgetvalue(res, i, 0));
        CatalogColumn *col;

        if (ord != last_ord) {
            out->tables = xrealloc(out->tables, (out->n_tables + 1) * sizeof *out->tables);
            t = &out->tables[out->n_tables++];
            memset(t, 0, sizeof *t);
            t->schema = xstrdup(PQgetvalue(res, i, 1));
            t->table = xstrdup(PQgetvalue(res, i, 2));
            t->replica_identity = PQgetvalue(res, i, 3)[0];
            last_ord = ord;
        }
        t->cols = xrealloc(t->cols, (t->n_cols + 1) * sizeof *t->cols);
        col = &t->cols[t->n_cols++];
        col->name = xstrdup(PQgetvalue(res, i, 4));
        col->type = xstrdup(PQgetvalue(res, i, 5));
        col->type_class = value_type_class((Str){col->type, strlen(col->type)});
        col->numeric_scale = atoi(PQgetvalue(res, i, 6));
        col->pk_position = atoi(PQgetvalue(res, i, 7));
        col->in_identity = PQgetvalue(res, i, 8)[0] == 't';
        col->toastable = PQgetvalue(res, i, 9)[0] == 't';
        col->is_enum = PQgetvalue(res, i, 10)[0] == 't';
    }
}

void repl_cmd_check_slot(Buf *out, PGconn *conn, const char *slot)
{
    char *lit = PQescapeLiteral(conn, slot, strlen(slot));

    buf_printf(out,
               "SELECT slot_type, plugin, database, active_pid FROM pg_catalog.pg_replication_slots "
               "WHERE slot_name = %s",
               lit ? lit : "''");
    PQfreemem(lit);
}

void repl_cmd_create_slot(Buf *out, const char *slot, bool export_snapshot)
{
    /* The slot name is validated by the config ([a-z0-9_]): no quoting needed. */
    buf_printf(out, "CREATE_REPLICATION_SLOT %s LOGICAL wal2json (SNAPSHOT '%s')", slot,
               export_snapshot ? "export" : "nothing");
}

void repl_cmd_terminate_slot_holder(Buf *out, PGconn *conn, const char *slot)
{
    char *lit = PQescapeLiteral(conn, slot, strlen(slot));

    buf_printf(out,
               "SELECT pg_catalog.pg_terminate_backend(active_pid) FROM "
               "pg_catalog.pg_replication_slots WHERE slot_name = %s AND active_pid IS NOT NULL "
               "AND active_pid <> pg_catalog.pg_backend_pid()",
               lit ? lit : "''");
    PQfreemem(lit);
}

void repl_cmd_drop_slot(Buf *out, const char *slot)
{
    buf_printf(out, "DROP_REPLICATION_SLOT %s WAIT", slot);
}

void repl_cmd_start(Buf *out, const Config *cfg)
{
    buf_printf(out,
               "START_REPLICATION SLOT %s LOGICAL 0/0 (\"format-version\" '2', "
               "\"include-xids\" '1', \"include-timestamp\" '1', \"include-lsn\" '1', "
               "\"include-pk\" '1', \"include-types\" '1', \"add-msg-prefixes\" '%s', "
               "\"add-tables\" '",
               cfg->source.slot, cfg->source.heartbeat_prefix ? cfg->source.heartbeat_prefix
                                                              : "pgfan_heartbeat");
    for (size_t i = 0; i < cfg->source.n_tables; i++) {
        if (i)
            buf_append_char(out, ',');
        append_w2j_name(out, cfg->source.tables[i].schema);
        buf_append_char(out, '.');
        append_w2j_name(out, cfg->source.tables[i].table);
    }
    buf_append_str(out, "')");
}

bool repl_check_tables_result(const PGresult *res, const char *dbname, PfError *err)
{
    Buf missing = BUF_INIT;
    int n = PQntuples(res);

    for (int i = 0; i < n; i++) {
        const char *schema = PQgetvalue(res, i, 0);
        const char *table = PQgetvalue(res, i, 1);
        const char *relkind = PQgetvalue(res, i, 2);
        const char *ident = PQgetvalue(res, i, 3);
        bool has_pk = PQgetvalue(res, i, 4)[0] == 't';
        Buf qname = BUF_INIT;

        if (PQgetisnull(res, i, 2) || !strchr("rp", relkind[0])) {
            buf_printf(&missing, "%s%s.%s", missing.len ? ", " : "", schema, table);
            continue;
        }
        if (ident[0] == 'n' || (ident[0] == 'd' && !has_pk)) {
            config_append_qualified(&qname, schema, table);
            log_warning(COMPONENT,
                        "table %s has no usable replica identity (%s): PostgreSQL will not "
                        "stream its UPDATEs and DELETEs",
                        qname.data, ident[0] == 'n' ? "REPLICA IDENTITY NOTHING" : "no primary key");
            log_warning(COMPONENT,
                        "HINT: ALTER TABLE %s REPLICA IDENTITY FULL; (or add a primary key)",
                        qname.data);
            buf_free(&qname);
        }
    }
    if (missing.len) {
        err_set(err, ERR_CONFIG,
                "could not find table%s %s listed in [source] tables in database \"%s\"",
                strchr(missing.data, ',') ? "s" : "", missing.data, dbname);
        err_hint(err, "create the table, or fix or remove it in [source] tables (names are "
                      "case-sensitive; write schema.table)");
        buf_free(&missing);
        return false;
    }
    return true;
}


bool repl_read_identify(const PGresult *res, const char *prev_system_id, IdentifyResult *out,
                        PfError *err)
{
    const char *sysid, *pos;

    if (PQntuples(res) != 1 || PQnfields(res) < 4)
        return err_set(err, ERR_FATAL,
                       "could not identify the server: IDENTIFY_SYSTEM returned %d rows of %d "
                       "columns",
                       PQntuples(res), PQnfields(res));
    sysid = PQgetvalue(res, 0, 0);
    if (prev_system_id[0] && strcmp(prev_system_id, sysid) != 0) {
        err_set(err, ERR_FATAL,
                "could not resume streaming: the server's system identifier changed from %s to "
                "%s (a different or restored cluster)",
                prev_system_id, sysid);
        err_hint(err, "check [source] dsn; after a restore or failover the slot must be "
                      "recreated and the sinks reloaded");
        return false;
    }
    if (PQgetisnull(res, 0, 3)) {
        err_set(err, ERR_CONFIG,
                "could not start logical replication: the connection is not bound to a database");
        err_hint(err, "name the database in [source] dsn (dbname=...)");
        return false;
    }
    snprintf(out->system_id, sizeof out->system_id, "%s", sysid);
    snprintf(out->dbname, sizeof out->dbname, "%s", PQgetvalue(res, 0, 3));
    pos = PQgetvalue(res, 0, 2);
    if (!lsn_parse(pos, strlen(pos), &out->xlogpos))
        out->xlogpos = LSN_INVALID;
    return true;
}

bool repl_read_slot(const PGresult *res, const char *slot, const char *dbname, bool *exists,
                    PfError *err)
{
    *exists = PQntuples(res) > 0;
    if (!*exists)
        return true;
    if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0 ||
        strcmp(PQgetvalue(res, 0, 1), "wal2json") != 0) {
        err_set(err, ERR_CONFIG,
                "could not use replication slot \"%s\": it exists with type %s and plugin "
                "\"%s\", pgfan needs a logical slot with wal2json",
                slot, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
        err_hint(err, "choose another name in [source] slot, or drop that slot if nothing uses "
                      "it: SELECT pg_drop_replication_slot('%s')",
                 slot);
        return false;
    }
    if (strcmp(PQgetvalue(res, 0, 2), dbname) != 0) {
        err_set(err, ERR_CONFIG,
                "could not use replication slot \"%s\": it belongs to database \"%s\", not "
                "\"%s\"",
                slot, PQgetvalue(res, 0, 2), dbname);
        err_hint(err, "choose another name in [source] slot, or connect to database \"%s\"",
                 PQgetvalue(res, 0, 2));
        return false;
    }
    return true;
}

char *repl_session_options(const char *dsn, PfError *err)
{
    return repl_session_options_pinned(dsn, REPL_SESSION_OPTIONS, err);
}

char *repl_session_options_pinned(const char *dsn, const char *pinned, PfError *err)
{
    char *errmsg = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &errmsg);
    Buf b = BUF_INIT;

    if (!opts) {
        err_set(err, ERR_CONFIG, "could not parse [source] dsn: %s",
                errmsg ? errmsg : "out of memory");
        err_hint(err, "write a libpq connection string (host=... dbname=... user=...) or a "
                      "postgresql:// URI");
        PQfreemem(errmsg);
        return NULL;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "options") == 0 && o->val && o->val[0])
            buf_printf(&b, "%s ", o->val);
    }
    PQconninfoFree(opts);
    buf_append_str(&b, pinned);
    return b.data;
}

static void conn_param(ReplConnParams *p, size_t *n, const char *key, const char *value)
{
    if (!value || *n >= REPL_CONN_MAX_PARAMS)
        return;
    p->keys[*n] = key;
    p->values[*n] = value;
    (*n)++;
}

void repl_conn_params(ReplConnParams *p, const char *dsn, const char *replication,
                      const char *app_name, const char *options)
{
    size_t n = 0;

    /* Before the dsn: defaults that the dsn's own keys override. */
    conn_param(p, &n, "keepalives", "1");
    conn_param(p, &n, "keepalives_idle", "10");
    conn_param(p, &n, "keepalives_interval", "5");
    conn_param(p, &n, "keepalives_count", "3");
    conn_param(p, &n, "tcp_user_timeout", "30000");
    conn_param(p, &n, "dbname", dsn);
    /* After it: what pgfan decides. */
    conn_param(p, &n, "replication", replication);
    conn_param(p, &n, "fallback_application_name", app_name);
    conn_param(p, &n, "options", options);
    p->keys[n] = NULL;
    p->values[n] = NULL;
}

uint64_t repl_read_u64(const char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | (uint8_t)p[i];
    return v;
}

static void write_u64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xFF);
        v >>= 8;
    }
}

void repl_encode_status_update(char out[REPL_STATUS_UPDATE_SIZE], Lsn write, Lsn flush,
                               int64_t pg_now, bool reply_requested)
{
    out[0] = 'r';
    write_u64(out + 1, write);
    write_u64(out + 9, flush);
    write_u64(out + 17, flush);
    write_u64(out + 25, (uint64_t)pg_now);
    out[33] = reply_requested ? 1 : 0;
}
