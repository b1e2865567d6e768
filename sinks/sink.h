/*
 * sink.h - the sink interface: what every destination implements.
 *
 * A sink is a const table of functions (SinkOps) plus an opaque instance.
 * The pipeline holds {const SinkOps *ops; void *self;} and nothing more; it
 * never looks inside a sink, and sinks never see the plugin's wire format.
 *
 * The contract every sink keeps (DESIGN.md, "acknowledge only what is
 * durable everywhere"):
 *  - It receives, in stream order, every BEGIN and COMMIT, and between them
 *    the row changes of the tables routed to it (possibly none).
 *  - durable_lsn() returns the end_lsn of a COMMIT it was given such that
 *    that transaction and every earlier one are durably stored (fsynced,
 *    acknowledged by the broker, committed). It never moves backwards, and
 *    it starts at LSN_INVALID. A transaction with nothing for this sink
 *    becomes durable as soon as everything before it is.
 *  - submit() never blocks. When the sink holds as much as it may
 *    (memory bound), can_accept() returns false and the pipeline stops
 *    reading from PostgreSQL until it returns true again.
 *  - Replays are normal: after a crash, transactions after the last
 *    confirmed position arrive again. Sinks make them harmless or document
 *    the duplicates (at-least-once).
 *  - After a lost connection, a BEGIN may arrive while a transaction is
 *    still open: the open one is abandoned (no COMMIT will come for it) and
 *    arrives again in full. Its changes already taken are duplicates that
 *    lie after the confirmed position.
 */
#ifndef PGFAN_SINK_H
#define PGFAN_SINK_H

#include "../common/error.h"
#include "../config/config.h"
#include "../decoder/change.h"

#include <stdint.h>

typedef struct Loop Loop;

/*
 * Facts about the source that sinks put into events. Owned by the daemon,
 * updated when the replication connection identifies the server (fields
 * are empty strings until then); sinks keep the pointer and read it when
 * they format an event.
 */
typedef struct SourceInfo {
    char dbname[64];     /* database the slot decodes */
    char system_id[32];  /* IDENTIFY_SYSTEM systemid */
    char slot[64];
    char name[64];       /* logical server name for events ([source] name) */
} SourceInfo;

typedef struct SinkContext {
    const Config *config;     /* borrowed, lives as long as the sink */
    Loop *loop;               /* for sinks with descriptors of their own */
    const SourceInfo *source; /* borrowed, see above */
} SinkContext;

/*
 * The source tables as PostgreSQL's catalog describes them, for sinks that
 * need more than the stream carries: column types for a mapping, which
 * columns the old row of an UPDATE/DELETE holds, which may be left out of an
 * UPDATE (unchanged TOAST). The replication client reads it before streaming
 * starts (again after every reconnect) and hands it to SinkOps.prepare.
 */
typedef struct CatalogColumn {
    char *name;
    char *type;          /* format_type(): "numeric(12,2)", "timestamp with time zone", "text[]" */
    TypeClass type_class;
    int numeric_scale;   /* numeric(p,s): s; -1 when unconstrained or not a numeric */
    int pk_position;     /* 1-based position in the primary key; 0 when not a key column */
    bool in_identity;    /* carried in the old row of UPDATE and DELETE */
    bool toastable;      /* may be stored out of line: absent from an UPDATE that left it alone */
    bool is_enum;
} CatalogColumn;

typedef struct CatalogTable {
    char *schema;
    char *table;
    char replica_identity; /* 'd' default (primary key), 'f' full, 'i' index, 'n' nothing */
    CatalogColumn *cols;   /* in attnum order */
    size_t n_cols;
} CatalogTable;

typedef struct Catalog {
    CatalogTable *tables; /* in [source] tables order */
    size_t n_tables;
} Catalog;

/* The table schema.table, or NULL. */
const CatalogTable *catalog_find(const Catalog *catalog, Str schema, Str table);

/* A column of t by name, or NULL. */
const CatalogColumn *catalog_column(const CatalogTable *t, const char *name);

/* Frees what the catalog holds (not the struct itself) and empties it. */
void catalog_clear(Catalog *catalog);

/* A snapshot of a sink's state for the status socket. */
typedef struct SinkStatus {
    const char *state;    /* "ok", "retrying", "backpressure", "failed" (static string) */
    Lsn durable_lsn;
    uint64_t queue_depth; /* events accepted but not yet durable */
    uint64_t queued_bytes;/* bytes held in memory */
    uint64_t events;      /* row events accepted since start */
    uint64_t bytes;       /* bytes written/sent since start */
    uint64_t retries;
    uint64_t errors;
    uint64_t dead_letters;
    char last_error[256]; /* empty when none */
} SinkStatus;

typedef struct SinkOps {
    /* Name in the config ("file" for [sink.file]) and in logs/status. */
    const char *name;

    /* Required ------------------------------------------------------------ */

    /* Creates the sink from ctx->config. Returns NULL and fills err
     * (ERR_CONFIG for bad settings, ERR_FATAL otherwise). */
    void *(*open)(const SinkContext *ctx, PfError *err);

    /* Takes one change (see the contract above). The change is borrowed for
     * the duration of the call. Never blocks. A false return is an error the
     * sink cannot handle itself (ERR_FATAL: pgfan stops without confirming). */
    bool (*submit)(void *self, const Change *change, PfError *err);

    /* Durable position (see the contract above). */
    Lsn (*durable_lsn)(const void *self);

    /* False while the sink holds as much as it may: backpressure. */
    bool (*can_accept)(const void *self);

    /* Drives the sink's own work (batch flushes, fsync, retries, collecting
     * acknowledgements). Called once per loop turn. Sets *next_deadline to
     * the monotonic time by which it wants to be polled again (TIME_NEVER
     * for none). Returns false with ERR_FATAL for an unrecoverable failure. */
    bool (*poll)(void *self, TimeUs now, TimeUs *next_deadline, PfError *err);

    /* Shutdown: make everything submitted durable as soon as possible (no
     * waiting for batch timers). Completion shows in durable_lsn(). */
    void (*flush)(void *self);

    /* Fills a status snapshot. */
    void (*status)(const void *self, SinkStatus *out);

    /* Releases everything. Does not flush: call flush() and wait first. */
    void (*close)(void *self);

    /* Optional (NULL: nothing to check) ------------------------------------ */

    /* Called with the catalog of the source tables before streaming starts,
     * and again after every reconnect (the tables may have changed). A false
     * return stops pgfan: ERR_CONFIG for what the operator must fix (exit 2,
     * e.g. a replica identity that cannot carry a needed column), ERR_FATAL
     * otherwise. */
    bool (*prepare)(void *self, const Catalog *catalog, PfError *err);

    /* SIGHUP: takes the options of its section that the option table marks
     * reloadable (batch sizes, intervals, buffer bounds) from cfg, copying
     * them (cfg is freed at a later reload). Everything else stays as it was
     * opened with. */
    void (*reconfigure)(void *self, const Config *cfg);
} SinkOps;

/* Finds a sink implementation by name; NULL when there is none. */
const SinkOps *sink_lookup(const char *name);

/* Names of all implemented sinks, NULL-terminated (for config validation). */
const char *const *sink_names(void);

#endif
