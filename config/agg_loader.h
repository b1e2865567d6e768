/*
 * agg_loader.h - [aggregate.NAME] sections in the config loader.
 *
 * The option table describes sections with fixed names; aggregates are a
 * family of sections named by the user, so the INI reader (parse.c) hands
 * their headers and keys to this loader, which checks them once the rest
 * of the file is resolved (their `from` must be one of [source] tables)
 * and stores them as cfg->aggregates.defs. Aggregates come from the file
 * only: no environment overrides (a PGFAN_AGGREGATE_* name could not tell
 * the aggregate's name from its key).
 *
 * Config-internal; the AggLoader owns what it collected until
 * agg_loader_free().
 */
#ifndef PGFAN_CONFIG_AGG_LOADER_H
#define PGFAN_CONFIG_AGG_LOADER_H

#include "internal.h"

#define AGG_SECTION_PREFIX "aggregate."
#define AGG_N_KEYS 5

typedef struct AggRaw {
    char *name;  /* after "aggregate." */
    int line;    /* of the header */
    bool usable; /* name accepted and not a duplicate */
    char *values[AGG_N_KEYS];
    int lines[AGG_N_KEYS];
} AggRaw;

typedef struct AggLoader {
    AggRaw *items;
    size_t n;
    bool in_section; /* the last header was an [aggregate.NAME] */
} AggLoader;

/* Whether a section name is an aggregate's ("aggregate.gmv_daily"). */
bool agg_loader_is_section(const char *name);

/* A header [aggregate.NAME] at line; following keys belong to it. */
void agg_loader_section(AggLoader *al, Problems *ps, const char *name, int line);

/* Any other header: keys no longer belong to an aggregate. */
void agg_loader_leave(AggLoader *al);

/* Whether keys now belong to an aggregate section. */
bool agg_loader_in_section(const AggLoader *al);

/* key = value inside the current aggregate section. */
void agg_loader_key(AggLoader *al, Problems *ps, const char *key, const char *value, int line);

/*
 * Checks every section against the resolved cfg (source tables, sink
 * enabled, schema) and stores the aggregates in cfg.
 */
void agg_loader_finish(AggLoader *al, Problems *ps, Config *cfg);

void agg_loader_free(AggLoader *al);

/* Frees cfg->aggregates.defs. */
void agg_defs_free(Config *cfg);

/* [sink.aggregates] schema: an identifier pgfan can use unquoted. */
bool agg_validate_schema(const OptValue *v, OptCheck *why);

/* Appends the [aggregate.NAME] sections as config_print shows them. */
void agg_print_defs(const Config *cfg, Buf *out);

#endif
