/*
 * test_config.c - the option table, INI parsing, environment overrides,
 * validation messages, config_print and config_redact_dsn.
 *
 * Run with --write-example PATH to regenerate deploy/pgfan.conf.example
 * from the option table (test_example_matches_table says when to).
 */
#include "../../config/config.h"
#include "../../config/internal.h"

#include "../../common/mem.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SOURCE_ROOT
#define SOURCE_ROOT "." /* meson passes the real one; "." works from the repository root */
#endif
#define DATA_DIR SOURCE_ROOT "/tests/data/config"
#define EXAMPLE_PATH SOURCE_ROOT "/deploy/pgfan.conf.example"

extern char **environ;

#define MINIMAL "[source]\ndsn = host=h dbname=shop\ntables = orders\n"

/* ---- helpers ---- */

/* Every test starts with no PGFAN_* variable, whatever the caller's shell has. */
static void clean_env(void)
{
    char *names[256];
    size_t n = 0;

    for (char **e = environ; e && *e && n < 256; e++) {
        if (strncmp(*e, "PGFAN_", 6) == 0)
            names[n++] = xstrndup(*e, strcspn(*e, "="));
    }
    for (size_t i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
}

/* Writes text to a new temp file; returns its path (caller frees and unlinks). */
static char *write_temp(const char *text, size_t len)
{
    char *path = xstrdup("/tmp/pgfan_test_config_XXXXXX");
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

/* Loads text as a config file named by its temp path. */
static bool load_text(const char *text, Config **cfg, PfError *err)
{
    char *path = write_temp(text, strlen(text));
    bool ok = config_load(path, cfg, err);

    unlink(path);
    free(path);
    return ok;
}

static Config *load_ok(const char *text)
{
    Config *cfg = NULL;
    PfError err;

    ck_assert_msg(load_text(text, &cfg, &err), "load failed: %s", err.msg);
    ck_assert_int_eq(err.kind, ERR_NONE);
    return cfg;
}

/*
 * Loads text expecting failure; returns the message with the temp file's
 * name replaced by "pgfan.conf", as users would see it for that file.
 */
static char *load_fail(const char *text, PfError *err)
{
    char *path = write_temp(text, strlen(text));
    Config *cfg = (Config *)1;
    Buf out = BUF_INIT;
    size_t plen = strlen(path);

    ck_assert(!config_load(path, &cfg, err));
    ck_assert_ptr_null(cfg);
    ck_assert_int_eq(err->kind, ERR_CONFIG);
    for (const char *p = err->msg; *p;) {
        if (strncmp(p, path, plen) == 0) {
            buf_append_str(&out, "pgfan.conf");
            p += plen;
        } else {
            buf_append_char(&out, *p++);
        }
    }
    unlink(path);
    free(path);
    return out.data ? out.data : xstrdup("");
}

/* Asserts a single-problem load failure with exactly this message. */
static void expect_error(const char *text, const char *msg)
{
    PfError err;
    char *got = load_fail(text, &err);

    ck_assert_str_eq(got, msg);
    free(got);
}

static char *print_to_string(const Config *cfg)
{
    char *data = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&data, &len);

    config_print(cfg, f);
    fclose(f);
    return data;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    Buf b = BUF_INIT;
    char chunk[4096];
    size_t n;

    ck_assert_msg(f != NULL, "cannot open %s", path);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, n);
    fclose(f);
    return b.data ? b.data : xstrdup("");
}

/* ---- defaults ---- */

START_TEST(test_defaults)
{
    Config *cfg = load_ok(MINIMAL);

    ck_assert_str_eq(cfg->source.dsn, "host=h dbname=shop");
    ck_assert_str_eq(cfg->source.slot, "pgfan");
    ck_assert_str_eq(cfg->source.name, "pgfan");
    ck_assert_uint_eq(cfg->source.n_tables, 1);
    ck_assert_str_eq(cfg->source.tables[0].schema, "public");
    ck_assert_str_eq(cfg->source.tables[0].table, "orders");
    ck_assert_int_eq(cfg->source.snapshot, SNAPSHOT_NEVER);
    ck_assert_int_eq(cfg->source.status_interval, 10 * USECS_PER_SEC);
    ck_assert_int_eq(cfg->source.reconnect_min, 1 * USECS_PER_SEC);
    ck_assert_int_eq(cfg->source.reconnect_max, 30 * USECS_PER_SEC);
    ck_assert_uint_eq(cfg->source.max_inflight_txns, 100000);
    ck_assert_int_eq(cfg->source.shutdown_timeout, 60 * USECS_PER_SEC);
    ck_assert_str_eq(cfg->status.socket, "/run/pgfan/status.sock");
    ck_assert_int_eq(cfg->log.level, LOG_LEVEL_INFO);
    ck_assert(cfg->file.enabled); /* no sink section: the file sink with defaults */
    ck_assert(config_sink_enabled(cfg, "file"));
    ck_assert(!config_sink_enabled(cfg, "nosuchsink"));
    ck_assert_str_eq(cfg->file.path, "changes.ndjson");
    ck_assert_int_eq(cfg->file.fsync_interval, 100 * USECS_PER_MSEC);
    ck_assert_uint_eq(cfg->file.max_buffer_bytes, 8 * 1024 * 1024);
    ck_assert_ptr_nonnull(cfg->path);
    config_free(cfg);
}
END_TEST

START_TEST(test_name_follows_slot)
{
    Config *cfg = load_ok(MINIMAL "slot = shop_1\n");

    ck_assert_str_eq(cfg->source.slot, "shop_1");
    ck_assert_str_eq(cfg->source.name, "shop_1");
    config_free(cfg);
    cfg = load_ok(MINIMAL "slot = shop_1\nname = Shop Server\n");
    ck_assert_str_eq(cfg->source.name, "Shop Server");
    config_free(cfg);
}
END_TEST

START_TEST(test_good_file)
{
    Config *cfg = NULL;
    PfError err;

    ck_assert_msg(config_load(DATA_DIR "/good.conf", &cfg, &err), "%s", err.msg);
    ck_assert_str_eq(cfg->source.dsn,
                     "host=127.0.0.1 port=5432 dbname=shop user=pgfan password='se;cr et'");
    ck_assert_str_eq(cfg->source.slot, "shop_cdc");
    ck_assert_str_eq(cfg->source.name, "shop");
    ck_assert_uint_eq(cfg->source.n_tables, 4);
    ck_assert_str_eq(cfg->source.tables[1].schema, "public");
    ck_assert_str_eq(cfg->source.tables[1].table, "customers");
    ck_assert_str_eq(cfg->source.tables[2].table, "Order Items");
    ck_assert_str_eq(cfg->source.tables[3].schema, "sales");
    ck_assert_str_eq(cfg->source.tables[3].table, "odd,name.x");
    ck_assert_int_eq(cfg->source.status_interval, 5 * USECS_PER_SEC);
    ck_assert_int_eq(cfg->source.reconnect_min, 250 * USECS_PER_MSEC);
    ck_assert_int_eq(cfg->source.reconnect_max, 120 * USECS_PER_SEC);
    ck_assert_uint_eq(cfg->source.max_inflight_txns, 5000);
    ck_assert_int_eq(cfg->source.shutdown_timeout, 3600 * USECS_PER_SEC);
    ck_assert_str_eq(cfg->status.socket, "/tmp/pgfan-test.sock");
    ck_assert_int_eq(cfg->log.level, LOG_LEVEL_WARNING);
    ck_assert(cfg->file.enabled);
    ck_assert_str_eq(cfg->file.path, "out/changes #1.ndjson"); /* '#' inline is data */
    ck_assert_int_eq(cfg->file.fsync_interval, 0);
    ck_assert_uint_eq(cfg->file.max_buffer_bytes, 16 * 1024 * 1024);
    config_free(cfg);
}
END_TEST

START_TEST(test_bad_file_reports_everything)
{
    static const char want[] =
        "bad.conf:3: invalid value \"Shop-CDC\" for slot in [source]: a slot name may "
        "only contain lower case letters, digits and underscores\n"
        "bad.conf:4: unknown key \"tabels\" in [source]; did you mean \"tables\"?\n"
        "bad.conf:5: invalid value \"10 parsecs\" for status_interval in [source]: "
        "expected a duration such as 500ms, 10s or 1min\n"
        "bad.conf:6: reconnect_min in [source] must be between 100ms and 60s (got "
        "90s)\n"
        "bad.conf:7: invalid value \"public.orders, , public.stores\" for tables in "
        "[source]: element 2 is empty; remove the extra comma\n"
        "bad.conf:8: duplicate key \"tables\" in [source] (first set on line 7); keep "
        "only one\n"
        "bad.conf:10: unknown section [sorce]; did you mean [source]? known sections: "
        "source, status, log, sink.file, sink.kafka, sink.webhook, sink.elasticsearch, "
        "sink.aggregates, aggregate.<name>\n"
        "bad.conf:13: unknown sink [sink.fiel]; did you mean [sink.file]? known sinks: "
        "file, kafka, webhook, elasticsearch, aggregates";
    PfError err;
    Config *cfg = NULL;
    char *cwd = getcwd(NULL, 0);
    bool loaded;

    /* a relative name, as users type it, keeps the 8 lines within ERR_MSG_SIZE */
    ck_assert_int_eq(chdir(DATA_DIR), 0);
    loaded = config_load("bad.conf", &cfg, &err);
    ck_assert_int_eq(chdir(cwd), 0);
    free(cwd);
    ck_assert(!loaded);
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_msg(strcmp(err.msg, want) == 0, "got:\n%s", err.msg);
    ck_assert_ptr_null(cfg);
}
END_TEST

