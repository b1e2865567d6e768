/*
 * file.c - the NDJSON file sink ([sink.file]).
 *
 * Output: one envelope (envelope.h) per line for every INSERT, UPDATE,
 * DELETE and TRUNCATE routed here, each line ending in '\n'. BEGIN and
 * COMMIT produce no line (COMMIT only moves positions). Logical decoding
 * messages (pg_logical_emit_message: heartbeats, application signals) are
 * ignored: they are not row changes and Debezium-style consumers of the
 * file expect rows only.
 *
 * Durability: lines are buffered in memory and written with write(2) when
 * the buffer passes its write threshold (WRITE_THRESHOLD, at most half of
 * max_buffer_bytes) or at the poll where its oldest line has waited
 * fsync_interval (every poll when that is 0, or for a file that is not
 * regular); written data is fsynced once it has waited fsync_interval since
 * it was buffered. Nothing is durable before its fsync, so writing late
 * costs no latency, and it saves a write(2) per poll (at full speed a poll
 * handles a few changes). A COMMIT
 * is durable once every byte up to it was written before a successful
 * fsync. Three positions track this:
 *   committed - the last COMMIT submitted (all its bytes are buffered or written)
 *   written   - the last COMMIT whose bytes were all written (the buffer was
 *               empty at or after it)
 *   durable   - `written` as it stood when the last successful fsync started
 * A commit whose lines are still in the buffer is never reported durable.
 *
 * Failures: write(2) failing with ENOSPC, EDQUOT, EINTR or EAGAIN keeps the
 * data and retries after a backoff (100 ms .. 5 s), nothing is lost and
 * backpressure stops the stream once max_buffer_bytes are held. Any other
 * write error, and any fsync error, is fatal: after a failed fsync Linux may
 * have dropped the dirty pages and marked them clean, so a second fsync
 * could succeed and lie.
 *
 * Crashes and replays: delivery is at-least-once. After a crash the changes
 * after the last confirmed position arrive again and are appended again, so
 * a line may appear twice (consumers de-duplicate on source.lsn). A crash in
 * the middle of a write can leave a partial last line; it was never
 * confirmed, so open() cuts it off (it will be replayed) and says so.
 *
 * Only one process may write a given file: open() takes an exclusive
 * flock() and fails when another pgfan holds it. A path that is not a
 * regular file (/dev/stdout, a FIFO) is written without tail repair, lock
 * or fsync: a line counts as durable once written.
 */
#include "sink.h"

#include "../common/backoff.h"
#include "../common/log.h"
#include "../common/mem.h"
#include "envelope.h"
#include "file_test.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_COMPONENT "sink.file"

/* Write as soon as this much is buffered: big enough to make each write(2)
 * cheap per line, small enough to keep the page cache busy. */
#define WRITE_THRESHOLD ((size_t)256 * 1024)

#define RETRY_MIN (100 * USECS_PER_MSEC)
#define RETRY_MAX (5 * USECS_PER_SEC)

/* Chunk size for scanning back to the last complete line at open. */
#define TAIL_CHUNK ((size_t)64 * 1024)

static FileSinkWriteFn file_write = write;
static FileSinkFsyncFn file_fsync = fsync;

void file_sink_set_io_for_tests(FileSinkWriteFn write_fn, FileSinkFsyncFn fsync_fn)
{
    file_write = write_fn ? write_fn : write;
    file_fsync = fsync_fn ? fsync_fn : fsync;
}

/* A COMMIT position and the number of row events up to and including it. */
typedef struct TxnMark {
    Lsn lsn;
    uint64_t events;
} TxnMark;

typedef struct FileSink {
    char *path;
    int fd;
    bool regular; /* regular file: tail repair, lock, fsync */
    TimeUs fsync_interval;
    size_t max_buffer_bytes;
    const SourceInfo *source;

    Buf buf;               /* complete lines not yet written */
    TimeUs buffered_since; /* monotonic time the oldest of them was buffered */

    TxnMark committed;
    TxnMark written;
    TxnMark durable;

    bool unsynced;         /* bytes written since the last fsync */
    TimeUs unsynced_since; /* monotonic time the first of them was buffered */

    bool retrying;
    TimeUs retry_at;
    Backoff backoff;

    bool failed;
    PfError fatal; /* returned by every poll once failed */

    uint64_t events;
    uint64_t bytes;
    uint64_t retries;
    uint64_t errors;
    char last_error[256];
} FileSink;

static void record_error(FileSink *s, const PfError *err)
{
    /* Cut to the status field's size on purpose: the full text is logged. */
    size_t n = strnlen(err->msg, sizeof s->last_error - 1);

    s->errors++;
    memcpy(s->last_error, err->msg, n);
    s->last_error[n] = '\0';
}

