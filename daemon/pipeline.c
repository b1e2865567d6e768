/*
 * pipeline.c - ordered transaction tracker and fan-out to sinks.
 *
 * Every sink sees every BEGIN/COMMIT, so each sink's durable_lsn is a commit
 * end LSN it was given; the minimum over sinks bounds how far the FIFO of
 * committed transactions may be popped. The FIFO is a ring that grows on
 * demand up to max_inflight_txns entries.
 */
#include "pipeline.h"

#include "../common/log.h"
#include "../common/mem.h"

#include <stdlib.h>
#include <string.h>

typedef struct TxnEntry {
    Lsn end_lsn;
    TimeUs commit_time; /* 0 when unknown */
} TxnEntry;

/* Changes forwarded for one table: [0] insert, [1] update, [2] delete, [3] truncate. */
typedef struct TableCount {
    char *name; /* "schema.table" */
    uint64_t by_kind[4];
} TableCount;

typedef struct PipelineSink {
    const SinkOps *ops;
    void *self;
} PipelineSink;

struct Pipeline {
    PipelineSink *sinks;
    size_t n_sinks;

    TxnEntry *ring; /* committed, not yet confirmed, in commit order */
    size_t ring_cap;
    size_t ring_head; /* index of the oldest entry */
    size_t ring_len;
    size_t ring_max;

    bool in_txn;          /* a BEGIN was forwarded, its COMMIT not yet */
    Lsn open_end_lsn;     /* end_lsn of the open transaction's BEGIN */
    bool skipping;        /* inside a resent transaction we already forwarded */
    TimeUs open_commit_time;
    Lsn last_commit_lsn;  /* end LSN of the last COMMIT seen (forwarded) */
    Lsn confirmed_lsn;
    PipelineLatency latency;
    TableCount *tables;
    size_t n_tables;
    size_t last_table; /* index of the last table counted: consecutive changes repeat it */
};

/* 1 ms .. 60 s: a healthy pipeline sits in the first buckets (the file
 * sink's fsync interval, a Kafka linger), a stalled sink in the last. */
static const double latency_bounds[PIPELINE_LATENCY_BOUNDS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60};

Pipeline *pipeline_new(size_t max_inflight_txns)
{
    Pipeline *p = xcalloc(1, sizeof *p);

    p->ring_max = max_inflight_txns ? max_inflight_txns : 1;
    p->latency.bounds = latency_bounds;
    return p;
}

void pipeline_free(Pipeline *p)
{
    if (!p)
        return;
    free(p->sinks);
    free(p->ring);
    for (size_t i = 0; i < p->n_tables; i++)
        free(p->tables[i].name);
    free(p->tables);
    free(p);
}

void pipeline_add_sink(Pipeline *p, const SinkOps *ops, void *self)
{
    p->sinks = xrealloc(p->sinks, (p->n_sinks + 1) * sizeof *p->sinks);
    p->sinks[p->n_sinks].ops = ops;
    p->sinks[p->n_sinks].self = self;
    p->n_sinks++;
}

static void ring_push(Pipeline *p, Lsn end_lsn, TimeUs commit_time)
{
    if (p->ring_len == p->ring_cap) {
        size_t cap = p->ring_cap ? p->ring_cap * 2 : 64;
        TxnEntry *ring = xmalloc(cap * sizeof *ring);

        for (size_t i = 0; i < p->ring_len; i++)
            ring[i] = p->ring[(p->ring_head + i) % p->ring_cap];
        free(p->ring);
        p->ring = ring;
        p->ring_cap = cap;
        p->ring_head = 0;
    }
    p->ring[(p->ring_head + p->ring_len) % p->ring_cap] = (TxnEntry){end_lsn, commit_time};
    p->ring_len++;
}

static bool forward(Pipeline *p, const Change *change, PfError *err)
{
    for (size_t i = 0; i < p->n_sinks; i++) {
        PipelineSink *s = &p->sinks[i];
        if (!s->ops->submit(s->self, change, err)) {
            err_prefix(err, "sink=%s", s->ops->name);
            return false;
        }
    }
    return true;
}

/* Row changes carry their transaction's commit end LSN (see change.h). */
static bool forward_in_txn(Pipeline *p, const Change *change, PfError *err)
{
    Change c = *change;

    c.end_lsn = p->open_end_lsn;
    return forward(p, &c, err);
}

/* memcmp/memcpy of a span that may be empty (its pointer then may be NULL,
 * which the C library functions do not allow even for length 0). */
static bool span_is(const char *s, Str span)
{
    return span.len == 0 || memcmp(s, span.ptr, span.len) == 0;
}

static void span_copy(char *dst, Str span)
{
    if (span.len > 0)
        memcpy(dst, span.ptr, span.len);
}

static bool table_is(const TableCount *t, const Change *c)
{
    return strlen(t->name) == c->schema.len + 1 + c->table.len && span_is(t->name, c->schema) &&
           t->name[c->schema.len] == '.' && span_is(t->name + c->schema.len + 1, c->table);
}

