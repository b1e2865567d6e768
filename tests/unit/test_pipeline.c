/*
 * test_pipeline.c - the ordered acknowledgement contract, with recording
 * sinks whose durability the test controls.
 */
#include "../../daemon/pipeline.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* A sink that records what it is given and reports durable only what the
 * test releases: the "slow sink" of the contract tests. */
typedef struct RecSink {
    Lsn commits[64];
    size_t n_commits;
    size_t n_rows;
    size_t n_begins;
    Lsn released; /* the test moves this */
    bool full;
    bool fail_submit;
    bool fail_poll;
    bool flushed;
    bool refuse_catalog;      /* prepare fails with ERR_CONFIG */
    size_t catalog_tables;    /* tables seen by the last prepare */
    size_t n_prepares;
} RecSink;

static bool rec_submit(void *self, const Change *c, PfError *err)
{
    RecSink *s = self;
    if (s->fail_submit)
        return err_set(err, ERR_FATAL, "could not store change: disk on fire");
    if (c->kind == CHANGE_COMMIT)
        s->commits[s->n_commits++] = c->end_lsn;
    else if (c->kind == CHANGE_BEGIN)
        s->n_begins++;
    else
        s->n_rows++;
    return true;
}

static Lsn rec_durable(const void *self)
{
    return ((const RecSink *)self)->released;
}

static bool rec_can_accept(const void *self)
{
    return !((const RecSink *)self)->full;
}

static bool rec_poll(void *self, TimeUs now, TimeUs *next, PfError *err)
{
    RecSink *s = self;
    (void)now;
    *next = TIME_NEVER;
    if (s->fail_poll)
        return err_set(err, ERR_FATAL, "could not fsync: I/O error");
    return true;
}

static void rec_flush(void *self)
{
    ((RecSink *)self)->flushed = true;
}

static void rec_status(const void *self, SinkStatus *out)
{
    out->state = "ok";
    out->durable_lsn = ((const RecSink *)self)->released;
}

static void rec_close(void *self)
{
    (void)self;
}

static bool rec_prepare(void *self, const Catalog *catalog, PfError *err)
{
    RecSink *s = self;

    s->n_prepares++;
    s->catalog_tables = catalog->n_tables;
    if (s->refuse_catalog) {
        err_set(err, ERR_CONFIG, "table public.orders needs REPLICA IDENTITY FULL");
        return false;
    }
    return true;
}

static const SinkOps rec_ops = {.name = "rec", .submit = rec_submit, .durable_lsn = rec_durable,
                                .can_accept = rec_can_accept, .poll = rec_poll,
                                .flush = rec_flush, .status = rec_status, .close = rec_close,
                                .prepare = rec_prepare};

/* Like rec_ops without a catalog check. */
static const SinkOps plain_ops = {.name = "plain", .submit = rec_submit,
                                  .durable_lsn = rec_durable, .can_accept = rec_can_accept,
                                  .poll = rec_poll, .flush = rec_flush, .status = rec_status,
                                  .close = rec_close};

static Change begin_at(Lsn end, TimeUs commit_time)
{
    Change c;
    memset(&c, 0, sizeof c);
    c.kind = CHANGE_BEGIN;
    c.end_lsn = end;
    c.lsn = end - 0x30;
    c.has_commit_time = commit_time != 0;
    c.commit_time = commit_time;
    return c;
}

static Change commit_at(Lsn end, TimeUs commit_time)
{
    Change c = begin_at(end, commit_time);
    c.kind = CHANGE_COMMIT;
    return c;
}

static Change row(ChangeKind kind, Lsn lsn)
{
    Change c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lsn = lsn;
    return c;
}

static void submit_ok(Pipeline *p, Change c)
{
    PfError err;
    err_clear(&err);
    ck_assert_msg(pipeline_submit(p, &c, &err), "submit failed: %s", err.msg);
}

static void poll_ok(Pipeline *p)
{
    PfError err;
    TimeUs next;
    ck_assert(pipeline_poll(p, 0, &next, &err));
}

static void txn(Pipeline *p, Lsn end, int rows)
{
    submit_ok(p, begin_at(end, 1000));
    for (int i = 0; i < rows; i++)
        submit_ok(p, row(CHANGE_INSERT, end - 0x100 + (Lsn)i));
    submit_ok(p, commit_at(end, 1000));
}

