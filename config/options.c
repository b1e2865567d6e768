/*
 * options.c - the option table and the typed values it declares.
 *
 * Every option exists exactly once, as a row of config_options[]: the INI
 * parser, the environment overrides, validation, config_print and the
 * example config (deploy/pgfan.conf.example, checked by the unit test) all
 * walk this table. Adding an option means adding a row (and a Config field).
 *
 * Defaults are text and go through the same parser as file values, so a
 * default can never mean something a user could not write.
 */
#include "internal.h"

#include "../common/mem.h"
#include "agg_loader.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define US_MS USECS_PER_MSEC
#define US_S USECS_PER_SEC
#define US_MIN (60 * USECS_PER_SEC)
#define US_H (3600 * USECS_PER_SEC)
#define KB INT64_C(1024)
#define MB (1024 * KB)
#define GB (1024 * MB)

/* ---- enum and list storage (the rows that cannot use a plain offset) ---- */

/* Index = SnapshotMode value. */
static const char *const snapshot_choices[] = {"never", "initial", NULL};
/* Index = LogLevel value (log_level_name() spells them the same way). */
static const char *const log_level_choices[] = {"debug", "info", "warning", "error", NULL};
/* Index = LogFormat value (log_format_name() spells them the same way). */
static const char *const log_format_choices[] = {"text", "json", NULL};

static bool set_snapshot(Config *cfg, const OptValue *v, OptCheck *why)
{
    (void)why;
    cfg->source.snapshot = v->choice == 1 ? SNAPSHOT_INITIAL : SNAPSHOT_NEVER;
    return true;
}

static void print_snapshot(const Config *cfg, Buf *out)
{
    buf_append_str(out, snapshot_choices[cfg->source.snapshot == SNAPSHOT_INITIAL ? 1 : 0]);
}

static bool set_log_level(Config *cfg, const OptValue *v, OptCheck *why)
{
    (void)why;
    return log_level_parse(log_level_choices[v->choice], &cfg->log.level);
}

static void print_log_level(const Config *cfg, Buf *out)
{
    buf_append_str(out, log_level_name(cfg->log.level));
}

static bool set_log_format(Config *cfg, const OptValue *v, OptCheck *why)
{
    (void)why;
    return log_format_parse(log_format_choices[v->choice], &cfg->log.format);
}

static void print_log_format(const Config *cfg, Buf *out)
{
    buf_append_str(out, log_format_name(cfg->log.format));
}

/*
 * [source] heartbeat_prefix: it may be named in wal2json's comma-separated
 * add-msg-prefixes and is matched byte for byte, so no commas, no spaces.
 */
static bool validate_heartbeat_prefix(const OptValue *v, OptCheck *why)
{
    size_t len = strlen(v->str);

    for (const char *p = v->str; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("_-.:/", *p)) {
            snprintf(why->why, sizeof why->why,
                     "a prefix has only letters, digits and _ - . : / (found '%c')", *p);
            snprintf(why->hint, sizeof why->hint, "write for example pgfan_heartbeat");
            return false;
        }
    }
    if (len > 64) {
        snprintf(why->why, sizeof why->why, "a prefix has at most 64 characters, not %zu", len);
        return false;
    }
    return true;
}

/* Index = KafkaCompression value = librdkafka's compression.codec name. */
static const char *const kafka_compression_choices[] = {"none", "gzip", "snappy", "lz4", "zstd",
                                                        NULL};

static bool set_kafka_compression(Config *cfg, const OptValue *v, OptCheck *why)
{
    (void)why;
    cfg->kafka.compression = (KafkaCompression)v->choice;
    return true;
}

static void print_kafka_compression(const Config *cfg, Buf *out)
{
    buf_append_str(out, kafka_compression_choices[cfg->kafka.compression]);
}

/* librdkafka properties whose values are credentials. */
static const char *const kafka_secret_names[] = {"password", "secret", "sasl.oauthbearer",
                                                 "ssl.key", NULL};

/* Webhook: the endpoint must be one libcurl reaches over HTTP(S). */
static bool validate_http_url(const OptValue *v, OptCheck *why)
{
    if ((strncasecmp(v->str, "http://", 7) == 0 && v->str[7] != '\0') ||
        (strncasecmp(v->str, "https://", 8) == 0 && v->str[8] != '\0'))
        return true;
    snprintf(why->why, sizeof why->why, "expected an http:// or https:// URL");
    snprintf(why->hint, sizeof why->hint, "write the full URL, e.g. https://hooks.example.com/pgfan");
    return false;
}

/*
 * [status] metrics_listen: host:port where host is an IPv4 literal,
 * "localhost" or a [bracketed] IPv6 literal, and port is 1-65535. Names
 * other than localhost are refused: resolving them at startup could block
 * and would make the bound address depend on DNS.
 */
static bool validate_listen_address(const OptValue *v, OptCheck *why)
{
    const char *s = v->str;
    const char *colon;
    char host[64];
    size_t hlen;
    unsigned char addr[16];
    long port = 0;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':') {
            snprintf(why->why, sizeof why->why, "expected host:port");
            goto hint;
        }
        colon = close + 1;
        hlen = (size_t)(close - s - 1);
        if (hlen == 0 || hlen >= sizeof host) {
            snprintf(why->why, sizeof why->why, "\"%.*s\" is not an IPv6 address", (int)hlen,
                     s + 1);
            goto hint;
        }
        memcpy(host, s + 1, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET6, host, addr) != 1) {
            snprintf(why->why, sizeof why->why, "\"%s\" is not an IPv6 address", host);
            goto hint;
        }
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || colon == s) {
            snprintf(why->why, sizeof why->why, "expected host:port");
            goto hint;
        }
        hlen = (size_t)(colon - s);
        if (hlen >= sizeof host || memchr(s, ':', hlen) != NULL) {
            snprintf(why->why, sizeof why->why,
                     "the host must be an IPv4 address, localhost or a [bracketed] IPv6 address");
            goto hint;
        }
        memcpy(host, s, hlen);
        host[hlen] = '\0';
        if (strcasecmp(host, "localhost") != 0 && inet_pton(AF_INET, host, addr) != 1) {
            snprintf(why->why, sizeof why->why,
                     "the host must be an IPv4 address, localhost or a [bracketed] IPv6 address");
            goto hint;
        }
    }
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9' || port > 65535) {
            port = -1;
            break;
        }
        port = port * 10 + (*p - '0');
    }
    if (colon[1] == '\0' || port < 1 || port > 65535) {
        snprintf(why->why, sizeof why->why, "the port must be a number from 1 to 65535");
        goto hint;
    }
    return true;

hint:
    snprintf(why->hint, sizeof why->hint,
             "write for example 127.0.0.1:9187, 0.0.0.0:9187, localhost:9187 or [::1]:9187");
    return false;
}

/* Header names are HTTP tokens; values may not break the header line. */
static bool validate_header_entry(const char *name, const char *value, OptCheck *why)
{
    for (const char *p = name; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p)) {
            snprintf(why->why, sizeof why->why,
                     "a header name has only letters, digits and !#$%%&'*+-.^_`|~");
            return false;
        }
    }
    if (strpbrk(value, "\r\n")) {
        snprintf(why->why, sizeof why->why, "a header value must be one line");
        return false;
    }
    return true;
}

/* Elasticsearch: how deleted rows are written. Index = EsDeleteMode. */
static const char *const es_delete_choices[] = {"soft", "hard", NULL};

