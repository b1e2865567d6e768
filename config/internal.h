/*
 * internal.h - what the config/ files share; no other module includes it.
 *
 * options.c  the option table (the one place an option is declared), typed
 *            value parsing and formatting, config_print, config_redact_dsn
 *            and the example-config writer;
 * validate.c problem collection, "did you mean" suggestions, range checks,
 *            the per-option validators and the [source] tables parser;
 * parse.c    the INI reader, environment overrides and config_load();
 * compare.c  config_compare(): what changed between two configs (reload).
 *
 * Everything here works on borrowed table rows (static storage); OptValue
 * and Problems own what they hold until their *_free function.
 */
#ifndef PGFAN_CONFIG_INTERNAL_H
#define PGFAN_CONFIG_INTERNAL_H

#include "../common/buf.h"
#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum OptType {
    OPT_STRING,   /* free text, never empty */
    OPT_BOOL,     /* true/false, on/off, yes/no, 1/0 */
    OPT_INT,      /* decimal integer, stored as size_t (counts are never negative) */
    OPT_SIZE,     /* bytes: B, kB, MB, GB (1024-based, as in PostgreSQL); stored as size_t */
    OPT_DURATION, /* us, ms, s, min, h; stored as TimeUs */
    OPT_ENUM,     /* one of OptDef.choices; stored by OptDef.set */
    OPT_LIST,     /* comma-separated, double quotes protect commas; stored by OptDef.set */
    OPT_MAP,      /* a prefix: every "<key>.<name> = value" of the section, stored as a
                   * ConfigMap at offset, values free text (never empty) */
} OptType;

/* How an option's value is shown by config_print and in error messages. */
typedef enum OptSecret {
    SECRET_NONE = 0,
    SECRET_WHOLE,    /* the whole value is a secret: shown as "*****" */
    SECRET_CONNINFO, /* a conninfo string: only its password is hidden */
    SECRET_URL,      /* a URL: only a password in its user:password@ part is hidden */
} OptSecret;

/* A parsed value; owns str and items. */
typedef struct OptValue {
    char *str;    /* OPT_STRING */
    bool flag;    /* OPT_BOOL */
    int64_t num;  /* OPT_INT, OPT_SIZE (bytes), OPT_DURATION (microseconds) */
    int choice;   /* OPT_ENUM: index into OptDef.choices */
    char **items; /* OPT_LIST: trimmed elements, quotes kept */
    size_t n_items;
} OptValue;

/* Why a value was refused, and the fix when one is known. */
typedef struct OptCheck {
    char why[384];
    char hint[ERR_HINT_SIZE];
} OptCheck;

typedef struct OptDef OptDef;

struct OptDef {
    const char *section; /* "source", "sink.file" */
    const char *key;
    OptType type;
    const char *def;          /* default as text, parsed like a file value; NULL: none */
    const char *default_from; /* no default of its own: copies this key of the same section */
    const char *example;      /* value shown in the example config when def is NULL */
    bool required;
    bool optional;   /* no default: unset leaves the field NULL/0 (e.g. a secret) */
    bool reloadable; /* a running daemon applies a new value on SIGHUP (see config_compare) */
    OptSecret secret;
    int64_t min, max;           /* numeric types: inclusive range (bytes, microseconds) */
    const char *unit;           /* duration/size: unit of a bare number ("s", "ms", "B") */
    const char *const *choices; /* OPT_ENUM: NULL-terminated, index = stored value */
    size_t offset;              /* string/bool/int/size/duration: field in Config */
    /* enum/list: stores the value; may refuse it (tables: bad name, duplicate). */
    bool (*set)(Config *cfg, const OptValue *v, OptCheck *why);
    /* enum/list: appends the effective value as it would be written in the file. */
    void (*print)(const Config *cfg, Buf *out);
    /* optional extra check after parsing and range checking */
    bool (*validate)(const OptValue *v, OptCheck *why);
    /* OPT_MAP: optional check of one entry (name is the part after "<key>.") */
    bool (*validate_entry)(const char *name, const char *value, OptCheck *why);
    /* OPT_MAP: entries whose name contains one of these (case-insensitive)
     * hold secrets: their values are shown as "*****" (NULL-terminated) */
    const char *const *secret_names;
    /* default_from names a key of this section instead (NULL: same section) */
    const char *default_from_section;
    const char *desc; /* one line, for the example config and hints */
};

/* A [section]: sinks are enabled by their section's presence. */
typedef struct SectionDef {
    const char *name;
    const char *desc;
    bool is_sink;
    bool default_sink;     /* enabled when no sink section is given at all */
    size_t enabled_offset; /* sinks: bool field in Config */
} SectionDef;