START_TEST(test_example_loads)
{
    Config *cfg = NULL;
    PfError err;

    ck_assert_msg(config_load(EXAMPLE_PATH, &cfg, &err), "%s", err.msg);
    ck_assert_str_eq(cfg->source.name, "pgfan");
    ck_assert_uint_eq(cfg->source.n_tables, 3);
    ck_assert(cfg->file.enabled);
    config_free(cfg);
}
END_TEST

START_TEST(test_example_matches_table)
{
    char *want = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&want, &len);
    char *have = slurp(EXAMPLE_PATH);

    config_write_example(f);
    fclose(f);
    ck_assert_msg(strcmp(want, have) == 0,
                  "deploy/pgfan.conf.example is out of date with the option table; regenerate "
                  "it: test_config --write-example deploy/pgfan.conf.example");
    free(want);
    free(have);
}
END_TEST

/* Every default goes through the row's own parser, range check and validator. */
START_TEST(test_table_rows_are_consistent)
{
    for (size_t i = 0; i < config_n_options; i++) {
        const OptDef *def = &config_options[i];
        OptValue v;
        OptCheck why;

        ck_assert_ptr_nonnull(config_find_section(def->section));
        ck_assert_ptr_nonnull(def->desc);
        ck_assert_msg(def->def || def->required || def->default_from || def->optional ||
                          def->type == OPT_MAP,
                      "%s has no default",
                      def->key);
        if (def->required)
            ck_assert_ptr_nonnull(def->example);
        if (def->def == NULL)
            continue;
        ck_assert_msg(opt_parse_value(def, def->def, &v, &why), "%s: %s", def->key, why.why);
        ck_assert_msg(opt_check_range(def, &v, &why), "%s: %s", def->key, why.why);
        if (def->validate)
            ck_assert_msg(def->validate(&v, &why), "%s: %s", def->key, why.why);
        opt_value_free(&v);
    }
}
END_TEST

/* ---- value types ---- */

START_TEST(test_durations)
{
    Config *cfg = load_ok(MINIMAL "status_interval = 1500ms\nreconnect_min = 100 ms\n"
                                  "reconnect_max = 10min\nshutdown_timeout = 1H\n"
                                  "[sink.file]\nfsync_interval = 250\n");

    ck_assert_int_eq(cfg->source.status_interval, 1500 * USECS_PER_MSEC);
    ck_assert_int_eq(cfg->source.reconnect_min, 100 * USECS_PER_MSEC);
    ck_assert_int_eq(cfg->source.reconnect_max, 600 * USECS_PER_SEC);
    ck_assert_int_eq(cfg->source.shutdown_timeout, 3600 * USECS_PER_SEC);
    ck_assert_int_eq(cfg->file.fsync_interval, 250 * USECS_PER_MSEC); /* bare: ms */
    config_free(cfg);
    cfg = load_ok(MINIMAL "status_interval = 2000000us\n");
    ck_assert_int_eq(cfg->source.status_interval, 2 * USECS_PER_SEC);
    config_free(cfg);
}
END_TEST

START_TEST(test_duration_errors)
{
    expect_error(MINIMAL "status_interval = 10 parsecs\n",
                 "pgfan.conf:4: invalid value \"10 parsecs\" for status_interval in [source]: "
                 "expected a duration such as 500ms, 10s or 1min");
    expect_error(MINIMAL "status_interval = 1.5s\n",
                 "pgfan.conf:4: invalid value \"1.5s\" for status_interval in [source]: "
                 "expected a duration such as 500ms, 10s or 1min");
    expect_error(MINIMAL "status_interval = -5s\n",
                 "pgfan.conf:4: invalid value \"-5s\" for status_interval in [source]: "
                 "expected a duration such as 500ms, 10s or 1min");
    expect_error(MINIMAL "status_interval = 99999999999999999h\n",
                 "pgfan.conf:4: invalid value \"99999999999999999h\" for status_interval in "
                 "[source]: expected a duration such as 500ms, 10s or 1min");
    expect_error(MINIMAL "status_interval = 90s\n",
                 "pgfan.conf:4: status_interval in [source] must be between 1s and 60s (got 90s)");
    expect_error(MINIMAL "status_interval = 500ms\n",
                 "pgfan.conf:4: status_interval in [source] must be between 1s and 60s (got "
                 "500ms)");
    expect_error(MINIMAL "shutdown_timeout = 2h\n",
                 "pgfan.conf:4: shutdown_timeout in [source] must be between 1s and 1h (got 2h)");
    expect_error(MINIMAL "[sink.file]\nfsync_interval = 11s\n",
                 "pgfan.conf:5: fsync_interval in [sink.file] must be between 0ms and 10s (got "
                 "11s)");
}
END_TEST

START_TEST(test_sizes)
{
    Config *cfg = load_ok(MINIMAL "[sink.file]\nmax_buffer = 64kB\n");

    ck_assert_uint_eq(cfg->file.max_buffer_bytes, 64 * 1024);
    config_free(cfg);
    cfg = load_ok(MINIMAL "[sink.file]\nmax_buffer = 1GB\n");
    ck_assert_uint_eq(cfg->file.max_buffer_bytes, 1024 * 1024 * 1024);
    config_free(cfg);
    cfg = load_ok(MINIMAL "[sink.file]\nmax_buffer = 1048576\n"); /* bare: bytes */
    ck_assert_uint_eq(cfg->file.max_buffer_bytes, 1024 * 1024);
    config_free(cfg);
    cfg = load_ok(MINIMAL "[sink.file]\nmax_buffer = 3 mb\n");
    ck_assert_uint_eq(cfg->file.max_buffer_bytes, 3 * 1024 * 1024);
    config_free(cfg);

    expect_error(MINIMAL "[sink.file]\nmax_buffer = 8 MiB\n",
                 "pgfan.conf:5: invalid value \"8 MiB\" for max_buffer in [sink.file]: expected "
                 "a size such as 64kB, 8MB or 1GB");
    expect_error(MINIMAL "[sink.file]\nmax_buffer = 2GB\n",
                 "pgfan.conf:5: max_buffer in [sink.file] must be between 64kB and 1GB (got 2GB)");
    expect_error(MINIMAL "[sink.file]\nmax_buffer = 1000B\n",
                 "pgfan.conf:5: max_buffer in [sink.file] must be between 64kB and 1GB (got "
                 "1000B)");
}
END_TEST

START_TEST(test_ints)
{
    Config *cfg = load_ok(MINIMAL "max_inflight_transactions = 10000000\n");

    ck_assert_uint_eq(cfg->source.max_inflight_txns, 10000000);
    config_free(cfg);
    expect_error(MINIMAL "max_inflight_transactions = lots\n",
                 "pgfan.conf:4: invalid value \"lots\" for max_inflight_transactions in "
                 "[source]: expected a whole number such as 100000");
    expect_error(MINIMAL "max_inflight_transactions = 1e6\n",
                 "pgfan.conf:4: invalid value \"1e6\" for max_inflight_transactions in "
                 "[source]: expected a whole number such as 100000");
    expect_error(MINIMAL "max_inflight_transactions = 99\n",
                 "pgfan.conf:4: max_inflight_transactions in [source] must be between 100 and "
                 "10000000 (got 99)");
    expect_error(MINIMAL "max_inflight_transactions = -1\n",
                 "pgfan.conf:4: max_inflight_transactions in [source] must be between 100 and "
                 "10000000 (got -1)");
}
END_TEST

START_TEST(test_enums)
{
    Config *cfg = load_ok(MINIMAL "[log]\nlevel = debug\n");

    ck_assert_int_eq(cfg->log.level, LOG_LEVEL_DEBUG);
    config_free(cfg);
    cfg = load_ok(MINIMAL "snapshot = never\n[log]\nlevel = ERROR\n");
    ck_assert_int_eq(cfg->log.level, LOG_LEVEL_ERROR);
    ck_assert_int_eq(cfg->source.snapshot, SNAPSHOT_NEVER);
    config_free(cfg);
    expect_error(MINIMAL "[log]\nlevel = verbose\n",
                 "pgfan.conf:5: invalid value \"verbose\" for level in [log]: expected one of: "
                 "debug, info, warning, error");
    expect_error(MINIMAL "snapshot = sometimes\n",
                 "pgfan.conf:4: invalid value \"sometimes\" for snapshot in [source]: expected "
                 "one of: never, initial");
}
END_TEST

START_TEST(test_snapshot_initial)
{
    Config *cfg = load_ok(MINIMAL "snapshot = initial\nsnapshot_workers = 4\n"
                                  "state_dir = /var/lib/pgfan\n");

    ck_assert_int_eq(cfg->source.snapshot, SNAPSHOT_INITIAL);
    ck_assert_uint_eq(cfg->source.snapshot_workers, 4);
    ck_assert_str_eq(cfg->source.state_dir, "/var/lib/pgfan");
    config_free(cfg);
    cfg = load_ok(MINIMAL);
    ck_assert_uint_eq(cfg->source.snapshot_workers, 2);
    ck_assert_str_eq(cfg->source.state_dir, ".");
    config_free(cfg);
    expect_error(MINIMAL "snapshot_workers = 0\n",
                 "pgfan.conf:4: snapshot_workers in [source] must be between 1 and 32 (got 0)");
}
END_TEST