START_TEST(test_confirms_min_over_sinks)
{
    Pipeline *p = pipeline_new(100);
    RecSink fast = {0}, slow = {0};

    pipeline_add_sink(p, &rec_ops, &fast);
    pipeline_add_sink(p, &rec_ops, &slow);
    txn(p, 0x1000, 2);
    txn(p, 0x2000, 1);
    txn(p, 0x3000, 0);
    ck_assert_uint_eq(fast.n_commits, 3);
    ck_assert_uint_eq(slow.n_rows, 3);

    poll_ok(p);
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0);

    fast.released = 0x3000; /* the fast sink has everything */
    poll_ok(p);
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0); /* the slow one has nothing yet */

    slow.released = 0x2000;
    poll_ok(p);
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0x2000);
    ck_assert_uint_eq(pipeline_inflight(p), 1);
    ck_assert(!pipeline_drained(p));

    slow.released = 0x3000;
    poll_ok(p);
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0x3000);
    ck_assert(pipeline_drained(p));
    pipeline_free(p);
}
END_TEST

START_TEST(test_never_moves_backwards)
{
    Pipeline *p = pipeline_new(100);
    RecSink s = {0};

    pipeline_add_sink(p, &rec_ops, &s);
    txn(p, 0x1000, 1);
    s.released = 0x1000;
    poll_ok(p);
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0x1000);
    s.released = 0x500; /* a buggy sink going back must not move the position */
    poll_ok(p);
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0x1000);
    pipeline_free(p);
}
END_TEST

START_TEST(test_keepalive_confirms_only_when_idle)
{
    Pipeline *p = pipeline_new(100);
    RecSink s = {0};

    pipeline_add_sink(p, &rec_ops, &s);
    pipeline_note_keepalive(p, 0x500); /* nothing ever received: idle slot advances */
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0x500);

    txn(p, 0x1000, 1);
    pipeline_note_keepalive(p, 0x2000); /* 0x1000 not durable: must not jump */
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0x500);

    submit_ok(p, begin_at(0x3000, 0));
    s.released = 0x1000;
    pipeline_note_keepalive(p, 0x2000); /* inside a transaction: only the prefix */
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0x1000);

    submit_ok(p, commit_at(0x3000, 0));
    s.released = 0x3000;
    pipeline_note_keepalive(p, 0x4000);
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0x4000);
    pipeline_free(p);
}
END_TEST

START_TEST(test_resent_transactions_are_not_forwarded_twice)
{
    Pipeline *p = pipeline_new(100);
    RecSink s = {0};

    pipeline_add_sink(p, &rec_ops, &s);
    txn(p, 0x1000, 2);
    txn(p, 0x2000, 2);
    submit_ok(p, begin_at(0x3000, 0)); /* open when the connection breaks */
    submit_ok(p, row(CHANGE_INSERT, 0x2F00));
    pipeline_stream_restarted(p);
    ck_assert(!pipeline_in_transaction(p));

    /* The server resends everything after the confirmed position (0). */
    txn(p, 0x1000, 2);
    txn(p, 0x2000, 2);
    ck_assert_uint_eq(s.n_commits, 2);
    ck_assert_uint_eq(s.n_rows, 5);
    txn(p, 0x3000, 1); /* the abandoned one comes again in full */
    ck_assert_uint_eq(s.n_commits, 3);
    ck_assert_uint_eq(s.n_rows, 6);
    s.released = 0x3000;
    poll_ok(p);
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 0x3000);
    pipeline_free(p);
}
END_TEST

START_TEST(test_backpressure)
{
    Pipeline *p = pipeline_new(2);
    RecSink s = {0};

    pipeline_add_sink(p, &rec_ops, &s);
    ck_assert(pipeline_can_accept(p));
    s.full = true;
    ck_assert(!pipeline_can_accept(p));
    s.full = false;
    txn(p, 0x1000, 0);
    ck_assert(pipeline_can_accept(p));
    txn(p, 0x2000, 0);
    ck_assert(!pipeline_can_accept(p)); /* FIFO bound reached */
    s.released = 0x1000;
    poll_ok(p);
    ck_assert(pipeline_can_accept(p));
    pipeline_free(p);
}
END_TEST

