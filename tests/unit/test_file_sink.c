/*
 * test_file_sink.c - the NDJSON file sink and the sink registry.
 *
 * Each test gets its own directory under /tmp and a hand-filled Config.
 * Time is the fake clock (clock_set_fake), so fsync intervals and retry
 * backoffs are crossed by advancing it, never by sleeping. Disk errors come
 * from the write/fsync seam in sinks/file_test.h.
 */
#include "../../common/clock.h"
#include "../../common/log.h"
#include "../../sinks/envelope.h"
#include "../../sinks/file_test.h"
#include "../../sinks/sink.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S(lit) {(lit), sizeof(lit) - 1}
#define SV(lit) ((Str)S(lit))

#define MONO0 (INT64_C(1000) * USECS_PER_SEC)
#define WALL0 INT64_C(1763892000123456)
#define MS USECS_PER_MSEC

extern const SinkOps sink_file_ops;

static const SinkOps *ops = &sink_file_ops;

typedef struct Fixture {
    char dir[64];
    char path[128];
    Config cfg;
    SourceInfo src;
    SinkContext ctx;
} Fixture;

static Fixture fx;

static void fixture_setup(void)
{
    memset(&fx, 0, sizeof fx);
    strcpy(fx.dir, "/tmp/pgfan-file-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(fx.dir));
    snprintf(fx.path, sizeof fx.path, "%s/out.ndjson", fx.dir);
    fx.cfg.file.enabled = true;
    fx.cfg.file.path = fx.path;
    fx.cfg.file.fsync_interval = 100 * MS;
    fx.cfg.file.max_buffer_bytes = 8 * 1024 * 1024;
    strcpy(fx.src.dbname, "shop");
    strcpy(fx.src.name, "shop");
    fx.ctx.config = &fx.cfg;
    fx.ctx.source = &fx.src;
    clock_set_fake(MONO0, WALL0);
    file_sink_set_io_for_tests(NULL, NULL);
}

static void fixture_teardown(void)
{
    char cmd[160];

    file_sink_set_io_for_tests(NULL, NULL);
    clock_set_fake(-1, 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx.dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Changes ---------------------------------------------------------------------- */

static const Column row_cols[] = {
    {S("id"), S("bigint"), TYPE_INT, {VALUE_NUMBER, S("42")}},
    {S("status"), S("text"), TYPE_TEXT, {VALUE_STRING, S("paid")}},
    {S("total_amount"), S("numeric(12,2)"), TYPE_NUMERIC, {VALUE_NUMBER, S("129.90")}},
};
static const Str pk_id[] = {S("id")};

static Change make_change(ChangeKind kind, Lsn lsn)
{
    Change c;

    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.lsn = lsn;
    c.has_xid = true;
    c.xid = 731;
    c.has_commit_time = true;
    c.commit_time = WALL0 - 5 * USECS_PER_SEC;
    if (kind == CHANGE_BEGIN || kind == CHANGE_COMMIT) {
        c.end_lsn = lsn;
        return c;
    }
    c.schema = SV("public");
    c.table = SV("orders");
    c.pk = pk_id;
    c.n_pk = 1;
    if (kind == CHANGE_INSERT || kind == CHANGE_UPDATE) {
        c.new_cols = row_cols;
        c.n_new = 3;
    }
    if (kind == CHANGE_UPDATE || kind == CHANGE_DELETE) {
        c.old_cols = row_cols;
        c.n_old = 1;
    }
    if (kind == CHANGE_MESSAGE) {
        c.prefix = SV("cdc_hb");
        c.content = SV("2026-11-23 10:00:00+00");
    }
    return c;
}

static void submit(void *sink, ChangeKind kind, Lsn lsn)
{
    Change c = make_change(kind, lsn);
    PfError err;

    err_clear(&err);
    ck_assert_msg(ops->submit(sink, &c, &err), "submit failed: %s", err.msg);
}

/* One transaction: BEGIN, n inserts, COMMIT with end_lsn. */
static void submit_txn(void *sink, Lsn end_lsn, int n)
{
    submit(sink, CHANGE_BEGIN, end_lsn);
    for (int i = 0; i < n; i++)
        submit(sink, CHANGE_INSERT, end_lsn - 0x100 + (Lsn)i);
    submit(sink, CHANGE_COMMIT, end_lsn);
}

static void *open_sink(void)
{
    PfError err;
    void *sink;

    err_clear(&err);
    sink = ops->open(&fx.ctx, &err);
    ck_assert_msg(sink != NULL, "open failed: %s", err.msg);
    return sink;
}

static bool poll_now(void *sink, TimeUs *deadline, PfError *err)
{
    TimeUs ignored;

    err_clear(err);
    return ops->poll(sink, clock_mono_us(), deadline ? deadline : &ignored, err);
}

static void poll_ok(void *sink, TimeUs *deadline)
{
    PfError err;

    ck_assert_msg(poll_now(sink, deadline, &err), "poll failed: %s", err.msg);
}

/* Lines are written when their fsync is due: lets fsync_interval pass, then polls. */
static void poll_due(void *sink, TimeUs *deadline)
{
    clock_advance_fake(fx.cfg.file.fsync_interval);
    poll_ok(sink, deadline);
}

static char *read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    char *data;
    long len;

    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    data = malloc((size_t)len + 1);
    ck_assert_int_eq(fread(data, 1, (size_t)len, f), (size_t)len);
    data[len] = '\0';
    fclose(f);
    if (len_out)
        *len_out = (size_t)len;
    return data;
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

static off_t file_size(const char *path)
{
    struct stat st;

    ck_assert_int_eq(stat(path, &st), 0);
    return st.st_size;
}

/* Fake system calls ---------------------------------------------------------- */

static int fsync_calls;
static int fsync_errno; /* 0: real fsync */
static int write_calls;
static int write_errno;        /* 0: real write */
static size_t write_max_chunk; /* 0: unlimited, else short writes */
static int write_ok_calls;     /* calls that succeed before write_errno applies */

static int counting_fsync(int fd)
{
    fsync_calls++;
    if (fsync_errno) {
        errno = fsync_errno;
        return -1;
    }
    return fsync(fd);
}

static ssize_t faulty_write(int fd, const void *data, size_t len)
{
    write_calls++;
    if (write_errno && write_calls > write_ok_calls) {
        errno = write_errno;
        return -1;
    }
    if (write_max_chunk && len > write_max_chunk)
        len = write_max_chunk;
    return write(fd, data, len);
}

static void use_fake_io(void)
{
    fsync_calls = 0;
    fsync_errno = 0;
    write_calls = 0;
    write_errno = 0;
    write_max_chunk = 0;
    write_ok_calls = 0;
    file_sink_set_io_for_tests(faulty_write, counting_fsync);
}

/* Runs open with stderr captured into *log_out (caller frees). */
static void *open_capturing_log(char **log_out, PfError *err)
{
    char logpath[160];
    int saved = dup(STDERR_FILENO);
    int fd;
    void *sink;

    snprintf(logpath, sizeof logpath, "%s/stderr.log", fx.dir);
    fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    dup2(fd, STDERR_FILENO);
    close(fd);
    err_clear(err);
    sink = ops->open(&fx.ctx, err);
    dup2(saved, STDERR_FILENO);
    close(saved);
    *log_out = read_file(logpath, NULL);
    return sink;
}

/* Output --------------------------------------------------------------------- */

START_TEST(test_lines_equal_envelopes)
{
    static const ChangeKind kinds[] = {CHANGE_BEGIN,  CHANGE_INSERT,   CHANGE_UPDATE,
                                       CHANGE_MESSAGE, CHANGE_DELETE,  CHANGE_TRUNCATE,
                                       CHANGE_COMMIT};
    void *sink = open_sink();
    Buf expected = BUF_INIT;
    char *got;

    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        Change c = make_change(kinds[i], 0x1000 + i);

        if (envelope_append(&expected, &c, &fx.src, clock_wall_us()))
            buf_append_char(&expected, '\n');
        submit(sink, kinds[i], 0x1000 + i);
    }
    poll_due(sink, NULL);
    got = read_file(fx.path, NULL);
    ck_assert_str_eq(got, expected.data);
    /* Four row events, four lines; BEGIN, MESSAGE and COMMIT wrote nothing. */
    ck_assert_int_eq(expected.len > 0, 1);
    {
        int lines = 0;
        for (const char *p = got; *p; p++)
            lines += *p == '\n';
        ck_assert_int_eq(lines, 4);
    }
    free(got);
    buf_free(&expected);
    ops->close(sink);
}
END_TEST

START_TEST(test_appends_to_existing_file)
{
    void *sink;
    char *got;

    write_file(fx.path, "old line\n", 9);
    sink = open_sink();
    submit_txn(sink, 0x200, 1);
    ops->flush(sink);
    got = read_file(fx.path, NULL);
    ck_assert_msg(strncmp(got, "old line\n{\"before\":null,\"after\":{\"id\":42,", 41) == 0, "got %s",
                  got);
    free(got);
    ops->close(sink);
}
END_TEST

START_TEST(test_large_buffer_written_from_submit)
{
    void *sink = open_sink();
    SinkStatus st;
    int n = 0;

    /* Past 256 kB the buffer is written without waiting for a poll. */
    submit(sink, CHANGE_BEGIN, 0x100000);
    while (file_size(fx.path) == 0) {
        submit(sink, CHANGE_INSERT, 0x1000 + (Lsn)n);
        n++;
        ck_assert_int_lt(n, 100000);
    }
    ops->status(sink, &st);
    ck_assert_uint_ge((uint64_t)file_size(fx.path), 256 * 1024);
    ck_assert_uint_eq(st.queued_bytes, 0);
    ck_assert_uint_eq(st.events, (uint64_t)n);
    ops->close(sink);
}
END_TEST

START_TEST(test_short_writes)
{
    void *sink;
    Buf expected = BUF_INIT;
    char *got;

    use_fake_io();
    write_max_chunk = 7;
    sink = open_sink();
    submit(sink, CHANGE_BEGIN, 0x300);
    for (int i = 0; i < 5; i++) {
        Change c = make_change(CHANGE_INSERT, 0x200 + (Lsn)i);

        envelope_append(&expected, &c, &fx.src, clock_wall_us());
        buf_append_char(&expected, '\n');
        submit(sink, CHANGE_INSERT, 0x200 + (Lsn)i);
    }
    submit(sink, CHANGE_COMMIT, 0x300);
    poll_due(sink, NULL);
    ck_assert_int_gt(write_calls, 5);
    got = read_file(fx.path, NULL);
    ck_assert_str_eq(got, expected.data);
    free(got);
    buf_free(&expected);
    ops->close(sink);
}
END_TEST

/* Durability ------------------------------------------------------------------- */

START_TEST(test_durable_only_after_fsync)
{
    void *sink;
    TimeUs deadline;
    SinkStatus st;

    use_fake_io();
    sink = open_sink();
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);
    submit_txn(sink, 0x100, 2);
    submit_txn(sink, 0x200, 3);
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);

    poll_ok(sink, &deadline); /* interval not yet elapsed: nothing written yet */
    ck_assert_int_eq(write_calls, 0);
    ck_assert_int_eq(fsync_calls, 0);
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);
    ck_assert_int_eq(deadline, MONO0 + 100 * MS);
    ops->status(sink, &st);
    ck_assert_uint_eq(st.queue_depth, 5);
    ck_assert_uint_gt(st.queued_bytes, 0);

    clock_advance_fake(99 * MS);
    poll_ok(sink, &deadline);
    ck_assert_int_eq(write_calls, 0);
    ck_assert_int_eq(fsync_calls, 0);
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);

    /* Due: one write(2) for all five lines, then the fsync. */
    clock_advance_fake(1 * MS);
    poll_ok(sink, &deadline);
    ck_assert_int_eq(write_calls, 1);
    ck_assert_int_eq(fsync_calls, 1);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x200);
    ck_assert_int_eq(deadline, TIME_NEVER);
    ops->status(sink, &st);
    ck_assert_str_eq(st.state, "ok");
    ck_assert_uint_eq(st.durable_lsn, 0x200);
    ck_assert_uint_eq(st.queue_depth, 0);
    ck_assert_uint_eq(st.events, 5);
    ck_assert_uint_eq(st.bytes, (uint64_t)file_size(fx.path));

    /* Nothing new: no more fsyncs. */
    clock_advance_fake(1000 * MS);
    poll_ok(sink, &deadline);
    ck_assert_int_eq(fsync_calls, 1);
    ck_assert_int_eq(deadline, TIME_NEVER);
    ops->close(sink);
}
END_TEST