/* Marks the sink failed: nothing more is written or confirmed. Returns false. */
static bool fail(FileSink *s, PfError *err)
{
    record_error(s, err);
    s->failed = true;
    s->fatal = *err;
    return false;
}

static void advance_durable(FileSink *s, TxnMark mark)
{
    if (mark.lsn > s->durable.lsn)
        s->durable = mark;
}

static bool write_error_is_transient(int e)
{
    return e == ENOSPC || e == EDQUOT || e == EINTR || e == EAGAIN || e == EWOULDBLOCK;
}

static void note_written(FileSink *s, size_t n)
{
    s->bytes += n;
    if (s->regular && !s->unsynced) {
        s->unsynced = true;
        s->unsynced_since = s->buffered_since;
    }
}

static void enter_retry(FileSink *s, TimeUs now, int e)
{
    PfError err;
    TimeUs delay = backoff_next(&s->backoff);

    err_set(&err, ERR_RETRY, "could not write file sink output \"%s\": %s", s->path,
            e ? strerror(e) : "write returned 0");
    record_error(s, &err);
    s->retries++;
    if (!s->retrying)
        log_warning(LOG_COMPONENT, "%s; keeping %zu bytes in memory and retrying (nothing is lost)",
                    err.msg, s->buf.len);
    else
        log_debug(LOG_COMPONENT, "%s; retry %u in %lld ms", err.msg, s->backoff.attempts,
                  (long long)(delay / USECS_PER_MSEC));
    s->retrying = true;
    s->retry_at = now + delay;
}

/*
 * Writes the whole buffer, handling short writes. Transient failures keep
 * what is left and schedule a retry (returns true); anything else is fatal.
 */
static bool write_buffer(FileSink *s, TimeUs now, PfError *err)
{
    size_t off = 0;

    while (off < s->buf.len) {
        ssize_t n = file_write(s->fd, s->buf.data + off, s->buf.len - off);
        int e = errno;

        if (n > 0) {
            off += (size_t)n;
            note_written(s, (size_t)n);
            continue;
        }
        buf_consume(&s->buf, off);
        if (n == 0 || write_error_is_transient(e)) {
            enter_retry(s, now, n == 0 ? 0 : e);
            return true;
        }
        err_set(err, ERR_FATAL, "could not write file sink output \"%s\": %s", s->path,
                strerror(e));
        return fail(s, err);
    }
    buf_reset(&s->buf);
    s->written = s->committed;
    if (!s->regular)
        advance_durable(s, s->written);
    if (s->retrying) {
        log_info(LOG_COMPONENT, "writing to \"%s\" again after %u failed attempts", s->path,
                 s->backoff.attempts);
        s->retrying = false;
        backoff_reset(&s->backoff);
    }
    return true;
}

static bool sync_file(FileSink *s, PfError *err)
{
    /* Everything `written` covers is in the kernel now; whatever is written
     * later is not promised by this fsync. */
    TxnMark candidate = s->written;

    if (file_fsync(s->fd) != 0) {
        err_set(err, ERR_FATAL, "could not fsync file sink output \"%s\": %s", s->path,
                strerror(errno));
        err_hint(err, "the kernel may have dropped the written data, so pgfan stops without "
                      "confirming it; fix the storage and restart: unconfirmed changes are replayed");
        return fail(s, err);
    }
    s->unsynced = false;
    advance_durable(s, candidate);
    return true;
}

/* Open ----------------------------------------------------------------------- */

static bool open_error(const char *path, int e, PfError *err)
{
    char *copy = xstrdup(path);
    const char *dir = dirname(copy);

    switch (e) {
    case ENOENT:
    case ENOTDIR:
        err_set(err, ERR_CONFIG, "could not open file sink output \"%s\": %s", path, strerror(e));
        err_hint(err, "create the directory \"%s\" or set [sink.file] path to a file in an "
                      "existing directory", dir);
        break;
    case EACCES:
    case EPERM:
    case EROFS:
        err_set(err, ERR_CONFIG, "could not open file sink output \"%s\": %s", path, strerror(e));
        err_hint(err, "let the user running pgfan write to \"%s\" or set [sink.file] path "
                      "elsewhere", dir);
        break;
    case EISDIR:
        err_set(err, ERR_CONFIG, "could not open file sink output \"%s\": %s", path, strerror(e));
        err_hint(err, "[sink.file] path names a file, not a directory");
        break;
    default:
        err_set(err, ERR_FATAL, "could not open file sink output \"%s\": %s", path, strerror(e));
        break;
    }
    free(copy);
    return false;
}

/*
 * Finds where the last complete line ends (0 when there is none) by
 * reading backwards from size; size > 0 and the file does not end in '\n'.
 */