/* No row is a bool or a whole secret yet: test the types on rows made here. */
START_TEST(test_bool_and_secret_types)
{
    static const OptDef flag = {.section = "test", .key = "flag", .type = OPT_BOOL};
    static const OptDef secret = {
        .section = "test", .key = "token", .type = OPT_STRING, .secret = SECRET_WHOLE};
    static const char *const yes[] = {"true", "on", "YES", "1"};
    static const char *const no[] = {"false", "Off", "no", "0"};
    OptValue v;
    OptCheck why;
    Buf b = BUF_INIT;

    for (size_t i = 0; i < 4; i++) {
        ck_assert(opt_parse_value(&flag, yes[i], &v, &why));
        ck_assert(v.flag);
        ck_assert(opt_parse_value(&flag, no[i], &v, &why));
        ck_assert(!v.flag);
    }
    ck_assert(!opt_parse_value(&flag, "maybe", &v, &why));
    ck_assert_str_eq(why.why, "expected true or false (or on/off, yes/no, 1/0)");

    ck_assert(opt_parse_value(&secret, "hunter2", &v, &why));
    opt_quote_for_message(&secret, v.str, &b);
    ck_assert_str_eq(b.data, "\"*****\"");
    opt_value_free(&v);
    buf_free(&b);
}
END_TEST

START_TEST(test_strings)
{
    expect_error(MINIMAL "slot =\n",
                 "pgfan.conf:4: invalid value \"\" for slot in [source]: the value must not be "
                 "empty");
    expect_error(MINIMAL "[status]\nsocket = ; nothing\n",
                 "pgfan.conf:5: invalid value \"\" for socket in [status]: the value must not be "
                 "empty");
}
END_TEST

START_TEST(test_slot_names)
{
    PfError err;
    char long_slot[80];
    char text[256];
    char *msg;

    memset(long_slot, 'a', 64);
    long_slot[64] = '\0';
    snprintf(text, sizeof text, MINIMAL "slot = %s\n", long_slot);
    msg = load_fail(text, &err);
    ck_assert_str_eq(msg, "pgfan.conf:4: invalid value "
                          "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" "
                          "for slot in [source]: a slot name is at most 63 characters (got 64)");
    ck_assert_str_eq(err.hint, "PostgreSQL replication slot names are 1 to 63 characters of "
                               "a-z, 0-9 and _ (for example pgfan_shop)");
    free(msg);
    msg = load_fail(MINIMAL "slot = pgfan-1\n", &err);
    ck_assert_str_eq(msg, "pgfan.conf:4: invalid value \"pgfan-1\" for slot in [source]: a slot "
                          "name may only contain lower case letters, digits and underscores");
    free(msg);

    long_slot[63] = '\0';
    snprintf(text, sizeof text, MINIMAL "slot = %s\n", long_slot);
    Config *cfg = load_ok(text);
    ck_assert_uint_eq(strlen(cfg->source.slot), 63);
    config_free(cfg);
}
END_TEST

START_TEST(test_reconnect_order)
{
    PfError err;
    char *msg;

    expect_error(MINIMAL "reconnect_min = 20s\nreconnect_max = 10s\n",
                 "pgfan.conf:5: reconnect_max in [source] (10s) must not be less than "
                 "reconnect_min (20s); raise reconnect_max or lower reconnect_min");
    /* only reconnect_min was set: the blame goes to its line */
    msg = load_fail(MINIMAL "reconnect_min = 45s\n", &err);
    ck_assert_str_eq(msg, "pgfan.conf:4: reconnect_max in [source] (30s) must not be less than "
                          "reconnect_min (45s); raise reconnect_max or lower reconnect_min");
    free(msg);
    Config *cfg = load_ok(MINIMAL "reconnect_min = 5s\nreconnect_max = 5s\n");
    config_free(cfg);
}
END_TEST

/* ---- syntax ---- */

START_TEST(test_unknown_key)
{
    PfError err;
    char *msg = load_fail(MINIMAL "tabels = x\n", &err);

    ck_assert_str_eq(msg, "pgfan.conf:4: unknown key \"tabels\" in [source]; did you mean "
                          "\"tables\"?");
    ck_assert_str_eq(err.hint, "tables in [source]: tables to capture: schema.table, ... (no "
                               "schema: public; \"quote\" odd names)");
    free(msg);
    expect_error(MINIMAL "statusinterval = 1s\n",
                 "pgfan.conf:4: unknown key \"statusinterval\" in [source]; did you mean "
                 "\"status_interval\"?");
    expect_error(MINIMAL "max_inflight = 5\n", /* a prefix */
                 "pgfan.conf:4: unknown key \"max_inflight\" in [source]; did you mean "
                 "\"max_inflight_transactions\"?");
    expect_error(MINIMAL "[status]\ncolour = blue\n",
                 "pgfan.conf:5: unknown key \"colour\" in [status]; known keys: socket, "
                 "metrics_listen");
}
END_TEST

START_TEST(test_unknown_section_and_sink)
{
    expect_error(MINIMAL "[sorce]\nslot = x\n",
                 "pgfan.conf:4: unknown section [sorce]; did you mean [source]? known sections: "
                 "source, status, log, sink.file, sink.kafka, sink.webhook, sink.elasticsearch, "
                 "sink.aggregates, aggregate.<name>");
    expect_error(MINIMAL "[metrics]\n",
                 "pgfan.conf:4: unknown section [metrics]; known sections: source, status, log, "
                 "sink.file, sink.kafka, sink.webhook, sink.elasticsearch, sink.aggregates, "
                 "aggregate.<name>");
    expect_error(MINIMAL "[sink.redis]\nurl = x\n",
                 "pgfan.conf:4: unknown sink [sink.redis]; known sinks: file, kafka, "
                 "webhook, elasticsearch, aggregates");
    expect_error(MINIMAL "[sink.flie]\n",
                 "pgfan.conf:4: unknown sink [sink.flie]; did you mean [sink.file]? known sinks: "
                 "file, kafka, webhook, elasticsearch, aggregates");
}
END_TEST

START_TEST(test_duplicate_key)
{
    expect_error("[source]\ndsn = a\ntables = x\n\n[log]\nlevel = info\n[source]\ndsn = b\n",
                 "pgfan.conf:8: duplicate key \"dsn\" in [source] (first set on line 2); keep "
                 "only one");
}
END_TEST

START_TEST(test_missing_required)
{
    PfError err;
    char *msg = load_fail("[source]\nslot = x\n", &err);

    ck_assert_str_eq(msg, "pgfan.conf: missing required key \"dsn\" in [source]; set it in the "
                          "file or with PGFAN_SOURCE_DSN\npgfan.conf: missing required key "
                          "\"tables\" in [source]; set it in the file or with "
                          "PGFAN_SOURCE_TABLES");
    ck_assert_str_eq(err.hint, "dsn in [source]: libpq connection string or postgresql:// URI; "
                               "its password is never printed\ntables in [source]: tables to "
                               "capture: schema.table, ... (no schema: public; \"quote\" odd "
                               "names)");
    free(msg);
    /* an empty file is the same */
    msg = load_fail("", &err);
    ck_assert_ptr_nonnull(strstr(msg, "missing required key \"dsn\""));
    free(msg);
}
END_TEST

START_TEST(test_syntax_errors)
{
    expect_error("dsn = x\n" MINIMAL,
                 "pgfan.conf:1: key \"dsn\" is outside any section; put it under a header such "
                 "as [source]");
    expect_error(MINIMAL "just words\n",
                 "pgfan.conf:4: expected \"key = value\" or \"[section]\", got \"just words\"");
    expect_error(MINIMAL "[log\n",
                 "pgfan.conf:4: unterminated section header \"[log\"; expected [name]");
    expect_error(MINIMAL "[log] level = info\n",
                 "pgfan.conf:4: unexpected text \"level = info\" after section header [log]");
    expect_error(MINIMAL "= value\n", "pgfan.conf:4: missing key before '='");
}
END_TEST

START_TEST(test_nul_byte)
{
    static const char text[] = MINIMAL "slot = a\0b\n";
    char *path = write_temp(text, sizeof text - 1);
    Config *cfg = NULL;
    PfError err;
    char want[512];

    ck_assert(!config_load(path, &cfg, &err));
    snprintf(want, sizeof want, "%s:4: line contains a NUL byte", path);
    ck_assert_str_eq(err.msg, want);
    unlink(path);
    free(path);
}
END_TEST

START_TEST(test_comments_and_header_forms)
{
    Config *cfg = load_ok("; comment\n# comment\n  ; indented comment\n\n"
                          "[ source ]   ; header comment\n"
                          "dsn=host=h\n"
                          "tables = orders ; trailing\n"
                          "slot = abc\t; tab before the comment\n"
                          "name = a;b\n" /* no whitespace before ';': data */
                          "[log] # hash comment after a header\n"
                          "level = warning\n");

    ck_assert_str_eq(cfg->source.dsn, "host=h");
    ck_assert_str_eq(cfg->source.slot, "abc");
    ck_assert_str_eq(cfg->source.name, "a;b");
    config_free(cfg);
    expect_error(MINIMAL "[log]\nlevel = warning # not a comment\n",
                 "pgfan.conf:5: invalid value \"warning # not a comment\" for level in [log]: "
                 "expected one of: debug, info, warning, error");
}
END_TEST