START_TEST(test_one_write_per_fsync)
{
    void *sink;
    TimeUs deadline;

    use_fake_io();
    sink = open_sink();
    /* 20 polls 4 ms apart, a transaction before each: no write(2) before the fsync is due. */
    for (int i = 0; i < 20; i++) {
        submit_txn(sink, 0x1000 + 0x100 * (Lsn)i, 2);
        poll_ok(sink, &deadline);
        ck_assert_int_eq(deadline, MONO0 + 100 * MS);
        clock_advance_fake(4 * MS);
    }
    ck_assert_int_eq(write_calls, 0);
    clock_advance_fake(20 * MS); /* MONO0 + 100 ms */
    poll_ok(sink, &deadline);
    ck_assert_int_eq(write_calls, 1);
    ck_assert_int_eq(fsync_calls, 1);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x1000 + 0x100 * 19);
    ck_assert_int_eq(deadline, TIME_NEVER);

    /* Half of max_buffer_bytes is written at once, without waiting for the poll. */
    fx.cfg.file.max_buffer_bytes = 1000;
    ops->reconfigure(sink, &fx.cfg);
    submit(sink, CHANGE_BEGIN, 0x9000);
    for (int i = 0; write_calls == 1; i++) {
        submit(sink, CHANGE_INSERT, 0x8000 + (Lsn)i);
        ck_assert_int_lt(i, 10);
    }
    ck_assert_int_eq(write_calls, 2);
    ops->close(sink);
}
END_TEST