static bool set_es_deletes(Config *cfg, const OptValue *v, OptCheck *why)
{
    (void)why;
    cfg->elasticsearch.deletes = (EsDeleteMode)v->choice;
    return true;
}

static void print_es_deletes(const Config *cfg, Buf *out)
{
    buf_append_str(out, es_delete_choices[cfg->elasticsearch.deletes]);
}

/* Characters Elasticsearch refuses in an index name (besides upper case). */
static bool es_index_char_ok(char c)
{
    return !isupper((unsigned char)c) && !strchr("\\/*?\"<>| ,#:", c) && (unsigned char)c > ' ';
}

/*
 * index.<schema>.<table> = orders-{created_at:%Y.%m.%d} or a static name:
 * lower case, none of Elasticsearch's forbidden characters, at most one
 * {column:format} whose format uses only %Y, %m and %d.
 */
static bool validate_es_index_entry(const char *name, const char *value, OptCheck *why)
{
    const char *open = strchr(value, '{');

    (void)name;
    if (strchr("_-+", value[0]) || value[0] == '{') {
        snprintf(why->why, sizeof why->why, "an index name may not start with _, -, + or a {column}");
        goto hint;
    }
    for (const char *p = value; *p; p++) {
        if (p == open) {
            const char *close = strchr(p, '}');
            const char *colon = strchr(p, ':');

            if (!close || !colon || colon > close || colon == p + 1 || colon + 1 == close) {
                snprintf(why->why, sizeof why->why,
                         "a date part is written {column:format}, e.g. {created_at:%%Y.%%m.%%d}");
                goto hint;
            }
            for (const char *f = colon + 1; f < close; f++) {
                if (*f == '%') {
                    f++;
                    if (*f != 'Y' && *f != 'm' && *f != 'd') {
                        snprintf(why->why, sizeof why->why,
                                 "only %%Y, %%m and %%d may appear in {column:format}");
                        goto hint;
                    }
                } else if (!es_index_char_ok(*f)) {
                    snprintf(why->why, sizeof why->why,
                             "\"%c\" may not appear in an Elasticsearch index name", *f);
                    goto hint;
                }
            }
            p = close;
            if (strchr(p + 1, '{')) {
                snprintf(why->why, sizeof why->why, "only one {column:format} part is allowed");
                goto hint;
            }
            continue;
        }
        if (!es_index_char_ok(*p)) {
            snprintf(why->why, sizeof why->why,
                     "\"%c\" may not appear in an Elasticsearch index name (lower case only; "
                     "no spaces or \\/*?\"<>|,#:)", *p);
            goto hint;
        }
    }
    return true;

hint:
    snprintf(why->hint, sizeof why->hint,
             "write e.g. index.public.orders = orders-{created_at:%%Y.%%m.%%d} or "
             "index.public.customers = customers");
    return false;
}

/* alias.<schema>.<table>: an index-like name without any {column} part. */
static bool validate_es_alias_entry(const char *name, const char *value, OptCheck *why)
{
    (void)name;
    if (strchr(value, '{')) {
        snprintf(why->why, sizeof why->why, "an alias is a fixed name, without {column:format}");
        snprintf(why->hint, sizeof why->hint, "write e.g. alias.public.orders = orders");
        return false;
    }
    return validate_es_index_entry(name, value, why);
}

/* Files that hold a credential are read when the sink opens. */

/* Header names whose values are credentials. */
static const char *const webhook_secret_headers[] = {"authorization", "key", "token", "secret",
                                                     "cookie", NULL};

/* ---- the table ---- */

/* One option per block reads better than one field per line. */
// clang-format off
const SectionDef config_sections[] = {
    {.name = "source", .desc = "the PostgreSQL database, slot and tables to capture"},
    {.name = "status", .desc = "the unix socket that `pgfan status` reads"},
    {.name = "log", .desc = "log lines on stderr"},
    {.name = "sink.file",
     .desc = "NDJSON file sink, one change per line. A sink is enabled by its section (or\n"
             "a PGFAN_SINK_FILE_* variable); with no [sink.*] section at all, this one is\n"
             "enabled with its defaults.",
     .is_sink = true,
     .default_sink = true,
     .enabled_offset = offsetof(Config, file.enabled)},
    {.name = "sink.kafka",
     .desc = "Kafka sink: one record per change, Debezium-compatible key and value\n"
             "(librdkafka idempotent producer, acks=all; at-least-once).",
     .is_sink = true,
     .enabled_offset = offsetof(Config, kafka.enabled)},
    {.name = "sink.webhook",
     .desc = "HTTP webhook sink: changes POSTed as JSON arrays of events, several requests\n"
             "in flight, per-key order kept; 2xx confirms, 429/5xx/timeouts retry, other 4xx\n"
             "go to the dead-letter file.",
     .is_sink = true,
     .enabled_offset = offsetof(Config, webhook.enabled)},
    {.name = "sink.elasticsearch",
     .desc = "Elasticsearch sink: one document per row (_id = primary key) in per-table\n"
             "indices, daily ones when routed by a date column; external versions from the\n"
             "change's LSN make replays harmless; pgfan installs an index template per table.",
     .is_sink = true,
     .enabled_offset = offsetof(Config, elasticsearch.enabled)},
    {.name = "sink.aggregates",
     .desc = "Aggregates sink: the [aggregate.NAME] sections below become tables in a\n"
             "PostgreSQL schema, kept equal to their GROUP BY over the source table at every\n"
             "confirmed position (exactly once). Source tables need REPLICA IDENTITY FULL.\n"
             "An aggregate is declared in its own section (from the file only):\n"
             "  [aggregate.gmv_daily]\n"
             "  from     = public.orders\n"
             "  group_by = (created_at AT TIME ZONE 'UTC')::date AS day, store_id, currency\n"
             "  measures = count(*) AS orders, sum(total_amount) AS gmv\n"
             "  where    = status NOT IN ('cancelled')   ; optional\n"
             "  rebuild  = no   ; yes: recompute it after its definition changed",
     .is_sink = true,
     .enabled_offset = offsetof(Config, aggregates.enabled)},
};
const size_t config_n_sections = sizeof config_sections / sizeof config_sections[0];