static void count_change(Pipeline *p, const Change *c)
{
    size_t i = p->last_table;

    if (i >= p->n_tables || !table_is(&p->tables[i], c)) {
        for (i = 0; i < p->n_tables && !table_is(&p->tables[i], c); i++)
            ;
        if (i == p->n_tables) {
            TableCount *t;

            p->tables = xrealloc(p->tables, (p->n_tables + 1) * sizeof *p->tables);
            t = &p->tables[p->n_tables++];
            memset(t, 0, sizeof *t);
            t->name = xmalloc(c->schema.len + c->table.len + 2);
            span_copy(t->name, c->schema);
            t->name[c->schema.len] = '.';
            span_copy(t->name + c->schema.len + 1, c->table);
            t->name[c->schema.len + 1 + c->table.len] = '\0';
        }
        p->last_table = i;
    }
    p->tables[i].by_kind[c->kind - CHANGE_INSERT]++;
}

size_t pipeline_table_count(const Pipeline *p)
{
    return p->n_tables;
}

const char *pipeline_table_name(const Pipeline *p, size_t i)
{
    return p->tables[i].name;
}

uint64_t pipeline_table_changes(const Pipeline *p, size_t i, ChangeKind kind)
{
    if (kind < CHANGE_INSERT || kind > CHANGE_TRUNCATE)
        return 0;
    return p->tables[i].by_kind[kind - CHANGE_INSERT];
}

bool pipeline_submit(Pipeline *p, const Change *change, PfError *err)
{
    char a[LSN_TEXT_SIZE], b[LSN_TEXT_SIZE];

    switch (change->kind) {
    case CHANGE_BEGIN:
        /* A BEGIN while one is open: the connection was lost mid-transaction
         * and the stream restarted; sinks are told the same way. */
        if (change->end_lsn != LSN_INVALID && change->end_lsn <= p->last_commit_lsn) {
            p->skipping = true;
            p->in_txn = false;
            return true;
        }
        p->skipping = false;
        p->in_txn = true;
        p->open_end_lsn = change->end_lsn;
        p->open_commit_time = change->has_commit_time ? change->commit_time : 0;
        return forward(p, change, err);

    case CHANGE_COMMIT:
        if (p->skipping) {
            p->skipping = false;
            return true;
        }
        if (!p->in_txn)
            return err_set(err, ERR_FATAL,
                           "could not track transaction ending at %s: COMMIT without BEGIN",
                           lsn_format(change->end_lsn, a));
        if (change->end_lsn <= p->last_commit_lsn)
            return err_set(err, ERR_FATAL,
                           "could not track transaction ending at %s: commit positions went "
                           "backwards (previous %s)",
                           lsn_format(change->end_lsn, a), lsn_format(p->last_commit_lsn, b));
        if (!forward(p, change, err))
            return false;
        p->in_txn = false;
        p->last_commit_lsn = change->end_lsn;
        ring_push(p, change->end_lsn,
                  change->has_commit_time ? change->commit_time : p->open_commit_time);
        return true;

    case CHANGE_MESSAGE:
        if (p->skipping)
            return true;
        if (change->transactional && p->in_txn)
            return forward_in_txn(p, change, err);
        return forward(p, change, err);

    case CHANGE_INSERT:
    case CHANGE_UPDATE:
    case CHANGE_DELETE:
    case CHANGE_TRUNCATE:
        if (p->skipping)
            return true;
        if (!p->in_txn)
            return err_set(err, ERR_FATAL,
                           "could not track change at %s: %s outside a transaction",
                           lsn_format(change->lsn, a), change_kind_name(change->kind));
        count_change(p, change);
        return forward_in_txn(p, change, err);
    }
    return err_set(err, ERR_FATAL, "could not track change: unknown kind %d", (int)change->kind);
}

bool pipeline_can_accept(const Pipeline *p)
{
    if (p->ring_len >= p->ring_max)
        return false;
    for (size_t i = 0; i < p->n_sinks; i++) {
        if (!p->sinks[i].ops->can_accept(p->sinks[i].self))
            return false;
    }
    return true;
}

bool pipeline_in_transaction(const Pipeline *p)
{
    return p->in_txn || p->skipping;
}

static Lsn min_durable(const Pipeline *p)
{
    Lsn min = p->last_commit_lsn;

    for (size_t i = 0; i < p->n_sinks; i++) {
        Lsn d = p->sinks[i].ops->durable_lsn(p->sinks[i].self);
        if (d < min)
            min = d;
    }
    return min;
}

static void note_latency(PipelineLatency *lat, TimeUs us)
{
    double s = (double)us / USECS_PER_SEC;
    size_t i = 0;

    while (i < PIPELINE_LATENCY_BOUNDS && s > lat->bounds[i])
        i++;
    lat->counts[i]++;
    lat->count++;
    lat->sum_s += s;
    if (us > lat->max_us)
        lat->max_us = us;
}