START_TEST(test_fsync_interval_zero)
{
    void *sink;
    TimeUs deadline;

    fx.cfg.file.fsync_interval = 0;
    use_fake_io();
    sink = open_sink();
    poll_ok(sink, &deadline);
    ck_assert_int_eq(fsync_calls, 0); /* nothing unsynced */
    ck_assert_int_eq(deadline, TIME_NEVER);
    submit_txn(sink, 0x100, 1);
    poll_ok(sink, &deadline);
    ck_assert_int_eq(fsync_calls, 1);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x100);
    ck_assert_int_eq(deadline, TIME_NEVER);
    ops->close(sink);
}
END_TEST

START_TEST(test_fsync_interval_counts_from_first_unsynced_write)
{
    void *sink;
    TimeUs deadline;

    use_fake_io();
    sink = open_sink();
    submit_txn(sink, 0x100, 1);
    poll_ok(sink, &deadline); /* first unsynced write at MONO0 */
    clock_advance_fake(60 * MS);
    submit_txn(sink, 0x200, 1);
    poll_ok(sink, &deadline); /* more data: the deadline does not move */
    ck_assert_int_eq(deadline, MONO0 + 100 * MS);
    clock_advance_fake(40 * MS);
    poll_ok(sink, &deadline);
    ck_assert_int_eq(fsync_calls, 1);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x200);
    ops->close(sink);
}
END_TEST