START_TEST(test_all_problems_reported)
{
    PfError err;
    char *msg = load_fail("[source]\ndsn = x\ntables = t\nslot = A\nstatus_interval = x\n"
                          "[log]\nlevel = loud\nlevl = info\n",
                          &err);

    ck_assert_str_eq(msg, "pgfan.conf:4: invalid value \"A\" for slot in [source]: a slot name "
                          "may only contain lower case letters, digits and underscores\n"
                          "pgfan.conf:5: invalid value \"x\" for status_interval in [source]: "
                          "expected a duration such as 500ms, 10s or 1min\n"
                          "pgfan.conf:7: invalid value \"loud\" for level in [log]: expected one "
                          "of: debug, info, warning, error\n"
                          "pgfan.conf:8: unknown key \"levl\" in [log]; did you mean \"level\"?");
    free(msg);
}
END_TEST

START_TEST(test_many_problems_truncated)
{
    Buf text = BUF_INIT;
    PfError err;
    char *msg;

    buf_append_str(&text, MINIMAL);
    for (int i = 0; i < 40; i++)
        buf_printf(&text, "bogus_key_%02d = 1\n", i);
    msg = load_fail(text.data, &err);
    ck_assert_uint_lt(strlen(err.msg), ERR_MSG_SIZE);
    ck_assert_ptr_nonnull(strstr(msg, "pgfan.conf:4: unknown key \"bogus_key_00\" in [source]"));
    ck_assert_ptr_nonnull(strstr(err.msg, " more problems"));
    ck_assert_ptr_nonnull(strstr(err.msg, "\n... and "));
    free(msg);
    buf_free(&text);
}
END_TEST

START_TEST(test_missing_file)
{
    Config *cfg = (Config *)1;
    PfError err;

    ck_assert(!config_load("/nonexistent/pgfan.conf", &cfg, &err));
    ck_assert_ptr_null(cfg);
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg,
                     "could not open config file \"/nonexistent/pgfan.conf\": No such file or "
                     "directory");
    ck_assert(!config_load("/tmp", &cfg, &err)); /* opens, but cannot be read */
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, "could not read config file \"/tmp\": Is a directory");
}
END_TEST

START_TEST(test_dsn_with_quoted_semicolon)
{
    Config *cfg = load_ok("[source]\n"
                          "dsn = host=127.0.0.1 port=5432 dbname=shop user=pgfan password='a;b' "
                          "; the password has a ';'\n"
                          "tables = orders\n");

    ck_assert_str_eq(cfg->source.dsn,
                     "host=127.0.0.1 port=5432 dbname=shop user=pgfan password='a;b'");
    config_free(cfg);
    cfg = load_ok("[source]\ndsn = password='x ;y \\' ;z' user=u ; comment\ntables = t\n");
    ck_assert_str_eq(cfg->source.dsn, "password='x ;y \\' ;z' user=u");
    config_free(cfg);
    /* a quote inside a bare word is a literal character, as in libpq */
    cfg = load_ok("[source]\ndsn = password=it's ; comment\ntables = t\n");
    ck_assert_str_eq(cfg->source.dsn, "password=it's");
    config_free(cfg);
}
END_TEST

START_TEST(test_long_lines)
{
    Buf text = BUF_INIT;
    Buf dsn = BUF_INIT;
    Config *cfg;

    buf_append_str(&dsn, "host=127.0.0.1 dbname=shop options='");
    while (dsn.len < 499)
        buf_append_char(&dsn, 'x');
    buf_append_char(&dsn, '\'');
    buf_printf(&text, "[source]\ndsn = %s\ntables = orders\n", dsn.data);
    cfg = load_ok(text.data);
    ck_assert_uint_eq(strlen(cfg->source.dsn), 500);
    ck_assert_str_eq(cfg->source.dsn, dsn.data);
    config_free(cfg);

    /* an error on the line after a long line still names the right line */
    buf_append_str(&text, "slot = BAD\n");
    expect_error(text.data, "pgfan.conf:4: invalid value \"BAD\" for slot in [source]: a slot "
                            "name may only contain lower case letters, digits and underscores");
    buf_free(&text);
    buf_free(&dsn);
}
END_TEST

START_TEST(test_crlf_and_bom)
{
    Config *cfg = load_ok("\xEF\xBB\xBF[source]\r\ndsn = host=h\r\ntables = a, b\r\n"
                          "slot = s1 ; c\r\n[log]\r\nlevel = debug\r\n");

    ck_assert_str_eq(cfg->source.dsn, "host=h");
    ck_assert_uint_eq(cfg->source.n_tables, 2);
    ck_assert_str_eq(cfg->source.tables[1].table, "b");
    ck_assert_str_eq(cfg->source.slot, "s1");
    ck_assert_int_eq(cfg->log.level, LOG_LEVEL_DEBUG);
    config_free(cfg);
    expect_error("[source]\r\ndsn = h\r\ntables = t\r\nslot = x-y\r\n",
                 "pgfan.conf:4: invalid value \"x-y\" for slot in [source]: a slot name may only "
                 "contain lower case letters, digits and underscores");
}
END_TEST

/* ---- tables ---- */

static Config *load_tables(const char *tables)
{
    char text[1024];

    snprintf(text, sizeof text, "[source]\ndsn = h\ntables = %s\n", tables);
    return load_ok(text);
}

static void expect_tables_error(const char *tables, const char *why)
{
    char text[1024];
    char want[1024];

    snprintf(text, sizeof text, "[source]\ndsn = h\ntables = %s\n", tables);
    snprintf(want, sizeof want, "pgfan.conf:3: invalid value \"%s\" for tables in [source]: %s",
             tables, why);
    expect_error(text, want);
}

START_TEST(test_tables)
{
    Config *cfg = load_tables("public.orders, sales.stores,customers , Orders2, \"Order Items\", "
                              "\"public\".\"a.b, c\", \"x\"\"y\".\"t\"");

    ck_assert_uint_eq(cfg->source.n_tables, 7);
    ck_assert_str_eq(cfg->source.tables[0].schema, "public");
    ck_assert_str_eq(cfg->source.tables[0].table, "orders");
    ck_assert_str_eq(cfg->source.tables[1].schema, "sales");
    ck_assert_str_eq(cfg->source.tables[1].table, "stores");
    ck_assert_str_eq(cfg->source.tables[2].schema, "public");
    ck_assert_str_eq(cfg->source.tables[2].table, "customers");
    ck_assert_str_eq(cfg->source.tables[3].table, "orders2"); /* folded, as PostgreSQL does */
    ck_assert_str_eq(cfg->source.tables[4].schema, "public");
    ck_assert_str_eq(cfg->source.tables[4].table, "Order Items");
    ck_assert_str_eq(cfg->source.tables[5].table, "a.b, c");
    ck_assert_str_eq(cfg->source.tables[6].schema, "x\"y");
    ck_assert_str_eq(cfg->source.tables[6].table, "t");
    config_free(cfg);
}
END_TEST

START_TEST(test_table_errors)
{
    expect_tables_error("public.orders,", "element 2 is empty; remove the extra comma");
    expect_tables_error("a, ,b", "element 2 is empty; remove the extra comma");
    expect_tables_error(",a", "element 1 is empty; remove the extra comma");
    expect_tables_error("public.orders, orders",
                        "public.orders is listed twice (elements 1 and 2)");
    expect_tables_error("\"Order Items\", public.\"Order Items\"",
                        "public.\"Order Items\" is listed twice (elements 1 and 2)");
    expect_tables_error("db.public.orders", "db.public.orders: too many dots; expected "
                                            "schema.table");
    expect_tables_error("public.order items",
                        "public.order items: unquoted names may only contain letters, digits, _ "
                        "and $; write other names in double quotes, e.g. public.\"Order Items\"");
    expect_tables_error("public.", "public.: missing name around '.'");
    expect_tables_error("\"public\".\"orders", "unterminated double quote");
    expect_tables_error("\"\".orders", "empty quoted name in \"\".orders");
    expect_tables_error("\"a\"b", "\"a\"b: unexpected text after the name; write names with "
                                  "spaces in double quotes");
    expect_error("[source]\ndsn = h\ntables =\n",
                 "pgfan.conf:3: invalid value \"\" for tables in [source]: the list is empty");
}
END_TEST

/* ---- environment ---- */

START_TEST(test_env_overrides_file)
{
    Config *cfg;

    setenv("PGFAN_SOURCE_SLOT", "from_env", 1);
    setenv("PGFAN_SOURCE_STATUS_INTERVAL", "3s", 1);
    setenv("PGFAN_LOG_LEVEL", "error", 1);
    setenv("PGFAN_TEST_SOMETHING", "ignored", 1);
    setenv("PGFAN_OTHER", "ignored", 1);
    cfg = load_ok(MINIMAL "slot = from_file\nstatus_interval = bogus\n");
    ck_assert_str_eq(cfg->source.slot, "from_env");
    ck_assert_str_eq(cfg->source.name, "from_env");
    ck_assert_int_eq(cfg->source.status_interval, 3 * USECS_PER_SEC);
    ck_assert_int_eq(cfg->log.level, LOG_LEVEL_ERROR);
    config_free(cfg);
}
END_TEST