const OptDef config_options[] = {
    {.section = "source", .key = "dsn", .type = OPT_STRING, .required = true,
     .secret = SECRET_CONNINFO, .offset = offsetof(Config, source.dsn),
     .example = "host=127.0.0.1 port=5432 dbname=shop user=pgfan",
     .desc = "libpq connection string or postgresql:// URI; its password is never printed"},
    {.section = "source", .key = "slot", .type = OPT_STRING, .def = "pgfan",
     .offset = offsetof(Config, source.slot), .validate = config_validate_slot,
     .desc = "replication slot, created when missing: 1-63 characters of a-z, 0-9, _"},
    {.section = "source", .key = "name", .type = OPT_STRING, .default_from = "slot",
     .offset = offsetof(Config, source.name),
     .desc = "server name in events (source.name)"},
    {.section = "source", .key = "tables", .type = OPT_LIST, .required = true,
     .set = config_set_tables, .print = config_print_tables,
     .example = "public.orders, public.customers, public.stores",
     .desc = "tables to capture: schema.table, ... (no schema: public; \"quote\" odd names)"},
    {.section = "source", .key = "snapshot", .type = OPT_ENUM, .def = "never",
     .choices = snapshot_choices, .set = set_snapshot, .print = print_snapshot,
     .desc = "never: stream changes only; initial: when pgfan creates the slot, first send every\n"
             "existing row of the tables (op \"r\"), then stream from the slot's starting point"},
    {.section = "source", .key = "snapshot_workers", .type = OPT_INT, .def = "2",
     .min = 1, .max = 32, .offset = offsetof(Config, source.snapshot_workers),
     .desc = "connections that read the tables at once during the initial snapshot (each\n"
             "table is split into page ranges that they share)"},
    {.section = "source", .key = "state_dir", .type = OPT_STRING, .def = ".",
     .offset = offsetof(Config, source.state_dir),
     .desc = "directory of pgfan-<slot>.snapshot, which records whether the initial snapshot\n"
             "finished (an interrupted one starts over); must survive restarts"},
    {.section = "source", .key = "status_interval", .type = OPT_DURATION, .def = "10s",
     .min = 1 * US_S, .max = 60 * US_S, .unit = "s",
     .offset = offsetof(Config, source.status_interval),
     .desc = "how often standby status updates are sent to PostgreSQL"},
    {.section = "source", .key = "reconnect_min", .type = OPT_DURATION, .def = "1s",
     .min = 100 * US_MS, .max = 60 * US_S, .unit = "s",
     .offset = offsetof(Config, source.reconnect_min),
     .desc = "first wait before reconnecting after a lost connection"},
    {.section = "source", .key = "reconnect_max", .type = OPT_DURATION, .def = "30s",
     .min = 1 * US_S, .max = 10 * US_MIN, .unit = "s",
     .offset = offsetof(Config, source.reconnect_max),
     .desc = "longest wait between reconnection attempts, >= reconnect_min"},
    {.section = "source", .key = "max_inflight_transactions", .type = OPT_INT, .def = "100000",
     .min = 100, .max = 10000000, .offset = offsetof(Config, source.max_inflight_txns),
     .desc = "transactions received but not yet durable everywhere; more pause reading"},
    {.section = "source", .key = "shutdown_timeout", .type = OPT_DURATION, .def = "60s",
     .min = 1 * US_S, .max = 1 * US_H, .unit = "s",
     .offset = offsetof(Config, source.shutdown_timeout),
     .desc = "on SIGTERM, time allowed for sinks to drain"},
    {.section = "source", .key = "slot_check_interval", .type = OPT_DURATION, .def = "30s",
     .min = 0, .max = 1 * US_H, .unit = "s", .reloadable = true,
     .offset = offsetof(Config, source.slot_check_interval),
     .desc = "how often the slot's wal_status, safe_wal_size and retained WAL are read from\n"
             "pg_replication_slots (on a normal connection); 0: never"},
    {.section = "source", .key = "slot_warn_safe_wal_size", .type = OPT_SIZE, .def = "1GB",
     .min = 0, .max = 1024 * GB, .unit = "B", .reloadable = true,
     .offset = offsetof(Config, source.slot_warn_safe_wal_size),
     .desc = "warn when the slot's safe_wal_size (WAL left before max_slot_wal_keep_size\n"
             "invalidates it) is below this; 0: warn only once wal_status is unreserved"},
    {.section = "source", .key = "heartbeat_interval", .type = OPT_DURATION, .def = "10s",
     .min = 0, .max = 1 * US_H, .unit = "s", .reloadable = true,
     .offset = offsetof(Config, source.heartbeat_interval),
     .desc = "how often a non-transactional pg_logical_emit_message() heartbeat is written, so\n"
             "an idle database's slot advances and lag_seconds is measured; 0: never"},
    {.section = "source", .key = "heartbeat_prefix", .type = OPT_STRING,
     .def = "pgfan_heartbeat", .offset = offsetof(Config, source.heartbeat_prefix),
     .validate = validate_heartbeat_prefix,
     .desc = "prefix of the heartbeat messages (sinks do not output them)"},

    {.section = "status", .key = "socket", .type = OPT_STRING, .def = "/run/pgfan/status.sock",
     .offset = offsetof(Config, status.socket),
     .desc = "unix socket read by `pgfan status`"},
    {.section = "status", .key = "metrics_listen", .type = OPT_STRING, .optional = true,
     .offset = offsetof(Config, status.metrics_listen), .validate = validate_listen_address,
     .example = "127.0.0.1:9187",
     .desc = "host:port of the HTTP server for Prometheus (/metrics) and probes (/healthz,\n"
             "/readyz); unset: no HTTP server"},

    {.section = "log", .key = "level", .type = OPT_ENUM, .def = "info",
     .choices = log_level_choices, .set = set_log_level, .print = print_log_level,
     .reloadable = true,
     .desc = "lowest level logged"},
    {.section = "log", .key = "format", .type = OPT_ENUM, .def = "text",
     .choices = log_format_choices, .set = set_log_format, .print = print_log_format,
     .reloadable = true,
     .desc = "text: one line per message; json: one JSON object per line (ts, level,\n"
             "component, msg, error, hint). Under systemd's journal, lines carry <N> priorities"},

    {.section = "sink.file", .key = "path", .type = OPT_STRING, .def = "changes.ndjson",
     .offset = offsetof(Config, file.path),
     .desc = "NDJSON output file, appended to"},
    {.section = "sink.file", .key = "fsync_interval", .type = OPT_DURATION, .def = "100ms",
     .reloadable = true,
     .min = 0, .max = 10 * US_S, .unit = "ms",
     .offset = offsetof(Config, file.fsync_interval),
     .desc = "how long lines may wait to be written, fsynced and confirmed; 0: at once"},
    {.section = "sink.file", .key = "max_buffer", .type = OPT_SIZE, .def = "8MB",
     .reloadable = true,
     .min = 64 * KB, .max = 1 * GB, .unit = "B",
     .offset = offsetof(Config, file.max_buffer_bytes),
     .desc = "unwritten bytes held before reading from PostgreSQL pauses"},

    {.section = "sink.kafka", .key = "brokers", .type = OPT_STRING, .required = true,
     .offset = offsetof(Config, kafka.brokers), .example = "localhost:9092",
     .desc = "bootstrap brokers host:port,...; mock:N runs an in-process mock cluster of N"},
    {.section = "sink.kafka", .key = "topic_prefix", .type = OPT_STRING,
     .default_from = "name", .default_from_section = "source",
     .offset = offsetof(Config, kafka.topic_prefix),
     .desc = "topics are <topic_prefix>.<schema>.<table>"},
    {.section = "sink.kafka", .key = "topic", .type = OPT_MAP,
     .offset = offsetof(Config, kafka.topics), .example = "public.orders = shop-orders",
     .desc = "topic.<schema>.<table> = name: a table's own topic instead of the prefix rule"},
    {.section = "sink.kafka", .key = "tombstones", .type = OPT_BOOL, .def = "on",
     .offset = offsetof(Config, kafka.tombstones),
     .desc = "after each delete, a record with the same key and a null value (compaction)"},
    {.section = "sink.kafka", .key = "compression", .type = OPT_ENUM, .def = "lz4",
     .choices = kafka_compression_choices, .set = set_kafka_compression,
     .print = print_kafka_compression,
     .desc = "compression.codec of produced batches"},
    {.section = "sink.kafka", .key = "linger", .type = OPT_DURATION, .def = "5ms",
     .min = 0, .max = 10 * US_S, .unit = "ms", .offset = offsetof(Config, kafka.linger),
     .desc = "time a batch waits for more records (linger.ms)"},
    {.section = "sink.kafka", .key = "queue_max_messages", .type = OPT_INT, .def = "100000",
     .min = 10, .max = 10000000, .offset = offsetof(Config, kafka.queue_max_messages),
     .desc = "records held in the producer queue before reading from PostgreSQL pauses"},
    {.section = "sink.kafka", .key = "queue_max_kbytes", .type = OPT_INT, .def = "65536",
     .min = 64, .max = 2097151, .offset = offsetof(Config, kafka.queue_max_kbytes),
     .desc = "kilobytes held in the producer queue before reading pauses (bounds memory)"},
    {.section = "sink.kafka", .key = "librdkafka", .type = OPT_MAP,
     .offset = offsetof(Config, kafka.librdkafka), .secret_names = kafka_secret_names,
     .example = "security.protocol = SASL_SSL",
     .desc = "librdkafka.<property> = value: any librdkafka property, as given to kcat -X\n"
             "(values of *password*, *secret*, sasl.oauthbearer.*, ssl.key* are never printed)"},

    {.section = "sink.webhook", .key = "url", .type = OPT_STRING, .required = true,
     .secret = SECRET_URL, .offset = offsetof(Config, webhook.url),
     .validate = validate_http_url,
     .example = "https://hooks.example.com/pgfan",
     .desc = "endpoint the batches are POSTed to: http:// or https://"},
    {.section = "sink.webhook", .key = "batch_size", .type = OPT_INT, .def = "10",
     .reloadable = true,
     .min = 1, .max = 10000, .offset = offsetof(Config, webhook.batch_size),
     .desc = "events per request (a JSON array)"},
    {.section = "sink.webhook", .key = "max_in_flight", .type = OPT_INT, .def = "4",
     .min = 1, .max = 64, .offset = offsetof(Config, webhook.max_in_flight),
     .desc = "concurrent requests; each key always uses the same one of these lanes"},
    {.section = "sink.webhook", .key = "timeout", .type = OPT_DURATION, .def = "10s",
     .min = 100 * US_MS, .max = 10 * US_MIN, .unit = "s",
     .offset = offsetof(Config, webhook.timeout),
     .desc = "time allowed for one request (connect, send, answer); then it is retried"},
    {.section = "sink.webhook", .key = "batch_linger", .type = OPT_DURATION, .def = "100ms",
     .reloadable = true,
     .min = 0, .max = 10 * US_S, .unit = "ms",
     .offset = offsetof(Config, webhook.batch_linger),
     .desc = "how long a batch that is not full waits for more events"},
    {.section = "sink.webhook", .key = "secret", .type = OPT_STRING, .optional = true,
     .secret = SECRET_WHOLE, .offset = offsetof(Config, webhook.secret),
     .example = "change-me",
     .desc = "HMAC-SHA256 key: requests carry X-Pgfan-Signature: sha256=<hex of the body's HMAC>"},
    {.section = "sink.webhook", .key = "dead_letter", .type = OPT_STRING,
     .def = "webhook-dead-letter.ndjson", .offset = offsetof(Config, webhook.dead_letter),
     .desc = "NDJSON file for batches the endpoint refused with a 4xx (one line per batch)"},
    {.section = "sink.webhook", .key = "user_agent", .type = OPT_STRING,
     .def = "pgfan/" PGFAN_VERSION, .offset = offsetof(Config, webhook.user_agent),
     .desc = "User-Agent header of every request"},
    {.section = "sink.webhook", .key = "ca_file", .type = OPT_STRING, .optional = true,
     .offset = offsetof(Config, webhook.ca_file), .example = "/etc/ssl/certs/my-ca.pem",
     .desc = "CA bundle that verifies the endpoint's certificate (default: the system's)"},
    {.section = "sink.webhook", .key = "header", .type = OPT_MAP,
     .offset = offsetof(Config, webhook.headers), .secret_names = webhook_secret_headers,
     .validate_entry = validate_header_entry, .example = "X-Api-Key = abc123",
     .desc = "header.<Name> = value: an extra header on every request\n"
             "(values of Authorization, *key*, *token*, *secret* are never printed)"},

    {.section = "sink.elasticsearch", .key = "url", .type = OPT_STRING, .required = true,
     .secret = SECRET_URL, .offset = offsetof(Config, elasticsearch.url),
     .validate = validate_http_url, .example = "http://localhost:9200",
     .desc = "the cluster's base URL: http:// or https://"},
    {.section = "sink.elasticsearch", .key = "index", .type = OPT_MAP,
     .offset = offsetof(Config, elasticsearch.indices),
     .validate_entry = validate_es_index_entry,
     .example = "public.orders = orders-{created_at:%Y.%m.%d}",
     .desc = "index.<schema>.<table> = index name, or prefix-{column:%Y.%m.%d}: daily indices\n"
             "by the UTC date of an immutable column (default: the table name in lower case)"},
    {.section = "sink.elasticsearch", .key = "alias", .type = OPT_MAP,
     .offset = offsetof(Config, elasticsearch.aliases),
     .validate_entry = validate_es_alias_entry, .example = "public.orders = orders",
     .desc = "alias.<schema>.<table> = alias over the table's indices that hides deleted rows\n"
             "(default for daily indices: the table name; for a fixed index: <index>-live)"},
    {.section = "sink.elasticsearch", .key = "text", .type = OPT_MAP,
     .offset = offsetof(Config, elasticsearch.text_columns),
     .example = "public.customers = name, email",
     .desc = "text.<schema>.<table> = columns mapped as full-text (text with a .keyword\n"
             "subfield); other text columns are keyword"},
    {.section = "sink.elasticsearch", .key = "username", .type = OPT_STRING, .optional = true,
     .offset = offsetof(Config, elasticsearch.username), .example = "pgfan",
     .desc = "basic authentication user (with password or password_file)"},
    {.section = "sink.elasticsearch", .key = "password", .type = OPT_STRING, .optional = true,
     .secret = SECRET_WHOLE, .offset = offsetof(Config, elasticsearch.password),
     .example = "change-me", .desc = "basic authentication password (never printed)"},
    {.section = "sink.elasticsearch", .key = "password_file", .type = OPT_STRING,
     .optional = true, .offset = offsetof(Config, elasticsearch.password_file),
     .example = "/run/credentials/pgfan.service/es-password",
     .desc = "file holding the password (e.g. a systemd credential); read at start"},
    {.section = "sink.elasticsearch", .key = "api_key", .type = OPT_STRING, .optional = true,
     .secret = SECRET_WHOLE, .offset = offsetof(Config, elasticsearch.api_key),
     .example = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==",
     .desc = "API key, the \"encoded\" value of POST /_security/api_key (never printed)"},
    {.section = "sink.elasticsearch", .key = "api_key_file", .type = OPT_STRING,
     .optional = true, .offset = offsetof(Config, elasticsearch.api_key_file),
     .example = "/run/credentials/pgfan.service/es-api-key",
     .desc = "file holding the API key; read at start"},
    {.section = "sink.elasticsearch", .key = "ca_file", .type = OPT_STRING, .optional = true,
     .offset = offsetof(Config, elasticsearch.ca_file), .example = "/etc/pgfan/es-ca.crt",
     .desc = "CA bundle that verifies the cluster's certificate (default: the system's)"},
    {.section = "sink.elasticsearch", .key = "batch_actions", .type = OPT_INT, .def = "1000",
     .reloadable = true,
     .min = 1, .max = 100000, .offset = offsetof(Config, elasticsearch.batch_actions),
     .desc = "documents per bulk request"},
    {.section = "sink.elasticsearch", .key = "batch_bytes", .type = OPT_SIZE, .def = "5MB",
     .reloadable = true,
     .min = 4 * KB, .max = 90 * MB, .unit = "B",
     .offset = offsetof(Config, elasticsearch.batch_bytes),
     .desc = "bytes per bulk request (Elasticsearch refuses more than http.max_content_length)"},
    {.section = "sink.elasticsearch", .key = "batch_linger", .type = OPT_DURATION,
     .reloadable = true,
     .def = "200ms", .min = 0, .max = 10 * US_S, .unit = "ms",
     .offset = offsetof(Config, elasticsearch.batch_linger),
     .desc = "how long a bulk request that is not full waits for more documents"},
    {.section = "sink.elasticsearch", .key = "max_in_flight", .type = OPT_INT, .def = "2",
     .min = 1, .max = 16, .offset = offsetof(Config, elasticsearch.max_in_flight),
     .desc = "concurrent bulk requests"},
    {.section = "sink.elasticsearch", .key = "max_buffer", .type = OPT_SIZE, .def = "64MB",
     .reloadable = true,
     .min = 1 * MB, .max = 1 * GB, .unit = "B",
     .offset = offsetof(Config, elasticsearch.max_buffer_bytes),
     .desc = "bytes held (waiting, in flight, retrying) before reading from PostgreSQL pauses"},
    {.section = "sink.elasticsearch", .key = "timeout", .type = OPT_DURATION, .def = "60s",
     .min = 1 * US_S, .max = 10 * US_MIN, .unit = "s",
     .offset = offsetof(Config, elasticsearch.timeout),
     .desc = "time allowed for one request; then it is retried"},
    {.section = "sink.elasticsearch", .key = "gzip", .type = OPT_BOOL, .def = "off",
     .offset = offsetof(Config, elasticsearch.gzip),
     .desc = "compress bulk request bodies (Content-Encoding: gzip)"},
    {.section = "sink.elasticsearch", .key = "deletes", .type = OPT_ENUM, .def = "soft",
     .choices = es_delete_choices, .set = set_es_deletes, .print = print_es_deletes,
     .desc = "soft: a deleted row's document stays, marked pgfan.deleted = true (the alias\n"
             "hides it); hard: the document is deleted (safe only within index.gc_deletes)"},
    {.section = "sink.elasticsearch", .key = "dead_letter", .type = OPT_STRING,
     .def = "es-dead-letter.ndjson", .offset = offsetof(Config, elasticsearch.dead_letter),
     .desc = "NDJSON file for documents Elasticsearch refused (mapping errors): document,\n"
             "error, LSN and table, one per line"},
    {.section = "sink.elasticsearch", .key = "template_overwrite", .type = OPT_BOOL,
     .def = "no", .offset = offsetof(Config, elasticsearch.template_overwrite),
     .desc = "replace an existing index template of pgfan's name that differs (otherwise a\n"
             "difference stops pgfan with a message)"},
    {.section = "sink.elasticsearch", .key = "shards", .type = OPT_INT, .def = "1",
     .min = 1, .max = 1024, .offset = offsetof(Config, elasticsearch.shards),
     .desc = "number_of_shards of each new index"},
    {.section = "sink.elasticsearch", .key = "replicas", .type = OPT_INT, .def = "1",
     .min = 0, .max = 32, .offset = offsetof(Config, elasticsearch.replicas),
     .desc = "number_of_replicas of each new index"},
    {.section = "sink.elasticsearch", .key = "refresh_interval", .type = OPT_STRING,
     .optional = true, .offset = offsetof(Config, elasticsearch.refresh_interval),
     .example = "5s", .desc = "refresh_interval of each new index (default: Elasticsearch's)"},
    {.section = "sink.elasticsearch", .key = "retention_days", .type = OPT_INT, .def = "0",
     .min = 0, .max = 36500, .offset = offsetof(Config, elasticsearch.retention_days),
     .desc = "> 0: an ILM policy deletes each index this many days after its date; 0: never"},

    {.section = "sink.aggregates", .key = "dsn", .type = OPT_STRING, .default_from = "dsn",
     .default_from_section = "source", .secret = SECRET_CONNINFO,
     .offset = offsetof(Config, aggregates.dsn),
     .desc = "database the aggregate tables are written to; it must be the one [source]\n"
             "decodes (the history is computed from the source tables there)"},
    {.section = "sink.aggregates", .key = "schema", .type = OPT_STRING, .def = "analytics",
     .offset = offsetof(Config, aggregates.schema), .validate = agg_validate_schema,
     .desc = "schema of the aggregate tables and of pgfan_state/pgfan_aggregates, created\n"
             "when missing; keep it out of [source] tables"},
    {.section = "sink.aggregates", .key = "batch_rows", .type = OPT_INT, .def = "20000",
     .reloadable = true,
     .min = 1, .max = 10000000, .offset = offsetof(Config, aggregates.batch_rows),
     .desc = "weighted rows (an update is two) applied per PostgreSQL transaction"},
    {.section = "sink.aggregates", .key = "batch_bytes", .type = OPT_SIZE, .def = "16MB",
     .reloadable = true,
     .min = 64 * KB, .max = 1 * GB, .unit = "B", .offset = offsetof(Config, aggregates.batch_bytes),
     .desc = "COPY bytes per batch; at most two batches are held (memory bound)"},
    {.section = "sink.aggregates", .key = "batch_linger", .type = OPT_DURATION, .def = "200ms",
     .reloadable = true,
     .min = 0, .max = 60 * US_S, .unit = "ms", .offset = offsetof(Config, aggregates.batch_linger),
     .desc = "how long a batch that is not full waits for more rows"},
};
const size_t config_n_options = sizeof config_options / sizeof config_options[0];