START_TEST(test_stream_errors)
{
    Pipeline *p = pipeline_new(10);
    RecSink s = {0};
    PfError err;
    Change c;
    TimeUs next;

    pipeline_add_sink(p, &rec_ops, &s);
    c = commit_at(0x1000, 0);
    ck_assert(!pipeline_submit(p, &c, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_str_eq(err.msg, "could not track transaction ending at 0/1000: COMMIT without BEGIN");

    c = row(CHANGE_INSERT, 0x900);
    ck_assert(!pipeline_submit(p, &c, &err));
    ck_assert_str_eq(err.msg, "could not track change at 0/900: I outside a transaction");

    txn(p, 0x2000, 0);
    submit_ok(p, begin_at(0x3000, 0));
    c = commit_at(0x1800, 0);
    ck_assert(!pipeline_submit(p, &c, &err));
    ck_assert_str_eq(err.msg, "could not track transaction ending at 0/1800: commit positions "
                              "went backwards (previous 0/2000)");

    s.fail_submit = true;
    c = row(CHANGE_INSERT, 0x2F00);
    ck_assert(!pipeline_submit(p, &c, &err));
    ck_assert_str_eq(err.msg, "sink=rec: could not store change: disk on fire");

    s.fail_poll = true;
    ck_assert(!pipeline_poll(p, 0, &next, &err));
    ck_assert_str_eq(err.msg, "sink=rec: could not fsync: I/O error");
    pipeline_free(p);
}
END_TEST

START_TEST(test_lag)
{
    Pipeline *p = pipeline_new(10);
    RecSink s = {0};

    pipeline_add_sink(p, &rec_ops, &s);
    ck_assert_int_eq(pipeline_lag_us(p, 5000000), 0);
    submit_ok(p, begin_at(0x1000, 2000000));
    ck_assert_int_eq(pipeline_lag_us(p, 5000000), 3000000);
    submit_ok(p, commit_at(0x1000, 2000000));
    txn(p, 0x2000, 0); /* commit time 1000 us, but the older one counts */
    ck_assert_int_eq(pipeline_lag_us(p, 5000000), 3000000);
    s.released = 0x1000;
    poll_ok(p);
    ck_assert_int_eq(pipeline_lag_us(p, 5000000), 5000000 - 1000);
    s.released = 0x2000;
    poll_ok(p);
    ck_assert_int_eq(pipeline_lag_us(p, 5000000), 0);
    pipeline_flush(p);
    ck_assert(s.flushed);
    pipeline_free(p);
}
END_TEST

/* Every confirmed transaction's commit-to-durable time lands in the
 * histogram; quantiles interpolate within a bucket as Prometheus does. */
START_TEST(test_commit_to_durable_latency)
{
    Pipeline *p = pipeline_new(100);
    RecSink s = {0};
    const PipelineLatency *lat = pipeline_latency(p);

    pipeline_add_sink(p, &rec_ops, &s);
    clock_set_fake(1000000, 100 * USECS_PER_SEC);
    ck_assert_double_eq(pipeline_latency_quantile(lat, 0.5), 0);
    /* committed 4 ms, 40 ms and 2 s before they become durable */
    submit_ok(p, begin_at(0x1000, 100 * USECS_PER_SEC - 4000));
    submit_ok(p, commit_at(0x1000, 100 * USECS_PER_SEC - 4000));
    submit_ok(p, begin_at(0x2000, 100 * USECS_PER_SEC - 40000));
    submit_ok(p, commit_at(0x2000, 100 * USECS_PER_SEC - 40000));
    submit_ok(p, begin_at(0x3000, 98 * USECS_PER_SEC));
    submit_ok(p, commit_at(0x3000, 98 * USECS_PER_SEC));
    s.released = 0x2000;
    poll_ok(p);
    ck_assert_uint_eq(lat->count, 2);
    ck_assert_uint_eq(lat->counts[2], 1); /* <= 5 ms */
    ck_assert_uint_eq(lat->counts[5], 1); /* <= 50 ms */
    s.released = 0x3000;
    poll_ok(p);
    ck_assert_uint_eq(lat->count, 3);
    ck_assert_uint_eq(lat->counts[10], 1); /* <= 2.5 s */
    ck_assert_int_eq(lat->max_us, 2 * USECS_PER_SEC);
    ck_assert_double_eq_tol(lat->sum_s, 2.044, 1e-9);
    /* median: the 1.5th of 3 lies half-way in the (25 ms, 50 ms] bucket */
    ck_assert_double_eq_tol(pipeline_latency_quantile(lat, 0.5), 0.0375, 1e-9);
    ck_assert_double_eq_tol(pipeline_latency_quantile(lat, 0.99), 2.0, 1e-9); /* max */
    pipeline_free(p);
}
END_TEST

static Change row_of(ChangeKind kind, Lsn lsn, const char *table)
{
    Change c = row(kind, lsn);

    c.schema = (Str){"public", 6};
    c.table = (Str){table, strlen(table)};
    return c;
}

/* Changes are counted per table and kind; a resent transaction the
 * pipeline skips is not counted twice. */
START_TEST(test_changes_by_table)
{
    Pipeline *p = pipeline_new(100);
    RecSink s = {0};

    pipeline_add_sink(p, &rec_ops, &s);
    submit_ok(p, begin_at(0x1000, 0));
    submit_ok(p, row_of(CHANGE_INSERT, 0x900, "orders"));
    submit_ok(p, row_of(CHANGE_INSERT, 0x901, "orders"));
    submit_ok(p, row_of(CHANGE_UPDATE, 0x902, "stores"));
    submit_ok(p, row_of(CHANGE_DELETE, 0x903, "orders"));
    submit_ok(p, commit_at(0x1000, 0));
    pipeline_stream_restarted(p);
    submit_ok(p, begin_at(0x1000, 0)); /* resent: skipped */
    submit_ok(p, row_of(CHANGE_INSERT, 0x900, "orders"));
    submit_ok(p, commit_at(0x1000, 0));
    submit_ok(p, begin_at(0x2000, 0));
    submit_ok(p, row_of(CHANGE_TRUNCATE, 0x1900, "stores"));
    submit_ok(p, commit_at(0x2000, 0));

    ck_assert_uint_eq(pipeline_table_count(p), 2);
    ck_assert_str_eq(pipeline_table_name(p, 0), "public.orders");
    ck_assert_uint_eq(pipeline_table_changes(p, 0, CHANGE_INSERT), 2);
    ck_assert_uint_eq(pipeline_table_changes(p, 0, CHANGE_DELETE), 1);
    ck_assert_uint_eq(pipeline_table_changes(p, 0, CHANGE_UPDATE), 0);
    ck_assert_str_eq(pipeline_table_name(p, 1), "public.stores");
    ck_assert_uint_eq(pipeline_table_changes(p, 1, CHANGE_UPDATE), 1);
    ck_assert_uint_eq(pipeline_table_changes(p, 1, CHANGE_TRUNCATE), 1);
    ck_assert_uint_eq(pipeline_table_changes(p, 1, CHANGE_BEGIN), 0);
    pipeline_free(p);
}
END_TEST

START_TEST(test_ring_growth_keeps_order)
{
    Pipeline *p = pipeline_new(100000);
    RecSink s = {0};
    PfError err;

    pipeline_add_sink(p, &rec_ops, &s);
    for (Lsn i = 1; i <= 1000; i++) {
        Change b = begin_at(i * 0x100, 0), c = commit_at(i * 0x100, 0);
        ck_assert(pipeline_submit(p, &b, &err));
        ck_assert(pipeline_submit(p, &c, &err));
        s.n_commits = 0; /* the recorder has room for 64 only */
        if (i % 300 == 0) {
            s.released = (i - 150) * 0x100;
            poll_ok(p);
            ck_assert_uint_eq(pipeline_confirmed_lsn(p), (i - 150) * 0x100);
        }
    }
    s.released = 1000 * 0x100;
    poll_ok(p);
    ck_assert_uint_eq(pipeline_confirmed_lsn(p), 1000 * 0x100);
    ck_assert_uint_eq(pipeline_inflight(p), 0);
    pipeline_free(p);
}
END_TEST

/* The catalog reaches every sink with a prepare callback; the first refusal
 * stops the others and names the sink. */
START_TEST(test_prepare_reaches_sinks_that_check)
{
    Pipeline *p = pipeline_new(100);
    RecSink plain = {0}, a = {0}, b = {0};
    CatalogTable tables[2] = {{.schema = (char *)"public", .table = (char *)"orders"},
                              {.schema = (char *)"public", .table = (char *)"stores"}};
    Catalog catalog = {.tables = tables, .n_tables = 2};
    PfError err;

    pipeline_add_sink(p, &plain_ops, &plain);
    pipeline_add_sink(p, &rec_ops, &a);
    pipeline_add_sink(p, &rec_ops, &b);
    ck_assert(pipeline_prepare(p, &catalog, &err));
    ck_assert_uint_eq(a.n_prepares, 1);
    ck_assert_uint_eq(a.catalog_tables, 2);
    ck_assert_uint_eq(b.n_prepares, 1);
    ck_assert_uint_eq(plain.n_prepares, 0);

    a.refuse_catalog = true;
    ck_assert(!pipeline_prepare(p, &catalog, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, "sink=rec: table public.orders needs REPLICA IDENTITY FULL");
    ck_assert_uint_eq(b.n_prepares, 1);
    pipeline_free(p);
}
END_TEST

static Suite *pipeline_suite(void)
{
    Suite *s = suite_create("pipeline");
    TCase *tc = tcase_create("tracker");

    tcase_add_test(tc, test_confirms_min_over_sinks);
    tcase_add_test(tc, test_never_moves_backwards);
    tcase_add_test(tc, test_keepalive_confirms_only_when_idle);
    tcase_add_test(tc, test_resent_transactions_are_not_forwarded_twice);
    tcase_add_test(tc, test_backpressure);
    tcase_add_test(tc, test_stream_errors);
    tcase_add_test(tc, test_lag);
    tcase_add_test(tc, test_ring_growth_keeps_order);
    tcase_add_test(tc, test_commit_to_durable_latency);
    tcase_add_test(tc, test_changes_by_table);
    tcase_add_test(tc, test_prepare_reaches_sinks_that_check);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pipeline_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