START_TEST(test_env_only)
{
    Config *cfg = NULL;
    PfError err;

    setenv("PGFAN_SOURCE_DSN", "host=envhost", 1);
    setenv("PGFAN_SOURCE_TABLES", "a.b", 1);
    ck_assert_msg(config_load(NULL, &cfg, &err), "%s", err.msg);
    ck_assert_ptr_null(cfg->path);
    ck_assert_str_eq(cfg->source.dsn, "host=envhost");
    ck_assert_str_eq(cfg->source.tables[0].schema, "a");
    config_free(cfg);
    cfg = load_ok("");
    ck_assert_str_eq(cfg->source.dsn, "host=envhost");
    config_free(cfg);
}
END_TEST

START_TEST(test_env_enables_sink)
{
    Config *cfg;

    setenv("PGFAN_SINK_FILE_PATH", "/tmp/from-env.ndjson", 1);
    cfg = load_ok(MINIMAL);
    ck_assert(cfg->file.enabled);
    ck_assert_str_eq(cfg->file.path, "/tmp/from-env.ndjson");
    config_free(cfg);
    /* an empty [sink.file] section enables it with defaults */
    unsetenv("PGFAN_SINK_FILE_PATH");
    cfg = load_ok(MINIMAL "[sink.file]\n");
    ck_assert(cfg->file.enabled);
    ck_assert_str_eq(cfg->file.path, "changes.ndjson");
    config_free(cfg);
}
END_TEST

START_TEST(test_env_errors)
{
    PfError err;
    char *msg;

    setenv("PGFAN_SOURCE_TABLE", "x", 1);
    setenv("PGFAN_SOURCE_STATUS_INTERVAL", "soon", 1);
    setenv("PGFAN_SINK_FILE_MAX_BUFFER", "2GB", 1);
    setenv("PGFAN_SINK_REDIS_URL", "redis://localhost:6379", 1);
    msg = load_fail(MINIMAL, &err);
    /* sorted by variable order in environ: check each line is there, and nothing else */
    ck_assert_ptr_nonnull(strstr(msg, "environment PGFAN_SOURCE_TABLE: unknown key \"table\" in "
                                      "[source]; did you mean PGFAN_SOURCE_TABLES?"));
    ck_assert_ptr_nonnull(strstr(msg, "environment PGFAN_SOURCE_STATUS_INTERVAL: invalid value "
                                      "\"soon\" for status_interval in [source]: expected a "
                                      "duration such as 500ms, 10s or 1min"));
    ck_assert_ptr_nonnull(strstr(msg, "environment PGFAN_SINK_FILE_MAX_BUFFER: max_buffer in "
                                      "[sink.file] must be between 64kB and 1GB (got 2GB)"));
    ck_assert_ptr_nonnull(strstr(msg, "environment PGFAN_SINK_REDIS_URL: does not name a "
                                      "known sink; known sinks: file, kafka, webhook"));
    ck_assert_ptr_null(strstr(msg, "pgfan.conf"));
    free(msg);
}
END_TEST

START_TEST(test_env_secret_not_echoed)
{
    PfError err;
    char *msg;

    setenv("PGFAN_SOURCE_DSN", "", 1);
    msg = load_fail(MINIMAL, &err);
    ck_assert_str_eq(msg, "environment PGFAN_SOURCE_DSN: invalid value \"\" for dsn in [source]: "
                          "the value must not be empty");
    free(msg);
}
END_TEST

/* ---- print ---- */

START_TEST(test_print)
{
    Config *cfg = load_ok("[source]\n"
                          "dsn = host=db user=pgfan password='s3cr;t pw' dbname=shop\n"
                          "tables = orders, \"Order Items\"\n"
                          "reconnect_max = 600s\n"
                          "[sink.file]\nmax_buffer = 65536\n");
    char *text = print_to_string(cfg);
    char header[512];

    snprintf(header, sizeof header, "; pgfan effective configuration from %s", cfg->path);
    ck_assert_ptr_nonnull(strstr(text, header));
    ck_assert_ptr_null(strstr(text, "s3cr"));
    ck_assert_ptr_nonnull(strstr(text, "\n[source]\n"
                                       "dsn = host=db user=pgfan password=***** dbname=shop\n"
                                       "slot = pgfan\n"
                                       "name = pgfan\n"
                                       "tables = public.orders, public.\"Order Items\"\n"
                                       "snapshot = never\n"
                                       "snapshot_workers = 2\n"
                                       "state_dir = .\n"
                                       "status_interval = 10s\n"
                                       "reconnect_min = 1s\n"
                                       "reconnect_max = 10min\n"
                                       "max_inflight_transactions = 100000\n"
                                       "shutdown_timeout = 60s\n"
                                       "slot_check_interval = 30s\n"
                                       "slot_warn_safe_wal_size = 1GB\n"
                                       "heartbeat_interval = 10s\n"
                                       "heartbeat_prefix = pgfan_heartbeat\n"
                                       "\n[status]\nsocket = /run/pgfan/status.sock\n"
                                       "; metrics_listen is not set\n"
                                       "\n[log]\nlevel = info\nformat = text\n"
                                       "\n[sink.file]\npath = changes.ndjson\n"
                                       "fsync_interval = 100ms\nmax_buffer = 64kB\n"));
    config_free(cfg);

    /* what check-config prints loads again to the same thing */
    Config *again = load_ok(text);
    char *text2 = print_to_string(again);
    ck_assert_str_eq(strchr(text2, '\n'), strchr(text, '\n'));
    config_free(again);
    free(text2);
    free(text);
}
END_TEST

START_TEST(test_print_uri_password)
{
    Config *cfg;
    char *text;

    setenv("PGFAN_SOURCE_DSN", "postgresql://pgfan:top%20s3cr3t@db:5432/shop", 1);
    cfg = load_ok(MINIMAL);
    text = print_to_string(cfg);
    ck_assert_ptr_null(strstr(text, "s3cr3t"));
    ck_assert_ptr_nonnull(strstr(text, "dsn = postgresql://pgfan:*****@db:5432/shop\n"));
    config_free(cfg);
    free(text);
}
END_TEST

/* ---- redaction ---- */

START_TEST(test_redact_dsn)
{
    static const char *const cases[][2] = {
        {"host=h password=secret dbname=d", "host=h password=***** dbname=d"},
        {"password = 'se cret\\' x' user=u", "password = ***** user=u"},
        {"user=u password='a;b'", "user=u password=*****"},
        {"password=x", "password=*****"},
        {"PASSWORD=x host=h", "PASSWORD=***** host=h"},
        {"host=h passwordx=1 dbname=password", "host=h passwordx=1 dbname=password"},
        {"host=h dbname=shop", "host=h dbname=shop"},
        {"host=h password=", "host=h password=*****"},
        {"", ""},
        {"postgresql://u:pw@h:5432/db", "postgresql://u:*****@h:5432/db"},
        {"postgres://u:pw@h/db", "postgres://u:*****@h/db"},
        {"postgresql://u:p@ss@h/db", "postgresql://u:*****@h/db"},
        {"postgresql://u@h/db", "postgresql://u@h/db"},
        {"postgresql://h1:5432,h2:5433/db", "postgresql://h1:5432,h2:5433/db"},
        {"postgresql:///db?host=/tmp&password=pw&sslmode=require",
         "postgresql:///db?host=/tmp&password=*****&sslmode=require"},
        {"postgresql://u:pw@h/db?password=pw2", "postgresql://u:*****@h/db?password=*****"},
        {"postgresql://h/db?user=u@x", "postgresql://h/db?user=u@x"},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = config_redact_dsn(cases[i][0]);
        ck_assert_msg(strcmp(got, cases[i][1]) == 0, "redact(\"%s\") = \"%s\", want \"%s\"",
                      cases[i][0], got, cases[i][1]);
        free(got);
    }
    ck_assert_ptr_null(config_redact_dsn(NULL));
}
END_TEST

START_TEST(test_suggest)
{
    static const char *const words[] = {"dsn", "slot", "tables", "status_interval"};

    ck_assert_str_eq(config_suggest("tabels", words, 4), "tables");
    ck_assert_str_eq(config_suggest("SLOT", words, 4), "slot");
    ck_assert_str_eq(config_suggest("status", words, 4), "status_interval");
    ck_assert_ptr_null(config_suggest("zzzzzz", words, 4));
}
END_TEST

/* ---- prefix maps (OPT_MAP): [sink.kafka] librdkafka.* and topic.* ---- */

#define KAFKA MINIMAL "[sink.kafka]\nbrokers = k1:9092,k2:9092\n"

START_TEST(test_map_entries)
{
    Config *cfg = load_ok(KAFKA "librdkafka.security.protocol = SASL_SSL\n"
                                "librdkafka.sasl.password = hunter2 ; inline comment\n"
                                "topic.public.orders = shop-orders\n"
                                "compression = zstd\n");

    ck_assert(cfg->kafka.enabled);
    ck_assert(cfg->file.enabled == false);
    ck_assert_str_eq(cfg->kafka.brokers, "k1:9092,k2:9092");
    ck_assert_str_eq(cfg->kafka.topic_prefix, cfg->source.name);
    ck_assert_uint_eq(cfg->kafka.librdkafka.n, 2);
    ck_assert_str_eq(cfg->kafka.librdkafka.items[0].key, "security.protocol");
    ck_assert_str_eq(config_map_get(&cfg->kafka.librdkafka, "security.protocol"), "SASL_SSL");
    ck_assert_str_eq(config_map_get(&cfg->kafka.librdkafka, "sasl.password"), "hunter2");
    ck_assert_ptr_null(config_map_get(&cfg->kafka.librdkafka, "sasl"));
    ck_assert_uint_eq(cfg->kafka.topics.n, 1);
    ck_assert_str_eq(config_map_get(&cfg->kafka.topics, "public.orders"), "shop-orders");
    ck_assert_int_eq(cfg->kafka.compression, KAFKA_COMPRESSION_ZSTD);
    ck_assert(cfg->kafka.tombstones);
    ck_assert_int_eq(cfg->kafka.linger, 5 * USECS_PER_MSEC);
    ck_assert_uint_eq(cfg->kafka.queue_max_messages, 100000);
    ck_assert_uint_eq(cfg->kafka.queue_max_kbytes, 65536);
    ck_assert(config_sink_enabled(cfg, "kafka"));
    ck_assert(!config_sink_enabled(cfg, "file"));
    config_free(cfg);

    /* no entries: an empty map */
    cfg = load_ok(KAFKA "topic_prefix = shop\n");
    ck_assert_uint_eq(cfg->kafka.librdkafka.n, 0);
    ck_assert_ptr_null(config_map_get(&cfg->kafka.librdkafka, "x"));
    ck_assert_str_eq(cfg->kafka.topic_prefix, "shop");
    config_free(cfg);
}
END_TEST