static void advance(Pipeline *p)
{
    Lsn durable = min_durable(p);
    TimeUs now_wall = 0;

    while (p->ring_len > 0 && p->ring[p->ring_head].end_lsn <= durable) {
        Lsn end = p->ring[p->ring_head].end_lsn;
        TimeUs committed = p->ring[p->ring_head].commit_time;

        if (committed > 0) {
            if (now_wall == 0)
                now_wall = clock_wall_us();
            note_latency(&p->latency, now_wall > committed ? now_wall - committed : 0);
        }
        if (end > p->confirmed_lsn)
            p->confirmed_lsn = end;
        p->ring_head = (p->ring_head + 1) % p->ring_cap;
        p->ring_len--;
    }
}

bool pipeline_prepare(Pipeline *p, const Catalog *catalog, PfError *err)
{
    for (size_t i = 0; i < p->n_sinks; i++) {
        PipelineSink *s = &p->sinks[i];

        if (s->ops->prepare && !s->ops->prepare(s->self, catalog, err)) {
            err_prefix(err, "sink=%s", s->ops->name);
            return false;
        }
    }
    return true;
}

void pipeline_reconfigure(Pipeline *p, const Config *cfg)
{
    for (size_t i = 0; i < p->n_sinks; i++) {
        if (p->sinks[i].ops->reconfigure)
            p->sinks[i].ops->reconfigure(p->sinks[i].self, cfg);
    }
}

bool pipeline_poll(Pipeline *p, TimeUs now, TimeUs *next_deadline, PfError *err)
{
    *next_deadline = TIME_NEVER;
    for (size_t i = 0; i < p->n_sinks; i++) {
        PipelineSink *s = &p->sinks[i];
        TimeUs want = TIME_NEVER;

        if (!s->ops->poll(s->self, now, &want, err)) {
            err_prefix(err, "sink=%s", s->ops->name);
            return false;
        }
        if (want < *next_deadline)
            *next_deadline = want;
    }
    advance(p);
    return true;
}

void pipeline_note_keepalive(Pipeline *p, Lsn wal_end)
{
    advance(p);
    if (p->ring_len == 0 && !pipeline_in_transaction(p) && wal_end > p->confirmed_lsn &&
        p->confirmed_lsn >= p->last_commit_lsn)
        p->confirmed_lsn = wal_end;
}

void pipeline_stream_restarted(Pipeline *p)
{
    /* Sinks keep the open transaction's changes they already took (at-least-once);
     * the transaction comes again from its BEGIN. */
    p->in_txn = false;
    p->skipping = false;
}

void pipeline_flush(Pipeline *p)
{
    for (size_t i = 0; i < p->n_sinks; i++)
        p->sinks[i].ops->flush(p->sinks[i].self);
}

Lsn pipeline_confirmed_lsn(const Pipeline *p)
{
    return p->confirmed_lsn;
}

Lsn pipeline_last_commit_lsn(const Pipeline *p)
{
    return p->last_commit_lsn;
}

bool pipeline_drained(const Pipeline *p)
{
    return p->ring_len == 0 && p->confirmed_lsn >= p->last_commit_lsn;
}

size_t pipeline_inflight(const Pipeline *p)
{
    return p->ring_len + (p->in_txn ? 1 : 0);
}

TimeUs pipeline_lag_us(const Pipeline *p, TimeUs now_wall)
{
    TimeUs oldest = 0;

    if (p->ring_len > 0)
        oldest = p->ring[p->ring_head].commit_time;
    else if (p->in_txn)
        oldest = p->open_commit_time;
    if (oldest <= 0 || now_wall <= oldest)
        return 0;
    return now_wall - oldest;
}

size_t pipeline_sink_count(const Pipeline *p)
{
    return p->n_sinks;
}

const char *pipeline_sink_name(const Pipeline *p, size_t i)
{
    return p->sinks[i].ops->name;
}

void pipeline_sink_status(const Pipeline *p, size_t i, SinkStatus *out)
{
    memset(out, 0, sizeof *out);
    p->sinks[i].ops->status(p->sinks[i].self, out);
}

const PipelineLatency *pipeline_latency(const Pipeline *p)
{
    return &p->latency;
}

double pipeline_latency_quantile(const PipelineLatency *lat, double q)
{
    double rank = q * (double)lat->count, below = 0, lower = 0;

    if (lat->count == 0)
        return 0;
    for (size_t i = 0; i <= PIPELINE_LATENCY_BOUNDS; i++) {
        double upper = i < PIPELINE_LATENCY_BOUNDS ? lat->bounds[i]
                                                   : (double)lat->max_us / USECS_PER_SEC;

        if (below + (double)lat->counts[i] >= rank && lat->counts[i] > 0) {
            double v;

            if (upper < lower)
                upper = lower;
            v = lower + (upper - lower) * (rank - below) / (double)lat->counts[i];
            /* never above the largest time seen */
            return v < (double)lat->max_us / USECS_PER_SEC ? v : (double)lat->max_us / USECS_PER_SEC;
        }
        below += (double)lat->counts[i];
        if (i < PIPELINE_LATENCY_BOUNDS)
            lower = lat->bounds[i];
    }
    return (double)lat->max_us / USECS_PER_SEC;
}
