/*
 * config.h - pgfan's configuration: one immutable snapshot.
 *
 * config_load() reads an INI file ([section] + key = value, ';' or '#'
 * comments), applies PGFAN_<SECTION>_<KEY> environment overrides (section
 * dots become underscores, all upper case: [sink.file] path ->
 * PGFAN_SINK_FILE_PATH), validates every option against one declarative
 * option table (name, type, default, range, unit, validator) and returns a
 * Config that nothing modifies afterwards. Modules take `const Config *`;
 * there are no globals.
 *
 * Errors are ERR_CONFIG and name the file, the line, the key and the fix:
 *   pgfan.conf:12: unknown key "tabels" in [source]; did you mean "tables"?
 *
 * A sink is enabled by the presence of its [sink.NAME] section (in the file
 * or through an environment override). With no sink section at all, the
 * file sink is enabled with its defaults.
 */
#ifndef PGFAN_CONFIG_H
#define PGFAN_CONFIG_H

#include "../common/buf.h"
#include "../common/clock.h"
#include "../common/error.h"
#include "../common/log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum SnapshotMode {
    SNAPSHOT_NEVER = 0,
    SNAPSHOT_INITIAL,
} SnapshotMode;

/* A qualified table name from [source] tables ("public.orders"). */
typedef struct TableName {
    char *schema; /* unquoted, as in the catalog ("public") */
    char *table;  /* unquoted ("Order Items" stays as is) */
} TableName;

/*
 * A prefix-map option: every "<key>.<name> = value" line of its section
 * ([sink.kafka] librdkafka.security.protocol = SASL_SSL), in file order.
 * Owned by the Config.
 */
typedef struct ConfigPair {
    char *key;   /* the part after the prefix: "security.protocol" */
    char *value;
} ConfigPair;

typedef struct ConfigMap {
    ConfigPair *items;
    size_t n;
} ConfigMap;

/* The value of key in map (exact match), NULL when absent; borrowed. */
const char *config_map_get(const ConfigMap *map, const char *key);

/* Whether the value of "<map_key>.<name>" in [section] is a secret that
 * must never be shown ("sink.kafka", "librdkafka", "sasl.password"). */
bool config_map_is_secret(const char *section, const char *map_key, const char *name);

/* How a deleted row reaches Elasticsearch (sinks/elasticsearch.c). */
typedef enum EsDeleteMode {
    ES_DELETE_SOFT = 0, /* a versioned document marked pgfan.deleted = true */
    ES_DELETE_HARD,     /* a versioned delete; see index.gc_deletes in the README */
} EsDeleteMode;

/* Index = the librdkafka codec name in sinks/kafka.c. */
typedef enum KafkaCompression {
    KAFKA_COMPRESSION_NONE = 0,
    KAFKA_COMPRESSION_GZIP,
    KAFKA_COMPRESSION_SNAPPY,
    KAFKA_COMPRESSION_LZ4,
    KAFKA_COMPRESSION_ZSTD,
} KafkaCompression;

/*
 * [aggregate.NAME]: a GROUP BY over one source table that the aggregates
 * sink keeps current (sinks/aggregates.c). Expressions are SQL text that
 * PostgreSQL evaluates; config/aggregate.c splits and checks them.
 */
typedef enum AggMeasureKind {
    AGG_MEASURE_COUNT_STAR = 0, /* count(*) */
    AGG_MEASURE_COUNT,          /* count(expr): rows where expr is not NULL */
    AGG_MEASURE_SUM,            /* sum(expr) */
} AggMeasureKind;

typedef struct AggGroupKey {
    char *expr; /* SQL expression, whitespace-normalised */
    char *name; /* output column (lower case identifier) */
} AggGroupKey;

typedef struct AggMeasure {
    AggMeasureKind kind;
    char *arg;  /* argument of count/sum; NULL for count(*) */
    char *name; /* output column */
} AggMeasure;