static bool find_last_line_end(const char *path, off_t size, off_t *keep, PfError *err)
{
    char *chunk;
    off_t end = size;
    int rfd = open(path, O_RDONLY | O_CLOEXEC);

    if (rfd < 0)
        return err_set(err, ERR_FATAL, "could not read file sink output \"%s\": %s", path,
                       strerror(errno));
    chunk = xmalloc(TAIL_CHUNK);
    *keep = 0;
    while (end > 0) {
        size_t want = (size_t)end < TAIL_CHUNK ? (size_t)end : TAIL_CHUNK;
        off_t start = end - (off_t)want;
        ssize_t n = pread(rfd, chunk, want, start);

        if (n != (ssize_t)want) {
            err_set(err, ERR_FATAL, "could not read file sink output \"%s\": %s", path,
                    n < 0 ? strerror(errno) : "file shrank while reading");
            free(chunk);
            close(rfd);
            return false;
        }
        for (size_t i = want; i > 0; i--) {
            if (chunk[i - 1] == '\n') {
                *keep = start + (off_t)i;
                end = 0;
                break;
            }
        }
        if (end > 0)
            end = start;
    }
    free(chunk);
    close(rfd);
    return true;
}

/* Cuts off a partial last line left by a crash: it was never confirmed. */
static bool repair_tail(FileSink *s, const struct stat *st, PfError *err)
{
    char last;
    off_t keep = 0;
    int rfd;
    ssize_t n;

    if (st->st_size == 0)
        return true;

    /* The write descriptor cannot read: peek at the last byte through another. */
    rfd = open(s->path, O_RDONLY | O_CLOEXEC);
    if (rfd < 0)
        return err_set(err, ERR_FATAL, "could not read file sink output \"%s\": %s", s->path,
                       strerror(errno));
    n = pread(rfd, &last, 1, st->st_size - 1);
    close(rfd);
    if (n != 1)
        return err_set(err, ERR_FATAL, "could not read file sink output \"%s\": %s", s->path,
                       n < 0 ? strerror(errno) : "file shrank while reading");
    if (last == '\n')
        return true;

    if (!find_last_line_end(s->path, st->st_size, &keep, err))
        return false;
    if (ftruncate(s->fd, keep) != 0)
        return err_set(err, ERR_FATAL, "could not truncate file sink output \"%s\": %s", s->path,
                       strerror(errno));
    log_warning(LOG_COMPONENT,
                "dropped %lld bytes of an incomplete last line at the end of \"%s\": a crash "
                "interrupted that write before it was confirmed, so those changes will be replayed",
                (long long)(st->st_size - keep), s->path);
    return true;
}

/*
 * Locks a regular file, then repairs its tail: the lock comes first so a
 * second pgfan can never see (or cause) a repair while another writes.
 */
static bool prepare_file(FileSink *s, PfError *err)
{
    struct stat st;

    if (fstat(s->fd, &st) != 0)
        return err_set(err, ERR_FATAL, "could not stat file sink output \"%s\": %s", s->path,
                       strerror(errno));
    s->regular = S_ISREG(st.st_mode);
    if (!s->regular) {
        log_info(LOG_COMPONENT,
                 "\"%s\" is not a regular file: lines count as durable once written", s->path);
        return true;
    }
    if (flock(s->fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            err_set(err, ERR_CONFIG,
                    "could not lock file sink output \"%s\": another process is writing to it",
                    s->path);
            err_hint(err, "run one pgfan per output file, or give each one its own [sink.file] path");
            return false;
        }
        return err_set(err, ERR_FATAL, "could not lock file sink output \"%s\": %s", s->path,
                       strerror(errno));
    }
    return repair_tail(s, &st, err);
}

static void file_close(void *self);

/* The reloadable options: fsync interval and buffer bound. */
static void file_reconfigure(void *self, const Config *cfg)
{
    FileSink *s = self;

    s->fsync_interval = cfg->file.fsync_interval > 0 ? cfg->file.fsync_interval : 0;
    s->max_buffer_bytes = cfg->file.max_buffer_bytes;
}