/* Cross-field checks: low <= high, both keys of the same section. */
const OptOrder config_orders[] = {
    {.section = "source", .low = "reconnect_min", .high = "reconnect_max"},
};
const size_t config_n_orders = sizeof config_orders / sizeof config_orders[0];
// clang-format on

bool config_sink_enabled(const Config *cfg, const char *sink)
{
    char name[64];
    const SectionDef *sec;

    snprintf(name, sizeof name, "sink.%s", sink);
    sec = config_find_section(name);
    if (!sec || !sec->is_sink)
        return false;
    return *(const bool *)(const void *)((const char *)cfg + sec->enabled_offset);
}

const SectionDef *config_find_section(const char *name)
{
    for (size_t i = 0; i < config_n_sections; i++) {
        if (strcmp(config_sections[i].name, name) == 0)
            return &config_sections[i];
    }
    return NULL;
}

const OptDef *config_find_map_option(const char *section, const char *key, const char **name)
{
    for (size_t i = 0; i < config_n_options; i++) {
        const OptDef *def = &config_options[i];
        size_t len = strlen(def->key);

        if (def->type == OPT_MAP && strcmp(def->section, section) == 0 &&
            strncmp(key, def->key, len) == 0 && key[len] == '.' && key[len + 1] != '\0') {
            *name = key + len + 1;
            return def;
        }
    }
    return NULL;
}