START_TEST(test_map_print_redacts)
{
    Config *cfg = load_ok(KAFKA "librdkafka.security.protocol = SASL_SSL\n"
                                "librdkafka.sasl.password = hunter2\n"
                                "librdkafka.ssl.key.password = k3y\n"
                                "librdkafka.sasl.oauthbearer.client.secret = oauth\n"
                                "librdkafka.ssl.key.pem = PEMDATA\n");
    char *text = print_to_string(cfg);

    ck_assert_ptr_null(strstr(text, "hunter2"));
    ck_assert_ptr_null(strstr(text, "k3y"));
    ck_assert_ptr_null(strstr(text, "oauth\n"));
    ck_assert_ptr_null(strstr(text, "PEMDATA"));
    ck_assert_ptr_nonnull(strstr(text, "\nlibrdkafka.security.protocol = SASL_SSL\n"
                                       "librdkafka.sasl.password = *****\n"
                                       "librdkafka.ssl.key.password = *****\n"
                                       "librdkafka.sasl.oauthbearer.client.secret = *****\n"
                                       "librdkafka.ssl.key.pem = *****\n"));
    ck_assert_ptr_nonnull(strstr(text, "; topic.<name> = (none)\n"));
    ck_assert_ptr_nonnull(strstr(text, "\ncompression = lz4\n"));
    config_free(cfg);
    free(text);

    /* what check-config prints (without secrets) loads again */
    cfg = load_ok(KAFKA "librdkafka.client.id = pgfan-1\ntopic.public.orders = o\n");
    text = print_to_string(cfg);
    ck_assert_ptr_nonnull(strstr(text, "\nlibrdkafka.client.id = pgfan-1\n"));
    ck_assert_ptr_nonnull(strstr(text, "\ntopic.public.orders = o\n"));
    Config *again = load_ok(text);
    char *text2 = print_to_string(again);
    ck_assert_str_eq(strchr(text2, '\n'), strchr(text, '\n'));
    config_free(again);
    config_free(cfg);
    free(text);
    free(text2);
}
END_TEST

START_TEST(test_map_errors)
{
    expect_error(KAFKA "librdkafka.sasl.username = a\nlibrdkafka.sasl.username = b\n",
                 "pgfan.conf:7: duplicate key \"librdkafka.sasl.username\" in [sink.kafka] (first "
                 "set on line 6); keep only one");
    expect_error(KAFKA "librdkafka.client.id =\n",
                 "pgfan.conf:6: invalid value \"\" for librdkafka.client.id in [sink.kafka]: the "
                 "value must not be empty");
    expect_error(KAFKA "librdkafka.sasl.password =\n",
                 "pgfan.conf:6: invalid value \"*****\" for librdkafka.sasl.password in "
                 "[sink.kafka]: the value must not be empty");
    /* the bare prefix is not an entry */
    expect_error(KAFKA "librdkafka. = x\n",
                 "pgfan.conf:6: unknown key \"librdkafka.\" in [sink.kafka]; did you mean "
                 "\"librdkafka\"?");
    expect_error(KAFKA "compression = brotli\n",
                 "pgfan.conf:6: invalid value \"brotli\" for compression in [sink.kafka]: "
                 "expected one of: none, gzip, snappy, lz4, zstd");
    expect_error(MINIMAL "[sink.kafka]\ntopic_prefix = x\n",
                 "pgfan.conf: missing required key \"brokers\" in [sink.kafka]; set it in the "
                 "file or with PGFAN_SINK_KAFKA_BROKERS");
}
END_TEST

/* Environment names cannot be mapped back to entry names: only file entries are overridden. */
START_TEST(test_map_env)
{
    Config *cfg;
    PfError err;
    char *msg;

    setenv("PGFAN_SINK_KAFKA_LIBRDKAFKA_SASL_PASSWORD", "from-env", 1);
    setenv("PGFAN_SINK_KAFKA_TOPIC_PUBLIC_ORDER_ITEMS", "items", 1);
    cfg = load_ok(KAFKA "librdkafka.sasl.password = placeholder\n"
                        "topic.public.order-items = x\n");
    ck_assert_str_eq(config_map_get(&cfg->kafka.librdkafka, "sasl.password"), "from-env");
    ck_assert_str_eq(config_map_get(&cfg->kafka.topics, "public.order-items"), "items");
    config_free(cfg);

    msg = load_fail(KAFKA, &err);
    ck_assert_str_eq(msg, "environment PGFAN_SINK_KAFKA_LIBRDKAFKA_SASL_PASSWORD: no "
                          "librdkafka.<name> line of [sink.kafka] in the config file matches it; "
                          "a librdkafka.* key can be overridden from the environment only when "
                          "the file sets it (add librdkafka.<name> = <value> to the file)\n"
                          "environment PGFAN_SINK_KAFKA_TOPIC_PUBLIC_ORDER_ITEMS: no "
                          "topic.<name> line of [sink.kafka] in the config file matches it; "
                          "a topic.* key can be overridden from the environment only when "
                          "the file sets it (add topic.<name> = <value> to the file)");
    free(msg);
    unsetenv("PGFAN_SINK_KAFKA_TOPIC_PUBLIC_ORDER_ITEMS");

    /* an empty override is refused without echoing the secret entry */
    setenv("PGFAN_SINK_KAFKA_LIBRDKAFKA_SASL_PASSWORD", "", 1);
    msg = load_fail(KAFKA "librdkafka.sasl.password = placeholder\n", &err);
    ck_assert_str_eq(msg, "environment PGFAN_SINK_KAFKA_LIBRDKAFKA_SASL_PASSWORD: invalid value "
                          "\"*****\" for librdkafka.sasl.password in [sink.kafka]: the value "
                          "must not be empty");
    free(msg);
}
END_TEST

/* ---- [sink.webhook] ---- */

#define WEBHOOK MINIMAL "[sink.webhook]\nurl = https://hooks.example.com/pgfan\n"

START_TEST(test_webhook_defaults)
{
    Config *cfg = load_ok(WEBHOOK);

    ck_assert(config_sink_enabled(cfg, "webhook"));
    ck_assert(!config_sink_enabled(cfg, "file")); /* a sink section turns the default off */
    ck_assert_str_eq(cfg->webhook.url, "https://hooks.example.com/pgfan");
    ck_assert_uint_eq(cfg->webhook.batch_size, 10);
    ck_assert_uint_eq(cfg->webhook.max_in_flight, 4);
    ck_assert_int_eq(cfg->webhook.timeout, 10 * USECS_PER_SEC);
    ck_assert_int_eq(cfg->webhook.batch_linger, 100 * USECS_PER_MSEC);
    ck_assert_ptr_null(cfg->webhook.secret);
    ck_assert_ptr_null(cfg->webhook.ca_file);
    ck_assert_str_eq(cfg->webhook.dead_letter, "webhook-dead-letter.ndjson");
    ck_assert_str_eq(cfg->webhook.user_agent, "pgfan/" PGFAN_VERSION);
    ck_assert_uint_eq(cfg->webhook.headers.n, 0);
    config_free(cfg);
}
END_TEST

START_TEST(test_webhook_values)
{
    Config *cfg = load_ok(WEBHOOK "batch_size = 500\nmax_in_flight = 16\ntimeout = 30s\n"
                                  "batch_linger = 0\nsecret = s3cret\ndead_letter = /var/dl.ndjson\n"
                                  "user_agent = shop-cdc/2\nca_file = /etc/ca.pem\n"
                                  "header.X-Api-Key = abc\nheader.Authorization = Bearer t0k\n");

    ck_assert_uint_eq(cfg->webhook.batch_size, 500);
    ck_assert_uint_eq(cfg->webhook.max_in_flight, 16);
    ck_assert_int_eq(cfg->webhook.timeout, 30 * USECS_PER_SEC);
    ck_assert_int_eq(cfg->webhook.batch_linger, 0);
    ck_assert_str_eq(cfg->webhook.secret, "s3cret");
    ck_assert_str_eq(cfg->webhook.dead_letter, "/var/dl.ndjson");
    ck_assert_str_eq(cfg->webhook.user_agent, "shop-cdc/2");
    ck_assert_str_eq(cfg->webhook.ca_file, "/etc/ca.pem");
    ck_assert_uint_eq(cfg->webhook.headers.n, 2);
    ck_assert_str_eq(config_map_get(&cfg->webhook.headers, "X-Api-Key"), "abc");
    ck_assert_str_eq(config_map_get(&cfg->webhook.headers, "Authorization"), "Bearer t0k");
    config_free(cfg);
}
END_TEST