START_TEST(test_buffered_commit_not_durable)
{
    void *sink;
    TimeUs deadline;
    SinkStatus st;

    use_fake_io();
    sink = open_sink();
    submit_txn(sink, 0x100, 1);
    poll_due(sink, NULL); /* 0x100 written and synced */
    ck_assert_int_eq(fsync_calls, 1);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x100);

    /* 0x200's line cannot be written (disk full): nothing to fsync, not durable. */
    submit_txn(sink, 0x200, 1);
    write_errno = ENOSPC;
    poll_due(sink, &deadline);
    ck_assert_int_eq(fsync_calls, 1);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x100);
    ops->status(sink, &st);
    ck_assert_uint_eq(st.queue_depth, 1);
    ck_assert_uint_gt(st.queued_bytes, 0);

    /* A commit written only partly before the fsync is not durable either. */
    write_errno = 0;
    clock_advance_fake(1000 * MS);
    submit(sink, CHANGE_BEGIN, 0x300);
    submit(sink, CHANGE_INSERT, 0x280);
    poll_ok(sink, &deadline); /* writes and fsyncs 0x200 and half of 0x300 */
    ck_assert_int_eq(fsync_calls, 2);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x200);
    submit(sink, CHANGE_INSERT, 0x281);
    submit(sink, CHANGE_COMMIT, 0x300);
    ops->flush(sink);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x300);
    ops->close(sink);
}
END_TEST

START_TEST(test_midtxn_write_does_not_cover_open_txn)
{
    void *sink;

    use_fake_io();
    fx.cfg.file.fsync_interval = 0;
    sink = open_sink();
    submit_txn(sink, 0x100, 1);
    submit(sink, CHANGE_BEGIN, 0x200);
    submit(sink, CHANGE_INSERT, 0x150);
    poll_ok(sink, NULL); /* writes and fsyncs 0x100 plus the open txn's line */
    ck_assert_int_eq(fsync_calls, 1);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x100);
    /* Its commit then finds everything written and synced: durable at once. */
    submit(sink, CHANGE_COMMIT, 0x200);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x200);
    ops->close(sink);
}
END_TEST

START_TEST(test_empty_txn_durable_when_nothing_pending)
{
    void *sink;
    TimeUs deadline;

    use_fake_io();
    sink = open_sink();
    submit_txn(sink, 0x50, 0);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x50);
    ck_assert_int_eq(fsync_calls, 0);

    /* Behind unsynced data, it waits for that data's fsync. */
    submit_txn(sink, 0x100, 1);
    poll_ok(sink, NULL);
    submit_txn(sink, 0x150, 0);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x50);
    /* Behind buffered data too. */
    submit_txn(sink, 0x200, 1);
    submit_txn(sink, 0x250, 0);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x50);
    clock_advance_fake(100 * MS);
    poll_ok(sink, &deadline);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x250);
    /* Synced and idle: the next empty one is durable at once. */
    submit_txn(sink, 0x300, 0);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x300);
    ops->close(sink);
}
END_TEST