bool opt_map_name_is_secret(const OptDef *def, const char *name)
{
    for (const char *const *w = def->secret_names; w && *w; w++) {
        if (strcasestr(name, *w))
            return true;
    }
    return false;
}

bool config_map_is_secret(const char *section, const char *map_key, const char *name)
{
    const OptDef *def = config_find_option(section, map_key);

    return def && def->type == OPT_MAP && opt_map_name_is_secret(def, name);
}

void config_map_add(ConfigMap *map, const char *name, const char *value)
{
    map->items = xrealloc(map->items, (map->n + 1) * sizeof *map->items);
    map->items[map->n].key = xstrdup(name);
    map->items[map->n].value = xstrdup(value);
    map->n++;
}

void config_map_free(ConfigMap *map)
{
    for (size_t i = 0; i < map->n; i++) {
        free(map->items[i].key);
        free(map->items[i].value);
    }
    free(map->items);
    map->items = NULL;
    map->n = 0;
}

const char *config_map_get(const ConfigMap *map, const char *key)
{
    for (size_t i = 0; i < map->n; i++) {
        if (strcmp(map->items[i].key, key) == 0)
            return map->items[i].value;
    }
    return NULL;
}

void opt_env_name_map_entry(const OptDef *def, const char *name, Buf *out)
{
    opt_env_name(def->section, def->key, out);
    buf_append_char(out, '_');
    for (const char *p = name; *p; p++)
        buf_append_char(out, isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_');
}

const OptDef *config_find_option(const char *section, const char *key)
{
    for (size_t i = 0; i < config_n_options; i++) {
        if (strcmp(config_options[i].section, section) == 0 &&
            strcmp(config_options[i].key, key) == 0)
            return &config_options[i];
    }
    return NULL;
}

/* ---- parsing typed values ---- */

typedef struct Unit {
    const char *name;
    int64_t mult;
} Unit;

/* Largest first: the formatter picks the first unit that divides exactly. */
static const Unit duration_units[] = {
    {"h", US_H}, {"min", US_MIN}, {"s", US_S}, {"ms", US_MS}, {"us", 1}, {NULL, 0},
};
static const Unit size_units[] = {
    {"GB", GB}, {"MB", MB}, {"kB", KB}, {"B", 1}, {NULL, 0},
};

static const Unit *find_unit(const Unit *units, const char *name, size_t len)
{
    for (const Unit *u = units; u->name; u++) {
        if (strlen(u->name) == len && strncasecmp(u->name, name, len) == 0)
            return u;
    }
    return NULL;
}

/*
 * "<digits>[ ]<unit>" with a bare number in def->unit. Only whole numbers:
 * "1.5s" is refused rather than rounded (write 1500ms).
 */
static bool parse_with_unit(const OptDef *def, const char *text, const Unit *units, int64_t *out)
{
    const char *p = text;
    const Unit *unit;
    uint64_t n = 0;
    size_t len;

    if (!isdigit((unsigned char)*p))
        return false;
    while (isdigit((unsigned char)*p)) {
        if (n > (uint64_t)INT64_MAX / 10)
            return false;
        n = n * 10 + (uint64_t)(*p - '0');
        p++;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    len = strlen(p);
    if (len == 0)
        unit = find_unit(units, def->unit, strlen(def->unit));
    else
        unit = find_unit(units, p, len);
    if (unit == NULL || n > (uint64_t)(INT64_MAX / unit->mult))
        return false;
    *out = (int64_t)n * unit->mult;
    return true;
}

static bool parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "on", "yes", "1"};
    static const char *const no[] = {"false", "off", "no", "0"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool parse_int(const char *text, int64_t *out)
{
    char *end;
    long long v;

    if (*text == '\0' || isspace((unsigned char)*text))
        return false;
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = v;
    return true;
}

static void append_choices(Buf *out, const char *const *choices)
{
    for (size_t i = 0; choices[i]; i++)
        buf_printf(out, "%s%s", i ? ", " : "", choices[i]);
}

static void list_add(OptValue *v, const char *start, const char *end)
{
    while (start < end && isspace((unsigned char)*start))
        start++;
    while (end > start && isspace((unsigned char)end[-1]))
        end--;
    v->items = xrealloc(v->items, (v->n_items + 1) * sizeof *v->items);
    v->items[v->n_items++] = xstrndup(start, (size_t)(end - start));
}

/* Splits at commas outside double quotes; an empty element is an error. */
static bool parse_list(const char *text, OptValue *out, OptCheck *why)
{
    const char *start = text;
    bool quoted = false;

    for (const char *p = text;; p++) {
        if (*p == '"')
            quoted = !quoted;
        if (*p == '\0' || (*p == ',' && !quoted)) {
            list_add(out, start, p);
            if (out->items[out->n_items - 1][0] == '\0') {
                if (*p == '\0' && out->n_items == 1)
                    snprintf(why->why, sizeof why->why, "the list is empty");
                else
                    snprintf(why->why, sizeof why->why,
                             "element %zu is empty; remove the extra comma", out->n_items);
                return false;
            }
            if (*p == '\0')
                break;
            start = p + 1;
        }
    }
    if (quoted) {
        snprintf(why->why, sizeof why->why, "unterminated double quote");
        return false;
    }
    return true;
}

bool opt_parse_value(const OptDef *def, const char *text, OptValue *out, OptCheck *why)
{
    Buf choices = BUF_INIT;

    memset(out, 0, sizeof *out);
    why->why[0] = '\0';
    why->hint[0] = '\0';
    switch (def->type) {
    case OPT_STRING:
    case OPT_MAP: /* one entry's value */
        if (text[0] == '\0') {
            snprintf(why->why, sizeof why->why, "the value must not be empty");
            return false;
        }
        out->str = xstrdup(text);
        return true;
    case OPT_BOOL:
        if (parse_bool(text, &out->flag))
            return true;
        snprintf(why->why, sizeof why->why, "expected true or false (or on/off, yes/no, 1/0)");
        return false;
    case OPT_INT:
        if (parse_int(text, &out->num))
            return true;
        snprintf(why->why, sizeof why->why, "expected a whole number such as %s",
                 def->def ? def->def : "100");
        return false;
    case OPT_SIZE:
        if (parse_with_unit(def, text, size_units, &out->num))
            return true;
        snprintf(why->why, sizeof why->why, "expected a size such as 64kB, 8MB or 1GB");
        return false;
    case OPT_DURATION:
        if (parse_with_unit(def, text, duration_units, &out->num))
            return true;
        snprintf(why->why, sizeof why->why, "expected a duration such as 500ms, 10s or 1min");
        return false;
    case OPT_ENUM:
        for (int i = 0; def->choices[i]; i++) {
            if (strcasecmp(text, def->choices[i]) == 0) {
                out->choice = i;
                return true;
            }
        }
        append_choices(&choices, def->choices);
        snprintf(why->why, sizeof why->why, "expected one of: %s", choices.data);
        buf_free(&choices);
        return false;
    case OPT_LIST:
        if (parse_list(text, out, why))
            return true;
        opt_value_free(out);
        return false;
    }
    snprintf(why->why, sizeof why->why, "unsupported option type");
    return false;
}

void opt_value_free(OptValue *v)
{
    free(v->str);
    for (size_t i = 0; i < v->n_items; i++)
        free(v->items[i]);
    free(v->items);
    memset(v, 0, sizeof *v);
}

/* ---- storing and printing ---- */

void opt_format_number(const OptDef *def, int64_t v, Buf *out)
{
    const Unit *units = def->type == OPT_DURATION ? duration_units
                        : def->type == OPT_SIZE   ? size_units
                                                  : NULL;

    if (units == NULL) {
        buf_append_i64(out, v);
        return;
    }
    if (v == 0) {
        buf_printf(out, "0%s", def->unit);
        return;
    }
    /*
     * Small numbers stay in the option's own unit (60s, not 1min, when the
     * option counts seconds); others take the largest exact unit (10min).
     */
    for (const Unit *u = units; u->name; u++) {
        if (strcmp(u->name, def->unit) == 0 && v % u->mult == 0 && v / u->mult < 100) {
            buf_printf(out, "%lld%s", (long long)(v / u->mult), u->name);
            return;
        }
    }
    for (const Unit *u = units; u->name; u++) {
        if (v % u->mult == 0) {
            buf_printf(out, "%lld%s", (long long)(v / u->mult), u->name);
            return;
        }
    }
}

bool opt_store(const OptDef *def, const OptValue *v, Config *cfg, OptCheck *why)
{
    char *field = (char *)cfg + def->offset;

    if (def->set)
        return def->set(cfg, v, why);
    switch (def->type) {
    case OPT_STRING: {
        char **slot = (char **)(void *)field;
        free(*slot);
        *slot = xstrdup(v->str);
        return true;
    }
    case OPT_BOOL:
        *(bool *)(void *)field = v->flag;
        return true;
    case OPT_INT:
    case OPT_SIZE:
        *(size_t *)(void *)field = (size_t)v->num;
        return true;
    case OPT_DURATION:
        *(TimeUs *)(void *)field = v->num;
        return true;
    case OPT_MAP: {
        ConfigMap *map = (ConfigMap *)(void *)field;
        config_map_add(map, v->items[0], v->str);
        return true;
    }
    case OPT_ENUM:
    case OPT_LIST:
        break;
    }
    snprintf(why->why, sizeof why->why, "option has no place to be stored");
    return false;
}

static void redact_uri(const char *dsn, size_t scheme_len, Buf *out);

static void append_secret(const OptDef *def, const char *text, Buf *out)
{
    char *redacted;

    switch (def->secret) {
    case SECRET_NONE:
        buf_append_str(out, text);
        return;
    case SECRET_WHOLE:
        buf_append_str(out, "*****");
        return;
    case SECRET_CONNINFO:
        redacted = config_redact_dsn(text);
        buf_append_str(out, redacted);
        free(redacted);
        return;
    case SECRET_URL:
        if (strstr(text, "://"))
            redact_uri(text, (size_t)(strstr(text, "://") + 3 - text), out);
        else
            buf_append_str(out, text);
        return;
    }
}

static void opt_print_map_value(const OptDef *def, const ConfigPair *pair, Buf *out)
{
    if (opt_map_name_is_secret(def, pair->key))
        buf_append_str(out, "*****");
    else
        buf_append_str(out, pair->value);
}

void opt_print(const OptDef *def, const Config *cfg, Buf *out)
{
    const char *field = (const char *)cfg + def->offset;

    if (def->print) {
        def->print(cfg, out);
        return;
    }
    switch (def->type) {
    case OPT_STRING: {
        const char *s = *(char *const *)(const void *)field;
        append_secret(def, s ? s : "", out);
        return;
    }
    case OPT_BOOL:
        buf_append_str(out, *(const bool *)(const void *)field ? "true" : "false");
        return;
    case OPT_INT:
    case OPT_SIZE: {
        size_t n = *(const size_t *)(const void *)field;
        opt_format_number(def, (int64_t)n, out);
        return;
    }
    case OPT_DURATION:
        opt_format_number(def, *(const TimeUs *)(const void *)field, out);
        return;
    case OPT_MAP: { /* name = value, ...: config_print writes one line per entry */
        const ConfigMap *map = (const ConfigMap *)(const void *)field;
        for (size_t i = 0; i < map->n; i++) {
            buf_printf(out, "%s%s = ", i ? ", " : "", map->items[i].key);
            opt_print_map_value(def, &map->items[i], out);
        }
        return;
    }
    case OPT_ENUM:
    case OPT_LIST:
        break;
    }
}

/* Long values are cut in messages: the line number already says where. */
#define MESSAGE_VALUE_MAX 60

void opt_quote_for_message(const OptDef *def, const char *text, Buf *out)
{
    Buf shown = BUF_INIT;

    if (def)
        append_secret(def, text, &shown);
    else
        buf_append_str(&shown, text);
    buf_append_char(out, '"');
    if (shown.len > MESSAGE_VALUE_MAX) {
        buf_append(out, shown.data, MESSAGE_VALUE_MAX);
        buf_append_str(out, "...");
    } else if (shown.len) {
        buf_append(out, shown.data, shown.len);
    }
    buf_append_char(out, '"');
    buf_free(&shown);
}

void opt_env_name(const char *section, const char *key, Buf *out)
{
    buf_append_str(out, "PGFAN_");
    for (const char *p = section; *p; p++)
        buf_append_char(out, *p == '.' ? '_' : (char)toupper((unsigned char)*p));
    buf_append_char(out, '_');
    for (const char *p = key; *p; p++)
        buf_append_char(out, *p == '.' ? '_' : (char)toupper((unsigned char)*p));
}

void config_print(const Config *cfg, FILE *out)
{
    Buf b = BUF_INIT;

    buf_printf(&b, "; pgfan effective configuration from %s%s\n",
               cfg->path ? cfg->path : "(no file)", ", PGFAN_* environment overrides and defaults");
    buf_append_str(&b, "; secrets are shown as *****\n");
    for (size_t s = 0; s < config_n_sections; s++) {
        const SectionDef *sec = &config_sections[s];

        if (sec->is_sink &&
            !*(const bool *)(const void *)((const char *)cfg + sec->enabled_offset)) {
            buf_printf(&b, "\n; [%s] is not enabled\n", sec->name);
            continue;
        }
        buf_printf(&b, "\n[%s]\n", sec->name);
        for (size_t i = 0; i < config_n_options; i++) {
            if (strcmp(config_options[i].section, sec->name) != 0)
                continue;
            if (config_options[i].type == OPT_MAP) {
                const OptDef *def = &config_options[i];
                const ConfigMap *map =
                    (const ConfigMap *)(const void *)((const char *)cfg + def->offset);
                if (map->n == 0)
                    buf_printf(&b, "; %s.<name> = (none)\n", def->key);
                for (size_t e = 0; e < map->n; e++) {
                    buf_printf(&b, "%s.%s = ", def->key, map->items[e].key);
                    opt_print_map_value(def, &map->items[e], &b);
                    buf_append_char(&b, '\n');
                }
                continue;
            }
            if (config_options[i].optional && config_options[i].type == OPT_STRING &&
                *(char *const *)(const void *)((const char *)cfg + config_options[i].offset) ==
                    NULL) {
                buf_printf(&b, "; %s is not set\n", config_options[i].key);
                continue;
            }
            buf_printf(&b, "%s = ", config_options[i].key);
            opt_print(&config_options[i], cfg, &b);
            buf_append_char(&b, '\n');
        }
    }
    agg_print_defs(cfg, &b);
    fwrite(b.data, 1, b.len, out);
    buf_free(&b);
}

/* ---- conninfo redaction ---- */

#define REDACTED "*****"

/* "...?a=b&password=x&c=d": redacts password values in a URI query. */
static void redact_uri_query(const char *q, Buf *out)
{
    while (*q) {
        const char *amp = strchr(q, '&');
        const char *end = amp ? amp : q + strlen(q);
        const char *eq = memchr(q, '=', (size_t)(end - q));

        if (eq && (size_t)(eq - q) == 8 && strncasecmp(q, "password", 8) == 0) {
            buf_append(out, q, (size_t)(eq - q + 1));
            buf_append_str(out, REDACTED);
        } else {
            buf_append(out, q, (size_t)(end - q));
        }
        if (amp == NULL)
            break;
        buf_append_char(out, '&');
        q = amp + 1;
    }
}

/* postgresql://user:secret@host/db?password=secret */
static void redact_uri(const char *dsn, size_t scheme_len, Buf *out)
{
    const char *auth = dsn + scheme_len;
    size_t auth_len = strcspn(auth, "/?#");
    const char *at = NULL;
    const char *q;

    /* the last '@' of the authority: an unencoded '@' may sit in the password */
    for (const char *p = auth; p < auth + auth_len; p++) {
        if (*p == '@')
            at = p;
    }
    buf_append(out, dsn, scheme_len);
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));

        if (colon) {
            buf_append(out, auth, (size_t)(colon - auth + 1));
            buf_append_str(out, REDACTED);
        } else {
            buf_append(out, auth, (size_t)(at - auth));
        }
        auth = at;
    }
    q = strchr(auth, '?');
    if (q == NULL) {
        buf_append_str(out, auth);
        return;
    }
    buf_append(out, auth, (size_t)(q - auth + 1));
    redact_uri_query(q + 1, out);
}