START_TEST(test_webhook_errors)
{
    expect_error(MINIMAL "[sink.webhook]\nbatch_size = 5\n",
                 "pgfan.conf: missing required key \"url\" in [sink.webhook]; set it in the file "
                 "or with PGFAN_SINK_WEBHOOK_URL");
    expect_error(MINIMAL "[sink.webhook]\nurl = ftp://example.com/x\n",
                 "pgfan.conf:5: invalid value \"ftp://example.com/x\" for url in [sink.webhook]: "
                 "expected an http:// or https:// URL");
    expect_error(MINIMAL "[sink.webhook]\nurl = https://\n",
                 "pgfan.conf:5: invalid value \"https://\" for url in [sink.webhook]: expected an "
                 "http:// or https:// URL");
    expect_error(WEBHOOK "batch_size = 0\n",
                 "pgfan.conf:6: batch_size in [sink.webhook] must be between 1 and 10000 (got 0)");
    expect_error(WEBHOOK "max_in_flight = 65\n",
                 "pgfan.conf:6: max_in_flight in [sink.webhook] must be between 1 and 64 (got 65)");
    expect_error(WEBHOOK "timeout = 10ms\n",
                 "pgfan.conf:6: timeout in [sink.webhook] must be between 100ms and 10min (got "
                 "10ms)");
    expect_error(WEBHOOK "secret =\n",
                 "pgfan.conf:6: invalid value \"*****\" for secret in [sink.webhook]: the value "
                 "must not be empty");
    expect_error(WEBHOOK "header.X Bad = 1\n",
                 "pgfan.conf:6: invalid value \"1\" for header.X Bad in [sink.webhook]: a header "
                 "name has only letters, digits and !#$%&'*+-.^_`|~");
}
END_TEST

START_TEST(test_webhook_url_hint)
{
    PfError err;
    char *msg = load_fail(MINIMAL "[sink.webhook]\nurl = hooks.example.com\n", &err);

    ck_assert_str_eq(msg, "pgfan.conf:5: invalid value \"hooks.example.com\" for url in "
                          "[sink.webhook]: expected an http:// or https:// URL");
    ck_assert_str_eq(err.hint, "write the full URL, e.g. https://hooks.example.com/pgfan");
    free(msg);
}
END_TEST

/* ---- [status] metrics_listen ---- */

START_TEST(test_metrics_listen)
{
    static const char *const good[] = {"127.0.0.1:9187", "0.0.0.0:1", "localhost:65535",
                                       "LOCALHOST:80", "[::1]:9187", "[::]:9187"};
    Config *cfg = load_ok(MINIMAL);

    ck_assert_ptr_null(cfg->status.metrics_listen);
    config_free(cfg);
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, MINIMAL "[status]\nmetrics_listen = %s\n", good[i]);
        cfg = load_ok(text);
        ck_assert_str_eq(cfg->status.metrics_listen, good[i]);
        config_free(cfg);
    }
}
END_TEST

START_TEST(test_metrics_listen_errors)
{
    static const struct {
        const char *value;
        const char *why;
    } bad[] = {
        {"9187", "expected host:port"},
        {":9187", "expected host:port"},
        {"[::1]9187", "expected host:port"},
        {"[::1", "expected host:port"},
        {"[]:9187", "\"\" is not an IPv6 address"},
        {"[zz::1]:9187", "\"zz::1\" is not an IPv6 address"},
        {"::1:9187", "the host must be an IPv4 address, localhost or a [bracketed] IPv6 address"},
        {"example.com:9187",
         "the host must be an IPv4 address, localhost or a [bracketed] IPv6 address"},
        {"256.0.0.1:9187",
         "the host must be an IPv4 address, localhost or a [bracketed] IPv6 address"},
        {"127.0.0.1:", "the port must be a number from 1 to 65535"},
        {"127.0.0.1:0", "the port must be a number from 1 to 65535"},
        {"127.0.0.1:65536", "the port must be a number from 1 to 65535"},
        {"127.0.0.1:99999999999", "the port must be a number from 1 to 65535"},
        {"127.0.0.1:http", "the port must be a number from 1 to 65535"},
        {"[::1]:-1", "the port must be a number from 1 to 65535"},
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[256];
        char msg[512];
        PfError err;
        char *got;

        snprintf(text, sizeof text, MINIMAL "[status]\nmetrics_listen = %s\n", bad[i].value);
        snprintf(msg, sizeof msg,
                 "pgfan.conf:5: invalid value \"%s\" for metrics_listen in [status]: %s",
                 bad[i].value, bad[i].why);
        got = load_fail(text, &err);
        ck_assert_str_eq(got, msg);
        ck_assert_str_eq(err.hint, "write for example 127.0.0.1:9187, 0.0.0.0:9187, "
                                   "localhost:9187 or [::1]:9187");
        free(got);
    }
    expect_error(MINIMAL "[status]\nmetrics_listen =\n",
                 "pgfan.conf:5: invalid value \"\" for metrics_listen in [status]: the value "
                 "must not be empty");
}
END_TEST

START_TEST(test_webhook_print_redacts)
{
    Config *cfg = load_ok(WEBHOOK "secret = s3cret\nheader.Authorization = Bearer t0k\n"
                                  "header.X-Tenant = shop\n");
    char *text = print_to_string(cfg);

    ck_assert_ptr_nonnull(strstr(text, "\n[sink.webhook]\nurl = https://hooks.example.com/pgfan\n"
                                       "batch_size = 10\nmax_in_flight = 4\ntimeout = 10s\n"
                                       "batch_linger = 100ms\nsecret = *****\n"));
    ck_assert_ptr_nonnull(strstr(text, "; ca_file is not set\n"));
    ck_assert_ptr_nonnull(strstr(text, "header.Authorization = *****\n"));
    ck_assert_ptr_nonnull(strstr(text, "header.X-Tenant = shop\n"));
    ck_assert_ptr_null(strstr(text, "s3cret"));
    ck_assert_ptr_null(strstr(text, "t0k"));
    free(text);
    config_free(cfg);
    /* a password in the URL is hidden, in print and in error messages */
    cfg = load_ok(MINIMAL "[sink.webhook]\nurl = https://user:pw@hooks.example.com/in\n");
    text = print_to_string(cfg);
    ck_assert_ptr_nonnull(strstr(text, "\nurl = https://user:*****@hooks.example.com/in\n"));
    free(text);
    config_free(cfg);
    expect_error(MINIMAL "[sink.webhook]\nurl = ftp://user:pw@example.com/x\n",
                 "pgfan.conf:5: invalid value \"ftp://user:*****@example.com/x\" for url in "
                 "[sink.webhook]: expected an http:// or https:// URL");
    /* unset secret: shown as not set, and the printed config loads again */
    cfg = load_ok(WEBHOOK);
    text = print_to_string(cfg);
    ck_assert_ptr_nonnull(strstr(text, "; secret is not set\n"));
    config_free(cfg);
    cfg = load_ok(text);
    ck_assert_ptr_null(cfg->webhook.secret);
    config_free(cfg);
    free(text);
}
END_TEST

START_TEST(test_webhook_env)
{
    Config *cfg;

    setenv("PGFAN_SINK_WEBHOOK_URL", "http://127.0.0.1:8080/in", 1);
    setenv("PGFAN_SINK_WEBHOOK_SECRET", "from-env", 1);
    cfg = load_ok(MINIMAL);
    ck_assert(config_sink_enabled(cfg, "webhook"));
    ck_assert_str_eq(cfg->webhook.url, "http://127.0.0.1:8080/in");
    ck_assert_str_eq(cfg->webhook.secret, "from-env");
    config_free(cfg);
}
END_TEST

/* ---- operations: slot checks, heartbeats, log format, reload ---- */

START_TEST(test_ops_defaults)
{
    Config *cfg = load_ok(MINIMAL);

    ck_assert_int_eq(cfg->source.slot_check_interval, 30 * USECS_PER_SEC);
    ck_assert_uint_eq(cfg->source.slot_warn_safe_wal_size, 1024u * 1024 * 1024);
    ck_assert_int_eq(cfg->source.heartbeat_interval, 10 * USECS_PER_SEC);
    ck_assert_str_eq(cfg->source.heartbeat_prefix, "pgfan_heartbeat");
    ck_assert_int_eq(cfg->log.format, LOG_FORMAT_TEXT);
    config_free(cfg);
}
END_TEST

START_TEST(test_ops_values)
{
    Config *cfg = load_ok(MINIMAL "slot_check_interval = 0\nslot_warn_safe_wal_size = 512MB\n"
                                  "heartbeat_interval = 250ms\nheartbeat_prefix = shop.hb-1\n"
                                  "[log]\nformat = JSON\n");

    ck_assert_int_eq(cfg->source.slot_check_interval, 0);
    ck_assert_uint_eq(cfg->source.slot_warn_safe_wal_size, 512u * 1024 * 1024);
    ck_assert_int_eq(cfg->source.heartbeat_interval, 250 * USECS_PER_MSEC);
    ck_assert_str_eq(cfg->source.heartbeat_prefix, "shop.hb-1");
    ck_assert_int_eq(cfg->log.format, LOG_FORMAT_JSON);
    config_free(cfg);
    setenv("PGFAN_LOG_FORMAT", "text", 1);
    setenv("PGFAN_SOURCE_HEARTBEAT_INTERVAL", "0", 1);
    cfg = load_ok(MINIMAL "[log]\nformat = json\n");
    ck_assert_int_eq(cfg->log.format, LOG_FORMAT_TEXT);
    ck_assert_int_eq(cfg->source.heartbeat_interval, 0);
    config_free(cfg);
}
END_TEST