START_TEST(test_flush)
{
    void *sink;
    TimeUs deadline;

    fx.cfg.file.fsync_interval = 3600 * USECS_PER_SEC;
    use_fake_io();
    sink = open_sink();
    submit_txn(sink, 0x100, 2);
    poll_ok(sink, NULL);
    submit_txn(sink, 0x200, 2);
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);
    ops->flush(sink);
    ck_assert_int_eq(fsync_calls, 1);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x200);
    poll_ok(sink, &deadline);
    ck_assert_int_eq(deadline, TIME_NEVER);
    ops->flush(sink); /* nothing left: no fsync */
    ck_assert_int_eq(fsync_calls, 1);
    ops->close(sink);
}
END_TEST

START_TEST(test_not_a_regular_file)
{
    void *sink;

    use_fake_io();
    fx.cfg.file.path = (char *)"/dev/null";
    sink = open_sink();
    submit_txn(sink, 0x100, 2);
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);
    poll_ok(sink, NULL);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x100);
    ck_assert_int_eq(fsync_calls, 0);
    ops->close(sink);
}
END_TEST

/* Backpressure ---------------------------------------------------------------- */

START_TEST(test_backpressure)
{
    void *sink;
    SinkStatus st;
    int n = 0;

    fx.cfg.file.max_buffer_bytes = 1000;
    use_fake_io();
    sink = open_sink();
    submit(sink, CHANGE_BEGIN, 0x10000);
    /* Half the bound is written at once; a full disk makes the buffer fill up. */
    write_errno = ENOSPC;
    while (ops->can_accept(sink)) {
        submit(sink, CHANGE_INSERT, 0x100 + (Lsn)n);
        n++;
        ck_assert_int_lt(n, 100);
    }
    ops->status(sink, &st);
    ck_assert_str_eq(st.state, "retrying"); /* says why it holds the stream */
    ck_assert(!ops->can_accept(sink));
    ck_assert_uint_ge(st.queued_bytes, 1000);
    ck_assert_uint_lt(st.queued_bytes - 1000, 400); /* stopped at the first line past the bound */
    ck_assert_int_gt(n, 1);

    /* SIGHUP with a larger bound: accepted again at once (reconfigure) */
    {
        Config bigger = fx.cfg;

        bigger.file.max_buffer_bytes = 1000000;
        ops->reconfigure(sink, &bigger);
        ck_assert(ops->can_accept(sink));
        bigger.file.max_buffer_bytes = 1000;
        ops->reconfigure(sink, &bigger);
        ck_assert(!ops->can_accept(sink));
    }

    /* Space again: the retry writes everything. */
    write_errno = 0;
    clock_advance_fake(10 * USECS_PER_SEC);
    poll_ok(sink, NULL);
    ck_assert(ops->can_accept(sink));
    ops->status(sink, &st);
    ck_assert_str_eq(st.state, "ok");
    ck_assert_uint_eq(st.queued_bytes, 0);
    ops->close(sink);
}
END_TEST

/* Write and fsync errors ----------------------------------------------------- */

START_TEST(test_transient_write_error_retries)
{
    void *sink;
    TimeUs deadline;
    SinkStatus st;
    char expected_msg[256];
    size_t len;
    char *got;

    use_fake_io();
    sink = open_sink();
    submit_txn(sink, 0x100, 3);
    write_errno = ENOSPC;
    poll_due(sink, &deadline);
    ck_assert_int_eq(write_calls, 1);
    /* Retry after 100 ms +-25 % jitter. */
    ck_assert_int_ge(deadline, clock_mono_us() + 75 * MS);
    ck_assert_int_le(deadline, clock_mono_us() + 125 * MS);
    ops->status(sink, &st);
    snprintf(expected_msg, sizeof expected_msg,
             "could not write file sink output \"%s\": No space left on device", fx.path);
    ck_assert_str_eq(st.state, "retrying");
    ck_assert_str_eq(st.last_error, expected_msg);
    ck_assert_uint_eq(st.retries, 1);
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_uint_gt(st.queued_bytes, 0);
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);

    /* Not before the backoff deadline. */
    clock_advance_fake(deadline - clock_mono_us() - 1);
    poll_ok(sink, NULL);
    ck_assert_int_eq(write_calls, 1);

    /* Again a failure: EDQUOT counts as transient too; the delay grows. */
    write_errno = EDQUOT;
    clock_advance_fake(1);
    poll_ok(sink, &deadline);
    ck_assert_int_eq(write_calls, 2);
    ck_assert_int_ge(deadline, clock_mono_us() + 150 * MS);
    ops->status(sink, &st);
    ck_assert_uint_eq(st.retries, 2);

    /* The disk recovers: everything is written, nothing lost. */
    write_errno = 0;
    clock_advance_fake(deadline - clock_mono_us());
    poll_ok(sink, &deadline);
    ops->status(sink, &st);
    ck_assert_str_eq(st.state, "ok");
    ck_assert_uint_eq(st.queued_bytes, 0);
    ops->flush(sink);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x100);
    got = read_file(fx.path, &len);
    {
        int lines = 0;
        for (size_t i = 0; i < len; i++)
            lines += got[i] == '\n';
        ck_assert_int_eq(lines, 3);
    }
    free(got);
    ops->close(sink);
}
END_TEST