/*
 * key = value pairs as libpq reads them: spaces around '=', values either
 * bare (up to whitespace) or single-quoted with backslash escapes.
 */
static void redact_keyword_value(const char *dsn, Buf *out)
{
    const char *p = dsn;

    while (*p) {
        const char *key, *val;
        size_t key_len;
        bool secret;

        while (isspace((unsigned char)*p))
            buf_append_char(out, *p++);
        key = p;
        while (*p && *p != '=' && !isspace((unsigned char)*p))
            p++;
        key_len = (size_t)(p - key);
        buf_append(out, key, key_len);
        while (isspace((unsigned char)*p))
            buf_append_char(out, *p++);
        if (*p != '=')
            continue; /* not key=value: copied as is, go on */
        buf_append_char(out, *p++);
        while (isspace((unsigned char)*p))
            buf_append_char(out, *p++);
        secret = key_len == 8 && strncasecmp(key, "password", 8) == 0;
        val = p;
        if (*p == '\'') {
            for (p++; *p && *p != '\''; p++) {
                if (*p == '\\' && p[1])
                    p++;
            }
            if (*p == '\'')
                p++;
        } else {
            while (*p && !isspace((unsigned char)*p)) {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
        }
        if (secret)
            buf_append_str(out, REDACTED);
        else
            buf_append(out, val, (size_t)(p - val));
    }
}

char *config_redact_dsn(const char *dsn)
{
    Buf out = BUF_INIT;

    if (dsn == NULL)
        return NULL;
    if (strncmp(dsn, "postgresql://", 13) == 0)
        redact_uri(dsn, 13, &out);
    else if (strncmp(dsn, "postgres://", 11) == 0)
        redact_uri(dsn, 11, &out);
    else
        redact_keyword_value(dsn, &out);
    if (out.data == NULL)
        return xstrdup("");
    return out.data;
}

/* ---- example config ---- */

/* " (required)", " (1s..1min)", " (never | initial)": the row's limits. */
static void append_limits(const OptDef *def, Buf *b)
{
    if (def->required) {
        buf_append_str(b, " (required)");
    } else if (def->default_from && def->default_from_section) {
        buf_printf(b, " (default: same as %s in [%s])", def->default_from,
                   def->default_from_section);
    } else if (def->default_from) {
        buf_printf(b, " (default: same as %s)", def->default_from);
    } else if (def->type == OPT_MAP) {
        buf_printf(b, " (any number of %s.<name> lines; none by default)", def->key);
    } else if (def->optional) {
        buf_append_str(b, " (optional; not set by default)");
    } else if (def->type == OPT_ENUM) {
        buf_append_str(b, " (");
        for (size_t i = 0; def->choices[i]; i++)
            buf_printf(b, "%s%s", i ? " | " : "", def->choices[i]);
        buf_append_str(b, ")");
    } else if (def->min != 0 || def->max != 0) {
        buf_append_str(b, " (");
        opt_format_number(def, def->min, b);
        buf_append_str(b, "..");
        opt_format_number(def, def->max, b);
        buf_append_str(b, ")");
    }
}

void config_write_example(FILE *out)
{
    Buf b = BUF_INIT;

    buf_append_str(&b,
                   "; pgfan example configuration: every option with its default.\n"
                   ";\n"
                   "; Syntax: [section], key = value; comments start with ';' or '#' at the\n"
                   "; start of a line, or with ' ;' after a value (a ';' inside single quotes,\n"
                   "; as in password='a;b', belongs to the value).\n"
                   "; Durations: us, ms, s, min, h. Sizes: B, kB, MB, GB (1024-based).\n"
                   "; Every key can be set from the environment as PGFAN_<SECTION>_<KEY>,\n"
                   "; which overrides this file: PGFAN_SOURCE_DSN, PGFAN_SINK_FILE_PATH, ...\n"
                   "; Check a file with: pgfan check-config -c pgfan.conf\n"
                   ";\n"
                   "; Generated from the option table in config/options.c; the unit test\n"
                   "; tests/unit/test_config.c fails when the two disagree.\n");
    for (size_t s = 0; s < config_n_sections; s++) {
        const SectionDef *sec = &config_sections[s];

        buf_append_str(&b, "\n; ");
        for (const char *p = sec->desc; *p; p++)
            buf_append_str(&b, *p == '\n' ? "\n; " : (char[2]){*p, '\0'});
        /* other sinks are shown, not enabled: their header is commented out */
        buf_printf(&b, "\n%s[%s]\n", sec->is_sink && !sec->default_sink ? ";" : "", sec->name);
        for (size_t i = 0; i < config_n_options; i++) {
            const OptDef *def = &config_options[i];
            const char *off = sec->is_sink && !sec->default_sink ? ";" : "";

            if (strcmp(def->section, sec->name) != 0)
                continue;
            buf_append_str(&b, "; ");
            for (const char *p = def->desc; *p; p++)
                buf_append_str(&b, *p == '\n' ? "\n; " : (char[2]){*p, '\0'});
            append_limits(def, &b);
            if (def->reloadable)
                buf_append_str(&b, " (reloaded on SIGHUP)");
            buf_append_char(&b, '\n');
            if (def->type == OPT_MAP) {
                buf_printf(&b, ";%s.%s\n", def->key, def->example);
            } else if (def->optional) {
                buf_printf(&b, ";%s = %s\n", def->key, def->example);
            } else if (def->default_from) {
                const OptDef *from = config_find_option(
                    def->default_from_section ? def->default_from_section : def->section,
                    def->default_from);
                buf_printf(&b, ";%s = %s\n", def->key, from && from->def ? from->def : "");
            } else if (*off) {
                buf_printf(&b, "%s%s = %s\n", off, def->key, def->def ? def->def : def->example);
            } else {
                buf_printf(&b, "%s = %s\n", def->key, def->def ? def->def : def->example);
            }
        }
    }
    fwrite(b.data, 1, b.len, out);
    buf_free(&b);
}