typedef struct AggregateDef {
    char *name;            /* NAME of [aggregate.NAME] = the table name */
    TableName from;        /* one of [source] tables */
    AggGroupKey *group_by;
    size_t n_group_by;
    AggMeasure *measures;
    size_t n_measures;
    char *where;           /* NULL: every row */
    bool rebuild;          /* a changed definition may be recomputed */
    int line;              /* line of the section header */
} AggregateDef;

typedef struct Config {
    char *path; /* the file it was loaded from */

    struct {
        char *dsn;             /* libpq conninfo (may hold a password: secret) */
        char *slot;            /* replication slot name, default "pgfan" */
        char *name;            /* logical server name in events, default = slot */
        TableName *tables;     /* at least one */
        size_t n_tables;
        SnapshotMode snapshot; /* default never */
        size_t snapshot_workers; /* connections reading the tables at once, default 2 */
        char *state_dir;       /* where the snapshot state file lives, default "." */
        TimeUs status_interval;   /* standby status update period, default 10 s */
        TimeUs reconnect_min;     /* backoff after a lost connection, default 1 s */
        TimeUs reconnect_max;     /* default 30 s */
        size_t max_inflight_txns; /* transactions received but not confirmed, default 100000 */
        TimeUs shutdown_timeout;  /* SIGTERM: time allowed to drain, default 60 s */
        TimeUs slot_check_interval;     /* pg_replication_slots query period, 30 s; 0: off */
        size_t slot_warn_safe_wal_size; /* warn below this safe_wal_size, default 1 GB */
        TimeUs heartbeat_interval;      /* pg_logical_emit_message period, 10 s; 0: off */
        char *heartbeat_prefix;         /* the heartbeat messages' prefix, "pgfan_heartbeat" */
    } source;

    struct {
        char *socket; /* unix socket path, default "/run/pgfan/status.sock" */
        char *metrics_listen; /* HTTP metrics/health "host:port"; NULL: disabled */
    } status;

    struct {
        LogLevel level;   /* default info */
        LogFormat format; /* default text */
    } log;

    struct {
        bool enabled;
        char *path;                /* NDJSON output, default "changes.ndjson" */
        TimeUs fsync_interval;     /* default 100 ms */
        size_t max_buffer_bytes;   /* unwritten bytes held before backpressure, default 8 MB */
    } file;

    struct {
        bool enabled;
        char *url;             /* http:// or https:// endpoint, required */
        size_t batch_size;     /* events per request, default 10 */
        size_t max_in_flight;  /* concurrent requests (= ordering lanes), default 4 */
        TimeUs timeout;        /* whole request, default 10 s */
        TimeUs batch_linger;   /* how long a partial batch waits, default 100 ms */
        char *secret;          /* HMAC-SHA256 key for X-Pgfan-Signature; NULL: unsigned */
        char *dead_letter;     /* NDJSON file for refused batches */
        char *user_agent;      /* default "pgfan/<version>" */
        char *ca_file;         /* CA bundle for https; NULL: the system's */
        ConfigMap headers;     /* header.<Name> = value: extra request headers */
    } webhook;

    struct {
        bool enabled;
        char *brokers;            /* bootstrap list, or "mock:N": in-process mock cluster */
        char *topic_prefix;       /* default: source.name */
        ConfigMap topics;         /* topic.<schema>.<table> = topic name */
        bool tombstones;          /* a null-value record after each delete, default on */
        KafkaCompression compression; /* default lz4 */
        TimeUs linger;            /* linger.ms, default 5 ms */
        size_t queue_max_messages;/* queue.buffering.max.messages, default 100000 */
        size_t queue_max_kbytes;  /* queue.buffering.max.kbytes, default 65536 */
        ConfigMap librdkafka;     /* librdkafka.<property> = value, passed as is */
    } kafka;

    struct {
        bool enabled;
        char *url;              /* cluster base URL, http:// or https:// (secret: userinfo) */
        ConfigMap indices;      /* index.<schema>.<table> = name or prefix-{column:%Y.%m.%d} */
        ConfigMap aliases;      /* alias.<schema>.<table> = alias over the table's indices */
        ConfigMap text_columns; /* text.<schema>.<table> = col, col: text + keyword mapping */
        char *username;         /* basic auth */
        char *password;         /* secret */
        char *password_file;    /* file holding the password (systemd credentials) */
        char *api_key;          /* secret: the "encoded" API key */
        char *api_key_file;
        char *ca_file;          /* CA bundle for https; NULL: the system's */
        size_t batch_actions;   /* actions per bulk request, default 1000 */
        size_t batch_bytes;     /* bytes per bulk request, default 5 MB */
        TimeUs batch_linger;    /* how long a partial bulk waits, default 200 ms */
        size_t max_in_flight;   /* concurrent bulk requests, default 2 */
        size_t max_buffer_bytes;/* bytes held (queued + in flight) before backpressure */
        TimeUs timeout;         /* whole request, default 60 s */
        bool gzip;              /* Content-Encoding: gzip request bodies */
        EsDeleteMode deletes;   /* default soft */
        char *dead_letter;      /* NDJSON file for documents refused with a 4xx */
        bool template_overwrite;/* replace an existing, different template of our name */
        size_t shards;          /* number_of_shards in the template, default 1 */
        size_t replicas;        /* number_of_replicas, default 1 */
        char *refresh_interval; /* template setting; NULL: Elasticsearch's default */
        size_t retention_days;  /* > 0: an ILM policy deleting indices after this many days */
    } elasticsearch;

    struct {
        bool enabled;
        char *dsn;              /* target database; default: [source] dsn (secret) */
        char *schema;           /* where the aggregate tables live, default "analytics" */
        size_t batch_rows;      /* weighted rows per applied batch, default 20000 */
        size_t batch_bytes;     /* COPY bytes per batch (memory bound), default 16 MB */
        TimeUs batch_linger;    /* how long a partial batch waits, default 200 ms */
        AggregateDef *defs;     /* the [aggregate.NAME] sections, in file order */
        size_t n_defs;
    } aggregates;
} Config;