START_TEST(test_short_write_then_transient_error)
{
    void *sink;
    Buf expected = BUF_INIT;
    TimeUs deadline;
    char *got;

    use_fake_io();
    sink = open_sink();
    submit(sink, CHANGE_BEGIN, 0x300);
    for (int i = 0; i < 3; i++) {
        Change c = make_change(CHANGE_INSERT, 0x200 + (Lsn)i);

        envelope_append(&expected, &c, &fx.src, clock_wall_us());
        buf_append_char(&expected, '\n');
        submit(sink, CHANGE_INSERT, 0x200 + (Lsn)i);
    }
    submit(sink, CHANGE_COMMIT, 0x300);
    /* Two short writes get through, then the disk is full: the 20 bytes
     * already written must not be written again. */
    write_max_chunk = 10;
    write_ok_calls = 2;
    write_errno = ENOSPC;
    poll_due(sink, &deadline);
    ck_assert_int_eq(file_size(fx.path), 20);
    write_errno = 0;
    write_max_chunk = 0;
    clock_advance_fake(deadline - clock_mono_us());
    poll_ok(sink, NULL);
    ops->flush(sink);
    ck_assert_uint_eq(ops->durable_lsn(sink), 0x300);
    got = read_file(fx.path, NULL);
    ck_assert_str_eq(got, expected.data);
    free(got);
    buf_free(&expected);
    ops->close(sink);
}
END_TEST

START_TEST(test_transient_errors_eintr_eagain)
{
    static const int errs[] = {EINTR, EAGAIN};

    for (size_t i = 0; i < 2; i++) {
        void *sink;
        SinkStatus st;

        fixture_teardown();
        fixture_setup();
        use_fake_io();
        sink = open_sink();
        submit_txn(sink, 0x100, 1);
        write_errno = errs[i];
        poll_due(sink, NULL);
        ops->status(sink, &st);
        ck_assert_str_eq(st.state, "retrying");
        ck_assert_ptr_nonnull(strstr(st.last_error, strerror(errs[i])));
        ops->close(sink);
    }
}
END_TEST

START_TEST(test_fatal_write_error)
{
    void *sink;
    PfError err;
    SinkStatus st;
    char expected_msg[256];
    TimeUs deadline;
    Change c = make_change(CHANGE_INSERT, 0x10);

    use_fake_io();
    sink = open_sink();
    submit_txn(sink, 0x100, 1);
    write_errno = EIO;
    clock_advance_fake(fx.cfg.file.fsync_interval);
    ck_assert(!poll_now(sink, &deadline, &err));
    snprintf(expected_msg, sizeof expected_msg,
             "could not write file sink output \"%s\": Input/output error", fx.path);
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_str_eq(err.msg, expected_msg);
    ops->status(sink, &st);
    ck_assert_str_eq(st.state, "failed");
    ck_assert_str_eq(st.last_error, expected_msg);
    ck_assert_uint_eq(st.errors, 1);
    ck_assert(!ops->can_accept(sink));

    /* It stays failed: no more writes, nothing confirmed. */
    write_errno = 0;
    ck_assert(!poll_now(sink, &deadline, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_str_eq(err.msg, expected_msg);
    err_clear(&err);
    ck_assert(!ops->submit(sink, &c, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ops->flush(sink);
    ck_assert_int_eq(write_calls, 1);
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);
    ops->close(sink);
}
END_TEST

START_TEST(test_fsync_error_is_fatal)
{
    void *sink;
    PfError err;
    char expected_msg[256];
    TimeUs deadline;

    use_fake_io();
    fx.cfg.file.fsync_interval = 0;
    sink = open_sink();
    submit_txn(sink, 0x100, 1);
    fsync_errno = EIO;
    ck_assert(!poll_now(sink, &deadline, &err));
    snprintf(expected_msg, sizeof expected_msg,
             "could not fsync file sink output \"%s\": Input/output error", fx.path);
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_str_eq(err.msg, expected_msg);
    ck_assert_ptr_nonnull(strstr(err.hint, "may have dropped the written data"));
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);

    /* Never retried, even once the fsync would work. */
    fsync_errno = 0;
    ck_assert(!poll_now(sink, &deadline, &err));
    ops->flush(sink);
    ck_assert_int_eq(fsync_calls, 1);
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);
    ops->close(sink);
}
END_TEST

START_TEST(test_fsync_error_from_flush_reported_by_poll)
{
    void *sink;
    PfError err;
    TimeUs deadline;

    use_fake_io();
    sink = open_sink();
    submit_txn(sink, 0x100, 1);
    fsync_errno = ENOSPC;
    ops->flush(sink);
    ck_assert_uint_eq(ops->durable_lsn(sink), LSN_INVALID);
    ck_assert(!poll_now(sink, &deadline, &err));
    ck_assert_int_eq(err.kind, ERR_FATAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "could not fsync file sink output"));
    ops->close(sink);
}
END_TEST