START_TEST(test_ops_errors)
{
    PfError err;
    char *msg;

    expect_error(MINIMAL "heartbeat_interval = 2h\n",
                 "pgfan.conf:4: heartbeat_interval in [source] must be between 0s and 1h (got 2h)");
    expect_error(MINIMAL "slot_check_interval = -1s\n",
                 "pgfan.conf:4: invalid value \"-1s\" for slot_check_interval in [source]: "
                 "expected a duration such as 500ms, 10s or 1min");
    expect_error(MINIMAL "slot_warn_safe_wal_size = 2048GB\n",
                 "pgfan.conf:4: slot_warn_safe_wal_size in [source] must be between 0B and "
                 "1024GB (got 2048GB)");
    expect_error(MINIMAL "[log]\nformat = xml\n",
                 "pgfan.conf:5: invalid value \"xml\" for format in [log]: expected one of: text, "
                 "json");
    msg = load_fail(MINIMAL "heartbeat_prefix = a,b\n", &err);
    ck_assert_str_eq(msg, "pgfan.conf:4: invalid value \"a,b\" for heartbeat_prefix in [source]: "
                          "a prefix has only letters, digits and _ - . : / (found ',')");
    ck_assert_str_eq(err.hint, "write for example pgfan_heartbeat");
    free(msg);
    msg = load_fail(MINIMAL "heartbeat_prefix = "
                            "x123456789x123456789x123456789x123456789x123456789x123456789x1234\n",
                    &err);
    ck_assert_ptr_nonnull(strstr(msg, "a prefix has at most 64 characters, not 65"));
    free(msg);
}
END_TEST

static void collect_change(void *arg, const char *section, const char *key, const char *old_text,
                           const char *new_text, bool reloadable)
{
    buf_printf(arg, "[%s] %s: %s -> %s%s\n", section, key, old_text, new_text,
               reloadable ? " (reload)" : "");
}

START_TEST(test_compare)
{
    Config *a = load_ok("[source]\ndsn = host=h dbname=shop password=one\ntables = orders\n"
                        "heartbeat_interval = 5s\n[log]\nlevel = info\n[sink.file]\npath = a\n");
    Config *b = load_ok("[source]\ndsn = host=h dbname=shop password=two\ntables = orders, items\n"
                        "heartbeat_interval = 1s\n[log]\nlevel = debug\nformat = json\n"
                        "[sink.file]\npath = a\n"
                        "[sink.webhook]\nurl = https://hooks.example.com/x\n");
    Buf got = BUF_INIT;

    ck_assert_uint_eq(config_compare(a, a, collect_change, &got), 0);
    ck_assert_ptr_null(got.data);
    ck_assert_uint_eq(config_compare(a, b, collect_change, &got), 6);
    /* a new password is a change even though both sides print as ***** */
    ck_assert_str_eq(got.data,
                     "[source] dsn: host=h dbname=shop password=***** -> host=h dbname=shop "
                     "password=*****\n"
                     "[source] tables: public.orders -> public.orders, public.items\n"
                     "[source] heartbeat_interval: 5s -> 1s (reload)\n"
                     "[log] level: info -> debug (reload)\n"
                     "[log] format: text -> json (reload)\n"
                     "[sink.webhook] enabled: off -> on\n");
    buf_free(&got);
    config_free(a);
    config_free(b);
}
END_TEST

START_TEST(test_reloadable_options)
{
    ck_assert(config_option_reloadable("log", "level"));
    ck_assert(config_option_reloadable("log", "format"));
    ck_assert(config_option_reloadable("source", "heartbeat_interval"));
    ck_assert(config_option_reloadable("source", "slot_check_interval"));
    ck_assert(config_option_reloadable("source", "slot_warn_safe_wal_size"));
    ck_assert(!config_option_reloadable("source", "dsn"));
    ck_assert(!config_option_reloadable("source", "heartbeat_prefix"));
    ck_assert(!config_option_reloadable("sink.file", "path"));
    ck_assert(config_option_reloadable("sink.file", "fsync_interval"));
    ck_assert(config_option_reloadable("sink.webhook", "batch_size"));
    ck_assert(config_option_reloadable("sink.elasticsearch", "batch_actions"));
    ck_assert(config_option_reloadable("sink.elasticsearch", "max_buffer"));
    ck_assert(config_option_reloadable("sink.aggregates", "batch_linger"));
    ck_assert(!config_option_reloadable("sink.elasticsearch", "url"));
    ck_assert(!config_option_reloadable("sink.kafka", "linger"));
    ck_assert(!config_option_reloadable("source", "nosuchkey"));
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("defaults");
    tcase_add_checked_fixture(tc, clean_env, NULL);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_name_follows_slot);
    tcase_add_test(tc, test_good_file);
    tcase_add_test(tc, test_bad_file_reports_everything);
    tcase_add_test(tc, test_example_loads);
    tcase_add_test(tc, test_example_matches_table);
    tcase_add_test(tc, test_table_rows_are_consistent);
    suite_add_tcase(s, tc);

    tc = tcase_create("types");
    tcase_add_checked_fixture(tc, clean_env, NULL);
    tcase_add_test(tc, test_durations);
    tcase_add_test(tc, test_duration_errors);
    tcase_add_test(tc, test_sizes);
    tcase_add_test(tc, test_ints);
    tcase_add_test(tc, test_enums);
    tcase_add_test(tc, test_snapshot_initial);
    tcase_add_test(tc, test_bool_and_secret_types);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_slot_names);
    tcase_add_test(tc, test_reconnect_order);
    suite_add_tcase(s, tc);

    tc = tcase_create("syntax");
    tcase_add_checked_fixture(tc, clean_env, NULL);
    tcase_add_test(tc, test_unknown_key);
    tcase_add_test(tc, test_unknown_section_and_sink);
    tcase_add_test(tc, test_duplicate_key);
    tcase_add_test(tc, test_missing_required);
    tcase_add_test(tc, test_syntax_errors);
    tcase_add_test(tc, test_nul_byte);
    tcase_add_test(tc, test_comments_and_header_forms);
    tcase_add_test(tc, test_all_problems_reported);
    tcase_add_test(tc, test_many_problems_truncated);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_dsn_with_quoted_semicolon);
    tcase_add_test(tc, test_long_lines);
    tcase_add_test(tc, test_crlf_and_bom);
    suite_add_tcase(s, tc);

    tc = tcase_create("tables");
    tcase_add_checked_fixture(tc, clean_env, NULL);
    tcase_add_test(tc, test_tables);
    tcase_add_test(tc, test_table_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("environment");
    tcase_add_checked_fixture(tc, clean_env, clean_env);
    tcase_add_test(tc, test_env_overrides_file);
    tcase_add_test(tc, test_env_only);
    tcase_add_test(tc, test_env_enables_sink);
    tcase_add_test(tc, test_env_errors);
    tcase_add_test(tc, test_env_secret_not_echoed);
    suite_add_tcase(s, tc);

    tc = tcase_create("print");
    tcase_add_checked_fixture(tc, clean_env, clean_env);
    tcase_add_test(tc, test_print);
    tcase_add_test(tc, test_print_uri_password);
    tcase_add_test(tc, test_redact_dsn);
    tcase_add_test(tc, test_suggest);
    suite_add_tcase(s, tc);

    tc = tcase_create("maps");
    tcase_add_checked_fixture(tc, clean_env, clean_env);
    tcase_add_test(tc, test_map_entries);
    tcase_add_test(tc, test_map_print_redacts);
    tcase_add_test(tc, test_map_errors);
    tcase_add_test(tc, test_map_env);
    suite_add_tcase(s, tc);

    tc = tcase_create("webhook");
    tcase_add_checked_fixture(tc, clean_env, clean_env);
    tcase_add_test(tc, test_webhook_defaults);
    tcase_add_test(tc, test_webhook_values);
    tcase_add_test(tc, test_webhook_errors);
    tcase_add_test(tc, test_webhook_url_hint);
    tcase_add_test(tc, test_webhook_print_redacts);
    tcase_add_test(tc, test_webhook_env);
    suite_add_tcase(s, tc);

    tc = tcase_create("ops");
    tcase_add_checked_fixture(tc, clean_env, clean_env);
    tcase_add_test(tc, test_ops_defaults);
    tcase_add_test(tc, test_ops_values);
    tcase_add_test(tc, test_ops_errors);
    tcase_add_test(tc, test_compare);
    tcase_add_test(tc, test_reloadable_options);
    suite_add_tcase(s, tc);

    tc = tcase_create("metrics_listen");
    tcase_add_checked_fixture(tc, clean_env, clean_env);
    tcase_add_test(tc, test_metrics_listen);
    tcase_add_test(tc, test_metrics_listen_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    SRunner *sr;
    int failed;

    if (argc == 3 && strcmp(argv[1], "--write-example") == 0) {
        FILE *f = fopen(argv[2], "w");
        if (f == NULL) {
            perror(argv[2]);
            return 1;
        }
        config_write_example(f);
        return fclose(f) == 0 ? 0 : 1;
    }
    sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