/*
 * Loads and validates path plus environment overrides. On success *out is a
 * new Config owned by the caller. On failure returns false with ERR_CONFIG
 * (several problems may be reported, one per line, in err->msg).
 */
bool config_load(const char *path, Config **out, PfError *err);

void config_free(Config *cfg);

/* Whether [sink.NAME] is enabled (its section appeared, or it is the default). */
bool config_sink_enabled(const Config *cfg, const char *sink);

/*
 * One option whose effective value differs between two configurations.
 * old_text/new_text are the values as config_print shows them (secrets
 * redacted: a changed password reads "*****" on both sides). reloadable:
 * the option table marks it as one a running daemon applies on SIGHUP. A
 * sink section enabled in one and not the other is reported with key
 * "enabled" ("on"/"off"), never reloadable.
 */
typedef void (*ConfigChangeFn)(void *arg, const char *section, const char *key,
                               const char *old_text, const char *new_text, bool reloadable);

/*
 * Calls fn for every difference between old_cfg and new_cfg, in the option
 * table's order. Options of a sink section are compared only when it is
 * enabled in both (otherwise its "enabled" line is the difference). An
 * unset value reads "(unset)". Returns the number of differences.
 * (config/compare.c)
 */
size_t config_compare(const Config *old_cfg, const Config *new_cfg, ConfigChangeFn fn, void *arg);

/* Whether [section] key is marked reloadable in the option table (false when unknown). */
bool config_option_reloadable(const char *section, const char *key);

/*
 * Prints the effective configuration as INI, every option with its value
 * (defaults included) and secrets redacted (passwords in conninfo strings
 * and secret options become "*****").
 */
void config_print(const Config *cfg, FILE *out);

/*
 * Appends schema.table as SQL, each part double-quoted only when PostgreSQL
 * needs it (capitals, spaces, dots, quotes...): for messages and hints that
 * people copy into psql.
 */
void config_append_qualified(Buf *out, const char *schema, const char *table);

/*
 * Returns a copy of a libpq conninfo string with any password value
 * replaced by "*****" (key=value form and postgresql:// URIs). Caller frees.
 */
char *config_redact_dsn(const char *dsn);

#endif