/* Open ----------------------------------------------------------------------- */

START_TEST(test_partial_last_line_truncated)
{
    void *sink;
    PfError err;
    char *log;
    char *got;

    write_file(fx.path, "line1\nline2\npartial", 19);
    sink = open_capturing_log(&log, &err);
    ck_assert_msg(sink != NULL, "open failed: %s", err.msg);
    got = read_file(fx.path, NULL);
    ck_assert_str_eq(got, "line1\nline2\n");
    ck_assert_msg(strstr(log, "WARNING sink.file: dropped 7 bytes of an incomplete last line at the "
                              "end of \"")
                      != NULL,
                  "log: %s", log);
    ck_assert_msg(strstr(log, "those changes will be replayed") != NULL, "log: %s", log);
    free(got);
    free(log);

    /* New lines start on a line of their own. */
    submit_txn(sink, 0x100, 1);
    ops->flush(sink);
    got = read_file(fx.path, NULL);
    ck_assert(strncmp(got, "line1\nline2\n{\"before\"", 21) == 0);
    free(got);
    ops->close(sink);
}
END_TEST

START_TEST(test_partial_only_line_truncated_to_empty)
{
    void *sink;
    PfError err;
    char *log;

    write_file(fx.path, "{\"before\":nu", 12);
    sink = open_capturing_log(&log, &err);
    ck_assert_ptr_nonnull(sink);
    ck_assert_int_eq(file_size(fx.path), 0);
    ck_assert_ptr_nonnull(strstr(log, "dropped 12 bytes"));
    free(log);
    ops->close(sink);
}
END_TEST

START_TEST(test_partial_line_longer_than_scan_chunk)
{
    size_t big = 200 * 1024;
    char *data = malloc(big);
    void *sink;
    PfError err;
    char *log;

    memset(data, 'y', big);
    memcpy(data, "a\nbb\n", 5);
    write_file(fx.path, data, big);
    sink = open_capturing_log(&log, &err);
    ck_assert_ptr_nonnull(sink);
    ck_assert_int_eq(file_size(fx.path), 5);
    free(log);
    free(data);
    ops->close(sink);
}
END_TEST

START_TEST(test_complete_file_untouched)
{
    void *sink;
    PfError err;
    char *log;

    write_file(fx.path, "line1\nline2\n", 12);
    sink = open_capturing_log(&log, &err);
    ck_assert_ptr_nonnull(sink);
    ck_assert_int_eq(file_size(fx.path), 12);
    ck_assert_str_eq(log, "");
    free(log);
    ops->close(sink);
}
END_TEST

START_TEST(test_created_with_mode_0640)
{
    void *sink;
    struct stat st;
    mode_t old = umask(022);

    sink = open_sink();
    umask(old);
    ck_assert_int_eq(stat(fx.path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0640);
    ops->close(sink);
}
END_TEST

START_TEST(test_missing_directory)
{
    PfError err;
    char path[200];
    char expected[300];

    snprintf(path, sizeof path, "%s/missing/out.ndjson", fx.dir);
    fx.cfg.file.path = path;
    err_clear(&err);
    ck_assert_ptr_null(ops->open(&fx.ctx, &err));
    snprintf(expected, sizeof expected,
             "could not open file sink output \"%s\": No such file or directory", path);
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, expected);
    snprintf(expected, sizeof expected,
             "create the directory \"%s/missing\" or set [sink.file] path to a file in an "
             "existing directory",
             fx.dir);
    ck_assert_str_eq(err.hint, expected);
}
END_TEST

START_TEST(test_path_is_a_directory)
{
    PfError err;
    char expected[300];

    fx.cfg.file.path = fx.dir;
    err_clear(&err);
    ck_assert_ptr_null(ops->open(&fx.ctx, &err));
    snprintf(expected, sizeof expected, "could not open file sink output \"%s\": Is a directory",
             fx.dir);
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, expected);
    ck_assert_str_eq(err.hint, "[sink.file] path names a file, not a directory");
}
END_TEST