static void *file_open(const SinkContext *ctx, PfError *err)
{
    const Config *cfg = ctx->config;
    FileSink *s;

    if (!cfg->file.path || !cfg->file.path[0]) {
        err_set(err, ERR_CONFIG, "could not open file sink output: no path configured");
        err_hint(err, "set path in [sink.file]");
        return NULL;
    }

    s = xcalloc(1, sizeof *s);
    s->path = xstrdup(cfg->file.path);
    file_reconfigure(s, cfg);
    s->source = ctx->source;
    buf_init(&s->buf);
    backoff_init(&s->backoff, RETRY_MIN, RETRY_MAX);

    s->fd = open(s->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (s->fd < 0) {
        open_error(s->path, errno, err);
        file_close(s);
        return NULL;
    }
    if (!prepare_file(s, err)) {
        file_close(s);
        return NULL;
    }
    return s;
}

/* Operations ----------------------------------------------------------------- */

/* Buffered bytes written at once: at most half the bound, which keeps room to accept more. */
static size_t write_threshold(const FileSink *s)
{
    return s->max_buffer_bytes / 2 < WRITE_THRESHOLD ? s->max_buffer_bytes / 2 : WRITE_THRESHOLD;
}

static bool file_submit(void *self, const Change *change, PfError *err)
{
    FileSink *s = self;

    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    switch (change->kind) {
    case CHANGE_INSERT:
    case CHANGE_UPDATE:
    case CHANGE_DELETE:
    case CHANGE_TRUNCATE:
        if (s->buf.len == 0)
            s->buffered_since = clock_mono_us();
        envelope_append(&s->buf, change, s->source, clock_wall_us());
        buf_append_char(&s->buf, '\n');
        s->events++;
        if (s->buf.len >= write_threshold(s) && !s->retrying)
            return write_buffer(s, clock_mono_us(), err);
        return true;
    case CHANGE_COMMIT:
        s->committed.lsn = change->end_lsn;
        s->committed.events = s->events;
        if (s->buf.len == 0) {
            /* Everything up to this commit is already written: durable at
             * once when also synced, else with the next fsync. */
            s->written = s->committed;
            if (!s->unsynced)
                advance_durable(s, s->committed);
        }
        return true;
    case CHANGE_BEGIN:
    case CHANGE_MESSAGE:
        return true;
    }
    return true;
}

static Lsn file_durable_lsn(const void *self)
{
    const FileSink *s = self;

    return s->durable.lsn;
}

static bool file_can_accept(const void *self)
{
    const FileSink *s = self;

    return !s->failed && s->buf.len < s->max_buffer_bytes;
}

/*
 * Whether the buffered lines are written at this poll: when they wait for
 * nothing else (a file that is not regular is durable once written) or when
 * their fsync is due.
 */
static bool write_due(const FileSink *s, TimeUs now)
{
    return !s->regular || now - s->buffered_since >= s->fsync_interval;
}

static bool file_poll(void *self, TimeUs now, TimeUs *next_deadline, PfError *err)
{
    FileSink *s = self;
    TimeUs deadline = TIME_NEVER;

    *next_deadline = TIME_NEVER;
    if (s->failed) {
        *err = s->fatal;
        return false;
    }
    if (s->buf.len > 0 && write_due(s, now) && (!s->retrying || now >= s->retry_at)) {
        if (!write_buffer(s, now, err))
            return false;
    }
    /* Data already written is synced even while later writes are being
     * retried: it lets fully written transactions become durable. */
    if (s->unsynced && now - s->unsynced_since >= s->fsync_interval) {
        if (!sync_file(s, err))
            return false;
    }
    if (s->unsynced)
        deadline = s->unsynced_since + s->fsync_interval;
    if (s->buf.len > 0 && !s->retrying && s->buffered_since + s->fsync_interval < deadline)
        deadline = s->buffered_since + s->fsync_interval;
    if (s->retrying && s->retry_at < deadline)
        deadline = s->retry_at;
    *next_deadline = deadline;
    return true;
}

static void file_flush(void *self)
{
    FileSink *s = self;
    PfError err;

    /* Failures are kept in the sink's state and returned by the next poll. */
    if (s->failed)
        return;
    if (s->buf.len > 0 && !write_buffer(s, clock_mono_us(), &err))
        return;
    if (s->unsynced)
        sync_file(s, &err);
}

static void file_status(const void *self, SinkStatus *out)
{
    const FileSink *s = self;

    memset(out, 0, sizeof *out);
    if (s->failed)
        out->state = "failed";
    else if (s->retrying)
        out->state = "retrying";
    else if (!file_can_accept(s))
        out->state = "backpressure";
    else
        out->state = "ok";
    out->durable_lsn = s->durable.lsn;
    out->queue_depth = s->events - s->durable.events;
    out->queued_bytes = s->buf.len;
    out->events = s->events;
    out->bytes = s->bytes;
    out->retries = s->retries;
    out->errors = s->errors;
    snprintf(out->last_error, sizeof out->last_error, "%s", s->last_error);
}

static void file_close(void *self)
{
    FileSink *s = self;

    if (!s)
        return;
    if (s->fd >= 0)
        close(s->fd);
    buf_free(&s->buf);
    free(s->path);
    free(s);
}

const SinkOps sink_file_ops = {
    .name = "file",
    .open = file_open,
    .submit = file_submit,
    .durable_lsn = file_durable_lsn,
    .can_accept = file_can_accept,
    .poll = file_poll,
    .flush = file_flush,
    .status = file_status,
    .close = file_close,
    .reconfigure = file_reconfigure,
};