/* A cross-field rule: option low must not exceed option high. */
typedef struct OptOrder {
    const char *section;
    const char *low;
    const char *high;
} OptOrder;

extern const OptDef config_options[];
extern const size_t config_n_options;
extern const SectionDef config_sections[];
extern const size_t config_n_sections;
extern const OptOrder config_orders[];
extern const size_t config_n_orders;

/* --- options.c --- */

/* Parses text as def's type (no range check). Fills *out, owned by caller. */
bool opt_parse_value(const OptDef *def, const char *text, OptValue *out, OptCheck *why);
void opt_value_free(OptValue *v);

/* Appends a number of def's type in a readable unit (90s, 100ms, 8MB). */
void opt_format_number(const OptDef *def, int64_t v, Buf *out);

/* Stores v into cfg (offset or def->set). */
bool opt_store(const OptDef *def, const OptValue *v, Config *cfg, OptCheck *why);

/* Appends cfg's effective value of def, secrets redacted. */
void opt_print(const OptDef *def, const Config *cfg, Buf *out);

/* Appends text as it may appear in a message: secrets redacted, long text cut. */
void opt_quote_for_message(const OptDef *def, const char *text, Buf *out);

/* "PGFAN_<SECTION>_<KEY>" into out. */
void opt_env_name(const char *section, const char *key, Buf *out);

/* Writes an example config with every option, default and description. */
void config_write_example(FILE *out);

const SectionDef *config_find_section(const char *name);
const OptDef *config_find_option(const char *section, const char *key);

/*
 * The OPT_MAP row of section whose key is a prefix of key ("librdkafka"
 * for "librdkafka.sasl.password"); *name points into key after the dot.
 * NULL when none matches or the name after the prefix is empty.
 */
const OptDef *config_find_map_option(const char *section, const char *key, const char **name);

/* Whether an entry of an OPT_MAP row holds a secret (def->secret_names). */
bool opt_map_name_is_secret(const OptDef *def, const char *name);

/* Appends name = value to map (copies both); frees every entry. */
void config_map_add(ConfigMap *map, const char *name, const char *value);
void config_map_free(ConfigMap *map);

/* "PGFAN_SINK_KAFKA_LIBRDKAFKA_SASL_PASSWORD" for an OPT_MAP entry: the
 * env name of the row's key, '_', then the name upper-cased with every
 * character other than a letter or digit turned into '_'. */
void opt_env_name_map_entry(const OptDef *def, const char *name, Buf *out);

/* --- validate.c --- */

typedef enum OriginKind {
    ORIGIN_NONE = 0, /* not set: the default */
    ORIGIN_FILE,     /* a line of the config file (line 0: the file as a whole) */
    ORIGIN_ENV,      /* an environment variable */
} OriginKind;

typedef struct Origin {
    OriginKind kind;
    int line;             /* ORIGIN_FILE */
    const char *env_name; /* ORIGIN_ENV, borrowed */
} Origin;

typedef struct Problem Problem;

/* All problems found while loading, reported together. */
typedef struct Problems {
    const char *path; /* borrowed; NULL when there is no file */
    Problem *items;
    size_t n, cap;
} Problems;

void problems_init(Problems *ps, const char *path);
void problems_free(Problems *ps);

/* Records "<where>: <message>"; hint (may be NULL or "") is the fix. */
void problems_add(Problems *ps, const Origin *at, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * Turns the problems into one ERR_CONFIG error: one line per problem,
 * file lines in order, then file-wide problems, then environment ones.
 * Returns true when there were none.
 */
bool problems_report(Problems *ps, PfError *err);

/*
 * The candidate closest to word (edit distance <= 2, ignoring case, or
 * word is a prefix of it / it is a prefix of word), or NULL.
 */
const char *config_suggest(const char *word, const char *const *candidates, size_t n);

/* Range check of a numeric value; the message names def and the bounds. */
bool opt_check_range(const OptDef *def, const OptValue *v, OptCheck *why);

/* Validators and setters referenced by the option table. */
bool config_validate_slot(const OptValue *v, OptCheck *why);
bool config_set_tables(Config *cfg, const OptValue *v, OptCheck *why);
void config_print_tables(const Config *cfg, Buf *out);

/*
 * Parses one element of [source] tables: schema.table or table (schema
 * public), either part possibly "double quoted" ("" is a quote inside).
 * Unquoted parts are folded to lower case, as PostgreSQL does.
 */
bool config_parse_table_name(const char *text, TableName *out, OptCheck *why);

/* Appends an identifier, double-quoted when it would not survive unquoted. */
void config_append_ident(Buf *out, const char *ident);

#endif