START_TEST(test_no_path)
{
    PfError err;

    fx.cfg.file.path = NULL;
    err_clear(&err);
    ck_assert_ptr_null(ops->open(&fx.ctx, &err));
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, "could not open file sink output: no path configured");
    ck_assert_str_eq(err.hint, "set path in [sink.file]");
}
END_TEST

START_TEST(test_second_writer_refused)
{
    void *first = open_sink();
    PfError err;
    char expected[300];

    err_clear(&err);
    ck_assert_ptr_null(ops->open(&fx.ctx, &err));
    snprintf(expected, sizeof expected,
             "could not lock file sink output \"%s\": another process is writing to it", fx.path);
    ck_assert_int_eq(err.kind, ERR_CONFIG);
    ck_assert_str_eq(err.msg, expected);
    ck_assert_str_eq(err.hint,
                     "run one pgfan per output file, or give each one its own [sink.file] path");
    ops->close(first);

    /* Released on close. */
    first = open_sink();
    ops->close(first);
}
END_TEST

/* Registry ------------------------------------------------------------------- */

START_TEST(test_registry)
{
    const char *const *names = sink_names();

    ck_assert_ptr_eq(sink_lookup("file"), &sink_file_ops);
    ck_assert_ptr_null(sink_lookup("nope"));
    ck_assert_ptr_null(sink_lookup(""));
    ck_assert_str_eq(names[0], "file");
    /* NULL-terminated, and every name finds its own sink (other sinks may follow) */
    for (size_t i = 0; i < 16; i++) {
        if (names[i] == NULL)
            break;
        ck_assert_ptr_nonnull(sink_lookup(names[i]));
        ck_assert_str_eq(sink_lookup(names[i])->name, names[i]);
        ck_assert_uint_lt(i, 15);
    }
    ck_assert_ptr_eq(sink_names(), names);
}
END_TEST

static Suite *file_sink_suite(void)
{
    Suite *s = suite_create("file_sink");
    TCase *out = tcase_create("output");
    TCase *dur = tcase_create("durability");
    TCase *bp = tcase_create("backpressure");
    TCase *errs = tcase_create("errors");
    TCase *tc_open = tcase_create("open");
    TCase *reg = tcase_create("registry");
    TCase *all[] = {out, dur, bp, errs, tc_open};

    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        tcase_add_checked_fixture(all[i], fixture_setup, fixture_teardown);
        suite_add_tcase(s, all[i]);
    }
    tcase_add_test(out, test_lines_equal_envelopes);
    tcase_add_test(out, test_appends_to_existing_file);
    tcase_add_test(out, test_large_buffer_written_from_submit);
    tcase_add_test(out, test_short_writes);

    tcase_add_test(dur, test_durable_only_after_fsync);
    tcase_add_test(dur, test_one_write_per_fsync);
    tcase_add_test(dur, test_fsync_interval_zero);
    tcase_add_test(dur, test_fsync_interval_counts_from_first_unsynced_write);
    tcase_add_test(dur, test_buffered_commit_not_durable);
    tcase_add_test(dur, test_midtxn_write_does_not_cover_open_txn);
    tcase_add_test(dur, test_empty_txn_durable_when_nothing_pending);
    tcase_add_test(dur, test_flush);
    tcase_add_test(dur, test_not_a_regular_file);

    tcase_add_test(bp, test_backpressure);

    tcase_add_test(errs, test_transient_write_error_retries);
    tcase_add_test(errs, test_short_write_then_transient_error);
    tcase_add_test(errs, test_transient_errors_eintr_eagain);
    tcase_add_test(errs, test_fatal_write_error);
    tcase_add_test(errs, test_fsync_error_is_fatal);
    tcase_add_test(errs, test_fsync_error_from_flush_reported_by_poll);

    tcase_add_test(tc_open, test_partial_last_line_truncated);
    tcase_add_test(tc_open, test_partial_only_line_truncated_to_empty);
    tcase_add_test(tc_open, test_partial_line_longer_than_scan_chunk);
    tcase_add_test(tc_open, test_complete_file_untouched);
    tcase_add_test(tc_open, test_created_with_mode_0640);
    tcase_add_test(tc_open, test_missing_directory);
    tcase_add_test(tc_open, test_path_is_a_directory);
    tcase_add_test(tc_open, test_no_path);
    tcase_add_test(tc_open, test_second_writer_refused);

    tcase_add_test(reg, test_registry);
    suite_add_tcase(s, reg);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(file_sink_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
